# Helpers for tests/*/30-bio-servers.bats: servers whose TLS I/O goes through
# a BIO of their own (Apache httpd with mod_ssl, HAProxy), and a Ruby TLS
# server (Ruby resets its context's options wholesale). Load after common
# and tls.

# apache_conf PORT CERT KEY: an httpd.conf entirely in $BATS_TEST_TMPDIR/apache
# (pid file, logs, mutexes), serving $WWW over TLS on 127.0.0.1:PORT with the
# event MPM. Apache run as root serves as nobody: the files are made
# readable to it. Prints nothing; apache_args prints the command.
apache_conf() {
    local d="$BATS_TEST_TMPDIR/apache" m=/usr/lib/apache2/modules
    mkdir -p "$d/logs" "$d/run"
    chmod 711 "$BATS_TEST_TMPDIR" "$BATS_RUN_TMPDIR" 2>/dev/null || true
    chmod -R a+rX "$WWW"
    cat >"$d/httpd.conf" <<CONF
ServerRoot "$d"
ServerName localhost
Listen 127.0.0.1:$1
PidFile "$d/run/httpd.pid"
Mutex file:$d/run default
DefaultRuntimeDir "$d/run"
ErrorLog "$d/logs/error.log"
LogLevel warn
LoadModule mpm_event_module $m/mod_mpm_event.so
LoadModule authz_core_module $m/mod_authz_core.so
LoadModule mime_module $m/mod_mime.so
LoadModule socache_shmcb_module $m/mod_socache_shmcb.so
LoadModule ssl_module $m/mod_ssl.so
User nobody
Group nogroup
StartServers 1
ServerLimit 1
ThreadsPerChild 8
MaxRequestWorkers 8
KeepAlive On
TypesConfig /dev/null
DocumentRoot "$WWW"
<Directory "$WWW">
    Require all granted
</Directory>
SSLEngine on
SSLCertificateFile "$2"
SSLCertificateKeyFile "$3"
SSLProtocol -all +TLSv1.2 +TLSv1.3
SSLSessionCache "shmcb:$d/run/ssl_scache(512000)"
CONF
}
apache_args() { echo "apache2 -f $BATS_TEST_TMPDIR/apache/httpd.conf -DFOREGROUND"; }

# haproxy_conf PORT BACKEND_PORT CERTKEY_PEM [NBTHREAD]: HAProxy terminating
# TLS on 127.0.0.1:PORT in front of a plain HTTP server on BACKEND_PORT,
# with keep-alive on both sides. NBTHREAD empty: HAProxy's default threads.
haproxy_conf() {
    local d="$BATS_TEST_TMPDIR/haproxy"
    mkdir -p "$d"
    {
        echo "global"
        echo "    pidfile $d/haproxy.pid"
        [ -n "${4:-}" ] && echo "    nbthread $4"
        echo "defaults"
        echo "    mode http"
        echo "    timeout connect 10s"
        echo "    timeout client 120s"
        echo "    timeout server 120s"
        echo "frontend tls"
        echo "    bind 127.0.0.1:$1 ssl crt $3"
        echo "    default_backend plain"
        echo "backend plain"
        echo "    http-reuse always"
        echo "    server s1 127.0.0.1:$2"
    } >"$d/haproxy.cfg"
}
haproxy_args() { echo "haproxy -db -f $BATS_TEST_TMPDIR/haproxy/haproxy.cfg"; }

# ruby_server: writes a Ruby HTTPS file server (OpenSSL::SSL::SSLServer over
# TCPServer, one thread per connection, keep-alive not offered) and prints
# its path: ruby_https.rb PORT CERT KEY DIR.
ruby_server() {
    local f="$BATS_TEST_TMPDIR/ruby_https.rb"
    cat >"$f" <<'RUBY'
require "socket"
require "openssl"
port, cert, key, dir = ARGV
ctx = OpenSSL::SSL::SSLContext.new
ctx.cert = OpenSSL::X509::Certificate.new(File.read(cert))
ctx.key = OpenSSL::PKey.read(File.read(key))
ctx.min_version = OpenSSL::SSL::TLS1_2_VERSION
server = OpenSSL::SSL::SSLServer.new(TCPServer.new("127.0.0.1", port.to_i), ctx)
trap("TERM") { exit 0 }
loop do
  conn = begin
    server.accept
  rescue OpenSSL::SSL::SSLError, Errno::ECONNRESET
    next
  end
  Thread.new(conn) do |c|
    begin
      line = c.gets
      while (h = c.gets) && h != "\r\n"; end
      path = File.join(dir, File.basename(line.split[1]))
      body = File.binread(path)
      c.write("HTTP/1.1 200 OK\r\nContent-Length: #{body.bytesize}\r\nConnection: close\r\n\r\n")
      c.write(body)
    rescue StandardError => e
      warn "ruby_https: #{e.class}: #{e.message}"
    ensure
      c.close rescue nil
    end
  end
end
RUBY
    echo "$f"
}

# Helpers for tests/*/30-bio-servers.bats: servers whose TLS I/O goes through
# a BIO of their own (Apache httpd with mod_ssl, HAProxy), and a Ruby TLS
# server (Ruby resets its context's options wholesale). Load after common
# and tls.

# apache_conf PORT CERT KEY [BACKEND_PORT]: an httpd.conf entirely in $BATS_TEST_TMPDIR/apache
# (pid file, mutexes; the error log, where its children's stderr goes, in
# $BATS_TEST_TMPDIR/logs/error.log as for nginx), serving $WWW over TLS on 127.0.0.1:PORT with the
# event MPM. Apache run as root serves as nobody: the files are made
# readable to it. Prints nothing; apache_args prints the command.
apache_conf() {
    local d="$BATS_TEST_TMPDIR/apache" m=/usr/lib/apache2/modules
    mkdir -p "$d/run" "$BATS_TEST_TMPDIR/logs"
    chmod 711 "$BATS_TEST_TMPDIR" "$BATS_RUN_TMPDIR" 2>/dev/null || true
    chmod -R a+rX "$WWW"
    # Its children (as nobody) append their exit records to $STATS.
    if [ -n "${STATS:-}" ]; then
        touch "$STATS"
        chmod 666 "$STATS"
    fi
    cat >"$d/httpd.conf" <<CONF
ServerRoot "$d"
ServerName localhost
Listen 127.0.0.1:$1
PidFile "$d/run/httpd.pid"
Mutex file:$d/run default
DefaultRuntimeDir "$d/run"
ErrorLog "$BATS_TEST_TMPDIR/logs/error.log"
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
    # BACKEND_PORT: /up goes to a plain_backend there (uploads hashed).
    if [ -n "${4:-}" ]; then
        cat >>"$d/httpd.conf" <<CONF
LoadModule proxy_module $m/mod_proxy.so
LoadModule proxy_http_module $m/mod_proxy_http.so
ProxyPass "/up" "http://127.0.0.1:$4/up"
CONF
    fi
}
# apache_generations: how many times Apache has started serving (1, then
# one more per graceful restart), from its error log.
apache_generations() {
    grep -c 'resuming normal operations' "$BATS_TEST_TMPDIR/logs/error.log" 2>/dev/null || true
}
apache_args() { echo "apache2 -f $BATS_TEST_TMPDIR/apache/httpd.conf -DFOREGROUND"; }

# haproxy_conf PORT BACKEND_PORT CERT KEY [NBTHREAD]: HAProxy terminating
# TLS on 127.0.0.1:PORT in front of a plain HTTP server on BACKEND_PORT,
# with keep-alive on both sides. NBTHREAD empty: HAProxy's default threads.
haproxy_conf() {
    local d="$BATS_TEST_TMPDIR/haproxy"
    mkdir -p "$d"
    cat "$3" "$4" >"$d/crt.pem"
    {
        echo "global"
        echo "    pidfile $d/haproxy.pid"
        [ -n "${5:-}" ] && echo "    nbthread $5"
        echo "defaults"
        echo "    mode http"
        echo "    timeout connect 10s"
        echo "    timeout client 120s"
        echo "    timeout server 120s"
        echo "frontend tls"
        echo "    bind 127.0.0.1:$1 ssl crt $d/crt.pem"
        echo "    default_backend plain"
        echo "backend plain"
        echo "    http-reuse always"
        echo "    server s1 127.0.0.1:$2"
    } >"$d/haproxy.cfg"
}
haproxy_args() { echo "haproxy -db -f $BATS_TEST_TMPDIR/haproxy/haproxy.cfg"; }

# ruby_server: writes a WEBrick HTTPS file server (Ruby's openssl; WEBrick
# sets its context's options with `ctx.options = nil`, which clears every
# bit and sets OP_ALL) and prints its path: webrick_https.rb PORT CERT KEY DIR.
# SIGTERM stops it normally. WEBRICK_KTLS=off: the server sets, the same way,
# every option it had but SSL_OP_ENABLE_KTLS (a choice the library keeps).
ruby_server() {
    local f="$BATS_TEST_TMPDIR/webrick_https.rb"
    cat >"$f" <<'RUBY'
require "webrick"
require "webrick/https"
require "openssl"
port, cert, key, dir = ARGV
opts = nil
opts = OpenSSL::SSL::SSLContext.new.options & ~8 if ENV["WEBRICK_KTLS"] == "off"
server = WEBrick::HTTPServer.new(
  SSLOptions: opts, BindAddress: "127.0.0.1", Port: port.to_i, DocumentRoot: dir,
  SSLEnable: true,
  SSLCertificate: OpenSSL::X509::Certificate.new(File.read(cert)),
  SSLPrivateKey: OpenSSL::PKey.read(File.read(key)),
  Logger: WEBrick::Log.new($stderr, WEBrick::Log::WARN), AccessLog: [])
trap("TERM") { server.shutdown }
server.start
RUBY
    echo "$f"
}

# plain_backend PORT: starts (as NAME "be") Python's http.server over $WWW,
# speaking HTTP/1.1 with keep-alive, as HAProxy's backend. No library. A PUT
# (Content-Length or chunked) is answered with its body's SHA-256.
plain_backend() {
    start_plain be "$PY" -c '
import functools, hashlib, http.server, sys
class H(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def body(self):
        h, r = hashlib.sha256(), self.rfile
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            while True:
                n = int(r.readline().split(b";")[0], 16)
                if n == 0:
                    while r.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return h.hexdigest()
                h.update(r.read(n))
                r.readline()
        left = int(self.headers.get("Content-Length", 0))
        while left:
            d = r.read(min(left, 65536))
            if not d:
                break
            h.update(d)
            left -= len(d)
        return h.hexdigest()
    def do_PUT(self):
        out = (self.body() + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    do_POST = do_PUT
h = functools.partial(H, directory=sys.argv[2])
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), h).serve_forever()
' "$1" "$WWW"
}

# stop_sig NAME SIGNAL [SECONDS]: like stop_srv with another signal (HAProxy
# writes its exit record after SIGUSR1, its soft stop).
stop_sig() {
    local pid
    pid=$(pid_of "$1")
    kill "-$2" "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "${3:-20}"; then
        echo "$1 (pid $pid) did not exit after SIG$2" >&2
        return 1
    fi
    wait_status "$1"
}

# keepalive PORT CURL-TLS-OPTIONS FILE...: fetches every FILE of $WWW over
# one curl run (one connection, kept alive); prints "connects N" then one
# line per body that differs. Fails if curl does or a body differs.
keepalive() {
    local port=$1 opts=$2 f urls=() outs=() i=0 bad=0 n
    shift 2
    for f in "$@"; do
        urls+=("https://127.0.0.1:$port/$f")
        outs+=(-o "$BATS_TEST_TMPDIR/ka.$i")
        i=$((i + 1))
    done
    # shellcheck disable=SC2086 # the options are words
    n=$(curl -sSkf --max-time "${FETCH_TIMEOUT:-30}" $opts -w '%{num_connects}\n' \
        "${outs[@]}" "${urls[@]}" | awk '{ s += $1 } END { print s }') || return 1
    echo "connects $n"
    i=0
    for f in "$@"; do
        if [ "$(sha "$BATS_TEST_TMPDIR/ka.$i")" != "$(sha "$WWW/$f")" ]; then
            echo "BAD: $f"
            bad=1
        fi
        i=$((i + 1))
    done
    return "$bad"
}

# nghttpx_conf PORT CERT KEY BACKEND_PORT: nghttpx (nghttp2-proxy) terminating
# TLS on 127.0.0.1:PORT in front of a plain HTTP server on BACKEND_PORT, one
# worker. It reads with SSL_read_early_data until the handshake is done
# (0-RTT), through libcrypto's socket BIO. Its logs go to files (it points
# stderr at its error log: the library's lines are there). nghttpx_args
# prints the command.
nghttpx_conf() {
    local d="$BATS_TEST_TMPDIR/nghttpx"
    mkdir -p "$d"
    printf '%s\n' "frontend=127.0.0.1,$1" "backend=127.0.0.1,$4" "private-key-file=$3" \
        "certificate-file=$2" workers=1 no-ocsp=yes "errorlog-file=$d/error.log" \
        "accesslog-file=$d/access.log" >"$d/conf"
}
nghttpx_args() { echo "nghttpx --conf=$BATS_TEST_TMPDIR/nghttpx/conf"; }

# squid_conf PORT CERT KEY BACKEND_PORT: Squid (squid-openssl) as a reverse
# proxy: https_port on 127.0.0.1:PORT (its TLS through a BIO of its own),
# the plain server on BACKEND_PORT its origin, nothing cached, in the
# foreground (-N), workers as the proxy user. squid_args prints the command.
squid_conf() {
    local d="$BATS_TEST_TMPDIR/squid"
    mkdir -p "$d"
    chmod 711 "$BATS_TEST_TMPDIR" "$BATS_RUN_TMPDIR" 2>/dev/null || true
    cp "$2" "$d/crt.pem"
    cp "$3" "$d/key.pem"
    chmod a+r "$d"/*.pem
    chmod 777 "$d"
    cat >"$d/squid.conf" <<C
http_port 127.0.0.1:$(pick_port)
https_port 127.0.0.1:$1 accel tls-cert=$d/crt.pem tls-key=$d/key.pem defaultsite=localhost
cache_peer 127.0.0.1 parent $4 0 no-query originserver name=be
cache_peer_access be allow all
http_access allow all
cache deny all
pid_filename none
cache_log stdio:$d/cache.log
access_log stdio:$d/access.log
coredump_dir $d
shutdown_lifetime 0 seconds
C
}
squid_args() { echo "squid -N -f $BATS_TEST_TMPDIR/squid/squid.conf"; }

# h2o_conf PORT CERT KEY [BACKEND_PORT]: h2o (Debian's 2.2) serving $WWW over TLS on
# 127.0.0.1:PORT, one thread, as nobody (it refuses to run as root), no
# OCSP stapling (it would run an external fetcher). Its stderr (the
# library's lines) stays the start helper's. h2o_args prints the command.
h2o_conf() {
    local d="$BATS_TEST_TMPDIR/h2o"
    mkdir -p "$d"
    chmod 711 "$BATS_TEST_TMPDIR" "$BATS_RUN_TMPDIR" 2>/dev/null || true
    chmod -R a+rX "$WWW"
    cp "$2" "$d/crt.pem"
    cp "$3" "$d/key.pem"
    chmod 644 "$d/crt.pem" "$d/key.pem"
    if [ -n "${STATS:-}" ]; then
        touch "$STATS"
        chmod 666 "$STATS"
    fi
    cat >"$d/h2o.conf" <<CONF
user: nobody
num-threads: 1
listen:
  host: 127.0.0.1
  port: $1
  ssl:
    certificate-file: $d/crt.pem
    key-file: $d/key.pem
    ocsp-update-interval: 0
hosts:
  default:
    paths:
$([ -n "${4:-}" ] && printf '      /up:\n        proxy.reverse.url: http://127.0.0.1:%s/up\n' "$4")
      /:
        file.dir: $WWW
CONF
}
h2o_args() { echo "h2o -c $BATS_TEST_TMPDIR/h2o/h2o.conf"; }

# leave_mid PORT FILE CURL-TLS-OPTIONS: a client that reads the first 64 KiB
# of FILE (a large one) slowly, then leaves: its reader goes away and curl
# ends with a write error (23) while most of the body is still unsent on the
# server's side. Fails, saying why, if curl ended any other way (a whole
# body at once, an error status, a timeout). curl's --limit-rate alone with
# --max-time is not enough: it sometimes let a whole 1 MiB through in 2 s.
leave_mid() {
    local rc
    # shellcheck disable=SC2086 # the options are words
    curl -sSk --max-time 60 --limit-rate 64k $3 "https://127.0.0.1:$1/$2" 2>/dev/null |
        head -c 65536 >/dev/null
    rc=${PIPESTATUS[0]}
    [ "$rc" = 23 ] && return 0
    echo "curl exited $rc, not 23 (a write error once its reader left)"
    return 1
}

# slow_fetch PORT FILE RATE: a client reading at RATE (curl --limit-rate);
# prints the body's hash.
slow_fetch() {
    # shellcheck disable=SC2046 # the options are words
    fetch "$1" "$2" --limit-rate "$3" $(curl_tls 1.3 aes128)
}

# plain_then_off ARGS PORT "VERSIONS" FILE...: the server whose command line
# the function ARGS prints (apache_args, h2o_args) without the library, then
# with KTLSSHIM_KTLS=off writing $STATS (emptied first): each serves every
# FILE intact over each of VERSIONS, ChaCha20 then AES-128-GCM. The caller
# checks $STATS (no kTLS, reason disabled).
plain_then_off() {
    local args=$1 port=$2 vers=$3
    shift 3
    # shellcheck disable=SC2046
    start_plain srv $("$args")
    wait_listen "$port"
    run matrix "$port" ec "$vers" chacha "$@"
    assert_success
    stop_srv srv 30
    : >"$STATS"
    # shellcheck disable=SC2046
    start srv env KTLSSHIM_KTLS=off KTLSSHIM_STATS="$STATS" $("$args")
    wait_listen "$port"
    run matrix "$port" ec "$vers" aes128 "$@"
    assert_success
    stop_srv srv 30
}

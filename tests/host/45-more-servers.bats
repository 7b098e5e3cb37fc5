#!/usr/bin/env bats
# More real servers (Debian packages) that the other suites do not start,
# on the host (no tls ULP): each is run without the library, with it and
# sharded (KTLSSHIM_SHARDS=2), the same client exchange each time (bodies
# hashed, DNS answers exact). With the library it must serve the same, stop
# on its signal with the same exit status, log no new problem, and the
# records count every TLS connection (reason no_kernel_tls). The same
# servers with kernel TLS: tests/vm/45-more-servers.bats. Helpers:
# tests/helpers/servers.bash.

load '../helpers/common'
load '../helpers/tls'
load '../helpers/bioservers'
load '../helpers/servers'

setup() {
    if grep -qw tls /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null; then
        skip "this kernel has the tls ULP: see tests/vm/45-more-servers.bats"
    fi
    srv_setup
}
teardown() { teardown_servers; }

@test "lighttpd (mod_openssl)" { run srv_matrix lighttpd lib shard; assert_success; }
@test "Apache httpd, prefork MPM" { run srv_matrix apache_prefork lib shard; assert_success; }
@test "Apache httpd, worker MPM" { run srv_matrix apache_worker lib shard; assert_success; }
@test "Mojolicious daemon (IO::Socket::SSL)" { run srv_matrix mojo lib shard; assert_success; }
@test "twistd web (pyOpenSSL)" { run srv_matrix twisted lib shard; assert_success; }
@test "cheroot (thread pool, ssl)" { run srv_matrix cheroot lib shard; assert_success; }
@test "aiohttp (asyncio)" { run srv_matrix aiohttp lib shard; assert_success; }
@test "hypercorn (asyncio, ASGI)" { run srv_matrix hypercorn lib shard; assert_success; }
@test "nghttpd (HTTP/2)" { run srv_matrix nghttpd lib shard; assert_success; }
@test "ncat --ssl --sh-exec" { run srv_matrix ncat lib shard; assert_success; }
# Not sharded: N brokers would not share their messages (docs/config.md:
# sharding is for servers whose connections are independent).
@test "mosquitto (MQTT)" { run srv_matrix mosquitto lib; assert_success; }
@test "unbound (DNS over TLS)" { run srv_matrix unbound lib shard; assert_success; }
@test "dnsdist (DNS over TLS)" { run srv_matrix dnsdist lib shard; assert_success; }
@test "nsd (DNS over TLS)" { run srv_matrix nsd lib shard; assert_success; }
@test "proftpd (FTPS)" { run srv_matrix proftpd lib shard; assert_success; }
@test "proftpd, anonymous (chrooted sessions): every session's record is written" {
    SRV_FTP_ANON=1 run srv_matrix proftpd lib
    assert_success
}

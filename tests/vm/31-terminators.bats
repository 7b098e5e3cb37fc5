#!/usr/bin/env bats
# Kernel TLS for TLS terminators that relay to a plain backend, in the VM:
# stunnel (threads, non-blocking sockets, its own poll loop) and socat (a
# forked child per connection). Both use a plain socket BIO, so libssl's
# kTLS sends and, on TLS 1.2, receives; the library's own switch receives
# on TLS 1.3. Every direction of every connection must be kTLS, downloads
# and uploads hash-checked, keep-alive connections carrying several
# requests.

load '../helpers/common'
load '../helpers/tls'
load '../helpers/bioservers'

setup() { vm_setup 0 1 16385 1048583; }
teardown() { teardown_servers; }

# echo_backend PORT: a plain HTTP/1.1 keep-alive server (no library) that
# serves $WWW on GET and answers a POST with the SHA-256 of its body.
echo_backend() {
    start_plain be "$PY" -c '
import functools, hashlib, http.server, sys
class H(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_POST(self):
        n = int(self.headers["Content-Length"])
        h = hashlib.sha256()
        while n:
            b = self.rfile.read(min(n, 65536))
            if not b:
                break
            h.update(b)
            n -= len(b)
        out = h.hexdigest().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
h = functools.partial(H, directory=sys.argv[2])
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), h).serve_forever()
' "$1" "$WWW"
}

# post PORT CURL-TLS-OPTIONS FILE...: uploads each FILE of $WWW on one
# connection; prints "connects N" and fails if a returned hash differs.
post() {
    local port=$1 opts=$2 f n=0 got
    shift 2
    for f in "$@"; do
        # shellcheck disable=SC2086 # the options are words
        got=$(curl -sSkf --max-time 120 $opts --data-binary "@$WWW/$f" \
            -H 'Content-Type: application/octet-stream' "https://127.0.0.1:$port/up") || return 1
        [ "$got" = "$(sha "$WWW/$f")" ] || { echo "BAD upload $f: $got"; return 1; }
        n=$((n + 1))
    done
    echo "uploads $n"
}

@test "stunnel: kTLS TX and RX on every connection (1.3 RX: own switch), keep-alive downloads and uploads intact" {
    port=$(pick_port)
    bport=$(pick_port)
    echo_backend "$bport"
    wait_listen "$bport"
    cat >"$BATS_TEST_TMPDIR/stunnel.conf" <<CONF
foreground = yes
pid =
[tls]
accept = 127.0.0.1:$port
connect = 127.0.0.1:$bport
cert = $CERTS/ec.pem
key = $CERTS/ec.key
CONF
    snap
    start srv env KTLSSHIM_STATS="$STATS" stunnel4 "$BATS_TEST_TMPDIR/stunnel.conf"
    wait_listen "$port"
    run keepalive "$port" "$(curl_tls 1.3 aes128)" s1048583 s0 s1 s16385
    assert_success
    assert_output "connects 1"
    run keepalive "$port" "$(curl_tls 1.2 chacha)" s16385 s1048583
    assert_success
    assert_output "connects 1"
    run keepalive "$port" "$(curl_tls 1.3 chacha)" s1048583
    assert_success
    run post "$port" "$(curl_tls 1.3 aes256)" s1048583
    assert_output "uploads 1"
    run post "$port" "$(curl_tls 1.2 aes128)" s16385
    assert_output "uploads 1"
    run slow_fetch "$port" s1048583 400k
    assert_output "$(sha "$WWW/s1048583")"
    run leave_mid "$port" s1048583 "$(curl_tls 1.2 aes256)"
    assert_success
    run keepalive "$port" "$(curl_tls 1.3 aes128)" s16385
    assert_success
    stop_srv srv 30
    note
    assert_equal "$(delta TlsTxSw)" 8
    assert_equal "$(delta TlsRxSw)" 8
    assert_equal "$(delta TlsDecryptError)" 0
    run stats_check "$STATS" 'len(R) == 1 and S("connections.tls") == 8' \
        'S("connections.tls1_3") == 5 and S("connections.tls1_2") == 3' \
        'S("ktls.tx") == 8 and S("ktls.rx") == 8 and S("ktls.rx_own") == 5' \
        'S("bytes.user_tx") == 0 and S("bytes.user_rx") == 0' \
        "S('bytes.ktls_rx') >= 1048583 + 16385" "S('bytes.ktls_tx') >= 4 * 1048583"
    assert_output ok
}

@test "socat (a forked child per connection): kTLS TX and RX on every connection, downloads and uploads intact, one record per child" {
    port=$(pick_port)
    bport=$(pick_port)
    echo_backend "$bport"
    wait_listen "$bport"
    snap
    start srv env KTLSSHIM_STATS="$STATS" socat \
        "OPENSSL-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork,cert=$CERTS/ec.pem,key=$CERTS/ec.key,verify=0" \
        "TCP:127.0.0.1:$bport"
    wait_listen "$port"
    run keepalive "$port" "$(curl_tls 1.3 aes128)" s1048583 s0 s16385
    assert_success
    assert_output "connects 1"
    run keepalive "$port" "$(curl_tls 1.2 aes256)" s1 s1048583
    assert_success
    run post "$port" "$(curl_tls 1.3 chacha)" s1048583
    assert_output "uploads 1"
    run post "$port" "$(curl_tls 1.2 chacha)" s16385
    assert_output "uploads 1"
    # Each child writes its record when it ends (its client left).
    wait_until 60 test "$(wc -l <"$STATS")" -ge 4
    stop_srv srv 30
    note
    assert_equal "$(delta TlsTxSw)" 4
    assert_equal "$(delta TlsRxSw)" 4
    run stats_check "$STATS" 'S("connections.tls") == 4' \
        'S("ktls.tx") == 4 and S("ktls.rx") == 4 and S("ktls.rx_own") == 2' \
        'S("bytes.user_tx") == 0 and S("bytes.user_rx") == 0'
    assert_output ok
}

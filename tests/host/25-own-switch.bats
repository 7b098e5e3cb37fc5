#!/usr/bin/env bats
# The own kTLS switch's modes on the host (no tls ULP here): uploads to a real
# Python TLS server arrive identical in every mode, the receive side falls
# back with the reason no_kernel_tls, and no keylog callback is installed
# (the program's own keylog callback is untouched).
# tests/vm/25-own-switch.bats is the same with kernel TLS.

load '../helpers/common'
load '../helpers/tls'

SIZES="0 1 16383 16384 16385 1048583"

setup() {
    if grep -qw tls /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null; then
        skip "this kernel has the tls ULP: tests/vm covers it"
    fi
    # shellcheck disable=SC2086
    tls_setup $SIZES
    export KTLSSHIM_STATS="$STATS"
}
teardown() { teardown_servers; }

@test "uploads in auto, own and off modes arrive identical; receive falls back (no_kernel_tls / disabled)" {
    tls_variants serve_uploads "1.3 aes128 eof" "1.2 chacha length --timeout 30"
    export KTLSSHIM_KTLS=own
    tls_variants serve_uploads "1.3 aes256 eof" "1.2 aes256 length"
    export KTLSSHIM_KTLS=off
    serve_uploads 1.3 chacha eof
    run stats_check "$KTLSSHIM_STATS" 'len(R) == 5' 'S("connections.tls") == 30' \
        'S("ktls.rx") == 0 and S("ktls.rx_own") == 0' \
        'S("fallback_rx.no_kernel_tls") == 24 and S("fallback_rx.disabled") == 6' \
        'S("fallback_tx.disabled") == 6 and S("fallback_tx.no_kernel_tls") == 24' \
        "S('bytes.user_rx') == 5 * $((0 + 1 + 16383 + 16384 + 16385 + 1048583)) + 2 * 6 * 8"
    assert_output ok
}

@test "a program's own keylog callback (Python keylog_filename) sees every secret line through the library" {
    # Python's keylog_filename uses SSL_CTX_set_keylog_callback.
    port=$(pick_port)
    export SSLKEYLOGFILE=
    cat >"$BATS_TEST_TMPDIR/kl.py" <<'PYEOF'
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
ctx.keylog_filename = sys.argv[4]
ls = socket.socket(); ls.bind(("127.0.0.1", int(sys.argv[1]))); ls.listen(1)
c = ctx.wrap_socket(ls.accept()[0], server_side=True)
while c.recv(65536):
    pass
c.unwrap(); c.close()
PYEOF
    start srv "$PY" "$BATS_TEST_TMPDIR/kl.py" "$port" "$CERTS/ec.pem" "$CERTS/ec.key" "$BATS_TEST_TMPDIR/keys.log"
    wait_listen "$port"
    run upload "$port" eof 1.3 aes128 "$WWW/s16384"
    assert_success
    wait_gone "$(pid_of srv)" 30
    run grep -c "^CLIENT_TRAFFIC_SECRET_0 \|^SERVER_TRAFFIC_SECRET_0 \|HANDSHAKE_TRAFFIC_SECRET" "$BATS_TEST_TMPDIR/keys.log"
    assert_output 4
    # and the library was there: it counted the handshake
    run stats_check "$KTLSSHIM_STATS" 'len(R) == 1' 'S("connections.tls") == 1'
    assert_output ok
}

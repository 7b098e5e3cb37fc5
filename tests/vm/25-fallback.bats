#!/usr/bin/env bats
# The fallback reasons only a kTLS kernel can give (on the host every
# connection stops at no_kernel_tls first): a cipher kTLS cannot carry, and a
# TLS version it cannot carry. Bodies arrive intact over user-space TLS, and
# the stats say why.

load '../helpers/common'
load '../helpers/tls'

setup() {
    if [ "${KTLSSHIM_VM_INSIDE:-0}" != 1 ]; then
        fail "not inside the kTLS VM: run these through scripts/vm-run (make test-vm)"
    fi
    cd "$BATS_TEST_TMPDIR"
    make_certs
    make_files 16385
    export KTLSSHIM_LOG=debug
    unset KTLSSHIM_KTLS KTLSSHIM_SHARDS KTLSSHIM_ZEROCOPY
    STATS="$BATS_TEST_TMPDIR/s.jsonl"
}
teardown() { teardown_servers; }

# get PORT OPTION...: GET /s16385 over s_client; the body's sha256.
get() {
    local port=$1
    shift
    printf 'GET /s16385 HTTP/1.0\r\n\r\n' |
        timeout 120 openssl s_client -quiet -connect "127.0.0.1:$port" "$@" 2>/dev/null |
        { while IFS= read -r l; do [ "$l" = $'\r' ] && break; done; sha256sum; } | cut -d' ' -f1
}

@test "vm: an AES-CBC cipher (TLS 1.2) falls back with reason cipher, TLS 1.1 with reason version; bodies intact" {
    port=$(pick_port)
    cd "$WWW"
    # -naccept 2: s_server exits by itself, so its record is written
    start srv env KTLSSHIM_STATS="$STATS" openssl s_server -WWW -quiet -naccept 2 \
        -accept "127.0.0.1:$port" -cert "$CERTS/ec.pem" -key "$CERTS/ec.key" \
        -cipher 'ALL:@SECLEVEL=0' -no_tls1_3
    cd "$BATS_TEST_TMPDIR"
    wait_listen "$port"
    run get "$port" -tls1_2 -cipher ECDHE-ECDSA-AES128-SHA256
    assert_output "$(sha "$WWW/s16385")"
    run get "$port" -tls1_1 -cipher 'ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0'
    assert_output "$(sha "$WWW/s16385")"
    wait_gone "$(pid_of srv)" 60
    grep -qE "handshake done on fd [0-9]+: TLS [0-9.]+ ECDHE-ECDSA-AES128-SHA256, tx cipher, rx cipher$" srv.err
    grep -qE "handshake done on fd [0-9]+: TLS [0-9.]+ ECDHE-ECDSA-AES128-SHA, tx version, rx version$" srv.err
    run stats_check "$STATS" 'S("connections.tls") == 2 and S("connections.tls_other") == 1' \
        'S("fallback_tx.cipher") == 1 and S("fallback_rx.cipher") == 1' \
        'S("fallback_tx.version") == 1 and S("fallback_rx.version") == 1' \
        'S("ktls.tx") == 0 and S("ktls.rx") == 0'
    assert_output ok
}

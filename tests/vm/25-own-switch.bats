#!/usr/bin/env bats
# The library's own kTLS switch (shim/kswitch.c), in the VM (Debian 6.1
# kernel, OpenSSL 3.0: libssl has no TLS 1.3 receive offload). Real servers
# receive uploads; every upload is hash-checked on the server side; the
# kernel's counters (/proc/net/tls_stat) and the library's own per-path
# counts must show kTLS receive on every connection. Few connections, strong
# checks: TCG is slow.

load '../helpers/common'
load '../helpers/tls'

SIZES="0 1 16383 16384 16385 1048583"

setup() {
    if [ "${KTLSSHIM_VM_INSIDE:-0}" != 1 ]; then
        fail "not inside the kTLS VM: run these through scripts/vm-run (make test-vm)"
    fi
    cd "$BATS_TEST_TMPDIR"
    make_certs
    # shellcheck disable=SC2086
    make_files $SIZES
    unset KTLSSHIM_KTLS KTLSSHIM_SHARDS KTLSSHIM_ZEROCOPY
    export KTLSSHIM_LOG=debug
    export KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl"
    OUT="$BATS_TEST_TMPDIR/out"
    FILES=()
    for n in $SIZES; do FILES+=("$WWW/s$n"); done
}
teardown() { teardown_servers; }

snap() { cp /proc/net/tls_stat "$BATS_TEST_TMPDIR/tls_stat.before"; }
delta() {
    local b
    b=$(awk -v n="$1" '$1 == n { print $2 }' "$BATS_TEST_TMPDIR/tls_stat.before")
    echo $(($(tls_stat "$1") - ${b:-0}))
}

# serve_uploads MODE VERSION AEAD [sink option...]: a sink for the six
# uploads, the uploads, then the server's exit; checks the hashes.
serve_uploads() {
    local mode=$1 ver=$2 aead=$3
    shift 3
    port=$(pick_port)
    sink_start srv "$port" "$OUT" --mode "$mode" --serve ${#FILES[@]} "$@"
    wait_listen "$port"
    run upload "$port" "$mode" "$ver" "$aead" "${FILES[@]}"
    echo "$output"
    [ "$status" -eq 0 ]
    wait_gone "$(pid_of srv)" 60
    run sums_match "$OUT" "${FILES[@]}"
    echo "$output"
    [ "$status" -eq 0 ]
}

@test "own switch, TLS 1.3 AES-128-GCM, python sink (eof mode): RX kTLS on every upload, bytes intact" {
    snap
    serve_uploads eof 1.3 aes128
    echo "# tls_stat: TlsRxSw+$(delta TlsRxSw) TlsTxSw+$(delta TlsTxSw) TlsDecryptError+$(delta TlsDecryptError)" >&3
    assert_equal "$(delta TlsRxSw)" 6
    run stats_check "$KTLSSHIM_STATS" 'S("connections.tls1_3") == 6' \
        'S("ktls.rx") == 6 and S("ktls.rx_own") == 6 and S("ktls.tx") == 6' \
        'S("fallback_rx.libssl") == 0' "S('bytes.ktls_rx') == $((0 + 1 + 16383 + 16384 + 16385 + 1048583))"
    assert_output ok
}

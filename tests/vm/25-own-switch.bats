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

@test "own switch, TLS 1.3 CHACHA20 and AES-256-GCM, non-blocking python sink, server's close_notify first, slow reader" {
    snap
    serve_uploads length 1.3 chacha --timeout 30
    rm -rf "$OUT"
    serve_uploads length 1.3 aes256 --timeout 30 --slow
    echo "# tls_stat: TlsRxSw+$(delta TlsRxSw) TlsDecryptError+$(delta TlsDecryptError)" >&3
    assert_equal "$(delta TlsRxSw)" 12
    assert_equal "$(delta TlsDecryptError)" 0
    run stats_check "$KTLSSHIM_STATS" 'len(R) == 2' 'S("ktls.rx_own") == 12 and S("ktls.rx") == 12' \
        'S("ktls.rx_bad_record") == 0'
    assert_output ok
}

@test "KTLSSHIM_KTLS=own, TLS 1.2 AES-256-GCM and CHACHA20: RX by the own switch (not libssl), TX in user space" {
    export KTLSSHIM_KTLS=own
    snap
    serve_uploads eof 1.2 aes256
    rm -rf "$OUT"
    serve_uploads length 1.2 chacha
    assert_equal "$(delta TlsRxSw)" 12
    assert_equal "$(delta TlsTxSw)" 0
    run stats_check "$KTLSSHIM_STATS" 'S("connections.tls1_2") == 12' \
        'S("ktls.rx_own") == 12 and S("ktls.tx") == 0 and S("fallback_tx.disabled") == 12'
    assert_output ok
}

@test "KTLSSHIM_KTLS=off: the same uploads arrive identical in user space" {
    export KTLSSHIM_KTLS=off
    snap
    serve_uploads eof 1.3 aes128
    assert_equal "$(delta TlsRxSw)" 0
    run stats_check "$KTLSSHIM_STATS" 'S("ktls.rx") == 0 and S("fallback_rx.disabled") == 6'
    assert_output ok
}

# keyupdate_client PORT: s_client (no library) sends a line, a KeyUpdate
# (its K command), then another line, then stays until the server closes.
keyupdate_client() {
    { printf 'before\n'; sleep 1; printf 'K\n'; sleep 1; printf 'after\n'; sleep 5; } |
        env -u LD_PRELOAD timeout 60 openssl s_client -connect "127.0.0.1:$1" -tls1_3 -quiet \
            >"$BATS_TEST_TMPDIR/ku.out" 2>&1 || true
}

@test "TLS 1.3 KeyUpdate from the client on 6.1: that connection ends with an error, the counter moves, the server serves on" {
    [ "$(uname -r | cut -d. -f1)" -lt 7 ] || skip "this kernel may rekey"
    port=$(pick_port)
    sink_start srv "$port" "$OUT" --serve 2
    wait_listen "$port"
    keyupdate_client "$port"
    wait_file "$OUT/0.err"
    cat "$OUT/0.err"
    grep -qi "key.update\|KEY_UPDATE" "$OUT/0.err"
    [ ! -e "$OUT/0.sum" ]
    run upload "$port" eof 1.3 aes128 "$WWW/s16385"
    assert_success
    wait_gone "$(pid_of srv)" 60
    run sums_match_one "$OUT/1.sum" "$WWW/s16385"
    assert_success
    run stats_check "$KTLSSHIM_STATS" 'S("ktls.rx_keyupdate_refused") == 1' 'S("ktls.rx_own") == 2'
    assert_output ok
    lib_lines srv | grep -q "KeyUpdate"
}

@test "forged, oversized and truncated records after the own switch: each connection ends with an error, the server serves on" {
    port=$(pick_port)
    sink_start srv "$port" "$OUT" --serve 4
    wait_listen "$port"
    for m in forged overflow truncated; do
        run bad_client "$port" "$m" 1.3
        echo "$output"
        assert_success
    done
    run upload "$port" eof 1.3 aes128 "$WWW/s1048583"
    assert_success
    wait_gone "$(pid_of srv)" 60
    for i in 0 1 2; do
        [ -e "$OUT/$i.err" ]
        [ ! -e "$OUT/$i.sum" ]
    done
    run sums_match_one "$OUT/3.sum" "$WWW/s1048583"
    assert_success
    run stats_check "$KTLSSHIM_STATS" 'S("ktls.rx_own") == 4' 'S("ktls.rx_bad_record") >= 2'
    assert_output ok
}

@test "KTLSSHIM_KTLS=own, TLS 1.2 renegotiation (s_client R) is refused, the server serves on" {
    export KTLSSHIM_KTLS=own
    port=$(pick_port)
    sink_start srv "$port" "$OUT" --serve 2 --max 1.2
    wait_listen "$port"
    { printf 'before\n'; sleep 1; printf 'R\n'; sleep 5; } |
        env -u LD_PRELOAD timeout 60 openssl s_client -connect "127.0.0.1:$port" -tls1_2 -quiet \
            >"$BATS_TEST_TMPDIR/reneg.out" 2>&1 || true
    wait_file "$OUT/0.err"
    cat "$OUT/0.err"
    grep -qi "renegotiation" "$OUT/0.err"
    run upload "$port" eof 1.2 aes128 "$WWW/s16384"
    assert_success
    wait_gone "$(pid_of srv)" 60
    run sums_match_one "$OUT/1.sum" "$WWW/s16384"
    assert_success
    run stats_check "$KTLSSHIM_STATS" 'S("ktls.rx_renegotiation_refused") == 1'
    assert_output ok
}

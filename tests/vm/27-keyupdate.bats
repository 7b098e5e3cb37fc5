#!/usr/bin/env bats
# TLS 1.3 KeyUpdate on connections whose receive is the library's own kTLS
# switch (shim/tls/kswitch/rekey.c), on a kernel that can rekey (6.14+: run with
# scripts/vm-run --kernel 7.3; on older kernels these skip, and
# 25-own-switch's 6.1 test covers the refusal). A real client (openssl
# s_client, no library: its K and k commands) talks to the Python sink
# under the library, which echoes every byte back: data before, between
# and after the KeyUpdates goes up and comes back down, both hash-checked;
# the library's counters and the kernel's (/proc/net/tls_stat: TlsRxRekeyOk,
# TlsTxRekeyOk) must show each rekey. Few connections, strong checks.

load '../helpers/common'
load '../helpers/tls'

setup() {
    if [ "${KTLSSHIM_VM_INSIDE:-0}" != 1 ]; then
        fail "not inside the kTLS VM: run these through scripts/vm-run --kernel 7.3"
    fi
    modprobe tls 2>/dev/null || true
    grep -q TlsRxRekeyOk /proc/net/tls_stat 2>/dev/null || skip "this kernel cannot rekey kTLS"
    cd "$BATS_TEST_TMPDIR"
    make_certs
    unset KTLSSHIM_KTLS KTLSSHIM_SHARDS KTLSSHIM_ZEROCOPY
    export KTLSSHIM_LOG=debug
    export KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl"
    OUT="$BATS_TEST_TMPDIR/out"
    cp /proc/net/tls_stat "$BATS_TEST_TMPDIR/tls_stat.before"
}
teardown() { teardown_servers; }

# hex_lines N SEED: N lines of 64 lowercase hex digits (never an s_client
# command letter at the start of a read).
hex_lines() {
    "$PY" -c 'import hashlib, sys
n, seed = int(sys.argv[1]), sys.argv[2]
for i in range(n):
    print(hashlib.sha256(("%s %d" % (seed, i)).encode()).hexdigest())' "$1" "$2"
}

# echoed: the hex lines s_client printed (its own lines never match).
echoed() { grep -cE '^[0-9a-f]{64}$' "$BATS_TEST_TMPDIR/c.out" || true; }
echoed_at_least() { [ "$(echoed)" -ge "$1" ]; }
keyupdates_are() { [ "$(grep -c KEYUPDATE "$BATS_TEST_TMPDIR/c.err")" -eq "$1" ]; }

# keyupdate_session PORT SUITE L1 L2: one s_client connection (TLS 1.3,
# SUITE) sends block 0, waits for its echo, sends the command L1 (K: update
# requested, k: not requested) alone, block 1, waits, L2, block 2, waits,
# then ends. Each block is 600 lines (38 KiB: three records or more). Leaves the blocks in
# $BATS_TEST_TMPDIR/sent and what came back in $BATS_TEST_TMPDIR/got.
keyupdate_session() {
    local port=$1 suite=$2 fifo="$BATS_TEST_TMPDIR/c.fifo" fd cpid i=0 want=0 cmd
    : >"$BATS_TEST_TMPDIR/sent"
    mkfifo "$fifo"
    env -u LD_PRELOAD timeout 300 openssl s_client -connect "127.0.0.1:$port" -tls1_3 \
        -ciphersuites "$suite" <"$fifo" >"$BATS_TEST_TMPDIR/c.out" 2>"$BATS_TEST_TMPDIR/c.err" &
    cpid=$!
    exec {fd}>"$fifo"
    wait_until 60 grep -q "Verify return code" "$BATS_TEST_TMPDIR/c.out"
    for cmd in "" "$3" "$4"; do
        if [ -n "$cmd" ]; then
            # s_client takes a command only at the start of what one read
            # returns: the line goes alone, once the echo is all back.
            printf '%s\n' "$cmd" >&"$fd"
            wait_until 60 keyupdates_are "$i"
        fi
        hex_lines 600 "block $i" | tee -a "$BATS_TEST_TMPDIR/sent" >&"$fd"
        want=$((want + 600))
        wait_until 120 echoed_at_least "$want"
        i=$((i + 1))
    done
    exec {fd}>&-
    wait "$cpid" || true
    grep -E '^[0-9a-f]{64}$' "$BATS_TEST_TMPDIR/c.out" >"$BATS_TEST_TMPDIR/got"
}

# check_session: the echo came back identical, the server received exactly
# what was sent (its sum), and s_client saw no error.
check_session() {
    cmp "$BATS_TEST_TMPDIR/sent" "$BATS_TEST_TMPDIR/got"
    wait_file "$OUT/0.sum"
    run sums_match_one "$OUT/0.sum" "$BATS_TEST_TMPDIR/sent"
    echo "$output"
    assert_success
    [ ! -e "$OUT/0.err" ]
    run grep -iE "SSL routines|alert|bad record|decrypt" "$BATS_TEST_TMPDIR/c.err"
    assert_failure
}

@test "KTLSSHIM_KTLS=auto, TLS 1.3 AES-256-GCM (SHA-384): KeyUpdate requested, then not requested; receive rekeyed twice, libssl's kTLS send rekeyed once by the library, echo identical" {
    port=$(pick_port)
    sink_start srv "$port" "$OUT" --serve 1 --echo
    wait_listen "$port"
    keyupdate_session "$port" TLS_AES_256_GCM_SHA384 K k
    check_session
    wait_gone "$(pid_of srv)" 60
    echo "# tls_stat: TlsRxRekeyOk+$(delta TlsRxRekeyOk) TlsTxRekeyOk+$(delta TlsTxRekeyOk) TlsRxSw+$(delta TlsRxSw) TlsTxSw+$(delta TlsTxSw)" >&3
    assert_equal "$(delta TlsRxSw)" 1
    assert_equal "$(delta TlsTxSw)" 1
    assert_equal "$(delta TlsRxRekeyOk)" 2
    assert_equal "$(delta TlsTxRekeyOk)" 1
    assert_equal "$(delta TlsRxRekeyError)" 0
    assert_equal "$(delta TlsDecryptError)" 0
    run stats_check "$KTLSSHIM_STATS" 'S("connections.tls1_3") == 1' \
        'S("ktls.rx_own") == 1 and S("ktls.tx") == 1 and S("ktls.tx_own") == 0' \
        'S("ktls.rx_keyupdate") == 2 and S("ktls.tx_keyupdate") == 1' \
        'S("ktls.rx_keyupdate_refused") == 0 and S("ktls.tx_keyupdate_failed") == 0' \
        "S('bytes.ktls_rx') == $(stat -c %s "$BATS_TEST_TMPDIR/sent")"
    assert_output ok
}

@test "KTLSSHIM_KTLS=own, TLS 1.3 CHACHA20, non-blocking sink: KeyUpdate not requested, then requested; both directions by the own switch, rekeyed in the kernel, echo identical" {
    export KTLSSHIM_KTLS=own
    port=$(pick_port)
    sink_start srv "$port" "$OUT" --serve 1 --echo --timeout 30
    wait_listen "$port"
    keyupdate_session "$port" TLS_CHACHA20_POLY1305_SHA256 k K
    check_session
    wait_gone "$(pid_of srv)" 60
    echo "# tls_stat: TlsRxRekeyOk+$(delta TlsRxRekeyOk) TlsTxRekeyOk+$(delta TlsTxRekeyOk)" >&3
    assert_equal "$(delta TlsRxRekeyOk)" 2
    assert_equal "$(delta TlsTxRekeyOk)" 1
    assert_equal "$(delta TlsDecryptError)" 0
    run stats_check "$KTLSSHIM_STATS" 'S("ktls.rx_own") == 1 and S("ktls.tx_own") == 1' \
        'S("ktls.rx_keyupdate") == 2 and S("ktls.tx_keyupdate") == 1' \
        'S("ktls.rx_keyupdate_refused") == 0'
    assert_output ok
}

# ---- a long life (shim/tls/kswitch/lifetime.c) ----

# kuc ARG...: tests/helpers/ku_client.py (libssl through ctypes), without
# the library.
kuc() { env -u LD_PRELOAD timeout 60 "$PY" "$HELPERS_DIR/ku_client.py" "$@"; }

@test "a client sending 1000 KeyUpdates a second is cut off at KTLSSHIM_KEYUPDATE_LIMIT (default 100) with an alert; the server serves the next connection, its upload intact" {
    port=$(pick_port)
    sink_start srv "$port" "$OUT" --serve 2
    wait_listen "$port"
    run kuc flood "$port" 1000 20
    echo "$output"
    assert_success
    assert_output --partial "unexpected message"
    n=$(sed -n 's/^cut after \([0-9]*\) keyupdates.*/\1/p' <<<"$output")
    [ "$n" -gt 100 ]
    head -c 200000 /dev/urandom >"$BATS_TEST_TMPDIR/up"
    upload "$port" eof 1.3 aes128 "$BATS_TEST_TMPDIR/up"
    wait_gone "$(pid_of srv)" 60
    cat "$OUT/0.err"
    grep -qi "too many key updates" "$OUT/0.err"
    run sums_match_one "$OUT/1.sum" "$BATS_TEST_TMPDIR/up"
    assert_success
    echo "# tls_stat: TlsRxRekeyOk+$(delta TlsRxRekeyOk), client sent $n" >&3
    assert_equal "$(delta TlsRxRekeyOk)" 100
    run stats_check "$KTLSSHIM_STATS" 'S("ktls.rx_own") == 2' \
        'S("ktls.rx_keyupdate") == 100 and S("ktls.rx_keyupdate_flood") == 1' \
        'S("ktls.rx_keyupdate_refused") == 0'
    assert_output ok
}

@test "receive kept by libssl (TLS 1.3 AES-128-CCM: the own switch has no CCM): 1000 KeyUpdates a second cut off at the limit too; the next connection's upload intact" {
    # Both ends offer only CCM (OPENSSL_CONF's system_default applies to the
    # server's and the ctypes client's contexts).
    printf '%s\n' 'openssl_conf = c' '[c]' 'ssl_conf = s' '[s]' 'system_default = d' '[d]' \
        'Ciphersuites = TLS_AES_128_CCM_SHA256' >"$BATS_TEST_TMPDIR/ccm.cnf"
    export OPENSSL_CONF="$BATS_TEST_TMPDIR/ccm.cnf"
    port=$(pick_port)
    sink_start srv "$port" "$OUT" --serve 2
    wait_listen "$port"
    run kuc flood "$port" 1000 20
    echo "$output"
    assert_success
    n=$(sed -n 's/^cut after \([0-9]*\) keyupdates.*/\1/p' <<<"$output")
    [ "$n" -gt 100 ]
    head -c 200000 /dev/urandom >"$BATS_TEST_TMPDIR/up"
    run env -u LD_PRELOAD "$PY" "$HELPERS_DIR/tls_send.py" "$port" eof 1.3 "" "$BATS_TEST_TMPDIR/up"
    echo "$output"
    assert_success
    wait_gone "$(pid_of srv)" 60
    # the cut connection: libssl discarded what followed and read an end
    cat "$OUT/0.err" 2>/dev/null || true
    echo "hello before the storm" >"$BATS_TEST_TMPDIR/hello"
    run sums_match_one "$OUT/0.sum" "$BATS_TEST_TMPDIR/hello"
    assert_success
    run sums_match_one "$OUT/1.sum" "$BATS_TEST_TMPDIR/up"
    assert_success
    run stats_check "$KTLSSHIM_STATS" 'S("connections.tls1_3") == 2 and S("ktls.rx_own") == 0' \
        'S("fallback_rx.cipher") == 2 and S("ktls.rx_keyupdate_flood") == 1'
    assert_output ok
}

# rekeyed_download [tx_own]: KTLSSHIM_REKEY_RECORDS=16, a 1 MiB download
# from tls_source.py (non-blocking, 4 KiB send buffer: many sends), body
# identical, several send-side rekeys, the kernel's TlsTxRekeyOk moved by
# exactly the library's ktls.tx_rekey; ktls.tx_own as given (0: libssl's
# kTLS TX, 1: the own switch's).
rekeyed_download() {
    export KTLSSHIM_REKEY_RECORDS=16 KTLSSHIM_LOG=info
    mkdir -p "$BATS_TEST_TMPDIR/www" "$BATS_TEST_TMPDIR/got"
    head -c 1048583 /dev/urandom >"$BATS_TEST_TMPDIR/www/big"
    port=$(pick_port)
    start srv "$PY" "$HELPERS_DIR/tls_source.py" --port "$port" --cert "$CERTS/ec.pem" \
        --key "$CERTS/ec.key" --dir "$BATS_TEST_TMPDIR/www" --timeout 30 --small-buffers
    wait_listen "$port"
    GOT="$BATS_TEST_TMPDIR/got"
    run fetch_files "$port" 1.3 aes128 big
    echo "$output"
    assert_success
    assert_output --partial "ok big 1048583 clean"
    cmp "$BATS_TEST_TMPDIR/www/big" "$BATS_TEST_TMPDIR/got/big"
    wait_gone "$(pid_of srv)" 60
    rekeys=$(json_get "$KTLSSHIM_STATS" process ktls.tx_rekey)
    echo "# tls_stat: TlsTxRekeyOk+$(delta TlsTxRekeyOk) TlsTxSw+$(delta TlsTxSw); ktls.tx_rekey $rekeys" >&3
    [ "$rekeys" -ge 2 ] # several (64 full records at least; a send may carry many)
    assert_equal "$(delta TlsTxRekeyOk)" "$rekeys"
    assert_equal "$(delta TlsDecryptError)" 0
    run stats_check "$KTLSSHIM_STATS" "S('ktls.rx_own') == 1 and S('ktls.tx_own') == $1" \
        "S('ktls.tx_keyupdate') == $rekeys and S('ktls.tx_keyupdate_failed') == 0" \
        'S("ktls.tx_rekey_unable") == 0'
    assert_output ok
}

@test "KTLSSHIM_REKEY_RECORDS=16: a 1 MiB download (non-blocking server, 4 KiB send buffer) crosses several send-side rekeys of libssl's kTLS TX, body intact; TlsTxRekeyOk moves by ktls.tx_rekey" {
    rekeyed_download 0
}

@test "KTLSSHIM_KTLS=own, KTLSSHIM_REKEY_RECORDS=16: the same download through the own switch's send side, rekeyed several times, body intact" {
    export KTLSSHIM_KTLS=own
    rekeyed_download 1
}

@test "KTLSSHIM_RX_NO_PAD=on: a client padding every record (SSL_CTX_set_block_padding 256) makes the kernel retry (TlsRxNoPadViolation); the upload arrives intact" {
    export KTLSSHIM_RX_NO_PAD=on
    port=$(pick_port)
    sink_start srv "$port" "$OUT" --serve 1
    wait_listen "$port"
    head -c 300007 /dev/urandom >"$BATS_TEST_TMPDIR/up"
    run kuc pad "$port" 256 "$BATS_TEST_TMPDIR/up"
    echo "$output"
    assert_success
    wait_gone "$(pid_of srv)" 60
    run sums_match_one "$OUT/0.sum" "$BATS_TEST_TMPDIR/up"
    assert_success
    echo "# tls_stat: TlsRxNoPadViolation+$(delta TlsRxNoPadViolation) TlsDecryptRetry+$(delta TlsDecryptRetry)" >&3
    [ "$(delta TlsRxNoPadViolation)" -ge 1 ]
    assert_equal "$(delta TlsDecryptError)" 0
    run stats_check "$KTLSSHIM_STATS" 'S("ktls.rx_own") == 1 and S("ktls.rx_no_pad") == 1'
    assert_output ok
}

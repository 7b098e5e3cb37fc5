#!/usr/bin/env bats
# Two copies of OpenSSL 3 in one process (shim/tls/ossl/copies.c): Python's ssl
# on the system's libssl.so.3 next to a plugin that brings its own renamed
# copy (as a wheel does: libssx.so.3 / libcryptx.so.3 here, the same
# symbol versions), or a copy of libssl.so.3 opened by path through ctypes.
# Every call must reach the copy it belongs to: both servers' bodies arrive
# whole, the copy's calls pass through untouched (hooks.other_copy), and the
# served copy's connection is the one the record counts. Without the
# routing, the library hands one copy's objects to the other and the
# handshakes fail.

load '../helpers/common'
load '../helpers/tls'
load '../helpers/copies'

setup_file() {
    make_copies "$BATS_FILE_TMPDIR"
}

setup() {
    cd "$BATS_TEST_TMPDIR"
    COPIES="$BATS_FILE_TMPDIR"
    make_certs
    head -c 100000 /dev/urandom >body
    export KTLSSHIM_LOG=debug
    unset KTLSSHIM_KTLS KTLSSHIM_SHARDS KTLSSHIM_ZEROCOPY
    STATS="$BATS_TEST_TMPDIR/s.jsonl"
}
teardown() { teardown_servers; }

need_no_tls() {
    if grep -qw tls /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null; then
        skip "this kernel has the tls ULP: see tests/vm/28-openssl-copies.bats"
    fi
}

@test "a plugin with its own renamed OpenSSL 3 serving beside Python's ssl: both bodies whole; the copy's calls pass through untouched (hooks.other_copy), Python's connection is the one counted" {
    need_no_tls
    plugin_and_ssl together
    run stats_check "$STATS" 'len(R) == 1 and R[0]["openssl"].startswith("3.")' \
        'S("hooks.other_copy") > 50 and S("connections.tls") == 1' \
        'S("fallback_tx.no_kernel_tls") == 1 and S("bytes.user_tx") >= 100000'
    assert_output ok
    grep -q "second copy of OpenSSL 3 (.*/libssx.so.3)" two.err
}

@test "the renamed copy serves before the ssl module is even loaded (no libssl.so.3 in the process yet): its calls still reach it, and Python's later connection is served and counted" {
    need_no_tls
    plugin_and_ssl copy-first
    run stats_check "$STATS" 'len(R) == 1' \
        'S("hooks.other_copy") > 50 and S("connections.tls") == 1' \
        'S("bytes.user_tx") >= 100000'
    assert_output ok
}

@test "a copy of libssl.so.3 opened by path through ctypes after Python's ssl: its calls, its tail calls included (SSL_accept -> SSL_do_handshake), reach its own functions" {
    need_no_tls
    local port
    port=$(free_port)
    start mix env KTLSSHIM_STATS="$STATS" LIBSSL=libssl.so.3 LIBCRYPTO=libcrypto.so.3 "$PY" \
        "$HELPERS_DIR/tls111_ctypes.py" "$COPIES/same" "$port" "$CERTS/ec.pem" \
        "$CERTS/ec.key" "$BATS_TEST_TMPDIR/body" 3-first
    wait_listen "$port"
    assert_equal "$(fetch_line "$port")" "$(sha body)"
    wait_status mix
    cat mix.out mix.err
    assert_equal "$status_of" 0
    grep -qx ok mix.out
    run stats_check "$STATS" 'len(R) == 1' 'S("hooks.other_copy") > 10' \
        'S("connections.tls") == 0'
    assert_output ok
    grep -q "second copy of OpenSSL 3 (.*/same/libssl.so.3)" mix.err
}

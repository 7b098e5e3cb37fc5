#!/usr/bin/env bats
# OpenSSL 1.1.1 programs (bullseye's libssl1.1, its openssl 1.1.1w and
# nginx-light 1.18 built on it: scripts/openssl111) on the host (no kTLS).
# Their hooks must run (libssl.so.1.1's symbol versions): the record says
# which OpenSSL, counts every connection, and gives no_kernel_tls as the
# reason in both directions; every body arrives as without the library. The
# 1.1 libraries are given to the servers only (curl, the client, and the
# library itself stay on OpenSSL 3). tests/vm/27-openssl111.bats has kTLS.

load '../helpers/common'
load '../helpers/tls'

FILES="s0 s1 s16385 s1048583"

setup() {
    R111=$("$ROOT/scripts/openssl111")
    LIB111="$R111/usr/lib/x86_64-linux-gnu"
    cd "$BATS_TEST_TMPDIR"
    make_certs
    make_files 0 1 16385 1048583
    export KTLSSHIM_LOG=debug
    unset KTLSSHIM_KTLS KTLSSHIM_SHARDS KTLSSHIM_ZEROCOPY
    STATS="$BATS_TEST_TMPDIR/s.jsonl"
}
teardown() { teardown_servers; }

need_no_tls() {
    if grep -qw tls /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null; then
        skip "this kernel has the tls ULP: see tests/vm/27-openssl111.bats"
    fi
}

# same_without_lib NAME PORT CMD...: CMD (the same server) started without
# the library as NAME serves every file of $FILES as the library's run got
# them (matrix.out) and as they are.
same_without_lib() {
    local name=$1 port=$2 f got
    shift 2
    start_plain "$name" "$@"
    wait_listen "$port"
    for f in $FILES; do
        got=$(fetch "$port" "$f" --tlsv1.3)
        [ "$got" = "$(sha "$WWW/$f")" ] || { echo "plain run: $f: $got"; return 1; }
        if awk -v f="$f" '$3 == f' matrix.out | grep -v " $got\$"; then
            echo "the library's run got another body for $f"
            return 1
        fi
    done
    stop_srv "$name"
}

# The checks every 1.1.1 server's records must pass after N connections.
check_111_records() {
    run stats_check "$STATS" 'len(R) >= 1' 'all(r["openssl"] == "1.1.1w" for r in R)' \
        "S('connections.tls') == $1" \
        "S('fallback_tx.no_kernel_tls') == $1 and S('fallback_rx.no_kernel_tls') == $1" \
        'S("ktls.tx") == 0 and S("ktls.rx") == 0 and S("hooks.other_openssl") == 0 and S("hooks.other_copy") == 0'
    assert_output ok
}

@test "OpenSSL 1.1.1 s_server -WWW: TLS 1.3 and 1.2 bodies as without the library; the record says 1.1.1w, counts every connection, no_kernel_tls both ways" {
    need_no_tls
    port=$(free_port)
    # -WWW serves the files of its working directory
    cmd=(env --chdir="$WWW" LD_LIBRARY_PATH="$LIB111" OPENSSL_CONF="$R111/openssl.cnf"
        "$R111/usr/bin/openssl" s_server -WWW -accept "127.0.0.1:$port" -cert "$CERTS/ec.pem" -key "$CERTS/ec.key")
    start srv env KTLSSHIM_STATS="$STATS" "${cmd[@]}"
    wait_listen "$port"
    # shellcheck disable=SC2086
    run matrix "$port" ec 1.3 "aes128 chacha" $FILES
    assert_success
    # shellcheck disable=SC2086
    run matrix "$port" ec 1.2 aes256 $FILES
    assert_success
    stop_srv srv
    check_111_records 12
    run same_without_lib plain "$port" "${cmd[@]}"
    assert_success
}

@test "OpenSSL 1.1.1 nginx 1.18: bodies as without the library; the record says 1.1.1w, counts every connection, no_kernel_tls both ways" {
    need_no_tls
    port=$(free_port)
    nginx_conf "$port" "$CERTS/ec.pem" "$CERTS/ec.key" off
    # nginx 1.18 has no -e: its log is the configuration's error_log
    cmd=(env LD_LIBRARY_PATH="$LIB111" OPENSSL_CONF="$R111/openssl.cnf" "$R111/usr/sbin/nginx"
        -c "$BATS_TEST_TMPDIR/nginx.conf")
    start srv env KTLSSHIM_STATS="$STATS" "${cmd[@]}"
    wait_listen "$port"
    # shellcheck disable=SC2086
    run matrix "$port" ec "1.3 1.2" "aes128 chacha" $FILES
    assert_success
    stop_srv srv
    check_111_records 16
    run same_without_lib plain "$port" "${cmd[@]}"
    assert_success
}

# mixed ORDER [DIR]: tests/helpers/tls111_ctypes.py with the library:
# Python's ssl (OpenSSL 3) and, through ctypes, a libssl.so.1.1 (from DIR,
# by the name in LIBSSL if set) server of one connection that answers a line
# with 100000 random bytes (checked here).
mixed() {
    local port
    port=$(free_port)
    head -c 100000 /dev/urandom >"$BATS_TEST_TMPDIR/body"
    rm -f "$STATS"
    start mix env KTLSSHIM_STATS="$STATS" LIBSSL="${LIBSSL:-libssl.so.1.1}" "$PY" \
        "$HELPERS_DIR/tls111_ctypes.py" "${2:-$LIB111}" \
        "$port" "$CERTS/ec.pem" "$CERTS/ec.key" "$BATS_TEST_TMPDIR/body" "$1"
    wait_listen "$port"
    got=$(fetch_line "$port")
    assert_equal "$got" "$(sha "$BATS_TEST_TMPDIR/body")"
    wait_status mix
    cat "$BATS_TEST_TMPDIR/mix.out" "$BATS_TEST_TMPDIR/mix.err"
    grep -qx ok "$BATS_TEST_TMPDIR/mix.out"
}

@test "a process with both OpenSSLs (Python's ssl and a libssl.so.1.1 server through ctypes): the first one called is served, every call to the other passes through untouched and is counted" {
    need_no_tls
    mixed 3-first
    run stats_check "$STATS" 'len(R) == 1 and R[0]["openssl"].startswith("3.")' \
        'S("hooks.other_openssl") >= 1 and S("connections.tls") == 0'
    assert_output ok
    lib_lines mix | grep -q "calls to OpenSSL 1.1 (libssl.so.1.1) (.*) pass through untouched"
    # libssl loaded by a longer file name than its soname (libssl.so.1.1.1w,
    # as distributions name the file): still found
    mkdir "$BATS_TEST_TMPDIR/lib"
    ln -s "$LIB111/libcrypto.so.1.1" "$BATS_TEST_TMPDIR/lib/libcrypto.so.1.1"
    ln -s "$LIB111/libssl.so.1.1" "$BATS_TEST_TMPDIR/lib/libssl.so.1.1.1w"
    LIBSSL=libssl.so.1.1.1w mixed 111-first "$BATS_TEST_TMPDIR/lib"
    run stats_check "$STATS" 'len(R) == 1 and R[0]["openssl"] == "1.1.1w"' \
        'S("hooks.other_openssl") >= 1 and S("connections.tls") == 1' \
        'S("fallback_tx.no_kernel_tls") == 1 and S("fallback_rx.no_kernel_tls") == 1'
    assert_output ok
    lib_lines mix | grep -q "calls to OpenSSL 3 (libssl.so.3) (.*) pass through untouched"
}

@test "OpenSSL 1.1.1 through memory BIOs (as asyncio): the body as sent, fallback not_socket both ways" {
    need_no_tls
    mixed 111-membio
    run stats_check "$STATS" 'len(R) == 1 and R[0]["openssl"] == "1.1.1w"' \
        'S("connections.tls") == 1 and S("hooks.other_openssl") == 0' \
        'S("fallback_tx.not_socket") == 1 and S("fallback_rx.not_socket") == 1'
    assert_output ok
}

@test "an OpenSSL 3 program's record says 3.x and nothing passed through" {
    need_no_tls
    port=$(free_port)
    start srv env KTLSSHIM_STATS="$STATS" "$PY" "$(py_server)" --port "$port" \
        --cert "$CERTS/ec.pem" --key "$CERTS/ec.key" --dir "$WWW"
    wait_listen "$port"
    run fetch "$port" s16385
    assert_output "$(sha "$WWW/s16385")"
    stop_srv srv
    run stats_check "$STATS" 'len(R) == 1 and R[0]["openssl"].startswith("3.")' \
        'S("connections.tls") == 1 and S("hooks.other_openssl") == 0 and S("hooks.other_copy") == 0'
    assert_output ok
}

@test "OpenSSL 1.1.1 s_server sharded (KTLSSHIM_SHARDS=2): both workers' records say 1.1.1w, sums add up, one line says the shared resumption stays off" {
    need_no_tls
    port=$(free_port)
    echo hello >"$WWW/hello.txt"
    start srv env --chdir="$WWW" KTLSSHIM_SHARDS=2 KTLSSHIM_STATS="$STATS" LD_LIBRARY_PATH="$LIB111" \
        OPENSSL_CONF="$R111/openssl.cnf" "$R111/usr/bin/openssl" s_server -WWW \
        -accept "127.0.0.1:$port" -cert "$CERTS/ec.pem" -key "$CERTS/ec.key"
    wait_listen "$port"
    for _ in 1 2 3 4 5 6 7 8; do
        run fetch "$port" hello.txt
        assert_output "$(sha "$WWW/hello.txt")"
    done
    stop_srv srv
    run stats_check "$STATS" 'len([r for r in R if r["role"] == "worker"]) == 2' \
        'all(r["openssl"] == "1.1.1w" for r in R if r["role"] == "worker")' \
        'SUP("connections.tls") == 8' "$SUMS_ADD_UP"
    assert_output ok
    run grep -c "OpenSSL 1.1: the shards' shared session cache and ticket keys stay off" \
        "$BATS_TEST_TMPDIR/srv.err"
    assert_output 1
}

#!/usr/bin/env bats
# TLS through real, unmodified servers (openssl s_server -WWW, Python's
# http.server wrapped with ssl, nginx) and real clients (curl, openssl
# s_client). The host kernel has no tls ULP: every connection must fall back
# to user-space TLS with the reason no_kernel_tls, and every byte must
# arrive as it would without the library. tests/vm/20-ktls.bats is the same
# with kernel TLS.

load '../helpers/common'
load '../helpers/tls'

SIZES="0 1 16383 16384 16385 1048583 3145728"
FILES="s0 s1 s16383 s16384 s16385 s1048583 s3145728"
TOTAL=$((0 + 1 + 16383 + 16384 + 16385 + 1048583 + 3145728))
AEADS="aes128 aes256 chacha"

setup() {
    cd "$BATS_TEST_TMPDIR"
    make_certs
    # shellcheck disable=SC2086
    make_files $SIZES
    export KTLSSHIM_LOG=debug
    unset KTLSSHIM_KTLS KTLSSHIM_SHARDS KTLSSHIM_ZEROCOPY
    STATS="$BATS_TEST_TMPDIR/s.jsonl"
}
teardown() { teardown_servers; }

# The host must be what this file expects: no tls ULP.
need_no_tls() {
    if grep -qw tls /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null; then
        skip "this kernel has the tls ULP: see tests/vm/20-ktls.bats"
    fi
}

# plain_hashes NAME PORT FILE...: the same server started without the
# library (by the caller, as NAME) serves each file (TLS 1.3 and 1.2): the
# bodies hash as the files and as what the matrix got with the library.
plain_hashes() {
    local name=$1 port=$2 f got v
    shift 2
    wait_listen "$port"
    for f in "$@"; do
        for v in 1.3 1.2; do
            got=$(fetch "$port" "$f" "--tlsv$v" --tls-max "$v")
            [ "$got" = "$(sha "$WWW/$f")" ] || { echo "plain run: $f over $v: $got" >&2; return 1; }
            # and what the library's run received (every version/cipher)
            if awk -v f="$f" '$3 == f' matrix.out | grep -v " $got\$"; then
                echo "the library's run got another body for $f" >&2
                return 1
            fi
        done
    done
    stop_srv "$name"
}

# s_client_fetch PORT PATH OPTION...: GET over openssl s_client; prints the
# sha256 of the body (the HTTP header is skipped byte by byte).
s_client_fetch() {
    local port=$1 path=$2
    shift 2
    printf 'GET /%s HTTP/1.0\r\n\r\n' "$path" |
        timeout 30 openssl s_client -quiet -connect "127.0.0.1:$port" "$@" 2>/dev/null |
        { while IFS= read -r l; do [ "$l" = $'\r' ] && break; done; sha256sum; } | cut -d' ' -f1
}

@test "python http.server + ssl: TLS 1.2 and 1.3 x 3 AEADs x 7 sizes arrive intact, fall back with no_kernel_tls, bytes counted" {
    need_no_tls
    port=$(free_port)
    start srv env KTLSSHIM_STATS="$STATS" "$PY" "$(py_server)" --port "$port" \
        --cert "$CERTS/ec.pem" --key "$CERTS/ec.key" --dir "$WWW"
    wait_listen "$port"
    # shellcheck disable=SC2086
    run matrix "$port" ec "1.2 1.3" "$AEADS" $FILES
    assert_success
    for v in 1.2 1.3; do
        for a in $AEADS; do
            run count_handshakes srv "$v" "$(cipher_name "$v" "$a")" no_kernel_tls no_kernel_tls
            assert_output 7
        done
    done
    refute grep -q "strict:" srv.err
    stop_srv srv
    assert_equal "$status_of" 0
    run stats_check "$STATS" 'len(R) == 1 and R[0]["program"] == "python3"' \
        'S("connections.accepted") == 42' 'S("connections.tls") == 42' \
        'S("connections.tls1_2") == 21' 'S("connections.tls1_3") == 21' \
        'S("fallback_tx.no_kernel_tls") == 42' 'S("fallback_rx.no_kernel_tls") == 42' \
        'S("ktls.tx") == 0 and S("ktls.rx") == 0' \
        "S('bytes.user_tx') >= 6 * $TOTAL" 'S("bytes.user_rx") > 42 * 20' \
        'S("bytes.ktls_tx") == 0 and S("bytes.sendfile") == 0'
    assert_output ok
    # The same server without the library sends the same bytes.
    port=$(free_port)
    start_plain ref "$PY" "$(py_server)" --port "$port" --cert "$CERTS/ec.pem" --key "$CERTS/ec.key" --dir "$WWW"
    # shellcheck disable=SC2086
    plain_hashes ref "$port" $FILES
}

@test "nginx (sendfile on, no kTLS directive): TLS 1.2 and 1.3 x 3 AEADs x 7 sizes arrive intact, no_kernel_tls, bytes counted" {
    need_no_tls
    port=$(free_port)
    nginx_conf "$port" "$CERTS/rsa.pem" "$CERTS/rsa.key" off
    # shellcheck disable=SC2046
    start srv env KTLSSHIM_STATS="$STATS" $(nginx_args)
    wait_listen "$port"
    # shellcheck disable=SC2086
    run matrix "$port" rsa "1.2 1.3" "$AEADS" $FILES
    assert_success
    for v in 1.2 1.3; do
        for a in $AEADS; do
            run count_handshakes srv "$v" "$(cipher_name "$v" "$a" rsa)" no_kernel_tls no_kernel_tls
            assert_output 7
        done
    done
    stop_srv srv
    assert_equal "$status_of" 0
    run stats_check "$STATS" 'len(R) == 1 and R[0]["program"] == "nginx"' \
        'S("connections.accepted") == 42' 'S("connections.tls") == 42' \
        'S("connections.tls1_2") == 21' 'S("connections.tls1_3") == 21' \
        'S("fallback_tx.no_kernel_tls") == 42' 'S("fallback_rx.no_kernel_tls") == 42' \
        'S("ktls.tx") == 0 and S("ktls.rx") == 0' \
        "S('bytes.user_tx') >= 6 * $TOTAL" 'S("bytes.user_rx") > 42 * 20' \
        'S("bytes.ktls_tx") == 0 and S("bytes.sendfile") == 0'
    assert_output ok
    refute grep -E "\[(alert|crit|emerg)\]" logs/error.log
    port=$(free_port)
    nginx_conf "$port" "$CERTS/rsa.pem" "$CERTS/rsa.key" off
    # shellcheck disable=SC2046
    start_plain ref $(nginx_args)
    # shellcheck disable=SC2086
    plain_hashes ref "$port" $FILES
}

@test "nginx with master_process on: the worker's record counts every connection and byte; s_client gets intact bodies" {
    need_no_tls
    port=$(free_port)
    nginx_conf "$port" "$CERTS/ec.pem" "$CERTS/ec.key" on
    # shellcheck disable=SC2046
    start srv env KTLSSHIM_STATS="$STATS" $(nginx_args)
    wait_listen "$port"
    run matrix "$port" ec "1.2 1.3" "aes256 chacha" s16384 s1048583
    assert_success
    for f in s0 s16385; do
        run s_client_fetch "$port" "$f" -tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256
        assert_output "$(sha "$WWW/$f")"
        run s_client_fetch "$port" "$f" -tls1_3 -ciphersuites TLS_CHACHA20_POLY1305_SHA256
        assert_output "$(sha "$WWW/$f")"
    done
    stop_srv srv
    # master and worker are both nginx; only the worker did TLS.
    run stats_check "$STATS" 'len(R) == 1 and R[0]["pid"] != '"$(pid_of srv)" \
        'S("connections.tls") == 12' 'S("connections.tls1_2") == 6' 'S("connections.tls1_3") == 6' \
        'S("fallback_tx.no_kernel_tls") == 12 and S("fallback_rx.no_kernel_tls") == 12' \
        "S('bytes.user_tx') >= 2 * (16384 + 1048583) + 2 * 16385"
    assert_output ok
}

@test "openssl s_server -WWW: curl and s_client bodies intact over 1.2 and 1.3 x 3 AEADs; connections counted per version, bytes through its SSL BIO counted" {
    need_no_tls
    port=$(free_port)
    cd "$WWW"
    start srv env KTLSSHIM_STATS="$STATS" openssl s_server -WWW -quiet -naccept 22 \
        -accept "127.0.0.1:$port" -cert "$CERTS/ec.pem" -key "$CERTS/ec.key"
    cd "$BATS_TEST_TMPDIR"
    wait_listen "$port"
    run matrix "$port" ec "1.2 1.3" "$AEADS" s0 s16385 s1048583
    assert_success
    for f in s1 s16384; do
        run s_client_fetch "$port" "$f" -tls1_2 -cipher ECDHE-ECDSA-CHACHA20-POLY1305
        assert_output "$(sha "$WWW/$f")"
        run s_client_fetch "$port" "$f" -tls1_3 -ciphersuites TLS_AES_128_GCM_SHA256
        assert_output "$(sha "$WWW/$f")"
    done
    # -naccept 22: it ends by itself after the 22nd connection.
    wait_gone "$(pid_of srv)" 10
    wait_status srv
    assert_equal "$status_of" 0
    run count_handshakes srv 1.2 ECDHE-ECDSA-CHACHA20-POLY1305 no_kernel_tls no_kernel_tls
    assert_output 5
    # Its reads and writes go through libssl's SSL BIO, which the library
    # makes pass the hooks (shim/tls/sslbio.c): the bodies' bytes are
    # counted (6 x (0 + 16385 + 1048583) from curl, 2 x (1 + 16384) from
    # s_client, and each reply's header), as user bytes here.
    run stats_check "$STATS" 'len(R) == 1 and R[0]["program"] == "openssl"' \
        'S("connections.accepted") == 22 and S("connections.tls") == 22' \
        'S("connections.tls1_2") == 11 and S("connections.tls1_3") == 11' \
        'S("fallback_tx.no_kernel_tls") == 22 and S("fallback_rx.no_kernel_tls") == 22' \
        'S("bytes.user_tx") >= 6 * (16385 + 1048583) + 2 * 16385' \
        'S("bytes.user_tx") < 6 * (16385 + 1048583) + 2 * 16385 + 22 * 200' \
        'S("bytes.user_rx") > 0 and S("bytes.ktls_tx") == 0 and S("bytes.ktls_rx") == 0'
    assert_output ok
}

@test "KTLSSHIM_KTLS=off: the fallback reason is disabled for tx and rx, bodies intact" {
    port=$(free_port)
    start srv env KTLSSHIM_KTLS=off KTLSSHIM_STATS="$STATS" "$PY" "$(py_server)" --port "$port" \
        --cert "$CERTS/ec.pem" --key "$CERTS/ec.key" --dir "$WWW"
    wait_listen "$port"
    run matrix "$port" ec "1.2 1.3" aes128 s16385 s1048583
    assert_success
    run count_handshakes srv "1\.[23]" "[A-Z0-9_-]+" disabled disabled
    assert_output 4
    stop_srv srv
    run stats_check "$STATS" 'S("connections.tls") == 4' \
        'S("fallback_tx.disabled") == 4 and S("fallback_rx.disabled") == 4' \
        'S("fallback_tx.no_kernel_tls") == 0 and S("fallback_rx.no_kernel_tls") == 0' \
        "S('bytes.user_tx') >= 2 * (16385 + 1048583)"
    assert_output ok
}

@test "KTLSSHIM_KTLS=strict: one line on stderr for each connection without kTLS TX, and for each without RX, bodies intact" {
    need_no_tls
    port=$(free_port)
    nginx_conf "$port" "$CERTS/ec.pem" "$CERTS/ec.key" off
    # shellcheck disable=SC2046
    start srv env KTLSSHIM_KTLS=strict KTLSSHIM_LOG=info KTLSSHIM_STATS="$STATS" $(nginx_args)
    wait_listen "$port"
    run matrix "$port" ec "1.2 1.3" "$AEADS" s16384
    assert_success
    stop_srv srv
    lib_lines srv > lib.lines
    run grep -cE '^ktlsshim\[[0-9]+\]: strict: connection on fd [0-9]+ \(TLS 1\.[23], [A-Z0-9_-]+\) has no kTLS TX: the kernel has no tls ULP$' lib.lines
    assert_output 6
    # RX fallbacks are reported too (here: no tls ULP, for 1.2 and 1.3 alike)
    run grep -cE '^ktlsshim\[[0-9]+\]: strict: connection on fd [0-9]+ \(TLS 1\.[23], [A-Z0-9_-]+\) has no kTLS RX: the kernel has no tls ULP$' lib.lines
    assert_output 6
    run grep -c 'strict:' lib.lines
    assert_output 12
    for v in 1.2 1.3; do for a in $AEADS; do
        grep -q "(TLS $v, $(cipher_name "$v" "$a")) has no kTLS TX" lib.lines
    done; done
    run stats_check "$STATS" 'S("connections.tls") == 6 and S("fallback_tx.no_kernel_tls") == 6'
    assert_output ok
}

@test "sharded N=2, python: every connection counted, the supervisor's sums equal the workers'" {
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_STATS="$STATS" "$PY" "$(py_server)" --port "$port" \
        --cert "$CERTS/ec.pem" --key "$CERTS/ec.key" --dir "$WWW"
    wait_listen "$port"
    for i in $(seq 10); do
        run matrix "$port" ec "1.2 1.3" aes128 s16385
        assert_success
    done
    run children_of "$(pid_of srv)"
    assert_equal "${#lines[@]}" 2
    stop_srv srv
    assert_equal "$status_of" 0
    run stats_check "$STATS" 'len([r for r in R if r["role"] == "worker"]) == 2' \
        'all(r["connections"]["tls"] > 0 for r in R if r["role"] == "worker")' \
        'SUP("connections.accepted") == 20 and SUP("connections.tls") == 20' \
        'SUP("connections.tls1_2") == 10 and SUP("connections.tls1_3") == 10' \
        'SUP("fallback_tx.no_kernel_tls") == 20' "SUP('bytes.user_tx') >= 20 * 16385" \
        "$SUMS_ADD_UP"
    assert_output ok
}

@test "sharded N=2, nginx: every connection counted, the supervisor's sums equal the workers'" {
    port=$(free_port)
    nginx_conf "$port" "$CERTS/rsa.pem" "$CERTS/rsa.key" off
    # shellcheck disable=SC2046
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_STATS="$STATS" $(nginx_args)
    wait_listen "$port"
    for i in $(seq 5); do
        run matrix "$port" rsa "1.2 1.3" "aes256 chacha" s1 s16384
        assert_success
    done
    stop_srv srv
    assert_equal "$status_of" 0
    run stats_check "$STATS" 'len([r for r in R if r["role"] == "worker"]) == 2' \
        'SUP("connections.accepted") == 40 and SUP("connections.tls") == 40' \
        'SUP("connections.tls1_2") == 20 and SUP("connections.tls1_3") == 20' \
        "SUP('bytes.user_tx') >= 20 * (1 + 16384)" "$SUMS_ADD_UP"
    assert_output ok
}

# bad_inputs NAME PORT: every misbehaving client is cut off (not left
# hanging), and after each the server is alive and serves a good client.
bad_inputs() {
    local name=$1 port=$2 m
    for m in "garbage" "hello" "forged 1.3" "forged 1.2" "overflow 1.3" "overflow 1.2" \
        "truncated 1.3" "truncated 1.2"; do
        # shellcheck disable=SC2086
        bad_client "$port" $m || { echo "bad client '$m' was not cut off" >&2; return 1; }
        alive "$name" || { echo "$name died after '$m'" >&2; return 1; }
        [ "$(fetch "$port" s16385)" = "$(sha "$WWW/s16385")" ] ||
            { echo "no good body after '$m'" >&2; return 1; }
    done
}

@test "bad input, python: garbage, a forged handshake, forged/oversized/truncated records are cut off; the server serves on" {
    port=$(free_port)
    start srv env KTLSSHIM_STATS="$STATS" "$PY" "$(py_server)" --port "$port" \
        --cert "$CERTS/ec.pem" --key "$CERTS/ec.key" --dir "$WWW"
    wait_listen "$port"
    run bad_inputs srv "$port"
    assert_success
    assert_line --regexp '^forged: (eof|reset) after '
    stop_srv srv
    assert_equal "$status_of" 0
    # 8 bad clients (6 of which handshake) and 8 good ones.
    run stats_check "$STATS" 'S("connections.accepted") == 16' 'S("connections.tls") == 14'
    assert_output ok
}

@test "bad input, nginx: garbage, a forged handshake, forged/oversized/truncated records are cut off; the server serves on" {
    port=$(free_port)
    nginx_conf "$port" "$CERTS/ec.pem" "$CERTS/ec.key" off
    # shellcheck disable=SC2046
    start srv env KTLSSHIM_STATS="$STATS" $(nginx_args)
    wait_listen "$port"
    run bad_inputs srv "$port"
    assert_success
    stop_srv srv
    assert_equal "$status_of" 0
    run stats_check "$STATS" 'S("connections.accepted") == 16' 'S("connections.tls") == 14'
    assert_output ok
    # nginx saw the errors as errors
    grep -q "SSL_do_handshake() failed" logs/error.log
    grep -qE "SSL_read\(\) failed|bad record mac|decryption failed|record overflow|unexpected eof" logs/error.log
}

@test "bad input, openssl s_server -WWW: garbage and forged records are cut off; it serves on" {
    port=$(free_port)
    cd "$WWW"
    start srv env KTLSSHIM_STATS="$STATS" openssl s_server -WWW -quiet \
        -accept "127.0.0.1:$port" -cert "$CERTS/ec.pem" -key "$CERTS/ec.key"
    cd "$BATS_TEST_TMPDIR"
    wait_listen "$port"
    run bad_inputs srv "$port"
    assert_success
    stop_srv srv
    # the library saw the 6 bad handshakes that completed and the 8 good ones
    run count_handshakes srv "1\.[23]" "[A-Z0-9_-]+" "[a-z_]+" "[a-z_]+"
    assert_output 14
}

@test "a program that clears SSL_OP_ENABLE_KTLS: fallback reason disabled (not no_kernel_tls), bodies intact" {
    port=$(free_port)
    start srv env KTLSSHIM_STATS="$STATS" "$PY" "$(py_server)" --port "$port" --clear-ktls \
        --cert "$CERTS/ec.pem" --key "$CERTS/ec.key" --dir "$WWW"
    wait_listen "$port"
    run matrix "$port" ec "1.2 1.3" aes128 s16385
    assert_success
    run count_handshakes srv "1\.[23]" "[A-Z0-9_-]+" disabled disabled
    assert_output 2
    stop_srv srv
    run stats_check "$STATS" 'S("connections.tls") == 2' \
        'S("fallback_tx.disabled") == 2 and S("fallback_rx.disabled") == 2' \
        'S("fallback_tx.no_kernel_tls") == 0'
    assert_output ok
}

@test "a program that sets its options by assignment (Python's ctx.options = X, as hypercorn does): kTLS asked again on each connection (reason no_kernel_tls, not disabled)" {
    port=$(free_port)
    start srv env KTLSSHIM_STATS="$STATS" "$PY" "$(py_server)" --port "$port" --assign-options \
        --cert "$CERTS/ec.pem" --key "$CERTS/ec.key" --dir "$WWW"
    wait_listen "$port"
    run matrix "$port" ec "1.2 1.3" aes128 s16385
    assert_success
    stop_srv srv
    run stats_check "$STATS" 'S("connections.tls") == 2 and S("ktls.reasserted") == 2' \
        'S("fallback_tx.no_kernel_tls") == 2 and S("fallback_tx.disabled") == 0'
    assert_output ok
}

@test "asyncio TLS (memory BIOs): fallback reason not_socket for tx and rx, bodies intact" {
    cat > aio.py <<'PYEOF'
import asyncio, ssl, sys
port, cert, key, body = int(sys.argv[1]), sys.argv[2], sys.argv[3], open(sys.argv[4], "rb").read()
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
served = 0
async def main():
    done = asyncio.Event()
    async def handle(r, w):
        global served
        while (await r.readline()) not in (b"\r\n", b""):
            pass
        w.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await w.drain()
        w.close()
        served += 1
        if served == 3:
            done.set()
    srv = await asyncio.start_server(handle, "127.0.0.1", port, ssl=ctx)
    await done.wait()
    srv.close()
asyncio.run(main())
PYEOF
    port=$(free_port)
    start srv env KTLSSHIM_STATS="$STATS" "$PY" aio.py "$port" "$CERTS/ec.pem" "$CERTS/ec.key" "$WWW/s16385"
    wait_listen "$port"
    for v in 1.2 1.3 1.3; do
        run fetch "$port" s16385 "--tlsv$v" --tls-max "$v"
        assert_output "$(sha "$WWW/s16385")"
    done
    wait_gone "$(pid_of srv)" 20
    run count_handshakes srv "1\.[23]" "[A-Z0-9_-]+" not_socket not_socket
    assert_output 3
    run stats_check "$STATS" 'S("connections.tls") == 3' \
        'S("connections.tls1_2") == 1 and S("connections.tls1_3") == 2' \
        'S("fallback_tx.not_socket") == 3 and S("fallback_rx.not_socket") == 3'
    assert_output ok
}

@test "handshakes completed inside SSL_read (python, no handshake call): every connection counted, its bytes as user bytes" {
    # The read hooks look no connection up on a host without kTLS
    # (shim/tls/connwatch.h): such a handshake is recorded by the info callback.
    need_no_tls
    local out="$BATS_TEST_TMPDIR/out" files=("$WWW/s1" "$WWW/s16385" "$WWW/s1048583")
    export KTLSSHIM_STATS="$STATS"
    port=$(free_port)
    sink_start srv "$port" "$out" --lazy --serve 6
    wait_listen "$port"
    run upload "$port" eof 1.3 aes128 "${files[@]}"
    assert_success
    run upload "$port" eof 1.2 chacha "${files[@]}"
    assert_success
    wait_gone "$(pid_of srv)" 30
    run sums_match "$out" "${files[@]}" "${files[@]}"
    assert_success
    run stats_check "$STATS" 'S("connections.tls") == 6' \
        'S("connections.tls1_3") == 3 and S("connections.tls1_2") == 3' \
        'S("fallback_tx.no_kernel_tls") == 6 and S("fallback_rx.no_kernel_tls") == 6' \
        "S('bytes.user_rx') == 2 * $((1 + 16385 + 1048583)) and S('bytes.ktls_rx') == 0"
    assert_output ok
}

@test "the kernel proved to have no tls ULP: libssl is not asked for kTLS (no SOL_TLS setsockopt), reasons stay no_kernel_tls" {
    need_no_tls
    port=$(free_port)
    start srv env KTLSSHIM_STATS="$STATS" "$PY" "$(py_server)" --port "$port" \
        --cert "$CERTS/ec.pem" --key "$CERTS/ec.key" --dir "$WWW"
    wait_listen "$port"
    # every setsockopt the server makes from here on (its connection threads)
    strace -f -qq -e trace=setsockopt -o trace.txt -p "$(pid_of srv)" 2>strace.err &
    tracer=$!
    wait_until 30 grep -q "TracerPid:[[:space:]]*$tracer\$" "/proc/$(pid_of srv)/status"
    run matrix "$port" ec "1.2 1.3" "aes128 chacha" s16385
    assert_success
    kill -INT "$tracer"
    wait "$tracer" 2>/dev/null || true
    # the library's proof: its own TCP_ULP, refused with ENOENT; then no
    # try of libssl's at TLS_TX / TLS_RX on any connection
    run grep -c 'TCP_ULP, "tls", 3) = -1 ENOENT' trace.txt
    [ "$output" -ge 1 ]
    run grep -cE 'SOL_TLS|0x11a|, 282,' trace.txt
    assert_output 0
    stop_srv srv
    run stats_check "$STATS" 'S("connections.tls") == 4' \
        'S("fallback_tx.no_kernel_tls") == 4 and S("fallback_rx.no_kernel_tls") == 4' \
        'S("fallback_tx.disabled") == 0 and S("fallback_rx.disabled") == 0'
    assert_output ok
}

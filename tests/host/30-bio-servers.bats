#!/usr/bin/env bats
# Servers whose TLS I/O goes through a BIO of their own (Apache httpd with
# mod_ssl, HAProxy, h2o) and a Ruby server that resets its context's options
# wholesale (WEBrick), on the host: no tls ULP, so every connection stays in
# user space with the reason no_kernel_tls (not not_socket, not disabled),
# and every byte arrives as without the library. tests/vm/30-bio-servers.bats
# is the same with kernel TLS.

load '../helpers/common'
load '../helpers/tls'
load '../helpers/bioservers'

setup() {
    if grep -qw tls /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null; then
        skip "this kernel has the tls ULP: see tests/vm/30-bio-servers.bats"
    fi
    cd "$BATS_TEST_TMPDIR"
    make_certs
    make_files 0 1 16385 1048583
    export KTLSSHIM_LOG=debug
    unset KTLSSHIM_KTLS KTLSSHIM_SHARDS KTLSSHIM_ZEROCOPY
    STATS="$BATS_TEST_TMPDIR/s.jsonl"
}
teardown() { teardown_servers; }

@test "Apache mod_ssl: bodies intact with the library, without it and with KTLSSHIM_KTLS=off; reason no_kernel_tls both ways" {
    port=$(pick_port)
    apache_conf "$port" "$CERTS/ec.pem" "$CERTS/ec.key"
    # shellcheck disable=SC2046
    start srv env KTLSSHIM_STATS="$STATS" $(apache_args)
    wait_listen "$port"
    run matrix "$port" ec "1.3 1.2" "aes128 chacha" s0 s1 s16385 s1048583
    assert_success
    stop_srv srv 20
    run stats_check "$STATS" 'S("connections.tls") == 16' 'S("ktls.tx") == 0' \
        'S("fallback_tx.no_kernel_tls") == 16 and S("fallback_rx.no_kernel_tls") == 16' \
        'S("bytes.user_tx") >= 2 * 2 * (1 + 16385 + 1048583)'
    assert_output ok
    # The same server, without the library and with it switched off.
    plain_then_off apache_args "$port" "1.3 1.2" s1 s16385 s1048583
    run stats_check "$STATS" 'S("connections.tls") == 6 and S("fallback_tx.disabled") == 6'
    assert_output ok
}

@test "HAProxy (nbthread 1, and its default threads): keep-alive connections carry several requests intact; reason no_kernel_tls" {
    port=$(pick_port)
    bport=$(pick_port)
    plain_backend "$bport"
    wait_listen "$bport"
    for nbt in 1 ""; do
        rm -f "$STATS"
        haproxy_conf "$port" "$bport" "$CERTS/ec.pem" "$CERTS/ec.key" "$nbt"
        # shellcheck disable=SC2046
        start srv env KTLSSHIM_STATS="$STATS" $(haproxy_args)
        wait_listen "$port"
        run keepalive "$port" "$(curl_tls 1.3 aes128)" s1048583 s16385 s0 s1
        assert_success
        assert_output "connects 1"
        run keepalive "$port" "$(curl_tls 1.2 chacha)" s1 s1048583
        assert_success
        assert_output "connects 1"
        stop_sig srv USR1
        run stats_check "$STATS" 'S("connections.tls") == 2 and S("ktls.tx") == 0' \
            'S("fallback_tx.no_kernel_tls") == 2 and S("fallback_rx.no_kernel_tls") == 2' \
            'S("bytes.user_tx") >= 2 * 1048583'
        assert_output ok
    done
}

@test "WEBrick (Ruby wipes its options): kTLS asked again on each connection (reason no_kernel_tls, not disabled); a program that drops kTLS alone keeps its choice" {
    port=$(pick_port)
    # shellcheck disable=SC2046
    start srv env KTLSSHIM_STATS="$STATS" ruby "$(ruby_server)" "$port" "$CERTS/ec.pem" \
        "$CERTS/ec.key" "$WWW"
    wait_listen "$port"
    run matrix "$port" ec "1.3 1.2" chacha s16385 s1048583
    assert_success
    stop_srv srv 20
    run stats_check "$STATS" 'S("connections.tls") == 4 and S("ktls.reasserted") == 4' \
        'S("fallback_tx.no_kernel_tls") == 4 and S("fallback_tx.disabled") == 0'
    assert_output ok
    rm -f "$STATS"
    start srv env WEBRICK_KTLS=off KTLSSHIM_STATS="$STATS" ruby "$(ruby_server)" "$port" \
        "$CERTS/ec.pem" "$CERTS/ec.key" "$WWW"
    wait_listen "$port"
    run matrix "$port" ec 1.2 aes128 s1
    assert_success
    stop_srv srv 20
    run stats_check "$STATS" 'S("connections.tls") == 1 and S("ktls.reasserted") == 0' \
        'S("fallback_tx.disabled") == 1'
    assert_output ok
}

@test "valgrind: HAProxy (nbthread 1) through the library's BIO hooks: no invalid access, no uninitialised use, no leak of the library's" {
    [ "${KTLSSHIM_TEST_ASAN:-0}" != 1 ] || skip "valgrind does not run ASan builds"
    command -v valgrind >/dev/null || skip "valgrind is not installed"
    port=$(pick_port)
    bport=$(pick_port)
    plain_backend "$bport"
    wait_listen "$bport"
    haproxy_conf "$port" "$bport" "$CERTS/ec.pem" "$CERTS/ec.key" 1
    # shellcheck disable=SC2046
    # HAProxy leaks a pooled backend connection of its own at exit: leaks are
    # not errors here (status 42 = a memory error); the library's are looked
    # for in the stacks below.
    start srv env KTLSSHIM_STATS="$STATS" valgrind -q --error-exitcode=42 --leak-check=full \
        --show-leak-kinds=definite --errors-for-leak-kinds=none \
        --log-file="$BATS_TEST_TMPDIR/vg.%p.log" $(haproxy_args)
    wait_listen "$port" 120
    run keepalive "$port" "$(curl_tls 1.3 chacha)" s16385 s1
    assert_success
    run keepalive "$port" "$(curl_tls 1.2 aes128)" s1048583
    assert_success
    stop_sig srv USR1 120
    assert_equal "$status_of" 0
    run sh -c "cat vg.*.log | grep -E 'Invalid|uninitialised|Mismatched|overlap|definitely lost' -A 12 | grep -c ktlsshim"
    assert_output 0
    run sh -c "grep -l 'Invalid \\(read\\|write\\)\\|uninitialised' vg.*.log"
    assert_output ""
    run stats_check "$STATS" 'S("connections.tls") == 2 and S("fallback_tx.no_kernel_tls") == 2'
    assert_output ok
}

@test "h2o: its BIO's socket is found by the bytes it writes after the handshake call, then by the ClientHello it reads; bodies intact with the library, without it and with KTLSSHIM_KTLS=off" {
    port=$(pick_port)
    h2o_conf "$port" "$CERTS/ec.pem" "$CERTS/ec.key"
    # shellcheck disable=SC2046
    start srv env KTLSSHIM_STATS="$STATS" $(h2o_args)
    wait_listen "$port"
    run matrix "$port" ec "1.3 1.2" "aes128 chacha" s0 s1 s16385 s1048583
    assert_success
    stop_srv srv 20
    # h2o's BIO (BIO_TYPE_FD, its own) writes nothing while libssl runs. The
    # first connection (TLS 1.3): its socket is known when its first flight
    # leaves, after the handshake call. From then on, read() notes the
    # ClientHellos: the 15 others are found by the ClientHello h2o read,
    # and the 8 TLS 1.2 ones also by their first flight. What h2o held when
    # libssl asked was known exactly each time (never refused as busy); the
    # kernel has no tls ULP here.
    run grep -c "the program's BIO wrote nothing during the handshake call; its bytes left later, on this socket" "$BATS_TEST_TMPDIR/srv.err"
    assert_output 9
    run grep -c "found under the program's BIO by the ClientHello it read" "$BATS_TEST_TMPDIR/srv.err"
    assert_output 15
    run grep -cE "fd [0-9]+: the program's BIO holds [0-9]+ bytes it has not sent yet: no kTLS TX" "$BATS_TEST_TMPDIR/srv.err"
    assert_output 0
    run stats_check "$STATS" 'S("connections.tls") == 16' 'S("ktls.tx") == 0' \
        'S("fallback_tx.no_kernel_tls") == 16 and S("fallback_rx.no_kernel_tls") == 16'
    assert_output ok
    plain_then_off h2o_args "$port" "1.3 1.2" s1 s16385 s1048583
    run stats_check "$STATS" 'S("connections.tls") == 6 and S("fallback_tx.disabled") == 6'
    assert_output ok
}

@test "valgrind: h2o through the library's BIO hooks (its socket found by its bytes, then its ClientHello): no invalid access, no uninitialised use, no leak of the library's" {
    [ "${KTLSSHIM_TEST_ASAN:-0}" != 1 ] || skip "valgrind does not run ASan builds"
    command -v valgrind >/dev/null || skip "valgrind is not installed"
    port=$(pick_port)
    h2o_conf "$port" "$CERTS/ec.pem" "$CERTS/ec.key"
    # shellcheck disable=SC2046
    start srv env KTLSSHIM_STATS="$STATS" valgrind -q --error-exitcode=42 --leak-check=full \
        --show-leak-kinds=definite --errors-for-leak-kinds=none \
        --log-file="$BATS_TEST_TMPDIR/vg.%p.log" $(h2o_args)
    wait_listen "$port" 120
    run matrix "$port" ec 1.2 aes128 s1 s1048583
    assert_success
    run matrix "$port" ec 1.3 chacha s16385
    assert_success
    stop_srv srv 120
    run grep -c "the program's BIO wrote nothing during the handshake call; its bytes left later, on this socket" "$BATS_TEST_TMPDIR/srv.err"
    assert_output 2
    run grep -c "found under the program's BIO by the ClientHello it read" "$BATS_TEST_TMPDIR/srv.err"
    assert_output 2
    ls vg.*.log >/dev/null # valgrind ran
    run sh -c "cat vg.*.log | grep -E 'Invalid|uninitialised|Mismatched|overlap|definitely lost' -A 12 | grep -c ktlsshim"
    assert_output 0
    run sh -c "grep -l 'Invalid \\(read\\|write\\)\\|uninitialised' vg.*.log"
    assert_output ""
    run stats_check "$STATS" 'S("connections.tls") == 3 and S("fallback_tx.no_kernel_tls") == 3'
    assert_output ok
}

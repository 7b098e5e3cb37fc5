#!/usr/bin/env bats
# Kernel TLS through real, unmodified servers, in the VM (scripts/vm-run:
# Debian 6.1 kernel with the tls module; make test-vm). The same servers as
# tests/host/20-tls.bats, with a matrix small enough for TCG emulation: the
# library must get kTLS TX on every connection, and RX too (libssl's on TLS
# 1.2; OpenSSL 3.0 has no TLS 1.3 RX, so there the library's own switch,
# shim/tls/kswitch/switch.c), the kernel's counters must move, nginx must take
# SSL_sendfile by itself, and every body must arrive intact.

load '../helpers/common'
load '../helpers/tls'

setup() {
    if [ "${KTLSSHIM_VM_INSIDE:-0}" != 1 ]; then
        fail "not inside the kTLS VM: run these through scripts/vm-run (make test-vm)"
    fi
    cd "$BATS_TEST_TMPDIR"
    make_certs
    make_files 0 1 16384 16385 1048583
    export KTLSSHIM_LOG=debug FETCH_TIMEOUT=120
    unset KTLSSHIM_KTLS KTLSSHIM_SHARDS KTLSSHIM_ZEROCOPY
    STATS="$BATS_TEST_TMPDIR/s.jsonl"
}
teardown() { teardown_servers; }

NO_FALLBACK_TX='all(S("fallback_tx." + k) == 0 for k in R[0]["fallback_tx"])'

@test "nginx (sendfile on, no kTLS directive): kTLS TX on every connection, RX on every one (1.3 RX: own switch, deferred where read-ahead held the request), SSL_sendfile, bodies intact" {
    port=$(pick_port)
    nginx_conf "$port" "$CERTS/ec.pem" "$CERTS/ec.key" off
    snap
    # shellcheck disable=SC2046
    start srv env KTLSSHIM_STATS="$STATS" $(nginx_args)
    wait_listen "$port"
    run fetch_variants "$port" "1.3 aes128 s0 s16384 s16385 s1048583" "1.2 aes256 s16385 s1048583" \
        "1.2 chacha s16384"
    echo "$output"
    assert_success
    run count_handshakes srv 1.3 TLS_AES_128_GCM_SHA256 kTLS "own switch due"
    assert_output 4
    # nginx sets read-ahead: when the request came in with the client's
    # Finished, libssl holds it and the own switch cannot take that
    # connection then; the deferred switch takes it after the request is read.
    own=$(lib_lines srv | grep -c "rx kTLS (own switch" || true)
    assert_equal "$own" 4
    run count_handshakes srv 1.2 ECDHE-ECDSA-AES256-GCM-SHA384 kTLS kTLS
    assert_output 2
    run count_handshakes srv 1.2 ECDHE-ECDSA-CHACHA20-POLY1305 kTLS kTLS
    assert_output 1
    stop_srv srv
    assert_equal "$status_of" 0
    note
    assert_equal "$(delta TlsTxSw)" 7
    assert_equal "$(delta TlsRxSw)" 7
    assert_equal "$(delta TlsCurrTxSw)" 0
    sent=$((16384 + 16385 + 1048583 + 16385 + 1048583 + 16384))
    run stats_check "$STATS" 'len(R) == 1 and R[0]["program"] == "nginx"' \
        'S("connections.tls") == 7 and S("connections.tls1_3") == 4 and S("connections.tls1_2") == 3' \
        'S("ktls.tx") == 7 and S("ktls.tx_sw") == 7 and S("ktls.tx_nic") == 0' "$NO_FALLBACK_TX" \
        "S('ktls.rx') == 7 and S('ktls.rx_sw') == 7 and S('ktls.rx_own') == 4" \
        "S('fallback_rx.unread') == 0 and S('fallback_rx.libssl') == 0" \
        "S('bytes.sendfile') >= $sent" "S('bytes.ktls_tx') > S('bytes.sendfile')" \
        'S("bytes.user_tx") == 0 and S("bytes.ktls_rx") > 0'
    assert_output ok
}

@test "nginx SSL_sendfile: each byte is counted once in bytes.sendfile and bytes.ktls_tx" {
    port=$(pick_port)
    nginx_conf "$port" "$CERTS/ec.pem" "$CERTS/ec.key" off
    # shellcheck disable=SC2046
    start srv env KTLSSHIM_STATS="$STATS" $(nginx_args)
    wait_listen "$port"
    run matrix "$port" ec 1.3 aes128 s1048583
    assert_success
    stop_srv srv
    run stats_check "$STATS" 'S("ktls.tx") == 1' 'S("bytes.sendfile") == 1048583' \
        '0 < S("bytes.ktls_tx") - S("bytes.sendfile") < 1024'
    assert_output ok
}

@test "python http.server + ssl (strict): kTLS TX and RX for 1.2 and 1.3 (1.3 RX: own switch), no strict line, bodies intact" {
    port=$(pick_port)
    snap
    start srv env KTLSSHIM_KTLS=strict KTLSSHIM_STATS="$STATS" "$PY" "$(py_server)" \
        --port "$port" --cert "$CERTS/ec.pem" --key "$CERTS/ec.key" --dir "$WWW"
    wait_listen "$port"
    run fetch_variants "$port" "1.3 chacha s1048583 s0" "1.2 aes128 s16384" "1.2 chacha s16385"
    echo "$output"
    assert_success
    run count_handshakes srv 1.3 TLS_CHACHA20_POLY1305_SHA256 kTLS "own switch due"
    assert_output 2
    run count_handshakes srv 1.2 "ECDHE-ECDSA-(AES128-GCM-SHA256|CHACHA20-POLY1305)" kTLS kTLS
    assert_output 2
    refute grep -q "strict:" srv.err
    stop_srv srv 30
    assert_equal "$status_of" 0
    note
    assert_equal "$(delta TlsTxSw)" 4
    assert_equal "$(delta TlsRxSw)" 4
    run stats_check "$STATS" 'len(R) == 1 and R[0]["program"] == "python3"' \
        'S("connections.tls") == 4 and S("connections.tls1_2") == 2' \
        'S("ktls.tx") == 4 and S("ktls.tx_sw") == 4' "$NO_FALLBACK_TX" \
        'S("ktls.rx") == 4 and S("ktls.rx_own") == 2 and S("fallback_rx.libssl") == 0' \
        'S("bytes.ktls_tx") >= 1048583 + 16384 + 16385 and S("bytes.user_tx") == 0' \
        'S("bytes.ktls_rx") > 0 and S("bytes.user_rx") == 0 and S("bytes.sendfile") == 0'
    assert_output ok
}

@test "openssl s_server -WWW (I/O through libssl's SSL BIO): kTLS both ways for curl and s_client, TLS 1.3 receive by the deferred own switch, bodies intact" {
    port=$(pick_port)
    cd "$WWW"
    snap
    start srv env KTLSSHIM_STATS="$STATS" openssl s_server -WWW -quiet -naccept 3 \
        -accept "127.0.0.1:$port" -cert "$CERTS/ec.pem" -key "$CERTS/ec.key"
    cd "$BATS_TEST_TMPDIR"
    wait_listen "$port"
    run fetch_variants "$port" "1.2 aes128 s16385" "1.3 aes256 s16384"
    echo "$output"
    assert_success
    got=$(printf 'GET /s1 HTTP/1.0\r\n\r\n' |
        timeout 60 openssl s_client -quiet -connect "127.0.0.1:$port" -tls1_2 \
            -cipher ECDHE-ECDSA-CHACHA20-POLY1305 2>/dev/null |
        { while IFS= read -r l; do [ "$l" = $'\r' ] && break; done; sha256sum; } | cut -d' ' -f1)
    assert_equal "$got" "$(sha "$WWW/s1")"
    wait_gone "$(pid_of srv)" 20
    wait_status srv
    assert_equal "$status_of" 0
    note
    assert_equal "$(delta TlsTxSw)" 3
    assert_equal "$(delta TlsRxSw)" 3
    run stats_check "$STATS" 'S("connections.tls") == 3 and S("connections.tls1_2") == 2' \
        'S("ktls.tx") == 3 and S("ktls.tx_sw") == 3' "$NO_FALLBACK_TX" \
        'S("ktls.rx") == 3 and S("ktls.rx_own") == 1 and S("ktls.rx_deferred") == 1' \
        'S("fallback_rx.unread") == 0' \
        'S("bytes.ktls_tx") >= 16385 + 16384 + 1 and S("bytes.user_tx") == 0'
    assert_output ok
}

@test "KTLSSHIM_KTLS=off: no kTLS at all (the kernel's counters stay), fallback reason disabled" {
    port=$(pick_port)
    cd "$WWW"
    snap
    start srv env KTLSSHIM_KTLS=off KTLSSHIM_STATS="$STATS" openssl s_server -WWW -quiet -naccept 2 \
        -accept "127.0.0.1:$port" -cert "$CERTS/ec.pem" -key "$CERTS/ec.key"
    cd "$BATS_TEST_TMPDIR"
    wait_listen "$port"
    run matrix "$port" ec "1.2 1.3" aes128 s16385
    assert_success
    wait_gone "$(pid_of srv)" 20
    assert_equal "$(delta TlsTxSw)" 0
    assert_equal "$(delta TlsRxSw)" 0
    run stats_check "$STATS" 'S("connections.tls") == 2 and S("ktls.tx") == 0 and S("ktls.rx") == 0' \
        'S("fallback_tx.disabled") == 2 and S("fallback_rx.disabled") == 2'
    assert_output ok
}

@test "sharded N=2, nginx: kTLS in the workers (TLS 1.3 receive by the own switch, deferred where read-ahead held the request), the supervisor's sums equal the workers'" {
    port=$(pick_port)
    nginx_conf "$port" "$CERTS/ec.pem" "$CERTS/ec.key" off
    snap
    # shellcheck disable=SC2046
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_STATS="$STATS" $(nginx_args)
    wait_listen "$port"
    for i in 1 2 3; do
        run matrix "$port" ec "1.2 1.3" aes256 s16385
        assert_success
    done
    stop_srv srv 20
    assert_equal "$status_of" 0
    note
    assert_equal "$(delta TlsTxSw)" 6
    # nginx reads ahead: a TLS 1.3 request that came in with the client's
    # Finished is held by libssl; the deferred switch takes that receive
    # once the request is read: none stays libssl's (unread).
    held=$(json_get "$STATS" supervisor fallback_rx.unread)
    assert_equal "$held" 0
    assert_equal "$(delta TlsRxSw)" $((6 - held))
    run stats_check "$STATS" 'len([r for r in R if r["role"] == "worker"]) == 2' \
        "SUP('connections.tls') == 6 and SUP('ktls.tx') == 6 and SUP('ktls.rx') == 6 - $held" \
        "SUP('ktls.rx_own') == 3 - $held and SUP('fallback_rx.unread') == $held" \
        'SUP("bytes.sendfile") >= 6 * 16385' "$NO_FALLBACK_TX" "$SUMS_ADD_UP"
    assert_output ok
}

@test "nginx, TLS 1.2 with kernel RX: a forged record (bad tag), an oversized and a truncated one are cut off; it serves on" {
    port=$(pick_port)
    nginx_conf "$port" "$CERTS/ec.pem" "$CERTS/ec.key" off
    # shellcheck disable=SC2046
    start srv env KTLSSHIM_STATS="$STATS" $(nginx_args)
    wait_listen "$port"
    snap
    for m in "forged 1.2 ECDHE-ECDSA-AES128-GCM-SHA256" "forged 1.2 ECDHE-ECDSA-CHACHA20-POLY1305" \
        "overflow 1.2" "truncated 1.2"; do
        # shellcheck disable=SC2086
        run bad_client "$port" $m
        assert_success
        sed 's/^/# /' <<<"$output" | grep -v '^# handshake' >&3 || true
        alive srv
    done
    assert_equal "$(delta TlsRxSw)" 4
    # The kernel itself rejected both forged records.
    assert_equal "$(delta TlsDecryptError)" 2
    run matrix "$port" ec 1.2 aes128 s16385
    assert_success
    run count_handshakes srv 1.2 "ECDHE-ECDSA-[A-Z0-9-]+" kTLS kTLS
    assert_output 5
    stop_srv srv
    note
    grep -E "SSL_read\(\) failed .*(bad record mac|decryption failed)" logs/error.log
}

@test "python, TLS 1.2 with kernel RX: a forged record is cut off; it serves on" {
    port=$(pick_port)
    start srv env KTLSSHIM_STATS="$STATS" "$PY" "$(py_server)" \
        --port "$port" --cert "$CERTS/ec.pem" --key "$CERTS/ec.key" --dir "$WWW"
    wait_listen "$port"
    snap
    run bad_client "$port" forged 1.2 ECDHE-ECDSA-AES256-GCM-SHA384
    assert_success
    sed 's/^/# /' <<<"$output" | grep -v '^# handshake' >&3 || true
    assert_equal "$(delta TlsDecryptError)" 1
    alive srv
    run matrix "$port" ec 1.2 aes128 s16385
    assert_success
    stop_srv srv 30
    note
    run stats_check "$STATS" 'S("connections.tls") == 2 and S("ktls.rx") == 2'
    assert_output ok
}

@test "KTLSSHIM_ZEROCOPY=on: nginx's sendfile goes out with TLS_TX_ZEROCOPY_RO, bodies intact" {
    port=$(pick_port)
    nginx_conf "$port" "$CERTS/ec.pem" "$CERTS/ec.key" off
    snap
    # shellcheck disable=SC2046
    start srv env KTLSSHIM_ZEROCOPY=on KTLSSHIM_STATS="$STATS" $(nginx_args)
    wait_listen "$port"
    run fetch_variants "$port" "1.3 aes256 s16385 s1048583" "1.2 aes128 s1048583"
    echo "$output"
    assert_success
    stop_srv srv
    note
    [ "$(delta TlsTxSw)" -ge 3 ]
    run stats_check "$STATS" 'S("ktls.tx") == 3 and S("ktls.tx_zerocopy") == 3' \
        "S('bytes.sendfile') == 16385 + 2 * 1048583"
    assert_output ok
}

@test "handshakes completed inside SSL_read (python, no handshake call): that read's bytes count on the connection's kTLS path" {
    # The read hooks look the connection up only when some connection needs
    # it (shim/tls/connwatch.h), and ask again after libssl's call: the handshake
    # completed inside it gave this connection kTLS RX (TLS 1.2: libssl's).
    local out="$BATS_TEST_TMPDIR/out" files=("$WWW/s16385" "$WWW/s1048583")
    export KTLSSHIM_STATS="$STATS"
    port=$(pick_port)
    snap
    sink_start srv "$port" "$out" --lazy --serve 4
    wait_listen "$port"
    run upload "$port" eof 1.2 aes128 "${files[@]}"
    assert_success
    run upload "$port" eof 1.3 aes128 "${files[@]}"
    assert_success
    wait_gone "$(pid_of srv)" 60
    run sums_match "$out" "${files[@]}" "${files[@]}"
    assert_success
    note
    # TLS 1.3: the handshake completed inside a read, which returned the
    # first bytes in user space; the deferred switch takes the rest.
    run stats_check "$STATS" 'S("connections.tls") == 4 and S("ktls.tx") == 4' \
        'S("ktls.rx") == 4 and S("ktls.rx_deferred") == 2 and S("fallback_rx.unread") == 0' \
        "S('bytes.ktls_rx') + S('bytes.user_rx') == 2 * (16385 + 1048583)" \
        "S('bytes.ktls_rx') > 16385 + 1048583 and S('bytes.user_rx') > 0"
    assert_output ok
}

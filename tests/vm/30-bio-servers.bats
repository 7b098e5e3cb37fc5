#!/usr/bin/env bats
# Kernel TLS for servers whose TLS I/O goes through a BIO of their own
# (Apache httpd with mod_ssl, HAProxy, h2o: shim/tls/biosock/) and for a Ruby server
# that resets its options wholesale (WEBrick: shim/tls/optreset.c), in the VM.
# TX must be kTLS on every connection (the kernel's TlsTxSw moves by one per
# connection, the library counts ktls.tx_bio), and RX too, by the own switch
# under their BIO (ktls.rx_bio, TlsRxSw; shim/tls/biosock/rxframe.c; uploads:
# 34-bio-rx.bats); bodies arrive intact, also for slow clients, a client
# that leaves mid-transfer, and across a reload.

load '../helpers/common'
load '../helpers/tls'
load '../helpers/bioservers'

setup() { vm_setup 0 1 16385 1048583; }
teardown() { teardown_servers; }

NO_FALLBACK_TX='all(S("fallback_tx." + k) == 0 for k in R[0]["fallback_tx"])'

@test "Apache mod_ssl: kTLS TX and RX through its BIO on every connection (1.2, 1.3, AES-GCM, ChaCha20), a slow client, a client gone mid-transfer, a graceful restart; bodies intact" {
    port=$(pick_port)
    apache_conf "$port" "$CERTS/ec.pem" "$CERTS/ec.key"
    snap
    # shellcheck disable=SC2046
    start srv env KTLSSHIM_STATS="$STATS" $(apache_args)
    wait_listen "$port"
    run matrix "$port" ec 1.3 aes128 s0 s1 s16385 s1048583
    assert_success
    run matrix "$port" ec 1.2 chacha s0 s1 s16385 s1048583
    assert_success
    run matrix "$port" ec 1.2 aes256 s16385
    assert_success
    run matrix "$port" ec 1.3 chacha s1048583
    assert_success
    # A slow reader: Apache's writes hit EAGAIN and wait for the socket.
    run slow_fetch "$port" s1048583 400k
    assert_output "$(sha "$WWW/s1048583")"
    # A client that leaves mid-transfer; Apache serves on.
    run leave_mid "$port" s1048583 "$(curl_tls 1.2 aes128)"
    assert_success
    run matrix "$port" ec 1.3 aes256 s16385
    assert_success
    # Graceful restart: new children, kTLS again.
    kill -USR1 "$(pid_of srv)"
    for _ in $(seq 300); do
        [ "$(apache_generations)" -ge 2 ] && break
        sleep 0.1
    done
    assert_equal "$(apache_generations)" 2
    run matrix "$port" ec 1.2 chacha s1048583
    assert_success
    run count_handshakes srv 1.3 TLS_AES_128_GCM_SHA256 kTLS-bio "own switch due"
    assert_output 5
    run count_handshakes srv 1.2 ECDHE-ECDSA-CHACHA20-POLY1305 kTLS-bio "own switch due"
    assert_output 5
    stop_srv srv 30
    note
    assert_equal "$(delta TlsTxSw)" 14
    assert_equal "$(delta TlsRxSw)" 14
    assert_equal "$(delta TlsCurrTxSw)" 0
    sent=$((2 * (1 + 16385 + 1048583) + 16385 + 1048583 + 1048583 + 16385 + 1048583))
    run stats_check "$STATS" 'S("connections.tls") == 14' \
        'S("ktls.tx") == 14 and S("ktls.tx_bio") == 14 and S("ktls.tx_sw") == 14' \
        "$NO_FALLBACK_TX" 'S("ktls.rx") == 14 and S("ktls.rx_bio") == 14' \
        "S('bytes.ktls_tx') >= $sent" 'S("bytes.user_tx") == 0 and S("bytes.ktls_rx") > 0'
    assert_output ok
}

@test "Apache mod_ssl: the same bytes without the library and with KTLSSHIM_KTLS=off (no kTLS then)" {
    port=$(pick_port)
    apache_conf "$port" "$CERTS/ec.pem" "$CERTS/ec.key"
    snap
    plain_then_off apache_args "$port" "1.3 1.2" s1 s16385 s1048583
    assert_equal "$(delta TlsTxSw)" 0
    run stats_check "$STATS" 'S("connections.tls") == 6 and S("ktls.tx") == 0' \
        'S("fallback_tx.disabled") == 6'
    assert_output ok
}

@test "HAProxy (nbthread 1, then its default threads, then -sf): kTLS TX and RX through its BIO on keep-alive connections carrying several requests; a slow client; bodies intact" {
    port=$(pick_port)
    bport=$(pick_port)
    plain_backend "$bport"
    wait_listen "$bport"
    snap
    for nbt in 1 ""; do
        haproxy_conf "$port" "$bport" "$CERTS/ec.pem" "$CERTS/ec.key" "$nbt"
        # shellcheck disable=SC2046
        start srv env KTLSSHIM_STATS="$STATS" $(haproxy_args)
        wait_listen "$port"
        run keepalive "$port" "$(curl_tls 1.3 aes128)" s1048583 s16385 s0 s1
        assert_success
        assert_output "connects 1"
        run keepalive "$port" "$(curl_tls 1.2 chacha)" s1 s1048583 s16385
        assert_success
        assert_output "connects 1"
        run slow_fetch "$port" s1048583 400k
        assert_output "$(sha "$WWW/s1048583")"
        [ -n "$nbt" ] && stop_sig srv USR1
    done
    # A reload: a new HAProxy takes over (-sf), the old one finishes.
    old=$(pid_of srv)
    # shellcheck disable=SC2046
    start srv2 env KTLSSHIM_STATS="$STATS" $(haproxy_args) -sf "$old"
    wait_gone "$old" 30
    run keepalive "$port" "$(curl_tls 1.2 aes256)" s16385 s1
    assert_success
    assert_output "connects 1"
    run keepalive "$port" "$(curl_tls 1.3 chacha)" s1048583 s0
    assert_success
    assert_output "connects 1"
    # A client that leaves mid-transfer; HAProxy serves on.
    run leave_mid "$port" s1048583 "$(curl_tls 1.3 aes256)"
    assert_success
    run keepalive "$port" "$(curl_tls 1.2 chacha)" s16385
    assert_success
    stop_sig srv2 USR1
    note
    assert_equal "$(delta TlsTxSw)" 10
    assert_equal "$(delta TlsRxSw)" 10
    run stats_check "$STATS" 'len(R) == 3 and S("connections.tls") == 10' \
        'S("ktls.tx") == 10 and S("ktls.tx_bio") == 10' "$NO_FALLBACK_TX" \
        'S("ktls.rx_bio") == 10 and S("bytes.user_tx") == 0' \
        "S('bytes.ktls_tx') >= 5 * 1048583"
    assert_output ok
}

@test "HAProxy: the same bytes without the library and with KTLSSHIM_KTLS=off (no kTLS then)" {
    port=$(pick_port)
    bport=$(pick_port)
    plain_backend "$bport"
    wait_listen "$bport"
    haproxy_conf "$port" "$bport" "$CERTS/ec.pem" "$CERTS/ec.key" 1
    snap
    # shellcheck disable=SC2046
    start_plain srv $(haproxy_args)
    wait_listen "$port"
    run keepalive "$port" "$(curl_tls 1.3 chacha)" s1048583 s0 s1 s16385
    assert_success
    run keepalive "$port" "$(curl_tls 1.2 aes128)" s1048583 s16385
    assert_success
    stop_sig srv USR1
    # shellcheck disable=SC2046
    start srv env KTLSSHIM_KTLS=off KTLSSHIM_STATS="$STATS" $(haproxy_args)
    wait_listen "$port"
    run keepalive "$port" "$(curl_tls 1.3 aes128)" s1048583 s0 s1 s16385
    assert_success
    run keepalive "$port" "$(curl_tls 1.2 chacha)" s1048583 s16385
    assert_success
    stop_sig srv USR1
    assert_equal "$(delta TlsTxSw)" 0
    run stats_check "$STATS" 'S("connections.tls") == 2 and S("ktls.tx") == 0' \
        'S("fallback_tx.disabled") == 2'
    assert_output ok
}

@test "WEBrick (Ruby wipes its options): kTLS set again on each connection, TX and RX on every one (1.3 by the own switch), 1.2 and 1.3 x AES-GCM and ChaCha20; bodies intact" {
    port=$(pick_port)
    snap
    start srv env KTLSSHIM_STATS="$STATS" ruby "$(ruby_server)" "$port" "$CERTS/ec.pem" \
        "$CERTS/ec.key" "$WWW"
    wait_listen "$port"
    run matrix "$port" ec 1.3 chacha s1048583
    assert_success
    run matrix "$port" ec 1.2 aes128 s16385
    assert_success
    run matrix "$port" ec 1.3 aes128 s1
    assert_success
    run matrix "$port" ec 1.2 chacha s1048583
    assert_success
    stop_srv srv 30
    note
    assert_equal "$(delta TlsTxSw)" 4
    assert_equal "$(delta TlsRxSw)" 4
    run stats_check "$STATS" 'S("connections.tls") == 4 and S("ktls.reasserted") == 4' \
        'S("ktls.tx") == 4 and S("ktls.tx_bio") == 0 and S("ktls.rx") == 4' \
        'S("ktls.rx_own") == 2' "$NO_FALLBACK_TX"
    assert_output ok
}

@test "h2o (writes from its event loop, after the handshake call): kTLS TX once the bytes it held have left (TLS 1.2 and 1.3, but the process's first TLS 1.3 connection: bio_no_fd), RX on every one; slow clients, clients gone mid-transfer; bodies intact, as without the library and with KTLSSHIM_KTLS=off" {
    port=$(pick_port)
    h2o_conf "$port" "$CERTS/ec.pem" "$CERTS/ec.key"
    snap
    # shellcheck disable=SC2046
    start srv env KTLSSHIM_STATS="$STATS" $(h2o_args)
    wait_listen "$port"
    # The first connection of the process, TLS 1.3: its socket is not
    # known yet when libssl asks (h2o has written nothing), bio_no_fd.
    run matrix "$port" ec 1.3 aes128 s16385
    assert_success
    run matrix "$port" ec 1.2 aes128 s0 s1 s16385 s1048583
    assert_success
    run matrix "$port" ec 1.3 chacha s0 s1 s16385 s1048583
    assert_success
    run matrix "$port" ec 1.2 chacha s1048583
    assert_success
    # Slow readers (h2o's writev hits EAGAIN), then clients that leave
    # mid-transfer; h2o serves on.
    run fetch "$port" s1048583 --limit-rate 400k $(curl_tls 1.2 aes256)
    assert_output "$(sha "$WWW/s1048583")"
    run fetch "$port" s1048583 --limit-rate 400k $(curl_tls 1.3 aes256)
    assert_output "$(sha "$WWW/s1048583")"
    run leave_mid "$port" s1048583 "$(curl_tls 1.2 aes128)"
    assert_success
    run leave_mid "$port" s1048583 "$(curl_tls 1.3 chacha)"
    assert_success
    run matrix "$port" ec 1.3 aes128 s16385
    assert_success
    stop_srv srv 30
    note
    # The rule: when libssl asked, h2o's buffer still held bytes (TLS 1.2:
    # its ChangeCipherSpec, 6 bytes; TLS 1.3: its whole first flight); the
    # key went in only once h2o's writev had carried exactly those bytes.
    run grep -c "kTLS TX on, after the 6 bytes the program held" "$BATS_TEST_TMPDIR/srv.err"
    assert_output 7
    run grep -c "kTLS TX on, after the" "$BATS_TEST_TMPDIR/srv.err"
    assert_output 14
    assert_equal "$(delta TlsTxSw)" 14
    assert_equal "$(delta TlsRxSw)" 15
    assert_equal "$(delta TlsCurrTxSw)" 0
    run stats_check "$STATS" 'S("connections.tls") == 15' \
        'S("ktls.tx") == 14 and S("ktls.tx_bio") == 14 and S("fallback_tx.bio_no_fd") == 1' \
        'S("ktls.rx_bio") == 15' "S('bytes.ktls_tx') >= 4 * 1048583"
    assert_output ok
    # The same bytes without the library and with it switched off.
    plain_then_off h2o_args "$port" "1.2 1.3" s0 s1 s16385 s1048583
    run stats_check "$STATS" 'S("connections.tls") == 8 and S("fallback_tx.disabled") == 8'
    assert_output ok
}

#!/usr/bin/env bats
# OpenSSL 1.1.1 programs (bullseye's libssl1.1, its openssl 1.1.1w and
# nginx-light 1.18 built on it: scripts/openssl111) in the VM (Debian 6.1
# kernel with kTLS). libssl 1.1 has no kTLS at all: with KTLSSHIM_KTLS unset
# (auto) the library's own switch must take both directions. Checked per
# connection by the kernel's counters (/proc/net/tls_stat TlsTxSw, TlsRxSw)
# and the library's (ktls.tx_own, ktls.rx_own); bodies hash-checked against
# the files served (downloads) or sent (uploads). The 1.1 libraries are given
# to the servers only (curl and Python, the clients, stay on OpenSSL 3).
# Few connections: TCG is slow.

load '../helpers/common'
load '../helpers/tls'

setup() {
    vm_setup 0 1 16385 1048583
    R111=$("$ROOT/scripts/openssl111")
    export KTLSSHIM_STATS="$STATS"
}
teardown() { teardown_servers; }

# with111 CMD...: CMD with the OpenSSL 1.1 tree's libraries first.
with111() {
    env LD_LIBRARY_PATH="$R111/usr/lib/x86_64-linux-gnu" OPENSSL_CONF="$R111/openssl.cnf" "$@"
}

# s111_send VERSION AEAD NAME: openssl s_server 1.1.1 -quiet sends what its
# standard input gets (a fifo fed with NAME once the library says the
# connection's TX is its own) to tls_fetch.py, which requires the body and
# the server's close_notify.
s111_send() {
    local ver=$1 aead=$2 name=$3 fifo="$BATS_TEST_TMPDIR/stdin.fifo" fd cpid
    rm -f "$fifo" "$BATS_TEST_TMPDIR/fetch.out" "$GOT/$name" "$BATS_TEST_TMPDIR/srv.err"
    mkfifo "$fifo"
    port=$(pick_port)
    start srv bash -c 'exec "$@" <"$0"' "$fifo" env LD_LIBRARY_PATH="$R111/usr/lib/x86_64-linux-gnu" \
        OPENSSL_CONF="$R111/openssl.cnf" "$R111/usr/bin/openssl" s_server -quiet -naccept 1 \
        -accept "127.0.0.1:$port" -cert "$CERTS/ec.pem" -key "$CERTS/ec.key"
    exec {fd}>"$fifo"
    wait_listen "$port"
    fetch_files "$port" "$ver" "$aead" --expect "$(stat -c %s "$WWW/$name")" "$name" \
        >"$BATS_TEST_TMPDIR/fetch.out" 2>&1 3>&- &
    cpid=$!
    # a wall-clock bound (wait_until's counts tries, which TCG makes slow)
    local until=$((SECONDS + 90))
    while ! lib_lines_have srv "tx kTLS (own switch)"; do
        if [ "$SECONDS" -ge "$until" ]; then
            echo "no own-switch TX line after 90 s"
            kill "$cpid" 2>/dev/null || true
            exec {fd}>&-
            cat "$BATS_TEST_TMPDIR/srv.err"
            return 1
        fi
        sleep 0.5
    done
    cat "$WWW/$name" >&"$fd"
    wait "$cpid" || true
    cat "$BATS_TEST_TMPDIR/fetch.out" "$BATS_TEST_TMPDIR/srv.err"
    grep -q "^ok $name $(stat -c %s "$WWW/$name") clean$" "$BATS_TEST_TMPDIR/fetch.out"
    assert_equal "$(sha "$GOT/$name")" "$(sha "$WWW/$name")"
    wait_gone "$(pid_of srv)" 60
    exec {fd}>&-
}

@test "OpenSSL 1.1.1 s_server, KTLSSHIM_KTLS=auto: a download (TLS 1.3 AES-128-GCM) and an upload (TLS 1.2 AES-256-GCM) of 1 MiB+7 with kTLS both ways by the own switch" {
    snap
    s111_send 1.3 aes128 s1048583
    # upload: the received bytes go to s_server's stdout
    port=$(pick_port)
    start up bash -c 'exec "$@" < <(sleep 600)' _ env LD_LIBRARY_PATH="$R111/usr/lib/x86_64-linux-gnu" \
        OPENSSL_CONF="$R111/openssl.cnf" "$R111/usr/bin/openssl" s_server -quiet -naccept 1 \
        -accept "127.0.0.1:$port" -cert "$CERTS/ec.pem" -key "$CERTS/ec.key"
    wait_listen "$port"
    run upload "$port" eof 1.2 aes256 "$WWW/s1048583"
    echo "$output"
    assert_success
    wait_gone "$(pid_of up)" 60
    assert_equal "$(sha "$BATS_TEST_TMPDIR/up.out")" "$(sha "$WWW/s1048583")"
    echo "# tls_stat: TlsTxSw+$(delta TlsTxSw) TlsRxSw+$(delta TlsRxSw) TlsDecryptError+$(delta TlsDecryptError)" >&3
    assert_equal "$(delta TlsTxSw)" 2
    assert_equal "$(delta TlsRxSw)" 2
    assert_equal "$(delta TlsDecryptError)" 0
    run stats_check "$KTLSSHIM_STATS" 'len(R) == 2' 'all(r["openssl"] == "1.1.1w" for r in R)' \
        'S("connections.tls1_3") == 1 and S("connections.tls1_2") == 1' \
        'S("ktls.tx_own") == 2 and S("ktls.rx_own") == 2 and S("ktls.tx") == 2 and S("ktls.rx") == 2' \
        "S('bytes.ktls_tx') == 1048583 and S('bytes.ktls_rx') >= 1048583" \
        "S('bytes.user_tx') == 0 and S('bytes.user_rx') == 0" \
        'S("hooks.other_openssl") == 0'
    assert_output ok
}

@test "OpenSSL 1.1.1 nginx 1.18, KTLSSHIM_KTLS=auto: TLS 1.3 and 1.2 x AES-128/256-GCM, CHACHA20, sizes 0..1 MiB+7, bodies intact, own switch both ways wherever libssl holds nothing, kernel counters agree" {
    port=$(pick_port)
    nginx_conf "$port" "$CERTS/ec.pem" "$CERTS/ec.key" off
    snap
    start srv env LD_LIBRARY_PATH="$R111/usr/lib/x86_64-linux-gnu" OPENSSL_CONF="$R111/openssl.cnf" \
        "$R111/usr/sbin/nginx" -c "$BATS_TEST_TMPDIR/nginx.conf"
    wait_listen "$port"
    run fetch_variants "$port" "1.3 aes128 s0 s1048583" "1.3 chacha s0 s1048583" \
        "1.2 aes256 s1 s16385" "1.2 chacha s1 s16385"
    echo "$output"
    assert_success
    stop_srv srv
    own=$(lib_lines srv | grep -c "rx kTLS (own switch)" || true)
    held=$(lib_lines srv | grep -c "rx unread$" || true)
    lib_lines srv | grep -E "handshake done|: rx " | head -20
    echo "# own switch on $own of 8, $held left to libssl; tls_stat: TlsTxSw+$(delta TlsTxSw) TlsRxSw+$(delta TlsRxSw)" >&3
    # nginx sets read-ahead: when the request came in with the client's
    # Finished, libssl holds it and the connection stays libssl's both ways
    # (reason unread). Every other one gets the own switch in both directions.
    [ "$own" -ge 3 ]
    assert_equal "$((own + held))" 8
    assert_equal "$(delta TlsTxSw)" "$own"
    assert_equal "$(delta TlsRxSw)" "$own"
    assert_equal "$(delta TlsDecryptError)" 0
    run stats_check "$KTLSSHIM_STATS" 'S("connections.tls") == 8' \
        'all(r["openssl"] == "1.1.1w" for r in R)' \
        "S('ktls.tx_own') == $own and S('ktls.rx_own') == $own and S('ktls.tx') == $own" \
        "S('fallback_tx.unread') == $held and S('fallback_rx.unread') == $held" \
        "S('bytes.ktls_tx') + S('bytes.user_tx') >= 1048583 + 16385 + 1"
    assert_output ok
}

#!/usr/bin/env bats
# kTLS receive under a server's own BIO (shim/tls/biosock/rxframe.c), in the
# VM: Apache mod_ssl, HAProxy and h2o read the socket with their own calls
# into their own buffers. The library proves when everything they read has
# reached libssl, takes receive into the kernel there, and from then on
# frames their reads. Uploads of 0 B to 8 MiB+7, with the request behind the
# client's Finished (tests/helpers/tls_put.py), then several uploads on one
# kept-alive connection (curl), TLS 1.3 and 1.2; each body hashed by the
# plain backend behind them. Receive must be in the kernel on every
# connection (the record's ktls.rx_bio, /proc/net/tls_stat's TlsRxSw), no
# record rejected.

load '../helpers/common'
load '../helpers/tls'
load '../helpers/bioservers'

SIZES="0 1 16385 1048583 8388615"

setup() {
    # shellcheck disable=SC2086
    vm_setup $SIZES
    export KTLSSHIM_LOG=debug
}
teardown() { teardown_servers; }

# puts PORT: put_files to /up/, each reply checked against the file's hash.
# Prints the number of connections.
puts() {
    local f v n=0
    : >"$BATS_TEST_TMPDIR/put.out"
    put_files "$1" /up/ "$BATS_TEST_TMPDIR/put.out" || {
        cat "$BATS_TEST_TMPDIR/put.out"
        return 1
    }
    for v in 1.3 1.2; do
        for f in "${FILES[@]}"; do
            grep -qx "$(basename "$f") 200 $(sha "$f")" "$BATS_TEST_TMPDIR/put.out" || {
                echo "TLS $v $(basename "$f"): $(grep "^$(basename "$f") " "$BATS_TEST_TMPDIR/put.out")"
                return 1
            }
            n=$((n + 1))
        done
    done
    echo "$n"
}

# puts_kept PORT VERSION AEAD: all of $FILES uploaded on one connection
# (curl, keep-alive), then the same files fetched back on it: each reply is
# the body's hash, each body the file.
puts_kept() {
    local port=$1 args=() f i=0 want=""
    for f in "${FILES[@]}"; do
        args+=(-T "$f" "https://127.0.0.1:$port/up/kept$i")
        want+="$(sha "$f")"$'\n'
        i=$((i + 1))
    done
    # shellcheck disable=SC2046 # the options are words
    got=$(curl -sSk --max-time 120 $(curl_tls "$2" "$3") -w '%{num_connects}\n' "${args[@]}") ||
        return 1
    # curl prints each reply, then the connects count after it
    [ "$(grep -c '^1$' <<<"$got")" = 1 ] || { echo "not one connection: $got"; return 1; }
    [ "$(grep -v '^[01]$' <<<"$got")"$'\n' = "$want" ] || { echo "replies: $got"; return 1; }
}

# rx_bio_all N [TX]: the record and the kernel agree that receive was in the
# kernel, under the program's BIO, on all N connections (send: on TX of them,
# N by default).
rx_bio_all() {
    note
    lib_lines srv | grep -E "rx kTLS|not yet|rx_bio|unread" | head -20
    run stats_check "$STATS" "S('connections.tls') == $1" \
        "S('ktls.rx') == $1 and S('ktls.rx_bio') == $1 and S('ktls.tx_bio') == ${2:-$1}" \
        "sum(S('fallback_rx.' + k) for k in R[0]['fallback_rx']) == 0" \
        "S('ktls.rx_bad_record') == 0 and S('bytes.ktls_rx') > 2 * $(stat -c %s "${FILES[-1]}")"
    assert_output ok
    assert_equal "$(delta TlsRxSw)" "$1"
    assert_equal "$(delta TlsDecryptError)" 0
}

# behind NAME STOP...: a plain backend for /up/, the server NAME configured
# in front of it (NAME_conf PORT CERT KEY BACKEND_PORT, or HAProxy's), started
# with the library; every upload of puts, then two kept-alive connections of
# puts_kept; then STOP. Sets n to the number of connections.
behind() {
    local name=$1 port bport
    shift
    port=$(pick_port)
    bport=$(pick_port)
    plain_backend "$bport"
    wait_listen "$bport"
    if [ "$name" = haproxy ]; then
        haproxy_conf "$port" "$bport" "$CERTS/ec.pem" "$CERTS/ec.key" 1
    else
        "${name}_conf" "$port" "$CERTS/ec.pem" "$CERTS/ec.key" "$bport"
    fi
    snap
    # shellcheck disable=SC2046
    start srv env KTLSSHIM_STATS="$STATS" $("${name}_args")
    wait_listen "$port"
    n=$(puts "$port") || fail "$n"
    run puts_kept "$port" 1.3 chacha
    assert_success
    run puts_kept "$port" 1.2 aes128
    assert_success
    "$@"
    n=$((n + 2))
}

@test "Apache mod_ssl: receive in the kernel under its BIO on every connection; uploads 0 B to 8 MiB+7 behind the Finished and kept alive, TLS 1.3 and 1.2, hashed" {
    behind apache stop_srv srv 30
    rx_bio_all "$n"
}

@test "HAProxy: receive in the kernel under its BIO on every connection; uploads 0 B to 8 MiB+7 behind the Finished and kept alive, TLS 1.3 and 1.2, hashed" {
    behind haproxy stop_sig srv USR1
    rx_bio_all "$n"
}

@test "h2o: receive in the kernel under its BIO on every connection (send: all but the process's first TLS 1.3 one, bio_no_fd); uploads 0 B to 8 MiB+7 behind the Finished and kept alive, TLS 1.3 and 1.2, hashed" {
    behind h2o stop_srv srv 30
    rx_bio_all "$n" $((n - 1))
}

@test "Squid (reverse proxy, a BIO of its own): receive in the kernel under its BIO on every connection; uploads 0 B to 1 MiB+7 behind the Finished and kept alive, TLS 1.3 and 1.2, hashed" {
    FILES=("$WWW/s0" "$WWW/s1" "$WWW/s16385" "$WWW/s1048583")
    behind squid stop_srv srv 30
    rx_bio_all "$n"
}

@test "nghttpx (reads with SSL_read_early_data until its handshake is done): TLS 1.3 receive by the own switch at the handshake's end, TLS 1.2 libssl's, on every connection; uploads 0 B to 1 MiB+7 behind the Finished and kept alive, hashed" {
    FILES=("$WWW/s0" "$WWW/s1" "$WWW/s16385" "$WWW/s1048583")
    behind nghttpx stop_srv srv 30
    note
    grep -E "rx kTLS|unread" "$BATS_TEST_TMPDIR/nghttpx/error.log" | head -4 || true
    run stats_check "$STATS" "S('connections.tls') == $n and S('connections.tls1_3') == $n / 2" \
        "S('ktls.rx') == $n and S('ktls.rx_own') == $n / 2 and S('ktls.rx_deferred') == 0" \
        "S('ktls.tx') == $n" "sum(S('fallback_rx.' + k) for k in R[0]['fallback_rx']) == 0" \
        "S('ktls.rx_bad_record') == 0 and S('bytes.user_rx') == 0"
    assert_output ok
    assert_equal "$(delta TlsRxSw)" "$n"
    assert_equal "$(delta TlsDecryptError)" 0
}

@test "a BIO of the program's own reading the socket with read, readv, recvmsg, recvfrom, __read_chk, recv, and recv of 7 bytes at a time: uploads 0 B to 16 KiB+1 (1 MiB+7 with read, recv and 7-byte recv) behind the Finished, read by SSL_read calls of 1 B to 64 KiB, TLS 1.3 and 1.2: receive in the kernel on every connection, hashes equal" {
    local port call n total=0
    snap
    for call in read readv recvmsg recvfrom read_chk recv small; do
        # the other calls enter the same counting: the large body for three
        FILES=("$WWW/s0" "$WWW/s1" "$WWW/s16385")
        case $call in read | recv | small) FILES+=("$WWW/s1048583") ;; esac
        port=$(pick_port)
        : >"$call.jsonl"
        start "$call" env BCS_READ=$call KTLSSHIM_STATS="$BATS_TEST_TMPDIR/$call.jsonl" \
            "$BCS" copy "$port" "$CERTS/ec.pem" "$CERTS/ec.key" "$WWW" $((2 * ${#FILES[@]}))
        wait_listen "$port"
        n=$(puts "$port") || fail "$call: $n"
        wait_status "$call"
        assert_equal "$status_of" 0
        run stats_check "$call.jsonl" "S('connections.tls') == $n" \
            "S('ktls.rx') == $n and S('ktls.rx_bio') == $n" 'S("ktls.rx_bad_record") == 0'
        [ "$output" = ok ] || fail "$call: $output"
        total=$((total + n))
    done
    note
    assert_equal "$total" 48
    assert_equal "$(delta TlsRxSw)" 48
    assert_equal "$(delta TlsDecryptError)" 0
}

@test "a BIO of the program's own that reads libssl's record headers through syscall(), past the hooks: receive stays with libssl on every connection (unread), uploads intact" {
    local port n
    FILES=("$WWW/s1" "$WWW/s1048583")
    port=$(pick_port)
    snap
    start srv env BCS_READ=hidden KTLSSHIM_STATS="$STATS" \
        "$BCS" copy "$port" "$CERTS/ec.pem" "$CERTS/ec.key" "$WWW" 4
    wait_listen "$port"
    n=$(puts "$port") || fail "$n"
    wait_status srv
    assert_equal "$status_of" 0
    note
    # What libssl took through the BIO ends as the hooked reads did, but the
    # socket counts bytes read that no hook saw: never proven.
    lib_lines_have srv "the socket's count does not"
    run stats_check "$STATS" "S('connections.tls') == $n" "S('ktls.rx') == 0" \
        "S('fallback_rx.unread') == $n" "S('ktls.tx_bio') == $n"
    assert_output ok
    assert_equal "$(delta TlsRxSw)" 0
}

@test "a BIO of the program's own under edge-triggered epoll, reading the socket 32 KiB at a time into its own buffer, that takes a short read for an empty socket: uploads 0 B to 8 MiB+7, TLS 1.3 and 1.2: receive in the kernel on every connection, no stall, hashes equal" {
    local port n
    port=$(pick_port)
    snap
    start srv env BCS_EDGE=1 BCS_BUFFER=1 KTLSSHIM_STATS="$STATS" \
        "$BCS" copy "$port" "$CERTS/ec.pem" "$CERTS/ec.key" "$WWW" 12
    wait_listen "$port"
    n=$(puts "$port") || fail "$n"
    # curl writes its body 64 KiB at a time: several records arrive in one
    # burst, the last ones with nothing behind them.
    for v in "1.3 aes256" "1.2 chacha"; do
        # shellcheck disable=SC2086 # the options are words
        got=$(curl -sSk --max-time 60 $(curl_tls $v) -T "$WWW/s8388615" \
            "https://127.0.0.1:$port/up/burst") || fail "curl $v: $got"
        [ "$got" = "$(sha "$WWW/s8388615")" ] || fail "TLS $v: $got"
        n=$((n + 1))
    done
    wait_status srv
    assert_equal "$status_of" 0
    run grep -c stalled "$BATS_TEST_TMPDIR/srv.out"
    assert_output 0
    note
    run stats_check "$STATS" "S('connections.tls') == $n" \
        "S('ktls.rx') == $n and S('ktls.rx_bio') == $n" 'S("ktls.rx_bad_record") == 0'
    assert_output ok
    assert_equal "$(delta TlsRxSw)" "$n"
}

@test "a program whose I/O is all through libssl's SSL BIO (BIO_f_ssl under a buffering BIO, as s_server -WWW): handshake inside its first read, after its own SSL_accept (KTLSSHIM_KTLS auto and own), or in BIO_new_ssl's BIO: uploads to 16 KiB+1 behind the Finished and 1 MiB+7 downloads, TLS 1.3 and 1.2: receive in the kernel on every connection, hashes equal" {
    local port run mode ktls n
    FILES=("$WWW/s0" "$WWW/s16385")
    snap
    for run in inside:auto accept:auto accept:own new_ssl:auto; do
        mode=${run%:*} ktls=${run#*:}
        port=$(pick_port)
        : >"$mode-$ktls.jsonl"
        start "$mode-$ktls" env KTLSSHIM_KTLS="$ktls" KTLSSHIM_STATS="$BATS_TEST_TMPDIR/$mode-$ktls.jsonl" \
            "$SSLBIO" "$mode" "$port" "$CERTS/ec.pem" "$CERTS/ec.key" "$WWW" 6
        wait_listen "$port"
        n=$(puts "$port") || fail "$run: $n"
        for v in 1.3 1.2; do
            mkdir -p "out-$mode-$ktls/$v"
            out=$("$PY" "$HELPERS_DIR/tls_fetch.py" "$port" "$v" "" "out-$mode-$ktls/$v" s1048583)
            [ "$out" = "ok s1048583 1048583 clean" ] || fail "$run $v: $out"
            [ "$(sha "out-$mode-$ktls/$v/s1048583")" = "$(sha "$WWW/s1048583")" ] || fail "$run $v: body"
        done
        wait_status "$mode-$ktls"
        assert_equal "$status_of" 0
        n=$((n + 2))
        run stats_check "$mode-$ktls.jsonl" "S('connections.tls') == $n" \
            "S('ktls.rx') == $n and S('ktls.tx') == $n" 'S("ktls.rx_bad_record") == 0' \
            "sum(S('fallback_rx.' + k) for k in R[0]['fallback_rx']) == 0"
        [ "$output" = ok ] || fail "$run: $output"
    done
    note
    assert_equal "$(delta TlsRxSw)" 24
    assert_equal "$(delta TlsTxSw)" 24
    assert_equal "$(delta TlsDecryptError)" 0
}

#!/usr/bin/env bats
# In the kTLS VM: a connection is one process's to end (tls/conn.c), with a real
# Perl IO::Socket::SSL server (tests/servers/forking_https.pl): its parent
# does the handshake in accept() (where kTLS is switched on: libssl's TX and
# TLS 1.2 RX, the own switch's TLS 1.3 RX, or both directions of both
# versions with KTLSSHIM_KTLS=own) and a forked child serves the connection,
# reading the request head with readline (SSL_peek, then SSL_pending); or
# the parent serves on while a child that held a copy exits. Bodies
# hash-checked, the kernel's counters and the library's record show kTLS on
# every connection, one connection-log line per connection (the user's).

load '../helpers/common'
load '../helpers/tls'
load '../helpers/forked'

setup() {
    if [ "${KTLSSHIM_VM_INSIDE:-0}" != 1 ]; then
        fail "not inside the kTLS VM: run these through scripts/vm-run (make test-vm)"
    fi
    cd "$BATS_TEST_TMPDIR"
    make_certs
    make_files "$BODY"
    unset KTLSSHIM_KTLS KTLSSHIM_SHARDS KTLSSHIM_LOG KTLSSHIM_ZEROCOPY
    export KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" FETCH_TIMEOUT=120
    export KTLSSHIM_CONN_LOG="$BATS_TEST_TMPDIR/conn.log"
}
teardown() { teardown_servers; }

# ktls_everywhere N: the kernel counted N kTLS connections each way since
# snap and no decryption error; the record says kTLS both ways on each and
# every reply byte went through it.
ktls_everywhere() {
    note
    assert_equal "$(delta TlsTxSw)" "$1"
    assert_equal "$(delta TlsRxSw)" "$1"
    assert_equal "$(delta TlsDecryptError)" 0
    run stats_check "$KTLSSHIM_STATS" "S('ktls.tx') == $1 and S('ktls.rx') == $1" \
        "S('bytes.user_tx') == 0 and S('bytes.user_rx') == 0"
    assert_output ok
}

@test "Perl server, a child per connection, TLS 1.2 and 1.3, KTLSSHIM_KTLS auto and own: bodies intact, kTLS on every connection, the children's bytes in the parent's record, one conn-log line each (the child's)" {
    for mode in auto own; do
        rm -f "$KTLSSHIM_STATS" "$KTLSSHIM_CONN_LOG"
        snap
        port=$(pick_port)
        KTLSSHIM_KTLS=$mode perl_start srv "$port" --serve 4
        run serve_forked srv "$port"
        echo "$output"
        assert_success
        wait_status srv
        assert_equal "$status_of" 0
        assert_equal "$(own_stderr srv)" ""
        ktls_everywhere 4
        parent=$(pid_of srv)
        if [ "$mode" = own ]; then
            own='S("ktls.rx_own") == 4 and S("ktls.tx_own") == 4'
        else
            own='S("ktls.rx_own") == 2 and S("ktls.tx_own") == 0'
        fi
        run stats_check "$KTLSSHIM_STATS" 'len(R) == 1' "R[0]['pid'] == $parent" "$own" \
            "S('bytes.ktls_tx') == 6 * ($BODY + $REPLY_HEAD)" "S('bytes.ktls_rx') >= 4 * $BODY"
        assert_output ok
        run connlog_check "$KTLSSHIM_CONN_LOG" 4 "pid != $parent"
        assert_output ok
    done
}

@test "Perl server serving inline, KTLSSHIM_KTLS=own: a child that held a copy exits while the parent serves on; the connection stays intact on kTLS, one conn-log line (the parent's)" {
    export KTLSSHIM_KTLS=own
    snap
    port=$(pick_port)
    perl_start srv "$port" --mode inline --serve 2
    wait_listen "$port"
    run conn_requests "$port" 1.3 fork-echo echo fork-echo
    echo "$output"
    assert_success
    run conn_requests "$port" 1.2 fork-echo "s$BODY"
    echo "$output"
    assert_success
    wait_gone "$(pid_of srv)" 60
    wait_status srv
    assert_equal "$status_of" 0
    assert_equal "$(own_stderr srv)" ""
    ktls_everywhere 2
    run stats_check "$KTLSSHIM_STATS" 'len(R) == 1' 'S("ktls.rx_own") == 2 and S("ktls.tx_own") == 2' \
        "S('bytes.ktls_tx') == 5 * ($BODY + $REPLY_HEAD)"
    assert_output ok
    run connlog_check "$KTLSSHIM_CONN_LOG" 2 "pid == $(pid_of srv)"
    assert_output ok
}

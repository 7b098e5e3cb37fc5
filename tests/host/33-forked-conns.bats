#!/usr/bin/env bats
# A connection is one process's to end (tls/conn.c): a real Perl IO::Socket::SSL
# server (tests/servers/forking_https.pl) whose parent does the handshake in
# accept() and hands the connection to a forked child, and one whose parent
# serves on while a child that held a copy exits. Bodies hash-checked, the
# server's own stderr as without the library, one connection-log line per
# connection (the user's), and the children's bytes in the parent's record.
# The host has no kTLS: tests/vm/33-forked-conns.bats does the same there.

load '../helpers/common'
load '../helpers/tls'
load '../helpers/forked'

setup() {
    cd "$BATS_TEST_TMPDIR"
    make_certs
    make_files "$BODY"
    unset KTLSSHIM_KTLS KTLSSHIM_SHARDS KTLSSHIM_LOG KTLSSHIM_CONN_LOG
    export KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl"
}
teardown() { teardown_servers; }

@test "Perl server, a child per connection (TLS 1.2, 1.3; KTLSSHIM_KTLS auto, own; children end with exit, _exit): bodies intact, stderr as without the library, one conn-log line per connection (the child's), the children's bytes in the parent's record" {
    port=$(pick_port)
    perl_start_plain plain "$port" --serve 4
    run serve_forked plain "$port"
    assert_success
    wait_status plain
    assert_equal "$status_of" 0
    for mode in auto own; do
        rm -f "$KTLSSHIM_STATS" "$BATS_TEST_TMPDIR/conn.log"
        port=$(pick_port)
        end=exit
        [ "$mode" = own ] && end=_exit
        KTLSSHIM_KTLS=$mode KTLSSHIM_CONN_LOG="$BATS_TEST_TMPDIR/conn.log" perl_start srv "$port" \
            --serve 4 --child-end "$end"
        run serve_forked srv "$port"
        assert_success
        wait_status srv
        assert_equal "$status_of" 0
        assert_equal "$(own_stderr srv)" "$(own_stderr plain)"
        parent=$(pid_of srv)
        run connlog_check "$BATS_TEST_TMPDIR/conn.log" 4 "pid != $parent"
        assert_output ok
        # one record, the parent's: every reply and every body in it
        run stats_check "$KTLSSHIM_STATS" 'len(R) == 1' "R[0]['pid'] == $parent" \
            'S("connections.tls") == 4 and S("connections.tls1_3") == 2' \
            "S('bytes.user_tx') + S('bytes.ktls_tx') == 6 * ($BODY + $REPLY_HEAD)" \
            "S('bytes.user_rx') + S('bytes.ktls_rx') >= 4 * $BODY"
        assert_output ok
    done
}

@test "Perl server serving inline: a child that held a copy of the connection exits (Perl frees its copy) while the parent serves on; the connection is intact, one conn-log line (the parent's)" {
    port=$(pick_port)
    KTLSSHIM_CONN_LOG="$BATS_TEST_TMPDIR/conn.log" perl_start srv "$port" --mode inline --serve 2
    wait_listen "$port"
    run conn_requests "$port" 1.3 fork-echo "s$BODY" echo fork-echo
    assert_success
    run conn_requests "$port" 1.2 fork-echo echo
    assert_success
    wait_gone "$(pid_of srv)" 30
    wait_status srv
    assert_equal "$status_of" 0
    assert_equal "$(own_stderr srv)" ""
    run connlog_check "$BATS_TEST_TMPDIR/conn.log" 2 "pid == $(pid_of srv)"
    assert_output ok
    run stats_check "$KTLSSHIM_STATS" 'len(R) == 1' \
        "S('bytes.user_tx') + S('bytes.ktls_tx') == 6 * ($BODY + $REPLY_HEAD)"
    assert_output ok
}

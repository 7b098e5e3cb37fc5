#!/usr/bin/env bats
# kTLS only under BIOs the library can prove (shim/tls/bioproof.c), in the VM.
# PostgreSQL 15's backend reads and writes through a copy of BIO_s_socket's
# method with its own read and write (recv/send): libssl's kTLS receive side
# must not be switched under it (it was: every TLS 1.2 connection failed with
# "could not accept SSL connection: Input/output error"); its send side goes
# through biosock/. The same for a test server of our own whose BIO is such
# a copy that even keeps libcrypto's type and name, and for a filter of the
# program's over libcrypto's socket BIO (no kTLS either way: bio_unproven).

load '../helpers/common'
load '../helpers/tls'
load '../helpers/pg'

setup() {
    if [ "${KTLSSHIM_VM_INSIDE:-0}" != 1 ]; then
        fail "not inside the kTLS VM: run these through scripts/vm-run (make test-vm)"
    fi
    cd "$BATS_TEST_TMPDIR"
    unset KTLSSHIM_KTLS KTLSSHIM_SHARDS KTLSSHIM_ZEROCOPY KTLSSHIM_STATS
    export KTLSSHIM_LOG=debug
}
teardown() { teardown_servers; }

# No line of postgres's own saying a TLS connection failed.
pg_no_ssl_error() {
    ! grep -E 'could not accept SSL|SSL error|SSL SYSCALL|could not receive data|unexpected EOF' \
        "$BATS_TEST_TMPDIR/$1.err"
}

NO_FALLBACK_TX='all(S("fallback_tx." + k) == 0 for k in R[0]["fallback_tx"])'

@test "PostgreSQL 15 with psql, TLS 1.2 and 1.3: kTLS TX through its BIO, RX by the own switch under it; KTLSSHIM_KTLS=own: RX only; data intact both ways, exit 0" {
    if [ "${KTLSSHIM_TEST_ASAN:-0}" = 1 ]; then
        skip "postgres hangs at start with libasan preloaded, even without the library"
    fi
    base64 -w 76 /dev/urandom | head -c 300000 >up.txt
    echo >>up.txt
    local s1 s2
    s1=$(pg_dir pg)/default.jsonl
    snap
    pg_start pg KTLSSHIM_STATS="$s1"
    run pg_roundtrips pg "$PWD/up.txt" 1.2 1.3
    assert_success
    pg_stop pg
    note
    # The kernel encrypted both connections' output and decrypted their
    # input, which postgres's recv() got framed (shim/tls/biosock/rxframe.c).
    assert_equal "$(delta TlsTxSw)" 2
    assert_equal "$(delta TlsRxSw)" 2
    assert_equal "$(delta TlsDecryptError)" 0
    run stats_check "$s1" 'S("connections.tls1_2") == 1' 'S("connections.tls1_3") == 1' \
        'S("ktls.tx_bio") == 2' 'S("ktls.rx") == 2 and S("ktls.rx_bio") == 2' \
        "$NO_FALLBACK_TX"
    assert_success
    run pg_no_ssl_error pg
    assert_success
    grep -q "libssl's kTLS RX refused: receiving through the program's own BIO" pg.err

    # KTLSSHIM_KTLS=own: libssl is not asked, so sending stays in user space;
    # receive under postgres's BIO is the own switch's, as in auto.
    s2=$(pg_dir pg)/own.jsonl
    snap
    pg_start pg KTLSSHIM_STATS="$s2" KTLSSHIM_KTLS=own
    run pg_roundtrips pg "$PWD/up.txt" 1.2
    assert_success
    pg_stop pg
    note
    assert_equal "$(delta TlsTxSw)" 0
    assert_equal "$(delta TlsRxSw)" 1
    run stats_check "$s2" 'S("connections.tls") == 1' 'S("ktls.tx") == 0' 'S("ktls.rx") == 1' \
        'S("ktls.rx_bio") == 1'
    assert_success
    run pg_no_ssl_error pg
    assert_success
}

@test "a copy of BIO_s_socket's method that keeps its type and name: biosock TX, RX by the own switch under it; a filter over the socket BIO: no kTLS (bio_unproven); bodies and close_notify intact" {
    make_certs
    make_files 300007
    local mode
    for mode in copy filter; do
        snap
        bcs_serve "$mode"
        note
        assert_equal "$(delta TlsDecryptError)" 0
        if [ "$mode" = copy ]; then
            assert_equal "$(delta TlsTxSw)" 2
            assert_equal "$(delta TlsRxSw)" 2
            run stats_check "$mode.jsonl" 'S("ktls.tx_bio") == 2' 'S("ktls.rx_bio") == 2'
        else
            assert_equal "$(delta TlsTxSw)" 0
            assert_equal "$(delta TlsRxSw)" 0
            run stats_check "$mode.jsonl" 'S("fallback_tx.bio_unproven") == 2' \
                'S("fallback_rx.bio_unproven") == 2' 'S("ktls.tx") == 0'
        fi
        assert_success
    done
}

@test "pgbouncer in front of PostgreSQL, psql over TLS 1.2 and 1.3 (its client side: two socket BIOs on one descriptor, SSL_set_rfd and SSL_set_wfd; its server side: a TLS client in the same process): kTLS both ways on the clients' connections, the client one left to libssl; data intact both ways" {
    if [ "${KTLSSHIM_TEST_ASAN:-0}" = 1 ]; then
        skip "postgres hangs at start with libasan preloaded, even without the library"
    fi
    seq 1 20000 | sed 's/$/ a line to copy up and back/' >up.txt
    local d bport v got
    pg_start pg
    d=$(pg_dir pg)
    bport=$(pick_port)
    cat >"$d/pgb.ini" <<C
[databases]
postgres = host=127.0.0.1 port=$PG_PORT dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bport
auth_type = trust
auth_file = $d/users.txt
client_tls_sslmode = require
client_tls_key_file = $d/server.key
client_tls_cert_file = $d/server.crt
server_tls_sslmode = require
pool_mode = session
logfile = $d/pgb.log
unix_socket_dir =
C
    echo '"postgres" ""' >"$d/users.txt"
    chown "$PG_USER" "$d/pgb.ini" "$d/users.txt"
    install -o "$PG_USER" -m 644 /dev/null "$d/pgb.jsonl"
    snap
    start pgb env KTLSSHIM_STATS="$d/pgb.jsonl" setpriv --reuid="$PG_USER" --regid="$PG_USER" \
        --init-groups -- pgbouncer "$d/pgb.ini"
    wait_listen "$bport"
    for v in 1.2 1.3; do
        # the TLS version pg_stat_ssl shows is pgbouncer's to postgres: not compared
        got=$(PG_PORT=$bport pg_roundtrip pg "$v" "$PWD/up.txt" | tail -2)
        assert_equal "$got" "$(pg_expected "$PWD/up.txt" "$v" | tail -2)"
    done
    stop_srv pgb 30
    pg_stop pg
    note
    grep ktlsshim "$d/pgb.log" | head -5 || true
    run stats_check "$d/pgb.jsonl" 'S("connections.tls") == 3' \
        'S("connections.tls1_2") == 1 and S("connections.tls1_3") == 2' \
        'S("ktls.tx") == 3 and S("ktls.rx") == 2 and S("fallback_rx.libssl") == 1' \
        'S("ktls.rx_bad_record") == 0'
    assert_output ok
    assert_equal "$(delta TlsDecryptError)" 0
}

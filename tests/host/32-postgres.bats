#!/usr/bin/env bats
# PostgreSQL 15 (whose backend BIO is a copy of BIO_s_socket's method with
# its own read and write: shim/tls/bioproof.c) and a test server with such a copy
# and with a filter over libcrypto's socket BIO, on the host: no tls ULP, so
# every connection stays in user space, postgres's with the reason
# no_kernel_tls, the filter's with bio_unproven (decided before the kernel
# is asked), and every byte arrives as without the library.
# tests/vm/32-postgres.bats is the same with kernel TLS.

load '../helpers/common'
load '../helpers/tls'
load '../helpers/pg'

setup() {
    if grep -qw tls /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null; then
        skip "this kernel has the tls ULP: see tests/vm/32-postgres.bats"
    fi
    cd "$BATS_TEST_TMPDIR"
    export KTLSSHIM_LOG=debug
    unset KTLSSHIM_KTLS KTLSSHIM_SHARDS KTLSSHIM_ZEROCOPY KTLSSHIM_STATS
}
teardown() { teardown_servers; }

@test "PostgreSQL 15 with psql, TLS 1.2 and 1.3: data intact both ways, reason no_kernel_tls, exit 0" {
    if [ "${KTLSSHIM_TEST_ASAN:-0}" = 1 ]; then
        skip "postgres hangs at start with libasan preloaded, even without the library"
    fi
    base64 -w 76 /dev/urandom | head -c 300000 >up.txt
    echo >>up.txt
    local st
    st=$(pg_dir pg)/s.jsonl
    pg_start pg KTLSSHIM_STATS="$st"
    run pg_roundtrips pg "$PWD/up.txt" 1.2 1.3
    assert_success
    pg_stop pg
    run stats_check "$st" 'S("connections.tls1_2") == 1' 'S("connections.tls1_3") == 1' \
        'S("fallback_tx.no_kernel_tls") == 2' 'S("fallback_rx.no_kernel_tls") == 2' \
        'S("ktls.tx") == 0'
    assert_success
    ! grep -E 'could not accept SSL|SSL error|SSL SYSCALL|could not receive data' pg.err
}

@test "a copy of BIO_s_socket's method (no_kernel_tls) and a filter over the socket BIO (bio_unproven): bodies and close_notify intact" {
    make_certs
    make_files 300007
    local mode reason
    for mode in copy filter plain; do
        bcs_serve "$mode"
        reason=$([ "$mode" = filter ] && echo bio_unproven || echo no_kernel_tls)
        run stats_check "$mode.jsonl" "S('fallback_tx.$reason') == 2" \
            "S('fallback_rx.$reason') == 2"
        assert_success
    done
}

#!/usr/bin/env bats
# In the kTLS VM: a server killed by SIGTERM leaves its record with its kTLS
# counts, and with no TLS-offload NIC every kTLS connection is counted as
# software exactly, without reading /proc/net/tls_stat per connection.

load '../helpers/common'
load '../helpers/tls'

setup() {
    if [ "${KTLSSHIM_VM_INSIDE:-0}" != 1 ]; then
        fail "not inside the kTLS VM: run these through scripts/vm-run (make test-vm)"
    fi
    cd "$BATS_TEST_TMPDIR"
    make_certs
    make_files 16384
    export KTLSSHIM_LOG=info FETCH_TIMEOUT=120
    unset KTLSSHIM_KTLS KTLSSHIM_SHARDS KTLSSHIM_ZEROCOPY
    STATS="$BATS_TEST_TMPDIR/s.jsonl"
}
teardown() { teardown_servers; }

@test "s_server killed by TERM: its record counts kTLS sw exactly, and /proc/net/tls_stat is read once in the process, not per connection" {
    port=$(pick_port)
    cd "$WWW"
    start srv env KTLSSHIM_STATS="$STATS" openssl s_server -WWW -quiet \
        -accept "127.0.0.1:$port" -cert "$CERTS/ec.pem" -key "$CERTS/ec.key"
    cd "$BATS_TEST_TMPDIR"
    wait_listen "$port"
    # every open the server makes from here on
    strace -f -qq -e trace=open,openat -o trace.txt -p "$(pid_of srv)" 2> strace.err &
    tracer=$!
    for _ in $(seq 300); do
        grep -q "TracerPid:[[:space:]]*$tracer\$" "/proc/$(pid_of srv)/status" && break
        sleep 0.1
    done
    grep -q "TracerPid:[[:space:]]*$tracer\$" "/proc/$(pid_of srv)/status"
    run matrix "$port" ec 1.3 aes128 s16384
    assert_success
    run matrix "$port" ec 1.2 aes256 s16384
    assert_success
    run matrix "$port" ec 1.3 aes256 s16384
    assert_success
    kill -INT "$tracer"; wait "$tracer" 2>/dev/null || true
    # once in the process: whether the kernel can rekey, asked at its first
    # TLS 1.3 connection whose receive the own switch takes; never per connection
    run grep -c tls_stat trace.txt
    assert_output 1
    run grep -cE '[/"]s16384"' trace.txt   # the trace saw the server's opens: one per request
    assert_output 3
    # live, in the Prometheus format, with the kernel's counters
    "$BUILD/ktls-probe" --stats "$(pid_of srv)" --prometheus > m.prom
    run promtool check metrics < m.prom
    assert_success
    run grep -c '^ktlsshim_kernel_tls_total{counter="TlsTxSw"} [1-9]' m.prom
    assert_output 1
    run grep -c '^ktlsshim_kernel_tls_current{counter="TlsCurrTxSw"} ' m.prom
    assert_output 1
    run grep "^ktlsshim_ktls_tx_sw_total" m.prom
    assert_output "ktlsshim_ktls_tx_sw_total 3"
    stop_srv srv
    assert_equal "$status_of" $((128 + 15))
    run stats_check "$STATS" 'len(R) == 1 and R[0]["end"] == "signal 15"' \
        'S("connections.tls") == 3 and S("ktls.tx") == 3' \
        'S("ktls.tx_sw") == 3 and S("ktls.tx_nic") == 0 and S("ktls.offload_estimated") == 0' \
        'S("ktls.rx") == 3 and S("ktls.rx_sw") == 3 and S("ktls.rx_deferred") == 2'
    assert_output ok
}

#!/usr/bin/env bats
# tests/host/86-cluster.bats where kTLS exists, behind IPVS: two machines
# (network namespaces), each a real nginx sharded under the library (2
# workers) writing its node_exporter textfile (KTLSSHIM_PROM_FILE), and a
# real prometheus-node-exporter; in front an IPVS virtual service (NAT,
# round robin) in the balancer's namespace. N downloads through it; the
# node_exporters' expositions, added as Prometheus' sum() would, must come
# to N TLS connections, N with kTLS TX and RX, machine by machine what the client
# saw. Prometheus itself is left to the host test: under TCG it adds 20-25 s
# to the cluster's start, and a quarter of its 1 s scrapes time out (a
# scrape takes up to 5 s there), which drops machines from its sums for a
# moment (docs/testing.md).

load '../helpers/common'
load '../helpers/cluster'

CLUSTER_MACHINES=2
N=12

setup() {
    if [ "${KTLSSHIM_VM_INSIDE:-0}" != 1 ]; then
        fail "not inside the kTLS VM: run these through scripts/vm-run (make test-vm)"
    fi
    cluster_setup
}
teardown() { cluster_teardown; }

ipvs_conns() {
    cluster exec "$C" lb ipvsadm -Ln --stats | grep -Eq "^TCP  10\.77\.1\.1:443 +$1 "
}

@test "vm: 2 sharded nginx behind IPVS (NAT, rr): the node_exporters add up to what the client did, kTLS on each" {
    run cluster up "$C" --machines "$CLUSTER_MACHINES" --balancer ipvs --no-prometheus
    assert_success
    cluster_drive "$N"
    # the connections went through IPVS, one virtual service (its totals
    # are summed from per-CPU counters by its estimator: every 2 s)
    wait_until 20 ipvs_conns "$N"
    t=$(date +%s)
    # every machine's file rewritten since the client finished
    wait_until 30 expositions_after "$t"
    run saved_sums ktlsshim_connections_tls_total ktlsshim_ktls_tx_total \
        'ktlsshim_fallback_total{direction="tx"}' ktlsshim_ktls_rx_total \
        'ktlsshim_fallback_total{direction="rx"}' ktlsshim_sendfile_bytes_total
    assert_success
    echo "TLS, kTLS tx, user tx, kTLS rx, user rx, sendfile bytes:" ${lines[*]}
    # N TLS connections, each with kTLS TX
    assert_equal "${lines[0]}" "$N"
    assert_equal "${lines[1]}" "$N"
    assert_equal "${lines[2]}" 0
    # the receive side too: in the kernel on every connection, TLS 1.3's
    # by the own switch inside these network namespaces
    assert_equal "${lines[3]}" "$N"
    assert_equal "${lines[4]}" 0
    # kTLS carried the bodies: at least N x 64 KiB went out through sendfile
    [ "${lines[5]}" -ge $((N * 65536)) ]
    # machine by machine, what the client saw
    local m
    for m in "${!SERVED[@]}"; do
        run saved_sums "$m" ktlsshim_connections_tls_total ktlsshim_ktls_tx_total
        assert_equal "${lines[*]}" "${SERVED[$m]} ${SERVED[$m]}"
    done
}

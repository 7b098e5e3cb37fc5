#!/usr/bin/env bats
# Beyond one machine (docs/deploy.md): three machines, each a network
# namespace running a real nginx sharded under the library (2 workers)
# whose supervisor rewrites a node_exporter textfile (KTLSSHIM_PROM_FILE),
# and a real prometheus-node-exporter; in front a real HAProxy in `mode
# tcp` (round robin); a real Prometheus scraping the three node_exporters
# every second. N downloads through HAProxy, hash-checked; Prometheus' sum
# over the machines must come to N, machine by machine what the client saw.
# tests/vm/86-cluster.bats does the same behind IPVS where kTLS exists.

load '../helpers/common'
load '../helpers/cluster'

CLUSTER_MACHINES=3
N=30

teardown() { cluster_teardown; }

# prom_by_machine PROMQL-SUM-BY-MACHINE: checks Prometheus' per-machine
# values are the client's per-machine counts.
prom_by_machine() {
    local m
    run cluster query "$C" "$1"
    assert_success
    for m in "${!SERVED[@]}"; do
        assert_line "machine=$m	${SERVED[$m]}"
    done
    assert_equal "${#lines[@]}" "$CLUSTER_MACHINES"
}

@test "cluster: 3 sharded nginx behind HAProxy (mode tcp); Prometheus' sums are what the client did" {
    cluster_setup
    run cluster up "$C" --machines "$CLUSTER_MACHINES" --balancer haproxy
    assert_success
    cluster_drive "$N"
    t=$(date +%s)
    # Prometheus has scraped every machine's file rewritten since the
    # client finished: then every TLS connection is counted once, on the
    # machine that served it
    run cluster wait "$C" "count(node_textfile_mtime_seconds > $t)" "$CLUSTER_MACHINES" 20
    assert_success
    run cluster query "$C" 'sum(ktlsshim_connections_tls_total)'
    assert_output "	$N"
    prom_by_machine 'sum by (machine) (ktlsshim_connections_tls_total)'
    # each one's send and receive sides went to the kernel or fell back,
    # for a reason
    local d
    for d in tx rx; do
        run cluster query "$C" \
            "sum(ktlsshim_ktls_${d}_total) + sum(ktlsshim_fallback_total{direction=\"$d\"})"
        assert_output "	$N"
    done
    # node_exporter's exposition of the file passes promtool's lint
    run cluster metrics "$C" m1
    assert_success
    grep -E '^(# (HELP|TYPE) )?ktlsshim_' <<<"$output" >"$BATS_TEST_TMPDIR/m1.prom"
    run grep -c '^# TYPE ktlsshim_' "$BATS_TEST_TMPDIR/m1.prom"
    [ "$output" -ge 5 ]
    run promtool check metrics <"$BATS_TEST_TMPDIR/m1.prom"
    assert_success
    assert_output ''
    # node_exporter read every textfile without error
    run cluster query "$C" 'sum(node_textfile_scrape_error)'
    assert_output "	0"
}

@test "the alert rule of docs/deploy.md: promtool checks it, and it fires per reason for a machine falling back" {
    local rules="$ROOT/contrib/prometheus/ktlsshim-alerts.yml"
    run promtool check rules "$rules"
    assert_success
    assert_line --partial "SUCCESS: 1 rules found"
    # the unit test: fires for m1 (rx, version), not for m2 whose counter stays flat
    sed "s|RULES|$rules|" "$ROOT/tests/helpers/ktlsshim-alerts.test.yml" >"$BATS_TEST_TMPDIR/t.yml"
    run promtool test rules "$BATS_TEST_TMPDIR/t.yml"
    assert_success
    assert_line --partial SUCCESS
    # docs/deploy.md shows the file as it is
    run "$PY" - "$ROOT/docs/deploy.md" "$rules" <<'PYEOF'
import sys
doc, rules = open(sys.argv[1]).read(), open(sys.argv[2]).read()
after = doc[doc.index("contrib/prometheus/ktlsshim-alerts.yml"):]
block = after[after.index("```yaml\n") + 8:]
block = block[:block.index("```")]
print("same" if block == rules else "differs:\n" + block)
PYEOF
    assert_output same
}

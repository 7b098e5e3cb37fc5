#!/usr/bin/env bats
# Live stats: `ktls-probe --stats PID` reads a running process's counters
# (its own, or a supervisor's workers and their sum), and --prometheus
# prints them in the node_exporter textfile format, which promtool accepts.

load '../helpers/common'
load '../helpers/tls'

setup() {
    cd "$BATS_TEST_TMPDIR"
    export KTLSSHIM_LOG=info
    make_certs
    make_files 3000000
}
teardown() { teardown_servers; }

PROBE() { "$BUILD/ktls-probe" "$@"; }

# live PID KEY: KEY's value in PID's own record, or in the group's sum
# when PID is a supervisor.
live() {
    local out
    out=$(PROBE --stats "$1") || return 1
    if echo "$out" | grep -q ' sum of '; then out=$(echo "$out" | grep ' sum of '); fi
    echo "$out" | tr ' ' '\n' | grep "^$2=" | cut -d= -f2
}

# moves_during_download PID PORT: a rate-limited download runs; the
# counters read while it runs must grow, and the body arrive intact.
moves_during_download() {
    local pid=$1 port=$2 a b curl_pid running=no
    a=$(live "$pid" bytes.user_tx)
    [ -n "$a" ]
    curl -skf --limit-rate 300k -o got.bin "https://127.0.0.1:$port/s3000000" &
    curl_pid=$!
    b=$a
    for _ in $(seq 300); do
        b=$(live "$pid" bytes.user_tx)
        if [ "$b" -gt "$a" ]; then
            kill -0 "$curl_pid" 2>/dev/null && running=yes
            break
        fi
        sleep 0.1
    done
    echo "# bytes.user_tx read live: $a before the download, $b during it" >&3
    assert_equal "$running" yes
    wait "$curl_pid"
    assert_equal "$(sha got.bin)" "$(sha "$WWW/s3000000")"
}

@test "live stats, unsharded python https server: bytes move while a download runs; the exit record says what was last read" {
    port=$(free_port)
    start srv env KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" \
        "$PY" "$(py_server)" --port "$port" --cert "$CERTS/ec.pem" --key "$CERTS/ec.key" --dir "$WWW"
    wait_port "$port"
    pid=$(pid_of srv)
    moves_during_download "$pid" "$port"
    tx=$(live "$pid" bytes.user_tx)
    acc=$(live "$pid" connections.accepted)
    assert_equal "$acc" 2   # the probe and the download
    [ "$tx" -ge 3000000 ]
    run sh -c "'$BUILD/ktls-probe' --stats $pid --prometheus | promtool check metrics"
    assert_success
    run sh -c "'$BUILD/ktls-probe' --stats $pid --prometheus | grep '^ktlsshim_user_tx_bytes_total'"
    assert_output "ktlsshim_user_tx_bytes_total $tx"
    kill -TERM "$pid"
    wait_gone "$pid" 10
    run json_get s.jsonl process bytes.user_tx
    assert_output "$tx"
}

@test "live stats, sharded N=2: each worker's record and the sum; Prometheus labels worker; promtool accepts it" {
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" \
        "$PY" "$(py_server)" --port "$port" --cert "$CERTS/ec.pem" --key "$CERTS/ec.key" --dir "$WWW"
    wait_port "$port"
    sup=$(pid_of srv)
    moves_during_download "$sup" "$port"
    for i in 1 2 3 4 5 6; do curl -skf -o /dev/null "https://127.0.0.1:$port/s3000000"; done
    PROBE --stats "$sup" --prometheus > m.prom
    run promtool check metrics < m.prom
    assert_success
    run "$PY" - "$sup" <<'PYEOF'
import re, sys
sup = sys.argv[1]
rows = [re.match(r'ktlsshim_connections_tls_total\{worker="(\w+)"\} (\d+)', l)
        for l in open("m.prom")]
rows = [m.groups() for m in rows if m]
print(sorted(r[0] for r in rows), sum(int(r[1]) for r in rows))
PYEOF
    assert_output "['0', '1', 'other'] 7"
    # a worker's own view is its record only
    w=$(children_of "$sup" | head -1)
    run PROBE --stats "$w"
    assert_output --regexp "^pid $w worker [01]/2: connections.accepted="
    acc=$(live "$sup" connections.accepted)
    kill -TERM "$sup"
    wait_gone "$sup" 10
    run json_get s.jsonl supervisor connections.accepted
    assert_output "$acc"
}

@test "live stats: a process without the library, a bad pid, --prometheus alone: clear errors" {
    sleep 30 &
    p=$!
    run PROBE --stats "$p"
    assert_failure 1
    assert_output --partial "--stats $p: no live stats"
    kill "$p"
    run PROBE --stats 12x
    assert_failure 2
    assert_output --partial "--stats 12x: not a process id"
    run PROBE --prometheus
    assert_failure 2
}

#!/usr/bin/env bats
# KTLSSHIM_PROM_FILE: the live counters as a node_exporter textfile,
# rewritten atomically (a new inode each time) every KTLSSHIM_PROM_INTERVAL
# seconds by the supervisor (sharded) or a thread (unsharded); its sums are
# what the clients did, promtool accepts it, and the last write at the end
# holds the final counts (the exit record's). A directory it cannot write
# to costs one line and nothing else.

load '../helpers/common'
load '../helpers/tls'

setup() {
    cd "$BATS_TEST_TMPDIR"
    export KTLSSHIM_LOG=info
    make_certs
    make_files 3000000
    PROM="$BATS_TEST_TMPDIR/textfile/ktlsshim.prom"
    mkdir -p "${PROM%/*}"
}
teardown() { teardown_servers; }

# prom_sum METRIC [LABEL-MATCH]: the sum of METRIC's series in $PROM
# (those whose labels contain LABEL-MATCH), read from one consistent copy.
prom_sum() {
    local copy="$BATS_TEST_TMPDIR/read.prom"
    cp "$PROM" "$copy" 2>/dev/null || return 1
    awk -v m="$1" -v l="${2:-}" '$1 == m || index($1, m "{") == 1 {
        if (l == "" || index($1, l)) s += $2; f = 1 } END { if (!f) exit 1; print s + 0 }' "$copy"
}

inode() { stat -c %i "$PROM" 2>/dev/null; }

# serve VAR=VALUE... [CMD...]: the Python HTTPS server under the library
# with these variables (and CMD before it), listening; sets port and pid.
serve() {
    port=$(pick_port)
    start srv env "$@" "$PY" "$(py_server)" --port "$port" --cert "$CERTS/ec.pem" \
        --key "$CERTS/ec.key" --dir "$WWW"
    wait_listen "$port"
    pid=$(pid_of srv)
}

# prom_equals METRIC VALUE: $PROM's sum of METRIC is VALUE now.
prom_equals() { [ "$(prom_sum "$1")" = "$2" ]; }

# serve_and_check PORT N TOTAL: while a rate-limited download runs, the
# file is replaced (a new inode) and its byte counters grow; then N more
# connections; the file's connection counters come to exactly TOTAL.
serve_and_check() {
    local port=$1 n=$2 total=$3 a b i1 i2 curl_pid moved=no
    wait_until 10 test -s "$PROM"
    i1=$(inode)
    a=$(prom_sum ktlsshim_user_tx_bytes_total)
    curl -skf --limit-rate 500k -o got.bin "https://127.0.0.1:$port/s3000000" &
    curl_pid=$!
    for _ in $(seq 100); do
        b=$(prom_sum ktlsshim_user_tx_bytes_total)
        i2=$(inode)
        if [ "$b" -gt "$a" ] && [ "$i2" != "$i1" ] && kill -0 "$curl_pid" 2>/dev/null; then
            moved=yes
            break
        fi
        sleep 0.1
    done
    echo "# user_tx bytes in the file: $a before, $b during the download; inode $i1 -> $i2" >&3
    assert_equal "$moved" yes
    wait "$curl_pid"
    assert_equal "$(sha got.bin)" "$(sha "$WWW/s3000000")"
    for _ in $(seq "$n"); do curl -skf -o /dev/null "https://127.0.0.1:$port/s3000000"; done
    wait_until 10 prom_equals ktlsshim_connections_tls_total "$total"
    assert_equal "$(prom_sum ktlsshim_connections_accepted_total)" "$total"
    run promtool check metrics <"$PROM"
    assert_success
    # never a temp file in sight but the one being written
    run sh -c "ls '${PROM%/*}' | grep -v '^ktlsshim.prom$' | grep -v '\\.tmp$'"
    assert_output ""
}

@test "prom file, sharded N=2: rewritten during a download, counters move, worker series add up to N, promtool accepts it, final counts at the end" {
    serve KTLSSHIM_SHARDS=2 KTLSSHIM_PROM_FILE="$PROM" KTLSSHIM_PROM_INTERVAL=1 \
        KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl"
    sup=$pid
    serve_and_check "$port" 5 6
    # one series per worker and "other" (the supervisor's own: no connection)
    run grep -c '^ktlsshim_connections_tls_total{worker="[01]"} [0-9]' "$PROM"
    assert_output 2
    assert_equal "$(prom_sum ktlsshim_connections_tls_total 'worker="other"')" 0
    assert_equal "$(prom_sum ktlsshim_workers_started_total 'worker="other"')" 2
    grep -q '^ktlsshim_fallback_total{direction="tx",reason="no_kernel_tls",worker="0"} ' "$PROM"
    grep -q '^ktlsshim_summed_records [0-9]' "$PROM"
    # workers killed and respawned: their series keep what they counted (no
    # reset for Prometheus), the sum stays what the clients did
    w0=$(prom_sum ktlsshim_connections_tls_total 'worker="0"')
    w1=$(prom_sum ktlsshim_connections_tls_total 'worker="1"')
    kill -KILL $(children_of "$sup")
    wait_until 10 prom_equals ktlsshim_workers_respawned_total 2
    assert_equal "$(prom_sum ktlsshim_connections_tls_total 'worker="0"') $(prom_sum ktlsshim_connections_tls_total 'worker="1"')" "$w0 $w1"
    assert_equal "$(prom_sum ktlsshim_connections_tls_total)" 6
    # the probe prints the same families (one formatter)
    run sh -c "'$BUILD/ktls-probe' --stats $sup --prometheus | grep -c '^ktlsshim_connections_tls_total{worker='"
    assert_output 3
    kill -TERM "$sup"
    wait_gone "$sup" 10
    # the last write holds the exit record's sum
    run json_get s.jsonl supervisor bytes.user_tx
    assert_equal "$(prom_sum ktlsshim_user_tx_bytes_total)" "$output"
    [ ! -e "$PROM.$sup.tmp" ]
}

@test "prom file, unsharded: a thread rewrites it during a download, N connections -> N, the final write at exit" {
    serve KTLSSHIM_PROM_FILE="$PROM" KTLSSHIM_PROM_INTERVAL=1 KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl"
    # no thread, no file until the process serves something
    [ ! -e "$PROM" ]
    curl -skf -o /dev/null "https://127.0.0.1:$port/s3000000"
    serve_and_check "$port" 3 5
    # unsharded: no worker label
    grep -q '^ktlsshim_connections_tls_total 5$' "$PROM"
    grep -q '^ktlsshim_fallback_total{direction="rx",reason="no_kernel_tls"} ' "$PROM"
    run grep -c '^# TYPE ktlsshim_fallback_total counter$' "$PROM"
    assert_output 1
    kill -TERM "$pid"
    wait_gone "$pid" 10
    run json_get s.jsonl process bytes.user_tx
    assert_equal "$(prom_sum ktlsshim_user_tx_bytes_total)" "$output"
    [ ! -e "$PROM.$pid.tmp" ]
}

@test "prom file: a full disk costs one line, no temp file, the server serves the same bytes; bad values are reported" {
    mkdir full
    # a 4 KiB tmpfs of the server's own (mount namespace): the file does not fit
    serve KTLSSHIM_SHARDS=2 KTLSSHIM_PROM_FILE="$BATS_TEST_TMPDIR/full/k.prom" \
        KTLSSHIM_PROM_INTERVAL=1 unshare -m --propagation private \
        sh -c 'mount -t tmpfs -o size=4k tmpfs "$0" && exec "$@"' "$BATS_TEST_TMPDIR/full"
    sup=$pid
    wait_until 10 grep -q 'KTLSSHIM_PROM_FILE=.*cannot write it: No space left on device' srv.err
    for i in 1 2 3; do
        curl -skf -o "got$i.bin" "https://127.0.0.1:$port/s3000000"
        assert_equal "$(sha "got$i.bin")" "$(sha "$WWW/s3000000")"
    done
    # written (and failed) again since: still nothing left behind, one line
    run nsenter -t "$sup" -m ls -A "$BATS_TEST_TMPDIR/full"
    assert_success
    assert_output ""
    kill -TERM "$sup"
    wait_gone "$sup" 10
    run grep -c 'KTLSSHIM_PROM_FILE=' srv.err
    assert_output 1
    # the variables' values are checked like the others
    run env LD_PRELOAD="$PRELOAD" KTLSSHIM_PROM_FILE=rel.prom KTLSSHIM_PROM_INTERVAL=0 true
    assert_success
    assert_line --partial 'KTLSSHIM_PROM_FILE="rel.prom" is not valid: expected an absolute path'
    assert_line --partial 'KTLSSHIM_PROM_INTERVAL="0" is not valid: expected a whole number of seconds from 1 to 3600; using 5'
}

# final_write [VAR=VALUE...]: a server started with the file written once
# an hour serves one download and is stopped: the file then holds the
# exit record's counts, which only the last write can have put there.
final_write() {
    local role
    role=$([ $# -gt 0 ] && echo supervisor || echo process)
    serve "$@" KTLSSHIM_PROM_FILE="$PROM" KTLSSHIM_PROM_INTERVAL=3600 \
        KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl"
    curl -skf -o got.bin "https://127.0.0.1:$port/s3000000"
    assert_equal "$(sha got.bin)" "$(sha "$WWW/s3000000")"
    kill -TERM "$pid"
    wait_gone "$pid" 10
    run json_get s.jsonl "$role" bytes.user_tx
    [ "$output" -ge 3000000 ]
    assert_equal "$(prom_sum ktlsshim_user_tx_bytes_total)" "$output"
    assert_equal "$(prom_sum ktlsshim_connections_tls_total)" 1
    rm -f "$PROM" s.jsonl
}

@test "prom file: the writer's end writes it a last time (sharded and unsharded), with the exit record's counts" {
    final_write KTLSSHIM_SHARDS=2
    final_write
}

# prefork_server: a Python HTTPS server that forks two children after
# listen(), each accepting on the same socket (Apache's prefork model,
# unsharded); the parent only waits.
prefork_server() {
    local f="$BATS_TEST_TMPDIR/prefork.py"
    cat >"$f" <<'PYEOF'
import functools, http.server, os, signal, ssl, sys
port, cert, key, d = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
h = functools.partial(http.server.SimpleHTTPRequestHandler, directory=d)
srv = http.server.HTTPServer(("127.0.0.1", port), h)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
kids = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        srv.serve_forever()
    kids.append(pid)
signal.signal(signal.SIGTERM, lambda *a: [os.kill(k, signal.SIGTERM) for k in kids])
for k in kids:
    os.waitpid(k, 0)
PYEOF
    echo "$f"
}

# writers PID...: how many of these processes have the writer thread.
writers() {
    local p
    for p in "$@"; do cat /proc/"$p"/task/*/comm 2>/dev/null; done | grep -c '^ktlsshim-prom$'
}

@test "prom file, unsharded prefork (two children accept on one socket): one writer thread in the tree, never one per child" {
    port=$(pick_port)
    start srv env KTLSSHIM_PROM_FILE="$PROM" KTLSSHIM_PROM_INTERVAL=1 \
        "$PY" "$(prefork_server)" "$port" "$CERTS/ec.pem" "$CERTS/ec.key" "$WWW"
    wait_listen "$port"
    pid=$(pid_of srv)
    wait_until 10 n_children "$pid" 2
    kids=$(children_of "$pid")
    # until both children have served (each became active)
    for _ in $(seq 40); do
        curl -skf -o /dev/null "https://127.0.0.1:$port/s3000000"
        active=0
        for k in $kids; do "$BUILD/ktls-probe" --stats "$k" >/dev/null 2>&1 && active=$((active + 1)); done
        [ "$active" = 2 ] && break
    done
    assert_equal "$active" 2
    wait_until 10 test -s "$PROM"
    run writers "$pid" $kids
    assert_output 1
    run writers "$pid"
    assert_output 0
    run promtool check metrics <"$PROM"
    assert_success
}

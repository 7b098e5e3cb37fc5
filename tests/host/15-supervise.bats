#!/usr/bin/env bats
# The supervisor as a process manager: slots that end, daemonizing programs,
# stops that must end. Real servers (nginx, python) and real clients.

load '../helpers/common'

PIDSRV="$ROOT/tests/servers/pid_server.py"

setup() {
    cd "$BATS_TEST_TMPDIR"
    export KTLSSHIM_LOG=info
}
teardown() {
    local rc=0
    teardown_servers || rc=$?
    end_test_processes
    return $rc
}

# connect_many PORT N TIMEOUT: N connections one after another, each bounded
# by TIMEOUT seconds; prints each reply's pid, or "fail".
connect_many() {
    "$PY" - "$@" <<'PYEOF'
import socket, sys
port, n, t = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
for _ in range(n):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=t)
        s.settimeout(t)
        r = s.recv(100).decode()
        s.close()
        print(r.split()[0] if r.startswith("pid=") else "fail")
    except OSError:
        print("fail")
PYEOF
}

@test "a crash-looping worker given up: its listener is closed, 20 of 20 new connections are served by the other" {
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" \
        "$PY" "$PIDSRV" --port "$port" --exit-worker 1 3 --first-after 6
    wait_for_line "$BATS_TEST_TMPDIR/srv.err" 'worker 1/2 .*crash loop, not respawning it' 30
    run children_of "$(pid_of srv)"
    assert_equal "${#lines[@]}" 1
    served_by=${lines[0]}
    # The kernel sees one listener left on the port.
    run sh -c "ss -Hltn 'sport = :$port' | wc -l"
    assert_output 1
    run connect_many "$port" 20 2
    assert_equal "$(grep -c "^pid=$served_by\$" <<<"$output")" 20
    # Five failures in a row gave it up (four respawns), and the workers'
    # first non-zero status is the supervisor's when the group ends.
    kill -TERM "$(pid_of srv)"
    wait_status srv
    assert_equal "$status_of" 3
    run json_get s.jsonl supervisor workers.respawned
    assert_output 4
}

@test "a worker that exits 0 while the other runs leaves no listener behind" {
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_LOG=info "$PY" "$PIDSRV" --port "$port" --exit-worker 0 0
    wait_port "$port"
    sup=$(pid_of srv)
    # sharded: worker 0 ended with 0 and was not respawned, worker 1 serves
    worker0_done() { grep -q 'worker 0/2 .*exit 0' "$BATS_TEST_TMPDIR/srv.err" && n_children "$sup" 1; }
    wait_until 30 worker0_done
    run sh -c "ss -Hltn 'sport = :$port' | wc -l"
    assert_output 1
    run connect_many "$port" 20 2
    refute_line fail
    assert_equal "${#lines[@]}" 20
}

@test "with net.ipv4.tcp_migrate_req=1 (own netns), connections queued on a given-up slot are served by the other" {
    [ -e /proc/sys/net/ipv4/tcp_migrate_req ] || skip "no net.ipv4.tcp_migrate_req in this kernel"
    unshare -n true 2>/dev/null || skip "cannot make a network namespace here"
    # Worker 1 exits once the supervisor's start-up window is over (before,
    # a failure makes it fall back unsharded), then right after listen(),
    # 5 times in all; it never accepts. The 30 clients started at once when
    # the window has passed (connections spread again) queue partly on its
    # listener (never accepted there). When the
    # supervisor gives the slot up and closes it, the kernel moves them to
    # worker 0's queue instead of resetting them.
    cat > inner.sh <<EOF2
set -e
ip link set lo up
sysctl -qw net.ipv4.tcp_migrate_req=1
env LD_PRELOAD="$PRELOAD" KTLSSHIM_SHARDS=2 KTLSSHIM_LOG=debug "$PY" "$PIDSRV" --port 4433 \
    --exit-worker 1 3 --first-after 6 >/dev/null 2> srv.err &
# the server holds none of run's output, and ends with this script whatever
# fails in it (else run would wait for it, unbounded)
trap 'kill -KILL %1 2>/dev/null || true' EXIT
for _ in \$(seq 100); do ss -Hltn 'sport = :4433' | grep -q . && break; sleep 0.05; done
"$PY" - <<'PYEOF'
import socket, threading
res = []
def one():
    try:
        s = socket.create_connection(("127.0.0.1", 4433), timeout=20)
        s.settimeout(20)
        r = s.recv(100).decode()
        res.append("ok" if r.startswith("pid=") else "fail")
    except OSError as e:
        res.append("fail " + type(e).__name__)
ts = [threading.Thread(target=one) for _ in range(30)]
[t.start() for t in ts]
[t.join() for t in ts]
print("\n".join(res))
PYEOF
grep -q 'crash loop, not respawning' srv.err
EOF2
    run timeout 60 unshare -n bash inner.sh
    echo "$output"
    assert_success
    assert_equal "$(grep -c '^ok$' <<<"$output")" 30
}

@test "nginx with its defaults (daemon on): refused with one line, started again unsharded; nginx -s stop leaves no process" {
    port=$(free_port)
    mkdir -p logs
    cat > nginx.conf <<EOF2
pid $BATS_TEST_TMPDIR/nginx.pid;
error_log $BATS_TEST_TMPDIR/logs/error.log;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $BATS_TEST_TMPDIR/logs;
    server { listen 127.0.0.1:$port; location / { return 200 "hello-daemon\n"; } }
}
EOF2
    conf="$BATS_TEST_TMPDIR/nginx.conf"
    start srv env KTLSSHIM_SHARDS=2 /usr/sbin/nginx -e "$BATS_TEST_TMPDIR/logs/error.log" -c "$conf"
    # The user's command returns as it does without the library: 0, once
    # the (one) daemon is started.
    wait_status srv
    assert_equal "$status_of" 0
    run grep -c 'not sharding: the program daemonized.*daemon off;' "$BATS_TEST_TMPDIR/srv.err"
    assert_output 1
    wait_port "$port"
    run curl -sf --max-time 10 "http://127.0.0.1:$port/"
    assert_output hello-daemon
    # One master (the one nginx.pid names, reparented away from the
    # command), with its own workers: no other copy.
    master=$(cat nginx.pid)
    run pids_with_arg "$conf"
    assert_equal "${#lines[@]}" 1
    assert_equal "${lines[0]}" "$master"
    nworkers=$(pgrep -P "$master")
    assert_equal "$(echo "$nworkers" | wc -l)" 1
    /usr/sbin/nginx -e "$BATS_TEST_TMPDIR/logs/error.log" -c "$conf" -s stop
    wait_gone "$master" 10
    for w in $nworkers; do wait_gone "$w" 10; done
    for _ in $(seq 100); do
        [ -z "$(pids_with_arg "$conf")" ] && break
        sleep 0.1
    done
    run pids_with_arg "$conf"
    assert_output ""
    # nginx's children run with its argv rewritten, as "nginx: worker process":
    # none of the test's port is left either.
    run sh -c "ss -Hltn 'sport = :$port' | wc -l"
    assert_output 0
    refute grep -q 'unlink() .* failed' logs/error.log
}

@test "a program that calls daemon() after listen(): refused, started again unsharded, one daemon serves" {
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 "$PY" "$PIDSRV" --port "$port" --daemon "$BATS_TEST_TMPDIR/d.pid"
    wait_status srv
    assert_equal "$status_of" 0
    run grep -c 'not sharding: the program daemonized' "$BATS_TEST_TMPDIR/srv.err"
    assert_output 1
    wait_port "$port"
    for _ in $(seq 100); do [ -s d.pid ] && break; sleep 0.1; done
    daemon=$(cat d.pid)
    run pids_with_arg "$BATS_TEST_TMPDIR/d.pid"
    assert_output "$daemon"
    run connect_many "$port" 10 5
    assert_equal "$(grep -c "^pid=$daemon\$" <<<"$output")" 10
    kill -TERM "$daemon"
    wait_gone "$daemon" 10
}

@test "a worker's child in a session of its own (setsid) is not a daemon, even once its worker is killed" {
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_LOG=debug "$PY" "$PIDSRV" --port "$port" \
        --session-child "$BATS_TEST_TMPDIR/mark"
    wait_port "$port"
    sup=$(pid_of srv)
    for _ in $(seq 100); do
        [ "$(pids_with_arg "$BATS_TEST_TMPDIR/mark.child" | wc -l)" -eq 2 ] && break
        sleep 0.1
    done
    assert_equal "$(pids_with_arg "$BATS_TEST_TMPDIR/mark.child" | wc -l)" 2
    run connect_many "$port" 30 5
    refute_line fail
    assert_equal "$(sort -u <<<"$output" | wc -l)" 2
    # Its worker killed: the child is the supervisor's now, the worker is
    # respawned, and nothing is restarted.
    victim=$(children_of "$sup" | head -1)
    kill -KILL "$victim"
    wait_for_line "$BATS_TEST_TMPDIR/srv.err" 'ended with signal 9; respawning' 10
    for _ in $(seq 100); do
        [ "$(pids_with_arg "$BATS_TEST_TMPDIR/mark.child" | wc -l)" -eq 3 ] && break
        sleep 0.1
    done
    assert_equal "$(pids_with_arg "$BATS_TEST_TMPDIR/mark.child" | wc -l)" 3
    run connect_many "$port" 30 5
    refute_line fail
    assert_equal "$(sort -u <<<"$output" | wc -l)" 2
    kill -0 "$sup"
    refute grep -q 'daemonized' "$BATS_TEST_TMPDIR/srv.err"
}

@test "a stop ends: a worker that ignores TERM gets SIGKILL after KTLSSHIM_STOP_TIMEOUT" {
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_STOP_TIMEOUT=2 "$PY" "$PIDSRV" --port "$port" --ignore-term
    wait_port "$port"
    sup=$(pid_of srv)
    workers=$(children_of "$sup")
    kill -TERM "$sup"
    # Still serving a second after the TERM (ignored), then gone within the
    # timeout plus a margin.
    sleep 1
    kill -0 "$sup"
    wait_gone "$sup" 15
    for w in $workers; do wait_gone "$w" 5; done
    run grep -c 'still running 2 s after the stop signal (KTLSSHIM_STOP_TIMEOUT): sending SIGKILL' \
        "$BATS_TEST_TMPDIR/srv.err"
    assert_output 2
}

@test "KTLSSHIM_STOP_TIMEOUT: a bad value is reported and 90 is used" {
    run env LD_PRELOAD="$PRELOAD" KTLSSHIM_STOP_TIMEOUT=0 /bin/true
    assert_success
    assert_output --regexp 'KTLSSHIM_STOP_TIMEOUT="0" is not valid: expected a whole number of seconds from 1 to 86400; using 90'
}

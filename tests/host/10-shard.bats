#!/usr/bin/env bats
# Socket sharding against real, unmodified servers.

load '../helpers/common'

setup() {
    cd "$BATS_TEST_TMPDIR"
    export KTLSSHIM_LOG=info
}
teardown() { teardown_servers; }

@test "python http.server, N=2: two workers serve 300 requests with no failure, stats sum them" {
    echo hello-shard > index.html
    port=$(free_port)
    start srv env KTLSSHIM_LOG=debug KTLSSHIM_SHARDS=2 KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" \
        "$PY" -m http.server "$port" --bind 127.0.0.1
    wait_port "$port"
    sup=$(pid_of srv)
    # The port answers once one worker listens; the others may still be forking.
    wait_until 30 n_children "$sup" 2
    run children_of "$sup"
    assert_equal "${#lines[@]}" 2
    ok=0
    for i in $(seq 300); do
        body=$(curl -sf --max-time 10 "http://127.0.0.1:$port/index.html") && [ "$body" = hello-shard ] && ok=$((ok+1))
    done
    assert_equal "$ok" 300
    kill -TERM "$sup"
    wait_gone "$sup" 5
    # Each worker took some of them; the supervisor's record sums them
    # (301: wait_port's readiness probe is a connection too).
    run json_get s.jsonl worker connections.accepted
    assert_output 301
    run json_get s.jsonl supervisor connections.accepted
    assert_output 301
    run "$PY" -c "
import json
ws=[json.loads(l) for l in open('s.jsonl') if '\"worker\"' in l]
assert len(ws)==2 and len({w['pid'] for w in ws})==2, ws
assert all(w['connections']['accepted']>0 for w in ws), ws
print('ok')"
    assert_output ok
}

@test "tiny server, N=3: three distinct pids serve, each with its own listener on the same port" {
    port=$(free_port)
    start srv env KTLSSHIM_LOG=debug KTLSSHIM_SHARDS=3 "$TINY" --port "$port"
    wait_port "$port"
    for i in $(seq 60); do ask "$port" info; done > replies
    run sh -c "grep -o '^pid=[0-9]*' replies | sort -u | wc -l"
    assert_output 3
    run sh -c "grep -c 'port=$port .*reuseport=1' replies"
    assert_output 60
    # The kernel sees three listening sockets on the port.
    run sh -c "ss -Hltn 'sport = :$port' | wc -l"
    assert_output 3
}

@test "openssl s_server -WWW, N=2: 200 TLS requests, all bytes intact, both workers serve" {
    www_sharded 200 start srv env KTLSSHIM_LOG=debug KTLSSHIM_SHARDS=2 KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl"
}

@test "nginx (master_process off), N=2: 300 requests, no failure, both workers serve" {
    port=$(free_port)
    mkdir -p www logs
    head -c 5000 /dev/urandom > www/f.bin
    want=$(sha256sum < www/f.bin)
    cat > nginx.conf <<EOF2
daemon off;
master_process off;
pid $BATS_TEST_TMPDIR/nginx.pid;
error_log $BATS_TEST_TMPDIR/logs/error.log;
events { worker_connections 256; }
http {
    access_log off;
$(nginx_temp_paths)
    server { listen 127.0.0.1:$port; root $BATS_TEST_TMPDIR/www; }
}
EOF2
    start srv env KTLSSHIM_LOG=debug KTLSSHIM_SHARDS=2 KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" \
        /usr/sbin/nginx -e "$BATS_TEST_TMPDIR/logs/error.log" -c "$BATS_TEST_TMPDIR/nginx.conf"
    wait_port "$port"
    sup=$(pid_of srv)
    # The port answers once one worker listens; the others may still be forking.
    wait_until 30 n_children "$sup" 2
    run children_of "$sup"
    assert_equal "${#lines[@]}" 2
    ok=0
    for i in $(seq 300); do
        got=$(curl -sf --max-time 10 "http://127.0.0.1:$port/f.bin" | sha256sum) && [ "$got" = "$want" ] && ok=$((ok+1))
    done
    assert_equal "$ok" 300
    kill -TERM "$sup"
    wait_gone "$sup" 5
    wait_status srv
    assert_equal "$status_of" 0
    run "$PY" -c "
import json
ws=[json.loads(l) for l in open('s.jsonl') if '\"worker\"' in l]
sup=[json.loads(l) for l in open('s.jsonl') if '\"supervisor\"' in l][0]
assert len(ws)==2 and all(w['connections']['accepted']>0 for w in ws), ws
assert sup['connections']['accepted']==sum(w['connections']['accepted'] for w in ws)>=300
print('ok')"
    assert_output ok
}

@test "kill -9 of a worker loses no queued connection, and the worker is respawned" {
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" "$TINY" --port "$port"
    wait_port "$port"
    sup=$(pid_of srv)
    wait_until 30 n_children "$sup" 2
    victim=$(children_of "$sup" | head -1)
    # The victim counts something first (its counts must survive SIGKILL).
    victim_served() { ask "$port" info | grep -q "^pid=$victim "; }
    wait_until 60 victim_served
    # Stop the victim so that connections queue on its listener, load, then
    # kill it: its successor must take the queued connections.
    kill -STOP "$victim"
    clients=()
    for i in $(seq 40); do
        (r=$(ask "$port" info) && echo "$r" >> replies.$i) &
        clients+=($!)
    done
    queued_on_victim() { [ "$(ss -Hltn "sport = :$port" | awk '{print $2}' | sort -n | tail -1)" -gt 0 ]; }
    wait_until 30 queued_on_victim
    kill -KILL "$victim"
    for c in "${clients[@]}"; do wait "$c" || true; done
    run sh -c "cat replies.* | grep -c '^pid='"
    assert_output 40
    run children_of "$sup"
    assert_equal "${#lines[@]}" 2
    refute_line "$victim"
    grep -q "worker .* ended with signal 9; respawning" "$BATS_TEST_TMPDIR/srv.err"
    kill -TERM "$sup"; wait_gone "$sup" 5
    run json_get s.jsonl supervisor workers.respawned
    assert_output 1
    # the killed worker's record, written for it, kept what it had counted
    run "$PY" -c "
import json
R = [json.loads(l) for l in open('s.jsonl')]
k = [r for r in R if r['end'] == 'signal 9']
assert len(k) == 1 and k[0]['pid'] == $victim and k[0]['connections']['accepted'] >= 1, R
sup = [r for r in R if r['role'] == 'supervisor'][0]
assert sup['connections']['accepted'] == sum(r['connections']['accepted'] for r in R if r['role'] == 'worker'), R
print('ok')"
    assert_output ok
}

@test "SIGTERM to the supervisor ends every process within seconds, with the program's own status" {
    port=$(free_port)
    start_plain ref "$PY" -m http.server "$port" --bind 127.0.0.1
    wait_port "$port"
    kill -TERM "$(pid_of ref)"
    wait_status ref
    ref_status=$status_of
    [ "$ref_status" -eq 143 ]
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=4 "$PY" -m http.server "$port" --bind 127.0.0.1
    wait_port "$port"
    sup=$(pid_of srv)
    wait_until 30 n_children "$sup" 4
    workers=$(children_of "$sup")
    [ "$(echo "$workers" | wc -l)" -eq 4 ]
    kill -TERM "$sup"
    wait_status srv
    assert_equal "$status_of" "$ref_status"
    for w in $workers; do wait_gone "$w" 5; done
}

# Python's returncode tells death by signal N (-N) from exit(128+N), which
# a shell's `wait` cannot.
@test "SIGTERM, SIGINT, SIGQUIT are forwarded; the supervisor dies of the signal its workers died of" {
    run procs_py <<'PYEOF'
import os, signal, resource
from procs import *
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
    port = free_port()
    p, _ = start([os.environ["TINY"], "--port", str(port)],
                 env={"LD_PRELOAD": os.environ["PRELOAD"], "KTLSSHIM_SHARDS": "2"})
    poll(lambda: info(port), what="the server")
    workers = poll(lambda: len(children(p.pid)) == 2 and children(p.pid), what="2 workers")
    os.kill(p.pid, sig)
    rc = returncode(p)
    gone = poll(lambda: not any(os.path.exists("/proc/%d" % w) for w in workers), what="workers gone")
    print(sig.name, rc)
PYEOF
    assert_success
    assert_output "SIGTERM -15
SIGINT -2
SIGQUIT -3"
}

@test "SIGHUP, SIGUSR1 and SIGUSR2 reach every worker exactly once" {
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 "$TINY" --port "$port" --count-signals
    wait_port "$port"
    sup=$(pid_of srv)
    wait_until 30 n_children "$sup" 2
    kill -HUP "$sup"
    kill -USR1 "$sup"
    kill -USR2 "$sup"
    run procs_py "$port" "$sup" <<'PYEOF'
import sys
from procs import *
port, sup = int(sys.argv[1]), int(sys.argv[2])
workers = children(sup)
assert len(workers) == 2, workers
seen = per_worker(port, workers, lambda r: r["usr2"] == "1" and r["usr1"] == "1" and r["hups"] == "1")
for pid in sorted(seen):
    r = seen[pid]
    print(r["hups"], r["usr1"], r["usr2"], r["int"], r["quit"])
PYEOF
    assert_success
    assert_output "1 1 1 0 0
1 1 1 0 0"
}

@test "a terminal's ^C reaches each worker once: the supervisor does not forward it" {
    run procs_py <<'PYEOF'
import os, signal
from procs import *
port = free_port()
p, master = start([os.environ["TINY"], "--port", str(port), "--count-signals"],
                  env={"LD_PRELOAD": os.environ["PRELOAD"], "KTLSSHIM_SHARDS": "2"}, tty=True)
poll(lambda: info(port), what="the server")
workers = poll(lambda: len(children(p.pid)) == 2 and children(p.pid), what="2 workers")
# Signals do not queue: a forwarded ^C arriving while the terminal's is
# still pending would merge with it. So the supervisor is stopped while the
# workers take the terminal's ^C, and continued after: only then would it
# forward its own copy.
os.kill(p.pid, signal.SIGSTOP)
poll(lambda: open("/proc/%d/stat" % p.pid).read().rsplit(")", 1)[1].split()[0] == "T",
     what="the supervisor stopped")
os.write(master, b"\x03")          # ^C: SIGINT to the terminal's foreground group
seen = per_worker(port, workers, lambda r: r["int"] == "1")
os.kill(p.pid, signal.SIGCONT)
# A USR1 sent after it is forwarded after it (the supervisor takes SIGINT,
# the lower number, first): once every worker has it, a forwarded ^C would
# have been handled too.
os.kill(p.pid, signal.SIGUSR1)
seen = per_worker(port, workers, lambda r: r["usr1"] == "1")
print(sorted(r["int"] for r in seen.values()))
os.kill(p.pid, signal.SIGTERM)
print(returncode(p))
PYEOF
    assert_success
    assert_output "['1', '1']
-15"
}

@test "workers ending differently (one exit 0, one SIGTERM): the supervisor exits 128+15, and says so" {
    port=$(free_port)
    run procs_py "$port" "$BATS_TEST_TMPDIR/s.jsonl" <<'PYEOF'
import json, os, signal, sys
from procs import *
port, stats = int(sys.argv[1]), sys.argv[2]
p, _ = start([os.environ["TINY"], "--port", str(port)],
             env={"LD_PRELOAD": os.environ["PRELOAD"], "KTLSSHIM_SHARDS": "2", "KTLSSHIM_STATS": stats})
poll(lambda: info(port), what="the server")
poll(lambda: len(children(p.pid)) == 2, what="2 workers")
ask(port, "exit 0")
poll(lambda: len(children(p.pid)) == 1, what="one worker left")
os.kill(p.pid, signal.SIGTERM)
print(returncode(p))
R = [json.loads(l) for l in open(stats)]
sup = [r for r in R if r["role"] == "supervisor"]
print(sup[0]["end"], sup[0]["summed_records"], sup[0]["workers"])
print(sorted(r["end"] for r in R if r["role"] == "worker"))
# the documented header of every record
import time
for r in R:
    w = r["role"] == "worker"
    assert r["ktlsshim"] == 1 and abs(r["time"] - time.time()) < 600, r
    assert r["program"] == "tiny_server" and r["shards"] == 2, r
    assert (r["shard"] in (0, 1)) if w else (r["shard"] == -1 and r["pid"] == p.pid), r
assert sorted(r["shard"] for r in R if r["role"] == "worker") == [0, 1]
PYEOF
    assert_success
    assert_output "143
exit 143 2 {'started': 2, 'respawned': 0, 'gave_up': 0, 'reloaded': 0}
['exit 0', 'signal 15']"
    grep -qE "^ktlsshim\[[0-9]+\]: supervisor of 2 workers, exit 143, sum of 2 records: [0-9]+ accepted, no TLS connections; workers started 2, respawned 0, given up 0$" "$BATS_TEST_TMPDIR/srv.err"
}

@test "the supervisor's record sums the records still live at its end (three worker children's) with the reaped workers'" {
    port=$(free_port)
    # worker 0 forks three children, one after the other, that each accept
    # one connection and exit: their records stay in the pool (not reaped
    # by the supervisor), the workers' are retired when they are reaped
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" \
        "$BUILD/tests/cgi_forker" "$port" 0 3 "$BATS_TEST_TMPDIR/done" /bin/true
    wait_until 30 test -e done
    kill -TERM "$(pid_of srv)"
    wait_gone "$(pid_of srv)" 20
    run "$PY" -c "
import json
rs = [json.loads(l) for l in open('s.jsonl')]
kids = [r for r in rs if r['role'] == 'worker_child']
sup = [r for r in rs if r['role'] == 'supervisor'][0]
print(len(kids), sum(r['connections']['accepted'] for r in kids), sup['connections']['accepted'],
      sup['summed_records'], sup['workers']['started'])"
    assert_output "3 3 3 5 2"
}

@test "workers exit when the supervisor dies" {
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 "$TINY" --port "$port"
    wait_port "$port"
    sup=$(pid_of srv)
    wait_until 30 n_children "$sup" 2
    workers=$(children_of "$sup")
    kill -KILL "$sup"
    for w in $workers; do wait_gone "$w" 5; done
}

@test "workers that fail at start: one line, the program started again unsharded, its own status (3) and no restart loop" {
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" "$TINY" --port "$port" --exit-at-start 3
    wait_status srv
    assert_equal "$status_of" 3
    run grep -c "KTLSSHIM_SHARDS=2: not sharding: worker [01]/2 ended with exit 3" "$BATS_TEST_TMPDIR/srv.err"
    assert_output 1
    refute grep -q "respawning in" "$BATS_TEST_TMPDIR/srv.err"
    # the image that replaced the supervisor writes the record, with the
    # fallback named; no supervisor record
    run procs_py "$BATS_TEST_TMPDIR/s.jsonl" <<'PYEOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
print([(r["role"], r["end"], r.get("shard_fallback")) for r in recs if r["role"] != "worker"])
PYEOF
    assert_output "[('process', 'exit 3', 'workers_failed')]"
}

@test "workers exiting 0 are not respawned and the supervisor exits 0" {
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" "$TINY" --port "$port" --exit-at-start 0
    wait_status srv
    assert_equal "$status_of" 0
    refute grep -q respawning "$BATS_TEST_TMPDIR/srv.err"
    # Two workers did start (two records), and none was started again.
    run json_get s.jsonl supervisor workers.started
    assert_output 2
    run json_get s.jsonl supervisor workers.respawned
    assert_output 0
    run sh -c "grep -c '\"role\":\"worker\"' s.jsonl"
    assert_output 2
}

@test "port 0, options and fd flags are the program's in every worker" {
    start srv env KTLSSHIM_SHARDS=2 "$TINY" --port 0 --options
    for i in $(seq 50); do grep -q PORT "$BATS_TEST_TMPDIR/srv.out" && break; sleep 0.1; done
    port=$(awk '/PORT/{print $2; exit}' "$BATS_TEST_TMPDIR/srv.out")
    [ "$port" -gt 0 ]
    # TCP_DEFER_ACCEPT: the reply needs the request before accept.
    for i in $(seq 40); do ask "$port" info; done > replies
    run sh -c "grep -o '^pid=[0-9]*' replies | sort -u | wc -l"
    assert_output 2
    run sh -c "sed 's/pid=[0-9]* //' replies | sort -u"
    assert_output --regexp "^port=$port rcvbuf=131072 nodelay=1 defer=[1-9][0-9]* nonblock=1 cloexec=1 reuseport=1 waitpid=ECHILD hups=0 fd=[0-9]+ int=0 quit=0 usr1=0 usr2=0$"
}

@test "a second socket bound before listen() is replicated; IPv6 works" {
    port=$(free_port); port2=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 "$TINY" --six --port "$port" --second "$port2"
    wait_port "$port" ::1
    # The program listens on its sockets one after the other: the second
    # may follow the first's answer by a moment.
    wait_until 10 n_listening "$port2" 2
    wait_until 10 n_listening "$port" 2
    run sh -c "ss -Hltn 'sport = :$port' | grep -c '\[::1\]'"
    assert_output 2
}

@test "the program's SIGCHLD=SIG_IGN does not blind the supervisor, and waitpid in a worker sees nothing of it" {
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 "$TINY" --port "$port" --ignore-chld
    wait_port "$port"
    sup=$(pid_of srv)
    wait_until 30 n_children "$sup" 2
    victim=$(children_of "$sup" | head -1)
    kill -KILL "$victim"
    respawned() { n_children "$sup" 2 && ! children_of "$sup" | grep -qx "$victim"; }
    wait_until 30 respawned
    run ask "$port" info
    assert_output --partial "waitpid=ECHILD"
}

@test "threads before listen(): exec mode (one line), two workers with their own listeners on the port" {
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 "$TINY" --port "$port" --threads
    wait_port "$port"
    sup=$(pid_of srv)
    wait_until 30 n_children "$sup" 2
    run cat "$BATS_TEST_TMPDIR/srv.err"
    assert_output --regexp "^ktlsshim\[$sup\]: sharding 127.0.0.1:$port over 2 workers in exec mode \(the program has 2 threads at its first listen\(\) \(fork would copy only one\)\)"
    run grep -c . "$BATS_TEST_TMPDIR/srv.err"   # one line, not one per worker
    assert_output 1
    run ask "$port" info
    assert_output --partial "reuseport=1"
    wait_until 30 n_listening "$port" 2
}

@test "exec mode, a respawned worker gets the held listener at its own fd with the flags and options it set" {
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 "$TINY" --port "$port" --threads --options
    wait_port "$port"
    sup=$(pid_of srv)
    wait_until 30 n_children "$sup" 2
    run children_of "$sup"
    kill -KILL "${lines[0]}"
    victim=${lines[0]}
    respawned() { n_children "$sup" 2 && ! children_of "$sup" | grep -qx "$victim"; }
    wait_until 30 respawned
    new=$(children_of "$sup" | grep -vx "${lines[1]}")
    for _ in $(seq 100); do
        r=$(ask "$port" info)
        case "$r" in "pid=$new "*) break ;; esac
    done
    [[ "$r" == "pid=$new "* ]]
    [[ "$r" == *"nodelay=1"* && "$r" != *"defer=0"* && "$r" == *"nonblock=1"* && "$r" == *"cloexec=1"* ]]
    assert_equal "$(ss -Hltn "sport = :$port" | wc -l)" 2
}

@test "a refusal (exec mode cannot shard a port-0 listener) takes back only the SO_REUSEPORT the library set, never the program's own" {
    for own in 0 1; do
        extra=()
        [ $own = 1 ] && extra=(--reuseport)
        start srv$own env KTLSSHIM_SHARDS=2 "$TINY" --port 0 --threads "${extra[@]}"
        f="$BATS_TEST_TMPDIR/srv$own.out"
        wait_until 20 grep -q PORT "$f"
        port=$(awk '/PORT/ { print $2 }' "$f")
        run children_of "$(pid_of srv$own)"
        assert_output ""
        run grep -c "not sharding: the program has 2 threads .*, and exec mode cannot shard a listener bound to port 0" "$BATS_TEST_TMPDIR/srv$own.err"
        assert_output 1
        run ask "$port" info
        assert_output --partial "reuseport=$own"
    done
}

@test "epoll before listen(): exec mode (one line), two workers serve" {
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 "$TINY" --port "$port" --epoll
    wait_port "$port"
    sup=$(pid_of srv)
    wait_until 30 n_children "$sup" 2
    run cat "$BATS_TEST_TMPDIR/srv.err"
    assert_output --regexp "sharding 127.0.0.1:$port over 2 workers in exec mode \(the program made an epoll instance \(fd [0-9]+\) before its first listen\(\)"
    run grep -c . "$BATS_TEST_TMPDIR/srv.err"
    assert_output 1
    pids() { for _ in $(seq 40); do ask "$port" info | sed 's/ .*//'; done | sort -u | wc -l; }
    wait_until 30 test "$(pids)" -eq 2
}

@test "KTLSSHIM_SHARDS=auto makes one worker per online CPU" {
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=auto "$TINY" --port "$port"
    wait_port "$port"
    n=$(nproc)
    [ "$n" -gt 1 ] && wait_until 30 n_children "$(pid_of srv)" "$n"
    run children_of "$(pid_of srv)"
    if [ "$n" -gt 1 ]; then assert_equal "${#lines[@]}" "$n"; else assert_output ""; fi
}

@test "KTLSSHIM_PIN=on: worker i runs on CPU i and gets the connections that CPU receives" {
    [ "$(nproc)" -ge 2 ] || skip "needs 2 CPUs"
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_PIN=on KTLSSHIM_LOG=debug "$TINY" --port "$port"
    wait_port "$port"
    for cpu in 0 1; do
        # On loopback the client's CPU receives the SYN: it picks the worker.
        for i in $(seq 10); do taskset -c "$cpu" "$PY" -c "
import socket
s = socket.create_connection(('127.0.0.1', $port)); s.sendall(b'info\n')
print(s.recv(999).decode().split()[0])"; done | sort -u > served.$cpu
        run cat served.$cpu
        assert_equal "${#lines[@]}" 1
        pid=${output#pid=}
        run grep Cpus_allowed_list "/proc/$pid/status"
        assert_output --regexp ":[[:space:]]+$cpu$"
    done
    ! cmp -s served.0 served.1
}

# activate PORT SCRIPT [ARG...]: a service manager, started as srv: a
# socket listening on PORT at fd 3, LISTEN_FDS=1 and KTLSSHIM_SHARDS=2 in
# the environment, then exec of the Python SCRIPT.
activate() {
    local port=$1
    shift
    start srv "$PY" -c "
import os, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', $port)); s.listen(16)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ.update(LISTEN_FDS='1', KTLSSHIM_SHARDS='2')
os.execv(sys.executable, [sys.executable] + sys.argv[1:])" "$@"
}

@test "a program whose first listen() is on an inherited listener: refused with a line that says so, and it serves" {
    port=$(free_port)
    cat > activated_only.py <<'PYEOF'
import os, socket
s = socket.socket(fileno=3)
s.listen(16)  # the first listen(): on the inherited socket
while True:
    c, _ = s.accept()
    c.sendall(b"pid=%d\n" % os.getpid())
    c.close()
PYEOF
    activate "$port" activated_only.py
    wait_port "$port"
    run "$PY" -c "
import socket
with socket.create_connection(('127.0.0.1', $port), timeout=10) as c:
    print(c.recv(99).decode().strip())"
    assert_output "pid=$(pid_of srv)"
    run grep -c "not sharding: fd 3 was already listening when the program got it (socket activation)" \
        "$BATS_TEST_TMPDIR/srv.err"
    assert_output 1
    run children_of "$(pid_of srv)"
    assert_output ""
}

@test "a listener inherited already listening (socket activation) is not replicated: both workers accept from it" {
    port=$(free_port); port2=$(free_port)
    cat > activated.py <<'PYEOF'
import os, select, socket, sys
# a socket-activated server: fd 3 comes listening from the service manager;
# it also binds a port of its own, whose listen() is the first
inherited = socket.socket(fileno=3)
own = socket.socket()
own.bind(("127.0.0.1", int(sys.argv[1])))
own.listen(16)
while True:
    for s in select.select([inherited, own], [], [])[0]:
        c, _ = s.accept()
        c.sendall(b"pid=%d\n" % os.getpid())
        c.close()
PYEOF
    # the "service manager": a listening socket at fd 3, then exec
    activate "$port" activated.py "$port2"
    wait_port "$port2"
    sup=$(pid_of srv)
    wait_until 30 n_children "$sup" 2
    # the inherited socket stays one socket; the program's own is replicated
    run sh -c "ss -Hltn 'sport = :$port' | wc -l"
    assert_output 1
    run sh -c "ss -Hltn 'sport = :$port2' | wc -l"
    assert_output 2
    # 20 connections, 10 s each at most (a connection nobody accepts fails)
    served() {
        "$PY" - "$port" <<'PYEOF' | sort -u > pids
import socket, sys
for i in range(20):
    try:
        with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10) as c:
            print(c.recv(99).decode().strip())
    except OSError as e:
        print("error", e)
PYEOF
        [ "$(grep -c '^pid=' pids)" -eq 2 ] && ! grep -q '^error' pids
    }
    wait_until 60 served
    run sh -c "sed 's/pid=//' pids | sort -n"
    assert_output "$(children_of "$sup")"
}

@test "respawn backoff doubles on failures in a row and starts again at 0.1 s after a worker ran 10 s" {
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_LOG=debug "$TINY" --port "$port"
    wait_port "$port"
    sup=$(pid_of srv)
    wait_until 30 n_children "$sup" 2
    # kill_one N: kills worker 0's current process, waits for its
    # successor; the Nth "respawning" line is then there
    kill_one() {
        local victim
        victim=$(grep -oE 'worker 0/2 started, pid [0-9]+' "$BATS_TEST_TMPDIR/srv.err" | tail -1 | grep -oE '[0-9]+$')
        kill -KILL "$victim"
        respawned() { n_children "$sup" 2 && ! children_of "$sup" | grep -qx "$victim"; }
        wait_until 30 respawned
        [ "$(grep -c 'respawning in' "$BATS_TEST_TMPDIR/srv.err")" -eq "$1" ]
    }
    kill_one 1
    kill_one 2
    # 10 s of health is the point of this test: time itself, not a state
    sleep 11
    kill_one 3
    run grep -oE 'worker 0/2 \(pid [0-9]+\) ended with signal 9; respawning in [0-9]+ ms' "$BATS_TEST_TMPDIR/srv.err"
    assert_equal "${#lines[@]}" 3
    [[ "${lines[0]}" == *"in 100 ms" ]]
    [[ "${lines[1]}" == *"in 200 ms" ]]
    [[ "${lines[2]}" == *"in 100 ms" ]]
}

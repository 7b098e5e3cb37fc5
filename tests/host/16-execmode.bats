#!/usr/bin/env bats
# Exec mode: programs fork mode refuses (threads, an event loop at their
# first listen()) are sharded by exec'ing a supervisor and fresh workers;
# KTLSSHIM_RELOAD replaces the workers one at a time. Real servers (Python
# asyncio, uvicorn, HAProxy 2.6, redis-server) and real clients.

load '../helpers/common'
load '../helpers/tls'
load '../helpers/bioservers'

AIO="$ROOT/tests/servers/aio_tls_server.py"

setup() {
    cd "$BATS_TEST_TMPDIR"
    export KTLSSHIM_LOG=info
    make_certs
}
teardown() {
    local rc=0
    teardown_servers || rc=$?
    end_test_processes
    local p
    # daemons that rewrite their command line: by the port the test gave them
    if [ -s "$BATS_TEST_TMPDIR/daemon.port" ]; then
        for p in $(ss -Hltnp "sport = :$(cat "$BATS_TEST_TMPDIR/daemon.port")" |
            grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
            kill -KILL "$p" 2>/dev/null || true
        done
    fi
    return $rc
}

# tls_ask PORT LINE: one TLS connection to the asyncio server (5 s bound),
# sends LINE, prints the reply's bytes.
tls_ask() {
    "$PY" - "$@" <<'PYEOF'
import socket, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5))
s.sendall(sys.argv[2].encode() + b"\n")
out = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    out += b
sys.stdout.buffer.write(out)
PYEOF
}

# aio_pids PORT N: the distinct pids that serve N connections, one a line.
aio_pids() {
    "$PY" - "$1" "$2" <<'PYEOF'
import socket, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
seen = set()
for _ in range(int(sys.argv[2])):
    try:
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5))
        s.settimeout(5)
        s.sendall(b"PID\n")
        r = s.recv(200).decode()
        s.close()
        seen.add(r.split()[0][4:])
    except OSError:
        pass
print("\n".join(sorted(seen)))
PYEOF
}

# served_by PORT PID...: every PID serves within 40 connections (sets
# nothing; false if one is missing).
served_by() {
    local port=$1 got; shift
    got=$(aio_pids "$port" 40)
    for p in "$@"; do grep -qx "$p" <<<"$got" || return 1; done
}

# socket inodes of a process's fds
sock_inodes() { ls -l "/proc/$1/fd" 2>/dev/null | grep -o 'socket:\[[0-9]*\]' | sort -u; }

listeners_on() { ss -Hltn "sport = :$1" | wc -l; }

# port_procs PORT: "python N shell M": processes running the server with
# --port PORT as arguments, and shells whose script holds it.
port_procs() {
    PORT="$1" "$PY" -c '
import os
port = os.environ["PORT"].encode()
py = sh = 0
for d in os.listdir("/proc"):
    if not d.isdigit() or int(d) == os.getpid():
        continue
    try:
        with open("/proc/%s/cmdline" % d, "rb") as f:
            c = f.read()
    except OSError:
        continue
    if b"\0--port\0" + port + b"\0" in c:
        py += 1
    elif b"--port " + port + b" " in c:
        sh += 1
print("python %d shell %d" % (py, sh))
'
}

# threaded PID: true when PID runs more than one thread.
threaded() { [ "$(ls "/proc/$1/task" | wc -l)" -gt 1 ]; }

@test "exec mode: an asyncio TLS server is sharded over 2 workers that both serve; bytes hash-checked; a worker killed -9 is replaced on its held listener; TERM ends everything" {
    head -c 300000 /dev/urandom >data.bin
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" "$PY" "$AIO" \
        --port "$port" --cert "$CERTS/ec.pem" --key "$CERTS/ec.key" --file "$BATS_TEST_TMPDIR/data.bin"
    sup=$(pid_of srv)
    wait_for_line srv.err "sharding 127.0.0.1:$port over 2 workers in exec mode \(the program made an epoll instance" 20
    wait_until 30 n_children "$sup" 2
    wait_listen "$port" 30
    run children_of "$sup"
    w0=${lines[0]} w1=${lines[1]}
    # The supervisor is the pid the user started; the workers are fresh
    # copies of the program (its command line), both serving.
    run cat "/proc/$w0/cmdline"
    assert_output --partial "$AIO"
    wait_until 30 served_by "$port" "$w0" "$w1"
    [ "$(tls_ask "$port" FILE | sha256sum | cut -d' ' -f1)" = "$(sha data.bin)" ]
    # The supervisor holds each worker's listener (the same socket).
    comm -12 <(sock_inodes "$sup") <(sock_inodes "$w0") | grep -q socket
    comm -12 <(sock_inodes "$sup") <(sock_inodes "$w1") | grep -q socket
    assert_equal "$(listeners_on "$port")" 2

    kill -KILL "$w0"
    wait_for_line srv.err "worker [01]/2 \(pid $w0\) ended with signal 9; respawning" 20
    for _ in $(seq 300); do
        new=$(children_of "$sup" | grep -vx "$w1" | grep -vx "$w0" || true)
        [ -n "$new" ] && break
        sleep 0.1
    done
    [ -n "$new" ]
    wait_until 30 served_by "$port" "$new" "$w1"
    # Its listener is the one the dead worker had: no third socket.
    comm -12 <(sock_inodes "$sup") <(sock_inodes "$new") | grep -q socket
    assert_equal "$(listeners_on "$port")" 2
    [ "$(tls_ask "$port" FILE | sha256sum | cut -d' ' -f1)" = "$(sha data.bin)" ]

    kill -TERM "$sup"
    wait_gone "$sup" 30
    run pids_with_arg "$BATS_TEST_TMPDIR/"
    assert_output ""
    stats_check s.jsonl 'SUP("workers.started") == 3' 'SUP("workers.respawned") == 1' \
        'SUP("connections.accepted") == S("connections.accepted") > 0' \
        'len([r for r in R if r["role"] == "worker"]) == 3' 'SUP("end") == "exit 0"' \
        'all(r["program"] == "python3" for r in R)'
}

@test "exec mode: the shell of a start script is not multiplied (sh -c 'exec python3 ...' and sh -c 'python3 ...; true')" {
    for form in exec plain; do
        port=$(free_port)
        if [ $form = exec ]; then
            script="exec $PY $AIO --port $port --cert $CERTS/ec.pem --key $CERTS/ec.key"
        else
            script="$PY $AIO --port $port --cert $CERTS/ec.pem --key $CERTS/ec.key; true"
        fi
        start sh$form env KTLSSHIM_SHARDS=2 sh -c "$script"
        shpid=$(pid_of sh$form)
        wait_listen "$port" 30
        if [ $form = exec ]; then
            sup=$shpid # the shell became python, which became the supervisor
        else
            wait_until 10 n_children "$shpid" 1
            sup=$(children_of "$shpid")
            run cat "/proc/$shpid/cmdline"
            assert_output --partial "sh"
        fi
        wait_until 30 n_children "$sup" 2
        run children_of "$sup"
        wait_until 30 served_by "$port" "${lines[0]}" "${lines[1]}"
        # One supervisor and 2 workers; one shell (it waits) or none (it
        # became python): the shell ran once.
        run port_procs "$port"
        if [ $form = exec ]; then
            assert_output "python 3 shell 0"
        else
            assert_output "python 3 shell 1"
        fi
        grep -c 'sharding .* in exec mode' "sh$form.err" | grep -qx 1
        kill -TERM "$sup"
        wait_gone "$sup" 30
    done
}

@test "exec mode: a stop with a worker that ignores TERM ends by KTLSSHIM_STOP_TIMEOUT" {
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_STOP_TIMEOUT=2 "$PY" "$AIO" --port "$port" \
        --cert "$CERTS/ec.pem" --key "$CERTS/ec.key" --ignore-term
    sup=$(pid_of srv)
    wait_until 30 n_children "$sup" 2
    wait_listen "$port" 30
    kill -TERM "$sup"
    wait_for_line srv.err 'still running 2 s after the stop signal \(KTLSSHIM_STOP_TIMEOUT\): sending SIGKILL' 20
    wait_gone "$sup" 20
    run port_procs "$port"
    assert_output "python 0 shell 0"
}

@test "exec mode: TERM while a worker is still starting (before its listen()) reaches it once it listens; every worker and the supervisor exit 0" {
    port=$(free_port)
    # Worker 1 takes 3 s to reach its signal handler and listen(); worker 0
    # listens at once. The epoll instance before listen() makes it exec mode.
    cat >slow_start.py <<'PYEOF'
import os, select, signal, socket, sys, time
ep = select.epoll()
if os.environ.get("KTLSSHIM_WORKER", "").startswith("1/"):
    open("slow.started", "w").close()
    time.sleep(3)
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(16)
s.settimeout(0.1)
while not stop:
    try:
        s.accept()[0].close()
    except (socket.timeout, InterruptedError):
        pass
sys.exit(0)
PYEOF
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" "$PY" slow_start.py "$port"
    sup=$(pid_of srv)
    wait_listen "$port" 30
    wait_file slow.started 30
    kill -TERM "$sup"
    wait_gone "$sup" 30
    run "$PY" -c '
import json, sys
R = [json.loads(l) for l in open(sys.argv[1])]
print(sorted((r["role"], r["end"]) for r in R))' "$BATS_TEST_TMPDIR/s.jsonl"
    assert_output "[('supervisor', 'exit 0'), ('worker', 'exit 0'), ('worker', 'exit 0')]"
    grep -q 'in exec mode' srv.err
}

@test "exec mode refuses a listener bound to port 0 (each worker would get its own port), with one line" {
    run env LD_PRELOAD="$PRELOAD" KTLSSHIM_SHARDS=2 timeout 20 "$PY" -c '
import asyncio, socket
async def main():
    srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    print(len(srv.sockets))
asyncio.run(main())'
    assert_success
    assert_line --index 0 --regexp '^ktlsshim\[[0-9]+\]: KTLSSHIM_SHARDS=2: not sharding: the program made an epoll instance \(fd [0-9]+\) before its first listen\(\); forked workers would share it, and exec mode cannot shard a listener bound to port 0 \(each worker would get a different port\); bind a fixed port to shard it; running unsharded$'
    assert_line --index 1 1
}

@test "KTLSSHIM_RELOAD and KTLSSHIM_GRACEFUL_SIGNAL: bad values get one line each and the safe default" {
    run env LD_PRELOAD="$PRELOAD" KTLSSHIM_RELOAD=SIGTERM KTLSSHIM_GRACEFUL_SIGNAL=KILL true
    assert_success
    assert_line --index 0 --partial ']: KTLSSHIM_RELOAD="SIGTERM" is not valid: expected SIGHUP, SIGUSR1, SIGUSR2 or SIGWINCH; using no rolling restart (the signal is forwarded to the workers)'
    assert_line --index 1 --partial ']: KTLSSHIM_GRACEFUL_SIGNAL="KILL" is not valid: expected SIGTERM, SIGQUIT, SIGINT, SIGHUP, SIGUSR1, SIGUSR2 or SIGWINCH; using SIGTERM'
    assert_equal "${#lines[@]}" 2
    run env LD_PRELOAD="$PRELOAD" KTLSSHIM_RELOAD=HUP KTLSSHIM_GRACEFUL_SIGNAL=SIGQUIT true
    assert_success
    assert_output ""
}

# https_pids PORT N [PATH]: N HTTPS GETs of PATH (default /), each on a new
# connection bounded by 5 s; prints the distinct bodies (servers that answer
# with their pid), one a line, and "fail" for each failure.
https_pids() {
    "$PY" - "$@" <<'PYEOF'
import http.client, ssl, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
path = sys.argv[3] if len(sys.argv) > 3 else "/"
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
seen = set()
for _ in range(n):
    try:
        c = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ctx)
        c.request("GET", path, headers={"Connection": "close"})
        r = c.getresponse()
        seen.add(r.read().decode().strip() if r.status == 200 else "fail")
        c.close()
    except OSError:
        seen.add("fail")
print("\n".join(sorted(seen)))
PYEOF
}

# replace_one SUP: kills one worker of SUP with SIGKILL, waits for its
# successor and sets OLD, NEW and KEPT (the other worker); the successor's
# listener is one the supervisor holds, and no new listener was made.
replace_one() {
    local sup=$1
    run children_of "$sup"
    OLD=${lines[0]} KEPT=${lines[1]} NEW=
    kill -KILL "$OLD"
    for _ in $(seq 300); do
        NEW=$(children_of "$sup" | grep -vx "$KEPT" | grep -vx "$OLD" || true)
        [ -n "$NEW" ] && break
        sleep 0.1
    done
    [ -n "$NEW" ]
}

# holds_listener_of SUP PID: the supervisor holds a socket PID has open.
holds_listener_of() { comm -12 <(sock_inodes "$1") <(sock_inodes "$2") | grep -q socket; }

@test "exec mode: uvicorn (ASGI app returning its pid) over 2 workers, both serve; bytes hash-checked; a killed worker's successor serves; TERM ends everything" {
    head -c 100000 /dev/urandom | base64 -w0 >blob.txt
    cat >app.py <<'PYEOF'
import os
BLOB = open(os.path.join(os.path.dirname(__file__), "blob.txt"), "rb").read()
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = BLOB if scope["path"] == "/blob" else ("%d\n" % os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
PYEOF
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 "$PY" -m uvicorn --app-dir "$BATS_TEST_TMPDIR" app:app \
        --host 127.0.0.1 --port "$port" --log-level warning \
        --ssl-certfile "$CERTS/ec.pem" --ssl-keyfile "$CERTS/ec.key"
    sup=$(pid_of srv)
    wait_for_line srv.err "sharding 127.0.0.1:$port over 2 workers in exec mode" 30
    wait_until 30 n_children "$sup" 2
    wait_listen "$port" 30
    run children_of "$sup"
    want=$(printf '%s\n' "${lines[@]}")
    wait_until 30 test "$(https_pids "$port" 40)" = "$want"
    [ "$(curl -sk --max-time 10 "https://127.0.0.1:$port/blob" | sha256sum)" = "$(sha256sum <blob.txt)" ]
    replace_one "$sup"
    wait_until 30 holds_listener_of "$sup" "$NEW"
    assert_equal "$(listeners_on "$port")" 2
    want=$(printf '%s\n' "$NEW" "$KEPT" | sort -n)
    wait_until 30 test "$(https_pids "$port" 40)" = "$want"
    kill -TERM "$sup"
    wait_gone "$sup" 30
    run pids_with_arg "$BATS_TEST_TMPDIR"
    assert_output ""
}

@test "exec mode: HAProxy 2.6 with its default threads over 2 workers, both accept; bytes hash-checked; a killed worker's successor accepts" {
    make_files 200000
    bport=$(free_port)
    plain_backend "$bport"
    port=$(free_port)
    mkdir -p hap
    cat "$CERTS/ec.pem" "$CERTS/ec.key" >hap/crt.pem
    cat >hap/haproxy.cfg <<EOF2
defaults
    mode http
    timeout connect 10s
    timeout client 30s
    timeout server 30s
frontend tls
    bind 127.0.0.1:$port ssl crt $BATS_TEST_TMPDIR/hap/crt.pem
    http-request return status 200 content-type text/plain lf-string "%pid\n" if { path /pid }
    default_backend plain
backend plain
    server s1 127.0.0.1:$bport
EOF2
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" \
        haproxy -db -f "$BATS_TEST_TMPDIR/hap/haproxy.cfg"
    sup=$(pid_of srv)
    wait_for_line srv.err "sharding 127.0.0.1:$port over 2 workers in exec mode \(the program (has [0-9]+ threads|made an epoll)" 30
    wait_until 30 n_children "$sup" 2
    wait_listen "$port" 30
    wait_listen "$bport" 30
    # HAProxy runs its default threads in each worker (they start after
    # its listeners: wait for them).
    run children_of "$sup"
    [ "$(nproc)" -eq 1 ] || wait_until 30 threaded "${lines[0]}"
    want=$(printf '%s\n' "${lines[@]}")
    wait_until 30 test "$(https_pids "$port" 40 /pid)" = "$want"
    [ "$(curl -sk --max-time 10 "https://127.0.0.1:$port/s200000" | sha256sum)" = "$(sha256sum <"$WWW/s200000")" ]
    replace_one "$sup"
    wait_until 30 holds_listener_of "$sup" "$NEW"
    assert_equal "$(listeners_on "$port")" 2
    want=$(printf '%s\n' "$NEW" "$KEPT" | sort -n)
    wait_until 30 test "$(https_pids "$port" 40 /pid)" = "$want"
    # HAProxy's soft stop (USR1, forwarded): each worker writes its record.
    kill -USR1 "$sup"
    wait_gone "$sup" 30
    stats_check s.jsonl 'len([r for r in R if r["role"] == "worker" and r["connections"]["accepted"] > 0]) >= 2' \
        'len(set(r["pid"] for r in R if r["role"] == "worker" and r["connections"]["tls"] > 0)) >= 2' \
        'SUP("connections.accepted") == S("connections.accepted")'
    run pids_with_arg "$BATS_TEST_TMPDIR/hap"
    assert_output ""
}

@test "exec mode: redis-server --tls-port over 2 workers, both serve (INFO's process_id); bytes echoed intact; a killed worker's successor serves" {
    command -v redis-cli >/dev/null || skip "no redis-cli (redis-tools)"
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 redis-server --port 0 --tls-port "$port" \
        --tls-cert-file "$CERTS/ec.pem" --tls-key-file "$CERTS/ec.key" \
        --tls-ca-cert-file "$CERTS/ec.pem" --tls-auth-clients no \
        --save '' --appendonly no --dir "$BATS_TEST_TMPDIR"
    sup=$(pid_of srv)
    wait_for_line srv.err "sharding .*:$port over 2 workers in exec mode" 30
    wait_until 30 n_children "$sup" 2
    wait_listen "$port" 30
    rpids() {
        for _ in $(seq 40); do
            timeout 5 redis-cli --tls --insecure -p "$port" INFO server | sed -n 's/^process_id:\([0-9]*\).*/\1/p'
        done | sort -un
    }
    run children_of "$sup"
    want=$(printf '%s\n' "${lines[@]}")
    wait_until 60 test "$(rpids)" = "$want"
    head -c 30000 /dev/urandom | base64 -w0 >blob.txt
    [ "$(timeout 10 redis-cli --tls --insecure -p "$port" -x ECHO <blob.txt | sha256sum)" = "$( (cat blob.txt; echo) | sha256sum)" ]
    replace_one "$sup"
    wait_until 30 holds_listener_of "$sup" "$NEW"
    want=$(printf '%s\n' "$NEW" "$KEPT" | sort -n)
    wait_until 60 test "$(rpids)" = "$want"
    kill -TERM "$sup"
    wait_gone "$sup" 30
    run pids_with_arg "$BATS_TEST_TMPDIR"
    assert_output ""
}

@test "KTLSSHIM_RELOAD=SIGHUP: a rolling restart under load fails 0 requests, changes every worker's pid, and the new workers serve the changed file" {
    # A known defect, open: on a loaded machine a request now and then hangs
    # (no ServerHello, or no answer, for 20 s) across the restart of this
    # asyncio server: 1 of 8 runs beside a full test run, with 1003f48's
    # library as with 05e7e86's (docs/testing.md, "Known defects"). Run it
    # by hand (outside CI) until it is fixed.
    if [ "${CI:-}" = true ]; then
        skip "known defect under load: a request hangs across the rolling restart (docs/testing.md)"
    fi
    echo v1 >conf.txt
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_RELOAD=SIGHUP KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" \
        "$PY" "$AIO" --port "$port" --cert "$CERTS/ec.pem" --key "$CERTS/ec.key" \
        --file "$BATS_TEST_TMPDIR/conf.txt"
    sup=$(pid_of srv)
    wait_for_line srv.err "sharding 127.0.0.1:$port over 2 workers in exec mode \(the program made an epoll" 30
    wait_until 30 n_children "$sup" 2
    wait_listen "$port" 30
    run children_of "$sup"
    old0=${lines[0]} old1=${lines[1]}
    wait_until 30 served_by "$port" "$old0" "$old1"
    # Two clients loop until told to stop, each request bounded by 20 s (a
    # request queued while the new worker starts waits for its event loop:
    # 5 s was too short on a machine also running the VM suite, 2026-12-06).
    cat >load.py <<'PYEOF'
import os, socket, ssl, sys, threading
port = int(sys.argv[1])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
ok, fail, seen, lock = [0], [0], set(), threading.Lock()
def loop():
    while not os.path.exists(sys.argv[2]):
        try:
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=20))
            s.settimeout(20)
            s.sendall(b"PID\n")
            r = b""
            while True:
                b = s.recv(4096)
                if not b:
                    break
                r += b
            s.close()
            f = r.decode().split()
            with lock:
                if len(f) == 3 and f[0].startswith("pid="):
                    ok[0] += 1
                    seen.add((f[0][4:], f[2][5:]))
                else:
                    fail[0] += 1
        except Exception as e:
            with lock:
                fail[0] += 1
            print("fail:", repr(e), file=sys.stderr)
        with lock:
            open(sys.argv[3], "w").write("%d\n" % ok[0])
ts = [threading.Thread(target=loop) for _ in range(2)]
for t in ts: t.start()
for t in ts: t.join()
print("ok", ok[0], "fail", fail[0])
for p, d in sorted(seen):
    print(p, d)
PYEOF
    # (its own session: teardown ends it if the test fails)
    start_plain load "$PY" load.py "$port" "$BATS_TEST_TMPDIR/stop" "$BATS_TEST_TMPDIR/progress"
    progress_at_least() { [ "$(cat progress 2>/dev/null || echo 0)" -ge "$1" ]; }
    wait_until 30 progress_at_least 20
    echo v2 >conf.txt
    kill -HUP "$sup"
    wait_for_line srv.err 'KTLSSHIM_RELOAD: rolling restart done, 2 workers replaced' 90
    n=$(cat progress)
    wait_until 30 progress_at_least $((n + 20))
    touch stop
    wait_status load
    cat load.err >&2
    run grep -c '' load.err
    assert_output 0
    run head -1 load.out
    assert_output --regexp '^ok [0-9]+ fail 0$'
    run children_of "$sup"
    new0=${lines[0]} new1=${lines[1]}
    for p in "$new0" "$new1"; do
        [ "$p" != "$old0" ] && [ "$p" != "$old1" ]
        # the new workers read the changed file when they started
        grep -qx "$p $(sha256sum <conf.txt | cut -d' ' -f1)" load.out
    done
    grep -qx "$old0 $(echo v1 | sha256sum | cut -d' ' -f1)" load.out
    kill -TERM "$sup"
    wait_gone "$sup" 30
    grep -Eq "^ktlsshim\[$sup\]: supervisor of 2 workers, .*, replaced by a rolling restart 2$" srv.err
    stats_check s.jsonl 'SUP("workers.reloaded") == 2' 'SUP("workers.started") == 4' \
        'SUP("workers.respawned") == 0'
}

@test "exec mode: redis-server --daemonize yes is not sharded: one daemon, named by its pid file, and TERM to it leaves nothing" {
    port=$(free_port)
    echo "$port" >daemon.port
    run timeout 60 env LD_PRELOAD="$PRELOAD" KTLSSHIM_SHARDS=2 KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" \
        redis-server --bind 127.0.0.1 --port "$port" --daemonize yes --pidfile "$BATS_TEST_TMPDIR/r.pid" --logfile "$BATS_TEST_TMPDIR/r.log" \
        --save '' --appendonly no --dir "$BATS_TEST_TMPDIR"
    assert_success
    # The library did shard it at first: a worker's record (2 shards) ends
    # with exit 0, the daemonizing parent's exit. The library's lines are
    # not seen here: the daemon's stderr is /dev/null.
    worker_record() {
        "$PY" -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]
sys.exit(0 if any(x["role"] == "worker" and x["shards"] == 2 and x["end"] == "exit 0" for x in r) else 1)' \
            "$BATS_TEST_TMPDIR/s.jsonl"
    }
    wait_until 30 worker_record
    wait_listen "$port" 30
    wait_until 30 test -s r.pid
    # The group that daemonized in its workers is gone; one unsharded daemon
    # serves, and it is the one the pid file names.
    one_listener() { [ "$(listeners_on "$port")" -eq 1 ]; }
    wait_until 30 one_listener
    pid=$(cat r.pid)
    named() { [ "$(timeout 5 redis-cli -p "$port" INFO server | sed -n 's/^process_id:\([0-9]*\).*/\1/p')" = "$(cat r.pid)" ]; }
    wait_until 30 named
    pid=$(cat r.pid)
    run pgrep -P "$pid"
    assert_output ""
    kill -TERM "$pid"
    wait_gone "$pid" 30
    gone() { [ "$(listeners_on "$port")" -eq 0 ]; }
    wait_until 30 gone
}

@test "KTLSSHIM_RELOAD: a new worker that fails to start leaves the old ones serving, and the rolling restart stops (one line)" {
    echo v1 >conf.txt
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_RELOAD=USR2 KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" \
        "$PY" "$AIO" --port "$port" --cert "$CERTS/ec.pem" --key "$CERTS/ec.key" \
        --file "$BATS_TEST_TMPDIR/conf.txt"
    sup=$(pid_of srv)
    wait_until 30 n_children "$sup" 2
    wait_listen "$port" 30
    run children_of "$sup"
    old0=${lines[0]} old1=${lines[1]}
    wait_until 30 served_by "$port" "$old0" "$old1"
    echo "exit 3" >conf.txt # the new configuration is broken
    kill -USR2 "$sup"
    wait_for_line srv.err "KTLSSHIM_RELOAD: the new worker 0/2 \(pid [0-9]+\) ended with exit 3 before it served; the old one \(pid ($old0|$old1)\) keeps serving; rolling restart stopped" 60
    run children_of "$sup"
    assert_equal "${lines[*]}" "$old0 $old1"
    served_by "$port" "$old0" "$old1"
    kill -TERM "$sup"
    wait_gone "$sup" 30
    stats_check s.jsonl 'SUP("workers.reloaded") == 0' 'SUP("workers.started") == 3' \
        'SUP("workers.respawned") == 0'
}

@test "exec mode refuses a program that changed its user before listen() (one line), and it runs unsharded" {
    [ "$(id -u)" = 0 ] || skip "needs root to change user"
    port=$(free_port)
    run env LD_PRELOAD="$PRELOAD" KTLSSHIM_SHARDS=2 timeout 20 "$PY" -c '
import asyncio, os, sys
os.setegid(65534); os.seteuid(65534)
async def main():
    srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", int(sys.argv[1]))
    print("listening")
asyncio.run(main())' "$port"
    assert_success
    assert_line --index 0 --regexp '^ktlsshim\[[0-9]+\]: KTLSSHIM_SHARDS=2: not sharding: the program made an epoll instance .*, and the program changed its user or group before its first listen\(\): exec mode would start its workers without the privileges it started with; running unsharded$'
    assert_line --index 1 "listening"
    assert_equal "${#lines[@]}" 2
}

@test "nginx (master and a worker, daemon off), KTLSSHIM_RELOAD=SIGHUP, KTLSSHIM_GRACEFUL_SIGNAL=SIGQUIT: a rolling restart under load fails 0 requests and the new masters serve the changed file" {
    port=$(free_port)
    ng="$BATS_TEST_TMPDIR/ng"
    mkdir -p "$ng/logs" "$ng/tmp" "$ng/www"
    echo v1 >"$ng/www/index.html"
    # nginx's worker runs as nobody: it must reach the files
    chmod 711 "$BATS_TEST_TMPDIR" "$BATS_RUN_TMPDIR" "$BATS_RUN_TMPDIR/test" 2>/dev/null || true
    chmod -R a+rX "$ng"
    cat >"$ng/nginx.conf" <<EOF2
daemon off;
master_process on;
worker_processes 1;
error_log $ng/logs/error.log info;
pid $ng/logs/nginx.pid;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $ng/tmp/cb; proxy_temp_path $ng/tmp/p; fastcgi_temp_path $ng/tmp/f;
    uwsgi_temp_path $ng/tmp/u; scgi_temp_path $ng/tmp/s;
    server {
        listen 127.0.0.1:$port ssl;
        ssl_certificate $CERTS/ec.pem; ssl_certificate_key $CERTS/ec.key;
        root $ng/www;
    }
}
EOF2
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_RELOAD=SIGHUP KTLSSHIM_GRACEFUL_SIGNAL=SIGQUIT \
        nginx -p "$ng" -c "$ng/nginx.conf"
    sup=$(pid_of srv)
    wait_until 30 n_children "$sup" 2
    wait_listen "$port" 30
    run children_of "$sup"
    old="${lines[*]}"
    # one client loops until told to stop, each request bounded by 5 s
    start_plain load sh -c "while [ ! -e stop ]; do curl -sk --max-time 5 https://127.0.0.1:$port/ || echo FAIL; done"
    lines_of() { [ "$(grep -c "$1" load.out)" -ge "$2" ]; }
    wait_until 30 lines_of '^v1$' 20
    echo v2 >"$ng/www/index.html.new"
    chmod a+r "$ng/www/index.html.new"
    mv "$ng/www/index.html.new" "$ng/www/index.html"
    kill -HUP "$sup"
    wait_for_line srv.err 'KTLSSHIM_RELOAD: rolling restart done, 2 workers replaced' 90
    n=$(grep -c '^v2$' load.out || true)
    wait_until 30 lines_of '^v2$' $((n + 20))
    touch stop
    wait_status load
    run grep -vc '^v[12]$' load.out
    assert_output 0
    run children_of "$sup"
    for p in "${lines[@]}"; do
        [[ " $old " != *" $p "* ]]
        # a new master, with its own worker
        grep -q '^nginx: master process' "/proc/$p/cmdline"
        n_children "$p" 1
    done
    assert_equal "${#lines[@]}" 2
    # the last requests were all served by new masters, which read the new file
    run sh -c "tail -5 load.out | sort -u"
    assert_output v2
    # the stop ends everything
    kill -TERM "$sup"
    wait_gone "$sup" 30
    run pids_with_arg "$ng/nginx.conf"
    assert_output ''
}

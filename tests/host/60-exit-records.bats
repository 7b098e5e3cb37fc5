#!/usr/bin/env bats
# Every process the library acted in leaves its record, however it ends
# (exit, a signal left at its default action, _exit, exec), wherever it
# dropped its privileges to; the program cannot tell its signals were
# caught; counts are exact (TCP only, forks, recycled records).

load '../helpers/common'

setup() {
    cd "$BATS_TEST_TMPDIR"
    export KTLSSHIM_LOG=info
}
teardown() { teardown_servers; }

# stop_run MODE SIG NCONN TLS -- CMD...: runs CMD (with the library when MODE
# is lib, KTLSSHIM_STATS=$PWD/s.jsonl), waits for its port (one probe
# connection), makes NCONN requests (https when TLS=1), sends SIG and prints
# the process's pid and its returncode as Python's subprocess sees it
# (negative: killed by that signal).
stop_run() {
    local mode="$1" sig="$2" n="$3" tls="$4"; shift 5
    "$PY" - "$mode" "$sig" "$n" "$tls" "$LIB_PRELOAD" "$PORT" "$@" <<'PYEOF'
import os, signal, socket, subprocess, sys, time
mode, sig, n, tls, preload, port = sys.argv[1:7]
cmd = sys.argv[7:]
env = dict(os.environ)
if mode == "lib":
    env["LD_PRELOAD"] = preload
    env["KTLSSHIM_STATS"] = os.path.join(os.getcwd(), "s.jsonl")
p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(mode + ".err", "ab"),
                     start_new_session=True)
for _ in range(200):
    try:
        socket.create_connection(("127.0.0.1", int(port)), timeout=1).close()
        break
    except OSError:
        time.sleep(0.05)
scheme = "https" if tls == "1" else "http"
for _ in range(int(n)):
    r = subprocess.run(["curl", "-skf", "--max-time", "10", "-o", "/dev/null",
                        f"{scheme}://127.0.0.1:{port}/f.txt"])
    assert r.returncode == 0, r
p.send_signal(getattr(signal, "SIG" + sig))
try:
    rc = p.wait(timeout=20)
except subprocess.TimeoutExpired:
    p.kill()
    rc = "hang"
print(p.pid, rc)
PYEOF
}

# record_of PID: the JSON record(s) of PID in s.jsonl, one per line.
record_of() { grep "\"pid\":$1," s.jsonl || true; }

# field JSON PATH
field() {
    "$PY" -c "import json,sys; v=json.loads(sys.argv[1])
for k in sys.argv[2].split('.'): v=v[k]
print(v)" "$1" "$2"
}

check_stops() {
    # $1 server label, rest: command; TLS in $TLS
    local sig plain lib pid rc rec want_end
    for sig in TERM INT HUP; do
        PORT=$(free_port)
        read -r _ plain < <(stop_run plain "$sig" 3 "$TLS" -- $(eval echo "$SERVER"))
        PORT=$(free_port)
        read -r pid rc < <(stop_run lib "$sig" 3 "$TLS" -- $(eval echo "$SERVER"))
        echo "# $sig: plain $plain, with the library $rc" >&3
        assert_equal "$rc" "$plain"
        if [ "$rc" -lt 0 ]; then want_end="signal $((-rc))"; else want_end="exit $rc"; fi
        rec=$(record_of "$pid")
        assert_equal "$(echo "$rec" | grep -c .)" 1
        assert_equal "$(field "$rec" end)" "$want_end"
        assert_equal "$(field "$rec" connections.accepted)" 4   # 3 + the probe
        assert_equal "$(field "$rec" connections.tls)" "$((TLS * 3))"
    done
}

@test "python http.server stopped with TERM, INT, HUP: a record with its counts, the same exit status" {
    LIB_PRELOAD="$PRELOAD"
    echo hello > f.txt
    TLS=0 SERVER='$PY -m http.server $PORT --bind 127.0.0.1'
    check_stops
}

@test "openssl s_server stopped with TERM, INT, HUP: a record with its counts, the same exit status" {
    LIB_PRELOAD="$PRELOAD"
    make_certs
    echo hello > f.txt
    TLS=1 SERVER='openssl s_server -WWW -quiet -accept 127.0.0.1:$PORT -cert $CERTS/ec.pem -key $CERTS/ec.key'
    check_stops
}

@test "no handler and no line where the library has nothing to write (plain TCP, no KTLSSHIM_STATS)" {
    for mode in plain lib; do
        port=$(free_port)
        if [ $mode = lib ]; then
            start $mode "$PY" -m http.server "$port" --bind 127.0.0.1
        else
            start_plain $mode "$PY" -m http.server "$port" --bind 127.0.0.1
        fi
        wait_port "$port"
        curl -sf -o /dev/null "http://127.0.0.1:$port/"
        # the signals the library would catch (ASan has handlers of its own)
        "$PY" -c "
import signal, sys
cgt = int(open('/proc/$(pid_of $mode)/status').read().split('SigCgt:')[1].split()[0], 16)
ours = ['SIGHUP','SIGINT','SIGQUIT','SIGTERM','SIGUSR1','SIGUSR2','SIGALRM','SIGPIPE','SIGXCPU','SIGXFSZ']
print([n for n in ours if cgt & (1 << (getattr(signal, n) - 1))])" > $mode.cgt
        kill -TERM "$(pid_of $mode)"
        wait_gone "$(pid_of $mode)" 10
    done
    run cat lib.cgt
    assert_output "$(cat plain.cgt)"
    run grep -c ktlsshim "$BATS_TEST_TMPDIR/lib.err"
    assert_output 0
}

@test "privilege drop: nginx workers as nobody leave their records in a root-owned stats file" {
    make_certs
    port=$(free_port)
    mkdir -p logs
    cat > nginx.conf <<EOF2
daemon off;
master_process on;
user nobody nogroup;
worker_processes 2;
pid $BATS_TEST_TMPDIR/nginx.pid;
error_log $BATS_TEST_TMPDIR/logs/error.log;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $BATS_TEST_TMPDIR/logs/body;
    server {
        listen 127.0.0.1:$port ssl;
        ssl_certificate $CERTS/ec.pem; ssl_certificate_key $CERTS/ec.key;
        location / { return 200 "hi\n"; }
    }
}
EOF2
    chmod 700 "$BATS_TEST_TMPDIR"   # nobody can neither reach nor reopen the file
    start srv env KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" \
        /usr/sbin/nginx -e "$BATS_TEST_TMPDIR/logs/error.log" -c "$BATS_TEST_TMPDIR/nginx.conf"
    wait_port "$port"
    # A worker just forked is root for a moment, until nginx drops privileges.
    workers_nobody() {
        local w ws
        ws=$(children_of "$(pid_of srv)")
        [ "$(wc -w <<<"$ws")" -eq 2 ] || return 1
        for w in $ws; do [ "$(ps -o user= -p "$w" | tr -d ' ')" = nobody ] || return 1; done
    }
    wait_until 10 workers_nobody
    workers=$(children_of "$(pid_of srv)")
    for i in $(seq 10); do
        run curl -skf --max-time 10 "https://127.0.0.1:$port/"
        assert_output hi
    done
    kill -TERM "$(pid_of srv)"
    wait_gone "$(pid_of srv)" 10
    assert_equal "$(stat -c %U s.jsonl)" root
    mode=$(stat -c %a s.jsonl)
    [ $((0$mode & 0133)) -eq 0 ] || { echo "mode $mode"; false; }
    run json_get s.jsonl process connections.tls
    assert_output 10
    run json_get s.jsonl process connections.accepted
    assert_output 11   # and the probe
    # every record is a worker's (the master did nothing to count)
    for p in $(grep -o '"pid":[0-9]*' s.jsonl | cut -d: -f2); do
        echo "$workers" | grep -qx "$p"
    done
    run grep -c 'cannot open KTLSSHIM_STATS' "$BATS_TEST_TMPDIR/srv.err"
    assert_output 0
}

@test "privilege drop: a program that calls setuid() after listen() and dies of TERM leaves its record" {
    port=$(free_port)
    chmod 700 "$BATS_TEST_TMPDIR"
    start srv env KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" "$PY" -c "
import os, socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', $port)); s.listen(16)
os.setgid(65534); os.setuid(65534)
while True:
    c, _ = s.accept(); c.close()"
    wait_port "$port"
    for i in 1 2 3; do "$PY" -c "import socket; socket.create_connection(('127.0.0.1',$port)).close()"; done
    assert_equal "$(ps -o user= -p "$(pid_of srv)")" nobody
    kill -TERM "$(pid_of srv)"
    wait_gone "$(pid_of srv)" 10
    rec=$(record_of "$(pid_of srv)")
    assert_equal "$(field "$rec" end)" "signal 15"
    assert_equal "$(field "$rec" connections.accepted)" 4
    assert_equal "$(stat -c %U s.jsonl)" root
}

@test "h2o (threads, workers as nobody, an AF_UNIX privsep socket, ends with _exit from a thread): its record and exit line, TCP counted only" {
    make_certs
    port=$(free_port)
    cat > h2o.conf <<EOF2
user: nobody
num-threads: 2
listen:
  host: 127.0.0.1
  port: $port
  ssl:
    certificate-file: $CERTS/ec.pem
    key-file: $CERTS/ec.key
hosts:
  default:
    paths:
      /:
        status: ON
EOF2
    chmod 700 "$BATS_TEST_TMPDIR"
    start srv env KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" h2o -c "$BATS_TEST_TMPDIR/h2o.conf"
    wait_port "$port"
    for i in $(seq 20); do curl -skf --max-time 10 -o /dev/null "https://127.0.0.1:$port/"; done
    kill -TERM "$(pid_of srv)"
    wait_status srv
    assert_equal "$status_of" 0
    rec=$(record_of "$(pid_of srv)")
    assert_equal "$(field "$rec" end)" "exit 0"
    assert_equal "$(field "$rec" connections.accepted)" 21   # and the probe; not its AF_UNIX ones
    assert_equal "$(field "$rec" connections.tls)" 20
    run grep -c "ktlsshim\[$(pid_of srv)\]: exit 0: 21 accepted, 20 TLS" srv.err
    assert_output 1
}

@test "threads that end the process at once (three _exit, one exit, as h2o's threads do): one whole record and one exit line, 40 times of 40" {
    "$PY" - "$PRELOAD" "$TINY" <<'PYEOF'
import os, socket, subprocess, sys
preload, tiny = sys.argv[1:3]
env = dict(os.environ, LD_PRELOAD=preload, KTLSSHIM_STATS=os.path.abspath("s.jsonl"))
bad = []
for i in range(40):
    err = "race%d.err" % i
    p = subprocess.Popen([tiny, "--port", "0"], env=env, stdout=subprocess.PIPE,
                         stderr=open(err, "wb"), start_new_session=True)
    port = int(p.stdout.readline().split()[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"race 3\n")
        c.settimeout(10)
        c.recv(1)
    rc = p.wait(timeout=30)
    recs = [l for l in open("s.jsonl") if '"pid":%d,' % p.pid in l]
    lines = [l for l in open(err) if l.startswith("ktlsshim[%d]: exit 3: 1 accepted" % p.pid)]
    if rc != 3 or len(recs) != 1 or '"end":"exit 3"' not in recs[0] or len(lines) != 1:
        bad.append((i, rc, len(recs), len(lines)))
print("bad (run, returncode, records, exit lines):", bad)
sys.exit(1 if bad else 0)
PYEOF
}

@test "the stats fd: high, close-on-exec, and a program that closes it and reuses the number gets its own file untouched" {
    port=$(free_port)
    start srv env KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" "$PY" -c "
import os, socket, sys
fds = sorted(int(f) for f in os.listdir('/proc/self/fd'))
ours = [f for f in fds if os.path.realpath('/proc/self/fd/%d' % f) == '$BATS_TEST_TMPDIR/s.jsonl']
import fcntl
print('fd', ours[0], 'cloexec', bool(fcntl.fcntl(ours[0], fcntl.F_GETFD) & fcntl.FD_CLOEXEC), flush=True)
os.close(ours[0])
mine = os.open('$BATS_TEST_TMPDIR/mine.txt', os.O_WRONLY | os.O_CREAT, 0o644)
os.dup2(mine, ours[0]); os.close(mine)
s = socket.socket(); s.bind(('127.0.0.1', $port)); s.listen(4)
c, _ = s.accept(); c.close()
os.write(ours[0], b'program\n')
sys.exit(5)"
    wait_port "$port"
    wait_gone "$(pid_of srv)" 10
    run cat srv.out
    assert_output --regexp '^fd (9[0-9][0-9]) cloexec True$'
    run cat mine.txt
    assert_output program
    rec=$(record_of "$(pid_of srv)")
    assert_equal "$(field "$rec" end)" "exit 5"
    assert_equal "$(field "$rec" connections.accepted)" 1
}

@test "signal dispositions: the program sees exactly what it set, before and after the library catches, and its handler runs" {
    cat > sig.py <<'EOF2'
import ctypes, os, signal, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
class SA(ctypes.Structure):
    _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_uint64 * 16),
                ("flags", ctypes.c_int), ("restorer", ctypes.c_void_p)]
def view(sig):
    old = SA()
    assert libc.sigaction(sig, None, ctypes.byref(old)) == 0
    return old
def show(label, sig, pyh=None):
    v = view(sig)
    h = {None: "SIG_DFL", 0: "SIG_DFL", 1: "SIG_IGN"}.get(v.handler, "handler")
    if pyh is not None and v.handler == pyh: h = "python's handler"
    print(label, signal.Signals(sig).name, h, hex(v.flags), hex(v.mask[0]), flush=True)
for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2): show("start", s)
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", int(sys.argv[1]))); ls.listen(4)
c, _ = ls.accept(); c.close()           # now active: the library has work to record
cgt = int(open("/proc/self/status").read().split("SigCgt:")[1].split()[0], 16)
print("caught by someone:", bool(cgt & (1 << (signal.SIGTERM - 1))), file=sys.stderr)
for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2): show("active", s)
# its own handler, with its own flags and mask, through sigaction()
signal.signal(signal.SIGTERM, lambda *a: (print("got TERM", flush=True), os._exit(7)))
pyh = view(signal.SIGTERM).handler
new = SA(); new.handler = pyh; new.flags = 0x10000000 | 0x40000000 | 0x08000000  # RESTART|NODEFER|ONSTACK
new.mask[0] = 1 << (signal.SIGUSR1 - 1)
old = SA()
assert libc.sigaction(signal.SIGTERM, ctypes.byref(new), ctypes.byref(old)) == 0
print("old", "python's handler" if old.handler == pyh else old.handler, hex(old.flags), flush=True)
show("own", signal.SIGTERM, pyh)
# SIGHUP: back to the default with signal(), with sigaction flags of its own
signal.signal(signal.SIGHUP, signal.SIG_IGN); show("ign", signal.SIGHUP)
libc.signal(signal.SIGHUP, None); show("dfl again", signal.SIGHUP)
d = SA(); d.flags = 0x10000000
assert libc.sigaction(signal.SIGUSR2, ctypes.byref(d), None) == 0
show("dfl+restart", signal.SIGUSR2)
print("ready", flush=True)
signal.pause()
EOF2
    for mode in plain lib; do
        port=$(free_port)
        if [ $mode = lib ]; then
            start $mode env KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" "$PY" sig.py "$port"
        else
            start_plain $mode "$PY" sig.py "$port"
        fi
        wait_port "$port"
        for _ in $(seq 100); do grep -q ready $mode.out && break; sleep 0.1; done
        kill -TERM "$(pid_of $mode)"
        wait_status $mode || true
        for _ in $(seq 100); do kill -0 "$(pid_of $mode)" 2>/dev/null || break; sleep 0.1; done
    done
    cat lib.out >&3
    run diff plain.out lib.out
    assert_success
    run grep -c "got TERM" lib.out
    assert_output 1
    # the test means something: the library did catch TERM while it was SIG_DFL
    run cat lib.err
    assert_line "caught by someone: True"
    run cat plain.err
    assert_line "caught by someone: False"
    rec=$(record_of "$(pid_of lib)")
    assert_equal "$(field "$rec" end)" "exit 7"
}

@test "a program that blocks TERM and takes it with sigwait gets it, and exits its own way" {
    port=$(free_port)
    start srv env KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" "$PY" -c "
import signal, socket, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
s = socket.socket(); s.bind(('127.0.0.1', $port)); s.listen(4)
c, _ = s.accept(); c.close()
print('ready', flush=True)
print('sigwait', signal.sigwait({signal.SIGTERM}), flush=True)
sys.exit(3)"
    wait_port "$port"
    for _ in $(seq 100); do grep -q ready srv.out && break; sleep 0.1; done
    kill -TERM "$(pid_of srv)"
    wait_gone "$(pid_of srv)" 10
    run cat srv.out
    assert_line "sigwait 15"
    rec=$(record_of "$(pid_of srv)")
    assert_equal "$(field "$rec" end)" "exit 3"
}

@test "exec: a record before the image is replaced; a failed exec starts a fresh record; _exit in a fork child" {
    port=$(free_port)
    start srv env KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" "$PY" -c "
import os, socket
s = socket.socket(); s.bind(('127.0.0.1', $port)); s.listen(8)
for _ in range(2):
    c, _ = s.accept(); c.close()
try:
    os.execv('/nonexistent/program', ['x'])
except OSError as e:
    print('exec failed', e.errno, flush=True)
c, _ = s.accept(); c.close()
pid = os.fork()
if pid == 0:
    c, _ = s.accept(); c.close()
    os._exit(4)
os.waitpid(pid, 0)
c, _ = s.accept(); c.close()
os.execv('/bin/true', ['true'])"
    wait_port "$port"   # 1st connection
    for i in 1 2 3 4; do "$PY" -c "import socket; socket.create_connection(('127.0.0.1',$port)).close()"; done
    wait_gone "$(pid_of srv)" 10
    run cat srv.out
    assert_output "exec failed 2"
    pid=$(pid_of srv)
    run "$PY" -c "
import json
rs = [json.loads(l) for l in open('s.jsonl')]
print([(r['pid'] == $pid, r['end'], r['connections']['accepted']) for r in rs])"
    # before the failed exec: 2; after it, 1 then 1 more before the real exec;
    # the child's one connection in its own record
    assert_output "[(True, 'exec', 2), (False, 'exit 4', 1), (True, 'exec', 2)]"
}

@test "accepted counts TCP connections only, not AF_UNIX ones, whether or not the caller asks for the address" {
    port=$(free_port)
    start srv env KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" "$PY" -c "
import ctypes, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
t = socket.socket(); t.bind(('127.0.0.1', $port)); t.listen(8)
u = socket.socket(socket.AF_UNIX); u.bind('$BATS_TEST_TMPDIR/u.sock'); u.listen(8)
print('ready', flush=True)
for _ in range(3):
    c, _ = u.accept(); c.close()
    fd = libc.accept(u.fileno(), None, None); os.close(fd)
for _ in range(2):
    c, _ = t.accept(); c.close()
    fd = libc.accept4(t.fileno(), None, None, 0); os.close(fd)
sys.exit(0)"
    for _ in $(seq 100); do grep -q ready srv.out 2>/dev/null && break; sleep 0.1; done
    "$PY" -c "
import socket
for _ in range(6):
    s = socket.socket(socket.AF_UNIX); s.connect('$BATS_TEST_TMPDIR/u.sock'); s.close()
for _ in range(4):
    socket.create_connection(('127.0.0.1', $port)).close()"
    wait_gone "$(pid_of srv)" 10
    rec=$(record_of "$(pid_of srv)")
    assert_equal "$(field "$rec" connections.accepted)" 4
}

@test "socat in fork mode, unsharded, stopped with TERM: the accepting parent's record counts every connection" {
    port=$(free_port)
    start srv env KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" socat "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr" EXEC:/bin/cat
    wait_port "$port"
    for i in 1 2 3; do
        run "$PY" -c "
import socket
s = socket.create_connection(('127.0.0.1', $port)); s.sendall(b'ping'); s.shutdown(socket.SHUT_WR)
print(s.recv(100).decode())"
        assert_output ping
    done
    kill -TERM "$(pid_of srv)"
    wait_gone "$(pid_of srv)" 10
    rec=$(record_of "$(pid_of srv)")
    assert_equal "$(echo "$rec" | grep -c .)" 1
    assert_equal "$(field "$rec" connections.accepted)" 4
}

@test "forks, sharded: 5000 fork+exec children claim nothing; 1100 counting children each get a record; sums exact" {
    port=$(free_port)
    # worker 0 forks+execs 5000 times (a static busybox when there is one: a
    # cheap exec), then forks 1100 children that each accept one connection
    # (more than the pool's 1024 records). Under ASan, 1000 execs.
    execs=5000
    [ "${KTLSSHIM_TEST_ASAN:-0}" = 1 ] && execs=1000
    prog=/bin/true
    ldd /bin/busybox 2>&1 | grep -q 'not a dynamic' && prog="/bin/busybox true"
    # shellcheck disable=SC2086
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_LOG=quiet KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" \
        "$BUILD/tests/cgi_forker" "$port" "$execs" 1100 "$BATS_TEST_TMPDIR/done" $prog
    for _ in $(seq 6000); do [ -e done ] && break; sleep 0.1; done
    [ -e done ]
    kill -TERM "$(pid_of srv)"
    wait_gone "$(pid_of srv)" 20
    run "$PY" -c "
import json
rs = [json.loads(l) for l in open('s.jsonl')]
kids = [r for r in rs if r['role'] == 'worker_child']
sup = [r for r in rs if r['role'] == 'supervisor']
print(len(kids), len({r['pid'] for r in kids}), sorted({r['connections']['accepted'] for r in kids}),
      sorted({r['end'] for r in kids}), len(sup), sup[0]['connections']['accepted'], sup[0]['end'])"
    assert_output "1100 1100 [1] ['exit 0'] 1 1100 signal 15"
}

@test "quick_exit: the record is written after the program's at_quick_exit handlers (what they count is in it), with quick_exit's status" {
    port=$(free_port)
    start srv env KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" "$PY" -c "
import ctypes, socket
s = socket.socket(); s.bind(('127.0.0.1', $port)); s.listen(8)
for _ in range(2):
    c, _ = s.accept(); c.close()
libc = ctypes.CDLL(None)
@ctypes.CFUNCTYPE(None)
def last_one():
    c, _ = s.accept(); c.close()
    print('handler ran', flush=True)
libc.__cxa_at_quick_exit(last_one, None)  # at_quick_exit, as libc_nonshared.a makes it
libc.quick_exit(5)"
    wait_port "$port"   # 1st connection
    for i in 1 2; do "$PY" -c "import socket; socket.create_connection(('127.0.0.1',$port)).close()"; done
    wait_status srv
    assert_equal "$status_of" 5
    run cat srv.out
    assert_output "handler ran"
    pid=$(pid_of srv)
    run "$PY" -c "
import json
rs = [json.loads(l) for l in open('s.jsonl')]
print([(r['pid'] == $pid, r['end'], r['connections']['accepted']) for r in rs])"
    assert_output "[(True, 'exit 5', 3)]"
}

@test "programs run one after another, each opening the stats file itself, append: every record whole, none written over" {
    # Separate opens of the file (not one description shared across fork):
    # only O_APPEND keeps the second from writing over the first.
    for n in 1 2 3; do
        port=$(free_port)
        start srv$n env KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" "$TINY" --port "$port"
        wait_port "$port"
        for i in $(seq "$n"); do ask "$port" info >/dev/null; done
        kill -TERM "$(pid_of srv$n)"
        wait_status srv$n
    done
    run "$PY" - <<'PYEOF'
import json
R = [json.loads(l) for l in open("s.jsonl")]
print(sorted(r["connections"]["accepted"] for r in R))
PYEOF
    # wait_port's probe connection is accepted too
    assert_output "[2, 3, 4]"
}

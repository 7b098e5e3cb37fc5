# Shared helpers for the bats suites (host and VM). Each test preloads the
# library into the real program it starts, and only into that program.

# bats-support and bats-assert (Debian packages), sourced file by file: their
# load.bash forks dirname per file, which costs seconds per test in the VM.
for f in /usr/lib/bats/bats-support/src/*.bash /usr/lib/bats/bats-assert/src/*.bash; do
    # shellcheck disable=SC1090
    source "$f"
done

ROOT="$(cd "$BATS_TEST_DIRNAME/../.." && pwd)"
BUILD="${KTLSSHIM_BUILD:-$ROOT/build}"
LIB="$BUILD/libktlsshim.so"
TINY="$BUILD/tests/tiny_server"
BCS="$BUILD/tests/bio_copy_server" # tests/servers/bio_copy_server.c
SSLBIO="$BUILD/tests/sslbio_server" # tests/servers/sslbio_server.c
PY=/usr/bin/python3

# With an ASan build (make asan), the sanitizer runtimes must be loaded
# before anything else in the process.
if [ "${KTLSSHIM_TEST_ASAN:-0}" = 1 ]; then
    PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so) $LIB"
    export ASAN_OPTIONS="detect_leaks=0:verify_asan_link_order=0:abort_on_error=0:exitcode=99"
    export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=98"
else
    PRELOAD="$LIB"
fi

# A TCP port free on 127.0.0.1 right now.
free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_port PORT [HOST]: until something accepts there (10 s at most).
wait_port() {
    local host="${2:-127.0.0.1}"
    for _ in $(seq 100); do
        if "$PY" -c "import socket,sys; socket.create_connection(('$host',$1),timeout=1).close()" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "nothing listens on $host:$1" >&2
    return 1
}

# start NAME CMD...: runs CMD in the background in its own session, with the
# library preloaded; its pid goes to $BATS_TEST_TMPDIR/NAME.pid, output to
# NAME.out / NAME.err. Variables for the library are set by the caller with
# env: start srv env KTLSSHIM_SHARDS=2 python3 ...
start() {
    local name="$1"; shift
    if [ "${KTLSSHIM_TEST_LAUNCHER:-0}" = 1 ]; then
        launcher_argv "$@"
        setsid env ${PRELOAD_BEFORE_LIB:+LD_PRELOAD="$PRELOAD_BEFORE_LIB"} "${LAUNCHER_ARGV[@]}" \
            >"$BATS_TEST_TMPDIR/$name.out" 2>"$BATS_TEST_TMPDIR/$name.err" &
    else
        setsid env LD_PRELOAD="$PRELOAD" "$@" >"$BATS_TEST_TMPDIR/$name.out" 2>"$BATS_TEST_TMPDIR/$name.err" &
    fi
    echo $! >"$BATS_TEST_TMPDIR/$name.pid"
}

# With KTLSSHIM_TEST_LAUNCHER=1, start() runs the program through the
# launcher (build/ktlsshim) instead of setting LD_PRELOAD, turning the
# library's variables in "env VAR=VALUE... program" into the launcher's
# options (KTLSSHIM_SHARDS=2 -> --shards 2): a suite such as 10-shard.bats
# then checks the launcher does what the variables do. Sets LAUNCHER_ARGV.
PRELOAD_BEFORE_LIB="${PRELOAD% *}"
[ "$PRELOAD_BEFORE_LIB" = "$PRELOAD" ] && PRELOAD_BEFORE_LIB=""
launcher_argv() {
    local envs=() opts=() name value
    if [ "$1" = env ]; then
        shift
        while [[ "${1:-}" == *=* && "${1%%=*}" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; do
            name=${1%%=*} value=${1#*=}
            case "$name=$value" in
            KTLSSHIM_SHARDS=*) opts+=(--shards "$value") ;;
            KTLSSHIM_KTLS=*) opts+=(--ktls "$value") ;;
            KTLSSHIM_STATS=*) opts+=(--stats "$value") ;;
            KTLSSHIM_CONN_LOG=*) opts+=(--conn-log "$value") ;;
            KTLSSHIM_LOG=*) opts+=(--log "$value") ;;
            KTLSSHIM_PIN=on) opts+=(--pin) ;;
            KTLSSHIM_ZEROCOPY=on) opts+=(--zerocopy) ;;
            KTLSSHIM_TICKET_ROTATE=*) opts+=(--ticket-rotate "$value") ;;
            KTLSSHIM_TICKET_KEY_FILE=*) opts+=(--ticket-key-file "$value") ;;
            *) envs+=("$1") ;;
            esac
            shift
        done
    fi
    LAUNCHER_ARGV=(env "${envs[@]}" "$BUILD/ktlsshim" "${opts[@]}" -- "$@")
}

# start_plain NAME CMD...: the same without the library.
start_plain() {
    local name="$1"; shift
    setsid "$@" >"$BATS_TEST_TMPDIR/$name.out" 2>"$BATS_TEST_TMPDIR/$name.err" &
    echo $! >"$BATS_TEST_TMPDIR/$name.pid"
}

pid_of() { cat "$BATS_TEST_TMPDIR/$1.pid"; }

# Children of a pid (the workers of a supervisor).
children_of() { pgrep -P "$1" | sort -n; }

# pids_with_arg STRING: pids whose command line holds STRING (a test's own
# files: other programs on the machine run the same servers).
pids_with_arg() {
    NEEDLE="$1" "$PY" -c '
import os
needle = os.environ["NEEDLE"].encode()
for d in os.listdir("/proc"):
    if not d.isdigit() or int(d) == os.getpid():
        continue
    try:
        with open("/proc/%s/cmdline" % d, "rb") as f:
            if needle in f.read():
                print(d)
    except OSError:
        pass
'
}

# wait_for_line FILE REGEX [SECONDS]: until a line of FILE matches.
wait_for_line() {
    local t=$(( ${3:-10} * 10 ))
    for _ in $(seq "$t"); do
        grep -Eq "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "no line matching '$2' in $1:" >&2; cat "$1" >&2
    return 1
}

# end_test_processes: kills what runs with this test's own files on its
# command line, and its children (a daemon escapes the process group that
# teardown_servers kills).
end_test_processes() {
    local p
    for p in $(pids_with_arg "$BATS_TEST_TMPDIR/"); do
        pkill -KILL -P "$p" 2>/dev/null || true
        kill -KILL "$p" 2>/dev/null || true
    done
}

# wait_gone PID [SECONDS]: until the process is gone.
wait_gone() {
    local t=$(( ${2:-10} * 10 ))
    for _ in $(seq "$t"); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

# wait_status NAME: waits for the background job started as NAME (in this
# shell: not under `run`) and sets $status_of to its exit status.
wait_status() {
    local pid; pid=$(pid_of "$1")
    status_of=0
    wait "$pid" 2>/dev/null || status_of=$?
}

# Kills what a test left running: every session started by start().
teardown_servers() {
    local f pid
    for f in "$BATS_TEST_TMPDIR"/*.pid; do
        [ -e "$f" ] || continue
        pid=$(cat "$f")
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    sanitizer_reports
}

# nginx_temp_paths: the lines of an nginx http block that keep every
# temporary file in the test's directory ($BATS_TEST_TMPDIR/logs).
nginx_temp_paths() {
    local d="$BATS_TEST_TMPDIR/logs" t
    for t in client_body:body proxy:proxy fastcgi:fastcgi uwsgi:uwsgi scgi:scgi; do
        echo "    ${t%%:*}_temp_path $d/${t#*:};"
    done
}

# www_sharded N STARTER...: STARTER (words that start a program as srv
# with 2 workers and its stats in s.jsonl, e.g. start srv env
# KTLSSHIM_SHARDS=2 KTLSSHIM_STATS=...) followed by openssl s_server -WWW;
# N downloads of a 100 kB file one after another, all intact; after SIGTERM
# the supervisor counts N TLS connections and each worker handshook some.
www_sharded() {
    local n=$1 port sup want got ok=0
    shift
    make_certs
    head -c 100000 /dev/urandom >f.bin
    want=$(sha256sum <f.bin)
    port=$(free_port)
    "$@" openssl s_server -WWW -quiet -accept "127.0.0.1:$port" -cert "$CERTS/ec.pem" -key "$CERTS/ec.key"
    wait_port "$port"
    for _ in $(seq "$n"); do
        got=$(curl -skf --max-time 10 "https://127.0.0.1:$port/f.bin" | sha256sum) &&
            [ "$got" = "$want" ] && ok=$((ok + 1))
    done
    assert_equal "$ok" "$n"
    sup=$(pid_of srv)
    kill -TERM "$sup"
    wait_gone "$sup" 10
    # wait_port's probe connection is accepted but never handshakes
    run json_get s.jsonl supervisor connections.tls
    assert_output "$n"
    run "$PY" - <<'PYEOF'
import json
ws = [json.loads(l) for l in open("s.jsonl") if '"worker"' in l]
assert len(ws) == 2 and all(w["connections"]["tls"] > 0 for w in ws), ws
print("ok")
PYEOF
    assert_output ok
}

# With the ASan+UBSan build: a sanitizer's report in any output a test's
# processes left (their .err/.out files, logs) fails the test, even where
# the test itself did not look at that process's exit status.
sanitizer_reports() {
    [ "${KTLSSHIM_TEST_ASAN:-0}" = 1 ] || return 0
    local hits
    hits=$(grep -rlE 'ERROR: AddressSanitizer|ERROR: LeakSanitizer|: runtime error: ' \
        "$BATS_TEST_TMPDIR" 2>/dev/null | head -5)
    [ -z "$hits" ] && return 0
    echo "sanitizer reports in: $hits"
    grep -hE -A12 'ERROR: AddressSanitizer|: runtime error: ' $hits | head -60
    return 1
}

# ask PORT LINE: sends LINE to the tiny server, prints the reply.
ask() {
    "$PY" - "$1" "$2" <<'PYEOF'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=90)
s.sendall(sys.argv[2].encode() + b"\n")
out = b""
while True:
    b = s.recv(4096)
    if not b:
        break
    out += b
sys.stdout.write(out.decode())
PYEOF
}

# json_sum FILE ROLE FIELD.PATH: sums a field over the JSON records of ROLE.
json_get() {
    "$PY" - "$@" <<'PYEOF'
import json, sys
path, role, field = sys.argv[1], sys.argv[2], sys.argv[3]
total = 0
for line in open(path):
    r = json.loads(line)
    if r["role"] != role:
        continue
    v = r
    for k in field.split("."):
        v = v[k]
    total += v
print(total)
PYEOF
}

# Certificates for the TLS tests, made once per suite run.
make_certs() {
    local d="$BATS_RUN_TMPDIR/certs"
    if [ ! -f "$d/rsa.pem" ]; then
        mkdir -p "$d"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout "$d/rsa.key" -out "$d/rsa.pem" \
            -days 2 -subj /CN=localhost 2>/dev/null
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout "$d/ec.key" -out "$d/ec.pem" -days 2 -subj /CN=localhost 2>/dev/null
    fi
    CERTS="$d"
}

# wait_until SECONDS CMD...: runs CMD every 0.1 s until it succeeds (bounded:
# a loaded machine gets time, a broken library still fails).
wait_until() {
    local t=$(( $1 * 10 )); shift
    for _ in $(seq "$t"); do
        "$@" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "timed out after $((t / 10)) s waiting for: $*" >&2
    return 1
}

# n_children PID N: true when PID has exactly N children.
n_children() { [ "$(pgrep -P "$1" | wc -l)" -eq "$2" ]; }

# n_listening PORT N: true when exactly N sockets listen on PORT (one per
# sharded worker). In exec mode wait_port returns once the first worker
# listens; the others may still be starting.
n_listening() { [ "$(ss -Hltn "sport = :$1" | wc -l)" -eq "$2" ]; }

# procs_py ARGS...: a Python script (on stdin) that can `from procs import *`
# (tests/helpers/procs.py: death by signal vs exit 128+N, terminal signals).
procs_py() {
    env PRELOAD="$PRELOAD" TINY="$TINY" PYTHONPATH="$ROOT/tests/helpers" "$PY" - "$@"
}

# fresh_install CMD...: runs CMD in a private mount namespace where
# /var/lib/nginx is as on a fresh Debian install (root-owned temp dirs) and
# read-only (as the VM's root): an nginx that would chown its default temp
# dirs fails there. Needs root (callers skip otherwise).
fresh_install() {
    unshare -m sh -c '
        mount -t tmpfs -o mode=755 fresh-install /var/lib/nginx || exit 97
        for d in body proxy fastcgi uwsgi scgi; do mkdir -m 700 "/var/lib/nginx/$d"; done
        mount -o remount,ro /var/lib/nginx || exit 97
        exec "$@"' fresh_install "$@"
}

#!/usr/bin/env bats
# The rolling restart's corners (KTLSSHIM_RELOAD, exec mode): a new worker
# that comes up listening on fewer addresses than its slot holds, and an old
# worker that ends with exit 0 while its successor is coming up. A plain
# Python TCP server (tests/servers/reload_server.py), steered by files, and
# real connections: every one must be answered, by the pids expected.

load '../helpers/common'
load '../helpers/tls'

SRV="$ROOT/tests/servers/reload_server.py"

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

# replies PORT N: N connections in turn (5 s each); prints each reply
# ("pid=P worker=W port=N") or "fail ERROR", one a line.
replies() {
    "$PY" - "$1" "$2" <<'PYEOF'
import socket, sys
for _ in range(int(sys.argv[2])):
    try:
        c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
        r = b""
        while True:
            b = c.recv(200)
            if not b:
                break
            r += b
        c.close()
        print(r.decode().strip() or "fail empty")
    except OSError as e:
        print("fail", repr(e))
PYEOF
}

# pid_of_slot PORT SLOT: the pid that answers for worker SLOT (40 tries).
pid_of_slot() {
    replies "$1" 40 | sed -n "s/^pid=\([0-9]*\) worker=$2 .*/\1/p" | sort -u
}

# served_only_by PORT PID...: 40 connections, every one answered, by these
# pids and each of them.
served_only_by() {
    local got
    got=$(replies "$1" 40)
    ! grep -q '^fail' <<<"$got" || return 1
    [ "$(sed 's/^pid=\([0-9]*\) .*/\1/' <<<"$got" | sort -u | tr '\n' ' ')" = "$(printf '%s\n' "${@:2}" | sort -u | tr '\n' ' ')" ]
}

# The listening sockets on PORT that the supervisor itself holds.
held_by() { ss -Hltnp "sport = :$1" | grep -c "pid=$2,"; }

start_group() { # start_group PORT...: two workers, KTLSSHIM_RELOAD=SIGHUP, a new
    # worker must report its listeners within $READY s (KTLSSHIM_STOP_TIMEOUT)
    local args=() p
    for p in "$@"; do args+=(--port "$p"); done
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_RELOAD=SIGHUP KTLSSHIM_STOP_TIMEOUT="${READY:-3}" \
        KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" "$PY" "$SRV" "${args[@]}" --dir "$BATS_TEST_TMPDIR"
    sup=$(pid_of srv)
    wait_until 30 n_children "$sup" 2
    for p in "$@"; do wait_listen "$p" 30; done
    run children_of "$sup"
    wait_until 30 served_only_by "$1" "${lines[0]}" "${lines[1]}"
    old0=$(pid_of_slot "$1" 0) old1=$(pid_of_slot "$1" 1)
    [ -n "$old0" ] && [ -n "$old1" ]
}

@test "KTLSSHIM_RELOAD: a new worker listening on fewer addresses than its slot holds is refused (one line), the old one keeps serving every port, and the rolling restart carries on" {
    a=$(free_port) b=$(free_port)
    [ "$a" != "$b" ]
    start_group "$a" "$b"
    touch drop.0 # slot 0's new configuration leaves port b out
    kill -HUP "$sup"
    wait_for_line srv.err 'rolling restart (done|stopped)' 30
    run grep -E "KTLSSHIM_RELOAD: the new worker 0/2 \(pid [0-9]+\) listens on 1 of the 2 addresses its slot holds \(not 127\.0\.0\.1:$b\) after 3 s: refused, asked to stop; the old one \(pid $old0\) keeps serving the slot" srv.err
    assert_success
    assert_equal "${#lines[@]}" 1
    grep -q 'KTLSSHIM_RELOAD: rolling restart done, 1 workers replaced, 1 refused' srv.err
    # slot 0 keeps its old worker, slot 1 has a new one; both serve both ports
    run children_of "$sup"
    assert_equal "${#lines[@]}" 2
    new1=$(pid_of_slot "$a" 1)
    [ -n "$new1" ] && [ "$new1" != "$old1" ]
    served_only_by "$a" "$old0" "$new1"
    served_only_by "$b" "$old0" "$new1"
    kill -TERM "$sup"
    wait_gone "$sup" 30
    stats_check s.jsonl 'SUP("workers.reloaded") == 1' 'SUP("workers.started") == 4'
}

@test "KTLSSHIM_RELOAD: an old worker that exits 0 while its successor comes up leaves the slot's listener held; connections queued on it survive the new worker's death" {
    port=$(free_port)
    READY=30 start_group "$port"
    touch hold.0 # slot 0's new worker waits before its bind()
    kill -HUP "$sup"
    wait_until 30 n_children "$sup" 3
    new0=$(children_of "$sup" | grep -vx -e "$old0" -e "$old1")
    # The supervisor sees the old worker's exit 0 and the new one's
    # listener together: it is stopped meanwhile.
    kill -STOP "$sup"
    touch "exit.$old0"
    zombie() { [ "$(awk '{print $3}' "/proc/$1/stat")" = Z ]; }
    wait_until 30 zombie "$old0"
    rm hold.0
    wait_until 30 served_only_by "$port" "$new0" "$old1"
    kill -CONT "$sup"
    wait_for_line srv.err 'KTLSSHIM_RELOAD: rolling restart done, 2 workers replaced' 60
    new1=$(pid_of_slot "$port" 1)
    wait_until 30 served_only_by "$port" "$new0" "$new1"
    # every slot's listener is still the supervisor's too
    assert_equal "$(held_by "$port" "$sup")" 2
    # Connections queued on slot 0's listener while its worker cannot take
    # them are answered after it dies, by its successor.
    kill -STOP "$new0"
    cat >clients.py <<'PYEOF'
import socket, sys
cs = [socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20) for _ in range(30)]
open("connected", "w").close()
ok = fail = 0
for c in cs:
    try:
        r = c.recv(200)
        ok, fail = (ok + 1, fail) if r.startswith(b"pid=") else (ok, fail + 1)
    except OSError:
        fail += 1
print("ok", ok, "fail", fail)
PYEOF
    start_plain clients "$PY" clients.py "$port"
    wait_until 30 test -e connected
    kill -KILL "$new0"
    wait_status clients
    run cat clients.out
    assert_output "ok 30 fail 0"
    kill -TERM "$sup"
    wait_gone "$sup" 30
    stats_check s.jsonl 'SUP("workers.reloaded") == 2'
}

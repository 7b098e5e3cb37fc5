#!/usr/bin/env bats
# The shared session-ID cache's lock fails open: a worker stopped while it
# holds it (here: stopped by gdb at the line after it took the lock, in the
# real library, in a real openssl s_server) does not stall the other worker,
# which does full handshakes instead; a worker killed while it holds it is
# recovered from (robust mutex), and resumption works again.

load '../helpers/common'

setup() {
    cd "$BATS_TEST_TMPDIR"
    make_certs
    echo lock-body > index.html
}
teardown() { teardown_servers; }

# handshake PORT SECONDS ARGS...: one TLS 1.2 session-ID handshake and GET,
# bounded by SECONDS; prints New or Reused if the body came back, else
# timeout.
handshake() {
    local port=$1 t=$2; shift 2
    local out
    out=$(printf 'GET /index.html HTTP/1.0\r\n\r\n' |
        timeout "$t" openssl s_client -connect "127.0.0.1:$port" -tls1_2 -no_ticket \
            -ign_eof "$@" 2>/dev/null || true)
    if grep -qx 'lock-body' <<<"$out"; then
        grep -oE '^(New|Reused)' <<<"$out" || echo no-session-line
    else
        echo timeout
    fi
}

@test "a worker stopped or killed while it holds the session cache lock: the other serves, then resumption recovers" {
    command -v gdb >/dev/null || skip "no gdb"
    line=$(grep -n 'struct sess_slot \*victim = find(id, len);' "$ROOT/shim/tls/resume.c" | cut -d: -f1)
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_LOG=debug \
        openssl s_server -WWW -quiet -accept "127.0.0.1:$port" -cert "$CERTS/ec.pem" -key "$CERTS/ec.key"
    wait_port "$port"
    sup=$(pid_of srv)
    holder=$(children_of "$sup" | head -1)
    other=$(children_of "$sup" | tail -1)
    # gdb stops the holder at the first session it stores, with the lock
    # held, then leaves it stopped (SIGSTOP pending at detach).
    gdb -p "$holder" -batch -nx -ex 'set breakpoint pending on' -ex "break resume.c:$line" \
        -ex continue -ex "shell kill -STOP $holder" -ex detach </dev/null >gdb.out 2>&1 &
    gdbpid=$!
    for _ in $(seq 100); do grep -q '^Breakpoint 1 at' gdb.out && break; sleep 0.1; done
    grep -q '^Breakpoint 1 at' gdb.out
    # Full handshakes until one reaches the holder and stops it there.
    for _ in $(seq 30); do
        kill -0 "$gdbpid" 2>/dev/null || break
        handshake "$port" 3 >/dev/null
    done
    wait "$gdbpid" || true
    for _ in $(seq 50); do grep -q '^State:.*stopped' "/proc/$holder/status" && break; sleep 0.1; done
    grep -q '^State:.*stopped' "/proc/$holder/status"
    # The other worker stores its new sessions in the cache under that lock:
    # it must not wait for it. Connections the kernel gives the stopped
    # holder wait in its queue (timeout); every other one completes.
    before=$(grep -c "^ktlsshim\[$other\]: handshake done" "$BATS_TEST_TMPDIR/srv.err" || true)
    for i in $(seq 10); do handshake "$port" 3; done > during
    cat during
    done_n=$(grep -c '^New$' during || true)
    [ "$done_n" -ge 1 ]
    after=$(grep -c "^ktlsshim\[$other\]: handshake done" "$BATS_TEST_TMPDIR/srv.err" || true)
    assert_equal "$((after - before))" "$done_n"
    grep -q "ktlsshim\[$other\]: the shared TLS session cache is locked by a worker that does not release it" \
        "$BATS_TEST_TMPDIR/srv.err"
    # Killed while holding it: its successor and the other worker recover
    # the lock (the table is wiped) and sessions resume on any worker again.
    kill -KILL "$holder"
    for _ in $(seq 100); do
        [ "$(children_of "$sup" | wc -l)" -eq 2 ] && break
        sleep 0.1
    done
    run handshake "$port" 20 -sess_out sess.pem
    assert_output New
    for i in $(seq 12); do handshake "$port" 20 -sess_in sess.pem; done > after
    run grep -c '^Reused$' after
    assert_output 12
}

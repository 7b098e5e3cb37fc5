#!/usr/bin/env bats
# A fork while another thread holds one of the library's locks leaves a
# child that makes and frees an SSL_CTX (and forks a grandchild that does
# too). gdb stops a thread of tests/helpers/fork_lock.c inside the lock, in
# the real library, and lets only the main thread run: it forks.
#
# The library's locks and what each has (init.c, "Locks"):
#   ctx_list_lock (tls/ctx.c)         fork handlers take it and let it go
#   lock_word (stats/sigcatch.c)      fork handlers take it and let it go
#   api_once (tls/hooks.c), and every pthread_once: a child runs an
#                                     interrupted one again; the hooks'
#                                     set-up then registers its fork
#                                     handlers once only
#   the session cache's mutex (tls/resume.c): shared memory, robust, fails
#                                     open; 31-resume-lock.bats stops its
#                                     holder

load '../helpers/common'
load '../helpers/tls'

setup() {
    cd "$BATS_TEST_TMPDIR"
    command -v gdb >/dev/null || skip "no gdb"
    gcc -O1 -g -Wall -o fork_lock "$HELPERS_DIR/fork_lock.c" -lssl -lcrypto -pthread
}
teardown() { teardown_servers; }

# fork_in_lock WHAT FILE PATTERN [WAITS_IN]: runs `fork_lock go WHAT` with
# gdb holding its other thread at the line of shim/FILE that holds PATTERN
# (inside the lock) and letting only the main thread run: it forks. gdb
# lets every thread run again once the fork is done (the child has its own
# copy of the lock by then), or once the forking thread gets to WAITS_IN,
# where it waits for a lock held (pthread_mutex_lock, sched_yield): a fork
# handler waiting for the holder. Asserts the child ok.
fork_in_lock() {
    local what=$1 file=$2 pattern=$3 waits_in=${4:-}
    local line
    line=$(grep -nF -- "$pattern" "$ROOT/shim/$file" | cut -d: -f1)
    [ "$(wc -w <<<"$line")" = 1 ] || { echo "'$pattern' is not once in shim/$file"; return 1; }
    mkfifo go
    start srv ./fork_lock go "$what"
    wait_until 10 grep -qx ready srv.out
    local pid
    pid=$(pid_of srv)
    {
        cat <<EOF
set pagination off
set confirm off
attach $pid
break $file:$line
commands 1
  silent
  set scheduler-locking on
  thread 1
  shell kill -USR1 $pid
  continue
end
EOF
        echo "catch fork"
        [ -z "$waits_in" ] || echo "break $waits_in if \$_thread == 1"
        cat <<EOF
commands 2${waits_in:+-3}
  silent
  set scheduler-locking off
  delete
  continue
end
shell (echo x >go) &
continue
EOF
    } >g.gdb
    timeout 60 gdb -batch -nx -x g.gdb >gdb.out 2>&1 || true
    wait_gone "$pid" 20
    grep -q "Breakpoint 1 at" gdb.out || { cat gdb.out; return 1; }
    run cat srv.out
    assert_output "$(printf 'ready\nchild ok')"
}

@test "fork while another thread holds the SSL_CTX list's lock (ctx_list_lock): the child makes and frees an SSL_CTX" {
    fork_in_lock ctx_free tls/ctx.c 'if (k->prev)' pthread_mutex_lock
}

@test "fork while another thread holds the signal catcher's lock (sigaction): the child makes and frees an SSL_CTX" {
    fork_in_lock sigaction stats/sigcatch.c 'if (caught[sig]) {' sched_yield
}

@test "fork while another thread runs the hooks' one-time set-up (api_once): the child makes and frees an SSL_CTX, and forks" {
    fork_in_lock first_ssl tls/hooks.c 'ks_switch_setup();'
}

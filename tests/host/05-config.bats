#!/usr/bin/env bats
# Configuration: every bad value is reported and the program runs on the
# safe path; with no variable set the library changes nothing.

load '../helpers/common'

setup() { cd "$BATS_TEST_TMPDIR"; unset KTLSSHIM_LOG; }
teardown() { teardown_servers; }

# runs_unsharded VAR=VALUE EXPECTED-REGEX: the tiny server, started with
# KTLSSHIM_SHARDS=2 unless VAR is that, still serves, unsharded where the
# value was the shard count, and stderr holds exactly one matching line.
bad_value() {
    local assign="$1" regex="$2" port
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 "$assign" "$TINY" --port "$port"
    wait_port "$port"
    run ask "$port" info
    assert_output --partial "pid="
    run grep -cE "$regex" "$BATS_TEST_TMPDIR/srv.err"
    assert_output 1
    teardown_servers
}

@test "bad KTLSSHIM_SHARDS values: one clear line each, and the program runs unsharded" {
    for v in abc 0 -3 1.5 99999999 "" " 2" 1025 0x2; do
        port=$(free_port)
        start srv env KTLSSHIM_SHARDS="$v" "$TINY" --port "$port"
        wait_port "$port"
        run children_of "$(pid_of srv)"
        assert_output ""
        run ask "$port" info
        assert_output --partial "reuseport=0"
        run cat "$BATS_TEST_TMPDIR/srv.err"
        assert_output "ktlsshim[$(pid_of srv)]: KTLSSHIM_SHARDS=\"$v\" is not valid: expected a whole number from 1 to 1024, or \"auto\" (one per online CPU); using 1 (unsharded)"
        teardown_servers
    done
}

@test "bad KTLSSHIM_KTLS, KTLSSHIM_LOG, KTLSSHIM_ZEROCOPY values are reported; sharding still happens" {
    bad_value KTLSSHIM_KTLS=yes 'KTLSSHIM_KTLS="yes" is not valid: expected auto, off, strict or own; using auto$'
    bad_value KTLSSHIM_LOG=loud 'KTLSSHIM_LOG="loud" is not valid: expected quiet, info or debug; using info$'
    bad_value KTLSSHIM_ZEROCOPY=1 'KTLSSHIM_ZEROCOPY="1" is not valid: expected on or off; using off$'
    bad_value KTLSSHIM_PIN=yes 'KTLSSHIM_PIN="yes" is not valid: expected on or off; using off$'
}

@test "bad KTLSSHIM_STATS values are reported, and no file is written" {
    bad_value KTLSSHIM_STATS=rel.jsonl 'KTLSSHIM_STATS="rel.jsonl" is not valid: expected an absolute path'
    [ ! -e rel.jsonl ]
    bad_value KTLSSHIM_STATS=/nonexistent/dir/s.jsonl 'KTLSSHIM_STATS="/nonexistent/dir/s.jsonl" cannot be opened for appending: No such file or directory; using no stats file$'
}

@test "an unknown KTLSSHIM_ name (a typo) is reported" {
    run env LD_PRELOAD="$PRELOAD" KTLSSHIM_SHARD=4 /bin/echo hi
    assert_success
    assert_line --index 0 --regexp '^ktlsshim\[[0-9]+\]: unknown variable KTLSSHIM_SHARD \(ignored\); known: KTLSSHIM_SHARDS, '
    assert_line --index 1 hi
}

@test "no variable set: programs that never touch sockets run exactly as without the library" {
    for cmd in "/bin/true" "/bin/false" "ls /usr" "$PY -c 'print(sum(range(10)))'" \
               "openssl version" "echo out; echo err >&2; exit 3"; do
        st_plain=0; st_lib=0
        sh -c "$cmd" > plain.out 2> plain.err || st_plain=$?
        env LD_PRELOAD="$PRELOAD" sh -c "$cmd" > lib.out 2> lib.err || st_lib=$?
        assert_equal "$st_lib" "$st_plain"
        cmp plain.out lib.out
        cmp plain.err lib.err
    done
}

@test "no variable set: a server serves the same bytes, says nothing more, sets no SO_REUSEPORT" {
    head -c 70000 /dev/urandom > f.bin
    port=$(free_port)
    start srv "$TINY" --port "$port"
    wait_port "$port"
    run children_of "$(pid_of srv)"
    assert_output ""
    run ask "$port" info
    assert_output --partial "reuseport=0"
    port2=$(free_port)
    start http "$PY" -m http.server "$port2" --bind 127.0.0.1
    wait_port "$port2"
    got=$(curl -sf "http://127.0.0.1:$port2/f.bin" | sha256sum)
    assert_equal "$got" "$(sha256sum < f.bin)"
    run grep -c ktlsshim "$BATS_TEST_TMPDIR/http.err" "$BATS_TEST_TMPDIR/srv.err"
    refute_output --partial ":1"
    run cat "$BATS_TEST_TMPDIR/srv.out"
    assert_output "PORT $port"
}

@test "errno and error messages of failing socket calls are the program's own" {
    port=$(free_port)
    start_plain holder "$PY" -m http.server "$port" --bind 127.0.0.1
    wait_port "$port"
    script="import socket
s=socket.socket()
try:
    s.bind(('127.0.0.1',$port))
except OSError as e:
    print(e.errno, e.strerror)
s=socket.socket()
try:
    s.listen(1); print('listen ok')
except OSError as e:
    print(e.errno, e.strerror)
try:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).listen(1)
except OSError as e:
    print(e.errno, e.strerror)"
    plain=$("$PY" -c "$script")
    for v in "" KTLSSHIM_SHARDS=2; do
        lib=$(env LD_PRELOAD="$PRELOAD" $v "$PY" -c "$script" 2>/dev/null)
        assert_equal "$lib" "$plain"
    done
}

@test "a sharded worker holds exactly the fds the unsharded program holds" {
    port=$(free_port)
    start_plain plain "$TINY" --port "$port"
    wait_port "$port"
    plain_fds=$(ls "/proc/$(pid_of plain)/fd" | wc -l)
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 "$TINY" --port "$port"
    wait_port "$port"
    wait_until 30 n_children "$(pid_of srv)" 2
    for w in $(children_of "$(pid_of srv)"); do
        assert_equal "$(ls "/proc/$w/fd" | wc -l)" "$plain_fds"
    done
}

@test "KTLSSHIM_LOG=quiet: no respawn line, no exit line, errors still; the stats file is still written" {
    for level in info quiet; do
        port=$(free_port)
        rm -f "s.$level.jsonl"
        start "srv$level" env KTLSSHIM_SHARDS=2 KTLSSHIM_LOG=$level KTLSSHIM_ZEROCOPY=1 \
            KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.$level.jsonl" "$TINY" --port "$port"
        wait_port "$port"
        sup=$(pid_of "srv$level")
        wait_until 30 n_children "$sup" 2
        victim=$(children_of "$sup" | head -1)
        kill -KILL "$victim"
        respawned() { n_children "$sup" 2 && ! children_of "$sup" | grep -qx "$victim"; }
        wait_until 30 respawned
        kill -TERM "$sup"
        wait_gone "$sup" 10
        # every process wrote its record: the supervisor, the killed worker
        # (written for it), its successor and the other worker
        run sh -c "wc -l < s.$level.jsonl"
        assert_output 4
    done
    # info: the bad value, "sharding ...", the killed worker's record, the
    # respawn, the two workers' records and the supervisor's
    run grep -c '^ktlsshim\[' srvinfo.err
    assert_output 7
    # quiet: only the error
    run cat srvquiet.err
    assert_output --regexp '^ktlsshim\[[0-9]+\]: KTLSSHIM_ZEROCOPY="1" is not valid: expected on or off; using off$'
}

@test "KTLSSHIM_WORKER set (a program exec'd by a worker): it never shards again" {
    port=$(free_port)
    # (a bad KTLSSHIM_ZEROCOPY too: its line proves the library is there)
    start srv env KTLSSHIM_WORKER=0/2 KTLSSHIM_SHARDS=2 KTLSSHIM_ZEROCOPY=1 "$TINY" --port "$port"
    wait_port "$port"
    run grep -c 'KTLSSHIM_ZEROCOPY="1" is not valid' "$BATS_TEST_TMPDIR/srv.err"
    assert_output 1
    # listen() has returned (the port answers): sharding would have forked
    run children_of "$(pid_of srv)"
    assert_output ""
    run ask "$port" info
    assert_output --partial "reuseport=0"
}

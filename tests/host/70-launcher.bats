#!/usr/bin/env bats
# The launcher, ktlsshim(1): real servers started through it shard, count
# and log as with the variables; bad options stop it before the program
# runs; an existing LD_PRELOAD is kept.

load '../helpers/common'
bats_require_minimum_version 1.5.0

LAUNCHER="$BUILD/ktlsshim"

setup() {
    cd "$BATS_TEST_TMPDIR"
    export KTLSSHIM_LOG=info
    # Under ASan the sanitizer runtimes go first in LD_PRELOAD; the launcher
    # appends the library after them (which is what the test of "kept"
    # checks in any build).
    if [ "${KTLSSHIM_TEST_ASAN:-0}" = 1 ]; then
        PRE="${PRELOAD% *}"
    else
        PRE=""
    fi
}
teardown() { teardown_servers; }

# launch NAME ARGS...: ktlsshim ARGS... in its own session, in the background
# (pid in NAME.pid, output in NAME.out/.err), with no library variable
# inherited from the test's environment but KTLSSHIM_LOG.
launch() {
    local name="$1"; shift
    setsid env ${PRE:+LD_PRELOAD="$PRE"} "$LAUNCHER" "$@" \
        >"$BATS_TEST_TMPDIR/$name.out" 2>"$BATS_TEST_TMPDIR/$name.err" &
    echo $! >"$BATS_TEST_TMPDIR/$name.pid"
}

@test "python http.server through 'ktlsshim -n 2 --stats': two workers serve 100 requests, stats written" {
    echo hello-launcher > index.html
    port=$(free_port)
    launch srv --log debug -n 2 --stats "$BATS_TEST_TMPDIR/s.jsonl" -- \
        "$PY" -m http.server "$port" --bind 127.0.0.1
    wait_port "$port"
    # The launcher exec'd the program: its pid is the supervisor's.
    sup=$(pid_of srv)
    run children_of "$sup"
    assert_equal "${#lines[@]}" 2
    ok=0
    for i in $(seq 100); do
        body=$(curl -sf --max-time 10 "http://127.0.0.1:$port/index.html") &&
            [ "$body" = hello-launcher ] && ok=$((ok+1))
    done
    assert_equal "$ok" 100
    kill -TERM "$sup"
    wait_gone "$sup" 10
    # 101: wait_port's probe is a connection too.
    run json_get s.jsonl supervisor connections.accepted
    assert_output 101
    run "$PY" -c "
import json
ws=[json.loads(l) for l in open('s.jsonl') if '\"worker\"' in l]
assert len(ws)==2 and len({w['pid'] for w in ws})==2, ws
assert all(w['connections']['accepted']>0 for w in ws), ws
assert all(w['shards']==2 for w in ws), ws
print('ok')"
    assert_output ok
}

@test "tiny server through 'ktlsshim --shards 3': three distinct pids serve on one port" {
    port=$(free_port)
    launch srv --log debug --shards 3 "$TINY" --port "$port"
    wait_port "$port"
    for i in $(seq 60); do ask "$port" info; done > replies
    run sh -c "grep -o '^pid=[0-9]*' replies | sort -u | wc -l"
    assert_output 3
    run sh -c "ss -Hltn 'sport = :$port' | wc -l"
    assert_output 3
}

@test "openssl s_server -WWW through 'ktlsshim -n 2': 60 TLS downloads intact, both workers handshake" {
    www_sharded 60 launch srv -n 2 --ktls auto --log debug --stats "$BATS_TEST_TMPDIR/s.jsonl" --
}

@test "an existing LD_PRELOAD is kept, the library appended after it, and both are loaded" {
    other=$("$PY" -c 'import ctypes.util,sys; print(ctypes.util.find_library("m"))')
    other=$(ldconfig -p | awk -v n="$other" '$1 == n && /x86-64/ { print $NF; exit }')
    [ -f "$other" ]
    run env LD_PRELOAD="${PRE:+$PRE }$other" KS_WANT_LIB="$(readlink -f "$LIB")" \
        KS_WANT_OTHER="$other" "$LAUNCHER" -- "$PY" -c '
import os
print(os.environ["LD_PRELOAD"])
maps = open("/proc/self/maps").read()
print("lib" if os.environ["KS_WANT_LIB"] in maps else "no lib")
print("other" if os.environ["KS_WANT_OTHER"] in maps else "no other")
'
    assert_success
    assert_line --index 0 "${PRE:+$PRE }$other $(readlink -f "$LIB")"
    assert_line --index 1 lib
    assert_line --index 2 other
}

@test "the default library is the one next to the launcher; --lib chooses another; a missing one is 127" {
    run env ${PRE:+LD_PRELOAD="$PRE"} "$LAUNCHER" -- sh -c 'echo "$LD_PRELOAD"'
    assert_success
    assert_output "${PRE:+$PRE }$(readlink -f "$BUILD/libktlsshim.so")"
    cp "$LIB" "$BATS_TEST_TMPDIR/copy.so"
    run env ${PRE:+LD_PRELOAD="$PRE"} "$LAUNCHER" --lib ./copy.so -- sh -c 'echo "$LD_PRELOAD"'
    assert_success
    assert_output "${PRE:+$PRE }$BATS_TEST_TMPDIR/copy.so"
    run -127 "$LAUNCHER" --lib "$BATS_TEST_TMPDIR/none.so" -- sh -c 'touch ran'
    assert_equal "$status" 127
    assert_output --partial 'none.so" cannot be read'
    [ ! -e ran ]
}

@test "options set their variables; the program's exit status, stdout and arguments pass through" {
    run env ${PRE:+LD_PRELOAD="$PRE"} KTLSSHIM_LOG=quiet "$LAUNCHER" -n auto -k strict \
        -s "$BATS_TEST_TMPDIR/s.jsonl" -c "$BATS_TEST_TMPDIR/c.jsonl" -l debug --pin --zerocopy \
        --ticket-rotate 120 --ticket-key-file /dev/null --prom-file /run/k.prom --prom-interval 7 \
        --keyupdate-limit 50 --rekey-records 4096 --rx-no-pad \
        sh -c 'env | grep ^KTLSSHIM_ | grep -v -e ^KTLSSHIM_BUILD -e ^KTLSSHIM_TEST_ | sort; echo "args: $*"; exit 7' \
        x -n 5 --stats y
    assert_equal "$status" 7
    assert_output "KTLSSHIM_CONN_LOG=$BATS_TEST_TMPDIR/c.jsonl
KTLSSHIM_KEYUPDATE_LIMIT=50
KTLSSHIM_KTLS=strict
KTLSSHIM_LOG=debug
KTLSSHIM_PIN=on
KTLSSHIM_PROM_FILE=/run/k.prom
KTLSSHIM_PROM_INTERVAL=7
KTLSSHIM_REKEY_RECORDS=4096
KTLSSHIM_RX_NO_PAD=on
KTLSSHIM_SHARDS=auto
KTLSSHIM_STATS=$BATS_TEST_TMPDIR/s.jsonl
KTLSSHIM_TICKET_KEY_FILE=/dev/null
KTLSSHIM_TICKET_ROTATE=120
KTLSSHIM_ZEROCOPY=on
args: -n 5 --stats y"
    # The launcher opens nothing itself: no stats file until the library
    # writes a record (sh did nothing the library records).
    [ ! -e "$BATS_TEST_TMPDIR/s.jsonl" ] || [ ! -s "$BATS_TEST_TMPDIR/s.jsonl" ]
    [ ! -e "$BATS_TEST_TMPDIR/c.jsonl" ] || [ ! -s "$BATS_TEST_TMPDIR/c.jsonl" ]
}

@test "--help and --version print on stdout and exit 0" {
    run "$LAUNCHER" --help
    assert_success
    assert_line --index 0 --partial 'usage: ktlsshim [options] [--] program'
    for v in SHARDS KTLS STATS CONN_LOG LOG PIN ZEROCOPY TICKET_ROTATE TICKET_KEY_FILE \
        PROM_FILE PROM_INTERVAL KEYUPDATE_LIMIT REKEY_RECORDS RX_NO_PAD; do
        assert_output --partial "KTLSSHIM_$v"
    done
    run "$LAUNCHER" --version
    assert_success
    assert_output --regexp '^ktlsshim [0-9]+\.[0-9]+\.[0-9]+$'
}

@test "usage errors: one line naming the option, exit 2, the program never runs" {
    check_usage() { # expected-substring args...
        local want="$1"; shift
        rm -f ran
        run "$LAUNCHER" "$@" -- sh -c 'touch ran'
        assert_equal "$status" 2
        assert_equal "${#lines[@]}" 1
        assert_output --partial "$want"
        [ ! -e ran ]
    }
    check_usage '--shards "0" is not valid (KTLSSHIM_SHARDS)' -n 0
    check_usage '--shards "1025" is not valid' --shards 1025
    check_usage '--shards "two" is not valid' --shards=two
    check_usage '--ktls "on" is not valid (KTLSSHIM_KTLS): expected auto, off, strict or own' --ktls on
    check_usage '--log "loud" is not valid' -l loud
    check_usage '--stats "rel.jsonl" is not valid (KTLSSHIM_STATS): expected an absolute path' --stats rel.jsonl
    check_usage '--stats "/nonexistent-dir/s" is not valid' --stats /nonexistent-dir/s
    check_usage '--conn-log "c.jsonl" is not valid (KTLSSHIM_CONN_LOG)' --conn-log c.jsonl
    check_usage '--ticket-rotate "59" is not valid' --ticket-rotate 59
    check_usage '--ticket-key-file "/nonexistent-key" is not valid' --ticket-key-file /nonexistent-key
    check_usage 'unknown option --bogus' --bogus 2
    run "$LAUNCHER" --shards
    assert_equal "$status" 2
    assert_output 'ktlsshim: option --shards needs a value'
    run "$LAUNCHER" -n 2
    assert_equal "$status" 2
    assert_output 'ktlsshim: no program to run'
    run -127 "$LAUNCHER" -- /nonexistent-program
    assert_equal "$status" 127
    assert_output --partial 'cannot run /nonexistent-program'
}

@test "the launcher accepts exactly the values the library accepts" {
    # For each option, values on both sides of every rule: the library
    # (variable, preloaded into true) and the launcher must agree.
    agree() { # option variable values...
        local opt="$1" var="$2" v lib_ok cli_ok; shift 2
        for v in "$@"; do
            if env -u KTLSSHIM_LOG LD_PRELOAD="$PRELOAD" "$var=$v" true 2>&1 |
                grep -q "$var"; then lib_ok=no; else lib_ok=yes; fi
            if "$LAUNCHER" --lib "$LIB" "$opt" "$v" -- true 2>/dev/null; then cli_ok=yes; else cli_ok=no; fi
            echo "$opt $v: library $lib_ok, launcher $cli_ok"
            [ "$lib_ok" = "$cli_ok" ] || return 1
        done
    }
    agree --shards KTLSSHIM_SHARDS 1 2 1024 1025 0 auto Auto -1 " 2" 2x ""
    agree --ktls KTLSSHIM_KTLS auto off strict on AUTO ""
    agree --log KTLSSHIM_LOG quiet info debug verbose ""
    agree --ticket-rotate KTLSSHIM_TICKET_ROTATE 60 59 604800 604801 3600 1e3 ""
    agree --stats KTLSSHIM_STATS "$BATS_TEST_TMPDIR/a.jsonl" rel.jsonl /nonexistent-dir/x ""
    agree --ticket-key-file KTLSSHIM_TICKET_KEY_FILE /dev/null /nonexistent-key rel ""
    agree --conn-log KTLSSHIM_CONN_LOG "$BATS_TEST_TMPDIR/c.jsonl" rel.jsonl /nonexistent-dir/x ""
    agree --reload KTLSSHIM_RELOAD SIGHUP HUP USR1 SIGUSR2 WINCH SIGTERM TERM KILL sighup SIG ""
    agree --graceful-signal KTLSSHIM_GRACEFUL_SIGNAL SIGTERM QUIT SIGINT HUP SIGWINCH KILL SIGSTOP term ""
    agree --prom-file KTLSSHIM_PROM_FILE "$BATS_TEST_TMPDIR/k.prom" /nonexistent-dir/k.prom rel.prom \
        "$BATS_TEST_TMPDIR/" "/$(printf 'a%.0s' {1..4063})" "/$(printf 'a%.0s' {1..4062})" ""
    agree --prom-interval KTLSSHIM_PROM_INTERVAL 1 5 3600 0 3601 5s -5 ""
    agree --keyupdate-limit KTLSSHIM_KEYUPDATE_LIMIT 0 100 1000000 1000001 -1 10/s ""
    agree --rekey-records KTLSSHIM_REKEY_RECORDS 16 15 16777216 16777217 8388608 1e6 ""
}

@test "every variable the library reads has a launcher option (shim/core/config.c's list against --help)" {
    run "$PY" - "$ROOT/shim/core/config.c" "$LAUNCHER" <<'PYEOF'
import re, subprocess, sys
src = open(sys.argv[1]).read()
known = re.search(r"known\[\] = \{(.*?)\};", src, re.S).group(1)
names = set(re.findall(r'"(KTLSSHIM_[A-Z_]+)"', known)) - {"KTLSSHIM_WORKER"}
helptext = subprocess.run([sys.argv[2], "--help"], capture_output=True, text=True).stdout
missing = sorted(n for n in names if not re.search(r"\b%s\b" % n, helptext))
print("missing:", " ".join(missing) if missing else "none")
PYEOF
    assert_output 'missing: none'
}

@test "a library already in LD_PRELOAD is not preloaded twice (same file silently, another copy with a note)" {
    run env LD_PRELOAD="${PRE:+$PRE }$LIB" "$LAUNCHER" -- sh -c 'echo "$LD_PRELOAD"'
    assert_success
    assert_output "${PRE:+$PRE }$LIB"
    mkdir other && cp "$LIB" other/libktlsshim.so
    run env LD_PRELOAD="${PRE:+$PRE }$BATS_TEST_TMPDIR/other/libktlsshim.so" "$LAUNCHER" -- \
        sh -c 'echo "$LD_PRELOAD"'
    assert_success
    assert_line --index 0 "ktlsshim: LD_PRELOAD already has $BATS_TEST_TMPDIR/other/libktlsshim.so; not adding $(readlink -f "$LIB") (one copy of the library per process)"
    assert_line --index 1 "${PRE:+$PRE }$BATS_TEST_TMPDIR/other/libktlsshim.so"
    # Only the one copy is mapped (its segments share one path).
    run sh -c "env LD_PRELOAD='${PRE:+$PRE }$BATS_TEST_TMPDIR/other/libktlsshim.so' '$LAUNCHER' 2>/dev/null -- \
        cat /proc/self/maps | grep libktlsshim.so | awk '{ print \$6 }' | sort -u"
    assert_output "$BATS_TEST_TMPDIR/other/libktlsshim.so"
}

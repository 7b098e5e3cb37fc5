#!/usr/bin/env bats
# The library under valgrind, inside real servers: no invalid access, no
# uninitialised use, no leak of its own, in the supervisor and the workers.

load '../helpers/common'

setup() {
    [ "${KTLSSHIM_TEST_ASAN:-0}" != 1 ] || skip "valgrind does not run ASan builds"
    command -v valgrind >/dev/null || skip "valgrind is not installed"
    cd "$BATS_TEST_TMPDIR"
    make_certs
    echo body > index.html
}
teardown() { teardown_servers; }

VG="valgrind --error-exitcode=42 --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite --log-file=vg.%p.log"

# check_logs [SKIP-PID...]: every valgrind log (one per process: the
# supervisor, each worker) ends with "ERROR SUMMARY: 0 errors" (definite
# leaks count as errors here). On failure it prints each error with the
# library's own frames (its source files, or libktlsshim.so) marked "<<".
check_logs() {
    run "$PY" - "$@" <<'PYEOF'
import glob, re, sys
skip = set(sys.argv[1:])
lib = re.compile(r"\((?:config|log|stats|shard|supervisor|ossl|ktls|resume|init|real)\.c:\d+\)|libktlsshim")
logs = [f for f in sorted(glob.glob("vg.*.log")) if f.split(".")[1] not in skip]
bad = 0
for f in logs:
    text = open(f).read()
    if re.search(r"ERROR SUMMARY: 0 errors", text):
        continue
    bad += 1
    print("== %s: valgrind found errors (library frames marked <<)" % f)
    for line in text.splitlines():
        print(line + ("   <<" if lib.search(line) else ""))
print("%d logs, %d with errors" % (len(logs), bad))
sys.exit(1 if bad or not logs else 0)
PYEOF
    echo "$output"
    [ "$status" -eq 0 ]
}

# s_server has no SIGTERM handler: its processes die of the signal, so
# valgrind's exit status cannot carry its verdict; each log's ERROR SUMMARY
# (definite leaks included) does. The tiny server below exits by exit():
# there valgrind's exit status is checked too.
@test "valgrind: sharded openssl s_server with TLS 1.2/1.3, tickets and session IDs across workers" {
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" $VG \
        openssl s_server -WWW -quiet -accept "127.0.0.1:$port" -cert "$CERTS/ec.pem" -key "$CERTS/ec.key"
    wait_port "$port" || wait_port "$port"
    for args in "-tls1_3" "-tls1_2" "-tls1_2 -no_ticket"; do
        rm -f sess.pem
        printf 'GET /index.html HTTP/1.0\r\n\r\n' | timeout 60 openssl s_client -connect "127.0.0.1:$port" -ign_eof -sess_out sess.pem $args >/dev/null 2>&1
        for i in 1 2 3; do
            out=$(printf 'GET /index.html HTTP/1.0\r\n\r\n' | timeout 60 openssl s_client -connect "127.0.0.1:$port" -ign_eof -sess_in sess.pem $args 2>/dev/null | grep -c '^Reused' || true)
            assert_equal "$out" 1
        done
    done
    for i in 1 2 3 4; do
        run curl -sk --max-time 60 "https://127.0.0.1:$port/index.html"
        assert_output body
    done
    kill -TERM "$(pid_of srv)"
    wait_gone "$(pid_of srv)" 60
    wait_status srv
    # the supervisor and both workers, each with its summary
    run sh -c "grep -l 'ERROR SUMMARY' vg.*.log | wc -l"
    assert_output 3
    check_logs
    run json_get s.jsonl supervisor connections.tls
    assert_output 16
}

@test "valgrind: sharded tiny server, a worker killed and respawned, signals forwarded; every process exits clean" {
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_PIN=on $VG "$TINY" --port "$port" --second "$(free_port)" --exit-on-term
    wait_port "$port" || wait_port "$port"
    sup=$(pid_of srv)
    wait_until 60 n_children "$sup" 2
    for i in $(seq 10); do ask "$port" info >/dev/null; done
    victim=$(children_of "$sup" | head -1)
    kill -KILL "$victim"
    respawned() { n_children "$sup" 2 && ! children_of "$sup" | grep -qx "$victim"; }
    wait_until 60 respawned
    for i in $(seq 10); do ask "$port" info >/dev/null; done
    kill -HUP "$sup"
    run procs_py "$port" "$sup" <<'PYEOF'
import sys
from procs import *
port, sup = int(sys.argv[1]), int(sys.argv[2])
per_worker(port, children(sup), lambda r: r["hups"] == "1", seconds=120)
print("ok")
PYEOF
    assert_output ok
    kill -TERM "$sup"
    wait_status srv
    check_logs "$victim"   # killed mid-run: its log has no summary
    assert_equal "$status_of" 0
}

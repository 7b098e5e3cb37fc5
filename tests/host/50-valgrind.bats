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

VG="valgrind -q --error-exitcode=42 --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite --log-file=vg.%p.log"

# Every valgrind log: no error at all, and no definite leak whose stack
# passes through the library.
check_logs() {
    local logs
    logs=$(ls vg.*.log)
    [ -n "$logs" ]
    run sh -c "cat vg.*.log | grep -E 'Invalid|uninitialised|Mismatched|overlap|definitely lost' -A 12 | grep -c ktlsshim"
    assert_output 0
    run sh -c "grep -l 'Invalid \\(read\\|write\\)\\|uninitialised' vg.*.log"
    assert_output ""
}

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
    wait_gone "$(pid_of srv)" 30
    check_logs
    run json_get s.jsonl supervisor connections.tls
    assert_output 16
}

@test "valgrind: sharded tiny server, a worker killed and respawned, signals forwarded" {
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_PIN=on $VG "$TINY" --port "$port" --second "$(free_port)"
    wait_port "$port" || wait_port "$port"
    for i in $(seq 10); do ask "$port" info >/dev/null; done
    victim=$(children_of "$(pid_of srv)" | head -1)
    kill -KILL "$victim"
    sleep 3
    for i in $(seq 10); do ask "$port" info >/dev/null; done
    kill -HUP "$(pid_of srv)"
    sleep 1
    kill -TERM "$(pid_of srv)"
    wait_gone "$(pid_of srv)" 30
    rm -f "vg.$victim.log"   # killed mid-run: its log has no summary
    check_logs
}

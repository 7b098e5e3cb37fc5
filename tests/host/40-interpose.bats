#!/usr/bin/env bats
# Living inside someone else's process: private libssl, threads, fork.

load '../helpers/common'
load '../helpers/tls'

setup() { cd "$BATS_TEST_TMPDIR"; make_certs; }
teardown() { teardown_servers; }

@test "python's _ssl (libssl loaded with RTLD_LOCAL) is hooked through the private libssl" {
    cat > srv.py <<'PYEOF'
import http.server, signal, ssl, sys
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
httpd = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
httpd.serve_forever()
PYEOF
    head -c 300000 /dev/urandom > f.bin
    want=$(sha256sum < f.bin)
    port=$(free_port)
    start srv env KTLSSHIM_LOG=debug KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" \
        "$PY" srv.py "$port" "$CERTS/ec.pem" "$CERTS/ec.key"
    wait_port "$port"
    # 40 downloads, 8 at a time: the server's threads run the hooks at once.
    seq 40 | xargs -P 8 -I{} sh -c "curl -sk https://127.0.0.1:$port/f.bin | sha256sum > got.{}"
    run sh -c "cat got.* | sort | uniq -c"
    assert_output "     40 $want"
    run grep -c "not in the global scope (loaded with RTLD_LOCAL); using .*libssl.so.3" "$BATS_TEST_TMPDIR/srv.err"
    assert_output 1
    kill -TERM "$(pid_of srv)"   # the script exits normally on SIGTERM
    wait_gone "$(pid_of srv)" 5
    run json_get s.jsonl process connections.tls
    assert_output 40
    run json_get s.jsonl process bytes.user_tx
    [ "$output" -ge 12000000 ]
}

@test "dlopen and dlmopen stay the caller's (the library hooks them to learn of loads): \$ORIGIN is the calling object's directory, dlerror() the loader's" {
    local without="${PRELOAD% *}"
    [ "$without" != "$PRELOAD" ] || without=""
    run env LD_PRELOAD="$without" "$PY" "$HELPERS_DIR/dl_caller.py"
    assert_success
    local alone="$output"
    run env LD_PRELOAD="$PRELOAD" "$PY" "$HELPERS_DIR/dl_caller.py"
    assert_success
    assert_equal "$output" "$alone"
    if [ "${KTLSSHIM_TEST_ASAN:-0}" != 1 ]; then # ASan's own dlopen hook is not its caller's
        assert_line "ctypes \$ORIGIN: True"
        assert_line "dlopen \$ORIGIN/libz.so.1 True None None"
        assert_line "dlmopen \$ORIGIN/liblzma.so.5 True None None"
    fi
    assert_line "dlopen /nonexistent/x.so False b'/nonexistent/x.so: cannot open shared object file: No such file or directory' None"
}

# master_conf PORT WORKERS: nginx.conf for nginx with its master process
# and WORKERS workers, TLS on PORT, serving www/index.html ("hi").
master_conf() {
    mkdir -p www logs
    echo hi > www/index.html
    cat > nginx.conf <<EOF2
daemon off;
master_process on;
user root;
worker_processes $2;
pid $BATS_TEST_TMPDIR/nginx.pid;
error_log $BATS_TEST_TMPDIR/logs/error.log;
events { worker_connections 64; }
http {
    access_log off;
$(nginx_temp_paths)
    server {
        listen 127.0.0.1:$1 ssl;
        ssl_certificate $CERTS/ec.pem; ssl_certificate_key $CERTS/ec.key;
        root $BATS_TEST_TMPDIR/www;
    }
}
EOF2
}

@test "nginx with master_process on, unsharded: each process writes its own record" {
    port=$(free_port)
    master_conf "$port" 2
    start srv env KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" \
        /usr/sbin/nginx -e "$BATS_TEST_TMPDIR/logs/error.log" -c "$BATS_TEST_TMPDIR/nginx.conf"
    wait_port "$port"
    for i in $(seq 10); do
        run curl -sk "https://127.0.0.1:$port/index.html"
        assert_output hi
    done
    kill -QUIT "$(pid_of srv)"   # graceful: workers exit normally
    wait_gone "$(pid_of srv)" 10
    # Only the workers spoke TLS: their records, one per pid, add up to 10.
    run json_get s.jsonl process connections.tls
    assert_output 10
    run sh -c "grep -c '\"role\":\"process\"' s.jsonl"
    [ "$output" -ge 1 ]
}

@test "nginx with master_process on, sharded: the processes a worker forks write worker_child records, summed by the supervisor" {
    port=$(free_port)
    master_conf "$port" 1
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" \
        /usr/sbin/nginx -e "$BATS_TEST_TMPDIR/logs/error.log" -c "$BATS_TEST_TMPDIR/nginx.conf"
    wait_port "$port"
    wait_until 30 n_children "$(pid_of srv)" 2
    for i in $(seq 10); do
        run curl -sk --max-time 20 "https://127.0.0.1:$port/index.html"
        assert_output hi
    done
    kill -QUIT "$(pid_of srv)"   # forwarded: each nginx master stops gracefully
    wait_gone "$(pid_of srv)" 30
    run "$PY" - <<'PYEOF'
import json
R = [json.loads(l) for l in open("s.jsonl")]
kids = [r for r in R if r["role"] == "worker_child"]
sup = [r for r in R if r["role"] == "supervisor"][0]
assert len([r for r in R if r["role"] == "worker"]) == 2, R
assert kids and sum(r["connections"]["tls"] for r in kids) == 10, kids
assert sorted({r["shard"] for r in kids}) <= [0, 1], kids
assert sup["connections"]["tls"] == 10, sup
print("ok")
PYEOF
    assert_output ok
}

@test "SSL_dup of an SSL carrying the library's state (the program's info callback): each duplicate gets its own, none is freed twice, the program's callback runs on every duplicate" {
    reuse_server dup
}

@test "one SSL reused with SSL_clear: each handshake on it is a new connection, with a record of its own" {
    reuse_server clear
}

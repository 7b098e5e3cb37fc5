#!/usr/bin/env bats
# The per-connection log, KTLSSHIM_CONN_LOG, on the host (no tls ULP): one
# JSON line per TLS connection of a real server (Python's http.server with
# ssl), user space both ways with the reason no_kernel_tls, and bytes equal
# to what curl sent and received. tests/vm/25-connlog.bats is the kTLS side.

load '../helpers/common'
load '../helpers/tls'
bats_require_minimum_version 1.5.0

setup() {
    cd "$BATS_TEST_TMPDIR"
    make_certs
    make_files 0 16385 1048583
    export KTLSSHIM_LOG=info
    unset KTLSSHIM_KTLS KTLSSHIM_SHARDS KTLSSHIM_ZEROCOPY KTLSSHIM_CONN_LOG
    CONN="$BATS_TEST_TMPDIR/conn.jsonl"
}
teardown() { teardown_servers; }

need_no_tls() {
    if grep -qw tls /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null; then
        skip "this kernel has the tls ULP: see tests/vm/25-connlog.bats"
    fi
}

# get PORT FILE CURL-OPTION...: fetches FILE by the name localhost (so curl
# sends SNI); appends "local_port header_bytes body_bytes request_bytes" to
# curl.out and checks the body's hash.
get() {
    local port=$1 f=$2
    shift 2
    curl -sSkf --max-time 30 "$@" --resolve "localhost:$port:127.0.0.1" -o body \
        -w '%{local_port} %{size_header} %{size_download} %{size_request}\n' \
        "https://localhost:$port/$f" >>curl.out
    [ "$(sha body)" = "$(sha "$WWW/$f")" ]
}

@test "python https: one line per connection, user space with no_kernel_tls, bytes equal curl's" {
    need_no_tls
    port=$(pick_port)
    start srv env KTLSSHIM_CONN_LOG="$CONN" "$PY" "$(py_server)" --port "$port" \
        --cert "$CERTS/ec.pem" --key "$CERTS/ec.key" --dir "$WWW"
    wait_listen "$port"
    get "$port" s0 --tlsv1.3
    get "$port" s16385 --tlsv1.3 --tls13-ciphers TLS_CHACHA20_POLY1305_SHA256
    get "$port" s1048583 --tlsv1.2 --tls-max 1.2 --ciphers ECDHE-ECDSA-AES256-GCM-SHA384
    get "$port" s1048583 --tlsv1.3
    stop_srv srv
    run "$PY" - "$CONN" curl.out <<'PYEOF'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
curl = [l.split() for l in open(sys.argv[2])]
assert len(lines) == 4, lines
by_port = {int(l["peer"].rsplit(":", 1)[1]): l for l in lines}
want = [("1.3", "TLS_AES_256_GCM_SHA384"), ("1.3", "TLS_CHACHA20_POLY1305_SHA256"),
        ("1.2", "ECDHE-ECDSA-AES256-GCM-SHA384"), ("1.3", "TLS_AES_256_GCM_SHA384")]
for (port, hdr, body, req), (ver, cipher) in zip(curl, want):
    l = by_port[int(port)]
    assert l["ktlsshim_conn"] == 1 and l["peer"] == "127.0.0.1:" + port, l
    assert l["sni"] == "localhost" and l["tls"] == ver and l["cipher"] == cipher, l
    assert l["resumed"] is False and l["duration_us"] > 0, l
    for d in ("tx", "rx"):
        assert l[d]["path"] == "user" and l[d]["reason"] == "no_kernel_tls", l
        assert l[d]["bytes_ktls"] == 0, l
    # The server sent curl's header and body, and received its request.
    assert l["tx"]["bytes_user"] == int(hdr) + int(body), (l, hdr, body)
    assert l["tx"]["bytes_sendfile"] == 0, l
    assert l["rx"]["bytes_user"] == int(req), (l, req)
print("ok")
PYEOF
    assert_output ok
}

@test "KTLSSHIM_CONN_LOG off: no file, no line; a relative path is refused with one line" {
    port=$(pick_port)
    start srv env "$PY" "$(py_server)" --port "$port" \
        --cert "$CERTS/ec.pem" --key "$CERTS/ec.key" --dir "$WWW"
    wait_listen "$port"
    get "$port" s16385
    stop_srv srv
    [ ! -e "$CONN" ]
    run env LD_PRELOAD="$PRELOAD" KTLSSHIM_CONN_LOG=conn.jsonl true
    assert_success
    assert_output --partial 'KTLSSHIM_CONN_LOG="conn.jsonl" is not valid: expected an absolute path'
    assert_equal "${#lines[@]}" 1
    [ ! -e conn.jsonl ]
}

@test "sharded N=2: both workers write lines to the one log (opened before fork), none interleaved" {
    port=$(pick_port)
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_CONN_LOG="$CONN" "$PY" "$(py_server)" \
        --port "$port" --cert "$CERTS/ec.pem" --key "$CERTS/ec.key" --dir "$WWW"
    wait_listen "$port"
    for i in $(seq 20); do get "$port" s16385; done
    stop_srv srv
    run "$PY" - "$CONN" <<'PYEOF'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert len(lines) == 20, len(lines)
assert len({l["pid"] for l in lines}) == 2, {l["pid"] for l in lines}
assert all(l["rx"]["bytes_user"] > 0 and l["tx"]["bytes_user"] > 16385 for l in lines)
print("ok")
PYEOF
    assert_output ok
}

@test "a program that drops privileges after start still logs its connections (file opened at load)" {
    [ "$(id -u)" = 0 ] || skip "needs root to drop privileges"
    port=$(pick_port)
    # The server's files where the user nobody can read them (the test's own
    # directory is root's alone); the log stays root's, mode 0600.
    pub=$(mktemp -d /tmp/ks-connlog-drop.XXXXXX)
    chmod 0755 "$pub"
    cp "$(py_server)" "$CERTS/ec.pem" "$CERTS/ec.key" "$WWW/s16385" "$WWW/s0" "$pub/"
    chmod 0644 "$pub"/*
    cat > "$pub/drop.py" <<'EOF'
import os, runpy, sys
os.setgid(65534); os.setuid(65534)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
EOF
    : > "$CONN" && chmod 0600 "$CONN"
    start srv env KTLSSHIM_CONN_LOG="$CONN" "$PY" "$pub/drop.py" "$pub/https_server.py" \
        --port "$port" --cert "$pub/ec.pem" --key "$pub/ec.key" --dir "$pub"
    wait_listen "$port"
    get "$port" s16385
    get "$port" s0
    stop_srv srv
    run stat -c '%U %a' "$CONN"
    assert_output 'root 600'
    run sh -c "grep -c '\"ktlsshim_conn\":1' '$CONN'"
    rm -rf "$pub"
    assert_output 2
}

@test "a program that closes every fd at start: the log stops with one line, the program's own file is never written" {
    port=$(pick_port)
    # Like a daemon: close every inherited descriptor, then open a file of
    # its own, which takes the lowest number (the log's).
    cat > closer.py <<'EOF2'
import os, runpy, sys
os.closerange(3, 1024)
mine = open("mine.txt", "w")
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
EOF2
    start srv env KTLSSHIM_CONN_LOG="$CONN" "$PY" closer.py "$(py_server)" --port "$port" \
        --cert "$CERTS/ec.pem" --key "$CERTS/ec.key" --dir "$WWW"
    wait_listen "$port"
    get "$port" s16385
    get "$port" s0
    stop_srv srv
    [ -f mine.txt ]
    run cat mine.txt
    assert_output ''
    run grep -c 'closed by the program; KTLSSHIM_CONN_LOG is off' srv.err
    assert_output 1
    [ ! -s "$CONN" ]
}

@test "nginx, master as root and its worker as nobody: the worker's connections are in the root-owned log" {
    [ "$(id -u)" = 0 ] || skip "needs root to drop privileges"
    port=$(pick_port)
    pub=$(mktemp -d /tmp/ks-connlog-nginx.XXXXXX)
    chmod 0755 "$pub"
    cp "$WWW/s16385" "$pub/" && chmod 0644 "$pub/s16385"
    mkdir -p logs
    cat > nginx.conf <<EOF2
daemon off;
master_process on;
user nobody nogroup;
worker_processes 1;
pid $BATS_TEST_TMPDIR/logs/nginx.pid;
error_log $BATS_TEST_TMPDIR/logs/error.log;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $pub/body;
    server {
        listen 127.0.0.1:$port ssl;
        ssl_certificate $CERTS/ec.pem;
        ssl_certificate_key $CERTS/ec.key;
        root $pub;
    }
}
EOF2
    : > "$CONN" && chmod 0600 "$CONN"
    start srv env KTLSSHIM_CONN_LOG="$CONN" /usr/sbin/nginx -e "$BATS_TEST_TMPDIR/logs/error.log" \
        -c "$BATS_TEST_TMPDIR/nginx.conf"
    wait_listen "$port"
    for i in 1 2 3; do get "$port" s16385; done
    worker=$(pgrep -P "$(pid_of srv)" | head -1)
    run stat -c %U "/proc/$worker"
    assert_output nobody
    stop_srv srv
    rm -rf "$pub"
    run stat -c '%U %a' "$CONN"
    assert_output 'root 600'
    run "$PY" - "$CONN" "$worker" <<'PYEOF'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert len(lines) == 3, lines
assert all(l["pid"] == int(sys.argv[2]) for l in lines), lines
assert all(l["tx"]["bytes_user"] > 16385 for l in lines), lines
print("ok")
PYEOF
    assert_output ok
}

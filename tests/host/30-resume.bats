#!/usr/bin/env bats
# Session resumption across shards: a session made on one worker resumes on
# another, for TLS 1.3 tickets, TLS 1.2 tickets and TLS 1.2 session IDs.

load '../helpers/common'

setup() {
    cd "$BATS_TEST_TMPDIR"
    make_certs
    echo resumed-body > index.html
}
teardown() { teardown_servers; }

# The Python server makes its SSLContext after listen(), i.e. in each worker:
# without the library's shared keys every worker would have its own.
py_server() {
    cat > tls_server.py <<'PYEOF'
import http.server, ssl, sys
httpd = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
httpd.serve_forever()
PYEOF
    echo "$PY tls_server.py $1 $CERTS/ec.pem $CERTS/ec.key"
}

# connect PORT ARGS...: one s_client request; prints New/Reused.
connect() {
    local port=$1; shift
    printf 'GET /index.html HTTP/1.0\r\n\r\n' |
        timeout 20 openssl s_client -connect "127.0.0.1:$port" -ign_eof "$@" 2>/dev/null |
        grep -oE '^(New|Reused)' || true
}

# resume_across SERVER-NAME PORT CLIENT-ARGS...: makes a session, resumes it
# 12 times; every resumption must be "Reused" and at least one must be served
# by a worker other than the one that made the session.
resume_across() {
    local name=$1 port=$2; shift 2
    rm -f sess.pem
    out=$(connect "$port" -sess_out sess.pem "$@")
    assert_equal "$out" New
    for i in $(seq 12); do
        out=$(connect "$port" -sess_in sess.pem "$@")
        assert_equal "$out" Reused
    done
    # Which worker did each handshake: the pid on each debug line, in order.
    pids=$(grep -o '^ktlsshim\[[0-9]*\]: handshake done' "$BATS_TEST_TMPDIR/$name.err" |
        grep -o '[0-9]*' | tail -13)
    maker=$(echo "$pids" | head -1)
    others=$(echo "$pids" | tail -12 | grep -vxc "$maker" || true)
    [ "$others" -ge 1 ]
    run grep -c "(resumed)" "$BATS_TEST_TMPDIR/$name.err"
    [ "$output" -ge 12 ]
}

@test "s_server -WWW, N=2: TLS 1.3 tickets, TLS 1.2 tickets and TLS 1.2 session IDs resume on any worker" {
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_LOG=debug \
        openssl s_server -WWW -quiet -accept "127.0.0.1:$port" -cert "$CERTS/ec.pem" -key "$CERTS/ec.key"
    wait_port "$port"
    resume_across srv "$port" -tls1_3
    resume_across srv "$port" -tls1_2
    resume_across srv "$port" -tls1_2 -no_ticket
}

@test "python ssl server (context made in each worker), N=2: TLS 1.3 and 1.2 tickets resume on any worker" {
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_LOG=debug KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" \
        $(py_server "$port")
    wait_port "$port"
    resume_across srv "$port" -tls1_3
    resume_across srv "$port" -tls1_2
    kill -TERM "$(pid_of srv)"; wait_gone "$(pid_of srv)" 5
    run json_get s.jsonl supervisor connections.resumed
    assert_output 24
}

@test "curl, one connection per URL: its sessions resume on both workers (TLS 1.3 and 1.2)" {
    # TLS 1.3 against the Python server; TLS 1.2 against s_server, because
    # Python closes without close_notify and curl then drops a TLS 1.2
    # session (as it does unsharded and without the library).
    for case in "py --tlsv1.3" "s_server --tlsv1.2 --tls-max 1.2"; do
        set -- $case
        server=$1; shift
        port=$(free_port)
        if [ "$server" = py ]; then
            start "srv$port" env KTLSSHIM_SHARDS=2 KTLSSHIM_LOG=debug $(py_server "$port")
        else
            start "srv$port" env KTLSSHIM_SHARDS=2 KTLSSHIM_LOG=debug openssl s_server -WWW -quiet \
                -accept "127.0.0.1:$port" -cert "$CERTS/ec.pem" -key "$CERTS/ec.key"
        fi
        wait_port "$port"
        err="$BATS_TEST_TMPDIR/srv$port.err"
        urls=$(for i in $(seq 16); do printf 'https://127.0.0.1:%s/index.html ' "$port"; done)
        run sh -c "curl -sk $* -H 'Connection: close' $urls"
        assert_equal "$(echo "$output" | grep -c resumed-body)" 16
        run grep -c "handshake done" "$err"
        assert_output 16
        run grep -c "(resumed)" "$err"
        assert_output 15
        run sh -c "grep '(resumed)' '$err' | grep -o '^ktlsshim\[[0-9]*\]' | sort -u | wc -l"
        assert_output 2
    done
}

@test "exec mode (KTLSSHIM_RELOAD): curl's sessions resume on both workers (TLS 1.3 and 1.2)" {
    # Exec-mode workers are not forks: the shared keys and session cache
    # reach them as a memfd from the supervisor.
    for case in "py --tlsv1.3" "s_server --tlsv1.2 --tls-max 1.2"; do
        set -- $case
        server=$1; shift
        port=$(free_port)
        if [ "$server" = py ]; then
            start "srv$port" env KTLSSHIM_SHARDS=2 KTLSSHIM_RELOAD=SIGHUP KTLSSHIM_LOG=debug \
                $(py_server "$port")
        else
            start "srv$port" env KTLSSHIM_SHARDS=2 KTLSSHIM_RELOAD=SIGHUP KTLSSHIM_LOG=debug \
                openssl s_server -WWW -quiet -accept "127.0.0.1:$port" -cert "$CERTS/ec.pem" \
                -key "$CERTS/ec.key"
        fi
        wait_port "$port"
        err="$BATS_TEST_TMPDIR/srv$port.err"
        grep -q "in exec mode" "$err"
        wait_until 30 n_listening "$port" 2
        urls=$(for i in $(seq 16); do printf 'https://127.0.0.1:%s/index.html ' "$port"; done)
        run sh -c "curl -sk $* -H 'Connection: close' $urls"
        assert_equal "$(echo "$output" | grep -c resumed-body)" 16
        run grep -c "(resumed)" "$err"
        assert_output 15
        run sh -c "grep '(resumed)' '$err' | grep -o '^ktlsshim\[[0-9]*\]' | sort -u | wc -l"
        assert_output 2
    done
}

@test "TLS 1.3, a client that uses each ticket once (as wrk and browsers do): every reconnection resumes, on any worker" {
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_LOG=debug $(py_server "$port")
    wait_port "$port"
    # Each connection presents the ticket the previous one received. libssl
    # 3.0 issues new tickets to a resumed TLS 1.3 client only when the ticket
    # callback asks it to: without that, every other connection was a full
    # handshake (measured: wrk at 0.30x the unsharded rate).
    run "$PY" - "$port" <<'PYEOF'
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
sess, reused, used = None, 0, set()
for i in range(30):
    if sess is not None and sess.id in used:
        sess = None   # single use: no fresh ticket came, so a full handshake
    with socket.create_connection(("127.0.0.1", int(sys.argv[1]))) as raw:
        with ctx.wrap_socket(raw, session=sess) as t:
            t.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
            while t.recv(4096):
                pass
            reused += t.session_reused
            if sess is not None:
                used.add(sess.id)
            sess = t.session
print(reused)
PYEOF
    assert_output 29
    run sh -c "grep '(resumed)' '$BATS_TEST_TMPDIR/srv.err' | grep -o '^ktlsshim\[[0-9]*\]' | sort -u | wc -l"
    assert_output 2
}

@test "the program's choice wins: nginx's own ssl_session_ticket_key encrypts the tickets, sharded" {
    head -c 80 /dev/urandom > nginx-ticket.key
    mkdir -p www logs
    echo body > www/index.html
    conf() { # conf PORT FILE
        cat > "$2" <<EOF2
daemon off;
master_process off;
pid $BATS_TEST_TMPDIR/$2.pid;
error_log $BATS_TEST_TMPDIR/logs/error.log;
events { worker_connections 64; }
http {
    access_log off;
$(nginx_temp_paths)
    server {
        listen 127.0.0.1:$1 ssl;
        ssl_certificate $CERTS/ec.pem; ssl_certificate_key $CERTS/ec.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_ticket_key $BATS_TEST_TMPDIR/nginx-ticket.key;
        root $BATS_TEST_TMPDIR/www;
    }
}
EOF2
    }
    port=$(free_port)
    conf "$port" a.conf
    start srv env KTLSSHIM_SHARDS=2 /usr/sbin/nginx -e "$BATS_TEST_TMPDIR/logs/error.log" -c "$BATS_TEST_TMPDIR/a.conf"
    wait_port "$port"
    wait_until 30 n_children "$(pid_of srv)" 2   # sharded
    rm -f sess.pem
    out=$(connect "$port" -sess_out sess.pem -tls1_2)
    assert_equal "$out" New
    # An nginx without the library, with the same key file, takes the
    # ticket: it was made with the program's key, not the library's.
    port2=$(free_port)
    conf "$port2" b.conf
    start_plain plain /usr/sbin/nginx -e "$BATS_TEST_TMPDIR/logs/error.log" -c "$BATS_TEST_TMPDIR/b.conf"
    wait_port "$port2"
    out=$(connect "$port2" -sess_in sess.pem -tls1_2)
    assert_equal "$out" Reused
}

@test "the program's choice wins: a server with its session cache off resumes no session ID, sharded" {
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_LOG=debug \
        openssl s_server -WWW -quiet -no_cache -accept "127.0.0.1:$port" -cert "$CERTS/ec.pem" -key "$CERTS/ec.key"
    wait_port "$port"
    wait_until 30 n_children "$(pid_of srv)" 2   # sharded
    rm -f sess.pem

    # The server hands out no session ID, so the client has no session to
    # keep (s_client writes no file), exactly as without the library; and
    # an ID the client proposes is never found.
    for i in $(seq 4); do
        out=$(connect "$port" -sess_out sess.pem -tls1_2 -no_ticket)
        assert_equal "$out" New
        [ ! -e sess.pem ]
    done
    run grep -c "(resumed)" "$BATS_TEST_TMPDIR/srv.err"
    assert_output 0
}

@test "a ticket key file (KTLSSHIM_TICKET_KEY_FILE) is used: tickets survive a restart of the whole group" {
    head -c 80 /dev/urandom > ticket.key
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_TICKET_KEY_FILE="$BATS_TEST_TMPDIR/ticket.key" \
        openssl s_server -WWW -quiet -accept "127.0.0.1:$port" -cert "$CERTS/ec.pem" -key "$CERTS/ec.key"
    wait_port "$port"
    rm -f sess.pem
    out=$(connect "$port" -sess_out sess.pem -tls1_2)
    assert_equal "$out" New
    kill -TERM "$(pid_of srv)"; wait_gone "$(pid_of srv)" 5
    start srv2 env KTLSSHIM_SHARDS=2 KTLSSHIM_TICKET_KEY_FILE="$BATS_TEST_TMPDIR/ticket.key" \
        openssl s_server -WWW -quiet -accept "127.0.0.1:$port" -cert "$CERTS/ec.pem" -key "$CERTS/ec.key"
    wait_port "$port"
    out=$(connect "$port" -sess_in sess.pem -tls1_2)
    assert_equal "$out" Reused
}

@test "a bad KTLSSHIM_TICKET_KEY_FILE is reported and random keys are used" {
    head -c 48 /dev/urandom > short.key
    port=$(free_port)
    start srv env KTLSSHIM_SHARDS=2 KTLSSHIM_LOG=debug KTLSSHIM_TICKET_KEY_FILE="$BATS_TEST_TMPDIR/short.key" \
        openssl s_server -WWW -quiet -accept "127.0.0.1:$port" -cert "$CERTS/ec.pem" -key "$CERTS/ec.key"
    wait_port "$port"
    run grep -c 'KTLSSHIM_TICKET_KEY_FILE=".*short.key" holds 48 bytes: expected exactly 80' "$BATS_TEST_TMPDIR/srv.err"
    assert_output 1
    # random keys shared by the workers: 12 resumptions, all Reused, at
    # least one on the worker that did not make the session
    resume_across srv "$port" -tls1_3
    run env LD_PRELOAD="$PRELOAD" KTLSSHIM_TICKET_ROTATE=5 /bin/true
    assert_output --partial 'KTLSSHIM_TICKET_ROTATE="5" is not valid: expected a whole number of seconds from 60 to 604800; using 3600'
}

@test "unsharded, the library leaves session handling to the program" {
    # The same sequence of New/Reused with and without the library, for
    # Python's server (which resumes tickets but no session IDs of its own).
    seq_of() {
        local out="" args
        for args in "-tls1_3" "-tls1_2" "-tls1_2 -no_ticket"; do
            rm -f sess.pem
            out="$out $(connect "$1" -sess_out sess.pem $args)"
            out="$out $(connect "$1" -sess_in sess.pem $args)"
        done
        echo "$out"
    }
    port=$(free_port)
    start_plain plain $(py_server "$port")
    wait_port "$port"
    plain=$(seq_of "$port")
    teardown_servers
    port=$(free_port)
    start srv env KTLSSHIM_LOG=debug $(py_server "$port")
    wait_port "$port"
    lib=$(seq_of "$port")
    assert_equal "$lib" "$plain"
    # No shared-memory mapping of ours: the process has no 8 MiB shared anon map.
    run sh -c "grep -c 'rw-s.*/dev/zero (deleted)' /proc/$(pid_of srv)/maps"
    assert_output 0
}

# Helpers for the forked-connection suites (tests/host/33-forked-conns.bats,
# tests/vm/33-forked-conns.bats): the Perl IO::Socket::SSL server of
# tests/servers/forking_https.pl and the requests made to it. Load after
# common and tls.

FORKING_HTTPS="$ROOT/tests/servers/forking_https.pl"
BODY=300000 # each request's body and each reply's: a few hundred KB
REPLY_HEAD=43 # "HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n"

# perl_start NAME PORT [forking_https.pl option...]: the server with the
# library (start_plain_perl: without), files from $WWW.
perl_start() {
    local name=$1 port=$2
    shift 2
    start "$name" /usr/bin/perl "$FORKING_HTTPS" --port "$port" --cert "$CERTS/ec.pem" \
        --key "$CERTS/ec.key" --dir "$WWW" "$@"
}
perl_start_plain() {
    local name=$1 port=$2
    shift 2
    start_plain "$name" /usr/bin/perl "$FORKING_HTTPS" --port "$port" --cert "$CERTS/ec.pem" \
        --key "$CERTS/ec.key" --dir "$WWW" "$@"
}

# conn_requests PORT VERSION PATH...: one TLS connection (curl, keep-alive)
# carrying one request per PATH: "echo" and "fork-echo" POST the file
# s$BODY and expect it back, anything else is a GET of that file. Prints
# one line per request that came back wrong; fails if any did.
conn_requests() {
    local port=$1 ver=$2 p i=0 args=() bad=0
    shift 2
    for p in "$@"; do
        # shellcheck disable=SC2046 # the options are words
        [ $i -gt 0 ] && args+=(--next)
        args+=(-sSkf --max-time "${FETCH_TIMEOUT:-60}" $(curl_tls "$ver" aes128) -H 'Expect:'
            -o "$BATS_TEST_TMPDIR/reply.$i")
        case $p in
        echo | fork-echo) args+=(--data-binary "@$WWW/s$BODY") ;;
        esac
        args+=("https://127.0.0.1:$port/$p")
        i=$((i + 1))
    done
    curl "${args[@]}" || { echo "curl failed: TLS $ver $*"; return 1; }
    i=0
    for p in "$@"; do
        if [ "$(sha "$BATS_TEST_TMPDIR/reply.$i")" != "$(sha "$WWW/s$BODY")" ]; then
            echo "BAD: TLS $ver request $i ($p): $(wc -c <"$BATS_TEST_TMPDIR/reply.$i") bytes"
            bad=1
        fi
        rm -f "$BATS_TEST_TMPDIR/reply.$i"
        i=$((i + 1))
    done
    return "$bad"
}

# serve_forked NAME PORT: against the server started as NAME, for TLS 1.2
# and 1.3, two connections each: a POST echo then a GET on one, a POST
# echo alone on the other (6 replies of $BODY bytes in all); then waits for
# the server to end (started with --serve 4; its status: wait_status, not
# under run).
serve_forked() {
    local v
    wait_listen "$2"
    for v in 1.2 1.3; do
        conn_requests "$2" "$v" echo "s$BODY" || return 1
        conn_requests "$2" "$v" echo || return 1
    done
    wait_gone "$(pid_of "$1")" 60 || { echo "$1 did not exit"; return 1; }
}

# own_stderr NAME: the server's stderr without the library's lines.
own_stderr() { grep -vE '^ktlsshim\[[0-9]+\]: ' "$BATS_TEST_TMPDIR/$1.err" || true; }

# connlog_check FILE N PID_EXPR: the connection log holds exactly N lines,
# each of a process for which the Python expression PID_EXPR (over pid) is
# true, each with at least one reply's bytes sent and one body received.
connlog_check() {
    "$PY" - "$@" "$((BODY + REPLY_HEAD))" "$BODY" <<'PYEOF'
import json, sys
path, n, expr, tx_min, rx_min = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
L = [json.loads(l) for l in open(path) if l.strip()]
ok = len(L) == n
for l in L:
    pid = l["pid"]
    tx = l["tx"]["bytes_ktls"] + l["tx"]["bytes_user"]
    rx = l["rx"]["bytes_ktls"] + l["rx"]["bytes_user"]
    ok = ok and eval(expr) and tx >= tx_min and rx >= rx_min
if not ok:
    print("want %d lines, pid %s, tx >= %d, rx >= %d; got:" % (n, expr, tx_min, rx_min))
    for l in L:
        print(json.dumps(l))
    sys.exit(1)
print("ok")
PYEOF
}

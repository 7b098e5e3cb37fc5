# Helpers for tests/*/45-more-servers.bats: a matrix of real servers (Debian
# packages) that the other suites do not start, each run the same way
# without the library, with it, and (on the host) sharded, then compared.
# Load after common, tls and bioservers.
#
# A server NAME is described by two functions:
#   srv_NAME_conf PORT   writes its config under $SRV_DIR and sets
#                        SRV_CMD (array: the command), SRV_LOGS (array: log
#                        files it writes besides stderr/stdout, may be empty),
#                        SRV_CONNS (how many TLS connections srv_NAME_use makes),
#                        SRV_NOISE (a regex of lines it prints now and then
#                        without the library too, left out of the compare),
#                        and SRV_REASON when its connections cannot get kTLS
#                        (the fallback reason they must have on the host and
#                        in the VM, e.g. not_socket for memory BIOs; "any":
#                        not checked)
#   srv_NAME_use PORT    the client side: makes exactly SRV_CONNS TLS
#                        connections, TLS 1.3 and 1.2 in turn as SRV_VERSIONS
#                        says (four on the host, two in the slow VM), checks
#                        every reply (bodies hashed against the source,
#                        protocol replies exactly); prints what differs and
#                        fails
# In the VM, SRV_VM_RX13 and SRV_VM_RX12 say what the receive side of its
# TLS 1.3 and 1.2 connections gets: ktls (the default), bio (the own switch
# under the server's own BIO, both versions), or the fallback reason the
# library must give (e.g. unread), or any (not checked: a known bug,
# FINDINGS.md).
# and is stopped with SIGTERM (its normal stop signal; SRV_SIG to change).
#
# srv_round MODE NAME runs one start-use-stop round, MODE being plain (no
# library), lib (preloaded, unsharded) or shard (KTLSSHIM_SHARDS=2), and
# leaves in $BATS_TEST_TMPDIR/MODE/: status (exit status), use.out (the
# client's output), stats.jsonl, log (the server's own output and logs,
# the library's lines taken out).

SRV_BODY_SIZE=300007

srv_setup() {
    cd "$BATS_TEST_TMPDIR" || return 1
    make_certs
    make_files "$SRV_BODY_SIZE"
    BODY="$WWW/s$SRV_BODY_SIZE"
    export KTLSSHIM_LOG=info
    unset KTLSSHIM_KTLS KTLSSHIM_SHARDS KTLSSHIM_ZEROCOPY KTLSSHIM_STATS
    SRV_VERSIONS="1.3 1.2 1.3 1.2"
    [ "${KTLSSHIM_VM_INSIDE:-0}" = 1 ] && SRV_VERSIONS="1.3 1.2"
    SRV_N=$(wc -w <<<"$SRV_VERSIONS")
}

# srv_round MODE NAME: one round (above). Fails if the server does not
# listen, the client's check fails, or the server does not stop.
srv_round() {
    local mode=$1 name=$2 port pid rc=0
    SRV_DIR="$BATS_TEST_TMPDIR/$mode"
    mkdir -p "$SRV_DIR"
    STATS="$SRV_DIR/stats.jsonl"
    SRV_LOGS=()
    SRV_SIG=TERM
    SRV_REASON=""
    SRV_NOISE='^$'
    SRV_VM_RX13=ktls
    SRV_VM_RX12=ktls
    port=$(pick_port)
    "srv_${name}_conf" "$port"
    case $mode in
    plain) srv_start "$mode" "${SRV_CMD[@]}" ;;
    lib) srv_start "$mode" env LD_PRELOAD="$PRELOAD" KTLSSHIM_STATS="$STATS" "${SRV_CMD[@]}" ;;
    shard) srv_start "$mode" env LD_PRELOAD="$PRELOAD" KTLSSHIM_SHARDS=2 KTLSSHIM_STATS="$STATS" \
        "${SRV_CMD[@]}" ;;
    esac
    wait_listen "$port" || { echo "$name ($mode): not listening; its output:" >&2; srv_log "$mode" >&2; return 1; }
    "srv_${name}_use" "$port" >"$SRV_DIR/use.out" 2>&1 || rc=1
    pid=$(cat "$BATS_TEST_TMPDIR/$mode.spid")
    kill "-$SRV_SIG" "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" 30; then
        echo "$name ($mode) did not stop on SIG$SRV_SIG" >&2
        return 1
    fi
    srv_status "$mode" >"$SRV_DIR/status" && [ -s "$SRV_DIR/status" ] ||
        { echo "$name ($mode): no exit status" >&2; return 1; }
    srv_log "$mode" >"$SRV_DIR/log"
    if [ "$rc" != 0 ]; then
        echo "$name ($mode): the client's check failed:" >&2
        cat "$SRV_DIR/use.out" >&2
        return 1
    fi
}

# srv_start NAME CMD...: CMD in its own session, output to NAME.out and
# NAME.err, its pid in NAME.spid. On the host a Python parent (without the
# library) waits for it and writes in NAME.status how it ended, "exit N" or
# "signal N" (a shell's wait says 143 for both exit 143 and SIGTERM); its
# session's pid goes to NAME.pid for teardown_servers. In the VM, where
# Python takes seconds to start, the shell's wait status.
srv_start() {
    local name=$1 d=$BATS_TEST_TMPDIR
    shift
    rm -f "$d/$name.status" "$d/$name.spid"
    if [ "${KTLSSHIM_VM_INSIDE:-0}" = 1 ]; then
        setsid "$@" >"$d/$name.out" 2>"$d/$name.err" &
        echo $! >"$d/$name.pid"
        echo $! >"$d/$name.spid"
        return
    fi
    setsid "$PY" -c '
import os, signal, subprocess, sys
# Servers that signal their whole process group on the way out (Apache)
# must not end the parent: caught here, so default again in the child after exec.
for n in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(n, lambda *_: None)
p = subprocess.Popen(sys.argv[2:])
with open(sys.argv[1] + ".spid.tmp", "w") as f:
    f.write(str(p.pid))
os.rename(sys.argv[1] + ".spid.tmp", sys.argv[1] + ".spid")
r = p.wait()
with open(sys.argv[1] + ".status", "w") as f:
    f.write("signal %d" % -r if r < 0 else "exit %d" % r)
' "$d/$name" "$@" >"$d/$name.out" 2>"$d/$name.err" &
    echo $! >"$d/$name.pid"
    wait_file "$d/$name.spid" 10
}

# srv_status NAME: how the server started as NAME ended.
srv_status() {
    if [ "${KTLSSHIM_VM_INSIDE:-0}" = 1 ]; then
        wait_status "$1"
        echo "$status_of"
    else
        wait_file "$BATS_TEST_TMPDIR/$1.status" 10 && cat "$BATS_TEST_TMPDIR/$1.status"
    fi
}

# srv_log MODE: the server's stderr, stdout and log files (SRV_LOGS, then
# emptied for the next round), without the library's lines.
srv_log() {
    local f
    cat "$BATS_TEST_TMPDIR/$1.err" "$BATS_TEST_TMPDIR/$1.out" "${SRV_LOGS[@]}" 2>/dev/null |
        grep -v '^ktlsshim\[[0-9]*\]: ' || true
    for f in "${SRV_LOGS[@]}"; do
        [ -e "$f" ] && mv "$f" "$f.$1"
    done
}

# srv_new_log_lines MODE: lines of MODE's log that the plain run has not
# (numbers, hex words and timestamps made alike first), that look like a
# problem (error, warning, failure...). Prints them.
# Sharded, the pid-file lines of docs/config.md's known limit are left out.
srv_new_log_lines() {
    local norm='s/0x[0-9a-fA-F]+/H/g; s/[0-9a-fA-F]{8,}/H/g; s/[0-9]+/N/g' known='^$'
    [ "$1" = shard ] && known='pid file .* overwritten|failed to remove PID file'
    grep -vxFf <(sed -E "$norm" "$BATS_TEST_TMPDIR/plain/log") \
        <(sed -E "$norm" "$BATS_TEST_TMPDIR/$1/log") | grep -vE "$known" | grep -vE "$SRV_NOISE" |
        grep -iE 'err|warn|fail|fatal|crit|alert|emerg|abort|denied|refused|unable|cannot|invalid|exception|traceback' || true
}

# srv_matrix NAME MODE...: plain first, then each MODE; then checks that
# each MODE's exit status is plain's, that its log has no new problem
# lines, and that its stats records counted exactly SRV_CONNS TLS
# connections (sharded: two workers, the supervisor's sums theirs).
# On the host (no tls ULP) every connection falls back with no_kernel_tls;
# in the VM, srv_vm_check does the kernel's side.
srv_matrix() {
    local name=$1 mode new
    shift
    srv_round plain "$name" || return 1
    for mode in "$@"; do
        # The kernel's kTLS counters from here on (tls.bash's snap/delta).
        [ -r /proc/net/tls_stat ] && snap
        srv_round "$mode" "$name" || return 1
        if [ "$(cat "$BATS_TEST_TMPDIR/$mode/status")" != "$(cat "$BATS_TEST_TMPDIR/plain/status")" ]; then
            echo "$name ($mode): exit status $(cat "$BATS_TEST_TMPDIR/$mode/status")," \
                "without the library $(cat "$BATS_TEST_TMPDIR/plain/status")"
            return 1
        fi
        new=$(srv_new_log_lines "$mode")
        if [ -n "$new" ]; then
            echo "$name ($mode): lines the run without the library did not print:"
            echo "$new"
            return 1
        fi
        srv_stats_check "$mode" || { echo "$name ($mode): stats"; return 1; }
        srv_note "$name" "$mode"
    done
}

# srv_note NAME MODE: one line in the bats output: the exit statuses, and
# what the records counted.
srv_note() {
    "$PY" - "$BATS_TEST_TMPDIR/$2/stats.jsonl" "$1 $2: status $(cat "$BATS_TEST_TMPDIR/$2/status")" \
        "(plain $(cat "$BATS_TEST_TMPDIR/plain/status"))" <<'PYEOF' >&3
import json, sys
R = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
W = [r for r in R if r["role"] != "supervisor"]
def s(g, k):
    return sum(r[g][k] for r in W)
fb = {}
for g in ("fallback_tx", "fallback_rx"):
    for r in W:
        for k, v in r[g].items():
            if v:
                fb[g[9:] + "." + k] = fb.get(g[9:] + "." + k, 0) + v
print("#", sys.argv[2], sys.argv[3], "records", len(R), "tls", s("connections", "tls"),
      "(1.2/1.3: %d/%d)" % (s("connections", "tls1_2"), s("connections", "tls1_3")),
      "ktls tx/rx", s("ktls", "tx"), s("ktls", "rx"), "rx_own", s("ktls", "rx_own"),
      "fallback", fb or "-", "ends", [r["end"] for r in R])
PYEOF
}

# srv_stats_check MODE: the records of MODE's round (above).
srv_stats_check() {
    local f="$BATS_TEST_TMPDIR/$1/stats.jsonl" exprs=()
    [ -s "$f" ] || { echo "no stats record in $f"; return 1; }
    if [ "$1" = shard ]; then
        exprs=('len([r for r in R if r["role"] == "worker"]) == 2'
            "SUP('connections.tls') == $SRV_CONNS" "$SUMS_ADD_UP")
    else
        exprs=("S('connections.tls') == $SRV_CONNS")
    fi
    if [ -n "$SRV_REASON" ] && [ "$SRV_REASON" != any ]; then
        exprs+=("S('fallback_tx.$SRV_REASON') == $SRV_CONNS" "S('fallback_rx.$SRV_REASON') == $SRV_CONNS")
    elif [ -z "$SRV_REASON" ] && ! grep -qw tls /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null; then
        exprs+=("S('fallback_tx.no_kernel_tls') == $SRV_CONNS" "S('fallback_rx.no_kernel_tls') == $SRV_CONNS")
    fi
    [ "$SRV_REASON" = any ] || grep -qw tls /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null ||
        exprs+=("S('ktls.tx') == 0")
    stats_check "$f" "${exprs[@]}" >"$BATS_TEST_TMPDIR/$1/stats.check" ||
        { cat "$BATS_TEST_TMPDIR/$1/stats.check"; return 1; }
}

# srv_vm_check: in the VM, after srv_matrix NAME lib:
# without SRV_REASON, kTLS TX and RX on every connection, and the kernel's
# TlsTxSw/TlsRxSw moved by as many; with it, every connection left in user
# space (its reason checked by srv_stats_check) and the kernel's counters
# unmoved. TlsDecryptError never moves.
srv_vm_check() {
    local f="$BATS_TEST_TMPDIR/lib/stats.jsonl" n=$SRV_CONNS rx e=()
    note
    if [ -z "$SRV_REASON" ]; then
        e=("S('ktls.tx') == $n" "S('connections.tls1_3') > 0 and S('connections.tls1_2') > 0")
        rx=0 rxmax=0
        case $SRV_VM_RX13 in
        ktls)
            rx="$rx + S('connections.tls1_3')"
            e+=("S('ktls.rx_own') == S('connections.tls1_3')")
            ;;
        bio)
            rx="$rx + S('connections.tls1_3')"
            e+=("S('ktls.rx_bio') == S('connections.tls')")
            ;;
        any) rxmax="S('connections.tls1_3')" ;;
        *) e+=("S('fallback_rx.$SRV_VM_RX13') >= S('connections.tls1_3')") ;;
        esac
        if [ "$SRV_VM_RX12" = ktls ] || [ "$SRV_VM_RX12" = bio ]; then
            rx="$rx + S('connections.tls1_2')"
        else
            e+=("S('fallback_rx.$SRV_VM_RX12') >= S('connections.tls1_2')")
        fi
        e+=("$rx <= S('ktls.rx') <= $rx + $rxmax"
            "S('ktls.rx') + sum(S('fallback_rx.' + k) for k in R[0]['fallback_rx']) == $n")
        stats_check "$f" "${e[@]}" || return 1
        rx=$(json_get "$f" process ktls.rx)
        [ "$(delta TlsTxSw)" = "$n" ] || { echo "TlsTxSw +$(delta TlsTxSw), want +$n"; return 1; }
        [ "$(delta TlsRxSw)" = "$rx" ] || { echo "TlsRxSw +$(delta TlsRxSw), want +$rx"; return 1; }
    else
        stats_check "$f" "S('ktls.tx') == 0 and S('ktls.rx') == 0" || return 1
        [ "$(delta TlsTxSw)" = 0 ] || { echo "TlsTxSw +$(delta TlsTxSw), want +0"; return 1; }
    fi
    [ "$(delta TlsDecryptError)" = 0 ] || { echo "TlsDecryptError +$(delta TlsDecryptError)"; return 1; }
}

# ---- clients ----

# https_gets PORT [CURL-OPTION...]: four GETs of $BODY, each on its own
# connection, two over TLS 1.3 and two over TLS 1.2; each body's hash must
# be the file's.
https_gets() {
    local port=$1 v got want
    shift
    want=$(sha "$BODY")
    for v in $SRV_VERSIONS; do
        # shellcheck disable=SC2046 # the options are words
        got=$(fetch "$port" "s$SRV_BODY_SIZE" $(curl_tls "$v" aes128) "$@") || got=curl-failed
        [ "$got" = "$want" ] || { echo "TLS $v: got $got, want $want"; return 1; }
    done
}

# tls_read PORT VERSION: connects with openssl s_client (TLS VERSION), sends
# a line, prints the sha256 and the length of all the server sends until it
# closes.
tls_read() {
    local out
    out=$(mktemp "$BATS_TEST_TMPDIR/read.XXXXXX")
    echo hello | timeout 60 openssl s_client -quiet "-tls${2/./_}" -connect "127.0.0.1:$1" 2>"$out.err" >"$out"
    echo "$(sha "$out") $(stat -c %s "$out")"
}

# dot_query PORT NAME...: one DNS-over-TLS query (type A) per NAME, each on
# its own connection, TLS 1.3 and 1.2 in turn; prints "VERSION NAME
# RCODE ADDRESS..." per query (Python's ssl, without the library).
dot_query() {
    env -u LD_PRELOAD "$PY" - "$@" <<'PYEOF'
import socket, ssl, struct, sys
port = int(sys.argv[1])
for i, name in enumerate(sys.argv[2:]):
    ver = ("1.3", "1.2")[i % 2]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[ver]
    q = struct.pack(">HHHHHH", 0x4b1d + i, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=60)) as s:
        s.sendall(struct.pack(">H", len(q)) + q)
        buf = b""
        while len(buf) < 2 or len(buf) < 2 + struct.unpack(">H", buf[:2])[0]:
            d = s.recv(65536)
            if not d:
                sys.exit("closed after %d bytes" % len(buf))
            buf += d
    r = buf[2:]
    ident, flags, qd, an = struct.unpack(">HHHH", r[:8])
    assert ident == 0x4b1d + i, "wrong id"
    p = len(q)  # the answers follow the question, as sent
    addrs = []
    for _ in range(an):
        while r[p] and r[p] < 0xc0:
            p += r[p] + 1
        p += 2 if r[p] >= 0xc0 else 1
        typ, cls, ttl, rdlen = struct.unpack(">HHIH", r[p:p + 10])
        p += 10
        if typ == 1:
            addrs.append(socket.inet_ntoa(r[p:p + rdlen]))
        p += rdlen
    print(ver, name, flags & 15, *addrs)
PYEOF
}

# ---- the servers ----

# lighttpd with mod_openssl: one process, a static file.
srv_lighttpd_conf() {
    cat >"$SRV_DIR/lighttpd.conf" <<CONF
server.document-root = "$WWW"
server.bind = "127.0.0.1"
server.port = $1
server.modules += ("mod_openssl")
ssl.engine = "enable"
ssl.pemfile = "$CERTS/ec.pem"
ssl.privkey = "$CERTS/ec.key"
server.errorlog = "$SRV_DIR/lighttpd.log"
CONF
    SRV_CMD=(lighttpd -D -f "$SRV_DIR/lighttpd.conf")
    SRV_LOGS=("$SRV_DIR/lighttpd.log")
    SRV_CONNS=$SRV_N
}
srv_lighttpd_use() { https_gets "$1"; }

# Apache httpd with the prefork or the worker MPM (the suite's other Apache
# tests use event): bioservers' config with the MPM swapped.
srv_apache_mpm_conf() {
    local m=/usr/lib/apache2/modules
    apache_conf "$1" "$CERTS/ec.pem" "$CERTS/ec.key"
    sed -i -e "s|^LoadModule mpm_event_module .*|LoadModule mpm_$2_module $m/mod_mpm_$2.so|" \
        -e 's|^ThreadsPerChild .*|ThreadsPerChild 4|' "$BATS_TEST_TMPDIR/apache/httpd.conf"
    [ "$2" = prefork ] && sed -i -e '/^ThreadsPerChild /d' -e 's/^ServerLimit .*/ServerLimit 4/' \
        -e 's/^StartServers .*/StartServers 2\nMinSpareServers 1\nMaxSpareServers 4/' \
        -e 's/^MaxRequestWorkers .*/MaxRequestWorkers 4/' \
        "$BATS_TEST_TMPDIR/apache/httpd.conf"
    # shellcheck disable=SC2207 # the command's words
    SRV_CMD=($(apache_args))
    SRV_LOGS=("$BATS_TEST_TMPDIR/logs/error.log")
    SRV_CONNS=$SRV_N
    SRV_VM_RX13=bio SRV_VM_RX12=bio # its own BIO: RX by the own switch under it
}
srv_apache_prefork_conf() { srv_apache_mpm_conf "$1" prefork; }
srv_apache_prefork_use() { https_gets "$1"; }
srv_apache_worker_conf() { srv_apache_mpm_conf "$1" worker; }
srv_apache_worker_use() { https_gets "$1"; }

# Mojolicious's own server (mojo daemon): Perl, IO::Socket::SSL over
# Net::SSLeay, non-blocking, its own event loop.
srv_mojo_conf() {
    SRV_CMD=(perl -MMojolicious::Lite -e 'app->static->paths([shift @ARGV]); app->start' "$WWW"
        daemon -l "https://127.0.0.1:$1?cert=$CERTS/ec.pem&key=$CERTS/ec.key")
    SRV_CONNS=$SRV_N
}
srv_mojo_use() { https_gets "$1"; }

# Twisted's web server (twistd web): TLS through pyOpenSSL.
srv_twisted_conf() {
    SRV_CMD=(twistd3 -n --pidfile= --logfile=- web
        --listen "ssl:$1:interface=127.0.0.1:privateKey=$CERTS/ec.key:certKey=$CERTS/ec.pem" --path "$WWW")
    SRV_CONNS=$SRV_N
    SRV_REASON=not_socket # pyOpenSSL's memory BIOs
}
srv_twisted_use() { https_gets "$1"; }

# cheroot (CherryPy's WSGI server): a thread pool, Python's ssl module.
srv_cheroot_conf() {
    cat >"$SRV_DIR/app.py" <<'PYEOF'
import os, signal, sys
from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter
port, cert, key, root = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def app(env, start_response):
    with open(os.path.join(root, env["PATH_INFO"].lstrip("/")), "rb") as f:
        body = f.read()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
s = wsgi.Server(("127.0.0.1", port), app, numthreads=4)
s.ssl_adapter = BuiltinSSLAdapter(cert, key)
def stop(*_):
    raise KeyboardInterrupt
signal.signal(signal.SIGTERM, stop)
try:
    s.start()
except KeyboardInterrupt:
    s.stop()
PYEOF
    SRV_CMD=("$PY" "$SRV_DIR/app.py" "$1" "$CERTS/ec.pem" "$CERTS/ec.key" "$WWW")
    SRV_CONNS=$SRV_N
}
srv_cheroot_use() { https_gets "$1"; }

# aiohttp's web server: asyncio, Python's ssl module through memory BIOs.
srv_aiohttp_conf() {
    cat >"$SRV_DIR/app.py" <<'PYEOF'
import ssl, sys
from aiohttp import web
port, cert, key, root = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
app = web.Application()
app.router.add_static("/", root)
web.run_app(app, host="127.0.0.1", port=port, ssl_context=ctx, print=None, access_log=None)
PYEOF
    SRV_CMD=("$PY" "$SRV_DIR/app.py" "$1" "$CERTS/ec.pem" "$CERTS/ec.key" "$WWW")
    SRV_CONNS=$SRV_N
    SRV_REASON=not_socket # asyncio's memory BIOs
}
srv_aiohttp_use() { https_gets "$1"; }

# hypercorn (an ASGI server), its asyncio worker.
srv_hypercorn_conf() {
    cat >"$SRV_DIR/asgi_app.py" <<'PYEOF'
import os
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    with open(os.path.join(os.environ["WWW"], scope["path"].lstrip("/")), "rb") as f:
        body = f.read()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
PYEOF
    SRV_CMD=(env WWW="$WWW" PYTHONPATH="$SRV_DIR" "$PY" -m hypercorn --certfile "$CERTS/ec.pem"
        --keyfile "$CERTS/ec.key" --bind "127.0.0.1:$1" asgi_app:app)
    SRV_CONNS=$SRV_N
    # asyncio's memory BIOs; its `ctx.options = OP_NO_COMPRESSION` leaves
    # kTLS asked for (not `disabled`: shim/tls/optreset.c)
    SRV_REASON=not_socket
    # At SIGTERM, now and then (1 stop in 6 without the library): a
    # connection's coroutine closed with the loop.
    SRV_NOISE='^Exception ignored in: <coroutine object worker_serve|^Traceback \(most recent call last\):$|^RuntimeError: coroutine ignored GeneratorExit$' 
}
srv_hypercorn_use() { https_gets "$1"; }

# nghttpd (nghttp2's HTTP/2 server): one thread, libev, non-blocking.
srv_nghttpd_conf() {
    SRV_CMD=(nghttpd -a 127.0.0.1 -d "$WWW" "$1" "$CERTS/ec.key" "$CERTS/ec.pem")
    SRV_CONNS=$SRV_N
}
srv_nghttpd_use() { https_gets "$1" --http2; }

# ncat (nmap's netcat) --ssl -k --sh-exec: a shell child per connection,
# ncat relaying between it and the TLS connection.
srv_ncat_conf() {
    SRV_CMD=(ncat --ssl --ssl-cert "$CERTS/ec.pem" --ssl-key "$CERTS/ec.key" -l 127.0.0.1 "$1" -k
        --sh-exec "cat $BODY")
    SRV_CONNS=$SRV_N
}
srv_ncat_use() {
    local v got want
    want="$(sha "$BODY") $SRV_BODY_SIZE"
    for v in $SRV_VERSIONS; do
        got=$(tls_read "$1" "$v")
        [ "$got" = "$want" ] || { echo "TLS $v: got $got, want $want"; return 1; }
    done
}

# mosquitto (MQTT broker): for each version, a retained message of $BODY
# published, then received by a subscriber (two connections). Its clients'
# --tls-version is a minimum: TLS 1.2 is capped through a private
# OPENSSL_CONF.
srv_mosquitto_conf() {
    cat >"$SRV_DIR/mosquitto.conf" <<CONF
listener $1 127.0.0.1
certfile $CERTS/ec.pem
keyfile $CERTS/ec.key
allow_anonymous true
persistence false
user root
log_dest stderr
CONF
    printf '%s\n' 'openssl_conf = c' '[c]' 'ssl_conf = s' '[s]' 'system_default = d' '[d]' \
        'MaxProtocol = TLSv1.2' >"$SRV_DIR/max12.cnf"
    SRV_CMD=(mosquitto -c "$SRV_DIR/mosquitto.conf")
    SRV_CONNS=$((2 * SRV_N))
}
srv_mosquitto_use() {
    local v got want o c i=0
    want=$(sha "$BODY")
    for v in $SRV_VERSIONS; do
        c=/dev/null
        [ "$v" = 1.2 ] && c=$SRV_DIR/max12.cnf
        i=$((i + 1))
        o=(-h 127.0.0.1 -p "$1" --insecure --cafile "$CERTS/ec.pem" -t "t$i")
        OPENSSL_CONF=$c timeout 30 mosquitto_pub "${o[@]}" -r -f "$BODY" ||
            { echo "TLS $v: mosquitto_pub failed"; return 1; }
        got=$(OPENSSL_CONF=$c timeout 30 mosquitto_sub "${o[@]}" -C 1 -N | sha256sum | cut -d' ' -f1)
        [ "$got" = "$want" ] || { echo "TLS $v: got $got, want $want"; return 1; }
    done
}

# unbound (a DNS resolver) answering DNS over TLS from a local zone.
srv_unbound_conf() {
    cat >"$SRV_DIR/unbound.conf" <<CONF
server:
  interface: 127.0.0.1@$1
  tls-port: $1
  tls-service-key: $CERTS/ec.key
  tls-service-pem: $CERTS/ec.pem
  username: ""
  chroot: ""
  pidfile: ""
  directory: "$SRV_DIR"
  use-syslog: no
  do-ip6: no
  num-threads: 1
  local-zone: "example.com." static
  local-data: "a.example.com. A 192.0.2.8"
  local-data: "b.example.com. A 192.0.2.9"
remote-control:
  control-enable: no
CONF
    SRV_CMD=(unbound -d -c "$SRV_DIR/unbound.conf")
    SRV_CONNS=$SRV_N
}
srv_unbound_use() {
    dns_check "$1" "1.3 a.example.com 0 192.0.2.8" "1.2 nx.example.com 3" \
        "1.3 b.example.com 0 192.0.2.9" "1.2 a.example.com 0 192.0.2.8"
}

# dns_check PORT "VERSION NAME RCODE ADDRESS..."...: the first SRV_N of
# these queries (versions alternate 1.3, 1.2) get exactly these answers.
dns_check() {
    local port=$1 want out
    shift
    want=$(printf '%s\n' "${@:1:SRV_N}")
    # shellcheck disable=SC2046 # the names
    out=$(dot_query "$port" $(printf '%s\n' "$want" | cut -d' ' -f2)) || return 1
    [ "$out" = "$want" ] || { printf 'want:\n%s\ngot:\n%s\n' "$want" "$out"; return 1; }
}

# dnsdist (a DNS load balancer) answering DNS over TLS itself (a spoof
# rule, no backend), its OpenSSL provider. No security poll (no network).
srv_dnsdist_conf() {
    cat >"$SRV_DIR/dnsdist.conf" <<CONF
setSecurityPollSuffix("")
setLocal("127.0.0.1:$(pick_port)")
addTLSLocal("127.0.0.1:$1", "$CERTS/ec.pem", "$CERTS/ec.key", {provider="openssl"})
addAction(AllRule(), SpoofAction("192.0.2.7"))
CONF
    SRV_CMD=(dnsdist --supervised --disable-syslog -C "$SRV_DIR/dnsdist.conf")
    SRV_CONNS=$SRV_N
}
srv_dnsdist_use() {
    dns_check "$1" "1.3 a.example.com 0 192.0.2.7" "1.2 b.example.org 0 192.0.2.7" \
        "1.3 c.example.net 0 192.0.2.7" "1.2 d.example 0 192.0.2.7"
}

# nsd (an authoritative DNS server) answering DNS over TLS from a zone
# file; it forks its server and xfrd processes after it listens. Sharded,
# it runs in exec mode.
srv_nsd_conf() {
    cat >"$SRV_DIR/example.zone" <<'ZONE'
$ORIGIN example.com.
$TTL 300
@ IN SOA ns.example.com. host.example.com. 1 3600 600 86400 300
@ IN NS ns.example.com.
ns IN A 192.0.2.1
a IN A 192.0.2.8
b IN A 192.0.2.9
ZONE
    cat >"$SRV_DIR/nsd.conf" <<CONF
server:
  ip-address: 127.0.0.1@$1
  tls-port: $1
  tls-service-key: $CERTS/ec.key
  tls-service-pem: $CERTS/ec.pem
  username: ""
  chroot: ""
  pidfile: ""
  zonesdir: "$SRV_DIR"
  database: ""
  zonelistfile: "$SRV_DIR/zone.list"
  xfrdfile: "$SRV_DIR/xfrd.state"
  do-ip6: no
  # Sharded (exec mode), each worker binds its UDP sockets itself: without
  # SO_REUSEPORT on them, all but one fail (FINDINGS.md). nsd sets it with
  # reuseport and more than one server process.
  server-count: 2
  reuseport: yes
remote-control:
  control-enable: no
zone:
  name: example.com
  zonefile: example.zone
CONF
    SRV_CMD=(nsd -d -c "$SRV_DIR/nsd.conf")
    SRV_CONNS=$SRV_N
}
srv_nsd_use() {
    dns_check "$1" "1.3 a.example.com 0 192.0.2.8" "1.2 b.example.com 0 192.0.2.9" \
        "1.3 nx.example.com 3" "1.2 ns.example.com 0 192.0.2.1"
}

# proftpd (mod_tls, FTPS with TLS required): a process per session, which
# drops to nobody; each download is a control and a data connection (the
# data one resumes the control one's session). User "t" (password "t",
# from an AuthUserFile) logs in without a chroot; SRV_FTP_ANON=1 logs in
# as anonymous, chrooted into $WWW (proftpd closes every fd at start: the
# library opens KTLSSHIM_STATS again at chroot()).
srv_proftpd_conf() {
    local anon="" login="AuthUserFile $SRV_DIR/ftpd.passwd"
    printf 't:%s:65534:65534::%s:/bin/false\n' "$(openssl passwd -6 -salt ktlsshim t)" "$WWW" \
        >"$SRV_DIR/ftpd.passwd"
    chmod 600 "$SRV_DIR/ftpd.passwd"
    [ "${SRV_FTP_ANON:-0}" = 1 ] && anon="<Anonymous $WWW>
  User nobody
  Group nogroup
  UserAlias anonymous nobody
  RequireValidShell off
</Anonymous>" login=""
    chmod 711 "$BATS_TEST_TMPDIR" "$BATS_RUN_TMPDIR" 2>/dev/null || true
    chmod -R a+rX "$WWW"
    touch "$STATS" && chmod 666 "$STATS"
    cat >"$SRV_DIR/proftpd.conf" <<CONF
ServerName "t"
ServerType standalone
DefaultAddress 127.0.0.1
SocketBindTight on
Port $1
UseIPv6 off
User nobody
Group nogroup
PidFile $SRV_DIR/proftpd.pid
ScoreboardFile $SRV_DIR/proftpd.scoreboard
DelayTable none
WtmpLog off
UseFtpUsers off
UseReverseDNS off
TransferLog none
SystemLog $SRV_DIR/system.log
ModulePath /usr/lib/proftpd
LoadModule mod_tls.c
TLSEngine on
TLSRequired on
TLSLog $SRV_DIR/tls.log
TLSProtocol TLSv1.2 TLSv1.3
TLSECCertificateFile $CERTS/ec.pem
TLSECCertificateKeyFile $CERTS/ec.key
TLSOptions NoSessionReuseRequired
TLSVerifyClient off
RequireValidShell off
AuthOrder mod_auth_file.c mod_auth_unix.c
$login
$anon
CONF
    SRV_CMD=(proftpd -n -c "$SRV_DIR/proftpd.conf")
    SRV_LOGS=("$SRV_DIR/system.log" "$SRV_DIR/tls.log")
    SRV_CONNS=4
    # Its sessions read on fd 0 and write on fd 1 (one socket): TLS 1.3
    # receive is the own switch's all the same.
}
srv_proftpd_use() {
    local v got want out user=t:t
    # Two downloads (four connections): a session takes a second or more.
    [ "${SRV_FTP_ANON:-0}" = 1 ] && user=anonymous:x
    want=$(sha "$BODY")
    out=$(mktemp "$BATS_TEST_TMPDIR/ftp.XXXXXX")
    for v in 1.3 1.2; do
        # shellcheck disable=SC2046 # the options are words
        curl -sSk --max-time 60 --ssl-reqd $(curl_tls "$v" aes128) -o "$out" \
            "ftp://$user@127.0.0.1:$1/s$SRV_BODY_SIZE" || { echo "TLS $v: curl failed"; return 1; }
        got=$(sha "$out")
        [ "$got" = "$want" ] || { echo "TLS $v: got $got, want $want"; return 1; }
    done
}

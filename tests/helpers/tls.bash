# Helpers for the TLS suites (tests/host/20-tls.bats, tests/vm/20-ktls.bats).
# Load after common: load '../helpers/common'; load '../helpers/tls'.
#
# The servers are real programs nobody here wrote (openssl s_server -WWW,
# Python's http.server wrapped with ssl, nginx); the clients are curl,
# openssl s_client and a small Python client that misbehaves on purpose.

# listening PORT: something listens on 127.0.0.1:PORT or [::]:PORT. Read
# from /proc, so that no probe connection is made (the counts stay exact).
listening() {
    local hex
    hex=$(printf '%04X' "$1")
    awk -v p=":$hex" 'FNR > 1 && $4 == "0A" && substr($2, length($2) - 4) == p { f = 1 }
        END { exit !f }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# pick_port: a port that no TCP socket uses right now (no Python: it costs
# seconds in the VM).
pick_port() {
    local p hex
    while :; do
        p=$((20000 + RANDOM % 40000))
        hex=$(printf ':%04X ' "$p")
        grep -q "$hex" /proc/net/tcp /proc/net/tcp6 2>/dev/null || { echo "$p"; return; }
    done
}

# wait_listen PORT [SECONDS]: until something listens there (default 15 s,
# 90 s in the VM where Python takes seconds to start).
wait_listen() {
    local t=${2:-$([ "${KTLSSHIM_VM_INSIDE:-0}" = 1 ] && echo 90 || echo 15)}
    for _ in $(seq $((t * 10))); do
        listening "$1" && return 0
        sleep 0.1
    done
    echo "nothing listens on port $1 after $t s" >&2
    return 1
}

# make_files SIZE...: random files named s<SIZE> in $WWW (made once per run,
# shared by the tests of the run); sets WWW.
make_files() {
    WWW="$BATS_RUN_TMPDIR/www"
    mkdir -p "$WWW"
    local n
    for n in "$@"; do
        [ -f "$WWW/s$n" ] || head -c "$n" /dev/urandom >"$WWW/s$n"
    done
}

sha() { sha256sum <"$1" | cut -d' ' -f1; }

# tls_setup SIZE...: what the kTLS files set up for each test: the test's
# directory, certificates, $WWW files of SIZEs (FILES: their paths, NAMES:
# their names), OUT (uploads received) and GOT (downloads, made), STATS (the
# record file, not exported), a debug log, fetches bounded at 120 s, and
# no KTLSSHIM_KTLS, _SHARDS or _ZEROCOPY from outside.
tls_setup() {
    cd "$BATS_TEST_TMPDIR" || return 1
    make_certs
    make_files "$@"
    unset KTLSSHIM_KTLS KTLSSHIM_SHARDS KTLSSHIM_ZEROCOPY
    export KTLSSHIM_LOG=debug FETCH_TIMEOUT=120
    STATS="$BATS_TEST_TMPDIR/s.jsonl"
    OUT="$BATS_TEST_TMPDIR/out"
    GOT="$BATS_TEST_TMPDIR/got"
    mkdir -p "$GOT"
    FILES=() NAMES=()
    local n
    for n in "$@"; do
        FILES+=("$WWW/s$n")
        NAMES+=("s$n")
    done
}

# vm_setup SIZE...: tls_setup, and only inside the kTLS VM.
vm_setup() {
    if [ "${KTLSSHIM_VM_INSIDE:-0}" != 1 ]; then
        fail "not inside the kTLS VM: run these through scripts/vm-run (make test-vm)"
    fi
    tls_setup "$@"
}

# curl_tls VERSION AEAD [ec|rsa]: curl options that pin TLS VERSION (1.2 or
# 1.3) and the AEAD (aes128, aes256, chacha) for a certificate of that type.
curl_tls() {
    if [ "$1" = 1.3 ]; then
        echo "--tlsv1.3 --tls-max 1.3 --tls13-ciphers $(cipher_name 1.3 "$2" "${3:-ec}")"
    else
        echo "--tlsv1.2 --tls-max 1.2 --ciphers $(cipher_name 1.2 "$2" "${3:-ec}")"
    fi
}

# cipher_name VERSION AEAD [ec|rsa]: OpenSSL's name of that suite (what the
# library's debug line prints).
cipher_name() {
    local auth=ECDSA
    [ "${3:-ec}" = rsa ] && auth=RSA
    case "$1/$2" in
    1.3/aes128) echo TLS_AES_128_GCM_SHA256 ;;
    1.3/aes256) echo TLS_AES_256_GCM_SHA384 ;;
    1.3/chacha) echo TLS_CHACHA20_POLY1305_SHA256 ;;
    1.2/aes128) echo "ECDHE-$auth-AES128-GCM-SHA256" ;;
    1.2/aes256) echo "ECDHE-$auth-AES256-GCM-SHA384" ;;
    1.2/chacha) echo "ECDHE-$auth-CHACHA20-POLY1305" ;;
    *) echo "cipher_name: $1 $2?" >&2; return 1 ;;
    esac
}

# fetch PORT PATH [CURL-OPTION...]: GETs https://127.0.0.1:PORT/PATH and
# prints the sha256 of the body; fails if curl does.
fetch() {
    local port=$1 path=$2 out
    shift 2
    out=$(mktemp "$BATS_TEST_TMPDIR/body.XXXXXX")
    if ! curl -sSkf --max-time "${FETCH_TIMEOUT:-30}" "$@" -o "$out" "https://127.0.0.1:$port/$path"; then
        rm -f "$out"
        return 1
    fi
    sha "$out"
    rm -f "$out"
}

# ---- variants: one check over a list of (version, cipher), as the
# kernel's tools/testing/selftests/net/tls.c runs its fixtures per variant.
# A server started once is checked over several variants.

# variant_name VERSION AEAD: how a variant is named where it fails:
# "TLS 1.3 aes128 (TLS_AES_128_GCM_SHA256)".
variant_name() {
    echo "TLS $1 $2 ($(cipher_name "$1" "$2" "${VARIANT_KEY:-ec}" 2>&1))"
}

# variants_of "VERSIONS" "AEADS": every (version, AEAD) pair, one a line.
variants_of() {
    local v a
    for v in $1; do
        for a in $2; do echo "$v $a"; done
    done
}

# tls_variants CHECK VARIANT...: runs "CHECK VERSION AEAD [WORD...]" for
# each VARIANT (the words "VERSION AEAD [WORD...]"), every one even after a
# failure; each that fails gets a line "FAIL: <variant_name> [WORD...]";
# fails if any did. CHECK runs as a condition, where errexit does not act:
# it must return non-zero itself (cmd || return 1), not rely on a bare
# failing command.
tls_variants() {
    local check=$1 v w bad=0
    shift
    for v in "$@"; do
        read -r -a w <<<"$v"
        if ! "$check" "${w[@]}"; then
            echo "FAIL: $(variant_name "${w[0]}" "${w[1]}")${w[2]:+ ${w[*]:2}}"
            bad=$((bad + 1))
        fi
    done
    [ "$bad" -eq 0 ]
}

# matrix PORT KEYTYPE "VERSIONS" "AEADS" FILE...: fetches each file of $WWW
# with each version and AEAD (curl). Prints "VERSION AEAD FILE HASH" lines
# (the record of what came back) to $BATS_TEST_TMPDIR/matrix.out, and one
# line per failure on stdout; fails if any fetch failed or any hash differs.
matrix() {
    local port=$1 kt=$2 vers=$3 aeads=$4 v vs=()
    shift 4
    while read -r v; do vs+=("$v $*"); done < <(variants_of "$vers" "$aeads")
    MATRIX_PORT=$port VARIANT_KEY=$kt tls_variants fetch_variant "${vs[@]}"
}

# fetch_variant VERSION AEAD FILE...: matrix's check, on $MATRIX_PORT.
fetch_variant() {
    local v=$1 a=$2 f got bad=0
    shift 2
    for f in "$@"; do
        # shellcheck disable=SC2046 # the options are words
        got=$(fetch "$MATRIX_PORT" "$f" $(curl_tls "$v" "$a" "${VARIANT_KEY:-ec}")) || got=curl-failed
        echo "$v $a $f $got" >>"$BATS_TEST_TMPDIR/matrix.out"
        if [ "$got" != "$(sha "$WWW/$f")" ]; then
            echo "BAD: TLS $v $a $f: $got"
            bad=1
        fi
    done
    return "$bad"
}

# fetch_variants PORT VARIANT...: each VARIANT "VERSION AEAD FILE..."
# fetched from the one server on PORT (curl, EC certificate), as matrix.
fetch_variants() {
    MATRIX_PORT=$1 tls_variants fetch_variant "${@:2}"
}

# count_handshakes NAME VERSION CIPHER TX RX: how many "handshake done" debug
# lines of the server started as NAME match (TX, RX: kTLS or a reason).
# nginx moves its stderr to its error log once started: both are read.
count_handshakes() {
    cat "$BATS_TEST_TMPDIR/$1.err" "$BATS_TEST_TMPDIR/logs/error.log" 2>/dev/null |
        grep -cE "handshake done on fd -?[0-9]+: TLS $2 $3, tx $4, rx $5$" || true
}

# lib_lines NAME: the library's lines of the server started as NAME (its
# stderr, and nginx's error log where nginx moves its stderr).
lib_lines() {
    cat "$BATS_TEST_TMPDIR/$1.err" "$BATS_TEST_TMPDIR/logs/error.log" 2>/dev/null |
        grep -E '^ktlsshim\[[0-9]+\]: ' || true
}

# lib_lines_have NAME REGEX: a line of the library's (lib_lines) matches.
lib_lines_have() { lib_lines "$1" | grep -q "$2"; }

# stop_srv NAME [SECONDS]: SIGTERM to the server started as NAME; it must be
# gone within SECONDS (10); sets $status_of.
stop_srv() {
    local pid
    pid=$(pid_of "$1")
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "${2:-10}"; then
        echo "$1 (pid $pid) did not exit after SIGTERM" >&2
        return 1
    fi
    wait_status "$1"
}

# alive NAME: the server started as NAME still runs.
alive() { kill -0 "$(pid_of "$1")" 2>/dev/null; }

# stats_check FILE EXPR...: each Python expression must hold over the JSON
# Lines file FILE, where
#   S("group.key")  sums the field over every record but the supervisor's,
#   SUP("group.key") is the supervisor's field (KeyError if none),
#   R is the list of records.
# On the first false one, prints it with the records and fails.
stats_check() {
    "$PY" - "$@" <<'PYEOF'
import json, sys
R = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def get(r, f):
    for k in f.split("."):
        r = r[k]
    return r
def S(f):
    return sum(get(r, f) for r in R if r["role"] != "supervisor")
def SUP(f):
    (s,) = [r for r in R if r["role"] == "supervisor"]
    return get(s, f)
for e in sys.argv[2:]:
    if not eval(e):
        print("false:", e)
        for r in R:
            print(json.dumps(r))
        sys.exit(1)
print("ok")
PYEOF
}

# Every counter of a supervisor's record equals the sum over the others.
SUMS_ADD_UP='all(SUP(g+"."+k) == S(g+"."+k) for g in ("connections","ktls","fallback_tx","fallback_rx","bytes") for k in R[0][g])'

# py_server: writes the Python HTTPS server to $BATS_TEST_TMPDIR/https_server.py
# and prints its path. Python's own http.server and ssl, nothing else:
#   https_server.py --port P --cert C --key K --dir D [--max 1.2|1.3] [--ciphers S]
#                   [--clear-ktls] [--assign-options]
# Each connection is wrapped (and its handshake done) in its own thread;
# SIGTERM ends it normally, so that the library writes its exit record.
py_server() {
    local f="$BATS_TEST_TMPDIR/https_server.py"
    cat >"$f" <<'PYEOF'
import argparse, functools, http.server, signal, socketserver, ssl, threading
ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--cert", required=True)
ap.add_argument("--key", required=True)
ap.add_argument("--dir", default=".")
ap.add_argument("--max", choices=["1.2", "1.3"])
ap.add_argument("--ciphers")
ap.add_argument("--clear-ktls", action="store_true")
ap.add_argument("--assign-options", action="store_true")
a = ap.parse_args()
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(a.cert, a.key)
if a.clear_ktls:
    # the program opts out: SSL_CTX_clear_options(SSL_OP_ENABLE_KTLS = 1 << 3)
    ctx.options = int(ctx.options) & ~8
if a.assign_options:
    # options set by assignment, as hypercorn does: Python clears every bit
    # not named (SSL_OP_ENABLE_KTLS among them), then sets the named ones
    ctx.options = ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
if a.max:
    ctx.maximum_version = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[a.max]
if a.ciphers:
    ctx.set_ciphers(a.ciphers)

class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "localhost", self.server_address[1]
    def finish_request(self, request, client_address):
        request.settimeout(30)
        conn = ctx.wrap_socket(request, server_side=True)
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            conn.close()

httpd = Server(("127.0.0.1", a.port), functools.partial(Handler, directory=a.dir))
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=httpd.shutdown).start())
httpd.serve_forever()
httpd.server_close()
PYEOF
    echo "$f"
}

# nginx_conf PORT CERT KEY [MASTER_PROCESS on|off]: writes
# $BATS_TEST_TMPDIR/nginx.conf: TLS on PORT, root $WWW, sendfile on, every
# path in the test's directory, and no kTLS directive of any kind.
nginx_conf() {
    local d="$BATS_TEST_TMPDIR"
    mkdir -p "$d/logs"
    cat >"$d/nginx.conf" <<EOF
daemon off;
master_process ${4:-off};
user $(id -un);
worker_processes 1;
pid $d/logs/nginx.pid;
error_log $d/logs/error.log info;
events { worker_connections 256; }
http {
    access_log off;
    default_type application/octet-stream;
    sendfile on;
$(nginx_temp_paths)
    server {
        listen 127.0.0.1:$1 ssl;
        ssl_certificate $2;
        ssl_certificate_key $3;
        ssl_protocols TLSv1.2 TLSv1.3;
        root $WWW;
    }
}
EOF
}

# nginx_args: the command line for the config above.
nginx_args() {
    echo "/usr/sbin/nginx -e $BATS_TEST_TMPDIR/logs/error.log -c $BATS_TEST_TMPDIR/nginx.conf"
}

# bad_client PORT MODE [VERSION [CIPHERS]]: a client that misbehaves, then
# reads until the server closes (20 s at most). Prints "MODE: eof|reset|
# timeout after N bytes, alert=0|1, S s"; fails unless the server closed.
#   garbage   random bytes (no TLS record type) instead of a ClientHello
#   hello     a TLS handshake record header followed by random bytes
#   forged    after a real handshake, an application-data record of junk
#             (its tag cannot verify)
#   overflow  after a real handshake, a record header longer than TLS allows
#   truncated after a real handshake, half a record, then end of stream
bad_client() {
    PYTHONPATH="$ROOT/tests/helpers" "$PY" - "$@" <<'PYEOF'
import os, socket, ssl, sys, time
import membio
port, mode = int(sys.argv[1]), sys.argv[2]
ver = sys.argv[3] if len(sys.argv) > 3 else "1.3"
s = socket.create_connection(("127.0.0.1", port), timeout=20)
if mode == "garbage":
    # no record type, and no TLS major version (3) where a header has it: a
    # random one could name a record longer than what is sent, which a
    # server rightly waits for (seen once in host/20, 2026-12-06)
    r = os.urandom(4096)
    s.sendall(bytes([r[0] % 0x14, r[1] | 0x04]) + r[2:])
elif mode == "hello":
    s.sendall(b"\x16\x03\x01\x00\x40" + os.urandom(64))
else:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    v = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[ver]
    ctx.minimum_version = ctx.maximum_version = v
    if len(sys.argv) > 4:
        ctx.set_ciphers(sys.argv[4])
    try:
        o, _, out = membio.handshake(s, ctx)
    except OSError as e:
        sys.exit(str(e))
    if out.pending:
        s.sendall(out.read())
    print("handshake:", o.version(), o.cipher()[0], file=sys.stderr)
    if mode == "forged":
        s.sendall(b"\x17\x03\x03\x00\x40" + os.urandom(64))
    elif mode == "overflow":
        s.sendall(b"\x17\x03\x03\x48\x01" + os.urandom(64))
    elif mode == "truncated":
        s.sendall(b"\x17\x03\x03\x03\xe8" + os.urandom(100))
        s.shutdown(socket.SHUT_WR)
    else:
        sys.exit("unknown mode " + mode)
t0, got, how = time.monotonic(), b"", "timeout"
try:
    while True:
        d = s.recv(65536)
        if not d:
            how = "eof"
            break
        got += d
except socket.timeout:
    pass
except ConnectionResetError:
    how = "reset"
# An alert record in clear (TLS 1.2, or before the keys) starts with 0x15.
alert = int(b"\x15\x03\x03" in got or got[:1] == b"\x15")
print(f"{mode}: {how} after {len(got)} bytes, alert={alert}, {time.monotonic() - t0:.1f} s")
sys.exit(0 if how != "timeout" else 1)
PYEOF
}

# tls_stat NAME: a counter of /proc/net/tls_stat (0 if absent).
tls_stat() {
    awk -v n="$1" '$1 == n { v = $2 } END { print v + 0 }' /proc/net/tls_stat 2>/dev/null || echo 0
}

# snap: remembers /proc/net/tls_stat; delta NAME: how much NAME moved since.
snap() { cp /proc/net/tls_stat "$BATS_TEST_TMPDIR/tls_stat.before"; }
delta() {
    local b
    b=$(awk -v n="$1" '$1 == n { print $2 }' "$BATS_TEST_TMPDIR/tls_stat.before")
    echo $(($(tls_stat "$1") - ${b:-0}))
}
# note: what the kernel counted, in the bats output (for the record).
note() {
    local n out=""
    for n in TlsTxSw TlsRxSw TlsDecryptError TlsCurrTxSw TlsCurrRxSw; do
        out="$out $n+$(delta "$n")"
    done
    echo "# $BATS_TEST_NUMBER tls_stat:$out" >&3
}

# ---- uploads (the receive side): tests/vm/25-own-switch.bats ----

HELPERS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# sink_start NAME PORT OUTDIR [tls_sink.py option...]: the Python upload
# server (tests/helpers/tls_sink.py) with the library (and the exported
# KTLSSHIM_* variables), started as NAME.
sink_start() {
    local name=$1 port=$2 out=$3
    shift 3
    mkdir -p "$out"
    start "$name" "$PY" "$HELPERS_DIR/tls_sink.py" --port "$port" \
        --cert "$CERTS/ec.pem" --key "$CERTS/ec.key" --out "$out" "$@"
}

# pin_client VERSION AEAD: for a Python client run without the library, a
# private OPENSSL_CONF that pins AEAD (TLS 1.3 suites can be chosen only
# there). Sets PIN_CONF (its path) and PIN_CIPHER (the TLS 1.2 cipher to
# pass, empty for 1.3).
pin_client() {
    PIN_CONF="$BATS_TEST_TMPDIR/client-$1-$2.cnf" PIN_CIPHER=""
    if [ "$1" = 1.3 ]; then
        printf '%s\n' 'openssl_conf = c' '[c]' 'ssl_conf = s' '[s]' 'system_default = d' '[d]' \
            "Ciphersuites = $(cipher_name 1.3 "$2" ec)" >"$PIN_CONF"
    else
        printf '%s\n' 'openssl_conf = c' '[c]' >"$PIN_CONF"
        PIN_CIPHER=$(cipher_name 1.2 "$2" ec)
    fi
}

# upload PORT MODE VERSION AEAD FILE...: tls_send.py without the library,
# the cipher pinned.
upload() {
    local port=$1 mode=$2 ver=$3
    pin_client "$3" "$4"
    shift 4
    env -u LD_PRELOAD OPENSSL_CONF="$PIN_CONF" "$PY" "$HELPERS_DIR/tls_send.py" "$port" "$mode" \
        "$ver" "$PIN_CIPHER" "$@"
}

# put_files PORT PREFIX OUT: every file of $FILES PUT (tests/helpers/tls_put.py:
# the request in the client Finished's flight) to PREFIX13/NAME over TLS 1.3
# (AES-128-GCM) and PREFIX12/NAME over TLS 1.2 (AES-256-GCM), one connection
# each; the replies ("NAME STATUS BODY") appended to OUT.
put_files() {
    local v a
    for v in "1.3 aes128" "1.2 aes256"; do
        read -r v a <<<"$v"
        pin_client "$v" "$a"
        env -u LD_PRELOAD OPENSSL_CONF="$PIN_CONF" "$PY" "$HELPERS_DIR/tls_put.py" "$1" "$v" \
            "$PIN_CIPHER" "$2${v/./}" "${FILES[@]}" >>"$3" || return 1
    done
}

# fetch_files PORT VERSION AEAD [--slow] [--expect N] NAME...: tls_fetch.py
# without the library, the cipher pinned; the bodies go to $GOT.
fetch_files() {
    local port=$1 ver=$2
    pin_client "$2" "$3"
    shift 3
    env -u LD_PRELOAD OPENSSL_CONF="$PIN_CONF" "$PY" "$HELPERS_DIR/tls_fetch.py" "$port" "$ver" \
        "$PIN_CIPHER" "$GOT" "$@"
}

# serve_uploads VERSION AEAD MODE [tls_sink.py option...]: a sink (srv, in
# MODE) for the uploads of $FILES, one connection each, then its exit; each
# upload's hash and length checked on the server's side ($OUT). Usable as a
# tls_variants check.
serve_uploads() {
    local ver=$1 aead=$2 mode=$3 port
    shift 3
    rm -rf "$OUT"
    port=$(pick_port)
    sink_start srv "$port" "$OUT" --mode "$mode" --serve ${#FILES[@]} "$@"
    wait_listen "$port" || return 1
    upload "$port" "$mode" "$ver" "$aead" "${FILES[@]}" || return 1
    wait_gone "$(pid_of srv)" 60 || { echo "the sink did not end"; return 1; }
    sums_match "$OUT" "${FILES[@]}"
}

# sums_match OUTDIR FILE...: connection i's "<sha256> <length>" in
# OUTDIR/i.sum equals FILE number i's; prints what differs.
sums_match() {
    local out=$1 i=0 f want got
    shift
    for f in "$@"; do
        want="$(sha "$f") $(stat -c %s "$f")"
        got=$(cat "$out/$i.sum" 2>/dev/null || echo "missing: $(cat "$out/$i.err" 2>/dev/null)")
        if [ "$want" != "$got" ]; then
            echo "connection $i ($f): want $want, got $got"
            return 1
        fi
        i=$((i + 1))
    done
}

# wait_file PATH [SECONDS]: until PATH exists (default 60).
wait_file() {
    for _ in $(seq $((${2:-60} * 10))); do
        [ -e "$1" ] && return 0
        sleep 0.1
    done
    echo "no $1 after ${2:-60} s" >&2
    return 1
}

# sums_match_one SUMFILE FILE: one connection's "<sha256> <length>".
sums_match_one() {
    local want
    want="$(sha "$2") $(stat -c %s "$2")"
    [ "$(cat "$1" 2>/dev/null)" = "$want" ] || { echo "want $want, got $(cat "$1" 2>/dev/null)"; return 1; }
}

# fetch_line PORT [BYTES]: sends a line over TLS (openssl s_client), prints
# the sha256 of the BYTES (100000) that come back. -quiet implies -ign_eof:
# s_client reads on after its input ends, until the server closes.
fetch_line() {
    echo hello | timeout 30 openssl s_client -quiet -connect "127.0.0.1:$1" 2>/dev/null |
        head -c "${2:-100000}" | sha256sum | cut -d' ' -f1
}

# reuse_server MODE: tests/helpers/ssl_reuse_server.c (dup or clear) serves
# 3 connections under the library: checks the bodies, its exit, its
# callbacks, and the library's count of TLS connections and connection-log
# lines (3 each). Its record is s.jsonl.
reuse_server() {
    gcc -O1 -Wall -o reusesrv "$HELPERS_DIR/ssl_reuse_server.c" -lssl -lcrypto
    head -c 70000 /dev/urandom >body
    port=$(free_port)
    start srv env KTLSSHIM_STATS="$BATS_TEST_TMPDIR/s.jsonl" KTLSSHIM_CONN_LOG="$BATS_TEST_TMPDIR/c.jsonl" \
        ./reusesrv "$1" "$port" "$CERTS/ec.pem" "$CERTS/ec.key" body 3
    wait_listen "$port"
    for _ in 1 2 3; do
        assert_equal "$(fetch_line "$port" 70000)" "$(sha256sum <body | cut -d' ' -f1)"
    done
    wait_status srv
    cat srv.out srv.err
    assert_equal "$status_of" 0
    grep -qx ok srv.out
    grep -qx "callbacks 3" srv.out
    # the library saw the three handshakes (its hooks ran on each connection)
    run "$PY" -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; print(sum(x["connections"]["tls"] for x in r))' "$BATS_TEST_TMPDIR/s.jsonl"
    assert_output 3
    run wc -l <c.jsonl
    assert_output 3
}

#!/usr/bin/env bats
# The library's own kTLS switch, send side (shim/tls/kswitch/tx.c), in the VM
# (Debian 6.1 kernel, OpenSSL 3.0). With KTLSSHIM_KTLS=own the library, not
# libssl, puts both directions' keys into the kernel and serves SSL_write,
# SSL_write_ex and SSL_shutdown itself. Real servers send files; every body
# is hash-checked on the client, which also requires the server's
# close_notify (no bare end of stream) and sends its own back; the kernel's
# counters (/proc/net/tls_stat) and the library's per-path counts must show
# the own switch's TX on every connection. Few connections: TCG is slow.

load '../helpers/common'
load '../helpers/tls'

SIZES="0 1 16383 16384 16385 1048583"

setup() {
    # shellcheck disable=SC2086
    vm_setup $SIZES
    export KTLSSHIM_STATS="$STATS"
}
teardown() { teardown_servers; }

# source_start NAME PORT [tls_source.py option...]: the Python file server
# with the library, started as NAME.
source_start() {
    local name=$1 port=$2
    shift 2
    start "$name" "$PY" "$HELPERS_DIR/tls_source.py" --port "$port" \
        --cert "$CERTS/ec.pem" --key "$CERTS/ec.key" --dir "$WWW" "$@"
}

# same_bodies NAME...: what came back equals $WWW's files.
same_bodies() {
    local n
    for n in "$@"; do
        if [ "$(sha "$GOT/$n")" != "$(sha "$WWW/$n")" ]; then
            echo "differs: $n ($(stat -c %s "$GOT/$n") bytes)"
            return 1
        fi
    done
}

# serve_files VARIANT... (server options in SRV_OPTS): one file server
# (srv) for every VARIANT, "VERSION AEAD [--slow] NAME...": one connection
# per NAME, each body intact with close_notify both ways; then the server's
# exit after that many connections, each of which saw the client's
# close_notify. A variant that fails is named.
serve_files() {
    local v w n=0
    for v in "$@"; do
        for w in ${v#* * }; do [ "$w" = --slow ] || n=$((n + 1)); done
    done
    SRV_PORT=$(pick_port)
    # shellcheck disable=SC2086
    source_start srv "$SRV_PORT" --serve "$n" ${SRV_OPTS:-}
    wait_listen "$SRV_PORT"
    tls_variants fetch_clean "$@"
    wait_gone "$(pid_of srv)" 120
    cat "$BATS_TEST_TMPDIR/srv.out"
    # the server saw each client's close_notify (unwrap returned)
    [ "$(grep -c '^ok ' "$BATS_TEST_TMPDIR/srv.out")" -eq "$n" ]
    rm -f "$BATS_TEST_TMPDIR/srv.out"
}

# fetch_clean VERSION AEAD [--slow] NAME...: serve_files' check, on
# $SRV_PORT: every NAME fetched, ended by a clean close_notify, identical.
fetch_clean() {
    local ver=$1 aead=$2 out a names=()
    shift 2
    for a in "$@"; do [ "$a" = --slow ] || names+=("$a"); done
    out=$(fetch_files "$SRV_PORT" "$ver" "$aead" "$@") || { echo "$out"; return 1; }
    echo "$out"
    [ "$(grep -c ' clean$' <<<"$out")" -eq ${#names[@]} ] || return 1
    same_bodies "${names[@]}"
}

@test "KTLSSHIM_KTLS=own, python (blocking), TLS 1.3 AES-128-GCM, sizes 0..1 MiB+7: TX and RX by the own switch, bodies intact, close_notify both ways" {
    export KTLSSHIM_KTLS=own
    snap
    serve_files "1.3 aes128 ${NAMES[*]}"
    echo "# tls_stat: TlsTxSw+$(delta TlsTxSw) TlsRxSw+$(delta TlsRxSw) TlsDecryptError+$(delta TlsDecryptError)" >&3
    assert_equal "$(delta TlsTxSw)" 6
    assert_equal "$(delta TlsRxSw)" 6
    assert_equal "$(delta TlsDecryptError)" 0
    run stats_check "$KTLSSHIM_STATS" 'S("connections.tls1_3") == 6' \
        'S("ktls.tx") == 6 and S("ktls.tx_own") == 6 and S("ktls.rx_own") == 6' \
        'all(S("fallback_tx." + k) == 0 for k in R[0]["fallback_tx"])' \
        "S('bytes.ktls_tx') == $((0 + 1 + 16383 + 16384 + 16385 + 1048583)) and S('bytes.user_tx') == 0"
    assert_output ok
    run count_handshakes srv 1.3 TLS_AES_128_GCM_SHA256 "own switch due" "own switch due"
    assert_output 6
}

@test "KTLSSHIM_KTLS=own, python, TLS 1.2 x AES-128-GCM, AES-256-GCM, CHACHA20 and TLS 1.3 AES-256-GCM, CHACHA20: TX own, bodies intact" {
    export KTLSSHIM_KTLS=own
    snap
    serve_files "1.2 aes128 s16385 s1048583" "1.2 aes256 s16384 s1048583" "1.2 chacha s1 s1048583" \
        "1.3 aes256 s16383 s1048583" "1.3 chacha s0 s1048583"
    echo "# tls_stat: TlsTxSw+$(delta TlsTxSw) TlsRxSw+$(delta TlsRxSw) TlsDecryptError+$(delta TlsDecryptError)" >&3
    assert_equal "$(delta TlsTxSw)" 10
    assert_equal "$(delta TlsDecryptError)" 0
    run stats_check "$KTLSSHIM_STATS" 'len(R) == 1' 'S("connections.tls1_2") == 6' \
        'S("ktls.tx_own") == 10 and S("ktls.tx") == 10 and S("ktls.rx_own") == 10'
    assert_output ok
}

@test "KTLSSHIM_KTLS=own, slow reader against a python server with a socket timeout and a 4 KiB send buffer: partial writes and retries, byte-identical" {
    export KTLSSHIM_KTLS=own
    SRV_OPTS="--timeout 60 --small-buffers" serve_files "1.3 aes128 --slow s1048583 s16385" \
        "1.2 chacha --slow s1048583"
    run stats_check "$KTLSSHIM_STATS" 'S("ktls.tx_own") == 3'
    assert_output ok
}

@test "the same bodies through libssl's kTLS (KTLSSHIM_KTLS=auto) and through the own switch (own)" {
    for mode in auto own; do
        export KTLSSHIM_KTLS=$mode
        rm -f "$KTLSSHIM_STATS" "$GOT"/*
        serve_files "1.3 aes128 s16385 s1048583" "1.2 aes256 s16384"
        for n in s16385 s1048583 s16384; do [ -f "$GOT/$n" ]; sha "$GOT/$n" >>"$BATS_TEST_TMPDIR/sums.$mode"; done
        if [ $mode = auto ]; then
            run stats_check "$KTLSSHIM_STATS" 'S("ktls.tx") == 3 and S("ktls.tx_own") == 0'
        else
            run stats_check "$KTLSSHIM_STATS" 'S("ktls.tx") == 3 and S("ktls.tx_own") == 3'
        fi
        assert_output ok
    done
    run diff "$BATS_TEST_TMPDIR/sums.auto" "$BATS_TEST_TMPDIR/sums.own"
    assert_success
}

@test "KTLSSHIM_KTLS=own, nginx: TX by the own switch on every connection (read-ahead: RX later by the deferred switch, and TX with it), bodies intact, connection log says ktls_own" {
    export KTLSSHIM_KTLS=own KTLSSHIM_CONN_LOG="$BATS_TEST_TMPDIR/conn.jsonl"
    port=$(pick_port)
    nginx_conf "$port" "$CERTS/ec.pem" "$CERTS/ec.key" off
    snap
    # shellcheck disable=SC2046
    start srv $(nginx_args)
    wait_listen "$port"
    run fetch_variants "$port" "1.3 aes128 s0 s16384 s1048583" "1.3 chacha s0 s16384 s1048583" \
        "1.2 aes256 s16385 s1048583"
    echo "$output"
    assert_success
    # Two requests in the client's Finished flight: read ahead with it, so
    # receive waits for the deferred switch, and sending with it (nginx
    # answers the PUT, which it does not take here, with 405 after the switch).
    : >"$BATS_TEST_TMPDIR/empty"
    pin_client 1.3 aes128
    run env -u LD_PRELOAD OPENSSL_CONF="$PIN_CONF" "$PY" "$HELPERS_DIR/tls_put.py" "$port" 1.3 \
        "$PIN_CIPHER" /x "$BATS_TEST_TMPDIR/empty" "$BATS_TEST_TMPDIR/empty"
    assert_success
    [ "$(grep -c '^empty 405 ' <<<"$output")" = 2 ]
    stop_srv srv
    own=$(lib_lines srv | grep -c "tx kTLS (own switch)" || true)
    late=$(lib_lines srv | grep -c "rx kTLS (own switch, deferred)" || true)
    echo "# own TX on $own of 10, deferred RX on $late; tls_stat: TlsTxSw+$(delta TlsTxSw) TlsRxSw+$(delta TlsRxSw)" >&3
    assert_equal "$own" 10
    [ "$late" -ge 2 ]
    assert_equal "$(delta TlsTxSw)" 10
    assert_equal "$(delta TlsRxSw)" 10
    run stats_check "$KTLSSHIM_STATS" 'S("connections.tls") == 10' \
        "S('ktls.tx_own') == 10 and S('ktls.rx_own') == 10 and S('ktls.tx') == 10" \
        "S('ktls.rx_deferred') == $late and S('fallback_tx.unread') == 0" \
        "S('fallback_rx.unread') == 0"
    assert_output ok
    run "$PY" -c '
import json, sys
L = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
own = [e for e in L if e["tx"]["path"] == "ktls_own"]
assert len(own) == int(sys.argv[2]), L
assert all(e["rx"]["path"] == "ktls_own" for e in own), own
print("ok")' "$KTLSSHIM_CONN_LOG" "$own"
    assert_output ok
}

# s_server_send VERSION AEAD NAME: openssl s_server -quiet (KTLSSHIM_KTLS=own)
# sends what its standard input gets, a fifo fed with NAME once the library
# says the connection's TX is its own. The client reads that many bytes and
# sends close_notify first; s_server answers with SSL_shutdown (its own end
# of input never ends a connection in -quiet mode). The client must see the
# body and the server's close_notify. SRV_WRAP: words run before openssl
# (valgrind ...); SRV_WAIT: seconds to wait for its port and its end.
s_server_send() {
    local ver=$1 aead=$2 name=$3 fifo="$BATS_TEST_TMPDIR/stdin.fifo" fd cpid wrap=()
    rm -f "$fifo" "$BATS_TEST_TMPDIR/fetch.out" "$GOT/$name"
    mkfifo "$fifo"
    port=$(pick_port)
    read -r -a wrap <<<"${SRV_WRAP:-}"
    start srv bash -c 'exec "$@" <"$0"' "$fifo" "${wrap[@]}" openssl s_server -quiet -naccept 1 \
        -accept "127.0.0.1:$port" -cert "$CERTS/ec.pem" -key "$CERTS/ec.key"
    exec {fd}>"$fifo"
    wait_listen "$port" "${SRV_WAIT:-}"
    fetch_files "$port" "$ver" "$aead" --expect "$(stat -c %s "$WWW/$name")" "$name" \
        >"$BATS_TEST_TMPDIR/fetch.out" 2>&1 &
    cpid=$!
    wait_until 120 lib_lines_have srv "tx kTLS (own switch)" || true
    cat "$WWW/$name" >&"$fd"
    wait "$cpid" || true
    cat "$BATS_TEST_TMPDIR/fetch.out"
    grep -q "^ok $name $(stat -c %s "$WWW/$name") clean$" "$BATS_TEST_TMPDIR/fetch.out"
    assert_equal "$(sha "$GOT/$name")" "$(sha "$WWW/$name")"
    wait_gone "$(pid_of srv)" "${SRV_WAIT:-60}"
    wait_status srv
    exec {fd}>&-
}

@test "KTLSSHIM_KTLS=own, openssl s_server (SSL_accept, stdin to the client): TLS 1.3 and 1.2 bodies intact, close_notify both ways (client first)" {
    export KTLSSHIM_KTLS=own
    snap
    s_server_send 1.3 aes128 s1048583
    s_server_send 1.2 chacha s16385
    assert_equal "$(delta TlsTxSw)" 2
    run stats_check "$KTLSSHIM_STATS" 'S("ktls.tx_own") == 2 and S("ktls.rx_own") == 2' \
        "S('bytes.ktls_tx') == $((1048583 + 16385))"
    assert_output ok
}

@test "valgrind: openssl s_server sending through the own switch (TLS 1.3 and 1.2): valgrind exits 0, no invalid access, no definite leak" {
    # A few minutes under TCG: run with the full matrix only.
    [ "${KTLSSHIM_TEST_FULL:-0}" = 1 ] || skip "slow under TCG: KTLSSHIM_TEST_FULL=1 runs it"
    command -v valgrind >/dev/null || skip "valgrind is not installed"
    [ "${KTLSSHIM_TEST_ASAN:-0}" != 1 ] || skip "valgrind does not run ASan builds"
    export KTLSSHIM_KTLS=own
    SRV_WAIT=300
    SRV_WRAP="valgrind -q --error-exitcode=42 --leak-check=full --show-leak-kinds=definite"
    SRV_WRAP="$SRV_WRAP --errors-for-leak-kinds=definite --log-file=$BATS_TEST_TMPDIR/vg.%p.log"
    for v in "1.3 aes256" "1.2 chacha"; do
        # shellcheck disable=SC2086 # version and AEAD
        s_server_send $v s16385
        assert_equal "$status_of" 0
    done
    run stats_check "$KTLSSHIM_STATS" 'S("ktls.tx_own") == 2 and S("ktls.rx_own") == 2'
    assert_output ok
    cat "$BATS_TEST_TMPDIR"/vg.*.log
    run sh -c "grep -l 'Invalid \\(read\\|write\\)\\|uninitialised\\|definitely lost' $BATS_TEST_TMPDIR/vg.*.log"
    assert_output ""
}

@test "SSL_sendfile (python via ctypes, socket timeout): the same bodies through libssl's kTLS and through the own switch's sendfile()" {
    for mode in auto own; do
        export KTLSSHIM_KTLS=$mode
        rm -f "$KTLSSHIM_STATS" "$GOT"/*
        SRV_OPTS="--sendfile --timeout 60" serve_files "1.3 aes256 s0 s16385 s1048583"
        SRV_OPTS="--sendfile" serve_files "1.2 aes128 s16384"
        for n in s0 s16385 s1048583 s16384; do [ -f "$GOT/$n" ]; sha "$GOT/$n" >>"$BATS_TEST_TMPDIR/sums.$mode"; done
        own=0
        [ $mode = own ] && own=4
        run stats_check "$KTLSSHIM_STATS" "S('ktls.tx') == 4 and S('ktls.tx_own') == $own" \
            "S('bytes.sendfile') == $((16385 + 1048583 + 16384))"
        assert_output ok
    done
    run diff "$BATS_TEST_TMPDIR/sums.auto" "$BATS_TEST_TMPDIR/sums.own"
    assert_success
}

@test "KTLSSHIM_KTLS=own, redis-server --tls-port (non-blocking, SSL_MODE_ENABLE_PARTIAL_WRITE): 1 MiB+7 values SET and GET back intact, slow reader" {
    export KTLSSHIM_KTLS=own
    port=$(pick_port)
    start srv redis-server --port 0 --tls-port "$port" --tls-cert-file "$CERTS/ec.pem" \
        --tls-key-file "$CERTS/ec.key" --tls-auth-clients no --save "" --appendonly no \
        --dir "$BATS_TEST_TMPDIR"
    wait_listen "$port"
    cat >"$BATS_TEST_TMPDIR/rc.py" <<'PYEOF'
import hashlib, socket, ssl, sys, time
port, version, path, slow = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "slow"
data = open(path, "rb").read()
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.minimum_version = ctx.maximum_version = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[version]
raw = socket.socket()
if slow:
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
raw.settimeout(120)
raw.connect(("127.0.0.1", port))
s = ctx.wrap_socket(raw)
def cmd(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    s.sendall(out)
buf = bytearray()
def need(n):
    while len(buf) < n:
        b = s.recv(1000 if slow else 65536)
        if not b:
            raise EOFError("connection closed")
        buf.extend(b)
        if slow:
            time.sleep(0.002)
def line():
    while b"\r\n" not in buf:
        need(len(buf) + 1)
    i = buf.index(b"\r\n")
    l = bytes(buf[:i]); del buf[:i + 2]
    return l
cmd(b"SET", b"k", data)
assert line() == b"+OK"
for _ in range(2):
    cmd(b"GET", b"k")
    h = line()
    assert h == b"$%d" % len(data), h
    need(len(data) + 2)
    got = bytes(buf[:len(data)]); del buf[:len(data) + 2]
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), "differs"
print("ok")
PYEOF
    for v in 1.3 1.2; do
        run env -u LD_PRELOAD "$PY" "$BATS_TEST_TMPDIR/rc.py" "$port" "$v" "$WWW/s1048583" slow
        echo "$output"
        assert_output ok
    done
    run env -u LD_PRELOAD "$PY" "$BATS_TEST_TMPDIR/rc.py" "$port" 1.3 "$WWW/s16385" fast
    assert_output ok
    stop_srv srv
    lib_lines srv | grep -E "tx kTLS|handshake done" || true
    run stats_check "$KTLSSHIM_STATS" 'S("ktls.tx_own") == 3 and S("ktls.rx_own") == 3'
    assert_output ok
}

@test "KTLSSHIM_REKEY_RECORDS=16 on a kernel that cannot rekey: the send key passes the threshold, the connection is counted once (ktls.tx_rekey_unable) and carries on, body intact" {
    grep -q TlsTxRekeyOk /proc/net/tls_stat && skip "this kernel can rekey: tests/vm/27-keyupdate.bats"
    export KTLSSHIM_REKEY_RECORDS=16
    SRV_OPTS="--timeout 30 --small-buffers" serve_files "1.3 aes128 s1048583"
    run stats_check "$KTLSSHIM_STATS" 'S("ktls.rx_own") == 1 and S("ktls.tx") == 1' \
        'S("ktls.tx_rekey_unable") == 1 and S("ktls.tx_rekey") == 0 and S("ktls.tx_keyupdate") == 0'
    assert_output ok
}

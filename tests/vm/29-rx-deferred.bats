#!/usr/bin/env bats
# The deferred receive switch (shim/tls/kswitch/defer.c), in the VM (Debian
# 6.1 kernel, OpenSSL 3.0). Servers that read ahead (lighttpd, nginx) get the
# client's request with its Finished: libssl holds it when the handshake
# ends, so the own switch cannot take receive then; it must take it at the
# first record boundary after. The client (tests/helpers/tls_put.py) sends
# the request and the body's first 16 KiB in the same flight as its TLS 1.3
# Finished; uploads of 0 B to 8 MiB+7, TLS 1.3 and 1.2, each hash-checked on
# the server's side; receive must be in the kernel on every connection
# (the library's counts and /proc/net/tls_stat's TlsRxSw).

load '../helpers/common'
load '../helpers/tls'

SIZES="0 1 16385 1048583 8388615"

setup() {
    # shellcheck disable=SC2086
    vm_setup $SIZES
    export KTLSSHIM_LOG=debug
}
teardown() { teardown_servers; }

# puts PORT PREFIX: put_files, the replies to $BATS_TEST_TMPDIR/put.out.
puts() { put_files "$1" "$2" "$BATS_TEST_TMPDIR/put.out"; }

# rx_all_kernel N: the server's record and the kernel agree that receive was
# in the kernel on all N connections, the TLS 1.3 ones by the deferred switch.
rx_all_kernel() {
    note
    lib_lines srv | grep -E "rx |deferred" | head -40
    run stats_check "$STATS" "S('connections.tls') == $1 and S('connections.tls1_3') == $1 // 2" \
        "S('ktls.rx') == $1 and S('ktls.tx') == $1" \
        "S('ktls.rx_deferred') == $1 // 2 and S('ktls.rx_own') >= $1 // 2" \
        "sum(S('fallback_rx.' + k) for k in R[0]['fallback_rx']) == 0" \
        "S('bytes.ktls_rx') > 8388615"
    assert_output ok
    assert_equal "$(delta TlsRxSw)" "$1"
    assert_equal "$(delta TlsDecryptError)" 0
}

@test "lighttpd (read-ahead): TLS 1.3 requests behind the Finished, uploads 0 B to 8 MiB+7: receive in the kernel on every connection" {
    local port n=0 f
    port=$(pick_port)
    mkdir -p cgi up
    printf '%s\n' '#!/bin/sh' 'printf "Content-Type: text/plain\r\n\r\n"' \
        'head -c "$CONTENT_LENGTH" | sha256sum | cut -d" " -f1' >cgi/sum.sh
    cat >lighttpd.conf <<CONF
server.document-root = "$BATS_TEST_TMPDIR/cgi"
server.bind = "127.0.0.1"
server.port = $port
server.modules += ("mod_openssl", "mod_cgi", "mod_rewrite")
server.upload-dirs = ("$BATS_TEST_TMPDIR/up")
server.max-request-size = 16384
url.rewrite-once = ("^/up[0-9]+/" => "/sum.sh")
cgi.assign = (".sh" => "/bin/sh")
ssl.engine = "enable"
ssl.pemfile = "$CERTS/ec.pem"
ssl.privkey = "$CERTS/ec.key"
server.errorlog = "$BATS_TEST_TMPDIR/lighttpd.log"
CONF
    snap
    start srv env KTLSSHIM_STATS="$STATS" lighttpd -D -f "$BATS_TEST_TMPDIR/lighttpd.conf"
    wait_listen "$port"
    run puts "$port" /up
    cat put.out
    assert_success
    for f in "${FILES[@]}"; do
        for _ in 1 2; do
            grep -qx "$(basename "$f") 200 $(sha "$f")" put.out || fail "$(basename "$f"): wrong reply"
            n=$((n + 1))
        done
    done
    stop_srv srv
    rx_all_kernel "$n"
}

@test "nginx (read-ahead): TLS 1.3 requests behind the Finished, PUT 0 B to 8 MiB+7: receive in the kernel on every connection" {
    local port n=0 f v
    port=$(pick_port)
    mkdir -p logs put
    cat >nginx.conf <<EOF
daemon off;
master_process off;
user $(id -un);
worker_processes 1;
error_log $BATS_TEST_TMPDIR/logs/error.log info;
pid $BATS_TEST_TMPDIR/logs/nginx.pid;
events { worker_connections 64; }
http {
    access_log off;
$(nginx_temp_paths)
    server {
        listen 127.0.0.1:$port ssl;
        ssl_certificate $CERTS/ec.pem;
        ssl_certificate_key $CERTS/ec.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        root $BATS_TEST_TMPDIR/put;
        client_max_body_size 16m;
        dav_methods PUT;
        create_full_put_path on;
    }
}
EOF
    snap
    start srv env KTLSSHIM_STATS="$STATS" /usr/sbin/nginx -e "$BATS_TEST_TMPDIR/logs/error.log" \
        -c "$BATS_TEST_TMPDIR/nginx.conf"
    wait_listen "$port"
    run puts "$port" /up
    cat put.out
    assert_success
    for f in "${FILES[@]}"; do
        for v in 13 12; do
            [ "$(sha "put/up$v/$(basename "$f")")" = "$(sha "$f")" ] || fail "TLS $v $(basename "$f") differs"
            grep -q "^$(basename "$f") 201 " put.out || fail "$(basename "$f"): not created"
            n=$((n + 1))
        done
    done
    stop_srv srv
    rx_all_kernel "$n"
}

@test "KTLSSHIM_KTLS=own, handshakes completed inside SSL_read (python sink, --lazy): TLS 1.2 and 1.3 receive switched later, and send with it, uploads intact" {
    # No handshake call: the own switch cannot take receive at the end of
    # the handshake (TLS 1.2 too: libssl is not asked under own); the first
    # read that returns data makes the boundary. (An empty upload has no
    # data record: nothing to switch at, it would stay unread.)
    local port files=("$WWW/s1" "$WWW/s16385" "$WWW/s1048583")
    export KTLSSHIM_KTLS=own KTLSSHIM_STATS="$STATS"
    port=$(pick_port)
    snap
    sink_start srv "$port" "$OUT" --lazy --serve 6 --timeout 30
    wait_listen "$port"
    run upload "$port" eof 1.2 aes128 "${files[@]}"
    assert_success
    run upload "$port" eof 1.3 chacha "${files[@]}"
    assert_success
    wait_gone "$(pid_of srv)" 120
    run sums_match "$OUT" "${files[@]}" "${files[@]}"
    assert_success
    note
    run stats_check "$STATS" 'S("connections.tls") == 6 and S("connections.tls1_2") == 3' \
        'S("ktls.rx") == 6 and S("ktls.rx_own") == 6 and S("ktls.rx_deferred") == 6' \
        'S("fallback_rx.unread") == 0 and S("ktls.rx_bad_record") == 0' \
        'S("ktls.tx") == 6 and S("ktls.tx_own") == 6 and S("fallback_tx.unread") == 0'
    assert_output ok
    assert_equal "$(delta TlsRxSw)" 6
    assert_equal "$(delta TlsTxSw)" 6
    assert_equal "$(delta TlsDecryptError)" 0
}

#!/usr/bin/env bats
# The per-connection log (KTLSSHIM_CONN_LOG) with kernel TLS, in the VM: each
# connection's line says kTLS per direction (TX always; RX on TLS 1.2, since
# OpenSSL 3.0 has no TLS 1.3 receive offload), with bytes equal to what curl
# sent and received, and the lines agree with /proc/net/tls_stat's deltas.
# Lean on purpose: four connections of nginx under TCG.

load '../helpers/common'
load '../helpers/tls'

setup() {
    if [ "${KTLSSHIM_VM_INSIDE:-0}" != 1 ]; then
        fail "not inside the kTLS VM: run these through scripts/vm-run (make test-vm)"
    fi
    cd "$BATS_TEST_TMPDIR"
    make_certs
    make_files 16385 1048583
    export KTLSSHIM_LOG=info FETCH_TIMEOUT=120
    unset KTLSSHIM_KTLS KTLSSHIM_SHARDS KTLSSHIM_ZEROCOPY KTLSSHIM_CONN_LOG
}
teardown() { teardown_servers; }

stat_of() { awk -v n="$2" '$1 == n { print $2 }' "$1"; }

@test "nginx: each connection's line says kTLS per direction, bytes equal curl's, lines match tls_stat deltas" {
    port=$(pick_port)
    nginx_conf "$port" "$CERTS/ec.pem" "$CERTS/ec.key" off
    cp /proc/net/tls_stat before
    # shellcheck disable=SC2046
    start srv env KTLSSHIM_CONN_LOG="$BATS_TEST_TMPDIR/conn.jsonl" $(nginx_args)
    wait_listen "$port"
    get() { # FILE CURL-OPTION...: by name, so that curl sends SNI
        local f=$1; shift
        curl -sSkf --max-time 120 "$@" --resolve "localhost:$port:127.0.0.1" -o body \
            -w '%{local_port} %{size_header} %{size_download} %{size_request}\n' \
            "https://localhost:$port/$f" >>curl.out
        [ "$(sha body)" = "$(sha "$WWW/$f")" ]
    }
    get s1048583 --tlsv1.3 --tls13-ciphers TLS_AES_128_GCM_SHA256
    get s16385 --tlsv1.3 --tls13-ciphers TLS_CHACHA20_POLY1305_SHA256
    get s1048583 --tlsv1.2 --tls-max 1.2 --ciphers ECDHE-ECDSA-AES256-GCM-SHA384
    get s16385 --tlsv1.2 --tls-max 1.2 --ciphers ECDHE-ECDSA-AES128-GCM-SHA256
    stop_srv srv
    assert_equal "$status_of" 0
    cp /proc/net/tls_stat after
    tx=$(( $(stat_of after TlsTxSw) - $(stat_of before TlsTxSw) ))
    rx=$(( $(stat_of after TlsRxSw) - $(stat_of before TlsRxSw) ))
    echo "# tls_stat: TlsTxSw+$tx TlsRxSw+$rx" >&3
    run "$PY" - conn.jsonl curl.out "$tx" "$rx" <<'PYEOF'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
curl = [l.split() for l in open(sys.argv[2])]
tx_sw, rx_sw = int(sys.argv[3]), int(sys.argv[4])
assert len(lines) == 4, lines
by_port = {int(l["peer"].rsplit(":", 1)[1]): l for l in lines}
want = [("1.3", "TLS_AES_128_GCM_SHA256"), ("1.3", "TLS_CHACHA20_POLY1305_SHA256"),
        ("1.2", "ECDHE-ECDSA-AES256-GCM-SHA384"), ("1.2", "ECDHE-ECDSA-AES128-GCM-SHA256")]
for (port, hdr, body, req), (ver, cipher) in zip(curl, want):
    l = by_port[int(port)]
    assert l["sni"] == "localhost" and l["tls"] == ver and l["cipher"] == cipher, l
    t, r = l["tx"], l["rx"]
    # TX: kernel TLS in software (no NIC here), every byte through it.
    assert t["path"] == "ktls_libssl" and t["offload"] == "sw", l
    assert t["bytes_user"] == 0 and t["bytes_ktls"] == int(hdr) + int(body), (l, hdr, body)
    assert 0 < t["bytes_sendfile"] <= int(body), l
    # RX: kernel TLS on 1.2 by libssl; on 1.3 (OpenSSL 3.0 has no 1.3
    # receive offload) by the library's own switch (later, where nginx's
    # read-ahead held the request: that request's bytes were libssl's);
    # never left in user space.
    if ver == "1.2":
        assert r["path"] == "ktls_libssl" and r["offload"] == "sw", l
        assert r["bytes_ktls"] == int(req) and r["bytes_user"] == 0, (l, req)
    else:
        assert r["path"] == "ktls_own" and r["offload"] == "sw", l
        assert r["bytes_ktls"] + r["bytes_user"] == int(req), (l, req)
# The kernel counted exactly the kTLS directions the lines claim.
assert tx_sw == sum(l["tx"]["path"] != "user" for l in lines) == 4, tx_sw
assert rx_sw == sum(l["rx"]["path"] != "user" for l in lines) == 4, rx_sw
print("ok")
PYEOF
    assert_output ok
}

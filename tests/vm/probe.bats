#!/usr/bin/env bats
# ktls-probe in the VM (scripts/vm-run: Debian 6.1 kernel, tls module
# loaded). The emulator is slow: the probe runs once for text and once for
# JSON in setup_file, and the tests read what it said.

bats_require_minimum_version 1.5.0
load '/usr/lib/bats/bats-support/load'
load '/usr/lib/bats/bats-assert/load'

PY=/usr/bin/python3

setup_file() {
    BUILD="${KTLSSHIM_BUILD:-$BATS_TEST_DIRNAME/../../build}"
    export PROBE="$BUILD/ktls-probe"
    [ -x "$PROBE" ] || return 0 # reported by setup()
    local rc=0
    "$PROBE" >"$BATS_FILE_TMPDIR/text" 2>"$BATS_FILE_TMPDIR/text.err" || rc=$?
    echo "$rc" >"$BATS_FILE_TMPDIR/text.rc"
    rc=0
    "$PROBE" --json >"$BATS_FILE_TMPDIR/json" 2>"$BATS_FILE_TMPDIR/json.err" || rc=$?
    echo "$rc" >"$BATS_FILE_TMPDIR/json.rc"
}

setup() {
    [ -x "$PROBE" ] || fail "$PROBE is missing: run make build/ktls-probe"
}

# jcheck PYTHON-EXPR...: each expression, over the JSON object `d`, must hold.
jcheck() {
    "$PY" -c '
import json, sys
d = json.load(open(sys.argv[1]))
bad = [e for e in sys.argv[2:] if not eval(e, {"d": d})]
if bad:
    print("failed:", *bad, sep="\n  ")
    sys.exit(1)
' "$BATS_FILE_TMPDIR/json" "$@"
}

@test "vm: tls available, the ciphers 6.1 takes, libssl engages TX; exit 0" {
    run cat "$BATS_FILE_TMPDIR/text"
    [ "$(cat "$BATS_FILE_TMPDIR/text.rc")" = 0 ] || fail "exit $(cat "$BATS_FILE_TMPDIR/text.rc"): $output"
    assert_line --regexp '^  tls ULP: +yes$'
    refute_line --regexp '^  likely cause:'
    for c in AES-GCM-128 AES-GCM-256 CHACHA20-POLY1305; do
        assert_line --regexp "^  $c: +1\.2 TX yes, RX yes; 1\.3 TX yes, RX yes$"
    done
    # every cipher line says yes or no (with an errno) for all four
    run grep -cE '^  (AES|CHACHA|SM4|ARIA)[A-Z0-9-]*: +1\.2 TX (yes|no \(E[A-Z]+\)), RX (yes|no \(E[A-Z]+\)); 1\.3 TX (yes|no \(E[A-Z]+\)), RX (yes|no \(E[A-Z]+\))$' "$BATS_FILE_TMPDIR/text"
    assert_output 8
    run cat "$BATS_FILE_TMPDIR/text"
    assert_line --regexp '^  TLS_TX_ZEROCOPY_RO: +yes$'
    assert_line --regexp '^  TLS_RX_EXPECT_NO_PAD: +yes$'
    assert_line --regexp '^  /proc/net/tls_stat: +present$'
    assert_line --regexp '^  TlsTxSw: +[0-9]+$'
    assert_line --regexp '^  built with kTLS: +yes \(kTLS engaged in the loopback handshake\)$'
    assert_line --regexp '^  TLS 1\.2 kTLS TX: +yes \(client and server\)$'
    assert_line --regexp '^  TLS 1\.3 kTLS TX: +yes \(client and server\)$'
    assert_line --regexp '^  TLS 1\.[23] handshake: +ok \(.*, data exchanged\)$'
    assert_line --regexp '^  verdict: +kTLS usable: tls ULP available, AES-GCM-128 TX accepted$'
}

@test "vm: --json says tls_ulp.available true, and what was engaged" {
    [ "$(cat "$BATS_FILE_TMPDIR/json.rc")" = 0 ] || fail "exit $(cat "$BATS_FILE_TMPDIR/json.rc")"
    jcheck \
        'd["tls_ulp"]["available"] is True' \
        'd["tls_ulp"]["errno"] is None and d["tls_ulp"]["cause"] is None' \
        'd["ciphers_tried"] is True' \
        'all(c[v][t]["accepted"] is True for c in d["ciphers"] if c["name"] in ("AES-GCM-128", "AES-GCM-256", "CHACHA20-POLY1305") for v in ("tls12", "tls13") for t in ("tx", "rx"))' \
        'all((x["accepted"] is True and x["errno"] is None) or (x["accepted"] is False and x["errno"].startswith("E") and x["reason"]) for c in d["ciphers"] for v in ("tls12", "tls13") for x in c[v].values())' \
        'd["options"]["tx_zerocopy_ro"]["supported"] is True' \
        'd["options"]["rx_expect_no_pad"]["supported"] is True' \
        'd["tls_stat"]["present"] is True and isinstance(d["tls_stat"]["counters"]["TlsTxSw"], int)' \
        'd["reuseport"]["supported"] is True' \
        'd["libssl"]["loaded"] is True and d["libssl"]["ktls_built"] is True' \
        'd["libssl"]["handshakes"]["tls12"]["tx"]["engaged"] is True' \
        'd["libssl"]["handshakes"]["tls13"]["tx"]["engaged"] is True' \
        'd["libssl"]["handshakes"]["tls13"]["tx"]["client"] and d["libssl"]["handshakes"]["tls13"]["tx"]["server"]' \
        'all(h["data_exchanged"] for h in d["libssl"]["handshakes"].values())' \
        'd["libssl"]["handshakes"]["tls12"]["kernel_calls"]["tls_tx"]["ok"] > 0' \
        'd["verdict"]["ktls_usable"] is True' \
        'd["exit_status"] == 0'
}

@test "vm: --program /usr/sbin/nginx: its libssl, kTLS engaged; /bin/true: exit 1" {
    [ -x /usr/sbin/nginx ] || skip "nginx is not installed"
    run "$PROBE" --program /usr/sbin/nginx
    assert_success
    assert_line --regexp '^  links: +libssl\.so\.3 => /.*/libssl\.so\.3 \(ldd\)$'
    assert_line --regexp '^  TLS 1\.3 kTLS TX: +yes '

    run "$PROBE" --program /bin/true
    assert_failure 1
    assert_line --regexp '^  verdict: +kTLS not usable: /bin/true does not link libssl'
}

#!/usr/bin/env bats
# ktls-probe on the host. The host kernel has no tls ULP (built without
# CONFIG_TLS); what the probe says is checked against what the test finds
# out for itself. The VM suite (tests/vm/probe.bats) covers a kTLS kernel.

bats_require_minimum_version 1.5.0
load '/usr/lib/bats/bats-support/load'
load '/usr/lib/bats/bats-assert/load'

PY=/usr/bin/python3

setup_file() {
    BUILD="${KTLSSHIM_BUILD:-$BATS_TEST_DIRNAME/../../build}"
    export PROBE="$BUILD/ktls-probe"
    # The truth, found independently: try the tls ULP from Python.
    HOST_ULP=$("$PY" - <<'EOF'
import errno, socket
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
c = socket.create_connection(l.getsockname()); a, _ = l.accept()
try:
    c.setsockopt(socket.IPPROTO_TCP, 31, b"tls")   # TCP_ULP
    print("yes")
except OSError as e:
    print(errno.errorcode[e.errno])
EOF
    )
    export HOST_ULP
}

setup() {
    [ -x "$PROBE" ] || fail "$PROBE is missing: run make build/ktls-probe"
}

# For the tests whose expectations rest on a kernel without the tls ULP.
need_no_tls() {
    if [ "$HOST_ULP" = yes ]; then
        skip "this kernel has the tls ULP: the host suite expects one without (see tests/vm)"
    fi
}

# The cause the probe should name, worked out here from what is true.
expected_cause() {
    if zcat /proc/config.gz 2>/dev/null | grep -qx '# CONFIG_TLS is not set' ||
        grep -qx '# CONFIG_TLS is not set' "/boot/config-$(uname -r)" 2>/dev/null ||
        [ ! -e /proc/modules ]; then
        echo "kernel built without CONFIG_TLS"
    elif find "/lib/modules/$(uname -r)" -name 'tls.ko*' 2>/dev/null | grep -q .; then
        echo "tls module not loaded"
    else
        echo "kernel built without CONFIG_TLS"
    fi
}

# jcheck PYTHON-EXPR...: each expression, over the JSON object `d`, must hold.
jcheck() {
    local json="$1"; shift
    printf '%s' "$json" | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
bad = [e for e in sys.argv[1:] if not eval(e, {"d": d})]
if bad:
    print("failed:", *bad, sep="\n  ")
    sys.exit(1)
' "$@"
}

@test "host: tls unavailable, with the likely cause; exit 1" {
    need_no_tls
    run "$PROBE"
    assert_failure 1
    assert_line --regexp "^  tls ULP: +no \(setsockopt TCP_ULP \"tls\" on a loopback socket: $HOST_ULP\)$"
    assert_line --regexp "^  likely cause: +$(expected_cause)"
    assert_line --regexp '^  evidence: +tcp_available_ulp: '
    assert_line --regexp '^  all: +not tried \(kernel has no tls ULP\)$'
    assert_line --regexp '^  TLS_TX_ZEROCOPY_RO: +not tried \(kernel has no tls ULP\)$'
    assert_line --regexp '^  /proc/net/tls_stat: +absent '
    assert_line --regexp '^  verdict: +kTLS not usable: kernel has no tls ULP \(likely cause: '
}

@test "host: text output is aligned name: value lines in sections" {
    need_no_tls
    run "$PROBE"
    assert_failure 1
    local bad
    bad=$(printf '%s\n' "$output" | grep -vE '^$|^[A-Za-z][A-Za-z0-9 ()/_,.-]*$|^  [^ :][^:]*: +[^ ]' || true)
    [ -z "$bad" ] || fail "lines out of format: $bad"
    # the values start in one column
    local cols
    cols=$(printf '%s\n' "$output" | grep -E '^  [^:]+: +' | awk '{ match($0, /: +/); print RSTART + RLENGTH }' | sort -u | wc -l)
    [ "$cols" -eq 1 ] || fail "values start in $cols different columns"
}

@test "host: libssl.so.3 is found, built with kTLS, engaged nowhere" {
    need_no_tls
    run "$PROBE"
    assert_failure 1
    assert_line --regexp '^  path: +/.*/libssl\.so\.3$'
    assert_line --regexp '^  version: +OpenSSL 3\.'
    # Debian's libssl asks for the tls ULP in the handshake: that is how the
    # probe knows, even though the kernel says no.
    assert_line --regexp '^  built with kTLS: +yes \(it asked the kernel for the tls ULP in the handshake; refused: ENOENT\)$'
    assert_line --regexp '^  TLS 1\.2 handshake: +ok \(ECDHE-ECDSA-AES128-GCM-SHA256, data exchanged\)$'
    assert_line --regexp '^  TLS 1\.3 handshake: +ok \(TLS_AES_128_GCM_SHA256, data exchanged\)$'
    assert_line --regexp '^  TLS 1\.2 kTLS TX: +no \(kernel has no tls\)$'
    assert_line --regexp '^  TLS 1\.3 kTLS TX: +no \(kernel has no tls\)$'
}

@test "host: --json parses and has the documented fields for this host" {
    need_no_tls
    run --separate-stderr "$PROBE" --json
    assert_failure 1
    local nproc_n migrate
    nproc_n=$(nproc)
    migrate=$(cat /proc/sys/net/ipv4/tcp_migrate_req 2>/dev/null || echo None)
    jcheck "$output" \
        'd["probe_version"] == "1"' \
        'd["kernel"]["release"] == "'"$(uname -r)"'"' \
        'isinstance(d["kernel"]["version"], str) and isinstance(d["kernel"]["machine"], str)' \
        'd["tls_ulp"]["available"] is False' \
        'd["tls_ulp"]["errno"] == "'"$HOST_ULP"'"' \
        'd["tls_ulp"]["cause"] in ("no_config_tls", "module_not_loaded", "module_load_failed", "no_config_tls_or_modules_missing", "other")' \
        'd["tls_ulp"]["cause_text"].startswith("'"$(expected_cause)"'")' \
        'isinstance(d["tls_ulp"]["evidence"], list) and all(isinstance(e, str) for e in d["tls_ulp"]["evidence"])' \
        '"tls" not in (d["tls_ulp"]["tcp_available_ulp"] or [])' \
        'isinstance(d["tls_ulp"]["module_support"], bool)' \
        'd["tls_ulp"]["tls_module"] is None or isinstance(d["tls_ulp"]["tls_module"], str)' \
        'isinstance(d["tls_ulp"]["modules_builtin_lists_tls"], bool)' \
        'd["tls_ulp"]["kernel_config_tls"] in (None, "y", "m", "not set")' \
        'd["tls_ulp"]["cap_net_admin"] in (True, False, None)' \
        'd["ciphers_tried"] is False' \
        '[c["name"] for c in d["ciphers"]] == ["AES-GCM-128", "AES-GCM-256", "AES-CCM-128", "CHACHA20-POLY1305", "SM4-GCM", "SM4-CCM", "ARIA-GCM-128", "ARIA-GCM-256"]' \
        '[c["id"] for c in d["ciphers"]] == list(range(51, 59))' \
        'all(c[v][t]["accepted"] is None and c[v][t]["errno"] is None and c[v][t]["reason"] == "kernel has no tls ULP" for c in d["ciphers"] for v in ("tls12", "tls13") for t in ("tx", "rx"))' \
        'd["options"]["tx_zerocopy_ro"]["supported"] is None and d["options"]["rx_expect_no_pad"]["supported"] is None' \
        'd["tls_stat"] == {"present": False, "counters": {}}' \
        'any(i["name"] == "lo" for i in d["interfaces"])' \
        'all(isinstance(i["index"], int) for i in d["interfaces"])' \
        'all(i["error"] is not None or set(i["features"]) == {"tls-hw-tx-offload", "tls-hw-rx-offload", "tls-hw-record"} for i in d["interfaces"])' \
        'all(f is None or (type(f["active"]) is bool and type(f["fixed"]) is bool and type(f["requested"]) is bool) for i in d["interfaces"] if i["features"] for f in i["features"].values())' \
        'd["reuseport"] == {"supported": True, "errno": None, "reason": None}' \
        "d['cpus'] == $nproc_n" \
        'isinstance(d["cpus_configured"], int) and isinstance(d["cpus_usable"], int)' \
        "d['tcp_migrate_req'] == $migrate" \
        'd["libssl"]["program"] is None and d["libssl"]["program_links_libssl"] is None' \
        'd["libssl"]["loaded"] is True and d["libssl"]["path"].endswith("/libssl.so.3")' \
        'd["libssl"]["version"].startswith("OpenSSL 3.") and isinstance(d["libssl"]["version_number"], int)' \
        'd["libssl"]["error"] is None' \
        'd["libssl"]["ktls_built"] is True and "tls ULP" in d["libssl"]["ktls_built_reason"]' \
        'all(d["libssl"]["handshakes"][v]["ok"] and d["libssl"]["handshakes"][v]["data_exchanged"] for v in ("tls12", "tls13"))' \
        'd["libssl"]["handshakes"]["tls12"]["protocol"] == "TLSv1.2" and d["libssl"]["handshakes"]["tls13"]["protocol"] == "TLSv1.3"' \
        'all(h[t]["engaged"] is False and h[t]["reason"] == "kernel has no tls" for h in d["libssl"]["handshakes"].values() for t in ("tx", "rx"))' \
        'all(h["kernel_calls"]["tcp_ulp"]["calls"] > 0 and h["kernel_calls"]["tcp_ulp"]["ok"] == 0 for h in d["libssl"]["handshakes"].values())' \
        'd["verdict"]["ktls_usable"] is False and d["verdict"]["reason"].startswith("kernel has no tls ULP")' \
        'd["exit_status"] == 1'
}

@test "host: --help prints usage on stdout, exit 0" {
    run --separate-stderr "$PROBE" --help
    assert_success
    assert_line --index 0 'usage: ktls-probe [--json] [--program PATH]'
    [ -z "$stderr" ]
}

@test "host: an unknown option prints usage on stderr, exit 2" {
    run --separate-stderr "$PROBE" --frobnicate
    assert_failure 2
    [ -z "$output" ] || fail "stdout not empty: $output"
    [[ "$stderr" == *"unknown argument: --frobnicate"* ]] || fail "stderr: $stderr"
    [[ "$stderr" == *"usage: ktls-probe"* ]] || fail "no usage on stderr: $stderr"
}

@test "host: --program without its argument, exit 2" {
    run --separate-stderr "$PROBE" --program
    assert_failure 2
    [[ "$stderr" == *"--program needs an argument"* ]] || fail "stderr: $stderr"
    [[ "$stderr" == *"usage: ktls-probe"* ]] || fail "no usage on stderr: $stderr"
}

@test "host: --program pointing at a missing file, exit 2" {
    run --separate-stderr "$PROBE" --program /nonexistent/ktls-probe-test
    assert_failure 2
    [ -z "$output" ]
    [[ "$stderr" == *"/nonexistent/ktls-probe-test: No such file or directory"* ]] || fail "stderr: $stderr"
    [[ "$stderr" == *"usage: ktls-probe"* ]] || fail "no usage on stderr: $stderr"
}

@test "host: --program /usr/sbin/nginx reports its libssl.so.3 and version" {
    need_no_tls
    [ -x /usr/sbin/nginx ] || skip "nginx is not installed"
    local want_path want_ver
    want_path=$(ldd /usr/sbin/nginx | awk '$1 ~ /^libssl\.so/ { print $3; exit }')
    want_ver=$(openssl version | sed -n 's/.*(Library: \(.*\))$/\1/p')
    [ -n "$want_ver" ] || want_ver=$(openssl version)
    run "$PROBE" --program /usr/sbin/nginx
    assert_failure 1
    assert_line --regexp '^  program: +/usr/sbin/nginx$'
    assert_line --regexp "^  links: +libssl\.so\.3 => ${want_path//./\\.} \(ldd\)$"
    assert_line --regexp "^  path: +${want_path//./\\.}$"
    assert_line --regexp "^  version: +$want_ver$"
    assert_line --regexp '^  TLS 1\.3 handshake: +ok '

    run --separate-stderr "$PROBE" --json --program nginx   # found in $PATH
    assert_failure 1
    jcheck "$output" \
        'd["libssl"]["program"] == "/usr/sbin/nginx"' \
        'd["libssl"]["program_links_libssl"] is True' \
        'd["libssl"]["path"] == "'"$want_path"'"' \
        'd["libssl"]["version"] == "'"$want_ver"'"'
}

@test "host: --program /bin/true reports no libssl, exit 1" {
    need_no_tls
    run "$PROBE" --program /bin/true
    assert_failure 1
    assert_line --regexp '^  libssl: +none: does not link libssl \(ldd lists no libssl\.so\)$'
    refute_line --regexp '^  TLS 1\.[23] handshake:'
    assert_line --regexp '^  note: +also, /bin/true does not link libssl'

    run --separate-stderr "$PROBE" --json --program /bin/true
    assert_failure 1
    jcheck "$output" \
        'd["libssl"]["program"] == "/bin/true"' \
        'd["libssl"]["program_links_libssl"] is False' \
        'd["libssl"]["loaded"] is False and d["libssl"]["handshakes"] is None' \
        'd["libssl"]["ktls_built"] is None' \
        'd["exit_status"] == 1'
}

@test "host: a script as --program has no libssl to look at" {
    need_no_tls
    local script="$BATS_TEST_TMPDIR/script.sh"
    printf '#!/bin/sh\nexit 0\n' >"$script"
    chmod +x "$script"
    run "$PROBE" --program "$script"
    assert_failure 1
    assert_line --regexp '^  libssl: +none: not an ELF executable'
}

@test "host: under valgrind: no errors, no leaks, no fd left open" {
    [ "${KTLSSHIM_TEST_ASAN:-0}" != 1 ] || skip "valgrind cannot run an ASan build of the probe"
    need_no_tls
    command -v valgrind >/dev/null || skip "valgrind is not installed"
    run --separate-stderr timeout 120 valgrind --error-exitcode=9 --leak-check=full \
        --errors-for-leak-kinds=definite,indirect,possible --track-fds=yes \
        "$PROBE" --json --program /bin/true
    assert_failure 1   # the probe's own status, not valgrind's 9
    [[ "$stderr" == *"ERROR SUMMARY: 0 errors"* ]] || fail "$stderr"
    [[ "$stderr" == *"definitely lost: 0 bytes"* || "$stderr" == *"no leaks are possible"* ]] || fail "$stderr"
    # every fd open at exit was handed down by bats, none opened by the probe
    local open inherited
    open=$(printf '%s\n' "$stderr" | grep -cE '^==[0-9]+== Open ' || true)
    inherited=$(printf '%s\n' "$stderr" | grep -c '<inherited from parent>' || true)
    [ "$open" -eq "$inherited" ] || fail "fds left open: $stderr"
}

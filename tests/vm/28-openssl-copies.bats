#!/usr/bin/env bats
# Two copies of OpenSSL 3 in one process, in the VM (kTLS): Python's ssl
# serving beside a plugin linked with its own renamed copy (as a wheel's
# vendored libssl), both at once. The served copy's connection must get
# kTLS, the other copy's must stay untouched in user space (its calls pass
# through: hooks.other_copy), and both bodies arrive whole. The kernel's
# count proves which: exactly one connection's TX was switched.
# tests/host/28-openssl-copies.bats has the cases without kTLS.

load '../helpers/common'
load '../helpers/tls'
load '../helpers/copies'

setup_file() {
    make_copies "$BATS_FILE_TMPDIR"
}

setup() {
    if [ "${KTLSSHIM_VM_INSIDE:-0}" != 1 ]; then
        fail "not inside the kTLS VM: run these through scripts/vm-run (make test-vm)"
    fi
    cd "$BATS_TEST_TMPDIR"
    COPIES="$BATS_FILE_TMPDIR"
    make_certs
    head -c 100000 /dev/urandom >body
    export KTLSSHIM_LOG=debug
    unset KTLSSHIM_KTLS KTLSSHIM_SHARDS KTLSSHIM_ZEROCOPY
    STATS="$BATS_TEST_TMPDIR/s.jsonl"
}
teardown() { teardown_servers; }

@test "two copies of OpenSSL 3 serving at once: the served one's connection gets kTLS (TlsTxSw +1 exactly), the copy's stays in user space untouched, both bodies whole" {
    snap
    plugin_and_ssl together
    note
    assert_equal "$(delta TlsTxSw)" 1
    assert_equal "$(delta TlsDecryptError)" 0
    run stats_check "$STATS" 'len(R) == 1' \
        'S("connections.tls") == 1 and S("ktls.tx") == 1 and S("bytes.user_tx") == 0' \
        'S("hooks.other_copy") > 50'
    assert_output ok
}

#!/usr/bin/env bats
# scripts/demo inside the kTLS VM (what `scripts/demo --vm` runs there): the
# VM's root is read-only, so nginx must find every path it writes in the
# demo's own temp dir; every connection must get kTLS TX.

load '../helpers/common'

setup() {
    if [ "${KTLSSHIM_VM_INSIDE:-0}" != 1 ]; then
        fail "not inside the kTLS VM: run these through scripts/vm-run (make test-vm)"
    fi
}

@test "vm: scripts/demo: 2 workers, 40 downloads intact, kTLS TX on every TLS connection" {
    [ "$(id -u)" = 0 ] || skip "needs root (a private mount namespace for the fresh-install state)"
    run fresh_install env KTLSSHIM_BUILD="$BUILD" "$ROOT/scripts/demo" --inside-vm
    assert_success
    assert_line --regexp '^supervisor [0-9]+, workers: [0-9]+ [0-9]+ $'
    assert_line "40 downloads of 1 MiB + 7 bytes over TLS 1.2 and 1.3: 40 intact"
    assert_line --regexp '^demo ok: 2 workers, 40 intact downloads, kTLS TX on (4[0-9]) of \1 TLS connections$'
    refute_output --partial "Read-only file system"
}

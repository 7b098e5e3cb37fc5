#!/usr/bin/env bats
# The README's main command is a test: scripts/demo runs a real nginx under
# the library with two shards and checks its own result (tests/vm/30-demo.bats
# runs it in the kTLS VM, where the root is read-only as on a fresh install
# whose /var/lib/nginx belongs to root).

load '../helpers/common'

@test "scripts/demo: nginx runs as 2 workers, 40 downloads intact, the supervisor's record sums them" {
    [ "${KTLSSHIM_TEST_ASAN:-0}" != 1 ] ||
        skip "the demo preloads the library alone; an ASan build needs the sanitizer runtimes first"
    [ "$(id -u)" = 0 ] || skip "needs root (a private mount namespace for the fresh-install state)"
    run fresh_install env KTLSSHIM_BUILD="$BUILD" "$ROOT/scripts/demo"
    assert_success
    assert_line --regexp '^supervisor [0-9]+, workers: [0-9]+ [0-9]+ $'
    assert_line "40 downloads of 1 MiB + 7 bytes over TLS 1.2 and 1.3: 40 intact"
    assert_line --regexp '^  ktlsshim\[[0-9]+\]: supervisor of 2 workers, exit 0, sum of 2 records: 4[0-9] accepted, 4[0-9] TLS '
    assert_line --partial '"role": "supervisor"'
    assert_line --regexp '^demo ok: 2 workers, 40 intact downloads, kTLS TX on [0-9]+ of 4[0-9] TLS connections$'
    refute_output --partial emerg
}

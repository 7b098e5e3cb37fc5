#!/usr/bin/env bats
# The Debian package (make deb, scripts/make-deb): what it holds, and that
# installed with dpkg into a scratch root its launcher runs a real server
# sharded with the packaged library.

load '../helpers/common'

# One package for the file's tests.
setup_file() {
    [ "${KTLSSHIM_TEST_ASAN:-0}" = 1 ] && return 0
    command -v dpkg-deb >/dev/null || return 0
    DEB=$("$ROOT/scripts/make-deb" --build "$BUILD" --out "$BATS_FILE_TMPDIR")
    export DEB
}

setup() {
    [ "${KTLSSHIM_TEST_ASAN:-0}" = 1 ] && skip "a package of a sanitizer build is not shipped"
    command -v dpkg-deb >/dev/null || skip "dpkg-deb is not installed"
    [ -f "$DEB" ]
    cd "$BATS_TEST_TMPDIR"
}
teardown() { teardown_servers; }

@test "the package's control: name, version, Depends libc6, Recommends libssl3" {
    run dpkg-deb -f "$DEB" Package Version Architecture Depends Recommends
    assert_success
    assert_line "Package: ktlsshim"
    assert_line --regexp '^Version: [0-9]+\.[0-9]+\.[0-9]+$'
    assert_line "Architecture: $(dpkg --print-architecture)"
    assert_line --regexp '^Depends: libc6 \(>= 2\.[0-9]+\)$'
    assert_line "Recommends: libssl3"
}

@test "dpkg-deb -c lists the library, the probe, the launcher and the three man pages" {
    run sh -c "dpkg-deb -c '$DEB' | awk '{ print \$1, \$6 }'"
    assert_success
    assert_line '-rw-r--r-- ./usr/lib/libktlsshim.so'
    assert_line '-rwxr-xr-x ./usr/bin/ktlsshim'
    assert_line '-rwxr-xr-x ./usr/bin/ktls-probe'
    assert_line '-rw-r--r-- ./usr/share/man/man1/ktlsshim.1.gz'
    assert_line '-rw-r--r-- ./usr/share/man/man1/ktls-probe.1.gz'
    assert_line '-rw-r--r-- ./usr/share/man/man7/ktlsshim.7.gz'
}

@test "dpkg -i into a scratch root: the installed launcher shards python http.server with the installed library" {
    r="$BATS_TEST_TMPDIR/root"
    mkdir -p "$r/var/lib/dpkg/updates" "$r/var/lib/dpkg/info"
    touch "$r/var/lib/dpkg/status"
    # libc6 and libssl3 are the host's: the scratch root's database lacks them.
    run dpkg --root="$r" --force-not-root --force-script-chrootless --force-depends \
        --log=/dev/null -i "$DEB"
    assert_success
    run dpkg --root="$r" -s ktlsshim
    assert_line 'Status: install ok installed'
    # The installed man pages render without a warning.
    for m in man1/ktlsshim.1 man1/ktls-probe.1 man7/ktlsshim.7; do
        run sh -c "zcat '$r/usr/share/man/$m.gz' | LC_ALL=C.UTF-8 groff -man -ww -z -t 2>&1"
        assert_output ''
    done
    echo packaged > index.html
    port=$(free_port)
    setsid "$r/usr/bin/ktlsshim" -n 2 --stats "$BATS_TEST_TMPDIR/s.jsonl" -- \
        "$PY" -m http.server "$port" --bind 127.0.0.1 >srv.out 2>srv.err &
    echo $! > srv.pid
    wait_port "$port"
    sup=$(pid_of srv)
    run children_of "$sup"
    assert_equal "${#lines[@]}" 2
    # The workers run the packaged library, not the build tree's.
    for w in $(children_of "$sup"); do
        grep -q " $r/usr/lib/libktlsshim.so\$" "/proc/$w/maps"
        run grep -c "$BUILD/libktlsshim.so" "/proc/$w/maps"
        assert_output 0
    done
    for i in $(seq 20); do
        [ "$(curl -sf --max-time 10 "http://127.0.0.1:$port/index.html")" = packaged ]
    done
    kill -TERM "$sup"
    wait_gone "$sup" 10
    run json_get s.jsonl supervisor connections.accepted
    assert_output 21
    run "$r/usr/bin/ktls-probe" --help
    assert_success
}

#!/usr/bin/env bats
# The systemd units of docs/deploy.md (contrib/systemd), checked as far as a
# machine whose PID 1 is not systemd allows: `systemd-analyze verify` must
# load them (the nginx drop-in over Debian's own nginx.service) without a
# single message. Units are never started here.

load '../helpers/common'

setup() {
    command -v systemd-analyze >/dev/null || skip "systemd-analyze is not installed"
    cd "$BATS_TEST_TMPDIR"
    # The units name /usr/bin/ktlsshim; verify checks that it exists, so the
    # copies name this build's launcher instead.
    mkdir -p units
}

# verify UNIT-PATH: systemd-analyze verify with the man pages of a staged
# install (for Documentation=man:...); prints every message.
verify() {
    if [ ! -d stage ]; then
        make -s -C "$ROOT" install BUILD="$BUILD" DESTDIR="$BATS_TEST_TMPDIR/stage" \
            PREFIX=/usr >/dev/null
    fi
    MANPATH="$BATS_TEST_TMPDIR/stage/usr/share/man:/usr/share/man" \
        SYSTEMD_UNIT_PATH="$BATS_TEST_TMPDIR/units:" systemd-analyze verify "$1" 2>&1
}

@test "the nginx drop-in over Debian's nginx.service: systemd-analyze verify says nothing" {
    [ -f /lib/systemd/system/nginx.service ] || skip "Debian's nginx package is not installed"
    cp /lib/systemd/system/nginx.service units/
    mkdir -p units/nginx.service.d
    sed "s|/usr/bin/ktlsshim|$BUILD/ktlsshim|" "$ROOT/contrib/systemd/nginx.service.d/ktlsshim.conf" \
        > units/nginx.service.d/ktlsshim.conf
    run verify units/nginx.service
    assert_success
    assert_output ''
    # The drop-in is read: a bad line in it is reported (so the check can fail).
    echo 'KillMode=sometimes' >> units/nginx.service.d/ktlsshim.conf
    run verify units/nginx.service
    assert_output --partial 'ktlsshim.conf'
}

@test "the example unit (contrib/systemd/ktlsshim-example.service): systemd-analyze verify says nothing" {
    sed "s|/usr/bin/ktlsshim|$BUILD/ktlsshim|" "$ROOT/contrib/systemd/ktlsshim-example.service" \
        > units/ktlsshim-example.service
    run verify units/ktlsshim-example.service
    assert_success
    assert_output ''
    run grep -E '^(Type|KillMode|KillSignal|ExecReload)=' units/ktlsshim-example.service
    assert_line 'Type=exec'
    assert_line 'KillMode=mixed'
    assert_line 'ExecReload=/bin/kill -HUP $MAINPID'
}

@test "the drop-in's ExecStart runs: the launcher line it holds starts a sharded server" {
    # Its ExecStart with nginx's arguments replaced by a test server: the
    # launcher options it uses are accepted and shard.
    line=$(sed -n 's/^ExecStart=\(.\+\)/\1/p' "$ROOT/contrib/systemd/nginx.service.d/ktlsshim.conf")
    opts=$(echo "$line" | sed -e 's|^/usr/bin/ktlsshim ||' -e 's| -- .*||' \
        -e "s|/var/log/ktlsshim/|$BATS_TEST_TMPDIR/|g" -e 's|--shards auto|--shards 2|')
    port=$(free_port)
    # shellcheck disable=SC2086
    setsid "$BUILD/ktlsshim" $opts -- "$PY" -m http.server "$port" --bind 127.0.0.1 \
        >srv.out 2>srv.err &
    echo $! > srv.pid
    wait_port "$port"
    run children_of "$(pid_of srv)"
    assert_equal "${#lines[@]}" 2
    kill -TERM "$(pid_of srv)"
    wait_gone "$(pid_of srv)" 10
    [ -s "$BATS_TEST_TMPDIR/nginx.jsonl" ]
}

teardown() { teardown_servers; }

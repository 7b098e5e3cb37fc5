# A throwaway PostgreSQL 15 cluster served under the library, and psql over
# TLS against it. Load after common and tls:
#   load '../helpers/common'; load '../helpers/tls'; load '../helpers/pg'
#
#   pg_start NAME [VAR=VALUE...]  initdb in $BATS_TEST_TMPDIR/NAME (once: a
#                                 later pg_start NAME restarts the same
#                                 cluster), ssl=on with a self-signed
#                                 certificate, listening on 127.0.0.1:$PG_PORT
#                                 (a free port) and a unix socket in the
#                                 cluster's directory; started with `start
#                                 NAME` (the library preloaded, the VAR=VALUE
#                                 settings in its environment) as the
#                                 unprivileged user $PG_USER; returns once it
#                                 listens. A KTLSSHIM_STATS=FILE among the
#                                 settings is made first, as $PG_USER's.
#   pg_stop NAME                  SIGTERM; postgres must be gone (60 s) and
#                                 have exited 0.
#   pg_roundtrip NAME 1.2|1.3 FILE
#                                 one psql session over TLS of that version
#                                 (sslmode=require): FILE (text lines, no
#                                 backslash) goes up with \copy and comes back
#                                 with \copy ... TO, plus a SELECT of a
#                                 300000-byte value; prints the TLS version
#                                 the server saw, the sha256 of what came
#                                 back, and that of the value, one per line:
#                                 pg_expected FILE 1.2|1.3 prints what they
#                                 must be.
#   pg_dir NAME                   the cluster's directory ($PG_USER's: stats
#                                 files for the server go there).
#
# postgres refuses to run as root: the cluster belongs to $PG_USER, and the
# directories above $BATS_TEST_TMPDIR get o+x so that user can reach it.

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_USER=${PG_USER:-postgres}

pg_dir() { echo "$BATS_TEST_TMPDIR/$1"; }

# as_pg CMD...: CMD as $PG_USER (exec'd in place: the pid stays the same).
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        setpriv --reuid="$PG_USER" --regid="$PG_USER" --init-groups -- "$@"
    else
        "$@"
    fi
}

# pg_init DIR: the cluster (initdb), its certificate and configuration.
pg_init() {
    local dir=$1 d
    if [ "$(id -u)" = 0 ]; then
        d=$BATS_TEST_TMPDIR
        while [ "$d" != / ] && [ "$d" != "$(dirname "$BATS_RUN_TMPDIR")" ]; do
            chmod o+x "$d"
            d=$(dirname "$d")
        done
        install -d -o "$PG_USER" -m 700 "$dir"
    else
        mkdir -p -m 700 "$dir"
    fi
    as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; return 1; }
    as_pg openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/server.key" \
        -out "$dir/server.crt" -days 2 -subj /CN=localhost 2>/dev/null || return 1
    pick_port >"$dir/port"
    cat >>"$dir/data/postgresql.conf" <<PGCONF
listen_addresses = '127.0.0.1'
port = $(cat "$dir/port")
unix_socket_directories = '$dir'
ssl = on
ssl_cert_file = '$dir/server.crt'
ssl_key_file = '$dir/server.key'
ssl_min_protocol_version = 'TLSv1.2'
fsync = off
logging_collector = off
log_min_messages = warning
PGCONF
    printf 'local all all trust\nhostssl all all 127.0.0.1/32 trust\n' >"$dir/data/pg_hba.conf"
}

pg_start() {
    local name=$1 dir a
    shift
    dir=$(pg_dir "$name")
    if [ ! -d "$dir/data" ]; then
        pg_init "$dir" || return 1
    fi
    for a in "$@"; do
        case "$a" in
        # setpriv, which runs first with the library preloaded, is root.
        KTLSSHIM_STATS=*) install -o "$PG_USER" -m 644 /dev/null "${a#*=}" ;;
        esac
    done
    PG_PORT=$(cat "$dir/port")
    start "$name" env "$@" setpriv --reuid="$PG_USER" --regid="$PG_USER" --init-groups -- \
        "$PG_BIN/postgres" -D "$dir/data"
    if ! wait_listen "$PG_PORT"; then
        cat "$BATS_TEST_TMPDIR/$name.err" >&2
        return 1
    fi
}

pg_stop() {
    stop_srv "$1" 60 || return 1
    if [ "$status_of" != 0 ]; then
        echo "postgres exited with status $status_of" >&2
        return 1
    fi
}

pg_roundtrip() {
    local name=$1 v=$2 file=$3 out
    out="$BATS_TEST_TMPDIR/$name.$v.$RANDOM"
    psql "host=127.0.0.1 port=$PG_PORT dbname=postgres user=postgres sslmode=require \
ssl_min_protocol_version=TLSv$v ssl_max_protocol_version=TLSv$v" -X -q -A -t -v ON_ERROR_STOP=1 \
        -c 'CREATE TEMP TABLE t (n serial, l text)' \
        -c "\\copy t (l) FROM '$file'" \
        -c "\\copy (SELECT l FROM t ORDER BY n) TO '$out.copy'" \
        -c "\\o $out.repeat" -c "SELECT repeat('x', 300000)" \
        -c '\o' -c 'SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()' || return 1
    sha256sum <"$out.copy" | cut -d' ' -f1
    sha256sum <"$out.repeat" | cut -d' ' -f1
}

# What pg_roundtrip prints for FILE and version V when every byte is right.
pg_expected() {
    echo "TLSv$2"
    sha256sum <"$1" | cut -d' ' -f1
    { head -c 300000 /dev/zero | tr '\0' x; echo; } | sha256sum | cut -d' ' -f1
}

# pg_roundtrips NAME FILE VERSION...: pg_roundtrip once per TLS VERSION
# (1.2, 1.3), each on a connection of its own; every one must print what
# pg_expected says. A failure names its version; all are tried.
pg_roundtrips() {
    local name=$1 file=$2 v got bad=0
    shift 2
    for v in "$@"; do
        got=$(pg_roundtrip "$name" "$v" "$file") || got="psql failed: $got"
        if [ "$got" != "$(pg_expected "$file" "$v")" ]; then
            echo "TLS $v: got $got"
            bad=1
        fi
    done
    return "$bad"
}

# bcs_serve MODE: tests/servers/bio_copy_server.c (copy, filter or plain
# BIO) serves s300007 twice (TLS 1.2, then 1.3) under the library, its
# record in MODE.jsonl: both bodies intact with a clean close_notify, exit 0.
bcs_serve() {
    local mode=$1 port v
    port=$(pick_port)
    start "$mode" env KTLSSHIM_STATS="$BATS_TEST_TMPDIR/$mode.jsonl" \
        "$BCS" "$mode" "$port" "$CERTS/ec.pem" "$CERTS/ec.key" "$WWW" 2
    wait_listen "$port"
    for v in 1.2 1.3; do
        mkdir -p "out-$mode/$v"
        run "$PY" "$HELPERS_DIR/tls_fetch.py" "$port" "$v" "" "out-$mode/$v" s300007
        assert_output "ok s300007 300007 clean"
        assert_equal "$(sha "out-$mode/$v/s300007")" "$(sha "$WWW/s300007")"
    done
    wait_status "$mode"
    assert_equal "$status_of" 0
}

# The cluster of scripts/cluster (machines in network namespaces behind an
# L4 balancer, node_exporter on each, Prometheus) for the bats files that
# build one (tests/host/86-cluster.bats, tests/vm/86-cluster.bats). Every
# machine's nginx gets $PRELOAD (the ASan runtimes first in an ASan run).

# cluster ARGS...: scripts/cluster with this build.
cluster() {
    env KTLSSHIM_BUILD="$BUILD" CLUSTER_PRELOAD="$PRELOAD" "$ROOT/scripts/cluster" "$@"
}

# cluster_setup: skips where namespaces cannot be made; sets $C, the
# cluster's directory.
cluster_setup() {
    [ "$(id -u)" = 0 ] || skip "needs root (network namespaces)"
    C="$BATS_TEST_TMPDIR/cluster"
}

# cluster_teardown: everything the cluster started is killed and its
# namespaces removed, whatever the test's outcome; then no namespace of it
# may be left.
cluster_teardown() {
    local left ns
    [ -n "${C:-}" ] || return 0
    [ -f "$C/netns" ] && left=$(cat "$C/netns")
    cluster down "$C"
    for ns in ${left:-}; do
        if [ -e "/run/netns/$ns" ]; then
            echo "namespace $ns left behind" >&2
            return 1
        fi
    done
    sanitizer_reports
}

# cluster_drive N: N downloads through the balancer, all intact; sets
# SERVED[mI] to what the client saw each machine serve (the X-Machine
# header), and checks every machine served at least one.
declare -gA SERVED
cluster_drive() {
    local n=$1 m k
    run cluster drive "$C" "$n"
    assert_success
    assert_line "intact $n of $n"
    SERVED=()
    while read -r _ m k; do SERVED[$m]=$k; done < <(grep '^served ' <<<"$output")
    [ "${#SERVED[@]}" -eq "$CLUSTER_MACHINES" ] ||
        fail "the client reached ${#SERVED[@]} of $CLUSTER_MACHINES machines: $output"
}

# save_expositions: each machine's node_exporter exposition, fetched once,
# to $BATS_TEST_TMPDIR/mI.prom (each fetch costs seconds in the VM).
save_expositions() {
    local m
    for m in "${!SERVED[@]}"; do
        cluster metrics "$C" "$m" >"$BATS_TEST_TMPDIR/$m.prom"
    done
}

# saved_sums [mI] SERIES...: each SERIES added over the saved expositions
# (or mI's), a line each.
saved_sums() {
    if [[ $1 =~ ^m[0-9]$ ]]; then
        cluster sum - "${@:2}" <"$BATS_TEST_TMPDIR/$1.prom"
    else
        cat "$BATS_TEST_TMPDIR"/m*.prom | cluster sum - "$@"
    fi
}

# expositions_after T: saves every machine's exposition (save_expositions);
# true when each shows its textfile written after T (epoch seconds):
# node_exporter's node_textfile_mtime_seconds, whole seconds. With T taken
# once the client is done, what the files say is final.
expositions_after() {
    local m
    save_expositions
    for m in "${!SERVED[@]}"; do
        awk -v t="$1" '/^node_textfile_mtime_seconds/ && $NF + 0 > t { ok = 1 } END { exit !ok }' \
            "$BATS_TEST_TMPDIR/$m.prom" || return 1
    done
}

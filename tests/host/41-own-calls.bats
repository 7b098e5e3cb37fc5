#!/usr/bin/env bats
# The library's own calls reach libc through its one table (core/libc.h),
# never its own hooks: no relocation in the library binds one of its own
# exported names (what a bare write() inside it would become).

load '../helpers/common'

@test "no relocation of the library names a symbol the library itself exports" {
    cd "$BATS_TEST_TMPDIR"
    lib="$LIB"
    readelf -W --dyn-syms "$lib" | awk '$7 != "UND" && $5 == "GLOBAL" && $4 == "FUNC" {print $8}' |
        sed 's/@.*//' | sort -u > exported
    [ "$(wc -l < exported)" -gt 40 ] # the hooks are there (the list is read right)
    grep -qx write exported
    readelf -W -r "$lib" | awk 'NF >= 5 && $3 !~ /RELATIVE/ {print $5}' | sed 's/@.*//' |
        sort -u > relocated
    grep -qx dlsym relocated # libc's names are there (the list is read right)
    run comm -12 exported relocated
    assert_output ""
}

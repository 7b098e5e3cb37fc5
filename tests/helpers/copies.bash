# Two copies of OpenSSL 3 in one process: what tests/host/28-openssl-copies
# and tests/vm/28-openssl-copies share.

# make_copies DIR: DIR/copy holds a renamed copy of the system's OpenSSL 3
# (libssx.so.3 / libcryptx.so.3: sonames of the same length, swapped in
# place, the same symbol versions, as a wheel's vendored copy) and
# plugin.so (tests/helpers/ossl_plugin.c) linked with it; DIR/same holds
# libssl.so.3 and libcrypto.so.3 copied unchanged (a copy opened by path).
make_copies() {
    local d="$1/copy" sys
    mkdir -p "$d" "$1/same"
    sys=$(dirname "$(readlink -f "$(gcc -print-file-name=libssl.so.3)")")
    [ -f "$sys/libssl.so.3" ] || sys=/usr/lib/x86_64-linux-gnu
    "$PY" - "$sys" "$d" <<'PY'
import sys
src, dst = sys.argv[1:3]
ssl = open(src + "/libssl.so.3", "rb").read()
crypto = open(src + "/libcrypto.so.3", "rb").read()
assert b"libssl.so.3\0" in ssl and b"libcrypto.so.3\0" in crypto
ssl = ssl.replace(b"libssl.so.3\0", b"libssx.so.3\0").replace(b"libcrypto.so.3\0", b"libcryptx.so.3\0")
open(dst + "/libssx.so.3", "wb").write(ssl)
open(dst + "/libcryptx.so.3", "wb").write(crypto.replace(b"libcrypto.so.3\0", b"libcryptx.so.3\0"))
PY
    gcc -shared -fPIC -O1 -o "$d/plugin.so" "$HELPERS_DIR/ossl_plugin.c" "$d/libssx.so.3" \
        "$d/libcryptx.so.3" -Wl,-rpath,"$d"
    cp "$sys/libssl.so.3" "$sys/libcrypto.so.3" "$1/same/"
}

# plugin_and_ssl ORDER: tests/helpers/two_copies.py with the library
# (KTLSSHIM_STATS=$STATS), from the current directory, whose file "body"
# both servers answer with; both bodies checked.
plugin_and_ssl() {
    local ps pp
    ps=$(free_port)
    pp=$(free_port)
    start two env KTLSSHIM_STATS="$STATS" "$PY" "$HELPERS_DIR/two_copies.py" \
        "$COPIES/copy/plugin.so" "$ps" "$pp" "$CERTS/ec.pem" "$CERTS/ec.key" "$PWD/body" "$1"
    if [ "$1" = copy-first ]; then
        wait_listen "$pp"
        assert_equal "$(fetch_line "$pp")" "$(sha body)"
        wait_listen "$ps"
        assert_equal "$(fetch_line "$ps")" "$(sha body)"
    else
        wait_listen "$ps"
        wait_listen "$pp"
        # both at once: the copy's handshake runs beside Python's
        fetch_line "$pp" >pp.sha &
        assert_equal "$(fetch_line "$ps")" "$(sha body)"
        wait $!
        assert_equal "$(cat pp.sha)" "$(sha body)"
    fi
    wait_status two
    cat two.out two.err
    assert_equal "$status_of" 0
    grep -qx ok two.out
}

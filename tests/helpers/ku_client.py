#!/usr/bin/env python3
"""A TLS 1.3 client on the system's libssl.so.3 through ctypes (run without
the library), for what Python's ssl module cannot ask of OpenSSL
(tests/vm/27-keyupdate.bats):

ku_client.py flood PORT RATE SECONDS
  sends one line, then KeyUpdates (update_not_requested: SSL_key_update,
  then SSL_do_handshake sends it) at RATE a second, until the server ends
  the connection or SECONDS pass. Prints "cut after N keyupdates: REASON"
  (REASON: what OpenSSL says of the server's alert, or of the end) and
  exits 0; "not cut after N keyupdates" and exits 1.
ku_client.py pad PORT BLOCK FILE
  SSL_CTX_set_block_padding(BLOCK): every record is padded to a multiple
  of BLOCK bytes. Sends FILE in writes of 1000 bytes, then its
  close_notify, and waits for the server's. Prints "ok LENGTH" and exits 0,
  or "error: why" and exits 1."""
import ctypes, os, select, socket, sys, time

P, I, S = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
lib = ctypes.CDLL("libssl.so.3")
crypto = ctypes.CDLL("libcrypto.so.3")
for name, res, args in [
    ("TLS_client_method", P, []),
    ("SSL_CTX_new", P, [P]),
    ("SSL_CTX_ctrl", ctypes.c_long, [P, I, ctypes.c_long, P]),
    ("SSL_CTX_set_block_padding", I, [P, S]),
    ("SSL_new", P, [P]),
    ("SSL_set_fd", I, [P, I]),
    ("SSL_connect", I, [P]),
    ("SSL_write", I, [P, ctypes.c_char_p, I]),
    ("SSL_read", I, [P, ctypes.c_char_p, I]),
    ("SSL_key_update", I, [P, I]),
    ("SSL_do_handshake", I, [P]),
    ("SSL_shutdown", I, [P]),
    ("SSL_get_error", I, [P, I]),
]:
    f = getattr(lib, name)
    f.restype, f.argtypes = res, args
crypto.ERR_get_error.restype = ctypes.c_ulong
crypto.ERR_reason_error_string.restype = ctypes.c_char_p
crypto.ERR_reason_error_string.argtypes = [ctypes.c_ulong]

SSL_CTRL_SET_MIN_PROTO_VERSION = 123
TLS1_3_VERSION = 0x0304
WANT_READ, WANT_WRITE = 2, 3


def why(ssl, r):
    e = crypto.ERR_get_error()
    text = crypto.ERR_reason_error_string(e) if e else None
    return "%s (SSL_get_error %d)" % (text.decode() if text else "no error text", lib.SSL_get_error(ssl, r))


def connect(port, padding=0):
    ctx = lib.SSL_CTX_new(lib.TLS_client_method())
    lib.SSL_CTX_ctrl(ctx, SSL_CTRL_SET_MIN_PROTO_VERSION, TLS1_3_VERSION, None)
    if padding:
        assert lib.SSL_CTX_set_block_padding(ctx, padding) == 1
    sock = socket.create_connection(("127.0.0.1", port))
    ssl = lib.SSL_new(ctx)
    lib.SSL_set_fd(ssl, sock.fileno())
    r = lib.SSL_connect(ssl)
    if r != 1:
        sys.exit("error: handshake: " + why(ssl, r))
    return sock, ssl


def write_all(ssl, data):
    r = lib.SSL_write(ssl, data, len(data))
    if r != len(data):
        raise OSError("SSL_write: " + why(ssl, r))


def flood(port, rate, seconds):
    sock, ssl = connect(port)
    write_all(ssl, b"hello before the storm\n")
    # Non-blocking from here: what the server sends (tickets, its echo) is
    # read when it comes, and a KeyUpdate waits for room when it must.
    sock.setblocking(False)
    n, end, gap = 0, time.monotonic() + seconds, 1.0 / rate
    nxt = time.monotonic()
    buf = ctypes.create_string_buffer(4096)
    while time.monotonic() < end:
        r = lib.SSL_read(ssl, buf, len(buf))
        if r > 0:
            continue
        e = lib.SSL_get_error(ssl, r)
        if e not in (WANT_READ, WANT_WRITE):  # the server's alert, or its end
            print("cut after %d keyupdates: %s" % (n, why(ssl, r)), flush=True)
            return 0
        if lib.SSL_key_update(ssl, 0) != 1:
            print("cut after %d keyupdates: SSL_key_update refused: %s" % (n, why(ssl, 0)), flush=True)
            return 0
        while True:
            r = lib.SSL_do_handshake(ssl)  # sends it
            if r == 1:
                break
            e = lib.SSL_get_error(ssl, r)
            if e == WANT_WRITE:
                select.select([], [sock], [], 1)
            elif e == WANT_READ:
                select.select([sock], [], [], 0.01)
            else:
                rr = lib.SSL_read(ssl, buf, len(buf))  # its alert may be in
                print("cut after %d keyupdates: %s" % (n, why(ssl, rr)), flush=True)
                return 0
        n += 1
        nxt += gap
        delay = nxt - time.monotonic()
        if delay > 0:
            select.select([sock], [], [], delay)
    print("not cut after %d keyupdates" % n, flush=True)
    return 1


def pad(port, block, path):
    sock, ssl = connect(port, block)
    data = open(path, "rb").read()
    for i in range(0, len(data), 1000):
        write_all(ssl, data[i : i + 1000])
    if lib.SSL_shutdown(ssl) < 0:
        raise OSError("SSL_shutdown")
    buf = ctypes.create_string_buffer(4096)
    r = lib.SSL_read(ssl, buf, len(buf))  # the server's close_notify: 0
    if r != 0 or lib.SSL_get_error(ssl, r) != 6:  # SSL_ERROR_ZERO_RETURN
        raise OSError("no close_notify from the server: " + why(ssl, r))
    print("ok %d" % len(data), flush=True)
    return 0


try:
    if sys.argv[1] == "flood":
        sys.exit(flood(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])))
    sys.exit(pad(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
except OSError as e:
    print("error: %s" % e, flush=True)
    sys.exit(1)

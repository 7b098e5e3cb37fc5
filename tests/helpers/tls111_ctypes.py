#!/usr/bin/env python3
"""A process with both OpenSSLs (tests/host/27-openssl111.bats): Python's own
ssl module (OpenSSL 3) and, through ctypes, libssl.so.1.1 running a TLS
server of its own.

tls111_ctypes.py LIBDIR PORT CERT KEY FILE ORDER
  LIBDIR: where libssl.so.1.1 / libcrypto.so.1.1 are. ORDER "3-first": an
  OpenSSL 3 context is made before anything of 1.1 is called; "111-first":
  after the 1.1 connection. LIBSSL (environment): libssl's file name in
  LIBDIR, libssl.so.1.1 by default; LIBCRYPTO: libcrypto's, libcrypto.so.1.1 by default
  (tests/host/28-openssl-copies.bats runs it on a copy of OpenSSL 3). Serves one connection on 127.0.0.1:PORT with
  OpenSSL 1.1: reads one line, answers with FILE's bytes, shuts down. Prints
  "ok" at the end. ORDER "111-membio": OpenSSL 1.1 alone is called, and the
  connection goes through two memory BIOs the script fills from the socket
  and empties into it (as asyncio does)."""
import ctypes, os, socket, ssl, sys

libdir, port, cert, key, path, order = sys.argv[1:7]
port = int(port)
crypto = ctypes.CDLL(os.path.join(libdir, os.environ.get("LIBCRYPTO", "libcrypto.so.1.1")))
lib = ctypes.CDLL(os.path.join(libdir, os.environ.get("LIBSSL", "libssl.so.1.1")))
P = ctypes.c_void_p
lib.TLS_server_method.restype = P
lib.SSL_CTX_new.restype = P
lib.SSL_CTX_new.argtypes = [P]
lib.SSL_CTX_use_certificate_file.argtypes = [P, ctypes.c_char_p, ctypes.c_int]
lib.SSL_CTX_use_PrivateKey_file.argtypes = [P, ctypes.c_char_p, ctypes.c_int]
lib.SSL_new.restype = P
lib.SSL_new.argtypes = [P]
lib.SSL_set_fd.argtypes = [P, ctypes.c_int]
lib.SSL_accept.argtypes = [P]
lib.SSL_read.argtypes = [P, ctypes.c_char_p, ctypes.c_int]
lib.SSL_write.argtypes = [P, ctypes.c_char_p, ctypes.c_int]
lib.SSL_shutdown.argtypes = [P]
lib.SSL_free.argtypes = [P]
lib.SSL_CTX_free.argtypes = [P]
lib.SSL_set_bio.argtypes = [P, P, P]
lib.SSL_get_error.argtypes = [P, ctypes.c_int]
crypto.BIO_s_mem.restype = P
crypto.BIO_new.restype = P
crypto.BIO_new.argtypes = [P]
crypto.BIO_read.argtypes = [P, ctypes.c_char_p, ctypes.c_int]
crypto.BIO_write.argtypes = [P, ctypes.c_char_p, ctypes.c_int]
SSL_ERROR_WANT_READ = 2

def openssl3():
    c = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # SSL_CTX_new of OpenSSL 3
    c.load_cert_chain(cert, key)
    return c

if order == "3-first":
    ctx3 = openssl3()
ctx = lib.SSL_CTX_new(lib.TLS_server_method())
assert ctx
assert lib.SSL_CTX_use_certificate_file(ctx, cert.encode(), 1) == 1
assert lib.SSL_CTX_use_PrivateKey_file(ctx, key.encode(), 1) == 1
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(1)
conn, _ = srv.accept()
s = lib.SSL_new(ctx)
buf = ctypes.create_string_buffer(4096)
membio = order == "111-membio"

def flush():  # memory BIOs: what libssl wrote goes to the socket
    while membio:
        n = crypto.BIO_read(wbio, buf, len(buf))
        if n <= 0:
            return
        conn.sendall(buf.raw[:n])

def wait_input(r, what):  # memory BIOs: libssl wants more of the socket's bytes
    assert membio and lib.SSL_get_error(s, r) == SSL_ERROR_WANT_READ, what
    flush()
    d = conn.recv(65536)
    assert d, what + ": EOF"
    assert crypto.BIO_write(rbio, d, len(d)) == len(d)

if membio:
    rbio, wbio = crypto.BIO_new(crypto.BIO_s_mem()), crypto.BIO_new(crypto.BIO_s_mem())
    lib.SSL_set_bio(s, rbio, wbio)
    # SSL_accept: its call of SSL_do_handshake is the one the hooks see
    # (this script calls libssl.so.1.1 by its handle, past the hooks)
    while (r := lib.SSL_accept(s)) != 1:
        wait_input(r, "handshake")
    flush()
else:
    lib.SSL_set_fd(s, conn.fileno())
    assert lib.SSL_accept(s) == 1, "handshake"
got = b""
while not got.endswith(b"\n"):
    n = lib.SSL_read(s, buf, len(buf))
    if n <= 0:
        wait_input(n, "read")
        continue
    got += buf.raw[:n]
data = open(path, "rb").read()
off = 0
while off < len(data):
    n = lib.SSL_write(s, data[off:], len(data) - off)
    assert n > 0, "write"
    off += n
lib.SSL_shutdown(s)
flush()
lib.SSL_free(s)
conn.close()
lib.SSL_CTX_free(ctx)
if order == "111-first":
    ctx3 = openssl3()
print("ok")

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
  "ok" at the end."""
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
lib.SSL_set_fd(s, conn.fileno())
assert lib.SSL_accept(s) == 1, "handshake"
buf = ctypes.create_string_buffer(4096)
got = b""
while not got.endswith(b"\n"):
    n = lib.SSL_read(s, buf, len(buf))
    assert n > 0, "read"
    got += buf.raw[:n]
data = open(path, "rb").read()
off = 0
while off < len(data):
    n = lib.SSL_write(s, data[off:], len(data) - off)
    assert n > 0, "write"
    off += n
lib.SSL_shutdown(s)
lib.SSL_free(s)
conn.close()
lib.SSL_CTX_free(ctx)
if order == "111-first":
    ctx3 = openssl3()
print("ok")

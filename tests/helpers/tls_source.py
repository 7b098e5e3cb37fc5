#!/usr/bin/env python3
"""A TLS server that sends files (run with the library): for each of
--serve connections it reads one line, a file name in --dir, sends that
file, then shuts TLS down with close_notify both ways (SSLSocket.unwrap:
SSL_shutdown until the client's close_notify is in). Prints one line per
connection: "ok NAME LENGTH" or "error NAME: why".

--sendfile: the body goes out with OpenSSL's SSL_sendfile (ctypes, looked
up in the global scope as a program linked with libssl would call it; the
SSL * comes out of CPython 3's _ssl._SSLSocket object), retried on
SSL_ERROR_WANT_WRITE; SSL_sendfile needs kTLS TX (libssl's or the
library's own). --timeout T: the socket has a timeout (Python then drives a non-blocking
socket with poll: WANT_WRITE and retries). --small-buffers: a 4 KiB send
buffer, so that sends are cut short. --max 1.2|1.3 caps the version;
--ciphers sets TLS 1.2 suites."""
import argparse, os, socket, ssl, sys

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--cert", required=True)
ap.add_argument("--key", required=True)
ap.add_argument("--dir", required=True)
ap.add_argument("--serve", type=int, default=1)
ap.add_argument("--timeout", type=float)
ap.add_argument("--small-buffers", action="store_true")
ap.add_argument("--max", choices=["1.2", "1.3"])
ap.add_argument("--ciphers")
ap.add_argument("--sendfile", action="store_true")
a = ap.parse_args()

def ssl_sendfile(c, path):
    """The file through SSL_sendfile; returns the bytes sent."""
    import ctypes, select
    g = ctypes.CDLL(None)
    g.SSL_sendfile.restype = ctypes.c_ssize_t
    g.SSL_sendfile.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_size_t, ctypes.c_int]
    g.SSL_get_error.argtypes = [ctypes.c_void_p, ctypes.c_int]
    # PySSLSocket: PyObject_HEAD (16 bytes), PyObject *Socket, SSL *ssl
    sslp = ctypes.c_void_p.from_address(id(c._sslobj) + 24).value
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    off = 0
    try:
        while off < size:
            r = g.SSL_sendfile(sslp, fd, off, size - off, 0)
            if r > 0:
                off += r
                continue
            e = g.SSL_get_error(sslp, int(r))
            if e != ssl.SSL_ERROR_WANT_WRITE:
                raise OSError("SSL_sendfile: %d, SSL_get_error %d, errno %d" % (r, e, ctypes.get_errno()))
            select.select([], [c.fileno()], [], 60)
    finally:
        os.close(fd)
    return off
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(a.cert, a.key)
if a.max:
    ctx.maximum_version = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[a.max]
if a.ciphers:
    ctx.set_ciphers(a.ciphers)
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", a.port))
ls.listen(8)
for _ in range(a.serve):
    raw, _addr = ls.accept()
    name = "?"
    try:
        if a.small_buffers:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        raw.settimeout(a.timeout if a.timeout else None)
        c = ctx.wrap_socket(raw, server_side=True)
        line = b""
        while not line.endswith(b"\n"):
            b = c.recv(256)
            if not b:
                raise EOFError("no request")
            line += b
        name = os.path.basename(line.decode().strip())
        data = open(os.path.join(a.dir, name), "rb").read()
        if a.sendfile:
            ssl_sendfile(c, os.path.join(a.dir, name))
        else:
            c.sendall(data)
        c.unwrap()
        c.close()
        print("ok", name, len(data), flush=True)
    except Exception as e:
        print("error %s: %s: %s" % (name, type(e).__name__, e), flush=True)
        raw.close()

#!/usr/bin/env python3
"""A TLS server that receives uploads (the receive side under test).

Each connection: receive the client's bytes, write "<sha256> <length>" to
OUT/<n>.sum, then close with close_notify. --mode:
  eof     read until the client's close_notify (recv returns b""), then
          unwrap (our close_notify goes second);
  length  read an 8-byte big-endian length, then exactly that many bytes,
          then unwrap (our close_notify goes first, then we wait for the
          client's).
--timeout puts the socket in Python's timeout mode (non-blocking at the
OS level: SSL_read returns WANT_READ and Python polls). --slow reads 7
bytes at a time (less than a record: the rest waits) and sleeps a
millisecond every 1000 reads. --echo (eof mode) sends every received
chunk back as it comes (a download after each upload). --lazy: no handshake
call (do_handshake_on_connect=False): the first SSL_read completes the
handshake, and returns the first bytes. --serve N: connections to serve, then exit 0.
Errors on one connection are written to OUT/<n>.err; the server serves on."""
import argparse, hashlib, os, socket, ssl, struct, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--cert", required=True)
ap.add_argument("--key", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--mode", choices=["eof", "length"], default="eof")
ap.add_argument("--max", choices=["1.2", "1.3"])
ap.add_argument("--ciphers")
ap.add_argument("--timeout", type=float)
ap.add_argument("--slow", action="store_true")
ap.add_argument("--serve", type=int, default=1 << 30)
ap.add_argument("--echo", action="store_true")
ap.add_argument("--lazy", action="store_true")
a = ap.parse_args()

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(a.cert, a.key)
ctx.options |= getattr(ssl, "OP_NO_TICKET", 0)
if a.max:
    ctx.maximum_version = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[a.max]
if a.ciphers:
    ctx.set_ciphers(a.ciphers)

ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", a.port))
ls.listen(16)


reads = 0


def pace():
    global reads
    reads += 1
    if a.slow and reads % 1000 == 0:
        time.sleep(0.001)


def recv_exact(c, n, h):
    got = 0
    while got < n:
        b = c.recv(min(n - got, 7 if a.slow else 65536))
        if not b:
            raise EOFError("short upload: %d of %d" % (got, n))
        h.update(b)
        got += len(b)
        pace()
    return got


for n in range(a.serve):
    raw, _ = ls.accept()
    if a.timeout:
        raw.settimeout(a.timeout)
    c = None
    try:
        c = ctx.wrap_socket(raw, server_side=True, do_handshake_on_connect=not a.lazy)
        h = hashlib.sha256()
        if a.mode == "length":
            hdr = b""
            while len(hdr) < 8:
                b = c.recv(8 - len(hdr))
                if not b:
                    raise EOFError("no length")
                hdr += b
            total = recv_exact(c, struct.unpack(">Q", hdr)[0], h)
        else:
            total = 0
            while True:
                b = c.recv(7 if a.slow else 65536)
                if not b:
                    break
                h.update(b)
                total += len(b)
                if a.echo:
                    c.sendall(b)
                pace()
        with open(os.path.join(a.out, "%d.sum" % n), "w") as f:
            f.write("%s %d\n" % (h.hexdigest(), total))
        c.unwrap()
    except Exception as e:  # one connection's failure; serve on
        with open(os.path.join(a.out, "%d.err" % n), "w") as f:
            f.write("%s: %s\n" % (type(e).__name__, e))
    finally:
        (c or raw).close()

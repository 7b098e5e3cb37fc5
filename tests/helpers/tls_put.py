#!/usr/bin/env python3
"""An HTTPS client whose request travels with its Finished (run without the
library): tls_put.py PORT VERSION CIPHER URLPREFIX FILE...

For each FILE, one connection: the handshake is driven through memory BIOs,
so that in TLS 1.3 the client's Finished is not sent alone: the request
line, its headers and the first 16 KiB of the body are written behind it
and the whole flight goes out in one send (the server's libssl reads the
request with the Finished). The rest of the body follows in 16 KiB writes.
The request is "PUT URLPREFIX/NAME" with Content-Length and "Connection:
close"; the reply is read to the server's close. Prints one line per file:
"NAME STATUS BODY" (the reply's status code and its body, stripped), or
"NAME error WHY"; exits non-zero if any connection failed. VERSION 1.2 or
1.3; CIPHER an OpenSSL TLS 1.2 cipher name or "" (TLS 1.3 suites come from
OPENSSL_CONF). In TLS 1.2 the client's Finished cannot carry data (the
server's Finished comes first); the request then goes right after it."""
import os, socket, ssl, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import membio  # noqa: E402

port, version, cipher, prefix = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
v = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[version]
ctx.minimum_version = ctx.maximum_version = v
if cipher:
    ctx.set_ciphers(cipher)
CHUNK = 16384


def put(path):
    data = open(path, "rb").read()
    name = os.path.basename(path)
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    o, inc, out = membio.handshake(s, ctx)
    head = ("PUT %s/%s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n"
            "Connection: close\r\n\r\n" % (prefix, name, len(data))).encode()
    # The Finished (still in `out` in TLS 1.3), the request and the body's
    # first chunk: one send.
    o.write(head + data[:CHUNK])
    s.sendall(out.read())
    for i in range(CHUNK, len(data), CHUNK):
        o.write(data[i:i + CHUNK])
        s.sendall(out.read())
    reply = b""
    while True:
        try:
            d = o.read(65536)
            if not d:
                break
            reply += d
        except ssl.SSLWantReadError:
            if out.pending:
                s.sendall(out.read())
            d = s.recv(65536)
            if not d:
                break
            inc.write(d)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            break
    s.close()
    hdr, _, body = reply.partition(b"\r\n\r\n")
    status = hdr.split(b" ", 2)[1].decode() if hdr.startswith(b"HTTP/") else "none"
    return "%s %s %s" % (name, status, body.decode(errors="replace").strip())


rc = 0
for path in sys.argv[5:]:
    try:
        print(put(path), flush=True)
    except Exception as e:
        print("%s error %s: %s" % (os.path.basename(path), type(e).__name__, e), flush=True)
        rc = 1
sys.exit(rc)

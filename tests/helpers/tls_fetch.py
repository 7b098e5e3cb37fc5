#!/usr/bin/env python3
"""A TLS client that fetches files from tls_source.py (run without the
library): tls_fetch.py PORT VERSION CIPHER OUTDIR [--slow] [--expect N] NAME...

One connection per name: sends "NAME\\n", reads to the end, which must be
the server's close_notify (a bare end of stream is an error here:
suppress_ragged_eofs is off), answers with its own close_notify, stores
the body as OUTDIR/NAME. --slow: a 4 KiB receive buffer, a pause before
reading and small reads, so that the server's sends are cut short.
--expect N: the client reads N bytes, then sends its close_notify first and
waits for the server's (for servers that never end a connection by
themselves, e.g. openssl s_server). Prints
"ok NAME LENGTH clean" or "error NAME: why"; exits non-zero if any failed.
VERSION 1.2 or 1.3; CIPHER an OpenSSL TLS 1.2 cipher name or "" (TLS 1.3
suites come from OPENSSL_CONF)."""
import os, socket, ssl, sys, time

port, version, cipher, outdir = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
names = sys.argv[5:]
slow, expect = False, None
while names and names[0].startswith("--"):
    if names[0] == "--slow":
        slow, names = True, names[1:]
    elif names[0] == "--expect":
        expect, names = int(names[1]), names[2:]
    else:
        sys.exit("unknown option " + names[0])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
v = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[version]
ctx.minimum_version = ctx.maximum_version = v
if cipher:
    ctx.set_ciphers(cipher)
rc = 0
for name in names:
    try:
        raw = socket.socket()
        if slow:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.settimeout(120)
        raw.connect(("127.0.0.1", port))
        s = ctx.wrap_socket(raw, suppress_ragged_eofs=False)
        s.sendall(name.encode() + b"\n")
        if slow:
            time.sleep(1)
        body = bytearray()
        n = 0
        while expect is None or len(body) < expect:
            b = s.recv(1000 if slow else 65536)
            if not b:
                break
            body += b
            n += 1
            if slow and n % 64 == 0:
                time.sleep(0.05)
        s.unwrap()
        s.close()
        with open(os.path.join(outdir, name), "wb") as f:
            f.write(body)
        print("ok", name, len(body), "clean", flush=True)
    except Exception as e:
        print("error %s: %s: %s" % (name, type(e).__name__, e), flush=True)
        rc = 1
sys.exit(rc)

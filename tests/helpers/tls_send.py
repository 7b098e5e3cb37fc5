#!/usr/bin/env python3
"""A TLS client that uploads files, one connection each (run without the
library): tls_send.py PORT MODE VERSION CIPHER FILE...

MODE eof: send the file, then close_notify, then wait for the server's.
MODE length: an 8-byte length, the file, then wait for the server's
close_notify before sending ours. VERSION 1.2 or 1.3; CIPHER an OpenSSL
TLS 1.2 cipher name, or "" (TLS 1.3 suites come from OPENSSL_CONF: Python
cannot set them). Prints one line per file: "ok NAME" or "error NAME: why";
exits non-zero if any failed."""
import socket, ssl, struct, sys

port, mode, version, cipher = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
v = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[version]
ctx.minimum_version = ctx.maximum_version = v
if cipher:
    ctx.set_ciphers(cipher)
rc = 0
for path in sys.argv[5:]:
    try:
        data = open(path, "rb").read()
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=60))
        if mode == "length":
            s.sendall(struct.pack(">Q", len(data)) + data)
            while s.recv(4096):
                pass
        else:
            s.sendall(data)
        s.unwrap()
        s.close()
        print("ok", path)
    except Exception as e:
        print("error %s: %s: %s" % (path, type(e).__name__, e))
        rc = 1
sys.exit(rc)

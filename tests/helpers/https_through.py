#!/usr/bin/env python3
"""Requests fired at a server while it starts (and falls back):
https_through.py PORT READY THREADS EACH WANTFILE

THREADS clients each make EACH HTTPS GET / requests back to back, all at
once. A connect refused is tried again 5 ms later: no listener took it, as
before any server starts. Any other failure (a reset, an end before the
reply, a wrong body) counts against the server: a connection the kernel
accepted on its port was lost. The file READY is made once the clients run,
so that the caller starts the server after it. The body must be WANTFILE's
bytes. Prints "served N of M", then a line per failure."""
import socket, ssl, sys, threading, time

port, ready, nthreads, each = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
want = open(sys.argv[5], "rb").read()
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
lock = threading.Lock()
served, failures = 0, []


def one():
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            break
        except ConnectionRefusedError:
            time.sleep(0.005)
    try:
        with ctx.wrap_socket(s) as t:
            t.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while True:
                b = t.recv(65536)
                if not b:
                    break
                data += b
        head, _, body = data.partition(b"\r\n\r\n")
        return None if body == want else "wrong body: %r" % head[:40]
    except (OSError, ssl.SSLError) as e:
        return "%s: %s" % (type(e).__name__, e)
    finally:
        s.close()


def client():
    global served
    for _ in range(each):
        why = one()
        with lock:
            if why:
                failures.append(why)
            else:
                served += 1


threads = [threading.Thread(target=client) for _ in range(nthreads)]
for t in threads:
    t.start()
open(ready, "w").close()
for t in threads:
    t.join()
print("served %d of %d" % (served, nthreads * each))
for f in failures:
    print(f)

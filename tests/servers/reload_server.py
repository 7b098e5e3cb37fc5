#!/usr/bin/env python3
"""reload_server.py — a plain TCP server for the rolling-restart tests,
steered by files in a control directory (so that a test can make one
worker, named by its slot or pid, do something at a moment of its choosing).

Replies "pid=<pid> worker=<slot> port=<port>\\n" to each connection, closes.
  --port P     listen on 127.0.0.1:P (repeatable; listened in that order)
  --dir D      the control directory:
                 D/drop.<slot>  exists when a worker of that slot starts: it
                                listens on the first port only (its new
                                configuration dropped the others)
                 D/hold.<slot>  exists when a worker of that slot starts: it
                                waits until the file is gone before its first
                                bind() (a new worker slow to come up)
                 D/exit.<pid>   appears: that worker exits 0 (its own end)
"""
import ctypes
import os
import select
import socket
import sys
import time


def worker_slot():
    # os.environ is a copy made at start-up: ask libc.
    libc = ctypes.CDLL(None)
    libc.getenv.restype = ctypes.c_char_p
    v = libc.getenv(b"KTLSSHIM_WORKER")
    return v.decode().split("/")[0] if v else "-"


def main():
    args = sys.argv[1:]
    ports, d = [], "."
    while args:
        a = args.pop(0)
        if a == "--port":
            ports.append(int(args.pop(0)))
        elif a == "--dir":
            d = args.pop(0)
        else:
            sys.exit("reload_server: bad argument " + a)
    slot = worker_slot()
    while os.path.exists(os.path.join(d, "hold." + slot)):
        time.sleep(0.02)
    if os.path.exists(os.path.join(d, "drop." + slot)):
        ports = ports[:1]
    socks = {}
    for p in ports:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", p))
        s.listen(128)
        socks[s] = p
    me = os.getpid()
    stop = os.path.join(d, "exit.%d" % me)
    while not os.path.exists(stop):
        ready, _, _ = select.select(list(socks), [], [], 0.05)
        for s in ready:
            c, _ = s.accept()
            c.sendall(b"pid=%d worker=%s port=%d\n" % (me, slot.encode(), socks[s]))
            c.close()
    sys.exit(0)


main()

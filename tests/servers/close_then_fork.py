#!/usr/bin/env python3
"""A server shaped like hitch's master, for the shard fallback's kept
listener (tests/host/17-shard-fallback.bats):

    close_then_fork.py PORT DIR

Records its pid, binds and listens on 127.0.0.1:PORT, and aborts if its pid
changed across listen() (as hitch asserts: a fork-mode worker fails so, and
the group falls back). Run again by the fallback (KTLSSHIM_EXEC_HELD in its
environment), it waits for DIR/bind before it binds, so that the test can
queue connections on the kept listener first. Then it writes DIR/listening,
waits for DIR/close, closes its listener and forks a child that binds and
listens on the same address itself and answers each connection's line with
"child PID: LINE". The parent waits for the child."""
import os, signal, socket, sys, time

port, d = int(sys.argv[1]), sys.argv[2]


def wait_for(name):
    while not os.path.exists(os.path.join(d, name)):
        time.sleep(0.02)


def listener():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(64)
    return s


pid = os.getpid()
if "KTLSSHIM_EXEC_HELD" in os.environ:
    wait_for("bind")
s = listener()
if os.getpid() != pid:
    os.abort()
open(os.path.join(d, "listening"), "w").close()
wait_for("close")
s.close()
child = os.fork()
if child == 0:
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    c = listener()
    while True:
        conn, _ = c.accept()
        line = conn.makefile("rb").readline().decode().strip()
        conn.sendall(("child %d: %s\n" % (os.getpid(), line)).encode())
        conn.close()
signal.signal(signal.SIGTERM, lambda *a: (os.kill(child, signal.SIGTERM), os._exit(0)))
os.waitpid(child, 0)

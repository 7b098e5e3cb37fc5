#!/usr/bin/env python3
"""pid_server.py — a plain blocking TCP server for the supervisor tests.

Replies "pid=<pid> worker=<KTLSSHIM_WORKER>\\n" to each connection and closes.
  --port P              listen on 127.0.0.1:P
  --exit-worker I CODE  in worker I (KTLSSHIM_WORKER=I/N), exit(CODE) right
                        after listen() returns
  --first-after S       with --exit-worker: the first incarnation of worker I
                        (no file first-exit.PORT in the current directory
                        yet: it makes it) sleeps S seconds without accepting
                        before it exits; the ones respawned after it exit at
                        once (a crash loop after the supervisor's start-up
                        window, where a failure makes it fall back unsharded)
  --ignore-term         ignore SIGTERM (set before listen, so every worker does)
  --session-child MARK  after listen(), start a child in a session of its own
                        (subprocess start_new_session: setsid() in the child),
                        sleeping 60 s, with MARK.child on its command line
  --daemon PIDFILE      after listen(), daemon(1, 1) (libc's, through ctypes)
                        and write the daemon's pid to PIDFILE
"""
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time


def worker_env():
    # os.environ is a copy made at start-up: the library sets the variable in
    # each worker later, so ask libc.
    libc = ctypes.CDLL(None)
    libc.getenv.restype = ctypes.c_char_p
    v = libc.getenv(b"KTLSSHIM_WORKER")
    return v.decode() if v else ""


def main():
    args = sys.argv[1:]
    port, exit_worker, exit_code, ignore_term, pidfile, mark = 0, None, 0, False, None, None
    first_after = 0.0
    while args:
        a = args.pop(0)
        if a == "--port":
            port = int(args.pop(0))
        elif a == "--exit-worker":
            exit_worker, exit_code = args.pop(0), int(args.pop(0))
        elif a == "--first-after":
            first_after = float(args.pop(0))
        elif a == "--ignore-term":
            ignore_term = True
        elif a == "--session-child":
            mark = args.pop(0)
        elif a == "--daemon":
            pidfile = args.pop(0)
        else:
            sys.exit("pid_server: bad argument " + a)
    if ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(128)
    w = worker_env()
    if exit_worker is not None and w.split("/")[0] == exit_worker:
        if first_after:
            try:
                os.close(os.open("first-exit.%d" % port, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                time.sleep(first_after)
            except FileExistsError:
                pass
        os._exit(exit_code)
    if mark:
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", mark + ".child"],
                         start_new_session=True)
    if pidfile:
        if ctypes.CDLL(None).daemon(1, 1) != 0:
            sys.exit("pid_server: daemon() failed")
        with open(pidfile + ".tmp", "w") as f:
            f.write("%d\n" % os.getpid())
        os.rename(pidfile + ".tmp", pidfile)
    while True:
        c, _ = s.accept()
        try:
            c.sendall(("pid=%d worker=%s\n" % (os.getpid(), w)).encode())
        except OSError:
            pass
        c.close()


main()

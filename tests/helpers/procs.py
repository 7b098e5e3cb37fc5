"""Process helpers for tests that must see what a shell's `wait` cannot:
death by a signal (returncode -N) versus an exit status of 128+N, and
signals that come from a terminal. Imported by short inline scripts in the
bats files: sys.path.insert(0, HELPERS); from procs import *"""
import fcntl
import os
import pty
import signal
import socket
import subprocess
import termios
import time


def start(cmd, env=None, tty=False):
    """Starts cmd (a list) in its own session. With tty=True the session's
    controlling terminal is a new pty; returns (Popen, master fd or None)."""
    master = slave = None
    if tty:
        master, slave = pty.openpty()

    def ctty():
        import resource
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGQUIT: no core file
        if slave is not None:
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    full_env = dict(os.environ)
    full_env.update(env or {})
    io = dict(stdin=slave, stdout=slave, stderr=slave) if tty else \
        dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open("srv.err", "wb"))
    p = subprocess.Popen(cmd, env=full_env, start_new_session=True, preexec_fn=ctty, **io)
    if slave is not None:
        os.close(slave)
    return p, master


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(cond, seconds=20, what="condition"):
    """Calls cond() every 0.1 s until it returns a true value (returned)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise SystemExit("timed out waiting for " + what)


def ask(port, line, timeout=10):
    """One request to tiny_server; its reply, or None if nothing answered."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(line.encode() + b"\n")
            out = b""
            while True:
                b = s.recv(4096)
                if not b:
                    return out.decode()
                out += b
    except OSError:
        return None


def info(port):
    """tiny_server's info reply as a dict (pid, hups, int, usr1, ...)."""
    r = ask(port, "info")
    if not r:
        return None
    return dict(kv.split("=", 1) for kv in r.split())


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return sorted(int(x) for x in f.read().split())
    except OSError:
        return []


def per_worker(port, workers, cond, seconds=20):
    """Asks info until every worker pid has answered with cond(reply) true;
    returns {pid: reply}."""
    seen = {}

    def done():
        r = info(port)
        if r and cond(r):
            seen[int(r["pid"])] = r
        return set(workers) <= set(seen)
    poll(done, seconds, "every worker to answer %s" % sorted(workers))
    return seen


def returncode(p, seconds=30):
    try:
        return p.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        # What each process of the group was doing, for the failure report.
        state = []
        for pid in [p.pid] + children(p.pid):
            try:
                with open("/proc/%d/status" % pid) as f:
                    keep = ("State", "SigPnd", "ShdPnd", "SigBlk", "SigCgt", "SigIgn")
                    state.append("%d %s" % (pid, " ".join(
                        l.split(":")[0] + "=" + l.split(":")[1].strip()
                        for l in f if l.split(":")[0] in keep)))
            except OSError:
                pass
        os.killpg(p.pid, signal.SIGKILL)
        raise SystemExit("the process did not end within %d s; %s" % (seconds, "; ".join(state)))

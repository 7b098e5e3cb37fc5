#!/usr/bin/env python3
"""aio_tls_server.py — an asyncio TLS server for the exec-mode tests (its
event loop exists before listen(): fork mode refuses it).

Each connection sends one line and gets an answer, then the server closes:
  PID   -> "pid=<pid> worker=<KTLSSHIM_WORKER> file=<sha256 of FILE at start>\\n"
  FILE  -> the bytes of FILE as read when the server started
  --port P          listen on 127.0.0.1:P
  --cert C --key K  TLS certificate and key
  --file F          the file served (read once, at start); if it holds exactly
                    "exit 3\n", the server exits 3 at start instead (a broken config)
  --ignore-term     ignore SIGTERM; otherwise SIGTERM is a graceful stop: no new
                    connections, those accepted are finished, then exit 0
"""
import asyncio
import ctypes
import hashlib
import os
import signal
import ssl
import sys


def worker_env():
    libc = ctypes.CDLL(None)
    libc.getenv.restype = ctypes.c_char_p
    v = libc.getenv(b"KTLSSHIM_WORKER")
    return v.decode() if v else ""


def main():
    args = sys.argv[1:]
    port, cert, key, path, ignore_term = 0, None, None, None, False
    while args:
        a = args.pop(0)
        if a == "--port":
            port = int(args.pop(0))
        elif a == "--cert":
            cert = args.pop(0)
        elif a == "--key":
            key = args.pop(0)
        elif a == "--file":
            path = args.pop(0)
        elif a == "--ignore-term":
            ignore_term = True
        else:
            sys.exit("aio_tls_server: bad argument " + a)
    data = open(path, "rb").read() if path else b""
    if data == b"exit 3\n":
        sys.exit(3)
    digest = hashlib.sha256(data).hexdigest()
    if ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    w = worker_env()

    active = set()

    async def serve(reader, writer):
        active.add(asyncio.current_task())
        try:
            line = (await asyncio.wait_for(reader.readline(), 30)).strip()
            if line == b"PID":
                writer.write(("pid=%d worker=%s file=%s\n" % (os.getpid(), w, digest)).encode())
            elif line == b"FILE":
                writer.write(data)
            await writer.drain()
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            pass
        finally:
            writer.close()
            active.discard(asyncio.current_task())

    async def run():
        srv = await asyncio.start_server(serve, "127.0.0.1", port, ssl=ctx, backlog=128)
        stop = asyncio.Event()
        if not ignore_term:
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        srv.close()  # the listening fd only: accepted connections go on
        # Done when every connection accepted before the close has ended.
        # An accept() becomes a task at once and a transport (counted in
        # Server._active_count) only when that task first runs, and it is in
        # `active` only once its TLS handshake is done; so wait until no
        # other task is left and asyncio counts no connection (3.11's
        # wait_closed() does not wait for them). 10 s at most. (A "none in
        # `active` for 0.3 s" rule here dropped a connection still in its
        # handshake on a loaded machine, and the client saw a reset.)
        me = asyncio.current_task()
        for _ in range(100):
            if srv._active_count == 0 and not (asyncio.all_tasks() - {me}):
                break
            await asyncio.sleep(0.1)

    asyncio.run(run())


main()

"""A TLS client handshake driven through memory BIOs, for the test clients
that must choose what goes out with the client's last flight
(tls_put.py, tls.bash's bad_client)."""
import ssl


def handshake(s, ctx):
    """Handshakes over the connected socket s; returns (SSLObject, inc,
    out), its two BIOs: the client's last flight (its Finished) is left in
    `out`, unsent, for the caller to send alone or with what follows it;
    what the socket brings goes into `inc`. Raises OSError if the server
    closes first."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    o = ctx.wrap_bio(inc, out, server_hostname="localhost")
    while True:
        try:
            o.do_handshake()
            return o, inc, out
        except ssl.SSLWantReadError:
            if out.pending:
                s.sendall(out.read())
            d = s.recv(65536)
            if not d:
                raise OSError("server closed during the handshake")
            inc.write(d)

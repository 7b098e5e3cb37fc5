#!/usr/bin/env python3
"""Two copies of OpenSSL 3 in one process (tests/host/28-openssl-copies.bats):
Python's ssl module on the system's libssl.so.3, and a plugin (ossl_plugin.c)
linked with its own renamed copy, loaded through ctypes (RTLD_LOCAL), as a
wheel's extension module is. Each serves one connection: it reads a line and
answers with FILE's bytes.

two_copies.py PLUGIN PORT_SSL PORT_PLUGIN CERT KEY FILE ORDER
  ORDER "together": both serve at once, in two threads; "copy-first": the
  plugin serves before the ssl module is even imported.
Prints "ok" when both served without an error."""
import ctypes, socket, sys, threading

plugin, port_ssl, port_plugin, cert, key, path, order = sys.argv[1:8]
lib = ctypes.CDLL(plugin)
lib.plugin_serve.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p]
done = {}


def listener(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(port)))
    s.listen(4)
    return s


def serve_plugin():
    l = listener(port_plugin)
    done["plugin"] = lib.plugin_serve(l.fileno(), cert.encode(), key.encode(), path.encode())


def serve_ssl():
    import ssl
    c = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    c.load_cert_chain(cert, key)
    l = listener(port_ssl)
    conn, _ = l.accept()
    with c.wrap_socket(conn, server_side=True) as t:
        line = b""
        while not line.endswith(b"\n"):
            d = t.recv(4096)
            if not d:
                break
            line += d
        t.sendall(open(path, "rb").read())
        try:
            t.unwrap()
        except OSError:
            pass  # the client may leave without its close_notify
    done["ssl"] = 0


if order == "copy-first":
    serve_plugin()
    serve_ssl()
else:
    threads = [threading.Thread(target=serve_ssl), threading.Thread(target=serve_plugin)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
print("ok" if done == {"ssl": 0, "plugin": 0} else "failed: %r" % done)

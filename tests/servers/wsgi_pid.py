# A WSGI app for gunicorn: replies with the pid of the process that served
# it and the sha256 of the request body (tests/host/17-shard-fallback.bats).
import hashlib
import os


def app(environ, start_response):
    n = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(n) if n else b""
    out = ("pid=%d sha=%s\n" % (os.getpid(), hashlib.sha256(body).hexdigest())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]

"""Port forwarding: /v1/sandboxes/{id}/ports/{port}/{path} reaches a server
inside a sandbox, and nothing else (not the host's loopback, not another
sandbox's ports)."""
import hashlib
import json
import socket
import threading
import time
import urllib.request

import pytest

from sbxserver import SbxServer

# A small server for inside: echoes method, path, query, some headers and
# the body as JSON; /big streams N bytes.
ECHO = r'''
import json, sys
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if self.path.startswith("/big"):
            size = int(self.path.split("=")[1])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = bytes(range(256)) * 256
            left = size
            while left:
                part = chunk[:min(left, len(chunk))]
                self.wfile.write(part)
                left -= len(part)
            return
        out = json.dumps({"method": self.command, "path": self.path,
                          "ctype": self.headers.get("Content-Type"),
                          "accept": self.headers.get("Accept"),
                          "body": body.decode("latin-1")}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = answer
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''


def raw(srv, method, path, body=None, headers=None, timeout=60):
    req = urllib.request.Request(srv.url + path, data=body, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def start_echo(srv, sid, port):
    st, _, _ = srv.request("PUT", "/v1/sandboxes/%s/files/echo.py" % sid,
                           ECHO.encode())
    assert st in (200, 201), st
    st, _, p = srv.post("/v1/sandboxes/%s/exec" % sid,
                        {"argv": ["python3", "echo.py", str(port)],
                         "background": True})
    assert st == 201, p
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        st, _, body = raw(srv, "GET", "/v1/sandboxes/%s/ports/%d/ready"
                          % (sid, port))
        if st == 201:
            return
        time.sleep(0.1)
    pytest.fail("the server inside never answered: %s %r" % (st, body))


@pytest.fixture(scope="module")
def srv():
    with SbxServer() as s:
        yield s


@pytest.fixture(scope="module")
def box(srv):
    st, _, sb = srv.post("/v1/sandboxes", {})
    assert st == 201, sb
    start_echo(srv, sb["id"], 8000)
    yield sb["id"]
    srv.request("DELETE", "/v1/sandboxes/" + sb["id"])


def test_methods_paths_queries_and_bodies_reach_the_server_inside(srv, box):
    for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
        body = b'{"n": 1}' if method != "GET" else None
        st, h, data = raw(srv, method,
                          "/v1/sandboxes/%s/ports/8000/a/b%%20c?x=1&y=a%%20b"
                          % box, body=body,
                          headers={"Content-Type": "application/json",
                                   "Accept": "text/x-test"})
        assert st == 201, (method, st, data)
        assert h["Content-Type"].startswith("application/json")
        got = json.loads(data)
        assert got["method"] == method
        assert got["path"] == "/a/b%20c?x=1&y=a%20b", got
        assert got["accept"] == "text/x-test"
        if body:
            assert got["body"] == body.decode() and \
                got["ctype"] == "application/json", got


def test_a_large_answer_streams_through_whole(srv, box):
    size = 24 << 20
    st, _, data = raw(srv, "GET", "/v1/sandboxes/%s/ports/8000/big?n=%d"
                      % (box, size))
    assert st == 200 and len(data) == size
    chunk = bytes(range(256)) * 256
    want = hashlib.sha256((chunk * (size // len(chunk)))).hexdigest()
    assert hashlib.sha256(data).hexdigest() == want


def test_a_closed_port_is_a_json_502(srv, box):
    st, h, data = raw(srv, "GET", "/v1/sandboxes/%s/ports/8001/" % box)
    assert st == 502
    err = json.loads(data)["error"]
    assert err["code"] == "target_unavailable" and "8001" in err["message"]


def test_bad_port_and_unknown_sandbox(srv, box):
    st, _, data = raw(srv, "GET", "/v1/sandboxes/%s/ports/70000/" % box)
    assert st == 400 and json.loads(data)["error"]["code"] == "bad_request"
    st, _, data = raw(srv, "GET", "/v1/sandboxes/%s/ports/x/" % box)
    assert st == 400
    st, _, data = raw(srv, "GET", "/v1/sandboxes/sb-nope/ports/8000/")
    assert st == 404 and json.loads(data)["error"]["code"] == "not_found"


def test_the_hosts_loopback_is_not_reachable_through_a_sandbox(srv, box):
    """A port that is open on the host's 127.0.0.1 (and closed inside)
    answers 502: the connection is made inside the sandbox's network."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    port = lsock.getsockname()[1]
    seen = []

    def accept():
        lsock.settimeout(5)
        try:
            c, _ = lsock.accept()
            seen.append(c)
        except OSError:
            pass

    t = threading.Thread(target=accept)
    t.start()
    try:
        st, _, data = raw(srv, "GET", "/v1/sandboxes/%s/ports/%d/" %
                          (box, port))
        assert st == 502, data
        assert json.loads(data)["error"]["code"] == "target_unavailable"
    finally:
        t.join()
        lsock.close()
    assert seen == [], "the host listener got a connection"


def test_one_sandbox_does_not_reach_anothers_ports(srv, box):
    st, _, other = srv.post("/v1/sandboxes", {})
    assert st == 201
    try:
        st, _, data = raw(srv, "GET", "/v1/sandboxes/%s/ports/8000/x" %
                          other["id"])
        assert st == 502, data
    finally:
        srv.request("DELETE", "/v1/sandboxes/" + other["id"])

"""Host routes: path prefixes of a sandbox's gateway socket forwarded to a
server of the host, saying which sandbox is calling; nothing else of the
host becomes reachable."""
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sbxserver import SbxServer


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen = []

    def log_message(self, *a):
        pass

    def handle_one(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        Recorder.seen.append({
            "method": self.command, "path": self.path,
            "sandbox": self.headers.get("X-Sbx-Sandbox"),
            "labels": self.headers.get("X-Sbx-Labels"),
            "ctype": self.headers.get("Content-Type"),
            "body": body.decode()})
        out = json.dumps({"tool": self.path, "got": body.decode()}).encode()
        self.send_response(207)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = handle_one


@pytest.fixture(scope="module")
def host():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield "http://127.0.0.1:%d" % httpd.server_address[1]
    httpd.shutdown()


@pytest.fixture(scope="module")
def srv():
    with SbxServer() as s:
        yield s


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


CALL = r'''
import json, os, sys, urllib.request
base = os.environ["SBX_GATEWAY_URL"]
method, path, body = sys.argv[1], sys.argv[2], sys.argv[3]
req = urllib.request.Request(base + path, method=method,
                             data=body.encode() if body else None,
                             headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=30) as r:
        print(json.dumps([r.status, r.read().decode()]))
except urllib.error.HTTPError as e:
    print(json.dumps([e.code, e.read().decode()]))
'''


def call_inside(srv, sid, method, path, body=""):
    st, _, out = srv.post("/v1/sandboxes/%s/exec" % sid,
                          {"argv": ["python3", "-c", CALL, method, path,
                                    body]})
    assert st == 200 and out["exit_code"] == 0, out
    return json.loads(out["stdout"])


def test_a_route_reaches_the_host_server_with_the_sandboxs_identity(srv,
                                                                    host):
    st, _, sb = srv.post("/v1/sandboxes", {
        "labels": {"team": "rl"}, "host_routes": {"/tools/": host}})
    assert st == 201, sb
    assert sb["llm"]["host_routes"] == {"/tools/": host}
    assert sb["llm"]["base_url"] is None
    Recorder.seen.clear()
    status, text = call_inside(srv, sb["id"], "POST", "/tools/search?q=a%20b",
                               '{"k": 1}')
    assert status == 207, text
    assert json.loads(text) == {"tool": "/tools/search?q=a%20b",
                                "got": '{"k": 1}'}
    (seen,) = Recorder.seen
    assert seen["sandbox"] == sb["id"]
    assert json.loads(seen["labels"]) == {"team": "rl"}
    assert seen["method"] == "POST" and seen["ctype"] == "application/json"
    # Paths outside the prefix, and the model routes, are not the host's.
    status, text = call_inside(srv, sb["id"], "GET", "/other/x")
    assert status == 404 and json.loads(text)["error"]["code"] == "not_found"
    status, text = call_inside(srv, sb["id"], "POST", "/v1/chat/completions",
                               '{"model": "m"}')
    assert status == 404, text
    assert len(Recorder.seen) == 1
    srv.request("DELETE", "/v1/sandboxes/" + sb["id"])


def test_a_target_that_is_down_is_a_json_502(srv):
    dead = "http://127.0.0.1:%d" % free_port()
    st, _, sb = srv.post("/v1/sandboxes", {"host_routes": {"/t/": dead}})
    assert st == 201, sb
    status, text = call_inside(srv, sb["id"], "GET", "/t/x")
    assert status == 502, text
    assert json.loads(text)["error"]["code"] == "target_unavailable"
    srv.request("DELETE", "/v1/sandboxes/" + sb["id"])


def test_a_sandbox_without_routes_has_no_gateway(srv, host):
    st, _, sb = srv.post("/v1/sandboxes", {})
    assert st == 201 and sb["llm"] is None
    code = ("import socket; s = socket.socket(); "
            "print(s.connect_ex(('127.0.0.1', 4000)))")
    st, _, out = srv.post("/v1/sandboxes/%s/exec" % sb["id"],
                          {"argv": ["python3", "-c", code]})
    assert out["stdout"].strip() == "111", out  # ECONNREFUSED
    srv.request("DELETE", "/v1/sandboxes/" + sb["id"])


@pytest.mark.parametrize("routes,word", [
    ("x", "must be an object"),
    ({"tools/": "http://127.0.0.1:1"}, "prefix"),
    ({"/tools": "http://127.0.0.1:1"}, "prefix"),
    ({"/../": "http://127.0.0.1:1"}, "prefix"),
    ({"/v1/": "http://127.0.0.1:1"}, "gateway's own"),
    ({"/t/": "ftp://h"}, "http://"),
    ({"/t/": 5}, "http://"),
    ({"/t/": "http://h/?q=1"}, "without a query"),
    ({"/%d/" % i: "http://h" for i in range(9)}, "more than 8"),
])
def test_bad_routes_are_refused(srv, routes, word):
    st, _, body = srv.post("/v1/sandboxes", {"host_routes": routes})
    assert st == 422, body
    assert word in body["error"]["message"], body

"""sbx_guest inside sandboxes: llm_batch through the model gateway and
call_tool through a host route, from a Python REPL cell as it is; a
sandbox without the route cannot reach the host's tool server."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mock_upstream import MockUpstream
from sbxserver import SbxServer


class Tools(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen = []

    def log_message(self, *a):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        args = json.loads(self.rfile.read(n) or b"{}")
        Tools.seen.append((self.path, self.headers.get("X-Sbx-Sandbox"),
                           args))
        out = json.dumps({"tool": self.path.rsplit("/", 1)[-1],
                          "echo": args}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


@pytest.fixture(scope="module")
def tools():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Tools)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield "http://127.0.0.1:%d" % httpd.server_address[1]
    httpd.shutdown()


@pytest.fixture(scope="module")
def up():
    with MockUpstream() as u:
        yield u


@pytest.fixture(scope="module")
def srv(up, tmp_path_factory):
    with SbxServer(extra_args=[
            "--state-dir", str(tmp_path_factory.mktemp("state")),
            "--upstream", "mock=" + up.base_url]) as s:
        yield s


def cell(srv, sid, code):
    st, _, out = srv.post("/v1/sandboxes/%s/repl" % sid,
                          {"language": "python", "code": code})
    assert st == 200, out
    return out


def test_llm_batch_and_call_tool_from_a_repl_cell(srv, tools, up):
    st, _, sb = srv.post("/v1/sandboxes", {
        "llm": {"session": "guest-demo"}, "host_routes": {"/tools/": tools}})
    assert st == 201, sb
    Tools.seen.clear()
    out = cell(srv, sb["id"], "\n".join([
        "import sbx_guest",
        "texts = sbx_guest.llm_batch(['first', 'second', 'third'],",
        "                            model='mock-model', max_parallel=3)",
        "hit = sbx_guest.call_tool('search', q='x', k=2)",
        "[texts, hit]"]))
    assert out["status"] == "ok", out
    texts, hit = eval(out["result"])  # a repr of plain lists and dicts
    assert len(texts) == 3 and all(t and not t.startswith("Error")
                                   for t in texts), texts
    assert hit == {"tool": "search", "echo": {"q": "x", "k": 2}}
    assert Tools.seen == [("/tools/search", sb["id"], {"q": "x", "k": 2})]
    st, _, res = srv.get("/v1/traces?sandbox=" + sb["id"])
    traces = res["traces"]
    assert len(traces) == 3 and all(t["session_name"] == "guest-demo"
                                    for t in traces), traces
    # per-item errors come back as strings, in order
    out = cell(srv, sb["id"], "sbx_guest.llm_batch(['ok', 'bad'], "
               "model='no-such-model')")
    assert out["status"] == "ok", out
    items = eval(out["result"])
    assert all(i.startswith("Error: HTTP 404") for i in items), items
    srv.request("DELETE", "/v1/sandboxes/" + sb["id"])


def test_a_sandbox_without_the_route_cannot_reach_the_tools(srv, tools):
    st, _, sb = srv.post("/v1/sandboxes", {"llm": True})
    assert st == 201, sb
    Tools.seen.clear()
    out = cell(srv, sb["id"], "\n".join([
        "import sbx_guest",
        "try:",
        "    sbx_guest.call_tool('search', q='x')",
        "    r = 'reached'",
        "except sbx_guest.ToolError as e:",
        "    r = (e.status, str(e))",
        "r"]))
    assert out["status"] == "ok", out
    status, text = eval(out["result"])
    assert status == 404 and "no route" in text, text
    assert Tools.seen == []
    srv.request("DELETE", "/v1/sandboxes/" + sb["id"])


def test_call_tool_with_host_routes_only(srv, tools):
    st, _, sb = srv.post("/v1/sandboxes", {"host_routes": {"/tools/": tools}})
    assert st == 201, sb
    out = cell(srv, sb["id"], "import sbx_guest\n"
               "sbx_guest.call_tool('lookup', id=7)")
    assert out["status"] == "ok", out
    assert eval(out["result"]) == {"tool": "lookup", "echo": {"id": 7}}
    srv.request("DELETE", "/v1/sandboxes/" + sb["id"])


def test_the_python_client_creates_sandboxes_with_host_routes(srv, tools):
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                    "clients", "python"))
    from sbx import Client
    with Client(srv.url) as client:
        with client.create_sandbox(host_routes={"/tools/": tools}) as sb:
            assert sb.llm_base_url is None
            r = sb.exec(["python3", "-c",
                         "import sbx_guest; "
                         "print(sbx_guest.call_tool('ping', n=1)['tool'])"])
            assert r.stdout.strip() == "ping", r

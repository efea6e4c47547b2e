"""Interfaces: @expose functions of a stateful sandbox called over RPC
(/v1/sandboxes/{id}/rpc...), the generated client, prompt and MCP config.

One server and sandbox serve most tests; tests that break an interface
on purpose load one of their own.
"""
import concurrent.futures
import importlib.util
import json
import os
import sys
import urllib.error
import urllib.request

import pytest

from sbxserver import SbxServer

HELPER = '''
def scale(xs, k):
    return [x * k for x in xs]
'''

INTERFACE = '''
import asyncio
import os
import threading
from typing import Any, Dict, List, Optional

from helper import scale


class TinyModel:
    """A stand-in for a model loaded once at module level."""

    def __init__(self):
        self.weights = [0.5, -1.0, 2.0]
        self.loads = 1

    def embed(self, text):
        return [round(w * len(text), 3) for w in self.weights]


model = TinyModel()
CALLS = {"n": 0}
_barrier = threading.Barrier(4)
_lock = threading.Lock()
_arrived = {"n": 0}


@expose
def get_embedding(text: str) -> dict:
    """Embed text with the model.

    Returns a dict with the vector.
    """
    CALLS["n"] += 1
    return {"embedding": model.embed(text)}


@expose
def generate(prompt: str, max_tokens: int = 50, temperature: float = 0.7,
             stop: Optional[List[str]] = None) -> dict:
    return {"prompt": prompt, "max_tokens": max_tokens,
            "temperature": temperature, "stop": stop}


@expose
def typed(a: int, b: float, c: str, d: bool, e: list, f: dict,
          g: List[int], h: Dict[str, int], i: Optional[int], j: Any, k,
          *, kw_only: int = 1):
    return [a, b, c, d, e, f, g, h, i, j, k, kw_only]


@expose
async def slow_double(x: int, delay: float = 0.01) -> int:
    """Doubles x after a pause (an async function)."""
    await asyncio.sleep(delay)
    return 2 * x


@expose
def fail(message: str):
    raise ValueError(message)


@expose
def echo(value):
    return value


@expose
def not_json(kind: str):
    if kind == "object":
        return object()
    if kind == "bigint":
        return 1 << 64
    if kind == "nan":
        return float("nan")
    return {1, 2}


@expose
def rendezvous(i: int) -> int:
    """Returns only once four calls are inside it at the same time."""
    _barrier.wait(timeout=60)
    return i


@expose
def scaled(xs: list, k: int = 2) -> list:
    return scale(xs, k)


@expose
def model_info() -> dict:
    return {"loads": model.loads, "calls": CALLS["n"],
            "models": list_configured_models()}
'''

SCHEMA = {
    "functions": ["get_embedding", "generate", "typed", "slow_double",
                  "fail", "echo", "not_json", "rendezvous", "scaled",
                  "model_info"],
    "schemas": {
        "get_embedding": {
            "description": "Embed text with the model.\n\n"
                           "Returns a dict with the vector.",
            "inputSchema": {"type": "object",
                            "properties": {"text": {"type": "string"}},
                            "required": ["text"]}},
        "generate": {
            "description": "Call generate()",
            "inputSchema": {"type": "object", "properties": {
                "prompt": {"type": "string"},
                "max_tokens": {"type": "integer"},
                "temperature": {"type": "number"},
                "stop": {"type": "string"}},
                "required": ["prompt"]}},
        "typed": {
            "description": "Call typed()",
            "inputSchema": {"type": "object", "properties": {
                "a": {"type": "integer"}, "b": {"type": "number"},
                "c": {"type": "string"}, "d": {"type": "boolean"},
                "e": {"type": "array"}, "f": {"type": "object"},
                "g": {"type": "array"}, "h": {"type": "object"},
                "i": {"type": "string"}, "j": {"type": "string"},
                "k": {"type": "string"}, "kw_only": {"type": "integer"}},
                "required": ["a", "b", "c", "d", "e", "f", "g", "h", "i",
                             "j", "k"]}},
        "slow_double": {
            "description": "Doubles x after a pause (an async function).",
            "inputSchema": {"type": "object", "properties": {
                "x": {"type": "integer"}, "delay": {"type": "number"}},
                "required": ["x"]}},
        "fail": {
            "description": "Call fail()",
            "inputSchema": {"type": "object", "properties": {
                "message": {"type": "string"}}, "required": ["message"]}},
        "echo": {
            "description": "Call echo()",
            "inputSchema": {"type": "object", "properties": {
                "value": {"type": "string"}}, "required": ["value"]}},
        "not_json": {
            "description": "Call not_json()",
            "inputSchema": {"type": "object", "properties": {
                "kind": {"type": "string"}}, "required": ["kind"]}},
        "rendezvous": {
            "description": "Returns only once four calls are inside it at "
                           "the same time.",
            "inputSchema": {"type": "object", "properties": {
                "i": {"type": "integer"}}, "required": ["i"]}},
        "scaled": {
            "description": "Call scaled()",
            "inputSchema": {"type": "object", "properties": {
                "xs": {"type": "array"}, "k": {"type": "integer"}},
                "required": ["xs"]}},
        "model_info": {
            "description": "Call model_info()",
            "inputSchema": {"type": "object", "properties": {},
                            "required": []}},
    },
}


@pytest.fixture(scope="module")
def srv():
    with SbxServer() as s:
        yield s


def new_sandbox(srv):
    status, _, body = srv.post("/v1/sandboxes", {})
    assert status == 201, body
    return body["id"]


def put_file(srv, sid, path, text):
    status, _, body = srv.request("PUT", "/v1/sandboxes/%s/files?path=%s"
                                  % (sid, path), text.encode())
    assert status == 201, body


@pytest.fixture(scope="module")
def tools(srv):
    """(sandbox id, rpc path) of the main interface, loaded from source
    with a helper module beside it in /work."""
    sid = new_sandbox(srv)
    put_file(srv, sid, "/work/helper.py", HELPER)
    status, _, body = srv.post("/v1/sandboxes/%s/rpc" % sid,
                               {"name": "tools", "source": INTERFACE})
    assert status == 200, body
    assert body["name"] == "tools"
    assert body["functions"] == SCHEMA["functions"]
    yield sid, "/v1/sandboxes/%s/rpc/tools" % sid
    srv.request("DELETE", "/v1/sandboxes/%s" % sid)


def call(srv, path, fn, *args, **kwargs):
    status, _, body = srv.post(path, {"fn": fn, "args": list(args),
                                      "kwargs": kwargs})
    assert status == 200, body
    return body


def test_schema_is_seers_shape(srv, tools):
    sid, path = tools
    status, headers, body = srv.request("GET", path)
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert body == SCHEMA


def test_calls_return_results_with_their_types(srv, tools):
    _, path = tools
    assert call(srv, path, "get_embedding", text="abcd") == {
        "ok": True, "result": {"embedding": [2.0, -4.0, 8.0]}}
    assert call(srv, path, "generate", "hi")["result"] == {
        "prompt": "hi", "max_tokens": 50, "temperature": 0.7, "stop": None}
    assert call(srv, path, "generate", prompt="x", max_tokens=3,
                stop=["\n"])["result"]["max_tokens"] == 3
    assert call(srv, path, "slow_double", 21) == {"ok": True, "result": 42}
    assert call(srv, path, "scaled", [1, 2, 3], k=3)["result"] == [3, 6, 9]
    r = call(srv, path, "typed", 1, 2.5, "s", True, [1], {"a": 1}, [2],
             {"b": 3}, None, {"any": [1]}, "k", kw_only=7)
    assert r["result"] == [1, 2.5, "s", True, [1], {"a": 1}, [2],
                           {"b": 3}, None, {"any": [1]}, "k", 7]


def test_numbers_keep_type_and_full_64_bit_range(srv, tools):
    _, path = tools
    for v in [2**63 - 1, -2**63, 0, 1, -1, 2**53 + 1]:
        r = call(srv, path, "echo", v)
        assert r == {"ok": True, "result": v}
        assert type(r["result"]) is int
    for v in [1.0, 0.1, -2.5e-300, 1.7976931348623157e308]:
        r = call(srv, path, "echo", v)
        assert r["result"] == v and type(r["result"]) is float
    nested = {"a": [2**63 - 1, {"b": -2**63}], "s": "\u00e9\u4e2d\U0001f600"}
    assert call(srv, path, "echo", nested)["result"] == nested


def test_an_integer_past_64_bits_in_the_body_is_a_clear_400(srv, tools):
    _, path = tools
    status, _, body = srv.post(path, b'{"fn": "echo", "args": [%d]}'
                               % (2**64))
    assert status == 400
    assert body["ok"] is False and "64-bit" in body["error"]


def test_a_raising_function_answers_200_with_its_traceback(srv, tools):
    _, path = tools
    r = call(srv, path, "fail", "boom")
    assert r["ok"] is False
    assert r["error"] == "boom"
    assert "ValueError: boom" in r["traceback"]
    assert "raise ValueError(message)" in r["traceback"]


def test_unknown_function_and_bad_arguments_use_pythons_texts(srv, tools):
    _, path = tools
    r = call(srv, path, "nope")
    assert r["ok"] is False and r["error"] == "Function 'nope' not found"
    assert "ValueError" in r["traceback"]
    # Calls are not checked against the schema: Python's TypeError text.
    r = call(srv, path, "get_embedding", txt="x")
    assert r["ok"] is False
    assert "got an unexpected keyword argument 'txt'" in r["error"]
    r = call(srv, path, "get_embedding")
    assert "missing 1 required positional argument: 'text'" in r["error"]


@pytest.mark.parametrize("kind", ["object", "bigint", "nan", "set"])
def test_a_result_that_is_not_json_says_so(srv, tools, kind):
    _, path = tools
    r = call(srv, path, "not_json", kind)
    assert r["ok"] is False
    assert r["code"] == "not_json"
    assert "not JSON" in r["error"]
    # The interface serves on.
    assert call(srv, path, "echo", 1)["result"] == 1


@pytest.mark.parametrize("body,words", [
    (b"{not json", "not JSON"),
    (b"", "empty"),
    (b"[1, 2]", "must be a JSON object"),
    (b'"fn"', "must be a JSON object"),
    (b'{"args": []}', "no 'fn'"),
    (b'{"fn": 3}', "'fn' must be a string"),
    (b'{"fn": "echo", "args": {"a": 1}}', "'args' must be a list"),
    (b'{"fn": "echo", "kwargs": [1]}', "'kwargs' must be an object"),
    (b'{"fn": "echo", "timeout_s": -1}', "timeout_s"),
])
def test_malformed_requests_answer_400_json(srv, tools, body, words):
    _, path = tools
    status, headers, reply = srv.post(path, body)
    assert status == 400
    assert headers["Content-Type"].startswith("application/json")
    assert reply["ok"] is False and words in reply["error"]


def test_unknown_interface_and_sandbox_are_404_json(srv, tools):
    sid, _ = tools
    status, _, body = srv.post("/v1/sandboxes/%s/rpc/other" % sid,
                               {"fn": "x"})
    assert status == 404 and body["ok"] is False
    assert "other" in body["error"]
    status, _, body = srv.request("GET", "/v1/sandboxes/%s/rpc/other" % sid)
    assert status == 404 and body["error"]["code"] == "not_found"
    status, _, body = srv.post("/v1/sandboxes/sb-nope/rpc/tools",
                               {"fn": "x"})
    assert status == 404 and body["ok"] is False
    assert "sb-nope" in body["error"]


def test_64_concurrent_calls_run_at_once(srv, tools):
    _, path = tools
    # rendezvous() returns only when four calls are inside it together,
    # so 64 of them finish only if at least four run at once.
    with concurrent.futures.ThreadPoolExecutor(64) as ex:
        got = list(ex.map(lambda i: call(srv, path, "rendezvous", i),
                          range(64)))
    assert [r["result"] for r in got] == list(range(64))
    with concurrent.futures.ThreadPoolExecutor(64) as ex:
        got = list(ex.map(lambda i: call(srv, path, "slow_double", i,
                                         delay=0.2), range(64)))
    assert [r["result"] for r in got] == [2 * i for i in range(64)]


def test_module_level_code_ran_once(srv, tools):
    _, path = tools
    before = call(srv, path, "model_info")["result"]
    call(srv, path, "get_embedding", "x")
    after = call(srv, path, "model_info")["result"]
    assert before["loads"] == after["loads"] == 1
    assert after["calls"] == before["calls"] + 1


def test_listing_and_several_interfaces(srv, tools):
    sid, _ = tools
    status, _, body = srv.post("/v1/sandboxes/%s/rpc" % sid, {
        "name": "second", "source": "@expose\ndef hello(): return 'hi'\n"})
    assert status == 200, body
    assert call(srv, "/v1/sandboxes/%s/rpc/second" % sid,
                "hello")["result"] == "hi"
    status, _, body = srv.request("GET", "/v1/sandboxes/%s/rpc" % sid)
    names = {i["name"]: i for i in body["interfaces"]}
    assert names["tools"]["state"] == "ready"
    assert names["second"]["functions"] == ["hello"]
    status, _, _ = srv.request("DELETE", "/v1/sandboxes/%s/rpc/second"
                               % sid)
    assert status == 200
    status, _, _ = srv.request("GET", "/v1/sandboxes/%s/rpc/second" % sid)
    assert status == 404


def test_load_from_a_path_with_a_helper_beside_it(srv):
    sid = new_sandbox(srv)
    put_file(srv, sid, "/work/pkg/helper.py", HELPER)
    put_file(srv, sid, "/work/pkg/iface.py",
             "from helper import scale\n\n@expose\n"
             "def twice(xs: list) -> list:\n    return scale(xs, 2)\n")
    status, _, body = srv.post("/v1/sandboxes/%s/rpc" % sid,
                               {"name": "p", "path": "/work/pkg/iface.py"})
    assert status == 200, body
    assert call(srv, "/v1/sandboxes/%s/rpc/p" % sid, "twice",
                [1, 2])["result"] == [2, 4]
    srv.request("DELETE", "/v1/sandboxes/%s" % sid)


@pytest.mark.parametrize("source,words", [
    ("raise RuntimeError('no model here')\n@expose\ndef f(): pass\n",
     "no model here"),
    ("def f(:\n", "SyntaxError"),
    ("x = 1\n", "No functions exposed"),
    ("import not_a_module_anywhere\n", "not_a_module_anywhere"),
    ("@expose\ndef f(): pass\nimport os\nos._exit(4)\n", "status 4"),
])
def test_load_errors_are_422_with_the_traceback(srv, source, words):
    sid = new_sandbox(srv)
    status, _, body = srv.post("/v1/sandboxes/%s/rpc" % sid,
                               {"name": "bad", "source": source})
    assert status == 422, body
    assert body["error"]["code"] == "load_failed"
    assert words in body["error"]["message"] + body["error"]["traceback"]
    status, _, _ = srv.request("GET", "/v1/sandboxes/%s/rpc/bad" % sid)
    assert status == 404
    srv.request("DELETE", "/v1/sandboxes/%s" % sid)


@pytest.mark.parametrize("body,words", [
    ({"name": "x"}, "source"),
    ({"name": "x", "source": "", "path": "/a"}, "one of"),
    ({"name": "../x", "source": "pass"}, "'name'"),
    ({"name": "x", "source": "pass", "workers": 0}, "workers"),
    ({"name": "x", "source": "pass", "colour": 1}, "unknown field"),
])
def test_bad_loads_are_422(srv, tools, body, words):
    sid, _ = tools
    status, _, reply = srv.post("/v1/sandboxes/%s/rpc" % sid, body)
    assert status == 422 and words in reply["error"]["message"]


CRASHY = '''
import os
import time
STATE = {"n": 0}

@expose
def bump() -> int:
    STATE["n"] += 1
    return STATE["n"]

@expose
def crash():
    os._exit(3)

@expose
def hang(seconds: float = 3600):
    time.sleep(seconds)

@expose
async def ahang():
    import asyncio
    await asyncio.sleep(3600)
'''


def test_a_crash_is_reported_and_the_interface_restarted(srv):
    sid = new_sandbox(srv)
    path = "/v1/sandboxes/%s/rpc/c" % sid
    status, _, body = srv.post("/v1/sandboxes/%s/rpc" % sid,
                               {"name": "c", "source": CRASHY})
    assert status == 200, body
    assert call(srv, path, "bump")["result"] == 1
    r = call(srv, path, "crash")
    assert r["ok"] is False and r["code"] == "crashed"
    assert r["restarted"] is True
    assert "status 3" in r["error"] and "restarted" in r["error"]
    # A fresh process: the module ran again, its state is new.
    assert call(srv, path, "bump")["result"] == 1
    status, _, body = srv.request("GET", "/v1/sandboxes/%s/rpc" % sid)
    assert body["interfaces"][0]["restarts"] == 1
    srv.request("DELETE", "/v1/sandboxes/%s" % sid)


def test_a_call_past_its_timeout_gets_a_timeout_answer(srv):
    sid = new_sandbox(srv)
    path = "/v1/sandboxes/%s/rpc/c" % sid
    status, _, body = srv.post("/v1/sandboxes/%s/rpc" % sid,
                               {"name": "c", "source": CRASHY,
                                "workers": 2})
    assert status == 200, body
    r = srv.post(path, {"fn": "ahang", "timeout_s": 0.5})[2]
    assert r["ok"] is False and r["code"] == "timeout"
    assert "ahang" in r["error"]
    r = srv.post(path, {"fn": "hang", "timeout_s": 0.5})[2]
    assert r["code"] == "timeout"
    # One worker of two is held; the other still serves.
    assert call(srv, path, "bump")["result"] == 1
    # With both held, the interface starts afresh and serves again.
    r = srv.post(path, {"fn": "hang", "timeout_s": 0.5})[2]
    assert r["code"] == "timeout"
    assert call(srv, path, "bump")["result"] == 1
    srv.request("DELETE", "/v1/sandboxes/%s" % sid)


def test_a_hung_interface_blocks_neither_server_nor_other_sandboxes(
        srv, tools):
    sid = new_sandbox(srv)
    path = "/v1/sandboxes/%s/rpc/c" % sid
    assert srv.post("/v1/sandboxes/%s/rpc" % sid,
                    {"name": "c", "source": CRASHY})[0] == 200
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        hung = [ex.submit(srv.post, path, {"fn": "hang", "timeout_s": 30})
                for _ in range(8)]
        # Meanwhile: the server, and another sandbox's interface.
        assert srv.request("GET", "/v1/ping")[0] == 200
        assert call(srv, tools[1], "echo", "still here")["result"] == \
            "still here"
        srv.request("DELETE", "/v1/sandboxes/%s" % sid)
        for f in hung:
            status, _, body = f.result()
            assert body["ok"] is False and body["code"] == "gone"


def test_a_hostile_interface_cannot_reach_the_host(srv, tools):
    sid = new_sandbox(srv)
    source = '''
import socket

@expose
def reach(port: int) -> str:
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect(("127.0.0.1", port))
    except OSError as e:
        return "refused: %s" % e
    return "connected"

@expose
def read(path: str) -> str:
    with open(path) as f:
        return f.read()
'''
    assert srv.post("/v1/sandboxes/%s/rpc" % sid,
                    {"name": "h", "source": source})[0] == 200
    path = "/v1/sandboxes/%s/rpc/h" % sid
    # The server listens on the host's loopback; the sandbox has its own.
    r = call(srv, path, "reach", srv.port)
    assert r["result"].startswith("refused"), r
    r = call(srv, path, "read", "/etc/shadow")
    assert r["ok"] is False
    srv.request("DELETE", "/v1/sandboxes/%s" % sid)


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generated_client_imported_and_used_on_the_host(srv, tools,
                                                        tmp_path):
    sid, path = tools
    status, headers, text = srv.request("GET", path + "/client.py")
    assert status == 200
    assert headers["Content-Type"].startswith("text/x-python")
    f = tmp_path / "model_tools.py"
    f.write_text(text)
    mod = load_module(str(f), "model_tools")
    assert mod.RPC_URL == srv.url + path
    assert mod.get_embedding(text="abcd") == {"embedding": [2.0, -4.0, 8.0]}
    assert mod.get_embedding("ab") == {"embedding": [1.0, -2.0, 4.0]}
    assert mod.generate("p")["max_tokens"] == 50
    assert mod.slow_double(x=4) == 8
    assert mod.echo(2**63 - 1) == 2**63 - 1
    assert mod.get_embedding.__doc__.startswith("Embed text with the model.")
    import inspect
    sig = inspect.signature(mod.generate)
    assert list(sig.parameters) == ["prompt", "max_tokens", "temperature",
                                    "stop"]
    assert sig.parameters["max_tokens"].default == 50
    assert sig.parameters["temperature"].default == 0.7
    assert "kw_only" in inspect.signature(mod.typed).parameters
    with pytest.raises(RuntimeError) as e:
        mod.fail(message="kaput")
    assert "kaput" in str(e.value) and "Remote traceback" in str(e.value)


def test_prompt_and_mcp_config(srv, tools):
    sid, path = tools
    status, headers, text = srv.request("GET", path + "/prompt.md")
    assert status == 200 and headers["Content-Type"].startswith(
        "text/markdown")
    assert text.startswith("# tools Interface")
    assert srv.url + path in text
    assert "### `get_embedding(text: str)`" in text
    assert "Embed text with the model." in text
    status, _, cfg = srv.request("GET", path + "/mcp.json")
    server = cfg["mcpServers"]["tools"]
    assert server["type"] == "stdio"
    assert os.path.basename(server["command"]) == "sbx"
    assert server["args"] == ["mcp", "--url", srv.url, "--sandbox", sid,
                              "--interface", "tools"]
    status, _, text = srv.request(
        "GET", path + "/client.py?base_url=http://example.test:9/t/x/")
    assert 'RPC_URL = "http://example.test:9/t/x/v1/sandboxes/%s/rpc/tools"'\
        % sid in text


HOSTILE_NAMES = '''
@expose
def ok(x: "int):\\n    import os; os.system('touch MARKER')\\ndef y(" = 1):
    """Docstring \\"\\"\\" + __import__('os').system('touch MARKER') + \\"\\"\\" """
    return x

def make():
    def f(a=None):
        return a
    f.__name__ = "bad name(); import os; os.system('touch MARKER'); x"
    return f

expose(make())
'''


def test_generated_client_never_runs_the_sandboxs_text(srv, tmp_path):
    sid = new_sandbox(srv)
    marker = tmp_path / "pwned"
    source = HOSTILE_NAMES.replace("MARKER", str(marker))
    status, _, body = srv.post("/v1/sandboxes/%s/rpc" % sid,
                               {"name": "evil", "source": source})
    assert status == 200, body
    status, _, text = srv.request(
        "GET", "/v1/sandboxes/%s/rpc/evil/client.py" % sid)
    f = tmp_path / "evil_client.py"
    f.write_text(text)
    mod = load_module(str(f), "evil_client")
    import inspect
    mod.ok.__doc__  # noqa: B018 - reading it must run nothing
    inspect.signature(mod.ok)
    assert not marker.exists()
    assert mod.ok(x=5) == 5
    assert not hasattr(mod, "bad")
    srv.request("DELETE", "/v1/sandboxes/%s" % sid)


def seer_style_call(url, fn, **kwargs):
    """What Seer's generated client does: POST {"fn", "kwargs"} as JSON,
    no token, fail on an HTTP error, raise on ok: false."""
    req = urllib.request.Request(
        url, data=json.dumps({"fn": fn, "kwargs": kwargs}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=600) as resp:
        data = json.loads(resp.read())
    if not data.get("ok"):
        msg = data.get("error", "Unknown error")
        if data.get("traceback"):
            msg += "\n\nRemote traceback:\n" + data["traceback"]
        raise RuntimeError(msg)
    return data["result"]


def test_seer_style_client_works_unchanged(srv, tools):
    _, path = tools
    url = srv.url + path
    assert seer_style_call(url, "get_embedding", text="abcd") == {
        "embedding": [2.0, -4.0, 8.0]}
    with pytest.raises(RuntimeError, match="Function 'missing' not found"):
        seer_style_call(url, "missing")
    # Seer's MCP proxy GETs the same URL for the schemas.
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert json.loads(resp.read())["schemas"]["fail"] == \
            SCHEMA["schemas"]["fail"]


def test_seer_style_client_through_the_token_path_prefix():
    token = "rpc-test-token-0123456789"
    with SbxServer(token=token) as s:
        sid = new_sandbox(s)
        assert s.post("/v1/sandboxes/%s/rpc" % sid, {
            "name": "t", "source": "@expose\ndef hi(name: str) -> str:\n"
            "    return 'hi ' + name\n"})[0] == 200
        path = "/v1/sandboxes/%s/rpc/t" % sid
        with pytest.raises(urllib.error.HTTPError) as e:
            seer_style_call(s.url + path, "hi", name="x")
        assert e.value.code == 401
        assert seer_style_call(s.url + "/t/" + token + path, "hi",
                               name="seer") == "hi seer"


def client_module():
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                    "clients", "python"))
    import sbx
    return sbx


def test_python_client_sync(srv, tmp_path):
    sbx = client_module()
    client = sbx.Client(srv.url)
    with client.create_sandbox() as sb:
        sb.files.write("/work/helper.py", HELPER)
        loaded = sb.rpc_load("tools", INTERFACE)
        assert loaded["functions"] == SCHEMA["functions"]
        assert sb.rpc_schema("tools") == SCHEMA
        assert sb.rpc_call("tools", "get_embedding", kwargs={
            "text": "abcd"}) == {"embedding": [2.0, -4.0, 8.0]}
        assert sb.rpc_call("tools", "echo", [2**63 - 1]) == 2**63 - 1
        with pytest.raises(sbx.RpcError) as e:
            sb.rpc_call("tools", "fail", ["bad"])
        assert e.value.code == "exception" and e.value.message == "bad"
        assert "ValueError: bad" in e.value.traceback
        with pytest.raises(sbx.RpcError) as e:
            sb.rpc_call("tools", "nope")
        assert e.value.code == "not_found"
        with pytest.raises(sbx.NotFound):
            sb.rpc_call("other", "x")
        with pytest.raises(sbx.Unprocessable) as e:
            sb.rpc_load("broken", "raise KeyError('k')\n")
        assert "KeyError" in e.value.body["error"]["traceback"]
        assert [i["name"] for i in sb.rpc_interfaces()] == ["tools"]
        code = sb.rpc_client_code("tools")
        (tmp_path / "tools_client.py").write_text(code)
        mod = load_module(str(tmp_path / "tools_client.py"), "tools_client")
        assert mod.scaled([1], k=5) == [5]
        assert sb.rpc_prompt("tools").startswith("# tools Interface")
        assert sb.rpc_mcp_config("tools")["mcpServers"]["tools"]["args"][
            2] == srv.url
        sb.rpc_unload("tools")
        assert sb.rpc_interfaces() == []


def test_python_client_async(srv):
    sbx = client_module()
    import asyncio

    async def main():
        async with sbx.AsyncClient(srv.url) as client:
            sb = await client.create_sandbox()
            try:
                await sb.rpc_load("a", "@expose\nasync def inc(x: int)"
                                  " -> int:\n    return x + 1\n")
                got = await asyncio.gather(*[
                    sb.rpc_call("a", "inc", [i]) for i in range(16)])
                assert got == [i + 1 for i in range(16)]
                assert (await sb.rpc_schema("a"))["functions"] == ["inc"]
                assert "def inc(x: int) -> int:" in \
                    await sb.rpc_client_code("a")
            finally:
                await sb.delete()
    asyncio.run(main())

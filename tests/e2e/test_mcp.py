"""`sbx mcp`: a stdio MCP server for an interface, driven through a whole
scripted MCP session (initialize, tools/list, tools/call, errors) as an
MCP client would."""
import json
import os
import subprocess

import pytest

from sbxserver import SBX, SbxServer

INTERFACE = '''
@expose
def add(a: int, b: int = 2) -> int:
    """Adds two integers."""
    return a + b

@expose
def describe(name: str) -> dict:
    return {"name": name, "length": len(name)}

@expose
def greet(name: str) -> str:
    return "hello " + name

@expose
def fail(msg: str):
    raise RuntimeError(msg)
'''


class McpSession:
    def __init__(self, args, env=None):
        self.proc = subprocess.Popen(
            [SBX, "mcp"] + args, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=dict(os.environ, **(env or {})))
        self.next_id = 1

    def send(self, msg):
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        self.proc.stdin.flush()

    def request(self, method, params=None):
        rid = self.next_id
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)
        return self.read(rid)

    def read(self, rid):
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read().decode()
        reply = json.loads(line)
        assert reply["jsonrpc"] == "2.0" and reply["id"] == rid
        return reply

    def close(self):
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0


@pytest.fixture(scope="module")
def served():
    token = "mcp-test-token-0123456789"
    with SbxServer(token=token) as srv:
        status, _, sb = srv.post("/v1/sandboxes", {})
        assert status == 201
        status, _, body = srv.post("/v1/sandboxes/%s/rpc" % sb["id"],
                                   {"name": "tools", "source": INTERFACE})
        assert status == 200, body
        yield srv, sb["id"], token


def test_a_full_mcp_session(served):
    srv, sid, token = served
    s = McpSession(["--url", srv.url, "--sandbox", sid,
                    "--interface", "tools"], env={"SBX_TOKEN": token})
    r = s.request("initialize", {
        "protocolVersion": "2024-11-05", "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"}})
    assert r["result"]["protocolVersion"] == "2024-11-05"
    assert "tools" in r["result"]["capabilities"]
    assert r["result"]["serverInfo"]["name"] == "tools"
    s.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert s.request("ping")["result"] == {}
    tools = s.request("tools/list")["result"]["tools"]
    assert [t["name"] for t in tools] == ["add", "describe", "greet", "fail"]
    assert tools[0] == {
        "name": "add", "description": "Adds two integers.",
        "inputSchema": {"type": "object", "properties": {
            "a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a"]}}
    r = s.request("tools/call", {"name": "add", "arguments": {"a": 40}})
    assert r["result"] == {"content": [{"type": "text", "text": "42"}],
                           "isError": False}
    r = s.request("tools/call", {"name": "describe",
                                 "arguments": {"name": "abc"}})
    assert json.loads(r["result"]["content"][0]["text"]) == {
        "name": "abc", "length": 3}
    r = s.request("tools/call", {"name": "greet",
                                 "arguments": {"name": "mcp"}})
    assert r["result"]["content"][0]["text"] == "hello mcp"
    r = s.request("tools/call", {"name": "fail", "arguments": {"msg": "no"}})
    assert r["result"]["isError"] is True
    text = r["result"]["content"][0]["text"]
    assert text.startswith("no") and "RuntimeError: no" in text
    r = s.request("tools/call", {"name": "missing", "arguments": {}})
    assert r["result"]["isError"] is True
    assert "Function 'missing' not found" in \
        r["result"]["content"][0]["text"]
    r = s.request("tools/call", {"name": "add", "arguments": [1]})
    assert r["error"]["code"] == -32602
    r = s.request("resources/list")
    assert r["error"]["code"] == -32601
    s.proc.stdin.write(b"{not json\n")
    s.proc.stdin.flush()
    r = json.loads(s.proc.stdout.readline())
    assert r["error"]["code"] == -32700 and r["id"] is None
    s.close()


def test_the_mcp_json_config_starts_a_working_server(served):
    srv, sid, token = served
    status, _, cfg = srv.request(
        "GET", "/v1/sandboxes/%s/rpc/tools/mcp.json" % sid)
    assert status == 200
    server = cfg["mcpServers"]["tools"]
    proc = subprocess.run(
        [server["command"]] + server["args"],
        input=(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                           "params": {"name": "add",
                                      "arguments": {"a": 1, "b": 1}}})
               + "\n").encode(),
        capture_output=True, timeout=60,
        env=dict(os.environ, SBX_TOKEN=token))
    assert proc.returncode == 0, proc.stderr
    reply = json.loads(proc.stdout)
    assert reply["result"]["content"][0]["text"] == "2"


def test_a_wrong_token_or_sandbox_is_a_tool_error_not_a_crash(served):
    srv, sid, token = served
    s = McpSession(["--url", srv.url, "--sandbox", sid,
                    "--interface", "tools", "--token", "wrong"])
    r = s.request("tools/list")
    assert r["error"]["code"] == -32603 and "401" in r["error"]["message"]
    r = s.request("tools/call", {"name": "add", "arguments": {"a": 1}})
    assert r["result"]["isError"] is True
    s.close()
    s = McpSession(["--url", srv.url, "--sandbox", "sb-none",
                    "--interface", "tools"], env={"SBX_TOKEN": token})
    r = s.request("tools/call", {"name": "add", "arguments": {"a": 1}})
    assert r["result"]["isError"] is True
    assert "sb-none" in r["result"]["content"][0]["text"]
    s.close()


def test_usage_errors():
    p = subprocess.run([SBX, "mcp", "--url", "http://127.0.0.1:1"],
                       capture_output=True)
    assert p.returncode == 2 and b"usage: sbx mcp" in p.stderr

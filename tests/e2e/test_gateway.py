"""The model gateway end to end: `sbx serve --upstream ...` in front of the
mock upstream (mock_upstream.py, which answers like vLLM's OpenAI server).

Host routes under /llm/v1 (plain, streamed, the rLLM slug form), bad input
(slugs, JSON, sizes, models), upstream faults (down, slow, 5xx, dropped
connections), a client leaving mid-stream, 200 concurrent streams, the
upstream key (sent upstream, never seen in a sandbox or an answer),
sandboxes calling the gateway from Python and from the official OpenAI
node SDK, what a sandbox still cannot reach, budgets per sandbox and per
session, /v1/traces and /v1/run with llm.

Every wait is a poll with a hang guard; no test asserts how long anything
took.
"""
import base64
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

import mock_upstream as mu
from mock_upstream import MockUpstream
from sbxserver import SBX, SbxServer
from test_sandboxes import Boxes, as_json, poll, raw_request

GUARD_S = 60
KEY_VAR = "SBX_TEST_UPSTREAM_KEY"
LLM_PORT = 4000


def _has_gateway():
    try:
        out = subprocess.run([SBX, "serve", "--help"], capture_output=True,
                             text=True, timeout=30)
    except OSError:
        return False
    return "--upstream" in out.stdout + out.stderr


pytestmark = pytest.mark.skipif(not _has_gateway(),
                                reason="this sbx has no model gateway "
                                "(serve --help names no --upstream)")


# ---- helpers ----

def uid():
    return uuid.uuid4().hex


def slug(meta):
    """rLLM's metadata slug (rllm/sdk/proxy/metadata_slug.py)."""
    body = json.dumps(meta, separators=(",", ":"), sort_keys=True)
    return "rllm1:" + base64.urlsafe_b64encode(
        body.encode()).decode().rstrip("=")


def chat_body(prompt, **kw):
    body = {"model": "mock-model",
            "messages": [{"role": "user", "content": prompt}]}
    body.update(kw)
    return body


def chat_prompt(prompt):
    return mu.chat_prompt_text([{"role": "user", "content": prompt}])


def post(srv, path, body, headers=None, guard_s=GUARD_S):
    return raw_request(srv, "POST", path, body, headers=headers,
                       guard_s=guard_s)


def gw_error(status, headers, data, want_status, want_code):
    """Asserts a gateway error {"error": {"code", "message", ...}}."""
    body = as_json(status, headers, data)
    assert status == want_status, (status, body)
    err = body.get("error")
    assert isinstance(err, dict), body
    assert err.get("code") == want_code, body
    assert isinstance(err.get("message"), str) and err["message"], body
    return err


def sse_data(raw):
    """The data of each server-sent event in raw (bytes), in order."""
    out = []
    for block in re.split(r"\r?\n\r?\n", raw.decode("utf-8")):
        lines = [l[5:].lstrip(" ") if l.startswith("data:") else None
                 for l in block.splitlines()]
        lines = [l for l in lines if l is not None]
        if lines:
            out.append("\n".join(lines))
    return out


def stream_text(events, chat=True):
    text = ""
    for d in events:
        if d == "[DONE]":
            continue
        ev = json.loads(d)
        for ch in ev.get("choices") or []:
            text += (ch.get("delta", {}).get("content") or "") if chat \
                else (ch.get("text") or "")
    return text


def traces(srv, headers=None, **q):
    qs = "&".join("%s=%s" % (k, v) for k, v in q.items() if v is not None)
    status, h, data = raw_request(srv, "GET", "/v1/traces" +
                                  ("?" + qs if qs else ""), headers=headers)
    assert status == 200, (status, data[:500])
    return h, data


def traces_of(srv, **q):
    h, data = traces(srv, **q)
    body = as_json(200, h, data)
    assert set(body) == {"traces"}, body
    return body["traces"]


def one_trace(srv, **q):
    got = traces_of(srv, **q)
    assert len(got) == 1, got
    return got[0]


def upstream_posts(up, prompt_text=None):
    """POSTs the mock received (for one prompt's text, when given)."""
    out = []
    for r in up.completions():
        if prompt_text is None:
            out.append(r)
            continue
        j = r["json"] or {}
        if "messages" in j and mu.chat_prompt_text(j["messages"]) == \
                prompt_text:
            out.append(r)
        elif j.get("prompt") == prompt_text:
            out.append(r)
    return out


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class GatewayServer(SbxServer):
    """An SbxServer whose state directory goes when it stops."""

    def stop(self):
        try:
            super().stop()
        finally:
            shutil.rmtree(self.state_dir, ignore_errors=True)


def gateway_server(up, *extra, env=None, key="sk-test-" + uid(), ups=None):
    """An sbx serve in front of up (a MockUpstream) named "mock", whose key
    comes from KEY_VAR, with a state directory of its own (removed when
    the server stops)."""
    state = tempfile.mkdtemp(prefix="sbx-gw-state-")
    args = ["--state-dir", state]
    ups = ups or [("mock", up.base_url)]
    for name, url in ups:
        args += ["--upstream", "%s=%s" % (name, url)]
    if key:  # the first upstream's
        args += ["--upstream-key", "%s=%s" % (ups[0][0], KEY_VAR)]
    args += list(extra)
    srv = GatewayServer(extra_args=args,
                        env=dict(env or {}, **({KEY_VAR: key} if key else {})))
    srv.upstream_key = key
    srv.state_dir = state
    return srv


# ---- fixtures ----

@pytest.fixture(scope="module")
def key():
    return "sk-test-" + uid()


@pytest.fixture(scope="module")
def mock(key):
    with MockUpstream(models=["mock-model"], api_key=key) as up:
        up.key_for_tests = key
        yield up


@pytest.fixture
def up(mock):
    mock.configure(fault=None, fault_count=None, stream_mode="chunked")
    mock.clear()
    return mock


@pytest.fixture(scope="module")
def gw(mock, key):
    srv = gateway_server(mock, "--upstream-read-timeout", "3s",
                         "--upstream-connect-timeout", "3s",
                         "--upstream-retries", "2", "--max-body", "1M",
                         key=key)
    with srv:
        yield srv


@pytest.fixture
def boxes(gw):
    b = Boxes(gw)
    yield b
    b.cleanup()


# ---- host routes ----

def test_models_lists_each_upstream_model_and_its_prefixed_name(gw, up):
    status, h, data = raw_request(gw, "GET", "/llm/v1/models")
    body = as_json(status, h, data)
    assert status == 200, body
    assert body["object"] == "list", body
    ids = [m["id"] for m in body["data"]]
    assert "mock-model" in ids and "mock/mock-model" in ids, ids
    # the listing asked the upstream with the key
    got = up.requests("GET", "/v1/models")
    assert got and all(r["headers"].get("Authorization") ==
                       "Bearer " + gw.upstream_key for r in got), got


def check_trace_common(t, up_req, *, stream, sandbox=None):
    assert isinstance(t["id"], int) and t["id"] > 0, t
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z",
                        t["created_at"]), t
    assert t["sandbox"] == sandbox, t
    assert t["upstream"] == "mock", t
    assert t["model"] == "mock-model", t
    assert t["stream"] is stream, t
    assert t["status"] == 200, t
    assert t["error"] is None, t
    assert isinstance(t["latency_ms"], (int, float)) and \
        t["latency_ms"] >= 0, t
    # the request as sent upstream, token ids and logprobs asked for
    assert t["request"] == up_req["json"], (t["request"], up_req["json"])


def test_chat_plain_is_forwarded_and_traced(gw, up):
    prompt = "plain chat " + uid()
    status, h, data = post(gw, "/llm/v1/chat/completions",
                           chat_body(prompt, max_tokens=5))
    body = as_json(status, h, data)
    assert status == 200, body
    text = chat_prompt(prompt)
    pids, cids = mu.expected_ids(text, 5)
    assert body["choices"][0]["message"]["content"] == \
        mu.completion_text(text, 5), body
    sent = upstream_posts(up, text)
    assert len(sent) == 1, sent
    req = sent[0]
    assert req["path"] == "/v1/chat/completions", req
    assert req["headers"].get("Authorization") == \
        "Bearer " + gw.upstream_key, req["headers"]
    # asked for by default, as rLLM does
    assert req["json"]["return_token_ids"] is True, req["json"]
    assert req["json"]["logprobs"] is True, req["json"]
    t = [x for x in traces_of(gw, limit=10000)
         if x["request"] and x["request"].get("messages") ==
         [{"role": "user", "content": prompt}]]
    assert len(t) == 1, t
    t = t[0]
    check_trace_common(t, req, stream=False)
    assert t["session_uids"] == [] and t["session_name"] is None, t
    assert t["prompt_token_ids"] == pids, t
    assert t["completion_token_ids"] == cids, t
    assert t["logprobs"] == [e["logprob"] for e in
                             body["choices"][0]["logprobs"]["content"]], t
    assert t["usage"] == body["usage"], t
    assert t["response"] == body, t


def find_by_prompt(srv, prompt, chat=True):
    def match(x):
        r = x["request"] or {}
        if chat:
            return r.get("messages") == [{"role": "user", "content": prompt}]
        return r.get("prompt") == prompt
    return [x for x in traces_of(srv, limit=10000) if match(x)]


def test_completions_plain_is_forwarded_and_traced(gw, up):
    prompt = "plain completion " + uid()
    status, h, data = post(gw, "/llm/v1/completions",
                           {"model": "mock-model", "prompt": prompt,
                            "max_tokens": 4})
    body = as_json(status, h, data)
    assert status == 200, body
    pids, cids = mu.expected_ids(prompt, 4)
    assert body["choices"][0]["text"] == mu.completion_text(prompt, 4)
    req = upstream_posts(up, prompt)
    assert len(req) == 1, req
    assert req[0]["json"]["return_token_ids"] is True, req[0]["json"]
    assert req[0]["json"]["logprobs"] == 1, req[0]["json"]
    (t,) = find_by_prompt(gw, prompt, chat=False)
    check_trace_common(t, req[0], stream=False)
    assert t["prompt_token_ids"] == pids, t
    assert t["completion_token_ids"] == cids, t
    assert t["logprobs"] == body["choices"][0]["logprobs"][
        "token_logprobs"], t
    assert t["usage"] == body["usage"], t


def test_every_plain_answer_keeps_the_upstream_content_type(gw, up):
    """The OpenAI SDKs parse a body as JSON only when it says so."""
    bad = []
    for i in range(40):
        for path, body in (("/llm/v1/chat/completions",
                            chat_body("ctype %d" % i)),
                           ("/llm/v1/completions",
                            {"model": "mock-model", "prompt": "ct %d" % i})):
            status, h, data = post(gw, path, body)
            if status != 200 or not h.get("content-type", "").startswith(
                    "application/json"):
                bad.append((path, status, h))
    assert bad == [], "%d of 80 answers: %s" % (len(bad), bad[:3])
    for r in upstream_posts(up):
        assert r["outcome"] == "ok", r


def test_fields_the_client_set_are_kept(gw, up):
    prompt = "own fields " + uid()
    status, h, data = post(gw, "/llm/v1/chat/completions",
                           chat_body(prompt, logprobs=False,
                                     return_token_ids=False))
    assert status == 200, data[:300]
    (req,) = upstream_posts(up, chat_prompt(prompt))
    assert req["json"]["logprobs"] is False, req["json"]
    assert req["json"]["return_token_ids"] is False, req["json"]
    (t,) = find_by_prompt(gw, prompt)
    assert t["prompt_token_ids"] is None and \
        t["completion_token_ids"] is None, t
    assert t["logprobs"] is None, t


def test_upstream_prefix_routes_and_is_stripped(gw, up):
    prompt = "prefixed " + uid()
    status, h, data = post(gw, "/llm/v1/chat/completions",
                           chat_body(prompt, model="mock/mock-model"))
    assert status == 200, data[:300]
    (req,) = upstream_posts(up, chat_prompt(prompt))
    assert req["json"]["model"] == "mock-model", req["json"]
    (t,) = find_by_prompt(gw, prompt)
    assert t["upstream"] == "mock" and t["model"] == "mock-model", t


def read_stream(srv, path, body, guard_s=GUARD_S):
    status, h, data = post(srv, path, body, guard_s=guard_s)
    return status, h, data


@pytest.mark.parametrize("mode", ["chunked", "close"])
def test_chat_streamed_passes_events_and_assembles_the_trace(gw, up, mode):
    up.configure(stream_mode=mode)
    prompt = "streamed chat " + uid()
    status, h, data = read_stream(gw, "/llm/v1/chat/completions",
                                  chat_body(prompt, stream=True,
                                            stream_options={
                                                "include_usage": True}))
    assert status == 200, data[:300]
    assert h.get("content-type", "").startswith("text/event-stream"), h
    events = sse_data(data)
    assert events[-1] == "[DONE]", events[-3:]
    text = chat_prompt(prompt)
    pids, cids = mu.expected_ids(text)
    assert stream_text(events) == mu.completion_text(text)
    # each of the mock's chunks passed through: a first role chunk, one
    # per token, one usage chunk
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) == 1 + len(cids) + 1, chunks
    assert chunks[0]["prompt_token_ids"] == pids, chunks[0]
    assert [c["choices"][0]["token_ids"][0] for c in chunks[1:-1]] == cids
    assert chunks[-1]["usage"]["completion_tokens"] == len(cids)
    (req,) = upstream_posts(up, text)
    # read at once after the last byte: committed before it was sent
    (t,) = find_by_prompt(gw, prompt)
    check_trace_common(t, req, stream=True)
    assert t["prompt_token_ids"] == pids, t
    assert t["completion_token_ids"] == cids, t
    assert t["logprobs"] == [mu.token_logprob(tok, i) for i, tok in
                             enumerate(mu.completion_tokens(text))], t
    assert t["usage"] == chunks[-1]["usage"], t
    assert t["response"]["object"] == "chat.completion", t["response"]
    assert t["response"]["choices"][0]["message"]["content"] == \
        mu.completion_text(text), t["response"]


def test_completions_streamed_is_traced(gw, up):
    prompt = "streamed completion " + uid()
    status, h, data = read_stream(gw, "/llm/v1/completions",
                                  {"model": "mock-model", "prompt": prompt,
                                   "stream": True, "max_tokens": 3})
    assert status == 200, data[:300]
    events = sse_data(data)
    assert events[-1] == "[DONE]", events
    assert stream_text(events, chat=False) == mu.completion_text(prompt, 3)
    pids, cids = mu.expected_ids(prompt, 3)
    (t,) = find_by_prompt(gw, prompt, chat=False)
    assert t["stream"] is True and t["status"] == 200, t
    assert t["prompt_token_ids"] == pids, t
    assert t["completion_token_ids"] == cids, t
    assert len(t["logprobs"]) == 3, t
    assert t["response"]["choices"][0]["text"] == \
        mu.completion_text(prompt, 3), t


def test_slug_route_puts_the_session_in_the_trace(gw, up):
    u, name = uid(), "episode-" + uid()[:8]
    meta = {"session_uids": [u], "session_name": name, "step": 3}
    prompt = "slugged " + uid()
    status, h, data = post(gw, "/llm/meta/%s/v1/chat/completions"
                           % slug(meta), chat_body(prompt))
    assert status == 200, data[:300]
    t = one_trace(gw, session=u)
    assert t["session_uids"] == [u], t
    assert t["session_name"] == name, t
    assert t["metadata"].get("step") == 3, t
    assert t["request"]["messages"][0]["content"] == prompt, t
    # the session name finds it too
    assert [x["id"] for x in traces_of(gw, session=name)] == [t["id"]]
    # the slug is not forwarded as a path
    (req,) = upstream_posts(up, chat_prompt(prompt))
    assert req["path"] == "/v1/chat/completions", req
    # completions and models under the slug too
    status, h, data = post(gw, "/llm/meta/%s/v1/completions" % slug(meta),
                           {"model": "mock-model", "prompt": prompt})
    assert status == 200, data[:300]
    status, h, data = raw_request(gw, "GET", "/llm/meta/%s/v1/models"
                                  % slug(meta))
    assert status == 200, data[:300]
    assert len(traces_of(gw, session=u)) == 2


def b64(raw):
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


BAD_SLUGS = {
    "prefix": "rllm2:" + b64(b'{"session_uids":["x"]}'),
    "no_prefix": b64(b'{"session_uids":["x"]}'),
    "alphabet": "rllm1:eyJzZXNzaW9u*X25hbWUiOiJ4In0",
    "plus_slash": "rllm1:eyJzZXNzaW9u+X25hbWUiOiJ4In0/",
    "space": "rllm1:eyJzZXNz%20aW9u",
    "empty": "rllm1:",
    "not_json": "rllm1:" + b64(b"this is not json"),
    "json_array": "rllm1:" + b64(b'["session_uids"]'),
    "json_string": "rllm1:" + b64(b'"session"'),
    "bad_length": "rllm1:" + b64(b'{"a":1}') + "AAA",
}


@pytest.mark.parametrize("kind", sorted(BAD_SLUGS))
def test_bad_slug_is_400_and_nothing_goes_upstream(gw, up, kind):
    bad = BAD_SLUGS[kind]
    prompt = "bad slug " + uid()
    for path in ("/llm/meta/%s/v1/chat/completions" % bad,
                 "/llm/meta/%s/v1/completions" % bad):
        body = dict(chat_body(prompt), prompt=prompt)
        status, h, data = post(gw, path, body)
        err = gw_error(status, h, data, 400, "bad_slug")
        assert "slug" in err["message"].lower(), err
    assert upstream_posts(up) == [], upstream_posts(up)
    assert find_by_prompt(gw, prompt) == []


def test_unknown_model_of_the_default_upstream_passes_its_404(gw, up):
    status, h, data = post(gw, "/llm/v1/chat/completions",
                           chat_body("x", model="no-such-model"))
    body = as_json(status, h, data)
    assert status == 404, body
    # vLLM's own answer, unchanged
    assert body["error"]["message"] == \
        "The model `no-such-model` does not exist.", body


def test_routing_between_two_upstreams_and_no_default(key):
    with MockUpstream(models=["model-a"], api_key=key) as a, \
            MockUpstream(models=["model-b"]) as b:
        srv = gateway_server(a, key=key, ups=[("a", a.base_url),
                                              ("b", b.base_url)])
        with srv:
            prompt = "two upstreams " + uid()
            for model, target, other, sent_model in (
                    ("model-b", b, a, "model-b"),
                    ("a/model-a", a, b, "model-a"),
                    ("b/model-b", b, a, "model-b")):
                a.clear()
                b.clear()
                status, h, data = post(srv, "/llm/v1/chat/completions",
                                       chat_body(prompt, model=model))
                assert status == 200, (model, data[:300])
                (req,) = target.completions()
                assert req["json"]["model"] == sent_model, req
                assert other.completions() == [], model
                # a's key goes to a only
                auth = req["headers"].get("Authorization")
                assert auth == ("Bearer " + key if target is a else None), \
                    (model, auth)
            a.clear()
            b.clear()
            status, h, data = post(srv, "/llm/v1/chat/completions",
                                   chat_body(prompt, model="model-c"))
            gw_error(status, h, data, 404, "model_not_found")
            assert a.completions() == [] and b.completions() == []
            status, h, data = raw_request(srv, "GET", "/llm/v1/models")
            ids = [m["id"] for m in as_json(status, h, data)["data"]]
            assert {"model-a", "model-b", "a/model-a", "b/model-b"} <= \
                set(ids), ids
            status, h, data = raw_request(srv, "GET", "/v1/health")
            health = as_json(status, h, data)
            ups = {u["name"]: u for u in health["llm"]["upstreams"]}
            assert ups["a"]["key"] is True and ups["b"]["key"] is False, ups
            assert not ups["a"]["default"] and not ups["b"]["default"], ups
    

@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b'"text"',
                                 b'{"model": "mock-model", "messages": '])
def test_malformed_json_is_400_and_nothing_goes_upstream(gw, up, raw):
    for path in ("/llm/v1/chat/completions", "/llm/v1/completions"):
        status, h, data = post(gw, path, raw,
                               headers={"Content-Type": "application/json"})
        body = as_json(status, h, data)
        assert status == 400, body
        assert body["error"]["code"] in ("bad_json", "bad_request"), body
    assert upstream_posts(up) == []


def send_huge(srv, path, size):
    """POSTs a body of size bytes (JSON text) as far as the server takes
    it, then reads its answer: (status, headers, body)."""
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=GUARD_S)
    try:
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % (path.encode(), size))
        prefix = b'{"model": "mock-model", "prompt": "'
        sent = 0
        chunk = prefix + b"x" * (65536 - len(prefix))
        try:
            while sent < size:
                piece = chunk[:min(len(chunk), size - sent)]
                sock.sendall(piece)
                sent += len(piece)
                chunk = b"x" * 65536
        except (BrokenPipeError, ConnectionResetError):
            pass  # it stopped reading: its answer is waiting
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        return (resp.status, {k.lower(): v for k, v in resp.getheaders()},
                resp.read())
    finally:
        sock.close()


def test_huge_body_is_413(gw, up):
    for path in ("/llm/v1/chat/completions", "/llm/v1/completions"):
        status, h, data = send_huge(gw, path, 4 << 20)
        gw_error(status, h, data, 413, "payload_too_large")
    assert upstream_posts(up) == []


def test_unknown_gateway_path_is_404_json(gw, up):
    status, h, data = post(gw, "/llm/v1/embeddings", {"model": "mock-model"})
    body = as_json(status, h, data)
    assert status == 404, body
    assert upstream_posts(up) == []


# ---- upstream faults ----

def test_upstream_down_is_502(key):
    dead = "http://127.0.0.1:%d/v1" % free_port()
    srv = gateway_server(None, "--upstream-connect-timeout", "2s",
                         key=key, ups=[("mock", dead)])
    with srv:
        for body in (chat_body("down"), chat_body("down", stream=True)):
            status, h, data = post(srv, "/llm/v1/chat/completions", body,
                                   guard_s=30)
            gw_error(status, h, data, 502, "upstream_unavailable")
        (t, _) = traces_of(srv)
        assert t["status"] == 0 and t["error"], t


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_slower_than_read_timeout_is_504(gw, up, stream):
    prompt = "slow " + uid()
    status, h, data = post(gw, "/llm/v1/chat/completions",
                           chat_body(prompt, model="delay-20s",
                                     stream=stream))
    gw_error(status, h, data, 504, "upstream_timeout")
    (t,) = find_by_prompt(gw, prompt)
    assert t["error"] and "timeout" in t["error"], t
    # the upstream call was given up, not left running
    poll("the mock to see the gateway leave",
         lambda: all(r["outcome"] == "client_gone"
                     for r in upstream_posts(up, chat_prompt(prompt))))


def test_stream_stalled_after_first_bytes_ends_with_an_error_event(gw, up):
    prompt = "stall " + uid()
    status, h, data = post(gw, "/llm/v1/chat/completions",
                           chat_body(prompt, model="stall-20s", stream=True))
    assert status == 200, data[:300]
    events = sse_data(data)
    assert json.loads(events[0])["choices"][0]["delta"]["role"] == \
        "assistant", events
    errs = [json.loads(e) for e in events if e != "[DONE]" and
            "error" in json.loads(e)]
    assert errs, events
    (t,) = find_by_prompt(gw, prompt)
    assert t["error"] and "timeout" in t["error"], t
    # sent once: bytes had reached the client, so no retry
    assert len(upstream_posts(up, chat_prompt(prompt))) == 1


@pytest.mark.parametrize("fault", ["fail-500-once", "fail-503-once",
                                   "drop-before-once"])
def test_failure_before_any_byte_is_retried(gw, up, fault):
    for stream in (False, True):
        prompt = "retry %s %s %s" % (fault, stream, uid())
        status, h, data = post(gw, "/llm/v1/chat/completions",
                               chat_body(prompt, model=fault, stream=stream))
        assert status == 200, (fault, stream, data[:300])
        text = chat_prompt(prompt)
        got = data.decode()
        assert mu.completion_tokens(text)[1] in got, got[:300]
        sent = upstream_posts(up, text)
        assert len(sent) == 2, [r["outcome"] for r in sent]
        assert sent[1]["outcome"] == "ok", sent
        (t,) = find_by_prompt(gw, prompt)
        assert t["status"] == 200 and t["error"] is None, t


def test_persistent_500_passes_through_after_the_retries(gw, up):
    prompt = "always 500 " + uid()
    status, h, data = post(gw, "/llm/v1/chat/completions",
                           chat_body(prompt, model="fail-500"))
    body = as_json(status, h, data)
    assert status == 500, body
    assert body["error"]["message"] == "injected failure 500", body
    # --upstream-retries 2: three tries
    assert len(upstream_posts(up, chat_prompt(prompt))) == 3
    (t,) = find_by_prompt(gw, prompt)
    assert t["status"] == 500, t


def test_dropped_connection_is_502(gw, up):
    prompt = "dropped " + uid()
    status, h, data = post(gw, "/llm/v1/chat/completions",
                           chat_body(prompt, model="drop"))
    gw_error(status, h, data, 502, "upstream_unavailable")
    (t,) = find_by_prompt(gw, prompt)
    assert t["error"], t


def test_stream_dropped_midway_ends_with_an_error_event(gw, up):
    prompt = "dropped stream " + uid()
    status, h, data = post(gw, "/llm/v1/chat/completions",
                           chat_body(prompt, model="drop", stream=True))
    assert status == 200, data[:300]
    events = sse_data(data)
    assert any(e != "[DONE]" and "error" in json.loads(e) for e in events), \
        events
    (t,) = find_by_prompt(gw, prompt)
    assert t["error"], t
    assert len(upstream_posts(up, chat_prompt(prompt))) == 1


def test_client_leaving_mid_stream_cancels_the_call_and_the_trace_says_so(
        gw, up):
    prompt = "leaving " + uid()
    body = json.dumps(chat_body(prompt, model="slow-stream-200ms",
                                stream=True, max_tokens=100)).encode()
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=GUARD_S)
    conn.request("POST", "/llm/v1/chat/completions", body=body,
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    first = resp.read1(64)
    assert first.startswith(b"data:"), first
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    t = poll("the trace of the cut stream",
             lambda: find_by_prompt(gw, prompt), guard_s=GUARD_S)[0]
    assert t["error"] and "client disconnected" in t["error"], t
    assert t["stream"] is True, t
    poll("the upstream call to be cancelled",
         lambda: upstream_posts(up, chat_prompt(prompt))[0]["outcome"] ==
         "client_gone", guard_s=GUARD_S)


def test_200_concurrent_streams_all_complete_and_are_traced(gw, up):
    session = uid()
    n = 200

    def one(i):
        meta = {"session_uids": [session, "%s-%d" % (session, i)]}
        status, h, data = post(gw, "/llm/meta/%s/v1/chat/completions"
                               % slug(meta),
                               chat_body("concurrent %d %s" % (i, session),
                                         stream=True), guard_s=120)
        return status, data

    with ThreadPoolExecutor(n) as ex:
        results = list(ex.map(one, range(n)))
    for i, (status, data) in enumerate(results):
        assert status == 200, (i, data[:300])
        events = sse_data(data)
        assert events[-1] == "[DONE]", (i, events[-3:])
        text = chat_prompt("concurrent %d %s" % (i, session))
        assert stream_text(events) == mu.completion_text(text), i
    got = traces_of(gw, session=session)
    assert len(got) == n, len(got)
    assert all(t["error"] is None and t["status"] == 200 for t in got)
    assert sorted(t["session_uids"][1] for t in got) == \
        sorted("%s-%d" % (session, i) for i in range(n))


# ---- traces API ----

def test_traces_filters_ndjson_get_and_delete(gw, up):
    s1, s2 = uid(), uid()
    t0 = time.time()
    ids = {}
    for s, k in ((s1, 3), (s2, 2)):
        for i in range(k):
            status, h, data = post(gw, "/llm/meta/%s/v1/completions"
                                   % slug({"session_uids": [s]}),
                                   {"model": "mock-model",
                                    "prompt": "t %s %d" % (s, i)})
            assert status == 200, data[:300]
        ids[s] = [t["id"] for t in traces_of(gw, session=s)]
    assert len(ids[s1]) == 3 and len(ids[s2]) == 2, ids
    assert ids[s1] == sorted(ids[s1]), "oldest first"
    # after, limit
    assert [t["id"] for t in traces_of(gw, session=s1, after=ids[s1][0])] \
        == ids[s1][1:]
    assert [t["id"] for t in traces_of(gw, session=s1, limit=2)] == \
        ids[s1][:2]
    # since, as unix seconds and as ISO 8601
    assert traces_of(gw, session=s1, since=int(t0 + 3600)) == []
    assert len(traces_of(gw, session=s1, since=int(t0) - 1)) == 3
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 - 1))
    assert len(traces_of(gw, session=s1, since=iso)) == 3
    iso_late = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 + 3600))
    assert traces_of(gw, session=s1, since=iso_late) == []
    # "at or after": a trace's own created_at finds it
    for i, t in enumerate(traces_of(gw, session=s1)):
        got = [x["id"] for x in traces_of(gw, session=s1,
                                          since=t["created_at"])]
        assert got == ids[s1][i:], (t["created_at"], got, ids[s1])
    # host calls have no sandbox
    assert traces_of(gw, session=s1, sandbox="sb-nonexistent") == []
    # NDJSON
    h, data = traces(gw, headers={"Accept": "application/x-ndjson"},
                     session=s1)
    assert h.get("content-type", "").startswith("application/x-ndjson"), h
    lines = data.decode().splitlines()
    assert [json.loads(l)["id"] for l in lines] == ids[s1], lines
    # one by id
    status, h, data = raw_request(gw, "GET", "/v1/traces/%d" % ids[s2][0])
    t = as_json(status, h, data)
    assert status == 200 and t["id"] == ids[s2][0], t
    for key_name in ("id", "sandbox", "session_uids", "session_name",
                     "labels", "upstream", "model", "request", "response",
                     "prompt_token_ids", "completion_token_ids", "logprobs",
                     "usage", "latency_ms", "status", "error", "created_at"):
        assert key_name in t, (key_name, t)
    status, h, data = raw_request(gw, "GET", "/v1/traces/999999999")
    assert status == 404, data
    # delete by session: only that session's
    status, h, data = raw_request(gw, "DELETE", "/v1/traces?session=" + s1)
    assert status == 200 and as_json(status, h, data) == {"deleted": 3}, data
    assert traces_of(gw, session=s1) == []
    assert len(traces_of(gw, session=s2)) == 2
    status, h, data = raw_request(gw, "DELETE", "/v1/traces?session=" + s1)
    assert as_json(status, h, data) == {"deleted": 0}
    status, h, data = raw_request(gw, "DELETE", "/v1/traces")
    assert status == 400, data


# ---- the key ----

def test_health_shows_upstreams_without_the_key(gw):
    status, h, data = raw_request(gw, "GET", "/v1/health")
    health = as_json(status, h, data)
    llm = health["llm"]
    assert llm["upstreams"] == [{"name": "mock", "url": gw_mock_url(gw),
                                 "key": True, "default": True}], llm
    assert llm["port"] == LLM_PORT and llm["default_on"] is False, llm
    assert isinstance(llm["traces"], int), llm
    assert gw.upstream_key.encode() not in data


def gw_mock_url(srv):
    args = srv.extra_args
    for i, a in enumerate(args):
        if a == "--upstream" and args[i + 1].startswith("mock="):
            return args[i + 1][len("mock="):]
    return None


PY_CALL = r'''
import json, os, sys, urllib.request, urllib.error
a = json.loads(sys.argv[1])
base = a.get("base") or os.environ["OPENAI_BASE_URL"]
if a.get("slug"):
    base = base[:-len("/v1")] + "/meta/" + a["slug"] + "/v1"
data = json.dumps(a["body"]).encode() if "body" in a else None
req = urllib.request.Request(base + a.get("path", "/chat/completions"),
    data=data, method=a.get("method", "POST" if data else "GET"),
    headers=dict({"Content-Type": "application/json",
             "Authorization": "Bearer " + os.environ.get("OPENAI_API_KEY", "EMPTY")},
             **a.get("headers", {})))
out = {}
try:
    with urllib.request.urlopen(req, timeout=60) as r:
        out = {"status": r.status, "ctype": r.headers.get("Content-Type", ""),
               "body": r.read().decode()}
except urllib.error.HTTPError as e:
    out = {"status": e.code, "ctype": e.headers.get("Content-Type", ""),
           "body": e.read().decode()}
except urllib.error.URLError as e:
    r = e.reason
    out = {"oserror": getattr(r, "errno", None), "reason": str(r)}
print(json.dumps(out))
'''


def box_call(box, **a):
    """Runs PY_CALL in box; returns its JSON result."""
    if "probe_written" not in box.__dict__:
        status, h, data = box.put("llmcall.py", PY_CALL.encode())
        assert status in (200, 201), data
        box.probe_written = True
    res = box.exec(argv=["python3", "llmcall.py", json.dumps(a)],
                   timeout_s=90, guard_s=120)
    assert res["status"] == "ok", res
    return json.loads(res["stdout"].strip().splitlines()[-1])


def test_sandbox_with_llm_calls_the_gateway_from_python(gw, up, boxes):
    session = "py-" + uid()
    box = boxes(llm={"session": session}, labels={"team": "gw", "n": "1"})
    llm = box.info["llm"]
    assert {k: llm.get(k) for k in ("base_url", "api_key")} == {
        "base_url": "http://127.0.0.1:%d/v1" % LLM_PORT,
        "api_key": "sbx"}, box.info
    assert llm.get("session", session) == session, box.info
    status, h, data = box.describe()
    assert as_json(status, h, data)["llm"] == box.info["llm"]
    env = box.sh("echo $OPENAI_BASE_URL; echo $OPENAI_API_KEY")
    assert env.split() == ["http://127.0.0.1:%d/v1" % LLM_PORT, "sbx"], env

    prompt = "from a sandbox " + uid()
    r = box_call(box, body=chat_body(prompt, max_tokens=6))
    assert r["status"] == 200, r
    body = json.loads(r["body"])
    text = chat_prompt(prompt)
    pids, cids = mu.expected_ids(text, 6)
    assert body["choices"][0]["message"]["content"] == \
        mu.completion_text(text, 6)
    (t,) = traces_of(gw, sandbox=box.id)
    assert t["sandbox"] == box.id, t
    assert t["labels"] == {"team": "gw", "n": "1"}, t
    assert t["session_name"] == session and t["session_uids"] == [], t
    assert t["prompt_token_ids"] == pids, t
    assert t["completion_token_ids"] == cids, t
    # the sandbox's "sbx" key never goes upstream: the server's does
    (req,) = upstream_posts(up, text)
    assert req["headers"]["Authorization"] == "Bearer " + gw.upstream_key

    # any key is accepted inside; streamed; the slug form
    u = uid()
    r = box_call(box, slug=slug({"session_uids": [u],
                                 "session_name": "inside"}),
                 body=chat_body(prompt + " 2", stream=True))
    assert r["status"] == 200 and r["ctype"].startswith(
        "text/event-stream"), r
    events = sse_data(r["body"].encode())
    assert events[-1] == "[DONE]"
    assert stream_text(events) == mu.completion_text(
        chat_prompt(prompt + " 2"))
    t = one_trace(gw, session=u)
    assert t["sandbox"] == box.id and t["session_name"] == "inside", t
    assert t["labels"] == {"team": "gw", "n": "1"}, t
    r = box_call(box, path="/completions",
                 body={"model": "mock-model", "prompt": "p " + u})
    assert r["status"] == 200, r
    r = box_call(box, path="/models")
    assert r["status"] == 200 and "mock-model" in r["body"], r
    assert len(traces_of(gw, sandbox=box.id)) == 3


def test_sandbox_gateway_serves_only_the_model_routes(gw, up, boxes):
    box = boxes(llm=True)
    base = "http://127.0.0.1:%d" % LLM_PORT
    for path, method in (("/v1/traces", "GET"), ("/v1/health", "GET"),
                         ("/v1/sandboxes", "GET"), ("/llm/v1/models", "GET"),
                         ("/v1/run", "POST"), ("/v1/embeddings", "POST")):
        a = {"base": base, "path": path, "method": method}
        if method == "POST":
            a["body"] = {"model": "mock-model"}
        r = box_call(box, **a)
        assert r.get("status") == 404, (path, r)
        assert r["ctype"].startswith("application/json"), (path, r)
        assert "error" in json.loads(r["body"]), (path, r)
    assert upstream_posts(up) == []


def test_sandbox_without_llm_cannot_reach_the_gateway(gw, boxes):
    box = boxes()
    assert box.info["llm"] is None, box.info
    assert box.sh("echo ${OPENAI_BASE_URL-unset}").strip() == "unset"
    r = box_call(box, base="http://127.0.0.1:%d/v1" % LLM_PORT,
                 body=chat_body("no llm"))
    assert r.get("oserror") == 111, r  # ECONNREFUSED


def test_llm_sandbox_still_reaches_nothing_else(gw, up, boxes):
    box = boxes(llm=True)
    # the mock and the sbx server listen on the host's loopback; the
    # sandbox's own loopback has neither
    for port in (up.port, gw.port):
        r = box_call(box, base="http://127.0.0.1:%d/v1" % port,
                     body=chat_body("escape"))
        assert r.get("oserror") == 111, (port, r)  # ECONNREFUSED
    # no route anywhere else
    for host in ("10.0.0.1", "192.0.2.1", "1.1.1.1"):
        r = box_call(box, base="http://%s:80/v1" % host,
                     body=chat_body("escape"))
        assert r.get("oserror") == 101, (host, r)  # ENETUNREACH
    assert upstream_posts(up) == []
    res = box.exec(argv=["python3", "-c", "import socket; print("
                         "[n for i, n in socket.if_nameindex()])"])
    assert res["stdout"].strip() == "['lo']", res


KEY_SCAN = r'''
import os, sys
key = sys.argv[1][::-1]  # given reversed: the key itself is in no argv
hits = []
for k, v in os.environ.items():
    if key in v or key in k:
        hits.append("env " + k)
for pid in os.listdir("/proc"):
    if not pid.isdigit() and pid != "self":
        continue
    for f in ("environ", "cmdline"):
        try:
            with open("/proc/%s/%s" % (pid, f), "rb") as fh:
                if key.encode() in fh.read():
                    hits.append("/proc/%s/%s" % (pid, f))
        except OSError:
            pass
for top in ("/etc", "/work", "/tmp", "/home", "/root", "/opt", "/run",
            "/var", "/mnt", "/dev/shm", os.environ.get("HOME", "/work")):
    for d, dirs, files in os.walk(top):
        for f in files:
            p = os.path.join(d, f)
            try:
                with open(p, "rb") as fh:
                    if key.encode() in fh.read(1 << 20):
                        hits.append(p)
            except OSError:
                pass
print("hits", hits)
'''


def test_upstream_key_never_reaches_a_sandbox(gw, up, boxes):
    key = gw.upstream_key
    box = boxes(llm=True)
    status, h, data = box.describe()
    assert key.encode() not in data
    r = box_call(box, body=chat_body("key check"))
    assert r["status"] == 200 and key not in r["body"], r
    r = box_call(box, path="/models")
    assert key not in r["body"], r
    r = box_call(box, body=chat_body("x", model="fail-500"))
    assert key not in r["body"], r
    status, h, data = box.put("scan.py", KEY_SCAN.encode())
    res = box.exec(argv=["python3", "scan.py", key[::-1]], timeout_s=60,
                   guard_s=90)
    assert res["status"] == "ok", res
    assert res["stdout"].strip() == "hits []", res["stdout"]
    # nor any trace
    h, data = traces(gw, sandbox=box.id)
    assert key.encode() not in data


# ---- budgets ----

def test_one_sandbox_cannot_spend_anothers_budget(gw, up, boxes):
    a = boxes(llm={"max_calls": 2})
    b = boxes(llm={"max_calls": 2})
    for i in range(2):
        r = box_call(a, body=chat_body("a %d" % i))
        assert r["status"] == 200, r
    for attempt in (
            {},  # plainly
            # claiming to be b in every way a request can
            {"slug": slug({"session_uids": [b.id], "sandbox": b.id})},
    ):
        r = box_call(a, body=chat_body("a more", user=b.id,
                                       metadata={"sandbox": b.id}),
                     headers={"X-Sbx-Sandbox": b.id,
                              "Authorization": "Bearer " + b.id,
                              "X-Forwarded-For": "127.0.0.2"},
                     **attempt)
        assert r["status"] == 429 and r["ctype"].startswith(
            "application/json"), r
        err = json.loads(r["body"])["error"]
        assert err["code"] == "limit_exceeded", err
        assert "call" in err["message"], err
    assert len(upstream_posts(up)) == 2
    # b's budget is whole
    for i in range(2):
        r = box_call(b, body=chat_body("b %d" % i))
        assert r["status"] == 200, r
    assert len(traces_of(gw, sandbox=a.id)) == 2
    assert len(traces_of(gw, sandbox=b.id)) == 2
    assert all(t["sandbox"] == a.id for t in traces_of(gw, sandbox=a.id))


def test_sandbox_completion_token_budget(gw, up, boxes):
    box = boxes(llm={"max_completion_tokens": 10})
    statuses = []
    for i in range(4):
        r = box_call(box, body=chat_body("tokens %d" % i))  # 8 tokens each
        statuses.append(r["status"])
        if r["status"] == 429:
            err = json.loads(r["body"])["error"]
            assert err["code"] == "limit_exceeded", err
            assert "completion" in err["message"], err
    assert statuses[0] == 200, statuses
    assert 429 in statuses[:3], statuses
    assert statuses[statuses.index(429):] == [429] * (
        len(statuses) - statuses.index(429)), statuses


@pytest.fixture(scope="module")
def limited(mock, key):
    srv = gateway_server(mock, "--llm-limit", "session_calls=2",
                         "--llm-limit", "session_concurrent=1",
                         "--llm-limit", "sandbox_calls=3", key=key)
    with srv:
        yield srv


def test_session_call_limit_across_sandboxes(limited, up):
    boxes = Boxes(limited)
    try:
        s = "shared-" + uid()
        a = boxes(llm={"session": s})
        b = boxes(llm={"session": s})
        assert box_call(a, body=chat_body("s1"))["status"] == 200
        assert box_call(b, body=chat_body("s2"))["status"] == 200
        for box in (a, b):
            r = box_call(box, body=chat_body("s3"))
            assert r["status"] == 429, r
            err = json.loads(r["body"])["error"]
            assert err["code"] == "limit_exceeded" and "session" in \
                err["message"], err
        # another session is untouched
        c = boxes(llm={"session": "other-" + uid()})
        assert box_call(c, body=chat_body("s4"))["status"] == 200
    finally:
        boxes.cleanup()


def test_session_limits_on_host_calls(limited, up):
    u = uid()
    path = "/llm/meta/%s/v1/chat/completions" % slug({"session_uids": [u]})
    for i in range(2):
        status, h, data = post(limited, path, chat_body("h %d %s" % (i, u)))
        assert status == 200, data[:300]
    status, h, data = post(limited, path, chat_body("h 2 " + u))
    err = gw_error(status, h, data, 429, "limit_exceeded")
    assert "session" in err["message"], err
    assert len(upstream_posts(up)) == 2


def test_session_concurrency_limit(limited, up):
    u = uid()
    path = "/llm/meta/%s/v1/chat/completions" % slug({"session_uids": [u]})
    conn = http.client.HTTPConnection("127.0.0.1", limited.port,
                                      timeout=GUARD_S)
    conn.request("POST", path, body=json.dumps(
        chat_body("held " + u, model="stall-30s", stream=True)).encode(),
        headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    try:
        assert resp.status == 200
        poll("the held call to reach the mock",
             lambda: upstream_posts(up, chat_prompt("held " + u)))
        status, h, data = post(limited, path, chat_body("second " + u))
        err = gw_error(status, h, data, 429, "limit_exceeded")
        assert "concurrent" in err["message"], err
        other = "/llm/meta/%s/v1/chat/completions" % slug(
            {"session_uids": [uid()]})
        status, h, data = post(limited, other, chat_body("third " + u))
        assert status == 200, data[:300]
    finally:
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()


def test_sandbox_limit_caps_what_a_sandbox_asks(limited, up):
    boxes = Boxes(limited)
    try:
        box = boxes(llm={"max_calls": 100})
        statuses = []
        for i in range(4):
            # a session per call, so that only the sandbox limit counts
            r = box_call(box, slug=slug({"session_uids": [uid()]}),
                         body=chat_body("cap %d" % i))
            statuses.append(r["status"])
        assert statuses == [200, 200, 200, 429], statuses
    finally:
        boxes.cleanup()


def test_sandbox_concurrency_limit(gw, up, boxes):
    box = boxes(llm={"max_concurrent": 1})
    other = boxes(llm={"max_concurrent": 1})
    held = "held in a sandbox " + uid()
    status, h, data = box.put("llmcall.py", PY_CALL.encode())
    box.probe_written = True
    status, h, data = box.exec_raw({"argv": [
        "python3", "llmcall.py", json.dumps(
            {"body": chat_body(held, model="stall-30s", stream=True)})],
        "background": True})
    res = as_json(status, h, data)
    assert status == 201 and res.get("status") == "running", res
    poll("the held call to reach the mock",
         lambda: upstream_posts(up, chat_prompt(held)))
    r = box_call(box, body=chat_body("second " + held))
    assert r["status"] == 429, r
    err = json.loads(r["body"])["error"]
    assert err["code"] == "limit_exceeded" and "concurrent" in \
        err["message"], err
    # another sandbox is not held back
    assert box_call(other, body=chat_body("other " + held))["status"] == 200


def test_listed_model_goes_to_its_upstream_before_the_default(key):
    with MockUpstream(models=["model-a"]) as a, \
            MockUpstream(models=["model-b"]) as b:
        srv = gateway_server(a, "--default-upstream", "b", key=None,
                             ups=[("a", a.base_url), ("b", b.base_url)])
        with srv:
            status, h, data = post(srv, "/llm/v1/chat/completions",
                                   chat_body("anything", model="free-form"))
            # the default upstream got it, and passed its own 404 back
            assert status == 404, data[:300]
            assert len(b.completions()) == 1 and a.completions() == []
            # a model upstream a lists goes to a
            status, h, data = post(srv, "/llm/v1/chat/completions",
                                   chat_body("listed", model="model-a"))
            assert status == 200, (status, data[:300])
            assert len(a.completions()) == 1 and len(b.completions()) == 1
            status, h, data = raw_request(srv, "GET", "/v1/health")
            llm = as_json(status, h, data)["llm"]
            assert [u["default"] for u in llm["upstreams"]] == [False, True]
    

def test_no_extra_fields_and_another_llm_port(mock, up):
    srv = gateway_server(mock, "--no-llm-token-ids", "--no-llm-logprobs",
                         "--llm-port", "4100", key=None)
    mock.configure(api_key=None)
    try:
        with srv:
            status, h, data = post(srv, "/llm/v1/chat/completions",
                                   chat_body("no extras"))
            assert status == 200, data[:300]
            status, h, data = post(srv, "/llm/v1/completions",
                                   {"model": "mock-model", "prompt": "n"})
            assert status == 200, data[:300]
            for req in up.completions():
                assert "return_token_ids" not in req["json"], req["json"]
                assert "logprobs" not in req["json"], req["json"]
            status, h, data = raw_request(srv, "GET", "/v1/health")
            assert as_json(status, h, data)["llm"]["port"] == 4100
            bx = Boxes(srv)
            try:
                box = bx(llm=True)
                assert box.info["llm"]["base_url"] == \
                    "http://127.0.0.1:4100/v1", box.info
                r = box_call(box, body=chat_body("port"))
                assert r["status"] == 200, r
                r = box_call(box, base="http://127.0.0.1:4000/v1",
                             body=chat_body("old port"))
                assert r.get("oserror") == 111, r
            finally:
                bx.cleanup()
            t = traces_of(srv)
            assert len(t) == 3 and all(x["prompt_token_ids"] is None
                                       for x in t), t
    finally:
        mock.configure(api_key=mock.key_for_tests)


# ---- /v1/run, server defaults, no upstream ----

def test_run_with_llm(gw, up):
    session = "run-" + uid()
    code = ("import json, os, urllib.request\n"
            "req = urllib.request.Request(os.environ['OPENAI_BASE_URL'] + "
            "'/chat/completions', data=json.dumps(%r).encode(), "
            "headers={'Content-Type': 'application/json'})\n"
            "print(json.load(urllib.request.urlopen(req, timeout=60))"
            "['choices'][0]['message']['content'])\n"
            % chat_body("a run " + session))
    status, h, data = post(gw, "/v1/run", {
        "language": "python", "source": code,
        "llm": {"session": session}, "limits": {"wall_ms": 60000}})
    res = as_json(status, h, data)
    assert status == 200, res
    assert res["run"]["status"] == "ok", res
    assert res["run"]["stdout"].strip() == mu.completion_text(
        chat_prompt("a run " + session)), res
    assert "llm" not in res, res
    t = one_trace(gw, session=session)
    assert re.fullmatch(r"run-\d+", t["sandbox"]), t
    # without llm, a run has no gateway
    status, h, data = post(gw, "/v1/run", {
        "language": "python", "source": code,
        "limits": {"wall_ms": 60000}})
    res = as_json(status, h, data)
    assert res["run"]["status"] != "ok", res
    assert "OPENAI_BASE_URL" in res["run"]["stderr"], res


def test_llm_without_upstream_is_422(tmp_path):
    with SbxServer(extra_args=["--state-dir", str(tmp_path)]) as srv:
        status, h, data = post(srv, "/v1/sandboxes", {"llm": True})
        gw_error(status, h, data, 422, "no_upstream")
        status, h, data = post(srv, "/v1/run", {
            "language": "python", "source": "print(1)", "llm": True})
        gw_error(status, h, data, 422, "no_upstream")


def test_settings_from_env_and_server_default_llm(mock, key, tmp_path):
    env = {"SBX_UPSTREAMS": "mock=" + mock.base_url,
           "SBX_UPSTREAM_KEYS": "mock=" + KEY_VAR, "SBX_LLM": "1",
           "SBX_STATE_DIR": str(tmp_path), KEY_VAR: key}
    with SbxServer(env=env) as srv:
        status, h, data = raw_request(srv, "GET", "/v1/health")
        llm = as_json(status, h, data)["llm"]
        assert llm["default_on"] is True, llm
        assert llm["upstreams"] == [{"name": "mock", "url": mock.base_url,
                                     "key": True, "default": True}], llm
        assert key.encode() not in data
        assert os.path.exists(os.path.join(str(tmp_path), "sbx.db"))
        b = Boxes(srv)
        try:
            on = b()
            assert on.info["llm"] and on.info["llm"]["api_key"] == "sbx"
            r = box_call(on, body=chat_body("default on"))
            assert r["status"] == 200, r
            off = b(llm=False)
            assert off.info["llm"] is None
            assert off.sh("echo ${OPENAI_BASE_URL-unset}").strip() == "unset"
        finally:
            b.cleanup()


# ---- the official OpenAI node SDK inside a sandbox ----

NODE_SDK = r'''
import OpenAI from "openai";

const U = process.argv[2] ?? "%(uid)s";
function slugOf(meta: Record<string, unknown>): string {
  const sorted: Record<string, unknown> = {};
  for (const k of Object.keys(meta).sort()) sorted[k] = meta[k];
  return "rllm1:" + Buffer.from(JSON.stringify(sorted)).toString("base64url");
}

function first(resp: any, what: string): any {
  if (!resp || !Array.isArray(resp.choices) || !resp.choices[0])
    throw new Error(what + " answered " + JSON.stringify(resp));
  return resp.choices[0];
}

async function main() {
  const out: Record<string, unknown> = {};
  const client = new OpenAI();  // OPENAI_BASE_URL and OPENAI_API_KEY
  const plain: any = await client.chat.completions.create({
    model: "mock-model",
    messages: [{ role: "user", content: "node plain %(uid)s" }],
  });
  out.plain = first(plain, "plain").message.content;

  const stream = await client.chat.completions.create({
    model: "mock-model",
    messages: [{ role: "user", content: "node stream %(uid)s" }],
    stream: true,
  });
  let text = "";
  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? "";
  out.stream = text;

  const base = process.env.OPENAI_BASE_URL!.replace(/\/v1$/, "");
  const slugged = new OpenAI({
    baseURL: base + "/meta/" + slugOf({ session_uids: [U], session_name: "node-slug" }) + "/v1",
    apiKey: "EMPTY",
  });
  const s: any = await slugged.completions.create({
    model: "mock-model", prompt: "node slug %(uid)s", max_tokens: 5,
  });
  out.slug = first(s, "slug").text;
  console.log(JSON.stringify(out));
}
main().catch((e) => { console.error(e); process.exit(1); });
'''


def test_openai_node_sdk_inside_a_sandbox(gw, up):
    status, h, data = raw_request(gw, "GET", "/v1/health")
    langs = as_json(status, h, data).get("languages")
    if isinstance(langs, dict) and "typescript" not in langs:
        pytest.skip("typescript is not installed (make deps)")
    if isinstance(langs, list) and "typescript" not in langs:
        pytest.skip("typescript is not installed (make deps)")
    u = uid()
    session = "node-" + u
    status, h, data = post(gw, "/v1/run", {
        "language": "typescript", "source": NODE_SDK % {"uid": u},
        "llm": {"session": session}, "limits": {"wall_ms": 120000}},
        guard_s=180)
    res = as_json(status, h, data)
    assert status == 200, res
    assert res["run"]["status"] == "ok", (res["run"]["stdout"][-2000:],
                                          res["run"]["stderr"][-2000:])
    out = json.loads(res["run"]["stdout"].strip().splitlines()[-1])
    plain_t = chat_prompt("node plain " + u)
    stream_t = chat_prompt("node stream " + u)
    assert out["plain"] == mu.completion_text(plain_t), out
    assert out["stream"] == mu.completion_text(stream_t), out
    assert out["slug"] == mu.completion_text("node slug " + u, 5), out

    mine = traces_of(gw, session=session)
    assert len(mine) == 2, mine
    sandbox = mine[0]["sandbox"]
    assert re.fullmatch(r"run-\d+", sandbox or ""), mine[0]
    by_prompt = {t["request"]["messages"][0]["content"]: t for t in mine}
    for prompt, stream in (("node plain " + u, False),
                           ("node stream " + u, True)):
        t = by_prompt[prompt]
        pids, cids = mu.expected_ids(chat_prompt(prompt))
        assert t["stream"] is stream, t
        assert t["sandbox"] == sandbox, t
        assert t["prompt_token_ids"] == pids, t
        assert t["completion_token_ids"] == cids, t
        assert len(t["logprobs"]) == len(cids), t
    t = one_trace(gw, session=u)
    assert t["sandbox"] == sandbox and t["session_name"] == "node-slug", t
    pids, cids = mu.expected_ids("node slug " + u, 5)
    assert t["prompt_token_ids"] == pids and \
        t["completion_token_ids"] == cids, t
    # the SDK's requests went upstream with the server's key only
    for r in upstream_posts(up):
        assert r["headers"]["Authorization"] == "Bearer " + gw.upstream_key
    assert len(upstream_posts(up)) == 3

"""The gateway as an operator sees it: counters in /metrics and
/v1/health, and a shutdown that ends calls under way with an answer."""
import base64
import json
import re
import threading
import time
import urllib.request

from mock_upstream import MockUpstream
from sbxserver import SbxServer


def slug(meta):
    body = json.dumps(meta, separators=(",", ":"), sort_keys=True).encode()
    return "rllm1:" + base64.urlsafe_b64encode(body).decode().rstrip("=")


def call(srv, path, body):
    req = urllib.request.Request(srv.url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def metric(text, name):
    m = re.search(r"^%s (\d+)$" % re.escape(name), text, re.M)
    assert m, (name, text[-2000:])
    return int(m.group(1))


def test_counters_follow_calls_failures_limits_and_tokens(tmp_path):
    with MockUpstream() as up, SbxServer(extra_args=[
            "--state-dir", str(tmp_path), "--upstream", "mock=" + up.base_url,
            "--upstream", "down=http://127.0.0.1:9/v1",
            "--default-upstream", "mock", "--upstream-retries", "0",
            "--llm-limit", "session_calls=1"]) as srv:
        body = {"model": "mock-model",
                "messages": [{"role": "user", "content": "count me"}]}
        st, first = call(srv, "/llm/meta/%s/v1/chat/completions"
                         % slug({"session_uids": ["s-1"]}), body)
        assert st == 200, first
        st, again = call(srv, "/llm/meta/%s/v1/chat/completions"
                         % slug({"session_uids": ["s-1"]}), body)
        assert st == 429 and again["error"]["code"] == "limit_exceeded"
        assert "this session" in again["error"]["message"]
        st, down = call(srv, "/llm/v1/chat/completions",
                        dict(body, model="down/x"))
        assert st == 502, down
        st, _, text = srv.get("/metrics")
        assert st == 200
        assert metric(text, "sbx_llm_calls_total") == 2
        assert metric(text, "sbx_llm_failed_calls_total") == 1
        assert metric(text, "sbx_llm_limited_calls_total") == 1
        assert metric(text, "sbx_llm_active_calls") == 0
        usage = first["usage"]
        assert metric(text, 'sbx_llm_tokens_total{kind="prompt"}') == \
            usage["prompt_tokens"]
        assert metric(text, 'sbx_llm_tokens_total{kind="completion"}') == \
            usage["completion_tokens"]
        st, _, health = srv.get("/v1/health")
        llm = health["llm"]
        assert llm["calls"] == 2 and llm["failed_calls"] == 1
        assert llm["traces"] == 2
        assert [u["name"] for u in llm["upstreams"]] == ["mock", "down"]
        assert [u["default"] for u in llm["upstreams"]] == [True, False]


def test_shutdown_answers_calls_under_way_and_does_not_wait_for_them(
        tmp_path):
    with MockUpstream() as up:
        srv = SbxServer(extra_args=["--state-dir", str(tmp_path),
                                    "--upstream", "mock=" + up.base_url])
        srv.__enter__()
        got = {}

        def slow_call(name, stream):
            body = {"model": "mock-model+delay-60s", "stream": stream,
                    "messages": [{"role": "user", "content": name}]}
            got[name] = call_raw(srv, "/llm/v1/chat/completions", body)

        threads = [threading.Thread(target=slow_call, args=(n, s))
                   for n, s in (("plain", False), ("streamed", True))]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(up.completions()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(up.completions()) == 2
        srv.stop()
        for t in threads:
            t.join(30)
        for name in ("plain", "streamed"):
            st, body = got[name]
            assert st == 502, (name, st, body)
            err = json.loads(body)["error"]
            assert err["code"] == "upstream_unavailable"
            # ended by the shutdown, not waited out (the delay is 60 s)
            assert "stopping" in err["message"], err


def call_raw(srv, path, body):
    req = urllib.request.Request(srv.url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=90) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


TWO_CALLS = r'''
import json, os, urllib.request
def ask(n):
    body = {"model": "mock-model", "messages": [{"role": "user", "content": "q %d" % n}]}
    req = urllib.request.Request(os.environ["OPENAI_BASE_URL"] + "/chat/completions",
                                 json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, ""
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())["error"]["message"]
print(json.dumps([ask(1), ask(2)]))
'''


def test_token_budgets_of_a_sandbox_and_of_a_session(tmp_path):
    """A budget is checked before a call: the call that uses it up goes
    through, the next is a 429 naming the budget."""
    with MockUpstream() as up, SbxServer(extra_args=[
            "--state-dir", str(tmp_path), "--upstream", "mock=" + up.base_url,
            "--llm-limit", "session_prompt_tokens=1"]) as srv:
        st, _, res = srv.post("/v1/run", {
            "language": "python", "source": TWO_CALLS,
            "llm": {"max_completion_tokens": 1}})
        assert st == 200 and res["run"]["exit_code"] == 0, res
        (first, second) = json.loads(res["run"]["stdout"])
        assert first == [200, ""]
        assert second[0] == 429 and "this sandbox" in second[1] and \
            "completion tokens" in second[1], second
        body = {"model": "mock-model",
                "messages": [{"role": "user", "content": "budget"}]}
        path = "/llm/meta/%s/v1/chat/completions" % slug(
            {"session_uids": ["tok-1"]})
        assert call(srv, path, body)[0] == 200
        st, err = call(srv, path, body)
        assert st == 429 and "prompt tokens" in err["error"]["message"]
        # another session is not held back
        other = "/llm/meta/%s/v1/chat/completions" % slug(
            {"session_uids": ["tok-2"]})
        assert call(srv, other, body)[0] == 200

"""The Python client's model gateway calls against a real server and the
mock upstream: sandboxes and runs with llm=, Sandbox.llm_base_url and
llm_api_key, traces(), trace() and delete_traces(), sync and async.
"""
import asyncio
import json
import os
import sys
import uuid

import pytest

import mock_upstream as mu
from mock_upstream import MockUpstream
from test_gateway import gateway_server, pytestmark, slug  # noqa: F401

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                "clients", "python"))
import sbx  # noqa: E402
from sbx import AsyncClient, BadRequest, Client, NotFound  # noqa: E402

CALL = r'''
import json, os, sys, urllib.request
req = urllib.request.Request(os.environ["OPENAI_BASE_URL"] + "/chat/completions",
    data=json.dumps({"model": "mock-model",
                     "messages": [{"role": "user", "content": sys.argv[1]}]}).encode(),
    headers={"Content-Type": "application/json",
             "Authorization": "Bearer " + os.environ["OPENAI_API_KEY"]})
print(json.load(urllib.request.urlopen(req, timeout=60))["choices"][0]["message"]["content"])
'''


def answer(prompt):
    return mu.completion_text(mu.chat_prompt_text(
        [{"role": "user", "content": prompt}]))


@pytest.fixture(scope="module")
def world():
    key = "sk-test-" + uuid.uuid4().hex
    with MockUpstream(api_key=key) as up:
        srv = gateway_server(up, key=key)
        with srv:
            yield srv, up


@pytest.fixture
def client(world):
    with Client(world[0].url) as c:
        yield c


def test_sandbox_with_llm_and_its_traces(client, world):
    session = "client-" + uuid.uuid4().hex
    with client.create_sandbox(llm={"session": session},
                               labels={"via": "client"}) as sb:
        assert sb.llm_base_url == "http://127.0.0.1:4000/v1"
        assert sb.llm_api_key == "sbx"
        assert sb.info().llm_base_url == sb.llm_base_url
        assert client.get_sandbox(sb.id).llm_base_url is None  # no request
        sb.files.write("call.py", CALL)
        for i in range(3):
            r = sb.exec(["python3", "call.py", "hello %d %s" % (i, session)])
            assert r.status == "ok", r
            assert r.stdout.strip() == answer("hello %d %s" % (i, session))
        got = client.traces(session=session)
        assert [t["sandbox"] for t in got] == [sb.id] * 3, got
        assert all(t["labels"] == {"via": "client"} for t in got), got
        assert got == client.traces(sandbox=sb.id)
        assert [t["id"] for t in client.traces(session=session,
                                               after=got[0]["id"])] == \
            [t["id"] for t in got[1:]]
        assert len(client.traces(session=session, limit=2)) == 2
        import datetime
        assert client.traces(session=session, since=datetime.datetime.now(
            datetime.timezone.utc) + datetime.timedelta(hours=1)) == []
        assert len(client.traces(session=session,
                                 since=got[0]["created_at"])) == 3
        one = client.trace(got[1]["id"])
        assert one == got[1]
        pids, cids = mu.expected_ids(mu.chat_prompt_text(
            one["request"]["messages"]))
        assert one["prompt_token_ids"] == pids
        assert one["completion_token_ids"] == cids
        assert client.delete_traces(session=session) == 3
        assert client.traces(session=session) == []
        with pytest.raises(NotFound):
            client.trace(got[0]["id"])
    with pytest.raises(ValueError):
        client.delete_traces()


def test_sandbox_without_llm_has_no_base_url(client):
    with client.create_sandbox() as sb:
        assert sb.llm_base_url is None and sb.llm_api_key is None
    with client.create_sandbox(llm=False) as sb:
        assert sb.llm_base_url is None


def test_run_with_llm(client):
    session = "client-run-" + uuid.uuid4().hex
    code = CALL.replace("sys.argv[1]", repr("from a run"))
    r = client.run("python", code, llm={"session": session},
                   limits={"wall_ms": 60000})
    assert r.status == "ok", r
    assert r.run.stdout.strip() == answer("from a run"), r
    (t,) = client.traces(session=session)
    assert t["sandbox"].startswith("run-"), t
    assert client.delete_traces(sandbox=t["sandbox"]) == 1


def test_bad_llm_argument_is_refused_before_sending(client):
    with pytest.raises(TypeError):
        client.create_sandbox(llm="yes")


def test_async_client(world):
    srv, up = world
    session = "async-" + uuid.uuid4().hex

    async def main():
        async with AsyncClient(srv.url) as c:
            async with await c.create_sandbox(llm={"session": session}) as sb:
                assert sb.llm_base_url == "http://127.0.0.1:4000/v1"
                assert sb.llm_api_key == "sbx"
                await sb.files.write("call.py", CALL)
                rs = await asyncio.gather(*(
                    sb.exec(["python3", "call.py", "async %d" % i])
                    for i in range(4)))
                assert all(r.status == "ok" for r in rs), rs
                got = await c.traces(session=session)
                assert len(got) == 4 and all(t["sandbox"] == sb.id
                                             for t in got), got
                assert (await c.trace(got[0]["id"]))["id"] == got[0]["id"]
                assert await c.delete_traces(session=session) == 4
                assert await c.traces(session=session) == []
            r = await c.run("python", CALL.replace("sys.argv[1]", "'r'"),
                            llm=True, limits={"wall_ms": 60000})
            assert r.status == "ok", r

    asyncio.run(main())


def test_slug_sessions_through_the_client(client, world):
    srv, up = world
    u = uuid.uuid4().hex
    import urllib.request
    req = urllib.request.Request(
        srv.url + "/llm/meta/%s/v1/chat/completions"
        % slug({"session_uids": [u], "session_name": "via-slug"}),
        data=json.dumps({"model": "mock-model", "messages": [
            {"role": "user", "content": "s"}]}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 200
    (t,) = client.traces(session=u)
    assert t["session_uids"] == [u] and t["session_name"] == "via-slug"
    assert t["sandbox"] is None
    assert client.traces(session="via-slug")[-1]["id"] == t["id"]


def test_error_for_bad_query(client):
    with pytest.raises(BadRequest):
        client.request("DELETE", "/v1/traces")
    assert isinstance(sbx.SandboxInfo.from_dict({"id": "x"}).llm_base_url,
                      type(None))

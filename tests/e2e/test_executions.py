"""Agent rollouts end to end: agents, executions in both pool modes, every
failure mode, rLLM's result routes, idempotency, cancel, long polls, and a
`kill -9` of the server in the middle of a batch.

The sample math agent (examples/math_agent) asks the mock upstream twice
through the gateway; each result is checked against the mock's own
deterministic answers, and each execution's calls against its traces. The
issue asks for 200 runs per pool mode, and this file runs them
(bench/executions.py runs thousands).

Every wait is a long poll or a poll with a hang guard; no test asserts how
long anything took.
"""
import io
import json
import os
import re
import signal
import subprocess
import tarfile
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import asyncio
import sys

import pytest

import mock_upstream as mu
from mock_upstream import MockUpstream
from sbxserver import SbxServer
from test_gateway import _has_gateway

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                "clients", "python"))
from sbx import AsyncClient, Client  # noqa: E402
from sbx.integrations.rllm import create_sbx_sandbox  # noqa: E402

pytestmark = pytest.mark.skipif(not _has_gateway(),
                                reason="this sbx has no model gateway")

REPO = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
MATH_AGENT = os.path.join(REPO, "examples", "math_agent")
SYSTEM = "Solve the arithmetic. Put the result in <answer></answer>."
GUARD_S = 120

FAULTY = r'''
import asyncio, os, signal, sys, time

def ok(task, config):
    return [{"name": "ok", "steps": [], "reward": task.get("r", 1.0)}]

async def coro(task, config):
    await asyncio.sleep(0.01)
    return {"trajectories": [{"name": "async", "steps": []}], "reward": 0.5}

def raises(task, config):
    raise ValueError("the agent gave up on " + task.get("q", "?"))

def hangs(task, config):
    time.sleep(3600)

def kills(task, config):
    os.kill(os.getpid(), signal.SIGKILL)

def oom(task, config):
    hog = []
    while True:
        hog.append(bytearray(16 << 20))

def garbage(task, config):
    print("\x00\xff garbage on stdout", flush=True)
    for fd in os.listdir("/proc/self/fd"):
        try:
            os.write(int(fd), b"\x1e{garbage\n")
        except OSError:
            pass
    time.sleep(30)

def not_json(task, config):
    return [{"name": "x", "steps": [], "odd": {1, 2, 3}}]

def echo_config(task, config):
    return [{"name": "cfg", "steps": [], "config": config}]

def slow(task, config):
    time.sleep(task.get("sleep", 0.3))
    return [{"name": "slow", "steps": [], "reward": float(task["n"])}]

def setup_note(task, config):
    with open("/tmp/setup-note") as f:
        return [{"name": "note", "steps": [], "note": f.read().strip()}]
'''

BROKEN = "import no_such_module_anywhere\n"


# ---- helpers ----

def tar_of(files=None, directory=None):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        if directory:
            t.add(directory, arcname=".")
        for name, text in (files or {}).items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def upload(srv, body, **q):
    query = "&".join("%s=%s" % kv for kv in q.items())
    st, _, data = srv.request("POST", "/v1/agents" + ("?" + query if query
                                                      else ""),
                              body, headers={"Content-Type":
                                             "application/x-tar"})
    return st, data


def submit(srv, **body):
    st, _, data = srv.post("/v1/executions", body)
    assert st in (200, 202), (st, data)
    return data["id"]


def wait(srv, eid, guard=GUARD_S):
    deadline = time.monotonic() + guard
    while time.monotonic() < deadline:
        st, _, data = srv.get("/v1/executions/%s?wait=20" % eid, timeout=40)
        assert st == 200, data
        if data["status"] not in ("queued", "running"):
            return data
    raise AssertionError("execution %s did not end" % eid)


def math_task(i):
    a, b = i % 17, i % 5 + 1
    right = i % 3 != 0
    return {"question": "What is %d + %d? (#%d)" % (a, b, i),
            "expression": "%d + %d" % (a, b),
            "target": a + b if right else a + b + 1}, right


def check_math(srv, eid, task, right):
    ex = wait(srv, eid)
    assert ex["status"] == "completed", ex
    res = ex["result"]
    assert set(res) == {"success", "trajectories", "session_uid", "reward",
                        "error", "elapsed"}
    assert res["success"] is True and res["error"] is None
    assert res["reward"] == (1.0 if right else 0.0)
    assert res["session_uid"] == ex["session_uid"]
    (traj,) = res["trajectories"]
    assert traj["task"] == task
    first = [{"role": "system", "content": SYSTEM},
             {"role": "user", "content": task["question"]}]
    want1 = mu.completion_text(mu.chat_prompt_text(first))
    assert traj["steps"][0]["output"] == want1
    second = first + [{"role": "assistant", "content": want1},
                      {"role": "user", "content": "Check it once more."}]
    assert traj["steps"][1]["output"] == mu.completion_text(
        mu.chat_prompt_text(second))
    # Every call traced under this execution's session, tokens and all.
    st, _, ep = srv.get("/v1/executions/%s/episode" % eid)
    assert st == 200
    assert ep["result"] == res
    assert len(ep["traces"]) == 2
    for t, msgs in zip(ep["traces"], (first, second)):
        assert t["session_uids"] == [ex["session_uid"]]
        assert t["session_name"] == eid
        assert t["request"]["messages"] == msgs
        p_ids, c_ids = mu.expected_ids(mu.chat_prompt_text(msgs))
        assert t["prompt_token_ids"] == p_ids
        assert t["completion_token_ids"] == c_ids
        assert len(t["logprobs"]) == len(c_ids)
    return ex


def pool_sandboxes(srv, key):
    st, _, data = srv.get("/v1/sandboxes?label=sbx.pool=%s" % key)
    assert st == 200
    return data.get("sandboxes", data)


# ---- fixtures ----

@pytest.fixture(scope="module")
def mock():
    with MockUpstream() as up:
        yield up


def server(mock, state, *extra):
    return SbxServer(extra_args=["--state-dir", state, "--upstream",
                                 "mock=" + mock.base_url] + list(extra))


@pytest.fixture(scope="module")
def srv(mock):
    state = tempfile.mkdtemp(prefix="sbx-exec-state-")
    with server(mock, state, "--max-sandboxes", "64") as s:
        s.state_dir = state
        yield s
    subprocess.run(["rm", "-rf", state])


@pytest.fixture(scope="module")
def math_agent(srv):
    st, data = upload(srv, tar_of(directory=MATH_AGENT), name="math")
    assert st == 201, data
    return data["id"]


@pytest.fixture(scope="module")
def faulty(srv):
    st, data = upload(srv, tar_of({"faulty.py": FAULTY,
                                   "broken.py": BROKEN}), name="faulty")
    assert st == 201, data
    return data["id"]


# ---- agents ----

def test_agent_upload_is_stored_by_digest_and_read_only(srv, math_agent):
    body = tar_of(directory=MATH_AGENT)
    st, again = upload(srv, body, name="math")
    assert st == 200 and again["id"] == math_agent
    path = os.path.join(srv.state_dir, "agents", again["digest"], "agent.py")
    with open(path) as f, open(os.path.join(MATH_AGENT, "agent.py")) as g:
        assert f.read() == g.read()
    st, _, one = srv.get("/v1/agents/" + math_agent)
    assert st == 200 and one["digest"] == again["digest"]
    st, _, lst = srv.get("/v1/agents")
    assert math_agent in [a["id"] for a in lst["agents"]]
    # Mounted read-only at /app/agent: an agent cannot change itself.
    st, data = upload(srv, tar_of({"w.py": (
        "def rollout(task, config):\n"
        "    opts = [l.split()[5] for l in open('/proc/self/mountinfo')\n"
        "            if l.split()[4] == '/app/agent']\n"
        "    try:\n"
        "        open('/app/agent/w.py', 'a').write('#')\n"
        "        return [{'name': 'wrote', 'opts': opts}]\n"
        "    except OSError as e:\n"
        "        return [{'name': 'refused', 'errno': e.errno,\n"
        "                 'opts': opts}]\n")}))
    assert st == 201
    ex = wait(srv, submit(srv, agent=data["id"], entry="w:rollout"))
    (traj,) = ex["result"]["trajectories"]
    assert traj["name"] == "refused" and traj["errno"] in (13, 30)
    assert traj["opts"] and "ro" in traj["opts"][0].split(",")


def test_agent_archives_that_do_not_unpack_are_refused(srv):
    st, data = upload(srv, b"this is not a tar archive" * 40)
    assert st == 422 and data["error"]["code"] == "bad_archive"
    # A hostile archive writes nowhere but its own directory.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("../../escaped-" + uuid.uuid4().hex)
        info.size = 1
        t.addfile(info, io.BytesIO(b"x"))
    st, data = upload(srv, buf.getvalue())
    assert not [n for n in os.listdir(srv.state_dir) if "escaped" in n]
    assert not [n for n in os.listdir(os.path.join(srv.state_dir, "agents"))
                if "escaped" in n]


def test_requirements_that_need_the_network_are_a_clear_error(srv):
    st, data = upload(srv, tar_of({"agent.py": "def rollout(t, c): return []\n",
                                   "requirements.txt": "surely-not-here==1.0\n"}),
                      requirements="requirements.txt")
    assert st == 422, data
    assert data["error"]["code"] == "requirements_failed"
    assert "offline" in data["error"]["message"]
    assert "surely-not-here" in data["error"]["message"]


def test_agent_delete(srv):
    st, data = upload(srv, tar_of({"gone.py": "x = 1\n"}))
    assert st == 201
    st, _, _ = srv.request("DELETE", "/v1/agents/" + data["id"])
    assert st == 200
    assert not os.path.exists(os.path.join(srv.state_dir, "agents",
                                           data["digest"]))
    st, _, _ = srv.get("/v1/agents/" + data["id"])
    assert st == 404
    st, _, err = srv.post("/v1/executions", {"agent": data["id"]})
    assert st == 422 and err["error"]["code"] == "unknown_agent"


# ---- the math agent in both pool modes ----

def test_math_agent_in_a_persistent_pool(srv, math_agent):
    st, _, pool = srv.post("/v1/pools", {
        "name": "math-persistent", "agent": math_agent, "mode": "persistent",
        "size": 4, "recycle_after": 25})
    assert st == 201, pool
    tasks = [math_task(i) for i in range(200)]
    with ThreadPoolExecutor(16) as ex:
        ids = list(ex.map(lambda t: submit(
            srv, agent=math_agent, pool="math-persistent", task=t[0],
            agent_config={"model_id": "mock-model"},
            labels={"batch": "persistent"}), tasks))
        done = list(ex.map(lambda a: check_math(srv, a[0], *a[1]),
                           zip(ids, tasks)))
    # One execution at a time per sandbox, each recycled after 25.
    per_box = {}
    for d in done:
        per_box[d["sandbox"]] = per_box.get(d["sandbox"], 0) + 1
    assert len(per_box) >= 200 // 25 and max(per_box.values()) <= 25, \
        per_box
    st, _, lst = srv.get("/v1/executions?label=batch=persistent&limit=250")
    assert sorted(e["id"] for e in lst["executions"]) == sorted(ids)
    assert all(e["status"] == "completed" for e in lst["executions"])


def test_math_agent_per_task_with_templated_setup(srv, math_agent):
    pool = {"mode": "per_task", "size": 6,
            "setup_commands": ["echo 'setup {expression}' > /tmp/setup-note"]}
    tasks = [math_task(i) for i in range(1000, 1200)]
    with ThreadPoolExecutor(12) as ex:
        ids = list(ex.map(lambda t: submit(
            srv, agent=math_agent, pool=pool, task=t[0],
            agent_config={"model_id": "mock-model"}), tasks))
        done = list(ex.map(lambda a: check_math(srv, a[0], *a[1]),
                           zip(ids, tasks)))
    # A fresh sandbox each, torn down after.
    assert len({d["sandbox"] for d in done}) == len(ids)
    deadline = time.monotonic() + GUARD_S
    while time.monotonic() < deadline:
        st, _, boxes = srv.get("/v1/sandboxes")
        live = {b["id"] for b in boxes["sandboxes"]}
        if not live & {d["sandbox"] for d in done}:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("per-task sandboxes were not torn down")


def test_setup_commands_see_the_task(srv, faulty):
    pool = {"mode": "per_task", "size": 2,
            "setup_commands": ["echo 'n={n} q={q}' > /tmp/setup-note"]}
    ex = wait(srv, submit(srv, agent=faulty, entry="faulty:setup_note",
                          pool=pool, task={"n": 7, "q": "hi"}))
    assert ex["result"]["trajectories"][0]["note"] == "n=7 q=hi"
    ex = wait(srv, submit(srv, agent=faulty, entry="faulty:setup_note",
                          pool=pool, task={"n": 7}))
    assert ex["status"] == "failed" and ex["error_code"] == "setup_failed"
    assert "{q}" in ex["result"]["error"]
    bad = dict(pool, setup_commands=["echo oops >&2; exit 3"])
    ex = wait(srv, submit(srv, agent=faulty, entry="faulty:setup_note",
                          pool=bad, task={}))
    assert ex["error_code"] == "setup_failed"
    assert "exit status 3" in ex["result"]["error"]
    assert "oops" in ex["result"]["error"]


def test_config_carries_the_gateway_url_and_session(srv, faulty):
    eid = submit(srv, agent=faulty, entry="faulty:echo_config",
                 agent_config={"model_id": "m", "temperature": 0.5})
    ex = wait(srv, eid)
    cfg = ex["result"]["trajectories"][0]["config"]
    assert cfg["model_id"] == "m" and cfg["temperature"] == 0.5
    assert cfg["session_uid"] == ex["session_uid"] == \
        ex["result"]["session_uid"]
    m = re.match(r"^http://127\.0\.0\.1:4000/meta/(rllm1:[A-Za-z0-9_-]+)/v1$",
                 cfg["base_url"])
    assert m, cfg["base_url"]
    slug = m.group(1)[6:]
    meta = json.loads(__import__("base64").urlsafe_b64decode(
        slug + "=" * (-len(slug) % 4)))
    assert meta == {"session_uids": [ex["session_uid"]], "session_name": eid}
    # Coroutine functions are awaited; a dict with trajectories is kept.
    ex = wait(srv, submit(srv, agent=faulty, entry="faulty:coro"))
    assert ex["result"]["trajectories"] == [{"name": "async", "steps": []}]
    assert ex["result"]["reward"] == 0.5


# ---- failure modes ----

@pytest.mark.parametrize("entry,code,words,extra", [
    ("broken", "import_error", "No module named 'no_such_module_anywhere'",
     {}),
    ("faulty:missing", "import_error", "has no function 'missing'", {}),
    ("faulty:raises", "exception", "ValueError: the agent gave up on q1",
     {"task": {"q": "q1"}}),
    ("faulty:hangs", "timeout", "timeout_s (2 s)", {"timeout_s": 2}),
    ("faulty:kills", "worker_died", "killed by signal 9", {}),
    ("faulty:oom", "out_of_memory", "out of memory",
     {"pool": {"limits": {"memory_mb": 96}}}),
    ("faulty:garbage", "bad_output", "not a result", {}),
    ("faulty:not_json", "not_json", "not JSON-serialisable", {}),
])
def test_every_failure_is_a_result_that_says_which(srv, faulty, entry, code,
                                                    words, extra):
    ex = wait(srv, submit(srv, agent=faulty, entry=entry, **extra))
    assert ex["status"] == "failed", ex
    assert ex["error_code"] == code, ex
    res = ex["result"]
    assert res["success"] is False and res["trajectories"] is None
    assert words in res["error"], res["error"]
    # The pool goes on: the next execution there still runs.
    if entry.startswith("faulty:") and entry != "faulty:missing":
        ok = wait(srv, submit(srv, agent=faulty, entry="faulty:ok",
                              **{k: v for k, v in extra.items()
                                 if k == "pool"}))
        assert ok["status"] == "completed"


def test_bad_requests(srv, math_agent):
    for body, words in [
            ({}, "needs an 'agent'"),
            ({"agent": math_agent, "entry": "a b"}, "'entry'"),
            ({"agent": math_agent, "task": [1]}, "'task'"),
            ({"agent": math_agent, "timeout_s": -1}, "'timeout_s'"),
            ({"agent": math_agent, "pool": {"mode": "x"}}, "'mode'"),
            ({"agent": math_agent, "pool": "no-such-pool"}, "no pool"),
            ({"agent": math_agent, "surprise": 1}, "unknown field")]:
        st, _, data = srv.post("/v1/executions", body)
        assert st == 422, (body, data)
        assert words in data["error"]["message"], (body, data)


# ---- idempotency, cancel, lists ----

def test_the_same_idempotency_key_gives_the_same_execution(srv, faulty):
    key = "k-" + uuid.uuid4().hex
    a = submit(srv, agent=faulty, entry="faulty:ok", idempotency_key=key)
    b = submit(srv, agent=faulty, entry="faulty:ok", idempotency_key=key)
    assert a == b
    st, _, c = srv.request("POST", "/v1/executions",
                           {"agent": faulty, "entry": "faulty:ok"},
                           headers={"Idempotency-Key": key})
    assert st == 200 and c["id"] == a and c["existing"] is True
    wait(srv, a)
    st, _, lst = srv.get("/v1/executions?limit=10000")
    assert [e["id"] for e in lst["executions"]].count(a) == 1


def test_cancel_kills_the_run(srv, faulty):
    eid = submit(srv, agent=faulty, entry="faulty:hangs",
                 pool={"mode": "per_task", "size": 1})
    deadline = time.monotonic() + GUARD_S
    while srv.get("/v1/executions/" + eid)[2]["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    sandbox = srv.get("/v1/executions/" + eid)[2]["sandbox"]
    st, _, ex = srv.request("DELETE", "/v1/executions/" + eid)
    assert st == 200 and ex["status"] == "cancelled"
    assert ex["error_code"] == "cancelled"
    assert "cancelled" in ex["result"]["error"]
    while srv.get("/v1/sandboxes/" + sandbox)[0] != 404:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # Ended executions stay as they are.
    st, _, again = srv.request("DELETE", "/v1/executions/" + eid)
    assert again["status"] == "cancelled"


def test_long_poll_and_the_feed_of_endings(srv, faulty):
    st, _, feed = srv.get("/v1/executions?done_after=0&limit=1")
    last = feed["last_seq"]
    eid = submit(srv, agent=faulty, entry="faulty:slow",
                 task={"n": 3, "sleep": 0.5}, labels={"feed": "yes"})
    st, _, got = srv.get("/v1/executions?done_after=%d&label=feed=yes&wait=30"
                         % last, timeout=60)
    assert [e["id"] for e in got["executions"]] == [eid]
    assert got["executions"][0]["result"]["reward"] == 3.0
    st, _, one = srv.get("/v1/executions/%s?wait=0" % eid)
    assert one["status"] == "completed"
    st, _, data = srv.get("/v1/executions/nope?wait=1")
    assert st == 404


# ---- rLLM's result routes ----

def rllm_result_url(proxy_url, execution_id):
    """The URL rLLM's worker_server builds (from its proxy URL)."""
    base = proxy_url.rstrip("/")
    if base.endswith("/v1"):
        base = base[:-3]
    return "%s/rllm/results/%s" % (base, execution_id)


def http_json(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_rllm_result_routes_as_rllms_worker_drives_them(srv):
    eid = str(uuid.uuid4())
    url = rllm_result_url(srv.url + "/llm/v1", eid)
    assert url == srv.url + "/llm/rllm/results/" + eid
    assert http_json("GET", url) == (202, {"status": "pending",
                                           "execution_id": eid})
    result = {"success": True, "trajectories": [{"name": "solver",
                                                  "steps": [], "reward": 1.0}],
              "session_uid": "s-1", "reward": None, "error": None,
              "elapsed": 0.25}
    assert http_json("POST", url, result) == (200, {"status": "stored",
                                                    "execution_id": eid})
    # A second push is acknowledged and ignored: the first one stays.
    st, _, m0 = srv.get("/metrics")
    dup0 = float(re.search(r'sbx_rllm_results_total\{outcome="duplicate"\} '
                           r'(\S+)', m0).group(1))
    assert http_json("POST", url, dict(result, success=False,
                                       error="late")) == \
        (200, {"status": "stored", "execution_id": eid})
    assert http_json("GET", url) == (200, {"status": "completed",
                                           "execution_id": eid,
                                           "result": result})
    st, _, m1 = srv.get("/metrics")
    dup1 = float(re.search(r'sbx_rllm_results_total\{outcome="duplicate"\} '
                           r'(\S+)', m1).group(1))
    assert dup1 == dup0 + 1
    # rLLM's defaults for what a worker leaves out.
    eid2 = str(uuid.uuid4())
    url2 = rllm_result_url(srv.url + "/llm/v1/", eid2)
    assert http_json("POST", url2, {"error": "boom"})[0] == 200
    assert http_json("GET", url2)[1]["result"] == {
        "success": True, "trajectories": None, "session_uid": "",
        "reward": None, "error": "boom", "elapsed": 0.0}
    assert http_json("POST", url2 + "x", {"success": "yes"})[0] == 422


def test_rllm_result_routes_inside_a_sandbox(srv):
    st, _, box = srv.post("/v1/sandboxes", {"llm": True})
    assert st == 201, box
    eid = str(uuid.uuid4())
    code = (
        "import json, os, urllib.request\n"
        "proxy = os.environ['OPENAI_BASE_URL']\n"
        "base = proxy.rstrip('/')\n"
        "base = base[:-3] if base.endswith('/v1') else base\n"
        "url = base + '/rllm/results/%s'\n"
        "body = json.dumps({'success': True, 'trajectories': [],"
        " 'session_uid': 'in', 'reward': 1.0, 'error': None,"
        " 'elapsed': 0.1}).encode()\n"
        "req = urllib.request.Request(url, data=body, method='POST',"
        " headers={'Content-Type': 'application/json'})\n"
        "print(urllib.request.urlopen(req).read().decode())\n" % eid)
    try:
        st, _, out = srv.post("/v1/sandboxes/%s/exec" % box["id"],
                              {"argv": ["python3", "-c", code]})
        assert st == 200 and out["exit_code"] == 0, out
        assert json.loads(out["stdout"]) == {"status": "stored",
                                             "execution_id": eid}
    finally:
        srv.request("DELETE", "/v1/sandboxes/" + box["id"])
    st, data = http_json("GET", srv.url + "/llm/rllm/results/" + eid)
    assert st == 200 and data["result"]["session_uid"] == "in"


def test_an_execution_result_reads_through_the_rllm_route(srv, faulty):
    eid = submit(srv, agent=faulty, entry="faulty:ok", task={"r": 0.25})
    ex = wait(srv, eid)
    st, data = http_json("GET", srv.url + "/llm/rllm/results/" + eid)
    assert st == 200 and data["result"] == ex["result"]


# ---- a crash in the middle ----

def sandbox_cgroups(pid):
    found = []
    for root, dirs, _ in os.walk("/sys/fs/cgroup"):
        found += [d for d in dirs if d.startswith("s%d-" % pid)]
    return found


def test_kill_9_then_restart_keeps_results_and_reports_the_rest(mock):
    state = tempfile.mkdtemp(prefix="sbx-exec-crash-")
    try:
        srv = server(mock, state).__enter__()
        st, ag = upload(srv, tar_of({"faulty.py": FAULTY}))
        assert st == 201
        ids = [submit(srv, agent=ag["id"], entry="faulty:slow",
                      task={"n": i, "sleep": 0.4}, retries=i % 2,
                      pool={"size": 4})
               for i in range(100)]
        deadline = time.monotonic() + GUARD_S
        while True:
            st, _, lst = srv.get("/v1/executions?status=completed&limit=200")
            if len(lst["executions"]) >= 12:
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        old_pid = srv.proc.pid
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        srv.stop()
        srv2 = server(mock, state).__enter__()
        try:
            st, _, done = srv2.get("/v1/executions?status=completed&limit=200")
            finished = {e["id"]: e for e in done["executions"]}
            assert len(finished) >= 12
            for e in finished.values():
                n = json.loads(json.dumps(e))["result"]["reward"]
                assert e["result"]["success"] is True
                assert n == float(ids.index(e["id"]))
            lost = []
            for i, eid in enumerate(ids):
                ex = wait(srv2, eid)
                if eid in finished:
                    assert ex["result"] == finished[eid]["result"]
                    assert ex["finished_at"] == finished[eid]["finished_at"]
                    continue
                if ex["status"] == "lost":
                    lost.append(eid)
                    assert i % 2 == 0  # only those with no retry left
                    assert ex["error_code"] == "lost"
                    assert "the server stopped" in ex["result"]["error"]
                else:
                    assert ex["status"] == "completed", ex
                    assert ex["result"]["reward"] == float(i)
            # Nothing of the first server's sandboxes is left.
            assert sandbox_cgroups(old_pid) == []
        finally:
            srv2.__exit__(None, None, None)
    finally:
        subprocess.run(["rm", "-rf", state])


# ---- the Python client ----

def test_client_uploads_submits_and_collects_a_batch(srv):
    with Client(srv.url) as c:
        agent = c.agents.upload(MATH_AGENT, name="math")
        tasks = [math_task(i) for i in range(200, 212)]
        ids = [c.executions.submit(agent["id"], t, agent_config={
            "model_id": "mock-model"}, pool={"size": 3}) for t, _ in tasks]
        got = {ex["id"]: ex for ex in c.executions.as_completed(ids,
                                                                timeout=GUARD_S)}
        assert sorted(got) == sorted(ids)
        for eid, (task, right) in zip(ids, tasks):
            assert got[eid]["result"]["reward"] == (1.0 if right else 0.0)
        ep = c.executions.episode(ids[0])
        assert len(ep["traces"]) == 2
        assert ep["traces"][0]["completion_token_ids"]
        assert c.executions.wait(ids[1])["status"] == "completed"
        assert any(e["id"] == ids[2] for e in
                   c.executions.list(status="completed", limit=10000))


def test_async_client_as_completed(srv, faulty):
    async def main():
        async with AsyncClient(srv.url) as c:
            ids = await asyncio.gather(*[
                c.executions.submit(faulty, {"n": i, "sleep": 0.05 * (i % 3)},
                                    entry="faulty:slow")
                for i in range(9)])
            seen = []
            async for ex in c.executions.as_completed(ids, timeout=GUARD_S):
                seen.append((ex["id"], ex["result"]["reward"]))
            assert sorted(seen) == sorted((eid, float(i))
                                          for i, eid in enumerate(ids))
            ex = await c.executions.wait(ids[0])
            assert ex["status"] == "completed"
    asyncio.run(main())


WORKER = r"""
# A stand-in for rLLM's worker_server.py (which needs aiohttp): the same
# routes, the same slug and result URL building, stdlib only.
import argparse, base64, importlib, json, sys, threading, time, uuid
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

p = argparse.ArgumentParser()
p.add_argument("--agent-module"); p.add_argument("--agent-func")
p.add_argument("--port", type=int); p.add_argument("--agent-dir")
a = p.parse_args()
sys.path.insert(0, a.agent_dir)
func = getattr(importlib.import_module(a.agent_module), a.agent_func)

def slug(meta):
    body = json.dumps(meta, separators=(",", ":"), sort_keys=True)
    return "rllm1:" + base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")

def proxied(url, meta):
    base = url.rstrip("/")
    v1 = base.endswith("/v1")
    if v1:
        base = base[:-3]
    return base + "/meta/" + slug(meta) + ("/v1" if v1 else "")

def run(body):
    eid = body["execution_id"]
    uid = str(uuid.uuid4())
    meta = {"session_uids": [uid], "session_name": "sandbox-" + eid[:8]}
    config = dict(body.get("agent_config") or {})
    config["base_url"] = proxied(body["proxy_url"], meta)
    config["session_uid"] = uid
    t0 = time.time()
    trajs = func(body["task"], config)
    result = {"success": True, "trajectories": trajs, "session_uid": uid,
              "reward": None, "error": None, "elapsed": time.time() - t0}
    base = body["proxy_url"].rstrip("/")
    if base.endswith("/v1"):
        base = base[:-3]
    req = urllib.request.Request(base + "/rllm/results/" + eid,
                                 data=json.dumps(result).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=30).read()

class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def reply(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        self.reply(200, {"status": "ok"})
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        threading.Thread(target=run, args=(body,)).start()
        self.reply(202, {"status": "accepted",
                         "execution_id": body["execution_id"]})

ThreadingHTTPServer(("0.0.0.0", a.port), H).serve_forever()
"""


def test_rllm_orchestration_through_the_sandbox_adapter(srv, tmp_path):
    worker = tmp_path / "worker_server.py"
    worker.write_text(WORKER)
    with Client(srv.url) as c:
        sb = create_sbx_sandbox(name="task-1", image="python:3.11-slim",
                                client=c, llm=True)
        try:
            sb.upload_dir(MATH_AGENT, "/app/agent")
            sb.upload_file(str(worker), "/app/runner/worker_server.py")
            assert sb.exec("python -c 'import sys; print(sys.version_info[0])'"
                           ).strip() == "3"
            assert "agent.py" in sb.exec("ls /app/agent")
            with pytest.raises(RuntimeError):
                sb.exec("exit 4")
            sb.start_agent_process(
                "python /app/runner/worker_server.py --agent-module agent "
                "--agent-func rollout --port 8100 --agent-dir /app/agent",
                8100)
            url, headers = sb.get_endpoint(8100)
            eid = str(uuid.uuid4())
            task, _ = math_task(7)
            # The proxy URL a sandbox reaches the gateway by.
            proxy = sb.sandbox.llm_base_url
            body = json.dumps({"execution_id": eid, "proxy_url": proxy,
                               "task": task,
                               "agent_config": {"model_id": "mock-model"}})
            req = urllib.request.Request(url + "/execute", data=body.encode(),
                                         headers=dict(headers, **{
                                             "Content-Type":
                                             "application/json"}))
            with urllib.request.urlopen(req, timeout=30) as r:
                assert r.status == 202
                assert json.loads(r.read()) == {"status": "accepted",
                                                "execution_id": eid}
            result_url = rllm_result_url(srv.url + "/llm/v1", eid)
            deadline = time.monotonic() + GUARD_S
            while True:
                st, data = http_json("GET", result_url)
                if st == 200:
                    break
                assert st == 202 and data["status"] == "pending"
                assert time.monotonic() < deadline
                time.sleep(0.1)
            res = data["result"]
            assert res["success"] is True
            assert res["trajectories"][0]["reward"] == 1.0
            st, _, tr = srv.get("/v1/traces?session=" + res["session_uid"])
            assert len(tr["traces"]) == 2
        finally:
            sb.close()

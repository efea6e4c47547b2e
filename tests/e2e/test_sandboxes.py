"""Stateful sandboxes (/v1/sandboxes) end to end: lifecycle, reaping, exec
(plain, streamed, background), files, REPLs, isolation between sandboxes,
and what a server restart leaves behind. The attacks on the file and
archive APIs are in test_sandboxes_attacks.py, which shares the helpers
below.

Every wait is a poll with a hang guard; no test asserts how long anything
took.
"""
import hashlib
import http.client
import json
import os
import signal
import socket
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import host_cmdline_pids, unique_marker
from sbxserver import SbxServer

# Hang guard for one request. Each request here normally answers in
# milliseconds; the guard only turns a hang into a failure.
GUARD_S = 20


# ---- helpers shared with test_sandboxes_attacks.py ----

def raw_request(srv, method, path, body=None, headers=None, guard_s=GUARD_S):
    """One request over a fresh connection; returns (status, headers with
    lower-case names, body bytes). Nothing is decoded or normalised, so
    paths holding '..' reach the server as written."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=guard_s)
    try:
        hdrs = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        return (resp.status, {k.lower(): v for k, v in resp.getheaders()},
                data)
    finally:
        conn.close()


def as_json(status, headers, data):
    assert headers.get("content-type", "").startswith("application/json"), \
        (status, headers, data[:300])
    return json.loads(data)


def check_error(status, headers, data, want_status, want_code=None):
    """Asserts an error reply {"error": {"code", "message"}}; returns it."""
    body = as_json(status, headers, data)
    assert status == want_status, (status, body)
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"code", "message"}, err
    assert isinstance(err["message"], str) and err["message"], err
    if want_code:
        assert err["code"] == want_code, err
    return err


def poll(what, fn, guard_s=15, step_s=0.1):
    """Calls fn until it returns something true; returns that. guard_s is
    a hang guard, not a timing expectation."""
    deadline = time.monotonic() + guard_s
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError("still waiting after %ss for %s"
                                 % (guard_s, what))
        time.sleep(step_s)


def quote_path(rel):
    return urllib.parse.quote(rel, safe="/")


class Box:
    """One stateful sandbox on srv."""

    def __init__(self, srv, info):
        self.srv = srv
        self.info = info
        self.id = info["id"]
        self.base = "/v1/sandboxes/" + self.id

    def call(self, method, sub="", body=None, guard_s=GUARD_S, **kw):
        return raw_request(self.srv, method, self.base + sub, body,
                           guard_s=guard_s, **kw)

    def exec_raw(self, body, guard_s=GUARD_S):
        return self.call("POST", "/exec", body, guard_s=guard_s)

    def exec(self, guard_s=GUARD_S, **body):
        """Runs a command; asserts a 200 and returns the result."""
        status, headers, data = self.exec_raw(body, guard_s)
        res = as_json(status, headers, data)
        assert status == 200, (status, res)
        return res

    def sh(self, cmd, **kw):
        """Runs a shell command that must succeed; returns its stdout."""
        res = self.exec(cmd=cmd, **kw)
        assert res["status"] == "ok", res
        return res["stdout"]

    def put(self, rel, data, guard_s=GUARD_S):
        return self.call("PUT", "/files/" + rel, data, guard_s=guard_s)

    def put_abs(self, path, data, guard_s=GUARD_S):
        return self.call("PUT", "/files?path=" + quote_path(path), data,
                         guard_s=guard_s)

    def get(self, rel, guard_s=GUARD_S):
        return self.call("GET", "/files/" + rel, guard_s=guard_s)

    def get_abs(self, path, guard_s=GUARD_S):
        return self.call("GET", "/files?path=" + quote_path(path),
                         guard_s=guard_s)

    def repl(self, code, language="python", guard_s=GUARD_S, **kw):
        body = dict(language=language, code=code, **kw)
        status, headers, data = self.call("POST", "/repl", body,
                                          guard_s=guard_s)
        res = as_json(status, headers, data)
        assert status == 200, (status, res)
        return res

    def describe(self):
        return self.call("GET")

    def delete(self):
        return self.call("DELETE")


def create(srv, **body):
    """POST /v1/sandboxes; returns (status, parsed body)."""
    status, headers, data = raw_request(srv, "POST", "/v1/sandboxes", body)
    return status, as_json(status, headers, data)


class Boxes:
    """Makes sandboxes and deletes whatever is left of them at teardown."""

    def __init__(self, srv):
        self.srv = srv
        self.made = []

    def __call__(self, **body):
        status, info = create(self.srv, **body)
        assert status == 201, (status, info)
        box = Box(self.srv, info)
        self.made.append(box)
        return box

    def cleanup(self):
        for box in self.made:
            try:
                box.delete()
            except OSError:
                pass


def wait_gone(box, guard_s=15):
    """Polls until the sandbox answers 404; returns the error."""
    def gone():
        status, headers, data = box.describe()
        return (status, headers, data) if status == 404 else None
    status, headers, data = poll("sandbox %s to be gone" % box.id, gone,
                                 guard_s)
    return check_error(status, headers, data, 404, "not_found")


def host_pids_gone(marker, argv0, guard_s=10):
    poll("no host process with '%s' in its command line" % marker,
         lambda: not host_cmdline_pids(marker, argv0), guard_s)


def cgroup_mounts():
    """controller name -> (mount point, mount root) of each cgroup
    hierarchy; the cgroup2 one under ''."""
    mounts = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            sep = parts.index("-")
            fstype, opts = parts[sep + 1], parts[sep + 3]
            if fstype == "cgroup2":
                mounts.setdefault("", (parts[4], parts[3]))
            elif fstype == "cgroup":
                for opt in opts.split(","):
                    mounts.setdefault(opt, (parts[4], parts[3]))
    return mounts


def sbx_cgroup_dirs(pid):
    """Host directories of the cgroups sbx made for the process pid (those
    with an 'sbx' component in their path)."""
    mounts = cgroup_mounts()
    dirs = []
    with open("/proc/%d/cgroup" % pid) as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if "/sbx/" not in path + "/":
                continue
            key = ctrls.split(",")[0] if ctrls else ""
            if key not in mounts:
                continue
            mnt, root = mounts[key]
            if root != "/" and path.startswith(root):
                path = path[len(root):]
            dirs.append(mnt + path)
    return dirs


def server_cgroup_dirs(srv):
    """The pids-hierarchy cgroup directories sbx names after this server
    ('s<server pid>-<n>' under sbx/), wherever they are."""
    mounts = cgroup_mounts()
    if "pids" not in mounts:
        return []
    prefix = "s%d-" % srv.proc.pid
    found = []
    for dirpath, dirnames, _ in os.walk(mounts["pids"][0]):
        for d in dirnames:
            if d.startswith(prefix) and os.path.basename(dirpath) == "sbx":
                found.append(os.path.join(dirpath, d))
    return found


def start_marked_sleep(box, marker, seconds="1000"):
    """Starts `sleep <seconds>.<marker>` in the background of box; returns
    (background id, host pid) once the host sees it."""
    arg = "%s.%s" % (seconds, marker)
    status, headers, data = box.exec_raw({"argv": ["sleep", arg],
                                          "background": True})
    proc = as_json(status, headers, data)
    assert status == 201 and proc["status"] == "running", (status, proc)
    pids = poll("the sandbox's sleep on the host",
                lambda: host_cmdline_pids(marker, "sleep"))
    assert len(pids) == 1, pids
    return proc["id"], pids[0]


# ---- fixtures ----

@pytest.fixture(scope="module")
def srv():
    # Big enough for the 100 MiB round trip.
    with SbxServer(extra_args=["--max-upload", "200M"]) as s:
        yield s
        assert s.proc.poll() is None, "the server died:\n" + s.read_log()


@pytest.fixture
def boxes(srv):
    made = Boxes(srv)
    yield made
    made.cleanup()


@pytest.fixture
def box(boxes):
    return boxes()


# ---- lifecycle ----

def test_create_get_list_delete(srv, boxes):
    tag = unique_marker()
    a = boxes(labels={"suite": tag, "role": "a"},
              limits={"memory_mb": 256, "pids": 64}, idle_timeout_s=300,
              max_lifetime_s=600)
    b = boxes(labels={"suite": tag, "role": "b"})
    info = a.info
    assert info["id"].startswith("sb-"), info
    assert info["status"] == "running", info
    assert info["labels"] == {"suite": tag, "role": "a"}, info
    assert info["limits"]["memory_mb"] == 256, info
    assert info["limits"]["pids"] == 64, info
    assert info["idle_timeout_s"] == 300, info
    assert info["max_lifetime_s"] == 600, info
    assert info["background_processes"] == 0, info
    assert isinstance(info["idle_s"], int), info
    assert time.strptime(info["created_at"], "%Y-%m-%dT%H:%M:%SZ")

    got = as_json(*a.describe())
    assert got["id"] == a.id and got["labels"] == info["labels"], got

    def listed(query):
        status, headers, data = raw_request(srv, "GET",
                                            "/v1/sandboxes" + query)
        assert status == 200, data
        return sorted(s["id"] for s in as_json(status, headers,
                                               data)["sandboxes"])

    assert listed("?label=suite=%s" % tag) == sorted([a.id, b.id])
    role_a = listed("?label=role=a")
    assert a.id in role_a and b.id not in role_a, role_a
    both = listed("?label=suite")
    assert a.id in both and b.id in both
    assert listed("?label=suite=%s-not" % tag) == []
    everything = listed("")
    assert a.id in everything and b.id in everything

    status, headers, data = a.delete()
    assert status == 200, data
    assert as_json(status, headers, data) == {"id": a.id, "deleted": True}
    err = wait_gone(a)
    assert "deleted" in err["message"], err
    assert listed("?label=suite=%s" % tag) == [b.id]
    # Deleting again, or using it, says the same.
    err = check_error(*a.delete(), 404, "not_found")
    assert "deleted" in err["message"], err
    status, headers, data = a.exec_raw({"cmd": "true"})
    err = check_error(status, headers, data, 404, "not_found")
    assert "deleted" in err["message"], err


@pytest.mark.parametrize("body,field", [
    ({"bogus": 1}, "bogus"),
    ({"limits": {"memory_mb": 64, "cpus": 4096}}, "cpus"),
    ({"limits": {"memory_mb": 64, "gpus": 1}}, "gpus"),
    ({"limits": {"memory_mb": -1}}, "memory_mb"),
    ({"limits": {"memory_mb": 1 << 30}}, "memory_mb"),
    ({"limits": "big"}, "limits"),
    ({"env": {"A": 1}}, "A"),
    ({"env": {"A=B": "x"}}, "A=B"),
    ({"labels": {"k": 5}}, "k"),
    ({"labels": ["k"]}, "labels"),
    ({"idle_timeout_s": -1}, "idle_timeout_s"),
    ({"idle_timeout_s": "10"}, "idle_timeout_s"),
    ({"max_lifetime_s": 10 ** 9}, "max_lifetime_s"),
], ids=lambda v: json.dumps(v)[:30] if isinstance(v, dict) else v)
def test_create_rejects_bad_fields(srv, body, field):
    before = len(as_json(*raw_request(srv, "GET", "/v1/sandboxes"))
                 ["sandboxes"])
    status, headers, data = raw_request(srv, "POST", "/v1/sandboxes", body)
    err = check_error(status, headers, data, 422, "unprocessable")
    assert field in err["message"], err
    after = len(as_json(*raw_request(srv, "GET", "/v1/sandboxes"))
                ["sandboxes"])
    assert after <= before, "a refused create left a sandbox behind"


def test_unknown_sandbox_is_404(srv):
    for sid in ["sb-nothere", "x" * 63]:
        status, headers, data = raw_request(srv, "GET", "/v1/sandboxes/" + sid)
        err = check_error(status, headers, data, 404, "not_found")
        assert "earlier run" not in err["message"], err


@pytest.fixture(scope="module")
def capped():
    with SbxServer(extra_args=["--max-sandboxes", "2"]) as s:
        yield s


def delete_all(srv):
    body = as_json(*raw_request(srv, "GET", "/v1/sandboxes"))
    for info in body["sandboxes"]:
        raw_request(srv, "DELETE", "/v1/sandboxes/" + info["id"])
    poll("an empty sandbox list",
         lambda: not as_json(*raw_request(srv, "GET", "/v1/sandboxes"))
         ["sandboxes"])


def test_cap_on_live_sandboxes(capped):
    delete_all(capped)
    first = [create(capped) for _ in range(2)]
    assert [s for s, _ in first] == [201, 201], first
    status, body = create(capped)
    assert status == 429, body
    assert body["error"]["code"] == "too_many_sandboxes", body
    # Once one is gone, there is room again.
    one = Box(capped, first[0][1])
    assert one.delete()[0] == 200
    wait_gone(one)
    status, body = create(capped)
    assert status == 201, body
    delete_all(capped)


def test_deleted_sandbox_is_gone_when_delete_answers(capped):
    """DELETE answers {"deleted": true}; from then on the sandbox must not
    be described as running, listed, or counted against the cap. (Five
    rounds: the window, if there is one, is short.)"""
    delete_all(capped)
    status, body = create(capped)
    assert status == 201, body
    keep = Box(capped, body)
    for _ in range(5):
        status, body = create(capped)
        assert status == 201, ("the cap still counts a deleted sandbox",
                               body)
        victim = Box(capped, body)
        status, headers, data = victim.delete()
        assert status == 200, data
        status, headers, data = victim.describe()
        body = as_json(status, headers, data)
        assert status == 404, ("GET right after DELETE", status, body)
        assert "deleted" in body["error"]["message"], body
        ids = [s["id"] for s in as_json(*raw_request(
            capped, "GET", "/v1/sandboxes"))["sandboxes"]]
        assert ids == [keep.id], ("listed right after DELETE", ids)
    delete_all(capped)


def test_idle_sandbox_is_reaped(srv, boxes):
    box = boxes(idle_timeout_s=2)
    assert box.info["idle_timeout_s"] == 2
    assert box.sh("echo alive") == "alive\n"
    # Describing a sandbox does not count as using it.
    err = wait_gone(box, guard_s=20)
    assert "idle" in err["message"], err
    assert "2 s" in err["message"], err


def test_running_exec_keeps_sandbox_from_idle_reaping(srv, boxes):
    box = boxes(idle_timeout_s=1)
    res = box.exec(cmd="sleep 3; echo done")
    assert res["status"] == "ok" and res["stdout"] == "done\n", res
    err = wait_gone(box, guard_s=20)
    assert "idle" in err["message"], err


def test_max_lifetime_ends_sandbox_and_its_exec(srv, boxes):
    box = boxes(max_lifetime_s=2)
    assert box.info["max_lifetime_s"] == 2
    # Busy the whole time: the lifetime ends it anyway, and the exec in
    # flight hears why.
    status, headers, data = box.exec_raw({"cmd": "sleep 30"}, guard_s=20)
    err = check_error(status, headers, data, 410, "gone")
    assert "maximum lifetime" in err["message"], err
    err = wait_gone(box)
    assert "maximum lifetime" in err["message"], err


# ---- deleting kills everything ----

def test_delete_kills_processes_and_removes_cgroups():
    marker = "777" + unique_marker()
    # No warm sandboxes: their cgroups would stay in the before/after count.
    with SbxServer(extra_args=["--warm", "0"]) as srv:
        boxes = Boxes(srv)
        box = boxes()
        _, pid = start_marked_sleep(box, marker)
        dirs = sbx_cgroup_dirs(pid)
        mine = server_cgroup_dirs(srv)
        if not dirs:
            print("the sandbox's processes are in no sbx cgroup here; "
                  "only the processes are checked")
        for d in dirs:
            assert os.path.isdir(d), d
        assert box.delete()[0] == 200
        host_pids_gone(marker, "sleep")
        for d in dirs:
            poll("cgroup %s to be removed" % d, lambda: not os.path.exists(d))
        left = set(server_cgroup_dirs(srv)) & set(mine)
        assert not left, left
        assert srv.proc.poll() is None, srv.read_log()


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_restart_kills_sandboxes_and_old_ids_say_so(how):
    marker = "888" + unique_marker()
    a = SbxServer().__enter__()
    try:
        box = Box(a, create(a)[1])
        _, pid = start_marked_sleep(box, marker)
        dirs = sbx_cgroup_dirs(pid)
        a.proc.send_signal(getattr(signal, how))
        a.proc.wait(timeout=15)
        host_pids_gone(marker, "sleep")
    finally:
        a.stop()
    with SbxServer() as b:
        status, headers, data = raw_request(b, "GET", box.base)
        err = check_error(status, headers, data, 404, "not_found")
        assert box.id in err["message"], err
        assert "earlier run" in err["message"], err
        assert "restart" in err["message"], err
        ids = [s["id"] for s in as_json(*raw_request(
            b, "GET", "/v1/sandboxes"))["sandboxes"]]
        assert box.id not in ids
        # Nothing of the old sandbox stays on the host, not even its
        # cgroups once a new server runs.
        for d in dirs:
            poll("cgroup %s of the killed server's sandbox to be removed"
                 % d, lambda: not os.path.exists(d))


# ---- exec ----

def test_exec_argv_and_cmd(box):
    res = box.exec(argv=["python3", "-c", "import sys; print(sys.argv[1:])",
                         "a b", "$HOME", "*"])
    assert res["status"] == "ok", res
    assert res["exit_code"] == 0 and res["signal"] is None, res
    assert res["stdout"] == "['a b', '$HOME', '*']\n", res
    assert res["stderr"] == "" and res["oom_killed"] is False, res
    assert res["output_truncated"] is False, res
    assert isinstance(res["wall_ms"], int) and isinstance(res["cpu_ms"], int)
    res = box.exec(cmd="echo $((6*7)) && pwd && echo $HOME && id -u && "
                       "echo err >&2")
    assert res["stdout"] == "42\n/work\n/home/sandbox\n1000\n", res
    assert res["stderr"] == "err\n", res


def test_exec_cwd_env_stdin(boxes):
    box = boxes(env={"FROM_CREATE": "c", "BOTH": "create"})
    res = box.exec(cmd="pwd; echo $FROM_CREATE $BOTH $FROM_EXEC",
                   cwd="/tmp", env={"BOTH": "exec", "FROM_EXEC": "e x"})
    assert res["stdout"] == "/tmp\nc exec e x\n", res
    box.sh("mkdir -p /work/sub/dir")
    assert box.sh("pwd", cwd="/work/sub/dir") == "/work/sub/dir\n"
    res = box.exec(argv=["python3", "-c",
                         "import sys; d = sys.stdin.read(); "
                         "print(len(d), repr(d[-6:]))"],
                   stdin="line1\nline2\n" * 1000 + "é end\n")
    assert res["stdout"] == "12006 'é end\\n'\n", res
    # Without stdin, a reader sees end of file at once.
    assert box.sh("cat; echo eof") == "eof\n"


def test_exec_stdin_with_nul_byte(box):
    """"\u0000" is valid JSON, and stdin is bytes for the program."""
    status, headers, data = box.exec_raw({
        "argv": ["python3", "-c",
                 "import sys; print(sys.stdin.buffer.read().hex())"],
        "stdin": "a\x00b"})
    res = as_json(status, headers, data)
    assert status == 200, res
    assert res["stdout"] == "610062\n", res


def test_exec_bad_cwd_says_why(box):
    """A cwd that cannot be entered must not look like a silent exit 127:
    either the request is refused or stderr names the directory."""
    status, headers, data = box.exec_raw({"cmd": "pwd",
                                          "cwd": "/no/such/dir"})
    body = as_json(status, headers, data)
    if status == 200:
        assert body["status"] != "ok", body
        assert "/no/such/dir" in body["stderr"], body
    else:
        assert status in (400, 404, 422), body
        assert "/no/such/dir" in body["error"]["message"], body


def test_exec_nonzero_signal_timeout(box):
    res = box.exec(cmd="echo partial; exit 3")
    assert res["status"] == "nonzero_exit" and res["exit_code"] == 3, res
    assert res["stdout"] == "partial\n", res
    res = box.exec(cmd="kill -SEGV $$")
    assert res["status"] == "signaled" and res["signal"] == 11, res
    assert res["exit_code"] is None, res
    res = box.exec(cmd="echo started; sleep 30", timeout_s=0.5)
    assert res["status"] == "time_limit", res
    assert res["exit_code"] is None and res["signal"] == 9, res
    assert res["stdout"] == "started\n", res
    res = box.exec(argv=["/no/such/program"])
    assert res["status"] == "nonzero_exit" and res["exit_code"] == 127, res
    assert "No such file or directory" in res["stderr"], res
    # The sandbox goes on after all of these.
    assert box.sh("echo still") == "still\n"


@pytest.mark.parametrize("body,field", [
    ({}, "argv"),
    ({"argv": ["true"], "cmd": "true"}, "argv"),
    ({"argv": []}, "argv"),
    ({"argv": ["echo", 5]}, "argv"),
    ({"cmd": 5}, "cmd"),
    ({"cmd": "true", "cwd": 5}, "cwd"),
    ({"cmd": "true", "stdin": 5}, "stdin"),
    ({"cmd": "true", "timeout_s": -1}, "timeout_s"),
    ({"cmd": "true", "env": {"A": 1}}, "A"),
    ({"cmd": "true", "stream": True, "background": True}, "stream"),
], ids=lambda v: json.dumps(v)[:30] if isinstance(v, dict) else v)
def test_exec_rejects_bad_fields(box, body, field):
    err = check_error(*box.exec_raw(body), 422, "unprocessable")
    assert field in err["message"], err


def test_sixteen_concurrent_execs(box):
    """Each exec waits until all 16 have started, so they only finish if
    the sandbox really runs them at once."""
    box.sh("mkdir /work/barrier")
    prog = ("import os, sys, time\n"
            "i = sys.argv[1]\n"
            "open('/work/barrier/' + i, 'w').close()\n"
            "guard = time.monotonic() + 15\n"
            "while len(os.listdir('/work/barrier')) < 16 and "
            "time.monotonic() < guard:\n"
            "    time.sleep(0.02)\n"
            "print(i, len(os.listdir('/work/barrier')), int(i) ** 2)\n")

    def one(i):
        return box.exec(argv=["python3", "-c", prog, str(i)], guard_s=40)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(16)))
    for i, res in enumerate(results):
        assert res["status"] == "ok", res
        assert res["stdout"] == "%d 16 %d\n" % (i, i * i), res


def stream_exec(srv, box, body, guard_s=GUARD_S):
    """Starts a streamed exec; returns (connection, response)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=guard_s)
    conn.request("POST", box.base + "/exec",
                 body=json.dumps(dict(body, stream=True)),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    assert resp.getheader("Content-Type", "").startswith(
        "application/x-ndjson"), resp.getheaders()
    assert resp.getheader("Transfer-Encoding") == "chunked", \
        resp.getheaders()
    return conn, resp


def read_event(resp):
    line = resp.readline()
    assert line.endswith(b"\n"), line
    return json.loads(line)


def test_stream_events_then_exit(srv, box):
    conn, resp = stream_exec(srv, box, {
        "cmd": "for i in 1 2 3; do echo $i; sleep 0.3; done; echo bye >&2"})
    try:
        events = []
        while True:
            line = resp.readline()
            if not line:
                break
            events.append(json.loads(line))
    finally:
        conn.close()
    assert [e["type"] for e in events] == \
        ["stdout", "stdout", "stdout", "stderr", "exit"], events
    assert [e["data"] for e in events[:4]] == ["1\n", "2\n", "3\n", "bye\n"]
    ex = events[-1]
    assert ex["status"] == "ok" and ex["exit_code"] == 0, ex
    assert "stdout" not in ex and "stderr" not in ex, ex
    assert {"signal", "wall_ms", "cpu_ms", "oom_killed",
            "output_truncated"} <= set(ex), ex


def test_stream_delivers_output_before_exit(srv, box):
    """The command prints, then waits for a file the test writes only after
    reading that print: buffered until exit, the stream would stall here
    (the command gives up after 20 s, the read guard is 10 s)."""
    cmd = ("echo ready; for i in $(seq 200); do [ -e /work/gate ] && break; "
           "sleep 0.1; done; [ -e /work/gate ] && echo through")
    conn, resp = stream_exec(srv, box, {"cmd": cmd}, guard_s=10)
    try:
        assert read_event(resp) == {"type": "stdout", "data": "ready\n"}
        assert box.put("gate", b"go")[0] == 201
        assert read_event(resp) == {"type": "stdout", "data": "through\n"}
        ex = read_event(resp)
        assert ex["type"] == "exit" and ex["status"] == "ok", ex
        assert resp.readline() == b""
    finally:
        conn.close()


def test_stream_nonzero_and_timeout(srv, box):
    conn, resp = stream_exec(srv, box, {"cmd": "echo x; sleep 30",
                                        "timeout_s": 0.5})
    try:
        assert read_event(resp) == {"type": "stdout", "data": "x\n"}
        ex = read_event(resp)
        assert ex["type"] == "exit" and ex["status"] == "time_limit", ex
    finally:
        conn.close()


def test_background_process_output_and_signal(box):
    prog = ("import time\n"
            "for i in range(100000):\n"
            "    print(i, flush=True)\n"
            "    time.sleep(0.05)\n")
    status, headers, data = box.exec_raw({"argv": ["python3", "-c", prog],
                                          "background": True})
    proc = as_json(status, headers, data)
    assert status == 201, proc
    assert proc["status"] == "running" and proc["argv"][0] == "python3", proc
    n = proc["id"]

    def output():
        got = as_json(*box.call("GET", "/processes/%d" % n))
        return got if got["stdout"].count("\n") >= 3 else None
    got = poll("three lines of background output", output)
    assert got["stdout"].startswith("0\n1\n2\n"), got
    assert got["status"] == "running" and got["stderr"] == "", got
    assert got["output_truncated"] is False, got

    procs = as_json(*box.call("GET", "/processes"))["processes"]
    assert [p["id"] for p in procs] == [n], procs
    assert procs[0]["status"] == "running", procs
    assert isinstance(procs[0]["pid"], int) and procs[0]["pid"] > 1, procs
    assert as_json(*box.describe())["background_processes"] == 1

    status, headers, data = box.call("POST", "/processes/%d/signal" % n,
                                     {"signal": 15})
    assert status == 200, data

    def exited():
        got = as_json(*box.call("GET", "/processes/%d" % n))
        return got if got["status"] == "exited" else None
    got = poll("the process to exit", exited)
    assert got["result"]["status"] == "signaled", got
    assert got["result"]["signal"] == 15, got
    assert got["stdout"].startswith("0\n1\n2\n"), got
    assert as_json(*box.describe())["background_processes"] == 0
    check_error(*box.call("GET", "/processes/%d" % (n + 1000)), 404,
                "not_found")
    check_error(*box.call("POST", "/processes/%d/signal" % (n + 1000),
                          {"signal": 15}), 404, "not_found")
    check_error(*box.call("POST", "/processes/%d/signal" % n,
                          {"signal": 0}), 422, "unprocessable")


def test_delete_during_running_exec(boxes):
    box = boxes()
    marker = unique_marker()
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(box.exec_raw, {"argv": ["sleep", "30.%s" % marker]},
                          20)
        poll("the exec's sleep on the host",
             lambda: host_cmdline_pids(marker, "sleep"))
        assert box.delete()[0] == 200
        status, headers, data = fut.result(timeout=25)
    body = as_json(status, headers, data)
    if status == 200:
        assert body["status"] in ("signaled", "sandbox_error"), body
    else:
        err = check_error(status, headers, data, 410, "gone")
        assert "deleted" in err["message"], err
    host_pids_gone(marker, "sleep")


def test_exec_large_output_is_complete(box):
    """A few MB of output, under the 8 MB cap, must come back whole and
    leave the sandbox usable."""
    for round_ in range(6):
        try:
            res = box.exec(cmd="head -c 6000000 /dev/zero | tr '\\0' a; "
                               "echo done >&2", guard_s=10)
        except OSError as e:
            pytest.fail("round %d: the exec did not answer: %r" % (round_, e))
        meta = {k: v for k, v in res.items() if k not in ("stdout", "stderr")}
        assert res["status"] == "ok", meta
        assert len(res["stdout"]) == 6000000, (
            "round %d: %d of 6000000 bytes of stdout came back"
            % (round_, len(res["stdout"])), meta)
        assert res["stdout"] == "a" * 6000000
        assert res["stderr"] == "done\n", res["stderr"]


# ---- files ----

def test_file_round_trip_text_and_binary(box):
    text = "héllo wörld\n".encode()
    status, headers, data = box.put("dir/sub/hello.txt", text)
    assert status == 201, data
    assert as_json(status, headers, data) == {"path": "dir/sub/hello.txt",
                                              "size": len(text)}
    status, headers, data = box.get("dir/sub/hello.txt")
    assert status == 200 and data == text, (status, data)
    assert headers["content-type"] == "application/octet-stream", headers
    # The sandbox sees the same file, owned by its user.
    assert box.sh("cat /work/dir/sub/hello.txt; stat -c '%u %a' "
                  "/work/dir/sub/hello.txt") == text.decode() + "1000 644\n"

    binary = bytes(range(256)) * 64 + b"\r\n\x00\xff"
    assert box.put("bin.dat", binary)[0] == 201
    status, _, data = box.get("bin.dat")
    assert status == 200 and data == binary
    assert box.sh("sha256sum < bin.dat").split()[0] == \
        hashlib.sha256(binary).hexdigest()

    # A rewrite replaces the whole file; empty files work.
    assert box.put("bin.dat", b"short")[0] == 201
    assert box.get("bin.dat")[2] == b"short"
    assert box.put("empty", b"")[0] == 201
    status, _, data = box.get("empty")
    assert status == 200 and data == b""

    # Absolute paths through ?path=.
    assert box.put_abs("/tmp/abs.txt", b"abs")[0] == 201
    assert box.sh("cat /tmp/abs.txt") == "abs"
    assert box.get_abs("/tmp/abs.txt")[2] == b"abs"
    assert box.get_abs("/work/dir/sub/hello.txt")[2] == text

    # Files made by a command read back too.
    box.sh("printf 'from exec' > /work/made.txt")
    assert box.get("made.txt")[2] == b"from exec"


@pytest.mark.parametrize("size", [65537, (1 << 20) - 1, 3 * (1 << 20) + 1],
                         ids=["64KiB+1", "1MiB-1", "3MiB+1"])
def test_file_round_trip_sizes(boxes, size):
    box = boxes()
    data = os.urandom(size)
    status, headers, body = box.put("f.bin", data)
    assert status == 201, body
    assert as_json(status, headers, body)["size"] == size
    assert box.sh("sha256sum < f.bin").split()[0] == \
        hashlib.sha256(data).hexdigest()
    try:
        status, _, got = box.get("f.bin", guard_s=10)
    except OSError as e:
        pytest.fail("GET of a %d-byte file did not answer: %r" % (size, e))
    assert status == 200 and len(got) == size and got == data


def test_directory_listing(box):
    box.put("d/a.txt", b"aaa")
    box.put("d/sub/b.txt", b"b")
    box.sh("ln -s a.txt /work/d/link && chmod 600 /work/d/a.txt")
    status, headers, data = box.get("d")
    listing = as_json(status, headers, data)
    assert status == 200 and listing["path"] == "d", listing
    entries = {e["name"]: e for e in listing["entries"]}
    assert set(entries) == {"a.txt", "sub", "link"}, entries
    assert entries["a.txt"]["type"] == "file", entries
    assert entries["a.txt"]["size"] == 3 and entries["a.txt"]["mode"] == 0o600
    assert entries["sub"]["type"] == "dir", entries
    assert entries["link"]["type"] == "symlink", entries
    for e in entries.values():
        assert isinstance(e["mtime"], int) and e["mtime"] > 0, e
    # /work itself, with or without a path.
    for sub in ["/files", "/files/", "/files?path=/work"]:
        listing = as_json(*box.call("GET", sub))
        assert "d" in {e["name"] for e in listing["entries"]}, (sub, listing)
    listing = as_json(*box.get_abs("/"))
    assert {"work", "tmp", "etc", "usr"} <= \
        {e["name"] for e in listing["entries"]}, listing


def test_file_delete_and_missing(box):
    box.put("gone.txt", b"x")
    status, headers, data = box.call("DELETE", "/files/gone.txt")
    assert status == 200, data
    assert as_json(status, headers, data) == {"path": "gone.txt",
                                              "deleted": True}
    check_error(*box.get("gone.txt"), 404, "not_found")
    check_error(*box.call("DELETE", "/files/gone.txt"), 404, "not_found")
    check_error(*box.get("never/was/here.txt"), 404, "not_found")
    check_error(*box.get_abs("/no/such/file"), 404, "not_found")

    box.put("tree/a/b/c.txt", b"c")
    box.put("tree/d.txt", b"d")
    err = check_error(*box.call("DELETE", "/files/tree"), 409, "conflict")
    assert "not empty" in err["message"], err
    assert box.get("tree/d.txt")[2] == b"d"
    assert box.call("DELETE", "/files/tree?recursive=1")[0] == 200
    check_error(*box.get("tree"), 404, "not_found")
    assert box.sh("ls -A /work") == ""
    # A path through a file is not found either.
    box.put("plain", b"p")
    check_error(*box.get("plain/inside"), 404, "not_found")
    check_error(*box.put("plain/inside", b"x"), 404, "not_found")


def test_writing_past_the_disk_limit_is_413(boxes):
    box = boxes(limits={"disk_mb": 8})
    assert box.info["limits"]["disk_mb"] == 8
    status, headers, data = box.put("big.bin", os.urandom(16 << 20))
    err = check_error(status, headers, data, 413, "payload_too_large")
    assert "No space left" in err["message"], err
    # The sandbox goes on; with the partial file gone there is room again.
    box.call("DELETE", "/files/big.bin")
    assert box.put("small.txt", b"fits")[0] == 201
    assert box.get("small.txt")[2] == b"fits"
    # Code hits the same wall.
    res = box.exec(cmd="head -c 16M /dev/zero > /work/z")
    assert res["status"] == "nonzero_exit", res
    assert "No space left on device" in res["stderr"], res


def put_announced(srv, path, size, guard_s=GUARD_S):
    """Announces a PUT of size bytes with Expect: 100-continue and returns
    the server's first answer (status line, headers, body) without sending
    the body unless told to continue."""
    with socket.create_connection(("127.0.0.1", srv.port),
                                  timeout=guard_s) as sock:
        sock.sendall(("PUT %s HTTP/1.1\r\nHost: x\r\n"
                      "Content-Length: %d\r\nExpect: 100-continue\r\n"
                      "Connection: close\r\n\r\n" % (path, size)).encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if data.startswith(b"HTTP/1.1 100"):
                return data.split(b"\r\n")[0], b"", b""
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], head, body


def test_upload_over_max_upload_is_413():
    with SbxServer(extra_args=["--max-upload", "1M"]) as s:
        box = Box(s, create(s)[1])
        for sub in ["/files/big.bin", "/archive?path=up"]:
            status, head, body = put_announced(s, box.base + sub, 2 << 20)
            assert status.startswith(b"HTTP/1.1 413"), (status, body)
            err = json.loads(body)["error"]
            assert err["code"] == "payload_too_large", err
            assert "1048576" in err["message"], err
        assert box.put("ok.bin", os.urandom(1 << 19))[0] == 201
        check_error(*box.get("big.bin"), 404, "not_found")


def test_disk_mb_300_allowed_with_max_upload_200m(srv, boxes):
    """The issue's own setting for the 100 MiB round trip: a server with
    --max-upload 200M must give a sandbox 300 MB of disk when asked."""
    status, body = create(srv, limits={"disk_mb": 300, "memory_mb": 1024})
    if status == 201:
        boxes.made.append(Box(srv, body))
    assert status == 201, body
    assert body["limits"]["disk_mb"] == 300, body


def test_file_round_trip_100mib(srv, boxes):
    status, body = create(srv, limits={"disk_mb": 300, "memory_mb": 1024})
    if status == 422:
        # See test_disk_mb_300_allowed_with_max_upload_200m; take the most
        # this server allows so the transfer itself is still tested.
        status, body = create(srv, limits={"disk_mb": 256,
                                           "memory_mb": 1024})
    assert status == 201, body
    box = Box(srv, body)
    boxes.made.append(box)
    h = hashlib.sha256()
    chunks = []
    for _ in range(100):
        chunk = os.urandom(1 << 20)
        h.update(chunk)
        chunks.append(chunk)
    data = b"".join(chunks)
    del chunks
    want = h.hexdigest()
    status, headers, reply = box.put("big.bin", data, guard_s=60)
    assert status == 201, reply
    assert as_json(status, headers, reply)["size"] == 100 << 20
    res = box.exec(cmd="sha256sum /work/big.bin", guard_s=60)
    assert res["stdout"].split()[0] == want, res
    try:
        status, _, got = box.get("big.bin", guard_s=30)
    except OSError as e:
        pytest.fail("GET of the 100 MiB file did not answer: %r" % e)
    assert status == 200, got[:300]
    assert len(got) == 100 << 20
    assert hashlib.sha256(got).hexdigest() == want


# ---- isolation between sandboxes ----

def test_sandboxes_are_isolated(boxes):
    a, b = boxes(), boxes()
    marker = unique_marker()
    assert a.put("only-a.txt", b"a's")[0] == 201
    a.sh("echo tmp > /tmp/only-a-tmp; echo home > ~/only-a-home")
    check_error(*b.get("only-a.txt"), 404, "not_found")
    check_error(*b.get_abs("/tmp/only-a-tmp"), 404, "not_found")
    check_error(*b.get_abs("/home/sandbox/only-a-home"), 404, "not_found")
    assert b.sh("ls -A /work /tmp /home/sandbox") == \
        "/home/sandbox:\n\n/tmp:\n\n/work:\n"

    start_marked_sleep(a, marker)
    # The marker comes in two halves so the scan does not find itself.
    scan = ["python3", "-c",
            "import os, sys\n"
            "m = (sys.argv[1] + sys.argv[2]).encode()\n"
            "for p in os.listdir('/proc'):\n"
            "    if p.isdigit():\n"
            "        try:\n"
            "            c = open('/proc/%s/cmdline' % p, 'rb').read()\n"
            "        except OSError:\n"
            "            continue\n"
            "        if m in c:\n"
            "            print(p, c.replace(b'\\0', b' ').decode())\n",
            marker[:4], marker[4:]]
    seen_in_a = a.exec(argv=scan)["stdout"]
    assert marker in seen_in_a, "the scan itself must work: " + seen_in_a
    assert b.exec(argv=scan)["stdout"] == ""
    # b cannot signal what it cannot see: every pid is its own.
    res = b.exec(cmd="kill -0 %s" % seen_in_a.split()[0])
    assert res["status"] == "nonzero_exit", res
    assert "No such process" in res["stderr"], res

    assert a.repl("secret = 'in a'\nsecret")["result"] == "'in a'"
    res = b.repl("secret")
    assert res["status"] == "error", res
    assert res["error"]["ename"] == "NameError", res


# ---- REPL ----

def test_repl_python_state_persists(box):
    res = box.repl("import math\nx = 41")
    assert res["status"] == "ok" and res["result"] is None, res
    assert res["execution_count"] == 1 and res["restarted"] is False, res
    assert res["context"] == "default" and res["language"] == "python", res
    assert box.repl("def f(k):\n    return x + k")["status"] == "ok"
    res = box.repl("print('side', f(0))\nf(1)")
    assert res["result"] == "42" and res["stdout"] == "side 41\n", res
    assert res["execution_count"] == 3, res
    assert box.repl("round(math.pi, 3)")["result"] == "3.142"
    assert box.repl("'ab' * 2")["result"] == "'abab'"
    assert box.repl("{'k': [1, None]}")["result"] == "{'k': [1, None]}"
    res = box.repl("None")
    assert res["result"] is None and res["status"] == "ok", res
    res = box.repl("import sys\nprint('to err', file=sys.stderr)")
    assert res["stderr"] == "to err\n" and res["stdout"] == "", res


def test_repl_python_error_then_next_cell(box):
    box.repl("x = 41")
    res = box.repl("def g():\n    return 1 / 0\ng()")
    assert res["status"] == "error", res
    err = res["error"]
    assert err["ename"] == "ZeroDivisionError", err
    assert err["evalue"] == "division by zero", err
    assert "ZeroDivisionError" in err["traceback"], err
    assert "in g" in err["traceback"], err
    assert res["restarted"] is False, res
    res = box.repl("x")
    assert res["status"] == "ok" and res["result"] == "41", res
    res = box.repl("def broken(:")
    assert res["status"] == "error", res
    assert res["error"]["ename"] == "SyntaxError", res
    assert box.repl("x + 1")["result"] == "42"


def test_repl_bash_state_persists(box):
    res = box.repl("cd /tmp; X=5; f() { echo f$1; }; alias ll='echo LL'",
                   language="bash")
    assert res["status"] == "ok", res
    assert res["language"] == "bash", res
    res = box.repl("pwd; echo $X; f 2; ll", language="bash")
    assert res["status"] == "ok", res
    assert res["stdout"] == "/tmp\n5\nf2\nLL\n", res
    res = box.repl("echo oops >&2; false", language="bash")
    assert res["status"] == "error" and res["stderr"] == "oops\n", res
    res = box.repl("echo $X", language="bash")
    assert res["status"] == "ok" and res["stdout"] == "5\n", res
    # Python and bash REPLs of the same name are different interpreters.
    res = box.repl("X")
    assert res["status"] == "error", res
    assert res["error"]["ename"] == "NameError", res


def test_repl_named_contexts_are_independent(box):
    assert box.repl("v = 'A'", context="a")["context"] == "a"
    assert box.repl("v = 'B'", context="b")["context"] == "b"
    assert box.repl("v", context="a")["result"] == "'A'"
    assert box.repl("v", context="b")["result"] == "'B'"
    res = box.repl("v")
    assert res["status"] == "error" and res["context"] == "default", res
    assert res["error"]["ename"] == "NameError", res
    assert box.repl("echo $PWD", language="bash", context="a")["stdout"] \
        == "/work\n"


def test_repl_timeout_keeps_state(box):
    box.repl("x = 7")
    res = box.repl("while True: pass", timeout_s=1)
    assert res["status"] == "timeout", res
    assert res["restarted"] is False, res
    res = box.repl("x")
    assert res["status"] == "ok" and res["result"] == "7", res
    assert res["restarted"] is False, res

    box.repl("Y=9", language="bash")
    res = box.repl("sleep 30", language="bash", timeout_s=1)
    assert res["status"] == "timeout" and res["restarted"] is False, res
    res = box.repl("echo $Y", language="bash")
    assert res["stdout"] == "9\n" and res["status"] == "ok", res


def test_repl_unstoppable_cell_restarts(box):
    box.repl("y = 9")
    box.repl("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)")
    res = box.repl("while True: pass", timeout_s=1)
    assert res["status"] == "timeout", res
    assert res["restarted"] is True, res
    res = box.repl("y")
    assert res["status"] == "error", res
    assert res["error"]["ename"] == "NameError", res
    assert res["execution_count"] == 1, res
    assert box.repl("1 + 1")["result"] == "2"


def test_repl_interpreter_exit(box):
    box.repl("z = 1")
    res = box.repl("import os\nos._exit(3)")
    assert res["status"] == "error", res
    assert res["restarted"] is True, res
    assert "exited with status 3" in res["error"]["evalue"], res
    res = box.repl("1 + 1")
    assert res["status"] == "ok" and res["result"] == "2", res
    res = box.repl("z")
    assert res["error"]["ename"] == "NameError", res

    box.repl("W=1", language="bash")
    res = box.repl("exit 5", language="bash")
    assert res["status"] == "error", res
    assert "status 5" in res["error"]["evalue"], res
    res = box.repl("echo ok; echo \"[$W]\"", language="bash")
    assert res["status"] == "ok" and res["stdout"] == "ok\n[]\n", res


@pytest.mark.parametrize("body,field", [
    ({"language": "ruby", "code": "1"}, "language"),
    ({"language": 5, "code": "1"}, "language"),
    ({"language": "python"}, "code"),
    ({"language": "python", "code": "1", "context": ""}, "context"),
    ({"language": "python", "code": "1", "timeout_s": 0}, "timeout_s"),
], ids=lambda v: json.dumps(v)[:30] if isinstance(v, dict) else v)
def test_repl_rejects_bad_fields(box, body, field):
    err = check_error(*box.call("POST", "/repl", body), 422,
                      "unprocessable")
    assert field in err["message"], err

"""The prime-sandboxes compatible surface (/prime).

The real `prime-sandboxes` package cannot be installed here (PyPI is not
reachable), so PrimeClient below is written against the routes and shapes
that package's client (0.2.x) sends and expects: the base URL with
/api/v1 stripped and added back, a bearer key on the control plane,
per-sandbox gateway tokens from /auth cached until expires_at, exec with
an HTTP timeout of timeout + 2 s and 408/409 mapped to exceptions through
/error-context, multipart uploads with a `file` field, raw downloads.

It drives verifiers' RLMEnv sandbox lifecycle step by step (create, wait
for creation, mkdir, a tar.gz uploaded and unpacked, pip install, the
worker started in the background with its FIFOs, cells through the FIFOs
with seq checked, a timeout answered 408 and recovered by a restart, the
filesystem tarred and downloaded, bulk delete), with a Python and a bash
worker of our own; then the pinned details and bad input on every route.
"""
import base64
import io
import json
import os
import shlex
import socket
import tarfile
import textwrap
import time
import urllib.parse
import uuid

import pytest

from sbxserver import SbxServer


class PrimeError(Exception):
    def __init__(self, status, body):
        self.status = status
        self.body = body
        detail = body.get("detail") if isinstance(body, dict) else body
        super().__init__("HTTP %s: %s" % (status, detail))


class CommandTimeoutError(PrimeError):
    pass


class SandboxNotRunningError(PrimeError):
    def __init__(self, status, body, ctx):
        super().__init__(status, body)
        self.ctx = ctx
        self.error_type = ctx.get("errorType")


def http(method, url, body=None, headers=None, timeout=30):
    """(status, headers, bytes) of one request on a fresh connection."""
    u = urllib.parse.urlsplit(url)
    path = u.path + ("?" + u.query if u.query else "")
    s = socket.create_connection((u.hostname, u.port), timeout=timeout)
    try:
        h = {"Host": u.netloc, "Connection": "close"}
        h.update(headers or {})
        if body is not None:
            h["Content-Length"] = str(len(body))
        head = "%s %s HTTP/1.1\r\n" % (method, path)
        head += "".join("%s: %s\r\n" % kv for kv in h.items()) + "\r\n"
        s.sendall(head.encode() + (body or b""))
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    if hdrs.get("transfer-encoding") == "chunked":
        out = b""
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            n = int(size_line.split(b";")[0], 16)
            if n == 0:
                break
            out += rest[:n]
            rest = rest[n + 2:]
        rest = out
    return status, hdrs, rest


def multipart(fields, boundary=None):
    """A multipart/form-data body: fields are (name, filename, bytes)."""
    boundary = boundary or "sbxtest" + uuid.uuid4().hex
    out = b""
    for name, filename, data in fields:
        out += b"--" + boundary.encode() + b"\r\n"
        disp = 'form-data; name="%s"' % name
        if filename is not None:
            disp += '; filename="%s"' % filename
        out += b"Content-Disposition: " + disp.encode() + b"\r\n"
        out += b"Content-Type: application/octet-stream\r\n\r\n"
        out += data + b"\r\n"
    out += b"--" + boundary.encode() + b"--\r\n"
    return "multipart/form-data; boundary=" + boundary, out


class PrimeClient:
    def __init__(self, base_url, api_key="any-key"):
        base = base_url.rstrip("/")
        if base.endswith("/api/v1"):
            base = base[: -len("/api/v1")]
        self.base = base
        self.key = api_key
        self.auth_cache = {}

    def request(self, method, endpoint, params=None, body=None):
        url = self.base + "/api/v1" + endpoint
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        data = json.dumps(body).encode() if body is not None else None
        status, _, raw = http(method, url, data, {
            "Authorization": "Bearer " + self.key,
            "Content-Type": "application/json"})
        doc = json.loads(raw) if raw else None
        if status >= 400:
            raise PrimeError(status, doc)
        assert isinstance(doc, dict), raw
        return doc

    def create(self, req):
        return self.request("POST", "/sandbox", body=req)

    def get(self, sid):
        return self.request("GET", "/sandbox/" + sid)

    def list(self, **params):
        return self.request("GET", "/sandbox", params=params)

    def delete(self, sid):
        return self.request("DELETE", "/sandbox/" + sid)

    def bulk_delete(self, sandbox_ids=None, labels=None):
        body = {k: v for k, v in (("sandbox_ids", sandbox_ids),
                                  ("labels", labels)) if v is not None}
        return self.request("DELETE", "/sandbox", body=body)

    def error_context(self, sid):
        return self.request("GET", "/sandbox/%s/error-context" % sid)

    def auth(self, sid):
        cached = self.auth_cache.get(sid)
        if cached and time.time() < parse_iso(cached["expires_at"]):
            return cached
        doc = self.request("POST", "/sandbox/%s/auth" % sid)
        self.auth_cache[sid] = doc
        return doc

    def _gateway(self, sid, op):
        a = self.auth(sid)
        assert not a["gateway_url"].endswith("/")
        return ("%s/%s/%s/%s" % (a["gateway_url"], a["user_ns"], a["job_id"],
                                 op),
                {"Authorization": "Bearer " + a["token"]})

    def execute_command(self, sid, command, working_dir=None, env=None,
                        timeout=None):
        url, headers = self._gateway(sid, "exec")
        t = timeout if timeout is not None else 300
        payload = {"command": command, "working_dir": working_dir,
                   "env": env or {}, "sandbox_id": sid, "timeout": t}
        headers["Content-Type"] = "application/json"
        status, _, raw = http("POST", url, json.dumps(payload).encode(),
                              headers, timeout=t + 2)
        doc = json.loads(raw)
        if status == 409:
            raise SandboxNotRunningError(status, doc, self.error_context(sid))
        if status == 408:
            raise CommandTimeoutError(status, doc)
        if status >= 400:
            raise PrimeError(status, doc)
        assert set(doc) == {"stdout", "stderr", "exit_code"}, doc
        return doc

    def upload_bytes(self, sid, path, data, filename="f"):
        url, headers = self._gateway(sid, "upload")
        url += "?" + urllib.parse.urlencode({"path": path, "sandbox_id": sid})
        ctype, body = multipart([("file", filename, data)])
        headers["Content-Type"] = ctype
        status, _, raw = http("POST", url, body, headers)
        doc = json.loads(raw)
        if status >= 400:
            raise PrimeError(status, doc)
        return doc

    def download_file(self, sid, path):
        url, headers = self._gateway(sid, "download")
        url += "?" + urllib.parse.urlencode({"path": path, "sandbox_id": sid})
        status, _, raw = http("GET", url, None, headers)
        if status >= 400:
            raise PrimeError(status, json.loads(raw))
        return raw

    def wait_for_creation(self, sid, max_attempts=60, stability_checks=2):
        ok = 0
        for _ in range(max_attempts):
            sb = self.get(sid)
            if sb["status"] == "RUNNING":
                r = self.execute_command(sid, "echo 'sandbox ready'",
                                         timeout=10)
                if r["stdout"] == "sandbox ready\n":
                    ok += 1
                    if ok >= stability_checks:
                        return
                    time.sleep(0.5)
                    continue
                ok = 0
            elif sb["status"] in ("ERROR", "TERMINATED", "TIMEOUT"):
                raise AssertionError("sandbox failed: %r" % sb)
            time.sleep(1)
        raise AssertionError("sandbox never became ready")


def parse_iso(s):
    import datetime
    return datetime.datetime.fromisoformat(
        s.replace("Z", "+00:00")).timestamp()


def rlm_request(rollout_id, labels, **over):
    """RLMEnv's own create request (1 core, 2 GB, 5 GB, 60 minutes), with
    a field newer clients send."""
    req = {"name": "rlm-" + rollout_id, "docker_image": "python:3.11-slim",
           "start_command": "tail -f /dev/null", "cpu_cores": 1,
           "memory_gb": 2, "disk_size_gb": 5, "gpu_count": 0,
           "network_access": True, "timeout_minutes": 60,
           "environment_vars": {"RLM_ROLLOUT": rollout_id}, "labels": labels,
           "idempotency_key": uuid.uuid4().hex}
    req.update(over)
    return req


# Our own workers, speaking the FIFO protocol RLMEnv's workers speak: the
# command FIFO carries {"code", "seq"}, the response FIFO the result.
PY_WORKER = textwrap.dedent('''
    import ast, contextlib, io, json, os, sys, traceback
    import requests  # RLMEnv's worker needs it: pip install made sure
    CMD, RES, READY = sys.argv[1:4]
    for p in (CMD, RES):
        if os.path.exists(p):
            os.remove(p)
        os.mkfifo(p)
    ns = {"__name__": "__main__"}
    open(READY, "w").write("ready")
    count = 0
    while True:
        with open(CMD) as f:
            payload = f.read()
        if not payload:
            continue
        req = json.loads(payload)
        count += 1
        res = {"status": "ok", "result": None, "execution_count": count,
               "seq": req.get("seq", 0)}
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                tree = ast.parse(req["code"])
                last = None
                if tree.body and isinstance(tree.body[-1], ast.Expr):
                    last = tree.body.pop()
                exec(compile(tree, "<cell>", "exec"), ns)
                if last is not None:
                    v = eval(compile(ast.Expression(last.value), "<cell>",
                                     "eval"), ns)
                    if v is not None:
                        res["result"] = repr(v)
        except Exception:
            res["status"] = "error"
            res["result"] = traceback.format_exc()
        res["stdout"], res["stderr"] = out.getvalue(), err.getvalue()
        with open(RES, "w") as f:
            f.write(json.dumps(res))
''')

BASH_WORKER = textwrap.dedent('''
    import json, os, subprocess, sys
    CMD, RES, READY = sys.argv[1:4]
    for p in (CMD, RES):
        if os.path.exists(p):
            os.remove(p)
        os.mkfifo(p)
    cwd = os.getcwd()
    open(READY, "w").write("ready")
    count = 0
    while True:
        with open(CMD) as f:
            payload = f.read()
        if not payload:
            continue
        req = json.loads(payload)
        count += 1
        script = req["code"] + '\\nprintf "\\\\n__PWD__%s\\\\n" "$PWD"\\n'
        p = subprocess.run(["bash", "-lc", script], cwd=cwd,
                           capture_output=True, text=True)
        out, _, tail = p.stdout.rpartition("\\n__PWD__")
        cwd = tail.strip() or cwd
        res = {"status": "ok", "result": None, "execution_count": count,
               "seq": req.get("seq", 0), "stdout": out, "stderr": p.stderr}
        with open(RES, "w") as f:
            f.write(json.dumps(res))
''')


class Rollout:
    """One RLMEnv rollout's sandbox, driven as its executor does."""

    def __init__(self, client, language, labels):
        self.c = client
        self.lang = language
        self.rid = "rlm_" + uuid.uuid4().hex[:8]
        root = "/tmp/rlm_%s" % self.rid
        self.fs = root + "/rlm_fs"
        self.ctl = root + "/rlm_control"
        self.cmd, self.res = self.ctl + "/rlm_cmd", self.ctl + "/rlm_res"
        self.ready, self.pid = self.ctl + "/rlm_ready", self.ctl + "/rlm_worker.pid"
        self.log, self.worker = self.ctl + "/rlm_worker.log", self.ctl + "/rlm_worker.py"
        self.labels = labels
        self.seq = 0
        self.sid = None

    def sh(self, script, timeout=30):
        return self.c.execute_command(self.sid, "bash -lc " + shlex.quote(script),
                                      timeout=timeout)

    def start_worker(self):
        self.c.upload_bytes(self.sid, self.worker, (
            PY_WORKER if self.lang == "python" else BASH_WORKER).encode(),
            "rlm_worker.py")
        script = ('rm -f "%s" "%s" "%s" "%s"; cd "%s"; export RLM_SUB_MODEL=m; '
                  'python -u "%s" "%s" "%s" "%s" > "%s" 2>&1 & echo $! > "%s"'
                  % (self.cmd, self.res, self.ready, self.pid, self.fs,
                     self.worker, self.cmd, self.res, self.ready, self.log,
                     self.pid))
        r = self.sh(script)
        assert r["exit_code"] == 0, r
        r = self.sh('for i in $(seq 1 100); do [ -f "%s" ] && exit 0; '
                    'sleep 0.1; done; tail -n 20 "%s"; exit 1'
                    % (self.ready, self.log))
        assert r["exit_code"] == 0, r
        self.seq = 0

    def stop_worker(self):
        self.sh('[ -f "%s" ] && kill "$(cat "%s")" 2>/dev/null; true'
                % (self.pid, self.pid))

    def cell(self, code, timeout=30):
        self.seq += 1
        payload = base64.b64encode(json.dumps(
            {"code": code, "seq": self.seq}).encode()).decode()
        command = textwrap.dedent('''\
            [ -f "{pid}" ] && [ -d "/proc/$(cat {pid})" ] || {{ echo WORKER_DEAD; exit 0; }}
            python - <<'PY'
            import base64, sys
            data = base64.b64decode('{b64}').decode('utf-8')
            with open('{cmd}', 'w') as f:
                f.write(data)
            with open('{res}') as f:
                sys.stdout.write(f.read())
            PY
            ''').format(pid=self.pid, b64=payload, cmd=self.cmd, res=self.res)
        r = self.c.execute_command(self.sid, command, timeout=timeout)
        assert r["stdout"].strip() != "WORKER_DEAD"
        doc = json.loads(r["stdout"])
        assert doc["seq"] == self.seq, "desync: %r" % doc
        return doc


@pytest.fixture(scope="module")
def srv():
    with SbxServer() as s:
        yield s


@pytest.fixture
def client(srv):
    return PrimeClient(srv.url + "/prime/api/v1")


@pytest.mark.parametrize("language", ["python", "bash"])
def test_rlmenv_lifecycle(client, language):
    tag = "rlm-test-" + uuid.uuid4().hex[:6]
    ro = Rollout(client, language, [tag])
    sb = client.create(rlm_request(ro.rid, [tag]))
    ro.sid = sb["id"]
    # Echoed as sent, in the client's camelCase.
    assert (sb["cpuCores"], sb["memoryGB"], sb["diskSizeGB"],
            sb["timeoutMinutes"], sb["gpuCount"]) == (1, 2, 5, 60, 0)
    assert sb["dockerImage"] == "python:3.11-slim"
    assert sb["labels"] == [tag] and sb["status"] == "RUNNING"
    for k in ("diskMountPath", "createdAt", "updatedAt", "name",
              "environmentVars", "errorType", "errorMessage"):
        assert k in sb
    client.wait_for_creation(ro.sid)
    logs = client.request("GET", "/sandbox/%s/logs" % ro.sid)["logs"]
    assert "python:3.11-slim" in logs and "default view" in logs

    # prepare_filesystem: mkdir, then the context dir as a tar.gz.
    r = ro.sh("mkdir -p %s %s" % (ro.fs, ro.ctl))
    assert r["exit_code"] == 0
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("context.txt", b"the context\n"),
                           ("sub/data.json", b'{"n": 7}')):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    remote_tar = "/tmp/rlm_upload_%s.tar.gz" % uuid.uuid4().hex
    up = client.upload_bytes(ro.sid, remote_tar, buf.getvalue(), "ctx.tar.gz")
    assert up["success"] is True and up["path"] == remote_tar
    assert up["size"] == len(buf.getvalue()) and up["timestamp"]
    r = ro.sh('mkdir -p "%s"; tar -xzf "%s" -C "%s"; rm -f "%s"'
              % (ro.fs, remote_tar, ro.fs, remote_tar))
    assert r["exit_code"] == 0, r
    assert ro.sh("cat %s/sub/data.json" % ro.fs)["stdout"] == '{"n": 7}'

    # setup: pip, the worker in the background, its FIFOs.
    r = ro.sh("pip install -q requests", timeout=60)
    assert r["exit_code"] == 0, r
    ro.start_worker()
    # The worker outlived the exec that started it.
    assert ro.sh('kill -0 "$(cat %s)" && echo alive' % ro.pid)["stdout"] == "alive\n"

    if language == "python":
        assert ro.cell("x = 41\nprint('hi')")["stdout"] == "hi\n"
        assert ro.cell("x + 1")["result"] == "42"
        assert ro.cell("open('context.txt').read()")["result"] == "'the context\\n'"
        assert ro.cell("open('made.txt', 'w').write('by a cell')")["status"] == "ok"
        slow = "import time; time.sleep(30)"
    else:
        assert ro.cell("cd sub && echo in")["stdout"] == "in\n"
        assert ro.cell("pwd")["stdout"].strip().endswith("/rlm_fs/sub")
        assert ro.cell("cat data.json")["stdout"] == '{"n": 7}'
        assert ro.cell("echo by a cell > ../made.txt")["status"] == "ok"
        slow = "sleep 30"

    # A cell past its timeout: 408, then RLMEnv's recovery by restart.
    with pytest.raises(CommandTimeoutError) as ei:
        ro.cell(slow, timeout=2)
    assert ei.value.status == 408
    ro.stop_worker()
    ro.start_worker()
    if language == "python":
        assert ro.cell("x")["status"] == "error"  # state was reset
        assert ro.cell("1 + 1")["result"] == "2"
    else:
        assert ro.cell("echo again")["stdout"] == "again\n"

    # cleanup with retain_filesystem_after_rollout: tar and download.
    ro.stop_worker()
    remote = "/tmp/rlm_download_%s.tar.gz" % uuid.uuid4().hex
    assert ro.sh('tar -czf "%s" -C "%s" .' % (remote, ro.fs))["exit_code"] == 0
    data = client.download_file(ro.sid, remote)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        names = {m.name.lstrip("./") for m in tar.getmembers()}
        made = tar.extractfile("./made.txt").read()
    assert {"context.txt", "sub/data.json", "made.txt"} <= names
    assert made.strip() == b"by a cell"

    # teardown: bulk delete by labels.
    out = client.bulk_delete(labels=[tag])
    assert out["succeeded"] == [ro.sid] and out["failed"] == []
    with pytest.raises(PrimeError) as ei:
        client.get(ro.sid)
    assert ei.value.status == 404


def new_sandbox(client, **over):
    sb = client.create(rlm_request("t" + uuid.uuid4().hex[:6], [], **over))
    return sb["id"]


def test_background_processes_signals_and_exit_codes(client):
    sid = new_sandbox(client)
    r = client.execute_command(sid, "sleep 60 > /dev/null 2>&1 & echo $!")
    pid = r["stdout"].strip()
    r = client.execute_command(sid, "kill -0 %s && echo alive" % pid)
    assert r["stdout"] == "alive\n"
    r = client.execute_command(sid, "nohup sleep 60 >/dev/null 2>&1 & echo ok")
    assert r["stdout"] == "ok\n"
    assert client.execute_command(sid, "exit 3")["exit_code"] == 3
    assert client.execute_command(sid, "kill -9 $$")["exit_code"] == 137
    assert client.execute_command(sid, "kill -TERM $$")["exit_code"] == 143
    r = client.execute_command(sid, "echo $FOO; pwd", working_dir="/tmp",
                               env={"FOO": "bar"})
    assert r == {"stdout": "bar\n/tmp\n", "stderr": "", "exit_code": 0}
    # A timed-out command is killed with what it started.
    with pytest.raises(CommandTimeoutError):
        client.execute_command(sid, "sleep 300 & echo $! > /tmp/bg; sleep 300",
                               timeout=1)
    r = client.execute_command(sid, "kill -0 $(cat /tmp/bg) 2>/dev/null || echo gone")
    assert r["stdout"] == "gone\n"
    client.delete(sid)


def test_python_pip_and_sbx_guest_inside(client):
    sid = new_sandbox(client)
    r = client.execute_command(
        sid, "bash -lc 'command -v python; python -c \"import sys; "
        "print(sys.version_info[0])\"'")
    assert r["exit_code"] == 0 and r["stdout"].split("\n")[1] == "3", r
    r = client.execute_command(sid, "bash -lc 'pip install -q requests'",
                               timeout=120)
    assert r["exit_code"] == 0, r
    r = client.execute_command(
        sid, "python -c 'import sbx_guest; print(sbx_guest.llm_batch([]))'")
    assert r == {"stdout": "[]\n", "stderr": "", "exit_code": 0}
    # Without the gateway, llm_batch says so per item.
    r = client.execute_command(
        sid, "python -c 'import sbx_guest; print(sbx_guest.llm_batch([\"hi\"]))'")
    assert "Error:" in r["stdout"] and "no model gateway" in r["stdout"]
    client.delete(sid)


def test_timeout_keeps_the_record(client):
    sid = new_sandbox(client, timeout_minutes=0.04)  # 2.4 s
    first = client.auth(sid)
    for _ in range(40):
        if client.get(sid)["status"] == "TIMEOUT":
            break
        time.sleep(0.5)
    sb = client.get(sid)
    assert sb["status"] == "TIMEOUT" and sb["errorType"] == "TIMEOUT"
    assert sb["terminatedAt"]
    ctx = client.error_context(sid)
    assert (ctx["status"], ctx["errorType"]) == ("TIMEOUT", "TIMEOUT")
    with pytest.raises(SandboxNotRunningError) as ei:
        client.execute_command(sid, "echo hi")
    assert ei.value.status == 409 and ei.value.error_type == "TIMEOUT"
    # /auth still answers; the first token is still the one it was.
    again = client.request("POST", "/sandbox/%s/auth" % sid)
    assert again["job_id"] == first["job_id"] == sid
    listed = client.list(status="TIMEOUT")
    assert sid in [s["id"] for s in listed["sandboxes"]]
    out = client.delete(sid)
    assert isinstance(out, dict)
    with pytest.raises(PrimeError) as ei:
        client.get(sid)
    assert ei.value.status == 404


def test_gateway_tokens(srv, client):
    a, b = new_sandbox(client), new_sandbox(client)
    ta = client.auth(a)
    # Another /auth: both tokens work until their expires_at.
    tb = client.request("POST", "/sandbox/%s/auth" % a)
    assert parse_iso(ta["expires_at"]) > time.time() + 600
    gw = ta["gateway_url"]
    assert gw == srv.url + "/prime/gateway"
    body = json.dumps({"command": "echo ok"}).encode()
    for tok in (ta["token"], tb["token"]):
        st, _, raw = http("POST", "%s/sbx/%s/exec" % (gw, a), body,
                          {"Authorization": "Bearer " + tok})
        assert st == 200 and json.loads(raw)["stdout"] == "ok\n"
    # A's token does not open B; no token, a wrong one, the wrong
    # namespace, or a sandbox_id that is not the URL's are refused.
    cases = [("%s/sbx/%s/exec" % (gw, b), ta["token"], body, 401),
             ("%s/sbx/%s/exec" % (gw, a), None, body, 401),
             ("%s/sbx/%s/exec" % (gw, a), "0" * 64, body, 401),
             ("%s/other/%s/exec" % (gw, a), ta["token"], body, 404),
             ("%s/sbx/%s/exec" % (gw, a), ta["token"],
              json.dumps({"command": "true", "sandbox_id": b}).encode(), 400),
             ("%s/sbx/%s/download?path=/etc/hostname" % (gw, b), ta["token"],
              None, 401)]
    for url, tok, data, want in cases:
        hdrs = {"Authorization": "Bearer " + tok} if tok else {}
        st, _, raw = http("GET" if data is None else "POST", url, data, hdrs)
        assert st == want, (url, st, raw)
        assert json.loads(raw)["detail"]
    client.bulk_delete(sandbox_ids=[a, b, "sb-nonexistent"])


def test_server_token():
    with SbxServer(token="s3cret") as s:
        bad = PrimeClient(s.url + "/prime", api_key="wrong")
        with pytest.raises(PrimeError) as ei:
            bad.list()
        assert ei.value.status == 401
        c = PrimeClient(s.url + "/prime", api_key="s3cret")
        sid = new_sandbox(c)
        # The gateway takes the sandbox's token, not the server's.
        assert c.execute_command(sid, "echo hi")["stdout"] == "hi\n"
        url = c.auth(sid)["gateway_url"] + "/sbx/%s/exec" % sid
        st, _, _ = http("POST", url, b'{"command": "true"}',
                        {"Authorization": "Bearer s3cret"})
        assert st == 401
        c.delete(sid)


def test_list_paging_and_filters(client):
    tag = "page-" + uuid.uuid4().hex[:6]
    ids = [client.create(rlm_request("p%d" % i, [tag, "n%d" % i]))["id"]
           for i in range(3)]
    p1 = client.list(per_page=2, page=1, labels=[tag])
    p2 = client.list(per_page=2, page=2, labels=[tag])
    assert (p1["total"], p1["page"], p1["perPage"], p1["hasNext"]) == (3, 1, 2, True)
    assert (len(p2["sandboxes"]), p2["hasNext"]) == (1, False)
    got = [s["id"] for s in p1["sandboxes"] + p2["sandboxes"]]
    assert sorted(got) == sorted(ids)
    one = client.list(labels=[tag, "n1"])
    assert [s["id"] for s in one["sandboxes"]] == [ids[1]]
    assert client.list(labels=[tag], status="TIMEOUT")["total"] == 0
    assert client.list(labels=[tag], is_active="true")["total"] == 3
    assert client.list(labels=[tag], is_active="false")["total"] == 0
    out = client.bulk_delete(sandbox_ids=ids)
    assert sorted(out["succeeded"]) == sorted(ids)
    assert client.list(labels=[tag])["total"] == 0


def test_expose_reaches_a_port_inside(srv, client):
    sid = new_sandbox(client)
    client.execute_command(
        sid, "mkdir -p /tmp/www && echo served > /tmp/www/x.txt && "
        "cd /tmp/www && python3 -m http.server 8123 >/dev/null 2>&1 &")
    client.execute_command(
        sid, "for i in $(seq 50); do python3 -c 'import socket; "
        "socket.create_connection((\"127.0.0.1\", 8123))' 2>/dev/null && "
        "break; sleep 0.1; done")
    e = client.request("POST", "/sandbox/%s/expose" % sid,
                       body={"port": 8123, "name": "web"})
    assert e["port"] == 8123 and e["sandbox_id"] == sid
    assert e["url"] == "%s/v1/sandboxes/%s/ports/8123/" % (srv.url, sid)
    st, _, raw = http("GET", e["url"] + "x.txt")
    assert (st, raw) == (200, b"served\n")
    listed = client.request("GET", "/sandbox/%s/expose" % sid)
    assert [x["exposure_id"] for x in listed["exposures"]] == [e["exposure_id"]]
    client.request("DELETE", "/sandbox/%s/expose/%s" % (sid, e["exposure_id"]))
    assert client.request("GET", "/sandbox/%s/expose" % sid)["exposures"] == []
    client.delete(sid)


BAD_CONTROL = [
    ("POST", "/sandbox", b"{not json", 422),
    ("POST", "/sandbox", b"[1]", 422),
    ("POST", "/sandbox", b'{"cpu_cores": "one"}', 422),
    ("POST", "/sandbox", b'{"memory_gb": -1}', 422),
    ("POST", "/sandbox", b'{"timeout_minutes": 0}', 422),
    ("POST", "/sandbox", b'{"gpu_count": 2}', 422),
    ("POST", "/sandbox", b'{"labels": "a"}', 422),
    ("POST", "/sandbox", b'{"labels": [""]}', 422),
    ("POST", "/sandbox", b'{"environment_vars": {"A=B": "x"}}', 422),
    ("POST", "/sandbox", b'{"environment_vars": {"A": 1}}', 422),
    ("POST", "/sandbox", b'{"network_access": "yes"}', 422),
    ("POST", "/sandbox", b'{"advanced_configs": []}', 422),
    ("GET", "/sandbox?per_page=0", None, 422),
    ("GET", "/sandbox?page=x", None, 422),
    ("GET", "/sandbox?status=RUNNIN", None, 422),
    ("GET", "/sandbox?is_active=maybe", None, 422),
    ("GET", "/sandbox?labels=", None, 422),
    ("DELETE", "/sandbox", b"{}", 422),
    ("DELETE", "/sandbox", b'{"sandbox_ids": ["a"], "labels": ["b"]}', 422),
    ("DELETE", "/sandbox", b'{"sandbox_ids": []}', 422),
    ("DELETE", "/sandbox", b'{"sandbox_ids": [1]}', 422),
    ("PUT", "/sandbox", b"{}", 405),
    ("GET", "/sandbox/sb-nope", None, 404),
    ("DELETE", "/sandbox/sb-nope", None, 404),
    ("POST", "/sandbox/sb-nope", b"{}", 405),
    ("GET", "/sandbox/sb-nope/logs", None, 404),
    ("POST", "/sandbox/sb-nope/auth", None, 404),
    ("GET", "/sandbox/sb-nope/auth", None, 405),
    ("GET", "/sandbox/sb-nope/error-context", None, 404),
    ("POST", "/sandbox/sb-nope/expose", b'{"port": 80}', 404),
    ("GET", "/sandbox/sb-nope/nothing", None, 404),
    ("GET", "/sandbox/sb-nope/expose/a/b", None, 404),
]


@pytest.mark.parametrize("method,path,body,want", BAD_CONTROL)
def test_bad_input_control_plane(srv, method, path, body, want):
    st, hdrs, raw = http(method, srv.url + "/prime/api/v1" + path, body,
                         {"Content-Type": "application/json"})
    doc = json.loads(raw)
    assert st == want, (st, raw)
    assert hdrs["content-type"] == "application/json"
    assert doc["detail"] and doc["error"]["message"]


def test_bad_input_on_a_sandbox_and_its_gateway(srv, client):
    sid = new_sandbox(client)
    a = client.auth(sid)
    gw = "%s/sbx/%s" % (a["gateway_url"], sid)
    auth = {"Authorization": "Bearer " + a["token"]}
    api = srv.url + "/prime/api/v1/sandbox/" + sid
    cases = [
        ("POST", api + "/expose", b'{"port": 0}', {}, 422),
        ("POST", api + "/expose", b'{"port": "80"}', {}, 422),
        ("POST", api + "/expose", b"{", {}, 422),
        ("DELETE", api + "/expose/exp-99", None, {}, 404),
        ("POST", gw + "/exec", b"{", auth, 422),
        ("POST", gw + "/exec", b"{}", auth, 422),
        ("POST", gw + "/exec", b'{"command": 5}', auth, 422),
        ("POST", gw + "/exec", b'{"command": "true", "timeout": -1}', auth, 422),
        ("POST", gw + "/exec", b'{"command": "true", "env": {"1A": "x"}}', auth, 422),
        ("POST", gw + "/exec", b'{"command": "true", "working_dir": 3}', auth, 422),
        ("GET", gw + "/exec", None, auth, 405),
        ("POST", gw + "/nothing", b"{}", auth, 404),
        ("GET", gw + "/download", None, auth, 400),
        ("GET", gw + "/download?path=/tmp/missing", None, auth, 404),
        ("GET", gw + "/download?path=/tmp", None, auth, 400),
        ("POST", gw + "/download?path=/tmp/x", b"", auth, 405),
        ("POST", gw + "/upload", b"x", auth, 400),
        ("GET", gw + "/upload?path=/tmp/x", None, auth, 405),
    ]
    for method, url, body, hdrs, want in cases:
        st, _, raw = http(method, url, body, hdrs)
        assert st == want, (method, url, body, st, raw)
        assert json.loads(raw)["detail"]
    # Unknown fields are ignored on this surface.
    st, _, raw = http("POST", gw + "/exec",
                      b'{"command": "echo fine", "newer_field": 1}', auth)
    assert st == 200 and json.loads(raw)["stdout"] == "fine\n"
    client.delete(sid)


def test_multipart_uploads_good_and_malformed(srv, client):
    sid = new_sandbox(client)
    a = client.auth(sid)
    url = "%s/sbx/%s/upload?path=" % (a["gateway_url"], sid)
    auth = {"Authorization": "Bearer " + a["token"]}

    def post(path, ctype, body):
        h = dict(auth)
        if ctype:
            h["Content-Type"] = ctype
        st, _, raw = http("POST", url + urllib.parse.quote(path), body, h)
        return st, json.loads(raw)

    # Bytes that look like boundaries and CRLFs, and other fields around.
    b = "XyZ" + uuid.uuid4().hex
    tricky = (b"\r\n--" + b.encode()[:-1] + b"\r\n\r\n--\x00\xff" * 100)
    big = os.urandom(3 << 20) + tricky
    ctype, body = multipart([("note", None, b"first"), ("file", "f.bin", big),
                             ("after", None, b"last")], boundary=b)
    st, doc = post("/tmp/up/big.bin", ctype, body)
    assert st == 200 and doc["size"] == len(big), doc
    assert client.download_file(sid, "/tmp/up/big.bin") == big
    ctype, body = multipart([("file", "e", b"")])
    st, doc = post("/tmp/up/empty", ctype, body)
    assert st == 200 and doc["size"] == 0

    ctype, good = multipart([("file", "f", b"data")], boundary="BND")
    malformed = [
        ("multipart/form-data", good),                     # no boundary
        ("application/octet-stream", b"data"),             # not multipart
        (None, good),                                      # no content type
        ("multipart/form-data; boundary=BND", good[:-8]),  # no closing boundary
        ("multipart/form-data; boundary=BND", b""),        # empty
        ("multipart/form-data; boundary=BND",
         b"garbage without any boundary at all\r\n"),
        multipart([("other", "f", b"data")]),              # no 'file'
        multipart([("file", "a", b"1"), ("file", "b", b"2")]),  # twice
        ("multipart/form-data; boundary=BND",
         b"--BND\r\nContent-Disposition: form-data; name=\"file\"\r\n"),
    ]
    for ctype, body in malformed:
        st, doc = post("/tmp/up/bad", ctype, body)
        assert st == 400, (ctype, body[:80], st, doc)
        assert doc.get("detail") or doc["error"]["message"]
    # None of them left a file, and the server still serves.
    r = client.execute_command(sid, "ls /tmp/up")
    assert r["stdout"].split() == ["big.bin", "empty"]
    client.delete(sid)

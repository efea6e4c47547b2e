"""What a new user meets first: misspelt fields refused, REPL cells with
stdin, metrics by route template, the whole run's CPU time, `sbx check`
as a user that is not root, `make install` and the Python client
installed on a plain Debian Python.

Each test drives the real binary (a server of its own, or sbx check)."""
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request

import pytest

from sbxserver import SbxServer

REPO = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
SBX = os.environ.get("SBX", os.path.join(REPO, "build", "sbx"))
BUILD = os.environ.get("SBX_BUILD", os.path.dirname(SBX))


@pytest.fixture(scope="module")
def srv():
    with SbxServer() as s:
        yield s
        assert s.proc.poll() is None, "the server died:\n" + s.read_log()


@pytest.fixture
def box(srv):
    status, _, info = srv.post("/v1/sandboxes", {"idle_timeout_s": 120})
    assert status == 201, info
    yield "/v1/sandboxes/" + info["id"]
    srv.request("DELETE", "/v1/sandboxes/" + info["id"])


# ---- misspelt fields are refused, not ignored ----

@pytest.mark.parametrize("field", ["timeout", "time_limit", "args", ""])
def test_exec_refuses_unknown_fields(srv, box, field):
    # "timeout" instead of "timeout_s" ran without a limit before.
    status, _, res = srv.post(box + "/exec",
                              {"cmd": "echo ran", field: 1})
    assert status == 422, res
    assert res["error"]["code"] == "unprocessable", res
    assert "unknown field '%s'" % field in res["error"]["message"], res
    assert "timeout_s" in res["error"]["message"], res


def test_exec_refuses_unknown_fields_in_background(srv, box):
    status, _, res = srv.post(box + "/exec", {"cmd": "sleep 100",
                                              "background": True,
                                              "timeout": 1})
    assert status == 422, res
    status, _, procs = srv.get(box + "/processes")
    assert status == 200 and not procs["processes"], procs


def test_exec_known_fields_still_work(srv, box):
    status, _, res = srv.post(box + "/exec", {
        "argv": ["sh", "-c", "cat; echo $X; pwd"], "cwd": "/tmp",
        "env": {"X": "y"}, "stdin": "in\n", "timeout_s": 10,
        "stream": False, "background": False})
    assert status == 200, res
    assert res["stdout"] == "in\ny\n/tmp\n", res


@pytest.mark.parametrize("field", ["timeout", "lang", "input"])
def test_repl_refuses_unknown_fields(srv, box, field):
    status, _, res = srv.post(box + "/repl", {"language": "python",
                                              "code": "1", field: 1})
    assert status == 422, res
    assert "unknown field '%s'" % field in res["error"]["message"], res


def test_repl_refuses_non_string_stdin(srv, box):
    status, _, res = srv.post(box + "/repl", {"code": "1", "stdin": 5})
    assert status == 422, res
    assert "'stdin' must be a string" in res["error"]["message"], res


# ---- REPL cells have stdin ----

def test_python_cell_reading_stdin_gets_eof(srv, box):
    # Before, input() read the driver's own request stream and waited
    # until the cell's timeout.
    status, _, res = srv.post(box + "/repl", {
        "code": "try:\n    input()\nexcept EOFError:\n    print('eof')\n",
        "timeout_s": 60})
    assert status == 200, res
    assert res["status"] == "ok", res
    assert res["stdout"] == "eof\n", res
    # A subprocess sees the same empty stdin.
    status, _, res = srv.post(box + "/repl", {
        "code": "import subprocess\n"
                "subprocess.run(['wc', '-c'], check=True)\n",
        "timeout_s": 60})
    assert status == 200 and res["status"] == "ok", res
    assert res["stdout"].strip() == "0", res


def test_python_cell_stdin_field(srv, box):
    status, _, res = srv.post(box + "/repl", {
        "code": "import sys\nx = input()\nrest = sys.stdin.read()\n"
                "(x, rest)",
        "stdin": "first\nsecond\n", "timeout_s": 60})
    assert status == 200 and res["status"] == "ok", res
    assert res["result"] == "('first', 'second\\n')", res
    # The state and the request stream survive: the next cell runs.
    status, _, res = srv.post(box + "/repl", {"code": "x * 2"})
    assert status == 200 and res["result"] == "'firstfirst'", res


def test_bash_cell_reading_stdin(srv, box):
    status, _, res = srv.post(box + "/repl", {
        "language": "bash", "code": "read -r a || echo eof; cat",
        "timeout_s": 60})
    assert status == 200 and res["status"] == "ok", res
    assert res["stdout"] == "eof\n", res
    status, _, res = srv.post(box + "/repl", {
        "language": "bash", "code": "read -r a; echo \"got $a\"; cat",
        "stdin": "one\ntwo\n", "timeout_s": 60})
    assert status == 200 and res["status"] == "ok", res
    assert res["stdout"] == "got one\ntwo\n", res
    # bash keeps reading its commands: the variable is still there.
    status, _, res = srv.post(box + "/repl", {"language": "bash",
                                              "code": "echo $a"})
    assert status == 200 and res["stdout"] == "one\n", res


# ---- /metrics labels sandbox routes by template ----

def test_metrics_route_templates(srv, box):
    srv.post(box + "/exec", {"cmd": "true"})
    srv.post(box + "/repl", {"code": "1"})
    srv.request("PUT", box + "/files/a.txt", b"x")
    srv.get(box + "/files/a.txt")
    srv.get(box + "/files")
    srv.get(box + "/processes")
    srv.get(box + "/processes/999")
    srv.get(box)
    srv.get("/v1/sandboxes")
    status, _, text = srv.get("/metrics")
    assert status == 200
    routes = set(re.findall(r'sbx_requests_total\{route="([^"]+)"', text))
    for want in ("/v1/sandboxes", "/v1/sandboxes/{id}",
                 "/v1/sandboxes/{id}/exec", "/v1/sandboxes/{id}/repl",
                 "/v1/sandboxes/{id}/files",
                 "/v1/sandboxes/{id}/files/{path}",
                 "/v1/sandboxes/{id}/processes",
                 "/v1/sandboxes/{id}/processes/{n}"):
        assert want in routes, (want, routes)
    assert not any(r.startswith("/v1/sandboxes/sb-") for r in routes)
    # 201 (created) has its own code, not "0".
    assert re.search(r'route="/v1/sandboxes",code="201"\} \d+', text), text
    assert not re.search(r'route="other",code="20[01]"', text), text


# ---- /v1/run: the whole run's CPU time holds its steps' ----

def test_run_cpu_ms_covers_compile(srv):
    if not shutil.which("g++"):
        pytest.skip("g++ is not installed")
    status, _, res = srv.post("/v1/run", {
        "language": "cpp",
        "source": "#include <iostream>\nint main(){std::cout<<1;}",
        "limits": {"wall_ms": 30000, "compile_wall_ms": 60000}})
    assert status == 200 and res["status"] == "ok", res
    assert res["compile"]["cpu_ms"] > 0, res
    assert res["cpu_ms"] >= res["compile"]["cpu_ms"] + \
        res["run"]["cpu_ms"], res


# ---- sbx check as a user that is not root ----

def test_check_as_non_root_says_root_is_needed():
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user")
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is not installed")
    tmp = tempfile.mkdtemp(prefix="sbx-check-")
    try:
        exe = os.path.join(tmp, "sbx")
        shutil.copy(SBX, exe)
        os.chmod(tmp, 0o755)
        p = subprocess.run(
            ["setpriv", "--reuid", str(nobody.pw_uid), "--regid",
             str(nobody.pw_gid), "--clear-groups", exe, "check"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
            cwd="/")
    finally:
        shutil.rmtree(tmp)
    out = p.stdout.decode()
    assert p.returncode == 1, out
    assert re.search(r"^root +no +.*run it as root", out, re.M), out
    # Namespaces are not reported missing: only root can make them.
    assert not re.search(r"^pid/mount/net/ipc/uts +no", out, re.M), out
    assert not re.search(r"^cgroup namespace +no", out, re.M), out
    assert "only root can make them" in out, out


def test_check_lists_only_what_sbx_uses():
    p = subprocess.run([SBX, "check"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    out = p.stdout.decode()
    assert "overlayfs" not in out and "image directories" not in out, out
    assert re.search(r"^seccomp +yes", out, re.M), out

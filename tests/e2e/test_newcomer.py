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


# ---- make install ----

def test_make_install_into_destdir():
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    tmp = tempfile.mkdtemp(prefix="sbx-install-")
    try:
        npm = os.path.join(tmp, "npm")
        os.makedirs(os.path.join(npm, "node_modules", "tsx"))
        for name in (".installed", "node_modules/tsx/package.json"):
            open(os.path.join(npm, name), "w").close()
        dest = os.path.join(tmp, "dest")
        build = os.path.relpath(BUILD, REPO)
        # -o: install what is built, never rebuild here.
        p = subprocess.run(
            ["make", "--no-print-directory", "-o", build + "/sbx",
             "BUILD=" + build, "NPM_DIR=" + npm, "DESTDIR=" + dest,
             "install"], cwd=REPO, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, timeout=120)
        assert p.returncode == 0, p.stdout.decode()
        exe = os.path.join(dest, "usr", "local", "bin", "sbx")
        assert os.access(exe, os.X_OK), p.stdout.decode()
        assert os.path.isfile(os.path.join(
            dest, "usr", "local", "lib", "sbx", "npm", "node_modules",
            "tsx", "package.json")), p.stdout.decode()
        q = subprocess.run([exe, "run", "--", "echo", "installed"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=60)
        assert q.returncode == 0 and q.stdout == b"installed\n", q
        # PREFIX moves both.
        p = subprocess.run(
            ["make", "--no-print-directory", "-o", build + "/sbx",
             "BUILD=" + build, "NPM_DIR=" + npm, "DESTDIR=" + dest,
             "PREFIX=/opt/sbx", "install"], cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        assert p.returncode == 0, p.stdout.decode()
        assert os.access(os.path.join(dest, "opt", "sbx", "bin", "sbx"),
                         os.X_OK)
        assert os.path.isdir(os.path.join(dest, "opt", "sbx", "lib", "sbx",
                                          "npm", "node_modules"))
    finally:
        shutil.rmtree(tmp)


# ---- the Python client on Debian's own Python ----

DEBIAN_PYTHON = "/usr/bin/python3"


def test_python_client_installs_offline_in_a_fresh_venv(srv):
    """The README's way: a venv that sees Debian's setuptools and wheel,
    and pip with no build isolation, so nothing is downloaded."""
    if not os.access(DEBIAN_PYTHON, os.X_OK):
        pytest.skip("no Debian python3 at " + DEBIAN_PYTHON)
    probe = subprocess.run(
        [DEBIAN_PYTHON, "-c", "import ensurepip, venv, wheel, setuptools"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if probe.returncode:
        pytest.skip("python3-venv or python3-wheel is not installed "
                    "(make deps installs them): " + probe.stdout.decode())
    tmp = tempfile.mkdtemp(prefix="sbx-venv-")
    try:
        src = os.path.join(tmp, "python")
        shutil.copytree(os.path.join(REPO, "clients", "python"), src,
                        ignore=shutil.ignore_patterns(
                            "build", "*.egg-info", "__pycache__"))
        venv = os.path.join(tmp, "venv")
        env = dict(os.environ, PIP_NO_INDEX="1",
                   PIP_DISABLE_PIP_VERSION_CHECK="1")
        env.pop("PYTHONPATH", None)
        subprocess.run([DEBIAN_PYTHON, "-m", "venv",
                        "--system-site-packages", venv], check=True,
                       timeout=120, env=env)
        py = os.path.join(venv, "bin", "python")
        p = subprocess.run([os.path.join(venv, "bin", "pip"), "install",
                            "--no-build-isolation", src],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=300, env=env, cwd=tmp)
        assert p.returncode == 0, p.stdout.decode()
        code = ("import sbx, sys\n"
                "assert sbx.__file__.startswith(sys.prefix), sbx.__file__\n"
                "with sbx.Client(sys.argv[1]) as c:\n"
                "    r = c.run_code('print(input()[::-1])', stdin='abc',"
                " run_timeout=5)\n"
                "    print(r.status, r.stdout.strip())\n")
        p = subprocess.run([py, "-c", code, srv.url], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=120, env=env,
                           cwd=tmp)
        assert p.returncode == 0, p.stdout.decode()
        assert p.stdout.decode() == "Success cba\n", p.stdout.decode()
    finally:
        shutil.rmtree(tmp)


# ---- a busy port says how to pick another ----

def test_busy_port_names_sbx_listen():
    import socket
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        p = subprocess.run([SBX, "serve", "--listen", "127.0.0.1:%d" % port],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=60)
    finally:
        s.close()
    err = p.stderr.decode()
    assert p.returncode == 1, err
    assert "Address already in use" in err, err
    assert "SBX_LISTEN" in err and "--listen" in err, err


def test_signal_refuses_unknown_fields(srv, box):
    status, _, res = srv.post(box + "/exec", {"cmd": "sleep 600",
                                              "background": True})
    assert status == 201, res
    proc = "%s/processes/%d" % (box, res["id"])
    for body in ({"sig": 9}, {"signal": "KILL"}, {"signal": 9, "x": 1}):
        status, _, res = srv.post(proc + "/signal", body)
        assert status == 422, (body, res)
        assert "'signal'" in res["error"]["message"], res
    status, _, res = srv.get(proc)
    assert status == 200 and res["status"] == "running", res
    status, _, res = srv.post(proc + "/signal", {"signal": 9})
    assert status == 200, res


# ---- a failed file upload leaves nothing behind ----

def test_failed_upload_keeps_the_old_file_whole(srv):
    status, _, info = srv.post("/v1/sandboxes", {
        "idle_timeout_s": 120, "limits": {"disk_mb": 16}})
    assert status == 201, info
    box = "/v1/sandboxes/" + info["id"]
    try:
        status, _, res = srv.request("PUT", box + "/files/keep.txt", b"old\n")
        assert status == 201, res
        big = b"x" * (40 << 20)  # past the 16 MiB disk
        status, _, res = srv.request("PUT", box + "/files/keep.txt", big)
        assert status == 413, res
        status, _, res = srv.request("PUT", box + "/files/sub/new.bin", big)
        assert status == 413, res
        # The old file is whole, the new one absent, no part file left,
        # and the disk is free again.
        status, _, text = srv.get(box + "/files/keep.txt")
        assert status == 200 and text == "old\n", text
        status, _, res = srv.get(box + "/files/sub/new.bin")
        assert status == 404, res
        status, _, res = srv.post(box + "/exec", {
            "cmd": "find /work -name '*.sbx-part-*'; du -sk /work | cut -f1"})
        assert status == 200, res
        lines = res["stdout"].split()
        assert len(lines) == 1 and int(lines[0]) < 1024, res
        # A whole upload still replaces the file, through a symlink too.
        status, _, res = srv.post(box + "/exec", {
            "cmd": "ln -s keep.txt /work/link; chmod 750 /work/keep.txt"})
        status, _, res = srv.request("PUT", box + "/files/link", b"new\n")
        assert status == 201 and res["size"] == 4, res
        status, _, text = srv.get(box + "/files/keep.txt")
        assert status == 200 and text == "new\n", text
        # It keeps its mode, and the link stays a link.
        status, _, res = srv.post(box + "/exec", {
            "cmd": "stat -c %a /work/keep.txt; readlink /work/link"})
        assert res["stdout"] == "750\nkeep.txt\n", res
    finally:
        srv.request("DELETE", box)


def test_upload_cut_short_leaves_nothing(srv):
    import socket
    import time
    status, _, info = srv.post("/v1/sandboxes", {"idle_timeout_s": 120})
    assert status == 201, info
    box = "/v1/sandboxes/" + info["id"]

    def listing():
        status, _, res = srv.post(box + "/exec", {
            "cmd": "ls -a /work; cat /work/keep.txt"})
        assert status == 200, res
        return res["stdout"]

    def wait_for(want_part):
        guard = time.monotonic() + 30
        while time.monotonic() < guard:
            out = listing()
            if ("sbx-part" in out) == want_part:
                return out
            time.sleep(0.05)
        raise AssertionError("part file %s: %s" % (
            "never appeared" if want_part else "still there", out))

    try:
        srv.request("PUT", box + "/files/keep.txt", b"old\n")
        for name in ("keep.txt", "fresh.txt"):
            s = socket.create_connection(("127.0.0.1", srv.port))
            try:
                s.sendall(("PUT %s/files/%s HTTP/1.1\r\nHost: x\r\n"
                           "Content-Length: %d\r\n\r\n"
                           % (box, name, 64 << 20)).encode())
                s.sendall(b"y" * (3 << 20))
                # The upload is under way: it writes beside the file.
                out = wait_for(True)
                assert "old" in out.split(), out
            finally:
                s.close()
            out = wait_for(False)
        assert out.split() == [".", "..", "keep.txt", "old"], out
    finally:
        srv.request("DELETE", box)

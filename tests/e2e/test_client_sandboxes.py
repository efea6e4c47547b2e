"""End-to-end tests of the Python client's stateful sandboxes
(clients/python/sbx: Client.create_sandbox() and friends, and the asyncio
twins), against a real `sbx serve` (module-scoped). Everything goes through
the client.
"""
import asyncio
import io
import os
import signal
import socketserver
import sys
import tarfile
import threading
import time

import pytest

from sbxserver import SbxServer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                "clients", "python"))
from sbx import (AsyncClient, AsyncSandbox, Busy, Client,  # noqa: E402
                 Conflict, ExecEvent, ExecResult, Forbidden, Gone, NotFound,
                 ReplResult, Sandbox, SandboxInfo, SandboxLimits, SbxTimeout,
                 TooManySandboxes, Unprocessable, UnsafeArchive)
from sbx import _tar  # noqa: E402


@pytest.fixture(scope="module")
def server():
    with SbxServer() as srv:
        yield srv


@pytest.fixture
def client(server):
    with Client(server.url, token="") as c:
        yield c


@pytest.fixture
def sb(client):
    with client.create_sandbox() as s:
        yield s


def arun(coro):
    return asyncio.run(coro)


def marker():
    return "%d-%06x" % (os.getpid(), int.from_bytes(os.urandom(3), "big"))


# ---- lifecycle ----

def test_create_describe_and_with_block_deletes(client):
    with client.create_sandbox(limits=SandboxLimits(memory_mb=256, pids=64),
                               env={"GREETING": "hi there"},
                               idle_timeout=120, max_lifetime=600,
                               labels={"suite": "client"}) as s:
        assert isinstance(s, Sandbox)
        assert s.id.startswith("sb-")
        assert s.created is not None and s.created.id == s.id
        info = s.info()
        assert isinstance(info, SandboxInfo)
        assert info.id == s.id and info.status == "running"
        assert info.labels == {"suite": "client"}
        assert info.limits.memory_mb == 256 and info.limits.pids == 64
        assert info.idle_timeout_s == 120 and info.max_lifetime_s == 600
        assert info.created_at.endswith("Z")
        assert info.background_processes == 0
        assert info.raw["id"] == s.id
        assert s.exec("echo $GREETING").stdout == "hi there\n"
        sid = s.id
    with pytest.raises(NotFound) as ei:
        client.get_sandbox(sid).info()
    assert ei.value.status == 404 and ei.value.code == "not_found"
    assert "deleted" in ei.value.message
    with pytest.raises(NotFound):
        client.get_sandbox(sid).delete()
    # A with-block over a sandbox deleted inside it ends quietly.
    with client.create_sandbox() as s:
        s.delete()
    with pytest.raises(NotFound):
        s.exec("true")


def test_create_rejects_bad_arguments(client):
    with pytest.raises(Unprocessable):
        client.create_sandbox(limits={"memory_mb": -1})
    with pytest.raises(Unprocessable):
        client.create_sandbox(idle_timeout=-5)
    with pytest.raises(TypeError):
        client.create_sandbox(env={"N": 1})
    with pytest.raises(NotFound):
        client.get_sandbox("sb-nosuch").exec("true")


def test_too_many_sandboxes():
    with SbxServer(extra_args=["--max-sandboxes", "1"]) as srv:
        with Client(srv.url, token="") as c:
            with c.create_sandbox():
                with pytest.raises(TooManySandboxes) as ei:
                    c.create_sandbox()
                assert isinstance(ei.value, Busy)
                assert ei.value.status == 429
                assert ei.value.code == "too_many_sandboxes"
            with c.create_sandbox() as s:  # the slot is free again
                assert s.exec("true").ok


def test_list_with_label_filter(client):
    m = marker()
    with client.create_sandbox(labels={"grp": m, "role": "a"}) as a, \
            client.create_sandbox(labels={"grp": m, "role": "b"}) as b:
        ids = {s.id for s in client.list_sandboxes()}
        assert {a.id, b.id} <= ids
        mine = client.list_sandboxes(label="grp=" + m)
        assert sorted(s.id for s in mine) == sorted([a.id, b.id])
        assert all(isinstance(s, SandboxInfo) for s in mine)
        only_a = [s for s in client.list_sandboxes(label="role=a")
                  if s.labels.get("grp") == m]
        assert [s.id for s in only_a] == [a.id]
        assert only_a[0].labels == {"grp": m, "role": "a"}
        assert [s.id for s in client.list_sandboxes(("grp", m))
                if s.labels["role"] == "b"] == [b.id]
        assert {s.id for s in client.list_sandboxes(label="grp")} >= {a.id,
                                                                      b.id}
        assert client.list_sandboxes(label="grp=" + m + "-none") == []
    assert client.list_sandboxes(label="grp=" + m) == []


# ---- exec ----

def test_exec_forms(sb):
    r = sb.exec("echo $((6 * 7)); pwd; echo oops >&2")
    assert isinstance(r, ExecResult)
    assert r.ok and r.status == "ok" and r.exit_code == 0, r
    assert r.stdout == "42\n/work\n" and r.stderr == "oops\n"
    assert r.wall_ms is not None and r.signal is None

    r = sb.exec(["python3", "-c", "import sys; print(sys.argv[1:])", "a b",
                 "$HOME"])
    assert r.stdout == "['a b', '$HOME']\n", r
    assert sb.exec(("printf", "%s|", "x", "y")).stdout == "x|y|"

    r = sb.exec("cat; pwd; echo $A$B", cwd="/tmp", env={"A": "1", "B": "2"},
                stdin="in\n")
    assert r.stdout == "in\n/tmp\n12\n", r

    r = sb.exec("exit 3")
    assert r.status == "nonzero_exit" and r.exit_code == 3 and not r.ok

    t0 = time.monotonic()
    r = sb.exec("sleep 30", timeout=0.5)
    assert time.monotonic() - t0 < 10
    assert r.status == "time_limit" and r.exit_code is None, r

    r = sb.exec(["/no/such/program"])
    assert r.exit_code == 127 and "no/such/program" in r.stderr

    # State lives on between execs: files, the working directory's content.
    sb.exec("echo kept > state.txt")
    assert sb.exec(["cat", "state.txt"]).stdout == "kept\n"

    with pytest.raises(TypeError):
        sb.exec(b"echo")
    with pytest.raises(ValueError):
        sb.exec([])
    with pytest.raises(Unprocessable):
        sb.exec("true", timeout=-1)


def test_exec_stream_yields_output_before_exit(client, sb):
    events, times = [], []
    t0 = time.monotonic()
    stream = sb.exec_stream(
        "for i in 1 2 3; do echo $i; sleep 0.4; done; echo err >&2; exit 3")
    for ev in stream:
        assert isinstance(ev, ExecEvent)
        events.append(ev)
        times.append(time.monotonic() - t0)
    kinds = [e.type for e in events]
    assert kinds[-1] == "exit" and kinds.count("exit") == 1, kinds
    out = "".join(e.data for e in events if e.type == "stdout")
    err = "".join(e.data for e in events if e.type == "stderr")
    assert out == "1\n2\n3\n" and err == "err\n"
    assert kinds.index("stderr") > kinds.index("stdout")
    # The first line came while the command still ran, not at its end.
    assert times[-1] - times[0] >= 0.7, times
    exit_ev = events[-1]
    assert exit_ev.result.status == "nonzero_exit"
    assert exit_ev.exit_code == 3 and exit_ev.status == "nonzero_exit"
    assert stream.result is exit_ev.result
    assert exit_ev.result.wall_ms >= 1000
    # The connection went back to the pool after the final chunk.
    assert len(client._idle) >= 1
    assert sb.exec("echo after").stdout == "after\n"

    # with-block, argv form, stdin and env; then leaving early.
    code = "import os; print(input() + os.environ['X'])"
    with sb.exec_stream(["python3", "-c", code], stdin="in",
                        env={"X": "!"}) as s:
        evs = list(s)
    assert "".join(e.data for e in evs) == "in!\n" and s.result.ok
    s = sb.exec_stream("echo first; sleep 20")
    assert next(s).data == "first\n"
    s.close()
    assert list(s) == []
    assert sb.exec("echo still").stdout == "still\n"


def test_exec_stream_error_event(client):
    s = client.create_sandbox()
    s.delete()
    with pytest.raises(NotFound) as ei:
        list(s.exec_stream("echo never"))
    assert ei.value.code == "not_found"


def test_exec_on_deleted_sandbox_is_gone(client):
    s = client.create_sandbox()
    out = []

    def run():
        try:
            out.append(s.exec("sleep 20"))
        except Exception as e:  # noqa: BLE001
            out.append(e)
    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 10
    while "sleep 20" not in s.exec("ps -eo args").stdout:
        assert time.monotonic() < deadline, "the exec never started"
        time.sleep(0.05)
    s.delete()
    t.join(15)
    assert len(out) == 1 and isinstance(out[0], Gone), out
    assert out[0].status == 410 and out[0].code == "gone"


# ---- background processes ----

def _wait_for_output(p, text):
    """Polls a Process until its stdout holds text. (A signal sent before
    the process has set itself up can be lost: see the report.)"""
    deadline = time.monotonic() + 10
    while text not in p.output().stdout:
        assert time.monotonic() < deadline, "no %r from the process" % text
        time.sleep(0.05)


def test_background_process_output_and_signal(sb):
    p = sb.start_process("trap 'echo got TERM; exit 7' TERM; echo ready; "
                         "while :; do sleep 0.05; done")
    assert p.id > 0 and p.argv[:2] == ["/bin/bash", "-c"]
    _wait_for_output(p, "ready")
    info = p.output()
    assert info.running and info.status == "running" and info.result is None
    assert info.pid and info.stdout == "ready\n"
    assert sb.info().background_processes == 1
    with pytest.raises(SbxTimeout):
        p.wait(timeout=0.3)

    assert p.signal(signal.SIGTERM).id == p.id
    done = p.wait(timeout=10)
    assert not done.running and done.status == "exited"
    assert done.result.status == "nonzero_exit" and done.exit_code == 7
    assert done.stdout == "ready\ngot TERM\n"

    k = sb.start_process(["sh", "-c", "echo up; exec sleep 100"])
    _wait_for_output(k, "up")
    k.kill()
    res = k.wait(timeout=10).result
    assert res.status == "signaled" and res.signal == signal.SIGKILL

    e = sb.start_process("cat; echo bye >&2", stdin="fed\n", cwd="/tmp")
    out = e.wait(timeout=10)
    assert out.stdout == "fed\n" and out.stderr == "bye\n"
    assert out.exit_code == 0

    procs = {q.id: q for q in sb.processes()}
    assert set(procs) == {p.id, k.id, e.id}
    assert all(q.status == "exited" for q in procs.values())
    assert procs[k.id].argv == ["sh", "-c", "echo up; exec sleep 100"]
    assert sb.process(p.id).output().stdout == "ready\ngot TERM\n"
    assert sb.info().background_processes == 0
    with pytest.raises(NotFound):
        sb.process(9999).output()


# ---- files ----

def test_files_read_write_list_remove(sb):
    blob = bytes(range(256)) * 64
    assert sb.files.write("data/blob.bin", blob) == len(blob)
    assert sb.files.read("data/blob.bin") == blob
    assert sb.exec("sha256sum data/blob.bin").stdout.split()[0] == \
        __import__("hashlib").sha256(blob).hexdigest()

    sb.files.write("data/note.txt", "héllo ✓\n")
    assert sb.files.read("data/note.txt") == "héllo ✓\n".encode()
    assert sb.files.read_text("data/note.txt") == "héllo ✓\n"
    sb.files.write("data/empty", b"")
    assert sb.files.read("data/empty") == b""

    odd = "odd dir/a #1?&%+ü.txt"
    sb.files.write(odd, b"odd")
    assert sb.files.read(odd) == b"odd"
    assert sb.exec(["cat", odd]).stdout == "odd"

    # Written by code in the sandbox, read through the API.
    sb.exec("mkdir -p made && printf 'x\\0y' > made/z")
    assert sb.files.read("made/z") == b"x\x00y"

    entries = {e.name: e for e in sb.files.list("data")}
    assert set(entries) == {"blob.bin", "note.txt", "empty"}
    assert entries["blob.bin"].type == "file"
    assert entries["blob.bin"].size == len(blob)
    assert entries["blob.bin"].mode == 0o644
    assert entries["blob.bin"].mtime and entries["blob.bin"].mtime > 1e9
    top = {e.name: e for e in sb.files.list()}
    assert top["data"].is_dir and top["odd dir"].type == "dir"
    assert sb.files.exists("data/note.txt") and not sb.files.exists("nope")

    # Absolute paths.
    sb.files.write("/tmp/abs/x.txt", "abs")
    assert sb.files.read("/tmp/abs/x.txt") == b"abs"
    assert [e.name for e in sb.files.list("/tmp/abs")] == ["x.txt"]
    assert sb.exec("cat /tmp/abs/x.txt").stdout == "abs"
    assert sb.files.exists("/tmp/abs")

    with pytest.raises(NotFound):
        sb.files.read("no/such/file")
    with pytest.raises(Conflict) as ei:
        sb.files.read("data")
    assert ei.value.code == "is_a_directory"
    with pytest.raises(Conflict):
        sb.files.list("data/note.txt")
    with pytest.raises(Forbidden):
        sb.files.write("/etc/passwd", "root::0:0::/:/bin/sh\n")

    sb.files.remove("data/empty")
    assert not sb.files.exists("data/empty")
    with pytest.raises(Conflict):
        sb.files.remove("data")  # not empty
    sb.files.remove("data", recursive=True)
    with pytest.raises(NotFound):
        sb.files.list("data")
    sb.files.remove("/tmp/abs", recursive=True)
    assert not sb.files.exists("/tmp/abs")
    with pytest.raises(NotFound):
        sb.files.remove("data")


def _make_tree(root):
    files = {
        "top.txt": b"top\n",
        "empty.bin": b"",
        "a/one.bin": bytes(range(256)) * 8,
        "a/b/two.txt": "deep ✓\n".encode(),
        "a/b/c/d/three": b"\x00\x01\x02",
        "sp ace/f i.txt": b"spaced",
    }
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    os.makedirs(os.path.join(root, "a", "emptydir"))
    os.chmod(os.path.join(root, "a", "one.bin"), 0o755)
    return files


def _read_tree(root):
    found, dirs = {}, set()
    for d, subdirs, names in os.walk(root):
        for s in subdirs:
            dirs.add(os.path.relpath(os.path.join(d, s), root))
        for n in names:
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                found[os.path.relpath(p, root)] = f.read()
    return found, dirs


def test_upload_download_dir_round_trip(sb, tmp_path):
    src = tmp_path / "src"
    files = _make_tree(str(src))
    sb.upload_dir(str(src), "proj/in")
    listing = sb.exec("cd proj/in && find . -type f | sort").stdout
    listing = listing.splitlines()
    assert listing == sorted("./" + k for k in files)
    assert sb.files.read("proj/in/a/b/c/d/three") == b"\x00\x01\x02"
    assert sb.exec("test -d proj/in/a/emptydir && test -x proj/in/a/one.bin"
                   ).ok
    sb.exec("cd proj/in && echo new > a/b/made-inside.txt")

    out = tmp_path / "out"
    sb.download_dir("proj/in", str(out))
    got, dirs = _read_tree(str(out))
    want = dict(files, **{"a/b/made-inside.txt": b"new\n"})
    assert got == want
    assert {"a", "a/b", "a/b/c", "a/b/c/d", "a/emptydir", "sp ace"} <= dirs
    assert os.stat(out / "a" / "one.bin").st_mode & 0o100

    # Absolute remote paths, into an existing local directory.
    sb.upload_dir(str(src / "a"), "/tmp/up")
    assert sb.exec("cat /tmp/up/b/two.txt").stdout == "deep ✓\n"
    sb.download_dir("/tmp/up", str(out / "again"))
    assert (out / "again" / "b" / "c" / "d" / "three").read_bytes() == \
        b"\x00\x01\x02"

    with pytest.raises(NotFound):
        sb.download_dir("no/such/dir", str(tmp_path / "x"))


def test_download_dir_refuses_links_out(sb, tmp_path):
    sb.exec("mkdir -p evil && echo ok > evil/fine && "
            "ln -s /etc/passwd evil/abs && ln -s ../../../.. evil/up")
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchive):
        sb.download_dir("evil", str(dest))
    assert not (dest / "fine").exists()  # checked before anything written
    assert not (dest / "abs").exists() and not (dest / "up").exists()
    # Links that stay inside are fine.
    sb.exec("mkdir -p good/sub && echo ok > good/sub/f && "
            "ln -s sub/f good/link")
    sb.download_dir("good", str(tmp_path / "good"))
    assert (tmp_path / "good" / "link").read_bytes() == b"ok\n"
    assert os.path.islink(tmp_path / "good" / "link")


def _tar_of(*members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for ti, data in members:
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _member(name, kind=tarfile.REGTYPE, data=b"x", link=""):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = link
    ti.size = len(data) if kind == tarfile.REGTYPE else 0
    return ti, (data if kind == tarfile.REGTYPE else None)


@pytest.mark.parametrize("use_filter", [True, False])
@pytest.mark.parametrize("bad", [
    _member("../escape"),
    _member("/abs/file"),
    _member("a/../../escape"),
    _member("l", tarfile.SYMTYPE, link="/etc"),
    _member("d/l", tarfile.SYMTYPE, link="../../outside"),
    _member("h", tarfile.LNKTYPE, link="../outside"),
    _member("dev", tarfile.CHRTYPE),
], ids=["dotdot", "absolute", "inner-dotdot", "abs-symlink",
        "rel-symlink-out", "hardlink-out", "device"])
def test_extract_rejects_unsafe_members(tmp_path, use_filter, bad):
    """The checks download_dir() runs on the archive, with tarfile's data
    filter where this Python has it and with the client's own checks."""
    dest = tmp_path / "dest"
    data = _tar_of(_member("ok.txt"), bad)
    with pytest.raises(UnsafeArchive):
        _tar.extract(data, str(dest), use_filter=use_filter)
    assert not (dest / "ok.txt").exists()
    assert not (tmp_path / "escape").exists()
    assert not (tmp_path / "outside").exists()
    _tar.extract(_tar_of(_member("ok.txt"),
                         _member("s", tarfile.SYMTYPE, link="ok.txt")),
                 str(dest), use_filter=use_filter)
    assert (dest / "s").read_bytes() == b"x"


# ---- REPL ----

def test_repl_python_state_and_errors(sb):
    r = sb.repl("import math\nx = 20\n"
                "def f(n):\n    return n * x\n"
                "print('hi')")
    assert isinstance(r, ReplResult)
    assert r.ok and r.status == "ok" and r.stdout == "hi\n", r
    assert r.result is None and r.execution_count == 1
    assert r.language == "python" and r.context == "default"
    assert not r.restarted and r.error is None

    r = sb.repl("f(2) + math.floor(1.5)")
    assert r.result == "41" and r.execution_count == 2, r

    r = sb.repl("1 / 0")
    assert r.status == "error" and not r.ok
    assert r.error.ename == "ZeroDivisionError"
    assert "division by zero" in r.error.evalue
    assert "Traceback" in r.error.traceback

    assert sb.repl("x").result == "20"  # the state survives the error

    other = sb.repl("x", context="other")
    assert other.status == "error" and other.error.ename == "NameError"
    assert other.context == "other" and other.execution_count == 1

    r = sb.repl("import time\nwhile True: time.sleep(0.05)", timeout=0.5)
    assert r.status == "timeout", r
    assert sb.repl("x + 1").result == "21"


def test_repl_bash_state_and_errors(sb):
    r = sb.repl("cd /tmp && export V=seven && greet() { echo \"hi $1\"; }",
                language="bash")
    assert r.ok and r.language == "bash", r
    r = sb.repl("pwd; echo $V; greet you", "bash")
    assert r.ok and r.stdout == "/tmp\nseven\nhi you\n", r
    assert r.execution_count == 2

    r = sb.repl("echo before; false", "bash")
    assert r.status == "error" and r.error is not None, r
    assert r.error.ename == "NonZeroExit" and r.stdout == "before\n"
    assert sb.repl("echo $V", "bash").stdout == "seven\n"

    # Python and Bash contexts are separate interpreters.
    assert sb.repl("import os; os.getcwd()").result == "'/work'"
    with pytest.raises(Unprocessable):
        sb.repl("1", language="cobol")


# ---- asyncio ----

def test_async_sandbox(server, tmp_path):
    src = tmp_path / "src"
    files = _make_tree(str(src))

    async def go():
        async with AsyncClient(server.url, token="", max_connections=8) as ac:
            async with await ac.create_sandbox(labels={"suite": "async"},
                                               env={"E": "env!"}) as s:
                assert isinstance(s, AsyncSandbox)
                info = await s.info()
                assert info.id == s.id and info.labels == {"suite": "async"}
                assert s.id in {x.id for x in
                                await ac.list_sandboxes("suite=async")}

                r = await s.exec("echo $E; cat", stdin="x")
                assert r.ok and r.stdout == "env!\nx", r
                r = await s.exec(["python3", "-c", "print(6 * 7)"])
                assert r.stdout == "42\n"

                # Streamed: events arrive while the command runs.
                t0 = asyncio.get_running_loop().time()
                events, times = [], []
                async for ev in s.exec_stream(
                        "for i in 1 2 3; do echo $i; sleep 0.4; done; exit 2"):
                    events.append(ev)
                    times.append(asyncio.get_running_loop().time() - t0)
                assert [e.type for e in events][-1] == "exit"
                assert "".join(e.data for e in events[:-1]) == "1\n2\n3\n"
                assert events[-1].exit_code == 2
                assert times[-1] - times[0] >= 0.7, times
                async with s.exec_stream("echo a; sleep 20") as st:
                    first = await st.__anext__()
                    assert first.data == "a\n"
                assert (await s.exec("echo next")).stdout == "next\n"

                # Eight at once, each on its own connection.
                t0 = asyncio.get_running_loop().time()
                rs = await asyncio.gather(*[
                    s.exec("sleep 0.5; echo %d" % i) for i in range(8)])
                assert [x.stdout for x in rs] == ["%d\n" % i for i in range(8)]
                assert asyncio.get_running_loop().time() - t0 < 3.5
                assert len(ac._idle) <= 8

                r = await s.repl("y = [1, 2]\ny.append(3)")
                assert r.ok
                r = await s.repl("sum(y)")
                assert r.result == "6" and r.execution_count == 2
                r = await s.repl("echo $E", "bash")
                assert r.stdout == "env!\n"

                assert await s.files.write("f/b.bin", b"\x00\xff") == 2
                assert await s.files.read("f/b.bin") == b"\x00\xff"
                assert [e.name for e in await s.files.list("f")] == ["b.bin"]
                await s.files.remove("f", recursive=True)
                assert not await s.files.exists("f")

                p = await s.start_process("echo bg; sleep 100")
                while "bg" not in (await p.output()).stdout:
                    await asyncio.sleep(0.05)
                await p.signal(signal.SIGKILL)
                done = await p.wait(timeout=10)
                assert done.result.signal == signal.SIGKILL
                assert [q.id for q in await s.processes()] == [p.id]

                await s.upload_dir(str(src), "tree")
                await s.download_dir("tree", str(tmp_path / "back"))
                sid = s.id
            with pytest.raises(NotFound):
                await ac.get_sandbox(sid).info()
            with pytest.raises(NotFound):
                async for _ in ac.get_sandbox(sid).exec_stream("true"):
                    pass
    arun(go())
    assert _read_tree(str(tmp_path / "back"))[0] == files


# ---- streamed replies, against a canned server ----

class _CannedStream(socketserver.ThreadingTCPServer):
    """Answers every exec with a chunked NDJSON reply whose first event is
    split across two chunks, 0.4 s apart; sb-gone gets an error event."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _CannedStreamHandler)
        self.url = "http://127.0.0.1:%d" % self.server_address[1]


class _CannedStreamHandler(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            line = self.rfile.readline()
            if not line:
                return
            path = line.split()[1].decode()
            length = 0
            while True:
                h = self.rfile.readline()
                if h in (b"\r\n", b""):
                    break
                name, _, value = h.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            self.rfile.read(length)
            self.wfile.write(b"HTTP/1.1 200 OK\r\n"
                             b"Content-Type: application/x-ndjson\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
            if "sb-gone" in path:
                chunks = [b'{"error":{"code":"gone","message":"it died"},'
                          b'"type":"error"}\n']
            else:
                chunks = [b'{"type":"stdout","da',
                          b'ta":"a\\n"}\n{"type":"stderr","data":"b"}\n',
                          b'{"type":"exit","status":"nonzero_exit",'
                          b'"exit_code":4,"signal":null}\n']
            for i, c in enumerate(chunks):
                if i:
                    time.sleep(0.4)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(c), c))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")


@pytest.fixture
def canned_stream():
    srv = _CannedStream()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _check_stream(timed):
    (t1, e1), (t2, e2), (t3, e3) = timed
    assert (e1.type, e1.data) == ("stdout", "a\n")
    assert (e2.type, e2.data) == ("stderr", "b")
    assert e3.type == "exit" and e3.exit_code == 4
    assert e3.result.status == "nonzero_exit"
    assert t3 - t1 >= 0.3  # the events came as their chunks did


def test_canned_stream_sync(canned_stream):
    with Client(canned_stream.url, token="", timeout=5) as c:
        t0 = time.monotonic()
        timed = [(time.monotonic() - t0, ev)
                 for ev in c.get_sandbox("sb-x").exec_stream("x")]
        _check_stream(timed)
        assert len(c._idle) == 1  # reused after the last chunk
        with pytest.raises(Gone) as ei:
            list(c.get_sandbox("sb-gone").exec_stream("x"))
        assert ei.value.message == "it died" and ei.value.status == 410


def test_canned_stream_async(canned_stream):
    async def go():
        async with AsyncClient(canned_stream.url, token="", timeout=5) as ac:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            timed = []
            async for ev in ac.get_sandbox("sb-x").exec_stream(["x"]):
                timed.append((loop.time() - t0, ev))
            _check_stream(timed)
            assert len(ac._idle) == 1
            with pytest.raises(Gone):
                async for _ in ac.get_sandbox("sb-gone").exec_stream("x"):
                    pass
    arun(go())

"""Hardening of stateful sandboxes (/v1/sandboxes), each test trying the
fault for real: file errors answered with a fitting status (client
mistakes are 4xx), file names that are not UTF-8, the output background
processes leave in the server, and archives and large files streamed with
bounded server memory.

Every wait is a poll with a hang guard; no test asserts how long anything
took.
"""
import base64
import hashlib
import http.client
import io
import json
import tarfile

import pytest

from conftest import MEMORY_BOUNDS
from sbxserver import SbxServer
from test_sandboxes import (GUARD_S, Boxes, as_json, check_error, poll,
                            quote_path, raw_request)


@pytest.fixture(scope="module")
def srv():
    with SbxServer() as s:
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


# ---- finding 16: errno -> status, client mistakes are 4xx ----

def test_delete_root_is_a_client_error(box):
    # rmdir("/") fails with EBUSY: the client asked for something that
    # cannot be done, which is no fault of the server.
    status, headers, data = box.call("DELETE", "/files?path=/")
    err = check_error(status, headers, data, 409, "conflict")
    assert "mount point" in err["message"], err
    # Mount points in the read-only root: EROFS comes first.
    for path in ("/tmp", "/proc", "/usr"):
        status, headers, data = box.call(
            "DELETE", "/files?path=" + quote_path(path))
        check_error(status, headers, data, 403, "forbidden")
    status, headers, data = box.call("DELETE", "/files?path=/&recursive=1")
    assert 400 <= status < 500, (status, data)
    # The sandbox still works and /work is still there.
    assert box.sh("cd /work && pwd") == "/work\n"


def test_file_errors_map_to_fitting_statuses(box):
    box.sh("mkdir -p d/sub && echo x > d/sub/f && echo y > plain && "
           "ln -s loop1 loop2 && ln -s loop2 loop1")
    cases = [
        # (method, path, body, status, code)
        ("DELETE", "/files/d", None, 409, "conflict"),         # ENOTEMPTY
        ("PUT", "/files/d", b"x", 409, "conflict"),            # EISDIR
        ("GET", "/files/plain/x", None, 404, "not_found"),     # ENOTDIR
        ("PUT", "/files/plain/x", b"x", 404, "not_found"),     # ENOTDIR
        ("GET", "/files/loop1", None, 400, "bad_request"),     # ELOOP
        ("GET", "/files/" + "n" * 300, None, 400, "bad_request"),  # ENAMETOOLONG
        ("PUT", "/files?path=/etc/hosts", b"x", 403, "forbidden"),  # EROFS
        ("DELETE", "/files?path=/etc/hosts", None, 403, "forbidden"),
    ]
    for method, sub, body, want, code in cases:
        status, headers, data = box.call(method, sub, body)
        check_error(status, headers, data, want, code)


def test_disk_full_is_not_a_server_fault(boxes):
    box = boxes(limits={"disk_mb": 1})
    status, headers, data = box.put("big.bin", b"z" * (3 << 20))
    err = check_error(status, headers, data, 413, "payload_too_large")
    assert "disk" in err["message"], err


# ---- finding 9: names that are not UTF-8 ----

BAD_NAME = b"\xff\xfe.txt"


def b64(data):
    return base64.b64encode(data).decode()


def test_non_utf8_names_round_trip(box):
    box.sh("mkdir d && printf hi > d/$'\\xff\\xfe.txt' && printf ok > d/plain")
    status, headers, data = box.get("d")
    listing = as_json(status, headers, data)
    assert status == 200, listing
    by_name = {e["name"]: e for e in listing["entries"]}
    assert set(by_name) == {"\ufffd\ufffd.txt", "plain"}, listing
    bad = by_name["\ufffd\ufffd.txt"]
    assert base64.b64decode(bad["name_b64"]) == BAD_NAME, bad
    assert bad["type"] == "file" and bad["size"] == 2, bad
    assert "name_b64" not in by_name["plain"], listing

    # The same bytes address the file: percent-encoded, or as path_b64.
    status, _, data = box.call("GET", "/files/d/%FF%FE.txt")
    assert (status, data) == (200, b"hi"), (status, data)
    path_b64 = "/files?path_b64=" + b64(b"d/" + BAD_NAME)
    status, _, data = box.call("GET", path_b64)
    assert (status, data) == (200, b"hi"), (status, data)
    status, headers, data = box.call("PUT", path_b64, b"again")
    put = as_json(status, headers, data)
    assert status == 201, put
    assert base64.b64decode(put["path_b64"]) == b"d/" + BAD_NAME, put
    assert box.sh("cat d/$'\\xff\\xfe.txt'") == "again"

    # Archives of such trees, out and in.
    status, headers, data = box.call(
        "GET", "/archive?path_b64=" + b64(b"d"))
    assert status == 200, data[:300]
    with tarfile.open(fileobj=io.BytesIO(data), encoding="utf-8",
                      errors="surrogateescape") as tar:
        names = {m.name.encode("utf-8", "surrogateescape")
                 for m in tar.getmembers()}
    assert b"./" + BAD_NAME in names, names
    box.sh("mkdir $'\\xfe\\xfd' && printf x > $'\\xfe\\xfd'/inner")
    status, _, data = box.call(
        "GET", "/archive?path_b64=" + b64(b"\xfe\xfd"))
    assert status == 200, data[:300]
    status, _, data = box.call(
        "PUT", "/archive?path_b64=" + b64(b"\xfe\xfdcopy"), data)
    assert status == 200, data
    assert box.sh("cat $'\\xfe\\xfdcopy'/inner") == "x"

    status, headers, data = box.call("DELETE", path_b64)
    assert status == 200, data
    assert box.sh("ls d") == "plain\n"
    # Bad path_b64 values are client errors.
    for bad_arg in ("%%%", b64(b"a\0b"), ""):
        status, headers, data = box.call(
            "GET", "/files?path_b64=" + bad_arg)
        check_error(status, headers, data, 400, "bad_request")


# ---- findings 4 and 13: archives and file reads streamed ----

def vm_kib(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s in /proc/%d/status" % (key, pid))


def reset_peak(pid):
    """Resets the process's VmHWM to its current RSS (clear_refs 5);
    returns False where the kernel does not allow it."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakRss:
    """The server's peak RSS growth (KiB) over a block."""

    def __init__(self, srv):
        self.pid = srv.proc.pid

    def __enter__(self):
        reset_peak(self.pid)
        self.base = vm_kib(self.pid, "VmRSS")
        return self

    def __exit__(self, *exc):
        self.growth_kib = vm_kib(self.pid, "VmHWM") - self.base


def fetch(srv, path, guard_s=120):
    """GET path, reading the body 64 KiB at a time; returns (status,
    headers, body, complete) where complete is False when the body ended
    early (a chunked body without its terminating chunk)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port,
                                      timeout=guard_s)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        parts = []
        complete = True
        try:
            while True:
                chunk = resp.read(65536)
                if not chunk:
                    break
                parts.append(chunk)
        except (http.client.IncompleteRead, ConnectionError) as e:
            if isinstance(e, http.client.IncompleteRead):
                parts.append(e.partial)
            complete = False
        return (resp.status, {k.lower(): v for k, v in resp.getheaders()},
                b"".join(parts), complete)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def big_srv():
    with SbxServer(extra_args=["--max-disk", "512M"]) as s:
        yield s
        assert s.proc.poll() is None, "the server died:\n" + s.read_log()


def test_sparse_files_archive_small_and_round_trip(big_srv):
    boxes = Boxes(big_srv)
    try:
        box = boxes(limits={"disk_mb": 16})
        # Six 40 MB sparse files in a 16 MiB sandbox, each with a little
        # data at its start and at its end.
        box.sh("mkdir sp && for i in 1 2 3 4 5 6; do "
               "printf head$i > sp/f$i && truncate -s 40000000 sp/f$i && "
               "printf tail$i >> sp/f$i; done")
        with PeakRss(big_srv) as peak:
            status, headers, data, complete = fetch(
                big_srv, "/v1/sandboxes/%s/archive?path=sp" % box.id)
        assert status == 200 and complete, (status, data[:300])
        assert headers["content-type"] == "application/x-tar", headers
        # Far below the 240 MB the files claim: the holes are not sent.
        assert len(data) < 16 << 20, len(data)
        assert not MEMORY_BOUNDS or peak.growth_kib < 48 << 10, \
            peak.growth_kib
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            files = {m.name: m for m in tar.getmembers() if m.isfile()}
            assert sorted(files) == ["./f%d" % i for i in range(1, 7)]
            for i in range(1, 7):
                m = files["./f%d" % i]
                assert m.size == 40000000 + 5, (m.name, m.size)
                body = tar.extractfile(m).read()
                assert body.startswith(b"head%d" % i)
                assert body.endswith(b"tail%d" % i)
                assert body.count(b"\0") == len(body) - 10
        # And back in: extracted by tar inside, sparse again.
        status, _, reply = box.call("PUT", "/archive?path=back", data)
        assert status == 200, reply
        out = box.sh("du -k back/f3 | cut -f1; stat -c %s back/f3; "
                     "tail -c 5 back/f3")
        used_kib, size, tail = out.split("\n")[:3]
        assert int(used_kib) < 1024 and size == "40000005", out
        assert tail == "tail3", out
    finally:
        boxes.cleanup()


def test_large_archive_and_file_stream_with_bounded_memory(big_srv):
    # Files are capped at 64 MiB inside (RLIMIT_FSIZE): two of 60 MB make
    # a 120 MB archive.
    boxes = Boxes(big_srv)
    try:
        box = boxes(limits={"disk_mb": 300, "memory_mb": 512})
        box.sh("mkdir big && head -c 60000000 /dev/urandom > big/r1 && "
               "head -c 60000000 /dev/urandom > big/r2")
        digests = box.sh("sha256sum big/r1 big/r2 | cut -d' ' -f1").split()
        with PeakRss(big_srv) as peak:
            status, _, data, complete = fetch(
                big_srv, "/v1/sandboxes/%s/archive?path=big" % box.id)
        assert status == 200 and complete, (status, data[:300])
        assert len(data) > 120000000
        assert not MEMORY_BOUNDS or peak.growth_kib < 32 << 10, \
            peak.growth_kib
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            got = [hashlib.sha256(tar.extractfile("./r%d" % i).read())
                   .hexdigest() for i in (1, 2)]
        assert got == digests
        del data

        with PeakRss(big_srv) as peak:
            status, headers, data, complete = fetch(
                big_srv, "/v1/sandboxes/%s/files/big/r1" % box.id)
        assert status == 200 and complete, (status, data[:300])
        assert headers["content-type"] == "application/octet-stream"
        assert hashlib.sha256(data).hexdigest() == digests[0]
        assert not MEMORY_BOUNDS or peak.growth_kib < 32 << 10, \
            peak.growth_kib
    finally:
        boxes.cleanup()


def test_paths_that_cannot_be_archived_are_refused(box):
    box.sh("ln -s / to_root && ln -s /proc to_proc && mkdir ok && "
           "echo x > plain")
    cases = [
        ("/", 403, "forbidden"),
        ("/proc", 403, "forbidden"),
        ("/usr", 403, "forbidden"),
        ("/etc/..", 400, "bad_request"),
        ("..", 400, "bad_request"),
        ("ok/../..", 400, "bad_request"),
        ("to_root", 403, "forbidden"),     # leads out through a symlink
        ("to_proc", 403, "forbidden"),
        ("nope", 404, "not_found"),
        ("plain", 400, "bad_request"),
    ]
    for path, want, code in cases:
        status, headers, data = box.call(
            "GET", "/archive?path=" + quote_path(path), guard_s=GUARD_S)
        err = check_error(status, headers, data, want, code)
        assert path in err["message"], err
    status, _, data = box.call("GET", "/archive?path=/work/ok")
    assert status == 200, data[:300]


def test_archive_that_fails_midway_is_truncated(srv, box):
    # tar skips an unreadable file and ends with status 2: the archive
    # is not whole, and the client must be able to tell.
    box.sh("mkdir t && head -c 3000000 /dev/zero > t/a && echo s > t/b && "
           "chmod 000 t/b")
    status, _, data, complete = fetch(
        srv, "/v1/sandboxes/%s/archive?path=t" % box.id)
    assert status == 200, data[:300]
    assert not complete, len(data)
    # The sandbox and the server carry on.
    assert box.sh("echo alive") == "alive\n"


# ---- finding 7: what background processes leave in the server ----

MIB = 1 << 20


def start_bg(box, cmd):
    status, headers, data = box.exec_raw({"cmd": cmd, "background": True})
    proc = as_json(status, headers, data)
    assert status == 201, proc
    return proc["id"]


def wait_exited(box, n):
    """Waits for process n to end and reads its output."""
    wait_ended(box, n)
    return as_json(*box.call("GET", "/processes/%d" % n))


def wait_ended(box, n):
    """Waits for process n to end without reading its output (the list
    holds none)."""
    def done():
        procs = as_json(*box.call("GET", "/processes"))["processes"]
        return [p for p in procs if p["id"] == n and
                p["status"] == "exited"]
    poll("background process %d to end" % n, done)


def test_background_output_dropped_read_first(box):
    # Four processes of exactly 1 MiB each fill the sandbox's 4 MiB; U
    # ended first but R was read, so R's output goes first.
    ids = {}
    for name in ("U", "R", "B1", "B2"):
        ids[name] = start_bg(box, "yes %s | head -c %d" % (name, MIB))
        wait_ended(box, ids[name])
    got = as_json(*box.call("GET", "/processes/%d" % ids["R"]))
    assert len(got["stdout"]) == MIB and not got["output_dropped"], \
        {k: v for k, v in got.items() if k != "stdout"}
    x = start_bg(box, "echo x")
    assert wait_exited(box, x)["stdout"] == "x\n"
    r = as_json(*box.call("GET", "/processes/%d" % ids["R"]))
    assert r["output_dropped"] and r["output_truncated"], r
    assert r["stdout"] == "", r
    assert r["result"]["status"] == "ok", r
    u = as_json(*box.call("GET", "/processes/%d" % ids["U"]))
    assert not u["output_dropped"] and len(u["stdout"]) == MIB, \
        {k: v for k, v in u.items() if k != "stdout"}


def test_background_output_is_bounded_per_sandbox(srv, box):
    pid = srv.proc.pid
    base = vm_kib(pid, "VmRSS")
    # 70 processes writing 1.5 MiB to each stream: the old server kept
    # 2 MiB of each, 140 MiB in all, until the sandbox was deleted.
    cmd = ("yes o | head -c %d; yes e | head -c %d >&2"
           % (3 * MIB // 2, 3 * MIB // 2))
    def all_ended():
        procs = as_json(*box.call("GET", "/processes"))
        return procs if all(p["status"] == "exited"
                            for p in procs["processes"]) else None

    ids = []
    for _ in range(7):      # ten at a time, within the sandbox's pids
        ids += [start_bg(box, cmd) for _ in range(10)]
        procs = poll("the background processes to end", all_ended)
    # At most 64 ended processes are remembered; the oldest went.
    listed = [p["id"] for p in procs["processes"]]
    assert len(listed) == 64, len(listed)
    assert procs["dropped_records"] == 6, procs["dropped_records"]
    gone = sorted(set(ids) - set(listed))
    assert len(gone) == 6, gone
    status, headers, data = box.call("GET", "/processes/%d" % gone[0])
    err = check_error(status, headers, data, 404, "not_found")
    assert "dropped" in err["message"], err

    # The last ten shared the 4 MiB while they ran (those that ended
    # first may have made room for the others); nothing from before them
    # is kept: dropped to make that room, or never kept for want of it.
    kept = dropped = 0
    for n in listed:
        got = as_json(*box.call("GET", "/processes/%d" % n))
        assert got["result"]["status"] == "ok", got["result"]
        kept += len(got["stdout"]) + len(got["stderr"])
        dropped += got["output_dropped"]
        assert got["output_truncated"], got["id"]
        if n not in ids[-10:]:
            assert got["stdout"] == got["stderr"] == "", got["id"]
    assert dropped >= 10, dropped
    assert kept <= 4 * MIB, kept
    # The server does not hold what was dropped.
    grown = vm_kib(pid, "VmRSS") - base
    assert not MEMORY_BOUNDS or grown < 48 << 10, grown


def test_client_names_that_are_not_utf8(srv):
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                    "clients", "python"))
    from sbx import Client
    with Client(srv.url, token="") as client:
        sb = client.create_sandbox()
        try:
            sb.exec("mkdir d && printf hi > d/$'\\xff\\xfe.txt'")
            entries = sb.files.list("d")
            assert [e.name_bytes for e in entries] == [BAD_NAME], entries
            path = b"d/" + entries[0].name_bytes
            assert sb.files.read(path) == b"hi"
            sb.files.write(path, b"more")
            assert sb.files.read(path) == b"more"
        finally:
            sb.delete()


def test_repl_reply_with_bytes_that_are_not_utf8(box):
    # Python's json writes such text with lone surrogates, which a strict
    # parser refuses: the reply used to be dropped, the cell waited for
    # its timeout and the REPL was killed, losing its state.
    box.repl("kept = 41")
    res = box.repl("raise ValueError('\\udcff')", timeout_s=20)
    assert res["status"] == "error" and not res["restarted"], res
    assert res["error"]["ename"] == "ValueError", res
    assert res["error"]["evalue"] == "\ufffd", res
    res = box.repl("'\\U0001F600' + str(kept + 1)")
    assert res["result"] == "'\U0001F600" + "42'", res
    assert not res["restarted"], res


# ---- a sibling of the run routes' reply cap: waited-for exec replies ----

def test_exec_reply_is_capped_by_its_serialised_size(boxes):
    # Control bytes serialise as \u00XX, six bytes each: the cap counts
    # what the reply will hold, not the raw bytes.
    cap = 1 << 20
    box = boxes(limits={"output_bytes": cap})
    status, headers, data = box.exec_raw(
        {"argv": ["python3", "-c",
                  "import sys; sys.stdout.buffer.write(b'\\x01' * %d); "
                  "sys.stderr.buffer.write(b'\\x02' * %d)" % (cap, cap)]})
    assert status == 200, (status, data[:200])
    res = json.loads(data)
    assert res["output_truncated"] is True, {k: v for k, v in res.items()
                                            if k not in ("stdout",
                                                         "stderr")}
    assert 0 < len(res["stdout"]) <= cap // 6
    assert 0 < len(res["stderr"]) <= cap // 6
    assert set(res["stdout"]) == {"\x01"}
    # Both streams at their cap, plus the other fields.
    assert len(data) <= 2 * cap + 4096, len(data)

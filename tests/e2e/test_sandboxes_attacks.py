"""Attacks on the stateful-sandbox file and archive APIs, tried for real.

sbx's file commands run in the sandbox's init, as the sandbox user, in the
sandbox's mount namespace; archives are packed and unpacked by tar inside
the sandbox. So whatever the sandboxed code plants (symlinks, hard links,
FIFOs, '..') must lead nowhere on the host. Each test plants the trap,
springs it through the API, and then checks the host directly: the host
file unchanged, no new host file, and the error the API gave is the one
that shows which wall stopped it.
"""
import hashlib
import io
import os
import re
import shutil
import tarfile
import uuid

import pytest

from conftest import SBX
from sbxserver import SbxServer
from test_sandboxes import GUARD_S, Boxes, as_json, check_error, poll


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


class Host:
    """Host files a sandbox must never reach: a secret file, a directory
    with a file in it, and names that must not come to exist."""

    def __init__(self):
        tag = uuid.uuid4().hex[:12]
        self.secret = "/tmp/sbx-host-secret-" + tag
        self.content = ("host secret %s\n" % uuid.uuid4().hex).encode()
        with open(self.secret, "wb") as f:
            f.write(self.content)
        os.chmod(self.secret, 0o644)
        self.dir = "/tmp/sbx-host-dir-" + tag
        os.mkdir(self.dir)
        os.chmod(self.dir, 0o777)
        with open(os.path.join(self.dir, "inner.txt"), "wb") as f:
            f.write(self.content)
        self.tag = tag
        self.fresh = []  # host paths that must stay absent

    def absent(self, name):
        """A host path, not yet there, that must stay so."""
        path = "/tmp/sbx-%s-%s" % (name, self.tag)
        assert not os.path.lexists(path)
        self.fresh.append(path)
        return path

    def check(self):
        with open(self.secret, "rb") as f:
            assert f.read() == self.content, "the host secret changed"
        st = os.lstat(self.secret)
        assert st.st_uid == 0 and st.st_nlink == 1, st
        assert sorted(os.listdir(self.dir)) == ["inner.txt"], \
            os.listdir(self.dir)
        with open(os.path.join(self.dir, "inner.txt"), "rb") as f:
            assert f.read() == self.content
        for path in self.fresh:
            assert not os.path.lexists(path), "created on the host: " + path

    def cleanup(self):
        for path in [self.secret] + self.fresh:
            if os.path.lexists(path):
                os.unlink(path)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def host():
    h = Host()
    try:
        yield h
        h.check()
    finally:
        h.cleanup()


def host_only_passwd_lines():
    """Lines of the host's /etc/passwd that the sandbox's generated one
    cannot hold (users other than root, sandbox and nobody, and root's
    line when it differs from the sandbox's)."""
    sandbox_root = "root:x:0:0:root:/root:/bin/sh"
    lines = []
    with open("/etc/passwd") as f:
        for line in f.read().splitlines():
            name = line.split(":", 1)[0]
            if name in ("sandbox", "nobody") or not line:
                continue
            if name == "root" and line == sandbox_root:
                continue
            lines.append(line)
    return lines


def assert_sandbox_passwd(data):
    text = data.decode()
    # The sandbox's generated passwd (uid 1000 inside a user namespace,
    # the sandbox's host uid without one).
    assert re.search(r"^sandbox:x:\d+:\d+:sandbox:/home/sandbox:", text,
                     re.M), text
    for line in host_only_passwd_lines():
        assert line not in text, "host line %r came back" % line


# ---- symlinks ----

def test_symlink_to_host_file_reads_nothing(box, host):
    box.sh("ln -s %s /work/link" % host.secret)
    status, headers, data = box.get("link")
    # Host /tmp is not the sandbox's /tmp: the target does not exist.
    err = check_error(status, headers, data, 404, "not_found")
    assert host.content not in data
    assert "link" in err["message"], err
    check_error(*box.get_abs(host.secret), 404, "not_found")
    listing = as_json(*box.get(""))
    assert {"name": "link", "type": "symlink"}.items() <= \
        [e for e in listing["entries"] if e["name"] == "link"][0].items()


def test_symlink_to_host_dir_reads_and_writes_nothing(box, host):
    box.sh("ln -s %s /work/dlink" % host.dir)
    check_error(*box.get("dlink"), 404, "not_found")
    check_error(*box.get("dlink/inner.txt"), 404, "not_found")
    check_error(*box.get_abs(host.dir), 404, "not_found")
    err = check_error(*box.put("dlink/new.txt", b"planted"), 404,
                      "not_found")
    assert "dlink/new.txt" in err["message"], err
    check_error(*box.call("DELETE", "/files/dlink/inner.txt"), 404,
                "not_found")
    # A recursive delete removes links, never what they point at.
    box.sh("mkdir /work/t && ln -s %s /work/t/l" % host.dir)
    assert box.call("DELETE", "/files/t?recursive=1")[0] == 200
    assert box.call("DELETE", "/files/dlink?recursive=1")[0] == 200
    assert box.sh("ls -A /work") == ""


def test_put_through_symlink_lands_in_the_sandbox(box, host):
    box.sh("ln -s %s /work/link" % host.secret)
    status, headers, data = box.put("link", b"pwned")
    # The dangling link is followed inside the sandbox: the file appears
    # in the sandbox's own /tmp, never the host's.
    assert status == 201, data
    assert box.sh("cat %s" % host.secret) == "pwned"
    new = host.absent("through-link")
    box.sh("ln -s %s /work/link2" % new)
    assert box.put("link2", b"pwned")[0] == 201
    assert box.sh("cat %s" % new) == "pwned"
    # Overwriting the sandbox's copy changes nothing on the host either.
    assert box.put_abs(host.secret, b"again")[0] == 201
    host.check()


def test_hard_link_to_host_visible_file_fails(box):
    res = box.exec(cmd="ln /usr/bin/env /work/h")
    assert res["status"] == "nonzero_exit", res
    assert "Invalid cross-device link" in res["stderr"], res
    check_error(*box.get("h"), 404, "not_found")
    # And through the syscall itself, for the errno: /usr is another
    # (read-only) mount, so the kernel says EXDEV before anything else.
    res = box.exec(argv=["python3", "-c",
                         "import errno, os\n"
                         "for src in ['/usr/bin/env', '/etc/passwd']:\n"
                         "    try:\n"
                         "        os.link(src, '/work/h')\n"
                         "        print(src, 'linked')\n"
                         "    except OSError as e:\n"
                         "        print(src, errno.errorcode[e.errno])\n"])
    assert res["stdout"] == "/usr/bin/env EXDEV\n/etc/passwd EXDEV\n", res


# ---- '..' and absolute paths ----

@pytest.mark.parametrize("sub", [
    "/files/../../etc/passwd",
    "/files/../../../../../../etc/passwd",
    "/files/%2e%2e/%2e%2e/etc/passwd",
    "/files/sub/../../../etc/passwd",
    "/files?path=/work/../../etc/passwd",
    "/files?path=../../etc/passwd",
    "/files?path=/etc/passwd",
], ids=["dotdot", "many-dotdot", "encoded", "sub-dotdot", "abs-dotdot",
        "query-dotdot", "abs"])
def test_dotdot_reads_the_sandbox_passwd(box, sub):
    box.sh("mkdir /work/sub")
    status, headers, data = box.call("GET", sub)
    assert status == 200, data
    assert_sandbox_passwd(data)


def test_dotdot_put_stays_in_the_sandbox(box, host):
    target = host.absent("escape")
    name = os.path.basename(target)
    status, headers, data = box.put("../../../tmp/" + name, b"escaped")
    assert status == 201, data
    assert box.sh("cat /tmp/" + name) == "escaped"
    status, headers, data = box.put("../../../../../../../tmp/%s-2" % name,
                                    b"escaped")
    assert status == 201, data
    host.fresh.append(target + "-2")


def test_read_only_paths_are_forbidden(box, host):
    before = box.get_abs("/etc/passwd")[2]
    err = check_error(*box.put_abs("/etc/passwd", b"root::0:0::/:/bin/sh\n"),
                      403, "forbidden")
    assert "Read-only file system" in err["message"], err
    assert box.get_abs("/etc/passwd")[2] == before
    new = "/usr/bin/sbx-planted-" + host.tag
    err = check_error(*box.put_abs(new, b"#!/bin/sh\n"), 403, "forbidden")
    assert "Read-only file system" in err["message"], err
    assert not os.path.lexists(new)
    st = os.stat("/usr/bin/env")
    err = check_error(*box.call("DELETE", "/files?path=/usr/bin/env"), 403,
                      "forbidden")
    assert "Read-only file system" in err["message"], err
    after = os.stat("/usr/bin/env")
    assert (after.st_ino, after.st_size, after.st_mtime) == \
        (st.st_ino, st.st_size, st.st_mtime)


# ---- loops, FIFOs, devices: an error, promptly ----

def test_symlink_loops_are_an_error(box):
    box.sh("ln -s loop1 /work/loop2 && ln -s loop2 /work/loop1 && "
           "ln -s . /work/self")
    for status, headers, data in [box.get("loop1"),
                                  box.put("loop1", b"x"),
                                  box.put("loop1/x", b"x")]:
        err = check_error(status, headers, data, status)
        assert status in (400, 404), err
        if status == 400:
            assert "Too many levels of symbolic links" in err["message"]
    deep = "/".join(["self"] * 60) + "/x"
    status, headers, data = box.get(deep)
    assert status in (400, 404), data
    status, headers, data = box.put(deep, b"x")
    assert status in (201, 400, 404), data
    # The links themselves are still there, and the sandbox still serves.
    assert box.sh("readlink /work/loop1") == "loop2\n"


def test_fifo_get_is_refused_at_once(box):
    box.sh("mkfifo /work/f")
    err = check_error(*box.get("f", guard_s=10), 400, "bad_request")
    assert "'f'" in err["message"], err
    assert box.sh("echo alive") == "alive\n"


def test_fifo_put_is_refused_at_once(box):
    """No reader on the FIFO: a client error, not a server fault."""
    box.sh("mkfifo /work/f")
    status, headers, data = box.put("f", b"into the fifo", guard_s=10)
    err = check_error(status, headers, data, status)
    assert 400 <= status < 500 and err["code"] != "internal", (status, err)
    assert box.sh("echo alive") == "alive\n"


def test_fifo_with_a_reader_gets_no_bytes(box):
    """With a reader on the FIFO, opening it for writing succeeds; sbx must
    still refuse to write into anything but a regular file."""
    box.sh("mkfifo /work/f")
    reader = ("import os, time\n"
              "fd = os.open('/work/f', os.O_RDONLY | os.O_NONBLOCK)\n"
              "open('/work/ready', 'w').close()\n"
              "got = b''\n"
              "guard = time.monotonic() + 15\n"
              "while not os.path.exists('/work/done') and "
              "time.monotonic() < guard:\n"
              "    try:\n"
              "        got += os.read(fd, 65536)\n"
              "    except BlockingIOError:\n"
              "        pass\n"
              "    time.sleep(0.02)\n"
              "open('/work/f.out', 'wb').write(got)\n")
    status, headers, data = box.exec_raw({
        "argv": ["python3", "-c", reader], "background": True})
    assert status == 201, data
    poll("the reader to open the FIFO", lambda: box.get("ready")[0] == 200)
    err = check_error(*box.put("f", b"into the fifo", guard_s=10), 400,
                      "bad_request")
    assert "'f'" in err["message"], err
    assert box.put("done", b"")[0] == 201
    poll("the reader to finish", lambda: box.get("f.out")[0] == 200)
    assert box.get("f.out")[2] == b""


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_device_files_are_refused(box, path):
    err = check_error(*box.get_abs(path, guard_s=10), 400, "bad_request")
    assert path in err["message"], err
    status, headers, data = box.put_abs(path, b"x", guard_s=10)
    assert status in (400, 403), data


# ---- init's own /proc entries lead to the host ----

def test_proc_1_exe_does_not_read_the_host_binary(boxes):
    """The file API runs in the sandbox's init, whose executable is sbx on
    the host. A planted link to /proc/1/exe (or ?path=/proc/1/exe) must not
    hand out that host file."""
    box = boxes()
    with open(os.path.realpath(SBX), "rb") as f:
        host_head = f.read(4096)
    box.sh("ln -s /proc/1/exe /work/exe")
    for call in (lambda: box.get("exe", guard_s=10),
                 lambda: box.get_abs("/proc/1/exe", guard_s=10)):
        try:
            status, headers, data = call()
        except OSError as e:
            pytest.fail("GET of /proc/1/exe did not answer (%r): init "
                        "opened the host's sbx binary and tried to send "
                        "it" % e)
        assert not data.startswith(host_head[:64]), \
            "the host's sbx binary came back (%d bytes)" % len(data)
        assert 400 <= status < 500, (status, data[:300])


# ---- archives ----

def make_tar(members):
    """members: (name, kind, data or link target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, kind, arg in members:
            ti = tarfile.TarInfo(name)
            ti.mode = 0o644
            if kind == "file":
                ti.size = len(arg)
                tf.addfile(ti, io.BytesIO(arg))
            elif kind == "dir":
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
                tf.addfile(ti)
            else:
                ti.type = tarfile.SYMTYPE if kind == "symlink" \
                    else tarfile.LNKTYPE
                ti.linkname = arg
                tf.addfile(ti)
    return buf.getvalue()


def put_archive(box, path, data):
    return box.call("PUT", "/archive?path=" + path, data, guard_s=GUARD_S)


def sandbox_find(box, name):
    """Every path in the sandbox (outside /proc and /usr) whose name
    contains name."""
    out = box.sh("find / \\( -path /proc -o -path /usr \\) -prune -o "
                 "-name '*%s*' -print 2>/dev/null; true" % name)
    return sorted(out.split())


def test_tar_hostile_members(box, host):
    abs_evil = host.absent("abs-evil")
    dd_name = "sbx-dd-evil-" + host.tag
    data = make_tar([
        ("ok.txt", "file", b"fine"),
        (abs_evil, "file", b"absolute"),
        ("../../" + dd_name, "file", b"dotdot"),
        ("../../../../../../tmp/" + dd_name, "file", b"dotdot"),
        ("lnk", "symlink", host.secret),
        ("lnk/x", "file", b"through the link"),
        ("lnk", "file", b"over the link"),
        ("dlnk", "symlink", host.dir),
        ("dlnk/new-%s.txt" % host.tag, "file", b"into the host dir"),
        ("hl", "hardlink", "/etc/passwd"),
        ("hl2", "hardlink", "../../../etc/passwd"),
        ("hl3", "hardlink", host.secret),
    ])
    host.fresh.append("/tmp/" + dd_name)
    status, headers, body = put_archive(box, "/work/up", data)
    reply = as_json(status, headers, body)
    # tar refuses the '..' members, so the archive is refused whole, with
    # tar's own words, and nothing of it is left (uploads are all or
    # nothing).
    assert status == 400, reply
    assert reply["error"]["code"] == "bad_archive", reply
    msg = reply["error"]["message"]
    assert "Removing leading `/' from member names" in msg, msg
    assert "Member name contains '..'" in msg, msg
    assert box.sh("ls -A /work/up") == ""
    # Members written through links the archive planted: tar refuses
    # them, and again nothing is left.
    data = make_tar([
        ("lnk", "symlink", host.secret),
        ("lnk/x", "file", b"through the link"),
        ("dlnk", "symlink", host.dir),
        ("dlnk/new-%s.txt" % host.tag, "file", b"into the host dir"),
    ])
    status, headers, body = put_archive(box, "/work/up", data)
    reply = as_json(status, headers, body)
    assert status == 400, reply
    assert "Not a directory" in reply["error"]["message"], reply
    assert box.sh("ls -A /work/up") == ""
    # Without the members tar refuses, what it unpacks stays in /work/up.
    data = make_tar([
        ("ok.txt", "file", b"fine"),
        (abs_evil, "file", b"absolute"),
        ("lnk", "symlink", host.secret),
        ("lnk", "file", b"over the link"),
        ("dlnk", "symlink", host.dir),
    ])
    status, headers, body = put_archive(box, "/work/up", data)
    reply = as_json(status, headers, body)
    assert status == 200, reply
    assert box.get("up/ok.txt")[2] == b"fine"
    # The absolute member lost its leading '/': it is under /work/up.
    assert box.get("up" + abs_evil)[2] == b"absolute"
    # Nothing landed outside /work/up inside the sandbox either.
    for found in sandbox_find(box, host.tag):
        assert found.startswith("/work/up/"), found
    assert box.sh("ls -A /tmp") == "", "tar wrote into the sandbox's /tmp"
    assert box.sh("ls -A /work") == "up\n"
    # The hard links, if any, point at nothing from outside /work/up.
    for name in ("hl", "hl2", "hl3"):
        status, _, got = box.get("up/" + name)
        assert status == 404 or b"sandbox:x:1000" not in got, (name, got)
        assert host.content not in got
    # The secret's path names no file in the sandbox.
    check_error(*box.get_abs(host.secret), 404, "not_found")


def test_tar_symlink_then_write_through_it(box, host):
    """Two archives: the first plants links, the second writes through
    them. Whatever tar follows, it follows inside the sandbox."""
    through = host.absent("through-tar")
    first = make_tar([
        ("tmplink", "symlink", "/tmp"),
        ("seclink", "symlink", host.secret),
        ("dirlink", "symlink", host.dir),
    ])
    status, headers, body = put_archive(box, "/work/up", first)
    assert status == 200, body
    second = make_tar([
        ("tmplink/" + os.path.basename(through), "file", b"via link"),
        ("seclink", "file", b"over the secret"),
        ("dirlink/new.txt", "file", b"into the host dir"),
    ])
    status, headers, body = put_archive(box, "/work/up", second)
    assert status in (200, 400), body
    found = sandbox_find(box, os.path.basename(through))
    assert all(p in (through, "/work/up/tmplink/" + os.path.basename(through))
               for p in found), found


def test_archive_of_a_symlink_to_shadow_holds_the_link(box):
    box.sh("mkdir -p /work/d/sub && echo hi > /work/d/f && "
           "ln -s /etc/shadow /work/d/sh && ln -s ../f /work/d/sub/up")
    status, headers, data = box.call("GET", "/archive?path=/work/d")
    assert status == 200, data[:300]
    assert headers["content-type"] == "application/x-tar", headers
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = {m.name.lstrip("./"): m for m in tf.getmembers()}
        assert members["sh"].issym(), members
        assert members["sh"].linkname == "/etc/shadow"
        assert members["sub/up"].issym() and \
            members["sub/up"].linkname == "../f"
        assert members["f"].isfile()
        assert tf.extractfile(members["f"]).read() == b"hi\n"
        regular = [m for m in tf.getmembers() if m.isfile()]
        assert [m.name.lstrip("./") for m in regular] == ["f"], regular
    if os.path.exists("/etc/shadow"):
        with open("/etc/shadow", "rb") as f:
            first = f.readline().strip()
        if first:
            assert first not in data, "host /etc/shadow content in the tar"


def test_archive_round_trip_and_errors(box):
    data = make_tar([("a/b.txt", "file", b"bee"), ("a/c", "dir", None),
                     ("a/l", "symlink", "b.txt")])
    status, headers, body = put_archive(box, "in", data)
    assert status == 200, body
    assert as_json(status, headers, body) == {"path": "in"}
    assert box.get("in/a/b.txt")[2] == b"bee"
    # Unpacked as the sandbox user, whatever the archive said.
    assert box.sh("readlink in/a/l; [ $(stat -c %u in/a/b.txt) = $(id -u) ]"
                  " && id -un") == "b.txt\nsandbox\n"
    status, headers, out = box.call("GET", "/archive?path=in")
    assert status == 200
    with tarfile.open(fileobj=io.BytesIO(out)) as tf:
        names = sorted(m.name.lstrip("./") for m in tf.getmembers())
    assert {"a", "a/b.txt", "a/c", "a/l"} <= set(names), names
    err = check_error(*put_archive(box, "in", b"not a tar" * 100), 400,
                      "bad_archive")
    assert "tar" in err["message"], err
    err = check_error(*box.call("GET", "/archive?path=nope"), 404,
                      "not_found")
    status, headers, body = put_archive(box, "/usr/planted", data)
    check_error(status, headers, body, 400, "bad_archive")
    assert not os.path.exists("/usr/planted")


def test_attacks_leave_the_sandbox_usable(box, host):
    """After the traps, plain files still work: a sanity check that the
    errors above came from the traps, not from a broken sandbox."""
    assert box.put("plain.txt", b"plain")[0] == 201
    assert box.get("plain.txt")[2] == b"plain"
    digest = hashlib.sha256(host.content).hexdigest()
    assert digest not in box.sh("sha256sum /work/plain.txt")

"""Each live sandbox has host uids of its own, and its user namespace is
owned by an unprivileged host uid (issue 7, findings 2 and 3).

Per-user kernel budgets (inotify instances, pipe buffer pages, pending
signals, fds in flight) are charged to the uid a process runs as, and for
counts kept per user namespace, up the chain to the namespace's owner. With
every sandbox on one host uid and the namespace created by root, one
sandbox could use up root's budget and every other sandbox's. Each test
tries that for real, or checks the ids from the host.

Every wait is a poll with a hang guard; no test asserts how long anything
took.
"""
import array
import ctypes
import fcntl
import os
import resource
import shutil
import subprocess
import tempfile
import textwrap
import threading
import time

import pytest

from conftest import (SANDBOX_UID, SBX, UID_SLOT_IDS, describe,
                      host_cmdline_pids, one_slot_env, py, unique_marker)
from sbxserver import SbxServer

GUARD_S = 60  # hang guard for every wait
NS_GET_OWNER_UID = 0xB704  # _IO(0xb7, 0x4)
SYSTEMD_RANGE = (524288, 1879048191)


def wait_for(fn, what, timeout=GUARD_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


def subid_ranges():
    """(first, last) of every /etc/subuid and /etc/subgid line."""
    ranges = []
    for path in ("/etc/subuid", "/etc/subgid"):
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            continue
        for line in lines:
            parts = line.split(":")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                first, count = int(parts[1]), int(parts[2])
                ranges.append((first, first + count - 1))
    return ranges


def status_of(pid):
    with open("/proc/%d/status" % pid) as f:
        return dict(l.split(":", 1) for l in f.read().splitlines())


def ids_of(pid):
    st = status_of(pid)
    return ([int(u) for u in st["Uid"].split()],
            [int(g) for g in st["Gid"].split()], int(st["PPid"]))


def ns_owner(pid):
    fd = os.open("/proc/%d/ns/user" % pid, os.O_RDONLY | os.O_CLOEXEC)
    try:
        a = array.array("I", [0])
        fcntl.ioctl(fd, NS_GET_OWNER_UID, a, True)
        return a[0]
    finally:
        os.close(fd)


class Holder:
    """A sandbox (`sbx run`) that takes something, prints one line, and
    holds it until the test creates /shared/go."""

    def __init__(self, body, opts=(), env=None):
        self.done = None
        self.shared = tempfile.mkdtemp(prefix="sbx-e2e-uids-")
        os.chmod(self.shared, 0o755)
        code = textwrap.dedent(body) + textwrap.dedent("""\
            import os as _os, time as _time
            while not _os.path.exists("/shared/go"):
                _time.sleep(0.02)
            """)
        self.proc = subprocess.Popen(
            [SBX, "run", "-t", "120s", "--ro-bind",
             self.shared + ":/shared"] + list(opts) +
            ["--", "python3", "-c", code],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=env)

    def first_line(self):
        # Ends with the sandbox (its wall limit at worst): no hang.
        line = self.proc.stdout.readline().decode()
        if not line:
            raise AssertionError("the holder ended early: %r" %
                                 (self.release(),))
        return line.split()

    def release(self):
        if self.done is not None:
            return self.done
        try:
            open(os.path.join(self.shared, "go"), "w").close()
            out, err = self.proc.communicate(timeout=GUARD_S)
            self.done = (self.proc.returncode, out, err)
            return self.done
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            shutil.rmtree(self.shared, ignore_errors=True)


# ---- finding 2: inotify instances are not charged to host root ----

INOTIFY_HOLDER = """\
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    held = []
    while len(held) < %d:
        fd = libc.inotify_init1(os.O_CLOEXEC)
        if fd < 0:
            break
        held.append(fd)
    print("held", len(held), flush=True)
    """

INOTIFY_PROBE = """\
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(os.O_CLOEXEC)
print("ok" if fd >= 0 else os.strerror(ctypes.get_errno()))
"""


def test_inotify_instances_are_not_roots_nor_shared():
    limit = int(open("/proc/sys/fs/inotify/max_user_instances").read())
    if limit > 60000:
        pytest.skip("max_user_instances is %d: one sandbox cannot hold "
                    "them all here" % limit)
    most = limit + 16
    holder = Holder(INOTIFY_HOLDER % most,
                    opts=["--nofile", str(most + 64)])
    try:
        words = holder.first_line()
        # It took every instance its owner may have.
        assert words[0] == "held" and 0 < int(words[1]) <= limit, words
        # Host root can still make one...
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_CLOEXEC)
        err = ctypes.get_errno()
        if fd >= 0:
            os.close(fd)
        assert fd >= 0, ("a sandbox used up host root's inotify "
                         "instances: %s" % os.strerror(err))
        # ... and so can another sandbox running meanwhile.
        cp, res = py(INOTIFY_PROBE)
        assert cp.stdout.decode().strip() == "ok", describe(cp, res)
    finally:
        rc, out, err = holder.release()
    assert rc == 0, (rc, out, err)


SIGQUEUE = """\
    import ctypes, os, signal
    libc = ctypes.CDLL(None, use_errno=True)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])

    class sigval(ctypes.Union):
        _fields_ = [("i", ctypes.c_int), ("p", ctypes.c_void_p)]

    def queue():
        if libc.sigqueue(os.getpid(), signal.SIGRTMIN, sigval(0)) == 0:
            return "ok"
        return os.strerror(ctypes.get_errno())
    """


def test_queued_signals_are_not_roots_nor_shared():
    """Real-time signals queued and blocked count against RLIMIT_SIGPENDING
    of the sender's user, up the namespace chain to its owner."""
    soft, _ = resource.getrlimit(resource.RLIMIT_SIGPENDING)
    if soft < 0 or soft > 1000000:
        pytest.skip("RLIMIT_SIGPENDING is %d: too many to queue" % soft)
    holder = Holder(textwrap.dedent(SIGQUEUE) + textwrap.dedent("""\
        n = 0
        while n < %d and queue() == "ok":
            n += 1
        print("held", n, flush=True)
        """ % (soft + 16)))
    try:
        words = holder.first_line()
        assert words[0] == "held" and 0 < int(words[1]) <= soft, words
        # Host root can still queue one...
        cp = subprocess.run(["python3", "-c", textwrap.dedent(SIGQUEUE) +
                             "print(queue())"], capture_output=True,
                            timeout=GUARD_S)
        assert cp.stdout.decode().strip() == "ok", (
            "a sandbox used up host root's pending signals", cp)
        # ... and so can another sandbox running meanwhile.
        cp, res = py(textwrap.dedent(SIGQUEUE) + "print(queue())")
        assert cp.stdout.decode().strip() == "ok", describe(cp, res)
    finally:
        rc, out, err = holder.release()
    assert rc == 0, (rc, out, err)


# ---- finding 3: pipe buffer pages are not shared between sandboxes ----

def test_pipe_pages_are_not_shared():
    soft = int(open("/proc/sys/fs/pipe-user-pages-soft").read())
    if soft == 0:
        pytest.skip("pipe-user-pages-soft is 0: no per-user pipe budget")
    page = os.sysconf("SC_PAGE_SIZE")
    default = 16 * page  # PIPE_DEF_BUFFERS pages
    # Enough default-sized pipes to pass the soft limit (about 1,300 with
    # the usual 16384 pages, counting what the holder's own start uses).
    n = soft // 16 + 256
    max_size = int(open("/proc/sys/fs/pipe-max-size").read())
    want = min(1 << 20, max_size)
    holder = Holder("""\
        import fcntl, os
        pipes, small = [], 0
        for i in range(%d):
            r, w = os.pipe()
            small += fcntl.fcntl(w, fcntl.F_GETPIPE_SZ) < %d
            pipes.append((r, w))
        print("held", len(pipes), small, flush=True)
        """ % (n, default), opts=["--nofile", str(2 * n + 64)])
    try:
        words = holder.first_line()
        assert words[:2] == ["held", str(n)], words
        # The holder went past its soft limit: its last pipes are small.
        assert int(words[2]) > 0, words
        cp, res = py(textwrap.dedent("""\
            import fcntl, os
            r, w = os.pipe()
            print(fcntl.fcntl(w, fcntl.F_GETPIPE_SZ))
            try:
                fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, %d)
                print(fcntl.fcntl(w, fcntl.F_GETPIPE_SZ))
            except OSError as e:
                print(e)
            """ % want))
        lines = cp.stdout.decode().split()
        assert lines == [str(default), str(want)], describe(cp, res)
    finally:
        rc, out, err = holder.release()
    assert rc == 0, (rc, out, err)


# ---- findings 2 and 3 from the host: ids and the namespace owner ----

@pytest.fixture
def two_sleepers():
    marker = unique_marker()
    procs = [subprocess.Popen(
        [SBX, "run", "-t", "60s", "--", "sleep", "1000.%s%d" % (marker, i)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE) for i in range(2)]
    try:
        pids = [wait_for(lambda i=i: host_cmdline_pids(
            "1000.%s%d" % (marker, i), "sleep"), "sandbox %d" % i)
            for i in range(2)]
        yield [p[0] for p in pids]
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_concurrent_sandboxes_have_their_own_host_uids(two_sleepers):
    seen = []
    for pid in two_sleepers:
        uids, gids, _ = ids_of(pid)
        assert len(set(uids)) == 1 and uids == gids, (uids, gids)
        uid = uids[0]
        first = uid - SANDBOX_UID
        assert first >= UID_SLOT_IDS and first % UID_SLOT_IDS == 0, uid
        assert not SYSTEMD_RANGE[0] <= uid <= SYSTEMD_RANGE[1], uid
        for lo, hi in subid_ranges():
            assert not (lo <= first + UID_SLOT_IDS - 1 and first <= hi), \
                ("a sandbox's host ids overlap a subordinate id range",
                 uid, lo, hi)
        seen.append(first)
    assert seen[0] != seen[1], ("two live sandboxes share host uids", seen)


def test_user_namespace_owner_is_unprivileged(two_sleepers):
    with open("/proc/sys/user/max_user_namespaces") as f:
        if os.environ.get("SBX_NO_USERNS") == "1" or int(f.read()) == 0:
            pytest.skip("sandboxes get no user namespace on this host "
                        "(max_user_namespaces 0 or SBX_NO_USERNS=1)")
    for pid in two_sleepers:
        uids, _, ppid = ids_of(pid)
        owner = ns_owner(pid)
        assert owner != 0, "the sandbox's user namespace is owned by root"
        # The owner is the slot's first id: the sandbox's own root, which
        # is its init on the host.
        assert owner == uids[0] - SANDBOX_UID, (owner, uids)
        init_uids, _, _ = ids_of(ppid)
        assert init_uids == [owner] * 4, (ppid, init_uids)
        assert ns_owner(ppid) == owner


# ---- slots: configured, unique, never shared ----

def run_true(env, *opts):
    return subprocess.run([SBX, "run"] + list(opts) + ["--", "id", "-u"],
                          stdin=subprocess.DEVNULL, capture_output=True,
                          env=env, timeout=GUARD_S)


def test_exhausted_slots_refuse_rather_than_share():
    env, first = one_slot_env()
    holder = Holder("""\
        import os
        print("uid", os.getuid(), flush=True)
        """, env=env)
    try:
        holder.first_line()
        uids, _, _ = ids_of(wait_for(
            lambda: [p for p in host_cmdline_pids("/shared/go", "python3")
                     if ids_of(p)[0][0] == first + SANDBOX_UID],
            "the holder on the host")[0])
        assert uids == [first + SANDBOX_UID] * 4, uids
        cp = run_true(env)
        assert cp.returncode == 125, (cp.returncode, cp.stdout, cp.stderr)
        assert b"no free host uid slot" in cp.stderr, cp.stderr
    finally:
        rc, out, err = holder.release()
    assert rc == 0, (rc, out, err)
    # Once the holder is gone its slot serves again.
    cp = run_true(env)
    assert cp.returncode == 0 and cp.stdout == b"1000\n", cp


def test_slot_of_a_dead_holder_waits_for_its_processes():
    """A holder that died without releasing its slot leaves the slot's mark
    in the lock file; the slot is used again only when no process on the
    host has an id in it."""
    env, first = one_slot_env()
    # A leftover process of that slot, as a crashed server's sandbox
    # could leave for a moment.
    leftover = subprocess.Popen(
        ["python3", "-c", "import os, sys; os.setgid(%d); os.setuid(%d); "
         "sys.stdin.read()" % (first + 5, first + 5)],
        stdin=subprocess.PIPE)
    try:
        wait_for(lambda: ids_of(leftover.pid)[0][0] == first + 5,
                 "the leftover to change its uid")
        fd = os.open("/run/sbx/uids.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, b"\x01", first >> 16)
        finally:
            os.close(fd)
        cp = run_true(env)
        assert cp.returncode == 125, (cp.returncode, cp.stdout, cp.stderr)
        assert b"no free host uid slot" in cp.stderr, cp.stderr
    finally:
        leftover.stdin.close()
        leftover.wait()
    cp = run_true(env)
    assert cp.returncode == 0 and cp.stdout == b"1000\n", cp


def test_bad_uid_ranges_are_refused():
    for base, slots, words in (
            ("100000", "1", b"multiple of 65536"),
            ("65536", "0", b"uid slot count"),
            (str(0xFFFF0000), "1", b"uid slot count"),
            (str(0x60000000), "2", b"no usable uid slot")):
        cp = run_true(dict(os.environ, SBX_UID_BASE=base,
                           SBX_UID_SLOTS=slots))
        assert cp.returncode == 125 and words in cp.stderr, (base, cp)
    env, first = one_slot_env()
    cp = run_true(None, "--uid-base", str(first), "--uid-slots", "1")
    assert cp.returncode == 0 and cp.stdout == b"1000\n", cp


def test_subordinate_id_ranges_are_skipped(tmp_path):
    """With /etc/subuid and /etc/subgid naming ranges (given here in a
    private mount namespace), sbx skips the slots that overlap them."""
    if not shutil.which("unshare"):
        pytest.skip("no unshare(1)")
    env, first = one_slot_env()
    env["SBX_UID_SLOTS"] = "3"
    upper, work = tmp_path / "upper", tmp_path / "work"
    upper.mkdir()
    work.mkdir()
    # Slot 0 overlaps a subuid range, slot 1 a subgid range: only slot 2
    # is left.
    (upper / "subuid").write_text("alice:%d:10\n" % (first + 65530))
    (upper / "subgid").write_text("bob:%d:65536\n" % (first + 65536))
    script = ("mount -t overlay overlay -o lowerdir=/etc,upperdir=%s,"
              "workdir=%s /etc && exec \"$@\"" % (upper, work))
    cp = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         script, "sh", SBX, "run", "--", "sh", "-c",
         "id -u; cat /proc/self/uid_map"],
        stdin=subprocess.DEVNULL, capture_output=True, env=env,
        timeout=GUARD_S)
    if cp.returncode != 0 and b"overlay" in cp.stderr:
        pytest.skip("cannot mount an overlay on /etc: %r" % cp.stderr)
    assert cp.returncode == 0, cp
    out = cp.stdout.decode().split()
    assert out == ["1000", "0", str(first + 2 * UID_SLOT_IDS), "65536"], cp
    assert b"/etc/subuid" in cp.stderr, cp.stderr  # it says so


# ---- the server: 503 for a sandbox, a queue for runs ----

def test_server_without_free_slots():
    env, first = one_slot_env()
    with SbxServer(extra_args=["--warm", "0"], env=env) as srv:
        status, _, data = srv.post("/v1/sandboxes", {})
        assert status == 201, (status, data)
        sid = data["id"]
        got = {}

        def run():
            got["reply"] = srv.post("/v1/run", {
                "language": "bash",
                "source": "id -u; cat /proc/self/uid_map"}, timeout=GUARD_S)

        t = threading.Thread(target=run)
        try:
            status, headers, data = srv.post("/v1/sandboxes", {})
            assert status == 503, (status, data)
            assert "uid slot" in data["error"]["message"], data
            # A run waits in the queue for the slot...
            t.start()
            wait_for(lambda: srv.get("/v1/health")[2]["queued"] == 1,
                     "the run to wait in the queue")
            assert "reply" not in got, got
        finally:
            status, _, _ = srv.request("DELETE", "/v1/sandboxes/" + sid)
            assert status in (200, 204), status
        # ... and runs once the sandbox is gone, in the same slot.
        t.join(GUARD_S)
        assert not t.is_alive()
        status, _, data = got["reply"]
        assert status == 200 and data["status"] == "ok", (status, data)
        assert data["run"]["stdout"].split() == [
            "1000", "0", str(first), "65536"], data
        assert srv.proc.poll() is None, srv.read_log()

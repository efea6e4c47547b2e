"""Warm sandboxes with a forking zygote serve run after run: each Python
run is cloned into fresh pid, mount and IPC namespaces with a fresh scratch
space and /proc, and the sandbox comes back for the next run. With one warm
sandbox and one run at a time every Python run below lands on the same
sandbox, so each test shows what one run leaves to the next: nothing, or
the sandbox is not reused."""
import os
import shutil
import time

import pytest

from sbxserver import SbxServer
import test_warm
from test_warm import metric


def user_namespaces():
    if os.environ.get("SBX_NO_USERNS") == "1":
        return False
    try:
        with open("/proc/sys/user/max_user_namespaces") as f:
            return int(f.read()) > 0
    except OSError:
        return True


def peak_stuck():
    """cgroup v2 with the memory controller on a kernel before 6.12: a
    group's memory.peak cannot be reset, so a sandbox is not reused (its
    next run's peak would not be its own)."""
    try:
        with open("/sys/fs/cgroup/cgroup.controllers") as f:
            if "memory" not in f.read().split():
                return False
    except OSError:
        return False  # cgroup v1 (or none): the peak resets
    release = os.uname().release.split("-")[0].split(".")
    try:
        return (int(release[0]), int(release[1])) < (6, 12)
    except (IndexError, ValueError):
        return False


# Without user namespaces a warm sandbox serves one run (its zygote would
# be host root), and without a resettable memory peak it is not taken
# back: nothing here applies.
pytestmark = [
    pytest.mark.skipif(
        not user_namespaces(),
        reason="sandboxes get no user namespace on this host "
               "(max_user_namespaces 0 or SBX_NO_USERNS=1)"),
    pytest.mark.skipif(
        peak_stuck(),
        reason="cgroup v2 before Linux 6.12 cannot reset a group's memory "
               "peak: warm sandboxes serve one run each here"),
]


def reused(srv):
    return metric(srv, "sbx_warm_reused_runs_total")


def wait_warm(srv):
    test_warm.wait_warm(srv, 1)


@pytest.fixture(scope="module")
def srv():
    with SbxServer(extra_args=["--concurrency", "1", "--warm", "1"]) as s:
        wait_warm(s)
        # A first run: the sandbox has served one, so the next is a reuse
        # when the zygote forks (user namespaces available).
        run(s, "print('first')")
        wait_warm(s)
        run(s, "pass")
        assert reused(s) == 1, s.read_log()[-2000:]
        yield s


@pytest.fixture(scope="module")
def cold():
    with SbxServer(extra_args=["--warm", "0"]) as s:
        yield s


def run(srv, source, limits=None, files=None, stdin=None):
    body = {"language": "python", "source": source}
    if limits:
        body["limits"] = limits
    if files:
        body["files"] = files
    if stdin is not None:
        body["stdin"] = stdin
    status, _, data = srv.post("/v1/run", body)
    assert status == 200, data
    return data


def run_reused(srv, source, **kw):
    """Runs source on the warm sandbox, which must have served a run
    before."""
    wait_warm(srv)
    before = reused(srv)
    r = run(srv, source, **kw)
    assert reused(srv) == before + 1, (r, srv.read_log()[-2000:])
    return r


def out(r):
    assert r["status"] == "ok", r
    return r["run"]["stdout"]


def test_runs_reuse_the_sandbox(srv):
    before = reused(srv)
    for i in range(5):
        wait_warm(srv)
        r = run(srv, "import os\nprint(%d, os.getpid(), os.getppid(), "
                     "sorted(p for p in os.listdir('/proc') if p.isdigit()))"
                % i)
        assert out(r) == "%d 2 1 ['1', '2']\n" % i, r
    assert reused(srv) == before + 5


def test_files_do_not_carry(srv):
    places = ["/tmp", "/work", "/home/sandbox", "/dev/shm", "/mnt"]
    r = run_reused(srv, "import os\n"
                        "for d in %r:\n"
                        "    open(os.path.join(d, 'left'), 'w').write('x')\n"
                        "print('written')" % places)
    assert out(r) == "written\n"
    r = run_reused(srv, "import os\n"
                        "print([sorted(os.listdir(d)) for d in %r])" % places)
    # The run's own main.py is the one file there.
    assert out(r) == "[[], ['main.py'], [], [], []]\n", r


@pytest.mark.skipif(not shutil.which("ipcmk"), reason="no ipcmk (util-linux)")
def test_sysv_ipc_does_not_carry(srv):
    r = run_reused(srv, "import subprocess\n"
                        "for a in (['-M', '4096'], ['-Q'], ['-S', '1']):\n"
                        "    subprocess.run(['ipcmk'] + a, check=True,"
                        " capture_output=True)\n"
                        "print(open('/proc/sysvipc/shm').read().count('\\n'),"
                        " open('/proc/sysvipc/msg').read().count('\\n'),"
                        " open('/proc/sysvipc/sem').read().count('\\n'))")
    assert out(r) == "2 2 2\n", r  # a header and the object
    r = run_reused(srv, "print(open('/proc/sysvipc/shm').read().count('\\n'),"
                        " open('/proc/sysvipc/msg').read().count('\\n'),"
                        " open('/proc/sysvipc/sem').read().count('\\n'))")
    assert out(r) == "1 1 1\n", r


def test_processes_do_not_carry(srv):
    t0 = time.monotonic()
    r = run_reused(srv, "import os, time\n"
                        "if os.fork() == 0:\n"
                        "    os.setsid()\n"
                        "    if os.fork() == 0:\n"
                        "        time.sleep(60)\n"
                        "    os._exit(0)\n"
                        "print('left one behind')")
    assert out(r) == "left one behind\n"
    # The program's end ends the run: nothing waited for the sleeper.
    assert time.monotonic() - t0 < 30  # hang guard, not a timing check
    r = run_reused(srv, "import os\n"
                        "print(sorted(p for p in os.listdir('/proc')"
                        " if p.isdigit()))")
    assert out(r) == "['1', '2']\n", r


def test_sockets_retire_the_sandbox(srv):
    """A loopback TCP connection leaves the network namespace a socket
    (TIME_WAIT) that outlives the run: that sandbox is not given another
    run; the next run gets a new one, with no socket of the last."""
    wait_warm(srv)
    r = run(srv, "import socket\n"
                 "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
                 "c = socket.create_connection(s.getsockname())\n"
                 "a, _ = s.accept(); a.close(); c.close(); s.close()\n"
                 "print('connected')")
    assert out(r) == "connected\n"
    wait_warm(srv)
    before = reused(srv)
    r = run(srv, "print(open('/proc/net/tcp').read().count('\\n'))")
    assert out(r) == "1\n", r  # the header alone
    assert reused(srv) == before, "a sandbox with a past run's socket " \
                                  "was reused"
    # The new sandbox serves run after run again.
    run_reused(srv, "pass")


def test_limits_stay_per_run(srv, cold):
    r = run_reused(srv, "b = bytearray(200 << 20)\nprint('fits')",
                   limits={"memory_mb": 64})
    assert r["status"] == "memory_limit" and r["oom_killed"], r
    r = run_reused(srv, "b = bytearray(100 << 20)\nb[::4096] = b'x' * "
                        "len(b[::4096])\nprint('fits')",
                   limits={"memory_mb": 600})
    assert out(r) == "fits\n" and r["peak_memory_bytes"] >= 100 << 20, r
    # The peak is the run's own, not the last one's.
    r = run_reused(srv, "print('small')")
    assert out(r) == "small\n" and r["peak_memory_bytes"] < 100 << 20, r
    # The processes a run may start are the ones it asked for, as on a
    # cold sandbox.
    bomb = ("import os, time\nn = 0\n"
            "try:\n"
            "    while True:\n"
            "        if os.fork() == 0:\n"
            "            time.sleep(30); os._exit(0)\n"
            "        n += 1\n"
            "except OSError as e:\n"
            "    print(e.errno, n)")
    warm = run_reused(srv, bomb, limits={"pids": 8})
    assert out(warm) == out(run(cold, bomb, limits={"pids": 8})), warm
    r = run_reused(srv, "print('after the bomb')")
    assert out(r) == "after the bomb\n"


@pytest.mark.parametrize("name,source,status", [
    ("kill_group", "import os, signal\nos.killpg(0, signal.SIGKILL)\n"
                   "import time; time.sleep(5)", "signaled"),
    ("segfault", "import ctypes\nctypes.string_at(0)", "signaled"),
    ("corrupt_interpreter", "import ctypes, sys\n"
                            "ctypes.memset(id(sys.modules), 0, 64)\n"
                            "import json", "signaled"),
    ("wall_limit", "while True:\n    pass", "time_limit"),
])
def test_broken_runs_cost_only_themselves(srv, name, source, status):
    limits = {"wall_ms": 1500} if status == "time_limit" else None
    wait_warm(srv)
    r = run(srv, source, limits=limits)
    assert r["status"] == status, r
    r = run(srv, "print('next')") if name == "wall_limit" else \
        run_reused(srv, "print('next')")
    assert out(r) == "next\n", r


def test_the_runs_pid_1_is_out_of_reach(srv):
    """PID 1 of a run is the zygote's clone, root in the sandbox's user
    namespace: the program cannot signal, trace or read it."""
    r = run_reused(srv, "import ctypes, os, signal\n"
                        "for s in (signal.SIGKILL, signal.SIGTERM,"
                        " signal.SIGSTOP):\n"
                        "    try:\n"
                        "        os.kill(1, s)\n"
                        "    except OSError as e:\n"
                        "        print(s, e.errno)\n"
                        "libc = ctypes.CDLL(None, use_errno=True)\n"
                        "print(libc.ptrace(16, 1, 0, 0), ctypes.get_errno())\n"
                        "for f in ('environ', 'mem', 'root/'):\n"
                        "    try:\n"
                        "        open('/proc/1/' + f, 'rb').read(1)\n"
                        "        print(f, 'read')\n"
                        "    except OSError as e:\n"
                        "        print(f, e.errno)\n"
                        "print(open('/proc/1/status').read().split('State:')[1]"
                        ".split()[0])")
    lines = out(r).splitlines()
    assert lines[:3] == ["9 1", "15 1", "19 1"], r  # EPERM
    assert lines[3] == "-1 1", r
    for line in lines[4:7]:
        assert line.split()[1] in ("1", "13"), r  # EPERM or EACCES
    assert lines[7] == "S", r  # still there, waiting: not stopped


def test_other_languages_reuse_the_sandbox(cold):
    """Every step of a run on a reusable sandbox runs in fresh pid, mount
    and IPC namespaces, whatever the language: shell runs and compiled ones
    (two steps) leave nothing behind either. While most runs are Python a
    sandbox that lost its zygote to another language is rebuilt; once most
    are not, sandboxes without one serve run after run."""
    with SbxServer(extra_args=["--concurrency", "1", "--warm", "1"]) as s:
        for _ in range(20):  # most recent runs: not Python
            wait_warm(s)
            status, _, r = s.post("/v1/run", {"language": "bash",
                                              "source": "true"})
            assert status == 200 and r["status"] == "ok", r
        body = {"language": "bash", "source":
                "echo $$ /proc/[0-9]*; "
                "(setsid sleep 60 &); echo x > /tmp/left; echo x > left"}
        check = {"language": "bash", "source":
                 "echo $$ /proc/[0-9]*; "
                 "ls -A /tmp /dev/shm .; cat /tmp/left left 2>&1; true"}
        for b in (body, check):
            wait_warm(s)
            before = reused(s)
            status, _, r = s.post("/v1/run", b)
            assert status == 200 and reused(s) == before + 1, \
                (r, s.read_log()[-2000:])
            status, _, c = cold.post("/v1/run", b)
            assert out(r) == out(c), (r, c)
        assert "No such file" in out(r), r
        if shutil.which("gcc"):
            prog = {"language": "c", "source":
                    '#include <stdio.h>\n'
                    'int main(void) { puts("compiled"); return 0; }'}
            wait_warm(s)
            before = reused(s)
            status, _, r = s.post("/v1/run", prog)
            assert status == 200 and r["status"] == "ok", r
            assert reused(s) == before + 1
            status, _, c = cold.post("/v1/run", prog)
            assert r["run"]["stdout"] == c["run"]["stdout"] == "compiled\n", \
                (r, c)


def burst(s, n, seconds):
    """Starts n runs at once that each sleep, waits for all; their
    replies."""
    import threading
    results = []

    def one():
        status, _, r = s.post("/v1/run", {"language": "python",
                                          "source": "import time\n"
                                                    "time.sleep(%s)\n"
                                                    "print('slept')"
                                                    % seconds})
        results.append(r)

    ts = [threading.Thread(target=one) for _ in range(n)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    return results


def test_pool_grows_under_load_and_shrinks_back():
    """Jobs that find no warm sandbox ready get one built for them, which
    then serves later runs too; once the burst is over the pool goes back
    to its size."""
    with SbxServer(extra_args=["--concurrency", "4", "--warm", "1"]) as s:
        wait_warm(s)
        before = metric(s, "sbx_warm_runs_total")
        # The second burst runs on the grown pool.
        results = burst(s, 4, 0.5) + burst(s, 4, 0.5)
        assert [out(r) for r in results] == ["slept\n"] * 8, results
        assert metric(s, "sbx_warm_runs_total") == before + 8
        assert reused(s) >= 4
        deadline = time.monotonic() + 60  # idle ones go after 10 s
        while s.get("/v1/health")[2]["warm"] > 1:
            assert time.monotonic() < deadline, s.read_log()[-2000:]
            time.sleep(0.5)
        # The one it keeps still serves.
        wait_warm(s)
        assert out(run(s, "print('still')")) == "still\n"


def test_reuse_can_be_turned_off(cold):
    """SBX_WARM_REUSE=0: each warm sandbox serves one run, as on hosts
    without user namespaces; its Python zygote becomes the program, and
    runs still share nothing."""
    with SbxServer(extra_args=["--concurrency", "1", "--warm", "1"],
                   env={"SBX_WARM_REUSE": "0"}) as s:
        for i in range(3):
            wait_warm(s)
            r = run(s, "import sys\nprint(sys.orig_argv[1])")
            assert out(r) == "-c\n", r
        assert reused(s) == 0
        assert metric(s, "sbx_warm_runs_total") == 3
        wait_warm(s)
        assert out(run(s, "open('/tmp/left', 'w').write('x')\nprint(1)")) \
            == "1\n"
        wait_warm(s)
        r = run(s, "import os\nprint(os.listdir('/tmp'))")
        assert out(r) == "[]\n", r


def test_pool_growth_stops_at_its_cap():
    """The pool grows to --warm plus 3 per core and no further: runs
    beyond that start sandboxes of their own."""
    cap = 1 + 3 * os.sysconf("SC_NPROCESSORS_ONLN")
    if cap > 13:
        pytest.skip("%d warm sandboxes on this host: too many runs to "
                    "start at once here" % cap)
    with SbxServer(extra_args=["--concurrency", str(cap + 3),
                               "--warm", "1"]) as s:
        wait_warm(s)
        before = metric(s, "sbx_warm_runs_total")
        results = burst(s, cap + 3, 2)
        assert [out(r) for r in results] == ["slept\n"] * (cap + 3), results
        assert metric(s, "sbx_warm_runs_total") == before + cap

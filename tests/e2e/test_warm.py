"""Warm sandboxes: runs start on sandboxes built ahead of time, and still
get their own limits, their own files and nothing of an earlier run."""
import re
import time

import pytest

from sbxserver import SbxServer


def metric(srv, name):
    status, _, text = srv.get("/metrics")
    assert status == 200
    m = re.search(r"^%s (\d+)$" % re.escape(name), text, re.M)
    assert m, text
    return int(m.group(1))


def wait_warm(srv, want):
    deadline = time.monotonic() + 30  # hang guard
    while time.monotonic() < deadline:
        if srv.get("/v1/health")[2]["warm"] >= want:
            return
        time.sleep(0.05)
    pytest.fail("no warm sandboxes: " + srv.read_log())


@pytest.fixture(scope="module")
def srv():
    with SbxServer(extra_args=["--concurrency", "2", "--warm", "2"]) as s:
        wait_warm(s, 2)
        yield s


def run(srv, body):
    status, _, data = srv.post("/v1/run", body)
    assert status == 200, data
    return data


def test_runs_start_on_warm_sandboxes(srv):
    before = metric(srv, "sbx_warm_runs_total")
    for i in range(3):
        wait_warm(srv, 1)
        r = run(srv, {"language": "python", "source": "print(%d)" % i})
        assert r["status"] == "ok" and r["run"]["stdout"] == "%d\n" % i, r
    assert metric(srv, "sbx_warm_runs_total") >= before + 3


def test_run_limits_apply_to_warm_sandboxes(srv):
    wait_warm(srv, 1)
    r = run(srv, {"language": "python",
                  "source": "b = bytearray(200 << 20)\nprint('fits')",
                  "limits": {"memory_mb": 64}})
    assert r["status"] == "memory_limit" and r["oom_killed"], r
    wait_warm(srv, 1)
    r = run(srv, {"language": "python",
                  "source": "b = bytearray(200 << 20)\nprint('fits')",
                  "limits": {"memory_mb": 600}})
    assert r["status"] == "ok" and r["run"]["stdout"] == "fits\n", r
    wait_warm(srv, 1)
    r = run(srv, {"language": "python", "limits": {"pids": 8},
                  "source": "import os\nn = 0\n"
                            "try:\n"
                            "    while True:\n"
                            "        if os.fork() == 0:\n"
                            "            import time; time.sleep(5); os._exit(0)\n"
                            "        n += 1\n"
                            "except OSError as e:\n"
                            "    print('EAGAIN' if e.errno == 11 else e, n < 8)"})
    assert r["run"]["stdout"] == "EAGAIN True\n", r


def test_warm_runs_share_nothing(srv):
    wait_warm(srv, 1)
    r = run(srv, {"language": "bash", "source":
                  "echo secret > /tmp/left; echo secret > left; "
                  "echo secret > /dev/shm/left; ls /tmp /dev/shm"})
    assert r["status"] == "ok", r
    wait_warm(srv, 1)
    r = run(srv, {"language": "bash", "source":
                  "ls -A /tmp /dev/shm .; cat /tmp/left left 2>&1; true"})
    out = r["run"]["stdout"]
    assert "secret" not in out and "No such file" in out, r


def test_files_and_stdin_reach_warm_sandboxes(srv):
    wait_warm(srv, 1)
    r = run(srv, {"language": "python",
                  "files": {"main.py": "import data\nprint(data.X, input())",
                            "data.py": "X = 41"},
                  "stdin": "yes"})
    assert r["run"]["stdout"] == "41 yes\n", r


def test_without_warm_sandboxes_runs_still_work():
    with SbxServer(extra_args=["--warm", "0"]) as s:
        status, _, r = s.post("/v1/run", {"language": "python",
                                          "source": "print('cold')"})
        assert status == 200 and r["run"]["stdout"] == "cold\n", r
        assert s.get("/v1/health")[2]["warm"] == 0
        assert metric(s, "sbx_warm_runs_total") == 0


# The Python zygote: a warm sandbox's interpreter, started early, becomes
# the run's program. Whatever a program can observe must be what a fresh
# `python3 main.py` shows, so each program runs on a warm server and on a
# cold one and the answers must match.
ZYGOTE_PROGRAMS = {
    "identity": ("import sys, os\n"
                 "print(sys.argv, __file__, __name__, sys.path[0], os.getcwd())\n"
                 "print(sorted(k for k in os.environ))", None, []),
    "stdin": ("import sys\nprint(sys.stdin.read()[::-1])", "olleh\nworld", []),
    "exit_code": ("import sys\nprint('bye')\nsys.exit(3)", None, []),
    "traceback": ("def f():\n    raise ValueError('boom')\n\nf()\n", None, []),
    "syntax_error": ("print('x'\n", None, []),
    "pickle_and_pool": ("import multiprocessing as mp, pickle\n"
                        "def sq(x):\n    return x * x\n"
                        "if __name__ == '__main__':\n"
                        "    assert pickle.loads(pickle.dumps(sq))(4) == 16\n"
                        "    with mp.Pool(2) as p:\n"
                        "        print(p.map(sq, [1, 2, 3]))", None, []),
    "unclosed_file": ("f = open('out.txt', 'w')\nf.write('kept')", None,
                      ["out.txt"]),
    "atexit_and_threads": ("import atexit, threading, time\n"
                           "atexit.register(lambda: print('atexit'))\n"
                           "threading.Thread(target=lambda: (time.sleep(0.2),"
                           " print('thread'))).start()\nprint('main')",
                           None, []),
    "imports_from_files": ("import helper\nprint(helper.X)", None, []),
}


@pytest.fixture(scope="module")
def cold():
    with SbxServer(extra_args=["--warm", "0"]) as s:
        yield s


def compat(srv, code, stdin, fetch):
    body = {"code": code, "language": "python",
            "files": {"helper.py": "WD0gNDI="},  # "X = 42"
            "fetch_files": fetch}
    if stdin is not None:
        body["stdin"] = stdin
    status, _, r = srv.post("/run_code", body)
    assert status == 200, r
    run = r["run_result"]
    return (r["status"], run["return_code"], run["stdout"], run["stderr"],
            r["files"])


@pytest.mark.parametrize("name", sorted(ZYGOTE_PROGRAMS))
def test_zygote_runs_like_a_fresh_interpreter(srv, cold, name):
    code, stdin, fetch = ZYGOTE_PROGRAMS[name]
    wait_warm(srv, 1)
    warm = compat(srv, code, stdin, fetch)
    assert warm == compat(cold, code, stdin, fetch)


def test_zygote_is_what_runs_on_warm_sandboxes(srv, cold):
    code = "import sys\nprint(sys.orig_argv[1])"
    wait_warm(srv, 1)
    # A started interpreter was given the program (python3 -c <zygote>)...
    assert compat(srv, code, None, [])[2] == "-c\n"
    # ...where a cold sandbox runs `python3 main.py`.
    assert compat(cold, code, None, [])[2] == "main.py\n"


def test_zygotes_follow_the_mix_of_runs():
    """Warm sandboxes start a Python interpreter only while most recent
    runs are Python: after a stretch of other runs they stop (no
    interpreter started and killed for nothing), and start again when
    Python comes back."""
    probe = "import sys\nprint(sys.orig_argv[1])"
    with SbxServer(extra_args=["--concurrency", "1", "--warm", "1"]) as s:
        def python_run():
            wait_warm(s, 1)
            return compat(s, probe, None, [])[2]

        assert python_run() == "-c\n"
        for _ in range(24):
            wait_warm(s, 1)
            status, _, r = s.post("/run_code", {"code": "echo 1",
                                                "language": "bash"})
            assert status == 200 and r["status"] == "Success", r
        assert python_run() == "main.py\n"
        seen = [python_run() for _ in range(24)]
        assert seen[-1] == "-c\n", seen

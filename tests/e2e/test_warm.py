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

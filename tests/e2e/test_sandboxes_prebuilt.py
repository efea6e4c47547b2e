"""Stateful sandboxes built ahead (sbx serve --prebuilt): a create takes one
that waits with the server's default limits and gets the request's own
(limits, env, labels, lifetimes, host routes), exactly as one built for the
request would; each serves one sandbox and is never handed out again, so
no tenant meets another's files, processes or namespaces.

Every wait is a poll with a hang guard; no test asserts how long anything
took.
"""
import json
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import unique_marker
from sbxserver import SbxServer
from test_sandboxes import (Box, Boxes, create, host_pids_gone, poll,
                            sbx_cgroup_dirs, server_cgroup_dirs,
                            start_marked_sleep)

NS = ("net", "mnt", "pid", "ipc", "uts", "user", "cgroup")


def metric(srv, name):
    st, _, text = srv.get("/metrics")
    assert st == 200, st
    m = re.search(r"^%s (\d+)$" % name, text, re.M)
    assert m, (name, text[:2000])
    return int(m.group(1))


def wait_prebuilt(srv, n=1):
    poll("%d pre-built sandbox(es) ready" % n,
         lambda: metric(srv, "sbx_prebuilt_sandboxes") >= n, guard_s=30)


def take_prebuilt(srv, boxes, **body):
    """Creates a sandbox once one is ready ahead; asserts it took one."""
    wait_prebuilt(srv)
    used = metric(srv, "sbx_prebuilt_used_total")
    box = boxes(**body)
    assert metric(srv, "sbx_prebuilt_used_total") == used + 1
    return box


def namespaces(box):
    out = box.sh("for n in %s; do readlink /proc/self/ns/$n; done"
                 % " ".join(NS))
    ids = out.split()
    assert len(ids) == len(NS), out
    return ids


class Tools(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        out = json.dumps({"path": self.path,
                          "sandbox": self.headers.get("X-Sbx-Sandbox"),
                          "labels": self.headers.get("X-Sbx-Labels")})
        out = out.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


@pytest.fixture(scope="module")
def tools():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Tools)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield "http://127.0.0.1:%d" % httpd.server_address[1]
    httpd.shutdown()


@pytest.fixture(scope="module")
def prebuilt():
    with SbxServer(extra_args=["--prebuilt", "2"]) as s:
        yield s


@pytest.fixture(scope="module")
def cold():
    with SbxServer(extra_args=["--prebuilt", "0"]) as s:
        yield s


@pytest.fixture
def boxes(prebuilt):
    b = Boxes(prebuilt)
    yield b
    b.cleanup()


REQUEST = {
    "limits": {"memory_mb": 300, "pids": 40, "disk_mb": 64, "nofile": 100,
               "output_bytes": 3000, "cpus": 0.5, "cpu_weight": 50},
    "env": {"TENANT": "acme", "LANG": "C"},
    "labels": {"team": "rl", "run": "7"},
    "idle_timeout_s": 120,
    "max_lifetime_s": 600,
}

FETCH = r'''
import json, os, urllib.request
with urllib.request.urlopen(os.environ["SBX_GATEWAY_URL"] + "/tools/x",
                            timeout=30) as r:
    print(r.read().decode())
'''


def observe(srv, boxes, tools, take):
    """What a sandbox made from REQUEST shows, inside and from the host."""
    body = dict(REQUEST, host_routes={"/tools/": tools})
    box = take(srv, boxes, **body) if take else boxes(**body)
    seen = {k: box.info[k] for k in ("labels", "limits", "idle_timeout_s",
                                     "max_lifetime_s", "status")}
    seen["env"] = box.sh("echo $TENANT $LANG $HOME $PATH")
    seen["nofile"] = box.sh("ulimit -n")
    seen["fsize"] = box.sh("ulimit -f")
    seen["memtotal"] = box.sh("grep MemTotal /proc/meminfo")
    seen["disk"] = box.sh("df -k --output=size /tmp | tail -1").strip()
    seen["user"] = box.sh("id -u; id -g; hostname; pwd")
    seen["files"] = box.sh("ls -A /work /tmp /home/sandbox /dev/shm")
    seen["procs"] = box.sh("ls /proc | grep -c '^[0-9]'")
    # The output cap is per exec: 5000 bytes stop at 3000.
    res = box.exec(cmd="head -c 5000 /dev/zero | tr '\\0' x")
    seen["capped"] = (res["status"], len(res["stdout"]),
                      res["output_truncated"])
    # The host route reaches the host, saying which sandbox calls.
    got = json.loads(box.exec(argv=["python3", "-c", FETCH])["stdout"])
    assert got["sandbox"] == box.id, got
    seen["route"] = (got["path"], json.loads(got["labels"]))
    # The cgroup's limits, read on the host.
    marker = "4242" + unique_marker()
    _, pid = start_marked_sleep(box, marker)
    limits = {}
    for d in sbx_cgroup_dirs(pid):
        for name in ("memory.limit_in_bytes", "memory.max", "pids.max",
                     "cpu.cfs_quota_us", "cpu.max", "cpu.shares",
                     "cpu.weight"):
            try:
                with open("%s/%s" % (d, name)) as f:
                    limits[name] = f.read().strip()
            except OSError:
                pass
    seen["cgroup"] = limits
    assert box.delete()[0] == 200
    host_pids_gone(marker, "sleep")
    return seen


def test_prebuilt_sandbox_honours_the_request_as_a_cold_one(prebuilt, cold,
                                                            tools):
    warm_boxes, cold_boxes = Boxes(prebuilt), Boxes(cold)
    try:
        got = observe(prebuilt, warm_boxes, tools, take_prebuilt)
        want = observe(cold, cold_boxes, tools, None)
    finally:
        warm_boxes.cleanup()
        cold_boxes.cleanup()
    assert metric(cold, "sbx_prebuilt_used_total") == 0
    assert got == want
    assert got["labels"] == {"team": "rl", "run": "7"}
    assert got["env"].split()[:2] == ["acme", "C"]
    assert got["nofile"].strip() == "100"
    assert got["memtotal"].split()[1] == str(300 * 1024)
    assert got["disk"] == str(64 * 1024)
    assert got["files"].split() == ["/dev/shm:", "/home/sandbox:", "/tmp:",
                                    "/work:"]
    assert got["capped"] == ("output_limit", 3000, True)
    assert got["route"] == ("/tools/x", {"team": "rl", "run": "7"})
    if not got["cgroup"]:
        print("the sandbox's processes are in no sbx cgroup here; "
              "the cgroup limits were not read")
    for name, value in got["cgroup"].items():
        want_value = {"memory.limit_in_bytes": str(300 << 20),
                      "memory.max": str(300 << 20), "pids.max": "40",
                      "cpu.cfs_quota_us": "50000",
                      "cpu.max": "50000 100000",
                      "cpu.shares": str(50 * 1024 // 100),
                      "cpu.weight": "50"}[name]
        assert value == want_value, (name, got["cgroup"])


def test_default_create_takes_a_prebuilt_sandbox(prebuilt, boxes):
    box = take_prebuilt(prebuilt, boxes)
    assert box.sh("echo hi") == "hi\n"
    assert box.info["limits"]["memory_mb"] > 0
    assert box.sh("ls -A /work") == ""


def test_a_prebuilt_sandbox_is_never_handed_out_twice(prebuilt, boxes):
    """Tenant after tenant, each on a sandbox built ahead: none sees the
    files, processes, IPC objects or environment of the one before it, and
    each has namespaces of its own (compared while both live: the kernel
    reuses a freed namespace's number)."""
    prev = None
    for i in range(4):
        box = take_prebuilt(prebuilt, boxes, env={"SECRET": "s%d" % i})
        assert box.sh("cat /work/left 2>&1; echo $SECRET") == \
            "cat: /work/left: No such file or directory\ns%d\n" % i
        assert "sleep" not in box.sh("ps -eo comm")
        assert "0x" not in box.sh("ipcs -q")
        ids = namespaces(box)
        if prev:
            assert not set(ids) & set(prev[1]), (prev[1], ids)
            assert prev[0].delete()[0] == 200
            host_pids_gone(prev[2], "sleep")
        # Leave things behind: a file, a process, a SysV queue.
        box.sh("echo tenant %d > /work/left; ipcmk -Q >/dev/null" % i)
        marker = "5151" + unique_marker()
        start_marked_sleep(box, marker)
        prev = (box, ids, marker)
    assert prev[0].delete()[0] == 200
    host_pids_gone(prev[2], "sleep")


def test_concurrent_creates_never_share_a_sandbox(prebuilt, boxes):
    """More creates at once than sandboxes built ahead: some take one,
    the rest are built for their request; all are distinct."""
    wait_prebuilt(prebuilt, 2)
    used = metric(prebuilt, "sbx_prebuilt_used_total")
    with ThreadPoolExecutor(6) as ex:
        made = list(ex.map(lambda i: create(prebuilt, labels={"i": str(i)}),
                           range(6)))
    for status, info in made:
        assert status == 201, (status, info)
        boxes.made.append(Box(prebuilt, info))
    assert metric(prebuilt, "sbx_prebuilt_used_total") - used >= 1
    ids = [namespaces(b) for b in boxes.made]
    flat = [i for ns in ids for i in ns]
    assert len(flat) == len(set(flat)), ids
    assert sorted(b.info["labels"]["i"] for b in boxes.made) == \
        [str(i) for i in range(6)]


def test_prebuilt_sandboxes_end_with_the_server():
    marker = "6161" + unique_marker()
    srv = SbxServer(extra_args=["--prebuilt", "3"]).__enter__()
    try:
        wait_prebuilt(srv, 3)
        box = take_prebuilt(srv, Boxes(srv))
        start_marked_sleep(box, marker)
        # The one taken and the three built behind it, at least.
        mine = server_cgroup_dirs(srv)
        if not mine:
            print("no cgroup of the server here; only the processes are "
                  "checked")
        else:
            assert len(mine) >= 4, mine
    finally:
        srv.stop()
    host_pids_gone(marker, "sleep")
    poll("the server's cgroups to be gone",
         lambda: not [d for d in mine if os.path.exists(d)])


def test_no_prebuilt_sandboxes_with_warm_off():
    with SbxServer(extra_args=["--warm", "0"]) as srv:
        status, info = create(srv)
        assert status == 201, info
        assert metric(srv, "sbx_prebuilt_sandboxes") == 0
        assert metric(srv, "sbx_prebuilt_used_total") == 0
        Box(srv, info).delete()

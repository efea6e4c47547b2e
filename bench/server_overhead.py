#!/usr/bin/python3
"""Two figures of issue-13's targets that bench/run_code.py does not give:

  tti    stateful sandbox time to interactive as a client sees it: POST
         /v1/sandboxes, then POST .../exec {"cmd": "echo hi"}; p50 and p99
         of each part and of the two together, over N sandboxes (each
         deleted after, outside the timing), and the memory of 50 idle
         sandboxes (the host's MemAvailable before and after making them;
         the server's default limit is 64 live sandboxes).
  ping   what the server spends on a trivial request: `wrk` (Debian's wrk)
         against GET /v1/ping for some seconds, and the server's own CPU
         (user + system from /proc) divided by the requests wrk counted.

    python3 bench/server_overhead.py [--sbx build/sbx] [--sandboxes 40]

Standard library and wrk only; never asserts on timing.
"""
import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(TOP, "tests", "e2e"))
import sbxserver  # noqa: E402


IDLE = 50


def call(conn, method, path, body=None):
    conn.request(method, path, json.dumps(body) if body is not None
                 else None, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    return resp.status, (json.loads(data) if data else None)


def pct(xs, p):
    xs = sorted(xs)
    return xs[max(0, int(round(p / 100.0 * len(xs) + 0.5)) - 1)]


def mem_available():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sandbox_memory(pid):
    """Memory charged to the server's sandbox cgroups (named s<pid>-<n>),
    v2 memory.current or v1 memory.usage_in_bytes; None without them."""
    total, found = 0, False
    for root, dirs, _ in os.walk("/sys/fs/cgroup"):
        for d in dirs:
            if not d.startswith("s%d-" % pid):
                continue
            for name in ("memory.current", "memory.usage_in_bytes"):
                try:
                    with open(os.path.join(root, d, name)) as f:
                        total += int(f.read())
                        found = True
                        break
                except OSError:
                    pass
        if os.path.basename(root) == "sbx":
            dirs[:] = []  # the sandboxes' groups are right under it
    return total if found else None


def tti(srv, n):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    create, execs, both = [], [], []
    for _ in range(n):
        t0 = time.perf_counter()
        st, box = call(conn, "POST", "/v1/sandboxes", {})
        t1 = time.perf_counter()
        assert st in (200, 201), (st, box)
        st, res = call(conn, "POST", "/v1/sandboxes/%s/exec" % box["id"],
                       {"cmd": "echo hi"})
        t2 = time.perf_counter()
        assert st == 200 and res.get("stdout") == "hi\n", (st, res)
        call(conn, "DELETE", "/v1/sandboxes/%s" % box["id"])
        create.append((t1 - t0) * 1e3)
        execs.append((t2 - t1) * 1e3)
        both.append((t2 - t0) * 1e3)
    for name, xs in (("create", create), ("first exec", execs),
                     ("create + exec", both)):
        print("tti  %-14s p50 %6.1f ms  p99 %6.1f ms  (n=%d)" % (
            name, pct(xs, 50), pct(xs, 99), n))
    # Idle sandboxes' memory.
    before = mem_available()
    ids = []
    for _ in range(IDLE):
        st, box = call(conn, "POST", "/v1/sandboxes", {})
        assert st in (200, 201), (st, box)
        ids.append(box["id"])
    time.sleep(2)
    after = mem_available()
    charged = sandbox_memory(srv.proc.pid)
    for i in ids:
        call(conn, "DELETE", "/v1/sandboxes/%s" % i)
    print("idle %d sandboxes: MemAvailable fell by %.0f MiB (%.2f MiB "
          "each; 1,000 would be %.2f GiB; other work on the host moves "
          "this too)" % (IDLE, (before - after) / 2**20,
                         (before - after) / 2**20 / IDLE,
                         (before - after) * 1000 / IDLE / 2**30))
    if charged is not None:
        print("idle %d sandboxes: their cgroups hold %.0f MiB (%.2f MiB "
              "each; 1,000 would be %.2f GiB)" % (
                  IDLE, charged / 2**20, charged / 2**20 / IDLE,
                  charged * 1000 / IDLE / 2**30))


def ping(srv, seconds):
    if not shutil.which("wrk"):
        print("ping: wrk is not installed (apt-get install wrk)")
        return
    cpu0 = cpu_seconds(srv.proc.pid)
    out = subprocess.run(["wrk", "-t1", "-c4", "-d%ds" % seconds,
                          "--latency", srv.url + "/v1/ping"],
                         capture_output=True, text=True).stdout
    cpu1 = cpu_seconds(srv.proc.pid)
    m = re.search(r"(\d+) requests in", out)
    n = int(m.group(1)) if m else 0
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    print("ping %d requests, %s req/s, wrk p50 %s; server CPU %.3f ms a "
          "request" % (n, rps.group(1) if rps else "?",
                       p50.group(1) if p50 else "?",
                       (cpu1 - cpu0) * 1e3 / n if n else float("nan")))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sbx", default=os.path.join(TOP, "build", "sbx"))
    ap.add_argument("--sandboxes", type=int, default=40)
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args()
    sbxserver.SBX = args.sbx
    print("%s; host load %.2f" % (args.sbx, os.getloadavg()[0]))
    with sbxserver.SbxServer() as srv:
        tti(srv, args.sandboxes)
        ping(srv, args.seconds)


if __name__ == "__main__":
    sys.exit(main())

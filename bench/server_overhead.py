#!/usr/bin/python3
"""Two figures of issue-13's targets that bench/run_code.py does not give:

  tti    stateful sandbox time to interactive as a client sees it: POST
         /v1/sandboxes, then POST .../exec {"cmd": "echo hi"}; p50 and p99
         of each part and of the two together, over N sandboxes (each
         deleted after, outside the timing), and the memory of 50 idle
         sandboxes (the host's MemAvailable before and after making them,
         and what their cgroups hold; the server's default limit is 64
         live sandboxes). With --sbx-base a second server runs that build
         and the two take turns, one sandbox each, so both see the same
         host load; the ratios base/new of the p50s close the section.
         --pause waits between sandboxes, as a client that does not
         create them back to back (the server builds ahead meanwhile).
  ping   what the server spends on a trivial request: `wrk` (Debian's wrk)
         against GET /v1/ping for some seconds, and the server's own CPU
         (user + system from /proc) divided by the requests wrk counted.

    python3 bench/server_overhead.py [--sbx build/sbx] [--sandboxes 40]
                                     [--sbx-base OLD/sbx] [--pause MS]
                                     [--no-ping]

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


def tti_once(conn):
    """One sandbox: (create ms, first exec ms), then deletes it."""
    t0 = time.perf_counter()
    st, box = call(conn, "POST", "/v1/sandboxes", {})
    t1 = time.perf_counter()
    assert st in (200, 201), (st, box)
    st, res = call(conn, "POST", "/v1/sandboxes/%s/exec" % box["id"],
                   {"cmd": "echo hi"})
    t2 = time.perf_counter()
    assert st == 200 and res.get("stdout") == "hi\n", (st, res)
    call(conn, "DELETE", "/v1/sandboxes/%s" % box["id"])
    return (t1 - t0) * 1e3, (t2 - t1) * 1e3


def tti(servers, n, pause_ms):
    """servers: [(name, srv)]; they take turns, one sandbox each."""
    conns = [http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
             for _, srv in servers]
    times = [([], []) for _ in servers]
    for i in range(n):
        for k in range(len(servers)):
            # Alternate who goes first, so neither always follows the
            # other's teardown.
            j = (k + i) % len(servers)
            c, e = tti_once(conns[j])
            times[j][0].append(c)
            times[j][1].append(e)
            if pause_ms:
                time.sleep(pause_ms / 1e3)
    p50s = []
    for (name, _), (create, execs) in zip(servers, times):
        both = [c + e for c, e in zip(create, execs)]
        for label, xs in (("create", create), ("first exec", execs),
                          ("create + exec", both)):
            print("tti  %-8s %-14s p50 %6.1f ms  p99 %6.1f ms  (n=%d)" % (
                name, label, pct(xs, 50), pct(xs, 99), n))
        p50s.append((pct(create, 50), pct(execs, 50), pct(both, 50)))
    if len(servers) == 2:
        (c1, e1, b1), (c0, e0, b0) = p50s
        print("tti  base/new p50: create %.2fx, first exec %.2fx, "
              "create + exec %.2fx" % (c0 / c1, e0 / e1, b0 / b1))
    for name, srv in servers:
        idle(name, srv)


def idle(name, srv):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    before = mem_available()
    charged0 = sandbox_memory(srv.proc.pid)
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
    print("idle %s %d sandboxes: MemAvailable fell by %.0f MiB (%.2f MiB "
          "each; 1,000 would be %.2f GiB; other work on the host moves "
          "this too)" % (name, IDLE, (before - after) / 2**20,
                         (before - after) / 2**20 / IDLE,
                         (before - after) * 1000 / IDLE / 2**30))
    if charged is not None and charged0 is not None:
        # What they added: the server's sandboxes built ahead are in
        # both figures.
        charged -= charged0
        print("idle %s %d sandboxes: their cgroups hold %.0f MiB (%.2f MiB "
              "each; 1,000 would be %.2f GiB)" % (
                  name, IDLE, charged / 2**20, charged / 2**20 / IDLE,
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
    ap.add_argument("--sbx-base", metavar="PATH",
                    help="another sbx (the build before a change, say) "
                    "whose server takes turns with --sbx's")
    ap.add_argument("--pause", type=float, default=0, metavar="MS",
                    help="wait between sandboxes (default 0)")
    ap.add_argument("--no-ping", action="store_true",
                    help="skip the wrk part")
    args = ap.parse_args()
    print("%s%s; host load %.2f" % (
        args.sbx, " against " + args.sbx_base if args.sbx_base else "",
        os.getloadavg()[0]))
    sbxserver.SBX = args.sbx
    with sbxserver.SbxServer() as srv:
        servers = [("new" if args.sbx_base else "sbx", srv)]
        if args.sbx_base:
            sbxserver.SBX = args.sbx_base
            base = sbxserver.SbxServer().__enter__()
            servers.append(("base", base))
        try:
            time.sleep(1)  # the servers' start-up work settles
            tti(servers, args.sandboxes, args.pause)
        finally:
            if args.sbx_base:
                base.stop()
        if not args.no_ping:
            ping(srv, args.seconds)


if __name__ == "__main__":
    sys.exit(main())

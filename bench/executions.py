#!/usr/bin/python3
"""Benchmark agent executions: a trivial agent run through sbx's
execution API, in a persistent pool and per task, side by side with a
baseline that starts the same agent as a plain Python subprocess on the
host for each execution (no sandbox, no isolation).

  persistent  POST /v1/executions to a persistent pool (the agent is
              imported once per sandbox; one execution at a time each)
  per_task    POST /v1/executions to a per-task pool (a fresh sandbox,
              the agent imported, then torn down, for every execution)
  subprocess  python3 -c <runner> per execution on the host: imports the
              agent, calls rollout(task, config), prints the result

at 8 and 64 executions in flight (callers that each submit one, wait for
its end with a long poll, and go again). For each it prints executions per
second and the dispatch overhead, from just before the submit to the
agent's first line (the agent stamps the wall clock, which the sandboxes
share with the host), p50 and p99. Every result is checked; it exits 1
when one is wrong. It never asserts on timing.

    python3 bench/executions.py [--sbx build/sbx] [--quick] [--json FILE]

Python 3 standard library only.
"""
import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(TOP, "tests", "e2e"))
import sbxserver  # noqa: E402  (starts and stops sbx serve)

AGENT = '''
import time

def rollout(task, config):
    first = time.time()
    return [{"name": "trivial", "steps": [], "reward": float(task["n"]),
             "first_line_at": first}]
'''

RUNNER = '''
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
req = json.load(sys.stdin)
out = importlib.import_module("agent").rollout(req["task"], req["config"])
print(json.dumps(out))
'''


def percentile(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def http(method, url, body=None, timeout=120):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def run_cell(name, count, inflight, one):
    """Runs one(i) count times with inflight callers; returns stats."""
    lock = threading.Lock()
    next_i = [0]
    overheads, errors = [], []

    def caller():
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= count:
                return
            try:
                t0 = time.time()
                reward, first = one(i)
                if reward != float(i):
                    errors.append("execution %d: reward %r" % (i, reward))
                overheads.append((first - t0) * 1000.0)
            except Exception as e:  # noqa: B902 - reported below
                errors.append("execution %d: %s" % (i, e))

    threads = [threading.Thread(target=caller) for _ in range(inflight)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.monotonic() - start
    return {"mode": name, "inflight": inflight, "executions": count,
            "per_s": count / secs, "p50_ms": percentile(overheads, 50),
            "p99_ms": percentile(overheads, 99), "errors": errors}


def sbx_one(url, agent, pool):
    def one(i):
        eid = http("POST", url + "/v1/executions",
                   {"agent": agent, "task": {"n": i}, "pool": pool})["id"]
        while True:
            ex = http("GET", url + "/v1/executions/%s?wait=30" % eid)
            if ex["status"] not in ("queued", "running"):
                break
        if ex["status"] != "completed":
            raise RuntimeError("%s: %s" % (ex["status"],
                                           ex["result"]["error"]))
        traj = ex["result"]["trajectories"][0]
        return traj["reward"], traj["first_line_at"]
    return one


def subprocess_one(agent_dir):
    def one(i):
        out = subprocess.run(
            ["/usr/bin/python3", "-c", RUNNER,
             agent_dir],
            input=json.dumps({"task": {"n": i}, "config": {}}),
            capture_output=True, text=True, check=True)
        traj = json.loads(out.stdout)[0]
        return traj["reward"], traj["first_line_at"]
    return one


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sbx", default=os.path.join(TOP, "build", "sbx"))
    ap.add_argument("--count", type=int, default=400,
                    help="executions per cell (per_task: half)")
    ap.add_argument("--inflight", default="8,64")
    ap.add_argument("--quick", action="store_true",
                    help="a short run (60 per cell)")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    count = 60 if args.quick else args.count
    levels = [int(x) for x in args.inflight.split(",")]
    sbxserver.SBX = args.sbx
    tmp = tempfile.mkdtemp(prefix="sbx-bench-exec-")
    agent_dir = os.path.join(tmp, "agent")
    os.makedirs(agent_dir)
    with open(os.path.join(agent_dir, "agent.py"), "w") as f:
        f.write(AGENT)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        t.add(os.path.join(agent_dir, "agent.py"), arcname="agent.py")
    rows = []
    srv = sbxserver.SbxServer(extra_args=[
        "--state-dir", os.path.join(tmp, "state"), "--max-sandboxes", "256",
        "--concurrency", "128"])
    with srv:
        req = urllib.request.Request(srv.url + "/v1/agents",
                                     data=buf.getvalue(), method="POST")
        with urllib.request.urlopen(req) as r:
            agent = json.loads(r.read())["id"]
        for n in levels:
            pools = [("persistent", {"mode": "persistent", "size":
                                     min(n, 16), "recycle_after": 100000},
                      count),
                     ("per_task", {"mode": "per_task", "size": n},
                      max(8, count // 2))]
            for name, pool, c in pools:
                one = sbx_one(srv.url, agent, pool)
                run_cell(name, min(n, c), n, one)  # warm-up: pools filled
                rows.append(run_cell(name, c, n, one))
                print_row(rows[-1])
            rows.append(run_cell("subprocess", count, n,
                                 subprocess_one(agent_dir)))
            print_row(rows[-1])
    subprocess.run(["rm", "-rf", tmp])
    print()
    print("host: %s, %d cores, Python %s" % (platform.platform(),
                                             os.cpu_count(),
                                             platform.python_version()))
    for n in levels:
        by = {r["mode"]: r for r in rows if r["inflight"] == n}
        base = by["subprocess"]["per_s"]
        print("in flight %d: persistent %.2fx the subprocess baseline, "
              "per_task %.2fx" % (n, by["persistent"]["per_s"] / base,
                                  by["per_task"]["per_s"] / base))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    bad = [e for r in rows for e in r["errors"]]
    for e in bad[:10]:
        print("error:", e, file=sys.stderr)
    return 1 if bad else 0


def print_row(r):
    print("%-11s in flight %3d  %5d executions  %8.1f /s  dispatch p50 "
          "%7.1f ms  p99 %7.1f ms%s" % (
              r["mode"], r["inflight"], r["executions"], r["per_s"],
              r["p50_ms"], r["p99_ms"],
              "  (%d errors)" % len(r["errors"]) if r["errors"] else ""),
          flush=True)


if __name__ == "__main__":
    sys.exit(main())

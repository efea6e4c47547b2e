#!/usr/bin/python3
"""Benchmark the model gateway's overhead: the same chat completion calls
sent to the mock upstream directly and through `sbx serve --upstream`.

  direct    POST /v1/chat/completions to the mock upstream
            (tests/e2e/mock_upstream.py, in a process of its own)
  gateway   POST /llm/v1/chat/completions to sbx serve, which forwards each
            call to the same mock and commits its trace to SQLite before
            the last byte of the answer is sent

for plain and streamed calls (`stream: true`, 8 tokens, 11 server-sent
events, read to the end) at 1 and 64 concurrent callers. Both targets get
the identical body, which already asks for token ids and logprobs, so the
gateway adds nothing to it and the mock does the same work for both. It
prints p50/p99 latency of each, the milliseconds the gateway adds at p50
and p99, throughput and the ratio gateway/direct (1.00 = no loss).

Callers are threads spread over worker processes (one per core, at most
one per caller) with a keep-alive connection each, so the load generator's
own interpreter lock is not what is measured. Cells alternate targets and
each stops after --requests calls or --cell-seconds seconds. It never
asserts on timing; it exits 1 when a call fails or a trace is missing.

    python3 bench/gateway.py [--sbx build/sbx] [--quick] [--json FILE]

Python 3 standard library only.
"""
import argparse
import http.client
import json
import multiprocessing
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
MOCK = os.path.join(TOP, "tests", "e2e", "mock_upstream.py")
sys.path.insert(0, os.path.join(TOP, "tests", "e2e"))
import sbxserver  # noqa: E402  (starts and stops sbx serve)

BODY = {"model": "mock-model",
        "messages": [{"role": "user", "content":
                      "Say something short about sandboxes."}],
        "max_tokens": 8, "return_token_ids": True, "logprobs": True}


def percentile(xs, p):
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


# ---- the load: threads in worker processes ----

def _caller(port, path, body, stream, quota, stop_at, out, errors, lock):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    hdrs = {"Content-Type": "application/json",
            "Authorization": "Bearer EMPTY"}
    mine = []
    while quota[0] > 0 and time.monotonic() < stop_at:
        with lock:
            if quota[0] <= 0:
                break
            quota[0] -= 1
        t0 = time.monotonic()
        try:
            conn.request("POST", path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            errors.append("%s: %s" % (type(e).__name__, e))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            continue
        dt = time.monotonic() - t0
        if resp.status != 200:
            errors.append("HTTP %d: %s" % (resp.status, data[:200]))
        elif stream and not data.rstrip().endswith(b"data: [DONE]"):
            errors.append("stream without [DONE]: %r" % data[-100:])
        elif not stream and b'"token_ids"' not in data:
            errors.append("answer without token ids: %r" % data[:200])
        else:
            mine.append((t0, dt))
    conn.close()
    with lock:
        out.extend(mine)


def _worker(args):
    port, path, body, stream, threads, quota, start_at, seconds = args
    out, errors, lock = [], [], threading.Lock()
    q = [quota]
    while time.monotonic() < start_at:
        time.sleep(min(0.005, max(0.0, start_at - time.monotonic())))
    stop_at = start_at + seconds
    ts = [threading.Thread(target=_caller, args=(port, path, body, stream,
                                                 q, stop_at, out, errors,
                                                 lock))
          for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out, errors


def measure(pool, nproc, port, path, stream, conc, nreq, seconds):
    body = json.dumps(dict(BODY, stream=stream)).encode()
    procs = min(nproc, conc)
    per = [conc // procs + (1 if i < conc % procs else 0)
           for i in range(procs)]
    quotas = [nreq * p // conc for p in per]
    quotas[0] += nreq - sum(quotas)
    start_at = time.monotonic() + 0.3
    jobs = [(port, path, body, stream, per[i], quotas[i], start_at, seconds)
            for i in range(procs)]
    samples, errors = [], []
    for out, errs in pool.map(_worker, jobs):
        samples.extend(out)
        errors.extend(errs)
    if not samples:
        return {"n": 0, "errors": errors}
    end = max(t0 + dt for t0, dt in samples)
    lat = sorted(dt * 1000.0 for _, dt in samples)
    return {"n": len(lat), "errors": errors,
            "p50": percentile(lat, 50), "p99": percentile(lat, 99),
            "rps": len(lat) / max(end - start_at, 1e-9), "lat_ms": lat}


# ---- the servers ----

def start_mock(tmp):
    port_file = os.path.join(tmp, "mock.port")
    log = open(os.path.join(tmp, "mock.log"), "w")
    proc = subprocess.Popen([sys.executable, MOCK, "--port", "0",
                             "--port-file", port_file],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the mock upstream exited")
        try:
            with open(port_file) as f:
                return proc, int(f.read())
        except (OSError, ValueError):
            time.sleep(0.02)
    proc.kill()
    raise SystemExit("the mock upstream did not start")


def get_json(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def trace_count(srv):
    """Traces stored: /v1/health says, else they are counted page by page."""
    llm = get_json(srv.url + "/v1/health").get("llm")
    if isinstance(llm, dict) and isinstance(llm.get("traces"), int):
        return llm["traces"]
    n, after = 0, 0
    while True:
        page = get_json(srv.url + "/v1/traces?limit=10000&after=%d" % after)
        if not page["traces"]:
            return n
        n += len(page["traces"])
        after = page["traces"][-1]["id"]


# ---- output ----

def fmt(x, nd=2):
    return "n/a" if x != x else "%.*f" % (nd, x)


def table(rows):
    head = ["call", "c", "direct p50", "gw p50", "added p50", "direct p99",
            "gw p99", "added p99", "direct rps", "gw rps", "gw/direct"]
    lines = [head]
    for mode, conc, d, g in rows:
        lines.append([
            mode, str(conc), fmt(d.get("p50", float("nan"))),
            fmt(g.get("p50", float("nan"))),
            fmt(g.get("p50", float("nan")) - d.get("p50", float("nan"))),
            fmt(d.get("p99", float("nan"))), fmt(g.get("p99", float("nan"))),
            fmt(g.get("p99", float("nan")) - d.get("p99", float("nan"))),
            fmt(d.get("rps", float("nan")), 0),
            fmt(g.get("rps", float("nan")), 0),
            fmt(g.get("rps", float("nan")) / d.get("rps", float("nan"))
                if d.get("rps") else float("nan"))])
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    out = []
    for j, r in enumerate(lines):
        out.append("  ".join(c.rjust(widths[i]) if i > 1 else
                             c.ljust(widths[i]) for i, c in enumerate(r)))
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(
        description="gateway overhead against calling the upstream directly")
    ap.add_argument("--sbx", default=os.path.join(TOP, "build", "sbx"),
                    help="the sbx binary (default build/sbx)")
    ap.add_argument("--requests", type=int, metavar="N",
                    help="calls per cell (default 500 at c=1, 3000 at c=64)")
    ap.add_argument("--cell-seconds", type=float, default=10.0, metavar="S",
                    help="a cell stops starting calls after S seconds")
    ap.add_argument("--concurrency", default="1,64", metavar="LIST")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 50 calls a cell")
    ap.add_argument("--json", metavar="FILE",
                    help="also write every latency here")
    args = ap.parse_args()
    concs = [int(c) for c in args.concurrency.split(",")]
    nproc = max(1, os.cpu_count() or 1)
    print("$ " + " ".join(shlex.quote(a) for a in [sys.executable] +
                          sys.argv))
    print("host: %s, %d cores, load %s" % (
        platform.platform(), nproc,
        " ".join(open("/proc/loadavg").read().split()[:3])))

    tmp = tempfile.mkdtemp(prefix="sbx-bench-gw-")
    mock, mport = start_mock(tmp)
    os.environ["SBX"] = args.sbx
    sbxserver.SBX = args.sbx
    up = "http://127.0.0.1:%d/v1" % mport
    failed = False
    try:
        with sbxserver.SbxServer(extra_args=[
                "--upstream", "mock=" + up,
                "--state-dir", os.path.join(tmp, "state")]) as srv:
            targets = [("direct", mport, "/v1/chat/completions"),
                       ("gateway", srv.port, "/llm/v1/chat/completions")]
            ctx = multiprocessing.get_context("fork")
            rows, raw, calls = [], [], 0
            with ctx.Pool(nproc) as pool:
                for name, port, path in targets:  # warm up
                    for stream in (False, True):
                        r = measure(pool, nproc, port, path, stream, 4, 40,
                                    10)
                        if r["errors"]:
                            print("warm-up %s failed: %s" % (name,
                                                            r["errors"][:3]))
                            return 1
                        calls += r["n"] if name == "gateway" else 0
                base = trace_count(srv)
                turn = 0
                for stream in (False, True):
                    mode = "stream" if stream else "plain"
                    for conc in concs:
                        n = args.requests or (50 if args.quick else
                                              500 if conc == 1 else 3000)
                        res = {}
                        order = targets[turn % 2:] + targets[:turn % 2]
                        turn += 1
                        for name, port, path in order:
                            r = measure(pool, nproc, port, path, stream,
                                        conc, n, args.cell_seconds)
                            res[name] = r
                            if r["errors"]:
                                failed = True
                                print("! %s %s c=%d: %d failed, e.g. %s" % (
                                    name, mode, conc, len(r["errors"]),
                                    r["errors"][0]))
                            if name == "gateway":
                                calls += r["n"]
                            raw.append({"target": name, "mode": mode,
                                        "c": conc, "n": r["n"],
                                        "lat_ms": r.get("lat_ms", [])})
                        rows.append((mode, conc, res["direct"],
                                     res["gateway"]))
                        print("  %s c=%d: direct %d calls, gateway %d" % (
                            mode, conc, res["direct"]["n"],
                            res["gateway"]["n"]), flush=True)
            traced = trace_count(srv) - base
            measured = sum(r[3]["n"] for r in rows)
    finally:
        mock.terminate()
        mock.wait()
        subprocess.run(["rm", "-rf", tmp])
    print()
    print("milliseconds per call (to the last byte), calls per second")
    print(table(rows))
    print()
    ok_traces = traced >= measured
    print("traces written during the cells: %d for %d gateway calls%s" % (
        traced, measured, "" if ok_traces else "  ! missing traces"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f)
    return 1 if failed or not ok_traces else 0


if __name__ == "__main__":
    sys.exit(main())

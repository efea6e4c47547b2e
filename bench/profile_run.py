#!/usr/bin/python3
"""Where the CPU of a POST /run_code run goes, by process role and kind of
work: one `sbx serve` started under `perf record -g` (Debian's linux-perf),
N sequential Python hello-world requests, then the samples grouped.

    python3 bench/profile_run.py [--sbx build/sbx] [--requests 200]
                                 [--code 'print("hello")'] [--keep DIR]

Roles: the server's threads (runner thread "sbx", HTTP threads
"MHD-worker"), the clone child before it executes init ("clone child":
comm still "sbx", another pid), init ("sbx-init", and "memfd:sbx-init"
before it names itself), and "python3" (the warm sandbox's zygote: the
interpreter's start, the program and its exit). Within a role a sample is
counted under the innermost system call on its stack (sys_*), a page fault,
an interrupt, or the user-space object it was in. ms/run = samples x
sampling period / requests. Work the kernel defers to its own threads
(a network namespace's cleanup, cgroup freeing) is not in the server's
tree; `perf record -a` sees it, along with everything else on the host.

Standard library only; never asserts on timing.
"""
import argparse
import collections
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
FREQ = 2000  # samples per second


def post(port, code, n):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = json.dumps({"code": code, "language": "python"})
    for _ in range(n):
        conn.request("POST", "/run_code", body,
                     {"Content-Type": "application/json"})
        doc = json.loads(conn.getresponse().read())
        if doc.get("status") != "Success":
            raise SystemExit("run failed: %s" % json.dumps(doc)[:300])


def classify(comm, pid, server, frames):
    where = None
    for sym, _ in frames:  # innermost first
        m = re.match(r"(__x64_sys_|__do_sys_|__se_sys_|__arm64_sys_)(\w+)",
                     sym)
        if m:
            where = "sys_" + m.group(2)
            break
        if sym in ("exc_page_fault", "asm_exc_page_fault", "do_page_fault",
                   "do_mem_abort"):
            where = "page fault"
            break
        if sym.startswith(("asm_sysvec", "asm_common_interrupt")):
            where = "interrupt"
            break
    if where is None:
        dso = frames[0][1] if frames else "?"
        where = "user " + os.path.basename(dso)
        if "kernel" in dso:
            where = "kernel, other"
    if comm == "python3":
        role = "python3 (zygote and program)"
    elif "sbx-init" in comm:
        role = "init"
    elif pid == server:
        role = "server " + comm
    elif comm.startswith("sbx"):
        role = "clone child"
    else:
        role = "other " + comm
    return role, where


def report(data, requests):
    out = subprocess.run(["perf", "script", "-i", data, "-F",
                          "comm,pid,tid,ip,sym,dso"], capture_output=True,
                         text=True, errors="replace").stdout
    samples = []
    for block in out.split("\n\n"):
        lines = block.strip("\n").splitlines()
        if not lines:
            continue
        m = re.match(r"\s*(.*?)\s+(\d+)/(\d+)", lines[0])
        if not m:
            continue
        frames = []
        for line in lines[1:]:
            parts = line.split(None, 2)
            if len(parts) >= 2:
                sym = re.sub(r"\+0x[0-9a-f]+$", "", parts[1])
                dso = parts[2].strip("()") if len(parts) > 2 else ""
                frames.append((sym, dso))
        samples.append((m.group(1), int(m.group(2)), frames))
    server = next((pid for comm, pid, _ in samples
                   if comm == "MHD-worker"), -1)
    cells = collections.Counter(classify(c, p, server, f)
                                for c, p, f in samples)
    roles = collections.Counter()
    for (role, _), n in cells.items():
        roles[role] += n
    total = sum(roles.values())
    per = 1000.0 / FREQ / requests
    print("%d samples at %d Hz over %d runs: %.1f ms of CPU a run" % (
        total, FREQ, requests, total * per))
    print("%-34s %6s %9s" % ("role / where", "share", "ms/run"))
    for role, n in roles.most_common():
        print("%-34s %5.1f%% %9.2f" % (role, 100.0 * n / total, n * per))
        for (r, where), k in cells.most_common():
            if r == role and k * 200 >= total:  # 0.5% and up
                print("  %-32s %5.1f%% %9.2f" % (where, 100.0 * k / total,
                                                k * per))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sbx", default=os.path.join(TOP, "build", "sbx"))
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--code", default='print("hello")\n')
    ap.add_argument("--keep", metavar="DIR",
                    help="leave perf.data and the server's log here")
    args = ap.parse_args()
    d = args.keep or tempfile.mkdtemp(prefix="sbx-profile-")
    os.makedirs(d, exist_ok=True)
    port_file = os.path.join(d, "port")
    data = os.path.join(d, "perf.data")
    with open(os.path.join(d, "serve.log"), "w") as log:
        perf = subprocess.Popen(
            ["perf", "record", "-F", str(FREQ), "-g", "-o", data, "--",
             args.sbx, "serve", "--listen", "127.0.0.1:0", "--port-file",
             port_file, "--concurrency", "2"], stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(port_file) or \
                    not open(port_file).read().strip():
                if perf.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("sbx serve did not start; see " + d)
                time.sleep(0.05)
            port = int(open(port_file).read())
            post(port, args.code, 10)  # warm-up, in the profile too
            t = time.monotonic()
            post(port, args.code, args.requests)
            wall = time.monotonic() - t
        finally:
            # perf's child is the server: SIGINT to perf stops both.
            perf.send_signal(2)
            perf.wait()
    print("%s, %d sequential runs of %r, %.1f ms each as the client saw "
          "them" % (args.sbx, args.requests, args.code, wall * 1e3 /
                    args.requests))
    report(data, args.requests + 10)
    if not args.keep:
        subprocess.run(["rm", "-rf", d])


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Benchmark POST /run_code against per-request subprocess baselines.

One run measures, side by side and interleaved cell by cell:

  sbx       POST /run_code to a real `sbx serve`, keep-alive http.client
            connections, one per client thread
  bare      python3 main.py in a fresh tempfile.mkdtemp() dir (write the
            file, run, remove the dir): SandboxFusion's default per-run work
  bwrap     the same, wrapped in a strict bubblewrap invocation
  firejail  the same, under firejail --quiet --noprofile --net=none --private
  runsc     the same, under gVisor's `runsc do`

for two programs (hello world and ~50 ms of CPU work) at client concurrency
1, 2, 8 and 32, and prints one table of p50/p99 latency, throughput and the
ratios baseline/sbx (> 1 means sbx is faster). Baselines are run directly
as subprocesses of this script, without HTTP or JSON, which favours them.

It never asserts on timing. It exits 1 only when sbx itself fails: the
server does not start, or a request does not come back as Success with the
expected output. A baseline that cannot run on this host is printed as
"unavailable: <reason>".

    python3 bench/run_code.py [--quick] [--requests N] [--json FILE]

Python 3 standard library only.
"""
import argparse
import http.client
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(TOP, "tests", "e2e"))
import sbxserver  # noqa: E402  (tests/e2e/sbxserver.py starts and stops sbx)

PROGRAMS = [
    # name, code, expected stdout
    ("hello", 'print("hello")\n', "hello\n"),
    ("cpu", "print(sum(i * i for i in range(300000)))\n",
     "%d\n" % sum(i * i for i in range(300000))),
    # Not run unless asked for (--programs): the imports a typical graded
    # solution makes, numpy where it is installed.
    ("imports", "import json, re, collections, itertools, math\n"
     "try:\n    import numpy\nexcept ImportError:\n    pass\n"
     "print('ok')\n", "ok\n"),
]
DEFAULT_PROGRAMS = "hello,cpu"
CONCURRENCY = [1, 2, 8, 32]
RUN_TIMEOUT = 60  # seconds; a baseline run that takes longer is a failure
SERVER_START_ATTEMPTS = 3
SERVER_RETRY_WAIT = 20  # seconds; build/sbx may be mid-rebuild


class Failure(Exception):
    pass


# ---------------------------------------------------------------- targets

def live_sandboxes_cpu(pid):
    """Seconds of CPU used so far by the sandboxes of server pid that are
    still alive: the sum over their cgroups (named s<pid>-<n> under the
    server's own group's "sbx"), v1 cpuacct or v2 cpu.stat."""
    import glob
    total = 0.0
    try:
        with open("/proc/%d/cgroup" % pid) as f:
            lines = f.read().splitlines()
    except OSError:
        return 0.0
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        rel = rel.rstrip("/")
        if controllers == "":
            pattern = "/sys/fs/cgroup%s/sbx/s%d-*/cpu.stat" % (rel, pid)
        elif "cpuacct" in controllers.split(","):
            pattern = "/sys/fs/cgroup/%s%s/sbx/s%d-*/cpuacct.usage" % (
                controllers, rel, pid)
        else:
            continue
        for path in glob.glob(pattern):
            try:
                with open(path) as f:
                    text = f.read()
            except OSError:
                continue  # removed meanwhile: reaped, in cutime now
            if path.endswith("cpu.stat"):
                for row in text.splitlines():
                    if row.startswith("usage_usec "):
                        total += int(row.split()[1]) / 1e6
            else:
                total += int(text) / 1e9
    return total


class SbxTarget:
    """POST /run_code over one keep-alive connection per client thread."""

    def __init__(self, port, pid, name="sbx"):
        self.port = port
        self.pid = pid
        self.name = name
        self.local = threading.local()

    def cpu_seconds(self):
        """CPU the server has used, its sandboxes included: the reaped ones
        (each sandbox's init is its child and waits for everything inside)
        and the live ones, by their cgroups (a warm sandbox with a forking
        zygote serves many runs before it is reaped)."""
        try:
            with open("/proc/%d/stat" % self.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        # utime, stime, cutime, cstime: fields 14-17, here 11-14.
        own = sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
        return own + live_sandboxes_cpu(self.pid)

    def run(self, code, expect):
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                              timeout=RUN_TIMEOUT)
            self.local.conn = conn
        body = json.dumps({"code": code, "language": "python"})
        try:
            conn.request("POST", "/run_code", body,
                         {"Content-Type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            self.local.conn = None
            raise Failure("connection: %s" % (e,))
        if resp.status != 200:
            raise Failure("HTTP %d: %s" % (resp.status, raw[:200]))
        try:
            doc = json.loads(raw)
        except ValueError:
            raise Failure("reply is not JSON: %r" % raw[:200])
        if doc.get("status") != "Success":
            raise Failure("status %s: %s" % (doc.get("status"),
                                            json.dumps(doc)[:300]))
        out = (doc.get("run_result") or {}).get("stdout")
        if out != expect:
            raise Failure("unexpected stdout %r" % (out,))


class SubprocessTarget:
    """Write main.py into a fresh mkdtemp() dir, run argv(dir), remove the
    dir: what SandboxFusion does per request, wrapped or not."""

    def __init__(self, name, argv):
        self.name = name
        self.argv = argv  # work dir -> argv list

    def cpu_seconds(self):
        """CPU of this script's reaped children: the runs of whichever
        target is being measured (targets never run at the same time)."""
        import resource
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ru.ru_utime + ru.ru_stime

    def run(self, code, expect):
        d = tempfile.mkdtemp(prefix="bench-")
        try:
            with open(os.path.join(d, "main.py"), "w") as f:
                f.write(code)
            try:
                cp = subprocess.run(self.argv(d), cwd=d,
                                    stdin=subprocess.DEVNULL,
                                    capture_output=True,
                                    timeout=RUN_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise Failure("timed out after %d s" % RUN_TIMEOUT)
            except OSError as e:
                raise Failure(str(e))
        finally:
            shutil.rmtree(d, ignore_errors=True)
        if cp.returncode != 0:
            err = cp.stderr.decode(errors="replace").strip().splitlines()
            raise Failure("%s exited %d: %s" % (
                self.argv(d)[0], cp.returncode,
                err[-1][:200] if err else "(no stderr)"))
        if cp.stdout.decode(errors="replace") != expect:
            raise Failure("unexpected stdout %r" % cp.stdout[:100])


def bare_target(py):
    return SubprocessTarget("bare", lambda d: [py, "main.py"])


def bwrap_target(py):
    # A strict sandbox in bubblewrap's terms: empty root, read-only /usr and
    # /etc, private /tmp, /proc and /dev, every namespace, an unprivileged
    # uid without capabilities, a clean environment, a new session.
    def argv(d):
        return ["bwrap",
                "--ro-bind", "/usr", "/usr",
                "--symlink", "usr/bin", "/bin",
                "--symlink", "usr/sbin", "/sbin",
                "--symlink", "usr/lib", "/lib",
                "--symlink", "usr/lib64", "/lib64",
                "--ro-bind", "/etc", "/etc",
                "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
                "--bind", d, "/sandbox", "--chdir", "/sandbox",
                "--unshare-all", "--uid", "65534", "--gid", "65534",
                "--cap-drop", "ALL", "--die-with-parent", "--new-session",
                "--clearenv", "--setenv", "PATH", "/usr/bin:/bin",
                "--setenv", "HOME", "/sandbox",
                py, "main.py"]
    return SubprocessTarget("bwrap", argv)


def firejail_target(py):
    return SubprocessTarget(
        "firejail",
        lambda d: ["firejail", "--quiet", "--noprofile", "--net=none",
                   "--private", py, os.path.join(d, "main.py")])


def runsc_target(py, extra):
    # `runsc do` shows the host root read-only under a tmpfs overlay and
    # starts in the current directory, so main.py is found there.
    return SubprocessTarget(
        "runsc",
        lambda d: ["runsc", "--rootless=false", "--network=none"] + extra +
        ["do", py, "main.py"])


def probe(target):
    """Runs hello world once; returns None when it works, else the reason."""
    try:
        target.run(PROGRAMS[0][1], PROGRAMS[0][2])
        return None
    except Failure as e:
        return str(e)


def usable(target):
    """Returns (target, None) when it runs hello world, else (None, why)."""
    why = probe(target)
    if why is not None:
        return None, "unavailable: " + why
    return target, None


def baselines(py):
    """Returns [(name, target or None, note)] in table order."""
    out = []
    out.append(("bare", *usable(bare_target(py))))
    for name, pkg, make in (("bwrap", "bubblewrap", bwrap_target),
                            ("firejail", "firejail", firejail_target)):
        if not shutil.which(name):
            out.append((name, None, "unavailable: %s is not installed "
                        "(apt-get install %s)" % (name, pkg)))
            continue
        out.append((name, *usable(make(py))))
    if not shutil.which("runsc"):
        out.append(("runsc", None, "unavailable: runsc is not installed "
                    "(apt-get install runsc)"))
    else:
        # Where runsc cannot set up cgroups, --ignore-cgroups still runs.
        reasons = []
        for extra in ([], ["--ignore-cgroups"]):
            t = runsc_target(py, extra)
            why = probe(t)
            if why is None:
                note = "flags: " + " ".join(extra) if extra else None
                out.append(("runsc", t, note))
                break
            reasons.append(why)
        else:
            out.append(("runsc", None, "unavailable: " + reasons[0]))
    return out


# ---------------------------------------------------------------- measuring

def percentile(sorted_xs, p):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_xs:
        return None
    k = max(0, math.ceil(p / 100.0 * len(sorted_xs)) - 1)
    return sorted_xs[k]


def measure(target, code, expect, conc, nreq, budget):
    """Runs nreq requests from conc threads (each thread one request at a
    time). Stops issuing new requests once `budget` seconds have passed and
    every thread has done at least one. Returns a result dict."""
    lock = threading.Lock()
    issued = [0]
    lat = []
    fails = []
    start = threading.Barrier(conc + 1)
    t0 = [0.0]

    def take():
        with lock:
            if issued[0] >= nreq:
                return False
            if (issued[0] >= conc and
                    time.perf_counter() - t0[0] > budget):
                return False
            issued[0] += 1
            return True

    def worker():
        start.wait()
        while take():
            t = time.perf_counter()
            try:
                target.run(code, expect)
                ok = True
            except Failure as e:
                ok = False
                err = str(e)
            dt = time.perf_counter() - t
            with lock:
                if ok:
                    lat.append(dt)
                else:
                    fails.append(err)

    threads = [threading.Thread(target=worker, daemon=True)
               for _ in range(conc)]
    for th in threads:
        th.start()
    cpu0 = target.cpu_seconds()
    t0[0] = time.perf_counter()
    start.wait()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0[0]
    cpu1 = target.cpu_seconds()
    lat.sort()
    return {
        "requests": issued[0],
        "ok": len(lat),
        "failed": len(fails),
        "errors": fails[:3],
        "wall_s": wall,
        "p50_ms": percentile(lat, 50) * 1e3 if lat else None,
        "p99_ms": percentile(lat, 99) * 1e3 if lat else None,
        "rps": len(lat) / wall if wall > 0 else None,
        "cpu_ms": ((cpu1 - cpu0) * 1e3 / issued[0]
                   if cpu0 is not None and cpu1 is not None and issued[0]
                   else None),
        "latencies_ms": [round(x * 1e3, 3) for x in lat],
    }


# ---------------------------------------------------------------- output

def sh(argv):
    try:
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return (cp.stdout or cp.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def host_info(py):
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    distro = "?"
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    distro = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    rev = sh(["git", "-C", TOP, "describe", "--always", "--dirty"])
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "os": distro,
        "python": sh([py, "--version"]),
        "sbx_git": rev,
        "bwrap": sh(["bwrap", "--version"]) if shutil.which("bwrap") else None,
        "firejail": (sh(["firejail", "--version"])
                     if shutil.which("firejail") else None),
        "runsc": sh(["runsc", "--version"]) if shutil.which("runsc") else None,
    }


def loadavg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def fmt_ms(x):
    if x is None:
        return "-"
    return "%.1f" % x if x < 100 else "%.0f" % x


def fmt_rps(x):
    if x is None:
        return "-"
    return "%.1f" % x if x < 100 else "%.0f" % x


def fmt_ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return "%.2f" % (a / b)


def table(results, names, programs, concs):
    """One row per (program, concurrency); per target p50/p99 and req/s;
    per baseline the ratios lat = base_p50/sbx_p50, tput = sbx/base rps."""
    head2 = ["program", "c"]
    groups = []
    for n in names:
        cols = ["p50/p99 ms", "req/s"] + ([] if n == "sbx" else
                                          ["lat x", "tput x"])
        groups.append((n, len(cols)))
        head2 += cols
    rows = []
    marks = []
    for prog in programs:
        for c in concs:
            row = [prog, str(c)]
            s = results.get((prog, c, "sbx"))
            for n in names:
                r = results.get((prog, c, n))
                if r is None:
                    row += ["n/a", "-"] + ([] if n == "sbx" else ["-", "-"])
                    continue
                flag = ""
                if r["failed"]:
                    flag = "!"
                    marks.append("%s %s c=%d: %d of %d failed, e.g. %s" % (
                        n, prog, c, r["failed"], r["requests"],
                        r["errors"][0]))
                elif r["requests"] < r["wanted"]:
                    flag = "*"
                row += ["%s/%s%s" % (fmt_ms(r["p50_ms"]), fmt_ms(r["p99_ms"]),
                                     flag), fmt_rps(r["rps"])]
                if n != "sbx":
                    row += [fmt_ratio(r["p50_ms"], s and s["p50_ms"]),
                            fmt_ratio(s and s["rps"], r["rps"])]
            rows.append(row)
    widths = [max(len(x) for x in col) for col in zip(head2, *rows)]
    sep = " | "
    # Group titles centred over their columns.
    line1 = ("%-*s  %*s" % (widths[0], "", widths[1], ""))
    i = 2
    for n, k in groups:
        w = sum(widths[i:i + k]) + 2 * (k - 1)
        line1 += sep + n.center(w)
        i += k

    def render(cells):
        out = "%-*s  %*s" % (widths[0], cells[0], widths[1], cells[1])
        i = 2
        for _, k in groups:
            out += sep + "  ".join(cells[j].rjust(widths[j])
                                   for j in range(i, i + k))
            i += k
        return out
    lines = [line1.rstrip(), render(head2), "-" * len(render(head2))]
    lines += [render(r) for r in rows]
    return lines, marks


def cpu_table(results, names, programs, concs):
    """CPU per run: for sbx the server's own CPU and its reaped sandboxes'
    (init and everything under it), for a baseline this script's reaped
    children; both over the cell, divided by the requests sent. cpu x =
    baseline / sbx (> 1: sbx spends less)."""
    head = ["program", "c"]
    for n in names:
        head += ["%s ms" % n] + ([] if n == "sbx" else ["cpu x"])
    rows = []
    for prog in programs:
        for c in concs:
            s = results.get((prog, c, "sbx"))
            row = [prog, str(c)]
            for n in names:
                r = results.get((prog, c, n))
                row.append(fmt_ms(r and r.get("cpu_ms")))
                if n != "sbx":
                    row.append(fmt_ratio(r and r.get("cpu_ms"),
                                         s and s.get("cpu_ms")))
            rows.append(row)
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]

    def render(cells):
        return "  ".join(x.rjust(w) if i > 1 else x.ljust(w)
                         for i, (x, w) in enumerate(zip(cells, widths)))
    return (["CPU per run, ms (user + system; sbx: server and its "
             "sandboxes; baselines: their subprocesses); cpu x = baseline "
             "/ sbx, > 1 means sbx spends less",
             render(head), "-" * len(render(head))] +
            [render(r) for r in rows])


# ---------------------------------------------------------------- main

def start_server(args, log, binary=None, name="sbx"):
    sbxserver.SBX = binary or args.sbx
    last = None
    for attempt in range(1, SERVER_START_ATTEMPTS + 1):
        srv = sbxserver.SbxServer(
            extra_args=["--concurrency", str(args.server_concurrency)])
        try:
            srv.__enter__()
            return srv, SbxTarget(srv.port, srv.proc.pid, name)
        except (RuntimeError, OSError) as e:
            last = e
            srv.stop()
            if getattr(srv, "dir", None):  # stop() skips it without a proc
                srv.dir.cleanup()
            if attempt < SERVER_START_ATTEMPTS:
                log("sbx serve did not come up (%s); retrying in %d s" % (
                    str(e).strip()[:300], SERVER_RETRY_WAIT))
                time.sleep(SERVER_RETRY_WAIT)
    raise RuntimeError("sbx serve failed %d times: %s" % (
        SERVER_START_ATTEMPTS, last))


def main():
    ap = argparse.ArgumentParser(
        description="Benchmark sbx POST /run_code against bare subprocess, "
        "bubblewrap, firejail and runsc, side by side.")
    ap.add_argument("--sbx", default=os.path.join(TOP, "build", "sbx"),
                    help="sbx binary (default build/sbx)")
    ap.add_argument("--python", default="/usr/bin/python3",
                    help="interpreter the baselines run (default "
                    "/usr/bin/python3, what sbx runs inside its sandboxes)")
    ap.add_argument("--server-concurrency", type=int,
                    default=os.cpu_count() or 1,
                    help="sbx serve --concurrency (default: cores; the "
                    "server's own default is 32 per core)")
    ap.add_argument("--quick", action="store_true",
                    help="few requests per cell and a short time budget: a "
                    "smoke run for CI, numbers not meaningful")
    ap.add_argument("--requests", type=int, metavar="N",
                    help="requests per cell (default 100 at c<8, 200 at "
                    "c>=8; with --quick, 10 or c)")
    ap.add_argument("--cell-seconds", type=float, metavar="S",
                    help="stop issuing requests to one target in one cell "
                    "after S seconds, once every client has sent one "
                    "(default 8, with --quick 2); keeps slow baselines "
                    "bounded, cut cells are marked *")
    ap.add_argument("--concurrency", default=None, metavar="LIST",
                    help="client concurrencies, comma-separated (default "
                    "1,2,8,32)")
    ap.add_argument("--programs", default=DEFAULT_PROGRAMS, metavar="LIST",
                    help="programs to run, comma-separated, of "
                    + ",".join(p[0] for p in PROGRAMS) + " (default "
                    + DEFAULT_PROGRAMS + ")")
    ap.add_argument("--only", metavar="LIST",
                    help="baselines to run, comma-separated (default all: "
                    "bare,bwrap,firejail,runsc)")
    ap.add_argument("--sbx-base", metavar="PATH",
                    help="also run this other sbx binary (an earlier "
                    "build, say) as a baseline named sbx-base, on a server "
                    "of its own with the same options: the ratios then "
                    "compare two builds in one run")
    ap.add_argument("--json", metavar="FILE",
                    help="also write the raw numbers (every latency) here")
    args = ap.parse_args()

    concs = ([int(x) for x in args.concurrency.split(",")]
             if args.concurrency else CONCURRENCY)
    wanted_programs = args.programs.split(",")
    unknown = set(wanted_programs) - {p[0] for p in PROGRAMS}
    if unknown:
        ap.error("unknown programs: " + ",".join(sorted(unknown)))
    PROGRAMS[:] = [p for p in PROGRAMS if p[0] in wanted_programs]
    budget = args.cell_seconds or (2.0 if args.quick else 8.0)

    def wanted(c):
        if args.requests:
            return max(args.requests, 1)
        if args.quick:
            return max(10, c)
        return 200 if c >= 8 else 100

    def log(msg):
        print("# " + msg, file=sys.stderr, flush=True)

    command = shlex.join([sys.executable] + sys.argv)
    info = host_info(args.python)
    print("command: %s   (cwd %s)" % (command, os.getcwd()))
    load0 = loadavg()
    print("host: %d cores, %s; %s; kernel %s; %s; load %.2f" % (
        info["cores"], info["cpu"], info["os"], info["kernel"],
        info["python"], load0))
    print("sbx: %s (git %s), serve --concurrency %d" % (
        args.sbx, info["sbx_git"], args.server_concurrency))
    for k in ("bwrap", "firejail", "runsc"):
        if info[k]:
            print("%s: %s" % (k, info[k]))
    sys.stdout.flush()

    try:
        srv, sbx = start_server(args, log)
    except RuntimeError as e:
        print("FAIL: %s" % e)
        return 1
    srv_base = None
    try:
        log("probing baselines")
        bases = baselines(args.python)
        if args.only:
            keep = set(args.only.split(","))
            bases = [b for b in bases if b[0] in keep]
        if args.sbx_base:
            try:
                srv_base, t = start_server(args, log, args.sbx_base,
                                           "sbx-base")
                bases.insert(0, ("sbx-base", t, None))
            except RuntimeError as e:
                bases.insert(0, ("sbx-base", None, "unavailable: %s" % e))
        notes = [(n, note) for n, _, note in bases if note]
        targets = [sbx] + [t for _, t, _ in bases if t]
        names = ["sbx"] + [n for n, _, _ in bases]

        # Warm every target on every program (caches, pools, page cache).
        # sbx failing here is not fatal yet: the cells count and report it.
        for prog, code, expect in PROGRAMS:
            for t in targets:
                for _ in range(3):
                    try:
                        t.run(code, expect)
                    except Failure as e:
                        log("warm-up: %s %s failed: %s" % (t.name, prog, e))

        # Cells run one after another; within a cell the targets take
        # turns, starting with a different one each cell, so that a change
        # in background load does not always land on the same target.
        results = {}
        t_start = time.perf_counter()
        cell = 0
        for prog, code, expect in PROGRAMS:
            for c in concs:
                k = cell % len(targets)
                cell += 1
                for t in targets[k:] + targets[:k]:
                    n = wanted(c)
                    r = measure(t, code, expect, c, n, budget)
                    r["wanted"] = n
                    results[(prog, c, t.name)] = r
                    log("%-5s c=%-2d %-8s n=%-3d p50 %s ms  p99 %s ms  "
                        "%s req/s  cpu %s ms/run%s" % (
                            prog, c, t.name, r["requests"],
                            fmt_ms(r["p50_ms"]), fmt_ms(r["p99_ms"]),
                            fmt_rps(r["rps"]), fmt_ms(r["cpu_ms"]),
                            "  FAILED %d" % r["failed"] if r["failed"]
                            else ""))
        elapsed = time.perf_counter() - t_start
    finally:
        srv.stop()
        if srv_base:
            srv_base.stop()

    progs = [p[0] for p in PROGRAMS]
    lines, marks = table(results, names, progs, concs)
    print()
    print("POST /run_code, Python: hello = print(\"hello\"), cpu = "
          "sum(i*i for i in range(300000)) (~50 ms of work)" +
          (", imports = json, re, collections, itertools, math, numpy"
           if "imports" in progs else ""))
    print("c = concurrent clients; latency p50/p99 in ms per request; "
          "req/s = successful requests / cell wall time")
    print("lat x = baseline p50 / sbx p50, tput x = sbx req/s / baseline "
          "req/s: > 1 means sbx is faster")
    print("baselines run main.py as a direct subprocess per request (fresh "
          "mkdtemp dir, write, run, rm), with no HTTP or JSON: that favours "
          "them")
    print()
    for line in lines:
        print(line)
    print()
    for line in cpu_table(results, names, progs, concs):
        print(line)
    print()
    cut = [(k, r) for k, r in results.items()
           if not r["failed"] and r["requests"] < r["wanted"]]
    if cut:
        print("* cut by the %.0f s cell budget: %s" % (budget, ", ".join(
            "%s %s c=%d n=%d" % (k[2], k[0], k[1], r["requests"])
            for k, r in cut)))
    for m in marks:
        print("! " + m)
    for n, note in notes:
        print("%s: %s" % (n, note))
    load1 = loadavg()
    print("measured in %.0f s; 1-min load average %.2f before, %.2f after "
          "(this script's own work included)" % (elapsed, load0, load1))
    if load0 > 0.5 * (os.cpu_count() or 1):
        print("note: the host was busy before the run started; other work "
              "shares the cores, so expect noise")

    sbx_failed = sum(r["failed"] for k, r in results.items()
                     if k[2] == "sbx")
    if args.json:
        doc = {
            "command": command,
            "cwd": os.getcwd(),
            "host": info,
            "server_concurrency": args.server_concurrency,
            "cell_seconds": budget,
            "load_before": load0,
            "load_after": load1,
            "programs": {p[0]: p[1] for p in PROGRAMS},
            "notes": dict(notes),
            "cells": [dict(program=k[0], concurrency=k[1], target=k[2], **r)
                      for k, r in results.items()],
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
    if sbx_failed:
        print("FAIL: sbx failed %d requests" % sbx_failed)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

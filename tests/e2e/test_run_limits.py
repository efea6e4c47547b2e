"""Resource limits of `sbx run`, each pushed past for real: the program
inside sees the errno the limit should give, or the result names the limit,
and the host is none the worse afterwards.
"""
import json
import os
import re
import signal
import subprocess
import sys
import textwrap

from conftest import SBX, cgroup_roots, describe, host_cmdline_pids, \
    out_lines, unique_marker

MiB = 1 << 20


def _line(cp, word):
    lines = [l for l in out_lines(cp) if l.startswith(word + " ")]
    assert lines, "no %r line in the output" % word
    return lines[0].split()[1:]


# 1. Processes.

def test_fork_bomb_hits_pids_limit(py):
    marker = unique_marker()
    code = textwrap.dedent("""\
        import errno, os, sys, time
        n = 0
        try:
            while True:
                if os.fork() == 0:
                    time.sleep(60)
                    os._exit(0)
                n += 1
        except OSError as ex:
            print("fork", errno.errorcode[ex.errno], n, flush=True)
        # The host is another matter: the sandbox's limit is its own.
        sys.exit(3)
        """)
    cp, res = py(code, "bomb-" + marker, opts=["--pids", "64", "-t", "20s"])
    assert res["status"] == "nonzero_exit" and res["exit_code"] == 3, \
        describe(cp, res)
    err, n = _line(cp, "fork")
    assert err == "EAGAIN", describe(cp, res)
    # init and the program itself count too.
    assert 0 < int(n) < 64, describe(cp, res)
    # The host still forks, and none of the bomb's processes is left.
    assert subprocess.run(["/bin/true"]).returncode == 0
    assert host_cmdline_pids("bomb-" + marker) == []


def test_shell_fork_bomb_is_contained(run):
    marker = unique_marker()
    # The shell itself then waits (exec, no fork needed) while the bomb
    # grows: the wall limit ends it.
    cp, res = run(["--pids", "64", "-t", "2s", "--", "bash", "-c",
                   ":(){ :|:& };:; exec sleep 60", "bomb-" + marker])
    assert res["status"] == "time_limit", describe(cp, res)
    assert cp.returncode == 128 + 9, describe(cp, res)
    assert b"Resource temporarily unavailable" in cp.stderr, \
        describe(cp, res)
    assert subprocess.run(["/bin/true"]).returncode == 0
    assert host_cmdline_pids("bomb-" + marker) == []


# 2. Memory.

def test_memory_balloon_is_oom_killed(py):
    code = textwrap.dedent("""\
        size = 128 << 20
        b = bytearray(size)
        for i in range(0, size, 4096):
            b[i] = 1
        print("survived", flush=True)
        """)
    cp, res = py(code, opts=["-m", "64M"])
    assert res["status"] == "memory_limit", describe(cp, res)
    assert res["oom_killed"] is True, describe(cp, res)
    assert res["signal"] == 9, describe(cp, res)
    assert b"survived" not in cp.stdout
    # Swap (if the host has any) did not extend the limit.
    assert res["peak_memory_bytes"] <= 64 * MiB, describe(cp, res)
    with open("/proc/swaps") as f:
        if len(f.read().splitlines()) <= 1:
            print("host has no swap: the swap cap is not exercised")


# 3. Disk and file size.

FILL = textwrap.dedent("""\
    import errno, os, sys
    def fill(path, limit=None):
        n = 0
        chunk = b"x" * (1 << 20)
        try:
            with open(path, "wb", buffering=0) as f:
                while limit is None or n < limit:
                    n += f.write(chunk)
        except OSError as ex:
            return errno.errorcode[ex.errno], n
        return "OK", n
    """)


def test_disk_full_gives_enospc(py):
    free_before = os.statvfs("/")
    code = FILL + textwrap.dedent("""\
        e, n = fill("/tmp/fill")
        print("tmp", e, n)
        # /work, $HOME and /dev/shm share that one tmpfs.
        for d in ("/work", "/home/sandbox", "/dev/shm"):
            e2, n2 = fill(d + "/more")
            print(d, e2, n2)
        os.unlink("/tmp/fill")
        e3, n3 = fill("/work/again", 4 << 20)
        print("again", e3, n3)
        """)
    cp, res = py(code, opts=["--disk", "16M", "--fsize", "64M"])
    assert res["status"] == "ok", describe(cp, res)
    err, n = _line(cp, "tmp")
    assert err == "ENOSPC", describe(cp, res)
    assert 8 * MiB < int(n) <= 16 * MiB, describe(cp, res)
    for d in ("/work", "/home/sandbox", "/dev/shm"):
        err, n = _line(cp, d)
        assert err == "ENOSPC" and int(n) < MiB, describe(cp, res)
    # The space comes back when the file goes.
    assert _line(cp, "again") == ["OK", str(4 * MiB)], describe(cp, res)
    # The data went to memory, not to the host's disk.
    free_after = os.statvfs("/")
    lost = (free_before.f_bavail - free_after.f_bavail) * free_after.f_frsize
    assert lost < 16 * MiB, "host disk lost %d bytes" % lost


def test_fsize_gives_efbig(py):
    code = FILL + textwrap.dedent("""\
        e, n = fill("/work/big")
        print("work", e, n, os.path.getsize("/work/big"))
        e, n = fill("/tmp/big")
        print("tmp", e, n, os.path.getsize("/tmp/big"))
        """)
    cp, res = py(code, opts=["--fsize", "1M", "--disk", "64M"])
    # SIGXFSZ is ignored inside, so the write fails instead of killing.
    assert res["status"] == "ok", describe(cp, res)
    assert _line(cp, "work") == ["EFBIG", str(MiB), str(MiB)], \
        describe(cp, res)
    assert _line(cp, "tmp") == ["EFBIG", str(MiB), str(MiB)], \
        describe(cp, res)


def test_nofile_gives_emfile(py):
    code = textwrap.dedent("""\
        import errno, os
        fds = []
        try:
            while True:
                fds.append(os.open("/dev/null", os.O_RDONLY))
        except OSError as ex:
            print("open", errno.errorcode[ex.errno], max(fds))
        """)
    cp, res = py(code, opts=["--nofile", "32"])
    assert res["status"] == "ok", describe(cp, res)
    err, top = _line(cp, "open")
    assert err == "EMFILE" and int(top) == 31, describe(cp, res)


# 4. Output.

RSS_WRAPPER = textwrap.dedent("""\
    import resource, subprocess, sys
    rc = subprocess.run(sys.argv[2:]).returncode
    with open(sys.argv[1], "w") as f:
        f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
    sys.exit(rc)
    """)


def test_output_flood_is_cut(tmp_path):
    rss_file = tmp_path / "rss"
    json_file = tmp_path / "result.json"
    # A fresh interpreter measures the largest RSS among sbx and the
    # processes it waited for, unaffected by anything this test ran before.
    cp = subprocess.run(
        [sys.executable, "-c", RSS_WRAPPER, str(rss_file), SBX, "run",
         "--json", str(json_file), "--output", "1M", "-t", "60s", "--",
         "head", "-c", "1G", "/dev/zero"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    res = json.loads(json_file.read_text())
    assert res["status"] == "output_limit", describe(cp, res)
    assert res["output_truncated"] is True, describe(cp, res)
    assert len(cp.stdout) == MiB, describe(cp, res)
    assert cp.stdout.count(b"\0") == MiB
    assert b"output_limit" in cp.stderr, describe(cp, res)
    max_rss_kib = int(rss_file.read_text())
    assert max_rss_kib < 64 * 1024, "sbx grew to %d KiB" % max_rss_kib


def test_stderr_flood_is_cut(run):
    cp, res = run(["--output", "64K", "--", "bash", "-c",
                   "echo out; head -c 100M /dev/zero >&2"])
    assert res["status"] == "output_limit", describe(cp, res)
    assert res["output_truncated"] is True
    assert cp.stdout == b"out\n"
    # The limit is per stream; sbx's own status line follows the data.
    assert cp.stderr == b"\0" * (64 * 1024) + b"sbx run: output_limit\n", \
        describe(cp, res)


# 5. Time.

def test_busy_loop_hits_wall_limit(py):
    cp, res = py("while True: pass", opts=["-t", "1s"])
    assert res["status"] == "time_limit", describe(cp, res)
    assert res["signal"] == 9 and cp.returncode == 137, describe(cp, res)


def test_sleep_hits_wall_limit(run):
    cp, res = run(["-t", "500ms", "--", "sleep", "30"])
    assert res["status"] == "time_limit", describe(cp, res)
    assert cp.returncode == 137, describe(cp, res)


def test_busy_loop_hits_cpu_limit(py):
    cp, res = py("while True: pass", opts=["--cpu", "1s", "-t", "30s"])
    assert res["status"] == "time_limit", describe(cp, res)
    # The CPU limit ended it (the cgroup sampler's SIGKILL or the
    # RLIMIT_CPU backstop's SIGXCPU), long before the wall limit.
    assert res["signal"] in (signal.SIGKILL, signal.SIGXCPU), \
        describe(cp, res)
    assert res["wall_ms"] < 30000, describe(cp, res)


def test_cpu_limit_counts_all_processes(py):
    # Four burners share the sandbox's one second: when it is used up,
    # each has had about a quarter of it, far from the per-process
    # RLIMIT_CPU backstop (SIGXCPU at 1 s), so only the sandbox-wide count
    # can have stopped them (SIGKILL).
    code = textwrap.dedent("""\
        import os
        for _ in range(3):
            if os.fork() == 0:
                break
        while True:
            pass
        """)
    cp, res = py(code, opts=["--cpu", "1s", "-t", "30s"])
    assert res["status"] == "time_limit", describe(cp, res)
    assert res["signal"] == signal.SIGKILL, describe(cp, res)
    assert res["wall_ms"] < 30000, describe(cp, res)


# 18. Nothing leaks, run after run.

def _cgroup_dirs():
    dirs = set()
    for root in cgroup_roots():
        for d, subdirs, _ in os.walk(root):
            for s in subdirs:
                dirs.add(os.path.join(d, s))
    return dirs


def _procs_of(marker, sbx_pids):
    """Host pids that belong to our runs: the marker is in their command
    line (sbx itself, its clone child, the command), or they sit in a
    cgroup one of our sbx processes made (init)."""
    groups = tuple("/s%d-" % pid for pid in sbx_pids)
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % name, "rb") as f:
                cmdline = f.read()
            with open("/proc/%s/cgroup" % name) as f:
                cgroup = f.read()
        except OSError:
            continue
        if marker.encode() in cmdline or any(g in cgroup for g in groups):
            found.add(int(name))
    return found


def test_thousand_runs_leave_nothing(run):
    runs = 1000
    marker = "leak-" + unique_marker()

    def mounts():
        with open("/proc/self/mountinfo") as f:
            return f.read().splitlines()

    mounts_before = mounts()
    cg_before = _cgroup_dirs()
    fds_before = sorted(os.listdir("/proc/self/fd"))
    sbx_pids = []
    failures = []
    for _ in range(runs):
        p = subprocess.Popen([SBX, "run", "--", "/bin/true", marker],
                             stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        _, err = p.communicate(timeout=60)
        sbx_pids.append(p.pid)
        if p.returncode != 0:
            failures.append((p.returncode, err))
    assert failures == [], "%d of %d runs failed, first: %r" % (
        len(failures), runs, failures[0])
    # One more with the JSON, to check what a run reports after all that.
    cp, res = run(["--", "/bin/true"])
    assert res["status"] == "ok", describe(cp, res)

    assert mounts() == mounts_before
    names = {"s%d-" % pid for pid in sbx_pids}
    cg_new = _cgroup_dirs() - cg_before
    ours = [d for d in cg_new
            if re.sub(r"\d+$", "", os.path.basename(d)) in names]
    assert ours == [], "cgroups left behind: %s" % sorted(ours)[:10]
    left = _procs_of(marker, sbx_pids)
    assert left == set(), "processes left behind: %s" % sorted(left)
    assert sorted(os.listdir("/proc/self/fd")) == fds_before

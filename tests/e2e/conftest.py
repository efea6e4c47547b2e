"""Shared helpers for the sbx end-to-end tests.

Every test drives the real binary, so the suite needs root and a
host where sandboxes can be made; when they cannot, the whole suite is
skipped with the reason `sbx check` gives.

Fixtures:
  sbx  path of the binary (env SBX, default build/sbx of this checkout)
  run  run(args, input=None, timeout=60, **kw) -> (CompletedProcess, dict)
  py   py(code, *argv, opts=(), **kw): run(opts + ['--', 'python3', '-c',
       code, *argv], **kw)
"""
import json
import os
import platform
import random
import subprocess
import tempfile

import pytest

REPO = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
SBX = os.environ.get("SBX", os.path.join(REPO, "build", "sbx"))
# Sanitizer builds (make check SANITIZE=...) keep freed memory in their
# quarantine and shadow every byte, so the server's RSS says nothing about
# what it holds: tests check memory bounds only in normal builds.
MEMORY_BOUNDS = not os.environ.get("SBX_SANITIZE")
SANDBOX_UID = 1000
# Each live sandbox maps its uids 0..65535 onto a slot of host ids of its
# own: UID_SLOTS slots of UID_SLOT_IDS ids from UID_BASE (sbx's
# SBX_UID_BASE and SBX_UID_SLOTS).
UID_SLOT_IDS = 65536
UID_BASE = int(os.environ.get("SBX_UID_BASE") or 0x70000000)
UID_SLOTS = int(os.environ.get("SBX_UID_SLOTS") or 4096)


def is_sandbox_host_uid(uid):
    """Whether uid is what the sandbox user is on the host in some slot."""
    first = uid - SANDBOX_UID
    return (first % UID_SLOT_IDS == 0 and UID_BASE <= first <
            UID_BASE + UID_SLOTS * UID_SLOT_IDS)


def one_slot_env():
    """An environment for sbx with a single uid slot of its own, picked at
    random above the default range so that concurrent test runs do not
    meet. Returns (env, first host id of the slot): the sandbox user is
    first + SANDBOX_UID on the host."""
    first = random.randrange(0x80000000 // UID_SLOT_IDS,
                             0xF0000000 // UID_SLOT_IDS) * UID_SLOT_IDS
    return dict(os.environ, SBX_UID_BASE=str(first),
                SBX_UID_SLOTS="1"), first
IS_X86_64 = platform.machine() == "x86_64"


def run(args, input=None, timeout=60, **kw):
    """Runs `sbx run --json <tmp> [opts] -- CMD...`.

    args is everything after `--json <tmp>`: options, then '--', then the
    command; without a '--' the whole list is the command. input, when
    given (bytes or str), becomes the sandbox's stdin through --stdin (sbx
    run never reads its own stdin). Other keywords go to subprocess.run;
    stdout and stderr are captured as bytes unless overridden.

    Returns (completed_process, result) where result is the parsed JSON,
    or None when sbx wrote none (bad options).
    """
    args = [str(a) for a in args]
    if "--" not in args:
        args = ["--"] + args
    fd, json_path = tempfile.mkstemp(prefix="sbx-e2e-", suffix=".json")
    os.close(fd)
    os.unlink(json_path)  # sbx creates it; absent means "no JSON written"
    stdin_path = None
    opts = ["--json", json_path]
    if input is not None:
        fd, stdin_path = tempfile.mkstemp(prefix="sbx-e2e-stdin-")
        with os.fdopen(fd, "wb") as f:
            f.write(input.encode() if isinstance(input, str) else input)
        opts += ["--stdin", stdin_path]
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("stdin", subprocess.DEVNULL)
    try:
        cp = subprocess.run([SBX, "run"] + opts + args, timeout=timeout,
                            **kw)
        result = None
        if os.path.exists(json_path):
            with open(json_path) as f:
                text = f.read()
            result = json.loads(text) if text.strip() else None
    finally:
        for p in (json_path, stdin_path):
            if p and os.path.exists(p):
                os.unlink(p)
    return cp, result


def py(code, *argv, opts=(), **kw):
    """Runs a Python program in a sandbox (see run)."""
    return run(list(opts) + ["--", "python3", "-c", code] + list(argv),
               **kw)


def out_lines(cp):
    return cp.stdout.decode(errors="replace").splitlines()


def describe(cp, result):
    """Everything worth seeing when an assertion fails."""
    return ("exit %s\nresult %s\nstdout %r\nstderr %r" %
            (cp.returncode, result, cp.stdout[-2000:], cp.stderr[-2000:]))


def probes(cp):
    """{label: value} from the "label value" lines a probe printed."""
    res = {}
    for line in out_lines(cp):
        parts = line.split(None, 1)
        if len(parts) == 2:
            res[parts[0]] = parts[1]
    return res


def cgroup_roots():
    """Mount points of every cgroup hierarchy, v1 and v2, as this host has
    them (not a fixed list of v1 paths: a v2-only host has one root)."""
    roots = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            fstype = parts[parts.index("-") + 1]
            if fstype in ("cgroup", "cgroup2") and parts[4] not in roots:
                roots.append(parts[4])
    return roots


def host_cmdline_pids(marker, argv0=None):
    """Host pids whose command line contains marker (bytes or str) and,
    with argv0, starts with that program name. (sbx's own argv holds the
    command and its marker too, and so does its clone child until it
    re-executes itself as init.)"""
    if isinstance(marker, str):
        marker = marker.encode()
    start = argv0.encode() + b"\0" if argv0 else b""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % name, "rb") as f:
                cmdline = f.read()
        except OSError:
            continue  # gone meanwhile
        if marker in cmdline and cmdline.startswith(start):
            found.append(int(name))
    return found


def unique_marker():
    """A number only this test run uses, for `sleep 1000.<marker>`."""
    return "%d%06d" % (os.getpid(), int.from_bytes(os.urandom(3), "big"))


@pytest.fixture(scope="session", autouse=True)
def _host_can_sandbox():
    if not os.access(SBX, os.X_OK):
        pytest.exit("no sbx binary at %s (make build, or set SBX)" % SBX,
                    returncode=1)
    if os.geteuid() != 0:
        pytest.skip("sbx run needs root; the tests run as uid %d"
                    % os.geteuid())
    cp = subprocess.run([SBX, "check"], stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, timeout=60)
    if cp.returncode != 0:
        msg = "this host cannot make sandboxes:\n" + cp.stdout.decode()
        print(msg)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def sbx():
    return SBX


@pytest.fixture(name="run")
def run_fixture():
    return run


@pytest.fixture(name="py")
def py_fixture():
    return py


@pytest.fixture
def x86_64():
    if not IS_X86_64:
        pytest.skip("uses x86_64 syscall numbers; this host is %s"
                    % platform.machine())


def pytest_report_header(config):
    """Says what the host gives the suite: the cgroup version and
    controllers decide which limits are tried for real."""
    try:
        out = subprocess.run([SBX, "check"], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return "sbx check: %s" % e
    lines = [l for l in out.splitlines()
             if l.startswith(("cgroup", "user namespaces", "swap limit"))]
    return ["sbx host: " + " | ".join(" ".join(l.split()) for l in lines)]

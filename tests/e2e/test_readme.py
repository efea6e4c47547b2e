"""Every command in README.md runs and prints what the README shows.

The README's code blocks are taken apart into commands; each `sh` block
runs in one bash (so variables such as $ID carry from command to
command) in a scratch directory, against a server this module starts
(localhost:8080 in the README becomes its address), with `sbx` on PATH
being the binary under test. What a command prints is compared with the
comment lines that follow it (`# ...`; whitespace is ignored, `...`
stands for any text and times and sizes may differ); a trailing comment
saying `exit N` gives its exit status, which is otherwise 0. A block
whose first line is `$ CMD` shows CMD's whole output. A `python` block
runs with the client installed by the README's own install block, and
each `print(...)  # TEXT` must print TEXT.

`make check` (what runs this file) and `make run` are not run from the
blocks: test_make_run runs `make run` on its own.

The model gateway's example starts its own mock upstream (port 9000) and
server (port 8081) in the background; here they get free ports instead,
and whatever of them is still running at the end (the pids it wrote to
gateway.pids) is stopped.
"""
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

from sbxserver import SbxServer

REPO = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
README = os.path.join(REPO, "README.md")
SBX = os.environ.get("SBX", os.path.join(REPO, "build", "sbx"))
BUILD = os.environ.get("SBX_BUILD", os.path.dirname(SBX))
# Debian's directories only: the README is for a fresh Debian 12.
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# Commands the blocks name that this file does not run from the block.
NOT_FROM_BLOCKS = {
    "make check": "runs this file",
    "make run": "test_make_run",
}


class Command:
    def __init__(self, text, line):
        self.text = text
        self.line = line
        self.expected = []  # comment lines after it
        self.exit = 0


def read_blocks():
    """[(language, first line number, [lines])] of README's fenced blocks."""
    blocks, cur = [], None
    with open(README) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if cur is None:
                m = re.match(r"^```(\w*)\s*$", line)
                if m:
                    cur = (m.group(1), n + 1, [])
            elif line.startswith("```"):
                blocks.append(cur)
                cur = None
            else:
                cur[2].append(line)
    assert cur is None, "README.md: a code block is not closed"
    return blocks


def is_complete(text):
    if text.rstrip().endswith("\\"):
        return False
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return False
    return True


def split_commands(lines, first):
    """Shell lines -> [Command]: a command runs over lines until its
    quotes close; comment lines after it are its expected output."""
    cmds, pending, start = [], [], 0
    for i, line in enumerate(lines):
        if pending:
            pending.append(line)
        elif not line.strip():
            continue
        elif line.lstrip().startswith("#"):
            assert cmds, "README.md:%d: output before any command" % (
                first + i)
            cmds[-1].expected.append(line.lstrip()[1:])
            continue
        else:
            pending, start = [line], first + i
        text = "\n".join(pending)
        if not is_complete(text):
            continue
        pending = []
        cmd = Command(text, start)
        m = re.search(r"\s{2,}#\s(.*)$", text)
        if m and is_complete(text[:m.start()]):
            cmd.text = text[:m.start()]
            e = re.search(r"\bexit (\d+)\b", m.group(1))
            if e:
                cmd.exit = int(e.group(1))
        cmds.append(cmd)
    assert not pending, "README.md:%d: unterminated command" % start
    return cmds


def squash(text):
    return re.sub(r"\s+", "", text)


VARYING = re.compile(
    r'((?:_ms|_time|_bytes|_s|_count)\\?"\\?:)(\d+(?:\\\.\d+)?)'
    r'|(\d+(?:\\\.\d+)?)(ms)')


def matches(expected, actual):
    """Whether actual fits expected, whitespace aside: '...' is any text,
    and the values of times and sizes may differ."""
    parts = []
    for piece in squash(expected).split("..."):
        p = re.escape(piece)
        p = VARYING.sub(
            lambda m: (m.group(1) + r"\d+(?:\.\d+)?") if m.group(1)
            else (r"\d+(?:\.\d+)?" + m.group(4)), p)
        parts.append(p)
    return re.fullmatch(".*?".join(parts), squash(actual), re.S) is not None


BLOCKS = read_blocks()


@pytest.fixture(scope="module")
def world():
    """A scratch directory with `sbx` on PATH, a copy of the Python
    client's sources, and a server."""
    tmp = tempfile.mkdtemp(prefix="sbx-readme-")
    bindir = os.path.join(tmp, "bin")
    os.mkdir(bindir)
    os.symlink(SBX, os.path.join(bindir, "sbx"))
    work = os.path.join(tmp, "work")
    os.mkdir(work)
    os.mkdir(os.path.join(tmp, "home"))
    shutil.copytree(os.path.join(REPO, "clients", "python"),
                    os.path.join(work, "clients", "python"),
                    ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                  "__pycache__"))
    shutil.copytree(os.path.join(REPO, "examples"),
                    os.path.join(work, "examples"))
    os.makedirs(os.path.join(work, "tests", "e2e"))
    shutil.copy(os.path.join(REPO, "tests", "e2e", "mock_upstream.py"),
                os.path.join(work, "tests", "e2e"))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV"))}
    env.update(PATH=bindir + ":" + SYSTEM_PATH, HOME=os.path.join(tmp, "home"),
               PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    ports = {9000: free_port(), 8081: free_port()}
    try:
        with SbxServer() as srv:
            yield {"dir": work, "env": env, "srv": srv, "ports": ports}
    finally:
        stop_listed(os.path.join(work, "gateway.pids"))
        shutil.rmtree(tmp)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def stop_listed(pid_file):
    """Stops the processes whose pids the README's commands wrote to
    pid_file (they started them), if they still run."""
    try:
        with open(pid_file) as f:
            pids = [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def localize(text, world):
    host = world["srv"].url[len("http://"):]
    text = text.replace("localhost:8080", host).replace("127.0.0.1:8080",
                                                        host)
    for port, real in world["ports"].items():
        for pat in ("localhost:%d", "127.0.0.1:%d", "--port %d"):
            text = text.replace(pat % port, pat % real)
    return text


def run_shell(cmds, world):
    script = ["exec 2>&1"]
    for i, c in enumerate(cmds):
        script.append(localize(c.text, world))
        script.append("printf '\\n@@SBX-README %d %%d\\n' $?" % i)
    p = subprocess.run(["bash", "-c", "\n".join(script)], cwd=world["dir"],
                       env=world["env"], stdout=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, timeout=600)
    out = p.stdout.decode("utf-8", "replace")
    results, pos = {}, 0
    for m in re.finditer(r"\n@@SBX-README (\d+) (\d+)\n", out):
        results[int(m.group(1))] = (out[pos:m.start()], int(m.group(2)))
        pos = m.end()
    return results, out


def check_commands(cmds, world):
    results, out = run_shell(cmds, world)
    for i, c in enumerate(cmds):
        assert i in results, ("README.md:%d: never finished: %s\n%s"
                              % (c.line, c.text, out))
        got, rc = results[i]
        assert rc == c.exit, ("README.md:%d: %s\nexit %d, README says %d:\n%s"
                              % (c.line, c.text, rc, c.exit, got))
        if c.expected:
            want = "\n".join(c.expected)
            assert matches(want, got), (
                "README.md:%d: %s\nprinted:\n%s\nREADME shows:\n%s"
                % (c.line, c.text, got, want))


def block_id(block):
    return "line%d-%s" % (block[1], block[0] or "text")


@pytest.mark.parametrize("block", BLOCKS, ids=[block_id(b) for b in BLOCKS])
def test_block(block, world):
    lang, first, lines = block
    if lang == "python":
        check_python(lines, first, world)
        return
    if lines and lines[0].startswith("$ "):
        cmd = Command(lines[0][2:], first)
        cmd.expected = lines[1:]
        cmd.exit = 0
        check_commands([cmd], world)
        return
    assert lang == "sh", "README.md:%d: a block of unknown kind %r" % (
        first, lang)
    cmds = split_commands(lines, first)
    assert cmds, "README.md:%d: an empty block" % first
    run = []
    for c in cmds:
        if c.text.startswith("make "):
            assert c.text.strip() in NOT_FROM_BLOCKS, (
                "README.md:%d: '%s' is run by no test" % (c.line, c.text))
            continue
        run.append(c)
    if run:
        check_commands(run, world)


def check_python(lines, first, world):
    want = []
    for line in lines:
        m = re.search(r"print\(.*\)\s+#\s(.*)$", line)
        if m:
            want.append(m.group(1))
    assert want, "README.md:%d: a python block that shows no output" % first
    venv_py = os.path.join(world["dir"], ".venv", "bin", "python")
    env = dict(world["env"])
    if os.access(venv_py, os.X_OK):
        py = venv_py  # the README's own install
    else:
        py = "/usr/bin/python3"
        env["PYTHONPATH"] = os.path.join(REPO, "clients", "python")
    code = localize("\n".join(lines), world)
    p = subprocess.run([py, "-c", code], cwd=world["dir"], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=300)
    out = p.stdout.decode("utf-8", "replace")
    assert p.returncode == 0, "README.md:%d: the code failed:\n%s" % (
        first, out)
    got = out.splitlines()
    assert len(got) == len(want), (got, want)
    for g, w in zip(got, want):
        assert matches(w, g), "README.md:%d: printed %r, README shows %r" % (
            first, g, w)


def test_every_block_is_known():
    """Each block is a kind this file runs: new blocks cannot slip by."""
    kinds = {(b[0], bool(b[2]) and b[2][0].startswith("$ ")) for b in BLOCKS}
    assert kinds <= {("sh", False), ("python", False), ("", True)}, kinds


def test_make_run():
    """`make run` builds and serves; a taken port says how to pick
    another. Runs with this build directory and the Python runtime only,
    so that nothing is downloaded."""
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    build = os.path.relpath(BUILD, REPO)
    env = dict(os.environ, SBX_LISTEN="127.0.0.1:0")
    p = subprocess.Popen(
        ["make", "--no-print-directory", "-o", build + "/sbx",
         "BUILD=" + build, "LANGS=python", "run"], cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True)
    out = b""
    try:
        url = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and url is None:
            line = p.stdout.readline()
            if not line:
                break
            out += line
            m = re.search(rb"listening on (http://[\d.]+:\d+)", line)
            if m:
                url = m.group(1).decode()
        assert url, "make run did not start:\n" + out.decode()
        with urllib.request.urlopen(url + "/v1/ping", timeout=30) as r:
            assert r.status == 200
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        p.stdout.close()

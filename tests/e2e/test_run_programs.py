"""Ordinary programs keep working under `sbx run`, and the CLI reports bad
options, failed sandbox stages and signals the way its help says.
"""
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import textwrap

import pytest

from conftest import SANDBOX_UID, SBX, describe, one_slot_env, out_lines


def test_python_threads_and_multiprocessing(py):
    code = textwrap.dedent("""\
        import threading
        from multiprocessing import Pool
        def sq(x):
            return x * x
        out = []
        ts = [threading.Thread(target=out.append, args=(i,)) for i in range(8)]
        for t in ts: t.start()
        for t in ts: t.join()
        print("threads", sorted(out) == list(range(8)))
        if __name__ == "__main__":
            with Pool(2) as p:
                print("pool", p.map(sq, range(10)))
        """)
    cp, res = py(code)
    assert res["status"] == "ok", describe(cp, res)
    assert out_lines(cp) == ["threads True",
                             "pool [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]"]


def test_gcc_compile_and_run(run):
    if not shutil.which("gcc"):
        pytest.skip("gcc is not installed on this host")
    src = '#include <stdio.h>\nint main(void){printf("%d\\n", 6 * 7);}\n'
    cp, res = run(["--", "bash", "-c",
                   "set -e; cd /tmp; cat > t.c; gcc -O2 -o t t.c; ./t"],
                  input=src)
    assert res["status"] == "ok", describe(cp, res)
    assert cp.stdout == b"42\n"


def test_bash_pipeline(run):
    cp, res = run(["--", "bash", "-c", "seq 100 | sort -rn | head -3"])
    assert res["status"] == "ok", describe(cp, res)
    assert cp.stdout == b"100\n99\n98\n"


def test_node(run):
    if not shutil.which("node"):
        pytest.skip("node is not installed on this host")
    cp, res = run(["--", "node", "-e",
                   "console.log([1,2,3].map(x => x * 2).join(','))"])
    assert res["status"] == "ok", describe(cp, res)
    assert cp.stdout == b"2,4,6\n"


def test_stdin_file(run):
    data = "".join("line %d\n" % i for i in range(1000))
    cp, res = run(["--", "wc", "-l"], input=data)
    assert res["status"] == "ok", describe(cp, res)
    assert cp.stdout.strip() == b"1000"


def test_stdin_defaults_to_empty(run):
    cp, res = run(["--", "cat"], input=None, stdin=subprocess.PIPE)
    assert res["status"] == "ok", describe(cp, res)
    assert cp.stdout == b""


def test_signal_alarm_handler_runs(py):
    code = textwrap.dedent("""\
        import signal, time
        fired = []
        signal.signal(signal.SIGALRM, lambda s, f: fired.append(s))
        signal.alarm(1)
        while not fired:
            signal.pause()
        print("alarm", fired[0])
        """)
    cp, res = py(code)
    assert res["status"] == "ok", describe(cp, res)
    assert cp.stdout == b"alarm %d\n" % signal.SIGALRM


def test_write_files_in_work_dir(run):
    cp, res = run(["--", "bash", "-c",
                   "pwd; echo hello > f.txt; mkdir -p d/e; cp f.txt d/e/;"
                   " cat d/e/f.txt; echo $HOME > ~/h; cat ~/h; ls -ld ."])
    assert res["status"] == "ok", describe(cp, res)
    lines = out_lines(cp)
    assert lines[:3] == ["/work", "hello", "/home/sandbox"], lines
    assert lines[3].split()[2] == "sandbox", lines


def test_memory_up_to_the_limit(py):
    code = textwrap.dedent("""\
        size = int(256 * (1 << 20) * 0.7)
        b = bytearray(size)
        for i in range(0, size, 4096):
            b[i] = 1
        print("touched", size)
        """)
    cp, res = py(code, opts=["-m", "256M"])
    assert res["status"] == "ok", describe(cp, res)
    assert res["oom_killed"] is False
    assert res["peak_memory_bytes"] >= int(256 * (1 << 20) * 0.7)


def test_env_and_cwd_options(run):
    cp, res = run(["-e", "FOO=bar baz", "-e", "HOME=/tmp", "-C", "/tmp",
                   "--", "bash", "-c", 'echo "$FOO|$HOME|$PWD"'])
    assert res["status"] == "ok", describe(cp, res)
    assert cp.stdout == b"bar baz|/tmp|/tmp\n"


@pytest.fixture
def open_dir():
    """A host directory anyone may traverse (unlike pytest's tmp_path,
    under root's 0700 /tmp/pytest-of-root)."""
    d = tempfile.mkdtemp(prefix="sbx-e2e-bind-")
    os.chmod(d, 0o755)
    yield pathlib.Path(d)
    shutil.rmtree(d)


def test_ro_bind_and_bind(run, open_dir):
    src = open_dir / "in"
    src.mkdir(mode=0o755)
    (src / "data").write_text("from host\n")
    out = open_dir / "out"
    out.mkdir()
    # A writable bind is written as the sandbox's host uid; with one uid
    # slot configured, that uid is known in advance.
    env, first = one_slot_env()
    os.chown(out, first + SANDBOX_UID, first + SANDBOX_UID)
    cp, res = run(["--ro-bind", "%s:/data" % src, "--bind",
                   "%s:/out" % out, "--", "bash", "-c",
                   "cat /data/data; echo x > /data/new 2>&1 || true; "
                   "echo written > /out/f"], env=env)
    assert res["status"] == "ok", describe(cp, res)
    assert cp.stdout == b"from host\n"
    assert b"Read-only file system" in cp.stderr, describe(cp, res)
    assert not (src / "new").exists()
    assert (out / "f").read_text() == "written\n"


def test_bind_below_private_dir(run, open_dir):
    # root runs sbx and may read this directory; only its parent is
    # closed to others (like anything under /root). The bind is the
    # caller's choice, made with the caller's rights.
    parent = open_dir / "private"
    parent.mkdir(mode=0o700)
    src = parent / "in"
    src.mkdir(mode=0o755)
    (src / "data").write_text("from host\n")
    cp, res = run(["--ro-bind", "%s:/data" % src, "--", "cat",
                   "/data/data"])
    assert res["status"] == "ok", describe(cp, res)
    assert cp.stdout == b"from host\n"


def test_exit_code_passes_through(run):
    cp, res = run(["--", "bash", "-c", "exit 42"])
    assert cp.returncode == 42
    assert res["status"] == "nonzero_exit" and res["exit_code"] == 42
    assert res["signal"] is None


def test_signal_exit_status(run):
    cp, res = run(["--", "bash", "-c", "kill -SEGV $$"])
    assert cp.returncode == 128 + signal.SIGSEGV, describe(cp, res)
    assert res["status"] == "signaled", describe(cp, res)
    assert res["signal"] == signal.SIGSEGV
    assert res["exit_code"] is None


def test_missing_command_is_127(run):
    cp, res = run(["--", "/nonexistent/prog"])
    assert cp.returncode == 127, describe(cp, res)
    assert res["status"] == "nonzero_exit" and res["exit_code"] == 127
    assert b"/nonexistent/prog" in cp.stderr


# Bad options: exit 2 and one line on stderr, before any sandbox is made.

@pytest.mark.parametrize("args, words", [
    (["--frobnicate", "--", "true"], b"--frobnicate"),
    (["-Z", "--", "true"], b"-Z"),
    (["-m", "12Q", "--", "true"], b"12Q"),
    (["-t", "soon", "--", "true"], b"soon"),
    (["--pids", "0", "--", "true"], b"process limit"),
    (["--disk", "1K", "--", "true"], b"disk"),
    (["-e", "NOEQUALS", "--", "true"], b"NOEQUALS"),
    (["-C", "relative", "--", "true"], b"relative"),
    (["--bind", "/nonexistent/sbx-e2e", "--", "true"],
     b"/nonexistent/sbx-e2e"),
    (["--ro-bind", "/tmp:/", "--", "true"], b"bind target"),
    (["-m", "64M"], b"no command"),
    ([], b"no command"),
])
def test_bad_options(args, words):
    cp = subprocess.run([SBX, "run"] + args, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                        timeout=30)
    assert cp.returncode == 2, (cp.returncode, cp.stderr)
    assert cp.stdout == b""
    assert cp.stderr.count(b"\n") == 1 and cp.stderr.endswith(b"\n"), \
        cp.stderr
    assert cp.stderr.startswith(b"sbx run: ") and words in cp.stderr, \
        cp.stderr


def test_bad_cwd_is_a_sandbox_error(run):
    cp, res = run(["-C", "/nonexistent", "--", "true"])
    assert cp.returncode == 125, describe(cp, res)
    assert b"cannot enter working directory" in cp.stderr, describe(cp, res)
    assert b"No such file or directory" in cp.stderr, describe(cp, res)
    assert res["status"] == "sandbox_error", describe(cp, res)
    assert "cannot enter working directory" in res["error"]

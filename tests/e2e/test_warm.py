"""Warm sandboxes: runs start on sandboxes built ahead of time, and still
get their own limits, their own files and nothing of an earlier run."""
import re
import time

import pytest

from sbxserver import SbxServer


def metric(srv, name):
    status, _, text = srv.get("/metrics")
    assert status == 200
    m = re.search(r"^%s (\d+)$" % re.escape(name), text, re.M)
    assert m, text
    return int(m.group(1))


def wait_warm(srv, want):
    deadline = time.monotonic() + 30  # hang guard
    while time.monotonic() < deadline:
        if srv.get("/v1/health")[2]["warm"] >= want:
            return
        time.sleep(0.05)
    pytest.fail("no warm sandboxes: " + srv.read_log())


@pytest.fixture(scope="module")
def srv():
    with SbxServer(extra_args=["--concurrency", "2", "--warm", "2"]) as s:
        wait_warm(s, 2)
        yield s


def run(srv, body):
    status, _, data = srv.post("/v1/run", body)
    assert status == 200, data
    return data


def test_runs_start_on_warm_sandboxes(srv):
    before = metric(srv, "sbx_warm_runs_total")
    for i in range(3):
        wait_warm(srv, 1)
        r = run(srv, {"language": "python", "source": "print(%d)" % i})
        assert r["status"] == "ok" and r["run"]["stdout"] == "%d\n" % i, r
    assert metric(srv, "sbx_warm_runs_total") >= before + 3


def test_run_limits_apply_to_warm_sandboxes(srv):
    wait_warm(srv, 1)
    r = run(srv, {"language": "python",
                  "source": "b = bytearray(200 << 20)\nprint('fits')",
                  "limits": {"memory_mb": 64}})
    assert r["status"] == "memory_limit" and r["oom_killed"], r
    wait_warm(srv, 1)
    r = run(srv, {"language": "python",
                  "source": "b = bytearray(200 << 20)\nprint('fits')",
                  "limits": {"memory_mb": 600}})
    assert r["status"] == "ok" and r["run"]["stdout"] == "fits\n", r
    wait_warm(srv, 1)
    r = run(srv, {"language": "python", "limits": {"pids": 8},
                  "source": "import os\nn = 0\n"
                            "try:\n"
                            "    while True:\n"
                            "        if os.fork() == 0:\n"
                            "            import time; time.sleep(5); os._exit(0)\n"
                            "        n += 1\n"
                            "except OSError as e:\n"
                            "    print('EAGAIN' if e.errno == 11 else e, n < 8)"})
    assert r["run"]["stdout"] == "EAGAIN True\n", r


def test_warm_runs_share_nothing(srv):
    wait_warm(srv, 1)
    r = run(srv, {"language": "bash", "source":
                  "echo secret > /tmp/left; echo secret > left; "
                  "echo secret > /dev/shm/left; ls /tmp /dev/shm"})
    assert r["status"] == "ok", r
    wait_warm(srv, 1)
    r = run(srv, {"language": "bash", "source":
                  "ls -A /tmp /dev/shm .; cat /tmp/left left 2>&1; true"})
    out = r["run"]["stdout"]
    assert "secret" not in out and "No such file" in out, r


def test_files_and_stdin_reach_warm_sandboxes(srv):
    wait_warm(srv, 1)
    r = run(srv, {"language": "python",
                  "files": {"main.py": "import data\nprint(data.X, input())",
                            "data.py": "X = 41"},
                  "stdin": "yes"})
    assert r["run"]["stdout"] == "41 yes\n", r


def test_without_warm_sandboxes_runs_still_work():
    with SbxServer(extra_args=["--warm", "0"]) as s:
        status, _, r = s.post("/v1/run", {"language": "python",
                                          "source": "print('cold')"})
        assert status == 200 and r["run"]["stdout"] == "cold\n", r
        assert s.get("/v1/health")[2]["warm"] == 0
        assert metric(s, "sbx_warm_runs_total") == 0


# The Python zygote: a warm sandbox's interpreter, started early, becomes
# the run's program. Whatever a program can observe must be what a fresh
# `python3 main.py` shows, so each program runs on a warm server and on a
# cold one and the answers must match.
ZYGOTE_PROGRAMS = {
    "identity": ("import sys, os\n"
                 "print(sys.argv, __file__, __name__, sys.path[0], os.getcwd())\n"
                 "print(sorted(k for k in os.environ))", None, []),
    "stdin": ("import sys\nprint(sys.stdin.read()[::-1])", "olleh\nworld", []),
    "exit_code": ("import sys\nprint('bye')\nsys.exit(3)", None, []),
    "traceback": ("def f():\n    raise ValueError('boom')\n\nf()\n", None, []),
    "syntax_error": ("print('x'\n", None, []),
    "pickle_and_pool": ("import multiprocessing as mp, pickle\n"
                        "def sq(x):\n    return x * x\n"
                        "if __name__ == '__main__':\n"
                        "    assert pickle.loads(pickle.dumps(sq))(4) == 16\n"
                        "    with mp.Pool(2) as p:\n"
                        "        print(p.map(sq, [1, 2, 3]))", None, []),
    "unclosed_file": ("f = open('out.txt', 'w')\nf.write('kept')", None,
                      ["out.txt"]),
    "atexit_and_threads": ("import atexit, threading, time\n"
                           "atexit.register(lambda: print('atexit'))\n"
                           "threading.Thread(target=lambda: (time.sleep(0.2),"
                           " print('thread'))).start()\nprint('main')",
                           None, []),
    "imports_from_files": ("import helper\nprint(helper.X)", None, []),
    # Threads
    "threads_join": ("import threading\nout = []\n"
                     "ts = [threading.Thread(target=out.append, args=(i,))"
                     " for i in range(8)]\n"
                     "[t.start() for t in ts]\n[t.join() for t in ts]\n"
                     "print(sorted(out), threading.active_count())", None, []),
    "daemon_thread_left": ("import threading, time\n"
                           "threading.Thread(target=time.sleep, args=(30,),"
                           " daemon=True).start()\nprint('main done')",
                           None, []),
    "thread_exception": ("import threading\n"
                         "def f():\n    raise RuntimeError('in thread')\n"
                         "t = threading.Thread(target=f, name='T1')\n"
                         "t.start(); t.join(); print('after')", None, []),
    # Processes
    "mp_process_queue": ("import multiprocessing as mp\n"
                         "def w(q):\n    q.put(sum(range(10)))\n"
                         "if __name__ == '__main__':\n"
                         "    q = mp.Queue()\n"
                         "    p = mp.Process(target=w, args=(q,))\n"
                         "    p.start(); print(q.get()); p.join()\n"
                         "    print(p.exitcode)", None, []),
    "mp_spawn": ("import multiprocessing as mp\n"
                 "def sq(x):\n    return x * x\n"
                 "if __name__ == '__main__':\n"
                 "    with mp.get_context('spawn').Pool(1) as p:\n"
                 "        print(p.map(sq, [3, 4]))", None, []),
    "os_fork": ("import os\npid = os.fork()\n"
                "if pid == 0:\n    print('child'); os._exit(5)\n"
                "_, st = os.waitpid(pid, 0)\nprint('parent', os.waitstatus_to_exitcode(st))",
                None, []),
    "subprocess": ("import subprocess, sys\n"
                   "print(subprocess.run(['echo', 'hi'], capture_output=True).stdout)\n"
                   "print(subprocess.run([sys.executable, '-c', 'import sys; print(sys.argv)'],"
                   " capture_output=True, text=True).stdout)", None, []),
    "pids_and_ids": ("import os\nprint(os.getpid(), os.getppid(), os.getuid(),"
                     " os.getgid(), os.getgroups(), os.umask(0o22))", None, []),
    # Signals
    "signal_handler": ("import os, signal\n"
                       "signal.signal(signal.SIGUSR1, lambda s, f: print('got', s))\n"
                       "os.kill(os.getpid(), signal.SIGUSR1)\nprint('on')", None, []),
    "signal_dispositions": ("import signal\n"
                            "print([str(signal.getsignal(s)) for s in signal.valid_signals()"
                            " if s not in (signal.SIGKILL, signal.SIGSTOP)])\n"
                            "print(sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])))",
                            None, []),
    "killed_by_sigterm": ("import os, signal\nprint('before', flush=True)\n"
                          "os.kill(os.getpid(), signal.SIGTERM)\nprint('after')",
                          None, []),
    "keyboard_interrupt": ("import os, signal\n"
                           "os.kill(os.getpid(), signal.SIGINT)\nprint('unreached')",
                           None, []),
    "sigpipe": ("import os\nr, w = os.pipe()\nos.close(r)\n"
                "try:\n    os.write(w, b'x')\nexcept BrokenPipeError as e:\n"
                "    print('EPIPE', e.errno)", None, []),
    # The program's identity
    "module_globals": ("print(sorted(globals()))\n"
                       "print(__spec__, __package__, __doc__, __cached__)\n"
                       "print(type(__loader__).__name__, __loader__.name)",
                       None, []),
    "docstring_and_dunder_main": ('"""The doc."""\nimport sys\n'
                                  "print(__doc__, sys.modules['__main__'].__doc__,"
                                  " sys.modules['__main__'] is sys.modules[__name__])",
                                  None, []),
    "sys_path_and_flags": ("import sys\nprint(sys.path)\nprint(sys.flags)\n"
                           "print(sys.executable, sys.prefix, sys.base_prefix)",
                           None, []),
    "loaded_modules": ("import sys\nprint(sorted(sys.modules))", None, []),
    "argv0_and_orig": ("import sys\nprint(sys.argv, sys.argv[0] == __file__)",
                       None, []),
    "stdio_properties": ("import sys\n"
                         "for f in (sys.stdin, sys.stdout, sys.stderr):\n"
                         "    print(f.fileno(), f.isatty(), f.encoding, f.errors,"
                         " f.line_buffering, type(f.buffer).__name__)",
                         None, []),
    "open_fds": ("import os\nprint(sorted(os.listdir('/proc/self/fd')))", None, []),
    "rlimits": ("import resource as r\n"
                "print([r.getrlimit(x) for x in (r.RLIMIT_FSIZE, r.RLIMIT_NOFILE,"
                " r.RLIMIT_CPU, r.RLIMIT_CORE, r.RLIMIT_NPROC, r.RLIMIT_STACK)])",
                None, []),
    "gc_and_recursion": ("import gc, sys\n"
                         "print(gc.isenabled(), gc.get_threshold(), sys.getrecursionlimit())\n"
                         "def f(n):\n    return f(n + 1)\n"
                         "try:\n    f(0)\nexcept RecursionError as e:\n    print(e)",
                         None, []),
    "encodings_and_locale": ("import sys, locale, time\n"
                             "print(sys.getfilesystemencoding(), sys.getdefaultencoding(),"
                             " locale.getpreferredencoding(False), time.tzname)\n"
                             "print('h\u00e9llo \u2713')", None, []),
    # stdin and input()
    "stdin_lines": ("import sys\nfor i, line in enumerate(sys.stdin):\n"
                    "    print(i, line.rstrip())", "a\nb\nc\n", []),
    "stdin_binary": ("import sys\nprint(sys.stdin.buffer.read())", "\u00e9\x00z", []),
    "input_prompt": ("n = input('name? ')\nm = input()\nprint('hi', n, m)",
                     "ann\nbob\n", []),
    "input_eof": ("print(input())", None, []),
    # Exit codes and exceptions
    "exit_message": ("import sys\nsys.exit('fatal: no')", None, []),
    "exit_none": ("import sys\nprint('x')\nsys.exit()", None, []),
    "exit_from_thread_ignored": ("import sys, threading\n"
                                 "t = threading.Thread(target=sys.exit, args=(4,))\n"
                                 "t.start(); t.join(); print('still here')", None, []),
    "os_exit_skips_atexit": ("import atexit, os\n"
                             "atexit.register(print, 'not printed')\n"
                             "print('out', flush=True)\nos._exit(9)", None, []),
    "exception_chain": ("try:\n    1 / 0\nexcept ZeroDivisionError as e:\n"
                        "    raise KeyError('k') from e", None, []),
    "exception_in_imported_module": ("import helper\nhelper.X.missing", None, []),
    "unraisable_in_del": ("class A:\n    def __del__(self):\n"
                          "        raise ValueError('del')\n"
                          "a = A()\ndel a\nprint('ok')", None, []),
    "atexit_order_and_error": ("import atexit\n"
                               "atexit.register(print, 'first registered')\n"
                               "atexit.register(lambda: 1 / 0)\n"
                               "atexit.register(print, 'last registered')\n"
                               "print('main')", None, []),
    "del_at_shutdown": ("class A:\n    def __del__(self):\n"
                        "        print('finalized')\n"
                        "keep = A()\nprint('main')", None, []),
    "warnings": ("import warnings\nwarnings.warn('careful')\n"
                 "warnings.warn('gone', DeprecationWarning)\nprint('x')", None, []),
    # Output
    "large_output": ("import sys\n"
                     "for i in range(20000):\n"
                     "    print('line %d ' % i + 'x' * 40)\n"
                     "sys.stderr.write('e' * 100000)", None, []),
    "interleaved_streams": ("import sys\nfor i in range(50):\n"
                            "    print(i); print(-i, file=sys.stderr)", None, []),
    "binary_stdout": ("import sys\nsys.stdout.buffer.write(bytes(range(256)))",
                      None, []),
    # Files and environment
    "files_in_cwd": ("import os\nopen('a.txt', 'w').write('A')\n"
                     "os.mkdir('d')\nopen('d/b.txt', 'w').write('B')\n"
                     "print(sorted(os.listdir('.')), open('a.txt').read())",
                     None, ["a.txt", "d/b.txt"]),
    "scratch_dirs": ("import os, tempfile\n"
                     "print(tempfile.gettempdir(), os.path.expanduser('~'))\n"
                     "for d in ('/tmp', '/dev/shm', os.path.expanduser('~')):\n"
                     "    print(d, sorted(os.listdir(d)))\n"
                     "with tempfile.TemporaryDirectory() as t:\n"
                     "    open(os.path.join(t, 'f'), 'w').write('x')\n"
                     "    print(os.listdir(t))", None, []),
    "environment": ("import os\nprint(sorted(os.environ.items()))", None, []),
    "environment_changes": ("import os, subprocess\nos.environ['NEWVAR'] = '1'\n"
                            "del os.environ['HOME']\n"
                            "print(subprocess.run(['sh', '-c', 'echo $NEWVAR ${HOME-none}'],"
                            " capture_output=True, text=True).stdout)", None, []),
    "readonly_places": ("import os\nfor p in ('/usr/x', '/etc/x', '/x'):\n"
                        "    try:\n        open(p, 'w')\n"
                        "    except OSError as e:\n        print(p, e.errno)",
                        None, []),
}


@pytest.fixture(scope="module")
def cold():
    with SbxServer(extra_args=["--warm", "0"]) as s:
        yield s


def compat(srv, code, stdin, fetch):
    body = {"code": code, "language": "python",
            "files": {"helper.py": "WD0gNDI="},  # "X = 42"
            "fetch_files": fetch}
    if stdin is not None:
        body["stdin"] = stdin
    status, _, r = srv.post("/run_code", body)
    assert status == 200, r
    run = r["run_result"]
    # Object addresses (in "<function f at 0x...>") differ between any two
    # interpreters.
    stderr = re.sub(r" at 0x[0-9a-f]+", " at 0x?", run["stderr"])
    return (r["status"], run["return_code"], run["stdout"], stderr,
            r["files"])


@pytest.mark.parametrize("name", sorted(ZYGOTE_PROGRAMS))
def test_zygote_runs_like_a_fresh_interpreter(srv, cold, name):
    code, stdin, fetch = ZYGOTE_PROGRAMS[name]
    wait_warm(srv, 1)
    warm = compat(srv, code, stdin, fetch)
    assert warm == compat(cold, code, stdin, fetch)


def forking_zygote_built():
    """Whether sbx was built with Python's headers: without them its
    forking zygote is empty (Makefile) and reusable warm sandboxes start
    no interpreter ahead."""
    import os
    from sbxserver import SBX
    ext = os.path.join(os.path.dirname(os.path.abspath(SBX)),
                       "sbx_zygote.so")
    return not os.path.exists(ext) or os.path.getsize(ext) > 0


needs_zygote = pytest.mark.skipif(
    not forking_zygote_built(),
    reason="sbx was built without Python's headers: no forking zygote")


@needs_zygote
def test_zygote_is_what_runs_on_warm_sandboxes(srv, cold):
    code = "import sys\nprint(sys.orig_argv[1])"
    wait_warm(srv, 1)
    # A started interpreter was given the program (python3 -c <zygote>)...
    assert compat(srv, code, None, [])[2] == "-c\n"
    # ...where a cold sandbox runs `python3 main.py`.
    assert compat(cold, code, None, [])[2] == "main.py\n"


@needs_zygote
def test_zygotes_follow_the_mix_of_runs():
    """Warm sandboxes start a Python interpreter only while most recent
    runs are Python: after a stretch of other runs they stop (no
    interpreter started and killed for nothing), and start again when
    Python comes back."""
    probe = "import sys\nprint(sys.orig_argv[1])"
    with SbxServer(extra_args=["--concurrency", "1", "--warm", "1"]) as s:
        def python_run():
            wait_warm(s, 1)
            return compat(s, probe, None, [])[2]

        assert python_run() == "-c\n"
        for _ in range(24):
            wait_warm(s, 1)
            status, _, r = s.post("/run_code", {"code": "echo 1",
                                                "language": "bash"})
            assert status == 200 and r["status"] == "Success", r
        assert python_run() == "main.py\n"
        seen = [python_run() for _ in range(24)]
        assert seen[-1] == "-c\n", seen


UNIQUE = ("import os, random, tempfile, uuid\n"
          "fd, name = tempfile.mkstemp()\n"
          "print(random.random(), os.urandom(8).hex(), uuid.uuid4(), name,"
          " tempfile.mkdtemp(), hash('salted'))")


@pytest.mark.parametrize("which", ["warm", "cold"])
def test_runs_started_at_once_differ(srv, cold, which):
    """Two runs started together draw different random numbers, urandom
    bytes, uuid4s, temporary names and string hashes, as two fresh
    interpreters would: nothing seeded is shared between runs."""
    import threading
    s = srv if which == "warm" else cold
    if which == "warm":
        wait_warm(s, 2)
    outs = [None, None]

    def one(i):
        outs[i] = compat(s, UNIQUE, None, [])

    ts = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    a, b = (o[2].split() for o in outs)
    assert outs[0][0] == outs[1][0] == "Success", outs
    assert len(a) == len(b) == 6, outs
    for x, y in zip(a, b):
        assert x != y, outs


POISON = ("import atexit, builtins, os, sys, threading, json\n"
          "sys.modules['json'] = type(sys)('json')\n"
          "builtins.len = lambda x: 42\n"
          "builtins.open = None\n"
          "os.environ['POISONED'] = '1'\n"
          "sys.path.insert(0, '/tmp/evil')\n"
          "os.makedirs('/tmp/evil', exist_ok=True)\n"
          "with os.fdopen(os.open('/tmp/evil/collections.py', os.O_WRONLY | os.O_CREAT), 'w') as f:\n"
          "    f.write('raise SystemExit(99)')\n"
          "atexit.register(lambda: os.system('sleep 30 &'))\n"
          "threading.Thread(target=__import__('time').sleep, args=(30,),"
          " daemon=True).start()\n"
          "print('poisoned')")
CHECK = ("import sys, os, json, builtins, threading, collections\n"
         "print(json.dumps([1]), len('ab'), builtins.open is open is not None,"
         " 'POISONED' in os.environ, '/tmp/evil' in sys.path,"
         " os.path.exists('/tmp/evil'), threading.active_count(),"
         " sorted(p for p in os.listdir('/proc') if p.isdigit()))")


@pytest.mark.parametrize("which", ["warm", "cold"])
def test_nothing_of_a_run_reaches_the_next(srv, cold, which):
    """A run that poisons sys.modules, patches builtins, changes its
    environment and sys.path, plants a module, registers an atexit hook
    that leaves a process behind and starts a thread: the next run sees
    none of it."""
    s = srv if which == "warm" else cold
    if which == "warm":
        wait_warm(s, 1)
    r = compat(s, POISON, None, [])
    assert r[:3] == ("Success", 0, "poisoned\n"), r
    for _ in range(3):  # whichever sandbox comes next
        if which == "warm":
            wait_warm(s, 1)
        r = compat(s, CHECK, None, [])
        assert r[:2] == ("Success", 0), r
        out = r[2].split(" ", 7)
        assert out[:7] == ["[1]", "2", "True", "False", "False", "False",
                           "1"], r
        # The run's own processes only: init and the interpreter.
        assert len(eval(out[7])) == 2, r

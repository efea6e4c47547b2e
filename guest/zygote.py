"""sbx Python zygote: a started interpreter waiting for its program.

A warm sandbox's init starts this (python3 -c <this file>) as the sandbox
user, already filtered and limited, with stdout and stderr going where a
run's output goes and fd 3 a socket to init. Once started it writes "R" on
fd 3; init reports the sandbox ready only then. When a Python run arrives,
init writes the run on fd 3 as NUL-terminated fields:

    cwd, stdin path ("" for none), cpu seconds ("0": none),
    argc, argv..., envc, env...

and closes it (init has set the run's file size and open file limits on
this process already). This process then becomes that program: same argv,
__main__, __file__, sys.path[0], environment and exit status as
`python3 main.py` would have, without paying for the interpreter's start.
It imports nothing the interpreter has not already loaded: every import
here would be paid by every run.
"""
import os
import sys


forked = False  # this process is a forking zygote's run


def forking_request():
    # fd 4, when open, holds the native half of a zygote that forks a
    # process per run (src/pyext/zygote.c): this process then stays root in
    # the sandbox's user namespace, serves run after run, and only the
    # forked program returns here, already the sandbox user under the
    # filter. It is loaded without importlib (nothing a fresh interpreter
    # lacks) and leaves no trace in sys.modules.
    try:
        if not os.readlink("/proc/self/fd/4").startswith("/memfd:sbx-zygote"):
            return None
    except OSError:
        return None
    import _imp

    class Spec:
        name = "_sbx_zygote"
        origin = "/proc/self/fd/4"
    try:
        native = _imp.create_dynamic(Spec)
    finally:
        sys.modules.pop("_sbx_zygote", None)
        os.close(4)
    warm_up()
    # What the interpreter holds now is shared with every run's process:
    # kept out of the collector's reach, it is not copied page by page
    # when a run collects.
    had_gc = "gc" in sys.modules
    import gc
    gc.collect()
    gc.freeze()
    if not had_gc:
        del sys.modules["gc"]
    os.write(3, b"R")
    got = native.serve(3)
    if got is None:
        os._exit(0)  # not needed any more
    global forked
    forked = True
    return got


# Set in the forking zygote: the atexit module's runner, kept without the
# module being in sys.modules (atexit's handlers are the interpreter's, so
# this runs those registered through any later import of it).
run_exitfuncs = None

# Compiled once in the forking zygote: the statements and expressions a
# program commonly has.
WARM_SOURCE = b"""\
import os
from os import path as _p
x, *y = [1, 2.5, "s", b"b", None, True, (1,), {1: 2}, {3}, ...]
def f(a, /, b=1, *c, d, e=2, **g):
    global x
    yield from (i for i in c if i)
    return [k for k in g], {k: v for k, v in g.items()}, {k for k in g}
async def h():
    async with a as b:
        await b
    async for i in b:
        pass
class C(object, metaclass=type):
    @staticmethod
    def m(self) -> int:
        nonlocal_ = lambda q: q ** 2 // 3 % 4 if q else -q
        try:
            assert x, f"{x!r:>10} {y}"
        except (ValueError, KeyError) as e:
            raise RuntimeError("r") from e
        finally:
            del x
        with open("f") as fh, open("g"):
            while x < 3 and not x or x is None:
                x += 1
                continue
        match x:
            case [1, *rest] | {"k": rest}:
                pass
            case C(a=1) if x:
                pass
        return x[1:2:3], x @ x, x >> 1 << 2 & 3 | 4 ^ ~5
if __name__ == "__main__":
    print("hello", end="\\n", file=None, flush=False)
"""


def warm_up():
    # Interpreter state made lazily on first use (the compiler's AST types,
    # the file and module types' first instances, allocator pools): made
    # here once, it is shared with every run, instead of being made again,
    # and every page it touches copied, in each run's process. Nothing here
    # is left where a program could see it.
    global run_exitfuncs
    try:
        compile(WARM_SOURCE, "/sbx/warm.py", "exec")
    except SyntaxError:  # an interpreter older than this source
        compile(b"print(1)\n", "/sbx/warm.py", "exec")
    had_atexit = "atexit" in sys.modules
    import atexit
    run_exitfuncs = atexit._run_exitfuncs
    if not had_atexit:
        del sys.modules["atexit"]
    type(sys)("__main__")
    sys.modules["_frozen_importlib_external"].SourceFileLoader(
        "__main__", "/sbx/warm.py")
    os.path.dirname(os.path.abspath("warm.py"))
    with open("/dev/null", "rb") as f:
        f.read()
    flush_streams()


def read_request():
    os.write(3, b"R")
    data = b""
    while True:
        chunk = os.read(3, 65536)
        if not chunk:
            break
        data += chunk
    os.close(3)
    if not data:
        os._exit(0)  # not needed after all
    return ([f.decode("utf-8", "surrogateescape")
             for f in data.split(b"\0")[:-1]], False)


def become(got):
    # same_env: the run's environment is the one this interpreter started
    # with (the common case), which os.environ already holds.
    fields, same_env = got
    cwd, stdin, cpu = fields[:3]
    argc = int(fields[3])
    argv = fields[4:4 + argc]
    envc = int(fields[4 + argc])
    env = fields[5 + argc:5 + argc + envc]
    os.chdir(cwd)
    if not same_env:
        os.environ.clear()
        for kv in env:
            k, _, v = kv.partition("=")
            os.environ[k] = v
    if stdin:
        fd = os.open(stdin, os.O_RDONLY)
        os.unlink(stdin)
        os.dup2(fd, 0)
        os.close(fd)
    if int(cpu):
        import resource
        # The limit counts from now, not from the interpreter's start.
        used = resource.getrusage(resource.RUSAGE_SELF)
        spent = int(used.ru_utime + used.ru_stime)
        resource.setrlimit(resource.RLIMIT_CPU,
                           (spent + int(cpu), spent + int(cpu) + 1))
    script = os.path.abspath(argv[1])
    sys.argv = argv[1:]
    sys.path[0] = os.path.dirname(script)
    return script


def run(script):
    # What the interpreter does for `python3 script`: a fresh __main__
    # module (kept in sys.modules, so pickle and multiprocessing find the
    # program's functions there), then the compiled file run in it.
    main = type(sys)("__main__")
    # The names and their order a script's globals start with.
    main.__loader__ = sys.modules["_frozen_importlib_external"] \
        .SourceFileLoader("__main__", script)
    main.__annotations__ = {}
    main.__builtins__ = __builtins__
    main.__file__ = script
    main.__cached__ = None
    sys.modules["__main__"] = main
    try:
        with open(script, "rb") as f:
            code = compile(f.read(), script, "exec")
        exec(code, main.__dict__)
    except SystemExit as e:
        if not forked:
            raise
        shutdown(exit_status(e))
    except BaseException as e:  # noqa: B902 - report like the interpreter
        import traceback
        tb = e.__traceback__
        # Show the program's frames only, as `python3 main.py` would.
        while tb is not None and tb.tb_frame.f_code.co_filename != script:
            tb = tb.tb_next
        if isinstance(e, SyntaxError) or tb is None:
            tb = None
        sys.stderr.write("".join(traceback.format_exception(type(e), e, tb)))
        sys.stderr.flush()
        if isinstance(e, KeyboardInterrupt):
            die_by_sigint()
        if forked:
            shutdown(1)
        sys.exit(1)
    if forked:
        shutdown(0)


def exit_status(e):
    # What the interpreter makes of an uncaught SystemExit.
    code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xff
    try:
        sys.stderr.write(str(code) + "\n")
    except Exception:  # noqa: B902 - as the interpreter, say nothing
        pass
    return 1


def shutdown(status):
    # A forked program ends with what the interpreter's own shutdown does
    # that a program can see: non-daemon threads joined, atexit handlers,
    # the streams flushed, cyclic garbage collected and __main__'s globals
    # released (their finalizers run), the streams flushed again; then it
    # exits without tearing the rest of the interpreter down, which would
    # touch, and so copy, every page it shares with the zygote.
    threading = sys.modules.get("threading")
    if threading is not None:
        threading._shutdown()
    run_exitfuncs()
    failed = not flush_streams()
    import gc
    gc.collect()
    main = sys.modules.get("__main__")
    if main is not None:
        clear_module(main.__dict__)
    failed = not flush_streams() or failed
    os._exit(120 if failed else status)


def flush_streams():
    ok = True
    for f in (sys.stdout, sys.stderr):
        try:
            if f is not None:
                f.flush()
        except Exception:  # noqa: B902 - the interpreter's exit 120
            ok = False
    return ok


def clear_module(d):
    # As the interpreter clears a module at shutdown: names starting with
    # one underscore first, then the rest, __builtins__ last.
    for name in list(d):
        if name.startswith("_") and not name.startswith("__"):
            d[name] = None
    for name in list(d):
        if name != "__builtins__":
            d[name] = None


def die_by_sigint():
    # The interpreter ends an uncaught KeyboardInterrupt by shutting down
    # (threads joined, atexit handlers run) and then killing itself with
    # SIGINT, so its parent sees the signal.
    import signal
    threading = sys.modules.get("threading")
    if threading is not None:
        threading._shutdown()
    import atexit
    atexit._run_exitfuncs()
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError):
            pass
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
    os._exit(130)  # SIGINT blocked: the nearest exit status


run(become(forking_request() or read_request()))

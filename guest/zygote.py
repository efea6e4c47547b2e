"""sbx Python zygote: a started interpreter waiting for its program.

A warm sandbox's init starts this (python3 -c <this file>) as the sandbox
user, already filtered and limited, with stdout and stderr going where a
run's output goes and fd 3 a socket to init. Once started it writes "R" on
fd 3; init reports the sandbox ready only then. When a Python run arrives,
init writes one JSON line on fd 3: {"argv": [...], "cwd", "env": [...],
"stdin": path or null, "rlimits": {"fsize": n, "nofile": n, "cpu": s}}.
This process then becomes that program: same argv, __main__, __file__,
sys.path[0], environment and exit status as `python3 main.py` would have,
without paying for the interpreter's start.
"""
import json
import os
import resource
import socket
import sys
import traceback
import types


def become(req):
    os.chdir(req["cwd"])
    os.environ.clear()
    for kv in req["env"]:
        k, _, v = kv.partition("=")
        os.environ[k] = v
    path = req.get("stdin")
    if path:
        fd = os.open(path, os.O_RDONLY)
        os.unlink(path)
        os.dup2(fd, 0)
        os.close(fd)
    limits = req.get("rlimits", {})
    for name, res in (("fsize", resource.RLIMIT_FSIZE),
                      ("nofile", resource.RLIMIT_NOFILE)):
        if limits.get(name):
            resource.setrlimit(res, (limits[name], limits[name]))
    if limits.get("cpu"):
        # The limit counts from now, not from the interpreter's start.
        used = resource.getrusage(resource.RUSAGE_SELF)
        spent = int(used.ru_utime + used.ru_stime)
        resource.setrlimit(resource.RLIMIT_CPU,
                           (spent + limits["cpu"], spent + limits["cpu"] + 1))
    script = os.path.abspath(req["argv"][1])
    sys.argv = [req["argv"][1]] + req["argv"][2:]
    sys.path[0] = os.path.dirname(script)
    return script


def run(script):
    # What the interpreter does for `python3 script`: a fresh __main__
    # module (kept in sys.modules, so pickle and multiprocessing find the
    # program's functions there), then the compiled file run in it.
    main = types.ModuleType("__main__")
    main.__file__ = script
    main.__builtins__ = __builtins__
    main.__cached__ = None
    sys.modules["__main__"] = main
    try:
        with open(script, "rb") as f:
            code = compile(f.read(), script, "exec")
        exec(code, main.__dict__)
    except SystemExit:
        raise
    except BaseException as e:  # noqa: B902 - report like the interpreter
        tb = e.__traceback__
        # Show the program's frames only, as `python3 main.py` would.
        while tb is not None and tb.tb_frame.f_code.co_filename != script:
            tb = tb.tb_next
        if isinstance(e, SyntaxError) or tb is None:
            tb = None
        sys.stderr.write("".join(traceback.format_exception(type(e), e, tb)))
        sys.stderr.flush()
        sys.exit(130 if isinstance(e, KeyboardInterrupt) else 1)


def main():
    with socket.socket(fileno=3) as ctl:
        ctl.sendall(b"R")
        line = b""
        while not line.endswith(b"\n"):
            chunk = ctl.recv(65536)
            if not chunk:
                os._exit(0)  # not needed after all
            line += chunk
    run(become(json.loads(line)))


main()

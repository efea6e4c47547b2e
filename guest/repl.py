"""sbx REPL driver: runs inside a sandbox, one process per REPL context.

Usage: python3 -c <this file> python|bash

Reads one JSON request per line on stdin: {"code": str, "stdin": str,
"n": int, "max_output": int}. Answers each with one line on its original stdout:
RS + JSON + LF, where RS is the byte 0x1e. Cell output never reaches that
stream: during a cell, fds 1 and 2 point at files, so the output of child
processes is captured too, and fd 0 reads the cell's stdin (empty unless
given), which ends at once instead of waiting on the request stream.

python: cells run in one persistent namespace; a trailing expression's repr
is the result. bash: cells are sourced by one persistent bash, so the
working directory, variables, functions and aliases carry over.
SIGINT interrupts the running cell (KeyboardInterrupt in Python; in bash
the cell returns 130) and the REPL goes on.
"""
import ast
import json
import os
import signal
import subprocess
import sys
import tempfile
import traceback

RS = "\x1e"


class Capture:
    """Points fds 1 and 2 at fresh files for the duration of a cell."""

    def __init__(self, workdir):
        self.out_path = os.path.join(workdir, "out")
        self.err_path = os.path.join(workdir, "err")
        self.in_path = os.path.join(workdir, "in")
        self.stdin = ""

    def __enter__(self):
        sys.stdout.flush()
        sys.stderr.flush()
        with open(self.in_path, "wb") as f:
            f.write(self.stdin.encode("utf-8", "surrogateescape"))
        inp = os.open(self.in_path, os.O_RDONLY)
        os.dup2(inp, 0)
        os.close(inp)
        self.saved_stdin = sys.stdin
        sys.stdin = open(0, "r", closefd=False)
        self.saved = (os.dup(1), os.dup(2))
        out = os.open(self.out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        err = os.open(self.err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.close(out)
        os.close(err)
        return self

    def __exit__(self, *exc):
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        os.close(self.saved[0])
        os.close(self.saved[1])
        sys.stdin = self.saved_stdin
        return False

    def read(self, limit):
        res = []
        truncated = False
        for path in (self.out_path, self.err_path):
            try:
                size = os.path.getsize(path)
                with open(path, "rb") as f:
                    data = f.read(limit)
            except OSError:
                size, data = 0, b""
            truncated = truncated or size > limit
            res.append(data.decode("utf-8", "replace"))
        return res[0], res[1], truncated


def run_python(ns, code, n):
    reply = {"status": "ok", "result": None}
    try:
        tree = ast.parse(code, filename="<cell %d>" % n, mode="exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, "<cell %d>" % n, "exec"), ns)
        if last is not None:
            value = eval(compile(last, "<cell %d>" % n, "eval"), ns)
            if value is not None:
                reply["result"] = repr(value)
                ns["_"] = value
    except BaseException as e:  # noqa: B902 - the cell's errors are data
        reply["status"] = "error"
        tb = e.__traceback__
        # Drop this driver's own frame from the traceback.
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        reply["error"] = {
            "ename": type(e).__name__,
            "evalue": str(e),
            "traceback": "".join(traceback.format_exception(type(e), e, tb)),
        }
    return reply


class Bash:
    """One persistent bash; each cell is sourced from a file."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["bash", "--norc", "--noprofile"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.send("shopt -s expand_aliases\ntrap 'return 130 2>/dev/null' INT\n")

    def send(self, text):
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def run(self, code, n):
        cell = os.path.join(self.workdir, "cell.sh")
        with open(cell, "w") as f:
            f.write(code)
            if not code.endswith("\n"):
                f.write("\n")
        marker = "__sbx_cell_%d_%d" % (os.getpid(), n)
        # Output goes to the capture files through fds 1 and 2 of bash.
        self.send(
            'source %s <%s/in >%s/out 2>%s/err; printf "%s %%s\\n" "$?"\n'
            % (cell, self.workdir, self.workdir, self.workdir, marker)
        )
        while True:
            line = self.proc.stdout.readline()
            if not line:
                code = self.proc.wait()
                self.start()
                return {
                    "status": "error",
                    "restarted": True,
                    "error": {
                        "ename": "BashExited",
                        "evalue": "bash exited with status %d during the cell; "
                        "a fresh bash took its place" % code,
                        "traceback": "",
                    },
                }
            text = line.decode("utf-8", "replace").rstrip("\n")
            if text.startswith(marker + " "):
                status = int(text.split(" ", 1)[1])
                reply = {"status": "ok" if status == 0 else "error", "result": None,
                         "exit_code": status}
                if status == 130:
                    reply["error"] = {"ename": "KeyboardInterrupt", "evalue": "",
                                      "traceback": ""}
                elif status != 0:
                    reply["error"] = {"ename": "NonZeroExit",
                                      "evalue": "exit status %d" % status,
                                      "traceback": ""}
                return reply


def main():
    language = sys.argv[1] if len(sys.argv) > 1 else "python"
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    # Requests come on a copy of fd 0; fd 0 itself is each cell's stdin.
    requests = os.fdopen(os.dup(0), "r")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    workdir = tempfile.mkdtemp(prefix="sbx-repl-")
    capture = Capture(workdir)
    ns = {"__name__": "__main__", "__builtins__": __builtins__}
    bash = None
    if language == "bash":
        # SIGINT is for bash and what it runs, not for this driver.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        bash = Bash(workdir)
    proto.write(RS + json.dumps({"ready": True}) + "\n")
    for line in requests:
        try:
            req = json.loads(line)
        except ValueError:
            continue
        n = int(req.get("n", 0))
        limit = int(req.get("max_output", 1 << 20))
        capture.stdin = req.get("stdin") or ""
        with capture:
            if bash is not None:
                reply = bash.run(req.get("code", ""), n)
            else:
                reply = run_python(ns, req.get("code", ""), n)
        out, err, truncated = capture.read(limit)
        reply.update(stdout=out, stderr=err, output_truncated=truncated, n=n)
        proto.write(RS + json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()

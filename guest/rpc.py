"""sbx interface server: runs inside a sandbox, one process per interface.

Usage: python3 -c <this file> NAME

An interface is a Python module whose functions marked @expose may be
called from the host. The host writes one JSON request per line on stdin;
this process answers each on its original stdout with one frame: RS + JSON
+ LF, RS being the byte 0x1e. The module's own output (print, logging)
never reaches that stream: fds 1 and 2 both point at stderr.

Requests:
  {"op": "load", "source": str | null, "path": str | null,
   "workers": int, "max_result": int}       first, once
  {"op": "call", "id": int, "fn": str, "args": [...], "kwargs": {...}}
  {"op": "cancel", "id": int}               a call past its timeout
Frames:
  {"op": "loaded", "ok": true, "functions": [...], "schemas": {...},
   "signatures": {...}}  or  {"op": "loaded", "ok": false, "error",
   "traceback"} (and the process exits)
  {"op": "result", "id": int, "ok": true, "result": ...}  or
  {"op": "result", "id": int, "ok": false, "code", "error", "traceback"}

The module runs once with expose, get_model_path and
list_configured_models in its namespace. Calls run at once: plain
functions on a pool of `workers` threads, `async def` ones (and anything
a function returns that can be awaited) on one asyncio loop.
"""
import ast
import asyncio
import concurrent.futures
import inspect
import json
import linecache
import os
import sys
import threading
import traceback
import typing

RS = b"\x1e"
INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1

TYPE_MAP = ((int, "integer"), (float, "number"), (str, "string"),
            (bool, "boolean"), (list, "array"), (dict, "object"))


class Proto:
    """The frame stream to the host, shared by every thread."""

    def __init__(self, fd):
        self.fd = fd
        self.lock = threading.Lock()

    def send(self, obj):
        data = RS + json.dumps(obj, ensure_ascii=False,
                               allow_nan=False).encode("utf-8") + b"\n"
        with self.lock:
            view = memoryview(data)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]


def model_env_key(name):
    return "MODEL_%s_PATH" % name.replace("/", "_").replace("-", "_").upper()


def get_model_path(model_name):
    """The path of a configured model, from MODEL_<NAME>_PATH."""
    key = model_env_key(model_name)
    path = os.environ.get(key)
    if not path:
        available = [k for k in os.environ
                     if k.startswith("MODEL_") and k.endswith("_PATH")]
        raise ValueError("Model '%s' not configured.\nExpected env var: %s\n"
                         "Available: %s" % (model_name, key, available))
    return path


def list_configured_models():
    """Every configured model: {name: path}."""
    return {k[6:-5].lower().replace("_", "-"): v
            for k, v in os.environ.items()
            if k.startswith("MODEL_") and k.endswith("_PATH")}


def json_type(hint):
    origin = typing.get_origin(hint)
    check = origin if origin else hint
    for py, name in TYPE_MAP:
        if check is py:
            return name
    return "string"


def function_schema(func):
    sig = inspect.signature(func)
    doc = inspect.getdoc(func) or "Call %s()" % func.__name__
    try:
        hints = typing.get_type_hints(func)
    except (NameError, AttributeError):
        hints = {}
    props, required = {}, []
    for name, param in sig.parameters.items():
        if name in ("self", "cls"):
            continue
        props[name] = {"type": json_type(hints.get(name, str))}
        if param.default == inspect.Parameter.empty:
            required.append(name)
    return {"description": doc,
            "inputSchema": {"type": "object", "properties": props,
                            "required": required}}


def annotation_text(node_ann, obj_ann):
    if node_ann is not None:
        return ast.unparse(node_ann)
    if obj_ann is inspect.Parameter.empty:
        return None
    if isinstance(obj_ann, str):
        return obj_ann
    return inspect.formatannotation(obj_ann)


KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: "positional_only",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional_or_keyword",
    inspect.Parameter.VAR_POSITIONAL: "var_positional",
    inspect.Parameter.KEYWORD_ONLY: "keyword_only",
    inspect.Parameter.VAR_KEYWORD: "var_keyword",
}


def function_signature(func, node):
    """What the host needs to write a client function: each parameter's
    kind, annotation text and default (when it is JSON data)."""
    sig = inspect.signature(func)
    anns = {}
    if node is not None:
        a = node.args
        for arg in a.posonlyargs + a.args + a.kwonlyargs:
            anns[arg.arg] = arg.annotation
        if a.vararg is not None:
            anns[a.vararg.arg] = a.vararg.annotation
        if a.kwarg is not None:
            anns[a.kwarg.arg] = a.kwarg.annotation
    params = []
    for name, p in sig.parameters.items():
        entry = {"name": name, "kind": KINDS[p.kind],
                 "annotation": annotation_text(anns.get(name), p.annotation)}
        if p.default is not inspect.Parameter.empty:
            lit = None
            try:
                if check_ints(p.default) is None:
                    text = json.dumps(p.default, allow_nan=False)
                    if json.loads(text) == p.default:
                        lit = {"value": p.default}
            except (TypeError, ValueError):
                lit = None
            entry["default"] = lit if lit is not None else {"opaque": True}
        params.append(entry)
    returns = None
    if node is not None and node.returns is not None:
        returns = ast.unparse(node.returns)
    return {"params": params, "returns": returns,
            "async": inspect.iscoroutinefunction(func)}


def check_ints(value, depth=0):
    """A description of the first integer outside 64 bits, or None."""
    if depth > 200:
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if value < INT_MIN or value > INT_MAX:
            return "the integer %d is outside the 64-bit range" % value
        return None
    if isinstance(value, (list, tuple)):
        for v in value:
            r = check_ints(v, depth + 1)
            if r:
                return r
    elif isinstance(value, dict):
        for v in value.values():
            r = check_ints(v, depth + 1)
            if r:
                return r
    return None


class Interface:
    def __init__(self, name, proto):
        self.name = name
        self.proto = proto
        self.functions = {}
        self.max_result = 16 << 20
        self.pool = None
        self.loop = None
        self.tasks = {}
        self.tasks_lock = threading.Lock()

    # ---- loading ----

    def expose(self, func):
        """Marks func as callable from the host; returns it unchanged."""
        self.functions[func.__name__] = func
        return func

    def load(self, req):
        self.max_result = int(req.get("max_result") or self.max_result)
        path = req.get("path")
        source = req.get("source")
        if path:
            with open(path, encoding="utf-8") as f:
                source = f.read()
            filename = os.path.abspath(path)
            sys.path.insert(0, os.path.dirname(filename))
        else:
            filename = "<interface %s>" % self.name
            sys.path.insert(0, os.getcwd())
            # Tracebacks show the lines of code that came as text.
            linecache.cache[filename] = (len(source), None,
                                         source.splitlines(True), filename)
        ns = {"__name__": "__main__", "__builtins__": __builtins__,
              "__file__": filename, "expose": self.expose,
              "get_model_path": get_model_path,
              "list_configured_models": list_configured_models}
        code = compile(source, filename, "exec")
        exec(code, ns)
        if not self.functions:
            raise RuntimeError("No functions exposed with @expose decorator")
        nodes = {}
        try:
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    nodes.setdefault(node.name, node)
        except SyntaxError:
            pass
        schemas, sigs = {}, {}
        for name, func in self.functions.items():
            try:
                schemas[name] = function_schema(func)
            except Exception:
                schemas[name] = {"description": "Call %s()" % name,
                                 "inputSchema": {"type": "object",
                                                 "properties": {},
                                                 "required": []}}
            try:
                sigs[name] = function_signature(func, nodes.get(name))
            except Exception:
                sigs[name] = {"params": [
                    {"name": "args", "kind": "var_positional",
                     "annotation": None},
                    {"name": "kwargs", "kind": "var_keyword",
                     "annotation": None}], "returns": None, "async": False}
            sigs[name]["doc"] = schemas[name]["description"]
        workers = max(1, int(req.get("workers") or 8))
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="rpc")
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        return {"op": "loaded", "ok": True,
                "functions": list(self.functions), "schemas": schemas,
                "signatures": sigs}

    # ---- calls ----

    def reply(self, cid, value=None, exc=None, code=None, error=None):
        if exc is None and error is None:
            problem = check_ints(value)
            if problem is None:
                try:
                    body = json.dumps(value, ensure_ascii=False,
                                      allow_nan=False).encode("utf-8")
                except (TypeError, ValueError, RecursionError,
                        UnicodeEncodeError) as e:
                    problem = "%s: %s" % (type(e).__name__, e)
                else:
                    if len(body) > self.max_result:
                        self.reply(cid, code="too_large", error=(
                            "the result is %d bytes of JSON, more than the "
                            "%d an answer may have" % (len(body),
                                                       self.max_result)))
                        return
                    frame = (b'{"op":"result","id":%d,"ok":true,"result":'
                             % cid) + body + b"}"
                    with self.proto.lock:
                        data = memoryview(RS + frame + b"\n")
                        while data:
                            n = os.write(self.proto.fd, data)
                            data = data[n:]
                    return
            self.reply(cid, code="not_json",
                       error="the result of the call is not JSON data: %s"
                       % problem)
            return
        out = {"op": "result", "id": cid, "ok": False}
        if exc is not None:
            tb = exc.__traceback__
            out["code"] = code or "exception"
            out["error"] = str(exc)
            out["traceback"] = "".join(
                traceback.format_exception(type(exc), exc, tb))
        else:
            out["code"] = code
            out["error"] = error
            out["traceback"] = ""
        try:
            self.proto.send(out)
        except (UnicodeEncodeError, ValueError):
            out["error"] = out["error"].encode("utf-8", "replace").decode()
            out["traceback"] = out["traceback"].encode(
                "utf-8", "replace").decode()
            self.proto.send(out)

    def run_sync(self, cid, func, args, kwargs):
        try:
            value = func(*args, **kwargs)
        except BaseException as e:  # noqa: B902 - the call's errors are data
            self.reply(cid, exc=e)
            return
        if inspect.isawaitable(value):
            self.start_async(cid, value)
            return
        self.reply(cid, value)

    def start_async(self, cid, awaitable):
        async def wrap():
            return await awaitable

        fut = asyncio.run_coroutine_threadsafe(wrap(), self.loop)
        with self.tasks_lock:
            self.tasks[cid] = fut

        def done(f):
            with self.tasks_lock:
                self.tasks.pop(cid, None)
            if f.cancelled():
                return
            e = f.exception()
            if e is not None:
                self.reply(cid, exc=e)
            else:
                self.reply(cid, f.result())

        fut.add_done_callback(done)

    def call(self, req):
        cid = int(req["id"])
        fn = req.get("fn")
        func = self.functions.get(fn)
        if func is None:
            try:
                raise ValueError("Function '%s' not found" % fn)
            except ValueError as e:
                self.reply(cid, exc=e, code="not_found")
            return
        args = req.get("args") or []
        kwargs = req.get("kwargs") or {}
        if inspect.iscoroutinefunction(func):
            try:
                coro = func(*args, **kwargs)
            except BaseException as e:  # noqa: B902 - a bad call is data
                self.reply(cid, exc=e)
                return
            self.start_async(cid, coro)
        else:
            self.pool.submit(self.run_sync, cid, func, args, kwargs)

    def cancel(self, req):
        with self.tasks_lock:
            fut = self.tasks.pop(int(req["id"]), None)
        if fut is not None:
            fut.cancel()


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "interface"
    proto = Proto(os.dup(1))
    requests = os.fdopen(os.dup(0), "rb")
    # The module's output goes to stderr; fd 0 reads nothing.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    iface = Interface(name, proto)
    loaded = False
    for line in requests:
        try:
            req = json.loads(line)
        except ValueError:
            continue
        op = req.get("op")
        if op == "load" and not loaded:
            try:
                reply = iface.load(req)
            except BaseException as e:  # noqa: B902 - reported to the host
                tb = e.__traceback__
                if tb is not None and tb.tb_next is not None:
                    tb = tb.tb_next
                proto.send({"op": "loaded", "ok": False,
                            "error": "%s: %s" % (type(e).__name__, e),
                            "traceback": "".join(traceback.format_exception(
                                type(e), e, tb))})
                sys.stderr.flush()
                os._exit(1)
            loaded = True
            try:
                proto.send(reply)
            except (TypeError, ValueError, UnicodeEncodeError) as e:
                proto.send({"op": "loaded", "ok": False,
                            "error": "the interface's schema is not JSON: "
                            "%s" % e, "traceback": ""})
                os._exit(1)
        elif op == "call" and loaded:
            iface.call(req)
        elif op == "cancel" and loaded:
            iface.cancel(req)
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()

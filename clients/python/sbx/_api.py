"""What each API verb sends and how its reply is read.

Shared by Client and AsyncClient: a builder turns a method's arguments into
a Call (HTTP method, path, JSON body, extra seconds to wait, reply parser),
so the two clients differ only in how they move bytes.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import (Any, Callable, Dict, Generic, Iterable, List, Mapping,
                    Optional, Sequence, Tuple, TypeVar, Union)
from urllib.parse import quote

from .errors import Conflict, ServerError, error_from_event
from .types import (ExecEvent, ExecResult, FileEntry, Health, Limits,
                    ProcessInfo, ReplResult, RunCodeResult, RunResult,
                    SandboxInfo, SandboxLimits, TestCase)

T = TypeVar("T")

FileData = Union[bytes, bytearray, memoryview, str, None]
TestSpec = Union[TestCase, Mapping[str, Any]]
Command = Union[str, Sequence[str]]
"""A bash command line (str) or an argv list."""
RawParser = Callable[[Mapping[str, str], bytes], T]
Llm = Union[bool, Mapping[str, Any], None]
"""The model gateway for a sandbox or run: True, False, or a dict with
"session" and the limits "max_calls", "max_prompt_tokens",
"max_completion_tokens", "max_concurrent"; None: the server's default."""
Since = Union[int, float, str, datetime, None]

# Slack on top of the run's own limits before the client gives up waiting:
# compiling, queueing and moving the reply take time too.
_SLACK_S = 30.0


@dataclass
class Call(Generic[T]):
    method: str
    path: str
    body: Optional[Dict[str, Any]]
    wait_s: float
    """Seconds the server may legitimately take (0: just the default)."""
    parse: Callable[[Any], T]
    data: Optional[bytes] = None
    """A raw request body, sent instead of body as content_type."""
    content_type: str = "application/octet-stream"
    parse_raw: Optional[Callable[[Mapping[str, str], bytes], T]] = None
    """Reads a 2xx reply from its headers (lower-case names) and bytes,
    instead of parse reading it as JSON."""


def _expect_dict(payload: Any, what: str) -> Dict[str, Any]:
    if not isinstance(payload, dict):
        raise ServerError(200, "bad_response",
                          "%s: expected a JSON object, got %r"
                          % (what, type(payload).__name__), payload)
    return payload


def _b64(data: FileData) -> Optional[str]:
    if data is None:
        return None
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.b64encode(bytes(data)).decode("ascii")


def run_code(code: str, language: str, compile_timeout: Optional[float],
             run_timeout: Optional[float], memory_limit_mb: Optional[int],
             stdin: Optional[str], files: Optional[Mapping[str, FileData]],
             fetch_files: Optional[Iterable[str]]) -> Call[RunCodeResult]:
    body: Dict[str, Any] = {"code": code, "language": language}
    if compile_timeout is not None:
        body["compile_timeout"] = compile_timeout
    if run_timeout is not None:
        body["run_timeout"] = run_timeout
    if memory_limit_mb is not None:
        body["memory_limit_MB"] = memory_limit_mb
    if stdin is not None:
        body["stdin"] = stdin
    if files:
        body["files"] = {str(p): _b64(v) for p, v in files.items()}
    if fetch_files:
        body["fetch_files"] = [str(p) for p in fetch_files]
    wait = (10.0 if compile_timeout is None else float(compile_timeout)) + \
        (10.0 if run_timeout is None else float(run_timeout))
    return Call("POST", "/run_code", body, wait + _SLACK_S,
                lambda p: RunCodeResult.from_dict(_expect_dict(p, "/run_code")))


def run(language: str, source: Optional[str],
        files: Optional[Mapping[str, Union[str, bytes]]], entry: Optional[str],
        args: Optional[Sequence[str]], stdin: Optional[str],
        limits: Union[Limits, Mapping[str, Any], None],
        tests: Optional[Iterable[TestSpec]],
        llm: Llm = None) -> Call[RunResult]:
    if source is None and not files:
        raise ValueError("run() needs source or files")
    body: Dict[str, Any] = {"language": language}
    if llm is not None:
        body["llm"] = _llm(llm)
    if source is not None:
        body["source"] = source
    if files:
        body["files"] = {str(name): (text.decode("utf-8")
                                     if isinstance(text, (bytes, bytearray))
                                     else text)
                         for name, text in files.items()}
    if entry is not None:
        body["entry"] = entry
    if args is not None:
        body["args"] = [str(a) for a in args]
    if stdin is not None:
        body["stdin"] = stdin
    lim: Dict[str, Any] = {}
    if isinstance(limits, Limits):
        lim = limits.to_dict()
    elif limits:
        lim = {k: v for k, v in limits.items() if v is not None}
    if lim:
        body["limits"] = lim
    ntests = 0
    if tests is not None:
        body["tests"] = [t.to_dict() if isinstance(t, TestCase) else dict(t)
                         for t in tests]
        ntests = len(body["tests"])
    wall_s = float(lim.get("wall_ms") or 10_000) / 1000.0
    compile_s = float(lim.get("compile_wall_ms") or 10_000) / 1000.0
    wait = compile_s + wall_s * max(1, ntests) + _SLACK_S
    return Call("POST", "/v1/run", body, wait,
                lambda p: RunResult.from_dict(_expect_dict(p, "/v1/run")))


def health() -> Call[Health]:
    return Call("GET", "/v1/health", None, 0.0,
                lambda p: Health.from_dict(_expect_dict(p, "/v1/health")))


def ping() -> Call[bool]:
    return Call("GET", "/v1/ping", None, 0.0, lambda p: p == "pong")


def raw(method: str, path: str, body: Optional[Dict[str, Any]]) -> Call[Any]:
    if not path.startswith("/"):
        path = "/" + path
    return Call(method.upper(), path, body, 0.0, lambda p: p)


# ---- /v1/sandboxes ----

# What the server waits for an exec or a REPL cell without timeout_s.
_EXEC_DEFAULT_S = 60.0
_REPL_DEFAULT_S = 30.0
_REPL_GRACE_S = 2.0  # between the interrupt and the kill of a stuck cell


def _sb(sandbox_id: str, sub: str = "") -> str:
    return "/v1/sandboxes/" + quote(str(sandbox_id), safe="") + sub


def _expect_list(payload: Any, key: str, what: str) -> List[Any]:
    items = _expect_dict(payload, what).get(key)
    if not isinstance(items, list):
        raise ServerError(200, "bad_response",
                          "%s: expected a list in %r" % (what, key), payload)
    return [x for x in items if isinstance(x, dict)]


def _is_json(hdrs: Mapping[str, str]) -> bool:
    return "json" in hdrs.get("content-type", "")


def _bytes(data: FileData) -> bytes:
    if data is None:
        return b""
    if isinstance(data, str):
        return data.encode("utf-8")
    return bytes(data)


def _b64_path(path: Union[str, bytes]) -> Optional[str]:
    """?path_b64= for a path given as bytes that are not UTF-8."""
    if isinstance(path, bytes):
        try:
            path.decode("utf-8")
        except UnicodeDecodeError:
            return "path_b64=" + quote(base64.b64encode(path).decode(),
                                       safe="")
    return None


def _text_path(path: Union[str, bytes]) -> str:
    return path.decode("utf-8") if isinstance(path, bytes) else str(path)


def file_path(sandbox_id: str, path: Union[str, bytes]) -> str:
    """The files route for path: absolute paths go in ?path=, relative ones
    in the URL, each segment quoted; bytes that are not UTF-8 go in
    ?path_b64=."""
    b64 = _b64_path(path)
    if b64:
        return _sb(sandbox_id, "/files?" + b64)
    path = _text_path(path)
    if path.startswith("/"):
        return _sb(sandbox_id, "/files?path=" + quote(path, safe="/"))
    if path in ("", "."):
        return _sb(sandbox_id, "/files")
    return _sb(sandbox_id, "/files/" + "/".join(
        quote(seg, safe="") for seg in path.split("/")))


def _str_map(what: str, m: Optional[Mapping[str, Any]]) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for k, v in (m or {}).items():
        if not isinstance(v, str):
            raise TypeError("%s[%r] must be a str, not %s"
                            % (what, k, type(v).__name__))
        out[str(k)] = v
    return out


def create_sandbox(limits: Union[SandboxLimits, Mapping[str, Any], None],
                   env: Optional[Mapping[str, str]],
                   idle_timeout: Optional[float],
                   max_lifetime: Optional[float],
                   labels: Optional[Mapping[str, str]],
                   llm: Llm = None,
                   host_routes: Optional[Mapping[str, str]] = None,
                   models: Optional[Sequence[str]] = None,
                   gpus: Union[int, Sequence[int], None] = None,
                   gpu_shared: Optional[bool] = None) -> Call[SandboxInfo]:
    body: Dict[str, Any] = {}
    if llm is not None:
        body["llm"] = _llm(llm)
    if host_routes:
        body["host_routes"] = _str_map("host_routes", host_routes)
    if models:
        body["models"] = [str(m) for m in models]
    if gpus is not None:
        body["gpus"] = gpus if isinstance(gpus, int) else list(gpus)
    if gpu_shared is not None:
        body["gpu_shared"] = bool(gpu_shared)
    lim: Dict[str, Any] = {}
    if isinstance(limits, SandboxLimits):
        lim = limits.to_dict()
    elif limits:
        lim = {k: v for k, v in limits.items() if v is not None}
    if lim:
        body["limits"] = lim
    if env:
        body["env"] = _str_map("env", env)
    if idle_timeout is not None:
        body["idle_timeout_s"] = idle_timeout
    if max_lifetime is not None:
        body["max_lifetime_s"] = max_lifetime
    if labels:
        body["labels"] = _str_map("labels", labels)
    return Call("POST", "/v1/sandboxes", body, 0.0,
                lambda p: SandboxInfo.from_dict(_expect_dict(p, "create")))


def _llm(llm: Llm) -> Union[bool, Dict[str, Any]]:
    if isinstance(llm, bool):
        return llm
    if isinstance(llm, Mapping):
        return dict(llm)
    raise TypeError("llm must be a bool or a dict, not %s"
                    % type(llm).__name__)


def list_sandboxes(label: Union[str, Tuple[str, str], None]
                   ) -> Call[List[SandboxInfo]]:
    path = "/v1/sandboxes"
    if isinstance(label, tuple):
        label = "%s=%s" % label
    if label:
        path += "?label=" + quote(str(label), safe="")
    return Call("GET", path, None, 0.0,
                lambda p: [SandboxInfo.from_dict(d) for d in
                           _expect_list(p, "sandboxes", "/v1/sandboxes")])


def get_sandbox(sandbox_id: str) -> Call[SandboxInfo]:
    return Call("GET", _sb(sandbox_id), None, 0.0,
                lambda p: SandboxInfo.from_dict(_expect_dict(p, "sandbox")))


def delete_sandbox(sandbox_id: str) -> Call[None]:
    return Call("DELETE", _sb(sandbox_id), None, 0.0, lambda p: None)


def _exec_body(cmd: Command, cwd: Optional[str],
               env: Optional[Mapping[str, str]], stdin: Optional[str],
               timeout: Optional[float]) -> Dict[str, Any]:
    body: Dict[str, Any]
    if isinstance(cmd, str):
        body = {"cmd": cmd}
    elif isinstance(cmd, (bytes, bytearray)) or not isinstance(
            cmd, (list, tuple)):
        raise TypeError("the command must be a str (run by bash) or a "
                        "list of str (an argv), not %s" % type(cmd).__name__)
    else:
        if not cmd:
            raise ValueError("the argv list is empty")
        body = {"argv": [str(a) for a in cmd]}
    if cwd is not None:
        body["cwd"] = cwd
    if env:
        body["env"] = _str_map("env", env)
    if stdin is not None:
        body["stdin"] = stdin
    if timeout is not None:
        body["timeout_s"] = timeout
    return body


def _exec_wait(timeout: Optional[float]) -> float:
    return (_EXEC_DEFAULT_S if timeout is None else float(timeout)) + _SLACK_S


def exec_(sandbox_id: str, cmd: Command, cwd: Optional[str],
          env: Optional[Mapping[str, str]], stdin: Optional[str],
          timeout: Optional[float]) -> Call[ExecResult]:
    return Call("POST", _sb(sandbox_id, "/exec"),
                _exec_body(cmd, cwd, env, stdin, timeout), _exec_wait(timeout),
                lambda p: ExecResult.from_dict(_expect_dict(p, "exec")))


def exec_stream(sandbox_id: str, cmd: Command, cwd: Optional[str],
                env: Optional[Mapping[str, str]], stdin: Optional[str],
                timeout: Optional[float]) -> Call[None]:
    """The streamed exec; its reply is read line by line with
    parse_event(), not by parse."""
    body = _exec_body(cmd, cwd, env, stdin, timeout)
    body["stream"] = True
    return Call("POST", _sb(sandbox_id, "/exec"), body, _exec_wait(timeout),
                lambda p: None)


def parse_event(line: bytes) -> Optional[ExecEvent]:
    """One NDJSON line of a streamed exec: an ExecEvent, None for a blank
    line; an "error" event raises its SbxError."""
    line = line.strip()
    if not line:
        return None
    try:
        ev = json.loads(line.decode("utf-8", errors="replace"))
    except ValueError:
        raise ServerError(200, "bad_response",
                          "exec stream: a line is not JSON",
                          line[:1000].decode("utf-8", "replace")) from None
    ev = _expect_dict(ev, "exec stream")
    kind = str(ev.get("type", ""))
    if kind == "error" or (not kind and "error" in ev):
        raise error_from_event(ev)
    if kind == "exit":
        return ExecEvent("exit", "", ExecResult.from_dict(ev))
    data = ev.get("data")
    return ExecEvent(kind, data if isinstance(data, str) else "")


def start_process(sandbox_id: str, cmd: Command, cwd: Optional[str],
                  env: Optional[Mapping[str, str]], stdin: Optional[str]
                  ) -> Call[Tuple[int, List[str]]]:
    body = _exec_body(cmd, cwd, env, stdin, None)
    body["background"] = True

    def parse(p: Any) -> Tuple[int, List[str]]:
        d = _expect_dict(p, "exec (background)")
        argv = d.get("argv")
        return (int(d.get("id") or 0),
                [str(a) for a in argv] if isinstance(argv, list) else [])
    return Call("POST", _sb(sandbox_id, "/exec"), body, 0.0, parse)


def processes(sandbox_id: str) -> Call[List[ProcessInfo]]:
    return Call("GET", _sb(sandbox_id, "/processes"), None, 0.0,
                lambda p: [ProcessInfo.from_dict(d) for d in
                           _expect_list(p, "processes", "processes")])


def process(sandbox_id: str, num: int) -> Call[ProcessInfo]:
    return Call("GET", _sb(sandbox_id, "/processes/%d" % int(num)), None, 0.0,
                lambda p: ProcessInfo.from_dict(_expect_dict(p, "process")))


def signal_process(sandbox_id: str, num: int, sig: int) -> Call[ProcessInfo]:
    return Call("POST", _sb(sandbox_id, "/processes/%d/signal" % int(num)),
                {"signal": int(sig)}, 0.0,
                lambda p: ProcessInfo.from_dict(_expect_dict(p, "signal")))


def file_read(sandbox_id: str, path: str) -> Call[bytes]:
    def parse_raw(hdrs: Mapping[str, str], data: bytes) -> bytes:
        if _is_json(hdrs):
            raise Conflict(409, "is_a_directory",
                           "'%s' is a directory (use files.list())" % path)
        return data
    return Call("GET", file_path(sandbox_id, path), None, 0.0,
                lambda p: b"", parse_raw=parse_raw)


def file_write(sandbox_id: str, path: str, data: FileData) -> Call[int]:
    return Call("PUT", file_path(sandbox_id, path), None, 0.0,
                lambda p: int(_expect_dict(p, "file").get("size") or 0),
                data=_bytes(data))


def file_list(sandbox_id: str, path: str) -> Call[List[FileEntry]]:
    def parse_raw(hdrs: Mapping[str, str], data: bytes) -> List[FileEntry]:
        if not _is_json(hdrs):
            raise Conflict(409, "not_a_directory",
                           "'%s' is not a directory" % path)
        try:
            payload = json.loads(data.decode("utf-8", errors="replace"))
        except ValueError:
            raise ServerError(200, "bad_response",
                              "files: reply is not valid JSON") from None
        return [FileEntry.from_dict(d)
                for d in _expect_list(payload, "entries", "files")]
    return Call("GET", file_path(sandbox_id, path), None, 0.0,
                lambda p: [], parse_raw=parse_raw)


def file_remove(sandbox_id: str, path: str, recursive: bool) -> Call[None]:
    url = file_path(sandbox_id, path)
    if recursive:
        url += ("&" if "?" in url else "?") + "recursive=1"
    return Call("DELETE", url, None, 0.0, lambda p: None)


def _archive_path(sandbox_id: str, remote_dir: Union[str, bytes]) -> str:
    b64 = _b64_path(remote_dir)
    if b64:
        return _sb(sandbox_id, "/archive?" + b64)
    return _sb(sandbox_id, "/archive?path=" + quote(
        _text_path(remote_dir) or ".", safe="/"))


def archive_put(sandbox_id: str, remote_dir: str, tar: bytes) -> Call[None]:
    return Call("PUT", _archive_path(sandbox_id, remote_dir), None, 0.0,
                lambda p: None, data=tar, content_type="application/x-tar")


def archive_get(sandbox_id: str, remote_dir: str) -> Call[bytes]:
    return Call("GET", _archive_path(sandbox_id, remote_dir), None, 0.0,
                lambda p: b"", parse_raw=lambda h, data: data)


def repl(sandbox_id: str, code: str, language: str, context: Optional[str],
         timeout: Optional[float],
         stdin: Optional[str] = None) -> Call[ReplResult]:
    body: Dict[str, Any] = {"language": language, "code": code}
    if context is not None:
        body["context"] = context
    if stdin is not None:
        body["stdin"] = stdin
    if timeout is not None:
        body["timeout_s"] = timeout
    wait = (_REPL_DEFAULT_S if timeout is None else float(timeout)) + \
        _REPL_GRACE_S + _SLACK_S
    return Call("POST", _sb(sandbox_id, "/repl"), body, wait,
                lambda p: ReplResult.from_dict(_expect_dict(p, "repl")))


# ---- /v1/traces: the model gateway's record of calls ----

def _since(since: Since) -> str:
    if isinstance(since, datetime):
        if since.tzinfo is None:
            since = since.replace(tzinfo=timezone.utc)
        return since.astimezone(timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(since, bool):
        raise TypeError("since must be seconds, ISO 8601 text or a datetime")
    if isinstance(since, (int, float)):
        return repr(float(since)) if isinstance(since, float) else str(since)
    return str(since)


def _traces_query(session: Optional[str], sandbox: Optional[str],
                  since: Since = None, after: Optional[int] = None,
                  limit: Optional[int] = None) -> str:
    q = []
    if session is not None:
        q.append("session=" + quote(str(session), safe=""))
    if sandbox is not None:
        q.append("sandbox=" + quote(str(sandbox), safe=""))
    if since is not None:
        q.append("since=" + quote(_since(since), safe=""))
    if after is not None:
        q.append("after=%d" % int(after))
    if limit is not None:
        q.append("limit=%d" % int(limit))
    return "?" + "&".join(q) if q else ""


def traces(session: Optional[str], sandbox: Optional[str], since: Since,
           after: Optional[int], limit: Optional[int]
           ) -> Call[List[Dict[str, Any]]]:
    return Call("GET", "/v1/traces" + _traces_query(session, sandbox, since,
                                                    after, limit), None, 0.0,
                lambda p: _expect_list(p, "traces", "/v1/traces"))


def trace(trace_id: int) -> Call[Dict[str, Any]]:
    return Call("GET", "/v1/traces/%d" % int(trace_id), None, 0.0,
                lambda p: _expect_dict(p, "trace"))


def _deleted(p: Any) -> int:
    n = _expect_dict(p, "DELETE /v1/traces").get("deleted")
    if not isinstance(n, int) or isinstance(n, bool):
        raise ServerError(200, "bad_response",
                          "DELETE /v1/traces: no count in the reply", p)
    return n


def delete_traces(session: Optional[str], sandbox: Optional[str]
                  ) -> Call[int]:
    if session is None and sandbox is None:
        raise ValueError("delete_traces() needs session or sandbox")
    return Call("DELETE", "/v1/traces" + _traces_query(session, sandbox),
                None, 0.0, _deleted)

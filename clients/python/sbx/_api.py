"""What each API verb sends and how its reply is read.

Shared by Client and AsyncClient: a builder turns a method's arguments into
a Call (HTTP method, path, JSON body, extra seconds to wait, reply parser),
so the two clients differ only in how they move bytes.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import (Any, Callable, Dict, Generic, Iterable, Mapping, Optional,
                    Sequence, TypeVar, Union)

from .errors import ServerError
from .types import Health, Limits, RunCodeResult, RunResult, TestCase

T = TypeVar("T")

FileData = Union[bytes, bytearray, memoryview, str, None]
TestSpec = Union[TestCase, Mapping[str, Any]]

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
        tests: Optional[Iterable[TestSpec]]) -> Call[RunResult]:
    if source is None and not files:
        raise ValueError("run() needs source or files")
    body: Dict[str, Any] = {"language": language}
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

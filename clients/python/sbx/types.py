"""Typed results and request helpers of the sbx client.

Results are built from the server's JSON with from_dict(), which tolerates
missing and extra keys: an absent field takes its default, and the whole
reply stays in .raw for anything the dataclass does not name.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

__all__ = [
    "CommandResult",
    "RunCodeResult",
    "Limits",
    "TestCase",
    "Step",
    "TestResult",
    "RunResult",
    "Capacity",
    "Health",
    "SandboxLimits",
    "SandboxInfo",
    "ExecResult",
    "ExecEvent",
    "ProcessInfo",
    "FileEntry",
    "ReplError",
    "ReplResult",
]


def _dict(value: Any) -> Dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> Optional[int]:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _float(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _str(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None


def _b64decode(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return base64.b64decode(value)


# ---- /run_code (SandboxFusion-compatible) ----

@dataclass
class CommandResult:
    """One step (compile or run) of a /run_code reply."""

    status: str
    """"Finished", "TimeLimitExceeded" or "Error"."""
    execution_time: Optional[float] = None
    return_code: Optional[int] = None
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False
    """True when the output went past the server's cap and was cut."""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CommandResult":
        return cls(
            status=str(d.get("status", "")),
            execution_time=_float(d.get("execution_time")),
            return_code=_int(d.get("return_code")),
            stdout=_str(d.get("stdout")) or "",
            stderr=_str(d.get("stderr")) or "",
            truncated=bool(d.get("truncated", False)),
        )


@dataclass
class RunCodeResult:
    """The reply of POST /run_code."""

    status: str
    """"Success", "Failed" or "SandboxError"."""
    message: str = ""
    compile_result: Optional[CommandResult] = None
    run_result: Optional[CommandResult] = None
    files: Dict[str, bytes] = field(default_factory=dict)
    """Fetched files, base64-decoded."""
    executor_pod_name: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        """True when status is "Success"."""
        return self.status == "Success"

    @property
    def stdout(self) -> str:
        """The run step's stdout ("" without a run step)."""
        return self.run_result.stdout if self.run_result else ""

    @property
    def stderr(self) -> str:
        """The run step's stderr ("" without a run step)."""
        return self.run_result.stderr if self.run_result else ""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunCodeResult":
        comp, run = d.get("compile_result"), d.get("run_result")
        files = {str(k): _b64decode(v)
                 for k, v in _dict(d.get("files")).items()
                 if isinstance(v, str)}
        return cls(
            status=str(d.get("status", "")),
            message=_str(d.get("message")) or "",
            compile_result=CommandResult.from_dict(comp) if isinstance(comp, dict) else None,
            run_result=CommandResult.from_dict(run) if isinstance(run, dict) else None,
            files=files,
            executor_pod_name=_str(d.get("executor_pod_name")),
            raw=dict(d),
        )


# ---- /v1/run (native) ----

@dataclass
class Limits:
    """Limits of a native run; None leaves the server's default."""

    wall_ms: Optional[int] = None
    cpu_ms: Optional[int] = None
    memory_mb: Optional[int] = None
    pids: Optional[int] = None
    output_bytes: Optional[int] = None
    compile_wall_ms: Optional[int] = None
    cpus: Optional[float] = None
    """CPU cores the run may use (0.5: half a core)."""
    cpu_weight: Optional[int] = None
    """Share of the CPUs under contention, 1-10000 (100 normal)."""

    def to_dict(self) -> Dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class TestCase:
    """One test of a native run: stdin in, expected stdout to compare."""

    __test__ = False  # not a pytest class

    stdin: str = ""
    expected_stdout: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"stdin": self.stdin}
        if self.expected_stdout is not None:
            d["expected_stdout"] = self.expected_stdout
        return d


@dataclass
class Step:
    """One step (compile, run or a test) of a native run."""

    status: str
    """ok, nonzero_exit, signaled, time_limit, memory_limit, output_limit
    or sandbox_error."""
    exit_code: Optional[int] = None
    signal: Optional[int] = None
    wall_ms: Optional[float] = None
    cpu_ms: Optional[float] = None
    oom_killed: bool = False
    output_truncated: bool = False
    stdout: str = ""
    stderr: str = ""
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def _fields(cls, d: Mapping[str, Any]) -> Dict[str, Any]:
        return dict(
            status=str(d.get("status", "")),
            exit_code=_int(d.get("exit_code")),
            signal=_int(d.get("signal")),
            wall_ms=_float(d.get("wall_ms")),
            cpu_ms=_float(d.get("cpu_ms")),
            oom_killed=bool(d.get("oom_killed", False)),
            output_truncated=bool(d.get("output_truncated", False)),
            stdout=_str(d.get("stdout")) or "",
            stderr=_str(d.get("stderr")) or "",
            raw=dict(d),
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Step":
        return cls(**cls._fields(d))


@dataclass
class TestResult(Step):
    """A test's step plus the server's verdict on its output."""

    __test__ = False  # not a pytest class

    verdict: str = ""
    """"accepted", "wrong_answer", or why it did not run to the end."""

    @property
    def passed(self) -> bool:
        return self.verdict == "accepted"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TestResult":
        return cls(verdict=str(d.get("verdict") or ""), **cls._fields(d))


@dataclass
class RunResult:
    """The reply of POST /v1/run."""

    status: str
    accepted: Optional[bool] = None
    """With tests: whether every test passed; else None."""
    compile: Optional[Step] = None
    run: Optional[Step] = None
    tests: List[TestResult] = field(default_factory=list)
    wall_ms: Optional[float] = None
    cpu_ms: Optional[float] = None
    peak_memory_bytes: Optional[int] = None
    oom_killed: bool = False
    error: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        """status is "ok", and with tests, every test was accepted."""
        return self.status == "ok" and self.accepted is not False

    @property
    def stdout(self) -> str:
        """The run step's stdout ("" without a run step)."""
        return self.run.stdout if self.run else ""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunResult":
        comp, run = d.get("compile"), d.get("run")
        tests = d.get("tests")
        err = d.get("error")
        if isinstance(err, dict):  # tolerate the {"code","message"} shape
            err = err.get("message") or err.get("code")
        acc = d.get("accepted")
        return cls(
            status=str(d.get("status", "")),
            accepted=acc if isinstance(acc, bool) else None,
            compile=Step.from_dict(comp) if isinstance(comp, dict) else None,
            run=Step.from_dict(run) if isinstance(run, dict) else None,
            tests=[TestResult.from_dict(t) for t in tests
                   if isinstance(t, dict)] if isinstance(tests, list) else [],
            wall_ms=_float(d.get("wall_ms")),
            cpu_ms=_float(d.get("cpu_ms")),
            peak_memory_bytes=_int(d.get("peak_memory_bytes")),
            oom_killed=bool(d.get("oom_killed", False)),
            error=str(err) if err is not None else None,
            raw=dict(d),
        )


# ---- /v1/health ----

@dataclass
class Capacity:
    sandboxes: Optional[int] = None
    """Sandboxes that may run at once."""
    queue: Optional[int] = None
    """Runs that may wait behind them."""


@dataclass
class Health:
    """The reply of GET /v1/health."""

    status: str
    version: str = ""
    uptime_s: Optional[float] = None
    capacity: Capacity = field(default_factory=Capacity)
    running: Optional[int] = None
    queued: Optional[int] = None
    languages: List[str] = field(default_factory=list)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Health":
        cap = _dict(d.get("capacity"))
        langs = d.get("languages")
        return cls(
            status=str(d.get("status", "")),
            version=_str(d.get("version")) or "",
            uptime_s=_float(d.get("uptime_s")),
            capacity=Capacity(sandboxes=_int(cap.get("sandboxes")),
                              queue=_int(cap.get("queue"))),
            running=_int(d.get("running")),
            queued=_int(d.get("queued")),
            languages=[str(x) for x in langs] if isinstance(langs, list) else [],
            raw=dict(d),
        )


# ---- /v1/sandboxes (stateful sandboxes) ----

@dataclass
class SandboxLimits:
    """Limits of a stateful sandbox; None leaves the server's default."""

    memory_mb: Optional[int] = None
    disk_mb: Optional[int] = None
    pids: Optional[int] = None
    output_bytes: Optional[int] = None
    """Cap on each of an exec's stdout and stderr."""
    nofile: Optional[int] = None
    cpus: Optional[float] = None
    """CPU cores the sandbox may use (0.5: half a core)."""
    cpu_weight: Optional[int] = None
    """Share of the CPUs under contention, 1-10000 (100 normal)."""

    def to_dict(self) -> Dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SandboxLimits":
        return cls(memory_mb=_int(d.get("memory_mb")),
                   disk_mb=_int(d.get("disk_mb")),
                   pids=_int(d.get("pids")),
                   output_bytes=_int(d.get("output_bytes")),
                   nofile=_int(d.get("nofile")),
                   cpus=_float(d.get("cpus")),
                   cpu_weight=_int(d.get("cpu_weight")))


@dataclass
class SandboxInfo:
    """A sandbox as GET /v1/sandboxes/{id} describes it."""

    id: str
    status: str = ""
    """"running" (the server lists no other kind)."""
    created_at: str = ""
    """UTC, ISO 8601 ("2025-01-31T12:00:00Z")."""
    labels: Dict[str, str] = field(default_factory=dict)
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    idle_timeout_s: Optional[float] = None
    max_lifetime_s: Optional[float] = None
    idle_s: Optional[float] = None
    """Seconds since the sandbox was last used."""
    background_processes: int = 0
    """Background processes still running."""
    llm_base_url: Optional[str] = None
    """The model gateway's address inside the sandbox (its
    OPENAI_BASE_URL), or None when it has no gateway."""
    llm_api_key: Optional[str] = None
    """The key its code sends there (its OPENAI_API_KEY; any key is
    accepted inside), or None."""
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SandboxInfo":
        return cls(
            id=str(d.get("id", "")),
            status=_str(d.get("status")) or "",
            created_at=_str(d.get("created_at")) or "",
            labels={str(k): str(v) for k, v in _dict(d.get("labels")).items()},
            limits=SandboxLimits.from_dict(_dict(d.get("limits"))),
            idle_timeout_s=_float(d.get("idle_timeout_s")),
            max_lifetime_s=_float(d.get("max_lifetime_s")),
            idle_s=_float(d.get("idle_s")),
            background_processes=_int(d.get("background_processes")) or 0,
            llm_base_url=_str(_dict(d.get("llm")).get("base_url")),
            llm_api_key=_str(_dict(d.get("llm")).get("api_key")),
            raw=dict(d),
        )


@dataclass
class ExecResult(Step):
    """How a command run in a sandbox ended, with its output.

    status is ok, nonzero_exit, signaled, time_limit, memory_limit,
    output_limit or sandbox_error; exit_code is None when it did not exit
    by itself (signal says which signal ended it).
    """

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ExecResult":
        return cls(**cls._fields(d))


@dataclass
class ExecEvent:
    """One event of Sandbox.exec_stream(): type "stdout" or "stderr" with
    data, and last "exit" with .result (stdout and stderr empty there: the
    output came in the events before)."""

    type: str
    data: str = ""
    result: Optional[ExecResult] = None
    """With type "exit": how the command ended."""

    @property
    def status(self) -> Optional[str]:
        return self.result.status if self.result else None

    @property
    def exit_code(self) -> Optional[int]:
        return self.result.exit_code if self.result else None

    @property
    def signal(self) -> Optional[int]:
        return self.result.signal if self.result else None


@dataclass
class ProcessInfo:
    """A background process (GET .../processes[/{n}])."""

    id: int
    pid: Optional[int] = None
    """Its pid inside the sandbox (None until it started)."""
    argv: List[str] = field(default_factory=list)
    status: str = ""
    """"running" or "exited"."""
    result: Optional[ExecResult] = None
    """Once exited: how it ended (its output is in .stdout/.stderr)."""
    stdout: str = ""
    """Output so far (the first 1 MiB of each stream; only from
    Process.output(), empty in Sandbox.processes())."""
    stderr: str = ""
    output_truncated: bool = False
    output_dropped: bool = False
    """The server dropped this ended process's output to make room (a
    sandbox keeps 4 MiB of background output; read, then old, first)."""
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def exit_code(self) -> Optional[int]:
        return self.result.exit_code if self.result else None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ProcessInfo":
        res, argv = d.get("result"), d.get("argv")
        return cls(
            id=_int(d.get("id")) or 0,
            pid=_int(d.get("pid")) or None,
            argv=[str(a) for a in argv] if isinstance(argv, list) else [],
            status=_str(d.get("status")) or "",
            result=(ExecResult.from_dict(res) if isinstance(res, dict)
                    else None),
            stdout=_str(d.get("stdout")) or "",
            stderr=_str(d.get("stderr")) or "",
            output_truncated=bool(d.get("output_truncated", False)),
            output_dropped=bool(d.get("output_dropped", False)),
            raw=dict(d),
        )


@dataclass
class FileEntry:
    """One entry of a directory listing (Sandbox.files.list())."""

    name: str
    """The name as text; bytes that are not UTF-8 show as U+FFFD (the
    exact bytes are in name_bytes)."""
    type: str = ""
    """"file", "dir", "symlink" or "other"."""
    size: Optional[int] = None
    mode: Optional[int] = None
    """Permission bits (0o644 is 420)."""
    mtime: Optional[float] = None
    """Seconds since the epoch."""
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def is_dir(self) -> bool:
        return self.type == "dir"

    @property
    def name_bytes(self) -> bytes:
        """The name's exact bytes (from "name_b64" for a name that is not
        UTF-8); pass them as a path to address the file."""
        b64 = self.raw.get("name_b64")
        if isinstance(b64, str):
            return base64.b64decode(b64)
        return self.name.encode("utf-8")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FileEntry":
        return cls(name=str(d.get("name", "")),
                   type=_str(d.get("type")) or "",
                   size=_int(d.get("size")),
                   mode=_int(d.get("mode")),
                   mtime=_float(d.get("mtime")),
                   raw=dict(d))


@dataclass
class ReplError:
    """Why a REPL cell failed: the exception's name, value and traceback
    (Python), or NonZeroExit and the status (Bash)."""

    ename: str = ""
    evalue: str = ""
    traceback: str = ""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ReplError":
        return cls(ename=_str(d.get("ename")) or "",
                   evalue=_str(d.get("evalue")) or "",
                   traceback=_str(d.get("traceback")) or "")


@dataclass
class ReplResult:
    """The reply of POST /v1/sandboxes/{id}/repl: one cell."""

    status: str
    """"ok", "error" or "timeout"."""
    stdout: str = ""
    stderr: str = ""
    result: Optional[str] = None
    """Python: repr() of the last expression's value, if any."""
    execution_count: Optional[int] = None
    error: Optional[ReplError] = None
    restarted: bool = False
    """True when the interpreter was restarted and its state lost."""
    context: str = ""
    language: str = ""
    output_truncated: bool = False
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ReplResult":
        err = d.get("error")
        res = d.get("result")
        return cls(
            status=str(d.get("status", "")),
            stdout=_str(d.get("stdout")) or "",
            stderr=_str(d.get("stderr")) or "",
            result=None if res is None else (res if isinstance(res, str)
                                             else str(res)),
            execution_count=_int(d.get("execution_count")),
            error=ReplError.from_dict(err) if isinstance(err, dict) else None,
            restarted=bool(d.get("restarted", False)),
            context=_str(d.get("context")) or "",
            language=_str(d.get("language")) or "",
            output_truncated=bool(d.get("output_truncated", False)),
            raw=dict(d),
        )

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

    def to_dict(self) -> Dict[str, int]:
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

"""Python client for sbx, the sandbox server.

    from sbx import Client
    with Client("http://127.0.0.1:8080") as sbx:
        print(sbx.run_code("print(1 + 1)").stdout)

Client is synchronous and thread-safe; AsyncClient has the same methods as
coroutines. Both keep connections alive in a bounded pool. Errors are
SbxError subclasses carrying the server's HTTP status, code and message.

    with Client() as sbx, sbx.create_sandbox() as sb:   # deleted at the end
        sb.exec("ls / > root.txt")
        print(sb.files.read("root.txt"), sb.repl("1 + 1").result)
"""
__version__ = "0.1.0"

from .aio import AsyncClient  # noqa: E402
from .aio_sandbox import (AsyncExecStream, AsyncProcess,  # noqa: E402
                          AsyncSandbox, AsyncSandboxFiles)
from .client import Client  # noqa: E402
from .errors import (BadRequest, Busy, Conflict, Forbidden,  # noqa: E402
                     Gone, NotFound, PayloadTooLarge, SbxConnectionError,
                     SbxError, SbxTimeout, ServerError, TooManySandboxes,
                     Unauthorized, Unprocessable, UnsafeArchive)
from ._rpc import RpcError  # noqa: E402
from .sandbox import ExecStream, Process, Sandbox, SandboxFiles  # noqa: E402
from .types import (Capacity, CommandResult, ExecEvent,  # noqa: E402
                    ExecResult, FileEntry, Health, Limits, ProcessInfo,
                    ReplError, ReplResult, RunCodeResult, RunResult,
                    SandboxInfo, SandboxLimits, Step, TestCase, TestResult)

__all__ = [
    "__version__",
    "Client",
    "AsyncClient",
    "SbxError",
    "SbxConnectionError",
    "SbxTimeout",
    "BadRequest",
    "Unprocessable",
    "PayloadTooLarge",
    "Unauthorized",
    "NotFound",
    "Gone",
    "Conflict",
    "Forbidden",
    "Busy",
    "TooManySandboxes",
    "ServerError",
    "UnsafeArchive",
    "RpcError",
    "CommandResult",
    "RunCodeResult",
    "Limits",
    "TestCase",
    "Step",
    "TestResult",
    "RunResult",
    "Capacity",
    "Health",
    "Sandbox",
    "SandboxFiles",
    "Process",
    "ExecStream",
    "AsyncSandbox",
    "AsyncSandboxFiles",
    "AsyncProcess",
    "AsyncExecStream",
    "SandboxLimits",
    "SandboxInfo",
    "ExecResult",
    "ExecEvent",
    "ProcessInfo",
    "FileEntry",
    "ReplError",
    "ReplResult",
]

"""Python client for sbx, the sandbox server.

    from sbx import Client
    with Client("http://127.0.0.1:8080") as sbx:
        print(sbx.run_code("print(1 + 1)").stdout)

Client is synchronous and thread-safe; AsyncClient has the same methods as
coroutines. Both keep connections alive in a bounded pool. Errors are
SbxError subclasses carrying the server's HTTP status, code and message.
"""
__version__ = "0.1.0"

from .aio import AsyncClient  # noqa: E402
from .client import Client  # noqa: E402
from .errors import (BadRequest, Busy, NotFound, PayloadTooLarge,  # noqa: E402
                     SbxConnectionError, SbxError, SbxTimeout, ServerError,
                     Unauthorized, Unprocessable)
from .types import (Capacity, CommandResult, Health, Limits,  # noqa: E402
                    RunCodeResult, RunResult, Step, TestCase, TestResult)

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
    "Busy",
    "ServerError",
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

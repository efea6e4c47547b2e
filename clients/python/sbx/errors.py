"""Exceptions raised by the sbx client.

Every HTTP error reply of sbx carries {"error": {"code", "message"}}; the
exception keeps the HTTP status, that code and that message. Failures to
reach the server at all raise SbxConnectionError.
"""
from __future__ import annotations

import email.utils
import time
from typing import Any, Dict, Mapping, Optional, Type

__all__ = [
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
    "error_from_reply",
    "error_from_event",
]


class SbxError(Exception):
    """Base class: an error reply from sbx, or no usable reply at all."""

    def __init__(self, status: Optional[int], code: str, message: str,
                 body: Any = None) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message
        self.body = body

    def __str__(self) -> str:
        if self.status is None:
            return "%s: %s" % (self.code, self.message)
        return "HTTP %d %s: %s" % (self.status, self.code, self.message)


class SbxConnectionError(SbxError):
    """The server could not be reached, or broke off the exchange."""

    def __init__(self, message: str, code: str = "connection_error") -> None:
        super().__init__(None, code, message)


class SbxTimeout(SbxConnectionError):
    """No reply within the client's timeout."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="timeout")


class BadRequest(SbxError):
    """The server refused the request (400 and other unmapped 4xx)."""


class Unprocessable(BadRequest):
    """422: the request body is not valid; .detail is FastAPI-like."""

    @property
    def detail(self) -> Any:
        return self.body.get("detail") if isinstance(self.body, dict) else None


class PayloadTooLarge(BadRequest):
    """413: the request body is bigger than the server accepts."""


class Unauthorized(SbxError):
    """401/403: the bearer token is missing or wrong."""


class NotFound(SbxError):
    """404: no such route or resource (or sandbox, file, process)."""


class Gone(SbxError):
    """410: the sandbox ended (deleted, reaped, out of memory, past its
    lifetime) while the request was waiting on it."""


class Conflict(BadRequest):
    """409: the path is in the way (a directory that is not empty, a
    directory where a file was expected, or the other way round)."""


class Forbidden(SbxError):
    """403 "forbidden": the sandbox user may not touch that path."""


class Busy(SbxError):
    """503: every sandbox is busy and the queue is full; retry later."""

    def __init__(self, status: Optional[int], code: str, message: str,
                 body: Any = None, retry_after: Optional[float] = None) -> None:
        super().__init__(status, code, message, body)
        self.retry_after = retry_after


class TooManySandboxes(Busy):
    """429: the server already runs as many sandboxes as it may; delete
    one first (a Busy, so `except Busy` covers it)."""


class ServerError(SbxError):
    """5xx other than 503, or a reply the client cannot read."""


class UnsafeArchive(SbxError):
    """download_dir() refused an archive member: an absolute name, "..",
    a link pointing outside the target directory, or a device file.
    Nothing was extracted."""

    def __init__(self, message: str) -> None:
        super().__init__(None, "unsafe_archive", message)


_BY_STATUS: Dict[int, Type[SbxError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
    410: Gone,
    413: PayloadTooLarge,
    422: Unprocessable,
    429: TooManySandboxes,
    503: Busy,
}

# Status of each error code the server puts in a streamed "error" event
# (the stream's HTTP status is already 200 by then).
_STATUS_BY_CODE: Dict[str, int] = {
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "gone": 410,
    "payload_too_large": 413,
    "unprocessable": 422,
    "too_many_sandboxes": 429,
    "busy": 503,
}


def _retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds from a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_from_reply(status: int, headers: Mapping[str, str],
                     payload: Any) -> SbxError:
    """Builds the exception for an HTTP error reply.

    headers must have lower-case names; payload is the parsed JSON body,
    or the body text when it was not JSON.
    """
    code = "http_%d" % status
    message = ""
    err = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(err, dict):
        code = str(err.get("code") or code)
        message = str(err.get("message") or "")
    elif isinstance(payload, dict) and isinstance(err, str):
        # An interface call's own shape: {"ok": false, "code", "error"}.
        code = str(payload.get("code") or code)
        message = err
    elif isinstance(payload, dict) and "detail" in payload:
        message = str(payload["detail"])
    elif isinstance(payload, str):
        message = payload.strip()[:1000]
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = BadRequest if 400 <= status < 500 else ServerError
    if status == 403 and code == "forbidden":
        cls = Forbidden
    if issubclass(cls, Busy):
        return cls(status, code, message, payload,
                   retry_after=_retry_after(headers.get("retry-after")))
    return cls(status, code, message, payload)


def error_from_event(event: Mapping[str, Any]) -> SbxError:
    """Builds the exception for an {"type": "error", "error": {...}} event
    of a streamed reply; the HTTP status is guessed from the code."""
    err = event.get("error")
    code = str(err.get("code") or "") if isinstance(err, dict) else ""
    status = _STATUS_BY_CODE.get(code, 500)
    return error_from_reply(status, {}, {"error": err} if isinstance(
        err, dict) else {"error": {"code": "stream_error",
                                   "message": str(err)}})

"""The asyncio sbx client.

AsyncClient speaks HTTP/1.1 itself over asyncio streams: requests carry a
Content-Length body; replies may be sized by Content-Length, chunked, or end
at close. At most max_connections connections are open at once (callers
beyond that wait for one); idle ones are kept for reuse. A streamed reply
(exec_stream) is read chunk by chunk and handed on line by line as it
arrives; its connection stays taken until the stream ends or is closed.

A client belongs to one event loop at a time: aclose() it (or use `async
with`) before that loop ends. Used from a new loop anyway (say, a second
asyncio.run()), it drops the connections of the old one.
"""
from __future__ import annotations

import asyncio
import ssl
from typing import (Any, AsyncIterator, Awaitable, Dict, Iterable, List,
                    Mapping, Optional, Sequence, Tuple, TypeVar, Union)

from . import _api, _http
from ._api import Call, FileData, Llm, Since, TestSpec
from ._http import describe
from .aio_sandbox import AsyncSandbox
from .executions import AsyncAgents, AsyncExecutions, AsyncPools
from .errors import SbxConnectionError, SbxTimeout
from .types import (Health, Limits, RunCodeResult, RunResult, SandboxInfo,
                    SandboxLimits)

__all__ = ["AsyncClient"]

T = TypeVar("T")

_LINE_LIMIT = 1 << 16  # longest status, header or chunk-size line
_MAX_HEADERS = 200


class _ProtocolError(Exception):
    """The server's reply is not HTTP/1.x as we know it."""


class _Stale(Exception):
    """The connection ended before any reply byte arrived."""


class _Conn:
    def __init__(self, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def is_usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        try:
            self.writer.close()
        except RuntimeError:  # its loop is gone; nothing left to close
            pass


Reply = Tuple[int, Dict[str, str], bytes, bool]


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readline()
    except ValueError:  # longer than the stream's limit
        raise _ProtocolError("reply line too long") from None


async def _read_headers(reader: asyncio.StreamReader) -> Dict[str, str]:
    hdrs: Dict[str, str] = {}
    for _ in range(_MAX_HEADERS):
        line = await _read_line(reader)
        if not line:
            raise _ProtocolError("connection closed inside the headers")
        if line in (b"\r\n", b"\n"):
            return hdrs
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise _ProtocolError("bad header line %r" % line[:100])
        name, value = name.strip().lower(), value.strip()
        hdrs[name] = hdrs[name] + ", " + value if name in hdrs else value
    raise _ProtocolError("too many headers")


class _Body:
    """One reply body, read piece by piece as its framing says: chunked
    (a piece per chunk, as it arrives), sized, or up to the close."""

    def __init__(self, reader: asyncio.StreamReader, hdrs: Dict[str, str],
                 method: str, status: int) -> None:
        self.reader = reader
        self.left = 0
        self.keep_ok = True
        """False when the body ends with the connection."""
        if method == "HEAD" or status in (204, 304):
            self.mode = "none"
        elif "chunked" in hdrs.get("transfer-encoding", "").lower():
            self.mode = "chunked"
        elif "content-length" in hdrs:
            try:
                self.left = int(hdrs["content-length"].split(",")[0])
            except ValueError:
                raise _ProtocolError("bad Content-Length %r"
                                     % hdrs["content-length"]) from None
            if self.left < 0:
                raise _ProtocolError("bad Content-Length %d" % self.left)
            self.mode = "sized"
        else:
            self.mode = "close"
            self.keep_ok = False
        self.done = self.mode == "none" or \
            (self.mode == "sized" and self.left == 0)

    async def next(self) -> Optional[bytes]:
        """The next piece of the body; None at its end."""
        if self.done:
            return None
        reader = self.reader
        if self.mode == "chunked":
            line = await _read_line(reader)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _ProtocolError("bad chunk size %r"
                                     % line[:100]) from None
            if size < 0:
                raise _ProtocolError("bad chunk size %r" % line[:100])
            if size == 0:
                await _read_headers(reader)  # trailers, ignored
                self.done = True
                return None
            data = await reader.readexactly(size)
            if await reader.readexactly(2) != b"\r\n":
                raise _ProtocolError("chunk not followed by CRLF")
            return data
        if self.mode == "sized":
            data = await reader.read(min(self.left, 1 << 16))
            if not data:
                raise asyncio.IncompleteReadError(b"", self.left)
            self.left -= len(data)
            self.done = self.left == 0
            return data
        data = await reader.read(1 << 16)
        if not data:
            self.done = True
            return None
        return data

    async def read_all(self) -> bytes:
        if self.mode == "sized" and not self.done:
            self.done = True
            return await self.reader.readexactly(self.left)
        parts: List[bytes] = []
        while True:
            part = await self.next()
            if part is None:
                return b"".join(parts)
            parts.append(part)


async def _send_head(conn: _Conn, request: bytes,
                     method: str) -> Tuple[int, Dict[str, str], bool]:
    """Sends one request and reads its reply's head: (status, headers,
    whether the connection may stay open)."""
    conn.writer.write(request)
    try:
        await conn.writer.drain()
        line = await _read_line(conn.reader)
    except (ConnectionResetError, ConnectionAbortedError,
            BrokenPipeError) as e:
        raise _Stale(describe(e)) from e
    if not line:
        raise _Stale("server closed the connection")
    while True:
        parts = line.decode("latin-1").split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise _ProtocolError("bad status line %r" % line[:100])
        version = parts[0]
        try:
            status = int(parts[1])
        except ValueError:
            raise _ProtocolError("bad status line %r" % line[:100]) from None
        hdrs = await _read_headers(conn.reader)
        if 100 <= status < 200 and status != 101:
            line = await _read_line(conn.reader)  # 100 Continue and friends
            if not line:
                raise _ProtocolError("connection closed after %d" % status)
            continue
        break
    tokens = {t.strip().lower() for t in hdrs.get("connection", "").split(",")}
    if version == "HTTP/1.0":
        keep = "keep-alive" in tokens
    else:
        keep = "close" not in tokens
    return status, hdrs, keep


async def _exchange(conn: _Conn, request: bytes, method: str) -> Reply:
    """Sends one request and reads its reply: (status, headers, body, keep
    the connection)."""
    status, hdrs, keep = await _send_head(conn, request, method)
    body = _Body(conn.reader, hdrs, method, status)
    data = await body.read_all()
    return status, hdrs, data, keep and body.keep_ok


class AsyncClient:
    """asyncio client of one sbx server; the same methods as Client, as
    coroutines. Use it from one event loop at a time.

    base_url defaults to $SBX_URL, then http://127.0.0.1:8080; token to
    $SBX_TOKEN ("" sends none). timeout is how many seconds to wait for a
    reply once a connection is free (None: forever); a run waits at least
    as long as its own limits. max_connections bounds open connections.
    """

    def __init__(self, base_url: Optional[str] = None,
                 token: Optional[str] = None, *,
                 timeout: Optional[float] = _http.DEFAULT_TIMEOUT,
                 max_connections: int = _http.DEFAULT_MAX_CONNECTIONS) -> None:
        self.endpoint = _http.endpoint(base_url)
        self.timeout = timeout
        self.max_connections = max(1, max_connections)
        self._token = _http.token_from(token)
        self._idle: List[_Conn] = []
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._slots: Optional[asyncio.Semaphore] = None
        self._ssl: Optional[ssl.SSLContext] = None

    @property
    def base_url(self) -> str:
        return str(self.endpoint)

    def __repr__(self) -> str:
        return "AsyncClient(%r)" % self.base_url

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes idle connections; the client stays usable."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        for conn in idle:
            try:
                await conn.writer.wait_closed()
            except (OSError, RuntimeError):
                pass

    # ---- API verbs ----

    async def run_code(self, code: str, language: str = "python", *,
                       compile_timeout: Optional[float] = None,
                       run_timeout: Optional[float] = None,
                       memory_limit_mb: Optional[int] = None,
                       stdin: Optional[str] = None,
                       files: Optional[Mapping[str, FileData]] = None,
                       fetch_files: Optional[Iterable[str]] = None
                       ) -> RunCodeResult:
        """POST /run_code (SandboxFusion-compatible); see Client.run_code."""
        return await self._call(_api.run_code(
            code, language, compile_timeout, run_timeout, memory_limit_mb,
            stdin, files, fetch_files))

    async def run(self, language: str, source: Optional[str] = None, *,
                  files: Optional[Mapping[str, Union[str, bytes]]] = None,
                  entry: Optional[str] = None,
                  args: Optional[Sequence[str]] = None,
                  stdin: Optional[str] = None,
                  limits: Union[Limits, Mapping[str, Any], None] = None,
                  tests: Optional[Iterable[TestSpec]] = None,
                  llm: Llm = None) -> RunResult:
        """POST /v1/run; see Client.run."""
        return await self._call(_api.run(language, source, files, entry,
                                         args, stdin, limits, tests, llm))

    async def health(self) -> Health:
        """GET /v1/health."""
        return await self._call(_api.health())

    async def ping(self) -> bool:
        """GET /v1/ping: True on "pong", False when unreachable."""
        try:
            return await self._call(_api.ping())
        except SbxConnectionError:
            return False

    async def request(self, method: str, path: str,
                      json: Optional[Dict[str, Any]] = None) -> Any:
        """Any other route: returns the parsed JSON (or text) reply."""
        return await self._call(_api.raw(method, path, json))

    # ---- the model gateway's traces ----

    # ---- agent rollouts (executions.py) ----

    @property
    def agents(self) -> AsyncAgents:
        return AsyncAgents(self)

    @property
    def executions(self) -> AsyncExecutions:
        return AsyncExecutions(self)

    @property
    def pools(self) -> AsyncPools:
        return AsyncPools(self)

    async def traces(self, session: Optional[str] = None,
                     sandbox: Optional[str] = None, since: Since = None,
                     after: Optional[int] = None,
                     limit: Optional[int] = None) -> List[Dict[str, Any]]:
        """GET /v1/traces; see Client.traces."""
        return await self._call(_api.traces(session, sandbox, since, after,
                                            limit))

    async def trace(self, trace_id: int) -> Dict[str, Any]:
        """GET /v1/traces/{id}; see Client.trace."""
        return await self._call(_api.trace(trace_id))

    async def delete_traces(self, session: Optional[str] = None,
                            sandbox: Optional[str] = None) -> int:
        """DELETE /v1/traces; see Client.delete_traces."""
        return await self._call(_api.delete_traces(session, sandbox))

    # ---- stateful sandboxes ----

    async def create_sandbox(self, *,
                             limits: Union[SandboxLimits, Mapping[str, Any],
                                           None] = None,
                             env: Optional[Mapping[str, str]] = None,
                             idle_timeout: Optional[float] = None,
                             max_lifetime: Optional[float] = None,
                             labels: Optional[Mapping[str, str]] = None,
                             llm: Llm = None,
                             host_routes: Optional[Mapping[str, str]] = None,
                             models: Optional[Sequence[str]] = None,
                             gpus: Union[int, Sequence[int], None] = None,
                             gpu_shared: Optional[bool] = None) -> AsyncSandbox:
        """POST /v1/sandboxes; see Client.create_sandbox. Use the result in
        `async with` to delete it at the end:
        `async with await client.create_sandbox() as sb:`."""
        info = await self._call(_api.create_sandbox(
            limits, env, idle_timeout, max_lifetime, labels, llm,
            host_routes, models, gpus, gpu_shared))
        return AsyncSandbox(self, info.id, info)

    def get_sandbox(self, sandbox_id: str) -> AsyncSandbox:
        """A handle on an existing sandbox. Not a coroutine: it sends
        nothing (its methods raise NotFound when there is no such
        sandbox)."""
        return AsyncSandbox(self, sandbox_id)

    async def list_sandboxes(self, label: Union[str, Tuple[str, str],
                                                None] = None
                             ) -> List[SandboxInfo]:
        """GET /v1/sandboxes; see Client.list_sandboxes."""
        return await self._call(_api.list_sandboxes(label))

    # ---- transport ----

    def _bind_loop(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._slots is None:
            for conn in self._idle:
                conn.close()
            self._idle = []
            self._loop = loop
            self._slots = asyncio.Semaphore(self.max_connections)
        return self._slots

    async def _connect(self) -> _Conn:
        ep = self.endpoint
        ctx = None
        if ep.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            ctx = self._ssl
        reader, writer = await asyncio.open_connection(
            ep.host, ep.port, ssl=ctx, limit=_LINE_LIMIT)
        return _Conn(reader, writer)

    def _take_idle(self) -> Optional[_Conn]:
        while self._idle:
            conn = self._idle.pop()
            if conn.is_usable():
                return conn
            conn.close()
        return None

    async def _open(self, request: bytes, method: str
                    ) -> Tuple[_Conn, int, Dict[str, str], bool]:
        """One try: an idle connection or a new one, the request, the
        reply's head. A stale idle connection is retried once, fresh."""
        conn = self._take_idle()
        reused = conn is not None
        for _ in range(2):
            if conn is None:
                conn = await self._connect()
            try:
                status, hdrs, keep = await _send_head(conn, request, method)
            except _Stale:
                conn.close()
                if not reused:
                    raise
                conn, reused = None, False
                continue
            except BaseException:
                conn.close()  # mid-reply (or cancelled): unusable
                raise
            return conn, status, hdrs, keep
        raise AssertionError("unreachable")

    async def _attempt(self, request: bytes, method: str) -> Reply:
        conn, status, hdrs, keep = await self._open(request, method)
        try:
            body = _Body(conn.reader, hdrs, method, status)
            data = await body.read_all()
        except BaseException:
            conn.close()  # mid-reply (or cancelled): unusable
            raise
        keep = keep and body.keep_ok
        if keep:
            self._idle.append(conn)
        else:
            conn.close()
        return status, hdrs, data, keep

    def _request(self, call: Call[Any]) -> bytes:
        body, hdrs = _http.prepare(call, self._token)
        hdrs["Host"] = self.endpoint.host_header
        if body is not None or call.method in ("POST", "PUT", "PATCH"):
            hdrs["Content-Length"] = str(len(body or b""))
        head = "%s %s HTTP/1.1\r\n%s\r\n" % (
            call.method, self.endpoint.prefix + call.path,
            "".join("%s: %s\r\n" % kv for kv in hdrs.items()))
        return head.encode("latin-1") + (body or b"")

    async def _call(self, call: Call[T]) -> T:
        request = self._request(call)
        timeout = _http.wait_for(self.timeout, call)
        what = "%s %s%s" % (call.method, self.base_url, call.path)
        async with self._bind_loop():
            status, rh, data, _ = await _timed(
                self._attempt(request, call.method), timeout, what, timeout)
        return _http.finish(call, status, rh, data)

    async def _stream(self, call: Call[Any]) -> AsyncIterator[bytes]:
        """Sends call when first iterated, then yields the reply's lines
        as they arrive. timeout bounds the whole exchange; closing the
        generator early drops the connection."""
        request = self._request(call)
        timeout = _http.wait_for(self.timeout, call)
        what = "%s %s%s" % (call.method, self.base_url, call.path)
        loop = asyncio.get_running_loop()
        deadline: Optional[float] = None

        def left() -> Optional[float]:
            return None if deadline is None else \
                max(0.0, deadline - loop.time())

        async with self._bind_loop():
            if timeout is not None:  # from when a connection is free
                deadline = loop.time() + timeout
            conn: Optional[_Conn] = None
            reusable = False
            try:
                conn, status, hdrs, keep = await _timed(
                    self._open(request, call.method), left(), what, timeout)
                try:
                    body = _Body(conn.reader, hdrs, call.method, status)
                except _ProtocolError as e:
                    raise SbxConnectionError("%s: %s"
                                             % (what, describe(e))) from e
                if not 200 <= status < 300:
                    data = await _timed(body.read_all(), left(), what,
                                        timeout)
                    reusable = keep and body.keep_ok
                    _http.check(call, status, hdrs, data)
                pending = b""
                while True:
                    part = await _timed(body.next(), left(), what, timeout)
                    if part is None:
                        break
                    pending += part
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        yield line + b"\n"
                if pending:
                    yield pending
                reusable = keep and body.keep_ok
            finally:
                if conn is not None:
                    if reusable:
                        self._idle.append(conn)
                    else:
                        conn.close()


async def _timed(aw: Awaitable[T], timeout: Optional[float], what: str,
                 total: Optional[float]) -> T:
    """aw within timeout seconds, its failures as SbxErrors."""
    try:
        return await asyncio.wait_for(aw, timeout)
    except asyncio.TimeoutError:
        raise SbxTimeout("%s: no reply within %ss" % (what, total)) from None
    except asyncio.IncompleteReadError as e:
        raise SbxConnectionError("%s: reply cut short after %d bytes"
                                 % (what, len(e.partial))) from e
    except (_Stale, _ProtocolError, OSError) as e:
        raise SbxConnectionError("%s: %s" % (what, describe(e))) from e

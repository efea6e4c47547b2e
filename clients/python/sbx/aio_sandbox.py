"""Stateful sandboxes, asyncio: what AsyncClient.create_sandbox() returns.

The same methods as sbx.sandbox.Sandbox, as coroutines; exec_stream() is
a plain method returning an async iterator. Tar packing and unpacking for
upload_dir()/download_dir() runs in a worker thread, off the event loop.
"""
from __future__ import annotations

import asyncio
import functools
import signal as _signal
from typing import (TYPE_CHECKING, Any, AsyncIterator, Callable, Dict,
                    List, Mapping, Optional, Sequence, TypeVar)

from . import _api, _rpc, _tar
from ._api import Command, FileData
from .errors import NotFound, SbxTimeout, ServerError
from .types import (ExecEvent, ExecResult, FileEntry, ProcessInfo,
                    ReplResult, SandboxInfo)

if TYPE_CHECKING:  # pragma: no cover
    from .aio import AsyncClient

__all__ = ["AsyncSandbox", "AsyncSandboxFiles", "AsyncProcess",
           "AsyncExecStream"]

T = TypeVar("T")

DELETE_WAIT_S = 10.0


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(fn, *args))


class AsyncExecStream:
    """The events of AsyncSandbox.exec_stream(): `async for ev in ...`.

    Nothing is sent before the first event is asked for. An "error" event
    raises its SbxError; after the "exit" event .result holds the
    ExecResult. Leaving early: use `async with` (or await aclose()) so the
    connection is dropped at once, and the server kills the command.
    """

    def __init__(self, lines: AsyncIterator[bytes]) -> None:
        self._lines = lines
        self._done = False
        self.result: Optional[ExecResult] = None

    def __aiter__(self) -> "AsyncExecStream":
        return self

    async def __anext__(self) -> ExecEvent:
        while not self._done:
            try:
                line = await self._lines.__anext__()
            except StopAsyncIteration:
                self._done = True
                raise ServerError(200, "bad_response",
                                  "the exec stream ended without an exit "
                                  "event") from None
            except BaseException:  # the connection failed: it is over
                self._done = True
                raise
            try:
                ev = _api.parse_event(line)
            except BaseException:
                await self.aclose()
                raise
            if ev is None:
                continue
            if ev.type == "exit":
                self.result = ev.result
                self._done = True
                async for _ in self._lines:  # to the end: the connection
                    pass                     # goes back to the pool
            return ev
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self._done = True
        aclose = getattr(self._lines, "aclose", None)
        if aclose is not None:
            await aclose()

    async def __aenter__(self) -> "AsyncExecStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


class AsyncProcess:
    """A background process of a sandbox; see sbx.sandbox.Process."""

    def __init__(self, sandbox: "AsyncSandbox", num: int,
                 argv: Optional[Sequence[str]] = None) -> None:
        self.sandbox = sandbox
        self.id = int(num)
        self.argv: List[str] = list(argv or [])

    def __repr__(self) -> str:
        return "AsyncProcess(%r, %d)" % (self.sandbox.id, self.id)

    async def output(self) -> ProcessInfo:
        return await self.sandbox.client._call(
            _api.process(self.sandbox.id, self.id))

    async def signal(self, sig: int = _signal.SIGTERM) -> ProcessInfo:
        return await self.sandbox.client._call(
            _api.signal_process(self.sandbox.id, self.id, sig))

    async def kill(self) -> ProcessInfo:
        return await self.signal(_signal.SIGKILL)

    async def wait(self, timeout: Optional[float] = None,
                   interval: float = 0.05) -> ProcessInfo:
        """Polls until the process has exited; SbxTimeout after timeout
        seconds."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        delay = interval
        while True:
            info = await self.output()
            if not info.running:
                return info
            if deadline is not None:
                left = deadline - loop.time()
                if left <= 0:
                    raise SbxTimeout("process %d of sandbox %s still runs "
                                     "after %ss"
                                     % (self.id, self.sandbox.id, timeout))
                delay = min(delay, left)
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 1.0)


class AsyncSandboxFiles:
    """Files of a sandbox; see sbx.sandbox.SandboxFiles."""

    def __init__(self, sandbox: "AsyncSandbox") -> None:
        self.sandbox = sandbox

    async def read(self, path: str) -> bytes:
        return await self.sandbox.client._call(
            _api.file_read(self.sandbox.id, path))

    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return (await self.read(path)).decode(encoding)

    async def write(self, path: str, data: FileData) -> int:
        return await self.sandbox.client._call(
            _api.file_write(self.sandbox.id, path, data))

    async def list(self, path: str = ".") -> List[FileEntry]:
        return await self.sandbox.client._call(
            _api.file_list(self.sandbox.id, path))

    async def remove(self, path: str, recursive: bool = False) -> None:
        await self.sandbox.client._call(
            _api.file_remove(self.sandbox.id, path, recursive))

    async def exists(self, path: str) -> bool:
        path = str(path).rstrip("/") or "/"
        if path in ("/", "."):
            return True
        parent, _, name = path.rpartition("/")
        if not parent and path.startswith("/"):
            parent = "/"
        try:
            return any(e.name == name for e in await self.list(parent or "."))
        except NotFound:
            return False


class AsyncSandbox:
    """A stateful sandbox, asyncio; see sbx.sandbox.Sandbox.

    `async with await client.create_sandbox() as sb:` deletes it when the
    block ends.
    """

    def __init__(self, client: "AsyncClient", sandbox_id: str,
                 info: Optional[SandboxInfo] = None) -> None:
        self.client = client
        self.id = str(sandbox_id)
        self.files = AsyncSandboxFiles(self)
        self.created: Optional[SandboxInfo] = info

    def __repr__(self) -> str:
        return "AsyncSandbox(%r)" % self.id

    @property
    def llm_base_url(self) -> Optional[str]:
        """See Sandbox.llm_base_url."""
        return self.created.llm_base_url if self.created else None

    @property
    def llm_api_key(self) -> Optional[str]:
        """See Sandbox.llm_api_key."""
        return self.created.llm_api_key if self.created else None

    async def __aenter__(self) -> "AsyncSandbox":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.delete()
        except NotFound:
            pass

    async def info(self) -> SandboxInfo:
        return await self.client._call(_api.get_sandbox(self.id))

    async def exec(self, cmd: Command, *, cwd: Optional[str] = None,
                   env: Optional[Mapping[str, str]] = None,
                   stdin: Optional[str] = None,
                   timeout: Optional[float] = None) -> ExecResult:
        return await self.client._call(_api.exec_(self.id, cmd, cwd, env,
                                                  stdin, timeout))

    def exec_stream(self, cmd: Command, *, cwd: Optional[str] = None,
                    env: Optional[Mapping[str, str]] = None,
                    stdin: Optional[str] = None,
                    timeout: Optional[float] = None) -> AsyncExecStream:
        """Not a coroutine: returns the async iterator of events."""
        return AsyncExecStream(self.client._stream(
            _api.exec_stream(self.id, cmd, cwd, env, stdin, timeout)))

    async def start_process(self, cmd: Command, *, cwd: Optional[str] = None,
                            env: Optional[Mapping[str, str]] = None,
                            stdin: Optional[str] = None) -> AsyncProcess:
        num, argv = await self.client._call(
            _api.start_process(self.id, cmd, cwd, env, stdin))
        return AsyncProcess(self, num, argv)

    def process(self, num: int) -> AsyncProcess:
        return AsyncProcess(self, num)

    async def processes(self) -> List[ProcessInfo]:
        return await self.client._call(_api.processes(self.id))

    async def upload_dir(self, local_dir: str, remote_dir: str) -> None:
        tar = await _in_thread(_tar.pack_dir, local_dir)
        await self.client._call(_api.archive_put(self.id, remote_dir, tar))

    async def download_dir(self, remote_dir: str, local_dir: str) -> None:
        data = await self.client._call(_api.archive_get(self.id, remote_dir))
        await _in_thread(_tar.extract, data, local_dir)

    async def repl(self, code: str, language: str = "python",
                   context: Optional[str] = None,
                   timeout: Optional[float] = None,
                   stdin: Optional[str] = None) -> ReplResult:
        return await self.client._call(_api.repl(self.id, code, language,
                                                 context, timeout, stdin))

    # ---- interfaces: @expose functions served over RPC ----

    async def rpc_load(self, name: str, source: Optional[str] = None, *,
                 path: Optional[str] = None, workers: Optional[int] = None,
                 timeout: Optional[float] = None,
                 load_timeout: Optional[float] = None) -> Dict[str, Any]:
        """Loads a Python module as interface name (from source, or the
        file at path in the sandbox): its code runs once, with expose,
        get_model_path and list_configured_models defined, and each
        @expose function becomes callable. Returns {"name", "functions",
        "schemas"}; a module that fails raises Unprocessable with the
        traceback in .body. Loading a name again replaces it."""
        return await self.client._call(_rpc.load(self.id, name, source, path,
                                           workers, timeout, load_timeout))

    async def rpc_schema(self, name: str) -> Dict[str, Any]:
        """The interface's {"functions", "schemas"} (Seer's shape)."""
        return await self.client._call(_rpc.schema(self.id, name))

    async def rpc_interfaces(self) -> List[Dict[str, Any]]:
        """Every interface: name, state, functions, restarts, ..."""
        return await self.client._call(_rpc.listing(self.id))

    async def rpc_call(self, name: str, fn: str, args: Sequence[Any] = (),
                 kwargs: Optional[Mapping[str, Any]] = None, *,
                 timeout: Optional[float] = None) -> Any:
        """Calls fn of interface name; returns its result, or raises
        RpcError (its .code says which failure, .traceback the remote
        traceback)."""
        return await self.client._call(_rpc.call(self.id, name, fn, args,
                                           kwargs or {}, timeout))

    async def rpc_unload(self, name: str) -> None:
        """Removes the interface, stopping its process."""
        await self.client._call(_rpc.unload(self.id, name))

    async def rpc_client_code(self, name: str,
                        base_url: Optional[str] = None) -> str:
        """A stdlib-only Python module with one function per exposed
        function, calling this server (or base_url)."""
        return await self.client._call(_rpc.document(
            self.id, name, "client.py", base_url or self.client.base_url))

    async def rpc_prompt(self, name: str, base_url: Optional[str] = None) -> str:
        """Markdown describing the interface, for an agent's prompt."""
        return await self.client._call(_rpc.document(
            self.id, name, "prompt.md", base_url or self.client.base_url))

    async def rpc_mcp_config(self, name: str,
                       base_url: Optional[str] = None) -> Dict[str, Any]:
        """{"mcpServers": {name: ...}}: an MCP config running `sbx mcp`
        for the interface."""
        return await self.client._call(_rpc.document(
            self.id, name, "mcp.json", base_url or self.client.base_url))

    async def delete(self, wait: bool = True) -> None:
        await self.client._call(_api.delete_sandbox(self.id))
        if not wait:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DELETE_WAIT_S
        delay = 0.005
        while loop.time() < deadline:
            try:
                await self.client._call(_api.get_sandbox(self.id))
            except NotFound:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

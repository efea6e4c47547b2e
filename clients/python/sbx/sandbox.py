"""Stateful sandboxes, synchronous: what Client.create_sandbox() returns.

A Sandbox is a handle: its id and the client that talks to its server.
Making one (Client.get_sandbox) costs no request; every method is one or a
few requests. `with` deletes the sandbox at the end of the block.
"""
from __future__ import annotations

import signal as _signal
import time
from typing import (TYPE_CHECKING, Any, Dict, Iterator, List, Mapping,
                    Optional, Sequence)

from . import _api, _rpc, _tar
from ._api import Command, FileData
from .errors import NotFound, SbxTimeout, ServerError
from .types import (ExecEvent, ExecResult, FileEntry, ProcessInfo,
                    ReplResult, SandboxInfo)

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

__all__ = ["Sandbox", "SandboxFiles", "Process", "ExecStream"]

# delete(wait=True) polls until the server no longer lists the sandbox.
DELETE_WAIT_S = 10.0


class ExecStream:
    """The events of Sandbox.exec_stream(), as they happen: ExecEvent of
    type "stdout"/"stderr", then one of type "exit" (with .result).

    Nothing is sent before the first next(). An "error" event raises its
    SbxError (NotFound, Gone, ...). After the exit event .result holds the
    ExecResult. Leaving early (break, close(), the end of a `with`) drops
    the connection, and the server kills the command.
    """

    def __init__(self, lines: Iterator[bytes]) -> None:
        self._lines = lines
        self._done = False
        self.result: Optional[ExecResult] = None

    def __iter__(self) -> "ExecStream":
        return self

    def __next__(self) -> ExecEvent:
        while not self._done:
            try:
                line = next(self._lines)
            except StopIteration:
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
                self.close()
                raise
            if ev is None:
                continue
            if ev.type == "exit":
                self.result = ev.result
                self._done = True
                for _ in self._lines:  # the end: the connection goes back
                    pass
            return ev
        raise StopIteration

    def close(self) -> None:
        self._done = True
        close = getattr(self._lines, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "ExecStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Process:
    """A background process of a sandbox (Sandbox.start_process())."""

    def __init__(self, sandbox: "Sandbox", num: int,
                 argv: Optional[Sequence[str]] = None) -> None:
        self.sandbox = sandbox
        self.id = int(num)
        self.argv: List[str] = list(argv or [])

    def __repr__(self) -> str:
        return "Process(%r, %d)" % (self.sandbox.id, self.id)

    def output(self) -> ProcessInfo:
        """Its state and its output so far (the first 1 MiB of each of
        stdout and stderr)."""
        return self.sandbox.client._call(
            _api.process(self.sandbox.id, self.id))

    def signal(self, sig: int = _signal.SIGTERM) -> ProcessInfo:
        """Sends sig (default SIGTERM); returns the state (without output)
        as the signal was sent."""
        return self.sandbox.client._call(
            _api.signal_process(self.sandbox.id, self.id, sig))

    def kill(self) -> ProcessInfo:
        """signal(SIGKILL)."""
        return self.signal(_signal.SIGKILL)

    def wait(self, timeout: Optional[float] = None,
             interval: float = 0.05) -> ProcessInfo:
        """Polls until the process has exited; returns output() then.
        Raises SbxTimeout when it still runs after timeout seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = interval
        while True:
            info = self.output()
            if not info.running:
                return info
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SbxTimeout("process %d of sandbox %s still runs "
                                     "after %ss"
                                     % (self.id, self.sandbox.id, timeout))
                delay = min(delay, left)
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)


class SandboxFiles:
    """Files of a sandbox (Sandbox.files). Relative paths are inside the
    sandbox's working directory (/work); absolute ones are as the sandbox
    sees them. Everything happens as the sandbox's user."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self.sandbox = sandbox

    def read(self, path: str) -> bytes:
        """The file's bytes. NotFound when missing, Conflict for a
        directory."""
        return self.sandbox.client._call(_api.file_read(self.sandbox.id, path))

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return self.read(path).decode(encoding)

    def write(self, path: str, data: FileData) -> int:
        """Creates or replaces the file (and its missing parent
        directories); str is written as UTF-8. Returns the size."""
        return self.sandbox.client._call(
            _api.file_write(self.sandbox.id, path, data))

    def list(self, path: str = ".") -> List[FileEntry]:
        """The entries of a directory. Conflict when path is a file."""
        return self.sandbox.client._call(_api.file_list(self.sandbox.id, path))

    def remove(self, path: str, recursive: bool = False) -> None:
        """Deletes a file, or a directory (an empty one unless recursive;
        a non-empty one raises Conflict)."""
        self.sandbox.client._call(
            _api.file_remove(self.sandbox.id, path, recursive))

    def exists(self, path: str) -> bool:
        """Whether anything is at path (one listing of its directory)."""
        path = str(path).rstrip("/") or "/"
        if path in ("/", "."):
            return True
        parent, _, name = path.rpartition("/")
        if not parent and path.startswith("/"):
            parent = "/"
        try:
            return any(e.name == name for e in self.list(parent or "."))
        except NotFound:
            return False


class Sandbox:
    """A stateful sandbox on an sbx server (Client.create_sandbox()).

    `with client.create_sandbox() as sb:` deletes it when the block ends.
    """

    def __init__(self, client: "Client", sandbox_id: str,
                 info: Optional[SandboxInfo] = None) -> None:
        self.client = client
        self.id = str(sandbox_id)
        self.files = SandboxFiles(self)
        self.created: Optional[SandboxInfo] = info
        """The description the server gave when creating it (or None)."""

    def __repr__(self) -> str:
        return "Sandbox(%r)" % self.id

    @property
    def llm_base_url(self) -> Optional[str]:
        """Where code in the sandbox reaches the model gateway (its
        OPENAI_BASE_URL), from the server's description of the sandbox
        when it was created; None without the gateway, or on a handle from
        get_sandbox() (sb.info().llm_base_url asks the server)."""
        return self.created.llm_base_url if self.created else None

    @property
    def llm_api_key(self) -> Optional[str]:
        """The key code in the sandbox sends the gateway (its
        OPENAI_API_KEY; never the upstream's key), or None as above."""
        return self.created.llm_api_key if self.created else None

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.delete()
        except NotFound:
            pass

    def info(self) -> SandboxInfo:
        """GET /v1/sandboxes/{id}: NotFound once it is gone."""
        return self.client._call(_api.get_sandbox(self.id))

    def exec(self, cmd: Command, *, cwd: Optional[str] = None,
             env: Optional[Mapping[str, str]] = None,
             stdin: Optional[str] = None,
             timeout: Optional[float] = None) -> ExecResult:
        """Runs a command to its end: a str is run by bash (-c), a list is
        an argv. timeout (seconds; server default 60) ends it with status
        "time_limit". A command that fails is a result, not an error."""
        return self.client._call(_api.exec_(self.id, cmd, cwd, env, stdin,
                                            timeout))

    def exec_stream(self, cmd: Command, *, cwd: Optional[str] = None,
                    env: Optional[Mapping[str, str]] = None,
                    stdin: Optional[str] = None,
                    timeout: Optional[float] = None) -> ExecStream:
        """Like exec(), but yields the output as it comes (ExecEvent), and
        last an "exit" event carrying the ExecResult."""
        return ExecStream(self.client._stream(
            _api.exec_stream(self.id, cmd, cwd, env, stdin, timeout)))

    def start_process(self, cmd: Command, *, cwd: Optional[str] = None,
                      env: Optional[Mapping[str, str]] = None,
                      stdin: Optional[str] = None) -> Process:
        """Starts a command in the background (no time limit but the
        sandbox's own) and returns at once."""
        num, argv = self.client._call(
            _api.start_process(self.id, cmd, cwd, env, stdin))
        return Process(self, num, argv)

    def process(self, num: int) -> Process:
        """A handle on background process num (no request)."""
        return Process(self, num)

    def processes(self) -> List[ProcessInfo]:
        """Every background process started, running or exited."""
        return self.client._call(_api.processes(self.id))

    def upload_dir(self, local_dir: str, remote_dir: str) -> None:
        """Copies the contents of local_dir into remote_dir (made if
        missing) as one tar."""
        self.client._call(_api.archive_put(self.id, remote_dir,
                                           _tar.pack_dir(local_dir)))

    def download_dir(self, remote_dir: str, local_dir: str) -> None:
        """Copies the contents of remote_dir into local_dir (made if
        missing). The archive comes from the sandbox, so it is checked
        first: absolute names, "..", links leading out of local_dir or
        device files raise UnsafeArchive, and nothing is written."""
        _tar.extract(self.client._call(_api.archive_get(self.id, remote_dir)),
                     local_dir)

    def repl(self, code: str, language: str = "python",
             context: Optional[str] = None,
             timeout: Optional[float] = None,
             stdin: Optional[str] = None) -> ReplResult:
        """Runs a cell in a persistent interpreter ("python" or "bash"; one
        per context name). Python's last expression comes back in .result;
        an exception gives status "error" and .error. The cell reads stdin
        (empty by default: end of file at once)."""
        return self.client._call(_api.repl(self.id, code, language, context,
                                           timeout, stdin))

    # ---- interfaces: @expose functions served over RPC ----

    def rpc_load(self, name: str, source: Optional[str] = None, *,
                 path: Optional[str] = None, workers: Optional[int] = None,
                 timeout: Optional[float] = None,
                 load_timeout: Optional[float] = None) -> Dict[str, Any]:
        """Loads a Python module as interface name (from source, or the
        file at path in the sandbox): its code runs once, with expose,
        get_model_path and list_configured_models defined, and each
        @expose function becomes callable. Returns {"name", "functions",
        "schemas"}; a module that fails raises Unprocessable with the
        traceback in .body. Loading a name again replaces it."""
        return self.client._call(_rpc.load(self.id, name, source, path,
                                           workers, timeout, load_timeout))

    def rpc_schema(self, name: str) -> Dict[str, Any]:
        """The interface's {"functions", "schemas"} (Seer's shape)."""
        return self.client._call(_rpc.schema(self.id, name))

    def rpc_interfaces(self) -> List[Dict[str, Any]]:
        """Every interface: name, state, functions, restarts, ..."""
        return self.client._call(_rpc.listing(self.id))

    def rpc_call(self, name: str, fn: str, args: Sequence[Any] = (),
                 kwargs: Optional[Mapping[str, Any]] = None, *,
                 timeout: Optional[float] = None) -> Any:
        """Calls fn of interface name; returns its result, or raises
        RpcError (its .code says which failure, .traceback the remote
        traceback)."""
        return self.client._call(_rpc.call(self.id, name, fn, args,
                                           kwargs or {}, timeout))

    def rpc_unload(self, name: str) -> None:
        """Removes the interface, stopping its process."""
        self.client._call(_rpc.unload(self.id, name))

    def rpc_client_code(self, name: str,
                        base_url: Optional[str] = None) -> str:
        """A stdlib-only Python module with one function per exposed
        function, calling this server (or base_url)."""
        return self.client._call(_rpc.document(
            self.id, name, "client.py", base_url or self.client.base_url))

    def rpc_prompt(self, name: str, base_url: Optional[str] = None) -> str:
        """Markdown describing the interface, for an agent's prompt."""
        return self.client._call(_rpc.document(
            self.id, name, "prompt.md", base_url or self.client.base_url))

    def rpc_mcp_config(self, name: str,
                       base_url: Optional[str] = None) -> Dict[str, Any]:
        """{"mcpServers": {name: ...}}: an MCP config running `sbx mcp`
        for the interface."""
        return self.client._call(_rpc.document(
            self.id, name, "mcp.json", base_url or self.client.base_url))

    def delete(self, wait: bool = True) -> None:
        """Deletes the sandbox and everything in it; NotFound when it is
        already gone. With wait, returns once the server has stopped
        listing it (it answers DELETE a moment before)."""
        self.client._call(_api.delete_sandbox(self.id))
        if wait:
            _wait_gone(self)


def _wait_gone(sb: Sandbox) -> None:
    deadline = time.monotonic() + DELETE_WAIT_S
    delay = 0.005
    while time.monotonic() < deadline:
        try:
            sb.client._call(_api.get_sandbox(sb.id))
        except NotFound:
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.2)

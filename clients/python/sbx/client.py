"""The synchronous sbx client.

Client keeps idle HTTP/1.1 connections (http.client) in a pool: a call
takes one, or opens one when none is idle, and gives it back when the reply
says the connection stays open. The pool keeps at most max_connections idle
connections; calls from many threads never share a connection.
"""
from __future__ import annotations

import http.client
import select
import socket
import threading
from typing import (Any, Dict, Iterable, Iterator, List, Mapping, Optional,
                    Sequence, Tuple, TypeVar, Union)

from . import _api, _http
from ._api import Call, FileData, Llm, Since, TestSpec
from ._http import describe as _describe
from .errors import SbxConnectionError, SbxTimeout
from .executions import Agents, Executions, Pools
from .sandbox import Sandbox
from .types import (Health, Limits, RunCodeResult, RunResult, SandboxInfo,
                    SandboxLimits)

__all__ = ["Client"]

T = TypeVar("T")

# A reused connection that fails like this before any reply byte most likely
# was closed by the server while idle (--client-timeout): retry once, fresh.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError,
          ConnectionAbortedError, BrokenPipeError)


def _is_dropped(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle connection was closed by the server (or has bytes
    nobody asked for): then it is readable."""
    try:
        if hasattr(select, "poll"):  # any fd number, unlike select()
            poller = select.poll()
            poller.register(conn.sock, select.POLLIN)
            return bool(poller.poll(0))
        readable, _, _ = select.select([conn.sock], [], [], 0)
        return bool(readable)
    except (OSError, ValueError):
        return True


class Client:
    """Synchronous client of one sbx server; thread-safe.

    base_url defaults to $SBX_URL, then http://127.0.0.1:8080; token to
    $SBX_TOKEN ("" sends none). timeout is how many seconds to wait for a
    reply (None: forever); a run waits at least as long as its own limits.
    """

    def __init__(self, base_url: Optional[str] = None,
                 token: Optional[str] = None, *,
                 timeout: Optional[float] = _http.DEFAULT_TIMEOUT,
                 max_connections: int = _http.DEFAULT_MAX_CONNECTIONS) -> None:
        self.endpoint = _http.endpoint(base_url)
        self.timeout = timeout
        self.max_connections = max(1, max_connections)
        self._token = _http.token_from(token)
        self._idle: List[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False

    @property
    def base_url(self) -> str:
        return str(self.endpoint)

    def __repr__(self) -> str:
        return "Client(%r)" % self.base_url

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Closes idle connections; the client stays usable."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # ---- API verbs ----

    def run_code(self, code: str, language: str = "python", *,
                 compile_timeout: Optional[float] = None,
                 run_timeout: Optional[float] = None,
                 memory_limit_mb: Optional[int] = None,
                 stdin: Optional[str] = None,
                 files: Optional[Mapping[str, FileData]] = None,
                 fetch_files: Optional[Iterable[str]] = None) -> RunCodeResult:
        """POST /run_code (SandboxFusion-compatible).

        files maps sandbox paths to contents (bytes, or str sent as UTF-8);
        fetch_files names files to bring back, in .files as bytes. Limits
        left None take the server's defaults.
        """
        return self._call(_api.run_code(code, language, compile_timeout,
                                        run_timeout, memory_limit_mb, stdin,
                                        files, fetch_files))

    def run(self, language: str, source: Optional[str] = None, *,
            files: Optional[Mapping[str, Union[str, bytes]]] = None,
            entry: Optional[str] = None,
            args: Optional[Sequence[str]] = None,
            stdin: Optional[str] = None,
            limits: Union[Limits, Mapping[str, Any], None] = None,
            tests: Optional[Iterable[TestSpec]] = None,
            llm: Llm = None) -> RunResult:
        """POST /v1/run: one program, from source or files (+ entry).

        tests is a list of TestCase or {"stdin", "expected_stdout"} dicts;
        with tests the program is compiled once and run once per test.
        llm=True (or a dict: "session", "max_calls", ...) gives the program
        the model gateway (OPENAI_BASE_URL, OPENAI_API_KEY); its calls are
        traced under the sandbox id "run-<n>".
        """
        return self._call(_api.run(language, source, files, entry, args,
                                   stdin, limits, tests, llm))

    def health(self) -> Health:
        """GET /v1/health."""
        return self._call(_api.health())

    def ping(self) -> bool:
        """GET /v1/ping: True when the server answers "pong", False when it
        cannot be reached. HTTP errors (such as 401) still raise."""
        try:
            return self._call(_api.ping())
        except SbxConnectionError:
            return False

    def request(self, method: str, path: str,
                json: Optional[Dict[str, Any]] = None) -> Any:
        """Any other route: returns the parsed JSON (or text) reply."""
        return self._call(_api.raw(method, path, json))

    # ---- agent rollouts (executions.py) ----

    @property
    def agents(self) -> Agents:
        """Agent directories: upload, get, list, delete."""
        return Agents(self)

    @property
    def executions(self) -> Executions:
        """Rollouts: submit, get, wait, as_completed, cancel, list,
        episode."""
        return Executions(self)

    @property
    def pools(self) -> Pools:
        """Named execution pools: create, list, delete."""
        return Pools(self)

    # ---- the model gateway's traces ----

    def traces(self, session: Optional[str] = None,
               sandbox: Optional[str] = None, since: Since = None,
               after: Optional[int] = None,
               limit: Optional[int] = None) -> List[Dict[str, Any]]:
        """GET /v1/traces: the model calls made through the gateway, oldest
        first, as dicts (id, created_at, sandbox, session_uids,
        session_name, metadata, labels, upstream, model, stream, request,
        response, prompt_token_ids, completion_token_ids, logprobs, usage,
        latency_ms, status, error). session matches a session uid or
        name; since is unix seconds, ISO 8601 text or a datetime; after
        is a trace id; limit is at most 10000 (server default 1000)."""
        return self._call(_api.traces(session, sandbox, since, after, limit))

    def trace(self, trace_id: int) -> Dict[str, Any]:
        """GET /v1/traces/{id}: one trace; NotFound when there is none."""
        return self._call(_api.trace(trace_id))

    def delete_traces(self, session: Optional[str] = None,
                      sandbox: Optional[str] = None) -> int:
        """DELETE /v1/traces: drops a session's and/or a sandbox's traces
        (one of them is needed); returns how many."""
        return self._call(_api.delete_traces(session, sandbox))

    # ---- stateful sandboxes ----

    def create_sandbox(self, *,
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
                       gpu_shared: Optional[bool] = None) -> Sandbox:
        """POST /v1/sandboxes: a new sandbox that lives until deleted,
        idle for idle_timeout seconds, or max_lifetime seconds old (None:
        the server's defaults). Use it in `with` to delete it at the end.
        TooManySandboxes when the server runs all it may.

        llm=True, or a dict ({"session": name, "max_calls": n,
        "max_prompt_tokens", "max_completion_tokens", "max_concurrent"}),
        gives it the model gateway; False refuses the server's default;
        sb.llm_base_url and sb.llm_api_key then say where it calls.

        host_routes={"/tools/": "http://127.0.0.1:9100"} forwards those
        paths of its gateway to servers of the host; models=["org/name"]
        binds models of the server's store (--models) read-only at
        /models; gpus=N or [indices] (gpu_shared=True to share them)."""
        info = self._call(_api.create_sandbox(
            limits, env, idle_timeout, max_lifetime, labels, llm,
            host_routes, models, gpus, gpu_shared))
        return Sandbox(self, info.id, info)

    def get_sandbox(self, sandbox_id: str) -> Sandbox:
        """A handle on an existing sandbox; sends nothing (its methods
        raise NotFound when there is no such sandbox)."""
        return Sandbox(self, sandbox_id)

    def list_sandboxes(self, label: Union[str, Tuple[str, str], None] = None
                       ) -> List[SandboxInfo]:
        """GET /v1/sandboxes: every sandbox, or those with label "key"
        (any value) or "key=value" (also as a (key, value) tuple)."""
        return self._call(_api.list_sandboxes(label))

    # ---- transport ----

    def _take(self, fresh: bool) -> http.client.HTTPConnection:
        while not fresh:
            with self._lock:
                if not self._idle:
                    break
                conn = self._idle.pop()
            if not _is_dropped(conn):
                return conn
            conn.close()
        ep = self.endpoint
        if ep.scheme == "https":
            return http.client.HTTPSConnection(ep.host, ep.port,
                                               timeout=self.timeout)
        return http.client.HTTPConnection(ep.host, ep.port,
                                          timeout=self.timeout)

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if conn.sock is not None and \
                    len(self._idle) < self.max_connections:
                self._idle.append(conn)
                return
        conn.close()

    def _send(self, call: Call[Any]
              ) -> Tuple[http.client.HTTPConnection,
                         http.client.HTTPResponse, str]:
        """Sends the request and reads the reply's head: (connection,
        response, what). A stale idle connection is retried once, fresh."""
        body, hdrs = _http.prepare(call, self._token)
        path = self.endpoint.prefix + call.path
        timeout = _http.wait_for(self.timeout, call)
        what = "%s %s%s" % (call.method, self.base_url, call.path)
        for attempt in range(2):
            conn = self._take(fresh=attempt > 0)
            reused = conn.sock is not None
            try:
                if conn.sock is None:
                    conn.timeout = self.timeout
                    conn.connect()
                conn.sock.settimeout(timeout)
                conn.request(call.method, path, body=body, headers=hdrs)
                return conn, conn.getresponse(), what
            except socket.timeout:
                conn.close()
                raise SbxTimeout("%s: no reply within %ss"
                                 % (what, timeout)) from None
            except _STALE as e:
                conn.close()
                if reused and attempt == 0:
                    continue
                raise SbxConnectionError("%s: %s" % (what, _describe(e))) from e
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                raise SbxConnectionError("%s: %s" % (what, _describe(e))) from e
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")

    def _read(self, conn: http.client.HTTPConnection,
              resp: http.client.HTTPResponse, what: str,
              line: bool = False) -> bytes:
        """The rest of the body, or its next line; errors close conn."""
        try:
            return resp.readline() if line else resp.read()
        except socket.timeout:
            waited = conn.sock.gettimeout() if conn.sock else None
            conn.close()
            raise SbxTimeout("%s: no reply within %ss"
                             % (what, waited)) from None
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise SbxConnectionError("%s: %s" % (what, _describe(e))) from e
        except BaseException:
            conn.close()
            raise

    def _release(self, conn: http.client.HTTPConnection,
                 resp: http.client.HTTPResponse) -> Dict[str, str]:
        """Gives conn back after a whole reply; returns its headers."""
        hdr = {k.lower(): v for k, v in resp.getheaders()}
        if resp.will_close:
            conn.close()
        self._give_back(conn)
        return hdr

    def _call(self, call: Call[T]) -> T:
        conn, resp, what = self._send(call)
        data = self._read(conn, resp, what)
        hdr = self._release(conn, resp)
        return _http.finish(call, resp.status, hdr, data)

    def _stream(self, call: Call[Any]) -> Iterator[bytes]:
        """Sends call when first iterated, then yields the reply's lines
        as they arrive. Closing the generator early drops the connection."""
        conn, resp, what = self._send(call)
        if not 200 <= resp.status < 300:
            data = self._read(conn, resp, what)
            _http.check(call, resp.status, self._release(conn, resp), data)
        done = False
        try:
            while True:
                line = self._read(conn, resp, what, line=True)
                if not line:
                    break
                yield line
            done = True
        finally:
            if done:
                self._release(conn, resp)
            else:
                conn.close()

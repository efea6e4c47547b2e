"""rLLM's sandbox protocol backed by sbx stateful sandboxes.

rLLM's SandboxOrchestrator drives a backend through six methods: exec,
upload_file, upload_dir, start_agent_process, get_endpoint and close.
SbxSandbox implements them on one sbx sandbox, so rLLM's own worker
(worker_server.py) and agents run unchanged inside it:

    from sbx.integrations.rllm import SbxSandbox, create_sbx_sandbox
    sb = create_sbx_sandbox(name="w0", client=Client(url), llm=True)
    sb.upload_dir("agent/", "/app/agent")
    sb.start_agent_process("python /app/runner/worker_server.py ...", 8100)
    url, headers = sb.get_endpoint(8100)   # reached through sbx's port
                                           # forwarding: no network needed

A sandbox's root is read-only, so paths under /app/ live under /work/app/
(every "/app/" in a path or command is rewritten, as rLLM's local backend
does with its temporary directory), and `python` runs python3.
"""
from __future__ import annotations

import time
from typing import Any, Dict, Optional, Tuple

from ..client import Client
from ..errors import SbxError

__all__ = ["SbxSandbox", "create_sbx_sandbox", "APP_ROOT"]

APP_ROOT = "/work/app/"
_BIN = "/work/.sbx-bin"


def _remap(text: str) -> str:
    return text.replace("/app/", APP_ROOT)


class SbxSandbox:
    """One sbx stateful sandbox with rLLM's Sandbox methods."""

    def __init__(self, name: str = "", client: Optional[Client] = None,
                 llm: Any = None, limits: Optional[Dict[str, Any]] = None,
                 idle_timeout: Optional[float] = None,
                 labels: Optional[Dict[str, str]] = None) -> None:
        self.name = name
        self._client = client or Client()
        labels = dict(labels or {})
        if name:
            labels.setdefault("rllm.name", name[:64])
        self._sb = self._client.create_sandbox(
            limits=limits, labels=labels, llm=llm,
            idle_timeout=idle_timeout)
        self._procs = []
        # `python` is python3, as in rLLM's images.
        self._sb.exec(["sh", "-c", "mkdir -p %s %s && ln -sf "
                       "/usr/bin/python3 %s/python" % (_BIN, APP_ROOT, _BIN)])

    @property
    def sandbox(self) -> Any:
        """The sbx Sandbox underneath."""
        return self._sb

    def _env(self) -> Dict[str, str]:
        return {"PATH": _BIN + ":/usr/local/bin:/usr/bin:/bin",
                "PYTHONPATH": APP_ROOT + "agent:" + APP_ROOT + "runner"}

    def exec(self, command: str, timeout: Optional[float] = None,
             user: Optional[str] = None) -> str:
        """Runs command with bash; its stdout. Raises RuntimeError on a
        non-zero exit (rLLM's backends do). user is ignored."""
        res = self._sb.exec(["bash", "-c", _remap(command)], cwd="/work",
                            env=self._env(), timeout=timeout or 300)
        if res.exit_code != 0:
            raise RuntimeError("command failed (exit %s): %s\n%s"
                               % (res.exit_code, command, res.stderr))
        return res.stdout

    def upload_file(self, local_path: str, remote_path: str) -> None:
        with open(local_path, "rb") as f:
            self._sb.files.write(_remap(remote_path), f.read())

    def upload_dir(self, local_path: str, remote_path: str) -> None:
        remote = _remap(remote_path)
        self._sb.exec(["mkdir", "-p", remote])
        self._sb.upload_dir(local_path, remote)

    def start_agent_process(self, command: str, port: int,
                            health_path: str = "/health",
                            timeout: float = 30.0) -> None:
        """Starts command in the background, then waits until
        GET http://127.0.0.1:{port}{health_path} inside answers 200."""
        proc = self._sb.start_process(["bash", "-c", _remap(command)],
                                      cwd="/work", env=self._env())
        self._procs.append(proc)
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                self._client.request("GET", "/v1/sandboxes/%s/ports/%d%s"
                                     % (self._sb.id, port, health_path))
                return
            except SbxError as e:
                last = str(e)
            info = proc.output()
            if info.status != "running":
                code = info.result.exit_code if info.result else None
                raise RuntimeError("the agent process exited (%s): %s"
                                   % (code, info.stderr[-2000:]))
            time.sleep(0.2)
        raise RuntimeError("the agent process did not become healthy on "
                           "port %d: %s" % (port, last))

    def get_endpoint(self, port: int) -> Tuple[str, Dict[str, str]]:
        """(base URL, headers) that reach port inside the sandbox from the
        host, through sbx's port forwarding."""
        headers = {}
        token = getattr(self._client, "_token", None)
        if token:
            headers["Authorization"] = "Bearer " + token
        return ("%s/v1/sandboxes/%s/ports/%d" % (self._client.base_url,
                                                  self._sb.id, port),
                headers)

    def close(self) -> None:
        try:
            self._sb.delete()
        except SbxError:
            pass


def create_sbx_sandbox(name: str = "", image: str = "", **kw: Any
                       ) -> SbxSandbox:
    """A factory with the signature rLLM's orchestrator calls
    (sandbox_factory(name=..., image=...)); image is ignored: sbx
    sandboxes see the host's runtime."""
    return SbxSandbox(name=name, **kw)

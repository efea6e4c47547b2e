"""Agent rollouts: agents, executions and pools (client.agents,
client.executions, client.pools; the same on AsyncClient, awaited).

    agent = client.agents.upload("examples/math_agent")
    ids = [client.executions.submit(agent["id"], task=t,
                                    agent_config={"model_id": "m"})
           for t in tasks]
    for ex in client.executions.as_completed(ids):
        print(ex["id"], ex["result"]["reward"])
    episode = client.executions.episode(ids[0])   # result + traced calls

An execution is a dict as the server gives it: id, status (queued,
running, completed, failed, cancelled, lost), result (rLLM's six keys:
success, trajectories, session_uid, reward, error, elapsed), error_code,
session_uid, sandbox, labels, times.
"""
from __future__ import annotations

import io
import os
import tarfile
import time
import urllib.parse
from typing import (Any, AsyncIterator, Dict, Iterable, Iterator, List,
                    Mapping, Optional, Union)

from ._api import Call, raw

__all__ = ["Agents", "Executions", "Pools", "AsyncAgents", "AsyncExecutions",
           "AsyncPools", "pack_agent", "DONE"]

DONE = ("completed", "failed", "cancelled", "lost")
# What is left out of an agent's archive (as rLLM's local backend does).
_SKIP = {".git", ".venv", "venv", "__pycache__", "node_modules", ".tox",
         ".mypy_cache", ".pytest_cache"}
_POLL_S = 30.0


def pack_agent(directory: str) -> bytes:
    """A tar of an agent directory, without VCS, caches and venvs."""
    def keep(ti: tarfile.TarInfo) -> Optional[tarfile.TarInfo]:
        parts = ti.name.split("/")
        if any(p in _SKIP or p.endswith(".egg-info") for p in parts):
            return None
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        return ti

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name in sorted(os.listdir(directory)):
            t.add(os.path.join(directory, name), arcname=name, filter=keep)
    return buf.getvalue()


def _q(**kw: Any) -> str:
    items = {k: v for k, v in kw.items() if v is not None}
    return "?" + urllib.parse.urlencode(items) if items else ""


def _id(execution: Union[str, Mapping[str, Any]]) -> str:
    return execution if isinstance(execution, str) else str(execution["id"])


# ---- the calls (no I/O here) ----

def _upload(directory: str, name: Optional[str],
            requirements: Optional[str]) -> Call[Dict[str, Any]]:
    path = "/v1/agents" + _q(name=name, requirements=requirements)
    return Call("POST", path, None, 600.0, lambda p: p,
                data=pack_agent(directory), content_type="application/x-tar")


def _submit_body(agent: str, task: Optional[Mapping[str, Any]],
                 entry: Optional[str],
                 agent_config: Optional[Mapping[str, Any]],
                 pool: Union[str, Mapping[str, Any], None],
                 timeout_s: Optional[float],
                 labels: Optional[Mapping[str, str]],
                 idempotency_key: Optional[str],
                 retries: Optional[int]) -> Dict[str, Any]:
    body: Dict[str, Any] = {"agent": agent, "task": dict(task or {})}
    for k, v in (("entry", entry), ("agent_config", agent_config),
                 ("pool", pool), ("timeout_s", timeout_s),
                 ("labels", labels), ("idempotency_key", idempotency_key),
                 ("retries", retries)):
        if v is not None:
            body[k] = dict(v) if isinstance(v, Mapping) else v
    return body


def _get(eid: str, wait: float = 0) -> Call[Dict[str, Any]]:
    return Call("GET", "/v1/executions/%s%s" % (
        urllib.parse.quote(eid, safe=""), _q(wait=wait or None)),
        None, wait + 10 if wait else 0, lambda p: p)


def _feed(after: int, wait: float) -> Call[Dict[str, Any]]:
    return Call("GET", "/v1/executions" + _q(done_after=after, wait=wait,
                                             limit=10000),
                None, wait + 10, lambda p: p)


def _list(status: Optional[str], label: Optional[str],
          limit: Optional[int]) -> Call[List[Dict[str, Any]]]:
    return Call("GET", "/v1/executions" + _q(status=status, label=label,
                                             limit=limit),
                None, 0, lambda p: p["executions"])


class _Batch:
    """What as_completed() still waits for, and where the feed is."""

    def __init__(self, ids: Iterable[Union[str, Mapping[str, Any]]]) -> None:
        self.pending = {_id(e) for e in ids}
        self.after = 0

    def take(self, executions: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        out = []
        for ex in executions:
            if ex["id"] in self.pending and ex["status"] in DONE:
                self.pending.discard(ex["id"])
                out.append(ex)
        return out


# ---- synchronous ----

class Agents:
    """client.agents: agent directories stored on the server by digest."""

    def __init__(self, client: Any) -> None:
        self._c = client

    def upload(self, directory: str, name: Optional[str] = None,
               requirements: Optional[str] = None) -> Dict[str, Any]:
        """POST /v1/agents: {id, digest, name, size, ...}. requirements
        names a file in the directory that pip installs offline (wheels
        in the directory) at upload."""
        return self._c._call(_upload(directory, name, requirements))

    def get(self, agent_id: str) -> Dict[str, Any]:
        return self._c._call(raw("GET", "/v1/agents/" + agent_id, None))

    def list(self) -> List[Dict[str, Any]]:
        return self._c._call(raw("GET", "/v1/agents", None))["agents"]

    def delete(self, agent_id: str) -> None:
        self._c._call(raw("DELETE", "/v1/agents/" + agent_id, None))


class Pools:
    """client.pools: named pools created ahead (POST /v1/pools)."""

    def __init__(self, client: Any) -> None:
        self._c = client

    def create(self, name: str, agent: str, **definition: Any
               ) -> Dict[str, Any]:
        """definition: mode ("persistent" | "per_task"), size,
        recycle_after, setup_commands, setup_timeout_s, limits, llm,
        entry."""
        body = dict(definition, name=name, agent=agent)
        return self._c._call(raw("POST", "/v1/pools", body))

    def list(self) -> List[Dict[str, Any]]:
        return self._c._call(raw("GET", "/v1/pools", None))["pools"]

    def delete(self, name: str) -> None:
        self._c._call(raw("DELETE", "/v1/pools/" + name, None))


class Executions:
    """client.executions: rollouts, durable on the server."""

    def __init__(self, client: Any) -> None:
        self._c = client

    def submit(self, agent: str, task: Optional[Mapping[str, Any]] = None,
               *, entry: Optional[str] = None,
               agent_config: Optional[Mapping[str, Any]] = None,
               pool: Union[str, Mapping[str, Any], None] = None,
               timeout_s: Optional[float] = None,
               labels: Optional[Mapping[str, str]] = None,
               idempotency_key: Optional[str] = None,
               retries: Optional[int] = None) -> str:
        """POST /v1/executions: the execution's id, once the server has
        committed it. The same idempotency_key gives the same id."""
        body = _submit_body(agent, task, entry, agent_config, pool,
                            timeout_s, labels, idempotency_key, retries)
        return self._c._call(raw("POST", "/v1/executions", body))["id"]

    def get(self, execution: Union[str, Mapping[str, Any]]
            ) -> Dict[str, Any]:
        return self._c._call(_get(_id(execution)))

    def wait(self, execution: Union[str, Mapping[str, Any]],
             timeout: Optional[float] = None) -> Dict[str, Any]:
        """Long-polls until the execution has ended (or timeout seconds
        pass: then it is returned as it is)."""
        eid = _id(execution)
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _POLL_S if end is None else max(0.0, end - time.monotonic())
            ex = self._c._call(_get(eid, min(_POLL_S, left)))
            if ex["status"] in DONE or (end is not None and
                                        time.monotonic() >= end):
                return ex

    def as_completed(self, executions: Iterable[Union[str, Mapping[str,
                                                                    Any]]],
                     timeout: Optional[float] = None
                     ) -> Iterator[Dict[str, Any]]:
        """Yields each execution as it ends, whatever the order; one long
        poll serves the whole batch. TimeoutError past timeout seconds."""
        batch = _Batch(executions)
        end = None if timeout is None else time.monotonic() + timeout
        batch.after = self._c._call(_feed(2 ** 62, 0))["last_seq"]
        for eid in list(batch.pending):
            yield from batch.take([self._c._call(_get(eid))])
        while batch.pending:
            left = _POLL_S if end is None else end - time.monotonic()
            if left <= 0:
                raise TimeoutError("%d executions have not ended"
                                   % len(batch.pending))
            page = self._c._call(_feed(batch.after, min(_POLL_S, left)))
            batch.after = page["last_seq"]
            yield from batch.take(page["executions"])

    def cancel(self, execution: Union[str, Mapping[str, Any]]
               ) -> Dict[str, Any]:
        return self._c._call(raw("DELETE", "/v1/executions/" +
                                 _id(execution), None))

    def list(self, status: Optional[str] = None,
             label: Optional[str] = None,
             limit: Optional[int] = None) -> List[Dict[str, Any]]:
        """status: a state or "done"; label: "key=value"."""
        return self._c._call(_list(status, label, limit))

    def episode(self, execution: Union[str, Mapping[str, Any]]
                ) -> Dict[str, Any]:
        """The result joined with every traced model call of its session
        (token ids, logprobs): {id, status, session_uid, task, result,
        traces}."""
        return self._c._call(raw("GET", "/v1/executions/%s/episode"
                                 % _id(execution), None))


# ---- asynchronous ----

class AsyncAgents:
    def __init__(self, client: Any) -> None:
        self._c = client

    async def upload(self, directory: str, name: Optional[str] = None,
                     requirements: Optional[str] = None) -> Dict[str, Any]:
        return await self._c._call(_upload(directory, name, requirements))

    async def get(self, agent_id: str) -> Dict[str, Any]:
        return await self._c._call(raw("GET", "/v1/agents/" + agent_id,
                                       None))

    async def list(self) -> List[Dict[str, Any]]:
        return (await self._c._call(raw("GET", "/v1/agents", None)))[
            "agents"]

    async def delete(self, agent_id: str) -> None:
        await self._c._call(raw("DELETE", "/v1/agents/" + agent_id, None))


class AsyncPools:
    def __init__(self, client: Any) -> None:
        self._c = client

    async def create(self, name: str, agent: str, **definition: Any
                     ) -> Dict[str, Any]:
        body = dict(definition, name=name, agent=agent)
        return await self._c._call(raw("POST", "/v1/pools", body))

    async def list(self) -> List[Dict[str, Any]]:
        return (await self._c._call(raw("GET", "/v1/pools", None)))["pools"]

    async def delete(self, name: str) -> None:
        await self._c._call(raw("DELETE", "/v1/pools/" + name, None))


class AsyncExecutions:
    def __init__(self, client: Any) -> None:
        self._c = client

    async def submit(self, agent: str,
                     task: Optional[Mapping[str, Any]] = None, *,
                     entry: Optional[str] = None,
                     agent_config: Optional[Mapping[str, Any]] = None,
                     pool: Union[str, Mapping[str, Any], None] = None,
                     timeout_s: Optional[float] = None,
                     labels: Optional[Mapping[str, str]] = None,
                     idempotency_key: Optional[str] = None,
                     retries: Optional[int] = None) -> str:
        body = _submit_body(agent, task, entry, agent_config, pool,
                            timeout_s, labels, idempotency_key, retries)
        return (await self._c._call(raw("POST", "/v1/executions",
                                        body)))["id"]

    async def get(self, execution: Union[str, Mapping[str, Any]]
                  ) -> Dict[str, Any]:
        return await self._c._call(_get(_id(execution)))

    async def wait(self, execution: Union[str, Mapping[str, Any]],
                   timeout: Optional[float] = None) -> Dict[str, Any]:
        eid = _id(execution)
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _POLL_S if end is None else max(0.0, end - time.monotonic())
            ex = await self._c._call(_get(eid, min(_POLL_S, left)))
            if ex["status"] in DONE or (end is not None and
                                        time.monotonic() >= end):
                return ex

    async def as_completed(self, executions: Iterable[Union[str, Mapping[
            str, Any]]], timeout: Optional[float] = None
    ) -> AsyncIterator[Dict[str, Any]]:
        batch = _Batch(executions)
        end = None if timeout is None else time.monotonic() + timeout
        batch.after = (await self._c._call(_feed(2 ** 62, 0)))["last_seq"]
        for eid in list(batch.pending):
            for ex in batch.take([await self._c._call(_get(eid))]):
                yield ex
        while batch.pending:
            left = _POLL_S if end is None else end - time.monotonic()
            if left <= 0:
                raise TimeoutError("%d executions have not ended"
                                   % len(batch.pending))
            page = await self._c._call(_feed(batch.after,
                                             min(_POLL_S, left)))
            batch.after = page["last_seq"]
            for ex in batch.take(page["executions"]):
                yield ex

    async def cancel(self, execution: Union[str, Mapping[str, Any]]
                     ) -> Dict[str, Any]:
        return await self._c._call(raw("DELETE", "/v1/executions/" +
                                       _id(execution), None))

    async def list(self, status: Optional[str] = None,
                   label: Optional[str] = None,
                   limit: Optional[int] = None) -> List[Dict[str, Any]]:
        return await self._c._call(_list(status, label, limit))

    async def episode(self, execution: Union[str, Mapping[str, Any]]
                      ) -> Dict[str, Any]:
        return await self._c._call(raw("GET", "/v1/executions/%s/episode"
                                       % _id(execution), None))

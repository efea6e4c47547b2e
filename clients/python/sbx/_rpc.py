"""Interfaces of a sandbox (/v1/sandboxes/{id}/rpc...): the requests
behind Sandbox.rpc_* and AsyncSandbox.rpc_*, and the error a failed
call raises."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence
from urllib.parse import quote

from ._api import Call, _expect_dict, _sb, _SLACK_S
from .errors import SbxError, ServerError

__all__ = ["RpcError"]

# What a call may take when it names no timeout: the server's default.
_CALL_DEFAULT_S = 600.0


class RpcError(SbxError):
    """A call the interface answered with "ok": false: the function
    raised (code "exception"), is not exposed ("not_found"), gave a
    result that is not JSON ("not_json"), ran past its timeout
    ("timeout"), or the interface crashed ("crashed", and it was
    restarted). .traceback holds the remote traceback."""

    def __init__(self, code: str, message: str, traceback: str = "",
                 payload: Any = None) -> None:
        super().__init__(200, code, message, payload)
        self.traceback = traceback

    def __str__(self) -> str:
        text = "%s: %s" % (self.code, self.message)
        if self.traceback:
            text += "\n\nRemote traceback:\n" + self.traceback
        return text


def _rpc(sandbox_id: str, name: str = "", sub: str = "") -> str:
    path = _sb(sandbox_id, "/rpc")
    if name:
        path += "/" + quote(name, safe="")
    return path + sub


def load(sandbox_id: str, name: str, source: Optional[str],
         path: Optional[str], workers: Optional[int],
         timeout: Optional[float],
         load_timeout: Optional[float]) -> Call[Dict[str, Any]]:
    body: Dict[str, Any] = {"name": name}
    if source is not None:
        body["source"] = source
    if path is not None:
        body["path"] = path
    if workers is not None:
        body["workers"] = workers
    if timeout is not None:
        body["timeout_s"] = timeout
    if load_timeout is not None:
        body["load_timeout_s"] = load_timeout
    wait = (load_timeout or _CALL_DEFAULT_S) + _SLACK_S
    return Call("POST", _rpc(sandbox_id), body, wait,
                lambda p: _expect_dict(p, "rpc load"))


def schema(sandbox_id: str, name: str) -> Call[Dict[str, Any]]:
    return Call("GET", _rpc(sandbox_id, name), None, 0.0,
                lambda p: _expect_dict(p, "rpc schema"))


def listing(sandbox_id: str) -> Call[List[Dict[str, Any]]]:
    return Call("GET", _rpc(sandbox_id), None, 0.0,
                lambda p: list(_expect_dict(p, "rpc").get("interfaces")
                               or []))


def unload(sandbox_id: str, name: str) -> Call[None]:
    return Call("DELETE", _rpc(sandbox_id, name), None, 0.0,
                lambda p: None)


def _answer(payload: Any) -> Any:
    p = _expect_dict(payload, "rpc call")
    if p.get("ok") is True:
        return p.get("result")
    raise RpcError(str(p.get("code") or "exception"),
                   str(p.get("error") or ""), str(p.get("traceback") or ""),
                   p)


def call(sandbox_id: str, name: str, fn: str, args: Sequence[Any],
         kwargs: Mapping[str, Any], timeout: Optional[float]) -> Call[Any]:
    body: Dict[str, Any] = {"fn": fn, "args": list(args),
                            "kwargs": dict(kwargs)}
    if timeout is not None:
        body["timeout_s"] = timeout
    wait = (timeout or _CALL_DEFAULT_S) + _SLACK_S
    return Call("POST", _rpc(sandbox_id, name), body, wait, _answer)


def document(sandbox_id: str, name: str, which: str,
             base_url: str) -> Call[Any]:
    """client.py and prompt.md as text, mcp.json parsed."""
    sub = "/" + which + "?base_url=" + quote(base_url, safe="")
    if which == "mcp.json":
        return Call("GET", _rpc(sandbox_id, name, sub), None, 0.0,
                    lambda p: _expect_dict(p, "mcp.json"))

    def text(hdrs: Mapping[str, str], data: bytes) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise ServerError(200, "bad_response",
                              "%s is not UTF-8 text" % which) from None
    return Call("GET", _rpc(sandbox_id, name, sub), None, 0.0,
                lambda p: "", parse_raw=text)


"""HTTP plumbing shared by the sync and async clients.

Parses the base URL, builds request headers and bodies, and turns a reply
(status, headers, bytes) into a parsed payload or an SbxError. Nothing here
does I/O.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple, TypeVar
from urllib.parse import urlsplit

from . import __version__
from ._api import Call
from .errors import ServerError, error_from_reply

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT = 300.0
DEFAULT_MAX_CONNECTIONS = 64
USER_AGENT = "sbx-python/" + __version__


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int
    prefix: str
    """Path the server is mounted under ("" at the root)."""

    @property
    def host_header(self) -> str:
        host = "[%s]" % self.host if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else "%s:%d" % (host, self.port)

    def __str__(self) -> str:
        return "%s://%s%s" % (self.scheme, self.host_header, self.prefix)


def endpoint(base_url: Optional[str]) -> Endpoint:
    """Parses base_url (default: $SBX_URL, then http://127.0.0.1:8080)."""
    url = base_url or os.environ.get("SBX_URL") or DEFAULT_URL
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError("sbx base_url must be http:// or https://, not %r"
                         % url)
    if not parts.hostname:
        raise ValueError("sbx base_url has no host: %r" % url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Endpoint(parts.scheme, parts.hostname, port,
                    parts.path.rstrip("/"))


def token_from(token: Optional[str]) -> Optional[str]:
    """token, or $SBX_TOKEN when token is None; "" means no token."""
    if token is None:
        token = os.environ.get("SBX_TOKEN")
    return token or None


def headers(token: Optional[str], has_body: bool,
            content_type: str = "application/json") -> Dict[str, str]:
    h = {"Accept": "application/json", "User-Agent": USER_AGENT}
    if has_body:
        h["Content-Type"] = content_type
    if token:
        h["Authorization"] = "Bearer " + token
    return h


def encode(body: Optional[Dict[str, Any]]) -> Optional[bytes]:
    if body is None:
        return None
    return json.dumps(body, ensure_ascii=False,
                      separators=(",", ":")).encode("utf-8")


def prepare(call: Call[Any], token: Optional[str]
            ) -> Tuple[Optional[bytes], Dict[str, str]]:
    """The body bytes and headers of a call (raw data or JSON)."""
    if call.data is not None:
        return call.data, headers(token, True, call.content_type)
    body = encode(call.body)
    return body, headers(token, body is not None)


def wait_for(timeout: Optional[float], call: Call[Any]) -> Optional[float]:
    """Seconds to wait for this call's reply (None: forever)."""
    if timeout is None:
        return None
    return max(timeout, call.wait_s)


def _payload(hdrs: Mapping[str, str], data: bytes) -> Any:
    text = data.decode("utf-8", errors="replace")
    ctype = hdrs.get("content-type", "")
    if "json" in ctype or (not ctype and text[:1] in ("{", "[", '"')):
        try:
            return json.loads(text)
        except ValueError:
            if "json" in ctype:
                raise
    return text


def check(call: Call[Any], status: int, hdrs: Mapping[str, str],
          data: bytes) -> None:
    """Raises the SbxError of a non-2xx reply (whose whole body is data)."""
    if not 200 <= status < 300:
        finish(call, status, hdrs, data)
        raise ServerError(status, "bad_response", "unexpected reply")


def finish(call: Call[T], status: int, hdrs: Mapping[str, str],
           data: bytes) -> T:
    """Parses a reply (header names lower-case); raises SbxError on errors."""
    if call.parse_raw is not None and 200 <= status < 300:
        return call.parse_raw(hdrs, data)
    try:
        payload = _payload(hdrs, data)
    except ValueError:
        raise ServerError(status, "bad_response",
                          "%s %s: reply is not valid JSON"
                          % (call.method, call.path),
                          data[:1000].decode("utf-8", "replace")) from None
    if not 200 <= status < 300:
        raise error_from_reply(status, hdrs, payload)
    return call.parse(payload)


def describe(e: BaseException) -> str:
    """An exception as words, even when str(e) is empty."""
    return str(e) or type(e).__name__

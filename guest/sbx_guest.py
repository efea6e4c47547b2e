"""sbx_guest: calls out of an sbx sandbox, through its model gateway.

Every sandbox can `import sbx_guest` (it lives in /opt/sbx/python, on
PYTHONPATH). In a sandbox created with the model gateway ("llm"), the
gateway listens on the sandbox's own loopback and OPENAI_BASE_URL points
at it; nothing else reaches out.

    llm_batch(prompts, model=None, max_parallel=8, timeout=300, **params)
        One chat completion per prompt, run in parallel threads; returns
        the answers' texts in order. An item that fails is the string
        "Error: ..." in its place, so one bad call does not lose the rest.
        A prompt is a string (one user message) or a list of messages.
    call_tool(name, **kwargs)
        POSTs kwargs as JSON to the host route for tools (path
        /tools/{name} on the gateway unless SBX_TOOLS_URL or configure()
        says otherwise) and returns the JSON answer. The server forwards
        that path to the host only when the sandbox was created with a
        host route for it.

Standard library only. Calls are traced under the sandbox's session like
any other call through the gateway.
"""

import concurrent.futures
import json
import os
import urllib.error
import urllib.request

__all__ = ["llm_batch", "call_tool", "configure", "ToolError"]

_config = {"base_url": None, "tools_url": None, "model": None}


class ToolError(RuntimeError):
    """A host route answered with an error (status and message)."""

    def __init__(self, status, message):
        super().__init__("tool call failed (HTTP %s): %s" % (status, message))
        self.status = status
        self.message = message


def configure(base_url=None, tools_url=None, model=None):
    """Overrides OPENAI_BASE_URL, SBX_TOOLS_URL or SBX_LLM_MODEL."""
    if base_url is not None:
        _config["base_url"] = base_url
    if tools_url is not None:
        _config["tools_url"] = tools_url
    if model is not None:
        _config["model"] = model


def _base_url():
    url = _config["base_url"] or os.environ.get("OPENAI_BASE_URL")
    if not url:
        raise RuntimeError(
            "no model gateway here: this sandbox was created without "
            "'llm' (OPENAI_BASE_URL is not set)")
    return url.rstrip("/")


def _gateway_root():
    root = os.environ.get("SBX_GATEWAY_URL")
    if root:  # a sandbox with host routes, with or without 'llm'
        return root.rstrip("/")
    url = _base_url()
    return url[:-3] if url.endswith("/v1") else url


def _post(url, payload, timeout):
    data = json.dumps(payload).encode("utf-8")
    req = urllib.request.Request(
        url, data=data, method="POST",
        headers={"Content-Type": "application/json",
                 "Authorization": "Bearer " +
                 os.environ.get("OPENAI_API_KEY", "sbx")})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _message_of(body):
    try:
        doc = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")[:500]
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if doc.get("detail"):
            return str(doc["detail"])
    return json.dumps(doc)[:500]


def _one(prompt, model, timeout, params):
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = list(prompt)
    payload = dict(params)
    payload["messages"] = messages
    payload["model"] = (model or _config["model"] or
                        os.environ.get("SBX_LLM_MODEL") or "default")
    status, body = _post(_base_url() + "/chat/completions", payload, timeout)
    if status != 200:
        raise RuntimeError("HTTP %d: %s" % (status, _message_of(body)))
    doc = json.loads(body)
    content = doc["choices"][0]["message"].get("content")
    return content if content is not None else ""


def llm_batch(prompts, model=None, max_parallel=8, timeout=300, **params):
    """Runs one chat call per prompt, at most max_parallel at once, and
    returns the texts in the prompts' order (errors as "Error: ...")."""
    if isinstance(prompts, str):
        raise TypeError("llm_batch takes a list of prompts")
    prompts = list(prompts)
    if not prompts:
        return []
    workers = max(1, min(int(max_parallel), len(prompts)))
    results = [None] * len(prompts)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(_one, p, model, timeout, params): i
                   for i, p in enumerate(prompts)}
        for fut in concurrent.futures.as_completed(futures):
            i = futures[fut]
            try:
                results[i] = fut.result()
            except Exception as e:  # each item fails on its own
                results[i] = "Error: %s" % (e,)
    return results


def call_tool(name, timeout=300, **kwargs):
    """POSTs kwargs as JSON to the tool route and returns its JSON
    answer; raises ToolError when it answers with an error."""
    if not name or "/" in name:
        raise ValueError("a tool name is one path segment")
    base = (_config["tools_url"] or os.environ.get("SBX_TOOLS_URL") or
            _gateway_root() + "/tools")
    status, body = _post(base.rstrip("/") + "/" + name, kwargs, timeout)
    if status // 100 != 2:
        raise ToolError(status, _message_of(body))
    return json.loads(body) if body else None

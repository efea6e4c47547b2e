"""A mock OpenAI-compatible upstream that answers like vLLM's OpenAI server,
for the model gateway's tests and benchmark. Standard library only.

    python3 mock_upstream.py --port 0 --port-file F [--model ID ...]
                             [--api-key-env VAR] [--stream-mode close]

or, from Python (tests, bench):

    with MockUpstream(models=["mock-model"]) as up:
        up.base_url          # "http://127.0.0.1:PORT/v1"
        up.requests()        # every request received, oldest first
        up.configure(fault="fail-500", fault_count=1)

Routes: GET /v1/models; POST /v1/chat/completions and /v1/completions,
streamed (server-sent events; chunked, or close-delimited with
stream_mode "close") or not. HTTP/1.1 with keep-alive.

The completion is deterministic: the prompt (the completions prompt, or the
chat messages as "role: content" lines) is cut into whitespace-separated
words, each word is a token whose id is derived from its text
(token_id()), and the completion is max_tokens (default 8) words picked by
a hash of the prompt (completion_tokens()). vLLM's extras are honoured:
`return_token_ids: true` adds top-level prompt_token_ids (chat) or
choices[i].prompt_token_ids (completions) and choices[i].token_ids;
`logprobs` adds chat logprobs.content entries or completions logprobs
lists; stream_options.include_usage adds the final usage chunk.

Faults, chosen by the request's model: a model is a listed id, a fault, or
several joined by '+' ("mock-model+delay-200ms"). Faults:
  delay-<N>ms|s     wait before the status line
  fail-<CODE>       answer CODE with a JSON error
  drop              close the connection mid-response (after the headers
                    and part of the body; mid-stream for streams)
  drop-before       close the connection before sending any byte
  slow-stream[-<N>ms]  streams one token every N ms (default 200)
  stall-<N>ms|s     streams the first chunk, then sends nothing for N
each optionally suffixed "-once" (only the first request with this model
and prompt) or "-<K>x" (the first K). The same faults can be set for the
next requests whatever their model with POST /mock/config
{"fault": "fail-500", "fault_count": 1}. An unknown model is a 404 as vLLM
gives it.

Control routes (not recorded): GET /mock/requests -> {"requests": [...]}
(method, path, headers, body, json, model, outcome, time); DELETE
/mock/requests clears them; POST /mock/config {"models": [...],
"stream_mode": "chunked"|"close", "fault", "fault_count", "api_key"}.
When an API key is set, requests without "Authorization: Bearer <key>" get
a 401.
"""
import argparse
import hashlib
import http.server
import json
import os
import re
import select
import signal
import socket
import sys
import threading
import time
import zlib

DEFAULT_MODELS = ("mock-model",)
DEFAULT_MAX_TOKENS = 8
VOCAB = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf",
         "hotel", "india", "juliet", "kilo", "lima", "mike", "november",
         "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform",
         "victor", "whiskey", "xray", "yankee", "zulu")
FAULT_RE = re.compile(
    r"^(delay-(?P<delay>\d+)(?P<dunit>ms|s)"
    r"|fail-(?P<fail>\d{3})"
    r"|(?P<dropb>drop-before)"
    r"|(?P<drop>drop)"
    r"|slow-stream(?:-(?P<slow>\d+)ms)?"
    r"|stall-(?P<stall>\d+)(?P<sunit>ms|s))"
    r"(?:-(?P<once>once)|-(?P<times>\d+)x)?$")


# ---- the deterministic "model" ----

def token_id(word):
    """The id of one token (a word): stable across runs."""
    return zlib.crc32(word.encode("utf-8")) % 100000 + 1


def token_logprob(word, position):
    """A logprob for a completion token: stable, negative."""
    h = zlib.crc32(("%d:%s" % (position, word)).encode("utf-8"))
    return -round((h % 5000) / 1000.0 + 0.001, 6)


def chat_prompt_text(messages):
    """The text a chat request's messages stand for."""
    lines = []
    for m in messages or []:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):  # content parts
            content = " ".join(p.get("text", "") for p in content
                               if isinstance(p, dict))
        lines.append("%s: %s" % (m.get("role", "") if isinstance(m, dict)
                                 else "", content or ""))
    return "\n".join(lines)


def prompt_tokens(text):
    return text.split()


def completion_tokens(prompt_text, n=DEFAULT_MAX_TOKENS):
    """The n tokens the mock answers prompt_text with: the first is a word
    of the prompt's hash, so different prompts get different answers."""
    digest = hashlib.sha256(prompt_text.encode("utf-8")).digest()
    out = []
    for i in range(n):
        b = digest[i % len(digest)] + i
        word = VOCAB[b % len(VOCAB)]
        out.append(word if i == 0 else " " + word)
    return out


def completion_text(prompt_text, n=DEFAULT_MAX_TOKENS):
    return "".join(completion_tokens(prompt_text, n))


def expected_ids(prompt_text, n=DEFAULT_MAX_TOKENS):
    """(prompt_token_ids, completion_token_ids) the mock returns."""
    return ([token_id(w) for w in prompt_tokens(prompt_text)],
            [token_id(t) for t in completion_tokens(prompt_text, n)])


def parse_faults(model, known):
    """The faults a model asks for, or None when it is an unknown model.
    Each fault is a dict with a "kind" and its parameters."""
    if model in known:
        return []
    faults = []
    for part in model.split("+"):
        if part in known:
            continue
        m = FAULT_RE.match(part)
        if not m:
            return None
        f = {"name": part}
        if m.group("delay"):
            f.update(kind="delay", seconds=int(m.group("delay")) /
                     (1000.0 if m.group("dunit") == "ms" else 1.0))
        elif m.group("fail"):
            f.update(kind="fail", code=int(m.group("fail")))
        elif m.group("dropb"):
            f.update(kind="drop-before")
        elif m.group("drop"):
            f.update(kind="drop")
        elif m.group("stall"):
            f.update(kind="stall", seconds=int(m.group("stall")) /
                     (1000.0 if m.group("sunit") == "ms" else 1.0))
        else:
            f.update(kind="slow-stream",
                     seconds=int(m.group("slow") or 200) / 1000.0)
        f["times"] = (1 if m.group("once") else
                      int(m.group("times")) if m.group("times") else None)
        faults.append(f)
    return faults


class MockState:
    """What the mock was asked and how it is set; shared by its threads."""

    def __init__(self, models=DEFAULT_MODELS, api_key=None,
                 stream_mode="chunked", record=True):
        self.lock = threading.Lock()
        self.models = list(models)
        self.api_key = api_key
        self.stream_mode = stream_mode
        self.record = record
        self.fault = None
        self.fault_count = None
        self.log = []
        self.seen = {}  # (fault name, model, prompt) -> times seen

    def configure(self, **kw):
        with self.lock:
            for k, v in kw.items():
                if k not in ("models", "stream_mode", "fault",
                             "fault_count", "api_key", "record"):
                    raise ValueError("unknown setting %r" % k)
                setattr(self, k, v)

    def add(self, entry):
        with self.lock:
            if self.record:
                self.log.append(entry)

    def requests(self):
        with self.lock:
            return [dict(e) for e in self.log]

    def clear(self):
        with self.lock:
            self.log = []

    def take_global_fault(self):
        with self.lock:
            if not self.fault:
                return None
            if self.fault_count is not None:
                if self.fault_count <= 0:
                    return None
                self.fault_count -= 1
            return self.fault

    def fires(self, fault, model, prompt):
        """Whether a fault with a -once/-Kx suffix still applies."""
        if fault["times"] is None:
            return True
        key = (fault["name"], model, prompt)
        with self.lock:
            n = self.seen.get(key, 0)
            self.seen[key] = n + 1
        return n < fault["times"]


class ClientGone(Exception):
    pass


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mock-vllm/0.1"
    timeout = 300
    # headers and body go out in separate writes: no Nagle delay between
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):  # quiet
        pass

    @property
    def state(self):
        return self.server.state

    # ---- plumbing ----

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send_json(self, status, obj, extra_headers=()):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra_headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def error_json(self, status, message, etype):
        self.send_json(status, {"error": {"message": message, "type": etype,
                                          "param": None, "code": status}})

    def hard_close(self):
        """Closes the connection at once (RST), whatever was sent."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def sleep_watch(self, seconds):
        """Sleeps, raising ClientGone as soon as the peer closes."""
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            r, _, _ = select.select([self.connection], [], [], min(left, 0.05))
            if r:
                try:
                    peek = self.connection.recv(1, socket.MSG_PEEK)
                except OSError:
                    raise ClientGone()
                if not peek:
                    raise ClientGone()
                time.sleep(min(left, 0.05))  # a pipelined request: keep it

    # ---- routes ----

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/mock/requests":
            return self.send_json(200, {"requests": self.state.requests()})
        entry = self.record_request(b"")
        if not self.authorized(entry):
            return
        if path == "/v1/models":
            entry["outcome"] = "ok"
            return self.send_json(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 1700000000,
                 "owned_by": "vllm", "root": m, "parent": None,
                 "max_model_len": 4096} for m in self.state.models]})
        entry["outcome"] = "not_found"
        self.error_json(404, "Not Found", "NotFoundError")

    def do_DELETE(self):
        if self.path.split("?")[0] == "/mock/requests":
            self.state.clear()
            return self.send_json(200, {"cleared": True})
        self.read_body()
        self.error_json(404, "Not Found", "NotFoundError")

    def do_POST(self):
        path = self.path.split("?")[0]
        raw = self.read_body()
        if path == "/mock/config":
            try:
                self.state.configure(**json.loads(raw or b"{}"))
            except (ValueError, TypeError) as e:
                return self.send_json(400, {"error": str(e)})
            return self.send_json(200, {"ok": True})
        entry = self.record_request(raw)
        if not self.authorized(entry):
            return
        if path not in ("/v1/chat/completions", "/v1/completions"):
            entry["outcome"] = "not_found"
            return self.error_json(404, "Not Found", "NotFoundError")
        req = entry["json"]
        if not isinstance(req, dict):
            entry["outcome"] = "bad_request"
            return self.error_json(400, "request body is not a JSON object",
                                   "BadRequestError")
        model = req.get("model")
        if not isinstance(model, str):
            entry["outcome"] = "bad_request"
            return self.error_json(400, "model is required",
                                   "BadRequestError")
        faults = parse_faults(model, self.state.models)
        if faults is None:
            entry["outcome"] = "not_found"
            return self.error_json(
                404, "The model `%s` does not exist." % model,
                "NotFoundError")
        chat = path == "/v1/chat/completions"
        if chat:
            if not isinstance(req.get("messages"), list):
                entry["outcome"] = "bad_request"
                return self.error_json(400, "messages must be a list",
                                       "BadRequestError")
            prompt = chat_prompt_text(req["messages"])
        else:
            prompt = req.get("prompt", "")
            if isinstance(prompt, list):
                prompt = " ".join(str(p) for p in prompt)
            if not isinstance(prompt, str):
                entry["outcome"] = "bad_request"
                return self.error_json(400, "prompt must be a string",
                                       "BadRequestError")
        g = self.state.take_global_fault()
        if g:
            extra = parse_faults(g, ()) or []
            for f in extra:
                f["times"] = None
            faults = faults + extra
        active = {}
        for f in faults:
            if self.state.fires(f, model, prompt):
                active[f["kind"]] = f
        entry["faults"] = sorted(active)
        try:
            self.answer(entry, req, chat, model, prompt, active)
        except ClientGone:
            entry["outcome"] = "client_gone"
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            entry["outcome"] = "client_gone"
            self.close_connection = True

    def record_request(self, raw):
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        entry = {
            "method": self.command,
            "path": self.path,
            "headers": {k: v for k, v in self.headers.items()},
            "body": raw.decode("utf-8", "replace"),
            "json": parsed,
            "model": parsed.get("model") if isinstance(parsed, dict) else None,
            "outcome": None,
            "time": time.time(),
        }
        self.state.add(entry)
        return entry

    def authorized(self, entry):
        key = self.state.api_key
        if key and self.headers.get("Authorization") != "Bearer " + key:
            entry["outcome"] = "unauthorized"
            self.error_json(401, "Unauthorized", "AuthenticationError")
            return False
        return True

    # ---- answers ----

    def answer(self, entry, req, chat, model, prompt, faults):
        if "drop-before" in faults:
            entry["outcome"] = "dropped_before"
            self.hard_close()
            return
        if "delay" in faults:
            self.sleep_watch(faults["delay"]["seconds"])
        if "fail" in faults:
            code = faults["fail"]["code"]
            entry["outcome"] = "failed_%d" % code
            return self.error_json(code, "injected failure %d" % code,
                                   "InternalServerError")
        n = req.get("max_tokens", req.get("max_completion_tokens"))
        n = n if isinstance(n, int) and 0 < n <= 4096 else DEFAULT_MAX_TOKENS
        ptoks = prompt_tokens(prompt)
        ctoks = completion_tokens(prompt, n)
        pids = [token_id(w) for w in ptoks]
        cids = [token_id(t) for t in ctoks]
        lps = [token_logprob(t, i) for i, t in enumerate(ctoks)]
        want_ids = req.get("return_token_ids") is True
        lp_req = req.get("logprobs")
        want_lp = (lp_req is True) if chat else (
            isinstance(lp_req, int) and not isinstance(lp_req, bool)
            and lp_req >= 0)
        top = req.get("top_logprobs") if chat else lp_req
        top = top if isinstance(top, int) and not isinstance(top, bool) \
            else 0
        usage = {"prompt_tokens": len(pids), "completion_tokens": len(cids),
                 "total_tokens": len(pids) + len(cids)}
        rid = ("chatcmpl-" if chat else "cmpl-") + hashlib.md5(
            ("%s|%s|%f" % (model, prompt, time.time())).encode()).hexdigest()
        created = int(time.time())
        finish = "length"
        ctx = dict(entry=entry, req=req, chat=chat, model=model, rid=rid,
                   created=created, ctoks=ctoks, cids=cids, pids=pids,
                   lps=lps, want_ids=want_ids, want_lp=want_lp, top=top,
                   usage=usage, finish=finish, faults=faults)
        if req.get("stream") is True:
            return self.stream(ctx)
        if chat:
            choice = {"index": 0,
                      "message": {"role": "assistant",
                                  "content": "".join(ctoks),
                                  "reasoning_content": None,
                                  "tool_calls": []},
                      "logprobs": ({"content": [chat_lp_entry(t, lp, top)
                                               for t, lp in zip(ctoks, lps)]}
                                   if want_lp else None),
                      "finish_reason": finish, "stop_reason": None}
            if want_ids:
                choice["token_ids"] = cids
            resp = {"id": rid, "object": "chat.completion",
                    "created": created, "model": model, "choices": [choice],
                    "usage": usage, "prompt_logprobs": None}
            if want_ids:
                resp["prompt_token_ids"] = pids
        else:
            choice = {"index": 0, "text": "".join(ctoks),
                      "logprobs": (text_lp(ctoks, lps, top, 0)
                                   if want_lp else None),
                      "finish_reason": finish, "stop_reason": None,
                      "prompt_logprobs": None}
            if want_ids:
                choice["prompt_token_ids"] = pids
                choice["token_ids"] = cids
            resp = {"id": rid, "object": "text_completion",
                    "created": created, "model": model, "choices": [choice],
                    "usage": usage}
        body = json.dumps(resp).encode()
        if "drop" in faults:
            entry["outcome"] = "dropped"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.hard_close()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # "ok" before the last byte: a caller that has its answer sees it
        entry["outcome"] = "ok"
        self.wfile.write(body)
        self.wfile.flush()

    def stream(self, c):
        chunked = self.state.stream_mode != "close"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.flush()

        def send(data):
            payload = ("data: %s\n\n" % data).encode()
            if chunked:
                payload = b"%x\r\n%s\r\n" % (len(payload), payload)
            self.wfile.write(payload)
            self.wfile.flush()

        include_usage = isinstance(c["req"].get("stream_options"), dict) and \
            c["req"]["stream_options"].get("include_usage") is True
        faults = c["faults"]
        slow = faults.get("slow-stream", {}).get("seconds", 0)
        chunks = []
        base = {"id": c["rid"], "created": c["created"], "model": c["model"]}
        if c["chat"]:
            base["object"] = "chat.completion.chunk"
            first = dict(base, choices=[{"index": 0, "delta": {
                "role": "assistant", "content": ""}, "logprobs": None,
                "finish_reason": None}])
            if c["want_ids"]:
                first["prompt_token_ids"] = c["pids"]
            chunks.append(first)
            for i, (t, tid, lp) in enumerate(zip(c["ctoks"], c["cids"],
                                                 c["lps"])):
                ch = {"index": 0, "delta": {"content": t},
                      "logprobs": ({"content": [chat_lp_entry(t, lp, c["top"])]}
                                   if c["want_lp"] else None),
                      "finish_reason": (c["finish"] if i == len(c["ctoks"]) - 1
                                        else None)}
                if c["want_ids"]:
                    ch["token_ids"] = [tid]
                chunks.append(dict(base, choices=[ch]))
        else:
            base["object"] = "text_completion"
            offset = 0
            for i, (t, tid, lp) in enumerate(zip(c["ctoks"], c["cids"],
                                                 c["lps"])):
                ch = {"index": 0, "text": t,
                      "logprobs": (text_lp([t], [lp], c["top"], offset)
                                   if c["want_lp"] else None),
                      "finish_reason": (c["finish"] if i == len(c["ctoks"]) - 1
                                        else None), "stop_reason": None}
                offset += len(t)
                if c["want_ids"]:
                    if i == 0:
                        ch["prompt_token_ids"] = c["pids"]
                    ch["token_ids"] = [tid]
                chunks.append(dict(base, choices=[ch]))
        if include_usage:
            for ch in chunks:
                ch["usage"] = None
            chunks.append(dict(base, choices=[], usage=c["usage"]))
        for i, ch in enumerate(chunks):
            if "drop" in faults and i == max(1, len(chunks) // 2):
                c["entry"]["outcome"] = "dropped"
                self.hard_close()
                return
            send(json.dumps(ch))
            if i == 0 and "stall" in faults:
                self.sleep_watch(faults["stall"]["seconds"])
            if slow:
                self.sleep_watch(slow)
        c["entry"]["outcome"] = "ok"  # before the last byte, as above
        send("[DONE]")
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()


def chat_lp_entry(token, lp, top):
    entry = {"token": token, "logprob": lp,
             "bytes": list(token.encode("utf-8")), "top_logprobs": []}
    if top:
        entry["top_logprobs"] = [{"token": token, "logprob": lp,
                                  "bytes": list(token.encode("utf-8"))}]
    return entry


def text_lp(tokens, lps, top, offset):
    offsets = []
    for t in tokens:
        offsets.append(offset)
        offset += len(t)
    return {"text_offset": offsets, "token_logprobs": list(lps),
            "tokens": list(tokens),
            "top_logprobs": [{t: lp} if top else None
                             for t, lp in zip(tokens, lps)]}


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True


class MockUpstream:
    """The mock on a thread of this process; a context manager."""

    def __init__(self, host="127.0.0.1", port=0, models=DEFAULT_MODELS,
                 api_key=None, stream_mode="chunked"):
        self.httpd = Server((host, port), Handler)
        self.httpd.state = MockState(models, api_key, stream_mode)
        self.host = host
        self.port = self.httpd.server_address[1]
        self.url = "http://%s:%d" % (host, self.port)
        self.base_url = self.url + "/v1"
        self.thread = None

    @property
    def state(self):
        return self.httpd.state

    def start(self):
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.thread:
            self.httpd.shutdown()
            self.thread.join()
            self.thread = None
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def requests(self, method=None, path=None):
        """Recorded requests, oldest first; optionally only those of a
        method and whose path ends with path."""
        return [r for r in self.state.requests()
                if (method is None or r["method"] == method)
                and (path is None or r["path"].split("?")[0].endswith(path))]

    def completions(self):
        """The recorded POSTs (completion calls), oldest first."""
        return self.requests("POST")

    def clear(self):
        self.state.clear()

    def configure(self, **kw):
        self.state.configure(**kw)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--port-file", help="write the bound port here")
    ap.add_argument("--model", action="append", dest="models",
                    help="a model id to list and serve (repeatable; "
                    "default mock-model)")
    ap.add_argument("--api-key-env", metavar="VAR",
                    help="require 'Authorization: Bearer $VAR'")
    ap.add_argument("--stream-mode", choices=("chunked", "close"),
                    default="chunked")
    args = ap.parse_args(argv)
    key = None
    if args.api_key_env:
        key = os.environ.get(args.api_key_env)
        if not key:
            ap.error("%s is not set" % args.api_key_env)
    mock = MockUpstream(args.host, args.port, args.models or DEFAULT_MODELS,
                        key, args.stream_mode)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % mock.port)
        os.rename(tmp, args.port_file)
    print("mock upstream listening on %s" % mock.base_url, flush=True)
    try:
        mock.httpd.serve_forever(poll_interval=0.1)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        mock.httpd.server_close()


if __name__ == "__main__":
    main()

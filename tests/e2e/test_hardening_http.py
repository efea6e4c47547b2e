"""The HTTP layer under faults found by load tests and an audit: replies
lost at shutdown, clients that never read their replies, and requests the
HTTP library itself refuses. Each test does the thing for real over raw
sockets and checks what went over the wire.

No test asserts how long anything took; the waits are polls with hang
guards.
"""
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import MEMORY_BOUNDS, host_cmdline_pids, unique_marker
from sbxserver import SbxServer
from test_server import recv_all

GUARD_S = 30


def _wait_for(pred, what, guard_s=GUARD_S):
    deadline = time.monotonic() + guard_s
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail("gave up waiting (%d s) for %s" % (guard_s, what))
        time.sleep(0.05)


def _request(method, path, body=b"", headers=()):
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    head = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1"]
    head += list(headers)
    if body or method in ("POST", "PUT"):
        head += ["Content-Type: application/json",
                 "Content-Length: %d" % len(body)]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _parse(data):
    """Splits data into HTTP/1.1 responses; returns a list of (status,
    headers dict with lower-case names, body bytes) and the bytes left
    over that do not make a complete response."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.split(b"\r\n")
        m = re.match(rb"HTTP/1\.[01] (\d{3}) ", lines[0] + b" ")
        if not m:
            break
        headers = {}
        for line in lines[1:]:
            k, colon, v = line.partition(b":")
            if not colon:
                return out, data
            headers[k.strip().lower().decode()] = v.strip().decode()
        if "content-length" in headers:
            n = int(headers["content-length"])
            if len(rest) < n:
                break
            body, data = rest[:n], rest[n:]
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size, crlf, rest = rest.partition(b"\r\n")
                if not crlf:
                    return out, data
                n = int(size.split(b";")[0], 16)
                if len(rest) < n + 2:
                    return out, data
                body += rest[:n]
                rest = rest[n + 2:]
                if n == 0:
                    break
            data = rest
        else:
            body, data = rest, b""
        out.append((int(m.group(1)), headers, body))
    return out, data


def _one_json_reply(data):
    """Asserts data is exactly one well-formed response with a JSON body;
    returns (status, headers, parsed body)."""
    replies, rest = _parse(data)
    assert len(replies) == 1 and not rest, \
        "want one complete response, got %d and %r: %r" % (
            len(replies), rest[:100], data[:400])
    status, headers, body = replies[0]
    assert headers.get("content-type", "").startswith("application/json"), \
        (status, headers, body[:200])
    return status, headers, json.loads(body)


def _check_error(status, headers, body, want_status):
    assert status == want_status, (status, body)
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] and body["error"]["message"], body


def _rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class _Busy:
    """Keeps every CPU busy with spinning processes while in the block."""

    def __enter__(self):
        n = (os.cpu_count() or 1) * 2
        self.procs = [subprocess.Popen([sys.executable, "-c",
                                        "while True: pass"])
                      for _ in range(n)]
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


# ---- 1. SIGTERM answers every accepted request ----

SHUTDOWN_ROUNDS = 8
RUNS = 6   # two run, the rest wait in the queue
EXECS = 4  # two stateful sandboxes, two execs each


def _shutdown_round():
    srv = SbxServer(extra_args=["--concurrency", "2", "--queue", "16",
                                "--warm", "0"])
    srv.__enter__()
    socks = []
    try:
        marker = unique_marker()
        boxes = []
        for _ in range(2):
            status, _, info = srv.post("/v1/sandboxes", {})
            assert status == 201, info
            boxes.append(info["id"])
        run = {"code": "import subprocess\n"
                       "subprocess.run(['sleep', '30.%s'])\n" % marker,
               "language": "python", "run_timeout": 60}
        for _ in range(RUNS):
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.sendall(_request("POST", "/run_code", run))
            socks.append(s)
        for i in range(EXECS):
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.sendall(_request("POST",
                               "/v1/sandboxes/%s/exec" % boxes[i % 2],
                               {"cmd": "sleep 30.%s" % marker,
                                "timeout_s": 60}))
            socks.append(s)

        def accepted():
            health = srv.get("/v1/health")[2]
            sleeps = len(host_cmdline_pids("30." + marker, "sleep"))
            return (health["running"] + health["queued"] == RUNS and
                    sleeps >= 2 + EXECS)
        _wait_for(accepted, "every run and exec to be under way")
        with _Busy():
            srv.proc.send_signal(signal.SIGTERM)
            got = [recv_all(s) for s in socks]
            srv.proc.wait(timeout=GUARD_S)
        lost = ["run" if i < RUNS else "exec"
                for i, data in enumerate(got) if not data]
        assert not lost, "connections closed with no reply: %s" % lost
        for data in got:
            status, _, body = _one_json_reply(data)
            assert "shutting down" in json.dumps(body), (status, body)
    finally:
        for s in socks:
            s.close()
        srv.stop()


def test_sigterm_replies_to_every_accepted_request():
    # The race this guards against lost a reply in about one shutdown in
    # seven with the CPUs busy, so several rounds.
    for _ in range(SHUTDOWN_ROUNDS):
        _shutdown_round()


def test_requests_during_shutdown_get_503_and_close():
    # A keep-alive client that sends a request while the server stops gets
    # an answer (503 shutting_down), never a silent close.
    srv = SbxServer(extra_args=["--concurrency", "1", "--warm", "0"])
    srv.__enter__()
    try:
        marker = unique_marker()
        run = {"code": "import subprocess\n"
                       "subprocess.run(['sleep', '30.%s'])\n" % marker,
               "language": "python", "run_timeout": 60}
        blocker = socket.create_connection(("127.0.0.1", srv.port))
        blocker.sendall(_request("POST", "/run_code", run))
        _wait_for(lambda: host_cmdline_pids("30." + marker, "sleep"),
                  "the run to start")
        idle = socket.create_connection(("127.0.0.1", srv.port))
        idle.sendall(_request("GET", "/v1/ping"))
        idle.settimeout(GUARD_S)
        first = idle.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)  # not a timing assertion: either outcome is checked
        try:
            idle.sendall(_request("GET", "/v1/ping"))
            data = recv_all(idle)
        except (BrokenPipeError, ConnectionResetError):
            data = b""
        if data:
            status, headers, body = _one_json_reply(data)
            _check_error(status, headers, body, 503)
            assert body["error"]["code"] == "shutting_down", body
            assert headers.get("connection") == "close", headers
        assert recv_all(blocker)
        srv.proc.wait(timeout=GUARD_S)
    finally:
        srv.stop()


# ---- 2. Clients that never read their replies ----

BUDGET_MIB = 32
READERS = 24        # each asks for a 4 MB reply and never reads it
REPLY_BYTES = 4_000_000


def test_unread_replies_are_bounded_by_the_budget():
    srv = SbxServer(extra_args=["--concurrency", "2", "--warm", "0",
                                "--reply-budget", "%dM" % BUDGET_MIB])
    srv.__enter__()
    socks = []
    try:
        big = {"code": "import sys\nsys.stdout.write('x' * %d)\n"
                       % REPLY_BYTES, "language": "python"}
        # A warm-up so the baseline includes what every run costs.
        status, _, body = srv.post("/run_code", big)
        assert status == 200 and body["status"] == "Success", body
        base = _rss_kib(srv.proc.pid)
        for _ in range(READERS):
            s = socket.socket()
            # A small receive buffer: the reply stays in the server.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", srv.port))
            s.sendall(_request("POST", "/run_code", big,
                               ["Connection: close"]))
            socks.append(s)
        peak = 0

        def all_done():
            nonlocal peak
            peak = max(peak, _rss_kib(srv.proc.pid))
            text = srv.get("/metrics")[2]
            m = re.search(r'(?m)^sbx_runs_total\{status="ok"\} (\d+)', text)
            return m and int(m.group(1)) >= READERS + 1
        _wait_for(all_done, "every run to finish", guard_s=120)
        peak = max(peak, _rss_kib(srv.proc.pid))
        # Without the budget the unread replies alone would hold about
        # READERS * 4 MB (twice that with a copy each).
        slack_mib = 24
        assert not MEMORY_BOUNDS or \
            (peak - base) / 1024 < BUDGET_MIB + slack_mib, \
            (base, peak)
        # The server keeps answering others, big replies included.
        assert srv.get("/v1/ping")[2] == "pong"
        status, _, body = srv.post("/run_code", big)
        assert status == 200 and body["status"] == "Success", body
        assert len(body["run_result"]["stdout"]) == REPLY_BYTES
        text = srv.get("/metrics")[2]
        m = re.search(r"(?m)^sbx_reply_budget_dropped_total (\d+)", text)
        assert m and int(m.group(1)) > 0, text
        # The dropped clients saw their connection close, never a reply
        # cut and then passed off as whole.
        for s in socks:
            data = recv_all(s)
            replies, rest = _parse(data)
            assert not replies or (len(replies) == 1 and not rest), \
                data[:200]
    finally:
        for s in socks:
            s.close()
        srv.stop()


# ---- 3. Requests the HTTP library refuses itself ----

def _exchange(srv, raw, guard_s=GUARD_S):
    s = socket.create_connection(("127.0.0.1", srv.port))
    try:
        try:
            s.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return recv_all(s, guard_s)
    finally:
        s.close()


HOST = b"Host: 127.0.0.1\r\n"
MALFORMED = {
    # name: (request, status, error code)
    "header-without-colon": (
        b"GET /v1/ping HTTP/1.1\r\n" + HOST + b"NoColonHere\r\n\r\n",
        400, "bad_request"),
    "bad-chunked-encoding": (
        b"POST /run_code HTTP/1.1\r\n" + HOST +
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        400, "bad_request"),
    "headers-too-large": (
        b"GET /v1/ping HTTP/1.1\r\n" + HOST + b"X-Big: " + b"a" * 70000 +
        b"\r\n\r\n", 431, "headers_too_large"),
    "http-version-2": (
        b"GET /v1/ping HTTP/2.0\r\n" + HOST + b"\r\n",
        505, "http_version_not_supported"),
    "http-version-0": (
        b"GET /v1/ping HTTP/0.9\r\n" + HOST + b"\r\n",
        505, "http_version_not_supported"),
    "uri-too-long": (
        b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
        414, "uri_too_long"),
    "content-length-negative": (
        b"POST /run_code HTTP/1.1\r\n" + HOST + b"Content-Length: -1\r\n\r\n",
        400, "bad_request"),
    "content-length-plus": (
        b"POST /run_code HTTP/1.1\r\n" + HOST + b"Content-Length: +5\r\n\r\n",
        400, "bad_request"),
    "content-length-2-64": (
        b"POST /run_code HTTP/1.1\r\n" + HOST +
        b"Content-Length: 18446744073709551616\r\n\r\n",
        413, "payload_too_large"),
    "content-length-huge": (
        b"POST /run_code HTTP/1.1\r\n" + HOST +
        b"Content-Length: 99999999999999999999999\r\n\r\n",
        413, "payload_too_large"),
}


@pytest.fixture(scope="module")
def quiet_srv():
    with SbxServer(extra_args=["--concurrency", "1", "--warm", "0"]) as s:
        yield s
        assert s.proc.poll() is None, "the server died:\n" + s.read_log()


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_library_errors_are_json_and_framed_once(quiet_srv, name):
    raw, want_status, want_code = MALFORMED[name]
    data = _exchange(quiet_srv, raw)
    # One status line, and the headers once: a second "HTTP/1.1" would be
    # a reply sent twice.
    assert data.count(b"HTTP/1.1 ") == 1, data[:600]
    status, headers, body = _one_json_reply(data)
    _check_error(status, headers, body, want_status)
    assert body["error"]["code"] == want_code, body
    assert headers.get("connection") == "close", headers
    assert quiet_srv.get("/v1/ping")[2] == "pong"


def test_request_line_without_spaces_is_closed_without_reply(quiet_srv):
    # Documented limit: libmicrohttpd drops a request line it cannot split
    # without logging anything the server could answer from.
    assert _exchange(quiet_srv, b"GARBAGE\r\n\r\n") == b""
    assert quiet_srv.get("/v1/ping")[2] == "pong"


def test_library_errors_with_other_clients_connected(quiet_srv):
    # With other connections open, the request that failed cannot always
    # be told apart (docs/architecture.md): the reply may then be the
    # library's own, but it is one well-formed reply with the right status,
    # an unreadable Content-Length is always answered in JSON, and the
    # other clients are never answered in its place.
    idle = []
    try:
        for _ in range(12):
            s = socket.create_connection(("127.0.0.1", quiet_srv.port))
            s.sendall(_request("GET", "/v1/ping"))
            s.settimeout(GUARD_S)
            first = s.recv(65536)
            assert first.startswith(b"HTTP/1.1 200"), first
            idle.append(s)
        for name in sorted(MALFORMED):
            raw, want_status, want_code = MALFORMED[name]
            data = _exchange(quiet_srv, raw)
            assert data.count(b"HTTP/1.1 ") == 1, (name, data[:600])
            replies, rest = _parse(data)
            assert len(replies) == 1 and not rest, (name, data[:600])
            status, headers, body = replies[0]
            assert status == want_status, (name, data[:300])
            if name.startswith("content-length"):
                assert headers["content-type"] == "application/json"
                assert json.loads(body)["error"]["code"] == want_code
        for s in idle:
            # Nothing arrived unasked, and the connection still serves.
            s.setblocking(False)
            try:
                stray = s.recv(65536)
            except BlockingIOError:
                stray = None
            assert stray is None, stray
            s.setblocking(True)
            s.sendall(_request("GET", "/v1/ping"))
            data = s.recv(65536)
            assert data.startswith(b"HTTP/1.1 200") and \
                data.endswith(b'"pong"'), data
    finally:
        for s in idle:
            s.close()


def test_unread_streamed_replies_are_bounded():
    # File reads stream a chunk at a time and wait for the client
    # (request_stream_when_drained): clients that stop reading hold about a
    # chunk each, not the file.
    srv = SbxServer(extra_args=["--concurrency", "2", "--warm", "0",
                                "--reply-budget", "%dM" % BUDGET_MIB])
    srv.__enter__()
    socks = []
    try:
        status, _, info = srv.post("/v1/sandboxes", {})
        assert status == 201, info
        base_path = "/v1/sandboxes/%s" % info["id"]
        status, _, res = srv.post(base_path + "/exec", {
            "cmd": "head -c 16000000 /dev/urandom > /work/big && "
                   "sha256sum /work/big"})
        assert status == 200 and res["status"] == "ok", res
        digest = res["stdout"].split()[0]
        base = _rss_kib(srv.proc.pid)
        for _ in range(READERS):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", srv.port))
            s.sendall(_request("GET", base_path + "/files/big",
                               headers=["Connection: close"]))
            socks.append(s)
        # Every stream has started (its status line came) and stalled.
        for s in socks:
            s.settimeout(GUARD_S)
            assert s.recv(16).startswith(b"HTTP/1.1 200"), "no reply"
        peak = 0
        for _ in range(40):
            peak = max(peak, _rss_kib(srv.proc.pid))
            time.sleep(0.05)
        assert not MEMORY_BOUNDS or \
            (peak - base) / 1024 < BUDGET_MIB + 24, (base, peak)
        # Others are served, the same file included, whole.
        assert srv.get("/v1/ping")[2] == "pong"
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(_request("GET", base_path + "/files/big",
                           headers=["Connection: close"]))
        replies, rest = _parse(recv_all(s))
        s.close()
        assert len(replies) == 1 and not rest
        assert hashlib.sha256(replies[0][2]).hexdigest() == digest
    finally:
        for s in socks:
            s.close()
        srv.stop()

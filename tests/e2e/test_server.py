"""The HTTP server under abuse: malformed and oversized requests, bad
tokens, a full queue, slow and vanishing clients, many queued runs. Each
error is a JSON body {"error": {"code", "message"}}, and the server keeps
serving afterwards.
"""
import json
import os
import re
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import SBX, host_cmdline_pids, unique_marker
from sbxserver import SbxServer

HELLO = {"code": "print('still here')", "language": "python"}


@pytest.fixture(scope="module")
def srv():
    with SbxServer(extra_args=["--concurrency", "2", "--max-body", "64K"]) \
            as s:
        yield s
        assert s.proc.poll() is None, "the server died:\n" + s.read_log()


def check_error(status, headers, body, want_status, want_code=None):
    assert status == want_status, (status, body)
    assert headers.get("Content-Type", "").startswith("application/json"), \
        headers
    assert isinstance(body, dict) and "error" in body, body
    # 422s also carry FastAPI's "detail" list, for SandboxFusion clients.
    assert set(body) <= {"error", "detail"}, body
    err = body["error"]
    assert set(err) == {"code", "message"}, err
    assert isinstance(err["code"], str) and err["code"], err
    assert isinstance(err["message"], str) and err["message"], err
    if want_code:
        assert err["code"] == want_code, err


def assert_serving(srv):
    status, _, resp = srv.post("/run_code", HELLO)
    assert status == 200 and resp["status"] == "Success", resp
    assert resp["run_result"]["stdout"] == "still here\n"


def raw_request(method, path, body=b"", headers=()):
    head = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1"]
    head += list(headers)
    if body or method == "POST":
        head.append("Content-Length: %d" % len(body))
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def recv_all(sock, guard_s=30):
    """Reads until the server closes; returns the bytes. guard_s is a hang
    guard, not a timing expectation."""
    sock.settimeout(guard_s)
    out = b""
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        except socket.timeout:
            pytest.fail("the server neither answered nor closed: %r"
                        % out[:200])
        if not data:
            break
        out += data
    return out


def read_response(sock, guard_s=30):
    """Reads one HTTP response (Content-Length framed) from a keep-alive
    connection; returns (status line, headers bytes, body)."""
    sock.settimeout(guard_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "closed before a response: %r" % data[:200]
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    assert m, head
    while len(body) < int(m.group(1)):
        chunk = sock.recv(65536)
        assert chunk, "closed mid-body"
        body += chunk
    return head.split(b"\r\n")[0], head, body


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError("no metric %s in:\n%s" % (name, text))


# 1. Malformed requests.

@pytest.mark.parametrize("body", [
    b"{bad", b"", b"[]", b'"code"', b"null", b"{\"code\": \"x\",",
    b"\xff\xfe{}", b"[" * 5000, b'{"code": 1e999, "language": "python"}',
], ids=["truncated", "empty", "array", "string", "null", "unterminated",
        "not-utf8", "deep", "huge-number"])
def test_malformed_json_is_422(srv, body):
    check_error(*srv.post("/run_code", body), 422, "unprocessable")


@pytest.mark.parametrize("fields", [
    {"code": 5},
    {"code": None},
    {"language": 5},
    {"files": []},
    {"files": {"a.txt": 5}},
    {"files": {"../escape": "aGk="}},
    {"run_timeout": "x"},
    {"run_timeout": -1},
    {"compile_timeout": [1]},
    {"memory_limit_MB": 1.5},
    {"memory_limit_MB": "1024"},
    {"memory_limit_MB": 1 << 40},
    {"stdin": 5},
    {"fetch_files": "out.txt"},
    {"fetch_files": [1]},
    {"fetch_files": ["../../etc/passwd"]},
], ids=lambda f: "-".join("%s=%r" % kv for kv in f.items())[:40])
def test_wrong_types_are_422(srv, fields):
    body = dict(HELLO, **fields)
    status, headers, resp = srv.post("/run_code", body)
    check_error(status, headers, resp, 422, "unprocessable")
    field = next(iter(fields))
    assert field in resp["error"]["message"], resp


@pytest.mark.parametrize("missing", ["code", "language"])
def test_missing_required_field_is_422(srv, missing):
    body = dict(HELLO)
    del body[missing]
    status, headers, resp = srv.post("/run_code", body)
    check_error(status, headers, resp, 422, "unprocessable")
    assert missing in resp["error"]["message"], resp
    # FastAPI's shape, which SandboxFusion clients may read.
    assert resp["detail"][0]["loc"] == ["body", missing], resp


def test_body_over_max_body_is_413(srv):
    body = json.dumps({"code": "#" * (100 << 10), "language": "python"})
    check_error(*srv.post("/run_code", body.encode()), 413,
                "payload_too_large")


def test_chunked_body_over_max_body_is_413(srv):
    body = json.dumps({"code": "#" * (100 << 10), "language": "python"})
    body = body.encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 4096]),
                                         body[i:i + 4096])
                      for i in range(0, len(body), 4096)) + b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", srv.port)) as s:
        s.sendall(b"POST /run_code HTTP/1.1\r\nHost: x\r\n"
                  b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                  + chunks)
        reply = recv_all(s)
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), reply[:300]
    assert json.loads(payload)["error"]["code"] == "payload_too_large"


def test_oversized_upload_is_refused_before_100_continue(srv):
    # A client that asks first (curl does, for big bodies) should hear
    # 413 at once rather than be told to send megabytes that are dropped.
    with socket.create_connection(("127.0.0.1", srv.port)) as s:
        s.sendall(b"POST /run_code HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\n"
                  b"Content-Length: 10000000\r\nExpect: 100-continue\r\n"
                  b"Connection: close\r\n\r\n")
        s.settimeout(10)  # hang guard; the answer should be immediate
        try:
            first = s.recv(65536)
        except socket.timeout:
            first = b"<nothing>"
    assert first.startswith(b"HTTP/1.1 413"), first[:200]


def test_unknown_route_is_404(srv):
    check_error(*srv.get("/no/such/route"), 404, "not_found")
    check_error(*srv.post("/run_code/", HELLO), 404, "not_found")


@pytest.mark.parametrize("method,path,allow", [
    ("GET", "/run_code", "POST"),
    ("PUT", "/run_code", "POST"),
    ("POST", "/v1/ping", "GET"),
    ("DELETE", "/v1/health", "GET"),
    ("POST", "/metrics", "GET"),
])
def test_wrong_method_is_405_with_allow(srv, method, path, allow):
    status, headers, body = srv.request(method, path,
                                        b"{}" if method != "GET" else None)
    check_error(status, headers, body, 405, "method_not_allowed")
    assert headers.get("Allow") == allow, headers


def test_server_survives_malformed_input(srv):
    # Runs after the tests above in this module: the same server still
    # runs code.
    assert_serving(srv)


# 2. Tokens and listening addresses.

def test_token():
    with SbxServer(token="s3cret-token") as srv:
        for hdrs in ({"Authorization": ""},
                     {"Authorization": "Bearer wrong"},
                     {"Authorization": "Bearer s3cret-toke"},
                     {"Authorization": "Bearer s3cret-tokenX"},
                     {"Authorization": "Basic s3cret-token"},
                     {"Authorization": "s3cret-token"}):
            for path in ("/run_code", "/v1/ping", "/v1/health"):
                body = HELLO if path == "/run_code" else None
                status, headers, resp = srv.request(
                    "POST" if body else "GET", path, body, headers=hdrs)
                check_error(status, headers, resp, 401, "unauthorized")
                # The reply never echoes what was sent.
                assert "s3cret" not in json.dumps(resp)
        status, _, resp = srv.post("/run_code", HELLO)  # sends the token
        assert status == 200 and resp["status"] == "Success", resp
        assert srv.get("/v1/ping")[2] == "pong"
        assert "s3cret" not in srv.read_log()


def _rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) >> 10
    raise AssertionError("no VmRSS: line")


# The token guards servers that listen beyond loopback, where anyone can
# connect: a client without it must not get the server to hold --max-body
# bytes per connection.

def test_unauthenticated_upload_is_refused_before_100_continue():
    with SbxServer(token="s3cret-token") as srv:
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(b"POST /run_code HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Length: 10000000\r\n"
                      b"Expect: 100-continue\r\n\r\n")
            s.settimeout(10)  # hang guard
            try:
                first = s.recv(65536)
            except socket.timeout:
                first = b"<nothing>"
        assert first.startswith(b"HTTP/1.1 401"), first[:200]


def test_unauthenticated_bodies_are_not_buffered():
    with SbxServer(token="s3cret-token") as srv:
        # Four 16 MiB bodies, all but their last byte sent.
        before = _rss_mib(srv.proc.pid)
        size = 16 << 20
        socks = []
        try:
            for _ in range(4):
                s = socket.create_connection(("127.0.0.1", srv.port))
                socks.append(s)
                s.settimeout(30)
                try:
                    s.sendall(b"POST /run_code HTTP/1.1\r\nHost: x\r\n"
                              b"Content-Length: %d\r\n\r\n" % size)
                    s.sendall(b"#" * (size - 1))
                except OSError:
                    pass  # refused early: what we want
            grown = _rss_mib(srv.proc.pid) - before
        finally:
            for s in socks:
                s.close()
        assert grown < 24, "the server holds %d MiB of unauthenticated " \
            "request bodies" % grown


@pytest.mark.parametrize("args,env_token", [
    (["--listen", "0.0.0.0:0"], None),
    (["--listen", "192.0.2.1:0"], None),
    (["--listen", "0.0.0.0:0", "--token", ""], None),
    (["--listen", "0.0.0.0:0"], ""),
], ids=["any", "public", "empty-token", "empty-SBX_TOKEN"])
def test_refuses_to_listen_beyond_loopback_without_token(args, env_token):
    env = {k: v for k, v in os.environ.items() if k != "SBX_TOKEN"}
    if env_token is not None:
        env["SBX_TOKEN"] = env_token
    cp = subprocess.run([SBX, "serve"] + args, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, env=env, timeout=30)
    assert cp.returncode != 0, cp.stdout
    assert b"token" in cp.stdout, cp.stdout


# 3. Full queue.

def test_queue_full_is_503_busy():
    with SbxServer(extra_args=["--concurrency", "1", "--queue", "1"]) as srv:
        slow = {"code": "import time\ntime.sleep(2)\nprint('done')",
                "language": "python"}
        with ThreadPoolExecutor(max_workers=3) as pool:
            results = list(pool.map(
                lambda _: srv.post("/run_code", slow, timeout=60), range(3)))
        busy = [r for r in results if r[0] == 503]
        ok = [r for r in results if r[0] == 200]
        assert busy, [r[0] for r in results]
        assert len(ok) >= 1 and len(busy) + len(ok) == 3, results
        for status, headers, body in busy:
            check_error(status, headers, body, 503, "busy")
            assert int(headers["Retry-After"]) >= 1, headers
        for _, _, body in ok:
            assert body["status"] == "Success", body
            assert body["run_result"]["stdout"] == "done\n", body
        # The queue drains: another run fits now.
        assert_serving(srv)


# 4. Slow and vanishing clients.

def test_slow_client_is_dropped_and_others_served():
    with SbxServer(extra_args=["--client-timeout", "2"]) as srv:
        stalled = []
        for i in range(10):
            s = socket.create_connection(("127.0.0.1", srv.port))
            # Half the headers, or headers and half the body.
            if i % 2:
                s.sendall(b"POST /run_code HTTP/1.1\r\nHost: x\r\nConte")
            else:
                s.sendall(b"POST /run_code HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Length: 100\r\n\r\n{\"code\"")
            stalled.append(s)
        try:
            assert_serving(srv)
            for s in stalled:
                # b"" (or a reset) once the server gives up; the 20 s
                # guard only catches a server that never does.
                s.settimeout(20)
                try:
                    data = s.recv(4096)
                    while data and not data.endswith(b"\r\n\r\n") and \
                            b"HTTP/" not in data:
                        data = s.recv(4096)
                except ConnectionResetError:
                    data = b""
                except socket.timeout:
                    pytest.fail("a stalled client was never dropped")
                # Either closed silently or with an error status, then
                # closed.
                if data:
                    assert data.startswith(b"HTTP/1.1 4"), data[:100]
                    assert recv_all(s, 20) is not None
            assert_serving(srv)
        finally:
            for s in stalled:
                s.close()


def _wait_for(pred, guard_s, what):
    deadline = time.monotonic() + guard_s
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    pytest.fail("gave up waiting (%d s) for %s" % (guard_s, what))


def _sleeper(marker, run_timeout=60):
    code = ("import subprocess\n"
            "subprocess.run(['sleep', '1000.%s'])\n" % marker)
    return json.dumps({"code": code, "language": "python",
                       "run_timeout": run_timeout}).encode()


def test_client_disconnect_kills_the_sandbox(srv):
    marker = unique_marker()
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(raw_request("POST", "/run_code", _sleeper(marker),
                          ["Content-Type: application/json"]))
    try:
        _wait_for(lambda: host_cmdline_pids("1000." + marker, "sleep"), 20,
                  "the sandbox's sleep to start")
    finally:
        s.close()
    _wait_for(lambda: not host_cmdline_pids("1000." + marker), 20,
              "the sandbox's sleep to be killed")
    status, _, text = srv.get("/metrics")
    assert status == 200
    assert metric(text, "sbx_client_disconnects_total") >= 1, text
    _wait_for(lambda: srv.get("/v1/health")[2]["running"] == 0, 20,
              "the sandbox to be reaped")
    assert_serving(srv)


def test_client_disconnect_while_queued_drops_the_run():
    with SbxServer(extra_args=["--concurrency", "1"]) as srv:
        blocker, queued = unique_marker(), unique_marker()
        b = socket.create_connection(("127.0.0.1", srv.port))
        b.sendall(raw_request("POST", "/run_code", _sleeper(blocker, 3)))
        _wait_for(lambda: host_cmdline_pids("1000." + blocker, "sleep"), 20,
                  "the blocking run to start")
        q = socket.create_connection(("127.0.0.1", srv.port))
        q.sendall(raw_request("POST", "/run_code", _sleeper(queued, 3)))
        _wait_for(lambda: srv.get("/v1/health")[2]["queued"] == 1, 20,
                  "the second run to queue")
        q.close()
        _wait_for(lambda: srv.get("/v1/health")[2]["queued"] == 0, 20,
                  "the closed client's run to leave the queue")
        # The blocker ends by its time limit; the dropped run never starts
        # (a run submitted after it completes meanwhile).
        after = {}

        def later():
            after["r"] = srv.post("/run_code", HELLO, timeout=60)
        t = threading.Thread(target=later)
        t.start()
        while t.is_alive():
            assert not host_cmdline_pids("1000." + queued), \
                "the disconnected client's run started anyway"
            time.sleep(0.05)
        t.join()
        assert after["r"][0] == 200 and after["r"][2]["status"] == "Success"
        status, _, reply = read_response(b)
        b.close()
        assert b" 200 " in status, status
        assert json.loads(reply)["run_result"]["status"] == \
            "TimeLimitExceeded", reply
        text = srv.get("/metrics")[2]
        assert metric(text, "sbx_client_disconnects_total") >= 1


def _cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_pipelined_request_then_half_close_does_not_spin(srv):
    # The client pipelines its next request while a run is going, then
    # shuts down its write side. The server must not busy-wait on that
    # socket meanwhile: the runner thread supervises every sandbox. (No
    # timing threshold: a spinning server burns about as much CPU as the
    # wait lasts, an idle one almost none.)
    body = json.dumps({"code": "import time\ntime.sleep(2)\nprint('ok')",
                       "language": "python"}).encode()
    s = socket.create_connection(("127.0.0.1", srv.port))
    try:
        s.sendall(raw_request("POST", "/run_code", body))
        _wait_for(lambda: srv.get("/v1/health")[2]["running"] == 1, 20,
                  "the run to start")
        s.sendall(raw_request("GET", "/v1/ping"))
        time.sleep(0.1)
        s.shutdown(socket.SHUT_WR)
        cpu0, t0 = _cpu_seconds(srv.proc.pid), time.monotonic()
        status, _, reply = read_response(s)
        used = _cpu_seconds(srv.proc.pid) - cpu0
        wall = time.monotonic() - t0
    finally:
        s.close()
    assert b" 200 " in status, (status, reply)
    assert used < 0.5 * wall + 0.2, \
        "the server used %.2f s of CPU while waiting %.2f s" % (used, wall)
    assert_serving(srv)


# 5. Health and metrics.

PROM_LINE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"'
    r'(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})? '
    r'(-?[0-9.eE+-]+|\+Inf|NaN)$')


def test_metrics_are_prometheus_text(srv):
    assert_serving(srv)
    status, headers, text = srv.get("/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain"), headers
    assert isinstance(text, str) and text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* ",
                            line), line
        else:
            assert PROM_LINE.match(line), line
    assert re.search(r'^sbx_requests_total\{route="/run_code",code="200"\} '
                     r'[1-9]', text, re.M), text
    assert re.search(r'^sbx_runs_total\{status="ok"\} [1-9]', text,
                     re.M), text
    assert metric(text, "sbx_sandboxes_running") >= 0
    assert "# TYPE sbx_requests_total counter" in text
    assert "# TYPE sbx_sandboxes_running gauge" in text


def test_health(srv):
    status, headers, h = srv.get("/v1/health")
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert h["status"] == "ok"
    assert isinstance(h["version"], str) and h["version"]
    assert isinstance(h["uptime_s"], int) and h["uptime_s"] >= 0
    assert h["capacity"] == {"sandboxes": 2, "queue": 2048}, h
    assert isinstance(h["running"], int) and isinstance(h["queued"], int)
    assert "python" in h["languages"], h
    assert all(isinstance(l, str) for l in h["languages"])


# 6. Many queued runs, few threads.

def _threads(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads: line")


def test_queued_runs_do_not_take_threads():
    # 300 runs through 2 slots. Each sleeps 0.1 s (a sandboxed python
    # costs about as much again), so this takes half a minute while the
    # queue holds hundreds.
    n = 300
    body = json.dumps({"code": "import time; time.sleep(0.1)",
                       "language": "python"}).encode()
    request = raw_request("POST", "/run_code", body,
                          ["Content-Type: application/json",
                           "Connection: close"])
    with SbxServer(extra_args=["--concurrency", "2", "--queue", "2000"]) \
            as srv:
        pid = srv.proc.pid
        baseline = _threads(pid)
        socks = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.sendall(request)
            socks.append(s)
        replies = [None] * n

        def read(i):
            replies[i] = recv_all(socks[i], 300)
            socks[i].close()

        readers = [threading.Thread(target=read, args=(i,))
                   for i in range(n)]
        for t in readers:
            t.start()
        most, most_queued = baseline, 0
        while any(t.is_alive() for t in readers):
            most = max(most, _threads(pid))
            h = srv.get("/v1/health")[2]
            most_queued = max(most_queued, h["queued"])
            time.sleep(0.2)
        for t in readers:
            t.join()
        assert most_queued >= 100, most_queued  # the check saw a queue
        print("server threads: %d idle, at most %d with %d queued"
              % (baseline, most, most_queued))
        assert most < 50, (baseline, most)
        for i, r in enumerate(replies):
            head, _, payload = r.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), (i, r[:300])
            assert json.loads(payload)["status"] == "Success", (i, payload)

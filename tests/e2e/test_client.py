"""End-to-end tests of the Python client (clients/python/sbx).

A real `sbx serve` (module-scoped) answers the client; a few transport
cases (chunked replies, close-delimited bodies, keep-alive counting) use a
tiny canned HTTP server in a thread, since sbx itself never sends those.
"""
import asyncio
import base64
import json
import os
import socket
import socketserver
import sys
import threading
import time

import pytest

from sbxserver import SbxServer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                "clients", "python"))
import sbx  # noqa: E402
from sbx import (AsyncClient, Busy, Client, Limits, NotFound,  # noqa: E402
                 SbxConnectionError, SbxError, ServerError, TestCase,
                 Unauthorized, Unprocessable)


@pytest.fixture(scope="module")
def server():
    with SbxServer() as srv:
        yield srv


@pytest.fixture
def client(server):
    with Client(server.url, token="") as c:
        yield c


def arun(coro):
    return asyncio.run(coro)


# ---- basics ----

def test_ping_and_health(client):
    assert client.ping() is True
    h = client.health()
    assert h.ok and h.status == "ok"
    assert h.version
    assert "python" in h.languages
    assert h.capacity.sandboxes and h.capacity.sandboxes >= 1
    assert h.capacity.queue is not None
    assert h.running is not None and h.queued is not None
    assert h.raw["status"] == "ok"


def test_env_defaults(server, monkeypatch):
    monkeypatch.setenv("SBX_URL", server.url)
    monkeypatch.delenv("SBX_TOKEN", raising=False)
    with Client() as c:
        assert c.base_url == server.url
        assert c.ping()


# ---- /run_code ----

def test_run_code_success(client):
    r = client.run_code("print('hello')")
    assert r.status == "Success" and r.ok, r
    assert r.message == ""
    assert r.compile_result is None
    assert r.run_result.status == "Finished"
    assert r.run_result.return_code == 0
    assert r.run_result.stdout == "hello\n" and r.stdout == "hello\n"
    assert r.run_result.execution_time is not None
    assert r.files == {}
    assert r.raw["executor_pod_name"] is None


def test_run_code_failed(client):
    r = client.run_code("import sys; print('err', file=sys.stderr); sys.exit(3)")
    assert r.status == "Failed" and not r.ok, r
    assert r.run_result.status == "Finished"
    assert r.run_result.return_code == 3
    assert r.stderr == "err\n"


def test_run_code_compile_error(client):
    r = client.run_code("int main(void) { return 0 }", "c")
    assert r.status == "Failed", r
    assert r.compile_result is not None
    assert r.compile_result.return_code != 0
    assert "error" in r.compile_result.stderr
    assert r.run_result is None


def test_run_code_compiled_language(client):
    r = client.run_code('#include <stdio.h>\nint main(void){puts("c!");}', "c",
                        compile_timeout=30)
    assert r.ok, r
    assert r.compile_result.status == "Finished"
    assert r.stdout == "c!\n"


def test_run_code_time_limit(client):
    t0 = time.monotonic()
    r = client.run_code("import time; time.sleep(30)", run_timeout=0.5)
    assert time.monotonic() - t0 < 15
    assert r.status == "Failed", r
    assert r.run_result.status == "TimeLimitExceeded"
    assert r.run_result.return_code is None


def test_run_code_stdin(client):
    r = client.run_code("import sys; print(sys.stdin.read().upper(), end='')",
                        stdin="one\ntwo\n")
    assert r.ok, r
    assert r.stdout == "ONE\nTWO\n"


def test_run_code_files_round_trip(client):
    blob = bytes(range(256)) * 4
    code = ("import shutil\n"
            "data = open('in/blob.bin', 'rb').read()\n"
            "open('out.bin', 'wb').write(data[::-1])\n"
            "print(open('note.txt', encoding='utf-8').read())\n")
    r = client.run_code(code, files={"in/blob.bin": blob,
                                     "note.txt": "héllo ✓"},
                        fetch_files=["out.bin", "in/blob.bin"])
    assert r.ok, r
    assert r.stdout == "héllo ✓\n"
    assert isinstance(r.files["out.bin"], bytes)
    assert r.files["out.bin"] == blob[::-1]
    assert r.files["in/blob.bin"] == blob
    assert r.raw["files"]["out.bin"] == base64.b64encode(blob[::-1]).decode()


# ---- errors ----

def test_unprocessable(client):
    with pytest.raises(Unprocessable) as ei:
        client.run_code("print(1)", "cobol")
    e = ei.value
    assert isinstance(e, SbxError) and isinstance(e, sbx.BadRequest)
    assert e.status == 422
    assert e.code == "unprocessable"
    assert "cobol" in e.message
    assert isinstance(e.detail, list) and e.detail
    assert "422" in str(e) and "cobol" in str(e)

    with pytest.raises(Unprocessable) as ei:
        client.request("POST", "/run_code", {"code": 1, "language": "python"})
    assert ei.value.detail[0]["loc"] == ["body", "code"]


def test_not_found(client):
    with pytest.raises(NotFound) as ei:
        client.request("GET", "/no/such/route")
    assert ei.value.status == 404
    assert ei.value.code == "not_found"
    assert "/no/such/route" in ei.value.message


def test_connection_error():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with Client("http://127.0.0.1:%d" % port, timeout=5) as c:
        assert c.ping() is False
        with pytest.raises(SbxConnectionError) as ei:
            c.health()
        assert ei.value.status is None
        assert str(port) in str(ei.value)

    async def go():
        async with AsyncClient("http://127.0.0.1:%d" % port, timeout=5) as ac:
            assert await ac.ping() is False
            with pytest.raises(SbxConnectionError):
                await ac.health()
    arun(go())


def test_token():
    with SbxServer(token="s3cret") as srv:
        with Client(srv.url, token="") as c:
            with pytest.raises(Unauthorized) as ei:
                c.run_code("print(1)")
            assert ei.value.status == 401
            assert ei.value.code == "unauthorized"
            assert ei.value.message
        with Client(srv.url, token="wrong") as c:
            with pytest.raises(Unauthorized):
                c.health()
        with Client(srv.url, token="s3cret") as c:
            assert c.run_code("print(6 * 7)").stdout == "42\n"
            assert c.health().ok

        async def go():
            async with AsyncClient(srv.url, token="") as ac:
                with pytest.raises(Unauthorized):
                    await ac.run_code("print(1)")
            async with AsyncClient(srv.url, token="s3cret") as ac:
                return await ac.run_code("print(7)")
        assert arun(go()).stdout == "7\n"

        os.environ["SBX_TOKEN"] = "s3cret"
        try:
            with Client(srv.url) as c:
                assert c.run_code("print(8)").stdout == "8\n"
        finally:
            del os.environ["SBX_TOKEN"]


def test_busy_carries_retry_after():
    with SbxServer(extra_args=["--concurrency", "1", "--queue", "0"]) as srv:
        with Client(srv.url, token="") as c:
            done = []
            t = threading.Thread(target=lambda: done.append(
                c.run_code("import time; time.sleep(3)")))
            t.start()
            try:
                deadline = time.monotonic() + 10
                while c.health().running < 1:
                    assert time.monotonic() < deadline, "run never started"
                    time.sleep(0.05)
                with pytest.raises(Busy) as ei:
                    c.run_code("print(1)")
            finally:
                t.join()
            assert ei.value.status == 503
            assert ei.value.code == "busy"
            assert ei.value.retry_after is not None and ei.value.retry_after > 0
            assert done and done[0].ok


# ---- keep-alive ----

def test_sync_keep_alive_reuses_one_connection(client):
    client.close()
    client.ping()
    assert len(client._idle) == 1
    sock = client._idle[0].sock
    for _ in range(3):
        client.run_code("pass")
        client.health()
    assert len(client._idle) == 1 and client._idle[0].sock is sock


def test_idle_connection_closed_by_server_is_replaced():
    with SbxServer(extra_args=["--client-timeout", "1"]) as srv:
        with Client(srv.url, token="") as c:
            assert c.ping()
            time.sleep(2.5)  # the server drops the idle connection
            assert c.run_code("print(1)").stdout == "1\n"

        async def go():
            async with AsyncClient(srv.url, token="") as ac:
                assert await ac.ping()
                await asyncio.sleep(2.5)
                return await ac.run_code("print(2)")
        assert arun(go()).stdout == "2\n"


def test_sync_client_threads(client):
    out = {}

    def work(i):
        out[i] = client.run_code("print(%d)" % i).stdout

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == {i: "%d\n" % i for i in range(8)}


# ---- asyncio ----

def test_async_gather_16(server):
    async def go():
        async with AsyncClient(server.url, token="", max_connections=8) as ac:
            assert await ac.ping()
            results = await asyncio.gather(*[
                ac.run_code("import sys; print(int(sys.stdin.read()) ** 2)",
                            stdin=str(i)) for i in range(16)])
            assert len(ac._idle) <= 8
            return results
    results = arun(go())
    for i, r in enumerate(results):
        assert r.ok, r
        assert r.stdout == "%d\n" % (i * i)


def test_async_errors_and_files(server):
    async def go():
        async with AsyncClient(server.url, token="") as ac:
            h = await ac.health()
            assert h.ok
            with pytest.raises(Unprocessable) as ei:
                await ac.run_code("x", "cobol")
            assert ei.value.code == "unprocessable"
            with pytest.raises(NotFound):
                await ac.request("GET", "/nope")
            r = await ac.run_code("open('o', 'wb').write(open('i', 'rb').read() * 2)",
                                  files={"i": b"\x00\xfe"}, fetch_files=["o"])
            assert r.files == {"o": b"\x00\xfe\x00\xfe"}
            r = await ac.run_code("import time; time.sleep(30)", run_timeout=0.5)
            assert r.run_result.status == "TimeLimitExceeded"
    arun(go())


# The first loop ends with a connection still open, so (in dev mode) asyncio
# warns about the transport it can no longer close: expected here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_async_client_survives_a_new_loop(server):
    ac = AsyncClient(server.url, token="")
    assert arun(ac.ping())
    assert arun(ac.ping())  # a second asyncio.run: a new loop
    assert arun(ac.run_code("print(3)")).stdout == "3\n"
    arun(ac.aclose())


def test_async_cancel_does_not_poison_pool(server):
    async def go():
        async with AsyncClient(server.url, token="", max_connections=1) as ac:
            task = asyncio.ensure_future(ac.run_code("import time; time.sleep(5)"))
            await asyncio.sleep(0.5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return await ac.run_code("print('after')")
    assert arun(go()).stdout == "after\n"


# ---- native /v1/run ----

@pytest.fixture(scope="module")
def native(server):
    status, _, body = server.post("/v1/run", {"language": "python",
                                              "source": "pass"})
    if status == 501:
        reason = "POST /v1/run not implemented in this build: %s" % (body,)
        print(reason)
        pytest.skip(reason)
    return server


def test_run_native(native):
    with Client(native.url, token="") as c:
        r = c.run("python", "import sys; print(sys.argv[1:], input())",
                  args=["a", "b"], stdin="in\n")
        assert r.status == "ok" and r.ok, r
        assert r.compile is None
        assert r.run.exit_code == 0 and r.run.ok
        assert r.stdout == "['a', 'b'] in\n"
        assert r.accepted is None and r.tests == []
        assert r.wall_ms is not None and r.peak_memory_bytes

        r = c.run("python", "import sys; sys.exit(4)")
        assert r.status == "nonzero_exit" and not r.ok
        assert r.run.exit_code == 4

        r = c.run("python", "while True: pass", limits=Limits(wall_ms=500))
        assert r.status == "time_limit", r

        r = c.run("python", files={"main.py": "import helper; helper.go()",
                                   "helper.py": "def go(): print('hi')"},
                  entry="main.py")
        assert r.stdout == "hi\n", r

        with pytest.raises(ValueError):
            c.run("python")
        with pytest.raises(Unprocessable):
            c.run("cobol", "x")


def test_run_native_tests(native):
    src = ('#include <stdio.h>\n'
           'int main(void) { int a, b; scanf("%d %d", &a, &b);'
           ' printf("%d\\n", a + b); }')
    with Client(native.url, token="") as c:
        r = c.run("c", src, tests=[TestCase("1 2\n", "3\n"),
                                   {"stdin": "5 5\n", "expected_stdout": "10\n"}])
        assert r.accepted is True and r.ok, r
        assert r.compile is not None and r.compile.ok
        assert [t.passed for t in r.tests] == [True, True]
        assert [t.stdout for t in r.tests] == ["3\n", "10\n"]

        r = c.run("c", src, tests=[TestCase("1 2\n", "3\n"),
                                   TestCase("2 2\n", "5\n")])
        assert r.accepted is False and not r.ok, r
        assert [t.verdict for t in r.tests] == ["accepted", "wrong_answer"]

        r = c.run("c", "int main(void){return 0}", tests=[TestCase("", "")])
        assert r.compile is not None and r.compile.status != "ok", r
        assert r.accepted is not True

    async def go():
        async with AsyncClient(native.url, token="") as ac:
            return await asyncio.gather(*[
                ac.run("python", "print(int(input()) + 1)",
                       tests=[TestCase("%d\n" % i, "%d\n" % (i + 1))])
                for i in range(6)])
    assert all(r.accepted for r in arun(go()))


# ---- transport details, against a canned server ----

class _Canned(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _CannedHandler)
        self.connections = 0
        self.url = "http://127.0.0.1:%d" % self.server_address[1]


class _CannedHandler(socketserver.StreamRequestHandler):
    def handle(self):
        self.server.connections += 1
        while True:
            line = self.rfile.readline()
            if not line:
                return
            path = line.split()[1].decode()
            length = 0
            while True:
                h = self.rfile.readline()
                if h in (b"\r\n", b""):
                    break
                name, _, value = h.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            self.rfile.read(length)
            if not self.reply(path):
                return

    def reply(self, path):
        """Writes the reply for path; False closes the connection."""
        w = self.wfile.write
        if path == "/v1/ping":  # chunked, with a trailer
            w(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n"
              b"2\r\n\"p\r\n3;ext=1\r\nong\r\n1\r\n\"\r\n0\r\nX-T: 1\r\n\r\n")
            return True
        if path == "/v1/health":  # 100 Continue first, then a sized body
            body = json.dumps({"status": "ok", "version": "canned",
                               "extra": 1}).encode()
            w(b"HTTP/1.1 100 Continue\r\n\r\n"
              b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            return True
        if path == "/close":  # body delimited by the close
            w(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
              b"Connection: close\r\n\r\n{\"closed\": true}")
            return False
        if path == "/busy":
            body = b'{"error":{"code":"busy","message":"try later"}}'
            w(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\n"
              b"Content-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            return True
        if path == "/text500":
            w(b"HTTP/1.1 500 Oops\r\nContent-Type: text/plain\r\n"
              b"Content-Length: 4\r\n\r\noops")
            return True
        if path == "/hang":
            time.sleep(3)
            return False
        w(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        return True


@pytest.fixture
def canned():
    srv = _Canned()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _check_canned(results):
    ping, health, closed, busy, oops = results
    assert ping is True
    assert health.ok and health.version == "canned"
    assert health.raw["extra"] == 1 and health.languages == []
    assert closed == {"closed": True}
    assert isinstance(busy, Busy) and busy.retry_after == 7.0
    assert busy.code == "busy" and busy.message == "try later"
    assert isinstance(oops, ServerError) and oops.status == 500
    assert oops.message == "oops" and oops.code == "http_500"


def test_canned_sync(canned):
    with Client(canned.url, token="", timeout=1) as c:
        res = [c.ping(), c.health(), c.request("GET", "/close")]
        for path in ("/busy", "/text500"):
            try:
                c.request("GET", path)
            except SbxError as e:
                res.append(e)
        _check_canned(res)
        # ping+health on one connection; /close ends it; busy+500 on a new one
        assert canned.connections == 2
        with pytest.raises(sbx.SbxTimeout):
            c.request("GET", "/hang")


def test_canned_async(canned):
    async def go():
        async with AsyncClient(canned.url, token="", timeout=1) as ac:
            res = [await ac.ping(), await ac.health(),
                   await ac.request("GET", "/close")]
            for path in ("/busy", "/text500"):
                try:
                    await ac.request("GET", path)
                except SbxError as e:
                    res.append(e)
            _check_canned(res)
            assert canned.connections == 2
            with pytest.raises(sbx.SbxTimeout):
                await ac.request("GET", "/hang")
    arun(go())

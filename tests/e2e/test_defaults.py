"""SandboxFusion's clients on a default `sbx serve`, sent what they send.

tinker-cookbook asks run_timeout = 7 * n_tests + 5 seconds, puts a whole
test set in one body (tens of MB) and never sends memory_limit_MB; verl
sends one request per test, waits compile + run + 10 s for the reply and
scores anything else than a reply as an API error. Each test here is one
of those, on the server's defaults, and would have failed before them
(422, 413, an out-of-memory kill, API errors behind a queue of one slot
per core). The token tests cover clients that can only be given a URL.
"""
import base64
import concurrent.futures
import json
import socket
import urllib.error
import urllib.request

import pytest

from sbxserver import SbxServer

MiB = 1 << 20
TOKEN = "s3cr3t-Tok3n-for-h8"


@pytest.fixture(scope="module")
def srv():
    with SbxServer() as s:
        yield s


def host_memory():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def vm_hwm(pid):
    """The server's peak resident memory so far, in bytes."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def tinker_payload(code, files, timeout):
    """tinker_cookbook/sandbox/sandboxfusion.py's request, field for field."""
    return {
        "code": code,
        "language": "python",
        "run_timeout": int(timeout),
        "files": {k: base64.b64encode(v.encode("utf-8")).decode("utf-8")
                  for k, v in files.items()},
    }


def test_tinker_timeout_for_many_tests_is_taken(srv):
    """200 tests ask 1405 s; the default cap is an hour. Above the cap a
    timeout is lowered to it, not refused: SandboxFusion takes any value."""
    for timeout in (7 * 200 + 5, 10 ** 7):
        body = tinker_payload("print('ok')", {}, timeout)
        body["compile_timeout"] = timeout
        status, _, reply = srv.post("/run_code", body)
        assert status == 200, reply
        assert reply["status"] == "Success", reply
        assert reply["run_result"]["stdout"] == "ok\n", reply
        # SandboxFusion's reply, nothing added.
        assert set(reply) == {"status", "message", "compile_result",
                              "run_result", "executor_pod_name", "files"}, \
            reply


def test_native_routes_still_refuse_above_their_maximum(srv):
    status, _, reply = srv.post("/v1/run", {
        "language": "python", "source": "print(1)",
        "limits": {"wall_ms": 2 * 3600 * 1000}})
    assert status == 422, reply
    assert "wall_ms" in json.dumps(reply), reply


def test_tinker_whole_test_set_in_one_body(srv):
    """A 36 MB body (a test set of 27 MB, base64) runs, and parsing it
    does not hold many copies of it in the server."""
    cases = json.dumps({"inputs": ["x" * 1000] * 27000,
                        "outputs": ["y"] * 27000})
    code = ("import json\n"
            "d = json.load(open('test_cases.txt'))\n"
            "print(len(d['inputs']), len(open('code.py').read()))\n")
    body = json.dumps(tinker_payload(
        code, {"test_cases.txt": cases, "code.py": "print(1)\n"},
        7 * 27000 + 5)).encode()
    assert len(body) > 36 * 1000 * 1000
    before = vm_hwm(srv.proc.pid)
    status, _, reply = srv.post("/run_code", body, timeout=300)
    assert status == 200, reply if isinstance(reply, str) else \
        json.dumps(reply)[:500]
    assert reply["status"] == "Success", json.dumps(reply)[:2000]
    assert reply["run_result"]["stdout"] == "27000 9\n", reply
    grown = vm_hwm(srv.proc.pid) - before
    print("body %d MiB, server peak grew by %d MiB"
          % (len(body) >> 20, grown >> 20))


def test_program_of_700mb_runs_without_a_memory_limit(srv):
    """tinker never sends memory_limit_MB; SandboxFusion then applies no
    limit. The default is a share of the host, enough for this."""
    if host_memory() < 2 * 1024 * MiB:
        pytest.skip("the host has less than 2 GiB: the default is smaller")
    code = ("b = bytearray(700 * 1024 * 1024)\n"
            "for i in range(0, len(b), 4096): b[i] = 1\n"
            "print(sum(b[::4096]))\n")
    status, _, reply = srv.post("/run_code", tinker_payload(code, {}, 60),
                                timeout=120)
    assert status == 200, reply
    assert reply["status"] == "Success", reply
    assert reply["run_result"]["stdout"] == "%d\n" % (700 * 256), reply


def verl_call(url, run_timeout):
    """verl/utils/reward_score/sandbox_fusion/utils.py: one request per
    test, memory_limit_MB 1024, and a client timeout of compile + run +
    10 s. Returns the reply, or the error verl would score as one."""
    payload = json.dumps({
        "compile_timeout": run_timeout, "run_timeout": run_timeout,
        "code": "import time\ntime.sleep(3600)\n", "stdin": "",
        "memory_limit_MB": 1024, "language": "python", "files": {},
        "fetch_files": [],
    }).encode()
    req = urllib.request.Request(url, data=payload, method="POST", headers={
        "Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req,
                                    timeout=2 * run_timeout + 10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read()[:200]
    except (OSError, socket.timeout) as e:
        return None, repr(e)


def test_verl_100_concurrent_timeouts_all_come_back_as_timeouts(srv):
    """verl's own load: 100 runs at once, each hitting its time limit.
    Every one must come back as TimeLimitExceeded within verl's client
    timeout, none as an API error or a 503."""
    n, run_timeout = 100, 2
    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        replies = list(ex.map(lambda _: verl_call(srv.url + "/run_code",
                                                  run_timeout), range(n)))
    bad = [r for r in replies if r[0] != 200 or
           r[1]["run_result"]["status"] != "TimeLimitExceeded"]
    assert not bad, "%d of %d: %r" % (len(bad), n, bad[:3])


# ---- the token as a path prefix ----

def raw_request(url, method="GET", body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


RUN = json.dumps({"code": "print(1)", "language": "python"}).encode()
NATIVE = json.dumps({"language": "python", "source": "print(1)"}).encode()
# Every route of the table (the sandboxes' prefix by one of its own).
ROUTES = [
    ("POST", "/run_code", RUN),
    ("POST", "/v1/run", NATIVE),
    ("GET", "/v1/sandboxes", None),
    ("POST", "/v1/sandboxes", b"{}"),
    ("GET", "/v1/sandboxes/sb-none", None),
    ("GET", "/v1/ping", None),
    ("GET", "/v1/health", None),
    ("GET", "/metrics", None),
]


@pytest.fixture(scope="module")
def tsrv():
    with SbxServer(token=TOKEN, extra_args=["--verbose"]) as s:
        yield s


@pytest.mark.parametrize("method,path,body", ROUTES,
                         ids=[m + p for m, p, _ in ROUTES])
def test_token_as_path_prefix(tsrv, method, path, body):
    status, reply = raw_request(tsrv.url + "/t/" + TOKEN + path, method,
                                body)
    assert status != 401, reply
    if path == "/v1/sandboxes/sb-none":
        assert status == 404, reply
    else:
        assert status in (200, 201), reply
    if method == "POST" and path == "/v1/sandboxes":
        sid = json.loads(reply)["id"]
        status, reply = raw_request(
            tsrv.url + "/t/" + TOKEN + "/v1/sandboxes/" + sid, "DELETE")
        assert status in (200, 204), reply


@pytest.mark.parametrize("prefix", ["/t/wrong", "/t/" + TOKEN[:-1],
                                    "/t/" + TOKEN + "x", "/t/", ""])
@pytest.mark.parametrize("method,path,body", ROUTES,
                         ids=[m + p for m, p, _ in ROUTES])
def test_wrong_or_no_token_is_401(tsrv, prefix, method, path, body):
    """Probes answer without a token, but a wrong one is refused there
    too."""
    if not prefix and path in ("/v1/ping", "/v1/health"):
        pytest.skip("a probe without a token: the test below")
    status, reply = raw_request(tsrv.url + prefix + path, method, body)
    assert status == 401, reply
    assert json.loads(reply)["error"]["code"] == "unauthorized", reply


def test_bearer_header_still_works(tsrv):
    status, reply = raw_request(
        tsrv.url + "/run_code", "POST", RUN,
        {"Authorization": "Bearer " + TOKEN})
    assert status == 200 and json.loads(reply)["status"] == "Success", reply
    status, reply = raw_request(
        tsrv.url + "/run_code", "POST", RUN,
        {"Authorization": "Bearer " + TOKEN + "x"})
    assert status == 401, reply


def test_probes_answer_without_a_token_and_say_nothing_more(tsrv):
    status, reply = raw_request(tsrv.url + "/v1/ping")
    assert status == 200 and json.loads(reply) == "pong", reply
    status, reply = raw_request(tsrv.url + "/v1/health")
    assert status == 200 and json.loads(reply) == {"status": "ok"}, reply
    for path in ("/v1/ping", "/v1/health"):
        status, reply = raw_request(tsrv.url + path, headers={
            "Authorization": "Bearer wrong"})
        assert status == 401, reply
    # With the token, the whole health.
    status, reply = raw_request(tsrv.url + "/t/" + TOKEN + "/v1/health")
    assert status == 200 and "capacity" in json.loads(reply), reply


def test_token_never_in_logs_or_metrics(tsrv):
    raw_request(tsrv.url + "/t/" + TOKEN + "/run_code", "POST", RUN)
    raw_request(tsrv.url + "/t/" + TOKEN + "/nowhere")
    raw_request(tsrv.url + "/t/" + TOKEN + "/v1/sandboxes/sb-x/files/a",
                "PUT", b"x")
    status, metrics = raw_request(tsrv.url + "/t/" + TOKEN + "/metrics")
    assert status == 200, metrics
    assert b"/run_code" in metrics, metrics[:500]
    assert TOKEN.encode() not in metrics
    assert TOKEN not in tsrv.read_log()
    status, reply = raw_request(tsrv.url + "/t/" + TOKEN + "/nowhere")
    assert status == 404 and TOKEN.encode() not in reply, reply


def test_token_never_in_the_http_librarys_logs(tsrv):
    """The HTTP library logs the URL of a request it refuses itself (a bad
    header line, bad chunked encoding, a header too large) or of a client
    that leaves mid-body; a token in the path is starred out there too."""
    bad = [b"GET /t/%s/v1/health HTTP/1.1\r\nHost: x\r\nBad header\r\n\r\n",
           b"POST /t/%s/run_code HTTP/1.1\r\nHost: x\r\n"
           b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
           b"GET /t/%s/v1/health HTTP/1.1\r\nHost: x\r\nX: " +
           b"a" * 70000 + b"\r\n\r\n",
           b"POST /t/%s/run_code HTTP/1.1\r\nHost: x\r\n"
           b"Content-Length: 10\r\n\r\nab"]
    for req in bad:
        with socket.create_connection(("127.0.0.1", tsrv.port),
                                      timeout=30) as s:
            s.sendall(req.replace(b"%s", TOKEN.encode()))
            s.settimeout(2)
            try:
                s.recv(100)
            except OSError:
                pass
    # A request after them is logged once they are (one thread order).
    raw_request(tsrv.url + "/v1/ping")
    log = tsrv.read_log()
    assert "/t/***/" in log, log[-2000:]
    assert TOKEN not in log


@pytest.mark.parametrize("tail", [b'"', b'}}', b', "code": "x"}'],
                         ids=["unterminated", "extra", "duplicate"])
def test_large_malformed_body_is_422(srv, tail):
    """Bodies past a MiB are parsed as they are read; a bad one is still
    refused as JSON, with the same words."""
    body = (b'{"language": "python", "code": "x", "stdin": "'
            + b"a" * (3 * MiB) + b'"' + tail)
    if tail == b'"':
        body = body[:-2]
    status, _, reply = srv.post("/run_code", body)
    assert status == 422, reply
    assert "not valid JSON" in reply["error"]["message"], reply

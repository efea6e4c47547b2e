"""Start a real `sbx serve` on an ephemeral loopback port for a test.

    with SbxServer(extra_args=["--concurrency", "4"]) as srv:
        srv.url                 # "http://127.0.0.1:PORT"
        srv.post("/run_code", {...})  -> (status, headers, parsed JSON or text)

The server stops (SIGTERM, then SIGKILL) when the block ends; its log is
kept in srv.log_path for failure messages.
"""
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

SBX = os.environ.get("SBX", os.path.join(os.path.dirname(__file__), "..", "..", "build", "sbx"))


class SbxServer:
    def __init__(self, extra_args=(), env=None, token=None):
        self.extra_args = list(extra_args)
        self.env = dict(os.environ, **(env or {}))
        self.token = token
        self.proc = None
        self.url = None

    def __enter__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="sbx-srv-")
        port_file = os.path.join(self.dir.name, "port")
        self.log_path = os.path.join(self.dir.name, "serve.log")
        # Its own trace database, unless the test chose one.
        self.env.setdefault("SBX_STATE_DIR",
                            os.path.join(self.dir.name, "state"))
        args = [SBX, "serve", "--listen", "127.0.0.1:0", "--port-file", port_file]
        if self.token:
            args += ["--token", self.token]
        args += self.extra_args
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("sbx serve exited: " + self.read_log())
            try:
                with open(port_file) as f:
                    port = int(f.read().strip())
                break
            except (OSError, ValueError):
                time.sleep(0.02)
        else:
            raise RuntimeError("sbx serve did not start: " + self.read_log())
        self.port = port
        self.url = "http://127.0.0.1:%d" % port
        return self

    def read_log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()
            self.dir.cleanup()
            self.proc = None

    def request(self, method, path, body=None, headers=None, timeout=60):
        """Returns (status, headers, payload); payload is parsed JSON when
        the reply is JSON, else text."""
        data = None
        hdrs = dict(headers or {})
        if self.token and "Authorization" not in hdrs:
            hdrs["Authorization"] = "Bearer " + self.token
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw, status, rh = resp.read(), resp.status, dict(resp.headers)
        except urllib.error.HTTPError as e:
            raw, status, rh = e.read(), e.code, dict(e.headers)
        text = raw.decode("utf-8")
        if rh.get("Content-Type", "").startswith("application/json"):
            return status, rh, json.loads(text)
        return status, rh, text

    def post(self, path, body, **kw):
        return self.request("POST", path, body, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

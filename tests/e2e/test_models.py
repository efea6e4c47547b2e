"""Models and GPUs: a model store (sbx serve --models DIR) whose models a
sandbox or run asks for by name, seen read-only at /models/org--name with
MODEL_<NAME>_PATH set as Seer sets it; GPU requests, which this GPU-less
host refuses with a clear 422; fake GPU trees (SBX_GPU_ROOT) for binding,
hand-out and the device cgroup rules, whose enforcement is tried for real
with mknod'ed nodes; and the sandbox JSON's "models" and "gpus"."""
import json
import os
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from sbxserver import SbxServer


@pytest.fixture(scope="module")
def store():
    with tempfile.TemporaryDirectory(prefix="sbx-models-") as d:
        for name in ("acme--tiny-lm", "other--big-model"):
            os.mkdir(os.path.join(d, name))
            with open(os.path.join(d, name, "config.json"), "w") as f:
                f.write('{"model": "%s"}\n' % name)
            # Writable by anyone, so only the read-only bind stops a write.
            os.chmod(os.path.join(d, name), 0o777)
            os.chmod(os.path.join(d, name, "config.json"), 0o666)
        os.chmod(d, 0o755)
        yield d


@pytest.fixture(scope="module")
def srv(store):
    with SbxServer(extra_args=["--models", store]) as s:
        yield s


def create(srv, **body):
    status, _, reply = srv.post("/v1/sandboxes", body)
    return status, reply


def exec_(srv, sid, cmd):
    status, _, reply = srv.post("/v1/sandboxes/%s/exec" % sid, {"cmd": cmd})
    assert status == 200, reply
    return reply


@pytest.fixture(scope="module")
def sid(srv):
    status, reply = create(srv, models=["acme/tiny-lm"])
    assert status == 201, reply
    yield reply["id"]
    srv.request("DELETE", "/v1/sandboxes/" + reply["id"])


def test_asked_model_is_read_only_at_its_path(srv, sid):
    r = exec_(srv, sid, "cat /models/acme--tiny-lm/config.json; "
              "echo \"$MODEL_ACME_TINY_LM_PATH\"")
    assert r["exit_code"] == 0, r
    assert r["stdout"] == ('{"model": "acme--tiny-lm"}\n'
                           "/models/acme--tiny-lm\n")
    r = exec_(srv, sid, "(echo x > /models/acme--tiny-lm/new) 2>&1; "
              "(echo x >> /models/acme--tiny-lm/config.json) 2>&1; "
              "rm -f /models/acme--tiny-lm/config.json 2>&1; echo done")
    assert r["stdout"].count("Read-only file system") == 3, r
    r = exec_(srv, sid, "cat /models/acme--tiny-lm/config.json")
    assert r["stdout"] == '{"model": "acme--tiny-lm"}\n'


def test_other_models_are_not_seen(srv, sid):
    r = exec_(srv, sid, "ls /models; env | grep ^MODEL_ || true")
    assert r["stdout"] == "acme--tiny-lm\nMODEL_ACME_TINY_LM_PATH=" \
                          "/models/acme--tiny-lm\n", r


def test_get_model_path_from_an_interface(srv, sid):
    source = ("import os\n"
              "@expose\n"
              "def where(name: str) -> str:\n"
              "    return get_model_path(name)\n"
              "@expose\n"
              "def models() -> dict:\n"
              "    return list_configured_models()\n"
              "@expose\n"
              "def read(name: str) -> str:\n"
              "    with open(os.path.join(get_model_path(name),"
              " 'config.json')) as f:\n"
              "        return f.read()\n")
    status, _, reply = srv.post("/v1/sandboxes/%s/rpc" % sid,
                                {"source": source, "name": "m"})
    assert status == 200, reply
    path = "/v1/sandboxes/%s/rpc/m" % sid
    status, _, reply = srv.post(path, {"fn": "where",
                                       "args": ["acme/tiny-lm"]})
    assert reply == {"ok": True, "result": "/models/acme--tiny-lm"}
    status, _, reply = srv.post(path, {"fn": "read",
                                       "args": ["acme/tiny-lm"]})
    assert reply["result"] == '{"model": "acme--tiny-lm"}\n'
    status, _, reply = srv.post(path, {"fn": "models"})
    # Seer's own mapping back from the variable: "_" becomes "-".
    assert reply["result"] == {"acme-tiny-lm": "/models/acme--tiny-lm"}
    status, _, reply = srv.post(path, {"fn": "where",
                                       "args": ["other/big-model"]})
    assert reply["ok"] is False
    assert "MODEL_OTHER_BIG_MODEL_PATH" in reply["error"]


def test_two_models(srv):
    status, reply = create(srv, models=["acme/tiny-lm", "other/big-model"])
    assert status == 201, reply
    try:
        r = exec_(srv, reply["id"], "ls /models; "
                  "cat $MODEL_OTHER_BIG_MODEL_PATH/config.json")
        assert r["stdout"] == ('acme--tiny-lm\nother--big-model\n'
                               '{"model": "other--big-model"}\n')
    finally:
        srv.request("DELETE", "/v1/sandboxes/" + reply["id"])


def test_unknown_model_is_422_naming_it_and_the_store(srv):
    status, reply = create(srv, models=["acme/nope"])
    assert status == 422
    msg = reply["error"]["message"]
    assert reply["error"]["code"] == "unknown_model"
    assert "'acme/nope'" in msg
    assert "acme/tiny-lm" in msg and "other/big-model" in msg


@pytest.mark.parametrize("bad", [["../etc"], ["a/b/c"], [".hidden/x"],
                                 "acme/tiny-lm", [1], ["acme/tiny-lm"] * 2])
def test_bad_model_names_are_422(srv, bad):
    status, reply = create(srv, models=bad)
    assert status == 422, reply
    assert reply["error"]["message"].startswith("models")


def test_run_with_a_model(srv):
    status, _, reply = srv.post("/v1/run", {
        "language": "python", "models": ["other/big-model"],
        "source": "import os\n"
                  "p = os.environ['MODEL_OTHER_BIG_MODEL_PATH']\n"
                  "print(p, sorted(os.listdir('/models')))\n"
                  "print(open(p + '/config.json').read(), end='')\n"})
    assert status == 200, reply
    assert reply["run"]["stdout"] == (
        "/models/other--big-model ['other--big-model']\n"
        '{"model": "other--big-model"}\n'), reply
    status, _, reply = srv.post("/v1/run", {
        "language": "python", "models": ["x/y"], "source": "print(1)"})
    assert status == 422 and "'x/y'" in reply["error"]["message"]


def test_health_lists_the_store_and_gpus(srv, store):
    status, _, reply = srv.get("/v1/health")
    assert status == 200
    assert reply["models"] == {"dir": store,
                               "names": ["acme/tiny-lm", "other/big-model"]}
    assert isinstance(reply["gpus"], list)


def test_no_store_is_422():
    with SbxServer() as s:
        status, _, reply = s.post("/v1/sandboxes", {"models": ["a/b"]})
        assert status == 422
        assert "--models" in reply["error"]["message"]


def no_gpu_here():
    root = os.environ.get("SBX_GPU_ROOT", "/")
    return not any(n.startswith("nvidia") and n[6:].isdigit()
                   for n in os.listdir(os.path.join(root, "dev")))


@pytest.mark.skipif(not no_gpu_here(), reason="this host has a GPU")
@pytest.mark.parametrize("gpus", [1, [0]])
def test_gpu_request_without_a_gpu_is_422(srv, gpus):
    status, reply = create(srv, gpus=gpus)
    assert status == 422, reply
    assert reply["error"]["code"] == "no_gpu"
    assert "no NVIDIA GPU" in reply["error"]["message"]
    status, _, reply = srv.post("/v1/run", {"language": "python",
                                            "gpus": gpus,
                                            "source": "print(1)"})
    assert status == 422, reply
    assert "no NVIDIA GPU" in reply["error"]["message"]


@pytest.mark.parametrize("gpus", [-1, [], ["0"], "all", 1.5])
def test_bad_gpu_requests_are_422(srv, gpus):
    status, reply = create(srv, gpus=gpus)
    assert status == 422, reply
    assert reply["error"]["message"].startswith("gpus")


def test_zero_gpus_is_no_request(srv):
    status, reply = create(srv, gpus=0, gpu_shared=True)
    assert status == 201, reply
    srv.request("DELETE", "/v1/sandboxes/" + reply["id"])


@pytest.fixture(scope="module")
def fake_gpu_srv():
    """A server whose GPU discovery reads a fake tree (SBX_GPU_ROOT): two
    GPUs whose device nodes are plain files, so binding, environment and
    hand-out run for real without a GPU."""
    with tempfile.TemporaryDirectory(prefix="sbx-fakegpu-") as root:
        os.chmod(root, 0o755)
        os.makedirs(os.path.join(root, "dev"))
        for n in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
            with open(os.path.join(root, "dev", n), "w") as f:
                f.write(n)
            os.chmod(os.path.join(root, "dev", n), 0o644)
        info = os.path.join(root, "proc/driver/nvidia/gpus/0000:01:00.0")
        os.makedirs(info)
        with open(os.path.join(info, "information"), "w") as f:
            f.write("Model: \t Fake GPU\nGPU UUID: \t GPU-fake-0\n"
                    "Device Minor: \t 0\n")
        lib = os.path.join(root, "usr/lib/x86_64-linux-gnu")
        os.makedirs(lib)
        with open(os.path.join(lib, "libcuda.so.1"), "w") as f:
            f.write("fake libcuda\n")
        for d, _, files in os.walk(root):
            os.chmod(d, 0o755)
            for n in files:
                os.chmod(os.path.join(d, n), 0o644)
        with SbxServer(env={"SBX_GPU_ROOT": root}) as s:
            yield s


def test_fake_gpus_are_bound_and_handed_out_alone(fake_gpu_srv):
    srv = fake_gpu_srv
    status, _, health = srv.get("/v1/health")
    assert [g["index"] for g in health["gpus"]] == [0, 1]
    assert health["gpus"][0]["uuid"] == "GPU-fake-0"
    status, a = create(srv, gpus=1)
    assert status == 201, a
    status, b = create(srv, gpus=1)
    assert status == 201, b
    try:
        ra = exec_(srv, a["id"], "ls /dev | grep nvidia; "
                   "echo $CUDA_VISIBLE_DEVICES; "
                   "cat /opt/nvidia/lib/libcuda.so.1")
        rb = exec_(srv, b["id"], "ls /dev | grep nvidia; "
                   "echo $CUDA_VISIBLE_DEVICES")
        assert ra["stdout"] == ("nvidia-uvm\nnvidia0\nnvidiactl\n"
                                "GPU-fake-0\nfake libcuda\n"), ra
        # No UUID known for GPU 1: CUDA counts it by its place among the
        # devices the sandbox sees.
        assert rb["stdout"] == "nvidia-uvm\nnvidia1\nnvidiactl\n0\n", rb
        status, _, health = srv.get("/v1/health")
        assert [g["holders"] for g in health["gpus"]] == [1, 1]
        # Both are held: a third is refused, a named one too.
        status, c = create(srv, gpus=1)
        assert status == 409 and c["error"]["code"] == "gpu_busy", c
        status, c = create(srv, gpus=[0], gpu_shared=True)
        assert status == 409, c
    finally:
        srv.request("DELETE", "/v1/sandboxes/" + a["id"])
        srv.request("DELETE", "/v1/sandboxes/" + b["id"])
    # A GPU is free again once its sandbox is gone, cgroup and all: the
    # delete answers before that.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, _, health = srv.get("/v1/health")
        if [g["holders"] for g in health["gpus"]] == [0, 0]:
            break
        time.sleep(0.05)
    assert [g["holders"] for g in health["gpus"]] == [0, 0], health["gpus"]
    status, _, reply = srv.post("/v1/run", {
        "language": "bash", "gpus": [1],
        "source": "echo $CUDA_VISIBLE_DEVICES; ls /dev | grep nvidia"})
    assert status == 200, reply
    assert reply["run"]["stdout"] == "0\nnvidia-uvm\nnvidia1\nnvidiactl\n"


def test_fake_gpus_shared_when_asked(fake_gpu_srv):
    srv = fake_gpu_srv
    ids = []
    try:
        for _ in range(3):
            status, r = create(srv, gpus=[0], gpu_shared=True)
            assert status == 201, r
            ids.append(r["id"])
        status, _, health = srv.get("/v1/health")
        assert health["gpus"][0]["holders"] == 3
        assert health["gpus"][0]["exclusive"] is False
        status, r = create(srv, gpus=[0])
        assert status == 409 and "gpu_shared" in r["error"]["message"]
    finally:
        for i in ids:
            srv.request("DELETE", "/v1/sandboxes/" + i)


def test_sandbox_json_shows_its_models(srv, sid):
    status, _, reply = srv.get("/v1/sandboxes/" + sid)
    assert status == 200, reply
    assert reply["models"] == ["acme/tiny-lm"]
    assert "gpus" not in reply
    status, _, listed = srv.get("/v1/sandboxes")
    mine = [s for s in listed["sandboxes"] if s["id"] == sid]
    assert mine and mine[0]["models"] == ["acme/tiny-lm"]
    status, plain = create(srv)
    assert status == 201, plain
    try:
        assert "models" not in plain and "gpus" not in plain
    finally:
        srv.request("DELETE", "/v1/sandboxes/" + plain["id"])


def test_sandbox_json_shows_its_gpus(fake_gpu_srv):
    srv = fake_gpu_srv
    wait_gone(srv)
    status, a = create(srv, gpus=[1])
    assert status == 201, a
    try:
        assert a["gpus"] == [1] and "models" not in a
        status, _, got = srv.get("/v1/sandboxes/" + a["id"])
        assert status == 200 and got["gpus"] == [1], got
    finally:
        srv.request("DELETE", "/v1/sandboxes/" + a["id"])


# Device cgroup rules. The fake tree's GPU nodes are real character
# devices: nvidia0 has the numbers of /dev/fuse (it opens without a
# driver of its own and without side effects), nvidia1 and nvidiactl
# NVIDIA's own (195:1, 195:255: with no driver here, an allowed open fails
# with ENXIO, a refused one with EPERM).
FUSE = (10, 229)
NV1 = (195, 1)
NVCTL = (195, 255)


def devices_mount():
    """The v1 devices hierarchy's mount point and root, or None."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            sep = parts.index("-")
            if parts[sep + 1] == "cgroup" and \
                    "devices" in parts[sep + 3].split(","):
                return parts[4], parts[3]
    return None


def devices_sbx_dir(pid):
    """The v1 devices directory under which server pid makes groups."""
    mnt, root = devices_mount()
    with open("/proc/%d/cgroup" % pid) as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if "devices" in ctrls.split(","):
                if root != "/" and path.startswith(root):
                    path = path[len(root):]
                return os.path.join(mnt, path.lstrip("/"), "sbx")
    raise AssertionError("server %d has no devices cgroup" % pid)


def wait_gone(srv):
    """Waits until the server's GPU sandboxes are gone, GPU leases and
    devices groups included (a delete, or a run's result, answers before
    that)."""
    groups = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, _, health = srv.get("/v1/health")
        if devices_mount() is not None:
            groups = devices_groups(srv.proc.pid)
        if not any(g["holders"] for g in health["gpus"]) and not groups:
            return
        time.sleep(0.05)
    raise AssertionError("sandboxes still there: %s, %s"
                         % (health["gpus"], groups))


def devices_groups(pid):
    d = devices_sbx_dir(pid)
    return sorted(os.path.join(d, n) for n in os.listdir(d)
                  if n.startswith("s%d-" % pid))


def can_mknod():
    if os.geteuid() != 0:
        return False
    with tempfile.TemporaryDirectory() as d:
        try:
            os.mknod(os.path.join(d, "n"), 0o600 | stat.S_IFCHR,
                     os.makedev(*FUSE))
            return True
        except OSError:
            return False


needs_devices = pytest.mark.skipif(
    devices_mount() is None or not can_mknod(),
    reason="needs the cgroup v1 devices controller and root (mknod); the "
           "v2 BPF device program is tested in tests/unit/test_cgroup.c")


@pytest.fixture(scope="module")
def dev_gpu_srv():
    """A server whose fake GPU tree has character device nodes."""
    with tempfile.TemporaryDirectory(prefix="sbx-devgpu-") as root:
        os.chmod(root, 0o755)
        os.makedirs(os.path.join(root, "dev"))
        for name, numbers in (("nvidia0", FUSE), ("nvidia1", NV1),
                              ("nvidiactl", NVCTL)):
            path = os.path.join(root, "dev", name)
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(*numbers))
            os.chmod(path, 0o666)
        with open(os.path.join(root, "dev", "nvidia-uvm"), "w") as f:
            f.write("a plain file: no rule\n")
        os.chmod(os.path.join(root, "dev", "nvidia-uvm"), 0o644)
        os.chmod(os.path.join(root, "dev"), 0o755)
        # A copy of /dev/mem, which no sandbox is given.
        mem = os.path.join(root, "mem")
        os.mknod(mem, 0o600 | stat.S_IFCHR, os.makedev(1, 1))
        with SbxServer(env={"SBX_GPU_ROOT": root}) as s:
            s.gpu_root = root
            s.mem = mem
            yield s


# Opens each path (read-only, no controlling tty) and prints what came of
# it: "ok" or the errno's name.
OPENER = r"""
import errno, json, os, stat, sys
paths = sys.argv[1:]
if paths == ["/dev"]:
    # Every character device (a bind shows as a file in readdir: stat).
    paths = [os.path.join(d, n) for d, _, ns in os.walk("/dev") for n in ns
             if stat.S_ISCHR(os.stat(os.path.join(d, n)).st_mode)]
res = {}
for p in paths:
    try:
        os.close(os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY))
        res[p] = "ok"
    except OSError as e:
        res[p] = errno.errorcode[e.errno]
print(json.dumps(res))
"""


def open_in_group(group, paths):
    """Runs OPENER in a host process moved into the devices group first."""
    code = ("import os, sys\n"
            "with open(sys.argv.pop(1) + '/cgroup.procs', 'w') as f:\n"
            "    f.write(str(os.getpid()))\n" + OPENER)
    out = subprocess.run([sys.executable, "-c", code, group] + paths,
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def std_rules():
    """The rules every GPU sandbox gets for its standard /dev."""
    want = {"c 5:2 rw", "c 136:* rw"}
    for n in ("null", "zero", "full", "random", "urandom", "tty"):
        try:
            st = os.stat("/dev/" + n)
        except FileNotFoundError:
            continue
        want.add("c %d:%d rw" % (os.major(st.st_rdev), os.minor(st.st_rdev)))
    return want


@needs_devices
def test_gpu_sandbox_devices_cgroup_allows_only_its_nodes(dev_gpu_srv):
    srv = dev_gpu_srv
    pid = srv.proc.pid
    status, plain = create(srv)
    assert status == 201, plain
    try:
        # A sandbox without GPUs gets no devices group: it costs nothing.
        assert devices_groups(pid) == []
    finally:
        srv.request("DELETE", "/v1/sandboxes/" + plain["id"])
    status, a = create(srv, gpus=[0])
    assert status == 201, a
    try:
        groups = devices_groups(pid)
        assert len(groups) == 1, groups
        with open(os.path.join(groups[0], "devices.list")) as f:
            rules = set(f.read().split("\n")) - {""}
        assert rules == std_rules() | {"c %d:%d rw" % FUSE,
                                       "c %d:%d rw" % NVCTL}, rules
        dev = os.path.join(srv.gpu_root, "dev")
        got = open_in_group(groups[0], [
            os.path.join(dev, "nvidia0"), os.path.join(dev, "nvidiactl"),
            os.path.join(dev, "nvidia1"), srv.mem, "/dev/null"])
        assert got == {
            os.path.join(dev, "nvidia0"): "ok",
            # Allowed; no NVIDIA driver behind it.
            os.path.join(dev, "nvidiactl"): "ENXIO",
            # The GPU this sandbox was not given, and /dev/mem.
            os.path.join(dev, "nvidia1"): "EPERM",
            srv.mem: "EPERM",
            "/dev/null": "ok"}, got
        # Inside: every node of its /dev passes the rules (one mnt.c
        # binds without a rule here would fail with EPERM), and a pty
        # can be made.
        r = exec_(srv, a["id"],
                  "python3 -c '%s' /dev; "
                  "python3 -c 'import os; os.openpty(); print(\"pty\")'"
                  % OPENER.replace("'", "\"").strip())
        assert r["exit_code"] == 0, r
        lines = r["stdout"].splitlines()
        inside = json.loads(lines[0])
        assert inside.get("/dev/nvidia0") == "ok", r
        assert inside["/dev/nvidiactl"] == "ENXIO", inside
        assert "/dev/nvidia1" not in inside
        assert "EPERM" not in inside.values(), inside
        assert inside["/dev/null"] == "ok"
        assert inside["/dev/pts/ptmx"] == "ok"
        assert lines[1] == "pty"
    finally:
        srv.request("DELETE", "/v1/sandboxes/" + a["id"])
    wait_gone(srv)
    status, _, reply = srv.post("/v1/run", {
        "language": "python", "gpus": [0],
        "source": "import os\nos.close(os.open('/dev/nvidia0', os.O_RDONLY))"
                  "\nprint('opened')\n"})
    assert status == 200, reply
    assert reply["run"]["stdout"] == "opened\n", reply


@needs_devices
def test_gpu_sandbox_fails_when_its_rules_cannot_be_written(dev_gpu_srv):
    srv = dev_gpu_srv
    parent = devices_sbx_dir(srv.proc.pid)
    wait_gone(srv)
    # The parent refuses the GPU's node: the sandbox's allow must fail.
    with open(os.path.join(parent, "devices.deny"), "w") as f:
        f.write("c %d:%d rwm" % FUSE)
    try:
        status, reply = create(srv, gpus=[0])
        assert status == 500, reply
        msg = reply["error"]["message"]
        assert "cannot limit the sandbox's devices" in msg, msg
        assert "c %d:%d rw" % FUSE in msg and "not permitted" in msg, msg
        status, _, reply = srv.post("/v1/run", {
            "language": "bash", "gpus": [0], "source": "echo ran"})
        assert "ran" not in json.dumps(reply), reply
        assert "cannot limit the sandbox's devices" in json.dumps(reply)
    finally:
        with open(os.path.join(parent, "devices.allow"), "w") as f:
            f.write("c %d:%d rwm" % FUSE)
    wait_gone(srv)
    status, a = create(srv, gpus=[0])
    assert status == 201, a
    srv.request("DELETE", "/v1/sandboxes/" + a["id"])

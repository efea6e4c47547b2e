"""Models and GPUs: a model store (sbx serve --models DIR) whose models a
sandbox or run asks for by name, seen read-only at /models/org--name with
MODEL_<NAME>_PATH set as Seer sets it; and GPU requests, which this
GPU-less host refuses with a clear 422."""
import os
import tempfile

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

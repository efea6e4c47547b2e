"""Hardening of stateful sandboxes (/v1/sandboxes), each test trying the
fault for real: file errors answered with a fitting status (client
mistakes are 4xx), file names that are not UTF-8, the output background
processes leave in the server, and archives and large files streamed with
bounded server memory.

Every wait is a poll with a hang guard; no test asserts how long anything
took.
"""
import base64
import io
import json
import tarfile

import pytest

from sbxserver import SbxServer
from test_sandboxes import (GUARD_S, Boxes, as_json, check_error, poll,
                            quote_path, raw_request)


@pytest.fixture(scope="module")
def srv():
    with SbxServer() as s:
        yield s
        assert s.proc.poll() is None, "the server died:\n" + s.read_log()


@pytest.fixture
def boxes(srv):
    made = Boxes(srv)
    yield made
    made.cleanup()


@pytest.fixture
def box(boxes):
    return boxes()


# ---- finding 16: errno -> status, client mistakes are 4xx ----

def test_delete_root_is_a_client_error(box):
    # rmdir("/") fails with EBUSY: the client asked for something that
    # cannot be done, which is no fault of the server.
    status, headers, data = box.call("DELETE", "/files?path=/")
    err = check_error(status, headers, data, 409, "conflict")
    assert "mount point" in err["message"], err
    # Mount points in the read-only root: EROFS comes first.
    for path in ("/tmp", "/proc", "/usr"):
        status, headers, data = box.call(
            "DELETE", "/files?path=" + quote_path(path))
        check_error(status, headers, data, 403, "forbidden")
    status, headers, data = box.call("DELETE", "/files?path=/&recursive=1")
    assert 400 <= status < 500, (status, data)
    # The sandbox still works and /work is still there.
    assert box.sh("cd /work && pwd") == "/work\n"


def test_file_errors_map_to_fitting_statuses(box):
    box.sh("mkdir -p d/sub && echo x > d/sub/f && echo y > plain && "
           "ln -s loop1 loop2 && ln -s loop2 loop1")
    cases = [
        # (method, path, body, status, code)
        ("DELETE", "/files/d", None, 409, "conflict"),         # ENOTEMPTY
        ("PUT", "/files/d", b"x", 409, "conflict"),            # EISDIR
        ("GET", "/files/plain/x", None, 404, "not_found"),     # ENOTDIR
        ("PUT", "/files/plain/x", b"x", 404, "not_found"),     # ENOTDIR
        ("GET", "/files/loop1", None, 400, "bad_request"),     # ELOOP
        ("GET", "/files/" + "n" * 300, None, 400, "bad_request"),  # ENAMETOOLONG
        ("PUT", "/files?path=/etc/hosts", b"x", 403, "forbidden"),  # EROFS
        ("DELETE", "/files?path=/etc/hosts", None, 403, "forbidden"),
    ]
    for method, sub, body, want, code in cases:
        status, headers, data = box.call(method, sub, body)
        check_error(status, headers, data, want, code)


def test_disk_full_is_not_a_server_fault(boxes):
    box = boxes(limits={"disk_mb": 1})
    status, headers, data = box.put("big.bin", b"z" * (3 << 20))
    err = check_error(status, headers, data, 413, "payload_too_large")
    assert "disk" in err["message"], err

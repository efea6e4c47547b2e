"""SandboxFusion /run_code compatibility, against a real `sbx serve`.

Every field and status of shared/reference/sandboxfusion.md §1.2-1.4 is
checked for each language the server offers (GET /v1/health); a language
this host lacks is skipped with the reason. The request shapes of the two
big clients (tinker-cookbook and verl) are replayed verbatim.
"""
import ast
import base64
import http.client
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from sbxserver import SbxServer

MiB = 1 << 20

RESPONSE_KEYS = {"status", "message", "compile_result", "run_result",
                 "executor_pod_name", "files"}
COMMAND_KEYS = {"status", "execution_time", "return_code", "stdout",
                "stderr"}
# sbx adds "truncated": true when it cut the output; nothing else.
COMMAND_EXTRA_KEYS = {"truncated"}

COMPILED = {"c", "cpp", "java", "go", "rust"}

# language -> programs. hello prints "Hello, world!\n"; fail exits non-zero
# at run time; broken does not compile; sleep runs for 5 s; echo copies one
# line of stdin to stdout.
PROGRAMS = {
    "python": {
        "hello": 'print("Hello, world!")',
        "fail": "raise ValueError('boom')",
        "sleep": "import time\ntime.sleep(5)",
        "echo": "print(input())",
    },
    "bash": {
        "hello": 'echo "Hello, world!"',
        "fail": "echo oops >&2\nexit 3",
        "sleep": "sleep 5",
        "echo": "read -r x\necho \"$x\"",
    },
    "c": {
        "hello": '#include <stdio.h>\nint main(void) '
                 '{ puts("Hello, world!"); return 0; }',
        "fail": "#include <stdlib.h>\nint main(void) { abort(); }",
        "broken": "int main(void) { return undeclared_name; }",
        "sleep": "#include <unistd.h>\nint main(void) "
                 "{ sleep(5); return 0; }",
        "echo": '#include <stdio.h>\nint main(void) { char s[64]; '
                'if (scanf("%63s", s) != 1) return 1; '
                'printf("%s\\n", s); return 0; }',
    },
    "cpp": {
        "hello": '#include <iostream>\nint main() '
                 '{ std::cout << "Hello, world!" << std::endl; }',
        "fail": "#include <stdexcept>\nint main() "
                '{ throw std::runtime_error("boom"); }',
        "broken": "int main() { int a = ; }",
        "sleep": "#include <chrono>\n#include <thread>\nint main() { "
                 "std::this_thread::sleep_for(std::chrono::seconds(5)); }",
        "echo": "#include <iostream>\n#include <string>\nint main() { "
                "std::string s; std::cin >> s; "
                "std::cout << s << std::endl; }",
    },
    "nodejs": {
        "hello": 'console.log("Hello, world!")',
        "fail": "throw new Error('boom')",
        "sleep": "setTimeout(() => {}, 5000)",
        "echo": "const s = require('fs').readFileSync(0, 'utf8');\n"
                "console.log(s.trim())",
    },
    "java": {
        "hello": "public class Main { public static void main(String[] a) "
                 '{ System.out.println("Hello, world!"); } }',
        "fail": "public class Main { public static void main(String[] a) "
                '{ throw new RuntimeException("boom"); } }',
        "broken": "public class Main { public static void main(String[] a) "
                  "{ int x = \"not an int\"; } }",
        "sleep": "public class Main { public static void main(String[] a) "
                 "throws Exception { Thread.sleep(5000); } }",
        "echo": "import java.util.Scanner;\npublic class Main { "
                "public static void main(String[] a) { "
                "System.out.println(new Scanner(System.in).next()); } }",
    },
    "perl": {
        "hello": 'print "Hello, world!\\n";',
        "fail": 'die "boom\\n";',
        "sleep": "sleep 5;",
        "echo": 'my $x = <STDIN>; chomp $x; print "$x\\n";',
    },
    "go": {
        "hello": 'package main\nimport "fmt"\nfunc main() '
                 '{ fmt.Println("Hello, world!") }',
        "fail": 'package main\nfunc main() { panic("boom") }',
        "broken": "package main\nfunc main() { x := }",
        "sleep": 'package main\nimport "time"\nfunc main() '
                 "{ time.Sleep(5 * time.Second) }",
        "echo": 'package main\nimport "fmt"\nfunc main() '
                "{ var s string; fmt.Scan(&s); fmt.Println(s) }",
    },
    "rust": {
        "hello": 'fn main() { println!("Hello, world!"); }',
        "fail": 'fn main() { panic!("boom"); }',
        "broken": "fn main() { let x: i32 = \"no\"; }",
        "sleep": "fn main() { std::thread::sleep("
                 "std::time::Duration::from_secs(5)); }",
        "echo": "fn main() { let mut s = String::new(); "
                "std::io::stdin().read_line(&mut s).unwrap(); "
                'println!("{}", s.trim()); }',
    },
    "ruby": {
        "hello": 'puts "Hello, world!"',
        "fail": 'raise "boom"',
        "sleep": "sleep 5",
        "echo": "puts STDIN.gets.chomp",
    },
    "php": {
        "hello": '<?php echo "Hello, world!\\n";',
        "fail": "<?php exit(2);",
        "sleep": "<?php sleep(5);",
        "echo": '<?php echo trim(fgets(STDIN)), "\\n";',
    },
    "lua": {
        "hello": 'print("Hello, world!")',
        "fail": 'error("boom")',
        "sleep": 'os.execute("sleep 5")',
        "echo": "print(io.read())",
    },
}
LANGS = sorted(PROGRAMS)
COMPILED_LANGS = sorted(COMPILED & set(PROGRAMS))


@pytest.fixture(scope="module")
def srv():
    with SbxServer(extra_args=["--concurrency", "4", "--output", "1M"]) as s:
        yield s
        assert s.proc.poll() is None, "the server died:\n" + s.read_log()


@pytest.fixture(scope="module")
def installed(srv):
    status, _, health = srv.get("/v1/health")
    assert status == 200, health
    return set(health["languages"])


def need(installed, lang):
    if lang not in installed:
        pytest.skip("'%s' is not installed on this host (the server "
                    "offers %s)" % (lang, ", ".join(sorted(installed))))


def run_code(srv, body, **kw):
    """POSTs /run_code; asserts the SandboxFusion envelope and returns the
    response dict. Compiles get a minute unless the test says otherwise:
    a compiler on a loaded machine is not what these tests are about."""
    if "compile_timeout" not in body and body.get("language") in COMPILED:
        body = dict(body, compile_timeout=60)
    status, headers, resp = srv.post("/run_code", body, **kw)
    assert status == 200, (status, resp)
    assert headers.get("Content-Type", "").startswith("application/json")
    check_shape(resp)
    return resp


def check_command(res):
    assert isinstance(res, dict), res
    assert COMMAND_KEYS <= set(res) <= COMMAND_KEYS | COMMAND_EXTRA_KEYS, res
    assert res["status"] in ("Finished", "TimeLimitExceeded", "Error"), res
    if res["status"] == "Error":
        assert res["execution_time"] is None and res["return_code"] is None
        return
    assert isinstance(res["execution_time"], (int, float)), res
    assert res["execution_time"] >= 0, res
    assert isinstance(res["stdout"], str) and isinstance(res["stderr"], str)
    if res["status"] == "TimeLimitExceeded":
        assert res["return_code"] is None, res
    else:
        assert isinstance(res["return_code"], int), res


def check_shape(resp):
    assert set(resp) == RESPONSE_KEYS, resp
    assert resp["status"] in ("Success", "Failed", "SandboxError"), resp
    assert isinstance(resp["message"], str), resp
    assert resp["executor_pod_name"] is None, resp
    assert isinstance(resp["files"], dict), resp
    for key in ("compile_result", "run_result"):
        if resp[key] is not None:
            check_command(resp[key])


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


# 1. Every language: success, runtime error, compile error, timeout, stdin.

@pytest.mark.parametrize("lang", LANGS)
def test_hello_world_success(srv, installed, lang):
    need(installed, lang)
    resp = run_code(srv, {"code": PROGRAMS[lang]["hello"], "language": lang})
    assert resp["status"] == "Success", resp
    assert resp["message"] == ""
    assert resp["files"] == {}
    run = resp["run_result"]
    assert set(run) == COMMAND_KEYS, run
    assert run["status"] == "Finished" and run["return_code"] == 0, resp
    assert run["stdout"] == "Hello, world!\n", resp
    if lang in COMPILED:
        comp = resp["compile_result"]
        assert set(comp) == COMMAND_KEYS, comp
        assert comp["status"] == "Finished" and comp["return_code"] == 0
    else:
        assert resp["compile_result"] is None, resp


@pytest.mark.parametrize("lang", LANGS)
def test_runtime_error_is_failed(srv, installed, lang):
    need(installed, lang)
    resp = run_code(srv, {"code": PROGRAMS[lang]["fail"], "language": lang})
    assert resp["status"] == "Failed", resp
    assert resp["message"] == ""
    run = resp["run_result"]
    assert run["status"] == "Finished", resp
    assert run["return_code"] != 0, resp


@pytest.mark.parametrize("lang", COMPILED_LANGS)
def test_compile_error_skips_the_run(srv, installed, lang):
    need(installed, lang)
    resp = run_code(srv, {"code": PROGRAMS[lang]["broken"],
                          "language": lang})
    assert resp["status"] == "Failed", resp
    comp = resp["compile_result"]
    assert comp["status"] == "Finished", resp
    assert comp["return_code"] != 0, resp
    assert comp["stderr"] or comp["stdout"], "no compiler diagnostics"
    assert resp["run_result"] is None, resp


@pytest.mark.parametrize("lang", LANGS)
def test_run_timeout(srv, installed, lang):
    need(installed, lang)
    resp = run_code(srv, {"code": PROGRAMS[lang]["sleep"], "language": lang,
                          "run_timeout": 0.5}, timeout=60)
    assert resp["status"] == "Failed", resp
    run = resp["run_result"]
    assert run["status"] == "TimeLimitExceeded", resp
    assert run["return_code"] is None, resp
    if lang in COMPILED:
        assert resp["compile_result"]["status"] == "Finished", resp


@pytest.mark.parametrize("lang", LANGS)
def test_stdin(srv, installed, lang):
    need(installed, lang)
    resp = run_code(srv, {"code": PROGRAMS[lang]["echo"], "language": lang,
                          "stdin": "65535"})
    assert resp["status"] == "Success", resp
    assert resp["run_result"]["stdout"] == "65535\n", resp


def test_no_stdin_means_eof(srv):
    resp = run_code(srv, {"code": "import sys\nprint(repr(sys.stdin.read()))",
                          "language": "python", "stdin": None})
    assert resp["status"] == "Success", resp
    assert resp["run_result"]["stdout"] == "''\n", resp


def test_stdin_with_nul(srv):
    # JSON allows "\u0000" in strings and SandboxFusion (Python's json)
    # takes it; test inputs are arbitrary text.
    status, _, resp = srv.post("/run_code", {
        "code": "import sys\nprint(repr(sys.stdin.read()))",
        "language": "python", "stdin": "a\u0000b\n"})
    assert status == 200, resp
    assert resp["status"] == "Success", resp
    assert resp["run_result"]["stdout"] == "'a\\x00b\\n'\n", resp


def test_compile_timeout(srv, installed):
    need(installed, "cpp")
    # Constant evaluation the compiler cannot finish in any sane time.
    code = ("constexpr long spin() { long s = 0;\n"
            "  for (long i = 0; i < 200000; i++)\n"
            "    for (long j = 0; j < 200000; j++) s += i ^ j;\n"
            "  return s; }\n"
            "static_assert(spin() != 1, \"\");\n"
            "int main() { return 0; }\n")
    t0 = time.monotonic()
    resp = run_code(srv, {"code": code, "language": "cpp",
                          "compile_timeout": 1, "run_timeout": 1},
                    timeout=60)
    elapsed = time.monotonic() - t0
    assert resp["status"] == "Failed", resp
    comp = resp["compile_result"]
    assert comp["status"] == "TimeLimitExceeded", resp
    assert comp["return_code"] is None, resp
    assert resp["run_result"] is None, resp
    # Hang guard only: the 10 s default would also be "respected".
    assert elapsed < 30, elapsed


# 2. Memory.

def _alloc(mb):
    # Bytes that are written, so they count (a bare bytearray is lazily
    # zero-filled by the kernel).
    return "b = b'\\x01' * (%d << 20)\nprint(len(b) >> 20)" % mb


def test_memory_limit_kills_at_twice_the_limit(srv):
    resp = run_code(srv, {"code": _alloc(128), "language": "python",
                          "memory_limit_MB": 64})
    assert resp["status"] == "Failed", resp
    assert resp["run_result"]["status"] == "Finished", resp
    assert resp["run_result"]["return_code"] == -9, resp


def test_memory_within_limit_succeeds(srv):
    resp = run_code(srv, {"code": _alloc(16), "language": "python",
                          "memory_limit_MB": 64})
    assert resp["status"] == "Success", resp
    assert resp["run_result"]["stdout"] == "16\n", resp


@pytest.mark.parametrize("limit,ok", [(100, False), (300, True)])
def test_memory_limit_is_the_limit_asked_for(srv, limit, ok):
    resp = run_code(srv, {"code": _alloc(150), "language": "python",
                          "memory_limit_MB": limit})
    if ok:
        assert resp["status"] == "Success", resp
        assert resp["run_result"]["stdout"] == "150\n", resp
    else:
        assert resp["status"] == "Failed", resp
        assert resp["run_result"]["return_code"] == -9, resp


def test_memory_limit_is_a_cgroup_not_an_address_space_rlimit(srv):
    # SandboxFusion's RLIMIT_AS breaks runtimes that reserve address space
    # (its issue #70); a cgroup counts only what is touched.
    code = ("import mmap, resource\n"
            "print(resource.getrlimit(resource.RLIMIT_AS)[0])\n"
            "m = mmap.mmap(-1, 1 << 30)\n"
            "print('reserved')\n")
    resp = run_code(srv, {"code": code, "language": "python",
                          "memory_limit_MB": 100})
    assert resp["status"] == "Success", resp
    # -1 is RLIM_INFINITY.
    assert resp["run_result"]["stdout"] == "-1\nreserved\n", resp


@pytest.mark.parametrize("lang", ["python", "cpp"])
def test_run_that_never_started_is_not_success(srv, installed, lang):
    # 1 MiB is below what a sandbox needs to start at all (sbx run refuses
    # less than 4M). Either the request is refused, or the reply says the
    # program did not run; "Success" with no result would score an RL
    # rollout as passed.
    need(installed, lang)
    status, _, resp = srv.post("/run_code", {
        "code": PROGRAMS[lang]["hello"], "language": lang,
        "memory_limit_MB": 1})
    if status == 422:
        assert "memory_limit_MB" in resp["error"]["message"], resp
        return
    assert status == 200, resp
    check_shape(resp)
    assert resp["status"] != "Success", resp
    assert resp["run_result"] is not None or \
        resp["compile_result"] is not None, resp


# 3. Files in and out.

def test_nested_file_is_readable_relatively(srv):
    resp = run_code(srv, {
        "code": "print(open('dir1/dir2/dir3/secret_flag').read())",
        "language": "python",
        "files": {"dir1/dir2/dir3/secret_flag":
                  "ImhlbGxvLCB0aGlzIGlzIGEgdGVzdCI="}})
    assert resp["status"] == "Success", resp
    assert resp["run_result"]["stdout"] == '"hello, this is a test"\n', resp


def test_null_and_ignored_files_are_skipped(srv):
    resp = run_code(srv, {
        "code": "import os\nprint(sorted(os.listdir('.')))",
        "language": "python",
        "files": {"skipped": None, "x_IGNORE_THIS_FILE": b64("no"),
                  "kept.txt": b64("yes")}})
    assert resp["status"] == "Success", resp
    listed = ast.literal_eval(resp["run_result"]["stdout"])
    assert "kept.txt" in listed, resp
    assert "skipped" not in listed and "x_IGNORE_THIS_FILE" not in listed


def test_fetch_files_round_trip(srv):
    blob = bytes(range(256)) * 4 + b"\x00\xff\xfe"
    code = ("import shutil\n"
            "open('flag.txt', 'w').write('this is a secret')\n"
            "shutil.copy('in.bin', 'out.bin')\n")
    resp = run_code(srv, {
        "code": code, "language": "python",
        "files": {"in.bin": b64(blob)},
        "fetch_files": ["flag.txt", "out.bin", "missing.txt",
                        "dir_that_is_not_there/x"]})
    assert resp["status"] == "Success", resp
    # Missing paths are left out; the keys are the paths as requested.
    assert set(resp["files"]) == {"flag.txt", "out.bin"}, resp["files"]
    assert resp["files"]["flag.txt"] == "dGhpcyBpcyBhIHNlY3JldA=="
    assert base64.b64decode(resp["files"]["out.bin"]) == blob


def test_fetch_files_skips_directories(srv):
    resp = run_code(srv, {"code": "import os\nos.mkdir('d')",
                          "language": "python", "fetch_files": ["d"]})
    assert resp["status"] == "Success", resp
    assert resp["files"] == {}, resp


def test_empty_file(srv):
    resp = run_code(srv, {
        "code": "import os\nprint(os.path.getsize('empty'))",
        "language": "python", "files": {"empty": ""},
        "fetch_files": ["empty"]})
    assert resp["status"] == "Success", resp
    assert resp["run_result"]["stdout"] == "0\n"
    assert resp["files"] == {"empty": ""}, resp


# 4. Exit codes and output.

def test_sys_exit_minus_one_is_255(srv):
    resp = run_code(srv, {"code": "import sys\nsys.exit(-1)",
                          "language": "python"})
    assert resp["status"] == "Failed", resp
    assert resp["run_result"]["status"] == "Finished"
    assert resp["run_result"]["return_code"] == 255, resp


def test_signal_is_negative_return_code(srv):
    resp = run_code(srv, {"code": "import os, signal\n"
                                  "os.kill(os.getpid(), signal.SIGSEGV)",
                          "language": "python"})
    assert resp["status"] == "Failed", resp
    assert resp["run_result"]["return_code"] == -11, resp


def test_stdout_that_is_not_utf8_is_valid_json(srv):
    code = ("import sys\n"
            "sys.stdout.buffer.write("
            "b'\\xff\\xfeok\\xc3\\x28 \\xe2\\x82\\xac\\n')\n"
            "sys.stderr.buffer.write(b'\\xed\\xa0\\x80!')\n")
    body = json.dumps({"code": code, "language": "python"}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    try:
        conn.request("POST", "/run_code", body,
                     {"Content-Type": "application/json"})
        r = conn.getresponse()
        raw = r.read()
    finally:
        conn.close()
    assert r.status == 200
    text = raw.decode("utf-8")  # strict: raises on invalid UTF-8
    resp = json.loads(text)
    assert resp["status"] == "Success", resp
    assert resp["run_result"]["stdout"] == \
        "\ufffd\ufffdok\ufffd( \u20ac\n", resp
    # A surrogate encoded in UTF-8 is not valid UTF-8 either.
    assert resp["run_result"]["stderr"] == "\ufffd" * 3 + "!", resp


def test_nul_bytes_in_output_survive(srv):
    resp = run_code(srv, {"code": "import sys\n"
                                  "sys.stdout.write('a\\x00b')",
                          "language": "python"})
    assert resp["run_result"]["stdout"] == "a\x00b", resp


def test_large_output_is_capped_and_marked(srv):
    # The server runs with --output 1M; the program prints 20 MB.
    code = ("import sys\n"
            "for i in range(20):\n"
            "    sys.stdout.write('x' * (1 << 20))\n")
    resp = run_code(srv, {"code": code, "language": "python"}, timeout=60)
    run = resp["run_result"]
    assert run.get("truncated") is True, {k: v for k, v in run.items()
                                          if k != "stdout"}
    assert resp["status"] == "Failed"
    assert run["return_code"] == -9, run["return_code"]
    assert 0 < len(run["stdout"]) <= MiB, len(run["stdout"])
    assert set(run["stdout"]) == {"x"}


# 5. The request shapes real clients send.

def test_tinker_cookbook_request_shape(srv):
    files = {"data.txt": "héllo\n"}
    payload = {
        "code": "print(open('data.txt', encoding='utf-8').read().strip())",
        "language": "python",
        "run_timeout": int(6),
        "files": {k: base64.b64encode(v.encode("utf-8")).decode("utf-8")
                  for k, v in files.items()},
    }
    status, headers, resp = srv.post("/run_code", payload)
    assert status == 200
    # aiohttp's resp.json() insists on this content type.
    assert headers["Content-Type"].split(";")[0] == "application/json"
    check_shape(resp)
    assert resp["status"] == "Success", resp
    assert resp["run_result"]["stdout"] == "héllo\n"


def test_verl_request_shape(srv):
    payload = json.dumps({
        "compile_timeout": 10, "run_timeout": 10,
        "code": "a, b = map(int, input().split())\nprint(a + b)",
        "stdin": "2 40\n", "memory_limit_MB": 1024, "language": "python",
        "files": {}, "fetch_files": [],
    }).encode()
    status, headers, resp = srv.post("/run_code", payload)
    assert status == 200
    assert headers["Content-Type"].split(";")[0] == "application/json"
    check_shape(resp)
    assert resp["status"] == "Success", resp
    assert resp["run_result"]["stdout"].rstrip("\n") == "42"


def test_unknown_fields_are_ignored(srv):
    resp = run_code(srv, {"code": "print(1)", "language": "python",
                          "isolation": "none", "extra": {"a": [1]}})
    assert resp["status"] == "Success", resp


TESTING_UTIL = '''\
import faulthandler
import json
import signal
import platform
from unittest.mock import patch


class TimeoutException(Exception):
    pass


def _handler(signum, frame):
    raise TimeoutException


def run_test(sample, code, debug=False, timeout=6):
    faulthandler.enable()
    io = json.loads(sample["input_output"])
    signal.signal(signal.SIGALRM, _handler)
    ns = {}
    exec(code, ns)
    fn = ns[io["fn_name"]]
    results = []
    for inp, out in zip(io["inputs"], io["outputs"]):
        signal.alarm(timeout)
        try:
            results.append(fn(*inp) == out)
        except TimeoutException:
            results.append(-3)
        finally:
            signal.alarm(0)
    return results, {"platform": platform.system()}
'''

# Verbatim from tinker-cookbook recipes/code_rl/code_grading.py.
TEST_CODE = '''\
import json
import sys

from testing_util import run_test

with open('test_cases.txt', 'r') as fin:
    sample = json.load(fin)
with open('code.py', 'r') as fin:
    code = fin.read()

result, metadata = run_test(sample, code, debug=False, timeout=%(timeout)s)
if any(x != True for x in result):
    print(metadata)
    sys.exit(-1)
else:
    sys.exit(0)
'''


@pytest.mark.parametrize("solution,passed", [
    ("def add(a, b):\n    return a + b\n", True),
    ("def add(a, b):\n    return a - b\n", False),
])
def test_sandboxfusion_style_test_case(srv, solution, passed):
    cases = {"input_output": json.dumps(
        {"inputs": [[1, 2], [5, 7]], "outputs": [3, 12], "fn_name": "add"})}
    resp = run_code(srv, {
        "code": TEST_CODE % {"timeout": 6}, "language": "python",
        "run_timeout": (6 + 1) * 2 + 5,
        "files": {"test_cases.txt": b64(json.dumps(cases)),
                  "code.py": b64(solution),
                  "testing_util.py": b64(TESTING_UTIL)}})
    if passed:
        assert resp["status"] == "Success", resp
    else:
        assert resp["status"] == "Failed", resp
        assert resp["run_result"]["return_code"] == 255, resp
        assert "platform" in resp["run_result"]["stdout"], resp


def test_cwd_is_the_files_dir_and_on_sys_path(srv):
    code = ("import os, sys\n"
            "here = os.path.dirname(os.path.abspath(__file__))\n"
            "print(os.getcwd() == here, here in sys.path or '' in sys.path)\n"
            "print(sorted(os.listdir('.')) == sorted(os.listdir(here)))\n"
            "import helper_mod\nprint(helper_mod.X)\n")
    resp = run_code(srv, {"code": code, "language": "python",
                          "files": {"helper_mod.py": b64("X = 42\n")}})
    assert resp["status"] == "Success", resp
    assert resp["run_result"]["stdout"] == "True True\nTrue\n42\n", resp


def _host_has_numpy():
    # The sandbox sees the host's /usr; python3-numpy lands here.
    return any(os.path.isdir(os.path.join(d, "numpy")) for d in
               ("/usr/lib/python3/dist-packages",))


def test_numpy_import(srv):
    if not _host_has_numpy():
        pytest.skip("python3-numpy is not installed on this host")
    resp = run_code(srv, {"code": "import numpy as np\n"
                                  "print(int(np.arange(10).sum()))",
                          "language": "python"})
    assert resp["status"] == "Success", resp
    assert resp["run_result"]["stdout"] == "45\n", resp


# 6. Errors.

def test_unknown_language_is_422(srv):
    status, headers, resp = srv.post("/run_code", {"code": "x",
                                                   "language": "cobol"})
    assert status == 422, resp
    assert headers["Content-Type"].startswith("application/json")
    assert resp["error"]["code"] == "unprocessable", resp
    assert "cobol" in resp["error"]["message"], resp


def test_bad_base64_is_sandbox_error(srv):
    resp = run_code(srv, {"code": "print(1)", "language": "python",
                          "files": {"a.txt": "not base64!"}})
    assert resp["status"] == "SandboxError", resp
    assert "a.txt" in resp["message"], resp
    assert resp["run_result"] is None and resp["compile_result"] is None


def test_ping(srv):
    status, headers, payload = srv.get("/v1/ping")
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert payload == "pong"


# 7. Many clients at once, and one client for many requests.

def test_64_concurrent_requests(srv):
    def one(i):
        resp = run_code(srv, {
            "code": "import sys\nprint(%d)\nprint(%d, file=sys.stderr)"
                    % (i, i * 7),
            "language": "python"}, timeout=120)
        return i, resp

    with ThreadPoolExecutor(max_workers=64) as pool:
        results = list(pool.map(one, range(64)))
    for i, resp in results:
        assert resp["status"] == "Success", (i, resp)
        assert resp["run_result"]["stdout"] == "%d\n" % i, (i, resp)
        assert resp["run_result"]["stderr"] == "%d\n" % (i * 7), (i, resp)


def test_keep_alive(srv):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    try:
        first = None
        for i in range(5):
            if i % 2:
                conn.request("GET", "/v1/ping")
            else:
                conn.request("POST", "/run_code",
                             json.dumps({"code": "print(%d)" % i,
                                         "language": "python"}),
                             {"Content-Type": "application/json"})
            r = conn.getresponse()
            body = json.loads(r.read())
            assert r.status == 200, body
            assert r.getheader("Connection", "").lower() != "close"
            if i % 2:
                assert body == "pong"
            else:
                assert body["run_result"]["stdout"] == "%d\n" % i, body
            # The same TCP connection every time.
            name = conn.sock.getsockname()
            first = first or name
            assert name == first
    finally:
        conn.close()

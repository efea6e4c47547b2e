"""The native one-shot API, POST /v1/run, against a real `sbx serve`.

Programs run for real: plain runs with args and stdin, one compile shared
by several tests with a verdict each, every limit pushed past, several
files with an entry, output that is not UTF-8; and every kind of bad
request is refused with 422 naming the field.
"""
import json
import subprocess

import pytest

from conftest import SBX
from sbxserver import SbxServer

MiB = 1 << 20

STEP_KEYS = {"status", "exit_code", "signal", "wall_ms", "cpu_ms",
             "oom_killed", "output_truncated", "stdout", "stderr"}
TOTAL_KEYS = {"wall_ms", "cpu_ms", "peak_memory_bytes", "oom_killed",
              "limits"}

# Reads two integers, prints their sum; exits 3 when the first is negative.
C_SUM = r"""
#include <stdio.h>
int main(void)
{
	int a, b;
	if (scanf("%d %d", &a, &b) != 2)
		return 2;
	if (a < 0)
		return 3;
	printf("%d\n", a + b);
	return 0;
}
"""
CPP_SUM = r"""
#include <iostream>
int main()
{
	int a, b;
	if (!(std::cin >> a >> b))
		return 2;
	if (a < 0)
		return 3;
	std::cout << a + b << std::endl;
}
"""
SUM_TESTS = [
    {"stdin": "1 2\n", "expected_stdout": "3"},      # accepted
    {"stdin": "2 2\n", "expected_stdout": "5\n"},    # wrong answer
    {"stdin": "-1 2\n", "expected_stdout": "1\n"},   # exits 3
]


@pytest.fixture(scope="module")
def srv():
    with SbxServer() as s:
        yield s


@pytest.fixture(scope="module")
def installed(srv):
    status, _, health = srv.get("/v1/health")
    assert status == 200, health
    return set(health["languages"])


def need(installed, lang):
    if lang not in installed:
        pytest.skip("%s is not installed on this host" % lang)


@pytest.fixture(scope="module")
def memory_cgroup():
    out = subprocess.run([SBX, "check"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=60).stdout
    if b"cgroup memory: yes" not in out:
        pytest.skip("no memory cgroup on this host:\n" + out.decode())


def run(srv, body, status=200):
    code, _, reply = srv.post("/v1/run", body, timeout=120)
    assert code == status, reply
    return reply


def check_step(step):
    assert set(step) == STEP_KEYS, step
    assert isinstance(step["wall_ms"], int)
    assert isinstance(step["cpu_ms"], int)


def check_reply(reply, tests=False):
    keys = {"status", "compile", "run"} | TOTAL_KEYS
    if tests:
        keys |= {"tests", "accepted"}
    if reply["status"] == "sandbox_error":
        keys.add("error")
    assert set(reply) == keys, reply
    if reply["compile"] is not None:
        check_step(reply["compile"])
    if reply["run"] is not None:
        check_step(reply["run"])
    for t in reply.get("tests", []):
        if t["verdict"] == "skipped":
            assert t == {"verdict": "skipped"}
        else:
            assert set(t) == STEP_KEYS | {"verdict"}, t


def unprocessable(srv, body, field):
    code, _, reply = srv.post("/v1/run", body)
    assert code == 422, reply
    assert reply["error"]["code"] == "unprocessable", reply
    assert reply["error"]["message"].startswith(field + ": "), reply
    return reply["error"]["message"]


# 1. Plain runs.

def test_python_args_and_stdin(srv):
    reply = run(srv, {
        "language": "python",
        "source": "import sys\nprint(sys.argv[1:])\n"
                  "print(sys.stdin.read().upper(), end='')\n"
                  "print('to stderr', file=sys.stderr)\n",
        "args": ["one", "two words", ""],
        "stdin": "hello\nworld\n",
    })
    check_reply(reply)
    assert reply["status"] == "ok"
    assert reply["compile"] is None
    run_ = reply["run"]
    assert run_["status"] == "ok" and run_["exit_code"] == 0
    assert run_["signal"] is None and run_["oom_killed"] is False
    assert run_["stdout"] == "['one', 'two words', '']\nHELLO\nWORLD\n"
    assert run_["stderr"] == "to stderr\n"
    assert reply["peak_memory_bytes"] >= 0


def test_no_stdin_means_empty_stdin(srv):
    reply = run(srv, {"language": "python",
                      "source": "import sys\nprint(repr(sys.stdin.read()))",
                      "stdin": None})
    assert reply["status"] == "ok", reply
    assert reply["run"]["stdout"] == "''\n"


def test_nonzero_exit(srv):
    reply = run(srv, {"language": "python",
                      "source": "import sys\nprint('x')\nsys.exit(7)"})
    check_reply(reply)
    assert reply["status"] == "nonzero_exit"
    assert reply["run"]["exit_code"] == 7 and reply["run"]["signal"] is None
    assert reply["run"]["stdout"] == "x\n"


def test_signaled(srv):
    reply = run(srv, {"language": "python",
                      "source": "import os, signal\n"
                                "os.kill(os.getpid(), signal.SIGSEGV)"})
    check_reply(reply)
    assert reply["status"] == "signaled"
    assert reply["run"]["exit_code"] is None
    assert reply["run"]["signal"] == 11


@pytest.mark.parametrize("lang,source", [("c", C_SUM), ("cpp", CPP_SUM)])
def test_compiled_plain_run(srv, installed, lang, source):
    need(installed, lang)
    reply = run(srv, {"language": lang, "source": source,
                      "stdin": "40 2"})
    check_reply(reply)
    assert reply["status"] == "ok", reply
    assert reply["compile"]["status"] == "ok"
    assert reply["compile"]["exit_code"] == 0
    assert reply["run"]["stdout"] == "42\n"


# 2. Tests sharing one compile.

@pytest.mark.parametrize("lang,source", [("c", C_SUM), ("cpp", CPP_SUM)])
def test_one_compile_three_tests(srv, installed, lang, source):
    need(installed, lang)
    reply = run(srv, {"language": lang, "source": source,
                      "tests": SUM_TESTS})
    check_reply(reply, tests=True)
    # One compile step for the whole request, then a run per test.
    assert reply["compile"]["status"] == "ok", reply
    assert reply["run"] is None
    assert [t["verdict"] for t in reply["tests"]] == \
        ["accepted", "wrong_answer", "runtime_error"]
    assert [t["status"] for t in reply["tests"]] == \
        ["ok", "ok", "nonzero_exit"]
    assert [t["stdout"] for t in reply["tests"]] == ["3\n", "4\n", ""]
    assert reply["tests"][2]["exit_code"] == 3
    # Overall: the first test that was not accepted, a wrong answer.
    assert reply["status"] == "ok"
    assert reply["accepted"] is False


def test_compile_once_shared_work_dir(srv, installed):
    """The tests run one after another in the sandbox that compiled the
    program: a file the first test writes is there for the next."""
    need(installed, "c")
    source = r"""
#include <stdio.h>
int main(void)
{
	int n = 0;
	FILE *f = fopen("count", "r");
	if (f) { fscanf(f, "%d", &n); fclose(f); }
	f = fopen("count", "w");
	fprintf(f, "%d\n", ++n);
	fclose(f);
	printf("%d\n", n);
	return 0;
}
"""
    reply = run(srv, {"language": "c", "source": source,
                      "tests": [{"expected_stdout": "1"},
                                {"expected_stdout": "2"},
                                {"expected_stdout": "3"}]})
    assert reply["status"] == "ok" and reply["accepted"] is True, reply
    assert [t["verdict"] for t in reply["tests"]] == ["accepted"] * 3


def test_all_accepted(srv):
    reply = run(srv, {
        "language": "python",
        "source": "print(sum(map(int, input().split())))",
        "tests": [{"stdin": "%d %d" % (i, i), "expected_stdout": "%d\n" % (2 * i)}
                  for i in range(10)],
    })
    check_reply(reply, tests=True)
    assert reply["status"] == "ok" and reply["accepted"] is True
    assert all(t["verdict"] == "accepted" for t in reply["tests"])


def test_trailing_newlines_are_ignored_only_at_the_end(srv):
    reply = run(srv, {
        "language": "python",
        "source": "print(input())",
        "tests": [
            {"stdin": "a", "expected_stdout": "a"},
            {"stdin": "a", "expected_stdout": "a\n\n\n"},
            {"stdin": "a", "expected_stdout": "a "},
            {"stdin": "a", "expected_stdout": "\na"},
            {"stdin": "a"},  # no expected output: any output passes
        ],
    })
    assert [t["verdict"] for t in reply["tests"]] == \
        ["accepted", "accepted", "wrong_answer", "wrong_answer",
         "accepted"], reply


def test_compile_error_skips_every_test(srv, installed):
    need(installed, "c")
    reply = run(srv, {"language": "c",
                      "source": "int main(void) { return undeclared; }",
                      "tests": SUM_TESTS})
    check_reply(reply, tests=True)
    assert reply["status"] == "nonzero_exit"
    assert reply["accepted"] is False
    assert reply["compile"]["status"] == "nonzero_exit"
    assert reply["compile"]["exit_code"] != 0
    assert "undeclared" in reply["compile"]["stderr"]
    assert reply["run"] is None
    assert reply["tests"] == [{"verdict": "skipped"}] * 3


def test_compile_error_without_tests(srv, installed):
    need(installed, "cpp")
    reply = run(srv, {"language": "cpp", "source": "int main() { oops }"})
    check_reply(reply)
    assert reply["status"] == "nonzero_exit"
    assert reply["compile"]["status"] == "nonzero_exit"
    assert reply["run"] is None


# 3. Limits.

def test_time_limit_per_test(srv):
    reply = run(srv, {
        "language": "python",
        "source": "import time\nn = int(input())\ntime.sleep(n)\nprint(n)",
        "tests": [{"stdin": "0", "expected_stdout": "0"},
                  {"stdin": "30", "expected_stdout": "30"},
                  {"stdin": "0", "expected_stdout": "0"}],
        "limits": {"wall_ms": 1000},
    })
    check_reply(reply, tests=True)
    assert [t["verdict"] for t in reply["tests"]] == \
        ["accepted", "time_limit", "accepted"], reply
    slow = reply["tests"][1]
    assert slow["status"] == "time_limit" and slow["exit_code"] is None
    assert 1000 <= slow["wall_ms"] < 10000
    assert reply["status"] == "time_limit"
    assert reply["accepted"] is False


def test_time_limit_plain_run(srv):
    reply = run(srv, {"language": "python", "source": "while True: pass",
                      "limits": {"wall_ms": 500}})
    check_reply(reply)
    assert reply["status"] == "time_limit"
    assert reply["run"]["status"] == "time_limit"
    assert reply["run"]["exit_code"] is None


def test_cpu_limit(srv):
    reply = run(srv, {"language": "python", "source": "while True: pass",
                      "limits": {"wall_ms": 20000, "cpu_ms": 1000}})
    check_reply(reply)
    assert reply["status"] == "time_limit", reply
    # The CPU limit, not the 20 s wall limit, ended it: the kernel's
    # SIGXCPU (RLIMIT_CPU) is what the run reports.
    assert reply["run"]["signal"] == 24, reply
    assert reply["run"]["exit_code"] is None


def test_memory_limit(srv, memory_cgroup):
    reply = run(srv, {
        "language": "python",
        "source": "x = bytearray(100 << 20)\nprint(len(x))",
        "limits": {"memory_mb": 32},
    })
    check_reply(reply)
    assert reply["status"] == "memory_limit", reply
    assert reply["run"]["status"] == "memory_limit"
    assert reply["run"]["stdout"] == ""
    assert reply["oom_killed"] is True


def test_memory_limit_verdict(srv, memory_cgroup):
    reply = run(srv, {
        "language": "python",
        "source": "n = int(input())\nx = bytearray(n << 20)\nprint(n)",
        "tests": [{"stdin": "1", "expected_stdout": "1"},
                  {"stdin": "100", "expected_stdout": "100"}],
        "limits": {"memory_mb": 32},
    })
    assert [t["verdict"] for t in reply["tests"]] == \
        ["accepted", "memory_limit"], reply
    assert reply["status"] == "memory_limit"


def test_output_limit(srv):
    reply = run(srv, {
        "language": "python",
        "source": "import sys\nsys.stdout.write('x' * 100000)",
        "limits": {"output_bytes": 1000},
    })
    check_reply(reply)
    assert reply["status"] == "output_limit", reply
    assert reply["run"]["output_truncated"] is True
    assert reply["run"]["stdout"] == "x" * 1000


def test_output_limit_verdict(srv):
    reply = run(srv, {
        "language": "python",
        "source": "import sys\nsys.stdout.write('x' * int(input()))",
        "tests": [{"stdin": "10", "expected_stdout": "x" * 10},
                  {"stdin": "100000"}],
        "limits": {"output_bytes": 1000},
    })
    assert [t["verdict"] for t in reply["tests"]] == \
        ["accepted", "output_limit"], reply
    assert reply["tests"][0]["output_truncated"] is False
    assert reply["tests"][1]["output_truncated"] is True


def test_limits_at_the_maximum_are_accepted(srv):
    reply = run(srv, {"language": "python", "source": "print(1)",
                      "limits": {"wall_ms": 600000, "memory_mb": 8192,
                                 "pids": 128, "output_bytes": 8 * MiB,
                                 "compile_wall_ms": 600000,
                                 "cpu_ms": None}})
    assert reply["status"] == "ok", reply


# 4. Files.

def test_files_with_entry(srv):
    reply = run(srv, {
        "language": "python",
        "files": {
            "solution.py": "from lib.util import double\n"
                           "print(double(int(input())))\n"
                           "print(open('data.txt').read(), end='')",
            "lib/__init__.py": "",
            "lib/util.py": "def double(x):\n    return 2 * x\n",
            "data.txt": "some data\n",
        },
        "entry": "solution.py",
        "stdin": "21",
    })
    check_reply(reply)
    assert reply["status"] == "ok", reply
    assert reply["run"]["stdout"] == "42\nsome data\n"


def test_files_default_entry(srv):
    reply = run(srv, {"language": "python",
                      "files": {"main.py": "import util\nutil.hi()",
                                "util.py": "def hi():\n    print('hi')"}})
    assert reply["status"] == "ok", reply
    assert reply["run"]["stdout"] == "hi\n"


def test_files_compiled(srv, installed):
    need(installed, "c")
    reply = run(srv, {"language": "c",
                      "files": {"main.c": '#include "sum.h"\n' + C_SUM,
                                "sum.h": "#define UNUSED 1\n"},
                      "tests": [{"stdin": "2 3", "expected_stdout": "5"}]})
    assert reply["accepted"] is True, reply


# 5. Output that is not UTF-8.

def test_non_utf8_output_is_repaired(srv):
    code, headers, reply = srv.post("/v1/run", {
        "language": "python",
        "source": "import sys\nsys.stdout.buffer.write(b'\\xff\\xfeok\\n')\n"
                  "sys.stderr.buffer.write(b'\\xc3')",
    })
    assert code == 200 and headers["Content-Type"].startswith(
        "application/json")
    assert reply["status"] == "ok", reply
    assert reply["run"]["stdout"] == "\ufffd\ufffdok\n"
    assert reply["run"]["stderr"] == "\ufffd"


# 6. Bad requests.

def test_unknown_field(srv):
    unprocessable(srv, {"language": "python", "source": "", "timeout": 1},
                  "timeout")
    unprocessable(srv, {"language": "python", "source": "",
                        "limits": {"wall": 1}}, "limits.wall")
    unprocessable(srv, {"language": "python", "source": "",
                        "tests": [{"stdin": "", "expected": ""}]},
                  "tests[0].expected")


@pytest.mark.parametrize("body,field", [
    ({"language": 1, "source": ""}, "language"),
    ({"language": "python", "source": 1}, "source"),
    ({"language": "python", "source": ["print(1)"]}, "source"),
    ({"language": "python", "source": "", "args": "a b"}, "args"),
    ({"language": "python", "source": "", "args": [1]}, "args"),
    ({"language": "python", "source": "", "args": ["a\u0000b"]}, "args"),
    ({"language": "python", "source": "", "stdin": 5}, "stdin"),
    ({"language": "python", "source": "", "limits": 5}, "limits"),
    ({"language": "python", "source": "", "limits": {"wall_ms": "1000"}},
     "limits.wall_ms"),
    ({"language": "python", "source": "", "limits": {"wall_ms": 1.5}},
     "limits.wall_ms"),
    ({"language": "python", "source": "", "limits": {"memory_mb": 0}},
     "limits.memory_mb"),
    ({"language": "python", "source": "", "limits": {"pids": -1}},
     "limits.pids"),
    ({"language": "python", "source": "", "limits": {"cpu_ms": True}},
     "limits.cpu_ms"),
    ({"language": "python", "source": "", "tests": {"stdin": ""}}, "tests"),
    ({"language": "python", "source": "", "tests": []}, "tests"),
    ({"language": "python", "source": "", "tests": ["1"]}, "tests[0]"),
    ({"language": "python", "source": "", "tests": [{}, {"stdin": 1}]},
     "tests[1].stdin"),
    ({"language": "python", "source": "",
      "tests": [{"expected_stdout": 3}]}, "tests[0].expected_stdout"),
    ({"language": "python", "source": "", "stdin": "",
      "tests": [{"stdin": ""}]}, "stdin"),
    ({"language": "python", "files": ["main.py"]}, "files"),
    ({"language": "python", "files": {"main.py": 1}}, "files"),
    ({"language": "python", "files": {"main.py": "", "../x": ""}}, "files"),
    ({"language": "python", "files": {"main.py": "", "/etc/x": ""}},
     "files"),
    ({"language": "python", "files": {"main.py": "", "a//b": ""}}, "files"),
    ({"language": "python", "files": {"util.py": ""}}, "files"),
    ({"language": "python", "files": {"a.py": "", "main.py": ""},
      "entry": "a.py"}, "files"),
    ({"language": "python", "files": {"a.py": ""}, "entry": "b.py"},
     "entry"),
    ({"language": "python", "files": {"a.py": ""}, "entry": 1}, "entry"),
    ({"language": "python", "source": "", "entry": "main.py"}, "entry"),
    ({"language": "python", "source": "", "files": {"main.py": ""}},
     "files"),
    ({"language": "python"}, "source"),
    ({"source": "print(1)"}, "language"),
    ([], "body"),
    ("print(1)", "body"),
])
def test_bad_types(srv, body, field):
    unprocessable(srv, body, field)


def test_malformed_json(srv):
    for raw in (b"{", b"not json", b'{"language": "python", "source": ""}x',
                b'{"language": "python", "language": "c", "source": ""}',
                b'{"language": "python", "source": "\xff"}', b""):
        code, _, reply = srv.post("/v1/run", raw)
        assert code == 422, (raw, reply)
        assert reply["error"]["code"] == "unprocessable"
        assert reply["error"]["message"].startswith("body: "), reply


def test_unknown_language(srv):
    msg = unprocessable(srv, {"language": "cobol", "source": ""},
                        "language")
    assert "cobol" in msg and "python" in msg


def test_too_many_tests(srv):
    tests = [{"stdin": ""}] * 257
    msg = unprocessable(srv, {"language": "python", "source": "",
                              "tests": tests}, "tests")
    assert "256" in msg
    # 256 is the most, and they share one sandbox.
    reply = run(srv, {"language": "bash", "source": "read x; echo $x",
                      "tests": [{"stdin": "%d\n" % i,
                                 "expected_stdout": "%d" % i}
                                for i in range(256)]})
    assert reply["accepted"] is True, reply["status"]
    assert len(reply["tests"]) == 256


@pytest.mark.parametrize("limits,field", [
    ({"wall_ms": 3600001}, "limits.wall_ms"),
    ({"cpu_ms": 3600001}, "limits.cpu_ms"),
    ({"compile_wall_ms": 10 ** 9}, "limits.compile_wall_ms"),
    ({"memory_mb": 8193}, "limits.memory_mb"),
    ({"pids": 129}, "limits.pids"),
    ({"output_bytes": 8 * MiB + 1}, "limits.output_bytes"),
    ({"wall_ms": 2 ** 63 - 1}, "limits.wall_ms"),
])
def test_limits_above_the_server_maximum(srv, limits, field):
    msg = unprocessable(srv, {"language": "python", "source": "",
                              "limits": limits}, field)
    assert "on this server" in msg


def test_limits_follow_the_server_configuration():
    with SbxServer(extra_args=["--max-time", "5s", "--max-memory", "256M"]) \
            as s:
        unprocessable(s, {"language": "python", "source": "",
                          "limits": {"wall_ms": 5001}}, "limits.wall_ms")
        unprocessable(s, {"language": "python", "source": "",
                          "limits": {"memory_mb": 257}}, "limits.memory_mb")
        reply = run(s, {"language": "python", "source": "print(1)",
                        "limits": {"wall_ms": 5000, "memory_mb": 256}})
        assert reply["status"] == "ok", reply


def test_language_not_installed(srv, installed):
    # julia, swift and lean come from no Debian 12 package.
    missing = [l for l in ("julia", "swift", "lean", "rust", "go", "lua",
                           "ruby", "php", "java", "nodejs", "perl")
               if l not in installed]
    if not missing:
        pytest.skip("every language is installed on this host")
    reply = run(srv, {"language": missing[0], "source": "",
                      "tests": [{"stdin": ""}]})
    check_reply(reply, tests=True)
    assert reply["status"] == "sandbox_error"
    assert "not installed" in reply["error"]
    assert reply["tests"] == [{"verdict": "skipped"}]
    assert reply["accepted"] is False


def test_wrong_method(srv):
    code, headers, reply = srv.get("/v1/run")
    assert code == 405, reply
    assert headers.get("Allow") == "POST"

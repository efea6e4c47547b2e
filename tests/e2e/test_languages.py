"""SandboxFusion's languages through POST /run_code, on a real `sbx serve`.

Every language of SandboxFusion's `Language` list whose runtime Debian 12
or npm ships gets a greeting program (reads a name on stdin, prints
"Hello, <name>!"), and the compiled ones a program that does not compile;
the test-framework languages (go_test, jest, pytest, junit) a passing and a
failing test. The status words checked are SandboxFusion's. A language
whose runtime this host lacks is skipped with the reason (`make deps`
installs them all). The languages no Debian 12 package provides, the GPU
ones and sql are checked for the answer they get instead.
"""
import base64
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from sbxserver import SbxServer

# SandboxFusion's Language literal (sandbox/runners/types.py).
SANDBOXFUSION_LANGUAGES = [
    "python", "cpp", "nodejs", "go", "go_test", "java", "php", "csharp",
    "bash", "typescript", "sql", "rust", "cuda", "lua", "R", "perl", "D_ut",
    "ruby", "scala", "julia", "pytest", "junit", "kotlin_script", "jest",
    "verilog", "python_gpu", "lean", "swift", "racket",
]

# JVM compilers and the like start slowly on a busy 2-core machine; these
# are limits, not expectations.
SLOW = {"compile_timeout": 120, "run_timeout": 120}

# language -> (greeting program, program that does not compile or None).
PROGRAMS = {
    "python": ('print("Hello, " + input() + "!")', None),
    "bash": ('read -r x\necho "Hello, $x!"', None),
    "c": ('#include <stdio.h>\nint main(void) { char s[64]; '
          'if (scanf("%63s", s) != 1) return 1; '
          'printf("Hello, %s!\\n", s); return 0; }',
          "int main(void) { return undeclared_name; }"),
    "cpp": ("#include <iostream>\n#include <string>\nint main() { "
            "std::string s; std::cin >> s; "
            'std::cout << "Hello, " << s << "!" << std::endl; }',
            "int main() { int a = ; }"),
    "nodejs": ("const s = require('fs').readFileSync(0, 'utf8').trim();\n"
               "console.log('Hello, ' + s + '!');", None),
    "typescript": ("import { readFileSync } from 'fs';\n"
                   "const s: string = readFileSync(0, 'utf8').trim();\n"
                   "console.log(`Hello, ${s}!`);", None),
    "java": ("import java.util.Scanner;\npublic class Main { "
             "public static void main(String[] a) { System.out.println("
             '"Hello, " + new Scanner(System.in).next() + "!"); } }',
             "public class Main { public static void main(String[] a) "
             '{ int x = "not an int"; } }'),
    "go": ('package main\nimport "fmt"\nfunc main() '
           '{ var s string; fmt.Scan(&s); fmt.Printf("Hello, %s!\\n", s) }',
           "package main\nfunc main() { x := }"),
    "rust": ("fn main() { let mut s = String::new(); "
             "std::io::stdin().read_line(&mut s).unwrap(); "
             'println!("Hello, {}!", s.trim()); }',
             'fn main() { let x: i32 = "no"; }'),
    "perl": ('my $x = <STDIN>; chomp $x; print "Hello, $x!\\n";', None),
    "ruby": ('puts "Hello, #{STDIN.gets.chomp}!"', None),
    "php": ('<?php echo "Hello, ", trim(fgets(STDIN)), "!\\n";', None),
    "lua": ('print("Hello, " .. io.read() .. "!")', None),
    "R": ('x <- readLines(file("stdin"), n = 1)\n'
          'cat(sprintf("Hello, %s!\\n", x))', None),
    "D_ut": ("import std.stdio, std.string;\n"
             'void main() { writeln("Hello, ", readln().strip(), "!"); }',
             'void main() { int x = "no"; }'),
    # Not Main: the run command names the object the code declares.
    "scala": ("object Greeter { def main(args: Array[String]): Unit = "
              'println("Hello, " + scala.io.StdIn.readLine() + "!") }',
              "object Main { def main(args: Array[String]): Unit = "
              '{ val x: Int = "no" } }'),
    "kotlin_script": ('println("Hello, " + readLine() + "!")', None),
    "csharp": ("using System; class P { static void Main() { "
               'Console.WriteLine("Hello, " + Console.ReadLine() + "!"); '
               "} }",
               'class P { static void Main() { int x = "no"; } }'),
    "racket": ('#lang racket\n(printf "Hello, ~a!\\n" (read-line))', None),
    "verilog": ("module tb;\n  reg [8*64-1:0] word;\n  integer r;\n"
                "  initial begin\n"
                "    r = $fscanf(32'h8000_0000, \"%s\", word);\n"
                "    $display(\"Hello, %0s!\", word);\n"
                "    $finish;\n  end\nendmodule\n",
                "module tb; initial begin x = ; end endmodule"),
}
COMPILED = sorted(k for k, (_, broken) in PROGRAMS.items() if broken)

# Test frameworks: language -> (passing test, failing test, what the
# failing run's output says).
FRAMEWORKS = {
    "pytest": ("def add(a, b):\n    return a + b\n\n"
               "def test_add():\n    assert add(1, 2) == 3\n",
               "def add(a, b):\n    return a - b\n\n"
               "def test_add():\n    assert add(1, 2) == 3\n",
               "1 failed"),
    # SandboxFusion's own go_test examples use testify.
    "go_test": ('package main\nimport (\n\t"testing"\n'
                '\t"github.com/stretchr/testify/assert"\n)\n'
                "func Add(a, b int) int { return a + b }\n"
                "func TestAdd(t *testing.T) "
                "{ assert.Equal(t, 3, Add(1, 2)) }\n",
                'package main\nimport "testing"\n'
                "func Add(a, b int) int { return a - b }\n"
                "func TestAdd(t *testing.T) { if Add(1, 2) != 3 "
                '{ t.Fatal("1 + 2 is not 3") } }\n',
                "FAIL"),
    "jest": ("import { describe, expect, test } from '@jest/globals';\n"
             "function add(a: number, b: number): number { return a + b }\n"
             "describe('add', () => { test('adds', () => "
             "{ expect(add(1, 2)).toBe(3); }); });\n",
             "import { expect, test } from '@jest/globals';\n"
             "function add(a: number, b: number): number { return a - b }\n"
             "test('adds', () => { expect(add(1, 2)).toBe(3); });\n",
             "1 failed"),
    "junit": ("import org.junit.jupiter.api.Test;\n"
              "import static org.junit.jupiter.api.Assertions.*;\n"
              "public class Adder { static int add(int a, int b) "
              "{ return a + b; } }\n"
              "class AdderTest { @Test void adds() "
              "{ assertEquals(3, Adder.add(1, 2)); } }\n",
              "import org.junit.jupiter.api.Test;\n"
              "import static org.junit.jupiter.api.Assertions.*;\n"
              "public class Adder { static int add(int a, int b) "
              "{ return a - b; } }\n"
              "class AdderTest { @Test void adds() "
              "{ assertEquals(3, Adder.add(1, 2)); } }\n",
              "1 tests failed"),
}

# Languages Debian 12 does not package; sbx offers them when installed
# under /usr/local.
UNPACKAGED = ["julia", "swift", "lean"]
GPU = ["cuda", "python_gpu"]


@pytest.fixture(scope="module")
def srv():
    with SbxServer() as s:
        yield s
        assert s.proc.poll() is None, "the server died:\n" + s.read_log()


@pytest.fixture(scope="module")
def installed(srv):
    status, _, health = srv.get("/v1/health")
    assert status == 200, health
    return set(health["languages"])


def cases():
    """Every slow request of this file: key -> (language, body)."""
    out = {}
    for lang, (greeting, broken) in PROGRAMS.items():
        out["greet", lang] = (lang, dict(SLOW, code=greeting, language=lang,
                                         stdin="world\n"))
        if broken:
            out["broken", lang] = (lang, dict(SLOW, code=broken,
                                              language=lang))
    for lang, (passing, failing, _) in FRAMEWORKS.items():
        out["pass", lang] = (lang, dict(SLOW, code=passing, language=lang))
        out["fail", lang] = (lang, dict(SLOW, code=failing, language=lang))
    # junit's file is named after the public class.
    out["pass", "junit"][1]["fetch_files"] = ["Adder.java"]
    return out


@pytest.fixture(scope="module")
def submitted(srv, installed):
    """Sends the slow requests a few at a time up front (JVM and compiler
    start-ups dominate, and they use one core each); the tests then check
    the answers. key -> future of the response."""
    todo = {k: v for k, v in cases().items() if v[0] in installed}
    with ThreadPoolExecutor(max_workers=min(4, max(2, os.cpu_count() or 2))) as ex:
        yield {k: ex.submit(run_code, srv, body)
               for k, (_, body) in todo.items()}


def need(installed, lang):
    if lang not in installed:
        pytest.skip("the runtime of '%s' is not installed on this host "
                    "(make deps LANGS=%s installs it)" % (lang, lang))


def run_code(srv, body):
    status, headers, resp = srv.post("/run_code", body, timeout=600)
    assert status == 200, (status, resp)
    assert headers.get("Content-Type", "").startswith("application/json")
    return resp


def finished_ok(res):
    return (res is not None and res["status"] == "Finished" and
            res["return_code"] == 0)


@pytest.mark.parametrize("lang", sorted(PROGRAMS))
def test_greeting_reads_stdin(submitted, installed, lang):
    need(installed, lang)
    resp = submitted["greet", lang].result()
    assert resp["status"] == "Success", resp
    if lang in COMPILED:
        assert finished_ok(resp["compile_result"]), resp
    else:
        assert resp["compile_result"] is None, resp
    assert finished_ok(resp["run_result"]), resp
    assert resp["run_result"]["stdout"] == "Hello, world!\n", resp


@pytest.mark.parametrize("lang", COMPILED)
def test_compile_error_is_failed_and_skips_the_run(submitted, installed,
                                                   lang):
    need(installed, lang)
    resp = submitted["broken", lang].result()
    assert resp["status"] == "Failed", resp
    assert resp["message"] == "", resp
    comp = resp["compile_result"]
    assert comp["status"] == "Finished", resp
    assert comp["return_code"] != 0, resp
    assert comp["stdout"] or comp["stderr"], resp
    assert resp["run_result"] is None, resp


@pytest.mark.parametrize("lang", sorted(FRAMEWORKS))
def test_framework_passing_test_is_success(submitted, installed, lang):
    need(installed, lang)
    resp = submitted["pass", lang].result()
    assert resp["status"] == "Success", resp
    assert finished_ok(resp["run_result"]), resp
    if lang == "junit":
        assert finished_ok(resp["compile_result"]), resp
        got = base64.b64decode(resp["files"]["Adder.java"]).decode()
        assert got == FRAMEWORKS["junit"][0]


@pytest.mark.parametrize("lang", sorted(FRAMEWORKS))
def test_framework_failing_test_is_failed(submitted, installed, lang):
    need(installed, lang)
    says = FRAMEWORKS[lang][2]
    resp = submitted["fail", lang].result()
    assert resp["status"] == "Failed", resp
    assert resp["message"] == "", resp
    run = resp["run_result"]
    assert run["status"] == "Finished", resp
    assert run["return_code"] not in (0, None), resp
    assert says in run["stdout"] + run["stderr"], resp


def test_php_tag_is_added_when_missing(srv, installed):
    need(installed, "php")
    for code in ('echo "Hello, world!\\n";',
                 '  \n<?php echo "Hello, world!\\n";'):
        resp = run_code(srv, {"code": code, "language": "php"})
        assert resp["status"] == "Success", (code, resp)
        assert resp["run_result"]["stdout"] == "Hello, world!\n", resp


def test_scala_without_an_object_fails_to_compile(srv, installed):
    need(installed, "scala")
    resp = run_code(srv, dict(SLOW, code="class NoEntry { def f = 1 }",
                              language="scala"))
    # SandboxFusion says the same words; it reports them as a
    # SandboxError, which its clients retry, so sbx reports a failed
    # compile instead.
    assert resp["status"] == "Failed", resp
    assert resp["compile_result"]["return_code"] == 1, resp
    assert resp["compile_result"]["stderr"] == "Object name not found.", \
        resp
    assert resp["run_result"] is None, resp


def test_node_packages_are_read_only(srv, installed):
    need(installed, "typescript")
    code = ("import { writeFileSync } from 'fs';\n"
            "try { writeFileSync('/opt/sbx-node/package.json', '{}'); "
            "console.log('written'); }\n"
            "catch (e: any) { console.log(e.code); }\n")
    resp = run_code(srv, {"code": code, "language": "typescript"})
    assert resp["status"] == "Success", resp
    assert resp["run_result"]["stdout"] == "EROFS\n", resp


def test_typescript_is_not_type_checked(srv, installed):
    # tsx, as in SandboxFusion, strips types without checking them.
    need(installed, "typescript")
    resp = run_code(srv, {"code": "const n: number = 'text';\n"
                                  "console.log(n);", "language":
                          "typescript"})
    assert resp["status"] == "Success", resp
    assert resp["run_result"]["stdout"] == "text\n", resp


def test_every_sandboxfusion_language_is_covered():
    covered = set(PROGRAMS) | set(FRAMEWORKS) | set(UNPACKAGED) | \
        set(GPU) | {"sql"}
    assert set(SANDBOXFUSION_LANGUAGES) <= covered


def test_unknown_language_is_still_422(srv):
    status, _, resp = srv.post("/run_code", {"code": "", "language": "D"})
    assert status == 422, resp


def test_sql_answers_as_sandboxfusion_does(srv):
    code = "SELECT 1;"
    resp = run_code(srv, {"code": code, "language": "sql"})
    assert resp == {
        "status": "SandboxError",
        "message": "exception on running code %s: 'sql' None" % code,
        "compile_result": None,
        "run_result": None,
        "executor_pod_name": None,
        "files": {},
    }


@pytest.mark.parametrize("lang", GPU)
def test_gpu_languages_say_why(srv, lang):
    resp = run_code(srv, {"code": "", "language": lang})
    assert resp["status"] == "SandboxError", resp
    assert "needs a GPU host" in resp["message"], resp
    assert resp["run_result"] is None, resp


@pytest.mark.parametrize("lang", UNPACKAGED)
def test_unpackaged_languages_say_why_or_run(srv, installed, lang):
    resp = run_code(srv, {"code": "", "language": lang})
    if lang in installed:
        assert resp["status"] in ("Success", "Failed"), resp
        return
    assert resp["status"] == "SandboxError", resp
    assert "is not installed" in resp["message"], resp
    assert "Debian 12" in resp["message"], resp
    assert resp["run_result"] is None and resp["compile_result"] is None

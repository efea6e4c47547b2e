/*
 * Unit tests for src/runtime/lang.c: every SandboxFusion language name is
 * in the table, and a recipe turns into the job SandboxFusion's runner
 * would make: junit's file named after the public class, scala's run
 * naming the first object (or a failed compile without one), php's tag
 * put first when missing, user args appended to the run command.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "runtime/lang.h"
#include "base/util.h"
#include "base/banned.h"

static const char *const sandboxfusion_languages[] = {
	"python",     "cpp",   "nodejs",	"go",	  "go_test",
	"java",	      "php",   "csharp",	"bash",	  "typescript",
	"sql",	      "rust",  "cuda",		"lua",	  "R",
	"perl",	      "D_ut",  "ruby",		"scala",  "julia",
	"pytest",     "junit", "kotlin_script", "jest",	  "verilog",
	"python_gpu", "lean",  "swift",		"racket",
};

static const char *last(char **argv)
{
	size_t n = 0;

	while (argv[n])
		n++;
	assert_true(n > 0);
	return argv[n - 1];
}

static void job(struct lang_job *j, const char *lang, const char *code)
{
	const struct lang *l = lang_find(lang);

	assert_non_null(l);
	lang_job_init(j, l, code, strlen(code), NULL);
}

static void test_every_sandboxfusion_language_is_known(void **state)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(sandboxfusion_languages); i++)
		assert_non_null(lang_find(sandboxfusion_languages[i]));
	assert_null(lang_find("D"));
	assert_null(lang_find("Python"));
}

static void test_no_runner_and_gpu_are_never_available(void **state)
{
	char why[256];

	assert_false(lang_available(lang_find("sql")));
	assert_false(lang_available(lang_find("cuda")));
	assert_false(lang_available(lang_find("python_gpu")));
	lang_why_unavailable(lang_find("cuda"), why, sizeof(why));
	assert_non_null(strstr(why, "needs a GPU host"));
	lang_why_unavailable(lang_find("julia"), why, sizeof(why));
	assert_non_null(strstr(why, "'julia' is not installed"));
	assert_non_null(strstr(why, "Debian 12"));
}

static void test_junit_file_is_the_public_class(void **state)
{
	struct lang_job j;

	job(&j, "junit",
	    "import x.Test;\nclass Helper {}\n"
	    "public final class CalcTest { @Test void t() {} }\n");
	assert_string_equal(j.source, "CalcTest.java");
	assert_non_null(j.compile);
	assert_string_equal(j.compile[0], "javac");
	assert_string_equal(last(j.compile), "CalcTest.java");
	lang_job_release(&j);

	/* "publicclass" and "mypublic class" are not the keyword. */
	job(&j, "junit", "mypublic class A {} publicclass B {} class C {}");
	assert_string_equal(j.source, "Main.java");
	lang_job_release(&j);

	job(&j, "junit", "public abstract class Base {}");
	assert_string_equal(j.source, "Base.java");
	lang_job_release(&j);
}

static void test_scala_runs_the_first_object(void **state)
{
	struct lang_job j;

	job(&j, "scala",
	    "class A\nobject   Greeter extends App { println(1) }\n"
	    "object Other\n");
	assert_string_equal(j.source, "main.scala");
	assert_string_equal(j.compile[0], "scalac");
	assert_string_equal(last(j.run), "Greeter");
	lang_job_release(&j);
}

static void test_scala_without_object_fails_to_compile(void **state)
{
	struct lang_job j;

	job(&j, "scala", "class A { val objects = 1 }");
	assert_string_equal(j.compile[0], "bash");
	assert_non_null(strstr(j.compile[2], "Object name not found."));
	lang_job_release(&j);
}

static void test_php_tag_is_put_first_when_missing(void **state)
{
	struct lang_job j;

	job(&j, "php", "echo 1;");
	assert_int_equal(j.code_len, strlen("<?php\necho 1;"));
	assert_memory_equal(j.code, "<?php\necho 1;", j.code_len);
	lang_job_release(&j);

	/* Leading blanks go, as SandboxFusion's lstrip() does. */
	job(&j, "php", " \n\t<?php echo 1;");
	assert_string_equal(j.code, "<?php echo 1;");
	lang_job_release(&j);

	job(&j, "php", "");
	assert_string_equal(j.code, "<?php\n");
	lang_job_release(&j);

	/* Other languages keep the code byte for byte. */
	job(&j, "python", "  print(1)\n");
	assert_string_equal(j.code, "  print(1)\n");
	assert_null(j.compile);
	lang_job_release(&j);
}

static void test_args_are_appended_to_the_run(void **state)
{
	char *extra[] = {"a b", "c", NULL};
	struct lang_job j;

	lang_job_init(&j, lang_find("rust"), "", 0, extra);
	assert_string_equal(j.run[0], "./test");
	assert_string_equal(j.run[1], "a b");
	assert_string_equal(j.run[2], "c");
	assert_null(j.run[3]);
	lang_job_release(&j);
}

static void test_only_node_recipes_bind(void **state)
{
	struct lang_job j;
	unsigned i;
	const struct lang *l;

	for (i = 0; (l = lang_at(i)); i++) {
		lang_job_init(&j, l, "x", 1, NULL);
		if (!(l->flags & LANG_NODE))
			assert_null(j.bind_src);
		else if (j.bind_src)
			assert_string_equal(j.bind_dst, LANG_NODE_MOUNT);
		assert_non_null(j.run);
		lang_job_release(&j);
	}
}

static void test_list_says_when_it_is_cut(void **state)
{
	char all[1024], few[24];

	lang_list(all, sizeof(all));
	assert_non_null(strstr(all, "python, "));
	assert_non_null(strstr(all, "kotlin_script"));
	assert_null(strstr(all, "..."));
	lang_list(few, sizeof(few));
	assert_true(strlen(few) < sizeof(few));
	assert_int_equal(strncmp(few, all, strlen(few) - 5), 0);
	assert_string_equal(few + strlen(few) - 5, ", ...");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_sandboxfusion_language_is_known),
		cmocka_unit_test(test_no_runner_and_gpu_are_never_available),
		cmocka_unit_test(test_junit_file_is_the_public_class),
		cmocka_unit_test(test_scala_runs_the_first_object),
		cmocka_unit_test(test_scala_without_object_fails_to_compile),
		cmocka_unit_test(test_php_tag_is_put_first_when_missing),
		cmocka_unit_test(test_args_are_appended_to_the_run),
		cmocka_unit_test(test_only_node_recipes_bind),
		cmocka_unit_test(test_list_says_when_it_is_cut),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Unit tests for the execution store (src/store/executions.c) and the
 * rollout parsers (src/server/executions_parse.c): an execution goes
 * queued -> running -> one terminal state and then never changes, an
 * idempotency key names one execution, recovery turns running rows into
 * lost ones or queues them again by their retries, rLLM results keep the
 * first; the parsers refuse what they must and the setup templates expand
 * as Python's str.format does for plain fields.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "base/buf.h"
#include "base/util.h"
#include "server/executions.h"
#include "store/executions.h"
#include "base/banned.h"

struct fixture {
	char dir[64];
	char *path;
	struct exec_store *s;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char err[256];

	snprintf(f->dir, sizeof(f->dir), "/tmp/sbx-test-exec-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	f->path = xstrfmt("%s/sbx.db", f->dir);
	f->s = exec_store_open(f->path, err, sizeof(err));
	assert_non_null(f->s);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char *wal = xstrfmt("%s-wal", f->path),
	     *shm = xstrfmt("%s-shm", f->path);

	exec_store_close(f->s);
	unlink(f->path);
	unlink(wal);
	unlink(shm);
	rmdir(f->dir);
	free(wal);
	free(shm);
	free(f->path);
	free(f);
	return 0;
}

static void add(struct exec_store *s, const char *id, const char *key,
		unsigned retries, int want)
{
	json_t *pool = json_pack("{s:s}", "mode", "persistent");
	json_t *task = json_pack("{s:i}", "n", 1);
	json_t *cfg = json_object(), *labels = json_pack("{s:s}", "b", "x");
	struct exec_new e = {.id = id,
			     .idem_key = key,
			     .agent = "ag-1",
			     .entry = "agent:rollout",
			     .pool = pool,
			     .task = task,
			     .agent_config = cfg,
			     .labels = labels,
			     .timeout_ms = 5000,
			     .retries = retries};
	char existing[64] = "";

	assert_int_equal(exec_store_add(s, &e, existing, sizeof(existing)),
			 want);
	json_decref(pool);
	json_decref(task);
	json_decref(cfg);
	json_decref(labels);
}

static const char *status_of(struct exec_store *s, const char *id, char *out,
			     size_t n)
{
	json_t *row = exec_store_get(s, id);

	assert_non_null(row);
	str_copy(out, n, json_string_value(json_object_get(row, "status")));
	json_decref(row);
	return out;
}

static void test_a_terminal_row_never_changes(void **state)
{
	struct fixture *f = *state;
	json_t *res = json_pack("{s:b}", "success", 1), *row;
	char st[32];

	add(f->s, "e1", NULL, 0, 0);
	assert_string_equal(status_of(f->s, "e1", st, sizeof(st)), "queued");
	assert_int_equal(exec_store_start(f->s, "e1", "sb-1", "u-1"), 1);
	assert_int_equal(exec_store_start(f->s, "e1", "sb-1", "u-1"), 0);
	assert_int_equal(exec_store_finish(f->s, "e1", "completed", res, NULL),
			 1);
	json_object_set_new(res, "success", json_false());
	assert_int_equal(exec_store_finish(f->s, "e1", "failed", res, "x"), 0);
	assert_int_equal(exec_store_requeue(f->s, "e1"), 0);
	row = exec_store_get(f->s, "e1");
	assert_string_equal(json_string_value(json_object_get(row, "status")),
			    "completed");
	assert_true(json_is_true(
		json_object_get(json_object_get(row, "result"), "success")));
	assert_int_equal(json_integer_value(json_object_get(row, "attempts")),
			 1);
	assert_int_equal(json_integer_value(json_object_get(row, "seq")), 1);
	json_decref(row);
	json_decref(res);
	assert_null(exec_store_get(f->s, "nope"));
}

static void test_an_idempotency_key_names_one_execution(void **state)
{
	struct fixture *f = *state;
	json_t *pool = json_object(), *o = json_object();
	struct exec_new e = {.id = "e3",
			     .idem_key = "k",
			     .agent = "a",
			     .entry = "m",
			     .pool = pool,
			     .task = o,
			     .agent_config = o,
			     .labels = o};
	char existing[64] = "";

	add(f->s, "e2", "k", 0, 0);
	assert_int_equal(exec_store_add(f->s, &e, existing, sizeof(existing)),
			 1);
	assert_string_equal(existing, "e2");
	assert_null(exec_store_get(f->s, "e3"));
	json_decref(pool);
	json_decref(o);
}

static int recovered_n;

static void recovered(void *arg, json_t *exec)
{
	recovered_n++;
}

static void test_recovery_loses_or_requeues_by_retries(void **state)
{
	struct fixture *f = *state;
	unsigned requeued = 0;
	char st[32];
	json_t *row;

	add(f->s, "none", NULL, 0, 0);
	add(f->s, "one", NULL, 1, 0);
	add(f->s, "waiting", NULL, 0, 0);
	exec_store_start(f->s, "none", "sb", "u");
	exec_store_start(f->s, "one", "sb", "u");
	recovered_n = 0;
	assert_int_equal(exec_store_recover(f->s, "lost: gone", recovered, NULL,
					    &requeued),
			 1);
	assert_int_equal(requeued, 1);
	assert_int_equal(recovered_n, 2); /* "one" and "waiting" */
	assert_string_equal(status_of(f->s, "none", st, sizeof(st)), "lost");
	assert_string_equal(status_of(f->s, "one", st, sizeof(st)), "queued");
	row = exec_store_get(f->s, "none");
	assert_string_equal(json_string_value(json_object_get(
				    json_object_get(row, "result"), "error")),
			    "lost: gone");
	json_decref(row);
	row = exec_store_get(f->s, "one");
	assert_int_equal(json_integer_value(json_object_get(row, "retries")),
			 0);
	json_decref(row);
}

static void test_list_filters(void **state)
{
	struct fixture *f = *state;
	struct exec_query q = {0};
	json_t *res = json_object(), *arr;

	add(f->s, "a", NULL, 0, 0);
	add(f->s, "b", NULL, 0, 0);
	exec_store_finish(f->s, "b", "failed", res, "x");
	q.status = "done";
	arr = exec_store_list(f->s, &q);
	assert_int_equal(json_array_size(arr), 1);
	json_decref(arr);
	q.status = NULL;
	q.label_key = "b";
	q.label_value = "x";
	arr = exec_store_list(f->s, &q);
	assert_int_equal(json_array_size(arr), 2);
	json_decref(arr);
	q.label_value = "y";
	arr = exec_store_list(f->s, &q);
	assert_int_equal(json_array_size(arr), 0);
	json_decref(arr);
	memset(&q, 0, sizeof(q));
	q.status = "done";
	q.by_seq = true;
	q.done_after = 1;
	arr = exec_store_list(f->s, &q);
	assert_int_equal(json_array_size(arr), 0);
	json_decref(arr);
	assert_int_equal(exec_store_last_seq(f->s), 1);
	json_decref(res);
}

static void test_rllm_results_keep_the_first(void **state)
{
	struct fixture *f = *state;
	json_t *a = json_pack("{s:i}", "n", 1), *b = json_pack("{s:i}", "n", 2);
	json_t *got;

	assert_null(exec_store_rllm_get(f->s, "r"));
	assert_int_equal(exec_store_rllm_put(f->s, "r", a), 1);
	assert_int_equal(exec_store_rllm_put(f->s, "r", b), 0);
	got = exec_store_rllm_get(f->s, "r");
	assert_int_equal(json_integer_value(json_object_get(got, "n")), 1);
	assert_int_equal(exec_store_rllm_duplicates(f->s), 1);
	json_decref(got);
	json_decref(a);
	json_decref(b);
}

static void expand(const char *tmpl, const char *want)
{
	json_t *task = json_pack("{s:s,s:i,s:[i]}", "package", "numpy", "n", 3,
				 "list", 1);
	char err[256] = "";
	struct buf b;
	int r;

	buf_init(&b);
	r = executions_template(tmpl, task, &b, err, sizeof(err));
	if (want) {
		assert_int_equal(r, 0);
		assert_string_equal(b.data ? b.data : "", want);
	} else {
		assert_int_equal(r, -EINVAL);
		assert_true(err[0]);
	}
	buf_release(&b);
	json_decref(task);
}

static void test_templates(void **state)
{
	expand("pip install {package}", "pip install numpy");
	expand("x={n} {{y}} {list}", "x=3 {y} [1]");
	expand("plain", "plain");
	expand("{missing}", NULL);
	expand("a } b", NULL);
	expand("a { b", NULL);
	expand("{}", NULL);
}

static void test_parsers(void **state)
{
	struct exec_request r;
	char err[256];
	static const char ok[] =
		"{\"agent\":\"ag\",\"entry\":\"pkg.mod:run\",\"task\":{},"
		"\"pool\":{\"mode\":\"per_task\",\"size\":3},\"timeout_s\":2}";
	static const char *const bad[] = {
		"",
		"[]",
		"{}",
		"{\"agent\":1}",
		"{\"agent\":\"a\",\"x\":1}",
		"{\"agent\":\"a\",\"entry\":\"1m\"}",
		"{\"agent\":\"a\",\"timeout_s\":0}",
		"{\"agent\":\"a\",\"retries\":11}",
		"{\"agent\":\"a\",\"pool\":{\"name\":\"p\"}}",
		"{\"agent\":\"a\",\"labels\":{\"k\":1}}"};

	assert_int_equal(executions_parse_submit(ok, strlen(ok), 60000, &r, err,
						 sizeof(err)),
			 0);
	assert_string_equal(r.entry, "pkg.mod:run");
	assert_false(r.pool.persistent);
	assert_int_equal(r.pool.size, 3);
	assert_int_equal(r.timeout_ms, 2000);
	exec_request_release(&r);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		err[0] = '\0';
		assert_int_equal(executions_parse_submit(bad[i], strlen(bad[i]),
							 60000, &r, err,
							 sizeof(err)),
				 -EINVAL);
		assert_true(err[0]);
		exec_request_release(&r);
	}
	assert_true(executions_entry_ok("agent"));
	assert_true(executions_entry_ok("a.b:c_d"));
	assert_false(executions_entry_ok("a..b"));
	assert_false(executions_entry_ok("a:b.c"));
	assert_false(executions_entry_ok(""));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
		T(test_a_terminal_row_never_changes),
		T(test_an_idempotency_key_names_one_execution),
		T(test_recovery_loses_or_requeues_by_retries),
		T(test_list_filters),
		T(test_rllm_results_keep_the_first),
#undef T
		cmocka_unit_test(test_templates),
		cmocka_unit_test(test_parsers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Unit tests for src/store/traces.c, each on a database of its own in a
 * fresh temporary directory: every field survives a round trip (NULLs
 * too), ids only grow, each filter (session uid or name, sandbox, since,
 * after, limit) selects what it says, deletes remove what they name and
 * nothing else, writers and a reader on several threads lose nothing, a
 * full disk is an error rather than a crash, and the database is found
 * again where it was left.
 */
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "base/util.h"
#include "store/traces.h"
#include "base/banned.h"

struct fixture {
	char dir[64];
	char *path;
	struct traces *t;
};

static int remove_one(const char *path, const struct stat *st, int type,
		      struct FTW *ftw)
{
	return remove(path);
}

static void remove_tree(const char *dir)
{
	assert_int_equal(nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS), 0);
}

static int setup(void **state)
{
	struct fixture *f = xcalloc(1, sizeof(*f));
	char err[256] = "";

	str_copy(f->dir, sizeof(f->dir), "/tmp/sbx-test-traces-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	f->path = xstrfmt("%s/state.db", f->dir);
	f->t = traces_open(f->path, err, sizeof(err));
	if (!f->t)
		fail_msg("traces_open: %s", err);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	traces_close(f->t);
	remove_tree(f->dir);
	free(f->path);
	free(f);
	return 0;
}

static json_t *parse(const char *text)
{
	json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);

	assert_non_null(v);
	return v;
}

/* Adds a small trace; uids is a JSON array text or NULL. */
static int64_t add(struct traces *t, const char *sandbox, const char *uids,
		   const char *name, double created_at)
{
	struct trace_rec rec = {
		.sandbox = sandbox,
		.session_uids = uids ? parse(uids) : NULL,
		.session_name = name,
		.model = "m",
		.created_at = created_at,
	};
	int64_t id = traces_add(t, &rec);

	json_decref(rec.session_uids);
	assert_true(id > 0);
	return id;
}

struct collect {
	int64_t ids[64];
	size_t n;
	size_t stop_after; /* 0: never */
};

static int collect_fn(void *arg, json_t *trace)
{
	struct collect *c = arg;

	assert_true(c->n < ARRAY_SIZE(c->ids));
	c->ids[c->n++] = json_integer_value(json_object_get(trace, "id"));
	return c->stop_after && c->n >= c->stop_after;
}

/* The ids traces_each() gives for q, as "1,2,3". */
static char *ids_of(struct traces *t, const struct traces_query *q)
{
	struct collect c = {.n = 0};
	char err[256] = "", buf[512] = "";
	size_t len = 0;

	assert_int_equal(traces_each(t, q, collect_fn, &c, err, sizeof(err)),
			 0);
	for (size_t i = 0; i < c.n; i++)
		len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%lld",
					i ? "," : "", (long long)c.ids[i]);
	return xstrdup(buf);
}

#define assert_ids(t, q, expect)                   \
	do {                                       \
		char *got_ = ids_of(t, q);         \
		assert_string_equal(got_, expect); \
		free(got_);                        \
	} while (0)

static const char *const key_order[] = {
	"id",
	"created_at",
	"sandbox",
	"session_uids",
	"session_name",
	"metadata",
	"labels",
	"upstream",
	"model",
	"stream",
	"request",
	"response",
	"prompt_token_ids",
	"completion_token_ids",
	"logprobs",
	"usage",
	"latency_ms",
	"status",
	"error",
};

static void assert_key_order(json_t *trace)
{
	size_t i = 0;
	const char *key;
	json_t *v;

	json_object_foreach(trace, key, v)
	{
		assert_true(i < ARRAY_SIZE(key_order));
		assert_string_equal(key, key_order[i]);
		i++;
	}
	assert_int_equal(i, ARRAY_SIZE(key_order));
}

/* v written compact, for comparing with the text it came from. */
static void assert_json_text(json_t *v, const char *text)
{
	char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

	assert_non_null(s);
	assert_string_equal(s, text);
	free(s);
}

static void test_every_field_round_trips(void **state)
{
	struct fixture *f = *state;
	const char *meta = "{\"z\":1,\"a\":{\"n\":[1,2.5,null]},\"m\":\"x\"}";
	const char *req = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
			  "\"content\":\"hi\\u0000there \\u00e9\"}]}";
	struct trace_rec rec = {
		.sandbox = "sb-1",
		.session_uids = parse("[\"u1\",\"u2\"]"),
		.session_name = "run-7",
		.metadata = parse(meta),
		.labels = parse("{\"team\":\"rl\",\"a\":\"b\"}"),
		.upstream = "local",
		.model = "qwen",
		.request = parse(req),
		.response = parse("{\"choices\":[]}"),
		.prompt_token_ids = parse("[1,2,3]"),
		.completion_token_ids = parse("[4,5]"),
		.logprobs = parse("[-0.5,-1.25]"),
		.usage = parse("{\"prompt_tokens\":3}"),
		.latency_ms = 12.5,
		.status = 200,
		.error = "upstream said no",
		.stream = true,
		.created_at = 1796205600.123,
	};
	int64_t id = traces_add(f->t, &rec);
	json_t *got;

	assert_true(id > 0);
	got = traces_get(f->t, id);
	assert_non_null(got);
	assert_key_order(got);
	assert_int_equal(json_integer_value(json_object_get(got, "id")), id);
	assert_string_equal(
		json_string_value(json_object_get(got, "created_at")),
		"2026-12-02T10:00:00.123Z");
	assert_string_equal(json_string_value(json_object_get(got, "sandbox")),
			    "sb-1");
	assert_json_text(json_object_get(got, "session_uids"),
			 "[\"u1\",\"u2\"]");
	assert_string_equal(
		json_string_value(json_object_get(got, "session_name")),
		"run-7");
	/* Key order kept, nested values intact. */
	assert_json_text(json_object_get(got, "metadata"), meta);
	assert_json_text(json_object_get(got, "labels"),
			 "{\"team\":\"rl\",\"a\":\"b\"}");
	assert_string_equal(json_string_value(json_object_get(got, "upstream")),
			    "local");
	assert_string_equal(json_string_value(json_object_get(got, "model")),
			    "qwen");
	assert_true(json_is_true(json_object_get(got, "stream")));
	/* A NUL inside a string survives too. */
	assert_true(json_equal(json_object_get(got, "request"), rec.request));
	assert_json_text(json_object_get(got, "response"), "{\"choices\":[]}");
	assert_json_text(json_object_get(got, "prompt_token_ids"), "[1,2,3]");
	assert_json_text(json_object_get(got, "completion_token_ids"), "[4,5]");
	assert_json_text(json_object_get(got, "logprobs"), "[-0.5,-1.25]");
	assert_json_text(json_object_get(got, "usage"),
			 "{\"prompt_tokens\":3}");
	assert_true(json_real_value(json_object_get(got, "latency_ms")) ==
		    12.5);
	assert_int_equal(json_integer_value(json_object_get(got, "status")),
			 200);
	assert_string_equal(json_string_value(json_object_get(got, "error")),
			    "upstream said no");
	json_decref(got);

	json_decref(rec.session_uids);
	json_decref(rec.metadata);
	json_decref(rec.labels);
	json_decref(rec.request);
	json_decref(rec.response);
	json_decref(rec.prompt_token_ids);
	json_decref(rec.completion_token_ids);
	json_decref(rec.logprobs);
	json_decref(rec.usage);

	assert_null(traces_get(f->t, id + 1));
	assert_null(traces_get(f->t, 0));
}

static void test_absent_fields_read_as_null_or_empty(void **state)
{
	struct fixture *f = *state;
	/* NULL pointers, and JSON nulls which count as absent. */
	struct trace_rec empty = {.created_at = 0};
	struct trace_rec nulls = {
		.session_uids = json_null(),
		.metadata = json_null(),
		.request = json_null(),
		.usage = json_null(),
	};
	struct trace_rec *recs[] = {&empty, &nulls};
	time_t before = time(NULL);

	for (size_t i = 0; i < ARRAY_SIZE(recs); i++) {
		int64_t id = traces_add(f->t, recs[i]);
		json_t *got, *v;
		struct tm tm = {0};
		const char *created, *end;
		const char *key;

		assert_true(id > 0);
		got = traces_get(f->t, id);
		assert_non_null(got);
		assert_key_order(got);
		json_object_foreach(got, key, v)
		{
			if (!strcmp(key, "id") || !strcmp(key, "created_at"))
				continue;
			if (!strcmp(key, "session_uids"))
				assert_json_text(v, "[]");
			else if (!strcmp(key, "metadata") ||
				 !strcmp(key, "labels"))
				assert_json_text(v, "{}");
			else if (!strcmp(key, "stream"))
				assert_true(json_is_false(v));
			else if (!strcmp(key, "latency_ms"))
				assert_true(json_real_value(v) == 0.0);
			else if (!strcmp(key, "status"))
				assert_int_equal(json_integer_value(v), 0);
			else if (!json_is_null(v))
				fail_msg("'%s' is not null", key);
		}
		/* created_at 0 is now: a well-formed time not before the
		 * call began. */
		created = json_string_value(json_object_get(got, "created_at"));
		assert_non_null(created);
		assert_int_equal(strlen(created), 24);
		end = strptime(created, "%Y-%m-%dT%H:%M:%S", &tm);
		assert_non_null(end);
		assert_true(end[0] == '.' && end[4] == 'Z');
		assert_true(timegm(&tm) >= before);
		assert_true(timegm(&tm) <= time(NULL));
		json_decref(got);
	}
	json_decref(nulls.session_uids);
	json_decref(nulls.metadata);
	json_decref(nulls.request);
	json_decref(nulls.usage);
}

static void test_created_at_renders_in_utc_milliseconds(void **state)
{
	struct fixture *f = *state;
	const struct {
		double t;
		const char *iso;
	} cases[] = {
		{1796205600.0, "2026-12-02T10:00:00.000Z"},
		/* cut to the millisecond below, never rounded up */
		{1796205600.9996, "2026-12-02T10:00:00.999Z"},
		{1796205599.001, "2026-12-02T09:59:59.001Z"},
		{946684799.5, "1999-12-31T23:59:59.500Z"},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		int64_t id = add(f->t, NULL, NULL, NULL, cases[i].t);
		json_t *got = traces_get(f->t, id);

		assert_non_null(got);
		assert_string_equal(
			json_string_value(json_object_get(got, "created_at")),
			cases[i].iso);
		json_decref(got);
	}
}

static void test_add_many_commits_a_batch(void **state)
{
	struct fixture *f = *state;
	json_t *uids = parse("[\"batch-s\"]");
	struct trace_rec a = {
		.sandbox = "sb-a", .session_uids = uids, .model = "m1"};
	struct trace_rec b = {.sandbox = "sb-b",
			      .model = "m2",
			      .status = 502,
			      .error = "upstream down"};
	struct trace_rec c = {.sandbox = "sb-a", .model = "m3"};
	const struct trace_rec *recs[] = {&a, &b, &c};
	int64_t ids[3], before = traces_count(f->t);
	json_t *got;

	assert_int_equal(traces_add_many(f->t, recs, 3, ids), 0);
	assert_true(ids[0] > 0 && ids[1] > ids[0] && ids[2] > ids[1]);
	assert_int_equal(traces_count(f->t), before + 3);
	got = traces_get(f->t, ids[1]);
	assert_non_null(got);
	assert_string_equal(json_string_value(json_object_get(got, "model")),
			    "m2");
	assert_int_equal(json_integer_value(json_object_get(got, "status")),
			 502);
	assert_string_equal(json_string_value(json_object_get(got, "error")),
			    "upstream down");
	json_decref(got);
	got = traces_get(f->t, ids[0]);
	assert_string_equal(json_string_value(json_array_get(
				    json_object_get(got, "session_uids"), 0)),
			    "batch-s");
	json_decref(got);
	/* an empty batch is a no-op */
	assert_int_equal(traces_add_many(f->t, recs, 0, ids), 0);
	assert_int_equal(traces_count(f->t), before + 3);
	json_decref(uids);
}

static void test_ids_increase(void **state)
{
	struct fixture *f = *state;
	int64_t last = 0;

	for (int i = 0; i < 20; i++) {
		int64_t id = add(f->t, "sb", NULL, NULL, 0);

		assert_true(id > last);
		last = id;
	}
	assert_int_equal(traces_count(f->t), 20);
}

static void test_filters(void **state)
{
	struct fixture *f = *state;
	struct traces_query q = {.session = NULL};
	struct collect c = {.stop_after = 2};
	char err[256] = "";

	/* ids 1..6 */
	add(f->t, "a", "[\"u1\",\"u2\"]", "run", 1000);
	add(f->t, "b", "[\"u2\"]", NULL, 2000);
	add(f->t, "a", "[]", "run", 3000);
	add(f->t, NULL, "[\"u3\"]", "other", 4000);
	add(f->t, "a", NULL, NULL, 5000);
	/* A name that is also a uid links the trace once. */
	add(f->t, "b", "[\"same\"]", "same", 6000);

	assert_ids(f->t, NULL, "1,2,3,4,5,6");
	assert_ids(f->t, &q, "1,2,3,4,5,6");

	q.session = "u2"; /* a uid */
	assert_ids(f->t, &q, "1,2");
	q.session = "run"; /* a name */
	assert_ids(f->t, &q, "1,3");
	q.session = "same";
	assert_ids(f->t, &q, "6");
	q.session = "nobody";
	assert_ids(f->t, &q, "");

	q = (struct traces_query){.sandbox = "a"};
	assert_ids(f->t, &q, "1,3,5");
	q.session = "run";
	assert_ids(f->t, &q, "1,3");
	q.session = "u2";
	assert_ids(f->t, &q, "1");

	q = (struct traces_query){.since = 3000};
	assert_ids(f->t, &q, "3,4,5,6");
	q.since = 3000.5;
	assert_ids(f->t, &q, "4,5,6");

	q = (struct traces_query){.after = 4};
	assert_ids(f->t, &q, "5,6");
	q.after = 6;
	assert_ids(f->t, &q, "");

	q = (struct traces_query){.limit = 2};
	assert_ids(f->t, &q, "1,2");
	/* Paging: after the last id seen. */
	q.after = 2;
	assert_ids(f->t, &q, "3,4");
	q.after = 4;
	assert_ids(f->t, &q, "5,6");

	q = (struct traces_query){
		.session = "run", .sandbox = "a", .since = 2000, .limit = 5};
	assert_ids(f->t, &q, "3");
	q = (struct traces_query){.sandbox = "a", .after = 1, .limit = 1};
	assert_ids(f->t, &q, "3");

	/* fn returning non-zero stops the walk, which still succeeds. */
	assert_int_equal(
		traces_each(f->t, NULL, collect_fn, &c, err, sizeof(err)), 0);
	assert_int_equal(c.n, 2);
	assert_int_equal(c.ids[1], 2);
}

static void test_delete(void **state)
{
	struct fixture *f = *state;
	struct traces_query q = {.session = NULL};

	add(f->t, "a", "[\"s1\"]", "name1", 0); /* 1 */
	add(f->t, "a", "[\"s2\"]", "name1", 0); /* 2 */
	add(f->t, "b", "[\"s1\"]", NULL, 0);	/* 3 */
	add(f->t, "b", "[\"s2\"]", NULL, 0);	/* 4 */
	add(f->t, "c", "[\"s3\"]", "name3", 0); /* 5 */
	add(f->t, "c", NULL, NULL, 0);		/* 6 */
	assert_int_equal(traces_count(f->t), 6);

	assert_int_equal(traces_delete(f->t, NULL, NULL), -EINVAL);
	assert_int_equal(traces_count(f->t), 6);

	/* Both given: both must match. */
	assert_int_equal(traces_delete(f->t, "s1", "b"), 1);
	assert_null(traces_get(f->t, 3));
	assert_ids(f->t, NULL, "1,2,4,5,6");

	/* By session name. */
	assert_int_equal(traces_delete(f->t, "name1", NULL), 2);
	assert_ids(f->t, NULL, "4,5,6");
	/* The links went with the traces. */
	q.session = "s1";
	assert_ids(f->t, &q, "");

	/* By sandbox; the deleted trace's session no longer matches. */
	assert_int_equal(traces_delete(f->t, NULL, "c"), 2);
	q.session = "s3";
	assert_ids(f->t, &q, "");
	assert_ids(f->t, NULL, "4");

	/* By uid. */
	assert_int_equal(traces_delete(f->t, "s2", NULL), 1);
	assert_int_equal(traces_delete(f->t, "s2", NULL), 0);
	assert_int_equal(traces_delete(f->t, NULL, "zzz"), 0);
	assert_int_equal(traces_count(f->t), 0);
}

#define WRITERS 4
#define ADDS 1000

struct worker {
	struct traces *t;
	char session[16];
	int n;
	int64_t failed;
};

static void *writer_main(void *arg)
{
	struct worker *w = arg;
	json_t *uids = json_pack("[s]", w->session);
	json_t *req = json_pack("{s:s,s:[{s:s}]}", "model", "m", "messages",
				"content", "hello");

	for (int i = 0; i < w->n; i++) {
		struct trace_rec rec = {
			.sandbox = w->session,
			.session_uids = uids,
			.request = req,
			.model = "m",
			.status = 200,
		};

		if (traces_add(w->t, &rec) <= 0)
			w->failed++;
	}
	json_decref(uids);
	json_decref(req);
	return NULL;
}

struct reader_state {
	struct traces *t;
	volatile int done;
	int passes;
	int64_t failed;
	int64_t out_of_order;
	int64_t last_count;
};

struct walk {
	int64_t last, n;
	bool ordered;
};

static int walk_fn(void *arg, json_t *trace)
{
	struct walk *w = arg;
	int64_t id = json_integer_value(json_object_get(trace, "id"));

	if (id <= w->last || !json_is_object(json_object_get(trace, "request")))
		w->ordered = false;
	w->last = id;
	w->n++;
	return 0;
}

static void *reader_main(void *arg)
{
	struct reader_state *r = arg;
	char err[256];

	do {
		struct walk w = {.ordered = true};
		int64_t count;

		if (traces_each(r->t, NULL, walk_fn, &w, err, sizeof(err)) < 0)
			r->failed++;
		if (!w.ordered)
			r->out_of_order++;
		/* Writes commit before they return: counts never go
		 * back. */
		if (w.n < r->last_count)
			r->out_of_order++;
		count = traces_count(r->t);
		if (count < w.n)
			r->out_of_order++;
		r->last_count = count;
		r->passes++;
	} while (!__atomic_load_n(&r->done, __ATOMIC_ACQUIRE));
	return NULL;
}

static void test_concurrent_writers_and_reader(void **state)
{
	struct fixture *f = *state;
	struct worker w[WRITERS];
	struct reader_state r = {.t = f->t};
	pthread_t wt[WRITERS], rt;

	assert_int_equal(pthread_create(&rt, NULL, reader_main, &r), 0);
	for (int i = 0; i < WRITERS; i++) {
		w[i] = (struct worker){.t = f->t, .n = ADDS / WRITERS};
		snprintf(w[i].session, sizeof(w[i].session), "s%d", i);
		assert_int_equal(
			pthread_create(&wt[i], NULL, writer_main, &w[i]), 0);
	}
	for (int i = 0; i < WRITERS; i++) {
		assert_int_equal(pthread_join(wt[i], NULL), 0);
		assert_int_equal(w[i].failed, 0);
	}
	__atomic_store_n(&r.done, 1, __ATOMIC_RELEASE);
	assert_int_equal(pthread_join(rt, NULL), 0);
	assert_int_equal(r.failed, 0);
	assert_int_equal(r.out_of_order, 0);
	assert_true(r.passes > 0);

	assert_int_equal(traces_count(f->t), ADDS);
	for (int i = 0; i < WRITERS; i++) {
		struct traces_query q = {.session = w[i].session};
		struct walk wk = {.ordered = true};
		char err[256];

		assert_int_equal(
			traces_each(f->t, &q, walk_fn, &wk, err, sizeof(err)),
			0);
		assert_int_equal(wk.n, ADDS / WRITERS);
		assert_true(wk.ordered);
	}
}

static void test_reopen_keeps_rows(void **state)
{
	struct fixture *f = *state;
	char err[256] = "";
	int64_t last;
	json_t *got;

	add(f->t, "a", "[\"u\"]", "n", 0);
	last = add(f->t, "a", NULL, NULL, 0);
	traces_close(f->t);

	f->t = traces_open(f->path, err, sizeof(err));
	assert_non_null(f->t);
	assert_int_equal(traces_count(f->t), 2);
	got = traces_get(f->t, last);
	assert_non_null(got);
	assert_string_equal(json_string_value(json_object_get(got, "sandbox")),
			    "a");
	json_decref(got);

	/* Ids are never reused, even of a deleted last trace. */
	assert_int_equal(traces_delete(f->t, NULL, "a"), 2);
	assert_true(add(f->t, "a", NULL, NULL, 0) > last);
}

static void test_opens_in_missing_nested_directory(void **state)
{
	struct fixture *f = *state;
	char *path = xstrfmt("%s/x/y/z/traces.db", f->dir);
	char *dir = xstrfmt("%s/x/y", f->dir);
	char err[256] = "";
	struct traces *t = traces_open(path, err, sizeof(err));
	struct stat st;

	if (!t)
		fail_msg("traces_open: %s", err);
	assert_int_equal(stat(dir, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0700);
	add(t, "a", NULL, NULL, 0);
	/* The database and its WAL are the owner's alone. */
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	free(dir);
	dir = xstrfmt("%s-wal", path);
	assert_int_equal(stat(dir, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(traces_count(t), 1);
	traces_close(t);
	free(dir);
	free(path);
}

static void test_unopenable_path_fails_with_message(void **state)
{
	struct fixture *f = *state;
	char *file = xstrfmt("%s/plain", f->dir);
	char *under_file = xstrfmt("%s/plain/sub/traces.db", f->dir);
	const char *paths[] = {f->dir, under_file, ""};
	FILE *fp = fopen(file, "w");

	assert_non_null(fp);
	fclose(fp);
	for (size_t i = 0; i < ARRAY_SIZE(paths); i++) {
		char err[256] = "";

		assert_null(traces_open(paths[i], err, sizeof(err)));
		assert_true(strlen(err) > 0);
	}
	/* No message buffer is fine too. */
	assert_null(traces_open(f->dir, NULL, 0));
	free(under_file);
	free(file);
}

/* A file size limit stands in for a full disk: writes past it fail with
 * EFBIG (SIGXFSZ ignored). */
static void test_full_disk_is_an_error(void **state)
{
	struct fixture *f = *state;
	struct rlimit old, small;
	struct sigaction ign = {.sa_handler = SIG_IGN}, oldsa;
	char *big = xmalloc(1 << 20);
	json_t *req;
	struct trace_rec rec = {.sandbox = "a"};
	int64_t before, r;

	add(f->t, "a", NULL, NULL, 0);
	before = traces_count(f->t);
	memset(big, 'x', (1 << 20) - 1);
	big[(1 << 20) - 1] = '\0';
	req = json_pack("{s:s}", "content", big);
	rec.request = req;

	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	small = old;
	small.rlim_cur = 256 << 10;
	assert_int_equal(sigaction(SIGXFSZ, &ign, &oldsa), 0);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
	r = traces_add(f->t, &rec);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	assert_int_equal(sigaction(SIGXFSZ, &oldsa, NULL), 0);
	assert_int_equal(r, -EIO);

	/* Nothing half written; the store goes on working. */
	assert_int_equal(traces_count(f->t), before);
	assert_true(traces_add(f->t, &rec) > 0);
	assert_int_equal(traces_count(f->t), before + 1);
	json_decref(req);
	free(big);
}

static void test_bad_arguments(void **state)
{
	struct fixture *f = *state;
	char err[256] = "";

	assert_int_equal(traces_add(f->t, NULL), -EINVAL);
	assert_int_equal(traces_add(NULL, NULL), -EINVAL);
	assert_int_equal(traces_each(f->t, NULL, NULL, NULL, err, sizeof(err)),
			 -EINVAL);
	traces_close(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
		T(test_every_field_round_trips),
		T(test_absent_fields_read_as_null_or_empty),
		T(test_created_at_renders_in_utc_milliseconds),
		T(test_ids_increase),
		T(test_add_many_commits_a_batch),
		T(test_filters),
		T(test_delete),
		T(test_concurrent_writers_and_reader),
		T(test_reopen_keeps_rows),
		T(test_opens_in_missing_nested_directory),
		T(test_unopenable_path_fails_with_message),
		T(test_full_disk_is_an_error),
		T(test_bad_arguments),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

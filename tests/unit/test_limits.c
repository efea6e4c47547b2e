/*
 * Unit tests for src/runtime/limits.c (the shared limit rules) and for the
 * output-as-JSON-text helpers of src/runtime/result.c that let replies be
 * capped by their serialised size: what json_text_write() writes must be
 * what jansson writes for json_text(), and json_text_fit() must count it
 * exactly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "base/buf.h"
#include "runtime/limits.h"
#include "runtime/result.h"
#include "base/banned.h"

static struct limits_rules small_rules(void)
{
	struct limits_rules r;

	limits_rules_init(&r);
	limits_rules_cap(&r, LIMITS_PIDS, 128);
	limits_rules_cap(&r, LIMITS_MEMORY, 1ull << 30);
	limits_rules_cap(&r, LIMITS_CPUS, 2000);
	limits_rules_cap(&r, LIMITS_WALL, 600000);
	return r;
}

/* Parses text as one JSON value and checks it against field f. */
static int check(const struct limits_rules *r, const struct limits_field *f,
		 const char *text, uint64_t max, uint64_t *out, char *msg)
{
	json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
	int ret;

	assert_non_null(v);
	ret = limits_parse(r, f, v, max, out, msg, 128);
	json_decref(v);
	return ret;
}

static void test_integers(void **state)
{
	const struct limits_rules r = small_rules();
	const struct limits_field pids = {"pids", LIMITS_PIDS, 1, false};
	const struct limits_field mem = {"memory_mb", LIMITS_MEMORY, 1 << 20,
					 false};
	uint64_t v = 0;
	char msg[128];

	assert_int_equal(check(&r, &pids, "128", 0, &v, msg), 0);
	assert_int_equal(v, 128);
	assert_int_equal(check(&r, &pids, "129", 0, &v, msg), -1);
	assert_string_equal(msg, "must be an integer between 1 and 128 on "
				 "this server");
	assert_int_equal(check(&r, &pids, "0", 0, &v, msg), -1);
	assert_int_equal(check(&r, &pids, "-5", 0, &v, msg), -1);
	assert_int_equal(check(&r, &pids, "9223372036854775807", 0, &v, msg),
			 -1);
	assert_int_equal(check(&r, &pids, "1.5", 0, &v, msg), -1);
	assert_string_equal(msg, "must be an integer");
	assert_int_equal(check(&r, &pids, "\"5\"", 0, &v, msg), -1);
	/* A tighter maximum for one request. */
	assert_int_equal(check(&r, &pids, "64", 32, &v, msg), -1);
	assert_non_null(strstr(msg, "between 1 and 32 "));
	/* Scaled: megabytes of a limit kept in bytes; the least value is
	 * rounded up to whole megabytes. */
	assert_int_equal(check(&r, &mem, "1024", 0, &v, msg), 0);
	assert_int_equal(v, 1ull << 30);
	assert_int_equal(check(&r, &mem, "3", 0, &v, msg), -1);
	assert_string_equal(msg, "must be an integer between 4 and 1024 on "
				 "this server");
	/* Large enough to overflow when scaled. */
	assert_int_equal(check(&r, &mem, "17592186044416", 0, &v, msg), -1);
}

static void test_fractions(void **state)
{
	const struct limits_rules r = small_rules();
	const struct limits_field cpus = {"cpus", LIMITS_CPUS, 1000, true};
	const struct limits_field secs = {"run_timeout", LIMITS_WALL, 1000,
					  true};
	uint64_t v = 0;
	char msg[128];

	assert_int_equal(check(&r, &cpus, "0.5", 0, &v, msg), 0);
	assert_int_equal(v, 500);
	assert_int_equal(check(&r, &cpus, "2", 0, &v, msg), 0);
	assert_int_equal(v, 2000);
	assert_int_equal(check(&r, &cpus, "2.5", 0, &v, msg), -1);
	assert_string_equal(msg, "must be a number between 0.01 and 2 on "
				 "this server");
	assert_int_equal(check(&r, &cpus, "0", 0, &v, msg), -1);
	assert_int_equal(check(&r, &cpus, "0.001", 0, &v, msg), -1);
	assert_int_equal(check(&r, &cpus, "-1", 0, &v, msg), -1);
	assert_int_equal(check(&r, &cpus, "1e300", 0, &v, msg), -1);
	assert_int_equal(check(&r, &cpus, "true", 0, &v, msg), -1);
	assert_string_equal(msg, "must be a number");
	/* A tiny positive timeout never rounds to none. */
	assert_int_equal(check(&r, &secs, "0.0001", 0, &v, msg), 0);
	assert_int_equal(v, 1);
	assert_int_equal(check(&r, &secs, "600", 0, &v, msg), 0);
	assert_int_equal(check(&r, &secs, "600.01", 0, &v, msg), -1);
}

static void test_host_bounds(void **state)
{
	struct limits_rules r;
	char buf[64];
	unsigned long long pid_max = 0;
	FILE *f = fopen("/proc/sys/kernel/pid_max", "r");

	limits_rules_init(&r);
	if (f) {
		if (fgets(buf, sizeof(buf), f))
			pid_max = strtoull(buf, NULL, 10);
		fclose(f);
	}
	if (pid_max)
		assert_true(r.max[LIMITS_PIDS] <= pid_max);
	/* A cap never raises a maximum, nor goes below the least value. */
	assert_int_equal(limits_rules_cap(&r, LIMITS_PIDS, UINT64_MAX),
			 r.max[LIMITS_PIDS]);
	assert_int_equal(limits_rules_cap(&r, LIMITS_MEMORY, 1),
			 r.min[LIMITS_MEMORY]);
	assert_true(r.max[LIMITS_CPUS] >= 1000);
	assert_int_equal(r.min[LIMITS_LIFETIME], 0);
}

/* The serve defaults chosen from the host stay within their documented
 * bounds, whatever the host. */
static void test_host_defaults(void **state)
{
	uint64_t mem = limits_host_memory(0);
	uint64_t def = limits_default_memory();
	uint64_t body = limits_default_body();
	unsigned conc = limits_default_concurrency();

	assert_true(mem > 0);
	assert_true(limits_host_available(0) <= mem);
	assert_true(limits_host_cores() >= 1);
	assert_true(def <= 4ull << 30 && def <= mem / 2);
	assert_true(def >= 1ull << 30 || def == mem / 2);
	assert_true(body >= 64ull << 20 && body <= 1ull << 30);
	assert_true(conc >= 128 && conc <= 4096);
	assert_true(conc >= 32 * limits_host_cores() || conc == 4096);
}

static void test_parse_cpus(void **state)
{
	uint64_t m = 7;

	assert_int_equal(limits_parse_cpus("0.5", &m), 0);
	assert_int_equal(m, 500);
	assert_int_equal(limits_parse_cpus("0", &m), 0);
	assert_int_equal(m, 0);
	assert_int_equal(limits_parse_cpus("2", &m), 0);
	assert_int_equal(m, 2000);
	assert_true(limits_parse_cpus("", &m) < 0);
	assert_true(limits_parse_cpus("1x", &m) < 0);
	assert_true(limits_parse_cpus("-1", &m) < 0);
	assert_true(limits_parse_cpus("nan", &m) < 0);
}

/* json_text_write(data) is what jansson writes for json_text(data), and
 * json_text_fit() counts it to the byte. */
static void same_as_jansson(const char *data, size_t len)
{
	json_t *s = json_text(data, len);
	char *want = json_dumps(s, JSON_ENCODE_ANY | JSON_COMPACT);
	uint64_t size = 0;
	struct buf b;

	assert_non_null(want);
	buf_init(&b);
	json_text_write(&b, data, len);
	assert_int_equal(b.len, strlen(want));
	assert_memory_equal(b.data, want, b.len);
	assert_int_equal(json_text_fit(data, len, UINT64_MAX, &size), len);
	assert_int_equal(size, b.len - 2);
	buf_release(&b);
	free(want);
	json_decref(s);
}

static void test_text_matches_jansson(void **state)
{
	static const char mixed[] = "a\"b\\c\n\t\r\b\f\x01\x1f\x7f "
				    "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"
				    " bad:\xff\xc3 (\xed\xa0\x80) end";
	char all[256];

	for (int i = 0; i < 256; i++)
		all[i] = (char)i;
	same_as_jansson("", 0);
	same_as_jansson("plain text", 10);
	same_as_jansson(mixed, sizeof(mixed) - 1);
	same_as_jansson(all, sizeof(all));
	same_as_jansson("nul\0inside", 10);
	same_as_jansson("cut \xe2\x82", 6);
}

/* The fit stops at room, never splits an escape or a sequence, and a
 * sequence cut between two chunks is counted at least as large as it is
 * whole. */
static void test_fit(void **state)
{
	const char ctl[] = "\x01\x01\x01";
	const char euro[] = "\xe2\x82\xac";
	uint64_t size = 0, a = 0, b = 0;

	assert_int_equal(json_text_fit(ctl, 3, 13, &size), 2);
	assert_int_equal(size, 12);
	assert_int_equal(json_text_fit(ctl, 3, 5, &size), 0);
	assert_int_equal(size, 0);
	assert_int_equal(json_text_fit(euro, 3, 2, &size), 0);
	assert_int_equal(json_text_fit(euro, 3, 3, &size), 3);
	json_text_fit(euro, 1, UINT64_MAX, &a);
	json_text_fit(euro + 1, 2, UINT64_MAX, &b);
	assert_true(a + b >= 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_integers),
		cmocka_unit_test(test_fractions),
		cmocka_unit_test(test_host_bounds),
		cmocka_unit_test(test_host_defaults),
		cmocka_unit_test(test_parse_cpus),
		cmocka_unit_test(test_text_matches_jansson),
		cmocka_unit_test(test_fit),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

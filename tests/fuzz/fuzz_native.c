/*
 * libFuzzer target for the POST /v1/run request parser: any bytes must
 * parse or be refused with a field and a message, never crash or leak.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/native.h"
#include "base/banned.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Whether a path has a ".." component. */
static int has_dotdot(const char *p)
{
	size_t n;

	for (;;) {
		n = strcspn(p, "/");
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return 1;
		if (!p[n])
			return 0;
		p += n + 1;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct limits_rules rules;
	static int ready;
	struct native_req req;
	struct native_error err;
	size_t i;

	if (!ready) {
		/* Small maxima, so the range checks are reachable. */
		limits_rules_init(&rules);
		limits_rules_cap(&rules, LIMITS_WALL, 60000);
		limits_rules_cap(&rules, LIMITS_CPU_TIME, 60000);
		limits_rules_cap(&rules, LIMITS_MEMORY, 4096ull << 20);
		limits_rules_cap(&rules, LIMITS_PIDS, 128);
		limits_rules_cap(&rules, LIMITS_OUTPUT, 1 << 20);
		limits_rules_cap(&rules, LIMITS_CPUS, 1000);
		ready = 1;
	}
	if (native_parse((const char *)data, size, &rules, &req, &err)) {
		/* Both always end up NUL-terminated and non-empty. */
		if (!err.field[0] || !err.message[0] ||
		    !memchr(err.field, '\0', sizeof(err.field)) ||
		    !memchr(err.message, '\0', sizeof(err.message)))
			abort();
		return 0;
	}
	if (!req.lang || !req.source || req.source[req.source_len] != '\0')
		abort();
	if (req.limits.wall_ms > rules.max[LIMITS_WALL] ||
	    req.limits.memory_bytes > rules.max[LIMITS_MEMORY] ||
	    req.limits.pids > rules.max[LIMITS_PIDS] ||
	    req.limits.output_bytes > rules.max[LIMITS_OUTPUT] ||
	    req.limits.cpu_milli > rules.max[LIMITS_CPUS] ||
	    (req.limits.cpu_milli && req.limits.cpu_milli < 10) ||
	    req.limits.cpu_weight > rules.max[LIMITS_CPU_WEIGHT] ||
	    req.ntests > NATIVE_MAX_TESTS)
		abort();
	if (req.stdin_data && req.ntests)
		abort();
	for (i = 0; i < req.nfiles; i++)
		if (req.files[i].path[0] == '/' ||
		    has_dotdot(req.files[i].path) ||
		    !strcmp(req.files[i].path, req.lang->source))
			abort();
	for (i = 0; i < req.ntests; i++)
		if (req.tests[i].expected)
			(void)native_output_matches(req.source, req.source_len,
						    req.tests[i].expected,
						    req.tests[i].expected_len);
	native_req_release(&req);
	return 0;
}

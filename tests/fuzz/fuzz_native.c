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
	/* Small caps, so the range checks are reachable. */
	const struct native_caps caps = {
		.wall_ms = 60000,
		.cpu_ms = 60000,
		.memory_mb = 4096,
		.pids = 128,
		.output_bytes = 1 << 20,
		.compile_wall_ms = 60000,
	};
	struct native_req req;
	struct native_error err;
	size_t i;

	if (native_parse((const char *)data, size, &caps, &req, &err)) {
		/* Both always end up NUL-terminated and non-empty. */
		if (!err.field[0] || !err.message[0] ||
		    !memchr(err.field, '\0', sizeof(err.field)) ||
		    !memchr(err.message, '\0', sizeof(err.message)))
			abort();
		return 0;
	}
	if (!req.lang || !req.source || req.source[req.source_len] != '\0')
		abort();
	if (req.limits.wall_ms > caps.wall_ms ||
	    req.limits.memory_mb > caps.memory_mb ||
	    req.limits.pids > caps.pids ||
	    req.limits.output_bytes > caps.output_bytes ||
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

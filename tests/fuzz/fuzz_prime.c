/*
 * libFuzzer target for the prime surface's parsers (server/prime_parse.c):
 * the first byte picks the parser, the rest is its input (a JSON body, a
 * query string or a path). Any bytes must parse or be refused with a
 * message, never crash or leak.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "server/prime.h"
#include "base/banned.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void body(uint8_t which, const char *text, size_t len)
{
	json_t *j = json_loadb(text, len, JSON_ALLOW_NUL, NULL);
	char err[256];

	if (!j)
		return;
	switch (which % 4) {
	case 0: {
		struct prime_create c;

		if (prime_parse_create(j, &c, err, sizeof(err)) == 0 &&
		    (c.cpu_cores <= 0 || c.memory_gb <= 0 ||
		     c.timeout_minutes <= 0 || c.gpu_count < 0))
			abort();
		break;
	}
	case 1: {
		struct prime_exec e;

		if (prime_parse_exec(j, &e, err, sizeof(err)) == 0 &&
		    (!e.command || e.timeout_s < 0))
			abort();
		break;
	}
	case 2: {
		struct prime_bulk b;

		if (prime_parse_bulk(j, &b, err, sizeof(err)) == 0 &&
		    !b.sandbox_ids == !b.labels)
			abort();
		break;
	}
	default: {
		struct prime_expose x;

		if (prime_parse_expose(j, &x, err, sizeof(err)) == 0 &&
		    (x.port < 1 || x.port > 65535))
			abort();
		break;
	}
	}
	json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text;
	char err[256];

	if (size < 1)
		return 0;
	text = malloc(size);
	if (!text)
		return 0;
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';
	if (data[0] < 128) {
		body(data[0], text, size - 1);
	} else if (data[0] < 192) {
		struct prime_list q;

		if (prime_parse_list(text, &q, err, sizeof(err)) == 0) {
			if (q.page < 1 || q.per_page < 1 ||
			    q.per_page > PRIME_MAX_PER_PAGE)
				abort();
			json_decref(q.labels);
		}
	} else {
		struct prime_path p;

		if (prime_parse_path(text, &p) == 0 &&
		    p.kind == PRIME_PATH_NONE)
			abort();
	}
	free(text);
	return 0;
}

/*
 * libFuzzer target for the rLLM metadata slug (src/llm/slug.h): decoding
 * arbitrary bytes never crashes and either gives an object or a reason;
 * what decodes re-encodes to a slug that decodes to the same metadata and
 * encodes to itself; and any text, put into metadata, comes back whole.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/text.h"
#include "llm/slug.h"

#define CHECK(cond)              \
	do {                     \
		if (!(cond))     \
			abort(); \
	} while (0)

static bool is_slug_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* meta encodes to a well-formed slug that decodes back to it, and
 * encoding that gives the same slug. */
static void check_round_trip(const json_t *meta)
{
	char *slug = slug_encode(meta), *again;
	char err[256];
	json_t *back;
	size_t i, n;

	CHECK(slug);
	n = strlen(slug);
	CHECK(!strncmp(slug, "rllm1:", 6));
	for (i = 6; i < n; i++)
		CHECK(is_slug_char(slug[i]));
	err[0] = '\0';
	if (n <= SLUG_MAX) {
		back = slug_decode(slug, n, err, sizeof(err));
		CHECK(back && json_equal(back, meta));
		again = slug_encode(back);
		CHECK(again && !strcmp(again, slug));
		free(again);
		json_decref(back);
	} else {
		CHECK(!slug_decode(slug, n, err, sizeof(err)));
		CHECK(err[0]);
	}
	free(slug);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	struct buf text;
	json_t *meta;

	err[0] = '\0';
	meta = slug_decode((const char *)data, size, err, sizeof(err));
	if (meta) {
		CHECK(json_is_object(meta));
		check_round_trip(meta);
		json_decref(meta);
	} else {
		CHECK(err[0] != '\0');
	}

	/* The bytes, made UTF-8, as a key and as a value. */
	buf_init(&text);
	utf8_repair(&text, (const char *)data, size);
	meta = json_object();
	json_object_setn_new_nocheck(meta, text.data ? text.data : "", text.len,
				     json_integer((json_int_t)size));
	json_object_set_new(meta, "v",
			    json_stringn(text.data ? text.data : "", text.len));
	/* NUL bytes are not allowed in a slug's JSON: leave those out. */
	if (!text.len || !memchr(text.data, '\0', text.len))
		check_round_trip(meta);
	json_decref(meta);
	buf_release(&text);
	return 0;
}

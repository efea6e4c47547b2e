/*
 * libFuzzer target for the server-sent events parser and the stream
 * assembler (src/llm/sse.h), which read upstream bytes: the input is fed
 * whole and in pieces cut where its own bytes say; both ways must give
 * the same events' data, and every event's data goes to an assembler
 * whose result is then read by extract_fields().
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "llm/extract.h"
#include "llm/sse.h"

#define CHECK(cond)              \
	do {                     \
		if (!(cond))     \
			abort(); \
	} while (0)

/* Small enough that long inputs reach it. */
#define EVENT_MAX 1024

struct run {
	struct buf datas; /* every event's data, length-prefixed */
	struct sse_assembly *a;
};

static void on_event(void *arg, const struct sse_event *ev)
{
	struct run *r = arg;
	int ret;

	CHECK(ev->raw && ev->raw_len > 0 && ev->raw_len <= EVENT_MAX);
	CHECK(ev->raw[ev->raw_len - 1] == '\n' ||
	      ev->raw[ev->raw_len - 1] == '\r');
	if (!ev->data) {
		buf_adds(&r->datas, "-;");
		return;
	}
	CHECK(ev->data[ev->data_len] == '\0');
	CHECK(ev->data_len < ev->raw_len);
	buf_addf(&r->datas, "%zu:", ev->data_len);
	buf_add(&r->datas, ev->data, ev->data_len);
	ret = sse_assembly_add(r->a, ev->data, ev->data_len);
	CHECK(ret == 0 || ret == -EINVAL || ret == -E2BIG);
}

static void check_result(struct sse_assembly *a)
{
	struct extract_fields f;
	json_t *res = sse_assembly_result(a);
	char *text;

	extract_fields(res, &f);
	if (f.prompt_token_ids)
		CHECK(json_is_array(f.prompt_token_ids));
	if (f.completion_token_ids)
		CHECK(json_is_array(f.completion_token_ids));
	if (f.logprobs)
		CHECK(json_is_array(f.logprobs));
	if (f.usage)
		CHECK(json_is_object(f.usage));
	extract_fields_release(&f);
	if (res) {
		CHECK(json_is_object(res));
		text = json_dumps(res, JSON_COMPACT);
		CHECK(text);
		free(text);
		json_decref(res);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	struct sse_parser whole, pieces;
	struct run a = {0}, b = {0};
	int ra, rb = 0;
	size_t at = 0, step, k = 0;

	buf_init(&a.datas);
	buf_init(&b.datas);
	a.a = sse_assembly_new(4096);
	b.a = sse_assembly_new(4096);
	sse_parser_init(&whole, EVENT_MAX);
	sse_parser_init(&pieces, EVENT_MAX);

	ra = sse_parser_feed(&whole, text, size, on_event, &a);
	CHECK(ra == 0 || ra == -E2BIG);
	/* Pieces of 1 to 16 bytes, their lengths read from the input. */
	while (at < size && rb == 0) {
		step = 1 + (size ? data[k++ % size] % 16 : 0);
		if (step > size - at)
			step = size - at;
		rb = sse_parser_feed(&pieces, text + at, step, on_event, &b);
		CHECK(rb == 0 || rb == -E2BIG);
		at += step;
	}
	/* A CRLF cut in two may leave its LF out of an event, which can
	 * move where the size limit strikes; otherwise both agree. */
	if (ra == 0 && rb == 0) {
		CHECK(a.datas.len == b.datas.len);
		CHECK(!a.datas.len ||
		      !memcmp(a.datas.data, b.datas.data, a.datas.len));
		CHECK(sse_parser_pending(&whole) ==
		      sse_parser_pending(&pieces));
	}
	check_result(a.a);
	check_result(b.a);

	sse_parser_release(&whole);
	sse_parser_release(&pieces);
	sse_assembly_free(a.a);
	sse_assembly_free(b.a);
	buf_release(&a.datas);
	buf_release(&b.datas);
	return 0;
}

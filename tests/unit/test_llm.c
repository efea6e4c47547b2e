/*
 * Unit tests for the model gateway's pure parts: the rLLM metadata slug
 * (src/llm/slug.c, checked byte for byte against what Python's json and
 * base64 modules give), the server-sent events parser and stream
 * assembler (src/llm/sse.c) and the token field extraction
 * (src/llm/extract.c).
 */
#include <errno.h>
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
#include "llm/extract.h"
#include "llm/slug.h"
#include "llm/sse.h"
#include "base/banned.h"

static json_t *parse(const char *text)
{
	json_error_t e;
	json_t *v = json_loads(text, JSON_DECODE_ANY, &e);

	if (!v)
		fail_msg("bad JSON in the test: %s: %s", e.text, text);
	return v;
}

static void assert_json_equal(const json_t *got, const char *want_text)
{
	json_t *want = parse(want_text);

	if (!json_equal(got, want)) {
		char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS);
		char *w = json_dumps(want, JSON_COMPACT | JSON_SORT_KEYS);

		print_error("got  %s\nwant %s\n", g ? g : "NULL", w);
		free(g);
		free(w);
		json_decref(want);
		fail();
	}
	json_decref(want);
}

static bool str_starts(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* ---- the slug ---- */

/* The example of rLLM's metadata_slug.py, as Python encodes it. */
static const char example_meta[] =
	"{\"session_uids\":[\"3f2b8c1e-0000-4000-8000-000000000001\"],"
	"\"session_name\":\"sandbox-1a2b3c4d\"}";
static const char example_slug[] =
	"rllm1:eyJzZXNzaW9uX25hbWUiOiJzYW5kYm94LTFhMmIzYzRkIiwic2Vzc2lvbl91aW"
	"RzIjpbIjNmMmI4YzFlLTAwMDAtNDAwMC04MDAwLTAwMDAwMDAwMDAwMSJdfQ";

/* What python3 gives for json.dumps(m, separators=(",", ":"),
 * sort_keys=True) of this m, and its slug: escapes in lower case (DEL
 * too), surrogate pairs, floats as repr() writes them, keys in code point
 * order. */
static const char tricky_json[] =
	"{\"a\":[1,-2,0.1,1e-05,1e+16,1.5,-0.0,123456789.125,1e+300,5e-324,"
	"0.0001,1000000000000000.0,2.5e-07,9007199254740993,"
	"-9223372036854775808,3.0],\"m\":{\"A\":\"x\",\"a\":null,\"aa\":[],"
	"\"b\":true,\"\\u00e9\":false,\"\\ud83d\\ude00\":{}},\"z\":"
	"\"\\u00e9\\ud83d\\ude00\\u007f\\u0001\\n\\\"\\\\/\\t\\b\\f\\r~ \"}";
static const char tricky_slug[] =
	"rllm1:eyJhIjpbMSwtMiwwLjEsMWUtMDUsMWUrMTYsMS41LC0wLjAsMTIzNDU2Nzg5Lj"
	"EyNSwxZSszMDAsNWUtMzI0LDAuMDAwMSwxMDAwMDAwMDAwMDAwMDAwLjAsMi41ZS0wNy"
	"w5MDA3MTk5MjU0NzQwOTkzLC05MjIzMzcyMDM2ODU0Nzc1ODA4LDMuMF0sIm0iOnsiQS"
	"I6IngiLCJhIjpudWxsLCJhYSI6W10sImIiOnRydWUsIlx1MDBlOSI6ZmFsc2UsIlx1ZD"
	"gzZFx1ZGUwMCI6e319LCJ6IjoiXHUwMGU5XHVkODNkXHVkZTAwXHUwMDdmXHUwMDAxXG"
	"5cIlxcL1x0XGJcZlxyfiAifQ";

static json_t *decode(const char *slug, char *err, size_t errlen)
{
	err[0] = '\0';
	return slug_decode(slug, strlen(slug), err, errlen);
}

static void test_slug_example(void **state)
{
	json_t *meta = parse(example_meta), *back;
	char *slug = slug_encode(meta);
	char err[256];

	assert_string_equal(slug, example_slug);
	back = decode(slug, err, sizeof(err));
	assert_non_null(back);
	assert_true(json_equal(back, meta));
	json_decref(back);
	free(slug);
	json_decref(meta);
}

static void test_slug_exact_bytes(void **state)
{
	json_t *meta = parse(tricky_json), *back;
	char *slug = slug_encode(meta), *again;
	char err[256];

	assert_string_equal(slug, tricky_slug);
	back = decode(tricky_slug, err, sizeof(err));
	assert_non_null(back);
	assert_true(json_equal(back, meta));
	again = slug_encode(back);
	assert_string_equal(again, tricky_slug);
	free(again);
	json_decref(back);
	free(slug);
	json_decref(meta);
}

static void test_slug_alphabet_and_padding(void **state)
{
	/* Python's urlsafe_b64encode of {"k":"a>>b??c~~"}, padding kept:
	 * it has both '-' and '_'. */
	const char padded[] = "rllm1:eyJrIjoiYT4-Yj8_Y35-In0=";
	json_t *meta = parse("{\"k\":\"a>>b??c~~\"}"), *v;
	char *slug = slug_encode(meta);
	char err[256];

	assert_string_equal(slug, "rllm1:eyJrIjoiYT4-Yj8_Y35-In0");
	v = decode(padded, err, sizeof(err));
	assert_non_null(v);
	assert_true(json_equal(v, meta));
	json_decref(v);
	/* Two '=' where one is due: no base64 has that length. */
	assert_null(
		decode("rllm1:eyJrIjoiYT4-Yj8_Y35-In0==", err, sizeof(err)));
	assert_non_null(strstr(err, "length no base64 can have"));
	/* {} needs one '=' to be whole: "e30=". */
	v = decode("rllm1:e30=", err, sizeof(err));
	assert_non_null(v);
	assert_int_equal(json_object_size(v), 0);
	json_decref(v);
	free(slug);
	json_decref(meta);
	assert_null(slug_encode(NULL));
	v = parse("[1]");
	assert_null(slug_encode(v));
	json_decref(v);
}

static void test_slug_errors(void **state)
{
	char err[256];
	const char nul[] = "rllm1:e3\0w";

	assert_null(decode("rllm2:e30", err, sizeof(err)));
	assert_string_equal(err, "the slug must start with 'rllm1:'");
	assert_null(decode("", err, sizeof(err)));
	assert_string_equal(err, "the slug must start with 'rllm1:'");
	assert_null(decode("rllm1", err, sizeof(err)));
	assert_string_equal(err, "the slug must start with 'rllm1:'");
	assert_null(decode("RLLM1:e30", err, sizeof(err)));
	assert_string_equal(err, "the slug must start with 'rllm1:'");

	/* The standard alphabet's '+' and '/' are not base64url. */
	assert_null(decode("rllm1:ab+c", err, sizeof(err)));
	assert_string_equal(err, "the slug has a character outside base64url "
				 "at byte 8");
	assert_null(decode("rllm1:abc/", err, sizeof(err)));
	assert_string_equal(err, "the slug has a character outside base64url "
				 "at byte 9");
	assert_null(decode("rllm1:e3=0", err, sizeof(err)));
	assert_string_equal(err, "the slug has a character outside base64url "
				 "at byte 8");
	assert_null(decode("rllm1:e30 ", err, sizeof(err)));
	assert_non_null(strstr(err, "outside base64url at byte 9"));
	assert_null(decode("rllm1:e3\xc3\xa9", err, sizeof(err)));
	assert_non_null(strstr(err, "outside base64url at byte 8"));
	assert_null(slug_decode(nul, sizeof(nul) - 1, err, sizeof(err)));
	assert_string_equal(err, "the slug has a NUL byte at byte 8");

	/* Five characters: no whole bytes come from that. */
	assert_null(decode("rllm1:e30ab", err, sizeof(err)));
	assert_non_null(strstr(err, "length no base64 can have"));

	/* "hello", '"\xff"', "[1]", {"a":"<NUL>"} and {"a":"\u0000"} */
	assert_null(decode("rllm1:aGVsbG8", err, sizeof(err)));
	assert_true(str_starts(err, "the slug's base64 does not decode to "
				    "JSON: "));
	assert_null(decode("rllm1:Iv8i", err, sizeof(err)));
	assert_true(str_starts(err, "the slug's base64 does not decode to "
				    "JSON: "));
	assert_null(decode("rllm1:", err, sizeof(err)));
	assert_true(str_starts(err, "the slug's base64 does not decode to "
				    "JSON: "));
	assert_null(decode("rllm1:WzFd", err, sizeof(err)));
	assert_string_equal(err, "the slug's JSON is not an object");
	assert_null(decode("rllm1:eyJhIjoiACJ9", err, sizeof(err)));
	assert_string_equal(err, "the slug's base64 does not decode to JSON: "
				 "it has a NUL byte");
	assert_null(decode("rllm1:eyJhIjoiXHUwMDAwIn0", err, sizeof(err)));
	assert_true(str_starts(err, "the slug's base64 does not decode to "
				    "JSON: "));
	/* A short message buffer gets a cut, terminated message. */
	assert_null(decode("rllm2:e30", err, 8));
	assert_string_equal(err, "the slu");
}

static void test_slug_max(void **state)
{
	/* {"p":"xxx..."} of 6139 bytes encodes to 8186 characters, so the
	 * slug is exactly SLUG_MAX bytes long; one more byte makes 8193. */
	struct buf s;
	json_t *meta, *back;
	char *slug;
	char err[256];

	buf_init(&s);
	for (size_t i = 0; i < 6131; i++)
		buf_add(&s, "x", 1);
	meta = json_object();
	json_object_set_new(meta, "p", json_string(s.data));
	slug = slug_encode(meta);
	assert_int_equal(strlen(slug), SLUG_MAX);
	back = decode(slug, err, sizeof(err));
	assert_non_null(back);
	assert_true(json_equal(back, meta));
	json_decref(back);
	free(slug);

	buf_add(&s, "x", 1);
	json_object_set_new(meta, "p", json_string(s.data));
	slug = slug_encode(meta);
	assert_int_equal(strlen(slug), SLUG_MAX + 1);
	assert_null(decode(slug, err, sizeof(err)));
	assert_string_equal(err, "the slug is longer than 8192 bytes");
	free(slug);
	json_decref(meta);
	buf_release(&s);
}

/* ---- the event parser ---- */

struct seen {
	struct buf log; /* every event as "raw|data" or "raw|-" lines */
	int count;
	struct sse_assembly *asm_;
	int add_ret;
};

static void on_event(void *arg, const struct sse_event *ev)
{
	struct seen *s = arg;

	assert_non_null(ev->raw);
	assert_true(ev->raw_len > 0);
	buf_addf(&s->log, "[%zu:", ev->raw_len);
	buf_add(&s->log, ev->raw, ev->raw_len);
	if (ev->data) {
		assert_int_equal(ev->data[ev->data_len], '\0');
		buf_addf(&s->log, "|%zu:", ev->data_len);
		buf_add(&s->log, ev->data, ev->data_len);
		if (s->asm_) {
			int r = sse_assembly_add(s->asm_, ev->data,
						 ev->data_len);

			if (r < 0)
				s->add_ret = r;
		}
	} else {
		buf_adds(&s->log, "|-");
	}
	buf_adds(&s->log, "]");
	s->count++;
}

static const char sample[] = ": keepalive\n\n"
			     "event: message\nid: 7\ndata: {\"a\":1}\n\n"
			     "data:first\r\ndata\r\n: note\r\ndata:  two\r\n\n"
			     "data: cr only\r\r"
			     "id: 1\n\n"
			     "\n\n"
			     "data: [DONE]\n\n"
			     "data: partial";

static const char sample_events[] =
	"[13:: keepalive\n\n|-]"
	"[36:event: message\nid: 7\ndata: {\"a\":1}\n\n|7:{\"a\":1}]"
	"[39:data:first\r\ndata\r\n: note\r\ndata:  two\r\n\n|11:first\n\n two]"
	"[15:data: cr only\r\r|7:cr only]"
	"[7:id: 1\n\n|-]"
	"[14:data: [DONE]\n\n|6:[DONE]]";

static void feed_all(struct sse_parser *p, struct seen *s, const char *text,
		     size_t len, const size_t *cuts, size_t ncuts)
{
	size_t at = 0, i;

	for (i = 0; i <= ncuts; i++) {
		size_t to = i < ncuts ? cuts[i] : len;

		assert_int_equal(
			sse_parser_feed(p, text + at, to - at, on_event, s), 0);
		at = to;
	}
}

static void check_sample(const size_t *cuts, size_t ncuts)
{
	struct sse_parser p;
	struct seen s = {0};

	buf_init(&s.log);
	sse_parser_init(&p, 1024);
	feed_all(&p, &s, sample, sizeof(sample) - 1, cuts, ncuts);
	if (strcmp(s.log.data, sample_events) != 0)
		fail_msg("cuts %zu %zu: got %s", ncuts > 0 ? cuts[0] : 0,
			 ncuts > 1 ? cuts[1] : 0, s.log.data);
	assert_int_equal(sse_parser_pending(&p), strlen("data: partial"));
	sse_parser_release(&p);
	buf_release(&s.log);
}

static void test_sse_parser_splits(void **state)
{
	const size_t len = sizeof(sample) - 1;
	size_t cuts[2], i, j;
	struct sse_parser p;
	struct seen s = {0};

	check_sample(NULL, 0);
	for (i = 0; i <= len; i++) {
		cuts[0] = i;
		check_sample(cuts, 1);
		for (j = i; j <= len; j++) {
			cuts[1] = j;
			check_sample(cuts, 2);
		}
	}
	/* One byte at a time. */
	buf_init(&s.log);
	sse_parser_init(&p, 1024);
	for (i = 0; i < len; i++)
		assert_int_equal(
			sse_parser_feed(&p, sample + i, 1, on_event, &s), 0);
	assert_string_equal(s.log.data, sample_events);
	sse_parser_release(&p);
	buf_release(&s.log);
}

static void test_sse_parser_crlf(void **state)
{
	const char text[] = "data: a\r\n\r\ndata: b\r\n\r\n";
	struct sse_parser p;
	struct seen s = {0};

	buf_init(&s.log);
	sse_parser_init(&p, 1024);
	assert_int_equal(
		sse_parser_feed(&p, text, sizeof(text) - 1, on_event, &s), 0);
	assert_string_equal(s.log.data, "[11:data: a\r\n\r\n|1:a]"
					"[11:data: b\r\n\r\n|1:b]");
	assert_int_equal(sse_parser_pending(&p), 0);
	buf_reset(&s.log);
	/* Cut between the CR and LF that end the event: the CR ends it,
	 * the LF is the rest of that line end and starts nothing. */
	assert_int_equal(sse_parser_feed(&p, text, 10, on_event, &s), 0);
	assert_string_equal(s.log.data, "[10:data: a\r\n\r|1:a]");
	assert_int_equal(sse_parser_pending(&p), 0);
	assert_int_equal(
		sse_parser_feed(&p, text + 10, sizeof(text) - 11, on_event, &s),
		0);
	assert_string_equal(s.log.data, "[10:data: a\r\n\r|1:a]"
					"[11:data: b\r\n\r\n|1:b]");
	/* A CR then a non-LF: two line ends. */
	buf_reset(&s.log);
	assert_int_equal(sse_parser_feed(&p, "data: x\r", 8, on_event, &s), 0);
	assert_int_equal(sse_parser_feed(&p, "\rdata: y\n\n", 10, on_event, &s),
			 0);
	assert_string_equal(s.log.data,
			    "[9:data: x\r\r|1:x][9:data: y\n\n|1:y]");
	sse_parser_release(&p);
	buf_release(&s.log);
}

static void test_sse_parser_comments_and_fields(void **state)
{
	const char text[] = ":hello\n:world\n\n"
			    "retry: 10\nevent: x\n\n"
			    "data\n\n"
			    "data:\ndata:\n\n"
			    "datax: no\ndata : no\nDATA: no\n: c\ndata:yes\n\n";
	struct sse_parser p;
	struct seen s = {0};

	buf_init(&s.log);
	sse_parser_init(&p, 1024);
	assert_int_equal(
		sse_parser_feed(&p, text, sizeof(text) - 1, on_event, &s), 0);
	assert_string_equal(s.log.data,
			    "[15::hello\n:world\n\n|-]"
			    "[20:retry: 10\nevent: x\n\n|-]"
			    "[6:data\n\n|0:]"
			    "[13:data:\ndata:\n\n|1:\n]"
			    "[43:datax: no\ndata : no\nDATA: no\n: c\n"
			    "data:yes\n\n|3:yes]");
	sse_parser_release(&p);
	buf_release(&s.log);
}

static void test_sse_parser_oversize(void **state)
{
	struct sse_parser p;
	struct seen s = {0};
	char big[64];
	size_t i;

	buf_init(&s.log);
	memset(big, 'x', sizeof(big));
	sse_parser_init(&p, 32);
	/* An event of exactly 32 bytes passes. */
	assert_int_equal(sse_parser_feed(&p,
					 "data: 012345678901234567890123\n"
					 "\n",
					 32, on_event, &s),
			 0);
	assert_int_equal(s.count, 1);
	/* One growing past 32 in small pieces is refused, for good. */
	assert_int_equal(sse_parser_feed(&p, "data: ", 6, on_event, &s), 0);
	for (i = 0; i < 26; i++)
		assert_int_equal(sse_parser_feed(&p, big, 1, on_event, &s), 0);
	assert_int_equal(sse_parser_feed(&p, big, 1, on_event, &s), -E2BIG);
	assert_int_equal(sse_parser_feed(&p, "\n\n", 2, on_event, &s), -E2BIG);
	assert_int_equal(sse_parser_feed(&p, "", 0, on_event, &s), -E2BIG);
	assert_int_equal(s.count, 1);
	assert_int_equal(sse_parser_pending(&p), 0);
	sse_parser_release(&p);

	/* In one feed: the event before the big one still comes out. */
	sse_parser_init(&p, 32);
	s.count = 0;
	assert_int_equal(
		sse_parser_feed(&p, "data: a\n\ndata: ", 15, on_event, &s), 0);
	assert_int_equal(sse_parser_feed(&p, big, sizeof(big), on_event, &s),
			 -E2BIG);
	assert_int_equal(s.count, 1);
	sse_parser_release(&p);
	buf_release(&s.log);
}

/* ---- the assembler ---- */

/* Runs the chunks, each as "data: <chunk>\n\n", through a parser into a
 * new assembler. */
static struct sse_assembly *assemble(const char *const *chunks, size_t n)
{
	struct sse_parser p;
	struct seen s = {0};
	struct buf stream;
	size_t i;

	buf_init(&s.log);
	buf_init(&stream);
	s.asm_ = sse_assembly_new(1 << 20);
	for (i = 0; i < n; i++)
		buf_addf(&stream, "data: %s\n\n", chunks[i]);
	sse_parser_init(&p, 1 << 20);
	assert_int_equal(
		sse_parser_feed(&p, stream.data, stream.len, on_event, &s), 0);
	assert_int_equal(s.count, (int)n);
	assert_int_equal(s.add_ret, 0);
	sse_parser_release(&p);
	buf_release(&stream);
	buf_release(&s.log);
	return s.asm_;
}

#define HEAD                                                          \
	"\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\"," \
	"\"created\":100,\"model\":\"m\""

static const char *const chat_chunks[] = {
	"{" HEAD ",\"prompt_token_ids\":[1,2,3],\"choices\":[{\"index\":0,"
	"\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":"
	"null,\"finish_reason\":null,\"token_ids\":[]}]}",
	"{" HEAD ",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},"
	"\"logprobs\":{\"content\":[{\"token\":\"Hel\",\"logprob\":-0.5,"
	"\"bytes\":[72,101,108],\"top_logprobs\":[{\"token\":\"Hel\","
	"\"logprob\":-0.5,\"bytes\":[72,101,108]}]}]},\"finish_reason\":null,"
	"\"token_ids\":[10]}]}",
	"{" HEAD ",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},"
	"\"logprobs\":{\"content\":[{\"token\":\"lo\",\"logprob\":-0.25,"
	"\"bytes\":[108,111],\"top_logprobs\":[]}]},\"finish_reason\":"
	"\"stop\",\"token_ids\":[11]}]}",
	"{" HEAD ",\"choices\":[],\"usage\":{\"prompt_tokens\":3,"
	"\"completion_tokens\":2,\"total_tokens\":5}}",
	"[DONE]",
};

static const char chat_result[] =
	"{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":100,"
	"\"model\":\"m\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
	"\"assistant\",\"content\":\"Hello\"},\"finish_reason\":\"stop\","
	"\"logprobs\":{\"content\":[{\"token\":\"Hel\",\"logprob\":-0.5,"
	"\"bytes\":[72,101,108],\"top_logprobs\":[{\"token\":\"Hel\","
	"\"logprob\":-0.5,\"bytes\":[72,101,108]}]},{\"token\":\"lo\","
	"\"logprob\":-0.25,\"bytes\":[108,111],\"top_logprobs\":[]}]},"
	"\"token_ids\":[10,11]}],\"usage\":{\"prompt_tokens\":3,"
	"\"completion_tokens\":2,\"total_tokens\":5},"
	"\"prompt_token_ids\":[1,2,3]}";

static void test_assembly_chat(void **state)
{
	struct sse_assembly *a = assemble(chat_chunks, 5);
	struct extract_fields f;
	json_t *r;

	assert_true(sse_assembly_done(a));
	r = sse_assembly_result(a);
	assert_json_equal(r, chat_result);
	/* What a trace keeps of it. */
	extract_fields(r, &f);
	assert_json_equal(f.prompt_token_ids, "[1,2,3]");
	assert_json_equal(f.completion_token_ids, "[10,11]");
	assert_json_equal(f.logprobs, "[-0.5,-0.25]");
	assert_json_equal(f.usage, "{\"prompt_tokens\":3,"
				   "\"completion_tokens\":2,"
				   "\"total_tokens\":5}");
	extract_fields_release(&f);
	assert_null(f.usage);
	json_decref(r);
	sse_assembly_free(a);
}

static void test_assembly_tool_calls(void **state)
{
	static const char *const chunks[] = {
		"{" HEAD ",\"system_fingerprint\":\"fp\",\"choices\":[{"
		"\"index\":0,\"delta\":{\"role\":\"assistant\",\"tool_calls\":"
		"[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\","
		"\"function\":{\"name\":\"get\",\"arguments\":\"\"}}]},"
		"\"finish_reason\":null}]}",
		"{" HEAD ",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":"
		"[{\"index\":0,\"function\":{\"arguments\":\"{\\\"q\\\":\"}}]}}"
		"]}",
		"{" HEAD ",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":"
		"[{\"index\":1,\"id\":\"call_b\",\"type\":\"function\","
		"\"function\":{\"name\":\"put\",\"arguments\":\"{}\"}}]}}]}",
		/* A later id or name does not replace the first. */
		"{" HEAD ",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":"
		"[{\"index\":0,\"id\":\"call_z\",\"function\":{\"name\":\"zz\","
		"\"arguments\":\"1}\"}}]}}]}",
		"{" HEAD ",\"choices\":[{\"index\":0,\"delta\":{},"
		"\"finish_reason\":\"tool_calls\"}]}",
	};
	struct sse_assembly *a = assemble(chunks, 5);
	json_t *r = sse_assembly_result(a);

	assert_false(sse_assembly_done(a));
	assert_json_equal(
		r, "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\","
		   "\"created\":100,\"model\":\"m\",\"system_fingerprint\":"
		   "\"fp\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
		   "\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":"
		   "\"call_a\",\"type\":\"function\",\"function\":{\"name\":"
		   "\"get\",\"arguments\":\"{\\\"q\\\":1}\"}},{\"id\":"
		   "\"call_b\",\"type\":\"function\",\"function\":{\"name\":"
		   "\"put\",\"arguments\":\"{}\"}}]},\"finish_reason\":"
		   "\"tool_calls\",\"logprobs\":null}]}");
	json_decref(r);
	sse_assembly_free(a);
}

static void test_assembly_two_choices(void **state)
{
	static const char *const chunks[] = {
		"{" HEAD ",\"choices\":[{\"index\":1,\"delta\":{\"role\":"
		"\"assistant\",\"content\":\"B1\"},\"token_ids\":[5]}]}",
		"{" HEAD ",\"choices\":[{\"index\":0,\"delta\":{\"role\":"
		"\"assistant\",\"content\":\"A1\"},\"token_ids\":[1]}]}",
		"{" HEAD ",\"choices\":[{\"index\":1,\"delta\":{\"content\":"
		"\"B2\"},\"token_ids\":[6],\"finish_reason\":\"stop\"},{"
		"\"index\":0,\"delta\":{\"content\":\"A2\",\"reasoning_"
		"content\":"
		"\"hm\"},\"token_ids\":[2]}]}",
		"{" HEAD ",\"choices\":[{\"index\":0,\"delta\":{\"content\":"
		"\"A3\"},\"token_ids\":[3],\"finish_reason\":\"length\"}]}",
		"[DONE]",
	};
	struct sse_assembly *a = assemble(chunks, 5);
	json_t *r = sse_assembly_result(a);

	assert_json_equal(
		r, "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\","
		   "\"created\":100,\"model\":\"m\",\"choices\":[{\"index\":0,"
		   "\"message\":{\"role\":\"assistant\",\"content\":\"A1A2A3\","
		   "\"reasoning_content\":\"hm\"},\"finish_reason\":\"length\","
		   "\"logprobs\":null,\"token_ids\":[1,2,3]},{\"index\":1,"
		   "\"message\":{\"role\":\"assistant\",\"content\":\"B1B2\"},"
		   "\"finish_reason\":\"stop\",\"logprobs\":null,\"token_ids\":"
		   "[5,6]}]}");
	json_decref(r);
	sse_assembly_free(a);
}

static void test_assembly_text(void **state)
{
	static const char *const chunks[] = {
		"{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":"
		"5,\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\"Hi\","
		"\"logprobs\":{\"tokens\":[\"Hi\"],\"token_logprobs\":[null],"
		"\"top_logprobs\":[null],\"text_offset\":[0]},"
		"\"finish_reason\":null,\"stop_reason\":null,"
		"\"prompt_token_ids\":[7,8],\"token_ids\":[20]}],\"usage\":"
		"null}",
		"{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":"
		"5,\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\" "
		"there\","
		"\"logprobs\":{\"tokens\":[\" "
		"there\"],\"token_logprobs\":[-0.2],"
		"\"top_logprobs\":[{\" there\":-0.2}],\"text_offset\":[2]},"
		"\"finish_reason\":\"length\",\"stop_reason\":null,"
		"\"token_ids\":[21]}]}",
		"{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":"
		"5,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":"
		"2,"
		"\"completion_tokens\":2,\"total_tokens\":4}}",
		"[DONE]",
	};
	struct sse_assembly *a = assemble(chunks, 4);
	json_t *r = sse_assembly_result(a);
	struct extract_fields f;

	assert_true(sse_assembly_done(a));
	assert_json_equal(
		r, "{\"id\":\"cmpl-1\",\"object\":\"text_completion\","
		   "\"created\":5,\"model\":\"m\",\"choices\":[{\"index\":0,"
		   "\"text\":\"Hi there\",\"finish_reason\":\"length\","
		   "\"logprobs\":{\"tokens\":[\"Hi\",\" there\"],"
		   "\"token_logprobs\":[null,-0.2],\"top_logprobs\":[null,"
		   "{\" there\":-0.2}],\"text_offset\":[0,2]},\"token_ids\":"
		   "[20,21],\"prompt_token_ids\":[7,8]}],\"usage\":{"
		   "\"prompt_tokens\":2,\"completion_tokens\":2,"
		   "\"total_tokens\":4}}");
	extract_fields(r, &f);
	assert_json_equal(f.prompt_token_ids, "[7,8]");
	assert_json_equal(f.completion_token_ids, "[20,21]");
	assert_json_equal(f.logprobs, "[null,-0.2]");
	assert_non_null(f.usage);
	extract_fields_release(&f);
	json_decref(r);
	sse_assembly_free(a);
}

static void test_assembly_junk_and_limits(void **state)
{
	const char chunk[] = "{\"object\":\"chat.completion.chunk\","
			     "\"choices\":[{\"index\":0,\"delta\":{"
			     "\"content\":\"ab\"}}]}";
	const char odd[] = "{\"choices\":[1,{\"index\":\"x\"},"
			   "{\"index\":-1}]}";
	/* Room for odd and two chunks, one byte short of a third. */
	struct sse_assembly *a =
		sse_assembly_new(sizeof(odd) - 1 + 3 * (sizeof(chunk) - 1) - 1);
	json_t *r;

	assert_null(sse_assembly_result(a));
	assert_int_equal(sse_assembly_add(a, "[DONE]", 6), 0);
	assert_true(sse_assembly_done(a));
	assert_null(sse_assembly_result(a));
	assert_int_equal(sse_assembly_add(a, "not json", 8), -EINVAL);
	assert_int_equal(sse_assembly_add(a, "[1,2]", 5), -EINVAL);
	assert_int_equal(sse_assembly_add(a, "\"s\"", 3), -EINVAL);
	assert_int_equal(sse_assembly_add(a, "", 0), -EINVAL);
	assert_int_equal(sse_assembly_add(a, "{\"a\":", 5), -EINVAL);
	assert_null(sse_assembly_result(a));
	/* Odd shapes are skipped, not trusted. */
	assert_int_equal(sse_assembly_add(a, odd, sizeof(odd) - 1), 0);
	assert_int_equal(sse_assembly_add(a, chunk, sizeof(chunk) - 1), 0);
	/* The third copy is one too many, and nothing is taken after
	 * that. */
	assert_int_equal(sse_assembly_add(a, chunk, sizeof(chunk) - 1), 0);
	assert_int_equal(sse_assembly_add(a, chunk, sizeof(chunk) - 1), -E2BIG);
	assert_int_equal(sse_assembly_add(a, "{}", 2), -E2BIG);
	r = sse_assembly_result(a);
	assert_json_equal(r, "{\"id\":null,\"object\":\"chat.completion\","
			     "\"created\":null,\"model\":null,\"choices\":[{"
			     "\"index\":0,\"message\":{\"role\":\"assistant\","
			     "\"content\":\"abab\"},\"finish_reason\":null,"
			     "\"logprobs\":null}]}");
	json_decref(r);
	sse_assembly_free(a);
	sse_assembly_free(NULL);
}

/* ---- extraction ---- */

static void extract_text(const char *resp, struct extract_fields *f)
{
	json_t *r = parse(resp);

	extract_fields(r, f);
	json_decref(r);
}

static void test_extract_chat_and_text(void **state)
{
	struct extract_fields f;

	extract_text(
		"{\"prompt_token_ids\":[1,2],\"choices\":[{\"index\":0,"
		"\"message\":{\"content\":\"x\"},\"logprobs\":{\"content\":"
		"[{\"token\":\"x\",\"logprob\":-1.5},{\"token\":\"y\","
		"\"logprob\":0}]},\"token_ids\":[9,8],"
		"\"prompt_token_ids\":[5]}],\"usage\":{\"total_tokens\":4}"
		"}",
		&f);
	assert_json_equal(f.prompt_token_ids, "[1,2]");
	assert_json_equal(f.completion_token_ids, "[9,8]");
	assert_json_equal(f.logprobs, "[-1.5,0]");
	assert_json_equal(f.usage, "{\"total_tokens\":4}");
	extract_fields_release(&f);

	/* Text: prompt ids in the choice, token_logprobs as they are. */
	extract_text("{\"choices\":[{\"text\":\"x\",\"logprobs\":{\"tokens\":"
		     "[\"a\",\"b\"],\"token_logprobs\":[null,-0.5]},"
		     "\"prompt_token_ids\":[5,6]}]}",
		     &f);
	assert_json_equal(f.prompt_token_ids, "[5,6]");
	assert_null(f.completion_token_ids);
	assert_json_equal(f.logprobs, "[null,-0.5]");
	assert_null(f.usage);
	extract_fields_release(&f);
}

static void test_extract_provider_specific(void **state)
{
	struct extract_fields f;

	extract_text("{\"choices\":[{\"message\":{},\"logprobs\":null,"
		     "\"provider_specific_fields\":{\"token_ids\":[4,5],"
		     "\"response_logprobs\":[-0.1,-0.2]}}]}",
		     &f);
	assert_null(f.prompt_token_ids);
	assert_json_equal(f.completion_token_ids, "[4,5]");
	assert_json_equal(f.logprobs, "[-0.1,-0.2]");
	extract_fields_release(&f);
	/* The choice's own fields come first. */
	extract_text("{\"choices\":[{\"token_ids\":[1],\"logprobs\":{"
		     "\"content\":[{\"logprob\":-3}]},"
		     "\"provider_specific_fields\":{\"token_ids\":[4,5],"
		     "\"response_logprobs\":[-0.1,-0.2]}}]}",
		     &f);
	assert_json_equal(f.completion_token_ids, "[1]");
	assert_json_equal(f.logprobs, "[-3]");
	extract_fields_release(&f);
}

static void test_extract_wrong_types(void **state)
{
	struct extract_fields f;
	json_t *v;

	/* Wrong types everywhere: nothing is kept. */
	extract_text(
		"{\"prompt_token_ids\":[1,\"2\"],\"usage\":\"many\","
		"\"choices\":[{\"token_ids\":[1.5],\"prompt_token_ids\":"
		"{},\"logprobs\":{\"content\":[{\"logprob\":-1},"
		"{\"token\":\"no logprob\"}]},\"provider_specific_fields\":"
		"{\"token_ids\":\"1,2\",\"response_logprobs\":[\"x\"]}}]}",
		&f);
	assert_null(f.prompt_token_ids);
	assert_null(f.completion_token_ids);
	assert_null(f.logprobs);
	assert_null(f.usage);
	extract_fields_release(&f);
	/* A logprob that is not a number, token_logprobs with a string. */
	extract_text("{\"choices\":[{\"logprobs\":{\"content\":[{\"logprob\":"
		     "\"-1\"}]}},{\"token_ids\":[1]}]}",
		     &f);
	assert_null(f.logprobs);
	assert_null(f.completion_token_ids);
	extract_fields_release(&f);
	extract_text("{\"choices\":[{\"logprobs\":{\"token_logprobs\":[-1,"
		     "\"x\"]}}]}",
		     &f);
	assert_null(f.logprobs);
	extract_fields_release(&f);
	/* choices that are not a list, responses that are not objects. */
	extract_text("{\"choices\":{\"0\":{\"token_ids\":[1]}},\"usage\":{}}",
		     &f);
	assert_null(f.completion_token_ids);
	assert_json_equal(f.usage, "{}");
	extract_fields_release(&f);
	extract_text("{\"choices\":[7]}", &f);
	assert_null(f.completion_token_ids);
	extract_fields_release(&f);
	v = parse("[1]");
	extract_fields(v, &f);
	assert_null(f.prompt_token_ids);
	assert_null(f.usage);
	extract_fields_release(&f);
	json_decref(v);
	extract_fields(NULL, &f);
	assert_null(f.logprobs);
	extract_fields_release(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_slug_example),
		cmocka_unit_test(test_slug_exact_bytes),
		cmocka_unit_test(test_slug_alphabet_and_padding),
		cmocka_unit_test(test_slug_errors),
		cmocka_unit_test(test_slug_max),
		cmocka_unit_test(test_sse_parser_splits),
		cmocka_unit_test(test_sse_parser_crlf),
		cmocka_unit_test(test_sse_parser_comments_and_fields),
		cmocka_unit_test(test_sse_parser_oversize),
		cmocka_unit_test(test_assembly_chat),
		cmocka_unit_test(test_assembly_tool_calls),
		cmocka_unit_test(test_assembly_two_choices),
		cmocka_unit_test(test_assembly_text),
		cmocka_unit_test(test_assembly_junk_and_limits),
		cmocka_unit_test(test_extract_chat_and_text),
		cmocka_unit_test(test_extract_provider_specific),
		cmocka_unit_test(test_extract_wrong_types),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Result serialisation, and program output as JSON text. Output is
 * arbitrary bytes: control bytes grow sixfold as \u00XX and bad UTF-8
 * threefold as U+FFFD, so what a reply holds is counted in serialised
 * bytes, and large replies are written as text once rather than built as
 * JSON values and dumped.
 */
#include <string.h>

#include "base/text.h"
#include "runtime/result.h"
#include "base/banned.h"

json_t *json_text(const char *data, size_t len)
{
	struct buf b;
	json_t *s;

	if (!data)
		return json_string("");
	/* Valid text (the usual case) is copied once, by jansson. */
	s = json_stringn(data, len);
	if (s)
		return s;
	buf_init(&b);
	utf8_repair(&b, data, len);
	s = json_stringn(b.data ? b.data : "", b.len);
	buf_release(&b);
	return s ? s : json_string("");
}

/* The short escape jansson (and json_text_write) uses for an ASCII byte,
 * or 0: then bytes below 0x20 become \u00XX and the rest stay as they
 * are. */
static char short_escape(unsigned char c)
{
	switch (c) {
	case '"':
		return '"';
	case '\\':
		return '\\';
	case '\b':
		return 'b';
	case '\f':
		return 'f';
	case '\n':
		return 'n';
	case '\r':
		return 'r';
	case '\t':
		return 't';
	}
	return 0;
}

static size_t ascii_size(unsigned char c)
{
	return short_escape(c) ? 2 : c < 0x20 ? 6 : 1;
}

size_t json_text_fit(const char *data, size_t len, uint64_t room,
		     uint64_t *size)
{
	uint64_t total = 0;
	size_t i = 0;

	while (i < len) {
		unsigned char c = (unsigned char)data[i];
		size_t n = 1, cost;

		if (c < 0x80) {
			cost = ascii_size(c);
		} else {
			n = utf8_seq_len(data + i, len - i);
			cost = n ? n : 3;
			n = n ? n : 1;
		}
		if (total + cost > room)
			break;
		total += cost;
		i += n;
	}
	*size = total;
	return i;
}

void json_text_write(struct buf *out, const char *data, size_t len)
{
	static const char replacement[] = "\xEF\xBF\xBD";
	static const char hex[] = "0123456789ABCDEF";
	size_t i = 0, run = 0;

	if (!data) /* an empty buffer's data */
		data = "";
	buf_add(out, "\"", 1);
	while (i < len) {
		unsigned char c = (unsigned char)data[i];
		size_t n = 1;
		char esc[6];

		if (c < 0x80 ? ascii_size(c) == 1
			     : (n = utf8_seq_len(data + i, len - i)) != 0) {
			/* Runs of plain text go out in one piece. */
			run += n;
			i += n;
			continue;
		}
		buf_add(out, data + i - run, run);
		run = 0;
		if (c >= 0x80) {
			buf_add(out, replacement, 3);
		} else if (short_escape(c)) {
			esc[0] = '\\';
			esc[1] = short_escape(c);
			buf_add(out, esc, 2);
		} else {
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			buf_add(out, esc, 6);
		}
		i++;
	}
	buf_add(out, data + len - run, run);
	buf_add(out, "\"", 1);
}

json_t *result_to_json(const struct sandbox_result *res)
{
	json_t *o = json_object();
	bool exited = res->exit_code >= 0 && !res->signal;

	json_object_set_new(o, "status",
			    json_string(sandbox_status_name(res->status)));
	json_object_set_new(o, "exit_code",
			    exited ? json_integer(res->exit_code)
				   : json_null());
	json_object_set_new(o, "signal",
			    res->signal ? json_integer(res->signal)
					: json_null());
	json_object_set_new(o, "wall_ms",
			    json_integer((json_int_t)res->wall_ms));
	json_object_set_new(o, "cpu_ms", json_integer((json_int_t)res->cpu_ms));
	json_object_set_new(o, "peak_memory_bytes",
			    json_integer((json_int_t)res->peak_memory_bytes));
	json_object_set_new(o, "oom_killed", json_boolean(res->oom_killed));
	json_object_set_new(o, "output_truncated",
			    json_boolean(res->output_truncated));
	json_object_set_new(o, "pids_limit_hit",
			    json_boolean(res->pids_limit_hit));
	if (res->status == SANDBOX_ERROR)
		json_object_set_new(o, "error", json_string(res->error));
	return o;
}

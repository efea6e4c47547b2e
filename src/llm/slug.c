/*
 * rLLM's metadata slug. Decoding is strict about what it accepts and says
 * why it refused. Encoding writes the JSON itself rather than through
 * jansson's dumper, because the bytes must be those of Python's
 * json.dumps(meta, separators=(",", ":"), sort_keys=True): lower-case
 * \uXXXX escapes (DEL included), surrogate pairs above the BMP, and floats
 * as Python's repr() writes them (shortest round-trip digits).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/text.h"
#include "base/util.h"
#include "llm/slug.h"
#include "base/banned.h"

#define SLUG_PREFIX "rllm1:"
#define SLUG_PREFIX_LEN (sizeof(SLUG_PREFIX) - 1)

static bool is_b64url(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '-' || c == '_';
}

json_t *slug_decode(const char *slug, size_t len, char *err, size_t errlen)
{
	struct buf std, raw;
	json_error_t jerr;
	json_t *meta = NULL;
	size_t i, end;

	buf_init(&std);
	buf_init(&raw);
	if (len > SLUG_MAX) {
		snprintf(err, errlen, "the slug is longer than %d bytes",
			 SLUG_MAX);
		goto out;
	}
	if (len < SLUG_PREFIX_LEN ||
	    memcmp(slug, SLUG_PREFIX, SLUG_PREFIX_LEN) != 0) {
		snprintf(err, errlen, "the slug must start with '%s'",
			 SLUG_PREFIX);
		goto out;
	}
	/* Trailing '=' padding is accepted; base64_decode() checks that it
	 * fits the length. */
	end = len;
	while (end > SLUG_PREFIX_LEN && slug[end - 1] == '=')
		end--;
	for (i = SLUG_PREFIX_LEN; i < len; i++) {
		unsigned char c = slug[i];

		if (c == '\0') {
			snprintf(err, errlen,
				 "the slug has a NUL byte at "
				 "byte %zu",
				 i);
			goto out;
		}
		if (i < end && !is_b64url(c)) {
			snprintf(err, errlen,
				 "the slug has a character outside base64url "
				 "at byte %zu",
				 i);
			goto out;
		}
	}
	if (len - end > 2 || (end - SLUG_PREFIX_LEN) % 4 == 1 ||
	    (len > end && (len - SLUG_PREFIX_LEN) % 4 != 0)) {
		snprintf(err, errlen,
			 "the slug's base64 has a length no base64 can have "
			 "(%zu characters)",
			 len - SLUG_PREFIX_LEN);
		goto out;
	}
	/* To the standard alphabet, for base64_decode(). */
	buf_add(&std, slug + SLUG_PREFIX_LEN, len - SLUG_PREFIX_LEN);
	for (i = 0; i < std.len; i++) {
		if (std.data[i] == '-')
			std.data[i] = '+';
		else if (std.data[i] == '_')
			std.data[i] = '/';
	}
	if (base64_decode(&raw, std.data ? std.data : "", std.len) < 0) {
		snprintf(err, errlen, "the slug's base64 cannot be decoded");
		goto out;
	}
	if (raw.len && memchr(raw.data, '\0', raw.len)) {
		snprintf(err, errlen,
			 "the slug's base64 does not decode to JSON: it has a "
			 "NUL byte");
		goto out;
	}
	meta = json_loadb(raw.data ? raw.data : "", raw.len, JSON_DECODE_ANY,
			  &jerr);
	if (!meta) {
		snprintf(err, errlen,
			 "the slug's base64 does not decode to JSON: %s",
			 jerr.text);
		goto out;
	}
	if (!json_is_object(meta)) {
		json_decref(meta);
		meta = NULL;
		snprintf(err, errlen, "the slug's JSON is not an object");
		goto out;
	}
out:
	buf_release(&std);
	buf_release(&raw);
	return meta;
}

/* Writes cp as Python's ensure_ascii does: \uxxxx in lower case. */
static void put_u(struct buf *out, unsigned cp)
{
	buf_addf(out, "\\u%04x", cp);
}

/* Decodes the UTF-8 sequence at p (jansson keeps strings valid UTF-8). */
static unsigned utf8_decode(const unsigned char *p, size_t n, size_t *used)
{
	size_t k = utf8_seq_len((const char *)p, n);
	unsigned cp;
	size_t i;

	if (k <= 1) {
		*used = 1;
		return p[0] < 0x80 ? p[0] : 0xFFFD;
	}
	cp = p[0] & (0xFF >> (k + 1));
	for (i = 1; i < k; i++)
		cp = (cp << 6) | (p[i] & 0x3F);
	*used = k;
	return cp;
}

static void put_string(struct buf *out, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, used;
	unsigned cp;

	buf_add(out, "\"", 1);
	while (i < n) {
		cp = utf8_decode(p + i, n - i, &used);
		i += used;
		switch (cp) {
		case '"':
			buf_add(out, "\\\"", 2);
			continue;
		case '\\':
			buf_add(out, "\\\\", 2);
			continue;
		case '\n':
			buf_add(out, "\\n", 2);
			continue;
		case '\r':
			buf_add(out, "\\r", 2);
			continue;
		case '\t':
			buf_add(out, "\\t", 2);
			continue;
		case '\b':
			buf_add(out, "\\b", 2);
			continue;
		case '\f':
			buf_add(out, "\\f", 2);
			continue;
		}
		if (cp >= 0x20 && cp < 0x7F) {
			char c = (char)cp;

			buf_add(out, &c, 1);
		} else if (cp >= 0x10000) {
			cp -= 0x10000;
			put_u(out, 0xD800 | (cp >> 10));
			put_u(out, 0xDC00 | (cp & 0x3FF));
		} else {
			put_u(out, cp);
		}
	}
	buf_add(out, "\"", 1);
}

/* A double as Python's repr(): the fewest digits that read back as the
 * same value, positional for exponents -4..15, else d.ddde+XX. */
static void put_real(struct buf *out, double v)
{
	char tmp[40], digits[24];
	int prec, exp, nd = 0, i;
	const char *p;

	/* 17 significant digits always read back the same. */
	for (prec = 0; prec < 16; prec++) {
		snprintf(tmp, sizeof(tmp), "%.*e", prec, v);
		if (strtod(tmp, NULL) == v)
			break;
	}
	if (prec == 16)
		snprintf(tmp, sizeof(tmp), "%.*e", prec, v);
	/* tmp is [-]d[.ddd]e[+-]XX */
	p = tmp;
	if (*p == '-') {
		buf_add(out, "-", 1);
		p++;
	}
	for (; *p && *p != 'e'; p++)
		if (*p != '.')
			digits[nd++] = *p;
	exp = (int)strtol(p + 1, NULL, 10);
	while (nd > 1 && digits[nd - 1] == '0')
		nd--;
	if (exp >= -4 && exp < 16) {
		if (exp < 0) {
			buf_add(out, "0.", 2);
			for (i = -1; i > exp; i--)
				buf_add(out, "0", 1);
			buf_add(out, digits, nd);
		} else if (nd <= exp + 1) {
			buf_add(out, digits, nd);
			for (i = nd; i <= exp; i++)
				buf_add(out, "0", 1);
			buf_add(out, ".0", 2);
		} else {
			buf_add(out, digits, exp + 1);
			buf_add(out, ".", 1);
			buf_add(out, digits + exp + 1, nd - exp - 1);
		}
		return;
	}
	buf_add(out, digits, 1);
	if (nd > 1) {
		buf_add(out, ".", 1);
		buf_add(out, digits + 1, nd - 1);
	}
	buf_addf(out, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
}

struct key {
	const char *s;
	size_t n;
	json_t *v;
};

/* UTF-8 byte order is code point order, which is how Python sorts. */
static int key_cmp(const void *a, const void *b)
{
	const struct key *x = a, *y = b;
	int c = memcmp(x->s, y->s, x->n < y->n ? x->n : y->n);

	if (c)
		return c;
	return x->n < y->n ? -1 : x->n > y->n;
}

static void put_value(struct buf *out, const json_t *v);

static void put_object(struct buf *out, const json_t *obj)
{
	size_t n = json_object_size(obj), i = 0;
	struct key *keys = xcalloc(n ? n : 1, sizeof(*keys));
	void *it;

	for (it = json_object_iter((json_t *)obj); it && i < n;
	     it = json_object_iter_next((json_t *)obj, it), i++) {
		keys[i].s = json_object_iter_key(it);
		keys[i].n = json_object_iter_key_len(it);
		keys[i].v = json_object_iter_value(it);
	}
	n = i;
	qsort(keys, n, sizeof(*keys), key_cmp);
	buf_add(out, "{", 1);
	for (i = 0; i < n; i++) {
		if (i)
			buf_add(out, ",", 1);
		put_string(out, keys[i].s, keys[i].n);
		buf_add(out, ":", 1);
		put_value(out, keys[i].v);
	}
	buf_add(out, "}", 1);
	free(keys);
}

static void put_value(struct buf *out, const json_t *v)
{
	size_t i;

	switch (json_typeof(v)) {
	case JSON_OBJECT:
		put_object(out, v);
		break;
	case JSON_ARRAY:
		buf_add(out, "[", 1);
		for (i = 0; i < json_array_size(v); i++) {
			if (i)
				buf_add(out, ",", 1);
			put_value(out, json_array_get(v, i));
		}
		buf_add(out, "]", 1);
		break;
	case JSON_STRING:
		put_string(out, json_string_value(v), json_string_length(v));
		break;
	case JSON_INTEGER:
		buf_addf(out, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		break;
	case JSON_REAL:
		put_real(out, json_real_value(v));
		break;
	case JSON_TRUE:
		buf_adds(out, "true");
		break;
	case JSON_FALSE:
		buf_adds(out, "false");
		break;
	case JSON_NULL:
		buf_adds(out, "null");
		break;
	}
}

char *slug_encode(const json_t *meta)
{
	struct buf json, b64, out;
	size_t i;

	if (!json_is_object(meta))
		return NULL;
	buf_init(&json);
	buf_init(&b64);
	buf_init(&out);
	put_object(&json, meta);
	base64_encode(&b64, json.data, json.len);
	buf_adds(&out, SLUG_PREFIX);
	for (i = 0; i < b64.len && b64.data[i] != '='; i++) {
		char c = b64.data[i];

		if (c == '+')
			c = '-';
		else if (c == '/')
			c = '_';
		buf_add(&out, &c, 1);
	}
	buf_release(&json);
	buf_release(&b64);
	return out.data;
}

/*
 * UTF-8 repair and base64, both over untrusted bytes; both have fuzz
 * targets (tests/fuzz).
 */
#include <errno.h>
#include <stdint.h>

#include "base/text.h"
#include "base/banned.h"

static const char replacement[] = "\xEF\xBF\xBD";

/* Returns the length of the well-formed sequence at p, or 0. */
static size_t utf8_seq(const unsigned char *p, size_t left)
{
	unsigned char c = p[0];

	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		return left >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
	if (c >= 0xE0 && c <= 0xEF) {
		unsigned char lo = 0x80, hi = 0xBF;

		if (c == 0xE0)
			lo = 0xA0; /* no overlongs */
		if (c == 0xED)
			hi = 0x9F; /* no surrogates */
		return left >= 3 && p[1] >= lo && p[1] <= hi &&
				       (p[2] & 0xC0) == 0x80
			       ? 3
			       : 0;
	}
	if (c >= 0xF0 && c <= 0xF4) {
		unsigned char lo = 0x80, hi = 0xBF;

		if (c == 0xF0)
			lo = 0x90;
		if (c == 0xF4)
			hi = 0x8F; /* nothing above U+10FFFF */
		return left >= 4 && p[1] >= lo && p[1] <= hi &&
				       (p[2] & 0xC0) == 0x80 &&
				       (p[3] & 0xC0) == 0x80
			       ? 4
			       : 0;
	}
	return 0;
}

size_t utf8_seq_len(const char *p, size_t left)
{
	return left ? utf8_seq((const unsigned char *)p, left) : 0;
}

bool utf8_repair(struct buf *out, const char *data, size_t len)
{
	const unsigned char *p = (const unsigned char *)data;
	size_t i = 0, run = 0;
	bool valid = true;

	buf_grow(out, len);
	while (i < len) {
		size_t n = utf8_seq(p + i, len - i);

		if (n) {
			i += n;
			run += n;
			continue;
		}
		buf_add(out, data + i - run, run);
		buf_add(out, replacement, 3);
		run = 0;
		i++;
		valid = false;
	}
	buf_add(out, data + len - run, run);
	return valid;
}

static const char b64[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void base64_encode(struct buf *out, const void *data, size_t len)
{
	const unsigned char *p = data;
	char q[4];
	size_t i;

	buf_grow(out, (len + 2) / 3 * 4);
	for (i = 0; i + 2 < len; i += 3) {
		q[0] = b64[p[i] >> 2];
		q[1] = b64[((p[i] & 3) << 4) | (p[i + 1] >> 4)];
		q[2] = b64[((p[i + 1] & 15) << 2) | (p[i + 2] >> 6)];
		q[3] = b64[p[i + 2] & 63];
		buf_add(out, q, 4);
	}
	if (i < len) {
		q[0] = b64[p[i] >> 2];
		if (i + 1 < len) {
			q[1] = b64[((p[i] & 3) << 4) | (p[i + 1] >> 4)];
			q[2] = b64[(p[i + 1] & 15) << 2];
		} else {
			q[1] = b64[(p[i] & 3) << 4];
			q[2] = '=';
		}
		q[3] = '=';
		buf_add(out, q, 4);
	}
}

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int base64_decode(struct buf *out, const char *text, size_t len)
{
	uint32_t acc = 0;
	int bits = 0;
	size_t i, pad = 0;
	unsigned char c;

	while (pad < 2 && len > 0 && text[len - 1] == '=') {
		len--;
		pad++;
	}
	if ((len + pad) % 4 == 1 || (pad && (len + pad) % 4))
		return -EINVAL;
	buf_grow(out, len / 4 * 3 + 3);
	for (i = 0; i < len; i++) {
		int v = b64_value((unsigned char)text[i]);

		if (v < 0)
			return -EINVAL;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			c = (unsigned char)(acc >> bits);
			buf_add(out, &c, 1);
		}
	}
	return 0;
}

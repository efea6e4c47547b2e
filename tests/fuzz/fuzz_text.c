/*
 * libFuzzer target for the text helpers that read client and program
 * bytes (src/base/text.h): UTF-8 repair must always give valid UTF-8 and
 * leave valid input alone; base64 must round-trip and never crash on
 * arbitrary input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/text.h"

#define CHECK(cond)              \
	do {                     \
		if (!(cond))     \
			abort(); \
	} while (0)

static bool same(const struct buf *b, const uint8_t *data, size_t size)
{
	return b->len == size && (size == 0 || !memcmp(b->data, data, size));
}

/* An independent check, by decoding: each sequence is the shortest form of
 * a code point up to U+10FFFF that is not a surrogate. */
static bool valid_utf8(const unsigned char *p, size_t n)
{
	size_t i = 0, k, len;
	uint32_t cp;

	while (i < n) {
		unsigned char c = p[i];

		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xE0) == 0xC0) {
			len = 2;
			cp = c & 0x1F;
		} else if ((c & 0xF0) == 0xE0) {
			len = 3;
			cp = c & 0x0F;
		} else if ((c & 0xF8) == 0xF0) {
			len = 4;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (n - i < len)
			return false;
		for (k = 1; k < len; k++) {
			if ((p[i + k] & 0xC0) != 0x80)
				return false;
			cp = (cp << 6) | (p[i + k] & 0x3F);
		}
		if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
		    (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
		    (cp >= 0xD800 && cp <= 0xDFFF))
			return false;
		i += len;
	}
	return true;
}

static void check_utf8(const uint8_t *data, size_t size)
{
	struct buf out, again;
	bool valid;

	buf_init(&out);
	buf_init(&again);
	buf_adds(&out, "<");
	valid = utf8_repair(&out, (const char *)data, size);
	/* It appends: what was there stays. */
	CHECK(out.len >= 1 && out.data[0] == '<');
	/* It says valid exactly when the input is. */
	CHECK(valid == valid_utf8(data, size));
	CHECK(valid_utf8((const unsigned char *)out.data, out.len));
	/* The repaired text is valid, so repairing it changes nothing. */
	CHECK(utf8_repair(&again, out.data + 1, out.len - 1));
	CHECK(again.len == out.len - 1 &&
	      !memcmp(again.data, out.data + 1, again.len));
	/* Valid input comes out unchanged, invalid input does not. */
	if (valid)
		CHECK(same(&again, data, size));
	else
		CHECK(!same(&again, data, size));
	/* Each bad byte becomes at most one 3-byte U+FFFD. */
	CHECK(again.len <= 3 * size);
	/* The buffer stays NUL-terminated for in-place reading. */
	CHECK(out.data[out.len] == '\0');
	buf_release(&out);
	buf_release(&again);
}

static bool is_b64_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '+' || c == '/';
}

static void check_base64_round_trip(const uint8_t *data, size_t size)
{
	struct buf enc, dec;
	size_t i, pad = 0;

	buf_init(&enc);
	buf_init(&dec);
	base64_encode(&enc, data, size);
	CHECK(enc.len == (size + 2) / 3 * 4);
	for (i = 0; i < enc.len; i++) {
		if (enc.data[i] == '=') {
			pad++;
			continue;
		}
		CHECK(!pad && is_b64_char(enc.data[i]));
	}
	CHECK(pad == (3 - size % 3) % 3);
	CHECK(base64_decode(&dec, enc.data ? enc.data : "", enc.len) == 0);
	CHECK(same(&dec, data, size));
	/* Padding is optional. */
	buf_reset(&dec);
	CHECK(base64_decode(&dec, enc.data ? enc.data : "", enc.len - pad) ==
	      0);
	CHECK(same(&dec, data, size));
	buf_release(&enc);
	buf_release(&dec);
}

static void check_base64_decode(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	struct buf dec, enc;
	size_t len = size, pad = 0, i;

	buf_init(&dec);
	buf_init(&enc);
	if (base64_decode(&dec, text, size) == 0) {
		while (len > 0 && text[len - 1] == '=') {
			len--;
			pad++;
		}
		/* Only the alphabet, at most two '=' at the end, and a length
		 * that whole bytes can come from. */
		CHECK(pad <= 2);
		for (i = 0; i < len; i++)
			CHECK(is_b64_char(text[i]));
		CHECK(len % 4 != 1);
		CHECK(!pad || (len + pad) % 4 == 0);
		CHECK(dec.len == len * 6 / 8);
		/* Re-encoding gives the same characters, except for the
		 * unused low bits of the last one. */
		base64_encode(&enc, dec.data, dec.len);
		CHECK(enc.len >= len);
		if (len)
			CHECK(!memcmp(enc.data, text, len - 1));
	}
	buf_release(&dec);
	buf_release(&enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_utf8(data, size);
	check_base64_round_trip(data, size);
	check_base64_decode(data, size);
	return 0;
}

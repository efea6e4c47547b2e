/*
 * Text helpers for client bytes: UTF-8 repair (program output is arbitrary
 * bytes, JSON needs valid UTF-8) and strict base64.
 */
#ifndef SBX_TEXT_H
#define SBX_TEXT_H

#include <stdbool.h>
#include <stddef.h>

#include "base/buf.h"

/* Appends data to out as valid UTF-8: every byte sequence that is not
 * well-formed UTF-8 (overlongs, surrogates, truncated sequences, > U+10FFFF)
 * becomes U+FFFD. NUL bytes are kept. Returns true when data was already
 * valid. */
bool utf8_repair(struct buf *out, const char *data, size_t len);
/* The length of the well-formed UTF-8 sequence at the start of p (left
 * bytes, at least 1), or 0 when it is not one (utf8_repair() writes U+FFFD
 * for that byte). */
size_t utf8_seq_len(const char *p, size_t left);

/* Appends the base64 encoding of data to out. */
void base64_encode(struct buf *out, const void *data, size_t len);
/* Decodes standard base64 (padding optional, no whitespace) into out.
 * Returns 0 or -EINVAL for any other byte or a bad length. */
int base64_decode(struct buf *out, const char *text, size_t len);

#endif

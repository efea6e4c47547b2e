/*
 * rLLM's metadata slug: session metadata carried in a URL path segment,
 * "rllm1:" followed by the unpadded base64url of the metadata as compact
 * JSON with sorted keys. The gateway decodes it from
 * /meta/<slug>/v1/... paths; clients build it the same way.
 */
#ifndef SBX_LLM_SLUG_H
#define SBX_LLM_SLUG_H

#include <jansson.h>
#include <stddef.h>

/* Decodes the len bytes of slug (no NUL needed). Returns the metadata, a
 * JSON object (a new reference), or NULL with the reason in err: a prefix
 * other than "rllm1:", characters outside base64url (padding '=' at the
 * end is accepted), a length no base64 can have, bytes that are not UTF-8
 * JSON, JSON that is not an object, or a slug longer than SLUG_MAX. */
json_t *slug_decode(const char *slug, size_t len, char *err, size_t errlen);

/* Encodes meta (an object) as rLLM does: compact JSON, keys sorted,
 * non-ASCII escaped as \uXXXX, base64url without padding, "rllm1:" in
 * front. Returns a malloc'd string the caller frees, or NULL when meta is
 * not an object. */
char *slug_encode(const json_t *meta);

/* The longest slug accepted, in bytes. */
#define SLUG_MAX 8192

#endif

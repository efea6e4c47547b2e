/*
 * SHA-256 (FIPS 180-4), for content digests (agents are stored by the
 * digest of what was uploaded). Not for secrets: no constant-time claims.
 */
#ifndef SBX_SHA256_H
#define SBX_SHA256_H

#include <stddef.h>
#include <stdint.h>

struct sha256 {
	uint32_t h[8];
	uint64_t len; /* bytes so far */
	unsigned char block[64];
	size_t fill;
};

void sha256_init(struct sha256 *c);
void sha256_update(struct sha256 *c, const void *data, size_t n);
/* Writes the digest as 64 lowercase hex digits and a NUL into hex. */
void sha256_final_hex(struct sha256 *c, char hex[65]);

#endif

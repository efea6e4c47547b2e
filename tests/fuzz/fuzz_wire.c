/*
 * Fuzz target for the spec encoding init decodes (src/sandbox/wire.c):
 * arbitrary bytes must be refused or decoded without a crash, and what
 * decodes must survive a second round trip unchanged (the first may
 * normalise: any non-zero flag reads as true).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "sandbox/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sandbox_spec spec, spec2;
	struct init_mode mode, mode2;
	struct buf once, twice;

	if (wire_decode_spec((const char *)data, size, &spec, &mode))
		return 0;
	seccomp_prog_release(&mode.seccomp);
	mode.seccomp = (struct seccomp_prog){0};
	buf_init(&once);
	buf_init(&twice);
	wire_encode_spec(&once, &spec, &mode);
	/* What sbx encodes, init must decode. */
	if (wire_decode_spec(once.data, once.len, &spec2, &mode2))
		abort();
	seccomp_prog_release(&mode2.seccomp);
	mode2.seccomp = (struct seccomp_prog){0};
	wire_encode_spec(&twice, &spec2, &mode2);
	if (once.len != twice.len || memcmp(once.data, twice.data, once.len))
		abort();
	buf_release(&once);
	buf_release(&twice);
	sandbox_spec_release(&spec);
	sandbox_spec_release(&spec2);
	return 0;
}

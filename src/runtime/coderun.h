/*
 * A code run: a language's recipe turned into sandbox steps (compile once,
 * then one run step per stdin), and the per-step output collected while it
 * runs. Shared by the SandboxFusion-compatible and the native APIs.
 */
#ifndef SBX_CODERUN_H
#define SBX_CODERUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "runtime/lang.h"
#include "sandbox/sandbox.h"

struct coderun_input {
	const char *data; /* NULL: no stdin */
	size_t len;
};

/* Adds the source file and the steps to spec: a compile step (when the
 * language has one; later steps are skipped unless it succeeds) limited to
 * compile_ms, then one run step per input limited to run_ms each. args are
 * appended to the run command. Sets the sandbox's own wall limit to the sum
 * plus slack. Returns the index of the first run step. */
size_t coderun_build(struct sandbox_spec *spec, const struct lang *lang,
		     const char *code, size_t code_len, char *const *args,
		     const struct coderun_input *inputs, size_t ninputs,
		     uint64_t compile_ms, uint64_t run_ms);

/* Collected output: out[2*step] is stdout, out[2*step+1] stderr. */
struct coderun_output {
	struct buf *out;
	size_t nsteps;
};

void coderun_output_init(struct coderun_output *co, size_t nsteps);
void coderun_output_release(struct coderun_output *co);
/* Appends a chunk (the sandbox_ops.output signature, ctx = co). */
void coderun_output_add(struct coderun_output *co, size_t step, int stream,
			const char *data, size_t len);

#endif

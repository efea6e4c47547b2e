/*
 * Code runs: recipe to steps, and output collection.
 */
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "runtime/coderun.h"
#include "base/banned.h"

#define SLACK_MS 5000

size_t coderun_build(struct sandbox_spec *spec, const struct lang *lang,
		     const char *code, size_t code_len, char *const *args,
		     const struct coderun_input *inputs, size_t ninputs,
		     uint64_t compile_ms, uint64_t run_ms)
{
	struct sandbox_step *st;
	struct lang_job job;
	size_t first_run = 0, i;
	uint64_t total = SLACK_MS;

	lang_job_init(&job, lang, code, code_len, args);
	sandbox_spec_add_file(spec, job.source, job.code, job.code_len, false);
	for (i = 0; lang->env[i]; i++)
		sandbox_spec_add_env(spec, lang->env[i]);
	if (job.bind_src)
		sandbox_spec_add_bind(spec, job.bind_src, job.bind_dst, false);
	if (job.compile) {
		st = sandbox_spec_add_step(spec, job.compile, NULL, 0);
		st->wall_ms = compile_ms;
		st->stop_unless_ok = true;
		total += compile_ms;
		first_run = 1;
	}
	for (i = 0; i < ninputs; i++) {
		st = sandbox_spec_add_step(spec, job.run, inputs[i].data,
					   inputs[i].len);
		/* No stdin means empty, not the server's own stdin. */
		if (!inputs[i].data)
			st->stdin_data = xcalloc(1, 1);
		st->wall_ms = run_ms;
		total += run_ms;
	}
	lang_job_release(&job);
	spec->limits.wall_ms = total;
	return first_run;
}

void coderun_output_init(struct coderun_output *co, size_t nsteps)
{
	size_t i;

	co->nsteps = nsteps;
	co->out = xcalloc(2 * nsteps + 1, sizeof(*co->out));
	for (i = 0; i < 2 * nsteps; i++)
		buf_init(&co->out[i]);
}

void coderun_output_release(struct coderun_output *co)
{
	size_t i;

	for (i = 0; i < 2 * co->nsteps; i++)
		buf_release(&co->out[i]);
	free(co->out);
	co->out = NULL;
	co->nsteps = 0;
}

void coderun_output_add(struct coderun_output *co, size_t step, int stream,
			const char *data, size_t len)
{
	if (step >= co->nsteps || (stream != 1 && stream != 2))
		return;
	buf_add(&co->out[2 * step + (size_t)(stream - 1)], data, len);
}

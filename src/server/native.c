/*
 * The native one-shot API, POST /v1/run: a program (one source or several
 * files), run once or against up to NATIVE_MAX_TESTS tests that share one
 * compile, with sbx's own status words and a verdict per test. The
 * request parser is native_parse.c; this file turns a parsed request into
 * a sandbox spec and the sandbox's result into the reply.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "runtime/coderun.h"
#include "server/internal.h"
#include "server/request.h"
#include "server/native.h"
#include "base/banned.h"

/* A compile gets this long unless the client says otherwise. */
#define DEFAULT_COMPILE_MS 10000ull
/* Output kept for one reply across all steps and streams: with 256 tests
 * the per-step cap alone would let one request hold gigabytes. */
#define MAX_COLLECT (64ull << 20)

struct native_run {
	struct coderun_output co;
	bool *cut; /* per step: output dropped past MAX_COLLECT */
	uint64_t collected;
	bool has_compile;
	size_t first_run;
	struct native_test *tests; /* the expected outputs; owned */
	size_t ntests;		   /* 0: a plain run */
};

static void native_run_free(void *ctx)
{
	struct native_run *nr = ctx;
	size_t i;

	coderun_output_release(&nr->co);
	free(nr->cut);
	for (i = 0; i < nr->ntests; i++) {
		free(nr->tests[i].stdin_data);
		free(nr->tests[i].expected);
	}
	free(nr->tests);
	free(nr);
}

static void collect(void *ctx, size_t step, int stream, const char *data,
		    size_t len)
{
	struct native_run *nr = ctx;
	uint64_t room = MAX_COLLECT - nr->collected;

	if (step >= nr->co.nsteps)
		return;
	if (len > room) {
		nr->cut[step] = true;
		len = (size_t)room;
	}
	nr->collected += len;
	if (len)
		coderun_output_add(&nr->co, step, stream, data, len);
}

static bool step_ran(const struct sandbox_result *res, size_t i)
{
	return i < res->nsteps && res->steps[i].ran;
}

/* Step i's result, or NULL when it did not run. A sandbox that ended as a
 * whole (a setup failure, init killed by the OOM killer) has not marked the
 * step it was at: that one, the first that did not run, takes the
 * sandbox's status, unless a failed compile is why it did not run. */
static const struct sandbox_step_result *
step_get(const struct native_run *nr, const struct sandbox_result *res,
	 size_t i, struct sandbox_step_result *tmp)
{
	size_t j;

	if (step_ran(res, i))
		return &res->steps[i];
	if (res->status == SANDBOX_OK)
		return NULL;
	for (j = 0; j < i; j++)
		if (!step_ran(res, j))
			return NULL;
	if (i > 0 && nr->has_compile && res->steps[0].status != SANDBOX_OK)
		return NULL;
	memset(tmp, 0, sizeof(*tmp));
	tmp->ran = true;
	tmp->status = res->status;
	tmp->exit_code = -1;
	tmp->signal = res->signal;
	return tmp;
}

/* {"status", "exit_code", "signal", "wall_ms", "cpu_ms", "oom_killed",
 * "output_truncated", "stdout", "stderr"} of step i, or null when st is. */
static json_t *step_json(const struct native_run *nr, size_t i,
			 const struct sandbox_step_result *st)
{
	const struct buf *out = &nr->co.out[2 * i],
			 *err = &nr->co.out[2 * i + 1];
	bool exited = st && st->status != SANDBOX_TIME_LIMIT && !st->signal &&
		      st->exit_code >= 0;
	json_t *o;

	if (!st)
		return json_null();
	o = json_object();
	json_object_set_new(o, "status",
			    json_string(sandbox_status_name(st->status)));
	json_object_set_new(o, "exit_code",
			    exited ? json_integer(st->exit_code) : json_null());
	json_object_set_new(o, "signal",
			    st->signal ? json_integer(st->signal)
				       : json_null());
	json_object_set_new(o, "wall_ms",
			    json_integer((json_int_t)st->wall_ms));
	json_object_set_new(o, "cpu_ms", json_integer((json_int_t)st->cpu_ms));
	json_object_set_new(o, "oom_killed", json_boolean(st->oom_killed));
	json_object_set_new(o, "output_truncated",
			    json_boolean(st->output_truncated || nr->cut[i]));
	json_object_set_new(o, "stdout", json_text(out->data, out->len));
	json_object_set_new(o, "stderr", json_text(err->data, err->len));
	return o;
}

/* A test's verdict from its step's result and output. */
static const char *verdict(const struct native_run *nr, size_t i,
			   const struct sandbox_step_result *st,
			   const struct native_test *t)
{
	const struct buf *out = &nr->co.out[2 * i];

	if (!st)
		return "skipped";
	switch (st->status) {
	case SANDBOX_OK:
		if (!t->expected)
			return "accepted";
		return !nr->cut[i] && native_output_matches(out->data, out->len,
							    t->expected,
							    t->expected_len)
			       ? "accepted"
			       : "wrong_answer";
	case SANDBOX_NONZERO_EXIT:
	case SANDBOX_SIGNALED:
		return "runtime_error";
	case SANDBOX_TIME_LIMIT:
		return "time_limit";
	case SANDBOX_MEMORY_LIMIT:
		return "memory_limit";
	case SANDBOX_OUTPUT_LIMIT:
		return "output_limit";
	case SANDBOX_ERROR:
		break;
	}
	return "sandbox_error";
}

static void set_totals(json_t *o, const struct sandbox_result *res)
{
	json_object_set_new(o, "wall_ms",
			    json_integer((json_int_t)res->wall_ms));
	json_object_set_new(o, "cpu_ms", json_integer((json_int_t)res->cpu_ms));
	json_object_set_new(o, "peak_memory_bytes",
			    json_integer((json_int_t)res->peak_memory_bytes));
	json_object_set_new(o, "oom_killed", json_boolean(res->oom_killed));
}

static void native_done(struct request *req, struct sandbox_result *res,
			void *ctx)
{
	struct native_run *nr = ctx;
	struct sandbox_step_result tmp;
	const struct sandbox_step_result *cst = NULL, *st;
	enum sandbox_status status;
	bool compiled = true, accepted = true;
	json_t *o = json_object(), *tests;
	size_t i;

	if (nr->has_compile) {
		cst = step_get(nr, res, 0, &tmp);
		compiled = cst && cst->status == SANDBOX_OK;
	}
	status = compiled ? SANDBOX_OK : cst ? cst->status : res->status;
	json_object_set_new(o, "status", json_null()); /* keeps it first */
	json_object_set_new(o, "compile", step_json(nr, 0, cst));
	if (!nr->ntests) {
		st = compiled ? step_get(nr, res, nr->first_run, &tmp) : NULL;
		if (compiled)
			status = st ? st->status : res->status;
		json_object_set_new(o, "run", step_json(nr, nr->first_run, st));
	} else {
		json_object_set_new(o, "run", json_null());
		tests = json_array();
		for (i = 0; i < nr->ntests; i++) {
			size_t step = nr->first_run + i;
			const char *v;
			json_t *t;

			st = step_get(nr, res, step, &tmp);
			v = verdict(nr, step, st, &nr->tests[i]);
			if (strcmp(v, "accepted") && accepted && compiled)
				status = st ? st->status : res->status;
			if (strcmp(v, "accepted"))
				accepted = false;
			t = st ? step_json(nr, step, st) : json_object();
			/* The verdict goes first. */
			json_array_append_new(tests,
					      json_pack("{s:s}", "verdict", v));
			json_object_update(json_array_get(tests, i), t);
			json_decref(t);
		}
		json_object_set_new(o, "accepted",
				    json_boolean(accepted && compiled &&
						 res->status != SANDBOX_ERROR));
		json_object_set_new(o, "tests", tests);
	}
	if (res->status == SANDBOX_ERROR)
		status = SANDBOX_ERROR;
	json_object_set_new(o, "status",
			    json_string(sandbox_status_name(status)));
	set_totals(o, res);
	if (status == SANDBOX_ERROR)
		json_object_set_new(o, "error",
				    json_text(res->error, strlen(res->error)));
	request_reply(req, 200, o);
}

/* The reply for a run that could not start (the language's runtime is
 * missing): the usual shape, with nothing run. */
static void reply_not_run(struct request *req, const struct native_req *nq,
			  const char *error)
{
	struct sandbox_result none;
	json_t *o = json_object(), *tests;
	size_t i;

	memset(&none, 0, sizeof(none));
	json_object_set_new(o, "status",
			    json_string(sandbox_status_name(SANDBOX_ERROR)));
	json_object_set_new(o, "compile", json_null());
	json_object_set_new(o, "run", json_null());
	if (nq->ntests) {
		tests = json_array();
		for (i = 0; i < nq->ntests; i++)
			json_array_append_new(
				tests,
				json_pack("{s:s}", "verdict", "skipped"));
		json_object_set_new(o, "accepted", json_false());
		json_object_set_new(o, "tests", tests);
	}
	set_totals(o, &none);
	json_object_set_new(o, "error", json_text(error, strlen(error)));
	request_reply(req, 200, o);
}

static uint64_t or_default(uint64_t v, uint64_t def)
{
	return v ? v : def;
}

void native_run(struct request *req)
{
	const struct server_config *cfg = server_state.cfg;
	const struct native_caps caps = {
		.wall_ms = cfg->max_wall_ms,
		.cpu_ms = cfg->max_wall_ms,
		.memory_mb = cfg->max_memory >> 20,
		/* No separate maxima: clients may only lower these. */
		.pids = cfg->limits.pids,
		.output_bytes = cfg->limits.output_bytes,
		.compile_wall_ms = cfg->max_wall_ms,
	};
	struct run_hooks hooks = {.output = collect,
				  .done = native_done,
				  .free_ctx = native_run_free};
	struct native_error err;
	struct native_req nq;
	struct sandbox_spec spec;
	struct coderun_input *in;
	struct native_run *nr;
	uint64_t run_ms, compile_ms, cpu_ms;
	size_t len, i, ninputs;
	const char *body;
	char msg[256];

	body = request_body(req, &len);
	if (native_parse(body, len, &caps, &nq, &err)) {
		request_error(req, 422, "unprocessable", "%s: %s", err.field,
			      err.message);
		return;
	}
	if (!lang_available(nq.lang)) {
		snprintf(msg, sizeof(msg),
			 "language '%s' is not available on this server: "
			 "'%s' is not installed",
			 nq.lang->name, nq.lang->runtime);
		reply_not_run(req, &nq, msg);
		goto out;
	}

	run_ms = or_default(nq.limits.wall_ms, cfg->limits.wall_ms);
	compile_ms = or_default(nq.limits.compile_wall_ms,
				DEFAULT_COMPILE_MS < cfg->max_wall_ms
					? DEFAULT_COMPILE_MS
					: cfg->max_wall_ms);
	cpu_ms = or_default(nq.limits.cpu_ms, cfg->limits.cpu_ms);
	sandbox_spec_init(&spec);
	spec.limits = cfg->limits;
	/* CPU is limited per run step below; a sandbox-wide CPU limit would
	 * be shared by every test. */
	spec.limits.cpu_ms = 0;
	if (nq.limits.memory_mb)
		spec.limits.memory_bytes = nq.limits.memory_mb << 20;
	spec.limits.pids = or_default(nq.limits.pids, spec.limits.pids);
	spec.limits.output_bytes =
		or_default(nq.limits.output_bytes, spec.limits.output_bytes);
	for (i = 0; i < nq.nfiles; i++)
		sandbox_spec_add_file(&spec, nq.files[i].path, nq.files[i].data,
				      nq.files[i].len, false);

	ninputs = nq.ntests ? nq.ntests : 1;
	in = xcalloc(ninputs, sizeof(*in));
	if (nq.ntests) {
		for (i = 0; i < nq.ntests; i++) {
			in[i].data = nq.tests[i].stdin_data;
			in[i].len = nq.tests[i].stdin_len;
		}
	} else {
		in[0].data = nq.stdin_data;
		in[0].len = nq.stdin_len;
	}
	nr = xcalloc(1, sizeof(*nr));
	nr->has_compile = nq.lang->compile != NULL;
	nr->first_run = coderun_build(&spec, nq.lang, nq.source, nq.source_len,
				      nq.args, in, ninputs, compile_ms, run_ms);
	free(in);
	for (i = nr->first_run; i < spec.nsteps; i++)
		spec.steps[i].cpu_ms = cpu_ms;
	coderun_output_init(&nr->co, spec.nsteps);
	nr->cut = xcalloc(spec.nsteps, sizeof(*nr->cut));
	/* The run keeps the tests (for their expected output). */
	nr->tests = nq.tests;
	nr->ntests = nq.ntests;
	nq.tests = NULL;
	nq.ntests = 0;
	request_run(req, &spec, &hooks, nr);
	sandbox_spec_release(&spec);
out:
	native_req_release(&nq);
}

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
#include "server/gateway.h"
#include "server/internal.h"
#include "server/request.h"
#include "server/native.h"
#include "base/banned.h"

/* A compile gets this long unless the client says otherwise. */
#define DEFAULT_COMPILE_MS 10000ull
/* Room kept in NATIVE_MAX_REPLY for everything but the output: the
 * fields of each step and test, the error, the limits. */
#define REPLY_FRAME (64ull << 10)
#define REPLY_FRAME_STEP 1024ull

struct native_run {
	struct coderun_output co;
	struct gateway_peer *peer; /* the model gateway's, or NULL */
	bool *cut;	    /* per step: output dropped past the reply's cap */
	uint64_t collected; /* output so far, in serialised bytes */
	uint64_t budget;    /* most output the reply may carry, serialised */
	bool has_compile;
	size_t first_run;
	struct native_test *tests;     /* the expected outputs; owned */
	size_t ntests;		       /* 0: a plain run */
	struct sandbox_limits applied; /* reported in the reply */
	uint64_t compile_ms, run_ms, cpu_ms;
};

static void native_run_free(void *ctx)
{
	struct native_run *nr = ctx;
	size_t i;

	gateway_peer_close(nr->peer);
	coderun_output_release(&nr->co);
	free(nr->cut);
	for (i = 0; i < nr->ntests; i++) {
		free(nr->tests[i].stdin_data);
		free(nr->tests[i].expected);
	}
	free(nr->tests);
	free(nr);
}

/* Keeps output while its serialised size fits the reply's budget: a byte
 * of output may take six in the reply (\u0001). */
static void collect(void *ctx, size_t step, int stream, const char *data,
		    size_t len)
{
	struct native_run *nr = ctx;
	uint64_t size;
	size_t keep;

	if (step >= nr->co.nsteps)
		return;
	keep = json_text_fit(data, len, nr->budget - nr->collected, &size);
	if (keep < len)
		nr->cut[step] = true;
	nr->collected += size;
	if (keep)
		coderun_output_add(&nr->co, step, stream, data, keep);
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

static const char *bool_word(bool b)
{
	return b ? "true" : "false";
}

/* Writes step i's members "status", "exit_code", "signal", "wall_ms",
 * "cpu_ms", "oom_killed", "output_truncated", "stdout" and "stderr" into b,
 * the first after a comma unless first. */
static void step_members(struct buf *b, const struct native_run *nr, size_t i,
			 const struct sandbox_step_result *st, bool first)
{
	const struct buf *out = &nr->co.out[2 * i],
			 *err = &nr->co.out[2 * i + 1];
	bool exited = st->status != SANDBOX_TIME_LIMIT && !st->signal &&
		      st->exit_code >= 0;

	buf_addf(b, "%s\"status\":\"%s\"", first ? "" : ",",
		 sandbox_status_name(st->status));
	if (exited)
		buf_addf(b, ",\"exit_code\":%d", st->exit_code);
	else
		buf_adds(b, ",\"exit_code\":null");
	if (st->signal)
		buf_addf(b, ",\"signal\":%d", st->signal);
	else
		buf_adds(b, ",\"signal\":null");
	buf_addf(b,
		 ",\"wall_ms\":%llu,\"cpu_ms\":%llu,\"oom_killed\":%s,"
		 "\"output_truncated\":%s,\"stdout\":",
		 (unsigned long long)st->wall_ms,
		 (unsigned long long)st->cpu_ms, bool_word(st->oom_killed),
		 bool_word(st->output_truncated || nr->cut[i]));
	json_text_write(b, out->data, out->len);
	buf_adds(b, ",\"stderr\":");
	json_text_write(b, err->data, err->len);
}

/* Step i as an object, or null when st is. */
static void step_write(struct buf *b, const struct native_run *nr, size_t i,
		       const struct sandbox_step_result *st)
{
	if (!st) {
		buf_adds(b, "null");
		return;
	}
	buf_adds(b, "{");
	step_members(b, nr, i, st, true);
	buf_adds(b, "}");
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

/* The limits the run had: "cpus" and "cpu_weight" are null when the
 * server sets none. */
static void limits_write(struct buf *b, const struct native_run *nr)
{
	const struct sandbox_limits *l = &nr->applied;

	buf_addf(b,
		 ",\"limits\":{\"wall_ms\":%llu,\"cpu_ms\":%llu,"
		 "\"memory_mb\":%llu,\"pids\":%llu,\"output_bytes\":%llu",
		 (unsigned long long)nr->run_ms, (unsigned long long)nr->cpu_ms,
		 (unsigned long long)(l->memory_bytes >> 20),
		 (unsigned long long)l->pids,
		 (unsigned long long)l->output_bytes);
	if (nr->has_compile)
		buf_addf(b, ",\"compile_wall_ms\":%llu",
			 (unsigned long long)nr->compile_ms);
	if (l->cpu_quota_milli)
		buf_addf(b, ",\"cpus\":%g",
			 (double)l->cpu_quota_milli / 1000.0);
	else
		buf_adds(b, ",\"cpus\":null");
	if (l->cpu_weight)
		buf_addf(b, ",\"cpu_weight\":%llu}",
			 (unsigned long long)l->cpu_weight);
	else
		buf_adds(b, ",\"cpu_weight\":null}");
}

/* The reply is written as text into one buffer sized up front and handed
 * to the HTTP layer as it is: no JSON values for the output, no dump, no
 * copy. Its size is at most NATIVE_MAX_REPLY (the output was counted in
 * serialised bytes as it came). */
static void native_done(struct request *req, struct sandbox_result *res,
			void *ctx)
{
	struct native_run *nr = ctx;
	struct sandbox_step_result tmp, ctmp;
	const struct sandbox_step_result *cst = NULL, *st;
	enum sandbox_status status;
	bool compiled = true, accepted = true;
	const char **verdicts = NULL;
	size_t i, nsteps = nr->co.nsteps;
	struct buf b;

	if (nr->has_compile) {
		cst = step_get(nr, res, 0, &ctmp);
		compiled = cst && cst->status == SANDBOX_OK;
	}
	status = compiled ? SANDBOX_OK : cst ? cst->status : res->status;
	if (!nr->ntests) {
		st = compiled ? step_get(nr, res, nr->first_run, &tmp) : NULL;
		if (compiled)
			status = st ? st->status : res->status;
	} else {
		verdicts = xcalloc(nr->ntests, sizeof(*verdicts));
		for (i = 0; i < nr->ntests; i++) {
			st = step_get(nr, res, nr->first_run + i, &tmp);
			verdicts[i] = verdict(nr, nr->first_run + i, st,
					      &nr->tests[i]);
			if (strcmp(verdicts[i], "accepted") && accepted &&
			    compiled)
				status = st ? st->status : res->status;
			if (strcmp(verdicts[i], "accepted"))
				accepted = false;
		}
	}
	if (res->status == SANDBOX_ERROR)
		status = SANDBOX_ERROR;

	buf_init(&b);
	buf_grow(&b, nr->collected + 4 * nsteps + REPLY_FRAME +
			     REPLY_FRAME_STEP * nsteps);
	buf_addf(&b, "{\"status\":\"%s\",\"compile\":",
		 sandbox_status_name(status));
	step_write(&b, nr, 0, cst);
	buf_adds(&b, ",\"run\":");
	if (!nr->ntests) {
		st = compiled ? step_get(nr, res, nr->first_run, &tmp) : NULL;
		step_write(&b, nr, nr->first_run, st);
	} else {
		buf_addf(&b, "null,\"accepted\":%s,\"tests\":[",
			 bool_word(accepted && compiled &&
				   res->status != SANDBOX_ERROR));
		for (i = 0; i < nr->ntests; i++) {
			size_t step = nr->first_run + i;

			st = step_get(nr, res, step, &tmp);
			/* The verdict goes first. */
			buf_addf(&b, "%s{\"verdict\":\"%s\"", i ? "," : "",
				 verdicts[i]);
			if (st)
				step_members(&b, nr, step, st, false);
			buf_adds(&b, "}");
		}
		buf_adds(&b, "]");
	}
	buf_addf(&b,
		 ",\"wall_ms\":%llu,\"cpu_ms\":%llu,"
		 "\"peak_memory_bytes\":%llu,\"oom_killed\":%s",
		 (unsigned long long)res->wall_ms,
		 (unsigned long long)res->cpu_ms,
		 (unsigned long long)res->peak_memory_bytes,
		 bool_word(res->oom_killed));
	if (status == SANDBOX_ERROR) {
		buf_adds(&b, ",\"error\":");
		json_text_write(&b, res->error,
				strnlen(res->error, sizeof(res->error)));
	}
	limits_write(&b, nr);
	buf_adds(&b, "}");
	free(verdicts);
	/* The output is in the reply now: let it go before the reply is
	 * sent. */
	coderun_output_release(&nr->co);
	request_reply_take(req, 200, "application/json", b.data, b.len);
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
	/* Nothing ran, so no limits applied. */
	json_object_set_new(o, "limits", json_null());
	request_reply(req, 200, o);
}

static uint64_t or_default(uint64_t v, uint64_t def)
{
	return v ? v : def;
}

/* Names runs at the model gateway ("run-N"). */
static uint64_t run_seq;

void native_run(struct request *req)
{
	const struct server_config *cfg = server_state.cfg;
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
	struct resources res = {0};
	char msg[768];

	body = request_body(req, &len);
	if (native_parse(body, len, limits_current(), &nq, &err)) {
		request_error(req, 422, "unprocessable", "%s: %s", err.field,
			      err.message);
		return;
	}
	if (!nq.llm_given)
		nq.llm.on = gateway_default_on();
	if (nq.llm.on && !gateway_enabled()) {
		request_error(req, 422, "no_upstream",
			      "llm: this server has no model upstream (sbx "
			      "serve --upstream NAME=URL)");
		goto out;
	}
	{
		const char *code = "unprocessable";
		unsigned status = resources_resolve(&nq.res, &res, &code, msg,
						    sizeof(msg));

		if (status) {
			request_error(req, status, code, "%s", msg);
			goto out;
		}
	}
	if (!lang_available(nq.lang)) {
		lang_why_unavailable(nq.lang, msg, sizeof(msg));
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
	spec.limits.memory_bytes =
		or_default(nq.limits.memory_bytes, spec.limits.memory_bytes);
	spec.limits.pids = or_default(nq.limits.pids, spec.limits.pids);
	spec.limits.output_bytes =
		or_default(nq.limits.output_bytes, spec.limits.output_bytes);
	spec.limits.cpu_quota_milli =
		or_default(nq.limits.cpu_milli, spec.limits.cpu_quota_milli);
	spec.limits.cpu_weight =
		or_default(nq.limits.cpu_weight, spec.limits.cpu_weight);
	for (i = 0; i < nq.nfiles; i++)
		sandbox_spec_add_file(&spec, nq.files[i].path, nq.files[i].data,
				      nq.files[i].len, false);
	resources_apply(&res, &spec);

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
	nr->budget = NATIVE_MAX_REPLY - REPLY_FRAME -
		     REPLY_FRAME_STEP * (uint64_t)spec.nsteps;
	nr->applied = spec.limits;
	nr->compile_ms = compile_ms;
	nr->run_ms = run_ms;
	nr->cpu_ms = cpu_ms;
	/* The run keeps the tests (for their expected output). */
	nr->tests = nq.tests;
	nr->ntests = nq.ntests;
	nq.tests = NULL;
	nq.ntests = 0;
	if (nq.llm.on) {
		char id[32];

		snprintf(id, sizeof(id), "run-%llu",
			 (unsigned long long)__atomic_add_fetch(
				 &run_seq, 1, __ATOMIC_RELAXED));
		nr->peer = gateway_peer_new(id, NULL, &nq.llm);
		gateway_peer_attach(nr->peer, &spec);
	}
	request_run(req, &spec, &hooks, nr);
	sandbox_spec_release(&spec);
out:
	resources_release(&res);
	native_req_release(&nq);
}

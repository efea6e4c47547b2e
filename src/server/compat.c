/*
 * SandboxFusion compatibility: POST /run_code and GET /v1/ping with the
 * same fields, status words and status derivation, so existing clients can
 * point at sbx unchanged. See shared/reference/sandboxfusion.md.
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/text.h"
#include "base/util.h"
#include "runtime/coderun.h"
#include "server/compat.h"
#include "server/gateway.h"
#include "server/internal.h"
#include "server/request.h"
#include "base/banned.h"

/* The most a reply may take, serialised: output past it is cut ("truncated"
 * in its CommandRunResult) and fetched files past it are left out. */
#define COMPAT_MAX_REPLY (64ull << 20)
/* Room kept in it for the other fields. */
#define REPLY_FRAME (64ull << 10)

struct compat_run {
	struct coderun_output co;
	struct gateway_peer *peer; /* the model gateway's (serve --llm) */
	bool has_compile;
	bool cut[2];	    /* per step: output dropped past the cap */
	uint64_t collected; /* output so far, in serialised bytes */
};

/* Names runs at the model gateway ("run_code-N"). */
static uint64_t run_seq;

static void compat_run_free(void *ctx)
{
	struct compat_run *cr = ctx;

	gateway_peer_close(cr->peer);
	coderun_output_release(&cr->co);
	free(cr);
}

/* Keeps output while its serialised size fits the reply (a byte of output
 * may take six there: \u0001). */
static void collect(void *ctx, size_t step, int stream, const char *data,
		    size_t len)
{
	struct compat_run *cr = ctx;
	uint64_t size;
	size_t keep;

	if (step >= cr->co.nsteps || step >= ARRAY_SIZE(cr->cut))
		return;
	keep = json_text_fit(data, len,
			     COMPAT_MAX_REPLY - REPLY_FRAME - cr->collected,
			     &size);
	if (keep < len)
		cr->cut[step] = true;
	cr->collected += size;
	if (keep)
		coderun_output_add(&cr->co, step, stream, data, keep);
}

/* A CommandRunResult, or null when the step did not run. */
static json_t *command_result(const struct sandbox_step_result *st,
			      const struct buf *out, const struct buf *err,
			      const char *error, bool cut)
{
	json_t *o;

	if (!st->ran)
		return json_null();
	o = json_object();
	if (st->status == SANDBOX_ERROR) {
		json_object_set_new(o, "status", json_string("Error"));
		json_object_set_new(o, "execution_time", json_null());
		json_object_set_new(o, "return_code", json_null());
		json_object_set_new(o, "stdout", json_null());
		json_object_set_new(o, "stderr",
				    json_text(error, strlen(error)));
		return o;
	}
	json_object_set_new(o, "status",
			    json_string(st->status == SANDBOX_TIME_LIMIT
						? "TimeLimitExceeded"
						: "Finished"));
	json_object_set_new(o, "execution_time",
			    json_real((double)st->wall_ms / 1000.0));
	if (st->status == SANDBOX_TIME_LIMIT)
		json_object_set_new(o, "return_code", json_null());
	else
		json_object_set_new(
			o, "return_code",
			json_integer(st->signal ? -st->signal : st->exit_code));
	json_object_set_new(o, "stdout", json_text(out->data, out->len));
	json_object_set_new(o, "stderr", json_text(err->data, err->len));
	if (st->output_truncated || cut)
		json_object_set_new(o, "truncated", json_true());
	return o;
}

static json_t *reply_base(const char *status, const char *message)
{
	return json_pack("{s:s,s:s,s:n,s:n,s:n,s:{}}", "status", status,
			 "message", message, "compile_result", "run_result",
			 "executor_pod_name", "files");
}

/* SandboxFusion's parse_run_status: an Error anywhere is SandboxError, a
 * time limit or a non-zero return code is Failed, else Success. */
static const char *derive_status(json_t *results[2], const char **message)
{
	bool failed = false;
	int i;

	*message = "";
	for (i = 0; i < 2; i++) {
		json_t *r = results[i], *rc;
		const char *st;

		if (!json_is_object(r))
			continue;
		st = json_string_value(json_object_get(r, "status"));
		if (!strcmp(st, "Error")) {
			*message =
				json_string_value(json_object_get(r, "stderr"));
			return "SandboxError";
		}
		if (!strcmp(st, "TimeLimitExceeded"))
			failed = true;
		rc = json_object_get(r, "return_code");
		if (json_is_integer(rc) && json_integer_value(rc) != 0)
			failed = true;
	}
	return failed ? "Failed" : "Success";
}

static int add_text(const char *data, size_t len, void *ctx)
{
	buf_add(ctx, data, len);
	return 0;
}

/* Replies with o (the reference is taken), dumped once into a buffer of
 * about its size that the HTTP layer takes as it is. */
static void reply_text(struct request *req, json_t *o, uint64_t size_hint)
{
	struct buf b;

	buf_init(&b);
	buf_grow(&b, size_hint);
	if (json_dump_callback(o, add_text, &b,
			       JSON_COMPACT | JSON_REAL_PRECISION(12))) {
		buf_release(&b);
		request_reply(req, 200, o);
		return;
	}
	json_decref(o);
	request_reply_take(req, 200, "application/json", b.data, b.len);
}

static void compat_done(struct request *req, struct sandbox_result *res,
			void *ctx)
{
	struct compat_run *cr = ctx;
	json_t *results[2] = {json_null(), json_null()};
	struct sandbox_step_result none = {0};
	const char *message, *status;
	json_t *o, *files;
	size_t i, run = cr->has_compile ? 1 : 0;

	for (i = 0; i <= run; i++) {
		const struct sandbox_step_result *st =
			i < res->nsteps ? &res->steps[i] : &none;
		size_t slot = cr->has_compile ? i : 1;

		/* A sandbox that ended as a whole before this step could
		 * run (a setup error, a memory limit hit by the runtime's
		 * start) reports its fate on that step: never a Success. */
		if (res->status != SANDBOX_OK && !st->ran &&
		    (i == 0 || res->steps[i - 1].status == SANDBOX_OK)) {
			struct sandbox_step_result err = {
				.ran = true,
				.status = res->status,
				.exit_code = -1,
				.signal = res->signal ? res->signal : SIGKILL,
				.wall_ms = res->wall_ms,
				.oom_killed = res->oom_killed};
			struct buf none_out;

			buf_init(&none_out);
			json_decref(results[slot]);
			results[slot] = command_result(
				&err, &none_out, &none_out, res->error, false);
			break;
		}
		json_decref(results[slot]);
		results[slot] = command_result(
			st, &cr->co.out[2 * i], &cr->co.out[2 * i + 1],
			res->error, i < ARRAY_SIZE(cr->cut) && cr->cut[i]);
	}
	status = derive_status(results, &message);
	o = reply_base(status, message);
	json_object_set_new(o, "compile_result", results[0]);
	json_object_set_new(o, "run_result", results[1]);
	/* The output is in the JSON values now. */
	coderun_output_release(&cr->co);
	files = json_object_get(o, "files");
	for (i = 0; i < res->nfetched; i++) {
		uint64_t size = (res->fetched[i].len + 2) / 3 * 4 +
				strlen(res->fetched[i].path) * 6 + 8;
		struct buf b;

		/* Past the cap a file is left out, as a missing one is. */
		if (size > COMPAT_MAX_REPLY - REPLY_FRAME - cr->collected)
			continue;
		cr->collected += size;
		buf_init(&b);
		base64_encode(&b, res->fetched[i].data, res->fetched[i].len);
		free(res->fetched[i].data);
		res->fetched[i].data = NULL;
		res->fetched[i].len = 0;
		json_object_set_new(files, res->fetched[i].path,
				    json_stringn(b.data ? b.data : "", b.len));
		buf_release(&b);
	}
	reply_text(req, o, cr->collected + REPLY_FRAME);
}

static void __attribute__((format(printf, 2, 3)))
sandbox_error(struct request *req, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	json_t *o;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	o = reply_base("SandboxError", "");
	json_object_set_new(o, "message", json_text(msg, strlen(msg)));
	request_reply(req, 200, o);
}

/* SandboxFusion lists some languages without a runner (sql): its lookup
 * raises KeyError, which its handler answers with this message. */
static void no_runner(struct request *req, const struct compat_req *cq)
{
	char *msg = xstrfmt("exception on running code %s: '%s' None", cq->code,
			    cq->lang->name);
	json_t *o = reply_base("SandboxError", "");

	json_object_set_new(o, "message", json_text(msg, strlen(msg)));
	free(msg);
	request_reply(req, 200, o);
}

/* FastAPI's 422 shape, inside sbx's own error object. */
static void unprocessable(struct request *req, const char *field,
			  const char *message)
{
	char *text = xstrfmt("%s: %s", field, message);
	json_t *o = json_pack(
		"{s:{s:s,s:o},s:[{s:[s,o],s:o,s:s}]}", "error", "code",
		"unprocessable", "message", json_text(text, strlen(text)),
		"detail", "loc", "body", json_text(field, strlen(field)), "msg",
		json_text(message, strlen(message)), "type", "value_error");

	free(text);
	request_reply(req, 422, o);
}

void compat_run_code(struct request *req)
{
	const struct server_config *cfg = server_state.cfg;
	struct compat_error err;
	struct compat_req cq;
	struct sandbox_spec spec;
	struct coderun_input in;
	struct compat_run *cr;
	struct run_hooks hooks = {.output = collect,
				  .done = compat_done,
				  .free_ctx = compat_run_free};
	char *body;
	size_t len, i, nsteps;
	char names[300];
	json_t *root;

	/* A whole test set in one body is given back as it is read. */
	body = request_body_take(req, &len);
	root = compat_load_consume(body, len, &err);
	free(body);
	if (!root || compat_parse_json(root, limits_current(), &cq, &err)) {
		unprocessable(req, err.field, err.message);
		return;
	}
	if (!cq.lang) {
		lang_list(names, sizeof(names));
		snprintf(err.message, sizeof(err.message),
			 "unknown language '%.64s' (sbx runs: %s)", cq.language,
			 names);
		unprocessable(req, "language", err.message);
		goto out;
	}
	if (cq.lang->flags & LANG_NO_RUNNER) {
		no_runner(req, &cq);
		goto out;
	}
	if (!lang_available(cq.lang)) {
		char why[512];

		lang_why_unavailable(cq.lang, why, sizeof(why));
		sandbox_error(req, "%s", why);
		goto out;
	}
	if (cq.file_error) {
		sandbox_error(req, "cannot decode files['%s']: not base64",
			      cq.file_error);
		goto out;
	}

	sandbox_spec_init(&spec);
	spec.limits = cfg->limits;
	if (cq.memory_mb > 0)
		spec.limits.memory_bytes = (uint64_t)cq.memory_mb << 20;
	for (i = 0; i < cq.nfiles; i++) {
		sandbox_spec_add_file(
			&spec, cq.files[i].path,
			cq.files[i].data.data ? cq.files[i].data.data : "",
			cq.files[i].data.len, false);
		/* Copied into the spec: one copy at a time. */
		buf_release(&cq.files[i].data);
	}
	for (i = 0; i < cq.nfetch; i++)
		sandbox_spec_add_fetch(&spec, cq.fetch[i]);
	in.data = cq.stdin_data;
	in.len = cq.stdin_len;
	coderun_build(&spec, cq.lang, cq.code, cq.code_len, NULL, &in, 1,
		      cq.compile_ms, cq.run_ms);
	nsteps = spec.nsteps;
	cr = xcalloc(1, sizeof(*cr));
	cr->has_compile = cq.lang->compile != NULL;
	coderun_output_init(&cr->co, nsteps);
	if (gateway_default_on()) {
		struct gateway_opts o = {.on = true};
		char id[32];

		snprintf(id, sizeof(id), "run_code-%llu",
			 (unsigned long long)__atomic_add_fetch(
				 &run_seq, 1, __ATOMIC_RELAXED));
		cr->peer = gateway_peer_new(id, NULL, &o);
		gateway_peer_attach(cr->peer, &spec);
	}
	request_run(req, &spec, &hooks, cr);
	sandbox_spec_release(&spec);
out:
	compat_req_release(&cq);
}

void compat_ping(struct request *req)
{
	request_reply(req, 200, json_string("pong"));
}

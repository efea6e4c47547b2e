/*
 * Stateful sandboxes: processes run and waited for (POST .../exec), plain
 * or streamed, and the EXEC command every other kind of process (background,
 * tar, REPL drivers) is started with. A waited-for exec keeps its output up
 * to the sandbox's per-exec cap and answers with it when the process ends.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/util.h"
#include "runtime/result.h"
#include "runtime/session_internal.h"
#include "base/banned.h"

/* Sends an EXEC command; args gains the fields init expects. With keep,
 * what the process leaves running in the background outlives it. */
static int send_exec(struct session *s, uint32_t id, json_t *argv,
		     const char *cwd, json_t *env, uint64_t timeout_ms,
		     uint64_t cap, const char *in, size_t inlen, bool close,
		     bool keep)
{
	json_t *a = json_pack("{s:O,s:I,s:I,s:b}", "argv", argv, "timeout_ms",
			      (json_int_t)timeout_ms, "output_bytes",
			      (json_int_t)cap, "stdin_close", close);
	char *text;
	int r;

	if (keep)
		json_object_set_new(a, "keep_background", json_true());
	if (cwd)
		json_object_set_new(a, "cwd", json_string(cwd));
	if (env)
		json_object_set(a, "env", env);
	text = json_dumps(a, JSON_COMPACT);
	json_decref(a);
	r = sandbox_command(s->sb, SANDBOX_CMD_EXEC, id, text, in, inlen);
	free(text);
	return r;
}

int session_send_exec(struct session *s, uint32_t id, json_t *argv,
		      const char *cwd, json_t *env, uint64_t timeout_ms,
		      uint64_t cap, const char *in, size_t inlen, bool close)
{
	return send_exec(s, id, argv, cwd, env, timeout_ms, cap, in, inlen,
			 close, false);
}

json_t *session_step_json(const struct sandbox_step_result *r)
{
	bool exited = !r->signal && r->status != SANDBOX_TIME_LIMIT &&
		      r->status != SANDBOX_ERROR;

	return json_pack("{s:s,s:o,s:o,s:I,s:I,s:b,s:b}", "status",
			 sandbox_status_name(r->status), "exit_code",
			 exited ? json_integer(r->exit_code) : json_null(),
			 "signal",
			 r->signal ? json_integer(r->signal) : json_null(),
			 "wall_ms", (json_int_t)r->wall_ms, "cpu_ms",
			 (json_int_t)r->cpu_ms, "oom_killed", r->oom_killed,
			 "output_truncated", r->output_truncated);
}

void session_reply_start_error(session_reply_fn fn, void *ctx, int err)
{
	const char *code;
	unsigned status = session_errno_status(err, &code);

	/* EAGAIN: init runs too many processes at once, or fork met the
	 * sandbox's pids limit; both are the client's to wait out. */
	if (err == EAGAIN) {
		status = 429;
		code = "too_many_processes";
	}
	session_reply_error(fn, ctx, status, code,
			    "cannot start the process: %s", strerror(err));
}

void session_exec_ended(struct session *s, struct session_op *op,
			const struct sandbox_event *ev)
{
	json_t *o = session_step_json(&ev->result);

	if (ev->err) {
		session_reply_start_error(op->fn, op->ctx, ev->err);
		json_decref(o);
		return;
	}
	if (op->truncated)
		json_object_set_new(o, "output_truncated", json_true());
	if (!op->stream) {
		json_object_set_new(o, "stdout",
				    json_text(op->out.data, op->out.len));
		json_object_set_new(o, "stderr",
				    json_text(op->err.data, op->err.len));
	}
	session_reply_json(op->fn, op->ctx, 200, o);
}

/* The first field of an exec body that exec does not take, or NULL: a
 * misspelt limit ("timeout" for "timeout_s") must not run unlimited.
 * "keep_background": true lets what the command starts in the background
 * (`cmd &`) outlive it, as on a host, until the sandbox ends. */
static const char *session_exec_unknown_field(json_t *args)
{
	static const char *const known[] = {
		"argv",	  "cmd",	"cwd",
		"env",	  "stdin",	"timeout_s",
		"stream", "background", "keep_background"};
	const char *key;
	json_t *v;
	size_t i;

	json_object_foreach(args, key, v)
	{
		for (i = 0; i < ARRAY_SIZE(known); i++)
			if (!strcmp(key, known[i]))
				break;
		if (i == ARRAY_SIZE(known))
			return key;
	}
	return NULL;
}

void session_exec(const char *id, json_t *args, session_stream_fn stream,
		  session_reply_fn fn, void *ctx)
{
	struct session *s = session_find(id, fn, ctx);
	json_t *argv, *cmd, *envj, *v;
	const char *cwd = NULL, *in = NULL, *key;
	size_t inlen = 0, nenv, i;
	uint64_t timeout_ms;
	bool background;
	char err[256];
	char **envv;
	struct session_op *op;

	if (!s)
		return;
	if (!json_is_object(args)) {
		session_reply_error(fn, ctx, 422, "unprocessable",
				    "the body must be a JSON object");
		return;
	}
	key = session_exec_unknown_field(args);
	if (key) {
		session_reply_error(fn, ctx, 422, "unprocessable",
				    "unknown field '%.64s' (an exec takes: "
				    "argv, cmd, cwd, env, stdin, timeout_s, "
				    "stream, background, keep_background)",
				    key);
		return;
	}
	argv = json_object_get(args, "argv");
	cmd = json_object_get(args, "cmd");
	if ((!argv) == (!cmd)) {
		session_reply_error(
			fn, ctx, 422, "unprocessable",
			"give exactly one of 'argv' (a list) or 'cmd' (a "
			"shell string)");
		return;
	}
	if (argv) {
		if (!json_is_array(argv) || !json_array_size(argv))
			goto bad_argv;
		json_array_foreach(argv, i,
				   v) if (!json_is_string(v)) goto bad_argv;
		argv = json_incref(argv);
	} else {
		if (!json_is_string(cmd)) {
			session_reply_error(fn, ctx, 422, "unprocessable",
					    "'cmd' must be a string");
			return;
		}
		argv = json_pack("[s,s,O]", "/bin/bash", "-c", cmd);
	}
	v = json_object_get(args, "cwd");
	if (v && !json_is_null(v)) {
		if (!json_is_string(v)) {
			json_decref(argv);
			session_reply_error(fn, ctx, 422, "unprocessable",
					    "'cwd' must be a string");
			return;
		}
		cwd = json_string_value(v);
	}
	v = json_object_get(args, "stdin");
	if (v && !json_is_null(v)) {
		if (!json_is_string(v)) {
			json_decref(argv);
			session_reply_error(fn, ctx, 422, "unprocessable",
					    "'stdin' must be a string");
			return;
		}
		in = json_string_value(v);
		inlen = json_string_length(v);
	}
	envj = json_object_get(args, "env");
	nenv = json_is_object(envj) ? json_object_size(envj) : 0;
	envv = xcalloc(nenv + 1, sizeof(*envv));
	if (session_get_ms(args, "timeout_s", SESSION_DEFAULT_EXEC_MS,
			   s->lifetime_ms, &timeout_ms, err, sizeof(err)) ||
	    session_apply_env(envj, NULL, envv, err, sizeof(err))) {
		for (i = 0; envv[i]; i++)
			free(envv[i]);
		free(envv);
		json_decref(argv);
		session_reply_error(fn, ctx, 422, "unprocessable", "%s", err);
		return;
	}
	envj = json_array();
	for (i = 0; envv[i]; i++) {
		json_array_append_new(envj, json_string(envv[i]));
		free(envv[i]);
	}
	free(envv);
	background = json_is_true(json_object_get(args, "background"));
	if (background) {
		struct session_proc *p = xcalloc(1, sizeof(*p));

		p->id = s->next_id++;
		p->argv = json_incref(argv);
		p->running = true;
		buf_init(&p->out);
		buf_init(&p->err);
		p->next = s->procs;
		s->procs = p;
		s->last_used_ns = now_ns();
		/* No time limit but the sandbox's; no output cap (the host
		 * keeps what session_procs.c allows). */
		if (session_send_exec(s, p->id, argv, cwd, envj, 0, 0, in,
				      inlen, true)) {
			s->procs = p->next;
			session_proc_free(p);
			session_reply_error(fn, ctx, 410, "gone",
					    "the sandbox is gone");
		} else
			session_reply_json(fn, ctx, 201,
					   json_pack("{s:I,s:O,s:s}", "id",
						     (json_int_t)p->id, "argv",
						     argv, "status",
						     "running"));
	} else {
		op = session_op_new(s, SESSION_OP_EXEC, fn, ctx);
		op->stream = stream;
		if (send_exec(s, op->id, argv, cwd, envj, timeout_ms, op->cap,
			      in, inlen, true,
			      json_is_true(json_object_get(
				      args, "keep_background")))) {
			session_op_drop(s, op);
			session_reply_error(fn, ctx, 410, "gone",
					    "the sandbox is gone");
		}
	}
	json_decref(envj);
	json_decref(argv);
	return;
bad_argv:
	session_reply_error(fn, ctx, 422, "unprocessable",
			    "'argv' must be a non-empty list of strings");
}

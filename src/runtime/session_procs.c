/*
 * Stateful sandboxes: background processes (POST .../exec with
 * "background": true). Each is a record kept after its process ends, with
 * the first SESSION_PROC_KEEP bytes of each output stream, listed,
 * read and signalled by its id.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/util.h"
#include "runtime/result.h"
#include "runtime/session_internal.h"
#include "base/banned.h"

struct session_proc *session_proc_find(struct session *s, uint32_t id)
{
	struct session_proc *p;

	for (p = s->procs; p; p = p->next)
		if (p->id == id)
			return p;
	return NULL;
}

void session_proc_free(struct session_proc *p)
{
	json_decref(p->argv);
	buf_release(&p->out);
	buf_release(&p->err);
	free(p);
}

static json_t *proc_json(const struct session_proc *p, bool output)
{
	json_t *o = json_pack("{s:I,s:i,s:O,s:s}", "id", (json_int_t)p->id,
			      "pid", p->pid, "argv", p->argv, "status",
			      p->running ? "running" : "exited");

	if (!p->running)
		json_object_set_new(o, "result", session_step_json(&p->result));
	if (output) {
		json_object_set_new(o, "stdout",
				    json_text(p->out.data, p->out.len));
		json_object_set_new(o, "stderr",
				    json_text(p->err.data, p->err.len));
		json_object_set_new(o, "output_truncated",
				    json_boolean(p->truncated));
	}
	return o;
}

void session_procs(const char *id, session_reply_fn fn, void *ctx)
{
	struct session *s = session_find(id, fn, ctx);
	json_t *arr;
	struct session_proc *p;

	if (!s)
		return;
	arr = json_array();
	for (p = s->procs; p; p = p->next)
		json_array_append_new(arr, proc_json(p, false));
	session_reply_json(fn, ctx, 200, json_pack("{s:o}", "processes", arr));
}

void session_proc_output(const char *id, uint32_t pid, session_reply_fn fn,
			 void *ctx)
{
	struct session *s = session_find(id, fn, ctx);
	struct session_proc *p;

	if (!s)
		return;
	p = session_proc_find(s, pid);
	if (!p) {
		session_reply_error(fn, ctx, 404, "not_found",
				    "no background process %u in sandbox '%s'",
				    pid, id);
		return;
	}
	session_reply_json(fn, ctx, 200, proc_json(p, true));
}

void session_proc_signal(const char *id, uint32_t pid, int sig,
			 session_reply_fn fn, void *ctx)
{
	struct session *s = session_find(id, fn, ctx);
	struct session_proc *p;
	char json[32];

	if (!s)
		return;
	p = session_proc_find(s, pid);
	if (!p) {
		session_reply_error(fn, ctx, 404, "not_found",
				    "no background process %u in sandbox '%s'",
				    pid, id);
		return;
	}
	if (sig <= 0 || sig >= 65) {
		session_reply_error(fn, ctx, 422, "unprocessable",
				    "bad signal %d", sig);
		return;
	}
	snprintf(json, sizeof(json), "{\"signal\":%d}", sig);
	sandbox_command(s->sb, SANDBOX_CMD_SIGNAL, p->id, json, NULL, 0);
	s->last_used_ns = now_ns();
	session_reply_json(fn, ctx, 200, proc_json(p, false));
}

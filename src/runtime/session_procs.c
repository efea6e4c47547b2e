/*
 * Stateful sandboxes: background processes (POST .../exec with
 * "background": true), listed, read and signalled by their id.
 *
 * What the server keeps of them is bounded per sandbox. Each stream keeps
 * its first SESSION_PROC_KEEP bytes (1 MiB; past it "output_truncated"),
 * and all of a sandbox's processes together keep SESSION_PROCS_KEEP
 * (4 MiB). When new output would pass that, the output of processes that
 * have ended is dropped to make room, whole, those already read since
 * they ended first, then the oldest to end; the dropped process then
 * shows "output_dropped": true and no output. What cannot fit even so
 * (running processes hold it all) is not kept ("output_truncated"). At
 * most SESSION_PROCS_FINISHED (64) ended processes are remembered; past
 * that the record of the oldest (read ones first) is dropped and its id
 * answers 404 saying so.
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

static uint64_t kept(const struct session_proc *p)
{
	return p->out.len + p->err.len;
}

/* The ended process to drop first: read ones, then the oldest to end;
 * with_output: only one that still keeps output. */
static struct session_proc *first_to_drop(struct session *s, bool with_output)
{
	struct session_proc *p, *best = NULL;

	for (p = s->procs; p; p = p->next) {
		if (p->running || (with_output && !kept(p)))
			continue;
		if (!best || (p->read && !best->read) ||
		    (p->read == best->read && p->end_seq < best->end_seq))
			best = p;
	}
	return best;
}

static void drop_output(struct session *s, struct session_proc *p)
{
	s->procs_kept -= kept(p);
	buf_release(&p->out);
	buf_release(&p->err);
	buf_init(&p->out);
	buf_init(&p->err);
	p->dropped = true;
}

void session_proc_output_add(struct session *s, struct session_proc *p,
			     int stream, const char *data, size_t len)
{
	struct buf *b = stream == 1 ? &p->out : &p->err;
	size_t n = len;

	if (p->dropped)
		return;
	if (b->len + n > SESSION_PROC_KEEP)
		n = b->len < SESSION_PROC_KEEP ? SESSION_PROC_KEEP - b->len : 0;
	while (n && s->procs_kept + n > SESSION_PROCS_KEEP) {
		struct session_proc *victim = first_to_drop(s, true);

		if (!victim)
			break;
		drop_output(s, victim);
	}
	if (s->procs_kept + n > SESSION_PROCS_KEEP)
		n = (size_t)(SESSION_PROCS_KEEP - s->procs_kept);
	if (n < len)
		p->truncated = true;
	buf_add(b, data, n);
	s->procs_kept += n;
}

void session_proc_ended(struct session *s, struct session_proc *p,
			const struct sandbox_step_result *res)
{
	p->running = false;
	p->result = *res;
	p->end_seq = ++s->procs_end_seq;
	if (++s->procs_finished <= SESSION_PROCS_FINISHED)
		return;
	p = first_to_drop(s, false);
	if (p) {
		struct session_proc **pp;

		for (pp = &s->procs; *pp != p; pp = &(*pp)->next)
			;
		*pp = p->next;
		s->procs_kept -= kept(p);
		s->procs_finished--;
		s->procs_forgotten++;
		session_proc_free(p);
	}
}

static void reply_no_proc(struct session *s, uint32_t pid, session_reply_fn fn,
			  void *ctx)
{
	if (s->procs_forgotten && pid < s->next_id)
		session_reply_error(
			fn, ctx, 404, "not_found",
			"no background process %u in sandbox '%s' (if it was "
			"one, its record was dropped: a sandbox remembers its "
			"last %u ended processes)",
			pid, s->id, SESSION_PROCS_FINISHED);
	else
		session_reply_error(fn, ctx, 404, "not_found",
				    "no background process %u in sandbox '%s'",
				    pid, s->id);
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
				    json_boolean(p->truncated || p->dropped));
		json_object_set_new(o, "output_dropped",
				    json_boolean(p->dropped));
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
	session_reply_json(fn, ctx, 200,
			   json_pack("{s:o,s:I}", "processes", arr,
				     "dropped_records",
				     (json_int_t)s->procs_forgotten));
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
		reply_no_proc(s, pid, fn, ctx);
		return;
	}
	session_reply_json(fn, ctx, 200, proc_json(p, true));
	if (!p->running)
		p->read = true;
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
		reply_no_proc(s, pid, fn, ctx);
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

/*
 * Stateful sandboxes: the table and each session's lifecycle. The table
 * of sessions lives on the runner's loop thread; each session is one
 * serve-mode sandbox plus the operations in flight on it, keyed by the id
 * its init echoes back. This file creates, describes, lists, reaps and
 * deletes sessions, turns each sandbox's events into calls to the file
 * that owns the operation (see session_internal.h), and holds the reply
 * helpers they share.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/loop.h"
#include "base/text.h"
#include "base/util.h"
#include "runtime/limits.h"
#include "runtime/repl.h"
#include "runtime/result.h"
#include "runtime/rpc.h"
#include "runtime/session_internal.h"
#include "base/banned.h"

struct session_table session_table = {.idle_fd = -1};

/* ---- replies ---- */

void session_reply_json(session_reply_fn fn, void *ctx, unsigned status,
			json_t *body)
{
	struct session_reply r = {.status = status, .json = body};

	if (fn)
		fn(ctx, &r);
	else
		json_decref(body);
}

void __attribute__((format(printf, 5, 6)))
session_reply_error(session_reply_fn fn, void *ctx, unsigned status,
		    const char *code, const char *fmt, ...)
{
	char msg[512];
	struct buf b;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	buf_init(&b);
	utf8_repair(&b, msg, strlen(msg));
	session_reply_json(fn, ctx, status,
			   json_pack("{s:{s:s,s:s}}", "error", "code", code,
				     "message", b.data));
	buf_release(&b);
}

/* Every errno a file operation can end with, as the client should see it:
 * 4xx for what the client asked (a missing path, a mount point, a full
 * sandbox), 503 for a passing shortage, 500 only for faults. */
static const struct {
	int err;
	unsigned status;
	const char *code;
	const char *hint; /* said after strerror, or NULL */
} errno_map[] = {
	{ENOENT, 404, "not_found", NULL},
	{ENOTDIR, 404, "not_found", "a component is not a directory"},
	{EACCES, 403, "forbidden", NULL},
	{EPERM, 403, "forbidden", NULL},
	{EROFS, 403, "forbidden", "read-only outside the writable roots"},
	{EBUSY, 409, "conflict", "a mount point or in use"},
	{ETXTBSY, 409, "conflict", NULL},
	{EISDIR, 409, "conflict", NULL},
	{ENOTEMPTY, 409, "conflict", "use recursive=1"},
	{EEXIST, 409, "conflict", NULL},
	{EMLINK, 409, "conflict", NULL},
	{EINVAL, 400, "bad_request", NULL},
	{ENAMETOOLONG, 400, "bad_request", NULL},
	{ELOOP, 400, "bad_request", "too many symbolic links"},
	{ENXIO, 400, "bad_request", "a FIFO without a reader or a device"},
	{EXDEV, 400, "bad_request", "a magic link or another filesystem"},
	{ENODEV, 400, "bad_request", NULL},
	{ESPIPE, 400, "bad_request", NULL},
	{EOPNOTSUPP, 400, "bad_request", NULL},
	{EILSEQ, 400, "bad_request", NULL},
	{ENOSPC, 413, "payload_too_large", "the sandbox's disk is full"},
	{EDQUOT, 413, "payload_too_large", "the sandbox's disk is full"},
	{EFBIG, 413, "payload_too_large", NULL},
	{EOVERFLOW, 413, "payload_too_large", NULL},
	{EAGAIN, 503, "busy", "try again"},
	{ENOMEM, 503, "busy", "the sandbox is out of memory"},
	{EMFILE, 503, "busy", NULL},
	{ENFILE, 503, "busy", NULL},
	{EINTR, 503, "busy", "try again"},
};

unsigned session_errno_status(int err, const char **code)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(errno_map); i++)
		if (errno_map[i].err == err) {
			*code = errno_map[i].code;
			return errno_map[i].status;
		}
	*code = "sandbox_error";
	return 500;
}

void session_reply_errno(session_reply_fn fn, void *ctx, int err,
			 const char *path)
{
	const char *code, *hint = NULL;
	unsigned status = session_errno_status(err, &code);
	size_t i;

	for (i = 0; i < ARRAY_SIZE(errno_map); i++)
		if (errno_map[i].err == err)
			hint = errno_map[i].hint;
	session_reply_error(fn, ctx, status, code, "'%s': %s%s%s", path,
			    strerror(err), hint ? ": " : "", hint ? hint : "");
}

/* ---- the table ---- */

static void remember(const char *id, const char *why)
{
	unsigned i = session_table.recent_next++ % SESSION_RECENT;

	str_copy(session_table.recent[i].id, sizeof(session_table.recent[i].id),
		 id);
	str_copy(session_table.recent[i].why,
		 sizeof(session_table.recent[i].why), why);
}

struct session *session_find(const char *id, session_reply_fn fn, void *ctx)
{
	struct session *s;
	unsigned i;

	for (s = session_table.list; s; s = s->next)
		if (!strcmp(s->id, id) && s->ready) {
			if (!s->deleting)
				return s;
			session_reply_error(fn, ctx, 404, "not_found",
					    "no sandbox '%s': %s", id,
					    s->end_reason);
			return NULL;
		}
	for (i = 0; i < SESSION_RECENT; i++)
		if (!strcmp(session_table.recent[i].id, id)) {
			session_reply_error(fn, ctx, 404, "not_found",
					    "no sandbox '%s': %s", id,
					    session_table.recent[i].why);
			return NULL;
		}
	if (str_starts_with(id, "sb-") && strlen(id) > 11 &&
	    strncmp(id + 3, session_table.boot, 8))
		session_reply_error(
			fn, ctx, 404, "not_found",
			"no sandbox '%s': it belonged to an earlier run of "
			"the server, and sandboxes do not survive a "
			"restart",
			id);
	else
		session_reply_error(fn, ctx, 404, "not_found",
				    "no sandbox '%s'", id);
	return NULL;
}

static const struct session_gateway *session_gw;

void sessions_set_gateway(const struct session_gateway *gw)
{
	session_gw = gw;
}

static json_t *describe(struct session *s)
{
	char created[32];
	struct tm tm;
	struct session_proc *p;
	unsigned running = 0;
	json_t *obj;

	for (p = s->procs; p; p = p->next)
		running += p->running;
	gmtime_r(&s->created, &tm);
	strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
	obj = json_pack(
		"{s:s,s:s,s:s,s:O,s:O,s:I,s:I,s:I,s:i,s:o}", "id", s->id,
		"status", "running", "created_at", created, "labels", s->labels,
		"limits", s->limits, "idle_timeout_s",
		(json_int_t)(s->idle_ms / 1000), "max_lifetime_s",
		(json_int_t)(s->lifetime_ms / 1000), "idle_s",
		(json_int_t)((now_ns() - s->last_used_ns) / 1000000000ull),
		"background_processes", (int)running, "llm",
		s->gw ? session_gw->describe(s->gw) : json_null());
	if (obj && s->shown)
		json_object_update(obj, s->shown);
	return obj;
}

void session_op_free(struct session_op *op)
{
	buf_release(&op->out);
	buf_release(&op->err);
	free(op->path);
	free(op);
}

static void unlink_session(struct session *s)
{
	struct session **pp;

	for (pp = &session_table.list; *pp; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			session_table.count--;
			return;
		}
}

static void on_done(void *ctx, struct sandbox_result *res)
{
	struct session *s = ctx;
	const char *why = s->end_reason[0] ? s->end_reason : NULL;
	char buf[320];

	if (!why) {
		if (res->status == SANDBOX_TIME_LIMIT)
			why = "it reached its maximum lifetime";
		else if (res->status == SANDBOX_MEMORY_LIMIT)
			why = "it ran out of memory";
		else {
			snprintf(buf, sizeof(buf), "it ended (%s%s%s)",
				 sandbox_status_name(res->status),
				 res->error[0] ? ": " : "", res->error);
			why = buf;
		}
	}
	if (s->create_fn)
		session_reply_error(s->create_fn, s->create_ctx, 500,
				    "sandbox_error",
				    "cannot create the sandbox: %s",
				    res->error[0] ? res->error : why);
	if (s->delete_fn)
		session_reply_json(
			s->delete_fn, s->delete_ctx, 200,
			json_pack("{s:s,s:b}", "id", s->id, "deleted", 1));
	while (s->ops) {
		struct session_op *op = s->ops;

		s->ops = op->next;
		session_reply_error(op->fn, op->ctx, 410, "gone",
				    "sandbox '%s' is gone: %s", s->id, why);
		session_op_free(op);
	}
	while (s->procs) {
		struct session_proc *p = s->procs;

		s->procs = p->next;
		session_proc_free(p);
	}
	repl_free_all(s->repls, why);
	rpc_free_all(s->rpcs, why);
	if (s->ready)
		log_info("sandbox %s: ended: %s", s->id, why);
	remember(s->id, why);
	unlink_session(s);
	if (s->gw)
		session_gw->close(s->gw);
	json_decref(s->labels);
	json_decref(s->limits);
	json_decref(s->shown);
	free(s);
}

struct session_op *session_op_find(struct session *s, uint32_t id, bool unlink)
{
	struct session_op **pp;

	for (pp = &s->ops; *pp; pp = &(*pp)->next)
		if ((*pp)->id == id) {
			struct session_op *op = *pp;

			if (unlink)
				*pp = op->next;
			return op;
		}
	return NULL;
}

/* Keeps output up to cap bytes of JSON text, the size it will have in the
 * reply (a control byte takes six), so a reply is bounded by what it
 * serialises to, not by raw bytes. */
static void keep_output(struct buf *b, uint64_t *size, bool *truncated,
			uint64_t cap, const char *data, size_t len)
{
	uint64_t add = 0;
	size_t n =
		json_text_fit(data, len, cap > *size ? cap - *size : 0, &add);

	if (n < len)
		*truncated = true;
	buf_add(b, data, n);
	*size += add;
}

static void on_output(void *ctx, size_t id, int stream, const char *data,
		      size_t len)
{
	struct session *s = ctx;
	struct session_op *op = session_op_find(s, (uint32_t)id, false);
	struct session_proc *p;

	if (op && op->stream) {
		op->stream(op->ctx, stream == 1 ? "stdout" : "stderr", data,
			   len);
		return;
	}
	if (op) {
		if (stream == 1)
			keep_output(&op->out, &op->out_size, &op->truncated,
				    op->cap, data, len);
		else
			keep_output(&op->err, &op->err_size, &op->truncated,
				    op->cap, data, len);
		return;
	}
	p = session_proc_find(s, (uint32_t)id);
	if (p)
		session_proc_output_add(s, p, stream, data, len);
	else if (!repl_output(s->repls, (uint32_t)id, stream, data, len))
		rpc_output(s->rpcs, (uint32_t)id, stream, data, len);
}

/* An answer from init. One that does not parse is an error, never data:
 * the operation fails with sandbox_error. */
static void on_reply(struct session *s, struct session_op *op,
		     const struct sandbox_event *ev)
{
	json_t *args = json_loadb(ev->json, ev->json_len, 0, NULL);

	if (!json_is_object(args)) {
		log_warn("sandbox %s: unparseable reply from init to "
			 "operation %u",
			 s->id, op->id);
		session_reply_error(op->fn, op->ctx, 500, "sandbox_error",
				    "the sandbox's init sent a reply that does "
				    "not parse");
		json_decref(args);
		if (op->kind == SESSION_OP_ARCHIVE_GET) {
			/* Its tar is stopped; the op ends with it. */
			op->fn = NULL;
			op->abandoned = true;
			session_archive_pull(s, op, true);
			return;
		}
		if (op->kind == SESSION_OP_ARCHIVE_PUT) {
			/* Its tar is stopped; the op ends with it. */
			op->fn = NULL;
			op->abandoned = true;
			session_upload_abandon(s, op);
			return;
		}
		session_op_drop(s, op);
		return;
	}
	if (op->kind == SESSION_OP_ARCHIVE_GET)
		session_archive_chunk(s, op, ev, args);
	else
		session_file_reply(s, op, ev, args);
	json_decref(args);
}

static void on_event(void *ctx, const struct sandbox_event *ev)
{
	struct session *s = ctx;
	struct session_op *op;
	struct session_proc *p;

	switch (ev->kind) {
	case SANDBOX_EV_READY:
		if (s->ready)
			return; /* pre-built: answered when it was taken */
		s->ready = true;
		log_info("sandbox %s: ready", s->id);
		session_reply_json(s->create_fn, s->create_ctx, 201,
				   describe(s));
		s->create_fn = NULL;
		return;
	case SANDBOX_EV_EXEC_START:
		p = session_proc_find(s, ev->id);
		if (p)
			p->pid = ev->pid;
		return;
	case SANDBOX_EV_EXEC_END:
		p = session_proc_find(s, ev->id);
		if (p) {
			session_proc_ended(s, p, &ev->result);
			return;
		}
		op = session_op_find(s, ev->id, true);
		if (op) {
			if (op->kind == SESSION_OP_EXEC)
				session_exec_ended(s, op, ev);
			else
				session_archive_ended(s, op, ev);
			session_op_free(op);
		} else if (!rpc_process_ended(&s->rpcs, ev->id, &ev->result)) {
			repl_process_ended(s->repls, ev->id, &ev->result);
		}
		return;
	case SANDBOX_EV_REPLY:
		op = session_op_find(s, ev->id, false);
		if (op)
			on_reply(s, op, ev);
		return;
	case SANDBOX_EV_BACK:
		return; /* a stateful sandbox is never a warm one */
	}
}

static const struct sandbox_ops session_ops = {
	.output = on_output, .done = on_done, .event = on_event};

/* ---- idle reaping ---- */

static void on_idle_tick(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct session *s, *next;
	uint64_t ticks, now = now_ns();

	if (read(fd, &ticks, sizeof(ticks)) < 0) {
		/* EAGAIN */
	}
	for (s = session_table.list; s; s = next) {
		next = s->next;
		if (!s->ready || s->ops || !s->idle_ms || repl_busy(s->repls) ||
		    rpc_busy(s->rpcs))
			continue;
		if ((now - s->last_used_ns) / 1000000 >= s->idle_ms) {
			snprintf(s->end_reason, sizeof(s->end_reason),
				 "it was reaped after %llu s idle",
				 (unsigned long long)(s->idle_ms / 1000));
			sandbox_kill(s->sb, SANDBOX_ERROR, "idle");
		}
	}
}

void sessions_init(struct loop *loop, const struct session_limits *lim)
{
	session_table.loop = loop;
	session_table.lim = *lim;
	snprintf(session_table.boot, sizeof(session_table.boot), "%08x",
		 (unsigned)((uint64_t)time(NULL) ^ (uint64_t)getpid() << 16));
	session_table.idle_fd = timer_fd_new(1000, true);
	if (session_table.idle_fd >= 0)
		loop_add_fd(loop, session_table.idle_fd, EPOLLIN, on_idle_tick,
			    NULL);
	session_pool_init(loop, lim->prebuilt, &lim->limits);
}

void sessions_shutdown(void)
{
	struct session *s;

	session_pool_shutdown();
	for (s = session_table.list; s; s = s->next) {
		str_copy(s->end_reason, sizeof(s->end_reason),
			 "the server is shutting down");
		sandbox_kill(s->sb, SANDBOX_ERROR, "shutdown");
	}
	if (session_table.idle_fd >= 0) {
		loop_del_fd(session_table.loop, session_table.idle_fd);
		fd_close(&session_table.idle_fd);
	}
}

/* ---- lifecycle ---- */

/* A duration in seconds, checked by the shared rules (runtime/limits.h);
 * max, when non-zero, is tighter. */
static int get_ms(json_t *obj, const char *key, uint64_t def, uint64_t max,
		  uint64_t *out, char *err, size_t errlen)
{
	const struct limits_field f = {key, LIMITS_LIFETIME, 1000, true};
	json_t *v = json_object_get(obj, key);
	char msg[128];

	*out = def;
	if (!v || json_is_null(v))
		return 0;
	if (limits_parse(limits_current(), &f, v, max, out, msg, sizeof(msg))) {
		snprintf(err, errlen, "%s: %s", key, msg);
		return -1;
	}
	return 0;
}

/* The client's limits, each checked by the shared rules as every route
 * checks its own. */
static int apply_limits(json_t *j, struct sandbox_limits *l, char *err,
			size_t errlen)
{
	const struct {
		struct limits_field f;
		uint64_t *out;
	} fields[] = {
		{{"memory_mb", LIMITS_MEMORY, 1 << 20, false},
		 &l->memory_bytes},
		{{"pids", LIMITS_PIDS, 1, false}, &l->pids},
		{{"disk_mb", LIMITS_DISK, 1 << 20, false}, &l->disk_bytes},
		{{"output_bytes", LIMITS_OUTPUT, 1, false}, &l->output_bytes},
		{{"nofile", LIMITS_NOFILE, 1, false}, &l->nofile},
		{{"cpus", LIMITS_CPUS, 1000, true}, &l->cpu_quota_milli},
		{{"cpu_weight", LIMITS_CPU_WEIGHT, 1, false}, &l->cpu_weight},
	};
	const char *key;
	char msg[128];
	json_t *v;

	if (!j || json_is_null(j))
		return 0;
	if (!json_is_object(j)) {
		snprintf(err, errlen, "'limits' must be an object");
		return -1;
	}
	json_object_foreach(j, key, v)
	{
		size_t i;

		for (i = 0; i < ARRAY_SIZE(fields); i++)
			if (!strcmp(key, fields[i].f.name))
				break;
		if (i == ARRAY_SIZE(fields)) {
			snprintf(err, errlen, "limits.%.64s: unknown field",
				 key);
			return -1;
		}
		if (limits_parse(limits_current(), &fields[i].f, v, 0,
				 fields[i].out, msg, sizeof(msg))) {
			snprintf(err, errlen, "limits.%s: %s", key, msg);
			return -1;
		}
	}
	return 0;
}

int session_apply_env(json_t *j, struct sandbox_spec *spec, char **envv,
		      char *err, size_t errlen)
{
	const char *key;
	json_t *v;

	if (!j || json_is_null(j))
		return 0;
	if (!json_is_object(j)) {
		snprintf(err, errlen, "'env' must be an object of strings");
		return -1;
	}
	json_object_foreach(j, key, v)
	{
		char *kv;

		if (!json_is_string(v) || !*key || strchr(key, '=')) {
			snprintf(err, errlen,
				 "bad environment variable '%.64s'", key);
			return -1;
		}
		kv = xstrfmt("%s=%s", key, json_string_value(v));
		if (spec)
			sandbox_spec_add_env(spec, kv);
		if (envv)
			*envv++ = kv;
		else
			free(kv);
	}
	return 0;
}

static void new_id(char *out, size_t n)
{
	unsigned char r[8];
	size_t i;

	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
		uint64_t t = now_ns();

		memcpy(r, &t, sizeof(r));
	}
	snprintf(out, n, "sb-%s-", session_table.boot);
	for (i = 0; i < sizeof(r); i++) {
		size_t len = strlen(out);

		snprintf(out + len, n - len, "%02x", r[i]);
	}
}

static void create(json_t *args, const struct sandbox_bind *binds,
		   size_t nbinds, json_t *shown, session_reply_fn fn, void *ctx)
{
	static const char *const known[] = {
		"limits", "env", "idle_timeout_s", "max_lifetime_s",
		"labels", "llm", "host_routes"};
	struct sandbox_spec spec;
	struct session *s;
	char err[256];
	const char *key, *code = "unprocessable";
	bool busy, prebuilt;
	json_t *v;

	if (!json_is_object(args)) {
		session_reply_error(fn, ctx, 422, "unprocessable",
				    "the body must be a JSON object");
		return;
	}
	json_object_foreach(args, key, v)
	{
		size_t i;

		for (i = 0; i < ARRAY_SIZE(known); i++)
			if (!strcmp(key, known[i]))
				break;
		if (i == ARRAY_SIZE(known)) {
			session_reply_error(fn, ctx, 422, "unprocessable",
					    "unknown field '%.64s'", key);
			return;
		}
	}
	if (session_table.count >= session_table.lim.max_sessions) {
		session_reply_error(
			fn, ctx, 429, "too_many_sandboxes",
			"this server already runs %u sandboxes, its limit; "
			"delete one first",
			session_table.count);
		return;
	}
	s = xcalloc(1, sizeof(*s));
	sandbox_spec_init(&spec);
	spec.serve = true;
	spec.limits = session_table.lim.limits;
	for (size_t i = 0; i < nbinds; i++)
		sandbox_spec_copy_bind(&spec, &binds[i]);
	v = json_object_get(args, "labels");
	if (v && !json_is_null(v)) {
		const char *k;
		json_t *lv;

		if (!json_is_object(v)) {
			snprintf(err, sizeof(err),
				 "'labels' must be an object");
			goto bad;
		}
		json_object_foreach(v, k, lv) if (!json_is_string(lv))
		{
			snprintf(err, sizeof(err),
				 "label '%.64s' must be a string", k);
			goto bad;
		}
	}
	if (apply_limits(json_object_get(args, "limits"), &spec.limits, err,
			 sizeof(err)) ||
	    session_apply_env(json_object_get(args, "env"), &spec, NULL, err,
			      sizeof(err)) ||
	    get_ms(args, "idle_timeout_s", session_table.lim.default_idle_ms,
		   session_table.lim.max_lifetime_ms, &s->idle_ms, err,
		   sizeof(err)) ||
	    get_ms(args, "max_lifetime_s", session_table.lim.max_lifetime_ms,
		   session_table.lim.max_lifetime_ms, &s->lifetime_ms, err,
		   sizeof(err)))
		goto bad;
	if (!s->lifetime_ms)
		s->lifetime_ms = session_table.lim.max_lifetime_ms;
	spec.limits.wall_ms = s->lifetime_ms;
	/* The output cap is per exec (see session_op_new), not the sandbox's.
	 */
	s->output_cap = spec.limits.output_bytes;
	s->disk_bytes = spec.limits.disk_bytes;
	s->memory_bytes = spec.limits.memory_bytes;
	spec.limits.output_bytes = 0;
	new_id(s->id, sizeof(s->id));
	s->labels = json_is_object(v) ? json_incref(v) : json_object();
	s->limits = json_pack(
		"{s:I,s:I,s:I,s:I,s:I,s:o,s:o}", "memory_mb",
		(json_int_t)(spec.limits.memory_bytes >> 20), "disk_mb",
		(json_int_t)(spec.limits.disk_bytes >> 20), "pids",
		(json_int_t)spec.limits.pids, "nofile",
		(json_int_t)spec.limits.nofile, "output_bytes",
		(json_int_t)s->output_cap, "cpus",
		spec.limits.cpu_quota_milli
			? json_real((double)spec.limits.cpu_quota_milli /
				    1000.0)
			: json_null(),
		"cpu_weight",
		spec.limits.cpu_weight
			? json_integer((json_int_t)spec.limits.cpu_weight)
			: json_null());
	err[0] = '\0';
	if (session_gw)
		s->gw = session_gw->open(s->id, s->labels, args, err,
					 sizeof(err), &code);
	else if (json_is_true(json_object_get(args, "llm")) ||
		 json_is_object(json_object_get(args, "llm")))
		snprintf(err, sizeof(err), "this server has no model gateway");
	if (err[0]) {
		json_decref(s->labels);
		json_decref(s->limits);
		sandbox_spec_release(&spec);
		free(s);
		session_reply_error(fn, ctx, 422, code, "%s", err);
		return;
	}
	if (s->gw)
		session_gw->attach(s->gw, &spec);
	s->shown = shown ? json_incref(shown) : NULL;
	s->created = time(NULL);
	s->last_used_ns = now_ns();
	s->create_fn = fn;
	s->create_ctx = ctx;
	s->next_id = 1;
	/* A pre-built sandbox is ready as soon as it has the spec: commands
	 * reach its init after it. */
	s->sb = session_pool_take(&spec, &session_ops, s);
	prebuilt = s->sb != NULL;
	if (!s->sb)
		s->sb = sandbox_start(session_table.loop, &spec, &session_ops,
				      s, err, sizeof(err));
	busy = !s->sb && errno == EAGAIN; /* no free host uid slot */
	sandbox_spec_release(&spec);
	if (!s->sb) {
		if (s->gw)
			session_gw->close(s->gw);
		json_decref(s->labels);
		json_decref(s->limits);
		json_decref(s->shown);
		free(s);
		session_reply_error(fn, ctx, busy ? 503 : 500,
				    busy ? "busy" : "sandbox_error",
				    "cannot create the sandbox: %s", err);
		return;
	}
	s->next = session_table.list;
	session_table.list = s;
	session_table.count++;
	if (prebuilt) {
		s->ready = true;
		log_info("sandbox %s: ready (pre-built)", s->id);
		session_reply_json(s->create_fn, s->create_ctx, 201,
				   describe(s));
		s->create_fn = NULL;
	}
	return;
bad:
	sandbox_spec_release(&spec);
	free(s);
	session_reply_error(fn, ctx, 422, "unprocessable", "%s", err);
}

void session_create(json_t *args, session_reply_fn fn, void *ctx)
{
	create(args, NULL, 0, NULL, fn, ctx);
}

void session_create_bound(json_t *args, const struct sandbox_bind *binds,
			  size_t nbinds, json_t *shown, session_reply_fn fn,
			  void *ctx)
{
	create(args, binds, nbinds, shown, fn, ctx);
}

bool session_exists(const char *id)
{
	struct session *s;

	for (s = session_table.list; s; s = s->next)
		if (!strcmp(s->id, id) && s->ready && !s->deleting)
			return true;
	return false;
}

int session_net_socket(const char *id)
{
	struct session *s;

	for (s = session_table.list; s; s = s->next)
		if (!strcmp(s->id, id) && s->ready && !s->deleting && s->sb) {
			s->last_used_ns = now_ns();
			return sandbox_net_socket(s->sb);
		}
	return -ENOENT;
}

void session_get(const char *id, session_reply_fn fn, void *ctx)
{
	struct session *s = session_find(id, fn, ctx);

	if (s)
		session_reply_json(fn, ctx, 200, describe(s));
}

void session_list(const char *label, session_reply_fn fn, void *ctx)
{
	json_t *arr = json_array();
	struct session *s;
	char key[256] = "";
	const char *val = NULL;

	if (label) {
		size_t n = strcspn(label, "=");

		snprintf(key, sizeof(key), "%.*s", (int)n, label);
		val = label[n] ? label + n + 1 : NULL;
	}
	for (s = session_table.list; s; s = s->next) {
		json_t *lv;

		if (!s->ready || s->deleting)
			continue;
		if (label) {
			lv = json_object_get(s->labels, key);
			if (!lv || (val && strcmp(json_string_value(lv), val)))
				continue;
		}
		json_array_append_new(arr, describe(s));
	}
	session_reply_json(fn, ctx, 200, json_pack("{s:o}", "sandboxes", arr));
}

void session_delete(const char *id, session_reply_fn fn, void *ctx)
{
	struct session *s = session_find(id, fn, ctx);

	if (!s)
		return;
	str_copy(s->end_reason, sizeof(s->end_reason), "it was deleted");
	s->deleting = true;
	s->delete_fn = fn;
	s->delete_ctx = ctx;
	sandbox_kill(s->sb, SANDBOX_ERROR, "deleted");
}

int session_get_ms(json_t *obj, const char *key, uint64_t def, uint64_t max,
		   uint64_t *out, char *err, size_t errlen)
{
	return get_ms(obj, key, def, max, out, err, errlen);
}

/* ---- operations ---- */

void session_path_set(json_t *obj, const char *path)
{
	size_t len = strlen(path);
	struct buf b;

	buf_init(&b);
	if (!utf8_repair(&b, path, len)) {
		struct buf enc;

		buf_init(&enc);
		base64_encode(&enc, path, len);
		json_object_set_new(
			obj, "path_b64",
			json_stringn(enc.data ? enc.data : "", enc.len));
		buf_release(&enc);
	}
	json_object_set_new(obj, "path",
			    json_stringn(b.data ? b.data : "", b.len));
	buf_release(&b);
}

int session_command(struct session *s, enum sandbox_cmd cmd, uint32_t id,
		    json_t *args, const char *payload, size_t len)
{
	char *text = json_dumps(args, JSON_COMPACT);
	int r;

	json_decref(args);
	r = sandbox_command(s->sb, cmd, id, text, payload, len);
	free(text);
	return r;
}

/* The op of ctx, a client's request, wherever it is. */
static struct session_op *op_of(void *ctx, struct session **sp)
{
	struct session *s;
	struct session_op *op;

	for (s = session_table.list; s; s = s->next)
		for (op = s->ops; op; op = op->next)
			if (op->ctx == ctx) {
				*sp = s;
				return op;
			}
	return NULL;
}

void session_abandon(void *ctx)
{
	struct session *s;
	struct session_op *op = op_of(ctx, &s);

	if (!op || op->abandoned)
		return;
	op->abandoned = true;
	op->stream = NULL;
	op->data = NULL;
	switch (op->kind) {
	case SESSION_OP_EXEC:
		session_command(s, SANDBOX_CMD_SIGNAL, op->id,
				json_pack("{s:i}", "signal", SIGKILL), NULL, 0);
		break;
	case SESSION_OP_ARCHIVE_GET:
		session_archive_pull(s, op, true);
		break;
	case SESSION_OP_PUT:
	case SESSION_OP_ARCHIVE_PUT:
		session_upload_abandon(s, op);
		break;
	case SESSION_OP_GET:
		/* No read is asked for while the client holds a chunk. */
		if (op->waiting) {
			session_reply_json(op->fn, op->ctx, 200, NULL);
			session_op_drop(s, op);
		}
		break;
	default:
		break;
	}
}

void session_transfer_more(void *ctx)
{
	struct session *s;
	struct session_op *op = op_of(ctx, &s);

	if (!op || !op->waiting)
		return;
	op->waiting = false;
	if (op->kind == SESSION_OP_ARCHIVE_GET)
		session_archive_pull(s, op, false);
	else
		session_file_read(s, op);
}

struct session_op *session_op_new(struct session *s, enum session_op_kind kind,
				  session_reply_fn fn, void *ctx)
{
	struct session_op *op = xcalloc(1, sizeof(*op));

	op->kind = kind;
	op->id = s->next_id++;
	op->fn = fn;
	op->ctx = ctx;
	buf_init(&op->out);
	buf_init(&op->err);
	op->cap = s->output_cap;
	op->next = s->ops;
	s->ops = op;
	s->last_used_ns = now_ns();
	return op;
}

void session_op_drop(struct session *s, struct session_op *op)
{
	session_op_find(s, op->id, true);
	session_op_free(op);
}

/*
 * Stateful sandboxes. The table of sessions lives on the runner's loop
 * thread; each session is one serve-mode sandbox plus the operations in
 * flight on it, keyed by the id its init echoes back. File transfers are
 * cut into 1 MiB commands so neither side holds more than a chunk beyond
 * the file itself; trees travel as tar run by the sandbox user inside the
 * sandbox, so tar's own rules (no absolute names, no "..") apply and a
 * hostile archive can only touch the sandbox.
 */
#include <errno.h>
#include <signal.h>
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
#include "runtime/repl.h"
#include "runtime/result.h"
#include "runtime/session.h"
#include "base/banned.h"

#define CHUNK (1u << 20)
#define PROC_KEEP (1u << 20) /* output kept per background stream */
#define RECENT 256
#define DEFAULT_EXEC_MS 60000

enum op_kind {
	OP_EXEC,
	OP_PUT,
	OP_GET,
	OP_DELETE,
	OP_ARCHIVE_PUT,
	OP_ARCHIVE_GET,
};

struct op {
	enum op_kind kind;
	uint32_t id;
	session_reply_fn fn;
	session_stream_fn stream;
	void *ctx;
	struct buf out, err;
	uint64_t cap;
	bool truncated;
	/* file transfers */
	char *path;
	size_t len;
	unsigned pending; /* PUT: chunks not yet acknowledged */
	bool failed;
	struct op *next;
};

struct proc {
	uint32_t id;
	int pid;
	json_t *argv;
	bool running;
	struct sandbox_step_result result;
	struct buf out, err;
	bool truncated;
	struct proc *next;
};

struct session {
	char id[48];
	struct sandbox *sb;
	bool ready;
	time_t created;
	uint64_t last_used_ns;
	uint64_t idle_ms;
	uint64_t lifetime_ms;
	json_t *labels;
	json_t *limits;
	uint32_t next_id;
	struct op *ops;
	struct proc *procs;
	struct repl *repls;
	session_reply_fn create_fn;
	void *create_ctx;
	session_reply_fn delete_fn; /* answered once it is really gone */
	void *delete_ctx;
	bool deleting;
	uint64_t output_cap;
	char end_reason[128];
	struct session *next;
};

static struct {
	struct loop *loop;
	struct session_limits lim;
	struct session *list;
	unsigned count;
	char boot[9];
	int idle_fd;
	struct {
		char id[48];
		char why[128];
	} recent[RECENT];
	unsigned recent_next;
} S = {.idle_fd = -1};

/* ---- replies ---- */

static void reply_json(session_reply_fn fn, void *ctx, unsigned status,
		       json_t *body)
{
	struct session_reply r = {.status = status, .json = body};

	if (fn)
		fn(ctx, &r);
	else
		json_decref(body);
}

static void __attribute__((format(printf, 5, 6)))
reply_error(session_reply_fn fn, void *ctx, unsigned status, const char *code,
	    const char *fmt, ...)
{
	char msg[512];
	struct buf b;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	buf_init(&b);
	utf8_repair(&b, msg, strlen(msg));
	reply_json(fn, ctx, status,
		   json_pack("{s:{s:s,s:s}}", "error", "code", code, "message",
			     b.data));
	buf_release(&b);
}

static void reply_errno(session_reply_fn fn, void *ctx, int err,
			const char *path)
{
	unsigned status = 500;
	const char *code = "internal";

	switch (err) {
	case ENOENT:
	case ENOTDIR:
		status = 404;
		code = "not_found";
		break;
	case EACCES:
	case EPERM:
	case EROFS:
		status = 403;
		code = "forbidden";
		break;
	case ENOSPC:
	case EFBIG:
	case EDQUOT:
		status = 413;
		code = "payload_too_large";
		break;
	case EISDIR:
	case ENOTEMPTY:
	case EEXIST:
		status = 409;
		code = "conflict";
		break;
	case EINVAL:
	case ENAMETOOLONG:
	case ELOOP:
	case ENXIO: /* a FIFO without a reader */
	case EXDEV: /* a magic link */
		status = 400;
		code = "bad_request";
		break;
	}
	reply_error(fn, ctx, status, code, "'%s': %s", path, strerror(err));
}

/* ---- the table ---- */

static void remember(const char *id, const char *why)
{
	unsigned i = S.recent_next++ % RECENT;

	str_copy(S.recent[i].id, sizeof(S.recent[i].id), id);
	str_copy(S.recent[i].why, sizeof(S.recent[i].why), why);
}

static struct session *find(const char *id, session_reply_fn fn, void *ctx)
{
	struct session *s;
	unsigned i;

	for (s = S.list; s; s = s->next)
		if (!strcmp(s->id, id) && s->ready) {
			if (!s->deleting)
				return s;
			reply_error(fn, ctx, 404, "not_found",
				    "no sandbox '%s': %s", id, s->end_reason);
			return NULL;
		}
	for (i = 0; i < RECENT; i++)
		if (!strcmp(S.recent[i].id, id)) {
			reply_error(fn, ctx, 404, "not_found",
				    "no sandbox '%s': %s", id, S.recent[i].why);
			return NULL;
		}
	if (str_starts_with(id, "sb-") && strlen(id) > 11 &&
	    strncmp(id + 3, S.boot, 8))
		reply_error(fn, ctx, 404, "not_found",
			    "no sandbox '%s': it belonged to an earlier run of "
			    "the server, and sandboxes do not survive a "
			    "restart",
			    id);
	else
		reply_error(fn, ctx, 404, "not_found", "no sandbox '%s'", id);
	return NULL;
}

static json_t *describe(struct session *s)
{
	char created[32];
	struct tm tm;
	struct proc *p;
	unsigned running = 0;

	for (p = s->procs; p; p = p->next)
		running += p->running;
	gmtime_r(&s->created, &tm);
	strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
	return json_pack(
		"{s:s,s:s,s:s,s:O,s:O,s:I,s:I,s:I,s:i}", "id", s->id, "status",
		"running", "created_at", created, "labels", s->labels, "limits",
		s->limits, "idle_timeout_s", (json_int_t)(s->idle_ms / 1000),
		"max_lifetime_s", (json_int_t)(s->lifetime_ms / 1000), "idle_s",
		(json_int_t)((now_ns() - s->last_used_ns) / 1000000000ull),
		"background_processes", (int)running);
}

static void op_free(struct op *op)
{
	buf_release(&op->out);
	buf_release(&op->err);
	free(op->path);
	free(op);
}

static void proc_free(struct proc *p)
{
	json_decref(p->argv);
	buf_release(&p->out);
	buf_release(&p->err);
	free(p);
}

static void unlink_session(struct session *s)
{
	struct session **pp;

	for (pp = &S.list; *pp; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			S.count--;
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
		reply_error(s->create_fn, s->create_ctx, 500, "sandbox_error",
			    "cannot create the sandbox: %s",
			    res->error[0] ? res->error : why);
	if (s->delete_fn)
		reply_json(s->delete_fn, s->delete_ctx, 200,
			   json_pack("{s:s,s:b}", "id", s->id, "deleted", 1));
	while (s->ops) {
		struct op *op = s->ops;

		s->ops = op->next;
		reply_error(op->fn, op->ctx, 410, "gone",
			    "sandbox '%s' is gone: %s", s->id, why);
		op_free(op);
	}
	while (s->procs) {
		struct proc *p = s->procs;

		s->procs = p->next;
		proc_free(p);
	}
	repl_free_all(s->repls, why);
	if (s->ready)
		log_info("sandbox %s: ended: %s", s->id, why);
	remember(s->id, why);
	unlink_session(s);
	json_decref(s->labels);
	json_decref(s->limits);
	free(s);
}

static struct op *find_op(struct session *s, uint32_t id, bool unlink)
{
	struct op **pp;

	for (pp = &s->ops; *pp; pp = &(*pp)->next)
		if ((*pp)->id == id) {
			struct op *op = *pp;

			if (unlink)
				*pp = op->next;
			return op;
		}
	return NULL;
}

static struct proc *find_proc(struct session *s, uint32_t id)
{
	struct proc *p;

	for (p = s->procs; p; p = p->next)
		if (p->id == id)
			return p;
	return NULL;
}

static void keep_output(struct buf *b, bool *truncated, uint64_t cap,
			const char *data, size_t len)
{
	if (b->len >= cap) {
		*truncated = true;
		return;
	}
	if (len > cap - b->len) {
		len = (size_t)(cap - b->len);
		*truncated = true;
	}
	buf_add(b, data, len);
}

static void on_output(void *ctx, size_t id, int stream, const char *data,
		      size_t len)
{
	struct session *s = ctx;
	struct op *op = find_op(s, (uint32_t)id, false);
	struct proc *p;

	if (op && op->stream) {
		op->stream(op->ctx, stream == 1 ? "stdout" : "stderr", data,
			   len);
		return;
	}
	if (op) {
		keep_output(stream == 1 ? &op->out : &op->err, &op->truncated,
			    op->cap, data, len);
		return;
	}
	p = find_proc(s, (uint32_t)id);
	if (p)
		keep_output(stream == 1 ? &p->out : &p->err, &p->truncated,
			    PROC_KEEP, data, len);
	else
		repl_output(s->repls, (uint32_t)id, stream, data, len);
}

static json_t *step_json(const struct sandbox_step_result *r)
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

static void request_read(struct session *s, struct op *op);

static void exec_ended(struct session *s, struct op *op,
		       const struct sandbox_event *ev)
{
	json_t *o = step_json(&ev->result);

	if (ev->err) {
		reply_error(op->fn, op->ctx, 400, "bad_request",
			    "cannot start the process: %s", strerror(ev->err));
		json_decref(o);
		return;
	}
	if (op->truncated)
		json_object_set_new(o, "output_truncated", json_true());
	switch (op->kind) {
	case OP_EXEC:
		if (!op->stream) {
			json_object_set_new(
				o, "stdout",
				json_text(op->out.data, op->out.len));
			json_object_set_new(
				o, "stderr",
				json_text(op->err.data, op->err.len));
		}
		reply_json(op->fn, op->ctx, 200, o);
		return;
	case OP_ARCHIVE_PUT:
		json_decref(o);
		if (ev->result.status == SANDBOX_OK)
			reply_json(op->fn, op->ctx, 200,
				   json_pack("{s:s}", "path", op->path));
		else
			reply_error(op->fn, op->ctx, 400, "bad_archive",
				    "tar could not extract into '%s': %.300s",
				    op->path, op->err.data ? op->err.data : "");
		return;
	case OP_ARCHIVE_GET: {
		struct session_reply r = {.status = 200,
					  .raw = op->out.data ? op->out.data
							      : "",
					  .raw_len = op->out.len};

		json_decref(o);
		if (ev->result.status != SANDBOX_OK || op->truncated) {
			reply_error(op->fn, op->ctx, op->truncated ? 413 : 404,
				    op->truncated ? "payload_too_large"
						  : "not_found",
				    "cannot archive '%s': %.300s", op->path,
				    op->truncated ? "larger than the limit"
						  : (op->err.data ? op->err.data
								  : ""));
			return;
		}
		if (op->fn)
			op->fn(op->ctx, &r);
		return;
	}
	default:
		json_decref(o);
		return;
	}
}

static void file_reply(struct session *s, struct op *op,
		       const struct sandbox_event *ev)
{
	json_t *args = json_loadb(ev->json, ev->json_len, 0, NULL);
	int err = (int)json_integer_value(json_object_get(args, "errno"));
	bool done = true;

	switch (op->kind) {
	case OP_PUT:
		/* Chunks are answered in order; the first error is the
		 * answer, the rest are drained. */
		if (err && !op->failed) {
			op->failed = true;
			reply_errno(op->fn, op->ctx, err, op->path);
		}
		if (--op->pending) {
			done = false;
			break;
		}
		if (!op->failed)
			reply_json(op->fn, op->ctx, 201,
				   json_pack("{s:s,s:I}", "path", op->path,
					     "size", (json_int_t)op->len));
		break;
	case OP_GET:
		if (err == EISDIR || json_object_get(args, "entries")) {
			json_t *entries = json_object_get(args, "entries");

			if (entries) {
				reply_json(op->fn, op->ctx, 200,
					   json_pack("{s:s,s:O}", "path",
						     op->path, "entries",
						     entries));
				break;
			}
			/* A directory: ask for its listing instead. */
			done = false;
			{
				json_t *a =
					json_pack("{s:s}", "path", op->path);
				char *text = json_dumps(a, JSON_COMPACT);

				sandbox_command(s->sb, SANDBOX_CMD_FILE_LIST,
						op->id, text, NULL, 0);
				free(text);
				json_decref(a);
			}
			break;
		}
		if (err) {
			reply_errno(op->fn, op->ctx, err, op->path);
			break;
		}
		if (op->out.len + ev->payload_len > S.lim.max_disk) {
			reply_error(op->fn, op->ctx, 413, "payload_too_large",
				    "'%s' is larger than the limit", op->path);
			break;
		}
		buf_add(&op->out, ev->payload, ev->payload_len);
		op->len = (size_t)json_integer_value(
			json_object_get(args, "size"));
		if (ev->payload_len && op->out.len < op->len) {
			done = false;
			request_read(s, op);
			break;
		}
		{
			struct session_reply r = {
				.status = 200,
				.raw = op->out.data ? op->out.data : "",
				.raw_len = op->out.len};

			if (op->fn)
				op->fn(op->ctx, &r);
		}
		break;
	case OP_DELETE:
		if (err)
			reply_errno(op->fn, op->ctx, err, op->path);
		else
			reply_json(op->fn, op->ctx, 200,
				   json_pack("{s:s,s:b}", "path", op->path,
					     "deleted", 1));
		break;
	default:
		break;
	}
	json_decref(args);
	if (done) {
		find_op(s, op->id, true);
		op_free(op);
	}
}

static void on_event(void *ctx, const struct sandbox_event *ev)
{
	struct session *s = ctx;
	struct op *op;
	struct proc *p;

	switch (ev->kind) {
	case SANDBOX_EV_READY:
		s->ready = true;
		log_info("sandbox %s: ready", s->id);
		reply_json(s->create_fn, s->create_ctx, 201, describe(s));
		s->create_fn = NULL;
		return;
	case SANDBOX_EV_EXEC_START:
		p = find_proc(s, ev->id);
		if (p)
			p->pid = ev->pid;
		return;
	case SANDBOX_EV_EXEC_END:
		p = find_proc(s, ev->id);
		if (p) {
			p->running = false;
			p->result = ev->result;
			return;
		}
		op = find_op(s, ev->id, true);
		if (op) {
			exec_ended(s, op, ev);
			op_free(op);
		} else {
			repl_process_ended(s->repls, ev->id, &ev->result);
		}
		return;
	case SANDBOX_EV_REPLY:
		op = find_op(s, ev->id, false);
		if (op)
			file_reply(s, op, ev);
		return;
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
	for (s = S.list; s; s = next) {
		next = s->next;
		if (!s->ready || s->ops || !s->idle_ms || repl_busy(s->repls))
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
	S.loop = loop;
	S.lim = *lim;
	snprintf(S.boot, sizeof(S.boot), "%08x",
		 (unsigned)((uint64_t)time(NULL) ^ (uint64_t)getpid() << 16));
	S.idle_fd = timer_fd_new(1000, true);
	if (S.idle_fd >= 0)
		loop_add_fd(loop, S.idle_fd, EPOLLIN, on_idle_tick, NULL);
}

void sessions_shutdown(void)
{
	struct session *s;

	for (s = S.list; s; s = s->next) {
		str_copy(s->end_reason, sizeof(s->end_reason),
			 "the server is shutting down");
		sandbox_kill(s->sb, SANDBOX_ERROR, "shutdown");
	}
	if (S.idle_fd >= 0) {
		loop_del_fd(S.loop, S.idle_fd);
		fd_close(&S.idle_fd);
	}
}

/* ---- lifecycle ---- */

static int get_ms(json_t *obj, const char *key, uint64_t def, uint64_t max,
		  uint64_t *out, char *err, size_t errlen)
{
	json_t *v = json_object_get(obj, key);
	double secs;

	*out = def;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_number(v) || (secs = json_number_value(v)) < 0 ||
	    secs * 1000 > (double)max) {
		snprintf(err, errlen,
			 "'%s' must be a number of seconds from 0 "
			 "to %llu",
			 key, (unsigned long long)(max / 1000));
		return -1;
	}
	*out = (uint64_t)(secs * 1000);
	return 0;
}

static int apply_limits(json_t *j, struct sandbox_limits *l, char *err,
			size_t errlen)
{
	static const char *const known[] = {"memory_mb", "pids", "disk_mb",
					    "output_bytes", "nofile"};
	const char *key;
	json_t *v;

	if (!j || json_is_null(j))
		return 0;
	if (!json_is_object(j)) {
		snprintf(err, errlen, "'limits' must be an object");
		return -1;
	}
	json_object_foreach(j, key, v)
	{
		json_int_t n;
		size_t i;

		for (i = 0; i < ARRAY_SIZE(known); i++)
			if (!strcmp(key, known[i]))
				break;
		if (i == ARRAY_SIZE(known)) {
			snprintf(err, errlen, "unknown limit '%.64s'", key);
			return -1;
		}
		if (!json_is_integer(v) || (n = json_integer_value(v)) <= 0) {
			snprintf(err, errlen,
				 "limit '%s' must be a positive integer", key);
			return -1;
		}
		if (!strcmp(key, "memory_mb")) {
			if ((uint64_t)n > S.lim.max_memory >> 20) {
				snprintf(
					err, errlen,
					"limit 'memory_mb' must be at most "
					"%llu",
					(unsigned long long)(S.lim.max_memory >>
							     20));
				return -1;
			}
			l->memory_bytes = (uint64_t)n << 20;
		} else if (!strcmp(key, "disk_mb")) {
			if ((uint64_t)n > S.lim.max_disk >> 20) {
				snprintf(err, errlen,
					 "limit 'disk_mb' must be at most %llu",
					 (unsigned long long)(S.lim.max_disk >>
							      20));
				return -1;
			}
			l->disk_bytes = (uint64_t)n << 20;
		} else if (!strcmp(key, "pids")) {
			l->pids = (uint64_t)(n > 65536 ? 65536 : n);
		} else if (!strcmp(key, "nofile")) {
			l->nofile = (uint64_t)(n > 65536 ? 65536 : n);
		} else {
			l->output_bytes = (uint64_t)n;
		}
	}
	return 0;
}

static int apply_env(json_t *j, struct sandbox_spec *spec, char **envv,
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
	snprintf(out, n, "sb-%s-", S.boot);
	for (i = 0; i < sizeof(r); i++) {
		size_t len = strlen(out);

		snprintf(out + len, n - len, "%02x", r[i]);
	}
}

void session_create(json_t *args, session_reply_fn fn, void *ctx)
{
	static const char *const known[] = {"limits", "env", "idle_timeout_s",
					    "max_lifetime_s", "labels"};
	struct sandbox_spec spec;
	struct session *s;
	char err[256];
	const char *key;
	json_t *v;

	if (!json_is_object(args)) {
		reply_error(fn, ctx, 422, "unprocessable",
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
			reply_error(fn, ctx, 422, "unprocessable",
				    "unknown field '%.64s'", key);
			return;
		}
	}
	if (S.count >= S.lim.max_sessions) {
		reply_error(fn, ctx, 429, "too_many_sandboxes",
			    "this server already runs %u sandboxes, its limit; "
			    "delete one first",
			    S.count);
		return;
	}
	s = xcalloc(1, sizeof(*s));
	sandbox_spec_init(&spec);
	spec.serve = true;
	spec.limits = S.lim.limits;
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
	    apply_env(json_object_get(args, "env"), &spec, NULL, err,
		      sizeof(err)) ||
	    get_ms(args, "idle_timeout_s", S.lim.default_idle_ms,
		   S.lim.max_lifetime_ms, &s->idle_ms, err, sizeof(err)) ||
	    get_ms(args, "max_lifetime_s", S.lim.max_lifetime_ms,
		   S.lim.max_lifetime_ms, &s->lifetime_ms, err, sizeof(err)))
		goto bad;
	if (!s->lifetime_ms)
		s->lifetime_ms = S.lim.max_lifetime_ms;
	spec.limits.wall_ms = s->lifetime_ms;
	/* The output cap is per exec (see op_new), not the sandbox's. */
	s->output_cap = spec.limits.output_bytes;
	spec.limits.output_bytes = 0;
	new_id(s->id, sizeof(s->id));
	s->labels = json_is_object(v) ? json_incref(v) : json_object();
	s->limits =
		json_pack("{s:I,s:I,s:I,s:I,s:I}", "memory_mb",
			  (json_int_t)(spec.limits.memory_bytes >> 20),
			  "disk_mb", (json_int_t)(spec.limits.disk_bytes >> 20),
			  "pids", (json_int_t)spec.limits.pids, "nofile",
			  (json_int_t)spec.limits.nofile, "output_bytes",
			  (json_int_t)s->output_cap);
	s->created = time(NULL);
	s->last_used_ns = now_ns();
	s->create_fn = fn;
	s->create_ctx = ctx;
	s->next_id = 1;
	s->sb = sandbox_start(S.loop, &spec, &session_ops, s, err, sizeof(err));
	sandbox_spec_release(&spec);
	if (!s->sb) {
		json_decref(s->labels);
		json_decref(s->limits);
		free(s);
		reply_error(fn, ctx, 500, "sandbox_error",
			    "cannot create the sandbox: %s", err);
		return;
	}
	s->next = S.list;
	S.list = s;
	S.count++;
	return;
bad:
	sandbox_spec_release(&spec);
	free(s);
	reply_error(fn, ctx, 422, "unprocessable", "%s", err);
}

bool session_exists(const char *id)
{
	struct session *s;

	for (s = S.list; s; s = s->next)
		if (!strcmp(s->id, id) && s->ready && !s->deleting)
			return true;
	return false;
}

void session_get(const char *id, session_reply_fn fn, void *ctx)
{
	struct session *s = find(id, fn, ctx);

	if (s)
		reply_json(fn, ctx, 200, describe(s));
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
	for (s = S.list; s; s = s->next) {
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
	reply_json(fn, ctx, 200, json_pack("{s:o}", "sandboxes", arr));
}

void session_delete(const char *id, session_reply_fn fn, void *ctx)
{
	struct session *s = find(id, fn, ctx);

	if (!s)
		return;
	str_copy(s->end_reason, sizeof(s->end_reason), "it was deleted");
	s->deleting = true;
	s->delete_fn = fn;
	s->delete_ctx = ctx;
	sandbox_kill(s->sb, SANDBOX_ERROR, "deleted");
}

/* ---- exec ---- */

static struct op *op_new(struct session *s, enum op_kind kind,
			 session_reply_fn fn, void *ctx)
{
	struct op *op = xcalloc(1, sizeof(*op));

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

static void drop_op(struct session *s, struct op *op)
{
	find_op(s, op->id, true);
	op_free(op);
}

/* Sends an EXEC command; args gains the fields init expects. */
static int send_exec(struct session *s, uint32_t id, json_t *argv,
		     const char *cwd, json_t *env, uint64_t timeout_ms,
		     uint64_t cap, const char *in, size_t inlen, bool close)
{
	json_t *a = json_pack("{s:O,s:I,s:I,s:b}", "argv", argv, "timeout_ms",
			      (json_int_t)timeout_ms, "output_bytes",
			      (json_int_t)cap, "stdin_close", close);
	char *text;
	int r;

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

void session_exec(const char *id, json_t *args, session_stream_fn stream,
		  session_reply_fn fn, void *ctx)
{
	struct session *s = find(id, fn, ctx);
	json_t *argv, *cmd, *envj, *v;
	const char *cwd = NULL, *in = NULL;
	size_t inlen = 0, nenv, i;
	uint64_t timeout_ms;
	bool background;
	char err[256];
	char **envv;
	struct op *op;

	if (!s)
		return;
	if (!json_is_object(args)) {
		reply_error(fn, ctx, 422, "unprocessable",
			    "the body must be a JSON object");
		return;
	}
	argv = json_object_get(args, "argv");
	cmd = json_object_get(args, "cmd");
	if ((!argv) == (!cmd)) {
		reply_error(fn, ctx, 422, "unprocessable",
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
			reply_error(fn, ctx, 422, "unprocessable",
				    "'cmd' must be a string");
			return;
		}
		argv = json_pack("[s,s,O]", "/bin/bash", "-c", cmd);
	}
	v = json_object_get(args, "cwd");
	if (v && !json_is_null(v)) {
		if (!json_is_string(v)) {
			json_decref(argv);
			reply_error(fn, ctx, 422, "unprocessable",
				    "'cwd' must be a string");
			return;
		}
		cwd = json_string_value(v);
	}
	v = json_object_get(args, "stdin");
	if (v && !json_is_null(v)) {
		if (!json_is_string(v)) {
			json_decref(argv);
			reply_error(fn, ctx, 422, "unprocessable",
				    "'stdin' must be a string");
			return;
		}
		in = json_string_value(v);
		inlen = json_string_length(v);
	}
	envj = json_object_get(args, "env");
	nenv = json_is_object(envj) ? json_object_size(envj) : 0;
	envv = xcalloc(nenv + 1, sizeof(*envv));
	if (get_ms(args, "timeout_s", DEFAULT_EXEC_MS, s->lifetime_ms,
		   &timeout_ms, err, sizeof(err)) ||
	    apply_env(envj, NULL, envv, err, sizeof(err))) {
		for (i = 0; envv[i]; i++)
			free(envv[i]);
		free(envv);
		json_decref(argv);
		reply_error(fn, ctx, 422, "unprocessable", "%s", err);
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
		struct proc *p = xcalloc(1, sizeof(*p));

		p->id = s->next_id++;
		p->argv = json_incref(argv);
		p->running = true;
		buf_init(&p->out);
		buf_init(&p->err);
		p->next = s->procs;
		s->procs = p;
		s->last_used_ns = now_ns();
		/* No time limit but the sandbox's; no output cap (the host
		 * keeps the first PROC_KEEP bytes of each stream). */
		if (send_exec(s, p->id, argv, cwd, envj, 0, 0, in, inlen,
			      true)) {
			s->procs = p->next;
			proc_free(p);
			reply_error(fn, ctx, 410, "gone",
				    "the sandbox is gone");
		} else
			reply_json(fn, ctx, 201,
				   json_pack("{s:I,s:O,s:s}", "id",
					     (json_int_t)p->id, "argv", argv,
					     "status", "running"));
	} else {
		op = op_new(s, OP_EXEC, fn, ctx);
		op->stream = stream;
		if (send_exec(s, op->id, argv, cwd, envj, timeout_ms, op->cap,
			      in, inlen, true)) {
			drop_op(s, op);
			reply_error(fn, ctx, 410, "gone",
				    "the sandbox is gone");
		}
	}
	json_decref(envj);
	json_decref(argv);
	return;
bad_argv:
	reply_error(fn, ctx, 422, "unprocessable",
		    "'argv' must be a non-empty list of strings");
}

void session_exec_abandon(void *ctx)
{
	struct session *s;
	struct op *op;

	for (s = S.list; s; s = s->next)
		for (op = s->ops; op; op = op->next)
			if (op->ctx == ctx && op->kind == OP_EXEC) {
				char json[32];

				op->stream = NULL;
				snprintf(json, sizeof(json), "{\"signal\":%d}",
					 SIGKILL);
				sandbox_command(s->sb, SANDBOX_CMD_SIGNAL,
						op->id, json, NULL, 0);
				return;
			}
}

/* ---- background processes ---- */

static json_t *proc_json(const struct proc *p, bool output)
{
	json_t *o = json_pack("{s:I,s:i,s:O,s:s}", "id", (json_int_t)p->id,
			      "pid", p->pid, "argv", p->argv, "status",
			      p->running ? "running" : "exited");

	if (!p->running)
		json_object_set_new(o, "result", step_json(&p->result));
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
	struct session *s = find(id, fn, ctx);
	json_t *arr;
	struct proc *p;

	if (!s)
		return;
	arr = json_array();
	for (p = s->procs; p; p = p->next)
		json_array_append_new(arr, proc_json(p, false));
	reply_json(fn, ctx, 200, json_pack("{s:o}", "processes", arr));
}

void session_proc_output(const char *id, uint32_t pid, session_reply_fn fn,
			 void *ctx)
{
	struct session *s = find(id, fn, ctx);
	struct proc *p;

	if (!s)
		return;
	p = find_proc(s, pid);
	if (!p) {
		reply_error(fn, ctx, 404, "not_found",
			    "no background process %u in sandbox '%s'", pid,
			    id);
		return;
	}
	reply_json(fn, ctx, 200, proc_json(p, true));
}

void session_proc_signal(const char *id, uint32_t pid, int sig,
			 session_reply_fn fn, void *ctx)
{
	struct session *s = find(id, fn, ctx);
	struct proc *p;
	char json[32];

	if (!s)
		return;
	p = find_proc(s, pid);
	if (!p) {
		reply_error(fn, ctx, 404, "not_found",
			    "no background process %u in sandbox '%s'", pid,
			    id);
		return;
	}
	if (sig <= 0 || sig >= 65) {
		reply_error(fn, ctx, 422, "unprocessable", "bad signal %d",
			    sig);
		return;
	}
	snprintf(json, sizeof(json), "{\"signal\":%d}", sig);
	sandbox_command(s->sb, SANDBOX_CMD_SIGNAL, p->id, json, NULL, 0);
	s->last_used_ns = now_ns();
	reply_json(fn, ctx, 200, proc_json(p, false));
}

/* ---- files ---- */

static void request_read(struct session *s, struct op *op)
{
	json_t *a =
		json_pack("{s:s,s:I,s:I}", "path", op->path, "offset",
			  (json_int_t)op->out.len, "max", (json_int_t)CHUNK);
	char *text = json_dumps(a, JSON_COMPACT);

	json_decref(a);
	sandbox_command(s->sb, SANDBOX_CMD_FILE_READ, op->id, text, NULL, 0);
	free(text);
}

static bool path_ok(const char *path, session_reply_fn fn, void *ctx)
{
	if (!*path || strlen(path) >= 4000) {
		reply_error(fn, ctx, 400, "bad_request", "bad path");
		return false;
	}
	return true;
}

void session_file_put(const char *id, const char *path, const char *data,
		      size_t len, session_reply_fn fn, void *ctx)
{
	struct session *s = find(id, fn, ctx);
	struct op *op;
	size_t off = 0;

	if (!s || !path_ok(path, fn, ctx))
		return;
	op = op_new(s, OP_PUT, fn, ctx);
	op->path = xstrdup(path);
	op->len = len;
	/* Every chunk is queued now: the first truncates and creates the
	 * parents, the others append. */
	do {
		size_t n = len - off < CHUNK ? len - off : CHUNK;
		json_t *a = json_pack("{s:s,s:b,s:b}", "path", path, "append",
				      off > 0, "mkdirs", off == 0);
		char *text = json_dumps(a, JSON_COMPACT);

		json_decref(a);
		sandbox_command(s->sb, SANDBOX_CMD_FILE_WRITE, op->id, text,
				data + off, n);
		free(text);
		op->pending++;
		off += n;
	} while (off < len);
}

void session_file_get(const char *id, const char *path, session_reply_fn fn,
		      void *ctx)
{
	struct session *s = find(id, fn, ctx);
	struct op *op;

	if (!s || !path_ok(path, fn, ctx))
		return;
	op = op_new(s, OP_GET, fn, ctx);
	op->path = xstrdup(path);
	request_read(s, op);
}

void session_file_delete(const char *id, const char *path, bool recursive,
			 session_reply_fn fn, void *ctx)
{
	struct session *s = find(id, fn, ctx);
	struct op *op;
	json_t *a;
	char *text;

	if (!s || !path_ok(path, fn, ctx))
		return;
	op = op_new(s, OP_DELETE, fn, ctx);
	op->path = xstrdup(path);
	a = json_pack("{s:s,s:b}", "path", path, "recursive", recursive);
	text = json_dumps(a, JSON_COMPACT);
	json_decref(a);
	sandbox_command(s->sb, SANDBOX_CMD_FILE_DELETE, op->id, text, NULL, 0);
	free(text);
}

void session_archive_put(const char *id, const char *dir, const char *data,
			 size_t len, session_reply_fn fn, void *ctx)
{
	struct session *s = find(id, fn, ctx);
	json_t *argv;
	struct op *op;

	if (!s || !path_ok(dir, fn, ctx))
		return;
	op = op_new(s, OP_ARCHIVE_PUT, fn, ctx);
	op->path = xstrdup(dir);
	/* GNU tar refuses absolute names and ".." by default; as the
	 * sandbox user inside the sandbox it can write nowhere else. */
	argv = json_pack("[s,s,s,s,s]", "/bin/sh", "-c",
			 "mkdir -p -- \"$1\" && exec tar -x -f - "
			 "--no-same-owner --no-same-permissions "
			 "--no-overwrite-dir -C \"$1\"",
			 "sh", dir);
	if (send_exec(s, op->id, argv, NULL, NULL, DEFAULT_EXEC_MS, 1 << 20,
		      data, len, true)) {
		drop_op(s, op);
		reply_error(fn, ctx, 410, "gone", "the sandbox is gone");
	}
	json_decref(argv);
}

void session_archive_get(const char *id, const char *dir, session_reply_fn fn,
			 void *ctx)
{
	struct session *s = find(id, fn, ctx);
	json_t *argv;
	struct op *op;

	if (!s || !path_ok(dir, fn, ctx))
		return;
	op = op_new(s, OP_ARCHIVE_GET, fn, ctx);
	op->path = xstrdup(dir);
	op->cap = S.lim.max_disk;
	argv = json_pack("[s,s,s,s,s]", "tar", "-c", "-f", "-", "-C");
	json_array_append_new(argv, json_string(dir));
	json_array_append_new(argv, json_string("."));
	if (send_exec(s, op->id, argv, NULL, NULL, DEFAULT_EXEC_MS, op->cap,
		      NULL, 0, true)) {
		drop_op(s, op);
		reply_error(fn, ctx, 410, "gone", "the sandbox is gone");
	}
	json_decref(argv);
}

/* ---- REPL ---- */

static void repl_exec(void *sctx, uint32_t *id, const char *const *args)
{
	struct session *s = sctx;
	json_t *argv = json_array();

	for (; *args; args++)
		json_array_append_new(argv, json_string(*args));
	*id = s->next_id++;
	send_exec(s, *id, argv, NULL, NULL, 0, 0, NULL, 0, false);
	json_decref(argv);
}

static void repl_stdin(void *sctx, uint32_t id, const char *data, size_t len)
{
	struct session *s = sctx;

	sandbox_command(s->sb, SANDBOX_CMD_STDIN, id, NULL, data, len);
}

static void repl_signal(void *sctx, uint32_t id, int sig)
{
	struct session *s = sctx;
	char json[32];

	snprintf(json, sizeof(json), "{\"signal\":%d}", sig);
	sandbox_command(s->sb, SANDBOX_CMD_SIGNAL, id, json, NULL, 0);
}

static const struct repl_host repl_host = {
	.exec = repl_exec, .stdin_write = repl_stdin, .signal = repl_signal};

void session_repl(const char *id, json_t *args, session_reply_fn fn, void *ctx)
{
	struct session *s = find(id, fn, ctx);

	if (!s)
		return;
	s->last_used_ns = now_ns();
	repl_run(&s->repls, &repl_host, s, S.loop, args, fn, ctx);
}

/*
 * Interfaces of a stateful sandbox, host side (see rpc.h): the process
 * of each interface, its load, the calls in flight and their timers, and
 * restarts.
 *
 * The interface process is hostile code: what it writes is parsed as
 * such. A frame that does not parse, or a line past the largest answer,
 * gets the process killed and started again, and the calls it held are
 * answered saying so; an answer for a call that is no longer waiting is
 * dropped.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/guest.h"
#include "base/log.h"
#include "base/loop.h"
#include "base/text.h"
#include "base/util.h"
#include "runtime/rpc.h"
#include "base/banned.h"

#define MAX_LINE (RPC_MAX_RESULT + (1u << 20))
#define ERR_TAIL 8192
#define STDIN_PIECE (1u << 20)

enum rpc_state {
	RPC_STARTING, /* the process runs the module */
	RPC_READY,
	RPC_FAILED, /* it could not be started again; a call retries */
};

struct rpc_call {
	struct rpc *r;
	uint64_t id;
	char *fn_name;
	char *text; /* the request line */
	size_t len;
	uint64_t timeout_ms;
	session_reply_fn fn;
	void *ctx;
	int timer_fd;
	bool sent;
	bool timed_out; /* answered; the process still runs it */
	struct rpc_call *next;
};

struct rpc {
	char name[64];
	json_t *load; /* the load request */
	unsigned workers;
	uint64_t timeout_ms, load_timeout_ms;
	const struct rpc_host *host;
	void *sctx;
	struct loop *loop;
	enum rpc_state state;
	bool alive;
	uint32_t proc_id;
	session_reply_fn load_fn; /* an explicit load waits */
	void *load_ctx;
	json_t *loaded; /* the process's "loaded" frame */
	char *load_error, *load_tb;
	char *fail_msg;	    /* RPC_FAILED: why */
	char *killed_why;   /* the process was killed by the host: why */
	bool dying;	    /* killed: calls wait for the next process */
	bool removing;	    /* unloaded or replaced: freed when it ends */
	struct buf line;    /* stdout, up to the next LF */
	struct buf errtail; /* the last of stderr */
	struct rpc_call *calls;
	uint64_t next_id;
	unsigned stuck; /* calls past their timeout holding a worker */
	unsigned restarts;
	int load_timer;
	struct rpc *next;
};

/* ---- replies ---- */

static void reply(session_reply_fn fn, void *ctx, unsigned status, json_t *body)
{
	struct session_reply r = {.status = status, .json = body};

	if (fn)
		fn(ctx, &r);
	else
		json_decref(body);
}

/* A JSON string of text, which may hold bytes that are not UTF-8. */
static json_t *text_json(const char *s, size_t len)
{
	struct buf b;
	json_t *j;

	buf_init(&b);
	utf8_repair(&b, s ? s : "", s ? len : 0);
	j = json_stringn(b.data ? b.data : "", b.len);
	buf_release(&b);
	return j;
}

/* {"ok": false, "code", "error", "traceback"} for a call. */
static void call_fail(session_reply_fn fn, void *ctx, const char *code,
		      const char *msg, const char *tb, bool restarted)
{
	json_t *o = json_pack("{s:b,s:s}", "ok", 0, "code", code);

	json_object_set_new(o, "error", text_json(msg, strlen(msg)));
	json_object_set_new(o, "traceback",
			    text_json(tb ? tb : "", tb ? strlen(tb) : 0));
	if (restarted)
		json_object_set_new(o, "restarted", json_true());
	reply(fn, ctx, 200, o);
}

static void error_reply(session_reply_fn fn, void *ctx, unsigned status,
			const char *code, const char *msg, const char *tb)
{
	json_t *e = json_pack("{s:s}", "code", code);

	json_object_set_new(e, "message", text_json(msg, strlen(msg)));
	if (tb)
		json_object_set_new(e, "traceback", text_json(tb, strlen(tb)));
	reply(fn, ctx, status, json_pack("{s:o}", "error", e));
}

/* ---- calls ---- */

static void call_timer_stop(struct rpc_call *c)
{
	if (c->timer_fd < 0)
		return;
	loop_del_fd(c->r->loop, c->timer_fd);
	fd_close(&c->timer_fd);
}

static void call_unlink(struct rpc_call *c)
{
	struct rpc_call **pp;

	for (pp = &c->r->calls; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
}

static void call_free(struct rpc_call *c)
{
	call_timer_stop(c);
	free(c->fn_name);
	free(c->text);
	free(c);
}

static void proc_write(struct rpc *r, const char *data, size_t len)
{
	while (len) {
		size_t n = len > STDIN_PIECE ? STDIN_PIECE : len;

		r->host->stdin_write(r->sctx, r->proc_id, data, n);
		data += n;
		len -= n;
	}
}

static void send_line(struct rpc *r, json_t *o)
{
	char *text = json_dumps(o, JSON_COMPACT);
	size_t n;

	json_decref(o);
	if (!text)
		return;
	n = strlen(text);
	text = xrealloc(text, n + 2);
	text[n] = '\n';
	proc_write(r, text, n + 1);
	free(text);
}

static bool fn_is_async(struct rpc *r, const char *fn)
{
	json_t *sig = json_object_get(
		json_object_get(json_object_get(r->loaded, "signatures"), fn),
		"async");

	return json_is_true(sig);
}

static void kill_proc(struct rpc *r, const char *why)
{
	if (!r->alive)
		return;
	if (why && !r->killed_why)
		r->killed_why = xstrdup(why);
	r->dying = true;
	r->host->signal(r->sctx, r->proc_id, SIGKILL);
}

static void on_call_timer(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct rpc_call *c = arg;
	struct rpc *r = c->r;
	char msg[256];

	call_timer_stop(c);
	snprintf(msg, sizeof(msg),
		 "TimeoutError: the call to '%s' did not finish within %llu "
		 "s",
		 c->fn_name, (unsigned long long)(c->timeout_ms / 1000));
	call_fail(c->fn, c->ctx, "timeout", msg, "", false);
	c->fn = NULL;
	c->timed_out = true;
	r->host->touch(r->sctx);
	if (!c->sent || !r->alive) {
		call_unlink(c);
		call_free(c);
		return;
	}
	if (fn_is_async(r, c->fn_name)) {
		/* A coroutine can be cancelled; its answer never comes. */
		send_line(r, json_pack("{s:s,s:I}", "op", "cancel", "id",
				       (json_int_t)c->id));
		call_unlink(c);
		call_free(c);
		return;
	}
	/* A thread cannot be stopped: it holds its worker until it returns.
	 * When every worker is held so, the process starts afresh. */
	if (++r->stuck >= r->workers)
		kill_proc(r, "every worker was held by a call past its "
			     "timeout");
}

static void call_send(struct rpc *r, struct rpc_call *c)
{
	c->sent = true;
	proc_write(r, c->text, c->len);
}

/* ---- the process ---- */

static void on_load_timer(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct rpc *r = arg;
	char msg[128];

	loop_del_fd(r->loop, r->load_timer);
	fd_close(&r->load_timer);
	snprintf(msg, sizeof(msg), "the module did not load within %llu s",
		 (unsigned long long)(r->load_timeout_ms / 1000));
	kill_proc(r, msg);
}

static void load_timer_stop(struct rpc *r)
{
	if (r->load_timer < 0)
		return;
	loop_del_fd(r->loop, r->load_timer);
	fd_close(&r->load_timer);
}

/* Starts the process and sends it the module. */
static void start(struct rpc *r)
{
	const char *argv[] = {"python3", "-c", guest_rpc_py, r->name, NULL};

	r->state = RPC_STARTING;
	r->dying = false;
	free(r->load_error);
	free(r->load_tb);
	free(r->killed_why);
	r->load_error = r->load_tb = r->killed_why = NULL;
	buf_reset(&r->line);
	buf_reset(&r->errtail);
	r->stuck = 0;
	if (r->host->exec(r->sctx, &r->proc_id, argv)) {
		r->alive = false;
		r->state = RPC_FAILED;
		free(r->fail_msg);
		r->fail_msg = xstrdup("the sandbox is gone");
		return;
	}
	r->alive = true;
	send_line(r, json_incref(r->load));
	r->load_timer = timer_fd_new(r->load_timeout_ms, false);
	if (r->load_timer >= 0)
		loop_add_fd(r->loop, r->load_timer, EPOLLIN, on_load_timer, r);
}

static void loaded(struct rpc *r, json_t *o)
{
	struct rpc_call *c;

	load_timer_stop(r);
	if (!json_is_true(json_object_get(o, "ok"))) {
		/* The process exits next; its end reports the failure. */
		const char *e = json_string_value(json_object_get(o, "error"));
		const char *tb =
			json_string_value(json_object_get(o, "traceback"));

		free(r->load_error);
		free(r->load_tb);
		r->load_error = xstrdup(e ? e : "the module failed to load");
		r->load_tb = xstrdup(tb ? tb : "");
		json_decref(o);
		return;
	}
	if (!json_is_array(json_object_get(o, "functions")) ||
	    !json_is_object(json_object_get(o, "schemas")) ||
	    !json_is_object(json_object_get(o, "signatures"))) {
		json_decref(o);
		kill_proc(r, "it sent a schema of the wrong shape");
		return;
	}
	json_object_del(o, "op");
	json_object_del(o, "ok");
	json_decref(r->loaded);
	r->loaded = o;
	r->state = RPC_READY;
	free(r->fail_msg);
	r->fail_msg = NULL;
	if (r->load_fn) {
		reply(r->load_fn, r->load_ctx, 200,
		      json_pack("{s:s,s:O,s:O}", "name", r->name, "functions",
				json_object_get(o, "functions"), "schemas",
				json_object_get(o, "schemas")));
		r->load_fn = NULL;
	}
	for (c = r->calls; c; c = c->next)
		if (!c->sent)
			call_send(r, c);
}

/* The frame's result as the process wrote it, when the frame has the
 * exact shape guest/rpc.py writes: {"op":"result","id":N,"ok":true,
 * "result":VALUE}. The frame has parsed, so VALUE is JSON; passing its
 * text on keeps numbers as written (shortest floats, every digit). */
static bool raw_result(const char *text, size_t len, const char **v,
		       size_t *vlen)
{
	static const char head[] = "{\"op\":\"result\",\"id\":";
	static const char mid[] = ",\"ok\":true,\"result\":";
	size_t i = sizeof(head) - 1;

	if (len < i || memcmp(text, head, i))
		return false;
	while (i < len && text[i] >= '0' && text[i] <= '9')
		i++;
	if (len - i < sizeof(mid) - 1 + 2 ||
	    memcmp(text + i, mid, sizeof(mid) - 1))
		return false;
	i += sizeof(mid) - 1;
	if (text[len - 1] != '}')
		return false;
	*v = text + i;
	*vlen = len - 1 - i;
	return true;
}

static void result(struct rpc *r, json_t *o, const char *text, size_t len)
{
	json_t *idj = json_object_get(o, "id");
	struct rpc_call *c;

	for (c = r->calls; c; c = c->next)
		if (json_is_integer(idj) &&
		    (uint64_t)json_integer_value(idj) == c->id && c->sent)
			break;
	if (!c) {
		json_decref(o);
		return;
	}
	call_unlink(c);
	if (c->timed_out) {
		if (r->stuck)
			r->stuck--;
		json_decref(o);
		call_free(c);
		return;
	}
	json_object_del(o, "op");
	json_object_del(o, "id");
	if (!json_is_true(json_object_get(o, "ok"))) {
		json_object_set_new(o, "ok", json_false());
		if (!json_is_string(json_object_get(o, "error")))
			json_object_set_new(o, "error", json_string(""));
		if (!json_is_string(json_object_get(o, "traceback")))
			json_object_set_new(o, "traceback", json_string(""));
		if (!json_is_string(json_object_get(o, "code")))
			json_object_set_new(o, "code",
					    json_string("exception"));
	} else {
		const char *v;
		size_t vlen;

		if (raw_result(text, len, &v, &vlen) && c->fn) {
			struct buf b;
			struct session_reply rep = {.status = 200};

			buf_init(&b);
			buf_adds(&b, "{\"ok\":true,\"result\":");
			buf_add(&b, v, vlen);
			buf_adds(&b, "}");
			rep.raw = b.data;
			rep.raw_len = b.len;
			r->host->touch(r->sctx);
			c->fn(c->ctx, &rep);
			buf_release(&b);
			json_decref(o);
			c->fn = NULL;
			call_free(c);
			return;
		}
		if (!json_object_get(o, "result"))
			json_object_set_new(o, "result", json_null());
	}
	r->host->touch(r->sctx);
	reply(c->fn, c->ctx, 200, o);
	c->fn = NULL;
	call_free(c);
}

static void handle_frame(struct rpc *r, const char *text, size_t len)
{
	json_t *o = json_loadb(text, len, JSON_ALLOW_NUL, NULL);
	const char *op = json_string_value(json_object_get(o, "op"));

	if (!json_is_object(o) || !op) {
		json_decref(o);
		kill_proc(r, "it sent an answer that does not parse");
		return;
	}
	if (!strcmp(op, "loaded") && r->state == RPC_STARTING)
		loaded(r, o);
	else if (!strcmp(op, "result"))
		result(r, o, text, len);
	else
		json_decref(o);
}

static struct rpc *find_proc(struct rpc *list, uint32_t id)
{
	for (; list; list = list->next)
		if (list->alive && list->proc_id == id)
			return list;
	return NULL;
}

bool rpc_output(struct rpc *list, uint32_t id, int stream, const char *data,
		size_t len)
{
	struct rpc *r = find_proc(list, id);

	if (!r)
		return false;
	if (stream != 1) {
		/* The module's own output: the last of it explains a crash. */
		buf_add(&r->errtail, data, len);
		if (r->errtail.len > ERR_TAIL) {
			size_t drop = r->errtail.len - ERR_TAIL;

			memmove(r->errtail.data, r->errtail.data + drop,
				ERR_TAIL);
			r->errtail.len = ERR_TAIL;
			r->errtail.data[r->errtail.len] = '\0';
		}
		return true;
	}
	if (r->line.len + len > MAX_LINE) {
		buf_reset(&r->line);
		kill_proc(r, "it sent an answer larger than the largest "
			     "allowed");
		return true;
	}
	buf_add(&r->line, data, len);
	for (;;) {
		char *nl = memchr(r->line.data, '\n', r->line.len);
		size_t n;

		if (!nl)
			break;
		n = (size_t)(nl - r->line.data);
		if (n && r->line.data[0] == '\x1e' && r->alive)
			handle_frame(r, r->line.data + 1, n - 1);
		memmove(r->line.data, nl + 1, r->line.len - n - 1);
		r->line.len -= n + 1;
		r->line.data[r->line.len] = '\0';
	}
	return true;
}

static void unlink_rpc(struct rpc **list, struct rpc *r)
{
	struct rpc **pp;

	for (pp = list; *pp; pp = &(*pp)->next)
		if (*pp == r) {
			*pp = r->next;
			return;
		}
}

/* Answers every call still waiting on r (and forgets the rest). */
static void fail_calls(struct rpc *r, bool sent_only, const char *code,
		       const char *msg, const char *tb, bool restarted)
{
	struct rpc_call **pp = &r->calls;

	while (*pp) {
		struct rpc_call *c = *pp;

		if (sent_only && !c->sent) {
			pp = &c->next;
			continue;
		}
		*pp = c->next;
		if (!c->timed_out)
			call_fail(c->fn, c->ctx, code, msg, tb, restarted);
		call_free(c);
	}
}

static void rpc_free(struct rpc *r)
{
	load_timer_stop(r);
	json_decref(r->load);
	json_decref(r->loaded);
	free(r->load_error);
	free(r->load_tb);
	free(r->fail_msg);
	free(r->killed_why);
	buf_release(&r->line);
	buf_release(&r->errtail);
	free(r);
}

static void describe_end(struct rpc *r, const struct sandbox_step_result *res,
			 char *out, size_t n)
{
	if (r->killed_why)
		snprintf(out, n, "it was stopped: %s", r->killed_why);
	else if (res->signal)
		snprintf(out, n, "it was killed by signal %d%s", res->signal,
			 res->oom_killed ? " (out of memory)" : "");
	else
		snprintf(out, n, "it exited with status %d", res->exit_code);
}

bool rpc_process_ended(struct rpc **list, uint32_t id,
		       const struct sandbox_step_result *res)
{
	struct rpc *r = find_proc(*list, id);
	char how[320];
	char *msg;
	const char *tb;

	if (!r)
		return false;
	r->alive = false;
	load_timer_stop(r);
	describe_end(r, res, how, sizeof(how));
	tb = r->errtail.data ? r->errtail.data : "";
	if (r->removing) {
		fail_calls(r, false, "gone", "the interface was removed", "",
			   false);
		unlink_rpc(list, r);
		rpc_free(r);
		return true;
	}
	if (r->state == RPC_STARTING) {
		if (r->load_tb)
			tb = r->load_tb;
		if (r->load_fn) {
			/* A load the client waits for: no interface. */
			msg = r->load_error
				      ? xstrdup(r->load_error)
				      : xstrfmt("the interface process ended "
						"while loading: %s",
						how);
			error_reply(r->load_fn, r->load_ctx, 422, "load_failed",
				    msg, tb);
			r->load_fn = NULL;
			fail_calls(r, false, "load_failed", msg, tb, false);
			free(msg);
			unlink_rpc(list, r);
			rpc_free(r);
			return true;
		}
		msg = xstrfmt("the interface '%s' could not be started again: "
			      "%s",
			      r->name, r->load_error ? r->load_error : how);
		fail_calls(r, false, "crashed", msg, tb, false);
		r->state = RPC_FAILED;
		free(r->fail_msg);
		r->fail_msg = msg;
		return true;
	}
	/* It crashed while serving: its calls are lost, it starts again. */
	msg = xstrfmt("the interface '%s' crashed during the call (%s); it "
		      "was restarted",
		      r->name, how);
	r->restarts++;
	fail_calls(r, true, "crashed", msg, tb, true);
	free(msg);
	start(r);
	return true;
}

bool rpc_busy(const struct rpc *list)
{
	for (; list; list = list->next) {
		const struct rpc_call *c;

		if (list->load_fn)
			return true;
		for (c = list->calls; c; c = c->next)
			if (!c->timed_out)
				return true;
	}
	return false;
}

void rpc_free_all(struct rpc *list, const char *why)
{
	char msg[256];

	snprintf(msg, sizeof(msg), "the sandbox is gone: %s", why);
	while (list) {
		struct rpc *r = list;

		list = r->next;
		if (r->load_fn)
			error_reply(r->load_fn, r->load_ctx, 410, "gone", msg,
				    NULL);
		fail_calls(r, false, "gone", msg, "", false);
		rpc_free(r);
	}
}

static struct rpc *find(struct rpc *list, const char *name)
{
	for (; list; list = list->next)
		if (!list->removing && !strcmp(list->name, name))
			return list;
	return NULL;
}

/* ---- requests ---- */

static uint64_t get_ms(json_t *args, const char *key, uint64_t def)
{
	json_t *v = json_object_get(args, key);

	if (json_is_integer(v) && json_integer_value(v) > 0)
		return (uint64_t)json_integer_value(v) * 1000;
	if (json_is_real(v) && json_real_value(v) > 0)
		return (uint64_t)(json_real_value(v) * 1000.0);
	return def;
}

void rpc_load(struct rpc **list, const struct rpc_host *host, void *sctx,
	      struct loop *loop, json_t *args, session_reply_fn fn, void *ctx)
{
	const char *name = json_string_value(json_object_get(args, "name"));
	json_t *w = json_object_get(args, "workers");
	struct rpc *old, *r;

	if (!name || strlen(name) >= sizeof(r->name)) {
		error_reply(fn, ctx, 422, "unprocessable",
			    "'name' must be an interface name", NULL);
		return;
	}
	old = find(*list, name);
	if (old) {
		/* Replaced: what it holds is answered, it goes when it
		 * ends. */
		old->removing = true;
		if (old->load_fn) {
			error_reply(old->load_fn, old->load_ctx, 409,
				    "conflict",
				    "the interface was replaced by another "
				    "load",
				    NULL);
			old->load_fn = NULL;
		}
		fail_calls(old, false, "gone",
			   "the interface was replaced by another load", "",
			   false);
		if (old->alive)
			kill_proc(old, "replaced");
		else {
			unlink_rpc(list, old);
			rpc_free(old);
		}
	}
	r = xcalloc(1, sizeof(*r));
	str_copy(r->name, sizeof(r->name), name);
	r->host = host;
	r->sctx = sctx;
	r->loop = loop;
	r->load_timer = -1;
	r->next_id = 1;
	buf_init(&r->line);
	buf_init(&r->errtail);
	r->workers = json_is_integer(w) && json_integer_value(w) > 0
			     ? (unsigned)json_integer_value(w)
			     : RPC_DEFAULT_WORKERS;
	r->timeout_ms = get_ms(args, "timeout_s", RPC_DEFAULT_TIMEOUT_MS);
	r->load_timeout_ms =
		get_ms(args, "load_timeout_s", RPC_DEFAULT_TIMEOUT_MS);
	r->load = json_pack("{s:s,s:O,s:O,s:I,s:I}", "op", "load", "source",
			    json_object_get(args, "source")
				    ? json_object_get(args, "source")
				    : json_null(),
			    "path",
			    json_object_get(args, "path")
				    ? json_object_get(args, "path")
				    : json_null(),
			    "workers", (json_int_t)r->workers, "max_result",
			    (json_int_t)RPC_MAX_RESULT);
	r->load_fn = fn;
	r->load_ctx = ctx;
	r->next = *list;
	*list = r;
	start(r);
	if (r->state == RPC_FAILED) {
		error_reply(fn, ctx, 410, "gone", r->fail_msg, NULL);
		unlink_rpc(list, r);
		rpc_free(r);
	}
}

void rpc_schema(struct rpc *list, const char *name, bool full,
		session_reply_fn fn, void *ctx)
{
	struct rpc *r = find(list, name);
	json_t *o;

	if (!r || (!r->loaded && r->load_fn)) {
		error_reply(fn, ctx, 404, "not_found",
			    r ? "the interface is still loading"
			      : "no interface of that name in this sandbox",
			    NULL);
		return;
	}
	if (!r->loaded) {
		error_reply(fn, ctx, 503, "unavailable",
			    r->fail_msg ? r->fail_msg
					: "the interface is starting",
			    NULL);
		return;
	}
	o = json_pack("{s:O,s:O}", "functions",
		      json_object_get(r->loaded, "functions"), "schemas",
		      json_object_get(r->loaded, "schemas"));
	if (full) {
		json_object_set_new(o, "name", json_string(r->name));
		json_object_set(o, "signatures",
				json_object_get(r->loaded, "signatures"));
	}
	reply(fn, ctx, 200, o);
}

json_t *rpc_list(struct rpc *list)
{
	json_t *arr = json_array();
	static const char *const states[] = {"loading", "ready", "failed"};

	for (; list; list = list->next) {
		struct rpc_call *c;
		unsigned inflight = 0;
		json_t *o;

		if (list->removing)
			continue;
		for (c = list->calls; c; c = c->next)
			inflight += !c->timed_out;
		o = json_pack("{s:s,s:s,s:I,s:I,s:I}", "name", list->name,
			      "state",
			      list->load_fn ? "loading" : states[list->state],
			      "workers", (json_int_t)list->workers, "restarts",
			      (json_int_t)list->restarts, "calls_in_flight",
			      (json_int_t)inflight);
		json_object_set(o, "functions",
				list->loaded ? json_object_get(list->loaded,
							       "functions")
					     : json_null());
		json_array_append_new(arr, o);
	}
	return json_pack("{s:o}", "interfaces", arr);
}

void rpc_call(struct rpc **list, const char *name, json_t *call,
	      session_reply_fn fn, void *ctx)
{
	struct rpc *r = find(*list, name);
	struct rpc_call *c, **tail;
	const char *fname = json_string_value(json_object_get(call, "fn"));
	json_t *req;
	char *text;
	size_t n;

	if (!r) {
		json_t *o =
			json_pack("{s:b,s:s}", "ok", 0, "code", "not_found");

		json_object_set_new(o, "error",
				    json_sprintf("no interface '%s' in this "
						 "sandbox",
						 name));
		reply(fn, ctx, 404, o);
		return;
	}
	c = xcalloc(1, sizeof(*c));
	c->r = r;
	c->id = r->next_id++;
	c->fn_name = xstrdup(fname ? fname : "");
	c->fn = fn;
	c->ctx = ctx;
	c->timer_fd = -1;
	c->timeout_ms = get_ms(call, "timeout_s", r->timeout_ms);
	req = json_pack("{s:s,s:I,s:s,s:O,s:O}", "op", "call", "id",
			(json_int_t)c->id, "fn", c->fn_name, "args",
			json_object_get(call, "args"), "kwargs",
			json_object_get(call, "kwargs"));
	text = req ? json_dumps(req, JSON_COMPACT) : NULL;
	json_decref(req);
	if (!text) {
		call_fail(fn, ctx, "bad_request",
			  "the call's arguments cannot be encoded", "", false);
		call_free(c);
		return;
	}
	n = strlen(text);
	c->text = xrealloc(text, n + 2);
	c->text[n] = '\n';
	c->text[n + 1] = '\0';
	c->len = n + 1;
	for (tail = &r->calls; *tail; tail = &(*tail)->next)
		;
	*tail = c;
	c->timer_fd = timer_fd_new(c->timeout_ms, false);
	if (c->timer_fd >= 0)
		loop_add_fd(r->loop, c->timer_fd, EPOLLIN, on_call_timer, c);
	r->host->touch(r->sctx);
	if (r->state == RPC_READY && r->alive && !r->dying)
		call_send(r, c);
	else if (r->state == RPC_FAILED && !r->alive) {
		start(r); /* try again; the call waits for the load */
		if (r->state == RPC_FAILED)
			fail_calls(r, false, "crashed", r->fail_msg, "", false);
	}
}

void rpc_unload(struct rpc **list, const char *name, session_reply_fn fn,
		void *ctx)
{
	struct rpc *r = find(*list, name);

	if (!r) {
		error_reply(fn, ctx, 404, "not_found",
			    "no interface of that name in this sandbox", NULL);
		return;
	}
	r->removing = true;
	if (r->load_fn) {
		error_reply(r->load_fn, r->load_ctx, 409, "conflict",
			    "the interface was removed while it loaded", NULL);
		r->load_fn = NULL;
	}
	fail_calls(r, false, "gone", "the interface was removed", "", false);
	if (r->alive)
		kill_proc(r, "removed");
	else {
		unlink_rpc(list, r);
		rpc_free(r);
	}
	reply(fn, ctx, 200, json_pack("{s:s,s:b}", "name", name, "deleted", 1));
}

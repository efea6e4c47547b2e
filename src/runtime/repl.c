/*
 * REPL contexts, host side: the queue of cells, the driver's reply
 * stream, timeouts with interrupt-then-restart.
 *
 * The driver's replies are JSON from Python's json module, which writes a
 * string holding bytes that were not UTF-8 (surrogate escapes) with lone
 * surrogates ("\udcff") that strict JSON parsers refuse: those become
 * U+FFFD. A reply that still does not parse fails its cell with
 * sandbox_error rather than being dropped (which left the cell waiting
 * for its timeout and then lost the REPL's state).
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
#include "base/loop.h"
#include "base/text.h"
#include "base/util.h"
#include "runtime/limits.h"
#include "runtime/repl.h"
#include "base/banned.h"

#define DEFAULT_TIMEOUT_MS 30000
#define MAX_TIMEOUT_MS 3600000
#define GRACE_MS 2000
#define MAX_OUTPUT (1u << 20)
#define MAX_LINE (8u << 20)

struct cell {
	char *code;
	char *in; /* the cell's stdin, read to its end and then EOF */
	size_t inlen;
	uint64_t timeout_ms;
	session_reply_fn fn;
	void *ctx;
	struct cell *next;
};

struct repl {
	char name[64];
	char lang[8];
	const struct repl_host *host;
	void *sctx;
	struct loop *loop;
	uint32_t proc_id;
	bool alive;
	bool lost_state; /* the next reply says restarted */
	struct buf line;
	unsigned count;
	struct cell *queue, *current;
	int timer_fd;
	bool interrupted, killing;
	struct repl *next;
};

static void reply_error(session_reply_fn fn, void *ctx, unsigned status,
			const char *code, const char *msg)
{
	struct session_reply r = {.status = status,
				  .json = json_pack("{s:{s:s,s:s}}", "error",
						    "code", code, "message",
						    msg)};

	if (fn)
		fn(ctx, &r);
	else
		json_decref(r.json);
}

static void cell_free(struct cell *c)
{
	free(c->code);
	free(c->in);
	free(c);
}

static void timer_stop(struct repl *r)
{
	if (r->timer_fd < 0)
		return;
	loop_del_fd(r->loop, r->timer_fd);
	fd_close(&r->timer_fd);
}

static void on_timer(struct loop *loop, int fd, uint32_t events, void *arg);

static void timer_start(struct repl *r, uint64_t ms)
{
	timer_stop(r);
	r->timer_fd = timer_fd_new(ms, false);
	if (r->timer_fd >= 0)
		loop_add_fd(r->loop, r->timer_fd, EPOLLIN, on_timer, r);
}

/* Sends the finished cell's reply and starts the next one. */
static void finish_cell(struct repl *r, json_t *o)
{
	struct cell *c = r->current;
	struct session_reply rep = {.status = 200, .json = o};

	r->current = NULL;
	timer_stop(r);
	json_object_set_new(o, "context", json_string(r->name));
	json_object_set_new(o, "language", json_string(r->lang));
	json_object_set_new(o, "execution_count", json_integer(r->count));
	if (!json_object_get(o, "restarted"))
		json_object_set_new(o, "restarted",
				    json_boolean(r->lost_state));
	if (json_is_true(json_object_get(o, "restarted")))
		r->count = 0;
	r->lost_state = false;
	r->interrupted = r->killing = false;
	if (c->fn)
		c->fn(c->ctx, &rep);
	else
		json_decref(o);
	cell_free(c);
}

static void pump(struct repl *r)
{
	json_t *req;
	char *text;

	if (r->current || !r->queue)
		return;
	if (!r->alive) {
		const char *argv[] = {"python3", "-c", guest_repl_py, r->lang,
				      NULL};

		r->host->exec(r->sctx, &r->proc_id, argv);
		r->alive = true;
		buf_reset(&r->line);
	}
	r->current = r->queue;
	r->queue = r->current->next;
	r->count++;
	req = json_pack("{s:s,s:s%,s:i,s:i}", "code", r->current->code, "stdin",
			r->current->in ? r->current->in : "", r->current->inlen,
			"n", (int)r->count, "max_output", (int)MAX_OUTPUT);
	text = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	if (text) {
		size_t n = strlen(text);

		text = xrealloc(text, n + 2);
		text[n] = '\n';
		text[n + 1] = '\0';
		r->host->stdin_write(r->sctx, r->proc_id, text, n + 1);
		free(text);
	}
	timer_start(r, r->current->timeout_ms);
}

static void on_timer(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct repl *r = arg;

	timer_stop(r);
	if (!r->current || !r->alive)
		return;
	if (!r->interrupted) {
		/* First ask nicely: KeyboardInterrupt keeps the state. */
		r->interrupted = true;
		r->host->signal(r->sctx, r->proc_id, SIGINT);
		timer_start(r, GRACE_MS);
		return;
	}
	r->killing = true;
	r->host->signal(r->sctx, r->proc_id, SIGKILL);
}

static bool is_hex4(const char *p, size_t left, unsigned *v)
{
	unsigned n = 0;
	size_t i;

	if (left < 4)
		return false;
	for (i = 0; i < 4; i++) {
		char c = p[i];

		n <<= 4;
		if (c >= '0' && c <= '9')
			n |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			n |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			n |= (unsigned)(c - 'A' + 10);
		else
			return false;
	}
	*v = n;
	return true;
}

/* Copies a JSON text, writing each lone surrogate escape as \ufffd. */
static void fix_surrogates(struct buf *out, const char *p, size_t len)
{
	size_t i = 0;

	while (i < len) {
		unsigned v, w;

		if (p[i] != '\\' || i + 1 >= len) {
			buf_add(out, p + i, 1);
			i++;
			continue;
		}
		if (p[i + 1] != 'u' || !is_hex4(p + i + 2, len - i - 2, &v)) {
			buf_add(out, p + i, 2); /* any other escape, whole */
			i += 2;
			continue;
		}
		if (v >= 0xd800 && v <= 0xdbff && i + 12 <= len &&
		    p[i + 6] == '\\' && p[i + 7] == 'u' &&
		    is_hex4(p + i + 8, len - i - 8, &w) && w >= 0xdc00 &&
		    w <= 0xdfff) {
			buf_add(out, p + i, 12); /* a pair */
			i += 12;
		} else if (v >= 0xd800 && v <= 0xdfff) {
			buf_add(out, "\\ufffd", 6);
			i += 6;
		} else {
			buf_add(out, p + i, 6);
			i += 6;
		}
	}
}

/* A reply that does not parse: the cell fails, the driver lives on. */
static void fail_cell(struct repl *r)
{
	struct cell *c = r->current;

	r->current = NULL;
	timer_stop(r);
	r->interrupted = r->killing = false;
	reply_error(c->fn, c->ctx, 500, "sandbox_error",
		    "the REPL driver sent a reply that does not parse");
	cell_free(c);
}

static void handle_line(struct repl *r, const char *line, size_t len)
{
	json_t *o = json_loadb(line, len, 0, NULL);

	if (!o) {
		struct buf fixed;

		buf_init(&fixed);
		fix_surrogates(&fixed, line, len);
		o = json_loadb(fixed.data ? fixed.data : "", fixed.len, 0,
			       NULL);
		buf_release(&fixed);
	}
	if (!json_is_object(o)) {
		json_decref(o);
		if (r->current) {
			fail_cell(r);
			pump(r);
		}
		return;
	}
	if (json_is_true(json_object_get(o, "ready")) || !r->current) {
		json_decref(o);
		return;
	}
	json_object_del(o, "n");
	if (r->interrupted)
		json_object_set_new(o, "status", json_string("timeout"));
	finish_cell(r, o);
	pump(r);
}

bool repl_output(struct repl *list, uint32_t id, int stream, const char *data,
		 size_t len)
{
	struct repl *r;

	for (r = list; r; r = r->next)
		if (r->alive && r->proc_id == id)
			break;
	if (!r)
		return false;
	if (stream != 1)
		return true; /* the driver's own stderr: nothing to report */
	if (r->line.len + len > MAX_LINE) {
		buf_reset(&r->line); /* a runaway line: drop it */
		return true;
	}
	buf_add(&r->line, data, len);
	for (;;) {
		char *nl = memchr(r->line.data, '\n', r->line.len);
		size_t n;

		if (!nl)
			break;
		n = (size_t)(nl - r->line.data);
		if (n && r->line.data[0] == '\x1e')
			handle_line(r, r->line.data + 1, n - 1);
		memmove(r->line.data, nl + 1, r->line.len - n - 1);
		r->line.len -= n + 1;
		r->line.data[r->line.len] = '\0';
	}
	return true;
}

void repl_process_ended(struct repl *list, uint32_t id,
			const struct sandbox_step_result *res)
{
	struct repl *r;
	char msg[256];
	json_t *o;

	for (r = list; r; r = r->next)
		if (r->alive && r->proc_id == id)
			break;
	if (!r)
		return;
	r->alive = false;
	r->lost_state = true;
	if (!r->current)
		return;
	if (r->killing) {
		o = json_pack(
			"{s:s,s:s,s:s,s:n,s:b,s:{s:s,s:s,s:s}}", "status",
			"timeout", "stdout", "", "stderr", "", "result",
			"restarted", 1, "error", "ename", "KeyboardInterrupt",
			"evalue",
			"the cell did not stop when interrupted; the REPL "
			"was restarted and its state is lost",
			"traceback", "");
	} else {
		if (res->signal)
			snprintf(msg, sizeof(msg),
				 "the %s interpreter was killed by signal %d "
				 "during the cell%s; its state is lost",
				 r->lang, res->signal,
				 res->oom_killed ? " (out of memory)" : "");
		else
			snprintf(msg, sizeof(msg),
				 "the %s interpreter exited with status %d "
				 "during the cell; its state is lost",
				 r->lang, res->exit_code);
		o = json_pack("{s:s,s:s,s:s,s:n,s:b,s:{s:s,s:s,s:s}}", "status",
			      "error", "stdout", "", "stderr", "", "result",
			      "restarted", 1, "error", "ename",
			      "InterpreterExited", "evalue", msg, "traceback",
			      "");
	}
	finish_cell(r, o);
	pump(r); /* a queued cell starts a fresh driver */
}

bool repl_busy(const struct repl *list)
{
	for (; list; list = list->next)
		if (list->current || list->queue)
			return true;
	return false;
}

void repl_free_all(struct repl *list, const char *why)
{
	char msg[256];

	snprintf(msg, sizeof(msg), "the sandbox is gone: %s", why);
	while (list) {
		struct repl *r = list;

		list = r->next;
		timer_stop(r);
		if (r->current) {
			reply_error(r->current->fn, r->current->ctx, 410,
				    "gone", msg);
			cell_free(r->current);
		}
		while (r->queue) {
			struct cell *c = r->queue;

			r->queue = c->next;
			reply_error(c->fn, c->ctx, 410, "gone", msg);
			cell_free(c);
		}
		buf_release(&r->line);
		free(r);
	}
}

void repl_run(struct repl **list, const struct repl_host *host, void *sctx,
	      struct loop *loop, json_t *args, session_reply_fn fn, void *ctx)
{
	static const char *const known[] = {"language", "code", "context",
					    "timeout_s", "stdin"};
	const char *lang, *name = "default", *code, *key;
	json_t *v, *in;
	size_t i;
	struct repl *r;
	struct cell *c, **tail;
	double secs = DEFAULT_TIMEOUT_MS / 1000.0;

	if (!json_is_object(args)) {
		reply_error(fn, ctx, 422, "unprocessable",
			    "the body must be a JSON object");
		return;
	}
	/* A misspelt field ("timeout" for "timeout_s") is refused, not
	 * ignored, as on every other route. */
	json_object_foreach(args, key, v)
	{
		char text[160];

		for (i = 0; i < ARRAY_SIZE(known); i++)
			if (!strcmp(key, known[i]))
				break;
		if (i == ARRAY_SIZE(known)) {
			snprintf(text, sizeof(text),
				 "unknown field '%.64s' (a cell takes: "
				 "language, code, context, timeout_s, stdin)",
				 key);
			reply_error(fn, ctx, 422, "unprocessable", text);
			return;
		}
	}
	in = json_object_get(args, "stdin");
	if (in && !json_is_null(in) && !json_is_string(in)) {
		reply_error(fn, ctx, 422, "unprocessable",
			    "'stdin' must be a string");
		return;
	}
	lang = json_object_get(args, "language")
		       ? json_string_value(json_object_get(args, "language"))
		       : "python";
	code = json_string_value(json_object_get(args, "code"));
	if (!lang || (strcmp(lang, "python") && strcmp(lang, "bash"))) {
		reply_error(fn, ctx, 422, "unprocessable",
			    "'language' must be \"python\" or \"bash\"");
		return;
	}
	if (!code) {
		reply_error(fn, ctx, 422, "unprocessable",
			    "'code' must be a string");
		return;
	}
	v = json_object_get(args, "context");
	if (v && !json_is_null(v)) {
		name = json_string_value(v);
		if (!name || !*name || strlen(name) >= 64) {
			reply_error(fn, ctx, 422, "unprocessable",
				    "'context' must be a name of 1 to 63 "
				    "characters");
			return;
		}
	}
	v = json_object_get(args, "timeout_s");
	if (v && !json_is_null(v)) {
		/* The shared wall-time rule, at most MAX_TIMEOUT_MS. */
		const struct limits_field f = {"timeout_s", LIMITS_WALL, 1000,
					       true};
		uint64_t ms = 0;
		char msg[128], text[160];

		if (limits_parse(limits_current(), &f, v, MAX_TIMEOUT_MS, &ms,
				 msg, sizeof(msg))) {
			snprintf(text, sizeof(text), "timeout_s: %s", msg);
			reply_error(fn, ctx, 422, "unprocessable", text);
			return;
		}
		secs = (double)ms / 1000.0;
	}
	for (r = *list; r; r = r->next)
		if (!strcmp(r->name, name) && !strcmp(r->lang, lang))
			break;
	if (!r) {
		r = xcalloc(1, sizeof(*r));
		str_copy(r->name, sizeof(r->name), name);
		str_copy(r->lang, sizeof(r->lang), lang);
		r->host = host;
		r->sctx = sctx;
		r->loop = loop;
		r->timer_fd = -1;
		buf_init(&r->line);
		r->next = *list;
		*list = r;
	}
	c = xcalloc(1, sizeof(*c));
	c->code = xstrdup(code);
	if (json_is_string(in) && json_string_length(in)) {
		c->inlen = json_string_length(in);
		c->in = xmalloc(c->inlen + 1);
		memcpy(c->in, json_string_value(in), c->inlen + 1);
	}
	c->timeout_ms = (uint64_t)(secs * 1000);
	c->fn = fn;
	c->ctx = ctx;
	for (tail = &r->queue; *tail; tail = &(*tail)->next)
		;
	*tail = c;
	pump(r);
}

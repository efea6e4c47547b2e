/*
 * Stateful sandboxes over HTTP: everything under /v1/sandboxes. Each route
 * parses what it can on the MHD thread, then posts the work to the runner's
 * thread, where the session table lives, and replies from there.
 *
 *   POST   /v1/sandboxes                       create
 *   GET    /v1/sandboxes[?label=k=v]           list
 *   GET    /v1/sandboxes/{id}                  describe
 *   DELETE /v1/sandboxes/{id}                  delete
 *   POST   /v1/sandboxes/{id}/exec             run (JSON, or NDJSON stream)
 *   GET    /v1/sandboxes/{id}/processes        background processes
 *   GET    /v1/sandboxes/{id}/processes/{n}    one, with its output so far
 *   POST   /v1/sandboxes/{id}/processes/{n}/signal
 *   PUT|GET|DELETE /v1/sandboxes/{id}/files/{path}   (or ?path=/abs)
 *   PUT|GET /v1/sandboxes/{id}/archive?path=dir      tar in and out
 *   POST   /v1/sandboxes/{id}/repl             a REPL cell
 *   .../v1/sandboxes/{id}/rpc[/...]            interfaces (server/rpc.c)
 *   ANY    /v1/sandboxes/{id}/ports/{port}/{path}  a server inside
 *                                              (server/ports.c)
 *
 * A path is bytes: percent-encoded in the URL, or given as ?path_b64= (its
 * bytes in standard base64) when it is not UTF-8. File reads and archives
 * go out as chunked replies, a chunk at a time: the next is asked of the
 * sandbox only once the client's connection has taken the last. One that
 * fails after its first bytes ends without the terminating chunk (the
 * connection is cut), so the client sees a truncated body.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/loop.h"
#include "base/text.h"
#include "base/util.h"
#include "runtime/session.h"
#include "server/gateway.h"
#include "server/internal.h"
#include "server/request.h"
#include "server/resources.h"
#include "server/rpc.h"
#include "base/banned.h"

enum action {
	A_CREATE,
	A_LIST,
	A_GET,
	A_DELETE,
	A_EXEC,
	A_PROCS,
	A_PROC,
	A_PROC_SIGNAL,
	A_FILE_PUT,
	A_FILE_GET,
	A_FILE_DELETE,
	A_ARCHIVE_PUT,
	A_ARCHIVE_GET,
	A_REPL,
};

struct call {
	enum action action;
	struct request *req;
	char id[64];
	char *path;
	char *label;
	json_t *args;
	struct resources res; /* create: models and GPUs */
	uint32_t num;
	int sig;
	bool recursive;
	bool stream;
	bool stream_started;
	int sock; /* streams: our dup of the client's socket, watched */
	bool watching;
	/* transfers out: a chunk is with the client's connection, and the
	 * call is freed when it is taken (the final reply came already) */
	bool draining;
	bool finished;
	/* uploads: the body comes a piece at a time (upload_data()); the
	 * call lives until it is answered and the HTTP layer is done with
	 * it */
	struct piece *piece; /* the next piece, until the session takes it */
	bool up_ready;	     /* the session takes a piece now */
	bool up_open;	     /* pieces (or the end) may still come */
	bool replied;
};

/* A piece of an upload's body, on its way to the runner's thread. */
struct piece {
	struct call *c;
	char *data;
	size_t len;
	bool last;
};

static void piece_free(struct piece *p)
{
	if (p) {
		free(p->data);
		free(p);
	}
}

static void unwatch(struct call *c)
{
	if (c->watching)
		loop_del_fd(runner_loop(server_state.runner), c->sock);
	c->watching = false;
	fd_close(&c->sock);
}

static void call_free(struct call *c)
{
	unwatch(c);
	piece_free(c->piece);
	free(c->path);
	free(c->label);
	json_decref(c->args);
	resources_release(&c->res);
	free(c);
}

static bool is_transfer(const struct call *c)
{
	return c->action == A_FILE_GET || c->action == A_ARCHIVE_GET;
}

static bool is_upload(const struct call *c)
{
	return c->action == A_FILE_PUT || c->action == A_ARCHIVE_PUT;
}

static const char *content_type(const struct call *c)
{
	return c->action == A_ARCHIVE_GET ? "application/x-tar"
					  : "application/octet-stream";
}

/* Ends a transfer's reply: a failed one without the terminating chunk,
 * by cutting the connection under MHD, so the client sees a truncated
 * body rather than a short one that looks whole. */
static void end_transfer(struct call *c, struct session_reply *r)
{
	if (r->json) {
		json_t *msg = json_object_get(json_object_get(r->json, "error"),
					      "message");

		log_warn("%s %s: the transfer failed midway: %s",
			 request_method(c->req), request_path(c->req),
			 json_string_value(msg) ? json_string_value(msg) : "");
		if (c->sock < 0 || shutdown(c->sock, SHUT_RDWR) < 0)
			log_warn("%s: cannot cut the connection",
				 request_path(c->req));
		json_decref(r->json);
	}
	request_stream_end(c->req);
}

static void on_reply(void *ctx, struct session_reply *r)
{
	struct call *c = ctx;

	if (c->stream_started && is_transfer(c)) {
		end_transfer(c, r);
		if (c->draining) {
			/* Freed once the last chunk is taken. */
			c->finished = true;
			return;
		}
	} else if (c->stream_started) {
		/* The exit event closes a streamed exec. */
		if (r->json) {
			char *line;

			json_object_set_new(
				r->json, "type",
				json_string(json_object_get(r->json, "error")
						    ? "error"
						    : "exit"));
			line = json_dumps(r->json, JSON_COMPACT);
			if (line) {
				request_stream_write(c->req, line,
						     strlen(line));
				request_stream_write(c->req, "\n", 1);
				free(line);
			}
		}
		json_decref(r->json);
		request_stream_end(c->req);
	} else if (r->json) {
		request_reply(c->req, r->status, r->json);
	} else {
		request_reply_raw(c->req, r->status, content_type(c), r->raw,
				  r->raw_len);
	}
	request_put(c->req);
	if (is_upload(c) && c->up_open) {
		/* Freed once the HTTP layer is done with the body. */
		c->req = NULL;
		c->replied = true;
		piece_free(c->piece);
		c->piece = NULL;
		return;
	}
	call_free(c);
}

/* ---- uploads: the body, a piece at a time ---- */

/* Gives the session the piece waiting, if it takes one now. c may be
 * freed by the time this returns (the session's answer can come at
 * once). */
static void upload_pump(struct call *c)
{
	struct piece *p = c->piece;

	if (!p || !c->up_ready)
		return;
	c->piece = NULL;
	c->up_ready = false;
	session_upload_chunk(c, p->data, p->len, p->last);
	piece_free(p);
}

static void piece_cb(struct loop *loop, void *arg)
{
	struct piece *p = arg;
	struct call *c = p->c;

	if (p->last)
		c->up_open = false;
	if (c->replied) {
		piece_free(p);
		if (!c->up_open)
			call_free(c);
		return;
	}
	/* One at a time: the next comes only after request_body_more(). */
	c->piece = p;
	upload_pump(c);
}

static void body_end_cb(struct loop *loop, void *arg)
{
	struct call *c = arg;

	c->up_open = false;
	if (c->replied)
		call_free(c);
	else
		session_abandon(c); /* its reply frees the call */
}

/* From an MHD thread: the next piece of the body. */
static void upload_data(void *arg, char *data, size_t len, bool last)
{
	struct piece *p = xmalloc(sizeof(*p));

	p->c = arg;
	p->data = data;
	p->len = len;
	p->last = last;
	loop_post(runner_loop(server_state.runner), piece_cb, p);
}

/* From an MHD thread: the body will not come whole. */
static void upload_end(void *arg)
{
	loop_post(runner_loop(server_state.runner), body_end_cb, arg);
}

static const struct request_body_ops upload_ops = {.data = upload_data,
						   .end = upload_end};

/* The session has taken the last piece: read the next. */
static void upload_ready(void *ctx)
{
	struct call *c = ctx;

	c->up_ready = true;
	if (c->piece)
		upload_pump(c);
	else
		request_body_more(c->req);
}

static void drained_cb(struct loop *loop, void *arg)
{
	struct call *c = arg;

	c->draining = false;
	if (c->finished) {
		request_put(c->req);
		call_free(c);
	} else if (request_stream_closed(c->req)) {
		session_abandon(c);
	} else {
		session_transfer_more(c);
	}
}

/* From any thread: the client's connection took the last chunk (or the
 * client went away). */
static void on_drained(void *arg)
{
	loop_post(runner_loop(server_state.runner), drained_cb, arg);
}

static void on_abort(void *arg);

/* A chunk of a file or archive: the reply starts with the first. */
static void on_data(void *ctx, const char *data, size_t len)
{
	struct call *c = ctx;

	if (!c->stream_started) {
		c->stream_started = true;
		request_stream_start(c->req, 200, content_type(c));
		request_on_abort(c->req, on_abort, c);
	}
	request_stream_write(c->req, data, len);
	c->draining = true;
	request_stream_when_drained(c->req, 0, on_drained, c);
}

static void on_stream(void *ctx, const char *stream, const char *data,
		      size_t len)
{
	struct call *c = ctx;
	json_t *ev = json_pack("{s:s,s:o}", "type", stream, "data",
			       json_text(data, len));
	char *line = json_dumps(ev, JSON_COMPACT);

	json_decref(ev);
	if (!line)
		return;
	request_stream_write(c->req, line, strlen(line));
	request_stream_write(c->req, "\n", 1);
	free(line);
}

/* A streaming client hung up: seen on our dup of its socket, which MHD
 * does not watch while the stream waits for output. */
static void on_sock(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct call *c = arg;
	char b;
	ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);

	if (n < 0 && (errno == EAGAIN || errno == EINTR) &&
	    !(events & (EPOLLHUP | EPOLLERR)))
		return;
	unwatch(c);
	if (n <= 0 || (events & (EPOLLHUP | EPOLLERR)))
		session_abandon(c);
}

static void abandon_cb(struct loop *loop, void *arg)
{
	struct call *c = arg;

	/* The exec is killed, the transfer stopped; the final reply still
	 * comes to on_reply, which frees the call (unless it came
	 * already). */
	session_abandon(c);
}

static void on_abort(void *arg)
{
	loop_post(runner_loop(server_state.runner), abandon_cb, arg);
}

static void run_call(struct loop *loop, void *arg)
{
	struct call *c = arg;

	switch (c->action) {
	case A_CREATE:
		if (c->res.nbinds) {
			json_t *shown = resources_describe(&c->res);

			session_create_bound(c->args, c->res.binds,
					     c->res.nbinds, shown, on_reply, c);
			json_decref(shown);
		} else
			session_create(c->args, on_reply, c);
		break;
	case A_LIST:
		session_list(c->label, on_reply, c);
		break;
	case A_GET:
		session_get(c->id, on_reply, c);
		break;
	case A_DELETE:
		session_delete(c->id, on_reply, c);
		break;
	case A_EXEC:
		/* A stream starts only for a sandbox that exists, so errors
		 * about the sandbox itself keep their HTTP status. */
		if (c->stream && !session_exists(c->id)) {
			c->stream = false;
			unwatch(c);
		}
		if (c->stream && c->sock >= 0 &&
		    loop_add_fd(loop, c->sock, EPOLLRDHUP, on_sock, c) == 0)
			c->watching = true;
		if (c->stream) {
			c->stream_started = true;
			request_stream_start(c->req, 200,
					     "application/x-ndjson");
			request_on_abort(c->req, on_abort, c);
		}
		session_exec(c->id, c->args, c->stream ? on_stream : NULL,
			     on_reply, c);
		break;
	case A_PROCS:
		session_procs(c->id, on_reply, c);
		break;
	case A_PROC:
		session_proc_output(c->id, c->num, on_reply, c);
		break;
	case A_PROC_SIGNAL:
		session_proc_signal(c->id, c->num, c->sig, on_reply, c);
		break;
	case A_FILE_PUT:
		c->up_ready = true;
		session_file_put(c->id, c->path, upload_ready, on_reply, c);
		break;
	case A_FILE_GET:
		session_file_get(c->id, c->path, on_data, on_reply, c);
		break;
	case A_FILE_DELETE:
		session_file_delete(c->id, c->path, c->recursive, on_reply, c);
		break;
	case A_ARCHIVE_PUT:
		c->up_ready = true;
		session_archive_put(c->id, c->path, upload_ready, on_reply, c);
		break;
	case A_ARCHIVE_GET:
		session_archive_get(c->id, c->path, on_data, on_reply, c);
		break;
	case A_REPL:
		session_repl(c->id, c->args, on_reply, c);
		break;
	}
}

static void start_cb(struct loop *loop, void *arg)
{
	sessions_set_gateway(&gateway_session_ops);
	sessions_init(loop, arg);
}

void sandboxes_start(const struct server_config *cfg)
{
	static struct session_limits lim;

	lim.max_sessions = cfg->max_sandboxes;
	lim.prebuilt = cfg->prebuilt;
	lim.default_idle_ms = cfg->idle_timeout_ms;
	lim.max_lifetime_ms = cfg->max_lifetime_ms;
	lim.limits = cfg->limits;
	lim.max_memory = cfg->max_memory;
	lim.max_disk = cfg->max_disk > cfg->limits.disk_bytes
			       ? cfg->max_disk
			       : cfg->limits.disk_bytes;
	/* The table belongs to the runner's thread. */
	loop_post(runner_loop(server_state.runner), start_cb, &lim);
}

static void stop_cb(struct loop *loop, void *arg)
{
	sessions_shutdown();
}

void sandboxes_stop(void)
{
	loop_post(runner_loop(server_state.runner), stop_cb, NULL);
}

bool sandboxes_is_upload(const char *method, const char *url)
{
	return !strcmp(method, "PUT") &&
	       str_starts_with(url, "/v1/sandboxes/") &&
	       (strstr(url, "/files") || strstr(url, "/archive"));
}

static json_t *body_json(struct request *req)
{
	size_t len;
	const char *body = request_body(req, &len);
	json_error_t jerr;
	json_t *j;

	if (len == 0)
		return json_object();
	j = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL,
		       &jerr);
	if (!j) {
		request_error(req, 422, "unprocessable",
			      "the body is not valid JSON: %s", jerr.text);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		request_error(req, 422, "unprocessable",
			      "the body must be a JSON object");
		return NULL;
	}
	return j;
}

static bool parse_u32(const char *s, size_t n, uint32_t *out)
{
	char tmp[16];
	uint64_t v;

	if (n == 0 || n >= sizeof(tmp))
		return false;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	if (parse_u64(tmp, &v) || v > UINT32_MAX)
		return false;
	*out = (uint32_t)v;
	return true;
}

/* ?path_b64=: a path that is not UTF-8, as its bytes in base64. Returns
 * false after replying 400 when it does not decode to a path. */
static bool take_path_b64(struct request *req, struct call *c)
{
	const char *arg = request_arg(req, "path_b64");
	struct buf b;

	if (!arg)
		return true;
	buf_init(&b);
	if (!*arg || base64_decode(&b, arg, strlen(arg)) || !b.len ||
	    memchr(b.data, '\0', b.len)) {
		buf_release(&b);
		request_error(req, 400, "bad_request",
			      "'path_b64' must be a path's bytes (no NUL) in "
			      "standard base64");
		return false;
	}
	free(c->path);
	c->path = xstrndup(b.data, b.len);
	buf_release(&b);
	return true;
}

static void method_not_allowed(struct request *req, const char *allowed)
{
	request_error(req, 405, "method_not_allowed",
		      "'%s' is not allowed on '%s' (allowed: %s)",
		      request_method(req), request_path(req), allowed);
}

void sandboxes_route(struct request *req)
{
	const char *method = request_method(req);
	const char *path = request_path(req);
	const char *rest, *sub;
	struct call *c = xcalloc(1, sizeof(*c));
	size_t idlen;
	const char *arg;

	c->sock = -1;
	if (!strcmp(path, "/v1/sandboxes")) {
		if (!strcmp(method, "POST")) {
			c->action = A_CREATE;
			if (!(c->args = body_json(req)) ||
			    !resources_for_sandbox(req, c->args, &c->res))
				goto out_free;
		} else if (!strcmp(method, "GET")) {
			c->action = A_LIST;
			arg = request_arg(req, "label");
			c->label = arg ? xstrdup(arg) : NULL;
		} else {
			method_not_allowed(req, "GET, POST");
			goto out_free;
		}
		goto post;
	}
	rest = path + strlen("/v1/sandboxes/");
	idlen = strcspn(rest, "/");
	if (idlen == 0 || idlen >= sizeof(c->id)) {
		request_error(req, 404, "not_found", "no route '%s'", path);
		goto out_free;
	}
	memcpy(c->id, rest, idlen);
	sub = rest + idlen;
	if (!*sub) {
		if (!strcmp(method, "GET"))
			c->action = A_GET;
		else if (!strcmp(method, "DELETE"))
			c->action = A_DELETE;
		else {
			method_not_allowed(req, "GET, DELETE");
			goto out_free;
		}
	} else if (!strcmp(sub, "/exec") || !strcmp(sub, "/repl")) {
		if (strcmp(method, "POST")) {
			method_not_allowed(req, "POST");
			goto out_free;
		}
		c->action = sub[1] == 'e' ? A_EXEC : A_REPL;
		if (!(c->args = body_json(req)))
			goto out_free;
		c->stream = c->action == A_EXEC &&
			    json_is_true(json_object_get(c->args, "stream"));
		if (c->stream &&
		    json_is_true(json_object_get(c->args, "background"))) {
			request_error(req, 422, "unprocessable",
				      "'stream' and 'background' do not go "
				      "together");
			goto out_free;
		}
	} else if (!strcmp(sub, "/processes")) {
		if (strcmp(method, "GET")) {
			method_not_allowed(req, "GET");
			goto out_free;
		}
		c->action = A_PROCS;
	} else if (str_starts_with(sub, "/processes/")) {
		const char *num = sub + strlen("/processes/");
		size_t n = strcspn(num, "/");

		if (!parse_u32(num, n, &c->num)) {
			request_error(req, 404, "not_found", "no route '%s'",
				      path);
			goto out_free;
		}
		if (!num[n]) {
			if (strcmp(method, "GET")) {
				method_not_allowed(req, "GET");
				goto out_free;
			}
			c->action = A_PROC;
		} else if (!strcmp(num + n, "/signal")) {
			json_t *s;

			if (strcmp(method, "POST")) {
				method_not_allowed(req, "POST");
				goto out_free;
			}
			if (!(c->args = body_json(req)))
				goto out_free;
			s = json_object_get(c->args, "signal");
			/* Only 'signal' (default SIGTERM): a misspelt field
			 * must not send SIGTERM in its place. */
			if (json_object_size(c->args) != (s ? 1u : 0u) ||
			    (s && !json_is_null(s) && !json_is_integer(s))) {
				request_error(req, 422, "unprocessable",
					      "a signal request takes one "
					      "field, 'signal' (an integer; "
					      "default SIGTERM)");
				goto out_free;
			}
			c->sig = json_is_integer(s) ? (int)json_integer_value(s)
						    : SIGTERM;
			c->action = A_PROC_SIGNAL;
		} else {
			request_error(req, 404, "not_found", "no route '%s'",
				      path);
			goto out_free;
		}
	} else if (!strcmp(sub, "/files") || str_starts_with(sub, "/files/")) {
		arg = request_arg(req, "path");
		if (sub[6] == '/' && sub[7])
			c->path = xstrdup(sub + 7);
		else if (arg && *arg)
			c->path = xstrdup(arg);
		else
			c->path = xstrdup(".");
		if (!take_path_b64(req, c))
			goto out_free;
		if (!strcmp(method, "PUT")) {
			c->action = A_FILE_PUT;
		} else if (!strcmp(method, "GET")) {
			c->action = A_FILE_GET;
		} else if (!strcmp(method, "DELETE")) {
			c->action = A_FILE_DELETE;
			arg = request_arg(req, "recursive");
			c->recursive = arg && (!strcmp(arg, "1") ||
					       !strcmp(arg, "true"));
		} else {
			method_not_allowed(req, "GET, PUT, DELETE");
			goto out_free;
		}
	} else if (str_starts_with(sub, "/ports/")) {
		ports_route(req, c->id, sub); /* server/ports.c */
		goto out_free;
	} else if (!strcmp(sub, "/rpc") || str_starts_with(sub, "/rpc/")) {
		rpc_route(req, c->id, sub); /* interfaces: server/rpc.c */
		goto out_free;
	} else if (!strcmp(sub, "/archive")) {
		arg = request_arg(req, "path");
		c->path = xstrdup(arg && *arg ? arg : ".");
		if (!take_path_b64(req, c))
			goto out_free;
		if (!strcmp(method, "PUT")) {
			c->action = A_ARCHIVE_PUT;
		} else if (!strcmp(method, "GET")) {
			c->action = A_ARCHIVE_GET;
		} else {
			method_not_allowed(req, "GET, PUT");
			goto out_free;
		}
	} else {
		request_error(req, 404, "not_found", "no route '%s'", path);
		goto out_free;
	}
post:
	if (c->stream || is_transfer(c))
		c->sock = request_dup_socket(req);
	if (is_upload(c)) {
		/* Routed on its headers (sandboxes_is_upload()): the body
		 * follows, a chunk at a time. */
		c->up_open = true;
		request_body_stream(req, SESSION_UPLOAD_CHUNK, &upload_ops, c);
	}
	c->req = request_defer(req);
	loop_post(runner_loop(server_state.runner), run_call, c);
	return;
out_free:
	call_free(c);
}

/*
 * Forwarding a request to another HTTP server and streaming its answer
 * back: into a sandbox (a port a process of it listens on, through a socket
 * made in its network) and out of one (a host route of its gateway). The
 * calls run on the gateway's engine like model calls, with no retries and
 * a connection of their own; a slow client pauses the target, a client
 * that hangs up cancels it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "base/log.h"
#include "base/loop.h"
#include "base/util.h"
#include "llm/upstream.h"
#include "server/gateway.h"
#include "server/internal.h"
#include "server/request.h"
#include "base/banned.h"

#define FWD_HIGH (1u << 20)
#define FWD_LOW (256u << 10)

struct fwd {
	int refs; /* engine thread */
	struct request *req;
	struct upstream_call *uc;
	struct upstream_request ur;
	char *url;
	char what[160];
	bool streaming, paused, finished, client_gone;
	int sock;
};

static void fwd_unref(struct fwd *f)
{
	if (--f->refs)
		return;
	if (f->uc)
		upstream_call_put(f->uc);
	free(f->ur.body);
	for (char **h = f->ur.headers; h && *h; h++)
		free(*h);
	free(f->ur.headers);
	free(f->url);
	free(f);
}

static void unwatch(struct fwd *f)
{
	if (f->sock < 0)
		return;
	loop_del_fd(gateway_loop(), f->sock);
	fd_close(&f->sock);
}

static void resume_cb(struct loop *loop, void *arg)
{
	struct fwd *f = arg;

	if (f->paused && !f->finished) {
		f->paused = false;
		upstream_call_pause(f->uc, false);
	}
	fwd_unref(f);
}

static void on_drained(void *arg)
{
	loop_post(gateway_loop(), resume_cb, arg);
}

static void fwd_head(void *arg, long status, const char *ctype)
{
	struct fwd *f = arg;

	f->streaming = true;
	request_stream_start(f->req, (unsigned)status,
			     gateway_content_type(ctype));
}

static void fwd_data(void *arg, const char *data, size_t len)
{
	struct fwd *f = arg;

	if (f->client_gone)
		return;
	request_stream_write(f->req, data, len);
	if (!f->paused && request_stream_pending(f->req) >= FWD_HIGH) {
		f->paused = true;
		f->refs++;
		upstream_call_pause(f->uc, true);
		request_stream_when_drained(f->req, FWD_LOW, on_drained, f);
	}
}

static void fwd_done(void *arg, int err, const char *msg)
{
	struct fwd *f = arg;

	f->finished = true;
	unwatch(f);
	if (f->streaming) {
		/* Cut short: the client sees a truncated body. */
		if (err)
			log_debug("%s: the answer was cut: %s", f->what, msg);
		request_stream_end(f->req);
	} else if (err == -ETIMEDOUT) {
		request_error(f->req, 504, "target_timeout", "%s: %s", f->what,
			      msg);
	} else {
		request_error(f->req, 502, "target_unavailable", "%s: %s",
			      f->what, msg);
	}
	request_put(f->req);
	fwd_unref(f);
}

static const struct upstream_call_ops fwd_ops = {
	.head = fwd_head,
	.data = fwd_data,
	.done = fwd_done,
};

static void on_hup(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct fwd *f = arg;

	unwatch(f);
	if (f->finished || f->client_gone)
		return;
	f->client_gone = true;
	upstream_call_cancel(f->uc);
}

static void start_cb(struct loop *loop, void *arg)
{
	struct fwd *f = arg;

	if (f->sock >= 0 &&
	    loop_add_fd(loop, f->sock, EPOLLRDHUP, on_hup, f) < 0)
		fd_close(&f->sock);
	f->ur.url = f->url;
	f->uc = upstream_call_start(gateway_engine(), &f->ur, &fwd_ops, f);
}

/* Request headers passed on: what says what the body is and what the
 * client accepts; never Host, lengths or hop-by-hop ones. */
static char **pass_headers(struct request *req, char **extra)
{
	static const char *const names[] = {"Accept", "Authorization",
					    "User-Agent", "X-Request-Id"};
	size_t n = 0, i, k = 0;
	char **out;

	while (extra && extra[n])
		n++;
	out = xcalloc(n + ARRAY_SIZE(names) + 1, sizeof(char *));
	for (i = 0; i < ARRAY_SIZE(names); i++) {
		const char *v = request_header(req, names[i]);

		if (v && !strpbrk(v, "\r\n"))
			out[k++] = xstrfmt("%s: %s", names[i], v);
	}
	for (i = 0; i < n; i++)
		out[k++] = extra[i];
	free(extra);
	return out;
}

void forward_start(struct request *req, const char *url, int sock,
		   char **headers, const char *what)
{
	struct fwd *f = xcalloc(1, sizeof(*f));
	const char *ctype = request_header(req, "Content-Type");
	size_t len;
	char *body = request_body_take(req, &len);

	f->refs = 1;
	f->req = req;
	f->url = xstrdup(url);
	str_copy(f->what, sizeof(f->what), what);
	f->ur.method = request_method(req);
	f->ur.body = body;
	f->ur.len = body ? len : 0;
	f->ur.content_type =
		ctype && !strpbrk(ctype, "\r\n") ? ctype : "application/json";
	f->ur.headers = pass_headers(req, headers);
	f->ur.fresh = true;
	f->ur.has_retries = true;
	f->ur.retries = 0;
	if (sock >= 0) {
		f->ur.has_sock = true;
		f->ur.sock = sock;
	}
	f->sock = request_dup_socket(req);
	/* Method and content type stay the request's (it lives until the
	 * reply): the engine copies them when the call starts. */
	loop_post(gateway_loop(), start_cb, f);
}

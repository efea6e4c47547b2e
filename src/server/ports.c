/*
 * Port forwarding: /v1/sandboxes/{id}/ports/{port}/{path} reaches a server a
 * process of the sandbox listens on at that port of its own loopback. The
 * server makes a socket inside the sandbox's network (on the runner's
 * thread, where the session table is) and connects with it from the
 * gateway's engine: the sandbox gets no network, and only its own ports
 * can be reached this way.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/loop.h"
#include "base/util.h"
#include "runtime/runner.h"
#include "runtime/session.h"
#include "server/internal.h"
#include "server/request.h"
#include "base/banned.h"

struct port_call {
	struct request *req;
	char id[64];
	unsigned port;
	char *url;
};

static void socket_cb(struct loop *loop, void *arg)
{
	struct port_call *pc = arg;
	int fd = session_net_socket(pc->id);
	char what[128];

	if (fd < 0) {
		if (fd == -ENOENT)
			request_error(pc->req, 404, "not_found",
				      "no sandbox '%s'", pc->id);
		else
			request_error(pc->req, 502, "target_unavailable",
				      "cannot reach into sandbox '%s': %s",
				      pc->id, strerror(-fd));
		request_put(pc->req);
	} else {
		snprintf(what, sizeof(what), "sandbox %s port %u", pc->id,
			 pc->port);
		forward_start(pc->req, pc->url, fd, NULL, what);
	}
	free(pc->url);
	free(pc);
}

/* The path as it goes on the wire: the HTTP library gave it decoded. */
static void add_path(struct buf *b, const char *p)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *p; p++) {
		unsigned char c = (unsigned char)*p;

		if (c > 0x20 && c < 0x7f && !strchr("%?#\\\"<>`^{|}", c)) {
			buf_add(b, p, 1);
		} else {
			char e[3] = {'%', hex[c >> 4], hex[c & 15]};

			buf_add(b, e, 3);
		}
	}
}

void ports_route(struct request *req, const char *id, const char *sub)
{
	const char *p = sub + strlen("/ports/");
	size_t n = strcspn(p, "/");
	char num[8];
	uint64_t port;
	struct port_call *pc;
	struct buf url;
	const char *q;

	if (!n || n >= sizeof(num)) {
		request_error(req, 404, "not_found",
			      "say which port: /v1/sandboxes/{id}/ports/{port}/"
			      "{path}");
		return;
	}
	memcpy(num, p, n);
	num[n] = '\0';
	if (parse_u64(num, &port) || !port || port > 65535) {
		request_error(req, 400, "bad_request",
			      "'%s' is not a port (1 to 65535)", num);
		return;
	}
	p += n;
	buf_init(&url);
	buf_addf(&url, "http://127.0.0.1:%u", (unsigned)port);
	add_path(&url, *p ? p : "/");
	q = request_query(req);
	if (q && *q)
		buf_addf(&url, "?%s", q);
	pc = xcalloc(1, sizeof(*pc));
	str_copy(pc->id, sizeof(pc->id), id);
	pc->port = (unsigned)port;
	pc->url = xstrdup(url.data);
	buf_release(&url);
	pc->req = request_defer(req);
	loop_post(runner_loop(server_state.runner), socket_cb, pc);
}

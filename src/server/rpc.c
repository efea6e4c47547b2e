/*
 * Interfaces of stateful sandboxes over HTTP: everything under
 * /v1/sandboxes/{id}/rpc. Bodies are parsed on the MHD thread
 * (rpc_parse.c); the work is posted to the runner's thread, where the
 * sessions live, and the reply comes from there.
 *
 *   POST   .../rpc                      load an interface (200, or 422)
 *   GET    .../rpc                      the interfaces
 *   GET    .../rpc/{name}               its schema, Seer's shape
 *   POST   .../rpc/{name}               a call, Seer's {fn, args, kwargs}
 *   DELETE .../rpc/{name}               remove it
 *   GET    .../rpc/{name}/client.py     a Python module calling it
 *   GET    .../rpc/{name}/prompt.md     Markdown for an agent's prompt
 *   GET    .../rpc/{name}/mcp.json      an MCP config for `sbx mcp`
 *
 * A call always answers JSON with "ok": 200 for anything the interface
 * did (a result, its exception, an unknown function, a timeout, a
 * crash), 400 for a malformed body, 404 for an unknown sandbox or
 * interface. The generated documents call ?base_url= (default: the
 * server's own address).
 */
#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/log.h"
#include "base/loop.h"
#include "base/util.h"
#include "runtime/session.h"
#include "server/internal.h"
#include "server/request.h"
#include "server/rpc.h"
#include "base/banned.h"

enum rpc_action {
	R_LOAD,
	R_LIST,
	R_SCHEMA,
	R_CALL,
	R_UNLOAD,
	R_CLIENT,
	R_PROMPT,
	R_MCP,
};

struct rpc_req {
	enum rpc_action action;
	struct request *req;
	char id[64];
	char name[64];
	char *base_url;
	json_t *args;
};

static void rreq_free(struct rpc_req *c)
{
	free(c->base_url);
	json_decref(c->args);
	free(c);
}

static char *call_url(struct rpc_req *c)
{
	return xstrfmt("%s/v1/sandboxes/%s/rpc/%s", c->base_url, c->id,
		       c->name);
}

/* The text documents, from the interface's full schema. */
static void reply_doc(struct rpc_req *c, json_t *desc)
{
	char *url = call_url(c);
	char *text;

	if (c->action == R_MCP) {
		char exe[PATH_MAX];
		ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

		if (n > 0)
			exe[n] = '\0';
		else
			str_copy(exe, sizeof(exe), "sbx");
		request_reply(c->req, 200,
			      rpc_gen_mcp(c->name, exe, c->base_url, c->id));
		free(url);
		return;
	}
	if (c->action == R_CLIENT)
		text = rpc_gen_client(desc, url);
	else
		text = rpc_gen_prompt(desc, url);
	free(url);
	request_reply_take(c->req, 200,
			   c->action == R_CLIENT
				   ? "text/x-python; charset=utf-8"
				   : "text/markdown; charset=utf-8",
			   text, strlen(text));
}

static void on_reply(void *ctx, struct session_reply *r)
{
	struct rpc_req *c = ctx;
	json_t *err = json_object_get(r->json, "error");

	if (c->action == R_CALL && json_is_object(err)) {
		/* The sandbox's own errors (unknown, gone) in a call's shape.
		 */
		const char *code =
			json_string_value(json_object_get(err, "code"));
		const char *msg =
			json_string_value(json_object_get(err, "message"));

		request_reply(c->req, r->status,
			      json_pack("{s:b,s:s,s:s}", "ok", 0, "code",
					code ? code : "error", "error",
					msg ? msg : ""));
		json_decref(r->json);
	} else if ((c->action == R_CLIENT || c->action == R_PROMPT ||
		    c->action == R_MCP) &&
		   r->status == 200) {
		reply_doc(c, r->json);
		json_decref(r->json);
	} else if (!r->json) {
		request_reply_raw(c->req, r->status, "application/json", r->raw,
				  r->raw_len);
	} else {
		request_reply(c->req, r->status, r->json);
	}
	request_put(c->req);
	rreq_free(c);
}

static void run_rpc(struct loop *loop, void *arg)
{
	struct rpc_req *c = arg;

	switch (c->action) {
	case R_LOAD:
		session_rpc_load(c->id, c->args, on_reply, c);
		break;
	case R_LIST:
		session_rpc_list(c->id, on_reply, c);
		break;
	case R_SCHEMA:
		session_rpc_schema(c->id, c->name, false, on_reply, c);
		break;
	case R_CALL:
		session_rpc_call(c->id, c->name, c->args, on_reply, c);
		break;
	case R_UNLOAD:
		session_rpc_unload(c->id, c->name, on_reply, c);
		break;
	case R_CLIENT:
	case R_PROMPT:
	case R_MCP:
		session_rpc_schema(c->id, c->name, true, on_reply, c);
		break;
	}
}

static void not_allowed(struct request *req, const char *allowed)
{
	request_error(req, 405, "method_not_allowed",
		      "'%s' is not allowed on '%s' (allowed: %s)",
		      request_method(req), request_path(req), allowed);
}

/* Where generated documents send calls: ?base_url=, or the address the
 * client reached this server at. */
static char *base_url(struct request *req)
{
	const char *arg = request_arg(req, "base_url");
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char host[INET6_ADDRSTRLEN] = "127.0.0.1";
	unsigned port = server_state.cfg->port;
	int fd;
	size_t n;

	if (arg && (str_starts_with(arg, "http://") ||
		    str_starts_with(arg, "https://"))) {
		n = strlen(arg);
		while (n && arg[n - 1] == '/')
			n--;
		return xstrndup(arg, n);
	}
	fd = request_dup_socket(req);
	if (fd >= 0 && !getsockname(fd, (struct sockaddr *)&ss, &len)) {
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *a = (struct sockaddr_in *)&ss;

			inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
			port = ntohs(a->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

			inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
			port = ntohs(a->sin6_port);
		}
	}
	fd_close(&fd);
	return xstrfmt(strchr(host, ':') ? "http://[%s]:%u" : "http://%s:%u",
		       host, port);
}

static void call_error(struct request *req, unsigned status, const char *code,
		       const char *msg)
{
	request_reply(req, status,
		      json_pack("{s:b,s:s,s:s}", "ok", 0, "code", code, "error",
				msg));
}

void rpc_route(struct request *req, const char *id, const char *sub)
{
	const char *method = request_method(req);
	struct rpc_req *c = xcalloc(1, sizeof(*c));
	const char *name, *rest;
	size_t n, len;
	const char *body;
	char err[256];

	str_copy(c->id, sizeof(c->id), id);
	if (!strcmp(sub, "/rpc") || !strcmp(sub, "/rpc/")) {
		if (!strcmp(method, "GET")) {
			c->action = R_LIST;
		} else if (!strcmp(method, "POST")) {
			body = request_body(req, &len);
			c->args = rpc_parse_load(body, len, err, sizeof(err));
			if (!c->args) {
				request_error(req, 422, "unprocessable", "%s",
					      err);
				goto out_free;
			}
			c->action = R_LOAD;
		} else {
			not_allowed(req, "GET, POST");
			goto out_free;
		}
		goto post;
	}
	name = sub + strlen("/rpc/");
	n = strcspn(name, "/");
	rest = name + n;
	if (!rpc_parse_name(name, n)) {
		if (!*rest && !strcmp(method, "POST"))
			call_error(req, 404, "not_found",
				   "no interface of that name: names are 1 to "
				   "63 letters, digits, '_', '-' or '.'");
		else
			request_error(req, 404, "not_found", "no route '%s'",
				      request_path(req));
		goto out_free;
	}
	memcpy(c->name, name, n);
	if (!*rest) {
		if (!strcmp(method, "GET")) {
			c->action = R_SCHEMA;
		} else if (!strcmp(method, "DELETE")) {
			c->action = R_UNLOAD;
		} else if (!strcmp(method, "POST")) {
			body = request_body(req, &len);
			c->args = rpc_parse_call(body, len, err, sizeof(err));
			if (!c->args) {
				call_error(req, 400, "bad_request", err);
				goto out_free;
			}
			c->action = R_CALL;
		} else {
			not_allowed(req, "GET, POST, DELETE");
			goto out_free;
		}
	} else if (!strcmp(rest, "/client.py") || !strcmp(rest, "/prompt.md") ||
		   !strcmp(rest, "/mcp.json")) {
		if (strcmp(method, "GET")) {
			not_allowed(req, "GET");
			goto out_free;
		}
		c->action = rest[1] == 'c'   ? R_CLIENT
			    : rest[1] == 'p' ? R_PROMPT
					     : R_MCP;
		c->base_url = base_url(req);
	} else {
		request_error(req, 404, "not_found", "no route '%s'",
			      request_path(req));
		goto out_free;
	}
post:
	c->req = request_defer(req);
	loop_post(runner_loop(server_state.runner), run_rpc, c);
	return;
out_free:
	rreq_free(c);
}

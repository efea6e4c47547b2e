/*
 * Stateful sandboxes: interfaces. The interfaces themselves live in
 * rpc.c; this file lends them the session's process commands.
 */
#include <stdio.h>
#include <stdlib.h>

#include "base/util.h"
#include "runtime/rpc.h"
#include "runtime/session_internal.h"
#include "base/banned.h"

static int rpc_exec(void *sctx, uint32_t *id, const char *const *args)
{
	struct session *s = sctx;
	json_t *argv = json_array();
	int r;

	for (; *args; args++)
		json_array_append_new(argv, json_string(*args));
	*id = s->next_id++;
	/* In /work, which the module sees first on sys.path. */
	r = session_send_exec(s, *id, argv, "/work", NULL, 0, 0, NULL, 0,
			      false);
	json_decref(argv);
	return r;
}

static void rpc_stdin(void *sctx, uint32_t id, const char *data, size_t len)
{
	struct session *s = sctx;

	sandbox_command(s->sb, SANDBOX_CMD_STDIN, id, NULL, data, len);
}

static void rpc_signal(void *sctx, uint32_t id, int sig)
{
	struct session *s = sctx;
	char json[32];

	snprintf(json, sizeof(json), "{\"signal\":%d}", sig);
	sandbox_command(s->sb, SANDBOX_CMD_SIGNAL, id, json, NULL, 0);
}

static void rpc_touch(void *sctx)
{
	struct session *s = sctx;

	s->last_used_ns = now_ns();
}

static const struct rpc_host rpc_host = {.exec = rpc_exec,
					 .stdin_write = rpc_stdin,
					 .signal = rpc_signal,
					 .touch = rpc_touch};

void session_rpc_load(const char *id, json_t *args, session_reply_fn fn,
		      void *ctx)
{
	struct session *s = session_find(id, fn, ctx);

	if (!s)
		return;
	s->last_used_ns = now_ns();
	rpc_load(&s->rpcs, &rpc_host, s, session_table.loop, args, fn, ctx);
}

void session_rpc_schema(const char *id, const char *name, bool full,
			session_reply_fn fn, void *ctx)
{
	struct session *s = session_find(id, fn, ctx);

	if (s)
		rpc_schema(s->rpcs, name, full, fn, ctx);
}

void session_rpc_call(const char *id, const char *name, json_t *call,
		      session_reply_fn fn, void *ctx)
{
	struct session *s = session_find(id, fn, ctx);

	if (s)
		rpc_call(&s->rpcs, name, call, fn, ctx);
}

void session_rpc_list(const char *id, session_reply_fn fn, void *ctx)
{
	struct session *s = session_find(id, fn, ctx);

	if (s)
		session_reply_json(fn, ctx, 200, rpc_list(s->rpcs));
}

void session_rpc_unload(const char *id, const char *name, session_reply_fn fn,
			void *ctx)
{
	struct session *s = session_find(id, fn, ctx);

	if (s)
		rpc_unload(&s->rpcs, name, fn, ctx);
}

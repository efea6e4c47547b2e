/*
 * Stateful sandboxes: REPL cells. The REPL contexts themselves live in
 * repl.c; this file lends them the session's process commands.
 */
#include <stdio.h>
#include <stdlib.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/util.h"
#include "runtime/repl.h"
#include "runtime/session_internal.h"
#include "base/banned.h"

static void repl_exec(void *sctx, uint32_t *id, const char *const *args)
{
	struct session *s = sctx;
	json_t *argv = json_array();

	for (; *args; args++)
		json_array_append_new(argv, json_string(*args));
	*id = s->next_id++;
	session_send_exec(s, *id, argv, NULL, NULL, 0, 0, NULL, 0, false);
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
	struct session *s = session_find(id, fn, ctx);

	if (!s)
		return;
	s->last_used_ns = now_ns();
	repl_run(&s->repls, &repl_host, s, session_table.loop, args, fn, ctx);
}

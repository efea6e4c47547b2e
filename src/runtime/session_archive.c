/*
 * Stateful sandboxes: whole trees in and out as tar archives. tar runs as
 * the sandbox user inside the sandbox, so tar's own rules (no absolute
 * names, no "..") apply and a hostile archive can only touch the sandbox.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/util.h"
#include "runtime/result.h"
#include "runtime/session_internal.h"
#include "base/banned.h"

void session_archive_ended(struct session *s, struct session_op *op,
			   const struct sandbox_event *ev)
{
	if (ev->err) {
		session_reply_start_error(op->fn, op->ctx, ev->err);
		return;
	}
	switch (op->kind) {
	case SESSION_OP_ARCHIVE_PUT:
		if (ev->result.status == SANDBOX_OK)
			session_reply_json(
				op->fn, op->ctx, 200,
				json_pack("{s:s}", "path", op->path));
		else
			session_reply_error(
				op->fn, op->ctx, 400, "bad_archive",
				"tar could not extract into '%s': %.300s",
				op->path, op->err.data ? op->err.data : "");
		return;
	case SESSION_OP_ARCHIVE_GET: {
		struct session_reply r = {.status = 200,
					  .raw = op->out.data ? op->out.data
							      : "",
					  .raw_len = op->out.len};

		if (ev->result.status != SANDBOX_OK || op->truncated) {
			session_reply_error(
				op->fn, op->ctx, op->truncated ? 413 : 404,
				op->truncated ? "payload_too_large"
					      : "not_found",
				"cannot archive '%s': %.300s", op->path,
				op->truncated
					? "larger than the limit"
					: (op->err.data ? op->err.data : ""));
			return;
		}
		if (op->fn)
			op->fn(op->ctx, &r);
		return;
	}
	default:
		return;
	}
}

void session_archive_put(const char *id, const char *dir, const char *data,
			 size_t len, session_reply_fn fn, void *ctx)
{
	struct session *s = session_find(id, fn, ctx);
	json_t *argv;
	struct session_op *op;

	if (!s || !session_path_ok(dir, fn, ctx))
		return;
	op = session_op_new(s, SESSION_OP_ARCHIVE_PUT, fn, ctx);
	op->path = xstrdup(dir);
	/* GNU tar refuses absolute names and ".." by default; as the
	 * sandbox user inside the sandbox it can write nowhere else. */
	argv = json_pack("[s,s,s,s,s]", "/bin/sh", "-c",
			 "mkdir -p -- \"$1\" && exec tar -x -f - "
			 "--no-same-owner --no-same-permissions "
			 "--no-overwrite-dir -C \"$1\"",
			 "sh", dir);
	if (session_send_exec(s, op->id, argv, NULL, NULL,
			      SESSION_DEFAULT_EXEC_MS, 1 << 20, data, len,
			      true)) {
		session_op_drop(s, op);
		session_reply_error(fn, ctx, 410, "gone",
				    "the sandbox is gone");
	}
	json_decref(argv);
}

void session_archive_get(const char *id, const char *dir, session_reply_fn fn,
			 void *ctx)
{
	struct session *s = session_find(id, fn, ctx);
	json_t *argv;
	struct session_op *op;

	if (!s || !session_path_ok(dir, fn, ctx))
		return;
	op = session_op_new(s, SESSION_OP_ARCHIVE_GET, fn, ctx);
	op->path = xstrdup(dir);
	op->cap = session_table.lim.max_disk;
	argv = json_pack("[s,s,s,s,s]", "tar", "-c", "-f", "-", "-C");
	json_array_append_new(argv, json_string(dir));
	json_array_append_new(argv, json_string("."));
	if (session_send_exec(s, op->id, argv, NULL, NULL,
			      SESSION_DEFAULT_EXEC_MS, op->cap, NULL, 0,
			      true)) {
		session_op_drop(s, op);
		session_reply_error(fn, ctx, 410, "gone",
				    "the sandbox is gone");
	}
	json_decref(argv);
}

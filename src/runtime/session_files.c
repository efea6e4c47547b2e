/*
 * Stateful sandboxes: single files in and out and directory listings.
 * Transfers are cut into SESSION_CHUNK commands so neither side holds more
 * than a chunk beyond the file itself; init does the work as the sandbox
 * user, inside the sandbox's own mount namespace.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/util.h"
#include "runtime/result.h"
#include "runtime/session_internal.h"
#include "base/banned.h"

static void request_read(struct session *s, struct session_op *op)
{
	json_t *a = json_pack("{s:s,s:I,s:I}", "path", op->path, "offset",
			      (json_int_t)op->out.len, "max",
			      (json_int_t)SESSION_CHUNK);
	char *text = json_dumps(a, JSON_COMPACT);

	json_decref(a);
	sandbox_command(s->sb, SANDBOX_CMD_FILE_READ, op->id, text, NULL, 0);
	free(text);
}

bool session_path_ok(const char *path, session_reply_fn fn, void *ctx)
{
	if (!*path || strlen(path) >= 4000) {
		session_reply_error(fn, ctx, 400, "bad_request", "bad path");
		return false;
	}
	return true;
}

void session_file_put(const char *id, const char *path, const char *data,
		      size_t len, session_reply_fn fn, void *ctx)
{
	struct session *s = session_find(id, fn, ctx);
	struct session_op *op;
	size_t off = 0;

	if (!s || !session_path_ok(path, fn, ctx))
		return;
	op = session_op_new(s, SESSION_OP_PUT, fn, ctx);
	op->path = xstrdup(path);
	op->len = len;
	/* Every chunk is queued now: the first truncates and creates the
	 * parents, the others append. */
	do {
		size_t n =
			len - off < SESSION_CHUNK ? len - off : SESSION_CHUNK;
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
	struct session *s = session_find(id, fn, ctx);
	struct session_op *op;

	if (!s || !session_path_ok(path, fn, ctx))
		return;
	op = session_op_new(s, SESSION_OP_GET, fn, ctx);
	op->path = xstrdup(path);
	request_read(s, op);
}

void session_file_delete(const char *id, const char *path, bool recursive,
			 session_reply_fn fn, void *ctx)
{
	struct session *s = session_find(id, fn, ctx);
	struct session_op *op;
	json_t *a;
	char *text;

	if (!s || !session_path_ok(path, fn, ctx))
		return;
	op = session_op_new(s, SESSION_OP_DELETE, fn, ctx);
	op->path = xstrdup(path);
	a = json_pack("{s:s,s:b}", "path", path, "recursive", recursive);
	text = json_dumps(a, JSON_COMPACT);
	json_decref(a);
	sandbox_command(s->sb, SANDBOX_CMD_FILE_DELETE, op->id, text, NULL, 0);
	free(text);
}

void session_file_reply(struct session *s, struct session_op *op,
			const struct sandbox_event *ev)
{
	json_t *args = json_loadb(ev->json, ev->json_len, 0, NULL);
	int err = (int)json_integer_value(json_object_get(args, "errno"));
	bool done = true;

	switch (op->kind) {
	case SESSION_OP_PUT:
		/* Chunks are answered in order; the first error is the
		 * answer, the rest are drained. */
		if (err && !op->failed) {
			op->failed = true;
			session_reply_errno(op->fn, op->ctx, err, op->path);
		}
		if (--op->pending) {
			done = false;
			break;
		}
		if (!op->failed)
			session_reply_json(op->fn, op->ctx, 201,
					   json_pack("{s:s,s:I}", "path",
						     op->path, "size",
						     (json_int_t)op->len));
		break;
	case SESSION_OP_GET:
		if (err == EISDIR || json_object_get(args, "entries")) {
			json_t *entries = json_object_get(args, "entries");

			if (entries) {
				session_reply_json(
					op->fn, op->ctx, 200,
					json_pack("{s:s,s:O}", "path", op->path,
						  "entries", entries));
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
			session_reply_errno(op->fn, op->ctx, err, op->path);
			break;
		}
		if (op->out.len + ev->payload_len >
		    session_table.lim.max_disk) {
			session_reply_error(
				op->fn, op->ctx, 413, "payload_too_large",
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
	case SESSION_OP_DELETE:
		if (err)
			session_reply_errno(op->fn, op->ctx, err, op->path);
		else
			session_reply_json(op->fn, op->ctx, 200,
					   json_pack("{s:s,s:b}", "path",
						     op->path, "deleted", 1));
		break;
	default:
		break;
	}
	json_decref(args);
	if (done) {
		session_op_find(s, op->id, true);
		session_op_free(op);
	}
}

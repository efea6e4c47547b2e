/*
 * Stateful sandboxes: single files in and out and directory listings.
 * Transfers are cut into SESSION_CHUNK commands. A file read goes out to
 * the client a chunk at a time: the next chunk is asked of init only once
 * the client's connection has taken the last, so a read holds about one
 * chunk whatever the file's size. Init does the work as the sandbox user,
 * inside the sandbox's own mount namespace.
 *
 * Paths are bytes: one that is not UTF-8 travels to init as "path_b64",
 * and replies name it both ways (see session_path_set()).
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

static json_t *path_args(const char *path)
{
	json_t *a = json_object();

	session_path_set(a, path);
	return a;
}

void session_file_read(struct session *s, struct session_op *op)
{
	json_t *a = path_args(op->path);
	uint64_t left = op->limit - op->sent;

	json_object_set_new(a, "offset", json_integer((json_int_t)op->sent));
	json_object_set_new(
		a, "max",
		json_integer((json_int_t)(left < SESSION_CHUNK
						  ? left
						  : SESSION_CHUNK)));
	session_command(s, SANDBOX_CMD_FILE_READ, op->id, a, NULL, 0);
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
		json_t *a = path_args(path);

		json_object_set_new(a, "append", json_boolean(off > 0));
		json_object_set_new(a, "mkdirs", json_boolean(off == 0));
		session_command(s, SANDBOX_CMD_FILE_WRITE, op->id, a,
				data + off, n);
		op->pending++;
		off += n;
	} while (off < len);
}

void session_file_get(const char *id, const char *path, session_data_fn data,
		      session_reply_fn fn, void *ctx)
{
	struct session *s = session_find(id, fn, ctx);
	struct session_op *op;

	if (!s || !session_path_ok(path, fn, ctx))
		return;
	op = session_op_new(s, SESSION_OP_GET, fn, ctx);
	op->path = xstrdup(path);
	op->data = data;
	op->limit = session_table.lim.max_disk;
	session_file_read(s, op);
}

void session_file_delete(const char *id, const char *path, bool recursive,
			 session_reply_fn fn, void *ctx)
{
	struct session *s = session_find(id, fn, ctx);
	struct session_op *op;
	json_t *a;

	if (!s || !session_path_ok(path, fn, ctx))
		return;
	op = session_op_new(s, SESSION_OP_DELETE, fn, ctx);
	op->path = xstrdup(path);
	a = path_args(path);
	json_object_set_new(a, "recursive", json_boolean(recursive));
	session_command(s, SANDBOX_CMD_FILE_DELETE, op->id, a, NULL, 0);
}

/* A reply naming op's path, with the fields of more (taken). */
static json_t *path_reply(struct session_op *op, json_t *more)
{
	json_t *o = json_object();

	session_path_set(o, op->path);
	json_object_update(o, more);
	json_decref(more);
	return o;
}

/* A chunk of a file read (or its first answer). Returns false when the
 * op is done. */
static bool read_reply(struct session *s, struct session_op *op,
		       const struct sandbox_event *ev, json_t *args, int err)
{
	json_t *entries = json_object_get(args, "entries");
	uint64_t size =
		(uint64_t)json_integer_value(json_object_get(args, "size"));
	size_t len;

	if (entries) {
		if (!json_is_array(entries)) {
			session_reply_error(op->fn, op->ctx, 500,
					    "sandbox_error",
					    "the sandbox's init sent a bad "
					    "listing");
			return false;
		}
		session_reply_json(
			op->fn, op->ctx, 200,
			path_reply(op, json_pack("{s:O}", "entries", entries)));
		return false;
	}
	if (err == EISDIR && !op->sent) {
		/* A directory: ask for its listing instead. */
		session_command(s, SANDBOX_CMD_FILE_LIST, op->id,
				path_args(op->path), NULL, 0);
		return true;
	}
	if (err) {
		/* After the first chunk the reply has begun: this error
		 * fails it midway. */
		session_reply_errno(op->fn, op->ctx, err, op->path);
		return false;
	}
	if (!op->sent && !op->waiting) {
		/* The first answer: the file's size now is what is sent. */
		if (size > session_table.lim.max_disk) {
			session_reply_error(
				op->fn, op->ctx, 413, "payload_too_large",
				"'%s' is larger than the limit (%llu bytes)",
				op->path,
				(unsigned long long)session_table.lim.max_disk);
			return false;
		}
		op->limit = size;
	}
	/* A file that grew while read is sent as long as it first was. */
	len = ev->payload_len < op->limit - op->sent
		      ? ev->payload_len
		      : (size_t)(op->limit - op->sent);
	if (!len) {
		/* The end, or a file that shrank while read. */
		if (op->sent)
			session_reply_json(op->fn, op->ctx, 200, NULL);
		else if (op->fn) {
			struct session_reply r = {.status = 200, .raw = ""};

			op->fn(op->ctx, &r);
		}
		return false;
	}
	op->sent += len;
	if (op->data)
		op->data(op->ctx, ev->payload, len);
	if (op->sent >= op->limit) {
		session_reply_json(op->fn, op->ctx, 200, NULL);
		return false;
	}
	if (op->abandoned) {
		session_reply_json(op->fn, op->ctx, 200, NULL);
		return false;
	}
	op->waiting = true;
	return true;
}

void session_file_reply(struct session *s, struct session_op *op,
			const struct sandbox_event *ev, json_t *args)
{
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
			session_reply_json(
				op->fn, op->ctx, 201,
				path_reply(op, json_pack("{s:I}", "size",
							 (json_int_t)op->len)));
		break;
	case SESSION_OP_GET:
		done = !read_reply(s, op, ev, args, err);
		break;
	case SESSION_OP_DELETE:
		if (err)
			session_reply_errno(op->fn, op->ctx, err, op->path);
		else
			session_reply_json(
				op->fn, op->ctx, 200,
				path_reply(op,
					   json_pack("{s:b}", "deleted", 1)));
		break;
	default:
		break;
	}
	if (done)
		session_op_drop(s, op);
}

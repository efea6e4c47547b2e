/*
 * Stateful sandboxes: single files in and out and directory listings.
 * Transfers are cut into SESSION_CHUNK commands. A file read goes out to
 * the client a chunk at a time: the next chunk is asked of init only once
 * the client's connection has taken the last, so a read holds about one
 * chunk whatever the file's size. Uploads (files here, archives in
 * session_archive.c) come the other way the same way: the receiver gives
 * the next chunk only once init has taken the last. Init does the work as the
 * sandbox user, inside the sandbox's own mount namespace.
 *
 * Paths are bytes: one that is not UTF-8 travels to init as "path_b64",
 * and replies name it both ways (see session_path_set()).
 */
#include <errno.h>
#include <signal.h>
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

void session_file_put(const char *id, const char *path, session_ready_fn ready,
		      session_reply_fn fn, void *ctx)
{
	struct session *s = session_find(id, fn, ctx);
	struct session_op *op;

	if (!s || !session_path_ok(path, fn, ctx))
		return;
	op = session_op_new(s, SESSION_OP_PUT, fn, ctx);
	op->path = xstrdup(path);
	op->ready = ready;
}

/* The upload op of ctx, a client's request, wherever it is. */
static struct session_op *upload_op(void *ctx, struct session **sp)
{
	struct session *s;
	struct session_op *op;

	for (s = session_table.list; s; s = s->next)
		for (op = s->ops; op; op = op->next)
			if (op->ctx == ctx &&
			    (op->kind == SESSION_OP_PUT ||
			     op->kind == SESSION_OP_ARCHIVE_PUT)) {
				*sp = s;
				return op;
			}
	return NULL;
}

/* Replies 201 for a file upload that is whole. */
static void put_done(struct session_op *op);

void session_upload_chunk(void *ctx, const char *data, size_t len, bool last)
{
	struct session *s;
	struct session_op *op = upload_op(ctx, &s);
	json_t *a;

	if (!op || op->last || op->abandoned || op->pending)
		return; /* answered already, or not asked for */
	op->last = last;
	/* A long upload keeps its sandbox in use. */
	s->last_used_ns = now_ns();
	if (op->kind == SESSION_OP_ARCHIVE_PUT) {
		session_archive_feed(s, op, data, len);
		return;
	}
	/* The chunks go to a part file of the op's own, the first creating
	 * it (and the parents), the others appending; the last (empty when
	 * the body ended on a chunk's edge) renames it over the path, so the
	 * file is replaced whole or not at all. */
	a = path_args(op->path);
	json_object_set_new(a, "part", json_integer(op->id));
	json_object_set_new(a, "append", json_boolean(op->started));
	json_object_set_new(a, "mkdirs", json_boolean(!op->started));
	json_object_set_new(a, "commit", json_boolean(last));
	json_object_set_new(a, "created",
			    json_integer((json_int_t)op->created));
	op->started = true;
	if (session_command(s, SANDBOX_CMD_FILE_WRITE, op->id, a, data, len)) {
		session_reply_error(op->fn, op->ctx, 410, "gone",
				    "the sandbox is gone");
		session_op_drop(s, op);
		return;
	}
	op->pending = 1;
	op->len += len;
}

/* Removes the part file of an upload that will not end. */
static void discard_part(struct session *s, struct session_op *op)
{
	json_t *a;

	if (!op->started)
		return;
	a = path_args(op->path);
	json_object_set_new(a, "part", json_integer(op->id));
	json_object_set_new(a, "discard", json_true());
	json_object_set_new(a, "created",
			    json_integer((json_int_t)op->created));
	session_command(s, SANDBOX_CMD_FILE_WRITE, op->id, a, NULL, 0);
}

void session_upload_abandon(struct session *s, struct session_op *op)
{
	if (op->kind == SESSION_OP_ARCHIVE_PUT) {
		/* tar's end replies; SIGTERM lets its shell remove what was
		 * unpacked so far. */
		session_command(s, SANDBOX_CMD_SIGNAL, op->id,
				json_pack("{s:i}", "signal", SIGTERM), NULL, 0);
		return;
	}
	if (op->pending)
		return; /* init's answer to the chunk it has replies */
	discard_part(s, op);
	session_reply_error(op->fn, op->ctx, 400, "bad_request",
			    "the upload of '%s' was cut short", op->path);
	session_op_drop(s, op);
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

static void put_done(struct session_op *op)
{
	session_reply_json(op->fn, op->ctx, 201,
			   path_reply(op, json_pack("{s:I}", "size",
						    (json_int_t)op->len)));
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
		/* One chunk is out at a time: its answer asks for the next,
		 * or ends the upload. */
		op->pending = 0;
		if (json_integer_value(json_object_get(args, "created")))
			op->created = (uint64_t)json_integer_value(
				json_object_get(args, "created"));
		if (err) {
			session_reply_errno(op->fn, op->ctx, err, op->path);
		} else if (op->abandoned) {
			discard_part(s, op);
			session_reply_error(op->fn, op->ctx, 400, "bad_request",
					    "the upload of '%s' was cut short",
					    op->path);
		} else if (op->last) {
			put_done(op);
		} else {
			/* The receiver may give the next chunk at once, and
			 * that may end the op: op is not touched after. */
			done = false;
			op->ready(op->ctx);
		}
		break;
	case SESSION_OP_ARCHIVE_PUT:
		/* tar's end ends the op. */
		done = false;
		session_archive_fed(s, op, err);
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

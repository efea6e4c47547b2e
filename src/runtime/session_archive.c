/*
 * Stateful sandboxes: whole trees in and out as tar archives. tar runs as
 * the sandbox user inside the sandbox, so tar's own rules (no absolute
 * names, no "..") apply and a hostile archive can only touch the sandbox.
 *
 * An archive coming in is fed to tar's stdin a chunk at a time as the
 * client sends it: init answers each chunk once it is in tar's pipe, and
 * only then is the next one read from the client.
 *
 * An archive going out is GNU tar with sparse files kept sparse, of a
 * tree under the sandbox's writable roots (which share its one disk), so
 * it is never larger than what the sandbox can hold: its disk limit plus
 * its memory limit (headers of files that use no disk, such as empty
 * ones, cost inodes, which are charged to its memory). tar's output is
 * not relayed as it comes: init holds it in the pipe and hands the host
 * one chunk per request (a "pull"), and the host asks for the next only
 * once the client's connection has taken the last, so the server holds
 * about one chunk per archive whatever its size.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/text.h"
#include "base/util.h"
#include "runtime/result.h"
#include "runtime/session_internal.h"
#include "base/banned.h"

/* Where archives may be made of: the writable roots, one disk. */
#define ROOTS "/work, /tmp, /mnt, /home/sandbox and /dev/shm"
static const char *const roots[] = {"/work", "/tmp", "/mnt", "/home/sandbox",
				    "/dev/shm"};

/* Exit statuses of the script below that are answers, not tar's. */
enum {
	EXIT_NOT_FOUND = 64,
	EXIT_NOT_DIR = 65,
	EXIT_DENIED = 66,
	EXIT_OUTSIDE = 67,
};

/* $1 is the directory, or $2 its bytes in base64 when it is not UTF-8
 * (JSON cannot carry them). The tree is checked where it really is, after
 * symlinks: cd -P resolves them and the checked directory is tar's
 * working directory, so nothing can swap it afterwards. */
static const char get_script[] =
	"d=$1; if [ -n \"$2\" ]; then d=$(printf %s \"$2\" | base64 -d; "
	"echo x); d=${d%x}; fi; "
	"cd -P -- \"$d\" 2>/dev/null || { [ -e \"$d\" ] || exit 64; "
	"[ -d \"$d\" ] || exit 65; exit 66; }; "
	"case $(pwd -P) in /work|/work/*|/tmp|/tmp/*|/mnt|/mnt/*|"
	"/home/sandbox|/home/sandbox/*|/dev/shm|/dev/shm/*) ;; *) exit 67;; "
	"esac; exec tar --sparse --one-file-system -c -f - .";

/* All or nothing: tar unpacks into a staging directory of the upload's
 * own ($3, the op id) beside the tree, and only a whole archive is then
 * linked into place (hard links: no second copy of the data) and the
 * staging removed. A bad member, a cut body or a client that leaves
 * (SIGTERM, trapped; ignored once the linking has begun, so it is never
 * left half done) leaves nothing behind. */
static const char put_script[] =
	"d=$1; if [ -n \"$2\" ]; then d=$(printf %s \"$2\" | base64 -d; "
	"echo x); d=${d%x}; fi; "
	"mkdir -p -- \"$d\" || exit 2; s=$d/.sbx-upload-$3; "
	"trap 'rm -rf -- \"$s\"; exit 143' TERM; "
	"rm -rf -- \"$s\"; mkdir -- \"$s\" || exit 2; "
	"tar -x -f - --no-same-owner --no-same-permissions -C \"$s\" && "
	"{ trap '' TERM; cp -R -P -l --remove-destination -- \"$s\"/. "
	"\"$d\"/; }; "
	"r=$?; rm -rf -- \"$s\"; exit $r";

/* ["/bin/sh", "-c", script, "sh", dir or "", "" or dir in base64] */
static json_t *script_argv(const char *script, const char *dir)
{
	json_t *argv = json_pack("[s,s,s,s]", "/bin/sh", "-c", script, "sh");
	size_t len = strlen(dir);
	struct buf b;

	buf_init(&b);
	if (utf8_repair(&b, dir, len)) {
		json_array_append_new(argv, json_string(dir));
		json_array_append_new(argv, json_string(""));
	} else {
		buf_reset(&b);
		base64_encode(&b, dir, len);
		json_array_append_new(argv, json_string(""));
		json_array_append_new(argv, json_stringn(b.data, b.len));
	}
	buf_release(&b);
	return argv;
}

/* Answers a path that cannot be archived at once, before tar starts: a
 * ".." anywhere, or an absolute path outside the writable roots (such as
 * /, /proc or /usr: the host's files, or files that never end). */
static bool archive_path_ok(const char *dir, session_reply_fn fn, void *ctx)
{
	const char *p = dir;
	size_t i;

	if (!session_path_ok(dir, fn, ctx))
		return false;
	while (*p) {
		size_t n = strcspn(p, "/");

		if (n == 2 && p[0] == '.' && p[1] == '.') {
			session_reply_error(fn, ctx, 400, "bad_request",
					    "cannot archive '%s': '..' is not "
					    "allowed; give a path under " ROOTS,
					    dir);
			return false;
		}
		p += n;
		p += strspn(p, "/");
	}
	if (dir[0] != '/')
		return true; /* under /work */
	for (i = 0; i < ARRAY_SIZE(roots); i++) {
		size_t n = strlen(roots[i]);

		if (!strncmp(dir, roots[i], n) &&
		    (dir[n] == '\0' || dir[n] == '/'))
			return true;
	}
	session_reply_error(fn, ctx, 403, "forbidden",
			    "cannot archive '%s': only trees under " ROOTS
			    " can be archived",
			    dir);
	return false;
}

void session_archive_pull(struct session *s, struct session_op *op, bool close)
{
	json_t *a = json_pack("{s:b,s:I,s:b}", "pull", 1, "max",
			      (json_int_t)SESSION_CHUNK, "close", close);

	if (close && !op->eof)
		session_command(s, SANDBOX_CMD_SIGNAL, op->id,
				json_pack("{s:i}", "signal", SIGKILL), NULL, 0);
	session_command(s, SANDBOX_CMD_FILE_READ, op->id, a, NULL, 0);
}

/* Stops the archive with an error reply now; its tar is killed and the
 * op ends when tar's end is seen. */
static void archive_fail(struct session *s, struct session_op *op,
			 unsigned status, const char *code, const char *why)
{
	session_reply_error(op->fn, op->ctx, status, code,
			    "cannot archive '%s': %s", op->path, why);
	op->fn = NULL;
	op->data = NULL;
	op->abandoned = true;
	session_archive_pull(s, op, true);
}

void session_archive_chunk(struct session *s, struct session_op *op,
			   const struct sandbox_event *ev, json_t *args)
{
	bool eof = json_is_true(json_object_get(args, "eof")) ||
		   json_integer_value(json_object_get(args, "errno"));

	if (op->abandoned)
		return; /* the end of tar ends the op */
	if (ev->payload_len > op->limit - op->sent) {
		char why[128];

		snprintf(why, sizeof(why),
			 "larger than the sandbox can hold (%llu bytes)",
			 (unsigned long long)op->limit);
		archive_fail(s, op, 413, "payload_too_large", why);
		return;
	}
	if (eof)
		op->eof = true;
	if (ev->payload_len) {
		op->sent += ev->payload_len;
		if (op->data)
			op->data(op->ctx, ev->payload, ev->payload_len);
		if (!eof)
			op->waiting = true;
	} else if (!eof) {
		session_archive_pull(s, op, false);
	}
}

void session_archive_ended(struct session *s, struct session_op *op,
			   const struct sandbox_event *ev)
{
	const struct sandbox_step_result *r = &ev->result;
	const char *tar_err = op->err.data ? op->err.data : "";
	bool exited = !r->signal && r->status != SANDBOX_TIME_LIMIT &&
		      r->status != SANDBOX_ERROR;

	if (ev->err) {
		session_reply_start_error(op->fn, op->ctx, ev->err);
		return;
	}
	if (op->kind == SESSION_OP_ARCHIVE_PUT) {
		if (r->status == SANDBOX_OK)
			session_reply_json(
				op->fn, op->ctx, 200,
				json_pack(
					"{s:o}", "path",
					json_text(op->path, strlen(op->path))));
		else
			session_reply_error(op->fn, op->ctx, 400, "bad_archive",
					    "tar could not extract into '%s': "
					    "%.300s",
					    op->path, tar_err);
		return;
	}
	if (!op->fn)
		return; /* answered already */
	/* GNU tar's 1 means a file changed while it was read: the archive
	 * is whole. */
	if (exited && r->exit_code <= 1 && op->eof) {
		if (op->sent) {
			session_reply_json(op->fn, op->ctx, 200, NULL);
		} else {
			struct session_reply e = {.status = 200, .raw = ""};

			op->fn(op->ctx, &e);
		}
		return;
	}
	if (op->sent) {
		session_reply_error(op->fn, op->ctx, 500, "sandbox_error",
				    "the archive of '%s' failed midway: "
				    "%.300s",
				    op->path,
				    *tar_err ? tar_err : "tar was stopped");
		return;
	}
	switch (exited ? r->exit_code : -1) {
	case EXIT_NOT_FOUND:
		session_reply_error(op->fn, op->ctx, 404, "not_found",
				    "cannot archive '%s': no such directory",
				    op->path);
		break;
	case EXIT_NOT_DIR:
		session_reply_error(op->fn, op->ctx, 400, "bad_request",
				    "cannot archive '%s': not a directory",
				    op->path);
		break;
	case EXIT_DENIED:
		session_reply_error(op->fn, op->ctx, 403, "forbidden",
				    "cannot archive '%s': permission denied",
				    op->path);
		break;
	case EXIT_OUTSIDE:
		session_reply_error(
			op->fn, op->ctx, 403, "forbidden",
			"cannot archive '%s': it leads outside " ROOTS
			", the only trees that can be "
			"archived",
			op->path);
		break;
	default:
		session_reply_error(op->fn, op->ctx, 500, "sandbox_error",
				    "cannot archive '%s': tar failed: %.300s",
				    op->path, tar_err);
		break;
	}
}

void session_archive_put(const char *id, const char *dir,
			 session_ready_fn ready, session_reply_fn fn, void *ctx)
{
	struct session *s = session_find(id, fn, ctx);
	json_t *argv;
	struct session_op *op;

	if (!s || !session_path_ok(dir, fn, ctx))
		return;
	op = session_op_new(s, SESSION_OP_ARCHIVE_PUT, fn, ctx);
	op->path = xstrdup(dir);
	op->ready = ready;
	/* GNU tar refuses absolute names and ".." by default; as the
	 * sandbox user inside the sandbox it can write nowhere else. Its
	 * stdin is fed as the upload comes, so it has no time limit: a
	 * client that leaves stops it. */
	argv = script_argv(put_script, dir);
	json_array_append_new(argv, json_sprintf("%u", op->id));
	if (session_send_exec(s, op->id, argv, NULL, NULL, 0, 1 << 20, NULL, 0,
			      false)) {
		session_op_drop(s, op);
		session_reply_error(fn, ctx, 410, "gone",
				    "the sandbox is gone");
	}
	json_decref(argv);
}

void session_archive_feed(struct session *s, struct session_op *op,
			  const char *data, size_t len)
{
	/* Init answers once the bytes are in tar's pipe ("ack"), so init
	 * holds one chunk at most too. */
	json_t *a = json_pack("{s:b,s:b}", "close", op->last, "ack", 1);

	if (session_command(s, SANDBOX_CMD_STDIN, op->id, a, data, len) == 0)
		op->pending = 1;
	/* Else the sandbox is gone, and its end answers the op. */
}

void session_archive_fed(struct session *s, struct session_op *op, int err)
{
	op->pending = 0;
	/* With an error tar has stopped reading (it failed, or it found
	 * the archive's end); its end replies either way. */
	if (!err && !op->last && !op->abandoned)
		op->ready(op->ctx);
}

void session_archive_get(const char *id, const char *dir, session_data_fn data,
			 session_reply_fn fn, void *ctx)
{
	struct session *s = session_find(id, fn, ctx);
	struct session_op *op;
	json_t *a;

	if (!s || !archive_path_ok(dir, fn, ctx))
		return;
	op = session_op_new(s, SESSION_OP_ARCHIVE_GET, fn, ctx);
	op->path = xstrdup(dir);
	op->data = data;
	op->cap = 64 << 10; /* tar's messages kept */
	op->limit = s->disk_bytes + s->memory_bytes;
	/* No time limit: a slow client slows tar, which is fine; one that
	 * leaves stops it. */
	a = json_pack("{s:o,s:I,s:I,s:b,s:b}", "argv",
		      script_argv(get_script, dir), "timeout_ms", (json_int_t)0,
		      "output_bytes", (json_int_t)op->cap, "stdin_close", 1,
		      "pull", 1);
	if (session_command(s, SANDBOX_CMD_EXEC, op->id, a, NULL, 0)) {
		session_op_drop(s, op);
		session_reply_error(fn, ctx, 410, "gone",
				    "the sandbox is gone");
		return;
	}
	session_archive_pull(s, op, false);
}

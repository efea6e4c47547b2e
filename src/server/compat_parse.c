/*
 * /run_code request parsing. Field names, types and defaults follow
 * SandboxFusion's RunCodeRequest; unknown fields are ignored as its
 * pydantic model does.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <jansson.h>

#include "base/text.h"
#include "base/util.h"
#include "sandbox/sandbox.h"
#include "server/compat.h"
#include "base/banned.h"

#define DEFAULT_TIMEOUT_MS 10000
#define MAX_FILES 1024

static int bad(struct compat_error *err, const char *field, const char *msg)
{
	str_copy(err->field, sizeof(err->field), field);
	str_copy(err->message, sizeof(err->message), msg);
	return -1;
}

/* A timeout in seconds, checked against the shared wall-time rule. One
 * above the server's maximum is lowered to it: SandboxFusion takes any
 * value, and its clients derive theirs from the number of tests (tinker
 * asks 7 s per test and 5 more), so refusing would fail a run that would
 * have passed. */
static int get_timeout(json_t *root, const char *key,
		       const struct limits_rules *rules, uint64_t *out,
		       struct compat_error *err)
{
	const struct limits_field f = {key, LIMITS_WALL, 1000, true};
	json_t *v = json_object_get(root, key);
	char msg[128];
	double x;

	*out = DEFAULT_TIMEOUT_MS;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_number(v))
		return bad(err, key, "must be a number of seconds");
	x = json_number_value(v);
	if (isfinite(x) && x * 1000 > (double)rules->max[LIMITS_WALL]) {
		*out = rules->max[LIMITS_WALL];
		return 0;
	}
	if (limits_parse(rules, &f, v, 0, out, msg, sizeof(msg)))
		return bad(err, key, msg);
	return 0;
}

/* Paths stay inside what a sandbox can write: no NUL, no "..". */
static bool path_ok(const char *p, size_t len)
{
	const char *s;

	if (len == 0 || len > 4096 || memchr(p, '\0', len))
		return false;
	for (s = p; (s = strstr(s, "..")); s += 2)
		if ((s == p || s[-1] == '/') && (s[2] == '/' || s[2] == '\0'))
			return false;
	return true;
}

/* Where a file may be placed (the README's rule, which init applies
 * again): relative to the work dir, or under /tmp, /mnt or the home dir. */
static bool place_ok(const char *p, size_t len)
{
	static const char *const roots[] = {SANDBOX_WORK_DIR "/", "/tmp/",
					    "/mnt/", SANDBOX_HOME_DIR "/"};
	size_t i;

	if (!path_ok(p, len))
		return false;
	if (p[0] != '/')
		return true;
	for (i = 0; i < ARRAY_SIZE(roots); i++)
		if (str_starts_with(p, roots[i]) && p[strlen(roots[i])])
			return true;
	return false;
}

json_t *compat_load(const char *body, size_t len, struct compat_error *err)
{
	json_error_t jerr;
	json_t *root;
	char msg[256];

	memset(err, 0, sizeof(*err));
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL,
			  &jerr);
	if (!root) {
		snprintf(msg, sizeof(msg), "the body is not valid JSON: %s",
			 jerr.text);
		bad(err, "body", msg);
	}
	return root;
}

/* The body, fed to the parser a piece at a time: the pages it has read
 * are given back (they are never read again), so a body of tens of MB is
 * not held whole next to the parser's copy of it. */
struct feed {
	char *data;
	size_t len, off;
	uintptr_t given; /* pages below this address are given back */
};

#define FEED_STEP (1u << 20)

static size_t feed_read(void *out, size_t n, void *arg)
{
	struct feed *f = arg;
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), end;

	if (n > f->len - f->off)
		n = f->len - f->off;
	memcpy(out, f->data + f->off, n);
	f->off += n;
	end = ((uintptr_t)f->data + f->off) & ~(page - 1);
	if (!f->given)
		f->given = ((uintptr_t)f->data + page - 1) & ~(page - 1);
	if (end > f->given && end - f->given >= FEED_STEP) {
		madvise((void *)f->given, end - f->given, MADV_DONTNEED);
		f->given = end;
	}
	return n;
}

json_t *compat_load_consume(char *body, size_t len, struct compat_error *err)
{
	struct feed f = {.data = body, .len = len};
	json_error_t jerr;
	json_t *root;
	char msg[256];

	if (len < FEED_STEP)
		return compat_load(body, len, err);
	memset(err, 0, sizeof(*err));
	root = json_load_callback(
		feed_read, &f, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
	if (!root) {
		snprintf(msg, sizeof(msg), "the body is not valid JSON: %s",
			 jerr.text);
		bad(err, "body", msg);
	}
	return root;
}

int compat_parse(const char *body, size_t len, const struct limits_rules *rules,
		 struct compat_req *req, struct compat_error *err)
{
	json_t *root = compat_load(body, len, err);

	if (!root) {
		memset(req, 0, sizeof(*req));
		return -1;
	}
	return compat_parse_json(root, rules, req, err);
}

int compat_parse_json(json_t *root, const struct limits_rules *rules,
		      struct compat_req *req, struct compat_error *err)
{
	json_t *v, *val;
	const char *key;
	char msg[256];
	int r = -1;

	memset(req, 0, sizeof(*req));
	memset(err, 0, sizeof(*err));
	if (!json_is_object(root)) {
		bad(err, "body", "must be a JSON object");
		goto out;
	}
	v = json_object_get(root, "code");
	if (!v) {
		bad(err, "code", "field required");
		goto out;
	}
	if (!json_is_string(v)) {
		bad(err, "code", "must be a string");
		goto out;
	}
	req->code_len = json_string_length(v);
	req->code = xmalloc(req->code_len + 1);
	memcpy(req->code, json_string_value(v), req->code_len + 1);

	v = json_object_get(root, "language");
	if (!v) {
		bad(err, "language", "field required");
		goto out;
	}
	if (!json_is_string(v)) {
		bad(err, "language", "must be a string");
		goto out;
	}
	if (strlen(json_string_value(v)) != json_string_length(v)) {
		bad(err, "language", "must not contain NUL");
		goto out;
	}
	req->language = xstrdup(json_string_value(v));
	req->lang = lang_find(req->language);

	if (get_timeout(root, "compile_timeout", rules, &req->compile_ms,
			err) ||
	    get_timeout(root, "run_timeout", rules, &req->run_ms, err))
		goto out;

	v = json_object_get(root, "memory_limit_MB");
	req->memory_mb = -1;
	if (v && !json_is_null(v)) {
		const struct limits_field f = {"memory_limit_MB", LIMITS_MEMORY,
					       1 << 20, false};
		uint64_t bytes;

		if (!json_is_integer(v)) {
			bad(err, "memory_limit_MB", "must be an integer");
			goto out;
		}
		/* -1 (or any value below 1) is SandboxFusion's "the
		 * server's default"; the rest follow the shared rule, so a
		 * runtime never starts in a few hundred KiB and looks like
		 * it passed. */
		if (json_integer_value(v) > 0) {
			if (limits_parse(rules, &f, v, 0, &bytes, msg,
					 sizeof(msg))) {
				bad(err, "memory_limit_MB", msg);
				goto out;
			}
			req->memory_mb = (int64_t)(bytes >> 20);
		}
	}

	v = json_object_get(root, "stdin");
	if (v && !json_is_null(v)) {
		if (!json_is_string(v)) {
			bad(err, "stdin", "must be a string or null");
			goto out;
		}
		req->stdin_len = json_string_length(v);
		req->stdin_data = xmalloc(req->stdin_len + 1);
		memcpy(req->stdin_data, json_string_value(v),
		       req->stdin_len + 1);
	}

	v = json_object_get(root, "files");
	if (v && !json_is_null(v)) {
		if (!json_is_object(v)) {
			bad(err, "files",
			    "must be an object of path to base64 content");
			goto out;
		}
		if (json_object_size(v) > MAX_FILES) {
			bad(err, "files", "too many files");
			goto out;
		}
		req->files =
			xcalloc(json_object_size(v) + 1, sizeof(*req->files));
		json_object_foreach(v, key, val)
		{
			struct compat_file *f;

			if (json_is_null(val) ||
			    strstr(key, "IGNORE_THIS_FILE"))
				continue;
			if (!json_is_string(val)) {
				bad(err, "files",
				    "values must be base64 strings or null");
				goto out;
			}
			if (!place_ok(key, strlen(key))) {
				snprintf(msg, sizeof(msg),
					 "bad file path '%.120s': files go "
					 "relative to " SANDBOX_WORK_DIR
					 " or under /tmp, /mnt "
					 "or " SANDBOX_HOME_DIR,
					 key);
				bad(err, "files", msg);
				goto out;
			}
			f = &req->files[req->nfiles++];
			f->path = xstrdup(key);
			buf_init(&f->data);
			if (base64_decode(&f->data, json_string_value(val),
					  json_string_length(val)) &&
			    !req->file_error)
				req->file_error = xstrdup(key);
			/* Decoded: the text is not held twice. */
			json_string_setn(val, "", 0);
		}
	}

	v = json_object_get(root, "fetch_files");
	if (v && !json_is_null(v)) {
		size_t i;

		if (!json_is_array(v)) {
			bad(err, "fetch_files", "must be a list of paths");
			goto out;
		}
		if (json_array_size(v) > MAX_FILES) {
			bad(err, "fetch_files", "too many files");
			goto out;
		}
		req->fetch =
			xcalloc(json_array_size(v) + 1, sizeof(*req->fetch));
		json_array_foreach(v, i, val)
		{
			if (!json_is_string(val) ||
			    !path_ok(json_string_value(val),
				     json_string_length(val))) {
				bad(err, "fetch_files",
				    "entries must be paths without '..'");
				goto out;
			}
			req->fetch[req->nfetch++] =
				xstrdup(json_string_value(val));
		}
	}
	r = 0;
out:
	json_decref(root);
	if (r)
		compat_req_release(req);
	return r;
}

void compat_req_release(struct compat_req *req)
{
	size_t i;

	free(req->code);
	free(req->language);
	free(req->stdin_data);
	for (i = 0; i < req->nfiles; i++) {
		free(req->files[i].path);
		buf_release(&req->files[i].data);
	}
	free(req->files);
	for (i = 0; i < req->nfetch; i++)
		free(req->fetch[i]);
	free(req->fetch);
	free(req->file_error);
	memset(req, 0, sizeof(*req));
}

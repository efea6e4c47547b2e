/*
 * POST /v1/run request parsing. The native API is new, so it is strict:
 * unknown fields, wrong types and out-of-range limits are refused with the
 * field named, rather than ignored or clamped. A null value counts as the
 * field being absent. Strings may hold NUL bytes where a program could
 * read them (source, files, stdin, expected output), not where they would
 * end up in an argv or a path.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/util.h"
#include "server/native.h"
#include "base/banned.h"

static const char *const top_fields[] = {
	"language", "source", "files", "entry",	 "args", "stdin",
	"limits",   "tests",  "llm",   "models", "gpus", "gpu_shared",
};

static const char *const test_fields[] = {"stdin", "expected_stdout"};

static int bad(struct native_error *err, const char *field, const char *msg)
{
	str_copy(err->field, sizeof(err->field), field);
	str_copy(err->message, sizeof(err->message), msg);
	return -1;
}

static bool is_one_of(const char *key, const char *const *names, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!strcmp(key, names[i]))
			return true;
	return false;
}

/* Returns the first key of obj that is not among names, or NULL. */
static const char *unknown_key(json_t *obj, const char *const *names, size_t n)
{
	const char *key;
	json_t *v;

	json_object_foreach(obj, key, v)
	{
		if (!is_one_of(key, names, n))
			return key;
	}
	return NULL;
}

/* The field's value, or NULL when it is absent or null. */
static json_t *get(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	return v && !json_is_null(v) ? v : NULL;
}

/* A copy of a JSON string's bytes, NUL-terminated; *len gets its length. */
static char *copy_string(json_t *v, size_t *len)
{
	size_t n = json_string_length(v);
	char *s = xmalloc(n + 1);

	memcpy(s, json_string_value(v), n);
	s[n] = '\0';
	if (len)
		*len = n;
	return s;
}

static bool has_nul(json_t *v)
{
	return strlen(json_string_value(v)) != json_string_length(v);
}

/* Paths stay inside the work dir: relative, no NUL, no ".." and no empty
 * components. */
static bool path_ok(const char *p)
{
	size_t len = strlen(p);
	const char *c = p;

	if (len == 0 || len > 1024 || p[0] == '/')
		return false;
	for (;;) {
		size_t n = strcspn(c, "/");

		if (n == 0 || (n == 2 && c[0] == '.' && c[1] == '.'))
			return false;
		if (!c[n])
			return true;
		c += n + 1;
	}
}

static int parse_language(json_t *root, struct native_req *req,
			  struct native_error *err)
{
	json_t *v = get(root, "language");
	char names[160], msg[256];

	if (!v)
		return bad(err, "language", "field required");
	if (!json_is_string(v))
		return bad(err, "language", "must be a string");
	req->lang = has_nul(v) ? NULL : lang_find(json_string_value(v));
	if (!req->lang) {
		lang_list(names, sizeof(names));
		snprintf(msg, sizeof(msg),
			 "unknown language '%.40s' (sbx runs: %s)",
			 json_string_value(v), names);
		return bad(err, "language", msg);
	}
	return 0;
}

/* "files" and "entry": the entry becomes the program, the rest are placed
 * beside it. */
static int parse_files(json_t *files, json_t *entry, struct native_req *req,
		       struct native_error *err)
{
	const char *program = req->lang->source, *key;
	char msg[256];
	json_t *v;

	if (!json_is_object(files))
		return bad(err, "files",
			   "must be an object of file name to text");
	if (json_object_size(files) > NATIVE_MAX_FILES) {
		snprintf(msg, sizeof(msg), "at most %d files",
			 NATIVE_MAX_FILES);
		return bad(err, "files", msg);
	}
	if (entry) {
		if (!json_is_string(entry) || has_nul(entry))
			return bad(err, "entry", "must be a file name");
		program = json_string_value(entry);
		if (!json_object_get(files, program)) {
			snprintf(msg, sizeof(msg),
				 "'%.100s' is not among the files", program);
			return bad(err, "entry", msg);
		}
	}
	req->files = xcalloc(json_object_size(files) + 1, sizeof(*req->files));
	json_object_foreach(files, key, v)
	{
		struct native_file *f;

		if (!path_ok(key)) {
			snprintf(msg, sizeof(msg),
				 "bad file name '%.100s' (relative, without "
				 "'..')",
				 key);
			return bad(err, "files", msg);
		}
		if (!json_is_string(v)) {
			snprintf(msg, sizeof(msg),
				 "'%.100s' must be a string (the file's text)",
				 key);
			return bad(err, "files", msg);
		}
		if (!strcmp(key, program)) {
			req->source = copy_string(v, &req->source_len);
			continue;
		}
		/* The program is written under the language's own name. */
		if (!strcmp(key, req->lang->source)) {
			snprintf(msg, sizeof(msg),
				 "'%s' is where the entry program goes for %s; "
				 "make it the entry or rename it",
				 req->lang->source, req->lang->name);
			return bad(err, "files", msg);
		}
		f = &req->files[req->nfiles++];
		f->path = xstrdup(key);
		f->data = copy_string(v, &f->len);
	}
	if (!req->source) {
		snprintf(msg, sizeof(msg),
			 "the program '%s' is missing (add it or name another "
			 "file in 'entry')",
			 program);
		return bad(err, "files", msg);
	}
	return 0;
}

static int parse_args(json_t *args, struct native_req *req,
		      struct native_error *err)
{
	char msg[64];
	json_t *v;
	size_t i;

	if (!json_is_array(args))
		return bad(err, "args", "must be a list of strings");
	if (json_array_size(args) > NATIVE_MAX_ARGS) {
		snprintf(msg, sizeof(msg), "at most %d arguments",
			 NATIVE_MAX_ARGS);
		return bad(err, "args", msg);
	}
	req->args = xcalloc(json_array_size(args) + 1, sizeof(*req->args));
	json_array_foreach(args, i, v)
	{
		if (!json_is_string(v) || has_nul(v))
			return bad(err, "args",
				   "must be a list of strings without NUL");
		req->args[req->nargs++] = copy_string(v, NULL);
	}
	return 0;
}

static int parse_limits(json_t *limits, const struct limits_rules *rules,
			struct native_limits *out, struct native_error *err)
{
	const struct {
		struct limits_field f;
		uint64_t *out;
	} fields[] = {
		{{"wall_ms", LIMITS_WALL, 1, false}, &out->wall_ms},
		{{"cpu_ms", LIMITS_CPU_TIME, 1, false}, &out->cpu_ms},
		{{"memory_mb", LIMITS_MEMORY, 1 << 20, false},
		 &out->memory_bytes},
		{{"pids", LIMITS_PIDS, 1, false}, &out->pids},
		{{"output_bytes", LIMITS_OUTPUT, 1, false}, &out->output_bytes},
		{{"compile_wall_ms", LIMITS_WALL, 1, false},
		 &out->compile_wall_ms},
		{{"cpus", LIMITS_CPUS, 1000, true}, &out->cpu_milli},
		{{"cpu_weight", LIMITS_CPU_WEIGHT, 1, false}, &out->cpu_weight},
	};
	char field[64], msg[128];
	const char *key;
	json_t *v;
	size_t i;

	if (!json_is_object(limits))
		return bad(err, "limits", "must be an object");
	json_object_foreach(limits, key, v)
	{
		for (i = 0; i < ARRAY_SIZE(fields); i++)
			if (!strcmp(key, fields[i].f.name))
				break;
		snprintf(field, sizeof(field), "limits.%.40s", key);
		if (i == ARRAY_SIZE(fields))
			return bad(err, field, "unknown field");
		if (json_is_null(v))
			continue;
		if (limits_parse(rules, &fields[i].f, v, 0, fields[i].out, msg,
				 sizeof(msg)))
			return bad(err, field, msg);
	}
	return 0;
}

static int parse_tests(json_t *tests, struct native_req *req,
		       struct native_error *err)
{
	char field[64], msg[64];
	const char *key;
	json_t *t, *v;
	size_t i;

	if (!json_is_array(tests))
		return bad(err, "tests", "must be a list of test objects");
	if (json_array_size(tests) == 0)
		return bad(err, "tests", "must hold at least one test");
	if (json_array_size(tests) > NATIVE_MAX_TESTS) {
		snprintf(msg, sizeof(msg), "at most %d tests",
			 NATIVE_MAX_TESTS);
		return bad(err, "tests", msg);
	}
	req->tests = xcalloc(json_array_size(tests), sizeof(*req->tests));
	json_array_foreach(tests, i, t)
	{
		struct native_test *nt = &req->tests[req->ntests++];

		snprintf(field, sizeof(field), "tests[%zu]", i);
		if (!json_is_object(t))
			return bad(err, field, "must be an object");
		key = unknown_key(t, test_fields, ARRAY_SIZE(test_fields));
		if (key) {
			snprintf(field, sizeof(field), "tests[%zu].%.32s", i,
				 key);
			return bad(err, field, "unknown field");
		}
		if ((v = get(t, "stdin"))) {
			snprintf(field, sizeof(field), "tests[%zu].stdin", i);
			if (!json_is_string(v))
				return bad(err, field, "must be a string");
			nt->stdin_data = copy_string(v, &nt->stdin_len);
		}
		if ((v = get(t, "expected_stdout"))) {
			snprintf(field, sizeof(field),
				 "tests[%zu].expected_stdout", i);
			if (!json_is_string(v))
				return bad(err, field, "must be a string");
			nt->expected = copy_string(v, &nt->expected_len);
		}
	}
	return 0;
}

static int parse_root(json_t *root, const struct limits_rules *rules,
		      struct native_req *req, struct native_error *err)
{
	json_t *source, *files, *entry, *v;
	const char *key;

	if (!json_is_object(root))
		return bad(err, "body", "must be a JSON object");
	key = unknown_key(root, top_fields, ARRAY_SIZE(top_fields));
	if (key)
		return bad(err, *key ? key : "\"\"", "unknown field");
	if (parse_language(root, req, err))
		return -1;

	source = get(root, "source");
	files = get(root, "files");
	entry = get(root, "entry");
	if (source && files)
		return bad(err, "files", "give 'source' or 'files', not both");
	if (source) {
		if (!json_is_string(source))
			return bad(err, "source", "must be a string");
		if (entry)
			return bad(err, "entry", "only goes with 'files'");
		req->source = copy_string(source, &req->source_len);
	} else if (files) {
		if (parse_files(files, entry, req, err))
			return -1;
	} else {
		return bad(err, "source",
			   "field required (or 'files' with the program)");
	}

	if ((v = get(root, "args")) && parse_args(v, req, err))
		return -1;
	if ((v = get(root, "limits")) &&
	    parse_limits(v, rules, &req->limits, err))
		return -1;
	if ((v = get(root, "tests")) && parse_tests(v, req, err))
		return -1;
	if ((v = get(root, "llm"))) {
		char why[sizeof(err->message)];

		if (gateway_opts_parse(v, false, &req->llm, why, sizeof(why)))
			return bad(err, "llm", why);
		req->llm_given = true;
	}
	{
		char field[64], msg[sizeof(err->message)];

		if (resources_parse(root, &req->res, field, sizeof(field), msg,
				    sizeof(msg)))
			return bad(err, field, msg);
	}
	if ((v = get(root, "stdin"))) {
		if (!json_is_string(v))
			return bad(err, "stdin", "must be a string");
		if (req->ntests)
			return bad(err, "stdin",
				   "not allowed with 'tests' (each test has "
				   "its own stdin)");
		req->stdin_data = copy_string(v, &req->stdin_len);
	}
	return 0;
}

int native_parse(const char *body, size_t len, const struct limits_rules *rules,
		 struct native_req *req, struct native_error *err)
{
	json_error_t jerr;
	json_t *root;
	char msg[256];
	int r;

	memset(req, 0, sizeof(*req));
	memset(err, 0, sizeof(*err));
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL,
			  &jerr);
	if (!root) {
		snprintf(msg, sizeof(msg),
			 "not valid JSON: %s (line %d, column %d)", jerr.text,
			 jerr.line, jerr.column);
		return bad(err, "body", msg);
	}
	r = parse_root(root, rules, req, err);
	json_decref(root);
	if (r)
		native_req_release(req);
	return r;
}

void native_req_release(struct native_req *req)
{
	size_t i;

	free(req->source);
	for (i = 0; i < req->nfiles; i++) {
		free(req->files[i].path);
		free(req->files[i].data);
	}
	free(req->files);
	for (i = 0; i < req->nargs; i++)
		free(req->args[i]);
	free(req->args);
	free(req->stdin_data);
	for (i = 0; i < req->ntests; i++) {
		free(req->tests[i].stdin_data);
		free(req->tests[i].expected);
	}
	free(req->tests);
	resources_req_release(&req->res);
	memset(req, 0, sizeof(*req));
}

static size_t trim_newlines(const char *s, size_t len)
{
	while (len && s[len - 1] == '\n')
		len--;
	return len;
}

bool native_output_matches(const char *actual, size_t actual_len,
			   const char *expected, size_t expected_len)
{
	actual_len = actual ? trim_newlines(actual, actual_len) : 0;
	expected_len = expected ? trim_newlines(expected, expected_len) : 0;
	return actual_len == expected_len &&
	       (actual_len == 0 || !memcmp(actual, expected, actual_len));
}

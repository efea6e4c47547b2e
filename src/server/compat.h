/*
 * SandboxFusion's /run_code request, parsed into a plain struct. Separate
 * from the route so the parser can be fuzzed on its own.
 */
#ifndef SBX_SERVER_COMPAT_H
#define SBX_SERVER_COMPAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "base/buf.h"
#include "runtime/lang.h"
#include "runtime/limits.h"

struct compat_file {
	char *path;
	struct buf data; /* decoded */
};

struct compat_req {
	char *code;
	size_t code_len;
	char *language;
	const struct lang *lang; /* NULL when unknown */
	uint64_t compile_ms;
	uint64_t run_ms;
	int64_t memory_mb; /* <= 0: the server's default */
	char *stdin_data;  /* NULL: none */
	size_t stdin_len;
	struct compat_file *files;
	size_t nfiles;
	char **fetch;
	size_t nfetch;
	char *file_error; /* a files entry that would not decode */
};

/* What was wrong with a request: a 422 with a message and the field. */
struct compat_error {
	char field[64];
	char message[400];
};

/* Parses body. Returns 0, or -1 with err filled (a 422). The timeouts and
 * the memory limit are checked against rules. A bad base64 file is not a parse
 * error: SandboxFusion answers it with SandboxError, so it is recorded in
 * file_error. */
int compat_parse(const char *body, size_t len, const struct limits_rules *rules,
		 struct compat_req *req, struct compat_error *err);
/* The same in two steps: the body's JSON (NULL with err filled when it is
 * not JSON), then the request from it (root is taken; the files' text is
 * freed as it is decoded). compat_load_consume() gives the body's memory
 * back to the system as it reads it: the caller only frees it after. */
json_t *compat_load(const char *body, size_t len, struct compat_error *err);
json_t *compat_load_consume(char *body, size_t len, struct compat_error *err);
int compat_parse_json(json_t *root, const struct limits_rules *rules,
		      struct compat_req *req, struct compat_error *err);
void compat_req_release(struct compat_req *req);

#endif

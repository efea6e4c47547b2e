/*
 * libFuzzer target for the SandboxFusion /run_code request parser
 * (src/server/compat.h): any body either parses into a request whose
 * fields hold what the runner relies on, or fails with a field and a
 * message, and nothing leaks either way.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/compat.h"

#define MAX_MS 600000

#define CHECK(cond)              \
	do {                     \
		if (!(cond))     \
			abort(); \
	} while (0)

/* What compat_parse promises a path is: not empty, no NUL, no ".." part. */
static void check_path(const char *p)
{
	size_t len, i;

	CHECK(p);
	len = strlen(p);
	CHECK(len > 0 && len <= 4096);
	for (i = 0; i + 1 < len; i++)
		if (p[i] == '.' && p[i + 1] == '.')
			CHECK(!((i == 0 || p[i - 1] == '/') &&
				(i + 2 == len || p[i + 2] == '/')));
}

static void check_request(const struct compat_req *req)
{
	size_t i;

	CHECK(req->code && req->code[req->code_len] == '\0');
	CHECK(req->language);
	CHECK(!req->lang || !strcmp(req->language, req->lang->name));
	CHECK(req->compile_ms >= 1 && req->compile_ms <= MAX_MS);
	CHECK(req->run_ms >= 1 && req->run_ms <= MAX_MS);
	CHECK(!req->stdin_data || req->stdin_data[req->stdin_len] == '\0');
	CHECK(req->nfiles <= 1024 && (req->nfiles == 0 || req->files));
	for (i = 0; i < req->nfiles; i++) {
		check_path(req->files[i].path);
		CHECK(req->files[i].data.len == 0 || req->files[i].data.data);
	}
	CHECK(req->nfetch <= 1024 && (req->nfetch == 0 || req->fetch));
	for (i = 0; i < req->nfetch; i++)
		check_path(req->fetch[i]);
}

/* Large bodies are parsed as they are read (compat_load_consume), which
 * only happens past a megabyte: some inputs are padded with trailing
 * spaces to that size, and must be taken or refused exactly as the
 * whole-body parser takes or refuses them. */
static void check_streamed(const uint8_t *data, size_t size,
			   const struct limits_rules *rules)
{
	const size_t padded = (1u << 20) + 4096;
	struct compat_req a, b;
	struct compat_error ea, eb;
	json_t *root;
	char *body;
	int ra, rb;

	if (size == 0 || size > 4096 || size % 64 != 0)
		return;
	body = malloc(padded);
	CHECK(body);
	memcpy(body, data, size);
	memset(body + size, ' ', padded - size);
	ra = compat_parse((const char *)body, padded, rules, &a, &ea);
	root = compat_load_consume(body, padded, &eb);
	rb = root ? compat_parse_json(root, rules, &b, &eb) : -1;
	CHECK(ra == rb);
	if (!ra) {
		CHECK(a.code_len == b.code_len &&
		      !memcmp(a.code, b.code, a.code_len));
		CHECK(a.nfiles == b.nfiles && a.nfetch == b.nfetch);
		compat_req_release(&a);
		compat_req_release(&b);
	} else if (root) {
		CHECK(!strcmp(ea.field, eb.field));
	}
	free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct compat_req req;
	struct compat_error err;
	static struct limits_rules rules;
	static int ready;

	if (!ready) {
		limits_rules_init(&rules);
		limits_rules_cap(&rules, LIMITS_WALL, MAX_MS);
		ready = 1;
	}
	check_streamed(data, size, &rules);
	if (compat_parse((const char *)data, size, &rules, &req, &err) == 0) {
		check_request(&req);
		compat_req_release(&req);
		CHECK(!req.code && !req.files && !req.fetch);
		return 0;
	}
	CHECK(memchr(err.field, '\0', sizeof(err.field)) && err.field[0]);
	CHECK(memchr(err.message, '\0', sizeof(err.message)) && err.message[0]);
	return 0;
}

/*
 * The native one-shot run request (POST /v1/run), parsed into a plain
 * struct. The parser knows nothing of the server or of sandboxes, so it
 * links and is fuzzed on its own (tests/fuzz/fuzz_native.c).
 */
#ifndef SBX_SERVER_NATIVE_H
#define SBX_SERVER_NATIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/lang.h"
#include "runtime/limits.h"
#include "server/gateway.h"
#include "server/resources.h"

#define NATIVE_MAX_TESTS 256
#define NATIVE_MAX_FILES 1024
#define NATIVE_MAX_ARGS 256
/* The most a reply may take, serialised: output past it is cut (and the
 * step says "output_truncated"), counted as the JSON text it becomes. */
#define NATIVE_MAX_REPLY (64ull << 20)

/* Client-chosen limits in base units (milliseconds, bytes, thousandths of
 * a core); 0 means "not given, use the server's default". Each is checked
 * against the shared rules (runtime/limits.h). */
struct native_limits {
	uint64_t wall_ms;	  /* per run step (each test) */
	uint64_t cpu_ms;	  /* per run step */
	uint64_t memory_bytes;	  /* the whole sandbox, compile included */
	uint64_t pids;		  /* the whole sandbox */
	uint64_t output_bytes;	  /* per stream and step */
	uint64_t compile_wall_ms; /* the compile step */
	uint64_t cpu_milli;	  /* CPU bandwidth ("cpus": 0.5) */
	uint64_t cpu_weight;	  /* share under contention */
};

/* A file placed in the work dir next to the program. */
struct native_file {
	char *path; /* relative, no "..", no empty components */
	char *data;
	size_t len;
};

struct native_test {
	char *stdin_data; /* NULL: empty stdin */
	size_t stdin_len;
	char *expected; /* NULL: any output is accepted */
	size_t expected_len;
};

struct native_req {
	const struct lang *lang; /* never NULL after a successful parse */
	char *source;		 /* the program, NUL-terminated */
	size_t source_len;
	struct native_file *files; /* the other files (not the program) */
	size_t nfiles;
	char **args; /* NULL-terminated; NULL when none */
	size_t nargs;
	char *stdin_data; /* NULL: empty stdin (without tests only) */
	size_t stdin_len;
	struct native_limits limits;
	struct native_test *tests;
	size_t ntests;		 /* 0: a plain run, no "tests" field */
	struct gateway_opts llm; /* "llm", when llm_given */
	bool llm_given;
	struct resources_req res; /* "models", "gpus", "gpu_shared" */
};

/* What was wrong with a request: field names where ("limits.wall_ms",
 * "tests[3].stdin"), message what. */
struct native_error {
	char field[64];
	char message[256];
};

/* Parses body, checking its limits against rules (a request above a
 * maximum is refused, not clamped). Returns 0 with req filled (free it
 * with native_req_release), or -1 with err filled (the request is
 * released); every error is the client's and answers 422. */
int native_parse(const char *body, size_t len, const struct limits_rules *rules,
		 struct native_req *req, struct native_error *err);
void native_req_release(struct native_req *req);

/* Compares a program's output with the expected one as graders do
 * (Python's a.rstrip("\n") == b.rstrip("\n")). */
bool native_output_matches(const char *actual, size_t actual_len,
			   const char *expected, size_t expected_len);

#endif

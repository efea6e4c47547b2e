/*
 * libFuzzer target for the recipe jobs (src/runtime/lang.h): any code, in
 * every language, gives a job with a plain file name (no '/', no "..",
 * at most a class name long), the code kept or prefixed, and argv lists
 * that end; nothing leaks.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/lang.h"

#define CHECK(cond)              \
	do {                     \
		if (!(cond))     \
			abort(); \
	} while (0)

static void check_argv(char **argv)
{
	size_t i;

	for (i = 0; argv && argv[i]; i++)
		CHECK(argv[i][0] != '\0');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *code = (const char *)data;
	const struct lang *l;
	struct lang_job job;
	unsigned i;

	for (i = 0; (l = lang_at(i)); i++) {
		lang_job_init(&job, l, code, size, NULL);
		CHECK(job.source && *job.source);
		CHECK(!strchr(job.source, '/'));
		CHECK(strcmp(job.source, "..") && strcmp(job.source, "."));
		CHECK(strlen(job.source) <= 140);
		CHECK(job.code && job.code[job.code_len] == '\0');
		CHECK(job.code_len <= size + 16);
		if (!l->prefix)
			CHECK(job.code_len == size &&
			      !memcmp(job.code, code, size));
		CHECK(job.run && job.run[0]);
		check_argv(job.run);
		check_argv(job.compile);
		lang_job_release(&job);
	}
	return 0;
}

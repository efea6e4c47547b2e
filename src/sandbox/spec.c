/*
 * Sandbox specs and results: defaults, appenders and release.
 */
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "sandbox/sandbox.h"
#include "base/banned.h"

const char *sandbox_status_name(enum sandbox_status status)
{
	switch (status) {
	case SANDBOX_OK:
		return "ok";
	case SANDBOX_NONZERO_EXIT:
		return "nonzero_exit";
	case SANDBOX_SIGNALED:
		return "signaled";
	case SANDBOX_TIME_LIMIT:
		return "time_limit";
	case SANDBOX_MEMORY_LIMIT:
		return "memory_limit";
	case SANDBOX_OUTPUT_LIMIT:
		return "output_limit";
	case SANDBOX_ERROR:
		return "sandbox_error";
	}
	return "sandbox_error";
}

void sandbox_spec_init(struct sandbox_spec *spec)
{
	memset(spec, 0, sizeof(*spec));
	spec->limits.wall_ms = SANDBOX_DEFAULT_WALL_MS;
	spec->limits.memory_bytes = SANDBOX_DEFAULT_MEMORY;
	spec->limits.pids = SANDBOX_DEFAULT_PIDS;
	spec->limits.fsize_bytes = SANDBOX_DEFAULT_FSIZE;
	spec->limits.nofile = SANDBOX_DEFAULT_NOFILE;
	spec->limits.output_bytes = SANDBOX_DEFAULT_OUTPUT;
	spec->limits.disk_bytes = SANDBOX_DEFAULT_DISK;
	spec->stdin_fd = -1;
}

static void free_strv(char **v)
{
	size_t i;

	if (!v)
		return;
	for (i = 0; v[i]; i++)
		free(v[i]);
	free(v);
}

static size_t strv_len(char **v)
{
	size_t n = 0;

	while (v && v[n])
		n++;
	return n;
}

static char **strv_push(char **v, const char *s)
{
	size_t n = strv_len(v);

	v = xrealloc(v, (n + 2) * sizeof(*v));
	v[n] = xstrdup(s);
	v[n + 1] = NULL;
	return v;
}

void sandbox_spec_release(struct sandbox_spec *spec)
{
	size_t i;

	free_strv(spec->argv);
	for (i = 0; i < spec->nsteps; i++) {
		free_strv(spec->steps[i].argv);
		free(spec->steps[i].stdin_data);
	}
	free(spec->steps);
	free_strv(spec->env);
	free(spec->cwd);
	for (i = 0; i < spec->nbinds; i++) {
		free(spec->binds[i].src);
		free(spec->binds[i].dst);
	}
	free(spec->binds);
	for (i = 0; i < spec->nfiles; i++) {
		free(spec->files[i].path);
		free(spec->files[i].data);
	}
	free(spec->files);
	for (i = 0; i < spec->nfetch; i++)
		free(spec->fetch[i]);
	free(spec->fetch);
	sandbox_spec_init(spec);
}

void sandbox_spec_set_argv(struct sandbox_spec *spec, char *const *argv)
{
	size_t i;

	free_strv(spec->argv);
	spec->argv = NULL;
	for (i = 0; argv[i]; i++)
		spec->argv = strv_push(spec->argv, argv[i]);
}

struct sandbox_step *sandbox_spec_add_step(struct sandbox_spec *spec,
					   char *const *argv,
					   const char *stdin_data,
					   size_t stdin_len)
{
	struct sandbox_step *st;
	size_t i;

	spec->steps = xrealloc(spec->steps,
			       (spec->nsteps + 1) * sizeof(*spec->steps));
	st = &spec->steps[spec->nsteps++];
	memset(st, 0, sizeof(*st));
	for (i = 0; argv[i]; i++)
		st->argv = strv_push(st->argv, argv[i]);
	if (stdin_data) {
		st->stdin_data = xmalloc(stdin_len + 1);
		memcpy(st->stdin_data, stdin_data, stdin_len);
		st->stdin_data[stdin_len] = '\0';
		st->stdin_len = stdin_len;
	}
	return st;
}

void sandbox_spec_add_env(struct sandbox_spec *spec, const char *name_value)
{
	spec->env = strv_push(spec->env, name_value);
}

void sandbox_spec_add_bind(struct sandbox_spec *spec, const char *src,
			   const char *dst, bool writable)
{
	struct sandbox_bind *b;

	spec->binds = xrealloc(spec->binds,
			       (spec->nbinds + 1) * sizeof(*spec->binds));
	b = &spec->binds[spec->nbinds++];
	b->src = xstrdup(src);
	b->dst = xstrdup(dst);
	b->writable = writable;
	b->device = false;
	b->shared = false;
}

void sandbox_spec_copy_bind(struct sandbox_spec *spec,
			    const struct sandbox_bind *b)
{
	sandbox_spec_add_bind(spec, b->src, b->dst, b->writable);
	spec->binds[spec->nbinds - 1].device = b->device;
	spec->binds[spec->nbinds - 1].shared = b->shared;
}

void sandbox_spec_add_file(struct sandbox_spec *spec, const char *path,
			   const void *data, size_t len, bool executable)
{
	struct sandbox_file *f;

	spec->files = xrealloc(spec->files,
			       (spec->nfiles + 1) * sizeof(*spec->files));
	f = &spec->files[spec->nfiles++];
	f->path = xstrdup(path);
	f->data = xmalloc(len);
	if (len)
		memcpy(f->data, data, len);
	f->len = len;
	f->executable = executable;
}

void sandbox_spec_add_fetch(struct sandbox_spec *spec, const char *path)
{
	spec->fetch = xrealloc(spec->fetch,
			       (spec->nfetch + 1) * sizeof(*spec->fetch));
	spec->fetch[spec->nfetch++] = xstrdup(path);
}

void sandbox_result_init(struct sandbox_result *res)
{
	memset(res, 0, sizeof(*res));
	res->exit_code = -1;
}

void sandbox_result_release(struct sandbox_result *res)
{
	size_t i;

	for (i = 0; i < res->nfetched; i++) {
		free(res->fetched[i].path);
		free(res->fetched[i].data);
	}
	free(res->fetched);
	res->fetched = NULL;
	res->nfetched = 0;
	free(res->steps);
	res->steps = NULL;
	res->nsteps = 0;
}

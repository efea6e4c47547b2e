/*
 * Models and GPUs for sandboxes and runs: resolves what a request asked for
 * (server/resources.h) against the model store and the host's GPUs into
 * binds and environment variables, and reports both in /v1/health.
 *
 * The store is read at each request, so models added to it are seen
 * without a restart.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/util.h"
#include "server/request.h"
#include "server/resources.h"
#include "base/banned.h"

static const char *store_dir(void)
{
	const char *d = getenv("SBX_MODELS");

	return d && *d ? d : NULL;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The store's models by name ("org/name"), sorted; NULL-terminated. */
static char **store_list(const char *dir, size_t *n)
{
	char **names = NULL;
	struct dirent *de;
	DIR *d = opendir(dir);

	*n = 0;
	if (!d)
		return NULL;
	while ((de = readdir(d))) {
		char *path, *name, *sep;
		struct stat st;

		if (de->d_name[0] == '.')
			continue;
		path = xstrfmt("%s/%s", dir, de->d_name);
		if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode)) {
			free(path);
			continue;
		}
		free(path);
		name = xstrdup(de->d_name);
		sep = strstr(name, "--");
		if (sep) {
			*sep = '/';
			memmove(sep + 1, sep + 2, strlen(sep + 2) + 1);
		}
		names = xrealloc(names, (*n + 2) * sizeof(*names));
		names[(*n)++] = name;
		names[*n] = NULL;
	}
	closedir(d);
	if (names)
		qsort(names, *n, sizeof(*names), cmp_str);
	return names;
}

static void free_list(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

static void add_bind(struct resources *res, const char *src, const char *dst)
{
	struct sandbox_bind *b;

	res->binds =
		xrealloc(res->binds, (res->nbinds + 1) * sizeof(*res->binds));
	b = &res->binds[res->nbinds++];
	memset(b, 0, sizeof(*b));
	b->src = xstrdup(src);
	b->dst = xstrdup(dst);
}

static size_t env_count(char **env)
{
	size_t n = 0;

	while (env && env[n])
		n++;
	return n;
}

/* Appends s (taken) to the NULL-terminated v; returns the new v. */
static char **strv_push(char **v, char *s)
{
	size_t n = env_count(v);

	v = xrealloc(v, (n + 2) * sizeof(*v));
	v[n] = s;
	v[n + 1] = NULL;
	return v;
}

static void add_env(struct resources *res, char *kv)
{
	res->env = strv_push(res->env, kv);
}

static unsigned resolve_models(const struct resources_req *rq,
			       struct resources *res, const char **code,
			       char *msg, size_t msglen)
{
	const char *dir = store_dir();
	char **names;
	size_t n;

	if (!rq->nmodels)
		return 0;
	if (!dir) {
		*code = "unknown_model";
		snprintf(msg, msglen,
			 "models: this server has no model store (sbx serve "
			 "--models DIR)");
		return 422;
	}
	names = store_list(dir, &n);
	for (size_t i = 0; i < rq->nmodels; i++) {
		char *sub = resources_model_dir(rq->models[i]);
		char *src = xstrfmt("%s/%s", dir, sub);
		char *dst = xstrfmt(RESOURCES_MODELS_DIR "/%s", sub);
		struct stat st;

		if (stat(src, &st) < 0 || !S_ISDIR(st.st_mode)) {
			char have[512] = "";

			for (size_t j = 0; j < n; j++) {
				size_t len = strlen(have);

				snprintf(have + len, sizeof(have) - len, "%s%s",
					 j ? ", " : "", names[j]);
			}
			*code = "unknown_model";
			snprintf(msg, msglen,
				 "models: no model '%s' in the store (it "
				 "has: %s)",
				 rq->models[i], n ? have : "none");
			free(sub);
			free(src);
			free(dst);
			free_list(names);
			return 422;
		}
		char *var = resources_model_env(rq->models[i]);

		add_bind(res, src, dst);
		add_env(res, xstrfmt("%s=%s", var, dst));
		res->models = strv_push(res->models, xstrdup(rq->models[i]));
		free(var);
		free(sub);
		free(src);
		free(dst);
	}
	free_list(names);
	return 0;
}

unsigned resources_resolve(const struct resources_req *rq,
			   struct resources *res, const char **code, char *msg,
			   size_t msglen)
{
	unsigned status;
	int r;

	memset(res, 0, sizeof(*res));
	status = resolve_models(rq, res, code, msg, msglen);
	if (status)
		goto fail;
	if (rq->gpus_given) {
		char why[256];

		r = gpu_grant_make(gpu_host_get(), rq->gpu_count, rq->gpu_ids,
				   rq->ngpu_ids, rq->gpu_shared, &res->gpu, why,
				   sizeof(why));
		if (r) {
			status = r == -EBUSY ? 409 : 422;
			*code = r == -EBUSY ? "gpu_busy" : "no_gpu";
			snprintf(msg, msglen, "gpus: %s", why);
			goto fail;
		}
		for (size_t i = 0; i < res->gpu.nbinds; i++) {
			res->binds = xrealloc(res->binds,
					      (res->nbinds + 1) *
						      sizeof(*res->binds));
			res->binds[res->nbinds] = res->gpu.binds[i];
			res->binds[res->nbinds].src =
				xstrdup(res->gpu.binds[i].src);
			res->binds[res->nbinds].dst =
				xstrdup(res->gpu.binds[i].dst);
			res->nbinds++;
		}
		for (size_t i = 0; res->gpu.env && res->gpu.env[i]; i++)
			add_env(res, xstrdup(res->gpu.env[i]));
	}
	return 0;
fail:
	resources_release(res);
	return status;
}

void resources_apply(const struct resources *res, struct sandbox_spec *spec)
{
	for (size_t i = 0; i < res->nbinds; i++)
		sandbox_spec_copy_bind(spec, &res->binds[i]);
	for (size_t i = 0; res->env && res->env[i]; i++)
		sandbox_spec_add_env(spec, res->env[i]);
}

void resources_release(struct resources *res)
{
	for (size_t i = 0; i < res->nbinds; i++) {
		free(res->binds[i].src);
		free(res->binds[i].dst);
	}
	free(res->binds);
	free_list(res->env);
	free_list(res->models);
	gpu_grant_release(&res->gpu);
	memset(res, 0, sizeof(*res));
}

json_t *resources_describe(const struct resources *res)
{
	json_t *obj, *a;

	if (!res->models && !res->gpu.nminors)
		return NULL;
	obj = json_object();
	if (res->models) {
		a = json_array();
		for (size_t i = 0; res->models[i]; i++)
			json_array_append_new(a, json_string(res->models[i]));
		json_object_set_new(obj, "models", a);
	}
	if (res->gpu.nminors) {
		a = json_array();
		for (size_t i = 0; i < res->gpu.nminors; i++)
			json_array_append_new(
				a,
				json_integer((json_int_t)res->gpu.minors[i]));
		json_object_set_new(obj, "gpus", a);
	}
	return obj;
}

bool resources_for_sandbox(struct request *req, json_t *args,
			   struct resources *res)
{
	struct resources_req rq;
	char field[64], msg[768];
	const char *code = "unprocessable";
	unsigned status;
	json_t *env;

	memset(res, 0, sizeof(*res));
	if (resources_parse(args, &rq, field, sizeof(field), msg,
			    sizeof(msg))) {
		request_error(req, 422, "unprocessable", "%s: %s", field, msg);
		return false;
	}
	status = resources_resolve(&rq, res, &code, msg, sizeof(msg));
	resources_req_release(&rq);
	if (status) {
		request_error(req, status, code, "%s", msg);
		return false;
	}
	json_object_del(args, "models");
	json_object_del(args, "gpus");
	json_object_del(args, "gpu_shared");
	if (!res->env)
		return true;
	env = json_object_get(args, "env");
	if (!env || json_is_null(env)) {
		env = json_object();
		json_object_set_new(args, "env", env);
	}
	/* An "env" that is not an object is refused by the session layer. */
	if (json_is_object(env))
		for (size_t i = 0; res->env[i]; i++) {
			char *eq = strchr(res->env[i], '=');
			char *name = xstrndup(res->env[i],
					      (size_t)(eq - res->env[i]));

			json_object_set_new(env, name, json_string(eq + 1));
			free(name);
		}
	return true;
}

json_t *resources_health(void)
{
	const struct gpu_host *h = gpu_host_get();
	const char *dir = store_dir();
	json_t *gpus = json_array(), *names = json_array();
	char **list;
	size_t n;

	list = dir ? store_list(dir, &n) : NULL;
	for (size_t i = 0; list && list[i]; i++)
		json_array_append_new(names, json_string(list[i]));
	free_list(list);
	for (size_t i = 0; i < h->ngpus; i++) {
		const struct gpu *g = &h->gpus[i];
		bool alone;
		unsigned holders = gpu_lease_holders(g->minor, &alone);

		json_array_append_new(
			gpus, json_pack("{s:i,s:s?,s:s?,s:s?,s:i,s:b}", "index",
					(int)g->minor, "uuid",
					g->uuid[0] ? g->uuid : NULL, "model",
					g->model[0] ? g->model : NULL, "bus",
					g->bus[0] ? g->bus : NULL, "holders",
					(int)holders, "exclusive", alone));
	}
	return json_pack("{s:{s:s?,s:o},s:o}", "models", "dir", dir, "names",
			 names, "gpus", gpus);
}

/*
 * Parsing of the "models", "gpus" and "gpu_shared" fields that sandboxes
 * and runs share, and the naming rules of the model store. Client bytes
 * only: no file system, no server state.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "server/resources.h"
#include "base/banned.h"

static int bad(char *field, size_t fieldlen, const char *f, char *msg,
	       size_t msglen, const char *m)
{
	str_copy(field, fieldlen, f);
	str_copy(msg, msglen, m);
	return -1;
}

bool resources_model_name_ok(const char *name)
{
	size_t len = strlen(name), slashes = 0;
	const char *part = name;

	if (!len || len > 200)
		return false;
	for (const char *p = name; *p; p++) {
		char c = *p;

		if (c == '/') {
			if (++slashes > 1 || p == part)
				return false;
			part = p + 1;
			continue;
		}
		if (p == part && c == '.')
			return false;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '_' ||
		      c == '-'))
			return false;
	}
	return *part != '\0';
}

char *resources_model_dir(const char *name)
{
	const char *slash = strchr(name, '/');

	if (!slash)
		return xstrdup(name);
	return xstrfmt("%.*s--%s", (int)(slash - name), name, slash + 1);
}

char *resources_model_env(const char *name)
{
	char *s = xstrfmt("MODEL_%s_PATH", name);

	for (char *p = s + 6; *p; p++) {
		if (*p == '/' || *p == '-')
			*p = '_';
		else if (*p >= 'a' && *p <= 'z')
			*p = (char)(*p - 'a' + 'A');
	}
	return s;
}

static json_t *get(const json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	return v && !json_is_null(v) ? v : NULL;
}

int resources_parse(const json_t *obj, struct resources_req *rq, char *field,
		    size_t fieldlen, char *msg, size_t msglen)
{
	char f[32], m[128];
	json_t *v, *e;
	size_t i;

	memset(rq, 0, sizeof(*rq));
	if ((v = get(obj, "models"))) {
		if (!json_is_array(v))
			goto bad_models;
		if (json_array_size(v) > RESOURCES_MAX_MODELS) {
			snprintf(m, sizeof(m), "at most %d models",
				 RESOURCES_MAX_MODELS);
			bad(field, fieldlen, "models", msg, msglen, m);
			goto fail;
		}
		rq->models =
			xcalloc(json_array_size(v) + 1, sizeof(*rq->models));
		json_array_foreach(v, i, e)
		{
			const char *name = json_string_value(e);

			snprintf(f, sizeof(f), "models[%zu]", i);
			if (!json_is_string(e) ||
			    strlen(name) != json_string_length(e) ||
			    !resources_model_name_ok(name)) {
				bad(field, fieldlen, f, msg, msglen,
				    "must be a model name such as "
				    "\"org/name\" (letters, digits, '.', '_', "
				    "'-')");
				goto fail;
			}
			for (size_t j = 0; j < rq->nmodels; j++)
				if (!strcmp(rq->models[j], name)) {
					bad(field, fieldlen, f, msg, msglen,
					    "listed twice");
					goto fail;
				}
			rq->models[rq->nmodels++] = xstrdup(name);
		}
	}
	if ((v = get(obj, "gpus"))) {
		rq->gpus_given = true;
		if (json_is_integer(v)) {
			json_int_t n = json_integer_value(v);

			if (n < 0 || n > GPU_MAX) {
				snprintf(m, sizeof(m),
					 "must be a count from 0 to %d",
					 GPU_MAX);
				bad(field, fieldlen, "gpus", msg, msglen, m);
				goto fail;
			}
			rq->gpu_count = (unsigned)n;
			rq->gpus_given = n > 0;
		} else if (json_is_array(v) && json_array_size(v) > 0 &&
			   json_array_size(v) <= GPU_MAX) {
			rq->gpu_ids = xcalloc(json_array_size(v),
					      sizeof(*rq->gpu_ids));
			json_array_foreach(v, i, e)
			{
				json_int_t n = json_integer_value(e);

				snprintf(f, sizeof(f), "gpus[%zu]", i);
				if (!json_is_integer(e) || n < 0 ||
				    n >= GPU_MAX) {
					snprintf(m, sizeof(m),
						 "must be a GPU index from 0 "
						 "to %d",
						 GPU_MAX - 1);
					bad(field, fieldlen, f, msg, msglen, m);
					goto fail;
				}
				for (size_t j = 0; j < rq->ngpu_ids; j++)
					if (rq->gpu_ids[j] == (unsigned)n) {
						bad(field, fieldlen, f, msg,
						    msglen, "listed twice");
						goto fail;
					}
				rq->gpu_ids[rq->ngpu_ids++] = (unsigned)n;
			}
			rq->gpu_count = (unsigned)rq->ngpu_ids;
		} else {
			bad(field, fieldlen, "gpus", msg, msglen,
			    "must be a count or a non-empty list of GPU "
			    "indices");
			goto fail;
		}
	}
	if ((v = get(obj, "gpu_shared"))) {
		if (!json_is_boolean(v)) {
			bad(field, fieldlen, "gpu_shared", msg, msglen,
			    "must be true or false");
			goto fail;
		}
		rq->gpu_shared = json_is_true(v);
	}
	return 0;
bad_models:
	bad(field, fieldlen, "models", msg, msglen,
	    "must be a list of model names");
fail:
	resources_req_release(rq);
	return -1;
}

void resources_req_release(struct resources_req *rq)
{
	for (size_t i = 0; i < rq->nmodels; i++)
		free(rq->models[i]);
	free(rq->models);
	free(rq->gpu_ids);
	memset(rq, 0, sizeof(*rq));
}

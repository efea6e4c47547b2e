/*
 * Host resources a sandbox or run may ask for by name: models of the
 * server's model store ("models": ["org/name", ...]) and NVIDIA GPUs
 * ("gpus": N | [indices], "gpu_shared": bool).
 *
 * The model store is a host directory (sbx serve --models DIR, or
 * $SBX_MODELS) with one directory per model named "org--name". Each model
 * asked for is bound read-only at /models/org--name, alone (the others
 * stay out of sight), and MODEL_<NAME>_PATH names it the way Seer does:
 * the name with "/" and "-" turned into "_", upper-cased
 * (google/gemma-2-9b: MODEL_GOOGLE_GEMMA_2_9B_PATH=/models/google--gemma-2-9b).
 *
 * The parser (resources_parse.c) needs only jansson and base/, so the fuzz
 * targets link it alone; resources.c resolves a request against the store
 * and the host's GPUs (sandbox/gpu.h).
 */
#ifndef SBX_SERVER_RESOURCES_H
#define SBX_SERVER_RESOURCES_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "sandbox/gpu.h"
#include "sandbox/sandbox.h"

#define RESOURCES_MODELS_DIR "/models"
#define RESOURCES_MAX_MODELS 16

struct request;

/* What a request asked for. */
struct resources_req {
	char **models; /* "org/name", checked by resources_model_name_ok() */
	size_t nmodels;
	bool gpus_given;
	unsigned gpu_count; /* "gpus": N */
	unsigned *gpu_ids;  /* "gpus": [indices] */
	size_t ngpu_ids;
	bool gpu_shared;
};

/* Reads "models", "gpus" and "gpu_shared" of obj (an object; other keys are
 * not looked at; null counts as absent). Returns 0 with rq filled (release
 * it), or -1 with the field and what is wrong in field and msg (rq is then
 * released). */
int resources_parse(const json_t *obj, struct resources_req *rq, char *field,
		    size_t fieldlen, char *msg, size_t msglen);
void resources_req_release(struct resources_req *rq);
/* Whether name is a model name: "org/name" or "name", letters, digits,
 * ".", "_" and "-", no part starting with ".". */
bool resources_model_name_ok(const char *name);
/* The store directory name of a model ("org--name"), and its variable
 * ("MODEL_ORG_NAME_PATH"); malloc'd, the caller frees. */
char *resources_model_dir(const char *name);
char *resources_model_env(const char *name);

/* What a request is given. Owned; resources_release() frees. */
struct resources {
	struct sandbox_bind *binds;
	size_t nbinds;
	char **env;    /* NAME=VALUE, NULL-terminated */
	char **models; /* the models' names ("org/name"), NULL-terminated */
	struct gpu_grant gpu;
};

/* Resolves rq against the model store and the host's GPUs. Returns 0 with
 * res filled, or an HTTP status (422: an unknown model or no such GPU,
 * 409: the GPUs asked for are held by other sandboxes) with its error
 * code and message. */
unsigned resources_resolve(const struct resources_req *rq,
			   struct resources *res, const char **code, char *msg,
			   size_t msglen);
/* Adds res's binds and environment to spec. */
void resources_apply(const struct resources *res, struct sandbox_spec *spec);
void resources_release(struct resources *res);
/* {"models": [names], "gpus": [indices]}, each only when given, for a
 * sandbox's JSON; NULL when res holds neither. A new reference. */
json_t *resources_describe(const struct resources *res);

/* For POST /v1/sandboxes: takes "models", "gpus" and "gpu_shared" out of
 * args, resolves them into res and adds the models' variables to args's
 * "env". Returns true, or false after replying to req with the error. */
bool resources_for_sandbox(struct request *req, json_t *args,
			   struct resources *res);

/* {"models": {"dir", "names"}, "gpus": [{"index", "uuid", "model",
 * "bus", "holders", "exclusive"}]} for /v1/health (a new reference). */
json_t *resources_health(void);

#endif

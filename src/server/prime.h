/*
 * The prime-sandboxes compatible surface: the REST routes and JSON shapes
 * that PrimeIntellect's `prime-sandboxes` client (0.2.x) sends, served
 * under /prime so that pointing the client's base URL at
 * http://HOST:PORT/prime is the only change. prime.c maps them onto
 * sbx's stateful sandboxes; prime_parse.c holds the request parsers,
 * which know nothing of the server (the fuzz target links them alone).
 *
 *   /prime/api/v1/sandbox...                 the control plane (sbx's token)
 *   /prime/gateway/{user_ns}/{job_id}/...    exec, upload, download (a
 *                                            per-sandbox token from /auth)
 */
#ifndef SBX_SERVER_PRIME_H
#define SBX_SERVER_PRIME_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct request;

/* ---- prime.c ---- */

/* Everything under /prime/. */
void prime_route(struct request *req);
/* Whether url is a gateway route, which checks its own per-sandbox
 * tokens instead of the server's. */
bool prime_owns_auth(const char *url);
/* Whether method and url name an upload, routed on its headers with its
 * multipart body streamed to the route. */
bool prime_is_upload(const char *method, const char *url);

/* ---- prime_parse.c ---- */

/* The words a sandbox's status takes, as the client knows them. */
enum prime_status {
	PRIME_PENDING,
	PRIME_PROVISIONING,
	PRIME_RUNNING,
	PRIME_STOPPED,
	PRIME_ERROR,
	PRIME_TERMINATED,
	PRIME_TIMEOUT,
	PRIME_NSTATUS,
};
const char *prime_status_name(enum prime_status s);
/* The status named word, or -1. */
int prime_status_parse(const char *word);

/* A create request (POST /sandbox). Strings and JSON values are borrowed
 * from the body it was parsed from; unknown fields are ignored, as the
 * platform does (newer clients send more). */
struct prime_create {
	const char *name;	   /* NULL: none given */
	const char *docker_image;  /* NULL: none given */
	const char *start_command; /* NULL: none (or null) */
	const char *team_id;
	const char *registry_credentials_id;
	double cpu_cores, memory_gb, disk_size_gb, timeout_minutes;
	int64_t gpu_count;
	bool network_access;
	json_t *environment_vars; /* object of strings, or NULL */
	json_t *secrets;	  /* object of strings, or NULL */
	json_t *labels;		  /* array of strings, or NULL */
	json_t *advanced_configs; /* object, or NULL */
	json_t *host_routes; /* advanced_configs.host_routes or the top-level
			      * field: passed on to sbx, or NULL */
};
/* Returns 0, or -1 with err naming the field and what is wrong. */
int prime_parse_create(json_t *body, struct prime_create *out, char *err,
		       size_t errlen);

/* An exec request (POST {gateway}/exec). Borrowed as above. */
struct prime_exec {
	const char *command;
	const char *working_dir; /* NULL: the sandbox's default */
	const char *sandbox_id;	 /* NULL: not given */
	json_t *env;		 /* object of strings, or NULL */
	double timeout_s;	 /* 0: not given */
};
int prime_parse_exec(json_t *body, struct prime_exec *out, char *err,
		     size_t errlen);

/* A bulk delete (DELETE /sandbox): exactly one of the two, a non-empty
 * array of strings (borrowed). */
struct prime_bulk {
	json_t *sandbox_ids;
	json_t *labels;
};
int prime_parse_bulk(json_t *body, struct prime_bulk *out, char *err,
		     size_t errlen);

/* POST /sandbox/{id}/expose. */
struct prime_expose {
	unsigned port;
	const char *name; /* borrowed, NULL: none */
};
int prime_parse_expose(json_t *body, struct prime_expose *out, char *err,
		       size_t errlen);

/* GET /sandbox's query: page (from 1), per_page, status, labels (each
 * must be on a sandbox for it to be listed), is_active (-1: not given).
 * labels is a new array the caller frees (json_decref). */
#define PRIME_MAX_PER_PAGE 500
struct prime_list {
	unsigned page, per_page;
	int status; /* enum prime_status, -1: any */
	json_t *labels;
	int is_active;
};
/* query is percent-encoded ("a=b&c=d", no '?'). */
int prime_parse_list(const char *query, struct prime_list *out, char *err,
		     size_t errlen);

/* A path under /prime, split. Pieces point into path's copy, buf. */
enum prime_path_kind {
	PRIME_PATH_NONE,
	PRIME_PATH_SANDBOXES, /* /api/v1/sandbox */
	PRIME_PATH_SANDBOX,   /* /api/v1/sandbox/{id} */
	PRIME_PATH_SUB,	      /* /api/v1/sandbox/{id}/{sub} */
	PRIME_PATH_SUB_ITEM,  /* /api/v1/sandbox/{id}/{sub}/{item} */
	PRIME_PATH_GATEWAY,   /* /gateway/{user_ns}/{job_id}/{op} */
};
struct prime_path {
	enum prime_path_kind kind;
	char buf[512];
	const char *id;	  /* sandbox id, or the gateway's job id */
	const char *sub;  /* "logs", "auth", ...; the gateway's op */
	const char *item; /* an exposure id; the gateway's user_ns */
};
/* Splits path (which starts with "/prime"). Returns 0, or -1 for a path
 * of no known shape (kind PRIME_PATH_NONE). */
int prime_parse_path(const char *path, struct prime_path *out);

#endif

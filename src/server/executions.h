/*
 * Agent rollouts: agents, pools and executions (server/executions.c,
 * server/pools.c, server/agents.c), and the parsers of their requests
 * (server/executions_parse.c), which need only base/ and jansson so that
 * the fuzz target links them alone.
 */
#ifndef SBX_SERVER_EXECUTIONS_H
#define SBX_SERVER_EXECUTIONS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "server/server.h"

#define EXEC_DEFAULT_ENTRY "agent:rollout"
#define EXEC_DEFAULT_TIMEOUT_MS 600000ull
#define EXEC_MAX_RETRIES 10
#define EXEC_POOL_MAX_SIZE 1024
#define EXEC_POOL_DEFAULT_SIZE 4
#define EXEC_POOL_DEFAULT_RECYCLE 1000
#define EXEC_MAX_SETUP 32

/* A pool's definition, as a client gives it ("pool" of an execution, or
 * POST /v1/pools). */
struct exec_pool_def {
	char name[64];	 /* "" for a pool declared with an execution */
	char agent[80];	 /* POST /v1/pools: the agent it runs */
	char entry[256]; /* and its entry point */
	bool persistent;
	unsigned size;		   /* persistent: sandboxes; per_task: at
				    * once */
	unsigned recycle_after;	   /* persistent: executions per sandbox */
	json_t *setup_commands;	   /* array of strings, or NULL */
	uint64_t setup_timeout_ms; /* each setup command */
	json_t *limits;		   /* as POST /v1/sandboxes takes them */
	int llm;		   /* -1: the server's default, 0, 1 */
};

/* A POST /v1/executions body. */
struct exec_request {
	char agent[80];
	char entry[256];
	json_t *task;		   /* object */
	json_t *agent_config;	   /* object */
	json_t *labels;		   /* object of strings */
	char pool_name[64];	   /* a named pool, or "" */
	struct exec_pool_def pool; /* the declared one (when no name) */
	bool pool_given;
	uint64_t timeout_ms;
	unsigned retries;
	char idem_key[128]; /* "" for none */
};

/* Parses a POST /v1/executions body (len bytes, no NUL needed) into r,
 * which the caller releases with exec_request_release() whatever the
 * outcome. max_timeout_ms caps timeout_s. Returns 0, or -EINVAL with the
 * reason in err. */
int executions_parse_submit(const char *body, size_t len,
			    uint64_t max_timeout_ms, struct exec_request *r,
			    char *err, size_t errlen);
void exec_request_release(struct exec_request *r);

/* Parses a pool definition (an object; for_create: POST /v1/pools, which
 * needs "name" and "agent"). Release with exec_pool_release(). Returns 0
 * or -EINVAL with the reason in err. */
int executions_parse_pool(const json_t *v, bool for_create,
			  struct exec_pool_def *p, char *err, size_t errlen);
void exec_pool_release(struct exec_pool_def *p);
/* The definition as JSON (a new reference): {"name", "mode", "size",
 * "recycle_after", "setup_commands", "setup_timeout_s", "limits", "llm"}
 * (plus "agent" and "entry" when set). */
json_t *exec_pool_json(const struct exec_pool_def *p);

/* Whether entry is "module" or "module:function" with Python names. */
bool executions_entry_ok(const char *entry);

/* Expands a setup command template the way Python's str.format(**task)
 * does for plain fields: "{name}" becomes the task's field name (a
 * string as it is, anything else as JSON), "{{" and "}}" are braces.
 * Appends to out. Returns 0, or -EINVAL with the reason in err. */
int executions_template(const char *tmpl, const json_t *task, struct buf *out,
			char *err, size_t errlen);

/* ---- the server's side: executions.c, pools.c, agents.c ---- */

struct exec_store;
struct loop;
struct traces;

struct rollouts {
	const struct server_config *cfg;
	struct exec_store *store;
	struct traces *traces; /* read: episodes */
	char *agents_dir;      /* <state>/agents */
	struct loop *loop;     /* the runner's: pools and waiters live there */
	bool stopping;
};
extern struct rollouts rollouts;

/* The host directory of an agent (caller frees). */
char *agents_path(const char *digest);

/* pools.c; the runner's loop thread only. */
/* Runs a queued execution (exec: its JSON as the store gives it, the
 * reference taken). */
void pools_submit(json_t *exec);
/* Cancels an execution that is queued or running: its result says so,
 * and a running one's sandbox is killed. False when it is not active. */
bool pools_cancel(const char *id);
bool pools_is_active(const char *id);
/* Creates or replaces a named pool (def copied). */
void pools_define(const struct exec_pool_def *def);
/* Removes a named pool: its sandboxes go once idle. False: none. */
bool pools_remove(const char *name);
/* Every pool with its sandboxes and queue: a new array. */
json_t *pools_json(void);
/* The server stops: nothing more is dispatched. */
void pools_shutdown(void);
/* Counts for /metrics. */
void pools_counts(unsigned *queued, unsigned *running, unsigned *workers);

/* guest/rollout.py, embedded at build time (Makefile: gen/guest_rollout.c),
 * NUL-terminated. */
extern const char guest_rollout_py[];
extern const unsigned long guest_rollout_py_len;

/* executions.c, on the loop thread: an execution ended (committed). */
void executions_ended(const char *id);

#endif

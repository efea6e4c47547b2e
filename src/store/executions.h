/*
 * The execution store: agents, pools, executions and rLLM's pushed
 * results, as tables of the server's SQLite database (sbx.db, WAL), the
 * same file the trace store uses, through a connection of its own. Every
 * write commits before it returns, so what the API promised is on disk
 * when it answers. Every function is safe from any thread (one mutex).
 *
 * Execution states: "queued", "running", then one of the terminal ones,
 * "completed" (the rollout's result says success), "failed" (it says
 * not, or the run failed), "cancelled" and "lost" (the server stopped
 * while it ran, with no retries left). A terminal row is never changed
 * again, so a result that arrives twice is stored once.
 */
#ifndef SBX_STORE_EXECUTIONS_H
#define SBX_STORE_EXECUTIONS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct exec_store;

/* Opens (creating the tables as needed) the database at path, whose
 * directory must exist. Returns NULL with the reason in err. */
struct exec_store *exec_store_open(const char *path, char *err, size_t errlen);
void exec_store_close(struct exec_store *s); /* NULL is a no-op */

/* ---- executions ---- */

/* A new execution; every pointer is borrowed. */
struct exec_new {
	const char *id;
	const char *idem_key; /* NULL: none */
	const char *agent;
	const char *entry;
	json_t *pool; /* object: the pool's definition, with its "name" */
	json_t *task;
	json_t *agent_config;
	json_t *labels;
	uint64_t timeout_ms;
	unsigned retries;
};

/* Stores e as "queued". Returns 0, or 1 when another execution has the
 * same idempotency key (its id is copied to existing), or -EIO. */
int exec_store_add(struct exec_store *s, const struct exec_new *e,
		   char *existing, size_t n);
/* A queued execution starts its attempt in sandbox with session_uid.
 * Returns 1, 0 when it is not queued (cancelled meanwhile), or -EIO. */
int exec_store_start(struct exec_store *s, const char *id, const char *sandbox,
		     const char *session_uid);
/* Ends a queued or running execution: status is a terminal state, result
 * rLLM's six-key object (borrowed), code a short word for a failure
 * (NULL on success). Returns 1, 0 when it had ended already, or -EIO. */
int exec_store_finish(struct exec_store *s, const char *id, const char *status,
		      json_t *result, const char *code);
/* A running execution goes back to the queue with one retry fewer.
 * Returns 1, 0 when it was not running, or -EIO. */
int exec_store_requeue(struct exec_store *s, const char *id);

/* The execution's JSON (a new reference), or NULL when there is none:
 *   {"id", "status", "agent", "entry", "pool", "labels", "task",
 *    "agent_config", "timeout_s", "retries", "attempts", "session_uid",
 *    "sandbox", "created_at", "started_at", "finished_at", "seq",
 *    "error_code", "result"}
 * (times in unix seconds, null when not yet; seq orders endings). */
json_t *exec_store_get(struct exec_store *s, const char *id);

struct exec_query {
	const char *status;    /* one state, "done" (any terminal), NULL */
	const char *label_key; /* with label_value: labels[key] == value */
	const char *label_value;
	int64_t done_after; /* > 0 or 0 with done: ended after this seq */
	bool by_seq;	    /* order by seq (ended ones) */
	unsigned limit;	    /* 0: 1000 */
	bool brief;	    /* without task and agent_config */
};
/* Executions matching q, oldest first (or by seq): a new array. Returns
 * NULL on a database error. */
json_t *exec_store_list(struct exec_store *s, const struct exec_query *q);
/* The highest ending seq so far (0: none). */
int64_t exec_store_last_seq(struct exec_store *s);

/* Crash recovery, once at start-up: every running execution becomes
 * lost (with a result saying so), or queued again when it has retries
 * left; then fn(arg, execution) is called for every queued one, oldest
 * first (the JSON as exec_store_get() gives it, borrowed). Returns the
 * number marked lost, or -EIO. */
int exec_store_recover(struct exec_store *s, const char *why,
		       void (*fn)(void *arg, json_t *exec), void *arg,
		       unsigned *requeued);
/* How many executions are in each state: a new object. */
json_t *exec_store_counts(struct exec_store *s);

/* ---- agents ---- */

/* Stores an agent (id and digest unique). 0, -EEXIST or -EIO. */
int exec_store_agent_add(struct exec_store *s, const char *id,
			 const char *digest, const char *name, uint64_t size,
			 json_t *requirements);
/* {"id", "digest", "name", "size", "requirements", "created_at"} (new
 * reference) by id or digest, or NULL. */
json_t *exec_store_agent_get(struct exec_store *s, const char *id_or_digest);
json_t *exec_store_agent_list(struct exec_store *s);
/* Removes the agent; returns 1, 0 when there was none, -EIO. */
int exec_store_agent_delete(struct exec_store *s, const char *id);

/* ---- pools ---- */

/* Stores (or replaces) pool name's definition (an object). 0 or -EIO. */
int exec_store_pool_put(struct exec_store *s, const char *name, json_t *def);
/* Every stored pool: a new array of definitions. */
json_t *exec_store_pool_list(struct exec_store *s);
int exec_store_pool_delete(struct exec_store *s, const char *name);

/* ---- rLLM's pushed results ---- */

/* Stores result (an object) for id unless one is stored already.
 * Returns 1 stored, 0 a duplicate (ignored and counted), -EIO. */
int exec_store_rllm_put(struct exec_store *s, const char *id, json_t *result);
/* The result stored for id (a new reference) or NULL. */
json_t *exec_store_rllm_get(struct exec_store *s, const char *id);
/* Duplicates ignored since the server started. */
uint64_t exec_store_rllm_duplicates(struct exec_store *s);

#endif

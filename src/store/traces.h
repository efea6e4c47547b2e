/*
 * The trace store: one row per model call made through the gateway, in
 * the server's SQLite database (WAL). Writes commit before they return, so
 * a trace is readable once traces_add() has returned. Every function is
 * safe from any thread; reads do not wait for writes.
 */
#ifndef SBX_STORE_TRACES_H
#define SBX_STORE_TRACES_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct traces;

/* One call. Every pointer is borrowed; NULL where there is nothing. */
struct trace_rec {
	const char *sandbox;	  /* sandbox id; NULL for a host call */
	json_t *session_uids;	  /* array of strings */
	const char *session_name; /* the session's name */
	json_t *metadata;	  /* object: the whole session metadata */
	json_t *labels;		  /* object: the sandbox's labels */
	const char *upstream;	  /* upstream name */
	const char *model;	  /* model as sent upstream */
	json_t *request;	  /* request body as sent upstream */
	json_t *response;	  /* response (assembled when streamed) */
	json_t *prompt_token_ids;
	json_t *completion_token_ids;
	json_t *logprobs;
	json_t *usage;
	double latency_ms;
	int status;	   /* upstream HTTP status, 0: no answer came */
	const char *error; /* why the call failed, or NULL */
	bool stream;
	double created_at; /* unix seconds; 0: now */
};

/* Opens (creating as needed, with its directory) the database at path.
 * Returns NULL with the reason in err. */
struct traces *traces_open(const char *path, char *err, size_t errlen);
void traces_close(struct traces *t); /* NULL is a no-op */

/* Stores rec and commits. Returns its id (> 0) or -errno (-EIO for a
 * database error, logged). */
int64_t traces_add(struct traces *t, const struct trace_rec *rec);
/* Stores n records in one transaction, committed before it returns (far
 * cheaper per trace than n traces_add() calls). ids[i] gets each one's id,
 * or -errno when that record could not be serialised. Returns 0, or -EIO
 * when the transaction failed (every ids[i] is then -EIO). */
int traces_add_many(struct traces *t, const struct trace_rec *const *recs,
		    size_t n, int64_t *ids);

struct traces_query {
	const char *session; /* one of session_uids, or session_name */
	const char *sandbox;
	double since;	/* created at or after (unix seconds), 0: any */
	int64_t after;	/* ids greater than this, 0: any */
	unsigned limit; /* 0: no limit */
};

/* Calls fn(arg, trace) for each trace matching q, oldest first; trace is
 * the JSON shape below (borrowed for the call). fn returns 0 to go on,
 * non-zero to stop. Returns 0, or -EIO with the reason in err.
 *   {"id": int, "created_at": "2026-12-02T10:00:00.123Z", "sandbox",
 *    "session_uids": [...], "session_name", "metadata": {...},
 *    "labels": {...}, "upstream", "model", "stream": bool,
 *    "request", "response", "prompt_token_ids", "completion_token_ids",
 *    "logprobs", "usage", "latency_ms", "status", "error"}
 * (absent values are null). fn must not read this store itself: reads
 * share one connection, held until traces_each() returns. */
int traces_each(struct traces *t, const struct traces_query *q,
		int (*fn)(void *arg, json_t *trace), void *arg, char *err,
		size_t errlen);
/* One trace by id (a new reference), or NULL when there is none. */
json_t *traces_get(struct traces *t, int64_t id);
/* Deletes the traces of a session and/or a sandbox (at least one given).
 * Returns how many, or -EINVAL / -EIO. */
int64_t traces_delete(struct traces *t, const char *session,
		      const char *sandbox);
/* How many traces are stored. */
int64_t traces_count(struct traces *t);

#endif

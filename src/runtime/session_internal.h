/*
 * What the stateful-sandbox files share: the session, operation and
 * background-process records, the table on the runner's loop thread, and
 * the helpers each file lends the others. session.c owns the table and
 * the events from each sandbox and dispatches them to the file that owns
 * the operation: session_exec.c (processes waited for), session_procs.c
 * (background processes), session_files.c (file reads, writes, listings,
 * deletes), session_archive.c (trees as tar), session_repl.c (REPL
 * glue) and session_rpc.c (interfaces' glue). Everything here runs on
 * the runner's loop thread.
 */
#ifndef SBX_SESSION_INTERNAL_H
#define SBX_SESSION_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "base/buf.h"
#include "runtime/session.h"

#define SESSION_CHUNK (1u << 20)
#define SESSION_PROC_KEEP (1u << 20) /* output kept per background stream */
/* What a sandbox's background processes keep, together. */
#define SESSION_PROCS_KEEP (4u << 20)
/* Finished background processes remembered per sandbox. */
#define SESSION_PROCS_FINISHED 64
#define SESSION_RECENT 256
#define SESSION_DEFAULT_EXEC_MS 60000

struct loop;
struct repl;
struct rpc;

enum session_op_kind {
	SESSION_OP_EXEC,
	SESSION_OP_PUT,
	SESSION_OP_GET,
	SESSION_OP_DELETE,
	SESSION_OP_ARCHIVE_PUT,
	SESSION_OP_ARCHIVE_GET,
};

struct session_op {
	enum session_op_kind kind;
	uint32_t id;
	session_reply_fn fn;
	session_stream_fn stream;
	void *ctx;
	struct buf out, err;
	uint64_t cap;		     /* per stream, as JSON text */
	uint64_t out_size, err_size; /* what out and err serialise to */
	bool truncated;
	/* file transfers */
	char *path;
	size_t len;
	unsigned pending; /* uploads: a chunk is with init, unanswered */
	/* uploads (file and archive PUT) */
	session_ready_fn ready; /* init took the last chunk: ask for more */
	bool last;		/* the last chunk has been sent */
	bool started;		/* file PUT: its part file was begun */
	uint64_t created; /* file PUT: the inode of the empty file made for
			   * it, 0: none */
	/* transfers out (file and archive GET) */
	session_data_fn data;
	uint64_t sent;	/* bytes handed to data() */
	uint64_t limit; /* most bytes the transfer may have */
	bool waiting;	/* a chunk is out: session_transfer_more() asks on */
	bool eof;	/* archive: tar's output has ended */
	bool abandoned; /* the client went away */
	struct session_op *next;
};

struct session_proc {
	uint32_t id;
	int pid;
	json_t *argv;
	bool running;
	struct sandbox_step_result result;
	struct buf out, err;
	bool truncated;
	bool dropped;	  /* its output was dropped to make room */
	bool read;	  /* its output was read since it ended */
	uint64_t end_seq; /* order of ending, for dropping the oldest */
	struct session_proc *next;
};

struct session {
	char id[48];
	struct sandbox *sb;
	bool ready;
	time_t created;
	uint64_t last_used_ns;
	uint64_t idle_ms;
	uint64_t lifetime_ms;
	json_t *labels;
	json_t *limits;
	json_t *shown; /* members added to its JSON, or NULL */
	void *gw;      /* the model gateway's handle, or NULL */
	uint32_t next_id;
	struct session_op *ops;
	struct session_proc *procs;
	uint64_t procs_kept;	  /* output bytes they keep */
	unsigned procs_finished;  /* records of ended ones */
	unsigned procs_forgotten; /* records dropped */
	uint64_t procs_end_seq;
	struct repl *repls;
	struct rpc *rpcs; /* interfaces (session_rpc.c) */
	session_reply_fn create_fn;
	void *create_ctx;
	session_reply_fn delete_fn; /* answered once it is really gone */
	void *delete_ctx;
	bool deleting;
	uint64_t output_cap;
	uint64_t disk_bytes, memory_bytes; /* its limits */
	char end_reason[128];
	struct session *next;
};

/* The table of sessions; only the loop thread touches it. */
struct session_table {
	struct loop *loop;
	struct session_limits lim;
	struct session *list;
	unsigned count;
	char boot[9];
	int idle_fd;
	struct {
		char id[48];
		char why[128];
	} recent[SESSION_RECENT];
	unsigned recent_next;
};
extern struct session_table session_table;

/* ---- session.c ---- */

/* Replies once with body (the reference is taken); fn may be NULL. */
void session_reply_json(session_reply_fn fn, void *ctx, unsigned status,
			json_t *body);
void session_reply_error(session_reply_fn fn, void *ctx, unsigned status,
			 const char *code, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
/* The HTTP status and error code for an errno from a file operation
 * (every such errno is mapped here, in one table). */
unsigned session_errno_status(int err, const char **code);
/* Replies with the error a file operation on path failed with. */
void session_reply_errno(session_reply_fn fn, void *ctx, int err,
			 const char *path);
/* The live session id, or NULL after replying 404 with the reason. */
struct session *session_find(const char *id, session_reply_fn fn, void *ctx);
/* A new operation on s, linked into its list, with a fresh id. */
struct session_op *session_op_new(struct session *s, enum session_op_kind kind,
				  session_reply_fn fn, void *ctx);
struct session_op *session_op_find(struct session *s, uint32_t id, bool unlink);
/* Unlinks and frees op. */
void session_op_drop(struct session *s, struct session_op *op);
void session_op_free(struct session_op *op);
/* Parses a number of seconds at obj.key into milliseconds (def when
 * absent); fills err and returns -1 past max. */
int session_get_ms(json_t *obj, const char *key, uint64_t def, uint64_t max,
		   uint64_t *out, char *err, size_t errlen);
/* Checks an {"NAME": "value"} object; adds each entry to spec and/or
 * stores "NAME=value" strings (caller frees) into envv. */
int session_apply_env(json_t *j, struct sandbox_spec *spec, char **envv,
		      char *err, size_t errlen);

/* Sets "path" in obj to path as valid UTF-8 and, when path is not,
 * "path_b64" to its bytes in base64 (init takes that form first). */
void session_path_set(json_t *obj, const char *path);
/* Sends a command whose JSON arguments are args (the reference is
 * taken); -EPIPE when the sandbox is gone. */
int session_command(struct session *s, enum sandbox_cmd cmd, uint32_t id,
		    json_t *args, const char *payload, size_t len);

/* ---- session_pool.c ---- */

/* Keeps target sandboxes with limits (and nothing else) built ahead. */
void session_pool_init(struct loop *loop, unsigned target,
		       const struct sandbox_limits *limits);
/* A pre-built sandbox given spec (a stateful one's, see sandbox_assign())
 * with ops and ctx, now theirs; NULL when none is ready or spec needs
 * what none has (host binds). */
struct sandbox *session_pool_take(const struct sandbox_spec *spec,
				  const struct sandbox_ops *ops, void *ctx);
/* Kills the waiting ones and builds no more. */
void session_pool_shutdown(void);

/* ---- session_exec.c ---- */

/* Sends an EXEC command for process id. */
int session_send_exec(struct session *s, uint32_t id, json_t *argv,
		      const char *cwd, json_t *env, uint64_t timeout_ms,
		      uint64_t cap, const char *in, size_t inlen, bool close);
/* A process's result as JSON (new reference). */
json_t *session_step_json(const struct sandbox_step_result *r);
/* Replies for a process init could not start (err from init). */
void session_reply_start_error(session_reply_fn fn, void *ctx, int err);
/* The process of an exec operation ended: replies. */
void session_exec_ended(struct session *s, struct session_op *op,
			const struct sandbox_event *ev);

/* ---- session_procs.c ---- */

struct session_proc *session_proc_find(struct session *s, uint32_t id);
void session_proc_free(struct session_proc *p);
/* Output of background process p, kept within the sandbox's budget. */
void session_proc_output_add(struct session *s, struct session_proc *p,
			     int stream, const char *data, size_t len);
/* Background process p ended with res. */
void session_proc_ended(struct session *s, struct session_proc *p,
			const struct sandbox_step_result *res);

/* ---- session_files.c ---- */

/* False (after replying 400) for an empty or overlong path. */
bool session_path_ok(const char *path, session_reply_fn fn, void *ctx);
/* Init answered a file command of op (args: its parsed reply). */
void session_file_reply(struct session *s, struct session_op *op,
			const struct sandbox_event *ev, json_t *args);
/* Asks init for op's next chunk of a file. */
void session_file_read(struct session *s, struct session_op *op);
/* The client of upload op went away: stops it; its reply still comes. */
void session_upload_abandon(struct session *s, struct session_op *op);

/* ---- session_archive.c ---- */

/* The tar process of an archive operation ended: replies. */
void session_archive_ended(struct session *s, struct session_op *op,
			   const struct sandbox_event *ev);
/* A chunk of an archive came (args: init's reply). */
void session_archive_chunk(struct session *s, struct session_op *op,
			   const struct sandbox_event *ev, json_t *args);
/* Init took (err 0) or could not take a chunk of an archive upload. */
void session_archive_fed(struct session *s, struct session_op *op, int err);
/* Sends a chunk of an archive upload to tar's stdin. */
void session_archive_feed(struct session *s, struct session_op *op,
			  const char *data, size_t len);
/* Asks init for the next chunk of an archive, or to drop the rest. */
void session_archive_pull(struct session *s, struct session_op *op, bool close);

#endif

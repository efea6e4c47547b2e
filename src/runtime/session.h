/*
 * Stateful sandboxes ("sessions"): long-lived sandboxes whose init serves
 * commands. A session has an id, labels, an idle timeout and a maximum
 * lifetime; it runs processes (waited for, or in the background with their
 * output kept), moves files and whole trees in and out, and hosts REPLs.
 *
 * Everything here runs on the runner's loop thread: callers post to it.
 * Results come back through a reply callback with an HTTP-like status and
 * a JSON body (or raw bytes), so the server only translates.
 */
#ifndef SBX_SESSION_H
#define SBX_SESSION_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sandbox/sandbox.h"

struct loop;

struct session_reply {
	unsigned status; /* 200, 201, 404, ... */
	json_t *json;	 /* owned by the receiver; NULL when raw is set */
	const char *raw; /* borrowed for the duration of the call */
	size_t raw_len;
};

typedef void (*session_reply_fn)(void *ctx, struct session_reply *reply);

struct session_limits {
	unsigned max_sessions;
	uint64_t default_idle_ms;
	uint64_t max_lifetime_ms;
	struct sandbox_limits limits; /* defaults for every session */
	uint64_t max_memory;
	uint64_t max_disk;
	unsigned prebuilt; /* sandboxes built ahead with the defaults */
};

/* Sets up the table on the loop's thread; boot is this server's start
 * time, used to recognise ids of an earlier run. */
void sessions_init(struct loop *loop, const struct session_limits *lim);
/* The model gateway's part in stateful sandboxes, given by the server
 * before sessions_init(). open() reads a create request's "llm" and
 * "host_routes" values (args is the whole request) for sandbox id: it returns a
 * handle, or NULL when the sandbox has no gateway, with err (and the error's
 * code, when not "unprocessable") set when the value is refused. attach() gives
 * the sandbox's spec what the gateway needs, describe() is what the sandbox's
 * JSON shows under "llm" (a new reference), and close() is called once the
 * sandbox is gone. */
struct session_gateway {
	void *(*open)(const char *id, const json_t *labels, const json_t *args,
		      char *err, size_t errlen, const char **code);
	void (*attach)(void *h, struct sandbox_spec *spec);
	json_t *(*describe)(void *h);
	void (*close)(void *h);
};
void sessions_set_gateway(const struct session_gateway *gw);

/* Kills every session (server shutdown). */
void sessions_shutdown(void);
/* Pre-built sandboxes ready now, and creates that took one so far; from
 * any thread. */
void session_pool_counts(unsigned *ready, unsigned long long *used);

/* POST /v1/sandboxes. args: {"limits": {...}, "env": {...},
 * "idle_timeout_s", "max_lifetime_s", "labels": {...}, "llm",
 * "host_routes"}. */
void session_create(json_t *args, session_reply_fn fn, void *ctx);
/* As session_create(), with host directories bound into the sandbox
 * (binds borrowed; for the server's own callers, never a client's).
 * shown (borrowed, may be NULL) is an object whose members are added to
 * the sandbox's JSON: what the binds stand for ("models", "gpus"). */
void session_create_bound(json_t *args, const struct sandbox_bind *binds,
			  size_t nbinds, json_t *shown, session_reply_fn fn,
			  void *ctx);
void session_get(const char *id, session_reply_fn fn, void *ctx);
/* True when id names a live sandbox (not one being deleted). */
bool session_exists(const char *id);
/* A TCP socket of the network of sandbox id (sandbox_net_socket()), or
 * -ENOENT when there is no such live sandbox; loop thread only. */
int session_net_socket(const char *id);
/* label: "key=value" or NULL. */
void session_list(const char *label, session_reply_fn fn, void *ctx);
void session_delete(const char *id, session_reply_fn fn, void *ctx);

/* Output of a streamed exec, as it happens. */
typedef void (*session_stream_fn)(void *ctx, const char *stream,
				  const char *data, size_t len);

/* POST .../exec. args: {"argv": [..] | "cmd": "shell string", "cwd",
 * "env": {...}, "stdin", "timeout_s", "background": bool}. With stream set,
 * chunks go to stream() as they come and the final reply is the exit
 * event. */
void session_exec(const char *id, json_t *args, session_stream_fn stream,
		  session_reply_fn fn, void *ctx);
/* The client of ctx went away: its streamed exec is killed, its file or
 * archive transfer stopped; the final reply still comes (and goes
 * nowhere). */
void session_abandon(void *ctx);

/* Background processes. */
void session_procs(const char *id, session_reply_fn fn, void *ctx);
void session_proc_output(const char *id, uint32_t pid, session_reply_fn fn,
			 void *ctx);
void session_proc_signal(const char *id, uint32_t pid, int sig,
			 session_reply_fn fn, void *ctx);

/* Bytes of a file or archive going out, a chunk (at most 1 MiB) at a
 * time: the first call means the reply is 200 with those bytes. Nothing
 * more comes until the receiver has handed them on and called
 * session_transfer_more(ctx), so a transfer holds about one chunk. The
 * final reply then says how it ended: status 200 with neither json nor
 * raw for a complete transfer, an error (json) for one that failed
 * midway, which the receiver must end so that its client can tell. A
 * transfer that fails before its first chunk gets an ordinary error
 * reply; an empty one gets a 200 raw reply of no bytes. */
typedef void (*session_data_fn)(void *ctx, const char *data, size_t len);
/* The receiver of ctx's transfer has handed on the last chunk. */
void session_transfer_more(void *ctx);

/* Uploads come a chunk at a time. session_file_put() and
 * session_archive_put() start one; session_upload_chunk() then gives it
 * each chunk of at most SESSION_UPLOAD_CHUNK bytes in turn: the first at
 * once, each next one only once ready(ctx) has been called for the one
 * before (init has taken it), so an upload holds about one chunk whatever
 * its size. The chunk marked last (it may be empty) ends the upload, and
 * the final reply says how it went: 201 with the file's size, 200 for an
 * archive, or an error, which may come before the last chunk (the rest is
 * then dropped). A file is created or truncated by its first chunk, and
 * one whose upload fails or is abandoned keeps what was written. An
 * archive is fed to tar's stdin as it comes. */
#define SESSION_UPLOAD_CHUNK (1u << 20)
typedef void (*session_ready_fn)(void *ctx);
/* The next chunk of ctx's upload (borrowed). */
void session_upload_chunk(void *ctx, const char *data, size_t len, bool last);

/* Files: raw bytes in and out; a directory reads as a JSON listing.
 * Paths are bytes (a name need not be UTF-8); listings give each name as
 * "name" (valid UTF-8, bad bytes as U+FFFD) and, for a name that is not
 * UTF-8, "name_b64" (its bytes in base64). */
void session_file_put(const char *id, const char *path, session_ready_fn ready,
		      session_reply_fn fn, void *ctx);
void session_file_get(const char *id, const char *path, session_data_fn data,
		      session_reply_fn fn, void *ctx);
void session_file_delete(const char *id, const char *path, bool recursive,
			 session_reply_fn fn, void *ctx);
/* Trees as tar archives (extracted and created by tar inside the sandbox,
 * as the sandbox user). Archives are GNU tar with sparse files kept
 * sparse, of trees under the sandbox's writable roots only (/work, /tmp,
 * /mnt, /home/sandbox, /dev/shm), and at most the sandbox's disk plus
 * memory limits long (all a sandbox can hold, headers included). */
void session_archive_put(const char *id, const char *dir,
			 session_ready_fn ready, session_reply_fn fn,
			 void *ctx);
void session_archive_get(const char *id, const char *dir, session_data_fn data,
			 session_reply_fn fn, void *ctx);

/* REPL cells. args: {"language": "python"|"bash", "code", "context",
 * "timeout_s"}. */
void session_repl(const char *id, json_t *args, session_reply_fn fn, void *ctx);

/* Interfaces (runtime/rpc.h). Load: args as rpc_load() takes them;
 * schema: Seer's {"functions", "schemas"} (full: with "signatures");
 * call: {"fn", "args", "kwargs", "timeout_s"?}; list: every interface;
 * unload: removes one. */
void session_rpc_load(const char *id, json_t *args, session_reply_fn fn,
		      void *ctx);
void session_rpc_schema(const char *id, const char *name, bool full,
			session_reply_fn fn, void *ctx);
void session_rpc_call(const char *id, const char *name, json_t *call,
		      session_reply_fn fn, void *ctx);
void session_rpc_list(const char *id, session_reply_fn fn, void *ctx);
void session_rpc_unload(const char *id, const char *name, session_reply_fn fn,
			void *ctx);

#endif

/*
 * Interfaces of a stateful sandbox, host side: Python modules whose
 * @expose functions the host may call. Each named interface is one
 * long-lived process inside the sandbox (guest/rpc.py, embedded in sbx)
 * that loads the module once and then runs calls concurrently; requests
 * go to its stdin as JSON lines, answers come back as RS-framed JSON on
 * its stdout, matched to their call by id.
 *
 * A call past its timeout is answered at once (the process may finish it
 * later; that answer is dropped, and when every worker is held by such
 * calls the process is restarted). A process that dies is started again
 * with the same module; the calls it held are answered saying it crashed
 * and was restarted. Everything here runs on the runner's loop thread.
 */
#ifndef SBX_RPC_H
#define SBX_RPC_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "runtime/session.h"

struct loop;
struct rpc;

#define RPC_DEFAULT_WORKERS 8
#define RPC_MAX_WORKERS 256
#define RPC_DEFAULT_TIMEOUT_MS 600000ull
#define RPC_MAX_TIMEOUT_MS 3600000ull
/* The largest answer a call may give, as JSON text. */
#define RPC_MAX_RESULT (16u << 20)

/* What an interface needs from its session. */
struct rpc_host {
	/* Starts argv (stdin kept open for stdin_write); sets *id. Returns
	 * 0 or -EPIPE when the sandbox is gone. */
	int (*exec)(void *sctx, uint32_t *id, const char *const *argv);
	void (*stdin_write)(void *sctx, uint32_t id, const char *data,
			    size_t len);
	void (*signal)(void *sctx, uint32_t id, int sig);
	/* A call came or went: the sandbox is in use. */
	void (*touch)(void *sctx);
};

/* Loads (or replaces) an interface. args, checked by the server
 * (rpc_parse_load()): {"name", "source" | "path", "workers",
 * "timeout_s", "load_timeout_s"}. Replies 200 with {"name", "functions",
 * "schemas"} once the module has run, or 422 with the error and its
 * traceback. */
void rpc_load(struct rpc **list, const struct rpc_host *host, void *sctx,
	      struct loop *loop, json_t *args, session_reply_fn fn, void *ctx);
/* Replies with interface name's schema, Seer's shape: {"functions",
 * "schemas"}; with full set, also "signatures" and "name" (what client
 * code is written from). 404 for an unknown name, 409 while it loads. */
void rpc_schema(struct rpc *list, const char *name, bool full,
		session_reply_fn fn, void *ctx);
/* {"interfaces": [{"name", "state", "functions", "restarts", ...}]} */
json_t *rpc_list(struct rpc *list);
/* Calls a function. call: {"fn", "args", "kwargs", "timeout_s"?} as
 * rpc_parse_call() makes it. Replies 200 with {"ok": true, "result"} (as
 * raw JSON text, numbers as the interface wrote them) or {"ok": false,
 * "code", "error", "traceback"}; 404 for an unknown interface. */
void rpc_call(struct rpc **list, const char *name, json_t *call,
	      session_reply_fn fn, void *ctx);
/* Removes interface name, killing its process. */
void rpc_unload(struct rpc **list, const char *name, session_reply_fn fn,
		void *ctx);

/* Output of process id (false: not an interface's). */
bool rpc_output(struct rpc *list, uint32_t id, int stream, const char *data,
		size_t len);
/* Process id ended (false: not an interface's). */
bool rpc_process_ended(struct rpc **list, uint32_t id,
		       const struct sandbox_step_result *res);
/* Whether calls are in flight or an interface is loading. */
bool rpc_busy(const struct rpc *list);
/* The sandbox is gone: answers what waits with why, frees everything. */
void rpc_free_all(struct rpc *list, const char *why);

#endif

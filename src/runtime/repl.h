/*
 * REPL contexts of a stateful sandbox. Each (language, context name) pair
 * is one long-lived driver process inside the sandbox (guest/repl.py,
 * embedded in sbx) fed one JSON line per cell. Cells of one context run one
 * at a time, in order. A cell past its timeout gets SIGINT; a driver that
 * does not answer within a grace period is killed and started afresh, and
 * the reply says "restarted": true.
 */
#ifndef SBX_REPL_H
#define SBX_REPL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "runtime/session.h"

struct loop;
struct repl;

/* What a REPL needs from its session. */
struct repl_host {
	/* Starts argv (stdin kept open for stdin_write); sets *id. */
	void (*exec)(void *sctx, uint32_t *id, const char *const *argv);
	void (*stdin_write)(void *sctx, uint32_t id, const char *data,
			    size_t len);
	void (*signal)(void *sctx, uint32_t id, int sig);
};

/* Runs a cell. args: {"language", "code", "context", "timeout_s"}. */
void repl_run(struct repl **list, const struct repl_host *host, void *sctx,
	      struct loop *loop, json_t *args, session_reply_fn fn, void *ctx);
/* Output of the driver process id (false: not a REPL's). */
bool repl_output(struct repl *list, uint32_t id, int stream, const char *data,
		 size_t len);
void repl_process_ended(struct repl *list, uint32_t id,
			const struct sandbox_step_result *res);
bool repl_busy(const struct repl *list);
/* The sandbox is gone: fails waiting cells with why, frees everything. */
void repl_free_all(struct repl *list, const char *why);

#endif

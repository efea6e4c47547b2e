/*
 * What the server's files share: the request object and the route
 * handlers.
 */
#ifndef SBX_SERVER_INTERNAL_H
#define SBX_SERVER_INTERNAL_H

#include <jansson.h>
#include <stdarg.h>

#include "runtime/runner.h"
#include "server/server.h"

struct request;

/* The running server, as handlers see it. */
struct server_state {
	const struct server_config *cfg;
	struct runner *runner;
	uint64_t started_ns;
};
extern struct server_state server_state;

/* Replies with body (the reference is taken) and status. May be called
 * from any thread, once. */
void request_reply(struct request *req, unsigned status, json_t *body);
/* Replies with {"error": {"code": code, "message": ...}}. */
void request_error(struct request *req, unsigned status, const char *code,
		   const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Replies with a raw body of the given content type (copied). */
void request_reply_raw(struct request *req, unsigned status,
		       const char *content_type, const char *body, size_t len);
const char *request_body(struct request *req, size_t *len);

/* Runs spec (its contents are taken). output() collects while it runs;
 * done() must reply. Both run on the runner's thread with ctx. When the
 * queue is full the request gets 503 and done() is not called (ctx is
 * freed with free_ctx). A client that disconnects has its sandbox killed;
 * done() still runs and its reply is dropped. */
struct run_hooks {
	sandbox_output_fn output;
	void (*done)(struct request *req, struct sandbox_result *res,
		     void *ctx);
	void (*free_ctx)(void *ctx);
};
void request_run(struct request *req, struct sandbox_spec *spec,
		 const struct run_hooks *hooks, void *ctx);

/* Route handlers. */
void compat_run_code(struct request *req);
void compat_ping(struct request *req);
void native_run(struct request *req);
void stats_health(struct request *req);
void stats_metrics(struct request *req);

/* Metrics fed by the HTTP layer and the handlers. */
void metrics_request(const char *route, unsigned status, uint64_t ns);
void metrics_run(enum sandbox_status status);
void metrics_disconnect(void);

/* Appends a step result's output to obj as UTF-8-safe strings. */
json_t *json_text(const char *data, size_t len);

#endif

/*
 * What the route files share with each other and offer the HTTP layer:
 * the server's state, the route table and its handlers, and the metrics
 * the HTTP layer feeds. The request API handlers use is request.h.
 */
#ifndef SBX_SERVER_INTERNAL_H
#define SBX_SERVER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/result.h"
#include "runtime/runner.h"
#include "server/server.h"

struct request;
struct buf;

/* The running server, as handlers see it. */
struct server_state {
	const struct server_config *cfg;
	struct runner *runner;
	uint64_t started_ns;
};
extern struct server_state server_state;

/* The route table (routes.c): a request whose method and path match an
 * entry (or whose path starts with it, for a prefix entry, whatever the
 * method) goes to its handler. */
struct route {
	const char *method;
	const char *path;
	bool prefix;
	void (*fn)(struct request *req);
};
extern const struct route routes_table[];
extern const size_t routes_count;

/* Route handlers. */
void compat_run_code(struct request *req);
void compat_ping(struct request *req);
void native_run(struct request *req);
void stats_health(struct request *req);
void stats_metrics(struct request *req);
/* Everything under /v1/sandboxes. */
void sandboxes_route(struct request *req);
bool sandboxes_is_upload(const char *method, const char *url);
/* Starts and stops the stateful-sandbox table on the runner's thread. */
void sandboxes_start(const struct server_config *cfg);
void sandboxes_stop(void);

/* The model gateway (gateway.c). gateway_route() serves requests of
 * sandboxes' gateway sockets; llm_route() /llm/... on the server's own
 * address; traces_route() /v1/traces. */
void gateway_route(struct request *req);
void llm_route(struct request *req);
void traces_route(struct request *req);
/* Forwards req (deferred: its reference is taken) to url, with its
 * method, body and a few of its headers plus headers (NULL-terminated
 * "Name: value" lines, taken), and streams the answer back; sock, when not
 * -1, is the socket to connect with (taken). what names the target in
 * errors ("sandbox port 8000"). */
void forward_start(struct request *req, const char *url, int sock,
		   char **headers, const char *what);
/* /v1/sandboxes/{id}/ports/{port}/... (ports.c); sub is from "/ports". */
void ports_route(struct request *req, const char *id, const char *sub);

/* Drops a connection's reference to its peer. */
void gateway_peer_put(void *peer);
/* Starts the gateway (upstreams, trace store, its thread) before the
 * HTTP service; returns 0 or 1 with a message printed. */
int gateway_start(const struct server_config *cfg);
/* Stops accepting on sandboxes' gateway sockets; then, once the HTTP
 * services are down, everything. */
void gateway_stop_accepting(void);
void gateway_stop(void);

/* The state directory: --state-dir, else /var/lib/sbx as root, else
 * $XDG_STATE_HOME/sbx or ~/.local/state/sbx (statedir.c). The caller
 * frees it. */
char *server_state_dir(const struct server_config *cfg);

/* Agent rollouts (agents.c, executions.c, pools.c): /v1/agents,
 * /v1/executions, /v1/pools, and rLLM's result routes, which the gateway
 * hands on (path: from "/rllm/results/"). */
void agents_route(struct request *req);
void executions_route(struct request *req);
void pools_route(struct request *req);
void rllm_results_route(struct request *req, const char *path);
/* Opens the execution store and recovers what a crash left, after the
 * runner and the gateway start; returns 0 or 1 with a message printed. */
int executions_start(const struct server_config *cfg);
/* Stops dispatching (before the runner stops), then closes the store. */
void executions_stop_dispatch(void);
void executions_stop(void);
/* The rollout lines of /metrics. */
void executions_metrics(struct buf *out);

/* Metrics fed by the HTTP layer and the handlers. */
void metrics_request(const char *route, unsigned status, uint64_t ns);
/* The metrics label of a /v1/sandboxes URL path: its route template
 * ("/v1/sandboxes/{id}/exec"), "not_found" when no route has its shape. */
const char *stats_route_template(const char *path);
void metrics_run(enum sandbox_status status);
void metrics_disconnect(void);

#endif

/*
 * The route table and the server's state: what the HTTP layer looks up to
 * hand a request to its handler.
 */
#include "base/util.h"
#include "server/internal.h"
#include "server/prime.h"
#include "base/banned.h"

struct server_state server_state;

const struct route routes_table[] = {
	{"*", "/v1/sandboxes/", true, sandboxes_route},
	{"GET", "/v1/sandboxes", false, sandboxes_route},
	{"POST", "/v1/sandboxes", false, sandboxes_route},
	{"POST", "/run_code", false, compat_run_code},
	{"GET", "/v1/ping", false, compat_ping},
	{"POST", "/v1/run", false, native_run},
	{"GET", "/v1/health", false, stats_health},
	{"GET", "/metrics", false, stats_metrics},
	{"*", "/llm/", true, llm_route},
	{"*", "/v1/traces", true, traces_route},
	{"*", "/v1/agents", true, agents_route},
	{"*", "/v1/executions", true, executions_route},
	{"*", "/v1/pools", true, pools_route},
	{"*", "/prime/", true, prime_route},
};
const size_t routes_count = ARRAY_SIZE(routes_table);

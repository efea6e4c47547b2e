/*
 * Health and Prometheus metrics. Counters are atomics bumped by the HTTP
 * layer and the runner callbacks; the text is rendered on each scrape.
 */
#include <stdio.h>
#include <string.h>

#include "base/buf.h"
#include "base/util.h"
#include "runtime/lang.h"
#include "runtime/session.h"
#include "server/gateway.h"
#include "server/internal.h"
#include "server/resources.h"
#include "server/request.h"
#include "base/banned.h"

#define SBX_VERSION "0.1.0"

static const char *const route_names[] = {
	"/run_code",
	"/v1/ping",
	"/v1/run",
	"/v1/health",
	"/metrics",
	"/v1/sandboxes",
	"/v1/sandboxes/{id}",
	"/v1/sandboxes/{id}/exec",
	"/v1/sandboxes/{id}/repl",
	"/v1/sandboxes/{id}/processes",
	"/v1/sandboxes/{id}/processes/{n}",
	"/v1/sandboxes/{id}/processes/{n}/signal",
	"/v1/sandboxes/{id}/files",
	"/v1/sandboxes/{id}/files/{path}",
	"/v1/sandboxes/{id}/archive",
	"not_found",
	"method_not_allowed",
	"unauthorized",
	"other",
};
#define NROUTES ARRAY_SIZE(route_names)
static const unsigned code_list[] = {200, 201, 204, 400, 401, 403, 404,
				     405, 409, 410, 413, 414, 422, 429,
				     431, 500, 502, 503, 505, 0};
#define NCODES ARRAY_SIZE(code_list)
/* Latency buckets in seconds. */
static const double bucket_s[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
				  0.5,	 1,    2.5,   5,    10,	 30};
#define NBUCKETS ARRAY_SIZE(bucket_s)
#define NSTATUS (SANDBOX_ERROR + 1)

static uint64_t requests[NROUTES][NCODES];
static uint64_t latency_count[NROUTES][NBUCKETS + 1];
static uint64_t latency_sum_us[NROUTES];
static uint64_t runs[NSTATUS];
static uint64_t disconnects;

static size_t route_index(const char *route)
{
	size_t i;

	for (i = 0; i < NROUTES; i++)
		if (!strcmp(route_names[i], route))
			return i;
	return NROUTES - 1;
}

static size_t code_index(unsigned code)
{
	size_t i;

	for (i = 0; i + 1 < NCODES; i++)
		if (code_list[i] == code)
			return i;
	return NCODES - 1;
}

/* Skips one path segment (an id, a number) and says whether it had any
 * bytes; *p then points at what follows it. */
static bool stats_skip_segment(const char **p)
{
	size_t n = strcspn(*p, "/");

	*p += n;
	return n > 0;
}

const char *stats_route_template(const char *path)
{
	const char *p;

	if (!str_starts_with(path, "/v1/sandboxes/"))
		return !strcmp(path, "/v1/sandboxes") ? "/v1/sandboxes"
						      : "other";
	p = path + strlen("/v1/sandboxes/");
	if (!stats_skip_segment(&p))
		return "not_found";
	if (!*p)
		return "/v1/sandboxes/{id}";
	if (!strcmp(p, "/exec"))
		return "/v1/sandboxes/{id}/exec";
	if (!strcmp(p, "/repl"))
		return "/v1/sandboxes/{id}/repl";
	if (!strcmp(p, "/archive"))
		return "/v1/sandboxes/{id}/archive";
	if (!strcmp(p, "/files") || !strcmp(p, "/files/"))
		return "/v1/sandboxes/{id}/files";
	if (str_starts_with(p, "/files/"))
		return "/v1/sandboxes/{id}/files/{path}";
	if (!strcmp(p, "/processes"))
		return "/v1/sandboxes/{id}/processes";
	if (str_starts_with(p, "/processes/")) {
		p += strlen("/processes/");
		if (!stats_skip_segment(&p))
			return "not_found";
		if (!*p)
			return "/v1/sandboxes/{id}/processes/{n}";
		if (!strcmp(p, "/signal"))
			return "/v1/sandboxes/{id}/processes/{n}/signal";
	}
	return "not_found";
}

void metrics_request(const char *route, unsigned status, uint64_t ns)
{
	size_t r = route_index(route), b;
	double s = (double)ns / 1e9;

	__atomic_add_fetch(&requests[r][code_index(status)], 1,
			   __ATOMIC_RELAXED);
	for (b = 0; b < NBUCKETS && s > bucket_s[b]; b++)
		;
	__atomic_add_fetch(&latency_count[r][b], 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&latency_sum_us[r], ns / 1000, __ATOMIC_RELAXED);
}

void metrics_run(enum sandbox_status status)
{
	if ((unsigned)status < NSTATUS)
		__atomic_add_fetch(&runs[status], 1, __ATOMIC_RELAXED);
}

void metrics_disconnect(void)
{
	__atomic_add_fetch(&disconnects, 1, __ATOMIC_RELAXED);
}

static uint64_t load(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

void stats_health(struct request *req)
{
	unsigned running, queued, maxr, maxq, i;
	const struct lang *l;
	json_t *langs = json_array(), *o;

	unsigned warm;
	unsigned long long warm_used;

	runner_counts(server_state.runner, &running, &queued, &maxr, &maxq);
	runner_warm_counts(server_state.runner, &warm, &warm_used);
	for (i = 0; (l = lang_at(i)); i++)
		if (lang_available(l))
			json_array_append_new(langs, json_string(l->name));
	o = json_pack("{s:s,s:s,s:I,s:{s:i,s:i},s:i,s:i,s:i,s:o,s:o}", "status",
		      "ok", "version", SBX_VERSION, "uptime_s",
		      (json_int_t)((now_ns() - server_state.started_ns) /
				   1000000000ull),
		      "capacity", "sandboxes", (int)maxr, "queue", (int)maxq,
		      "running", (int)running, "queued", (int)queued, "warm",
		      (int)warm, "languages", langs, "llm", gateway_health());
	/* "models" (the store) and "gpus". */
	json_object_update_new(o, resources_health());
	request_reply(req, 200, o);
}

void stats_metrics(struct request *req)
{
	unsigned running, queued, maxr, maxq;
	struct buf b;
	size_t r, c, k;

	unsigned warm, prebuilt;
	unsigned long long warm_used, prebuilt_used;
	uint64_t held, dropped;

	runner_counts(server_state.runner, &running, &queued, &maxr, &maxq);
	runner_warm_counts(server_state.runner, &warm, &warm_used);
	buf_init(&b);
	buf_adds(&b, "# HELP sbx_requests_total HTTP requests by route and "
		     "status code.\n# TYPE sbx_requests_total counter\n");
	for (r = 0; r < NROUTES; r++)
		for (c = 0; c < NCODES; c++) {
			uint64_t v = load(&requests[r][c]);

			if (v)
				buf_addf(&b,
					 "sbx_requests_total{route=\"%s\","
					 "code=\"%u\"} %llu\n",
					 route_names[r], code_list[c],
					 (unsigned long long)v);
		}
	buf_adds(&b, "# HELP sbx_request_duration_seconds Time from the "
		     "request to its reply.\n# TYPE "
		     "sbx_request_duration_seconds histogram\n");
	for (r = 0; r < NROUTES; r++) {
		uint64_t cum = 0;

		for (k = 0; k <= NBUCKETS; k++)
			cum += load(&latency_count[r][k]);
		if (!cum)
			continue;
		cum = 0;
		for (k = 0; k < NBUCKETS; k++) {
			cum += load(&latency_count[r][k]);
			buf_addf(&b,
				 "sbx_request_duration_seconds_bucket{route="
				 "\"%s\",le=\"%g\"} %llu\n",
				 route_names[r], bucket_s[k],
				 (unsigned long long)cum);
		}
		cum += load(&latency_count[r][NBUCKETS]);
		buf_addf(&b,
			 "sbx_request_duration_seconds_bucket{route=\"%s\","
			 "le=\"+Inf\"} %llu\n"
			 "sbx_request_duration_seconds_sum{route=\"%s\"} "
			 "%.6f\n"
			 "sbx_request_duration_seconds_count{route=\"%s\"} "
			 "%llu\n",
			 route_names[r], (unsigned long long)cum,
			 route_names[r], (double)load(&latency_sum_us[r]) / 1e6,
			 route_names[r], (unsigned long long)cum);
	}
	buf_adds(&b, "# HELP sbx_runs_total Finished sandbox runs by "
		     "status.\n# TYPE sbx_runs_total counter\n");
	for (k = 0; k < NSTATUS; k++)
		buf_addf(&b, "sbx_runs_total{status=\"%s\"} %llu\n",
			 sandbox_status_name((enum sandbox_status)k),
			 (unsigned long long)load(&runs[k]));
	buf_addf(&b,
		 "# HELP sbx_client_disconnects_total Runs killed because "
		 "their client went away.\n# TYPE "
		 "sbx_client_disconnects_total counter\n"
		 "sbx_client_disconnects_total %llu\n"
		 "# HELP sbx_sandboxes_running Sandboxes running now.\n"
		 "# TYPE sbx_sandboxes_running gauge\n"
		 "sbx_sandboxes_running %u\n"
		 "# HELP sbx_sandboxes_queued Runs waiting for a slot.\n"
		 "# TYPE sbx_sandboxes_queued gauge\n"
		 "sbx_sandboxes_queued %u\n"
		 "# HELP sbx_sandboxes_capacity Sandboxes that may run at "
		 "once.\n# TYPE sbx_sandboxes_capacity gauge\n"
		 "sbx_sandboxes_capacity %u\n"
		 "# HELP sbx_warm_sandboxes Warm sandboxes ready for a run.\n"
		 "# TYPE sbx_warm_sandboxes gauge\n"
		 "sbx_warm_sandboxes %u\n"
		 "# HELP sbx_warm_runs_total Runs that started on a warm "
		 "sandbox.\n# TYPE sbx_warm_runs_total counter\n"
		 "sbx_warm_runs_total %llu\n",
		 (unsigned long long)load(&disconnects), running, queued, maxr,
		 warm, warm_used);
	buf_addf(&b,
		 "# HELP sbx_warm_reused_runs_total Runs that started on a "
		 "warm sandbox which had served a run before.\n"
		 "# TYPE sbx_warm_reused_runs_total counter\n"
		 "sbx_warm_reused_runs_total %llu\n",
		 runner_warm_reused(server_state.runner));
	session_pool_counts(&prebuilt, &prebuilt_used);
	buf_addf(&b,
		 "# HELP sbx_prebuilt_sandboxes Stateful sandboxes built "
		 "ahead and ready for a create.\n"
		 "# TYPE sbx_prebuilt_sandboxes gauge\n"
		 "sbx_prebuilt_sandboxes %u\n"
		 "# HELP sbx_prebuilt_used_total Stateful sandboxes created "
		 "on one built ahead.\n"
		 "# TYPE sbx_prebuilt_used_total counter\n"
		 "sbx_prebuilt_used_total %llu\n",
		 prebuilt, prebuilt_used);
	request_budget_counts(&held, &dropped);
	buf_addf(&b,
		 "# HELP sbx_reply_bytes_held Bytes of replies not yet taken "
		 "by their clients.\n# TYPE sbx_reply_bytes_held gauge\n"
		 "sbx_reply_bytes_held %llu\n"
		 "# HELP sbx_reply_budget_bytes Most bytes unsent replies may "
		 "hold (0: no limit).\n# TYPE sbx_reply_budget_bytes gauge\n"
		 "sbx_reply_budget_bytes %llu\n"
		 "# HELP sbx_reply_budget_dropped_total Connections closed "
		 "because unsent replies exceeded the budget.\n"
		 "# TYPE sbx_reply_budget_dropped_total counter\n"
		 "sbx_reply_budget_dropped_total %llu\n",
		 (unsigned long long)held,
		 (unsigned long long)server_state.cfg->reply_budget,
		 (unsigned long long)dropped);
	gateway_metrics(&b);
	executions_metrics(&b);
	request_reply_take(req, 200, "text/plain; version=0.0.4", b.data,
			   b.len);
}

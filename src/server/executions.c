/*
 * Executions: agent rollouts submitted over HTTP, run in pools
 * (server/pools.c), with results that outlive the server.
 *
 *   POST   /v1/executions                  202 {"id"} once committed
 *   GET    /v1/executions[?status=&label=k=v&limit=&done_after=SEQ&wait=S]
 *   GET    /v1/executions/{id}[?wait=S]    long-polls until it ends
 *   DELETE /v1/executions/{id}             cancels (its run is killed)
 *   GET    /v1/executions/{id}/episode     result + the traced model calls
 *   POST|GET /v1/pools, GET|DELETE /v1/pools/{name}
 *   POST|GET /rllm/results/{id}            rLLM's result routes (from the
 *                                          gateway, in sandboxes and /llm)
 *
 * A submission is a row of the execution store, committed before the 202;
 * the row is then handed to the pools on the runner's thread. Waiters
 * (long polls) live on that thread too: an execution's end, which pools.c
 * commits before it calls executions_ended(), answers them. At start-up
 * the store's recovery turns what a crash left running into "lost" (or
 * queues it again while it has retries) and the queued rows are handed to
 * the pools again.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/loop.h"
#include "base/util.h"
#include "server/executions.h"
#include "server/gateway.h"
#include "server/internal.h"
#include "server/request.h"
#include "store/executions.h"
#include "store/traces.h"
#include "base/banned.h"

#define MAX_WAIT_S 600
#define MAX_LIST 10000
#define MAX_RLLM_ID 256

struct rollouts rollouts;

/* ---- waiters (the loop thread) ---- */

struct waiter {
	struct request *req;
	char id[48];   /* one execution, or "" for the feed */
	json_t *query; /* the feed: {"status", "label", "limit", "after"} */
	int timer_fd;
	struct waiter *next;
};

static struct waiter *waiters;
static uint64_t rllm_posts, rllm_gets;

static bool is_terminal(const char *status)
{
	return status &&
	       (!strcmp(status, "completed") || !strcmp(status, "failed") ||
		!strcmp(status, "cancelled") || !strcmp(status, "lost"));
}

static void waiter_unlink(struct waiter *w)
{
	struct waiter **pp;

	for (pp = &waiters; *pp; pp = &(*pp)->next)
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	if (w->timer_fd >= 0) {
		loop_del_fd(rollouts.loop, w->timer_fd);
		fd_close(&w->timer_fd);
	}
}

static void waiter_free(struct waiter *w)
{
	json_decref(w->query);
	free(w);
}

static void reply_one(struct request *req, const char *id)
{
	json_t *row = exec_store_get(rollouts.store, id);

	if (row)
		request_reply(req, 200, row);
	else
		request_error(req, 404, "not_found", "no execution '%.64s'",
			      id);
}

/* The feed's query: ended executions after a seq, with filters. */
static json_t *feed_list(const json_t *q)
{
	struct exec_query eq = {0};
	const char *label = json_string_value(json_object_get(q, "label"));
	char key[160];
	const char *eqs;

	eq.status = "done";
	eq.by_seq = true;
	eq.brief = true;
	eq.done_after = json_integer_value(json_object_get(q, "after"));
	eq.limit = (unsigned)json_integer_value(json_object_get(q, "limit"));
	if (label && (eqs = strchr(label, '=')) &&
	    (size_t)(eqs - label) < sizeof(key)) {
		memcpy(key, label, (size_t)(eqs - label));
		key[eqs - label] = '\0';
		eq.label_key = key;
		eq.label_value = eqs + 1;
	}
	return exec_store_list(rollouts.store, &eq);
}

static void reply_feed(struct request *req, json_t *list)
{
	int64_t last = json_integer_value(json_object_get(
		json_array_get(list, json_array_size(list) - 1), "seq"));
	int64_t after = 0;

	if (!json_array_size(list))
		after = exec_store_last_seq(rollouts.store);
	request_reply(
		req, 200,
		json_pack("{s:o,s:I}", "executions", list, "last_seq",
			  (json_int_t)(json_array_size(list) ? last : after)));
}

static void waiter_answer(struct waiter *w)
{
	if (w->id[0]) {
		reply_one(w->req, w->id);
	} else {
		json_t *list = feed_list(w->query);

		reply_feed(w->req, list ? list : json_array());
	}
	request_put(w->req);
	waiter_unlink(w);
	waiter_free(w);
}

static void on_wait_timer(struct loop *loop, int fd, uint32_t events, void *arg)
{
	waiter_answer(arg);
}

void executions_ended(const char *id)
{
	struct waiter *w = waiters, *next;

	for (; w; w = next) {
		next = w->next;
		if (w->id[0] && strcmp(w->id, id))
			continue;
		if (!w->id[0]) {
			json_t *list = feed_list(w->query);

			if (!list || !json_array_size(list)) {
				json_decref(list);
				continue;
			}
			reply_feed(w->req, list);
			request_put(w->req);
			waiter_unlink(w);
			waiter_free(w);
			continue;
		}
		waiter_answer(w);
	}
}

static void wait_cb(struct loop *loop, void *arg)
{
	struct waiter *w = arg;

	w->next = waiters;
	waiters = w;
	/* Stopping, or it ended (or was never handed to the pools). */
	if (rollouts.stopping || (w->id[0] && !pools_is_active(w->id))) {
		waiter_answer(w);
		return;
	}
	if (w->timer_fd >= 0 &&
	    loop_add_fd(loop, w->timer_fd, EPOLLIN, on_wait_timer, w) < 0) {
		fd_close(&w->timer_fd);
		waiter_answer(w);
	}
}

static void wait_later(struct request *req, const char *id, json_t *query,
		       double secs)
{
	struct waiter *w = xcalloc(1, sizeof(*w));

	w->req = request_defer(req);
	str_copy(w->id, sizeof(w->id), id ? id : "");
	w->query = query;
	w->timer_fd = timer_fd_new((uint64_t)(secs * 1000.0) + 1, false);
	loop_post(rollouts.loop, wait_cb, w);
}

static void stop_cb(struct loop *loop, void *arg)
{
	rollouts.stopping = true;
	pools_shutdown();
	while (waiters)
		waiter_answer(waiters);
}

/* ---- helpers ---- */

static int get_wait(struct request *req, double *secs)
{
	const char *w = request_arg(req, "wait");
	char *end;
	double v;

	*secs = 0;
	if (!w)
		return 0;
	v = strtod(w, &end);
	if (end == w || *end || !isfinite(v) || v < 0) {
		request_error(req, 400, "bad_request",
			      "'wait' must be a number of seconds");
		return -1;
	}
	*secs = v > MAX_WAIT_S ? MAX_WAIT_S : v;
	return 0;
}

static json_t *stored_pool(const char *name)
{
	json_t *all = exec_store_pool_list(rollouts.store), *v, *found = NULL;
	size_t i;

	json_array_foreach(
		all, i,
		v) if (!strcmp(json_string_value(json_object_get(v, "name"))
				       ?: "",
			       name))
	{
		found = json_incref(v);
		break;
	}
	json_decref(all);
	return found;
}

/* ---- POST /v1/executions ---- */

static void submit_cb(struct loop *loop, void *arg)
{
	pools_submit(arg);
}

static void submit(struct request *req)
{
	struct exec_request r;
	struct exec_new e = {0};
	char err[512], id[40], existing[64];
	const char *body, *hdr;
	json_t *agent = NULL, *pool = NULL, *row;
	const char *agent_id, *entry;
	size_t len;
	int rc;

	body = request_body(req, &len);
	if (executions_parse_submit(body, len, rollouts.cfg->max_lifetime_ms,
				    &r, err, sizeof(err))) {
		request_error(req, 422, "unprocessable", "%s", err);
		goto out;
	}
	hdr = request_header(req, "Idempotency-Key");
	if (hdr && *hdr)
		str_copy(r.idem_key, sizeof(r.idem_key), hdr);
	agent = exec_store_agent_get(rollouts.store, r.agent);
	if (!agent) {
		request_error(req, 422, "unknown_agent",
			      "no agent '%s' (upload one with POST "
			      "/v1/agents)",
			      r.agent);
		goto out;
	}
	agent_id = json_string_value(json_object_get(agent, "id"));
	entry = r.entry;
	if (r.pool_name[0]) {
		const char *pa;

		pool = stored_pool(r.pool_name);
		if (!pool) {
			request_error(req, 422, "unknown_pool",
				      "no pool '%s' (create it with POST "
				      "/v1/pools, or declare one with the "
				      "execution)",
				      r.pool_name);
			goto out;
		}
		pa = json_string_value(json_object_get(pool, "agent"));
		if (!pa || strcmp(pa, agent_id)) {
			request_error(req, 422, "unprocessable",
				      "pool '%s' runs agent '%s', not '%s'",
				      r.pool_name, pa ? pa : "", agent_id);
			goto out;
		}
		entry = json_string_value(json_object_get(pool, "entry"));
		if (!entry)
			entry = EXEC_DEFAULT_ENTRY;
	} else {
		if (!r.pool_given)
			executions_parse_pool(json_object(), false, &r.pool,
					      err, sizeof(err));
		pool = exec_pool_json(&r.pool);
		if (r.pool.llm == 1 && !gateway_enabled()) {
			request_error(req, 422, "no_upstream",
				      "the pool has 'llm': true, and this "
				      "server has no model upstream (sbx "
				      "serve --upstream NAME=URL)");
			goto out;
		}
	}
	util_uuid4(id);
	e.id = id;
	e.idem_key = r.idem_key[0] ? r.idem_key : NULL;
	e.agent = agent_id;
	e.entry = entry;
	e.pool = pool;
	e.task = r.task;
	e.agent_config = r.agent_config;
	e.labels = r.labels;
	e.timeout_ms = r.timeout_ms;
	e.retries = r.retries;
	rc = exec_store_add(rollouts.store, &e, existing, sizeof(existing));
	if (rc < 0) {
		request_error(req, 500, "store_error",
			      "cannot store the execution");
		goto out;
	}
	if (rc == 1) {
		row = exec_store_get(rollouts.store, existing);
		request_reply(req, 200,
			      json_pack("{s:s,s:O,s:b}", "id", existing,
					"status",
					json_object_get(row, "status"),
					"existing", 1));
		json_decref(row);
		goto out;
	}
	row = exec_store_get(rollouts.store, id);
	if (!row) {
		request_error(req, 500, "store_error",
			      "cannot read the execution back");
		goto out;
	}
	loop_post(rollouts.loop, submit_cb, row);
	request_reply(req, 202,
		      json_pack("{s:s,s:s}", "id", id, "status", "queued"));
out:
	json_decref(agent);
	json_decref(pool);
	exec_request_release(&r);
}

/* ---- listing ---- */

static void list(struct request *req)
{
	const char *status = request_arg(req, "status");
	const char *label = request_arg(req, "label");
	const char *limit = request_arg(req, "limit");
	const char *after = request_arg(req, "done_after");
	struct exec_query q = {0};
	uint64_t n = 0, a = 0;
	char key[160];
	const char *eqs;
	double secs;
	json_t *arr;

	if (get_wait(req, &secs))
		return;
	if ((limit && (parse_u64(limit, &n) || !n || n > MAX_LIST)) ||
	    (after && parse_u64(after, &a))) {
		request_error(req, 400, "bad_request",
			      "'limit' must be 1 to %d and 'done_after' a "
			      "number",
			      MAX_LIST);
		return;
	}
	if (status && strcmp(status, "done") && !is_terminal(status) &&
	    strcmp(status, "queued") && strcmp(status, "running")) {
		request_error(req, 400, "bad_request",
			      "'status' must be queued, running, completed, "
			      "failed, cancelled, lost or done");
		return;
	}
	if (label) {
		eqs = strchr(label, '=');
		if (!eqs || eqs == label ||
		    (size_t)(eqs - label) >= sizeof(key)) {
			request_error(req, 400, "bad_request",
				      "'label' must be key=value");
			return;
		}
		memcpy(key, label, (size_t)(eqs - label));
		key[eqs - label] = '\0';
		q.label_key = key;
		q.label_value = eqs + 1;
	}
	if (after) {
		json_t *query =
			json_pack("{s:s?,s:I,s:I}", "label", label, "after",
				  (json_int_t)a, "limit", (json_int_t)n);

		arr = feed_list(query);
		if (arr && !json_array_size(arr) && secs > 0) {
			json_decref(arr);
			wait_later(req, NULL, query, secs);
			return;
		}
		json_decref(query);
		reply_feed(req, arr ? arr : json_array());
		return;
	}
	q.status = status;
	q.limit = (unsigned)n;
	q.brief = true;
	arr = exec_store_list(rollouts.store, &q);
	if (!arr) {
		request_error(req, 500, "store_error",
			      "cannot read the executions");
		return;
	}
	request_reply(req, 200, json_pack("{s:o}", "executions", arr));
}

/* ---- one execution ---- */

static void cancel_cb(struct loop *loop, void *arg)
{
	struct waiter *w = arg;
	json_t *row;

	pools_cancel(w->id);
	row = exec_store_get(rollouts.store, w->id);
	if (row)
		request_reply(w->req, 200, row);
	else
		request_error(w->req, 404, "not_found", "no execution '%.64s'",
			      w->id);
	request_put(w->req);
	waiter_free(w);
}

struct episode {
	json_t *traces;
};

static int episode_trace(void *arg, json_t *trace)
{
	struct episode *e = arg;

	json_array_append(e->traces, trace);
	return 0;
}

static void episode(struct request *req, const char *id)
{
	json_t *row = exec_store_get(rollouts.store, id), *out;
	struct traces_query q = {0};
	struct episode e;
	const char *uid;
	char err[256];

	if (!row) {
		request_error(req, 404, "not_found", "no execution '%.64s'",
			      id);
		return;
	}
	e.traces = json_array();
	uid = json_string_value(json_object_get(row, "session_uid"));
	if (uid && rollouts.traces) {
		q.session = uid;
		if (traces_each(rollouts.traces, &q, episode_trace, &e, err,
				sizeof(err)) < 0) {
			json_decref(row);
			json_decref(e.traces);
			request_error(req, 500, "store_error", "%s", err);
			return;
		}
	}
	out = json_pack("{s:O,s:O,s:O,s:O,s:O,s:O,s:O,s:o}", "id",
			json_object_get(row, "id"), "status",
			json_object_get(row, "status"), "session_uid",
			json_object_get(row, "session_uid"), "task",
			json_object_get(row, "task"), "labels",
			json_object_get(row, "labels"), "result",
			json_object_get(row, "result"), "error_code",
			json_object_get(row, "error_code"), "traces", e.traces);
	json_decref(row);
	request_reply(req, 200, out);
}

void executions_route(struct request *req)
{
	const char *method = request_method(req);
	const char *path = request_path(req);
	char id[48];
	const char *rest, *slash;
	double secs;

	if (!rollouts.store) {
		request_error(req, 503, "unavailable",
			      "the execution store is not open");
		return;
	}
	if (!strcmp(path, "/v1/executions")) {
		if (!strcmp(method, "POST"))
			submit(req);
		else if (!strcmp(method, "GET"))
			list(req);
		else
			request_error(req, 405, "method_not_allowed",
				      "'%s' is not allowed on /v1/executions",
				      method);
		return;
	}
	rest = path + strlen("/v1/executions/");
	slash = strchr(rest, '/');
	if (!*rest ||
	    (size_t)(slash ? slash - rest : (long)strlen(rest)) >= sizeof(id)) {
		request_error(req, 404, "not_found", "no such execution");
		return;
	}
	memcpy(id, rest, slash ? (size_t)(slash - rest) : strlen(rest) + 1);
	if (slash)
		id[slash - rest] = '\0';
	if (slash) {
		if (strcmp(slash, "/episode")) {
			request_error(req, 404, "not_found", "no such route");
		} else if (strcmp(method, "GET")) {
			request_error(req, 405, "method_not_allowed",
				      "'%s' is not allowed on an episode",
				      method);
		} else {
			episode(req, id);
		}
		return;
	}
	if (!strcmp(method, "GET")) {
		json_t *row;

		if (get_wait(req, &secs))
			return;
		row = exec_store_get(rollouts.store, id);
		if (!row) {
			request_error(req, 404, "not_found",
				      "no execution '%.64s'", id);
			return;
		}
		if (secs > 0 && !is_terminal(json_string_value(
					json_object_get(row, "status")))) {
			json_decref(row);
			wait_later(req, id, NULL, secs);
			return;
		}
		request_reply(req, 200, row);
	} else if (!strcmp(method, "DELETE")) {
		struct waiter *w = xcalloc(1, sizeof(*w));

		w->timer_fd = -1;
		str_copy(w->id, sizeof(w->id), id);
		w->req = request_defer(req);
		loop_post(rollouts.loop, cancel_cb, w);
	} else {
		request_error(req, 405, "method_not_allowed",
			      "'%s' is not allowed on an execution", method);
	}
}

/* ---- pools ---- */

struct pool_msg {
	struct request *req;
	struct exec_pool_def def;
	char name[64];
	int action; /* 0 define, 1 list, 2 remove */
};

static void pool_cb(struct loop *loop, void *arg)
{
	struct pool_msg *m = arg;

	if (m->action == 0) {
		pools_define(&m->def);
		if (m->req)
			request_reply(m->req, 201, exec_pool_json(&m->def));
	} else if (m->action == 1) {
		request_reply(m->req, 200,
			      json_pack("{s:o}", "pools", pools_json()));
	} else {
		pools_remove(m->name);
		request_reply(
			m->req, 200,
			json_pack("{s:b,s:s}", "deleted", 1, "name", m->name));
	}
	if (m->req)
		request_put(m->req);
	exec_pool_release(&m->def);
	free(m);
}

void pools_route(struct request *req)
{
	const char *method = request_method(req);
	const char *path = request_path(req);
	struct pool_msg *m;

	if (!rollouts.store) {
		request_error(req, 503, "unavailable",
			      "the execution store is not open");
		return;
	}
	m = xcalloc(1, sizeof(*m));
	if (!strcmp(path, "/v1/pools") && !strcmp(method, "POST")) {
		size_t len;
		const char *body = request_body(req, &len);
		json_t *o = body && len ? json_loadb(body, len, 0, NULL) : NULL;
		json_t *a, *def;
		char err[256];

		if (!o ||
		    executions_parse_pool(o, true, &m->def, err, sizeof(err))) {
			request_error(req, 422, "unprocessable", "%s",
				      o ? err
					: "the body must be a JSON object");
			goto fail;
		}
		a = exec_store_agent_get(rollouts.store, m->def.agent);
		if (!a) {
			request_error(req, 422, "unknown_agent",
				      "no agent '%s'", m->def.agent);
			goto fail;
		}
		str_copy(m->def.agent, sizeof(m->def.agent),
			 json_string_value(json_object_get(a, "id")));
		json_decref(a);
		if (m->def.llm == 1 && !gateway_enabled()) {
			request_error(req, 422, "no_upstream",
				      "the pool has 'llm': true, and this "
				      "server has no model upstream");
			goto fail;
		}
		def = exec_pool_json(&m->def);
		if (exec_store_pool_put(rollouts.store, m->def.name, def) < 0) {
			json_decref(def);
			request_error(req, 500, "store_error",
				      "cannot store the pool");
			goto fail;
		}
		json_decref(def);
		json_decref(o);
		m->action = 0;
		m->req = request_defer(req);
		loop_post(rollouts.loop, pool_cb, m);
		return;
	fail:
		json_decref(o);
		exec_pool_release(&m->def);
		free(m);
		return;
	}
	if (!strcmp(path, "/v1/pools") && !strcmp(method, "GET")) {
		m->action = 1;
		m->req = request_defer(req);
		loop_post(rollouts.loop, pool_cb, m);
		return;
	}
	if (str_starts_with(path, "/v1/pools/") && !strcmp(method, "DELETE")) {
		const char *name = path + strlen("/v1/pools/");

		if (!*name || strlen(name) >= sizeof(m->name) ||
		    exec_store_pool_delete(rollouts.store, name) <= 0) {
			request_error(req, 404, "not_found", "no pool '%.64s'",
				      name);
			free(m);
			return;
		}
		str_copy(m->name, sizeof(m->name), name);
		m->action = 2;
		m->req = request_defer(req);
		loop_post(rollouts.loop, pool_cb, m);
		return;
	}
	free(m);
	request_error(req, 405, "method_not_allowed",
		      "'%s %.100s' is not a pool route", method, path);
}

/* ---- rLLM's result routes ---- */

/* Fills in what rLLM's ResultSubmission defaults, checking types as its
 * model does. Returns NULL with err set when a field has the wrong
 * type. */
static json_t *rllm_normalise(json_t *in, char *err, size_t errlen)
{
	json_t *o = json_object(), *v;

	v = json_object_get(in, "success");
	if (v && !json_is_boolean(v)) {
		snprintf(err, errlen, "'success' must be a boolean");
		goto bad;
	}
	json_object_set_new(o, "success", v ? json_incref(v) : json_true());
	v = json_object_get(in, "trajectories");
	if (v && !json_is_null(v) && !json_is_array(v)) {
		snprintf(err, errlen, "'trajectories' must be a list or null");
		goto bad;
	}
	json_object_set_new(o, "trajectories",
			    v ? json_incref(v) : json_null());
	v = json_object_get(in, "session_uid");
	if (v && !json_is_string(v)) {
		snprintf(err, errlen, "'session_uid' must be a string");
		goto bad;
	}
	json_object_set_new(o, "session_uid",
			    v ? json_incref(v) : json_string(""));
	v = json_object_get(in, "reward");
	if (v && !json_is_null(v) && !json_is_number(v)) {
		snprintf(err, errlen, "'reward' must be a number or null");
		goto bad;
	}
	json_object_set_new(o, "reward",
			    v && !json_is_null(v)
				    ? json_real(json_number_value(v))
				    : json_null());
	v = json_object_get(in, "error");
	if (v && !json_is_null(v) && !json_is_string(v)) {
		snprintf(err, errlen, "'error' must be a string or null");
		goto bad;
	}
	json_object_set_new(o, "error", v ? json_incref(v) : json_null());
	v = json_object_get(in, "elapsed");
	if (v && !json_is_number(v)) {
		snprintf(err, errlen, "'elapsed' must be a number");
		goto bad;
	}
	json_object_set_new(o, "elapsed",
			    json_real(v ? json_number_value(v) : 0.0));
	return o;
bad:
	json_decref(o);
	return NULL;
}

void rllm_results_route(struct request *req, const char *path)
{
	const char *method = request_method(req);
	const char *id = path + strlen("/rllm/results/");
	size_t n = strlen(id);

	if (!rollouts.store) {
		request_error(req, 503, "unavailable",
			      "the result store is not open");
		return;
	}
	if (!n || n > MAX_RLLM_ID || strchr(id, '/')) {
		request_error(req, 404, "not_found",
			      "a result route is /rllm/results/{execution_id}");
		return;
	}
	if (!strcmp(method, "POST")) {
		size_t len;
		const char *body = request_body(req, &len);
		json_error_t jerr;
		json_t *in =
			body && len ? json_loadb(body, len, 0, &jerr) : NULL;
		json_t *res;
		char err[256];

		if (!json_is_object(in)) {
			json_decref(in);
			request_error(req, 422, "unprocessable",
				      "the body must be a JSON object (a "
				      "result)");
			return;
		}
		res = rllm_normalise(in, err, sizeof(err));
		json_decref(in);
		if (!res) {
			request_error(req, 422, "unprocessable", "%s", err);
			return;
		}
		if (exec_store_rllm_put(rollouts.store, id, res) < 0) {
			json_decref(res);
			request_error(req, 500, "store_error",
				      "cannot store the result");
			return;
		}
		__atomic_add_fetch(&rllm_posts, 1, __ATOMIC_RELAXED);
		json_decref(res);
		request_reply(req, 200,
			      json_pack("{s:s,s:s}", "status", "stored",
					"execution_id", id));
	} else if (!strcmp(method, "GET")) {
		json_t *res = exec_store_rllm_get(rollouts.store, id);

		__atomic_add_fetch(&rllm_gets, 1, __ATOMIC_RELAXED);
		if (!res) {
			json_t *row = exec_store_get(rollouts.store, id);

			if (row && is_terminal(json_string_value(
					   json_object_get(row, "status"))))
				res = json_incref(
					json_object_get(row, "result"));
			json_decref(row);
		}
		if (res)
			request_reply(req, 200,
				      json_pack("{s:s,s:s,s:o}", "status",
						"completed", "execution_id", id,
						"result", res));
		else
			request_reply(req, 202,
				      json_pack("{s:s,s:s}", "status",
						"pending", "execution_id", id));
	} else {
		request_error(req, 405, "method_not_allowed",
			      "'%s' is not allowed on a result (POST stores, "
			      "GET reads)",
			      method);
	}
}

/* ---- start and stop ---- */

static int mkdir_p(const char *path, mode_t mode)
{
	char *dir = xstrdup(path);
	int ret = 0;

	for (char *p = dir + 1;; p++) {
		char c = *p;

		if (c != '/' && c != '\0')
			continue;
		*p = '\0';
		if (mkdir(dir, mode) < 0 && errno != EEXIST) {
			ret = -errno;
			break;
		}
		*p = c;
		if (!c)
			break;
	}
	free(dir);
	return ret;
}

static void recovered(void *arg, json_t *exec)
{
	json_array_append(arg, exec);
}

struct start_msg {
	json_t *pools;
	json_t *queued;
};

static void start_cb(struct loop *loop, void *arg)
{
	struct start_msg *m = arg;
	json_t *v;
	size_t i;

	json_array_foreach(m->pools, i, v)
	{
		struct exec_pool_def d;
		char err[256];

		if (!executions_parse_pool(v, true, &d, err, sizeof(err)))
			pools_define(&d);
		exec_pool_release(&d);
	}
	json_array_foreach(m->queued, i, v) pools_submit(json_incref(v));
	json_decref(m->pools);
	json_decref(m->queued);
	free(m);
}

int executions_start(const struct server_config *cfg)
{
	char *dir = server_state_dir(cfg), *db = NULL, *why;
	struct start_msg *m;
	char err[256];
	unsigned requeued = 0;
	int lost, r;

	rollouts.cfg = cfg;
	rollouts.loop = runner_loop(server_state.runner);
	r = mkdir_p(dir, 0700);
	if (!r) {
		/* Agents are bound into sandboxes by absolute path. */
		char *abs = realpath(dir, NULL);

		if (abs) {
			free(dir);
			dir = xstrdup(abs);
			free(abs);
		}
	}
	rollouts.agents_dir = xstrfmt("%s/agents", dir);
	if (!r && mkdir(rollouts.agents_dir, 0700) < 0 && errno != EEXIST)
		r = -errno;
	if (r) {
		fprintf(stderr,
			"sbx serve: cannot create the state directory '%s': "
			"%s (choose another with --state-dir)\n",
			dir, strerror(-r));
		free(dir);
		return 1;
	}
	db = xstrfmt("%s/sbx.db", dir);
	rollouts.store = exec_store_open(db, err, sizeof(err));
	if (!rollouts.store) {
		fprintf(stderr,
			"sbx serve: cannot open the execution store: %s "
			"(choose another with --state-dir)\n",
			err);
		free(dir);
		free(db);
		return 1;
	}
	rollouts.traces = traces_open(db, err, sizeof(err));
	if (!rollouts.traces)
		log_warn("episodes will have no traces: %s", err);
	m = xcalloc(1, sizeof(*m));
	m->queued = json_array();
	why = xstrfmt("lost: the server stopped while the execution ran (it "
		      "was not retried: no retries left)");
	lost = exec_store_recover(rollouts.store, why, recovered, m->queued,
				  &requeued);
	free(why);
	if (lost < 0) {
		fprintf(stderr,
			"sbx serve: cannot recover the executions in "
			"'%s'\n",
			db);
		json_decref(m->queued);
		free(m);
		free(dir);
		free(db);
		return 1;
	}
	if (lost || requeued || json_array_size(m->queued))
		log_info("executions: %d lost by an earlier run, %u of its "
			 "running ones queued again, %zu queued in all",
			 lost, requeued, json_array_size(m->queued));
	m->pools = exec_store_pool_list(rollouts.store);
	loop_post(rollouts.loop, start_cb, m);
	free(dir);
	free(db);
	return 0;
}

void executions_stop_dispatch(void)
{
	if (rollouts.loop)
		loop_post(rollouts.loop, stop_cb, NULL);
}

void executions_stop(void)
{
	exec_store_close(rollouts.store);
	rollouts.store = NULL;
	traces_close(rollouts.traces);
	rollouts.traces = NULL;
	free(rollouts.agents_dir);
	rollouts.agents_dir = NULL;
	rollouts.loop = NULL;
}

void executions_metrics(struct buf *out)
{
	json_t *counts;
	const char *key;
	json_t *v;

	if (!rollouts.store)
		return;
	counts = exec_store_counts(rollouts.store);
	buf_adds(out, "# HELP sbx_executions Agent executions by state.\n"
		      "# TYPE sbx_executions gauge\n");
	json_object_foreach(counts, key, v)
		buf_addf(out, "sbx_executions{status=\"%s\"} %lld\n", key,
			 (long long)json_integer_value(v));
	json_decref(counts);
	buf_addf(
		out,
		"# HELP sbx_rllm_results_total rLLM result pushes stored, "
		"and duplicates ignored.\n"
		"# TYPE sbx_rllm_results_total counter\n"
		"sbx_rllm_results_total{outcome=\"stored\"} %llu\n"
		"sbx_rllm_results_total{outcome=\"duplicate\"} %llu\n",
		(unsigned long long)(__atomic_load_n(&rllm_posts,
						     __ATOMIC_RELAXED) -
				     exec_store_rllm_duplicates(
					     rollouts.store)),
		(unsigned long long)exec_store_rllm_duplicates(rollouts.store));
}

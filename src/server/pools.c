/*
 * Execution pools: where rollouts run. Everything here lives on the
 * runner's loop thread, beside the stateful-sandbox table it drives.
 *
 * A pool is a set of stateful sandboxes ("workers") for one agent and
 * entry point, each with the agent's directory bound read-only at
 * /app/agent and guest/rollout.py loaded as an interface (runtime/rpc.c),
 * which imports the agent once. An execution is one interface call,
 * run(task, config), with the execution's timeout; a worker runs one at a
 * time. A persistent pool keeps up to `size` workers and recycles one
 * after `recycle_after` executions or any failure; a per-task pool makes
 * a worker per execution (running its templated setup commands first)
 * and deletes it after, at most `size` at once.
 *
 * Every way a run can end becomes a result: the interface's answer, its
 * timeout (the worker is deleted, which kills the run), the worker's
 * death (killed, out of memory, garbage on its channel), a sandbox that
 * could not be made, set up or loaded. Host-side failures are retried
 * while the execution has retries left. Callbacks never re-enter the
 * scheduler: they ask for a kick, which runs from the loop.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/guest.h"
#include "base/log.h"
#include "base/loop.h"
#include "base/util.h"
#include "llm/slug.h"
#include "runtime/session.h"
#include "server/executions.h"
#include "server/gateway.h"
#include "server/internal.h"
#include "store/executions.h"
#include "base/banned.h"

#define JOB_BUCKETS 4096
#define RETRY_CREATE_MS 200
#define LOAD_TIMEOUT_S 120

enum wstate { W_CREATING, W_SETUP, W_LOADING, W_IDLE, W_BUSY, W_CLOSING };

struct pool;
struct worker;

struct job {
	char id[48];
	json_t *row;
	struct pool *pool;
	struct worker *worker;
	bool cancelled; /* ended by DELETE while running */
	bool in_call;	/* the interface call is out */
	char session_uid[40];
	uint64_t start_ns;
	struct job *next;  /* the pool's queue */
	struct job *hnext; /* the table */
};

struct worker {
	struct pool *pool;
	char sid[64];
	enum wstate state;
	unsigned used;
	size_t setup_i;
	struct job *job;  /* per-task: its execution; busy: the one running */
	unsigned pending; /* callbacks to come */
	bool gone;	  /* unlinked: freed once pending is 0 */
	struct worker *next;
};

struct pool {
	char key[80];
	bool named;
	bool removed;
	struct exec_pool_def def;
	char agent[80];
	char digest[80];
	char entry[256];
	bool llm;
	struct worker *workers;
	struct job *qhead, *qtail;
	unsigned queued;
	unsigned long long done, failed;
	bool kick_posted;
	int retry_fd;
	struct pool *next;
};

static struct {
	struct pool *pools;
	struct job *jobs[JOB_BUCKETS];
	bool shutdown;
} P;

static void pool_kick(struct pool *p);
static void worker_close(struct worker *w);

/* ---- the job table ---- */

static unsigned bucket(const char *id)
{
	unsigned h = 2166136261u;

	for (; *id; id++)
		h = (h ^ (unsigned char)*id) * 16777619u;
	return h % JOB_BUCKETS;
}

static struct job *job_find(const char *id)
{
	struct job *j;

	for (j = P.jobs[bucket(id)]; j; j = j->hnext)
		if (!strcmp(j->id, id))
			return j;
	return NULL;
}

static void job_unhash(struct job *j)
{
	struct job **pp;

	for (pp = &P.jobs[bucket(j->id)]; *pp; pp = &(*pp)->hnext)
		if (*pp == j) {
			*pp = j->hnext;
			return;
		}
}

static void job_free(struct job *j)
{
	json_decref(j->row);
	free(j);
}

bool pools_is_active(const char *id)
{
	return job_find(id) != NULL;
}

/* ---- kicks ---- */

static void kick_cb(struct loop *loop, void *arg)
{
	struct pool *p = arg;

	p->kick_posted = false;
	pool_kick(p);
}

static void schedule_kick(struct pool *p)
{
	if (p->kick_posted || P.shutdown)
		return;
	p->kick_posted = true;
	loop_post(rollouts.loop, kick_cb, p);
}

static void on_retry_timer(struct loop *loop, int fd, uint32_t events,
			   void *arg)
{
	struct pool *p = arg;

	loop_del_fd(loop, p->retry_fd);
	fd_close(&p->retry_fd);
	pool_kick(p);
}

/* Sandboxes cannot be made now (the server's cap): try again soon. */
static void kick_later(struct pool *p)
{
	if (p->retry_fd >= 0 || P.shutdown)
		return;
	p->retry_fd = timer_fd_new(RETRY_CREATE_MS, false);
	if (p->retry_fd >= 0 && loop_add_fd(rollouts.loop, p->retry_fd, EPOLLIN,
					    on_retry_timer, p) < 0)
		fd_close(&p->retry_fd);
}

/* ---- results ---- */

static json_t *failure_result(const char *session_uid, const char *msg,
			      double elapsed)
{
	return json_pack("{s:b,s:n,s:s,s:n,s:s,s:f}", "success", 0,
			 "trajectories", "session_uid",
			 session_uid ? session_uid : "", "reward", "error", msg,
			 "elapsed", elapsed);
}

static double job_elapsed(const struct job *j)
{
	return j->start_ns ? (double)(now_ns() - j->start_ns) / 1e9 : 0.0;
}

/* Ends j with status and result (the reference taken), wakes its
 * waiters and forgets it (unless its call is still out). */
static void job_end(struct job *j, const char *status, json_t *result,
		    const char *code)
{
	struct pool *p = j->pool;

	if (exec_store_finish(rollouts.store, j->id, status, result, code) < 0)
		log_err("execution %s: cannot store its result", j->id);
	json_decref(result);
	if (!strcmp(status, "completed"))
		p->done++;
	else
		p->failed++;
	job_unhash(j);
	executions_ended(j->id);
	if (!j->in_call)
		job_free(j);
}

/* A failure on the host's side: retried while retries are left. */
static void job_fail(struct job *j, const char *code, const char *msg)
{
	struct pool *p = j->pool;
	json_int_t left =
		json_integer_value(json_object_get(j->row, "retries"));

	if (left > 0 && strcmp(code, "timeout") && j->start_ns &&
	    exec_store_requeue(rollouts.store, j->id) == 1) {
		log_info("execution %s: %s; trying again", j->id, msg);
		json_object_set_new(j->row, "retries", json_integer(left - 1));
		j->worker = NULL;
		j->start_ns = 0;
		j->next = p->qhead;
		p->qhead = j;
		if (!p->qtail)
			p->qtail = j;
		p->queued++;
		schedule_kick(p);
		return;
	}
	job_end(j, "failed",
		failure_result(j->session_uid, msg, job_elapsed(j)), code);
}

/* ---- workers ---- */

struct op {
	struct worker *w;
	struct job *j;
};

static struct op *op_new(struct worker *w, struct job *j)
{
	struct op *o = xcalloc(1, sizeof(*o));

	o->w = w;
	o->j = j;
	w->pending++;
	return o;
}

static void worker_unlink(struct worker *w)
{
	struct worker **pp;

	for (pp = &w->pool->workers; *pp; pp = &(*pp)->next)
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	w->gone = true;
}

/* Drops op's hold on its worker; true when the worker is gone. */
static bool op_done(struct op *o)
{
	struct worker *w = o->w;
	bool gone;

	free(o);
	w->pending--;
	gone = w->gone || w->state == W_CLOSING;
	if (w->gone && !w->pending)
		free(w);
	return gone;
}

static void on_deleted(void *ctx, struct session_reply *r)
{
	json_decref(r->json);
	op_done(ctx);
}

static void worker_close(struct worker *w)
{
	struct pool *p = w->pool;

	if (w->gone)
		return;
	w->state = W_CLOSING;
	worker_unlink(w);
	if (w->sid[0]) {
		session_delete(w->sid, on_deleted, op_new(w, NULL));
	} else if (!w->pending) {
		free(w);
		schedule_kick(p);
		return;
	}
	schedule_kick(p);
}

/* The worker failed before it could run anything: the failure belongs
 * to its own execution (per-task) or to the first one waiting. */
static void worker_failed(struct worker *w, const char *code, const char *msg)
{
	struct pool *p = w->pool;
	struct job *j = w->job;

	w->job = NULL;
	if (!j && p->qhead) {
		j = p->qhead;
		p->qhead = j->next;
		if (!p->qhead)
			p->qtail = NULL;
		p->queued--;
	}
	if (j) {
		log_info("execution %s: %s", j->id, msg);
		j->worker = NULL;
		job_end(j, "failed",
			failure_result(j->session_uid, msg, job_elapsed(j)),
			code);
	}
	worker_close(w);
}

static const char *error_message(const json_t *body)
{
	const json_t *e = json_object_get(body, "error");
	const char *m = json_string_value(json_object_get(e, "message"));

	if (!m)
		m = json_string_value(e);
	return m ? m : "no reason given";
}

static void dispatch(struct worker *w, struct job *j);
static void next_setup(struct worker *w);

static void on_loaded(void *ctx, struct session_reply *r)
{
	struct op *o = ctx;
	struct worker *w = o->w;
	json_t *body = r->json;

	if (op_done(o)) {
		json_decref(body);
		return;
	}
	if (r->status != 200) {
		const char *tb = json_string_value(json_object_get(
			json_object_get(body, "error"), "traceback"));
		char *msg;

		if (r->status == 422)
			msg = xstrfmt("import failed: the agent's entry point "
				      "'%s' could not be loaded: %s%s%s",
				      w->pool->entry, error_message(body),
				      tb && *tb ? "\n" : "", tb ? tb : "");
		else
			msg = xstrfmt("sandbox_error: cannot start the "
				      "rollout runner: %s",
				      error_message(body));
		worker_failed(
			w, r->status == 422 ? "import_error" : "sandbox_error",
			msg);
		free(msg);
		json_decref(body);
		return;
	}
	json_decref(body);
	if (w->job) {
		struct job *j = w->job;

		w->job = NULL;
		dispatch(w, j);
		return;
	}
	w->state = W_IDLE;
	schedule_kick(w->pool);
}

static void worker_load(struct worker *w)
{
	json_t *args;

	w->state = W_LOADING;
	args = json_pack("{s:s,s:s,s:i,s:I,s:i}", "name", "rollout", "source",
			 guest_rollout_py, "workers", 1, "timeout_s",
			 (json_int_t)(rollouts.cfg->max_lifetime_ms / 1000 + 1),
			 "load_timeout_s", LOAD_TIMEOUT_S);
	session_rpc_load(w->sid, args, on_loaded, op_new(w, NULL));
	json_decref(args);
}

static void on_setup(void *ctx, struct session_reply *r)
{
	struct op *o = ctx;
	struct worker *w = o->w;
	json_t *body = r->json;
	const json_t *code;

	if (op_done(o)) {
		json_decref(body);
		return;
	}
	code = json_object_get(body, "exit_code");
	if (r->status != 200 || !json_is_integer(code) ||
	    json_integer_value(code) != 0) {
		const char *cmd = json_string_value(json_array_get(
			w->pool->def.setup_commands, w->setup_i));
		const char *err =
			json_string_value(json_object_get(body, "stderr"));
		size_t n = err ? strlen(err) : 0;
		char *msg;

		if (r->status != 200)
			msg = xstrfmt("setup_failed: setup command '%.200s' "
				      "could not run: %s",
				      cmd ? cmd : "", error_message(body));
		else
			msg = xstrfmt(
				"setup_failed: setup command '%.200s' failed "
				"(%s %lld): %s",
				cmd ? cmd : "",
				json_is_integer(code) ? "exit status"
						      : "status",
				json_is_integer(code)
					? (long long)json_integer_value(code)
					: 0LL,
				err ? err + (n > 2000 ? n - 2000 : 0) : "");
		worker_failed(w, "setup_failed", msg);
		free(msg);
		json_decref(body);
		return;
	}
	json_decref(body);
	w->setup_i++;
	next_setup(w);
}

static void next_setup(struct worker *w)
{
	const json_t *cmds = w->pool->def.setup_commands;
	const char *tmpl = json_string_value(json_array_get(cmds, w->setup_i));
	json_t *empty = NULL, *args;
	char err[256];
	struct buf b;

	if (!tmpl) {
		worker_load(w);
		return;
	}
	w->state = W_SETUP;
	buf_init(&b);
	if (w->job)
		empty = json_incref(json_object_get(w->job->row, "task"));
	else
		empty = json_object();
	if (executions_template(tmpl, empty, &b, err, sizeof(err))) {
		char *msg = xstrfmt("setup_failed: %s", err);

		json_decref(empty);
		buf_release(&b);
		worker_failed(w, "setup_failed", msg);
		free(msg);
		return;
	}
	json_decref(empty);
	args = json_pack("{s:s,s:f}", "cmd", b.data ? b.data : "", "timeout_s",
			 (double)w->pool->def.setup_timeout_ms / 1000.0);
	buf_release(&b);
	session_exec(w->sid, args, NULL, on_setup, op_new(w, NULL));
	json_decref(args);
}

static void on_created(void *ctx, struct session_reply *r)
{
	struct op *o = ctx;
	struct worker *w = o->w;
	json_t *body = r->json;
	const char *sid = json_string_value(json_object_get(body, "id"));

	if (r->status == 201 || r->status == 200)
		str_copy(w->sid, sizeof(w->sid), sid ? sid : "");
	if (op_done(o)) {
		/* Closed while being made: delete what was made. */
		if (sid && (r->status == 201 || r->status == 200))
			session_delete(sid, NULL, NULL);
		json_decref(body);
		return;
	}
	if ((r->status != 201 && r->status != 200) || !sid) {
		if (r->status == 429 || r->status == 503) {
			/* The server's cap: wait for a sandbox to go. */
			struct job *j = w->job;
			struct pool *p = w->pool;

			w->job = NULL;
			if (j) {
				j->worker = NULL;
				j->next = p->qhead;
				p->qhead = j;
				if (!p->qtail)
					p->qtail = j;
				p->queued++;
			}
			worker_close(w);
			kick_later(p);
		} else {
			char *msg = xstrfmt("sandbox_error: cannot create the "
					    "sandbox: %s",
					    error_message(body));

			worker_failed(w, "sandbox_error", msg);
			free(msg);
		}
		json_decref(body);
		return;
	}
	json_decref(body);
	w->setup_i = 0;
	next_setup(w);
}

static void worker_start(struct pool *p, struct job *j)
{
	struct worker *w = xcalloc(1, sizeof(*w));
	struct sandbox_bind bind = {0};
	char *src = agents_path(p->digest);
	json_t *args, *env, *labels;
	uint64_t life = rollouts.cfg->max_lifetime_ms / 1000;

	w->pool = p;
	w->state = W_CREATING;
	w->job = j;
	if (j)
		j->worker = w;
	w->next = p->workers;
	p->workers = w;
	env = json_pack("{s:s,s:s,s:s}", "SBX_ROLLOUT_ENTRY", p->entry,
			"SBX_AGENT_DIR", "/app/agent",
			"PYTHONDONTWRITEBYTECODE", "1");
	labels = json_pack("{s:s,s:s}", "sbx.pool", p->key, "sbx.agent",
			   p->agent);
	args = json_pack("{s:o,s:o,s:I,s:I,s:b}", "env", env, "labels", labels,
			 "idle_timeout_s", (json_int_t)(life ? life : 1),
			 "max_lifetime_s", (json_int_t)(life ? life : 1), "llm",
			 p->llm);
	if (p->def.limits)
		json_object_set(args, "limits", p->def.limits);
	bind.src = src;
	bind.dst = (char *)"/app/agent";
	bind.writable = false;
	session_create_bound(args, &bind, 1, NULL, on_created, op_new(w, NULL));
	json_decref(args);
	free(src);
}

/* ---- running an execution ---- */

/* What the interface answered for j, as a result and a failure code. */
static void on_result(void *ctx, struct session_reply *r)
{
	struct op *o = ctx;
	struct worker *w = o->w;
	struct job *j = o->j;
	struct pool *p = j->pool;
	json_t *body = r->json;
	bool worker_gone = w->gone || w->state == W_CLOSING;
	const char *code;

	if (!body && r->raw)
		body = json_loadb(r->raw, r->raw_len, 0, NULL);
	op_done(o);
	j->in_call = false;
	if (j->cancelled) {
		job_free(j);
		json_decref(body);
		return;
	}
	if (!worker_gone)
		w->job = NULL;
	j->worker = NULL;
	if (r->status == 200 && json_is_true(json_object_get(body, "ok"))) {
		json_t *out = json_object_get(body, "result");
		json_t *res = json_object_get(out, "result");
		const char *c = json_string_value(json_object_get(out, "code"));
		bool ok = json_is_true(json_object_get(res, "success"));

		if (!json_is_object(res)) {
			job_fail(j, "bad_output",
				 "bad_output: the rollout runner answered "
				 "something that is not a result");
		} else {
			job_end(j, ok ? "completed" : "failed",
				json_incref(res),
				ok  ? NULL
				: c ? c
				    : "failed");
		}
		if (!worker_gone) {
			if (ok && w->pool->def.persistent &&
			    w->used < w->pool->def.recycle_after) {
				w->state = W_IDLE;
				schedule_kick(p);
			} else {
				worker_close(w);
			}
		}
		json_decref(body);
		return;
	}
	code = json_string_value(json_object_get(body, "code"));
	{
		const char *err =
			json_string_value(json_object_get(body, "error"));
		const char *tb =
			json_string_value(json_object_get(body, "traceback"));
		char *msg;
		const char *c;
		double t =
			json_number_value(json_object_get(j->row, "timeout_s"));

		if (!err)
			err = error_message(body);
		if (code && !strcmp(code, "timeout")) {
			c = "timeout";
			msg = xstrfmt("timeout: the rollout ran past its "
				      "timeout_s (%g s) and was killed",
				      t);
		} else if (code && !strcmp(code, "crashed") &&
			   strstr(err, "out of memory")) {
			c = "out_of_memory";
			msg = xstrfmt("out_of_memory: the worker ran out of "
				      "memory and was killed (%s)%s%s",
				      err, tb && *tb ? "\n" : "", tb ? tb : "");
		} else if (code && !strcmp(code, "crashed") &&
			   strstr(err, "does not parse")) {
			c = "bad_output";
			msg = xstrfmt("bad_output: the worker wrote something "
				      "on its result channel that is not a "
				      "result, and was stopped (%s)",
				      err);
		} else if (code && !strcmp(code, "crashed")) {
			c = "worker_died";
			msg = xstrfmt("worker_died: the worker process died "
				      "during the rollout (%s)%s%s",
				      err, tb && *tb ? "\n" : "", tb ? tb : "");
		} else if (code && (!strcmp(code, "not_json") ||
				    !strcmp(code, "too_large"))) {
			c = "not_json";
			msg = xstrfmt("not_json: %s", err);
		} else if (r->status == 404 || r->status == 410) {
			c = "sandbox_lost";
			msg = xstrfmt("sandbox_lost: the worker's sandbox was "
				      "gone: %s",
				      err);
		} else {
			c = "sandbox_error";
			msg = xstrfmt("sandbox_error: %s", err);
		}
		if (!worker_gone)
			worker_close(w);
		job_fail(j, c, msg);
		free(msg);
	}
	json_decref(body);
}

static void dispatch(struct worker *w, struct job *j)
{
	struct pool *p = w->pool;
	json_t *config, *call, *meta;
	int r;

	w->state = W_BUSY;
	w->job = j;
	w->used++;
	j->worker = w;
	util_uuid4(j->session_uid);
	r = exec_store_start(rollouts.store, j->id, w->sid, j->session_uid);
	if (r != 1) {
		/* Cancelled (or the store failed) before it started. */
		w->job = NULL;
		j->worker = NULL;
		w->used--;
		if (r < 0)
			job_end(j, "failed",
				failure_result(j->session_uid,
					       "store_error: cannot record "
					       "the start",
					       0),
				"store_error");
		else
			job_free(j);
		if (p->def.persistent)
			w->state = W_IDLE;
		else
			worker_close(w);
		schedule_kick(p);
		return;
	}
	j->start_ns = now_ns();
	config = json_deep_copy(json_object_get(j->row, "agent_config"));
	if (!json_is_object(config)) {
		json_decref(config);
		config = json_object();
	}
	if (p->llm) {
		char *slug, *url;

		meta = json_pack("{s:[s],s:s}", "session_uids", j->session_uid,
				 "session_name", j->id);
		slug = slug_encode(meta);
		json_decref(meta);
		url = xstrfmt("http://127.0.0.1:%u/meta/%s/v1",
			      (unsigned)rollouts.cfg->llm_port,
			      slug ? slug : "");
		json_object_set_new(config, "base_url", json_string(url));
		free(slug);
		free(url);
	} else {
		json_object_set_new(config, "base_url", json_null());
	}
	json_object_set_new(config, "session_uid", json_string(j->session_uid));
	json_object_set_new(config, "execution_id", json_string(j->id));
	call = json_pack(
		"{s:s,s:[O,o],s:{},s:f}", "fn", "run", "args",
		json_object_get(j->row, "task"), config, "kwargs", "timeout_s",
		json_number_value(json_object_get(j->row, "timeout_s")));
	j->in_call = true;
	session_rpc_call(w->sid, "rollout", call, on_result, op_new(w, j));
	json_decref(call);
}

/* ---- the scheduler ---- */

static unsigned live_workers(const struct pool *p, unsigned *starting)
{
	const struct worker *w;
	unsigned n = 0;

	*starting = 0;
	for (w = p->workers; w; w = w->next) {
		n++;
		if (w->state < W_IDLE && !w->job)
			(*starting)++;
	}
	return n;
}

static struct job *dequeue(struct pool *p)
{
	struct job *j = p->qhead;

	p->qhead = j->next;
	if (!p->qhead)
		p->qtail = NULL;
	j->next = NULL;
	p->queued--;
	return j;
}

static void pool_kick(struct pool *p)
{
	if (P.shutdown)
		return;
	while (p->qhead) {
		if (p->def.persistent) {
			struct worker *w, *idle = NULL;
			unsigned starting, live;

			for (w = p->workers; w; w = w->next)
				if (w->state == W_IDLE) {
					if (!session_exists(w->sid)) {
						/* Its lifetime ran out. */
						worker_close(w);
						break;
					}
					idle = w;
					break;
				}
			if (idle) {
				dispatch(idle, dequeue(p));
				continue;
			}
			if (w)
				continue; /* one was dropped: look again */
			live = live_workers(p, &starting);
			if (live < p->def.size && starting < p->queued &&
			    p->retry_fd < 0) {
				worker_start(p, NULL);
				continue;
			}
			break;
		}
		{
			unsigned starting;

			if (live_workers(p, &starting) >= p->def.size ||
			    p->retry_fd >= 0)
				break;
		}
		worker_start(p, dequeue(p));
	}
}

static struct pool *pool_find(const char *key)
{
	struct pool *p;

	for (p = P.pools; p; p = p->next)
		if (!strcmp(p->key, key))
			return p;
	return NULL;
}

static void pool_set(struct pool *p, const struct exec_pool_def *def,
		     const char *agent, const char *entry)
{
	json_t *a;

	exec_pool_release(&p->def);
	p->def = *def;
	p->def.setup_commands = json_incref(def->setup_commands);
	p->def.limits = json_incref(def->limits);
	str_copy(p->agent, sizeof(p->agent), agent);
	str_copy(p->entry, sizeof(p->entry), entry);
	a = exec_store_agent_get(rollouts.store, agent);
	str_copy(p->digest, sizeof(p->digest),
		 a ? json_string_value(json_object_get(a, "digest")) : "");
	json_decref(a);
	/* On by default wherever the server has a gateway. */
	p->llm = def->llm < 0 ? gateway_enabled()
			      : def->llm && gateway_enabled();
}

static struct pool *pool_new(const char *key, bool named)
{
	struct pool *p = xcalloc(1, sizeof(*p));

	str_copy(p->key, sizeof(p->key), key);
	p->named = named;
	p->retry_fd = -1;
	p->next = P.pools;
	P.pools = p;
	return p;
}

void pools_define(const struct exec_pool_def *def)
{
	struct pool *p = pool_find(def->name);
	struct worker *w, *next;

	if (!p)
		p = pool_new(def->name, true);
	p->removed = false;
	pool_set(p, def, def->agent, def->entry);
	/* Sandboxes made for the old definition go once idle. */
	for (w = p->workers; w; w = next) {
		next = w->next;
		if (w->state == W_IDLE)
			worker_close(w);
		else
			w->used = UINT32_MAX / 2;
	}
	schedule_kick(p);
}

bool pools_remove(const char *name)
{
	struct pool *p = pool_find(name);
	struct worker *w, *next;

	if (!p || !p->named || p->removed)
		return false;
	p->removed = true;
	for (w = p->workers; w; w = next) {
		next = w->next;
		if (w->state == W_IDLE)
			worker_close(w);
		else
			w->used = UINT32_MAX / 2;
	}
	return true;
}

/* The pool an execution runs in: its named pool, or the one its agent,
 * entry point and declared pool make. */
static struct pool *pool_for(json_t *row)
{
	json_t *def = json_object_get(row, "pool");
	const char *name = json_string_value(json_object_get(def, "name"));
	const char *agent = json_string_value(json_object_get(row, "agent"));
	const char *entry = json_string_value(json_object_get(row, "entry"));
	struct exec_pool_def d;
	char err[256], key[80];
	struct pool *p;

	if (name && *name) {
		p = pool_find(name);
		if (p && !p->removed)
			return p;
		/* Named, and gone (or not yet made since a restart): made
		 * again from what the execution kept of it. */
		if (executions_parse_pool(def, false, &d, err, sizeof(err))) {
			exec_pool_release(&d);
			return NULL;
		}
		if (!p)
			p = pool_new(name, true);
		p->removed = false;
		pool_set(p, &d, agent ? agent : "", entry ? entry : "");
		exec_pool_release(&d);
		return p;
	} else {
		char *text = json_dumps(def, JSON_COMPACT | JSON_SORT_KEYS);
		unsigned h = 2166136261u;
		const char *s;

		for (s = agent; s && *s; s++)
			h = (h ^ (unsigned char)*s) * 16777619u;
		for (s = entry; s && *s; s++)
			h = (h ^ (unsigned char)*s) * 16777619u;
		for (s = text; s && *s; s++)
			h = (h ^ (unsigned char)*s) * 16777619u;
		free(text);
		snprintf(key, sizeof(key), "auto-%.40s-%08x",
			 agent ? agent : "", h);
	}
	p = pool_find(key);
	if (p)
		return p;
	if (executions_parse_pool(def, false, &d, err, sizeof(err))) {
		exec_pool_release(&d);
		return NULL;
	}
	p = pool_new(key, false);
	pool_set(p, &d, agent ? agent : "", entry ? entry : "");
	exec_pool_release(&d);
	return p;
}

void pools_submit(json_t *exec)
{
	const char *id = json_string_value(json_object_get(exec, "id"));
	struct job *j;
	struct pool *p;

	if (!id || job_find(id)) {
		json_decref(exec);
		return;
	}
	j = xcalloc(1, sizeof(*j));
	str_copy(j->id, sizeof(j->id), id);
	j->row = exec;
	p = pool_for(exec);
	if (!p) {
		j->pool = NULL;
		exec_store_finish(rollouts.store, j->id, "failed",
				  failure_result("",
						 "bad_pool: the pool's "
						 "definition does not "
						 "parse",
						 0),
				  "bad_pool");
		executions_ended(j->id);
		job_free(j);
		return;
	}
	j->pool = p;
	j->hnext = P.jobs[bucket(id)];
	P.jobs[bucket(id)] = j;
	if (p->qtail)
		p->qtail->next = j;
	else
		p->qhead = j;
	p->qtail = j;
	p->queued++;
	schedule_kick(p);
}

bool pools_cancel(const char *id)
{
	struct job *j = job_find(id), **pp;
	struct pool *p;
	struct worker *w;

	if (!j)
		return false;
	p = j->pool;
	w = j->worker;
	if (!w) {
		/* Queued: out of the queue. */
		for (pp = &p->qhead; *pp; pp = &(*pp)->next)
			if (*pp == j) {
				*pp = j->next;
				p->queued--;
				break;
			}
		p->qtail = NULL;
		for (struct job *q = p->qhead; q; q = q->next)
			p->qtail = q;
	}
	j->cancelled = true;
	job_end(j, "cancelled",
		failure_result(j->session_uid,
			       "cancelled: the execution was cancelled "
			       "(DELETE)",
			       job_elapsed(j)),
		"cancelled");
	if (w) {
		/* Running, or its sandbox being made: killed with it. */
		w->job = NULL;
		worker_close(w);
	}
	return true;
}

static unsigned busy_workers(const struct pool *p)
{
	const struct worker *w;
	unsigned n = 0;

	for (w = p->workers; w; w = w->next)
		n += w->state == W_BUSY;
	return n;
}

json_t *pools_json(void)
{
	json_t *arr = json_array();
	struct pool *p;

	for (p = P.pools; p; p = p->next) {
		static const char *const states[] = {"creating", "setup",
						     "loading",	 "idle",
						     "busy",	 "closing"};
		json_t *o = exec_pool_json(&p->def), *ws = json_array();
		struct worker *w;

		if (p->removed)
			continue;
		json_object_set_new(o, "name", json_string(p->key));
		json_object_set_new(o, "agent", json_string(p->agent));
		json_object_set_new(o, "entry", json_string(p->entry));
		json_object_set_new(o, "named", json_boolean(p->named));
		json_object_set_new(o, "llm", json_boolean(p->llm));
		for (w = p->workers; w; w = w->next)
			json_array_append_new(
				ws, json_pack("{s:s,s:s,s:I}", "sandbox",
					      w->sid, "state", states[w->state],
					      "executions",
					      (json_int_t)(w->used > 1000000
								   ? 0
								   : w->used)));
		json_object_set_new(o, "sandboxes", ws);
		json_object_set_new(o, "queued", json_integer(p->queued));
		json_object_set_new(o, "running",
				    json_integer(busy_workers(p)));
		json_object_set_new(o, "completed",
				    json_integer((json_int_t)p->done));
		json_object_set_new(o, "failed",
				    json_integer((json_int_t)p->failed));
		json_array_append_new(arr, o);
	}
	return arr;
}

void pools_counts(unsigned *queued, unsigned *running, unsigned *workers)
{
	struct pool *p;
	struct worker *w;

	*queued = *running = *workers = 0;
	for (p = P.pools; p; p = p->next) {
		*queued += p->queued;
		*running += busy_workers(p);
		for (w = p->workers; w; w = w->next)
			(*workers)++;
	}
}

void pools_shutdown(void)
{
	struct pool *p;

	P.shutdown = true;
	for (p = P.pools; p; p = p->next)
		if (p->retry_fd >= 0) {
			loop_del_fd(rollouts.loop, p->retry_fd);
			fd_close(&p->retry_fd);
		}
}

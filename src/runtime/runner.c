/*
 * The runner's queue and its thread. Jobs move queued -> running -> done;
 * the counters are atomics so health checks can read them from any thread.
 *
 * Admission: a job starts while fewer than max_running run (a generous
 * count: most runs wait on tests, sleeps or their time limit, and the CPU
 * quota of each sandbox shares the cores) and the host has memory free
 * beyond a reserve kept for itself and the server. Memory limits are not
 * summed: they are ceilings, far above what most runs use, and counting
 * them would queue runs the host has room for; a run that reaches its
 * ceiling is stopped by its own cgroup. With the host short of memory,
 * jobs wait and are tried again every RETRY_MS, unless none runs at all.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "base/log.h"
#include "base/loop.h"
#include "base/util.h"
#include "runtime/limits.h"
#include "runtime/runner.h"
#include "base/banned.h"

#define RETRY_MS 100 /* waiting for a host uid slot, or memory */
/* Memory kept free for the host and the server: a sixteenth of it, at
 * least this much. */
#define RESERVE_MIN (256ull << 20)

struct runner_job {
	struct runner *runner;
	struct sandbox_spec spec;
	struct sandbox_ops ops;
	void *ctx;
	struct sandbox *sb; /* while running */
	struct runner_job *next;
	struct runner_job *run_next, *run_prev; /* the running list */
	bool cancelled; /* runner_cancel() while its warm sandbox was built */
};

/* A warm sandbox waiting for a job. */
struct warm {
	struct runner *runner;
	struct sandbox *sb;
	bool ready;
	bool reusable;	 /* serves run after run (a forking zygote) */
	bool back;	 /* reusable, its last run over: READY comes soon */
	bool retired;	 /* idle beyond the target: being ended */
	bool lent;	 /* counted in warm_lent: a run has it, or will */
	unsigned served; /* runs it was given */
	/* A warm sandbox built for a job that found none ready: the job
	 * it is handed to when READY. */
	struct runner_job *job;
	uint64_t idle_since; /* ready and in the pool since (ns) */
	struct warm *next;
};

struct runner {
	struct loop *loop;
	pthread_t thread;
	unsigned max_running, max_queued;
	unsigned running, queued; /* atomics */
	pthread_mutex_t lock;	  /* guards the incoming list */
	struct runner_job *incoming, **incoming_tail;
	struct runner_job *waiting, **waiting_tail; /* runner thread only */
	struct runner_job *running_list;	    /* runner thread only */
	bool stopping;
	/* warm sandboxes, runner thread only (the counts are read as
	 * atomics) */
	struct warm *pool;
	unsigned warm_target, warm_count, warm_ready;
	unsigned warm_lent; /* reusable warm sandboxes a run has */
	/* Warm sandboxes serve run after run: under load the pool grows
	 * to this many (jobs that find none ready get one built), and
	 * shrinks back to warm_target once they sit idle. */
	unsigned warm_max;
	int idle_fd; /* periodic: retires idle warm sandboxes beyond target */
	unsigned warm_failures; /* in a row: stop rebuilding after a few */
	struct sandbox_limits warm_limits;
	unsigned long long warm_used;
	unsigned long long warm_reused; /* runs on a sandbox that came back */
	/* Share of recent warm runs that were Python, in 1/256: warm
	 * sandboxes start a Python zygote only while it is at least half. */
	unsigned python_share;
	int retry_fd;	  /* one-shot timer: start waiting jobs again */
	uint64_t reserve; /* bytes of host memory new jobs leave free */
};

static void kick(struct runner *r);
static void pool_fill_cb(struct loop *loop, void *arg);
static void retry_later(struct runner *r);

static void *thread_main(void *arg)
{
	struct runner *r = arg;

	loop_run(r->loop);
	return NULL;
}

struct runner *runner_new(unsigned max_running, unsigned max_queued,
			  unsigned warm,
			  const struct sandbox_limits *warm_limits, char *err,
			  size_t errlen)
{
	struct runner *r = xcalloc(1, sizeof(*r));
	int e;

	r->max_running = max_running ? max_running : 1;
	r->max_queued = max_queued;
	r->warm_target = warm;
	r->warm_max = warm ? warm + 3 * limits_host_cores() : 0;
	r->idle_fd = -1;
	r->python_share = 256;
	r->retry_fd = -1;
	r->reserve = limits_host_memory(0) / 16;
	if (r->reserve < RESERVE_MIN)
		r->reserve = RESERVE_MIN;
	if (warm_limits)
		r->warm_limits = *warm_limits;
	r->loop = loop_new();
	if (!r->loop) {
		snprintf(err, errlen, "cannot create the event loop: %s",
			 strerror(errno));
		free(r);
		return NULL;
	}
	pthread_mutex_init(&r->lock, NULL);
	r->incoming_tail = &r->incoming;
	r->waiting_tail = &r->waiting;
	loop_post(r->loop, pool_fill_cb, r);
	e = pthread_create(&r->thread, NULL, thread_main, r);
	if (e) {
		snprintf(err, errlen, "cannot start the runner thread: %s",
			 strerror(e));
		loop_free(r->loop);
		free(r);
		return NULL;
	}
	return r;
}

static void job_free(struct runner_job *job)
{
	sandbox_spec_release(&job->spec);
	free(job);
}

static void fail_job(struct runner_job *job, const char *reason)
{
	struct sandbox_result res;

	sandbox_result_init(&res);
	res.status = SANDBOX_ERROR;
	str_copy(res.error, sizeof(res.error), reason);
	job->ops.done(job->ctx, &res);
	sandbox_result_release(&res);
	job_free(job);
}

static void on_output(void *ctx, size_t step, int stream, const char *data,
		      size_t len)
{
	struct runner_job *job = ctx;

	if (job->ops.output)
		job->ops.output(job->ctx, step, stream, data, len);
}

static void on_done(void *ctx, struct sandbox_result *res)
{
	struct runner_job *job = ctx;
	struct runner *r = job->runner;

	job->sb = NULL;
	if (job->run_prev)
		job->run_prev->run_next = job->run_next;
	else
		r->running_list = job->run_next;
	if (job->run_next)
		job->run_next->run_prev = job->run_prev;
	job->ops.done(job->ctx, res);
	job_free(job);
	__atomic_sub_fetch(&r->running, 1, __ATOMIC_RELAXED);
	kick(r);
}

static const struct sandbox_ops job_ops = {.output = on_output,
					   .done = on_done};

/* ---- warm sandboxes ---- */

static void pool_fill(struct runner *r);

static void warm_unlink(struct warm *w)
{
	struct runner *r = w->runner;
	struct warm **pp;

	for (pp = &r->pool; *pp; pp = &(*pp)->next)
		if (*pp == w) {
			*pp = w->next;
			r->warm_count--;
			if (w->ready)
				__atomic_sub_fetch(&r->warm_ready, 1,
						   __ATOMIC_RELAXED);
			return;
		}
}

static void pool_append(struct runner *r, struct warm *w)
{
	struct warm **tail = &r->pool;

	/* Appended: the oldest, most surely ready, is taken first. */
	while (*tail)
		tail = &(*tail)->next;
	w->next = NULL;
	*tail = w;
	r->warm_count++;
}

static void requeue(struct runner *r, struct runner_job *job);
static void running_unlink(struct runner *r, struct runner_job *job);
static void idle_watch(struct runner *r);

/* Counts w in (or out of) the warm sandboxes a run has or will have. */
static void lend(struct warm *w, bool lent)
{
	if (w->lent == lent)
		return;
	w->lent = lent;
	if (lent)
		w->runner->warm_lent++;
	else
		w->runner->warm_lent--;
}

/* A warm sandbox built for a job is ready: the job takes it. */
static void hand_over(struct warm *w)
{
	struct runner *r = w->runner;
	struct runner_job *job = w->job;
	struct sandbox *sb = w->sb;

	w->job = NULL;
	w->served++;
	job->spec.zygote = r->python_share >= 128;
	if (sandbox_assign(sb, &job->spec, &job_ops, job)) {
		/* It ends (warm_done() counts it out); the job starts again. */
		sandbox_kill(sb, SANDBOX_ERROR, "cannot assign a run");
		job->sb = NULL;
		running_unlink(r, job);
		requeue(r, job);
		kick(r);
		return;
	}
	__atomic_add_fetch(&r->warm_used, 1, __ATOMIC_RELAXED);
	if (!w->reusable) {
		/* Used up by this run, as any warm sandbox without user
		 * namespaces: the sandbox no longer refers to w. */
		lend(w, false);
		free(w);
		pool_fill(r);
	}
}

static void warm_event(void *ctx, const struct sandbox_event *ev)
{
	struct warm *w = ctx;
	struct runner *r = w->runner;

	if (ev->kind == SANDBOX_EV_BACK) {
		/* Its run is over: it rejoins the pool, ready shortly. */
		lend(w, false);
		w->back = true;
		w->idle_since = now_ns(); /* since when it is coming back */
		pool_append(r, w);
		idle_watch(r);
		return;
	}
	if (ev->kind != SANDBOX_EV_READY || w->ready)
		return;
	w->reusable = ev->reusable;
	if (w->job) {
		hand_over(w);
		return;
	}
	w->ready = true;
	w->back = false;
	w->idle_since = now_ns();
	__atomic_add_fetch(&w->runner->warm_ready, 1, __ATOMIC_RELAXED);
	w->runner->warm_failures = 0;
	kick(w->runner); /* a job may be waiting for it */
}

/* A warm sandbox ended before it got a job: setup failed, or shutdown. */
static void warm_done(void *ctx, struct sandbox_result *res)
{
	struct warm *w = ctx;
	struct runner *r = w->runner;

	lend(w, false);
	if (w->job) {
		/* Built for a job, it ended before the job had it: the job
		 * starts again (on another sandbox), unless it was cancelled
		 * or the server stops. */
		struct runner_job *job = w->job;

		job->sb = NULL;
		running_unlink(r, job);
		if (job->cancelled || r->stopping) {
			__atomic_sub_fetch(&r->running, 1, __ATOMIC_RELAXED);
			fail_job(job,
				 res && res->error[0]
					 ? res->error
					 : "the sandbox ended before its run");
		} else {
			if (++r->warm_failures == 3)
				log_warn("warm sandboxes keep failing; running "
					 "without them");
			requeue(r, job);
		}
		free(w);
		pool_fill(r);
		kick(r);
		return;
	}
	if (!res) {
		/* A reusable one ended with (or after) a run: replace it. */
		free(w);
		pool_fill(r);
		kick(r);
		return;
	}
	if (!r->stopping && !w->retired && ++r->warm_failures == 3)
		log_warn("warm sandboxes keep failing (%s%s%s); running "
			 "without them",
			 sandbox_status_name(res->status),
			 res->error[0] ? ": " : "", res->error);
	warm_unlink(w);
	free(w);
	pool_fill(r);
	kick(r); /* a job may have waited for it to come back */
}

static const struct sandbox_ops warm_ops = {.done = warm_done,
					    .event = warm_event};

/* Builds warm sandboxes until there are warm_target of them. */
static void pool_fill(struct runner *r)
{
	while (!r->stopping && r->warm_count + r->warm_lent < r->warm_target &&
	       r->warm_failures < 3) {
		struct warm *w = xcalloc(1, sizeof(*w));
		struct sandbox_spec spec;
		char err[256];

		sandbox_spec_init(&spec);
		spec.standby = true;
		spec.zygote = r->python_share >= 128;
		spec.limits = r->warm_limits;
		spec.limits.wall_ms = 0; /* the run's own limit applies */
		w->runner = r;
		w->sb = sandbox_start(r->loop, &spec, &warm_ops, w, err,
				      sizeof(err));
		sandbox_spec_release(&spec);
		if (!w->sb && errno == EAGAIN) {
			/* No host uid slot now: not a failure. */
			free(w);
			retry_later(r);
			return;
		}
		if (!w->sb) {
			free(w);
			log_debug("cannot build a warm sandbox: %s", err);
			if (++r->warm_failures == 3)
				log_warn("cannot build warm sandboxes (%s); "
					 "running without them",
					 err);
			return;
		}
		pool_append(r, w);
	}
}

static void pool_fill_cb(struct loop *loop, void *arg)
{
	pool_fill(arg);
}

/* Hands job to a ready warm sandbox; returns it, or NULL. */
static struct sandbox *take_warm(struct runner *r, struct runner_job *job)
{
	struct warm *w;
	struct sandbox *sb;

	if (!sandbox_spec_is_warmable(&job->spec))
		return NULL;
	/* A moving average over about the last 16 warmable runs. */
	r->python_share = r->python_share * 15 / 16 +
			  (sandbox_spec_is_python(&job->spec) ? 16 : 0);
	if (!__atomic_load_n(&r->warm_ready, __ATOMIC_RELAXED))
		return NULL;
	for (w = r->pool; w && !w->ready; w = w->next)
		;
	if (!w)
		return NULL;
	sb = w->sb;
	/* For a sandbox that serves run after run: whether it should keep
	 * (or have) a Python zygote for the runs after this one. */
	job->spec.zygote = r->python_share >= 128;
	if (sandbox_assign(sb, &job->spec, &job_ops, job)) {
		/* Its limits may be half-changed: retire it (its end removes
		 * it from the pool and builds another); the job starts cold. */
		sandbox_kill(sb, SANDBOX_ERROR, "cannot assign a run");
		return NULL;
	}
	warm_unlink(w);
	w->ready = false;
	__atomic_add_fetch(&r->warm_used, 1, __ATOMIC_RELAXED);
	if (w->served++)
		__atomic_add_fetch(&r->warm_reused, 1, __ATOMIC_RELAXED);
	if (w->reusable) {
		/* Lent to the run: it comes back (SANDBOX_EV_BACK) or ends
		 * (warm_done() with no result), and is replaced only then. */
		lend(w, true);
		return sb;
	}
	free(w);
	pool_fill(r);
	return sb;
}

/* Builds a warm sandbox for job, which found none ready, when the pool may
 * grow: it takes it when it is READY, and the sandbox joins the pool after
 * the run. Returns the sandbox, or NULL (the job starts a sandbox of its
 * own). */
static struct sandbox *grow_for(struct runner *r, struct runner_job *job)
{
	struct sandbox_spec spec;
	struct warm *w;
	char err[256];

	if (!sandbox_spec_is_warmable(&job->spec) || r->stopping ||
	    r->warm_failures >= 3 ||
	    r->warm_count + r->warm_lent >= r->warm_max)
		return NULL;
	w = xcalloc(1, sizeof(*w));
	w->runner = r;
	w->job = job;
	sandbox_spec_init(&spec);
	spec.standby = true;
	spec.zygote = r->python_share >= 128;
	spec.limits = r->warm_limits;
	spec.limits.wall_ms = 0;
	w->sb = sandbox_start(r->loop, &spec, &warm_ops, w, err, sizeof(err));
	sandbox_spec_release(&spec);
	if (!w->sb) {
		free(w);
		return NULL;
	}
	lend(w, true);
	return w->sb;
}

/* Puts a job that was started back at the head of the queue. */
static void requeue(struct runner *r, struct runner_job *job)
{
	__atomic_sub_fetch(&r->running, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&r->queued, 1, __ATOMIC_RELAXED);
	job->next = r->waiting;
	if (!job->next)
		r->waiting_tail = &job->next;
	r->waiting = job;
}

static void running_unlink(struct runner *r, struct runner_job *job)
{
	if (job->run_prev)
		job->run_prev->run_next = job->run_next;
	else if (r->running_list == job)
		r->running_list = job->run_next;
	if (job->run_next)
		job->run_next->run_prev = job->run_prev;
	job->run_next = job->run_prev = NULL;
}

/* Retires warm sandboxes beyond warm_target that have sat ready for
 * IDLE_RETIRE_MS: the pool grew for a burst that is over. */
#define IDLE_RETIRE_MS 10000

static void on_idle_tick(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct runner *r = arg;
	uint64_t ticks, now = now_ns();
	unsigned extra = r->warm_count + r->warm_lent > r->warm_target
				 ? r->warm_count + r->warm_lent - r->warm_target
				 : 0;
	struct warm *w;

	if (read(fd, &ticks, sizeof(ticks)) < 0) {
		/* EAGAIN */
	}
	for (w = r->pool; w && extra; w = w->next)
		if (w->ready &&
		    now - w->idle_since > IDLE_RETIRE_MS * 1000000ull) {
			/* No job takes it from now on; its end removes it. */
			w->ready = false;
			__atomic_sub_fetch(&r->warm_ready, 1, __ATOMIC_RELAXED);
			w->retired = true;
			sandbox_kill(w->sb, SANDBOX_ERROR, "idle");
			extra--;
		}
	if (r->warm_count + r->warm_lent <= r->warm_target) {
		loop_del_fd(loop, fd);
		fd_close(&r->idle_fd);
	}
}

static void idle_watch(struct runner *r)
{
	if (r->idle_fd >= 0 || r->warm_count + r->warm_lent <= r->warm_target)
		return;
	r->idle_fd = timer_fd_new(1000, true);
	if (r->idle_fd >= 0 &&
	    loop_add_fd(r->loop, r->idle_fd, EPOLLIN, on_idle_tick, r) < 0)
		fd_close(&r->idle_fd);
}

/* Whether a job that would take a warm sandbox should wait for one that is
 * being made ready after its last run (a millisecond or so) rather than
 * start a sandbox of its own. */
/* How long a job waits for a warm sandbox that is coming back before it
 * gives up on it (it should take a millisecond or two). */
#define BACK_WAIT_MS 2000

static bool warm_coming_back(struct runner *r, const struct runner_job *job)
{
	struct warm *w;

	if (!sandbox_spec_is_warmable(&job->spec) ||
	    __atomic_load_n(&r->warm_ready, __ATOMIC_RELAXED))
		return false;
	for (w = r->pool; w; w = w->next)
		if (w->back &&
		    now_ns() - w->idle_since < BACK_WAIT_MS * 1000000ull)
			return true;
	return false;
}

static void on_retry(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct runner *r = arg;

	loop_del_fd(loop, fd);
	fd_close(&r->retry_fd);
	kick(r);
	pool_fill(r);
}

/* Kicks again soon: a slot may be freed by a sandbox of another process,
 * which tells us nothing. */
static void retry_later(struct runner *r)
{
	if (r->retry_fd >= 0)
		return;
	r->retry_fd = timer_fd_new(RETRY_MS, false);
	if (r->retry_fd >= 0 &&
	    loop_add_fd(r->loop, r->retry_fd, EPOLLIN, on_retry, r) < 0)
		fd_close(&r->retry_fd);
}

/* Whether the host has memory for another sandbox. One always may run:
 * a lone job is never kept waiting by memory others hold. */
static bool memory_free(struct runner *r)
{
	if (!__atomic_load_n(&r->running, __ATOMIC_RELAXED))
		return true;
	return limits_host_available(UINT64_MAX) > r->reserve;
}

/* Moves submitted jobs onto the waiting list and starts what fits. */
static void kick(struct runner *r)
{
	struct runner_job *list;

	pthread_mutex_lock(&r->lock);
	list = r->incoming;
	r->incoming = NULL;
	r->incoming_tail = &r->incoming;
	pthread_mutex_unlock(&r->lock);
	if (list) {
		*r->waiting_tail = list;
		while (list->next)
			list = list->next;
		r->waiting_tail = &list->next;
	}
	while (r->waiting && !r->stopping &&
	       __atomic_load_n(&r->running, __ATOMIC_RELAXED) <
		       r->max_running) {
		struct runner_job *job = r->waiting;
		char err[256];

		if (!memory_free(r)) {
			retry_later(r);
			break;
		}
		if (warm_coming_back(r, job)) {
			/* Its READY kicks again; so does this timer, should
			 * it not come. */
			retry_later(r);
			break;
		}
		r->waiting = job->next;
		if (!r->waiting)
			r->waiting_tail = &r->waiting;
		job->next = NULL;
		__atomic_sub_fetch(&r->queued, 1, __ATOMIC_RELAXED);
		__atomic_add_fetch(&r->running, 1, __ATOMIC_RELAXED);
		job->sb = take_warm(r, job);
		if (!job->sb)
			job->sb = grow_for(r, job);
		if (!job->sb) {
			job->sb = sandbox_start(r->loop, &job->spec, &job_ops,
						job, err, sizeof(err));
			if (!job->sb && errno == EAGAIN) {
				/* Every host uid slot is in use: the job
				 * waits at the head of the queue. */
				__atomic_sub_fetch(&r->running, 1,
						   __ATOMIC_RELAXED);
				__atomic_add_fetch(&r->queued, 1,
						   __ATOMIC_RELAXED);
				job->next = r->waiting;
				if (!job->next)
					r->waiting_tail = &job->next;
				r->waiting = job;
				retry_later(r);
				break;
			}
		}
		if (!job->sb) {
			__atomic_sub_fetch(&r->running, 1, __ATOMIC_RELAXED);
			log_warn("cannot start a sandbox: %s", err);
			fail_job(job, err);
			continue;
		}
		job->run_next = r->running_list;
		if (job->run_next)
			job->run_next->run_prev = job;
		r->running_list = job;
	}
}

static void kick_cb(struct loop *loop, void *arg)
{
	kick(arg);
}

struct runner_job *runner_submit(struct runner *r, struct sandbox_spec *spec,
				 const struct sandbox_ops *ops, void *ctx,
				 int *err)
{
	struct runner_job *job;
	unsigned q = __atomic_add_fetch(&r->queued, 1, __ATOMIC_RELAXED);

	/* Free slots take jobs at once; past them max_queued may wait. */
	if (q + __atomic_load_n(&r->running, __ATOMIC_RELAXED) >
	    r->max_queued + r->max_running) {
		__atomic_sub_fetch(&r->queued, 1, __ATOMIC_RELAXED);
		*err = -EBUSY;
		return NULL;
	}
	job = xcalloc(1, sizeof(*job));
	job->runner = r;
	job->spec = *spec;
	sandbox_spec_init(spec);
	job->ops = *ops;
	job->ctx = ctx;
	pthread_mutex_lock(&r->lock);
	*r->incoming_tail = job;
	r->incoming_tail = &job->next;
	pthread_mutex_unlock(&r->lock);
	loop_post(r->loop, kick_cb, r);
	*err = 0;
	return job;
}

/* Unlinks job from a singly linked list; returns true when it was there. */
static bool unlink_job(struct runner_job **head, struct runner_job ***tail,
		       struct runner_job *job)
{
	struct runner_job **pp;

	for (pp = head; *pp; pp = &(*pp)->next)
		if (*pp == job)
			break;
	if (!*pp)
		return false;
	*pp = job->next;
	if (!job->next)
		*tail = pp;
	return true;
}

void runner_cancel(struct runner_job *job, const char *reason)
{
	struct runner *r = job->runner;
	bool found;

	if (job->sb) {
		job->cancelled = true;
		sandbox_kill(job->sb, SANDBOX_ERROR, reason);
		return;
	}
	/* Not started: it waits on one of the two lists. */
	pthread_mutex_lock(&r->lock);
	found = unlink_job(&r->incoming, &r->incoming_tail, job);
	pthread_mutex_unlock(&r->lock);
	if (!found)
		found = unlink_job(&r->waiting, &r->waiting_tail, job);
	if (!found)
		return;
	__atomic_sub_fetch(&r->queued, 1, __ATOMIC_RELAXED);
	fail_job(job, reason);
}

void runner_warm_counts(struct runner *r, unsigned *ready,
			unsigned long long *used)
{
	*ready = __atomic_load_n(&r->warm_ready, __ATOMIC_RELAXED);
	*used = __atomic_load_n(&r->warm_used, __ATOMIC_RELAXED);
}

unsigned long long runner_warm_reused(struct runner *r)
{
	return __atomic_load_n(&r->warm_reused, __ATOMIC_RELAXED);
}

struct loop *runner_loop(struct runner *r)
{
	return r->loop;
}

void runner_counts(struct runner *r, unsigned *running, unsigned *queued,
		   unsigned *max_running, unsigned *max_queued)
{
	*running = __atomic_load_n(&r->running, __ATOMIC_RELAXED);
	*queued = __atomic_load_n(&r->queued, __ATOMIC_RELAXED);
	*max_running = r->max_running;
	*max_queued = r->max_queued;
}

/* Shutting down: stop the loop once nothing is left to clean up. */
static void on_stop_tick(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct runner *r = arg;
	uint64_t ticks;

	if (read(fd, &ticks, sizeof(ticks)) < 0) {
		/* EAGAIN */
	}
	if (__atomic_load_n(&r->running, __ATOMIC_RELAXED) == 0 && !r->pool &&
	    sandbox_live() == 0) {
		loop_del_fd(loop, fd);
		close(fd);
		loop_stop(loop);
	}
}

static void stop_cb(struct loop *loop, void *arg)
{
	struct runner *r = arg;

	r->stopping = true;
	kick(r);
	while (r->waiting) {
		struct runner_job *job = r->waiting;

		r->waiting = job->next;
		__atomic_sub_fetch(&r->queued, 1, __ATOMIC_RELAXED);
		fail_job(job, "the server is shutting down");
	}
	r->waiting_tail = &r->waiting;
	for (struct runner_job *j = r->running_list; j; j = j->run_next)
		sandbox_kill(j->sb, SANDBOX_ERROR,
			     "the server is shutting down");
	for (struct warm *w = r->pool; w; w = w->next)
		sandbox_kill(w->sb, SANDBOX_ERROR, "shutdown");
	{
		int fd = timer_fd_new(10, true);

		if (fd < 0 ||
		    loop_add_fd(loop, fd, EPOLLIN, on_stop_tick, r) < 0) {
			if (fd >= 0)
				close(fd);
			loop_stop(loop); /* cannot wait: leave the rest */
		}
	}
}

void runner_free(struct runner *r)
{
	if (!r)
		return;
	loop_post(r->loop, stop_cb, r);
	pthread_join(r->thread, NULL);
	fd_close(&r->retry_fd);
	fd_close(&r->idle_fd);
	loop_free(r->loop);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

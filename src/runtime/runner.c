/*
 * The runner's queue and its thread. Jobs move queued -> running -> done;
 * the counters are atomics so health checks can read them from any thread.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/loop.h"
#include "base/util.h"
#include "runtime/runner.h"
#include "base/banned.h"

struct runner_job {
	struct runner *runner;
	struct sandbox_spec spec;
	struct sandbox_ops ops;
	void *ctx;
	struct sandbox *sb; /* while running */
	struct runner_job *next;
	struct runner_job *run_next, *run_prev; /* the running list */
	bool queued;
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
};

static void kick(struct runner *r);

static void *thread_main(void *arg)
{
	struct runner *r = arg;

	loop_run(r->loop);
	return NULL;
}

struct runner *runner_new(unsigned max_running, unsigned max_queued, char *err,
			  size_t errlen)
{
	struct runner *r = xcalloc(1, sizeof(*r));
	int e;

	r->max_running = max_running ? max_running : 1;
	r->max_queued = max_queued;
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
	if (__atomic_sub_fetch(&r->running, 1, __ATOMIC_RELAXED) == 0 &&
	    r->stopping)
		loop_stop(r->loop);
	kick(r);
}

static const struct sandbox_ops job_ops = {.output = on_output,
					   .done = on_done};

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

		r->waiting = job->next;
		if (!r->waiting)
			r->waiting_tail = &r->waiting;
		job->next = NULL;
		job->queued = false;
		__atomic_sub_fetch(&r->queued, 1, __ATOMIC_RELAXED);
		__atomic_add_fetch(&r->running, 1, __ATOMIC_RELAXED);
		job->sb = sandbox_start(r->loop, &job->spec, &job_ops, job, err,
					sizeof(err));
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
	job->queued = true;
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
	if (__atomic_load_n(&r->running, __ATOMIC_RELAXED) == 0)
		loop_stop(loop);
}

void runner_free(struct runner *r)
{
	if (!r)
		return;
	loop_post(r->loop, stop_cb, r);
	pthread_join(r->thread, NULL);
	loop_free(r->loop);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

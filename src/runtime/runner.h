/*
 * The runner: at most max_running sandboxes at once, while the host has
 * memory free, a bounded FIFO queue behind them, all supervised by one
 * event-loop thread. Submitting is safe
 * from any thread; everything else (callbacks, cancel, fd watches on
 * runner_loop()) happens on the runner's thread.
 */
#ifndef SBX_RUNNER_H
#define SBX_RUNNER_H

#include <stddef.h>

#include "sandbox/sandbox.h"

struct loop;
struct runner;
struct runner_job;

/* Starts the runner's thread. warm sandboxes are kept built and waiting
 * (0: none); a job that fits one starts without the cost of building its
 * view, and a new one is built behind it. warm_limits are the limits they
 * are built with (their disk size; memory and processes are set per job).
 * Returns NULL with a message in err. */
struct runner *runner_new(unsigned max_running, unsigned max_queued,
			  unsigned warm,
			  const struct sandbox_limits *warm_limits, char *err,
			  size_t errlen);
/* Kills what runs, fails what waits (done() is called for each), stops
 * the thread and frees the runner. */
void runner_free(struct runner *r);

/* Queues spec (the runner takes ownership of its contents and leaves the
 * struct re-initialised). ops->done() is called exactly once on the
 * runner's thread unless NULL is returned. Returns NULL with *err =
 * -EBUSY when the queue is full. */
struct runner_job *runner_submit(struct runner *r, struct sandbox_spec *spec,
				 const struct sandbox_ops *ops, void *ctx,
				 int *err);
/* Runner thread only: stops the job (queued: never starts; running: the
 * sandbox is killed). done() follows with SANDBOX_ERROR and reason. */
void runner_cancel(struct runner_job *job, const char *reason);

struct loop *runner_loop(struct runner *r);
void runner_counts(struct runner *r, unsigned *running, unsigned *queued,
		   unsigned *max_running, unsigned *max_queued);
/* Warm sandboxes ready now, and runs that started on one so far. */
void runner_warm_counts(struct runner *r, unsigned *ready,
			unsigned long long *used);
/* Runs that started on a warm sandbox that had served a run before (a
 * forking zygote's). */
unsigned long long runner_warm_reused(struct runner *r);

#endif

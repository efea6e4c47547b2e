/*
 * Stateful sandboxes built ahead of their create. A few sandboxes with the
 * server's default limits and nothing of anyone's wait with their view
 * built (standby); a create that asks for nothing one lacks (no host
 * binds) takes one, which gets the request's spec (env, limits, the
 * gateway's listener) as a warm run does (sandbox_assign()), and a new one
 * is built behind it, off the request's path. Each serves one sandbox's
 * whole life and is never handed out again: what a tenant leaves in it
 * dies with it. Everything here runs on the runner's loop thread; the
 * counters are atomics for the metrics.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "base/log.h"
#include "base/loop.h"
#include "base/util.h"
#include "runtime/repl.h"
#include "runtime/rpc.h"
#include "runtime/session_internal.h"
#include "base/banned.h"

/* How long after a take the replacement is started, and how often it is
 * put off again while a sandbox's operation is in flight: the client that
 * took one sends its first command next, which should not share the
 * runner's thread and the CPUs with building another. */
#define FILL_DELAY_MS 20
/* Put off for at most this long in all (the pool is not empty then). */
#define FILL_PUT_OFF_MS 1000
/* Retry after a failure to start one (no free host uid slot, say). */
#define RETRY_MS 1000
/* Failures in a row after which the pool stops building. */
#define MAX_FAILURES 3

struct prebuilt {
	struct sandbox *sb;
	bool ready;
	struct prebuilt *next;
};

static struct {
	struct loop *loop;
	unsigned target;
	struct sandbox_limits limits;
	struct prebuilt *list; /* the oldest (most surely ready) first */
	unsigned count;
	unsigned failures; /* in a row */
	bool stopping;
	int timer_fd;
	unsigned put_off;	 /* fills put off in a row */
	unsigned ready;		 /* atomic */
	unsigned long long used; /* atomic */
} pool = {.timer_fd = -1};

/* Fills the pool in ms, unless a fill comes sooner already: takes in a
 * row do not put it off. */
static void arm(uint64_t ms)
{
	struct itimerspec its = {
		.it_value = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000}};
	struct itimerspec cur;

	if (pool.timer_fd < 0 || pool.stopping)
		return;
	if (timerfd_gettime(pool.timer_fd, &cur) == 0 &&
	    (cur.it_value.tv_sec || cur.it_value.tv_nsec) &&
	    (uint64_t)cur.it_value.tv_sec * 1000 +
			    (uint64_t)cur.it_value.tv_nsec / 1000000 <=
		    ms)
		return;
	timerfd_settime(pool.timer_fd, 0, &its, NULL);
}

static void unlink_entry(struct prebuilt *p)
{
	struct prebuilt **pp;

	for (pp = &pool.list; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			pool.count--;
			if (p->ready)
				__atomic_sub_fetch(&pool.ready, 1,
						   __ATOMIC_RELAXED);
			return;
		}
}

static void on_event(void *ctx, const struct sandbox_event *ev)
{
	struct prebuilt *p = ctx;

	if (ev->kind != SANDBOX_EV_READY || p->ready)
		return;
	p->ready = true;
	pool.failures = 0;
	__atomic_add_fetch(&pool.ready, 1, __ATOMIC_RELAXED);
}

/* One ended before a create took it: its setup failed, or shutdown. */
static void on_done(void *ctx, struct sandbox_result *res)
{
	struct prebuilt *p = ctx;

	unlink_entry(p);
	free(p);
	if (pool.stopping)
		return;
	if (res && ++pool.failures == MAX_FAILURES)
		log_warn("pre-built sandboxes keep failing (%s%s%s); creating "
			 "every sandbox on demand",
			 sandbox_status_name(res->status),
			 res->error[0] ? ": " : "", res->error);
	arm(FILL_DELAY_MS);
}

static const struct sandbox_ops pool_ops = {.done = on_done, .event = on_event};

/* Whether a sandbox waits for an answer from its init now. */
static bool sessions_busy(void)
{
	struct session *s;

	for (s = session_table.list; s; s = s->next)
		if (s->ops || repl_busy(s->repls) || rpc_busy(s->rpcs))
			return true;
	return false;
}

/* Starts one more; returns 0, or -errno (-EAGAIN: no free host uid slot
 * now, not a failure). */
static int build_one(void)
{
	struct prebuilt *p = xcalloc(1, sizeof(*p));
	struct prebuilt **tail = &pool.list;
	struct sandbox_spec spec;
	char err[256];
	int e;

	sandbox_spec_init(&spec);
	spec.standby = true;
	spec.limits = pool.limits;
	p->sb = sandbox_start(pool.loop, &spec, &pool_ops, p, err, sizeof(err));
	e = errno;
	sandbox_spec_release(&spec);
	if (!p->sb) {
		free(p);
		if (e == EAGAIN)
			return -EAGAIN;
		log_debug("cannot pre-build a sandbox: %s", err);
		if (++pool.failures == MAX_FAILURES)
			log_warn("cannot pre-build sandboxes (%s); creating "
				 "every sandbox on demand",
				 err);
		return -e;
	}
	while (*tail)
		tail = &(*tail)->next;
	*tail = p;
	pool.count++;
	return 0;
}

/* Builds one sandbox while there are fewer than target, the next one a
 * little later; puts it off while the pool has one and a sandbox's
 * operation is in flight. */
static void fill(void)
{
	if (pool.stopping || pool.count >= pool.target ||
	    pool.failures >= MAX_FAILURES)
		return;
	if (pool.count && sessions_busy() &&
	    ++pool.put_off < FILL_PUT_OFF_MS / FILL_DELAY_MS) {
		arm(FILL_DELAY_MS);
		return;
	}
	pool.put_off = 0;
	if (build_one())
		arm(RETRY_MS);
	else if (pool.count < pool.target)
		arm(FILL_DELAY_MS);
}

static void on_timer(struct loop *loop, int fd, uint32_t events, void *arg)
{
	uint64_t ticks;

	if (read(fd, &ticks, sizeof(ticks)) < 0) {
		/* EAGAIN: spurious */
	}
	fill();
}

void session_pool_init(struct loop *loop, unsigned target,
		       const struct sandbox_limits *limits)
{
	pool.loop = loop;
	pool.target = target;
	pool.limits = *limits;
	/* Its run's limits apply from the take: none while it waits. */
	pool.limits.wall_ms = 0;
	pool.limits.cpu_ms = 0;
	pool.limits.output_bytes = 0;
	if (!target)
		return;
	pool.timer_fd = timer_fd_new(FILL_DELAY_MS, false);
	if (pool.timer_fd >= 0 &&
	    loop_add_fd(loop, pool.timer_fd, EPOLLIN, on_timer, NULL) < 0)
		fd_close(&pool.timer_fd);
	if (pool.timer_fd < 0)
		log_warn("no pre-built sandboxes: cannot make a timer");
	else
		fill();
}

struct sandbox *session_pool_take(const struct sandbox_spec *spec,
				  const struct sandbox_ops *ops, void *ctx)
{
	struct prebuilt *p;
	struct sandbox *sb;

	if (spec->nbinds || pool.stopping)
		return NULL;
	for (p = pool.list; p && !p->ready; p = p->next)
		;
	if (!p)
		return NULL;
	sb = p->sb;
	if (sandbox_assign(sb, spec, ops, ctx)) {
		/* Its limits may be half-changed: retire it (its end takes
		 * it out of the pool); the create builds one as before. */
		sandbox_kill(sb, SANDBOX_ERROR, "cannot assign a sandbox");
		p->ready = false;
		__atomic_sub_fetch(&pool.ready, 1, __ATOMIC_RELAXED);
		return NULL;
	}
	unlink_entry(p);
	free(p);
	__atomic_add_fetch(&pool.used, 1, __ATOMIC_RELAXED);
	arm(FILL_DELAY_MS);
	return sb;
}

void session_pool_shutdown(void)
{
	struct prebuilt *p;

	pool.stopping = true;
	for (p = pool.list; p; p = p->next)
		sandbox_kill(p->sb, SANDBOX_ERROR, "shutdown");
	if (pool.timer_fd >= 0) {
		loop_del_fd(pool.loop, pool.timer_fd);
		fd_close(&pool.timer_fd);
	}
}

void session_pool_counts(unsigned *ready, unsigned long long *used)
{
	*ready = __atomic_load_n(&pool.ready, __ATOMIC_RELAXED);
	*used = __atomic_load_n(&pool.used, __ATOMIC_RELAXED);
}

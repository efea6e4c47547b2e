/*
 * Supervising a running sandbox from the host, without threads.
 *
 * A sandbox is watched through its fds on a struct loop: the init's pidfd
 * (readable when init has exited, by which time the kernel has killed and
 * reaped everything else in the pid namespace), the channel carrying
 * init's messages (each step's output included), a one-shot timerfd for
 * the wall limit and, with a CPU limit, a periodic timerfd that samples the
 * cgroup's CPU usage. The first limit hit wins: init is SIGKILLed and the
 * result names that limit.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/log.h"
#include "base/loop.h"
#include "base/util.h"
#include "sandbox/gpu.h"
#include "sandbox/internal.h"
#include "sandbox/uidslot.h"
#include "sandbox/spawn.h"
#include "base/banned.h"

#define CPU_SAMPLE_MS 50
#define READ_CHUNK 65536
/* A command queue larger than this is freed once sent. */
#define OUTQ_KEEP (256 * 1024)
/* The send buffer of a stateful sandbox's command socket. */
#define CMD_SNDBUF (2 << 20)

struct sandbox {
	struct loop *loop;
	struct sandbox_ops ops;
	void *ctx;
	uint64_t id;
	struct spawn_result proc;
	struct cgroup cg;
	bool have_cg;
	uint64_t gpus; /* GPUs held (a bit per minor), gpu_lease_take() */
	bool gpus_shared;
	int wall_fd, cpu_fd;
	uint64_t start_ns;
	struct sandbox_limits limits;

	size_t nsteps;
	uint64_t oom_seen; /* oom kills counted at the last step end */
	bool exited;	   /* init reaped */
	bool reported;	   /* done() called */
	bool finished;	   /* cleaned up: about to be freed */
	int kill_status;   /* -1 or the enum sandbox_status that killed it */
	char kill_reason[128];

	struct buf status_buf; /* unparsed bytes from init */
	bool serve;
	bool standby; /* warm: waiting for sandbox_assign() */
	/* A warm sandbox: the ops it was started with, which get it back
	 * after a run when it is reusable (SANDBOX_EV_BACK). */
	struct sandbox_ops idle_ops;
	void *idle_ctx;
	bool reusable;	   /* said by its READY */
	bool zygote;	   /* and it has a forking zygote (READY too) */
	bool lent;	   /* reusable, and a run has it */
	uint64_t cpu_base; /* cgroup CPU time spent before the run */
	uint64_t oom_base; /* OOM kills counted before the run */
	struct buf outq;   /* commands not yet written to init */
	size_t outoff;
	bool got_done;
	bool got_error;
	char error[200];
	int error_errno;
	struct sandbox_result res;
};

static uint64_t next_id;

static void finish(struct sandbox *sb);
static void report(struct sandbox *sb);

static void do_kill(struct sandbox *sb)
{
	if (sb->exited || sb->proc.pidfd < 0)
		return;
	syscall(SYS_pidfd_send_signal, sb->proc.pidfd, SIGKILL, NULL, 0);
}

void sandbox_kill(struct sandbox *sb, enum sandbox_status status,
		  const char *reason)
{
	if (sb->kill_status < 0) {
		sb->kill_status = (int)status;
		str_copy(sb->kill_reason, sizeof(sb->kill_reason),
			 reason ? reason : "");
	}
	do_kill(sb);
}

static void unwatch(struct sandbox *sb, int *fd)
{
	if (*fd < 0)
		return;
	loop_del_fd(sb->loop, *fd);
	fd_close(fd);
}

static void add_fetched(struct sandbox *sb, const char *p, size_t plen,
			const char *data, size_t dlen)
{
	struct sandbox_result *res = &sb->res;
	struct sandbox_fetched *f;

	res->fetched = xrealloc(res->fetched,
				(res->nfetched + 1) * sizeof(*res->fetched));
	f = &res->fetched[res->nfetched++];
	f->path = xstrndup(p, plen);
	f->data = xmalloc(dlen + 1);
	memcpy(f->data, data, dlen);
	f->data[dlen] = '\0';
	f->len = dlen;
}

static uint64_t oom_kills(struct sandbox *sb)
{
	struct cgroup_stats st;

	memset(&st, 0, sizeof(st));
	if (sb->have_cg)
		cgroup_read_stats(&sb->cg, &st);
	return st.oom_kills;
}

static void fill_step(struct sandbox *sb, const struct init_msg *m,
		      struct sandbox_step_result *r)
{
	uint64_t ooms;
	int ws = m->value;

	r->ran = true;
	r->wall_ms = m->wall_us / 1000;
	r->cpu_ms = m->cpu_us / 1000;
	r->exit_code = -1;
	if (WIFEXITED(ws)) {
		r->exit_code = WEXITSTATUS(ws);
		r->status = r->exit_code ? SANDBOX_NONZERO_EXIT : SANDBOX_OK;
	} else {
		r->signal = WTERMSIG(ws);
		r->status = r->signal == SIGXCPU ? SANDBOX_TIME_LIMIT
						 : SANDBOX_SIGNALED;
	}
	/* The kernel counted any OOM kill before init saw the step end. */
	ooms = oom_kills(sb);
	if (ooms > sb->oom_seen) {
		r->oom_killed = true;
		if (r->status != SANDBOX_OK)
			r->status = SANDBOX_MEMORY_LIMIT;
	}
	sb->oom_seen = ooms;
	if (m->stop == INIT_STOP_TIME)
		r->status = SANDBOX_TIME_LIMIT;
	if (m->stop == INIT_STOP_OUTPUT) {
		r->status = SANDBOX_OUTPUT_LIMIT;
		r->output_truncated = true;
	}
}

static void step_ended(struct sandbox *sb, const struct init_msg *m)
{
	if (m->step < sb->nsteps)
		fill_step(sb, m, &sb->res.steps[m->step]);
}

static void serve_event(struct sandbox *sb, const struct init_msg *m,
			const char *payload)
{
	struct sandbox_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.id = m->step;
	switch (m->kind) {
	case INIT_MSG_READY:
		ev.kind = SANDBOX_EV_READY;
		ev.reusable = sb->reusable = m->value >= 1;
		sb->zygote = m->value == 2;
		break;
	case INIT_MSG_EXEC_START:
		ev.kind = SANDBOX_EV_EXEC_START;
		ev.pid = m->value;
		break;
	case INIT_MSG_EXEC_END:
		ev.kind = SANDBOX_EV_EXEC_END;
		ev.err = m->err;
		fill_step(sb, m, &ev.result);
		if (m->err) {
			ev.result.status = SANDBOX_ERROR;
			ev.result.exit_code = -1;
		}
		break;
	case INIT_MSG_REPLY:
		ev.kind = SANDBOX_EV_REPLY;
		ev.json = payload;
		ev.json_len = m->len1;
		ev.payload = payload + m->len1;
		ev.payload_len = (size_t)m->len2;
		break;
	default:
		return;
	}
	if (sb->ops.event)
		sb->ops.event(sb->ctx, &ev);
}

/* A reusable warm sandbox's run is over and init builds it afresh: its
 * owner gets it back before the run's done() (so that done() can already
 * count on it), and it waits for the next run once reported. */
static void take_back(struct sandbox *sb)
{
	struct sandbox_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.kind = SANDBOX_EV_BACK;
	sb->lent = false;
	sb->idle_ops.event(sb->idle_ctx, &ev);
}

static void rearm(struct sandbox *sb)
{
	sb->reported = false;
	sb->got_done = false;
	sb->standby = true;
	sb->ops = sb->idle_ops;
	sb->ctx = sb->idle_ctx;
	sandbox_result_init(&sb->res);
	sb->nsteps = 1;
	sb->res.steps = xcalloc(1, sizeof(*sb->res.steps));
	sb->res.nsteps = 1;
}

/* Parses every complete message in status_buf. */
static void parse_status(struct sandbox *sb)
{
	struct buf *b = &sb->status_buf;
	size_t off = 0;

	while (b->len - off >= sizeof(struct init_msg)) {
		struct init_msg m;
		uint64_t need;
		const char *payload;

		memcpy(&m, b->data + off, sizeof(m));
		need = sizeof(m) + (uint64_t)m.len1 + m.len2;
		if (b->len - off < need)
			break;
		payload = b->data + off + sizeof(m);
		switch (m.kind) {
		case INIT_MSG_ERROR:
			if (!sb->got_error) {
				size_t n = m.len1 < sizeof(sb->error) - 1
						   ? m.len1
						   : sizeof(sb->error) - 1;

				memcpy(sb->error, payload, n);
				sb->error[n] = '\0';
				sb->error_errno = m.err;
				sb->got_error = true;
			}
			break;
		case INIT_MSG_READY:
		case INIT_MSG_EXEC_START:
		case INIT_MSG_EXEC_END:
		case INIT_MSG_REPLY:
			if (sb->serve || sb->standby)
				serve_event(sb, &m, payload);
			break;
		case INIT_MSG_OUTPUT:
			if (sb->ops.output &&
			    (m.step < sb->nsteps || sb->serve) &&
			    (m.value == 1 || m.value == 2))
				sb->ops.output(sb->ctx, m.step, m.value,
					       payload + m.len1,
					       (size_t)m.len2);
			break;
		case INIT_MSG_STEP_END:
			step_ended(sb, &m);
			break;
		case INIT_MSG_FETCH:
			add_fetched(sb, payload, m.len1, payload + m.len1,
				    (size_t)m.len2);
			break;
		case INIT_MSG_DONE:
			sb->got_done = true;
			if (!sb->serve && !sb->standby) {
				/* Its next run must get a peak of its
				 * own: on a host where the group's peak
				 * cannot be reset, it is used once. */
				bool back = m.value == 1 && sb->lent &&
					    sb->kill_status < 0 &&
					    (!sb->have_cg ||
					     cgroup_peak_per_run(&sb->cg));

				sb->res.wall_ms =
					(now_ns() - sb->start_ns) / 1000000;
				if (back)
					take_back(sb);
				report(sb);
				if (back)
					rearm(sb);
				else if (m.value == 1)
					sandbox_kill(sb, SANDBOX_ERROR,
						     "not taken back");
			}
			break;
		default:
			break; /* INIT_MSG_MISSING: omitted from the result */
		}
		off += need;
	}
	if (off) {
		memmove(b->data, b->data + off, b->len - off);
		b->len -= off;
	}
}

static bool pump_status(struct sandbox *sb)
{
	char chunk[READ_CHUNK];

	for (;;) {
		ssize_t n = read(sb->proc.status_fd, chunk, sizeof(chunk));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			parse_status(sb);
			return n < 0 && errno == EAGAIN;
		}
		/* One message at a time is buffered: a fetched file
		 * (bounded by the disk) or an output chunk. */
		if (sb->status_buf.len + (size_t)n >
		    sb->limits.disk_bytes + (1u << 20)) {
			sandbox_kill(sb, SANDBOX_ERROR,
				     "init sent more than the disk can hold");
			return false;
		}
		buf_add(&sb->status_buf, chunk, (size_t)n);
		parse_status(sb);
	}
}

static void flush_commands(struct sandbox *sb)
{
	while (sb->outoff < sb->outq.len) {
		ssize_t n =
			write(sb->proc.status_fd, sb->outq.data + sb->outoff,
			      sb->outq.len - sb->outoff);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			if (errno != EAGAIN) {
				buf_reset(&sb->outq);
				sb->outoff = 0;
			}
			break;
		}
		sb->outoff += (size_t)n;
	}
	if (sb->outoff == sb->outq.len) {
		/* A queue that held a large payload (a file or archive
		 * chunk) gives its memory back once sent. */
		if (sb->outq.cap > OUTQ_KEEP)
			buf_release(&sb->outq);
		buf_reset(&sb->outq);
		sb->outoff = 0;
	} else if (sb->outoff >= sb->outq.len - sb->outoff) {
		/* Sent bytes leave the front once they outweigh the rest, so
		 * a queue that never quite empties (commands keep coming)
		 * does not grow by all that passes through it. */
		memmove(sb->outq.data, sb->outq.data + sb->outoff,
			sb->outq.len - sb->outoff);
		sb->outq.len -= sb->outoff;
		sb->outoff = 0;
	}
	if (sb->proc.status_fd >= 0)
		loop_mod_fd(sb->loop, sb->proc.status_fd,
			    EPOLLIN | (sb->outq.len ? EPOLLOUT : 0));
}

static void on_status(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct sandbox *sb = arg;

	if ((events & EPOLLOUT) && sb->outq.len)
		flush_commands(sb);
	if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		return;
	if (!pump_status(sb))
		unwatch(sb, &sb->proc.status_fd);
}

int sandbox_command(struct sandbox *sb, enum sandbox_cmd cmd, uint32_t id,
		    const char *json, const void *payload, size_t len)
{
	struct init_msg m = {.kind = (uint32_t)cmd, .step = id};

	if (sb->exited || sb->proc.status_fd < 0 || sb->kill_status >= 0)
		return -EPIPE;
	m.len1 = json ? (uint32_t)strlen(json) : 0;
	m.len2 = len;
	if (!sb->outq.len) {
		/* Nothing waits: straight to the socket, and only what it
		 * does not take now is copied into the queue. */
		struct iovec iov[3] = {{&m, sizeof(m)},
				       {(void *)json, m.len1},
				       {(void *)payload, len}};
		ssize_t n;

		do
			n = writev(sb->proc.status_fd, iov, 3);
		while (n < 0 && errno == EINTR);
		if (n < 0 && errno != EAGAIN)
			return 0; /* init is gone: as flush_commands() */
		for (size_t i = 0; i < 3; i++) {
			size_t skip = n > 0 ? (size_t)n : 0;

			if (skip > iov[i].iov_len)
				skip = iov[i].iov_len;
			n -= (ssize_t)skip;
			if (iov[i].iov_len > skip)
				buf_add(&sb->outq,
					(const char *)iov[i].iov_base + skip,
					iov[i].iov_len - skip);
		}
		if (sb->outq.len)
			loop_mod_fd(sb->loop, sb->proc.status_fd,
				    EPOLLIN | EPOLLOUT);
		return 0;
	}
	buf_add(&sb->outq, &m, sizeof(m));
	if (m.len1)
		buf_add(&sb->outq, json, m.len1);
	if (len)
		buf_add(&sb->outq, payload, len);
	flush_commands(sb);
	return 0;
}

static void on_wall(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct sandbox *sb = arg;

	unwatch(sb, &sb->wall_fd);
	sandbox_kill(sb, SANDBOX_TIME_LIMIT, "wall time limit reached");
}

static void on_cpu(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct sandbox *sb = arg;
	uint64_t ticks, ns;

	if (read(fd, &ticks, sizeof(ticks)) < 0) {
		/* EAGAIN: spurious wake-up */
	}
	if (sb->have_cg && cgroup_cpu_ns(&sb->cg, &ns) == 0 &&
	    (ns - sb->cpu_base) / 1000000 >= sb->limits.cpu_ms) {
		unwatch(sb, &sb->cpu_fd);
		sandbox_kill(sb, SANDBOX_TIME_LIMIT, "cpu time limit reached");
	}
}

/* Init runs (or the child died before): its stack can go. */
static void on_exec(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct sandbox *sb = arg;

	loop_del_fd(loop, fd);
	spawn_exec_done(&sb->proc);
}

static void on_exit_event(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct sandbox *sb = arg;
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	if (syscall(SYS_waitid, P_PIDFD, sb->proc.pidfd, &si, WEXITED | WNOHANG,
		    NULL) < 0 ||
	    si.si_pid == 0)
		return;
	sb->exited = true;
	if (!sb->reported)
		sb->res.wall_ms = (now_ns() - sb->start_ns) / 1000000;
	unwatch(sb, &sb->proc.pidfd);
	/* Init is reaped: whatever the exec pipe said, nothing runs on the
	 * child's stack any more. */
	if (sb->proc.exec_fd >= 0)
		loop_del_fd(sb->loop, sb->proc.exec_fd);
	spawn_exec_done(&sb->proc);
	/* Every writer is gone: drain what is left, then report. */
	if (sb->proc.status_fd >= 0) {
		pump_status(sb);
		unwatch(sb, &sb->proc.status_fd);
	}
	finish(sb);
}

static void decide(struct sandbox *sb)
{
	struct sandbox_result *res = &sb->res;
	struct sandbox_step_result *last = NULL;
	struct cgroup_stats st;
	uint64_t cpu_us = 0;
	size_t i;

	memset(&st, 0, sizeof(st));
	if (sb->have_cg)
		cgroup_read_stats(&sb->cg, &st);
	for (i = 0; i < sb->nsteps; i++) {
		if (!res->steps[i].ran)
			continue;
		last = &res->steps[i];
		cpu_us += last->cpu_ms * 1000;
		res->output_truncated |= last->output_truncated;
	}
	/* The cgroup's figure, but never less than the steps' own together:
	 * the two are read by different clocks, and a step's time is part
	 * of the whole. */
	res->cpu_ms = st.has_cpu ? (st.cpu_ns - sb->cpu_base) / 1000000 : 0;
	if (res->cpu_ms < cpu_us / 1000)
		res->cpu_ms = cpu_us / 1000;
	res->peak_memory_bytes = st.peak_bytes;
	res->oom_killed = st.oom_kills > sb->oom_base;
	res->pids_limit_hit = st.pids_max_events > 0;
	if (last && sb->got_done) {
		res->status = last->status;
		res->exit_code = last->exit_code;
		res->signal = last->signal;
	} else {
		/* The sandbox ended before its steps did. */
		res->signal = SIGKILL;
		res->exit_code = -1;
		res->status =
			res->oom_killed ? SANDBOX_MEMORY_LIMIT : SANDBOX_ERROR;
		if (!res->oom_killed && !sb->got_error && sb->kill_status < 0)
			snprintf(res->error, sizeof(res->error),
				 "sandbox init ended unexpectedly");
	}
	if (sb->kill_status >= 0) {
		res->status = (enum sandbox_status)sb->kill_status;
		if (res->status == SANDBOX_ERROR)
			str_copy(res->error, sizeof(res->error),
				 sb->kill_reason);
		/* The step running when the sandbox was killed shares its
		 * fate. */
		for (i = 0; i < sb->nsteps; i++)
			if (!res->steps[i].ran) {
				res->steps[i].ran = true;
				res->steps[i].status = res->status;
				res->steps[i].signal = SIGKILL;
				res->steps[i].exit_code = -1;
				res->steps[i].wall_ms = res->wall_ms;
				break;
			}
	}
	if (sb->got_error) {
		res->status = SANDBOX_ERROR;
		res->exit_code = -1;
		res->signal = 0;
		snprintf(res->error, sizeof(res->error), "%s: %s", sb->error,
			 strerror(sb->error_errno));
	}
}

static unsigned live; /* sandboxes not yet freed, atomic */

unsigned sandbox_live(void)
{
	return __atomic_load_n(&live, __ATOMIC_RELAXED);
}

/* Decides the result and hands it over: when init has said DONE (every
 * result is in by then; init's exit and the namespaces' teardown follow
 * without the caller), or when the sandbox ended otherwise. */
static void report(struct sandbox *sb)
{
	if (sb->reported)
		return;
	sb->reported = true;
	unwatch(sb, &sb->wall_fd);
	unwatch(sb, &sb->cpu_fd);
	if (!sb->res.wall_ms)
		sb->res.wall_ms = (now_ns() - sb->start_ns) / 1000000;
	decide(sb);
	if (sb->ops.done)
		sb->ops.done(sb->ctx, &sb->res);
	memset(&sb->ops, 0, sizeof(sb->ops)); /* ctx may be gone */
	sandbox_result_release(&sb->res);
}

static void finish(struct sandbox *sb)
{
	if (sb->finished)
		return;
	report(sb);
	sb->finished = true;
	/* A reusable warm sandbox that ended with a run (or after one) is
	 * not coming back: its owner forgets it. */
	if (sb->lent) {
		sb->lent = false;
		if (sb->idle_ops.done)
			sb->idle_ops.done(sb->idle_ctx, NULL);
	}
	/* Removing the cgroup is housekeeping the caller did not wait
	 * for. Init is reaped, so its pid namespace is empty; the uid slot
	 * is free once the cgroup is gone too. */
	if (sb->have_cg) {
		int r = cgroup_destroy(&sb->cg);

		if (r)
			log_warn("sandbox %llu: cannot remove its cgroup: %s",
				 (unsigned long long)sb->id, strerror(-r));
		uidslot_release(sb->proc.slot, r == 0);
	} else {
		uidslot_release(sb->proc.slot, true);
	}
	gpu_lease_drop(sb->gpus, sb->gpus_shared);
	sb->gpus = 0;
	buf_release(&sb->status_buf);
	buf_release(&sb->outq);
	free(sb);
	__atomic_sub_fetch(&live, 1, __ATOMIC_RELAXED);
}

static int watch(struct sandbox *sb, int fd, loop_fd_fn fn)
{
	return loop_add_fd(sb->loop, fd, EPOLLIN, fn, sb);
}

/* The wall and CPU limits run from the start of the run. */
static int arm_timers(struct sandbox *sb)
{
	int r = 0;

	if (sb->limits.wall_ms) {
		sb->wall_fd = timer_fd_new(sb->limits.wall_ms, false);
		r = sb->wall_fd < 0 ? sb->wall_fd
				    : watch(sb, sb->wall_fd, on_wall);
	}
	if (!r && sb->limits.cpu_ms && sb->have_cg && sandbox_host.cg.has_cpu) {
		sb->cpu_fd = timer_fd_new(CPU_SAMPLE_MS, true);
		r = sb->cpu_fd < 0 ? sb->cpu_fd : watch(sb, sb->cpu_fd, on_cpu);
	}
	return r;
}

bool sandbox_spec_is_warmable(const struct sandbox_spec *spec)
{
	return !spec->nbinds && spec->stdin_fd < 0 && !spec->serve &&
	       !spec->standby;
}

bool sandbox_spec_is_python(const struct sandbox_spec *spec)
{
	char *const *argv = spec->nsteps == 1	? spec->steps[0].argv
			    : spec->nsteps == 0 ? spec->argv
						: NULL;

	return argv && argv[0] && argv[1] && !strcmp(argv[0], "python3") &&
	       argv[1][0] != '-';
}

/* What init's zygote_fits() takes: Python alone, no PYTHON* variable. */
static bool spec_on_zygote(const struct sandbox_spec *spec)
{
	size_t i;

	if (!sandbox_spec_is_python(spec) || spec->nsteps > 1)
		return false;
	for (i = 0; spec->env && spec->env[i]; i++)
		if (str_starts_with(spec->env[i], "PYTHON"))
			return false;
	return true;
}

int sandbox_net_socket(struct sandbox *sb)
{
	if (sb->exited || sb->proc.pidfd < 0)
		return -ESRCH;
	return listen_in_sandbox(sb->proc.pid, sb->proc.pidfd, 0);
}

int sandbox_assign(struct sandbox *sb, const struct sandbox_spec *spec,
		   const struct sandbox_ops *ops, void *ctx)
{
	struct init_mode mode = {0};
	struct buf enc;
	int lfd = -1, r;

	/* A stateful sandbox's spec (serve) fits too: init serves it once
	 * the view it built waiting is its own. */
	if (!sb->standby || sb->exited || sb->kill_status >= 0 ||
	    spec->nbinds || spec->stdin_fd >= 0 || spec->standby)
		return -EINVAL;
	/* It serves that sandbox until it ends: it never comes back. */
	if (spec->serve)
		sb->reusable = false;
	if (sb->have_cg) {
		struct cgroup_limits cl = {
			.memory_bytes = spec->limits.memory_bytes,
			.pids = spec->limits.pids,
			.cpu_quota_milli = spec->limits.cpu_quota_milli,
			.cpu_weight = spec->limits.cpu_weight,
		};
		struct cgroup_stats st;

		/* The run's own PID 1 (and a forking zygote) share the group
		 * with the program, where a cold sandbox has init alone: the
		 * program gets the processes it asked for all the same. */
		if (cl.pids && sb->reusable)
			cl.pids += sb->zygote && spec_on_zygote(spec) ? 2 : 1;
		r = cgroup_set_limits(&sb->cg, &cl);
		if (r)
			return r;
		cgroup_reset_peak(&sb->cg);
		if (cgroup_read_stats(&sb->cg, &st) == 0) {
			sb->cpu_base = st.cpu_ns;
			sb->oom_base = st.oom_kills;
			sb->oom_seen = st.oom_kills;
		}
	}
	/* Before the run is sent: the listener is there before its steps. */
	if (spec->listen_port)
		lfd = listen_in_sandbox(sb->proc.pid, sb->proc.pidfd,
					spec->listen_port);
	buf_init(&enc);
	wire_encode_spec(&enc, spec, &mode);
	r = sandbox_command(sb, (enum sandbox_cmd)INIT_CMD_RUN, 0, NULL,
			    enc.data, enc.len);
	buf_release(&enc);
	if (r) {
		if (lfd >= 0)
			fd_close(&lfd);
		return r;
	}
	if (spec->listen_port && spec->listen)
		spec->listen(spec->listen_arg, lfd);
	else if (lfd >= 0)
		fd_close(&lfd);
	sb->standby = false;
	sb->serve = spec->serve;
	if (sb->serve)
		setsockopt(sb->proc.status_fd, SOL_SOCKET, SO_SNDBUF,
			   &(int){CMD_SNDBUF}, sizeof(int));
	sb->lent = sb->reusable;
	sb->ops = *ops;
	sb->ctx = ctx;
	sb->limits = spec->limits;
	sandbox_result_release(&sb->res);
	sandbox_result_init(&sb->res);
	sb->nsteps = spec->nsteps ? spec->nsteps : 1;
	sb->res.steps = xcalloc(sb->nsteps, sizeof(*sb->res.steps));
	sb->res.nsteps = sb->nsteps;
	sb->start_ns = now_ns();
	r = arm_timers(sb);
	if (r) /* the run goes on; only its limits are at risk: stop it */
		sandbox_kill(sb, SANDBOX_ERROR,
			     "cannot arm the sandbox's timers");
	return 0;
}

struct sandbox *sandbox_start(struct loop *loop,
			      const struct sandbox_spec *spec,
			      const struct sandbox_ops *ops, void *ctx,
			      char *err, size_t errlen)
{
	struct sandbox *sb;
	char name[64];
	int r;

	if (!sandbox_host.ready) {
		snprintf(err, errlen, "sandbox host not initialised");
		return NULL;
	}
	if ((!spec->argv || !spec->argv[0]) && !spec->nsteps && !spec->serve &&
	    !spec->standby) {
		snprintf(err, errlen, "no command given");
		return NULL;
	}
	sb = xcalloc(1, sizeof(*sb));
	sandbox_result_init(&sb->res);
	sb->loop = loop;
	sb->ops = *ops;
	sb->ctx = ctx;
	sb->limits = spec->limits;
	sb->serve = spec->serve;
	sb->standby = spec->standby;
	if (spec->standby) {
		sb->idle_ops = *ops;
		sb->idle_ctx = ctx;
	}
	buf_init(&sb->outq);
	sb->nsteps = spec->nsteps ? spec->nsteps : 1;
	sb->res.steps = xcalloc(sb->nsteps, sizeof(*sb->res.steps));
	sb->res.nsteps = sb->nsteps;
	sb->kill_status = -1;
	sb->wall_fd = sb->cpu_fd = -1;
	sb->proc.pidfd = sb->proc.status_fd = -1;
	sb->proc.listen_fd = -1;
	sb->proc.exec_fd = sb->proc.oom_fd = -1;
	sb->proc.slot = -1;
	buf_init(&sb->status_buf);
	sb->id = __atomic_add_fetch(&next_id, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&live, 1, __ATOMIC_RELAXED);

	r = gpu_lease_take(spec, &sb->gpus, &sb->gpus_shared, err, errlen);
	if (r)
		goto fail;
	if (sandbox_host.cg.version != CGROUP_NONE) {
		struct cgroup_limits cl = {
			.memory_bytes = spec->limits.memory_bytes,
			.pids = spec->limits.pids,
			.cpu_quota_milli = spec->limits.cpu_quota_milli,
			.cpu_weight = spec->limits.cpu_weight,
		};

		snprintf(name, sizeof(name), "s%d-%llu", (int)getpid(),
			 (unsigned long long)sb->id);
		r = cgroup_create(&sb->cg, &sandbox_host.cg, name, &cl, err,
				  errlen);
		if (r)
			goto fail;
		sb->have_cg = true;
	}
	r = spawn_limit_devices(spec, sb->have_cg ? &sb->cg : NULL, name, err,
				errlen);
	if (r)
		goto fail;
	sb->start_ns = now_ns();
	r = spawn_sandbox(spec, sb->have_cg ? &sb->cg : NULL, &sb->proc, err,
			  errlen);
	if (r)
		goto fail;
	fd_set_nonblock(sb->proc.status_fd);
	/* Room for a whole file or archive chunk in the socket, so that
	 * sandbox_command() seldom has to copy one into its queue. */
	if (sb->serve)
		setsockopt(sb->proc.status_fd, SOL_SOCKET, SO_SNDBUF,
			   &(int){CMD_SNDBUF}, sizeof(int));
	r = watch(sb, sb->proc.status_fd, on_status);
	if (!r)
		r = watch(sb, sb->proc.exec_fd, on_exec);
	if (!r && !spec->standby)
		r = arm_timers(sb);
	if (!r)
		r = watch(sb, sb->proc.pidfd, on_exit_event);
	if (r) {
		/* It runs already: kill it, reap it, undo everything. */
		snprintf(err, errlen, "cannot watch the sandbox: %s",
			 strerror(-r));
		syscall(SYS_pidfd_send_signal, sb->proc.pidfd, SIGKILL, NULL,
			0);
		syscall(SYS_waitid, P_PIDFD, sb->proc.pidfd, NULL, WEXITED,
			NULL);
		if (sb->proc.exec_fd >= 0)
			loop_del_fd(sb->loop, sb->proc.exec_fd);
		spawn_exec_done(&sb->proc);
		unwatch(sb, &sb->proc.status_fd);
		unwatch(sb, &sb->proc.pidfd);
		unwatch(sb, &sb->wall_fd);
		unwatch(sb, &sb->cpu_fd);
		goto fail;
	}
	if (spec->listen_port && spec->listen) {
		spec->listen(spec->listen_arg, sb->proc.listen_fd);
		sb->proc.listen_fd = -1;
	}
	return sb;
fail:
	if (sb->proc.listen_fd >= 0)
		fd_close(&sb->proc.listen_fd);
	__atomic_sub_fetch(&live, 1, __ATOMIC_RELAXED);
	if (sb->have_cg)
		uidslot_release(sb->proc.slot, cgroup_destroy(&sb->cg) == 0);
	else
		uidslot_release(sb->proc.slot, true);
	gpu_lease_drop(sb->gpus, sb->gpus_shared);
	buf_release(&sb->status_buf);
	buf_release(&sb->outq);
	sandbox_result_release(&sb->res);
	free(sb);
	errno = -r;
	return NULL;
}

struct run_state {
	sandbox_output_fn output;
	void *ctx;
	struct sandbox_result *res;
	bool done;
};

static void run_output(void *ctx, size_t step, int stream, const char *data,
		       size_t len)
{
	struct run_state *st = ctx;

	if (st->output)
		st->output(st->ctx, step, stream, data, len);
}

static void run_done(void *ctx, struct sandbox_result *res)
{
	struct run_state *st = ctx;

	/* Take everything: leave the supervisor an empty result. */
	*st->res = *res;
	sandbox_result_init(res);
	st->done = true;
}

void sandbox_run(const struct sandbox_spec *spec, sandbox_output_fn output,
		 void *ctx, struct sandbox_result *res)
{
	static const struct sandbox_ops ops = {.output = run_output,
					       .done = run_done};
	struct run_state st = {.output = output, .ctx = ctx, .res = res};
	struct loop *loop = loop_new();

	sandbox_result_init(res);
	if (!loop) {
		res->status = SANDBOX_ERROR;
		snprintf(res->error, sizeof(res->error),
			 "cannot create an event loop: %s", strerror(errno));
		return;
	}
	if (!sandbox_start(loop, spec, &ops, &st, res->error,
			   sizeof(res->error))) {
		res->status = SANDBOX_ERROR;
		st.done = true;
	}
	/* Then wait for the cleanup (init's exit, the cgroup's removal),
	 * which may come after the result. */
	while (!st.done || sandbox_live())
		if (loop_run_once(loop, -1) < 0)
			break;
	loop_free(loop);
}

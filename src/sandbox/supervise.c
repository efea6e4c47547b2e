/*
 * Supervising a running sandbox from the host, without threads.
 *
 * A sandbox is watched through its fds on a struct loop: the init's pidfd
 * (readable when init has exited, by which time the kernel has killed and
 * reaped everything else in the pid namespace), the stdout and stderr
 * pipes, the status pipe carrying init's messages, a one-shot timerfd for
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
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/log.h"
#include "base/loop.h"
#include "base/util.h"
#include "sandbox/internal.h"
#include "sandbox/spawn.h"
#include "base/banned.h"

#define CPU_SAMPLE_MS 50
#define READ_CHUNK 65536

struct sandbox {
	struct loop *loop;
	struct sandbox_ops ops;
	void *ctx;
	uint64_t id;
	struct spawn_result proc;
	struct cgroup cg;
	bool have_cg;
	int wall_fd, cpu_fd;
	uint64_t start_ns;
	struct sandbox_limits limits;

	uint64_t out_bytes[3];
	bool truncated;
	bool exited;   /* init reaped */
	bool finished; /* done() called */
	int kill_status; /* -1 or the enum sandbox_status that killed it */
	char kill_reason[128];

	struct buf status_buf; /* unparsed bytes from init */
	bool got_exit;
	struct init_msg exit_msg;
	bool got_error;
	char error[200];
	int error_errno;
	struct sandbox_result res;
};

static uint64_t next_id;

static void finish(struct sandbox *sb);

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

/* Reads what is available on an output pipe; returns false at EOF. */
static bool pump_output(struct sandbox *sb, int stream, int fd)
{
	char chunk[READ_CHUNK];

	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));
		uint64_t room;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN;
		if (n == 0)
			return false;
		room = sb->limits.output_bytes - sb->out_bytes[stream];
		if ((uint64_t)n > room) {
			if (room && sb->ops.output)
				sb->ops.output(sb->ctx, stream, chunk,
					       (size_t)room);
			sb->out_bytes[stream] += room;
			sb->truncated = true;
			sandbox_kill(sb, SANDBOX_OUTPUT_LIMIT,
				     "output limit reached");
			return false;
		}
		if (sb->ops.output)
			sb->ops.output(sb->ctx, stream, chunk, (size_t)n);
		sb->out_bytes[stream] += (uint64_t)n;
	}
}

static void on_output(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct sandbox *sb = arg;
	int stream = fd == sb->proc.stdout_fd ? 1 : 2;

	if (!pump_output(sb, stream, fd))
		unwatch(sb, stream == 1 ? &sb->proc.stdout_fd
					: &sb->proc.stderr_fd);
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
		case INIT_MSG_EXIT:
			sb->exit_msg = m;
			sb->got_exit = true;
			break;
		case INIT_MSG_FETCH:
			add_fetched(sb, payload, m.len1, payload + m.len1,
				    (size_t)m.len2);
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
		/* Fetched files are bounded by the sandbox's disk. */
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

static void on_status(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct sandbox *sb = arg;

	if (!pump_status(sb))
		unwatch(sb, &sb->proc.status_fd);
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
	    ns / 1000000 >= sb->limits.cpu_ms) {
		unwatch(sb, &sb->cpu_fd);
		sandbox_kill(sb, SANDBOX_TIME_LIMIT, "cpu time limit reached");
	}
}

static void on_exit_event(struct loop *loop, int fd, uint32_t events,
			  void *arg)
{
	struct sandbox *sb = arg;
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	if (syscall(SYS_waitid, P_PIDFD, sb->proc.pidfd, &si,
		    WEXITED | WNOHANG, NULL) < 0 ||
	    si.si_pid == 0)
		return;
	sb->exited = true;
	sb->res.wall_ms = (now_ns() - sb->start_ns) / 1000000;
	unwatch(sb, &sb->proc.pidfd);
	/* Every writer is gone: drain what is left, then report. */
	if (sb->proc.status_fd >= 0) {
		pump_status(sb);
		unwatch(sb, &sb->proc.status_fd);
	}
	if (sb->proc.stdout_fd >= 0) {
		pump_output(sb, 1, sb->proc.stdout_fd);
		unwatch(sb, &sb->proc.stdout_fd);
	}
	if (sb->proc.stderr_fd >= 0) {
		pump_output(sb, 2, sb->proc.stderr_fd);
		unwatch(sb, &sb->proc.stderr_fd);
	}
	finish(sb);
}

static void decide(struct sandbox *sb)
{
	struct sandbox_result *res = &sb->res;
	struct cgroup_stats st;
	int ws = sb->exit_msg.value;

	memset(&st, 0, sizeof(st));
	if (sb->have_cg)
		cgroup_read_stats(&sb->cg, &st);
	res->cpu_ms = st.has_cpu ? st.cpu_ns / 1000000
				 : sb->exit_msg.cpu_us / 1000;
	res->peak_memory_bytes = st.has_peak ? st.peak_bytes
					     : sb->exit_msg.maxrss;
	res->oom_killed = st.oom_kills > 0;
	res->output_truncated = sb->truncated;

	if (sb->got_exit) {
		if (WIFEXITED(ws)) {
			res->exit_code = WEXITSTATUS(ws);
			res->status = res->exit_code ? SANDBOX_NONZERO_EXIT
						     : SANDBOX_OK;
		} else if (WIFSIGNALED(ws)) {
			res->signal = WTERMSIG(ws);
			res->status = SANDBOX_SIGNALED;
			if (res->signal == SIGXCPU)
				res->status = SANDBOX_TIME_LIMIT;
		}
		if (res->oom_killed && res->status != SANDBOX_OK)
			res->status = SANDBOX_MEMORY_LIMIT;
	} else {
		/* Killed before the command ended (by us or the kernel). */
		res->signal = SIGKILL;
		res->status = res->oom_killed ? SANDBOX_MEMORY_LIMIT
					      : SANDBOX_ERROR;
		if (!res->oom_killed && !sb->got_error && sb->kill_status < 0)
			snprintf(res->error, sizeof(res->error),
				 "sandbox init ended unexpectedly");
	}
	if (sb->kill_status >= 0) {
		res->status = (enum sandbox_status)sb->kill_status;
		if (res->status == SANDBOX_ERROR)
			str_copy(res->error, sizeof(res->error),
				 sb->kill_reason);
		if (!sb->got_exit || res->signal) {
			res->signal = SIGKILL;
			res->exit_code = -1;
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

static void finish(struct sandbox *sb)
{
	if (sb->finished)
		return;
	sb->finished = true;
	unwatch(sb, &sb->wall_fd);
	unwatch(sb, &sb->cpu_fd);
	decide(sb);
	if (sb->have_cg) {
		int r = cgroup_destroy(&sb->cg);

		if (r)
			log_warn("sandbox %llu: cannot remove its cgroup: %s",
				 (unsigned long long)sb->id, strerror(-r));
	}
	if (sb->ops.done)
		sb->ops.done(sb->ctx, &sb->res);
	/* done() took what it wanted; the fetched files are ours to free
	 * unless it cleared them. */
	sandbox_result_release(&sb->res);
	buf_release(&sb->status_buf);
	free(sb);
}

static int watch(struct sandbox *sb, int fd, loop_fd_fn fn)
{
	return loop_add_fd(sb->loop, fd, EPOLLIN, fn, sb);
}

struct sandbox *sandbox_start(struct loop *loop, const struct sandbox_spec *spec,
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
	if (!spec->argv || !spec->argv[0]) {
		snprintf(err, errlen, "no command given");
		return NULL;
	}
	sb = xcalloc(1, sizeof(*sb));
	sb->loop = loop;
	sb->ops = *ops;
	sb->ctx = ctx;
	sb->limits = spec->limits;
	if (!sb->limits.output_bytes)
		sb->limits.output_bytes = UINT64_MAX / 2;
	sb->kill_status = -1;
	sb->wall_fd = sb->cpu_fd = -1;
	sb->proc.pidfd = sb->proc.stdout_fd = sb->proc.stderr_fd = -1;
	sb->proc.status_fd = -1;
	sandbox_result_init(&sb->res);
	buf_init(&sb->status_buf);
	sb->id = __atomic_add_fetch(&next_id, 1, __ATOMIC_RELAXED);

	if (sandbox_host.cg.version != CGROUP_NONE) {
		struct cgroup_limits cl = {
			.memory_bytes = spec->limits.memory_bytes,
			.pids = spec->limits.pids,
		};

		snprintf(name, sizeof(name), "s%d-%llu", (int)getpid(),
			 (unsigned long long)sb->id);
		r = cgroup_create(&sb->cg, &sandbox_host.cg, name, &cl, err,
				  errlen);
		if (r)
			goto fail;
		sb->have_cg = true;
	}
	sb->start_ns = now_ns();
	r = spawn_sandbox(spec, sb->have_cg ? &sb->cg : NULL, &sb->proc, err,
			  errlen);
	if (r)
		goto fail;
	fd_set_nonblock(sb->proc.stdout_fd);
	fd_set_nonblock(sb->proc.stderr_fd);
	fd_set_nonblock(sb->proc.status_fd);
	r = watch(sb, sb->proc.stdout_fd, on_output);
	if (!r)
		r = watch(sb, sb->proc.stderr_fd, on_output);
	if (!r)
		r = watch(sb, sb->proc.status_fd, on_status);
	if (!r && spec->limits.wall_ms) {
		sb->wall_fd = timer_fd_new(spec->limits.wall_ms, false);
		r = sb->wall_fd < 0 ? sb->wall_fd : watch(sb, sb->wall_fd,
							  on_wall);
	}
	if (!r && spec->limits.cpu_ms && sb->have_cg &&
	    sandbox_host.cg.has_cpu) {
		sb->cpu_fd = timer_fd_new(CPU_SAMPLE_MS, true);
		r = sb->cpu_fd < 0 ? sb->cpu_fd : watch(sb, sb->cpu_fd,
							on_cpu);
	}
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
		unwatch(sb, &sb->proc.stdout_fd);
		unwatch(sb, &sb->proc.stderr_fd);
		unwatch(sb, &sb->proc.status_fd);
		unwatch(sb, &sb->proc.pidfd);
		unwatch(sb, &sb->wall_fd);
		unwatch(sb, &sb->cpu_fd);
		goto fail;
	}
	return sb;
fail:
	if (sb->have_cg)
		cgroup_destroy(&sb->cg);
	buf_release(&sb->status_buf);
	free(sb);
	return NULL;
}

struct run_state {
	void (*output)(void *ctx, int stream, const char *data, size_t len);
	void *ctx;
	struct sandbox_result *res;
	bool done;
};

static void run_output(void *ctx, int stream, const char *data, size_t len)
{
	struct run_state *st = ctx;

	if (st->output)
		st->output(st->ctx, stream, data, len);
}

static void run_done(void *ctx, const struct sandbox_result *res)
{
	struct run_state *st = ctx;
	struct sandbox_result *out = st->res;

	*out = *res;
	/* Take the fetched files: the supervisor frees what is left. */
	((struct sandbox_result *)res)->fetched = NULL;
	((struct sandbox_result *)res)->nfetched = 0;
	st->done = true;
}

void sandbox_run(const struct sandbox_spec *spec,
		 void (*output)(void *ctx, int stream, const char *data,
				size_t len),
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
	while (!st.done)
		if (loop_run_once(loop, -1) < 0)
			break;
	loop_free(loop);
}

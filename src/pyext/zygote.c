/*
 * _sbx_zygote: the native half of a forking zygote (guest/zygote.py).
 *
 * Loaded by a started Python interpreter that is root in its sandbox's
 * user namespace and holds no run's data. serve() waits on init's control
 * socket; for each run it clones the interpreter into fresh pid, mount and
 * IPC namespaces (see src/sandbox/zygote_proto.h for the exchange). The
 * clone is the run's PID 1: it mounts the run's /proc with the sandbox's
 * masks and forks the program, which becomes the sandbox user (no
 * capabilities, no_new_privs, the run's rlimits, the seccomp filter) before
 * serve() returns the run's fields to Python in it. Nothing else returns:
 * the zygote loops, and PID 1 reaps until the program has ended, kills the
 * rest and reports the program's wait status.
 *
 * Built as a shared object against the host's Python headers and embedded
 * in the init binary, which hands it to the zygote as a memfd.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/util.h"
#include "sandbox/internal.h"
#include "sandbox/zygote_proto.h"

/* Receives up to nfds fds with at least one byte into buf; returns the
 * bytes read (0 at EOF) or -1. fds not sent are -1. */
static ssize_t recv_fds(int sock, void *buf, size_t len, int *fds, int nfds)
{
	char control[CMSG_SPACE(sizeof(int) * ZYGOTE_NFDS)];
	struct iovec iov = {.iov_base = buf, .iov_len = len};
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = control,
			     .msg_controllen =
				     CMSG_SPACE(sizeof(int) * (size_t)nfds)};
	struct cmsghdr *c;
	ssize_t n;
	int i;

	for (i = 0; i < nfds; i++)
		fds[i] = -1;
	do
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		size_t got;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		got = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (i = 0; i < (int)got; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(c) + (size_t)i * sizeof(int),
			       sizeof(int));
			if (i < nfds)
				fds[i] = fd;
			else
				close(fd);
		}
	}
	return n;
}

/* The run's PID 1 shares this process's memory (CLONE_VM), as a
 * posix_spawn child does, on a stack of its own: it needs no copy of the
 * interpreter, only to mount the run's /proc and fork the program. The
 * program it forks is a copy of this memory taken while the zygote waits
 * in start_pid1() for that fork: it resumes there (longjmp) as the
 * zygote, as if it had been forked by it. Until then PID 1 runs on the
 * zygote's thread's state (its TLS), so it calls nothing that keeps state
 * there or in the heap: no malloc, no stdio, only system calls, _Fork()
 * and the formatting into its own buffers. */
#define PID1_STACK (256u << 10)

static struct {
	char *stack;	/* PID1_STACK bytes, mapped once */
	pid_t pid1_tid; /* nonzero while a PID 1 runs on that stack */
	jmp_buf zygote; /* where the program resumes */
	sigset_t mask;	/* the zygote's signal mask */
	int run;	/* the run's socket, from init */
	int forked;	/* closed by PID 1 once the program is forked */
	/* In the program only: what PID 1 received. */
	struct zygote_run h;
	int fds[ZYGOTE_NFDS];
} zg = {.run = -1, .forked = -1};

static int run_pid1(void *unused)
{
	struct zygote_run h;
	int fds[ZYGOTE_NFDS], i, r;
	char what[200];
	sigset_t all;
	pid_t prog;

	(void)unused;
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (recv_fds(zg.run, &h, sizeof(h), fds, ZYGOTE_NFDS) !=
		    (ssize_t)sizeof(h) ||
	    h.magic != ZYGOTE_MAGIC || h.len > ZYGOTE_MAX_RUN ||
	    h.filter_len > h.len)
		_exit(127);
	for (i = 0; i < ZYGOTE_NFDS; i++)
		if (fds[i] < 0)
			_exit(127);
	r = runinit_proc(what, sizeof(what));
	if (r)
		runinit_fail(zg.run, fds[ZYGOTE_FD_STDERR], what, -r);
	prog = _Fork();
	if (prog == 0) {
		/* Only PID 1 may say when the zygote goes on. */
		close(zg.forked);
		zg.h = h;
		memcpy(zg.fds, fds, sizeof(fds));
		longjmp(zg.zygote, 1);
	}
	if (prog < 0)
		runinit_fail(zg.run, fds[ZYGOTE_FD_STDERR],
			     "cannot fork the program", errno);
	/* The zygote may go on: the program has its copy. */
	close(zg.forked);
	for (i = 0; i < ZYGOTE_NFDS; i++)
		close(fds[i]);
	runinit_reap(prog, zg.run);
}

/* In the program, resumed in start_pid1(): reads the run's bytes and
 * becomes the sandbox user under the filter. Returns the bytes (seccomp
 * program, then the fields); exits on failure. */
static char *program_start(void)
{
	struct sandbox_limits lim = {.fsize_bytes = zg.h.fsize_bytes,
				     .nofile = zg.h.nofile,
				     .cpu_ms = zg.h.cpu_ms};
	struct child_err ce = {{0}};
	struct seccomp_prog filter;
	char *data = malloc(zg.h.len + 1);
	int r;

	if (!data || read_full(zg.run, data, zg.h.len) != (ssize_t)zg.h.len)
		_exit(127);
	data[zg.h.len] = '\0';
	filter.data = data;
	filter.len = zg.h.filter_len;
	setsid();
	if (dup2(zg.fds[ZYGOTE_FD_STDIN], 0) < 0 ||
	    dup2(zg.fds[ZYGOTE_FD_STDOUT], 1) < 0 ||
	    dup2(zg.fds[ZYGOTE_FD_STDERR], 2) < 0)
		_exit(127);
	syscall(SYS_close_range, 3, ~0U, 0);
	r = rlimit_setup_child(&lim, &ce);
	if (!r)
		r = userns_drop_child(zg.h.uid, zg.h.gid, &ce);
	if (!r) {
		r = seccomp_prog_load(&filter);
		if (r)
			snprintf(ce.what, sizeof(ce.what),
				 "cannot load the seccomp filter");
	}
	if (r) {
		char line[300];

		snprintf(line, sizeof(line), "sbx: %s: %s\n", ce.what,
			 strerror(-r));
		write_full(2, line, strlen(line));
		_exit(127);
	}
	sigprocmask(SIG_SETMASK, &zg.mask, NULL);
	return data;
}

/* Waits until no PID 1 runs on the stack any more: the last one exits
 * right after its report, which init has waited for. Returns 0 or
 * -EBUSY. */
__attribute__((noinline)) static int pid1_stack_free(void)
{
	struct timespec wait = {.tv_sec = 1};
	pid_t tid;

	while ((tid = __atomic_load_n(&zg.pid1_tid, __ATOMIC_ACQUIRE))) {
		if (syscall(SYS_futex, &zg.pid1_tid, FUTEX_WAIT, tid, &wait,
			    NULL, 0) < 0 &&
		    errno == ETIMEDOUT)
			return -EBUSY;
	}
	return 0;
}

/* Starts the run's PID 1, tells init its pid on ctl (init then sends PID
 * 1 the run) and waits until PID 1 has forked the program (or has ended).
 * Returns the pid, or -errno when there is none (not yet told); in the
 * program, returns 0. */
static pid_t start_pid1(int ctl, int run)
{
	int forked[2], r;
	sigset_t all;
	pid_t pid;
	char b;

	if (!zg.stack) {
		void *st = mmap(NULL, PID1_STACK, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);

		if (st == MAP_FAILED)
			return -errno;
		zg.stack = st;
	}
	r = pid1_stack_free();
	if (r)
		return r;
	if (pipe2(forked, O_CLOEXEC) < 0)
		return -errno;
	/* No signal while PID 1 shares this thread's state: nothing to
	 * interrupt the wait below, no handler to run in the middle. */
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &zg.mask);
	zg.run = run;
	zg.forked = forked[1];
	if (setjmp(zg.zygote))
		return 0;
	pid = clone(run_pid1, zg.stack + PID1_STACK,
		    CLONE_VM | CLONE_PARENT | CLONE_NEWPID | CLONE_NEWNS |
			    CLONE_NEWIPC | CLONE_PARENT_SETTID |
			    CLONE_CHILD_CLEARTID,
		    NULL, &zg.pid1_tid, NULL, &zg.pid1_tid);
	r = pid < 0 ? -errno : (int)pid;
	/* From here until PID 1 has forked, only raw system calls: the
	 * libc wrappers of blocking calls keep cancellation state in the
	 * thread's descriptor, which PID 1 shares and the program copies,
	 * and errno is shared with PID 1 too. */
	syscall(SYS_close, forked[1]);
	if (pid > 0) {
		int32_t answer = (int32_t)pid;
		size_t done = 0;
		long n;

		/* Init not listening any more is its own affair: PID 1 then
		 * ends for want of its run. */
		while (done < sizeof(answer)) {
			n = syscall(SYS_write, ctl, (char *)&answer + done,
				    sizeof(answer) - done);
			if (n <= 0)
				break;
			done += (size_t)n;
		}
		/* EOF once PID 1 has forked, or has ended without forking
		 * (PID 1 never writes; no signal can interrupt). */
		while (syscall(SYS_read, forked[0], &b, 1) != 0)
			;
	}
	syscall(SYS_close, forked[0]);
	sigprocmask(SIG_SETMASK, &zg.mask, NULL);
	return r;
}

/* Whether the fields from p on (envc, env...) are this process's
 * environment, in its order: what os.environ was made from at the
 * interpreter's start, which the program then need not rebuild. */
static int env_is_ours(const char *p, const char *end)
{
	extern char **environ;
	char *num_end;
	unsigned long n, i;

	if (p >= end || !memchr(p, '\0', (size_t)(end - p)))
		return 0;
	errno = 0;
	n = strtoul(p, &num_end, 10);
	if (errno || *num_end || num_end == p)
		return 0;
	p += strlen(p) + 1;
	for (i = 0; i < n; i++) {
		size_t len;

		if (p >= end || !environ[i])
			return 0;
		len = strnlen(p, (size_t)(end - p));
		if (p + len >= end || strcmp(p, environ[i]))
			return 0;
		p += len + 1;
	}
	return p == end && !environ[n];
}

static PyObject *fields_list(const char *p, const char *end)
{
	PyObject *list = PyList_New(0);

	if (!list)
		return NULL;
	while (p < end) {
		size_t n = strnlen(p, (size_t)(end - p));
		PyObject *s = PyUnicode_DecodeUTF8(p, (Py_ssize_t)n,
						   "surrogateescape");

		if (!s || PyList_Append(list, s) < 0) {
			Py_XDECREF(s);
			Py_DECREF(list);
			return NULL;
		}
		Py_DECREF(s);
		p += n + 1;
	}
	return list;
}

/* Where the fields from p on start being the environment (envc), after
 * cwd, stdin, cpu, argc and argv; end when they are cut short. */
static const char *env_fields(const char *p, const char *end)
{
	unsigned long argc = 0, i;

	for (i = 0; p < end; i++) {
		size_t len = strnlen(p, (size_t)(end - p));

		if (i == 3)
			argc = strtoul(p, NULL, 10);
		if (i == 4 + argc)
			return p;
		p += len + 1;
	}
	return end;
}

/* serve(ctl_fd) -> (fields, same_env) in a run's program, fields a list of
 * str and same_env whether the run's environment is the zygote's own, in
 * the same order; None when init closes the control socket (the zygote is
 * no longer needed). */
static PyObject *zygote_serve(PyObject *self, PyObject *args)
{
	int ctl;

	(void)self;
	if (!PyArg_ParseTuple(args, "i", &ctl))
		return NULL;
	for (;;) {
		char go = 0;
		int run;
		ssize_t n = recv_fds(ctl, &go, 1, &run, 1);
		int32_t answer;
		pid_t pid;

		if (n == 0)
			Py_RETURN_NONE;
		if (n < 0)
			return PyErr_SetFromErrno(PyExc_OSError);
		if (go != ZYGOTE_GO || run < 0) {
			if (run >= 0)
				close(run);
			answer = -EPROTO;
			if (write_full(ctl, &answer, sizeof(answer)) < 0)
				return PyErr_SetFromErrno(PyExc_OSError);
			continue;
		}
		PyOS_BeforeFork();
		pid = start_pid1(ctl, run);
		if (pid == 0) {
			const char *p, *end;
			PyObject *list;
			char *data;
			int same;

			close(ctl);
			data = program_start();
			PyOS_AfterFork_Child();
			p = data + zg.h.filter_len;
			end = data + zg.h.len;
			same = env_is_ours(env_fields(p, end), end);
			list = fields_list(p, end);
			free(data);
			if (!list)
				return NULL;
			return Py_BuildValue("(NO)", list,
					     same ? Py_True : Py_False);
		}
		PyOS_AfterFork_Parent();
		close(run);
		if (pid > 0)
			continue; /* init has its answer */
		answer = (int32_t)pid;
		if (write_full(ctl, &answer, sizeof(answer)) < 0)
			return PyErr_SetFromErrno(PyExc_OSError);
	}
}

static PyMethodDef zygote_methods[] = {
	{"serve", zygote_serve, METH_VARARGS,
	 "Serve runs from init; returns a run's fields in its program."},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef zygote_module = {
	PyModuleDef_HEAD_INIT,
	"_sbx_zygote",
	NULL,
	-1,
	zygote_methods,
	NULL,
	NULL,
	NULL,
	NULL,
};

PyMODINIT_FUNC PyInit__sbx_zygote(void);

PyMODINIT_FUNC PyInit__sbx_zygote(void)
{
	/* Built for one interpreter version: refuse any other. */
	if ((Py_Version >> 16) != (PY_VERSION_HEX >> 16)) {
		PyErr_SetString(PyExc_ImportError,
				"_sbx_zygote was built for another Python");
		return NULL;
	}
	return PyModule_Create(&zygote_module);
}

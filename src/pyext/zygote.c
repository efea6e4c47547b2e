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
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* PID 1 of a run. Returns only in the program, with the run's bytes. */
static char *run_init(int run, struct zygote_run *h)
{
	int fds[ZYGOTE_NFDS], i, r;
	struct child_err ce = {{0}};
	sigset_t all, old;
	char *data;
	pid_t prog;

	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, &old);
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (recv_fds(run, h, sizeof(*h), fds, ZYGOTE_NFDS) !=
		    (ssize_t)sizeof(*h) ||
	    h->magic != ZYGOTE_MAGIC || h->len > ZYGOTE_MAX_RUN ||
	    h->filter_len > h->len)
		_exit(127);
	for (i = 0; i < ZYGOTE_NFDS; i++)
		if (fds[i] < 0)
			_exit(127);
	data = malloc(h->len + 1);
	if (!data || read_full(run, data, h->len) != (ssize_t)h->len)
		_exit(127);
	data[h->len] = '\0';
	r = runinit_proc(ce.what, sizeof(ce.what));
	if (r)
		runinit_fail(run, fds[ZYGOTE_FD_STDERR], ce.what, -r);
	prog = fork();
	if (prog < 0)
		runinit_fail(run, fds[ZYGOTE_FD_STDERR],
			     "cannot fork the program", errno);
	if (prog == 0) {
		struct sandbox_limits lim = {.fsize_bytes = h->fsize_bytes,
					     .nofile = h->nofile,
					     .cpu_ms = h->cpu_ms};
		struct seccomp_prog filter = {.data = data,
					      .len = h->filter_len};

		setsid();
		if (dup2(fds[ZYGOTE_FD_STDIN], 0) < 0 ||
		    dup2(fds[ZYGOTE_FD_STDOUT], 1) < 0 ||
		    dup2(fds[ZYGOTE_FD_STDERR], 2) < 0)
			_exit(127);
		syscall(SYS_close_range, 3, ~0U, 0);
		r = rlimit_setup_child(&lim, &ce);
		if (!r)
			r = userns_drop_child(h->uid, h->gid, &ce);
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
		sigprocmask(SIG_SETMASK, &old, NULL);
		return data;
	}
	free(data);
	for (i = 0; i < ZYGOTE_NFDS; i++)
		close(fds[i]);
	runinit_reap(prog, run);
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
		struct zygote_run h;
		char go = 0;
		int run;
		ssize_t n = recv_fds(ctl, &go, 1, &run, 1);
		int32_t answer;
		pid_t pid;
		int err;

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
		pid = (pid_t)syscall(SYS_clone,
				     CLONE_PARENT | CLONE_NEWPID | CLONE_NEWNS |
					     CLONE_NEWIPC,
				     NULL, NULL, NULL, NULL);
		if (pid == 0) {
			char *data;
			PyObject *list;

			close(ctl);
			data = run_init(run, &h);
			const char *p, *end;
			int same;

			PyOS_AfterFork_Child();
			p = data + h.filter_len;
			end = data + h.len;
			same = env_is_ours(env_fields(p, end), end);
			list = fields_list(p, end);
			free(data);
			if (!list)
				return NULL;
			return Py_BuildValue("(NO)", list,
					     same ? Py_True : Py_False);
		}
		err = errno;
		PyOS_AfterFork_Parent();
		close(run);
		answer = pid > 0 ? (int32_t)pid : -err;
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

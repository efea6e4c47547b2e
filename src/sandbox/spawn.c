/*
 * Creating a sandbox, host side.
 *
 * The calling process may have many threads, so between clone() and
 * execve() the child does only async-signal-safe work: wait for the go
 * byte, take its identity in the new user namespace (raw syscalls, since
 * glibc's set*id would try to sync threads that do not exist here), arrange
 * its fds and re-execute sbx as init. Everything else (mounts, seccomp,
 * dropping privileges) happens in init, a fresh single-threaded process.
 *
 * Each sandbox takes a host uid slot of its own (uidslot.c) and its user
 * namespace is owned by the slot's first id, not root: the cloning thread
 * takes that id as its effective uid and gid for the clone() call alone.
 * Per-user counts of what runs inside (inotify instances, pending signals,
 * processes) are charged up the namespace chain to that owner.
 *
 * The parent, between clone and the go byte: writes the uid/gid maps and
 * attaches the child to its cgroup; once init runs, spawn_exec_done()
 * shields it from the OOM killer. Any failure of the child before init runs
 * comes back on the status pipe.
 *
 * The child shares the server's memory (CLONE_VM, as posix_spawn does) on a
 * stack of its own until it executes init: copying the page tables of a
 * large threaded server, and the copy-on-write faults both sides then take,
 * cost more than the rest of the clone. The stack is freed once the child
 * has executed (a close-on-exec pipe reaching EOF, which the caller
 * watches: waiting for it here would hold up the caller's thread for as
 * long as the child waits for a CPU). All
 * signals are blocked around the clone, and the child puts every handler
 * back to its default before it restores the mask, so no handler of the
 * server ever runs on the child's stack.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/major.h>
#include <linux/mount.h>
#include <linux/sched.h>
#include <linux/securebits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "base/util.h"
#include "sandbox/internal.h"
#include "sandbox/uidslot.h"
#include "sandbox/spawn.h"
#include "base/banned.h"

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif

struct sandbox_host sandbox_host = {.exe_fd = -1};

/* Address-sanitized builds give the child a copy of the server's memory
 * instead: the child's instrumented frames would leave their marks in the
 * server's shadow memory, where a later mapping of the freed stack would
 * trip over them. */
#ifdef __SANITIZE_ADDRESS__
#define SPAWN_SHARE_VM 0
#else
#define SPAWN_SHARE_VM CLONE_VM
#endif

/* The child's stack until it executes init: it runs only child_main(). */
#define CHILD_STACK_SIZE (64 * 1024)

struct child_args {
	int sync_fd, sync_wfd;
	int exec_wfd;  /* close-on-exec: EOF tells the parent init runs */
	sigset_t mask; /* the calling thread's, restored before init runs */
	/* What becomes 0..5 in init, then one O_PATH fd per bind source. */
	int fds[INIT_FD_COUNT + SANDBOX_MAX_BINDS];
	int nfds;
	bool userns;
};

static void __attribute__((noreturn)) child_fail(int err, const char *what)
{
	struct init_msg m = {.kind = INIT_MSG_ERROR, .err = err};

	m.len1 = (uint32_t)strlen(what);
	if (syscall(SYS_write, INIT_FD_STATUS, &m, sizeof(m)) ==
		    (long)sizeof(m) &&
	    syscall(SYS_write, INIT_FD_STATUS, what, m.len1) < 0)
		_exit(127);
	_exit(127);
}

/* The kernel's struct sigaction (glibc's has another layout). */
struct ksigaction {
	void (*handler)(int);
	unsigned long flags;
	void (*restorer)(void);
	uint64_t mask;
};

/* Runs in the child right after the clone, on its own stack in the
 * server's memory: raw system calls only (glibc's wrappers would touch the
 * calling thread's cancellation state, which the child shares), and nothing
 * written but its own stack; a failing call may still set the thread's
 * errno, on paths where the sandbox fails anyway. */
static int child_main(void *arg)
{
	static char *const argv[] = {"sbx-init", "__sandbox_init", NULL};
	static char *const envp[] = {NULL};
	const struct child_args *a = arg;
	int high[INIT_FD_COUNT + SANDBOX_MAX_BINDS];
	struct ksigaction dfl = {.handler = SIG_DFL};
	char go;
	int i;

	/* The server's handlers must not run here: defaults, then the
	 * mask the server had. */
	for (i = 1; i < NSIG; i++) {
		struct ksigaction old;

		if (i == SIGKILL || i == SIGSTOP ||
		    syscall(SYS_rt_sigaction, i, NULL, &old, 8) < 0 ||
		    old.handler == SIG_DFL || old.handler == SIG_IGN)
			continue;
		syscall(SYS_rt_sigaction, i, &dfl, NULL, 8);
	}
	syscall(SYS_rt_sigprocmask, SIG_SETMASK, &a->mask, NULL, 8);
	/* Our copy of the write end would keep the read below from ever
	 * seeing the parent die. */
	syscall(SYS_close, a->sync_wfd);
	/* Lift the fds out of the way before placing them at 0..n-1. */
	for (i = 0; i < a->nfds; i++) {
		high[i] = (int)syscall(SYS_fcntl, a->fds[i], F_DUPFD_CLOEXEC,
				       256);
		if (high[i] < 0)
			_exit(127);
	}
	if (syscall(SYS_read, a->sync_fd, &go, 1) != 1)
		_exit(127); /* the parent gave up */
	for (i = 0; i < a->nfds; i++)
		if (syscall(SYS_dup3, high[i], i,
			    i == INIT_FD_EXE ? O_CLOEXEC : 0) < 0)
			_exit(127);
	/* The exec pipe stays, close-on-exec, just above them. */
	if (syscall(SYS_dup3, a->exec_wfd, a->nfds, O_CLOEXEC) < 0)
		_exit(127);
	syscall(SYS_close_range, (unsigned)a->nfds + 1, ~0u, 0);
	if (a->userns) {
		if (syscall(SYS_setgroups, 0, NULL) < 0)
			child_fail(errno, "cannot drop groups");
		if (syscall(SYS_setresgid, 0, 0, 0) < 0 ||
		    syscall(SYS_setresuid, 0, 0, 0) < 0)
			child_fail(errno, "cannot become root in the user "
					  "namespace");
	}
	/* Set after the identity change, which would clear it. */
	if (syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
		child_fail(errno, "cannot set the parent-death signal");
	syscall(SYS_execveat, INIT_FD_EXE, "", argv, envp, AT_EMPTY_PATH);
	child_fail(errno, "cannot execute sbx as the sandbox init");
}

static int memfd_with(const char *name, const void *data, size_t len)
{
	int fd = memfd_create(name, MFD_CLOEXEC);
	int r;

	if (fd < 0)
		return -errno;
	r = write_full(fd, data, len);
	if (!r && lseek(fd, 0, SEEK_SET) < 0)
		r = -errno;
	if (r) {
		fd_close(&fd);
		return r;
	}
	return fd;
}

/* stdin for step 0: the caller's fd or /dev/null. Later steps get theirs
 * from init. */
static int open_stdin(const struct sandbox_spec *spec)
{
	int fd;

	if (spec->stdin_fd >= 0)
		fd = fcntl(spec->stdin_fd, F_DUPFD_CLOEXEC, 0);
	else
		fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

/* The calling thread's ids and flags that owner_enter() changes. */
struct owner_saved {
	int securebits;
	int dumpable;
};

/* Makes uid and gid the effective ids of this thread only (raw syscalls:
 * glibc's set*id would change every thread of the process). The real and
 * saved uids stay 0, so the thread can come back. SECBIT_NO_SETUID_FIXUP
 * keeps the effective capabilities meanwhile (hosts that allow only
 * privileged callers to create user namespaces still let us); without
 * CAP_SETPCAP they drop, which creating the namespace does not need. */
static int owner_enter(uint32_t id, struct owner_saved *sv)
{
	sv->securebits = prctl(PR_GET_SECUREBITS, 0, 0, 0, 0);
	sv->dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
	if (sv->securebits >= 0 &&
	    prctl(PR_SET_SECUREBITS,
		  (unsigned long)sv->securebits | SECBIT_NO_SETUID_FIXUP, 0, 0,
		  0) < 0)
		sv->securebits = -1; /* nothing to restore */
	if (syscall(SYS_setresgid, -1, (gid_t)id, -1) < 0)
		return -errno;
	if (syscall(SYS_setresuid, -1, (uid_t)id, -1) < 0) {
		int r = -errno;

		syscall(SYS_setresgid, -1, 0, -1);
		return r;
	}
	return 0;
}

static void owner_leave(const struct owner_saved *sv)
{
	/* The saved uid is 0: going back is always allowed. A thread that
	 * kept another identity must not go on. */
	if (syscall(SYS_setresuid, -1, 0, -1) < 0 ||
	    syscall(SYS_setresgid, -1, 0, -1) < 0)
		abort();
	if (sv->securebits >= 0)
		prctl(PR_SET_SECUREBITS, (unsigned long)sv->securebits, 0, 0,
		      0);
	/* Changing the effective uid made the process undumpable. */
	if (sv->dumpable == 1)
		prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
}

/* Clones the sandbox's init onto stack (CHILD_STACK_SIZE bytes), sharing
 * our memory until it executes. With a user namespace, its owner (the id
 * the kernel charges per-user counts of everything inside to) is owner. */
static long do_clone(struct child_args *args, uint32_t owner, int *pidfd,
		     char *stack)
{
	int flags = SPAWN_SHARE_VM | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET |
		    CLONE_NEWIPC | CLONE_NEWUTS | CLONE_PIDFD | SIGCHLD;
	struct child_args *ca;
	struct owner_saved sv;
	sigset_t all;
	char *top;
	long pid;
	int r = 0;

	if (args->userns) {
		flags |= CLONE_NEWUSER;
		r = owner_enter(owner, &sv);
		if (r) {
			owner_leave(&sv);
			return r;
		}
	}
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &args->mask);
	/* The child reads its own copy, at the top of its stack, which we
	 * never touch again: ours is closed and changed as we go on. */
	ca = (struct child_args *)(stack + CHILD_STACK_SIZE) - 1;
	*ca = *args;
	top = (char *)((uintptr_t)ca & ~(uintptr_t)15);
	pid = clone(child_main, top, flags, ca, pidfd);
	if (pid < 0)
		r = -errno;
	pthread_sigmask(SIG_SETMASK, &args->mask, NULL);
	if (args->userns)
		owner_leave(&sv);
	return r ? r : pid;
}

void spawn_exec_done(struct spawn_result *out)
{
	if (out->stack) {
		munmap(out->stack, CHILD_STACK_SIZE);
		out->stack = NULL;
	}
	/* Only now: the setting is shared by every process that shares the
	 * memory, which was the server's until init ran. */
	if (out->oom_fd >= 0 && write(out->oom_fd, "-1000", 5) < 0) {
		/* a host that does not let us: init goes unshielded */
	}
	fd_close(&out->oom_fd);
	fd_close(&out->exec_fd);
}

static void child_fds_close(struct child_args *a)
{
	int i;

	for (i = 0; i < INIT_FD_COUNT + SANDBOX_MAX_BINDS; i++)
		if (i != INIT_FD_EXE)
			fd_close(&a->fds[i]);
}

/* The host's nodes that mnt.c's dev_setup() binds into every /dev (its
 * dev_nodes); the e2e tests open each node a GPU sandbox's /dev has, so
 * one added there and missing here shows. */
static const char *const dev_nodes[] = {
	"/dev/null",   "/dev/zero",    "/dev/full",
	"/dev/random", "/dev/urandom", "/dev/tty",
};

/* Adds path's device number to out when it is a device node. */
static int add_device(const char *path, struct cgroup_device *out, size_t max,
		      size_t *n)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return -errno;
	if (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode))
		return 0;
	if (*n >= max)
		return -E2BIG;
	out[(*n)++] = (struct cgroup_device){
		.type = S_ISCHR(st.st_mode) ? 'c' : 'b',
		.major = major(st.st_rdev),
		.minor = minor(st.st_rdev),
	};
	return 0;
}

/* Fills out with the device nodes a sandbox's /dev holds. Returns how
 * many, or -errno with a message in err. */
static int device_rules(const struct sandbox_spec *spec,
			struct cgroup_device *out, size_t max, char *err,
			size_t errlen)
{
	const char *path = "";
	size_t n = 0;
	int r = -E2BIG;

	for (size_t i = 0; i < ARRAY_SIZE(dev_nodes); i++) {
		path = dev_nodes[i];
		r = add_device(path, out, max, &n);
		if (r && r != -ENOENT) /* dev_setup() skips it too */
			goto fail;
	}
	/* The sandbox's own devpts (newinstance): its ptmx and terminals. */
	if (n + 2 > max)
		goto fail;
	out[n++] = (struct cgroup_device){'c', TTYAUX_MAJOR, 2};
	out[n++] = (struct cgroup_device){'c', UNIX98_PTY_SLAVE_MAJOR,
					  CGROUP_DEV_ANY};
	/* A device bind whose source is a plain file (the tests' fake GPU
	 * nodes) needs no rule: opening it is no device access. */
	for (size_t i = 0; i < spec->nbinds; i++) {
		if (!spec->binds[i].device)
			continue;
		path = spec->binds[i].src;
		r = add_device(path, out, max, &n);
		if (r)
			goto fail;
	}
	return (int)n;
fail:
	snprintf(err, errlen, "cannot add a device rule for '%s': %s", path,
		 strerror(-r));
	return r;
}

int spawn_limit_devices(const struct sandbox_spec *spec, struct cgroup *cg,
			const char *name, char *err, size_t errlen)
{
	struct cgroup_device devs[CGROUP_MAX_DEVICES];
	bool any = false;
	char why[400];
	int n, r;

	for (size_t i = 0; i < spec->nbinds; i++)
		any = any || spec->binds[i].device;
	if (!any)
		return 0;
	why[0] = '\0';
	n = device_rules(spec, devs, ARRAY_SIZE(devs), why, sizeof(why));
	if (n < 0) {
		r = n;
	} else if (!cg) {
		r = -EOPNOTSUPP;
		snprintf(why, sizeof(why), "this host has no usable cgroups");
	} else {
		r = cgroup_limit_devices(cg, &sandbox_host.cg, name, devs,
					 (size_t)n, why, sizeof(why));
	}
	if (r)
		snprintf(err, errlen,
			 "cannot limit the sandbox's devices to its own: %s",
			 why);
	return r;
}

int spawn_sandbox(const struct sandbox_spec *spec, const struct cgroup *cg,
		  struct spawn_result *out, char *err, size_t errlen)
{
	struct init_mode mode = {.userns = sandbox_host.userns,
				 .no_reuse = !sandbox_host.warm_reuse,
				 .seccomp = sandbox_host.seccomp};
	struct child_args args = {.sync_fd = -1, .userns = mode.userns};
	int status_pipe[2] = {-1, -1}, sync_pipe[2] = {-1, -1};
	int exec_pipe[2] = {-1, -1};
	int pidfd = -1, slot = -1, oom_fd = -1, r, i;
	char *stack = MAP_FAILED;
	char path[64];
	struct buf enc;
	long pid = -1;

	out->slot = -1;
	out->listen_fd = -1;
	out->exec_fd = out->oom_fd = -1;
	out->stack = NULL;
	for (i = 0; i < INIT_FD_COUNT + SANDBOX_MAX_BINDS; i++)
		args.fds[i] = -1;
	args.nfds = INIT_FD_COUNT;
	slot = uidslot_acquire(&mode.uid_base);
	if (slot < 0) {
		r = slot;
		if (r == -EAGAIN)
			snprintf(err, errlen,
				 "no free host uid slot: every one is in use "
				 "by a live sandbox (see --uid-slots)");
		else
			snprintf(err, errlen, "cannot take a host uid slot: %s",
				 strerror(-r));
		goto out;
	}
	if (spec->nbinds > SANDBOX_MAX_BINDS) {
		r = -E2BIG;
		snprintf(err, errlen, "too many binds (at most %d)",
			 SANDBOX_MAX_BINDS);
		goto out;
	}
	/* Bind sources are taken here, as host root: init, an unprivileged
	 * uid on the host, may not be able to walk to them. A detached copy
	 * of the mount (open_tree) can be attached in init's namespace;
	 * without open_tree, init falls back to the source's path. */
	for (i = 0; i < (int)spec->nbinds; i++) {
		int fd = (int)syscall(
			SYS_open_tree, AT_FDCWD, spec->binds[i].src,
			OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);

		if (fd < 0 && errno == ENOSYS)
			fd = open(spec->binds[i].src, O_PATH | O_CLOEXEC);

		if (fd < 0) {
			r = -errno;
			snprintf(err, errlen, "cannot bind '%s': %s",
				 spec->binds[i].src, strerror(-r));
			goto out;
		}
		args.fds[args.nfds++] = fd;
	}
	buf_init(&enc);
	wire_encode_spec(&enc, spec, &mode);
	r = memfd_with("sbx-spec", enc.data, enc.len);
	buf_release(&enc);
	if (r < 0) {
		snprintf(err, errlen, "cannot write the sandbox spec: %s",
			 strerror(-r));
		goto out;
	}
	args.fds[INIT_FD_SPEC] = r;
	r = open_stdin(spec);
	if (r < 0) {
		snprintf(err, errlen, "cannot open stdin: %s", strerror(-r));
		goto out;
	}
	args.fds[0] = r;
	/* A socketpair: stateful sandboxes take commands on it too. */
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, status_pipe) <
		    0 ||
	    pipe2(sync_pipe, O_CLOEXEC) < 0 ||
	    pipe2(exec_pipe, O_CLOEXEC) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot create pipes: %s", strerror(-r));
		goto out;
	}
	stack = mmap(NULL, CHILD_STACK_SIZE, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	if (stack == MAP_FAILED) {
		r = -errno;
		snprintf(err, errlen, "cannot map a stack: %s", strerror(-r));
		goto out;
	}
	/* Init relays each step's output on the status pipe; its own
	 * stdout and stderr lead nowhere. */
	args.fds[1] = open("/dev/null", O_WRONLY | O_CLOEXEC);
	args.fds[2] = fcntl(args.fds[1], F_DUPFD_CLOEXEC, 0);
	args.fds[INIT_FD_STATUS] = status_pipe[1];
	args.fds[INIT_FD_EXE] = sandbox_host.exe_fd;
	args.sync_fd = sync_pipe[0];
	args.sync_wfd = sync_pipe[1];
	args.exec_wfd = exec_pipe[1];

	pid = do_clone(&args, mode.uid_base, &pidfd, stack);
	if (pid < 0) {
		r = (int)pid;
		snprintf(err, errlen, "cannot create namespaces: %s",
			 strerror(-r));
		goto out;
	}
	fd_close(&sync_pipe[0]);
	fd_close(&exec_pipe[1]);
	if (mode.userns) {
		r = userns_write_maps((pid_t)pid, mode.uid_base, err, errlen);
		if (r)
			goto out_kill;
	}
	if (cg) {
		r = cgroup_attach(cg, (pid_t)pid);
		if (r) {
			snprintf(err, errlen, "cannot attach to cgroup: %s",
				 strerror(-r));
			goto out_kill;
		}
	}
	/* Before init runs on: the listener is there before any command. */
	if (spec->listen_port)
		out->listen_fd =
			listen_in_sandbox((pid_t)pid, pidfd, spec->listen_port);
	/* Opened now, written once init runs (spawn_exec_done()): the child
	 * cannot be reaped, nor its pid reused, before we reap it. */
	snprintf(path, sizeof(path), "/proc/%ld/oom_score_adj", pid);
	oom_fd = open(path, O_WRONLY | O_CLOEXEC);
	if (write(sync_pipe[1], "g", 1) != 1) {
		r = -errno;
		snprintf(err, errlen, "cannot start the sandbox: %s",
			 strerror(-r));
		goto out_kill;
	}

	out->pid = (pid_t)pid;
	out->pidfd = pidfd;
	out->status_fd = status_pipe[0];
	out->slot = slot;
	out->exec_fd = exec_pipe[0];
	out->oom_fd = oom_fd;
	out->stack = stack;
	status_pipe[0] = -1;
	exec_pipe[0] = -1;
	oom_fd = -1;
	stack = MAP_FAILED;
	pidfd = -1;
	slot = -1;
	r = 0;
	goto out;
out_kill:
	if (out->listen_fd >= 0)
		fd_close(&out->listen_fd);
	/* Reaped here: its pid namespace is gone with it, so the slot is
	 * free again (the cgroup, the caller's, is empty). */
	syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
	syscall(SYS_waitid, P_PIDFD, pidfd, NULL, WEXITED, NULL);
out:
	uidslot_release(slot, true);
	child_fds_close(&args);
	fd_close(&status_pipe[0]);
	fd_close(&sync_pipe[0]);
	fd_close(&sync_pipe[1]);
	fd_close(&exec_pipe[0]);
	fd_close(&exec_pipe[1]);
	fd_close(&oom_fd);
	fd_close(&pidfd);
	/* On failure the child was reaped or never made: off our stack. */
	if (stack != MAP_FAILED)
		munmap(stack, CHILD_STACK_SIZE);
	return r;
}

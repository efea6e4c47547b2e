/*
 * PID 1 of a forked run: the process a reusable warm sandbox clones into
 * fresh pid, mount and IPC namespaces for each step (init for any command,
 * the forking Python zygote for Python, src/pyext/zygote.c). It gives the
 * run a /proc of its own pid namespace, forks the program, reaps until the
 * program has ended, kills what is left, reports the program's wait status
 * and exits; the kernel then kills anything else in the namespace.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/util.h"
#include "sandbox/internal.h"
#include "base/banned.h"

int runinit_proc(char *what, size_t whatlen)
{
	int r;

	/* Made on /tmp (the mount namespace is the run's own), covered
	 * with the masks of the sandbox's /proc, then moved over it. */
	if (mount("proc", "/tmp", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
		  NULL) < 0) {
		snprintf(what, whatlen, "cannot mount '/proc'");
		return -errno;
	}
	r = procmask_copy("/proc", "/tmp", what, whatlen);
	if (r)
		return r;
	if (mount("/tmp", "/proc", NULL, MS_MOVE, NULL) < 0) {
		snprintf(what, whatlen, "cannot mount '/proc'");
		return -errno;
	}
	return 0;
}

void runinit_fail(int report_fd, int err_fd, const char *what, int err)
{
	char line[400];
	int32_t status = 127 << 8;

	snprintf(line, sizeof(line), "sbx: %s: %s\n", what, strerror(err));
	if (err_fd >= 0)
		write_full(err_fd, line, strlen(line));
	write_full(report_fd, &status, sizeof(status));
	_exit(0);
}

void runinit_reap(pid_t prog, int report_fd)
{
	int32_t status = SIGKILL;
	sigset_t none;
	pid_t p;
	int i, st;

	prctl(PR_SET_NAME, "sbx-init", 0, 0, 0);
	/* As PID 1 with default actions, nothing in the run can signal this
	 * process; init (outside) still can. */
	for (i = 1; i < NSIG; i++)
		signal(i, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (;;) {
		p = waitpid(-1, &st, 0);
		if (p < 0 && errno == EINTR)
			continue;
		if (p < 0)
			break;
		if (p == prog) {
			status = st;
			/* The program has ended: so has the run. */
			kill(-1, SIGKILL);
		}
	}
	write_full(report_fd, &status, sizeof(status));
	_exit(0);
}

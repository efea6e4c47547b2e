/*
 * sbx check: what this host supports, what sbx falls back to, and a real
 * trial sandbox. Exits 1 when sandboxes cannot be made safely.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/util.h"
#include "cli/cli.h"
#include "sandbox/cgroup.h"
#include "sandbox/gpu.h"
#include "sandbox/internal.h"
#include "sandbox/uidslot.h"
#include "sandbox/sandbox.h"
#include "base/banned.h"

static int problems;

static void line(const char *what, bool ok, const char *detail, bool essential)
{
	printf("%-22s %-4s %s\n", what, ok ? "yes" : "no", detail);
	if (!ok && essential)
		problems++;
}

/* The NVIDIA GPUs sandboxes may ask for ("gpus"), one line each. */
static void gpu_check(void)
{
	const struct gpu_host *h = gpu_host_get();
	char desc[512];

	if (!h->ngpus) {
		snprintf(desc, sizeof(desc),
			 "none (no /dev/nvidia<N> under '%.200s/dev'); "
			 "\"gpus\" requests are refused",
			 h->root);
		line("GPUs", false, desc, false);
		return;
	}
	{
		size_t nctl = 0, nlib = 0, nbin = 0;

		while (h->ctl && h->ctl[nctl])
			nctl++;
		while (h->libs && h->libs[nlib])
			nlib++;
		while (h->bins && h->bins[nbin])
			nbin++;
		snprintf(desc, sizeof(desc),
			 "%zu; %zu control node%s, %zu driver librar%s, "
			 "%zu tool%s",
			 h->ngpus, nctl, nctl == 1 ? "" : "s", nlib,
			 nlib == 1 ? "y" : "ies", nbin, nbin == 1 ? "" : "s");
	}
	line("GPUs", true, desc, false);
	for (size_t i = 0; i < h->ngpus; i++) {
		const struct gpu *g = &h->gpus[i];
		char what[32];

		snprintf(what, sizeof(what), "  GPU %u", g->minor);
		snprintf(desc, sizeof(desc), "%s%s%s%s%s",
			 g->model[0] ? g->model : "(model unknown)",
			 g->uuid[0] ? " " : "", g->uuid, g->bus[0] ? " " : "",
			 g->bus);
		line(what, true, desc, false);
	}
}

/* Tries to unshare the given namespaces in a throwaway child. */
static bool can_unshare(int flags)
{
	int st;
	pid_t pid = fork();

	if (pid < 0)
		return false;
	if (pid == 0)
		_exit(unshare(flags) == 0 ? 0 : 1);
	if (waitpid(pid, &st, 0) < 0)
		return false;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static bool has_pidfd(void)
{
	int fd = (int)syscall(SYS_pidfd_open, getpid(), 0);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

static bool has_openat2(void)
{
	struct open_how how = {.flags = O_RDONLY | O_CLOEXEC,
			       .resolve = RESOLVE_BENEATH};
	int fd = (int)syscall(SYS_openat2, AT_FDCWD, ".", &how, sizeof(how));

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

static bool has_seccomp(void)
{
	return prctl(PR_GET_SECCOMP, 0, 0, 0, 0) >= 0 &&
	       access("/proc/sys/kernel/seccomp/actions_avail", R_OK) == 0;
}

/* What a crash in a sandbox can start on the host. Sandboxes run with
 * RLIMIT_CORE fixed at 1, which the kernel takes as "no core file" and as
 * its guard against recursive crashes, so a pipe helper (run as host root)
 * is never started; a coredump socket ('@', Linux 6.16) is not covered by
 * that guard, so its server gets every sandbox crash. */
static void core_pattern_line(void)
{
	char pat[256], detail[400];
	ssize_t n =
		read_file("/proc/sys/kernel/core_pattern", pat, sizeof(pat));

	if (n <= 0) {
		line("core dumps", true, "core_pattern unreadable", false);
		return;
	}
	pat[strcspn(pat, "\n")] = '\0';
	if (pat[0] == '|')
		snprintf(detail, sizeof(detail),
			 "pipe to '%.200s': never started by a sandbox "
			 "crash (RLIMIT_CORE is fixed at 1)",
			 pat + 1);
	else if (pat[0] == '@')
		snprintf(detail, sizeof(detail),
			 "socket '%.200s': the kernel sends it sandbox crashes "
			 "too (RLIMIT_CORE does not stop them)",
			 pat);
	else
		snprintf(detail, sizeof(detail),
			 "file '%.200s': none below a page (RLIMIT_CORE is 1)",
			 pat);
	line("core dumps", pat[0] != '@', detail, false);
}

int cmd_check(int argc, char **argv)
{
	char err[256], desc[1024];
	struct sandbox_spec spec;
	struct sandbox_result res;
	static char *const trial[] = {"/bin/true", NULL};
	bool userns, ok, root;
	uint64_t t0;

	if (argc > 1 &&
	    (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		puts("usage: sbx check\n\nPrints what this host supports and "
		     "runs a trial sandbox; exits 1 when\nsandboxes cannot "
		     "be made safely.");
		return 0;
	}
	if (argc > 1) {
		fprintf(stderr, "sbx check: unexpected argument '%s'\n",
			argv[1]);
		return EXIT_USAGE;
	}
	root = geteuid() == 0;
	line("root", root,
	     root ? "sbx needs root to create sandboxes"
		  : "sbx needs root to create sandboxes: run it as root "
		    "(sudo sbx check)",
	     true);
	userns = can_unshare(CLONE_NEWUSER);
	line("user namespaces", userns,
	     userns ? "sandbox root maps to an unprivileged host uid"
		    : "fallback: init runs as host root, the command as an "
		      "unprivileged host uid",
	     false);
	if (root) {
		ok = can_unshare(CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET |
				 CLONE_NEWIPC | CLONE_NEWUTS);
		line("pid/mount/net/ipc/uts", ok, "namespaces", true);
		ok = can_unshare(CLONE_NEWCGROUP);
		line("cgroup namespace", ok, "", true);
	} else {
		/* Only root may make these namespaces outside a user
		 * namespace: not being root is the problem, said above. */
		printf("%-22s %-4s %s\n", "pid/mount/net/ipc/uts", "?",
		       "namespaces: not tested, only root can make them");
		printf("%-22s %-4s %s\n", "cgroup namespace", "?",
		       "not tested, only root can make it");
	}
	line("seccomp", has_seccomp(), "syscall filter (libseccomp)", true);
	line("pidfd", has_pidfd(), "event-driven supervision", true);
	line("openat2", has_openat2(),
	     "RESOLVE_BENEATH for file access inside sandboxes", false);
	core_pattern_line();
	fflush(stdout);

	if (sandbox_host_init(err, sizeof(err))) {
		printf("%-22s %-4s %s\n", "sandbox host", "no", err);
		if (!root)
			printf("\nsbx needs root: run sbx check as root\n");
		return 1;
	}
	uidslot_describe(desc, sizeof(desc));
	line("host uid slots", true, desc, false);
	cgroup_host_describe(&sandbox_host.cg, desc, sizeof(desc));
	fputs(desc, stdout);
	if (!sandbox_host.cg.has_memory || !sandbox_host.cg.has_pids) {
		printf("%-22s %-4s %s\n", "cgroup limits", "no",
		       "memory and process limits cannot be enforced");
		problems++;
	}
	if (sandbox_host.cg.has_memory && !sandbox_host.cg.has_swap_limit)
		printf("%-22s %-4s %s\n", "swap limit", "no",
		       "fallback: swappiness 0 in each sandbox's cgroup");

	gpu_check();

	sandbox_spec_init(&spec);
	sandbox_spec_set_argv(&spec, trial);
	t0 = now_ns();
	sandbox_run(&spec, NULL, NULL, &res);
	if (res.status == SANDBOX_OK) {
		snprintf(desc, sizeof(desc), "ran /bin/true in %.1f ms",
			 (double)(now_ns() - t0) / 1e6);
		line("trial sandbox", true, desc, true);
	} else {
		snprintf(desc, sizeof(desc), "%s%s%s",
			 sandbox_status_name(res.status),
			 res.error[0] ? ": " : "", res.error);
		line("trial sandbox", false, desc, true);
	}
	sandbox_result_release(&res);
	sandbox_spec_release(&spec);
	sandbox_host_release();
	if (problems) {
		printf("\nsandboxes cannot be made safely on this host "
		       "(%d problem%s above)\n",
		       problems, problems == 1 ? "" : "s");
		return 1;
	}
	printf("\nsandboxes can be made safely on this host\n");
	return 0;
}

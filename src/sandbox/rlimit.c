/*
 * Per-process limits: file size, open files, no core dumps, and a CPU
 * backstop. RLIMIT_CORE is 1, not 0: the kernel writes no core file below
 * a page, and 1 is also its guard against recursive crashes, so a pipe
 * core_pattern helper (which runs as host root) is never started either;
 * the seccomp filter keeps it from being changed. Processes and memory are
 * the cgroup's job; RLIMIT_NPROC is per host uid and would be shared by
 * every sandbox, so it is not used.
 */
#include <errno.h>
#include <stdio.h>
#include <sys/resource.h>

#include "base/util.h"
#include "sandbox/internal.h"
#include "base/banned.h"

static int set(int resource, const char *name, rlim_t soft, rlim_t hard,
	       struct child_err *ce)
{
	struct rlimit rl = {.rlim_cur = soft, .rlim_max = hard};

	if (setrlimit(resource, &rl) < 0) {
		snprintf(ce->what, sizeof(ce->what), "cannot set %s", name);
		return -errno;
	}
	return 0;
}

int rlimit_setup_child(const struct sandbox_limits *lim, struct child_err *ce)
{
	int r;

	r = set(RLIMIT_CORE, "RLIMIT_CORE", 1, 1, ce);
	if (!r && lim->fsize_bytes)
		r = set(RLIMIT_FSIZE, "RLIMIT_FSIZE", lim->fsize_bytes,
			lim->fsize_bytes, ce);
	if (!r && lim->nofile)
		r = set(RLIMIT_NOFILE, "RLIMIT_NOFILE", lim->nofile,
			lim->nofile, ce);
	/* Each process's own CPU time can never exceed the sandbox total:
	 * a backstop for hosts without CPU accounting. */
	if (!r && lim->cpu_ms) {
		rlim_t secs = (lim->cpu_ms + 999) / 1000;

		r = set(RLIMIT_CPU, "RLIMIT_CPU", secs, secs + 1, ce);
	}
	return r;
}

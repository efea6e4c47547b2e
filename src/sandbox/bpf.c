/*
 * The compiled seccomp program, child side: installing it needs nothing
 * but the kernel, so init carries no filter compiler.
 */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdlib.h>
#include <sys/prctl.h>

#include "sandbox/internal.h"
#include "base/banned.h"

int seccomp_prog_load(const struct seccomp_prog *prog)
{
	struct sock_fprog fprog = {
		.len = (unsigned short)(prog->len / sizeof(struct sock_filter)),
		.filter = (struct sock_filter *)(void *)prog->data,
	};

	if (!prog->len || prog->len % sizeof(struct sock_filter) ||
	    prog->len / sizeof(struct sock_filter) > BPF_MAXINSNS)
		return -EINVAL;
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog, 0, 0) < 0)
		return -errno;
	return 0;
}

void seccomp_prog_release(struct seccomp_prog *prog)
{
	free(prog->data);
	prog->data = NULL;
	prog->len = 0;
}

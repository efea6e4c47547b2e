/*
 * The host-side step that creates a sandbox's namespaces and starts its
 * init. Used by supervise.c; separate so the privileged core of sbx fits
 * on a few screens.
 */
#ifndef SBX_SPAWN_H
#define SBX_SPAWN_H

#include <stddef.h>
#include <sys/types.h>

#include "sandbox/cgroup.h"
#include "sandbox/sandbox.h"

struct spawn_result {
	pid_t pid;
	int pidfd;
	int status_fd; /* read end, CLOEXEC, owned by the caller */
	int slot;      /* host uid slot: the caller releases it when the
			* sandbox is gone (uidslot_release) */
	int listen_fd; /* spec->listen_port's listener (the caller's), or
			* -errno; -1 when none was asked for */
};

/* Takes a host uid slot, clones the sandbox, attaches it to cg (may be
 * NULL) and lets it run. Returns 0 and fills out, or -errno with the reason
 * in err (-EAGAIN: no free uid slot); nothing is left running on
 * failure. */
int spawn_sandbox(const struct sandbox_spec *spec, const struct cgroup *cg,
		  struct spawn_result *out, char *err, size_t errlen);

#endif

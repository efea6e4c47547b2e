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
	/* Until init runs, the child runs on a stack in our memory: exec_fd
	 * (CLOEXEC) reads EOF once it has executed init or died; then
	 * spawn_exec_done() frees the stack and shields init from the OOM
	 * killer (through oom_fd). */
	int exec_fd;
	int oom_fd;
	void *stack;
};

/* Takes a host uid slot, clones the sandbox, attaches it to cg (may be
 * NULL) and lets it run. Returns 0 and fills out, or -errno with the reason
 * in err (-EAGAIN: no free uid slot); nothing is left running on
 * failure. */
int spawn_sandbox(const struct sandbox_spec *spec, const struct cgroup *cg,
		  struct spawn_result *out, char *err, size_t errlen);

/* For a sandbox whose spec binds device nodes (GPUs): lets its cgroup cg
 * (NULL when the host has none) open only the nodes its /dev holds, making
 * name in the v1 devices hierarchy. Those are the standard nodes mnt.c
 * binds (as the host has them), the sandbox's own ptmx and pty terminals
 * and the nodes spec binds (stat() of each source). A spec without device
 * binds costs nothing. Returns 0 or -errno with the reason in err; a
 * sandbox with device binds must not start without its rules. */
int spawn_limit_devices(const struct sandbox_spec *spec, struct cgroup *cg,
			const char *name, char *err, size_t errlen);

/* Once out->exec_fd reads EOF, or the child is known to be gone (reaped):
 * frees its stack, sets init's oom_score_adj to -1000 and closes exec_fd
 * and oom_fd. Calling it while the child may still be on its stack would
 * pull the stack from under it. Safe to call again, and on a result whose
 * exec_fd and oom_fd are -1 and stack NULL. */
void spawn_exec_done(struct spawn_result *out);

#endif

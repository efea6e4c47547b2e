/*
 * The syscall filter: everything is allowed except the calls that reach
 * kernel attack surface a sandboxed program has no use for (tracing,
 * mounting, namespaces, bpf, perf, userfaultfd, io_uring, keys, kexec,
 * modules), terminal injection, raw and packet sockets, and every non-native
 * ABI (int 0x80, x32). clone3 answers ENOSYS so libc falls back to clone,
 * whose flags the filter can see.
 */
#include <errno.h>
#include <linux/sched.h>
#include <sched.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/util.h"
#include "sandbox/internal.h"
#include "base/banned.h"

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

static const char *const denied[] = {
	"ptrace",
	"process_vm_readv",
	"process_vm_writev",
	"kcmp",
	"pidfd_getfd",
	"mount",
	"umount",
	"umount2",
	"pivot_root",
	"chroot",
	"unshare",
	"setns",
	"fsopen",
	"fsconfig",
	"fsmount",
	"fspick",
	"move_mount",
	"open_tree",
	"mount_setattr",
	"open_by_handle_at",
	"name_to_handle_at",
	"bpf",
	"perf_event_open",
	"userfaultfd",
	"io_uring_setup",
	"io_uring_enter",
	"io_uring_register",
	"keyctl",
	"add_key",
	"request_key",
	"kexec_load",
	"kexec_file_load",
	"init_module",
	"finit_module",
	"delete_module",
	"swapon",
	"swapoff",
	"reboot",
	"acct",
	"syslog",
	"quotactl",
	"quotactl_fd",
	"lookup_dcookie",
	"fanotify_init",
	"vhangup",
	"uselib",
	"iopl",
	"ioperm",
	"settimeofday",
	"clock_settime",
	"clock_adjtime",
	"adjtimex",
	"nfsservctl",
	"personality",
};

static const unsigned long clone_ns_flags[] = {
	CLONE_NEWUSER, CLONE_NEWNS,  CLONE_NEWPID,    CLONE_NEWNET,
	CLONE_NEWIPC,  CLONE_NEWUTS, CLONE_NEWCGROUP, CLONE_NEWTIME,
};

int seccomp_prog_build(struct seccomp_prog *prog, char *err, size_t errlen)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	const char *step = "seccomp_init";
	int r = -ENOMEM, fd = -1;
	struct stat st;
	size_t i;

	prog->data = NULL;
	prog->len = 0;
	if (!ctx)
		goto fail;
	/* Syscalls of other ABIs answer ENOSYS, so "int 0x80" fails
	 * cleanly instead of bypassing the rules below. */
	step = "seccomp badarch";
	r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH,
			     SCMP_ACT_ERRNO(ENOSYS));
	if (r)
		goto fail;
	/* A binary tree of syscall numbers: every syscall the sandbox
	 * makes pays for the filter. */
	seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
	step = "seccomp deny list";
	for (i = 0; i < ARRAY_SIZE(denied); i++) {
		int nr = seccomp_syscall_resolve_name(denied[i]);

		if (nr == __NR_SCMP_ERROR)
			continue; /* unknown to this libseccomp: absent */
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
		if (r)
			goto fail;
	}
	step = "seccomp clone3";
	r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
	if (r)
		goto fail;
	step = "seccomp clone flags";
	for (i = 0; i < ARRAY_SIZE(clone_ns_flags); i++) {
		r = seccomp_rule_add(
			ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
			SCMP_A0(SCMP_CMP_MASKED_EQ, clone_ns_flags[i],
				clone_ns_flags[i]));
		if (r)
			goto fail;
	}
	/* The kernel compares only the low 32 bits of the ioctl request, so
	 * the rule must too (TIOCSTI | 1 << 32 is still TIOCSTI). */
	step = "seccomp ioctl";
	r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
			     SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, TIOCSTI));
	if (!r)
		r = seccomp_rule_add(
			ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
			SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, TIOCLINUX));
	if (r)
		goto fail;
	step = "seccomp socket";
	r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT),
			     SCMP_SYS(socket), 1,
			     SCMP_A0(SCMP_CMP_EQ, AF_PACKET));
	if (!r)
		r = seccomp_rule_add(
			ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(socket), 1,
			SCMP_A1(SCMP_CMP_MASKED_EQ, 0xf, SOCK_RAW));
	if (r)
		goto fail;
	/* libseccomp 2.5 exports only to an fd. */
	step = "seccomp export";
	fd = memfd_create("sbx-seccomp", MFD_CLOEXEC);
	r = fd < 0 ? -errno : seccomp_export_bpf(ctx, fd);
	if (!r && (fstat(fd, &st) < 0 || st.st_size <= 0 || st.st_size % 8 ||
		   lseek(fd, 0, SEEK_SET) < 0))
		r = -EIO;
	if (r)
		goto fail;
	prog->data = xmalloc((size_t)st.st_size);
	if (read_full(fd, prog->data, (size_t)st.st_size) != st.st_size) {
		r = -EIO;
		goto fail;
	}
	prog->len = (size_t)st.st_size;
	fd_close(&fd);
	seccomp_release(ctx);
	return 0;
fail:
	snprintf(err, errlen, "cannot build the seccomp filter (%s): %s", step,
		 strerror(r < 0 ? -r : ENOMEM));
	fd_close(&fd);
	seccomp_prog_release(prog);
	if (ctx)
		seccomp_release(ctx);
	return r < 0 ? r : -ENOMEM;
}

/*
 * The syscall filter: everything is allowed except the calls that reach
 * kernel attack surface a sandboxed program has no use for (tracing,
 * mounting, namespaces, bpf, perf, userfaultfd, io_uring, keys, kexec,
 * modules, LDT, LSM attributes), terminal injection, and every non-native
 * ABI (int 0x80, x32). clone3 answers ENOSYS so libc falls back to clone,
 * whose flags the filter can see; so do syscall numbers newer than this
 * list, until someone has looked at them.
 *
 * Sockets are an allow-list of families: unix, inet and inet6 (common
 * protocols, no raw or packet types) and netlink route, which `ip` uses.
 * Every other family (vsock, which ignores network namespaces, among them)
 * fails with EAFNOSUPPORT, so the kernel never even loads its module.
 *
 * RLIMIT_CORE cannot be changed: it is 1, which makes the kernel refuse
 * both core files (below a page) and core_pattern pipe helpers (its
 * recursion guard), so no crash in a sandbox starts a helper on the host.
 */
#include <errno.h>
#include <linux/sched.h>
#include <sched.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
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
#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif

/* Syscalls libseccomp 2.5 has no name for. Numbers from 424 on are the
 * same on every architecture. */
static const int denied_nr[] = {
	457, /* statmount */
	458, /* listmount */
	459, /* lsm_get_self_attr */
	460, /* lsm_set_self_attr */
	461, /* lsm_list_modules */
	467, /* open_tree_attr */
	470, /* listns */
};

/* Numbers past the newest syscall this filter has been reviewed against
 * answer ENOSYS, so a newer kernel's additions stay closed until then. */
#define NR_REVIEWED_LAST 470
#define NR_FUTURE_LAST 511

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
	"modify_ldt",
	"process_madvise",
};

/* Allowed arguments, each list sorted; everything between is refused. */
static const uint64_t socket_families[] = {AF_UNIX, AF_INET, AF_INET6,
					   AF_NETLINK};
static const uint64_t inet_protocols[] = {
	0,
	IPPROTO_ICMP,
	IPPROTO_TCP,
	IPPROTO_UDP,
	IPPROTO_ICMPV6,
	IPPROTO_UDPLITE,
	IPPROTO_MPTCP,
};
static const uint64_t netlink_protocols[] = {NETLINK_ROUTE};
static const uint64_t socketpair_families[] = {AF_UNIX};
/* personality(): the query and plain Linux; no flag that weakens ASLR or
 * makes data executable. */
static const uint64_t personalities[] = {0, 0xffffffffu};

static const unsigned long clone_ns_flags[] = {
	CLONE_NEWUSER, CLONE_NEWNS,  CLONE_NEWPID,    CLONE_NEWNET,
	CLONE_NEWIPC,  CLONE_NEWUTS, CLONE_NEWCGROUP, CLONE_NEWTIME,
};

/* Adds one rule per aligned block of [lo, hi] for argument arg (plus an
 * optional condition on another argument), so the rule set matches
 * exactly that range of 64-bit values. */
static int deny_range(scmp_filter_ctx ctx, uint32_t action, int nr,
		      unsigned arg, uint64_t lo, uint64_t hi,
		      const struct scmp_arg_cmp *also)
{
	int r = 0;

	while (!r && lo <= hi) {
		struct scmp_arg_cmp cmp[2];
		uint64_t size = 1;

		if (hi == UINT64_MAX && lo) {
			cmp[0] = (struct scmp_arg_cmp){arg, SCMP_CMP_GE, lo, 0};
			size = 0; /* the rest, in one rule */
		} else {
			while (!(lo & size) && lo + size * 2 - 1 <= hi &&
			       size << 1)
				size <<= 1;
			cmp[0] = (struct scmp_arg_cmp){arg, SCMP_CMP_MASKED_EQ,
						       ~(size - 1), lo};
		}
		if (also)
			cmp[1] = *also;
		r = seccomp_rule_add_array(ctx, action, nr, also ? 2 : 1, cmp);
		if (size == 0 || lo + (size - 1) == hi)
			break;
		lo += size;
	}
	return r;
}

/* Refuses every value of argument arg that is not in allowed (sorted). */
static int allow_only(scmp_filter_ctx ctx, uint32_t action, int nr,
		      unsigned arg, const uint64_t *allowed, size_t n,
		      const struct scmp_arg_cmp *also)
{
	uint64_t next = 0; /* lowest value not yet decided */
	size_t i;
	int r = 0;

	for (i = 0; !r && i < n; i++) {
		if (allowed[i] > next)
			r = deny_range(ctx, action, nr, arg, next,
				       allowed[i] - 1, also);
		if (allowed[i] == UINT64_MAX)
			return r;
		next = allowed[i] + 1;
	}
	if (!r)
		r = deny_range(ctx, action, nr, arg, next, UINT64_MAX, also);
	return r;
}

static int socket_rules(scmp_filter_ctx ctx)
{
	const struct scmp_arg_cmp netlink = SCMP_A0(SCMP_CMP_EQ, AF_NETLINK);
	const struct scmp_arg_cmp inet = SCMP_A0(SCMP_CMP_EQ, AF_INET);
	const struct scmp_arg_cmp inet6 = SCMP_A0(SCMP_CMP_EQ, AF_INET6);
	int r;

	r = allow_only(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socket), 0,
		       socket_families, ARRAY_SIZE(socket_families), NULL);
	if (!r)
		r = allow_only(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT),
			       SCMP_SYS(socketpair), 0, socketpair_families,
			       ARRAY_SIZE(socketpair_families), NULL);
	if (!r)
		r = allow_only(ctx, SCMP_ACT_ERRNO(EPROTONOSUPPORT),
			       SCMP_SYS(socket), 2, netlink_protocols,
			       ARRAY_SIZE(netlink_protocols), &netlink);
	if (!r)
		r = allow_only(ctx, SCMP_ACT_ERRNO(EPROTONOSUPPORT),
			       SCMP_SYS(socket), 2, inet_protocols,
			       ARRAY_SIZE(inet_protocols), &inet);
	if (!r)
		r = allow_only(ctx, SCMP_ACT_ERRNO(EPROTONOSUPPORT),
			       SCMP_SYS(socket), 2, inet_protocols,
			       ARRAY_SIZE(inet_protocols), &inet6);
	/* The type carries SOCK_CLOEXEC and SOCK_NONBLOCK above its low
	 * four bits. Netlink sockets are SOCK_RAW by nature; AF_INET with
	 * SOCK_PACKET is a packet socket in disguise. */
	if (!r)
		r = seccomp_rule_add(
			ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(socket), 2,
			SCMP_A0(SCMP_CMP_NE, AF_NETLINK),
			SCMP_A1(SCMP_CMP_MASKED_EQ, 0xf, SOCK_RAW));
	if (!r)
		r = seccomp_rule_add(
			ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(socket), 1,
			SCMP_A1(SCMP_CMP_MASKED_EQ, 0xf, SOCK_PACKET));
	return r;
}

/* RLIMIT_CORE stays at the 1 init set: lowering it to 0 would let a
 * crash start a core_pattern pipe helper as host root. The resource is
 * an unsigned int, so only the low 32 bits count. */
static int rlimit_rules(scmp_filter_ctx ctx)
{
	int r;

	r = seccomp_rule_add(
		ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(setrlimit), 1,
		SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu, RLIMIT_CORE));
	if (!r)
		r = seccomp_rule_add(
			ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(prlimit64), 2,
			SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, RLIMIT_CORE),
			SCMP_A2(SCMP_CMP_NE, 0));
	return r;
}

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
	for (i = 0; i < ARRAY_SIZE(denied_nr); i++) {
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), denied_nr[i],
				     0);
		if (r)
			goto fail;
	}
	step = "seccomp future syscalls";
	for (i = NR_REVIEWED_LAST + 1; i <= NR_FUTURE_LAST; i++) {
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), (int)i, 0);
		if (r)
			goto fail;
	}
	step = "seccomp personality";
	r = allow_only(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(personality), 0,
		       personalities, ARRAY_SIZE(personalities), NULL);
	if (r)
		goto fail;
	step = "seccomp rlimit";
	r = rlimit_rules(ctx);
	if (r)
		goto fail;
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
	r = socket_rules(ctx);
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

/*
 * What every sandbox's /proc hides: entries made read-only, host-wide
 * figures covered by empty files, and generated meminfo, stat and loadavg.
 * Init applies it to the /proc it mounts when it builds the view
 * (mnt.c), and a forking zygote's run applies it to the /proc of the run's
 * own pid namespace (src/pyext/zygote.c), copying the masks of the
 * sandbox's /proc.
 */
#include <errno.h>
#include <limits.h>
#include <linux/mount.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/util.h"
#include "sandbox/internal.h"
#include "base/banned.h"

#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif

/* /proc entries that become read-only. */
static const char *const proc_ro[] = {
	"sys", "sysrq-trigger", "irq", "bus", "fs",
};
/* Host-wide figures and kernel internals a program has no need for: they
 * fingerprint the host, and counters that other tenants move (load,
 * pressure, interrupts, memory, locks) are channels between sandboxes.
 * Each becomes an empty read-only file. */
static const char *const proc_masked[] = {
	"kcore",
	"keys",
	"key-users",
	"timer_list",
	"sched_debug",
	"kallsyms",
	"kmsg",
	"config.gz",
	"vmstat",
	"zoneinfo",
	"slabinfo",
	"vmallocinfo",
	"interrupts",
	"softirqs",
	"diskstats",
	"partitions",
	"swaps",
	"schedstat",
	"locks",
	"buddyinfo",
	"pagetypeinfo",
	"iomem",
	"ioports",
	"modules",
	"latency_stats",
	"timer_stats",
	"kpagecount",
	"kpageflags",
	"kpagecgroup",
	"mtrr",
	"cmdline",
	"sys/fs/file-nr",
	"sys/fs/inode-nr",
	"sys/fs/inode-state",
	"sys/fs/dentry-state",
	"sys/kernel/random/boot_id",
};
/* Directories of such figures, shown empty. */
static const char *const proc_masked_dirs[] = {
	"pressure",
	"acpi",
	"scsi",
};
/* Generated files, from src[PROCMASK_MEMINFO...]. */
static const struct {
	int src;
	const char *name;
} proc_generated[] = {
	{PROCMASK_MEMINFO, "meminfo"},
	{PROCMASK_STAT, "stat"},
	{PROCMASK_LOADAVG, "loadavg"},
};

struct procmask_attr {
	uint64_t attr_set, attr_clr, propagation, userns_fd;
};

static int read_only(const char *path)
{
	struct procmask_attr attr = {
		.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID |
			    MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC};

	if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) < 0)
		return -errno;
	if (syscall(SYS_mount_setattr, AT_FDCWD, path, AT_RECURSIVE, &attr,
		    sizeof(attr)) == 0)
		return 0;
	if (errno != ENOSYS)
		return -errno;
	/* Kernels before 5.12: remount the top mount only. */
	if (mount(NULL, path, NULL,
		  MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV |
			  MS_NOEXEC,
		  NULL) < 0)
		return -errno;
	return 0;
}

/* Makes the entries of proc_ro under proc read-only. */
static int read_only_entries(const char *proc, char *what, size_t whatlen)
{
	char path[PATH_MAX];
	size_t i;
	int r = 0;

	for (i = 0; !r && i < ARRAY_SIZE(proc_ro); i++) {
		snprintf(path, sizeof(path), "%s/%s", proc, proc_ro[i]);
		if (access(path, F_OK) < 0)
			continue;
		r = read_only(path);
		if (r)
			snprintf(what, whatlen,
				 "cannot make '/proc/%s' read-only",
				 proc_ro[i]);
	}
	return r;
}

/* Binds src over proc/name when that entry exists. */
static int cover(const char *proc, const char *name, const char *src,
		 char *what, size_t whatlen)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", proc, name);
	if (mount(src, path, NULL, MS_BIND, NULL) == 0 || errno == ENOENT)
		return 0;
	snprintf(what, whatlen, "cannot mask '/proc/%s'", name);
	return -errno;
}

int procmask_apply(const char *proc, const char *const src[PROCMASK_NSRC],
		   char *what, size_t whatlen)
{
	int r = read_only_entries(proc, what, whatlen);
	size_t i;

	for (i = 0; !r && i < ARRAY_SIZE(proc_masked); i++)
		r = cover(proc, proc_masked[i], src[PROCMASK_EMPTY], what,
			  whatlen);
	for (i = 0; !r && i < ARRAY_SIZE(proc_masked_dirs); i++)
		r = cover(proc, proc_masked_dirs[i], src[PROCMASK_EMPTY_DIR],
			  what, whatlen);
	for (i = 0; !r && i < ARRAY_SIZE(proc_generated); i++)
		r = cover(proc, proc_generated[i].name,
			  src[proc_generated[i].src], what, whatlen);
	return r;
}

/* Binds from/name over to/name when both exist. */
static int copy_entry(const char *from, const char *to, const char *name,
		      char *what, size_t whatlen)
{
	char src[PATH_MAX], dst[PATH_MAX];

	snprintf(src, sizeof(src), "%s/%s", from, name);
	snprintf(dst, sizeof(dst), "%s/%s", to, name);
	if (access(src, F_OK) < 0 || access(dst, F_OK) < 0)
		return 0;
	if (mount(src, dst, NULL, MS_BIND, NULL) == 0)
		return 0;
	snprintf(what, whatlen, "cannot mask '/proc/%s'", name);
	return -errno;
}

int procmask_copy(const char *from, const char *to, char *what, size_t whatlen)
{
	int r = read_only_entries(to, what, whatlen);
	size_t i;

	for (i = 0; !r && i < ARRAY_SIZE(proc_masked); i++)
		r = copy_entry(from, to, proc_masked[i], what, whatlen);
	for (i = 0; !r && i < ARRAY_SIZE(proc_masked_dirs); i++)
		r = copy_entry(from, to, proc_masked_dirs[i], what, whatlen);
	for (i = 0; !r && i < ARRAY_SIZE(proc_generated); i++)
		r = copy_entry(from, to, proc_generated[i].name, what, whatlen);
	return r;
}

/*
 * The filesystem view. Built by init inside its own mount namespace:
 *
 *   1. a scaffold tmpfs is pivoted to "/", the host's root moves to
 *      /oldroot, so every host path stays reachable as /oldroot/<path>;
 *   2. /newroot is a small tmpfs that becomes the sandbox's "/": read-only
 *      binds of the host's runtime dirs and a short list of /etc entries,
 *      generated passwd/group/hosts, a minimal /dev, a fresh /proc with its
 *      dangerous corners read-only or masked and its host-wide figures
 *      empty or generated (meminfo, stat, loadavg), and one size-limited
 *      scratch tmpfs shared by /tmp, /work, $HOME, /dev/shm and /mnt;
 *   3. a second pivot makes /newroot the root and detaches the host's tree.
 *
 * Every mount is nosuid; everything but the device nodes is nodev.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <linux/mount.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <sched.h>
#include <unistd.h>

#include "base/guest.h"
#include "base/util.h"
#include "sandbox/internal.h"
#include "base/banned.h"

#define OLD "/oldroot"
#define NEW "/newroot"
#define SCRATCH "/scratch"

#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x00000001
#define MOUNT_ATTR_NOSUID 0x00000002
#define MOUNT_ATTR_NODEV 0x00000004
#define MOUNT_ATTR_NOEXEC 0x00000008
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif

struct mnt_attr {
	uint64_t attr_set;
	uint64_t attr_clr;
	uint64_t propagation;
	uint64_t userns_fd;
};

/* Host directories shown read-only at the same place, when they exist. */
static const char *const runtime_dirs[] = {
	"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
};

/* /etc entries shown read-only (fnmatch patterns). Nothing that holds
 * secrets: no shadow, no ssh, no package-manager credentials. */
static const char *const etc_entries[] = {
	"alternatives",
	"ld.so.cache",
	"ld.so.conf",
	"ld.so.conf.d",
	"localtime",
	"timezone",
	"ssl",
	"ca-certificates",
	"ca-certificates.conf",
	"mime.types",
	"protocols",
	"services",
	"gai.conf",
	"host.conf",
	"os-release",
	"debian_version",
	"bash.bashrc",
	"profile",
	"inputrc",
	"java-*",
	"python3*",
	"perl",
	"php",
	"R",
	"mono",
	"racket",
	"ldc2.conf",
	"fonts",
	"magic",
	"magic.mime",
	"xdg",
	"mailcap",
	"environment",
	"ssl",
};

static const char *const dev_nodes[] = {
	"null", "zero", "full", "random", "urandom", "tty",
};

/* The generated /proc/meminfo, rewritten when a warm sandbox takes a run
 * with another memory limit. */
static int meminfo_fd = -1;

/* A path as the sandbox will see it. */
static const char *shown(const char *path)
{
	if (str_starts_with(path, NEW))
		path += strlen(NEW);
	else if (str_starts_with(path, OLD))
		path += strlen(OLD);
	return *path ? path : "/";
}

static int __attribute__((format(printf, 3, 4)))
fail(struct child_err *ce, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(ce->what, sizeof(ce->what), fmt, ap);
	va_end(ap);
	return -err;
}

static int set_attr(const char *path, uint64_t set, bool recursive)
{
	struct mnt_attr attr = {.attr_set = set};

	if (syscall(SYS_mount_setattr, AT_FDCWD, path,
		    recursive ? AT_RECURSIVE : 0, &attr, sizeof(attr)) == 0)
		return 0;
	if (errno != ENOSYS)
		return -errno;
	/* Kernels before 5.12: remount the top mount only. */
	if (mount(NULL, path, NULL,
		  MS_REMOUNT | MS_BIND |
			  ((set & MOUNT_ATTR_RDONLY) ? MS_RDONLY : 0) |
			  ((set & MOUNT_ATTR_NOSUID) ? MS_NOSUID : 0) |
			  ((set & MOUNT_ATTR_NODEV) ? MS_NODEV : 0) |
			  ((set & MOUNT_ATTR_NOEXEC) ? MS_NOEXEC : 0),
		  NULL) < 0)
		return -errno;
	return 0;
}

/* Binds src over dst (which must exist) with the given attributes. */
static int bind(const char *src, const char *dst, uint64_t attrs,
		struct child_err *ce)
{
	int r;

	if (mount(src, dst, NULL, MS_BIND | MS_REC, NULL) < 0)
		return fail(ce, errno, "cannot mount '%s'", shown(dst));
	r = set_attr(dst, attrs, true);
	if (r)
		return fail(ce, -r, "cannot make '%s' read-only", shown(dst));
	return 0;
}

/* Creates dir and its parents (mode 0755). */
static int mkdir_p(const char *dir)
{
	char tmp[PATH_MAX];
	char *p;

	if (!str_copy(tmp, sizeof(tmp), dir))
		return -ENAMETOOLONG;
	for (p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* Creates an empty file or directory at dst to mount src over. */
static int make_mount_point(const char *src, const char *dst)
{
	struct stat st;
	char parent[PATH_MAX];
	char *slash;
	int fd;

	if (stat(src, &st) < 0)
		return -errno;
	if (S_ISDIR(st.st_mode))
		return mkdir_p(dst);
	if (!str_copy(parent, sizeof(parent), dst))
		return -ENAMETOOLONG;
	slash = strrchr(parent, '/');
	if (slash && slash != parent) {
		int r;

		*slash = '\0';
		r = mkdir_p(parent);
		if (r)
			return r;
	}
	fd = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return errno == EEXIST ? 0 : -errno;
	fd_close(&fd);
	return 0;
}

static int write_new_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	int r;

	if (fd < 0)
		return -errno;
	r = write_full(fd, text, strlen(text));
	fd_close(&fd);
	return r;
}

static int scaffold(struct child_err *ce)
{
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return fail(ce, errno, "cannot make '%s' private", "/");
	if (mount("sbx", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV,
		  "mode=0755,size=64k,nr_inodes=64") < 0)
		return fail(ce, errno, "cannot mount the scaffold on '%s'",
			    "/tmp");
	if (mkdir("/tmp/oldroot", 0755) < 0 ||
	    mkdir("/tmp/newroot", 0755) < 0 || mkdir("/tmp/scratch", 0755) < 0)
		return fail(ce, errno, "cannot create '%s'", "/tmp/oldroot");
	if (syscall(SYS_pivot_root, "/tmp", "/tmp/oldroot") < 0)
		return fail(ce, errno, "cannot pivot to '%s'", "/tmp");
	if (chdir("/") < 0)
		return fail(ce, errno, "cannot enter '%s'", "/");
	if (mount("sbx", NEW, "tmpfs", MS_NOSUID | MS_NODEV,
		  "mode=0755,size=1m,nr_inodes=4096") < 0)
		return fail(ce, errno, "cannot mount the root tmpfs on '%s'",
			    "/");
	return 0;
}

static int runtime_binds(struct child_err *ce)
{
	char src[PATH_MAX], dst[PATH_MAX], link[PATH_MAX];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(runtime_dirs); i++) {
		struct stat st;
		ssize_t n;
		int r;

		snprintf(src, sizeof(src), OLD "%s", runtime_dirs[i]);
		snprintf(dst, sizeof(dst), NEW "%s", runtime_dirs[i]);
		if (lstat(src, &st) < 0)
			continue;
		if (S_ISLNK(st.st_mode)) {
			/* Merged /usr: /bin -> usr/bin stays a link. */
			n = readlink(src, link, sizeof(link) - 1);
			if (n < 0)
				return fail(ce, errno, "cannot read '%s'",
					    shown(src));
			link[n] = '\0';
			if (symlink(link, dst) < 0)
				return fail(ce, errno, "cannot create '%s'",
					    shown(dst));
			continue;
		}
		if (!S_ISDIR(st.st_mode))
			continue;
		r = mkdir_p(dst);
		if (r)
			return fail(ce, -r, "cannot create '%s'", shown(dst));
		r = bind(src, dst,
			 MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID |
				 MOUNT_ATTR_NODEV,
			 ce);
		if (r)
			return r;
	}
	return 0;
}

static bool etc_wanted(const char *name)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(etc_entries); i++)
		if (fnmatch(etc_entries[i], name, 0) == 0)
			return true;
	return false;
}

/* passwd and group name the sandbox user by the ids it runs as: 1000 in
 * a user namespace, its host ids without one. */
static int etc_setup(uid_t uid, gid_t gid, struct child_err *ce)
{
	char passwd[256], group[128];
	static const char hosts[] = "127.0.0.1\tlocalhost sandbox\n"
				    "::1\tlocalhost ip6-localhost\n";
	static const char nsswitch[] = "passwd: files\ngroup: files\n"
				       "shadow: files\nhosts: files dns\n";
	const struct {
		const char *name, *text;
	} generated[] = {
		{"passwd", passwd},
		{"group", group},
		{"hosts", hosts},
		{"hostname", "sandbox\n"},
		{"nsswitch.conf", nsswitch},
	};
	char src[PATH_MAX], dst[PATH_MAX];
	struct dirent *de;
	DIR *d;
	size_t i;
	int r = 0;

	snprintf(passwd, sizeof(passwd),
		 "root:x:0:0:root:/root:/bin/sh\n"
		 "sandbox:x:%u:%u:sandbox:" SANDBOX_HOME_DIR ":/bin/bash\n"
		 "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
		 (unsigned)uid, (unsigned)gid);
	snprintf(group, sizeof(group),
		 "root:x:0:\nsandbox:x:%u:\nnogroup:x:65534:\n", (unsigned)gid);
	if (mkdir(NEW "/etc", 0755) < 0)
		return fail(ce, errno, "cannot create '%s'", "/etc");
	for (i = 0; i < ARRAY_SIZE(generated); i++) {
		snprintf(dst, sizeof(dst), NEW "/etc/%s", generated[i].name);
		r = write_new_file(dst, generated[i].text);
		if (r)
			return fail(ce, -r, "cannot write '%s'", shown(dst));
	}
	d = opendir(OLD "/etc");
	if (!d)
		return 0; /* a host without /etc: nothing to show */
	while ((de = readdir(d))) {
		struct stat st;

		if (de->d_name[0] == '.' || !etc_wanted(de->d_name))
			continue;
		snprintf(src, sizeof(src), OLD "/etc/%s", de->d_name);
		snprintf(dst, sizeof(dst), NEW "/etc/%s", de->d_name);
		if (lstat(src, &st) < 0)
			continue;
		if (S_ISLNK(st.st_mode)) {
			char link[PATH_MAX];
			ssize_t n = readlink(src, link, sizeof(link) - 1);

			if (n < 0)
				continue;
			link[n] = '\0';
			if (symlink(link, dst) < 0 && errno != EEXIST) {
				r = fail(ce, errno, "cannot create '%s'",
					 shown(dst));
				break;
			}
			continue;
		}
		if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
			continue;
		r = make_mount_point(src, dst);
		if (r) {
			r = fail(ce, -r, "cannot create '%s'", shown(dst));
			break;
		}
		r = bind(src, dst,
			 MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID |
				 MOUNT_ATTR_NODEV,
			 ce);
		if (r)
			break;
	}
	closedir(d);
	return r;
}

/* One tmpfs, size-limited, behind /tmp, the work dir, $HOME, /dev/shm and
 * /mnt, so together they can never hold more than disk_bytes. */
static int scratch_setup(const struct sandbox_limits *lim, uid_t uid, gid_t gid,
			 struct child_err *ce)
{
	static const struct {
		const char *dir, *target;
		mode_t mode;
		bool owned;
	} parts[] = {
		{SCRATCH "/tmp", NEW "/tmp", 01777, false},
		{SCRATCH "/work", NEW SANDBOX_WORK_DIR, 0755, true},
		{SCRATCH "/home", NEW SANDBOX_HOME_DIR, 0755, true},
		{SCRATCH "/shm", NEW "/dev/shm", 01777, false},
		/* Some graders write results to absolute paths here. */
		{SCRATCH "/mnt", NEW "/mnt", 01777, false},
	};
	char opts[128];
	size_t i;
	int r;

	snprintf(opts, sizeof(opts), "mode=0755,size=%llu,nr_inodes=%llu",
		 (unsigned long long)lim->disk_bytes,
		 (unsigned long long)(lim->disk_bytes / 4096 + 1024));
	if (mount("sbx", SCRATCH, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
		return fail(ce, errno, "cannot mount the scratch tmpfs on '%s'",
			    "/tmp");
	for (i = 0; i < ARRAY_SIZE(parts); i++) {
		if (mkdir(parts[i].dir, 0755) < 0 ||
		    chmod(parts[i].dir, parts[i].mode) < 0)
			return fail(ce, errno, "cannot create '%s'",
				    shown(parts[i].target));
		if (parts[i].owned && chown(parts[i].dir, uid, gid) < 0)
			return fail(ce, errno, "cannot chown '%s'",
				    shown(parts[i].target));
		r = mkdir_p(parts[i].target);
		if (r)
			return fail(ce, -r, "cannot create '%s'",
				    shown(parts[i].target));
		r = bind(parts[i].dir, parts[i].target,
			 MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, ce);
		if (r)
			return r;
	}
	return 0;
}

int mnt_scratch_renew(const struct sandbox_limits *lim, uid_t uid, gid_t gid)
{
	/* The parts as scratch_setup() makes them, /tmp last: its bind
	 * covers the new tmpfs's root, which stays reachable only through
	 * the other parts. */
	static const struct {
		const char *dir, *target;
		mode_t mode;
		bool owned;
	} parts[] = {
		{"/tmp/work", SANDBOX_WORK_DIR, 0755, true},
		{"/tmp/home", SANDBOX_HOME_DIR, 0755, true},
		{"/tmp/shm", "/dev/shm", 01777, false},
		{"/tmp/mnt", "/mnt", 01777, false},
		{"/tmp/tmp", "/tmp", 01777, false},
	};
	struct child_err ce;
	char opts[128];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(parts); i++)
		if (umount2(parts[i].target, MNT_DETACH) < 0)
			return -errno;
	snprintf(opts, sizeof(opts), "mode=0755,size=%llu,nr_inodes=%llu",
		 (unsigned long long)lim->disk_bytes,
		 (unsigned long long)(lim->disk_bytes / 4096 + 1024));
	if (mount("sbx", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
		return -errno;
	for (i = 0; i < ARRAY_SIZE(parts); i++) {
		int r;

		if (mkdir(parts[i].dir, 0755) < 0 ||
		    chmod(parts[i].dir, parts[i].mode) < 0 ||
		    (parts[i].owned && chown(parts[i].dir, uid, gid) < 0))
			return -errno;
		r = bind(parts[i].dir, parts[i].target,
			 MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, &ce);
		if (r)
			return r;
	}
	return 0;
}

/* What sbx itself shows every sandbox, read-only under SANDBOX_GUEST_DIR:
 * bin/python (python3 under the name RLMEnv and rLLM call it), and
 * python/sbx_guest.py; and /etc/profile.d/sbx.sh, which puts bin on a
 * login shell's PATH (the host's /etc/profile resets it). */
static int guest_setup(struct child_err *ce)
{
	static const char profile[] =
		"PATH=\"$PATH:" SANDBOX_GUEST_DIR "/bin\"\n";
	int r;

	r = mkdir_p(NEW SANDBOX_GUEST_DIR "/bin");
	if (!r)
		r = mkdir_p(NEW SANDBOX_GUEST_DIR "/python");
	if (!r)
		r = mkdir_p(NEW "/etc/profile.d");
	if (r)
		return fail(ce, -r, "cannot create '%s'", SANDBOX_GUEST_DIR);
	if (symlink("/usr/bin/python3", NEW SANDBOX_GUEST_DIR "/bin/python") <
	    0)
		return fail(ce, errno, "cannot create '%s'",
			    SANDBOX_GUEST_DIR "/bin/python");
	r = write_new_file(NEW SANDBOX_GUEST_DIR "/python/sbx_guest.py",
			   guest_sbx_guest_py);
	if (!r)
		r = write_new_file(NEW "/etc/profile.d/sbx.sh", profile);
	if (r)
		return fail(ce, -r, "cannot write '%s'", SANDBOX_GUEST_DIR);
	return 0;
}

static int dev_setup(struct child_err *ce)
{
	static const struct {
		const char *name, *target;
	} links[] = {
		{"fd", "/proc/self/fd"},       {"stdin", "/proc/self/fd/0"},
		{"stdout", "/proc/self/fd/1"}, {"stderr", "/proc/self/fd/2"},
		{"ptmx", "pts/ptmx"},	       {"core", "/proc/kcore"},
	};
	char src[PATH_MAX], dst[PATH_MAX];
	size_t i;
	int r;

	if (mkdir(NEW "/dev", 0755) < 0)
		return fail(ce, errno, "cannot create '%s'", "/dev");
	if (mount("sbx", NEW "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC,
		  "mode=0755,size=64k,nr_inodes=64") < 0)
		return fail(ce, errno, "cannot mount '%s'", "/dev");
	for (i = 0; i < ARRAY_SIZE(dev_nodes); i++) {
		int fd;

		snprintf(src, sizeof(src), OLD "/dev/%s", dev_nodes[i]);
		snprintf(dst, sizeof(dst), NEW "/dev/%s", dev_nodes[i]);
		if (access(src, F_OK) < 0)
			continue;
		fd = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
		if (fd < 0)
			return fail(ce, errno, "cannot create '%s'",
				    shown(dst));
		fd_close(&fd);
		r = bind(src, dst, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, ce);
		if (r)
			return r;
	}
	for (i = 0; i < ARRAY_SIZE(links); i++) {
		if (!strcmp(links[i].name, "core"))
			continue; /* never expose kcore */
		snprintf(dst, sizeof(dst), NEW "/dev/%s", links[i].name);
		if (symlink(links[i].target, dst) < 0)
			return fail(ce, errno, "cannot create '%s'",
				    shown(dst));
	}
	if (mkdir(NEW "/dev/pts", 0755) < 0 || mkdir(NEW "/dev/shm", 0755) < 0)
		return fail(ce, errno, "cannot create '%s'", "/dev/pts");
	if (mount("devpts", NEW "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
		  "newinstance,ptmxmode=0666,mode=0620") < 0)
		return fail(ce, errno, "cannot mount '%s'", "/dev/pts");
	return 0;
}

/* Creates a file on the scaffold (read-only to the sandbox user, who does
 * not own it) holding text; returns an fd open for rewriting, or -errno. */
static int scaffold_file(const char *path, const char *text)
{
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
	int r;

	if (fd < 0)
		return -errno;
	r = write_full(fd, text, strlen(text));
	if (r) {
		fd_close(&fd);
		return r;
	}
	return fd;
}

/* What /proc/meminfo says: the sandbox's memory limit as total, all of it
 * free, no swap. Static, so it carries nothing between sandboxes. */
static void meminfo_text(char *out, size_t n, uint64_t memory_bytes)
{
	struct sysinfo si;
	uint64_t kb = memory_bytes >> 10;

	if (!kb && sysinfo(&si) == 0)
		kb = (uint64_t)si.totalram * si.mem_unit >> 10;
	snprintf(out, n,
		 "MemTotal:       %8llu kB\n"
		 "MemFree:        %8llu kB\n"
		 "MemAvailable:   %8llu kB\n"
		 "Buffers:               0 kB\n"
		 "Cached:                0 kB\n"
		 "SwapCached:            0 kB\n"
		 "Active:                0 kB\n"
		 "Inactive:              0 kB\n"
		 "SwapTotal:             0 kB\n"
		 "SwapFree:              0 kB\n"
		 "Dirty:                 0 kB\n"
		 "Shmem:                 0 kB\n",
		 (unsigned long long)kb, (unsigned long long)kb,
		 (unsigned long long)kb);
}

/* What /proc/stat says: one idle line per CPU the sandbox may run on (glibc
 * counts them for sysconf(_SC_NPROCESSORS_ONLN) when /sys is absent) and
 * the boot time, which ps needs; no counter moves. */
static void stat_text(char *out, size_t n)
{
	static const char idle[] = " 0 0 0 0 0 0 0 0 0 0\n";
	struct timespec real, boot;
	size_t used;
	cpu_set_t set;
	int cpu;

	clock_gettime(CLOCK_REALTIME, &real);
	clock_gettime(CLOCK_BOOTTIME, &boot);
	used = (size_t)snprintf(out, n, "cpu %s", idle);
	if (sched_getaffinity(0, sizeof(set), &set) == 0)
		for (cpu = 0; cpu < CPU_SETSIZE && used < n; cpu++)
			if (CPU_ISSET(cpu, &set))
				used += (size_t)snprintf(out + used, n - used,
							 "cpu%d%s", cpu, idle);
	if (used < n)
		snprintf(out + used, n - used,
			 "intr 0\nctxt 0\nbtime %lld\nprocesses 0\n"
			 "procs_running 1\nprocs_blocked 0\nsoftirq 0\n",
			 (long long)(real.tv_sec - boot.tv_sec));
}

static int proc_setup(const struct sandbox_limits *lim, struct child_err *ce)
{
	static const char *const src[PROCMASK_NSRC] = {
		[PROCMASK_EMPTY] = "/proc-empty",
		[PROCMASK_EMPTY_DIR] = "/proc-empty-dir",
		[PROCMASK_MEMINFO] = "/proc-meminfo",
		[PROCMASK_STAT] = "/proc-stat",
		[PROCMASK_LOADAVG] = "/proc-loadavg",
	};
	char text[16384];
	int fd, r;

	if (mkdir(NEW "/proc", 0555) < 0)
		return fail(ce, errno, "cannot create '%s'", "/proc");
	if (mount("proc", NEW "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
		  NULL) < 0)
		return fail(ce, errno, "cannot mount '%s'", "/proc");
	/* The masks live on the scaffold: their mounts outlive its detach,
	 * and root owns them, so the sandbox user cannot write them. */
	fd = scaffold_file(src[PROCMASK_EMPTY], "");
	if (fd < 0 || mkdir(src[PROCMASK_EMPTY_DIR], 0555) < 0)
		return fail(ce, fd < 0 ? -fd : errno, "cannot create '%s'",
			    "/proc masks");
	fd_close(&fd);
	meminfo_text(text, sizeof(text), lim->memory_bytes);
	meminfo_fd = scaffold_file(src[PROCMASK_MEMINFO], text);
	stat_text(text, sizeof(text));
	fd = scaffold_file(src[PROCMASK_STAT], text);
	r = meminfo_fd < 0 ? meminfo_fd : fd < 0 ? fd : 0;
	fd_close(&fd);
	if (!r) {
		fd = scaffold_file(src[PROCMASK_LOADAVG],
				   "0.00 0.00 0.00 1/1 1\n");
		r = fd < 0 ? fd : 0;
		fd_close(&fd);
	}
	if (r)
		return fail(ce, -r, "cannot create '%s'", "/proc masks");
	return procmask_apply(NEW "/proc", src, ce->what, sizeof(ce->what));
}

int mnt_proc_refresh(const struct sandbox_limits *lim)
{
	char text[1024];

	if (meminfo_fd < 0)
		return -EBADF;
	meminfo_text(text, sizeof(text), lim->memory_bytes);
	if (ftruncate(meminfo_fd, 0) < 0)
		return -errno;
	return pwrite(meminfo_fd, text, strlen(text), 0) ==
			       (ssize_t)strlen(text)
		       ? 0
		       : -EIO;
}

static bool path_is_clean(const char *p)
{
	if (p[0] != '/')
		return false;
	for (; *p; p++)
		if (p[0] == '/' && p[1] == '.' && p[2] == '.' &&
		    (p[3] == '/' || p[3] == '\0'))
			return false;
	return true;
}

static int user_binds(const struct sandbox_spec *spec, struct child_err *ce)
{
	char src[PATH_MAX], dst[PATH_MAX];
	size_t i;
	int r;

	for (i = 0; i < spec->nbinds; i++) {
		const struct sandbox_bind *b = &spec->binds[i];

		if (!path_is_clean(b->src) || !path_is_clean(b->dst))
			return fail(ce, EINVAL, "bad bind path '%s'",
				    shown(b->dst));
		int fd = INIT_FD_COUNT + (int)i;
		/* A device node (a GPU's) is usable: no nodev, as the
		 * nodes of dev_setup(). */
		uint64_t attrs =
			b->device
				? MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC
				: MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV |
					  (b->writable ? 0 : MOUNT_ATTR_RDONLY);

		/* The host cloned the source's mount for us (fd 6 + i), so
		 * its path's modes do not matter. */
		snprintf(src, sizeof(src), OLD "/proc/self/fd/%d", fd);
		if ((size_t)snprintf(dst, sizeof(dst), NEW "%s", b->dst) >=
		    sizeof(dst))
			return fail(ce, ENAMETOOLONG, "cannot mount '%s'",
				    shown(b->dst));
		if (access(src, F_OK) < 0)
			return fail(ce, errno, "cannot bind '%s'", b->src);
		r = make_mount_point(src, dst);
		if (r)
			return fail(ce, -r, "cannot create mount point '%s'",
				    shown(dst));
		if (syscall(SYS_move_mount, fd, "", AT_FDCWD, dst,
			    MOVE_MOUNT_F_EMPTY_PATH) == 0) {
			r = set_attr(dst, attrs, true);
			if (r)
				return fail(ce, -r,
					    "cannot make '%s' read-only",
					    shown(dst));
			continue;
		}
		/* No detached mounts here: bind the path. */
		snprintf(src, sizeof(src), OLD "%s", b->src);
		r = bind(src, dst, attrs, ce);
		if (r)
			return r;
	}
	return 0;
}

static int enter_newroot(struct child_err *ce)
{
	int r;

	if (chdir(NEW) < 0)
		return fail(ce, errno, "cannot enter '%s'", "/");
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		return fail(ce, errno, "cannot pivot to '%s'", "/");
	/* The scaffold (with the host's tree under it) is stacked on "/":
	 * detaching it leaves the sandbox with no path to the host. */
	if (umount2(".", MNT_DETACH) < 0)
		return fail(ce, errno, "cannot detach '%s'", "the host root");
	if (chdir("/") < 0)
		return fail(ce, errno, "cannot enter '%s'", "/");
	r = set_attr("/",
		     MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
		     false);
	if (!r)
		r = set_attr("/dev",
			     MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID |
				     MOUNT_ATTR_NOEXEC,
			     false);
	if (r)
		return fail(ce, -r, "cannot make '%s' read-only", "/");
	return 0;
}

int mnt_setup_child(const struct sandbox_spec *spec, uid_t uid, gid_t gid,
		    struct child_err *ce)
{
	int r;

	r = scaffold(ce);
	if (!r)
		r = runtime_binds(ce);
	if (!r)
		r = etc_setup(uid, gid, ce);
	if (!r)
		r = guest_setup(ce);
	if (!r)
		r = dev_setup(ce);
	if (!r)
		r = scratch_setup(&spec->limits, uid, gid, ce);
	if (!r)
		r = proc_setup(&spec->limits, ce);
	if (!r)
		r = user_binds(spec, ce);
	if (!r)
		r = enter_newroot(ce);
	if (spec->nbinds)
		syscall(SYS_close_range, INIT_FD_COUNT,
			INIT_FD_COUNT + (unsigned)spec->nbinds - 1, 0);
	return r;
}

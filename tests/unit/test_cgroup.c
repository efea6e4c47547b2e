/*
 * Unit tests for src/sandbox/cgroup.c. Most run against fake trees of plain
 * directories and files under a temporary directory (its name holds spaces
 * so the mountinfo unescaping is exercised): a fake mountinfo and self
 * cgroup file, controller lists, and the files the code writes. The
 * "real" tests use the host's cgroups (a fresh cgroup2 mount for the BPF
 * device program) and are skipped, with the reason printed, when it is not
 * root or lacks what they need.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/bpf.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "sandbox/cgroup.h"
#include "base/util.h"
#include "base/banned.h"

#define MiB (1024ull * 1024)

struct fx {
	char root[PATH_MAX];
	char mountinfo[PATH_MAX];
	char self[PATH_MAX];
};

/* Formats a path below the fixture's root. */
__attribute__((format(printf, 3, 4))) static void
tpath(const struct fx *fx, char *dst, const char *fmt, ...)
{
	char rel[PATH_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(rel, sizeof(rel), fmt, ap);
	va_end(ap);
	assert_true(n >= 0 && (size_t)n < sizeof(rel));
	n = snprintf(dst, PATH_MAX, "%s/%s", fx->root, rel);
	assert_true(n >= 0 && n < PATH_MAX);
}

static void put(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (!f)
		fail_msg("cannot write '%s': %s", path, strerror(errno));
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

/* Reads a whole small file into buf; the test fails if it is missing. */
static const char *get(const char *path, char *buf, size_t n)
{
	ssize_t r = read_file(path, buf, n);

	if (r < 0)
		fail_msg("cannot read '%s': %s", path, strerror((int)-r));
	return buf;
}

static bool exists(const char *path)
{
	struct stat st;

	return !lstat(path, &st);
}

static void mkdir_p(const char *path)
{
	char tmp[PATH_MAX];

	assert_true(str_copy(tmp, sizeof(tmp), path));
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		assert_true(!mkdir(tmp, 0755) || errno == EEXIST);
		*p = '/';
	}
	assert_true(!mkdir(tmp, 0755) || errno == EEXIST);
}

/* Writes s as mountinfo escapes it: space, tab, newline and backslash as
 * three octal digits. */
static void put_escaped(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\\')
			fprintf(f, "\\%03o", (unsigned char)*s);
		else
			fputc(*s, f);
	}
}

/* Appends a mountinfo line for a mount of fstype at root/rel. */
static void mi_line(const struct fx *fx, FILE *f, const char *mroot,
		    const char *rel, const char *fstype, const char *super)
{
	static int id = 30;

	fprintf(f, "%d 23 0:%d ", id, id);
	put_escaped(f, mroot);
	fputc(' ', f);
	put_escaped(f, fx->root);
	fprintf(f, "/%s rw,nosuid,nodev,noexec,relatime shared:%d - %s %s %s\n",
		rel, id, fstype, fstype, super);
	id++;
}

static FILE *mi_open(const struct fx *fx)
{
	FILE *f = fopen(fx->mountinfo, "w");

	assert_non_null(f);
	fputs("22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
	      "23 22 0:21 / /sys rw,nosuid shared:2 - sysfs sysfs rw\n"
	      "24 22 0:22 / /proc rw,nosuid shared:3 - proc proc rw\n",
	      f);
	return f;
}

static int rm_entry(const char *path, const struct stat *st, int flag,
		    struct FTW *ftw)
{
	return remove(path);
}

static int setup(void **state)
{
	struct fx *fx = xcalloc(1, sizeof(*fx));
	int n;

	assert_true(str_copy(fx->root, sizeof(fx->root),
			     "/tmp/sbx cgroup test XXXXXX"));
	assert_non_null(mkdtemp(fx->root));
	n = snprintf(fx->mountinfo, sizeof(fx->mountinfo), "%s/mountinfo",
		     fx->root);
	assert_true(n > 0 && (size_t)n < sizeof(fx->mountinfo));
	n = snprintf(fx->self, sizeof(fx->self), "%s/self-cgroup", fx->root);
	assert_true(n > 0 && (size_t)n < sizeof(fx->self));
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;

	nftw(fx->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(fx);
	return 0;
}

/* A v2 host: the unified hierarchy at <root>/v2 lists memory, sbx's own
 * cgroup is /own and the sbx directory (the override) lists controllers. */
static void v2_tree(const struct fx *fx, const char *sbx_controllers, bool swap,
		    char *override)
{
	char p[PATH_MAX];
	FILE *f = mi_open(fx);

	mi_line(fx, f, "/", "v2", "cgroup2", "rw,nsdelegate");
	assert_int_equal(fclose(f), 0);
	put(fx->self, "0::/own\n");
	tpath(fx, p, "v2/own/sbx");
	mkdir_p(p);
	tpath(fx, p, "v2/cgroup.controllers");
	put(p, "cpuset cpu io memory hugetlb pids rdma misc\n");
	tpath(fx, p, "v2/own/cgroup.subtree_control");
	put(p, "");
	tpath(fx, p, "v2/own/sbx/cgroup.controllers");
	put(p, sbx_controllers);
	if (swap) {
		tpath(fx, p, "v2/own/sbx/memory.swap.max");
		put(p, "max\n");
	}
	tpath(fx, override, "v2/own/sbx");
}

/* A v1 host with memory, pids and co-mounted cpu,cpuacct; the override
 * holds one directory per controller. */
static void v1_tree(const struct fx *fx, bool memsw, char *override)
{
	char p[PATH_MAX];
	FILE *f = mi_open(fx);

	mi_line(fx, f, "/", "memory", "cgroup", "rw,memory");
	mi_line(fx, f, "/", "pids", "cgroup", "rw,pids");
	mi_line(fx, f, "/", "cpu,cpuacct", "cgroup", "rw,cpu,cpuacct");
	assert_int_equal(fclose(f), 0);
	put(fx->self, "4:memory:/own\n3:pids:/own\n2:cpu,cpuacct:/own\n"
		      "1:name=systemd:/own\n0::/own\n");
	for (int i = 0; i < 3; i++) {
		static const char *const sub[] = {"memory", "pids", "cpuacct"};

		tpath(fx, p, "v1/%s", sub[i]);
		mkdir_p(p);
	}
	if (memsw) {
		tpath(fx, p, "v1/memory/memory.memsw.limit_in_bytes");
		put(p, "9223372036854771712\n");
	}
	tpath(fx, override, "v1");
}

static void detect_ok(const struct fx *fx, struct cgroup_host *host,
		      const char *override)
{
	char err[256] = "unset";

	assert_int_equal(cgroup_host_detect(host, fx->mountinfo, fx->self,
					    override, err, sizeof(err)),
			 0);
	assert_string_equal(err, "");
}

static void test_detect_none(void **state)
{
	struct fx *fx = *state;
	struct cgroup_host host;
	char err[256];
	FILE *f = mi_open(fx);

	assert_int_equal(fclose(f), 0);
	put(fx->self, "0::/\n");
	memset(&host, 0xff, sizeof(host));
	assert_int_equal(cgroup_host_detect(&host, fx->mountinfo, fx->self,
					    NULL, err, sizeof(err)),
			 0);
	assert_int_equal(host.version, CGROUP_NONE);
	assert_string_equal(host.v2_dir, "");
	assert_string_equal(host.v1_memory, "");
	assert_false(host.has_memory || host.has_pids || host.has_cpu ||
		     host.has_swap_limit);
	assert_string_equal(err, "no cgroup hierarchy with usable controllers");
}

static void test_detect_missing_mountinfo(void **state)
{
	struct fx *fx = *state;
	struct cgroup_host host;
	char err[512];

	put(fx->self, "0::/\n");
	assert_int_equal(cgroup_host_detect(&host, fx->mountinfo, fx->self,
					    NULL, err, sizeof(err)),
			 -ENOENT);
	assert_non_null(strstr(err, "cannot read '"));
	assert_non_null(strstr(err, "mountinfo': No such file or directory"));
}

static void test_detect_v2_override(void **state)
{
	struct fx *fx = *state;
	struct cgroup_host host;
	char sbx[PATH_MAX], p[PATH_MAX], buf[256];

	v2_tree(fx, "memory pids cpu\n", true, sbx);
	detect_ok(fx, &host, sbx);
	assert_int_equal(host.version, CGROUP_V2);
	assert_string_equal(host.v2_dir, sbx);
	assert_string_equal(host.v1_memory, "");
	assert_string_equal(host.v1_pids, "");
	assert_string_equal(host.v1_cpuacct, "");
	assert_true(host.has_memory);
	assert_true(host.has_pids);
	assert_true(host.has_cpu);
	assert_true(host.has_swap_limit);
	/* Each controller is enabled on its own, in the parent and in sbx. */
	tpath(fx, p, "v2/own/cgroup.subtree_control");
	assert_string_equal(get(p, buf, sizeof(buf)), "+memory+pids+cpu");
	tpath(fx, p, "v2/own/sbx/cgroup.subtree_control");
	assert_string_equal(get(p, buf, sizeof(buf)), "+memory+pids+cpu");
}

static void test_detect_v2_partial(void **state)
{
	struct fx *fx = *state;
	struct cgroup_host host;
	char sbx[PATH_MAX];

	v2_tree(fx, "cpu pids\n", true, sbx);
	detect_ok(fx, &host, sbx);
	assert_int_equal(host.version, CGROUP_V2);
	assert_false(host.has_memory);
	assert_false(host.has_swap_limit); /* no memory, no swap cap */
	assert_true(host.has_pids);
	assert_true(host.has_cpu);
}

/* Without an override the sbx directory is derived from the mount point,
 * the mount's root and sbx's own cgroup, and is created. */
static void test_detect_v2_derived(void **state)
{
	struct fx *fx = *state;
	struct cgroup_host host;
	char p[PATH_MAX], buf[256];
	FILE *f = mi_open(fx);

	/* Mounted from inside the hierarchy: root "/user.slice". */
	mi_line(fx, f, "/user.slice", "unified", "cgroup2", "rw");
	assert_int_equal(fclose(f), 0);
	put(fx->self, "0::/user.slice/app:1.scope\n");
	tpath(fx, p, "unified/app:1.scope");
	mkdir_p(p);
	tpath(fx, p, "unified/cgroup.controllers");
	put(p, "memory pids\n");
	/* The group exists already and got its controllers. */
	tpath(fx, p, "unified/app:1.scope/sbx");
	mkdir_p(p);
	tpath(fx, p, "unified/app:1.scope/sbx/cgroup.controllers");
	put(p, "memory pids cpu\n");
	detect_ok(fx, &host, NULL);
	assert_int_equal(host.version, CGROUP_V2);
	tpath(fx, p, "unified/app:1.scope/sbx");
	assert_string_equal(host.v2_dir, p);
	assert_true(host.has_memory && host.has_pids && host.has_cpu);
	tpath(fx, p, "unified/app:1.scope/cgroup.subtree_control");
	assert_string_equal(get(p, buf, sizeof(buf)), "+memory+pids+cpu");
}

/* sbx's own cgroup holds other processes, so v2 gives its children no
 * controllers: sbx falls back to a group at the top of the hierarchy and
 * removes the useless one. */
static void test_detect_v2_busy_own_cgroup(void **state)
{
	struct fx *fx = *state;
	struct cgroup_host host;
	char p[PATH_MAX], buf[256];
	FILE *f = mi_open(fx);

	mi_line(fx, f, "/", "unified", "cgroup2", "rw");
	assert_int_equal(fclose(f), 0);
	put(fx->self, "0::/user.slice/session-1.scope\n");
	tpath(fx, p, "unified/user.slice/session-1.scope");
	mkdir_p(p);
	tpath(fx, p, "unified/cgroup.controllers");
	put(p, "memory pids cpu\n");
	detect_ok(fx, &host, NULL);
	assert_int_equal(host.version, CGROUP_V2);
	tpath(fx, p, "unified/sbx");
	assert_string_equal(host.v2_dir, p);
	assert_true(exists(p));
	tpath(fx, p, "unified/user.slice/session-1.scope/sbx");
	assert_false(exists(p));
	tpath(fx, p, "unified/cgroup.subtree_control");
	assert_string_equal(get(p, buf, sizeof(buf)), "+memory+pids+cpu");
}

static void test_detect_v1_override(void **state)
{
	struct fx *fx = *state;
	struct cgroup_host host;
	char v1[PATH_MAX], p[PATH_MAX];

	v1_tree(fx, true, v1);
	detect_ok(fx, &host, v1);
	assert_int_equal(host.version, CGROUP_V1);
	assert_string_equal(host.v2_dir, "");
	tpath(fx, p, "v1/memory");
	assert_string_equal(host.v1_memory, p);
	tpath(fx, p, "v1/pids");
	assert_string_equal(host.v1_pids, p);
	tpath(fx, p, "v1/cpuacct");
	assert_string_equal(host.v1_cpuacct, p);
	assert_true(host.has_memory);
	assert_true(host.has_pids);
	assert_true(host.has_cpu);
	assert_true(host.has_swap_limit);
	/* No devices directory: device rules cannot be enforced. */
	assert_string_equal(host.v1_devices, "");
	assert_false(host.has_devices);
	tpath(fx, p, "v1/devices");
	mkdir_p(p);
	detect_ok(fx, &host, v1);
	assert_string_equal(host.v1_devices, p);
	assert_true(host.has_devices);
}

/* A hybrid host mounts an empty unified hierarchy next to the v1 ones:
 * v1 must win. The sbx directories are derived and created per
 * hierarchy. */
static void test_detect_hybrid(void **state)
{
	struct fx *fx = *state;
	struct cgroup_host host;
	char p[PATH_MAX];
	FILE *f = mi_open(fx);

	mi_line(fx, f, "/", "unified", "cgroup2", "rw,nsdelegate");
	mi_line(fx, f, "/", "cpu,cpuacct", "cgroup", "rw,cpu,cpuacct");
	mi_line(fx, f, "/", "memory", "cgroup", "rw,memory");
	mi_line(fx, f, "/", "freezer", "cgroup", "rw,freezer");
	mi_line(fx, f, "/ctr", "pids", "cgroup", "rw,pids");
	mi_line(fx, f, "/", "systemd", "cgroup", "rw,xattr,name=systemd");
	assert_int_equal(fclose(f), 0);
	put(fx->self, "12:pids:/ctr\n"
		      "7:memory:/svc/a\n"
		      "5:freezer:/\n"
		      "3:cpu,cpuacct:/svc/a\n"
		      "1:name=systemd:/svc/a\n"
		      "0::/svc/a\n");
	tpath(fx, p, "unified");
	mkdir_p(p);
	tpath(fx, p, "unified/cgroup.controllers");
	put(p, "");
	tpath(fx, p, "memory/svc/a");
	mkdir_p(p);
	tpath(fx, p, "pids");
	mkdir_p(p);
	tpath(fx, p, "cpu,cpuacct/svc/a");
	mkdir_p(p);

	detect_ok(fx, &host, NULL);
	assert_int_equal(host.version, CGROUP_V1);
	assert_string_equal(host.v2_dir, "");
	tpath(fx, p, "memory/svc/a/sbx");
	assert_string_equal(host.v1_memory, p);
	assert_true(exists(p));
	/* The pids mount's root is our own cgroup: sbx sits at its top. */
	tpath(fx, p, "pids/sbx");
	assert_string_equal(host.v1_pids, p);
	assert_true(exists(p));
	tpath(fx, p, "cpu,cpuacct/svc/a/sbx");
	assert_string_equal(host.v1_cpuacct, p);
	assert_true(exists(p));
	assert_true(host.has_memory && host.has_pids && host.has_cpu);
	assert_false(host.has_swap_limit);
}

static void test_create_v2(void **state)
{
	struct fx *fx = *state;
	struct cgroup_limits lim = {.memory_bytes = 64 * MiB, .pids = 16};
	struct cgroup_host host;
	struct cgroup cg;
	char sbx[PATH_MAX], p[PATH_MAX], buf[256], err[256] = "";

	v2_tree(fx, "memory pids cpu\n", true, sbx);
	detect_ok(fx, &host, sbx);
	assert_int_equal(
		cgroup_create(&cg, &host, "box1", &lim, err, sizeof(err)), 0);
	assert_int_equal(cg.version, CGROUP_V2);
	tpath(fx, p, "v2/own/sbx/box1");
	assert_string_equal(cg.v2, p);
	assert_string_equal(cg.memory, "");
	tpath(fx, p, "v2/own/sbx/box1/memory.max");
	assert_string_equal(get(p, buf, sizeof(buf)), "67108864");
	tpath(fx, p, "v2/own/sbx/box1/memory.swap.max");
	assert_string_equal(get(p, buf, sizeof(buf)), "0");
	tpath(fx, p, "v2/own/sbx/box1/pids.max");
	assert_string_equal(get(p, buf, sizeof(buf)), "16");
	assert_int_equal(cgroup_destroy(&cg), 0);
	tpath(fx, p, "v2/own/sbx/box1");
	assert_false(exists(p));

	/* No limits: the group exists and nothing is written. */
	lim = (struct cgroup_limits){0};
	assert_int_equal(
		cgroup_create(&cg, &host, "box2", &lim, err, sizeof(err)), 0);
	tpath(fx, p, "v2/own/sbx/box2");
	assert_true(exists(p));
	tpath(fx, p, "v2/own/sbx/box2/memory.max");
	assert_false(exists(p));
	tpath(fx, p, "v2/own/sbx/box2/pids.max");
	assert_false(exists(p));
	assert_int_equal(cgroup_destroy(&cg), 0);
}

static void test_create_v2_no_swap_file(void **state)
{
	struct fx *fx = *state;
	struct cgroup_limits lim = {.memory_bytes = 3 * MiB};
	struct cgroup_host host;
	struct cgroup cg;
	char sbx[PATH_MAX], p[PATH_MAX], buf[64], err[256] = "";

	v2_tree(fx, "memory pids\n", false, sbx);
	detect_ok(fx, &host, sbx);
	assert_false(host.has_swap_limit);
	assert_int_equal(cgroup_create(&cg, &host, "b", &lim, err, sizeof(err)),
			 0);
	tpath(fx, p, "v2/own/sbx/b/memory.max");
	assert_string_equal(get(p, buf, sizeof(buf)), "3145728");
	tpath(fx, p, "v2/own/sbx/b/memory.swap.max");
	assert_false(exists(p));
	assert_int_equal(cgroup_destroy(&cg), 0);
}

static void test_create_v1_memsw(void **state)
{
	struct fx *fx = *state;
	struct cgroup_limits lim = {.memory_bytes = 64 * MiB, .pids = 16};
	struct cgroup_host host;
	struct cgroup cg;
	char v1[PATH_MAX], p[PATH_MAX], buf[256], err[256] = "";

	v1_tree(fx, true, v1);
	detect_ok(fx, &host, v1);
	assert_int_equal(
		cgroup_create(&cg, &host, "box", &lim, err, sizeof(err)), 0);
	assert_int_equal(cg.version, CGROUP_V1);
	assert_string_equal(cg.v2, "");
	tpath(fx, p, "v1/memory/box");
	assert_string_equal(cg.memory, p);
	tpath(fx, p, "v1/pids/box");
	assert_string_equal(cg.pids, p);
	tpath(fx, p, "v1/cpuacct/box");
	assert_string_equal(cg.cpuacct, p);
	assert_true(exists(p));
	tpath(fx, p, "v1/memory/box/memory.limit_in_bytes");
	assert_string_equal(get(p, buf, sizeof(buf)), "67108864");
	tpath(fx, p, "v1/memory/box/memory.memsw.limit_in_bytes");
	assert_string_equal(get(p, buf, sizeof(buf)), "67108864");
	tpath(fx, p, "v1/memory/box/memory.swappiness");
	assert_false(exists(p));
	tpath(fx, p, "v1/pids/box/pids.max");
	assert_string_equal(get(p, buf, sizeof(buf)), "16");
	assert_int_equal(cgroup_destroy(&cg), 0);
	tpath(fx, p, "v1/memory/box");
	assert_false(exists(p));
	tpath(fx, p, "v1/pids/box");
	assert_false(exists(p));
	tpath(fx, p, "v1/cpuacct/box");
	assert_false(exists(p));
}

static void test_create_v1_swappiness(void **state)
{
	struct fx *fx = *state;
	struct cgroup_limits lim = {.memory_bytes = 128 * MiB, .pids = 7};
	struct cgroup_host host;
	struct cgroup cg;
	char v1[PATH_MAX], p[PATH_MAX], buf[256], err[256] = "";

	v1_tree(fx, false, v1);
	detect_ok(fx, &host, v1);
	assert_false(host.has_swap_limit);
	assert_int_equal(
		cgroup_create(&cg, &host, "box", &lim, err, sizeof(err)), 0);
	tpath(fx, p, "v1/memory/box/memory.limit_in_bytes");
	assert_string_equal(get(p, buf, sizeof(buf)), "134217728");
	tpath(fx, p, "v1/memory/box/memory.memsw.limit_in_bytes");
	assert_false(exists(p));
	tpath(fx, p, "v1/memory/box/memory.swappiness");
	assert_string_equal(get(p, buf, sizeof(buf)), "0");
	tpath(fx, p, "v1/pids/box/pids.max");
	assert_string_equal(get(p, buf, sizeof(buf)), "7");
	assert_int_equal(cgroup_destroy(&cg), 0);
}

static void test_create_errors(void **state)
{
	struct fx *fx = *state;
	struct cgroup_limits lim = {.memory_bytes = 64 * MiB, .pids = 16};
	struct cgroup_host host;
	struct cgroup cg;
	char v1[PATH_MAX], p[PATH_MAX], want[PATH_MAX + 64], err[1024];

	v1_tree(fx, true, v1);
	detect_ok(fx, &host, v1);

	assert_int_equal(
		cgroup_create(&cg, &host, "../x", &lim, err, sizeof(err)),
		-EINVAL);
	assert_string_equal(err, "invalid cgroup name '../x'");
	assert_int_equal(cgroup_create(&cg, &host, "", &lim, err, sizeof(err)),
			 -EINVAL);

	/* A group that already exists (here only under pids) is refused and
	 * left alone; the memory group made before it is removed. */
	tpath(fx, p, "v1/pids/taken");
	mkdir_p(p);
	assert_int_equal(
		cgroup_create(&cg, &host, "taken", &lim, err, sizeof(err)),
		-EEXIST);
	snprintf(want, sizeof(want), "cannot create cgroup '%s': File exists",
		 p);
	assert_string_equal(err, want);
	assert_true(exists(p));
	tpath(fx, p, "v1/memory/taken");
	assert_false(exists(p));
	assert_string_equal(cg.memory, "");
	assert_string_equal(cg.pids, "");

	/* A write that fails: point the cpuacct hierarchy inside the new
	 * pids group so that "pids.max" there is a directory. */
	tpath(fx, host.v1_cpuacct, "v1/pids/pids.max");
	assert_int_equal(
		cgroup_create(&cg, &host, "pids.max", &lim, err, sizeof(err)),
		-EISDIR);
	tpath(fx, p, "v1/pids/pids.max/pids.max");
	snprintf(want, sizeof(want), "cannot set '%s': Is a directory", p);
	assert_string_equal(err, want);
	tpath(fx, p, "v1/pids/pids.max");
	assert_false(exists(p));
	tpath(fx, p, "v1/memory/pids.max");
	assert_false(exists(p));
	assert_string_equal(cg.memory, "");
	assert_string_equal(cg.cpuacct, "");
}

/* Forks a child that waits to be killed (or dies by itself after 30 s). */
static pid_t spawn_sleeper(void)
{
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		alarm(30);
		for (;;)
			pause();
	}
	return pid;
}

static void assert_killed(pid_t pid)
{
	int status;

	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGKILL);
}

/* In a fake tree nothing moves the child, but destroy reads cgroup.procs
 * and kills what it lists, so the pid written must be our own child. */
static void test_attach_v2(void **state)
{
	struct fx *fx = *state;
	struct cgroup_host host;
	struct cgroup cg;
	char sbx[PATH_MAX], p[PATH_MAX], buf[64], want[32], err[256] = "";
	pid_t pid;

	v2_tree(fx, "memory pids cpu\n", true, sbx);
	detect_ok(fx, &host, sbx);
	assert_int_equal(cgroup_create(&cg, &host, "a", NULL, err, sizeof(err)),
			 0);
	pid = spawn_sleeper();
	assert_int_equal(cgroup_attach(&cg, pid), 0);
	snprintf(want, sizeof(want), "%d", (int)pid);
	tpath(fx, p, "v2/own/sbx/a/cgroup.procs");
	assert_string_equal(get(p, buf, sizeof(buf)), want);
	assert_int_equal(cgroup_attach(&cg, 0), -EINVAL);
	assert_int_equal(cgroup_destroy(&cg), 0);
	assert_killed(pid);
	tpath(fx, p, "v2/own/sbx/a");
	assert_false(exists(p));
}

static void test_attach_v1(void **state)
{
	struct fx *fx = *state;
	struct cgroup_host host;
	struct cgroup cg;
	char v1[PATH_MAX], p[PATH_MAX], buf[64], want[32], err[256] = "";
	pid_t pid;

	v1_tree(fx, false, v1);
	detect_ok(fx, &host, v1);
	assert_int_equal(cgroup_create(&cg, &host, "a", NULL, err, sizeof(err)),
			 0);
	pid = spawn_sleeper();
	assert_int_equal(cgroup_attach(&cg, pid), 0);
	snprintf(want, sizeof(want), "%d", (int)pid);
	tpath(fx, p, "v1/memory/a/cgroup.procs");
	assert_string_equal(get(p, buf, sizeof(buf)), want);
	tpath(fx, p, "v1/pids/a/cgroup.procs");
	assert_string_equal(get(p, buf, sizeof(buf)), want);
	tpath(fx, p, "v1/cpuacct/a/cgroup.procs");
	assert_string_equal(get(p, buf, sizeof(buf)), want);
	assert_int_equal(cgroup_destroy(&cg), 0);
	assert_killed(pid);
}

static void test_stats_v2(void **state)
{
	struct fx *fx = *state;
	struct cgroup_host host;
	struct cgroup_stats st;
	struct cgroup cg;
	char sbx[PATH_MAX], p[PATH_MAX], err[256] = "";
	uint64_t ns = 0;

	v2_tree(fx, "memory pids cpu\n", true, sbx);
	detect_ok(fx, &host, sbx);
	assert_int_equal(cgroup_create(&cg, &host, "s", NULL, err, sizeof(err)),
			 0);

	/* Nothing to read yet. */
	assert_int_equal(cgroup_read_stats(&cg, &st), -ENOENT);
	assert_false(st.has_cpu || st.has_peak || st.has_oom);
	assert_int_equal(cgroup_cpu_ns(&cg, &ns), -ENOENT);

	tpath(fx, p, "v2/own/sbx/s/cpu.stat");
	put(p, "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n"
	       "nr_periods 0\nnr_throttled 0\nthrottled_usec 0");
	assert_int_equal(cgroup_read_stats(&cg, &st), 0);
	assert_true(st.has_cpu);
	assert_int_equal(st.cpu_ns, 1500000);
	assert_false(st.has_peak);
	assert_false(st.has_oom);

	tpath(fx, p, "v2/own/sbx/s/memory.peak");
	put(p, "123456\n");
	tpath(fx, p, "v2/own/sbx/s/memory.events");
	put(p, "low 0\nhigh 0\nmax 9\noom 3\noom_group_kill 7\noom_kill 2\n");
	assert_int_equal(cgroup_read_stats(&cg, &st), 0);
	assert_int_equal(st.cpu_ns, 1500000);
	assert_true(st.has_peak);
	assert_int_equal(st.peak_bytes, 123456);
	assert_true(st.has_oom);
	assert_int_equal(st.oom_kills, 2);
	assert_int_equal(cgroup_cpu_ns(&cg, &ns), 0);
	assert_int_equal(ns, 1500000);

	/* A key without its line is missing, not zero. */
	put(p, "low 0\noom 1\n");
	assert_int_equal(cgroup_read_stats(&cg, &st), 0);
	assert_false(st.has_oom);
	assert_int_equal(cgroup_destroy(&cg), 0);
}

/* v2 resets memory.peak for reads through the fd that wrote to it (Linux
 * 6.12+): the group keeps that fd and reads through it; where it cannot
 * be written the peak is not per run, and the group says so. */
static void test_peak_reset_v2(void **state)
{
	struct fx *fx = *state;
	struct cgroup_host host;
	struct cgroup_stats st;
	struct cgroup cg;
	char sbx[PATH_MAX], p[PATH_MAX], err[256] = "";

	v2_tree(fx, "memory pids cpu\n", true, sbx);
	detect_ok(fx, &host, sbx);
	assert_int_equal(cgroup_create(&cg, &host, "s", NULL, err, sizeof(err)),
			 0);
	tpath(fx, p, "v2/own/sbx/s/memory.peak");
	put(p, "999999\n");
	cgroup_reset_peak(&cg);
	assert_true(cgroup_peak_per_run(&cg));
	assert_int_not_equal(cg.peak_fd1, 0);
	/* Reads go through the fd that reset it: with the name gone they
	 * still see the file's (plain, here) contents. */
	put(p, "4096\n");
	assert_int_equal(unlink(p), 0);
	assert_int_equal(cgroup_read_stats(&cg, &st), 0);
	assert_true(st.has_peak);
	assert_int_equal(st.peak_bytes, 4096);
	assert_int_equal(cgroup_destroy(&cg), 0);
	assert_int_equal(cg.peak_fd1, 0);

	/* A memory.peak that cannot be opened for writing. */
	assert_int_equal(cgroup_create(&cg, &host, "t", NULL, err, sizeof(err)),
			 0);
	tpath(fx, p, "v2/own/sbx/t/memory.peak");
	assert_int_equal(mkdir(p, 0755), 0);
	cgroup_reset_peak(&cg);
	assert_false(cgroup_peak_per_run(&cg));
	assert_int_equal(rmdir(p), 0);
	assert_int_equal(cgroup_destroy(&cg), 0);
}

static void test_stats_v1(void **state)
{
	struct fx *fx = *state;
	struct cgroup_host host;
	struct cgroup_stats st;
	struct cgroup cg;
	char v1[PATH_MAX], p[PATH_MAX], err[256] = "";
	uint64_t ns = 0;

	v1_tree(fx, true, v1);
	detect_ok(fx, &host, v1);
	assert_int_equal(cgroup_create(&cg, &host, "s", NULL, err, sizeof(err)),
			 0);
	tpath(fx, p, "v1/cpuacct/s/cpuacct.usage");
	put(p, "987654321\n");
	tpath(fx, p, "v1/memory/s/memory.max_usage_in_bytes");
	put(p, "4096\n");
	/* "oom_kill_disable" must not be read as "oom_kill". */
	tpath(fx, p, "v1/memory/s/memory.oom_control");
	put(p, "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n");
	assert_int_equal(cgroup_read_stats(&cg, &st), 0);
	assert_true(st.has_cpu && st.has_peak && st.has_oom);
	assert_int_equal(st.cpu_ns, 987654321);
	assert_int_equal(st.peak_bytes, 4096);
	assert_int_equal(st.oom_kills, 1);
	assert_int_equal(cgroup_cpu_ns(&cg, &ns), 0);
	assert_int_equal(ns, 987654321);

	tpath(fx, p, "v1/cpuacct/s/cpuacct.usage");
	put(p, "garbage\n");
	assert_int_equal(cgroup_cpu_ns(&cg, &ns), -EINVAL);
	assert_int_equal(cgroup_destroy(&cg), 0);
}

static void test_destroy(void **state)
{
	struct fx *fx = *state;
	struct cgroup zero = {0};
	struct cgroup cg = {.version = CGROUP_V2};
	char p[PATH_MAX];

	assert_int_equal(cgroup_destroy(&zero), 0);

	/* Files and a child group of the sandbox's own go with the group. */
	tpath(fx, p, "g/child");
	mkdir_p(p);
	tpath(fx, p, "g/child/cgroup.procs");
	put(p, "");
	tpath(fx, p, "g/memory.max");
	put(p, "1");
	tpath(fx, cg.v2, "g");
	assert_int_equal(cgroup_destroy(&cg), 0);
	tpath(fx, p, "g");
	assert_false(exists(p));
	assert_string_equal(cg.v2, "");
	assert_int_equal(cgroup_destroy(&cg), 0);

	/* Already gone counts as removed. */
	tpath(fx, cg.memory, "never-made");
	assert_int_equal(cgroup_destroy(&cg), 0);
	assert_string_equal(cg.memory, "");
}

static void test_sweep(void **state)
{
	struct fx *fx = *state;
	struct cgroup_host host;
	char sbx[PATH_MAX], v1[PATH_MAX], p[PATH_MAX];

	v2_tree(fx, "memory pids cpu\n", true, sbx);
	detect_ok(fx, &host, sbx);
	assert_int_equal(cgroup_sweep(&host, NULL), 0);
	tpath(fx, p, "v2/own/sbx/old1");
	mkdir_p(p);
	tpath(fx, p, "v2/own/sbx/old1/memory.max");
	put(p, "1024");
	tpath(fx, p, "v2/own/sbx/old2");
	mkdir_p(p);
	assert_int_equal(cgroup_sweep(&host, NULL), 2);
	tpath(fx, p, "v2/own/sbx/old1");
	assert_false(exists(p));
	tpath(fx, p, "v2/own/sbx/old2");
	assert_false(exists(p));
	/* The sbx directory's own files stay. */
	tpath(fx, p, "v2/own/sbx/cgroup.controllers");
	assert_true(exists(p));

	/* v1: one group in three hierarchies counts once. */
	v1_tree(fx, true, v1);
	detect_ok(fx, &host, v1);
	tpath(fx, p, "v1/memory/left");
	mkdir_p(p);
	tpath(fx, p, "v1/pids/left");
	mkdir_p(p);
	tpath(fx, p, "v1/cpuacct/left");
	mkdir_p(p);
	tpath(fx, p, "v1/pids/only-pids");
	mkdir_p(p);
	assert_int_equal(cgroup_sweep(&host, NULL), 2);
	tpath(fx, p, "v1/cpuacct/left");
	assert_false(exists(p));
	tpath(fx, p, "v1/pids/only-pids");
	assert_false(exists(p));
	tpath(fx, p, "v1/memory/memory.memsw.limit_in_bytes");
	assert_true(exists(p));
}

/* Reads dir/name of the fixture and compares it with want. */
static void assert_file(const struct fx *fx, const char *rel, const char *want)
{
	char p[PATH_MAX], buf[128];

	tpath(fx, p, "%s", rel);
	assert_string_equal(get(p, buf, sizeof(buf)), want);
}

static void assert_no_file(const struct fx *fx, const char *rel)
{
	char p[PATH_MAX];

	tpath(fx, p, "%s", rel);
	assert_false(exists(p));
}

static void test_cpu_v2(void **state)
{
	struct fx *fx = *state;
	struct cgroup_limits lim = {.cpu_quota_milli = 500, .cpu_weight = 50};
	struct cgroup_host host;
	struct cgroup cg;
	char sbx[PATH_MAX], err[256] = "";

	v2_tree(fx, "memory pids cpu\n", true, sbx);
	detect_ok(fx, &host, sbx);
	assert_true(host.has_cpu_limit);
	assert_int_equal(cgroup_create(&cg, &host, "c", &lim, err, sizeof(err)),
			 0);
	/* Half a core: 50 ms in every 100 ms. */
	assert_file(fx, "v2/own/sbx/c/cpu.max", "50000 100000");
	assert_file(fx, "v2/own/sbx/c/cpu.weight", "50");
	/* A warm sandbox's next run: two cores, then none. */
	lim = (struct cgroup_limits){.cpu_quota_milli = 2000};
	assert_int_equal(cgroup_set_limits(&cg, &lim), 0);
	assert_file(fx, "v2/own/sbx/c/cpu.max", "200000 100000");
	assert_file(fx, "v2/own/sbx/c/cpu.weight", "100");
	lim = (struct cgroup_limits){0};
	assert_int_equal(cgroup_set_limits(&cg, &lim), 0);
	assert_file(fx, "v2/own/sbx/c/cpu.max", "max 100000");
	assert_int_equal(cgroup_destroy(&cg), 0);

	/* No CPU limits asked: nothing written. */
	assert_int_equal(cgroup_create(&cg, &host, "d", &lim, err, sizeof(err)),
			 0);
	assert_no_file(fx, "v2/own/sbx/d/cpu.max");
	assert_int_equal(cgroup_destroy(&cg), 0);
}

/* Without the cpu controller the limits are skipped, and the group is
 * made all the same. */
static void test_cpu_v2_missing(void **state)
{
	struct fx *fx = *state;
	struct cgroup_limits lim = {.memory_bytes = 64 * MiB,
				    .cpu_quota_milli = 500,
				    .cpu_weight = 50};
	struct cgroup_host host;
	struct cgroup cg;
	char sbx[PATH_MAX], err[256] = "";

	v2_tree(fx, "memory pids\n", true, sbx);
	detect_ok(fx, &host, sbx);
	assert_false(host.has_cpu_limit);
	assert_int_equal(cgroup_create(&cg, &host, "c", &lim, err, sizeof(err)),
			 0);
	assert_file(fx, "v2/own/sbx/c/memory.max", "67108864");
	assert_no_file(fx, "v2/own/sbx/c/cpu.max");
	assert_no_file(fx, "v2/own/sbx/c/cpu.weight");
	assert_int_equal(cgroup_set_limits(&cg, &lim), 0);
	assert_no_file(fx, "v2/own/sbx/c/cpu.max");
	assert_int_equal(cgroup_destroy(&cg), 0);
}

/* v1 with the cpu hierarchy mounted on its own (as on this project's CI
 * host): CFS bandwidth and shares in the cpu group. */
static void test_cpu_v1(void **state)
{
	struct fx *fx = *state;
	struct cgroup_limits lim = {
		.pids = 8, .cpu_quota_milli = 1500, .cpu_weight = 200};
	struct cgroup_host host;
	struct cgroup cg;
	char v1[PATH_MAX], p[PATH_MAX], buf[64], want[32], err[256] = "";
	pid_t pid;

	v1_tree(fx, false, v1);
	tpath(fx, p, "v1/cpu");
	mkdir_p(p);
	/* A hierarchy without CFS bandwidth control cannot limit. */
	detect_ok(fx, &host, v1);
	assert_false(host.has_cpu_limit);
	tpath(fx, p, "v1/cpu/cpu.cfs_quota_us");
	put(p, "-1\n");
	detect_ok(fx, &host, v1);
	assert_true(host.has_cpu_limit);
	tpath(fx, p, "v1/cpu");
	assert_string_equal(host.v1_cpu, p);
	assert_int_equal(
		cgroup_create(&cg, &host, "box", &lim, err, sizeof(err)), 0);
	tpath(fx, p, "v1/cpu/box");
	assert_string_equal(cg.cpu, p);
	assert_file(fx, "v1/cpu/box/cpu.cfs_period_us", "100000");
	assert_file(fx, "v1/cpu/box/cpu.cfs_quota_us", "150000");
	assert_file(fx, "v1/cpu/box/cpu.shares", "2048");
	assert_file(fx, "v1/pids/box/pids.max", "8");
	pid = spawn_sleeper();
	assert_int_equal(cgroup_attach(&cg, pid), 0);
	snprintf(want, sizeof(want), "%d", (int)pid);
	tpath(fx, p, "v1/cpu/box/cgroup.procs");
	assert_string_equal(get(p, buf, sizeof(buf)), want);
	/* Lifted for a warm sandbox's next run. */
	lim = (struct cgroup_limits){0};
	assert_int_equal(cgroup_set_limits(&cg, &lim), 0);
	assert_file(fx, "v1/cpu/box/cpu.cfs_quota_us", "-1");
	assert_file(fx, "v1/cpu/box/cpu.shares", "1024");
	assert_int_equal(cgroup_destroy(&cg), 0);
	assert_killed(pid);
	assert_no_file(fx, "v1/cpu/box");
	assert_no_file(fx, "v1/cpuacct/box");
}

/* cpu and cpuacct mounted together are one group, made and removed once. */
static void test_cpu_v1_comounted(void **state)
{
	struct fx *fx = *state;
	struct cgroup_limits lim = {.cpu_quota_milli = 250, .cpu_weight = 1};
	struct cgroup_host host;
	struct cgroup cg;
	char p[PATH_MAX], err[256] = "";
	FILE *f = mi_open(fx);

	mi_line(fx, f, "/", "memory", "cgroup", "rw,memory");
	mi_line(fx, f, "/", "cpu,cpuacct", "cgroup", "rw,cpu,cpuacct");
	assert_int_equal(fclose(f), 0);
	put(fx->self, "4:memory:/a\n2:cpu,cpuacct:/a\n0::/a\n");
	tpath(fx, p, "memory/a");
	mkdir_p(p);
	tpath(fx, p, "cpu,cpuacct/a/sbx");
	mkdir_p(p);
	tpath(fx, p, "cpu,cpuacct/a/sbx/cpu.cfs_quota_us");
	put(p, "-1\n");
	detect_ok(fx, &host, NULL);
	assert_int_equal(host.version, CGROUP_V1);
	assert_true(host.has_cpu_limit);
	assert_string_equal(host.v1_cpu, host.v1_cpuacct);
	assert_int_equal(
		cgroup_create(&cg, &host, "box", &lim, err, sizeof(err)), 0);
	assert_string_equal(cg.cpu, cg.cpuacct);
	assert_file(fx, "cpu,cpuacct/a/sbx/box/cpu.cfs_quota_us", "25000");
	assert_file(fx, "cpu,cpuacct/a/sbx/box/cpu.shares", "10");
	assert_int_equal(cgroup_destroy(&cg), 0);
	assert_no_file(fx, "cpu,cpuacct/a/sbx/box");
	assert_int_equal(cgroup_sweep(&host, NULL), 0);
}

/* A live group's limits are rewritten only where they change: a warm
 * sandbox given the limits it was built with writes nothing. */
static void test_set_limits_writes_changes(void **state)
{
	struct fx *fx = *state;
	struct cgroup_limits lim = {.cpu_quota_milli = 250, .cpu_weight = 1};
	struct cgroup_host host;
	struct cgroup cg;
	char p[PATH_MAX], err[256] = "";
	FILE *f = mi_open(fx);

	mi_line(fx, f, "/", "memory", "cgroup", "rw,memory");
	mi_line(fx, f, "/", "cpu,cpuacct", "cgroup", "rw,cpu,cpuacct");
	assert_int_equal(fclose(f), 0);
	put(fx->self, "4:memory:/a\n2:cpu,cpuacct:/a\n0::/a\n");
	tpath(fx, p, "memory/a");
	mkdir_p(p);
	tpath(fx, p, "cpu,cpuacct/a/sbx");
	mkdir_p(p);
	tpath(fx, p, "cpu,cpuacct/a/sbx/cpu.cfs_quota_us");
	put(p, "-1\n");
	detect_ok(fx, &host, NULL);
	assert_int_equal(
		cgroup_create(&cg, &host, "box", &lim, err, sizeof(err)), 0);
	assert_file(fx, "cpu,cpuacct/a/sbx/box/cpu.cfs_quota_us", "25000");
	/* The same limits: nothing is written. */
	tpath(fx, p, "cpu,cpuacct/a/sbx/box/cpu.cfs_quota_us");
	put(p, "untouched");
	assert_int_equal(cgroup_set_limits(&cg, &lim), 0);
	assert_file(fx, "cpu,cpuacct/a/sbx/box/cpu.cfs_quota_us", "untouched");
	assert_no_file(fx, "memory/a/sbx/box/memory.limit_in_bytes");
	/* A new memory limit writes memory alone; a new quota the CPU. */
	lim.memory_bytes = 1 << 20;
	assert_int_equal(cgroup_set_limits(&cg, &lim), 0);
	assert_file(fx, "memory/a/sbx/box/memory.limit_in_bytes", "1048576");
	assert_file(fx, "cpu,cpuacct/a/sbx/box/cpu.cfs_quota_us", "untouched");
	lim.cpu_quota_milli = 500;
	assert_int_equal(cgroup_set_limits(&cg, &lim), 0);
	assert_file(fx, "cpu,cpuacct/a/sbx/box/cpu.cfs_quota_us", "50000");
	assert_int_equal(cgroup_destroy(&cg), 0);
}

/* A v1 host without the cpu hierarchy: skipped, the run goes on. */
static void test_cpu_v1_missing(void **state)
{
	struct fx *fx = *state;
	struct cgroup_limits lim = {.cpu_quota_milli = 500, .cpu_weight = 50};
	struct cgroup_host host;
	struct cgroup cg;
	char v1[PATH_MAX], err[256] = "";

	v1_tree(fx, false, v1);
	detect_ok(fx, &host, v1);
	assert_false(host.has_cpu_limit);
	assert_string_equal(host.v1_cpu, "");
	assert_int_equal(
		cgroup_create(&cg, &host, "box", &lim, err, sizeof(err)), 0);
	assert_string_equal(cg.cpu, "");
	assert_no_file(fx, "v1/cpuacct/box/cpu.cfs_quota_us");
	assert_int_equal(cgroup_set_limits(&cg, &lim), 0);
	assert_int_equal(cgroup_destroy(&cg), 0);
}

static void test_limit_devices_v1(void **state)
{
	static const struct cgroup_device devs[] = {
		{'c', 1, 3},
		{'c', 136, CGROUP_DEV_ANY},
		{'b', 7, 0},
	};
	struct fx *fx = *state;
	struct cgroup_host host;
	struct cgroup cg;
	char v1[PATH_MAX], p[PATH_MAX], buf[128], want[32], err[256] = "";
	pid_t pid;

	v1_tree(fx, false, v1);
	tpath(fx, p, "v1/devices");
	mkdir_p(p);
	detect_ok(fx, &host, v1);
	assert_int_equal(cgroup_create(&cg, &host, "a", NULL, err, sizeof(err)),
			 0);
	/* Only cgroup_limit_devices() makes a devices group. */
	assert_string_equal(cg.devices, "");
	tpath(fx, p, "v1/devices/a");
	assert_false(exists(p));
	assert_int_equal(cgroup_limit_devices(&cg, &host, "a", devs,
					      ARRAY_SIZE(devs), err,
					      sizeof(err)),
			 0);
	assert_string_equal(cg.devices, p);
	tpath(fx, p, "v1/devices/a/devices.deny");
	assert_string_equal(get(p, buf, sizeof(buf)), "a");
	/* One write each, appended (cgroupfs takes one rule per write). */
	tpath(fx, p, "v1/devices/a/devices.allow");
	assert_string_equal(get(p, buf, sizeof(buf)),
			    "c 1:3 rwc 136:* rwb 7:0 rw");
	pid = spawn_sleeper();
	assert_int_equal(cgroup_attach(&cg, pid), 0);
	snprintf(want, sizeof(want), "%d", (int)pid);
	tpath(fx, p, "v1/devices/a/cgroup.procs");
	assert_string_equal(get(p, buf, sizeof(buf)), want);
	assert_int_equal(cgroup_destroy(&cg), 0);
	assert_killed(pid);
	tpath(fx, p, "v1/devices/a");
	assert_false(exists(p));
	assert_string_equal(cg.devices, "");
}

/* Without a way to enforce them, device rules fail and say why. */
static void test_limit_devices_refused(void **state)
{
	const struct cgroup_device null_dev = {'c', 1, 3};
	struct cgroup_device many[CGROUP_MAX_DEVICES + 1];
	struct fx *fx = *state;
	struct cgroup_host host;
	struct cgroup cg;
	char v1[PATH_MAX], p[PATH_MAX], err[256] = "";

	v1_tree(fx, false, v1);
	detect_ok(fx, &host, v1);
	assert_int_equal(cgroup_create(&cg, &host, "a", NULL, err, sizeof(err)),
			 0);
	assert_int_equal(cgroup_limit_devices(&cg, &host, "a", &null_dev, 1,
					      err, sizeof(err)),
			 -EOPNOTSUPP);
	assert_string_equal(err, "device rules cannot be enforced on this "
				 "host (no cgroup v1 devices controller)");
	assert_string_equal(cg.devices, "");
	assert_int_equal(cgroup_destroy(&cg), 0);

	tpath(fx, p, "v1/devices");
	mkdir_p(p);
	detect_ok(fx, &host, v1);
	assert_int_equal(cgroup_create(&cg, &host, "a", NULL, err, sizeof(err)),
			 0);
	for (size_t i = 0; i < ARRAY_SIZE(many); i++)
		many[i] = null_dev;
	assert_int_equal(cgroup_limit_devices(&cg, &host, "a", many,
					      ARRAY_SIZE(many), err,
					      sizeof(err)),
			 -E2BIG);
	many[0].type = 'x';
	assert_int_equal(cgroup_limit_devices(&cg, &host, "a", many, 1, err,
					      sizeof(err)),
			 -EINVAL);
	assert_string_equal(err, "bad device type 'x'");
	assert_int_equal(cgroup_limit_devices(&cg, &host, "../a", &null_dev, 1,
					      err, sizeof(err)),
			 -EINVAL);
	assert_string_equal(cg.devices, "");
	assert_int_equal(cgroup_destroy(&cg), 0);

	memset(&cg, 0, sizeof(cg));
	host = (struct cgroup_host){0};
	assert_int_equal(cgroup_limit_devices(&cg, &host, "a", &null_dev, 1,
					      err, sizeof(err)),
			 -EOPNOTSUPP);
	assert_string_equal(err, "device rules cannot be enforced on this "
				 "host (no usable cgroups)");
}

/* The program's shape: prologue, one test per device, the deny tail. */
static void test_dev_prog_build(void **state)
{
	static const struct cgroup_device devs[] = {
		{'c', 1, 3},
		{'c', 136, CGROUP_DEV_ANY},
	};
	struct bpf_insn p[64];
	struct cgroup_device bad = {'c', 4096, 0};
	int n;

	n = cgroup_dev_prog_build(p, ARRAY_SIZE(p), devs, ARRAY_SIZE(devs));
	assert_int_equal(n, 7 + 5 + 4 + 2);
	/* mknod goes straight to the deny tail. */
	assert_int_equal(p[6].code, BPF_JMP | BPF_JSET | BPF_K);
	assert_int_equal(p[6].imm, BPF_DEVCG_ACC_MKNOD);
	assert_int_equal(6 + 1 + p[6].off, n - 2);
	/* c 1:3: type, major, minor; each skips to the next test. */
	assert_int_equal(p[7].imm, BPF_DEVCG_DEV_CHAR);
	assert_int_equal(7 + 1 + p[7].off, 12);
	assert_int_equal(p[8].imm, 1);
	assert_int_equal(8 + 1 + p[8].off, 12);
	assert_int_equal(p[9].imm, 3);
	assert_int_equal(9 + 1 + p[9].off, 12);
	assert_int_equal(p[10].code, BPF_ALU64 | BPF_MOV | BPF_K);
	assert_int_equal(p[10].imm, 1);
	assert_int_equal(p[11].code, BPF_JMP | BPF_EXIT);
	/* c 136:*: no minor test. */
	assert_int_equal(p[13].imm, 136);
	assert_int_equal(13 + 1 + p[13].off, 16);
	assert_int_equal(p[14].imm, 1);
	assert_int_equal(p[16].imm, 0);
	assert_int_equal(p[17].code, BPF_JMP | BPF_EXIT);

	assert_int_equal(cgroup_dev_prog_build(p, 10, devs, ARRAY_SIZE(devs)),
			 -E2BIG);
	assert_int_equal(cgroup_dev_prog_build(p, ARRAY_SIZE(p), &bad, 1),
			 -EINVAL);
	bad = (struct cgroup_device){'c', 1, 1u << 20};
	assert_int_equal(cgroup_dev_prog_build(p, ARRAY_SIZE(p), &bad, 1),
			 -EINVAL);
	assert_int_equal(cgroup_dev_prog_build(p, ARRAY_SIZE(p), NULL, 0), 9);
}

static void test_weight_to_shares(void **state)
{
	assert_int_equal(cgroup_weight_to_shares(0), 1024);
	assert_int_equal(cgroup_weight_to_shares(100), 1024);
	assert_int_equal(cgroup_weight_to_shares(1), 10);
	assert_int_equal(cgroup_weight_to_shares(10000), 102400);
	assert_int_equal(cgroup_weight_to_shares(20000), 102400);
}

static void test_describe(void **state)
{
	struct cgroup_host host = {
		.version = CGROUP_V1,
		.has_memory = true,
		.has_swap_limit = true,
		.has_pids = true,
		.has_cpu = true,
	};
	char buf[512];

	cgroup_host_describe(&host, buf, sizeof(buf));
	assert_string_equal(buf, "cgroup: v1\n"
				 "cgroup memory: yes (swap capped: yes)\n"
				 "cgroup pids: yes\n"
				 "cgroup cpu accounting: yes\n"
				 "cgroup cpu limits: no (no cpu controller: "
				 "CPU quota and weight are skipped, runs go "
				 "on)\n"
				 "cgroup devices: no (sandboxes asking for "
				 "GPUs are refused)\n");
	host.has_devices = true;
	cgroup_host_describe(&host, buf, sizeof(buf));
	assert_non_null(strstr(buf, "cgroup devices: yes (the v1 devices "
				    "controller, for each sandbox with "
				    "GPUs)\n"));
	host.has_cpu_limit = true;
	cgroup_host_describe(&host, buf, sizeof(buf));
	assert_non_null(strstr(buf, "cgroup cpu limits: yes\n"));
	host = (struct cgroup_host){.version = CGROUP_V2, .has_memory = true};
	cgroup_host_describe(&host, buf, sizeof(buf));
	assert_string_equal(buf, "cgroup: v2\n"
				 "cgroup memory: yes (swap capped: no)\n"
				 "cgroup pids: no\n"
				 "cgroup cpu accounting: no\n"
				 "cgroup cpu limits: no (no cpu controller: "
				 "CPU quota and weight are skipped, runs go "
				 "on)\n"
				 "cgroup devices: no (sandboxes asking for "
				 "GPUs are refused)\n");
	host.has_devices = true;
	cgroup_host_describe(&host, buf, sizeof(buf));
	assert_non_null(strstr(buf, "cgroup devices: yes (a BPF device "
				    "program for each sandbox with GPUs)\n"));
	host = (struct cgroup_host){0};
	cgroup_host_describe(&host, buf, sizeof(buf));
	assert_non_null(strstr(buf, "cgroup: none\n"
				    "cgroup memory: no\n"
				    "cgroup pids: no\n"
				    "cgroup cpu accounting: no\n"
				    "cgroup cpu limits: no"));
	cgroup_host_describe(&host, buf, 8);
	assert_string_equal(buf, "cgroup:");
}

/* Reads a real cgroup file and compares it with want plus a newline. */
static void assert_real_file(const char *dir, const char *name,
			     const char *want)
{
	char path[PATH_MAX], buf[128], line[128];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	snprintf(line, sizeof(line), "%s\n", want);
	assert_string_equal(get(path, buf, sizeof(buf)), line);
}

static bool in_cgroup_of(pid_t pid, const char *name)
{
	char path[64], buf[4096], want[128];

	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
	snprintf(want, sizeof(want), "/sbx/%s\n", name);
	return read_file(path, buf, sizeof(buf)) > 0 && strstr(buf, want);
}

static void test_real_host(void **state)
{
	struct cgroup_limits lim = {.memory_bytes = 64 * MiB, .pids = 16};
	struct cgroup_host host;
	struct cgroup_stats st;
	struct cgroup cg;
	char err[512], name[64], dirs[4][CGROUP_PATH_MAX];
	pid_t pid;

	if (geteuid() != 0) {
		print_message("skip: real cgroups need root\n");
		skip();
	}
	assert_int_equal(cgroup_host_detect(&host, "/proc/self/mountinfo",
					    "/proc/self/cgroup", NULL, err,
					    sizeof(err)),
			 0);
	if (host.version == CGROUP_NONE || !host.has_memory) {
		print_message("skip: no cgroup memory controller here (%s)\n",
			      err[0] ? err : "memory not delegated");
		skip();
	}
	snprintf(name, sizeof(name), "unit-%d-%llu", (int)getpid(),
		 (unsigned long long)now_ns());
	assert_int_equal(
		cgroup_create(&cg, &host, name, &lim, err, sizeof(err)), 0);
	if (host.version == CGROUP_V2) {
		assert_real_file(cg.v2, "memory.max", "67108864");
		if (host.has_swap_limit)
			assert_real_file(cg.v2, "memory.swap.max", "0");
		if (host.has_pids)
			assert_real_file(cg.v2, "pids.max", "16");
	} else {
		assert_real_file(cg.memory, "memory.limit_in_bytes",
				 "67108864");
		if (host.has_swap_limit)
			assert_real_file(cg.memory,
					 "memory.memsw.limit_in_bytes",
					 "67108864");
		else
			assert_real_file(cg.memory, "memory.swappiness", "0");
		if (host.has_pids)
			assert_real_file(cg.pids, "pids.max", "16");
	}
	str_copy(dirs[0], CGROUP_PATH_MAX, cg.v2);
	str_copy(dirs[1], CGROUP_PATH_MAX, cg.memory);
	str_copy(dirs[2], CGROUP_PATH_MAX, cg.pids);
	str_copy(dirs[3], CGROUP_PATH_MAX, cg.cpuacct);

	pid = spawn_sleeper();
	assert_int_equal(cgroup_attach(&cg, pid), 0);
	assert_true(in_cgroup_of(pid, name));
	assert_int_equal(cgroup_read_stats(&cg, &st), 0);
	if (host.has_cpu || host.version == CGROUP_V2)
		assert_true(st.has_cpu);
	if (host.version == CGROUP_V1)
		assert_true(st.has_peak);
	assert_true(st.has_oom);
	assert_int_equal(st.oom_kills, 0);

	assert_int_equal(cgroup_destroy(&cg), 0);
	assert_killed(pid);
	for (int i = 0; i < 4; i++)
		if (dirs[i][0])
			assert_false(exists(dirs[i]));
	assert_string_equal(cg.v2, "");
	assert_string_equal(cg.memory, "");
	assert_int_equal(cgroup_destroy(&cg), 0);

	/* Leave the host as found: the sbx directories go when empty (a
	 * server's groups in them make rmdir fail, which is fine). */
	rmdir(host.v2_dir);
	rmdir(host.v1_memory);
	rmdir(host.v1_pids);
	rmdir(host.v1_cpuacct);
}

/* Outcomes of the opens a process in a device-limited group tries. */
enum {
	OPEN_ALLOWED_FAILED = 1 << 0,
	OPEN_DENIED_WORKED = 1 << 1,
	OPEN_DENIED_NOT_EPERM = 1 << 2,
	MKNOD_NOT_EPERM = 1 << 3,
	NOT_STARTED = 1 << 4,
};

/* Forks a process that waits until the parent has attached it to cg, then
 * opens allowed (must work), each of denied (must fail with EPERM) and
 * makes a node with mknod (must fail with EPERM, though it is root).
 * Returns the child's exit status: a bit of the enum above per failure. */
static int opens_in_group(const struct cgroup *cg, const char *allowed,
			  const char *const *denied, size_t ndenied,
			  const char *dir)
{
	int go[2], status = 0;
	pid_t pid;

	assert_int_equal(pipe2(go, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char c, node[PATH_MAX];
		int fd, bits = 0;

		alarm(30);
		close(go[1]);
		if (read(go[0], &c, 1) != 1)
			_exit(NOT_STARTED);
		fd = open(allowed, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			bits |= OPEN_ALLOWED_FAILED;
		else
			close(fd);
		for (size_t i = 0; i < ndenied; i++) {
			fd = open(denied[i], O_RDONLY | O_CLOEXEC);
			if (fd >= 0) {
				bits |= OPEN_DENIED_WORKED;
				close(fd);
			} else if (errno != EPERM) {
				bits |= OPEN_DENIED_NOT_EPERM;
			}
		}
		snprintf(node, sizeof(node), "%s/made", dir);
		if (mknod(node, S_IFCHR | 0600, makedev(1, 3)) == 0 ||
		    errno != EPERM)
			bits |= MKNOD_NOT_EPERM;
		_exit(bits);
	}
	close(go[0]);
	assert_int_equal(cgroup_attach(cg, pid), 0);
	assert_int_equal(write(go[1], "g", 1), 1);
	close(go[1]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

/* Makes dir/name a character device node. */
static void make_node(const char *dir, const char *name, unsigned maj,
		      unsigned min, char *path)
{
	int n = snprintf(path, PATH_MAX, "%s/%s", dir, name);

	assert_true(n > 0 && n < PATH_MAX);
	assert_int_equal(mknod(path, S_IFCHR | 0600, makedev(maj, min)), 0);
}

/* v2: a fresh cgroup2 mount (device programs need no controller), one
 * group with the BPF program attached, a process moved into it. */
static void test_real_v2_devices(void **state)
{
	const struct cgroup_device null_dev = {'c', 1, 3};
	struct cgroup_host host = {.version = CGROUP_V2};
	struct cgroup cg = {.version = CGROUP_V2};
	char dir[] = "/tmp/sbx-cgroup2-XXXXXX", mnt[PATH_MAX], nodes[PATH_MAX];
	char null_copy[PATH_MAX] = "", mem[PATH_MAX] = "", zero[PATH_MAX] = "";
	char err[256], why[128] = "";
	const char *denied[2] = {mem, zero};
	bool mounted = false;
	int fd;

	if (geteuid() != 0) {
		print_message("skip: mounting cgroup2 needs root\n");
		skip();
	}
	assert_non_null(mkdtemp(dir));
	snprintf(mnt, sizeof(mnt), "%s/cg", dir);
	snprintf(nodes, sizeof(nodes), "%s/nodes", dir);
	assert_int_equal(mkdir(mnt, 0755), 0);
	assert_int_equal(mkdir(nodes, 0755), 0);
	if (mount("none", mnt, "cgroup2", 0, NULL) < 0) {
		snprintf(why, sizeof(why), "cannot mount cgroup2: %s",
			 strerror(errno));
		goto out;
	}
	mounted = true;
	if (!cgroup_dev_prog_works()) {
		snprintf(why, sizeof(why),
			 "bpf() cannot load a cgroup device program here");
		goto out;
	}
	assert_true(snprintf(cg.v2, sizeof(cg.v2), "%s/unit-%d", mnt,
			     (int)getpid()) < (int)sizeof(cg.v2));
	assert_int_equal(mkdir(cg.v2, 0755), 0);
	make_node(nodes, "null", 1, 3, null_copy);
	make_node(nodes, "mem", 1, 1, mem);
	make_node(nodes, "zero", 1, 5, zero);
	assert_int_equal(cgroup_limit_devices(&cg, &host, "x", &null_dev, 1,
					      err, sizeof(err)),
			 0);
	assert_int_equal(opens_in_group(&cg, null_copy, denied, 2, nodes), 0);
	/* Outside the group nothing changed. */
	fd = open(zero, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(rmdir(cg.v2), 0);
	/* The program goes on a cgroup2 directory only. */
	assert_true(cgroup_dev_prog_attach(nodes, &null_dev, 1, err,
					   sizeof(err)) < 0);
	assert_non_null(strstr(err, "cannot attach the BPF device program"));
out:
	if (mounted)
		assert_int_equal(umount2(mnt, 0), 0);
	if (null_copy[0])
		unlink(null_copy);
	if (mem[0])
		unlink(mem);
	if (zero[0])
		unlink(zero);
	rmdir(nodes);
	rmdir(mnt);
	rmdir(dir);
	if (why[0]) {
		print_message("skip: %s\n", why);
		skip();
	}
}

/* v1: the host's devices hierarchy, as a GPU sandbox gets it. */
static void test_real_v1_devices(void **state)
{
	const struct cgroup_device null_dev = {'c', 1, 3};
	struct cgroup_host host;
	struct cgroup cg;
	char dir[] = "/tmp/sbx-devices-XXXXXX", name[64], err[512], buf[256];
	char null_copy[PATH_MAX], mem[PATH_MAX], zero[PATH_MAX], p[PATH_MAX];
	const char *denied[2] = {mem, zero};

	if (geteuid() != 0) {
		print_message("skip: real cgroups need root\n");
		skip();
	}
	assert_int_equal(cgroup_host_detect(&host, "/proc/self/mountinfo",
					    "/proc/self/cgroup", NULL, err,
					    sizeof(err)),
			 0);
	if (host.version != CGROUP_V1 || !host.v1_devices[0]) {
		print_message("skip: no cgroup v1 devices controller here\n");
		skip();
	}
	assert_non_null(mkdtemp(dir));
	make_node(dir, "null", 1, 3, null_copy);
	make_node(dir, "mem", 1, 1, mem);
	make_node(dir, "zero", 1, 5, zero);
	snprintf(name, sizeof(name), "unit-dev-%d", (int)getpid());
	assert_int_equal(
		cgroup_create(&cg, &host, name, NULL, err, sizeof(err)), 0);
	assert_int_equal(cgroup_limit_devices(&cg, &host, name, &null_dev, 1,
					      err, sizeof(err)),
			 0);
	snprintf(p, sizeof(p), "%s/devices.list", cg.devices);
	assert_string_equal(get(p, buf, sizeof(buf)), "c 1:3 rw\n");
	assert_int_equal(opens_in_group(&cg, null_copy, denied, 2, dir), 0);
	str_copy(p, sizeof(p), cg.devices);
	assert_int_equal(cgroup_destroy(&cg), 0);
	assert_false(exists(p));
	unlink(null_copy);
	unlink(mem);
	unlink(zero);
	rmdir(dir);
	rmdir(host.v1_memory);
	rmdir(host.v1_pids);
	rmdir(host.v1_cpuacct);
	rmdir(host.v1_devices);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_detect_none, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_detect_missing_mountinfo,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_detect_v2_override, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_detect_v2_partial, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_detect_v2_busy_own_cgroup,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_detect_v2_derived, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_detect_v1_override, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_detect_hybrid, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_create_v2, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_create_v2_no_swap_file,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_create_v1_memsw, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_create_v1_swappiness,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_create_errors, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_attach_v2, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_attach_v1, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_stats_v2, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stats_v1, setup, teardown),
		cmocka_unit_test_setup_teardown(test_peak_reset_v2, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_destroy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sweep, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cpu_v2, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cpu_v2_missing, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_cpu_v1, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cpu_v1_comounted, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_set_limits_writes_changes,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_cpu_v1_missing, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_limit_devices_v1, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_limit_devices_refused,
						setup, teardown),
		cmocka_unit_test(test_dev_prog_build),
		cmocka_unit_test(test_weight_to_shares),
		cmocka_unit_test(test_describe),
		cmocka_unit_test(test_real_host),
		cmocka_unit_test(test_real_v2_devices),
		cmocka_unit_test(test_real_v1_devices),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

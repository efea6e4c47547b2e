/*
 * Control groups for sandboxes. At start-up cgroup_host_detect() reads
 * /proc/self/mountinfo and /proc/self/cgroup, picks v2 when the unified
 * hierarchy carries the memory controller (else the v1 memory, pids,
 * cpuacct, cpu and devices hierarchies) and makes an "sbx" directory under
 * sbx's own cgroup. Each sandbox then gets one group below it: created with
 * its limits before the sandbox's init is attached, read for usage
 * afterwards, and killed and removed at the end. A sandbox with device nodes
 * of its own (GPUs) also gets device rules: a group in the v1 devices
 * hierarchy, or on v2 a BPF program (cgroup_dev.c). Leftovers of a crashed
 * server are swept at start-up.
 *
 * Every path comes from struct cgroup_host, so the unit tests run all of
 * this against a tree of plain directories and files.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sandbox/cgroup.h"
#include "base/log.h"
#include "base/util.h"
#include "base/banned.h"

/* The v1 hierarchies sbx uses, in the order of struct cgroup's fields. */
enum { CTRL_MEMORY, CTRL_PIDS, CTRL_CPUACCT, CTRL_CPU, CTRL_DEVICES, NCTRL };
static const char *const ctrl_names[NCTRL] = {"memory", "pids", "cpuacct",
					      "cpu", "devices"};

/* rmdir of a group whose processes were just killed is retried this many
 * times, 1 ms apart, while the kernel still counts them. */
#define RMDIR_TRIES 200
/* How deep destroy follows child groups a sandbox made itself. */
#define MAX_DEPTH 8

/* What mountinfo and the self cgroup file say, before any decision. */
struct scan {
	char v2_mount[CGROUP_PATH_MAX];
	char v2_root[CGROUP_PATH_MAX];
	char v2_own[CGROUP_PATH_MAX];
	char v1_mount[NCTRL][CGROUP_PATH_MAX];
	char v1_root[NCTRL][CGROUP_PATH_MAX];
	char v1_own[NCTRL][CGROUP_PATH_MAX];
};

/* Messages may be cut at errlen; a shortened message is still useful. */
__attribute__((format(printf, 3, 4))) static void
set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Formats a path into dst (CGROUP_PATH_MAX bytes). Returns 0 or
 * -ENAMETOOLONG, leaving dst empty. */
__attribute__((format(printf, 2, 3))) static int path_fmt(char *dst,
							  const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(dst, CGROUP_PATH_MAX, fmt, ap);
	va_end(ap);
	if (n < 0 || n >= CGROUP_PATH_MAX) {
		dst[0] = '\0';
		return -ENAMETOOLONG;
	}
	return 0;
}

/* Whether word is one of the tokens of list, split at any byte of seps. */
static bool list_has(const char *list, const char *seps, const char *word)
{
	size_t wlen = strlen(word);
	const char *p = list;

	while (*p) {
		size_t n;

		p += strspn(p, seps);
		n = strcspn(p, seps);
		if (n && n == wlen && !memcmp(p, word, n))
			return true;
		p += n;
	}
	return false;
}

static bool is_octal(char c)
{
	return c >= '0' && c <= '7';
}

/* Undoes mountinfo's escaping of space, tab, newline and backslash. */
static void unescape_octal(char *s)
{
	const char *r = s;
	char *w = s;

	while (*r) {
		if (r[0] == '\\' && is_octal(r[1]) && is_octal(r[2]) &&
		    is_octal(r[3])) {
			*w++ = (char)(((r[1] - '0') << 6) |
				      ((r[2] - '0') << 3) | (r[3] - '0'));
			r += 4;
		} else {
			*w++ = *r++;
		}
	}
	*w = '\0';
}

static bool is_dir(const char *path)
{
	struct stat st;

	return !stat(path, &st) && S_ISDIR(st.st_mode);
}

static bool file_exists(const char *dir, const char *name)
{
	char path[CGROUP_PATH_MAX];

	return !path_fmt(path, "%s/%s", dir, name) && !access(path, F_OK);
}

/* mkdir that accepts an existing directory. Returns 0 or -errno. */
static int make_dir(const char *path)
{
	if (!mkdir(path, 0755))
		return 0;
	if (errno == EEXIST)
		return is_dir(path) ? 0 : -ENOTDIR;
	return -errno;
}

/* Writes val to dir/name, truncating it or, with append, appending. Real
 * cgroupfs has every file already; the plain directories of test trees do
 * not, so a missing file is created there (cgroupfs refuses that, and the
 * ENOENT stands). Returns 0 or -errno. */
static int write_at(const char *dir, const char *name, const char *val,
		    bool append)
{
	int flags =
		O_WRONLY | O_CLOEXEC | O_NOCTTY | (append ? O_APPEND : O_TRUNC);
	char path[CGROUP_PATH_MAX];
	int fd, r;

	r = path_fmt(path, "%s/%s", dir, name);
	if (r)
		return r;
	fd = open(path, flags);
	if (fd < 0 && errno == ENOENT) {
		fd = open(path, flags | O_CREAT | O_EXCL, 0644);
		if (fd < 0)
			return -ENOENT;
	}
	if (fd < 0)
		return -errno;
	r = write_full(fd, val, strlen(val));
	fd_close(&fd);
	return r;
}

static ssize_t read_at(const char *dir, const char *name, char *buf, size_t n)
{
	char path[CGROUP_PATH_MAX];
	int r;

	r = path_fmt(path, "%s/%s", dir, name);
	if (r)
		return r;
	return read_file(path, buf, n);
}

/* Parses the first len bytes of s as a decimal number. */
static int parse_u64_n(const char *s, size_t len, uint64_t *out)
{
	char num[32];

	if (len >= sizeof(num))
		return -ERANGE;
	memcpy(num, s, len);
	num[len] = '\0';
	return parse_u64(num, out);
}

/* Reads a file that holds one number ("123\n"). Returns 0 or -errno. */
static int read_u64_at(const char *dir, const char *name, uint64_t *out)
{
	char buf[64];
	ssize_t r = read_at(dir, name, buf, sizeof(buf));

	if (r < 0)
		return (int)r;
	return parse_u64_n(buf, strcspn(buf, " \t\n"), out);
}

/* Reads the value of the "key value" line of a flat-keyed file such as
 * cpu.stat or memory.events. Returns 0, -ENOENT without that key, or
 * -errno. */
static int read_key_at(const char *dir, const char *name, const char *key,
		       uint64_t *out)
{
	size_t klen = strlen(key);
	char buf[4096];
	const char *line;
	ssize_t r;

	r = read_at(dir, name, buf, sizeof(buf));
	if (r < 0)
		return (int)r;
	line = buf;
	while (*line) {
		const char *end = line + strcspn(line, "\n");

		if (!strncmp(line, key, klen) && line[klen] == ' ') {
			line += klen + 1;
			return parse_u64_n(line, strcspn(line, " \t\n"), out);
		}
		line = *end ? end + 1 : end;
	}
	return -ENOENT;
}

/* Handles one mountinfo line:
 * "36 35 0:30 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup
 * rw,memory". The first mount of each kind wins. */
static void scan_mount_line(char *line, struct scan *sc)
{
	char *root = NULL, *mnt = NULL, *fstype = NULL, *super = NULL;
	char *save = NULL, *tok;
	int field = 0, after = -1;

	line[strcspn(line, "\n")] = '\0';
	for (tok = strtok_r(line, " ", &save); tok;
	     tok = strtok_r(NULL, " ", &save), field++) {
		if (after < 0) {
			if (field == 3)
				root = tok;
			else if (field == 4)
				mnt = tok;
			else if (field >= 6 && !strcmp(tok, "-"))
				after = 0;
			continue;
		}
		if (after == 0)
			fstype = tok;
		else if (after == 2)
			super = tok;
		after++;
	}
	if (!root || !mnt || !fstype)
		return;
	unescape_octal(root);
	unescape_octal(mnt);
	if (!strcmp(fstype, "cgroup2")) {
		if (sc->v2_mount[0])
			return;
		if (!str_copy(sc->v2_mount, CGROUP_PATH_MAX, mnt) ||
		    !str_copy(sc->v2_root, CGROUP_PATH_MAX, root))
			sc->v2_mount[0] = '\0';
		return;
	}
	if (strcmp(fstype, "cgroup") || !super)
		return;
	for (int c = 0; c < NCTRL; c++) {
		if (sc->v1_mount[c][0] || !list_has(super, ",", ctrl_names[c]))
			continue;
		if (!str_copy(sc->v1_mount[c], CGROUP_PATH_MAX, mnt) ||
		    !str_copy(sc->v1_root[c], CGROUP_PATH_MAX, root))
			sc->v1_mount[c][0] = '\0';
	}
}

/* Handles one /proc/self/cgroup line: "0::/path" for v2, or
 * "4:cpu,cpuacct:/path" for v1. The path may itself hold colons. */
static void scan_cgroup_line(char *line, struct scan *sc)
{
	char *ctrls, *path;

	line[strcspn(line, "\n")] = '\0';
	ctrls = strchr(line, ':');
	if (!ctrls)
		return;
	*ctrls++ = '\0';
	path = strchr(ctrls, ':');
	if (!path || path[1] != '/')
		return;
	*path++ = '\0';
	if (!*ctrls) {
		if (!strcmp(line, "0") &&
		    !str_copy(sc->v2_own, CGROUP_PATH_MAX, path))
			sc->v2_own[0] = '\0';
		return;
	}
	for (int c = 0; c < NCTRL; c++) {
		if (!list_has(ctrls, ",", ctrl_names[c]))
			continue;
		if (!str_copy(sc->v1_own[c], CGROUP_PATH_MAX, path))
			sc->v1_own[c][0] = '\0';
	}
}

/* Feeds every line of path to fn. Returns 0 or -errno. */
static int scan_file(const char *path, struct scan *sc,
		     void (*fn)(char *line, struct scan *sc))
{
	FILE *f = fopen(path, "re");
	size_t cap = 0;
	char *line = NULL;
	int r = 0;

	if (!f)
		return -errno;
	while (getline(&line, &cap, f) > 0)
		fn(line, sc);
	if (ferror(f))
		r = -EIO;
	free(line);
	fclose(f);
	return r;
}

/* The part of own (a path in the hierarchy) below the mount's root, ""
 * for the root itself. A path outside the root is used as it is: the best
 * guess when a cgroup namespace hides how the two relate. */
static const char *rel_path(const char *root, const char *own)
{
	size_t n = strlen(root);

	if (strcmp(root, "/") && !strncmp(own, root, n) &&
	    (own[n] == '/' || own[n] == '\0'))
		own += n;
	return strcmp(own, "/") ? own : "";
}

/* Copies the parent directory of path into dst (CGROUP_PATH_MAX bytes). */
static int parent_dir(char *dst, const char *path)
{
	size_t n;
	char *slash;

	if (!str_copy(dst, CGROUP_PATH_MAX, path))
		return -ENAMETOOLONG;
	n = strlen(dst);
	while (n > 1 && dst[n - 1] == '/')
		dst[--n] = '\0';
	slash = strrchr(dst, '/');
	if (!slash)
		return str_copy(dst, CGROUP_PATH_MAX, ".") ? 0 : -ENAMETOOLONG;
	if (slash == dst)
		slash[1] = '\0';
	else
		*slash = '\0';
	return 0;
}

/* v2 is used only when the unified hierarchy carries memory: on a hybrid
 * host it is mounted but empty, and v1 holds the controllers. */
static bool v2_has_memory(const struct scan *sc)
{
	char buf[1024];

	if (!sc->v2_mount[0] ||
	    read_at(sc->v2_mount, "cgroup.controllers", buf, sizeof(buf)) < 0)
		return false;
	return list_has(buf, " \t\n", "memory");
}

static bool any_v1_mount(const struct scan *sc)
{
	for (int c = 0; c < NCTRL; c++)
		if (sc->v1_mount[c][0])
			return true;
	return false;
}

/* Enables the controllers sbx uses below dir, one at a time so a missing
 * one does not block the others. Failures only show as absent controllers
 * later (a cgroup with processes of its own refuses with EBUSY). */
static void enable_controllers(const char *dir)
{
	static const char *const ctrls[] = {"+memory", "+pids", "+cpu"};

	for (size_t i = 0; i < ARRAY_SIZE(ctrls); i++) {
		int r = write_at(dir, "cgroup.subtree_control", ctrls[i], true);

		if (r)
			log_debug("cgroup: cannot enable '%s' in '%s': %s",
				  ctrls[i], dir, strerror(-r));
	}
}

static int remove_group(const char *dir, int depth);

static int setup_v2(struct cgroup_host *host, const struct scan *sc,
		    const char *override_dir, char *err, size_t errlen)
{
	char dir[CGROUP_PATH_MAX], parent[CGROUP_PATH_MAX], buf[1024];
	int r;

	if (override_dir) {
		r = path_fmt(dir, "%s", override_dir);
	} else if (!sc->v2_own[0]) {
		set_err(err, errlen, "no cgroup v2 path for sbx's own cgroup");
		return -ENOENT;
	} else {
		r = path_fmt(dir, "%s%s/sbx", sc->v2_mount,
			     rel_path(sc->v2_root, sc->v2_own));
	}
	if (!r)
		r = parent_dir(parent, dir);
	if (!r)
		r = make_dir(dir);
	if (r) {
		set_err(err, errlen, "cannot create '%s': %s", dir,
			strerror(-r));
		return r;
	}
	/* The parent is sbx's own cgroup, or the one that delegates the
	 * override directory. */
	enable_controllers(parent);
	enable_controllers(dir);
	if (read_at(dir, "cgroup.controllers", buf, sizeof(buf)) < 0)
		buf[0] = '\0';
	/* sbx's own cgroup holds processes (a login shell's scope, say), so
	 * v2's no-internal-processes rule keeps controllers from it: fall
	 * back to a group at the top of the hierarchy, where the rule does
	 * not apply. */
	if (!override_dir && !list_has(buf, " \t\n", "memory") &&
	    *rel_path(sc->v2_root, sc->v2_own) &&
	    path_fmt(parent, "%s/sbx", sc->v2_mount) == 0 &&
	    make_dir(parent) == 0) {
		log_debug("cgroup: no controllers in '%s', using '%s'", dir,
			  parent);
		remove_group(dir, 0);
		str_copy(dir, sizeof(dir), parent);
		enable_controllers(sc->v2_mount);
		enable_controllers(dir);
		if (read_at(dir, "cgroup.controllers", buf, sizeof(buf)) < 0)
			buf[0] = '\0';
	}
	host->version = CGROUP_V2;
	str_copy(host->v2_dir, sizeof(host->v2_dir), dir);
	host->has_memory = list_has(buf, " \t\n", "memory");
	host->has_pids = list_has(buf, " \t\n", "pids");
	host->has_cpu = list_has(buf, " \t\n", "cpu");
	/* Each sandbox's group has cpu.max and cpu.weight only when sbx's
	 * directory has the cpu controller and enables it for its children
	 * (above); a write there may have failed. */
	host->has_cpu_limit =
		host->has_cpu &&
		read_at(dir, "cgroup.subtree_control", buf, sizeof(buf)) >= 0 &&
		list_has(buf, " \t\n+", "cpu");
	host->has_swap_limit =
		host->has_memory && file_exists(dir, "memory.swap.max");
	host->has_devices = cgroup_dev_prog_works();
	return 0;
}

/* With an override, its "memory", "pids", "cpuacct", "cpu" and "devices"
 * subdirectories are used as they are: they stand for directories in
 * different hierarchies, so sbx must not make them as plain directories.
 * cpu and cpuacct are often mounted together: then both are one
 * directory. */
static int setup_v1(struct cgroup_host *host, const struct scan *sc,
		    const char *override_dir, char *err, size_t errlen)
{
	char *dst[NCTRL] = {host->v1_memory, host->v1_pids, host->v1_cpuacct,
			    host->v1_cpu, host->v1_devices};
	char dir[CGROUP_PATH_MAX];
	bool any = false;
	int r;

	for (int c = 0; c < NCTRL; c++) {
		if (override_dir) {
			if (path_fmt(dir, "%s/%s", override_dir,
				     ctrl_names[c]) ||
			    !is_dir(dir))
				continue;
		} else {
			if (!sc->v1_mount[c][0] || !sc->v1_own[c][0])
				continue;
			r = path_fmt(dir, "%s%s/sbx", sc->v1_mount[c],
				     rel_path(sc->v1_root[c], sc->v1_own[c]));
			if (!r)
				r = make_dir(dir);
			if (r) {
				set_err(err, errlen, "cannot create '%s': %s",
					dir, strerror(-r));
				continue;
			}
		}
		str_copy(dst[c], CGROUP_PATH_MAX, dir);
		/* Device rules alone are no reason to use v1. */
		any = any || c != CTRL_DEVICES;
	}
	if (!any) {
		if (override_dir)
			set_err(err, errlen,
				"no controller directories in '%s'",
				override_dir);
		return -ENOENT;
	}
	host->version = CGROUP_V1;
	host->has_memory = host->v1_memory[0];
	host->has_pids = host->v1_pids[0];
	host->has_cpu = host->v1_cpuacct[0];
	/* Kernels without CFS bandwidth control have the hierarchy but no
	 * quota files. */
	host->has_cpu_limit = host->v1_cpu[0] &&
			      file_exists(host->v1_cpu, "cpu.cfs_quota_us");
	host->has_swap_limit =
		host->has_memory &&
		file_exists(host->v1_memory, "memory.memsw.limit_in_bytes");
	host->has_devices = host->v1_devices[0];
	return 0;
}

int cgroup_host_detect(struct cgroup_host *host, const char *mountinfo,
		       const char *self_cgroup, const char *override_dir,
		       char *err, size_t errlen)
{
	struct scan sc;
	int r;

	memset(host, 0, sizeof(*host));
	memset(&sc, 0, sizeof(sc));
	set_err(err, errlen, "%s", "");
	r = scan_file(mountinfo, &sc, scan_mount_line);
	if (r) {
		set_err(err, errlen, "cannot read '%s': %s", mountinfo,
			strerror(-r));
		return r;
	}
	r = scan_file(self_cgroup, &sc, scan_cgroup_line);
	if (r) {
		set_err(err, errlen, "cannot read '%s': %s", self_cgroup,
			strerror(-r));
		return r;
	}
	set_err(err, errlen, "no cgroup hierarchy with usable controllers");
	if (v2_has_memory(&sc) &&
	    !setup_v2(host, &sc, override_dir, err, errlen))
		goto out_found;
	memset(host, 0, sizeof(*host));
	if (any_v1_mount(&sc) &&
	    !setup_v1(host, &sc, override_dir, err, errlen))
		goto out_found;
	/* Nothing usable is not an error: err says why for `sbx check`. */
	memset(host, 0, sizeof(*host));
	return 0;

out_found:
	set_err(err, errlen, "%s", "");
	return 0;
}

void cgroup_host_describe(const struct cgroup_host *host, char *buf, size_t len)
{
	static const char *const versions[] = {"none", "v1", "v2"};
	unsigned v = (unsigned)host->version;

	if (!len)
		return;
	/* A short buffer only cuts the summary: it is for people. */
	snprintf(buf, len,
		 "cgroup: %s\n"
		 "cgroup memory: %s%s\n"
		 "cgroup pids: %s\n"
		 "cgroup cpu accounting: %s\n"
		 "cgroup cpu limits: %s\n"
		 "cgroup devices: %s\n",
		 v < ARRAY_SIZE(versions) ? versions[v] : "unknown",
		 host->has_memory ? "yes" : "no",
		 !host->has_memory	? ""
		 : host->has_swap_limit ? " (swap capped: yes)"
					: " (swap capped: no)",
		 host->has_pids ? "yes" : "no", host->has_cpu ? "yes" : "no",
		 host->has_cpu_limit ? "yes"
				     : "no (no cpu controller: CPU quota and "
				       "weight are skipped, runs go on)",
		 !host->has_devices
			 ? "no (sandboxes asking for GPUs are refused)"
		 : host->version == CGROUP_V2
			 ? "yes (a BPF device program for each sandbox with "
			   "GPUs)"
			 : "yes (the v1 devices controller, for each sandbox "
			   "with GPUs)");
}

/* Whether d's entry de is a directory (or, with want_dir false, a regular
 * file); symbolic links are neither. */
static bool entry_is(DIR *d, const struct dirent *de, bool want_dir)
{
	struct stat st;

	if (de->d_type != DT_UNKNOWN)
		return de->d_type == (want_dir ? DT_DIR : DT_REG);
	if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW))
		return false;
	return want_dir ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode);
}

/* Returns the names of dir's subdirectories as a NULL-terminated array
 * that the caller frees with free_names(), or NULL when dir cannot be
 * read. */
static char **list_subdirs(const char *dir)
{
	size_t n = 0, cap = 8;
	struct dirent *de;
	char **names;
	DIR *d;

	d = opendir(dir);
	if (!d)
		return NULL;
	names = xmalloc(cap * sizeof(*names));
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		    !entry_is(d, de, true))
			continue;
		if (n + 1 >= cap) {
			cap *= 2;
			names = xrealloc(names, cap * sizeof(*names));
		}
		names[n++] = xstrdup(de->d_name);
	}
	names[n] = NULL;
	closedir(d);
	return names;
}

static void free_names(char **names)
{
	if (!names)
		return;
	for (char **p = names; *p; p++)
		free(*p);
	free(names);
}

/* Removes the regular files of a test tree's group directory. On cgroupfs
 * rmdir never fails with ENOTEMPTY, so this only runs on plain trees. */
static void unlink_files(const char *dir)
{
	struct dirent *de;
	DIR *d = opendir(dir);

	if (!d)
		return;
	while ((de = readdir(d)))
		if (entry_is(d, de, false))
			unlinkat(dirfd(d), de->d_name, 0);
	closedir(d);
}

/* Kills every process in the group dir: at once through cgroup.kill on v2
 * (5.14+), else one SIGKILL per pid in cgroup.procs. Never signals pid 1
 * or sbx itself, whatever the file says. */
static void kill_procs(const char *dir)
{
	char path[CGROUP_PATH_MAX];
	size_t cap = 0;
	char *line = NULL;
	FILE *f;

	if (file_exists(dir, "cgroup.kill") &&
	    !write_at(dir, "cgroup.kill", "1", false))
		return;
	if (path_fmt(path, "%s/cgroup.procs", dir))
		return;
	f = fopen(path, "re");
	if (!f)
		return;
	while (getline(&line, &cap, f) > 0) {
		uint64_t pid;

		line[strcspn(line, "\n")] = '\0';
		if (parse_u64(line, &pid) || pid <= 1 || pid > INT_MAX ||
		    (pid_t)pid == getpid())
			continue;
		kill((pid_t)pid, SIGKILL);
	}
	free(line);
	fclose(f);
}

static int remove_group(const char *dir, int depth);

/* Removes the child groups a sandbox may have made under dir. */
static void remove_children(const char *dir, int depth)
{
	char path[CGROUP_PATH_MAX];
	char **names = list_subdirs(dir);

	for (char **p = names; p && *p; p++)
		if (!path_fmt(path, "%s/%s", dir, *p))
			remove_group(path, depth);
	free_names(names);
}

/* Kills what runs in dir and removes it. The kernel counts killed
 * processes until they have exited, so EBUSY is retried briefly, killing
 * again each time in case something forked in between. Returns 0 (also
 * when dir is already gone) or -errno. */
static int remove_group(const char *dir, int depth)
{
	const struct timespec ms = {0, 1000000};
	bool unlinked = false;
	int err = 0;

	kill_procs(dir);
	if (depth < MAX_DEPTH)
		remove_children(dir, depth + 1);
	for (int i = 0; i < RMDIR_TRIES; i++) {
		if (!rmdir(dir) || errno == ENOENT)
			return 0;
		err = errno;
		if (err == ENOTEMPTY && !unlinked) {
			unlink_files(dir);
			unlinked = true;
			continue;
		}
		if (err != EBUSY)
			break;
		nanosleep(&ms, NULL);
		kill_procs(dir);
	}
	return -err;
}

static bool name_is_valid(const char *name)
{
	return name && *name && !strchr(name, '/') && strcmp(name, ".") &&
	       strcmp(name, "..");
}

/* Makes the group "parent/name" and records it in dst, which stays empty
 * on failure so that cleanup never removes a directory it did not make. */
static int make_group(char *dst, const char *parent, const char *name,
		      char *err, size_t errlen)
{
	int r = path_fmt(dst, "%s/%s", parent, name);

	if (r) {
		set_err(err, errlen, "cannot create cgroup '%s/%s': %s", parent,
			name, strerror(-r));
		return r;
	}
	if (mkdir(dst, 0755)) {
		r = -errno;
		set_err(err, errlen, "cannot create cgroup '%s': %s", dst,
			strerror(-r));
		dst[0] = '\0';
		return r;
	}
	return 0;
}

static int set_value(const char *dir, const char *name, const char *val,
		     char *err, size_t errlen)
{
	int r = write_at(dir, name, val, false);

	if (r)
		set_err(err, errlen, "cannot set '%s/%s': %s", dir, name,
			strerror(-r));
	return r;
}

uint64_t cgroup_weight_to_shares(uint64_t weight)
{
	uint64_t shares;

	if (!weight)
		return 1024;
	shares = weight > 10000 ? 10000 * 1024 / 100 : weight * 1024 / 100;
	return shares < 2 ? 2 : shares;
}

/* Sets the CPU bandwidth and weight in the v2 group dir; a quota of 0
 * lifts it, a weight of 0 is the default. */
static int set_cpu_v2(const char *dir, const struct cgroup_limits *lim,
		      char *err, size_t errlen)
{
	char val[48];
	int r;

	if (lim->cpu_quota_milli)
		snprintf(val, sizeof(val), "%llu %llu",
			 (unsigned long long)lim->cpu_quota_milli *
				 (CGROUP_CPU_PERIOD_US / 1000),
			 CGROUP_CPU_PERIOD_US);
	else
		snprintf(val, sizeof(val), "max %llu", CGROUP_CPU_PERIOD_US);
	r = set_value(dir, "cpu.max", val, err, errlen);
	if (r)
		return r;
	snprintf(val, sizeof(val), "%" PRIu64,
		 lim->cpu_weight ? lim->cpu_weight : 100);
	return set_value(dir, "cpu.weight", val, err, errlen);
}

/* The same in the v1 cpu hierarchy: CFS bandwidth and shares. */
static int set_cpu_v1(const char *dir, const struct cgroup_limits *lim,
		      char *err, size_t errlen)
{
	char val[32];
	int r;

	snprintf(val, sizeof(val), "%llu", CGROUP_CPU_PERIOD_US);
	r = set_value(dir, "cpu.cfs_period_us", val, err, errlen);
	if (r)
		return r;
	if (lim->cpu_quota_milli)
		snprintf(val, sizeof(val), "%llu",
			 (unsigned long long)lim->cpu_quota_milli *
				 (CGROUP_CPU_PERIOD_US / 1000));
	else
		snprintf(val, sizeof(val), "-1");
	r = set_value(dir, "cpu.cfs_quota_us", val, err, errlen);
	if (r)
		return r;
	snprintf(val, sizeof(val), "%" PRIu64,
		 cgroup_weight_to_shares(lim->cpu_weight));
	return set_value(dir, "cpu.shares", val, err, errlen);
}

static bool cpu_limited(const struct cgroup_limits *lim)
{
	return lim->cpu_quota_milli || lim->cpu_weight;
}

static int create_v2(struct cgroup *cg, const struct cgroup_host *host,
		     const char *name, const struct cgroup_limits *lim,
		     const char *mem, const char *pids, char *err,
		     size_t errlen)
{
	int r = make_group(cg->v2, host->v2_dir, name, err, errlen);

	if (!r && lim->memory_bytes && host->has_memory)
		r = set_value(cg->v2, "memory.max", mem, err, errlen);
	if (!r && lim->memory_bytes && host->has_memory && host->has_swap_limit)
		r = set_value(cg->v2, "memory.swap.max", "0", err, errlen);
	if (!r && lim->pids && host->has_pids)
		r = set_value(cg->v2, "pids.max", pids, err, errlen);
	if (!r && cpu_limited(lim) && host->has_cpu_limit)
		r = set_cpu_v2(cg->v2, lim, err, errlen);
	return r;
}

static int create_v1(struct cgroup *cg, const struct cgroup_host *host,
		     const char *name, const struct cgroup_limits *lim,
		     const char *mem, const char *pids, char *err,
		     size_t errlen)
{
	int r = 0;

	if (host->v1_memory[0])
		r = make_group(cg->memory, host->v1_memory, name, err, errlen);
	if (!r && host->v1_pids[0])
		r = make_group(cg->pids, host->v1_pids, name, err, errlen);
	if (!r && host->v1_cpuacct[0])
		r = make_group(cg->cpuacct, host->v1_cpuacct, name, err,
			       errlen);
	if (!r && host->v1_cpu[0]) {
		/* Co-mounted with cpuacct: the same group. */
		if (!strcmp(host->v1_cpu, host->v1_cpuacct))
			str_copy(cg->cpu, sizeof(cg->cpu), cg->cpuacct);
		else
			r = make_group(cg->cpu, host->v1_cpu, name, err,
				       errlen);
	}
	if (!r && lim->memory_bytes && cg->memory[0]) {
		/* memsw may never be below the limit, so it comes second. */
		r = set_value(cg->memory, "memory.limit_in_bytes", mem, err,
			      errlen);
		if (!r && host->has_swap_limit)
			r = set_value(cg->memory, "memory.memsw.limit_in_bytes",
				      mem, err, errlen);
		else if (!r)
			r = set_value(cg->memory, "memory.swappiness", "0", err,
				      errlen);
	}
	if (!r && lim->pids && cg->pids[0])
		r = set_value(cg->pids, "pids.max", pids, err, errlen);
	if (!r && cpu_limited(lim) && cg->cpu[0] && host->has_cpu_limit)
		r = set_cpu_v1(cg->cpu, lim, err, errlen);
	return r;
}

int cgroup_create(struct cgroup *cg, const struct cgroup_host *host,
		  const char *name, const struct cgroup_limits *lim, char *err,
		  size_t errlen)
{
	const struct cgroup_limits none = {0};
	char mem[24], pids[24];
	int r = 0;

	memset(cg, 0, sizeof(*cg));
	if (!name_is_valid(name)) {
		set_err(err, errlen, "invalid cgroup name '%s'",
			name ? name : "");
		return -EINVAL;
	}
	if (!lim)
		lim = &none;
	snprintf(mem, sizeof(mem), "%" PRIu64, lim->memory_bytes);
	snprintf(pids, sizeof(pids), "%" PRIu64, lim->pids);
	cg->version = host->version;
	if (host->version == CGROUP_V2)
		r = create_v2(cg, host, name, lim, mem, pids, err, errlen);
	else if (host->version == CGROUP_V1)
		r = create_v1(cg, host, name, lim, mem, pids, err, errlen);
	if (r) {
		cgroup_destroy(cg);
		memset(cg, 0, sizeof(*cg));
	}
	cg->applied = *lim;
	return r;
}

int cgroup_set_limits(struct cgroup *cg, const struct cgroup_limits *lim)
{
	const struct cgroup_limits *was = &cg->applied;
	bool mem_same = lim->memory_bytes == was->memory_bytes;
	bool pids_same = lim->pids == was->pids;
	bool cpu_same = lim->cpu_quota_milli == was->cpu_quota_milli &&
			lim->cpu_weight == was->cpu_weight;
	char mem[24], pids[24], err[8];
	int r = 0;

	/* Until this call has written everything, nothing is known. */
	memset(&cg->applied, 0xff, sizeof(cg->applied));
	snprintf(mem, sizeof(mem), "%" PRIu64,
		 lim->memory_bytes ? lim->memory_bytes : UINT64_MAX >> 1);
	snprintf(pids, sizeof(pids), "%" PRIu64, lim->pids);
	if (cg->v2[0]) {
		if (!mem_same && file_exists(cg->v2, "memory.max"))
			r = set_value(cg->v2, "memory.max",
				      lim->memory_bytes ? mem : "max", err,
				      sizeof(err));
		if (!r && !pids_same && file_exists(cg->v2, "pids.max"))
			r = set_value(cg->v2, "pids.max",
				      lim->pids ? pids : "max", err,
				      sizeof(err));
		if (!r && !cpu_same && file_exists(cg->v2, "cpu.max"))
			r = set_cpu_v2(cg->v2, lim, err, sizeof(err));
		goto out;
	}
	if (cg->memory[0] && !mem_same) {
		bool memsw =
			file_exists(cg->memory, "memory.memsw.limit_in_bytes");
		/* memsw may never be below the limit: raise it first, or
		 * lower the limit first. Try one order, then the other. */
		if (memsw)
			r = set_value(cg->memory, "memory.memsw.limit_in_bytes",
				      mem, err, sizeof(err));
		r = set_value(cg->memory, "memory.limit_in_bytes", mem, err,
			      sizeof(err));
		if (!r && memsw)
			r = set_value(cg->memory, "memory.memsw.limit_in_bytes",
				      mem, err, sizeof(err));
	}
	if (!r && cg->pids[0] && !pids_same)
		r = set_value(cg->pids, "pids.max", lim->pids ? pids : "max",
			      err, sizeof(err));
	if (!r && cg->cpu[0] && !cpu_same &&
	    file_exists(cg->cpu, "cpu.cfs_quota_us"))
		r = set_cpu_v1(cg->cpu, lim, err, sizeof(err));
out:
	if (!r)
		cg->applied = *lim;
	return r;
}

void cgroup_reset_peak(struct cgroup *cg)
{
	char path[CGROUP_PATH_MAX];

	/* v1 resets on any write; v2 (6.12+) on a write to memory.peak, for
	 * later reads through the same fd (cgroup_read_stats() uses it). */
	if (cg->memory[0]) {
		write_at(cg->memory, "memory.max_usage_in_bytes", "0", false);
		return;
	}
	if (!cg->v2[0] || cg->peak_stuck || !file_exists(cg->v2, "memory.peak"))
		return;
	if (!cg->peak_fd1 &&
	    (size_t)snprintf(path, sizeof(path), "%s/memory.peak", cg->v2) <
		    sizeof(path)) {
		int fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY);

		if (fd >= 0)
			cg->peak_fd1 = fd + 1;
	}
	if (!cg->peak_fd1 || pwrite(cg->peak_fd1 - 1, "0", 1, 0) != 1)
		cg->peak_stuck = true;
}

bool cgroup_peak_per_run(const struct cgroup *cg)
{
	return !cg->peak_stuck;
}

int cgroup_limit_devices(struct cgroup *cg, const struct cgroup_host *host,
			 const char *name, const struct cgroup_device *devs,
			 size_t ndevs, char *err, size_t errlen)
{
	int r;

	if (ndevs > CGROUP_MAX_DEVICES) {
		set_err(err, errlen, "too many device rules (%zu, at most %d)",
			ndevs, CGROUP_MAX_DEVICES);
		return -E2BIG;
	}
	for (size_t i = 0; i < ndevs; i++)
		if (devs[i].type != 'c' && devs[i].type != 'b') {
			set_err(err, errlen, "bad device type '%c'",
				devs[i].type);
			return -EINVAL;
		}
	if (cg->version == CGROUP_V2 && cg->v2[0])
		return cgroup_dev_prog_attach(cg->v2, devs, ndevs, err, errlen);
	if (cg->version != CGROUP_V1 || !host->v1_devices[0]) {
		set_err(err, errlen,
			"device rules cannot be enforced on this host (%s)",
			cg->version == CGROUP_V1
				? "no cgroup v1 devices controller"
				: "no usable cgroups");
		return -EOPNOTSUPP;
	}
	if (!name_is_valid(name)) {
		set_err(err, errlen, "invalid cgroup name '%s'",
			name ? name : "");
		return -EINVAL;
	}
	r = make_group(cg->devices, host->v1_devices, name, err, errlen);
	/* A new group allows what its parent does: first nothing. */
	if (!r)
		r = set_value(cg->devices, "devices.deny", "a", err, errlen);
	for (size_t i = 0; !r && i < ndevs; i++) {
		char rule[48], minor[16];

		if (devs[i].minor == CGROUP_DEV_ANY)
			str_copy(minor, sizeof(minor), "*");
		else
			snprintf(minor, sizeof(minor), "%" PRIu32,
				 devs[i].minor);
		snprintf(rule, sizeof(rule), "%c %" PRIu32 ":%s rw",
			 devs[i].type, devs[i].major, minor);
		r = write_at(cg->devices, "devices.allow", rule, true);
		if (r)
			set_err(err, errlen, "cannot allow '%s' in '%s': %s",
				rule, cg->devices, strerror(-r));
	}
	return r;
}

int cgroup_attach(const struct cgroup *cg, pid_t pid)
{
	const char *dirs[] = {cg->v2,	   cg->memory, cg->pids,
			      cg->cpuacct, cg->cpu,    cg->devices};
	char val[24];

	if (pid <= 0)
		return -EINVAL;
	snprintf(val, sizeof(val), "%d", (int)pid);
	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
		int r;

		if (!dirs[i][0] || (i == 4 && !strcmp(dirs[i], cg->cpuacct)))
			continue;
		r = write_at(dirs[i], "cgroup.procs", val, false);
		if (r)
			return r;
	}
	return 0;
}

int cgroup_cpu_ns(const struct cgroup *cg, uint64_t *ns)
{
	uint64_t v;
	int r;

	if (cg->v2[0]) {
		r = read_key_at(cg->v2, "cpu.stat", "usage_usec", &v);
		if (!r)
			*ns = v > UINT64_MAX / 1000 ? UINT64_MAX : v * 1000;
		return r;
	}
	if (cg->cpuacct[0])
		return read_u64_at(cg->cpuacct, "cpuacct.usage", ns);
	return -ENOENT;
}

int cgroup_read_stats(const struct cgroup *cg, struct cgroup_stats *st)
{
	const char *mem = cg->v2[0] ? cg->v2 : cg->memory;
	int r, first = 0;

	memset(st, 0, sizeof(*st));
	r = cgroup_cpu_ns(cg, &st->cpu_ns);
	st->has_cpu = !r;
	first = r;
	if (mem[0]) {
		if (cg->v2[0] && cg->peak_fd1) {
			char buf[64];
			ssize_t n = pread(cg->peak_fd1 - 1, buf,
					  sizeof(buf) - 1, 0);

			r = n < 0 ? -errno : 0;
			if (!r) {
				buf[n] = '\0';
				r = parse_u64_n(buf, strcspn(buf, " \t\n"),
						&st->peak_bytes);
			}
		} else {
			r = cg->v2[0] ? read_u64_at(mem, "memory.peak",
						    &st->peak_bytes)
				      : read_u64_at(mem,
						    "memory.max_usage_in_bytes",
						    &st->peak_bytes);
		}
		st->has_peak = !r;
		first = first ? first : r;
		r = read_key_at(
			mem, cg->v2[0] ? "memory.events" : "memory.oom_control",
			"oom_kill", &st->oom_kills);
		st->has_oom = !r;
		first = first ? first : r;
	}
	if (cg->v2[0] || cg->pids[0])
		read_key_at(cg->v2[0] ? cg->v2 : cg->pids, "pids.events", "max",
			    &st->pids_max_events);
	if (st->has_cpu || st->has_peak || st->has_oom)
		return 0;
	return first ? first : -ENOENT;
}

int cgroup_destroy(struct cgroup *cg)
{
	if (cg->peak_fd1) {
		close(cg->peak_fd1 - 1);
		cg->peak_fd1 = 0;
	}
	char *dirs[] = {cg->v2,	     cg->memory, cg->pids,
			cg->cpuacct, cg->cpu,	 cg->devices};
	int first = 0;

	/* A co-mounted cpu group is the cpuacct one: removed once. */
	if (!strcmp(cg->cpu, cg->cpuacct))
		cg->cpu[0] = '\0';
	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
		int r;

		if (!dirs[i][0])
			continue;
		r = remove_group(dirs[i], 0);
		if (r && !first)
			first = r;
		dirs[i][0] = '\0';
	}
	return first;
}

int cgroup_sweep(const struct cgroup_host *host, bool (*keep)(const char *name))
{
	const char *dirs[] = {host->v2_dir,  host->v1_memory,
			      host->v1_pids, host->v1_cpuacct,
			      host->v1_cpu,  host->v1_devices};
	int count = 0;

	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
		char **names;

		if (!dirs[i][0])
			continue;
		names = list_subdirs(dirs[i]);
		/* A v1 group lives in every hierarchy under one name: remove
		 * it from all of them at once and count it once. */
		for (char **p = names; p && *p; p++) {
			struct cgroup cg = {.version = host->version};
			char *cgdirs[] = {cg.v2,      cg.memory, cg.pids,
					  cg.cpuacct, cg.cpu,	 cg.devices};
			bool ok = true;

			if (keep && keep(*p))
				continue;
			for (size_t j = 0; j < ARRAY_SIZE(dirs); j++)
				if (dirs[j][0] &&
				    path_fmt(cgdirs[j], "%s/%s", dirs[j], *p))
					ok = false;
			if (!cgroup_destroy(&cg) && ok)
				count++;
		}
		free_names(names);
	}
	return count;
}

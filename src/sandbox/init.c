/*
 * sbx init: PID 1 of every sandbox.
 *
 * The host side re-executes sbx itself as the first process of the new
 * namespaces, so all the setup below runs in a fresh single-threaded
 * process. Init reads its spec, builds the view (uts, net, mounts), places
 * the files, forks the command as the unprivileged sandbox user under the
 * seccomp filter, reaps every process until the command ends, reads back
 * the requested files and reports. When init exits the kernel kills
 * whatever is left in the pid namespace, so nothing outlives the command.
 *
 * Failures are sent to the host as {stage text, errno} on the status fd.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <sys/fsuid.h>
#include <sys/prctl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/guest.h"
#include "base/util.h"
#include "sandbox/internal.h"
#include "sandbox/zygote_proto.h"
#include "base/banned.h"

extern char **environ;

/* This process is a forked run's PID 1 or its program (runinit.c). */
static bool init_in_run;
/* This sandbox can serve run after run: a warm one in a user namespace,
 * whose steps each run in fresh pid, mount and IPC namespaces. */
static bool reusable;
/* Runs it has served. */
static unsigned slot_runs;

void init_send(const struct init_msg *m, const void *p1, const void *p2)
{
	if (write_full(INIT_FD_STATUS, m, sizeof(*m)) < 0)
		return;
	if (m->len1 && write_full(INIT_FD_STATUS, p1, m->len1) < 0)
		return;
	if (m->len2)
		write_full(INIT_FD_STATUS, p2, (size_t)m->len2);
}

void init_fail(int err, const char *what)
{
	struct init_msg m = {.kind = INIT_MSG_ERROR, .err = err};

	/* A process forked for an exec of a stateful sandbox, or in a forked
	 * run, must not write on init's channel: its failure goes to its own
	 * stderr. */
	if ((init_serving && getpid() != 1) || init_in_run) {
		char line[512];

		snprintf(line, sizeof(line), "sbx: %s: %s\n", what,
			 strerror(err));
		write_full(STDERR_FILENO, line, strlen(line));
		_exit(127);
	}

	m.len1 = (uint32_t)strlen(what);
	init_send(&m, what, NULL);
	_exit(127);
}

static char *read_spec(size_t *len)
{
	struct stat st;
	char *data;
	ssize_t n;

	if (fstat(INIT_FD_SPEC, &st) < 0)
		init_fail(errno, "cannot read the sandbox spec");
	data = xmalloc((size_t)st.st_size + 1);
	n = read_full(INIT_FD_SPEC, data, (size_t)st.st_size);
	if (n != st.st_size)
		init_fail(n < 0 ? (int)-n : EIO,
			  "cannot read the sandbox spec");
	close(INIT_FD_SPEC);
	*len = (size_t)n;
	return data;
}

/* The environment every command starts with; spec->env is added on top
 * and wins. */
static char **build_env(char **extra)
{
	static const char *const base[] = {
		"PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:"
		"/sbin:" SANDBOX_GUEST_DIR "/bin",
		"HOME=" SANDBOX_HOME_DIR,
		"USER=sandbox",
		"LOGNAME=sandbox",
		"SHELL=/bin/bash",
		"LANG=C.UTF-8",
		"TMPDIR=/tmp",
		"TERM=dumb",
		"PYTHONDONTWRITEBYTECODE=1",
		"PYTHONUNBUFFERED=1",
		/* sbx_guest (guest/sbx_guest.py) is importable anywhere. */
		"PYTHONPATH=" SANDBOX_GUEST_DIR "/python",
		/* pip works on the sandbox's own (user) site-packages: Debian's
		 * PEP 668 marker is about the host's, which is read-only here.
		 */
		"PIP_BREAK_SYSTEM_PACKAGES=1",
	};
	size_t nbase = ARRAY_SIZE(base), nextra = 0, n = 0, i, j;
	char **env;

	while (extra && extra[nextra])
		nextra++;
	env = xcalloc(nbase + nextra + 1, sizeof(*env));
	for (i = 0; i < nbase; i++) {
		size_t key = strcspn(base[i], "=") + 1;
		bool overridden = false;

		for (j = 0; j < nextra; j++)
			if (!strncmp(extra[j], base[i], key))
				overridden = true;
		if (!overridden)
			env[n++] = (char *)base[i];
	}
	for (j = 0; j < nextra; j++)
		env[n++] = extra[j];
	env[n] = NULL;
	return env;
}

/* Resolves a path given by the client against the work dir. */
void init_full_path(char *out, size_t n, const char *path)
{
	if (path[0] == '/')
		snprintf(out, n, "%s", path);
	else
		snprintf(out, n, SANDBOX_WORK_DIR "/%s", path);
}

/* Creates the parents of path as the sandbox user. */
int init_make_parents(const char *path)
{
	char tmp[PATH_MAX];
	char *p;

	if (!str_copy(tmp, sizeof(tmp), path))
		return -ENAMETOOLONG;
	for (p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	return 0;
}

/* Files are written and read with the sandbox user's filesystem identity,
 * so init never touches anything the command itself could not. */
void init_as_user(uid_t uid, gid_t gid, bool on)
{
	setfsgid(on ? gid : 0);
	setfsuid(on ? uid : 0);
	/* Any change of the fs ids clears the parent-death signal. */
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
}

static bool is_proc_or_sys(const struct statfs *sfs)
{
	return sfs->f_type == PROC_SUPER_MAGIC || sfs->f_type == SYSFS_MAGIC;
}

/* init_open_file() on kernels without openat2 (before 5.6): the path is
 * resolved one component at a time, symlinks expanded by hand, and every
 * directory passed through is checked before anything is looked up in
 * it. Magic links exist only in procfs, so none is ever followed. */
static int open_walk(const char *path, int flags, mode_t mode)
{
	char buf[PATH_MAX], link[PATH_MAX], tmp[PATH_MAX];
	int dir = -1, fd = -1, hops = 0, r = 0;
	struct statfs sfs;
	char *comp = ".", *rest;
	struct stat st;
	ssize_t n;

	if (!str_copy(buf, sizeof(buf), path))
		return -ENAMETOOLONG;
	dir = open(buf[0] == '/' ? "/" : ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	for (rest = buf; dir >= 0 && !r;) {
		if (fstatfs(dir, &sfs) < 0 || is_proc_or_sys(&sfs)) {
			r = -EACCES;
			break;
		}
		while (*rest == '/')
			rest++;
		comp = rest;
		rest += strcspn(rest, "/");
		if (*rest)
			*rest++ = '\0';
		if (!*comp) {
			comp = "."; /* the path ends here: its directory */
			break;
		}
		if (!strcmp(comp, "."))
			continue;
		fd = openat(dir, comp, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0 && errno == ENOENT && !*rest && (flags & O_CREAT))
			break; /* the last component, to be created */
		if (fd < 0 || fstat(fd, &st) < 0) {
			r = -errno;
			break;
		}
		if (S_ISLNK(st.st_mode)) {
			n = readlinkat(fd, "", link, sizeof(link) - 1);
			fd_close(&fd);
			if (n < 0 || ++hops > 40) {
				r = n < 0 ? -errno : -ELOOP;
				break;
			}
			link[n] = '\0';
			if (snprintf(tmp, sizeof(tmp), "%s%s%s", link,
				     *rest ? "/" : "",
				     rest) >= (int)sizeof(tmp)) {
				r = -ENAMETOOLONG;
				break;
			}
			memcpy(buf, tmp, strlen(tmp) + 1);
			rest = buf;
			if (link[0] == '/') {
				fd_close(&dir);
				dir = open("/",
					   O_PATH | O_DIRECTORY | O_CLOEXEC);
			}
			continue;
		}
		if (!*rest) {
			fd_close(&fd);
			break; /* the last component: open it below */
		}
		fd_close(&dir);
		dir = fd;
		fd = -1;
	}
	if (dir < 0 && !r)
		r = -errno;
	if (!r) {
		fd = openat(dir, comp, flags | O_NOFOLLOW, mode);
		if (fd < 0)
			r = -errno;
	}
	fd_close(&dir);
	if (!r && (fstatfs(fd, &sfs) < 0 || is_proc_or_sys(&sfs)))
		r = -EACCES;
	if (r)
		fd_close(&fd);
	return r ? r : fd;
}

/* Opens a path inside the sandbox for init, which holds the sandbox
 * user's filesystem ids meanwhile. Symlinks are followed (they can only
 * lead within the sandbox) but magic links are not, and procfs and sysfs
 * are off limits: init's own /proc/1 entries are readable and writable by
 * init whatever its filesystem ids, and they are not the sandbox's files.
 * Returns the fd or -errno (-EACCES for procfs and sysfs). */
int init_open_file(const char *path, int flags, mode_t mode)
{
	struct open_how how = {.flags = (uint64_t)flags,
			       .mode = (flags & O_CREAT) ? mode : 0,
			       .resolve = RESOLVE_NO_MAGICLINKS};
	struct statfs sfs;
	int fd;

	fd = (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof(how));
	if (fd < 0 && errno == ENOSYS)
		return open_walk(path, flags, mode);
	if (fd < 0)
		return -errno;
	if (fstatfs(fd, &sfs) < 0 || is_proc_or_sys(&sfs)) {
		fd_close(&fd);
		return -EACCES;
	}
	return fd;
}

/* Where a spec's files may go (the same rule the routes apply): the work
 * dir, /tmp, /mnt or the home dir, with no ".." on the way. */
static bool file_place_ok(const char *full)
{
	static const char *const roots[] = {
		SANDBOX_WORK_DIR "/",
		"/tmp/",
		"/mnt/",
		SANDBOX_HOME_DIR "/",
	};
	const char *p;
	size_t i;

	for (p = full; (p = strstr(p, "/..")); p += 3)
		if (p[3] == '/' || p[3] == '\0')
			return false;
	for (i = 0; i < ARRAY_SIZE(roots); i++)
		if (str_starts_with(full, roots[i]) && full[strlen(roots[i])])
			return true;
	return false;
}

static void place_files(const struct sandbox_spec *spec, uid_t uid, gid_t gid)
{
	char path[PATH_MAX], what[PATH_MAX + 80];
	size_t i;

	init_as_user(uid, gid, true);
	for (i = 0; i < spec->nfiles; i++) {
		const struct sandbox_file *f = &spec->files[i];
		struct stat st;
		int fd = -1, r = 0;

		init_full_path(path, sizeof(path), f->path);
		if (!file_place_ok(path)) {
			snprintf(what, sizeof(what),
				 "cannot write '%s' (files go "
				 "under " SANDBOX_WORK_DIR
				 ", /tmp, /mnt or " SANDBOX_HOME_DIR ")",
				 path);
			init_fail(EACCES, what);
		}
		r = init_make_parents(path);
		if (!r)
			fd = init_open_file(path,
					    O_WRONLY | O_CREAT | O_TRUNC |
						    O_CLOEXEC | O_NOFOLLOW |
						    O_NOCTTY | O_NONBLOCK,
					    f->executable ? 0755 : 0644);
		if (!r && fd < 0)
			r = fd;
		/* Only regular files: never a FIFO or a device. */
		if (!r && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)))
			r = -EINVAL;
		if (!r)
			r = write_full(fd, f->data, f->len);
		fd_close(&fd);
		if (r) {
			snprintf(what, sizeof(what), "cannot write '%s'", path);
			init_fail(-r, what);
		}
	}
	init_as_user(uid, gid, false);
}

static void fetch_files(const struct sandbox_spec *spec, uid_t uid, gid_t gid)
{
	uint64_t total = 0; /* all fetches together: no more than the disk */
	char path[PATH_MAX];
	size_t i;

	init_as_user(uid, gid, true);
	for (i = 0; i < spec->nfetch; i++) {
		struct init_msg m = {.kind = INIT_MSG_MISSING};
		const char *name = spec->fetch[i];
		char *data = NULL;
		struct stat st;
		int fd;

		init_full_path(path, sizeof(path), name);
		fd = init_open_file(
			path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, 0);
		if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
		    (uint64_t)st.st_size <= spec->limits.disk_bytes - total) {
			data = xmalloc((size_t)st.st_size + 1);
			ssize_t n = read_full(fd, data, (size_t)st.st_size);

			if (n >= 0) {
				m.kind = INIT_MSG_FETCH;
				m.len2 = (uint64_t)n;
				total += (uint64_t)n;
			}
		}
		fd_close(&fd);
		m.len1 = (uint32_t)strlen(name);
		init_send(&m, name, data);
		free(data);
	}
	init_as_user(uid, gid, false);
}

/* The forked side of a command: becomes the sandbox user and executes. */
void init_exec(const struct sandbox_spec *spec, char **argv, const char *cwd,
	       char **env, uint64_t cpu_ms, const struct seccomp_prog *filter,
	       uid_t uid, gid_t gid)
{
	struct child_err ce = {{0}};
	struct sandbox_limits lim = spec->limits;
	sigset_t all;
	int sig, r;
	char msg[PATH_MAX + 64];
	char **all_env;
	size_t n1 = 0, n2 = 0, i;
	char cwdbuf[PATH_MAX];

	if (!cwd)
		cwd = spec->cwd ? spec->cwd : SANDBOX_WORK_DIR;
	/* Relative to the work dir, like the file commands' paths. */
	init_full_path(cwdbuf, sizeof(cwdbuf), cwd);
	cwd = cwdbuf;
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	for (sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);
	/* Writing past RLIMIT_FSIZE gives EFBIG instead of a kill. */
	signal(SIGXFSZ, SIG_IGN);
	setsid();
	/* Init is shielded from the OOM killer; the command must not be. */
	write_file("/proc/self/oom_score_adj", "0");
	lim.cpu_ms = cpu_ms;
	r = rlimit_setup_child(&lim, &ce);
	if (!r)
		r = userns_drop_child(uid, gid, &ce);
	if (!r && chdir(cwd) < 0) {
		r = -errno;
		snprintf(ce.what, sizeof(ce.what),
			 "cannot enter working directory '%.150s'", cwd);
	}
	if (!r) {
		r = seccomp_prog_load(filter);
		if (r)
			str_copy(ce.what, sizeof(ce.what),
				 "cannot load the seccomp filter");
	}
	if (r)
		init_fail(-r, ce.what);
	/* The sandbox's env, then the command's own on top. */
	while (spec->env && spec->env[n1])
		n1++;
	while (env && env[n2])
		n2++;
	all_env = xcalloc(n1 + n2 + 1, sizeof(*all_env));
	for (i = 0; i < n1; i++)
		all_env[i] = spec->env[i];
	for (i = 0; i < n2; i++)
		all_env[n1 + i] = env[i];
	environ = build_env(all_env);
	execvp(argv[0], argv);
	r = errno;
	snprintf(msg, sizeof(msg), "sbx: cannot execute '%s': %s\n", argv[0],
		 strerror(r));
	write_full(STDERR_FILENO, msg, strlen(msg));
	_exit(r == ENOENT ? 127 : 126);
}

/* stdin for a step: its own bytes in a read-only memfd view, the host's
 * stdin for the first step, or nothing. */
static int step_stdin(const struct sandbox_step *step, size_t idx)
{
	char path[64];
	int mfd, fd;

	if (!step->stdin_data) {
		if (idx == 0)
			return fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 0);
		return open("/dev/null", O_RDONLY | O_CLOEXEC);
	}
	mfd = memfd_create("stdin", MFD_CLOEXEC);
	if (mfd < 0)
		return -1;
	if (write_full(mfd, step->stdin_data, step->stdin_len) < 0) {
		fd_close(&mfd);
		return -1;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", mfd);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	fd_close(&mfd);
	return fd;
}

/* A Python interpreter a warm sandbox starts ahead of its run (the
 * zygote, guest/zygote.py): already the sandbox user, filtered and
 * limited, waiting on a pipe for the program it is to become. */
static struct {
	pid_t pid;
	int ctl;    /* socket: "R" when started, then the run's JSON line */
	int out[3]; /* read ends of its stdout (1) and stderr (2) */
	/* A forking zygote (zygote_proto.h): root in the user namespace,
	 * it clones a process per run and is never used up itself. */
	bool forking;
} zygote = {.pid = -1, .ctl = -1, .out = {-1, -1, -1}};

/* The native half of the forking zygote (src/pyext/zygote.c), embedded;
 * empty when sbx was built without Python's headers. */
extern const char sbx_zygote_blob[], sbx_zygote_blob_end[];

/* A reusable sandbox serves this many runs, then it is rebuilt: its
 * zygote's string hash seed and address layout are shared by the runs it
 * serves, and a fresh one bounds that. */
#define SLOT_MAX_RUNS 64

struct step_run {
	size_t idx;
	pid_t pid;
	int out[3]; /* read ends of stdout (1) and stderr (2) */
	uint64_t sent[3];
	uint64_t cap;
	int stop;
	int status;
	bool reaped;
	bool forked; /* pid is a forking zygote's clone: the run's PID 1 */
};

/* Kills the step's processes: the sandbox's all but init's, or a forked
 * run's whole pid namespace (its PID 1 first). */
static void kill_step(const struct step_run *sr)
{
	kill(sr->forked ? sr->pid : -1, SIGKILL);
}

/* Kills every process in the sandbox but init, and reaps them. */
static void kill_all_but_init(void)
{
	kill(-1, SIGKILL);
	while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
		;
}

static void relay(struct step_run *sr, int stream)
{
	char chunk[65536];
	ssize_t n = read(sr->out[stream], chunk, sizeof(chunk));

	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n <= 0) {
		fd_close(&sr->out[stream]);
		return;
	}
	if (sr->sent[stream] + (uint64_t)n > sr->cap) {
		n = (ssize_t)(sr->cap - sr->sent[stream]);
		if (sr->stop == INIT_STOP_NONE)
			sr->stop = INIT_STOP_OUTPUT;
		kill_step(sr);
		fd_close(&sr->out[stream]);
	}
	if (n > 0) {
		struct init_msg m = {.kind = INIT_MSG_OUTPUT,
				     .step = (uint32_t)sr->idx,
				     .value = stream,
				     .len2 = (uint64_t)n};

		init_send(&m, NULL, chunk);
		sr->sent[stream] += (uint64_t)n;
	}
}

static void reap(struct step_run *sr)
{
	int st;
	pid_t p;

	while ((p = waitpid(-1, &st, WNOHANG)) > 0)
		if (p == sr->pid) {
			sr->status = st;
			sr->reaped = true;
		} else if (p == zygote.pid) {
			zygote.pid = -1; /* the slot cannot take another run */
		}
}

#define ZYGOTE_START_MS 10000

static void zygote_stop(void);

/* The extension in a memfd the zygote loads (as fd 4), or -1. */
static int zygote_ext_fd(void)
{
	size_t len = (size_t)(&sbx_zygote_blob_end[0] - &sbx_zygote_blob[0]);
	int fd = memfd_create("sbx-zygote", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	if (fd < 0)
		return -1;
	if (write_full(fd, sbx_zygote_blob, len) < 0 ||
	    fcntl(fd, F_ADD_SEALS,
		  F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) <
		    0) {
		fd_close(&fd);
		return -1;
	}
	return fd;
}

/* The forked side of a forking zygote: stays root in the user namespace
 * with its capabilities and without the filter (it runs no program: each
 * run's process drops them, src/pyext/zygote.c) and executes Python. */
static void zygote_exec(const struct sandbox_spec *spec, char **argv)
{
	struct child_err ce = {{0}};
	sigset_t none;
	int sig;

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);
	signal(SIGXFSZ, SIG_IGN);
	setsid();
	write_file("/proc/self/oom_score_adj", "0");
	if (rlimit_setup_child(&spec->limits, &ce) < 0 || chdir("/") < 0)
		_exit(127);
	environ = build_env(spec->env);
	execvp(argv[0], argv);
	_exit(127);
}

/* Whether a forking zygote can be started here: its native half was built
 * (with Python's headers) and there is a python3. */
static bool zygote_can_fork(void)
{
	return &sbx_zygote_blob_end[0] > &sbx_zygote_blob[0] &&
	       access("/usr/bin/python3", X_OK) == 0;
}

/* forking: a sandbox whose steps run in namespaces of their own (in a
 * user namespace, see fork_run_works()). */
static void zygote_start(const struct sandbox_spec *spec,
			 const struct seccomp_prog *filter, uid_t uid,
			 gid_t gid, bool forking)
{
	char *argv[] = {"python3", "-c", (char *)guest_zygote_py, NULL};
	int ctl[2], pout[2], perr[2], in, ext = -1;
	pid_t pid;

	if (!spec->zygote || zygote.pid > 0 ||
	    access("/usr/bin/python3", X_OK) < 0)
		return;
	/* In a user namespace the zygote can be one that forks a process
	 * per run (it holds the namespace's capabilities, and every run's
	 * process leaves them); without one it would be host root, and is
	 * used up by its one run instead. A sandbox whose steps run in
	 * namespaces of their own has no use for that one. */
	if (forking && !zygote_can_fork())
		return;
	if (forking)
		ext = zygote_ext_fd();
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ctl) < 0) {
		fd_close(&ext);
		return;
	}
	if (pipe2(pout, O_CLOEXEC) < 0) {
		close(ctl[0]);
		close(ctl[1]);
		fd_close(&ext);
		return;
	}
	if (pipe2(perr, O_CLOEXEC) < 0 ||
	    (in = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
		close(ctl[0]);
		close(ctl[1]);
		close(pout[0]);
		close(pout[1]);
		fd_close(&ext);
		return;
	}
	pid = fork();
	if (pid == 0) {
		if (dup2(in, STDIN_FILENO) < 0 ||
		    dup2(pout[1], STDOUT_FILENO) < 0 ||
		    dup2(perr[1], STDERR_FILENO) < 0 || dup2(ctl[0], 3) < 0)
			_exit(127);
		if (ext >= 0) {
			if (dup2(ext, 4) < 0)
				_exit(127);
			zygote_exec(spec, argv);
		}
		init_exec(spec, argv, NULL, NULL, 0, filter, uid, gid);
	}
	zygote.forking = ext >= 0;
	fd_close(&ext);
	close(in);
	close(ctl[0]);
	close(pout[1]);
	close(perr[1]);
	if (pid < 0) {
		close(ctl[1]);
		close(pout[0]);
		close(perr[0]);
		return;
	}
	zygote.pid = pid;
	zygote.ctl = ctl[1];
	zygote.out[1] = pout[0];
	zygote.out[2] = perr[0];
	/* A warm sandbox is ready when its interpreter is. */
	{
		struct pollfd pfd = {.fd = zygote.ctl, .events = POLLIN};
		char c = 0;

		if (poll(&pfd, 1, ZYGOTE_START_MS) != 1 ||
		    read(zygote.ctl, &c, 1) != 1 || c != 'R')
			zygote_stop();
	}
}

static void zygote_stop(void)
{
	if (zygote.pid > 0) {
		kill(zygote.pid, SIGKILL);
		while (waitpid(zygote.pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
	zygote.pid = -1;
	zygote.forking = false;
	fd_close(&zygote.ctl);
	fd_close(&zygote.out[1]);
	fd_close(&zygote.out[2]);
}

/* The zygote can be a step that runs `python3 SCRIPT [ARGS]` alone, with
 * no PYTHON* variable that would have changed the interpreter's start. */
static bool zygote_fits(const struct sandbox_spec *spec,
			const struct sandbox_step *step)
{
	size_t i;

	if (zygote.pid < 0 || spec->nsteps != 1 || !step->argv[0] ||
	    !step->argv[1] || strcmp(step->argv[0], "python3") ||
	    step->argv[1][0] == '-')
		return false;
	for (i = 0; spec->env && spec->env[i]; i++)
		if (str_starts_with(spec->env[i], "PYTHON"))
			return false;
	return true;
}

static void add_field(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s) + 1); /* with its NUL */
}

static void add_number(struct buf *b, uint64_t v)
{
	char num[24];

	snprintf(num, sizeof(num), "%llu", (unsigned long long)v);
	add_field(b, num);
}

/* Gives the zygote the run's file size and open file limits, as
 * rlimit_setup_child() gives a command forked for it (0: init's own, which
 * such a command inherits), so the zygote need not import anything to set
 * them itself. Init holds CAP_SYS_RESOURCE over the sandbox's user
 * namespace. Returns 0 or -errno. */
static int zygote_limits(const struct sandbox_limits *lim)
{
	const struct {
		int resource;
		uint64_t value;
	} set[] = {{RLIMIT_FSIZE, lim->fsize_bytes},
		   {RLIMIT_NOFILE, lim->nofile}};
	struct rlimit rl;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(set); i++) {
		if (set[i].value)
			rl.rlim_cur = rl.rlim_max = (rlim_t)set[i].value;
		else if (getrlimit(set[i].resource, &rl) < 0)
			return -errno;
		if (prlimit(zygote.pid, set[i].resource, &rl, NULL) < 0)
			return -errno;
	}
	return 0;
}

/* Tells the zygote which program to become (see guest/zygote.py for the
 * fields). Returns 0 or -errno. */
static int zygote_go(const struct sandbox_spec *spec,
		     const struct sandbox_step *step, uid_t uid, gid_t gid)
{
	char cwd[PATH_MAX], path[64] = "";
	char **envv = build_env(spec->env);
	size_t i, n;
	struct buf b;
	int r = zygote_limits(&spec->limits);

	/* stdin waits in a file the zygote opens and unlinks. */
	if (!r && step->stdin_data && step->stdin_len) {
		int fd;

		snprintf(path, sizeof(path), "/dev/shm/.sbx-stdin-%d",
			 (int)zygote.pid);
		init_as_user(uid, gid, true);
		fd = open(path,
			  O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
			  0600);
		r = fd < 0 ? -errno
			   : write_full(fd, step->stdin_data, step->stdin_len);
		fd_close(&fd);
		init_as_user(uid, gid, false);
	}
	init_full_path(cwd, sizeof(cwd),
		       spec->cwd ? spec->cwd : SANDBOX_WORK_DIR);
	buf_init(&b);
	add_field(&b, cwd);
	add_field(&b, path);
	add_number(&b, (step->cpu_ms + 999) / 1000);
	for (n = 0; step->argv[n]; n++)
		;
	add_number(&b, n);
	for (i = 0; i < n; i++)
		add_field(&b, step->argv[i]);
	for (n = 0; envv[n]; n++)
		;
	add_number(&b, n);
	for (i = 0; i < n; i++)
		add_field(&b, envv[i]);
	free(envv);
	if (!r)
		r = write_full(zygote.ctl, b.data, b.len);
	buf_release(&b);
	fd_close(&zygote.ctl); /* EOF ends the request */
	if (r && path[0]) {
		/* The run starts afresh without the zygote: no file of this
		 * attempt may be left for it to find. */
		init_as_user(uid, gid, true);
		unlink(path);
		init_as_user(uid, gid, false);
	}
	return r;
}

static int send_fds(int sock, const void *buf, size_t len, const int *fds,
		    int nfds)
{
	char control[CMSG_SPACE(sizeof(int) * ZYGOTE_NFDS)];
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = control,
			     .msg_controllen =
				     CMSG_SPACE(sizeof(int) * (size_t)nfds)};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	ssize_t n;

	memset(control, 0, sizeof(control));
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
	memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
	do
		n = sendmsg(sock, &msg, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	/* The rest of a partly sent header goes without the fds. */
	return n == (ssize_t)len ? 0
				 : write_full(sock, (const char *)buf + n,
					      len - (size_t)n);
}

/* How long init waits for the zygote to answer a run with its clone. */
#define ZYGOTE_ANSWER_MS 5000

/* Gives a run to a forking zygote: it clones the run's PID 1, which is a
 * child of init. On success sr has that process, its output pipes and
 * *run_fd the socket its report comes back on. Returns 0 or -errno (the
 * zygote is then unusable). */
static int zygote_fork_run(const struct sandbox_spec *spec,
			   const struct sandbox_step *step,
			   const struct seccomp_prog *filter, uid_t uid,
			   gid_t gid, struct step_run *sr, int *run_fd)
{
	char cwd[PATH_MAX], **envv;
	struct zygote_run h = {.magic = ZYGOTE_MAGIC,
			       .uid = (uint32_t)uid,
			       .gid = (uint32_t)gid,
			       .filter_len = (uint32_t)filter->len,
			       .fsize_bytes = spec->limits.fsize_bytes,
			       .nofile = spec->limits.nofile,
			       .cpu_ms = step->cpu_ms};
	int sv[2], pout[2] = {-1, -1}, perr[2] = {-1, -1}, in = -1, i, r;
	int fds[ZYGOTE_NFDS];
	struct pollfd pfd = {.fd = zygote.ctl, .events = POLLIN};
	int32_t answer = 0;
	char go = ZYGOTE_GO;
	size_t n;
	struct buf b;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	r = send_fds(zygote.ctl, &go, 1, &sv[1], 1);
	fd_close(&sv[1]);
	if (!r) {
		r = poll(&pfd, 1, ZYGOTE_ANSWER_MS) == 1 &&
				    read_full(zygote.ctl, &answer,
					      sizeof(answer)) ==
					    (ssize_t)sizeof(answer)
			    ? 0
			    : -EPROTO;
		if (!r && answer <= 0)
			r = answer < 0 ? answer : -EPROTO;
	}
	if (r) {
		fd_close(&sv[0]);
		return r;
	}
	/* Its clone runs: from here on it is the step's process, and any
	 * failure is its own (it reports exit 127 with the reason). */
	sr->pid = (pid_t)answer;
	*run_fd = sv[0];
	in = step_stdin(step, 0);
	if (in < 0 || pipe2(pout, O_CLOEXEC) < 0 || pipe2(perr, O_CLOEXEC) < 0)
		init_fail(errno, "cannot set up the step's stdio");
	init_full_path(cwd, sizeof(cwd),
		       spec->cwd ? spec->cwd : SANDBOX_WORK_DIR);
	envv = build_env(spec->env);
	buf_init(&b);
	buf_add(&b, filter->data, filter->len);
	add_field(&b, cwd);
	add_field(&b, "");  /* stdin is fd 0 already */
	add_field(&b, "0"); /* and the CPU limit is set */
	for (n = 0; step->argv[n]; n++)
		;
	add_number(&b, n);
	for (i = 0; (size_t)i < n; i++)
		add_field(&b, step->argv[i]);
	for (n = 0; envv[n]; n++)
		;
	add_number(&b, n);
	for (i = 0; (size_t)i < n; i++)
		add_field(&b, envv[i]);
	free(envv);
	h.len = b.len;
	fds[ZYGOTE_FD_STDIN] = in;
	fds[ZYGOTE_FD_STDOUT] = pout[1];
	fds[ZYGOTE_FD_STDERR] = perr[1];
	/* A clone that died early leaves a closed socket: the step then
	 * ends as that process did. */
	if (!send_fds(sv[0], &h, sizeof(h), fds, ZYGOTE_NFDS))
		write_full(sv[0], b.data, b.len);
	buf_release(&b);
	close(in);
	close(pout[1]);
	close(perr[1]);
	sr->out[1] = pout[0];
	sr->out[2] = perr[0];
	return 0;
}

/* Runs a step in fresh pid, mount and IPC namespaces: a clone of init is
 * the run's PID 1 (runinit.c) and forks the command as usual. On success
 * sr has that PID 1 and the output pipes and *run_fd the socket its report
 * comes back on. Returns 0 or -errno. */
static int init_fork_run(const struct sandbox_spec *spec, size_t idx,
			 const struct seccomp_prog *filter, uid_t uid,
			 gid_t gid, struct step_run *sr, int *run_fd)
{
	const struct sandbox_step *step = &spec->steps[idx];
	int sv[2], pout[2], perr[2], in, e;
	pid_t pid;

	in = step_stdin(step, idx);
	if (in < 0 || pipe2(pout, O_CLOEXEC) < 0 || pipe2(perr, O_CLOEXEC) < 0)
		init_fail(errno, "cannot set up the step's stdio");
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		init_fail(errno, "cannot set up the step's stdio");
	pid = (pid_t)syscall(
		SYS_clone, CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | SIGCHLD,
		NULL, NULL, NULL, NULL);
	if (pid == 0) {
		char what[200];
		pid_t prog;
		int r;

		init_in_run = true;
		r = runinit_proc(what, sizeof(what));
		if (r)
			runinit_fail(sv[1], perr[1], what, -r);
		prog = fork();
		if (prog < 0)
			runinit_fail(sv[1], perr[1], "cannot fork the command",
				     errno);
		if (prog == 0) {
			if (dup2(in, STDIN_FILENO) < 0 ||
			    dup2(pout[1], STDOUT_FILENO) < 0 ||
			    dup2(perr[1], STDERR_FILENO) < 0)
				_exit(127);
			init_exec(spec, step->argv, NULL, NULL, step->cpu_ms,
				  filter, uid, gid);
		}
		/* Nothing of init's stays open here but the report socket
		 * (on init's status fd number: this process never writes
		 * to the host). */
		if (dup2(sv[1], INIT_FD_STATUS) < 0)
			_exit(127);
		syscall(SYS_close_range, INIT_FD_STATUS + 1, ~0U, 0);
		runinit_reap(prog, INIT_FD_STATUS);
	}
	e = errno;
	close(in);
	close(pout[1]);
	close(perr[1]);
	close(sv[1]);
	if (pid < 0) {
		close(pout[0]);
		close(perr[0]);
		close(sv[0]);
		return -e;
	}
	sr->pid = pid;
	sr->out[1] = pout[0];
	sr->out[2] = perr[0];
	*run_fd = sv[0];
	return 0;
}

/* Steps run on a forking zygote's clone since the last run began. */
static unsigned forked_runs;

static bool run_step(const struct sandbox_spec *spec, size_t idx,
		     const struct seccomp_prog *filter, uid_t uid, gid_t gid,
		     int sigfd)
{
	const struct sandbox_step *step = &spec->steps[idx];
	struct step_run sr = {.idx = idx, .out = {-1, -1, -1}};
	struct init_msg m = {.kind = INIT_MSG_STEP_END, .step = (uint32_t)idx};
	struct rusage before, after;
	int pout[2], perr[2], in, run_fd = -1;
	uint64_t t0 = now_ns(), deadline;

	sr.cap = spec->limits.output_bytes ? spec->limits.output_bytes
					   : UINT64_MAX;
	deadline = step->wall_ms ? t0 + step->wall_ms * 1000000ull : 0;
	getrusage(RUSAGE_CHILDREN, &before);
	if (idx == 0 && zygote.forking && zygote_fits(spec, step)) {
		if (zygote_fork_run(spec, step, filter, uid, gid, &sr,
				    &run_fd) == 0) {
			sr.forked = true;
			goto relay;
		}
	} else if (idx == 0 && !reusable && zygote_fits(spec, step) &&
		   zygote_go(spec, step, uid, gid) == 0) {
		sr.pid = zygote.pid;
		sr.out[1] = zygote.out[1];
		sr.out[2] = zygote.out[2];
		zygote.pid = -1;
		zygote.out[1] = zygote.out[2] = -1;
		goto relay;
	}
	zygote_stop();
	if (reusable &&
	    init_fork_run(spec, idx, filter, uid, gid, &sr, &run_fd) == 0) {
		sr.forked = true;
		goto relay;
	}
	in = step_stdin(step, idx);
	if (in < 0 || pipe2(pout, O_CLOEXEC) < 0 || pipe2(perr, O_CLOEXEC) < 0)
		init_fail(errno, "cannot set up the step's stdio");
	sr.pid = fork();
	if (sr.pid < 0)
		init_fail(errno, "cannot fork the command");
	if (sr.pid == 0) {
		if (dup2(in, STDIN_FILENO) < 0 ||
		    dup2(pout[1], STDOUT_FILENO) < 0 ||
		    dup2(perr[1], STDERR_FILENO) < 0)
			_exit(127);
		init_exec(spec, step->argv, NULL, NULL, step->cpu_ms, filter,
			  uid, gid);
	}
	close(in);
	close(pout[1]);
	close(perr[1]);
	sr.out[1] = pout[0];
	sr.out[2] = perr[0];
relay:
	/* Relay output until the command has ended and both pipes are at
	 * EOF (the step's other processes are killed when it ends). */
	while (sr.out[1] >= 0 || sr.out[2] >= 0 || !sr.reaped) {
		struct pollfd pfd[4] = {
			{.fd = sr.out[1], .events = POLLIN},
			{.fd = sr.out[2], .events = POLLIN},
			{.fd = sigfd, .events = POLLIN},
			/* The host never writes here: readable means it is
			 * gone, and the sandbox goes with it. */
			{.fd = INIT_FD_STATUS, .events = POLLIN},
		};
		int timeout = -1;

		if (deadline) {
			uint64_t now = now_ns();

			timeout =
				now >= deadline
					? 0
					: (int)((deadline - now) / 1000000 + 1);
		}
		if (poll(pfd, 4, timeout) < 0 && errno != EINTR)
			init_fail(errno, "cannot poll the step");
		if (pfd[3].revents) {
			kill(-1, SIGKILL);
			_exit(0);
		}
		if (pfd[0].revents)
			relay(&sr, 1);
		if (pfd[1].revents)
			relay(&sr, 2);
		if (pfd[2].revents) {
			struct signalfd_siginfo si;

			while (read(sigfd, &si, sizeof(si)) > 0)
				;
			reap(&sr);
			/* A forked run's processes end with its PID 1. */
			if (sr.reaped && !sr.forked)
				kill_all_but_init();
		}
		if (deadline && now_ns() >= deadline && !sr.reaped) {
			if (sr.stop == INIT_STOP_NONE)
				sr.stop = INIT_STOP_TIME;
			kill_step(&sr);
			deadline = 0;
		}
	}
	if (sr.forked) {
		int32_t st;

		/* The program's own status, which its PID 1 reported before
		 * it ended (nothing when that was killed). */
		if (recv(run_fd, &st, sizeof(st), MSG_DONTWAIT) ==
		    (ssize_t)sizeof(st))
			sr.status = st;
		fd_close(&run_fd);
	} else {
		kill_all_but_init();
	}
	getrusage(RUSAGE_CHILDREN, &after);
	m.value = sr.status;
	m.stop = (uint32_t)sr.stop;
	m.wall_us = (now_ns() - t0) / 1000;
	m.cpu_us =
		(uint64_t)(after.ru_utime.tv_sec - before.ru_utime.tv_sec) *
			1000000 +
		(uint64_t)(after.ru_utime.tv_usec - before.ru_utime.tv_usec) +
		(uint64_t)(after.ru_stime.tv_sec - before.ru_stime.tv_sec) *
			1000000 +
		(uint64_t)(after.ru_stime.tv_usec - before.ru_stime.tv_usec);
	init_send(&m, NULL, NULL);
	if (sr.forked)
		forked_runs++;
	return sr.stop == INIT_STOP_NONE && WIFEXITED(sr.status) &&
	       WEXITSTATUS(sr.status) == 0;
}

/* Whether this kernel lets a step run in namespaces of its own here: a
 * clone into fresh pid, mount and IPC namespaces that mounts its /proc
 * (runinit_proc()). Asked once, before the sandbox says it is ready; when
 * it cannot, the sandbox serves one run, as one without user namespaces. */
static bool fork_run_works(void)
{
	pid_t pid = (pid_t)syscall(
		SYS_clone, CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | SIGCHLD,
		NULL, NULL, NULL, NULL);
	int st;

	if (pid == 0) {
		char what[200];

		_exit(runinit_proc(what, sizeof(what)) ? 1 : 0);
	}
	if (pid < 0)
		return false;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return false;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* A warm sandbox: the view is built; wait for the run it is given (its
 * steps, files, environment and limits) and take it as our spec. forking:
 * its steps can run in namespaces of their own (a zygote that forks). */
static void standby(struct sandbox_spec *spec,
		    const struct seccomp_prog *filter, uid_t uid, gid_t gid,
		    bool forking)
{
	struct init_msg ready = {.kind = INIT_MSG_READY}, m;
	struct sandbox_spec run;
	struct init_mode ignored;
	char *data, opts[64];
	ssize_t n;

	zygote_start(spec, filter, uid, gid, forking);
	/* 1: it serves run after run; 2: with a forking zygote too. */
	ready.value = !reusable ? 0 : zygote.forking && zygote.pid > 0 ? 2 : 1;
	init_send(&ready, NULL, NULL);
	n = read_full(INIT_FD_STATUS, &m, sizeof(m));
	if (n == 0)
		_exit(0); /* the host is gone, or never needed us */
	if (n != (ssize_t)sizeof(m) || m.kind != INIT_CMD_RUN || m.len1 ||
	    m.len2 > (64u << 20))
		init_fail(EPROTO, "cannot read the run");
	data = xmalloc((size_t)m.len2 + 1);
	if (read_full(INIT_FD_STATUS, data, (size_t)m.len2) !=
		    (ssize_t)m.len2 ||
	    wire_decode_spec(data, (size_t)m.len2, &run, &ignored) < 0)
		init_fail(EPROTO, "cannot decode the run");
	free(data);
	seccomp_prog_release(&ignored.seccomp);
	/* One tmpfs is behind /tmp, /work, $HOME and /dev/shm: resize it
	 * through any of them. */
	if (run.limits.disk_bytes != spec->limits.disk_bytes) {
		snprintf(opts, sizeof(opts), "size=%llu,nr_inodes=%llu",
			 (unsigned long long)run.limits.disk_bytes,
			 (unsigned long long)(run.limits.disk_bytes / 4096 +
					      1024));
		if (mount(NULL, "/tmp", NULL, MS_REMOUNT | MS_NOSUID | MS_NODEV,
			  opts) < 0)
			init_fail(errno, "cannot resize the scratch space");
	}
	if (run.limits.memory_bytes != spec->limits.memory_bytes)
		mnt_proc_refresh(&run.limits);
	sandbox_spec_release(spec);
	*spec = run;
}

void sandbox_init_main(void)
{
	struct sandbox_spec spec;
	struct child_err ce = {{0}};
	struct init_msg m = {.kind = INIT_MSG_DONE};
	struct init_mode mode;
	sigset_t chld;
	size_t len, i;
	char *data;
	struct sandbox_limits base;
	bool want_zygote;
	uid_t uid;
	gid_t gid;
	int r, sigfd = -1;

	close(INIT_FD_EXE);
	fcntl(INIT_FD_STATUS, F_SETFD, FD_CLOEXEC);
	fcntl(STDIN_FILENO, F_SETFD, FD_CLOEXEC);
	/* fds 1 and 2 (the host's /dev/null) stay open: with 0..3 taken,
	 * every pipe init makes is above them, so the dup2()s that set up a
	 * child's 0..3 can never clobber one another. */
	fcntl(STDOUT_FILENO, F_SETFD, FD_CLOEXEC);
	fcntl(STDERR_FILENO, F_SETFD, FD_CLOEXEC);
	prctl(PR_SET_NAME, "sbx-init", 0, 0, 0);
	signal(SIGPIPE, SIG_IGN);
	/* No crash of init starts a core_pattern helper either (see
	 * rlimit.c). */
	setrlimit(RLIMIT_CORE, &(struct rlimit){1, 1});
	data = read_spec(&len);
	if (wire_decode_spec(data, len, &spec, &mode) < 0)
		init_fail(EINVAL, "cannot decode the sandbox spec");
	free(data);
	uid = SANDBOX_UID + (mode.userns ? 0 : mode.uid_base);
	gid = SANDBOX_GID + (mode.userns ? 0 : mode.uid_base);

	/* The host attached us to the sandbox's cgroup before we started:
	 * a new cgroup namespace makes that group our "/". */
	if (unshare(CLONE_NEWCGROUP) < 0)
		init_fail(errno, "cannot create the cgroup namespace");
	if (sethostname("sandbox", 7) < 0)
		init_fail(errno, "cannot set the hostname");
	r = net_setup_child(&ce);
	if (!r)
		r = mnt_setup_child(&spec, uid, gid, &ce);
	if (r)
		init_fail(-r, ce.what);
	base = spec.limits;
	reusable = spec.standby && mode.userns && !mode.no_reuse &&
		   fork_run_works();
	if (spec.standby)
		standby(&spec, &mode.seccomp, uid, gid, reusable);
	for (;;) {
		place_files(&spec, uid, gid);
		if (sigfd < 0) {
			sigemptyset(&chld);
			sigaddset(&chld, SIGCHLD);
			sigprocmask(SIG_BLOCK, &chld, NULL);
			sigfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
			if (sigfd < 0)
				init_fail(errno, "cannot watch for children");
		}
		if (spec.serve)
			init_serve(&spec, &mode.seccomp, uid, gid, sigfd);

		forked_runs = 0;
		for (i = 0; i < spec.nsteps; i++)
			if (!run_step(&spec, i, &mode.seccomp, uid, gid,
				      sigfd) &&
			    spec.steps[i].stop_unless_ok)
				break;
		fetch_files(&spec, uid, gid);
		/* A run that went wholly through a forking zygote left
		 * nothing in the sandbox's own namespaces but its files:
		 * with fresh ones the sandbox can take another run. */
		/* The host wants Python zygotes (most runs are Python) and
		 * this sandbox has lost its own: a new sandbox will have one.
		 */
		want_zygote = spec.zygote && zygote_can_fork() &&
			      !(zygote.forking && zygote.pid > 0);
		m.value = reusable && forked_runs == spec.nsteps &&
			  !want_zygote && ++slot_runs < SLOT_MAX_RUNS &&
			  net_is_empty();
		init_send(&m, NULL, NULL);
		/* The result is out; the new scratch space is made after it. */
		if (!m.value || mnt_scratch_renew(&base, uid, gid) < 0 ||
		    mnt_proc_refresh(&base) < 0)
			_exit(0);
		sandbox_spec_release(&spec);
		sandbox_spec_init(&spec);
		spec.limits = base;
		spec.standby = true; /* with the zygote it has, if any */
		standby(&spec, &mode.seccomp, uid, gid, reusable);
	}
}

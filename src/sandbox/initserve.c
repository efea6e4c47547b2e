/*
 * sbx init, serve mode: the PID 1 of a stateful sandbox.
 *
 * After the view is built, init answers commands from the host on its
 * channel (fd 3, a socketpair): start a process (each in its own process
 * group, output relayed like a step's, stdin fed from the host), signal
 * one, and read, write, list or delete files. Several processes run at
 * once; one poll() loop serves them all. File commands run with the
 * sandbox user's filesystem identity and resolve paths inside the
 * sandbox's own mount namespace, so nothing planted in the sandbox (a
 * symlink, a hard link, "..") can lead init to a host file.
 *
 * When an exec's main process ends, the rest of its group is killed,
 * unless it was started with "keep_background": then the processes it left
 * running (a shell's `cmd &`) live on until they end or the sandbox does.
 *
 * An exec started with "pull" does not have its stdout relayed: the host
 * asks for it a chunk at a time (FILE_READ with "pull"), and until it
 * does the bytes wait in the pipe, which holds the writer back. Paths are
 * bytes: one that is not UTF-8 comes as "path_b64", and a listing names
 * such an entry by "name" (bad bytes as U+FFFD) and "name_b64".
 *
 * Init never exits on its own: the host deletes the sandbox by killing it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "base/buf.h"
#include "base/text.h"
#include "base/util.h"
#include "sandbox/internal.h"
#include "base/banned.h"

#define MAX_EXECS 256
#define READ_CHUNK_MAX (1u << 20)
#define ORPHAN_GRACE_NS 200000000ull /* pipes held by escaped processes */

struct sexec {
	uint32_t id;
	pid_t pid;
	int out[3]; /* read ends for stdout (1) and stderr (2) */
	int in;	    /* write end of stdin, -1 when closed */
	struct buf inq;
	size_t inoff;
	bool in_close; /* close stdin once inq is written */
	bool in_ack;   /* answer the host once inq is written */
	uint64_t cap, sent[3];
	uint64_t t0, deadline, exit_ns;
	int stop;
	bool reaped;
	int status;
	struct rusage ru;
	bool pull;	   /* stdout goes out only when the host asks */
	uint64_t pull_max; /* what the host asked for, 0 when nothing */
	bool keep; /* its group outlives the main process ("keep_background") */
	struct sexec *next;
};

struct server {
	const struct sandbox_spec *spec;
	const struct seccomp_prog *filter;
	uid_t uid;
	gid_t gid;
	struct buf in; /* unparsed command bytes */
	struct sexec *execs;
	unsigned nexecs;
};

/* Signals an exec's process group; before the child's setsid() there is no
 * group yet, so the child itself gets it. */
static void kill_group(pid_t pid, int sig)
{
	if (kill(-pid, sig) < 0 && errno == ESRCH)
		kill(pid, sig);
}

static void reply(uint32_t id, json_t *args, const void *payload, size_t len)
{
	struct init_msg m = {.kind = INIT_MSG_REPLY, .step = id};
	char *text = json_dumps(args, JSON_COMPACT);

	json_decref(args);
	m.len1 = text ? (uint32_t)strlen(text) : 0;
	m.len2 = len;
	init_send(&m, text, payload);
	free(text);
}

static void reply_errno(uint32_t id, int err)
{
	reply(id, json_pack("{s:i}", "errno", err), NULL, 0);
}

static void exec_end(struct server *s, struct sexec *e, int err)
{
	struct init_msg m = {.kind = INIT_MSG_EXEC_END, .step = e->id};

	m.value = e->status;
	m.err = err;
	m.stop = (uint32_t)e->stop;
	m.wall_us = ((e->exit_ns ? e->exit_ns : now_ns()) - e->t0) / 1000;
	m.cpu_us = (uint64_t)e->ru.ru_utime.tv_sec * 1000000 +
		   (uint64_t)e->ru.ru_utime.tv_usec +
		   (uint64_t)e->ru.ru_stime.tv_sec * 1000000 +
		   (uint64_t)e->ru.ru_stime.tv_usec;
	init_send(&m, NULL, NULL);
}

static char **json_strv(json_t *arr)
{
	size_t i, n = json_array_size(arr);
	char **v = xcalloc(n + 1, sizeof(*v));

	for (i = 0; i < n; i++) {
		const char *str = json_string_value(json_array_get(arr, i));

		v[i] = xstrdup(str ? str : "");
	}
	return v;
}

static void strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

static void cmd_exec(struct server *s, uint32_t id, json_t *args,
		     const char *payload, size_t len)
{
	json_t *argv_j = json_object_get(args, "argv");
	const char *cwd = json_string_value(json_object_get(args, "cwd"));
	struct init_msg started = {.kind = INIT_MSG_EXEC_START, .step = id};
	int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1};
	char **argv, **env;
	struct sexec *e;
	uint64_t timeout_ms = (uint64_t)json_integer_value(
		json_object_get(args, "timeout_ms"));
	uint64_t cap = (uint64_t)json_integer_value(
		json_object_get(args, "output_bytes"));
	pid_t pid;

	if (!json_is_array(argv_j) || json_array_size(argv_j) == 0 ||
	    s->nexecs >= MAX_EXECS) {
		struct sexec none = {.id = id, .status = 127 << 8};

		exec_end(s, &none, s->nexecs >= MAX_EXECS ? EAGAIN : EINVAL);
		return;
	}
	if (pipe2(pin, O_CLOEXEC) < 0 || pipe2(pout, O_CLOEXEC) < 0 ||
	    pipe2(perr, O_CLOEXEC) < 0) {
		struct sexec none = {.id = id};

		exec_end(s, &none, errno);
		fd_close(&pin[0]);
		fd_close(&pin[1]);
		fd_close(&pout[0]);
		fd_close(&pout[1]);
		return;
	}
	argv = json_strv(argv_j);
	env = json_strv(json_object_get(args, "env"));
	pid = fork();
	if (pid == 0) {
		if (dup2(pin[0], STDIN_FILENO) < 0 ||
		    dup2(pout[1], STDOUT_FILENO) < 0 ||
		    dup2(perr[1], STDERR_FILENO) < 0)
			_exit(127);
		init_exec(s->spec, argv, cwd, env, 0, s->filter, s->uid,
			  s->gid);
	}
	strv_free(argv);
	strv_free(env);
	close(pin[0]);
	close(pout[1]);
	close(perr[1]);
	if (pid < 0) {
		struct sexec none = {.id = id};

		exec_end(s, &none, errno);
		close(pin[1]);
		close(pout[0]);
		close(perr[0]);
		return;
	}
	e = xcalloc(1, sizeof(*e));
	e->id = id;
	e->pid = pid;
	e->out[0] = -1;
	e->out[1] = pout[0];
	e->out[2] = perr[0];
	e->in = pin[1];
	fd_set_nonblock(e->in);
	buf_init(&e->inq);
	if (len)
		buf_add(&e->inq, payload, len);
	e->in_close = json_is_true(json_object_get(args, "stdin_close"));
	e->pull = json_is_true(json_object_get(args, "pull"));
	e->keep = json_is_true(json_object_get(args, "keep_background"));
	if (e->pull)
		fd_set_nonblock(e->out[1]);
	e->cap = cap ? cap : UINT64_MAX;
	e->t0 = now_ns();
	e->deadline = timeout_ms ? e->t0 + timeout_ms * 1000000ull : 0;
	e->next = s->execs;
	s->execs = e;
	s->nexecs++;
	started.value = pid;
	init_send(&started, NULL, NULL);
}

static struct sexec *find_exec(struct server *s, uint32_t id)
{
	struct sexec *e;

	for (e = s->execs; e; e = e->next)
		if (e->id == id)
			return e;
	return NULL;
}

static void cmd_stdin(struct server *s, uint32_t id, json_t *args,
		      const char *payload, size_t len)
{
	struct sexec *e = find_exec(s, id);
	bool ack = json_is_true(json_object_get(args, "ack"));

	if (!e || e->in < 0) {
		/* Ended already: the bytes have nowhere to go. */
		if (ack)
			reply_errno(id, EPIPE);
		return;
	}
	buf_add(&e->inq, payload, len);
	if (json_is_true(json_object_get(args, "close")))
		e->in_close = true;
	/* The host sends the next chunk only once this one is in the pipe
	 * (or cannot be). */
	if (ack)
		e->in_ack = true;
}

static void cmd_signal(struct server *s, uint32_t id, json_t *args)
{
	struct sexec *e = find_exec(s, id);
	int sig = (int)json_integer_value(json_object_get(args, "signal"));

	if (e && !e->reaped && sig > 0 && sig < NSIG)
		kill_group(e->pid, sig);
}

static void resolve(char *out, size_t n, json_t *args)
{
	const char *p = json_string_value(json_object_get(args, "path"));
	const char *b64 = json_string_value(json_object_get(args, "path_b64"));
	struct buf raw;

	buf_init(&raw);
	/* A path that is not UTF-8; one with a NUL in it cannot be a path,
	 * and "" fails its command with ENOENT. */
	if (b64 && !base64_decode(&raw, b64, strlen(b64)) && raw.len &&
	    !memchr(raw.data, '\0', raw.len))
		init_full_path(out, n, raw.data);
	else if (b64)
		out[0] = '\0';
	else
		init_full_path(out, n, p && *p ? p : ".");
	buf_release(&raw);
}

static void cmd_file_write(struct server *s, uint32_t id, json_t *args,
			   const char *payload, size_t len)
{
	char path[PATH_MAX];
	bool append = json_is_true(json_object_get(args, "append"));
	json_t *mode_j = json_object_get(args, "mode");
	mode_t mode = json_is_integer(mode_j)
			      ? (mode_t)json_integer_value(mode_j) & 07777
			      : 0644;
	int fd, r = 0;

	resolve(path, sizeof(path), args);
	init_as_user(s->uid, s->gid, true);
	if (json_is_true(json_object_get(args, "mkdirs")))
		r = init_make_parents(path);
	if (!r) {
		fd = init_open_file(path,
				    O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY |
					    O_NONBLOCK |
					    (append ? O_APPEND : O_TRUNC),
				    mode & 0777);
		if (fd < 0) {
			r = fd;
		} else {
			struct stat st;

			/* Only regular files: a FIFO or device planted by
			 * the sandbox must not block or surprise init. */
			if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
				r = -EINVAL;
			else
				r = write_full(fd, payload, len);
			fd_close(&fd);
		}
	}
	init_as_user(s->uid, s->gid, false);
	reply_errno(id, -r);
}

/* The file an upload replaces: path with its symlinks followed, a
 * regular file (created empty when absent and create is set; *created
 * is then its inode, else 0). Returns 0 or -errno. */
static int part_target(const char *path, bool create, mode_t mode,
		       uint64_t *created, mode_t *tmode, char *out, size_t n)
{
	char fdpath[64];
	struct statvfs vfs;
	struct stat st;
	ssize_t got;
	int fd, r = 0;

	/* O_CREAT whenever create is set, so that errors are those of a
	 * plain write (EROFS before EACCES on a read-only mount). */
	bool absent = create && stat(path, &st) < 0 && errno == ENOENT;

	fd = init_open_file(path,
			    O_WRONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK |
				    (create ? O_CREAT : 0),
			    mode & 0777);
	/* A read-only place says so first, as a truncating open does. */
	if (fd == -EACCES && statvfs(path, &vfs) == 0 &&
	    (vfs.f_flag & ST_RDONLY))
		fd = -EROFS;
	if (fd < 0)
		return fd;
	/* Only regular files: a FIFO or device planted by the sandbox must
	 * not block or surprise init. */
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		r = -EINVAL;
	} else {
		*created = absent ? (uint64_t)st.st_ino : 0;
		*tmode = st.st_mode & 07777;
		snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", fd);
		got = readlink(fdpath, out, n - 1);
		if (got < 0)
			r = -errno;
		else if ((size_t)got >= n - 1 || out[0] != '/')
			r = -ENAMETOOLONG;
		else
			out[got] = '\0';
	}
	fd_close(&fd);
	return r;
}

/* Whether another upload to target is under way: a part file of its
 * beside target that is not own. */
static bool other_part(const char *target, const char *own)
{
	char dir[PATH_MAX], prefix[NAME_MAX + 16];
	const char *base, *own_base = strrchr(own, '/');
	struct dirent *de;
	bool found = false;
	size_t plen;
	DIR *d;

	if (!str_copy(dir, sizeof(dir), target) || !strrchr(dir, '/'))
		return false;
	base = strrchr(target, '/') + 1;
	*strrchr(dir, '/') = '\0';
	plen = (size_t)snprintf(prefix, sizeof(prefix), "%s.sbx-part-", base);
	if (plen >= sizeof(prefix))
		return false;
	d = opendir(dir[0] ? dir : "/");
	if (!d)
		return false;
	while (!found && (de = readdir(d)))
		found = !strncmp(de->d_name, prefix, plen) &&
			(!own_base || strcmp(de->d_name, own_base + 1));
	closedir(d);
	return found;
}

/* Removes the empty file an upload made (inode ino), unless another
 * upload has replaced it since or is writing its replacement (it needs
 * the file there until it commits). part: this upload's part file. */
static void unlink_made(const char *target, uint64_t ino, const char *part)
{
	struct stat st;

	if (ino && lstat(target, &st) == 0 && (uint64_t)st.st_ino == ino &&
	    st.st_size == 0 && !other_part(target, part))
		unlink(target);
}

/* An upload in parts ("part": its id): the chunks go to
 * "<file>.sbx-part-<id>" beside the file the path names, which the last
 * ("commit") renames over it, so the file is replaced whole or not at
 * all. A chunk that fails, or "discard" (the client left), removes the
 * part file, and the file itself when the upload created it (the reply
 * to the first chunk says "created"; later chunks pass it back). */
static void cmd_file_write_part(struct server *s, uint32_t id, json_t *args,
				const char *payload, size_t len)
{
	char path[PATH_MAX], target[PATH_MAX], part[PATH_MAX + 32];
	bool first = !json_is_true(json_object_get(args, "append"));
	bool commit = json_is_true(json_object_get(args, "commit"));
	bool discard = json_is_true(json_object_get(args, "discard"));
	uint64_t created =
		(uint64_t)json_integer_value(json_object_get(args, "created"));
	long long pid = json_integer_value(json_object_get(args, "part"));
	json_t *mode_j = json_object_get(args, "mode");
	mode_t mode = json_is_integer(mode_j)
			      ? (mode_t)json_integer_value(mode_j) & 07777
			      : 0644;
	bool have_part = false;
	uint64_t made = 0;
	mode_t tmode = 0;
	int fd, r = 0;

	target[0] = '\0';
	resolve(path, sizeof(path), args);
	init_as_user(s->uid, s->gid, true);
	if (first && !discard && json_is_true(json_object_get(args, "mkdirs")))
		r = init_make_parents(path);
	if (!r)
		r = part_target(path, first && !discard, mode, &made, &tmode,
				target, sizeof(target));
	if (!r && snprintf(part, sizeof(part), "%s.sbx-part-%lld", target,
			   pid) >= (int)sizeof(target))
		r = -ENAMETOOLONG;
	if (made)
		created = made;
	if (!r && discard) {
		unlink(part);
		unlink_made(target, created, part);
		goto out;
	}
	if (!r) {
		/* The first chunk makes the part file new: never one planted
		 * under its name. */
		fd = init_open_file(
			part,
			O_WRONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK |
				(first ? O_CREAT | O_EXCL : O_APPEND),
			mode & 0777);
		if (fd < 0) {
			r = fd;
		} else {
			struct stat st;

			have_part = true;
			if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
				r = -EINVAL;
			/* The file keeps its mode. */
			else if (first && !made && fchmod(fd, tmode) < 0)
				r = -errno;
			else
				r = write_full(fd, payload, len);
			fd_close(&fd);
		}
		if (!r && commit && rename(part, target) < 0)
			r = -errno;
		if (r && (have_part || !first))
			unlink(part);
	}
	if (r && target[0])
		unlink_made(target, created, part);
out:
	init_as_user(s->uid, s->gid, false);
	reply(id,
	      json_pack("{s:i,s:I}", "errno", -r, "created", (json_int_t)made),
	      NULL, 0);
}

/* Sends what an exec's pulled stdout has, up to what was asked for. */
static void pull_read(struct sexec *e)
{
	char *data = xmalloc(e->pull_max);
	size_t got = 0;
	bool eof = false;

	while (got < e->pull_max) {
		ssize_t n = read(e->out[1], data + got, e->pull_max - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0) {
			eof = true;
			fd_close(&e->out[1]);
			break;
		}
		got += (size_t)n;
	}
	if (got || eof) {
		reply(e->id, json_pack("{s:i,s:b}", "errno", 0, "eof", eof),
		      data, got);
		e->pull_max = 0;
	}
	free(data);
}

/* The host asks for the next chunk of an exec's stdout, or ("close")
 * drops the rest. Every request is answered once. */
static void cmd_pull(struct server *s, uint32_t id, json_t *args)
{
	struct sexec *e = find_exec(s, id);
	uint64_t max =
		(uint64_t)json_integer_value(json_object_get(args, "max"));

	if (!e || !e->pull || e->out[1] < 0) {
		reply(id,
		      json_pack("{s:i,s:b}", "errno", e ? 0 : ESRCH, "eof", 1),
		      NULL, 0);
		return;
	}
	if (json_is_true(json_object_get(args, "close"))) {
		if (e->pull_max)
			reply(id, json_pack("{s:i,s:b}", "errno", 0, "eof", 1),
			      NULL, 0);
		e->pull_max = 0;
		fd_close(&e->out[1]);
		reply(id, json_pack("{s:i,s:b}", "errno", 0, "eof", 1), NULL,
		      0);
		return;
	}
	e->pull_max = max == 0 || max > READ_CHUNK_MAX ? READ_CHUNK_MAX : max;
}

static void cmd_file_read(struct server *s, uint32_t id, json_t *args)
{
	char path[PATH_MAX];
	uint64_t off =
		(uint64_t)json_integer_value(json_object_get(args, "offset"));
	uint64_t max =
		(uint64_t)json_integer_value(json_object_get(args, "max"));
	struct stat st;
	char *data = NULL;
	ssize_t n = 0;
	int fd, err = 0;

	if (json_is_true(json_object_get(args, "pull"))) {
		cmd_pull(s, id, args);
		return;
	}
	if (max == 0 || max > READ_CHUNK_MAX)
		max = READ_CHUNK_MAX;
	resolve(path, sizeof(path), args);
	init_as_user(s->uid, s->gid, true);
	fd = init_open_file(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK,
			    0);
	if (fd < 0) {
		err = -fd;
	} else if (fstat(fd, &st) < 0) {
		err = errno;
	} else if (S_ISDIR(st.st_mode)) {
		err = EISDIR;
	} else if (!S_ISREG(st.st_mode)) {
		err = EINVAL;
	} else {
		data = xmalloc(max);
		n = pread(fd, data, max, (off_t)off);
		if (n < 0) {
			err = errno;
			n = 0;
		}
	}
	fd_close(&fd);
	init_as_user(s->uid, s->gid, false);
	reply(id,
	      json_pack("{s:i,s:I}", "errno", err, "size",
			err ? (json_int_t)0 : (json_int_t)st.st_size),
	      data, (size_t)n);
	free(data);
}

static int remove_entry(const char *path, const struct stat *st, int flag,
			struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP)
		return rmdir(path) < 0 ? -1 : 0;
	return unlink(path) < 0 ? -1 : 0;
}

static void cmd_file_delete(struct server *s, uint32_t id, json_t *args)
{
	char path[PATH_MAX];
	struct stat st;
	int err = 0;

	resolve(path, sizeof(path), args);
	init_as_user(s->uid, s->gid, true);
	if (lstat(path, &st) < 0) {
		err = errno;
	} else if (S_ISDIR(st.st_mode)) {
		if (json_is_true(json_object_get(args, "recursive"))) {
			/* FTW_PHYS: never follow a symlink out of the tree. */
			if (nftw(path, remove_entry, 16,
				 FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0)
				err = errno ? errno : EIO;
		} else if (rmdir(path) < 0) {
			err = errno;
		}
	} else if (unlink(path) < 0) {
		err = errno;
	}
	init_as_user(s->uid, s->gid, false);
	reply_errno(id, err);
}

static const char *type_name(mode_t m)
{
	if (S_ISREG(m))
		return "file";
	if (S_ISDIR(m))
		return "dir";
	if (S_ISLNK(m))
		return "symlink";
	return "other";
}

/* One entry of a listing. A name that is not UTF-8 cannot be a JSON
 * string: "name" has it repaired, "name_b64" has its bytes. */
static json_t *entry_json(const char *name, const struct stat *st)
{
	size_t len = strlen(name);
	struct buf b;
	json_t *o;

	buf_init(&b);
	if (utf8_repair(&b, name, len)) {
		o = json_pack("{s:s}", "name", name);
	} else {
		o = json_pack("{s:s%}", "name", b.data, b.len);
		buf_reset(&b);
		base64_encode(&b, name, len);
		json_object_set_new(o, "name_b64", json_stringn(b.data, b.len));
	}
	buf_release(&b);
	json_object_set_new(o, "type", json_string(type_name(st->st_mode)));
	json_object_set_new(o, "size", json_integer((json_int_t)st->st_size));
	json_object_set_new(o, "mode", json_integer(st->st_mode & 07777));
	json_object_set_new(o, "mtime", json_integer((json_int_t)st->st_mtime));
	return o;
}

static void cmd_file_list(struct server *s, uint32_t id, json_t *args)
{
	char path[PATH_MAX], child[PATH_MAX * 2];
	json_t *entries = json_array();
	struct dirent *de;
	DIR *d;
	int err = 0;

	resolve(path, sizeof(path), args);
	init_as_user(s->uid, s->gid, true);
	{
		int fd = init_open_file(path,
					O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);

		d = fd < 0 ? NULL : fdopendir(fd);
		if (fd < 0)
			err = -fd;
		else if (!d) {
			err = errno;
			close(fd);
		}
	}
	while (d && (de = readdir(d))) {
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(child, sizeof(child), "%s/%s", path, de->d_name);
		if (lstat(child, &st) < 0)
			continue;
		json_array_append_new(entries, entry_json(de->d_name, &st));
	}
	if (d)
		closedir(d);
	init_as_user(s->uid, s->gid, false);
	reply(id, json_pack("{s:i,s:o}", "errno", err, "entries", entries),
	      NULL, 0);
}

static void dispatch(struct server *s, const struct init_msg *m,
		     const char *json, const char *payload)
{
	json_t *args = json_loadb(json, m->len1, 0, NULL);

	if (!args)
		args = json_object();
	switch (m->kind) {
	case INIT_CMD_EXEC:
		cmd_exec(s, m->step, args, payload, (size_t)m->len2);
		break;
	case INIT_CMD_STDIN:
		cmd_stdin(s, m->step, args, payload, (size_t)m->len2);
		break;
	case INIT_CMD_SIGNAL:
		cmd_signal(s, m->step, args);
		break;
	case INIT_CMD_FILE_WRITE:
		if (json_is_integer(json_object_get(args, "part")))
			cmd_file_write_part(s, m->step, args, payload,
					    (size_t)m->len2);
		else
			cmd_file_write(s, m->step, args, payload,
				       (size_t)m->len2);
		break;
	case INIT_CMD_FILE_READ:
		cmd_file_read(s, m->step, args);
		break;
	case INIT_CMD_FILE_DELETE:
		cmd_file_delete(s, m->step, args);
		break;
	case INIT_CMD_FILE_LIST:
		cmd_file_list(s, m->step, args);
		break;
	default:
		break;
	}
	json_decref(args);
}

/* Reads commands; returns false when the host has gone. */
static bool read_commands(struct server *s)
{
	char chunk[65536];
	size_t off = 0;

	for (;;) {
		ssize_t n = recv(INIT_FD_STATUS, chunk, sizeof(chunk),
				 MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0)
			return false;
		buf_add(&s->in, chunk, (size_t)n);
	}
	while (s->in.len - off >= sizeof(struct init_msg)) {
		struct init_msg m;
		uint64_t need;

		memcpy(&m, s->in.data + off, sizeof(m));
		need = sizeof(m) + (uint64_t)m.len1 + m.len2;
		if (s->in.len - off < need)
			break;
		dispatch(s, &m, s->in.data + off + sizeof(m),
			 s->in.data + off + sizeof(m) + m.len1);
		off += need;
	}
	if (off) {
		memmove(s->in.data, s->in.data + off, s->in.len - off);
		s->in.len -= off;
	}
	return true;
}

static void relay(struct sexec *e, int stream)
{
	char chunk[65536];
	ssize_t n = read(e->out[stream], chunk, sizeof(chunk));

	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n <= 0) {
		fd_close(&e->out[stream]);
		return;
	}
	if (e->sent[stream] + (uint64_t)n > e->cap) {
		n = (ssize_t)(e->cap - e->sent[stream]);
		if (e->stop == INIT_STOP_NONE)
			e->stop = INIT_STOP_OUTPUT;
		kill_group(e->pid, SIGKILL);
		fd_close(&e->out[stream]);
	}
	if (n > 0) {
		struct init_msg m = {.kind = INIT_MSG_OUTPUT,
				     .step = e->id,
				     .value = stream,
				     .len2 = (uint64_t)n};

		init_send(&m, NULL, chunk);
		e->sent[stream] += (uint64_t)n;
	}
}

static void feed_stdin(struct sexec *e)
{
	while (e->in >= 0 && e->inoff < e->inq.len) {
		ssize_t n = write(e->in, e->inq.data + e->inoff,
				  e->inq.len - e->inoff);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n < 0) { /* EPIPE: the reader is gone */
			fd_close(&e->in);
			break;
		}
		e->inoff += (size_t)n;
	}
	if (e->in < 0 && e->in_ack) {
		e->in_ack = false;
		reply_errno(e->id, EPIPE);
	}
	if (e->inoff == e->inq.len) {
		/* A large chunk's buffer is not kept. */
		if (e->inq.cap > READ_CHUNK_MAX / 4)
			buf_release(&e->inq);
		buf_reset(&e->inq);
		e->inoff = 0;
		if (e->in_close)
			fd_close(&e->in);
		if (e->in_ack) {
			e->in_ack = false;
			reply_errno(e->id, 0);
		}
	}
}

static void reap(struct server *s)
{
	struct rusage ru;
	int st;
	pid_t p;

	while ((p = wait4(-1, &st, WNOHANG, &ru)) > 0) {
		struct sexec *e;

		for (e = s->execs; e; e = e->next)
			if (e->pid == p && !e->reaped) {
				e->reaped = true;
				e->status = st;
				e->ru = ru;
				e->exit_ns = now_ns();
				/* The exec's other processes end with it,
				 * unless it asked for them to live on (as a
				 * shell's background jobs do on a host). */
				if (!e->keep)
					kill_group(e->pid, SIGKILL);
			}
	}
}

static void finish_done(struct server *s)
{
	struct sexec **pp = &s->execs;
	uint64_t now = now_ns();

	while (*pp) {
		struct sexec *e = *pp;

		if (e->reaped && (e->out[1] >= 0 || e->out[2] >= 0) &&
		    now - e->exit_ns > ORPHAN_GRACE_NS) {
			/* A process that left the group still holds the
			 * pipes: stop waiting for it. A pulled stdout waits
			 * for the host, which reads it to its end or drops
			 * it. */
			if (!e->pull)
				fd_close(&e->out[1]);
			fd_close(&e->out[2]);
		}
		if (!e->reaped || e->out[1] >= 0 || e->out[2] >= 0) {
			pp = &e->next;
			continue;
		}
		fd_close(&e->in);
		feed_stdin(e); /* answers a chunk still waiting */
		exec_end(s, e, 0);
		*pp = e->next;
		buf_release(&e->inq);
		free(e);
		s->nexecs--;
	}
}

bool init_serving;

void init_serve(const struct sandbox_spec *spec,
		const struct seccomp_prog *filter, uid_t uid, gid_t gid,
		int sigfd)
{
	struct server s = {
		.spec = spec, .filter = filter, .uid = uid, .gid = gid};
	struct init_msg ready = {.kind = INIT_MSG_READY};
	struct pollfd *pfd = xcalloc(2 + 3 * MAX_EXECS, sizeof(*pfd));
	struct sexec **owner = xcalloc(2 + 3 * MAX_EXECS, sizeof(*owner));

	buf_init(&s.in);
	init_serving = true;
	/* Reads of commands never block (recv with MSG_DONTWAIT); writes
	 * to the host do, so no message is ever cut short. */
	/* Writes to the host stay blocking: the host always reads, and a
	 * slow host should slow the sandbox, not lose its output. */
	init_send(&ready, NULL, NULL);
	for (;;) {
		int n = 2, timeout = -1, i;
		uint64_t now = now_ns();
		struct sexec *e;

		pfd[0] =
			(struct pollfd){.fd = INIT_FD_STATUS, .events = POLLIN};
		pfd[1] = (struct pollfd){.fd = sigfd, .events = POLLIN};
		for (e = s.execs; e; e = e->next) {
			uint64_t wake = 0;

			for (i = 1; i <= 2; i++)
				if (e->out[i] >= 0 &&
				    (i == 2 || !e->pull || e->pull_max)) {
					owner[n] = e;
					pfd[n++] = (struct pollfd){
						.fd = e->out[i],
						.events = POLLIN};
				}
			if (e->in >= 0 && e->inoff < e->inq.len) {
				owner[n] = e;
				pfd[n++] = (struct pollfd){.fd = e->in,
							   .events = POLLOUT};
			}
			if (!e->reaped && e->deadline)
				wake = e->deadline;
			if (e->reaped && (e->out[2] >= 0 || !e->pull))
				wake = e->exit_ns + ORPHAN_GRACE_NS;
			if (wake) {
				int ms = wake <= now ? 0
						     : (int)((wake - now) /
							     1000000) +
							       1;

				if (timeout < 0 || ms < timeout)
					timeout = ms;
			}
		}
		if (poll(pfd, (nfds_t)n, timeout) < 0 && errno != EINTR)
			init_fail(errno, "cannot poll");
		if (pfd[1].revents) {
			struct signalfd_siginfo si;

			while (read(sigfd, &si, sizeof(si)) > 0)
				;
			reap(&s);
		}
		for (i = 2; i < n; i++) {
			if (!pfd[i].revents)
				continue;
			e = owner[i];
			if (pfd[i].fd == e->in)
				feed_stdin(e);
			else if (e->pull && pfd[i].fd == e->out[1])
				pull_read(e);
			else
				relay(e, pfd[i].fd == e->out[1] ? 1 : 2);
		}
		if (pfd[0].revents && !read_commands(&s))
			_exit(0); /* the host is gone */
		now = now_ns();
		for (e = s.execs; e; e = e->next) {
			if (!e->reaped && e->deadline && now >= e->deadline) {
				if (e->stop == INIT_STOP_NONE)
					e->stop = INIT_STOP_TIME;
				kill_group(e->pid, SIGKILL);
				e->deadline = 0;
			}
			feed_stdin(e);
		}
		finish_done(&s);
	}
}

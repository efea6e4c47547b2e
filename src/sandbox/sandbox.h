/*
 * The isolation primitive: a spec in, a result out.
 *
 * A sandbox is a fresh set of namespaces (user, pid, mount, net, ipc, uts,
 * cgroup) whose PID 1 is sbx's own init. The init builds the filesystem view,
 * then forks the command as an unprivileged user with no capabilities,
 * no_new_privs and a seccomp filter. The host side supervises it without
 * threads: every sandbox is a handful of fds watched by a struct loop.
 *
 * Nothing in here knows about HTTP.
 */
#ifndef SBX_SANDBOX_H
#define SBX_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop;
struct sandbox;

/* The result vocabulary, shared by every API. */
enum sandbox_status {
	SANDBOX_OK,
	SANDBOX_NONZERO_EXIT,
	SANDBOX_SIGNALED,
	SANDBOX_TIME_LIMIT,
	SANDBOX_MEMORY_LIMIT,
	SANDBOX_OUTPUT_LIMIT,
	SANDBOX_ERROR,
};

/* Returns the status word ("ok", "time_limit", ...); static storage. */
const char *sandbox_status_name(enum sandbox_status status);

struct sandbox_limits {
	uint64_t wall_ms;      /* whole sandbox, 0: none */
	uint64_t cpu_ms;       /* CPU time of every process, 0: none */
	uint64_t memory_bytes; /* cgroup memory, swap may not extend it */
	uint64_t pids;	       /* processes and threads */
	uint64_t fsize_bytes;  /* largest file a process may write */
	uint64_t nofile;       /* open files per process */
	uint64_t output_bytes; /* per stream; past it the sandbox is killed */
	uint64_t disk_bytes;   /* /tmp, the work dir, $HOME and /dev/shm */
	uint64_t cpu_quota_milli; /* CPU bandwidth in thousandths of a core
				   * (1000: one core), 0: none */
	uint64_t cpu_weight; /* share under contention on the cgroup v2 scale
			      * (1..10000, 100 normal), 0: the default */
};

#define SANDBOX_MAX_BINDS 32

struct sandbox_bind {
	char *src; /* host path */
	char *dst; /* absolute path inside the sandbox */
	bool writable;
	bool device; /* a device node: bound without nodev; a GPU's node
		      * holds that GPU (sandbox/gpu.h) */
	bool shared; /* a GPU node other sandboxes may hold too */
};

/* A file placed in the work dir before the command starts. */
struct sandbox_file {
	char *path; /* relative to the work dir, or absolute */
	char *data;
	size_t len;
	bool executable;
};

/* One command of a sandbox. Steps run one after another in the same
 * sandbox (so a compile step's output is there for the run steps); each has
 * its own stdin, limits and result. When a step ends, whatever it left
 * running is killed before the next starts. */
struct sandbox_step {
	char **argv;	  /* NULL-terminated, argv[0] looked up in PATH */
	char *stdin_data; /* NULL: spec->stdin_fd for step 0, else empty */
	size_t stdin_len;
	uint64_t wall_ms;    /* 0: only the sandbox's own limit */
	uint64_t cpu_ms;     /* 0: none */
	bool stop_unless_ok; /* skip later steps unless this one is ok */
};

struct sandbox_spec {
	char **argv; /* a single step (when steps is empty) */
	struct sandbox_step *steps;
	size_t nsteps;
	char **env; /* NAME=VALUE, NULL-terminated, added on top */
	char *cwd;  /* default: the work dir */
	struct sandbox_bind *binds;
	size_t nbinds;
	struct sandbox_file *files;
	size_t nfiles;
	char **fetch; /* paths read back after the run */
	size_t nfetch;
	struct sandbox_limits limits;
	int stdin_fd; /* borrowed; step 0's stdin; -1: empty */
	bool serve; /* stateful: no steps; init answers commands until killed */
	bool standby; /* warm: build the view, then wait for sandbox_assign() */
	bool zygote;  /* warm: start a Python interpreter too (guest/zygote.py);
		       * in a run given to one that serves run after run:
		       * keep one for the runs after it */
	/* A TCP listener on this port of the sandbox's own network (0:
	 * none), made by the host before any command runs (at start, or at
	 * sandbox_assign() for a warm sandbox). listen(listen_arg, fd) gets
	 * it on the loop's thread and owns it from then on; fd is -errno
	 * when it could not be made (the sandbox then runs without it). */
	uint16_t listen_port;
	void (*listen)(void *arg, int fd);
	void *listen_arg;
};

/* A file read back from the sandbox after the run (spec->fetch). */
struct sandbox_fetched {
	char *path; /* as requested */
	char *data;
	size_t len;
};

struct sandbox_step_result {
	bool ran;
	enum sandbox_status status;
	int exit_code; /* -1 when killed by a signal */
	int signal;
	uint64_t wall_ms;
	uint64_t cpu_ms;
	bool oom_killed;
	bool output_truncated;
};

/* The overall fields describe the sandbox as a whole; with several steps
 * they repeat the last step that ran, except that a sandbox-wide failure
 * (setup, wall limit) overrides. */
struct sandbox_result {
	struct sandbox_step_result *steps;
	size_t nsteps;
	bool pids_limit_hit; /* a fork failed because of the process limit */
	enum sandbox_status status;
	int exit_code; /* -1 when killed by a signal */
	int signal;    /* 0 unless killed by a signal */
	uint64_t wall_ms;
	uint64_t cpu_ms;
	uint64_t peak_memory_bytes;
	bool oom_killed;
	bool output_truncated;
	char error[256]; /* set for SANDBOX_ERROR: which stage failed and why */
	struct sandbox_fetched *fetched;
	size_t nfetched;
};

/* The defaults every API starts from. */
#define SANDBOX_DEFAULT_WALL_MS 10000ull
#define SANDBOX_DEFAULT_MEMORY (512ull << 20)
#define SANDBOX_DEFAULT_PIDS 128ull
#define SANDBOX_DEFAULT_FSIZE (64ull << 20)
#define SANDBOX_DEFAULT_NOFILE 256ull
#define SANDBOX_DEFAULT_OUTPUT (16ull << 20)
#define SANDBOX_DEFAULT_DISK (256ull << 20)

/* Where things are inside every sandbox. */
#define SANDBOX_WORK_DIR "/work"
#define SANDBOX_HOME_DIR "/home/sandbox"
/* Read-only: bin/python (python3) and python/sbx_guest.py, on PATH and
 * PYTHONPATH. */
#define SANDBOX_GUEST_DIR "/opt/sbx"
#define SANDBOX_UID 1000
#define SANDBOX_GID 1000

/* Fills a caller-owned spec with the defaults and no command. */
void sandbox_spec_init(struct sandbox_spec *spec);
/* Frees everything the spec owns (argv, steps, env, binds, files, fetch). */
void sandbox_spec_release(struct sandbox_spec *spec);
/* Appenders; they copy their arguments. */
void sandbox_spec_add_env(struct sandbox_spec *spec, const char *name_value);
void sandbox_spec_add_bind(struct sandbox_spec *spec, const char *src,
			   const char *dst, bool writable);
/* Appends a copy of b, flags included. */
void sandbox_spec_copy_bind(struct sandbox_spec *spec,
			    const struct sandbox_bind *b);
void sandbox_spec_add_file(struct sandbox_spec *spec, const char *path,
			   const void *data, size_t len, bool executable);
void sandbox_spec_add_fetch(struct sandbox_spec *spec, const char *path);
void sandbox_spec_set_argv(struct sandbox_spec *spec, char *const *argv);
/* Appends a step; argv and stdin are copied (stdin may be NULL). */
struct sandbox_step *sandbox_spec_add_step(struct sandbox_spec *spec,
					   char *const *argv,
					   const char *stdin_data,
					   size_t stdin_len);

void sandbox_result_init(struct sandbox_result *res);
/* Frees the fetched files. */
void sandbox_result_release(struct sandbox_result *res);

/* Host-wide setup: finds the cgroup hierarchy, opens sbx's own executable
 * for re-exec as init. Call once from main() before any sandbox. Returns 0
 * or -errno with a message in err. */
int sandbox_host_init(char *err, size_t errlen);
void sandbox_host_release(void);
/* Removes cgroups that sandboxes of dead sbx processes left behind (a
 * crash, a kill -9) and kills what is in them. Returns how many. */
int sandbox_host_sweep(void);

/* What the supervisor reports back. Both callbacks run on the loop's
 * thread. output() gets a step's stdout (stream 1) and stderr (stream 2)
 * bytes as they arrive, at most limits.output_bytes per stream and step.
 * done() is called exactly once; the sandbox is freed right after it
 * returns, and res with it (done() may steal res->fetched). */
typedef void (*sandbox_output_fn)(void *ctx, size_t step, int stream,
				  const char *data, size_t len);
/* Events of a stateful sandbox (spec->serve); see sandbox_command(). */
enum sandbox_event_kind {
	SANDBOX_EV_READY,      /* set up: commands are welcome */
	SANDBOX_EV_EXEC_START, /* id started as pid */
	SANDBOX_EV_EXEC_END,   /* id ended: result */
	SANDBOX_EV_REPLY,      /* answer to a file command: json, payload */
	/* A reusable warm sandbox's run has ended and it takes another: it
	 * is given back to the ops it was started with (sent to those, just
	 * before the run's done()); SANDBOX_EV_READY follows when it is. */
	SANDBOX_EV_BACK,
};

struct sandbox_event {
	enum sandbox_event_kind kind;
	uint32_t id;
	int pid;
	int err; /* EXEC_END: the exec could not start (errno) */
	/* READY of a warm sandbox: it serves run after run (a forking
	 * zygote's), coming back after each one that went well. The ops it
	 * was started with then get done() with a NULL result if it ends
	 * while a run has it. */
	bool reusable;
	struct sandbox_step_result result;
	const char *json; /* REPLY: {"errno": n, ...} */
	size_t json_len;
	const char *payload;
	size_t payload_len;
};

struct sandbox_ops {
	sandbox_output_fn output; /* serve mode: step is the exec id */
	void (*done)(void *ctx, struct sandbox_result *res);
	void (*event)(void *ctx, const struct sandbox_event *ev);
};

/* Commands to a stateful sandbox. json holds the arguments:
 *   EXEC   {"argv": [..], "cwd", "env": ["N=V"], "timeout_ms",
 *           "output_bytes", "stdin_close": bool}  payload: first stdin bytes
 *   STDIN  {"close": bool}                        payload: bytes
 *   SIGNAL {"signal": n}
 *   FILE_WRITE  {"path", "append", "mode", "mkdirs"}  payload: bytes
 *   FILE_READ   {"path", "offset", "max"}  -> REPLY {"errno", "size"} + bytes
 *   FILE_DELETE {"path", "recursive"}
 *   FILE_LIST   {"path"} -> REPLY {"errno", "entries": [{name, type, size,
 *                                  mode, mtime}]}
 * File commands answer with a REPLY event carrying the same id. Paths are
 * relative to the work dir or absolute inside the sandbox. */
enum sandbox_cmd {
	SANDBOX_CMD_EXEC = 20,
	SANDBOX_CMD_STDIN,
	SANDBOX_CMD_SIGNAL,
	SANDBOX_CMD_FILE_WRITE,
	SANDBOX_CMD_FILE_READ,
	SANDBOX_CMD_FILE_DELETE,
	SANDBOX_CMD_FILE_LIST,
};

/* Warm sandboxes. A sandbox started from a spec with standby set builds its
 * view and waits; ops->event gets SANDBOX_EV_READY then. sandbox_assign()
 * gives it a real spec (steps, files, fetches, env, cwd and limits; not
 * binds or stdin_fd), or a stateful one's (serve: env and limits), with
 * new ops; from then on it is like a sandbox started with that spec.
 * Returns 0 or -errno; on failure the sandbox may be half-changed and
 * should be killed. */
int sandbox_assign(struct sandbox *sb, const struct sandbox_spec *spec,
		   const struct sandbox_ops *ops, void *ctx);
/* Whether spec can be given to a warm sandbox. */
bool sandbox_spec_is_warmable(const struct sandbox_spec *spec);
/* Whether spec would run on a warm sandbox's Python zygote: one step,
 * `python3 SCRIPT [ARGS]`. */
bool sandbox_spec_is_python(const struct sandbox_spec *spec);

/* A TCP socket (non-blocking, CLOEXEC) of the sandbox's own network, for
 * the host to connect to a port a process of the sandbox listens on: it
 * reaches that sandbox's loopback and nothing else. Returns the fd (the
 * caller's) or -errno. */
int sandbox_net_socket(struct sandbox *sb);

/* Queues a command (loop thread only). Returns 0 or -EPIPE when the
 * sandbox is gone. */
int sandbox_command(struct sandbox *sb, enum sandbox_cmd cmd, uint32_t id,
		    const char *json, const void *payload, size_t len);

/* Starts a sandbox supervised by loop. The spec is copied as needed and may
 * be released when this returns. On failure before anything ran, returns
 * NULL and writes why into err; done() is then never called. errno is
 * EAGAIN when every host uid slot is in use (try again when a sandbox has
 * ended). */
struct sandbox *sandbox_start(struct loop *loop,
			      const struct sandbox_spec *spec,
			      const struct sandbox_ops *ops, void *ctx,
			      char *err, size_t errlen);
/* Sandboxes whose processes or cgroup are not yet cleaned up (a sandbox
 * may report its result before its init has finished exiting). */
unsigned sandbox_live(void);

/* Kills everything in the sandbox; done() follows with the status given
 * (SANDBOX_ERROR with reason, or a limit). Safe to call more than once. */
void sandbox_kill(struct sandbox *sb, enum sandbox_status status,
		  const char *reason);

/* Runs one sandbox to completion on a private loop. output may be NULL. The
 * result is always filled (SANDBOX_ERROR when it could not start). */
void sandbox_run(const struct sandbox_spec *spec, sandbox_output_fn output,
		 void *ctx, struct sandbox_result *res);

/* The entry point of the re-executed binary inside the sandbox (PID 1).
 * Never returns. */
void sandbox_init_main(void) __attribute__((noreturn));

#endif

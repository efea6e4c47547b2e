/*
 * What the sandbox files share and nobody else sees: the host state, the
 * wire format between the host side and init, and each layer's child-side
 * step.
 */
#ifndef SBX_SANDBOX_INTERNAL_H
#define SBX_SANDBOX_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <sys/wait.h>

#include "base/buf.h"
#include "sandbox/cgroup.h"
#include "sandbox/sandbox.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

/* The seccomp filter as a raw BPF program (struct sock_filter array). */
struct seccomp_prog {
	char *data;
	size_t len;
};

/* Host-wide state, filled by sandbox_host_init(). */
struct sandbox_host {
	bool ready;
	int exe_fd;  /* the init binary, for execveat */
	bool userns; /* user namespaces usable */
	/* Warm sandboxes serve run after run (SBX_WARM_REUSE=0: once). */
	bool warm_reuse;
	struct cgroup_host cg;
	struct seccomp_prog seccomp;
};
extern struct sandbox_host sandbox_host;

/* File descriptors init finds when it starts. */
enum {
	INIT_FD_STATUS = 3, /* write end: messages to the host */
	INIT_FD_SPEC = 4,   /* memfd with the encoded spec */
	INIT_FD_EXE = 5,    /* sbx itself (closed by init) */
	INIT_FD_COUNT = 6,
};

/* Messages from init to the host, on INIT_FD_STATUS: a fixed header, then
 * len1 + len2 bytes of payload. Output of every step is relayed this way,
 * so it arrives in order with the step boundaries. */
enum init_msg_kind {
	INIT_MSG_ERROR = 1,    /* a setup stage failed: payload is the text */
	INIT_MSG_OUTPUT = 2,   /* step's stream (value) bytes: payload */
	INIT_MSG_STEP_END = 3, /* step ended: value is its wait status */
	INIT_MSG_FETCH = 4,    /* a fetched file: payload is path then data */
	INIT_MSG_MISSING = 5,  /* a fetch path that was absent: payload path */
	INIT_MSG_DONE = 6,     /* every step ran; init exits next, or
				* (value 1) builds the sandbox afresh
				* around its forking zygote and sends
				* INIT_MSG_READY again */

	/* Serve mode (stateful sandboxes). Both directions use the same
	 * header: step is the exec or request id, len1 bytes of JSON
	 * arguments, then len2 bytes of payload. */
	INIT_CMD_EXEC = 20,	  /* host: start a process */
	INIT_CMD_STDIN = 21,	  /* host: bytes for an exec's stdin */
	INIT_CMD_SIGNAL = 22,	  /* host: signal an exec's process group */
	INIT_CMD_FILE_WRITE = 23, /* host: write (part of) a file */
	INIT_CMD_FILE_READ = 24,  /* host: read a file */
	INIT_CMD_FILE_DELETE = 25,
	INIT_CMD_FILE_LIST = 26,
	INIT_CMD_RUN = 27,	/* host: a warm sandbox's run (payload: spec) */
	INIT_MSG_READY = 40,	/* init: the view is built, commands welcome
				 * (a warm sandbox's value: 1 when it serves
				 * run after run, 2 when also with a forking
				 * Python zygote) */
	INIT_MSG_EXEC_END = 41, /* init: an exec ended (like STEP_END) */
	INIT_MSG_REPLY = 42,	/* init: answer to a file command */
	INIT_MSG_EXEC_START = 43 /* init: an exec started (value: its pid) */
};

/* Why init ended a step early. */
enum init_stop {
	INIT_STOP_NONE = 0,
	INIT_STOP_TIME = 1,
	INIT_STOP_OUTPUT = 2,
};

struct init_msg {
	uint32_t kind;
	int32_t err;	  /* errno for INIT_MSG_ERROR */
	int32_t value;	  /* wait status or stream */
	uint32_t step;	  /* step index */
	uint32_t stop;	  /* enum init_stop for INIT_MSG_STEP_END */
	uint32_t len1;	  /* first payload part */
	uint64_t len2;	  /* second payload part */
	uint64_t cpu_us;  /* INIT_MSG_STEP_END: the step's CPU time */
	uint64_t wall_us; /* INIT_MSG_STEP_END: the step's wall time */
};

/* How init runs: in a user namespace (the sandbox user is SANDBOX_UID
 * inside) or, without one, as host root dropping to uid_base+SANDBOX_UID.
 * uid_base is the first id of the sandbox's host uid slot. */
struct init_mode {
	bool userns;
	bool no_reuse; /* a warm sandbox serves one run (SBX_WARM_REUSE=0) */
	uint32_t uid_base;
	struct seccomp_prog seccomp; /* borrowed when encoding */
};

/* Encodes what init needs from spec into out. */
void wire_encode_spec(struct buf *out, const struct sandbox_spec *spec,
		      const struct init_mode *mode);
/* Decodes a spec; the result owns copies of everything. Returns 0 or
 * -EINVAL for malformed input. */
int wire_decode_spec(const char *data, size_t len, struct sandbox_spec *spec,
		     struct init_mode *mode);

/* Child-side steps, run by init in order (see init.c). Each returns 0 or
 * -errno and, on failure, names what failed in what (a path or a step). */
struct child_err {
	char what[200];
};
int mnt_setup_child(const struct sandbox_spec *spec, uid_t uid, gid_t gid,
		    struct child_err *ce);
/* Rewrites the generated /proc/meminfo for new limits. 0 or -errno. */
int mnt_proc_refresh(const struct sandbox_limits *lim);
int net_setup_child(struct child_err *ce);
/* Init: whether the sandbox's network namespace holds no socket of a
 * past run (only unnamed unix sockets, which only live processes hold). */
bool net_is_empty(void);
/* Init: replaces the scratch tmpfs (/tmp, the work dir, $HOME, /dev/shm,
 * /mnt) with an empty one of lim's size. Returns 0 or -errno. */
int mnt_scratch_renew(const struct sandbox_limits *lim, uid_t uid, gid_t gid);
/* The files /proc's masks are bound from (procmask.c). */
enum {
	PROCMASK_EMPTY,	    /* an empty read-only file */
	PROCMASK_EMPTY_DIR, /* an empty read-only directory */
	PROCMASK_MEMINFO,
	PROCMASK_STAT,
	PROCMASK_LOADAVG,
	PROCMASK_NSRC,
};
/* Makes a freshly mounted procfs at proc what a sandbox sees: its
 * read-only entries and masks, bound from src (paths). Returns 0 or -errno
 * with what failed in what. */
int procmask_apply(const char *proc, const char *const src[PROCMASK_NSRC],
		   char *what, size_t whatlen);
/* PID 1 of a forked run (runinit.c), in its new pid and mount
 * namespaces: mounts the run's /proc (0 or -errno with what failed);
 * reports a failure before the program ran (exit 127, the reason on
 * err_fd) and exits; reaps until the program prog has ended, kills the
 * rest, reports prog's wait status (an int32) on report_fd and exits. */
int runinit_proc(char *what, size_t whatlen);
void runinit_fail(int report_fd, int err_fd, const char *what, int err)
	__attribute__((noreturn));
void runinit_reap(pid_t prog, int report_fd) __attribute__((noreturn));
/* Gives the procfs freshly mounted at to the read-only entries and masks
 * of the sandbox's /proc at from (the masks are bound from there). */
int procmask_copy(const char *from, const char *to, char *what, size_t whatlen);
/* Host side: a listening TCP socket (non-blocking, CLOEXEC) on port of
 * every address of the network namespace of the sandbox whose init is
 * pid (pidfd proves it alive). Returns the fd or -errno. */
int listen_in_sandbox(pid_t pid, int pidfd, uint16_t port);
/* The same with port 0: an unbound TCP socket of that namespace, for the
 * host to connect to one of the sandbox's own ports. */
int rlimit_setup_child(const struct sandbox_limits *lim, struct child_err *ce);
/* The seccomp filter as a raw BPF program (struct sock_filter array),
 * compiled once on the host with libseccomp and sent to every init, which
 * loads it without libseccomp. */
/* Host: compiles the filter. Returns 0 or -errno with a message. */
int seccomp_prog_build(struct seccomp_prog *prog, char *err, size_t errlen);
void seccomp_prog_release(struct seccomp_prog *prog);
/* Child: installs the program (no_new_privs must be set). 0 or -errno. */
int seccomp_prog_load(const struct seccomp_prog *prog);

/* Shared by init.c and initserve.c (inside the sandbox). */
extern bool init_serving; /* serve mode: children must not use fd 3 */
void init_send(const struct init_msg *m, const void *p1, const void *p2);
void init_fail(int err, const char *what) __attribute__((noreturn));
void init_full_path(char *out, size_t n, const char *path);
int init_make_parents(const char *path);
int init_open_file(const char *path, int flags, mode_t mode);
void init_as_user(uid_t uid, gid_t gid, bool on);
/* In a forked child: becomes the sandbox user and executes argv in cwd
 * (NULL: the spec's) with env added to the sandbox's. */
void init_exec(const struct sandbox_spec *spec, char **argv, const char *cwd,
	       char **env, uint64_t cpu_ms, const struct seccomp_prog *filter,
	       uid_t uid, gid_t gid) __attribute__((noreturn));
/* Serve mode: answers host commands until the host kills the sandbox. */
void init_serve(const struct sandbox_spec *spec,
		const struct seccomp_prog *filter, uid_t uid, gid_t gid,
		int sigfd) __attribute__((noreturn));

/* Host-side userns step: writes the uid and gid maps of pid. */
int userns_write_maps(pid_t pid, uint32_t base, char *err, size_t errlen);
/* Child side: drops supplementary groups and becomes the unprivileged
 * sandbox user with no capabilities. */
int userns_drop_child(uid_t uid, gid_t gid, struct child_err *ce);

#endif

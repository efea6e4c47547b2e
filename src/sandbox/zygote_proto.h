/*
 * Init and a forking zygote (guest/zygote.py with src/pyext/zygote.c).
 *
 * The zygote is a started Python interpreter, root in the sandbox's user
 * namespace, that never runs a program itself. Per run, init sends it one
 * byte ZYGOTE_GO with a socket (SCM_RIGHTS) on its control socket; the
 * zygote clones a process into fresh pid, mount and IPC namespaces, as a
 * child of init (CLONE_PARENT), and answers with that process's pid (an
 * int32 in init's namespace). The clone (the run's PID 1) reads the run
 * from the socket: a struct zygote_run, the fds listed below in its
 * SCM_RIGHTS, then `len` bytes: the seccomp program (filter_len bytes) and
 * the NUL-terminated fields guest/zygote.py reads (cwd, stdin path, cpu
 * seconds, argc, argv..., envc, env...). It mounts the run's /proc, forks
 * the program (pid 2), which drops to the sandbox user under the filter and
 * returns into Python, then reaps; when the program has ended it kills
 * what is left, writes the program's wait status (int32) on the socket and
 * exits. The zygote holds nothing of any run: it reads no run's bytes.
 */
#ifndef SBX_ZYGOTE_PROTO_H
#define SBX_ZYGOTE_PROTO_H

#include <stdint.h>

#define ZYGOTE_GO 'G'
#define ZYGOTE_MAGIC 0x7a796731u /* "zyg1" */
/* The fds sent with a run, in this order. */
enum {
	ZYGOTE_FD_STDIN,
	ZYGOTE_FD_STDOUT,
	ZYGOTE_FD_STDERR,
	ZYGOTE_NFDS,
};
#define ZYGOTE_MAX_RUN (64u << 20)

struct zygote_run {
	uint32_t magic;
	uint32_t uid, gid;
	uint32_t filter_len;
	uint64_t len; /* bytes after this header */
	uint64_t fsize_bytes, nofile, cpu_ms;
};

#endif

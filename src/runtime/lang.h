/*
 * The languages table: how each language is compiled and run inside a
 * sandbox. Every recipe lives in the table in lang.c; no other code knows
 * a language by name. A recipe turns into a job (lang_job_init): the
 * source file's name, the code as written to it, the compile and run
 * commands, and any host directory the run needs.
 */
#ifndef SBX_LANG_H
#define SBX_LANG_H

#include <stdbool.h>
#include <stddef.h>

/* How a recipe's "{name}" (in source, compile and run) is found. */
enum lang_name_rule {
	LANG_NAME_NONE,
	/* the first `public [abstract|final] class X`; "Main" if none */
	LANG_NAME_JAVA_PUBLIC_CLASS,
	/* the first `object X`; none is a compile failure, as in
	 * SandboxFusion ("Object name not found.") */
	LANG_NAME_SCALA_OBJECT,
};

enum lang_flag {
	/* runs tools from sbx's node packages (lang_node_dir) */
	LANG_NODE = 1u << 0,
	/* needs a GPU: never offered, sandboxes get no GPU devices */
	LANG_GPU = 1u << 1,
	/* in SandboxFusion's list without a runner there (sql): always
	 * answered as SandboxFusion does, a SandboxError */
	LANG_NO_RUNNER = 1u << 2,
};

struct lang {
	const char *name;    /* as clients spell it: "python", "cpp" */
	const char *source;  /* the file the code goes into, in the work dir */
	const char *compile; /* space-separated argv, or NULL */
	const char *run;     /* space-separated argv; user args are appended */
	const char *runtime; /* the program that must exist for it to work */
	const char *env[6];  /* extra NAME=VALUE entries, NULL-terminated */
	const char *prefix;  /* the code must start with it (after blanks),
			      * else it is put first: php's "<?php" */
	enum lang_name_rule name_rule;
	unsigned flags;	    /* enum lang_flag */
	const char *absent; /* why the runtime may be missing, for messages */
};

/* Where node-based recipes find sbx's node packages inside a sandbox. */
#define LANG_NODE_MOUNT "/opt/sbx-node"

/* Returns the language called name or NULL when sbx does not know it. */
const struct lang *lang_find(const char *name);
/* Returns true when the runtime is installed where sandboxes can see it
 * (under /usr, /bin or /lib, or sbx's node packages). Checked once, then
 * cached. */
bool lang_available(const struct lang *lang);
/* Writes why lang is not available into out (n bytes), for a client. */
void lang_why_unavailable(const struct lang *lang, char *out, size_t n);
/* Iterates over the table: returns the i-th language or NULL past the end. */
const struct lang *lang_at(unsigned i);
/* Writes every language's name, comma-separated, into out (n bytes;
 * ending in ", ..." when cut short), for error messages. */
void lang_list(char *out, size_t n);
/* Returns the host directory holding sbx's node packages (a node project
 * with node_modules/, installed by `make deps`): $SBX_NODE_DIR, else
 * npm/ beside the sbx binary, else ../lib/sbx/npm from it. The string is
 * static. Returns NULL when none exists. */
const char *lang_node_dir(void);

/* One run of a recipe on some code. */
struct lang_job {
	char *source; /* file name in the work dir */
	char *code;   /* what goes into it (the prefix added if need be) */
	size_t code_len;
	char **compile;	      /* NULL-terminated argv, or NULL */
	char **run;	      /* NULL-terminated argv, user args appended */
	const char *bind_src; /* host dir to show read-only at bind_dst, */
	const char *bind_dst; /* or both NULL */
};

/* Fills job for running code (len bytes) with lang; extra (may be NULL)
 * is appended to the run command. Release with lang_job_release. */
void lang_job_init(struct lang_job *job, const struct lang *lang,
		   const char *code, size_t len, char *const *extra);
void lang_job_release(struct lang_job *job);

/* Splits a recipe into a NULL-terminated argv (caller frees with
 * lang_argv_free); extra (may be NULL) is appended. */
char **lang_argv(const char *recipe, char *const *extra);
void lang_argv_free(char **argv);

#endif

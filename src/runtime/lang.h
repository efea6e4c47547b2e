/*
 * The languages table: how each language is compiled and run inside a
 * sandbox. Every recipe lives in the table in lang.c; no other code knows
 * a language by name.
 */
#ifndef SBX_LANG_H
#define SBX_LANG_H

#include <stdbool.h>
#include <stddef.h>

struct lang {
	const char *name;    /* as clients spell it: "python", "cpp" */
	const char *source;  /* the file the code goes into, in the work dir */
	const char *compile; /* space-separated argv, or NULL */
	const char *run;     /* space-separated argv; user args are appended */
	const char *runtime; /* the program that must exist for it to work */
	const char *env[4];  /* extra NAME=VALUE entries, NULL-terminated */
};

/* Returns the language called name or NULL when sbx does not know it. */
const struct lang *lang_find(const char *name);
/* Returns true when the runtime is installed where sandboxes can see it
 * (under /usr, /bin or /lib). Checked once, then cached. */
bool lang_available(const struct lang *lang);
/* Iterates over the table: returns the i-th language or NULL past the end. */
const struct lang *lang_at(unsigned i);
/* Writes every language's name, comma-separated, into out (n bytes,
 * cut short if need be), for error messages. */
void lang_list(char *out, size_t n);

/* Splits a recipe into a NULL-terminated argv (caller frees with
 * lang_argv_free); extra (may be NULL) is appended. */
char **lang_argv(const char *recipe, char *const *extra);
void lang_argv_free(char **argv);

#endif

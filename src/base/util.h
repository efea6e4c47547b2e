/*
 * Small helpers shared by every layer: allocation that aborts on OOM,
 * full reads and writes, file helpers, clocks and the parsers for sizes and
 * durations that the command line and the APIs share.
 */
#ifndef SBX_UTIL_H
#define SBX_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Allocators for fixed-size objects: they abort on OOM. */
void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* Returns a new string formatted like printf; the caller frees it. */
char *xstrfmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Copies src into dst of size n, always NUL-terminated. Returns true when
 * the whole of src fitted. */
bool str_copy(char *dst, size_t n, const char *src);
bool str_starts_with(const char *s, const char *prefix);

/* Reads until n bytes, EOF or error. Returns the bytes read or -errno. */
ssize_t read_full(int fd, void *buf, size_t n);
/* Writes all n bytes. Returns 0 or -errno. */
int write_full(int fd, const void *buf, size_t n);
/* Writes s to an existing file (cgroup and proc files). Returns 0 or
 * -errno. */
int write_file(const char *path, const char *s);
/* Reads at most n-1 bytes of a small file into buf, NUL-terminated.
 * Returns the length or -errno. */
ssize_t read_file(const char *path, char *buf, size_t n);

/* Closes *fd if it is open and sets it to -1; keeps errno. */
void fd_close(int *fd);
int fd_set_nonblock(int fd);

/* Monotonic clock in nanoseconds and milliseconds. */
uint64_t now_ns(void);
/* A random (version 4) UUID, "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx", into
 * out (at least 37 bytes). Without the kernel's randomness it still never
 * repeats within the process (time and a counter). */
void util_uuid4(char *out);
uint64_t now_ms(void);

/* Parses "512", "64K", "512M", "2G" (binary units) into bytes. Returns 0 or
 * -EINVAL / -ERANGE. */
int parse_size(const char *s, uint64_t *out);
/* Parses "10", "10s", "250ms", "2m" into milliseconds (a bare number is
 * seconds, fractions allowed). Returns 0 or -EINVAL / -ERANGE. */
int parse_duration_ms(const char *s, uint64_t *out);
/* Parses a decimal unsigned integer with no trailing text. Returns 0 or
 * -EINVAL / -ERANGE. */
int parse_u64(const char *s, uint64_t *out);

#endif

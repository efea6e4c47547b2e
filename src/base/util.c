/*
 * Allocation, I/O, clock and parsing helpers. Nothing here logs: errors go
 * back to the caller as negative errno values.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "util.h"
#include "banned.h"

static void oom(size_t n)
{
	static const char msg[] = "sbx: out of memory\n";

	(void)n;
	if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0)
		abort();
	abort();
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		oom(n);
	return p;
}

void *xcalloc(size_t nmemb, size_t size)
{
	void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);

	if (!p)
		oom(nmemb * size);
	return p;
}

void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (!q)
		oom(n);
	return q;
}

char *xstrdup(const char *s)
{
	char *p = strdup(s);

	if (!p)
		oom(strlen(s));
	return p;
}

char *xstrndup(const char *s, size_t n)
{
	char *p = strndup(s, n);

	if (!p)
		oom(n);
	return p;
}

char *xstrfmt(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		abort();
	s = xmalloc((size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf(s, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return s;
}

bool str_copy(char *dst, size_t n, const char *src)
{
	size_t len = strlen(src);

	if (n == 0)
		return false;
	if (len >= n) {
		memcpy(dst, src, n - 1);
		dst[n - 1] = '\0';
		return false;
	}
	memcpy(dst, src, len + 1);
	return true;
}

bool str_starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

ssize_t read_full(int fd, void *buf, size_t n)
{
	size_t done = 0;

	while (done < n) {
		ssize_t r = read(fd, (char *)buf + done, n - done);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			break;
		done += (size_t)r;
	}
	return (ssize_t)done;
}

int write_full(int fd, const void *buf, size_t n)
{
	size_t done = 0;

	while (done < n) {
		ssize_t r = write(fd, (const char *)buf + done, n - done);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		done += (size_t)r;
	}
	return 0;
}

int write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
	int r;

	if (fd < 0)
		return -errno;
	r = write_full(fd, s, strlen(s));
	fd_close(&fd);
	return r;
}

ssize_t read_file(const char *path, char *buf, size_t n)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	ssize_t r;

	if (n == 0)
		return -EINVAL;
	if (fd < 0)
		return -errno;
	r = read_full(fd, buf, n - 1);
	fd_close(&fd);
	if (r < 0)
		return r;
	buf[r] = '\0';
	return r;
}

void fd_close(int *fd)
{
	int saved = errno;

	if (*fd >= 0)
		close(*fd);
	*fd = -1;
	errno = saved;
}

int fd_set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t now_ms(void)
{
	return now_ns() / 1000000ull;
}

int parse_u64(const char *s, uint64_t *out)
{
	unsigned long long v;
	char *end;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	if (*end)
		return -EINVAL;
	*out = v;
	return 0;
}

/* Parses a non-negative decimal with an optional fraction; *end gets the
 * first byte after it. */
static int parse_decimal(const char *s, long double *out, const char **end)
{
	long double v = 0, scale = 1;
	const char *p = s;
	bool any = false;

	while (*p >= '0' && *p <= '9') {
		v = v * 10 + (*p++ - '0');
		any = true;
		if (v > 1e30L)
			return -ERANGE;
	}
	if (*p == '.') {
		p++;
		while (*p >= '0' && *p <= '9') {
			scale /= 10;
			v += (*p++ - '0') * scale;
			any = true;
		}
	}
	if (!any)
		return -EINVAL;
	*out = v;
	*end = p;
	return 0;
}

int parse_size(const char *s, uint64_t *out)
{
	long double v, mult = 1;
	const char *end;
	int r;

	if (!s)
		return -EINVAL;
	r = parse_decimal(s, &v, &end);
	if (r)
		return r;
	switch (*end) {
	case '\0':
		break;
	case 'k':
	case 'K':
		mult = 1024.0L;
		end++;
		break;
	case 'm':
	case 'M':
		mult = 1024.0L * 1024;
		end++;
		break;
	case 'g':
	case 'G':
		mult = 1024.0L * 1024 * 1024;
		end++;
		break;
	case 't':
	case 'T':
		mult = 1024.0L * 1024 * 1024 * 1024;
		end++;
		break;
	default:
		return -EINVAL;
	}
	if (*end == 'i' || *end == 'I')
		end++;
	if (*end == 'b' || *end == 'B')
		end++;
	if (*end)
		return -EINVAL;
	v *= mult;
	if (v >= 18446744073709551615.0L)
		return -ERANGE;
	*out = (uint64_t)v;
	return 0;
}

int parse_duration_ms(const char *s, uint64_t *out)
{
	long double v, mult = 1000;
	const char *end;
	int r;

	if (!s)
		return -EINVAL;
	r = parse_decimal(s, &v, &end);
	if (r)
		return r;
	if (!strcmp(end, "ms"))
		mult = 1;
	else if (!strcmp(end, "s") || !*end)
		mult = 1000;
	else if (!strcmp(end, "m"))
		mult = 60000;
	else if (!strcmp(end, "h"))
		mult = 3600000;
	else
		return -EINVAL;
	v *= mult;
	if (v >= 1e15L)
		return -ERANGE;
	*out = (uint64_t)(v + 0.5L);
	return 0;
}

void util_uuid4(char *out)
{
	static uint64_t seq;
	unsigned char r[16];
	size_t i, n = 0;

	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
		uint64_t t = now_ns();
		uint64_t k = __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED);

		memcpy(r, &t, 8);
		memcpy(r + 8, &k, 8);
	}
	r[6] = (unsigned char)((r[6] & 0x0f) | 0x40);
	r[8] = (unsigned char)((r[8] & 0x3f) | 0x80);
	for (i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[n++] = '-';
		snprintf(out + n, 3, "%02x", r[i]);
		n += 2;
	}
	out[n] = '\0';
}

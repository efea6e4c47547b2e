/*
 * Logging: one line per message on stderr, written with a single write(2)
 * so lines from several threads do not interleave.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "banned.h"

static enum log_level max_level = LOG_INFO;
static const char *prefix = "sbx";

void log_set_level(enum log_level level)
{
	max_level = level;
}

void log_set_prefix(const char *p)
{
	prefix = p;
}

static void emit(enum log_level level, int err, const char *fmt, va_list ap)
{
	static const char *const names[] = {"error", "warning", "info",
					    "debug"};
	char line[1024];
	size_t n;
	int r;

	if (level > max_level)
		return;
	r = snprintf(line, sizeof(line), "%s: %s: ", prefix, names[level]);
	n = r < 0 ? 0 : (size_t)r;
	r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	if (r > 0)
		n += (size_t)r;
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	if (err) {
		r = snprintf(line + n, sizeof(line) - n, ": %s", strerror(err));
		if (r > 0)
			n += (size_t)r;
		if (n > sizeof(line) - 2)
			n = sizeof(line) - 2;
	}
	line[n++] = '\n';
	if (write(STDERR_FILENO, line, n) < 0)
		return;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	emit(level, 0, fmt, ap);
	va_end(ap);
	errno = saved;
}

void log_errno(int err, const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	emit(LOG_ERR, err, fmt, ap);
	va_end(ap);
	errno = saved;
}

void die(const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int r;
	size_t n;

	r = snprintf(line, sizeof(line), "%s: ", prefix);
	n = r < 0 ? 0 : (size_t)r;
	va_start(ap, fmt);
	r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
	if (r > 0)
		n += (size_t)r;
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	if (write(STDERR_FILENO, line, n) < 0)
		exit(1);
	exit(1);
}

/*
 * Logging to stderr with a level threshold. Messages follow one shape:
 * lowercase, no full stop, the subject quoted ("cannot mount '/usr'").
 * Never log user code, request bodies or tokens.
 */
#ifndef SBX_LOG_H
#define SBX_LOG_H

enum log_level { LOG_ERR, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Sets the most verbose level that is printed (LOG_INFO by default). */
void log_set_level(enum log_level level);
/* Sets the word that prefixes every line ("sbx" by default); borrowed. */
void log_set_prefix(const char *prefix);

void log_msg(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Logs at LOG_ERR with ": strerror(err)" appended; err is a positive errno. */
void log_errno(int err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define log_err(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/* Prints "sbx: <message>" and exits with status 1. Only in main() before
 * serving, never on a request path. */
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif

/*
 * HTTP calls to model upstreams: libcurl's multi interface driven by a
 * struct loop on one thread of its own, so a thousand calls in flight are
 * a thousand sockets and no threads. Connections are reused and their
 * number bounded; a call that fails to connect, or gets a 5xx, before any
 * of its response was handed on is retried with backoff.
 */
#ifndef SBX_LLM_UPSTREAM_H
#define SBX_LLM_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop;
struct upstream_engine;
struct upstream_call;

struct upstream_engine_config {
	unsigned max_connections;    /* in all; 0: curl's default */
	uint64_t connect_timeout_ms; /* per attempt */
	uint64_t read_timeout_ms;    /* no byte for this long: timeout */
	unsigned retries;	     /* extra attempts (connect errors, 5xx) */
};

/* Starts the engine's thread. Returns NULL with the reason in err. */
struct upstream_engine *
upstream_engine_new(const struct upstream_engine_config *cfg, char *err,
		    size_t errlen);
/* Cancels every call (their done() runs with -ECANCELED), stops the
 * thread and frees the engine. NULL is a no-op. */
void upstream_engine_free(struct upstream_engine *e);
/* Ends every call under way (done() with -ECANCELED, "the server is
 * stopping") and refuses new ones; any thread. */
void upstream_engine_stop_calls(struct upstream_engine *e);
/* The engine's loop: other fds may be watched on its thread. */
struct loop *upstream_engine_loop(struct upstream_engine *e);

struct upstream_request {
	const char *url;    /* copied */
	const char *method; /* "GET", "POST", or any other; copied */
	const char *key;    /* sent as a bearer token, or NULL; copied */
	char *body;	    /* taken (freed by the engine); NULL: none */
	size_t len;
	/* The rest is optional (zero: as for a model call). */
	const char *content_type; /* of body; default application/json */
	char **headers; /* NULL-terminated "Name: value" lines, copied */
	/* A socket to connect with, taken (closed by the engine): a call
	 * into a sandbox's network uses one made there. Such a call is never
	 * retried and its connection never reused. -1 or 0: none (set
	 * has_sock). */
	int sock;
	bool has_sock;
	/* Its own connection, closed after it: for targets that are not
	 * model upstreams. */
	bool fresh;
	int retries; /* -1: the engine's; set has_retries */
	bool has_retries;
};

/* What a call reports, on the engine's thread, in this order: head()
 * once when the final attempt's headers are in (status, and the content
 * type or ""), data() for each piece of the body as it arrives, and
 * done() exactly once: 0 when the whole response came, or -errno:
 * -ECONNREFUSED (cannot connect), -EPIPE (the upstream closed early),
 * -ETIMEDOUT (connect or read timeout), -ECANCELED (cancelled), -EIO
 * (anything else); msg says what in words. head() may not have been
 * called before a failing done(). */
struct upstream_call_ops {
	void (*head)(void *arg, long status, const char *content_type);
	void (*data)(void *arg, const char *data, size_t len);
	void (*done)(void *arg, int err, const char *msg);
};

/* Starts a call from any thread. The returned handle is the caller's
 * reference: give it back with upstream_call_put() (after done() or
 * before; the call itself goes on until done()). */
struct upstream_call *upstream_call_start(struct upstream_engine *e,
					  struct upstream_request *req,
					  const struct upstream_call_ops *ops,
					  void *arg);
/* Stops the call (any thread): done() follows with -ECANCELED unless it
 * has already run. */
void upstream_call_cancel(struct upstream_call *c);
/* Stops and resumes reading the response (any thread), for a client that
 * reads slower than the upstream writes. */
void upstream_call_pause(struct upstream_call *c, bool paused);
void upstream_call_put(struct upstream_call *c);
/* How many attempts the call took so far. */
unsigned upstream_call_attempts(const struct upstream_call *c);

#endif

/*
 * The request API: what a route handler may do with the request it was
 * given. The HTTP layer (http.c) implements it; route files include it and
 * never the other way round, so routes depend on this header alone and the
 * HTTP layer depends on the routes' table (internal.h).
 *
 * A request is owned by the HTTP layer. A handler replies once, from any
 * thread; to reply later it defers the request (or hands it to the runner
 * with request_run()) and holds a reference until it has replied.
 */
#ifndef SBX_SERVER_REQUEST_H
#define SBX_SERVER_REQUEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sandbox/sandbox.h"

struct request;

/* Replies with body (the reference is taken) and status. May be called
 * from any thread, once. */
void request_reply(struct request *req, unsigned status, json_t *body);
/* Replies with {"error": {"code": code, "message": ...}}. */
void request_error(struct request *req, unsigned status, const char *code,
		   const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Replies with a raw body of the given content type (the body is
 * copied; content_type is kept by pointer and must outlive the request,
 * as a string constant does). */
void request_reply_raw(struct request *req, unsigned status,
		       const char *content_type, const char *body, size_t len);
/* Replies with a raw body of the given content type; takes ownership of
 * body (a malloc'd block, freed once sent). */
void request_reply_take(struct request *req, unsigned status,
			const char *content_type, char *body, size_t len);
const char *request_body(struct request *req, size_t *len);
/* Hands the body over (the caller frees it; NULL when empty), leaving
 * the request an empty one: a route that parses a large body can give it
 * back as it reads, rather than hold it along with what it made of it. */
char *request_body_take(struct request *req, size_t *len);

/* Runs spec (its contents are taken). output() collects while it runs;
 * done() must reply. Both run on the runner's thread with ctx. When the
 * queue is full the request gets 503 and done() is not called (ctx is
 * freed with free_ctx). A client that disconnects has its sandbox killed;
 * done() still runs and its reply is dropped. */
struct run_hooks {
	sandbox_output_fn output;
	void (*done)(struct request *req, struct sandbox_result *res,
		     void *ctx);
	void (*free_ctx)(void *ctx);
};
void request_run(struct request *req, struct sandbox_spec *spec,
		 const struct run_hooks *hooks, void *ctx);

/* Suspends the request until another thread replies. Returns the request
 * with a reference for that thread, dropped by request_put() after the
 * reply (or the last stream write). */
struct request *request_defer(struct request *req);
void request_put(struct request *req);

/* Streamed replies (chunked, any thread): start once, write, end. What a
 * stream holds unsent counts against the server's reply budget. */
void request_stream_start(struct request *req, unsigned status,
			  const char *content_type);
void request_stream_write(struct request *req, const char *data, size_t len);
void request_stream_end(struct request *req);
/* Backpressure for streamed replies: a writer waits for the client
 * instead of buffering without bound. */
/* Bytes written to a streamed reply and not yet taken by the client. */
size_t request_stream_pending(struct request *req);
/* Calls fn(arg) once, from any thread and with no lock held, as soon as the
 * stream's pending bytes are at most low (at once if they already are) or
 * the client has gone away (check request_stream_closed()). */
void request_stream_when_drained(struct request *req, size_t low,
				 void (*fn)(void *arg), void *arg);
bool request_stream_closed(struct request *req);
/* Called (on an MHD thread) when the client of a stream goes away before
 * its end; set by the handler. */
void request_on_abort(struct request *req, void (*fn)(void *arg), void *arg);

/* Streamed request bodies (uploads). A route that sandboxes_is_upload()
 * names is routed as soon as its headers are in, with no body yet; its
 * handler calls request_body_stream() before it defers, and the body then
 * comes to it a piece at a time instead of whole. The connection reads no
 * more of the body until the consumer asks with request_body_more(), so
 * an upload holds about one piece in the server whatever its size. Once
 * a reply is made the rest of the body is read and dropped (MHD can only
 * answer once it has it all), and no more pieces come. */
struct request_body_ops {
	/* The next piece: chunk bytes, or fewer for the last one (last set;
	 * it may be empty, with data NULL). Takes ownership of data (free()
	 * it). Nothing more comes until request_body_more(), and nothing at
	 * all after the last piece. Called on an MHD thread. */
	void (*data)(void *arg, char *data, size_t len, bool last);
	/* The body will not be given whole: the client went away, the
	 * server is stopping, or a reply was made before its end. Called
	 * once, after every data() call, and only when the last piece was
	 * never given. Called on an MHD thread. */
	void (*end)(void *arg);
};
/* Streams req's body to ops with arg (which must outlive the calls). */
void request_body_stream(struct request *req, size_t chunk,
			 const struct request_body_ops *ops, void *arg);
/* The consumer has handed on the last piece: read the next. Any thread. */
void request_body_more(struct request *req);
/* Like request_body_stream(), for a multipart/form-data body parsed by
 * libmicrohttpd's post processor as it comes: the pieces (of at most
 * chunk bytes, at least 64 KiB) hold the value of the form field named
 * field alone, other fields are dropped. A body that does not parse,
 * ends before its closing boundary, or has that field twice or not at
 * all is answered 400 here, and ops->end() is called. Returns 0, or
 * -EINVAL (nothing set up: the caller answers) when the request is not
 * multipart/form-data with a boundary. */
int request_multipart_stream(struct request *req, const char *field,
			     size_t chunk, const struct request_body_ops *ops,
			     void *arg);

/* The gateway peer of a request that came in on a sandbox's gateway
 * socket (what request_gateway_add() was given for its connection), or
 * NULL for one that came to the server's own address. */
void *request_peer(struct request *req);
/* The value of a request header, or NULL. */
const char *request_header(struct request *req, const char *name);
/* Serves fd, a connection accepted on a sandbox's gateway socket (taken),
 * on the gateway's own HTTP service: its requests go to gateway_route()
 * only, with request_peer() giving peer, and gateway_peer_put(peer) is
 * called once the connection is gone (the caller's reference passes to
 * it, also on failure). Returns 0 or -errno. */
int request_gateway_add(int fd, void *peer);

/* A CLOEXEC duplicate of the client's socket (the caller closes it), or
 * -1: lets another thread notice a hang-up safely. */
int request_dup_socket(struct request *req);
const char *request_method(struct request *req);
const char *request_path(struct request *req);
/* The query string (without '?'), rebuilt from its arguments in their
 * order, percent-encoded; "" when there is none. Owned by the request. */
const char *request_query(struct request *req);
/* A query argument, or NULL. */
const char *request_arg(struct request *req, const char *key);

/* The reply budget as metrics see it: bytes unsent replies hold now, and
 * connections closed so far because the budget was exceeded. */
void request_budget_counts(uint64_t *held, uint64_t *dropped);

#endif

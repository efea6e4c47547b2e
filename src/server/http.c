/*
 * The HTTP layer over libmicrohttpd.
 *
 * MHD runs a small thread pool over epoll. A request's body is collected
 * (up to max_body, else 413), then routed. Quick routes reply at once; a
 * run suspends the connection, so waiting costs no thread, and hands the
 * sandbox to the runner. The runner's thread watches the client's socket
 * while the sandbox runs: a client that hangs up gets its sandbox killed.
 * When the run ends the reply is stored and the connection resumed.
 *
 * A request is shared by MHD's thread and the runner's thread, so it is
 * reference-counted: one reference for MHD (dropped when MHD is done with
 * the connection) and one for each pending runner callback.
 *
 * Replies are handed to MHD without a copy, and what they hold until their
 * clients take them is bounded server-wide (the reply budget). At shutdown
 * the daemon stops only once every stored reply is sent. The errors MHD
 * answers itself (in HTML) are answered in JSON instead wherever the
 * failing connection can be told apart (answer_mhd_error()).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <malloc.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "base/log.h"
#include "base/loop.h"
#include "base/text.h"
#include "base/util.h"
#include "server/internal.h"
#include "server/prime.h"
#include "server/request.h"
#include "base/banned.h"

/* A stream's buffer larger than this is freed once drained. */
#define STREAM_KEEP (256 * 1024)
/* Longest wait at shutdown for replies to be sent. */
#define DRAIN_S 10
/* Connections the gateway serves at once, every sandbox together. */
#define GATEWAY_CONNECTIONS 8192

/* A writer waiting for a stream to drain (request_stream_when_drained). */
struct drain_waiter {
	size_t low;
	void (*fn)(void *arg);
	void *arg;
	struct drain_waiter *next;
};

struct request {
	int refs;
	struct MHD_Connection *conn;
	const char *method;
	char *url;
	const char *route;
	struct buf body;
	uint64_t max_body;
	bool too_large;
	bool path_token;    /* the URL began with /t/<token>/ */
	bool path_token_ok; /* and that token was the server's */
	bool started;	    /* routed; body complete */
	uint64_t start_ns;
	int fd;	      /* the client's socket, MHD's */
	bool seen;    /* the handler has been called */
	bool gateway; /* came in on a sandbox's gateway socket */
	char *query;  /* request_query()'s, made on demand */
	void *peer;   /* that socket's peer (request_gateway_add()) */

	/* On the list of requests being read (from the request line until
	 * the body is complete or a reply is queued), by the MHD thread that
	 * reads them; guarded by that list's lock. */
	bool reading;
	struct conn_info *ci; /* its connection's, NULL once MHD is done */
	pthread_t reader;
	struct request *reading_prev, *reading_next;
	unsigned early_status; /* answered before MHD's own error reply */

	pthread_mutex_t lock; /* guards the reply and the flags below */
	bool replied;
	bool suspended;
	unsigned status;
	const char *content_type;
	char *reply;
	size_t reply_len;

	/* streamed replies */
	bool streaming, stream_ended, reader_waiting;
	bool closed; /* MHD is done with the connection */
	struct buf stream;
	size_t stream_off;
	void (*abort_fn)(void *arg);
	void *abort_arg;
	struct drain_waiter *waiters;

	/* streamed request bodies (request_body_stream()) */
	bool body_stream; /* the route takes its body a piece at a time */
	bool body_held;	  /* the consumer has a piece: wait for more() */
	bool body_paused; /* the connection is suspended for that */
	bool body_over;	  /* the last piece, or end(), was given */
	struct request_body_ops body_ops;
	void *body_arg;
	size_t body_chunk;
	char *piece; /* the piece being filled, body_chunk bytes */
	size_t piece_len;
	/* multipart bodies (request_multipart_stream()): the pieces hold
	 * one field's value, decoded by MHD's post processor */
	struct MHD_PostProcessor *mp;
	char *mp_field;
	uint64_t mp_next;   /* the offset the field's next bytes are at */
	bool mp_seen;	    /* the field has begun */
	const char *mp_bad; /* why the body is refused, or NULL */
	uint64_t body_total;
	uint64_t body_length; /* Content-Length, or UINT64_MAX */

	/* What the reply holds unsent, on the budget's list while not zero;
	 * guarded by the budget's lock. */
	size_t held;
	bool dropping; /* its connection is being closed for the budget */
	struct request *held_prev, *held_next;

	/* The job, set by the HTTP thread once submitted and cleared by the
	 * runner thread when it ends; both under lock, since the job may end
	 * before runner_submit() has even returned. */
	struct runner_job *job;
	bool run_finished;

	/* runner thread only */
	int sock;
	bool watching;
	bool hung_up;
	struct run_hooks hooks;
	void *ctx;
};

static void request_unref(struct request *req);

/* Unsent replies, server-wide: the requests that hold reply bytes not
 * yet taken by their clients, oldest first, and what they hold. Taken
 * after a request's lock, never before. */
static struct {
	pthread_mutex_t lock;
	struct request *head, *tail;
	uint64_t held;
	uint64_t dropping; /* held by connections being closed */
	uint64_t limit;
	uint64_t dropped; /* connections closed for the budget */
} budget = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* Shutdown. Routes run, and their callbacks are made, under the read
 * lock; the write lock flips the flags. */
static pthread_rwlock_t stop_lock = PTHREAD_RWLOCK_INITIALIZER;
static bool stopping;	 /* new requests get 503 and the connection closes */
static bool runner_gone; /* route callbacks are no longer made */

/* Requests whose headers are being read: see answer_bad_length(). */
static struct {
	pthread_mutex_t lock;
	struct request *head;
} reading = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* Every connection, with the MHD thread that serves it and whether it
 * has a request under way (from its request line until MHD is done with
 * it); one without is idle or reading a request line. Guarded by
 * reading.lock. */
struct conn_info {
	int fd;
	pthread_t thread;
	bool busy;
	void *peer; /* a gateway connection's peer, referenced */
	struct conn_info *prev, *next;
};
static struct conn_info *conns;

/* The gateway's own daemon: it has no listening socket; connections
 * accepted on sandboxes' gateway sockets are added to it with the peer
 * they came from, found by fd when MHD starts serving them. Its
 * callbacks get &gateway_tag as their closure. */
static struct MHD_Daemon *gateway_daemon;
static int gateway_tag;
struct gateway_conn {
	int fd;
	void *peer;
	struct gateway_conn *next;
};
static struct {
	pthread_mutex_t lock;
	struct gateway_conn *head;
} gateway_adding = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* Requests MHD has not finished with: shutdown waits for them. */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned n;
} live = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};

/* Sets what req holds unsent to n. Returns true when the total is now
 * past the budget. */
static bool budget_set(struct request *req, size_t n)
{
	bool over;

	pthread_mutex_lock(&budget.lock);
	if (req->held && !n) {
		if (req->held_prev)
			req->held_prev->held_next = req->held_next;
		else
			budget.head = req->held_next;
		if (req->held_next)
			req->held_next->held_prev = req->held_prev;
		else
			budget.tail = req->held_prev;
		req->held_prev = req->held_next = NULL;
	} else if (!req->held && n) {
		/* Newly holding: the youngest. */
		req->held_prev = budget.tail;
		req->held_next = NULL;
		if (budget.tail)
			budget.tail->held_next = req;
		else
			budget.head = req;
		budget.tail = req;
	}
	budget.held = budget.held - req->held + n;
	if (req->dropping)
		budget.dropping = budget.dropping - req->held + n;
	req->held = n;
	over = budget.limit && budget.held - budget.dropping > budget.limit;
	pthread_mutex_unlock(&budget.lock);
	return over;
}

/* Past the budget: closes the connections that have held unsent bytes the
 * longest (keep aside) until what is left fits. Their clients see the
 * connection close without the rest of their reply. No lock held. */
static void budget_enforce(struct request *keep)
{
	struct request *victims[64];
	size_t n = 0, i;

	pthread_mutex_lock(&budget.lock);
	for (struct request *r = budget.head;
	     r && n < ARRAY_SIZE(victims) &&
	     budget.held - budget.dropping > budget.limit;
	     r = r->held_next) {
		if (r == keep || r->dropping)
			continue;
		r->dropping = true;
		budget.dropping += r->held;
		budget.dropped++;
		__atomic_add_fetch(&r->refs, 1, __ATOMIC_ACQ_REL);
		victims[n++] = r;
	}
	pthread_mutex_unlock(&budget.lock);
	for (i = 0; i < n; i++) {
		struct request *r = victims[i];

		pthread_mutex_lock(&r->lock);
		/* The socket is MHD's and open until MHD is done with the
		 * request, which it cannot be while the lock is held. */
		if (!r->closed && r->fd >= 0) {
			log_warn("request %s: unsent replies exceed the "
				 "budget of %llu bytes, closing the connection "
				 "holding %zu",
				 r->route ? r->route : "other",
				 (unsigned long long)budget.limit, r->held);
			shutdown(r->fd, SHUT_RDWR);
		}
		pthread_mutex_unlock(&r->lock);
		request_unref(r);
	}
}

static void request_unref(struct request *req)
{
	if (__atomic_sub_fetch(&req->refs, 1, __ATOMIC_ACQ_REL))
		return;
	if (req->held)
		budget_set(req, 0);
	buf_release(&req->body);
	buf_release(&req->stream);
	if (req->mp)
		MHD_destroy_post_processor(req->mp);
	free(req->mp_field);
	free(req->piece);
	free(req->url);
	free(req->query);
	free(req->reply);
	pthread_mutex_destroy(&req->lock);
	free(req);
}

static void store_reply(struct request *req, unsigned status,
			const char *content_type, char *body, size_t len)
{
	bool resume, over = false;

	pthread_mutex_lock(&req->lock);
	if (req->replied) {
		pthread_mutex_unlock(&req->lock);
		free(body);
		return;
	}
	req->replied = true;
	req->status = status;
	req->content_type = content_type;
	req->reply = body;
	req->reply_len = len;
	if (!body)
		req->streaming = true;
	else if (!req->closed)
		over = budget_set(req, len);
	/* A streamed body waiting for its consumer is read on (and
	 * dropped): MHD replies once it has the whole request. */
	resume = (req->suspended || req->body_paused) && !req->closed;
	req->suspended = false;
	req->body_paused = false;
	/* Resumed under the lock so MHD cannot finish the connection in
	 * between. */
	if (resume)
		MHD_resume_connection(req->conn);
	pthread_mutex_unlock(&req->lock);
	if (over)
		budget_enforce(req);
}

struct request *request_defer(struct request *req)
{
	__atomic_add_fetch(&req->refs, 1, __ATOMIC_ACQ_REL);
	pthread_mutex_lock(&req->lock);
	/* A streamed body goes on being read; the connection waits for the
	 * reply once it is all in (body_finish()). */
	if (!req->replied && !req->body_stream) {
		req->suspended = true;
		MHD_suspend_connection(req->conn);
	}
	pthread_mutex_unlock(&req->lock);
	return req;
}

void request_put(struct request *req)
{
	request_unref(req);
}

void request_stream_start(struct request *req, unsigned status,
			  const char *content_type)
{
	store_reply(req, status, content_type, NULL, 0);
}

/* Wakes a reader that suspended for want of data. Lock held. */
static void wake_reader(struct request *req)
{
	if (req->reader_waiting && !req->closed) {
		req->reader_waiting = false;
		MHD_resume_connection(req->conn);
	}
}

/* Bytes of a stream not yet handed to MHD. Lock held. */
static size_t stream_pending(const struct request *req)
{
	return req->stream.len - req->stream_off;
}

/* Unlinks the waiters whose level is reached (all of them once the client
 * is gone), to be called by run_waiters() after the lock is dropped. Lock
 * held. */
static struct drain_waiter *take_waiters(struct request *req)
{
	struct drain_waiter **pp = &req->waiters, *ready = NULL, *w;
	size_t pending = stream_pending(req);

	while ((w = *pp)) {
		if (req->closed || pending <= w->low) {
			*pp = w->next;
			w->next = ready;
			ready = w;
		} else {
			pp = &w->next;
		}
	}
	return ready;
}

/* Once the runner is gone at shutdown the routes' callbacks would reach
 * freed state: they are dropped (the process is exiting). */
static void run_waiters(struct drain_waiter *w)
{
	if (!w)
		return;
	pthread_rwlock_rdlock(&stop_lock);
	while (w) {
		struct drain_waiter *next = w->next;

		if (!runner_gone)
			w->fn(w->arg);
		free(w);
		w = next;
	}
	pthread_rwlock_unlock(&stop_lock);
}

size_t request_stream_pending(struct request *req)
{
	size_t n;

	pthread_mutex_lock(&req->lock);
	n = stream_pending(req);
	pthread_mutex_unlock(&req->lock);
	return n;
}

void request_stream_when_drained(struct request *req, size_t low,
				 void (*fn)(void *arg), void *arg)
{
	struct drain_waiter *w = xmalloc(sizeof(*w));

	w->low = low;
	w->fn = fn;
	w->arg = arg;
	pthread_mutex_lock(&req->lock);
	w->next = req->waiters;
	req->waiters = w;
	w = take_waiters(req);
	pthread_mutex_unlock(&req->lock);
	run_waiters(w);
}

bool request_stream_closed(struct request *req)
{
	bool closed;

	pthread_mutex_lock(&req->lock);
	closed = req->closed;
	pthread_mutex_unlock(&req->lock);
	return closed;
}

void request_stream_write(struct request *req, const char *data, size_t len)
{
	bool over = false;

	pthread_mutex_lock(&req->lock);
	if (!req->stream_ended && !req->closed) {
		buf_add(&req->stream, data, len);
		over = budget_set(req, stream_pending(req));
		wake_reader(req);
	}
	pthread_mutex_unlock(&req->lock);
	if (over)
		budget_enforce(req);
}

void request_stream_end(struct request *req)
{
	pthread_mutex_lock(&req->lock);
	req->stream_ended = true;
	wake_reader(req);
	pthread_mutex_unlock(&req->lock);
}

void request_on_abort(struct request *req, void (*fn)(void *arg), void *arg)
{
	pthread_mutex_lock(&req->lock);
	req->abort_fn = fn;
	req->abort_arg = arg;
	pthread_mutex_unlock(&req->lock);
}

/* ---- streamed request bodies ---- */

void request_body_stream(struct request *req, size_t chunk,
			 const struct request_body_ops *ops, void *arg)
{
	pthread_mutex_lock(&req->lock);
	req->body_ops = *ops;
	req->body_arg = arg;
	req->body_chunk = chunk ? chunk : 1;
	req->body_stream = true;
	pthread_mutex_unlock(&req->lock);
}

void request_body_more(struct request *req)
{
	pthread_mutex_lock(&req->lock);
	req->body_held = false;
	if (req->body_paused && !req->closed) {
		req->body_paused = false;
		MHD_resume_connection(req->conn);
	}
	pthread_mutex_unlock(&req->lock);
}

/* Gives the consumer a piece (data taken), or with end set tells it the
 * body will not come whole. No lock held. Once the runner is gone at
 * shutdown the consumer's state is too: the call is dropped. */
static void body_call(struct request *req, char *data, size_t len, bool last,
		      bool end)
{
	pthread_rwlock_rdlock(&stop_lock);
	if (runner_gone)
		free(data);
	else if (end)
		req->body_ops.end(req->body_arg);
	else
		req->body_ops.data(req->body_arg, data, len, last);
	pthread_rwlock_unlock(&stop_lock);
}

/* Multipart bodies: what MHD's post processor may hold back, and the
 * least room a piece must have left before raw bytes are fed (decoded
 * bytes are never more than the raw ones plus what was held back). */
#define MP_BUF (16u * 1024)
#define MP_MIN 4096u

/* Called by MHD_post_process() with req->lock held: keeps the bytes of
 * req->mp_field's value in the piece, drops every other field's. */
static enum MHD_Result mp_iter(void *cls, enum MHD_ValueKind kind,
			       const char *key, const char *filename,
			       const char *content_type,
			       const char *transfer_encoding, const char *data,
			       uint64_t off, size_t size)
{
	struct request *req = cls;

	if (!key || strcmp(key, req->mp_field))
		return MHD_YES;
	if (off == 0 && req->mp_seen && req->mp_next) {
		req->mp_bad = "the field comes more than once";
		return MHD_NO;
	}
	req->mp_seen = true;
	if (off != req->mp_next || req->piece_len + size > req->body_chunk) {
		req->mp_bad = "the body does not parse";
		return MHD_NO;
	}
	memcpy(req->piece + req->piece_len, data, size);
	req->piece_len += size;
	req->mp_next += size;
	return MHD_YES;
}

/* Feeds raw multipart bytes to the post processor, as many as the piece
 * has room for; returns how many it took. */
static size_t mp_feed(struct request *req, const char *data, size_t size)
{
	size_t room = req->body_chunk - MP_BUF - req->piece_len;

	if (size > room)
		size = room;
	if (size && MHD_post_process(req->mp, data, size) != MHD_YES &&
	    !req->mp_bad)
		req->mp_bad = "the body does not parse";
	return size;
}

int request_multipart_stream(struct request *req, const char *field,
			     size_t chunk, const struct request_body_ops *ops,
			     void *arg)
{
	const char *ct = MHD_lookup_connection_value(
		req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);

	if (!ct || strncasecmp(ct, "multipart/form-data", 19))
		return -EINVAL;
	req->mp = MHD_create_post_processor(req->conn, MP_BUF, mp_iter, req);
	if (!req->mp)
		return -EINVAL; /* no boundary */
	req->mp_field = xstrdup(field);
	request_body_stream(req, chunk > 4 * MP_BUF ? chunk : 4 * MP_BUF, ops,
			    arg);
	return 0;
}

/* Whether the client has closed its side with the body not yet all
 * sent, once MHD has passed on every byte it read. MHD (0.9.75, epoll)
 * takes a short read to mean the socket is drained, so a close that came
 * with the last bytes, while the connection was suspended, is only seen
 * at --client-timeout; the consumer would wait that long. */
static bool body_cut(struct request *req)
{
	char c;

	return req->body_length != UINT64_MAX &&
	       req->body_total < req->body_length && req->fd >= 0 &&
	       recv(req->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

/* Body bytes of a streamed request: fills the piece and, once it is
 * full, hands it over and suspends the connection until the consumer
 * asks for more. Bytes not taken (*size left non-zero) come again after
 * the resume. Returns false when the client has gone: the connection is
 * to be closed. */
static bool body_feed(struct request *req, const char *data, size_t *size)
{
	char *piece = NULL;
	size_t len = 0, n;
	bool end = false, too_large = false, gone = false, full;
	const char *mp_bad = NULL;

	pthread_mutex_lock(&req->lock);
	if (req->replied || req->body_over) {
		/* Answered already: the rest is read and dropped, and so is
		 * a piece begun. */
		end = !req->body_over;
		req->body_over = true;
		*size = 0;
		free(req->piece);
		req->piece = NULL;
		req->piece_len = 0;
		goto out;
	}
	if (req->body_held) {
		/* MHD offers more at once (a chunked body) while the consumer
		 * still has the last piece: wait for it. */
		if (!req->body_paused) {
			req->body_paused = true;
			MHD_suspend_connection(req->conn);
		}
		goto out;
	}
	if (req->body_total + *size > req->max_body) {
		/* Only a body of unannounced length gets here. */
		too_large = end = true;
		req->body_over = true;
		*size = 0;
		goto out;
	}
	if (!req->piece)
		req->piece = xmalloc(req->body_chunk);
	if (req->mp) {
		n = mp_feed(req, data, *size);
		full = req->piece_len + MP_BUF + MP_MIN > req->body_chunk;
		if (req->mp_bad) {
			mp_bad = req->mp_bad;
			end = req->body_over = true;
			*size = 0;
			goto out;
		}
	} else {
		n = req->body_chunk - req->piece_len;
		if (n > *size)
			n = *size;
		memcpy(req->piece + req->piece_len, data, n);
		req->piece_len += n;
		full = req->piece_len == req->body_chunk;
	}
	req->body_total += n;
	*size -= n;
	if (full) {
		piece = req->piece;
		len = req->piece_len;
		req->piece = NULL;
		req->piece_len = 0;
		req->body_held = true;
		req->body_paused = true;
		MHD_suspend_connection(req->conn);
	} else if (!*size && body_cut(req)) {
		gone = end = true;
		req->body_over = true;
	}
out:
	pthread_mutex_unlock(&req->lock);
	if (too_large)
		request_error(req, 413, "payload_too_large",
			      "the request body is larger than %llu bytes",
			      (unsigned long long)req->max_body);
	if (mp_bad)
		request_error(req, 400, "bad_request",
			      "multipart field '%s': %s", req->mp_field,
			      mp_bad);
	if (piece)
		body_call(req, piece, len, false, false);
	if (end)
		body_call(req, NULL, 0, false, true);
	return !gone;
}

/* The whole body of a streamed request is in: gives the last piece, then
 * waits for the reply. */
static void body_finish(struct request *req)
{
	char *piece = NULL;
	size_t len = 0;
	bool give = false, end = false;
	const char *mp_bad = NULL;

	pthread_mutex_lock(&req->lock);
	if (req->mp && !req->body_over && !req->body_held && !req->replied) {
		/* Only a body that reached its closing boundary is whole. */
		if (MHD_destroy_post_processor(req->mp) != MHD_YES)
			req->mp_bad = "the body ends before its closing "
				      "boundary";
		else if (!req->mp_seen)
			req->mp_bad = "no such field in the body";
		req->mp = NULL;
		if (req->mp_bad) {
			mp_bad = req->mp_bad;
			end = req->body_over = true;
			goto out;
		}
	}
	if (req->replied && !req->body_over) {
		end = true;
		req->body_over = true;
	} else if (!req->body_over && req->body_held) {
		/* Resumed before the consumer asked for more: wait. */
		if (!req->body_paused) {
			req->body_paused = true;
			MHD_suspend_connection(req->conn);
		}
		goto out;
	} else if (!req->body_over) {
		piece = req->piece;
		len = req->piece_len;
		req->piece = NULL;
		req->piece_len = 0;
		req->body_over = req->body_held = give = true;
	}
	if (!req->replied && !req->suspended) {
		req->suspended = true;
		MHD_suspend_connection(req->conn);
	}
out:
	pthread_mutex_unlock(&req->lock);
	if (mp_bad) {
		request_error(req, 400, "bad_request",
			      "multipart field '%s': %s", req->mp_field,
			      mp_bad);
	}
	if (give)
		body_call(req, piece, len, true, false);
	if (end)
		body_call(req, NULL, 0, false, true);
}

void *request_peer(struct request *req)
{
	return req->peer;
}

const char *request_header(struct request *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

int request_gateway_add(int fd, void *peer)
{
	struct gateway_conn *g, **pp;
	struct sockaddr_in addr;

	if (!gateway_daemon) {
		close(fd);
		return -ENOTCONN;
	}
	g = xcalloc(1, sizeof(*g));
	g->fd = fd;
	g->peer = peer;
	pthread_mutex_lock(&gateway_adding.lock);
	g->next = gateway_adding.head;
	gateway_adding.head = g;
	pthread_mutex_unlock(&gateway_adding.lock);
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (MHD_add_connection(gateway_daemon, fd, (struct sockaddr *)&addr,
			       sizeof(addr)) == MHD_YES)
		return 0;
	/* MHD closed fd; its entry goes unless MHD took it meanwhile. */
	pthread_mutex_lock(&gateway_adding.lock);
	for (pp = &gateway_adding.head; *pp; pp = &(*pp)->next)
		if (*pp == g) {
			*pp = g->next;
			free(g);
			g = NULL;
			break;
		}
	pthread_mutex_unlock(&gateway_adding.lock);
	if (!g)
		gateway_peer_put(peer);
	return -EIO;
}

int request_dup_socket(struct request *req)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(
		req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);

	return ci ? fcntl(ci->connect_fd, F_DUPFD_CLOEXEC, 0) : -1;
}

const char *request_method(struct request *req)
{
	return req->method;
}

const char *request_path(struct request *req)
{
	return req->url;
}

/* Percent-encodes what is not unreserved in a query part. */
static void add_query_part(struct buf *b, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '.' ||
		    c == '_' || c == '~') {
			buf_add(b, s, 1);
		} else {
			char e[3] = {'%', hex[c >> 4], hex[c & 15]};

			buf_add(b, e, 3);
		}
	}
}

static enum MHD_Result add_query_arg(void *cls, enum MHD_ValueKind kind,
				     const char *key, const char *value)
{
	struct buf *b = cls;

	if (b->len)
		buf_adds(b, "&");
	add_query_part(b, key);
	if (value) {
		buf_adds(b, "=");
		add_query_part(b, value);
	}
	return MHD_YES;
}

const char *request_query(struct request *req)
{
	struct buf b;

	if (req->query)
		return req->query;
	buf_init(&b);
	MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND,
				  add_query_arg, &b);
	req->query = xstrdup(b.len ? b.data : "");
	buf_release(&b);
	return req->query;
}

const char *request_arg(struct request *req, const char *key)
{
	return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND,
					   key);
}

void request_reply(struct request *req, unsigned status, json_t *body)
{
	char *text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY |
					      JSON_REAL_PRECISION(12));

	json_decref(body);
	if (!text) {
		text = xstrdup("{\"error\":{\"code\":\"internal\",\"message\":"
			       "\"cannot encode the reply\"}}");
		status = 500;
	}
	store_reply(req, status, "application/json", text, strlen(text));
}

void request_reply_raw(struct request *req, unsigned status,
		       const char *content_type, const char *body, size_t len)
{
	char *copy = xmalloc(len + 1);

	memcpy(copy, body, len);
	copy[len] = '\0';
	store_reply(req, status, content_type, copy, len);
}

void request_reply_take(struct request *req, unsigned status,
			const char *content_type, char *body, size_t len)
{
	store_reply(req, status, content_type, body, len);
}

void request_budget_counts(uint64_t *held, uint64_t *dropped)
{
	pthread_mutex_lock(&budget.lock);
	*held = budget.held;
	*dropped = budget.dropped;
	pthread_mutex_unlock(&budget.lock);
}

void request_error(struct request *req, unsigned status, const char *code,
		   const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	json_t *o;
	struct buf b;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	buf_init(&b);
	utf8_repair(&b, msg, strlen(msg));
	o = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message",
		      b.data);
	buf_release(&b);
	request_reply(req, status, o);
}

const char *request_body(struct request *req, size_t *len)
{
	*len = req->body.len;
	return req->body.data ? req->body.data : "";
}

char *request_body_take(struct request *req, size_t *len)
{
	char *data = req->body.data;

	*len = req->body.len;
	buf_init(&req->body);
	return data;
}

/* ---- runs ---- */

static void unwatch_sock(struct request *req)
{
	if (!req->watching)
		return;
	loop_del_fd(runner_loop(server_state.runner), req->sock);
	req->watching = false;
}

static void run_output(void *ctx, size_t step, int stream, const char *data,
		       size_t len)
{
	struct request *req = ctx;

	if (req->hooks.output)
		req->hooks.output(req->ctx, step, stream, data, len);
}

static void run_done(void *ctx, struct sandbox_result *res)
{
	struct request *req = ctx;

	pthread_mutex_lock(&req->lock);
	req->job = NULL;
	req->run_finished = true;
	pthread_mutex_unlock(&req->lock);
	unwatch_sock(req);
	metrics_run(res->status);
	req->hooks.done(req, res, req->ctx);
	if (req->hooks.free_ctx)
		req->hooks.free_ctx(req->ctx);
	req->ctx = NULL;
	request_unref(req);
}

static const struct sandbox_ops run_ops = {.output = run_output,
					   .done = run_done};

static void on_sock(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct request *req = arg;
	struct runner_job *job;
	char c;
	ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);

	if (n > 0 && !(events & (EPOLLHUP | EPOLLERR))) {
		/* A pipelined request is waiting (maybe with the write side
		 * closed after it): not a hang-up, and the watch would fire
		 * on every turn of the loop. Stop watching. */
		unwatch_sock(req);
		return;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR) &&
	    !(events & (EPOLLHUP | EPOLLERR)))
		return;
	unwatch_sock(req);
	pthread_mutex_lock(&req->lock);
	job = req->job;
	pthread_mutex_unlock(&req->lock);
	if (job && !req->hung_up) {
		req->hung_up = true;
		metrics_disconnect();
		log_info("request %s: client disconnected, killing its sandbox",
			 req->route);
		runner_cancel(job, "client disconnected");
	}
}

/* On the runner's thread, after submission: watch the client's socket. */
static void watch_cb(struct loop *loop, void *arg)
{
	struct request *req = arg;
	bool running;

	pthread_mutex_lock(&req->lock);
	running = req->job && !req->run_finished;
	pthread_mutex_unlock(&req->lock);
	if (running && req->sock >= 0 &&
	    loop_add_fd(loop, req->sock, EPOLLRDHUP, on_sock, req) == 0)
		req->watching = true;
	request_unref(req);
}

void request_run(struct request *req, struct sandbox_spec *spec,
		 const struct run_hooks *hooks, void *ctx)
{
	const union MHD_ConnectionInfo *ci;
	struct runner_job *job;
	int err;

	req->hooks = *hooks;
	req->ctx = ctx;
	ci = MHD_get_connection_info(req->conn,
				     MHD_CONNECTION_INFO_CONNECTION_FD);
	req->sock = ci ? ci->connect_fd : -1;
	/* The runner may finish before we get to suspend: take the refs and
	 * mark the request suspended first (the reply path checks it). */
	__atomic_add_fetch(&req->refs, 2, __ATOMIC_ACQ_REL);
	pthread_mutex_lock(&req->lock);
	req->suspended = true;
	MHD_suspend_connection(req->conn);
	pthread_mutex_unlock(&req->lock);
	job = runner_submit(server_state.runner, spec, &run_ops, req, &err);
	if (job) {
		pthread_mutex_lock(&req->lock);
		if (!req->run_finished)
			req->job = job;
		pthread_mutex_unlock(&req->lock);
	} else {
		unsigned running, queued, maxr, maxq;

		__atomic_sub_fetch(&req->refs, 2, __ATOMIC_ACQ_REL);
		if (hooks->free_ctx)
			hooks->free_ctx(ctx);
		runner_counts(server_state.runner, &running, &queued, &maxr,
			      &maxq);
		request_error(req, 503, "busy",
			      "all %u sandboxes are busy and %u runs are "
			      "waiting; retry later",
			      maxr, maxq);
		return;
	}
	loop_post(runner_loop(server_state.runner), watch_cb, req);
}

/* ---- routing ---- */

/* Whether got (m bytes) is the server's token, in time that depends on
 * the length of the server's token only. */
static bool token_equal(const char *got, size_t m)
{
	const char *want = server_state.cfg->token;
	size_t i, n = strlen(want);
	unsigned char diff = 0;

	for (i = 0; i < n; i++)
		diff |= (unsigned char)want[i] ^
			(unsigned char)(i < m ? got[i] : 0);
	return diff == 0 && m == n;
}

/* The URL without its /t/<token> prefix, which clients that can only be
 * given a URL (SandboxFusion's) use in place of the Authorization header.
 * The token is checked here and kept nowhere: routes, logs and metrics
 * see the rest of the path only. */
static char *strip_path_token(struct request *req, const char *url)
{
	const char *tok, *end;
	const char *want = server_state.cfg->token;

	if (!str_starts_with(url, "/t/"))
		return xstrdup(url);
	tok = url + 3;
	end = strchr(tok, '/');
	if (!end)
		end = tok + strlen(tok);
	req->path_token = true;
	req->path_token_ok =
		want && *want && token_equal(tok, (size_t)(end - tok));
	return xstrdup(*end ? end : "/");
}

static bool token_ok(struct request *req)
{
	const char *want = server_state.cfg->token;
	const char *got;

	/* prime's gateway routes check their own per-sandbox tokens. */
	if (!want || !*want || req->gateway || prime_owns_auth(req->url))
		return true;
	if (req->path_token)
		return req->path_token_ok;
	got = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND,
					  MHD_HTTP_HEADER_AUTHORIZATION);
	if (!got || strncmp(got, "Bearer ", 7))
		return false;
	return token_equal(got + 7, strlen(got + 7));
}

/* Load-balancer probes answer without a token: /v1/ping, and /v1/health
 * saying only that the server is up. A request that brings a token is
 * held to it. */
static bool probe_route(const struct request *req)
{
	return !strcmp(req->method, "GET") &&
	       (!strcmp(req->url, "/v1/ping") ||
		!strcmp(req->url, "/v1/health")) &&
	       !req->path_token &&
	       !MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND,
					    MHD_HTTP_HEADER_AUTHORIZATION);
}

static void answer_probe(struct request *req)
{
	if (!strcmp(req->url, "/v1/ping")) {
		req->route = "/v1/ping";
		compat_ping(req);
		return;
	}
	req->route = "/v1/health";
	request_reply(req, 200, json_pack("{s:s}", "status", "ok"));
}

static void dispatch(struct request *req)
{
	const char *path = req->url;
	bool known = false;
	size_t i;
	char allow[64] = "";

	if (stopping) {
		req->route = "other";
		request_error(req, 503, "shutting_down",
			      "the server is shutting down");
		return;
	}
	if (req->gateway) {
		/* A sandbox's gateway socket reaches the gateway only. */
		req->route = "gateway";
		if (req->too_large) {
			request_error(req, 413, "payload_too_large",
				      "the request body is larger than %llu "
				      "bytes",
				      (unsigned long long)req->max_body);
			return;
		}
		gateway_route(req);
		return;
	}
	if (!token_ok(req)) {
		if (probe_route(req)) {
			answer_probe(req);
			return;
		}
		req->route = "unauthorized";
		request_error(req, 401, "unauthorized",
			      "a valid 'Authorization: Bearer <token>' header "
			      "or /t/<token> path prefix is required");
		return;
	}
	for (i = 0; i < routes_count; i++) {
		const struct route *r = &routes_table[i];

		if (r->prefix ? !str_starts_with(path, r->path)
			      : strcmp(r->path, path) != 0)
			continue;
		known = true;
		if (!r->prefix) {
			snprintf(allow, sizeof(allow), "%s", r->method);
			if (strcmp(r->method, req->method))
				continue;
		}
		req->route = str_starts_with(r->path, "/v1/sandboxes")
				     ? stats_route_template(path)
				     : r->path;
		if (req->too_large) {
			request_error(req, 413, "payload_too_large",
				      "the request body is larger than %llu "
				      "bytes",
				      (unsigned long long)req->max_body);
			return;
		}
		r->fn(req);
		return;
	}
	req->route = known ? "method_not_allowed" : "not_found";
	if (known)
		request_error(req, 405, "method_not_allowed",
			      "'%s' is not allowed on '%s' (allowed: %s)",
			      req->method, path, allow);
	else
		request_error(req, 404, "not_found", "no route '%s'", path);
}

/* MHD asks for the next bytes of a stream. With none yet, the connection
 * is suspended until request_stream_write() or _end() resumes it. */
static ssize_t read_stream(void *cls, uint64_t pos, char *out, size_t max)
{
	struct request *req = cls;
	struct drain_waiter *ready = NULL;
	ssize_t n;

	pthread_mutex_lock(&req->lock);
	if (req->stream_off < req->stream.len) {
		n = (ssize_t)(req->stream.len - req->stream_off);
		if ((size_t)n > max)
			n = (ssize_t)max;
		memcpy(out, req->stream.data + req->stream_off, (size_t)n);
		req->stream_off += (size_t)n;
		if (req->stream_off == req->stream.len) {
			/* Give a large buffer back rather than keep it. */
			if (req->stream.cap > STREAM_KEEP)
				buf_release(&req->stream);
			buf_reset(&req->stream);
			req->stream_off = 0;
		}
		budget_set(req, stream_pending(req));
		ready = take_waiters(req);
	} else if (req->stream_ended) {
		n = MHD_CONTENT_READER_END_OF_STREAM;
	} else {
		req->reader_waiting = true;
		MHD_suspend_connection(req->conn);
		n = 0;
	}
	pthread_mutex_unlock(&req->lock);
	run_waiters(ready);
	return n;
}

static void reading_del(struct request *req)
{
	pthread_mutex_lock(&reading.lock);
	if (req->reading) {
		if (req->reading_prev)
			req->reading_prev->reading_next = req->reading_next;
		else
			reading.head = req->reading_next;
		if (req->reading_next)
			req->reading_next->reading_prev = req->reading_prev;
		req->reading = false;
	}
	pthread_mutex_unlock(&reading.lock);
}

static enum MHD_Result send_reply(struct request *req)
{
	struct MHD_Response *resp;
	enum MHD_Result r;

	reading_del(req);
	if (req->streaming) {
		resp = MHD_create_response_from_callback(
			MHD_SIZE_UNKNOWN, 64 * 1024, read_stream, req, NULL);
	} else {
		/* Handed over, not copied: MHD frees it once sent. */
		resp = MHD_create_response_from_buffer(
			req->reply_len, req->reply, MHD_RESPMEM_MUST_FREE);
		if (resp)
			req->reply = NULL;
	}
	if (!resp)
		return MHD_NO;
	if (__atomic_load_n(&stopping, __ATOMIC_ACQUIRE))
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION,
					"close");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
				req->content_type);
	if (req->status == 503)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
	if (req->status == 405) {
		for (size_t i = 0; i < routes_count; i++)
			if (!routes_table[i].prefix &&
			    !strcmp(routes_table[i].path, req->url))
				MHD_add_response_header(resp,
							MHD_HTTP_HEADER_ALLOW,
							routes_table[i].method);
	}
	r = MHD_queue_response(req->conn, req->status, resp);
	MHD_destroy_response(resp);
	metrics_request(req->route ? req->route : "other", req->status,
			now_ns() - req->start_ns);
	return r;
}

static struct request *request_new(struct MHD_Connection *conn)
{
	struct request *req = xcalloc(1, sizeof(*req));
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(
		conn, MHD_CONNECTION_INFO_CONNECTION_FD);

	req->refs = 1;
	req->conn = conn;
	req->sock = -1;
	req->fd = ci ? ci->connect_fd : -1;
	req->start_ns = now_ns();
	buf_init(&req->body);
	pthread_mutex_init(&req->lock, NULL);
	return req;
}

/* Connections are accepted and served by one MHD thread each. */
static void on_connection(void *cls, struct MHD_Connection *conn,
			  void **socket_context,
			  enum MHD_ConnectionNotificationCode toe)
{
	const union MHD_ConnectionInfo *info;
	struct conn_info *ci;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		info = MHD_get_connection_info(
			conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		ci = xcalloc(1, sizeof(*ci));
		ci->fd = info ? info->connect_fd : -1;
		ci->thread = pthread_self();
		if (cls == &gateway_tag) {
			struct gateway_conn **pp, *g;

			pthread_mutex_lock(&gateway_adding.lock);
			for (pp = &gateway_adding.head; (g = *pp);
			     pp = &g->next)
				if (g->fd == ci->fd) {
					*pp = g->next;
					ci->peer = g->peer;
					free(g);
					break;
				}
			pthread_mutex_unlock(&gateway_adding.lock);
		}
		pthread_mutex_lock(&reading.lock);
		ci->next = conns;
		if (conns)
			conns->prev = ci;
		conns = ci;
		pthread_mutex_unlock(&reading.lock);
		*socket_context = ci;
		return;
	}
	ci = *socket_context;
	if (!ci)
		return;
	pthread_mutex_lock(&reading.lock);
	if (ci->prev)
		ci->prev->next = ci->next;
	else
		conns = ci->next;
	if (ci->next)
		ci->next->prev = ci->prev;
	pthread_mutex_unlock(&reading.lock);
	if (ci->peer)
		gateway_peer_put(ci->peer);
	free(ci);
	*socket_context = NULL;
}

/* MHD has read a request line: the request exists from here on, so that
 * errors MHD finds in its headers can be traced to it. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
	struct request *req = request_new(conn);
	const union MHD_ConnectionInfo *info = MHD_get_connection_info(
		conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	req->reader = pthread_self();
	req->gateway = cls == &gateway_tag;
	pthread_mutex_lock(&reading.lock);
	req->ci = info ? info->socket_context : NULL;
	if (req->ci)
		req->peer = req->ci->peer;
	if (req->ci)
		req->ci->busy = true;
	req->reading = true;
	req->reading_next = reading.head;
	if (reading.head)
		reading.head->reading_prev = req;
	reading.head = req;
	pthread_mutex_unlock(&reading.lock);
	return req;
}

/* Uploads are routed on their headers, their bodies streamed. */
static bool is_upload(const char *method, const char *url)
{
	return sandboxes_is_upload(method, url) || prime_is_upload(method, url);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
				  const char *url, const char *method,
				  const char *version, const char *upload_data,
				  size_t *upload_data_size, void **con_cls)
{
	struct request *req = *con_cls;
	bool ready;

	if (!req) {
		req = *con_cls = request_new(conn);
		req->gateway = cls == &gateway_tag;
	}
	if (req->gateway && !req->peer) {
		/* A gateway request is only ever served for its peer. */
		const union MHD_ConnectionInfo *gi = MHD_get_connection_info(
			conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
		struct conn_info *gci = gi ? gi->socket_context : NULL;

		if (!gci || !gci->peer)
			return MHD_NO;
		req->peer = gci->peer;
	}
	if (!req->seen) {
		const char *cl;
		uint64_t len;

		req->seen = true;
		req->method = method;
		/* A sandbox's gateway paths are its own: no token prefix. */
		req->url = req->gateway ? xstrdup(url)
					: strip_path_token(req, url);
		pthread_mutex_lock(&live.lock);
		live.n++;
		pthread_mutex_unlock(&live.lock);
		req->max_body = !req->gateway && is_upload(method, req->url)
					? server_state.cfg->max_upload
					: server_state.cfg->max_body;
		cl = MHD_lookup_connection_value(
			conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		req->body_length = UINT64_MAX;
		if (cl && parse_u64(cl, &len) == 0) {
			req->body_length = len;
			if (len > req->max_body)
				req->too_large = true;
		}
		/* Refuse before reading (or inviting, with 100 Continue) a
		 * body that would be thrown away. */
		if (!token_ok(req) && !probe_route(req)) {
			req->started = true;
			req->route = "unauthorized";
			request_error(req, 401, "unauthorized",
				      "a valid 'Authorization: Bearer <token>' "
				      "header or /t/<token> path prefix is "
				      "required");
			return send_reply(req);
		}
		if (req->too_large) {
			req->started = true;
			req->route = "other";
			request_error(req, 413, "payload_too_large",
				      "the request body is larger than %llu "
				      "bytes",
				      (unsigned long long)req->max_body);
			return send_reply(req);
		}
		if (!req->gateway && is_upload(method, req->url)) {
			/* An upload is routed on its headers: its body is
			 * streamed to the route as it comes. Even an answer
			 * made at once waits for the body to be read (and
			 * dropped), so that every client can read it. */
			req->started = true;
			pthread_rwlock_rdlock(&stop_lock);
			dispatch(req);
			pthread_rwlock_unlock(&stop_lock);
		}
		return MHD_YES;
	}
	if (*upload_data_size && req->started) {
		/* Routed on its headers: the route takes the body, or it is
		 * dropped (the route answered without taking it). */
		if (!req->body_stream)
			*upload_data_size = 0;
		else if (!body_feed(req, upload_data, upload_data_size))
			return MHD_NO; /* the client has gone: close */
		return MHD_YES;
	}
	if (*upload_data_size) {
		if (req->body.len + *upload_data_size > req->max_body) {
			req->too_large = true;
			buf_release(&req->body);
		}
		if (!req->too_large)
			buf_add(&req->body, upload_data, *upload_data_size);
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (!req->started) {
		req->started = true;
		reading_del(req);
		/* Shutdown waits for routes in progress, then refuses. */
		pthread_rwlock_rdlock(&stop_lock);
		dispatch(req);
		pthread_rwlock_unlock(&stop_lock);
	} else if (req->body_stream) {
		reading_del(req);
		body_finish(req);
	}
	pthread_mutex_lock(&req->lock);
	ready = req->replied && !req->suspended;
	pthread_mutex_unlock(&req->lock);
	if (!ready)
		return MHD_YES; /* suspended: resumed when the run ends */
	return send_reply(req);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct request *req = *con_cls;
	void (*abort_fn)(void *arg) = NULL;
	void *abort_arg = NULL;
	struct drain_waiter *ready;
	bool body_end;

	if (!req)
		return;
	*con_cls = NULL;
	reading_del(req);
	if (req->ci) {
		pthread_mutex_lock(&reading.lock);
		req->ci->busy = false;
		req->ci = NULL;
		pthread_mutex_unlock(&reading.lock);
	}
	if (req->early_status)
		metrics_request("other", req->early_status,
				now_ns() - req->start_ns);
	pthread_mutex_lock(&req->lock);
	req->closed = true;
	budget_set(req, 0);
	ready = take_waiters(req);
	if (req->streaming && !req->stream_ended) {
		abort_fn = req->abort_fn;
		abort_arg = req->abort_arg;
	}
	req->abort_fn = NULL;
	/* A streamed body cut short: its consumer stops. */
	body_end = req->body_stream && !req->body_over;
	req->body_over = true;
	pthread_mutex_unlock(&req->lock);
	if (body_end)
		body_call(req, NULL, 0, false, true);
	if (abort_fn) {
		pthread_rwlock_rdlock(&stop_lock);
		if (!runner_gone)
			abort_fn(abort_arg);
		pthread_rwlock_unlock(&stop_lock);
	}
	run_waiters(ready);
	if (req->seen) {
		pthread_mutex_lock(&live.lock);
		if (--live.n == 0)
			pthread_cond_broadcast(&live.cond);
		pthread_mutex_unlock(&live.lock);
	}
	request_unref(req);
}

/* Writes a JSON error straight to a client and shuts the sending side,
 * so MHD's own reply after it fails and MHD closes the connection. */
static void answer_fd(int fd, unsigned status, const char *reason,
		      const char *code, const char *message)
{
	char text[512];
	int body, n;

	body = snprintf(text, sizeof(text),
			"{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}",
			code, message);
	n = snprintf(text + body, sizeof(text) - (size_t)body,
		     "HTTP/1.1 %u %s\r\nContent-Type: application/json\r\n"
		     "Content-Length: %d\r\nConnection: close\r\n\r\n",
		     status, reason, body);
	/* Head first, then the body written before it. */
	if (send(fd, text + body, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) == n)
		send(fd, text, (size_t)body, MSG_NOSIGNAL | MSG_DONTWAIT);
	shutdown(fd, SHUT_WR);
}

/* Whether MHD reads cl as a length: digits only, within 64 bits. Sets
 * *digits when it is digits only. */
static bool length_readable(const char *cl, bool *digits)
{
	uint64_t v = 0;
	size_t i;

	*digits = *cl && strspn(cl, "0123456789") == strlen(cl);
	if (!*digits)
		return false;
	for (i = 0; cl[i]; i++) {
		if (v > (UINT64_MAX - (uint64_t)(cl[i] - '0')) / 10)
			return false;
		v = v * 10 + (uint64_t)(cl[i] - '0');
	}
	return true;
}

/* MHD 0.9.75 answers a Content-Length it cannot read (not a number, or
 * past 64 bits) with its own HTML error and then sends that reply's
 * status line and headers a second time (it queues the error while
 * parsing the headers, then builds the headers again when the request
 * moves on); the handler is never called. It logs the fault first, on
 * the thread that reads the request: every request this thread is
 * reading headers for whose Content-Length is unreadable gets a JSON
 * error here instead, which the one being parsed is among (any other
 * would get the same error once its headers end). */
static void answer_bad_length(void)
{
	struct request *found[16];
	size_t n = 0, i;
	pthread_t self = pthread_self();

	pthread_mutex_lock(&reading.lock);
	for (struct request *r = reading.head; r && n < ARRAY_SIZE(found);
	     r = r->reading_next) {
		const char *cl;
		bool digits;

		if (!pthread_equal(r->reader, self))
			continue;
		/* This thread reads r: its headers hold still. */
		cl = MHD_lookup_connection_value(
			r->conn, MHD_HEADER_KIND,
			MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (!cl || length_readable(cl, &digits))
			continue;
		__atomic_add_fetch(&r->refs, 1, __ATOMIC_ACQ_REL);
		found[n++] = r;
	}
	pthread_mutex_unlock(&reading.lock);
	for (i = 0; i < n; i++) {
		struct request *r = found[i];
		const char *cl = MHD_lookup_connection_value(
			r->conn, MHD_HEADER_KIND,
			MHD_HTTP_HEADER_CONTENT_LENGTH);
		bool digits;

		length_readable(cl ? cl : "", &digits);
		pthread_mutex_lock(&r->lock);
		if (!r->closed && !r->early_status && r->fd >= 0) {
			r->early_status = digits ? 413 : 400;
			if (digits)
				answer_fd(r->fd, 413, "Content Too Large",
					  "payload_too_large",
					  "the Content-Length header is past "
					  "64 bits");
			else
				answer_fd(r->fd, 400, "Bad Request",
					  "bad_request",
					  "the Content-Length header is not a "
					  "number");
		}
		pthread_mutex_unlock(&r->lock);
		request_unref(r);
	}
}

/* MHD's other error replies are HTML. Those it can only send while it
 * reads a request's headers or body are answered in JSON instead when
 * this thread is reading exactly one request: then it is that one. With
 * more, which one failed cannot be told, and MHD's reply goes out as it
 * is. A header line without a colon is reported with the very status and
 * text of a malformed request line, which comes before the request is
 * known here: it is answered only when none of the thread's connections
 * is idle or reading a request line. Errors in a request line itself
 * (an unsupported HTTP version, a URI too long) cannot be traced to a
 * connection and keep MHD's reply. */
static void answer_mhd_error(unsigned status, const char *text)
{
	struct request *found = NULL;
	struct conn_info *idle = NULL;
	pthread_t self = pthread_self();
	const char *reason, *code, *message;
	bool in_line = false, in_request = true;
	unsigned n = 0;

	if (status == 431) {
		reason = "Request Header Fields Too Large";
		code = "headers_too_large";
		message = "the request's headers are larger than this server "
			  "takes";
	} else if (status == 400 && strstr(text, "chunked encoding")) {
		reason = "Bad Request";
		code = "bad_request";
		message = "the body's chunked encoding is malformed";
	} else if (status == 400 && strstr(text, "Host:")) {
		reason = "Bad Request";
		code = "bad_request";
		message = "an HTTP/1.1 request needs a Host header";
	} else if (status == 413 && strstr(text, "chunk size")) {
		reason = "Content Too Large";
		code = "payload_too_large";
		message =
			"a chunk of the body is larger than this server takes";
	} else if (status == 400 && strstr(text, "syntactically incorrect")) {
		reason = "Bad Request";
		code = "bad_request";
		message = "the request is malformed (a bad request line, or a "
			  "header line without a colon)";
		in_line = true;
	} else if (status == 505) {
		reason = "HTTP Version Not Supported";
		code = "http_version_not_supported";
		message = "this server speaks HTTP/1.0 and HTTP/1.1";
		in_line = true;
		in_request = false;
	} else if (status == 414) {
		reason = "URI Too Long";
		code = "uri_too_long";
		message = "the request line is longer than this server takes";
		in_line = true;
		in_request = false;
	} else {
		return;
	}
	pthread_mutex_lock(&reading.lock);
	if (in_request)
		for (struct request *r = reading.head; r; r = r->reading_next)
			if (pthread_equal(r->reader, self)) {
				found = r;
				n++;
			}
	if (in_line)
		for (struct conn_info *c = conns; c; c = c->next)
			if (!c->busy && pthread_equal(c->thread, self)) {
				idle = c;
				n++;
			}
	if (n == 1 && !idle) {
		__atomic_add_fetch(&found->refs, 1, __ATOMIC_ACQ_REL);
	} else if (n == 1) {
		/* Open: MHD closes it only after telling on_connection(),
		 * which waits for the lock. */
		answer_fd(idle->fd, status, reason, code, message);
	}
	pthread_mutex_unlock(&reading.lock);
	if (n != 1 || idle)
		return;
	pthread_mutex_lock(&found->lock);
	if (!found->closed && !found->early_status && found->fd >= 0) {
		answer_fd(found->fd, status, reason, code, message);
		found->early_status = status;
	}
	pthread_mutex_unlock(&found->lock);
	request_unref(found);
}

/* The library logs request URLs as the client sent them: the token of a
 * path prefix ("/t/TOKEN/") is replaced by three stars in line, which
 * never grows. */
static void redact_path_tokens(char *line)
{
	char *p = line;

	while ((p = strstr(p, "/t/"))) {
		char *tok = p + 3;
		size_t n = strcspn(tok, "/ \t'\"?");

		if (n >= 3) {
			memmove(tok + 3, tok + n, strlen(tok + n) + 1);
			n = 3;
		}
		memset(tok, '*', n);
		p = tok + n;
	}
}

static void log_mhd(void *cls, const char *fmt, va_list ap)
{
	char line[512];

	if (strstr(fmt, "Content-Length' header. Closing connection")) {
		answer_bad_length();
	} else if (str_starts_with(fmt, "Error processing request (HTTP "
					"response code is %u ('%s'))")) {
		va_list aq;
		unsigned status;
		const char *text;

		va_copy(aq, ap);
		status = va_arg(aq, unsigned);
		text = va_arg(aq, const char *);
		va_end(aq);
		answer_mhd_error(status, text ? text : "");
	}
	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\n")] = '\0';
	redact_path_tokens(line);
	log_debug("http: %s", line);
}

void server_config_init(struct server_config *cfg)
{
	long cores = sysconf(_SC_NPROCESSORS_ONLN);

	memset(cfg, 0, sizeof(*cfg));
	cfg->host = xstrdup("127.0.0.1");
	cfg->port = 8080;
	cfg->concurrency = cores > 0 ? (unsigned)cores : 1;
	cfg->queue = 2048;
	cfg->max_body = 32ull << 20;
	cfg->http_threads = 4;
	cfg->client_timeout_s = 60;
	cfg->reply_budget = 256ull << 20;
	cfg->limits.wall_ms = SANDBOX_DEFAULT_WALL_MS;
	cfg->limits.memory_bytes = SANDBOX_DEFAULT_MEMORY;
	cfg->limits.pids = SANDBOX_DEFAULT_PIDS;
	cfg->limits.fsize_bytes = SANDBOX_DEFAULT_FSIZE;
	cfg->limits.nofile = SANDBOX_DEFAULT_NOFILE;
	cfg->limits.output_bytes = 8ull << 20;
	cfg->limits.disk_bytes = SANDBOX_DEFAULT_DISK;
	cfg->max_wall_ms = 600000;
	cfg->max_memory = 8ull << 30;
	cfg->max_upload = 512ull << 20;
	cfg->max_disk = 4ull << 30;
	cfg->max_sandboxes = 64;
	cfg->idle_timeout_ms = 600000;
	cfg->max_lifetime_ms = 6 * 3600000ull;
	cfg->llm_port = 4000;
	cfg->llm_limits[LLM_LIMIT_SANDBOX_CONCURRENT] = 256;
	cfg->upstream_connect_ms = 10000;
	cfg->upstream_read_ms = 300000;
	cfg->upstream_retries = 2;
	cfg->upstream_connections = 256;
}

void server_config_release(struct server_config *cfg)
{
	free(cfg->host);
	free(cfg->token);
	free(cfg->port_file);
	for (size_t i = 0; i < cfg->nupstreams; i++) {
		free(cfg->upstreams[i].name);
		free(cfg->upstreams[i].url);
		free(cfg->upstreams[i].key_env);
	}
	free(cfg->upstreams);
	free(cfg->default_upstream);
	free(cfg->state_dir);
	memset(cfg, 0, sizeof(*cfg));
}

static bool is_loopback(const struct in_addr *a)
{
	return (ntohl(a->s_addr) >> 24) == 127;
}

/* Waits until MHD has finished every request, or the deadline. */
static void drain(unsigned timeout_s)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += timeout_s;
	pthread_mutex_lock(&live.lock);
	while (live.n &&
	       pthread_cond_timedwait(&live.cond, &live.lock, &until) == 0)
		;
	if (live.n)
		log_warn("stopping with %u requests unfinished", live.n);
	pthread_mutex_unlock(&live.lock);
}

/* Every accepted request gets its reply: no new connections, no new work
 * (requests that arrive get 503 and their connection closes), the runs
 * and sandboxes stop (their clients get their errors), and only when MHD
 * has sent every stored reply does the daemon stop. Stopping the daemon
 * with replies stored but not yet sent would close those connections
 * with no reply at all. */
static void stop(struct MHD_Daemon *d, const struct server_config *cfg)
{
	MHD_socket lfd = MHD_quiesce_daemon(d);

	if (gateway_daemon)
		MHD_quiesce_daemon(gateway_daemon);

	/* Connections waiting in the backlog are refused, not left hanging. */
	if (lfd != MHD_INVALID_SOCKET)
		close(lfd);
	pthread_rwlock_wrlock(&stop_lock);
	stopping = true;
	pthread_rwlock_unlock(&stop_lock);
	gateway_stop_accepting();
	executions_stop_dispatch();
	sandboxes_stop();
	pthread_rwlock_wrlock(&stop_lock);
	runner_gone = true;
	pthread_rwlock_unlock(&stop_lock);
	runner_free(server_state.runner);
	server_state.runner = NULL;
	drain(cfg->client_timeout_s < DRAIN_S ? cfg->client_timeout_s
					      : DRAIN_S);
	MHD_stop_daemon(d);
	if (gateway_daemon)
		MHD_stop_daemon(gateway_daemon);
	gateway_daemon = NULL;
	gateway_stop();
	executions_stop();
}

int server_run(const struct server_config *cfg)
{
	struct sockaddr_in addr;
	struct MHD_Daemon *d;
	const union MHD_DaemonInfo *di;
	struct rlimit rl;
	sigset_t sigs;
	char err[256];
	int sig;
	unsigned flags;

	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_port = htons(cfg->port);
	if (inet_pton(AF_INET, cfg->host, &addr.sin_addr) != 1) {
		fprintf(stderr, "sbx serve: bad listen address '%s'\n",
			cfg->host);
		return 1;
	}
	if (!is_loopback(&addr.sin_addr) && (!cfg->token || !*cfg->token)) {
		fprintf(stderr,
			"sbx serve: listening on '%s' (beyond loopback) needs "
			"a token: set --token or SBX_TOKEN\n",
			cfg->host);
		return 1;
	}
	if (sandbox_host_init(err, sizeof(err))) {
		fprintf(stderr, "sbx serve: %s\n", err);
		return 1;
	}
	/* Every queued connection is an fd. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	sandbox_host_sweep();
	/* Large blocks (reply bodies, outputs) are mapped and unmapped on
	 * their own, so memory they held goes back to the system once they
	 * are freed, instead of the threshold creeping up to their size and
	 * keeping them in the heap. */
	mallopt(M_MMAP_THRESHOLD, 1 << 20);
	budget.limit = cfg->reply_budget;
	server_state.cfg = cfg;
	server_state.started_ns = now_ns();
	server_state.runner =
		runner_new(cfg->concurrency, cfg->queue,
			   cfg->warm_set ? cfg->warm : cfg->concurrency,
			   &cfg->limits, err, sizeof(err));
	if (!server_state.runner) {
		fprintf(stderr, "sbx serve: %s\n", err);
		return 1;
	}
	if (gateway_start(cfg)) {
		runner_free(server_state.runner);
		return 1;
	}
	sandboxes_start(cfg);
	if (executions_start(cfg)) {
		sandboxes_stop();
		runner_free(server_state.runner);
		gateway_stop();
		return 1;
	}
	/* Signals are taken synchronously below; every thread inherits the
	 * mask. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
		MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
	d = MHD_start_daemon(
		flags, 0, NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR,
		(struct sockaddr *)&addr, MHD_OPTION_THREAD_POOL_SIZE,
		(unsigned)cfg->http_threads, MHD_OPTION_CONNECTION_TIMEOUT,
		(unsigned)cfg->client_timeout_s, MHD_OPTION_CONNECTION_LIMIT,
		(unsigned)(cfg->queue + cfg->concurrency + 256),
		MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
		MHD_OPTION_URI_LOG_CALLBACK, on_uri, NULL,
		MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL,
		MHD_OPTION_EXTERNAL_LOGGER, log_mhd, NULL, MHD_OPTION_END);
	if (!d) {
		int e = errno;

		fprintf(stderr, "sbx serve: cannot listen on %s:%u: %s\n",
			cfg->host, cfg->port, strerror(e));
		if (e == EADDRINUSE)
			fprintf(stderr,
				"sbx serve: another program has that port; "
				"pick another with --listen HOST:PORT or "
				"SBX_LISTEN (make run "
				"SBX_LISTEN=127.0.0.1:8081)\n");
		sandboxes_stop(); /* the sandboxes built ahead */
		runner_free(server_state.runner);
		return 1;
	}
	/* The gateway's daemon serves the connections of sandboxes'
	 * gateway sockets, apart from the public one. */
	gateway_daemon = MHD_start_daemon(
		flags | MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC, 0, NULL, NULL,
		on_request, &gateway_tag, MHD_OPTION_THREAD_POOL_SIZE,
		(unsigned)(cfg->http_threads < 2 ? cfg->http_threads : 2),
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->client_timeout_s,
		MHD_OPTION_CONNECTION_LIMIT, (unsigned)GATEWAY_CONNECTIONS,
		MHD_OPTION_NOTIFY_COMPLETED, on_completed, &gateway_tag,
		MHD_OPTION_URI_LOG_CALLBACK, on_uri, &gateway_tag,
		MHD_OPTION_NOTIFY_CONNECTION, on_connection, &gateway_tag,
		MHD_OPTION_EXTERNAL_LOGGER, log_mhd, NULL, MHD_OPTION_END);
	if (!gateway_daemon)
		log_warn("cannot start the model gateway's HTTP service: %s",
			 strerror(errno));
	di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	log_info("listening on http://%s:%u (%u sandboxes at once, %u "
		 "queued)",
		 cfg->host, di ? di->port : cfg->port, cfg->concurrency,
		 cfg->queue);
	if (cfg->port_file && di) {
		FILE *f = fopen(cfg->port_file, "we");

		if (f) {
			fprintf(f, "%u\n", di->port);
			fclose(f);
		}
	}
	sigwait(&sigs, &sig);
	log_info("stopping (signal %d)", sig);
	stop(d, cfg);
	sandbox_host_release();
	return 0;
}

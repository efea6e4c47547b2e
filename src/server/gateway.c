/*
 * The model gateway: OpenAI-compatible calls from sandboxes (and from the
 * host under /llm), forwarded to the upstreams the operator configured and
 * traced, one SQLite row per call, under the sandbox and session that made
 * them.
 *
 * A sandbox that asks for the gateway gets a listening socket inside its
 * own network namespace (made by the host before its first command). The
 * gateway's thread accepts on it and hands each connection to the HTTP
 * layer's gateway service together with the sandbox's peer, so a
 * request's identity is the socket it came in on, never anything it says.
 *
 * Every upstream call runs on the upstream engine's thread (libcurl multi
 * on an event loop): its answer is buffered, or for a streamed call passed
 * through event by event, held back only by the final "[DONE]", which
 * follows the trace's commit. The same thread accepts on the sandboxes'
 * sockets and watches callers for hang-ups.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/loop.h"
#include "base/util.h"
#include "llm/extract.h"
#include "llm/slug.h"
#include "llm/sse.h"
#include "llm/upstream.h"
#include "runtime/session.h"
#include "server/gateway.h"
#include "server/internal.h"
#include "server/request.h"
#include "store/traces.h"
#include "base/banned.h"

/* The most of an upstream's answer kept for a reply or a trace. */
#define MAX_RESPONSE (64u << 20)
/* The largest server-sent event passed through. */
#define MAX_EVENT (8u << 20)
/* A streamed reply waits for its client past this many unsent bytes. */
#define STREAM_HIGH (1u << 20)
#define STREAM_LOW (256u << 10)
/* Connections one sandbox may hold open to the gateway. */
#define PEER_CONNECTIONS 512
/* Model lists older than this are fetched again before a model no list
 * names is refused. */
#define MODELS_FRESH_NS (10ull * 1000000000ull)
/* The key sandboxes' OpenAI clients send: any is accepted there. */
#define SANDBOX_KEY "sbx"
#define SESSION_BUCKETS 1024
/* A session's counters are forgotten after this long unused. */
#define SESSION_IDLE_NS (3600ull * 1000000000ull)
#define TRACES_DEFAULT_LIMIT 1000
#define TRACES_MAX_LIMIT 10000

struct upstream {
	char *name;
	char *base; /* without a trailing slash */
	char *key;
	json_t *models; /* the objects of its /models, or NULL */
};

/* The counters a limit is checked against. */
struct usage {
	uint64_t calls, prompt, completion, active;
};

struct session_use {
	char *key;
	struct usage u;
	uint64_t last_ns;
	struct session_use *next;
};

struct gateway_peer {
	int refs;
	bool llm; /* the model routes; else host routes only */
	struct gateway_route *routes;
	size_t nroutes;
	char *id;
	json_t *labels;
	char session[128];
	uint64_t max[4]; /* calls, prompt, completion, concurrent */
	struct usage u;	 /* under gw.lock */
	int listen_fd;	 /* engine thread */
	unsigned conns;	 /* under gw.lock */
	bool closed;	 /* engine thread */
};

struct models_wait {
	void (*fn)(void *arg);
	void *arg;
	struct models_wait *next;
};

static struct {
	const struct server_config *cfg;
	struct upstream_engine *eng;
	struct loop *loop; /* the engine's */
	struct traces *traces;
	struct upstream *ups;
	size_t nups;
	struct upstream *def;
	pthread_mutex_t lock; /* peers' and sessions' counters, models */
	struct session_use *sessions[SESSION_BUCKETS];
	bool accepting;
	/* model lists: under lock */
	bool refreshing;
	unsigned refresh_pending;
	uint64_t models_ns;
	struct models_wait *waiters;
	uint64_t calls, failures, prompt_tokens, completion_tokens, active;
	uint64_t rejected; /* by a limit */
} gw = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* ---- errors ---- */

static const char *error_type(unsigned status)
{
	switch (status) {
	case 400:
	case 413:
		return "invalid_request_error";
	case 404:
		return "not_found_error";
	case 429:
		return "rate_limit_error";
	default:
		return "api_error";
	}
}

/* The usual JSON error, with OpenAI's "type" for its SDKs. */
static void gw_error(struct request *req, unsigned status, const char *code,
		     const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void gw_error(struct request *req, unsigned status, const char *code,
		     const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	request_reply(req, status,
		      json_pack("{s:{s:s,s:s,s:s}}", "error", "code", code,
				"message", msg, "type", error_type(status)));
}

/* ---- peers ---- */

static void peer_unref(struct gateway_peer *p)
{
	if (!p || __atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL))
		return;
	json_decref(p->labels);
	free(p->routes);
	free(p->id);
	free(p);
}

static void peer_ref(struct gateway_peer *p)
{
	__atomic_add_fetch(&p->refs, 1, __ATOMIC_RELAXED);
}

void gateway_peer_put(void *peer)
{
	struct gateway_peer *p = peer;

	pthread_mutex_lock(&gw.lock);
	p->conns--;
	pthread_mutex_unlock(&gw.lock);
	peer_unref(p);
}

bool gateway_enabled(void)
{
	return gw.nups > 0;
}

bool gateway_default_on(void)
{
	return gw.cfg && gw.cfg->llm_default;
}

static uint64_t cap_limit(uint64_t asked, uint64_t server)
{
	if (!asked)
		return server;
	return server && asked > server ? server : asked;
}

struct gateway_peer *gateway_peer_new(const char *id, const json_t *labels,
				      const struct gateway_opts *o)
{
	struct gateway_peer *p = xcalloc(1, sizeof(*p));
	const uint64_t *lim = gw.cfg->llm_limits;

	p->refs = 1;
	p->llm = o->on;
	if (o->nroutes) {
		p->routes = xmalloc(o->nroutes * sizeof(*p->routes));
		memcpy(p->routes, o->routes, o->nroutes * sizeof(*p->routes));
		p->nroutes = o->nroutes;
	}
	p->id = xstrdup(id);
	p->labels = labels ? json_deep_copy(labels) : json_object();
	str_copy(p->session, sizeof(p->session), o->session);
	p->max[0] = cap_limit(o->max_calls, lim[LLM_LIMIT_SANDBOX_CALLS]);
	p->max[1] = cap_limit(o->max_prompt_tokens,
			      lim[LLM_LIMIT_SANDBOX_PROMPT_TOKENS]);
	p->max[2] = cap_limit(o->max_completion_tokens,
			      lim[LLM_LIMIT_SANDBOX_COMPLETION_TOKENS]);
	p->max[3] =
		cap_limit(o->max_concurrent, lim[LLM_LIMIT_SANDBOX_CONCURRENT]);
	p->listen_fd = -1;
	return p;
}

static void on_accept(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct gateway_peer *p = arg;

	for (;;) {
		int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		bool full;

		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN)
				log_warn("sandbox %s: cannot accept a gateway "
					 "connection: %s",
					 p->id, strerror(errno));
			return;
		}
		pthread_mutex_lock(&gw.lock);
		full = p->conns >= PEER_CONNECTIONS || !gw.accepting;
		if (!full)
			p->conns++;
		pthread_mutex_unlock(&gw.lock);
		if (full) {
			close(c);
			continue;
		}
		peer_ref(p);
		request_gateway_add(c, p);
	}
}

struct listen_msg {
	struct gateway_peer *p;
	int fd;
};

static void listen_cb(struct loop *loop, void *arg)
{
	struct listen_msg *m = arg;
	struct gateway_peer *p = m->p;

	if (p->closed || p->listen_fd >= 0 ||
	    loop_add_fd(loop, m->fd, EPOLLIN, on_accept, p) < 0) {
		close(m->fd);
		peer_unref(p);
	} else {
		p->listen_fd = m->fd; /* the listener's reference is p's */
	}
	free(m);
}

/* The sandbox layer made the listener (on the runner's thread). */
static void on_listener(void *arg, int fd)
{
	struct gateway_peer *p = arg;
	struct listen_msg *m;

	if (fd < 0) {
		log_warn("sandbox %s: no model gateway: cannot listen inside "
			 "it: %s",
			 p->id, strerror(-fd));
		return;
	}
	m = xmalloc(sizeof(*m));
	peer_ref(p);
	m->p = p;
	m->fd = fd;
	loop_post(gw.loop, listen_cb, m);
}

void gateway_peer_attach(struct gateway_peer *p, struct sandbox_spec *spec)
{
	char env[96];

	spec->listen_port = gw.cfg->llm_port;
	spec->listen = on_listener;
	spec->listen_arg = p;
	snprintf(env, sizeof(env), "SBX_GATEWAY_URL=http://127.0.0.1:%u",
		 (unsigned)gw.cfg->llm_port);
	sandbox_spec_add_env(spec, env);
	if (!p->llm)
		return;
	snprintf(env, sizeof(env), "OPENAI_BASE_URL=http://127.0.0.1:%u/v1",
		 (unsigned)gw.cfg->llm_port);
	sandbox_spec_add_env(spec, env);
	sandbox_spec_add_env(spec, "OPENAI_API_KEY=" SANDBOX_KEY);
}

json_t *gateway_peer_json(const struct gateway_peer *p)
{
	char url[80], gurl[64];
	json_t *routes = json_object();
	size_t i;

	snprintf(gurl, sizeof(gurl), "http://127.0.0.1:%u",
		 (unsigned)gw.cfg->llm_port);
	snprintf(url, sizeof(url), "%s/v1", gurl);
	for (i = 0; i < p->nroutes; i++)
		json_object_set_new(routes, p->routes[i].prefix,
				    json_string(p->routes[i].target));
	return json_pack("{s:s?,s:s?,s:s?,s:s,s:o}", "base_url",
			 p->llm ? url : NULL, "api_key",
			 p->llm ? SANDBOX_KEY : NULL, "session",
			 p->session[0] ? p->session : NULL, "gateway_url", gurl,
			 "host_routes", routes);
}

static void close_cb(struct loop *loop, void *arg)
{
	struct gateway_peer *p = arg;

	p->closed = true;
	if (p->listen_fd >= 0) {
		loop_del_fd(loop, p->listen_fd);
		fd_close(&p->listen_fd);
		peer_unref(p); /* the listener's */
	}
	peer_unref(p); /* the owner's */
}

void gateway_peer_close(struct gateway_peer *p)
{
	if (!p)
		return;
	if (gw.loop)
		loop_post(gw.loop, close_cb, p);
	else
		peer_unref(p);
}

/* Stateful sandboxes' side (runtime/session.h). */
static void *session_open(const char *id, const json_t *labels,
			  const json_t *args, char *err, size_t errlen,
			  const char **code)
{
	struct gateway_opts *o = xmalloc(sizeof(*o));
	struct gateway_peer *p = NULL;

	if (gateway_opts_parse(json_object_get(args, "llm"),
			       gateway_default_on(), o, err, errlen) ||
	    gateway_routes_parse(json_object_get(args, "host_routes"), o, err,
				 errlen) ||
	    (!o->on && !o->nroutes))
		goto out;
	if (o->on && !gateway_enabled()) {
		*code = "no_upstream";
		snprintf(err, errlen,
			 "'llm' needs a model upstream, and this server has "
			 "none (sbx serve --upstream NAME=URL)");
		goto out;
	}
	p = gateway_peer_new(id, labels, o);
out:
	free(o);
	return p;
}

static void session_attach(void *h, struct sandbox_spec *spec)
{
	gateway_peer_attach(h, spec);
}

static json_t *session_describe(void *h)
{
	return gateway_peer_json(h);
}

static void session_close(void *h)
{
	gateway_peer_close(h);
}

const struct session_gateway gateway_session_ops = {
	.open = session_open,
	.attach = session_attach,
	.describe = session_describe,
	.close = session_close,
};

/* ---- limits ---- */

static struct session_use *session_use(const char *key)
{
	uint64_t h = 1469598103934665603ull, now = now_ns();
	struct session_use **pp, *s;
	const char *c;

	for (c = key; *c; c++)
		h = (h ^ (unsigned char)*c) * 1099511628211ull;
	pp = &gw.sessions[h % SESSION_BUCKETS];
	while ((s = *pp)) {
		if (!strcmp(s->key, key)) {
			s->last_ns = now;
			return s;
		}
		if (!s->u.active && now - s->last_ns > SESSION_IDLE_NS) {
			*pp = s->next;
			free(s->key);
			free(s);
			continue;
		}
		pp = &s->next;
	}
	s = xcalloc(1, sizeof(*s));
	s->key = xstrdup(key);
	s->last_ns = now;
	s->next = gw.sessions[h % SESSION_BUCKETS];
	gw.sessions[h % SESSION_BUCKETS] = s;
	return s;
}

static bool session_limited(void)
{
	const uint64_t *l = gw.cfg->llm_limits;

	return l[LLM_LIMIT_SESSION_CALLS] ||
	       l[LLM_LIMIT_SESSION_PROMPT_TOKENS] ||
	       l[LLM_LIMIT_SESSION_COMPLETION_TOKENS] ||
	       l[LLM_LIMIT_SESSION_CONCURRENT];
}

/* Which limit u has reached, or NULL. */
static const char *over(const struct usage *u, const uint64_t max[4])
{
	if (max[0] && u->calls >= max[0])
		return "calls";
	if (max[1] && u->prompt >= max[1])
		return "prompt tokens";
	if (max[2] && u->completion >= max[2])
		return "completion tokens";
	if (max[3] && u->active >= max[3])
		return "concurrent calls";
	return NULL;
}

/* ---- calls ---- */

struct call {
	int refs;
	struct request *req;
	struct gateway_peer *peer;
	char *session_key; /* NULL: no session limits */
	json_t *meta;
	json_t *session_uids;
	char *session_name;
	struct upstream *up;
	json_t *sent;
	bool stream_req;
	bool streaming;
	bool client_gone;
	bool too_big;
	bool paused;
	bool finished;
	long status;
	char ctype[128];
	struct buf body;
	struct sse_parser parser;
	struct sse_assembly *sse;
	char *held;
	size_t held_len;
	struct upstream_call *uc;
	char *up_url, *up_body;
	uint64_t start_ns, end_ns;
	int sock;
	int err; /* how the upstream call ended */
	char msg[256];
	struct call *tw_next; /* on the trace writer's queue */
};

/* Atomic: the engine's thread and the trace writer both hold calls. */
static void call_unref(struct call *c)
{
	if (__atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL))
		return;
	json_decref(c->meta);
	json_decref(c->session_uids);
	json_decref(c->sent);
	free(c->session_name);
	free(c->session_key);
	buf_release(&c->body);
	sse_parser_release(&c->parser);
	sse_assembly_free(c->sse);
	free(c->held);
	free(c->up_url);
	free(c->up_body);
	if (c->uc)
		upstream_call_put(c->uc);
	peer_unref(c->peer);
	free(c);
}

static void resume_cb(struct loop *loop, void *arg)
{
	struct call *c = arg;

	if (c->paused && !c->finished) {
		c->paused = false;
		upstream_call_pause(c->uc, false);
	}
	call_unref(c);
}

static void on_drained(void *arg)
{
	loop_post(gw.loop, resume_cb, arg);
}

/* After a write: a slow client holds the upstream back. */
static void maybe_pause(struct call *c)
{
	if (c->paused || c->client_gone ||
	    request_stream_pending(c->req) < STREAM_HIGH)
		return;
	c->paused = true;
	__atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
	upstream_call_pause(c->uc, true);
	request_stream_when_drained(c->req, STREAM_LOW, on_drained, c);
}

static void on_event(void *arg, const struct sse_event *ev)
{
	struct call *c = arg;

	if (ev->data && !strcmp(ev->data, "[DONE]")) {
		/* Sent once the trace is in. */
		free(c->held);
		c->held = xmalloc(ev->raw_len);
		memcpy(c->held, ev->raw, ev->raw_len);
		c->held_len = ev->raw_len;
		sse_assembly_add(c->sse, ev->data, ev->data_len);
		return;
	}
	if (ev->data)
		sse_assembly_add(c->sse, ev->data, ev->data_len);
	if (!c->client_gone)
		request_stream_write(c->req, ev->raw, ev->raw_len);
}

static void call_head(void *arg, long status, const char *ctype)
{
	struct call *c = arg;

	c->status = status;
	str_copy(c->ctype, sizeof(c->ctype), ctype);
	if (c->stream_req && status == 200 &&
	    str_starts_with(ctype, "text/event-stream")) {
		c->streaming = true;
		sse_parser_init(&c->parser, MAX_EVENT);
		c->sse = sse_assembly_new(MAX_RESPONSE);
		request_stream_start(c->req, 200, "text/event-stream");
	}
}

static void call_data(void *arg, const char *data, size_t len)
{
	struct call *c = arg;

	if (c->streaming) {
		if (sse_parser_feed(&c->parser, data, len, on_event, c) < 0 &&
		    !c->too_big) {
			c->too_big = true;
			upstream_call_cancel(c->uc);
		}
		maybe_pause(c);
		return;
	}
	if (c->body.len + len > MAX_RESPONSE) {
		if (!c->too_big) {
			c->too_big = true;
			upstream_call_cancel(c->uc);
		}
		return;
	}
	buf_add(&c->body, data, len);
}

/* Usage from the token ids when the upstream gave none (a stream without
 * include_usage). */
static json_t *usage_from_ids(const struct extract_fields *f)
{
	size_t p, n;

	if (!f->prompt_token_ids && !f->completion_token_ids)
		return NULL;
	p = f->prompt_token_ids ? json_array_size(f->prompt_token_ids) : 0;
	n = f->completion_token_ids ? json_array_size(f->completion_token_ids)
				    : 0;
	return json_pack("{s:I,s:I,s:I}", "prompt_tokens", (json_int_t)p,
			 "completion_tokens", (json_int_t)n, "total_tokens",
			 (json_int_t)(p + n));
}

static uint64_t usage_count(const json_t *usage, const char *key)
{
	json_t *v = json_object_get(usage, key);

	return json_is_integer(v) && json_integer_value(v) > 0
		       ? (uint64_t)json_integer_value(v)
		       : 0;
}

static void unwatch_client(struct call *c)
{
	if (c->sock < 0)
		return;
	loop_del_fd(gw.loop, c->sock);
	fd_close(&c->sock);
}

/* The HTTP layer keeps a reply's content type by pointer: upstreams'
 * types are kept here for good (a few distinct ones in practice). */
const char *gateway_content_type(const char *ctype)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static char *seen[32];
	const char *r = "application/octet-stream";
	size_t i;

	if (!ctype[0])
		return "application/json";
	pthread_mutex_lock(&lock);
	for (i = 0; i < ARRAY_SIZE(seen) && seen[i]; i++)
		if (!strcmp(seen[i], ctype))
			break;
	if (i < ARRAY_SIZE(seen)) {
		if (!seen[i])
			seen[i] = xstrdup(ctype);
		r = seen[i];
	}
	pthread_mutex_unlock(&lock);
	return r;
}

/* ---- the trace writer ----
 *
 * A finished call's trace is committed, and its answer's last byte sent,
 * on a thread of its own: the engine's thread never waits for SQLite, and
 * calls that end together share one transaction. */

#define TRACE_BATCH 64

static struct {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct call *head, **tail;
	bool started, stopping;
} tw = {.lock = PTHREAD_MUTEX_INITIALIZER,
	.cond = PTHREAD_COND_INITIALIZER,
	.tail = &tw.head};

/* What a finished call's trace and answer need, made on the writer. */
struct call_end {
	struct trace_rec rec;
	struct extract_fields f;
	json_t *resp, *usage;
	char why[512];
};

static void end_prepare(struct call *c, struct call_end *e)
{
	memset(e, 0, sizeof(*e));
	if (c->streaming)
		e->resp = sse_assembly_result(c->sse);
	else if (c->body.len)
		e->resp = json_loadb(c->body.data, c->body.len, 0, NULL);
	if (c->client_gone)
		snprintf(e->why, sizeof(e->why), "client disconnected");
	else if (c->too_big)
		snprintf(e->why, sizeof(e->why),
			 "the upstream's answer is larger than %u MiB",
			 MAX_RESPONSE >> 20);
	else if (c->err)
		snprintf(e->why, sizeof(e->why), "%s", c->msg);
	else if (c->status >= 400)
		snprintf(e->why, sizeof(e->why),
			 "the upstream answered HTTP %ld", c->status);
	if (e->resp)
		extract_fields(e->resp, &e->f);
	e->usage = e->f.usage ? json_incref(e->f.usage) : usage_from_ids(&e->f);
	e->rec.sandbox = c->peer ? c->peer->id : NULL;
	e->rec.session_uids = c->session_uids;
	e->rec.session_name = c->session_name;
	e->rec.metadata = c->meta;
	e->rec.labels = c->peer ? c->peer->labels : NULL;
	e->rec.upstream = c->up->name;
	e->rec.model = json_string_value(json_object_get(c->sent, "model"));
	e->rec.request = c->sent;
	e->rec.response = e->resp;
	e->rec.prompt_token_ids = e->f.prompt_token_ids;
	e->rec.completion_token_ids = e->f.completion_token_ids;
	e->rec.logprobs = e->f.logprobs;
	e->rec.usage = e->usage;
	e->rec.latency_ms = (double)(c->end_ns - c->start_ns) / 1e6;
	e->rec.status = (int)c->status;
	e->rec.error = e->why[0] ? e->why : NULL;
	e->rec.stream = c->stream_req;
}

/* After the commit: the counters, then the answer's end. */
static void end_finish(struct call *c, struct call_end *e, int64_t id)
{
	const char *why = e->why;
	uint64_t prompt = usage_count(e->usage, "prompt_tokens");
	uint64_t completion = usage_count(e->usage, "completion_tokens");

	if (id < 0)
		log_warn("cannot store the trace of a model call%s%s",
			 c->peer ? " of sandbox " : "",
			 c->peer ? c->peer->id : "");
	pthread_mutex_lock(&gw.lock);
	if (c->peer) {
		c->peer->u.active--;
		c->peer->u.prompt += prompt;
		c->peer->u.completion += completion;
	}
	if (c->session_key) {
		struct session_use *s = session_use(c->session_key);

		s->u.active--;
		s->u.prompt += prompt;
		s->u.completion += completion;
	}
	if (why[0])
		gw.failures++;
	gw.prompt_tokens += prompt;
	gw.completion_tokens += completion;
	gw.active--;
	pthread_mutex_unlock(&gw.lock);

	if (c->streaming) {
		if (!c->err && !c->too_big) {
			if (c->held)
				request_stream_write(c->req, c->held,
						     c->held_len);
		} else if (!c->client_gone) {
			json_t *ej =
				json_pack("{s:{s:s,s:s,s:s}}", "error", "code",
					  "upstream_error", "message", why,
					  "type", "api_error");
			char *js = json_dumps(ej, JSON_COMPACT);
			struct buf b;

			buf_init(&b);
			buf_addf(&b, "data: %s\n\n", js);
			request_stream_write(c->req, b.data, b.len);
			buf_release(&b);
			free(js);
			json_decref(ej);
		}
		request_stream_end(c->req);
	} else if (!c->err && !c->too_big) {
		request_reply_raw(c->req, (unsigned)c->status,
				  gateway_content_type(c->ctype),
				  c->body.len ? c->body.data : "", c->body.len);
	} else if (c->err == -ETIMEDOUT) {
		gw_error(c->req, 504, "upstream_timeout",
			 "upstream '%s' did not answer in time: %s",
			 c->up->name, why);
	} else {
		gw_error(c->req, 502, "upstream_unavailable",
			 "upstream '%s' failed: %s", c->up->name, why);
	}
	request_put(c->req);
	c->req = NULL;
	json_decref(e->usage);
	json_decref(e->resp);
	extract_fields_release(&e->f);
	call_unref(c);
}

static void *trace_writer(void *arg)
{
	struct call_end *ends = xcalloc(TRACE_BATCH, sizeof(*ends));
	const struct trace_rec *recs[TRACE_BATCH];
	struct call *batch[TRACE_BATCH];
	int64_t ids[TRACE_BATCH];

	for (;;) {
		size_t n = 0, i;

		pthread_mutex_lock(&tw.lock);
		while (!tw.head && !tw.stopping)
			pthread_cond_wait(&tw.cond, &tw.lock);
		while (tw.head && n < TRACE_BATCH) {
			batch[n++] = tw.head;
			tw.head = tw.head->tw_next;
		}
		if (!tw.head)
			tw.tail = &tw.head;
		pthread_mutex_unlock(&tw.lock);
		if (!n)
			break; /* stopping, and nothing left */
		for (i = 0; i < n; i++) {
			end_prepare(batch[i], &ends[i]);
			recs[i] = &ends[i].rec;
		}
		if (!gw.traces || traces_add_many(gw.traces, recs, n, ids))
			for (i = 0; i < n; i++)
				ids[i] = -EIO;
		for (i = 0; i < n; i++)
			end_finish(batch[i], &ends[i], ids[i]);
	}
	free(ends);
	return NULL;
}

/* The engine's part of a call's end: the rest is the writer's. */
static void call_done(void *arg, int err, const char *msg)
{
	struct call *c = arg;

	c->finished = true;
	c->end_ns = now_ns();
	unwatch_client(c);
	c->err = err;
	str_copy(c->msg, sizeof(c->msg), msg);
	pthread_mutex_lock(&tw.lock);
	c->tw_next = NULL;
	*tw.tail = c;
	tw.tail = &c->tw_next;
	pthread_cond_signal(&tw.cond);
	pthread_mutex_unlock(&tw.lock);
}

static const struct upstream_call_ops call_ops = {
	.head = call_head,
	.data = call_data,
	.done = call_done,
};

static void on_client_hup(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct call *c = arg;

	unwatch_client(c);
	if (c->finished || c->client_gone)
		return;
	c->client_gone = true;
	upstream_call_cancel(c->uc);
}

static void begin_cb(struct loop *loop, void *arg)
{
	struct call *c = arg;
	struct upstream_request ur = {.method = "POST", .key = c->up->key};

	if (c->sock >= 0 &&
	    loop_add_fd(loop, c->sock, EPOLLRDHUP, on_client_hup, c) < 0)
		fd_close(&c->sock);
	ur.url = c->up_url;
	ur.body = c->up_body;
	ur.len = c->up_body ? strlen(c->up_body) : 0;
	c->up_body = NULL; /* the engine's */
	c->uc = upstream_call_start(gw.eng, &ur, &call_ops, c);
}

/* ---- routing ---- */

static struct upstream *find_upstream(const char *name, size_t n)
{
	size_t i;

	for (i = 0; i < gw.nups; i++)
		if (strlen(gw.ups[i].name) == n &&
		    !strncmp(gw.ups[i].name, name, n))
			return &gw.ups[i];
	return NULL;
}

static bool lists_model(const struct upstream *u, const char *model)
{
	size_t i;
	json_t *m;

	json_array_foreach(u->models, i, m)
	{
		const char *id = json_string_value(json_object_get(m, "id"));

		if (id && !strcmp(id, model))
			return true;
	}
	return false;
}

/* The upstream for model, with the model to send it, and whether the
 * model named its upstream; under gw.lock. */
static struct upstream *route_model(const char *model, const char **sent,
				    bool *named)
{
	const char *slash = strchr(model, '/');
	struct upstream *u;
	size_t i;

	*sent = model;
	*named = false;
	if (slash && slash[1] && (u = find_upstream(model, slash - model))) {
		*sent = slash + 1;
		*named = true;
		return u;
	}
	for (i = 0; i < gw.nups; i++)
		if (lists_model(&gw.ups[i], model))
			return &gw.ups[i];
	return gw.def;
}

struct models_fetch {
	struct upstream *u;
	struct buf body;
	long status;
};

static void models_head(void *arg, long status, const char *ctype)
{
	((struct models_fetch *)arg)->status = status;
}

static void models_data(void *arg, const char *data, size_t len)
{
	struct models_fetch *m = arg;

	if (m->body.len + len <= MAX_RESPONSE)
		buf_add(&m->body, data, len);
}

static void models_done(void *arg, int err, const char *msg)
{
	struct models_fetch *m = arg;
	json_t *doc = NULL, *data = NULL;
	struct models_wait *w = NULL;

	if (!err && m->status == 200)
		doc = json_loadb(m->body.data, m->body.len, 0, NULL);
	data = json_object_get(doc, "data");
	if (err || m->status != 200 || !json_is_array(data))
		log_debug("upstream '%s': no model list (%s)", m->u->name,
			  err ? msg : "not an OpenAI list");
	pthread_mutex_lock(&gw.lock);
	if (json_is_array(data)) {
		json_decref(m->u->models);
		m->u->models = json_incref(data);
	}
	if (--gw.refresh_pending == 0) {
		gw.refreshing = false;
		gw.models_ns = now_ns();
		w = gw.waiters;
		gw.waiters = NULL;
	}
	pthread_mutex_unlock(&gw.lock);
	json_decref(doc);
	buf_release(&m->body);
	free(m);
	while (w) {
		struct models_wait *next = w->next;

		w->fn(w->arg);
		free(w);
		w = next;
	}
}

static const struct upstream_call_ops models_ops = {
	.head = models_head,
	.data = models_data,
	.done = models_done,
};

/* Fetches every upstream's model list, then calls fn(arg) (on the
 * engine's thread; fn may be NULL: a refresh in the background). */
static void models_refresh(void (*fn)(void *arg), void *arg)
{
	struct models_wait *w = fn ? xmalloc(sizeof(*w)) : NULL;
	bool start;
	size_t i;

	pthread_mutex_lock(&gw.lock);
	if (w) {
		w->fn = fn;
		w->arg = arg;
		w->next = gw.waiters;
		gw.waiters = w;
	}
	start = !gw.refreshing;
	if (start) {
		gw.refreshing = true;
		gw.refresh_pending = (unsigned)gw.nups;
	}
	pthread_mutex_unlock(&gw.lock);
	if (!start)
		return;
	for (i = 0; i < gw.nups; i++) {
		struct models_fetch *m = xcalloc(1, sizeof(*m));
		struct upstream_request ur = {.method = "GET",
					      .key = gw.ups[i].key};
		char *url = xstrfmt("%s/models", gw.ups[i].base);

		m->u = &gw.ups[i];
		buf_init(&m->body);
		ur.url = url;
		/* The engine keeps its own reference; m may be gone by the
		 * time this returns. */
		upstream_call_put(
			upstream_call_start(gw.eng, &ur, &models_ops, m));
		free(url);
	}
}

/* ---- requests ---- */

/* A call waiting to be routed, or routed. */
struct pending {
	struct request *req;
	struct gateway_peer *peer;
	json_t *meta;
	json_t *body;
	const char *kind; /* "chat" or "completions" */
	bool refreshed;
};

static void pending_free(struct pending *p)
{
	json_decref(p->meta);
	json_decref(p->body);
	free(p);
}

static void fail_pending(struct pending *p, unsigned status, const char *code,
			 const char *msg)
{
	gw_error(p->req, status, code, "%s", msg);
	request_put(p->req);
	peer_unref(p->peer);
	pending_free(p);
}

static void start_call(struct pending *p, struct upstream *u,
		       const char *model);
static void route_pending(struct pending *p);
static void serve_models(struct request *req, struct gateway_peer *peer,
			 const char *path);

static void route_after_refresh(void *arg)
{
	route_pending(arg);
}

static void route_pending(struct pending *p)
{
	const char *model =
		json_string_value(json_object_get(p->body, "model"));
	const char *sent;
	struct upstream *u;
	bool never, stale, named;

	pthread_mutex_lock(&gw.lock);
	u = route_model(model, &sent, &named);
	never = gw.models_ns == 0;
	stale = now_ns() - gw.models_ns > MODELS_FRESH_NS;
	pthread_mutex_unlock(&gw.lock);
	/* The lists decide where a model goes: wait for them the first
	 * time, and when nothing serves the model; else refresh them in the
	 * background now and then. */
	if (!named && !p->refreshed && (never || (!u && stale))) {
		p->refreshed = true;
		models_refresh(route_after_refresh, p);
		return;
	}
	if (!named && stale)
		models_refresh(NULL, NULL);
	if (!u) {
		char msg[300];

		snprintf(msg, sizeof(msg),
			 "no upstream serves model '%.128s' (name one as "
			 "'UPSTREAM/model'; GET /v1/models lists them)",
			 model);
		fail_pending(p, 404, "model_not_found", msg);
		return;
	}
	start_call(p, u, sent);
}

static void start_call(struct pending *p, struct upstream *u, const char *model)
{
	struct call *c = xcalloc(1, sizeof(*c));
	const uint64_t *lim = gw.cfg->llm_limits;
	const char *reached = NULL, *whose = "";
	json_t *uids = json_object_get(p->meta, "session_uids");
	json_t *name = json_object_get(p->meta, "session_name");
	const char *p_kind;

	c->refs = 1;
	c->sock = -1;
	c->req = p->req;
	c->peer = p->peer;
	c->up = u;
	c->meta = p->meta ? json_incref(p->meta) : json_object();
	c->session_uids = json_array();
	if (json_is_array(uids)) {
		size_t i;
		json_t *x;

		json_array_foreach(uids, i, x) if (json_is_string(x))
			json_array_append(c->session_uids, x);
	}
	if (json_is_string(name))
		c->session_name = xstrdup(json_string_value(name));
	else if (p->peer && p->peer->session[0])
		c->session_name = xstrdup(p->peer->session);
	if (session_limited()) {
		if (json_array_size(c->session_uids))
			c->session_key = xstrdup(json_string_value(
				json_array_get(c->session_uids, 0)));
		else if (c->session_name)
			c->session_key = xstrdup(c->session_name);
	}
	c->sent = json_deep_copy(p->body);
	json_object_set_new(c->sent, "model", json_string(model));
	if (!gw.cfg->llm_no_token_ids &&
	    !json_object_get(c->sent, "return_token_ids"))
		json_object_set_new(c->sent, "return_token_ids", json_true());
	if (!gw.cfg->llm_no_logprobs && !json_object_get(c->sent, "logprobs"))
		json_object_set_new(c->sent, "logprobs",
				    !strcmp(p->kind, "chat") ? json_true()
							     : json_integer(1));
	c->stream_req = json_is_true(json_object_get(c->sent, "stream"));
	buf_init(&c->body);

	/* Limits: checked and the call counted, at once. */
	pthread_mutex_lock(&gw.lock);
	if (c->peer && (reached = over(&c->peer->u, c->peer->max)))
		whose = "this sandbox";
	if (!reached && c->session_key) {
		struct session_use *s = session_use(c->session_key);
		uint64_t smax[4] = {lim[LLM_LIMIT_SESSION_CALLS],
				    lim[LLM_LIMIT_SESSION_PROMPT_TOKENS],
				    lim[LLM_LIMIT_SESSION_COMPLETION_TOKENS],
				    lim[LLM_LIMIT_SESSION_CONCURRENT]};

		reached = over(&s->u, smax);
		if (reached)
			whose = "this session";
		else {
			s->u.calls++;
			s->u.active++;
		}
	}
	if (!reached && c->peer) {
		c->peer->u.calls++;
		c->peer->u.active++;
	}
	if (!reached) {
		gw.calls++;
		gw.active++;
	} else {
		gw.rejected++;
	}
	pthread_mutex_unlock(&gw.lock);
	if (reached) {
		char msg[200];

		snprintf(msg, sizeof(msg),
			 "%s has used up its model %s (a gateway limit)", whose,
			 reached);
		c->peer = NULL; /* still p's */
		free(c->session_key);
		c->session_key = NULL;
		call_unref(c);
		fail_pending(p, 429, "limit_exceeded", msg);
		return;
	}
	p->peer = NULL; /* now c's */
	p_kind = p->kind;
	pending_free(p);

	c->start_ns = now_ns();
	c->sock = request_dup_socket(c->req);
	c->up_body = json_dumps(c->sent, JSON_COMPACT);
	c->up_url = xstrfmt("%s/%s", u->base,
			    !strcmp(p_kind, "chat") ? "chat/completions"
						    : "completions");
	/* Started on the engine's thread: its callbacks find c->uc set. */
	loop_post(gw.loop, begin_cb, c);
}

/* GET /v1/models: every upstream's list, and each model again as
 * "UPSTREAM/id". */
static void models_reply(void *arg)
{
	struct request *req = arg;
	json_t *data = json_array();
	size_t i, j;
	json_t *m;

	pthread_mutex_lock(&gw.lock);
	for (i = 0; i < gw.nups; i++) {
		json_array_foreach(gw.ups[i].models, j, m)
		{
			const char *id =
				json_string_value(json_object_get(m, "id"));
			json_t *alias;

			if (!json_is_object(m) || !id)
				continue;
			json_array_append(data, m);
			alias = json_deep_copy(m);
			json_object_set_new(
				alias, "id",
				json_sprintf("%s/%s", gw.ups[i].name, id));
			json_array_append_new(data, alias);
		}
	}
	pthread_mutex_unlock(&gw.lock);
	request_reply(req, 200,
		      json_pack("{s:s,s:o}", "object", "list", "data", data));
	request_put(req);
}

/* Serves path ("/v1/...", or "/meta/<slug>/v1/...") for peer (NULL: a
 * call from the host). */
/* A host route of peer's for path, or NULL. */
static const struct gateway_route *host_route(struct gateway_peer *peer,
					      const char *path)
{
	size_t i;

	for (i = 0; peer && i < peer->nroutes; i++)
		if (str_starts_with(path, peer->routes[i].prefix))
			return &peer->routes[i];
	return NULL;
}

/* Forwards a sandbox's request on a host route, saying which sandbox. */
static void serve_host_route(struct request *req, struct gateway_peer *peer,
			     const struct gateway_route *r, const char *path)
{
	char **headers = xcalloc(3, sizeof(char *));
	char *labels = json_dumps(peer->labels, JSON_COMPACT);
	const char *q = request_query(req);
	char *url, what[200];

	headers[0] = xstrfmt("X-Sbx-Sandbox: %s", peer->id);
	headers[1] = xstrfmt("X-Sbx-Labels: %s", labels ? labels : "{}");
	free(labels);
	url = xstrfmt("%s%s%s%s", r->target, path, q && *q ? "?" : "",
		      q && *q ? q : "");
	snprintf(what, sizeof(what), "host route '%s'", r->prefix);
	forward_start(request_defer(req), url, -1, headers, what);
	free(url);
}

static void serve(struct request *req, struct gateway_peer *peer,
		  const char *path)
{
	const struct gateway_route *hr;

	/* rLLM's result routes, in sandboxes and under /llm alike. */
	if (str_starts_with(path, "/rllm/results/")) {
		rllm_results_route(req, path);
		return;
	}
	hr = host_route(peer, path);
	if (hr) {
		serve_host_route(req, peer, hr, path);
		return;
	}
	if (peer && !peer->llm) {
		gw_error(req, 404, "not_found",
			 "this sandbox's gateway has no route '%.200s' (no "
			 "model routes: it was created without \"llm\")",
			 path);
		return;
	}
	serve_models(req, peer, path);
}

static void serve_models(struct request *req, struct gateway_peer *peer,
			 const char *path)
{
	const char *method = request_method(req);
	json_t *meta = NULL, *body = NULL;
	const char *kind = NULL;
	struct pending *p;
	json_error_t jerr;
	const char *data;
	char err[256];
	size_t len;

	if (!gw.nups) {
		gw_error(req, 503, "no_upstream",
			 "this server has no model upstream (sbx serve "
			 "--upstream NAME=URL)");
		return;
	}
	if (str_starts_with(path, "/meta/")) {
		const char *slug = path + 6;
		size_t n = strcspn(slug, "/");

		meta = slug_decode(slug, n, err, sizeof(err));
		if (!meta) {
			gw_error(req, 400, "bad_slug", "%s", err);
			return;
		}
		path = slug + n;
	}
	if (!strcmp(path, "/v1/models")) {
		json_decref(meta);
		if (strcmp(method, "GET")) {
			gw_error(req, 405, "method_not_allowed",
				 "'%s' is not allowed on /v1/models (allowed: "
				 "GET)",
				 method);
			return;
		}
		models_refresh(models_reply, request_defer(req));
		return;
	}
	if (!strcmp(path, "/v1/chat/completions"))
		kind = "chat";
	else if (!strcmp(path, "/v1/completions"))
		kind = "completions";
	if (!kind) {
		json_decref(meta);
		gw_error(req, 404, "not_found",
			 "the model gateway has no route '%.200s' (it serves "
			 "/v1/chat/completions, /v1/completions and "
			 "/v1/models)",
			 path);
		return;
	}
	if (strcmp(method, "POST")) {
		json_decref(meta);
		gw_error(req, 405, "method_not_allowed",
			 "'%s' is not allowed on %s (allowed: POST)", method,
			 path);
		return;
	}
	data = request_body(req, &len);
	body = data && len ? json_loadb(data, len, 0, &jerr) : NULL;
	if (!body) {
		json_decref(meta);
		if (!len)
			gw_error(req, 400, "bad_json",
				 "the request has no body (a JSON object)");
		else
			gw_error(req, 400, "bad_json",
				 "the body is not JSON: %s (line %d, column "
				 "%d)",
				 jerr.text, jerr.line, jerr.column);
		return;
	}
	if (!json_is_object(body) ||
	    !json_is_string(json_object_get(body, "model")) ||
	    !json_string_length(json_object_get(body, "model"))) {
		json_decref(meta);
		gw_error(req, 400, "bad_request",
			 json_is_object(body)
				 ? "the request has no 'model' (a string)"
				 : "the body must be a JSON object");
		json_decref(body);
		return;
	}
	if (json_object_get(body, "stream") &&
	    !json_is_boolean(json_object_get(body, "stream"))) {
		json_decref(meta);
		json_decref(body);
		gw_error(req, 400, "bad_request", "'stream' must be a boolean");
		return;
	}
	p = xcalloc(1, sizeof(*p));
	p->req = request_defer(req);
	p->peer = peer;
	if (peer)
		peer_ref(peer);
	p->meta = meta;
	p->body = body;
	p->kind = kind;
	route_pending(p);
}

void gateway_route(struct request *req)
{
	serve(req, request_peer(req), request_path(req));
}

void llm_route(struct request *req)
{
	serve(req, NULL, request_path(req) + 4); /* past "/llm" */
}

/* ---- traces ---- */

/* Unix seconds from "1733133600.5" or an ISO 8601 time with a zone. */
static int parse_time(const char *s, double *out)
{
	struct tm tm;
	char *end;
	double frac = 0;
	const char *rest;

	errno = 0;
	*out = strtod(s, &end);
	if (!errno && end != s && !*end && *out >= 0)
		return 0;
	memset(&tm, 0, sizeof(tm));
	rest = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!rest)
		return -EINVAL;
	if (*rest == '.') {
		frac = strtod(rest, &end);
		rest = end;
	}
	if (strcmp(rest, "Z") && strcmp(rest, "+00:00") && *rest)
		return -EINVAL;
	*out = (double)timegm(&tm) + frac;
	return 0;
}

struct traces_out {
	struct request *req;
	bool ndjson;
	bool first;
	struct buf chunk;
};

static int trace_out(void *arg, json_t *trace)
{
	struct traces_out *o = arg;
	char *s = json_dumps(trace, JSON_COMPACT);

	if (!s)
		return 0;
	if (!o->ndjson && !o->first)
		buf_adds(&o->chunk, ",");
	buf_adds(&o->chunk, s);
	if (o->ndjson)
		buf_adds(&o->chunk, "\n");
	o->first = false;
	free(s);
	if (o->chunk.len >= 256 * 1024) {
		request_stream_write(o->req, o->chunk.data, o->chunk.len);
		buf_reset(&o->chunk);
	}
	return request_stream_closed(o->req) ? 1 : 0;
}

static void traces_list(struct request *req)
{
	struct traces_query q = {0};
	const char *accept = request_header(req, "Accept");
	const char *v;
	struct traces_out o = {.first = true};
	uint64_t n;
	char err[256];

	q.session = request_arg(req, "session");
	q.sandbox = request_arg(req, "sandbox");
	q.limit = TRACES_DEFAULT_LIMIT;
	if ((v = request_arg(req, "since")) && parse_time(v, &q.since)) {
		request_error(req, 400, "bad_request",
			      "'since' must be unix seconds or an ISO 8601 "
			      "time, not '%.64s'",
			      v);
		return;
	}
	if ((v = request_arg(req, "after"))) {
		if (parse_u64(v, &n) || n > INT64_MAX) {
			request_error(req, 400, "bad_request",
				      "'after' must be a trace id");
			return;
		}
		q.after = (int64_t)n;
	}
	if ((v = request_arg(req, "limit"))) {
		if (parse_u64(v, &n) || !n || n > TRACES_MAX_LIMIT) {
			request_error(req, 400, "bad_request",
				      "'limit' must be 1 to %d",
				      TRACES_MAX_LIMIT);
			return;
		}
		q.limit = (unsigned)n;
	}
	o.ndjson = accept && strstr(accept, "application/x-ndjson");
	o.req = request_defer(req);
	buf_init(&o.chunk);
	request_stream_start(o.req, 200,
			     o.ndjson ? "application/x-ndjson"
				      : "application/json");
	if (!o.ndjson)
		buf_adds(&o.chunk, "{\"traces\":[");
	if (gw.traces &&
	    traces_each(gw.traces, &q, trace_out, &o, err, sizeof(err)))
		log_warn("cannot read traces: %s", err);
	if (!o.ndjson)
		buf_adds(&o.chunk, "]}");
	request_stream_write(o.req, o.chunk.data, o.chunk.len);
	request_stream_end(o.req);
	buf_release(&o.chunk);
	request_put(o.req);
}

void traces_route(struct request *req)
{
	const char *path = request_path(req);
	const char *method = request_method(req);
	uint64_t id;

	if (!strcmp(path, "/v1/traces")) {
		if (!strcmp(method, "GET")) {
			traces_list(req);
		} else if (!strcmp(method, "DELETE")) {
			const char *session = request_arg(req, "session");
			const char *sandbox = request_arg(req, "sandbox");
			int64_t n;

			if (!session && !sandbox) {
				request_error(req, 400, "bad_request",
					      "say which traces to delete: "
					      "?session=... and/or "
					      "?sandbox=...");
				return;
			}
			n = gw.traces
				    ? traces_delete(gw.traces, session, sandbox)
				    : 0;
			if (n < 0) {
				request_error(req, 500, "store_error",
					      "cannot delete traces");
				return;
			}
			request_reply(
				req, 200,
				json_pack("{s:I}", "deleted", (json_int_t)n));
		} else {
			request_error(req, 405, "method_not_allowed",
				      "'%s' is not allowed on /v1/traces "
				      "(allowed: GET, DELETE)",
				      method);
		}
		return;
	}
	if (!str_starts_with(path, "/v1/traces/") ||
	    parse_u64(path + 11, &id) || !id || id > INT64_MAX) {
		request_error(req, 404, "not_found", "no route '%.200s'", path);
		return;
	}
	if (strcmp(method, "GET")) {
		request_error(req, 405, "method_not_allowed",
			      "'%s' is not allowed on a trace (allowed: GET)",
			      method);
		return;
	}
	{
		json_t *t =
			gw.traces ? traces_get(gw.traces, (int64_t)id) : NULL;

		if (!t)
			request_error(req, 404, "not_found", "no trace %llu",
				      (unsigned long long)id);
		else
			request_reply(req, 200, t);
	}
}

/* ---- health, start and stop ---- */

void gateway_metrics(struct buf *b)
{
	uint64_t v[6];

	pthread_mutex_lock(&gw.lock);
	v[0] = gw.calls;
	v[1] = gw.failures;
	v[2] = gw.rejected;
	v[3] = gw.active;
	v[4] = gw.prompt_tokens;
	v[5] = gw.completion_tokens;
	pthread_mutex_unlock(&gw.lock);
	buf_addf(b,
		 "# HELP sbx_llm_calls_total Model calls sent upstream by the "
		 "gateway.\n# TYPE sbx_llm_calls_total counter\n"
		 "sbx_llm_calls_total %llu\n"
		 "# HELP sbx_llm_failed_calls_total Model calls that ended in "
		 "an error (the upstream's, a timeout, a hang-up).\n"
		 "# TYPE sbx_llm_failed_calls_total counter\n"
		 "sbx_llm_failed_calls_total %llu\n"
		 "# HELP sbx_llm_limited_calls_total Model calls refused by a "
		 "sandbox or session limit.\n"
		 "# TYPE sbx_llm_limited_calls_total counter\n"
		 "sbx_llm_limited_calls_total %llu\n"
		 "# HELP sbx_llm_active_calls Model calls under way.\n"
		 "# TYPE sbx_llm_active_calls gauge\n"
		 "sbx_llm_active_calls %llu\n"
		 "# HELP sbx_llm_tokens_total Tokens of traced calls.\n"
		 "# TYPE sbx_llm_tokens_total counter\n"
		 "sbx_llm_tokens_total{kind=\"prompt\"} %llu\n"
		 "sbx_llm_tokens_total{kind=\"completion\"} %llu\n",
		 (unsigned long long)v[0], (unsigned long long)v[1],
		 (unsigned long long)v[2], (unsigned long long)v[3],
		 (unsigned long long)v[4], (unsigned long long)v[5]);
}

struct upstream_engine *gateway_engine(void)
{
	return gw.eng;
}

struct loop *gateway_loop(void)
{
	return gw.loop;
}

json_t *gateway_health(void)
{
	json_t *ups = json_array();
	uint64_t calls, failures;
	size_t i;

	if (!gw.cfg) {
		json_decref(ups);
		return json_null();
	}
	pthread_mutex_lock(&gw.lock);
	calls = gw.calls;
	failures = gw.failures;
	pthread_mutex_unlock(&gw.lock);
	for (i = 0; i < gw.nups; i++)
		json_array_append_new(
			ups, json_pack("{s:s,s:s,s:b,s:b}", "name",
				       gw.ups[i].name, "url", gw.ups[i].base,
				       "key", gw.ups[i].key != NULL, "default",
				       &gw.ups[i] == gw.def));
	return json_pack("{s:o,s:i,s:b,s:I,s:I,s:I}", "upstreams", ups, "port",
			 (int)gw.cfg->llm_port, "default_on",
			 gw.cfg->llm_default, "traces",
			 (json_int_t)(gw.traces ? traces_count(gw.traces) : 0),
			 "calls", (json_int_t)calls, "failed_calls",
			 (json_int_t)failures);
}

int gateway_start(const struct server_config *cfg)
{
	struct upstream_engine_config ec = {
		.max_connections = cfg->upstream_connections,
		.connect_timeout_ms = cfg->upstream_connect_ms,
		.read_timeout_ms = cfg->upstream_read_ms,
		.retries = cfg->upstream_retries,
	};
	char err[256], *dir = NULL, *path = NULL;
	size_t i;

	gw.cfg = cfg;
	gw.nups = cfg->nupstreams;
	gw.ups = xcalloc(gw.nups ? gw.nups : 1, sizeof(*gw.ups));
	for (i = 0; i < gw.nups; i++) {
		const struct server_upstream *su = &cfg->upstreams[i];
		struct upstream *u = &gw.ups[i];
		size_t n = strlen(su->url);

		while (n && su->url[n - 1] == '/')
			n--;
		u->name = xstrdup(su->name);
		u->base = xstrndup(su->url, n);
		if (su->key_env) {
			const char *k = getenv(su->key_env);

			if (!k || !*k) {
				fprintf(stderr,
					"sbx serve: upstream '%s': its key's "
					"environment variable '%s' is not "
					"set\n",
					su->name, su->key_env);
				return 1;
			}
			u->key = xstrdup(k);
		}
	}
	if (cfg->default_upstream) {
		gw.def = find_upstream(cfg->default_upstream,
				       strlen(cfg->default_upstream));
		if (!gw.def) {
			fprintf(stderr,
				"sbx serve: --default-upstream '%s' is not one "
				"of the --upstream names\n",
				cfg->default_upstream);
			return 1;
		}
	} else if (gw.nups == 1) {
		gw.def = &gw.ups[0];
	}
	if (cfg->llm_default && !gw.nups) {
		fprintf(stderr, "sbx serve: --llm needs at least one "
				"--upstream NAME=URL\n");
		return 1;
	}
	gw.eng = upstream_engine_new(&ec, err, sizeof(err));
	if (!gw.eng) {
		fprintf(stderr, "sbx serve: %s\n", err);
		return 1;
	}
	gw.loop = upstream_engine_loop(gw.eng);
	gw.accepting = true;
	if (pthread_create(&tw.thread, NULL, trace_writer, NULL)) {
		fprintf(stderr, "sbx serve: cannot start the trace writer\n");
		return 1;
	}
	tw.started = true;
	if (!gw.nups)
		return 0;
	/* Traces are kept only where there is a gateway to make them. */
	dir = server_state_dir(cfg);
	path = xstrfmt("%s/sbx.db", dir);
	gw.traces = traces_open(path, err, sizeof(err));
	if (!gw.traces) {
		fprintf(stderr,
			"sbx serve: cannot open the trace store '%s': "
			"%s (choose another with --state-dir)\n",
			path, err);
		free(dir);
		free(path);
		return 1;
	}
	log_info("model gateway: %zu upstream%s, traces in %s", gw.nups,
		 gw.nups == 1 ? "" : "s", path);
	free(dir);
	free(path);
	return 0;
}

static void stop_accepting_cb(struct loop *loop, void *arg)
{
	pthread_mutex_lock(&gw.lock);
	gw.accepting = false;
	pthread_mutex_unlock(&gw.lock);
}

void gateway_stop_accepting(void)
{
	if (!gw.loop)
		return;
	loop_post(gw.loop, stop_accepting_cb, NULL);
	/* Calls under way end now with an error, rather than hold the
	 * shutdown for as long as a model takes. */
	upstream_engine_stop_calls(gw.eng);
}

void gateway_stop(void)
{
	size_t i, b;

	/* Calls end (cancelled), then their traces and answers. */
	upstream_engine_free(gw.eng);
	gw.eng = NULL;
	gw.loop = NULL;
	if (tw.started) {
		pthread_mutex_lock(&tw.lock);
		tw.stopping = true;
		pthread_cond_signal(&tw.cond);
		pthread_mutex_unlock(&tw.lock);
		pthread_join(tw.thread, NULL);
		tw.started = false;
	}
	traces_close(gw.traces);
	gw.traces = NULL;
	for (i = 0; i < gw.nups; i++) {
		free(gw.ups[i].name);
		free(gw.ups[i].base);
		if (gw.ups[i].key)
			explicit_bzero(gw.ups[i].key, strlen(gw.ups[i].key));
		free(gw.ups[i].key);
		json_decref(gw.ups[i].models);
	}
	free(gw.ups);
	gw.ups = NULL;
	gw.nups = 0;
	for (b = 0; b < SESSION_BUCKETS; b++)
		while (gw.sessions[b]) {
			struct session_use *s = gw.sessions[b];

			gw.sessions[b] = s->next;
			free(s->key);
			free(s);
		}
}

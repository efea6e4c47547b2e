/*
 * The upstream engine: one thread running a struct loop that drives a
 * libcurl multi handle through its socket and timer callbacks. Calls are
 * started, paused and cancelled from any thread by posting to that loop;
 * everything else about a call happens on the engine's thread.
 *
 * A call is one or more attempts (one easy handle each). An attempt whose
 * connection fails, or whose answer is a 5xx, before anything of it was
 * handed on, is followed by another after a backoff, up to the retries
 * configured. The call's head() is given only for the attempt that is
 * kept, so a caller never sees a response it must take back.
 */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "base/log.h"
#include "base/loop.h"
#include "base/util.h"
#include "llm/upstream.h"
#include "base/banned.h"

#define BACKOFF_MS 100
#define BACKOFF_MAX_MS 2000

struct upstream_engine {
	struct upstream_engine_config cfg;
	struct loop *loop;
	pthread_t thread;
	CURLM *multi;
	int timer_fd;
	struct upstream_call *calls; /* live, on the engine's thread */
	bool stopping;
};

struct upstream_call {
	int refs;
	struct upstream_engine *e;
	CURL *easy;
	struct curl_slist *headers;
	char *url, *method, *key, *body, *ctype_out;
	char **headers_in;
	size_t len;
	int sock; /* the caller's socket until curl takes it (-2), or -1 */
	bool fresh;
	unsigned retries;
	const struct upstream_call_ops *ops;
	void *arg;
	unsigned attempts;
	bool head_sent; /* head() given for this attempt */
	bool discard;	/* this attempt is a 5xx that will be retried */
	bool finished;	/* done() given */
	bool paused;
	int retry_fd;
	long status;
	char ctype[128];
	char errbuf[CURL_ERROR_SIZE];
	struct upstream_call *prev, *next;
};

static void call_get(struct upstream_call *c)
{
	__atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
}

void upstream_call_put(struct upstream_call *c)
{
	if (!c || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL))
		return;
	free(c->url);
	free(c->method);
	free(c->key);
	free(c->body);
	free(c->ctype_out);
	for (char **h = c->headers_in; h && *h; h++)
		free(*h);
	free(c->headers_in);
	if (c->sock >= 0)
		close(c->sock);
	free(c);
}

unsigned upstream_call_attempts(const struct upstream_call *c)
{
	return __atomic_load_n(&c->attempts, __ATOMIC_RELAXED);
}

static void easy_drop(struct upstream_call *c)
{
	if (c->easy) {
		curl_multi_remove_handle(c->e->multi, c->easy);
		curl_easy_cleanup(c->easy);
		c->easy = NULL;
	}
	curl_slist_free_all(c->headers);
	c->headers = NULL;
}

/* Gives done() once and lets the call go. */
static void finish(struct upstream_call *c, int err, const char *msg)
{
	struct upstream_engine *e = c->e;

	if (c->finished)
		return;
	c->finished = true;
	easy_drop(c);
	if (c->retry_fd >= 0) {
		loop_del_fd(e->loop, c->retry_fd);
		fd_close(&c->retry_fd);
	}
	if (c->prev)
		c->prev->next = c->next;
	else if (e->calls == c)
		e->calls = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	c->ops->done(c->arg, err, msg ? msg : "");
	upstream_call_put(c); /* the engine's reference */
}

static size_t on_header(char *line, size_t size, size_t n, void *arg)
{
	struct upstream_call *c = arg;
	size_t len = size * n;
	long code = 0;

	if (len >= 5 && !strncmp(line, "HTTP/", 5)) {
		c->ctype[0] = '\0';
		return len;
	}
	if (len > 13 && !strncasecmp(line, "content-type:", 13)) {
		const char *v = line + 13;
		size_t vl = len - 13;

		while (vl && (*v == ' ' || *v == '\t'))
			v++, vl--;
		while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' ||
			      v[vl - 1] == ' '))
			vl--;
		if (vl >= sizeof(c->ctype))
			vl = sizeof(c->ctype) - 1;
		memcpy(c->ctype, v, vl);
		c->ctype[vl] = '\0';
		return len;
	}
	if (!(len <= 2 && (line[0] == '\r' || line[0] == '\n')))
		return len;
	/* The end of a header block. */
	curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &code);
	if (code < 200)
		return len; /* 100 Continue and friends */
	c->status = code;
	if (code >= 500 && c->attempts <= c->retries && !c->e->stopping) {
		c->discard = true;
		return len;
	}
	c->head_sent = true;
	c->ops->head(c->arg, code, c->ctype);
	return len;
}

static size_t on_write(char *data, size_t size, size_t n, void *arg)
{
	struct upstream_call *c = arg;
	size_t len = size * n;

	if (c->finished)
		return 0;
	if (c->discard)
		return len;
	if (!c->head_sent) {
		long code = 0;

		curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &code);
		c->status = code;
		c->head_sent = true;
		c->ops->head(c->arg, code, c->ctype);
	}
	if (len)
		c->ops->data(c->arg, data, len);
	return len;
}

static int attempt(struct upstream_call *c);

/* A call into a sandbox connects with the socket made there, once: curl
 * closes it (the default close callback) when the connection ends. */
static curl_socket_t open_socket(void *arg, curlsocktype purpose,
				 struct curl_sockaddr *addr)
{
	struct upstream_call *c = arg;
	int fd = c->sock;

	if (purpose != CURLSOCKTYPE_IPCXN || fd < 0 || addr->family != AF_INET)
		return CURL_SOCKET_BAD;
	c->sock = -2; /* curl's now */
	return fd;
}

static void on_retry(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct upstream_call *c = arg;
	int r;

	loop_del_fd(loop, fd);
	fd_close(&c->retry_fd);
	r = attempt(c);
	if (r)
		finish(c, -EIO, "cannot start an upstream request");
}

/* Tries again after a backoff; returns false when no attempt is left. */
static bool retry_later(struct upstream_call *c)
{
	uint64_t ms;

	if (c->attempts > c->retries || c->e->stopping)
		return false;
	ms = (uint64_t)BACKOFF_MS << (c->attempts - 1);
	if (ms > BACKOFF_MAX_MS)
		ms = BACKOFF_MAX_MS;
	easy_drop(c);
	c->retry_fd = timer_fd_new(ms, false);
	if (c->retry_fd < 0)
		return false;
	if (loop_add_fd(c->e->loop, c->retry_fd, EPOLLIN, on_retry, c) < 0) {
		fd_close(&c->retry_fd);
		return false;
	}
	return true;
}

static int attempt(struct upstream_call *c)
{
	struct upstream_engine *e = c->e;
	CURL *h;
	long secs;

	__atomic_add_fetch(&c->attempts, 1, __ATOMIC_RELAXED);
	c->head_sent = c->discard = false;
	c->status = 0;
	c->ctype[0] = c->errbuf[0] = '\0';
	h = c->easy = curl_easy_init();
	if (!h)
		return -ENOMEM;
	c->headers = curl_slist_append(NULL, "Expect:");
	if (c->body) {
		char *ct = xstrfmt("Content-Type: %s",
				   c->ctype_out ? c->ctype_out
						: "application/json");

		c->headers = curl_slist_append(c->headers, ct);
		free(ct);
	}
	for (char **hl = c->headers_in; hl && *hl; hl++)
		c->headers = curl_slist_append(c->headers, *hl);
	if (c->key) {
		char *auth = xstrfmt("Authorization: Bearer %s", c->key);

		c->headers = curl_slist_append(c->headers, auth);
		explicit_bzero(auth, strlen(auth));
		free(auth);
	}
	curl_easy_setopt(h, CURLOPT_URL, c->url);
	curl_easy_setopt(h, CURLOPT_PRIVATE, c);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->headers);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->errbuf);
	if (e->cfg.connect_timeout_ms)
		curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
				 (long)e->cfg.connect_timeout_ms);
	if (e->cfg.read_timeout_ms) {
		secs = (long)((e->cfg.read_timeout_ms + 999) / 1000);
		curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, secs);
	}
	if (c->fresh) {
		curl_easy_setopt(h, CURLOPT_FRESH_CONNECT, 1L);
		curl_easy_setopt(h, CURLOPT_FORBID_REUSE, 1L);
	}
	if (c->sock != -1) {
		curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, open_socket);
		curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, c);
	}
	if (!strcmp(c->method, "GET")) {
		curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
	} else if (!strcmp(c->method, "HEAD")) {
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else {
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, c->body ? c->body : "");
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
				 (curl_off_t)c->len);
		if (strcmp(c->method, "POST"))
			curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, c->method);
	}
	if (curl_multi_add_handle(e->multi, h) != CURLM_OK) {
		easy_drop(c);
		return -EIO;
	}
	return 0;
}

/* Maps an attempt's end to the call's: retried, or finished. */
static void attempt_done(struct upstream_call *c, CURLcode res)
{
	curl_off_t connect_us = 0;
	bool connected;
	char msg[CURL_ERROR_SIZE + 64];
	int err;

	if (res == CURLE_OK) {
		if (c->discard && retry_later(c))
			return;
		if (c->discard) {
			/* Out of attempts: the 5xx is the answer after all,
			 * but its body was dropped. */
			snprintf(msg, sizeof(msg),
				 "the upstream answered HTTP %ld", c->status);
			finish(c, -EIO, msg);
			return;
		}
		finish(c, 0, NULL);
		return;
	}
	curl_easy_getinfo(c->easy, CURLINFO_CONNECT_TIME_T, &connect_us);
	connected = connect_us > 0;
	snprintf(msg, sizeof(msg), "%s",
		 c->errbuf[0] ? c->errbuf : curl_easy_strerror(res));
	switch (res) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_SSL_CONNECT_ERROR:
		err = -ECONNREFUSED;
		break;
	case CURLE_OPERATION_TIMEDOUT:
		err = -ETIMEDOUT;
		if (connected)
			snprintf(msg, sizeof(msg),
				 "read timeout: no byte came for %llu ms",
				 (unsigned long long)c->e->cfg.read_timeout_ms);
		else
			snprintf(msg, sizeof(msg),
				 "connect timeout: no connection in %llu ms",
				 (unsigned long long)
					 c->e->cfg.connect_timeout_ms);
		break;
	case CURLE_GOT_NOTHING:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_PARTIAL_FILE:
		err = -EPIPE;
		break;
	default:
		err = -EIO;
		break;
	}
	/* Retried only while nothing of the answer was handed on, and not
	 * after a read timeout: a slow model is not a broken one. */
	if (!c->head_sent &&
	    (err == -ECONNREFUSED || err == -EPIPE ||
	     (err == -ETIMEDOUT && !connected)) &&
	    retry_later(c))
		return;
	finish(c, err, msg);
}

static void check_done(struct upstream_engine *e)
{
	CURLMsg *m;
	int left;

	while ((m = curl_multi_info_read(e->multi, &left))) {
		struct upstream_call *c = NULL;

		if (m->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &c);
		if (c)
			attempt_done(c, m->data.result);
	}
}

static void on_sock(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct upstream_engine *e = arg;
	int flags = 0, running;

	if (events & EPOLLIN)
		flags |= CURL_CSELECT_IN;
	if (events & EPOLLOUT)
		flags |= CURL_CSELECT_OUT;
	if ((events & (EPOLLERR | EPOLLHUP)) && !flags)
		flags |= CURL_CSELECT_ERR;
	curl_multi_socket_action(e->multi, fd, flags, &running);
	check_done(e);
}

static int sock_cb(CURL *easy, curl_socket_t s, int what, void *userp,
		   void *socketp)
{
	struct upstream_engine *e = userp;
	uint32_t ev = 0;

	if (what == CURL_POLL_REMOVE) {
		if (socketp) {
			loop_del_fd(e->loop, s);
			curl_multi_assign(e->multi, s, NULL);
		}
		return 0;
	}
	if (what & CURL_POLL_IN)
		ev |= EPOLLIN;
	if (what & CURL_POLL_OUT)
		ev |= EPOLLOUT;
	if (!socketp) {
		if (loop_add_fd(e->loop, s, ev, on_sock, e) == 0)
			curl_multi_assign(e->multi, s, e);
	} else {
		loop_mod_fd(e->loop, s, ev);
	}
	return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct upstream_engine *e = userp;
	struct itimerspec its = {0};

	if (timeout_ms >= 0) {
		its.it_value.tv_sec = timeout_ms / 1000;
		its.it_value.tv_nsec = (timeout_ms % 1000) * 1000000L;
		if (!timeout_ms)
			its.it_value.tv_nsec = 1; /* at once, but not now */
	}
	timerfd_settime(e->timer_fd, 0, &its, NULL);
	return 0;
}

static void on_timer(struct loop *loop, int fd, uint32_t events, void *arg)
{
	struct upstream_engine *e = arg;
	uint64_t n;
	int running;

	if (read(fd, &n, sizeof(n)) < 0) {
		/* EAGAIN: re-armed meanwhile */
	}
	curl_multi_socket_action(e->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done(e);
}

static void start_cb(struct loop *loop, void *arg)
{
	struct upstream_call *c = arg;
	struct upstream_engine *e = c->e;

	c->next = e->calls;
	if (e->calls)
		e->calls->prev = c;
	e->calls = c;
	if (e->stopping) {
		finish(c, -ECANCELED, "the server is stopping");
		return;
	}
	if (attempt(c))
		finish(c, -EIO, "cannot start an upstream request");
}

struct upstream_call *upstream_call_start(struct upstream_engine *e,
					  struct upstream_request *req,
					  const struct upstream_call_ops *ops,
					  void *arg)
{
	struct upstream_call *c = xcalloc(1, sizeof(*c));

	c->refs = 2; /* the caller's and the engine's */
	c->e = e;
	c->url = xstrdup(req->url);
	c->method = xstrdup(req->method);
	c->key = req->key ? xstrdup(req->key) : NULL;
	c->body = req->body;
	c->len = req->len;
	req->body = NULL;
	c->ctype_out = req->content_type ? xstrdup(req->content_type) : NULL;
	if (req->headers) {
		size_t n = 0;

		while (req->headers[n])
			n++;
		c->headers_in = xcalloc(n + 1, sizeof(char *));
		for (size_t i = 0; i < n; i++)
			c->headers_in[i] = xstrdup(req->headers[i]);
	}
	c->sock = req->has_sock ? req->sock : -1;
	if (req->has_sock)
		req->sock = -1;
	c->fresh = req->fresh || req->has_sock;
	c->retries = req->has_sock	? 0
		     : req->has_retries ? (unsigned)req->retries
					: e->cfg.retries;
	c->ops = ops;
	c->arg = arg;
	c->retry_fd = -1;
	loop_post(e->loop, start_cb, c);
	return c;
}

static void cancel_cb(struct loop *loop, void *arg)
{
	struct upstream_call *c = arg;

	finish(c, -ECANCELED, "cancelled");
	upstream_call_put(c);
}

void upstream_call_cancel(struct upstream_call *c)
{
	call_get(c);
	loop_post(c->e->loop, cancel_cb, c);
}

struct pause_req {
	struct upstream_call *c;
	bool paused;
};

static void pause_cb(struct loop *loop, void *arg)
{
	struct pause_req *p = arg;
	struct upstream_call *c = p->c;

	if (!c->finished && c->easy && c->paused != p->paused) {
		c->paused = p->paused;
		curl_easy_pause(c->easy,
				p->paused ? CURLPAUSE_RECV : CURLPAUSE_CONT);
	}
	upstream_call_put(c);
	free(p);
}

void upstream_call_pause(struct upstream_call *c, bool paused)
{
	struct pause_req *p = xmalloc(sizeof(*p));

	call_get(c);
	p->c = c;
	p->paused = paused;
	loop_post(c->e->loop, pause_cb, p);
}

struct loop *upstream_engine_loop(struct upstream_engine *e)
{
	return e->loop;
}

static void *engine_main(void *arg)
{
	struct upstream_engine *e = arg;

	loop_run(e->loop);
	return NULL;
}

struct upstream_engine *
upstream_engine_new(const struct upstream_engine_config *cfg, char *err,
		    size_t errlen)
{
	struct upstream_engine *e = xcalloc(1, sizeof(*e));
	int r;

	e->cfg = *cfg;
	e->timer_fd = -1;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		snprintf(err, errlen, "cannot initialise libcurl");
		goto fail;
	}
	e->loop = loop_new();
	e->multi = curl_multi_init();
	e->timer_fd =
		timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (!e->loop || !e->multi || e->timer_fd < 0) {
		snprintf(err, errlen, "cannot set up upstream calls: %s",
			 strerror(errno));
		goto fail;
	}
	curl_multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
	curl_multi_setopt(e->multi, CURLMOPT_SOCKETDATA, e);
	curl_multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(e->multi, CURLMOPT_TIMERDATA, e);
	if (cfg->max_connections)
		curl_multi_setopt(e->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS,
				  (long)cfg->max_connections);
	r = loop_add_fd(e->loop, e->timer_fd, EPOLLIN, on_timer, e);
	if (r == 0)
		r = -pthread_create(&e->thread, NULL, engine_main, e);
	if (r) {
		snprintf(err, errlen, "cannot start upstream calls: %s",
			 strerror(-r));
		goto fail;
	}
	return e;
fail:
	if (e->multi)
		curl_multi_cleanup(e->multi);
	loop_free(e->loop);
	fd_close(&e->timer_fd);
	free(e);
	return NULL;
}

static void stop_calls_cb(struct loop *loop, void *arg)
{
	struct upstream_engine *e = arg;

	e->stopping = true;
	while (e->calls)
		finish(e->calls, -ECANCELED, "the server is stopping");
}

void upstream_engine_stop_calls(struct upstream_engine *e)
{
	loop_post(e->loop, stop_calls_cb, e);
}

static void stop_cb(struct loop *loop, void *arg)
{
	stop_calls_cb(loop, arg);
	loop_stop(loop);
}

void upstream_engine_free(struct upstream_engine *e)
{
	if (!e)
		return;
	loop_post(e->loop, stop_cb, e);
	pthread_join(e->thread, NULL);
	curl_multi_cleanup(e->multi);
	loop_free(e->loop);
	fd_close(&e->timer_fd);
	free(e);
}

/*
 * The prime-sandboxes compatible surface (server/prime.h), mapped onto
 * sbx's stateful sandboxes. A prime sandbox is a session (same id) plus a
 * record kept here, on the runner's thread beside the session table: what
 * the create request asked (echoed in the client's camelCase), its status
 * word, why it ended, its log lines, the gateway tokens /auth gave out and
 * its exposed ports. The record outlives the session: a sandbox past its
 * timeout_minutes is killed and stays readable as TIMEOUT until deleted.
 *
 *   POST   /prime/api/v1/sandbox                  create
 *   GET    /prime/api/v1/sandbox[?page&per_page&status&labels&is_active]
 *   GET    /prime/api/v1/sandbox/{id}
 *   DELETE /prime/api/v1/sandbox/{id}
 *   DELETE /prime/api/v1/sandbox                  bulk, by ids or labels
 *   GET    /prime/api/v1/sandbox/{id}/logs
 *   POST   /prime/api/v1/sandbox/{id}/auth        a gateway token
 *   GET    /prime/api/v1/sandbox/{id}/error-context
 *   POST|GET /prime/api/v1/sandbox/{id}/expose, DELETE .../expose/{eid}
 *   POST   /prime/gateway/{user_ns}/{id}/exec     {command, working_dir,
 *                                                 env, timeout}
 *   POST   /prime/gateway/{user_ns}/{id}/upload?path=   multipart "file"
 *   GET    /prime/gateway/{user_ns}/{id}/download?path=
 *
 * Errors carry "detail" (what the client prints) beside sbx's usual
 * {"error": {"code", "message"}}.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/loop.h"
#include "base/text.h"
#include "base/util.h"
#include "runtime/limits.h"
#include "runtime/runner.h"
#include "runtime/session.h"
#include "server/internal.h"
#include "server/prime.h"
#include "server/request.h"
#include "base/banned.h"

#define USER_NS "sbx"
#define TOKEN_TTL_S 3600   /* a token's life */
#define TOKEN_REUSE_S 1800 /* /auth gives the newest while it has this */
#define NTOKENS 4
#define LOG_MAX (64u * 1024)
#define DEFAULT_EXEC_S 300
#define IDLE_COMMANDS "tail -f /dev/null"

struct token {
	char text[65];
	time_t expires;
};

struct exposure {
	unsigned id;
	unsigned port;
	char *name;
	time_t created;
	struct exposure *next;
};

struct box {
	char id[48];
	json_t *echo; /* the Sandbox fields fixed at creation */
	json_t *labels;
	enum prime_status status;
	char *error_type, *error_message;
	time_t created, updated, terminated;
	uint64_t deadline_ns;
	double timeout_min;
	struct buf logs;
	struct token tokens[NTOKENS];
	struct exposure *exposures;
	unsigned next_exposure;
	struct box *next;
};

static struct {
	struct loop *loop;
	int timer_fd;
	struct box *list;
} table = {.timer_fd = -1};

enum action {
	A_CREATE,
	A_LIST,
	A_GET,
	A_DELETE,
	A_BULK_DELETE,
	A_LOGS,
	A_AUTH,
	A_ERROR_CONTEXT,
	A_EXPOSE,
	A_EXPOSE_LIST,
	A_UNEXPOSE,
	A_EXEC,
	A_UPLOAD,
	A_DOWNLOAD,
};

struct piece {
	struct call *c;
	char *data;
	size_t len;
	bool last;
};

struct call {
	enum action action;
	struct request *req;
	char id[64];
	char *token;	/* gateway calls: the bearer token given */
	char *path;	/* file path; or the query of a list */
	char *base_url; /* http://host:port, for URLs in answers */
	json_t *body;
	unsigned num;
	/* transfers */
	int sock;
	bool stream_started, draining, finished;
	/* uploads */
	struct piece *piece;
	bool up_ready, up_open, replied;
};

/* ---- replies ---- */

static void reply_error(struct request *req, unsigned status, const char *code,
			const char *msg)
{
	struct buf b;

	buf_init(&b);
	utf8_repair(&b, msg, strlen(msg));
	request_reply(req, status,
		      json_pack("{s:s,s:{s:s,s:s}}", "detail", b.data, "error",
				"code", code, "message", b.data));
	buf_release(&b);
}

static void __attribute__((format(printf, 4, 5)))
errorf(struct request *req, unsigned status, const char *code, const char *fmt,
       ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	reply_error(req, status, code, msg);
}

/* A session's error reply, with "detail" added. */
static void pass_error(struct request *req, struct session_reply *r)
{
	json_t *e = json_object_get(r->json, "error");
	const char *msg = json_string_value(json_object_get(e, "message"));

	json_object_set_new(r->json, "detail", json_string(msg ? msg : ""));
	request_reply(req, r->status, r->json);
}

static void iso_time(char *out, size_t n, time_t t)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static json_t *time_json(time_t t)
{
	char s[32];

	if (!t)
		return json_null();
	iso_time(s, sizeof(s), t);
	return json_string(s);
}

/* ---- the records ---- */

static void box_log(struct box *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void box_log(struct box *b, const char *fmt, ...)
{
	char line[600], ts[32];
	va_list ap;

	if (b->logs.len > LOG_MAX)
		return;
	iso_time(ts, sizeof(ts), time(NULL));
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	buf_addf(&b->logs, "%s %s\n", ts, line);
}

static struct box *box_find(const char *id)
{
	struct box *b;

	for (b = table.list; b; b = b->next)
		if (!strcmp(b->id, id))
			return b;
	return NULL;
}

static void box_free(struct box *b)
{
	while (b->exposures) {
		struct exposure *e = b->exposures;

		b->exposures = e->next;
		free(e->name);
		free(e);
	}
	explicit_bzero(b->tokens, sizeof(b->tokens));
	json_decref(b->echo);
	json_decref(b->labels);
	free(b->error_type);
	free(b->error_message);
	buf_release(&b->logs);
	free(b);
}

static void box_unlink(struct box *b)
{
	struct box **pp;

	for (pp = &table.list; *pp; pp = &(*pp)->next)
		if (*pp == b) {
			*pp = b->next;
			return;
		}
}

static void set_error(struct box *b, const char *type, const char *msg)
{
	free(b->error_type);
	free(b->error_message);
	b->error_type = type ? xstrdup(type) : NULL;
	b->error_message = msg ? xstrdup(msg) : NULL;
	b->updated = time(NULL);
}

static void ignore_reply(void *ctx, struct session_reply *r)
{
	json_decref(r->json);
}

/* The session's 404 message, caught synchronously. */
static void catch_reply(void *ctx, struct session_reply *r)
{
	char *out = ctx;
	const char *msg = json_string_value(
		json_object_get(json_object_get(r->json, "error"), "message"));

	str_copy(out, 256, msg ? msg : "");
	json_decref(r->json);
}

/* A running sandbox whose session ended on its own is TERMINATED (an
 * out-of-memory end says so). */
static void box_refresh(struct box *b)
{
	char msg[256] = "";

	if (b->status != PRIME_RUNNING || session_exists(b->id))
		return;
	session_get(b->id, catch_reply, msg);
	b->status = PRIME_TERMINATED;
	b->terminated = time(NULL);
	set_error(b, strstr(msg, "out of memory") ? "OOM_KILLED" : NULL,
		  msg[0] ? msg : "the sandbox ended");
	box_log(b, "the sandbox ended: %s", msg);
}

static void on_tick(struct loop *loop, int fd, uint32_t events, void *arg)
{
	uint64_t ticks, now = now_ns();
	struct box *b;
	char msg[160];

	if (read(fd, &ticks, sizeof(ticks)) < 0) {
		/* EAGAIN */
	}
	for (b = table.list; b; b = b->next) {
		if (b->status != PRIME_RUNNING || now < b->deadline_ns)
			continue;
		snprintf(msg, sizeof(msg),
			 "the sandbox exceeded its timeout of %g minutes",
			 b->timeout_min);
		b->status = PRIME_TIMEOUT;
		b->terminated = time(NULL);
		set_error(b, "TIMEOUT", msg);
		box_log(b, "%s and was stopped", msg);
		log_info("sandbox %s: %s", b->id, msg);
		session_delete(b->id, ignore_reply, NULL);
	}
}

static void table_init(struct loop *loop)
{
	if (table.loop)
		return;
	table.loop = loop;
	table.timer_fd = timer_fd_new(1000, true);
	if (table.timer_fd >= 0)
		loop_add_fd(loop, table.timer_fd, EPOLLIN, on_tick, NULL);
}

static json_t *describe(struct box *b)
{
	json_t *o = json_deep_copy(b->echo);

	json_object_set_new(o, "id", json_string(b->id));
	json_object_set_new(o, "status",
			    json_string(prime_status_name(b->status)));
	json_object_set(o, "labels", b->labels);
	json_object_set_new(o, "createdAt", time_json(b->created));
	json_object_set_new(o, "updatedAt", time_json(b->updated));
	json_object_set_new(o, "startedAt", time_json(b->created));
	json_object_set_new(o, "terminatedAt", time_json(b->terminated));
	json_object_set_new(o, "errorType",
			    b->error_type ? json_string(b->error_type)
					  : json_null());
	json_object_set_new(o, "errorMessage",
			    b->error_message ? json_string(b->error_message)
					     : json_null());
	return o;
}

/* ---- tokens ---- */

static void token_new(struct token *t)
{
	unsigned char r[32];
	size_t i;

	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
		abort(); /* no randomness: no safe token */
	for (i = 0; i < sizeof(r); i++)
		snprintf(t->text + 2 * i, 3, "%02x", r[i]);
	t->expires = time(NULL) + TOKEN_TTL_S;
	explicit_bzero(r, sizeof(r));
}

/* The newest token while it has long to live; else a new one in the
 * slot that expires first (every slot's token outlives the one before,
 * so a token given out stays valid until its expires_at). */
static const struct token *token_give(struct box *b)
{
	struct token *newest = NULL, *oldest = &b->tokens[0];
	time_t now = time(NULL);
	size_t i;

	for (i = 0; i < NTOKENS; i++) {
		struct token *t = &b->tokens[i];

		if (t->expires > now &&
		    (!newest || t->expires > newest->expires))
			newest = t;
		if (t->expires < oldest->expires)
			oldest = t;
	}
	if (newest && newest->expires - now >= TOKEN_TTL_S - TOKEN_REUSE_S)
		return newest;
	token_new(oldest);
	return oldest;
}

static bool token_valid(const struct box *b, const char *got)
{
	time_t now = time(NULL);
	bool ok = false;
	size_t i, j, n = got ? strlen(got) : 0;

	for (i = 0; i < NTOKENS; i++) {
		const struct token *t = &b->tokens[i];
		unsigned char diff = 0;

		if (t->expires <= now || n != 64)
			continue;
		for (j = 0; j < 64; j++)
			diff |= (unsigned char)(t->text[j] ^ got[j]);
		ok |= diff == 0;
	}
	return ok;
}

/* ---- calls ---- */

static void piece_free(struct piece *p)
{
	if (p) {
		free(p->data);
		free(p);
	}
}

static void call_free(struct call *c)
{
	fd_close(&c->sock);
	piece_free(c->piece);
	free(c->token);
	free(c->path);
	free(c->base_url);
	json_decref(c->body);
	free(c);
}

/* Answers c and lets it go (an upload's call lives on while its body is
 * still coming). */
static void finish(struct call *c)
{
	request_put(c->req);
	if (c->action == A_UPLOAD && c->up_open) {
		c->req = NULL;
		c->replied = true;
		piece_free(c->piece);
		c->piece = NULL;
		return;
	}
	call_free(c);
}

/* ---- create ---- */

static json_t *given_or(json_t *body, const char *key, json_t *def)
{
	json_t *v = json_object_get(body, key);

	if (v && !json_is_null(v)) {
		json_decref(def);
		return json_deep_copy(v);
	}
	return def;
}

static uint64_t clamp(uint64_t v, enum limits_kind k)
{
	const struct limits_rules *r = limits_current();

	if (v < r->min[k])
		v = r->min[k];
	if (v > r->max[k])
		v = r->max[k];
	return v;
}

struct create_ctx {
	struct call *c;
	struct prime_create pc;
	uint64_t lifetime_ms;
};

static void on_created(void *ctx, struct session_reply *r)
{
	struct create_ctx *cc = ctx;
	struct call *c = cc->c;
	const struct prime_create *pc = &cc->pc;
	const char *id = json_string_value(json_object_get(r->json, "id"));
	struct box *b;
	json_t *e, *v;
	uint64_t ms;
	size_t i;

	if (r->status != 201 || !id) {
		pass_error(c->req, r);
		goto out;
	}
	b = xcalloc(1, sizeof(*b));
	str_copy(b->id, sizeof(b->id), id);
	buf_init(&b->logs);
	b->status = PRIME_RUNNING;
	b->created = b->updated = time(NULL);
	b->timeout_min = pc->timeout_minutes;
	ms = (uint64_t)(pc->timeout_minutes * 60000.0);
	if (ms > cc->lifetime_ms) {
		box_log(b,
			"timeout_minutes %g is past this server's longest "
			"lifetime: the sandbox times out after %llu s",
			pc->timeout_minutes,
			(unsigned long long)(cc->lifetime_ms / 1000));
		ms = cc->lifetime_ms;
	}
	b->deadline_ns = now_ns() + ms * 1000000ull;
	b->labels = json_array();
	json_array_foreach(pc->labels, i, v) json_array_append(b->labels, v);
	e = json_object();
	json_object_set_new(e, "name",
			    json_string(pc->name ? pc->name : b->id));
	json_object_set_new(
		e, "dockerImage",
		json_string(pc->docker_image ? pc->docker_image : "sbx"));
	json_object_set_new(e, "startCommand",
			    pc->start_command ? json_string(pc->start_command)
					      : json_null());
	json_object_set_new(e, "cpuCores",
			    given_or(c->body, "cpu_cores", json_integer(1)));
	json_object_set_new(e, "memoryGB",
			    given_or(c->body, "memory_gb", json_integer(2)));
	json_object_set_new(e, "diskSizeGB",
			    given_or(c->body, "disk_size_gb", json_integer(5)));
	json_object_set_new(e, "diskMountPath", json_string("/work"));
	json_object_set_new(e, "gpuCount", json_integer(0));
	json_object_set_new(e, "networkAccess",
			    json_boolean(pc->network_access));
	json_object_set_new(
		e, "timeoutMinutes",
		given_or(c->body, "timeout_minutes", json_integer(60)));
	json_object_set_new(e, "environmentVars",
			    pc->environment_vars
				    ? json_deep_copy(pc->environment_vars)
				    : json_null());
	/* Secret values are never shown again. */
	json_object_set_new(e, "secrets", json_null());
	json_object_set_new(e, "advancedConfigs",
			    pc->advanced_configs
				    ? json_deep_copy(pc->advanced_configs)
				    : json_null());
	json_object_set_new(e, "exitCode", json_null());
	json_object_set_new(e, "userId", json_null());
	json_object_set_new(e, "teamId",
			    pc->team_id ? json_string(pc->team_id)
					: json_null());
	json_object_set_new(e, "kubernetesJobId", json_null());
	json_object_set_new(e, "registryCredentialsId",
			    pc->registry_credentials_id
				    ? json_string(pc->registry_credentials_id)
				    : json_null());
	json_object_set_new(e, "vm", json_false());
	b->echo = e;
	box_log(b, "sandbox %s created", b->id);
	if (pc->docker_image)
		box_log(b,
			"docker_image '%.200s': sbx has no image of that "
			"name; the sandbox runs in sbx's default view (the "
			"host's runtimes, python3 as python)",
			pc->docker_image);
	if (pc->network_access)
		box_log(b, "network_access: %s",
			json_is_object(json_object_get(r->json, "llm"))
				? "the model gateway only (OPENAI_BASE_URL), "
				  "no other network"
				: "this server has no model upstream: no "
				  "network at all");
	if (pc->start_command && strcmp(pc->start_command, IDLE_COMMANDS)) {
		box_log(b, "start_command runs in the background");
		session_exec(b->id,
			     json_pack("{s:s,s:b}", "cmd", pc->start_command,
				       "background", 1),
			     NULL, ignore_reply, NULL);
	}
	b->next = table.list;
	table.list = b;
	log_info("sandbox %s: created for the prime surface", b->id);
	request_reply(c->req, 200, describe(b));
	json_decref(r->json);
out:
	finish(c);
	free(cc);
}

static void do_create(struct call *c)
{
	const struct server_config *cfg = server_state.cfg;
	struct create_ctx *cc = xcalloc(1, sizeof(*cc));
	struct prime_create *pc = &cc->pc;
	char err[256];
	json_t *args, *env, *labels, *v;
	uint64_t mem, disk, cpus;
	size_t i;

	cc->c = c;
	if (prime_parse_create(c->body, pc, err, sizeof(err))) {
		reply_error(c->req, 422, "unprocessable", err);
		finish(c);
		free(cc);
		return;
	}
	if (pc->gpu_count > 0) {
		reply_error(c->req, 422, "unprocessable",
			    "gpu_count: this server has no GPUs");
		finish(c);
		free(cc);
		return;
	}
	mem = clamp((uint64_t)ceil(pc->memory_gb * 1024.0) << 20,
		    LIMITS_MEMORY);
	disk = clamp((uint64_t)ceil(pc->disk_size_gb * 1024.0) << 20,
		     LIMITS_DISK);
	cpus = clamp((uint64_t)ceil(pc->cpu_cores * 1000.0), LIMITS_CPUS);
	env = json_object();
	if (pc->environment_vars)
		json_object_update(env, pc->environment_vars);
	if (pc->secrets)
		json_object_update(env, pc->secrets);
	labels = json_object();
	json_array_foreach(pc->labels, i, v) json_object_set_new(
		labels, json_string_value(v), json_string(""));
	cc->lifetime_ms = cfg->max_lifetime_ms;
	args = json_pack(
		"{s:{s:I,s:I,s:f},s:o,s:i,s:I,s:o,s:b}", "limits", "memory_mb",
		(json_int_t)(mem >> 20), "disk_mb", (json_int_t)(disk >> 20),
		"cpus", (double)cpus / 1000.0, "env", env, "idle_timeout_s", 0,
		"max_lifetime_s", (json_int_t)(cfg->max_lifetime_ms / 1000),
		"labels", labels, "llm",
		pc->network_access && cfg->nupstreams > 0);
	if (pc->host_routes) {
		json_object_set(args, "host_routes", pc->host_routes);
		/* Host routes come through the gateway socket. */
		json_object_set_new(args, "llm", json_true());
	}
	session_create(args, on_created, cc);
	json_decref(args);
}

/* ---- the control plane ---- */

static bool labels_match(const struct box *b, json_t *want)
{
	json_t *w, *h;
	size_t i, j;

	json_array_foreach(want, i, w)
	{
		bool found = false;

		json_array_foreach(b->labels, j, h) if (json_equal(w, h))
			found = true;
		if (!found)
			return false;
	}
	return true;
}

static bool is_active(enum prime_status s)
{
	return s == PRIME_PENDING || s == PRIME_PROVISIONING ||
	       s == PRIME_RUNNING;
}

static void do_list(struct call *c)
{
	struct prime_list q;
	char err[256];
	json_t *arr = json_array();
	struct box *b;
	uint64_t total = 0, first;

	if (prime_parse_list(c->path, &q, err, sizeof(err))) {
		json_decref(arr);
		reply_error(c->req, 422, "unprocessable", err);
		return;
	}
	first = (uint64_t)(q.page - 1) * q.per_page;
	for (b = table.list; b; b = b->next) {
		box_refresh(b);
		if ((q.status >= 0 && (int)b->status != q.status) ||
		    (q.is_active == 1 && !is_active(b->status)) ||
		    (q.is_active == 0 && is_active(b->status)) ||
		    !labels_match(b, q.labels))
			continue;
		if (total >= first && total < first + q.per_page)
			json_array_append_new(arr, describe(b));
		total++;
	}
	json_decref(q.labels);
	request_reply(c->req, 200,
		      json_pack("{s:o,s:I,s:i,s:i,s:b}", "sandboxes", arr,
				"total", (json_int_t)total, "page", (int)q.page,
				"perPage", (int)q.per_page, "hasNext",
				first + q.per_page < total));
}

/* Deletes b: its session goes (if it has not already), its record too. */
static void box_delete(struct box *b)
{
	log_info("sandbox %s: deleted through the prime surface", b->id);
	box_unlink(b);
	if (session_exists(b->id))
		session_delete(b->id, ignore_reply, NULL);
	box_free(b);
}

static struct box *need_box(struct call *c)
{
	struct box *b = box_find(c->id);

	if (!b)
		errorf(c->req, 404, "not_found", "no sandbox '%s'", c->id);
	else
		box_refresh(b);
	return b;
}

static void do_bulk_delete(struct call *c)
{
	struct prime_bulk q;
	char err[256];
	json_t *ok = json_array(), *failed = json_array(), *v;
	struct box *b, *next;
	size_t i;

	if (prime_parse_bulk(c->body, &q, err, sizeof(err))) {
		json_decref(ok);
		json_decref(failed);
		reply_error(c->req, 422, "unprocessable", err);
		return;
	}
	if (q.sandbox_ids) {
		json_array_foreach(q.sandbox_ids, i, v)
		{
			b = box_find(json_string_value(v));
			if (b) {
				box_delete(b);
				json_array_append(ok, v);
			} else {
				json_array_append_new(
					failed,
					json_pack("{s:O,s:s}", "sandbox_id", v,
						  "error", "no such sandbox"));
			}
		}
	} else {
		for (b = table.list; b; b = next) {
			next = b->next;
			if (!labels_match(b, q.labels))
				continue;
			json_array_append_new(ok, json_string(b->id));
			box_delete(b);
		}
	}
	request_reply(c->req, 200,
		      json_pack("{s:o,s:o,s:s+}", "succeeded", ok, "failed",
				failed, "message",
				json_array_size(failed) ? "some sandboxes were "
							  "not found"
							: "sandboxes deleted",
				""));
}

static void do_auth(struct call *c, struct box *b)
{
	const struct token *t = token_give(b);
	char exp[32];

	iso_time(exp, sizeof(exp), t->expires);
	request_reply(c->req, 200,
		      json_pack("{s:s+,s:s,s:s,s:s,s:s,s:s}", "gateway_url",
				c->base_url, "/prime/gateway", "user_ns",
				USER_NS, "job_id", b->id, "sandbox_id", b->id,
				"token", t->text, "expires_at", exp));
}

static json_t *exposure_json(struct call *c, struct box *b, struct exposure *e)
{
	char eid[32], ts[32];

	snprintf(eid, sizeof(eid), "exp-%u", e->id);
	iso_time(ts, sizeof(ts), e->created);
	return json_pack("{s:s,s:s,s:i,s:o,s:s++,s:s,s:s,s:s}", "exposure_id",
			 eid, "sandbox_id", b->id, "port", (int)e->port, "name",
			 e->name ? json_string(e->name) : json_null(), "url",
			 c->base_url, "/v1/sandboxes/", b->id, "tls_socket", "",
			 "protocol", "HTTP", "created_at", ts);
}

static void do_expose(struct call *c, struct box *b)
{
	struct prime_expose q;
	struct exposure *e;
	char err[256], path[32];
	json_t *o;

	if (prime_parse_expose(c->body, &q, err, sizeof(err))) {
		reply_error(c->req, 422, "unprocessable", err);
		return;
	}
	if (b->status != PRIME_RUNNING) {
		errorf(c->req, 409, "not_running",
		       "sandbox '%s' is not running (%s)", b->id,
		       prime_status_name(b->status));
		return;
	}
	e = xcalloc(1, sizeof(*e));
	e->id = ++b->next_exposure;
	e->port = q.port;
	e->name = q.name ? xstrdup(q.name) : NULL;
	e->created = time(NULL);
	e->next = b->exposures;
	b->exposures = e;
	box_log(b, "port %u exposed", q.port);
	o = exposure_json(c, b, e);
	snprintf(path, sizeof(path), "/ports/%u/", q.port);
	json_object_set_new(
		o, "url",
		json_pack("s++", json_string_value(json_object_get(o, "url")),
			  "", path));
	request_reply(c->req, 200, o);
}

static void do_expose_list(struct call *c, struct box *b)
{
	json_t *arr = json_array();
	struct exposure *e;
	char path[32];

	for (e = b->exposures; e; e = e->next) {
		json_t *o = exposure_json(c, b, e);

		snprintf(path, sizeof(path), "/ports/%u/", e->port);
		json_object_set_new(
			o, "url",
			json_pack("s++",
				  json_string_value(json_object_get(o, "url")),
				  "", path));
		json_array_append_new(arr, o);
	}
	request_reply(c->req, 200, json_pack("{s:o}", "exposures", arr));
}

static void do_unexpose(struct call *c, struct box *b)
{
	struct exposure **pp;
	char eid[32];

	for (pp = &b->exposures; *pp; pp = &(*pp)->next) {
		snprintf(eid, sizeof(eid), "exp-%u", (*pp)->id);
		if (!strcmp(eid, c->path)) {
			struct exposure *e = *pp;

			*pp = e->next;
			free(e->name);
			free(e);
			request_reply(c->req, 200,
				      json_pack("{s:b}", "success", 1));
			return;
		}
	}
	errorf(c->req, 404, "not_found", "no exposure '%s'", c->path);
}

/* ---- the gateway: exec, upload, download ---- */

static void on_exec(void *ctx, struct session_reply *r)
{
	struct call *c = ctx;
	struct box *b = box_find(c->id);
	const char *status =
		json_string_value(json_object_get(r->json, "status"));
	json_t *code, *sig;
	json_int_t exit_code;

	if (r->status == 404 || r->status == 410) {
		if (b)
			box_refresh(b);
		errorf(c->req, 409, "not_running",
		       "sandbox '%s' is not running (%s)", c->id,
		       b ? prime_status_name(b->status) : "gone");
		json_decref(r->json);
		goto out;
	}
	if (r->status != 200) {
		pass_error(c->req, r);
		goto out;
	}
	if (status && !strcmp(status, "time_limit")) {
		errorf(c->req, 408, "timeout",
		       "the command timed out after %u s", c->num);
		json_decref(r->json);
		goto out;
	}
	if (b && json_is_true(json_object_get(r->json, "oom_killed"))) {
		set_error(b, "OOM_KILLED",
			  "a command was killed: the sandbox ran out of "
			  "memory");
		box_log(b, "a command was killed: out of memory");
	}
	code = json_object_get(r->json, "exit_code");
	sig = json_object_get(r->json, "signal");
	exit_code = json_is_integer(code)  ? json_integer_value(code)
		    : json_is_integer(sig) ? 128 + json_integer_value(sig)
					   : -1;
	request_reply(c->req, 200,
		      json_pack("{s:O,s:O,s:I}", "stdout",
				json_object_get(r->json, "stdout"), "stderr",
				json_object_get(r->json, "stderr"), "exit_code",
				exit_code));
	json_decref(r->json);
out:
	finish(c);
}

static void do_exec(struct call *c)
{
	struct prime_exec q;
	char err[256];
	json_t *args;
	double t;

	if (prime_parse_exec(c->body, &q, err, sizeof(err))) {
		reply_error(c->req, 422, "unprocessable", err);
		finish(c);
		return;
	}
	if (q.sandbox_id && strcmp(q.sandbox_id, c->id)) {
		reply_error(c->req, 400, "bad_request",
			    "sandbox_id does not match the URL's");
		finish(c);
		return;
	}
	t = q.timeout_s > 0 ? q.timeout_s : DEFAULT_EXEC_S;
	if (t > (double)server_state.cfg->max_lifetime_ms / 1000.0)
		t = (double)server_state.cfg->max_lifetime_ms / 1000.0;
	c->num = (unsigned)ceil(t);
	args = json_pack("{s:s,s:f,s:b}", "cmd", q.command, "timeout_s", t,
			 "keep_background", 1);
	if (q.working_dir)
		json_object_set_new(args, "cwd", json_string(q.working_dir));
	if (q.env)
		json_object_set(args, "env", q.env);
	session_exec(c->id, args, NULL, on_exec, c);
	json_decref(args);
}

static void on_transfer(void *ctx, struct session_reply *r)
{
	struct call *c = ctx;
	char ts[40];

	if (c->stream_started) {
		if (r->json) {
			/* Failed midway: cut, so the client sees a short
			 * body rather than one that looks whole. */
			if (c->sock >= 0)
				shutdown(c->sock, SHUT_RDWR);
			json_decref(r->json);
		}
		request_stream_end(c->req);
		if (c->draining) {
			c->finished = true;
			return;
		}
		finish(c);
		return;
	}
	if (c->action == A_UPLOAD && r->status == 201) {
		iso_time(ts, sizeof(ts), time(NULL));
		request_reply(c->req, 200,
			      json_pack("{s:b,s:s,s:O,s:s}", "success", 1,
					"path", c->path, "size",
					json_object_get(r->json, "size"),
					"timestamp", ts));
		json_decref(r->json);
	} else if (r->json && r->status == 200) {
		/* A download of a directory reads as a listing. */
		errorf(c->req, 400, "bad_request", "'%s' is a directory",
		       c->path);
		json_decref(r->json);
	} else if (r->json) {
		pass_error(c->req, r);
	} else {
		request_reply_raw(c->req, r->status, "application/octet-stream",
				  r->raw, r->raw_len);
	}
	finish(c);
}

static void drained_cb(struct loop *loop, void *arg)
{
	struct call *c = arg;

	c->draining = false;
	if (c->finished)
		finish(c);
	else if (request_stream_closed(c->req))
		session_abandon(c);
	else
		session_transfer_more(c);
}

static void on_drained(void *arg)
{
	loop_post(table.loop, drained_cb, arg);
}

static void abandon_cb(struct loop *loop, void *arg)
{
	session_abandon(arg);
}

static void on_abort(void *arg)
{
	loop_post(table.loop, abandon_cb, arg);
}

static void on_data(void *ctx, const char *data, size_t len)
{
	struct call *c = ctx;

	if (!c->stream_started) {
		c->stream_started = true;
		request_stream_start(c->req, 200, "application/octet-stream");
		request_on_abort(c->req, on_abort, c);
	}
	request_stream_write(c->req, data, len);
	c->draining = true;
	request_stream_when_drained(c->req, 0, on_drained, c);
}

static void upload_pump(struct call *c)
{
	struct piece *p = c->piece;

	if (!p || !c->up_ready)
		return;
	c->piece = NULL;
	c->up_ready = false;
	session_upload_chunk(c, p->data, p->len, p->last);
	piece_free(p);
}

static void piece_cb(struct loop *loop, void *arg)
{
	struct piece *p = arg;
	struct call *c = p->c;

	if (p->last)
		c->up_open = false;
	if (c->replied) {
		piece_free(p);
		if (!c->up_open)
			call_free(c);
		return;
	}
	c->piece = p;
	upload_pump(c);
}

static void body_end_cb(struct loop *loop, void *arg)
{
	struct call *c = arg;

	c->up_open = false;
	if (c->replied)
		call_free(c);
	else
		session_abandon(c); /* its reply frees the call */
}

static void upload_data(void *arg, char *data, size_t len, bool last)
{
	struct piece *p = xmalloc(sizeof(*p));

	p->c = arg;
	p->data = data;
	p->len = len;
	p->last = last;
	loop_post(table.loop, piece_cb, p);
}

static void upload_end(void *arg)
{
	loop_post(table.loop, body_end_cb, arg);
}

static const struct request_body_ops upload_ops = {.data = upload_data,
						   .end = upload_end};

static void upload_ready(void *ctx)
{
	struct call *c = ctx;

	c->up_ready = true;
	if (c->piece)
		upload_pump(c);
	else
		request_body_more(c->req);
}

/* A gateway call: its token must be one /auth gave for this sandbox, and
 * the sandbox must run. Returns false after answering. */
static bool gateway_ok(struct call *c)
{
	struct box *b = box_find(c->id);

	if (!b) {
		errorf(c->req, 404, "not_found", "no sandbox '%s'", c->id);
		return false;
	}
	if (!token_valid(b, c->token)) {
		reply_error(c->req, 401, "unauthorized",
			    "a valid 'Authorization: Bearer <token>' header "
			    "from this sandbox's /auth is required");
		return false;
	}
	box_refresh(b);
	if (b->status != PRIME_RUNNING) {
		errorf(c->req, 409, "not_running",
		       "sandbox '%s' is not running (%s)", b->id,
		       prime_status_name(b->status));
		return false;
	}
	return true;
}

static void run_call(struct loop *loop, void *arg)
{
	struct call *c = arg;
	struct box *b = NULL;

	table_init(loop);
	switch (c->action) {
	case A_CREATE:
		do_create(c);
		return;
	case A_EXEC:
		if (gateway_ok(c))
			do_exec(c);
		else
			finish(c);
		return;
	case A_UPLOAD:
		if (!gateway_ok(c)) {
			finish(c);
			return;
		}
		c->up_ready = true;
		session_file_put(c->id, c->path, upload_ready, on_transfer, c);
		return;
	case A_DOWNLOAD:
		if (!gateway_ok(c)) {
			finish(c);
			return;
		}
		session_file_get(c->id, c->path, on_data, on_transfer, c);
		return;
	case A_LIST:
		do_list(c);
		finish(c);
		return;
	case A_BULK_DELETE:
		do_bulk_delete(c);
		finish(c);
		return;
	default:
		break;
	}
	b = need_box(c);
	if (!b) {
		finish(c);
		return;
	}
	switch (c->action) {
	case A_GET:
		request_reply(c->req, 200, describe(b));
		break;
	case A_DELETE:
		request_reply(c->req, 200,
			      json_pack("{s:b,s:s,s:s}", "success", 1,
					"sandbox_id", b->id, "message",
					"sandbox deleted"));
		box_delete(b);
		break;
	case A_LOGS:
		request_reply(c->req, 200,
			      json_pack("{s:s%}", "logs",
					b->logs.data ? b->logs.data : "",
					b->logs.len));
		break;
	case A_AUTH:
		do_auth(c, b);
		break;
	case A_ERROR_CONTEXT:
		request_reply(
			c->req, 200,
			json_pack("{s:s,s:s,s:o,s:o}", "sandbox_id", b->id,
				  "status", prime_status_name(b->status),
				  "errorType",
				  b->error_type ? json_string(b->error_type)
						: json_null(),
				  "errorMessage",
				  b->error_message
					  ? json_string(b->error_message)
					  : json_null()));
		break;
	case A_EXPOSE:
		do_expose(c, b);
		break;
	case A_EXPOSE_LIST:
		do_expose_list(c, b);
		break;
	case A_UNEXPOSE:
		do_unexpose(c, b);
		break;
	default:
		break;
	}
	finish(c);
}

/* ---- routing (MHD threads) ---- */

bool prime_owns_auth(const char *url)
{
	return str_starts_with(url, "/prime/gateway/");
}

bool prime_is_upload(const char *method, const char *url)
{
	size_t n = strlen(url);

	return !strcmp(method, "POST") && prime_owns_auth(url) && n > 7 &&
	       !strcmp(url + n - 7, "/upload");
}

/* A JSON object body (an empty one for none); NULL after answering. */
static json_t *body_json(struct request *req)
{
	size_t len;
	const char *body = request_body(req, &len);
	json_error_t jerr;
	json_t *j;

	if (len == 0)
		return json_object();
	j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!j) {
		errorf(req, 422, "unprocessable",
		       "the body is not valid JSON: %s", jerr.text);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		reply_error(req, 422, "unprocessable",
			    "the body must be a JSON object");
		return NULL;
	}
	return j;
}

/* http://HOST[:PORT] as the client reached us. */
static char *base_url(struct request *req)
{
	const char *host = request_header(req, "Host");
	size_t i;

	if (host && *host && strlen(host) < 256) {
		for (i = 0; host[i]; i++)
			if (!(host[i] == '.' || host[i] == ':' ||
			      host[i] == '-' || host[i] == '[' ||
			      host[i] == ']' ||
			      (host[i] >= '0' && host[i] <= '9') ||
			      (host[i] >= 'a' && host[i] <= 'z') ||
			      (host[i] >= 'A' && host[i] <= 'Z')))
				break;
		if (!host[i])
			return xstrfmt("http://%s", host);
	}
	return xstrfmt("http://%s:%u", server_state.cfg->host,
		       (unsigned)server_state.cfg->port);
}

static void not_allowed(struct request *req, const char *allowed)
{
	errorf(req, 405, "method_not_allowed",
	       "'%s' is not allowed on '%s' (allowed: %s)", request_method(req),
	       request_path(req), allowed);
}

static bool method_is(struct request *req, const char *m)
{
	return !strcmp(request_method(req), m);
}

void prime_route(struct request *req)
{
	const char *path = request_path(req);
	struct prime_path pp;
	struct call *c = xcalloc(1, sizeof(*c));
	const char *arg;

	c->sock = -1;
	if (prime_parse_path(path, &pp)) {
		errorf(req, 404, "not_found", "no route '%s'", path);
		goto out_free;
	}
	if (pp.id)
		str_copy(c->id, sizeof(c->id), pp.id);
	c->base_url = base_url(req);
	switch (pp.kind) {
	case PRIME_PATH_SANDBOXES:
		if (method_is(req, "POST")) {
			c->action = A_CREATE;
			if (!(c->body = body_json(req)))
				goto out_free;
		} else if (method_is(req, "GET")) {
			c->action = A_LIST;
			c->path = xstrdup(request_query(req));
		} else if (method_is(req, "DELETE")) {
			c->action = A_BULK_DELETE;
			if (!(c->body = body_json(req)))
				goto out_free;
		} else {
			not_allowed(req, "GET, POST, DELETE");
			goto out_free;
		}
		break;
	case PRIME_PATH_SANDBOX:
		if (method_is(req, "GET"))
			c->action = A_GET;
		else if (method_is(req, "DELETE"))
			c->action = A_DELETE;
		else {
			not_allowed(req, "GET, DELETE");
			goto out_free;
		}
		break;
	case PRIME_PATH_SUB:
		if (!strcmp(pp.sub, "logs") && method_is(req, "GET")) {
			c->action = A_LOGS;
		} else if (!strcmp(pp.sub, "auth") && method_is(req, "POST")) {
			c->action = A_AUTH;
		} else if (!strcmp(pp.sub, "error-context") &&
			   method_is(req, "GET")) {
			c->action = A_ERROR_CONTEXT;
		} else if (!strcmp(pp.sub, "expose") &&
			   method_is(req, "POST")) {
			c->action = A_EXPOSE;
			if (!(c->body = body_json(req)))
				goto out_free;
		} else if (!strcmp(pp.sub, "expose") && method_is(req, "GET")) {
			c->action = A_EXPOSE_LIST;
		} else if (!strcmp(pp.sub, "logs") || !strcmp(pp.sub, "auth") ||
			   !strcmp(pp.sub, "error-context") ||
			   !strcmp(pp.sub, "expose")) {
			not_allowed(req, !strcmp(pp.sub, "auth") ? "POST"
					 : !strcmp(pp.sub, "expose")
						 ? "GET, POST"
						 : "GET");
			goto out_free;
		} else {
			errorf(req, 404, "not_found", "no route '%s'", path);
			goto out_free;
		}
		break;
	case PRIME_PATH_SUB_ITEM:
		if (strcmp(pp.sub, "expose")) {
			errorf(req, 404, "not_found", "no route '%s'", path);
			goto out_free;
		}
		if (!method_is(req, "DELETE")) {
			not_allowed(req, "DELETE");
			goto out_free;
		}
		c->action = A_UNEXPOSE;
		c->path = xstrdup(pp.item);
		break;
	case PRIME_PATH_GATEWAY:
		if (strcmp(pp.item, USER_NS)) {
			errorf(req, 404, "not_found", "no route '%s'", path);
			goto out_free;
		}
		arg = request_header(req, "Authorization");
		c->token = xstrdup(arg && !strncmp(arg, "Bearer ", 7) ? arg + 7
								      : "");
		if (!strcmp(pp.sub, "exec")) {
			if (!method_is(req, "POST")) {
				not_allowed(req, "POST");
				goto out_free;
			}
			c->action = A_EXEC;
			if (!(c->body = body_json(req)))
				goto out_free;
			break;
		}
		if (strcmp(pp.sub, "upload") && strcmp(pp.sub, "download")) {
			errorf(req, 404, "not_found", "no route '%s'", path);
			goto out_free;
		}
		c->action = pp.sub[0] == 'u' ? A_UPLOAD : A_DOWNLOAD;
		if (!method_is(req, c->action == A_UPLOAD ? "POST" : "GET")) {
			not_allowed(req,
				    c->action == A_UPLOAD ? "POST" : "GET");
			goto out_free;
		}
		arg = request_arg(req, "path");
		if (!arg || !*arg || strlen(arg) > 4096) {
			reply_error(req, 400, "bad_request",
				    "'path' (the file's path in the sandbox) "
				    "is required");
			goto out_free;
		}
		arg = request_arg(req, "sandbox_id");
		if (arg && strcmp(arg, c->id)) {
			reply_error(req, 400, "bad_request",
				    "sandbox_id does not match the URL's");
			goto out_free;
		}
		c->path = xstrdup(request_arg(req, "path"));
		if (c->action == A_DOWNLOAD) {
			c->sock = request_dup_socket(req);
			break;
		}
		if (request_multipart_stream(req, "file", SESSION_UPLOAD_CHUNK,
					     &upload_ops, c)) {
			reply_error(req, 400, "bad_request",
				    "the body must be multipart/form-data "
				    "with a 'file' field");
			goto out_free;
		}
		c->up_open = true;
		break;
	default:
		errorf(req, 404, "not_found", "no route '%s'", path);
		goto out_free;
	}
	c->req = request_defer(req);
	loop_post(runner_loop(server_state.runner), run_call, c);
	return;
out_free:
	call_free(c);
}

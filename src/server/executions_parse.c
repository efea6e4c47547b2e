/*
 * Parsers of the rollout API's request bodies: an execution
 * (POST /v1/executions), a pool definition (with an execution, or
 * POST /v1/pools), and the setup-command templates of per-task pools.
 * Client bytes are hostile here: every field is checked for type and
 * range, unknown fields are refused, and nothing but base/ and jansson
 * is used, so tests/fuzz/fuzz_executions.c links this file alone.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "server/executions.h"
#include "base/banned.h"

static int fail(char *err, size_t n, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t n, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static bool known_keys(const json_t *o, const char *const *keys, size_t n,
		       char *err, size_t errlen)
{
	const char *key;
	json_t *v;

	json_object_foreach((json_t *)o, key, v)
	{
		size_t i;

		for (i = 0; i < n; i++)
			if (!strcmp(key, keys[i]))
				break;
		if (i == n) {
			snprintf(err, errlen, "unknown field '%.64s'", key);
			return false;
		}
	}
	return true;
}

/* A number of seconds into milliseconds, in (0, max]. */
static int get_seconds(const json_t *v, const char *name, uint64_t max_ms,
		       uint64_t *out, char *err, size_t errlen)
{
	double s;

	if (!json_is_number(v)) {
		snprintf(err, errlen, "'%s' must be a number of seconds", name);
		return -EINVAL;
	}
	s = json_number_value(v);
	if (!isfinite(s) || s <= 0 || s * 1000.0 > (double)max_ms) {
		snprintf(err, errlen,
			 "'%s' must be more than 0 and at most %llu seconds",
			 name, (unsigned long long)(max_ms / 1000));
		return -EINVAL;
	}
	*out = (uint64_t)(s * 1000.0);
	if (!*out)
		*out = 1;
	return 0;
}

static int get_uint(const json_t *v, const char *name, unsigned lo, unsigned hi,
		    unsigned *out, char *err, size_t errlen)
{
	if (!json_is_integer(v) || json_integer_value(v) < lo ||
	    json_integer_value(v) > hi) {
		snprintf(err, errlen, "'%s' must be an integer from %u to %u",
			 name, lo, hi);
		return -EINVAL;
	}
	*out = (unsigned)json_integer_value(v);
	return 0;
}

/* Copies a string field of at most n - 1 bytes with no control bytes. */
static int get_str(const json_t *v, const char *name, char *out, size_t n,
		   char *err, size_t errlen)
{
	const char *s = json_string_value(v);
	size_t i, len;

	if (!s) {
		snprintf(err, errlen, "'%s' must be a string", name);
		return -EINVAL;
	}
	len = json_string_length(v);
	if (!len || len >= n) {
		snprintf(err, errlen, "'%s' must have 1 to %zu bytes", name,
			 n - 1);
		return -EINVAL;
	}
	for (i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) {
			snprintf(err, errlen,
				 "'%s' must not hold control characters", name);
			return -EINVAL;
		}
	memcpy(out, s, len + 1);
	return 0;
}

/* Names of ids, pools and keys: [A-Za-z0-9_.-]. */
static bool is_name(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("_.-", *s))
			return false;
	return true;
}

static bool is_ident(const char *s, size_t n, bool dots)
{
	size_t i;

	if (!n || isdigit((unsigned char)s[0]) || s[0] == '.')
		return false;
	for (i = 0; i < n; i++) {
		if (s[i] == '.' && dots && i + 1 < n && s[i + 1] != '.')
			continue;
		if (!isalnum((unsigned char)s[i]) && s[i] != '_')
			return false;
	}
	return true;
}

bool executions_entry_ok(const char *entry)
{
	const char *colon = strchr(entry, ':');

	if (!colon)
		return is_ident(entry, strlen(entry), true);
	return is_ident(entry, (size_t)(colon - entry), true) &&
	       is_ident(colon + 1, strlen(colon + 1), false);
}

void exec_pool_release(struct exec_pool_def *p)
{
	json_decref(p->setup_commands);
	json_decref(p->limits);
	p->setup_commands = p->limits = NULL;
}

int executions_parse_pool(const json_t *v, bool for_create,
			  struct exec_pool_def *p, char *err, size_t errlen)
{
	static const char *const keys[] = {"name",	     "mode",
					   "size",	     "recycle_after",
					   "setup_commands", "setup_timeout_s",
					   "limits",	     "llm",
					   "agent",	     "entry"};
	const json_t *x;
	const char *mode = "persistent";
	size_t i;

	memset(p, 0, sizeof(*p));
	p->persistent = true;
	p->size = EXEC_POOL_DEFAULT_SIZE;
	p->recycle_after = EXEC_POOL_DEFAULT_RECYCLE;
	p->setup_timeout_ms = 300000;
	p->llm = -1;
	str_copy(p->entry, sizeof(p->entry), EXEC_DEFAULT_ENTRY);
	if (!json_is_object(v))
		return fail(err, errlen, "'%s' must be an object or a name",
			    "pool");
	if (!known_keys(v, keys, ARRAY_SIZE(keys), err, errlen))
		return -EINVAL;
	if ((x = json_object_get(v, "name")) && !json_is_null(x)) {
		if (get_str(x, "name", p->name, sizeof(p->name), err, errlen))
			return -EINVAL;
		if (!is_name(p->name))
			return fail(err, errlen,
				    "a pool's name may hold only letters, "
				    "digits and '%s'",
				    "_.-");
	} else if (for_create) {
		return fail(err, errlen, "a pool needs a '%s'", "name");
	}
	if ((x = json_object_get(v, "agent")) && !json_is_null(x)) {
		if (get_str(x, "agent", p->agent, sizeof(p->agent), err,
			    errlen))
			return -EINVAL;
	} else if (for_create) {
		return fail(err, errlen, "a pool needs an '%s'", "agent");
	}
	if ((x = json_object_get(v, "entry")) && !json_is_null(x)) {
		if (get_str(x, "entry", p->entry, sizeof(p->entry), err,
			    errlen))
			return -EINVAL;
		if (!executions_entry_ok(p->entry))
			return fail(err, errlen,
				    "'entry' must be 'module' or "
				    "'module:function'%s",
				    "");
	}
	if ((x = json_object_get(v, "mode"))) {
		mode = json_string_value(x);
		if (!mode ||
		    (strcmp(mode, "persistent") && strcmp(mode, "per_task")))
			return fail(err, errlen,
				    "'mode' must be 'persistent' or "
				    "'per_task'%s",
				    "");
		p->persistent = !strcmp(mode, "persistent");
	}
	if ((x = json_object_get(v, "size")) &&
	    get_uint(x, "size", 1, EXEC_POOL_MAX_SIZE, &p->size, err, errlen))
		return -EINVAL;
	if ((x = json_object_get(v, "recycle_after")) &&
	    get_uint(x, "recycle_after", 1, 1000000, &p->recycle_after, err,
		     errlen))
		return -EINVAL;
	if ((x = json_object_get(v, "setup_timeout_s")) &&
	    get_seconds(x, "setup_timeout_s", 3600000, &p->setup_timeout_ms,
			err, errlen))
		return -EINVAL;
	if ((x = json_object_get(v, "setup_commands")) && !json_is_null(x)) {
		if (!json_is_array(x) || json_array_size(x) > EXEC_MAX_SETUP)
			return fail(err, errlen,
				    "'setup_commands' must be a list of at "
				    "most %s strings",
				    "32");
		for (i = 0; i < json_array_size(x); i++) {
			const json_t *c = json_array_get(x, i);

			if (!json_is_string(c) || !json_string_length(c) ||
			    json_string_length(c) > 65536)
				return fail(err, errlen,
					    "each of '%s' must be a "
					    "non-empty string",
					    "setup_commands");
		}
		p->setup_commands = json_deep_copy(x);
	}
	if ((x = json_object_get(v, "limits")) && !json_is_null(x)) {
		if (!json_is_object(x))
			return fail(err, errlen, "'%s' must be an object",
				    "limits");
		p->limits = json_deep_copy(x);
	}
	if ((x = json_object_get(v, "llm")) && !json_is_null(x)) {
		if (!json_is_boolean(x))
			return fail(err, errlen, "'%s' must be a boolean",
				    "llm");
		p->llm = json_is_true(x);
	}
	return 0;
}

json_t *exec_pool_json(const struct exec_pool_def *p)
{
	json_t *o = json_pack("{s:s?,s:s,s:I,s:I,s:O?,s:f,s:O?}", "name",
			      p->name[0] ? p->name : NULL, "mode",
			      p->persistent ? "persistent" : "per_task", "size",
			      (json_int_t)p->size, "recycle_after",
			      (json_int_t)p->recycle_after, "setup_commands",
			      p->setup_commands, "setup_timeout_s",
			      (double)p->setup_timeout_ms / 1000.0, "limits",
			      p->limits);

	json_object_set_new(o, "llm",
			    p->llm < 0 ? json_null() : json_boolean(p->llm));
	if (p->agent[0]) {
		json_object_set_new(o, "agent", json_string(p->agent));
		json_object_set_new(o, "entry", json_string(p->entry));
	}
	return o;
}

void exec_request_release(struct exec_request *r)
{
	json_decref(r->task);
	json_decref(r->agent_config);
	json_decref(r->labels);
	r->task = r->agent_config = r->labels = NULL;
	exec_pool_release(&r->pool);
}

int executions_parse_submit(const char *body, size_t len,
			    uint64_t max_timeout_ms, struct exec_request *r,
			    char *err, size_t errlen)
{
	static const char *const keys[] = {
		"agent",  "entry",     "task",	 "agent_config",
		"pool",	  "timeout_s", "labels", "idempotency_key",
		"retries"};
	json_error_t jerr;
	json_t *o, *x;
	const char *key;
	int ret = -EINVAL;

	memset(r, 0, sizeof(*r));
	r->pool.llm = -1;
	str_copy(r->entry, sizeof(r->entry), EXEC_DEFAULT_ENTRY);
	r->timeout_ms = EXEC_DEFAULT_TIMEOUT_MS < max_timeout_ms
				? EXEC_DEFAULT_TIMEOUT_MS
				: max_timeout_ms;
	o = body && len ? json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr)
			: NULL;
	if (!o) {
		if (!len)
			snprintf(err, errlen,
				 "the request has no body (a JSON object)");
		else
			snprintf(err, errlen, "the body is not JSON: %s",
				 jerr.text);
		return -EINVAL;
	}
	if (!json_is_object(o)) {
		snprintf(err, errlen, "the body must be a JSON object");
		goto out;
	}
	if (!known_keys(o, keys, ARRAY_SIZE(keys), err, errlen))
		goto out;
	x = json_object_get(o, "agent");
	if (!x) {
		snprintf(err, errlen,
			 "an execution needs an 'agent' (the id "
			 "POST /v1/agents gave)");
		goto out;
	}
	if (get_str(x, "agent", r->agent, sizeof(r->agent), err, errlen))
		goto out;
	if ((x = json_object_get(o, "entry"))) {
		if (get_str(x, "entry", r->entry, sizeof(r->entry), err,
			    errlen))
			goto out;
		if (!executions_entry_ok(r->entry)) {
			snprintf(err, errlen,
				 "'entry' must be 'module' or "
				 "'module:function' (Python names)");
			goto out;
		}
	}
	x = json_object_get(o, "task");
	if (x && !json_is_object(x)) {
		snprintf(err, errlen, "'task' must be a JSON object");
		goto out;
	}
	r->task = x ? json_incref(x) : json_object();
	x = json_object_get(o, "agent_config");
	if (x && !json_is_null(x) && !json_is_object(x)) {
		snprintf(err, errlen, "'agent_config' must be a JSON object");
		goto out;
	}
	r->agent_config = json_is_object(x) ? json_incref(x) : json_object();
	x = json_object_get(o, "labels");
	if (x && !json_is_null(x)) {
		json_t *lv;

		if (!json_is_object(x)) {
			snprintf(err, errlen, "'labels' must be an object");
			goto out;
		}
		json_object_foreach(x, key, lv)
		{
			if (!json_is_string(lv) || !*key || strlen(key) > 128 ||
			    json_string_length(lv) > 1024) {
				snprintf(err, errlen,
					 "label '%.64s' must be a string "
					 "(keys up to 128 bytes, values up to "
					 "1024)",
					 key);
				goto out;
			}
		}
		r->labels = json_incref(x);
	} else {
		r->labels = json_object();
	}
	x = json_object_get(o, "pool");
	if (json_is_string(x)) {
		if (get_str(x, "pool", r->pool_name, sizeof(r->pool_name), err,
			    errlen))
			goto out;
		if (!is_name(r->pool_name)) {
			snprintf(err, errlen, "no pool can be named that");
			goto out;
		}
	} else if (x && !json_is_null(x)) {
		if (executions_parse_pool(x, false, &r->pool, err, errlen))
			goto out;
		if (r->pool.name[0] || r->pool.agent[0]) {
			snprintf(err, errlen,
				 "a pool declared with an execution has no "
				 "'name' or 'agent' (create a named pool with "
				 "POST /v1/pools)");
			goto out;
		}
		r->pool_given = true;
	}
	if ((x = json_object_get(o, "timeout_s")) &&
	    get_seconds(x, "timeout_s", max_timeout_ms, &r->timeout_ms, err,
			errlen))
		goto out;
	if ((x = json_object_get(o, "retries")) &&
	    get_uint(x, "retries", 0, EXEC_MAX_RETRIES, &r->retries, err,
		     errlen))
		goto out;
	if ((x = json_object_get(o, "idempotency_key")) && !json_is_null(x) &&
	    get_str(x, "idempotency_key", r->idem_key, sizeof(r->idem_key), err,
		    errlen))
		goto out;
	ret = 0;
out:
	json_decref(o);
	return ret;
}

int executions_template(const char *tmpl, const json_t *task, struct buf *out,
			char *err, size_t errlen)
{
	const char *p = tmpl;

	while (*p) {
		const char *close;
		char name[128];
		const json_t *v;
		size_t n;

		if (p[0] == '{' && p[1] == '{') {
			buf_add(out, "{", 1);
			p += 2;
			continue;
		}
		if (p[0] == '}' && p[1] == '}') {
			buf_add(out, "}", 1);
			p += 2;
			continue;
		}
		if (*p == '}') {
			snprintf(err, errlen,
				 "a single '}' in a setup command (write "
				 "'}}' for a brace)");
			return -EINVAL;
		}
		if (*p != '{') {
			n = strcspn(p, "{}");
			buf_add(out, p, n);
			p += n;
			continue;
		}
		close = strchr(p + 1, '}');
		n = close ? (size_t)(close - p - 1) : 0;
		if (!close || !n || n >= sizeof(name)) {
			snprintf(err, errlen,
				 "a '{' with no field name and '}' after it "
				 "in a setup command (write '{{' for a "
				 "brace)");
			return -EINVAL;
		}
		memcpy(name, p + 1, n);
		name[n] = '\0';
		v = json_object_get(task, name);
		if (!v) {
			snprintf(err, errlen,
				 "a setup command names {%.64s}, which the "
				 "task does not have",
				 name);
			return -EINVAL;
		}
		if (json_is_string(v)) {
			buf_add(out, json_string_value(v),
				json_string_length(v));
		} else {
			char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

			if (s)
				buf_adds(out, s);
			free(s);
		}
		p = close + 1;
	}
	return 0;
}

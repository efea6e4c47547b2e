/*
 * Request parsers of the prime-sandboxes surface (server/prime.h): the
 * create, exec, bulk-delete and expose bodies, the list query and the
 * route's path. Field names and types follow the client's snake_case
 * request models; unknown fields are ignored, as the platform ignores
 * them, so a newer client that sends more still works. Every parser
 * takes hostile bytes: it either fills its struct or names the field
 * and what is wrong with it.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/util.h"
#include "server/prime.h"
#include "base/banned.h"

static const char *const status_names[PRIME_NSTATUS] = {
	"PENDING", "PROVISIONING", "RUNNING", "STOPPED",
	"ERROR",   "TERMINATED",   "TIMEOUT",
};

const char *prime_status_name(enum prime_status s)
{
	return (unsigned)s < PRIME_NSTATUS ? status_names[s] : "ERROR";
}

int prime_status_parse(const char *word)
{
	int i;

	for (i = 0; i < PRIME_NSTATUS; i++)
		if (!strcmp(word, status_names[i]))
			return i;
	return -1;
}

static int __attribute__((format(printf, 3, 4)))
bad(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

/* A string or null (NULL) at key; false when it is something else. */
static bool get_str(json_t *o, const char *key, const char **out)
{
	json_t *v = json_object_get(o, key);

	*out = NULL;
	if (!v || json_is_null(v))
		return true;
	if (!json_is_string(v))
		return false;
	*out = json_string_value(v);
	return true;
}

/* A positive finite number or null (def) at key. */
static bool get_positive(json_t *o, const char *key, double def, double *out)
{
	json_t *v = json_object_get(o, key);

	*out = def;
	if (!v || json_is_null(v))
		return true;
	if (!json_is_number(v))
		return false;
	*out = json_number_value(v);
	return isfinite(*out) && *out > 0;
}

static bool is_env_name(const char *s)
{
	size_t i;

	if (!((s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z') ||
	      s[0] == '_'))
		return false;
	for (i = 1; s[i]; i++)
		if (!((s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= 'a' && s[i] <= 'z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return false;
	return i <= 256;
}

/* An object of environment variables (names as a shell takes them,
 * string values without NUL) or null at key. */
static int get_env(json_t *o, const char *key, json_t **out, char *err,
		   size_t errlen)
{
	json_t *v = json_object_get(o, key), *e;
	const char *k;

	*out = NULL;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_object(v))
		return bad(err, errlen, "%s: must be an object of strings",
			   key);
	json_object_foreach(v, k, e)
	{
		if (!is_env_name(k))
			return bad(err, errlen,
				   "%s: '%.64s' is not a variable name", key,
				   k);
		if (!json_is_string(e) ||
		    strlen(json_string_value(e)) != json_string_length(e))
			return bad(err, errlen,
				   "%s.%s: must be a string without NUL", key,
				   k);
	}
	*out = v;
	return 0;
}

/* A non-empty array of non-empty strings without NUL. */
static bool is_string_list(json_t *v, bool allow_empty)
{
	json_t *e;
	size_t i;

	if (!json_is_array(v) || (!allow_empty && !json_array_size(v)))
		return false;
	json_array_foreach(v, i, e)
	{
		if (!json_is_string(e) || !json_string_length(e) ||
		    strlen(json_string_value(e)) != json_string_length(e))
			return false;
	}
	return true;
}

int prime_parse_create(json_t *body, struct prime_create *out, char *err,
		       size_t errlen)
{
	json_t *v;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(body))
		return bad(err, errlen, "the body must be a JSON object");
	if (!get_str(body, "name", &out->name))
		return bad(err, errlen, "name: must be a string");
	if (!get_str(body, "docker_image", &out->docker_image))
		return bad(err, errlen, "docker_image: must be a string");
	if (!get_str(body, "start_command", &out->start_command))
		return bad(err, errlen, "start_command: must be a string");
	if (!get_str(body, "team_id", &out->team_id))
		return bad(err, errlen, "team_id: must be a string");
	if (!get_str(body, "registry_credentials_id",
		     &out->registry_credentials_id))
		return bad(err, errlen,
			   "registry_credentials_id: must be a string");
	if ((out->name && strlen(out->name) > 256) ||
	    (out->docker_image && strlen(out->docker_image) > 512))
		return bad(err, errlen, "name or docker_image: too long");
	if (!get_positive(body, "cpu_cores", 1, &out->cpu_cores))
		return bad(err, errlen, "cpu_cores: must be a positive number");
	if (!get_positive(body, "memory_gb", 2, &out->memory_gb))
		return bad(err, errlen, "memory_gb: must be a positive number");
	if (!get_positive(body, "disk_size_gb", 5, &out->disk_size_gb))
		return bad(err, errlen,
			   "disk_size_gb: must be a positive number");
	if (!get_positive(body, "timeout_minutes", 60, &out->timeout_minutes))
		return bad(err, errlen,
			   "timeout_minutes: must be a positive number of "
			   "minutes");
	v = json_object_get(body, "gpu_count");
	if (v && !json_is_null(v) &&
	    (!json_is_integer(v) || json_integer_value(v) < 0))
		return bad(err, errlen,
			   "gpu_count: must be a non-negative integer");
	out->gpu_count = json_is_integer(v) ? json_integer_value(v) : 0;
	v = json_object_get(body, "network_access");
	if (v && !json_is_null(v) && !json_is_boolean(v))
		return bad(err, errlen, "network_access: must be a boolean");
	out->network_access = !v || json_is_null(v) || json_is_true(v);
	if (get_env(body, "environment_vars", &out->environment_vars, err,
		    errlen) ||
	    get_env(body, "secrets", &out->secrets, err, errlen))
		return -1;
	v = json_object_get(body, "labels");
	if (v && !json_is_null(v)) {
		if (!is_string_list(v, true) || json_array_size(v) > 64)
			return bad(err, errlen,
				   "labels: must be a list of at most 64 "
				   "non-empty strings");
		out->labels = v;
	}
	v = json_object_get(body, "advanced_configs");
	if (v && !json_is_null(v)) {
		if (!json_is_object(v))
			return bad(err, errlen,
				   "advanced_configs: must be an object");
		out->advanced_configs = v;
		out->host_routes = json_object_get(v, "host_routes");
	}
	if (!out->host_routes)
		out->host_routes = json_object_get(body, "host_routes");
	if (json_is_null(out->host_routes))
		out->host_routes = NULL;
	if (out->host_routes && !json_is_object(out->host_routes))
		return bad(err, errlen, "host_routes: must be an object");
	return 0;
}

int prime_parse_exec(json_t *body, struct prime_exec *out, char *err,
		     size_t errlen)
{
	json_t *v;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(body))
		return bad(err, errlen, "the body must be a JSON object");
	v = json_object_get(body, "command");
	if (!json_is_string(v) ||
	    strlen(json_string_value(v)) != json_string_length(v))
		return bad(err, errlen,
			   "command: required, a string without NUL");
	out->command = json_string_value(v);
	if (!get_str(body, "working_dir", &out->working_dir) ||
	    (out->working_dir &&
	     (!*out->working_dir || strlen(out->working_dir) > 4096)))
		return bad(err, errlen,
			   "working_dir: must be a non-empty path");
	if (!get_str(body, "sandbox_id", &out->sandbox_id))
		return bad(err, errlen, "sandbox_id: must be a string");
	if (get_env(body, "env", &out->env, err, errlen))
		return -1;
	if (!get_positive(body, "timeout", 0, &out->timeout_s)) {
		/* 0 means "no timeout given" to the client's own model. */
		v = json_object_get(body, "timeout");
		if (!json_is_number(v) || json_number_value(v) != 0)
			return bad(err, errlen,
				   "timeout: must be a positive number of "
				   "seconds");
		out->timeout_s = 0;
	}
	return 0;
}

int prime_parse_bulk(json_t *body, struct prime_bulk *out, char *err,
		     size_t errlen)
{
	json_t *ids, *labels;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(body))
		return bad(err, errlen, "the body must be a JSON object");
	ids = json_object_get(body, "sandbox_ids");
	labels = json_object_get(body, "labels");
	if (json_is_null(ids))
		ids = NULL;
	if (json_is_null(labels))
		labels = NULL;
	if (!ids == !labels)
		return bad(err, errlen,
			   "give exactly one of sandbox_ids and labels");
	if (ids && (!is_string_list(ids, false) || json_array_size(ids) > 1000))
		return bad(err, errlen,
			   "sandbox_ids: must be a list of 1 to 1000 "
			   "non-empty strings");
	if (labels && !is_string_list(labels, false))
		return bad(err, errlen,
			   "labels: must be a non-empty list of non-empty "
			   "strings");
	out->sandbox_ids = ids;
	out->labels = labels;
	return 0;
}

int prime_parse_expose(json_t *body, struct prime_expose *out, char *err,
		       size_t errlen)
{
	json_t *v;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(body))
		return bad(err, errlen, "the body must be a JSON object");
	v = json_object_get(body, "port");
	if (!json_is_integer(v) || json_integer_value(v) < 1 ||
	    json_integer_value(v) > 65535)
		return bad(err, errlen,
			   "port: required, an integer from 1 to 65535");
	out->port = (unsigned)json_integer_value(v);
	if (!get_str(body, "name", &out->name) ||
	    (out->name && strlen(out->name) > 128))
		return bad(err, errlen,
			   "name: must be a string of at most 128 bytes");
	return 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decodes s[0..n) ('+' is a space, as forms send it) into b, NUL
 * terminated. False for a bad escape or a NUL byte. */
static bool decode(struct buf *b, const char *s, size_t n)
{
	size_t i;

	buf_reset(b);
	for (i = 0; i < n; i++) {
		char c = s[i];

		if (c == '+') {
			c = ' ';
		} else if (c == '%') {
			int h, l;

			if (i + 2 >= n)
				return false;
			h = hexval(s[i + 1]);
			l = hexval(s[i + 2]);
			if (h < 0 || l < 0)
				return false;
			c = (char)(h << 4 | l);
			i += 2;
		}
		if (!c)
			return false;
		buf_add(b, &c, 1);
	}
	buf_add(b, "", 1);
	b->len--;
	return true;
}

static bool get_uint(const char *s, unsigned min, unsigned max, unsigned *out)
{
	uint64_t v;

	if (parse_u64(s, &v) || v < min || v > max)
		return false;
	*out = (unsigned)v;
	return true;
}

int prime_parse_list(const char *query, struct prime_list *out, char *err,
		     size_t errlen)
{
	struct buf key, val;
	const char *p = query ? query : "";
	int r = 0;

	memset(out, 0, sizeof(*out));
	out->page = 1;
	out->per_page = 50;
	out->status = -1;
	out->is_active = -1;
	out->labels = json_array();
	buf_init(&key);
	buf_init(&val);
	while (*p && !r) {
		size_t n = strcspn(p, "&"), k = strcspn(p, "=");

		if (k > n)
			k = n;
		if (n == 0) {
			p++;
			continue;
		}
		if (!decode(&key, p, k) ||
		    !decode(&val, p + k + (k < n), n - k - (k < n))) {
			r = bad(err, errlen, "the query has a bad escape");
			break;
		}
		if (!strcmp(key.data, "page")) {
			if (!get_uint(val.data, 1, 1000000, &out->page))
				r = bad(err, errlen,
					"page: must be an integer from 1");
		} else if (!strcmp(key.data, "per_page")) {
			if (!get_uint(val.data, 1, PRIME_MAX_PER_PAGE,
				      &out->per_page))
				r = bad(err, errlen,
					"per_page: must be an integer from 1 "
					"to %d",
					PRIME_MAX_PER_PAGE);
		} else if (!strcmp(key.data, "status")) {
			out->status = prime_status_parse(val.data);
			if (out->status < 0)
				r = bad(err, errlen,
					"status: must be one of PENDING, "
					"PROVISIONING, RUNNING, STOPPED, "
					"ERROR, TERMINATED, TIMEOUT");
		} else if (!strcmp(key.data, "labels")) {
			if (!val.len || json_array_size(out->labels) >= 64)
				r = bad(err, errlen,
					"labels: at most 64, none empty");
			else
				json_array_append_new(
					out->labels,
					json_stringn(val.data, val.len));
		} else if (!strcmp(key.data, "is_active")) {
			if (!strcasecmp(val.data, "true") ||
			    !strcmp(val.data, "1"))
				out->is_active = 1;
			else if (!strcasecmp(val.data, "false") ||
				 !strcmp(val.data, "0"))
				out->is_active = 0;
			else
				r = bad(err, errlen,
					"is_active: must be true or false");
		}
		p += n;
	}
	buf_release(&key);
	buf_release(&val);
	if (r) {
		json_decref(out->labels);
		out->labels = NULL;
	}
	return r;
}

int prime_parse_path(const char *path, struct prime_path *out)
{
	char *parts[6];
	size_t n = 0;
	char *p;

	memset(out, 0, sizeof(*out));
	if (strncmp(path, "/prime/", 7) || strlen(path) >= sizeof(out->buf))
		return -1;
	str_copy(out->buf, sizeof(out->buf), path + 7);
	p = out->buf;
	/* A trailing slash is the same route. */
	if (*p && p[strlen(p) - 1] == '/')
		p[strlen(p) - 1] = '\0';
	while (*p && n < ARRAY_SIZE(parts)) {
		parts[n++] = p;
		p += strcspn(p, "/");
		if (*p)
			*p++ = '\0';
	}
	if (*p)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (!*parts[i] || strlen(parts[i]) > 128)
			return -1;
	if (n == 4 && !strcmp(parts[0], "gateway")) {
		out->kind = PRIME_PATH_GATEWAY;
		out->item = parts[1];
		out->id = parts[2];
		out->sub = parts[3];
		return 0;
	}
	if (n < 3 || strcmp(parts[0], "api") || strcmp(parts[1], "v1") ||
	    strcmp(parts[2], "sandbox"))
		return -1;
	out->kind = n == 3   ? PRIME_PATH_SANDBOXES
		    : n == 4 ? PRIME_PATH_SANDBOX
		    : n == 5 ? PRIME_PATH_SUB
			     : PRIME_PATH_SUB_ITEM;
	out->id = n > 3 ? parts[3] : NULL;
	out->sub = n > 4 ? parts[4] : NULL;
	out->item = n > 5 ? parts[5] : NULL;
	return 0;
}

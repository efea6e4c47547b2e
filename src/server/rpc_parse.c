/*
 * Parsers of the interface requests' bodies: a call (Seer's {"fn",
 * "args", "kwargs"}) and a load. Client bytes, parsed as hostile: every
 * malformed body gets a message naming what is wrong. Links with base/
 * alone (tests/fuzz/fuzz_rpc.c).
 */
#include <stdio.h>
#include <string.h>

#include "server/rpc.h"
#include "base/banned.h"

bool rpc_parse_name(const char *s, size_t n)
{
	size_t i;

	if (!s || n == 0 || n > 63 || s[0] == '.')
		return false;
	for (i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_' || c == '-' ||
		      c == '.'))
			return false;
	}
	return true;
}

static const char *type_name(const json_t *j)
{
	switch (json_typeof(j)) {
	case JSON_OBJECT:
		return "an object";
	case JSON_ARRAY:
		return "a list";
	case JSON_STRING:
		return "a string";
	case JSON_INTEGER:
	case JSON_REAL:
		return "a number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "a boolean";
	default:
		return "null";
	}
}

/* The body as a JSON object, or NULL with err set. */
static json_t *load_object(const char *body, size_t len, const char *what,
			   char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *j;

	if (!body || len == 0) {
		snprintf(err, errlen, "the body is empty: %s", what);
		return NULL;
	}
	j = json_loadb(body, len,
		       JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL |
			       JSON_DECODE_ANY,
		       &jerr);
	if (!j) {
		if (strstr(jerr.text, "too big"))
			snprintf(err, errlen,
				 "the body is not JSON sbx can read: an "
				 "integer at line %d column %d is outside "
				 "the 64-bit range",
				 jerr.line, jerr.column);
		else
			snprintf(err, errlen,
				 "the body is not JSON: %s (line %d, column "
				 "%d)",
				 jerr.text, jerr.line, jerr.column);
		return NULL;
	}
	if (!json_is_object(j)) {
		snprintf(err, errlen, "the body must be a JSON object, not %s",
			 type_name(j));
		json_decref(j);
		return NULL;
	}
	return j;
}

/* A positive number of seconds at most max, or absent/null. */
static int get_seconds(json_t *o, const char *key, json_t *out, char *err,
		       size_t errlen)
{
	json_t *v = json_object_get(o, key);
	double d;

	if (!v || json_is_null(v))
		return 0;
	if (!json_is_number(v)) {
		snprintf(err, errlen,
			 "'%s' must be a number of seconds, not %s", key,
			 type_name(v));
		return -1;
	}
	d = json_number_value(v);
	if (!(d > 0) || d > RPC_PARSE_MAX_TIMEOUT_S) {
		snprintf(err, errlen,
			 "'%s' must be more than 0 and at most %d seconds", key,
			 RPC_PARSE_MAX_TIMEOUT_S);
		return -1;
	}
	json_object_set_new(out, key, json_real(d));
	return 0;
}

json_t *rpc_parse_call(const char *body, size_t len, char *err, size_t errlen)
{
	json_t *j = load_object(body, len,
				"a call is a JSON object {\"fn\": NAME, "
				"\"args\": [...], \"kwargs\": {...}}",
				err, errlen);
	json_t *out = NULL, *fn, *args, *kwargs;
	const char *key;
	json_t *v;

	if (!j)
		return NULL;
	json_object_foreach(j, key, v)
	{
		if (strcmp(key, "fn") && strcmp(key, "args") &&
		    strcmp(key, "kwargs") && strcmp(key, "timeout_s")) {
			snprintf(err, errlen,
				 "unknown field '%.64s' (a call takes fn, "
				 "args, kwargs and timeout_s)",
				 key);
			goto out;
		}
	}
	fn = json_object_get(j, "fn");
	if (!fn) {
		snprintf(err, errlen,
			 "the body has no 'fn' (the name of the function to "
			 "call)");
		goto out;
	}
	if (!json_is_string(fn)) {
		snprintf(err, errlen, "'fn' must be a string, not %s",
			 type_name(fn));
		goto out;
	}
	args = json_object_get(j, "args");
	if (args && !json_is_null(args) && !json_is_array(args)) {
		snprintf(err, errlen, "'args' must be a list, not %s",
			 type_name(args));
		goto out;
	}
	kwargs = json_object_get(j, "kwargs");
	if (kwargs && !json_is_null(kwargs) && !json_is_object(kwargs)) {
		snprintf(err, errlen, "'kwargs' must be an object, not %s",
			 type_name(kwargs));
		goto out;
	}
	out = json_pack("{s:O,s:o,s:o}", "fn", fn, "args",
			json_is_array(args) ? json_incref(args) : json_array(),
			"kwargs",
			json_is_object(kwargs) ? json_incref(kwargs)
					       : json_object());
	if (get_seconds(j, "timeout_s", out, err, errlen)) {
		json_decref(out);
		out = NULL;
	}
out:
	json_decref(j);
	return out;
}

json_t *rpc_parse_load(const char *body, size_t len, char *err, size_t errlen)
{
	json_t *j = load_object(body, len,
				"a load is a JSON object {\"name\": NAME, "
				"\"source\": CODE} or {\"name\": NAME, "
				"\"path\": FILE}",
				err, errlen);
	json_t *out = NULL, *name, *source, *path, *workers;
	const char *key;
	json_t *v;

	if (!j)
		return NULL;
	json_object_foreach(j, key, v)
	{
		if (strcmp(key, "name") && strcmp(key, "source") &&
		    strcmp(key, "path") && strcmp(key, "workers") &&
		    strcmp(key, "timeout_s") && strcmp(key, "load_timeout_s")) {
			snprintf(err, errlen,
				 "unknown field '%.64s' (a load takes name, "
				 "source or path, workers, timeout_s and "
				 "load_timeout_s)",
				 key);
			goto out;
		}
	}
	out = json_object();
	name = json_object_get(j, "name");
	if (name && !json_is_null(name)) {
		if (!json_is_string(name) ||
		    !rpc_parse_name(json_string_value(name),
				    json_string_length(name))) {
			snprintf(err, errlen,
				 "'name' must be 1 to 63 letters, digits, "
				 "'_', '-' or '.', not starting with '.'");
			goto bad;
		}
		json_object_set(out, "name", name);
	} else {
		json_object_set_new(out, "name", json_string("interface"));
	}
	source = json_object_get(j, "source");
	path = json_object_get(j, "path");
	if (source && json_is_null(source))
		source = NULL;
	if (path && json_is_null(path))
		path = NULL;
	if (!source == !path) {
		snprintf(err, errlen,
			 "give one of 'source' (the module's code) and "
			 "'path' (a file in the sandbox)");
		goto bad;
	}
	if (source) {
		if (!json_is_string(source)) {
			snprintf(err, errlen, "'source' must be a string");
			goto bad;
		}
		if (json_string_length(source) > RPC_PARSE_MAX_SOURCE) {
			snprintf(err, errlen,
				 "'source' is longer than %u bytes; put the "
				 "module in a file and give its 'path'",
				 RPC_PARSE_MAX_SOURCE);
			goto bad;
		}
		json_object_set(out, "source", source);
	} else {
		if (!json_is_string(path) || !json_string_length(path) ||
		    json_string_length(path) > 4096 ||
		    strlen(json_string_value(path)) !=
			    json_string_length(path)) {
			snprintf(err, errlen,
				 "'path' must be a file's path (no NUL, at "
				 "most 4096 bytes)");
			goto bad;
		}
		json_object_set(out, "path", path);
	}
	workers = json_object_get(j, "workers");
	if (workers && !json_is_null(workers)) {
		if (!json_is_integer(workers) ||
		    json_integer_value(workers) < 1 ||
		    json_integer_value(workers) > RPC_PARSE_MAX_WORKERS) {
			snprintf(err, errlen,
				 "'workers' must be an integer from 1 to %d",
				 RPC_PARSE_MAX_WORKERS);
			goto bad;
		}
		json_object_set(out, "workers", workers);
	}
	if (get_seconds(j, "timeout_s", out, err, errlen) ||
	    get_seconds(j, "load_timeout_s", out, err, errlen))
		goto bad;
	goto out;
bad:
	json_decref(out);
	out = NULL;
out:
	json_decref(j);
	return out;
}

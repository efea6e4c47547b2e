/*
 * The "llm" option of sandboxes and runs: false, true, or an object with
 * a default session name and limits. A parser of client bytes, kept apart
 * so the fuzz targets can link it alone.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "base/util.h"
#include "server/gateway.h"
#include "base/banned.h"

static int get_limit(const json_t *obj, const char *key, uint64_t *out,
		     char *err, size_t errlen)
{
	const json_t *v = json_object_get(obj, key);

	if (!v || json_is_null(v))
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 0) {
		snprintf(err, errlen,
			 "'llm.%s' must be a whole number, 0 or more", key);
		return -EINVAL;
	}
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

int gateway_opts_parse(const json_t *v, bool on_default, struct gateway_opts *o,
		       char *err, size_t errlen)
{
	static const char *const known[] = {
		"session", "max_calls", "max_prompt_tokens",
		"max_completion_tokens", "max_concurrent"};
	const char *key;
	const json_t *x;
	size_t i;

	memset(o, 0, sizeof(*o));
	if (!v || json_is_null(v)) {
		o->on = on_default;
		return 0;
	}
	if (json_is_boolean(v)) {
		o->on = json_is_true(v);
		return 0;
	}
	if (!json_is_object(v)) {
		snprintf(err, errlen, "'llm' must be true, false or an object");
		return -EINVAL;
	}
	json_object_foreach((json_t *)v, key, x)
	{
		for (i = 0; i < ARRAY_SIZE(known); i++)
			if (!strcmp(key, known[i]))
				break;
		if (i == ARRAY_SIZE(known)) {
			snprintf(err, errlen, "unknown field 'llm.%.64s'", key);
			return -EINVAL;
		}
	}
	o->on = true;
	x = json_object_get(v, "session");
	if (x && !json_is_null(x)) {
		if (!json_is_string(x) || !json_string_length(x) ||
		    json_string_length(x) >= sizeof(o->session) ||
		    strlen(json_string_value(x)) != json_string_length(x)) {
			snprintf(err, errlen,
				 "'llm.session' must be a string of 1 to %zu "
				 "bytes",
				 sizeof(o->session) - 1);
			return -EINVAL;
		}
		str_copy(o->session, sizeof(o->session), json_string_value(x));
	}
	if (get_limit(v, "max_calls", &o->max_calls, err, errlen) ||
	    get_limit(v, "max_prompt_tokens", &o->max_prompt_tokens, err,
		      errlen) ||
	    get_limit(v, "max_completion_tokens", &o->max_completion_tokens,
		      err, errlen) ||
	    get_limit(v, "max_concurrent", &o->max_concurrent, err, errlen))
		return -EINVAL;
	return 0;
}

int gateway_routes_parse(const json_t *v, struct gateway_opts *o, char *err,
			 size_t errlen)
{
	static const char *const reserved[] = {"/v1/", "/meta/", "/rllm/",
					       "/llm/"};
	const char *key;
	const json_t *x;
	size_t i;

	o->nroutes = 0;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_object(v)) {
		snprintf(err, errlen,
			 "'host_routes' must be an object of path prefixes "
			 "and URLs");
		return -EINVAL;
	}
	if (json_object_size(v) > GATEWAY_MAX_ROUTES) {
		snprintf(err, errlen, "'host_routes' has more than %d routes",
			 GATEWAY_MAX_ROUTES);
		return -EINVAL;
	}
	json_object_foreach((json_t *)v, key, x)
	{
		struct gateway_route *r = &o->routes[o->nroutes];
		size_t n = strlen(key);
		const char *url = json_string_value(x);

		if (n < 3 || n >= sizeof(r->prefix) || key[0] != '/' ||
		    key[n - 1] != '/' || strstr(key, "..") ||
		    strstr(key, "//") || strpbrk(key, "?#% \t\r\n")) {
			snprintf(err, errlen,
				 "host route '%.64s': a prefix is a path such "
				 "as '/tools/' (starting and ending with '/', "
				 "at most %zu bytes)",
				 key, sizeof(r->prefix) - 1);
			return -EINVAL;
		}
		for (i = 0; i < ARRAY_SIZE(reserved); i++)
			if (!strncmp(key, reserved[i], strlen(reserved[i]))) {
				snprintf(err, errlen,
					 "host route '%.64s': '%s' is the "
					 "gateway's own",
					 key, reserved[i]);
				return -EINVAL;
			}
		if (!url ||
		    (strncmp(url, "http://", 7) &&
		     strncmp(url, "https://", 8)) ||
		    strlen(url) >= sizeof(r->target) ||
		    strpbrk(url, "?# \t\r\n")) {
			snprintf(err, errlen,
				 "host route '%.64s': the target must be an "
				 "http:// or https:// URL without a query",
				 key);
			return -EINVAL;
		}
		str_copy(r->prefix, sizeof(r->prefix), key);
		str_copy(r->target, sizeof(r->target), url);
		/* The path is appended whole: no slash of the base's own. */
		n = strlen(r->target);
		while (n > 8 && r->target[n - 1] == '/')
			r->target[--n] = '\0';
		o->nroutes++;
	}
	return 0;
}

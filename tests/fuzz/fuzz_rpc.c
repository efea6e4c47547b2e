/*
 * libFuzzer target for the interface request parsers (POST
 * /v1/sandboxes/{id}/rpc and .../rpc/{name}): any bytes must parse into
 * a checked object or be refused with a message, never crash or leak.
 * The first byte picks the parser: a call, a load, or a name.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/rpc.h"
#include "base/banned.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_call(const char *body, size_t len)
{
	char err[256] = "";
	json_t *c = rpc_parse_call(body, len, err, sizeof(err));
	json_t *t;

	if (!c) {
		if (!err[0])
			abort(); /* refused without saying why */
		return;
	}
	if (!json_is_string(json_object_get(c, "fn")) ||
	    !json_is_array(json_object_get(c, "args")) ||
	    !json_is_object(json_object_get(c, "kwargs")))
		abort();
	t = json_object_get(c, "timeout_s");
	if (t && (!json_is_real(t) || !(json_real_value(t) > 0) ||
		  json_real_value(t) > RPC_PARSE_MAX_TIMEOUT_S))
		abort();
	json_decref(c);
}

static void check_load(const char *body, size_t len)
{
	char err[256] = "";
	json_t *l = rpc_parse_load(body, len, err, sizeof(err));
	json_t *name, *w;

	if (!l) {
		if (!err[0])
			abort();
		return;
	}
	name = json_object_get(l, "name");
	if (!json_is_string(name) ||
	    !rpc_parse_name(json_string_value(name), json_string_length(name)))
		abort();
	if (!json_object_get(l, "source") == !json_object_get(l, "path"))
		abort();
	if (json_object_get(l, "source") &&
	    json_string_length(json_object_get(l, "source")) >
		    RPC_PARSE_MAX_SOURCE)
		abort();
	w = json_object_get(l, "workers");
	if (w && (json_integer_value(w) < 1 ||
		  json_integer_value(w) > RPC_PARSE_MAX_WORKERS))
		abort();
	json_decref(l);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *body;
	size_t i;

	if (size < 1)
		return 0;
	body = (const char *)data + 1;
	switch (data[0] % 3) {
	case 0:
		check_call(body, size - 1);
		break;
	case 1:
		check_load(body, size - 1);
		break;
	default:
		if (rpc_parse_name(body, size - 1)) {
			if (size - 1 > 63 || body[0] == '.')
				abort();
			for (i = 0; i < size - 1; i++)
				if (body[i] == '/' || body[i] == '\0')
					abort();
		}
		break;
	}
	return 0;
}

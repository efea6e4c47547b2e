/*
 * libFuzzer target for the rollout API's parsers: an execution (POST
 * /v1/executions), a pool definition (POST /v1/pools) and the setup
 * command templates of per-task pools. Any bytes must parse into checked
 * fields or be refused with a message; a parsed pool must survive the
 * round trip through its JSON. The first byte picks the parser.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/executions.h"
#include "base/banned.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_submit(const char *body, size_t len)
{
	struct exec_request r;
	char err[512] = "";

	if (executions_parse_submit(body, len, 3600000, &r, err, sizeof(err))) {
		if (!err[0])
			abort(); /* refused without saying why */
		exec_request_release(&r);
		return;
	}
	if (!r.agent[0] || !executions_entry_ok(r.entry) ||
	    !json_is_object(r.task) || !json_is_object(r.agent_config) ||
	    !json_is_object(r.labels) || !r.timeout_ms ||
	    r.timeout_ms > 3600000 || r.retries > EXEC_MAX_RETRIES)
		abort();
	exec_request_release(&r);
}

static void check_pool(const char *body, size_t len, bool create)
{
	struct exec_pool_def p, q;
	json_t *j = json_loadb(body, len, 0, NULL), *again;
	char err[256] = "";

	if (!j)
		return;
	if (executions_parse_pool(j, create, &p, err, sizeof(err))) {
		if (!err[0])
			abort();
		exec_pool_release(&p);
		json_decref(j);
		return;
	}
	if (!p.size || p.size > EXEC_POOL_MAX_SIZE || !p.recycle_after)
		abort();
	again = exec_pool_json(&p);
	if (executions_parse_pool(again, create, &q, err, sizeof(err)) ||
	    q.size != p.size || q.persistent != p.persistent ||
	    strcmp(q.name, p.name))
		abort();
	exec_pool_release(&q);
	json_decref(again);
	exec_pool_release(&p);
	json_decref(j);
}

static void check_template(const char *text, size_t len)
{
	json_t *task = json_pack("{s:s,s:i,s:[i]}", "package", "numpy", "n", 3,
				 "list", 1);
	char *tmpl = strndup(text, len);
	char err[256] = "";
	struct buf b;

	buf_init(&b);
	if (executions_template(tmpl, task, &b, err, sizeof(err)) && !err[0])
		abort();
	buf_release(&b);
	free(tmpl);
	json_decref(task);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *body = (const char *)data + 1;

	if (!size)
		return 0;
	switch (data[0] % 4) {
	case 0:
		check_submit(body, size - 1);
		break;
	case 1:
		check_pool(body, size - 1, false);
		break;
	case 2:
		check_pool(body, size - 1, true);
		break;
	default:
		check_template(body, size - 1);
		break;
	}
	return 0;
}

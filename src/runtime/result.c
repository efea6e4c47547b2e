/*
 * Result serialisation.
 */
#include "base/text.h"
#include "runtime/result.h"
#include "base/banned.h"

json_t *json_text(const char *data, size_t len)
{
	struct buf b;
	json_t *s;

	buf_init(&b);
	utf8_repair(&b, data ? data : "", data ? len : 0);
	s = json_stringn(b.data ? b.data : "", b.len);
	buf_release(&b);
	return s ? s : json_string("");
}

json_t *result_to_json(const struct sandbox_result *res)
{
	json_t *o = json_object();
	bool exited = res->exit_code >= 0 && !res->signal;

	json_object_set_new(o, "status",
			    json_string(sandbox_status_name(res->status)));
	json_object_set_new(o, "exit_code",
			    exited ? json_integer(res->exit_code)
				   : json_null());
	json_object_set_new(o, "signal",
			    res->signal ? json_integer(res->signal)
					: json_null());
	json_object_set_new(o, "wall_ms",
			    json_integer((json_int_t)res->wall_ms));
	json_object_set_new(o, "cpu_ms", json_integer((json_int_t)res->cpu_ms));
	json_object_set_new(o, "peak_memory_bytes",
			    json_integer((json_int_t)res->peak_memory_bytes));
	json_object_set_new(o, "oom_killed", json_boolean(res->oom_killed));
	json_object_set_new(o, "output_truncated",
			    json_boolean(res->output_truncated));
	json_object_set_new(o, "pids_limit_hit",
			    json_boolean(res->pids_limit_hit));
	if (res->status == SANDBOX_ERROR)
		json_object_set_new(o, "error", json_string(res->error));
	return o;
}

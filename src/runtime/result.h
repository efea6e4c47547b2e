/*
 * A sandbox result as JSON, the shape shared by `sbx run --json` and the
 * native API.
 */
#ifndef SBX_RUNTIME_RESULT_H
#define SBX_RUNTIME_RESULT_H

#include <jansson.h>

#include "sandbox/sandbox.h"

/* Returns a new object: status, exit_code (null when signaled), signal
 * (null when none), wall_ms, cpu_ms, peak_memory_bytes, oom_killed,
 * output_truncated, pids_limit_hit and, for sandbox_error, error. Caller
 * decrefs. */
json_t *result_to_json(const struct sandbox_result *res);

/* Returns a new JSON string of data, made valid UTF-8 (bad bytes become
 * U+FFFD): program output is arbitrary bytes. */
json_t *json_text(const char *data, size_t len);

#endif

/*
 * A sandbox result as JSON, the shape shared by `sbx run --json` and the
 * native API, and program output as JSON text: counted as it will be
 * serialised (so replies can be capped by their real size) and written
 * straight into a reply's text.
 */
#ifndef SBX_RUNTIME_RESULT_H
#define SBX_RUNTIME_RESULT_H

#include <jansson.h>
#include <stdint.h>

#include "base/buf.h"
#include "sandbox/sandbox.h"

/* Returns a new object: status, exit_code (null when signaled), signal
 * (null when none), wall_ms, cpu_ms, peak_memory_bytes, oom_killed,
 * output_truncated, pids_limit_hit and, for sandbox_error, error. Caller
 * decrefs. */
json_t *result_to_json(const struct sandbox_result *res);

/* Returns a new JSON string of data, made valid UTF-8 (bad bytes become
 * U+FFFD): program output is arbitrary bytes. */
json_t *json_text(const char *data, size_t len);

/* What json_text_write() writes for data, without the quotes: bytes kept,
 * escapes (\n, \u0001) and U+FFFD for bad bytes. Returns the length of
 * the longest prefix of data that serialises to at most room bytes, with
 * that size in *size; a sequence cut at the end of data counts as bad
 * bytes, so sizes of consecutive chunks add up to at least the whole's. */
size_t json_text_fit(const char *data, size_t len, uint64_t room,
		     uint64_t *size);
/* Appends data as a JSON string (quotes included), repaired as json_text()
 * does, without building a JSON value. */
void json_text_write(struct buf *out, const char *data, size_t len);

#endif

/*
 * Server-sent events, as OpenAI-compatible servers stream them: a parser
 * that cuts a byte stream into events, and an assembler that folds the
 * JSON chunks of a streamed chat or text completion back into the
 * response a non-streamed call would have returned, so that a streamed
 * call is traced like any other.
 */
#ifndef SBX_LLM_SSE_H
#define SBX_LLM_SSE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "base/buf.h"

/* One event. raw is its exact bytes, from its first line to the blank
 * line that ends it (included), for passing it through unchanged. data is
 * the values of its "data:" fields joined by '\n' (one leading space of
 * each value dropped, as the SSE standard says), NUL-terminated; NULL
 * when the event had no data field (a comment, or "event:"/"id:" only).
 * Lines may end in "\n", "\r\n" or "\r". */
struct sse_event {
	const char *raw;
	size_t raw_len;
	const char *data;
	size_t data_len;
};

struct sse_parser {
	struct buf pending; /* bytes of the event not yet ended */
	struct buf data;    /* its data fields so far */
	size_t line;	    /* where its last, unended line starts */
	size_t max;	    /* largest event accepted, in bytes */
	bool has_data;
	bool skip_lf; /* the last byte seen was a CR */
	bool failed;
};

/* Fills a caller-owned parser; events larger than max bytes are refused. */
void sse_parser_init(struct sse_parser *p, size_t max);
void sse_parser_release(struct sse_parser *p);
/* Feeds len bytes; fn(arg, ev) is called for each event they complete,
 * in order (ev and its strings live until fn returns). Returns 0, or
 * -E2BIG once an event grows past max (the parser then refuses all
 * further input with -E2BIG). */
int sse_parser_feed(struct sse_parser *p, const char *bytes, size_t len,
		    void (*fn)(void *arg, const struct sse_event *ev),
		    void *arg);
/* Bytes held for an event not yet ended (a stream cut mid-event). */
size_t sse_parser_pending(const struct sse_parser *p);

struct sse_assembly;

/* A new assembler; it refuses to hold more than max bytes of chunk text
 * in all. Free with sse_assembly_free() (NULL is a no-op). */
struct sse_assembly *sse_assembly_new(size_t max);
void sse_assembly_free(struct sse_assembly *a);
/* Adds one event's data: a JSON chunk of a chat completion stream
 * ("object": "chat.completion.chunk") or of a text completion stream
 * ("text_completion"). "[DONE]" is noted and otherwise ignored. Returns 0,
 * -EINVAL for data that is not a JSON object (ignored, counted), or -E2BIG
 * past max (the assembly then keeps what it had). */
int sse_assembly_add(struct sse_assembly *a, const char *data, size_t len);
/* Whether "[DONE]" was seen. */
bool sse_assembly_done(const struct sse_assembly *a);
/* The response as a non-streamed call returns it (a new reference; NULL
 * when no chunk was added):
 *   chat: {"id", "object": "chat.completion", "created", "model",
 *          "choices": [{"index", "message": {"role", "content",
 *          "tool_calls"?, "reasoning_content"?}, "finish_reason",
 *          "logprobs": {"content": [...]}|null, "token_ids"?}],
 *          "usage"?, "prompt_token_ids"?, "system_fingerprint"?}
 *   text: {"id", "object": "text_completion", "created", "model",
 *          "choices": [{"index", "text", "finish_reason", "logprobs":
 *          {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
 *          |null, "token_ids"?, "prompt_token_ids"?}], "usage"?}
 * Choices are merged by "index"; content and text are concatenated;
 * tool_calls are merged by their index (arguments concatenated);
 * logprob lists and token_ids are concatenated; the last non-null
 * finish_reason and usage win; prompt_token_ids are taken where the
 * stream first carries them (top level or in a choice). */
json_t *sse_assembly_result(const struct sse_assembly *a);

#endif

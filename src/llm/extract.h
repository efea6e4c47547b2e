/*
 * What a trace keeps of a model call besides its request and response:
 * the token ids and per-token logprobs an upstream returned (vLLM's
 * return_token_ids and logprobs), and the usage.
 */
#ifndef SBX_LLM_EXTRACT_H
#define SBX_LLM_EXTRACT_H

#include <jansson.h>

struct extract_fields {
	json_t *prompt_token_ids;     /* array of integers, or NULL */
	json_t *completion_token_ids; /* array of integers, or NULL */
	json_t *logprobs;	      /* array of numbers, or NULL */
	json_t *usage;		      /* object, or NULL */
};

/* Fills f from resp, a chat or text completion response (streamed ones
 * as sse_assembly_result() gives them). Each field is a new reference or
 * NULL when resp does not carry it:
 *   prompt_token_ids: resp.prompt_token_ids, else
 *     choices[0].prompt_token_ids;
 *   completion_token_ids: choices[0].token_ids, else
 *     choices[0].provider_specific_fields.token_ids;
 *   logprobs: chat: [e.logprob for e in choices[0].logprobs.content];
 *     text: choices[0].logprobs.token_logprobs (nulls kept as null);
 *     else choices[0].provider_specific_fields.response_logprobs;
 *   usage: resp.usage when it is an object.
 * Values of the wrong type are skipped, never trusted. */
void extract_fields(const json_t *resp, struct extract_fields *f);
void extract_fields_release(struct extract_fields *f);

#endif

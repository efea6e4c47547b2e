/*
 * Picks the token ids, logprobs and usage out of a completion response.
 * The response comes from an upstream, so every value is checked: a list
 * with one element of the wrong type is dropped whole rather than kept
 * with a gap that would shift it against the tokens.
 */
#include <stdbool.h>
#include <stddef.h>

#include "llm/extract.h"
#include "base/banned.h"

/* A copy of v when it is an array of integers, else NULL. */
static json_t *int_list(const json_t *v)
{
	const json_t *e;
	size_t i;

	if (!json_is_array(v))
		return NULL;
	for (i = 0; i < json_array_size(v); i++) {
		e = json_array_get(v, i);
		if (!json_is_integer(e))
			return NULL;
	}
	return json_deep_copy(v);
}

/* A copy of v when it is an array of numbers (and nulls when allowed). */
static json_t *number_list(const json_t *v, bool nulls)
{
	const json_t *e;
	size_t i;

	if (!json_is_array(v))
		return NULL;
	for (i = 0; i < json_array_size(v); i++) {
		e = json_array_get(v, i);
		if (!json_is_number(e) && !(nulls && json_is_null(e)))
			return NULL;
	}
	return json_deep_copy(v);
}

/* [e.logprob for e in content], or NULL when an entry has none. */
static json_t *chat_logprobs(const json_t *content)
{
	const json_t *e, *lp;
	json_t *out;
	size_t i;

	if (!json_is_array(content))
		return NULL;
	out = json_array();
	for (i = 0; i < json_array_size(content); i++) {
		e = json_array_get(content, i);
		lp = json_is_object(e) ? json_object_get(e, "logprob") : NULL;
		if (!json_is_number(lp)) {
			json_decref(out);
			return NULL;
		}
		json_array_append_new(out, json_deep_copy(lp));
	}
	return out;
}

void extract_fields(const json_t *resp, struct extract_fields *f)
{
	const json_t *choices, *c0, *lp, *psf, *v;

	f->prompt_token_ids = NULL;
	f->completion_token_ids = NULL;
	f->logprobs = NULL;
	f->usage = NULL;
	if (!json_is_object(resp))
		return;
	v = json_object_get(resp, "usage");
	if (json_is_object(v))
		f->usage = json_deep_copy(v);
	f->prompt_token_ids =
		int_list(json_object_get(resp, "prompt_token_ids"));
	choices = json_object_get(resp, "choices");
	c0 = json_is_array(choices) ? json_array_get(choices, 0) : NULL;
	if (!json_is_object(c0))
		return;
	if (!f->prompt_token_ids)
		f->prompt_token_ids =
			int_list(json_object_get(c0, "prompt_token_ids"));
	psf = json_object_get(c0, "provider_specific_fields");
	if (!json_is_object(psf))
		psf = NULL;
	f->completion_token_ids = int_list(json_object_get(c0, "token_ids"));
	if (!f->completion_token_ids && psf)
		f->completion_token_ids =
			int_list(json_object_get(psf, "token_ids"));
	lp = json_object_get(c0, "logprobs");
	if (json_is_object(lp)) {
		v = json_object_get(lp, "content");
		if (json_is_array(v))
			f->logprobs = chat_logprobs(v);
		else
			f->logprobs = number_list(
				json_object_get(lp, "token_logprobs"), true);
	}
	if (!f->logprobs && psf)
		f->logprobs = number_list(
			json_object_get(psf, "response_logprobs"), true);
}

void extract_fields_release(struct extract_fields *f)
{
	json_decref(f->prompt_token_ids);
	json_decref(f->completion_token_ids);
	json_decref(f->logprobs);
	json_decref(f->usage);
	f->prompt_token_ids = NULL;
	f->completion_token_ids = NULL;
	f->logprobs = NULL;
	f->usage = NULL;
}

/*
 * Server-sent events: the parser cuts a byte stream into events whatever
 * the pieces it arrives in, and the assembler folds a chat or text
 * completion stream back into one response. Both hold bounded memory and
 * take time linear in what they are fed: text is appended to buffers,
 * lists are extended in place.
 *
 * An event's raw bytes end at its blank line. When that line ends in a CR
 * that is the last byte of a feed, the event is passed on at once (a CR
 * alone ends a line), and an LF starting the next feed is dropped as the
 * rest of that line end; it is then in no event's raw bytes.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "llm/sse.h"
#include "base/banned.h"

void sse_parser_init(struct sse_parser *p, size_t max)
{
	buf_init(&p->pending);
	buf_init(&p->data);
	p->max = max;
	p->has_data = false;
	p->skip_lf = false;
	p->failed = false;
	p->line = 0;
}

void sse_parser_release(struct sse_parser *p)
{
	buf_release(&p->pending);
	buf_release(&p->data);
}

size_t sse_parser_pending(const struct sse_parser *p)
{
	return p->pending.len;
}

/* Handles one line of the event (without its line end). */
static void parse_line(struct sse_parser *p, const char *line, size_t n)
{
	const char *colon = memchr(line, ':', n);
	size_t name = colon ? (size_t)(colon - line) : n;
	const char *value = colon ? colon + 1 : line + n;
	size_t vlen = n - (size_t)(value - line);

	if (name == 0)
		return; /* a comment */
	if (name != 4 || memcmp(line, "data", 4) != 0)
		return;
	if (vlen && value[0] == ' ') {
		value++;
		vlen--;
	}
	if (p->has_data)
		buf_add(&p->data, "\n", 1);
	buf_add(&p->data, value, vlen);
	p->has_data = true;
}

static void dispatch(struct sse_parser *p,
		     void (*fn)(void *arg, const struct sse_event *ev),
		     void *arg)
{
	struct sse_event ev = {
		.raw = p->pending.data,
		.raw_len = p->pending.len,
		.data = p->has_data ? (p->data.data ? p->data.data : "") : NULL,
		.data_len = p->has_data ? p->data.len : 0,
	};

	fn(arg, &ev);
	buf_reset(&p->pending);
	buf_reset(&p->data);
	p->has_data = false;
}

int sse_parser_feed(struct sse_parser *p, const char *bytes, size_t len,
		    void (*fn)(void *arg, const struct sse_event *ev),
		    void *arg)
{
	size_t i = 0, start, end;

	if (p->failed)
		return -E2BIG;
	if (!len)
		return 0;
	if (p->skip_lf && bytes[0] == '\n') {
		/* The rest of a CRLF: part of the event if it goes on. */
		if (p->pending.len && p->pending.len + 1 > p->max)
			goto too_big;
		if (p->pending.len) {
			buf_add(&p->pending, "\n", 1);
			p->line = p->pending.len;
		}
		i = 1;
	}
	p->skip_lf = false;
	while (i < len) {
		start = i;
		while (i < len && bytes[i] != '\n' && bytes[i] != '\r')
			i++;
		end = i;
		if (i < len) {
			if (bytes[i] == '\r') {
				i++;
				if (i == len)
					p->skip_lf = true;
				else if (bytes[i] == '\n')
					i++;
			} else {
				i++;
			}
		}
		if (i - start > p->max - p->pending.len)
			goto too_big;
		buf_add(&p->pending, bytes + start, i - start);
		if (end == i)
			break; /* the line goes on in the next feed */
		end = p->pending.len -
		      (i - end); /* the text's end, in pending */
		if (end == p->line) {
			/* A blank line ends the event; alone it is none. */
			if (p->line == 0)
				buf_reset(&p->pending);
			else
				dispatch(p, fn, arg);
			p->line = 0;
			continue;
		}
		parse_line(p, p->pending.data + p->line, end - p->line);
		p->line = p->pending.len;
	}
	return 0;
too_big:
	p->failed = true;
	buf_release(&p->pending);
	buf_release(&p->data);
	return -E2BIG;
}

/* The assembler. */

/* Bounds on the bookkeeping a stream can make us keep, beyond its bytes:
 * OpenAI allows n <= 128, and a message has few tool calls. */
#define MAX_CHOICES 256
#define MAX_TOOLS 256

enum kind { KIND_UNKNOWN, KIND_CHAT, KIND_TEXT };

struct tool {
	json_int_t index;
	json_t *id, *type, *name;
	struct buf args;
};

struct choice {
	json_int_t index;
	char *role;
	struct buf content, reasoning;
	bool has_content, has_reasoning;
	json_t *finish_reason;
	json_t *stop_reason;
	json_t *logprobs;  /* chat: the content list */
	json_t *lp_tokens; /* text: the four lists */
	json_t *lp_values;
	json_t *lp_top;
	json_t *lp_offsets;
	json_t *token_ids;
	json_t *prompt_token_ids;
	struct tool *tools;
	size_t ntools;
};

struct sse_assembly {
	size_t max, used;
	bool done, over, any;
	unsigned invalid;
	enum kind kind;
	json_t *id, *created, *model, *fingerprint, *usage, *prompt_token_ids;
	struct choice *choices;
	size_t nchoices;
	size_t last; /* the choice found last, tried first */
};

struct sse_assembly *sse_assembly_new(size_t max)
{
	struct sse_assembly *a = xcalloc(1, sizeof(*a));

	a->max = max;
	return a;
}

static void choice_release(struct choice *c)
{
	size_t i;

	free(c->role);
	buf_release(&c->content);
	buf_release(&c->reasoning);
	json_decref(c->finish_reason);
	json_decref(c->stop_reason);
	json_decref(c->logprobs);
	json_decref(c->lp_tokens);
	json_decref(c->lp_values);
	json_decref(c->lp_top);
	json_decref(c->lp_offsets);
	json_decref(c->token_ids);
	json_decref(c->prompt_token_ids);
	for (i = 0; i < c->ntools; i++) {
		json_decref(c->tools[i].id);
		json_decref(c->tools[i].type);
		json_decref(c->tools[i].name);
		buf_release(&c->tools[i].args);
	}
	free(c->tools);
}

void sse_assembly_free(struct sse_assembly *a)
{
	size_t i;

	if (!a)
		return;
	for (i = 0; i < a->nchoices; i++)
		choice_release(&a->choices[i]);
	free(a->choices);
	json_decref(a->id);
	json_decref(a->created);
	json_decref(a->model);
	json_decref(a->fingerprint);
	json_decref(a->usage);
	json_decref(a->prompt_token_ids);
	free(a);
}

bool sse_assembly_done(const struct sse_assembly *a)
{
	return a->done;
}

/* Replaces *slot with v (borrowed) when v is not NULL or null. */
static void keep(json_t **slot, json_t *v)
{
	if (!v || json_is_null(v))
		return;
	json_decref(*slot);
	*slot = json_incref(v);
}

/* Keeps v in *slot only if nothing is there yet. */
static void keep_first(json_t **slot, json_t *v)
{
	if (!*slot)
		keep(slot, v);
}

/* Appends the array v (borrowed) to the list in *slot. */
static void extend(json_t **slot, json_t *v)
{
	if (!json_is_array(v))
		return;
	if (!*slot)
		*slot = json_array();
	json_array_extend(*slot, v);
}

static void append_text(struct buf *b, bool *has, json_t *v)
{
	if (!json_is_string(v))
		return;
	buf_add(b, json_string_value(v), json_string_length(v));
	*has = true;
}

static struct choice *find_choice(struct sse_assembly *a, json_int_t index)
{
	size_t i;

	if (a->last < a->nchoices && a->choices[a->last].index == index)
		return &a->choices[a->last];
	for (i = 0; i < a->nchoices; i++)
		if (a->choices[i].index == index)
			break;
	if (i == a->nchoices) {
		if (a->nchoices == MAX_CHOICES)
			return NULL;
		a->choices = xrealloc(a->choices,
				      (a->nchoices + 1) * sizeof(*a->choices));
		memset(&a->choices[i], 0, sizeof(a->choices[i]));
		a->choices[i].index = index;
		a->nchoices++;
	}
	a->last = i;
	return &a->choices[i];
}

static struct tool *find_tool(struct choice *c, json_int_t index)
{
	size_t i;

	for (i = 0; i < c->ntools; i++)
		if (c->tools[i].index == index)
			return &c->tools[i];
	if (c->ntools == MAX_TOOLS)
		return NULL;
	c->tools = xrealloc(c->tools, (c->ntools + 1) * sizeof(*c->tools));
	memset(&c->tools[i], 0, sizeof(c->tools[i]));
	c->tools[i].index = index;
	c->ntools++;
	return &c->tools[i];
}

static json_int_t index_of(json_t *obj, json_int_t dflt)
{
	json_t *v = json_object_get(obj, "index");

	if (!v)
		return dflt;
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -1;
	return json_integer_value(v);
}

static void add_tool_calls(struct choice *c, json_t *calls)
{
	size_t i;
	json_t *call, *fn;
	struct tool *t;
	json_int_t index;

	if (!json_is_array(calls))
		return;
	json_array_foreach(calls, i, call)
	{
		if (!json_is_object(call))
			continue;
		/* Without an index, the position in this delta. */
		index = index_of(call, (json_int_t)i);
		if (index < 0)
			continue;
		t = find_tool(c, index);
		if (!t)
			continue;
		keep_first(&t->id, json_object_get(call, "id"));
		keep_first(&t->type, json_object_get(call, "type"));
		fn = json_object_get(call, "function");
		if (!json_is_object(fn))
			continue;
		keep_first(&t->name, json_object_get(fn, "name"));
		fn = json_object_get(fn, "arguments");
		if (json_is_string(fn))
			buf_add(&t->args, json_string_value(fn),
				json_string_length(fn));
	}
}

static void add_choice(struct sse_assembly *a, json_t *ch)
{
	json_t *delta, *lp, *v;
	struct choice *c;
	json_int_t index;

	if (!json_is_object(ch))
		return;
	index = index_of(ch, 0);
	if (index < 0)
		return;
	c = find_choice(a, index);
	if (!c)
		return;
	delta = json_object_get(ch, "delta");
	if (json_is_object(delta)) {
		v = json_object_get(delta, "role");
		if (json_is_string(v) && !c->role)
			c->role = xstrdup(json_string_value(v));
		append_text(&c->content, &c->has_content,
			    json_object_get(delta, "content"));
		v = json_object_get(delta, "reasoning_content");
		if (!v)
			v = json_object_get(delta, "reasoning");
		append_text(&c->reasoning, &c->has_reasoning, v);
		add_tool_calls(c, json_object_get(delta, "tool_calls"));
	}
	append_text(&c->content, &c->has_content, json_object_get(ch, "text"));
	lp = json_object_get(ch, "logprobs");
	if (json_is_object(lp)) {
		extend(&c->logprobs, json_object_get(lp, "content"));
		extend(&c->lp_tokens, json_object_get(lp, "tokens"));
		extend(&c->lp_values, json_object_get(lp, "token_logprobs"));
		extend(&c->lp_top, json_object_get(lp, "top_logprobs"));
		extend(&c->lp_offsets, json_object_get(lp, "text_offset"));
	}
	extend(&c->token_ids, json_object_get(ch, "token_ids"));
	v = json_object_get(ch, "prompt_token_ids");
	if (json_is_array(v))
		keep_first(&c->prompt_token_ids, v);
	keep(&c->finish_reason, json_object_get(ch, "finish_reason"));
	keep(&c->stop_reason, json_object_get(ch, "stop_reason"));
}

int sse_assembly_add(struct sse_assembly *a, const char *data, size_t len)
{
	json_t *chunk, *v, *ch;
	const char *obj;
	size_t i;

	if (a->over)
		return -E2BIG;
	while (len && (data[0] == ' ' || data[0] == '\t')) {
		data++;
		len--;
	}
	while (len && (data[len - 1] == ' ' || data[len - 1] == '\t' ||
		       data[len - 1] == '\n' || data[len - 1] == '\r'))
		len--;
	if (len == 6 && !memcmp(data, "[DONE]", 6)) {
		a->done = true;
		return 0;
	}
	if (len > a->max - a->used) {
		a->over = true;
		return -E2BIG;
	}
	chunk = json_loadb(data, len, 0, NULL);
	if (!json_is_object(chunk)) {
		json_decref(chunk);
		a->invalid++;
		return -EINVAL;
	}
	a->used += len;
	a->any = true;
	obj = json_string_value(json_object_get(chunk, "object"));
	if (a->kind == KIND_UNKNOWN && obj) {
		if (!strcmp(obj, "chat.completion.chunk") ||
		    !strcmp(obj, "chat.completion"))
			a->kind = KIND_CHAT;
		else if (!strcmp(obj, "text_completion"))
			a->kind = KIND_TEXT;
	}
	keep_first(&a->id, json_object_get(chunk, "id"));
	keep_first(&a->created, json_object_get(chunk, "created"));
	keep_first(&a->model, json_object_get(chunk, "model"));
	keep(&a->fingerprint, json_object_get(chunk, "system_fingerprint"));
	v = json_object_get(chunk, "usage");
	if (json_is_object(v))
		keep(&a->usage, v);
	v = json_object_get(chunk, "prompt_token_ids");
	if (json_is_array(v))
		keep_first(&a->prompt_token_ids, v);
	v = json_object_get(chunk, "choices");
	if (json_is_array(v)) {
		json_array_foreach(v, i, ch)
		{
			if (a->kind == KIND_UNKNOWN && json_is_object(ch)) {
				if (json_object_get(ch, "delta"))
					a->kind = KIND_CHAT;
				else if (json_object_get(ch, "text"))
					a->kind = KIND_TEXT;
			}
			add_choice(a, ch);
		}
	}
	json_decref(chunk);
	return 0;
}

/* Sets key in obj to a new reference v, or null when v is NULL. */
static void set_or_null(json_t *obj, const char *key, json_t *v)
{
	json_object_set_new(obj, key, v ? v : json_null());
}

static json_t *copy(json_t *v)
{
	return v ? json_deep_copy(v) : NULL;
}

static int tool_cmp(const void *x, const void *y)
{
	const struct tool *a = x, *b = y;

	return a->index < b->index ? -1 : a->index > b->index;
}

static json_t *tool_calls(const struct choice *c)
{
	struct tool *sorted = xcalloc(c->ntools, sizeof(*sorted));
	json_t *list = json_array(), *call, *fn;
	size_t i;

	memcpy(sorted, c->tools, c->ntools * sizeof(*sorted));
	qsort(sorted, c->ntools, sizeof(*sorted), tool_cmp);
	for (i = 0; i < c->ntools; i++) {
		call = json_object();
		fn = json_object();
		set_or_null(call, "id", copy(sorted[i].id));
		json_object_set_new(call, "type",
				    sorted[i].type
					    ? json_deep_copy(sorted[i].type)
					    : json_string("function"));
		set_or_null(fn, "name", copy(sorted[i].name));
		json_object_set_new(fn, "arguments",
				    json_stringn(sorted[i].args.data
							 ? sorted[i].args.data
							 : "",
						 sorted[i].args.len));
		json_object_set_new(call, "function", fn);
		json_array_append_new(list, call);
	}
	free(sorted);
	return list;
}

static json_t *text_of(const struct buf *b)
{
	return json_stringn(b->data ? b->data : "", b->len);
}

static json_t *chat_choice(const struct choice *c)
{
	json_t *out = json_object(), *msg = json_object(), *lp;

	json_object_set_new(out, "index", json_integer(c->index));
	json_object_set_new(msg, "role",
			    json_string(c->role ? c->role : "assistant"));
	set_or_null(msg, "content",
		    c->has_content ? text_of(&c->content) : NULL);
	if (c->ntools)
		json_object_set_new(msg, "tool_calls", tool_calls(c));
	if (c->has_reasoning)
		json_object_set_new(msg, "reasoning_content",
				    text_of(&c->reasoning));
	json_object_set_new(out, "message", msg);
	set_or_null(out, "finish_reason", copy(c->finish_reason));
	if (c->stop_reason)
		json_object_set_new(out, "stop_reason", copy(c->stop_reason));
	lp = NULL;
	if (c->logprobs) {
		lp = json_object();
		json_object_set_new(lp, "content", copy(c->logprobs));
	}
	set_or_null(out, "logprobs", lp);
	if (c->token_ids)
		json_object_set_new(out, "token_ids", copy(c->token_ids));
	if (c->prompt_token_ids)
		json_object_set_new(out, "prompt_token_ids",
				    copy(c->prompt_token_ids));
	return out;
}

static json_t *list_or_empty(json_t *v)
{
	return v ? json_deep_copy(v) : json_array();
}

static json_t *text_choice(const struct choice *c)
{
	json_t *out = json_object(), *lp = NULL;

	json_object_set_new(out, "index", json_integer(c->index));
	json_object_set_new(out, "text", text_of(&c->content));
	set_or_null(out, "finish_reason", copy(c->finish_reason));
	if (c->stop_reason)
		json_object_set_new(out, "stop_reason", copy(c->stop_reason));
	if (c->lp_tokens || c->lp_values || c->lp_top || c->lp_offsets) {
		lp = json_object();
		json_object_set_new(lp, "tokens", list_or_empty(c->lp_tokens));
		json_object_set_new(lp, "token_logprobs",
				    list_or_empty(c->lp_values));
		json_object_set_new(lp, "top_logprobs",
				    list_or_empty(c->lp_top));
		json_object_set_new(lp, "text_offset",
				    list_or_empty(c->lp_offsets));
	}
	set_or_null(out, "logprobs", lp);
	if (c->token_ids)
		json_object_set_new(out, "token_ids", copy(c->token_ids));
	if (c->prompt_token_ids)
		json_object_set_new(out, "prompt_token_ids",
				    copy(c->prompt_token_ids));
	return out;
}

static int choice_cmp(const void *x, const void *y)
{
	const struct choice *const *a = x, *const *b = y;

	return (*a)->index < (*b)->index ? -1 : (*a)->index > (*b)->index;
}

json_t *sse_assembly_result(const struct sse_assembly *a)
{
	bool text = a->kind == KIND_TEXT;
	const struct choice **sorted;
	json_t *out, *list;
	size_t i;

	if (!a->any)
		return NULL;
	out = json_object();
	set_or_null(out, "id", copy(a->id));
	json_object_set_new(
		out, "object",
		json_string(text ? "text_completion" : "chat.completion"));
	set_or_null(out, "created", copy(a->created));
	set_or_null(out, "model", copy(a->model));
	sorted = xcalloc(a->nchoices ? a->nchoices : 1, sizeof(*sorted));
	for (i = 0; i < a->nchoices; i++)
		sorted[i] = &a->choices[i];
	qsort(sorted, a->nchoices, sizeof(*sorted), choice_cmp);
	list = json_array();
	for (i = 0; i < a->nchoices; i++)
		json_array_append_new(list, text ? text_choice(sorted[i])
						 : chat_choice(sorted[i]));
	free(sorted);
	json_object_set_new(out, "choices", list);
	if (a->usage)
		json_object_set_new(out, "usage", copy(a->usage));
	if (a->prompt_token_ids)
		json_object_set_new(out, "prompt_token_ids",
				    copy(a->prompt_token_ids));
	if (a->fingerprint)
		json_object_set_new(out, "system_fingerprint",
				    copy(a->fingerprint));
	return out;
}

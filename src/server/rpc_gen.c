/*
 * What a host needs to use an interface without sbx's client: a Python
 * module with one function per exposed function, a Markdown description
 * for an agent's prompt, and an MCP server config.
 *
 * The module is written from the schema the sandbox sent, which is
 * hostile: the module runs on the host when an agent imports it, so
 * nothing from the sandbox reaches it as code. Names must be plain
 * identifiers; an annotation is parsed as a small type-expression grammar
 * (dotted names, subscripts, lists, '|', numbers, '...') and written
 * again from its tokens, or dropped; a default is written from JSON data
 * as a Python literal, or left to the server; docstrings and every other
 * text go out as escaped string literals. A function that cannot be
 * written safely is left out.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/text.h"
#include "base/util.h"
#include "server/rpc.h"
#include "base/banned.h"

#define MAX_ANN 256
#define MAX_DEPTH 16

static const char *const keywords[] = {
	"False",  "None",     "True",  "and",	 "as",	     "assert",
	"async",  "await",    "break", "class",	 "continue", "def",
	"del",	  "elif",     "else",  "except", "finally",  "for",
	"from",	  "global",   "if",    "import", "in",	     "is",
	"lambda", "nonlocal", "not",   "or",	 "pass",     "raise",
	"return", "try",      "while", "with",	 "yield"};
/* Names the module itself uses. */
static const char *const reserved[] = {"RPC_URL", "RPC_TIMEOUT", "Any",
				       "Optional", "annotations"};

static bool is_keyword(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(keywords); i++)
		if (strlen(keywords[i]) == n && !memcmp(keywords[i], s, n))
			return true;
	return false;
}

static bool ident_chars(const char *s, size_t n)
{
	size_t i;

	if (!n || !((s[0] >= 'a' && s[0] <= 'z') ||
		    (s[0] >= 'A' && s[0] <= 'Z') || s[0] == '_'))
		return false;
	for (i = 1; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') ||
		      (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return false;
	return true;
}

/* A name the module may define or take as a parameter. */
static bool name_ok(const char *s)
{
	size_t i, n = s ? strlen(s) : 0;

	if (!ident_chars(s, n) || is_keyword(s, n) || n > 128 ||
	    str_starts_with(s, "_sbx"))
		return false;
	for (i = 0; i < ARRAY_SIZE(reserved); i++)
		if (!strcmp(s, reserved[i]))
			return false;
	return true;
}

/* ---- Python literals ---- */

/* s as a Python string literal; triple keeps newlines as they are. */
static void py_str(struct buf *out, const char *s, size_t len, bool triple)
{
	struct buf b;
	size_t i;

	buf_init(&b);
	utf8_repair(&b, s ? s : "", s ? len : 0);
	buf_adds(out, triple ? "\"\"\"" : "\"");
	for (i = 0; i < b.len; i++) {
		unsigned char c = (unsigned char)b.data[i];

		if (c == '\\')
			buf_adds(out, "\\\\");
		else if (c == '"')
			buf_adds(out, "\\\"");
		else if (c == '\n')
			buf_adds(out, triple ? "\n" : "\\n");
		else if (c == '\t')
			buf_adds(out, "\\t");
		else if (c < 0x20 || c == 0x7f)
			buf_addf(out, "\\x%02x", c);
		else
			buf_add(out, &b.data[i], 1);
	}
	buf_adds(out, triple ? "\"\"\"" : "\"");
	buf_release(&b);
}

/* A JSON value as a Python literal; false when it cannot be written. */
static bool py_value(struct buf *out, json_t *v, int depth)
{
	size_t i;
	const char *key;
	json_t *item;
	char num[64];
	bool first = true;

	if (depth > MAX_DEPTH)
		return false;
	switch (json_typeof(v)) {
	case JSON_NULL:
		buf_adds(out, "None");
		return true;
	case JSON_TRUE:
		buf_adds(out, "True");
		return true;
	case JSON_FALSE:
		buf_adds(out, "False");
		return true;
	case JSON_INTEGER:
		buf_addf(out, "%lld", (long long)json_integer_value(v));
		return true;
	case JSON_REAL:
		/* The shortest text that reads back the same, as repr(). */
		for (int prec = 1; prec <= 17; prec++) {
			snprintf(num, sizeof(num), "%.*g", prec,
				 json_real_value(v));
			if (strtod(num, NULL) == json_real_value(v))
				break;
		}
		if (!strpbrk(num, "0123456789") || strpbrk(num, "ni"))
			return false; /* nan, inf */
		buf_adds(out, num);
		if (!strpbrk(num, ".e"))
			buf_adds(out, ".0");
		return true;
	case JSON_STRING:
		py_str(out, json_string_value(v), json_string_length(v), false);
		return true;
	case JSON_ARRAY:
		buf_adds(out, "[");
		json_array_foreach(v, i, item)
		{
			if (i)
				buf_adds(out, ", ");
			if (!py_value(out, item, depth + 1))
				return false;
		}
		buf_adds(out, "]");
		return true;
	case JSON_OBJECT:
		buf_adds(out, "{");
		json_object_foreach(v, key, item)
		{
			if (!first)
				buf_adds(out, ", ");
			first = false;
			py_str(out, key, strlen(key), false);
			buf_adds(out, ": ");
			if (!py_value(out, item, depth + 1))
				return false;
		}
		buf_adds(out, "}");
		return true;
	}
	return false;
}

/* ---- annotations ---- */

struct ann {
	const char *p, *end;
	struct buf *out;
	int depth;
};

static void skip_space(struct ann *a)
{
	while (a->p < a->end && *a->p == ' ')
		a->p++;
}

static bool ann_union(struct ann *a);

/* ann (',' ann)* [','] up to close; the opening bracket is taken. */
static bool ann_list(struct ann *a, char close)
{
	bool first = true;

	for (;;) {
		skip_space(a);
		if (a->p < a->end && *a->p == close) {
			a->p++;
			buf_add(a->out, &close, 1);
			return true;
		}
		if (!first) {
			if (a->p >= a->end || *a->p != ',')
				return false;
			a->p++;
			skip_space(a);
			if (a->p < a->end && *a->p == close)
				continue;
			buf_adds(a->out, ", ");
		}
		first = false;
		if (!ann_union(a))
			return false;
	}
}

static bool ann_term(struct ann *a)
{
	const char *s;

	skip_space(a);
	if (a->p >= a->end || ++a->depth > MAX_DEPTH)
		return false;
	s = a->p;
	if (*s == '[') {
		a->p++;
		buf_adds(a->out, "[");
		return ann_list(a, ']');
	}
	if (a->end - s >= 3 && !memcmp(s, "...", 3)) {
		a->p += 3;
		buf_adds(a->out, "...");
		return true;
	}
	if (*s == '-' || (*s >= '0' && *s <= '9')) {
		a->p++;
		while (a->p < a->end && *a->p >= '0' && *a->p <= '9')
			a->p++;
		if (a->p - s == 1 && *s == '-')
			return false;
		buf_add(a->out, s, (size_t)(a->p - s));
		return true;
	}
	/* A dotted name: each part an identifier, no keyword but the three
	 * constants, no dunder. */
	for (;;) {
		const char *part = a->p;
		size_t n;

		while (a->p < a->end &&
		       ((*a->p >= 'a' && *a->p <= 'z') ||
			(*a->p >= 'A' && *a->p <= 'Z') ||
			(*a->p >= '0' && *a->p <= '9') || *a->p == '_'))
			a->p++;
		n = (size_t)(a->p - part);
		if (!ident_chars(part, n) || memmem(part, n, "__", 2))
			return false;
		if (is_keyword(part, n) &&
		    !((n == 4 && !memcmp(part, "None", 4)) ||
		      (n == 4 && !memcmp(part, "True", 4)) ||
		      (n == 5 && !memcmp(part, "False", 5))))
			return false;
		if (a->p < a->end && *a->p == '.')
			a->p++;
		else
			break;
	}
	buf_add(a->out, s, (size_t)(a->p - s));
	skip_space(a);
	if (a->p < a->end && *a->p == '[') {
		a->p++;
		buf_adds(a->out, "[");
		return ann_list(a, ']');
	}
	return true;
}

static bool ann_union(struct ann *a)
{
	if (!ann_term(a))
		return false;
	for (;;) {
		skip_space(a);
		if (a->p >= a->end || *a->p != '|')
			return true;
		a->p++;
		buf_adds(a->out, " | ");
		if (!ann_term(a))
			return false;
	}
}

/* Writes ": ANN" (or " -> ANN" with arrow) when text is a plain type
 * expression; nothing otherwise. */
static void add_annotation(struct buf *out, const char *text, bool arrow)
{
	struct buf b;
	struct ann a;

	if (!text || !*text || strlen(text) > MAX_ANN)
		return;
	buf_init(&b);
	a.p = text;
	a.end = text + strlen(text);
	a.out = &b;
	a.depth = 0;
	if (ann_union(&a)) {
		skip_space(&a);
		if (a.p == a.end) {
			buf_adds(out, arrow ? " -> " : ": ");
			buf_add(out, b.data, b.len);
		}
	}
	buf_release(&b);
}

/* ---- signatures ---- */

enum kind { K_POSONLY, K_POS, K_VARPOS, K_KWONLY, K_VARKW, K_BAD };

static enum kind kind_of(json_t *p)
{
	const char *k = json_string_value(json_object_get(p, "kind"));

	if (!k)
		return K_BAD;
	if (!strcmp(k, "positional_only"))
		return K_POSONLY;
	if (!strcmp(k, "positional_or_keyword"))
		return K_POS;
	if (!strcmp(k, "var_positional"))
		return K_VARPOS;
	if (!strcmp(k, "keyword_only"))
		return K_KWONLY;
	if (!strcmp(k, "var_keyword"))
		return K_VARKW;
	return K_BAD;
}

/* The parameter list of sig, and the call expression that sends them.
 * For the prompt (call NULL), a default that cannot be written shows as
 * "...". False when the function cannot be written. */
static bool render_sig(json_t *sig, struct buf *params, struct buf *call,
		       const char *fname)
{
	json_t *list = json_object_get(sig, "params"), *p;
	struct buf pos, kw, var, varkw;
	enum kind last = K_POSONLY;
	bool ok = false, any_default = false, star = false;
	size_t i;

	if (!json_is_array(list) || json_array_size(list) > 255)
		return false;
	buf_init(&pos);
	buf_init(&kw);
	buf_init(&var);
	buf_init(&varkw);
	json_array_foreach(list, i, p)
	{
		const char *name =
			json_string_value(json_object_get(p, "name"));
		enum kind k = kind_of(p);
		json_t *def = json_object_get(p, "default");
		json_t *val = json_object_get(def, "value");
		const char *eq;
		size_t mark;

		if (k == K_BAD || !name_ok(name) || k < last ||
		    (k == last && (k == K_VARPOS || k == K_VARKW)))
			goto out;
		if (last == K_POSONLY && k != K_POSONLY && i > 0 &&
		    kind_of(json_array_get(list, i - 1)) == K_POSONLY)
			buf_adds(params, ", /");
		if (k == K_KWONLY && !star) {
			buf_adds(params, params->len ? ", *" : "*");
			star = true;
		}
		if (k == K_VARPOS)
			star = true;
		last = k;
		if (params->len)
			buf_adds(params, ", ");
		buf_adds(params, k == K_VARPOS	? "*"
				 : k == K_VARKW ? "**"
						: "");
		buf_adds(params, name);
		mark = params->len;
		add_annotation(
			params,
			json_string_value(json_object_get(p, "annotation")),
			false);
		eq = params->len > mark ? " = " : "=";
		if ((k == K_POSONLY || k == K_POS) && !def && any_default)
			goto out; /* not a signature Python takes */
		if (def && (k == K_VARPOS || k == K_VARKW))
			goto out;
		if (def) {
			any_default = k != K_KWONLY ? true : any_default;
			buf_adds(params, eq);
			mark = params->len;
			if (!val || !py_value(params, val, 0)) {
				params->len = mark;
				params->data[mark] = '\0';
				buf_adds(params, call ? "_sbx_omit" : "...");
			}
		}
		if (k == K_POSONLY)
			buf_addf(&pos, "%s%s", pos.len ? ", " : "", name);
		else if (k == K_POS || k == K_KWONLY) {
			buf_addf(&kw, "%s", kw.len ? ", " : "");
			py_str(&kw, name, strlen(name), false);
			buf_addf(&kw, ": %s", name);
		} else if (k == K_VARPOS)
			buf_adds(&var, name);
		else
			buf_adds(&varkw, name);
	}
	if (last == K_POSONLY && json_array_size(list))
		buf_adds(params, ", /");
	if (call) {
		buf_adds(call, "_sbx_call(");
		py_str(call, fname, strlen(fname), false);
		buf_addf(call, ", [%s]", pos.len ? pos.data : "");
		if (var.len)
			buf_addf(call, " + list(%s)", var.data);
		buf_addf(call, ", {%s}, %s)", kw.len ? kw.data : "",
			 varkw.len ? varkw.data : "None");
	}
	ok = true;
out:
	buf_release(&pos);
	buf_release(&kw);
	buf_release(&var);
	buf_release(&varkw);
	return ok;
}

static const char *doc_of(json_t *desc, const char *fn)
{
	const char *d = json_string_value(json_object_get(
		json_object_get(json_object_get(desc, "schemas"), fn),
		"description"));

	return d ? d : "";
}

static const char client_head[] =
	"\n"
	"from __future__ import annotations\n"
	"\n"
	"from typing import Any, Optional\n"
	"\n"
	"RPC_TIMEOUT = 600.0\n"
	"_sbx_omit = object()  # a default the server fills in\n"
	"\n"
	"\n"
	"def _sbx_call(fn, args, kwargs, extra):\n"
	"    \"\"\"POSTs one call; returns its result or raises RuntimeError\n"
	"    with the remote error and traceback.\"\"\"\n"
	"    import json\n"
	"    import os\n"
	"    import urllib.error\n"
	"    import urllib.request\n"
	"\n"
	"    while args and args[-1] is _sbx_omit:\n"
	"        args = args[:-1]\n"
	"    kw = {k: v for k, v in kwargs.items() if v is not _sbx_omit}\n"
	"    kw.update(extra or {})\n"
	"    body = json.dumps({\"fn\": fn, \"args\": args, \"kwargs\": "
	"kw}).encode()\n"
	"    headers = {\"Content-Type\": \"application/json\"}\n"
	"    token = os.environ.get(\"SBX_TOKEN\")\n"
	"    if token:\n"
	"        headers[\"Authorization\"] = \"Bearer \" + token\n"
	"    req = urllib.request.Request(RPC_URL, data=body, "
	"headers=headers,\n"
	"                                 method=\"POST\")\n"
	"    try:\n"
	"        with urllib.request.urlopen(req, timeout=RPC_TIMEOUT) as "
	"resp:\n"
	"            raw = resp.read()\n"
	"    except urllib.error.HTTPError as e:\n"
	"        raw = e.read()\n"
	"        status = e.code\n"
	"    else:\n"
	"        status = 200\n"
	"    try:\n"
	"        data = json.loads(raw)\n"
	"    except ValueError:\n"
	"        raise RuntimeError(\"%s: HTTP %d with a body that is not "
	"JSON\"\n"
	"                           % (fn, status)) from None\n"
	"    if isinstance(data, dict) and data.get(\"ok\") is True:\n"
	"        return data.get(\"result\")\n"
	"    err = data.get(\"error\") if isinstance(data, dict) else None\n"
	"    if isinstance(err, dict):  # a route error: {code, message}\n"
	"        err = err.get(\"message\")\n"
	"    msg = str(err or \"HTTP %d\" % status)\n"
	"    tb = data.get(\"traceback\") if isinstance(data, dict) else "
	"None\n"
	"    if tb:\n"
	"        msg += \"\\n\\nRemote traceback:\\n\" + tb\n"
	"    raise RuntimeError(msg)\n";

char *rpc_gen_client(json_t *desc, const char *url)
{
	json_t *fns = json_object_get(desc, "functions"), *f;
	json_t *sigs = json_object_get(desc, "signatures");
	const char *name = json_string_value(json_object_get(desc, "name"));
	struct buf out;
	size_t i;

	buf_init(&out);
	{
		struct buf doc;

		buf_init(&doc);
		buf_addf(&doc,
			 "Client for the sbx interface '%s'.\n\n"
			 "Each function calls the function of the same name "
			 "inside the sandbox, at\n%s\n"
			 "and returns its result, or raises RuntimeError "
			 "with the remote traceback.\n"
			 "Written by sbx; standard library only. Set "
			 "SBX_TOKEN when the server wants a token.\n",
			 name ? name : "", url);
		py_str(&out, doc.data, doc.len, true);
		buf_release(&doc);
	}
	buf_adds(&out, "\n");
	buf_adds(&out, client_head);
	buf_adds(&out, "\n\nRPC_URL = ");
	py_str(&out, url, strlen(url), false);
	buf_adds(&out, "\n");
	json_array_foreach(fns, i, f)
	{
		const char *fn = json_string_value(f);
		json_t *sig = json_object_get(sigs, fn ? fn : "");
		struct buf params, call;

		if (!fn || !name_ok(fn) || !json_is_object(sig))
			continue;
		buf_init(&params);
		buf_init(&call);
		if (render_sig(sig, &params, &call, fn)) {
			buf_addf(&out, "\n\ndef %s(%s)", fn,
				 params.data ? params.data : "");
			add_annotation(&out,
				       json_string_value(
					       json_object_get(sig, "returns")),
				       true);
			buf_adds(&out, ":\n    ");
			py_str(&out, doc_of(desc, fn), strlen(doc_of(desc, fn)),
			       true);
			buf_addf(&out, "\n    return %s\n", call.data);
		}
		buf_release(&params);
		buf_release(&call);
	}
	return out.data ? out.data : xstrdup("");
}

char *rpc_gen_prompt(json_t *desc, const char *url)
{
	json_t *fns = json_object_get(desc, "functions"), *f;
	json_t *sigs = json_object_get(desc, "signatures");
	const char *name = json_string_value(json_object_get(desc, "name"));
	struct buf out, clean;
	size_t i;

	buf_init(&out);
	buf_addf(&out,
		 "# %s Interface\n\n"
		 "These functions run inside a sandbox; call them over RPC "
		 "at: %s\n\n"
		 "## Functions\n\n",
		 name ? name : "", url);
	json_array_foreach(fns, i, f)
	{
		const char *fn = json_string_value(f);
		json_t *sig = json_object_get(sigs, fn ? fn : "");
		struct buf params;

		if (!fn || !name_ok(fn) || !json_is_object(sig))
			continue;
		buf_init(&params);
		if (render_sig(sig, &params, NULL, fn)) {
			buf_addf(&out, "### `%s(%s)`\n\n%s\n\n", fn,
				 params.data ? params.data : "",
				 doc_of(desc, fn));
		}
		buf_release(&params);
	}
	/* The description is the sandbox's text: valid UTF-8 only. */
	buf_init(&clean);
	utf8_repair(&clean, out.data, out.len);
	buf_release(&out);
	return clean.data ? clean.data : xstrdup("");
}

json_t *rpc_gen_mcp(const char *name, const char *sbx, const char *base_url,
		    const char *id)
{
	return json_pack("{s:{s:{s:s,s:s,s:[s,s,s,s,s,s,s]}}}", "mcpServers",
			 name, "type", "stdio", "command", sbx, "args", "mcp",
			 "--url", base_url, "--sandbox", id, "--interface",
			 name);
}

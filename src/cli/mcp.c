/*
 * sbx mcp: a stdio MCP server (JSON-RPC 2.0, one message a line) that
 * offers the functions of one interface of a sandbox as tools. It asks
 * the server for the interface's schema (GET .../rpc/{name}) for
 * tools/list, and turns tools/call into a call (POST .../rpc/{name});
 * a call that fails comes back as a tool result with isError set and
 * the remote traceback in its text. The token, when the server wants
 * one, comes from --token or SBX_TOKEN.
 */
#include <curl/curl.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/util.h"
#include "cli/cli.h"
#include "base/banned.h"

#define MCP_PROTOCOL "2024-11-05"
#define HTTP_TIMEOUT_S 3600L

struct mcp {
	char *url; /* .../rpc/{name} */
	const char *name;
	const char *token;
	CURL *curl;
};

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
	buf_add(arg, data, size * n);
	return size * n;
}

/* GET (body NULL) or POST url; returns the parsed JSON answer or NULL
 * with err set. */
static json_t *http_json(struct mcp *m, const char *body, long *status,
			 char *err, size_t errlen)
{
	struct curl_slist *h = NULL;
	struct buf out;
	char *auth = NULL;
	json_error_t jerr;
	json_t *j = NULL;
	CURLcode rc;

	buf_init(&out);
	curl_easy_reset(m->curl);
	curl_easy_setopt(m->curl, CURLOPT_URL, m->url);
	curl_easy_setopt(m->curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(m->curl, CURLOPT_WRITEDATA, &out);
	curl_easy_setopt(m->curl, CURLOPT_TIMEOUT, HTTP_TIMEOUT_S);
	curl_easy_setopt(m->curl, CURLOPT_NOSIGNAL, 1L);
	h = curl_slist_append(h, "Content-Type: application/json");
	if (m->token && *m->token) {
		auth = xstrfmt("Authorization: Bearer %s", m->token);
		h = curl_slist_append(h, auth);
	}
	curl_easy_setopt(m->curl, CURLOPT_HTTPHEADER, h);
	if (body) {
		curl_easy_setopt(m->curl, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(m->curl, CURLOPT_POSTFIELDSIZE,
				 (long)strlen(body));
	}
	rc = curl_easy_perform(m->curl);
	if (rc != CURLE_OK) {
		snprintf(err, errlen, "cannot reach the sbx server: %s",
			 curl_easy_strerror(rc));
		goto out;
	}
	curl_easy_getinfo(m->curl, CURLINFO_RESPONSE_CODE, status);
	j = json_loadb(out.data ? out.data : "", out.len, 0, &jerr);
	if (!j)
		snprintf(err, errlen, "HTTP %ld with a body that is not JSON",
			 *status);
out:
	curl_slist_free_all(h);
	free(auth);
	buf_release(&out);
	return j;
}

static void send_msg(json_t *msg)
{
	char *text = json_dumps(msg, JSON_COMPACT | JSON_REAL_PRECISION(17));

	json_decref(msg);
	if (!text)
		return;
	fputs(text, stdout);
	fputc('\n', stdout);
	fflush(stdout);
	free(text);
}

static void send_result(json_t *id, json_t *result)
{
	send_msg(json_pack("{s:s,s:O,s:o}", "jsonrpc", "2.0", "id", id,
			   "result", result));
}

static void send_error(json_t *id, int code, const char *msg)
{
	send_msg(json_pack("{s:s,s:O,s:{s:i,s:s}}", "jsonrpc", "2.0", "id",
			   id ? id : json_null(), "error", "code", code,
			   "message", msg));
}

static json_t *text_content(const char *text, bool is_error)
{
	return json_pack("{s:[{s:s,s:s}],s:b}", "content", "type", "text",
			 "text", text, "isError", is_error);
}

static void tools_list(struct mcp *m, json_t *id)
{
	char err[256];
	long status = 0;
	json_t *schema = http_json(m, NULL, &status, err, sizeof(err));
	json_t *tools = json_array(), *fns, *f;
	size_t i;

	if (!schema || status != 200) {
		json_t *e = json_object_get(json_object_get(schema, "error"),
					    "message");

		if (schema)
			snprintf(err, sizeof(err), "HTTP %ld: %s", status,
				 json_string_value(e) ? json_string_value(e)
						      : "no schema");
		send_error(id, -32603, err);
		json_decref(schema);
		json_decref(tools);
		return;
	}
	fns = json_object_get(schema, "functions");
	json_array_foreach(fns, i, f)
	{
		const char *name = json_string_value(f);
		json_t *s = json_object_get(json_object_get(schema, "schemas"),
					    name ? name : "");
		json_t *desc = json_object_get(s, "description");
		json_t *in = json_object_get(s, "inputSchema");

		if (!name)
			continue;
		json_array_append_new(
			tools,
			json_pack("{s:s,s:o,s:o}", "name", name, "description",
				  json_is_string(desc)
					  ? json_incref(desc)
					  : json_sprintf("Call %s()", name),
				  "inputSchema",
				  json_is_object(in)
					  ? json_incref(in)
					  : json_pack("{s:s,s:{}}", "type",
						      "object", "properties")));
	}
	json_decref(schema);
	send_result(id, json_pack("{s:o}", "tools", tools));
}

static void tools_call(struct mcp *m, json_t *id, json_t *params)
{
	const char *name = json_string_value(json_object_get(params, "name"));
	json_t *args = json_object_get(params, "arguments");
	json_t *body, *ans, *result;
	char err[256], *text;
	long status = 0;

	if (!name) {
		send_error(id, -32602, "tools/call needs a tool 'name'");
		return;
	}
	if (args && !json_is_null(args) && !json_is_object(args)) {
		send_error(id, -32602, "'arguments' must be an object");
		return;
	}
	body = json_pack("{s:s,s:[],s:O}", "fn", name, "args", "kwargs",
			 json_is_object(args) ? args : json_object());
	text = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(17));
	json_decref(body);
	ans = http_json(m, text, &status, err, sizeof(err));
	free(text);
	if (!ans) {
		send_result(id, text_content(err, true));
		return;
	}
	if (json_is_true(json_object_get(ans, "ok"))) {
		result = json_object_get(ans, "result");
		if (json_is_string(result))
			text = xstrdup(json_string_value(result));
		else
			text = json_dumps(result,
					  JSON_INDENT(2) | JSON_ENCODE_ANY |
						  JSON_REAL_PRECISION(17));
		send_result(id, text_content(text ? text : "null", false));
	} else {
		json_t *e = json_object_get(ans, "error");
		const char *msg = json_is_string(e)
					  ? json_string_value(e)
					  : json_string_value(json_object_get(
						    e, "message"));
		const char *tb =
			json_string_value(json_object_get(ans, "traceback"));

		text = xstrfmt("%s%s%s", msg ? msg : "the call failed",
			       tb && *tb ? "\n\n" : "", tb && *tb ? tb : "");
		send_result(id, text_content(text, true));
	}
	free(text);
	json_decref(ans);
}

static void handle(struct mcp *m, const char *line, size_t len)
{
	json_error_t jerr;
	json_t *msg = json_loadb(line, len, 0, &jerr);
	json_t *id;
	const char *method;

	if (!json_is_object(msg)) {
		send_error(NULL, -32700, "parse error: not a JSON object");
		json_decref(msg);
		return;
	}
	id = json_object_get(msg, "id");
	method = json_string_value(json_object_get(msg, "method"));
	if (!method) {
		if (id) /* an answer to a request of ours: none are made */
			json_decref(msg);
		else {
			send_error(NULL, -32600, "invalid request");
			json_decref(msg);
		}
		return;
	}
	if (!id) { /* a notification: nothing to answer */
		json_decref(msg);
		return;
	}
	if (!strcmp(method, "initialize")) {
		json_t *v = json_object_get(json_object_get(msg, "params"),
					    "protocolVersion");

		send_result(id,
			    json_pack("{s:s,s:{s:{s:b}},s:{s:s,s:s}}",
				      "protocolVersion",
				      json_is_string(v) ? json_string_value(v)
							: MCP_PROTOCOL,
				      "capabilities", "tools", "listChanged", 0,
				      "serverInfo", "name", m->name, "version",
				      "sbx"));
	} else if (!strcmp(method, "ping")) {
		send_result(id, json_object());
	} else if (!strcmp(method, "tools/list")) {
		tools_list(m, id);
	} else if (!strcmp(method, "tools/call")) {
		tools_call(m, id, json_object_get(msg, "params"));
	} else {
		char text[160];

		snprintf(text, sizeof(text), "method not found: %.100s",
			 method);
		send_error(id, -32601, text);
	}
	json_decref(msg);
}

static const char usage[] =
	"usage: sbx mcp --url URL --sandbox ID --interface NAME [--token T]\n"
	"\n"
	"A stdio MCP server offering the functions of interface NAME of\n"
	"sandbox ID on the sbx server at URL as tools. The token may also\n"
	"come from SBX_TOKEN.\n";

int cmd_mcp(int argc, char **argv)
{
	static const struct option opts[] = {
		{"url", required_argument, NULL, 'u'},
		{"sandbox", required_argument, NULL, 's'},
		{"interface", required_argument, NULL, 'i'},
		{"token", required_argument, NULL, 't'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}};
	const char *url = NULL, *sandbox = NULL, *iface = NULL;
	struct mcp m = {0};
	char *line = NULL;
	size_t cap = 0, n;
	ssize_t got;
	int c;

	m.token = getenv("SBX_TOKEN");
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'u':
			url = optarg;
			break;
		case 's':
			sandbox = optarg;
			break;
		case 'i':
			iface = optarg;
			break;
		case 't':
			m.token = optarg;
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			fputs(usage, stderr);
			return EXIT_USAGE;
		}
	}
	if (!url || !sandbox || !iface || optind != argc) {
		fputs(usage, stderr);
		return EXIT_USAGE;
	}
	n = strlen(url);
	while (n && url[n - 1] == '/')
		n--;
	m.url = xstrfmt("%.*s/v1/sandboxes/%s/rpc/%s", (int)n, url, sandbox,
			iface);
	m.name = iface;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	m.curl = curl_easy_init();
	if (!m.curl) {
		fprintf(stderr, "sbx mcp: cannot start libcurl\n");
		free(m.url);
		return 1;
	}
	while ((got = getline(&line, &cap, stdin)) >= 0) {
		size_t len = (size_t)got;

		while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			len--;
		if (len)
			handle(&m, line, len);
	}
	free(line);
	curl_easy_cleanup(m.curl);
	curl_global_cleanup();
	free(m.url);
	return 0;
}

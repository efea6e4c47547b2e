/*
 * Interfaces over HTTP (/v1/sandboxes/{id}/rpc...): the request parsers
 * (rpc_parse.c, which links and is fuzzed on its own), the writers of
 * the client module, prompt and MCP config (rpc_gen.c) and the routes
 * (rpc.c).
 */
#ifndef SBX_SERVER_RPC_H
#define SBX_SERVER_RPC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct request;

/* The most workers an interface may ask for, and the longest timeouts. */
#define RPC_PARSE_MAX_WORKERS 256
#define RPC_PARSE_MAX_TIMEOUT_S 3600
/* The largest module sent as text. */
#define RPC_PARSE_MAX_SOURCE (4u << 20)

/* Whether s (n bytes) names an interface: 1 to 63 of [A-Za-z0-9_.-], not
 * starting with a dot. */
bool rpc_parse_name(const char *s, size_t n);

/* Parses a call body, Seer's {"fn", "args", "kwargs"} plus an optional
 * "timeout_s". Returns a new object with "fn" (a string), "args" (an
 * array), "kwargs" (an object) and "timeout_s" when given, or NULL with a
 * message in err naming the problem (the caller answers 400). */
json_t *rpc_parse_call(const char *body, size_t len, char *err, size_t errlen);

/* Parses a load body: {"name", "source" | "path", "workers",
 * "timeout_s", "load_timeout_s"}. Returns a new object with those
 * checked ("name" defaults to "interface"), or NULL with a message in
 * err (the caller answers 422). */
json_t *rpc_parse_load(const char *body, size_t len, char *err, size_t errlen);

/* The generated documents. desc is an interface's full schema
 * ({"name", "functions", "schemas", "signatures"}, from the sandbox:
 * hostile data, checked here); url is where calls go. Each returns a
 * malloc'd NUL-terminated text the caller frees. client: a stdlib-only
 * Python module with one function per exposed function whose name and
 * parameters can be written safely (annotations that are not plain type
 * expressions are dropped, defaults that are not JSON data are left to
 * the server). prompt: Markdown describing the functions. */
char *rpc_gen_client(json_t *desc, const char *url);
char *rpc_gen_prompt(json_t *desc, const char *url);
/* {"mcpServers": {name: {"type": "stdio", "command": sbx, "args":
 * ["mcp", "--url", base_url, "--sandbox", id, "--interface", name]}}}
 * (a new reference). */
json_t *rpc_gen_mcp(const char *name, const char *sbx, const char *base_url,
		    const char *id);

/* Routes /v1/sandboxes/{id}/rpc[/...]; sub is the path after the id
 * (starting "/rpc"). Replies, now or later. */
void rpc_route(struct request *req, const char *id, const char *sub);

#endif

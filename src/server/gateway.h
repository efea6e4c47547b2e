/*
 * The model gateway, as the rest of the server sees it: the "llm" option
 * of sandboxes and runs, the peer that stands for one sandbox at the
 * gateway, and what /v1/health shows. The routes are in internal.h.
 */
#ifndef SBX_SERVER_GATEWAY_H
#define SBX_SERVER_GATEWAY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sandbox/sandbox.h"

#define GATEWAY_MAX_ROUTES 8

/* A host route: gateway paths under prefix ("/rollout/") go to target
 * ("http://127.0.0.1:9000"), a server of the host. */
struct gateway_route {
	char prefix[129];
	char target[513];
};

/* A sandbox's "llm" value: false, true, or an object of these; and its
 * "host_routes". */
struct gateway_opts {
	bool on; /* the model routes */
	struct gateway_route routes[GATEWAY_MAX_ROUTES];
	size_t nroutes;
	char session[128]; /* default session name, "" for none */
	uint64_t max_calls, max_prompt_tokens, max_completion_tokens,
		max_concurrent; /* 0: the server's limit */
};

/* Parses v (NULL or JSON null: absent, which means on_default) into o.
 * Returns 0, or -EINVAL with the reason in err. */
int gateway_opts_parse(const json_t *v, bool on_default, struct gateway_opts *o,
		       char *err, size_t errlen);
/* Parses a "host_routes" value (NULL or null: none) into o's routes:
 * {"/prefix/": "http://host:port[/base]"}. Returns 0 or -EINVAL. */
int gateway_routes_parse(const json_t *v, struct gateway_opts *o, char *err,
			 size_t errlen);

struct gateway_peer;
struct session_gateway;
struct upstream_engine;
struct loop;

/* Whether the server has any upstream (so "llm" can be on). */
bool gateway_enabled(void);
/* Whether sandboxes get the gateway when they do not say. */
bool gateway_default_on(void);
/* A peer for sandbox id with labels (borrowed, copied); the caller holds
 * the reference returned and gives it back with gateway_peer_close(). */
struct gateway_peer *gateway_peer_new(const char *id, const json_t *labels,
				      const struct gateway_opts *o);
/* Gives spec the peer's listener (spec->listen_*) and the environment
 * that points OpenAI clients at it. */
void gateway_peer_attach(struct gateway_peer *p, struct sandbox_spec *spec);
/* {"base_url", "api_key"} as the sandbox sees them (a new reference). */
json_t *gateway_peer_json(const struct gateway_peer *p);
/* The sandbox is gone: its gateway socket closes, calls under way end
 * as their connections do. Drops the caller's reference. NULL is a
 * no-op. */
void gateway_peer_close(struct gateway_peer *p);
/* The hooks stateful sandboxes use (sessions_set_gateway()). */
extern const struct session_gateway gateway_session_ops;
/* The gateway's engine and its loop (for forwarding), and a content type
 * kept for good (the HTTP layer keeps reply content types by pointer). */
struct upstream_engine *gateway_engine(void);
struct loop *gateway_loop(void);
const char *gateway_content_type(const char *ctype);
/* The gateway's lines of /metrics. */
struct buf;
void gateway_metrics(struct buf *b);
/* What /v1/health shows of the gateway (a new reference). */
json_t *gateway_health(void);

#endif

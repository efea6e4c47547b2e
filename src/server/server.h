/*
 * sbx serve: the HTTP server. Routes, authentication, body limits, JSON
 * errors, suspension of requests while their sandbox runs, and the metrics
 * they feed. Knows nothing of namespaces: runs go through the runner.
 */
#ifndef SBX_SERVER_H
#define SBX_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "sandbox/sandbox.h"

/* A model upstream of the gateway (--upstream NAME=URL). */
struct server_upstream {
	char *name;
	char *url;     /* an OpenAI-compatible base, ending in /v1 */
	char *key_env; /* the server's env var holding its key, or NULL */
};

/* The gateway's limits (--llm-limit KEY=N), 0: none. */
enum server_llm_limit {
	LLM_LIMIT_SANDBOX_CALLS,
	LLM_LIMIT_SANDBOX_PROMPT_TOKENS,
	LLM_LIMIT_SANDBOX_COMPLETION_TOKENS,
	LLM_LIMIT_SANDBOX_CONCURRENT,
	LLM_LIMIT_SESSION_CALLS,
	LLM_LIMIT_SESSION_PROMPT_TOKENS,
	LLM_LIMIT_SESSION_COMPLETION_TOKENS,
	LLM_LIMIT_SESSION_CONCURRENT,
	LLM_LIMIT_COUNT,
};

struct server_config {
	char *host;	      /* listen address, default 127.0.0.1 */
	uint16_t port;	      /* default 8080; 0 picks a free port */
	unsigned concurrency; /* sandboxes at once, default: cores */
	unsigned queue;	      /* runs waiting behind them */
	unsigned warm; /* warm sandboxes kept ready, default: concurrency */
	bool warm_set;
	/* stateful sandboxes built ahead of their create (default 2, or 0
	 * with no warm sandboxes) */
	unsigned prebuilt;
	bool prebuilt_set;
	char *token;	   /* bearer token, NULL: none */
	uint64_t max_body; /* bytes */
	unsigned http_threads;
	unsigned client_timeout_s; /* idle connections are closed */
	/* Most bytes unsent replies may hold, all connections together;
	 * past it the connections that have held theirs longest are closed.
	 * 0: no limit. */
	uint64_t reply_budget;
	struct sandbox_limits limits; /* defaults for every run */
	uint64_t max_wall_ms;	      /* caps on what clients may ask */
	uint64_t max_memory;
	char *port_file;	  /* write the bound port here once listening */
	uint64_t max_upload;	  /* file and archive bodies */
	uint64_t max_disk;	  /* most disk a stateful sandbox may ask for */
	unsigned max_sandboxes;	  /* live stateful sandboxes */
	uint64_t idle_timeout_ms; /* default for stateful sandboxes */
	uint64_t max_lifetime_ms; /* cap for stateful sandboxes */

	/* The model gateway. */
	struct server_upstream *upstreams;
	size_t nupstreams;
	char *default_upstream; /* NULL: the only one, if only one */
	bool llm_default;	/* sandboxes get the gateway unless they
				 * say "llm": false */
	uint16_t llm_port;	/* the gateway's port inside sandboxes */
	char *state_dir;	/* sbx.db lives here */
	bool llm_no_token_ids;	/* do not ask upstreams for token ids */
	bool llm_no_logprobs;	/* nor for logprobs */
	uint64_t llm_limits[LLM_LIMIT_COUNT];
	uint64_t upstream_connect_ms;
	uint64_t upstream_read_ms;
	unsigned upstream_retries;
	unsigned upstream_connections;
};

/* Fills the defaults (env vars are the CLI's business). */
void server_config_init(struct server_config *cfg);
void server_config_release(struct server_config *cfg);

/* Serves until SIGINT or SIGTERM. Returns 0, or 1 with a message printed
 * when the server could not start. */
int server_run(const struct server_config *cfg);

#endif

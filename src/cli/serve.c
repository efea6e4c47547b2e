/*
 * sbx serve: flags and environment variables into a server_config. Every
 * flag has an SBX_* variable; the flag wins.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "base/log.h"
#include "base/util.h"
#include "cli/cli.h"
#include "runtime/limits.h"
#include "server/server.h"
#include "base/banned.h"

static const char usage[] =
	"usage: sbx serve [options]\n"
	"\n"
	"  --listen=HOST:PORT   address (SBX_LISTEN, default 127.0.0.1:8080;\n"
	"                       port 0 picks a free one)\n"
	"  --concurrency=N      sandboxes at once (SBX_CONCURRENCY, default:\n"
	"                       32 per core, at least 128); each also waits\n"
	"                       for free host memory before it starts\n"
	"  --queue=N            runs waiting behind them (SBX_QUEUE, default "
	"2048);\n"
	"                       past that, 503 with Retry-After\n"
	"  --warm=N             sandboxes kept built and waiting for runs\n"
	"                       (SBX_WARM, default: one per core; 0: none);\n"
	"                       under load up to 3 per core more\n"
	"  --prebuilt=N         stateful sandboxes kept built for POST\n"
	"                       /v1/sandboxes (SBX_PREBUILT, default 2, or 0\n"
	"                       with --warm=0)\n"
	"  --token=TOKEN        require 'Authorization: Bearer TOKEN' or the\n"
	"                       path prefix /t/TOKEN (SBX_TOKEN); mandatory\n"
	"                       when listening beyond loopback\n"
	"  --max-body=SIZE      largest request body (SBX_MAX_BODY, default:\n"
	"                       memory / 8, between 64M and 1G)\n"
	"  --memory=SIZE        default memory per run (SBX_MEMORY, default:\n"
	"                       memory / (2 * cores), between 1G and 4G,\n"
	"                       at most half the memory)\n"
	"  --max-memory=SIZE    most a client may ask for (SBX_MAX_MEMORY, "
	"8G)\n"
	"  --time=DURATION      default wall limit per run (SBX_TIME, 10s)\n"
	"  --max-time=DURATION  most a client may ask for (SBX_MAX_TIME, 1h);\n"
	"                       /run_code lowers a longer timeout to it\n"
	"  --output=SIZE        stdout/stderr cap per run (SBX_OUTPUT, 8M)\n"
	"  --pids=N             processes per run (SBX_PIDS, default 128)\n"
	"  --max-pids=N         most a client may ask for (SBX_MAX_PIDS,\n"
	"                       default: --pids; at most the host's pid_max)\n"
	"  --max-output=SIZE    most output a client may ask for\n"
	"                       (SBX_MAX_OUTPUT, default: --output)\n"
	"  --cpus=N             CPU cores per sandbox, fractions allowed\n"
	"                       (SBX_CPUS, default 1; 0: no quota)\n"
	"  --max-cpus=N         most a client may ask for (SBX_MAX_CPUS,\n"
	"                       default: every core)\n"
	"  --cpu-weight=N       CPU share under contention, 1-10000\n"
	"                       (SBX_CPU_WEIGHT, default 100)\n"
	"  --max-cpu-weight=N   most a client may ask for\n"
	"                       (SBX_MAX_CPU_WEIGHT, default: --cpu-weight)\n"
	"  --disk=SIZE          writable space per run (SBX_DISK, 256M)\n"
	"  --client-timeout=S   close idle connections (SBX_CLIENT_TIMEOUT, "
	"60)\n"
	"  --reply-budget=SIZE  most memory unsent replies may hold, all\n"
	"                       clients together; past it the connections\n"
	"                       holding theirs longest are closed\n"
	"                       (SBX_REPLY_BUDGET, 256M; 0: no limit)\n"
	"  --max-sandboxes=N    live stateful sandboxes (SBX_MAX_SANDBOXES, "
	"64)\n"
	"  --idle-timeout=DUR   default idle reaping of stateful sandboxes\n"
	"                       (SBX_IDLE_TIMEOUT, 10m)\n"
	"  --max-lifetime=DUR   longest a stateful sandbox may live\n"
	"                       (SBX_MAX_LIFETIME, 6h)\n"
	"  --max-upload=SIZE    largest file or archive upload "
	"(SBX_MAX_UPLOAD, "
	"512M)\n"
	"  --max-disk=SIZE      most disk a stateful sandbox may ask for\n"
	"                       (SBX_MAX_DISK, 4G; tmpfs, counted as memory)\n"
	"  --uid-base=UID       first host uid of the sandboxes' uid slots\n"
	"                       (SBX_UID_BASE, default 1879048192 = "
	"0x70000000)\n"
	"  --uid-slots=N        slots of 65536 host ids, one per live "
	"sandbox\n"
	"                       (SBX_UID_SLOTS, default 4096)\n"
	"\n"
	"model gateway (OpenAI-compatible calls from sandboxes, traced):\n"
	"  --upstream=NAME=URL  an OpenAI-compatible upstream, URL ending in\n"
	"                       /v1; repeatable (SBX_UPSTREAMS, comma-"
	"separated)\n"
	"  --upstream-key=NAME=ENVVAR  send the key in the server's env var\n"
	"                       ENVVAR to upstream NAME (SBX_UPSTREAM_KEYS)\n"
	"  --default-upstream=NAME  where models no upstream lists go\n"
	"                       (SBX_DEFAULT_UPSTREAM; default: the only one)\n"
	"  --llm                sandboxes and runs get the gateway unless\n"
	"                       they say \"llm\": false (SBX_LLM=1)\n"
	"  --llm-port=PORT      the gateway's port inside sandboxes\n"
	"                       (SBX_LLM_PORT, default 4000)\n"
	"  --state-dir=DIR      where traces are kept, in sbx.db\n"
	"                       (SBX_STATE_DIR, default /var/lib/sbx as root,\n"
	"                       else ~/.local/state/sbx)\n"
	"  --no-llm-token-ids   do not ask upstreams for token ids\n"
	"                       (SBX_LLM_TOKEN_IDS=0)\n"
	"  --no-llm-logprobs    do not ask upstreams for logprobs\n"
	"                       (SBX_LLM_LOGPROBS=0)\n"
	"  --llm-limit=KEY=N    calls and tokens per sandbox and per session;\n"
	"                       KEY is sandbox_ or session_ followed by\n"
	"                       calls, prompt_tokens, completion_tokens or\n"
	"                       concurrent; 0: none (SBX_LLM_LIMITS; default\n"
	"                       sandbox_concurrent=256)\n"
	"  --upstream-connect-timeout=DUR  per attempt (SBX_UPSTREAM_CONNECT_"
	"TIMEOUT,\n"
	"                       10s)\n"
	"  --upstream-read-timeout=DUR  no byte for this long: 504\n"
	"                       (SBX_UPSTREAM_READ_TIMEOUT, 5m)\n"
	"  --upstream-retries=N on connect errors and 5xx before any byte\n"
	"                       was sent on (SBX_UPSTREAM_RETRIES, 2)\n"
	"  --upstream-connections=N  upstream connections in all\n"
	"                       (SBX_UPSTREAM_CONNECTIONS, 256)\n"
	"\n"
	"models and GPUs:\n"
	"  --models=DIR         the model store: one directory per model,\n"
	"                       named org--name; sandboxes and runs asking\n"
	"                       for \"models\" see theirs read-only under\n"
	"                       /models (SBX_MODELS)\n"
	"\n"
	"  --port-file=FILE     write the bound port to FILE\n"
	"  --verbose            log debug lines\n";

enum {
	OPT_LISTEN = 256,
	OPT_CONC,
	OPT_QUEUE,
	OPT_TOKEN,
	OPT_MAX_BODY,
	OPT_MEMORY,
	OPT_MAX_MEMORY,
	OPT_TIME,
	OPT_MAX_TIME,
	OPT_OUTPUT,
	OPT_PIDS,
	OPT_DISK,
	OPT_CLIENT_TIMEOUT,
	OPT_PORT_FILE,
	OPT_VERBOSE,
	OPT_MAX_SANDBOXES,
	OPT_IDLE_TIMEOUT,
	OPT_MAX_LIFETIME,
	OPT_MAX_UPLOAD,
	OPT_MAX_DISK,
	OPT_WARM,
	OPT_PREBUILT,
	OPT_MAX_PIDS,
	OPT_MAX_OUTPUT,
	OPT_CPUS,
	OPT_MAX_CPUS,
	OPT_CPU_WEIGHT,
	OPT_MAX_CPU_WEIGHT,
	OPT_REPLY_BUDGET,
	OPT_UID_BASE,
	OPT_UID_SLOTS,
	OPT_UPSTREAM,
	OPT_UPSTREAM_KEY,
	OPT_DEFAULT_UPSTREAM,
	OPT_LLM,
	OPT_LLM_PORT,
	OPT_STATE_DIR,
	OPT_NO_TOKEN_IDS,
	OPT_NO_LOGPROBS,
	OPT_LLM_LIMIT,
	OPT_UP_CONNECT,
	OPT_UP_READ,
	OPT_UP_RETRIES,
	OPT_UP_CONNS,
	OPT_MODELS,
};

static const struct option options[] = {
	{"listen", required_argument, NULL, OPT_LISTEN},
	{"concurrency", required_argument, NULL, OPT_CONC},
	{"queue", required_argument, NULL, OPT_QUEUE},
	{"token", required_argument, NULL, OPT_TOKEN},
	{"max-body", required_argument, NULL, OPT_MAX_BODY},
	{"memory", required_argument, NULL, OPT_MEMORY},
	{"max-memory", required_argument, NULL, OPT_MAX_MEMORY},
	{"time", required_argument, NULL, OPT_TIME},
	{"max-time", required_argument, NULL, OPT_MAX_TIME},
	{"output", required_argument, NULL, OPT_OUTPUT},
	{"pids", required_argument, NULL, OPT_PIDS},
	{"disk", required_argument, NULL, OPT_DISK},
	{"client-timeout", required_argument, NULL, OPT_CLIENT_TIMEOUT},
	{"reply-budget", required_argument, NULL, OPT_REPLY_BUDGET},
	{"uid-base", required_argument, NULL, OPT_UID_BASE},
	{"uid-slots", required_argument, NULL, OPT_UID_SLOTS},
	{"port-file", required_argument, NULL, OPT_PORT_FILE},
	{"verbose", no_argument, NULL, OPT_VERBOSE},
	{"max-sandboxes", required_argument, NULL, OPT_MAX_SANDBOXES},
	{"idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT},
	{"max-lifetime", required_argument, NULL, OPT_MAX_LIFETIME},
	{"max-upload", required_argument, NULL, OPT_MAX_UPLOAD},
	{"max-disk", required_argument, NULL, OPT_MAX_DISK},
	{"warm", required_argument, NULL, OPT_WARM},
	{"prebuilt", required_argument, NULL, OPT_PREBUILT},
	{"max-pids", required_argument, NULL, OPT_MAX_PIDS},
	{"max-output", required_argument, NULL, OPT_MAX_OUTPUT},
	{"cpus", required_argument, NULL, OPT_CPUS},
	{"max-cpus", required_argument, NULL, OPT_MAX_CPUS},
	{"cpu-weight", required_argument, NULL, OPT_CPU_WEIGHT},
	{"max-cpu-weight", required_argument, NULL, OPT_MAX_CPU_WEIGHT},
	{"upstream", required_argument, NULL, OPT_UPSTREAM},
	{"upstream-key", required_argument, NULL, OPT_UPSTREAM_KEY},
	{"default-upstream", required_argument, NULL, OPT_DEFAULT_UPSTREAM},
	{"llm", no_argument, NULL, OPT_LLM},
	{"llm-port", required_argument, NULL, OPT_LLM_PORT},
	{"state-dir", required_argument, NULL, OPT_STATE_DIR},
	{"no-llm-token-ids", no_argument, NULL, OPT_NO_TOKEN_IDS},
	{"no-llm-logprobs", no_argument, NULL, OPT_NO_LOGPROBS},
	{"llm-limit", required_argument, NULL, OPT_LLM_LIMIT},
	{"upstream-connect-timeout", required_argument, NULL, OPT_UP_CONNECT},
	{"upstream-read-timeout", required_argument, NULL, OPT_UP_READ},
	{"upstream-retries", required_argument, NULL, OPT_UP_RETRIES},
	{"upstream-connections", required_argument, NULL, OPT_UP_CONNS},
	{"models", required_argument, NULL, OPT_MODELS},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

static const char *const env_names[] = {
	[OPT_LISTEN - 256] = "SBX_LISTEN",
	[OPT_CONC - 256] = "SBX_CONCURRENCY",
	[OPT_QUEUE - 256] = "SBX_QUEUE",
	[OPT_TOKEN - 256] = "SBX_TOKEN",
	[OPT_MAX_BODY - 256] = "SBX_MAX_BODY",
	[OPT_MEMORY - 256] = "SBX_MEMORY",
	[OPT_MAX_MEMORY - 256] = "SBX_MAX_MEMORY",
	[OPT_TIME - 256] = "SBX_TIME",
	[OPT_MAX_TIME - 256] = "SBX_MAX_TIME",
	[OPT_OUTPUT - 256] = "SBX_OUTPUT",
	[OPT_PIDS - 256] = "SBX_PIDS",
	[OPT_DISK - 256] = "SBX_DISK",
	[OPT_CLIENT_TIMEOUT - 256] = "SBX_CLIENT_TIMEOUT",
	[OPT_REPLY_BUDGET - 256] = "SBX_REPLY_BUDGET",
	[OPT_PORT_FILE - 256] = NULL,
	[OPT_VERBOSE - 256] = NULL,
	[OPT_MAX_SANDBOXES - 256] = "SBX_MAX_SANDBOXES",
	[OPT_IDLE_TIMEOUT - 256] = "SBX_IDLE_TIMEOUT",
	[OPT_MAX_LIFETIME - 256] = "SBX_MAX_LIFETIME",
	[OPT_MAX_UPLOAD - 256] = "SBX_MAX_UPLOAD",
	[OPT_MAX_DISK - 256] = "SBX_MAX_DISK",
	[OPT_WARM - 256] = "SBX_WARM",
	[OPT_PREBUILT - 256] = "SBX_PREBUILT",
	[OPT_MAX_PIDS - 256] = "SBX_MAX_PIDS",
	[OPT_MAX_OUTPUT - 256] = "SBX_MAX_OUTPUT",
	[OPT_CPUS - 256] = "SBX_CPUS",
	[OPT_MAX_CPUS - 256] = "SBX_MAX_CPUS",
	[OPT_CPU_WEIGHT - 256] = "SBX_CPU_WEIGHT",
	[OPT_MAX_CPU_WEIGHT - 256] = "SBX_MAX_CPU_WEIGHT",
	[OPT_UID_BASE - 256] = "SBX_UID_BASE",
	[OPT_UID_SLOTS - 256] = "SBX_UID_SLOTS",
	[OPT_UPSTREAM - 256] = "SBX_UPSTREAMS",
	[OPT_UPSTREAM_KEY - 256] = "SBX_UPSTREAM_KEYS",
	[OPT_DEFAULT_UPSTREAM - 256] = "SBX_DEFAULT_UPSTREAM",
	[OPT_LLM - 256] = "SBX_LLM",
	[OPT_LLM_PORT - 256] = "SBX_LLM_PORT",
	[OPT_STATE_DIR - 256] = "SBX_STATE_DIR",
	[OPT_NO_TOKEN_IDS - 256] = "SBX_LLM_TOKEN_IDS",
	[OPT_NO_LOGPROBS - 256] = "SBX_LLM_LOGPROBS",
	[OPT_LLM_LIMIT - 256] = "SBX_LLM_LIMITS",
	[OPT_UP_CONNECT - 256] = "SBX_UPSTREAM_CONNECT_TIMEOUT",
	[OPT_UP_READ - 256] = "SBX_UPSTREAM_READ_TIMEOUT",
	[OPT_UP_RETRIES - 256] = "SBX_UPSTREAM_RETRIES",
	[OPT_UP_CONNS - 256] = "SBX_UPSTREAM_CONNECTIONS",
	[OPT_MODELS - 256] = "SBX_MODELS",
};

static const char *const llm_limit_names[LLM_LIMIT_COUNT] = {
	[LLM_LIMIT_SANDBOX_CALLS] = "sandbox_calls",
	[LLM_LIMIT_SANDBOX_PROMPT_TOKENS] = "sandbox_prompt_tokens",
	[LLM_LIMIT_SANDBOX_COMPLETION_TOKENS] = "sandbox_completion_tokens",
	[LLM_LIMIT_SANDBOX_CONCURRENT] = "sandbox_concurrent",
	[LLM_LIMIT_SESSION_CALLS] = "session_calls",
	[LLM_LIMIT_SESSION_PROMPT_TOKENS] = "session_prompt_tokens",
	[LLM_LIMIT_SESSION_COMPLETION_TOKENS] = "session_completion_tokens",
	[LLM_LIMIT_SESSION_CONCURRENT] = "session_concurrent",
};

static bool name_ok(const char *s, size_t n)
{
	size_t i;

	if (!n || n > 64)
		return false;
	for (i = 0; i < n; i++)
		if (!(s[i] == '-' || s[i] == '_' || s[i] == '.' ||
		      (s[i] >= '0' && s[i] <= '9') ||
		      (s[i] >= 'a' && s[i] <= 'z') ||
		      (s[i] >= 'A' && s[i] <= 'Z')))
			return false;
	return true;
}

static struct server_upstream *find_upstream(struct server_config *cfg,
					     const char *name, size_t n)
{
	size_t i;

	for (i = 0; i < cfg->nupstreams; i++)
		if (strlen(cfg->upstreams[i].name) == n &&
		    !strncmp(cfg->upstreams[i].name, name, n))
			return &cfg->upstreams[i];
	return NULL;
}

/* One NAME=VALUE item of --upstream, --upstream-key or --llm-limit. */
static int apply_item(struct server_config *cfg, int opt, const char *item,
		      size_t len)
{
	const char *eq = memchr(item, '=', len);
	size_t n = eq ? (size_t)(eq - item) : 0;
	char *val = eq ? xstrndup(eq + 1, len - n - 1) : NULL;
	struct server_upstream *u;
	uint64_t num;
	size_t i;
	int r = -1;

	if (!eq || !name_ok(item, n) || !*val) {
		fprintf(stderr, "sbx serve: bad %s '%.*s' (NAME=%s)\n",
			opt == OPT_LLM_LIMIT ? "--llm-limit" : "--upstream",
			(int)len, item,
			opt == OPT_UPSTREAM    ? "URL"
			: opt == OPT_LLM_LIMIT ? "N"
					       : "ENVVAR");
		goto out;
	}
	switch (opt) {
	case OPT_UPSTREAM:
		if (strncmp(val, "http://", 7) && strncmp(val, "https://", 8)) {
			fprintf(stderr,
				"sbx serve: upstream '%.*s': the URL must "
				"start with http:// or https://\n",
				(int)n, item);
			goto out;
		}
		u = find_upstream(cfg, item, n);
		if (!u) {
			cfg->upstreams =
				xrealloc(cfg->upstreams,
					 (cfg->nupstreams + 1) * sizeof(*u));
			u = &cfg->upstreams[cfg->nupstreams++];
			memset(u, 0, sizeof(*u));
			u->name = xstrndup(item, n);
		}
		free(u->url);
		u->url = val;
		val = NULL;
		r = 0;
		break;
	case OPT_UPSTREAM_KEY:
		u = find_upstream(cfg, item, n);
		if (!u) {
			fprintf(stderr,
				"sbx serve: --upstream-key for '%.*s', which "
				"no --upstream names (give --upstream "
				"first)\n",
				(int)n, item);
			goto out;
		}
		free(u->key_env);
		u->key_env = val;
		val = NULL;
		r = 0;
		break;
	case OPT_LLM_LIMIT:
		for (i = 0; i < LLM_LIMIT_COUNT; i++)
			if (strlen(llm_limit_names[i]) == n &&
			    !strncmp(llm_limit_names[i], item, n))
				break;
		if (i == LLM_LIMIT_COUNT || parse_u64(val, &num)) {
			fprintf(stderr,
				"sbx serve: bad --llm-limit '%.*s' (KEY=N; "
				"see sbx serve --help)\n",
				(int)len, item);
			goto out;
		}
		cfg->llm_limits[i] = num;
		r = 0;
		break;
	}
out:
	free(val);
	return r;
}

/* A comma-separated list of items. */
static int apply_list(struct server_config *cfg, int opt, const char *v)
{
	while (*v) {
		size_t n = strcspn(v, ",");

		if (n && apply_item(cfg, opt, v, n))
			return -1;
		v += n;
		if (*v)
			v++;
	}
	return 0;
}

static bool env_false(const char *v)
{
	return !strcmp(v, "0") || !strcasecmp(v, "false") ||
	       !strcasecmp(v, "no") || !strcasecmp(v, "off");
}

/* Maxima that have no field in server_config; 0: derived (see
 * set_rules()). */
static struct {
	uint64_t pids, output, cpus, cpu_weight;
} maxima;

static int set_count(const char *what, const char *v, uint64_t min,
		     uint64_t max, unsigned *out)
{
	uint64_t n;

	if (parse_u64(v, &n) || n < min || n > max) {
		fprintf(stderr, "sbx serve: bad %s '%s' (%llu to %llu)\n", what,
			v, (unsigned long long)min, (unsigned long long)max);
		return -1;
	}
	*out = (unsigned)n;
	return 0;
}

static int set_size(const char *what, const char *v, uint64_t min,
		    uint64_t *out)
{
	if (parse_size(v, out) || *out < min) {
		fprintf(stderr, "sbx serve: bad %s '%s'\n", what, v);
		return -1;
	}
	return 0;
}

static int set_time(const char *what, const char *v, uint64_t *out)
{
	if (parse_duration_ms(v, out) || *out == 0) {
		fprintf(stderr, "sbx serve: bad %s '%s'\n", what, v);
		return -1;
	}
	return 0;
}

static int set_cpus(const char *what, const char *v, uint64_t *out)
{
	if (limits_parse_cpus(v, out)) {
		fprintf(stderr, "sbx serve: bad %s '%s' (cores, e.g. 0.5)\n",
			what, v);
		return -1;
	}
	return 0;
}

static int apply(struct server_config *cfg, int opt, const char *v)
{
	unsigned n;
	char *colon;

	switch (opt) {
	case OPT_LISTEN:
		colon = strrchr(v, ':');
		if (!colon || colon == v ||
		    set_count("port", colon + 1, 0, 65535, &n))
			return colon ? -1
				     : (fprintf(stderr,
						"sbx serve: bad listen address "
						"'%s' (HOST:PORT)\n",
						v),
					-1);
		free(cfg->host);
		cfg->host = xstrndup(v, (size_t)(colon - v));
		cfg->port = (uint16_t)n;
		return 0;
	case OPT_CONC:
		return set_count("concurrency", v, 1, 4096, &cfg->concurrency);
	case OPT_QUEUE:
		return set_count("queue size", v, 0, 1 << 20, &cfg->queue);
	case OPT_TOKEN:
		free(cfg->token);
		cfg->token = xstrdup(v);
		return 0;
	case OPT_MAX_BODY:
		return set_size("body size", v, 1024, &cfg->max_body);
	case OPT_MEMORY:
		return set_size("memory", v, 4 << 20,
				&cfg->limits.memory_bytes);
	case OPT_MAX_MEMORY:
		return set_size("memory", v, 4 << 20, &cfg->max_memory);
	case OPT_TIME:
		return set_time("time", v, &cfg->limits.wall_ms);
	case OPT_MAX_TIME:
		return set_time("time", v, &cfg->max_wall_ms);
	case OPT_OUTPUT:
		return set_size("output limit", v, 1,
				&cfg->limits.output_bytes);
	case OPT_PIDS:
		if (set_count("process limit", v, 1, 1 << 22, &n))
			return -1;
		cfg->limits.pids = n;
		return 0;
	case OPT_DISK:
		return set_size("disk size", v, 1 << 20,
				&cfg->limits.disk_bytes);
	case OPT_CLIENT_TIMEOUT:
		return set_count("client timeout", v, 1, 86400,
				 &cfg->client_timeout_s);
	case OPT_REPLY_BUDGET:
		return set_size("reply budget", v, 0, &cfg->reply_budget);
	case OPT_PORT_FILE:
		free(cfg->port_file);
		cfg->port_file = xstrdup(v);
		return 0;
	case OPT_VERBOSE:
		log_set_level(LOG_DEBUG);
		return 0;
	case OPT_MAX_SANDBOXES:
		return set_count("sandbox limit", v, 1, 100000,
				 &cfg->max_sandboxes);
	case OPT_IDLE_TIMEOUT:
		return set_time("idle timeout", v, &cfg->idle_timeout_ms);
	case OPT_MAX_LIFETIME:
		return set_time("lifetime", v, &cfg->max_lifetime_ms);
	case OPT_MAX_UPLOAD:
		return set_size("upload size", v, 1024, &cfg->max_upload);
	case OPT_WARM:
		cfg->warm_set = true;
		return set_count("warm sandboxes", v, 0, 1024, &cfg->warm);
	case OPT_PREBUILT:
		cfg->prebuilt_set = true;
		return set_count("pre-built sandboxes", v, 0, 1024,
				 &cfg->prebuilt);
	case OPT_MAX_DISK:
		return set_size("disk size", v, 1 << 20, &cfg->max_disk);
	case OPT_MAX_PIDS:
		if (set_count("process limit", v, 1, 1 << 22, &n))
			return -1;
		maxima.pids = n;
		return 0;
	case OPT_MAX_OUTPUT:
		return set_size("output limit", v, 1, &maxima.output);
	case OPT_CPUS:
		if (set_cpus("CPU count", v, &cfg->limits.cpu_quota_milli))
			return -1;
		if (!cfg->limits.cpu_quota_milli ||
		    cfg->limits.cpu_quota_milli >= 10)
			return 0;
		fprintf(stderr,
			"sbx serve: --cpus must be 0 or at least 0.01\n");
		return -1;
	case OPT_MAX_CPUS:
		if (set_cpus("CPU count", v, &maxima.cpus))
			return -1;
		if (maxima.cpus)
			return 0;
		fprintf(stderr, "sbx serve: --max-cpus must be above 0\n");
		return -1;
	case OPT_CPU_WEIGHT:
		if (set_count("CPU weight", v, 1, 10000, &n))
			return -1;
		cfg->limits.cpu_weight = n;
		return 0;
	case OPT_MAX_CPU_WEIGHT:
		if (set_count("CPU weight", v, 1, 10000, &n))
			return -1;
		maxima.cpu_weight = n;
		return 0;
	case OPT_UPSTREAM:
	case OPT_UPSTREAM_KEY:
	case OPT_LLM_LIMIT:
		return apply_list(cfg, opt, v);
	case OPT_DEFAULT_UPSTREAM:
		free(cfg->default_upstream);
		cfg->default_upstream = xstrdup(v);
		return 0;
	case OPT_LLM:
		cfg->llm_default = !v || !env_false(v);
		return 0;
	case OPT_NO_TOKEN_IDS:
		cfg->llm_no_token_ids = !v || env_false(v);
		return 0;
	case OPT_NO_LOGPROBS:
		cfg->llm_no_logprobs = !v || env_false(v);
		return 0;
	case OPT_LLM_PORT:
		if (set_count("gateway port", v, 1, 65535, &n))
			return -1;
		cfg->llm_port = (uint16_t)n;
		return 0;
	case OPT_STATE_DIR:
		free(cfg->state_dir);
		cfg->state_dir = xstrdup(v);
		return 0;
	case OPT_UP_CONNECT:
		return set_time("upstream connect timeout", v,
				&cfg->upstream_connect_ms);
	case OPT_UP_READ:
		return set_time("upstream read timeout", v,
				&cfg->upstream_read_ms);
	case OPT_UP_RETRIES:
		return set_count("upstream retries", v, 0, 10,
				 &cfg->upstream_retries);
	case OPT_UP_CONNS:
		return set_count("upstream connections", v, 1, 65536,
				 &cfg->upstream_connections);
	case OPT_MODELS: {
		struct stat st;

		/* Read by the server (server/resources.c) at each request. */
		if (stat(v, &st) < 0 || !S_ISDIR(st.st_mode)) {
			fprintf(stderr,
				"sbx serve: --models: '%s' is not a "
				"directory\n",
				v);
			return -1;
		}
		return setenv("SBX_MODELS", v, 1);
	}
	case OPT_UID_BASE:
	case OPT_UID_SLOTS:
		/* Read and checked by the sandbox layer. */
		return setenv(env_names[opt - 256], v, 1);
	}
	return -1;
}

static uint64_t or_default(uint64_t v, uint64_t def)
{
	return v ? v : def;
}

static uint64_t at_most(uint64_t v, uint64_t max)
{
	return v > max ? max : v;
}

/* The shared limit rules from the configuration, bounded by the host;
 * the defaults and the configuration's own maxima follow them, so a
 * default is never above what a client could ask for. */
static void set_rules(struct server_config *cfg)
{
	struct limits_rules r;
	struct sandbox_limits *l = &cfg->limits;

	limits_rules_init(&r);
	cfg->max_wall_ms = limits_rules_cap(&r, LIMITS_WALL, cfg->max_wall_ms);
	limits_rules_cap(&r, LIMITS_CPU_TIME, cfg->max_wall_ms);
	cfg->max_memory = limits_rules_cap(&r, LIMITS_MEMORY, cfg->max_memory);
	limits_rules_cap(&r, LIMITS_PIDS, or_default(maxima.pids, l->pids));
	limits_rules_cap(&r, LIMITS_OUTPUT,
			 or_default(maxima.output, l->output_bytes));
	cfg->max_disk = limits_rules_cap(&r, LIMITS_DISK, cfg->max_disk);
	if (maxima.cpus)
		limits_rules_cap(&r, LIMITS_CPUS, maxima.cpus);
	limits_rules_cap(&r, LIMITS_CPU_WEIGHT,
			 or_default(maxima.cpu_weight, l->cpu_weight));
	cfg->max_lifetime_ms =
		limits_rules_cap(&r, LIMITS_LIFETIME, cfg->max_lifetime_ms);
	limits_set_current(&r);

	l->wall_ms = at_most(l->wall_ms, r.max[LIMITS_WALL]);
	l->memory_bytes = at_most(l->memory_bytes, r.max[LIMITS_MEMORY]);
	l->pids = at_most(l->pids, r.max[LIMITS_PIDS]);
	l->output_bytes = at_most(l->output_bytes, r.max[LIMITS_OUTPUT]);
	l->disk_bytes = at_most(l->disk_bytes, r.max[LIMITS_DISK]);
	if (l->cpu_quota_milli)
		l->cpu_quota_milli =
			at_most(l->cpu_quota_milli, r.max[LIMITS_CPUS]);
	l->cpu_weight = at_most(l->cpu_weight, r.max[LIMITS_CPU_WEIGHT]);
}

int cmd_serve(int argc, char **argv)
{
	struct server_config cfg;
	size_t i;
	int c, rc = EXIT_USAGE;

	server_config_init(&cfg);
	/* One core and the normal share per sandbox unless told otherwise. */
	cfg.limits.cpu_quota_milli = 1000;
	cfg.limits.cpu_weight = 100;
	/* Chosen so SandboxFusion's clients work unchanged (README, "serve
	 * options"): limits from what the host has, wall time as asked up to
	 * an hour. */
	cfg.concurrency = limits_default_concurrency();
	cfg.max_body = limits_default_body();
	cfg.limits.memory_bytes = limits_default_memory();
	cfg.max_wall_ms = 3600000;
	for (i = 0; i < ARRAY_SIZE(env_names); i++) {
		const char *v = env_names[i] ? getenv(env_names[i]) : NULL;

		if (v && *v && apply(&cfg, (int)i + 256, v))
			goto out;
	}
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		if (c == 'h') {
			fputs(usage, stdout);
			rc = 0;
			goto out;
		}
		if (c == '?' || c == ':') {
			fprintf(stderr,
				"sbx serve: bad option '%s' (see sbx serve "
				"--help)\n",
				argv[optind - 1]);
			goto out;
		}
		if (apply(&cfg, c, optarg))
			goto out;
	}
	if (optind < argc) {
		fprintf(stderr, "sbx serve: unexpected argument '%s'\n",
			argv[optind]);
		goto out;
	}
	set_rules(&cfg);
	/* Warm sandboxes serve the common burst, not the whole concurrency. */
	if (!cfg.warm_set) {
		cfg.warm =
			(unsigned)at_most(limits_host_cores(), cfg.concurrency);
		cfg.warm_set = true;
	}
	/* A server told to keep nothing built ahead keeps no stateful ones
	 * either, unless it says so. */
	if (!cfg.prebuilt_set)
		cfg.prebuilt = cfg.warm ? 2 : 0;
	if (cfg.idle_timeout_ms > cfg.max_lifetime_ms)
		cfg.idle_timeout_ms = cfg.max_lifetime_ms;
	rc = server_run(&cfg);
out:
	server_config_release(&cfg);
	return rc;
}

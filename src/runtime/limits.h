/*
 * The rules every route applies to the limits a client asks for: one table
 * of limits (unit, least value, server maximum), filled from the server's
 * configuration and bounded by what the host has (pid_max, memory, cores,
 * nr_open). Routes keep their own field names and units ("memory_mb",
 * "memory_limit_MB", "run_timeout" in seconds) and map them onto these
 * rules, so a value is refused the same way, with the same words, whatever
 * the route. Knows nothing of the server; the request parsers (fuzzed on
 * their own) use it.
 */
#ifndef SBX_RUNTIME_LIMITS_H
#define SBX_RUNTIME_LIMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* The limits, each in its base unit. */
enum limits_kind {
	LIMITS_WALL,	   /* milliseconds of wall time */
	LIMITS_CPU_TIME,   /* milliseconds of CPU time */
	LIMITS_MEMORY,	   /* bytes */
	LIMITS_PIDS,	   /* processes and threads */
	LIMITS_OUTPUT,	   /* bytes per stream */
	LIMITS_DISK,	   /* bytes of writable space */
	LIMITS_NOFILE,	   /* open files per process */
	LIMITS_CPUS,	   /* CPU bandwidth, thousandths of a core */
	LIMITS_CPU_WEIGHT, /* share under contention, 1..10000 */
	LIMITS_LIFETIME,   /* milliseconds a stateful sandbox may live */
	LIMITS_NKINDS,
};

/* Least and greatest value a client may ask for, inclusive, base units. */
struct limits_rules {
	uint64_t min[LIMITS_NKINDS];
	uint64_t max[LIMITS_NKINDS];
};

/* How a route spells one limit. */
struct limits_field {
	const char *name;      /* the route's own name, for messages */
	enum limits_kind kind; /* the rule it maps onto */
	uint64_t scale;	       /* base units per unit of the field */
	bool fraction;	       /* a number (0.5 cores), not only integers */
};

/* Fills rules with the absolute bounds and the host's figures: pids up to
 * pid_max and threads-max, memory and disk up to the host's memory, CPUs
 * up to the online cores, open files up to nr_open. */
void limits_rules_init(struct limits_rules *rules);
/* Lowers kind's maximum to max (never raises it past the host's figure,
 * never below its least value). Returns the maximum now in force. */
uint64_t limits_rules_cap(struct limits_rules *rules, enum limits_kind kind,
			  uint64_t max);

/* Reads v (a JSON integer, or any number with f->fraction) as field f
 * and checks it against rules; max, when non-zero, is a tighter maximum
 * for this request. Returns 0 with *out in base units, or -1 with msg
 * ("must be between 1 and 128 on this server") filled. */
int limits_parse(const struct limits_rules *rules, const struct limits_field *f,
		 json_t *v, uint64_t max, uint64_t *out, char *msg,
		 size_t msglen);

/* The host's memory (MemTotal) in bytes, and what it has free now
 * (MemAvailable); def when /proc/meminfo cannot be read. */
uint64_t limits_host_memory(uint64_t def);
uint64_t limits_host_available(uint64_t def);
/* Online cores, at least 1. */
unsigned limits_host_cores(void);

/* Server defaults chosen from the host (see the README's serve options):
 * the memory a run gets when it does not ask, min(4 GiB, max(1 GiB,
 * memory / (2 * cores)), memory / 2); the largest request body,
 * min(1 GiB, max(64 MiB, memory / 8)); sandboxes running at once,
 * max(128, 32 * cores) up to 4096. */
uint64_t limits_default_memory(void);
uint64_t limits_default_body(void);
unsigned limits_default_concurrency(void);

/* Parses a number of cores ("0.5", "2") into thousandths of a core; "0"
 * gives 0. Returns 0 or -EINVAL. */
int limits_parse_cpus(const char *s, uint64_t *milli);

/* The rules of the running server (set once at start-up, before any
 * request); limits_current() gives the host's bounds until then. */
void limits_set_current(const struct limits_rules *rules);
const struct limits_rules *limits_current(void);

#endif

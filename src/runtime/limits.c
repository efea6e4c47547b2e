/*
 * The shared limit rules: a table of every limit a client may set, its
 * least value and its server maximum, and one check that every route's
 * parser uses. The maxima start from absolute bounds, are lowered to what
 * the host has (read once from /proc), and then to the server's
 * configuration (limits_rules_cap()).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/util.h"
#include "runtime/limits.h"
#include "base/banned.h"

/* Bounds that hold on any host. */
#define WEEK_MS (7ull * 24 * 3600 * 1000)
#define MAX_OUTPUT (1ull << 30)
#define MAX_NOFILE 65536ull
#define MIN_MEMORY (4ull << 20)
/* cgroup v1 takes at least 1 ms of quota per 100 ms period. */
#define MIN_CPUS 10ull
#define MAX_CPU_WEIGHT 10000ull

static struct limits_rules current;
static bool current_set;

/* A number from a /proc file, or def when it cannot be read. */
static uint64_t proc_u64(const char *path, uint64_t def)
{
	char buf[64];
	uint64_t v;

	if (read_file(path, buf, sizeof(buf)) < 0)
		return def;
	buf[strcspn(buf, " \t\n")] = '\0';
	return parse_u64(buf, &v) || !v ? def : v;
}

/* A "Name: N kB" line of /proc/meminfo in bytes, or def. */
static uint64_t meminfo(const char *name, uint64_t def)
{
	char buf[512];
	unsigned long long kb;
	const char *p;
	size_t n = strlen(name);

	if (read_file("/proc/meminfo", buf, sizeof(buf)) < 0)
		return def;
	for (p = buf; (p = strstr(p, name)); p += n)
		if ((p == buf || p[-1] == '\n') && p[n] == ':')
			break;
	if (!p || sscanf(p + n, ": %llu kB", &kb) != 1 || !kb)
		return def;
	return (uint64_t)kb << 10;
}

uint64_t limits_host_memory(uint64_t def)
{
	return meminfo("MemTotal", def);
}

uint64_t limits_host_available(uint64_t def)
{
	return meminfo("MemAvailable", def);
}

unsigned limits_host_cores(void)
{
	long cores = sysconf(_SC_NPROCESSORS_ONLN);

	return cores > 0 ? (unsigned)cores : 1;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

void limits_rules_init(struct limits_rules *rules)
{
	uint64_t mem = limits_host_memory(UINT64_MAX >> 1);
	unsigned cores = limits_host_cores();
	uint64_t pids =
		min_u64(proc_u64("/proc/sys/kernel/pid_max", 32768),
			proc_u64("/proc/sys/kernel/threads-max", UINT32_MAX));

	memset(rules, 0, sizeof(*rules));
	for (int k = 0; k < LIMITS_NKINDS; k++)
		rules->min[k] = 1;
	rules->max[LIMITS_WALL] = WEEK_MS;
	rules->max[LIMITS_CPU_TIME] = WEEK_MS;
	rules->min[LIMITS_MEMORY] = MIN_MEMORY;
	rules->max[LIMITS_MEMORY] = mem;
	rules->max[LIMITS_PIDS] = pids;
	rules->max[LIMITS_OUTPUT] = MAX_OUTPUT;
	rules->min[LIMITS_DISK] = 1ull << 20;
	/* tmpfs pages are memory. */
	rules->max[LIMITS_DISK] = mem;
	rules->max[LIMITS_NOFILE] =
		min_u64(MAX_NOFILE, proc_u64("/proc/sys/fs/nr_open", 1 << 20));
	rules->min[LIMITS_CPUS] = MIN_CPUS;
	rules->max[LIMITS_CPUS] = (uint64_t)cores * 1000;
	rules->max[LIMITS_CPU_WEIGHT] = MAX_CPU_WEIGHT;
	/* 0 has a meaning for stateful sandboxes' timeouts: none. */
	rules->min[LIMITS_LIFETIME] = 0;
	rules->max[LIMITS_LIFETIME] = WEEK_MS;
}

uint64_t limits_rules_cap(struct limits_rules *rules, enum limits_kind kind,
			  uint64_t max)
{
	if ((unsigned)kind >= LIMITS_NKINDS)
		return 0;
	if (max < rules->max[kind])
		rules->max[kind] = max;
	if (rules->max[kind] < rules->min[kind])
		rules->max[kind] = rules->min[kind];
	return rules->max[kind];
}

/* The range in the field's unit: the least value rounded up, the greatest
 * rounded down, so both ends are values the check accepts. */
static void range_msg(const struct limits_field *f, uint64_t lo, uint64_t hi,
		      char *msg, size_t msglen)
{
	uint64_t scale = f->scale ? f->scale : 1;

	if (f->fraction)
		snprintf(msg, msglen,
			 "must be a number between %g and %g on this server",
			 (double)lo / (double)scale,
			 (double)hi / (double)scale);
	else
		snprintf(msg, msglen,
			 "must be an integer between %llu and %llu on this "
			 "server",
			 (unsigned long long)((lo + scale - 1) / scale),
			 (unsigned long long)(hi / scale));
}

int limits_parse(const struct limits_rules *rules, const struct limits_field *f,
		 json_t *v, uint64_t max, uint64_t *out, char *msg,
		 size_t msglen)
{
	uint64_t scale = f->scale ? f->scale : 1, lo, hi, val;

	if ((unsigned)f->kind >= LIMITS_NKINDS) {
		snprintf(msg, msglen, "is not a known limit");
		return -1;
	}
	lo = rules->min[f->kind];
	hi = rules->max[f->kind];
	if (max && max < hi)
		hi = max < lo ? lo : max;
	if (f->fraction && json_is_number(v)) {
		double x = json_number_value(v) * (double)scale;

		if (!isfinite(x) || x < 0 || x > (double)hi + 0.5)
			goto out_range;
		val = (uint64_t)(x + 0.5);
		/* A positive request never rounds to "none". */
		if (val == 0 && x > 0)
			val = 1;
	} else if (json_is_integer(v)) {
		json_int_t n = json_integer_value(v);

		if (n < 0 || (uint64_t)n > hi / scale)
			goto out_range;
		val = (uint64_t)n * scale;
	} else {
		snprintf(msg, msglen, "must be %s",
			 f->fraction ? "a number" : "an integer");
		return -1;
	}
	if (val < lo || val > hi)
		goto out_range;
	*out = val;
	return 0;

out_range:
	range_msg(f, lo, hi, msg, msglen);
	return -1;
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

/* SandboxFusion applies no memory limit unless asked, and its clients
 * (tinker) never ask: a run gets a share of the host, enough for a
 * program of several hundred MB, never more than half the host. */
uint64_t limits_default_memory(void)
{
	uint64_t mem = limits_host_memory(8ull << 30);

	return min_u64(
		min_u64(4ull << 30,
			max_u64(1ull << 30, mem / (2 * limits_host_cores()))),
		mem / 2);
}

/* Whole test sets travel in one /run_code body (tinker's reach tens of
 * MB); parsing one holds about twice its size for a moment. */
uint64_t limits_default_body(void)
{
	uint64_t mem = limits_host_memory(8ull << 30);

	return min_u64(1ull << 30, max_u64(64ull << 20, mem / 8));
}

/* Runs mostly wait (on tests, sleeps, their time limit): a slot per core
 * would queue work the host has room for. The CPU quota of each sandbox
 * shares the cores, the memory check of the runner the memory. */
unsigned limits_default_concurrency(void)
{
	return (unsigned)min_u64(4096,
				 max_u64(128, 32ull * limits_host_cores()));
}

int limits_parse_cpus(const char *s, uint64_t *milli)
{
	char *end = NULL;
	double x;

	if (!s || !*s)
		return -EINVAL;
	errno = 0;
	x = strtod(s, &end);
	if (errno || !end || *end || !isfinite(x) || x < 0 || x > 1e6)
		return -EINVAL;
	*milli = (uint64_t)(x * 1000 + 0.5);
	if (*milli == 0 && x > 0)
		*milli = 1;
	return 0;
}

void limits_set_current(const struct limits_rules *rules)
{
	current = *rules;
	current_set = true;
}

const struct limits_rules *limits_current(void)
{
	if (!current_set) {
		limits_rules_init(&current);
		current_set = true;
	}
	return &current;
}

/*
 * Control groups for sandboxes, v2 (unified) and v1 (one hierarchy per
 * controller). The host side creates one cgroup per sandbox under sbx's own
 * cgroup, sets memory (with swap capped), pids, CPU bandwidth and weight
 * and CPU accounting, limits the device nodes a sandbox with devices of its
 * own (GPUs) may open, attaches the sandbox's init, reads usage afterwards
 * and removes the group.
 *
 * Everything takes paths from a struct cgroup_host so tests can point it at
 * a fake tree of plain files.
 */
#ifndef SBX_CGROUP_H
#define SBX_CGROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CGROUP_PATH_MAX 512

enum cgroup_version { CGROUP_NONE = 0, CGROUP_V1 = 1, CGROUP_V2 = 2 };

/* What the host offers, found once at start-up. Every path is the
 * directory under which sbx creates its groups ("<mount><own cgroup>/sbx"),
 * empty when that controller is unavailable. */
struct cgroup_host {
	enum cgroup_version version;
	char v2_dir[CGROUP_PATH_MAX];
	char v1_memory[CGROUP_PATH_MAX];
	char v1_pids[CGROUP_PATH_MAX];
	char v1_cpuacct[CGROUP_PATH_MAX];
	char v1_cpu[CGROUP_PATH_MAX]; /* may be v1_cpuacct (co-mounted) */
	char v1_devices[CGROUP_PATH_MAX];
	bool has_memory, has_pids, has_cpu;
	/* Device rules can be enforced: the v1 devices hierarchy, or on v2
	 * a BPF device program loads. */
	bool has_devices;
	bool has_swap_limit; /* memory.swap.max or memory.memsw.* exists */
	bool has_cpu_limit;  /* v2 cpu controller, or the v1 cpu hierarchy */
};

/* Finds the cgroup setup. mountinfo and self_cgroup are the paths of
 * /proc/self/mountinfo and /proc/self/cgroup (tests pass fakes). When
 * override_dir is non-NULL it is used as the v2 directory (or, for v1, as
 * the directory that holds one subdirectory per controller) instead of the
 * one derived from sbx's own cgroup. Creates the "sbx" parent directories
 * and, on v2, enables +memory +pids +cpu in subtree_control where it can.
 * Returns 0 (version may be CGROUP_NONE when nothing is usable) or -errno
 * with a message in err. */
int cgroup_host_detect(struct cgroup_host *host, const char *mountinfo,
		       const char *self_cgroup, const char *override_dir,
		       char *err, size_t errlen);

/* Writes a human-readable summary of what was found, one "key: value" line
 * each, into buf (for `sbx check`). */
void cgroup_host_describe(const struct cgroup_host *host, char *buf,
			  size_t len);

/* One sandbox's group. Caller-owned; paths empty when unused. */
/* The period CPU quotas are set over, in microseconds. */
#define CGROUP_CPU_PERIOD_US 100000ull

struct cgroup_limits {
	uint64_t memory_bytes;	  /* 0: no limit */
	uint64_t pids;		  /* 0: no limit */
	uint64_t cpu_quota_milli; /* thousandths of a core, 0: no limit */
	uint64_t cpu_weight;	  /* 1..10000 (v2 scale), 0: the default */
};

struct cgroup {
	enum cgroup_version version;
	char v2[CGROUP_PATH_MAX];
	char memory[CGROUP_PATH_MAX];
	char pids[CGROUP_PATH_MAX];
	char cpuacct[CGROUP_PATH_MAX];
	char cpu[CGROUP_PATH_MAX];     /* may equal cpuacct (co-mounted) */
	char devices[CGROUP_PATH_MAX]; /* v1, made by cgroup_limit_devices() */
	/* v2: memory.peak held open by cgroup_reset_peak(), which resets it
	 * for reads through that fd only (Linux 6.12+); peak_fd + 1, 0 when
	 * none. peak_stuck: it exists and cannot be reset (older kernels),
	 * so the peak read is the group's since it was made. */
	int peak_fd1;
	bool peak_stuck;
	/* The limits last written (by cgroup_create() or
	 * cgroup_set_limits()): a change writes only what differs. */
	struct cgroup_limits applied;
};

/* Creates the group "name" under every available controller and applies
 * the limits: v2 memory.max, memory.swap.max=0, pids.max, cpu.max,
 * cpu.weight; v1 memory.limit_in_bytes, memory.memsw.limit_in_bytes (same
 * value) when it exists or else memory.swappiness=0, pids.max,
 * cpu.cfs_period_us and cpu.cfs_quota_us, cpu.shares (the weight scaled so
 * that 100 is 1024). CPU limits are skipped where the host has no cpu
 * controller (has_cpu_limit). Returns 0 or -errno with a
 * message ("cannot create cgroup '<path>'") in err; on failure nothing is
 * left behind. */
int cgroup_create(struct cgroup *cg, const struct cgroup_host *host,
		  const char *name, const struct cgroup_limits *lim, char *err,
		  size_t errlen);

/* Changes the memory, pids and CPU limits of a live group (warm sandboxes
 * get their run's limits this way). 0 means no limit (the default weight).
 * Only the limits that differ from the ones last written are written
 * (sbx alone writes them: nothing inside a sandbox can). Returns 0 or
 * -errno; after a failure every limit is written again next time. */
int cgroup_set_limits(struct cgroup *cg, const struct cgroup_limits *lim);
/* Starts the peak-memory reading afresh, where the kernel allows. */
void cgroup_reset_peak(struct cgroup *cg);
/* Whether the peak read after cgroup_reset_peak() is the one since then
 * (false on v2 before Linux 6.12: since the group was made). */
bool cgroup_peak_per_run(const struct cgroup *cg);

/* A device node the group's processes may open: type 'c' (character) or
 * 'b' (block), major and minor, CGROUP_DEV_ANY for every minor. */
#define CGROUP_DEV_ANY UINT32_MAX
#define CGROUP_MAX_DEVICES 256

struct cgroup_device {
	char type;
	uint32_t major, minor;
};

/* Lets the group's processes open only the ndevs device nodes of devs, for
 * reading and writing (never mknod). On v1 the group "name" is made in the
 * devices hierarchy (removed with the others) with "a" written to
 * devices.deny and one devices.allow line per device; on v2 a
 * BPF_PROG_TYPE_CGROUP_DEVICE program that allows exactly these is
 * attached to the group (it goes with the group). Call it after
 * cgroup_create() and before any process joins the group. Returns 0 or
 * -errno with a message in err: -EOPNOTSUPP when the host cannot enforce
 * device rules (no cgroups, no v1 devices hierarchy). On failure the
 * caller destroys the group. */
int cgroup_limit_devices(struct cgroup *cg, const struct cgroup_host *host,
			 const char *name, const struct cgroup_device *devs,
			 size_t ndevs, char *err, size_t errlen);

/* The v2 half of cgroup_limit_devices(), in cgroup_dev.c: builds the BPF
 * device program into insns (room for max struct bpf_insn) and returns how
 * many instructions it has, -E2BIG when they do not fit or -EINVAL for a
 * device no rule can name (a major of more than 12 bits, a minor of more
 * than 20). */
struct bpf_insn;
int cgroup_dev_prog_build(struct bpf_insn *insns, size_t max,
			  const struct cgroup_device *devs, size_t ndevs);
/* Loads that program and attaches it to the cgroup v2 directory dir
 * (BPF_F_ALLOW_MULTI: programs of the groups above still run too). Returns
 * 0 or -errno with a message in err. */
int cgroup_dev_prog_attach(const char *dir, const struct cgroup_device *devs,
			   size_t ndevs, char *err, size_t errlen);
/* Whether this kernel loads a BPF device program (root, CONFIG_BPF,
 * CONFIG_CGROUP_BPF). */
bool cgroup_dev_prog_works(void);

/* Moves pid into the group (cgroup.procs in every hierarchy). Returns 0 or
 * -errno. */
int cgroup_attach(const struct cgroup *cg, pid_t pid);

struct cgroup_stats {
	uint64_t cpu_ns;     /* v2 cpu.stat usage_usec*1000, v1 cpuacct.usage */
	uint64_t peak_bytes; /* v2 memory.peak, v1 memory.max_usage_in_bytes */
	uint64_t oom_kills;  /* v2 memory.events oom_kill, v1 memory.oom_control
				oom_kill */
	uint64_t pids_max_events; /* pids.events "max": forks refused */
	bool has_cpu, has_peak, has_oom;
};

/* Reads usage. Fields whose file is missing are left 0 with has_* false.
 * Returns 0 or -errno when nothing could be read. */
int cgroup_read_stats(const struct cgroup *cg, struct cgroup_stats *st);
/* Reads only the CPU usage (the periodic CPU-limit check). */
int cgroup_cpu_ns(const struct cgroup *cg, uint64_t *ns);
/* The v1 cpu.shares value for a weight on the v2 scale (100: 1024). */
uint64_t cgroup_weight_to_shares(uint64_t weight);

/* Kills whatever is left in the group (v2 cgroup.kill, else SIGKILL to each
 * pid in cgroup.procs), then removes the directories, retrying briefly while
 * they are busy. Returns 0 or -errno of the first directory it could not
 * remove. Safe on a zeroed or already destroyed struct. */
int cgroup_destroy(struct cgroup *cg);

/* Removes groups left under the host's sbx directories by earlier runs
 * (killing their processes), except those keep() (may be NULL) wants kept.
 * Returns how many were removed. */
int cgroup_sweep(const struct cgroup_host *host,
		 bool (*keep)(const char *name));

#endif

/*
 * NVIDIA GPUs for sandboxes: what the host has (device nodes, the driver's
 * user-space libraries and tools), what a sandbox asking for GPUs is given
 * (binds and environment), and which sandbox holds which GPU.
 *
 * Discovery reads a root directory: "/" normally, or $SBX_GPU_ROOT, which
 * the unit tests point at a fake tree of plain files. GPUs are the
 * /dev/nvidia<N> nodes; /proc/driver/nvidia/gpus/<bus>/information adds
 * each one's model and UUID where the driver provides it.
 *
 * A GPU is held by the sandbox whose spec binds its /dev/nvidia<N> node
 * (a device bind): from sandbox_start() until its cgroup is gone, alone
 * unless the bind is marked shared, in which case other shared holders may
 * hold it too.
 */
#ifndef SBX_SANDBOX_GPU_H
#define SBX_SANDBOX_GPU_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sandbox/sandbox.h"

#define GPU_MAX 64
/* Where driver libraries and tools that the sandbox would not otherwise
 * see are bound. */
#define GPU_LIB_DIR "/opt/nvidia/lib"
#define GPU_BIN_DIR "/opt/nvidia/bin"

struct gpu {
	unsigned minor;	 /* /dev/nvidia<minor> */
	char uuid[80];	 /* "GPU-...", "" when unknown */
	char model[128]; /* "" when unknown */
	char bus[32];	 /* PCI address, "" when unknown */
};

struct gpu_host {
	char root[PATH_MAX]; /* "" for the real root */
	struct gpu gpus[GPU_MAX];
	size_t ngpus; /* sorted by minor */
	char **ctl;   /* control nodes (nvidiactl, nvidia-uvm...), host paths,
			 NULL-terminated (NULL when none) */
	char **libs;  /* driver libraries, host paths */
	char **bins;  /* tools (nvidia-smi...), host paths */
};

/* Fills h from root ("" or NULL: "/"). Never fails: a host without
 * GPUs has ngpus 0. Release with gpu_host_release(). */
void gpu_host_discover(struct gpu_host *h, const char *root);
void gpu_host_release(struct gpu_host *h);
/* The host's GPUs, discovered on first use from $SBX_GPU_ROOT or "/";
 * static, never freed. */
const struct gpu_host *gpu_host_get(void);
/* The GPU with this minor number, or NULL. */
const struct gpu *gpu_host_find(const struct gpu_host *h, unsigned minor);

/* What a sandbox is given. Owned by the grant. */
struct gpu_grant {
	struct sandbox_bind *binds;
	size_t nbinds;
	char **env; /* NAME=VALUE, NULL-terminated */
	unsigned minors[GPU_MAX];
	size_t nminors;
};

/* Chooses GPUs: the listed minors (ids, nids > 0) or any count of them,
 * skipping those other sandboxes hold (held exclusively, or at all when
 * this request is not shared), and fills g with the binds (the GPUs'
 * nodes, the control nodes, libraries and tools not already visible) and
 * CUDA_VISIBLE_DEVICES (UUIDs when known). Returns 0, -ENODEV when the
 * host lacks what was asked (no GPU, too few, an unknown index), -EBUSY
 * when held by others, with a message in err. The GPUs are held only once
 * a sandbox with these binds starts. */
int gpu_grant_make(const struct gpu_host *h, unsigned count,
		   const unsigned *ids, size_t nids, bool shared,
		   struct gpu_grant *g, char *err, size_t errlen);
void gpu_grant_release(struct gpu_grant *g);

/* Takes the GPUs spec's device binds name for a starting sandbox: fills
 * held (a bit per minor) and returns 0, or -EBUSY with a message when one
 * is held by another sandbox in a way that excludes this one. */
int gpu_lease_take(const struct sandbox_spec *spec, uint64_t *held,
		   bool *shared, char *err, size_t errlen);
/* Gives back what gpu_lease_take() took. */
void gpu_lease_drop(uint64_t held, bool shared);
/* How many sandboxes hold GPU minor, and whether one holds it alone. */
unsigned gpu_lease_holders(unsigned minor, bool *exclusive);

#endif

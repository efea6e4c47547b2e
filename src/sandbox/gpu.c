/*
 * NVIDIA GPUs: discovery under a root directory, grants (what a sandbox
 * asking for GPUs gets bound and told) and leases (who holds which GPU).
 * The lease table is process-wide and guarded by a mutex: grants are made
 * on HTTP threads, leases taken and dropped on the runner's thread.
 */
#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/util.h"
#include "sandbox/gpu.h"
#include "base/banned.h"

static const char *const ctl_nodes[] = {
	"nvidiactl",
	"nvidia-uvm",
	"nvidia-uvm-tools",
	"nvidia-modeset",
};

/* Where drivers put their libraries and tools, relative to the root. */
static const char *const lib_dirs[] = {
	"usr/lib/x86_64-linux-gnu",
	"usr/lib/x86_64-linux-gnu/nvidia/current",
	"usr/lib/aarch64-linux-gnu",
	"usr/lib64",
	"usr/lib",
	"lib/x86_64-linux-gnu",
	"lib64",
	"usr/local/nvidia/lib64",
	"usr/local/nvidia/lib",
};
static const char *const lib_patterns[] = {
	"libcuda.so*",
	"libcudadebugger.so*",
	"libnvidia-*.so*",
	"libnvcuvid.so*",
};
static const char *const bin_dirs[] = {
	"usr/bin",
	"bin",
	"usr/sbin",
	"usr/local/nvidia/bin",
};
static const char *const bin_names[] = {
	"nvidia-smi",
	"nvidia-debugdump",
	"nvidia-cuda-mps-control",
	"nvidia-cuda-mps-server",
};
/* Host directories every sandbox sees read-only already (mnt.c). */
static const char *const visible_dirs[] = {
	"/usr/", "/bin/", "/sbin/", "/lib/", "/lib32/", "/lib64/", "/libx32/",
};

#define DEFAULT_PATH                                               \
	"/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/" \
	"sbin:" SANDBOX_GUEST_DIR "/bin"

static char **strv_add(char **v, size_t *n, char *s)
{
	v = xrealloc(v, (*n + 2) * sizeof(*v));
	v[(*n)++] = s;
	v[*n] = NULL;
	return v;
}

static void strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

static bool parse_minor(const char *name, unsigned *minor)
{
	uint64_t v;

	if (strncmp(name, "nvidia", 6) || !name[6])
		return false;
	for (const char *p = name + 6; *p; p++)
		if (*p < '0' || *p > '9')
			return false;
	if (parse_u64(name + 6, &v) || v >= GPU_MAX)
		return false;
	*minor = (unsigned)v;
	return true;
}

static int cmp_gpu(const void *a, const void *b)
{
	const struct gpu *x = a, *y = b;

	return x->minor < y->minor ? -1 : x->minor > y->minor;
}

/* "Key:   value" from the driver's information file, trimmed. */
static void info_field(const char *text, const char *key, char *out, size_t n)
{
	const char *p = text;
	size_t klen = strlen(key);

	for (; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		const char *v, *end;

		if (strncmp(p, key, klen) || p[klen] != ':')
			continue;
		v = p + klen + 1;
		v += strspn(v, " \t");
		end = v + strcspn(v, "\n");
		while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		if ((size_t)(end - v) < n) {
			memcpy(out, v, (size_t)(end - v));
			out[end - v] = '\0';
		}
		return;
	}
}

static void read_driver_info(struct gpu_host *h)
{
	char dir[PATH_MAX + 64], path[PATH_MAX + 400], text[4096];
	struct dirent *de;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/proc/driver/nvidia/gpus", h->root);
	d = opendir(dir);
	if (!d)
		return;
	while ((de = readdir(d))) {
		char minor_text[16] = "";
		uint64_t minor;
		struct gpu *g;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s/information", dir,
			 de->d_name);
		if (read_file(path, text, sizeof(text)) < 0)
			continue;
		info_field(text, "Device Minor", minor_text,
			   sizeof(minor_text));
		if (parse_u64(minor_text, &minor) || minor >= GPU_MAX)
			continue;
		g = (struct gpu *)gpu_host_find(h, (unsigned)minor);
		if (!g)
			continue;
		info_field(text, "Model", g->model, sizeof(g->model));
		info_field(text, "GPU UUID", g->uuid, sizeof(g->uuid));
		str_copy(g->bus, sizeof(g->bus), de->d_name);
	}
	closedir(d);
}

static bool matches_lib(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(lib_patterns); i++)
		if (!fnmatch(lib_patterns[i], name, 0))
			return true;
	return false;
}

static void find_libs(struct gpu_host *h)
{
	size_t n = 0;

	for (size_t i = 0; i < ARRAY_SIZE(lib_dirs); i++) {
		char dir[PATH_MAX + 64];
		struct dirent *de;
		DIR *d;

		snprintf(dir, sizeof(dir), "%s/%s", h->root, lib_dirs[i]);
		d = opendir(dir);
		if (!d)
			continue;
		while ((de = readdir(d))) {
			char *p;
			struct stat st;

			if (!matches_lib(de->d_name))
				continue;
			p = xstrfmt("%s/%s", dir, de->d_name);
			if (stat(p, &st) < 0 || !S_ISREG(st.st_mode)) {
				free(p);
				continue;
			}
			h->libs = strv_add(h->libs, &n, p);
		}
		closedir(d);
	}
}

static void find_bins(struct gpu_host *h)
{
	size_t n = 0;

	for (size_t i = 0; i < ARRAY_SIZE(bin_names); i++)
		for (size_t j = 0; j < ARRAY_SIZE(bin_dirs); j++) {
			char *p = xstrfmt("%s/%s/%s", h->root, bin_dirs[j],
					  bin_names[i]);
			struct stat st;

			if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
				h->bins = strv_add(h->bins, &n, p);
				break;
			}
			free(p);
		}
}

void gpu_host_discover(struct gpu_host *h, const char *root)
{
	char dir[PATH_MAX + 8];
	struct dirent *de;
	size_t nctl = 0;
	DIR *d;

	memset(h, 0, sizeof(*h));
	if (root && strcmp(root, "/"))
		str_copy(h->root, sizeof(h->root), root);
	snprintf(dir, sizeof(dir), "%s/dev", h->root);
	d = opendir(dir);
	if (d) {
		while ((de = readdir(d)) && h->ngpus < GPU_MAX) {
			unsigned minor;

			if (parse_minor(de->d_name, &minor))
				h->gpus[h->ngpus++].minor = minor;
		}
		closedir(d);
	}
	qsort(h->gpus, h->ngpus, sizeof(h->gpus[0]), cmp_gpu);
	for (size_t i = 0; i < ARRAY_SIZE(ctl_nodes); i++) {
		char *p = xstrfmt("%s/%s", dir, ctl_nodes[i]);

		if (access(p, F_OK) == 0)
			h->ctl = strv_add(h->ctl, &nctl, p);
		else
			free(p);
	}
	read_driver_info(h);
	find_libs(h);
	find_bins(h);
}

void gpu_host_release(struct gpu_host *h)
{
	strv_free(h->ctl);
	strv_free(h->libs);
	strv_free(h->bins);
	memset(h, 0, sizeof(*h));
}

static struct gpu_host the_host;
static pthread_once_t the_host_once = PTHREAD_ONCE_INIT;

static void discover_once(void)
{
	gpu_host_discover(&the_host, getenv("SBX_GPU_ROOT"));
}

const struct gpu_host *gpu_host_get(void)
{
	pthread_once(&the_host_once, discover_once);
	return &the_host;
}

const struct gpu *gpu_host_find(const struct gpu_host *h, unsigned minor)
{
	for (size_t i = 0; i < h->ngpus; i++)
		if (h->gpus[i].minor == minor)
			return &h->gpus[i];
	return NULL;
}

/* ---- leases ---- */

static pthread_mutex_t lease_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned lease_count[GPU_MAX];
static bool lease_alone[GPU_MAX];

unsigned gpu_lease_holders(unsigned minor, bool *exclusive)
{
	unsigned n;

	if (minor >= GPU_MAX) {
		*exclusive = false;
		return 0;
	}
	pthread_mutex_lock(&lease_lock);
	n = lease_count[minor];
	*exclusive = lease_alone[minor];
	pthread_mutex_unlock(&lease_lock);
	return n;
}

/* Whether a request (shared or not) may hold a GPU with these holders. */
static bool can_hold(unsigned holders, bool alone, bool shared)
{
	return holders == 0 || (shared && !alone);
}

int gpu_lease_take(const struct sandbox_spec *spec, uint64_t *held,
		   bool *shared, char *err, size_t errlen)
{
	uint64_t want = 0;
	bool share = true;
	int r = 0;

	for (size_t i = 0; i < spec->nbinds; i++) {
		const struct sandbox_bind *b = &spec->binds[i];
		unsigned minor;

		if (!b->device || strncmp(b->dst, "/dev/", 5) ||
		    !parse_minor(b->dst + 5, &minor))
			continue;
		want |= 1ull << minor;
		share = share && b->shared;
	}
	*held = 0;
	*shared = share;
	if (!want)
		return 0;
	pthread_mutex_lock(&lease_lock);
	for (unsigned m = 0; m < GPU_MAX; m++)
		if ((want >> m & 1) &&
		    !can_hold(lease_count[m], lease_alone[m], share)) {
			snprintf(err, errlen,
				 "GPU %u is in use by another sandbox", m);
			r = -EBUSY;
			goto out;
		}
	for (unsigned m = 0; m < GPU_MAX; m++)
		if (want >> m & 1) {
			lease_count[m]++;
			lease_alone[m] = !share;
		}
	*held = want;
out:
	pthread_mutex_unlock(&lease_lock);
	return r;
}

void gpu_lease_drop(uint64_t held, bool shared)
{
	if (!held)
		return;
	pthread_mutex_lock(&lease_lock);
	for (unsigned m = 0; m < GPU_MAX; m++)
		if ((held >> m & 1) && lease_count[m]) {
			if (!--lease_count[m] || !shared)
				lease_alone[m] = false;
		}
	pthread_mutex_unlock(&lease_lock);
}

/* ---- grants ---- */

static bool is_visible(const struct gpu_host *h, const char *path)
{
	if (h->root[0])
		return false;
	for (size_t i = 0; i < ARRAY_SIZE(visible_dirs); i++)
		if (str_starts_with(path, visible_dirs[i]))
			return true;
	return false;
}

static void grant_bind(struct gpu_grant *g, const char *src, const char *dst,
		       bool device, bool shared)
{
	struct sandbox_bind *b;

	g->binds = xrealloc(g->binds, (g->nbinds + 1) * sizeof(*g->binds));
	b = &g->binds[g->nbinds++];
	memset(b, 0, sizeof(*b));
	b->src = xstrdup(src);
	b->dst = xstrdup(dst);
	b->device = device;
	b->shared = shared;
}

/* Picks count GPUs others do not hold (in the way that excludes this
 * request), the least held first. */
static int pick(const struct gpu_host *h, unsigned count, bool shared,
		struct gpu_grant *g, char *err, size_t errlen)
{
	unsigned free_now = 0;

	for (unsigned round = 0; round < 2 && g->nminors < count; round++)
		for (size_t i = 0; i < h->ngpus && g->nminors < count; i++) {
			bool alone;
			unsigned n =
				gpu_lease_holders(h->gpus[i].minor, &alone);

			if (!can_hold(n, alone, shared) ||
			    (round == 0) != (n == 0))
				continue;
			g->minors[g->nminors++] = h->gpus[i].minor;
		}
	free_now = (unsigned)g->nminors;
	if (free_now < count) {
		snprintf(err, errlen,
			 "asked for %u GPU%s, %u of this host's %zu %s free%s",
			 count, count == 1 ? "" : "s", free_now, h->ngpus,
			 free_now == 1 ? "is" : "are",
			 shared ? "" : " (\"gpu_shared\": true shares them)");
		return -EBUSY;
	}
	return 0;
}

int gpu_grant_make(const struct gpu_host *h, unsigned count,
		   const unsigned *ids, size_t nids, bool shared,
		   struct gpu_grant *g, char *err, size_t errlen)
{
	char dst[PATH_MAX], visible[GPU_MAX * 82];
	size_t nenv = 0, nlibs = 0, nbins = 0;
	int r;

	memset(g, 0, sizeof(*g));
	if (!h->ngpus) {
		snprintf(err, errlen,
			 "this host has no NVIDIA GPU (no /dev/nvidia<N> "
			 "under '%s/dev')",
			 h->root);
		return -ENODEV;
	}
	if (nids) {
		for (size_t i = 0; i < nids; i++) {
			bool alone;
			unsigned n;

			if (!gpu_host_find(h, ids[i])) {
				snprintf(err, errlen,
					 "this host has no GPU %u (it has "
					 "%zu: /dev/nvidia<N>)",
					 ids[i], h->ngpus);
				return -ENODEV;
			}
			for (size_t j = 0; j < i; j++)
				if (ids[j] == ids[i]) {
					snprintf(err, errlen,
						 "GPU %u is listed twice",
						 ids[i]);
					return -EINVAL;
				}
			n = gpu_lease_holders(ids[i], &alone);
			if (!can_hold(n, alone, shared)) {
				snprintf(err, errlen,
					 "GPU %u is in use by another "
					 "sandbox%s",
					 ids[i],
					 shared || alone
						 ? ""
						 : " (\"gpu_shared\": true "
						   "shares it)");
				return -EBUSY;
			}
			g->minors[g->nminors++] = ids[i];
		}
	} else {
		if (count > h->ngpus) {
			snprintf(err, errlen,
				 "asked for %u GPUs, this host has %zu", count,
				 h->ngpus);
			return -ENODEV;
		}
		r = pick(h, count, shared, g, err, errlen);
		if (r) {
			g->nminors = 0;
			return r;
		}
	}
	visible[0] = '\0';
	for (size_t i = 0; i < g->nminors; i++) {
		const struct gpu *gp = gpu_host_find(h, g->minors[i]);
		char src[PATH_MAX + 32];
		size_t len = strlen(visible);

		snprintf(src, sizeof(src), "%s/dev/nvidia%u", h->root,
			 g->minors[i]);
		snprintf(dst, sizeof(dst), "/dev/nvidia%u", g->minors[i]);
		grant_bind(g, src, dst, true, shared);
		if (gp->uuid[0])
			snprintf(visible + len, sizeof(visible) - len, "%s%s",
				 len ? "," : "", gp->uuid);
		else
			snprintf(visible + len, sizeof(visible) - len, "%s%zu",
				 len ? "," : "", i);
	}
	for (size_t i = 0; h->ctl && h->ctl[i]; i++) {
		const char *name = strrchr(h->ctl[i], '/') + 1;

		snprintf(dst, sizeof(dst), "/dev/%s", name);
		grant_bind(g, h->ctl[i], dst, true, true);
	}
	for (size_t i = 0; h->libs && h->libs[i]; i++) {
		if (is_visible(h, h->libs[i]))
			continue;
		snprintf(dst, sizeof(dst), GPU_LIB_DIR "/%s",
			 strrchr(h->libs[i], '/') + 1);
		grant_bind(g, h->libs[i], dst, false, false);
		nlibs++;
	}
	for (size_t i = 0; h->bins && h->bins[i]; i++) {
		if (is_visible(h, h->bins[i]))
			continue;
		snprintf(dst, sizeof(dst), GPU_BIN_DIR "/%s",
			 strrchr(h->bins[i], '/') + 1);
		grant_bind(g, h->bins[i], dst, false, false);
		nbins++;
	}
	g->env = strv_add(g->env, &nenv,
			  xstrfmt("CUDA_VISIBLE_DEVICES=%s", visible));
	g->env = strv_add(g->env, &nenv,
			  xstrfmt("NVIDIA_VISIBLE_DEVICES=%s", visible));
	if (nlibs)
		g->env = strv_add(g->env, &nenv,
				  xstrdup("LD_LIBRARY_PATH=" GPU_LIB_DIR));
	if (nbins)
		g->env =
			strv_add(g->env, &nenv,
				 xstrdup("PATH=" DEFAULT_PATH ":" GPU_BIN_DIR));
	return 0;
}

void gpu_grant_release(struct gpu_grant *g)
{
	for (size_t i = 0; i < g->nbinds; i++) {
		free(g->binds[i].src);
		free(g->binds[i].dst);
	}
	free(g->binds);
	strv_free(g->env);
	memset(g, 0, sizeof(*g));
}

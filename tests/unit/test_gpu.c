/*
 * Unit tests for src/sandbox/gpu.c against a fake device and driver tree
 * under a temporary directory: device nodes are plain files (discovery only
 * looks at names), the driver's information files and libraries are small
 * text files. Covers discovery, grants (binds, environment, choice of
 * GPUs) and leases (exclusive and shared holders).
 */
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/util.h"
#include "sandbox/gpu.h"
#include "base/banned.h"

static char root[256];

__attribute__((format(printf, 2, 3))) static void put(const char *text,
						      const char *fmt, ...)
{
	char path[PATH_MAX], dir[PATH_MAX];
	va_list ap;
	char *p;
	FILE *f;

	va_start(ap, fmt);
	snprintf(path, sizeof(path), "%s/", root);
	vsnprintf(path + strlen(path), sizeof(path) - strlen(path), fmt, ap);
	va_end(ap);
	str_copy(dir, sizeof(dir), path);
	for (p = dir + strlen(root) + 1; (p = strchr(p, '/')); p++) {
		*p = '\0';
		mkdir(dir, 0755);
		*p = '/';
	}
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static int rm_one(const char *path, const struct stat *st, int flag,
		  struct FTW *ftw)
{
	return remove(path);
}

static int setup(void **state)
{
	snprintf(root, sizeof(root), "/tmp/sbx-gpu-test-XXXXXX");
	assert_non_null(mkdtemp(root));
	put("", "dev/nvidia0");
	put("", "dev/nvidia1");
	put("", "dev/nvidia3");
	put("", "dev/nvidiactl");
	put("", "dev/nvidia-uvm");
	put("", "dev/nvidia-uvm-tools");
	put("", "dev/nvidia-caps-x"); /* not a GPU, not a control node */
	put("", "dev/null");
	put("Model: \t\t NVIDIA A100-SXM4-40GB\n"
	    "IRQ:   \t\t 42\n"
	    "GPU UUID: \t GPU-aaaa-0000\n"
	    "Device Minor: \t 0\n",
	    "proc/driver/nvidia/gpus/0000:07:00.0/information");
	put("Model: \t\t NVIDIA A100-SXM4-40GB\n"
	    "GPU UUID: \t GPU-bbbb-1111\n"
	    "Device Minor: \t 1\n",
	    "proc/driver/nvidia/gpus/0000:0f:00.0/information");
	put("ELF", "usr/lib/x86_64-linux-gnu/libcuda.so.1");
	put("ELF", "usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1");
	put("ELF", "usr/lib/x86_64-linux-gnu/libc.so.6");
	put("ELF", "usr/local/nvidia/lib64/libnvidia-ptxjitcompiler.so.1");
	put("#!", "usr/bin/nvidia-smi");
	put("#!", "usr/bin/python3");
	*state = NULL;
	return 0;
}

static int teardown(void **state)
{
	nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}

static bool has(char **v, const char *s)
{
	for (size_t i = 0; v && v[i]; i++)
		if (!strcmp(v[i], s))
			return true;
	return false;
}

static const struct sandbox_bind *bind_at(const struct gpu_grant *g,
					  const char *dst)
{
	for (size_t i = 0; i < g->nbinds; i++)
		if (!strcmp(g->binds[i].dst, dst))
			return &g->binds[i];
	return NULL;
}

static void test_discovery(void **state)
{
	struct gpu_host h;
	char p[PATH_MAX + 64];

	gpu_host_discover(&h, root);
	assert_int_equal(h.ngpus, 3);
	assert_int_equal(h.gpus[0].minor, 0);
	assert_int_equal(h.gpus[1].minor, 1);
	assert_int_equal(h.gpus[2].minor, 3);
	assert_string_equal(h.gpus[0].uuid, "GPU-aaaa-0000");
	assert_string_equal(h.gpus[0].model, "NVIDIA A100-SXM4-40GB");
	assert_string_equal(h.gpus[0].bus, "0000:07:00.0");
	assert_string_equal(h.gpus[1].uuid, "GPU-bbbb-1111");
	assert_string_equal(h.gpus[2].uuid, ""); /* no information file */
	snprintf(p, sizeof(p), "%s/dev/nvidiactl", root);
	assert_true(has(h.ctl, p));
	snprintf(p, sizeof(p), "%s/dev/nvidia-uvm-tools", root);
	assert_true(has(h.ctl, p));
	snprintf(p, sizeof(p), "%s/dev/nvidia-caps-x", root);
	assert_false(has(h.ctl, p));
	snprintf(p, sizeof(p), "%s/usr/lib/x86_64-linux-gnu/libcuda.so.1",
		 root);
	assert_true(has(h.libs, p));
	snprintf(p, sizeof(p),
		 "%s/usr/local/nvidia/lib64/libnvidia-ptxjitcompiler.so.1",
		 root);
	assert_true(has(h.libs, p));
	snprintf(p, sizeof(p), "%s/usr/lib/x86_64-linux-gnu/libc.so.6", root);
	assert_false(has(h.libs, p));
	snprintf(p, sizeof(p), "%s/usr/bin/nvidia-smi", root);
	assert_true(has(h.bins, p));
	assert_int_equal(h.bins[1] == NULL, 1);
	gpu_host_release(&h);
}

static void test_no_gpu(void **state)
{
	struct gpu_host h;
	struct gpu_grant g;
	char err[256], empty[PATH_MAX + 8];

	snprintf(empty, sizeof(empty), "%s/usr", root);
	gpu_host_discover(&h, empty);
	assert_int_equal(h.ngpus, 0);
	assert_int_equal(
		gpu_grant_make(&h, 1, NULL, 0, false, &g, err, sizeof(err)),
		-ENODEV);
	assert_non_null(strstr(err, "no NVIDIA GPU"));
	gpu_host_release(&h);
}

static void test_grant_by_index(void **state)
{
	struct gpu_host h;
	struct gpu_grant g;
	const struct sandbox_bind *b;
	unsigned ids[] = {1, 3};
	char err[256], p[PATH_MAX + 64];

	gpu_host_discover(&h, root);
	assert_int_equal(
		gpu_grant_make(&h, 0, ids, 2, false, &g, err, sizeof(err)), 0);
	assert_int_equal(g.nminors, 2);
	b = bind_at(&g, "/dev/nvidia1");
	assert_non_null(b);
	snprintf(p, sizeof(p), "%s/dev/nvidia1", root);
	assert_string_equal(b->src, p);
	assert_true(b->device);
	assert_false(b->shared);
	assert_non_null(bind_at(&g, "/dev/nvidia3"));
	assert_null(bind_at(&g, "/dev/nvidia0")); /* not asked for */
	b = bind_at(&g, "/dev/nvidiactl");
	assert_true(b && b->device && b->shared);
	assert_non_null(bind_at(&g, "/dev/nvidia-uvm"));
	/* Outside the real root, libraries and tools are bound in. */
	b = bind_at(&g, GPU_LIB_DIR "/libcuda.so.1");
	assert_true(b && !b->device && !b->writable);
	assert_non_null(bind_at(&g, GPU_BIN_DIR "/nvidia-smi"));
	assert_null(bind_at(&g, GPU_LIB_DIR "/libc.so.6"));
	/* GPU 3 has no UUID: CUDA counts it by its place. */
	assert_true(has(g.env, "CUDA_VISIBLE_DEVICES=GPU-bbbb-1111,1"));
	assert_true(has(g.env, "LD_LIBRARY_PATH=" GPU_LIB_DIR));
	gpu_grant_release(&g);

	ids[0] = 2;
	assert_int_equal(
		gpu_grant_make(&h, 0, ids, 1, false, &g, err, sizeof(err)),
		-ENODEV);
	assert_non_null(strstr(err, "no GPU 2"));
	assert_int_equal(
		gpu_grant_make(&h, 4, NULL, 0, false, &g, err, sizeof(err)),
		-ENODEV);
	gpu_host_release(&h);
}

/* A spec holding the grant's binds, as a sandbox would get them. */
static void spec_of(const struct gpu_grant *g, struct sandbox_spec *spec)
{
	sandbox_spec_init(spec);
	for (size_t i = 0; i < g->nbinds; i++)
		sandbox_spec_copy_bind(spec, &g->binds[i]);
}

static void test_leases(void **state)
{
	struct gpu_host h;
	struct gpu_grant g1, g2, g3;
	struct sandbox_spec s1, s2, s3;
	uint64_t held1, held2, held3;
	bool sh1, sh2, sh3, alone;
	char err[256];

	gpu_host_discover(&h, root);
	/* Two exclusive sandboxes get different GPUs. */
	assert_int_equal(
		gpu_grant_make(&h, 2, NULL, 0, false, &g1, err, sizeof(err)),
		0);
	spec_of(&g1, &s1);
	assert_int_equal(gpu_lease_take(&s1, &held1, &sh1, err, sizeof(err)),
			 0);
	assert_int_equal(held1, (1u << 0) | (1u << 1));
	assert_false(sh1);
	assert_int_equal(gpu_lease_holders(0, &alone), 1);
	assert_true(alone);
	assert_int_equal(
		gpu_grant_make(&h, 1, NULL, 0, false, &g2, err, sizeof(err)),
		0);
	assert_int_equal(g2.minors[0], 3);
	/* None left for a third, shared or not. */
	assert_int_equal(
		gpu_grant_make(&h, 2, NULL, 0, true, &g3, err, sizeof(err)),
		-EBUSY);
	/* A sandbox starting with a held GPU's bind is refused. */
	spec_of(&g1, &s3);
	assert_int_equal(gpu_lease_take(&s3, &held3, &sh3, err, sizeof(err)),
			 -EBUSY);
	assert_non_null(strstr(err, "in use"));
	sandbox_spec_release(&s3);
	gpu_grant_release(&g2);
	gpu_lease_drop(held1, sh1);
	assert_int_equal(gpu_lease_holders(0, &alone), 0);
	sandbox_spec_release(&s1);
	gpu_grant_release(&g1);

	/* Shared holders share; an exclusive request waits for them. */
	assert_int_equal(
		gpu_grant_make(&h, 1, NULL, 0, true, &g1, err, sizeof(err)), 0);
	spec_of(&g1, &s1);
	assert_int_equal(gpu_lease_take(&s1, &held1, &sh1, err, sizeof(err)),
			 0);
	assert_true(sh1);
	assert_int_equal(gpu_grant_make(&h, 0, g1.minors, 1, true, &g2, err,
					sizeof(err)),
			 0);
	spec_of(&g2, &s2);
	assert_int_equal(gpu_lease_take(&s2, &held2, &sh2, err, sizeof(err)),
			 0);
	assert_int_equal(gpu_lease_holders(g1.minors[0], &alone), 2);
	assert_false(alone);
	assert_int_equal(gpu_grant_make(&h, 0, g1.minors, 1, false, &g3, err,
					sizeof(err)),
			 -EBUSY);
	assert_non_null(strstr(err, "gpu_shared"));
	gpu_lease_drop(held1, sh1);
	gpu_lease_drop(held2, sh2);
	assert_int_equal(gpu_lease_holders(g1.minors[0], &alone), 0);
	sandbox_spec_release(&s1);
	sandbox_spec_release(&s2);
	gpu_grant_release(&g1);
	gpu_grant_release(&g2);
	gpu_host_release(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_discovery),
		cmocka_unit_test(test_no_gpu),
		cmocka_unit_test(test_grant_by_index),
		cmocka_unit_test(test_leases),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}

/*
 * Host-wide set-up, once per process: sbx's own executable for re-exec,
 * whether user namespaces can be used, the host uid slots sandboxes map
 * onto (SBX_UID_BASE, SBX_UID_SLOTS; see uidslot.c), and the cgroup
 * hierarchy.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"
#include "sandbox/internal.h"
#include "sandbox/uidslot.h"
#include "base/banned.h"

static bool userns_available(void)
{
	char buf[32];
	uint64_t v;

	if (read_file("/proc/sys/user/max_user_namespaces", buf, sizeof(buf)) <
	    0)
		return false;
	buf[strcspn(buf, "\n")] = '\0';
	return parse_u64(buf, &v) == 0 && v > 0;
}

#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif

/* The embedded sbx-init (Makefile: gen/init_blob.S). */
extern const char sbx_init_blob[], sbx_init_blob_end[];

/* Puts the init binary in a sealed memfd to execute from. Returns the fd or
 * -errno (the caller falls back to sbx itself). */
static int init_binary_fd(void)
{
	size_t len = (size_t)(sbx_init_blob_end - sbx_init_blob);
	int fd, r;

	fd = memfd_create("sbx-init",
			  MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC);
	if (fd < 0 && errno == EINVAL) /* kernels before MFD_EXEC */
		fd = memfd_create("sbx-init", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	r = write_full(fd, sbx_init_blob, len);
	if (!r &&
	    fcntl(fd, F_ADD_SEALS,
		  F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0)
		r = -errno;
	if (r) {
		fd_close(&fd);
		return r;
	}
	return fd;
}

/* The host uid range: SBX_UID_BASE and SBX_UID_SLOTS (sbx serve and sbx
 * run set them from --uid-base and --uid-slots). */
static int uid_slots_setup(char *err, size_t errlen)
{
	uint64_t base = UIDSLOT_DEFAULT_BASE, count = UIDSLOT_DEFAULT_COUNT;
	const char *env;
	int r;

	env = getenv("SBX_UID_BASE");
	if (env && *env && parse_u64(env, &base)) {
		snprintf(err, errlen, "bad uid base '%s' (SBX_UID_BASE)", env);
		return -EINVAL;
	}
	env = getenv("SBX_UID_SLOTS");
	if (env && *env && parse_u64(env, &count)) {
		snprintf(err, errlen, "bad uid slot count '%s' (SBX_UID_SLOTS)",
			 env);
		return -EINVAL;
	}
	r = uidslot_setup(base, count, err, errlen);
	if (!r) {
		char desc[128];

		uidslot_describe(desc, sizeof(desc));
		log_debug("host uids: %s", desc);
	}
	return r;
}

int sandbox_host_init(char *err, size_t errlen)
{
	const char *env;
	int r;

	if (sandbox_host.ready)
		return 0;
	if (geteuid() != 0) {
		snprintf(err, errlen,
			 "sbx must run as root: it maps sandbox users onto "
			 "host uids and creates cgroups");
		return -EPERM;
	}
	sandbox_host.exe_fd = init_binary_fd();
	if (sandbox_host.exe_fd < 0) {
		/* sbx itself can be init too (see main.c). */
		log_debug("cannot use the embedded init: %s",
			  strerror(-sandbox_host.exe_fd));
		sandbox_host.exe_fd =
			open("/proc/self/exe", O_PATH | O_CLOEXEC);
	}
	if (sandbox_host.exe_fd < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot open '/proc/self/exe': %s",
			 strerror(-r));
		return r;
	}
	r = uid_slots_setup(err, errlen);
	if (r) {
		fd_close(&sandbox_host.exe_fd);
		return r;
	}
	env = getenv("SBX_NO_USERNS");
	sandbox_host.userns = userns_available() && !(env && *env == '1');
	env = getenv("SBX_WARM_REUSE");
	sandbox_host.warm_reuse = !(env && *env == '0');
	r = seccomp_prog_build(&sandbox_host.seccomp, err, errlen);
	if (r) {
		uidslot_teardown();
		fd_close(&sandbox_host.exe_fd);
		return r;
	}
	r = cgroup_host_detect(&sandbox_host.cg, "/proc/self/mountinfo",
			       "/proc/self/cgroup", getenv("SBX_CGROUP_DIR"),
			       err, errlen);
	if (r) {
		seccomp_prog_release(&sandbox_host.seccomp);
		uidslot_teardown();
		fd_close(&sandbox_host.exe_fd);
		return r;
	}
	sandbox_host.ready = true;
	return 0;
}

/* Groups are named "s<pid>-<n>" after the process that made them: keep
 * those whose process still lives (another sbx at work). */
static bool owner_alive(const char *name)
{
	char num[16];
	uint64_t pid;
	size_t n;

	if (name[0] != 's')
		return false;
	n = strcspn(name + 1, "-");
	if (n == 0 || n >= sizeof(num))
		return false;
	memcpy(num, name + 1, n);
	num[n] = '\0';
	if (parse_u64(num, &pid) || pid == 0 || pid > INT32_MAX)
		return false;
	return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

int sandbox_host_sweep(void)
{
	if (!sandbox_host.ready || sandbox_host.cg.version == CGROUP_NONE)
		return 0;
	return cgroup_sweep(&sandbox_host.cg, owner_alive);
}

void sandbox_host_release(void)
{
	seccomp_prog_release(&sandbox_host.seccomp);
	uidslot_teardown();
	fd_close(&sandbox_host.exe_fd);
	sandbox_host.ready = false;
}

/*
 * Identity. The host side maps sandbox uids 0..65535 onto an unprivileged
 * host range (uid_base..uid_base+65535), so the sandbox's root is nobody on
 * the host. The child side leaves root for SANDBOX_UID with no
 * supplementary groups and an empty capability set, for good.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <grp.h>
#include <unistd.h>

#include "base/util.h"
#include "sandbox/internal.h"
#include "base/banned.h"

#define USERNS_RANGE 65536u

int userns_write_maps(pid_t pid, uint32_t base, char *err, size_t errlen)
{
	static const char *const files[] = {"uid_map", "gid_map"};
	char path[64], map[64];
	size_t i;

	snprintf(map, sizeof(map), "0 %u %u\n", base, USERNS_RANGE);
	for (i = 0; i < ARRAY_SIZE(files); i++) {
		int r;

		snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, files[i]);
		r = write_file(path, map);
		if (r < 0) {
			snprintf(err, errlen, "cannot write '%s': %s", path,
				 strerror(-r));
			return r;
		}
	}
	return 0;
}

int userns_drop_child(uid_t uid, gid_t gid, struct child_err *ce)
{
	struct __user_cap_header_struct hdr = {
		.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct data[2];
	int cap;

	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 &&
	    errno != EINVAL) {
		str_copy(ce->what, sizeof(ce->what),
			 "cannot clear ambient "
			 "capabilities");
		return -errno;
	}
	/* Capabilities are numbered from 0 up to the kernel's last one:
	 * EINVAL means past it. */
	for (cap = 0; cap <= 63; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
			if (errno == EINVAL && cap > 0)
				break;
			str_copy(ce->what, sizeof(ce->what),
				 "cannot drop the capability bounding set");
			return -errno;
		}
	if (setgroups(0, NULL) < 0) {
		str_copy(ce->what, sizeof(ce->what), "cannot drop groups");
		return -errno;
	}
	if (setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0) {
		str_copy(ce->what, sizeof(ce->what),
			 "cannot switch to the sandbox user");
		return -errno;
	}
	/* Leaving uid 0 cleared the permitted and effective sets; clear the
	 * inheritable set too so nothing can come back through exec. */
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capset, &hdr, data) < 0) {
		str_copy(ce->what, sizeof(ce->what),
			 "cannot clear capabilities");
		return -errno;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		str_copy(ce->what, sizeof(ce->what), "cannot set no_new_privs");
		return -errno;
	}
	return 0;
}

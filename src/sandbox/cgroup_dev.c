/*
 * Device rules on cgroup v2, where there is no devices controller: a
 * BPF_PROG_TYPE_CGROUP_DEVICE program attached to the sandbox's group is
 * asked at every open() or mknod() of a device node by the group's
 * processes. The program is assembled here from the list of allowed
 * devices (no compiler, no libbpf) and loaded with the raw bpf() system
 * call:
 *
 *	r2 = ctx->access_type; r3 = r2 >> 16 (access); r2 &= 0xffff (type)
 *	r4 = ctx->major; r5 = ctx->minor
 *	if (r3 & MKNOD) goto deny
 *	for each device: if (r2 == type && r4 == major && r5 == minor)
 *		return 1			(the minor test left out for
 *"any") deny: return 0
 *
 * The attachment holds the program: the fd is closed at once, and the
 * program goes when the group is removed.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/util.h"
#include "sandbox/cgroup.h"
#include "base/banned.h"

/* Two loads and three ALU steps, the mknod test, the deny tail. */
#define PROLOGUE 6
#define EPILOGUE 2
/* A device's test: three compares and "return 1" at most. */
#define PER_DEVICE 5

static struct bpf_insn insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off,
			    int32_t imm)
{
	struct bpf_insn i;

	memset(&i, 0, sizeof(i));
	i.code = code;
	i.dst_reg = dst & 0xf;
	i.src_reg = src & 0xf;
	i.off = off;
	i.imm = imm;
	return i;
}

static struct bpf_insn load_u32(uint8_t dst, int16_t off)
{
	return insn(BPF_LDX | BPF_MEM | BPF_W, dst, BPF_REG_1, off, 0);
}

static struct bpf_insn jne(uint8_t reg, uint32_t val, int16_t off)
{
	return insn(BPF_JMP | BPF_JNE | BPF_K, reg, 0, off, (int32_t)val);
}

/* "return val": two instructions at p. */
static void put_return(struct bpf_insn *p, int32_t val)
{
	p[0] = insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, val);
	p[1] = insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
}

static bool device_ok(const struct cgroup_device *d)
{
	/* Majors have 12 bits, minors 20: a compare's immediate holds
	 * them. */
	return (d->type == 'c' || d->type == 'b') && d->major < (1u << 12) &&
	       (d->minor == CGROUP_DEV_ANY || d->minor < (1u << 20));
}

int cgroup_dev_prog_build(struct bpf_insn *p, size_t max,
			  const struct cgroup_device *devs, size_t ndevs)
{
	size_t n = 0, jset;

	if (ndevs > CGROUP_MAX_DEVICES ||
	    max < PROLOGUE + EPILOGUE + ndevs * PER_DEVICE)
		return -E2BIG;
	p[n++] = load_u32(BPF_REG_2,
			  offsetof(struct bpf_cgroup_dev_ctx, access_type));
	p[n++] = insn(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_3, BPF_REG_2, 0, 0);
	p[n++] = insn(BPF_ALU | BPF_RSH | BPF_K, BPF_REG_3, 0, 0, 16);
	p[n++] = insn(BPF_ALU | BPF_AND | BPF_K, BPF_REG_2, 0, 0, 0xffff);
	p[n++] =
		load_u32(BPF_REG_4, offsetof(struct bpf_cgroup_dev_ctx, major));
	p[n++] =
		load_u32(BPF_REG_5, offsetof(struct bpf_cgroup_dev_ctx, minor));
	jset = n++; /* its offset is known at the end */
	for (size_t i = 0; i < ndevs; i++) {
		const struct cgroup_device *d = &devs[i];
		bool any = d->minor == CGROUP_DEV_ANY;
		/* The compares skip the rest of this device's test. */
		int16_t len = any ? 4 : 5;

		if (!device_ok(d))
			return -EINVAL;
		p[n++] = jne(BPF_REG_2,
			     d->type == 'c' ? BPF_DEVCG_DEV_CHAR
					    : BPF_DEVCG_DEV_BLOCK,
			     (int16_t)(len - 1));
		p[n++] = jne(BPF_REG_4, d->major, (int16_t)(len - 2));
		if (!any)
			p[n++] = jne(BPF_REG_5, d->minor, 2);
		put_return(&p[n], 1);
		n += 2;
	}
	p[jset] = insn(BPF_JMP | BPF_JSET | BPF_K, BPF_REG_3, 0,
		       (int16_t)(n - jset - 1), BPF_DEVCG_ACC_MKNOD);
	put_return(&p[n], 0);
	n += 2;
	return (int)n;
}

static long sys_bpf(int cmd, union bpf_attr *attr)
{
	return syscall(SYS_bpf, cmd, attr, sizeof(*attr));
}

/* Loads the program for devs. Returns its fd or -errno. */
static int prog_load(const struct cgroup_device *devs, size_t ndevs)
{
	static const char license[] = "GPL";
	struct bpf_insn
		insns[PROLOGUE + EPILOGUE + CGROUP_MAX_DEVICES * PER_DEVICE];
	union bpf_attr attr;
	int n, fd;

	n = cgroup_dev_prog_build(insns, ARRAY_SIZE(insns), devs, ndevs);
	if (n < 0)
		return n;
	memset(&attr, 0, sizeof(attr));
	attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
	attr.insns = (uint64_t)(uintptr_t)insns;
	attr.insn_cnt = (uint32_t)n;
	attr.license = (uint64_t)(uintptr_t)license;
	fd = (int)sys_bpf(BPF_PROG_LOAD, &attr);
	return fd < 0 ? -errno : fd;
}

int cgroup_dev_prog_attach(const char *dir, const struct cgroup_device *devs,
			   size_t ndevs, char *err, size_t errlen)
{
	union bpf_attr attr;
	int cg_fd = -1, prog_fd = -1, r = 0;

	prog_fd = prog_load(devs, ndevs);
	if (prog_fd < 0) {
		r = prog_fd;
		snprintf(err, errlen,
			 "cannot load the BPF device program for '%s': %s", dir,
			 strerror(-r));
		goto out;
	}
	cg_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cg_fd < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot open cgroup '%s': %s", dir,
			 strerror(-r));
		goto out;
	}
	memset(&attr, 0, sizeof(attr));
	attr.target_fd = (uint32_t)cg_fd;
	attr.attach_bpf_fd = (uint32_t)prog_fd;
	attr.attach_type = BPF_CGROUP_DEVICE;
	attr.attach_flags = BPF_F_ALLOW_MULTI;
	if (sys_bpf(BPF_PROG_ATTACH, &attr) < 0) {
		r = -errno;
		snprintf(err, errlen,
			 "cannot attach the BPF device program to '%s': %s",
			 dir, strerror(-r));
	}
out:
	fd_close(&cg_fd);
	fd_close(&prog_fd);
	return r;
}

bool cgroup_dev_prog_works(void)
{
	int fd = prog_load(NULL, 0);

	if (fd < 0)
		return false;
	fd_close(&fd);
	return true;
}

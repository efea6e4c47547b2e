/*
 * Host uid slots. Each live sandbox maps its 65536 uids and gids onto a
 * range of host ids of its own, a slot, and its user namespace is owned by
 * the slot's first id. Per-user kernel budgets charged to what runs inside
 * (pipe buffer pages, inotify instances, pending signals, fds in flight)
 * are then never shared with another sandbox, nor with host root.
 *
 * Slots are numbered by their place in the 32-bit id space (first id >>
 * 16), so every sbx on the host agrees on them whatever range each one was
 * given. A process takes a slot with an open file description lock on the
 * slot's byte of one lock file (UIDSLOT_LOCK_FILE): no two processes hold
 * the same byte, and the kernel drops the locks of a process that dies.
 * Locks of one description never conflict with each other, so a bitmap
 * says which slots this process uses.
 *
 * The byte's content says whether a sandbox may still run there: 1 from
 * when a slot is taken until its sandbox is gone (init reaped, cgroup
 * removed), 0 after. A new holder that finds 1 knows the last one died
 * without releasing it, and uses the slot only when no process on the host
 * has an id in it.
 *
 * Slots that overlap a range of /etc/subuid or /etc/subgid, systemd's
 * container range or the ids below 65536 are never used.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"
#include "sandbox/internal.h"
#include "sandbox/uidslot.h"
#include "base/banned.h"

#define SLOT_SHIFT 16
#define SLOT_IDS (1u << SLOT_SHIFT)
/* systemd's range for containers and dynamic users (nspawn, DynamicUser) */
#define SYSTEMD_FIRST 524288ull
#define SYSTEMD_LAST 1879048191ull

enum slot_state {
	SLOT_FREE = 0,
	SLOT_USED,
	SLOT_EXCLUDED, /* overlaps a range the host uses */
	SLOT_KEPT,     /* its sandbox may not be gone: never reused */
};

static struct {
	pthread_mutex_t lock;
	int fd;
	uint32_t first; /* slot number of the first slot */
	uint32_t count;
	uint32_t usable;
	uint32_t next; /* where the next search starts */
	unsigned char *state;
} slots = {.lock = PTHREAD_MUTEX_INITIALIZER, .fd = -1};

static bool overlaps(uint64_t a_first, uint64_t a_last, uint64_t b_first,
		     uint64_t b_last)
{
	return a_first <= b_last && b_first <= a_last;
}

/* Marks the slots that overlap a "name:first:count" line of path. Returns
 * how many it marked; a missing file marks none. */
static uint32_t exclude_subids(const char *path)
{
	char line[512];
	uint32_t n = 0;
	FILE *f = fopen(path, "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		char *first = strchr(line, ':'), *count;
		uint64_t lo, len;
		uint32_t i;

		if (!first || line[0] == '#')
			continue;
		*first++ = '\0';
		count = strchr(first, ':');
		if (!count)
			continue;
		*count++ = '\0';
		count[strcspn(count, " \t\r\n")] = '\0';
		if (parse_u64(first, &lo) || parse_u64(count, &len) || !len)
			continue;
		for (i = 0; i < slots.count; i++) {
			uint64_t s = (uint64_t)(slots.first + i) << SLOT_SHIFT;

			if (slots.state[i] != SLOT_EXCLUDED &&
			    overlaps(s, s + SLOT_IDS - 1, lo, lo + len - 1)) {
				slots.state[i] = SLOT_EXCLUDED;
				n++;
			}
		}
	}
	fclose(f);
	return n;
}

static int open_lock_file(char *err, size_t errlen)
{
	int fd, r;

	if (mkdir(UIDSLOT_LOCK_DIR, 0755) < 0 && errno != EEXIST) {
		r = -errno;
		snprintf(err, errlen, "cannot create '%s': %s",
			 UIDSLOT_LOCK_DIR, strerror(-r));
		return r;
	}
	fd = open(UIDSLOT_LOCK_FILE, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
		  0600);
	if (fd < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot open '%s': %s", UIDSLOT_LOCK_FILE,
			 strerror(-r));
		return r;
	}
	return fd;
}

int uidslot_setup(uint64_t base, uint64_t count, char *err, size_t errlen)
{
	uint32_t skipped, i;
	uint32_t seed = 0;
	int r;

	if (slots.state)
		return 0;
	if (base % SLOT_IDS || base < SLOT_IDS) {
		snprintf(err, errlen,
			 "bad uid base %llu (SBX_UID_BASE, --uid-base): a "
			 "multiple of 65536, at least 65536",
			 (unsigned long long)base);
		return -EINVAL;
	}
	/* The last id must stay below (uid_t)-1, which means "none". */
	if (count < 1 || count > (0xffff0000ull - base) >> SLOT_SHIFT) {
		snprintf(err, errlen,
			 "bad uid slot count %llu (SBX_UID_SLOTS, "
			 "--uid-slots): 1 to %llu from base %llu",
			 (unsigned long long)count,
			 (unsigned long long)((0xffff0000ull - base) >>
					      SLOT_SHIFT),
			 (unsigned long long)base);
		return -EINVAL;
	}
	slots.first = (uint32_t)(base >> SLOT_SHIFT);
	slots.count = (uint32_t)count;
	slots.state = xcalloc(slots.count, 1);
	skipped = 0;
	for (i = 0; i < slots.count; i++) {
		uint64_t s = (uint64_t)(slots.first + i) << SLOT_SHIFT;

		if (overlaps(s, s + SLOT_IDS - 1, SYSTEMD_FIRST,
			     SYSTEMD_LAST)) {
			slots.state[i] = SLOT_EXCLUDED;
			skipped++;
		}
	}
	if (skipped)
		log_warn("uid slots: %u of %u overlap systemd's container "
			 "range %llu..%llu and are not used",
			 skipped, slots.count, SYSTEMD_FIRST, SYSTEMD_LAST);
	skipped = exclude_subids("/etc/subuid");
	skipped += exclude_subids("/etc/subgid");
	if (skipped)
		log_warn("uid slots: %u overlap ranges of /etc/subuid or "
			 "/etc/subgid and are not used",
			 skipped);
	slots.usable = 0;
	for (i = 0; i < slots.count; i++)
		slots.usable += slots.state[i] == SLOT_FREE;
	if (!slots.usable) {
		snprintf(
			err, errlen,
			"no usable uid slot in host ids %llu..%llu: each "
			"overlaps systemd's container range, /etc/subuid or "
			"/etc/subgid (see --uid-base, --uid-slots)",
			(unsigned long long)base,
			(unsigned long long)(base + (count << SLOT_SHIFT) - 1));
		r = -EINVAL;
		goto fail;
	}
	r = open_lock_file(err, errlen);
	if (r < 0)
		goto fail;
	slots.fd = r;
	/* Start anywhere: many processes starting at the same slot would
	 * all try the same bytes first. */
	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != sizeof(seed))
		seed = (uint32_t)getpid() * 2654435761u;
	slots.next = seed % slots.count;
	return 0;
fail:
	free(slots.state);
	slots.state = NULL;
	return r;
}

void uidslot_teardown(void)
{
	/* Closing the description drops every lock this process holds. */
	fd_close(&slots.fd);
	free(slots.state);
	slots.state = NULL;
}

/* Whether a line "Uid:\tA\tB\tC\tD" (or Gid) names an id in [lo, hi]. */
static bool ids_in(const char *line, uint64_t lo, uint64_t hi)
{
	const char *p = strchr(line, ':');

	while (p && *p) {
		char *end;
		unsigned long long v;

		p++;
		while (*p == ' ' || *p == '\t')
			p++;
		if (!isdigit((unsigned char)*p))
			break;
		v = strtoull(p, &end, 10);
		if (v >= lo && v <= hi)
			return true;
		p = end;
	}
	return false;
}

/* Whether any process on the host has a uid or gid in the slot. Only asked
 * of slots whose last holder died without releasing them. */
static bool slot_has_processes(uint32_t number)
{
	uint64_t lo = (uint64_t)number << SLOT_SHIFT, hi = lo + SLOT_IDS - 1;
	struct dirent *de;
	bool found = false;
	DIR *d = opendir("/proc");

	if (!d)
		return true; /* cannot tell: assume the worst */
	while (!found && (de = readdir(d))) {
		char path[288], st[4096];
		char *line;
		ssize_t n;

		if (!isdigit((unsigned char)de->d_name[0]))
			continue;
		snprintf(path, sizeof(path), "/proc/%s/status", de->d_name);
		n = read_file(path, st, sizeof(st));
		if (n <= 0)
			continue;
		line = strstr(st, "\nUid:");
		if (line && ids_in(line + 1, lo, hi))
			found = true;
		line = strstr(st, "\nGid:");
		if (line && ids_in(line + 1, lo, hi))
			found = true;
	}
	closedir(d);
	return found;
}

static int lock_byte(uint32_t number, short type)
{
	struct flock fl = {
		.l_type = type,
		.l_whence = SEEK_SET,
		.l_start = (off_t)number,
		.l_len = 1,
	};

	return fcntl(slots.fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* Takes slot i (free here) if no other process holds it. 0 or -errno
 * (-EAGAIN: held elsewhere or still in use). */
static int try_take(uint32_t i)
{
	uint32_t number = slots.first + i;
	char mark = 0;
	int r;

	r = lock_byte(number, F_WRLCK);
	if (r)
		return r == -EACCES ? -EAGAIN : r;
	if (pread(slots.fd, &mark, 1, (off_t)number) < 0) {
		r = -errno;
		goto out_unlock;
	}
	if (mark == 1 && slot_has_processes(number)) {
		log_debug("uid slot %u: its last holder died and some of its "
			  "processes remain",
			  number);
		r = -EAGAIN;
		goto out_unlock;
	}
	mark = 1;
	if (pwrite(slots.fd, &mark, 1, (off_t)number) != 1) {
		r = errno ? -errno : -EIO;
		goto out_unlock;
	}
	return 0;
out_unlock:
	lock_byte(number, F_UNLCK);
	return r;
}

int uidslot_acquire(uint32_t *first_id)
{
	uint32_t k;
	int r = -EAGAIN;

	pthread_mutex_lock(&slots.lock);
	if (!slots.state) {
		r = -ENODEV;
		goto out;
	}
	for (k = 0; k < slots.count; k++) {
		uint32_t i = (slots.next + k) % slots.count;
		int t;

		if (slots.state[i] != SLOT_FREE)
			continue;
		t = try_take(i);
		if (t == -EAGAIN)
			continue;
		if (t) {
			r = t;
			goto out;
		}
		slots.state[i] = SLOT_USED;
		/* Go round: a slot just released is taken last. */
		slots.next = (i + 1) % slots.count;
		*first_id = (slots.first + i) << SLOT_SHIFT;
		r = (int)i;
		goto out;
	}
out:
	pthread_mutex_unlock(&slots.lock);
	return r;
}

void uidslot_release(int slot, bool gone)
{
	uint32_t number;
	char mark = 0;

	if (slot < 0)
		return;
	pthread_mutex_lock(&slots.lock);
	if (!slots.state || (uint32_t)slot >= slots.count ||
	    slots.state[slot] != SLOT_USED)
		goto out;
	number = slots.first + (uint32_t)slot;
	if (!gone) {
		/* Keep the lock and the mark: never reused by anyone while
		 * this process lives, checked by the next holder after. */
		slots.state[slot] = SLOT_KEPT;
		log_warn("uid slot %u kept out of use: its sandbox may not be "
			 "gone",
			 number);
		goto out;
	}
	if (pwrite(slots.fd, &mark, 1, (off_t)number) != 1) {
		/* The mark stays: the next holder checks for processes. */
	}
	lock_byte(number, F_UNLCK);
	slots.state[slot] = SLOT_FREE;
out:
	pthread_mutex_unlock(&slots.lock);
}

void uidslot_describe(char *out, size_t n)
{
	uint64_t base = (uint64_t)slots.first << SLOT_SHIFT;

	snprintf(out, n, "%u slots of 65536 ids from host uid %llu (%u usable)",
		 slots.count, (unsigned long long)base, slots.usable);
}

/*
 * Host uid slots: 65536 host ids for each live sandbox, unique across every
 * sbx process on the host (see uidslot.c). Host side only.
 */
#ifndef SBX_UIDSLOT_H
#define SBX_UIDSLOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UIDSLOT_LOCK_DIR "/run/sbx"
#define UIDSLOT_LOCK_FILE "/run/sbx/uids.lock"
#define UIDSLOT_DEFAULT_BASE 0x70000000u /* just above systemd's range */
#define UIDSLOT_DEFAULT_COUNT 4096u	 /* up to 2^31 */

/* Sets up count slots from host id base (a multiple of 65536), leaving out
 * those that overlap the host's subordinate id ranges or systemd's. Returns
 * 0 or -errno with a message. */
int uidslot_setup(uint64_t base, uint64_t count, char *err, size_t errlen);
/* Drops every slot this process holds; call when its sandboxes are gone. */
void uidslot_teardown(void);
/* Takes a free slot: returns its index and its first host id in first_id,
 * -EAGAIN when every slot is in use, or another -errno. */
int uidslot_acquire(uint32_t *first_id);
/* Gives a slot back once its sandbox is gone (gone: init reaped and cgroup
 * removed); otherwise keeps it out of use while this process lives. -1 is
 * a no-op. */
void uidslot_release(int slot, bool gone);
/* One line on the configured slots, for logs and sbx check. */
void uidslot_describe(char *out, size_t n);

#endif

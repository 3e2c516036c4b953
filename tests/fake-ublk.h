/* A fake ublk kernel for the reconnect tests (fake-ublk.c): it
 * implements tools/ublk-dev.h, the only part of nbdzone attach that
 * talks to the ublk driver, so that the rest of attach runs unchanged
 * in the test process with no device, no root and no VM.  The test
 * plays the kernel's side of the queues: it hands requests to tags and
 * waits for their commits.
 *
 * Requests reach a queue as the kernel's would: a completion with the
 * tag as user_data on the queue's own io_uring (posted with
 * IORING_OP_MSG_RING), the descriptor in the mapped array, the data at
 * the tag's user-copy offset of the character device (here a file).
 */
#ifndef FAKE_UBLK_H
#define FAKE_UBLK_H

#include <stdbool.h>
#include <stdint.h>

#define FAKE_MAX_QUEUES 4
#define FAKE_MAX_DEPTH 16

struct fake_commit {
  int result;                   /* bytes, 0, or a negative errno */
  uint64_t append_lba;          /* a zone append's sector */
};

/* A new device: forget the last one. */
extern void fake_ublk_reset (void);
/* Wait until attach started the device (every tag fetched). */
extern bool fake_ublk_wait_live (unsigned ms);
/* Hand queue Q's tag TAG request OP (UBLK_IO_OP_*, with UBLK_IO_F_*
 * FLAGS) of LEN bytes at OFF (NR_ZONES zones for a report), with DATA
 * for a write or append.
 */
extern void fake_ublk_submit (int q, int tag, uint8_t op, uint32_t flags,
                              uint64_t off, uint32_t len, const void *data);
/* Wait for its commit: false if none came within MS. */
extern bool fake_ublk_wait (int q, int tag, unsigned ms,
                            struct fake_commit *c);
/* Has it been committed yet? */
extern bool fake_ublk_committed (int q, int tag);
/* What attach wrote back for a read (or report) on Q's TAG. */
extern void fake_ublk_data (int q, int tag, void *buf, uint32_t len);

#endif /* FAKE_UBLK_H */

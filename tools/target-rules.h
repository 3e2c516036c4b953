/* The decisions of nbdzone attach that need no I/O, apart so that they
 * are tested on their own (tests/test-nbdzone-rules.c): elapsed times
 * for the reply timeout, the errors the kernel is told, and the zone
 * limits the kernel is given.
 */
#ifndef NBDZONE_TARGET_RULES_H
#define NBDZONE_TARGET_RULES_H

#include <stdbool.h>
#include <stdint.h>

/* Milliseconds from THEN to NOW; 0 when THEN is later.  Other threads
 * store their times at any moment, so a time loaded after NOW was read
 * may be newer than NOW: that is no time elapsed, never 2^64 - 1.
 */
extern uint64_t elapsed_ms (uint64_t now, uint64_t then);

/* The reply timeout: a request handed over at SINCE (0: none) on a
 * connection whose last reply came at LAST_REPLY has waited too long
 * at NOW if both are more than LIMIT ms ago (a busy but live server
 * keeps answering other requests).  *WAITED gets how long it waited.
 */
extern bool reply_overdue (uint64_t now, uint64_t last_reply, uint64_t since,
                           uint64_t limit, uint64_t *waited);

/* What the server's answer to a zoned write means for the kernel. */
struct write_fault {
  int err;                      /* the server's errno (ENOSPC, EIO, ...) */
  bool conventional;            /* the zone has no write pointer */
  bool inside_capacity;         /* the write ends within the zone capacity */
  uint64_t max_open, max_active;/* the export's limits; 0: none */
  uint64_t active_others;       /* active zones besides this one */
};

/* The negative errno the kernel gets for a failed write, zone append or
 * zone finish (a write of zeroes to the capacity): -EOVERFLOW for the
 * active zone limit (BLK_STS_ZONE_ACTIVE_RESOURCE), -ETOOMANYREFS for
 * the open limit (BLK_STS_ZONE_OPEN_RESOURCE), -ENOSPC, or -EIO.
 */
extern int kernel_write_error (const struct write_fault *f);

/* The open and active zone limits the kernel gets for an export with
 * MAX_OPEN and MAX_ACTIVE (0: none) and NR_ZONES zones.
 */
extern void kernel_zone_limits (uint64_t max_open, uint64_t max_active,
                                uint64_t nr_zones,
                                uint32_t *open, uint32_t *active);

#endif /* NBDZONE_TARGET_RULES_H */

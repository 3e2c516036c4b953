/* Zone reports from NBD block status, shared by "nbdzone report" and the
 * ublk server of "nbdzone attach".
 *
 * The geometry comes from the export description (zoned-geometry.h).
 * The write pointer of a sequential zone is the first hole (an extent
 * with LIBNBD_STATE_HOLE) below the zone's capacity end; a zone with no
 * hole there is full.  A scan (struct wp_scan) learns the write
 * pointers of a run of zones from as many block status replies as the
 * server needs, and says which range to ask for next, so the same code
 * serves a synchronous loop and an asynchronous chain of requests.
 * A WP that is not a multiple of the block size is refused: appends
 * go to the WP, and a misaligned one is no place a write can go.
 */
#ifndef NBDZONE_ZONE_REPORT_H
#define NBDZONE_ZONE_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <linux/blkzoned.h>

#include "zoned-geometry.h"

struct zone_layout {
  struct zoned_geometry g;
  uint64_t size;                /* export size in bytes */
  uint64_t block_size;          /* WPs are multiples of it; 0: g's */
};

extern uint64_t zone_start (const struct zone_layout *l, uint64_t z);
extern uint64_t zone_len (const struct zone_layout *l, uint64_t z);
extern uint64_t zone_cap (const struct zone_layout *l, uint64_t z);
extern bool zone_is_conv (const struct zone_layout *l, uint64_t z);
extern uint64_t zone_count (const struct zone_layout *l);
/* The server says the device turned zone Z read-only or offline. */
extern bool zone_is_unwritable (const struct zone_layout *l, uint64_t z);

/* Zone reset as NBD trims: the next trim of whole sequential zones in
 * [*Z, END) (conventional zones are skipped: they have no WP; so are
 * read-only and offline ones, as a device's reset-all does), at most
 * 1 GiB or one zone per request, as OFFSET and LENGTH; advances *Z past
 * it.  False when none is left.
 */
extern bool zone_trim_next (const struct zone_layout *l, uint64_t *z,
                            uint64_t end, uint64_t *offset, uint64_t *length);

struct wp_scan {
  const struct zone_layout *l;
  uint64_t first, end;          /* zones [first, end) */
  uint64_t *wp;                 /* wp[z - first]: absolute byte offsets */
  uint64_t pos;                 /* the next byte not yet known */
  /* A WP off the block size (a broken or hostile server): the scan
   * stops; appends must never be sent to such an offset.
   */
  bool bad;
  uint64_t bad_zone, bad_wp;
};

/* Scan zones [FIRST, FIRST + COUNT) into WP (COUNT entries). */
extern void wp_scan_init (struct wp_scan *s, const struct zone_layout *l,
                          uint64_t first, uint64_t count, uint64_t *wp);
/* The next block status request, or false when every WP is known. */
extern bool wp_scan_next (const struct wp_scan *s,
                          uint64_t *offset, uint64_t *length);
/* Feed one block status reply: NR_ENTRIES uint32 (length, flags) pairs
 * starting at OFFSET, as libnbd's extent callback gets them.
 */
extern void wp_scan_extents (struct wp_scan *s, uint64_t offset,
                             const uint32_t *entries, size_t nr_entries);

/* Why scan S failed (S->bad), in BUF of LEN bytes. */
extern const char *wp_scan_error (const struct wp_scan *s,
                                  char *buf, size_t len);

/* The kernel's zone descriptor of zone Z whose write pointer is WP. */
extern void zone_describe (const struct zone_layout *l, uint64_t z,
                           uint64_t wp, struct blk_zone *out);

#endif /* NBDZONE_ZONE_REPORT_H */

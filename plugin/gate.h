/* The zone table and the write gate of the zbd plugin, as a unit.
 *
 * A zone table holds every zone's geometry, condition and write pointer
 * (WP), and orders the writes of each sequential zone (the "zone write
 * plug", see the plugin's man page):
 *
 *  - a write at the WP is issued, at most one per zone at the device;
 *    on success the WP advances and the writes it unblocks are woken;
 *  - a write ahead of the WP waits for the gap to be filled, failing
 *    with EIO if the zone makes no progress for reorder_timeout_ms (the
 *    clock does not run while a write of the zone is at the device and
 *    restarts whenever one ends);
 *  - a write below the WP, past the capacity, or to a read-only or
 *    offline zone fails at once, without device I/O;
 *  - writes to different zones run in parallel.
 *
 * The table knows nothing of nbdkit's callbacks or of any backend: the
 * device is reached through struct zone_ops, and everything the gate
 * needs to know is in struct gate_config.  One mutex per table protects
 * every zone's state; it is never held during device I/O, including
 * when a zone is re-read from the device after an error.
 */
#ifndef ZBD_GATE_H
#define ZBD_GATE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

enum zone_cond {
  COND_NOT_WP, COND_EMPTY, COND_IMP_OPEN, COND_EXP_OPEN, COND_CLOSED,
  COND_FULL, COND_READONLY, COND_OFFLINE,
};

struct gate_waiter;

struct zone {
  uint64_t start, len, cap;
  uint64_t wp;                  /* absolute byte offset */
  bool conventional;
  enum zone_cond cond;
  /* Gate state, owned by the table. */
  bool busy;                    /* a write or zone op is at the device */
  struct timespec idle_since;   /* when the last device op ended */
  pthread_cond_t changed;       /* zone operations: busy changed */
  struct gate_waiter *waiters;  /* writes waiting at the gate */
};

/* What the table asks of the device.  OPAQUE is the backend's own. */
struct zone_ops {
  /* Write N bytes at OFF; -1 with errno on failure. */
  int (*write) (void *opaque, const void *buf, uint32_t n, uint64_t off);
  /* Make [OFF, OFF+N) read as zeros (emulated reset and finish). */
  int (*discard) (void *opaque, uint64_t n, uint64_t off);
  /* Zone management commands of a real device, or NULL (emulated). */
  int (*reset) (void *opaque, const struct zone *z);
  int (*finish) (void *opaque, const struct zone *z);
  /* Ask the device for the zone starting at START (its condition, WP,
   * capacity) after an error, into *OUT; NULL if the table is the
   * truth (emulated zones).  Called without the table's lock.
   */
  int (*query) (void *opaque, uint64_t start, struct zone *out);
};

struct gate_config {
  uint64_t reorder_timeout_ms;  /* a gap may stand still this long */
  /* Emulated zones: the table enforces the open and active limits
   * (0 = none) with null_blk's semantics.  A real device does that
   * itself.
   */
  bool emulated;
  uint64_t max_open, max_active;
  bool debug;                   /* log every write that has to wait */
};

struct zone_table {
  struct zone *zones;
  uint64_t nr_zones;
  uint64_t zone_size;           /* all zones but maybe the last */
  struct gate_config config;
  const struct zone_ops *ops;
  void *opaque;
  /* Private to gate.c. */
  pthread_mutex_t lock;
  pthread_condattr_t condattr;
  uint64_t nr_open, nr_active, close_cursor;
};

/* Allocate NR_ZONES zones of ZONE_SIZE bytes, laid out back to back,
 * empty and sequential; the backend then fills in what differs.
 * Returns -1 (errno set) if out of memory.
 */
extern int zt_init (struct zone_table *t, uint64_t nr_zones,
                    uint64_t zone_size);
/* Attach the device and the configuration, once the zones are filled
 * in; counts the open and active zones of an emulated table.
 */
extern void zt_start (struct zone_table *t, const struct gate_config *config,
                      const struct zone_ops *ops, void *opaque);
extern void zt_free (struct zone_table *t);

/* The zone holding byte OFFSET (the last zone for offsets past it). */
extern struct zone *zt_zone_of (const struct zone_table *t, uint64_t offset);
extern uint64_t zt_index (const struct zone_table *t, const struct zone *z);

static inline uint64_t
zone_end (const struct zone *z)
{
  return z->start + z->len;
}

static inline uint64_t
zone_cap_end (const struct zone *z)
{
  return z->start + z->cap;
}

/* The one capacity the sequential zones are described with
 * (zone-capacity=): the first writable sequential zone's (not
 * read-only or offline), or the zone size if there is none.  *DIFFERS
 * is the first other writable sequential zone whose capacity is not
 * that one, or UINT64_MAX if none is; for a short last zone (a device
 * whose size is not a multiple of its zone size) that one is the
 * smaller of it and the zone's length.
 */
extern uint64_t zt_capacity (const struct zone_table *t, uint64_t *differs);

/* A consistent copy of zone Z's state (geometry, condition, WP). */
extern struct zone zt_snapshot (struct zone_table *t, const struct zone *z);
/* Every zone's WP at one moment, into WPS[nr_zones]. */
extern void zt_copy_wps (struct zone_table *t, uint64_t *wps);
/* Active (open or closed) emulated zones now. */
extern uint64_t zt_nr_active (struct zone_table *t);

/* A write of N bytes at OFFSET, all inside sequential zone Z, through
 * the gate.  0, or -1 with errno (EIO, ENOSPC, or the device's).
 */
extern int zt_write (struct zone_table *t, struct zone *z,
                     const void *buf, uint32_t n, uint64_t offset);

/* Write zeroes [OFFSET, OFFSET+N) in sequential zone Z through the gate
 * (a range ending at the zone end stops at the capacity: the rest reads
 * as zeros anyway).  This is how a real device is finished by write
 * zeroes: a finish command would leave the blocks above the WP
 * undefined (NVMe ZNS need not read them as zeros).
 */
extern int zt_write_zeroes (struct zone_table *t, struct zone *z,
                            uint32_t n, uint64_t offset);
/* True if write zeroes [OFFSET, OFFSET+N) of Z is a zone finish the
 * table may do itself: emulated zones, from the WP to the zone or
 * capacity end (zt_finish discards the data above the WP).
 */
extern bool zt_zeroes_finish (struct zone_table *t, struct zone *z,
                              uint32_t n, uint64_t offset);

/* What a read of Z may take from the device: [Z->start, *DATA_END);
 * above that it reads as zeros.  A read-only zone keeps all its data
 * readable (that is when it is rescued); an offline zone has none:
 * -1 with errno EIO and a log line naming OFFSET.
 */
extern int zt_readable (struct zone_table *t, struct zone *z,
                        uint64_t offset, uint64_t *data_end);

/* Zone operations: wait until no write of Z is at the device, claim
 * it, run the command, record the new state.  A failure re-reads the
 * zone from the device.
 */
extern int zt_reset (struct zone_table *t, struct zone *z);
extern int zt_finish (struct zone_table *t, struct zone *z);

/* After a failed read of Z: re-read Z from the device (outside the
 * lock), unless a write is at the device (it re-reads Z itself).
 */
extern void zt_read_failed (struct zone_table *t, struct zone *z);

#endif /* ZBD_GATE_H */

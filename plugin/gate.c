/* The zone table and the write gate of the zbd plugin: see gate.h.
 *
 * Each writer waiting at a zone's gate has its own condition variable,
 * so that a completed write wakes only the write that may go next (at
 * the new WP) and those that must now fail (below it), not every write
 * queued in the zone.  A waiting write also wakes itself when its
 * timeout may have run out: it computes the deadline from the later of
 * its arrival and the end of the zone's last device operation, and
 * while the zone is busy it rechecks once per timeout, so the clock
 * never runs while a write of the zone is at the device.
 *
 * After a failed write or zone operation the zone stays claimed (busy)
 * while the device is asked for its state, without the lock, so one
 * zone's recovery never stalls the others; then the answer is applied
 * under the lock and the waiters rechecked.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "gate.h"

struct gate_waiter {
  uint64_t offset;
  pthread_cond_t wake;
  struct gate_waiter *next;
};

/* ---------------------------------------------------------------- */
/* The table */

int
zt_init (struct zone_table *t, uint64_t nr_zones, uint64_t zone_size)
{
  uint64_t i;

  memset (t, 0, sizeof *t);
  t->zones = calloc (nr_zones, sizeof *t->zones);
  if (!t->zones)
    return -1;
  t->nr_zones = nr_zones;
  t->zone_size = zone_size;
  pthread_mutex_init (&t->lock, NULL);
  /* The gate's waits time out on the monotonic clock. */
  pthread_condattr_init (&t->condattr);
  pthread_condattr_setclock (&t->condattr, CLOCK_MONOTONIC);
  for (i = 0; i < nr_zones; i++) {
    struct zone *z = &t->zones[i];

    z->start = i * zone_size;
    z->len = z->cap = zone_size;
    z->wp = z->start;
    z->cond = COND_EMPTY;
    pthread_cond_init (&z->changed, &t->condattr);
  }
  return 0;
}

/* Does Z's capacity say how far clients may write?  Not for a
 * conventional zone, nor for a read-only or offline one: nothing is
 * written there, and a device may report any capacity for them (NVMe
 * leaves an offline zone's undefined).
 */
static bool
capacity_counts (const struct zone *z)
{
  return !z->conventional && z->cond != COND_READONLY &&
    z->cond != COND_OFFLINE;
}

uint64_t
zt_capacity (const struct zone_table *t, uint64_t *differs)
{
  uint64_t i, cap;

  *differs = UINT64_MAX;
  for (i = 0; i < t->nr_zones && !capacity_counts (&t->zones[i]); i++)
    ;
  if (i == t->nr_zones)
    return t->zone_size;
  /* Only the last zone can be short, so this is a full zone's capacity
   * unless the last zone is the only sequential one.
   */
  cap = t->zones[i].cap;
  for (i++; i < t->nr_zones; i++) {
    const struct zone *z = &t->zones[i];

    if (capacity_counts (z) && z->cap != (z->len < cap ? z->len : cap)) {
      *differs = i;
      break;
    }
  }
  return cap;
}

static bool
cond_open (enum zone_cond c)
{
  return c == COND_IMP_OPEN || c == COND_EXP_OPEN;
}

static bool
cond_active (enum zone_cond c)
{
  return cond_open (c) || c == COND_CLOSED;
}

void
zt_start (struct zone_table *t, const struct gate_config *config,
          const struct zone_ops *ops, void *opaque)
{
  uint64_t i;

  t->config = *config;
  t->ops = ops;
  t->opaque = opaque;
  t->nr_open = t->nr_active = 0;
  for (i = 0; i < t->nr_zones; i++) {
    t->nr_open += cond_open (t->zones[i].cond);
    t->nr_active += cond_active (t->zones[i].cond);
  }
}

void
zt_free (struct zone_table *t)
{
  uint64_t i;

  if (!t->zones)
    return;
  for (i = 0; i < t->nr_zones; i++)
    pthread_cond_destroy (&t->zones[i].changed);
  free (t->zones);
  t->zones = NULL;
  pthread_condattr_destroy (&t->condattr);
  pthread_mutex_destroy (&t->lock);
}

struct zone *
zt_zone_of (const struct zone_table *t, uint64_t offset)
{
  uint64_t i = offset / t->zone_size;

  return &t->zones[i < t->nr_zones ? i : t->nr_zones - 1];
}

uint64_t
zt_index (const struct zone_table *t, const struct zone *z)
{
  return z - t->zones;
}

struct zone
zt_snapshot (struct zone_table *t, const struct zone *z)
{
  struct zone s;

  /* The state only: not the gate's condition variables and waiters. */
  memset (&s, 0, sizeof s);
  pthread_mutex_lock (&t->lock);
  s.start = z->start;
  s.len = z->len;
  s.cap = z->cap;
  s.wp = z->wp;
  s.conventional = z->conventional;
  s.cond = z->cond;
  s.busy = z->busy;
  pthread_mutex_unlock (&t->lock);
  return s;
}

void
zt_copy_wps (struct zone_table *t, uint64_t *wps)
{
  uint64_t i;

  pthread_mutex_lock (&t->lock);
  for (i = 0; i < t->nr_zones; i++)
    wps[i] = t->zones[i].wp;
  pthread_mutex_unlock (&t->lock);
}

uint64_t
zt_nr_active (struct zone_table *t)
{
  uint64_t n;

  pthread_mutex_lock (&t->lock);
  n = t->nr_active;
  pthread_mutex_unlock (&t->lock);
  return n;
}

/* ---------------------------------------------------------------- */
/* Emulated zone resources (null_blk semantics).  Lock held. */

/* Close the implicitly open zone V to make room.  A zone with a write
 * in flight is closed as a drive closes it, by its condition alone: the
 * write completes into the closed zone (or fills it), and its next
 * write opens it again.  Closing an unwritten zone empties it, unless a
 * write into it is on its way (zt_write empties it if that fails).
 */
static void
close_implicitly (struct zone_table *t, struct zone *v)
{
  t->close_cursor = zt_index (t, v) + 1;
  t->nr_open--;
  if (v->wp == v->start && !v->busy) {
    v->cond = COND_EMPTY;
    t->nr_active--;
  }
  else
    v->cond = COND_CLOSED;
}

/* Make room for one more open zone by closing an implicitly open zone,
 * round robin, an idle one if there is one.  As null_blk does, no zone
 * is closed for this when every active slot is taken (which matters
 * for reopening a closed zone: an empty one was checked for an active
 * slot already).  Returns false if no room can be made.
 */
static bool
make_open_room (struct zone_table *t)
{
  uint64_t i, pass;

  if (t->config.max_open == 0 || t->nr_open < t->config.max_open)
    return true;
  if (t->config.max_active && t->nr_active >= t->config.max_active)
    return false;
  for (pass = 0; pass < 2; pass++)
    for (i = 0; i < t->nr_zones; i++) {
      struct zone *v = &t->zones[(t->close_cursor + i) % t->nr_zones];

      if (v->cond == COND_IMP_OPEN && (pass == 1 || !v->busy)) {
        close_implicitly (t, v);
        return true;
      }
    }
  return false;
}

/* Open zone Z implicitly for a write, or fail with ENOSPC. */
static int
open_for_write (struct zone_table *t, struct zone *z, uint64_t offset)
{
  const struct gate_config *c = &t->config;

  if (!c->emulated || cond_open (z->cond))
    return 0;
  if (z->cond == COND_EMPTY && c->max_active &&
      t->nr_active >= c->max_active) {
    nbdkit_error ("write at %" PRIu64 " to zone %" PRIu64 ": too many active "
                  "zones (%" PRIu64 ", max-active-zones=%" PRIu64 "): "
                  "ENOSPC", offset, zt_index (t, z), t->nr_active,
                  c->max_active);
    errno = ENOSPC;
    return -1;
  }
  if (!make_open_room (t)) {
    if (c->max_active && t->nr_active >= c->max_active)
      nbdkit_error ("write at %" PRIu64 " to closed zone %" PRIu64 ": too "
                    "many open zones (%" PRIu64 ", max-open-zones=%" PRIu64
                    "), and with every active slot taken (max-active-zones=%"
                    PRIu64 ") none is closed to reopen it: ENOSPC",
                    offset, zt_index (t, z), t->nr_open, c->max_open,
                    c->max_active);
    else
      nbdkit_error ("write at %" PRIu64 " to zone %" PRIu64 ": too many open "
                    "zones (%" PRIu64 ", max-open-zones=%" PRIu64 ", none can "
                    "be closed): ENOSPC", offset, zt_index (t, z),
                    t->nr_open, c->max_open);
    errno = ENOSPC;
    return -1;
  }
  if (z->cond == COND_EMPTY)
    t->nr_active++;
  t->nr_open++;
  z->cond = COND_IMP_OPEN;
  return 0;
}

/* Set the condition of Z, keeping the resource counts. */
static void
set_cond (struct zone_table *t, struct zone *z, enum zone_cond c)
{
  t->nr_open += cond_open (c);
  t->nr_open -= cond_open (z->cond);
  t->nr_active += cond_active (c);
  t->nr_active -= cond_active (z->cond);
  z->cond = c;
}

/* ---------------------------------------------------------------- */
/* Timing */

static void
add_ms (struct timespec *ts, uint64_t ms)
{
  ts->tv_sec += ms / 1000;
  ts->tv_nsec += (ms % 1000) * 1000000;
  if (ts->tv_nsec >= 1000000000) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000;
  }
}

static bool
before (const struct timespec *a, const struct timespec *b)
{
  return a->tv_sec < b->tv_sec ||
    (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* ---------------------------------------------------------------- */
/* The gate.  Lock held in every function of this part. */

static void
gate_register (struct zone_table *t, struct zone *z, struct gate_waiter *w)
{
  pthread_cond_init (&w->wake, &t->condattr);
  w->next = z->waiters;
  z->waiters = w;
}

static void
gate_unregister (struct zone *z, struct gate_waiter *w)
{
  struct gate_waiter **p;

  for (p = &z->waiters; *p; p = &(*p)->next)
    if (*p == w) {
      *p = w->next;
      break;
    }
  pthread_cond_destroy (&w->wake);
}

/* Wake the writes waiting in Z that can now proceed or fail; ALL after
 * a change that may affect any of them (a zone operation, a failed
 * write, a re-read zone).  Zone operations wait on Z->changed.
 */
static void
gate_wake (struct zone *z, bool all)
{
  struct gate_waiter *w;

  for (w = z->waiters; w; w = w->next)
    if (all || w->offset <= z->wp)
      pthread_cond_signal (&w->wake);
  pthread_cond_broadcast (&z->changed);
}

/* Why a write at OFFSET can never run in Z, as an errno with a log
 * line; 0 if it may still run, now or later.
 */
static int
gate_refusal (struct zone_table *t, struct zone *z, uint64_t offset)
{
  if (z->cond == COND_READONLY || z->cond == COND_OFFLINE) {
    nbdkit_error ("write at %" PRIu64 ": zone %" PRIu64 " is %s: EIO",
                  offset, zt_index (t, z),
                  z->cond == COND_READONLY ? "read-only" : "offline");
    return EIO;
  }
  if (offset < z->wp) {
    nbdkit_error ("write at %" PRIu64 " is below the write pointer %"
                  PRIu64 " of zone %" PRIu64 ": EIO",
                  offset, z->wp, zt_index (t, z));
    return EIO;
  }
  return 0;
}

/* Wait until the write [OFFSET, OFFSET+N) in Z may run.  Returns 0
 * with Z claimed (busy), or -1 with errno.
 */
static int
gate_enter (struct zone_table *t, struct zone *z, uint64_t offset,
            uint32_t n)
{
  const uint64_t timeout = t->config.reorder_timeout_ms;
  struct timespec now, arrived, deadline;
  struct gate_waiter w = { .offset = offset };
  bool waiting = false;
  int e;

  if (offset < z->start || offset + n > zone_cap_end (z)) {
    nbdkit_error ("write of %" PRIu32 " bytes at %" PRIu64 " goes past the "
                  "capacity of zone %" PRIu64 " (ends at %" PRIu64 "): "
                  "ENOSPC", n, offset, zt_index (t, z), zone_cap_end (z));
    errno = ENOSPC;
    return -1;
  }
  clock_gettime (CLOCK_MONOTONIC, &arrived);
  for (;;) {
    e = gate_refusal (t, z, offset);
    if (e || (offset == z->wp && !z->busy))
      break;
    clock_gettime (CLOCK_MONOTONIC, &now);
    if (z->busy) {
      /* The clock stands still; look again in a while (not in a busy
       * loop when the timeout is 0).
       */
      deadline = now;
      add_ms (&deadline, timeout > 0 ? timeout : 10);
    }
    else {
      /* No progress since the later of our arrival and the end of the
       * zone's last device operation.
       */
      deadline = before (&arrived, &z->idle_since) ? z->idle_since : arrived;
      add_ms (&deadline, timeout);
      if (!before (&now, &deadline)) {
        nbdkit_error ("write at %" PRIu64 " waited %" PRIu64 " ms for zone %"
                      PRIu64 " whose write pointer stayed at %" PRIu64
                      " (reorder-timeout): EIO", offset, timeout,
                      zt_index (t, z), z->wp);
        e = EIO;
        break;
      }
    }
    if (t->config.debug)
      nbdkit_debug ("gate: write at %" PRIu64 " waits in zone %" PRIu64
                    " (WP %" PRIu64 "%s)", offset, zt_index (t, z), z->wp,
                    z->busy ? ", a write in flight" : "");
    if (!waiting) {
      gate_register (t, z, &w);
      waiting = true;
    }
    pthread_cond_timedwait (&w.wake, &t->lock, &deadline);
  }
  if (waiting)
    gate_unregister (z, &w);
  if (e) {
    errno = e;
    return -1;
  }
  if (open_for_write (t, z, offset) == -1)
    return -1;
  z->busy = true;
  return 0;
}

/* Release Z after its device operation: the gate's clock restarts. */
static void
release (struct zone *z, bool all)
{
  z->busy = false;
  clock_gettime (CLOCK_MONOTONIC, &z->idle_since);
  gate_wake (z, all);
}

/* Wait until Z has no device operation, then claim it. */
static void
claim (struct zone_table *t, struct zone *z)
{
  while (z->busy)
    pthread_cond_wait (&z->changed, &t->lock);
  z->busy = true;
}

/* ---------------------------------------------------------------- */
/* Re-reading a zone from the device */

/* Apply what the device says of Z (lock held, Z claimed). */
static void
apply_query (struct zone_table *t, struct zone *z, const struct zone *q)
{
  uint64_t old = z->wp;

  z->cap = q->cap;
  set_cond (t, z, q->cond);
  z->wp = q->wp;
  nbdkit_debug ("zone %" PRIu64 " re-read from the device: WP %" PRIu64
                " (was %" PRIu64 ")", zt_index (t, z), z->wp, old);
}

/* Z is claimed by the caller, the lock is held: drop the lock while
 * the device answers, apply the answer, and take the lock again.
 */
static void
requery_claimed (struct zone_table *t, struct zone *z)
{
  struct zone q;
  uint64_t start = z->start;
  int saved = errno, r;

  if (!t->ops->query)
    return;
  pthread_mutex_unlock (&t->lock);
  memset (&q, 0, sizeof q);
  r = t->ops->query (t->opaque, start, &q);
  pthread_mutex_lock (&t->lock);
  if (r == 0)
    apply_query (t, z, &q);
  else
    nbdkit_error ("cannot re-read zone %" PRIu64 " from the device: %m",
                  zt_index (t, z));
  errno = saved;
}

void
zt_read_failed (struct zone_table *t, struct zone *z)
{
  if (z->conventional || !t->ops->query)
    return;
  pthread_mutex_lock (&t->lock);
  /* A write at the device re-reads the zone itself when it ends. */
  if (!z->busy) {
    z->busy = true;
    requery_claimed (t, z);
    release (z, true);
  }
  pthread_mutex_unlock (&t->lock);
}

/* ---------------------------------------------------------------- */
/* Writes and zone operations */

int
zt_write (struct zone_table *t, struct zone *z, const void *buf, uint32_t n,
          uint64_t offset)
{
  int r, saved;

  pthread_mutex_lock (&t->lock);
  r = gate_enter (t, z, offset, n);
  pthread_mutex_unlock (&t->lock);
  if (r == -1)
    return -1;

  r = t->ops->write (t->opaque, buf, n, offset);
  saved = errno;

  pthread_mutex_lock (&t->lock);
  if (r == 0) {
    z->wp += n;
    if (z->wp >= zone_cap_end (z))
      set_cond (t, z, COND_FULL);
  }
  else {
    /* Closed while this first write was on its way, which failed. */
    if (z->cond == COND_CLOSED && z->wp == z->start)
      set_cond (t, z, COND_EMPTY);
    requery_claimed (t, z);
  }
  release (z, r != 0);
  pthread_mutex_unlock (&t->lock);
  errno = saved;
  return r;
}

/* Run zone operation OP on Z; on success Z becomes C, with its WP at
 * the start (empty) or at the end of its capacity (full).
 */
static int
zone_op (struct zone_table *t, struct zone *z,
         int (*op) (struct zone_table *, struct zone *), enum zone_cond c)
{
  int r;

  pthread_mutex_lock (&t->lock);
  claim (t, z);
  pthread_mutex_unlock (&t->lock);

  r = op (t, z);

  pthread_mutex_lock (&t->lock);
  if (r == 0) {
    set_cond (t, z, c);
    z->wp = c == COND_FULL ? zone_cap_end (z) : z->start;
  }
  else
    requery_claimed (t, z);
  release (z, true);
  pthread_mutex_unlock (&t->lock);
  return r;
}

static int
do_reset (struct zone_table *t, struct zone *z)
{
  if (t->ops->reset)
    return t->ops->reset (t->opaque, z);
  return t->ops->discard (t->opaque, z->len, z->start);
}

/* Z is claimed, so its WP and condition are stable without the lock,
 * but other zones' resources are counted under it.
 */
static int
do_finish (struct zone_table *t, struct zone *z)
{
  uint64_t active;
  int r = 0;

  /* The emulated active-zone rule (the one place for it; a device
   * applies its own): finishing an empty zone makes it active for a
   * moment on a real device.
   */
  pthread_mutex_lock (&t->lock);
  active = t->nr_active;
  if (t->config.emulated && z->cond == COND_EMPTY && t->config.max_active &&
      active >= t->config.max_active) {
    nbdkit_error ("finish of zone %" PRIu64 ": too many active zones (%"
                  PRIu64 ", max-active-zones=%" PRIu64 "): ENOSPC",
                  zt_index (t, z), active, t->config.max_active);
    errno = ENOSPC;
    r = -1;
  }
  pthread_mutex_unlock (&t->lock);
  if (r == -1)
    return -1;
  if (t->ops->finish)
    return t->ops->finish (t->opaque, z);
  /* Data above the WP may be stale (written before a crash, never
   * covered by a durable WP): it must read as zeros once full.
   */
  if (z->wp < zone_cap_end (z))
    r = t->ops->discard (t->opaque, zone_cap_end (z) - z->wp, z->wp);
  return r;
}

int
zt_reset (struct zone_table *t, struct zone *z)
{
  return zone_op (t, z, do_reset, COND_EMPTY);
}

int
zt_finish (struct zone_table *t, struct zone *z)
{
  return zone_op (t, z, do_finish, COND_FULL);
}

int
zt_write_zeroes (struct zone_table *t, struct zone *z, uint32_t n,
                 uint64_t offset)
{
  static const char zeros[65536];
  const struct zone s = zt_snapshot (t, z);
  uint64_t end = offset + n;

  if (end == zone_end (&s) && offset <= zone_cap_end (&s))
    end = zone_cap_end (&s);
  while (offset < end) {
    uint32_t k = end - offset < sizeof zeros ? end - offset : sizeof zeros;

    if (zt_write (t, z, zeros, k, offset) == -1)
      return -1;
    offset += k;
  }
  return 0;
}

bool
zt_zeroes_finish (struct zone_table *t, struct zone *z, uint32_t n,
                  uint64_t offset)
{
  const struct zone s = zt_snapshot (t, z);
  uint64_t end = offset + n;

  return t->config.emulated && !s.conventional && offset == s.wp &&
    (end == zone_end (&s) || end == zone_cap_end (&s));
}

int
zt_readable (struct zone_table *t, struct zone *z, uint64_t offset,
             uint64_t *data_end)
{
  struct zone s;

  if (z->conventional) {
    *data_end = zone_end (z);
    return 0;
  }
  s = zt_snapshot (t, z);
  switch (s.cond) {
  case COND_OFFLINE:
    nbdkit_error ("read at %" PRIu64 ": zone %" PRIu64 " is offline: EIO",
                  offset, zt_index (t, z));
    errno = EIO;
    return -1;
  case COND_READONLY:
    *data_end = zone_cap_end (&s);
    return 0;
  default:
    *data_end = s.wp;
    return 0;
  }
}

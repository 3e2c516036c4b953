/* nbdkit zbd plugin: serve a zoned block device over NBD.
 *
 * How it works.  At start the plugin builds one zone table (start,
 * length, capacity, type, condition, write pointer of every zone) from
 * its backend: a real zoned device through libzbd (device=PATH), or
 * emulated host-managed zones over memory or an image file
 * (emulate=memory|FILE).  The table is shared by every connection.
 *
 * Zones are mapped onto plain NBD requests (the "zoned NBD profile"):
 * block status shows [start,WP) as data and [WP,end) as a hole of
 * zeroes; the export description carries the geometry as key=value
 * words; a trim of whole zones resets them; write-zeroes from the WP
 * to the zone end finishes the zone; reads above the WP return zeros.
 *
 * Writes to a sequential zone pass a per-zone gate: one write in
 * flight per zone, a write at the WP runs, a write ahead of the WP
 * waits (up to reorder-timeout) for the gap to fill, a write below the
 * WP or past the capacity fails at once.  nbdkit runs requests in
 * parallel threads, so this is what turns a pipelined stream of writes
 * back into write-pointer order.  One mutex (zones_lock) protects the
 * whole table; device I/O is done without it, so zones proceed in
 * parallel.
 *
 * The backends live in emulate.c (memory, and an image file whose zone
 * table is crash-consistent) and device.c (libzbd); zbd-internal.h is
 * what the parts share.
 */

#define _GNU_SOURCE 1          /* asprintf */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/types.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

/* One shared zone table; the gate does its own locking. */
#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

#include "zoned-geometry.h"
#include "zbd-internal.h"

/* ---------------------------------------------------------------- */
/* Parameters, the zone table and the backend (see zbd-internal.h) */

const char *device_path;
const char *emulate;
int64_t param_size = -1;
int64_t param_zone_size = -1;
int64_t param_zone_capacity = -1;
int64_t param_conventional = -1;
int64_t param_max_open = -1;
int64_t param_max_active = -1;
int64_t param_block_size = -1;
static uint64_t reorder_timeout_ms = 5000;

/* -D zbd.gate=1: log every write that has to wait for its zone's WP. */
NBDKIT_DLL_PUBLIC int zbd_debug_gate = 0;

struct zone *zones;
uint64_t nr_zones;
uint64_t zone_size;
uint64_t disk_size;
uint32_t block_size = 512;
uint32_t phys_block_size = 4096;
uint64_t max_open, max_active;
bool host_aware;
bool rotational;
static char *description;      /* the geometry as key=value words */

pthread_mutex_t zones_lock = PTHREAD_MUTEX_INITIALIZER;
uint64_t nr_active;                     /* emulated accounting */
static uint64_t nr_open;
static uint64_t close_cursor;           /* round robin implicit close */
const struct backend *backend;

/* ---------------------------------------------------------------- */
/* Small helpers */

/* Parse a duration: "5s", "500ms", "2m", or plain seconds ("2"). */
static int
parse_duration (const char *key, const char *value, uint64_t *ms)
{
  char *end;
  unsigned long long v;

  errno = 0;
  v = strtoull (value, &end, 10);
  if (errno || end == value || value[0] == '-')
    goto bad;
  if (*end == '\0' || strcmp (end, "s") == 0)
    v *= 1000;
  else if (strcmp (end, "m") == 0)
    v *= 60000;
  else if (strcmp (end, "ms") != 0)
    goto bad;
  if (v > 24ULL * 3600 * 1000)
    goto bad;
  *ms = v;
  return 0;
 bad:
  nbdkit_error ("%s=%s: not a duration; use e.g. 5s, 500ms, 2m or a number "
                "of seconds (at most 24 hours)", key, value);
  return -1;
}

static int
parse_count (const char *key, const char *value, int64_t *out)
{
  uint32_t v;

  if (nbdkit_parse_uint32_t (key, value, &v) == -1)
    return -1;
  *out = v;
  return 0;
}

static int
parse_bytes (const char *key, const char *value, int64_t *out)
{
  int64_t v = nbdkit_parse_size (value);

  if (v == -1)
    return -1;
  if (v == 0) {
    nbdkit_error ("%s=%s: must be greater than zero", key, value);
    return -1;
  }
  *out = v;
  return 0;
}

static struct zone *
zone_of (uint64_t offset)
{
  uint64_t i = offset / zone_size;

  return &zones[i < nr_zones ? i : nr_zones - 1];
}

int
full_pread (int fd, void *buf, size_t n, off_t off)
{
  char *p = buf;

  while (n > 0) {
    ssize_t r = pread (fd, p, n, off);
    if (r == -1) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (r == 0) {
      errno = EIO;
      return -1;
    }
    p += r; n -= r; off += r;
  }
  return 0;
}

int
full_pwrite (int fd, const void *buf, size_t n, off_t off)
{
  const char *p = buf;

  while (n > 0) {
    ssize_t r = pwrite (fd, p, n, off);
    if (r == -1) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += r; n -= r; off += r;
  }
  return 0;
}

/* Condition variables of the gate time out on the monotonic clock. */
static pthread_condattr_t monotonic_condattr;

void
init_zone_conds (struct zone *z, size_t n)
{
  size_t i;

  pthread_condattr_init (&monotonic_condattr);
  pthread_condattr_setclock (&monotonic_condattr, CLOCK_MONOTONIC);
  for (i = 0; i < n; i++) {
    pthread_cond_init (&z[i].changed, &monotonic_condattr);
    z[i].waiters = NULL;
  }
}

/* ---------------------------------------------------------------- */
/* Emulated zone resources (null_blk semantics).  zones_lock held. */

/* Make room for one more open zone by closing an implicitly open zone
 * with no write in flight, round robin.  Returns false if none can be.
 */
static bool
make_open_room (void)
{
  uint64_t i;

  if (max_open == 0 || nr_open < max_open)
    return true;
  for (i = 0; i < nr_zones; i++) {
    struct zone *v = &zones[(close_cursor + i) % nr_zones];

    if (v->cond == COND_IMP_OPEN && !v->busy) {
      close_cursor = zone_index (v) + 1;
      nr_open--;
      if (v->wp == v->start) {
        v->cond = COND_EMPTY;
        nr_active--;
      }
      else
        v->cond = COND_CLOSED;
      return true;
    }
  }
  return false;
}

/* Open zone Z implicitly for a write, or fail with ENOSPC. */
static int
open_for_write (struct zone *z, uint64_t offset)
{
  if (!backend->emulated || z->cond == COND_IMP_OPEN ||
      z->cond == COND_EXP_OPEN)
    return 0;
  if (z->cond == COND_EMPTY && max_active && nr_active >= max_active) {
    nbdkit_error ("write at %" PRIu64 " to zone %" PRIu64 ": too many active "
                  "zones (%" PRIu64 ", max-active-zones=%" PRIu64 "): "
                  "ENOSPC", offset, zone_index (z), nr_active, max_active);
    errno = ENOSPC;
    return -1;
  }
  if (!make_open_room ()) {
    nbdkit_error ("write at %" PRIu64 " to zone %" PRIu64 ": too many open "
                  "zones (%" PRIu64 ", max-open-zones=%" PRIu64 ", none can "
                  "be closed): ENOSPC", offset, zone_index (z), nr_open,
                  max_open);
    errno = ENOSPC;
    return -1;
  }
  if (z->cond == COND_EMPTY)
    nr_active++;
  nr_open++;
  z->cond = COND_IMP_OPEN;
  return 0;
}

/* Release the resources of Z and set its new condition. */
static void
set_cond (struct zone *z, enum zone_cond c)
{
  if (backend->emulated) {
    if (z->cond == COND_IMP_OPEN || z->cond == COND_EXP_OPEN)
      nr_open--;
    if (z->cond == COND_IMP_OPEN || z->cond == COND_EXP_OPEN ||
        z->cond == COND_CLOSED)
      nr_active--;
    if (c == COND_IMP_OPEN || c == COND_EXP_OPEN)
      nr_open++;
    if (c == COND_IMP_OPEN || c == COND_EXP_OPEN || c == COND_CLOSED)
      nr_active++;
  }
  z->cond = c;
}

/* ---------------------------------------------------------------- */
/* The write gate */

static void
deadline_after (struct timespec *ts, uint64_t ms)
{
  clock_gettime (CLOCK_MONOTONIC, ts);
  ts->tv_sec += ms / 1000;
  ts->tv_nsec += (ms % 1000) * 1000000;
  if (ts->tv_nsec >= 1000000000) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000;
  }
}

/* A write waiting at a zone's gate.  Each has its own condition variable,
 * so that a completed write wakes only the write that may go next (at the
 * new write pointer) and those that must now fail (below it), not every
 * write queued in the zone: with many writes in flight per zone, waking
 * them all cost several context switches per write.
 */
struct gate_waiter {
  uint64_t offset;
  pthread_cond_t wake;
  struct gate_waiter *next;
};

static void
gate_register (struct zone *z, struct gate_waiter *w)
{
  pthread_cond_init (&w->wake, &monotonic_condattr);
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

/* Wake (zones_lock held) the writes waiting in zone Z that can now
 * proceed or fail; ALL after a change that may affect any of them (a zone
 * operation, a failed write, a re-read zone).  Zone operations waiting to
 * claim the zone wait on Z->changed.
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

/* Why the write [OFFSET, OFFSET+N) cannot run in zone Z now, ever, as an
 * errno with a log line; 0 if it may still run, now or later.
 */
static int
gate_refusal (struct zone *z, uint64_t offset)
{
  if (z->cond == COND_READONLY || z->cond == COND_OFFLINE) {
    nbdkit_error ("write at %" PRIu64 ": zone %" PRIu64 " is %s",
                  offset, zone_index (z),
                  z->cond == COND_READONLY ? "read-only" : "offline");
    return EIO;
  }
  if (offset < z->wp) {
    nbdkit_error ("write at %" PRIu64 " is below the write pointer %"
                  PRIu64 " of zone %" PRIu64 ": EIO",
                  offset, z->wp, zone_index (z));
    return EIO;
  }
  return 0;
}

/* Wait (zones_lock held) until the write [OFFSET, OFFSET+N) in
 * sequential zone Z may run.  Returns 0 with Z->busy set, or -1.
 */
static int
gate_enter (struct zone *z, uint64_t offset, uint32_t n)
{
  struct timespec deadline;
  struct gate_waiter w = { .offset = offset };
  bool waiting = false, timed_out = false;
  int e;

  if (offset + n > zone_cap_end (z)) {
    nbdkit_error ("write of %" PRIu32 " bytes at %" PRIu64 " goes past the "
                  "capacity of zone %" PRIu64 " (ends at %" PRIu64 "): "
                  "ENOSPC", n, offset, zone_index (z), zone_cap_end (z));
    errno = ENOSPC;
    return -1;
  }
  deadline_after (&deadline, reorder_timeout_ms);
  for (;;) {
    e = gate_refusal (z, offset);
    if (e || (offset == z->wp && !z->busy))
      break;
    if (timed_out) {
      nbdkit_error ("write at %" PRIu64 " waited %" PRIu64 " ms for zone %"
                    PRIu64 " whose write pointer stayed at %" PRIu64
                    " (reorder-timeout): EIO", offset, reorder_timeout_ms,
                    zone_index (z), z->wp);
      e = EIO;
      break;
    }
    if (zbd_debug_gate)
      nbdkit_debug ("gate: write at %" PRIu64 " waits in zone %" PRIu64
                    " (WP %" PRIu64 "%s)", offset, zone_index (z), z->wp,
                    z->busy ? ", a write in flight" : "");
    if (!waiting) {
      gate_register (z, &w);
      waiting = true;
    }
    if (pthread_cond_timedwait (&w.wake, &zones_lock, &deadline)
        == ETIMEDOUT)
      timed_out = true;
  }
  if (waiting)
    gate_unregister (z, &w);
  if (e) {
    errno = e;
    return -1;
  }
  if (open_for_write (z, offset) == -1)
    return -1;
  z->busy = true;
  return 0;
}

/* Record the outcome of the write (zones_lock held) and wake waiters. */
static void
gate_leave (struct zone *z, uint32_t n, bool ok)
{
  z->busy = false;
  if (ok) {
    z->wp += n;
    if (z->wp >= zone_cap_end (z))
      set_cond (z, COND_FULL);
  }
  else if (backend->reload_zone)
    backend->reload_zone (z);
  gate_wake (z, !ok);
}

static int
gated_write (struct zone *z, const void *buf, uint32_t n, uint64_t offset)
{
  int r, saved;

  pthread_mutex_lock (&zones_lock);
  r = gate_enter (z, offset, n);
  pthread_mutex_unlock (&zones_lock);
  if (r == -1)
    return -1;

  r = backend->pwrite (buf, n, offset);
  saved = errno;

  pthread_mutex_lock (&zones_lock);
  gate_leave (z, n, r == 0);
  pthread_mutex_unlock (&zones_lock);
  errno = saved;
  return r;
}

/* Claim zone Z for a zone operation: no write in flight during it. */
static void
claim_zone (struct zone *z)
{
  pthread_mutex_lock (&zones_lock);
  while (z->busy)
    pthread_cond_wait (&z->changed, &zones_lock);
  z->busy = true;
  pthread_mutex_unlock (&zones_lock);
}

static void
release_zone (struct zone *z, bool ok, enum zone_cond c, uint64_t wp)
{
  pthread_mutex_lock (&zones_lock);
  z->busy = false;
  if (ok) {
    set_cond (z, c);
    z->wp = wp;
  }
  else if (backend->reload_zone)
    backend->reload_zone (z);
  gate_wake (z, true);
  pthread_mutex_unlock (&zones_lock);
}

/* Reset a sequential zone: discard its data, WP to the start. */
static int
reset_zone (struct zone *z)
{
  int r;

  claim_zone (z);
  if (backend->zone_op_reset)
    r = backend->zone_op_reset (z);
  else
    r = backend->discard (z->len, z->start);
  release_zone (z, r == 0, COND_EMPTY, z->start);
  return r;
}

/* Finish a sequential zone: it becomes full. */
static int
finish_zone (struct zone *z)
{
  int r = 0;

  claim_zone (z);
  if (backend->zone_op_finish)
    r = backend->zone_op_finish (z);
  else {
    /* Data above the WP may be stale (written before a crash, never
     * covered by a durable WP): it must read as zeros once full.
     */
    pthread_mutex_lock (&zones_lock);
    if (z->cond == COND_EMPTY && max_active && nr_active >= max_active) {
      nbdkit_error ("finish of zone %" PRIu64 ": too many active zones (%"
                    PRIu64 ", max-active-zones=%" PRIu64 "): ENOSPC",
                    zone_index (z), nr_active, max_active);
      errno = ENOSPC;
      r = -1;
    }
    pthread_mutex_unlock (&zones_lock);
    if (r == 0 && z->wp < zone_cap_end (z))
      r = backend->discard (zone_cap_end (z) - z->wp, z->wp);
  }
  release_zone (z, r == 0, COND_FULL, zone_cap_end (z));
  return r;
}

/* ---------------------------------------------------------------- */
/* nbdkit callbacks */

static void
zbd_unload (void)
{
  free (description);
  emulate_unload ();
  free (zones);
}

static int
zbd_config (const char *key, const char *value)
{
  if (strcmp (key, "device") == 0)
    device_path = value;
  else if (strcmp (key, "emulate") == 0)
    emulate = value;
  else if (strcmp (key, "size") == 0)
    return parse_bytes (key, value, &param_size);
  else if (strcmp (key, "zone-size") == 0)
    return parse_bytes (key, value, &param_zone_size);
  else if (strcmp (key, "zone-capacity") == 0)
    return parse_bytes (key, value, &param_zone_capacity);
  else if (strcmp (key, "block-size") == 0)
    return parse_bytes (key, value, &param_block_size);
  else if (strcmp (key, "conventional-zones") == 0)
    return parse_count (key, value, &param_conventional);
  else if (strcmp (key, "max-open-zones") == 0)
    return parse_count (key, value, &param_max_open);
  else if (strcmp (key, "max-active-zones") == 0)
    return parse_count (key, value, &param_max_active);
  else if (strcmp (key, "reorder-timeout") == 0)
    return parse_duration (key, value, &reorder_timeout_ms);
  else {
    nbdkit_error ("unknown parameter '%s'; see nbdkit-zbd-plugin(1) or "
                  "nbdkit zbd --help", key);
    return -1;
  }
  return 0;
}

static int
zbd_config_complete (void)
{
  if (!device_path == !emulate) {
    nbdkit_error ("give exactly one of device=PATH (a zoned block device) "
                  "or emulate=FILE|memory");
    return -1;
  }
  if (device_path && (param_size != -1 || param_zone_size != -1 ||
                      param_zone_capacity != -1 || param_conventional != -1 ||
                      param_max_open != -1 || param_max_active != -1 ||
                      param_block_size != -1)) {
    nbdkit_error ("device=%s: size, zone and limit parameters are for "
                  "emulate= only; a real device reports its own geometry",
                  device_path);
    return -1;
  }
  return 0;
}

/* Geometry as key=value words for NBD_INFO_DESCRIPTION. */
static int
build_description (void)
{
  bool *conv = calloc (nr_zones, sizeof *conv);
  size_t rlen = 24 * nr_zones + 8;      /* worst case: "n," per zone */
  char *ranges = malloc (rlen);
  uint64_t i, cap = zone_size;
  int r;

  if (!conv || !ranges) {
    nbdkit_error ("malloc: %m");
    free (conv);
    free (ranges);
    return -1;
  }
  for (i = 0; i < nr_zones; i++) {
    conv[i] = zones[i].conventional;
    if (!zones[i].conventional && cap == zone_size)
      cap = zones[i].cap;
  }
  r = zoned_format_ranges (conv, nr_zones, ranges, rlen);
  free (conv);
  if (r == 0 &&
      asprintf (&description,
                "zoned=%s zone-size=%" PRIu64 " zone-capacity=%" PRIu64
                " zones=%" PRIu64 " conventional=%s max-open=%" PRIu64
                " max-active=%" PRIu64 " block-size=%" PRIu32,
                host_aware ? "host-aware" : "host-managed", zone_size, cap,
                nr_zones, ranges, max_open, max_active, block_size) == -1)
    r = -1;
  free (ranges);
  if (r == -1)
    nbdkit_error ("cannot format the export description: %m");
  /* NBD strings are at most 4096 bytes. */
  else if (strlen (description) > 4096) {
    nbdkit_error ("the conventional zones are scattered in too many ranges "
                  "to describe in the 4096-byte NBD export description");
    r = -1;
  }
  return r;
}

static int
zbd_get_ready (void)
{
  int r;

  if (device_path)
    r = open_device ();
  else if (strcmp (emulate, "memory") == 0)
    r = open_memory_backend ();
  else
    r = open_file ();
  if (r == -1)
    return -1;
  if (build_description () == -1)
    return -1;
  nbdkit_debug ("zbd: %s backend: %s", backend->name, description);
  return 0;
}

static void
zbd_dump_plugin (void)
{
#ifdef HAVE_LIBZBD
  printf ("zbd_libzbd=yes\n");
#else
  printf ("zbd_libzbd=no\n");
#endif
  printf ("zbd_emulate=yes\n");
  printf ("zbd_parameters=device,emulate,size,zone-size,zone-capacity,"
          "conventional-zones,max-open-zones,max-active-zones,block-size,"
          "reorder-timeout\n");
  printf ("zbd_reorder_timeout_default=5s\n");
}

static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static int handle_rw, handle_ro;

static void *
zbd_open_connection (int readonly)
{
  int r = 0;

  /* Open the backend read-write only when a writer connects, so that
   * nbdkit -r never opens the device or image for writing (nor creates
   * an image).
   */
  pthread_mutex_lock (&open_lock);
  if (readonly && backend->open_ro)
    r = backend->open_ro ();
  else if (!readonly && backend->open_rw)
    r = backend->open_rw ();
  pthread_mutex_unlock (&open_lock);
  if (r == -1)
    return NULL;
  return readonly ? &handle_ro : &handle_rw;
}

static int64_t
zbd_get_size (void *handle)
{
  return disk_size;
}

static const char *
zbd_export_description (void *handle)
{
  return description;
}

static int
zbd_block_size (void *handle, uint32_t *minimum, uint32_t *preferred,
                uint32_t *maximum)
{
  *minimum = block_size;
  *preferred = phys_block_size > block_size ? phys_block_size : block_size;
  if (*preferred < 4096)
    *preferred = 4096;
  *maximum = 0xffffffff;
  return 0;
}

static int
zbd_can_write (void *handle)
{
  return handle == &handle_rw;
}

static int
zbd_is_rotational (void *handle)
{
  return rotational;
}

static int
zbd_can_true (void *handle)
{
  return 1;
}

static int
zbd_can_fua (void *handle)
{
  /* nbdkit follows a FUA write with .flush, which on the file backend
   * also makes the WP covering the write durable.
   */
  return NBDKIT_FUA_EMULATE;
}

static int
check_aligned (const char *what, uint32_t count, uint64_t offset)
{
  if ((offset | count) & (block_size - 1)) {
    nbdkit_error ("%s of %" PRIu32 " bytes at %" PRIu64 " is not aligned to "
                  "the %" PRIu32 "-byte block size: EINVAL",
                  what, count, offset, block_size);
    errno = EINVAL;
    return -1;
  }
  return 0;
}

static uint64_t
current_wp (struct zone *z)
{
  uint64_t wp;

  pthread_mutex_lock (&zones_lock);
  wp = z->wp;
  pthread_mutex_unlock (&zones_lock);
  return wp;
}

/* After a failed read the device is asked for the zone again. */
static void
reload_after_error (struct zone *z)
{
  if (z->conventional || !backend->reload_zone)
    return;
  pthread_mutex_lock (&zones_lock);
  /* A write in flight re-reads the zone itself when it ends. */
  if (!z->busy) {
    backend->reload_zone (z);
    gate_wake (z, true);
  }
  pthread_mutex_unlock (&zones_lock);
}

/* Reads above the WP, or past capacity, are zeros without device I/O. */
static int
zbd_pread (void *handle, void *buf, uint32_t count, uint64_t offset,
           uint32_t flags)
{
  char *p = buf;

  if (!backend->emulated && check_aligned ("read", count, offset) == -1)
    return -1;
  while (count > 0) {
    struct zone *z = zone_of (offset);
    uint64_t end = zone_end (z);
    uint32_t n = end - offset < count ? end - offset : count;
    uint64_t valid = z->conventional ? end : current_wp (z);
    uint32_t d = valid > offset ? (valid - offset < n ? valid - offset : n)
      : 0;

    if (d > 0 && backend->pread (p, d, offset) == -1) {
      reload_after_error (z);
      return -1;
    }
    memset (p + d, 0, n - d);
    p += n; offset += n; count -= n;
  }
  return 0;
}

static int
zbd_pwrite (void *handle, const void *buf, uint32_t count, uint64_t offset,
            uint32_t flags)
{
  const char *p = buf;

  if (check_aligned ("write", count, offset) == -1)
    return -1;
  /* A write spanning zones is split; the parts pass their gates in
   * ascending order, each after the previous one completed.
   */
  while (count > 0) {
    struct zone *z = zone_of (offset);
    uint64_t end = zone_end (z);
    uint32_t n = end - offset < count ? end - offset : count;
    int r = z->conventional ? backend->pwrite (p, n, offset)
      : gated_write (z, p, n, offset);

    if (r == -1)
      return -1;
    p += n; offset += n; count -= n;
  }
  return 0;
}

static int
zbd_flush (void *handle, uint32_t flags)
{
  return backend->flush ();
}

/* Zone operations (reset, finish) are durable before they are
 * acknowledged.  On the image file they run under persist_lock up to
 * the table write, so a concurrent flush can never record a WP
 * snapshot taken before the operation after the operation's data
 * changes (discarded data under an old WP).
 */
static void
zone_ops_begin (void)
{
  if (backend->persist)
    pthread_mutex_lock (&persist_lock);
}

static int
zone_ops_end (bool changed, int r)
{
  /* A real device executes zone management commands durably. */
  if (r == 0 && changed && backend->persist)
    r = persist_locked ();
  if (backend->persist)
    pthread_mutex_unlock (&persist_lock);
  return r;
}

/* Trim: every whole sequential zone in the range is reset.  Partial
 * zones and conventional zones are left alone (trim is advisory).
 */
static int
zbd_trim (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  uint64_t end = offset + count;
  bool changed = false;
  int r = 0;

  zone_ops_begin ();
  while (offset < end && r == 0) {
    struct zone *z = zone_of (offset);

    if (!z->conventional && offset == z->start && zone_end (z) <= end) {
      r = reset_zone (z);
      changed = true;
    }
    offset = zone_end (z);
  }
  return zone_ops_end (changed, r);
}

/* Write zeroes from the WP to the zone end (or to the capacity end)
 * finishes the zone.  Any other zero request writes zeros: through
 * the gate in sequential zones, directly in conventional ones.
 */
static int
zero_part (struct zone *z, uint32_t n, uint64_t offset)
{
  uint64_t end = offset + n;
  static const char zeros[65536];

  if (z->conventional)
    return backend->discard (n, offset);
  if (offset == current_wp (z) &&
      (end == zone_end (z) || end == zone_cap_end (z))) {
    int r;

    zone_ops_begin ();
    r = finish_zone (z);
    return zone_ops_end (true, r);
  }
  while (offset < end) {
    uint32_t k = end - offset < sizeof zeros ? end - offset : sizeof zeros;
    if (gated_write (z, zeros, k, offset) == -1)
      return -1;
    offset += k;
  }
  return 0;
}

static int
zbd_zero (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  if (check_aligned ("write zeroes", count, offset) == -1)
    return -1;
  while (count > 0) {
    struct zone *z = zone_of (offset);
    uint64_t end = zone_end (z);
    uint32_t n = end - offset < count ? end - offset : count;

    if (zero_part (z, n, offset) == -1)
      return -1;
    offset += n; count -= n;
  }
  return 0;
}

/* Block status: [start,WP) data, [WP,end) hole+zero in sequential
 * zones; conventional zones are data.
 */
static int
zbd_extents (void *handle, uint32_t count, uint64_t offset, uint32_t flags,
             struct nbdkit_extents *extents)
{
  uint64_t end = offset + count;

  while (offset < end) {
    struct zone *z = zone_of (offset);
    uint64_t wp = z->conventional ? zone_end (z) : current_wp (z);

    if (wp > z->start &&
        nbdkit_add_extent (extents, z->start, wp - z->start, 0) == -1)
      return -1;
    if (wp < zone_end (z) &&
        nbdkit_add_extent (extents, wp, zone_end (z) - wp,
                           NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO) == -1)
      return -1;
    offset = zone_end (z);
    if (flags & NBDKIT_FLAG_REQ_ONE)
      break;
  }
  return 0;
}

#define zbd_config_help \
  "[device=]PATH             A zoned block device (libzbd).\n" \
  "emulate=FILE|memory       Emulated host-managed zones instead.\n" \
  "size=SIZE                 (emulate) Disk size, a multiple of zone-size.\n" \
  "zone-size=SIZE            (emulate) Zone size.\n" \
  "zone-capacity=SIZE        (emulate) Writable part of each zone.\n" \
  "conventional-zones=N      (emulate) First N zones are conventional.\n" \
  "max-open-zones=N          (emulate) Open zone limit (0 = none).\n" \
  "max-active-zones=N        (emulate) Active zone limit (0 = none).\n" \
  "block-size=SIZE           (emulate) Logical block size (512).\n" \
  "reorder-timeout=DURATION  Wait for a write-pointer gap (5s)."

static struct nbdkit_plugin plugin = {
  .name               = "zbd",
  .longname           = "nbdkit zoned block device plugin",
  .version            = PACKAGE_VERSION,
  .unload             = zbd_unload,
  .config             = zbd_config,
  .config_complete    = zbd_config_complete,
  .config_help        = zbd_config_help,
  .magic_config_key   = "device",
  .get_ready          = zbd_get_ready,
  .dump_plugin        = zbd_dump_plugin,
  .open               = zbd_open_connection,
  .get_size           = zbd_get_size,
  .export_description = zbd_export_description,
  .block_size         = zbd_block_size,
  .can_write          = zbd_can_write,
  .can_flush          = zbd_can_true,
  .is_rotational      = zbd_is_rotational,
  .can_trim           = zbd_can_true,
  .can_zero           = zbd_can_true,
  .can_fua            = zbd_can_fua,
  .can_multi_conn     = zbd_can_true,
  .can_extents        = zbd_can_true,
  .pread              = zbd_pread,
  .pwrite             = zbd_pwrite,
  .flush              = zbd_flush,
  .trim               = zbd_trim,
  .zero               = zbd_zero,
  .extents            = zbd_extents,
  .errno_is_preserved = 1,
};

NBDKIT_REGISTER_PLUGIN (plugin)

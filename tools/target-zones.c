/* The zone state of nbdzone attach, shared by its queues (attach.h):
 * the client's write pointer of each zone, where zone appends are
 * placed, the writes and appends in flight per zone, and the re-read
 * of a zone's write pointer from the server after an error there.  An
 * append is given the zone's current write pointer, which advances at
 * once, so many appends of one zone are in flight together; after an
 * error, no append is placed until nothing of that zone is in flight
 * and its write pointer has been read again.
 */
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

#include <libnbd.h>

#include "attach.h"
#include "target-rules.h"

uint64_t
now_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + 1;
}

/* Read the WP of zone Z from the server (the connection of attach);
 * with ONLY_IF_STALE, only if the zone is still marked stale once the
 * connection is ours (another thread may have read it meanwhile, and a
 * second read could see the server's WP from before that thread's
 * appends landed).  The WP is stored under ctl_lock, so a read done
 * earlier by another thread cannot be stored after this one.
 */
int
refresh_wp (struct dev *d, uint64_t z, bool only_if_stale)
{
  uint64_t wp;
  bool wanted = true;
  char err[512];
  int r = 0;

  pthread_mutex_lock (&d->ctl_lock);
  if (only_if_stale) {
    pthread_mutex_lock (&d->zone_lock);
    wanted = d->zones[z].stale;
    pthread_mutex_unlock (&d->zone_lock);
  }
  if (wanted) {
    __atomic_store_n (&d->ctl_since_ms, now_ms (), __ATOMIC_RELAXED);
    r = zone_wps_sync (d->ctl.nbd, &d->ctl.l, z, 1, &wp, err, sizeof err);
    __atomic_store_n (&d->ctl_since_ms, 0, __ATOMIC_RELAXED);
    if (r == 0) {
      pthread_mutex_lock (&d->zone_lock);
      d->zones[z].wp = wp;
      d->zones[z].stale = false;
      d->zones[z].acked_wp = wp;
      if (wp > d->zones[z].sent_wp)
        d->zones[z].sent_wp = wp;
      pthread_mutex_unlock (&d->zone_lock);
    }
  }
  if (r == -1 && d->ctl.nbd && nbd_aio_is_dead (d->ctl.nbd) == 1) {
    pthread_mutex_unlock (&d->ctl_lock);
    /* The request waits for the reconnect if there is one. */
    link_broken (d, "the connection for write pointer queries broke");
    return -1;
  }
  pthread_mutex_unlock (&d->ctl_lock);
  if (r == -1)
    fprintf (stderr, "%s: cannot read the write pointer of zone %" PRIu64
             " from the server: %s\n", progname, z, err);
  return r;
}

int
query_wp (struct dev *d, uint64_t z, uint64_t *wp)
{
  char err[512];
  int r;

  pthread_mutex_lock (&d->ctl_lock);
  r = zone_wps_sync (d->ctl.nbd, &d->ctl.l, z, 1, wp, err, sizeof err);
  pthread_mutex_unlock (&d->ctl_lock);
  return r;
}

int
server_holds (struct dev *d, uint64_t off, uint32_t len, const void *data)
{
  void *buf = malloc (len);
  int r = -1;

  if (!buf)
    return -1;
  pthread_mutex_lock (&d->ctl_lock);
  __atomic_store_n (&d->ctl_since_ms, now_ms (), __ATOMIC_RELAXED);
  if (nbd_pread (d->ctl.nbd, buf, len, off, 0) == 0)
    r = memcmp (buf, data, len) == 0;
  else
    fprintf (stderr, "%s: cannot read back %" PRIu32 " bytes at offset %"
             PRIu64 ": %s\n", progname, len, off, nbd_get_error ());
  __atomic_store_n (&d->ctl_since_ms, 0, __ATOMIC_RELAXED);
  pthread_mutex_unlock (&d->ctl_lock);
  free (buf);
  return r;
}

void
mark_stale (struct dev *d, uint64_t z)
{
  pthread_mutex_lock (&d->zone_lock);
  d->zones[z].stale = true;
  pthread_mutex_unlock (&d->zone_lock);
}

/* Zones with a write pointer inside (the active ones), except EXCEPT. */
uint64_t
active_zones (struct dev *d, uint64_t except)
{
  uint64_t z, n = 0;

  pthread_mutex_lock (&d->zone_lock);
  for (z = 0; z < d->nr_zones; z++)
    if (z != except && !zone_is_conv (&d->ctl.l, z) &&
        d->zones[z].wp > zone_start (&d->ctl.l, z) &&
        d->zones[z].wp < zone_capend (d, z))
      n++;
  pthread_mutex_unlock (&d->zone_lock);
  return n;
}

/* The error the kernel gets for NBD error ERR on a write of LEN bytes
 * at OFF (target-rules.c decides).  The server says ENOSPC both past a
 * zone's capacity and at the open or active zone limit.
 */
int
write_error (struct dev *d, uint64_t off, uint64_t len, int err)
{
  uint64_t z = zone_of (d, off);
  struct write_fault f = {
    .err = err,
    .conventional = zone_is_conv (&d->ctl.l, z),
    .inside_capacity = off + len <= zone_capend (d, z),
    .max_open = d->ctl.l.g.max_open,
    .max_active = d->ctl.l.g.max_active,
  };

  if (err == ENOSPC && !f.conventional)
    f.active_others = active_zones (d, z);
  return kernel_write_error (&f);
}

/* Zone append: the zone's current WP, advanced at once; or an error.
 * After an error in the zone its WP is read again from the server, but
 * only once nothing is in flight there: a write still on its way may
 * yet land (the server's gate holds writes ahead of the WP for a while),
 * and a WP read before that would give its place to another append.
 * Until then the result is APPEND_WAIT.
 */
int
assign_append (struct tag_io *io, uint64_t *off)
{
  struct dev *d = io->q->d;
  uint64_t z = zone_of (d, io->off);
  bool stale;
  int r = 0;

  if (zone_is_conv (&d->ctl.l, z))
    return -EIO;
  pthread_mutex_lock (&d->zone_lock);
  stale = d->zones[z].stale;
  if (stale && (d->zones[z].appends || d->zones[z].writes))
    r = APPEND_WAIT;
  pthread_mutex_unlock (&d->zone_lock);
  if (r)
    return r;
  if (stale && refresh_wp (d, z, true) == -1)
    return -EIO;
  pthread_mutex_lock (&d->zone_lock);
  if (d->zones[z].stale)
    r = APPEND_WAIT;            /* another error came in meanwhile */
  else if (d->zones[z].wp + io->len > zone_capend (d, z))
    r = -ENOSPC;
  else {
    *off = d->zones[z].wp;
    d->zones[z].wp += io->len;
    if (d->zones[z].wp > d->zones[z].sent_wp)
      d->zones[z].sent_wp = d->zones[z].wp;
    d->appends++;
    if (++d->zones[z].appends > d->max_appends)
      d->max_appends = d->zones[z].appends;
  }
  pthread_mutex_unlock (&d->zone_lock);
  if (r == -ENOSPC)
    fprintf (stderr, "%s: zone append of %" PRIu32 " bytes to zone %"
             PRIu64 " does not fit below its capacity\n", progname,
             io->len, z);
  return r;
}

/* A write (APPEND: an append placed before a takeover) of LEN at OFF
 * goes out: the client's WP of its zone moves along, and it counts as
 * in flight there.
 */
static void
note_sent (struct dev *d, uint64_t off, uint32_t len, bool append)
{
  uint64_t z = zone_of (d, off);

  if (zone_is_conv (&d->ctl.l, z))
    return;
  pthread_mutex_lock (&d->zone_lock);
  if (off + len > d->zones[z].wp)
    d->zones[z].wp = off + len;
  if (off + len > d->zones[z].sent_wp)
    d->zones[z].sent_wp = off + len;
  if (append)
    d->zones[z].appends++;
  else
    d->zones[z].writes++;
  pthread_mutex_unlock (&d->zone_lock);
}

void
note_write (struct dev *d, uint64_t off, uint32_t len)
{
  note_sent (d, off, len, false);
}

void
note_landed_append (struct dev *d, uint64_t off, uint32_t len)
{
  note_sent (d, off, len, true);
}

/* A write or append to sequential zone Z is done; after an error the
 * zone's WP is unknown.  One step, so no append is assigned in between.
 */
void
zone_write_done (struct dev *d, uint64_t z, bool append, bool failed)
{
  pthread_mutex_lock (&d->zone_lock);
  if (append)
    d->zones[z].appends--;
  else
    d->zones[z].writes--;
  if (failed)
    d->zones[z].stale = true;
  pthread_mutex_unlock (&d->zone_lock);
}

void
zone_acked (struct dev *d, uint64_t z, uint64_t end)
{
  pthread_mutex_lock (&d->zone_lock);
  if (end > d->zones[z].acked_wp)
    d->zones[z].acked_wp = end;
  pthread_mutex_unlock (&d->zone_lock);
}

int
read_wps_into (struct dev *d, uint64_t *wps)
{
  char err[512];
  int r;

  __atomic_store_n (&d->ctl_since_ms, now_ms (), __ATOMIC_RELAXED);
  r = zone_wps_sync (d->ctl.nbd, &d->ctl.l, 0, d->nr_zones, wps,
                     err, sizeof err);
  __atomic_store_n (&d->ctl_since_ms, 0, __ATOMIC_RELAXED);
  if (r == -1)
    fprintf (stderr, "%s: %s: cannot read the write pointers: %s\n",
             progname, d->ctl.uri, err);
  return r;
}

int
read_all_wps (struct dev *d)
{
  uint64_t *wps = calloc (d->nr_zones, sizeof *wps), z;

  if (!wps || read_wps_into (d, wps) == -1) {
    free (wps);
    return -1;
  }
  for (z = 0; z < d->nr_zones; z++)
    d->zones[z].wp = d->zones[z].acked_wp = d->zones[z].sent_wp = wps[z];
  free (wps);
  return 0;
}

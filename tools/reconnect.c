/* nbdzone attach --reconnect: a broken connection is made again, and the
 * requests it carried are completed or sent again, with nothing failed
 * to the kernel, when the server that comes back is the same disk with
 * the same key (attach.h).
 *
 * How it works.  Whoever sees the connection break (a queue whose NBD
 * commands fail on a dead connection, the reply timeout, a failed WP
 * query) calls link_broken: the link goes from UP to BROKEN and every
 * socket is shut down, so that each queue's commands in flight come
 * back at once.  A request whose commands failed so is held (its tag
 * stays with this process, the kernel waits), a request that arrives
 * meanwhile is deferred; when a queue has nothing left on the wire it
 * parks.  The reconnect thread waits for every queue to park, then
 * connects again with a bounded backoff until --reconnect seconds have
 * passed since the break: a control connection and one per queue.  It
 * checks that the server is the one it was (same_disk: size, zone
 * geometry, disk-id, key-check), reads every zone's WP, and lets
 * resend.c decide, per held request and for the whole device at once,
 * whether it landed (complete it), must be sent again (whole or its
 * tail), or whether nothing may be resumed (a server that lost
 * acknowledged writes, or another writer).  Then the link is UP again
 * and the queues send what was decided, in WP order within each zone,
 * then the deferred requests.  Anything else (another disk, another
 * key, the time up, a signal to detach) makes the link GONE: held and
 * deferred requests fail with EIO, as without --reconnect, and the
 * device stays for detach.
 *
 * Why this is safe with a zoned disk when it is not with a plain one:
 * the server writes a sequential zone only at its WP, so after the
 * break the zone's WP says exactly which prefix of the writes in
 * flight landed.  It needs one writer per export: the zbd plugin takes
 * the drive or image for one server only, and this client is the only
 * one writing through it (documented in nbdzone(1)); a WP beyond what
 * this client wrote is refused as another writer's.
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
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <libnbd.h>

#include "attach.h"

int
link_state (struct dev *d)
{
  return __atomic_load_n (&d->link, __ATOMIC_ACQUIRE);
}

static void
shut_sockets (struct dev *d)
{
  int i;

  for (i = 0; i < d->nr_queues; i++)
    if (d->queues[i].started && d->queues[i].nbd_fd >= 0)
      shutdown (d->queues[i].nbd_fd, SHUT_RDWR);
  if (d->ctl_fd >= 0)
    shutdown (d->ctl_fd, SHUT_RDWR);
}

bool
link_broken (struct dev *d, const char *why)
{
  bool held;

  if (d->reconnect_s == 0)
    return false;
  pthread_mutex_lock (&d->link_lock);
  if (d->link == LINK_UP) {
    d->broke_ms = now_ms ();
    __atomic_store_n (&d->link, LINK_BROKEN, __ATOMIC_RELEASE);
    fprintf (stderr, "%s: /dev/ublkb%d: the connection to %s broke (%s); "
             "holding every request for up to %u s while reconnecting\n",
             progname, d->id, d->ctl.uri, why, d->reconnect_s);
    shut_sockets (d);
    pthread_cond_broadcast (&d->link_cond);
  }
  held = d->link == LINK_BROKEN;
  pthread_mutex_unlock (&d->link_lock);
  return held;
}

static bool
connection_lost (struct queue *q)
{
  return nbd_aio_is_dead (q->nbd) == 1 || nbd_aio_is_closed (q->nbd) == 1;
}

bool
hold_for_reconnect (struct tag_io *io)
{
  struct queue *q = io->q;

  if (!connection_lost (q) && link_state (q->d) != LINK_BROKEN)
    return false;               /* the server's own answer */
  if (!link_broken (q->d, nbd_get_error () ? nbd_get_error ()
                    : strerror (io->err)))
    return false;
  io->held = true;
  return true;
}

/* Nothing of Q's left on the wire: every command came back. */
static bool
queue_quiet (const struct queue *q)
{
  int t;

  if (q->poll_in || q->poll_out)
    return false;
  for (t = 0; t < q->d->depth; t++)
    if (q->ios[t].pending)
      return false;
  return true;
}

/* What held request IO is, for resend.c. */
static void
held_rq (const struct dev *d, const struct tag_io *io, struct rq *q)
{
  q->zone = zone_of (d, io->off);
  q->start = io->off;
  q->end = io->off + io->len;
  q->fua = (io->op_flags & UBLK_IO_F_FUA) != 0;
  switch (io->op) {
  case UBLK_IO_OP_WRITE: q->kind = RQ_WRITE; break;
  case UBLK_IO_OP_ZONE_APPEND:
    q->kind = RQ_APPEND;
    q->start = io->append_off;
    q->end = io->append_off + io->len;
    break;
  case UBLK_IO_OP_FLUSH: q->kind = RQ_FLUSH; break;
  case UBLK_IO_OP_ZONE_RESET: q->kind = RQ_RESET; break;
  case UBLK_IO_OP_ZONE_RESET_ALL: q->kind = RQ_RESET_ALL; break;
  case UBLK_IO_OP_ZONE_FINISH: q->kind = RQ_FINISH; break;
  case UBLK_IO_OP_REPORT_ZONES: q->kind = RQ_REPORT; break;
  default: q->kind = RQ_READ; break;
  }
}

/* After the reconnect (or the giving up): the held requests as
 * decided, in the order decided, then the deferred ones.
 */
static void
resume_queue (struct queue *q, bool gone)
{
  struct dev *d = q->d;
  int t, r;

  for (t = 0; t < d->depth; t++) {
    struct tag_io *io = &q->ios[t];

    if (io->held && gone) {
      io->held = false;
      finish_io (io);           /* fails it, as without --reconnect */
    }
  }
  if (!gone) {
    /* resend_order over this queue's held tags, by zone and offset. */
    size_t n = 0, i, *order = calloc (d->depth, sizeof *order);
    struct rq *rqs = calloc (d->depth, sizeof *rqs);
    struct verdict *v = calloc (d->depth, sizeof *v);
    int *tags = calloc (d->depth, sizeof *tags);

    if (!order || !rqs || !v || !tags) {
      for (t = 0; t < d->depth; t++)
        if (q->ios[t].held)
          resend_io (&q->ios[t]);
    }
    else {
      for (t = 0; t < d->depth; t++)
        if (q->ios[t].held) {
          held_rq (d, &q->ios[t], &rqs[n]);
          v[n] = q->ios[t].v;
          tags[n++] = t;
          if (q->ios[t].v.kind == V_COMPLETE)
            resend_io (&q->ios[t]);     /* resend_order leaves it out */
        }
      n = resend_order (rqs, v, n, order);
      for (i = 0; i < n; i++)
        resend_io (&q->ios[tags[order[i]]]);
    }
    free (order);
    free (rqs);
    free (v);
    free (tags);
  }
  for (t = 0; t < d->depth; t++) {
    struct tag_io *io = &q->ios[t];

    if (!io->deferred)
      continue;
    io->deferred = false;
    r = start_io (io);
    if (r != 1) {
      if (r < 0)
        log_failure (io, io->off, -r, r);
      commit (io, r, 0);
    }
  }
  __atomic_store_n (&q->last_reply_ms, now_ms (), __ATOMIC_RELAXED);
}

void
park_if_broken (struct queue *q)
{
  struct dev *d = q->d;
  unsigned gen;
  bool gone;

  /* A server that closed an idle connection (a clean restart): the
   * reconnect starts now, not at the next request.
   */
  if (d->reconnect_s && link_state (d) == LINK_UP && connection_lost (q))
    link_broken (d, "the server closed the connection");
  if (link_state (d) != LINK_BROKEN || !queue_quiet (q))
    return;
  pthread_mutex_lock (&d->link_lock);
  gen = d->generation;
  q->parked = true;
  d->parked++;
  pthread_cond_broadcast (&d->link_cond);
  while (d->link == LINK_BROKEN && d->generation == gen)
    pthread_cond_wait (&d->link_cond, &d->link_lock);
  d->parked--;
  q->parked = false;
  gone = d->link == LINK_GONE;
  pthread_mutex_unlock (&d->link_lock);
  resume_queue (q, gone);
}

/* What the server's WPS say of every held request of every queue: the
 * verdicts go into the tags.  -1 (WHY) if nothing may be resumed.
 */
static int
decide_held (struct dev *d, const uint64_t *wps, size_t *held, size_t *resent,
             char *why, size_t whylen)
{
  size_t cap = (size_t) d->nr_queues * d->depth, n = 0, i;
  struct rq *rqs = calloc (cap ? cap : 1, sizeof *rqs);
  struct verdict *v = calloc (cap ? cap : 1, sizeof *v);
  struct tag_io **ios = calloc (cap ? cap : 1, sizeof *ios);
  struct zone_view *zv = calloc (d->nr_zones, sizeof *zv);
  uint64_t z;
  int qi, t, r = -1;

  if (!rqs || !v || !ios || !zv) {
    snprintf (why, whylen, "out of memory");
    goto out;
  }
  pthread_mutex_lock (&d->zone_lock);
  for (z = 0; z < d->nr_zones; z++) {
    zv[z].conventional = zone_is_conv (&d->ctl.l, z);
    zv[z].unwritable = zone_is_unwritable (&d->ctl.l, z);
    zv[z].start = zone_start (&d->ctl.l, z);
    zv[z].capend = zone_capend (d, z);
    zv[z].acked_wp = d->zones[z].acked_wp;
    zv[z].written_wp = d->zones[z].sent_wp;
    zv[z].wp_now = wps[z];
  }
  pthread_mutex_unlock (&d->zone_lock);
  for (qi = 0; qi < d->nr_queues; qi++)
    for (t = 0; t < d->depth; t++) {
      struct tag_io *io = &d->queues[qi].ios[t];
      if (!io->held)
        continue;
      held_rq (d, io, &rqs[n]);
      ios[n++] = io;
    }
  if (resend_decide (zv, d->nr_zones, rqs, n, v, why, whylen) == -1)
    goto out;
  *held = n;
  *resent = 0;
  for (i = 0; i < n; i++) {
    ios[i]->v = v[i];
    *resent += v[i].kind != V_COMPLETE;
  }
  r = 0;
 out:
  free (rqs);
  free (v);
  free (ios);
  free (zv);
  return r;
}

static bool
time_up (struct dev *d)
{
  return __atomic_load_n (&d->reconnector_stop, __ATOMIC_RELAXED) ||
    got_signal || d->stop ||
    now_ms () - d->broke_ms >= (uint64_t) d->reconnect_s * 1000;
}

/* New connections in place of the dead ones: 0; 1 to try again
 * (WHY); -1 if it must never be resumed (WHY).
 */
static int
try_reconnect (struct dev *d, uint64_t *wps, char *why, size_t whylen)
{
  uint64_t left = (uint64_t) d->reconnect_s * 1000 - (now_ms () - d->broke_ms);
  unsigned handshake_s = left / 1000 + 1;
  struct nbd_handle **h = calloc (d->nr_queues, sizeof *h);
  struct disk now;
  int i, r = 1;

  if (d->timeout_s && d->timeout_s < handshake_s)
    handshake_s = d->timeout_s;
  if (!h) {
    snprintf (why, whylen, "out of memory");
    return 1;
  }
  if (reconnect_disk (&now, d->ctl.uri, handshake_s, &got_signal,
                      why, whylen) == -1) {
    free (h);
    return 1;
  }
  if (!same_disk (&d->ctl, &now, why, whylen)) {
    r = -1;
    goto out;
  }
  for (i = 0; i < d->nr_queues; i++) {
    h[i] = nbdzone_connect (d->ctl.uri, handshake_s, &got_signal, why,
                            whylen);
    if (!h[i])
      goto out;
    nbd_set_pread_initialize (h[i], false);
  }
  /* The new control connection reads the WPs (read_wps_into). */
  pthread_mutex_lock (&d->ctl_lock);
  nbd_close (d->ctl.nbd);
  d->ctl.nbd = now.nbd;
  now.nbd = NULL;
  if (d->ctl_fd >= 0)
    close (d->ctl_fd);
  d->ctl_fd = dup (nbd_aio_get_fd (d->ctl.nbd));
  pthread_mutex_unlock (&d->ctl_lock);
  if (read_wps_into (d, wps) == -1) {
    snprintf (why, whylen, "the write pointers could not be read");
    goto out;
  }
  /* Every queue is parked: its handle is ours to replace. */
  for (i = 0; i < d->nr_queues; i++) {
    struct queue *q = &d->queues[i];

    nbd_close (q->nbd);
    q->nbd = h[i];
    h[i] = NULL;
    if (q->nbd_fd >= 0)
      close (q->nbd_fd);
    q->nbd_fd = dup (nbd_aio_get_fd (q->nbd));
  }
  r = 0;
 out:
  for (i = 0; i < d->nr_queues; i++)
    if (h[i])
      nbd_close (h[i]);
  free (h);
  if (now.nbd)
    nbd_close (now.nbd);
  zoned_geometry_free (&now.l.g);
  return r;
}

/* The link ends (GONE or UP again): wake the parked queues. */
static void
set_link (struct dev *d, int state)
{
  pthread_mutex_lock (&d->link_lock);
  if (state == LINK_UP) {
    d->generation++;
    d->timed_out = false;
  }
  __atomic_store_n (&d->link, state, __ATOMIC_RELEASE);
  pthread_cond_broadcast (&d->link_cond);
  pthread_mutex_unlock (&d->link_lock);
}

/* Wait until the link is BROKEN and every started queue has parked;
 * false if asked to stop meanwhile.
 */
static bool
wait_for_break (struct dev *d)
{
  struct timespec ts;
  bool ready = false;
  int started = 0, i;

  for (i = 0; i < d->nr_queues; i++)
    started += d->queues[i].started;
  pthread_mutex_lock (&d->link_lock);
  while (!__atomic_load_n (&d->reconnector_stop, __ATOMIC_RELAXED)) {
    if (d->link == LINK_BROKEN && d->parked == started) {
      ready = true;
      break;
    }
    if (d->link == LINK_BROKEN && time_up (d))
      break;
    clock_gettime (CLOCK_REALTIME, &ts);
    ts.tv_nsec += 100 * 1000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait (&d->link_cond, &d->link_lock, &ts);
  }
  pthread_mutex_unlock (&d->link_lock);
  return ready;
}

/* Every queue is parked: end its broken connection now, abortively.
 * What it still had queued in this host's TCP stack (a write sent as
 * the network went down) would otherwise go on being retransmitted
 * after a shutdown, and even after a close, and could reach the server
 * once the link is back and after the resumed requests: a write to a
 * conventional zone would then land over a newer one.  SO_LINGER with
 * no time makes the close discard it (and send a reset).  The handle
 * that takes its place is not connected: a request sent on it fails,
 * as on a dead connection.
 */
static void
abort_broken_connections (struct dev *d)
{
  static const struct linger discard = { .l_onoff = 1, .l_linger = 0 };
  int i;

  for (i = 0; i < d->nr_queues; i++) {
    struct queue *q = &d->queues[i];
    struct nbd_handle *unconnected;

    if (!q->started || q->nbd_fd < 0 || !(unconnected = nbd_create ()))
      continue;
    setsockopt (q->nbd_fd, SOL_SOCKET, SO_LINGER, &discard, sizeof discard);
    nbd_close (q->nbd);
    close (q->nbd_fd);
    q->nbd = unconnected;
    q->nbd_fd = -1;
  }
}

/* The server is the same disk but nothing may be resumed on it (a WP
 * that lost acknowledged writes, or another writer's): the connections
 * just made end before anything goes out on them, as the broken ones
 * did.  Without this, the requests the kernel hands over from now on
 * would reach that server (a write to a conventional zone would land)
 * where the log promises EIO.  The queues are still parked.
 */
static void
drop_new_connections (struct dev *d)
{
  abort_broken_connections (d);
  pthread_mutex_lock (&d->ctl_lock);
  if (d->ctl_fd >= 0)
    shutdown (d->ctl_fd, SHUT_RDWR);
  pthread_mutex_unlock (&d->ctl_lock);
}

static void
reconnect_once (struct dev *d, uint64_t *wps)
{
  unsigned backoff_ms = 100, tries = 0;
  size_t held = 0, resent = 0;
  char why[600];
  int r;

  abort_broken_connections (d);
  while (!time_up (d)) {
    tries++;
    r = try_reconnect (d, wps, why, sizeof why);
    if (r == 0 && decide_held (d, wps, &held, &resent, why, sizeof why) == -1) {
      drop_new_connections (d);
      r = -1;
    }
    if (r == 0) {
      fprintf (stderr, "%s: /dev/ublkb%d: reconnected to %s after %" PRIu64
               " ms (%u attempts): %zu requests were held, %zu sent again, "
               "%zu had landed\n", progname, d->id, d->ctl.uri,
               now_ms () - d->broke_ms, tries, held, resent, held - resent);
      set_link (d, LINK_UP);
      return;
    }
    if (r == -1) {
      fprintf (stderr, "%s: /dev/ublkb%d: not resuming on %s: %s; every "
               "held request fails with EIO, and so does every new one "
               "until detach\n", progname, d->id, d->ctl.uri, why);
      set_link (d, LINK_GONE);
      return;
    }
    fprintf (stderr, "%s: /dev/ublkb%d: reconnect attempt %u failed: %s; "
             "trying again in %u ms\n", progname, d->id, tries, why,
             backoff_ms);
    for (unsigned slept = 0; slept < backoff_ms && !time_up (d); slept += 50)
      usleep (50000);
    backoff_ms = backoff_ms * 2 < 5000 ? backoff_ms * 2 : 5000;
  }
  fprintf (stderr, "%s: /dev/ublkb%d: no connection to %s for %u s "
           "(--reconnect): every held request fails with EIO, and so does "
           "every new one until detach\n", progname, d->id, d->ctl.uri,
           d->reconnect_s);
  set_link (d, LINK_GONE);
}

static void *
reconnect_thread (void *arg)
{
  struct dev *d = arg;
  uint64_t *wps = calloc (d->nr_zones, sizeof *wps);

  while (!__atomic_load_n (&d->reconnector_stop, __ATOMIC_RELAXED)) {
    if (!wait_for_break (d)) {
      if (link_state (d) == LINK_BROKEN && time_up (d)) {
        fprintf (stderr, "%s: /dev/ublkb%d: giving up the reconnect: every "
                 "held request fails with EIO\n", progname, d->id);
        set_link (d, LINK_GONE);
      }
      if (link_state (d) == LINK_GONE)
        break;
      continue;
    }
    if (!wps) {
      set_link (d, LINK_GONE);
      break;
    }
    reconnect_once (d, wps);
    if (link_state (d) == LINK_GONE)
      break;
  }
  free (wps);
  return NULL;
}

void
start_reconnector (struct dev *d)
{
  if (d->reconnect_s == 0)
    return;
  if (pthread_create (&d->reconnector, NULL, reconnect_thread, d) == 0)
    d->reconnector_started = true;
  else
    d->reconnect_s = 0;         /* as without --reconnect */
}

void
stop_reconnector (struct dev *d)
{
  if (!d->reconnector_started)
    return;
  __atomic_store_n (&d->reconnector_stop, true, __ATOMIC_RELAXED);
  pthread_mutex_lock (&d->link_lock);
  if (d->link == LINK_BROKEN)
    __atomic_store_n (&d->link, LINK_GONE, __ATOMIC_RELEASE);
  pthread_cond_broadcast (&d->link_cond);
  pthread_mutex_unlock (&d->link_lock);
  pthread_join (d->reconnector, NULL);
  d->reconnector_started = false;
}

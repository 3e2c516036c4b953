/* The NBD target of nbdzone attach (attach.h): each request the kernel
 * hands over becomes NBD requests as in the zbd plugin's profile.
 * Reads and writes are NBD reads and writes (FUA passed on), flush is
 * flush, a zone report is built from block status (zone-report.c, as
 * "nbdzone report"), reset is trim of whole zones, finish is
 * write-zeroes from the write pointer to the capacity, open and close
 * are accepted and do nothing, and zone append is a write at the place
 * target-zones.c gives it.  Everything is sent with libnbd's
 * asynchronous API, many requests in flight: libnbd's callbacks only
 * note results (the handle cannot be used from inside them), and the
 * queue thread finishes ready requests afterwards (finish_io).
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

#include <liburing.h>
#include <libnbd.h>

#include "attach.h"

const char *
op_name (uint8_t op)
{
  switch (op) {
  case UBLK_IO_OP_READ: return "read";
  case UBLK_IO_OP_WRITE: return "write";
  case UBLK_IO_OP_FLUSH: return "flush";
  case UBLK_IO_OP_ZONE_APPEND: return "zone append";
  case UBLK_IO_OP_ZONE_RESET: return "zone reset";
  case UBLK_IO_OP_ZONE_RESET_ALL: return "zone reset-all";
  case UBLK_IO_OP_ZONE_FINISH: return "zone finish";
  case UBLK_IO_OP_REPORT_ZONES: return "zone report";
  default: return "request";
  }
}

void
commit (struct tag_io *io, int result, uint64_t append_lba)
{
  struct queue *q = io->q;

  ublk_io_cmd (&q->ring, q->d->cdev, UBLK_U_IO_COMMIT_AND_FETCH_REQ, q->id,
               io->tag, result, append_lba);
  journal_clear (io);
  __atomic_store_n (&io->since_ms, 0, __ATOMIC_RELEASE);
  q->busy--;
}

/* What the kernel is told, for the log: the server's error alone does
 * not say it (ENOSPC from the server may reach the kernel as a zone
 * resource error).
 */
static const char *
kernel_error_name (int kernel_err)
{
  switch (-kernel_err) {
  case EOVERFLOW:    return "active zone limit reached (EOVERFLOW)";
  case ETOOMANYREFS: return "open zone limit reached (ETOOMANYREFS)";
  case ENOSPC:       return "past the zone capacity (ENOSPC)";
  case EIO:          return "I/O error (EIO)";
  default:           return strerror (-kernel_err);
  }
}

/* One line per failed request: what, where, the server's error, and
 * the error handed to the kernel.
 */
void
log_failure (const struct tag_io *io, uint64_t off, int err, int kernel_err)
{
  fprintf (stderr, "%s: %s of %" PRIu32 " bytes at offset %" PRIu64
           " (zone %" PRIu64 ") failed: %s; the kernel is told: %s\n",
           progname, op_name (io->op), io->len, off,
           off / io->q->d->ctl.l.g.zone_size, strerror (err),
           kernel_error_name (kernel_err));
}

/* libnbd calls these from inside its own functions, where the handle
 * cannot be used: they only note the result for finish_io.
 */
static void
push_ready (struct tag_io *io)
{
  if (!io->ready) {
    io->ready = true;
    io->next_ready = io->q->ready;
    io->q->ready = io;
  }
}

static void
make_ready (struct tag_io *io)
{
  if (--io->pending == 0)
    push_ready (io);
}

static int
nbd_done (void *opaque, int *error)
{
  struct tag_io *io = opaque;

  __atomic_store_n (&io->q->last_reply_ms, now_ms (), __ATOMIC_RELAXED);
  if (*error && !io->err)
    io->err = *error;
  make_ready (io);
  return 1;
}

static int
scan_extents (void *opaque, const char *metacontext, uint64_t offset,
              uint32_t *entries, size_t nr_entries, int *error)
{
  struct tag_io *io = opaque;

  if (strcmp (metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0)
    wp_scan_extents (&io->scan, offset, entries, nr_entries);
  return 0;
}

/* After an nbd_aio_* call: -1 means it was not sent (dead connection). */
static void
sent (struct tag_io *io, int64_t cookie)
{
  if (cookie == -1) {
    if (!io->err)
      io->err = nbd_get_errno () ? nbd_get_errno () : EIO;
    make_ready (io);
  }
}

static nbd_completion_callback
done_cb (struct tag_io *io)
{
  return (nbd_completion_callback) { .callback = nbd_done, .user_data = io };
}

static void
send_write (struct tag_io *io, uint64_t off)
{
  struct dev *d = io->q->d;
  uint32_t flags = (io->op_flags & UBLK_IO_F_FUA) && d->can_fua ?
    LIBNBD_CMD_FLAG_FUA : 0;

  io->pending++;
  sent (io, nbd_aio_pwrite (io->q->nbd, io->buf, io->len, off,
                            done_cb (io), flags));
}

/* Reset zones [FIRST, END): trims sent together.  A trim that cannot
 * be sent (dead connection) fails the request and the rest are not
 * sent.  The request holds one count of its own on pending while
 * sending, so it is finished exactly once, through the ready list, when
 * the last trim is done, however many failed at once.
 */
static void
send_trim_zones (struct tag_io *io, uint64_t first, uint64_t end)
{
  struct dev *d = io->q->d;
  uint64_t off, len;

  io->pending++;
  while (!io->err && zone_trim_next (&d->ctl.l, &first, end, &off, &len)) {
    io->pending++;
    sent (io, nbd_aio_trim (io->q->nbd, len, off, done_cb (io), 0));
  }
  make_ready (io);
}

static void
report_step (struct tag_io *io)
{
  uint64_t off, len;

  io->scan_before = io->scan.pos;
  if (!wp_scan_next (&io->scan, &off, &len))
    return;
  io->pending++;
  sent (io, nbd_aio_block_status (io->q->nbd, len, off,
                                  (nbd_extent_callback) {
                                    .callback = scan_extents,
                                    .user_data = io },
                                  done_cb (io), 0));
}

static int
read_request_data (struct tag_io *io)
{
  ssize_t r = pread (io->q->d->cdev, io->buf, io->len,
                     ublk_user_copy_pos (io->q->id, io->tag));

  if (r != (ssize_t) io->len) {
    fprintf (stderr, "%s: cannot read the data of a %s at offset %" PRIu64
             " from the kernel: %s\n", progname, op_name (io->op), io->off,
             r == -1 ? strerror (errno) : "short read");
    return -1;
  }
  return 0;
}

/* Appends held by assign_append, in arrival order. */
static void
hold_append (struct tag_io *io)
{
  struct queue *q = io->q;

  /* Not waiting on the server: the reply timeout leaves it alone (the
   * writes it waits for are timed).
   */
  __atomic_store_n (&io->since_ms, 0, __ATOMIC_RELEASE);
  io->next_waiting = NULL;
  if (q->waiting_tail)
    q->waiting_tail->next_waiting = io;
  else
    q->waiting = io;
  q->waiting_tail = io;
}

void
retry_held_appends (struct queue *q)
{
  struct tag_io *io = q->waiting;

  q->waiting = q->waiting_tail = NULL;
  while (io) {
    struct tag_io *next = io->next_waiting;
    int r = assign_append (io, &io->append_off);

    if (r == APPEND_WAIT)
      hold_append (io);
    else if (r) {
      log_failure (io, io->off, -r, r);
      commit (io, r, 0);
    }
    else {
      __atomic_store_n (&io->since_ms, now_ms (), __ATOMIC_RELEASE);
      journal_note (io, io->append_off);
      send_write (io, io->append_off);
    }
    io = next;
  }
}

/* After --recover, the kernel hands over again the writes the process
 * before had taken.  Those below the WP a zone had at the takeover had
 * landed (attach-recover.c): complete them once their bytes are seen
 * on the server, and send only the part of a write above that WP.
 * Returns 0 for any other write.
 */
static uint64_t
recovered_wp (struct dev *d, uint64_t z)
{
  uint64_t wp;

  pthread_mutex_lock (&d->zone_lock);
  wp = d->zones[z].recovered_wp;
  pthread_mutex_unlock (&d->zone_lock);
  return wp;
}

/* Request IO (a write, or an append the process before put at AT) had
 * landed below BELOW, the zone's WP at the takeover: complete it, after
 * sending the part above BELOW if any.  Its landed bytes were checked.
 */
static int
complete_landed (struct tag_io *io, uint64_t at, uint64_t below)
{
  uint64_t end = at + io->len;
  uint32_t flags = (io->op_flags & UBLK_IO_F_FUA) && io->q->d->can_fua ?
    LIBNBD_CMD_FLAG_FUA : 0;

  io->resent = true;
  /* Its FUA may have been lost with the process before. */
  io->flush_after = flags != 0;
  if (below >= end) {
    push_ready (io);
    return 1;
  }
  io->pending++;
  sent (io, nbd_aio_pwrite (io->q->nbd, (char *) io->buf + (below - at),
                            end - below, below, done_cb (io), flags));
  return 1;
}

int
recovered_write (struct tag_io *io)
{
  struct dev *d = io->q->d;
  uint64_t z = zone_of (d, io->off), end = io->off + io->len, below;
  int same;

  if (!d->recovering || z >= d->nr_zones || zone_is_conv (&d->ctl.l, z))
    return 0;
  below = recovered_wp (d, z);
  if (io->off >= below)
    return 0;
  same = server_holds (d, io->off, (below < end ? below : end) - io->off,
                       io->buf);
  if (same != 1) {
    if (same == 0)
      fprintf (stderr, "%s: a write handed over again after the recovery, "
               "%" PRIu32 " bytes at offset %" PRIu64 " in zone %" PRIu64
               ", lies below the zone's write pointer but the zone holds "
               "other bytes there: it fails\n", progname, io->len, io->off,
               z);
    return -EIO;
  }
  note_write (d, io->off, io->len);
  return complete_landed (io, io->off, below);
}

/* An append handed over again that the process before had sent and
 * that landed: its place, from the append journal (attach-recover.c).
 */
static int
recovered_append (struct tag_io *io)
{
  struct dev *d = io->q->d;
  uint64_t at;

  if (!d->recovering || !d->nr_landed || !claim_landed_append (io, &at))
    return 0;
  io->append_off = at;
  note_landed_append (d, at, io->len);
  return complete_landed (io, at, recovered_wp (d, zone_of (d, at)));
}

/* No write below a reset zone's start is one handed over again. */
static void
recovery_forget (struct dev *d, uint64_t first, uint64_t end)
{
  uint64_t z;

  if (!d->recovering)
    return;
  pthread_mutex_lock (&d->zone_lock);
  for (z = first; z < end && z < d->nr_zones; z++)
    d->zones[z].recovered_wp = 0;
  pthread_mutex_unlock (&d->zone_lock);
}

/* Start serving a request the kernel handed over on tag IO->tag.
 * Returns the result to commit at once, or 1 if NBD commands are out.
 */
int
start_io (struct tag_io *io)
{
  struct queue *q = io->q;
  struct dev *d = q->d;
  const struct ublksrv_io_desc *iod = &q->iods[io->tag];
  uint64_t z, wp;

  io->op = ublksrv_get_op (iod);
  /* The UBLK_IO_F_* bits are defined at their places in op_flags
   * (ublksrv_get_flags shifts them away from those).
   */
  io->op_flags = iod->op_flags;
  io->off = iod->start_sector << 9;
  io->len = iod->nr_sectors << 9;
  io->err = 0;
  io->pending = 0;
  io->ready = false;
  io->resent = false;
  __atomic_store_n (&io->since_ms, now_ms (), __ATOMIC_RELEASE);
  z = zone_of (d, io->off);
  if (!io->buf && posix_memalign (&io->buf, 4096, d->max_io) != 0) {
    io->buf = NULL;
    return -ENOMEM;
  }

  switch (io->op) {
  case UBLK_IO_OP_READ:
    if (io->len > d->max_io)
      return -EIO;
    io->pending++;
    sent (io, nbd_aio_pread (q->nbd, io->buf, io->len, io->off,
                             done_cb (io), 0));
    return 1;
  case UBLK_IO_OP_WRITE: {
    int r;

    if (io->len > d->max_io || read_request_data (io) == -1)
      return -EIO;
    if ((r = recovered_write (io)) != 0)
      return r;
    note_write (d, io->off, io->len);
    send_write (io, io->off);
    return 1;
  }
  case UBLK_IO_OP_ZONE_APPEND: {
    int r;

    if (io->len > d->max_io || read_request_data (io) == -1)
      return -EIO;
    if ((r = recovered_append (io)) != 0)
      return r;
    r = assign_append (io, &io->append_off);
    if (r == APPEND_WAIT) {
      hold_append (io);
      return 1;
    }
    if (r)
      return r;
    journal_note (io, io->append_off);
    send_write (io, io->append_off);
    return 1;
  }
  case UBLK_IO_OP_FLUSH:
    if (!d->can_flush)
      return 0;
    io->pending++;
    sent (io, nbd_aio_flush (q->nbd, done_cb (io), 0));
    return 1;
  case UBLK_IO_OP_ZONE_OPEN:
  case UBLK_IO_OP_ZONE_CLOSE:
    return 0;                   /* NBD cannot express them */
  case UBLK_IO_OP_ZONE_RESET:
    if (z >= d->nr_zones || zone_is_conv (&d->ctl.l, z))
      return -EIO;
    if (zone_is_unwritable (&d->ctl.l, z)) {
      fprintf (stderr, "%s: zone %" PRIu64 " is read-only or offline on the "
               "server's device: it cannot be reset\n", progname, z);
      return -EIO;
    }
    recovery_forget (d, z, z + 1);
    send_trim_zones (io, z, z + 1);
    return 1;
  case UBLK_IO_OP_ZONE_RESET_ALL:
    recovery_forget (d, 0, d->nr_zones);
    send_trim_zones (io, 0, d->nr_zones);
    return 1;
  case UBLK_IO_OP_ZONE_FINISH:
    if (z >= d->nr_zones || zone_is_conv (&d->ctl.l, z))
      return -EIO;
    if (zone_is_unwritable (&d->ctl.l, z)) {
      fprintf (stderr, "%s: zone %" PRIu64 " is read-only or offline on the "
               "server's device: it cannot be finished\n", progname, z);
      return -EIO;
    }
    if (refresh_wp (d, z, false) == -1)
      return -EIO;
    pthread_mutex_lock (&d->zone_lock);
    wp = d->zones[z].wp;
    pthread_mutex_unlock (&d->zone_lock);
    if (wp >= zone_capend (d, z))
      return 0;
    io->append_off = wp;
    io->pending++;
    sent (io, nbd_aio_zero (q->nbd, zone_capend (d, z) - wp, wp,
                            done_cb (io), 0));
    return 1;
  case UBLK_IO_OP_REPORT_ZONES: {
    uint64_t count = iod->nr_sectors;   /* nr_zones for a report */
    uint64_t max = d->max_io / sizeof (struct blk_zone);

    if (z >= d->nr_zones)
      return 0;
    if (count > max)
      count = max;
    if (count > d->nr_zones - z)
      count = d->nr_zones - z;
    free (io->wps);
    io->wps = calloc (count, sizeof *io->wps);
    if (!io->wps)
      return -ENOMEM;
    wp_scan_init (&io->scan, &d->ctl.l, z, count, io->wps);
    report_step (io);
    if (io->pending == 0)
      push_ready (io);          /* every WP known without asking */
    return 1;
  }
  default:
    return -EOPNOTSUPP;
  }
}

/* Send held request IO again as the reconnect decided (IO->v): a write
 * or append from the data it still holds, at the place it had; the
 * rest as new.  Called by its queue's thread after the reconnect.
 */
void
resend_io (struct tag_io *io)
{
  struct queue *q = io->q;
  uint64_t off = io->op == UBLK_IO_OP_ZONE_APPEND ? io->append_off : io->off;
  int r;

  io->held = false;
  io->resent = true;
  io->err = 0;
  io->pending = 0;
  io->flush_after = io->v.flush_first;
  __atomic_store_n (&io->since_ms, now_ms (), __ATOMIC_RELEASE);
  if (io->v.kind == V_COMPLETE) {
    push_ready (io);            /* finish_io flushes first if need be */
    return;
  }
  switch (io->op) {
  case UBLK_IO_OP_WRITE:
  case UBLK_IO_OP_ZONE_APPEND:
    if (io->v.kind == V_RESEND_TAIL) {
      uint32_t flags = (io->op_flags & UBLK_IO_F_FUA) && q->d->can_fua ?
        LIBNBD_CMD_FLAG_FUA : 0;

      io->pending++;
      sent (io, nbd_aio_pwrite (q->nbd, (char *) io->buf + (io->v.from - off),
                                io->v.to - io->v.from, io->v.from,
                                done_cb (io), flags));
    }
    else
      send_write (io, off);
    return;
  default:
    /* Reads, flushes, zone commands and reports hold no state of their
     * own beyond the request the kernel still has: start them again.
     */
    r = start_io (io);
    if (r != 1) {
      if (r < 0)
        log_failure (io, io->off, -r, r);
      commit (io, r, 0);
    }
    return;
  }
}

/* All NBD commands of IO are done: finish the request. */
void
finish_io (struct tag_io *io)
{
  struct queue *q = io->q;
  struct dev *d = q->d;
  uint64_t z = zone_of (d, io->off);

  io->ready = false;
  if (io->err && hold_for_reconnect (io))
    return;
  if (io->flush_after && !io->err) {
    /* A FUA write that had landed before a reconnect: durable only
     * once the new server flushed it.
     */
    io->flush_after = false;
    io->pending++;
    sent (io, nbd_aio_flush (q->nbd, done_cb (io), 0));
    return;
  }
  switch (io->op) {
  case UBLK_IO_OP_READ:
    if (io->err) {
      log_failure (io, io->off, io->err, -EIO);
      commit (io, -EIO, 0);
    }
    else if (pwrite (d->cdev, io->buf, io->len,
                     ublk_user_copy_pos (q->id, io->tag)) != (ssize_t) io->len) {
      fprintf (stderr, "%s: cannot hand read data at offset %" PRIu64
               " to the kernel: %m\n", progname, io->off);
      commit (io, -EIO, 0);
    }
    else
      commit (io, io->len, 0);
    return;
  case UBLK_IO_OP_WRITE:
  case UBLK_IO_OP_ZONE_APPEND: {
    uint64_t off = io->op == UBLK_IO_OP_WRITE ? io->off : io->append_off;
    uint64_t wp;

    /* A write sent again after a reconnect may have landed all the same
     * meanwhile: the old server still ran the copy it had read before
     * the connection broke (a server that was stopped, not killed).
     * The zone's WP past it says so; the resent copy then fell below
     * the WP and was refused.
     */
    if (io->err && io->resent && !zone_is_conv (&d->ctl.l, z) &&
        query_wp (d, z, &wp) == 0 && wp >= off + io->len)
      io->err = 0;
    if (!zone_is_conv (&d->ctl.l, z)) {
      if (!io->err)
        zone_acked (d, z, off + io->len);
      zone_write_done (d, z, io->op == UBLK_IO_OP_ZONE_APPEND, io->err != 0);
    }

    if (io->err) {
      int kernel_err = write_error (d, off, io->len, io->err);

      log_failure (io, off, io->err, kernel_err);
      commit (io, kernel_err, 0);
    }
    else
      commit (io, io->len, io->op == UBLK_IO_OP_WRITE ? 0 : off >> 9);
    return;
  }
  case UBLK_IO_OP_REPORT_ZONES: {
    struct blk_zone *bz = io->buf;
    uint64_t i, n = io->scan.end - io->scan.first;

    uint64_t next_off, next_len;
    bool more = wp_scan_next (&io->scan, &next_off, &next_len);

    if (io->err || io->scan.bad ||
        (more && io->scan.pos == io->scan_before)) {
      char why[300];

      fprintf (stderr, "%s: zone report from zone %" PRIu64 " failed: %s\n",
               progname, z, io->err ? strerror (io->err)
               : io->scan.bad ? wp_scan_error (&io->scan, why, sizeof why)
               : "block status made no progress");
      commit (io, -EIO, 0);
      return;
    }
    if (more) {
      report_step (io);         /* the server answered part: ask again */
      return;
    }
    memset (bz, 0, (n + 1) * sizeof *bz > d->max_io ? d->max_io
                                                  : (n + 1) * sizeof *bz);
    for (i = 0; i < n; i++)
      zone_describe (&d->ctl.l, io->scan.first + i, io->wps[i], &bz[i]);
    if (pwrite (d->cdev, bz, n * sizeof *bz, ublk_user_copy_pos (q->id, io->tag)) !=
        (ssize_t) (n * sizeof *bz)) {
      fprintf (stderr, "%s: cannot hand a zone report to the kernel: %m\n",
               progname);
      commit (io, -EIO, 0);
      return;
    }
    /* The kernel clamps this to the size of its report buffer. */
    commit (io, d->max_io, 0);
    return;
  }
  default:
    break;
  }

  /* flush, reset, reset-all, finish */
  if (io->err) {
    /* A finish is a write of zeroes from the WP to the capacity: its
     * ENOSPC is a zone resource error as a write's is.
     */
    int kernel_err = io->op == UBLK_IO_OP_ZONE_FINISH
      ? write_error (d, io->append_off, zone_capend (d, z) - io->append_off,
                     io->err)
      : -EIO;

    log_failure (io, io->off, io->err, kernel_err);
    if (io->op != UBLK_IO_OP_FLUSH && !zone_is_conv (&d->ctl.l, z))
      mark_stale (d, z);
    if (io->op == UBLK_IO_OP_ZONE_RESET_ALL) {
      uint64_t i;
      for (i = 0; i < d->nr_zones; i++)
        mark_stale (d, i);
    }
    commit (io, kernel_err, 0);
    return;
  }
  pthread_mutex_lock (&d->zone_lock);
  if (io->op == UBLK_IO_OP_ZONE_RESET)
    d->zones[z].wp = d->zones[z].acked_wp = d->zones[z].sent_wp =
      zone_start (&d->ctl.l, z);
  else if (io->op == UBLK_IO_OP_ZONE_FINISH)
    d->zones[z].wp = d->zones[z].acked_wp = d->zones[z].sent_wp =
      zone_capend (d, z);
  else if (io->op == UBLK_IO_OP_ZONE_RESET_ALL) {
    uint64_t i;
    for (i = 0; i < d->nr_zones; i++)
      if (!zone_is_conv (&d->ctl.l, i) &&
          !zone_is_unwritable (&d->ctl.l, i)) {  /* not reset */
        d->zones[i].wp = d->zones[i].acked_wp = d->zones[i].sent_wp =
          zone_start (&d->ctl.l, i);
        d->zones[i].stale = false;
      }
  }
  if (io->op == UBLK_IO_OP_ZONE_RESET || io->op == UBLK_IO_OP_ZONE_FINISH)
    d->zones[z].stale = false;
  pthread_mutex_unlock (&d->zone_lock);
  commit (io, 0, 0);
}

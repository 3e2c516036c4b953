/* nbdzone attach: a zoned NBD export as a host-managed zoned block device
 * of the kernel (/dev/ublkbN), served by this process through ublk.
 *
 * How it works.  /dev/ublk-control creates the device (ADD_DEV with
 * UBLK_F_ZONED and UBLK_F_USER_COPY, then SET_PARAMS with the geometry
 * from the export description).  Each ublk queue has one thread, one
 * io_uring and one NBD connection.  The thread keeps a FETCH_REQ command
 * per tag in the ring; when the kernel hands a request over, the thread
 * reads its data with pread on /dev/ublkcN (user copy), sends it with
 * libnbd's asynchronous API, and when NBD replies, writes read data back
 * with pwrite and returns the result with COMMIT_AND_FETCH_REQ, which
 * also waits for the tag's next request.  The NBD socket is watched by
 * poll requests in the same ring, so one wait covers both sides, and
 * many requests (many writes to one zone) are in flight at once: the
 * server's per-zone gate puts writes of a zone in write-pointer order.
 *
 * Zones map onto NBD as the zbd plugin's profile says: the report is
 * built from block status (zone-report.c, as "nbdzone report"), reset
 * is trim, finish is write-zeroes from the write pointer to the zone's
 * capacity, open and close are accepted and do nothing.  Zone append
 * is done here: the process keeps a write pointer per zone (read from
 * the server at attach), gives each append the current write pointer
 * and advances it at once, sends the append as a write at that offset
 * (pipelined), and returns the sector to the kernel; after any error on
 * a zone, the zone's write pointer is read again from the server before
 * the next append to it.
 *
 * When the server goes away, libnbd fails what is in flight and every
 * new request at once, so the kernel sees EIO; the device stays until
 * "nbdzone detach" (STOP_DEV, DEL_DEV) or a signal.  There is no
 * reconnection: writes in flight when the connection broke have an
 * unknown fate, so the filesystem above must see the errors.
 */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>

#include <liburing.h>
#include <libnbd.h>

#include "nbdzone.h"
#include "target-rules.h"
#include "ublk-uapi.h"

#define DEFAULT_QUEUES 1
#define DEFAULT_DEPTH 64
#define DEFAULT_TIMEOUT_S 30
#define MAX_IO_BYTES (1U << 20)
#define UBLK_CONTROL "/dev/ublk-control"

/* io_uring user_data: a tag, or one of these. */
#define UD_POLL_IN  (1ULL << 32)
#define UD_POLL_OUT (2ULL << 32)
#define UD_EVENT    (3ULL << 32)

struct zone_state {
  uint64_t wp;                  /* the next append goes here */
  bool stale;                   /* an error happened: ask the server */
  unsigned appends;             /* zone appends in flight */
  unsigned writes;              /* plain writes in flight */
};

struct queue;

struct tag_io {
  struct queue *q;
  int tag;
  uint8_t op;
  uint32_t op_flags;             /* UBLK_IO_F_* (FUA), as the kernel sets them */
  uint64_t off;                 /* bytes */
  uint32_t len;                 /* bytes */
  void *buf;                    /* MAX_IO_BYTES, allocated on first use */
  int pending;                  /* NBD commands in flight */
  int err;                      /* first NBD error (errno) */
  uint64_t append_off;          /* where a zone append was written */
  uint64_t since_ms;            /* when it was handed over; 0: idle */
  bool ready;                   /* on the ready list */
  struct tag_io *next_ready;
  struct tag_io *next_waiting;  /* on the queue's waiting appends */
  /* zone report */
  struct wp_scan scan;
  uint64_t *wps;
  uint64_t scan_before;
};

struct dev;

struct queue {
  struct dev *d;
  int id;
  struct io_uring ring;
  struct nbd_handle *nbd;
  int nbd_fd;                   /* a dup of its socket, for the timeout */
  uint64_t last_reply_ms;       /* when the server last answered here */
  const struct ublksrv_io_desc *iods;
  size_t iods_len;
  struct tag_io *ios;
  int aborted;                  /* tags the kernel has given up */
  int busy;                     /* tags with a request being served */
  bool poll_in, poll_out;       /* poll requests armed on the NBD socket */
  int event_fd;                 /* written to stop the thread */
  bool event_armed;
  struct tag_io *ready;         /* NBD commands done, to be finished */
  struct tag_io *waiting, *waiting_tail; /* appends held (assign_append) */
  pthread_t thread;
  bool started;
  volatile bool exited;
};

struct dev {
  struct disk ctl;              /* geometry; WP re-reads under ctl_lock */
  pthread_mutex_t ctl_lock;
  int ctl_fd;                   /* a dup of the socket of ctl.nbd */
  pthread_t watchdog;
  bool watchdog_started, watchdog_stop;
  uint64_t ctl_since_ms;        /* a WP re-read began; 0: none */
  unsigned timeout_s;           /* no reply for this long: server gone */
  bool timed_out;
  pthread_mutex_t zone_lock;
  struct zone_state *zones;
  uint64_t nr_zones;
  int id;
  bool added;                   /* the ublk device exists (ADD_DEV) */
  int nr_queues, depth;
  uint32_t max_io;
  uint32_t block_size;
  bool can_fua, can_flush;
  uint64_t appends;             /* zone appends served */
  unsigned max_appends;         /* most in flight in one zone at once */
  int cdev;
  struct queue *queues;
  volatile sig_atomic_t stop;
};

static const char *
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

/* ---- the ublk control device ------------------------------------------- */

static void
prep_uring_cmd (struct io_uring_sqe *sqe, int fd, uint32_t op,
                const void *cmd, size_t cmd_len, uint64_t user_data)
{
  /* A 128-byte SQE (IORING_SETUP_SQE128): the command is in its second
   * half, from the cmd field on.
   */
  unsigned char *bytes = (unsigned char *) (uintptr_t) sqe;

  if (!sqe) {                   /* the rings are sized for every tag */
    fprintf (stderr, "%s: io_uring submission queue full\n", progname);
    abort ();
  }
  memset (bytes, 0, 2 * sizeof *sqe);
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = fd;
  sqe->cmd_op = op;
  memcpy (bytes + offsetof (struct io_uring_sqe, cmd), cmd, cmd_len);
  io_uring_sqe_set_data64 (sqe, user_data);
}

/* NBDZONE_UBLK_CONTROL replaces /dev/ublk-control (for tests). */
static const char *
control_path (void)
{
  const char *p = getenv ("NBDZONE_UBLK_CONTROL");

  return p && *p ? p : UBLK_CONTROL;
}

struct control {
  int fd;
  struct io_uring ring;
  uint64_t seq;                 /* user_data of the last command */
};

static int
control_open (struct control *c)
{
  int r;

  c->seq = 0;
  c->fd = open (control_path (), O_RDWR | O_CLOEXEC);
  if (c->fd == -1)
    return -errno;
  r = io_uring_queue_init (4, &c->ring, IORING_SETUP_SQE128);
  if (r < 0) {
    close (c->fd);
    return r;
  }
  return 0;
}

static void
control_close (struct control *c)
{
  io_uring_queue_exit (&c->ring);
  close (c->fd);
}

/* One control command; returns the kernel's result (negative errno).
 * Once submitted, it is waited for whatever signals come: the kernel
 * still works on it (STOP_DEV waits for the requests in flight), and
 * its completion must not be taken for the next command's.  Signals
 * are seen when it is done; a server that hangs meanwhile is ended by
 * the reply timeout, which fails what STOP_DEV waits for.
 */
static int
control_cmd (struct control *c, uint32_t op, int dev_id, void *buf,
             uint16_t len, uint64_t data0)
{
  struct ublksrv_ctrl_cmd cmd = {
    .dev_id = dev_id, .queue_id = (uint16_t) -1,
    .addr = (uintptr_t) buf, .len = len,
  };
  struct io_uring_sqe *sqe;
  struct io_uring_cqe *cqe;
  int r;

  cmd.data[0] = data0;
  sqe = io_uring_get_sqe (&c->ring);
  if (!sqe)
    return -EBUSY;
  prep_uring_cmd (sqe, c->fd, op, &cmd, sizeof cmd, ++c->seq);
  do
    r = io_uring_submit (&c->ring);
  while (r == -EINTR);
  if (r < 0)
    return r;
  if (r == 0)
    return -EBUSY;
  for (;;) {
    uint64_t ud;

    r = io_uring_wait_cqe (&c->ring, &cqe);
    if (r == -EINTR)
      continue;
    if (r < 0)
      return r;
    ud = io_uring_cqe_get_data64 (cqe);
    r = cqe->res;
    io_uring_cqe_seen (&c->ring, cqe);
    if (ud == c->seq)
      return r;
    /* an older command's: cannot happen, as each is waited for */
  }
}

/* Linux release "X.Y...": is it at least 6.6? */
static bool
kernel_has_zoned_ublk (const char *release)
{
  unsigned major = 0, minor = 0;

  if (sscanf (release, "%u.%u", &major, &minor) != 2)
    return true;                /* unknown: let the driver decide */
  return major > 6 || (major == 6 && minor >= 6);
}

/* A clear reason why no zoned ublk device can be made here, or NULL. */
static const char *
ublk_unavailable (int open_error, char *buf, size_t len)
{
  struct utsname u;

  if (uname (&u) == 0 && !kernel_has_zoned_ublk (u.release)) {
    snprintf (buf, len, "this kernel (Linux %s) is older than 6.6: zoned "
              "ublk devices need Linux 6.6 or later with ublk_drv; use the "
              "kernel NBD client (nbd-client) for a plain disk", u.release);
    return buf;
  }
  if (open_error == -ENOENT) {
    snprintf (buf, len, "%s does not exist: the ublk_drv module is not "
              "loaded (modprobe ublk_drv) or this kernel has no ublk "
              "(CONFIG_BLK_DEV_UBLK)", control_path ());
    return buf;
  }
  if (open_error < 0) {
    snprintf (buf, len, "cannot open %s: %s", control_path (),
              strerror (-open_error));
    return buf;
  }
  return NULL;
}

/* ---- zone state (shared by the queues) --------------------------------- */

static uint64_t
zone_of (const struct dev *d, uint64_t off)
{
  return off / d->ctl.l.g.zone_size;
}

static uint64_t
zone_capend (const struct dev *d, uint64_t z)
{
  return zone_start (&d->ctl.l, z) + zone_cap (&d->ctl.l, z);
}

static uint64_t
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
static int
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
      pthread_mutex_unlock (&d->zone_lock);
    }
  }
  pthread_mutex_unlock (&d->ctl_lock);
  if (r == -1)
    fprintf (stderr, "%s: cannot read the write pointer of zone %" PRIu64
             " from the server: %s\n", progname, z, err);
  return r;
}

static void
mark_stale (struct dev *d, uint64_t z)
{
  pthread_mutex_lock (&d->zone_lock);
  d->zones[z].stale = true;
  pthread_mutex_unlock (&d->zone_lock);
}

/* Zones with a write pointer inside (the active ones), except EXCEPT. */
static uint64_t
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
static int
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

/* ---- serving one request ------------------------------------------------ */

static uint64_t
user_copy_pos (const struct queue *q, int tag)
{
  return UBLKSRV_IO_BUF_OFFSET + ((uint64_t) q->id << UBLK_QID_OFF) +
    ((uint64_t) tag << UBLK_TAG_OFF);
}

static void
commit (struct tag_io *io, int result, uint64_t append_lba)
{
  struct queue *q = io->q;
  struct ublksrv_io_cmd cmd = {
    .q_id = q->id, .tag = io->tag, .result = result, .addr = append_lba,
  };
  struct io_uring_sqe *sqe = io_uring_get_sqe (&q->ring);

  if (!sqe) {
    io_uring_submit (&q->ring);
    sqe = io_uring_get_sqe (&q->ring);
  }
  prep_uring_cmd (sqe, q->d->cdev, UBLK_U_IO_COMMIT_AND_FETCH_REQ,
                  &cmd, sizeof cmd, io->tag);
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
static void
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
                     user_copy_pos (io->q, io->tag));

  if (r != (ssize_t) io->len) {
    fprintf (stderr, "%s: cannot read the data of a %s at offset %" PRIu64
             " from the kernel: %s\n", progname, op_name (io->op), io->off,
             r == -1 ? strerror (errno) : "short read");
    return -1;
  }
  return 0;
}

#define APPEND_WAIT 2

/* Zone append: the zone's current WP, advanced at once; or an error.
 * After an error in the zone its WP is read again from the server, but
 * only once nothing is in flight there: a write still on its way may
 * yet land (the server's gate holds writes ahead of the WP for a while),
 * and a WP read before that would give its place to another append.
 * Until then the result is APPEND_WAIT.
 */
static int
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

static void
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
      send_write (io, io->append_off);
    }
    io = next;
  }
}

/* A write moves the client's WP of its zone along. */
static void
note_write (struct dev *d, uint64_t off, uint32_t len)
{
  uint64_t z = zone_of (d, off);

  if (zone_is_conv (&d->ctl.l, z))
    return;
  pthread_mutex_lock (&d->zone_lock);
  if (off + len > d->zones[z].wp)
    d->zones[z].wp = off + len;
  d->zones[z].writes++;
  pthread_mutex_unlock (&d->zone_lock);
}

/* A write or append to sequential zone Z is done; after an error the
 * zone's WP is unknown.  One step, so no append is assigned in between.
 */
static void
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

/* Start serving a request the kernel handed over on tag IO->tag.
 * Returns the result to commit at once, or 1 if NBD commands are out.
 */
static int
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
  case UBLK_IO_OP_WRITE:
    if (io->len > d->max_io || read_request_data (io) == -1)
      return -EIO;
    note_write (d, io->off, io->len);
    send_write (io, io->off);
    return 1;
  case UBLK_IO_OP_ZONE_APPEND: {
    int r;

    if (io->len > d->max_io || read_request_data (io) == -1)
      return -EIO;
    r = assign_append (io, &io->append_off);
    if (r == APPEND_WAIT) {
      hold_append (io);
      return 1;
    }
    if (r)
      return r;
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
    send_trim_zones (io, z, z + 1);
    return 1;
  case UBLK_IO_OP_ZONE_RESET_ALL:
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

/* All NBD commands of IO are done: finish the request. */
static void
finish_io (struct tag_io *io)
{
  struct queue *q = io->q;
  struct dev *d = q->d;
  uint64_t z = zone_of (d, io->off);

  io->ready = false;
  switch (io->op) {
  case UBLK_IO_OP_READ:
    if (io->err) {
      log_failure (io, io->off, io->err, -EIO);
      commit (io, -EIO, 0);
    }
    else if (pwrite (d->cdev, io->buf, io->len,
                     user_copy_pos (q, io->tag)) != (ssize_t) io->len) {
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

    if (!zone_is_conv (&d->ctl.l, z))
      zone_write_done (d, z, io->op == UBLK_IO_OP_ZONE_APPEND, io->err != 0);

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
    if (pwrite (d->cdev, bz, n * sizeof *bz, user_copy_pos (q, io->tag)) !=
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
    d->zones[z].wp = zone_start (&d->ctl.l, z);
  else if (io->op == UBLK_IO_OP_ZONE_FINISH)
    d->zones[z].wp = zone_capend (d, z);
  else if (io->op == UBLK_IO_OP_ZONE_RESET_ALL) {
    uint64_t i;
    for (i = 0; i < d->nr_zones; i++)
      if (!zone_is_conv (&d->ctl.l, i) &&
          !zone_is_unwritable (&d->ctl.l, i)) {  /* not reset */
        d->zones[i].wp = zone_start (&d->ctl.l, i);
        d->zones[i].stale = false;
      }
  }
  if (io->op == UBLK_IO_OP_ZONE_RESET || io->op == UBLK_IO_OP_ZONE_FINISH)
    d->zones[z].stale = false;
  pthread_mutex_unlock (&d->zone_lock);
  commit (io, 0, 0);
}

/* ---- the queue thread ---------------------------------------------------- */

static void
fetch (struct queue *q, int tag)
{
  struct ublksrv_io_cmd cmd = { .q_id = q->id, .tag = tag };
  struct io_uring_sqe *sqe = io_uring_get_sqe (&q->ring);

  prep_uring_cmd (sqe, q->d->cdev, UBLK_U_IO_FETCH_REQ, &cmd, sizeof cmd,
                  tag);
}

static void
arm_polls (struct queue *q)
{
  struct io_uring_sqe *sqe;
  unsigned dir;
  int fd;

  if (!q->event_armed) {
    sqe = io_uring_get_sqe (&q->ring);
    if (!sqe)
      return;
    io_uring_prep_poll_add (sqe, q->event_fd, POLLIN);
    io_uring_sqe_set_data64 (sqe, UD_EVENT);
    q->event_armed = true;
  }
  if (nbd_aio_is_dead (q->nbd) || nbd_aio_is_closed (q->nbd))
    return;
  fd = nbd_aio_get_fd (q->nbd);
  if (fd == -1)
    return;
  dir = nbd_aio_get_direction (q->nbd);
  if ((dir & LIBNBD_AIO_DIRECTION_READ) && !q->poll_in) {
    sqe = io_uring_get_sqe (&q->ring);
    if (!sqe)
      return;
    io_uring_prep_poll_add (sqe, fd, POLLIN);
    io_uring_sqe_set_data64 (sqe, UD_POLL_IN);
    q->poll_in = true;
  }
  if ((dir & LIBNBD_AIO_DIRECTION_WRITE) && !q->poll_out) {
    sqe = io_uring_get_sqe (&q->ring);
    if (!sqe)
      return;
    io_uring_prep_poll_add (sqe, fd, POLLOUT);
    io_uring_sqe_set_data64 (sqe, UD_POLL_OUT);
    q->poll_out = true;
  }
}

static void
handle_cqe (struct queue *q, const struct io_uring_cqe *cqe)
{
  uint64_t ud = io_uring_cqe_get_data64 (cqe);
  struct tag_io *io;
  int r;

  if (ud == UD_POLL_IN) {
    q->poll_in = false;
    nbd_aio_notify_read (q->nbd);
    return;
  }
  if (ud == UD_POLL_OUT) {
    q->poll_out = false;
    nbd_aio_notify_write (q->nbd);
    return;
  }
  if (ud == UD_EVENT) {
    eventfd_t v;

    eventfd_read (q->event_fd, &v);     /* or the next poll fires at once */
    q->event_armed = false;
    return;
  }
  io = &q->ios[ud];
  if (cqe->res == UBLK_IO_RES_ABORT || cqe->res < 0) {
    if (cqe->res != UBLK_IO_RES_ABORT)
      fprintf (stderr, "%s: queue %d tag %d: %s\n", progname, q->id,
               io->tag, strerror (-cqe->res));
    q->aborted++;
    return;
  }
  q->busy++;
  r = start_io (io);
  if (r != 1) {
    if (r < 0)
      log_failure (io, io->off, -r, r);
    commit (io, r, 0);
  }
}

static void
finish_ready (struct queue *q)
{
  while (q->ready) {
    struct tag_io *io = q->ready;

    q->ready = io->next_ready;
    finish_io (io);
  }
}

/* SIGUSR1: what every queue is doing, for someone chasing a stall. */
static volatile sig_atomic_t dump_wanted[64];

static void
dump_queue (struct queue *q)
{
  struct dev *d = q->d;
  int t;

  fprintf (stderr, "%s: queue %d: %d busy, %d aborted, NBD in flight %d, "
           "polls in:%d out:%d, direction %u, connection %s\n", progname,
           q->id, q->busy, q->aborted, nbd_aio_in_flight (q->nbd),
           q->poll_in, q->poll_out, nbd_aio_get_direction (q->nbd),
           nbd_aio_is_dead (q->nbd) ? "dead" : "up");
  for (t = 0; t < d->depth; t++) {
    struct tag_io *io = &q->ios[t];

    if (io->pending || io->ready)
      fprintf (stderr, "%s:   tag %d: %s of %" PRIu32 " at %" PRIu64
               " (append at %" PRIu64 "), %d NBD commands pending%s\n",
               progname, t, op_name (io->op), io->len, io->off,
               io->append_off, io->pending, io->ready ? ", ready" : "");
  }
}

/* A thread that never takes the signals attach handles: they go to the
 * main thread.  In a queue thread they would interrupt libnbd's
 * synchronous calls (a WP re-read) and io_uring waits for nothing.  The
 * new thread inherits the mask in force at pthread_create.
 */
static int
create_thread (pthread_t *thread, void *(*fn) (void *), void *arg)
{
  sigset_t set, old;
  int r;

  sigemptyset (&set);
  sigaddset (&set, SIGTERM);
  sigaddset (&set, SIGINT);
  sigaddset (&set, SIGHUP);
  sigaddset (&set, SIGUSR1);
  pthread_sigmask (SIG_BLOCK, &set, &old);
  r = pthread_create (thread, NULL, fn, arg);
  pthread_sigmask (SIG_SETMASK, &old, NULL);
  return r;
}

static void *
queue_thread (void *arg)
{
  struct queue *q = arg;
  struct dev *d = q->d;
  int tag;

  for (tag = 0; tag < d->depth; tag++)
    fetch (q, tag);
  for (;;) {
    struct io_uring_cqe *cqe;
    struct __kernel_timespec ts = { .tv_sec = 1 };
    unsigned head, n = 0;

    if ((q->aborted == d->depth || d->stop) && q->busy == 0) {
      io_uring_submit (&q->ring);       /* the last commits */
      break;
    }
    arm_polls (q);
    io_uring_submit_and_wait_timeout (&q->ring, &cqe, 1, &ts, NULL);
    io_uring_for_each_cqe (&q->ring, head, cqe) {
      handle_cqe (q, cqe);
      n++;
    }
    io_uring_cq_advance (&q->ring, n);
    finish_ready (q);
    if (q->waiting)
      retry_held_appends (q);
    if (q->id < 64 && dump_wanted[q->id]) {
      dump_wanted[q->id] = 0;
      dump_queue (q);
    }
  }
  q->exited = true;
  return NULL;
}

/* ---- attach ----------------------------------------------------------------- */

static void
usage_attach (void)
{
  fprintf (stderr, "usage: %s attach URI [--queues N] [--depth N] [--id N] "
           "[--timeout SECONDS] [--foreground]\n", progname);
}

static int
arg_int (const char *opt, const char *s, long min, long max)
{
  char *end;
  long v;

  errno = 0;
  v = strtol (s, &end, 10);
  if (errno || *end || end == s || v < min || v > max) {
    fprintf (stderr, "%s: %s \"%s\" is not a number from %ld to %ld\n",
             progname, opt, s, min, max);
    exit (EXIT_FAILURE);
  }
  return v;
}

static bool
is_pow2 (uint64_t v)
{
  return v && !(v & (v - 1));
}

/* Refuse geometries a zoned ublk device cannot have; one line each. */
static int
check_geometry (struct dev *d)
{
  const struct zone_layout *l = &d->ctl.l;
  int64_t min = nbd_get_block_size (d->ctl.nbd, LIBNBD_SIZE_MINIMUM);
  int64_t max = nbd_get_block_size (d->ctl.nbd, LIBNBD_SIZE_MAXIMUM);
  uint64_t bs = l->g.block_size;

  if (min > 0 && (uint64_t) min > bs)
    bs = min;
  if (!is_pow2 (bs) || bs < 512 || bs > 4096) {
    fprintf (stderr, "%s: %s: block size %" PRIu64 " is not 512, 1024, "
             "2048 or 4096 bytes, which a ublk device needs\n", progname,
             d->ctl.uri, bs);
    return -1;
  }
  d->block_size = bs;
  d->ctl.l.block_size = bs;     /* every WP must be a multiple */
  if (!is_pow2 (l->g.zone_size) || l->g.zone_size % 512) {
    fprintf (stderr, "%s: %s: the zone size, %" PRIu64 " bytes, is not a "
             "power of two sectors, which zoned ublk devices need\n",
             progname, d->ctl.uri, l->g.zone_size);
    return -1;
  }
  if (l->g.zone_size > UINT32_MAX) {
    fprintf (stderr, "%s: %s: zones of %" PRIu64 " bytes are too large: "
             "an NBD request (a zone reset or finish) holds less than "
             "4 GiB\n", progname, d->ctl.uri, l->g.zone_size);
    return -1;
  }
  if (l->g.zone_size < bs || l->g.zone_capacity % bs) {
    fprintf (stderr, "%s: %s: zone size %" PRIu64 " or capacity %" PRIu64
             " is not a multiple of the block size %" PRIu64 "\n",
             progname, d->ctl.uri, l->g.zone_size, l->g.zone_capacity, bs);
    return -1;
  }
  if (l->size % l->g.zone_size || l->size / l->g.zone_size != l->g.nr_zones) {
    fprintf (stderr, "%s: %s: the export's %" PRIu64 " bytes are not its %"
             PRIu64 " zones of %" PRIu64 " bytes (a zoned ublk device has "
             "no smaller last zone)\n", progname, d->ctl.uri, l->size,
             l->g.nr_zones, l->g.zone_size);
    return -1;
  }
  if (strcmp (l->g.model, "host-managed") != 0) {
    fprintf (stderr, "%s: %s: the export is %s, only host-managed zones "
             "can be attached\n", progname, d->ctl.uri, l->g.model);
    return -1;
  }
  d->max_io = MAX_IO_BYTES;
  if (max > 0 && (uint64_t) max < d->max_io) {
    d->max_io = (uint64_t) max / bs * bs;
    if (d->max_io < 4096) {
      fprintf (stderr, "%s: %s: the server's maximum request of %" PRId64
               " bytes is too small\n", progname, d->ctl.uri, max);
      return -1;
    }
  }
  return 0;
}

static int
read_all_wps (struct dev *d)
{
  uint64_t *wps = calloc (d->nr_zones, sizeof *wps), z;
  char err[512];
  int r;

  if (!wps)
    return -1;
  __atomic_store_n (&d->ctl_since_ms, now_ms (), __ATOMIC_RELAXED);
  r = zone_wps_sync (d->ctl.nbd, &d->ctl.l, 0, d->nr_zones, wps,
                     err, sizeof err);
  __atomic_store_n (&d->ctl_since_ms, 0, __ATOMIC_RELAXED);
  if (r == -1) {
    fprintf (stderr, "%s: %s: cannot read the write pointers: %s\n",
             progname, d->ctl.uri, err);
    free (wps);
    return -1;
  }
  for (z = 0; z < d->nr_zones; z++)
    d->zones[z].wp = wps[z];
  free (wps);
  return 0;
}

static void
fill_params (const struct dev *d, struct nbdzone_ublk_params *p)
{
  const struct zone_layout *l = &d->ctl.l;

  memset (p, 0, sizeof *p);
  p->len = sizeof *p;
  p->types = UBLK_PARAM_TYPE_BASIC | UBLK_PARAM_TYPE_ZONED;
  p->basic.attrs = (d->can_flush ? UBLK_ATTR_VOLATILE_CACHE : 0) |
    (d->can_fua ? UBLK_ATTR_FUA : 0);
  p->basic.logical_bs_shift = __builtin_ctzll (d->block_size);
  p->basic.physical_bs_shift = p->basic.logical_bs_shift;
  p->basic.io_min_shift = p->basic.logical_bs_shift;
  p->basic.io_opt_shift = p->basic.logical_bs_shift;
  p->basic.max_sectors = d->max_io >> 9;
  p->basic.chunk_sectors = l->g.zone_size >> 9;
  p->basic.dev_sectors = l->size >> 9;
  kernel_zone_limits (l->g.max_open, l->g.max_active, d->nr_zones,
                      &p->zoned.max_open_zones, &p->zoned.max_active_zones);
  p->zoned.max_zone_append_sectors = d->max_io >> 9;
}

/* The signal that asks attach to end (0: none). */
static volatile sig_atomic_t got_signal;

/* Wait for a device node the kernel creates (devtmpfs or udev). */
static int
open_when_present (const char *path, int flags)
{
  int i, fd = -1;

  for (i = 0; i < 100; i++) {
    fd = open (path, flags);
    if (fd >= 0 || errno != ENOENT)
      break;
    usleep (100000);
  }
  return fd;
}

static int
start_queue (struct dev *d, struct queue *q, int id)
{
  long page = sysconf (_SC_PAGESIZE);
  size_t max_cmd_buf = ((UBLK_MAX_QUEUE_DEPTH * sizeof (struct ublksrv_io_desc))
                        + page - 1) / page * page;
  void *iods;
  char why[512];
  int tag, r;

  q->d = d;
  q->id = id;
  q->iods_len = (d->depth * sizeof (struct ublksrv_io_desc) + page - 1) /
    page * page;
  iods = mmap (NULL, q->iods_len, PROT_READ, MAP_SHARED | MAP_POPULATE,
               d->cdev, UBLKSRV_CMD_BUF_OFFSET + (off_t) id * max_cmd_buf);
  if (iods == MAP_FAILED) {
    fprintf (stderr, "%s: cannot map the request descriptors of queue "
             "%d: %m\n", progname, id);
    return -1;
  }
  q->iods = iods;
  q->ios = calloc (d->depth, sizeof *q->ios);
  if (!q->ios)
    return -1;
  for (tag = 0; tag < d->depth; tag++) {
    q->ios[tag].q = q;
    q->ios[tag].tag = tag;
  }
  /* Fetches, commits and the polls of the NBD socket and the event. */
  r = io_uring_queue_init (2 * d->depth + 8, &q->ring, IORING_SETUP_SQE128);
  if (r < 0) {
    fprintf (stderr, "%s: cannot set up an io_uring: %s\n", progname,
             strerror (-r));
    return -1;
  }
  q->event_fd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  q->nbd = nbdzone_connect (d->ctl.uri, d->timeout_s, &got_signal,
                            why, sizeof why);
  if (!q->nbd) {
    fprintf (stderr, "%s: cannot connect to %s: %s\n", progname,
             d->ctl.uri, why);
    return -1;
  }
  /* A duplicate: the timeout may shut it down from another thread
   * while libnbd closes its own descriptor of a dead connection.
   */
  q->nbd_fd = dup (nbd_aio_get_fd (q->nbd));
  /* A read's buffer reaches the kernel only when libnbd reports that
   * the server sent all of it (finish_io), so libnbd's zeroing of each
   * read buffer beforehand is a wasted pass over every byte read: on a
   * busy client it was a measurable part of the read path.
   */
  nbd_set_pread_initialize (q->nbd, false);
  r = create_thread (&q->thread, queue_thread, q);
  if (r) {
    fprintf (stderr, "%s: cannot start a queue thread: %s\n", progname,
             strerror (r));
    return -1;
  }
  q->started = true;
  return 0;
}

/* A polite NBD disconnect, but bounded: a server that stopped answering
 * must not hold up detach (nbd_shutdown waits for it without limit).
 */
static void
disconnect_bounded (struct nbd_handle *h)
{
  int i;

  if (nbd_aio_is_ready (h) != 1 || nbd_aio_disconnect (h, 0) == -1)
    return;
  for (i = 0; i < 50 && !nbd_aio_is_closed (h) && !nbd_aio_is_dead (h); i++)
    if (nbd_poll (h, 100) == -1)
      break;
}

static void
stop_queues (struct dev *d)
{
  int i;

  d->stop = 1;
  for (i = 0; i < d->nr_queues; i++)
    if (d->queues[i].started)
      eventfd_write (d->queues[i].event_fd, 1);
  for (i = 0; i < d->nr_queues; i++) {
    struct queue *q = &d->queues[i];
    int t;

    if (q->started)
      pthread_join (q->thread, NULL);
    if (q->ios) {
      for (t = 0; t < d->depth; t++) {
        free (q->ios[t].buf);
        free (q->ios[t].wps);
      }
      free (q->ios);
    }
    if (q->ring.ring_fd > 0)
      io_uring_queue_exit (&q->ring);
    if (q->iods)
      munmap ((void *) q->iods, q->iods_len);
    if (q->nbd) {
      disconnect_bounded (q->nbd);
      nbd_close (q->nbd);
    }
    if (q->nbd_fd >= 0)
      close (q->nbd_fd);
    if (q->event_fd > 0)
      close (q->event_fd);
  }
}

static void
on_signal (int sig)
{
  int i;

  if (sig == SIGUSR1) {
    for (i = 0; i < 64; i++)
      dump_wanted[i] = 1;
    return;
  }
  got_signal = sig;
}

/* The server has not answered a request for timeout_s: take it as gone.
 * Shutting the sockets down makes libnbd fail every command in flight
 * and every new one, so the kernel gets EIO at once, as when the server
 * dies; a hung server (stopped, or a network that drops packets without
 * closing the connection) must not leave processes in D state forever.
 */
static void
server_timed_out (struct dev *d, const struct tag_io *io, uint64_t waited_ms)
{
  char name[32];
  int i;

  /* Before the device exists there is only the connection of attach. */
  if (d->added)
    snprintf (name, sizeof name, "/dev/ublkb%d", d->id);
  if (io)
    fprintf (stderr, "%s: %s: no reply from the server for %" PRIu64
             " s to a %s of %" PRIu32 " bytes at offset %" PRIu64 " (zone %"
             PRIu64 "); closing the connections: every request fails with "
             "EIO until detach\n", progname, d->added ? name : d->ctl.uri,
             waited_ms / 1000, op_name (io->op), io->len, io->off,
             zone_of (d, io->off));
  else if (d->added)
    fprintf (stderr, "%s: %s: no reply from the server for %" PRIu64
             " s to a write pointer query; closing the connections: every "
             "request fails with EIO until detach\n", progname, name,
             waited_ms / 1000);
  else
    fprintf (stderr, "%s: %s: no reply from the server for %" PRIu64
             " s to a write pointer query; giving up\n", progname,
             d->ctl.uri, waited_ms / 1000);
  d->timed_out = true;
  for (i = 0; i < d->nr_queues; i++)
    if (d->queues[i].started && d->queues[i].nbd_fd >= 0)
      shutdown (d->queues[i].nbd_fd, SHUT_RDWR);
  if (d->ctl_fd >= 0)
    shutdown (d->ctl_fd, SHUT_RDWR);
}

/* Is any request waiting longer than the timeout, on a connection
 * where the server has not answered anything for as long?  (A busy but
 * live server keeps answering; only lack of progress counts.)
 */
static void
check_reply_times (struct dev *d)
{
  uint64_t limit = (uint64_t) d->timeout_s * 1000, since, waited;
  int i, t;

  /* Each time is loaded before the clock is read, and elapsed_ms
   * never wraps: a time stored meanwhile is no time elapsed.
   */
  since = __atomic_load_n (&d->ctl_since_ms, __ATOMIC_RELAXED);
  if (since && (waited = elapsed_ms (now_ms (), since)) > limit) {
    server_timed_out (d, NULL, waited);
    return;
  }
  for (i = 0; i < d->nr_queues; i++) {
    struct queue *q = &d->queues[i];

    for (t = 0; q->ios && t < d->depth; t++) {
      uint64_t last = __atomic_load_n (&q->last_reply_ms, __ATOMIC_RELAXED);

      since = __atomic_load_n (&q->ios[t].since_ms, __ATOMIC_ACQUIRE);
      if (reply_overdue (now_ms (), last, since, limit, &waited)) {
        server_timed_out (d, &q->ios[t], waited);
        return;
      }
    }
  }
}

/* Its own thread, so that it also runs while the main thread waits in
 * STOP_DEV for the requests in flight (a detach on SIGTERM while the
 * server hangs).
 */
static void *
watchdog_thread (void *arg)
{
  struct dev *d = arg;
  int i;

  while (!__atomic_load_n (&d->watchdog_stop, __ATOMIC_RELAXED)) {
    for (i = 0; i < 10 && !__atomic_load_n (&d->watchdog_stop,
                                            __ATOMIC_RELAXED); i++)
      usleep (100000);
    if (!d->timed_out)
      check_reply_times (d);
  }
  return NULL;
}

static void
start_watchdog (struct dev *d)
{
  if (d->timeout_s && create_thread (&d->watchdog, watchdog_thread, d) == 0)
    d->watchdog_started = true;
}

static void
stop_watchdog (struct dev *d)
{
  if (d->watchdog_started) {
    __atomic_store_n (&d->watchdog_stop, true, __ATOMIC_RELAXED);
    pthread_join (d->watchdog, NULL);
    d->watchdog_started = false;
  }
}

/* Serve until a signal, a detach, or the end of every queue. */
static void
serve_until_stopped (struct dev *d, struct control *c)
{
  for (;;) {
    struct ublksrv_ctrl_dev_info info;
    int i, alive = 0;

    for (i = 0; i < 10 && !got_signal; i++)
      usleep (100000);
    if (got_signal) {
      fprintf (stderr, "%s: /dev/ublkb%d: signal %d, detaching\n", progname,
               d->id, (int) got_signal);
      return;
    }
    memset (&info, 0, sizeof info);
    if (control_cmd (c, UBLK_U_CMD_GET_DEV_INFO, d->id, &info,
                     sizeof info, 0) < 0 || info.state != UBLK_S_DEV_LIVE) {
      fprintf (stderr, "%s: /dev/ublkb%d was stopped, detaching\n",
               progname, d->id);
      return;
    }
    for (i = 0; i < d->nr_queues; i++)
      alive += !d->queues[i].exited;
    if (alive < d->nr_queues) {
      fprintf (stderr, "%s: /dev/ublkb%d: a queue ended, detaching\n",
               progname, d->id);
      return;
    }
  }
}

/* The device's life in the serving process.  REPORT_FD gets the device
 * path once it is live (the parent prints it), or is closed on failure.
 */
static int
attach_device (struct dev *d, int report_fd)
{
  struct control c;
  struct ublksrv_ctrl_dev_info info;
  struct nbdzone_ublk_params params;
  char why[300], path[64];
  int r, i, ret = EXIT_FAILURE;
  bool added = false, started = false;

  /* From the first request on: the WP read below, and START_DEV,
   * which reads every zone through the queues, must not hang attach
   * on a server that stops answering.
   */
  start_watchdog (d);
  if (read_all_wps (d) == -1) {
    stop_watchdog (d);
    return EXIT_FAILURE;
  }
  r = control_open (&c);
  if (ublk_unavailable (r, why, sizeof why)) {
    fprintf (stderr, "%s: cannot attach %s: %s\n", progname, d->ctl.uri,
             why);
    stop_watchdog (d);
    return EXIT_FAILURE;
  }
  memset (&info, 0, sizeof info);
  info.nr_hw_queues = d->nr_queues;
  info.queue_depth = d->depth;
  info.max_io_buf_bytes = d->max_io;
  info.dev_id = d->id;
  info.ublksrv_pid = getpid ();
  info.flags = UBLK_F_USER_COPY | UBLK_F_ZONED | UBLK_F_CMD_IOCTL_ENCODE;
  r = control_cmd (&c, UBLK_U_CMD_ADD_DEV, d->id, &info, sizeof info, 0);
  if (r < 0) {
    fprintf (stderr, "%s: cannot create a zoned ublk device: %s%s\n",
             progname, strerror (-r),
             r == -EINVAL || r == -EOPNOTSUPP ?
             " (this kernel's ublk_drv may lack zoned devices, which need "
             "Linux 6.6 or later with CONFIG_BLK_DEV_ZONED)" :
             r == -EEXIST ? " (that --id is in use)" : "");
    goto out;
  }
  added = true;
  d->id = info.dev_id;
  d->added = true;
  if (!(info.flags & UBLK_F_ZONED) || !(info.flags & UBLK_F_USER_COPY)) {
    fprintf (stderr, "%s: cannot attach %s: this kernel's ublk_drv has no "
             "zoned devices (UBLK_F_ZONED and UBLK_F_USER_COPY need Linux "
             "6.6 or later)\n", progname, d->ctl.uri);
    goto out;
  }
  fill_params (d, &params);
  r = control_cmd (&c, UBLK_U_CMD_SET_PARAMS, d->id, &params,
                   sizeof params, 0);
  if (r < 0) {
    fprintf (stderr, "%s: the kernel refused the zoned geometry of %s: %s\n",
             progname, d->ctl.uri, strerror (-r));
    goto out;
  }
  snprintf (path, sizeof path, "/dev/ublkc%d", d->id);
  d->cdev = open_when_present (path, O_RDWR | O_CLOEXEC);
  if (d->cdev == -1) {
    fprintf (stderr, "%s: cannot open %s: %m\n", progname, path);
    goto out;
  }
  for (i = 0; i < d->nr_queues; i++)
    if (start_queue (d, &d->queues[i], i) == -1)
      goto out;
  r = control_cmd (&c, UBLK_U_CMD_START_DEV, d->id, NULL, 0, getpid ());
  if (r < 0) {
    fprintf (stderr, "%s: cannot start /dev/ublkb%d: %s\n", progname, d->id,
             strerror (-r));
    goto out;
  }
  started = true;
  snprintf (path, sizeof path, "/dev/ublkb%d\n", d->id);
  if (write (report_fd, path, strlen (path)) != (ssize_t) strlen (path))
    goto out;
  if (report_fd != STDOUT_FILENO)
    close (report_fd);
  report_fd = -1;
  fprintf (stderr, "%s: /dev/ublkb%d serves %s (%" PRIu64 " zones of %"
           PRIu64 " bytes, %d queue(s) of depth %d)\n", progname, d->id,
           d->ctl.uri, d->nr_zones, d->ctl.l.g.zone_size, d->nr_queues,
           d->depth);
  serve_until_stopped (d, &c);
  ret = EXIT_SUCCESS;

 out:
  /* STOP_DEV lets the queues finish or fail what is in flight (the disk
   * is removed only once its requests are done), then aborts the
   * fetches; the character device must be closed before DEL_DEV.
   */
  if (started)
    control_cmd (&c, UBLK_U_CMD_STOP_DEV, d->id, NULL, 0, 0);
  stop_watchdog (d);
  stop_queues (d);
  if (d->cdev > 0)
    close (d->cdev);
  if (added) {
    r = control_cmd (&c, UBLK_U_CMD_DEL_DEV, d->id, NULL, 0, 0);
    if (r < 0 && r != -ENODEV)
      fprintf (stderr, "%s: cannot delete ublk device %d: %s\n", progname,
               d->id, strerror (-r));
  }
  control_close (&c);
  if (started)
    fprintf (stderr, "%s: /dev/ublkb%d detached; %" PRIu64 " zone appends, "
             "at most %u in flight in one zone\n", progname, d->id,
             d->appends, d->max_appends);
  if (report_fd >= 0 && report_fd != STDOUT_FILENO)
    close (report_fd);
  return ret;
}

/* The parent of a background attach: print the device once the child
 * has it live (it writes the path on FD), or fail.  A signal here
 * (SIGTERM, ^C, "timeout 5 nbdzone attach") goes on to the child, which
 * runs in its own session: it stops and deletes the device, and only
 * then does the parent end, so nothing is left serving.
 */
static int
wait_for_child (pid_t pid, int fd)
{
  char buf[64];
  ssize_t n = 0, got;
  int status, sig = 0;

  for (;;) {
    got = read (fd, buf + n, sizeof buf - 1 - n);
    if (got > 0) {
      n += got;
      if (n < (ssize_t) sizeof buf - 1)
        continue;
    }
    if (got == -1 && errno == EINTR) {
      if (got_signal && !sig) {
        sig = got_signal;
        kill (pid, SIGTERM);
      }
      continue;
    }
    break;                      /* EOF: the child is live, or failed */
  }
  buf[n] = '\0';
  if (!sig && !got_signal && n > 0 && buf[n - 1] == '\n') {
    fputs (buf, stdout);
    return EXIT_SUCCESS;
  }
  if (got_signal && !sig) {     /* came after the child was live */
    sig = got_signal;
    kill (pid, SIGTERM);
  }
  /* The child said why on stderr. */
  while (waitpid (pid, &status, 0) == -1 && errno == EINTR)
    ;
  if (sig)
    fprintf (stderr, "%s: attach interrupted by signal %d before the device "
             "was live; the device is removed\n", progname, sig);
  return EXIT_FAILURE;
}

int
nbdzone_attach (int argc, char **argv)
{
  struct dev d = { .id = -1, .nr_queues = DEFAULT_QUEUES,
                   .depth = DEFAULT_DEPTH, .cdev = -1,
                   .timeout_s = DEFAULT_TIMEOUT_S };
  const char *uri = NULL;
  bool foreground = false;
  struct sigaction sa = { .sa_handler = on_signal };
  int i, pipefd[2];
  pid_t pid;

  for (i = 0; i < argc; i++) {
    if (strcmp (argv[i], "--foreground") == 0 || strcmp (argv[i], "-f") == 0)
      foreground = true;
    else if (i + 1 < argc && strcmp (argv[i], "--queues") == 0)
      d.nr_queues = arg_int ("--queues", argv[++i], 1, 64);
    else if (i + 1 < argc && strcmp (argv[i], "--depth") == 0)
      d.depth = arg_int ("--depth", argv[++i], 1, UBLK_MAX_QUEUE_DEPTH);
    else if (i + 1 < argc && strcmp (argv[i], "--id") == 0)
      d.id = arg_int ("--id", argv[++i], 0, 1 << 20);
    else if (i + 1 < argc && strcmp (argv[i], "--timeout") == 0)
      d.timeout_s = arg_int ("--timeout", argv[++i], 0, 86400);
    else if (argv[i][0] == '-' || uri) {
      fprintf (stderr, "%s: attach: unknown or incomplete option \"%s\" "
               "(see %s --help)\n", progname, argv[i], progname);
      return EXIT_FAILURE;
    }
    else
      uri = argv[i];
  }
  if (!uri) {
    usage_attach ();
    return EXIT_FAILURE;
  }

  connect_disk (&d.ctl, uri, d.timeout_s, NULL);
  d.ctl_fd = dup (nbd_aio_get_fd (d.ctl.nbd));
  if (check_geometry (&d) == -1)
    return EXIT_FAILURE;
  d.nr_zones = d.ctl.l.g.nr_zones;
  d.can_fua = nbd_can_fua (d.ctl.nbd) == 1;
  d.can_flush = nbd_can_flush (d.ctl.nbd) == 1;
  /* Each queue has its own connection: a flush on one must cover the
   * writes acknowledged on the others.
   */
  if (d.nr_queues > 1 && nbd_can_multi_conn (d.ctl.nbd) != 1) {
    fprintf (stderr, "%s: %s does not allow several connections to share "
             "its cache (multi-conn), which --queues %d needs; use "
             "--queues 1\n", progname, uri, d.nr_queues);
    return EXIT_FAILURE;
  }
  if (nbd_can_trim (d.ctl.nbd) != 1 || nbd_can_zero (d.ctl.nbd) != 1) {
    fprintf (stderr, "%s: %s does not offer trim and write-zeroes, which "
             "zone reset and finish need\n", progname, uri);
    return EXIT_FAILURE;
  }
  d.zones = calloc (d.nr_zones, sizeof *d.zones);
  d.queues = calloc (d.nr_queues, sizeof *d.queues);
  if (!d.zones || !d.queues)
    return EXIT_FAILURE;
  for (i = 0; i < d.nr_queues; i++)
    d.queues[i].nbd_fd = -1;
  pthread_mutex_init (&d.ctl_lock, NULL);
  pthread_mutex_init (&d.zone_lock, NULL);

  signal (SIGPIPE, SIG_IGN);
  sigaction (SIGTERM, &sa, NULL);
  sigaction (SIGINT, &sa, NULL);
  sigaction (SIGHUP, &sa, NULL);
  sigaction (SIGUSR1, &sa, NULL);

  if (foreground)
    return attach_device (&d, STDOUT_FILENO);

  /* In the background like nbd-client: the parent prints the device
   * once the child has it live, or fails with the child's message.
   */
  if (pipe (pipefd) == -1) {
    perror ("pipe");
    return EXIT_FAILURE;
  }
  fflush (NULL);
  pid = fork ();
  if (pid == -1) {
    perror ("fork");
    return EXIT_FAILURE;
  }
  if (pid == 0) {
    int null = open ("/dev/null", O_RDWR);

    close (pipefd[0]);
    setsid ();
    if (null >= 0) {
      dup2 (null, STDIN_FILENO);
      dup2 (null, STDOUT_FILENO);
      close (null);
    }
    /* The connection of the parent is the child's now. */
    _exit (attach_device (&d, pipefd[1]));
  }
  close (pipefd[1]);
  return wait_for_child (pid, pipefd[0]);
}

/* ---- detach and list ----------------------------------------------------- */

static int
parse_device (const char *s)
{
  const char *p = s;
  char *end;
  long id;

  if (strncmp (p, "/dev/", 5) == 0)
    p += 5;
  if (strncmp (p, "ublkb", 5) == 0)
    p += 5;
  errno = 0;
  id = strtol (p, &end, 10);
  if (errno || *end || end == p || id < 0) {
    fprintf (stderr, "%s: \"%s\" is not a ublk device (use /dev/ublkbN)\n",
             progname, s);
    return -1;
  }
  return id;
}

int
nbdzone_detach (int argc, char **argv)
{
  struct control c;
  struct ublksrv_ctrl_dev_info info;
  char why[300];
  int id, r, i;

  if (argc != 1) {
    fprintf (stderr, "usage: %s detach /dev/ublkbN\n", progname);
    return EXIT_FAILURE;
  }
  id = parse_device (argv[0]);
  if (id < 0)
    return EXIT_FAILURE;
  r = control_open (&c);
  if (ublk_unavailable (r, why, sizeof why)) {
    fprintf (stderr, "%s: cannot detach %s: %s\n", progname, argv[0], why);
    return EXIT_FAILURE;
  }
  memset (&info, 0, sizeof info);
  r = control_cmd (&c, UBLK_U_CMD_GET_DEV_INFO, id, &info, sizeof info, 0);
  if (r < 0) {
    fprintf (stderr, "%s: %s: no such ublk device (%s)\n", progname, argv[0],
             strerror (-r));
    control_close (&c);
    return EXIT_FAILURE;
  }
  /* The serving process sees the device stop, finishes its queues and
   * deletes the device; DEL_DEV here waits for that (or does it, if
   * the server is gone).
   */
  r = control_cmd (&c, UBLK_U_CMD_STOP_DEV, id, NULL, 0, 0);
  if (r < 0 && r != -ENODEV)
    fprintf (stderr, "%s: stopping %s: %s\n", progname, argv[0],
             strerror (-r));
  for (i = 0; i < 300 && info.ublksrv_pid > 0 &&
         kill (info.ublksrv_pid, 0) == 0; i++)
    usleep (100000);
  r = control_cmd (&c, UBLK_U_CMD_DEL_DEV, id, NULL, 0, 0);
  control_close (&c);
  if (r < 0 && r != -ENODEV) {
    fprintf (stderr, "%s: cannot delete %s: %s\n", progname, argv[0],
             strerror (-r));
    return EXIT_FAILURE;
  }
  return EXIT_SUCCESS;
}

/* Is the process PID still there to serve (not gone, not a zombie)? */
static bool
server_running (pid_t pid)
{
  char path[64], buf[256], *p;
  FILE *fp;
  bool zombie = false;

  if (pid <= 0 || (kill (pid, 0) == -1 && errno != EPERM))
    return false;
  snprintf (path, sizeof path, "/proc/%d/stat", (int) pid);
  fp = fopen (path, "r");
  if (fp) {
    /* "PID (COMM) STATE ...": COMM may hold spaces and parentheses. */
    if (fgets (buf, sizeof buf, fp) && (p = strrchr (buf, ')')) && p[1])
      zombie = p[2] == 'Z';
    fclose (fp);
  }
  return !zombie;
}

static int
compare_ints (const void *a, const void *b)
{
  return *(const int *) a - *(const int *) b;
}

static const char *
state_name (uint16_t state)
{
  switch (state) {
  case UBLK_S_DEV_LIVE: return "live";
  case UBLK_S_DEV_DEAD: return "dead";
  case UBLK_S_DEV_QUIESCED: return "quiesced";
  default: return "unknown";
  }
}

/* Every ublk device, from its character device: the block device is
 * gone once its server has died, but the device stays until detach,
 * and that is when the user most needs to see it.
 */
int
nbdzone_list (int argc, char **argv)
{
  struct control c;
  char why[300];
  DIR *dir;
  struct dirent *e;
  int r, *ids = NULL, n = 0, i;

  r = control_open (&c);
  if (ublk_unavailable (r, why, sizeof why)) {
    fprintf (stderr, "%s: %s\n", progname, why);
    return EXIT_FAILURE;
  }
  dir = opendir ("/dev");
  while (dir && (e = readdir (dir))) {
    int id, end = 0, *more;

    if (sscanf (e->d_name, "ublkc%d%n", &id, &end) != 1 ||
        e->d_name[end] || id < 0)
      continue;
    more = realloc (ids, (n + 1) * sizeof *ids);
    if (!more)
      break;
    ids = more;
    ids[n++] = id;
  }
  if (dir)
    closedir (dir);
  qsort (ids, n, sizeof *ids, compare_ints);
  for (i = 0; i < n; i++) {
    struct ublksrv_ctrl_dev_info info;

    memset (&info, 0, sizeof info);
    if (control_cmd (&c, UBLK_U_CMD_GET_DEV_INFO, ids[i], &info,
                     sizeof info, 0) < 0)
      continue;
    printf ("/dev/ublkb%d pid %d queues %u depth %u%s %s", ids[i],
            info.ublksrv_pid, info.nr_hw_queues, info.queue_depth,
            info.flags & UBLK_F_ZONED ? " zoned" : "",
            state_name (info.state));
    if (!server_running (info.ublksrv_pid))
      printf (", server gone (nbdzone detach /dev/ublkb%d removes it)",
              ids[i]);
    putchar ('\n');
  }
  free (ids);
  control_close (&c);
  return EXIT_SUCCESS;
}

/* The queue threads of nbdzone attach and its reply timeout (attach.h).
 *
 * Each ublk queue has one thread, one io_uring and one NBD connection.
 * The ring carries the queue's FETCH_REQ and COMMIT_AND_FETCH_REQ
 * commands (ublk-dev.c) and poll requests on the NBD socket and on an
 * eventfd that stops the thread, so one wait covers the kernel, the
 * server and the stop.  The watchdog thread fails everything with EIO
 * once a request and its connection have both been silent for
 * --timeout: it shuts the sockets down, and libnbd fails what is in
 * flight and every new request.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include <liburing.h>
#include <libnbd.h>

#include "attach.h"
#include "target-rules.h"

static void
fetch (struct queue *q, int tag)
{
  ublk_io_cmd (&q->ring, q->d->cdev, UBLK_U_IO_FETCH_REQ, q->id, tag, 0, 0);
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
  if (link_state (q->d) == LINK_BROKEN) {
    io->deferred = true;        /* started once the connection is back */
    return;
  }
  r = start_io (io);
  if (r < 0 && link_state (q->d) == LINK_BROKEN) {
    io->deferred = true;        /* it failed for want of a connection */
    return;
  }
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
volatile sig_atomic_t dump_wanted[64];

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
    if (q->waiting && link_state (d) != LINK_BROKEN)
      retry_held_appends (q);
    park_if_broken (q);
    /* Requests the reconnect found landed are ready as it resumes:
     * committed now, not after the next wait (up to a second).
     */
    finish_ready (q);
    if (q->id < 64 && dump_wanted[q->id]) {
      dump_wanted[q->id] = 0;
      dump_queue (q);
    }
  }
  q->exited = true;
  return NULL;
}

int
start_queue (struct dev *d, struct queue *q, int id)
{
  char why[512];
  int tag, r;

  q->d = d;
  q->id = id;
  q->iods = ublk_map_iods (d->cdev, id, d->depth, &q->iods_len);
  if (!q->iods)
    return -1;
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

void
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
  if (d->added && d->reconnect_s) {
    char why[200];

    snprintf (why, sizeof why, "no reply from the server for %" PRIu64
              " s (--timeout)", waited_ms / 1000);
    if (link_broken (d, why))
      return;
  }
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
    if (!d->timed_out && link_state (d) == LINK_UP)
      check_reply_times (d);
  }
  return NULL;
}

void
start_watchdog (struct dev *d)
{
  if (d->timeout_s && create_thread (&d->watchdog, watchdog_thread, d) == 0)
    d->watchdog_started = true;
}

void
stop_watchdog (struct dev *d)
{
  if (d->watchdog_started) {
    __atomic_store_n (&d->watchdog_stop, true, __ATOMIC_RELAXED);
    pthread_join (d->watchdog, NULL);
    d->watchdog_started = false;
  }
}

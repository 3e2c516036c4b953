/* nbdzone attach: a zoned NBD export as a host-managed zoned block device
 * of the kernel (/dev/ublkbN), served by this process through ublk.
 *
 * How it works.  This file is the command and the device's life: it
 * connects to the export (zone-export.c), checks that its geometry can
 * be a zoned ublk device, creates the device through /dev/ublk-control
 * (ublk-dev.c: ADD_DEV with UBLK_F_ZONED and UBLK_F_USER_COPY, then
 * SET_PARAMS with the geometry from the export description), starts
 * the queues (attach-queue.c) and serves until a detach or a signal,
 * in the background like nbd-client unless --foreground.  Each ublk queue has one thread, one
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
 * Requests become NBD requests in target-io.c, zone appends are placed
 * in target-zones.c.  Zones map onto NBD as the zbd plugin's profile says: the report is
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
 * When the connection breaks (the server restarts, the network drops,
 * or the server stops answering for --timeout), reconnect.c holds every
 * request and connects again for up to --reconnect seconds; it resumes
 * only on the same disk with the same key, and the zones' write
 * pointers say which writes in flight landed.  Without --reconnect, or
 * once it gives up, libnbd fails what is in flight and every new
 * request at once, so the kernel sees EIO; the device stays until
 * "nbdzone detach" (STOP_DEV, DEL_DEV) or a signal.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

#include <liburing.h>
#include <libnbd.h>

#include "attach.h"
#include "nbdzone.h"
#include "target-rules.h"

static void
usage_attach (void)
{
  fprintf (stderr, "usage: %s attach URI [--queues N] [--depth N] [--id N] "
           "[--timeout SECONDS] [--reconnect SECONDS] [--foreground]\n"
           "       %s attach --recover /dev/ublkbN URI [--timeout SECONDS] "
           "[--reconnect SECONDS] [--foreground]\n", progname, progname);
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
volatile sig_atomic_t got_signal;

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
  if (d->recovering) {
    journal_open (d, true);
    recover_mark_zones (d);
    r = control_cmd (&c, UBLK_U_CMD_START_USER_RECOVERY, d->id, NULL, 0, 0);
    if (r < 0) {
      fprintf (stderr, "%s: cannot recover /dev/ublkb%d: the kernel refused "
               "to start the recovery: %s\n", progname, d->id, strerror (-r));
      goto out;
    }
    goto open_cdev;
  }
  memset (&info, 0, sizeof info);
  info.nr_hw_queues = d->nr_queues;
  info.queue_depth = d->depth;
  info.max_io_buf_bytes = d->max_io;
  info.dev_id = d->id;
  info.ublksrv_pid = getpid ();
  info.flags = UBLK_F_USER_COPY | UBLK_F_ZONED | UBLK_F_CMD_IOCTL_ENCODE;
  /* A process that may reconnect holds I/O rather than fail it: if it
   * dies, the kernel holds the device's I/O for attach --recover.
   */
  if (d->reconnect_s)
    info.flags |= UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE;
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
  if (info.flags & UBLK_F_USER_RECOVERY) {
    identity_save (d);
    journal_open (d, false);
  }

 open_cdev:
  snprintf (path, sizeof path, "/dev/ublkc%d", d->id);
  d->cdev = open_when_present (path, O_RDWR | O_CLOEXEC);
  if (d->cdev == -1) {
    fprintf (stderr, "%s: cannot open %s: %m\n", progname, path);
    goto out;
  }
  for (i = 0; i < d->nr_queues; i++)
    if (start_queue (d, &d->queues[i], i) == -1)
      goto out;
  start_reconnector (d);
  /* END_USER_RECOVERY, like START_DEV, waits until every queue has
   * fetched; then the held requests come.
   */
  r = control_cmd (&c, d->recovering ? UBLK_U_CMD_END_USER_RECOVERY :
                   UBLK_U_CMD_START_DEV, d->id, NULL, 0, getpid ());
  if (r < 0) {
    fprintf (stderr, "%s: cannot %s /dev/ublkb%d: %s\n", progname,
             d->recovering ? "end the recovery of" : "start", d->id,
             strerror (-r));
    goto out;
  }
  started = added = true;
  d->added = true;
  snprintf (path, sizeof path, "/dev/ublkb%d\n", d->id);
  if (write (report_fd, path, strlen (path)) != (ssize_t) strlen (path))
    goto out;
  if (report_fd != STDOUT_FILENO)
    close (report_fd);
  report_fd = -1;
  fprintf (stderr, "%s: /dev/ublkb%d %s %s (%" PRIu64 " zones of %"
           PRIu64 " bytes, %d queue(s) of depth %d)\n", progname, d->id,
           d->recovering ? "recovered: it serves" : "serves",
           d->ctl.uri, d->nr_zones, d->ctl.l.g.zone_size, d->nr_queues,
           d->depth);
  serve_until_stopped (d, &c);
  ret = EXIT_SUCCESS;

 out:
  /* STOP_DEV lets the queues finish or fail what is in flight (the disk
   * is removed only once its requests are done), then aborts the
   * fetches; the character device must be closed before DEL_DEV.
   */
  /* First the reconnect, which fails what it holds: STOP_DEV waits for
   * every request the kernel handed over.
   */
  stop_reconnector (d);
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
  journal_close (d);
  if (added)
    identity_forget (d->id);
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
                   .timeout_s = DEFAULT_TIMEOUT_S,
                   .reconnect_s = DEFAULT_RECONNECT_S };
  const char *uri = NULL;
  int recover_id = -1;
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
    else if (i + 1 < argc && strcmp (argv[i], "--reconnect") == 0)
      d.reconnect_s = arg_int ("--reconnect", argv[++i], 0, 86400);
    else if (i + 1 < argc && strcmp (argv[i], "--recover") == 0) {
      recover_id = parse_device (argv[++i]);
      if (recover_id < 0)
        return EXIT_FAILURE;
    }
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
  if (recover_id >= 0) {
    struct nbdzone_ublk_params expected;

    fill_params (&d, &expected);
    if (recover_probe (&d, recover_id, &expected) == -1)
      return EXIT_FAILURE;
  }
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
  pthread_mutex_init (&d.link_lock, NULL);
  pthread_cond_init (&d.link_cond, NULL);
  /* Resuming on a server that may be another disk could write one
   * disk's data over another's: no identity, no reconnect.
   */
  if (d.reconnect_s && !d.ctl.l.g.disk_id[0]) {
    fprintf (stderr, "%s: warning: %s does not say which disk it serves "
             "(no disk-id in its export description: not the zbd plugin, "
             "or an older one), so a broken connection cannot be resumed "
             "safely: --reconnect is off, and I/O fails with EIO if the "
             "connection breaks\n", progname, uri);
    d.reconnect_s = 0;
  }

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

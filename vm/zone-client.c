/* zone-client: drive a zoned NBD export from the VM tests.
 *
 * The guest has no Python, so the tests that need more than dd and
 * nbdcopy use this small libnbd program.  Every byte it writes comes from
 * a pattern that is a pure function of (seed, absolute offset), so any
 * range can be checked later without keeping the data anywhere, even
 * after the server was killed.
 *
 *   zone-client gen SEED OFFSET LENGTH                  pattern to stdout
 *   zone-client write URI OFFSET LENGTH SEED [CHUNK]    in-order writes
 *   zone-client verify URI OFFSET LENGTH SEED|zero      read and compare
 *   zone-client shuffle URI OFFSET LENGTH SEED CHUNK CONNS WINDOW RSEED
 *       pipelined writes on CONNS connections; each WINDOW of consecutive
 *       chunks is issued at once in a shuffled order
 *   zone-client stream URI OFFSET LENGTH SEED CHUNK FLUSH_EVERY [PAUSE_MS]
 *       in-order writes, a flush every FLUSH_EVERY chunks, printing
 *       "flushed END" after each flush returned, PAUSE_MS between
 *       chunks (so a test can kill the server mid-stream on any machine)
 *   zone-client trim URI OFFSET LENGTH
 *   zone-client zero URI OFFSET LENGTH                  write zeroes
 *   zone-client flush URI
 *   zone-client devzone open|close DEV OFFSET LENGTH
 *       BLKOPENZONE/BLKCLOSEZONE on a zoned block device, opened without
 *       O_EXCL: blkzone opens the device exclusively, and the plugin
 *       holds a served drive with O_EXCL, so only this reaches a drive
 *       while it is served (as another user of the host could)
 *
 * With ZONE_CLIENT_UNALIGNED set in the environment, requests that are
 * not aligned to the export's minimum block size are sent anyway (libnbd
 * refuses them by default), so the server's error can be checked.
 *
 * A failed request prints "errno=NAME" (EIO, ENOSPC, EINVAL...) so the
 * tests can assert which error reached the client.  Exit status: 0 on
 * success, 1 on a failed request or a mismatch, 2 on bad usage.
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>

#include <linux/blkzoned.h>
#include <libnbd.h>

/* How long a window of pipelined writes may take before the client gives
 * up: longer than the plugin's gap timeout, so the plugin's answer (not
 * ours) is what the test sees.
 */
#define POLL_TIMEOUT_MS (120 * 1000)

static const char *
errno_name (int e)
{
  switch (e) {
  case 0: return "0";
  case EIO: return "EIO";
  case ENOSPC: return "ENOSPC";
  case EINVAL: return "EINVAL";
  case EPERM: return "EPERM";
  case ENOTSUP: return "ENOTSUP";
  case EOVERFLOW: return "EOVERFLOW";
  case ENOMEM: return "ENOMEM";
  case ESHUTDOWN: return "ESHUTDOWN";
  case ENOTCONN: return "ENOTCONN";
  case ETIMEDOUT: return "ETIMEDOUT";
  case ECONNRESET: return "ECONNRESET";
  case EPIPE: return "EPIPE";
  default: return "other";
  }
}

static void
report_error (const char *what, uint64_t offset)
{
  int e = nbd_get_errno ();

  printf ("zone-client: %s at %" PRIu64 " failed: %s (errno=%s)\n",
          what, offset, nbd_get_error (), errno_name (e));
  fflush (stdout);
}

/* splitmix64: a good mix of (seed, offset) into the 8 bytes there. */
static uint64_t
mix (uint64_t x)
{
  x += UINT64_C (0x9E3779B97F4A7C15);
  x = (x ^ (x >> 30)) * UINT64_C (0xBF58476D1CE4E5B9);
  x = (x ^ (x >> 27)) * UINT64_C (0x94D049BB133111EB);
  return x ^ (x >> 31);
}

/* Fill buf with the pattern of seed for [offset, offset+len); offset
 * and len are multiples of 8.
 */
static void
fill_pattern (unsigned char *buf, uint64_t seed, uint64_t offset, size_t len)
{
  size_t i;
  int b;

  for (i = 0; i < len; i += 8) {
    uint64_t v = mix (seed * UINT64_C (0x100000001B3) ^ (offset + i));
    for (b = 0; b < 8; b++)
      buf[i + b] = v >> (8 * b);
  }
}

static uint64_t
parse_u64 (const char *s, const char *what)
{
  char *end;
  unsigned long long v;

  errno = 0;
  v = strtoull (s, &end, 0);
  if (errno || *s == '\0' || *end != '\0') {
    fprintf (stderr, "zone-client: %s: not a number: %s\n", what, s);
    exit (2);
  }
  return v;
}

static void *
xmalloc (size_t n)
{
  void *p = malloc (n ? n : 1);

  if (p == NULL) {
    perror ("malloc");
    exit (1);
  }
  return p;
}

static struct nbd_handle *
connect_to (const char *uri)
{
  struct nbd_handle *nbd = nbd_create ();

  if (nbd == NULL) {
    fprintf (stderr, "zone-client: %s\n", nbd_get_error ());
    exit (1);
  }
  /* The misaligned-request tests need the server's answer, so libnbd
   * must not refuse such requests itself.
   */
  if (getenv ("ZONE_CLIENT_UNALIGNED") &&
      nbd_set_strict_mode (nbd, nbd_get_strict_mode (nbd) &
                           ~LIBNBD_STRICT_ALIGN) == -1) {
    fprintf (stderr, "zone-client: %s\n", nbd_get_error ());
    exit (1);
  }
  if (nbd_connect_uri (nbd, uri) == -1) {
    fprintf (stderr, "zone-client: %s: %s\n", uri, nbd_get_error ());
    exit (1);
  }
  return nbd;
}

static void
check_aligned (uint64_t offset, uint64_t length)
{
  if (offset % 8 || length % 8) {
    fprintf (stderr, "zone-client: offset and length must be multiples of 8\n");
    exit (2);
  }
}

static int
do_gen (uint64_t seed, uint64_t offset, uint64_t length)
{
  const size_t bufsize = 1 << 20;
  unsigned char *buf = xmalloc (bufsize);

  check_aligned (offset, length);
  while (length > 0) {
    size_t n = length < bufsize ? length : bufsize;
    fill_pattern (buf, seed, offset, n);
    if (fwrite (buf, 1, n, stdout) != n) {
      perror ("zone-client: stdout");
      return 1;
    }
    offset += n;
    length -= n;
  }
  free (buf);
  return fflush (stdout) == 0 ? 0 : 1;
}

/* In-order writes of CHUNK bytes, each after the previous replied; with
 * flush_every > 0 a flush every flush_every chunks (and at the end),
 * printing how far the flushed data reaches.
 */
static void
pause_ms (uint64_t ms)
{
  struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000 };

  while (nanosleep (&ts, &ts) == -1 && errno == EINTR)
    ;
}

static int
do_write (const char *uri, uint64_t offset, uint64_t length, uint64_t seed,
          uint64_t chunk, uint64_t flush_every, uint64_t pause)
{
  struct nbd_handle *nbd = connect_to (uri);
  unsigned char *buf = xmalloc (chunk);
  uint64_t done = 0, chunks = 0;

  check_aligned (offset, length);
  while (done < length) {
    size_t n = length - done < chunk ? length - done : chunk;
    fill_pattern (buf, seed, offset + done, n);
    if (nbd_pwrite (nbd, buf, n, offset + done, 0) == -1) {
      report_error ("write", offset + done);
      return 1;
    }
    done += n;
    chunks++;
    if (flush_every > 0 && (chunks % flush_every == 0 || done == length)) {
      if (nbd_flush (nbd, 0) == -1) {
        report_error ("flush", offset + done);
        return 1;
      }
      printf ("flushed %" PRIu64 "\n", offset + done);
      fflush (stdout);
    }
    if (pause)
      pause_ms (pause);
  }
  free (buf);
  nbd_shutdown (nbd, 0);
  nbd_close (nbd);
  return 0;
}

static int
do_verify (const char *uri, uint64_t offset, uint64_t length,
           const char *seed_str)
{
  struct nbd_handle *nbd = connect_to (uri);
  const size_t bufsize = 1 << 20;
  unsigned char *got = xmalloc (bufsize), *want = xmalloc (bufsize);
  bool zero = strcmp (seed_str, "zero") == 0;
  uint64_t seed = zero ? 0 : parse_u64 (seed_str, "seed");
  uint64_t done = 0;

  check_aligned (offset, length);
  while (done < length) {
    size_t n = length - done < bufsize ? length - done : bufsize, i;
    if (nbd_pread (nbd, got, n, offset + done, 0) == -1) {
      report_error ("read", offset + done);
      return 1;
    }
    if (zero)
      memset (want, 0, n);
    else
      fill_pattern (want, seed, offset + done, n);
    if (memcmp (got, want, n) != 0) {
      for (i = 0; got[i] == want[i]; i++)
        ;
      printf ("zone-client: mismatch at %" PRIu64 ": read 0x%02x, expected 0x%02x"
              " (pattern %s)\n", offset + done + i, got[i], want[i], seed_str);
      return 1;
    }
    done += n;
  }
  free (got);
  free (want);
  nbd_shutdown (nbd, 0);
  nbd_close (nbd);
  return 0;
}

/* One write in flight in the shuffled stream. */
struct pending {
  struct nbd_handle *nbd;
  int64_t cookie;
  uint64_t offset;
  unsigned char *buf;
};

/* Poll every connection until all pending writes completed.  Returns
 * the number of failed writes.
 */
static unsigned
wait_all (struct nbd_handle **conns, size_t nconns,
          struct pending *p, size_t np)
{
  struct pollfd *fds = xmalloc (nconns * sizeof *fds);
  size_t left = np, i;
  unsigned failed = 0;

  while (left > 0) {
    for (i = 0; i < nconns; i++) {
      unsigned dir = nbd_aio_get_direction (conns[i]);
      fds[i].fd = nbd_aio_get_fd (conns[i]);
      fds[i].events = ((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
                      ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0);
      fds[i].revents = 0;
    }
    int r = poll (fds, nconns, POLL_TIMEOUT_MS);
    if (r == -1) {
      perror ("zone-client: poll");
      exit (1);
    }
    if (r == 0) {
      printf ("zone-client: %zu writes still pending after %d s\n",
              left, POLL_TIMEOUT_MS / 1000);
      exit (1);
    }
    for (i = 0; i < nconns; i++) {
      if (fds[i].revents & (POLLIN | POLLHUP | POLLERR))
        nbd_aio_notify_read (conns[i]);
      else if (fds[i].revents & POLLOUT)
        nbd_aio_notify_write (conns[i]);
    }
    for (i = 0; i < np; i++) {
      if (p[i].nbd == NULL)
        continue;
      int c = nbd_aio_command_completed (p[i].nbd, p[i].cookie);
      if (c == 0)
        continue;
      if (c == -1) {
        report_error ("pipelined write", p[i].offset);
        failed++;
      }
      free (p[i].buf);
      p[i].nbd = NULL;
      left--;
    }
  }
  free (fds);
  return failed;
}

static uint64_t rng_state;

static uint64_t
rng_next (void)
{
  rng_state = mix (rng_state);
  return rng_state;
}

static int
do_shuffle (const char *uri, uint64_t offset, uint64_t length, uint64_t seed,
            uint64_t chunk, uint64_t nconns, uint64_t window, uint64_t rseed)
{
  struct nbd_handle **conns;
  uint64_t nchunks, w, i;
  size_t *order;
  struct pending *p;
  unsigned failed = 0;

  check_aligned (offset, length);
  if (chunk == 0 || length % chunk || nconns == 0 || window == 0) {
    fprintf (stderr, "zone-client: shuffle: bad chunk, connections or window\n");
    return 2;
  }
  conns = xmalloc (nconns * sizeof *conns);
  for (i = 0; i < nconns; i++)
    conns[i] = connect_to (uri);
  nchunks = length / chunk;
  order = xmalloc (window * sizeof *order);
  p = xmalloc (window * sizeof *p);
  rng_state = rseed;

  for (w = 0; w < nchunks; w += window) {
    size_t n = nchunks - w < window ? nchunks - w : window, j;

    for (j = 0; j < n; j++)
      order[j] = w + j;
    for (j = n - 1; j > 0; j--) {      /* Fisher-Yates */
      size_t k = rng_next () % (j + 1), t = order[j];
      order[j] = order[k];
      order[k] = t;
    }
    printf ("window %" PRIu64 ":", w);
    for (j = 0; j < n; j++) {
      uint64_t off = offset + order[j] * chunk;
      struct nbd_handle *nbd = conns[j % nconns];

      p[j].buf = xmalloc (chunk);
      fill_pattern (p[j].buf, seed, off, chunk);
      p[j].offset = off;
      p[j].nbd = nbd;
      p[j].cookie = nbd_aio_pwrite (nbd, p[j].buf, chunk, off,
                                    NBD_NULL_COMPLETION, 0);
      if (p[j].cookie == -1) {
        report_error ("submitting a write", off);
        exit (1);
      }
      printf (" %zu", order[j]);
    }
    printf ("\n");
    fflush (stdout);
    failed += wait_all (conns, nconns, p, n);
  }

  for (i = 0; i < nconns; i++) {
    nbd_shutdown (conns[i], 0);
    nbd_close (conns[i]);
  }
  free (conns);
  free (order);
  free (p);
  return failed ? 1 : 0;
}

static int
do_simple (const char *cmd, const char *uri, uint64_t offset, uint64_t length)
{
  struct nbd_handle *nbd = connect_to (uri);
  int r;

  if (strcmp (cmd, "trim") == 0)
    r = nbd_trim (nbd, length, offset, 0);
  else if (strcmp (cmd, "zero") == 0)
    r = nbd_zero (nbd, length, offset, 0);
  else
    r = nbd_flush (nbd, 0);
  if (r == -1) {
    report_error (cmd, offset);
    return 1;
  }
  nbd_shutdown (nbd, 0);
  nbd_close (nbd);
  return 0;
}

static int
do_devzone (const char *op, const char *dev, uint64_t offset, uint64_t length)
{
  struct blk_zone_range range = { .sector = offset / 512,
                                  .nr_sectors = length / 512 };
  unsigned long req;
  int fd, r;

  if (strcmp (op, "open") == 0)
    req = BLKOPENZONE;
  else if (strcmp (op, "close") == 0)
    req = BLKCLOSEZONE;
  else {
    fprintf (stderr, "zone-client: devzone: unknown operation %s\n", op);
    return 2;
  }
  fd = open (dev, O_WRONLY);
  if (fd == -1) {
    fprintf (stderr, "zone-client: %s: %m\n", dev);
    return 1;
  }
  r = ioctl (fd, req, &range);
  if (r == -1)
    fprintf (stderr, "zone-client: %s zones [%" PRIu64 ", +%" PRIu64
             ") of %s: %m\n", op, offset, length, dev);
  close (fd);
  return r == -1 ? 1 : 0;
}

static void
usage (void)
{
  fprintf (stderr,
           "usage: zone-client gen SEED OFFSET LENGTH\n"
           "       zone-client write URI OFFSET LENGTH SEED [CHUNK]\n"
           "       zone-client verify URI OFFSET LENGTH SEED|zero\n"
           "       zone-client shuffle URI OFFSET LENGTH SEED CHUNK CONNS WINDOW RSEED\n"
           "       zone-client stream URI OFFSET LENGTH SEED CHUNK FLUSH_EVERY [PAUSE_MS]\n"
           "       zone-client trim URI OFFSET LENGTH\n"
           "       zone-client flush URI\n"
           "       zone-client devzone open|close DEV OFFSET LENGTH\n");
  exit (2);
}

#define N(i, what) parse_u64 (argv[i], what)

int
main (int argc, char *argv[])
{
  const char *cmd = argc > 1 ? argv[1] : "";

  if (strcmp (cmd, "gen") == 0 && argc == 5)
    return do_gen (N (2, "seed"), N (3, "offset"), N (4, "length"));
  if (strcmp (cmd, "write") == 0 && (argc == 6 || argc == 7))
    return do_write (argv[2], N (3, "offset"), N (4, "length"), N (5, "seed"),
                     argc == 7 ? N (6, "chunk") : 256 * 1024, 0, 0);
  if (strcmp (cmd, "verify") == 0 && argc == 6)
    return do_verify (argv[2], N (3, "offset"), N (4, "length"), argv[5]);
  if (strcmp (cmd, "shuffle") == 0 && argc == 10)
    return do_shuffle (argv[2], N (3, "offset"), N (4, "length"),
                       N (5, "seed"), N (6, "chunk"), N (7, "connections"),
                       N (8, "window"), N (9, "shuffle seed"));
  if (strcmp (cmd, "stream") == 0 && (argc == 8 || argc == 9))
    return do_write (argv[2], N (3, "offset"), N (4, "length"), N (5, "seed"),
                     N (6, "chunk"), N (7, "flush interval"),
                     argc == 9 ? N (8, "pause") : 0);
  if ((strcmp (cmd, "trim") == 0 || strcmp (cmd, "zero") == 0) && argc == 5)
    return do_simple (cmd, argv[2], N (3, "offset"), N (4, "length"));
  if (strcmp (cmd, "flush") == 0 && argc == 3)
    return do_simple (cmd, argv[2], 0, 0);
  if (strcmp (cmd, "devzone") == 0 && argc == 6)
    return do_devzone (argv[2], argv[3], N (4, "offset"), N (5, "length"));
  usage ();
  return 2;
}

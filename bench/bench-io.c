/* bench-io: drive an NBD export with a fixed number of requests in
 * flight and report how long the requests took.
 *
 *   bench-io [options] URI
 *
 *   -o read|write      operation (default read)
 *   -p seq|rand        access pattern (default seq)
 *   -b SIZE            request size in bytes (suffix k/M/G allowed)
 *   -q N               requests in flight (queue depth)
 *   -s OFFSET          first byte of the region (default 0)
 *   -l LENGTH          length of the region (default: export size - offset)
 *   -n COUNT           number of requests (default: LENGTH / SIZE)
 *   -t SECONDS         stop submitting after this long (default: no limit),
 *                      so a slow configuration cannot stall the suite
 *   -w LENGTH          first, untimed, the same operation over LENGTH bytes
 *                      with 16 requests in flight (warm-up)
 *   -x OFFSET          where the warm-up starts (default: -s); a zoned
 *                      export is warmed up in another zone
 *   -P PID             also report the CPU time process PID (the server)
 *                      spent during the timed part
 *
 * The warm-up runs on the same connection as the timed part because
 * nbdkit starts a connection's worker threads when it connects: a fresh
 * thread's first requests pay for allocating and touching its buffers,
 * which in a virtual machine can cost as much as the I/O itself.
 *
 * Sequential requests are submitted in ascending offset order on one
 * connection, so the server receives them in that order: this is what
 * lets a zoned export accept a pipelined stream into one zone.
 *
 * The clock starts just before the first timed request is submitted and
 * stops when the last reply has arrived; connecting, the handshake and
 * the warm-up are not counted.  The result is one line of key=value
 * words for the harness: ops, bytes, seconds, client_cpu (this process)
 * and, with -P, server_cpu.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/types.h>
#include <unistd.h>

#include <libnbd.h>

#include "monotonic.h"

struct options {
  bool write;
  bool random;
  uint64_t request_size;
  unsigned queue_depth;
  uint64_t offset;
  uint64_t length;              /* 0 = to the end of the export */
  uint64_t count;               /* 0 = length / request_size */
  double time_limit;            /* 0 = none */
  uint64_t warmup_length;       /* 0 = no warm-up */
  uint64_t warmup_offset;
  bool warmup_offset_set;
  pid_t server_pid;             /* 0 = do not measure the server */
  const char *uri;
};

/* Shared by the completion callbacks (libnbd calls them on this thread). */
static uint64_t completed;
static int first_error;

static void
usage (void)
{
  fprintf (stderr,
           "usage: bench-io [-o read|write] [-p seq|rand] [-b SIZE] [-q N]\n"
           "                [-s OFFSET] [-l LENGTH] [-n COUNT] [-t SECONDS]\n"
           "                [-w LENGTH] [-x OFFSET] [-P PID] URI\n");
  exit (EXIT_FAILURE);
}

/* Parse "4096", "64k", "1M", "2G" (powers of 1024). */
static uint64_t
parse_size (const char *s)
{
  char *end;
  uint64_t v;

  errno = 0;
  v = strtoull (s, &end, 10);
  if (errno || end == s) {
    fprintf (stderr, "bench-io: cannot parse size: %s\n", s);
    exit (EXIT_FAILURE);
  }
  switch (*end) {
  case 'k': case 'K': v <<= 10; end++; break;
  case 'm': case 'M': v <<= 20; end++; break;
  case 'g': case 'G': v <<= 30; end++; break;
  }
  if (*end != '\0') {
    fprintf (stderr, "bench-io: cannot parse size: %s\n", s);
    exit (EXIT_FAILURE);
  }
  return v;
}

static void
parse_options (int argc, char *argv[], struct options *o)
{
  int c;

  *o = (struct options) { .request_size = 1 << 20, .queue_depth = 16 };
  while ((c = getopt (argc, argv, "o:p:b:q:s:l:n:t:w:x:P:")) != -1) {
    switch (c) {
    case 'o':
      if (strcmp (optarg, "write") == 0) o->write = true;
      else if (strcmp (optarg, "read") == 0) o->write = false;
      else usage ();
      break;
    case 'p':
      if (strcmp (optarg, "rand") == 0) o->random = true;
      else if (strcmp (optarg, "seq") == 0) o->random = false;
      else usage ();
      break;
    case 'b': o->request_size = parse_size (optarg); break;
    case 'q': o->queue_depth = (unsigned) parse_size (optarg); break;
    case 's': o->offset = parse_size (optarg); break;
    case 'l': o->length = parse_size (optarg); break;
    case 'n': o->count = parse_size (optarg); break;
    case 't': o->time_limit = atof (optarg); break;
    case 'w': o->warmup_length = parse_size (optarg); break;
    case 'x':
      o->warmup_offset = parse_size (optarg);
      o->warmup_offset_set = true;
      break;
    case 'P': o->server_pid = atoi (optarg); break;
    default: usage ();
    }
  }
  if (optind != argc - 1 || o->request_size == 0 || o->queue_depth == 0)
    usage ();
  o->uri = argv[optind];
}

/* xorshift64*: cheap, and the same sequence every run so that every
 * configuration reads the same offsets.
 */
static uint64_t
next_random (uint64_t *state)
{
  *state ^= *state >> 12;
  *state ^= *state << 25;
  *state ^= *state >> 27;
  return *state * UINT64_C (2685821657736338717);
}

static int
request_done (void *user_data, int *error)
{
  if (*error && !first_error)
    first_error = *error;
  completed++;
  return 1;                     /* retire the command */
}

static uint64_t
request_offset (const struct options *o, uint64_t i, uint64_t *rng)
{
  uint64_t slots = o->length / o->request_size;

  if (o->random)
    return o->offset + (next_random (rng) % slots) * o->request_size;
  return o->offset + (i % slots) * o->request_size;
}

static int
submit (struct nbd_handle *nbd, const struct options *o, void *buf,
        uint64_t offset)
{
  nbd_completion_callback cb = { .callback = request_done };

  if (o->write)
    return nbd_aio_pwrite (nbd, buf, o->request_size, offset, cb, 0) == -1
      ? -1 : 0;
  return nbd_aio_pread (nbd, buf, o->request_size, offset, cb, 0) == -1
    ? -1 : 0;
}

/* Keep queue_depth requests in flight until count have completed (or
 * the time limit has passed and the requests in flight have completed).
 * Returns the number of requests submitted, or -1.
 */
static int64_t
run (struct nbd_handle *nbd, const struct options *o, void *buf,
     double start)
{
  uint64_t submitted = 0, rng = UINT64_C (0x9e3779b97f4a7c15);
  uint64_t target = o->count;

  while (completed < target && !first_error) {
    if (o->time_limit > 0 && target > submitted &&
        monotonic_seconds () - start > o->time_limit)
      target = submitted;       /* stop submitting; drain what is in flight */
    while (submitted < target &&
           nbd_aio_in_flight (nbd) < (int) o->queue_depth) {
      if (submit (nbd, o, buf, request_offset (o, submitted, &rng)) == -1)
        return -1;
      submitted++;
    }
    if (completed < target && nbd_poll (nbd, -1) == -1)
      return -1;
  }
  return submitted;
}

/* Data that no layer can mistake for zeroes or compress away. */
static void *
make_buffer (size_t size)
{
  unsigned char *buf = malloc (size);
  uint64_t rng = 1;
  size_t i;

  if (buf == NULL) {
    perror ("malloc");
    exit (EXIT_FAILURE);
  }
  for (i = 0; i < size; i++)
    buf[i] = next_random (&rng) >> 56;
  return buf;
}

/* The CPU time (user + system, every thread) of process PID so far. */
static double
process_cpu (pid_t pid)
{
  clockid_t clock;
  struct timespec ts;

  if (pid == 0)
    clock = CLOCK_PROCESS_CPUTIME_ID;
  else if (clock_getcpuclockid (pid, &clock) != 0)
    return -1;
  if (clock_gettime (clock, &ts) == -1)
    return -1;
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Untimed: the same operation with 16 in flight over the warm-up region. */
static void
warm_up (struct nbd_handle *nbd, const struct options *o, void *buf)
{
  struct options w = *o;

  w.offset = o->warmup_offset_set ? o->warmup_offset : o->offset;
  w.length = o->warmup_length;
  w.count = w.length / w.request_size;
  w.queue_depth = 16;
  w.time_limit = 0;
  if (w.count == 0)
    return;
  if (run (nbd, &w, buf, monotonic_seconds ()) == -1) {
    fprintf (stderr, "bench-io: warm-up: %s\n", nbd_get_error ());
    exit (EXIT_FAILURE);
  }
  if (first_error) {
    fprintf (stderr, "bench-io: warm-up request failed: %s\n",
             strerror (first_error));
    exit (EXIT_FAILURE);
  }
  completed = 0;
}

int
main (int argc, char *argv[])
{
  struct options o;
  struct nbd_handle *nbd;
  int64_t export_size;
  void *buf;
  double start, seconds, client0, server0, client_cpu, server_cpu;
  int64_t done;

  parse_options (argc, argv, &o);

  nbd = nbd_create ();
  if (nbd == NULL || nbd_connect_uri (nbd, o.uri) == -1 ||
      (export_size = nbd_get_size (nbd)) == -1) {
    fprintf (stderr, "bench-io: %s\n", nbd_get_error ());
    exit (EXIT_FAILURE);
  }
  if (o.length == 0)
    o.length = export_size - o.offset;
  if (o.length < o.request_size) {
    fprintf (stderr, "bench-io: region smaller than one request\n");
    exit (EXIT_FAILURE);
  }
  if (o.count == 0)
    o.count = o.length / o.request_size;
  buf = make_buffer (o.request_size);
  warm_up (nbd, &o, buf);

  server0 = o.server_pid ? process_cpu (o.server_pid) : 0;
  client0 = process_cpu (0);
  start = monotonic_seconds ();
  done = run (nbd, &o, buf, start);
  if (done == -1) {
    fprintf (stderr, "bench-io: %s\n", nbd_get_error ());
    exit (EXIT_FAILURE);
  }
  seconds = monotonic_seconds () - start;
  client_cpu = process_cpu (0) - client0;
  server_cpu = o.server_pid ? process_cpu (o.server_pid) - server0 : 0;
  if (first_error) {
    fprintf (stderr, "bench-io: request failed: %s\n", strerror (first_error));
    exit (EXIT_FAILURE);
  }

  printf ("ops=%" PRIu64 " bytes=%" PRIu64 " seconds=%.6f client_cpu=%.6f",
          (uint64_t) done, (uint64_t) done * o.request_size, seconds,
          client_cpu);
  if (o.server_pid)
    printf (" server_cpu=%.6f", server_cpu);
  printf ("\n");
  nbd_shutdown (nbd, 0);
  nbd_close (nbd);
  free (buf);
  return EXIT_SUCCESS;
}

/* Measure where the crypt pool beats inline encryption on this machine,
 * to choose crypt-pool-threshold (the default of crypt-mode=auto).
 *
 *   make -C filters/cryptinline measure-pool
 *   filters/cryptinline/measure-pool [THREADS]
 *
 * For each request size it encrypts 64 MiB one request at a time (as a
 * QD1 client would), inline and through the same pool code the filter
 * uses with THREADS cipher threads in all (default: online CPUs), and
 * prints the best of five runs of each.  I/O is left out on purpose: the
 * cipher work is all the pool can speed up.
 */

#include <config.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "xts.h"
#include "pool.h"
#include "monotonic.h"

/* pool.c reports errors through nbdkit; outside nbdkit, to stderr. */
void
nbdkit_error (const char *fs, ...)
{
  va_list args;

  va_start (args, fs);
  vfprintf (stderr, fs, args);
  fputc ('\n', stderr);
  va_end (args);
}

#define SECTOR 4096
#define MIN_CHUNK (32 * 1024)   /* as the filter */

static unsigned char key[XTS_KEY_BYTES_256];
static const struct xts_format format = { .sector_size = SECTOR };
static __thread gcry_cipher_hd_t thread_hd;

struct task { unsigned char *out; const unsigned char *in; };

static int
encrypt_chunk (void *arg, size_t start, size_t len)
{
  const struct task *t = arg;

  if (thread_hd == NULL && xts_open (&thread_hd, key, sizeof key) != 0)
    return -1;
  return xts_encrypt (thread_hd, &format, t->out + start, t->in + start,
                      len, start) ? -1 : 0;
}

static size_t
chunk_size (size_t len, unsigned threads)
{
  size_t chunk = (len + threads - 1) / threads;

  chunk = (chunk + SECTOR - 1) / SECTOR * SECTOR;
  return chunk < MIN_CHUNK ? MIN_CHUNK : chunk;
}

int
main (int argc, char *argv[])
{
  static const size_t sizes[] = {
    32 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10,
    1 << 20, 2 << 20, 4 << 20, 8 << 20,
  };
  const size_t total = 64 << 20, max = 8 << 20;
  long cpus = sysconf (_SC_NPROCESSORS_ONLN);
  unsigned threads = argc > 1 ? atoi (argv[1]) : cpus > 0 ? cpus : 1;
  unsigned char *in = calloc (1, max), *out = malloc (max);
  struct task task = { out, in };
  const char *why;
  size_t i, k;

  if ((why = xts_library_init ()) != NULL) {
    fprintf (stderr, "measure-pool: %s\n", why);
    return 1;
  }
  if (threads < 1 || in == NULL || out == NULL ||
      pool_start (threads - 1) == -1) {
    fprintf (stderr, "usage: measure-pool [THREADS >= 1]\n");
    return 1;
  }
  for (i = 0; i < sizeof key; ++i)
    key[i] = i * 7 + 1;
  printf ("AES-256-XTS, %d-byte sectors, %u cipher threads, "
          "one request at a time\n", SECTOR, threads);
  printf ("%10s %12s %12s %8s\n", "request", "inline us", "pool us",
          "speedup");
  for (k = 0; k < sizeof sizes / sizeof sizes[0]; ++k) {
    size_t len = sizes[k], reps = total / len;
    double best[2] = { 1e9, 1e9 };
    int round, mode;

    for (round = 0; round < 5; ++round)
      for (mode = 0; mode < 2; ++mode) {
        double start = monotonic_seconds (), t;
        for (i = 0; i < reps; ++i)
          if ((mode == 0 ? encrypt_chunk (&task, 0, len)
               : pool_run (len, chunk_size (len, threads), encrypt_chunk,
                           &task)) == -1) {
            fprintf (stderr, "measure-pool: encryption failed\n");
            return 1;
          }
        t = (monotonic_seconds () - start) / reps * 1e6;
        if (t < best[mode])
          best[mode] = t;
      }
    printf ("%10zu %12.1f %12.1f %8.2f\n", len, best[0], best[1],
            best[0] / best[1]);
  }
  pool_stop ();
  free (in);
  free (out);
  return 0;
}

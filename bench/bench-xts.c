/* bench-xts: the speed of AES-XTS on this machine, one thread, through
 * the same cipher layer the cryptinline filter uses (common/xts.c:
 * libgcrypt, dm-crypt aes-xts-plain64, one IV per crypt sector).  This
 * is the physical limit the filter is measured against: the CPU the
 * filter adds per GiB should be close to what this program spends.
 *
 *   bench-xts [-k KEYBYTES] [-S SECTORSIZE] [-b REQUESTSIZE] [-m MIB]
 *             [-p PAIRS]
 *
 * It works on one request-sized buffer at a time, as the filter does:
 * encryption goes from the client's buffer into a second buffer (a
 * write cannot change the client's data), decryption is in place (a
 * read decrypts what it just read).  -m MiB are processed per
 * direction, after one warm-up buffer.
 *
 * Two references, one line each per direction: one hot buffer pair used
 * again and again (pairs=1: the best case, in the CPU's cache), and
 * PAIRS pairs used in turn (default 16: a server's requests come in
 * buffers that are not in the cache, as the filter sees them):
 *
 *   op=encrypt pairs=16 sector=4096 key=64 bytes=... cpu_seconds=...
 *       cpu_s_per_gib=...
 */

#include <config.h>

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "xts.h"

struct options {
  unsigned key_bytes;           /* 32: AES-128-XTS, 64: AES-256-XTS */
  struct xts_format format;
  size_t request_size;
  size_t total_mib;
  unsigned pairs;               /* the rotating reference's buffer pairs */
};

static void
die (const char *what, const char *why)
{
  fprintf (stderr, "bench-xts: %s: %s\n", what, why);
  exit (EXIT_FAILURE);
}

static void
usage (void)
{
  fprintf (stderr, "usage: bench-xts [-k 32|64] [-S SECTORSIZE] "
           "[-b REQUESTSIZE] [-m MIB] [-p PAIRS]\n");
  exit (EXIT_FAILURE);
}

static void
parse_options (int argc, char *argv[], struct options *o)
{
  int c;

  *o = (struct options) {
    .key_bytes = XTS_KEY_BYTES_256,
    .format = { .sector_size = 4096 },
    .request_size = 1 << 20,
    .total_mib = 2048,
    .pairs = 16,
  };
  while ((c = getopt (argc, argv, "k:S:b:m:p:")) != -1) {
    switch (c) {
    case 'k': o->key_bytes = atoi (optarg); break;
    case 'S': o->format.sector_size = atoi (optarg); break;
    case 'b': o->request_size = strtoul (optarg, NULL, 0); break;
    case 'm': o->total_mib = strtoul (optarg, NULL, 0); break;
    case 'p': o->pairs = strtoul (optarg, NULL, 0); break;
    default: usage ();
    }
  }
  if ((o->key_bytes != XTS_KEY_BYTES_128 && o->key_bytes != XTS_KEY_BYTES_256) ||
      !xts_valid_sector_size (o->format.sector_size) ||
      o->request_size == 0 || o->request_size % o->format.sector_size ||
      o->total_mib == 0 || o->pairs == 0 || o->pairs > 1024)
    usage ();
}

static double
cpu_now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *
xmalloc (size_t n)
{
  void *p = malloc (n);

  if (p == NULL)
    die ("malloc", "out of memory");
  memset (p, 0x5a, n);          /* touch every page before timing */
  return p;
}

static void
crypt_request (gcry_cipher_hd_t hd, bool encrypt, const struct options *o,
               unsigned char *in, unsigned char *out, uint64_t offset)
{
  gcry_error_t err;

  err = encrypt
    ? xts_encrypt (hd, &o->format, out, in, o->request_size, offset)
    : xts_decrypt (hd, &o->format, in, in, o->request_size, offset);
  if (err)
    die (encrypt ? "xts_encrypt" : "xts_decrypt", gcry_strerror (err));
}

/* Process total_mib MiB in request-sized pieces at ascending offsets,
 * so the IVs change as they do on a disk, the pieces taken from the
 * first pairs of the buffer pairs in turn.
 */
static void
measure (gcry_cipher_hd_t hd, bool encrypt, const struct options *o,
         unsigned char **in, unsigned char **out, unsigned pairs)
{
  const uint64_t total = (uint64_t) o->total_mib << 20;
  uint64_t offset, i;
  double start, cpu;

  crypt_request (hd, encrypt, o, in[0], out[0], 0);     /* warm-up */
  start = cpu_now ();
  for (offset = 0, i = 0; offset < total; offset += o->request_size, ++i)
    crypt_request (hd, encrypt, o, in[i % pairs], out[i % pairs], offset);
  cpu = cpu_now () - start;

  printf ("op=%s pairs=%u sector=%" PRIu32 " key=%u bytes=%" PRIu64
          " cpu_seconds=%.6f cpu_s_per_gib=%.6f\n",
          encrypt ? "encrypt" : "decrypt", pairs, o->format.sector_size,
          o->key_bytes, total, cpu, cpu / ((double) total / (1 << 30)));
}

int
main (int argc, char *argv[])
{
  struct options o;
  gcry_cipher_hd_t hd;
  unsigned char key[XTS_KEY_BYTES_256];
  unsigned char **in, **out;
  unsigned i;
  const char *why;
  gcry_error_t err;

  parse_options (argc, argv, &o);
  why = xts_library_init ();
  if (why)
    die ("libgcrypt", why);
  gcry_randomize (key, o.key_bytes, GCRY_STRONG_RANDOM);
  err = xts_open (&hd, key, o.key_bytes);
  if (err)
    die ("xts_open", gcry_strerror (err));

  in = calloc (o.pairs, sizeof *in);
  out = calloc (o.pairs, sizeof *out);
  if (in == NULL || out == NULL)
    die ("calloc", "out of memory");
  for (i = 0; i < o.pairs; ++i) {
    in[i] = xmalloc (o.request_size);
    out[i] = xmalloc (o.request_size);
  }
  measure (hd, true, &o, in, out, 1);
  measure (hd, false, &o, in, out, 1);
  if (o.pairs > 1) {
    measure (hd, true, &o, in, out, o.pairs);
    measure (hd, false, &o, in, out, o.pairs);
  }

  gcry_cipher_close (hd);
  for (i = 0; i < o.pairs; ++i) {
    free (in[i]);
    free (out[i]);
  }
  free (in);
  free (out);
  return EXIT_SUCCESS;
}

/* bench-xts: the speed of AES-XTS with libgcrypt on this machine, one
 * thread, in the dm-crypt aes-xts-plain64 layout (one IV per sector,
 * the little-endian sector number).  This is the physical limit the
 * filter is measured against: its added CPU per GiB should be close to
 * what this program spends per GiB.
 *
 *   bench-xts [-k KEYBYTES] [-S SECTORSIZE] [-m MIB] [-r REPEATS]
 *
 * Prints one line per direction:
 *   op=encrypt sector=512 key=64 bytes=... cpu_seconds=... cpu_s_per_gib=...
 */

#include <config.h>

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <gcrypt.h>

struct options {
  unsigned key_bytes;           /* 32: AES-128-XTS, 64: AES-256-XTS */
  unsigned sector_size;
  size_t buffer_mib;
  unsigned repeats;
};

static void
die (const char *what, gcry_error_t err)
{
  fprintf (stderr, "bench-xts: %s: %s\n", what, gcry_strerror (err));
  exit (EXIT_FAILURE);
}

static void
usage (void)
{
  fprintf (stderr,
           "usage: bench-xts [-k 32|64] [-S SECTORSIZE] [-m MIB] [-r REPEATS]\n");
  exit (EXIT_FAILURE);
}

static void
parse_options (int argc, char *argv[], struct options *o)
{
  int c;

  *o = (struct options) {
    .key_bytes = 64, .sector_size = 512, .buffer_mib = 64, .repeats = 8
  };
  while ((c = getopt (argc, argv, "k:S:m:r:")) != -1) {
    switch (c) {
    case 'k': o->key_bytes = atoi (optarg); break;
    case 'S': o->sector_size = atoi (optarg); break;
    case 'm': o->buffer_mib = atoi (optarg); break;
    case 'r': o->repeats = atoi (optarg); break;
    default: usage ();
    }
  }
  if ((o->key_bytes != 32 && o->key_bytes != 64) ||
      o->sector_size < 512 || o->sector_size > 4096 ||
      (o->sector_size & (o->sector_size - 1)) ||
      o->buffer_mib == 0 || o->repeats == 0)
    usage ();
}

static double
cpu_now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static gcry_cipher_hd_t
open_cipher (unsigned key_bytes)
{
  gcry_cipher_hd_t hd;
  unsigned char key[64];
  gcry_error_t err;

  gcry_randomize (key, key_bytes, GCRY_STRONG_RANDOM);
  err = gcry_cipher_open (&hd, key_bytes == 64 ? GCRY_CIPHER_AES256
                                               : GCRY_CIPHER_AES128,
                          GCRY_CIPHER_MODE_XTS, 0);
  if (err) die ("gcry_cipher_open", err);
  err = gcry_cipher_setkey (hd, key, key_bytes);
  if (err) die ("gcry_cipher_setkey", err);
  return hd;
}

/* plain64: the IV is the sector number (in 512-byte units), little
 * endian, zero-padded to the cipher block.
 */
static void
crypt_sector (gcry_cipher_hd_t hd, int encrypt, unsigned char *sector,
              unsigned size, uint64_t sector_512)
{
  unsigned char iv[16] = { 0 };
  gcry_error_t err;
  int i;

  for (i = 0; i < 8; i++)
    iv[i] = sector_512 >> (8 * i);
  err = gcry_cipher_setiv (hd, iv, sizeof iv);
  if (err) die ("gcry_cipher_setiv", err);
  err = encrypt ? gcry_cipher_encrypt (hd, sector, size, NULL, 0)
                : gcry_cipher_decrypt (hd, sector, size, NULL, 0);
  if (err) die ("gcry_cipher_encrypt/decrypt", err);
}

static void
crypt_buffer (gcry_cipher_hd_t hd, int encrypt, unsigned char *buf,
              size_t len, unsigned sector_size)
{
  size_t off;

  for (off = 0; off < len; off += sector_size)
    crypt_sector (hd, encrypt, buf + off, sector_size, off / 512);
}

static void
measure (gcry_cipher_hd_t hd, int encrypt, unsigned char *buf,
         const struct options *o)
{
  size_t len = o->buffer_mib << 20;
  double start, cpu;
  unsigned r;

  crypt_buffer (hd, encrypt, buf, len, o->sector_size);  /* warm up */
  start = cpu_now ();
  for (r = 0; r < o->repeats; r++)
    crypt_buffer (hd, encrypt, buf, len, o->sector_size);
  cpu = cpu_now () - start;

  printf ("op=%s sector=%u key=%u bytes=%zu cpu_seconds=%.6f "
          "cpu_s_per_gib=%.6f\n",
          encrypt ? "encrypt" : "decrypt", o->sector_size, o->key_bytes,
          len * o->repeats, cpu, cpu / (len * (double) o->repeats / (1 << 30)));
}

int
main (int argc, char *argv[])
{
  struct options o;
  gcry_cipher_hd_t hd;
  unsigned char *buf;

  parse_options (argc, argv, &o);
  if (!gcry_check_version (GCRYPT_VERSION)) {
    fprintf (stderr, "bench-xts: libgcrypt version mismatch\n");
    exit (EXIT_FAILURE);
  }
  gcry_control (GCRYCTL_INITIALIZATION_FINISHED, 0);

  buf = malloc (o.buffer_mib << 20);
  if (buf == NULL) {
    perror ("malloc");
    exit (EXIT_FAILURE);
  }
  memset (buf, 0x5a, o.buffer_mib << 20);

  hd = open_cipher (o.key_bytes);
  measure (hd, 1, buf, &o);
  measure (hd, 0, buf, &o);
  gcry_cipher_close (hd);
  free (buf);
  return EXIT_SUCCESS;
}

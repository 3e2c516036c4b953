/* bench-luks-open: how long the cryptinline filter takes to open a LUKS
 * header's key slot (crypt-header=), through the filter's own code
 * (filters/cryptinline/luks.c).  The time is the slot's key derivation
 * by design: cryptsetup tunes the KDF to cost about a second or two, so
 * this is the start-up delay a user sees, and the wait before a wrong
 * passphrase is refused (every usable slot is tried once).
 *
 *   bench-luks-open HEADER PASSFILE [RUNS]
 *
 * The passphrase is the whole of PASSFILE (as crypt-key-file reads it).
 * One line: version, slot opened, runs, median and minimum seconds, and
 * the time to refuse a wrong passphrase (every usable slot tried once).
 */

#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xts.h"
#include "luks.h"
#include "monotonic.h"

static int
by_value (const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;
  return x < y ? -1 : x > y;
}

int
main (int argc, char *argv[])
{
  struct luks_volume vol;
  char why[LUKS_WHY_LEN];
  char pass[4096];
  size_t len;
  double *t, wrong;
  int runs = argc > 3 ? atoi (argv[3]) : 3, i;
  FILE *f;
  const char *err;

  if (argc < 3 || runs < 1) {
    fprintf (stderr, "usage: bench-luks-open HEADER PASSFILE [RUNS]\n");
    return 2;
  }
  if ((err = xts_library_init ()) != NULL) {
    fprintf (stderr, "bench-luks-open: %s\n", err);
    return 1;
  }
  if ((f = fopen (argv[2], "rb")) == NULL) {
    perror (argv[2]);
    return 1;
  }
  len = fread (pass, 1, sizeof pass, f);
  fclose (f);
  if ((t = calloc (runs, sizeof *t)) == NULL)
    return 1;
  for (i = 0; i < runs; ++i) {
    double start = monotonic_seconds ();
    if (luks_open (argv[1], pass, len, &vol, why) == -1) {
      fprintf (stderr, "bench-luks-open: %s\n", why);
      return 1;
    }
    t[i] = monotonic_seconds () - start;
    if (i + 1 < runs)
      luks_volume_wipe (&vol);
  }
  qsort (t, runs, sizeof *t, by_value);
  luks_volume_wipe (&vol);
  {
    struct luks_volume no;
    double start = monotonic_seconds ();
    if (luks_open (argv[1], "not the passphrase", 18, &no, why) == 0) {
      fprintf (stderr, "bench-luks-open: a wrong passphrase opened a slot\n");
      return 1;
    }
    wrong = monotonic_seconds () - start;
  }
  printf ("header=%s luks=%u slot=%d runs=%d median_s=%.3f min_s=%.3f "
          "wrong_passphrase_s=%.3f\n", argv[1], vol.version, vol.keyslot,
          runs, t[runs / 2], t[0], wrong);
  explicit_bzero (pass, sizeof pass);
  free (t);
  return 0;
}

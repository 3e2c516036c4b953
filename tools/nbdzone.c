/* nbdzone: report, reset and finish the zones of a zoned NBD export,
 * and the commands that serve it as a zoned block device.
 *
 * NBD has no zone commands; the zbd plugin maps zones onto standard
 * requests (see nbdkit-zbd-plugin(1), "THE ZONED NBD PROFILE").  The
 * export unit (zone-export.c) reads the geometry from the export
 * description and each write pointer from block status (the first hole
 * in a sequential zone); this file resets zones with trim and finishes
 * them with write-zeroes from the write pointer to the capacity end.
 * "nbdzone attach" serves the export as a zoned block device of the
 * kernel (attach.c), "detach" and "list" manage such devices
 * (ublk-dev.c).
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "nbdzone.h"
#include "zone-export.h"

static void
usage (FILE *fp)
{
  fprintf (fp,
           "usage: %s report URI [OFFSET [LENGTH]]\n"
           "       %s reset URI OFFSET|all\n"
           "       %s finish URI OFFSET\n"
           "       %s attach URI [--queues N] [--depth N] [--id N] "
           "[--timeout SECONDS] [--foreground]\n"
           "       %s detach /dev/ublkbN\n"
           "       %s list\n"
           "OFFSET and LENGTH are bytes (suffixes K, M, G, T allowed).\n",
           progname, progname, progname, progname, progname, progname);
}

/* A byte count: decimal digits only (a leading zero is not octal, 0x is
 * not hex: a mistyped number must not select another zone to reset),
 * optionally one suffix K, M, G or T (powers of 1024).
 */
static int
parse_bytes (const char *s, uint64_t *v)
{
  uint64_t n = 0;
  int shift = 0;

  if (*s < '0' || *s > '9')
    return -1;
  for (; *s >= '0' && *s <= '9'; s++) {
    if (n > (UINT64_MAX - (*s - '0')) / 10)
      return -1;
    n = n * 10 + (*s - '0');
  }
  switch (*s) {
  case '\0': break;
  case 'K': case 'k': shift = 10; s++; break;
  case 'M': case 'm': shift = 20; s++; break;
  case 'G': case 'g': shift = 30; s++; break;
  case 'T': case 't': shift = 40; s++; break;
  default: return -1;
  }
  if (*s || (shift && n > (UINT64_MAX >> shift)))
    return -1;
  *v = n << shift;
  return 0;
}

static uint64_t
arg_bytes (const char *what, const char *s)
{
  uint64_t v;

  if (parse_bytes (s, &v) == -1) {
    fprintf (stderr, "%s: %s \"%s\" is not a byte count (use e.g. 0, "
             "268435456, 256M)\n", progname, what, s);
    exit (EXIT_FAILURE);
  }
  return v;
}

/* The WP of sequential zone Z. */
static uint64_t
zone_wp (const struct disk *d, uint64_t z)
{
  char err[512];
  uint64_t wp;

  if (zone_wps_sync (d->nbd, &d->l, z, 1, &wp, err, sizeof err) == -1)
    die_msg (d, "cannot read the write pointers of", err);
  return wp;
}

/* Condition, with blkzone's numbers and names.  NBD does not tell an
 * implicitly open zone from an explicitly open or a closed one: a partly
 * written zone is shown as implicitly open (oi), the state a write
 * leaves a zone in.
 */
static void
print_zone (const struct disk *d, uint64_t z, uint64_t wp)
{
  struct blk_zone bz;
  bool conv = zone_is_conv (&d->l, z);
  const char *cond;

  zone_describe (&d->l, z, wp, &bz);
  switch (bz.cond) {
  case BLK_ZONE_COND_EMPTY: cond = "em"; break;
  case BLK_ZONE_COND_FULL: cond = "fu"; break;
  case BLK_ZONE_COND_IMP_OPEN: cond = "oi"; break;
  case BLK_ZONE_COND_READONLY: cond = "ro"; break;
  case BLK_ZONE_COND_OFFLINE: cond = "of"; break;
  default: cond = "nw"; break;
  }
  /* blkzone shows conventional WPs at the start */
  printf ("  start: 0x%09" PRIx64 ", len 0x%06" PRIx64 ", cap 0x%06" PRIx64
          ", wptr 0x%06" PRIx64 " reset:0 non-seq:0, zcond:%2d(%s) "
          "[type: %d(%s)]\n", (uint64_t) bz.start, (uint64_t) bz.len,
          (uint64_t) bz.capacity, conv ? 0 : (uint64_t) (bz.wp - bz.start),
          bz.cond, cond, conv ? 1 : 2,
          conv ? "CONVENTIONAL" : "SEQ_WRITE_REQUIRED");
}

static uint64_t
zone_at_start (const struct disk *d, uint64_t offset)
{
  uint64_t z = offset / d->l.g.zone_size;

  if (offset >= d->l.size) {
    fprintf (stderr, "%s: offset %" PRIu64 " is beyond the end of the "
             "export (%" PRIu64 " bytes)\n", progname, offset, d->l.size);
    exit (EXIT_FAILURE);
  }
  if (offset % d->l.g.zone_size) {
    fprintf (stderr, "%s: offset %" PRIu64 " is not at a zone start (zones "
             "are %" PRIu64 " bytes; the nearest zone starts are %" PRIu64
             " and %" PRIu64 ")\n", progname, offset, d->l.g.zone_size,
             zone_start (&d->l, z), zone_start (&d->l, z + 1));
    exit (EXIT_FAILURE);
  }
  return z;
}

static int
do_report (struct disk *d, int argc, char **argv)
{
  if (argc > 2) {
    fprintf (stderr, "%s: report takes at most OFFSET and LENGTH, not %d "
             "arguments (see %s --help)\n", progname, argc, progname);
    return EXIT_FAILURE;
  }
  uint64_t offset = argc > 0 ? arg_bytes ("OFFSET", argv[0]) : 0;
  uint64_t length = argc > 1 ? arg_bytes ("LENGTH", argv[1]) : d->l.size;
  uint64_t first, z, end, *wps;
  char err[512];

  if (offset >= d->l.size) {
    fprintf (stderr, "%s: offset %" PRIu64 " is beyond the end of the "
             "export (%" PRIu64 " bytes)\n", progname, offset, d->l.size);
    return EXIT_FAILURE;
  }
  first = offset / d->l.g.zone_size;
  for (end = first;
       end < zone_count (&d->l) && zone_start (&d->l, end) < offset + length;
       end++)
    ;
  /* One scan over all the zones, as the ublk device's reports do. */
  wps = calloc (end - first, sizeof *wps);
  if (!wps) {
    perror ("calloc");
    return EXIT_FAILURE;
  }
  if (zone_wps_sync (d->nbd, &d->l, first, end - first, wps,
                     err, sizeof err) == -1)
    die_msg (d, "cannot read the write pointers of", err);
  for (z = first; z < end; z++)
    print_zone (d, z, wps[z - first]);
  free (wps);
  return EXIT_SUCCESS;
}

/* Reset zones [FIRST, END) with trims (zone-report.c splits them). */
static void
trim_zones (struct disk *d, uint64_t first, uint64_t end)
{
  uint64_t off, len;

  while (zone_trim_next (&d->l, &first, end, &off, &len)) {
    if (len > UINT32_MAX) {
      fprintf (stderr, "%s: zones of %" PRIu64 " bytes are too large for "
               "one NBD request, so they cannot be reset over NBD\n",
               progname, d->l.g.zone_size);
      exit (EXIT_FAILURE);
    }
    if (nbd_trim (d->nbd, len, off, 0) == -1)
      die_nbd (d, "reset (trim) failed on");
  }
}

static int
do_reset (struct disk *d, int argc, char **argv)
{
  uint64_t z;

  if (argc != 1) {
    fprintf (stderr, "%s: reset takes one OFFSET (or all), not %d arguments "
             "(see %s --help)\n", progname, argc, progname);
    return EXIT_FAILURE;
  }
  if (strcmp (argv[0], "all") == 0) {
    trim_zones (d, 0, zone_count (&d->l));
    return EXIT_SUCCESS;
  }
  z = zone_at_start (d, arg_bytes ("OFFSET", argv[0]));
  if (zone_is_conv (&d->l, z)) {
    fprintf (stderr, "%s: zone %" PRIu64 " at offset %" PRIu64 " is "
             "conventional: it has no write pointer to reset\n", progname,
             z, zone_start (&d->l, z));
    return EXIT_FAILURE;
  }
  if (zone_is_unwritable (&d->l, z)) {
    fprintf (stderr, "%s: zone %" PRIu64 " at offset %" PRIu64 " is %s "
             "on the server's device: it cannot be reset\n", progname, z,
             zone_start (&d->l, z),
             zoned_geometry_is_offline (&d->l.g, z) ? "offline" : "read-only");
    return EXIT_FAILURE;
  }
  trim_zones (d, z, z + 1);
  return EXIT_SUCCESS;
}

static int
do_finish (struct disk *d, int argc, char **argv)
{
  uint64_t z, wp, end;

  if (argc != 1) {
    fprintf (stderr, "%s: finish takes one OFFSET, not %d arguments "
             "(see %s --help)\n", progname, argc, progname);
    return EXIT_FAILURE;
  }
  z = zone_at_start (d, arg_bytes ("OFFSET", argv[0]));
  if (zone_is_conv (&d->l, z)) {
    fprintf (stderr, "%s: zone %" PRIu64 " at offset %" PRIu64 " is "
             "conventional: it cannot be finished\n", progname, z,
             zone_start (&d->l, z));
    return EXIT_FAILURE;
  }
  /* Its block status says data to the end, which would pass for full:
   * a device refuses to finish such a zone, and so does this.
   */
  if (zone_is_unwritable (&d->l, z)) {
    fprintf (stderr, "%s: zone %" PRIu64 " at offset %" PRIu64 " is %s "
             "on the server's device: it cannot be finished\n", progname, z,
             zone_start (&d->l, z),
             zoned_geometry_is_offline (&d->l.g, z) ? "offline" : "read-only");
    return EXIT_FAILURE;
  }
  wp = zone_wp (d, z);
  end = zone_start (&d->l, z) + zone_cap (&d->l, z);
  if (wp >= end)
    return EXIT_SUCCESS;        /* already full */
  if (end - wp > UINT32_MAX) {
    fprintf (stderr, "%s: zone %" PRIu64 " has more than 4 GiB left, too "
             "much for one NBD request\n", progname, z);
    return EXIT_FAILURE;
  }
  if (nbd_zero (d->nbd, end - wp, wp, 0) == -1)
    die_nbd (d, "finish (write zeroes) failed on");
  return EXIT_SUCCESS;
}

int
main (int argc, char *argv[])
{
  struct disk d = { 0 };
  const char *cmd;
  int r;

  if (argc == 2 && (strcmp (argv[1], "--help") == 0 ||
                    strcmp (argv[1], "-h") == 0)) {
    usage (stdout);
    return EXIT_SUCCESS;
  }
  if (argc >= 2 && strcmp (argv[1], "attach") == 0)
    return nbdzone_attach (argc - 2, argv + 2);
  if (argc >= 2 && strcmp (argv[1], "detach") == 0)
    return nbdzone_detach (argc - 2, argv + 2);
  if (argc >= 2 && strcmp (argv[1], "list") == 0)
    return nbdzone_list (argc - 2, argv + 2);
  if (argc < 3) {
    usage (stderr);
    return EXIT_FAILURE;
  }
  cmd = argv[1];
  if (strcmp (cmd, "report") != 0 && strcmp (cmd, "reset") != 0 &&
      strcmp (cmd, "finish") != 0) {
    fprintf (stderr, "%s: unknown command \"%s\" (use report, reset, "
             "finish, attach, detach or list)\n", progname, cmd);
    return EXIT_FAILURE;
  }
  connect_disk (&d, argv[2], 0, NULL);
  if (strcmp (cmd, "report") == 0)
    r = do_report (&d, argc - 3, argv + 3);
  else if (strcmp (cmd, "reset") == 0)
    r = do_reset (&d, argc - 3, argv + 3);
  else
    r = do_finish (&d, argc - 3, argv + 3);
  if (nbd_shutdown (d.nbd, 0) == -1 && r == EXIT_SUCCESS)
    die_nbd (&d, "cannot shut down the connection to");
  nbd_close (d.nbd);
  zoned_geometry_free (&d.l.g);
  return r;
}

/* libFuzzer harness: the export-description zone geometry parser.
 *
 * nbdzone (and any client) parses the description a server sends; the
 * server may be hostile.  Beyond memory errors (ASan, UBSan), every
 * accepted geometry must be one a client can use: one of the two
 * models, zones of a non-zero size whose total fits 64 bits, a
 * capacity within the zone, a block size dividing the zone size,
 * conventional ranges inside the zone count; the ranges, formatted and
 * parsed again,
 * name the same zones, and cut to a small buffer they name a prefix of
 * them and count the rest.  A refusal's reason is one line of printable
 * ASCII, whatever the server sent.
 */
#include <config.h>

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zoned-geometry.h"

#define CHECKED_ZONES 256

static void
check (bool ok, const char *what, const char *desc)
{
  if (!ok) {
    fprintf (stderr, "accepted geometry breaks: %s\ndescription: %s\n",
             what, desc);
    abort ();
  }
}

/* Parse RANGES (for N zones) again as the conventional zones of a
 * minimal description, into *G2.
 */
static void
reparse_ranges (const char *ranges, uint64_t n, struct zoned_geometry *g2,
                const char *what, const char *desc)
{
  char again[4 * CHECKED_ZONES + 128], err[256];

  snprintf (again, sizeof again,
            "zoned=host-managed zone-size=512 zones=%" PRIu64
            " conventional=%s", n, ranges);
  check (zoned_geometry_parse (again, g2, err, sizeof err) == 0, what, desc);
}

static void
check_ranges_roundtrip (const struct zoned_geometry *g, const char *desc)
{
  static bool is_conv[CHECKED_ZONES];
  uint64_t n = g->nr_zones < CHECKED_ZONES ? g->nr_zones : CHECKED_ZONES;
  char ranges[4 * CHECKED_ZONES];
  struct zoned_geometry g2;
  uint64_t z;

  for (z = 0; z < n; z++)
    is_conv[z] = zoned_geometry_is_conventional (g, z);
  check (zoned_format_ranges (is_conv, n, ranges, sizeof ranges) == 0,
         "conventional ranges do not fit the formatting buffer", desc);
  reparse_ranges (ranges, n, &g2, "formatted ranges are not accepted again",
                  desc);
  for (z = 0; z < n; z++)
    check (zoned_geometry_is_conventional (&g2, z) == is_conv[z],
           "formatted ranges name other zones", desc);
  zoned_geometry_free (&g2);
}

/* The same ranges cut to a buffer of BUFLEN bytes: what is kept parses
 * again, names only zones of the set, and is a prefix of it (every zone
 * of the set below the last one named is named), and the count of the
 * zones left out makes up the rest.
 */
static void
check_ranges_capped (const struct zoned_geometry *g, size_t buflen,
                     const char *desc)
{
  static bool is_conv[CHECKED_ZONES];
  uint64_t n = g->nr_zones < CHECKED_ZONES ? g->nr_zones : CHECKED_ZONES;
  char ranges[4 * CHECKED_ZONES];
  struct zoned_geometry g2;
  uint64_t z, omitted, set = 0, named = 0, last = 0;

  for (z = 0; z < n; z++) {
    is_conv[z] = zoned_geometry_is_conventional (g, z);
    set += is_conv[z];
  }
  omitted = zoned_format_ranges_capped (is_conv, n, ranges, buflen);
  check (strlen (ranges) < buflen, "cut ranges overrun their buffer", desc);
  reparse_ranges (ranges, n, &g2, "cut ranges are not accepted again", desc);
  for (z = 0; z < n; z++)
    if (zoned_geometry_is_conventional (&g2, z)) {
      check (is_conv[z], "cut ranges name a zone not in the set", desc);
      named++;
      last = z;
    }
  for (z = 0; named > 0 && z < last; z++)
    check (!is_conv[z] || zoned_geometry_is_conventional (&g2, z),
           "cut ranges skip a zone before the last one named", desc);
  check (named + omitted == set,
         "named and omitted zones do not add up to the set", desc);
  zoned_geometry_free (&g2);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct zoned_geometry g;
  char err[256];
  char *desc = malloc (size + 1);
  size_t i;

  if (desc == NULL)
    return 0;
  memcpy (desc, data, size);
  desc[size] = '\0';

  if (zoned_geometry_parse (desc, &g, err, sizeof err) == 0) {
    uint64_t total;

    check (strcmp (g.model, "host-managed") == 0 ||
           strcmp (g.model, "host-aware") == 0,
           "a model the profile does not define", desc);
    check (g.zone_size > 0 && g.nr_zones > 0, "no zones", desc);
    check (!__builtin_mul_overflow (g.zone_size, g.nr_zones, &total),
           "zone size x zones overflows 64 bits", desc);
    check (g.zone_capacity > 0 && g.zone_capacity <= g.zone_size,
           "capacity outside the zone", desc);
    check (g.block_size > 0 && g.zone_size % g.block_size == 0,
           "block size does not divide the zone size", desc);
    for (i = 0; i < g.nr_conventional_ranges; i++)
      check (g.conventional[i].first <= g.conventional[i].last &&
             g.conventional[i].last < g.nr_zones,
             "conventional range outside the zones", desc);
    for (i = 0; i < g.nr_readonly_ranges; i++)
      check (g.readonly[i].first <= g.readonly[i].last &&
             g.readonly[i].last < g.nr_zones,
             "read-only range outside the zones", desc);
    for (i = 0; i < g.nr_offline_ranges; i++)
      check (g.offline[i].first <= g.offline[i].last &&
             g.offline[i].last < g.nr_zones,
             "offline range outside the zones", desc);
    check_ranges_roundtrip (&g, desc);
    check_ranges_capped (&g, 5 + size % 32, desc);
    zoned_geometry_free (&g);
  }
  else {
    check (memchr (err, '\0', sizeof err) != NULL, "reason not terminated",
           desc);
    for (i = 0; err[i]; i++)
      check (err[i] >= 0x20 && err[i] < 0x7f,
             "the reason has a control character (from the server)", desc);
  }
  free (desc);
  return 0;
}

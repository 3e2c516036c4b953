/* Parse and format the zone geometry of the export description
 * (see zoned-geometry.h for the format).
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zoned-geometry.h"

/* S for a one-line message: bytes outside printable ASCII as \xNN, cut
 * to fit OUT with "..." (a hostile server must not put line breaks or
 * terminal controls into a log through its description).
 */
static const char *
quote (const char *s, char *out, size_t outlen)
{
  const unsigned char *p = (const unsigned char *) s;
  size_t used = 0;

  for (; *p; p++) {
    char esc[5];
    size_t n;

    if (*p >= 0x20 && *p < 0x7f && *p != '\\') {
      esc[0] = *p;
      esc[1] = '\0';
    }
    else
      snprintf (esc, sizeof esc, "\\x%02x", *p);
    n = strlen (esc);
    if (used + n + 4 > outlen) {
      snprintf (out + used, outlen - used, "...");
      return out;
    }
    memcpy (out + used, esc, n + 1);
    used += n;
  }
  if (used == 0 && outlen > 0)
    out[0] = '\0';
  return out;
}

#define QUOTED_MAX 200

static int
parse_u64 (const char *s, uint64_t *v)
{
  char *end;

  if (*s < '0' || *s > '9')
    return -1;
  errno = 0;
  *v = strtoull (s, &end, 10);
  return errno || *end ? -1 : 0;
}

static int
parse_ranges (const char *s, struct zoned_range **list, size_t *nr)
{
  char *copy, *tok, *save = NULL;
  int r = 0;

  if (strcmp (s, "none") == 0)
    return 0;
  copy = strdup (s);
  if (!copy)
    return -1;
  for (tok = strtok_r (copy, ",", &save); tok;
       tok = strtok_r (NULL, ",", &save)) {
    struct zoned_range rg, *p;
    char *dash = strchr (tok, '-');

    if (dash)
      *dash = '\0';
    if (parse_u64 (tok, &rg.first) == -1 ||
        parse_u64 (dash ? dash + 1 : tok, &rg.last) == -1 ||
        rg.last < rg.first) {
      r = -1;
      break;
    }
    p = realloc (*list, (*nr + 1) * sizeof *p);
    if (!p) {
      r = -1;
      break;
    }
    *list = p;
    (*list)[(*nr)++] = rg;
  }
  free (copy);
  return r;
}

/* Store the value of one key=value word; unknown keys are ignored. */
static int
parse_word (const char *key, const char *val, struct zoned_geometry *g)
{
  static const struct { const char *key; size_t off; } nums[] = {
    { "zone-size", offsetof (struct zoned_geometry, zone_size) },
    { "zone-capacity", offsetof (struct zoned_geometry, zone_capacity) },
    { "zones", offsetof (struct zoned_geometry, nr_zones) },
    { "max-open", offsetof (struct zoned_geometry, max_open) },
    { "max-active", offsetof (struct zoned_geometry, max_active) },
    { "block-size", offsetof (struct zoned_geometry, block_size) },
    { "states-omitted", offsetof (struct zoned_geometry, states_omitted) },
  };
  size_t i;

  if (strcmp (key, "zoned") == 0) {
    /* Version 1 of the profile has these two; a server that sends
     * another does not follow it, and a guess would misread its zones.
     */
    if (strcmp (val, "host-managed") != 0 && strcmp (val, "host-aware") != 0)
      return -1;
    snprintf (g->model, sizeof g->model, "%s", val);
    return 0;
  }
  if (strcmp (key, "disk-id") == 0 || strcmp (key, "key-check") == 0) {
    char *dst = key[0] == 'd' ? g->disk_id : g->key_check;
    size_t len = key[0] == 'd' ? sizeof g->disk_id : sizeof g->key_check;

    if (strlen (val) >= len)
      return -1;
    memcpy (dst, val, strlen (val) + 1);
    return 0;
  }
  if (strcmp (key, "conventional") == 0)
    return parse_ranges (val, &g->conventional, &g->nr_conventional_ranges);
  if (strcmp (key, "readonly") == 0)
    return parse_ranges (val, &g->readonly, &g->nr_readonly_ranges);
  if (strcmp (key, "offline") == 0)
    return parse_ranges (val, &g->offline, &g->nr_offline_ranges);
  for (i = 0; i < sizeof nums / sizeof nums[0]; i++)
    if (strcmp (key, nums[i].key) == 0)
      return parse_u64 (val, (uint64_t *) ((char *) g + nums[i].off));
  return 0;
}

/* Does a range of zone numbers name a zone past the last one? */
static int
ranges_beyond (const char *what, const struct zoned_range *r, size_t nr,
               uint64_t nr_zones, char *err, size_t errlen)
{
  size_t i;

  for (i = 0; i < nr; i++)
    if (r[i].last >= nr_zones) {
      snprintf (err, errlen, "%s zone %" PRIu64 " in the export "
                "description is beyond its %" PRIu64 " zones",
                what, r[i].last, nr_zones);
      return -1;
    }
  return 0;
}

/* A geometry a client can rely on: the description comes from a server
 * that may not be trusted, and a client computes offsets from it.
 */
static int
check_consistent (const struct zoned_geometry *g, char *err, size_t errlen)
{
  uint64_t total;

  if (g->block_size < 512 || g->block_size > 65536 ||
      (g->block_size & (g->block_size - 1)) != 0) {
    snprintf (err, errlen, "block-size=%" PRIu64 " in the export description "
              "is not a power of two from 512 to 65536", g->block_size);
    return -1;
  }
  if (g->zone_size % g->block_size || g->zone_capacity % g->block_size) {
    snprintf (err, errlen, "zone-size=%" PRIu64 " or zone-capacity=%" PRIu64
              " in the export description is not a whole number of "
              "%" PRIu64 "-byte blocks", g->zone_size, g->zone_capacity,
              g->block_size);
    return -1;
  }
  if (__builtin_mul_overflow (g->zone_size, g->nr_zones, &total)) {
    snprintf (err, errlen, "zones=%" PRIu64 " of zone-size=%" PRIu64
              " in the export description exceed 2^64 bytes",
              g->nr_zones, g->zone_size);
    return -1;
  }
  if (ranges_beyond ("conventional", g->conventional,
                     g->nr_conventional_ranges, g->nr_zones, err, errlen) ||
      ranges_beyond ("read-only", g->readonly, g->nr_readonly_ranges,
                     g->nr_zones, err, errlen) ||
      ranges_beyond ("offline", g->offline, g->nr_offline_ranges,
                     g->nr_zones, err, errlen))
    return -1;
  return 0;
}

int
zoned_geometry_parse (const char *description, struct zoned_geometry *g,
                      char *err, size_t errlen)
{
  char *copy, *word, *save = NULL;

  memset (g, 0, sizeof *g);
  if (!description || !*description) {
    snprintf (err, errlen, "the export has no description");
    return -1;
  }
  copy = strdup (description);
  if (!copy) {
    snprintf (err, errlen, "out of memory");
    return -1;
  }
  for (word = strtok_r (copy, " \t\n", &save); word;
       word = strtok_r (NULL, " \t\n", &save)) {
    char *eq = strchr (word, '=');

    if (!eq)
      continue;
    *eq = '\0';
    if (parse_word (word, eq + 1, g) == -1) {
      char qk[QUOTED_MAX], qv[QUOTED_MAX];
      snprintf (err, errlen, "bad value for %s in the export description: "
                "\"%s\"", quote (word, qk, sizeof qk),
                quote (eq + 1, qv, sizeof qv));
      free (copy);
      zoned_geometry_free (g);
      return -1;
    }
  }
  free (copy);

  if (!g->model[0]) {
    char q[QUOTED_MAX];
    snprintf (err, errlen, "the export description has no zoned= word "
              "(description: \"%s\")", quote (description, q, sizeof q));
    zoned_geometry_free (g);
    return -1;
  }
  if (g->zone_size == 0 || g->nr_zones == 0) {
    char q[QUOTED_MAX];
    snprintf (err, errlen, "the export description lacks zone-size= or "
              "zones= (description: \"%s\")", quote (description, q, sizeof q));
    zoned_geometry_free (g);
    return -1;
  }
  if (g->zone_capacity == 0 || g->zone_capacity > g->zone_size)
    g->zone_capacity = g->zone_size;
  if (g->block_size == 0)
    g->block_size = 512;
  if (check_consistent (g, err, errlen) == -1) {
    zoned_geometry_free (g);
    return -1;
  }
  return 0;
}

void
zoned_geometry_free (struct zoned_geometry *g)
{
  free (g->conventional);
  free (g->readonly);
  free (g->offline);
  g->conventional = g->readonly = g->offline = NULL;
  g->nr_conventional_ranges = g->nr_readonly_ranges = g->nr_offline_ranges = 0;
}

static bool
in_ranges (const struct zoned_range *r, size_t nr, uint64_t zone)
{
  size_t i;

  for (i = 0; i < nr; i++)
    if (zone >= r[i].first && zone <= r[i].last)
      return true;
  return false;
}

bool
zoned_geometry_is_conventional (const struct zoned_geometry *g, uint64_t zone)
{
  return in_ranges (g->conventional, g->nr_conventional_ranges, zone);
}

bool
zoned_geometry_is_readonly (const struct zoned_geometry *g, uint64_t zone)
{
  return in_ranges (g->readonly, g->nr_readonly_ranges, zone);
}

bool
zoned_geometry_is_offline (const struct zoned_geometry *g, uint64_t zone)
{
  return in_ranges (g->offline, g->nr_offline_ranges, zone);
}

/* Stops at the first range that does not fit and counts the zones
 * left out from there on.
 */
uint64_t
zoned_format_ranges_capped (const bool *is, uint64_t n, char *buf,
                            size_t buflen)
{
  uint64_t i = 0, omitted = 0;
  size_t used = 0;

  buf[0] = '\0';
  while (i < n) {
    uint64_t first;
    int len;

    if (!is[i]) {
      i++;
      continue;
    }
    first = i;
    while (i + 1 < n && is[i + 1])
      i++;
    if (omitted == 0) {
      if (first == i)
        len = snprintf (buf + used, buflen - used, "%s%" PRIu64,
                        used ? "," : "", first);
      else
        len = snprintf (buf + used, buflen - used, "%s%" PRIu64 "-%" PRIu64,
                        used ? "," : "", first, i);
      if (len >= 0 && (size_t) len < buflen - used) {
        used += len;
        i++;
        continue;
      }
      buf[used] = '\0';        /* drop the part of the range that fit */
    }
    omitted += i - first + 1;
    i++;
  }
  if (used == 0 && buflen > 4)
    snprintf (buf, buflen, "none");
  return omitted;
}

int
zoned_format_ranges (const bool *is_conv, uint64_t n, char *buf, size_t buflen)
{
  return zoned_format_ranges_capped (is_conv, n, buf, buflen) == 0 ? 0 : -1;
}

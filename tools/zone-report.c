/* Zone reports from NBD block status (see zone-report.h). */
#include <config.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <libnbd.h>

#include "zone-report.h"

/* Largest block status request: well inside NBD's 32-bit lengths. */
#define MAX_STATUS_REQUEST (1ULL << 30)

uint64_t
zone_start (const struct zone_layout *l, uint64_t z)
{
  return z * l->g.zone_size;
}

uint64_t
zone_len (const struct zone_layout *l, uint64_t z)
{
  uint64_t s = zone_start (l, z);

  return s + l->g.zone_size <= l->size ? l->g.zone_size : l->size - s;
}

bool
zone_is_conv (const struct zone_layout *l, uint64_t z)
{
  return zoned_geometry_is_conventional (&l->g, z);
}

uint64_t
zone_cap (const struct zone_layout *l, uint64_t z)
{
  uint64_t len = zone_len (l, z);

  if (zone_is_conv (l, z))
    return len;
  return l->g.zone_capacity < len ? l->g.zone_capacity : len;
}

uint64_t
zone_count (const struct zone_layout *l)
{
  uint64_t n = (l->size + l->g.zone_size - 1) / l->g.zone_size;

  return n < l->g.nr_zones ? n : l->g.nr_zones;
}

bool
zone_is_unwritable (const struct zone_layout *l, uint64_t z)
{
  return zoned_geometry_is_readonly (&l->g, z) ||
    zoned_geometry_is_offline (&l->g, z);
}

static bool
zone_resettable (const struct zone_layout *l, uint64_t z)
{
  return !zone_is_conv (l, z) && !zone_is_unwritable (l, z);
}

bool
zone_trim_next (const struct zone_layout *l, uint64_t *z, uint64_t end,
                uint64_t *offset, uint64_t *length)
{
  uint64_t limit = l->g.zone_size > (1ULL << 30) ? l->g.zone_size : 1ULL << 30;
  uint64_t run_end;

  while (*z < end && !zone_resettable (l, *z))
    (*z)++;
  if (*z >= end)
    return false;
  run_end = *z + 1;
  while (run_end < end && zone_resettable (l, run_end) &&
         (run_end - *z + 1) * l->g.zone_size <= limit)
    run_end++;
  *offset = zone_start (l, *z);
  *length = zone_start (l, run_end - 1) + zone_len (l, run_end - 1) - *offset;
  *z = run_end;
  return true;
}

/* Has the scan passed its last zone?  Past the end of the export, too:
 * a short last zone ends there, before the next zone would start.
 */
static bool
scan_done (const struct wp_scan *s)
{
  return s->pos >= s->l->size || s->pos / s->l->g.zone_size >= s->end;
}

/* Move past zones whose WP needs no block status: conventional ones,
 * and sequential ones scanned up to their capacity (full).
 */
static void
skip_known (struct wp_scan *s)
{
  while (!scan_done (s)) {
    uint64_t z = s->pos / s->l->g.zone_size;
    uint64_t start, capend;

    start = zone_start (s->l, z);
    capend = start + zone_cap (s->l, z);
    if (zone_is_conv (s->l, z))
      s->wp[z - s->first] = start;
    else if (s->pos >= capend)
      s->wp[z - s->first] = capend;
    else
      return;
    s->pos = start + zone_len (s->l, z);
  }
}

void
wp_scan_init (struct wp_scan *s, const struct zone_layout *l,
              uint64_t first, uint64_t count, uint64_t *wp)
{
  uint64_t n = zone_count (l);

  s->l = l;
  s->first = first;
  s->end = first + count < n ? first + count : n;
  s->wp = wp;
  s->pos = zone_start (l, first);
  s->bad = false;
  skip_known (s);
}

static uint64_t
wp_align (const struct zone_layout *l)
{
  return l->block_size ? l->block_size : l->g.block_size ? l->g.block_size
                                                         : 512;
}

/* The WP of zone Z is at POS: keep it, or stop the scan if it is not
 * on a block boundary.
 */
static void
found_wp (struct wp_scan *s, uint64_t z, uint64_t pos)
{
  if ((pos - zone_start (s->l, z)) % wp_align (s->l)) {
    s->bad = true;
    s->bad_zone = z;
    s->bad_wp = pos;
    s->pos = zone_start (s->l, s->end);         /* nothing more to ask */
    return;
  }
  s->wp[z - s->first] = pos;
}

const char *
wp_scan_error (const struct wp_scan *s, char *buf, size_t len)
{
  snprintf (buf, len, "the server's block status puts the write pointer "
            "of zone %" PRIu64 " at offset %" PRIu64 ", %" PRIu64 " bytes "
            "into the zone, which is not a multiple of the block size (%"
            PRIu64 " bytes): the server is broken or hostile, refusing it",
            s->bad_zone, s->bad_wp, s->bad_wp - zone_start (s->l, s->bad_zone),
            wp_align (s->l));
  return buf;
}

bool
wp_scan_next (const struct wp_scan *s, uint64_t *offset, uint64_t *length)
{
  uint64_t last, end;

  if (scan_done (s))
    return false;
  last = s->end - 1;
  end = zone_start (s->l, last) + zone_cap (s->l, last);
  *offset = s->pos;
  *length = end - s->pos < MAX_STATUS_REQUEST ? end - s->pos
                                               : MAX_STATUS_REQUEST;
  return true;
}

void
wp_scan_extents (struct wp_scan *s, uint64_t offset,
                 const uint32_t *entries, size_t nr_entries)
{
  size_t i;

  for (i = 0; i + 1 < nr_entries; i += 2) {
    uint64_t e_end = offset + entries[i];
    bool hole = entries[i + 1] & LIBNBD_STATE_HOLE;

    if (offset > s->pos)
      return;                   /* a gap: ask again from s->pos */
    /* One extent may cover the rest of a zone and further zones. */
    while (s->pos < e_end && !scan_done (s)) {
      uint64_t z = s->pos / s->l->g.zone_size;
      uint64_t start = zone_start (s->l, z);
      uint64_t capend = start + zone_cap (s->l, z);

      if (hole) {
        found_wp (s, z, s->pos);
        if (s->bad)
          return;
        s->pos = start + zone_len (s->l, z);
      }
      else if (e_end < capend)
        s->pos = e_end;
      else {
        /* Written up to its capacity: full.  (With a capacity equal
         * to the zone size, capend is the next zone's start.)
         */
        s->wp[z - s->first] = capend;
        s->pos = start + zone_len (s->l, z);
      }
      skip_known (s);
    }
    offset = e_end;
  }
}

void
zone_describe (const struct zone_layout *l, uint64_t z, uint64_t wp,
               struct blk_zone *out)
{
  uint64_t start = zone_start (l, z), cap = zone_cap (l, z);

  memset (out, 0, sizeof *out);
  out->start = start >> 9;
  out->len = zone_len (l, z) >> 9;
  out->capacity = cap >> 9;
  if (zone_is_conv (l, z)) {
    out->type = BLK_ZONE_TYPE_CONVENTIONAL;
    out->cond = BLK_ZONE_COND_NOT_WP;
    out->wp = (uint64_t) -1;    /* no write pointer, as null_blk says */
    return;
  }
  out->type = BLK_ZONE_TYPE_SEQWRITE_REQ;
  out->wp = wp >> 9;
  /* The server names zones the device turned read-only or offline;
   * their write pointer means nothing (null_blk reports all ones too).
   */
  if (zoned_geometry_is_offline (&l->g, z) ||
      zoned_geometry_is_readonly (&l->g, z)) {
    out->cond = zoned_geometry_is_offline (&l->g, z)
      ? BLK_ZONE_COND_OFFLINE : BLK_ZONE_COND_READONLY;
    out->wp = (uint64_t) -1;
    return;
  }
  if (wp == start)
    out->cond = BLK_ZONE_COND_EMPTY;
  else if (wp >= start + cap)
    out->cond = BLK_ZONE_COND_FULL;
  else
    out->cond = BLK_ZONE_COND_IMP_OPEN;
}

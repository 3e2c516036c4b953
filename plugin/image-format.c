/* The emulated image's header and zone table, to and from memory
 * buffers (see image-format.h for the layout).  A decoder that trusts
 * nothing: each field is range-checked, sums are checked for overflow
 * before they are used, and the geometry is checked against the file
 * before anything is sized from it.
 */

#include <config.h>

#include <endian.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "image-format.h"

#define IMG_MAGIC "NBDZBDv1"
#define IMG_VERSION 1
#define IMG_HEADER_USED 96
#define SLOT_MAGIC "ZTBL"

/* Reflected CRC-32 (IEEE), continued from CRC (0 to start). */
uint32_t
img_crc32 (uint32_t crc, const void *buf, size_t len)
{
  const unsigned char *p = buf;
  size_t i;
  int k;

  crc = ~crc;
  for (i = 0; i < len; i++) {
    crc ^= p[i];
    for (k = 0; k < 8; k++)
      crc = (crc >> 1) ^ (0xedb88320 & -(crc & 1));
  }
  return ~crc;
}

static void
put64 (unsigned char *p, uint64_t v)
{
  v = htole64 (v);
  memcpy (p, &v, 8);
}

static void
put32 (unsigned char *p, uint32_t v)
{
  v = htole32 (v);
  memcpy (p, &v, 4);
}

static uint64_t
get64 (const unsigned char *p)
{
  uint64_t v;
  memcpy (&v, p, 8);
  return le64toh (v);
}

static uint32_t
get32 (const unsigned char *p)
{
  uint32_t v;
  memcpy (&v, p, 4);
  return le32toh (v);
}

static int __attribute__((format (printf, 3, 4)))
fail (char *err, size_t errlen, const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (err, errlen, fmt, ap);
  va_end (ap);
  return -1;
}

void
img_layout (struct img_geometry *g)
{
  g->slot_size = (IMG_SLOT_HEADER + 8ULL * g->nr_zones + 4095) & ~4095ULL;
  g->data_offset =
    (IMG_FIRST_SLOT + 2 * g->slot_size + 0xfffff) & ~0xfffffULL;
}

void
img_encode_header (unsigned char *h, const struct img_geometry *g)
{
  memset (h, 0, IMG_HEADER_SIZE);
  memcpy (h, IMG_MAGIC, 8);
  put32 (h + 8, IMG_VERSION);
  put64 (h + 16, g->size);
  put64 (h + 24, g->zone_size);
  put64 (h + 32, g->zone_capacity);
  put32 (h + 40, g->nr_zones);
  put32 (h + 44, g->nr_conventional);
  put32 (h + 48, g->max_open);
  put32 (h + 52, g->max_active);
  put32 (h + 56, g->block_size);
  put64 (h + 64, IMG_FIRST_SLOT);
  put64 (h + 72, g->slot_size);
  put64 (h + 80, g->data_offset);
  put64 (h + 88, g->image_id);
  put32 (h + IMG_HEADER_USED, img_crc32 (0, h, IMG_HEADER_USED));
}

/* The zone geometry, on its own (the layout is checked after). */
static int
check_zones (const struct img_geometry *g, char *err, size_t errlen)
{
  if (g->block_size < 512 || g->block_size > 65536 ||
      (g->block_size & (g->block_size - 1)))
    return fail (err, errlen, "the image header's block size %" PRIu32
                 " is not a power of two from 512 to 65536; refusing to "
                 "use it", g->block_size);
  if (g->zone_size == 0 || g->zone_size % g->block_size ||
      g->size % g->zone_size || g->size / g->zone_size != g->nr_zones ||
      g->nr_zones == 0)
    return fail (err, errlen, "the image header is inconsistent (size %"
                 PRIu64 ", zone size %" PRIu64 ", %" PRIu32 " zones); "
                 "refusing to use it", g->size, g->zone_size, g->nr_zones);
  if (g->zone_capacity == 0 || g->zone_capacity > g->zone_size ||
      g->zone_capacity % g->block_size)
    return fail (err, errlen, "the image header is inconsistent (zone "
                 "capacity %" PRIu64 ", zone size %" PRIu64 "); refusing "
                 "to use it", g->zone_capacity, g->zone_size);
  if (g->nr_conventional > g->nr_zones)
    return fail (err, errlen, "the image header is inconsistent (%"
                 PRIu32 " conventional zones of %" PRIu32 "); refusing to "
                 "use it", g->nr_conventional, g->nr_zones);
  return 0;
}

/* Where the table slots and the data lie, against overflow and the
 * file's size.
 */
static int
check_layout (const struct img_geometry *g, uint64_t first_slot,
              uint64_t file_size, char *err, size_t errlen)
{
  if (first_slot != IMG_FIRST_SLOT)
    return fail (err, errlen, "the image header puts the zone table at "
                 "offset %" PRIu64 " (this format has it at %d); refusing "
                 "to use it", first_slot, IMG_FIRST_SLOT);
  if (g->slot_size < img_slot_used (g))
    return fail (err, errlen, "the image header's zone table slot (%"
                 PRIu64 " bytes) is too small for %" PRIu32 " zones; "
                 "refusing to use it", g->slot_size, g->nr_zones);
  /* IMG_FIRST_SLOT + 2 * slot_size <= data_offset, without overflow. */
  if (g->data_offset < IMG_FIRST_SLOT ||
      g->slot_size > (g->data_offset - IMG_FIRST_SLOT) / 2)
    return fail (err, errlen, "the image header's two zone table slots (%"
                 PRIu64 " bytes each, from offset %d) overlap the data at "
                 "offset %" PRIu64 "; refusing to use it",
                 g->slot_size, IMG_FIRST_SLOT, g->data_offset);
  if (g->size > UINT64_MAX - g->data_offset)
    return fail (err, errlen, "the image header's data area (offset %"
                 PRIu64 ", size %" PRIu64 ") ends beyond 2^64 bytes; "
                 "refusing to use it", g->data_offset, g->size);
  if (file_size < g->data_offset + g->size)
    return fail (err, errlen, "truncated image (%" PRIu64 " bytes, "
                 "expected %" PRIu64 "); refusing to use it",
                 file_size, g->data_offset + g->size);
  return 0;
}

int
img_decode_header (const unsigned char *h, size_t len, uint64_t file_size,
                   struct img_geometry *g, char *err, size_t errlen)
{
  if (len < IMG_HEADER_SIZE || file_size < IMG_HEADER_SIZE)
    return fail (err, errlen, "truncated image (%" PRIu64 " bytes, shorter "
                 "than its %d-byte header); refusing to use it",
                 file_size < len ? file_size : (uint64_t) len,
                 IMG_HEADER_SIZE);
  if (memcmp (h, IMG_MAGIC, 8) != 0)
    return fail (err, errlen, "not a zbd emulation image (bad magic); "
                 "give a new file name to create one");
  if (get32 (h + 8) != IMG_VERSION)
    return fail (err, errlen, "image version %" PRIu32 " is not supported "
                 "(this plugin reads version %d)", get32 (h + 8),
                 IMG_VERSION);
  if (get32 (h + IMG_HEADER_USED) != img_crc32 (0, h, IMG_HEADER_USED))
    return fail (err, errlen, "the image header is corrupt (checksum "
                 "mismatch); refusing to use it");
  g->size = get64 (h + 16);
  g->zone_size = get64 (h + 24);
  g->zone_capacity = get64 (h + 32);
  g->nr_zones = get32 (h + 40);
  g->nr_conventional = get32 (h + 44);
  g->max_open = get32 (h + 48);
  g->max_active = get32 (h + 52);
  g->block_size = get32 (h + 56);
  g->slot_size = get64 (h + 72);
  g->data_offset = get64 (h + 80);
  g->image_id = get64 (h + 88);
  if (check_zones (g, err, errlen) == -1 ||
      check_layout (g, get64 (h + 64), file_size, err, errlen) == -1)
    return -1;
  return 0;
}

void
img_encode_slot (unsigned char *s, const struct img_geometry *g,
                 uint64_t seq, const uint64_t *rel_wps)
{
  uint32_t i;

  memset (s, 0, img_slot_used (g));
  memcpy (s, SLOT_MAGIC, 4);
  put64 (s + 4, seq);
  put32 (s + 12, g->nr_zones);
  for (i = 0; i < g->nr_zones; i++)
    put64 (s + IMG_SLOT_HEADER + 8 * (uint64_t) i, rel_wps[i]);
  put32 (s + 16, img_crc32 (0, s, img_slot_used (g)));
}

/* The checksum covers the slot with its own field as zero. */
static bool
slot_valid (const unsigned char *s, const struct img_geometry *g)
{
  static const unsigned char zero[4];
  uint32_t crc;

  if (memcmp (s, SLOT_MAGIC, 4) != 0 || get32 (s + 12) != g->nr_zones)
    return false;
  crc = img_crc32 (0, s, 16);
  crc = img_crc32 (crc, zero, 4);
  crc = img_crc32 (crc, s + 20, img_slot_used (g) - 20);
  return crc == get32 (s + 16);
}

int
img_load_table (const unsigned char *slot0, const unsigned char *slot1,
                const struct img_geometry *g, uint64_t *seq,
                uint64_t *rel_wps, char *err, size_t errlen)
{
  const unsigned char *best = NULL;
  uint32_t z;

  if (slot_valid (slot0, g))
    best = slot0;
  if (slot_valid (slot1, g) && (!best || get64 (slot1 + 4) > get64 (best + 4)))
    best = slot1;
  if (!best)
    return fail (err, errlen, "both copies of the zone table are corrupt "
                 "(checksum mismatch); refusing to use the image");
  *seq = get64 (best + 4);
  for (z = 0; z < g->nr_zones; z++) {
    bool conventional = z < g->nr_conventional;
    uint64_t cap = conventional ? g->zone_size : g->zone_capacity;
    uint64_t rel = get64 (best + IMG_SLOT_HEADER + 8 * (uint64_t) z);

    if (rel > cap || (conventional && rel != 0))
      return fail (err, errlen, "the zone table is inconsistent (zone %"
                   PRIu32 " write pointer %" PRIu64 " beyond capacity %"
                   PRIu64 "); refusing to use the image", z, rel,
                   conventional ? 0 : cap);
    if (rel % g->block_size)
      return fail (err, errlen, "the zone table is inconsistent (zone %"
                   PRIu32 " write pointer %" PRIu64 " is not a multiple of "
                   "the %" PRIu32 "-byte block size); refusing to use the "
                   "image", z, rel, g->block_size);
    rel_wps[z] = rel;
  }
  return 0;
}

/* The on-disk format of the zbd plugin's emulated image: header and
 * zone table, encoded and decoded from memory buffers, with no nbdkit
 * and no I/O, so that the loader can be fuzzed on its own
 * (fuzz/fuzz-image-header.c).  emulate.c does the I/O.
 *
 * Layout (all integers little endian):
 *   0       header, 4096 bytes, CRC32 over the first 96 bytes at 96
 *   4096    zone table slot 0, then slot 1 (each a multiple of 4096)
 *   data    data_offset (1 MiB aligned) .. data_offset + size
 * A slot: "ZTBL", seq (u64), zone count (u32), CRC32 (u32) over the
 * slot with this field zero, then one u64 WP per zone (relative).
 */
#ifndef ZBD_IMAGE_FORMAT_H
#define ZBD_IMAGE_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#define IMG_HEADER_SIZE 4096
#define IMG_FIRST_SLOT IMG_HEADER_SIZE
#define IMG_SLOT_HEADER 24

struct img_geometry {
  uint64_t size, zone_size, zone_capacity;
  uint32_t nr_zones, nr_conventional, max_open, max_active, block_size;
  uint64_t slot_size, data_offset;
  /* A random number chosen when the image is made, never 0; 0 in an
   * image made before it existed.  The disk identity that clients
   * compare when they reconnect (zbd.c's disk-id).
   */
  uint64_t image_id;
};

/* Slot size and data offset for a new image of G's zones. */
extern void img_layout (struct img_geometry *g);

/* H: IMG_HEADER_SIZE bytes. */
extern void img_encode_header (unsigned char *h,
                               const struct img_geometry *g);

/* Decode and check the header H (LEN bytes, at least IMG_HEADER_SIZE
 * for success) of an image file of FILE_SIZE bytes.  Every field is
 * checked against overflow and against the file before anything is
 * allocated from it.  On error returns -1 with a one-line reason in
 * ERR (ERRLEN bytes).
 */
extern int img_decode_header (const unsigned char *h, size_t len,
                              uint64_t file_size, struct img_geometry *g,
                              char *err, size_t errlen);

/* The bytes of a slot that hold something: its header and the WPs.
 * Only these are read and written (a slot's size is bounded by the
 * file's, not by memory).
 */
static inline uint64_t
img_slot_used (const struct img_geometry *g)
{
  return IMG_SLOT_HEADER + 8ULL * g->nr_zones;
}

/* S: img_slot_used (G) bytes; REL_WPS: G->nr_zones WPs relative to
 * their zone's start.
 */
extern void img_encode_slot (unsigned char *s, const struct img_geometry *g,
                             uint64_t seq, const uint64_t *rel_wps);

/* Pick the newest valid slot of the two (img_slot_used (G) bytes each) and
 * check its WPs against the geometry.  On success fills *SEQ and
 * REL_WPS (G->nr_zones entries).  On error returns -1 with a reason in
 * ERR.
 */
extern int img_load_table (const unsigned char *slot0,
                           const unsigned char *slot1,
                           const struct img_geometry *g, uint64_t *seq,
                           uint64_t *rel_wps, char *err, size_t errlen);

extern uint32_t img_crc32 (uint32_t crc, const void *buf, size_t len);

#endif /* ZBD_IMAGE_FORMAT_H */

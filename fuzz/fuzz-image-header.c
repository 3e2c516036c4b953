/* libFuzzer harness for the zbd plugin's image loader (plugin/
 * image-format.c): the header decoder and the zone table loader, as
 * emulate.c calls them on a file that may be hostile.
 *
 * Input: the file's size as the plugin would see it from fstat (u64,
 * little endian), a flags byte, then the file's first bytes.  Bytes the
 * plugin would read past the end of the input read as zeros, so a small
 * input can stand for a large sparse file.  Flags bit 0: recompute the
 * header's checksum, bit 1: the table slots' checksums, so that the
 * fuzzer gets past the checksums to the field checks behind them (the
 * other inputs test the checksums themselves).  Beyond not crashing,
 * each accepted header and table must survive a round trip through the
 * encoder, and each refusal must be one line.
 *
 * Built with clang -fsanitize=fuzzer,address,undefined (fuzz/Makefile.am):
 * "make fuzz" runs it; "make check" replays its seeds (corpus/image-header)
 * and any input that once crashed it (regress/image-header), then runs it
 * briefly.
 */

#include <config.h>

#include <endian.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image-format.h"

/* The plugin reads the used part of each slot (header and WPs), which
 * the decoder has bounded by the file's size.  Past this many bytes of
 * table the harness stops: the loader's cost is linear.
 */
#define MAX_TABLE (16 << 20)

static void
check_same (const struct img_geometry *a, const struct img_geometry *b)
{
  if (memcmp (a, b, sizeof *a) != 0) {
    fprintf (stderr, "image header round trip changed the geometry\n");
    abort ();
  }
}

static void
put_crc (unsigned char *p, uint32_t crc)
{
  crc = htole32 (crc);
  memcpy (p, &crc, 4);
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  unsigned char h[IMG_HEADER_SIZE], h2[IMG_HEADER_SIZE];
  struct img_geometry g, g2;
  uint64_t file_size, seq, seq2, used, i;
  unsigned char *slots, *again;
  uint64_t *wps, *wps2;
  char err[256];
  unsigned char *img, flags;

  if (size < 9)
    return 0;
  memcpy (&file_size, data, 8);
  flags = data[8];
  data += 9;
  size -= 9;
  /* A copy whose checksums the harness may fix up. */
  img = malloc (size ? size : 1);
  if (!img)
    abort ();
  memcpy (img, data, size);
  data = img;
  if ((flags & 1) && size >= 100)
    put_crc (img + 96, img_crc32 (0, img, 96));

  /* Compared with memcmp below: no stray bytes in the padding. */
  memset (&g, 0, sizeof g);
  memset (&g2, 0, sizeof g2);

  /* Header: as emulate.c reads it, zero-padded. */
  memset (h, 0, sizeof h);
  memcpy (h, data, size < sizeof h ? size : sizeof h);
  if (img_decode_header (h, sizeof h, file_size, &g, err, sizeof err) == -1) {
    if (strlen (err) == 0 || strchr (err, '\n')) {
      fprintf (stderr, "refusal without a one-line message\n");
      abort ();
    }
    free (img);
    return 0;
  }
  img_encode_header (h2, &g);
  if (img_decode_header (h2, sizeof h2, file_size, &g2, err,
                         sizeof err) == -1) {
    fprintf (stderr, "re-encoded header refused: %s\n", err);
    abort ();
  }
  check_same (&g, &g2);

  /* The decoder promised that both slots lie within the file. */
  if (IMG_FIRST_SLOT + 2 * g.slot_size > file_size ||
      IMG_FIRST_SLOT + 2 * g.slot_size < 2 * g.slot_size) {
    fprintf (stderr, "accepted slots beyond the file\n");
    abort ();
  }
  used = img_slot_used (&g);
  if (2 * used > MAX_TABLE) {
    free (img);
    return 0;
  }
  /* Both slots, where emulate.c reads them, zero past the input. */
  slots = calloc (2, used);
  wps = calloc (g.nr_zones, sizeof *wps);
  wps2 = calloc (g.nr_zones, sizeof *wps2);
  again = calloc (1, used);
  if (!slots || !wps || !wps2 || !again)
    abort ();
  for (i = 0; i < 2; i++) {
    uint64_t at = IMG_FIRST_SLOT + i * g.slot_size;
    if (at < size)
      memcpy (slots + i * used, data + at,
              size - at < used ? size - at : used);
    if (flags & 2) {
      put_crc (slots + i * used + 16, 0);
      put_crc (slots + i * used + 16, img_crc32 (0, slots + i * used, used));
    }
  }

  if (img_load_table (slots, slots + used, &g, &seq, wps,
                      err, sizeof err) == 0) {
    /* Every WP within its zone's capacity and on the block grid. */
    uint32_t z;
    for (z = 0; z < g.nr_zones; z++)
      if (wps[z] > g.zone_size || wps[z] % g.block_size) {
        fprintf (stderr, "accepted WP %lu in zone %u\n",
                 (unsigned long) wps[z], z);
        abort ();
      }
    img_encode_slot (again, &g, seq, wps);
    if (img_load_table (again, again, &g, &seq2, wps2, err,
                        sizeof err) == -1 || seq2 != seq ||
        memcmp (wps, wps2, g.nr_zones * sizeof *wps) != 0) {
      fprintf (stderr, "zone table round trip failed\n");
      abort ();
    }
  }
  else if (strlen (err) == 0 || strchr (err, '\n')) {
    fprintf (stderr, "refusal without a one-line message\n");
    abort ();
  }
  free (slots);
  free (wps);
  free (wps2);
  free (again);
  free (img);
  return 0;
}

/* libFuzzer harness: the cryptinline filter's block status (.extents),
 * which must round zero extents from below inward to whole crypt
 * sectors (a sector only partly zero below reads as decrypted noise).
 *
 * The input picks the crypt sector size, a disk of extents below (any
 * lengths, any types) and an aligned request.  Checked on the filter's
 * answer: it starts at the request and is contiguous; every run of
 * extents it calls zero is whole crypt sectors, zero below in every byte;
 * every crypt sector zero below in every byte is called zero (nothing
 * is lost by the rounding); a hole is only reported where there is one
 * below; data stays data.  With the top bit of the first byte set, one
 * nbdkit_add_extent call on the answer fails (as nbdkit's does when out
 * of memory): the filter must then fail the request with an errno.
 */
#include "../filters/cryptinline/cryptinline.c"

#include "nbdkit-stubs.h"

#define MAX_BELOW 64

static struct nbdkit_extent below[MAX_BELOW];
static size_t nr_below;
static uint64_t disk_size;

static int
below_extents (nbdkit_next *next, uint32_t count, uint64_t offset,
               uint32_t flags, struct nbdkit_extents *x, int *err)
{
  size_t i;

  for (i = 0; i < nr_below; i++)
    if (nbdkit_add_extent (x, below[i].offset, below[i].length,
                           below[i].type) == -1) {
      *err = ENOMEM;
      return -1;
    }
  return 0;
}

static void
check (bool ok, const char *what, uint64_t at)
{
  if (!ok) {
    fprintf (stderr, "block status breaks: %s (at byte %" PRIu64
             ", sector size %" PRIu32 ")\n", what, at, fmt.sector_size);
    abort ();
  }
}

/* Every byte of [a, b) has all the flags in want below. */
static bool
all_below (uint64_t a, uint64_t b, uint32_t want)
{
  size_t i;

  for (i = 0; i < nr_below; i++) {
    uint64_t s = below[i].offset, t = s + below[i].length;
    if (t > a && s < b && (below[i].type & want) != want)
      return false;
  }
  return true;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static const uint32_t sizes[] = { 512, 1024, 2048, 4096 };
  struct nbdkit_next_ops next = { .extents = below_extents };
  struct nbdkit_extents *out;
  uint64_t ss, offset, count, pos, s;
  size_t i;
  int err = 0, r;

  if (size < 3)
    return 0;
  fmt.sector_size = sizes[data[0] % 4];
  the_key.fmt = fmt;             /* the handle of every connection */
  ss = fmt.sector_size;
  /* Extents below: 2 bytes each, a length of 1 to 2048 bytes in steps
   * of 2 (so any alignment) and a type.
   */
  nr_below = 0;
  disk_size = 0;
  for (i = 3; i + 1 < size && nr_below < MAX_BELOW; i += 2) {
    uint64_t len = ((uint64_t) (data[i] & 0x3f) << 5 | data[i + 1] >> 3) * 2 + 1;
    uint32_t type = data[i + 1] & 3;   /* 0, hole, zero, hole+zero */
    below[nr_below++] = (struct nbdkit_extent) { disk_size, len, type };
    disk_size += len;
  }
  disk_size -= disk_size % ss;         /* the filter serves whole sectors */
  if (disk_size == 0)
    return 0;
  /* An aligned request inside the disk. */
  offset = data[1] % (disk_size / ss) * ss;
  count = (data[2] % ((disk_size - offset) / ss) + 1) * ss;

  out = nbdkit_extents_new (offset, offset + count);
  check (out != NULL, "nbdkit_extents_new", 0);
  add_extent_fail_on = out;
  add_extent_fail_after = data[0] & 0x80 ? (data[0] >> 2) & 0x1f : -1;
  add_extent_failed = 0;
  r = cryptinline_extents (&next, &the_key, count, offset, 0, out, &err);
  add_extent_fail_on = NULL;
  if (add_extent_failed) {
    check (r == -1 && err != 0,
           "the filter ignored a failed nbdkit_add_extent", offset);
    nbdkit_extents_free (out);
    return 0;
  }
  check (r == 0, "the filter failed", offset);
  check (out->n > 0 && out->e[0].offset == offset, "no extent at the start",
         offset);

  pos = offset;
  for (i = 0; i < out->n; i++) {
    struct nbdkit_extent e = out->e[i];
    check (e.offset == pos && e.length > 0, "not contiguous", e.offset);
    if (e.type & NBDKIT_EXTENT_ZERO) {
      /* A run of zero extents (hole+zero next to zero) is whole sectors. */
      bool run_starts = i == 0 || !(out->e[i - 1].type & NBDKIT_EXTENT_ZERO);
      bool run_ends = i + 1 == out->n ||
        !(out->e[i + 1].type & NBDKIT_EXTENT_ZERO);
      check (!run_starts || e.offset % ss == 0,
             "zero run does not start at a crypt sector", e.offset);
      check (!run_ends || (e.offset + e.length) % ss == 0,
             "zero run does not end at a crypt sector", e.offset + e.length);
      check (all_below (e.offset, e.offset + e.length, NBDKIT_EXTENT_ZERO),
             "zero where below is not zero", e.offset);
    }
    if (e.type & NBDKIT_EXTENT_HOLE)
      check (all_below (e.offset, e.offset + e.length, NBDKIT_EXTENT_HOLE),
             "hole where below has none", e.offset);
    pos += e.length;
  }
  /* Whole sectors zero below are reported zero. */
  for (s = offset; s < pos; s += ss)
    if (all_below (s, s + ss, NBDKIT_EXTENT_ZERO)) {
      for (i = 0; i < out->n; i++)
        if (s >= out->e[i].offset && s < out->e[i].offset + out->e[i].length)
          break;
      check (i < out->n && (out->e[i].type & NBDKIT_EXTENT_ZERO),
             "a sector zero below is not reported zero", s);
    }
  nbdkit_extents_free (out);
  return 0;
}

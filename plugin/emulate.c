/* Emulated host-managed zones for the zbd plugin: over memory, or over
 * an image file that keeps its zone table crash-consistently.
 *
 * The image starts with a checksummed header (magic, version,
 * geometry), then two zone-table slots, each with a sequence number
 * and a checksum, then the data.  A flush (persist_locked) snapshots
 * the WPs, syncs the data, and only then writes the older slot and
 * syncs it, so after a crash the newest valid slot never has a WP
 * above data that is not on disk, and a torn slot write leaves the
 * previous slot.
 */

#define _GNU_SOURCE 1          /* fallocate */
#include <config.h>

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "zbd-internal.h"

/* Set by open_memory_backend / open_file. */
static const struct zbd_params *params;
static struct zbd_disk *disk;
#define ZT (&disk->table)

static uint32_t
crc32_le (const void *buf, size_t len)
{
  const unsigned char *p = buf;
  uint32_t crc = 0xffffffff;
  size_t i;
  int k;

  for (i = 0; i < len; i++) {
    crc ^= p[i];
    for (k = 0; k < 8; k++)
      crc = (crc >> 1) ^ (0xedb88320 & -(crc & 1));
  }
  return ~crc;
}

/* Active zones of the loaded table. */
static uint64_t loaded_active;

/* Derive the condition of an emulated sequential zone from its WP, as
 * after a power cycle: partially written zones are closed.
 */
static void
emulated_cond_from_wp (struct zone *z)
{
  if (z->conventional)
    z->cond = COND_NOT_WP;
  else if (z->wp == z->start)
    z->cond = COND_EMPTY;
  else if (z->wp >= zone_cap_end (z)) {
    z->wp = zone_cap_end (z);
    z->cond = COND_FULL;
  }
  else {
    z->cond = COND_CLOSED;
    loaded_active++;
  }
}

/* Build the emulated zone table from the geometry. */
static int
build_emulated_zones (uint64_t size, uint64_t zsize, uint64_t zcap,
                      uint64_t nconv)
{
  uint64_t i;

  disk->disk_size = size;
  if (zt_init (ZT, size / zsize, zsize) == -1) {
    nbdkit_error ("calloc: %m");
    return -1;
  }
  for (i = 0; i < ZT->nr_zones; i++) {
    struct zone *z = &ZT->zones[i];
    z->conventional = i < nconv;
    z->cap = z->conventional ? zsize : zcap;
    z->cond = z->conventional ? COND_NOT_WP : COND_EMPTY;
  }
  return 0;
}

/* ---------------------------------------------------------------- */
/* Emulated backend: memory */

static unsigned char *mem;

static int
mem_pread (void *buf, uint32_t n, uint64_t off)
{
  memcpy (buf, mem + off, n);
  return 0;
}

static int
mem_pwrite (const void *buf, uint32_t n, uint64_t off)
{
  memcpy (mem + off, buf, n);
  return 0;
}

/* Give whole pages back to the kernel (they read as zeros again) and
 * clear the unaligned edges.
 */
static int
mem_discard (uint64_t n, uint64_t off)
{
  uint64_t page = sysconf (_SC_PAGESIZE);
  uint64_t a = (off + page - 1) & ~(page - 1);
  uint64_t b = (off + n) & ~(page - 1);

  if (a >= b) {
    memset (mem + off, 0, n);
    return 0;
  }
  memset (mem + off, 0, a - off);
  if (madvise (mem + a, b - a, MADV_DONTNEED) == -1)
    memset (mem + a, 0, b - a);
  memset (mem + b, 0, off + n - b);
  return 0;
}

static int
mem_flush (void)
{
  return 0;
}

static const struct backend memory_backend = {
  .name = "memory", .emulated = true,
  .pread = mem_pread, .pwrite = mem_pwrite, .discard = mem_discard,
  .flush = mem_flush,
};

static int
open_memory (const struct backend **b)
{
  mem = mmap (NULL, disk->disk_size, PROT_READ | PROT_WRITE,
              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) {
    nbdkit_error ("emulate=memory: cannot map %" PRIu64 " bytes: %m",
                  disk->disk_size);
    return -1;
  }
  *b = &memory_backend;
  return 0;
}

/* ---------------------------------------------------------------- */
/* Emulated backend: image file
 *
 * Layout (all integers little endian):
 *   0       header, 4096 bytes, CRC32 over the first 96 bytes at 96
 *   4096    zone table slot 0, then slot 1 (each a multiple of 4096)
 *   data    data_offset (1 MiB aligned) .. data_offset + size
 * A slot: "ZTBL", seq (u64), zone count (u32), CRC32 (u32) over the
 * slot with this field zero, then one u64 WP per zone (relative).
 */

#define IMG_MAGIC "NBDZBDv1"
#define IMG_VERSION 1
#define IMG_HEADER_SIZE 4096
#define IMG_HEADER_USED 96
#define SLOT_HEADER 24

static int img_fd = -1;        /* read-only, then read-write */
static bool img_rw;
static uint64_t img_slot_size, img_data_offset, img_seq;
static pthread_mutex_t persist_lock = PTHREAD_MUTEX_INITIALIZER;

/* The current descriptor: load it with the ordering its writer uses. */
static int
image_fd (void)
{
  return __atomic_load_n (&img_fd, __ATOMIC_ACQUIRE);
}

struct img_geometry {
  uint64_t size, zone_size, zone_capacity;
  uint32_t nr_zones, nr_conventional, max_open, max_active, block_size;
  uint64_t slot_size, data_offset;
};

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

static void
encode_header (unsigned char *h, const struct img_geometry *g)
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
  put64 (h + 64, IMG_HEADER_SIZE);          /* first slot */
  put64 (h + 72, g->slot_size);
  put64 (h + 80, g->data_offset);
  put32 (h + IMG_HEADER_USED, crc32_le (h, IMG_HEADER_USED));
}

static int
decode_header (const char *path, const unsigned char *h,
               struct img_geometry *g)
{
  if (memcmp (h, IMG_MAGIC, 8) != 0) {
    nbdkit_error ("emulate=%s: not a zbd emulation image (bad magic); "
                  "give a new file name to create one", path);
    return -1;
  }
  if (get32 (h + 8) != IMG_VERSION) {
    nbdkit_error ("emulate=%s: image version %" PRIu32 " is not supported "
                  "(this plugin reads version %d)", path, get32 (h + 8),
                  IMG_VERSION);
    return -1;
  }
  if (get32 (h + IMG_HEADER_USED) != crc32_le (h, IMG_HEADER_USED)) {
    nbdkit_error ("emulate=%s: the image header is corrupt (checksum "
                  "mismatch); refusing to use it", path);
    return -1;
  }
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
  if (g->zone_size == 0 || g->size / g->zone_size != g->nr_zones ||
      g->zone_capacity > g->zone_size || g->nr_conventional > g->nr_zones ||
      g->slot_size < SLOT_HEADER + 8ULL * g->nr_zones ||
      g->data_offset < IMG_HEADER_SIZE + 2 * g->slot_size) {
    nbdkit_error ("emulate=%s: the image header is inconsistent; "
                  "refusing to use it", path);
    return -1;
  }
  return 0;
}

/* Encode the WPs W[] into a slot buffer with sequence number SEQ. */
static void
encode_slot (unsigned char *s, uint64_t seq, const uint64_t *w)
{
  uint64_t i;

  memset (s, 0, img_slot_size);
  memcpy (s, "ZTBL", 4);
  put64 (s + 4, seq);
  put32 (s + 12, ZT->nr_zones);
  for (i = 0; i < ZT->nr_zones; i++)
    put64 (s + SLOT_HEADER + 8 * i, w[i] - ZT->zones[i].start);
  put32 (s + 16, crc32_le (s, SLOT_HEADER + 8 * ZT->nr_zones));
}

static bool
slot_valid (unsigned char *s)
{
  uint32_t crc = get32 (s + 16);
  bool ok;

  if (memcmp (s, "ZTBL", 4) != 0 || get32 (s + 12) != ZT->nr_zones)
    return false;
  put32 (s + 16, 0);
  ok = crc == crc32_le (s, SLOT_HEADER + 8 * ZT->nr_zones);
  put32 (s + 16, crc);
  return ok;
}

/* Load the newest valid table slot into the zone table. */
static int
load_table (const char *path)
{
  unsigned char *s[2];
  int best = -1, i;
  uint64_t z;

  s[0] = malloc (img_slot_size);
  s[1] = malloc (img_slot_size);
  if (!s[0] || !s[1]) {
    nbdkit_error ("malloc: %m");
    goto err;
  }
  for (i = 0; i < 2; i++) {
    if (full_pread (img_fd, s[i], img_slot_size,
                    IMG_HEADER_SIZE + i * img_slot_size) == -1) {
      nbdkit_error ("emulate=%s: cannot read the zone table: %m", path);
      goto err;
    }
    if (slot_valid (s[i]) &&
        (best == -1 || get64 (s[i] + 4) > get64 (s[best] + 4)))
      best = i;
  }
  if (best == -1) {
    nbdkit_error ("emulate=%s: both copies of the zone table are corrupt "
                  "(checksum mismatch); refusing to use the image", path);
    goto err;
  }
  img_seq = get64 (s[best] + 4);
  for (z = 0; z < ZT->nr_zones; z++) {
    uint64_t rel = get64 (s[best] + SLOT_HEADER + 8 * z);
    if (rel > ZT->zones[z].cap || (ZT->zones[z].conventional && rel != 0)) {
      nbdkit_error ("emulate=%s: the zone table is inconsistent (zone %"
                    PRIu64 " write pointer %" PRIu64 " beyond capacity %"
                    PRIu64 "); refusing to use the image",
                    path, z, rel, ZT->zones[z].cap);
      goto err;
    }
    ZT->zones[z].wp = ZT->zones[z].start + rel;
    emulated_cond_from_wp (&ZT->zones[z]);
  }
  free (s[0]);
  free (s[1]);
  return 0;
 err:
  free (s[0]);
  free (s[1]);
  return -1;
}

/* Write the WP snapshot W as the next table slot and sync it.  The
 * caller holds persist_lock and has already synced the data.
 */
/* The WPs of the newest durable table slot: a flush that would write
 * the same table only syncs the data.
 */
static uint64_t *persisted_wps;

static int
write_table (const uint64_t *w)
{
  unsigned char *s = malloc (img_slot_size);
  uint64_t seq = img_seq + 1;
  int r = -1;

  if (!s) {
    nbdkit_error ("malloc: %m");
    return -1;
  }
  encode_slot (s, seq, w);
  if (full_pwrite (image_fd (), s, img_slot_size,
                   IMG_HEADER_SIZE + (seq & 1) * img_slot_size) == -1 ||
      fdatasync (image_fd ()) == -1)
    nbdkit_error ("emulate=%s: cannot write the zone table: %m", params->emulate);
  else {
    img_seq = seq;
    if (persisted_wps)
      memcpy (persisted_wps, w, ZT->nr_zones * sizeof *w);
    r = 0;
  }
  free (s);
  return r;
}

/* Crash consistency: snapshot the WPs, then sync the data they cover,
 * then write and sync the table.  Caller holds persist_lock.
 */
static int
persist_locked (void)
{
  uint64_t *w = malloc (ZT->nr_zones * sizeof *w);
  int r;

  if (!w) {
    nbdkit_error ("malloc: %m");
    return -1;
  }
  zt_copy_wps (ZT, w);

  if (fdatasync (image_fd ()) == -1) {
    nbdkit_error ("emulate=%s: fdatasync: %m", params->emulate);
    free (w);
    return -1;
  }
  if (persisted_wps && memcmp (persisted_wps, w, ZT->nr_zones * sizeof *w) == 0)
    r = 0;
  else
    r = write_table (w);
  free (w);
  return r;
}

static int
file_persist (void)
{
  int r;

  pthread_mutex_lock (&persist_lock);
  r = persist_locked ();
  pthread_mutex_unlock (&persist_lock);
  return r;
}

static void
persist_lock_take (void)
{
  pthread_mutex_lock (&persist_lock);
}

static void
persist_lock_drop (void)
{
  pthread_mutex_unlock (&persist_lock);
}

static int
file_pread (void *buf, uint32_t n, uint64_t off)
{
  if (full_pread (image_fd (), buf, n, img_data_offset + off) == -1) {
    nbdkit_error ("emulate=%s: read at %" PRIu64 ": %m", params->emulate, off);
    return -1;
  }
  return 0;
}

static int
file_pwrite (const void *buf, uint32_t n, uint64_t off)
{
  if (full_pwrite (image_fd (), buf, n, img_data_offset + off) == -1) {
    nbdkit_error ("emulate=%s: write at %" PRIu64 ": %m", params->emulate, off);
    return -1;
  }
  return 0;
}

static int
file_discard (uint64_t n, uint64_t off)
{
  static const char zero[65536];

  if (fallocate (image_fd (), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                 img_data_offset + off, n) == 0)
    return 0;
  /* No hole punching here: write the zeros. */
  while (n > 0) {
    size_t k = n < sizeof zero ? n : sizeof zero;
    if (file_pwrite (zero, k, off) == -1)
      return -1;
    n -= k; off += k;
  }
  return 0;
}

static int
file_open_rw (void)
{
  char self[64];
  struct stat a, b;
  int fd;

  if (img_rw)
    return 0;
  /* Through the descriptor opened at start, not the path: the path may
   * name another file by now.
   */
  snprintf (self, sizeof self, "/proc/self/fd/%d", img_fd);
  fd = open (self, O_RDWR | O_CLOEXEC);
  if (fd == -1) {
    nbdkit_error ("emulate=%s: cannot open for writing: %m", params->emulate);
    return -1;
  }
  if (fstat (fd, &a) == -1 || fstat (img_fd, &b) == -1 ||
      a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
    nbdkit_error ("emulate=%s: reopened for writing, it is not the image "
                  "this server started with; refusing to write to it",
                  params->emulate);
    close (fd);
    errno = EIO;
    return -1;
  }
  /* The read-only descriptor stays open: other threads may use it. */
  __atomic_store_n (&img_fd, fd, __ATOMIC_RELEASE);
  img_rw = true;
  return 0;
}

static const struct backend file_backend = {
  .name = "file", .emulated = true,
  .pread = file_pread, .pwrite = file_pwrite, .discard = file_discard,
  .flush = file_persist, .persist = file_persist, .open_rw = file_open_rw,
  .zone_ops_lock = persist_lock_take, .zone_ops_unlock = persist_lock_drop,
  .persist_locked = persist_locked,
};

/* The geometry asked for on the command line, with defaults. */
static int
requested_geometry (struct img_geometry *g)
{
  if (params->size == -1 || params->zone_size == -1) {
    nbdkit_error ("emulate=%s: a new image needs size= and zone-size= "
                  "(e.g. size=1G zone-size=64M)", params->emulate);
    return -1;
  }
  g->size = params->size;
  g->zone_size = params->zone_size;
  g->zone_capacity = params->zone_capacity == -1
    ? (uint64_t) params->zone_size : (uint64_t) params->zone_capacity;
  g->block_size = params->block_size == -1 ? 512 : params->block_size;
  g->nr_conventional = params->conventional == -1 ? 0 : params->conventional;
  g->max_open = params->max_open == -1 ? 0 : params->max_open;
  g->max_active = params->max_active == -1 ? 0 : params->max_active;
  g->nr_zones = g->size / g->zone_size;
  return 0;
}

static int
check_geometry (const struct img_geometry *g)
{
  const char *what = params->emulate;

  if (g->block_size < 512 || g->block_size > 65536 ||
      (g->block_size & (g->block_size - 1))) {
    nbdkit_error ("emulate=%s: block-size=%" PRIu32 " must be a power of "
                  "two from 512 to 65536", what, g->block_size);
    return -1;
  }
  if (g->zone_size % g->block_size || g->zone_size % 4096) {
    nbdkit_error ("emulate=%s: zone-size=%" PRIu64 " must be a multiple of "
                  "4096 and of block-size=%" PRIu32, what, g->zone_size,
                  g->block_size);
    return -1;
  }
  if (g->size % g->zone_size || g->size < g->zone_size) {
    nbdkit_error ("emulate=%s: size=%" PRIu64 " must be a non-zero multiple "
                  "of zone-size=%" PRIu64, what, g->size, g->zone_size);
    return -1;
  }
  if (g->size / g->zone_size > UINT32_MAX) {
    nbdkit_error ("emulate=%s: %" PRIu64 " zones is too many (at most %u)",
                  what, g->size / g->zone_size, UINT32_MAX);
    return -1;
  }
  if (g->zone_capacity == 0 || g->zone_capacity > g->zone_size ||
      g->zone_capacity % g->block_size) {
    nbdkit_error ("emulate=%s: zone-capacity=%" PRIu64 " must be a non-zero "
                  "multiple of block-size=%" PRIu32 " no larger than "
                  "zone-size=%" PRIu64, what, g->zone_capacity,
                  g->block_size, g->zone_size);
    return -1;
  }
  if (g->nr_conventional >= g->nr_zones) {
    nbdkit_error ("emulate=%s: conventional-zones=%" PRIu32 " must be less "
                  "than the number of zones (%" PRIu32 ")", what,
                  g->nr_conventional, g->nr_zones);
    return -1;
  }
  return 0;
}

/* Every geometry parameter given must match the existing image. */
static int
match_geometry (const struct img_geometry *g)
{
  struct { const char *key; int64_t given; uint64_t have; } p[] = {
    { "size", params->size, g->size },
    { "zone-size", params->zone_size, g->zone_size },
    { "zone-capacity", params->zone_capacity, g->zone_capacity },
    { "conventional-zones", params->conventional, g->nr_conventional },
    { "max-open-zones", params->max_open, g->max_open },
    { "max-active-zones", params->max_active, g->max_active },
    { "block-size", params->block_size, g->block_size },
  };
  size_t i;

  for (i = 0; i < sizeof p / sizeof p[0]; i++)
    if (p[i].given != -1 && (uint64_t) p[i].given != p[i].have) {
      nbdkit_error ("emulate=%s: %s=%" PRIi64 " does not match the existing "
                    "image (%s=%" PRIu64 "); omit the geometry parameters to "
                    "use the image as it is, or give a new file name",
                    params->emulate, p[i].key, p[i].given, p[i].key, p[i].have);
      return -1;
    }
  return 0;
}

static void
apply_geometry (const struct img_geometry *g)
{
  disk->block_size = g->block_size;
  disk->phys_block_size = 4096;
  disk->max_open = g->max_open;
  disk->max_active = g->max_active;
  if (disk->max_active && disk->max_open > disk->max_active)
    disk->max_open = disk->max_active;  /* as null_blk does */
}

static int
create_image (void)
{
  struct img_geometry g;
  unsigned char h[IMG_HEADER_SIZE];
  uint64_t *w, i;
  int r;

  if (requested_geometry (&g) == -1 || check_geometry (&g) == -1)
    return -1;
  g.slot_size = (SLOT_HEADER + 8ULL * g.nr_zones + 4095) & ~4095ULL;
  g.data_offset = (IMG_HEADER_SIZE + 2 * g.slot_size + 0xfffff) & ~0xfffffULL;

  img_fd = open (params->emulate, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (img_fd == -1) {
    nbdkit_error ("emulate=%s: cannot create the image: %m", params->emulate);
    return -1;
  }
  img_rw = true;
  if (ftruncate (img_fd, g.data_offset + g.size) == -1) {
    nbdkit_error ("emulate=%s: cannot size the image to %" PRIu64
                  " bytes: %m", params->emulate, g.data_offset + g.size);
    goto err;
  }
  encode_header (h, &g);
  if (full_pwrite (img_fd, h, sizeof h, 0) == -1) {
    nbdkit_error ("emulate=%s: cannot write the header: %m", params->emulate);
    goto err;
  }
  apply_geometry (&g);
  img_slot_size = g.slot_size;
  img_data_offset = g.data_offset;
  if (build_emulated_zones (g.size, g.zone_size, g.zone_capacity,
                            g.nr_conventional) == -1)
    goto err;
  w = malloc (ZT->nr_zones * sizeof *w);
  if (!w)
    goto err;
  for (i = 0; i < ZT->nr_zones; i++)
    w[i] = ZT->zones[i].start;
  img_seq = 0;
  r = write_table (w);          /* slot 1, seq 1; slot 0 stays invalid */
  free (w);
  if (r == -1)
    goto err;
  nbdkit_debug ("emulate=%s: created a new image", params->emulate);
  return 0;
 err:
  unlink (params->emulate);
  return -1;
}

static int
open_image (void)
{
  struct img_geometry g;
  unsigned char h[IMG_HEADER_SIZE];
  struct stat st;

  img_fd = open (params->emulate, O_RDONLY | O_CLOEXEC);
  if (img_fd == -1) {
    nbdkit_error ("emulate=%s: cannot open: %m", params->emulate);
    return -1;
  }
  if (fstat (img_fd, &st) == -1 || !S_ISREG (st.st_mode)) {
    nbdkit_error ("emulate=%s: not a regular file; emulate= takes an image "
                  "file (created if absent) or \"memory\"", params->emulate);
    return -1;
  }
  if ((uint64_t) st.st_size < IMG_HEADER_SIZE) {
    nbdkit_error ("emulate=%s: truncated image (%" PRIu64 " bytes, shorter "
                  "than its %d-byte header); refusing to use it",
                  params->emulate, (uint64_t) st.st_size, IMG_HEADER_SIZE);
    return -1;
  }
  if (full_pread (img_fd, h, sizeof h, 0) == -1) {
    nbdkit_error ("emulate=%s: cannot read the header: %m", params->emulate);
    return -1;
  }
  if (decode_header (params->emulate, h, &g) == -1 ||
      match_geometry (&g) == -1 || check_geometry (&g) == -1)
    return -1;
  if ((uint64_t) st.st_size < g.data_offset + g.size) {
    nbdkit_error ("emulate=%s: truncated image (%" PRIu64 " bytes, expected "
                  "%" PRIu64 "); refusing to use it", params->emulate,
                  (uint64_t) st.st_size, g.data_offset + g.size);
    return -1;
  }
  apply_geometry (&g);
  img_slot_size = g.slot_size;
  img_data_offset = g.data_offset;
  if (build_emulated_zones (g.size, g.zone_size, g.zone_capacity,
                            g.nr_conventional) == -1)
    return -1;
  loaded_active = 0;
  if (load_table (params->emulate) == -1)
    return -1;
  if (disk->max_active && loaded_active > disk->max_active) {
    nbdkit_error ("emulate=%s: %" PRIu64 " zones are active, more than "
                  "max-active-zones=%" PRIu64 "; refusing to use the image",
                  params->emulate, loaded_active, disk->max_active);
    return -1;
  }
  return 0;
}

int
open_file (const struct zbd_params *p, struct zbd_disk *d,
           const struct backend **b)
{
  int r;

  params = p;
  disk = d;
  if (access (params->emulate, F_OK) == 0)
    r = open_image ();
  else
    r = create_image ();
  if (r == 0) {
    uint64_t i;

    persisted_wps = malloc (ZT->nr_zones * sizeof *persisted_wps);
    if (!persisted_wps) {
      nbdkit_error ("malloc: %m");
      return -1;
    }
    /* What is in the table now: the WPs just loaded or created. */
    for (i = 0; i < ZT->nr_zones; i++)
      persisted_wps[i] = ZT->zones[i].wp;
    *b = &file_backend;
  }
  return r;
}

int
open_memory_backend (const struct zbd_params *p, struct zbd_disk *d,
                     const struct backend **b)
{
  struct img_geometry g;

  params = p;
  disk = d;
  if (requested_geometry (&g) == -1 || check_geometry (&g) == -1)
    return -1;
  apply_geometry (&g);
  if (build_emulated_zones (g.size, g.zone_size, g.zone_capacity,
                            g.nr_conventional) == -1)
    return -1;
  return open_memory (b);
}

void
emulate_unload (void)
{
  free (persisted_wps);
}

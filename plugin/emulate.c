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
 *
 * Zone operations keep the same rule from the other side, inside the
 * zone operation (the zone stays claimed, no write can reach it):
 *   reset:  the table with the zone empty is durable, then its data is
 *           discarded (a crash in between leaves an empty zone over old
 *           data, which reads as zeros above the WP; never the old WP
 *           over discarded data);
 *   finish: the data above the WP is discarded and synced, then the
 *           table with the zone full is durable (never a full zone over
 *           stale data that was not written since its last reset).
 * Both write the table from the last durable one with only this zone
 * changed: the other zones' WPs there are covered by durable data
 * already, so they need no data sync; each zone operation is durable
 * when it is acknowledged.
 *
 * The header and table are encoded and checked by image-format.c,
 * which trusts nothing in the file.  A new image is created by the
 * first connection for writing, so that nbdkit -r never creates one.
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
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "zbd-internal.h"
#include "image-format.h"
#include "holder.h"

/* A drive's emulation state (struct drive's state). */
struct emu {
  struct drive *drive;
  const struct zbd_params *params;      /* the drive's */
  struct zbd_disk *disk;
  struct zone_table *zt;
  unsigned char *mem;                   /* memory */
  /* The image file (format: image-format.h): the descriptor in use,
   * read-only and then read-write, and the one opened at start, which
   * holds the lock and stays open (other threads may still use it).
   */
  int img_fd, img_start_fd;
  bool img_rw;
  struct img_geometry img_geom;
  uint64_t img_seq;
  /* The image does not exist yet: created by the first writer. */
  bool img_create_pending;
  pthread_mutex_t persist_lock;
  /* The WPs of the newest durable table slot: a flush that would write
   * the same table only syncs the data; a reset or finish starts from
   * it.
   */
  uint64_t *persisted_wps;
  uint64_t loaded_active;               /* active zones of the loaded table */
};

/* The state of a new drive DR, bound to its parameters and disk. */
static struct emu *
new_emu (struct drive *dr)
{
  struct emu *e = calloc (1, sizeof *e);

  if (!e) {
    nbdkit_error ("calloc: %m");
    return NULL;
  }
  e->drive = dr;
  e->params = &dr->params;
  e->disk = &dr->disk;
  e->zt = &dr->disk.table;
  e->img_fd = e->img_start_fd = -1;
  pthread_mutex_init (&e->persist_lock, NULL);
  dr->state = e;
  return e;
}

/* Release what the drive holds: its memory, or its image's
 * descriptors (and so its lock).
 */
static void
free_emu (struct drive *dr)
{
  struct emu *e = dr->state;

  if (!e)
    return;
  if (e->mem && e->mem != MAP_FAILED)
    munmap (e->mem, e->disk->disk_size);
  if (e->img_fd >= 0)
    close (e->img_fd);
  if (e->img_start_fd >= 0 && e->img_start_fd != e->img_fd)
    close (e->img_start_fd);
  free (e->persisted_wps);
  pthread_mutex_destroy (&e->persist_lock);
  free (e);
  dr->state = NULL;
}

/* Derive the condition of an emulated sequential zone from its WP, as
 * after a power cycle: partially written zones are closed.
 */
static void
emulated_cond_from_wp (struct emu *e, struct zone *z)
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
    e->loaded_active++;
  }
}

/* Build the emulated zone table from the geometry. */
static int
build_emulated_zones (struct emu *e, uint64_t size, uint64_t zsize,
                      uint64_t zcap, uint64_t nconv)
{
  uint64_t i;

  e->disk->disk_size = size;
  if (zt_init (e->zt, size / zsize, zsize) == -1) {
    nbdkit_error ("calloc: %m");
    return -1;
  }
  for (i = 0; i < e->zt->nr_zones; i++) {
    struct zone *z = &e->zt->zones[i];
    z->conventional = i < nconv;
    z->cap = z->conventional ? zsize : zcap;
    z->cond = z->conventional ? COND_NOT_WP : COND_EMPTY;
  }
  return 0;
}

/* ---------------------------------------------------------------- */
/* Emulated backend: memory */

static int
mem_pread (struct drive *dr, void *buf, uint32_t n, uint64_t off)
{
  struct emu *e = dr->state;

  memcpy (buf, e->mem + off, n);
  return 0;
}

static int
mem_pwrite (struct drive *dr, const void *buf, uint32_t n, uint64_t off)
{
  struct emu *e = dr->state;

  memcpy (e->mem + off, buf, n);
  return 0;
}

/* Give whole pages back to the kernel (they read as zeros again) and
 * clear the unaligned edges.
 */
static int
mem_discard (struct drive *dr, uint64_t n, uint64_t off)
{
  struct emu *e = dr->state;
  uint64_t page = sysconf (_SC_PAGESIZE);
  uint64_t a = (off + page - 1) & ~(page - 1);
  uint64_t b = (off + n) & ~(page - 1);

  if (a >= b) {
    memset (e->mem + off, 0, n);
    return 0;
  }
  memset (e->mem + off, 0, a - off);
  if (madvise (e->mem + a, b - a, MADV_DONTNEED) == -1)
    memset (e->mem + a, 0, b - a);
  memset (e->mem + b, 0, off + n - b);
  return 0;
}

static int
mem_flush (struct drive *dr)
{
  return 0;
}

static const struct backend memory_backend = {
  .name = "memory", .emulated = true,
  .pread = mem_pread, .pwrite = mem_pwrite, .discard = mem_discard,
  .flush = mem_flush, .close = free_emu,
};

static int
open_memory (struct emu *e)
{
  e->mem = mmap (NULL, e->disk->disk_size, PROT_READ | PROT_WRITE,
              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (e->mem == MAP_FAILED) {
    nbdkit_error ("emulate=memory: cannot map %" PRIu64 " bytes: %m",
                  e->disk->disk_size);
    return -1;
  }
  return 0;
}

/* ---------------------------------------------------------------- */
/* Emulated backend: image file (format: image-format.h) */

/* The current descriptor: load it with the ordering its writer uses. */
static int
image_fd (struct emu *e)
{
  return __atomic_load_n (&e->img_fd, __ATOMIC_ACQUIRE);
}

/* Sync the image's data (durable_sync). */
static int
image_sync (struct emu *e)
{
  return durable_sync (e->drive, image_fd (e), "emulate", e->params->emulate);
}

/* Read both table slots and load the newest valid one into the zone
 * table.
 */
static int
load_table (struct emu *e, const char *path)
{
  uint64_t used = img_slot_used (&e->img_geom);
  unsigned char *s = malloc (2 * used);
  uint64_t *rel = malloc (e->zt->nr_zones * sizeof *rel);
  char err[256];
  uint64_t z;
  int r = -1;

  if (!s || !rel) {
    nbdkit_error ("malloc: %m");
    goto out;
  }
  if (full_pread (e->img_fd, s, used, IMG_FIRST_SLOT) == -1 ||
      full_pread (e->img_fd, s + used, used,
                  IMG_FIRST_SLOT + e->img_geom.slot_size) == -1) {
    nbdkit_error ("emulate=%s: cannot read the zone table: %m", path);
    goto out;
  }
  if (img_load_table (s, s + used, &e->img_geom, &e->img_seq, rel,
                      err, sizeof err) == -1) {
    nbdkit_error ("emulate=%s: %s", path, err);
    goto out;
  }
  for (z = 0; z < e->zt->nr_zones; z++) {
    e->zt->zones[z].wp = e->zt->zones[z].start + rel[z];
    emulated_cond_from_wp (e, &e->zt->zones[z]);
  }
  r = 0;
 out:
  free (s);
  free (rel);
  return r;
}

/* Write the WPs W as the next table slot and sync it.  The caller holds
 * e->persist_lock, and the data under W is durable already.
 */
static int
write_table (struct emu *e, const uint64_t *w)
{
  uint64_t used = img_slot_used (&e->img_geom);
  unsigned char *s = malloc (used);
  uint64_t *rel = malloc (e->zt->nr_zones * sizeof *rel);
  uint64_t seq = e->img_seq + 1, i;
  int r = -1;

  if (!s || !rel) {
    nbdkit_error ("malloc: %m");
    free (s);
    free (rel);
    return -1;
  }
  for (i = 0; i < e->zt->nr_zones; i++)
    rel[i] = w[i] - e->zt->zones[i].start;
  img_encode_slot (s, &e->img_geom, seq, rel);
  free (rel);
  if (full_pwrite (image_fd (e), s, used,
                   IMG_FIRST_SLOT + (seq & 1) * e->img_geom.slot_size) == -1 ||
      image_sync (e) == -1)
    nbdkit_error ("emulate=%s: cannot write the zone table: %m",
                  e->params->emulate);
  else {
    e->img_seq = seq;
    if (e->persisted_wps)
      memcpy (e->persisted_wps, w, e->zt->nr_zones * sizeof *w);
    r = 0;
  }
  free (s);
  return r;
}

/* Crash consistency: snapshot the WPs, then sync the data they cover,
 * then write and sync the table.  Caller holds e->persist_lock.
 */
static int
persist_locked (struct emu *e)
{
  uint64_t *w = malloc (e->zt->nr_zones * sizeof *w);
  int r;

  if (!w) {
    nbdkit_error ("malloc: %m");
    return -1;
  }
  zt_copy_wps (e->zt, w);

  if (image_sync (e) == -1) {
    free (w);
    return -1;
  }
  if (e->persisted_wps &&
      memcmp (e->persisted_wps, w, e->zt->nr_zones * sizeof *w) == 0)
    r = 0;
  else
    r = write_table (e, w);
  free (w);
  return r;
}

static int
file_persist_locked (struct drive *dr)
{
  return persist_locked (dr->state);
}

static int
file_persist (struct drive *dr)
{
  struct emu *e = dr->state;
  int r;

  pthread_mutex_lock (&e->persist_lock);
  r = persist_locked (e);
  pthread_mutex_unlock (&e->persist_lock);
  return r;
}

static void
persist_lock_take (struct drive *dr)
{
  struct emu *e = dr->state;

  pthread_mutex_lock (&e->persist_lock);
}

static void
persist_lock_drop (struct drive *dr)
{
  struct emu *e = dr->state;

  pthread_mutex_unlock (&e->persist_lock);
}

static int
file_pread (struct drive *dr, void *buf, uint32_t n, uint64_t off)
{
  struct emu *e = dr->state;

  if (full_pread (image_fd (e), buf, n, e->img_geom.data_offset + off) == -1) {
    nbdkit_error ("emulate=%s: read at %" PRIu64 ": %m", e->params->emulate,
                  off);
    return -1;
  }
  return 0;
}

static int
file_pwrite (struct drive *dr, const void *buf, uint32_t n, uint64_t off)
{
  struct emu *e = dr->state;

  if (full_pwrite (image_fd (e), buf, n, e->img_geom.data_offset + off) == -1) {
    nbdkit_error ("emulate=%s: write at %" PRIu64 ": %m", e->params->emulate,
                  off);
    return -1;
  }
  return 0;
}

static int
file_discard (struct drive *dr, uint64_t n, uint64_t off)
{
  static const char zero[65536];
  struct emu *e = dr->state;

  if (fallocate (image_fd (e), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                 e->img_geom.data_offset + off, n) == 0)
    return 0;
  /* No hole punching here: write the zeros. */
  while (n > 0) {
    size_t k = n < sizeof zero ? n : sizeof zero;
    if (file_pwrite (dr, zero, k, off) == -1)
      return -1;
    n -= k; off += k;
  }
  return 0;
}

static int create_image (struct emu *e);

/* One server per image: each keeps its own zone table, so two would
 * overwrite each other's and lose flushed writes.  A server that may
 * write holds the image exclusively from its start, a read-only one
 * (nbdkit -r) shares it with other read-only ones.  The lock is on the
 * descriptor opened at start, which stays open (and is inherited
 * across nbdkit's fork into the background).
 */
static int
lock_image (struct emu *e, int fd)
{
  char who[128];

  if (flock (fd, (e->params->readonly ? LOCK_SH : LOCK_EX) | LOCK_NB) == 0)
    return 0;
  if (errno != EWOULDBLOCK) {
    nbdkit_error ("emulate=%s: cannot lock the image: %m; refusing to serve "
                  "it unlocked, where a second server could overwrite it",
                  e->params->emulate);
    return -1;
  }
  holder_describe (fd, who, sizeof who);
  nbdkit_error ("emulate=%s: the image is in use by another server (%s)%s; "
                "stop that one first", e->params->emulate, who,
                e->params->readonly
                ? ", which may write to it: read-only servers share an "
                "image only with each other"
                : ": two servers on one image overwrite each other's zone "
                "table and lose flushed writes");
  return -1;
}

/* The first writer opens the image for writing, or creates it.
 * Caller holds open_lock.
 */
static int
file_open_rw (struct drive *dr)
{
  struct emu *e = dr->state;
  char self[64];
  struct stat a, b;
  int fd;

  if (e->img_rw)
    return 0;
  if (e->img_create_pending)
    return create_image (e);
  /* Through the descriptor opened at start, not the path: the path may
   * name another file by now.
   */
  snprintf (self, sizeof self, "/proc/self/fd/%d", e->img_fd);
  fd = open (self, O_RDWR | O_CLOEXEC);
  if (fd == -1) {
    nbdkit_error ("emulate=%s: cannot open for writing: %m",
                  e->params->emulate);
    return -1;
  }
  if (fstat (fd, &a) == -1 || fstat (e->img_fd, &b) == -1 ||
      a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
    nbdkit_error ("emulate=%s: reopened for writing, it is not the image "
                  "this server started with; refusing to write to it",
                  e->params->emulate);
    close (fd);
    errno = EIO;
    return -1;
  }
  /* The read-only descriptor stays open: other threads may use it,
   * and it holds the lock.
   */
  e->img_start_fd = e->img_fd;
  __atomic_store_n (&e->img_fd, fd, __ATOMIC_RELEASE);
  e->img_rw = true;
  return 0;
}

/* Write the last durable table with zone Z's WP set to WP, and sync it.
 * Caller holds e->persist_lock.
 */
static int
persist_zone_wp (struct emu *e, const struct zone *z, uint64_t wp)
{
  uint64_t *w;
  int r;

  if (e->persisted_wps[zt_index (e->zt, z)] == wp)
    return 0;
  w = malloc (e->zt->nr_zones * sizeof *w);
  if (!w) {
    nbdkit_error ("malloc: %m");
    return -1;
  }
  memcpy (w, e->persisted_wps, e->zt->nr_zones * sizeof *w);
  w[zt_index (e->zt, z)] = wp;
  r = write_table (e, w);
  free (w);
  return r;
}

/* Reset of a claimed zone, under e->persist_lock: table first. */
static int
file_zone_reset (struct drive *dr, const struct zone *z)
{
  if (persist_zone_wp (dr->state, z, z->start) == -1)
    return -1;
  return file_discard (dr, z->len, z->start);
}

/* Finish of a claimed zone, under e->persist_lock: discard first. */
static int
file_zone_finish (struct drive *dr, const struct zone *z)
{
  struct emu *e = dr->state;
  /* The table checked the active-zone rule (do_finish). */
  uint64_t wp = zt_snapshot (e->zt, z).wp;

  if (wp < zone_cap_end (z) &&
      file_discard (dr, zone_cap_end (z) - wp, wp) == -1)
    return -1;
  if (e->persisted_wps[zt_index (e->zt, z)] == zone_cap_end (z))
    return 0;
  /* The discard and the zone's data below the WP (a zone filled by
   * writes that no flush covered yet), durable before the table.
   */
  if (image_sync (e) == -1)
    return -1;
  return persist_zone_wp (e, z, zone_cap_end (z));
}

/* A read-only connection (nbdkit -r): there must be an image to read. */
static int
file_open_ro (struct drive *dr)
{
  struct emu *e = dr->state;

  if (e->img_create_pending) {
    nbdkit_error ("emulate=%s: no such image, and a read-only server "
                  "(nbdkit -r) does not create one; run once without -r "
                  "(with size= and zone-size=) to create it",
                  e->params->emulate);
    return -1;
  }
  return 0;
}

static const struct backend file_backend = {
  .name = "file", .emulated = true,
  .pread = file_pread, .pwrite = file_pwrite, .discard = file_discard,
  .zone_op_reset = file_zone_reset, .zone_op_finish = file_zone_finish,
  .flush = file_persist, .open_rw = file_open_rw,
  .open_ro = file_open_ro,
  .zone_ops_lock = persist_lock_take, .zone_ops_unlock = persist_lock_drop,
  .persist_locked = file_persist_locked, .close = free_emu,
};

/* The geometry asked for on the command line, with defaults. */
static int
requested_geometry (struct emu *e, struct img_geometry *g)
{
  if (e->params->size == -1 || e->params->zone_size == -1) {
    nbdkit_error ("emulate=%s: a new image needs size= and zone-size= "
                  "(e.g. size=1G zone-size=64M)", e->params->emulate);
    return -1;
  }
  g->size = e->params->size;
  g->zone_size = e->params->zone_size;
  g->zone_capacity = e->params->zone_capacity == -1
    ? (uint64_t) e->params->zone_size : (uint64_t) e->params->zone_capacity;
  g->block_size = e->params->block_size == -1 ? 512 : e->params->block_size;
  g->nr_conventional = e->params->conventional == -1
    ? 0 : e->params->conventional;
  g->max_open = e->params->max_open == -1 ? 0 : e->params->max_open;
  g->max_active = e->params->max_active == -1 ? 0 : e->params->max_active;
  g->nr_zones = g->size / g->zone_size;
  return 0;
}

static int
check_geometry (struct emu *e, const struct img_geometry *g)
{
  const char *what = e->params->emulate;

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
match_geometry (struct emu *e, const struct img_geometry *g)
{
  struct { const char *key; int64_t given; uint64_t have; } p[] = {
    { "size", e->params->size, g->size },
    { "zone-size", e->params->zone_size, g->zone_size },
    { "zone-capacity", e->params->zone_capacity, g->zone_capacity },
    { "conventional-zones", e->params->conventional, g->nr_conventional },
    { "max-open-zones", e->params->max_open, g->max_open },
    { "max-active-zones", e->params->max_active, g->max_active },
    { "block-size", e->params->block_size, g->block_size },
  };
  size_t i;

  for (i = 0; i < sizeof p / sizeof p[0]; i++)
    if (p[i].given != -1 && (uint64_t) p[i].given != p[i].have) {
      nbdkit_error ("emulate=%s: %s=%" PRIi64 " does not match the existing "
                    "image (%s=%" PRIu64 "); omit the geometry parameters to "
                    "use the image as it is, or give a new file name",
                    e->params->emulate, p[i].key, p[i].given, p[i].key,
                    p[i].have);
      return -1;
    }
  return 0;
}

static void
apply_geometry (struct emu *e, const struct img_geometry *g)
{
  e->disk->block_size = g->block_size;
  e->disk->phys_block_size = 4096;
  e->disk->max_open = g->max_open;
  e->disk->max_active = g->max_active;
  if (e->disk->max_active && e->disk->max_open > e->disk->max_active)
    e->disk->max_open = e->disk->max_active;  /* as null_blk does */
}

/* The directory PATH is in (a new string). */
static char *
parent_dir (const char *path)
{
  const char *slash = strrchr (path, '/');

  if (!slash)
    return strdup (".");
  if (slash == path)
    return strdup ("/");
  return strndup (path, slash - path);
}

/* The image's identity: the id in its header; an image made before
 * images had one is known by its file (ST), which a copy does not share.
 */
static void
set_image_id (struct emu *e, const struct img_geometry *g,
              const struct stat *st)
{
  char id[64];

  if (g->image_id)
    snprintf (id, sizeof id, "%016" PRIx64, g->image_id);
  else
    snprintf (id, sizeof id, "file-%" PRIx64 "-%" PRIx64,
              (uint64_t) st->st_dev, (uint64_t) st->st_ino);
  zbd_set_disk_id (e->disk->disk_id, sizeof e->disk->disk_id, "image-", id);
}

/* A new image: its geometry is checked and the zone table built now,
 * but the file is created by the first writer (file_open_rw), so that
 * nbdkit -r never creates an image.
 */
static int
prepare_new_image (struct emu *e)
{
  struct img_geometry g;
  char *dir;
  int r;

  if (requested_geometry (e, &g) == -1 || check_geometry (e, &g) == -1)
    return -1;
  /* What would fail at the first connection, said at start. */
  dir = parent_dir (e->params->emulate);
  if (!dir) {
    nbdkit_error ("strdup: %m");
    return -1;
  }
  r = access (dir, W_OK | X_OK);
  if (r == -1)
    nbdkit_error ("emulate=%s: no such image, and it cannot be created in "
                  "%s: %m", e->params->emulate, dir);
  free (dir);
  if (r == -1)
    return -1;
  img_layout (&g);
  g.image_id = zbd_random_id ();
  e->img_geom = g;
  apply_geometry (e, &g);
  set_image_id (e, &g, NULL);
  if (build_emulated_zones (e, g.size, g.zone_size, g.zone_capacity,
                            g.nr_conventional) == -1)
    return -1;
  e->img_create_pending = true;
  return 0;
}

/* The directory entry of a new file, durable. */
static int
sync_parent_dir (const char *path)
{
  char *dir = parent_dir (path);
  int fd, r;

  if (!dir)
    return -1;
  fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  free (dir);
  if (fd == -1)
    return -1;
  r = fsync (fd);
  close (fd);
  return r;
}

/* Create the prepared image: header, an empty table in slot 1 (seq 1,
 * slot 0 stays invalid), all durable with its directory entry.
 */
static int
create_image (struct emu *e)
{
  unsigned char h[IMG_HEADER_SIZE];
  uint64_t size = e->img_geom.data_offset + e->img_geom.size;
  int fd;

  fd = open (e->params->emulate, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd == -1) {
    nbdkit_error ("emulate=%s: cannot create the image: %m",
                  e->params->emulate);
    return -1;
  }
  __atomic_store_n (&e->img_fd, fd, __ATOMIC_RELEASE);
  /* Nobody else can have it yet (O_EXCL): a server started from now on
   * finds it held.
   */
  if (lock_image (e, fd) == -1)
    goto err;
  if (ftruncate (fd, size) == -1) {
    nbdkit_error ("emulate=%s: cannot size the image to %" PRIu64
                  " bytes: %m", e->params->emulate, size);
    goto err;
  }
  img_encode_header (h, &e->img_geom);
  if (full_pwrite (fd, h, sizeof h, 0) == -1) {
    nbdkit_error ("emulate=%s: cannot write the header: %m",
                  e->params->emulate);
    goto err;
  }
  e->img_seq = 0;
  if (write_table (e, e->persisted_wps) == -1)
    goto err;
  if (sync_parent_dir (e->params->emulate) == -1) {
    nbdkit_error ("emulate=%s: cannot sync its directory: %m",
                  e->params->emulate);
    goto err;
  }
  e->img_create_pending = false;
  e->img_rw = true;
  nbdkit_debug ("emulate=%s: created a new image", e->params->emulate);
  return 0;
 err:
  unlink (e->params->emulate);
  close (fd);
  e->img_fd = -1;
  return -1;
}

/* What a file that is not an image is, for the message. */
static const char *
file_type_name (mode_t m)
{
  if (S_ISDIR (m)) return "a directory";
  if (S_ISFIFO (m)) return "a FIFO (named pipe)";
  if (S_ISSOCK (m)) return "a socket";
  if (S_ISCHR (m)) return "a character device";
  if (S_ISBLK (m)) return "a block device (for a zoned block device use "
                     "device=)";
  return "neither a file nor a directory";
}

/* An image is a regular file; anything else is refused by name. */
static int
not_an_image (struct emu *e, const struct stat *st)
{
  if (S_ISREG (st->st_mode))
    return 0;
  nbdkit_error ("emulate=%s: not a regular file but %s; emulate= takes an "
                "image file (created if absent) or \"memory\"",
                e->params->emulate, file_type_name (st->st_mode));
  return -1;
}

static int
open_image (struct emu *e)
{
  struct img_geometry g;
  unsigned char h[IMG_HEADER_SIZE];
  char err[256];
  struct stat st;

  /* Non-blocking: should the path name a FIFO by now (open_file
   * checked the type before), the open must not wait for a writer.
   */
  e->img_fd = open (e->params->emulate, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (e->img_fd == -1) {
    nbdkit_error ("emulate=%s: cannot open: %m", e->params->emulate);
    return -1;
  }
  if (fstat (e->img_fd, &st) == -1) {
    nbdkit_error ("emulate=%s: fstat: %m", e->params->emulate);
    return -1;
  }
  if (not_an_image (e, &st) == -1)
    return -1;
  if (fcntl (e->img_fd, F_SETFL, 0) == -1) {
    nbdkit_error ("emulate=%s: fcntl: %m", e->params->emulate);
    return -1;
  }
  if (lock_image (e, e->img_fd) == -1)
    return -1;
  memset (h, 0, sizeof h);
  if (full_pread (e->img_fd, h, st.st_size < IMG_HEADER_SIZE ? st.st_size
                  : IMG_HEADER_SIZE, 0) == -1) {
    nbdkit_error ("emulate=%s: cannot read the header: %m", e->params->emulate);
    return -1;
  }
  if (img_decode_header (h, sizeof h, st.st_size, &g, err, sizeof err) == -1) {
    nbdkit_error ("emulate=%s: %s", e->params->emulate, err);
    return -1;
  }
  if (match_geometry (e, &g) == -1 || check_geometry (e, &g) == -1)
    return -1;
  apply_geometry (e, &g);
  e->img_geom = g;
  set_image_id (e, &g, &st);
  if (build_emulated_zones (e, g.size, g.zone_size, g.zone_capacity,
                            g.nr_conventional) == -1)
    return -1;
  e->loaded_active = 0;
  if (load_table (e, e->params->emulate) == -1)
    return -1;
  if (e->disk->max_active && e->loaded_active > e->disk->max_active) {
    nbdkit_error ("emulate=%s: %" PRIu64 " zones are active, more than "
                  "max-active-zones=%" PRIu64 "; refusing to use the image",
                  e->params->emulate, e->loaded_active, e->disk->max_active);
    return -1;
  }
  return 0;
}

/* The drive's image, opened or prepared, and its zone table. */
static int
open_file_emu (struct emu *e)
{
  struct stat st;
  uint64_t i;
  int r;

  /* The type first: opening a FIFO would block until a writer came. */
  if (stat (e->params->emulate, &st) == 0)
    r = not_an_image (e, &st) == -1 ? -1 : open_image (e);
  else if (errno == ENOENT)
    r = prepare_new_image (e);
  else {
    nbdkit_error ("emulate=%s: %m", e->params->emulate);
    r = -1;
  }
  if (r == -1)
    return -1;
  e->persisted_wps = malloc (e->zt->nr_zones * sizeof *e->persisted_wps);
  if (!e->persisted_wps) {
    nbdkit_error ("malloc: %m");
    return -1;
  }
  /* What is in the table now (or will be once created). */
  for (i = 0; i < e->zt->nr_zones; i++)
    e->persisted_wps[i] = e->zt->zones[i].wp;
  return 0;
}

int
open_file (struct drive *dr)
{
  struct emu *e = new_emu (dr);

  if (!e)
    return -1;
  if (open_file_emu (e) == -1) {
    free_emu (dr);
    return -1;
  }
  dr->backend = &file_backend;
  return 0;
}

static int
open_memory_emu (struct emu *e)
{
  struct img_geometry g;
  char id[32];

  if (requested_geometry (e, &g) == -1 || check_geometry (e, &g) == -1)
    return -1;
  apply_geometry (e, &g);
  snprintf (id, sizeof id, "%016" PRIx64, zbd_random_id ());
  zbd_set_disk_id (e->disk->disk_id, sizeof e->disk->disk_id, "memory-", id);
  if (build_emulated_zones (e, g.size, g.zone_size, g.zone_capacity,
                            g.nr_conventional) == -1)
    return -1;
  return open_memory (e);
}

int
open_memory_backend (struct drive *dr)
{
  struct emu *e = new_emu (dr);

  if (!e)
    return -1;
  if (open_memory_emu (e) == -1) {
    free_emu (dr);
    return -1;
  }
  dr->backend = &memory_backend;
  return 0;
}

bool
is_zone_image (int fd)
{
  unsigned char h[IMG_HEADER_SIZE];
  struct img_geometry g;
  struct stat st;
  char err[256];

  memset (h, 0, sizeof h);
  if (fstat (fd, &st) == -1 || !S_ISREG (st.st_mode) ||
      full_pread (fd, h, st.st_size < IMG_HEADER_SIZE ? st.st_size
                  : IMG_HEADER_SIZE, 0) == -1)
    return false;
  return img_decode_header (h, sizeof h, st.st_size, &g, err, sizeof err) == 0;
}

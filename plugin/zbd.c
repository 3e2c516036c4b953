/* nbdkit zbd plugin: serve a zoned block device over NBD.
 *
 * How it works.  At start the plugin builds one zone table (start,
 * length, capacity, type, condition, write pointer of every zone) from
 * its backend: a real zoned device through libzbd (device=PATH), or
 * emulated host-managed zones over memory or an image file
 * (emulate=memory|FILE).  The table is shared by every connection.
 *
 * Zones are mapped onto plain NBD requests (the "zoned NBD profile"):
 * block status shows [start,WP) as data and [WP,end) as a hole of
 * zeroes; the export description carries the geometry as key=value
 * words; a trim of whole zones resets them; write-zeroes from the WP
 * to the zone end finishes the zone; reads above the WP return zeros.
 *
 * Writes to a sequential zone pass a per-zone gate: one write in
 * flight per zone, a write at the WP runs, a write ahead of the WP
 * waits (up to reorder-timeout) for the gap to fill, a write below the
 * WP or past the capacity fails at once.  nbdkit runs requests in
 * parallel threads, so this is what turns a pipelined stream of writes
 * back into write-pointer order.  One mutex (zones_lock) protects the
 * whole table; device I/O is done without it, so zones proceed in
 * parallel.
 *
 * The emulated image file keeps a checksummed header and two
 * alternating checksummed zone-table slots.  A flush snapshots the
 * WPs, syncs the data and only then writes the table, so a crash never
 * leaves a WP above data that is not on disk.
 */

#define _GNU_SOURCE 1          /* fallocate, O_DIRECT */
#include <config.h>

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>

#ifdef HAVE_LIBZBD
#include <libzbd/zbd.h>
#endif

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

/* One shared zone table; the gate does its own locking. */
#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

#include "zoned-geometry.h"

/* ---------------------------------------------------------------- */
/* Parameters */

static const char *device_path;          /* device= */
static const char *emulate;              /* emulate=memory|FILE */
static int64_t param_size = -1;
static int64_t param_zone_size = -1;
static int64_t param_zone_capacity = -1;
static int64_t param_conventional = -1;
static int64_t param_max_open = -1;
static int64_t param_max_active = -1;
static int64_t param_block_size = -1;
static uint64_t reorder_timeout_ms = 5000;

/* ---------------------------------------------------------------- */
/* The zone table */

enum zone_cond {
  COND_NOT_WP, COND_EMPTY, COND_IMP_OPEN, COND_EXP_OPEN, COND_CLOSED,
  COND_FULL, COND_READONLY, COND_OFFLINE,
};

struct zone {
  uint64_t start, len, cap;
  uint64_t wp;                  /* absolute byte offset */
  bool conventional;
  enum zone_cond cond;
  bool busy;                    /* a write or zone op is at the device */
  pthread_cond_t changed;       /* wp, busy or cond changed */
};

static struct zone *zones;
static uint64_t nr_zones;
static uint64_t zone_size;      /* all zones but maybe the last */
static uint64_t disk_size;
static uint32_t block_size = 512;
static uint32_t phys_block_size = 4096;
static uint64_t max_open, max_active;   /* 0 = no limit */
static bool host_aware;
static bool rotational;
static char description[512];

static pthread_mutex_t zones_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t nr_open, nr_active;     /* emulated accounting */
static uint64_t close_cursor;           /* round robin implicit close */

/* ---------------------------------------------------------------- */
/* Backends */

struct backend {
  const char *name;
  bool emulated;                /* zone state machine kept here */
  int (*pread) (void *buf, uint32_t n, uint64_t off);
  int (*pwrite) (const void *buf, uint32_t n, uint64_t off);
  int (*discard) (uint64_t n, uint64_t off);    /* make it read zeros */
  int (*zone_op_reset) (struct zone *z);        /* device op, or NULL */
  int (*zone_op_finish) (struct zone *z);
  int (*flush) (void);
  int (*persist) (void);        /* durable zone table (file), or NULL */
  void (*reload_zone) (struct zone *z);         /* after an I/O error */
  int (*open_rw) (void);        /* upgrade to read-write, or NULL */
};
static const struct backend *backend;

/* ---------------------------------------------------------------- */
/* Small helpers */

/* Parse a duration: "5s", "500ms", "2m", or plain seconds ("2"). */
static int
parse_duration (const char *key, const char *value, uint64_t *ms)
{
  char *end;
  unsigned long long v;

  errno = 0;
  v = strtoull (value, &end, 10);
  if (errno || end == value || value[0] == '-')
    goto bad;
  if (*end == '\0' || strcmp (end, "s") == 0)
    v *= 1000;
  else if (strcmp (end, "m") == 0)
    v *= 60000;
  else if (strcmp (end, "ms") != 0)
    goto bad;
  if (v > 24ULL * 3600 * 1000)
    goto bad;
  *ms = v;
  return 0;
 bad:
  nbdkit_error ("%s=%s: not a duration; use e.g. 5s, 500ms, 2m or a number "
                "of seconds (at most 24 hours)", key, value);
  return -1;
}

static int
parse_count (const char *key, const char *value, int64_t *out)
{
  uint32_t v;

  if (nbdkit_parse_uint32_t (key, value, &v) == -1)
    return -1;
  *out = v;
  return 0;
}

static int
parse_bytes (const char *key, const char *value, int64_t *out)
{
  int64_t v = nbdkit_parse_size (value);

  if (v == -1)
    return -1;
  if (v == 0) {
    nbdkit_error ("%s=%s: must be greater than zero", key, value);
    return -1;
  }
  *out = v;
  return 0;
}

static struct zone *
zone_of (uint64_t offset)
{
  uint64_t i = offset / zone_size;

  return &zones[i < nr_zones ? i : nr_zones - 1];
}

static uint64_t
zone_index (const struct zone *z)
{
  return z - zones;
}

static uint64_t
zone_end (const struct zone *z)
{
  return z->start + z->len;
}

static uint64_t
zone_cap_end (const struct zone *z)
{
  return z->start + z->cap;
}

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

static int
full_pread (int fd, void *buf, size_t n, off_t off)
{
  char *p = buf;

  while (n > 0) {
    ssize_t r = pread (fd, p, n, off);
    if (r == -1) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (r == 0) {
      errno = EIO;
      return -1;
    }
    p += r; n -= r; off += r;
  }
  return 0;
}

static int
full_pwrite (int fd, const void *buf, size_t n, off_t off)
{
  const char *p = buf;

  while (n > 0) {
    ssize_t r = pwrite (fd, p, n, off);
    if (r == -1) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += r; n -= r; off += r;
  }
  return 0;
}

static void
init_zone_conds (struct zone *z, size_t n)
{
  pthread_condattr_t attr;
  size_t i;

  pthread_condattr_init (&attr);
  pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
  for (i = 0; i < n; i++)
    pthread_cond_init (&z[i].changed, &attr);
  pthread_condattr_destroy (&attr);
}

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
    nr_active++;
  }
}

/* Build the emulated zone table from the geometry. */
static int
build_emulated_zones (uint64_t size, uint64_t zsize, uint64_t zcap,
                      uint64_t nconv)
{
  uint64_t i;

  nr_zones = size / zsize;
  zone_size = zsize;
  disk_size = size;
  zones = calloc (nr_zones, sizeof *zones);
  if (!zones) {
    nbdkit_error ("calloc: %m");
    return -1;
  }
  init_zone_conds (zones, nr_zones);
  for (i = 0; i < nr_zones; i++) {
    struct zone *z = &zones[i];
    z->start = i * zsize;
    z->len = zsize;
    z->conventional = i < nconv;
    z->cap = z->conventional ? zsize : zcap;
    z->wp = z->start;
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
open_memory (void)
{
  mem = mmap (NULL, disk_size, PROT_READ | PROT_WRITE,
              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) {
    nbdkit_error ("emulate=memory: cannot map %" PRIu64 " bytes: %m",
                  disk_size);
    return -1;
  }
  backend = &memory_backend;
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

static int img_fd = -1;
static bool img_rw;
static uint64_t img_slot_size, img_data_offset, img_seq;
static pthread_mutex_t persist_lock = PTHREAD_MUTEX_INITIALIZER;

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
  put32 (s + 12, nr_zones);
  for (i = 0; i < nr_zones; i++)
    put64 (s + SLOT_HEADER + 8 * i, w[i] - zones[i].start);
  put32 (s + 16, crc32_le (s, SLOT_HEADER + 8 * nr_zones));
}

static bool
slot_valid (unsigned char *s)
{
  uint32_t crc = get32 (s + 16);
  bool ok;

  if (memcmp (s, "ZTBL", 4) != 0 || get32 (s + 12) != nr_zones)
    return false;
  put32 (s + 16, 0);
  ok = crc == crc32_le (s, SLOT_HEADER + 8 * nr_zones);
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
  for (z = 0; z < nr_zones; z++) {
    uint64_t rel = get64 (s[best] + SLOT_HEADER + 8 * z);
    if (rel > zones[z].cap || (zones[z].conventional && rel != 0)) {
      nbdkit_error ("emulate=%s: the zone table is inconsistent (zone %"
                    PRIu64 " write pointer %" PRIu64 " beyond capacity %"
                    PRIu64 "); refusing to use the image",
                    path, z, rel, zones[z].cap);
      goto err;
    }
    zones[z].wp = zones[z].start + rel;
    emulated_cond_from_wp (&zones[z]);
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
  if (full_pwrite (img_fd, s, img_slot_size,
                   IMG_HEADER_SIZE + (seq & 1) * img_slot_size) == -1 ||
      fdatasync (img_fd) == -1)
    nbdkit_error ("emulate=%s: cannot write the zone table: %m", emulate);
  else {
    img_seq = seq;
    if (persisted_wps)
      memcpy (persisted_wps, w, nr_zones * sizeof *w);
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
  uint64_t *w = malloc (nr_zones * sizeof *w);
  uint64_t i;
  int r;

  if (!w) {
    nbdkit_error ("malloc: %m");
    return -1;
  }
  pthread_mutex_lock (&zones_lock);
  for (i = 0; i < nr_zones; i++)
    w[i] = zones[i].wp;
  pthread_mutex_unlock (&zones_lock);

  if (fdatasync (img_fd) == -1) {
    nbdkit_error ("emulate=%s: fdatasync: %m", emulate);
    free (w);
    return -1;
  }
  if (persisted_wps && memcmp (persisted_wps, w, nr_zones * sizeof *w) == 0)
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

static int
file_pread (void *buf, uint32_t n, uint64_t off)
{
  if (full_pread (img_fd, buf, n, img_data_offset + off) == -1) {
    nbdkit_error ("emulate=%s: read at %" PRIu64 ": %m", emulate, off);
    return -1;
  }
  return 0;
}

static int
file_pwrite (const void *buf, uint32_t n, uint64_t off)
{
  if (full_pwrite (img_fd, buf, n, img_data_offset + off) == -1) {
    nbdkit_error ("emulate=%s: write at %" PRIu64 ": %m", emulate, off);
    return -1;
  }
  return 0;
}

static int
file_discard (uint64_t n, uint64_t off)
{
  static const char zero[65536];

  if (fallocate (img_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
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
  int fd;

  if (img_rw)
    return 0;
  fd = open (emulate, O_RDWR | O_CLOEXEC);
  if (fd == -1) {
    nbdkit_error ("emulate=%s: cannot open for writing: %m", emulate);
    return -1;
  }
  /* The read-only descriptor stays open: other threads may use it. */
  __atomic_store_n (&img_fd, fd, __ATOMIC_SEQ_CST);
  img_rw = true;
  return 0;
}

static const struct backend file_backend = {
  .name = "file", .emulated = true,
  .pread = file_pread, .pwrite = file_pwrite, .discard = file_discard,
  .flush = file_persist, .persist = file_persist, .open_rw = file_open_rw,
};

/* The geometry asked for on the command line, with defaults. */
static int
requested_geometry (struct img_geometry *g)
{
  if (param_size == -1 || param_zone_size == -1) {
    nbdkit_error ("emulate=%s: a new image needs size= and zone-size= "
                  "(e.g. size=1G zone-size=64M)", emulate);
    return -1;
  }
  g->size = param_size;
  g->zone_size = param_zone_size;
  g->zone_capacity = param_zone_capacity == -1
    ? (uint64_t) param_zone_size : (uint64_t) param_zone_capacity;
  g->block_size = param_block_size == -1 ? 512 : param_block_size;
  g->nr_conventional = param_conventional == -1 ? 0 : param_conventional;
  g->max_open = param_max_open == -1 ? 0 : param_max_open;
  g->max_active = param_max_active == -1 ? 0 : param_max_active;
  g->nr_zones = g->size / g->zone_size;
  return 0;
}

static int
check_geometry (const struct img_geometry *g)
{
  const char *what = emulate;

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
    { "size", param_size, g->size },
    { "zone-size", param_zone_size, g->zone_size },
    { "zone-capacity", param_zone_capacity, g->zone_capacity },
    { "conventional-zones", param_conventional, g->nr_conventional },
    { "max-open-zones", param_max_open, g->max_open },
    { "max-active-zones", param_max_active, g->max_active },
    { "block-size", param_block_size, g->block_size },
  };
  size_t i;

  for (i = 0; i < sizeof p / sizeof p[0]; i++)
    if (p[i].given != -1 && (uint64_t) p[i].given != p[i].have) {
      nbdkit_error ("emulate=%s: %s=%" PRIi64 " does not match the existing "
                    "image (%s=%" PRIu64 "); omit the geometry parameters to "
                    "use the image as it is, or give a new file name",
                    emulate, p[i].key, p[i].given, p[i].key, p[i].have);
      return -1;
    }
  return 0;
}

static void
apply_geometry (const struct img_geometry *g)
{
  block_size = g->block_size;
  max_open = g->max_open;
  max_active = g->max_active;
  if (max_active && max_open > max_active)
    max_open = max_active;      /* as null_blk does */
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

  img_fd = open (emulate, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (img_fd == -1) {
    nbdkit_error ("emulate=%s: cannot create the image: %m", emulate);
    return -1;
  }
  img_rw = true;
  if (ftruncate (img_fd, g.data_offset + g.size) == -1) {
    nbdkit_error ("emulate=%s: cannot size the image to %" PRIu64
                  " bytes: %m", emulate, g.data_offset + g.size);
    goto err;
  }
  encode_header (h, &g);
  if (full_pwrite (img_fd, h, sizeof h, 0) == -1) {
    nbdkit_error ("emulate=%s: cannot write the header: %m", emulate);
    goto err;
  }
  apply_geometry (&g);
  img_slot_size = g.slot_size;
  img_data_offset = g.data_offset;
  if (build_emulated_zones (g.size, g.zone_size, g.zone_capacity,
                            g.nr_conventional) == -1)
    goto err;
  w = malloc (nr_zones * sizeof *w);
  if (!w)
    goto err;
  for (i = 0; i < nr_zones; i++)
    w[i] = zones[i].start;
  img_seq = 0;
  r = write_table (w);          /* slot 1, seq 1; slot 0 stays invalid */
  free (w);
  if (r == -1)
    goto err;
  nbdkit_debug ("emulate=%s: created a new image", emulate);
  return 0;
 err:
  unlink (emulate);
  return -1;
}

static int
open_image (void)
{
  struct img_geometry g;
  unsigned char h[IMG_HEADER_SIZE];
  struct stat st;

  img_fd = open (emulate, O_RDONLY | O_CLOEXEC);
  if (img_fd == -1) {
    nbdkit_error ("emulate=%s: cannot open: %m", emulate);
    return -1;
  }
  if (fstat (img_fd, &st) == -1 || !S_ISREG (st.st_mode)) {
    nbdkit_error ("emulate=%s: not a regular file; emulate= takes an image "
                  "file (created if absent) or \"memory\"", emulate);
    return -1;
  }
  if ((uint64_t) st.st_size < IMG_HEADER_SIZE) {
    nbdkit_error ("emulate=%s: truncated image (%" PRIu64 " bytes, shorter "
                  "than its %d-byte header); refusing to use it",
                  emulate, (uint64_t) st.st_size, IMG_HEADER_SIZE);
    return -1;
  }
  if (full_pread (img_fd, h, sizeof h, 0) == -1) {
    nbdkit_error ("emulate=%s: cannot read the header: %m", emulate);
    return -1;
  }
  if (decode_header (emulate, h, &g) == -1 || match_geometry (&g) == -1 ||
      check_geometry (&g) == -1)
    return -1;
  if ((uint64_t) st.st_size < g.data_offset + g.size) {
    nbdkit_error ("emulate=%s: truncated image (%" PRIu64 " bytes, expected "
                  "%" PRIu64 "); refusing to use it", emulate,
                  (uint64_t) st.st_size, g.data_offset + g.size);
    return -1;
  }
  apply_geometry (&g);
  img_slot_size = g.slot_size;
  img_data_offset = g.data_offset;
  if (build_emulated_zones (g.size, g.zone_size, g.zone_capacity,
                            g.nr_conventional) == -1)
    return -1;
  nr_active = 0;
  if (load_table (emulate) == -1)
    return -1;
  if (max_active && nr_active > max_active) {
    nbdkit_error ("emulate=%s: %" PRIu64 " zones are active, more than "
                  "max-active-zones=%" PRIu64 "; refusing to use the image",
                  emulate, nr_active, max_active);
    return -1;
  }
  return 0;
}

static int
open_file (void)
{
  int r;

  if (access (emulate, F_OK) == 0)
    r = open_image ();
  else
    r = create_image ();
  if (r == 0) {
    uint64_t i;

    persisted_wps = malloc (nr_zones * sizeof *persisted_wps);
    if (!persisted_wps) {
      nbdkit_error ("malloc: %m");
      return -1;
    }
    /* What is in the table now: the WPs just loaded or created. */
    for (i = 0; i < nr_zones; i++)
      persisted_wps[i] = zones[i].wp;
    backend = &file_backend;
  }
  return r;
}

static int
open_memory_backend (void)
{
  struct img_geometry g;

  if (requested_geometry (&g) == -1 || check_geometry (&g) == -1)
    return -1;
  apply_geometry (&g);
  if (build_emulated_zones (g.size, g.zone_size, g.zone_capacity,
                            g.nr_conventional) == -1)
    return -1;
  return open_memory ();
}

/* ---------------------------------------------------------------- */
/* libzbd backend: a real zoned block device */

#ifdef HAVE_LIBZBD

static int dev_fd = -1;
static bool dev_rw, dev_direct;

static enum zone_cond
cond_from_zbd (const struct zbd_zone *zz)
{
  switch (zbd_zone_cond (zz)) {
  case ZBD_ZONE_COND_NOT_WP: return COND_NOT_WP;
  case ZBD_ZONE_COND_EMPTY: return COND_EMPTY;
  case ZBD_ZONE_COND_IMP_OPEN: return COND_IMP_OPEN;
  case ZBD_ZONE_COND_EXP_OPEN: return COND_EXP_OPEN;
  case ZBD_ZONE_COND_CLOSED: return COND_CLOSED;
  case ZBD_ZONE_COND_FULL: return COND_FULL;
  case ZBD_ZONE_COND_READONLY: return COND_READONLY;
  default: return COND_OFFLINE;
  }
}

static void
zone_from_zbd (struct zone *z, const struct zbd_zone *zz)
{
  z->start = zbd_zone_start (zz);
  z->len = zbd_zone_len (zz);
  z->cap = zbd_zone_capacity (zz) ? zbd_zone_capacity (zz) : z->len;
  z->conventional = zbd_zone_cnv (zz);
  z->cond = cond_from_zbd (zz);
  if (z->conventional)
    z->wp = z->start;
  else if (z->cond == COND_FULL)
    z->wp = zone_cap_end (z);
  else if (z->cond == COND_READONLY || z->cond == COND_OFFLINE)
    z->wp = z->start;
  else
    z->wp = zbd_zone_wp (zz);
}

/* O_DIRECT needs aligned memory: copy through a bounce buffer. */
static void *
bounce_alloc (size_t n)
{
  void *p;
  size_t align = phys_block_size > 4096 ? phys_block_size : 4096;

  if (posix_memalign (&p, align, n ? n : align) != 0) {
    errno = ENOMEM;
    return NULL;
  }
  return p;
}

static int
dev_pread (void *buf, uint32_t n, uint64_t off)
{
  void *b = dev_direct ? bounce_alloc (n) : buf;
  int r;

  if (!b) {
    nbdkit_error ("device=%s: no memory for a %" PRIu32 "-byte read",
                  device_path, n);
    return -1;
  }
  r = full_pread (dev_fd, b, n, off);
  if (r == -1)
    nbdkit_error ("device=%s: read of %" PRIu32 " bytes at %" PRIu64 ": %m",
                  device_path, n, off);
  else if (b != buf)
    memcpy (buf, b, n);
  if (b != buf)
    free (b);
  return r;
}

static int
dev_pwrite (const void *buf, uint32_t n, uint64_t off)
{
  void *b = dev_direct ? bounce_alloc (n) : (void *) buf;
  int r;

  if (!b) {
    nbdkit_error ("device=%s: no memory for a %" PRIu32 "-byte write",
                  device_path, n);
    return -1;
  }
  if (b != buf)
    memcpy (b, buf, n);
  r = full_pwrite (dev_fd, b, n, off);
  if (r == -1)
    nbdkit_error ("device=%s: write of %" PRIu32 " bytes at %" PRIu64 ": %m",
                  device_path, n, off);
  if (b != buf)
    free (b);
  return r;
}

/* Conventional zones: write zeros (the device has no discard promise). */
static int
dev_discard (uint64_t n, uint64_t off)
{
  size_t chunk = 1024 * 1024;
  void *z = bounce_alloc (chunk);
  int r = 0;

  if (!z)
    return -1;
  memset (z, 0, chunk);
  while (n > 0 && r == 0) {
    size_t k = n < chunk ? n : chunk;
    r = full_pwrite (dev_fd, z, k, off);
    n -= k; off += k;
  }
  if (r == -1)
    nbdkit_error ("device=%s: writing zeros at %" PRIu64 ": %m",
                  device_path, off);
  free (z);
  return r;
}

static int
dev_reset (struct zone *z)
{
  if (zbd_reset_zones (dev_fd, z->start, z->len) != 0) {
    nbdkit_error ("device=%s: zone reset at %" PRIu64 " failed: %m",
                  device_path, z->start);
    return -1;
  }
  return 0;
}

static int
dev_finish (struct zone *z)
{
  if (zbd_finish_zones (dev_fd, z->start, z->len) != 0) {
    nbdkit_error ("device=%s: zone finish at %" PRIu64 " failed: %m",
                  device_path, z->start);
    return -1;
  }
  return 0;
}

static int
dev_flush (void)
{
  if (fdatasync (dev_fd) == -1) {
    nbdkit_error ("device=%s: flush: %m", device_path);
    return -1;
  }
  return 0;
}

/* Called with zones_lock held: the device is the truth. */
static void
dev_reload_zone (struct zone *z)
{
  struct zbd_zone zz;
  unsigned int n = 1;
  int saved = errno;

  if (zbd_report_zones (dev_fd, z->start, z->len, ZBD_RO_ALL, &zz, &n) == 0
      && n == 1) {
    zone_from_zbd (z, &zz);
    nbdkit_debug ("zone %" PRIu64 " re-read after an error: wp %" PRIu64,
                  zone_index (z), z->wp);
  }
  else
    nbdkit_error ("device=%s: cannot re-read zone %" PRIu64 ": %m",
                  device_path, zone_index (z));
  errno = saved;
}

static int
dev_open_fd (int mode)
{
  struct zbd_info info;
  int fd;

  fd = zbd_open (device_path, mode | O_DIRECT | O_CLOEXEC, &info);
  if (fd < 0 && (errno == EINVAL || fd == -EINVAL)) {
    fd = zbd_open (device_path, mode | O_CLOEXEC, &info);
    dev_direct = false;
  }
  else
    dev_direct = fd >= 0;
  return fd;
}

static int
dev_open_rw (void)
{
  int fd;
  bool direct = dev_direct;

  if (dev_rw)
    return 0;
  fd = dev_open_fd (O_RDWR);
  if (fd < 0) {
    errno = fd < -1 ? -fd : errno;
    nbdkit_error ("device=%s: cannot open for writing: %m", device_path);
    dev_direct = direct;
    return -1;
  }
  __atomic_store_n (&dev_fd, fd, __ATOMIC_SEQ_CST);
  dev_rw = true;
  return 0;
}

static const struct backend device_backend = {
  .name = "device", .emulated = false,
  .pread = dev_pread, .pwrite = dev_pwrite, .discard = dev_discard,
  .zone_op_reset = dev_reset, .zone_op_finish = dev_finish,
  .flush = dev_flush, .reload_zone = dev_reload_zone,
  .open_rw = dev_open_rw,
};

/* A clear reason why PATH cannot be served, checked before libzbd. */
static int
check_device_path (void)
{
  struct stat st;

  if (stat (device_path, &st) == -1) {
    nbdkit_error ("device=%s: %m", device_path);
    return -1;
  }
  if (S_ISREG (st.st_mode)) {
    nbdkit_error ("device=%s: is a regular file, not a zoned block device; "
                  "for an emulated zoned disk use emulate=%s", device_path,
                  device_path);
    return -1;
  }
  if (!S_ISBLK (st.st_mode)) {
    nbdkit_error ("device=%s: is not a block device (zoned block devices "
                  "are /dev/sdX, /dev/nvmeXnY, /dev/nullbX)", device_path);
    return -1;
  }
  return 0;
}

static bool
read_rotational (void)
{
  char path[PATH_MAX], *real = realpath (device_path, NULL);
  const char *base;
  FILE *fp;
  int v = 0;

  if (!real)
    return false;
  base = strrchr (real, '/');
  snprintf (path, sizeof path, "/sys/block/%s/queue/rotational",
            base ? base + 1 : real);
  free (real);
  fp = fopen (path, "r");
  if (fp) {
    if (fscanf (fp, "%d", &v) != 1)
      v = 0;
    fclose (fp);
  }
  return v == 1;
}

static int
open_device (void)
{
  struct zbd_info info;
  struct zbd_zone *zz = NULL;
  unsigned int n = 0, i;

  if (check_device_path () == -1)
    return -1;
  zbd_set_log_level (ZBD_LOG_NONE);
  dev_fd = dev_open_fd (O_RDONLY);
  if (dev_fd < 0) {
    int e = dev_fd < -1 ? -dev_fd : errno;
    if (e == ENXIO || e == ENOTTY || e == EINVAL)
      nbdkit_error ("device=%s: not a zoned block device (its zoned model "
                    "is \"none\"); this plugin serves host-managed or "
                    "host-aware zoned devices", device_path);
    else
      nbdkit_error ("device=%s: cannot open: %s", device_path, strerror (e));
    return -1;
  }
  if (zbd_get_info (dev_fd, &info) != 0) {
    nbdkit_error ("device=%s: cannot read zone information: %m",
                  device_path);
    return -1;
  }
  if (info.model != ZBD_DM_HOST_MANAGED && info.model != ZBD_DM_HOST_AWARE) {
    nbdkit_error ("device=%s: not a zoned block device (zoned model \"%s\")",
                  device_path, zbd_device_model_str (info.model, false));
    return -1;
  }
  if (zbd_list_zones (dev_fd, 0, 0, ZBD_RO_ALL, &zz, &n) != 0 || n == 0) {
    nbdkit_error ("device=%s: cannot report zones: %m", device_path);
    return -1;
  }
  zones = calloc (n, sizeof *zones);
  if (!zones) {
    nbdkit_error ("calloc: %m");
    free (zz);
    return -1;
  }
  init_zone_conds (zones, n);
  for (i = 0; i < n; i++)
    zone_from_zbd (&zones[i], &zz[i]);
  free (zz);
  nr_zones = n;
  zone_size = info.zone_size;
  disk_size = zones[n - 1].start + zones[n - 1].len;
  block_size = info.lblock_size;
  phys_block_size = info.pblock_size;
  max_open = info.max_nr_open_zones == (unsigned) -1 ? 0
    : info.max_nr_open_zones;
  max_active = info.max_nr_active_zones == (unsigned) -1 ? 0
    : info.max_nr_active_zones;
  host_aware = info.model == ZBD_DM_HOST_AWARE;
  rotational = read_rotational ();
  backend = &device_backend;
  nbdkit_debug ("device=%s: %s, %u zones of %llu bytes, block %u/%u, "
                "O_DIRECT %s", device_path, info.vendor_id, n, info.zone_size,
                info.lblock_size, info.pblock_size, dev_direct ? "yes" : "no");
  return 0;
}

#else /* !HAVE_LIBZBD */

static int
open_device (void)
{
  nbdkit_error ("device=%s: this zbd plugin was built without libzbd, so it "
                "cannot serve real zoned devices; use emulate=FILE|memory",
                device_path);
  return -1;
}

#endif /* !HAVE_LIBZBD */

/* ---------------------------------------------------------------- */
/* Emulated zone resources (null_blk semantics).  zones_lock held. */

/* Make room for one more open zone by closing an implicitly open zone
 * with no write in flight, round robin.  Returns false if none can be.
 */
static bool
make_open_room (void)
{
  uint64_t i;

  if (max_open == 0 || nr_open < max_open)
    return true;
  for (i = 0; i < nr_zones; i++) {
    struct zone *v = &zones[(close_cursor + i) % nr_zones];

    if (v->cond == COND_IMP_OPEN && !v->busy) {
      close_cursor = zone_index (v) + 1;
      nr_open--;
      if (v->wp == v->start) {
        v->cond = COND_EMPTY;
        nr_active--;
      }
      else
        v->cond = COND_CLOSED;
      return true;
    }
  }
  return false;
}

/* Open zone Z implicitly for a write, or fail with ENOSPC. */
static int
open_for_write (struct zone *z, uint64_t offset)
{
  if (!backend->emulated || z->cond == COND_IMP_OPEN ||
      z->cond == COND_EXP_OPEN)
    return 0;
  if (z->cond == COND_EMPTY && max_active && nr_active >= max_active) {
    nbdkit_error ("write at %" PRIu64 " to zone %" PRIu64 ": too many active "
                  "zones (%" PRIu64 ", max-active-zones=%" PRIu64 "): "
                  "ENOSPC", offset, zone_index (z), nr_active, max_active);
    errno = ENOSPC;
    return -1;
  }
  if (!make_open_room ()) {
    nbdkit_error ("write at %" PRIu64 " to zone %" PRIu64 ": too many open "
                  "zones (%" PRIu64 ", max-open-zones=%" PRIu64 ", none can "
                  "be closed): ENOSPC", offset, zone_index (z), nr_open,
                  max_open);
    errno = ENOSPC;
    return -1;
  }
  if (z->cond == COND_EMPTY)
    nr_active++;
  nr_open++;
  z->cond = COND_IMP_OPEN;
  return 0;
}

/* Release the resources of Z and set its new condition. */
static void
set_cond (struct zone *z, enum zone_cond c)
{
  if (backend->emulated) {
    if (z->cond == COND_IMP_OPEN || z->cond == COND_EXP_OPEN)
      nr_open--;
    if (z->cond == COND_IMP_OPEN || z->cond == COND_EXP_OPEN ||
        z->cond == COND_CLOSED)
      nr_active--;
    if (c == COND_IMP_OPEN || c == COND_EXP_OPEN)
      nr_open++;
    if (c == COND_IMP_OPEN || c == COND_EXP_OPEN || c == COND_CLOSED)
      nr_active++;
  }
  z->cond = c;
}

/* ---------------------------------------------------------------- */
/* The write gate */

static void
deadline_after (struct timespec *ts, uint64_t ms)
{
  clock_gettime (CLOCK_MONOTONIC, ts);
  ts->tv_sec += ms / 1000;
  ts->tv_nsec += (ms % 1000) * 1000000;
  if (ts->tv_nsec >= 1000000000) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000;
  }
}

/* Wait (zones_lock held) until the write [OFFSET, OFFSET+N) in
 * sequential zone Z may run.  Returns 0 with Z->busy set, or -1.
 */
static int
gate_enter (struct zone *z, uint64_t offset, uint32_t n)
{
  struct timespec deadline;
  bool timed_out = false;

  if (offset + n > zone_cap_end (z)) {
    nbdkit_error ("write of %" PRIu32 " bytes at %" PRIu64 " goes past the "
                  "capacity of zone %" PRIu64 " (ends at %" PRIu64 "): "
                  "ENOSPC", n, offset, zone_index (z), zone_cap_end (z));
    errno = ENOSPC;
    return -1;
  }
  deadline_after (&deadline, reorder_timeout_ms);
  for (;;) {
    if (z->cond == COND_READONLY || z->cond == COND_OFFLINE) {
      nbdkit_error ("write at %" PRIu64 ": zone %" PRIu64 " is %s",
                    offset, zone_index (z),
                    z->cond == COND_READONLY ? "read-only" : "offline");
      errno = EIO;
      return -1;
    }
    if (offset < z->wp) {
      nbdkit_error ("write at %" PRIu64 " is below the write pointer %"
                    PRIu64 " of zone %" PRIu64 ": EIO",
                    offset, z->wp, zone_index (z));
      errno = EIO;
      return -1;
    }
    if (offset == z->wp && !z->busy)
      break;
    if (timed_out) {
      nbdkit_error ("write at %" PRIu64 " waited %" PRIu64 " ms for zone %"
                    PRIu64 " whose write pointer stayed at %" PRIu64
                    " (reorder-timeout): EIO", offset, reorder_timeout_ms,
                    zone_index (z), z->wp);
      errno = EIO;
      return -1;
    }
    if (pthread_cond_timedwait (&z->changed, &zones_lock, &deadline)
        == ETIMEDOUT)
      timed_out = true;
  }
  if (open_for_write (z, offset) == -1)
    return -1;
  z->busy = true;
  return 0;
}

/* Record the outcome of the write (zones_lock held) and wake waiters. */
static void
gate_leave (struct zone *z, uint32_t n, bool ok)
{
  z->busy = false;
  if (ok) {
    z->wp += n;
    if (z->wp >= zone_cap_end (z))
      set_cond (z, COND_FULL);
  }
  else if (backend->reload_zone)
    backend->reload_zone (z);
  pthread_cond_broadcast (&z->changed);
}

static int
gated_write (struct zone *z, const void *buf, uint32_t n, uint64_t offset)
{
  int r, saved;

  pthread_mutex_lock (&zones_lock);
  r = gate_enter (z, offset, n);
  pthread_mutex_unlock (&zones_lock);
  if (r == -1)
    return -1;

  r = backend->pwrite (buf, n, offset);
  saved = errno;

  pthread_mutex_lock (&zones_lock);
  gate_leave (z, n, r == 0);
  pthread_mutex_unlock (&zones_lock);
  errno = saved;
  return r;
}

/* Claim zone Z for a zone operation: no write in flight during it. */
static void
claim_zone (struct zone *z)
{
  pthread_mutex_lock (&zones_lock);
  while (z->busy)
    pthread_cond_wait (&z->changed, &zones_lock);
  z->busy = true;
  pthread_mutex_unlock (&zones_lock);
}

static void
release_zone (struct zone *z, bool ok, enum zone_cond c, uint64_t wp)
{
  pthread_mutex_lock (&zones_lock);
  z->busy = false;
  if (ok) {
    set_cond (z, c);
    z->wp = wp;
  }
  else if (backend->reload_zone)
    backend->reload_zone (z);
  pthread_cond_broadcast (&z->changed);
  pthread_mutex_unlock (&zones_lock);
}

/* Reset a sequential zone: discard its data, WP to the start. */
static int
reset_zone (struct zone *z)
{
  int r;

  claim_zone (z);
  if (backend->zone_op_reset)
    r = backend->zone_op_reset (z);
  else
    r = backend->discard (z->len, z->start);
  release_zone (z, r == 0, COND_EMPTY, z->start);
  return r;
}

/* Finish a sequential zone: it becomes full. */
static int
finish_zone (struct zone *z)
{
  int r = 0;

  claim_zone (z);
  if (backend->zone_op_finish)
    r = backend->zone_op_finish (z);
  else {
    /* Data above the WP may be stale (written before a crash, never
     * covered by a durable WP): it must read as zeros once full.
     */
    pthread_mutex_lock (&zones_lock);
    if (z->cond == COND_EMPTY && max_active && nr_active >= max_active) {
      nbdkit_error ("finish of zone %" PRIu64 ": too many active zones (%"
                    PRIu64 ", max-active-zones=%" PRIu64 "): ENOSPC",
                    zone_index (z), nr_active, max_active);
      errno = ENOSPC;
      r = -1;
    }
    pthread_mutex_unlock (&zones_lock);
    if (r == 0 && z->wp < zone_cap_end (z))
      r = backend->discard (zone_cap_end (z) - z->wp, z->wp);
  }
  release_zone (z, r == 0, COND_FULL, zone_cap_end (z));
  return r;
}

/* ---------------------------------------------------------------- */
/* nbdkit callbacks */

static void
zbd_unload (void)
{
  free (persisted_wps);
  free (zones);
}

static int
zbd_config (const char *key, const char *value)
{
  if (strcmp (key, "device") == 0)
    device_path = value;
  else if (strcmp (key, "emulate") == 0)
    emulate = value;
  else if (strcmp (key, "size") == 0)
    return parse_bytes (key, value, &param_size);
  else if (strcmp (key, "zone-size") == 0)
    return parse_bytes (key, value, &param_zone_size);
  else if (strcmp (key, "zone-capacity") == 0)
    return parse_bytes (key, value, &param_zone_capacity);
  else if (strcmp (key, "block-size") == 0)
    return parse_bytes (key, value, &param_block_size);
  else if (strcmp (key, "conventional-zones") == 0)
    return parse_count (key, value, &param_conventional);
  else if (strcmp (key, "max-open-zones") == 0)
    return parse_count (key, value, &param_max_open);
  else if (strcmp (key, "max-active-zones") == 0)
    return parse_count (key, value, &param_max_active);
  else if (strcmp (key, "reorder-timeout") == 0)
    return parse_duration (key, value, &reorder_timeout_ms);
  else {
    nbdkit_error ("unknown parameter '%s'; see nbdkit-zbd-plugin(1) or "
                  "nbdkit zbd --help", key);
    return -1;
  }
  return 0;
}

static int
zbd_config_complete (void)
{
  if (!device_path == !emulate) {
    nbdkit_error ("give exactly one of device=PATH (a zoned block device) "
                  "or emulate=FILE|memory");
    return -1;
  }
  if (device_path && (param_size != -1 || param_zone_size != -1 ||
                      param_zone_capacity != -1 || param_conventional != -1 ||
                      param_max_open != -1 || param_max_active != -1 ||
                      param_block_size != -1)) {
    nbdkit_error ("device=%s: size, zone and limit parameters are for "
                  "emulate= only; a real device reports its own geometry",
                  device_path);
    return -1;
  }
  return 0;
}

/* Geometry as key=value words for NBD_INFO_DESCRIPTION. */
static int
build_description (void)
{
  bool *conv = calloc (nr_zones, sizeof *conv);
  char ranges[256];
  uint64_t i, cap = zone_size;

  if (!conv) {
    nbdkit_error ("calloc: %m");
    return -1;
  }
  for (i = 0; i < nr_zones; i++) {
    conv[i] = zones[i].conventional;
    if (!zones[i].conventional && cap == zone_size)
      cap = zones[i].cap;
  }
  if (zoned_format_ranges (conv, nr_zones, ranges, sizeof ranges) == -1)
    snprintf (ranges, sizeof ranges, "many");
  free (conv);
  snprintf (description, sizeof description,
            "zoned=%s zone-size=%" PRIu64 " zone-capacity=%" PRIu64
            " zones=%" PRIu64 " conventional=%s max-open=%" PRIu64
            " max-active=%" PRIu64 " block-size=%" PRIu32,
            host_aware ? "host-aware" : "host-managed", zone_size, cap,
            nr_zones, ranges, max_open, max_active, block_size);
  return 0;
}

static int
zbd_get_ready (void)
{
  int r;

  if (device_path)
    r = open_device ();
  else if (strcmp (emulate, "memory") == 0)
    r = open_memory_backend ();
  else
    r = open_file ();
  if (r == -1)
    return -1;
  if (build_description () == -1)
    return -1;
  nbdkit_debug ("zbd: %s backend: %s", backend->name, description);
  return 0;
}

static void
zbd_dump_plugin (void)
{
#ifdef HAVE_LIBZBD
  printf ("zbd_libzbd=yes\n");
#else
  printf ("zbd_libzbd=no\n");
#endif
  printf ("zbd_emulate=yes\n");
  printf ("zbd_parameters=device,emulate,size,zone-size,zone-capacity,"
          "conventional-zones,max-open-zones,max-active-zones,block-size,"
          "reorder-timeout\n");
  printf ("zbd_reorder_timeout_default=5s\n");
}

static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static int handle_rw, handle_ro;

static void *
zbd_open_connection (int readonly)
{
  int r = 0;

  if (readonly)
    return &handle_ro;
  /* Open the backend read-write only when a writer connects, so that
   * nbdkit -r never opens the device or image for writing.
   */
  pthread_mutex_lock (&open_lock);
  if (backend->open_rw)
    r = backend->open_rw ();
  pthread_mutex_unlock (&open_lock);
  return r == -1 ? NULL : &handle_rw;
}

static int64_t
zbd_get_size (void *handle)
{
  return disk_size;
}

static const char *
zbd_export_description (void *handle)
{
  return description;
}

static int
zbd_block_size (void *handle, uint32_t *minimum, uint32_t *preferred,
                uint32_t *maximum)
{
  *minimum = block_size;
  *preferred = phys_block_size > block_size ? phys_block_size : block_size;
  if (*preferred < 4096)
    *preferred = 4096;
  *maximum = 0xffffffff;
  return 0;
}

static int
zbd_can_write (void *handle)
{
  return handle == &handle_rw;
}

static int
zbd_is_rotational (void *handle)
{
  return rotational;
}

static int
zbd_can_true (void *handle)
{
  return 1;
}

static int
zbd_can_fua (void *handle)
{
  /* nbdkit follows a FUA write with .flush, which on the file backend
   * also makes the WP covering the write durable.
   */
  return NBDKIT_FUA_EMULATE;
}

static int
check_aligned (const char *what, uint32_t count, uint64_t offset)
{
  if ((offset | count) & (block_size - 1)) {
    nbdkit_error ("%s of %" PRIu32 " bytes at %" PRIu64 " is not aligned to "
                  "the %" PRIu32 "-byte block size: EINVAL",
                  what, count, offset, block_size);
    errno = EINVAL;
    return -1;
  }
  return 0;
}

static uint64_t
current_wp (struct zone *z)
{
  uint64_t wp;

  pthread_mutex_lock (&zones_lock);
  wp = z->wp;
  pthread_mutex_unlock (&zones_lock);
  return wp;
}

/* After a failed read the device is asked for the zone again. */
static void
reload_after_error (struct zone *z)
{
  if (z->conventional || !backend->reload_zone)
    return;
  pthread_mutex_lock (&zones_lock);
  /* A write in flight re-reads the zone itself when it ends. */
  if (!z->busy) {
    backend->reload_zone (z);
    pthread_cond_broadcast (&z->changed);
  }
  pthread_mutex_unlock (&zones_lock);
}

/* Reads above the WP, or past capacity, are zeros without device I/O. */
static int
zbd_pread (void *handle, void *buf, uint32_t count, uint64_t offset,
           uint32_t flags)
{
  char *p = buf;

  if (!backend->emulated && check_aligned ("read", count, offset) == -1)
    return -1;
  while (count > 0) {
    struct zone *z = zone_of (offset);
    uint64_t end = zone_end (z);
    uint32_t n = end - offset < count ? end - offset : count;
    uint64_t valid = z->conventional ? end : current_wp (z);
    uint32_t d = valid > offset ? (valid - offset < n ? valid - offset : n)
      : 0;

    if (d > 0 && backend->pread (p, d, offset) == -1) {
      reload_after_error (z);
      return -1;
    }
    memset (p + d, 0, n - d);
    p += n; offset += n; count -= n;
  }
  return 0;
}

static int
zbd_pwrite (void *handle, const void *buf, uint32_t count, uint64_t offset,
            uint32_t flags)
{
  const char *p = buf;

  if (check_aligned ("write", count, offset) == -1)
    return -1;
  /* A write spanning zones is split; the parts pass their gates in
   * ascending order, each after the previous one completed.
   */
  while (count > 0) {
    struct zone *z = zone_of (offset);
    uint64_t end = zone_end (z);
    uint32_t n = end - offset < count ? end - offset : count;
    int r = z->conventional ? backend->pwrite (p, n, offset)
      : gated_write (z, p, n, offset);

    if (r == -1)
      return -1;
    p += n; offset += n; count -= n;
  }
  return 0;
}

static int
zbd_flush (void *handle, uint32_t flags)
{
  return backend->flush ();
}

/* Zone operations (reset, finish) are durable before they are
 * acknowledged.  On the image file they run under persist_lock up to
 * the table write, so a concurrent flush can never record a WP
 * snapshot taken before the operation after the operation's data
 * changes (discarded data under an old WP).
 */
static void
zone_ops_begin (void)
{
  if (backend->persist)
    pthread_mutex_lock (&persist_lock);
}

static int
zone_ops_end (bool changed, int r)
{
  /* A real device executes zone management commands durably. */
  if (r == 0 && changed && backend->persist)
    r = persist_locked ();
  if (backend->persist)
    pthread_mutex_unlock (&persist_lock);
  return r;
}

/* Trim: every whole sequential zone in the range is reset.  Partial
 * zones and conventional zones are left alone (trim is advisory).
 */
static int
zbd_trim (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  uint64_t end = offset + count;
  bool changed = false;
  int r = 0;

  zone_ops_begin ();
  while (offset < end && r == 0) {
    struct zone *z = zone_of (offset);

    if (!z->conventional && offset == z->start && zone_end (z) <= end) {
      r = reset_zone (z);
      changed = true;
    }
    offset = zone_end (z);
  }
  return zone_ops_end (changed, r);
}

/* Write zeroes from the WP to the zone end (or to the capacity end)
 * finishes the zone.  Any other zero request writes zeros: through
 * the gate in sequential zones, directly in conventional ones.
 */
static int
zero_part (struct zone *z, uint32_t n, uint64_t offset)
{
  uint64_t end = offset + n;
  static const char zeros[65536];

  if (z->conventional)
    return backend->discard (n, offset);
  if (offset == current_wp (z) &&
      (end == zone_end (z) || end == zone_cap_end (z))) {
    int r;

    zone_ops_begin ();
    r = finish_zone (z);
    return zone_ops_end (true, r);
  }
  while (offset < end) {
    uint32_t k = end - offset < sizeof zeros ? end - offset : sizeof zeros;
    if (gated_write (z, zeros, k, offset) == -1)
      return -1;
    offset += k;
  }
  return 0;
}

static int
zbd_zero (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  if (check_aligned ("write zeroes", count, offset) == -1)
    return -1;
  while (count > 0) {
    struct zone *z = zone_of (offset);
    uint64_t end = zone_end (z);
    uint32_t n = end - offset < count ? end - offset : count;

    if (zero_part (z, n, offset) == -1)
      return -1;
    offset += n; count -= n;
  }
  return 0;
}

/* Block status: [start,WP) data, [WP,end) hole+zero in sequential
 * zones; conventional zones are data.
 */
static int
zbd_extents (void *handle, uint32_t count, uint64_t offset, uint32_t flags,
             struct nbdkit_extents *extents)
{
  uint64_t end = offset + count;

  while (offset < end) {
    struct zone *z = zone_of (offset);
    uint64_t wp = z->conventional ? zone_end (z) : current_wp (z);

    if (wp > z->start &&
        nbdkit_add_extent (extents, z->start, wp - z->start, 0) == -1)
      return -1;
    if (wp < zone_end (z) &&
        nbdkit_add_extent (extents, wp, zone_end (z) - wp,
                           NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO) == -1)
      return -1;
    offset = zone_end (z);
    if (flags & NBDKIT_FLAG_REQ_ONE)
      break;
  }
  return 0;
}

#define zbd_config_help \
  "[device=]PATH             A zoned block device (libzbd).\n" \
  "emulate=FILE|memory       Emulated host-managed zones instead.\n" \
  "size=SIZE                 (emulate) Disk size, a multiple of zone-size.\n" \
  "zone-size=SIZE            (emulate) Zone size.\n" \
  "zone-capacity=SIZE        (emulate) Writable part of each zone.\n" \
  "conventional-zones=N      (emulate) First N zones are conventional.\n" \
  "max-open-zones=N          (emulate) Open zone limit (0 = none).\n" \
  "max-active-zones=N        (emulate) Active zone limit (0 = none).\n" \
  "block-size=SIZE           (emulate) Logical block size (512).\n" \
  "reorder-timeout=DURATION  Wait for a write-pointer gap (5s)."

static struct nbdkit_plugin plugin = {
  .name               = "zbd",
  .longname           = "nbdkit zoned block device plugin",
  .version            = PACKAGE_VERSION,
  .unload             = zbd_unload,
  .config             = zbd_config,
  .config_complete    = zbd_config_complete,
  .config_help        = zbd_config_help,
  .magic_config_key   = "device",
  .get_ready          = zbd_get_ready,
  .dump_plugin        = zbd_dump_plugin,
  .open               = zbd_open_connection,
  .get_size           = zbd_get_size,
  .export_description = zbd_export_description,
  .block_size         = zbd_block_size,
  .can_write          = zbd_can_write,
  .can_flush          = zbd_can_true,
  .is_rotational      = zbd_is_rotational,
  .can_trim           = zbd_can_true,
  .can_zero           = zbd_can_true,
  .can_fua            = zbd_can_fua,
  .can_multi_conn     = zbd_can_true,
  .can_extents        = zbd_can_true,
  .pread              = zbd_pread,
  .pwrite             = zbd_pwrite,
  .flush              = zbd_flush,
  .trim               = zbd_trim,
  .zero               = zbd_zero,
  .extents            = zbd_extents,
  .errno_is_preserved = 1,
};

NBDKIT_REGISTER_PLUGIN (plugin)

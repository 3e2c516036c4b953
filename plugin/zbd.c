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
 * waits for the gap to fill (failing after reorder-timeout without
 * progress), a write below the WP or past the capacity fails at once.
 * nbdkit runs requests in parallel threads, so this is what turns a
 * pipelined stream of writes back into write-pointer order.  The zone
 * table and the gate are their own unit (gate.c, gate.h), tested
 * apart from nbdkit.
 *
 * The backends live in emulate.c (memory, and an image file whose zone
 * table is crash-consistent) and device.c (libzbd), each drive's state
 * in its struct drive; backend-util.c holds what they share, and
 * zbd-internal.h is the interface between the parts.  With dir=, one
 * server has a drive per export (see "Many drives" below).
 */

#define _GNU_SOURCE 1          /* asprintf */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/types.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

/* One shared zone table; the gate does its own locking. */
#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

#include "zoned-geometry.h"
#include "zbd-internal.h"

/* ---------------------------------------------------------------- */
/* Parameters, the disk and its backend */

static struct zbd_params params = {
  .size = -1, .zone_size = -1, .zone_capacity = -1, .conventional = -1,
  .max_open = -1, .max_active = -1, .block_size = -1,
};
static uint64_t reorder_timeout_ms = 5000;
/* dir=DIR: every zoned block device and zone image in DIR is an
 * export of its name (see "Many drives" below).
 */
static const char *drives_dir;

/* -D zbd.gate=1: log every write that has to wait for its zone's WP. */
NBDKIT_DLL_PUBLIC int zbd_debug_gate = 0;

/* -D zbd.write_delay_ms=N: the emulated device takes N ms for every
 * write (a slow device, e.g. an SMR drive that stalls), for tests.
 */
NBDKIT_DLL_PUBLIC int zbd_debug_write_delay_ms = 0;

/* -D zbd.close_delay_ms=N: closing a drive takes N ms more (a drive
 * slow to flush its cache), for tests of what arrives meanwhile.
 */
NBDKIT_DLL_PUBLIC int zbd_debug_close_delay_ms = 0;

/* device= or emulate=: the one drive, opened at start. */
static struct drive *single;

/* ---------------------------------------------------------------- */
/* Small helpers */

/* Parse a duration: "5s", "500ms", "2m", or plain seconds ("2"), at
 * most 24 hours.  The range is checked before converting to
 * milliseconds, so no value can wrap around into a valid one.
 */
static int
parse_duration (const char *key, const char *value, uint64_t *ms)
{
  const unsigned long long max_ms = 24ULL * 3600 * 1000;
  unsigned long long v, unit;
  char *end;

  errno = 0;
  v = strtoull (value, &end, 10);
  if (errno || end == value || value[0] == '-' || value[0] == '+' ||
      value[0] == ' ')
    goto bad;
  if (*end == '\0' || strcmp (end, "s") == 0)
    unit = 1000;
  else if (strcmp (end, "m") == 0)
    unit = 60000;
  else if (strcmp (end, "ms") == 0)
    unit = 1;
  else
    goto bad;
  if (v > max_ms / unit)
    goto bad;
  *ms = v * unit;
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

/* Does nbdkit's command line (argv joined by NULs, as in
 * /proc/self/cmdline, LEN bytes) ask for a read-only server (-r,
 * --readonly, --read-only, or r in a cluster of short options)?  The
 * plugin API does not say before the first connection, and the lock
 * on the image or drive is taken at start.  The options are read as
 * nbdkit does up to the plugin name (the first argument that is not an
 * option or an option's value), so a value such as "-U -r" is not
 * mistaken for the option.  When in doubt, not read-only: the server
 * then holds the image alone, which refuses a second reader, never
 * lets a second writer in.
 */
bool
nbdkit_readonly_in (const char *cmdline, size_t len)
{
  /* nbdkit's options that take a separate value. */
  static const char *const long_value[] = {
    "--debug", "--exportname", "--export-name", "--filter", "--group",
    "--ipaddr", "--log", "--mask-handshake", "--pidfile", "--port",
    "--run", "--selinux-label", "--threads", "--tls", "--tls-certificates",
    "--tls-psk", "--unix", "--user", "--vsock", NULL,
  };
  const char *short_value = "DeGiPptUu";
  const char *p = cmdline, *end = cmdline + len;
  bool value_next = false;
  size_t i;

  if (p < end)
    p += strnlen (p, end - p) + 1;      /* argv[0] */
  for (; p < end; p += strnlen (p, end - p) + 1) {
    if (value_next) {
      value_next = false;
      continue;
    }
    if (strcmp (p, "--") == 0 || p[0] != '-' || p[1] == '\0')
      return false;             /* the plugin name: options end */
    if (strcmp (p, "--readonly") == 0 || strcmp (p, "--read-only") == 0)
      return true;
    if (p[1] == '-') {
      for (i = 0; long_value[i]; i++)
        if (strcmp (p, long_value[i]) == 0)
          value_next = true;
      continue;
    }
    for (i = 1; p[i]; i++) {
      if (p[i] == 'r')
        return true;
      if (strchr (short_value, p[i])) {
        value_next = p[i + 1] == '\0';
        break;
      }
    }
  }
  return false;
}

/* Read /proc/self/cmdline for nbdkit_readonly_in. */
static bool
server_is_readonly (void)
{
  char buf[65536];
  size_t n = 0;
  ssize_t r;
  int fd = open ("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);

  if (fd == -1)
    return false;
  while (n < sizeof buf && (r = read (fd, buf + n, sizeof buf - n)) > 0)
    n += r;
  close (fd);
  return nbdkit_readonly_in (buf, n);
}

/* Refuse a request that would change the disk after a failed sync. */
static int
check_latch (const struct drive *dr, const char *what)
{
  if (!sync_latched (dr))
    return 0;
  nbdkit_debug ("%s refused: a sync failed earlier (EIO until restart)", what);
  errno = EIO;
  return -1;
}

/* ---------------------------------------------------------------- */
/* The device, as the zone table sees it */

static void
debug_delay (int ms)
{
  struct timespec ts = { .tv_sec = ms / 1000,
                         .tv_nsec = (ms % 1000) * 1000000L };

  while (ms > 0 && nanosleep (&ts, &ts) == -1 && errno == EINTR)
    ;
}

/* The backend's write, slowed down by -D zbd.write_delay_ms. */
static int
device_write (struct drive *dr, const void *buf, uint32_t n, uint64_t offset)
{
  if (dr->backend->emulated)
    debug_delay (zbd_debug_write_delay_ms);
  return dr->backend->pwrite (dr, buf, n, offset);
}

static int
op_write (void *dr, const void *buf, uint32_t n, uint64_t off)
{
  return device_write (dr, buf, n, off);
}

static int
op_discard (void *dr, uint64_t n, uint64_t off)
{
  return ((struct drive *) dr)->backend->discard (dr, n, off);
}

static int
op_reset (void *dr, const struct zone *z)
{
  return ((struct drive *) dr)->backend->zone_op_reset (dr, z);
}

static int
op_finish (void *dr, const struct zone *z)
{
  return ((struct drive *) dr)->backend->zone_op_finish (dr, z);
}

static int
op_query (void *dr, uint64_t start, struct zone *out)
{
  return ((struct drive *) dr)->backend->query_zone (dr, start, out);
}

static void
start_table (struct drive *dr)
{
  const struct backend *b = dr->backend;
  struct gate_config config = {
    .reorder_timeout_ms = reorder_timeout_ms,
    .emulated = b->emulated,
    .max_open = dr->disk.max_open,
    .max_active = dr->disk.max_active,
    .debug = zbd_debug_gate,
  };

  dr->zone_ops.write = op_write;
  dr->zone_ops.discard = op_discard;
  dr->zone_ops.reset = b->zone_op_reset ? op_reset : NULL;
  dr->zone_ops.finish = b->zone_op_finish ? op_finish : NULL;
  dr->zone_ops.query = b->query_zone ? op_query : NULL;
  zt_start (&dr->disk.table, &config, &dr->zone_ops, dr);
}

/* ---------------------------------------------------------------- */
/* A drive's life */

/* NBD strings are at most 4096 bytes; nbdkit sends no description at
 * all for a longer one, and the client would see an unzoned disk.  The
 * plugin keeps 64 of them for the filters above (cryptinline appends
 * " key-check=" and 32 hex digits).
 */
#define DESCRIPTION_MAX (4096 - 64)

/* Geometry as key=value words for NBD_INFO_DESCRIPTION. */
static int
build_description (struct drive *dr)
{
  const struct zone_table *table = &dr->disk.table;
  const uint64_t nr_zones = table->nr_zones, zone_size = table->zone_size;
  const struct zone *zones = table->zones;
  bool *conv = calloc (nr_zones, sizeof *conv);
  size_t rlen = 24 * nr_zones + 8;      /* worst case: "n," per zone */
  char *ranges = malloc (rlen);
  uint64_t i, differs, cap = zt_capacity (table, &differs);
  int r;

  if (!conv || !ranges) {
    nbdkit_error ("malloc: %m");
    free (conv);
    free (ranges);
    return -1;
  }
  for (i = 0; i < nr_zones; i++)
    conv[i] = zones[i].conventional;
  r = zoned_format_ranges (conv, nr_zones, ranges, rlen);
  free (conv);
  if (r == 0 &&
      asprintf (&dr->description,
                "zoned=%s zone-size=%" PRIu64 " zone-capacity=%" PRIu64
                " zones=%" PRIu64 " conventional=%s max-open=%" PRIu64
                " max-active=%" PRIu64 " block-size=%" PRIu32 " disk-id=%s",
                dr->disk.host_aware ? "host-aware" : "host-managed",
                zone_size, cap, nr_zones, ranges, dr->disk.max_open,
                dr->disk.max_active, dr->disk.block_size,
                dr->disk.disk_id) == -1) {
    dr->description = NULL;
    r = -1;
  }
  free (ranges);
  if (r == -1)
    nbdkit_error ("cannot format the export description: %m");
  /* Room is left for the read-only and offline zones' words. */
  else if (strlen (dr->description) > DESCRIPTION_MAX - 96) {
    nbdkit_error ("the conventional zones are scattered in too many ranges "
                  "to describe in the 4096-byte NBD export description");
    r = -1;
  }
  return r;
}

/* Save what every writer was acknowledged, as a drive does when it is
 * shut down in order: the backend's flush makes the data and, on the
 * image, the write pointers durable.  A power cut still keeps only what
 * was flushed.  Caller holds DR->lock (or is alone).
 */
static void
save_on_stop (struct drive *dr, const char *when)
{
  if (!dr->ready || !dr->had_writer)
    return;
  if (dr->backend->flush (dr) == -1)
    nbdkit_error ("%s%s%scould not save the zone state %s: writes "
                  "acknowledged since the last flush may be missing after "
                  "a restart", dr->name[0] ? "export " : "", dr->name,
                  dr->name[0] ? ": " : "", when);
}

/* A drive not opened yet, with parameters P. */
static struct drive *
new_drive (const char *name, const struct zbd_params *p)
{
  struct drive *dr = calloc (1, sizeof *dr);

  if (!dr || !(dr->name = strdup (name))) {
    nbdkit_error ("calloc: %m");
    free (dr);
    return NULL;
  }
  dr->params = *p;
  dr->disk.block_size = 512;
  dr->disk.phys_block_size = 4096;
  pthread_mutex_init (&dr->lock, NULL);
  return dr;
}

/* Open DR's backend, start its zone table and describe it.  Caller
 * holds DR->lock (or is alone).
 */
static int
open_drive (struct drive *dr)
{
  int r;

  if (dr->params.device_path)
    r = open_device (dr);
  else if (strcmp (dr->params.emulate, "memory") == 0)
    r = open_memory_backend (dr);
  else
    r = open_file (dr);
  if (r == -1) {
    zt_free (&dr->disk.table);  /* if the backend built one */
    return -1;
  }
  start_table (dr);
  if (build_description (dr) == -1) {
    free (dr->description);
    dr->description = NULL;
    dr->backend->close (dr);
    zt_free (&dr->disk.table);
    return -1;
  }
  dr->ready = true;
  nbdkit_debug ("zbd: %s%s%s backend: %s", dr->name, dr->name[0] ? ": " : "",
                dr->backend->name, dr->description);
  return 0;
}

/* Save and release DR's backend; nobody uses it any more. */
static void
close_drive (struct drive *dr, const char *when)
{
  if (dr->ready) {
    nbdkit_debug ("zbd: %s%sclosing the drive %s", dr->name,
                  dr->name[0] ? ": " : "", when);
    debug_delay (zbd_debug_close_delay_ms);
    save_on_stop (dr, when);
    dr->backend->close (dr);
    zt_free (&dr->disk.table);
    dr->ready = false;
  }
}

/* Close DR and free it. */
static void
free_drive (struct drive *dr, const char *when)
{
  close_drive (dr, when);
  free (dr->description);
  free ((char *) dr->params.device_path);
  free ((char *) dr->params.emulate);
  pthread_mutex_destroy (&dr->lock);
  free (dr->name);
  free (dr);
}

/* ---------------------------------------------------------------- */
/* Many drives: dir=DIR
 *
 * Every entry of DIR that is a zoned block device (or a symlink to
 * one, as in /dev/disk/by-id) or an emulated zone image is an export
 * named after the entry.  DIR is read when a client lists the exports
 * or connects, so a drive added later is served without a restart.  A
 * drive is opened by the first connection to it (or a listing, to
 * describe it) and closed, its state saved, after the last; while
 * open, every connection to it shares its zone table, gate and
 * backend.  Each drive has its own lock, held while it opens, so that
 * a drive that is slow to open (a failing disk retrying its zone
 * report) delays only connections to itself.
 */

static pthread_mutex_t drives_lock = PTHREAD_MUTEX_INITIALIZER;
/* Under drives_lock: the drives in use, and those closing, which stay
 * listed until their backend is closed (a new user waits for that:
 * the medium is still locked by the one closing); drives_closed is
 * signalled when one goes.
 */
static struct drive *drives;
static pthread_cond_t drives_closed = PTHREAD_COND_INITIALIZER;
/* Under drives_lock: the drives whose sync failed.  durable_sync's
 * latch lasts until nbdkit restarts, not until the drive is closed: a
 * drive opened again would read back write pointers the failed sync
 * may have lost, and its next flush would call them durable.
 */
static struct medium *latched;
static size_t nr_latched;

static bool same_medium (const struct medium *a, const struct medium *b);

static bool
is_latched (const struct medium *m)
{
  size_t i;

  for (i = 0; i < nr_latched; i++)
    if (same_medium (&latched[i], m))
      return true;
  return false;
}

static void
remember_latch (const struct drive *dr)
{
  struct medium *l;

  if (is_latched (&dr->medium))
    return;
  l = realloc (latched, (nr_latched + 1) * sizeof *latched);
  if (!l) {
    /* The one case it is forgotten: logged, as it matters. */
    nbdkit_error ("export %s: out of memory: its failed sync will be "
                  "forgotten when it is opened again", dr->name);
    return;
  }
  latched = l;
  latched[nr_latched++] = dr->medium;
}

/* Can NAME be the name of an export in DIR (an entry, not a path)? */
static bool
valid_export_name (const char *name)
{
  return name[0] != '\0' && name[0] != '.' && strchr (name, '/') == NULL &&
    strlen (name) <= NAME_MAX;
}

/* What DIR/NAME is: an export's parameters into *P (the path a new
 * string) and the medium it names into *M, or a reason in WHY and -1.
 */
static int
classify_entry (const char *name, struct zbd_params *p,
                struct medium *m, char *why, size_t len)
{
  struct stat st;
  char *path;
  int fd;
  bool ok;

  if (asprintf (&path, "%s/%s", drives_dir, name) == -1) {
    snprintf (why, len, "out of memory");
    return -1;
  }
  if (stat (path, &st) == -1) {
    snprintf (why, len, "%s", strerror (errno));
    free (path);
    return -1;
  }
  if (S_ISBLK (st.st_mode)) {
    ok = is_zoned_device (path);
    if (!ok)
      snprintf (why, len, "a block device that is not zoned");
    p->device_path = path;
  }
  else if (S_ISREG (st.st_mode)) {
    fd = open (path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    ok = fd >= 0 && is_zone_image (fd);
    if (fd >= 0)
      close (fd);
    if (!ok)
      snprintf (why, len, "a file that is not a zone image");
    p->emulate = path;
  }
  else {
    ok = false;
    snprintf (why, len, "neither a block device nor a file");
  }
  if (!ok) {
    free (path);
    p->device_path = p->emulate = NULL;
    return -1;
  }
  m->blk = S_ISBLK (st.st_mode);
  m->dev = m->blk ? st.st_rdev : st.st_dev;
  m->ino = m->blk ? 0 : st.st_ino;
  return 0;
}

static bool
same_medium (const struct medium *a, const struct medium *b)
{
  return a->blk == b->blk && a->dev == b->dev && a->ino == b->ino;
}

/* Call FN for every export in DIR (sorted by name); stops at FN's
 * first -1 and returns it.
 */
static int
for_each_export (int (*fn) (const char *name, void *opaque), void *opaque)
{
  struct dirent **ents;
  int n = scandir (drives_dir, &ents, NULL, alphasort), i, r = 0;

  if (n == -1) {
    nbdkit_error ("dir=%s: cannot read the directory: %m", drives_dir);
    return -1;
  }
  for (i = 0; i < n; i++) {
    struct zbd_params p = params;
    struct medium m;
    char why[128];

    if (r == 0 && valid_export_name (ents[i]->d_name) &&
        classify_entry (ents[i]->d_name, &p, &m, why, sizeof why) == 0) {
      free ((char *) p.device_path);
      free ((char *) p.emulate);
      r = fn (ents[i]->d_name, opaque);
    }
    free (ents[i]);
  }
  free (ents);
  return r;
}

/* The names of the exports, for a message: "a, b, c" (at most LEN
 * bytes, then "..."), or "none".
 */
struct name_list { char *buf; size_t len, used; };

static int
add_name (const char *name, void *opaque)
{
  struct name_list *l = opaque;
  int n = snprintf (l->buf + l->used, l->len - l->used, "%s%s",
                    l->used ? ", " : "", name);

  if (n < 0 || (size_t) n >= l->len - l->used) {
    strcpy (l->buf + (l->len > 4 ? l->len - 4 : 0), "...");
    return -1;
  }
  l->used += n;
  return 0;
}

static void
export_names (char *buf, size_t len)
{
  struct name_list l = { buf, len, 0 };

  buf[0] = '\0';
  for_each_export (add_name, &l);
  if (!buf[0])
    snprintf (buf, len, "none");
}

/* The drive exported as NAME, opened if it was not in use, with one
 * more user; NULL (logged) if there is no such export or it cannot be
 * opened.  Undo with put_drive.
 */
static struct drive *
get_drive (const char *name)
{
  struct zbd_params p = params;
  struct medium m;
  struct drive *dr;
  char why[128], names[512];

  if (!valid_export_name (name) ||
      classify_entry (name, &p, &m, why, sizeof why) == -1) {
    export_names (names, sizeof names);
    if (!valid_export_name (name))
      nbdkit_error ("dir=%s: export \"%.64s\"%s is not a drive name; the "
                    "exports are: %s", drives_dir, name,
                    name[0] ? "" : " (none given)", names);
    else
      nbdkit_error ("dir=%s: no export \"%s\" (%s); the exports are: %s",
                    drives_dir, name, why, names);
    errno = ENOENT;             /* the client is told: no such export */
    return NULL;
  }
  pthread_mutex_lock (&drives_lock);
  for (;;) {
    for (dr = drives; dr; dr = dr->next)
      if (same_medium (&dr->medium, &m))
        break;
    if (!dr || !dr->closing)
      break;
    pthread_cond_wait (&drives_closed, &drives_lock);
  }
  if (dr) {
    if (strcmp (dr->name, name) != 0)
      nbdkit_debug ("dir=%s: export \"%s\" is the drive in use as \"%s\"",
                    drives_dir, name, dr->name);
    free ((char *) p.device_path);
    free ((char *) p.emulate);
  }
  else if ((dr = new_drive (name, &p)) != NULL) {
    dr->medium = m;
    dr->sync_failed = is_latched (&m);
    dr->next = drives;
    drives = dr;
  }
  if (dr)
    dr->users++;
  pthread_mutex_unlock (&drives_lock);
  if (!dr)
    return NULL;
  /* Opened by its first user, the others wait for it. */
  pthread_mutex_lock (&dr->lock);
  if (!dr->ready)
    open_drive (dr);
  pthread_mutex_unlock (&dr->lock);
  return dr;
}

/* One user fewer; the last one closes the drive, which stays listed
 * (closing) until it is closed, then remembers a failed sync.
 */
static void
put_drive (struct drive *dr)
{
  struct drive **pp;
  bool last;

  if (dr == single)
    return;
  pthread_mutex_lock (&drives_lock);
  last = --dr->users == 0;
  dr->closing = last;
  pthread_mutex_unlock (&drives_lock);
  if (!last)
    return;
  close_drive (dr, "when its last connection closed");
  pthread_mutex_lock (&drives_lock);
  for (pp = &drives; *pp; pp = &(*pp)->next)
    if (*pp == dr) {
      *pp = dr->next;
      break;
    }
  if (dr->sync_failed)
    remember_latch (dr);
  pthread_cond_broadcast (&drives_closed);
  pthread_mutex_unlock (&drives_lock);
  free_drive (dr, "");
}

static int
list_one (const char *name, void *opaque)
{
  struct nbdkit_exports *exports = opaque;
  struct drive *dr = get_drive (name);
  bool ready = false;
  int r;

  if (dr) {
    pthread_mutex_lock (&dr->lock);
    ready = dr->ready;
    pthread_mutex_unlock (&dr->lock);
  }
  /* A drive that cannot be opened is listed, saying why not: the
   * error is in the log.  Its description stays while it is in use.
   */
  r = nbdkit_add_export (exports, name, ready ? dr->description
                         : "unavailable: see the server's log");
  if (dr)
    put_drive (dr);
  return r;
}

static int
zbd_list_exports (int readonly, int is_tls, struct nbdkit_exports *exports)
{
  if (!drives_dir)
    return nbdkit_use_default_export (exports);
  return for_each_export (list_one, exports);
}

/* ---------------------------------------------------------------- */
/* nbdkit callbacks */

static void
zbd_unload (void)
{
  if (single)
    free_drive (single, "at unload");
  /* dir=: nbdkit closes every connection before unloading, and the
   * last connection of each drive closed it.
   */
  free (latched);
}

static int
zbd_config (const char *key, const char *value)
{
  if (strcmp (key, "device") == 0)
    params.device_path = value;
  else if (strcmp (key, "emulate") == 0)
    params.emulate = value;
  else if (strcmp (key, "dir") == 0)
    drives_dir = value;
  else if (strcmp (key, "size") == 0)
    return parse_bytes (key, value, &params.size);
  else if (strcmp (key, "zone-size") == 0)
    return parse_bytes (key, value, &params.zone_size);
  else if (strcmp (key, "zone-capacity") == 0)
    return parse_bytes (key, value, &params.zone_capacity);
  else if (strcmp (key, "block-size") == 0)
    return parse_bytes (key, value, &params.block_size);
  else if (strcmp (key, "conventional-zones") == 0)
    return parse_count (key, value, &params.conventional);
  else if (strcmp (key, "max-open-zones") == 0)
    return parse_count (key, value, &params.max_open);
  else if (strcmp (key, "max-active-zones") == 0)
    return parse_count (key, value, &params.max_active);
  else if (strcmp (key, "reorder-timeout") == 0)
    return parse_duration (key, value, &reorder_timeout_ms);
  else {
    nbdkit_error ("unknown parameter '%s'; see nbdkit-zbd-plugin(1) or "
                  "nbdkit zbd --help", key);
    return -1;
  }
  return 0;
}

static bool
geometry_given (void)
{
  return params.size != -1 || params.zone_size != -1 ||
    params.zone_capacity != -1 || params.conventional != -1 ||
    params.max_open != -1 || params.max_active != -1 ||
    params.block_size != -1;
}

static int
zbd_config_complete (void)
{
  if (!!params.device_path + !!params.emulate + !!drives_dir != 1) {
    nbdkit_error ("give exactly one of device=PATH (a zoned block device), "
                  "emulate=FILE|memory or dir=DIR (every zoned drive and "
                  "zone image in DIR)");
    return -1;
  }
  if (params.device_path && geometry_given ()) {
    nbdkit_error ("device=%s: size, zone and limit parameters are for "
                  "emulate= only; a real device reports its own geometry",
                  params.device_path);
    return -1;
  }
  if (drives_dir && geometry_given ()) {
    nbdkit_error ("dir=%s: size, zone and limit parameters are for "
                  "emulate= only; the drives and images in the directory "
                  "have their own geometry", drives_dir);
    return -1;
  }
  return 0;
}

static int
zbd_get_ready (void)
{
  struct stat st;

  params.readonly = server_is_readonly ();
  if (drives_dir) {
    if (stat (drives_dir, &st) == 0 && !S_ISDIR (st.st_mode)) {
      nbdkit_error ("dir=%s: not a directory; dir= takes a directory of "
                    "zoned drives (or links to them) and zone images",
                    drives_dir);
      return -1;
    }
    if (access (drives_dir, R_OK | X_OK) == -1) {
      nbdkit_error ("dir=%s: %m", drives_dir);
      return -1;
    }
    return 0;
  }
  single = new_drive ("", &params);
  if (!single)
    return -1;
  /* The single drive's paths belong to nbdkit's command line. */
  if (single->params.device_path)
    single->params.device_path = strdup (single->params.device_path);
  else
    single->params.emulate = strdup (single->params.emulate);
  if (!single->params.device_path && !single->params.emulate) {
    nbdkit_error ("strdup: %m");
    return -1;
  }
  return open_drive (single);
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
  printf ("zbd_dir=yes\n");
  printf ("zbd_parameters=device,emulate,dir,size,zone-size,zone-capacity,"
          "conventional-zones,max-open-zones,max-active-zones,block-size,"
          "reorder-timeout\n");
  printf ("zbd_reorder_timeout_default=5s\n");
}

/* A connection: the drive it uses, and whether it may write. */
struct conn {
  struct drive *dr;
  bool rw;
};

static void *
zbd_open_connection (int readonly)
{
  struct drive *dr = drives_dir ? get_drive (nbdkit_export_name ()) : single;
  struct conn *c;
  int r = 0;

  if (!dr)
    return NULL;
  c = malloc (sizeof *c);
  if (!c) {
    nbdkit_error ("malloc: %m");
    put_drive (dr);
    return NULL;
  }
  *c = (struct conn) { .dr = dr, .rw = !readonly };
  /* Open the backend read-write only when a writer connects, so that
   * nbdkit -r never opens the device or image for writing (nor creates
   * an image).
   */
  pthread_mutex_lock (&dr->lock);
  if (!dr->ready)
    r = -1;                     /* it failed to open: logged */
  else if (readonly && dr->backend->open_ro)
    r = dr->backend->open_ro (dr);
  else if (!readonly && dr->backend->open_rw)
    r = dr->backend->open_rw (dr);
  if (r == 0 && !readonly) {
    dr->nr_writers++;
    dr->had_writer = true;
  }
  pthread_mutex_unlock (&dr->lock);
  if (r == -1) {
    free (c);
    put_drive (dr);
    return NULL;
  }
  return c;
}

static void
zbd_close (void *handle)
{
  struct conn *c = handle;
  struct drive *dr = c->dr;

  if (c->rw) {
    pthread_mutex_lock (&dr->lock);
    if (--dr->nr_writers == 0)
      save_on_stop (dr, "when the last writer disconnected");
    pthread_mutex_unlock (&dr->lock);
  }
  free (c);
  put_drive (dr);
}

static struct drive *
drive_of (void *handle)
{
  return ((struct conn *) handle)->dr;
}

static int64_t
zbd_get_size (void *handle)
{
  return drive_of (handle)->disk.disk_size;
}

/* The zones of TABLE in condition C (read-only or offline: the device
 * can turn them so at any time) as ranges in BUF (LEN bytes, those
 * that fit; none if LEN is 0, then BUF says "none" in 5 bytes);
 * returns the number of zones left out.  *ANY says whether there were
 * any.
 */
static uint64_t
cond_ranges (struct zone_table *table, enum zone_cond c, char *buf,
             size_t len, bool *any)
{
  bool *is = calloc (table->nr_zones, sizeof *is);
  uint64_t i, omitted = 0;

  strcpy (buf, "none");
  if (!is)
    return 0;
  for (i = 0; i < table->nr_zones; i++) {
    is[i] = zt_snapshot (table, &table->zones[i]).cond == c;
    *any |= is[i];
    omitted += is[i];
  }
  if (len > 0)
    omitted = zoned_format_ranges_capped (is, table->nr_zones, buf, len);
  free (is);
  return omitted;
}

/* The geometry, and which zones are read-only or offline if any are
 * ("readonly=RANGES offline=RANGES"), when each connection asks.  On a
 * failing drive with zones scattered all over, the lists are cut to
 * fit: offline zones first (their reads fail, the worse surprise),
 * then read-only ones, and "states-omitted=N" says how many zones are
 * not listed.  A write to an unlisted zone (or a read of an offline
 * one) still fails with a log line that names the zone, and blkzone
 * report on the server shows them all.
 */
static const char *
zbd_export_description (void *handle)
{
  struct drive *dr = drive_of (handle);
  const char *description = dr->description;
  /* " readonly= offline= states-omitted=" and a 20-digit count. */
  const size_t words = 64, base = strlen (description);
  size_t room = base + words + 16 < DESCRIPTION_MAX
    ? DESCRIPTION_MAX - base - words : 0;
  char *ro = malloc (room + 1), *off = malloc (room + 1);
  bool any = false;
  uint64_t omitted;
  const char *r = description;

  if (!ro || !off || room == 0) {
    free (ro);
    free (off);
    return description;
  }
  /* Offline first, leaving "none" for the read-only list, which gets
   * the room left only if every offline zone is listed.
   */
  omitted = cond_ranges (&dr->disk.table, COND_OFFLINE, off, room + 1 - 5,
                         &any);
  omitted += cond_ranges (&dr->disk.table, COND_READONLY, ro,
                          omitted ? 0 : room + 1 - strlen (off), &any);
  if (omitted) {
    nbdkit_debug ("export description: %" PRIu64 " read-only or offline "
                  "zones do not fit in it", omitted);
    r = nbdkit_printf_intern ("%s readonly=%s offline=%s states-omitted=%"
                              PRIu64, description, ro, off, omitted);
  }
  else if (any)
    r = nbdkit_printf_intern ("%s readonly=%s offline=%s", description,
                              ro, off);
  free (ro);
  free (off);
  return r;
}

static int
zbd_block_size (void *handle, uint32_t *minimum, uint32_t *preferred,
                uint32_t *maximum)
{
  const struct zbd_disk *disk = &drive_of (handle)->disk;

  *minimum = disk->block_size;
  *preferred = disk->phys_block_size > disk->block_size
    ? disk->phys_block_size : disk->block_size;
  if (*preferred < 4096)
    *preferred = 4096;
  *maximum = 0xffffffff;
  return 0;
}

static int
zbd_can_write (void *handle)
{
  return ((struct conn *) handle)->rw;
}

static int
zbd_is_rotational (void *handle)
{
  return drive_of (handle)->disk.rotational;
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
check_aligned (const struct drive *dr, const char *what, uint32_t count,
               uint64_t offset)
{
  const uint32_t bs = dr->disk.block_size;

  if ((offset | count) & (bs - 1)) {
    nbdkit_error ("%s of %" PRIu32 " bytes at %" PRIu64 " is not aligned to "
                  "the %" PRIu32 "-byte block size: EINVAL",
                  what, count, offset, bs);
    errno = EINVAL;
    return -1;
  }
  return 0;
}

/* Where the data of Z ends for block status: an offline zone is shown
 * as data (reads of it fail, so it is not zeros).
 */
static uint64_t
extent_data_end (struct zone_table *table, struct zone *z)
{
  struct zone s;

  if (z->conventional)
    return zone_end (z);
  s = zt_snapshot (table, z);
  if (s.cond == COND_OFFLINE)
    return zone_end (z);
  if (s.cond == COND_READONLY)
    return zone_cap_end (&s);
  return s.wp;
}

/* Reads above the WP, or past capacity, are zeros without device I/O. */
static int
zbd_pread (void *handle, void *buf, uint32_t count, uint64_t offset,
           uint32_t flags)
{
  struct drive *dr = drive_of (handle);
  struct zone_table *table = &dr->disk.table;
  char *p = buf;

  if (!dr->backend->emulated &&
      check_aligned (dr, "read", count, offset) == -1)
    return -1;
  while (count > 0) {
    struct zone *z = zt_zone_of (table, offset);
    uint64_t end = zone_end (z);
    uint32_t n = end - offset < count ? end - offset : count;
    uint64_t valid;
    uint32_t d;

    if (zt_readable (table, z, offset, &valid) == -1)
      return -1;
    d = valid > offset ? (valid - offset < n ? valid - offset : n) : 0;
    if (d > 0 && dr->backend->pread (dr, p, d, offset) == -1) {
      zt_read_failed (table, z);
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
  struct drive *dr = drive_of (handle);
  struct zone_table *table = &dr->disk.table;
  const char *p = buf;

  if (check_aligned (dr, "write", count, offset) == -1 ||
      check_latch (dr, "write") == -1)
    return -1;
  /* A write spanning zones is split; the parts pass their gates in
   * ascending order, each after the previous one completed.
   */
  while (count > 0) {
    struct zone *z = zt_zone_of (table, offset);
    uint64_t end = zone_end (z);
    uint32_t n = end - offset < count ? end - offset : count;
    int r = z->conventional ? device_write (dr, p, n, offset)
      : zt_write (table, z, p, n, offset);

    if (r == -1)
      return -1;
    p += n; offset += n; count -= n;
  }
  return 0;
}

static int
zbd_flush (void *handle, uint32_t flags)
{
  struct drive *dr = drive_of (handle);

  if (check_latch (dr, "flush") == -1)
    return -1;
  return dr->backend->flush (dr);
}

/* Zone operations (reset, finish) are durable before they are
 * acknowledged.  On the image file they run under persist_lock up to
 * the table write, so a concurrent flush can never record a WP
 * snapshot taken before the operation after the operation's data
 * changes (discarded data under an old WP).
 */
static void
zone_ops_begin (struct drive *dr)
{
  if (dr->backend->zone_ops_lock)
    dr->backend->zone_ops_lock (dr);
}

static int
zone_ops_end (struct drive *dr, bool changed, int r)
{
  /* A real device executes zone management commands durably. */
  if (r == 0 && changed && dr->backend->persist_locked)
    r = dr->backend->persist_locked (dr);
  if (dr->backend->zone_ops_unlock)
    dr->backend->zone_ops_unlock (dr);
  return r;
}

/* Trim: every whole sequential zone in the range is reset.  Partial
 * zones and conventional zones are left alone (trim is advisory).
 */
static int
zbd_trim (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct drive *dr = drive_of (handle);
  struct zone_table *table = &dr->disk.table;
  uint64_t end = offset + count;
  bool changed = false;
  int r = 0;

  if (check_latch (dr, "trim") == -1)
    return -1;
  zone_ops_begin (dr);
  while (offset < end && r == 0) {
    struct zone *z = zt_zone_of (table, offset);

    if (!z->conventional && offset == z->start && zone_end (z) <= end) {
      r = zt_reset (table, z);
      changed = true;
    }
    offset = zone_end (z);
  }
  return zone_ops_end (dr, changed, r);
}

/* Write zeroes from the WP to the zone end (or to the capacity end)
 * finishes the zone: emulated zones by discarding the rest, a real
 * device by writing the zeros (see zt_write_zeroes).  Any other zero
 * request writes zeros: through the gate in sequential zones, directly
 * in conventional ones.
 */
static int
zero_part (struct drive *dr, struct zone *z, uint32_t n, uint64_t offset)
{
  struct zone_table *table = &dr->disk.table;

  if (z->conventional)
    return dr->backend->discard (dr, n, offset);
  if (zt_zeroes_finish (table, z, n, offset)) {
    int r;

    zone_ops_begin (dr);
    r = zt_finish (table, z);
    return zone_ops_end (dr, true, r);
  }
  return zt_write_zeroes (table, z, n, offset);
}

static int
zbd_zero (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct drive *dr = drive_of (handle);

  if (check_aligned (dr, "write zeroes", count, offset) == -1 ||
      check_latch (dr, "write zeroes") == -1)
    return -1;
  while (count > 0) {
    struct zone *z = zt_zone_of (&dr->disk.table, offset);
    uint64_t end = zone_end (z);
    uint32_t n = end - offset < count ? end - offset : count;

    if (zero_part (dr, z, n, offset) == -1)
      return -1;
    offset += n; count -= n;
  }
  return 0;
}

/* Block status: [start,WP) data, [WP,end) hole+zero in sequential
 * zones; conventional zones are data.  A read-only zone is data up to
 * its capacity; an offline zone is data (not zeros: reads of it fail).
 */
static int
zbd_extents (void *handle, uint32_t count, uint64_t offset, uint32_t flags,
             struct nbdkit_extents *extents)
{
  struct zone_table *table = &drive_of (handle)->disk.table;
  uint64_t end = offset + count;

  while (offset < end) {
    struct zone *z = zt_zone_of (table, offset);
    uint64_t wp = extent_data_end (table, z);

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
  "dir=DIR                   Every zoned drive and zone image in DIR.\n" \
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
  .list_exports       = zbd_list_exports,
  .open               = zbd_open_connection,
  .close              = zbd_close,
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

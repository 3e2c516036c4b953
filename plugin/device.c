/* The zbd plugin's libzbd backend: a real zoned block device (SMR,
 * ZNS, null_blk).  The zone table is read with zbd_list_zones at
 * start and re-read for a zone after any I/O error on it, so the
 * device stays the truth.  Data goes through pread/pwrite on libzbd's
 * descriptor, with O_DIRECT and aligned bounce buffers where the
 * device allows.  The descriptor is read-only until the first
 * writable connection (so nbdkit -r never opens the device for
 * writing).
 */

#define _GNU_SOURCE 1          /* O_DIRECT */
#include <config.h>

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
#include <unistd.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <linux/blkzoned.h>
#include <linux/fs.h>

#ifdef HAVE_LIBZBD
#include <libzbd/zbd.h>
#endif

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "zbd-internal.h"
#include "holder.h"


#ifdef HAVE_LIBZBD

/* A drive's device state (struct drive's state). */
struct dev {
  struct drive *drive;
  const struct zbd_params *params;      /* the drive's */
  struct zbd_disk *disk;
  /* The descriptor of the device: read-only (libzbd's, from zbd_open)
   * until the first writable connection, then read-write (reopened
   * through the read-only one, so the very same device).  Threads load
   * it with acquire ordering; dev_direct says whether either descriptor
   * needs aligned bounce buffers (O_DIRECT) and is set before a new
   * descriptor is published.  Zone reports use libzbd on dev_ro_fd.
   */
  int dev_fd, dev_ro_fd;
  bool dev_rw, dev_direct;
};

static int
cur_fd (struct dev *e)
{
  return __atomic_load_n (&e->dev_fd, __ATOMIC_ACQUIRE);
}

static bool
cur_direct (struct dev *e)
{
  return __atomic_load_n (&e->dev_direct, __ATOMIC_ACQUIRE);
}

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
    z->wp = zone_cap_end (z);   /* no WP: nothing can be written */
  else
    z->wp = zbd_zone_wp (zz);
}

/* O_DIRECT needs aligned memory: copy through a bounce buffer. */
static void *
bounce_alloc (struct dev *e, size_t n)
{
  void *p;
  size_t align = e->disk->phys_block_size > 4096
    ? e->disk->phys_block_size : 4096;

  if (posix_memalign (&p, align, n ? n : align) != 0) {
    errno = ENOMEM;
    return NULL;
  }
  return p;
}

/* Log a failed device command on N bytes at OFF with the device's own
 * error E (its name, for whoever searches the kernel log for it), and
 * set the errno the client gets (client_errno).
 */
static void
report_device_error (struct dev *dev, const char *what, uint64_t n,
                     uint64_t off, int e)
{
  int sent = client_errno (e);

  nbdkit_error ("device=%s: %s of %" PRIu64 " bytes at %" PRIu64
                " (zone %" PRIu64 ") failed: %s (%s)%s",
                dev->params->device_path, what, n, off,
                off / dev->disk->table.zone_size, strerror (e),
                errno_name (e), sent != e ? "; the client is told EIO" : "");
  errno = sent;
}

static int
dev_pread (struct drive *dr, void *buf, uint32_t n, uint64_t off)
{
  struct dev *e = dr->state;
  int fd = cur_fd (e);
  void *b = cur_direct (e) ? bounce_alloc (e, n) : buf;
  int r;

  if (!b) {
    nbdkit_error ("device=%s: no memory for a %" PRIu32 "-byte read",
                  e->params->device_path, n);
    return -1;
  }
  r = full_pread (fd, b, n, off);
  if (r == -1)
    report_device_error (e, "read", n, off, errno);
  else if (b != buf)
    memcpy (buf, b, n);
  if (b != buf)
    free (b);
  return r;
}

/* The number of the device's zones in condition RO (libzbd's
 * reporting option), or -1.
 */
static long
count_zones (struct dev *e, enum zbd_report_option ro)
{
  unsigned int nr = 0;

  if (zbd_report_nr_zones (e->dev_ro_fd, 0, 0, ro, &nr) != 0)
    return -1;
  return nr;
}

static int query_zone (struct dev *e, uint64_t start, struct zone *out);

/* A write the kernel split into several bios: when the device refuses
 * the first at its open or active zone limit, Linux (6.12) fails the
 * rest with EIO, and the write may come back EIO.  It was a limit if
 * nothing was written (the zone is still empty or closed, its WP at OFF:
 * the device did not even open it) and the device was at a limit it
 * could not make room under.  Returns ETOOMANYREFS or EOVERFLOW then,
 * else EIO.
 */
static int
classify_eio (struct dev *e, uint64_t off)
{
  struct zone z;
  long imp, exp, closed;
  uint64_t open, active;
  bool active_full;

  if ((!e->disk->max_open && !e->disk->max_active) ||
      query_zone (e, off - off % e->disk->table.zone_size, &z) == -1 ||
      z.conventional || z.wp != off ||
      (z.cond != COND_EMPTY && z.cond != COND_CLOSED))
    return EIO;
  imp = count_zones (e, ZBD_RO_IMP_OPEN);
  exp = count_zones (e, ZBD_RO_EXP_OPEN);
  closed = count_zones (e, ZBD_RO_CLOSED);
  if (imp < 0 || exp < 0 || closed < 0)
    return EIO;
  open = imp + exp;
  active = open + closed;
  active_full = e->disk->max_active && active >= e->disk->max_active;
  /* An empty zone needs an active slot: nothing can make one. */
  if (z.cond == COND_EMPTY && active_full)
    return EOVERFLOW;
  /* An open slot: devices close an implicitly open zone to make one, so
   * at the open limit only explicitly open zones refuse it (and null_blk
   * also refuses to reopen a closed zone when the active slots are full).
   */
  if (e->disk->max_open && open >= e->disk->max_open &&
      (imp == 0 || (z.cond == COND_CLOSED && active_full)))
    return ETOOMANYREFS;
  return EIO;
}

/* Log a failed device write and set the errno the client will see.
 * Linux fails a write that would open or activate one zone too many with
 * ETOOMANYREFS (open limit) or EOVERFLOW (active limit).  NBD has no such
 * errors (nbdkit would send EINVAL, which blames the client's request), so
 * they become ENOSPC, as the emulated zones do at their limits.
 */
static void
report_write_error (struct dev *dev, uint32_t n, uint64_t off)
{
  int e = errno;
  const char *said = "";

  if (e == EIO) {
    e = classify_eio (dev, off);
    if (e != EIO)
      said = ", though the kernel said EIO for the split write";
  }
  if (e == EOVERFLOW || e == ETOOMANYREFS) {
    nbdkit_error ("device=%s: write of %" PRIu32 " bytes at %" PRIu64
                  " refused by the device: too many %s zones (%s%s); "
                  "finish or reset a zone first: ENOSPC",
                  dev->params->device_path, n, off,
                  e == EOVERFLOW ? "active" : "open", strerror (e), said);
    errno = ENOSPC;
    return;
  }
  report_device_error (dev, "write", n, off, e);
}

static int
dev_pwrite (struct drive *dr, const void *buf, uint32_t n, uint64_t off)
{
  struct dev *e = dr->state;
  int fd = cur_fd (e);
  void *b = cur_direct (e) ? bounce_alloc (e, n) : (void *) buf;
  int r;

  if (!b) {
    nbdkit_error ("device=%s: no memory for a %" PRIu32 "-byte write",
                  e->params->device_path, n);
    return -1;
  }
  if (b != buf)
    memcpy (b, buf, n);
  r = full_pwrite (fd, b, n, off);
  if (r == -1)
    report_write_error (e, n, off);
  if (b != buf)
    free (b);
  return r;
}

/* Conventional zones: write zeros (the device has no discard promise). */
static int
dev_discard (struct drive *dr, uint64_t n, uint64_t off)
{
  struct dev *e = dr->state;
  size_t chunk = 1024 * 1024;
  void *z = bounce_alloc (e, chunk);
  int r = 0;

  if (!z)
    return -1;
  memset (z, 0, chunk);
  while (n > 0) {
    size_t k = n < chunk ? n : chunk;
    r = full_pwrite (cur_fd (e), z, k, off);
    if (r == -1) {
      report_device_error (e, "write of zeros", k, off, errno);
      break;
    }
    n -= k; off += k;
  }
  free (z);
  return r;
}

/* Zone management on the read-write descriptor (libzbd knows only the
 * descriptors it opened itself, by path).
 */
static int
zone_mgmt (struct dev *e, unsigned long op, const struct zone *z)
{
  struct blk_zone_range range = {
    .sector = z->start / 512, .nr_sectors = z->len / 512,
  };

  return ioctl (cur_fd (e), op, &range);
}

static int
dev_reset (struct drive *dr, const struct zone *z)
{
  struct dev *e = dr->state;

  if (zone_mgmt (e, BLKRESETZONE, z) != 0) {
    report_device_error (e, "zone reset", z->len, z->start, errno);
    return -1;
  }
  return 0;
}

static int
dev_finish (struct drive *dr, const struct zone *z)
{
  struct dev *e = dr->state;

  if (zone_mgmt (e, BLKFINISHZONE, z) != 0) {
    report_device_error (e, "zone finish", z->len, z->start, errno);
    return -1;
  }
  return 0;
}

static int
dev_flush (struct drive *dr)
{
  struct dev *e = dr->state;

  return durable_sync (dr, cur_fd (e), "device", e->params->device_path);
}

/* The device's own view of the zone at START, after an error; called
 * by the zone table without its lock.
 */
static int
query_zone (struct dev *e, uint64_t start, struct zone *out)
{
  struct zbd_zone zz;
  unsigned int n = 1;
  uint64_t len = e->disk->disk_size - start < e->disk->table.zone_size
    ? e->disk->disk_size - start : e->disk->table.zone_size;

  if (zbd_report_zones (e->dev_ro_fd, start, len, ZBD_RO_ALL, &zz, &n) != 0)
    return -1;
  if (n != 1) {
    errno = EIO;
    return -1;
  }
  zone_from_zbd (out, &zz);
  return 0;
}

static int
dev_query_zone (struct drive *dr, uint64_t start, struct zone *out)
{
  return query_zone (dr->state, start, out);
}

/* Open with O_DIRECT where the device allows it; *DIRECT says so. */
static int
dev_open_fd (struct dev *e, int mode, bool *direct)
{
  struct zbd_info info;
  int fd;

  fd = zbd_open (e->params->device_path, mode | O_DIRECT | O_CLOEXEC, &info);
  *direct = fd >= 0;
  if (fd < 0 && (errno == EINVAL || fd == -EINVAL))
    fd = zbd_open (e->params->device_path, mode | O_CLOEXEC, &info);
  return fd;
}

/* The device's identity: the same node and, where the kernel tells, the
 * same disk (its sequence number changes when a disk is replaced).
 */
static bool
same_device (int a, int b)
{
  struct stat sa, sb;
  uint64_t qa, qb;

  if (fstat (a, &sa) == -1 || fstat (b, &sb) == -1 ||
      sa.st_rdev != sb.st_rdev || sa.st_dev != sb.st_dev ||
      sa.st_ino != sb.st_ino)
    return false;
#ifdef BLKGETDISKSEQ
  if (ioctl (a, BLKGETDISKSEQ, &qa) == 0 &&
      ioctl (b, BLKGETDISKSEQ, &qb) == 0 && qa != qb)
    return false;
#endif
  return true;
}

/* Why the device cannot be had exclusively (FD open on it): who holds
 * it, if a process can be seen, else what else can.
 */
static void
in_use_error (struct dev *e, int fd, const char *what)
{
  char who[128];
  const char *base = strrchr (e->params->device_path, '/');

  if (holder_describe (fd, who, sizeof who) == -1)
    snprintf (who, sizeof who, "no process has it open: mounted, or held "
              "by device-mapper or md, see /sys/block/%s/holders",
              base ? base + 1 : e->params->device_path);
  nbdkit_error ("device=%s: %s (%s); two writers on one drive lose each "
                "other's writes; stop that one first",
                e->params->device_path, what, who);
}

/* One server per drive, as for images (see lock_image in emulate.c):
 * a lock taken at start on the descriptor opened at start, exclusive
 * unless the server is read-only; and, for a server that may write, the
 * kernel's exclusive claim (O_EXCL), which also keeps out filesystems,
 * device-mapper and any other program opening the drive with O_EXCL.
 * The claim is tried here and held from the first writer on (see
 * dev_open_rw).
 */
static int
claim_device (struct dev *e)
{
  char self[64];
  int fd;

  if (flock (e->dev_ro_fd, (e->params->readonly ? LOCK_SH : LOCK_EX) | LOCK_NB)
      == -1) {
    if (errno == EWOULDBLOCK)
      in_use_error (e, e->dev_ro_fd, "the drive is in use by another server");
    else
      nbdkit_error ("device=%s: cannot lock the drive: %m",
                    e->params->device_path);
    return -1;
  }
  if (e->params->readonly)
    return 0;
  snprintf (self, sizeof self, "/proc/self/fd/%d", e->dev_ro_fd);
  fd = open (self, O_RDONLY | O_EXCL | O_CLOEXEC);
  if (fd == -1) {
    if (errno == EBUSY)
      in_use_error (e, e->dev_ro_fd, "the drive is in exclusive use (O_EXCL)");
    else
      nbdkit_error ("device=%s: cannot open exclusively: %m",
                    e->params->device_path);
    return -1;
  }
  close (fd);
  return 0;
}

/* Reopen the device read-write through the descriptor opened at start
 * (not by its path, which may now name another disk), and check it is
 * the same device.  Called once, under the plugin's open lock.
 */
static int
dev_open_rw (struct drive *dr)
{
  struct dev *e = dr->state;
  char self[64];
  bool direct = true;
  int fd;

  if (e->dev_rw)
    return 0;
  snprintf (self, sizeof self, "/proc/self/fd/%d", e->dev_ro_fd);
  fd = open (self, O_RDWR | O_EXCL | O_DIRECT | O_CLOEXEC);
  if (fd == -1 && errno == EINVAL) {
    direct = false;
    fd = open (self, O_RDWR | O_EXCL | O_CLOEXEC);
  }
  if (fd == -1 && errno == EBUSY) {
    in_use_error (e, e->dev_ro_fd, "the drive is in exclusive use (O_EXCL) "
                  "since this server started; refusing to write to it");
    errno = EIO;
    return -1;
  }
  if (fd == -1) {
    nbdkit_error ("device=%s: cannot open for writing: %m",
                  e->params->device_path);
    return -1;
  }
  if (!same_device (fd, e->dev_ro_fd)) {
    nbdkit_error ("device=%s: reopened for writing, it is no longer the "
                  "device this server started with (replaced?); refusing "
                  "to write to it with the old zone table",
                  e->params->device_path);
    close (fd);
    errno = EIO;
    return -1;
  }
  /* Bounce buffers suit either descriptor: keep them if either needs
   * them, before other threads switch to the new descriptor.
   */
  if (direct)
    __atomic_store_n (&e->dev_direct, true, __ATOMIC_RELEASE);
  __atomic_store_n (&e->dev_fd, fd, __ATOMIC_RELEASE);
  e->dev_rw = true;
  return 0;
}

static void dev_close (struct drive *dr);

static const struct backend device_backend = {
  .name = "device", .emulated = false,
  .pread = dev_pread, .pwrite = dev_pwrite, .discard = dev_discard,
  .zone_op_reset = dev_reset, .zone_op_finish = dev_finish,
  .flush = dev_flush, .query_zone = dev_query_zone,
  .open_rw = dev_open_rw, .close = dev_close,
};

/* A clear reason why PATH cannot be served, checked before libzbd. */
static int
check_device_path (const char *path)
{
  struct stat st;

  if (stat (path, &st) == -1) {
    nbdkit_error ("device=%s: %m", path);
    return -1;
  }
  if (S_ISREG (st.st_mode)) {
    nbdkit_error ("device=%s: is a regular file, not a zoned block device; "
                  "for an emulated zoned disk use emulate=%s", path, path);
    return -1;
  }
  if (!S_ISBLK (st.st_mode)) {
    nbdkit_error ("device=%s: is not a block device (zoned block devices "
                  "are /dev/sdX, /dev/nvmeXnY, /dev/nullbX)", path);
    return -1;
  }
  return 0;
}

/* Read /sys/block/DEV/REL into BUF ("" if there is none). */
static void
read_sys_attr (const char *dev, const char *rel, char *buf, size_t len)
{
  char path[PATH_MAX], *real = realpath (dev, NULL);
  const char *base;
  FILE *fp;

  buf[0] = '\0';
  if (!real)
    return;
  base = strrchr (real, '/');
  snprintf (path, sizeof path, "/sys/block/%s/%s", base ? base + 1 : real,
            rel);
  free (real);
  fp = fopen (path, "r");
  if (fp) {
    if (!fgets (buf, len, fp))
      buf[0] = '\0';
    buf[strcspn (buf, "\n")] = '\0';
    fclose (fp);
  }
}

static void
read_queue_attr (const char *dev, const char *attr, char *buf, size_t len)
{
  char rel[64];

  snprintf (rel, sizeof rel, "queue/%s", attr);
  read_sys_attr (dev, rel, buf, len);
}

/* The drive's identity for clients that reconnect: its WWID (NVMe
 * namespaces and SCSI disks have one, stable across reboots), else its
 * disk sequence number with this boot's id (null_blk: a device made
 * again is another disk, and its data is gone).
 */
static void
set_device_id (struct dev *e)
{
  char id[96], boot[64] = "";
  FILE *fp;
  uint64_t seq = 0;

  read_sys_attr (e->params->device_path, "wwid", id, sizeof id);
  if (!id[0])
    read_sys_attr (e->params->device_path, "device/wwid", id, sizeof id);
  if (id[0]) {
    zbd_set_disk_id (e->disk->disk_id, sizeof e->disk->disk_id, "wwid-", id);
    return;
  }
  fp = fopen ("/proc/sys/kernel/random/boot_id", "r");
  if (fp) {
    if (!fgets (boot, sizeof boot, fp))
      boot[0] = '\0';
    boot[strcspn (boot, "\n")] = '\0';
    fclose (fp);
  }
#ifdef BLKGETDISKSEQ
  if (ioctl (e->dev_ro_fd, BLKGETDISKSEQ, &seq) == -1)
    seq = 0;
#endif
  if (seq == 0) {
    /* No way to tell this disk from its replacement: a number of this
     * server's own, so that a client never resumes across a restart.
     */
    snprintf (id, sizeof id, "%016" PRIx64, zbd_random_id ());
    zbd_set_disk_id (e->disk->disk_id, sizeof e->disk->disk_id, "server-", id);
    return;
  }
  snprintf (id, sizeof id, "%s-%" PRIu64, boot[0] ? boot : "noboot", seq);
  zbd_set_disk_id (e->disk->disk_id, sizeof e->disk->disk_id, "diskseq-", id);
}

/* Release the drive: its descriptors, and so its lock and claim. */
static void
dev_close (struct drive *dr)
{
  struct dev *e = dr->state;

  if (!e)
    return;
  if (e->dev_fd >= 0 && e->dev_fd != e->dev_ro_fd)
    close (e->dev_fd);
  if (e->dev_ro_fd >= 0)
    zbd_close (e->dev_ro_fd);
  free (e);
  dr->state = NULL;
}

/* The zoned NBD profile gives one capacity for every sequential zone
 * (a short last zone aside).  A device whose zones differ would be
 * described wrongly to every client, which would then write past the
 * capacity of some zones and never fill others: refuse it.
 */
static int
check_one_capacity (struct dev *e)
{
  const struct zone_table *t = &e->disk->table;
  uint64_t differs, cap = zt_capacity (t, &differs);

  if (differs == UINT64_MAX)
    return 0;
  nbdkit_error ("device=%s: zone %" PRIu64 " has a capacity of %" PRIu64
                " bytes, the first writable sequential zone %" PRIu64
                ": zones of different capacities cannot be described to "
                "NBD clients (one zone-capacity for all), so this device "
                "cannot be served", e->params->device_path, differs,
                t->zones[differs].cap, cap);
  return -1;
}

/* The device's zones and limits into the drive's disk. */
static int
read_zones (struct dev *e)
{
  struct zbd_info info;
  struct zbd_zone *zz = NULL;
  unsigned int n = 0, i;
  char rot[8];

  if (zbd_get_info (e->dev_fd, &info) != 0) {
    nbdkit_error ("device=%s: cannot read zone information: %m",
                  e->params->device_path);
    return -1;
  }
  if (info.model != ZBD_DM_HOST_MANAGED && info.model != ZBD_DM_HOST_AWARE) {
    nbdkit_error ("device=%s: not a zoned block device (zoned model \"%s\")",
                  e->params->device_path,
                  zbd_device_model_str (info.model, false));
    return -1;
  }
  if (zbd_list_zones (e->dev_fd, 0, 0, ZBD_RO_ALL, &zz, &n) != 0 || n == 0) {
    nbdkit_error ("device=%s: cannot report zones: %m",
                  e->params->device_path);
    return -1;
  }
  if (zt_init (&e->disk->table, n, info.zone_size) == -1) {
    nbdkit_error ("calloc: %m");
    free (zz);
    return -1;
  }
  for (i = 0; i < n; i++)
    zone_from_zbd (&e->disk->table.zones[i], &zz[i]);
  free (zz);
  if (check_one_capacity (e) == -1)
    return -1;
  e->disk->disk_size = e->disk->table.zones[n - 1].start +
    e->disk->table.zones[n - 1].len;
  e->disk->block_size = info.lblock_size;
  e->disk->phys_block_size = info.pblock_size;
  e->disk->max_open = info.max_nr_open_zones == (unsigned) -1 ? 0
    : info.max_nr_open_zones;
  e->disk->max_active = info.max_nr_active_zones == (unsigned) -1 ? 0
    : info.max_nr_active_zones;
  e->disk->host_aware = info.model == ZBD_DM_HOST_AWARE;
  read_queue_attr (e->params->device_path, "rotational", rot, sizeof rot);
  e->disk->rotational = strcmp (rot, "1") == 0;
  nbdkit_debug ("device=%s: %s, %u zones of %llu bytes, block %u/%u, "
                "O_DIRECT %s", e->params->device_path, info.vendor_id, n,
                info.zone_size, info.lblock_size, info.pblock_size,
                e->dev_direct ? "yes" : "no");
  return 0;
}

bool
is_zoned_device (const char *path)
{
  struct stat st;

  zbd_set_log_level (ZBD_LOG_NONE);
  return stat (path, &st) == 0 && S_ISBLK (st.st_mode) &&
    zbd_device_is_zoned (path) == 1;
}

static int
open_dev (struct dev *e)
{
  const char *path = e->params->device_path;
  char model[64];

  if (check_device_path (path) == -1)
    return -1;
  zbd_set_log_level (ZBD_LOG_NONE);
  /* zbd_open fails on a non-zoned device without a useful errno, so
   * ask first, and name the model the kernel reports.
   */
  if (zbd_device_is_zoned (path) != 1) {
    read_queue_attr (path, "zoned", model, sizeof model);
    nbdkit_error ("device=%s: not a zoned block device (the kernel reports "
                  "its zoned model as \"%s\"); this plugin serves "
                  "host-managed or host-aware zoned devices", path,
                  model[0] ? model : "unknown: no queue/zoned in sysfs");
    return -1;
  }
  errno = 0;
  e->dev_ro_fd = e->dev_fd = dev_open_fd (e, O_RDONLY, &e->dev_direct);
  if (e->dev_fd < 0) {
    int err = e->dev_fd < -1 ? -e->dev_fd : errno;

    e->dev_ro_fd = e->dev_fd = -1;
    nbdkit_error ("device=%s: cannot open: %s", path,
                  err ? strerror (err) : "libzbd could not read its zone "
                  "information");
    return -1;
  }
  if (claim_device (e) == -1 || read_zones (e) == -1)
    return -1;
  set_device_id (e);
  return 0;
}

int
open_device (struct drive *dr)
{
  struct dev *e = calloc (1, sizeof *e);

  if (!e) {
    nbdkit_error ("calloc: %m");
    return -1;
  }
  e->drive = dr;
  e->params = &dr->params;
  e->disk = &dr->disk;
  e->dev_fd = e->dev_ro_fd = -1;
  dr->state = e;
  if (open_dev (e) == -1) {
    dev_close (dr);
    return -1;
  }
  dr->backend = &device_backend;
  return 0;
}

#else /* !HAVE_LIBZBD */

int
open_device (struct drive *dr)
{
  nbdkit_error ("device=%s: this zbd plugin was built without libzbd, so it "
                "cannot serve real zoned devices; use emulate=FILE|memory",
                dr->params.device_path);
  return -1;
}

bool
is_zoned_device (const char *path)
{
  return false;
}

#endif /* !HAVE_LIBZBD */


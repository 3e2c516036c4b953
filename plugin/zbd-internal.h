/* Internal interface between the parts of the zbd plugin: zbd.c (the
 * nbdkit callbacks), gate.c (the zone table and the write gate, see
 * gate.h), emulate.c (memory and image-file backends) and device.c
 * (libzbd).  A backend gets the parameters and fills in a struct
 * zbd_disk (geometry and zone table); it keeps its own state to itself.
 */
#ifndef ZBD_INTERNAL_H
#define ZBD_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "gate.h"

/* The plugin's parameters; -1 = not given. */
struct zbd_params {
  const char *device_path, *emulate;
  /* nbdkit -r: the server never writes, so it shares the image or
   * drive with other read-only servers; otherwise it holds it alone.
   */
  bool readonly;
  int64_t size, zone_size, zone_capacity, conventional, max_open,
    max_active, block_size;
};

/* What a backend reports of the disk it opened. */
struct zbd_disk {
  struct zone_table table;      /* filled in by the backend */
  uint64_t disk_size;
  uint32_t block_size, phys_block_size;
  uint64_t max_open, max_active;        /* 0 = no limit */
  bool host_aware, rotational;
  /* What makes this disk this disk, for a client that reconnects
   * (disk-id= in the export description): the drive's WWID, or its
   * disk sequence number in this boot; the image's id; a number drawn
   * at start for memory, whose data dies with the server.  Printable,
   * no spaces.
   */
  char disk_id[128];
};

/* A nonzero random number (for identities, not for keys);
 * backend-util.c.
 */
extern uint64_t zbd_random_id (void);
/* Copy S into the identity DST (LEN bytes) after PREFIX, every byte
 * outside [A-Za-z0-9._:-] as '_', runs of them as one.
 */
extern void zbd_set_disk_id (char *dst, size_t len, const char *prefix,
                             const char *s);

/* One drive: a device, an image or memory, with its own zone table,
 * gate, backend state and description, shared by every connection to
 * it.  The single-drive forms (device=, emulate=) have one, made at
 * start; dir= has one per export in use, made by the first connection
 * to it and closed after the last (see zbd.c).
 */
struct backend;
/* dir=: what an entry names, a block device (its device number) or a
 * file, whatever link led to it; several names of one medium (as
 * /dev/disk/by-id gives every disk) are one drive.
 */
struct medium {
  bool blk;
  dev_t dev;
  ino_t ino;
};

struct drive {
  char *name;                   /* the export name; "" for device=/emulate=;
                                 * dir=: the name it was opened by */
  struct medium medium;         /* dir= */
  struct zbd_params params;     /* device_path or emulate: this drive's */
  struct zbd_disk disk;
  const struct backend *backend;
  void *state;                  /* the backend's own */
  struct zone_ops zone_ops;
  char *description;            /* the geometry as key=value words */
  bool sync_failed;             /* durable_sync's latch */
  /* zbd.c's.  Under its drives lock: the users (connections, and a
   * listing describing it), whether it is closing, and the list of
   * drives in use.  Under LOCK, which is held while the drive is
   * opened: whether it opened, the writable connections open now and
   * whether there ever was one.
   */
  unsigned users;
  bool closing;                 /* its last user is closing it */
  struct drive *next;
  pthread_mutex_t lock;
  bool ready;
  unsigned nr_writers;
  bool had_writer;
};

/* What a backend does; the zone table and the gate are common.  Every
 * hook gets the drive, and the backend finds its own state in
 * DR->state.
 *
 * The contract, hook by hook (all return 0, or -1 with errno set and
 * the failure logged):
 *
 * pread, pwrite: data at OFF, N bytes.  pwrite to a sequential zone is
 *   called by the gate only (zt_write): at the zone's WP, at most one
 *   per zone at a time, never past its capacity.  Not durable until
 *   flush.  The errno is what the client gets: the device backend
 *   passes its errors through client_errno.
 * discard: make [OFF, OFF+N) read as zeros; conventional zones, and
 *   the tail of a zone being finished.
 * zone_op_reset, zone_op_finish (NULL: the table's own discard): run
 *   with the zone claimed by the table (no write of it in flight) and
 *   the table's zone rules already checked (gate.c, the one place for
 *   them).  Durable when they return: a device executes zone commands
 *   durably, the image file writes the zone's WP to its table.
 * flush: everything acknowledged before it is durable, WPs included;
 *   it goes through durable_sync, whose first failure latches EIO.
 * query_zone (NULL: the table is the truth): the device's own state of
 *   the zone at START, after an I/O error; called without the table's
 *   lock.
 * open_rw, open_ro (NULL: nothing to do): the first writable, or a
 *   read-only, connection.
 * zone_ops_lock, zone_ops_unlock, persist_locked (NULL unless the
 *   backend keeps its own WP table, the image file): zbd.c takes the
 *   lock around every zone operation (zone_ops_begin/end) so that a
 *   flush, which takes it too, never records a WP snapshot older than
 *   a zone operation after that operation's data changed;
 *   persist_locked is the flush's body, called with the lock held.
 *   Lock order: zone_ops_lock, then the zone table's lock.
 * close: release the drive (descriptors, locks, memory); the zone
 *   table is freed by zbd.c.  Called once, with no request in flight,
 *   after the flush that saved it.
 */
struct backend {
  const char *name;
  bool emulated;                /* zone state machine kept by the table */
  int (*pread) (struct drive *dr, void *buf, uint32_t n, uint64_t off);
  int (*pwrite) (struct drive *dr, const void *buf, uint32_t n, uint64_t off);
  int (*discard) (struct drive *dr, uint64_t n, uint64_t off);
  int (*zone_op_reset) (struct drive *dr, const struct zone *z);
  int (*zone_op_finish) (struct drive *dr, const struct zone *z);
  int (*flush) (struct drive *dr);
  int (*query_zone) (struct drive *dr, uint64_t start, struct zone *out);
  int (*open_rw) (struct drive *dr);
  int (*open_ro) (struct drive *dr);
  void (*zone_ops_lock) (struct drive *dr);
  void (*zone_ops_unlock) (struct drive *dr);
  int (*persist_locked) (struct drive *dr);
  void (*close) (struct drive *dr);
};

/* zbd.c */
extern bool nbdkit_readonly_in (const char *cmdline, size_t len);

/* backend-util.c (and zbd_random_id, zbd_set_disk_id above) */
/* fdatasync FD of DR, latching the first failure (then EIO until
 * restart); KEY=PATH names the image or device in the one log line.
 */
extern int durable_sync (struct drive *dr, int fd, const char *key,
                         const char *path);
extern bool sync_latched (const struct drive *dr);
/* The errno to send for a backend error E: E itself where the client
 * can act on it (NBD carries it), else EIO; see backend-util.c.
 */
extern int client_errno (int e);
/* E's symbolic name ("ENODATA"), for logs. */
extern const char *errno_name (int e);
extern int full_pread (int fd, void *buf, size_t n, off_t off);
extern int full_pwrite (int fd, const void *buf, size_t n, off_t off);

/* The backends' openers: fill in DR->disk, DR->backend and DR->state
 * from DR->params, or log why not and return -1 (having released what
 * they took).
 */
/* emulate.c */
extern int open_memory_backend (struct drive *dr);
extern int open_file (struct drive *dr);
/* Is FD (open on a regular file) an emulated zone image?  For dir=. */
extern bool is_zone_image (int fd);

/* device.c */
extern int open_device (struct drive *dr);
/* Is PATH a zoned block device (host-managed or host-aware)?  For dir=. */
extern bool is_zoned_device (const char *path);

#endif /* ZBD_INTERNAL_H */

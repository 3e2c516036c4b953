/* Internal interface between the parts of the zbd plugin: zbd.c (the
 * nbdkit callbacks, the write gate, the zone state machine),
 * emulate.c (memory and image-file backends) and device.c (libzbd).
 */
#ifndef ZBD_INTERNAL_H
#define ZBD_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

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
  pthread_cond_t changed;       /* for zone operations: busy changed */
  struct gate_waiter *waiters;  /* writes waiting at the gate */
};

/* What a backend does; the zone table and the gate are common. */
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
  int (*open_ro) (void);        /* a read-only connection, or NULL */
};

/* Parameters (zbd.c); -1 = not given. */
extern const char *device_path, *emulate;
extern int64_t param_size, param_zone_size, param_zone_capacity,
  param_conventional, param_max_open, param_max_active, param_block_size;

/* The zone table (zbd.c), filled by a backend at start. */
extern struct zone *zones;
extern uint64_t nr_zones;
extern uint64_t zone_size;      /* all zones but maybe the last */
extern uint64_t disk_size;
extern uint32_t block_size, phys_block_size;
extern uint64_t max_open, max_active;   /* 0 = no limit */
extern bool host_aware, rotational;
extern pthread_mutex_t zones_lock;      /* protects every zone's state */
extern uint64_t nr_active;              /* emulated accounting */
extern const struct backend *backend;

static inline uint64_t
zone_index (const struct zone *z)
{
  return z - zones;
}

static inline uint64_t
zone_end (const struct zone *z)
{
  return z->start + z->len;
}

static inline uint64_t
zone_cap_end (const struct zone *z)
{
  return z->start + z->cap;
}

/* zbd.c */
extern int full_pread (int fd, void *buf, size_t n, off_t off);
extern int full_pwrite (int fd, const void *buf, size_t n, off_t off);
extern void init_zone_conds (struct zone *z, size_t n);

/* emulate.c */
extern int open_memory_backend (void);
extern int open_file (void);
extern pthread_mutex_t persist_lock;    /* image: zone ops and flushes */
extern int persist_locked (void);
extern void emulate_unload (void);

/* device.c */
extern int open_device (void);

#endif /* ZBD_INTERNAL_H */

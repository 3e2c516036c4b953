/* A fake zbd server for the reconnect tests: an NBD server in threads
 * of the test process, on a Unix socket, serving emulated host-managed
 * zones as the zbd plugin does (fake-nbd-server.c), that can be told
 * to break the connection at a chosen request and to come back as
 * another disk.
 *
 * It speaks what nbdzone needs of NBD: the fixed newstyle handshake,
 * structured replies, base:allocation, NBD_OPT_GO with the export
 * description carrying the zone geometry, disk-id= and key-check=.
 * Sequential zones take writes only at their WP; a write ahead of the
 * WP waits for it (the plugin's gate), one below fails with EIO.
 * Block status says [start, WP) data, [WP, zone end) hole+zero; trim
 * of a zone resets it; write-zeroes from the WP to the capacity
 * finishes it.
 *
 * Every command received is logged with the generation of its
 * connection (how many breaks the server had made when it was
 * opened), so a test tells what was sent before the break from what
 * was sent again after the reconnect.
 */
#ifndef FAKE_NBD_SERVER_H
#define FAKE_NBD_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* NBD command types, as on the wire. */
enum {
  FAKE_READ = 0, FAKE_WRITE = 1, FAKE_DISC = 2, FAKE_FLUSH = 3,
  FAKE_TRIM = 4, FAKE_ZERO = 6, FAKE_BLOCK_STATUS = 7,
};
#define FAKE_FLAG_FUA 1
#define FAKE_ANY_OFFSET UINT64_MAX

/* What becomes of a command that meets a fault. */
enum fake_action {
  FAKE_SERVE,           /* done and answered (no fault) */
  FAKE_DIE_BEFORE,      /* the server dies with it: nothing done */
  FAKE_DIE_AFTER,       /* done, then the server dies before answering */
  FAKE_DIE_PARTIAL,     /* the first PARTIAL bytes of a write (or trim)
                         * land, then the server dies */
  FAKE_CUT_REPLY,       /* done and answered, but the answer is lost with
                         * the connection (the network); the server lives */
  FAKE_HALF_REPLY,      /* done, half of the answer sent, then the
                         * connection breaks; the server lives */
  FAKE_SWALLOW,         /* done, never answered, the connection stays */
  FAKE_LATE,            /* a write: the connection breaks with it not yet
                         * done; the server does it later, just before
                         * the next command at its offset (a server that
                         * was stopped, not killed, and continues) */
};

struct fake_shape {
  uint64_t zone_size, zone_capacity;
  uint64_t nr_zones, nr_conventional;   /* the first zones conventional */
  uint32_t block_size;
  char disk_id[64], key_check[64];
};

struct fake_cmd {
  unsigned generation;          /* breaks before its connection opened */
  int conn;                     /* connection number, from 0 */
  uint16_t type, flags;
  uint64_t offset;
  uint32_t length;
  enum fake_action action;
};

struct fake_server;

/* Serve SHAPE, every zone empty, on a socket in DIR. */
extern struct fake_server *fake_server_start (const char *dir,
                                              const struct fake_shape *shape);
extern void fake_server_stop (struct fake_server *s);
extern const char *fake_server_uri (const struct fake_server *s);

/* The first command of TYPE at OFFSET (FAKE_ANY_OFFSET: any) from now
 * on meets ACTION (PARTIAL: bytes, for FAKE_DIE_PARTIAL).
 */
extern void fake_server_fault (struct fake_server *s, uint16_t type,
                               uint64_t offset, enum fake_action action,
                               uint32_t partial);
/* Die now, as a fault would: every connection closes. */
extern void fake_server_die (struct fake_server *s);
/* The next death keeps the server down (connections are accepted and
 * closed at once) until fake_server_come_back; meanwhile the test
 * changes the disk.
 */
extern void fake_server_stay_down (struct fake_server *s);
extern bool fake_server_wait_down (struct fake_server *s, unsigned ms);
extern void fake_server_come_back (struct fake_server *s);
/* The disk that comes back: another identity or geometry, or zone Z's
 * WP set to WP (lost writes, or another writer's: zeros, or PATTERN
 * bytes).
 */
extern void fake_server_set_identity (struct fake_server *s,
                                      const char *disk_id,
                                      const char *key_check);
extern void fake_server_set_capacity (struct fake_server *s, uint64_t cap);
extern void fake_server_set_wp (struct fake_server *s, uint64_t z,
                                uint64_t wp);
/* A write of LEN bytes of DATA at OFF that landed before the server
 * died: the zone's WP moves past it.
 */
extern void fake_server_land (struct fake_server *s, uint64_t off,
                              uint32_t len, const void *data);

/* Hold every command received (in order, per connection) without
 * doing it, until released: the client's requests are then all in
 * flight together.  Wait until N commands of TYPE are held.
 */
extern void fake_server_pause (struct fake_server *s);
extern bool fake_server_wait_held (struct fake_server *s, uint16_t type,
                                   unsigned n, unsigned ms);
extern void fake_server_release (struct fake_server *s);

/* What the server holds: LEN bytes at OFF, and zone Z's WP. */
extern void fake_server_read (struct fake_server *s, uint64_t off,
                              uint32_t len, void *buf);
extern uint64_t fake_server_wp (struct fake_server *s, uint64_t z);
/* A copy of the command log (free it), its length in *N. */
extern struct fake_cmd *fake_server_log (struct fake_server *s, size_t *n);
extern unsigned fake_server_generation (struct fake_server *s);

#endif /* FAKE_NBD_SERVER_H */

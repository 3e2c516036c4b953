/* What the parts of nbdzone attach share: the device, its queues, the
 * requests in flight and the zone state.
 *
 *   attach.c        the command: options, geometry checks, the device's
 *                   life, background, signals
 *   attach-queue.c  the queue threads (one ring for the ublk queue and
 *                   the NBD socket) and the reply timeout
 *   target-io.c     the NBD target: each request as NBD requests
 *   target-zones.c  write pointers, zone append placement, WP re-reads
 *   target-rules.c  decisions without I/O (errors, limits, times)
 *   attach-recover.c  --recover: a device whose attach process died
 *   ublk-dev.c      the ublk device: control and queue commands
 *   zone-export.c   the zoned NBD export: connection, geometry, WPs
 */
#ifndef NBDZONE_ATTACH_H
#define NBDZONE_ATTACH_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include <liburing.h>
#include <libnbd.h>

#include "resend.h"
#include "ublk-dev.h"
#include "zone-export.h"

#define DEFAULT_QUEUES 1
#define DEFAULT_DEPTH 64
#define DEFAULT_TIMEOUT_S 30
#define DEFAULT_RECONNECT_S 60
#define MAX_IO_BYTES (1U << 20)

/* io_uring user_data: a tag, or one of these. */
#define UD_POLL_IN  (1ULL << 32)
#define UD_POLL_OUT (2ULL << 32)
#define UD_EVENT    (3ULL << 32)

/* assign_append: no place yet, hold the append (retry_held_appends). */
#define APPEND_WAIT 2

struct queue;
struct dev;

/* Where an append in flight on one tag was put, in a file that
 * outlives the process (attach-recover.c): after a takeover it says
 * where the appends the dead process had sent may have landed.
 */
struct append_note {
  uint64_t off;
  uint32_t len;
  uint32_t live;                /* 1: sent, not yet answered */
};

struct zone_state {
  uint64_t wp;                  /* the next append goes here */
  /* For a reconnect (resend.h's zone_view): the end of the last write
   * the server acknowledged, and the furthest this client sent, since
   * the last acknowledged reset.
   */
  uint64_t acked_wp, sent_wp;
  /* After --recover: the WP when this process took over; a write
   * below it was sent by the process before (attach-recover.c).
   */
  uint64_t recovered_wp;
  bool stale;                   /* an error happened: ask the server */
  unsigned appends;             /* zone appends in flight */
  unsigned writes;              /* plain writes in flight */
};

struct tag_io {
  struct queue *q;
  int tag;
  uint8_t op;
  uint32_t op_flags;             /* UBLK_IO_F_* (FUA), as the kernel sets them */
  uint64_t off;                 /* bytes */
  uint32_t len;                 /* bytes */
  void *buf;                    /* MAX_IO_BYTES, allocated on first use */
  int pending;                  /* NBD commands in flight */
  int err;                      /* first NBD error (errno) */
  uint64_t append_off;          /* where a zone append was written */
  uint64_t since_ms;            /* when it was handed over; 0: idle */
  bool ready;                   /* on the ready list */
  struct tag_io *next_ready;
  struct tag_io *next_waiting;  /* on the queue's waiting appends */
  /* Reconnect (reconnect.c).  HELD: its NBD commands were lost with
   * the connection; the reconnect decides (V).  DEFERRED: it came while
   * the connection was down and is started after.  FLUSH_AFTER: it
   * completes only once a flush has succeeded.
   */
  bool held, deferred, flush_after;
  bool resent;                  /* sent again after a reconnect */
  struct verdict v;
  /* zone report */
  struct wp_scan scan;
  uint64_t *wps;
  uint64_t scan_before;
};

struct queue {
  struct dev *d;
  int id;
  struct io_uring ring;
  struct nbd_handle *nbd;
  int nbd_fd;                   /* a dup of its socket, for the timeout */
  uint64_t last_reply_ms;       /* when the server last answered here */
  const struct ublksrv_io_desc *iods;
  size_t iods_len;
  struct tag_io *ios;
  int aborted;                  /* tags the kernel has given up */
  int busy;                     /* tags with a request being served */
  bool poll_in, poll_out;       /* poll requests armed on the NBD socket */
  bool parked;                  /* waiting for the reconnect */
  int event_fd;                 /* written to stop the thread */
  bool event_armed;
  struct tag_io *ready;         /* NBD commands done, to be finished */
  struct tag_io *waiting, *waiting_tail; /* appends held (assign_append) */
  pthread_t thread;
  bool started;
  volatile bool exited;
};

struct dev {
  struct disk ctl;              /* geometry; WP re-reads under ctl_lock */
  pthread_mutex_t ctl_lock;
  int ctl_fd;                   /* a dup of the socket of ctl.nbd */
  pthread_t watchdog;
  bool watchdog_started, watchdog_stop;
  uint64_t ctl_since_ms;        /* a WP re-read began; 0: none */
  unsigned timeout_s;           /* no reply for this long: server gone */
  bool timed_out;
  /* --reconnect (reconnect.c): how long a broken connection may take to
   * come back (0: fail at once), and where it stands.
   */
  unsigned reconnect_s;
  pthread_mutex_t link_lock;
  pthread_cond_t link_cond;
  int link;                     /* LINK_UP, LINK_BROKEN, LINK_GONE */
  unsigned generation;          /* reconnects so far */
  int parked;                   /* queues waiting for it */
  uint64_t broke_ms;
  pthread_t reconnector;
  bool reconnector_started, reconnector_stop;
  pthread_mutex_t zone_lock;
  struct zone_state *zones;
  uint64_t nr_zones;
  int id;
  bool added;                   /* the ublk device exists (ADD_DEV) */
  bool recovering;              /* --recover: an existing device */
  struct append_note *journal;  /* one per tag, shared (mmap) */
  size_t journal_len;           /* bytes */
  struct append_note *landed;   /* the dead process's, after --recover */
  size_t nr_landed;
  int nr_queues, depth;
  uint32_t max_io;
  uint32_t block_size;
  bool can_fua, can_flush;
  uint64_t appends;             /* zone appends served */
  unsigned max_appends;         /* most in flight in one zone at once */
  int cdev;
  struct queue *queues;
  volatile sig_atomic_t stop;
};

static inline uint64_t
zone_of (const struct dev *d, uint64_t off)
{
  return off / d->ctl.l.g.zone_size;
}

static inline uint64_t
zone_capend (const struct dev *d, uint64_t z)
{
  return zone_start (&d->ctl.l, z) + zone_cap (&d->ctl.l, z);
}

enum { LINK_UP, LINK_BROKEN, LINK_GONE };

/* attach.c: the signal that asks attach to end (0: none). */
extern volatile sig_atomic_t got_signal;

/* attach-queue.c */
/* SIGUSR1 asks each queue to print what it serves. */
extern volatile sig_atomic_t dump_wanted[64];
/* Map queue ID, connect it to the server and start its thread. */
extern int start_queue (struct dev *d, struct queue *q, int id);
/* Stop every queue thread, free and disconnect what they had. */
extern void stop_queues (struct dev *d);
/* The reply timeout's thread (nothing with --timeout 0). */
extern void start_watchdog (struct dev *d);
extern void stop_watchdog (struct dev *d);

/* target-io.c */
extern const char *op_name (uint8_t op);
/* Answer IO's request with RESULT (and the sector of an append). */
extern void commit (struct tag_io *io, int result, uint64_t append_lba);
/* One log line for a failed request and what the kernel is told. */
extern void log_failure (const struct tag_io *io, uint64_t off, int err,
                         int kernel_err);
/* Place the appends held for a zone whose WP was unknown. */
extern void retry_held_appends (struct queue *q);
/* A request handed over: the result to commit at once, or 1 if NBD
 * requests are out (finish_io ends it).
 */
extern int start_io (struct tag_io *io);
extern void finish_io (struct tag_io *io);

/* attach-recover.c */
extern void identity_save (const struct dev *d);
/* May this export take device ID over (EXPECTED: a new device's
 * parameters)?  Sets D's id, queues and depth; 0 or -1 (said why).
 */
extern int recover_probe (struct dev *d, int id,
                          const struct nbdzone_ublk_params *expected);
extern void recover_mark_zones (struct dev *d);
/* The append journal of the device: made empty (KEEP: the entries of
 * the process before go to D->landed first), or a warning.
 */
extern void journal_open (struct dev *d, bool keep);
extern void journal_close (struct dev *d);
extern void journal_note (struct tag_io *io, uint64_t off);
extern void journal_clear (struct tag_io *io);
/* An append handed over again after --recover that the process before
 * had put at *OFF (its bytes found there, or the landed part of them):
 * true.
 */
extern bool claim_landed_append (struct tag_io *io, uint64_t *off);

/* reconnect.c */
extern void start_reconnector (struct dev *d);
extern void stop_reconnector (struct dev *d);
/* The connection broke (WHY): true if the reconnect holds the I/O,
 * false if requests must fail (no --reconnect, or it gave up).
 */
extern bool link_broken (struct dev *d, const char *why);
extern int link_state (struct dev *d);
/* A request whose NBD commands failed: hold it for the reconnect? */
extern bool hold_for_reconnect (struct tag_io *io);
/* In the queue thread's loop: park while the connection is down. */
extern void park_if_broken (struct queue *q);
/* target-io.c: a write handed over again after --recover (0: it is
 * not one, else as start_io).
 */
extern int recovered_write (struct tag_io *io);
/* target-io.c: send a held request again as the reconnect decided. */
extern void resend_io (struct tag_io *io);

/* target-zones.c */
extern uint64_t now_ms (void);
/* Read zone Z's WP from the server (ONLY_IF_STALE: if still needed). */
extern int refresh_wp (struct dev *d, uint64_t z, bool only_if_stale);
extern void mark_stale (struct dev *d, uint64_t z);
/* Zones with a WP inside, except EXCEPT. */
extern uint64_t active_zones (struct dev *d, uint64_t except);
/* The kernel's error for the server's ERR on a write of LEN at OFF. */
extern int write_error (struct dev *d, uint64_t off, uint64_t len, int err);
/* Zone append: its place in *OFF (0), an error, or APPEND_WAIT. */
extern int assign_append (struct tag_io *io, uint64_t *off);
/* A write of LEN at OFF goes out / is done (FAILED: the WP is unknown). */
extern void note_write (struct dev *d, uint64_t off, uint32_t len);
/* An append put at OFF by the process before a takeover goes out. */
extern void note_landed_append (struct dev *d, uint64_t off, uint32_t len);
extern void zone_write_done (struct dev *d, uint64_t z, bool append,
                             bool failed);
/* Zone Z's WP on the server now, into *WP, not stored: 0 or -1. */
extern int query_wp (struct dev *d, uint64_t z, uint64_t *wp);
/* Do the LEN bytes at OFF on the server equal DATA?  1, 0, or -1 (a
 * read error, said).
 */
extern int server_holds (struct dev *d, uint64_t off, uint32_t len,
                         const void *data);
/* The server acknowledged a write of zone Z up to END. */
extern void zone_acked (struct dev *d, uint64_t z, uint64_t end);
/* Every zone's WP from the server, at attach, into WPS if not NULL
 * (else into the zone state).
 */
extern int read_all_wps (struct dev *d);
extern int read_wps_into (struct dev *d, uint64_t *wps);

#endif /* NBDZONE_ATTACH_H */

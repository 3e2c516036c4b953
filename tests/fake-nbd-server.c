/* A fake zbd server for the reconnect tests (fake-nbd-server.h).
 *
 * How it works.  An acceptor thread takes connections on a Unix
 * socket; each connection has a thread that does the handshake and
 * then reads commands and carries them out in order, under the server
 * lock, on the zones kept in memory.  A fault (fake_server_fault)
 * matches one command and decides its fate; the server "dies" by
 * shutting down every connection, and comes back at once (or, told to
 * stay down, when the test says), with the same zones unless the test
 * changed them meanwhile.  While paused, a connection's thread goes on
 * reading commands into its own queue without doing them, so that
 * several of the client's requests are in flight together when the
 * fault comes.
 */
#include <config.h>

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "fake-nbd-server.h"

/* NBD protocol numbers. */
#define NBDMAGIC 0x4e42444d41474943ULL
#define IHAVEOPT 0x49484156454F5054ULL
#define OPT_REPLY_MAGIC 0x3e889045565a9ULL
#define REQUEST_MAGIC 0x25609513
#define SIMPLE_REPLY_MAGIC 0x67446698
#define STRUCTURED_REPLY_MAGIC 0x668e33ef
enum { OPT_EXPORT_NAME = 1, OPT_ABORT = 2, OPT_INFO = 6, OPT_GO = 7,
       OPT_STRUCTURED_REPLY = 8, OPT_LIST_META_CONTEXT = 9,
       OPT_SET_META_CONTEXT = 10 };
enum { REP_ACK = 1, REP_INFO = 3, REP_META_CONTEXT = 4 };
#define REP_ERR_UNSUP 0x80000001U
#define REP_ERR_INVALID 0x80000003U
enum { INFO_EXPORT = 0, INFO_NAME = 1, INFO_DESCRIPTION = 2,
       INFO_BLOCK_SIZE = 3 };
enum { CHUNK_NONE = 0, CHUNK_OFFSET_DATA = 1, CHUNK_BLOCK_STATUS = 5,
       CHUNK_ERROR = 32769 };
#define CHUNK_DONE 1
#define FLAG_REQ_ONE 8
/* HAS_FLAGS, SEND_FLUSH, SEND_FUA, SEND_TRIM, SEND_WRITE_ZEROES,
 * CAN_MULTI_CONN: what the zbd plugin offers.
 */
#define TRANSMISSION_FLAGS (1 | 4 | 8 | 32 | 64 | 256)
#define STATE_HOLE_ZERO 3
#define META_ID 1
#define MAX_REQUEST (32U << 20)
/* How long a write ahead of the WP waits for it (the plugin's gate). */
#define GATE_MS 2000

struct request {
  uint16_t flags, type;
  uint64_t cookie, offset;
  uint32_t length;
  void *payload;                /* a write's data */
  struct request *next;
};

struct conn {
  struct fake_server *s;
  int fd, id;
  unsigned generation;
  bool structured, closed, killed;
  pthread_t thread;
  struct request *held, *held_tail;     /* while the server is paused */
  struct conn *next;
};

struct fault {
  uint16_t type;
  uint64_t offset;
  enum fake_action action;
  uint32_t partial;
  bool used;
};

struct fake_server {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct fake_shape shape;
  uint64_t size;
  uint8_t *data;
  uint64_t *wp;
  char path[108], uri[160];
  int listen_fd;
  pthread_t acceptor;
  bool stopping;
  unsigned generation;          /* breaks so far */
  bool down, stay_down, paused;
  unsigned held[8];             /* commands held, by type */
  struct conn *conns;
  int next_conn;
  struct fault faults[16];
  size_t nr_faults;
  struct fake_cmd *log;
  size_t nr_log, log_cap;
  struct request *late;         /* FAKE_LATE: a write still to do */
};

/* ---- Bytes on the socket -------------------------------------------- */

static int
read_full (int fd, void *buf, size_t n)
{
  char *p = buf;

  while (n) {
    ssize_t r = read (fd, p, n);

    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0)
      return -1;
    p += r;
    n -= r;
  }
  return 0;
}

static int
write_full (int fd, const void *buf, size_t n)
{
  const char *p = buf;

  while (n) {
    ssize_t r = send (fd, p, n, MSG_NOSIGNAL);

    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0)
      return -1;
    p += r;
    n -= r;
  }
  return 0;
}

/* A growing buffer of big-endian fields, sent in one write. */
struct out {
  uint8_t *b;
  size_t len, cap;
};

static void
put (struct out *o, const void *p, size_t n)
{
  if (n == 0)
    return;
  if (o->len + n > o->cap) {
    o->cap = (o->len + n) * 2 + 64;
    o->b = realloc (o->b, o->cap);
    if (!o->b)
      abort ();
  }
  memcpy (o->b + o->len, p, n);
  o->len += n;
}

static void put16 (struct out *o, uint16_t v) { v = htobe16 (v); put (o, &v, 2); }
static void put32 (struct out *o, uint32_t v) { v = htobe32 (v); put (o, &v, 4); }
static void put64 (struct out *o, uint64_t v) { v = htobe64 (v); put (o, &v, 8); }

/* Send O (or its first HALF bytes) and empty it. */
static int
send_out (int fd, struct out *o, bool half)
{
  int r = write_full (fd, o->b, half ? o->len / 2 : o->len);

  free (o->b);
  memset (o, 0, sizeof *o);
  return r;
}

/* ---- The zones ------------------------------------------------------ */

static uint64_t
zone_start (const struct fake_server *s, uint64_t z)
{
  return z * s->shape.zone_size;
}

static bool
conventional (const struct fake_server *s, uint64_t z)
{
  return z < s->shape.nr_conventional;
}

static uint64_t
capend (const struct fake_server *s, uint64_t z)
{
  return zone_start (s, z) + s->shape.zone_capacity;
}

static void
describe (const struct fake_server *s, char *buf, size_t len)
{
  const struct fake_shape *g = &s->shape;
  char conv[48];
  int n;

  if (g->nr_conventional == 0)
    snprintf (conv, sizeof conv, "none");
  else if (g->nr_conventional == 1)
    snprintf (conv, sizeof conv, "0");
  else
    snprintf (conv, sizeof conv, "0-%" PRIu64, g->nr_conventional - 1);
  n = snprintf (buf, len, "zoned=host-managed zone-size=%" PRIu64
                " zone-capacity=%" PRIu64 " zones=%" PRIu64
                " conventional=%s max-open=0 max-active=0 block-size=%"
                PRIu32 " disk-id=%s", g->zone_size, g->zone_capacity,
                g->nr_zones, conv, g->block_size, g->disk_id);
  if (g->key_check[0] && n > 0 && (size_t) n < len)
    snprintf (buf + n, len - n, " key-check=%s", g->key_check);
}

static bool
aligned (const struct fake_server *s, uint64_t off, uint64_t len)
{
  return off % s->shape.block_size == 0 && len % s->shape.block_size == 0;
}

/* A write (DATA; NULL: zeroes) of LEN at OFF in sequential zone Z:
 * only at the WP, waiting for it while it is behind.  Called locked.
 */
static int
write_at_wp (struct fake_server *s, struct conn *c, uint64_t z, uint64_t off,
             uint32_t len, const void *data)
{
  struct timespec until;

  if (off + len > zone_start (s, z + 1) || off + len > capend (s, z))
    return ENOSPC;
  clock_gettime (CLOCK_REALTIME, &until);
  until.tv_sec += GATE_MS / 1000;
  while (s->wp[z] < off && !c->killed &&
         pthread_cond_timedwait (&s->cond, &s->lock, &until) == 0)
    ;
  if (c->killed)
    return -1;
  if (off != s->wp[z])
    return EIO;                 /* below the WP, or the gate timed out */
  if (data)
    memcpy (s->data + off, data, len);
  else
    memset (s->data + off, 0, len);
  s->wp[z] = off + len;
  pthread_cond_broadcast (&s->cond);
  return 0;
}

static int
do_write (struct fake_server *s, struct conn *c, uint64_t off, uint32_t len,
          const void *data)
{
  uint64_t z = off / s->shape.zone_size;

  if (!aligned (s, off, len) || off + len > s->size)
    return EINVAL;
  if (!conventional (s, z))
    return write_at_wp (s, c, z, off, len, data);
  if (data)
    memcpy (s->data + off, data, len);
  else
    memset (s->data + off, 0, len);
  return 0;
}

/* Trim: whole sequential zones, reset. */
static int
do_trim (struct fake_server *s, uint64_t off, uint32_t len)
{
  uint64_t z;

  if (off % s->shape.zone_size || len % s->shape.zone_size ||
      off + len > s->size)
    return EINVAL;
  for (z = off / s->shape.zone_size; z < (off + len) / s->shape.zone_size;
       z++) {
    memset (s->data + zone_start (s, z), 0, s->shape.zone_size);
    if (!conventional (s, z))
      s->wp[z] = zone_start (s, z);
  }
  pthread_cond_broadcast (&s->cond);
  return 0;
}

/* Block status from OFF for up to LEN bytes, as the plugin says it. */
static void
extents (struct fake_server *s, uint64_t off, uint32_t len, bool one,
         struct out *o)
{
  uint64_t end = off + len < s->size ? off + len : s->size;

  while (off < end) {
    uint64_t z = off / s->shape.zone_size, ze = zone_start (s, z + 1);
    uint64_t wp = conventional (s, z) ? ze : s->wp[z];

    if (off < wp) {
      put32 (o, wp - off);
      put32 (o, 0);
    }
    if (wp < ze) {
      put32 (o, ze - (off > wp ? off : wp));
      put32 (o, STATE_HOLE_ZERO);
    }
    off = ze;
    if (one)
      break;
  }
}

/* ---- Faults and the log --------------------------------------------- */

static enum fake_action
match_fault (struct fake_server *s, const struct request *r,
             uint32_t *partial)
{
  size_t i;

  for (i = 0; i < s->nr_faults; i++) {
    struct fault *f = &s->faults[i];

    if (!f->used && f->type == r->type &&
        (f->offset == FAKE_ANY_OFFSET || f->offset == r->offset)) {
      f->used = true;
      *partial = f->partial;
      return f->action;
    }
  }
  return FAKE_SERVE;
}

static void
log_cmd (struct fake_server *s, const struct conn *c, const struct request *r,
         enum fake_action action)
{
  if (s->nr_log == s->log_cap) {
    s->log_cap = s->log_cap * 2 + 64;
    s->log = realloc (s->log, s->log_cap * sizeof *s->log);
    if (!s->log)
      abort ();
  }
  s->log[s->nr_log++] = (struct fake_cmd) {
    .generation = c->generation, .conn = c->id, .type = r->type,
    .flags = r->flags, .offset = r->offset, .length = r->length,
    .action = action,
  };
}

/* Every connection ends, as when the server process dies.  Locked. */
static void
die_locked (struct fake_server *s)
{
  struct conn *c;

  s->generation++;
  if (s->stay_down) {
    s->down = true;
    s->stay_down = false;
  }
  for (c = s->conns; c; c = c->next)
    if (!c->closed) {
      c->killed = true;
      shutdown (c->fd, SHUT_RDWR);
    }
  pthread_cond_broadcast (&s->cond);
}

/* This connection alone breaks (the network); the server lives. */
static void
cut_locked (struct fake_server *s, struct conn *c)
{
  s->generation++;
  c->killed = true;
  shutdown (c->fd, SHUT_RDWR);
  pthread_cond_broadcast (&s->cond);
}

/* ---- Commands ------------------------------------------------------- */

static void
simple_reply (struct out *o, const struct request *r, uint32_t err)
{
  put32 (o, SIMPLE_REPLY_MAGIC);
  put32 (o, err);
  put (o, &r->cookie, 8);       /* as received */
}

static void
chunk_header (struct out *o, const struct request *r, uint16_t type,
              uint32_t length)
{
  put32 (o, STRUCTURED_REPLY_MAGIC);
  put16 (o, CHUNK_DONE);
  put16 (o, type);
  put (o, &r->cookie, 8);
  put32 (o, length);
}

static void
error_chunk (struct out *o, const struct request *r, uint32_t err)
{
  chunk_header (o, r, CHUNK_ERROR, 6);
  put32 (o, err);
  put16 (o, 0);
}

/* Carry out R into the reply O; returns the NBD error, or -1 if the
 * connection was killed meanwhile.  Called locked.  PARTIAL: only that
 * much of a write lands.
 */
static int
carry_out (struct fake_server *s, struct conn *c, const struct request *r,
           uint32_t partial, struct out *o)
{
  struct out ext = { 0 };
  int err = 0;

  if (r->type != FAKE_FLUSH && r->type != FAKE_DISC &&
      r->offset + r->length > s->size)
    err = EINVAL;
  else
    switch (r->type) {
    case FAKE_READ:
      if (!c->structured) {
        simple_reply (o, r, 0);
        put (o, s->data + r->offset, r->length);
        return 0;
      }
      chunk_header (o, r, CHUNK_OFFSET_DATA, 8 + r->length);
      put64 (o, r->offset);
      put (o, s->data + r->offset, r->length);
      return 0;
    case FAKE_WRITE:
      err = do_write (s, c, r->offset, partial ? partial : r->length,
                      r->payload);
      break;
    case FAKE_ZERO:
      err = do_write (s, c, r->offset, r->length, NULL);
      break;
    case FAKE_TRIM:
      err = do_trim (s, r->offset, partial ? partial : r->length);
      break;
    case FAKE_FLUSH:
    case FAKE_DISC:
      break;
    case FAKE_BLOCK_STATUS:
      extents (s, r->offset, r->length, r->flags & FLAG_REQ_ONE, &ext);
      chunk_header (o, r, CHUNK_BLOCK_STATUS, 4 + ext.len);
      put32 (o, META_ID);
      put (o, ext.b, ext.len);
      free (ext.b);
      return 0;
    default:
      err = EINVAL;
    }
  if (err == -1)
    return -1;
  if (err && c->structured &&
      (r->type == FAKE_READ || r->type == FAKE_BLOCK_STATUS))
    error_chunk (o, r, err);
  else
    simple_reply (o, r, err);
  return err;
}

static struct request *
copy_request (const struct request *r)
{
  struct request *late = malloc (sizeof *late);

  if (!late)
    abort ();
  *late = *r;
  late->next = NULL;
  late->payload = NULL;
  if (r->payload) {
    late->payload = malloc (r->length);
    if (!late->payload)
      abort ();
    memcpy (late->payload, r->payload, r->length);
  }
  return late;
}

/* The late write lands now, as the old server finally does it (on a
 * connection that is gone: its answer goes nowhere).  Locked.
 */
static void
do_late (struct fake_server *s)
{
  struct request *r = s->late;
  struct conn gone = { .s = s };

  s->late = NULL;
  do_write (s, &gone, r->offset, r->length, r->payload);
  free (r->payload);
  free (r);
}

/* One command: its fault, if any, decides.  0 to go on, -1 when the
 * connection ends.
 */
static int
process (struct conn *c, const struct request *r)
{
  struct fake_server *s = c->s;
  struct out o = { 0 };
  enum fake_action action;
  uint32_t partial = 0;
  int ret = 0;

  pthread_mutex_lock (&s->lock);
  if (c->killed) {
    pthread_mutex_unlock (&s->lock);
    return -1;
  }
  action = match_fault (s, r, &partial);
  log_cmd (s, c, r, action);
  if (s->late && s->late->offset == r->offset)
    do_late (s);
  if (action == FAKE_LATE && r->type == FAKE_WRITE && !s->late) {
    s->late = copy_request (r);
    cut_locked (s, c);
    pthread_mutex_unlock (&s->lock);
    return -1;
  }
  if (action == FAKE_DIE_BEFORE) {
    die_locked (s);
    pthread_mutex_unlock (&s->lock);
    return -1;
  }
  if (carry_out (s, c, r, action == FAKE_DIE_PARTIAL ? partial : 0,
                 &o) == -1)
    ret = -1;
  else if (action == FAKE_DIE_AFTER || action == FAKE_DIE_PARTIAL) {
    die_locked (s);
    ret = -1;
  }
  else if (action == FAKE_CUT_REPLY) {
    cut_locked (s, c);
    ret = -1;
  }
  pthread_mutex_unlock (&s->lock);
  if (ret == 0 && action == FAKE_HALF_REPLY) {
    send_out (c->fd, &o, true);
    pthread_mutex_lock (&s->lock);
    cut_locked (s, c);
    pthread_mutex_unlock (&s->lock);
    return -1;
  }
  if (ret == 0 && action != FAKE_SWALLOW && send_out (c->fd, &o, false) == -1)
    ret = -1;
  free (o.b);
  return r->type == FAKE_DISC ? -1 : ret;
}

static struct request *
read_request (struct conn *c)
{
  struct {
    uint32_t magic;
    uint16_t flags, type;
    uint64_t cookie, offset;
    uint32_t length;
  } __attribute__ ((packed)) h;
  struct request *r;

  if (read_full (c->fd, &h, sizeof h) == -1 ||
      be32toh (h.magic) != REQUEST_MAGIC)
    return NULL;
  r = calloc (1, sizeof *r);
  if (!r)
    abort ();
  r->flags = be16toh (h.flags);
  r->type = be16toh (h.type);
  r->cookie = h.cookie;
  r->offset = be64toh (h.offset);
  r->length = be32toh (h.length);
  if (r->type == FAKE_WRITE) {
    if (r->length > MAX_REQUEST || !(r->payload = malloc (r->length)) ||
        read_full (c->fd, r->payload, r->length) == -1) {
      free (r->payload);
      free (r);
      return NULL;
    }
  }
  return r;
}

static void
free_request (struct request *r)
{
  free (r->payload);
  free (r);
}

/* The next held command, once the server is no longer paused. */
static struct request *
next_held (struct conn *c)
{
  struct fake_server *s = c->s;
  struct request *r = NULL;

  pthread_mutex_lock (&s->lock);
  if (!s->paused && c->held) {
    r = c->held;
    c->held = r->next;
    if (!c->held)
      c->held_tail = NULL;
    s->held[r->type & 7]--;
  }
  pthread_mutex_unlock (&s->lock);
  return r;
}

/* Keep R for later if the server is paused (or holds others). */
static bool
hold (struct conn *c, struct request *r)
{
  struct fake_server *s = c->s;
  bool held = false;

  pthread_mutex_lock (&s->lock);
  if (s->paused || c->held) {
    r->next = NULL;
    if (c->held_tail)
      c->held_tail->next = r;
    else
      c->held = r;
    c->held_tail = r;
    s->held[r->type & 7]++;
    pthread_cond_broadcast (&s->cond);
    held = true;
  }
  pthread_mutex_unlock (&s->lock);
  return held;
}

static void
transmission (struct conn *c)
{
  for (;;) {
    struct pollfd p = { .fd = c->fd, .events = POLLIN };
    struct request *r = next_held (c);

    if (r) {
      int end = process (c, r);

      free_request (r);
      if (end)
        return;
      continue;
    }
    if (poll (&p, 1, 10) == 0)
      continue;
    r = read_request (c);
    if (!r)
      return;
    if (hold (c, r))
      continue;
    if (process (c, r)) {
      free_request (r);
      return;
    }
    free_request (r);
  }
}

/* ---- The handshake -------------------------------------------------- */

static int
opt_reply (int fd, uint32_t opt, uint32_t type, const void *data,
           uint32_t len)
{
  struct out o = { 0 };

  put64 (&o, OPT_REPLY_MAGIC);
  put32 (&o, opt);
  put32 (&o, type);
  put32 (&o, len);
  if (len)
    put (&o, data, len);
  return send_out (fd, &o, false);
}

static int
info_reply (int fd, uint32_t opt, struct out *info)
{
  int r = opt_reply (fd, opt, REP_INFO, info->b, info->len);

  free (info->b);
  memset (info, 0, sizeof *info);
  return r;
}

/* NBD_OPT_GO or NBD_OPT_INFO: the export, its name, description and
 * block sizes.
 */
static int
opt_go (struct conn *c, uint32_t opt)
{
  struct fake_server *s = c->s;
  struct out info = { 0 };
  char desc[1024];
  uint64_t size;
  uint32_t bs;

  pthread_mutex_lock (&s->lock);
  describe (s, desc, sizeof desc);
  size = s->size;
  bs = s->shape.block_size;
  pthread_mutex_unlock (&s->lock);
  put16 (&info, INFO_EXPORT);
  put64 (&info, size);
  put16 (&info, TRANSMISSION_FLAGS);
  if (info_reply (c->fd, opt, &info) == -1)
    return -1;
  put16 (&info, INFO_NAME);
  if (info_reply (c->fd, opt, &info) == -1)
    return -1;
  put16 (&info, INFO_DESCRIPTION);
  put (&info, desc, strlen (desc));
  if (info_reply (c->fd, opt, &info) == -1)
    return -1;
  put16 (&info, INFO_BLOCK_SIZE);
  put32 (&info, bs);
  put32 (&info, bs);
  put32 (&info, MAX_REQUEST);
  if (info_reply (c->fd, opt, &info) == -1)
    return -1;
  return opt_reply (c->fd, opt, REP_ACK, NULL, 0);
}

static uint32_t
get32 (const uint8_t *p)
{
  uint32_t v;

  memcpy (&v, p, 4);
  return be32toh (v);
}

/* NBD_OPT_SET/LIST_META_CONTEXT: base:allocation only. */
static int
opt_meta (struct conn *c, uint32_t opt, const uint8_t *data, uint32_t len)
{
  static const char want[] = "base:allocation";
  uint32_t pos, nq, i;

  if (!c->structured)
    return opt_reply (c->fd, opt, REP_ERR_INVALID, NULL, 0);
  if (len < 4 || (pos = 4 + get32 (data)) + 4 > len)
    return opt_reply (c->fd, opt, REP_ERR_INVALID, NULL, 0);
  nq = get32 (data + pos);
  pos += 4;
  for (i = 0; i < nq && pos + 4 <= len; i++) {
    uint32_t ql = get32 (data + pos);

    pos += 4;
    if (pos + ql > len)
      break;
    if (ql == strlen (want) && memcmp (data + pos, want, ql) == 0) {
      struct out o = { 0 };
      int r;

      put32 (&o, META_ID);
      put (&o, want, ql);
      r = opt_reply (c->fd, opt, REP_META_CONTEXT, o.b, o.len);
      free (o.b);
      if (r == -1)
        return -1;
    }
    pos += ql;
  }
  return opt_reply (c->fd, opt, REP_ACK, NULL, 0);
}

/* 0 once in transmission, -1 if the connection ends first. */
static int
handshake (struct conn *c)
{
  struct out o = { 0 };
  uint32_t client_flags;

  put64 (&o, NBDMAGIC);
  put64 (&o, IHAVEOPT);
  put16 (&o, 3);                /* FIXED_NEWSTYLE, NO_ZEROES */
  if (send_out (c->fd, &o, false) == -1 ||
      read_full (c->fd, &client_flags, 4) == -1)
    return -1;
  for (;;) {
    struct {
      uint64_t magic;
      uint32_t opt, len;
    } __attribute__ ((packed)) h;
    uint8_t *data;
    uint32_t opt, len;
    int r;

    if (read_full (c->fd, &h, sizeof h) == -1 ||
        be64toh (h.magic) != IHAVEOPT)
      return -1;
    opt = be32toh (h.opt);
    len = be32toh (h.len);
    if (len > 65536 || !(data = malloc (len + 1)) ||
        read_full (c->fd, data, len) == -1)
      return -1;
    switch (opt) {
    case OPT_GO:
    case OPT_INFO:
      r = opt_go (c, opt);
      free (data);
      if (r == -1)
        return -1;
      if (opt == OPT_GO)
        return 0;
      continue;
    case OPT_STRUCTURED_REPLY:
      c->structured = true;
      r = opt_reply (c->fd, opt, REP_ACK, NULL, 0);
      break;
    case OPT_SET_META_CONTEXT:
    case OPT_LIST_META_CONTEXT:
      r = opt_meta (c, opt, data, len);
      break;
    case OPT_ABORT:
    case OPT_EXPORT_NAME:
      r = -1;
      break;
    default:
      r = opt_reply (c->fd, opt, REP_ERR_UNSUP, NULL, 0);
    }
    free (data);
    if (r == -1)
      return -1;
  }
}

static void *
conn_thread (void *arg)
{
  struct conn *c = arg;
  struct fake_server *s = c->s;
  struct request *r;

  if (handshake (c) == 0)
    transmission (c);
  pthread_mutex_lock (&s->lock);
  while ((r = c->held)) {
    c->held = r->next;
    s->held[r->type & 7]--;
    free_request (r);
  }
  c->held_tail = NULL;
  close (c->fd);
  c->closed = true;
  pthread_cond_broadcast (&s->cond);
  pthread_mutex_unlock (&s->lock);
  return NULL;
}

static void
accept_one (struct fake_server *s)
{
  int fd = accept (s->listen_fd, NULL, NULL);
  struct conn *c;

  if (fd == -1)
    return;
  fcntl (fd, F_SETFD, FD_CLOEXEC);
  pthread_mutex_lock (&s->lock);
  if (s->down || !(c = calloc (1, sizeof *c))) {
    close (fd);                 /* a server that is not there yet */
    pthread_mutex_unlock (&s->lock);
    return;
  }
  c->s = s;
  c->fd = fd;
  c->id = s->next_conn++;
  c->generation = s->generation;
  if (pthread_create (&c->thread, NULL, conn_thread, c) != 0) {
    close (fd);
    free (c);
  }
  else {
    c->next = s->conns;
    s->conns = c;
  }
  pthread_mutex_unlock (&s->lock);
}

static void *
acceptor_thread (void *arg)
{
  struct fake_server *s = arg;

  while (!__atomic_load_n (&s->stopping, __ATOMIC_RELAXED)) {
    struct pollfd p = { .fd = s->listen_fd, .events = POLLIN };

    if (poll (&p, 1, 20) == 1)
      accept_one (s);
  }
  return NULL;
}

/* ---- The interface -------------------------------------------------- */

struct fake_server *
fake_server_start (const char *dir, const struct fake_shape *shape)
{
  struct fake_server *s = calloc (1, sizeof *s);
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  static int serial;
  uint64_t z;

  if (!s)
    abort ();
  pthread_mutex_init (&s->lock, NULL);
  pthread_cond_init (&s->cond, NULL);
  s->shape = *shape;
  s->size = shape->zone_size * shape->nr_zones;
  s->data = calloc (1, s->size);
  s->wp = calloc (shape->nr_zones, sizeof *s->wp);
  if (!s->data || !s->wp)
    abort ();
  for (z = 0; z < shape->nr_zones; z++)
    s->wp[z] = zone_start (s, z);
  snprintf (s->path, sizeof s->path, "%s/fake%ld-%d.sock", dir,
            (long) getpid (), serial++);
  snprintf (s->uri, sizeof s->uri, "nbd+unix:///?socket=%s", s->path);
  memcpy (addr.sun_path, s->path, strlen (s->path) + 1);
  unlink (s->path);
  s->listen_fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s->listen_fd == -1 ||
      bind (s->listen_fd, (struct sockaddr *) &addr, sizeof addr) == -1 ||
      listen (s->listen_fd, 16) == -1 ||
      pthread_create (&s->acceptor, NULL, acceptor_thread, s) != 0) {
    perror ("fake server");
    abort ();
  }
  return s;
}

void
fake_server_stop (struct fake_server *s)
{
  struct conn *c, *next;

  __atomic_store_n (&s->stopping, true, __ATOMIC_RELAXED);
  pthread_join (s->acceptor, NULL);
  close (s->listen_fd);
  unlink (s->path);
  pthread_mutex_lock (&s->lock);
  for (c = s->conns; c; c = c->next)
    if (!c->closed) {
      c->killed = true;
      shutdown (c->fd, SHUT_RDWR);
    }
  s->paused = false;
  pthread_cond_broadcast (&s->cond);
  pthread_mutex_unlock (&s->lock);
  for (c = s->conns; c; c = next) {
    next = c->next;
    pthread_join (c->thread, NULL);
    free (c);
  }
  if (s->late) {
    free (s->late->payload);
    free (s->late);
  }
  free (s->data);
  free (s->wp);
  free (s->log);
  free (s);
}

const char *
fake_server_uri (const struct fake_server *s)
{
  return s->uri;
}

void
fake_server_fault (struct fake_server *s, uint16_t type, uint64_t offset,
                   enum fake_action action, uint32_t partial)
{
  pthread_mutex_lock (&s->lock);
  if (s->nr_faults < sizeof s->faults / sizeof s->faults[0])
    s->faults[s->nr_faults++] = (struct fault) {
      .type = type, .offset = offset, .action = action, .partial = partial,
    };
  pthread_mutex_unlock (&s->lock);
}

void
fake_server_die (struct fake_server *s)
{
  pthread_mutex_lock (&s->lock);
  die_locked (s);
  pthread_mutex_unlock (&s->lock);
}

void
fake_server_stay_down (struct fake_server *s)
{
  pthread_mutex_lock (&s->lock);
  s->stay_down = true;
  pthread_mutex_unlock (&s->lock);
}

static void
deadline (struct timespec *ts, unsigned ms)
{
  clock_gettime (CLOCK_REALTIME, ts);
  ts->tv_sec += ms / 1000;
  ts->tv_nsec += (long) (ms % 1000) * 1000000;
  if (ts->tv_nsec >= 1000000000) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000;
  }
}

bool
fake_server_wait_down (struct fake_server *s, unsigned ms)
{
  struct timespec until;
  bool down;

  deadline (&until, ms);
  pthread_mutex_lock (&s->lock);
  while (!s->down &&
         pthread_cond_timedwait (&s->cond, &s->lock, &until) == 0)
    ;
  down = s->down;
  pthread_mutex_unlock (&s->lock);
  return down;
}

void
fake_server_come_back (struct fake_server *s)
{
  pthread_mutex_lock (&s->lock);
  s->down = false;
  pthread_mutex_unlock (&s->lock);
}

void
fake_server_set_identity (struct fake_server *s, const char *disk_id,
                          const char *key_check)
{
  pthread_mutex_lock (&s->lock);
  if (disk_id)
    snprintf (s->shape.disk_id, sizeof s->shape.disk_id, "%s", disk_id);
  if (key_check)
    snprintf (s->shape.key_check, sizeof s->shape.key_check, "%s",
              key_check);
  pthread_mutex_unlock (&s->lock);
}

void
fake_server_set_capacity (struct fake_server *s, uint64_t cap)
{
  pthread_mutex_lock (&s->lock);
  s->shape.zone_capacity = cap;
  pthread_mutex_unlock (&s->lock);
}

void
fake_server_set_wp (struct fake_server *s, uint64_t z, uint64_t wp)
{
  pthread_mutex_lock (&s->lock);
  if (wp < s->wp[z])
    memset (s->data + wp, 0, s->wp[z] - wp);
  else
    memset (s->data + s->wp[z], 0x5a, wp - s->wp[z]);
  s->wp[z] = wp;
  pthread_mutex_unlock (&s->lock);
}

void
fake_server_land (struct fake_server *s, uint64_t off, uint32_t len,
                  const void *data)
{
  uint64_t z = off / s->shape.zone_size;

  pthread_mutex_lock (&s->lock);
  memcpy (s->data + off, data, len);
  if (!conventional (s, z) && off + len > s->wp[z])
    s->wp[z] = off + len;
  pthread_mutex_unlock (&s->lock);
}

void
fake_server_pause (struct fake_server *s)
{
  pthread_mutex_lock (&s->lock);
  s->paused = true;
  pthread_mutex_unlock (&s->lock);
}

bool
fake_server_wait_held (struct fake_server *s, uint16_t type, unsigned n,
                       unsigned ms)
{
  struct timespec until;
  bool got;

  deadline (&until, ms);
  pthread_mutex_lock (&s->lock);
  while (s->held[type & 7] < n &&
         pthread_cond_timedwait (&s->cond, &s->lock, &until) == 0)
    ;
  got = s->held[type & 7] >= n;
  pthread_mutex_unlock (&s->lock);
  return got;
}

void
fake_server_release (struct fake_server *s)
{
  pthread_mutex_lock (&s->lock);
  s->paused = false;
  pthread_mutex_unlock (&s->lock);
}

void
fake_server_read (struct fake_server *s, uint64_t off, uint32_t len,
                  void *buf)
{
  pthread_mutex_lock (&s->lock);
  memcpy (buf, s->data + off, len);
  pthread_mutex_unlock (&s->lock);
}

uint64_t
fake_server_wp (struct fake_server *s, uint64_t z)
{
  uint64_t wp;

  pthread_mutex_lock (&s->lock);
  wp = s->wp[z];
  pthread_mutex_unlock (&s->lock);
  return wp;
}

struct fake_cmd *
fake_server_log (struct fake_server *s, size_t *n)
{
  struct fake_cmd *copy;

  pthread_mutex_lock (&s->lock);
  *n = s->nr_log;
  copy = malloc ((s->nr_log + 1) * sizeof *copy);
  if (!copy)
    abort ();
  memcpy (copy, s->log, s->nr_log * sizeof *copy);
  pthread_mutex_unlock (&s->lock);
  return copy;
}

unsigned
fake_server_generation (struct fake_server *s)
{
  unsigned g;

  pthread_mutex_lock (&s->lock);
  g = s->generation;
  pthread_mutex_unlock (&s->lock);
  return g;
}

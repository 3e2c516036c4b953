/* Unit tests of the zbd plugin's zone table and write gate (gate.c),
 * against a fake zoned device that can be slow, fail a write (after
 * taking part of it), turn a zone read-only or offline, lose a reset,
 * and answer zone queries slowly.  Every rule of the gate is a test:
 *
 *   - a write at the WP runs, the WP advances, the device sees
 *     sequential writes only, at most one write per zone at a time;
 *   - a write ahead of the WP waits for the gap and then runs in order;
 *   - a gap nobody fills fails with EIO after the timeout of no
 *     progress, with a log line naming the zone, offset and the WP;
 *   - the timeout never runs while a write is at the device and starts
 *     again when the WP moves (a slow device fails no in-order write);
 *   - below the WP: EIO; past the capacity: ENOSPC; read-only/offline
 *     zones: EIO; all without touching the device;
 *   - different zones run in parallel;
 *   - a failed write or zone operation re-reads the zone from the
 *     device, without the table's lock (other zones keep working);
 *   - reset and finish wait for the write at the device; emulated open
 *     and active limits follow null_blk.
 *
 * No nbdkit here: the log functions the gate calls are defined below
 * and keep the last error line for the assertions.
 */

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "gate.h"

#define NZ 8                    /* zones; zone 0 is conventional */
#define ZS 65536                /* zone size */
#define B 4096                  /* one write */
#define SMALL_CAP_ZONE 7        /* its capacity is ZS / 2 */

static int failures;
#define CHECK(cond, ...) do {                                           \
    if (!(cond)) {                                                      \
      fprintf (stderr, "FAIL (%s:%d): ", __func__, __LINE__);           \
      fprintf (stderr, __VA_ARGS__);                                    \
      fprintf (stderr, "\n");                                           \
      failures++;                                                       \
    }                                                                   \
  } while (0)

/* ---------------------------------------------------------------- */
/* The log, as nbdkit would print it */

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char last_error[512];
static int nr_errors;
static bool verbose;

void
nbdkit_error (const char *fs, ...)
{
  va_list args;
  char buf[512];

  va_start (args, fs);
  vsnprintf (buf, sizeof buf, fs, args);
  va_end (args);
  pthread_mutex_lock (&log_lock);
  strcpy (last_error, buf);
  nr_errors++;
  pthread_mutex_unlock (&log_lock);
  if (verbose)
    fprintf (stderr, "error: %s\n", buf);
}

void
nbdkit_debug (const char *fs, ...)
{
  va_list args;

  if (!verbose)
    return;
  va_start (args, fs);
  fprintf (stderr, "debug: ");
  vfprintf (stderr, fs, args);
  fprintf (stderr, "\n");
  va_end (args);
}

static void
last_error_line (char *out, size_t n)
{
  pthread_mutex_lock (&log_lock);
  snprintf (out, n, "%s", last_error);
  pthread_mutex_unlock (&log_lock);
}

/* ---------------------------------------------------------------- */
/* The fake device */

struct fake {
  pthread_mutex_t lock;
  unsigned char data[NZ * ZS];
  uint64_t wp[NZ];              /* the device's truth */
  enum zone_cond cond[NZ];
  int write_delay_ms, query_delay_ms;
  uint64_t fail_at;             /* a write here fails (UINT64_MAX: none) */
  uint32_t fail_taken;          /* ... after the device took this much */
  bool fail_reset;              /* the next reset is lost */
  int inflight[NZ], max_inflight[NZ], inflight_all, max_inflight_all;
  int writes, queries, violations;
};
static struct fake dev;

static void
sleep_ms (int ms)
{
  struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

  while (nanosleep (&ts, &ts) == -1 && errno == EINTR)
    ;
}

static double
now_s (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int
fake_write (void *opaque, const void *buf, uint32_t n, uint64_t off)
{
  struct fake *f = opaque;
  int zi = off / ZS, e = 0;

  pthread_mutex_lock (&f->lock);
  f->writes++;
  if (++f->inflight[zi] > f->max_inflight[zi])
    f->max_inflight[zi] = f->inflight[zi];
  if (++f->inflight_all > f->max_inflight_all)
    f->max_inflight_all = f->inflight_all;
  pthread_mutex_unlock (&f->lock);

  sleep_ms (f->write_delay_ms);

  pthread_mutex_lock (&f->lock);
  if (zi == 0)
    memcpy (f->data + off, buf, n);
  else if (f->cond[zi] == COND_READONLY || f->cond[zi] == COND_OFFLINE)
    e = EIO;
  else if (off != f->wp[zi]) {
    f->violations++;            /* a real device fails it too */
    e = EIO;
  }
  else if (off == f->fail_at) {
    memcpy (f->data + off, buf, f->fail_taken);
    f->wp[zi] += f->fail_taken;
    f->fail_at = UINT64_MAX;
    e = EIO;
  }
  else {
    memcpy (f->data + off, buf, n);
    f->wp[zi] += n;
    f->cond[zi] = f->wp[zi] == zi * (uint64_t) ZS + (zi == SMALL_CAP_ZONE
                                                      ? ZS / 2 : ZS)
      ? COND_FULL : COND_IMP_OPEN;
  }
  f->inflight[zi]--;
  f->inflight_all--;
  pthread_mutex_unlock (&f->lock);
  errno = e;
  return e ? -1 : 0;
}

static int
fake_discard (void *opaque, uint64_t n, uint64_t off)
{
  struct fake *f = opaque;

  pthread_mutex_lock (&f->lock);
  memset (f->data + off, 0, n);
  pthread_mutex_unlock (&f->lock);
  return 0;
}

static int
fake_reset (void *opaque, const struct zone *z)
{
  struct fake *f = opaque;
  int zi = z->start / ZS, r = 0;

  pthread_mutex_lock (&f->lock);
  if (f->inflight[zi])
    f->violations++;            /* a zone op during a write */
  if (f->fail_reset) {
    f->fail_reset = false;
    errno = EIO;
    r = -1;
  }
  else {
    f->wp[zi] = z->start;
    f->cond[zi] = COND_EMPTY;
    memset (f->data + z->start, 0xa5, ZS);      /* need not read as 0 */
  }
  pthread_mutex_unlock (&f->lock);
  return r;
}

static int
fake_finish (void *opaque, const struct zone *z)
{
  struct fake *f = opaque;
  int zi = z->start / ZS;

  pthread_mutex_lock (&f->lock);
  f->wp[zi] = zone_cap_end (z);
  f->cond[zi] = COND_FULL;
  pthread_mutex_unlock (&f->lock);
  return 0;
}

static int
fake_query (void *opaque, uint64_t start, struct zone *out)
{
  struct fake *f = opaque;
  int zi = start / ZS;

  sleep_ms (f->query_delay_ms);
  pthread_mutex_lock (&f->lock);
  f->queries++;
  out->start = start;
  out->len = ZS;
  out->cap = zi == SMALL_CAP_ZONE ? ZS / 2 : ZS;
  out->conventional = zi == 0;
  out->cond = f->cond[zi];
  out->wp = f->wp[zi];
  pthread_mutex_unlock (&f->lock);
  return 0;
}

static const struct zone_ops device_ops = {
  .write = fake_write, .discard = fake_discard, .reset = fake_reset,
  .finish = fake_finish, .query = fake_query,
};
static const struct zone_ops emulated_ops = {
  .write = fake_write, .discard = fake_discard,
};

static struct zone_table t;  /* the table under test */

/* A fresh device and table: NZ zones, zone 0 conventional. */
static void
setup (bool emulated, uint64_t timeout_ms, uint64_t max_open,
       uint64_t max_active)
{
  struct gate_config c = {
    .reorder_timeout_ms = timeout_ms, .emulated = emulated,
    .max_open = max_open, .max_active = max_active, .debug = verbose,
  };
  int i;

  zt_free (&t);
  memset (&dev, 0, sizeof dev);
  pthread_mutex_init (&dev.lock, NULL);
  dev.fail_at = UINT64_MAX;
  if (zt_init (&t, NZ, ZS) == -1) {
    perror ("zt_init");
    exit (1);
  }
  for (i = 0; i < NZ; i++) {
    dev.wp[i] = i * (uint64_t) ZS;
    dev.cond[i] = i == 0 ? COND_NOT_WP : COND_EMPTY;
  }
  t.zones[0].conventional = true;
  t.zones[0].cond = COND_NOT_WP;
  t.zones[SMALL_CAP_ZONE].cap = ZS / 2;
  zt_start (&t, &c, emulated ? &emulated_ops : &device_ops, &dev);
  pthread_mutex_lock (&log_lock);
  last_error[0] = '\0';
  nr_errors = 0;
  pthread_mutex_unlock (&log_lock);
}

static uint64_t
wp_of (int zi)
{
  return zt_snapshot (&t, &t.zones[zi]).wp;
}

static enum zone_cond
cond_of (int zi)
{
  return zt_snapshot (&t, &t.zones[zi]).cond;
}

/* ---------------------------------------------------------------- */
/* Writes in threads */

struct job {
  pthread_t th;
  uint64_t offset;
  uint32_t n;
  int delay_ms;                 /* before submitting */
  unsigned char buf[B];
  int r, err;
  double started, ended;
};

static void *
job_run (void *arg)
{
  struct job *j = arg;

  sleep_ms (j->delay_ms);
  j->started = now_s ();
  j->r = zt_write (&t, zt_zone_of (&t, j->offset), j->buf, j->n, j->offset);
  j->err = j->r ? errno : 0;
  j->ended = now_s ();
  return NULL;
}

static void
job_start (struct job *j, uint64_t offset, int delay_ms)
{
  j->offset = offset;
  j->n = B;
  j->delay_ms = delay_ms;
  memset (j->buf, (int) (offset / B) & 0xff, B);
  pthread_create (&j->th, NULL, job_run, j);
}

static void
job_wait (struct job *j)
{
  pthread_join (j->th, NULL);
}

static int
write1 (uint64_t offset)
{
  struct job j;

  job_start (&j, offset, 0);
  job_wait (&j);
  errno = j.err;
  return j.r;
}

static bool
data_is (uint64_t offset, uint32_t n, int byte)
{
  uint32_t i;

  for (i = 0; i < n; i++)
    if (dev.data[offset + i] != byte)
      return false;
  return true;
}

/* ---------------------------------------------------------------- */
/* The rules */

static void
test_write_at_wp (void)
{
  uint64_t z = 1 * ZS;

  setup (false, 1000, 0, 0);
  CHECK (write1 (z) == 0, "write at the WP failed: %m");
  CHECK (write1 (z + B) == 0, "second write at the WP failed: %m");
  CHECK (wp_of (1) == z + 2 * B, "WP %" PRIu64 " after two writes",
         wp_of (1));
  CHECK (data_is (z + B, B, (int) ((z + B) / B) & 0xff), "data on the device");
  CHECK (dev.violations == 0, "the device saw a write off its WP");
}

static void
test_refusals (void)
{
  uint64_t z = 2 * ZS, z7 = SMALL_CAP_ZONE * (uint64_t) ZS;
  char line[512];

  setup (false, 1000, 0, 0);
  write1 (z);
  write1 (z + B);
  CHECK (write1 (z) == -1 && errno == EIO, "below the WP: want EIO, got %m");
  last_error_line (line, sizeof line);
  CHECK (strstr (line, "below the write pointer 139264 of zone 2"),
         "log line: %s", line);
  CHECK (write1 (z7 + ZS / 2) == -1 && errno == ENOSPC,
         "past the capacity: want ENOSPC, got %m");
  CHECK (dev.writes == 2, "refused writes reached the device (%d writes)",
         dev.writes);
}

static void
test_reorder (void)
{
  uint64_t z = 3 * ZS;
  struct job j[4];
  int i;

  setup (false, 2000, 0, 0);
  /* Submitted in the order 3, 1, 2, 0. */
  job_start (&j[3], z + 3 * B, 0);
  job_start (&j[1], z + 1 * B, 30);
  job_start (&j[2], z + 2 * B, 60);
  job_start (&j[0], z, 150);
  for (i = 0; i < 4; i++) {
    job_wait (&j[i]);
    CHECK (j[i].r == 0, "reordered write %d failed: %s", i,
           strerror (j[i].err));
  }
  CHECK (wp_of (3) == z + 4 * B, "WP after reordered writes");
  CHECK (dev.violations == 0, "the device saw a write off its WP");
  CHECK (dev.max_inflight[3] == 1, "%d writes of one zone at the device",
         dev.max_inflight[3]);
  /* Each waiting write is woken when the WP reaches it, not when its
   * timeout (2 s) lets it look again.
   */
  CHECK (j[3].ended - j[0].started < 1.0, "the reordered writes ended "
         "%.2fs after the gap was filled: waiting writes were not woken",
         j[3].ended - j[0].started);
}

static void
test_gap_timeout (void)
{
  uint64_t z = 1 * ZS;
  struct job j;
  char line[512];
  double el;

  setup (false, 300, 0, 0);
  write1 (z);
  job_start (&j, z + 2 * B, 0);
  job_wait (&j);
  el = j.ended - j.started;
  CHECK (j.r == -1 && j.err == EIO, "gap write: want EIO, got %s",
         strerror (j.err));
  CHECK (el >= 0.29 && el < 1.0, "gap write failed after %.2fs, timeout 0.3s",
         el);
  last_error_line (line, sizeof line);
  CHECK (strstr (line, "write at 73728 waited 300 ms for zone 1 whose write "
                 "pointer stayed at 69632 (reorder-timeout): EIO"),
         "log line: %s", line);
  CHECK (wp_of (1) == z + B, "a timed-out write moved the WP");
}

/* Defect: the deadline was set once, so in-order writes queued behind
 * a slow device failed although the WP kept moving.
 */
static void
test_slow_device_in_order (void)
{
  uint64_t z = 4 * ZS;
  struct job j[3];
  int i;

  setup (false, 300, 0, 0);
  dev.write_delay_ms = 200;     /* each write 0.2 s, 0.6 s in all */
  for (i = 0; i < 3; i++)
    job_start (&j[i], z + i * B, i * 10);
  for (i = 0; i < 3; i++) {
    job_wait (&j[i]);
    CHECK (j[i].r == 0, "in-order write %d on a slow device failed after "
           "%.2fs: %s", i, j[i].ended - j[i].started, strerror (j[i].err));
  }
  /* A write at the device longer than the timeout. */
  dev.write_delay_ms = 500;
  for (i = 0; i < 2; i++)
    job_start (&j[i], z + (3 + i) * B, i * 10);
  for (i = 0; i < 2; i++) {
    job_wait (&j[i]);
    CHECK (j[i].r == 0, "write behind a 0.5 s write (timeout 0.3 s) failed: "
           "%s", strerror (j[i].err));
  }
  CHECK (wp_of (4) == z + 5 * B, "WP after slow writes");
}

/* The gap's clock starts when the WP last moved. */
static void
test_gap_after_progress (void)
{
  uint64_t z = 5 * ZS;
  struct job slow, gap;
  double el;

  setup (false, 300, 0, 0);
  dev.write_delay_ms = 200;
  job_start (&slow, z, 0);
  job_start (&gap, z + 2 * B, 20);
  job_wait (&slow);
  job_wait (&gap);
  el = gap.ended - slow.started;
  CHECK (slow.r == 0, "write at the WP failed");
  CHECK (gap.r == -1 && gap.err == EIO, "gap write: want EIO");
  CHECK (el >= 0.49 && el < 1.2, "gap write failed %.2fs after the slow "
         "write began (it ended at 0.2 s, timeout 0.3 s)", el);
}

static void
test_zones_in_parallel (void)
{
  struct job j[4];
  double t0 = now_s (), el;
  int i;

  setup (false, 2000, 0, 0);
  dev.write_delay_ms = 200;
  for (i = 0; i < 4; i++)
    job_start (&j[i], (1 + i) * (uint64_t) ZS, 0);
  for (i = 0; i < 4; i++) {
    job_wait (&j[i]);
    CHECK (j[i].r == 0, "write %d failed", i);
  }
  el = now_s () - t0;
  CHECK (dev.max_inflight_all >= 2, "writes of different zones did not "
         "overlap at the device");
  CHECK (el < 0.6, "four zones' writes of 0.2 s took %.2fs", el);
}

/* Many writers, shuffled, in one zone: one at the device at a time,
 * sequential on the device, every byte where it belongs.
 */
static void
test_stress_one_zone (void)
{
  enum { N = 16 };
  uint64_t z = 6 * ZS;
  struct job *j = calloc (N, sizeof *j);
  int order[N], i;

  setup (false, 5000, 0, 0);
  for (i = 0; i < N; i++)
    order[i] = i;
  srand (7);
  for (i = N - 1; i > 0; i--) {
    int k = rand () % (i + 1), x = order[i];
    order[i] = order[k];
    order[k] = x;
  }
  for (i = 0; i < N; i++)
    job_start (&j[order[i]], z + order[i] * B, i);
  for (i = 0; i < N; i++) {
    job_wait (&j[i]);
    CHECK (j[i].r == 0, "write %d failed: %s", i, strerror (j[i].err));
    CHECK (data_is (z + i * B, B, (int) ((z + i * B) / B) & 0xff),
           "data of write %d", i);
  }
  CHECK (dev.max_inflight[6] == 1 && dev.violations == 0,
         "one zone: %d at the device at once, %d off-WP writes",
         dev.max_inflight[6], dev.violations);
  free (j);
}

/* A failed write re-reads the zone: the device took half of it. */
static void
test_failed_write (void)
{
  uint64_t z = 1 * ZS;

  setup (false, 300, 0, 0);
  write1 (z);
  dev.fail_at = z + B;
  dev.fail_taken = B / 2;
  CHECK (write1 (z + B) == -1 && errno == EIO, "failing write: want EIO");
  CHECK (dev.queries == 1, "the zone was not re-read after the error");
  CHECK (wp_of (1) == z + B + B / 2, "WP %" PRIu64 " after a partial failed "
         "write; the device's is %" PRIu64, wp_of (1), z + B + B / 2);
  CHECK (write1 (z + B + B / 2) == 0, "write at the re-read WP failed");
  CHECK (write1 (2 * ZS) == 0, "another zone after the error");
}

/* The device query after an error runs without the table's lock. */
static void
test_query_outside_lock (void)
{
  struct job fail, other;

  setup (false, 2000, 0, 0);
  dev.query_delay_ms = 600;
  dev.fail_at = 1 * ZS;
  job_start (&fail, 1 * ZS, 0);
  job_start (&other, 2 * ZS, 100);     /* while zone 1 is re-read */
  job_wait (&other);
  job_wait (&fail);
  CHECK (fail.r == -1, "the failing write succeeded");
  CHECK (other.ended < fail.ended - 0.2,
         "a write to another zone waited for zone 1's re-read (it ended "
         "%.2fs after the query began)", other.ended - fail.started);
}

static void
test_readonly_offline (void)
{
  char line[512];
  int writes;

  setup (false, 300, 0, 0);
  write1 (1 * ZS);
  write1 (2 * ZS);
  dev.cond[1] = COND_READONLY;
  dev.cond[2] = COND_OFFLINE;
  CHECK (write1 (1 * ZS + B) == -1 && errno == EIO, "write to a zone gone "
         "read-only: want EIO");
  CHECK (cond_of (1) == COND_READONLY, "the table did not learn read-only");
  writes = dev.writes;
  CHECK (write1 (1 * ZS + B) == -1 && errno == EIO, "read-only zone: EIO");
  last_error_line (line, sizeof line);
  CHECK (strstr (line, "zone 1 is read-only"), "log line: %s", line);
  CHECK (dev.writes == writes, "a write to a read-only zone reached the "
         "device");
  zt_read_failed (&t, &t.zones[2]);
  CHECK (cond_of (2) == COND_OFFLINE, "a failed read did not re-read the "
         "zone");
  CHECK (write1 (2 * ZS + B) == -1 && errno == EIO, "offline zone: EIO");
  last_error_line (line, sizeof line);
  CHECK (strstr (line, "zone 2 is offline"), "log line: %s", line);
}

static void
test_reset_and_lost_reset (void)
{
  uint64_t z = 1 * ZS;
  struct job w, gap;

  setup (false, 300, 0, 0);
  dev.write_delay_ms = 200;
  job_start (&w, z, 0);
  sleep_ms (50);
  /* The reset waits for the write at the device. */
  CHECK (zt_reset (&t, &t.zones[1]) == 0, "reset failed");
  job_wait (&w);
  CHECK (w.r == 0, "the write at the device during a reset failed");
  CHECK (dev.violations == 0, "the reset ran while a write was at the "
         "device");
  CHECK (wp_of (1) == z && cond_of (1) == COND_EMPTY, "WP after reset");
  dev.write_delay_ms = 0;
  write1 (z);
  write1 (z + B);
  /* A write waiting for a gap when the zone is reset: it fails in time. */
  job_start (&gap, z + 4 * B, 0);
  sleep_ms (50);
  zt_reset (&t, &t.zones[1]);
  job_wait (&gap);
  CHECK (gap.r == -1 && gap.err == EIO, "a gap write across a reset");
  /* A lost reset: the table keeps what the device says. */
  write1 (z);
  dev.fail_reset = true;
  CHECK (zt_reset (&t, &t.zones[1]) == -1, "a lost reset succeeded");
  CHECK (wp_of (1) == z + B, "WP after a lost reset is %" PRIu64
         ", the device's is %" PRIu64, wp_of (1), z + B);
  CHECK (write1 (z + B) == 0, "write at the WP after a lost reset");
}

static void
test_emulated_limits (void)
{
  char line[512];

  /* null_blk: at most 1 open and 2 active zones. */
  setup (true, 300, 1, 2);
  CHECK (write1 (1 * ZS) == 0, "zone 1");
  CHECK (cond_of (1) == COND_IMP_OPEN, "zone 1 implicitly open");
  CHECK (write1 (2 * ZS) == 0, "zone 2 (closes zone 1)");
  CHECK (cond_of (1) == COND_CLOSED && cond_of (2) == COND_IMP_OPEN,
         "implicit close");
  CHECK (write1 (3 * ZS) == -1 && errno == ENOSPC, "a third active zone: "
         "want ENOSPC");
  last_error_line (line, sizeof line);
  CHECK (strstr (line, "too many active zones"), "log line: %s", line);
  CHECK (zt_finish (&t, &t.zones[1]) == 0, "finish zone 1");
  CHECK (cond_of (1) == COND_FULL && wp_of (1) == 2 * ZS, "finished zone");
  CHECK (zt_nr_active (&t) == 1, "active zones after finish: %" PRIu64,
         zt_nr_active (&t));
  CHECK (write1 (3 * ZS) == 0, "zone 3 once zone 1 is finished");
  CHECK (data_is (1 * ZS + B, ZS - B, 0), "a finished emulated zone reads "
         "zeros above its old WP");
  CHECK (zt_reset (&t, &t.zones[1]) == 0 && cond_of (1) == COND_EMPTY &&
         zt_nr_active (&t) == 2, "reset of a full zone");
}

/* A real device finished by write zeroes must read zeros above the old
 * WP: its finish command does not promise that (NVMe ZNS), as the fake
 * device shows; the table writes the zeros instead.
 */
static void
test_finish_by_write_zeroes (void)
{
  uint64_t z = 2 * ZS, z7 = SMALL_CAP_ZONE * (uint64_t) ZS, end;

  setup (false, 300, 0, 0);
  memset (dev.data + z, 0xa5, ZS);      /* unwritten blocks: not zeros */
  memset (dev.data + z7, 0xa5, ZS);
  write1 (z);
  CHECK (zt_finish (&t, &t.zones[2]) == 0 && !data_is (z + B, B, 0),
         "the fake device's finish should leave its unwritten blocks");
  zt_reset (&t, &t.zones[2]);
  memset (dev.data + z, 0xa5, ZS);
  write1 (z);
  CHECK (!zt_zeroes_finish (&t, &t.zones[2], ZS - B, z + B),
         "a real device's finish by write zeroes taken as a finish command");
  CHECK (zt_write_zeroes (&t, &t.zones[2], ZS - B, z + B) == 0,
         "write zeroes to the zone end: %m");
  CHECK (data_is (z + B, ZS - B, 0), "a finished zone does not read zeros "
         "above its old WP");
  CHECK (cond_of (2) == COND_FULL && dev.wp[2] == z + ZS, "zone not full");
  /* Capacity below the zone size: zeros up to the capacity. */
  CHECK (zt_write_zeroes (&t, &t.zones[SMALL_CAP_ZONE], ZS, z7) == 0,
         "write zeroes of a whole zone with a smaller capacity: %m");
  CHECK (data_is (z7, ZS / 2, 0) && cond_of (SMALL_CAP_ZONE) == COND_FULL,
         "zone with a smaller capacity");
  /* Emulated zones finish by discarding. */
  setup (true, 300, 0, 0);
  write1 (z);
  CHECK (zt_zeroes_finish (&t, &t.zones[2], ZS - B, z + B),
         "emulated: write zeroes from the WP is a finish");
  CHECK (!zt_zeroes_finish (&t, &t.zones[2], B, z + B),
         "emulated: a partial write zeroes is not a finish");
  CHECK (zt_readable (&t, &t.zones[2], z, &end) == 0 && end == z + B,
         "readable part of a written zone");
}

/* Read-only zones stay readable to their capacity; offline ones fail. */
static void
test_readable (void)
{
  uint64_t end;
  char line[512];

  setup (false, 300, 0, 0);
  write1 (1 * ZS);
  write1 (2 * ZS);
  dev.cond[1] = COND_READONLY;
  dev.cond[2] = COND_OFFLINE;
  zt_read_failed (&t, &t.zones[1]);
  zt_read_failed (&t, &t.zones[2]);
  CHECK (zt_readable (&t, &t.zones[1], 1 * ZS, &end) == 0 &&
         end == 2 * ZS, "a read-only zone is not readable to its capacity");
  CHECK (zt_readable (&t, &t.zones[2], 2 * ZS + B, &end) == -1 &&
         errno == EIO, "an offline zone read did not fail with EIO");
  last_error_line (line, sizeof line);
  CHECK (strstr (line, "read at 135168: zone 2 is offline: EIO"),
         "log line: %s", line);
  CHECK (zt_readable (&t, &t.zones[0], 0, &end) == 0 && end == ZS,
         "conventional zone");
}

/* zone-capacity=: one capacity for the sequential zones.  A short last
 * zone (a device whose size is not a multiple of its zone size) is not
 * a capacity of its own; a zone with a capacity of its own is found.
 */
static void
test_capacity (void)
{
  struct zone_table c;
  uint64_t cap, differs;

  if (zt_init (&c, 4, ZS) == -1) {
    perror ("zt_init");
    exit (1);
  }
  c.zones[0].conventional = true;
  cap = zt_capacity (&c, &differs);
  CHECK (cap == ZS && differs == UINT64_MAX, "full zones: %" PRIu64, cap);
  c.zones[3].len = c.zones[3].cap = ZS / 4;
  cap = zt_capacity (&c, &differs);
  CHECK (cap == ZS && differs == UINT64_MAX,
         "a short last zone: capacity %" PRIu64 ", differs %" PRIu64,
         cap, differs);
  c.zones[1].cap = c.zones[2].cap = ZS / 2;
  cap = zt_capacity (&c, &differs);
  CHECK (cap == ZS / 2 && differs == UINT64_MAX,
         "zones of half capacity and a shorter last one: %" PRIu64, cap);
  c.zones[2].cap = ZS / 2 - B;
  cap = zt_capacity (&c, &differs);
  CHECK (cap == ZS / 2 && differs == 2,
         "zone 2's own capacity: %" PRIu64 ", differs %" PRIu64, cap, differs);
  c.zones[2].cap = ZS / 2;
  c.zones[3].cap = ZS / 8;
  zt_capacity (&c, &differs);
  CHECK (differs == 3, "a short last zone below the capacity: differs %"
         PRIu64, differs);
  /* Zones nothing is written to: their capacity says nothing. */
  c.zones[3].cap = ZS / 4;
  c.zones[2].cap = ZS;
  c.zones[2].cond = COND_OFFLINE;
  cap = zt_capacity (&c, &differs);
  CHECK (cap == ZS / 2 && differs == UINT64_MAX,
         "an offline zone's capacity: differs %" PRIu64, differs);
  c.zones[1].cond = COND_READONLY;
  cap = zt_capacity (&c, &differs);
  CHECK (cap == ZS / 4 && differs == UINT64_MAX,
         "read-only and offline zones first: %" PRIu64, cap);
  c.zones[1].cond = c.zones[2].cond = COND_EMPTY;
  c.zones[2].cap = ZS / 2;
  c.zones[3].cap = ZS / 8;
  c.zones[1].conventional = c.zones[2].conventional = true;
  cap = zt_capacity (&c, &differs);
  CHECK (cap == ZS / 8 && differs == UINT64_MAX,
         "the last zone alone is sequential: %" PRIu64, cap);
  c.zones[3].conventional = true;
  cap = zt_capacity (&c, &differs);
  CHECK (cap == ZS && differs == UINT64_MAX,
         "no sequential zone: %" PRIu64, cap);
  zt_free (&c);
}

int
main (int argc, char *argv[])
{
  verbose = getenv ("GATE_TEST_VERBOSE") != NULL;
  test_write_at_wp ();
  test_refusals ();
  test_reorder ();
  test_gap_timeout ();
  test_slow_device_in_order ();
  test_gap_after_progress ();
  test_zones_in_parallel ();
  test_stress_one_zone ();
  test_failed_write ();
  test_query_outside_lock ();
  test_readonly_offline ();
  test_reset_and_lost_reset ();
  test_emulated_limits ();
  test_finish_by_write_zeroes ();
  test_readable ();
  test_capacity ();
  zt_free (&t);
  if (failures) {
    fprintf (stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf ("gate unit tests: all passed\n");
  return 0;
}

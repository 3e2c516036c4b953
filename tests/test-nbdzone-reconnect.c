/* nbdzone attach --reconnect against a fake server that breaks the
 * connection where it is told to: every rule of what becomes of the
 * requests held across a reconnect (man nbdzone, RECONNECTING) is a
 * case here, in a few seconds, with no ublk device, no root, no VM.
 *
 * How it works.  The whole of nbdzone attach runs in a thread of this
 * process (nbdzone_attach, with --foreground), unchanged but for its
 * kernel side: fake-ublk.c stands in for tools/ublk-dev.c, and this
 * file plays the kernel, handing requests to tags and reading their
 * commits.  The server is fake-nbd-server.c, serving emulated zones as
 * the zbd plugin does, on a Unix socket; a fault makes it die before
 * or after carrying out a chosen command, half-land a write, lose a
 * reply with the connection, or never answer while the connection
 * stays; and it can come back as another disk.  What each case checks
 * is what can be seen from outside: each request's result as the
 * kernel gets it, which commands reached the server again after the
 * break and at which offsets and lengths, the bytes and WPs the server
 * ends up with, and the lines attach logs.
 *
 * Each case is a process of its own (its own attach, fake kernel and
 * server), a few at once: most of a case's time is attach waiting, in
 * its polls at detach; the cases' reports are printed in order.
 *
 * The disk: eight 1 MiB zones of 768 KiB capacity, zone 0
 * conventional, 4 KiB blocks.  Writes are 16 KiB of a pattern that
 * depends on the offset, so the bytes say where they were meant to go.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
#include <linux/blkzoned.h>

#include "attach.h"
#include "nbdzone.h"
#include "fake-nbd-server.h"
#include "fake-ublk.h"

#define KiB 1024ULL
#define MiB (1024 * KiB)
#define CAP (768 * KiB)
#define NZ 8
#define Z(n) ((uint64_t) (n) * MiB)
#define W ((uint32_t) (16 * KiB))
#define WAIT_MS 10000

static const struct fake_shape disk = {
  .zone_size = MiB, .zone_capacity = CAP, .nr_zones = NZ,
  .nr_conventional = 1, .block_size = 4096,
  .disk_id = "fake-disk-1", .key_check = "0123456789abcdef0123456789abcdef",
};

/* Short: the server's socket is in it. */
static char tmpdir[80];
/* The test's own report: attach's stdout and stderr go to a log. */
static FILE *out;
static int failures;
static bool case_failed;
static const char *case_name;

#define CHECK(cond, ...) do {                                           \
    if (!(cond)) {                                                      \
      fprintf (out, "FAIL: %s (line %d): ", case_name, __LINE__);       \
      fprintf (out, __VA_ARGS__);                                       \
      fprintf (out, "\n");                                              \
      case_failed = true;                                               \
    }                                                                   \
  } while (0)

/* ---- One attach against one fake server ----------------------------- */

static struct {
  struct fake_server *srv;
  pthread_t thread;
  int status;
  int argc;
  char *argv[16];
  char log[sizeof tmpdir + 32];
  int saved_stdout, saved_stderr;
  uint64_t began_ms;
} run;

static uint64_t
clock_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *
attach_thread (void *arg)
{
  run.status = nbdzone_attach (run.argc, run.argv);
  return NULL;
}

static void
add_arg (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));

static void
add_arg (const char *fmt, ...)
{
  char buf[200];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (buf, sizeof buf, fmt, ap);
  va_end (ap);
  run.argv[run.argc] = strdup (buf);
  if (!run.argv[run.argc++])
    abort ();
}

/* attach's output, stdout and stderr, goes to the case's log. */
static void
capture_output (void)
{
  int fd;

  snprintf (run.log, sizeof run.log, "%s/attach%ld.log", tmpdir,
            (long) getpid ());
  fd = open (run.log, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC,
             0600);
  if (fd == -1)
    abort ();
  fflush (NULL);
  run.saved_stdout = dup (STDOUT_FILENO);
  run.saved_stderr = dup (STDERR_FILENO);
  dup2 (fd, STDOUT_FILENO);
  dup2 (fd, STDERR_FILENO);
  close (fd);
}

static void
restore_output (void)
{
  fflush (NULL);
  dup2 (run.saved_stdout, STDOUT_FILENO);
  dup2 (run.saved_stderr, STDERR_FILENO);
  close (run.saved_stdout);
  close (run.saved_stderr);
}

static void
print_log (void)
{
  char line[1024];
  FILE *f = fopen (run.log, "r");

  if (!f)
    return;
  while (fgets (line, sizeof line, f))
    fprintf (out, "    %s", line);
  fclose (f);
}

/* Start case NAME: a fresh server, and attach with QUEUES queues,
 * --timeout TIMEOUT_S and --reconnect RECONNECT_S.
 */
static void
start (const char *name, int queues, unsigned timeout_s,
       unsigned reconnect_s)
{
  case_name = name;
  case_failed = false;
  run.began_ms = clock_ms ();
  fake_ublk_reset ();
  got_signal = 0;
  run.srv = fake_server_start (tmpdir, &disk);
  run.argc = 0;
  add_arg ("%s", fake_server_uri (run.srv));
  add_arg ("--foreground");
  add_arg ("--queues");
  add_arg ("%d", queues);
  add_arg ("--depth");
  add_arg ("8");
  add_arg ("--timeout");
  add_arg ("%u", timeout_s);
  add_arg ("--reconnect");
  add_arg ("%u", reconnect_s);
  capture_output ();
  if (pthread_create (&run.thread, NULL, attach_thread, NULL) != 0)
    abort ();
  if (!fake_ublk_wait_live (WAIT_MS)) {
    restore_output ();
    fprintf (out, "FAIL: %s: the device never went live\n", name);
    print_log ();
    exit (EXIT_FAILURE);
  }
}

/* End the case: attach detaches (as on SIGTERM) and must exit 0. */
static void
finish (void)
{
  int i;

  got_signal = SIGTERM;
  pthread_join (run.thread, NULL);
  restore_output ();
  CHECK (run.status == EXIT_SUCCESS, "attach exited with status %d",
         run.status);
  if (case_failed) {
    fprintf (out, "  attach's log:\n");
    print_log ();
    failures++;
  }
  fprintf (out, "%s: %s (%" PRIu64 " ms)\n", case_failed ? "FAIL" : "PASS",
           case_name, clock_ms () - run.began_ms);
  fake_server_stop (run.srv);
  for (i = 0; i < run.argc; i++)
    free (run.argv[i]);
}

/* ---- Requests, as the kernel hands them over ------------------------ */

static void
pattern (uint64_t off, uint32_t len, uint8_t *buf)
{
  uint32_t i;

  for (i = 0; i < len; i++) {
    uint64_t x = off + i;

    buf[i] = (uint8_t) (x * 7 + (x >> 12) * 13 + 1);
  }
}

/* Hand over OP of LEN at OFF; a write's data is the pattern of
 * DATA_OFF (where it is to land: an append's place).
 */
static void
submit_at (int q, int tag, uint8_t op, uint32_t flags, uint64_t off,
           uint32_t len, uint64_t data_off)
{
  uint8_t *data = NULL;

  if (op == UBLK_IO_OP_WRITE || op == UBLK_IO_OP_ZONE_APPEND) {
    data = malloc (len);
    if (!data)
      abort ();
    pattern (data_off, len, data);
  }
  fake_ublk_submit (q, tag, op, flags, off, len, data);
  free (data);
}

static void
submit (int q, int tag, uint8_t op, uint32_t flags, uint64_t off,
        uint32_t len)
{
  submit_at (q, tag, op, flags, off, len, off);
}

static struct fake_commit
done (int q, int tag)
{
  struct fake_commit c = { .result = INT_MIN };

  CHECK (fake_ublk_wait (q, tag, WAIT_MS, &c),
         "queue %d tag %d: no commit within %d ms", q, tag, WAIT_MS);
  return c;
}

/* Hand over a request and wait for its result. */
static int
io (int q, int tag, uint8_t op, uint32_t flags, uint64_t off, uint32_t len)
{
  submit (q, tag, op, flags, off, len);
  return done (q, tag).result;
}

#define EXPECT_RESULT(q, tag, want) do {                                \
    int r_ = done (q, tag).result;                                      \
    CHECK (r_ == (int) (want), "queue %d tag %d: result %d, not %d",    \
           q, tag, r_, (int) (want));                                   \
  } while (0)

/* The read (or report) data attach handed back matches the pattern. */
static void
expect_read_data (int q, int tag, uint64_t off, uint32_t len)
{
  uint8_t *got = malloc (len), *want = malloc (len);

  if (!got || !want)
    abort ();
  fake_ublk_data (q, tag, got, len);
  pattern (off, len, want);
  CHECK (memcmp (got, want, len) == 0,
         "the read of %" PRIu32 " at %" PRIu64 " returned other bytes",
         len, off);
  free (got);
  free (want);
}

/* ---- What the server holds and received ----------------------------- */

static void
expect_holds (uint64_t off, uint32_t len)
{
  uint8_t *got = malloc (len), *want = malloc (len);

  if (!got || !want)
    abort ();
  fake_server_read (run.srv, off, len, got);
  pattern (off, len, want);
  CHECK (memcmp (got, want, len) == 0,
         "the server does not hold the bytes written at %" PRIu64
         " (+%" PRIu32 ")", off, len);
  free (got);
  free (want);
}

static void
expect_wp (uint64_t z, uint64_t wp)
{
  uint64_t now = fake_server_wp (run.srv, z);

  CHECK (now == wp, "zone %" PRIu64 "'s WP on the server is %" PRIu64
         ", not %" PRIu64, z, now, wp);
}

/* Commands of TYPE the server got on connections opened after the
 * break, at OFF (FAKE_ANY_OFFSET: any) of LEN (0: any).
 */
static int
sent_again (uint16_t type, uint64_t off, uint32_t len)
{
  size_t n, i;
  struct fake_cmd *log = fake_server_log (run.srv, &n);
  int count = 0;

  for (i = 0; i < n; i++)
    count += log[i].generation > 0 && log[i].type == type &&
      (off == FAKE_ANY_OFFSET || log[i].offset == off) &&
      (len == 0 || log[i].length == len);
  free (log);
  return count;
}

/* Everything after the break but reading WPs and disconnecting. */
static int
sent_again_but_wp_reads (void)
{
  size_t n, i;
  struct fake_cmd *log = fake_server_log (run.srv, &n);
  int count = 0;

  for (i = 0; i < n; i++)
    count += log[i].generation > 0 && log[i].type != FAKE_BLOCK_STATUS &&
      log[i].type != FAKE_DISC;
  free (log);
  return count;
}

/* The writes after the break, in the order the server got them. */
static size_t
writes_again (struct fake_cmd *cmds, size_t max)
{
  size_t n, i, m = 0;
  struct fake_cmd *log = fake_server_log (run.srv, &n);

  for (i = 0; i < n && m < max; i++)
    if (log[i].generation > 0 && log[i].type == FAKE_WRITE)
      cmds[m++] = log[i];
  free (log);
  return m;
}

/* ---- attach's log --------------------------------------------------- */

static char *
read_log (void)
{
  FILE *f = fopen (run.log, "r");
  char *s = calloc (1, 65536);
  size_t n;

  if (!s)
    abort ();
  if (f) {
    n = fread (s, 1, 65535, f);
    s[n] = '\0';
    fclose (f);
  }
  return s;
}

static int
log_count (const char *want)
{
  char *s = read_log (), *p = s;
  int n = 0;

  while ((p = strstr (p, want))) {
    n++;
    p += strlen (want);
  }
  free (s);
  return n;
}

#define EXPECT_LOG(...) do {                                            \
    char want_[600];                                                    \
    snprintf (want_, sizeof want_, __VA_ARGS__);                        \
    CHECK (log_count (want_) >= 1, "attach did not log \"%s\"", want_); \
  } while (0)

static bool
wait_log (const char *want, unsigned ms)
{
  uint64_t until = clock_ms () + ms;

  while (log_count (want) == 0) {
    if (clock_ms () > until)
      return false;
    usleep (5000);
  }
  return true;
}

/* The reconnect's summary line. */
static void
expect_summary (int held, int resent)
{
  EXPECT_LOG ("%d requests were held, %d sent again, %d had landed",
              held, resent, held - resent);
  CHECK (log_count ("reconnected to") == 1, "not one reconnect but %d",
         log_count ("reconnected to"));
}

/* ---- Writes and appends whose connection broke ---------------------- */

struct write_case {
  const char *name;
  uint8_t op;                   /* UBLK_IO_OP_WRITE or _ZONE_APPEND */
  uint64_t zone;
  uint32_t flags;               /* UBLK_IO_F_FUA */
  enum fake_action action;
  uint32_t partial;             /* what lands of it (FAKE_DIE_PARTIAL) */
  uint32_t resent_from;         /* sent again from here on; W: not sent */
  bool flush;                   /* a flush after the reconnect */
};

#define FUA UBLK_IO_F_FUA
#define WRITE UBLK_IO_OP_WRITE
#define APPEND UBLK_IO_OP_ZONE_APPEND

static const struct write_case write_cases[] = {
  { "sequential write, the server dies before it", WRITE, 1, 0,
    FAKE_DIE_BEFORE, 0, 0, false },
  { "sequential write, the server dies after doing it", WRITE, 1, 0,
    FAKE_DIE_AFTER, 0, W, false },
  { "sequential write, its reply lost with the connection", WRITE, 1, 0,
    FAKE_CUT_REPLY, 0, W, false },
  { "sequential write, half its reply arrives", WRITE, 1, 0,
    FAKE_HALF_REPLY, 0, W, false },
  { "sequential write, half of it lands: the tail is sent", WRITE, 1, 0,
    FAKE_DIE_PARTIAL, 8 * KiB, 8 * KiB, false },
  { "FUA write that landed: a flush before it completes", WRITE, 1, FUA,
    FAKE_DIE_AFTER, 0, W, true },
  { "FUA write half landed: its tail with FUA, then a flush", WRITE, 1, FUA,
    FAKE_DIE_PARTIAL, 4 * KiB, 4 * KiB, true },
  { "FUA write that never arrived: sent again with FUA, no flush", WRITE, 1,
    FUA, FAKE_DIE_BEFORE, 0, 0, false },
  { "conventional write, the server dies before it", WRITE, 0, 0,
    FAKE_DIE_BEFORE, 0, 0, false },
  { "conventional write that landed: sent again all the same", WRITE, 0, 0,
    FAKE_DIE_AFTER, 0, 0, false },
  { "conventional write, its reply lost: sent again", WRITE, 0, 0,
    FAKE_CUT_REPLY, 0, 0, false },
  { "zone append that landed: completes at its place", APPEND, 2, 0,
    FAKE_DIE_AFTER, 0, W, false },
  { "zone append half landed: its tail at its place", APPEND, 2, 0,
    FAKE_DIE_PARTIAL, 4 * KiB, 4 * KiB, false },
  { "zone append lost before the server: sent again at its place", APPEND,
    2, 0, FAKE_DIE_BEFORE, 0, 0, false },
};

/* A first write of zone Z, acknowledged; then the case's request
 * right after it meets the fault.
 */
static void
run_write_case (const void *arg)
{
  const struct write_case *c = arg;
  uint64_t zs = Z (c->zone), at = zs + W;
  struct fake_cmd again[4];
  struct fake_commit k;
  size_t n;

  start (c->name, 1, 30, 10);
  CHECK (io (0, 0, WRITE, 0, zs, W) == (int) W, "the first write failed");
  fake_server_fault (run.srv, FAKE_WRITE, at, c->action, c->partial);
  submit_at (0, 1, c->op, c->flags, c->op == APPEND ? zs : at, W, at);
  k = done (0, 1);
  CHECK (k.result == (int) W, "result %d, not %" PRIu32, k.result, W);
  if (c->op == APPEND)
    CHECK (k.append_lba == at >> 9, "appended at sector %" PRIu64
           ", not %" PRIu64, k.append_lba, at >> 9);
  n = writes_again (again, 4);
  if (c->resent_from == W)
    CHECK (n == 0, "%zu writes sent again, none expected", n);
  else {
    CHECK (n == 1, "%zu writes sent again, not 1", n);
    if (n >= 1) {
      CHECK (again[0].offset == at + c->resent_from &&
             again[0].length == W - c->resent_from,
             "sent again: %" PRIu32 " bytes at %" PRIu64 ", not %" PRIu32
             " at %" PRIu64, again[0].length, again[0].offset,
             W - c->resent_from, at + c->resent_from);
      CHECK ((again[0].flags & FAKE_FLAG_FUA) == (c->flags ? FAKE_FLAG_FUA : 0),
             "sent again %s FUA", c->flags ? "without" : "with");
    }
  }
  CHECK ((sent_again (FAKE_FLUSH, FAKE_ANY_OFFSET, 0) > 0) == c->flush,
         "%s flush after the reconnect", c->flush ? "no" : "a");
  expect_holds (zs, 2 * W);
  if (c->zone > 0)
    expect_wp (c->zone, zs + 2 * W);
  expect_summary (1, c->resent_from != W);
  finish ();
}

/* A write the old server read before the break and still did after it
 * (it was stopped, not killed), just before the copy sent again: the
 * copy falls below the WP and is refused, and the WP past it says the
 * write landed.
 */
static void
test_late_write (const void *unused)
{
  start ("a write the old server did late: its copy refused, it landed",
         1, 30, 10);
  CHECK (io (0, 0, WRITE, 0, Z (1), W) == (int) W, "the first write failed");
  fake_server_fault (run.srv, FAKE_WRITE, Z (1) + W, FAKE_LATE, 0);
  submit (0, 1, WRITE, 0, Z (1) + W, W);
  EXPECT_RESULT (0, 1, W);
  CHECK (sent_again (FAKE_WRITE, Z (1) + W, W) == 1, "it was not sent again");
  CHECK (log_count ("failed:") == 0, "attach logged a failure");
  expect_holds (Z (1), 2 * W);
  expect_wp (1, Z (1) + 2 * W);
  expect_summary (1, 1);
  finish ();
}

/* ---- Reads, flushes, zone commands ---------------------------------- */

struct op_case {
  const char *name;
  enum fake_action action;
  bool landed;                  /* a reset or finish: done, not resent */
  uint32_t partial;             /* what lands of a reset-all's trim */
};

static const struct op_case read_cases[] = {
  { "read, the server dies before it: sent again", FAKE_DIE_BEFORE, false,
    0 },
  { "read, half its reply arrives: sent again", FAKE_HALF_REPLY, false, 0 },
};
static const struct op_case flush_cases[] = {
  { "flush, the server dies before it: sent again", FAKE_DIE_BEFORE, false,
    0 },
  { "flush, the server dies after it: sent again", FAKE_DIE_AFTER, false,
    0 },
};
static const struct op_case reset_cases[] = {
  { "zone reset that landed: done", FAKE_DIE_AFTER, true, 0 },
  { "zone reset that never arrived: sent again", FAKE_DIE_BEFORE, false, 0 },
};
static const struct op_case reset_all_cases[] = {
  { "zone reset-all that landed: done", FAKE_DIE_AFTER, true, 0 },
  { "zone reset-all half landed: sent again", FAKE_DIE_PARTIAL, false,
    2 * MiB },
  { "zone reset-all that never arrived: sent again", FAKE_DIE_BEFORE, false,
    0 },
};
static const struct op_case finish_cases[] = {
  { "zone finish that landed: done", FAKE_DIE_AFTER, true, 0 },
  { "zone finish that never arrived: sent again", FAKE_DIE_BEFORE, false,
    0 },
};

static void
test_read (const void *arg)
{
  const struct op_case *c = arg;

  start (c->name, 1, 30, 10);
  CHECK (io (0, 0, WRITE, 0, Z (1), W) == (int) W, "the write failed");
  fake_server_fault (run.srv, FAKE_READ, Z (1), c->action, 0);
  submit (0, 1, UBLK_IO_OP_READ, 0, Z (1), W);
  EXPECT_RESULT (0, 1, W);
  expect_read_data (0, 1, Z (1), W);
  CHECK (sent_again (FAKE_READ, Z (1), W) == 1, "the read was not sent again");
  expect_summary (1, 1);
  finish ();
}

static void
test_flush (const void *arg)
{
  const struct op_case *c = arg;

  start (c->name, 1, 30, 10);
  fake_server_fault (run.srv, FAKE_FLUSH, FAKE_ANY_OFFSET, c->action, 0);
  submit (0, 1, UBLK_IO_OP_FLUSH, 0, 0, 0);
  EXPECT_RESULT (0, 1, 0);
  CHECK (sent_again (FAKE_FLUSH, FAKE_ANY_OFFSET, 0) == 1,
         "the flush was not sent again");
  expect_summary (1, 1);
  finish ();
}

/* A reset of zone 3 (holding one write): done once its zone is empty. */
static void
test_reset (const void *arg)
{
  const struct op_case *c = arg;
  bool landed = c->landed;

  start (c->name, 1, 30, 10);
  CHECK (io (0, 0, WRITE, 0, Z (3), W) == (int) W, "the write failed");
  fake_server_fault (run.srv, FAKE_TRIM, Z (3), c->action, 0);
  submit (0, 1, UBLK_IO_OP_ZONE_RESET, 0, Z (3), MiB);
  EXPECT_RESULT (0, 1, 0);
  CHECK (sent_again (FAKE_TRIM, Z (3), MiB) == !landed,
         "the reset was %s sent again", landed ? "" : "not");
  expect_wp (3, Z (3));
  expect_summary (1, !landed);
  /* The zone is writable from its start again. */
  CHECK (io (0, 2, WRITE, 0, Z (3), W) == (int) W, "no write after the reset");
  finish ();
}

/* A reset of all zones (zones 1 to 4 hold a write each; one trim for
 * all): done once every sequential zone is empty.
 */
static void
test_reset_all (const void *arg)
{
  const struct op_case *c = arg;
  int z;

  start (c->name, 1, 30, 10);
  for (z = 1; z <= 4; z++)
    CHECK (io (0, 0, WRITE, 0, Z (z), W) == (int) W, "a write failed");
  fake_server_fault (run.srv, FAKE_TRIM, Z (1), c->action, c->partial);
  submit (0, 1, UBLK_IO_OP_ZONE_RESET_ALL, 0, 0, 0);
  EXPECT_RESULT (0, 1, 0);
  CHECK (sent_again (FAKE_TRIM, Z (1), 0) == !c->landed,
         "the reset-all was %s sent again", c->landed ? "" : "not");
  for (z = 1; z < NZ; z++)
    expect_wp (z, Z (z));
  expect_summary (1, !c->landed);
  finish ();
}

/* A finish of zone 4 (holding one write): done once its zone is full. */
static void
test_finish (const void *arg)
{
  const struct op_case *c = arg;
  bool landed = c->landed;

  start (c->name, 1, 30, 10);
  CHECK (io (0, 0, WRITE, 0, Z (4), W) == (int) W, "the write failed");
  fake_server_fault (run.srv, FAKE_ZERO, Z (4) + W, c->action, 0);
  submit (0, 1, UBLK_IO_OP_ZONE_FINISH, 0, Z (4), MiB);
  EXPECT_RESULT (0, 1, 0);
  CHECK (sent_again (FAKE_ZERO, Z (4) + W, CAP - W) == !landed,
         "the finish was %s sent again", landed ? "" : "not");
  expect_wp (4, Z (4) + CAP);
  expect_summary (1, !landed);
  finish ();
}

/* A zone report of zones 1 to 3 whose block status was lost. */
static void
test_report (const void *unused)
{
  struct blk_zone bz[3];

  start ("zone report, the server dies before answering: sent again",
         1, 30, 10);
  CHECK (io (0, 0, WRITE, 0, Z (1), W) == (int) W, "the write failed");
  fake_server_fault (run.srv, FAKE_BLOCK_STATUS, Z (1), FAKE_DIE_BEFORE, 0);
  submit (0, 1, UBLK_IO_OP_REPORT_ZONES, 0, Z (1), 3);
  EXPECT_RESULT (0, 1, MAX_IO_BYTES);
  fake_ublk_data (0, 1, bz, sizeof bz);
  CHECK (bz[0].wp == (Z (1) + W) >> 9 && bz[1].wp == Z (2) >> 9 &&
         bz[2].start == Z (3) >> 9, "the report says zone 1's WP is %llu, "
         "zone 2's %llu", (unsigned long long) bz[0].wp,
         (unsigned long long) bz[1].wp);
  expect_summary (1, 1);
  finish ();
}

/* ---- Several requests in flight ------------------------------------- */

/* Four writes of zone 5 in flight: the first landed (its reply never
 * came), half of the second, none of the others: the rest goes again
 * in WP order.  They come on tags 3 to 0, so that the order of the
 * tags is not the order of the WP.
 */
static void
test_prefix_landed (const void *unused)
{
  struct fake_cmd again[8];
  size_t n;
  int t;

  start ("four writes in flight, a prefix landed: the rest in WP order",
         1, 30, 10);
  fake_server_pause (run.srv);
  for (t = 0; t < 4; t++)
    submit (0, 3 - t, WRITE, 0, Z (5) + t * W, W);
  CHECK (fake_server_wait_held (run.srv, FAKE_WRITE, 4, WAIT_MS),
         "the four writes never reached the server");
  fake_server_fault (run.srv, FAKE_WRITE, Z (5), FAKE_SWALLOW, 0);
  fake_server_fault (run.srv, FAKE_WRITE, Z (5) + W, FAKE_DIE_PARTIAL,
                     8 * KiB);
  fake_server_release (run.srv);
  for (t = 0; t < 4; t++)
    EXPECT_RESULT (0, t, W);
  n = writes_again (again, 8);
  CHECK (n == 3, "%zu writes sent again, not 3", n);
  if (n == 3)
    CHECK (again[0].offset == Z (5) + W + 8 * KiB &&
           again[0].length == 8 * KiB &&
           again[1].offset == Z (5) + 2 * W && again[1].length == W &&
           again[2].offset == Z (5) + 3 * W && again[2].length == W,
           "sent again: %" PRIu32 "@%" PRIu64 ", %" PRIu32 "@%" PRIu64
           ", %" PRIu32 "@%" PRIu64, again[0].length, again[0].offset,
           again[1].length, again[1].offset, again[2].length,
           again[2].offset);
  expect_holds (Z (5), 4 * W);
  expect_wp (5, Z (5) + 4 * W);
  expect_summary (4, 3);
  finish ();
}

/* ---- A reply that never comes, on a connection that stays up -------- */

static void
test_swallowed_reply (const void *unused)
{
  uint64_t began;

  start ("a lost reply, the connection up: the timeout breaks it", 1, 1, 10);
  fake_server_fault (run.srv, FAKE_WRITE, Z (1), FAKE_SWALLOW, 0);
  began = clock_ms ();
  submit (0, 0, WRITE, 0, Z (1), W);
  EXPECT_RESULT (0, 0, W);
  CHECK (clock_ms () - began >= 1000, "completed after %" PRIu64 " ms, "
         "before the timeout", clock_ms () - began);
  /* 1 or 2 s: the watchdog looks once a second. */
  EXPECT_LOG ("broke (no reply from the server for ");
  EXPECT_LOG (" s (--timeout)); holding every request");
  CHECK (sent_again (FAKE_WRITE, FAKE_ANY_OFFSET, 0) == 0,
         "the write that landed was sent again");
  expect_holds (Z (1), W);
  expect_summary (1, 0);
  finish ();
}

/* ---- A server that comes back as something else --------------------- */

struct refusal_case {
  const char *name;
  void (*change) (struct fake_server *s);
  const char *why;              /* what attach says (after the URI) */
};

static void
another_disk (struct fake_server *s)
{
  fake_server_set_identity (s, "fake-disk-2", NULL);
}

static void
another_key (struct fake_server *s)
{
  fake_server_set_identity (s, NULL, "ffffffffffffffffffffffffffffffff");
}

static void
another_geometry (struct fake_server *s)
{
  fake_server_set_capacity (s, 512 * KiB);
}

/* Zone 1 acknowledged to W: its WP back at 4 KiB. */
static void
lost_acked (struct fake_server *s)
{
  fake_server_set_wp (s, 1, Z (1) + 4 * KiB);
}

/* Zone 1 written to at most 2 W by this client: another one went on. */
static void
another_writer (struct fake_server *s)
{
  fake_server_set_wp (s, 1, Z (1) + 3 * W);
}

/* Zone 2, with nothing in flight, lost its acknowledged write. */
static void
lost_acked_elsewhere (struct fake_server *s)
{
  fake_server_set_wp (s, 2, Z (2));
}

static const struct refusal_case refusal_cases[] = {
  { "back as another disk (disk-id): nothing resent, EIO", another_disk,
    "it is another disk (disk-id fake-disk-2, was fake-disk-1)" },
  { "back with another key (key-check): nothing resent, EIO", another_key,
    "it is served with another key or encryption format (key-check "
    "ffffffffffffffffffffffffffffffff, was "
    "0123456789abcdef0123456789abcdef)" },
  { "back with another geometry: nothing resent, EIO", another_geometry,
    "its zone geometry differs" },
  { "a WP behind what was acknowledged: never resumed", lost_acked,
    "zone 1: the server's write pointer is at offset 1052672, behind "
    "1064960, up to which it had acknowledged writes: it lost "
    "acknowledged data; not resuming" },
  { "a WP beyond what this client wrote: never resumed", another_writer,
    "zone 1: the server's write pointer is at offset 1097728, beyond "
    "1081344, the furthest this client wrote there: another writer; "
    "not resuming" },
  { "lost acknowledged writes in a zone with nothing in flight",
    lost_acked_elsewhere,
    "zone 2: the server's write pointer is at offset 2097152, behind "
    "2113536, up to which it had acknowledged writes: it lost "
    "acknowledged data; not resuming" },
};

static void
run_refusal_case (const void *arg)
{
  const struct refusal_case *c = arg;
  uint64_t wp1, wp2;

  start (c->name, 1, 30, 10);
  CHECK (io (0, 0, WRITE, 0, Z (1), W) == (int) W, "a write failed");
  CHECK (io (0, 1, WRITE, 0, Z (2), W) == (int) W, "a write failed");
  fake_server_stay_down (run.srv);
  fake_server_fault (run.srv, FAKE_WRITE, Z (1) + W, FAKE_DIE_BEFORE, 0);
  submit (0, 2, WRITE, 0, Z (1) + W, W);
  CHECK (fake_server_wait_down (run.srv, WAIT_MS), "the server never died");
  c->change (run.srv);
  wp1 = fake_server_wp (run.srv, 1);
  wp2 = fake_server_wp (run.srv, 2);
  fake_server_come_back (run.srv);
  EXPECT_RESULT (0, 2, -EIO);
  EXPECT_LOG ("not resuming on %s: %s; every held request fails with EIO",
              fake_server_uri (run.srv), c->why);
  CHECK (sent_again_but_wp_reads () == 0,
         "%d commands sent after the reconnect", sent_again_but_wp_reads ());
  /* New requests fail too, and still nothing reaches the server. */
  CHECK (io (0, 3, WRITE, 0, Z (1) + W, W) == -EIO, "a new write did not fail");
  CHECK (io (0, 4, UBLK_IO_OP_READ, 0, Z (1), W) == -EIO,
         "a new read did not fail");
  CHECK (sent_again_but_wp_reads () == 0,
         "%d commands sent after the refusal", sent_again_but_wp_reads ());
  expect_wp (1, wp1);
  expect_wp (2, wp2);
  finish ();
}

/* ---- Several queues: one decision for the device -------------------- */

/* Held writes on two queues; zone 2 (queue 1's) lost an acknowledged
 * write: queue 0's write, which could have been resumed alone, fails
 * too.
 */
static void
test_queues_refused_together (const void *unused)
{
  start ("two queues, one zone lost data: both queues' requests fail",
         2, 30, 10);
  CHECK (io (0, 0, WRITE, 0, Z (1), W) == (int) W, "a write failed");
  CHECK (io (1, 0, WRITE, 0, Z (2), W) == (int) W, "a write failed");
  fake_server_stay_down (run.srv);
  fake_server_pause (run.srv);
  submit (0, 1, WRITE, 0, Z (1) + W, W);
  submit (1, 1, WRITE, 0, Z (2) + W, W);
  CHECK (fake_server_wait_held (run.srv, FAKE_WRITE, 2, WAIT_MS),
         "the writes never reached the server");
  fake_server_die (run.srv);
  fake_server_release (run.srv);
  fake_server_set_wp (run.srv, 2, Z (2) + 4 * KiB);
  fake_server_come_back (run.srv);
  EXPECT_RESULT (0, 1, -EIO);
  EXPECT_RESULT (1, 1, -EIO);
  EXPECT_LOG ("zone 2: the server's write pointer is at offset 2101248, "
              "behind 2113536");
  CHECK (log_count ("not resuming on ") == 1, "%d decisions, not one",
         log_count ("not resuming on "));
  CHECK (sent_again_but_wp_reads () == 0, "commands sent after the refusal");
  finish ();
}

/* Held writes on two queues, two of them in one zone, the first of
 * those landed: one reconnect, one decision, the rest resent.
 */
static void
test_queues_resumed_together (const void *unused)
{
  uint8_t first[W];

  start ("two queues: one reconnect, one decision, the rest resent",
         2, 30, 10);
  fake_server_stay_down (run.srv);
  fake_server_pause (run.srv);
  submit (0, 0, WRITE, 0, Z (4), W);
  submit (1, 0, WRITE, 0, Z (4) + W, W);
  submit (0, 1, WRITE, 0, Z (5), W);
  CHECK (fake_server_wait_held (run.srv, FAKE_WRITE, 3, WAIT_MS),
         "the writes never reached the server");
  fake_server_die (run.srv);
  fake_server_release (run.srv);
  pattern (Z (4), W, first);
  fake_server_land (run.srv, Z (4), W, first);
  fake_server_come_back (run.srv);
  EXPECT_RESULT (0, 0, W);
  EXPECT_RESULT (1, 0, W);
  EXPECT_RESULT (0, 1, W);
  CHECK (sent_again (FAKE_WRITE, Z (4), 0) == 0, "the landed write was resent");
  CHECK (sent_again (FAKE_WRITE, Z (4) + W, W) == 1 &&
         sent_again (FAKE_WRITE, Z (5), W) == 1, "the others were not resent");
  expect_holds (Z (4), 2 * W);
  expect_holds (Z (5), W);
  expect_summary (3, 2);
  finish ();
}

/* ---- While the connection is down ----------------------------------- */

/* An idle connection closed by the server: the reconnect starts at
 * once; a request that comes meanwhile waits, and is served after.
 */
static void
test_deferred (const void *unused)
{
  start ("a request while the server is down waits for it", 1, 30, 10);
  CHECK (io (0, 0, WRITE, 0, Z (1), W) == (int) W, "the write failed");
  fake_server_stay_down (run.srv);
  fake_server_die (run.srv);
  CHECK (wait_log ("the server closed the connection", WAIT_MS),
         "attach did not see the connection close");
  submit (0, 1, UBLK_IO_OP_READ, 0, Z (1), W);
  usleep (200000);
  CHECK (!fake_ublk_committed (0, 1), "the read ended while the server "
         "was down");
  fake_server_come_back (run.srv);
  EXPECT_RESULT (0, 1, W);
  expect_read_data (0, 1, Z (1), W);
  EXPECT_LOG ("reconnect attempt 1 failed");
  expect_summary (0, 0);
  finish ();
}

/* The server never comes back within --reconnect: EIO. */
static void
test_time_up (const void *unused)
{
  start ("no server within --reconnect: the held requests fail", 1, 30, 1);
  fake_server_stay_down (run.srv);
  fake_server_fault (run.srv, FAKE_WRITE, Z (1), FAKE_DIE_BEFORE, 0);
  submit (0, 0, WRITE, 0, Z (1), W);
  EXPECT_RESULT (0, 0, -EIO);
  EXPECT_LOG ("no connection to %s for 1 s (--reconnect): every held "
              "request fails with EIO", fake_server_uri (run.srv));
  expect_wp (1, Z (1));
  finish ();
}

/* ---- Running the cases --------------------------------------------- */

struct test_case {
  void (*fn) (const void *arg);
  const void *arg;
};

static struct test_case cases[64];
static size_t nr_cases;

static void
add_case (void (*fn) (const void *arg), const void *arg)
{
  if (nr_cases == sizeof cases / sizeof cases[0])
    abort ();
  cases[nr_cases++] = (struct test_case) { .fn = fn, .arg = arg };
}

#define ADD_EACH(fn, table) do {                                        \
    size_t i_;                                                          \
    for (i_ = 0; i_ < sizeof table / sizeof table[0]; i_++)             \
      add_case (fn, &table[i_]);                                        \
  } while (0)

static void
case_output (size_t i, char *buf, size_t len)
{
  snprintf (buf, len, "%s/case%zu.out", tmpdir, i);
}

/* Case I in a process of its own (its own attach, fake kernel and
 * globals), reporting to its own file; a hang ends it after a minute.
 */
static pid_t
fork_case (size_t i)
{
  char path[sizeof tmpdir + 32];
  pid_t pid;

  fflush (NULL);
  pid = fork ();
  if (pid != 0)
    return pid;
  /* Where attach keeps what --recover would need: its own. */
  snprintf (path, sizeof path, "%s/run%zu", tmpdir, i);
  setenv ("NBDZONE_RUN_DIR", path, 1);
  case_output (i, path, sizeof path);
  out = fopen (path, "w");
  if (!out)
    _exit (2);
  setvbuf (out, NULL, _IONBF, 0);
  alarm (60);
  cases[i].fn (cases[i].arg);
  fclose (out);
  _exit (failures ? 1 : 0);
}

/* Each case's report, in order, and a line for a case that died. */
static int
report (const int *status)
{
  char path[sizeof tmpdir + 32], line[1024];
  int failed = 0;
  size_t i;

  for (i = 0; i < nr_cases; i++) {
    FILE *f;

    case_output (i, path, sizeof path);
    if ((f = fopen (path, "r"))) {
      while (fgets (line, sizeof line, f))
        fputs (line, out);
      fclose (f);
    }
    if (WIFSIGNALED (status[i]))
      fprintf (out, "FAIL: case %zu was killed by signal %d\n", i,
               WTERMSIG (status[i]));
    failed += !WIFEXITED (status[i]) || WEXITSTATUS (status[i]) != 0;
  }
  return failed;
}

/* Most of a case's time is attach waiting (its polls at detach, the
 * timeouts), not work: several run at once.
 */
#define JOBS 4

static int
run_cases (void)
{
  pid_t pid[sizeof cases / sizeof cases[0]];
  int status[sizeof cases / sizeof cases[0]];
  size_t next = 0, running = 0, i;

  while (next < nr_cases || running) {
    int st;
    pid_t p;

    if (next < nr_cases && running < JOBS) {
      pid[next] = fork_case (next);
      if (pid[next] == -1) {
        perror ("fork");
        exit (EXIT_FAILURE);
      }
      next++;
      running++;
      continue;
    }
    p = wait (&st);
    if (p == -1) {
      perror ("wait");
      exit (EXIT_FAILURE);
    }
    for (i = 0; i < next; i++)
      if (pid[i] == p)
        status[i] = st;
    running--;
  }
  return report (status);
}

int
main (void)
{
  const char *tmp = getenv ("TMPDIR");
  uint64_t began = clock_ms ();

  out = fdopen (dup (STDERR_FILENO), "w");
  if (!out)
    abort ();
  setvbuf (out, NULL, _IONBF, 0);
  if (!tmp || !*tmp || strlen (tmp) > sizeof tmpdir - 32)
    tmp = "/tmp";
  snprintf (tmpdir, sizeof tmpdir, "%s/nbdzone-reconnect-XXXXXX", tmp);
  if (!mkdtemp (tmpdir)) {
    perror ("mkdtemp");
    return EXIT_FAILURE;
  }

  /* The slowest first (a second of timeout each), beside the others. */
  add_case (test_swallowed_reply, NULL);
  add_case (test_time_up, NULL);
  ADD_EACH (run_write_case, write_cases);
  add_case (test_late_write, NULL);
  ADD_EACH (test_read, read_cases);
  ADD_EACH (test_flush, flush_cases);
  ADD_EACH (test_reset, reset_cases);
  ADD_EACH (test_reset_all, reset_all_cases);
  ADD_EACH (test_finish, finish_cases);
  add_case (test_report, NULL);
  add_case (test_prefix_landed, NULL);
  ADD_EACH (run_refusal_case, refusal_cases);
  add_case (test_queues_refused_together, NULL);
  add_case (test_queues_resumed_together, NULL);
  add_case (test_deferred, NULL);
  failures = run_cases ();

  fprintf (out, "%s, in %" PRIu64 " ms\n", failures ? "FAILED" : "all passed",
           clock_ms () - began);
  if (!failures) {
    char cmd[sizeof tmpdir + 16];

    snprintf (cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system (cmd) != 0)
      fprintf (stderr, "cannot remove %s\n", tmpdir);
  }
  return failures ? EXIT_FAILURE : EXIT_SUCCESS;
}

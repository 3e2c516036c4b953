/* Unit tests of the reconnect decisions (tools/resend.c): one test per
 * rule of what is resent after a reconnect, against zones whose write
 * pointers are set as a server coming back could leave them.
 *
 * Four 1 MiB zones: zone 0 conventional, zones 1 to 3 sequential with
 * a capacity of 768 KiB.
 */
#include <config.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resend.h"

#define MiB 1048576ULL
#define KiB 1024ULL
#define CAP (768 * KiB)
#define NZ 4

static int failures;
#define CHECK(cond, ...) do {                                           \
    if (!(cond)) {                                                      \
      fprintf (stderr, "FAIL (%s:%d): ", __func__, __LINE__);           \
      fprintf (stderr, __VA_ARGS__);                                    \
      fprintf (stderr, "\n");                                           \
      failures++;                                                       \
    }                                                                   \
  } while (0)

static struct zone_view zones[NZ];
static char why[512];

/* Every zone empty, nothing acknowledged or written, WP at the start. */
static void
reset_zones (void)
{
  int z;

  memset (zones, 0, sizeof zones);
  for (z = 0; z < NZ; z++) {
    zones[z].start = z * MiB;
    zones[z].capend = z * MiB + (z == 0 ? MiB : CAP);
    zones[z].acked_wp = zones[z].written_wp = zones[z].wp_now =
      zones[z].start;
  }
  zones[0].conventional = true;
}

/* Zone Z: acknowledged up to ACKED, written up to WRITTEN, WP now NOW
 * (offsets in the zone).
 */
static void
zone (int z, uint64_t acked, uint64_t written, uint64_t now)
{
  zones[z].acked_wp = zones[z].start + acked;
  zones[z].written_wp = zones[z].start + written;
  zones[z].wp_now = zones[z].start + now;
}

static struct rq
write_rq (int z, uint64_t s, uint64_t e)
{
  struct rq r = { .kind = RQ_WRITE, .zone = z,
                  .start = z * MiB + s, .end = z * MiB + e };
  return r;
}

static int
decide (const struct rq *rqs, size_t n, struct verdict *v)
{
  why[0] = '\0';
  return resend_decide (zones, NZ, rqs, n, v, why, sizeof why);
}

/* A write [s, e): WP >= e landed, WP <= s resend, between: the tail. */
static void
test_write_by_wp (void)
{
  struct rq rqs[3] = { write_rq (1, 0, 64 * KiB),
                       write_rq (1, 64 * KiB, 128 * KiB),
                       write_rq (1, 128 * KiB, 192 * KiB) };
  struct verdict v[3];

  reset_zones ();
  zone (1, 0, 192 * KiB, 96 * KiB);
  CHECK (decide (rqs, 3, v) == 0, "refused: %s", why);
  CHECK (v[0].kind == V_COMPLETE && !v[0].flush_first,
         "WP past its end: the write landed");
  CHECK (v[1].kind == V_RESEND_TAIL && v[1].from == MiB + 96 * KiB &&
         v[1].to == MiB + 128 * KiB, "WP inside: resend [WP, e), got %d "
         "[%" PRIu64 ", %" PRIu64 ")", v[1].kind, v[1].from, v[1].to);
  CHECK (v[2].kind == V_RESEND, "WP before its start: resend it whole");
  /* Exactly at the boundaries. */
  zone (1, 0, 192 * KiB, 128 * KiB);
  CHECK (decide (rqs, 3, v) == 0, "refused: %s", why);
  CHECK (v[1].kind == V_COMPLETE, "WP == e: landed");
  CHECK (v[2].kind == V_RESEND, "WP == s: resend");
}

/* FUA: what landed completes only after a flush. */
static void
test_fua (void)
{
  struct rq rqs[3] = { write_rq (2, 0, 64 * KiB),
                       write_rq (2, 64 * KiB, 128 * KiB),
                       write_rq (2, 128 * KiB, 192 * KiB) };
  struct verdict v[3];
  int i;

  for (i = 0; i < 3; i++)
    rqs[i].fua = true;
  reset_zones ();
  zone (2, 0, 192 * KiB, 96 * KiB);
  CHECK (decide (rqs, 3, v) == 0, "refused: %s", why);
  CHECK (v[0].kind == V_COMPLETE && v[0].flush_first,
         "a landed FUA write waits for a flush");
  CHECK (v[1].kind == V_RESEND_TAIL && v[1].flush_first,
         "a FUA write half landed: its head needs a flush too");
  CHECK (v[2].kind == V_RESEND && !v[2].flush_first,
         "a FUA write sent again whole carries its own FUA");
}

/* A zone append: the same rule, at the place it was given. */
static void
test_append (void)
{
  struct rq rqs[2] = {
    { .kind = RQ_APPEND, .zone = 3, .start = 3 * MiB + 4 * KiB,
      .end = 3 * MiB + 12 * KiB },
    { .kind = RQ_APPEND, .zone = 3, .start = 3 * MiB + 12 * KiB,
      .end = 3 * MiB + 20 * KiB },
  };
  struct verdict v[2];

  reset_zones ();
  zone (3, 4 * KiB, 20 * KiB, 16 * KiB);
  CHECK (decide (rqs, 2, v) == 0, "refused: %s", why);
  CHECK (v[0].kind == V_COMPLETE, "the first append landed");
  CHECK (v[1].kind == V_RESEND_TAIL && v[1].from == 3 * MiB + 16 * KiB &&
         v[1].to == 3 * MiB + 20 * KiB, "the second: its tail at its place");
}

/* Resends of one zone go out in WP order, whatever order they came in. */
static void
test_order (void)
{
  struct rq rqs[6] = { write_rq (2, 128 * KiB, 192 * KiB),
                       { .kind = RQ_FLUSH },
                       write_rq (1, 64 * KiB, 128 * KiB),
                       write_rq (2, 64 * KiB, 128 * KiB),
                       write_rq (1, 0, 64 * KiB),
                       write_rq (2, 0, 64 * KiB) };
  struct verdict v[6];
  size_t order[6], m, want[] = { 4, 2, 3, 0, 1 }, i;

  reset_zones ();
  zone (1, 0, 128 * KiB, 32 * KiB);
  zone (2, 0, 192 * KiB, 64 * KiB);
  CHECK (decide (rqs, 6, v) == 0, "refused: %s", why);
  CHECK (v[5].kind == V_COMPLETE, "zone 2's first write landed");
  m = resend_order (rqs, v, 6, order);
  /* zone 1: [32K, 64K) tail, then [64K, 128K); zone 2: [64K, 128K),
   * [128K, 192K); then the flush.  The landed write is not resent.
   */
  CHECK (m == 5, "%zu resends, not 5", m);
  for (i = 0; i < m && i < 5; i++)
    CHECK (order[i] == want[i], "resend %zu is request %zu, not %zu",
           i, order[i], want[i]);
}

/* A WP behind what the server had acknowledged: never resume. */
static void
test_lost_acknowledged (void)
{
  struct rq rqs[1] = { write_rq (1, 128 * KiB, 192 * KiB) };
  struct verdict v[1];

  reset_zones ();
  zone (1, 128 * KiB, 192 * KiB, 64 * KiB);
  CHECK (decide (rqs, 1, v) == -1, "resumed over lost acknowledged data");
  CHECK (strstr (why, "zone 1") && strstr (why, "1114112") &&
         strstr (why, "1179648") && strstr (why, "lost acknowledged"),
         "the line names the zone and both WPs: %s", why);
  /* Also in a zone with nothing in flight. */
  reset_zones ();
  zone (3, 64 * KiB, 64 * KiB, 0);
  rqs[0] = write_rq (1, 0, 64 * KiB);
  CHECK (decide (rqs, 1, v) == -1 && strstr (why, "zone 3"),
         "a zone without requests in flight lost data: %s", why);
}

/* A WP beyond anything this client wrote: another writer. */
static void
test_other_writer (void)
{
  struct rq rqs[1] = { write_rq (2, 0, 64 * KiB) };
  struct verdict v[1];

  reset_zones ();
  zone (2, 0, 64 * KiB, 128 * KiB);
  CHECK (decide (rqs, 1, v) == -1, "resumed past another writer's data");
  CHECK (strstr (why, "zone 2") && strstr (why, "2228224") &&
         strstr (why, "2162688") && strstr (why, "another writer"),
         "the line names the zone and both WPs: %s", why);
}

/* Reset: empty: done; else resend.  A reset in flight explains a WP at
 * the start, below what was acknowledged.
 */
static void
test_reset (void)
{
  struct rq rqs[1] = { { .kind = RQ_RESET, .zone = 1 } };
  struct verdict v[1];

  reset_zones ();
  zone (1, 256 * KiB, 256 * KiB, 0);
  CHECK (decide (rqs, 1, v) == 0, "a reset that landed refused: %s", why);
  CHECK (v[0].kind == V_COMPLETE, "the zone is empty: the reset is done");
  zone (1, 256 * KiB, 256 * KiB, 256 * KiB);
  CHECK (decide (rqs, 1, v) == 0, "refused: %s", why);
  CHECK (v[0].kind == V_RESEND, "the zone is not empty: resend the reset");
  /* Without the reset in flight, the same WP is lost data. */
  zone (1, 256 * KiB, 256 * KiB, 0);
  rqs[0].kind = RQ_READ;
  CHECK (decide (rqs, 1, v) == -1, "an empty zone without a reset resumed");
}

/* Reset of all zones: done once every resettable zone is empty. */
static void
test_reset_all (void)
{
  struct rq rqs[1] = { { .kind = RQ_RESET_ALL } };
  struct verdict v[1];

  reset_zones ();
  zone (1, 64 * KiB, 64 * KiB, 0);
  zone (2, 64 * KiB, 64 * KiB, 0);
  zones[3].unwritable = true;           /* never reset: not waited for */
  zone (3, 64 * KiB, 64 * KiB, 64 * KiB);
  CHECK (decide (rqs, 1, v) == 0, "refused: %s", why);
  CHECK (v[0].kind == V_COMPLETE, "every resettable zone is empty: done");
  zone (2, 64 * KiB, 64 * KiB, 64 * KiB);
  CHECK (decide (rqs, 1, v) == 0, "refused: %s", why);
  CHECK (v[0].kind == V_RESEND, "zone 2 is not empty: resend it");
}

/* Finish: full: done; else resend.  A finish in flight explains a WP at
 * the capacity end, beyond what was written.
 */
static void
test_finish (void)
{
  struct rq rqs[1] = { { .kind = RQ_FINISH, .zone = 2 } };
  struct verdict v[1];

  reset_zones ();
  zone (2, 64 * KiB, 64 * KiB, CAP);
  CHECK (decide (rqs, 1, v) == 0, "a finish that landed refused: %s", why);
  CHECK (v[0].kind == V_COMPLETE, "the zone is full: the finish is done");
  zone (2, 64 * KiB, 64 * KiB, 64 * KiB);
  CHECK (decide (rqs, 1, v) == 0, "refused: %s", why);
  CHECK (v[0].kind == V_RESEND, "not full: resend the finish");
}

/* Reads, flushes, zone reports and writes to conventional zones are
 * sent again, whatever the WPs.
 */
static void
test_resent_as_they_are (void)
{
  struct rq rqs[5] = {
    { .kind = RQ_READ, .zone = 1, .start = MiB, .end = MiB + 4096 },
    { .kind = RQ_FLUSH },
    { .kind = RQ_REPORT, .zone = 1 },
    { .kind = RQ_WRITE, .zone = 0, .start = 4096, .end = 8192 },
    { .kind = RQ_WRITE, .zone = 0, .start = 8192, .end = 12288, .fua = true },
  };
  struct verdict v[5];
  size_t i;

  reset_zones ();
  zone (1, 64 * KiB, 64 * KiB, 64 * KiB);
  CHECK (decide (rqs, 5, v) == 0, "refused: %s", why);
  for (i = 0; i < 5; i++)
    CHECK (v[i].kind == V_RESEND && !v[i].flush_first,
           "request %zu is not resent as it is", i);
}

int
main (void)
{
  test_write_by_wp ();
  test_fua ();
  test_append ();
  test_order ();
  test_lost_acknowledged ();
  test_other_writer ();
  test_reset ();
  test_reset_all ();
  test_finish ();
  test_resent_as_they_are ();
  if (failures) {
    fprintf (stderr, "%d failures\n", failures);
    return EXIT_FAILURE;
  }
  printf ("reconnect decisions: all checks passed\n");
  return EXIT_SUCCESS;
}

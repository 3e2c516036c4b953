/* Unit tests of nbdzone attach's decisions without I/O
 * (tools/target-rules.c):
 *
 *   - elapsed times never wrap: a time another thread stored after the
 *     clock was read is no time elapsed (a healthy, busy server is never
 *     declared dead: "no reply for 18446744073709551 s");
 *   - the reply timeout fires only when the request and its connection
 *     have both been silent longer than the limit;
 *   - ENOSPC inside a zone's capacity is a zone resource error only
 *     where the export has that limit, and a finish refused with ENOSPC
 *     is a zone resource error too, not EIO;
 *   - the kernel never gets more open zones than active ones (Linux
 *     6.11 and later refuse such a device with EINVAL).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "target-rules.h"

static int failures;
#define CHECK(cond, ...) do {                                           \
    if (!(cond)) {                                                      \
      fprintf (stderr, "FAIL (%s:%d): ", __func__, __LINE__);           \
      fprintf (stderr, __VA_ARGS__);                                    \
      fprintf (stderr, "\n");                                           \
      failures++;                                                       \
    }                                                                   \
  } while (0)

static void
test_elapsed (void)
{
  CHECK (elapsed_ms (1000, 400) == 600, "plain difference");
  CHECK (elapsed_ms (1000, 1000) == 0, "same time");
  /* A queue thread stored 1001 after the watchdog read 1000. */
  CHECK (elapsed_ms (1000, 1001) == 0, "a later time is no time elapsed, "
         "not %" PRIu64, elapsed_ms (1000, 1001));
  CHECK (elapsed_ms (0, UINT64_MAX) == 0, "no wrap at the extremes");
}

static void
test_reply_overdue (void)
{
  uint64_t waited = 12345;

  /* Idle tag: never. */
  CHECK (!reply_overdue (100000, 1, 0, 30000, &waited), "idle tag");
  /* A request handed over after the clock was read, on a connection
   * whose last reply also came after it: a busy, healthy server.
   */
  CHECK (!reply_overdue (100000, 100002, 100001, 30000, &waited),
         "times stored after the clock read made the server dead "
         "(waited %" PRIu64 " ms)", waited);
  /* The connection answered recently (other requests): not dead, even
   * though this request is old (the server's gate may hold it).
   */
  CHECK (!reply_overdue (100000, 90000, 1000, 30000, &waited),
         "a connection that answers is not dead");
  /* Connection silent, request recent. */
  CHECK (!reply_overdue (100000, 1000, 99000, 30000, &waited),
         "a recent request is not overdue");
  /* Connection silent, request older than the limit: dead. */
  waited = 0;
  CHECK (reply_overdue (100000, 1000, 60000, 30000, &waited) &&
         waited == 40000, "overdue after 40 s (waited %" PRIu64 ")", waited);
  /* Exactly the limit is not yet too long. */
  CHECK (!reply_overdue (100000, 70000, 70000, 30000, &waited),
         "the limit itself");
}

static struct write_fault
fault (int err, uint64_t max_open, uint64_t max_active, uint64_t others)
{
  struct write_fault f = {
    .err = err, .inside_capacity = true,
    .max_open = max_open, .max_active = max_active, .active_others = others,
  };
  return f;
}

static void
test_write_errors (void)
{
  struct write_fault f;

  /* Limits as the export gives them. */
  f = fault (ENOSPC, 2, 3, 3);
  CHECK (kernel_write_error (&f) == -EOVERFLOW, "at the active limit");
  f = fault (ENOSPC, 2, 3, 1);
  CHECK (kernel_write_error (&f) == -ETOOMANYREFS, "at the open limit");
  /* No limits at all: ENOSPC inside the capacity is just that (a full
   * file under an emulated image), not a zone resource the export
   * does not have.
   */
  f = fault (ENOSPC, 0, 0, 5);
  CHECK (kernel_write_error (&f) == -ENOSPC,
         "no limits: got %d, not -ENOSPC", kernel_write_error (&f));
  /* Only an active limit: that is the resource. */
  f = fault (ENOSPC, 0, 4, 1);
  CHECK (kernel_write_error (&f) == -EOVERFLOW,
         "only an active limit: got %d", kernel_write_error (&f));
  /* Only an open limit. */
  f = fault (ENOSPC, 4, 0, 9);
  CHECK (kernel_write_error (&f) == -ETOOMANYREFS, "only an open limit");
  /* Past the capacity, conventional zones, other errors. */
  f = fault (ENOSPC, 2, 3, 3);
  f.inside_capacity = false;
  CHECK (kernel_write_error (&f) == -ENOSPC, "past the capacity");
  f = fault (ENOSPC, 2, 3, 3);
  f.conventional = true;
  CHECK (kernel_write_error (&f) == -ENOSPC, "conventional zone");
  f = fault (EIO, 2, 3, 3);
  CHECK (kernel_write_error (&f) == -EIO, "EIO");
  f = fault (EPERM, 0, 0, 0);
  CHECK (kernel_write_error (&f) == -EIO, "any other error is EIO");
}

static void
test_zone_limits (void)
{
  uint32_t open, active;

  kernel_zone_limits (8, 4, 16, &open, &active);
  CHECK (open == 4 && active == 4, "open 8 > active 4: got open %" PRIu32
         " active %" PRIu32 ", the kernel wants open <= active",
         open, active);
  kernel_zone_limits (2, 3, 16, &open, &active);
  CHECK (open == 2 && active == 3, "as given");
  kernel_zone_limits (6, 0, 16, &open, &active);
  CHECK (open == 6 && active == 0, "no active limit: open as given");
  kernel_zone_limits (100, 200, 16, &open, &active);
  CHECK (open == 16 && active == 16, "at most the zones");
  kernel_zone_limits (0, 0, 16, &open, &active);
  CHECK (open == 0 && active == 0, "no limits");
}

int
main (void)
{
  test_elapsed ();
  test_reply_overdue ();
  test_write_errors ();
  test_zone_limits ();
  if (failures) {
    fprintf (stderr, "%d failures\n", failures);
    return EXIT_FAILURE;
  }
  printf ("nbdzone rules: all checks passed\n");
  return EXIT_SUCCESS;
}

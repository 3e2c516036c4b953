/* A library preloaded into nbdkit by test-harness.sh: it makes the
 * process hang in an exit handler, as a shutdown deadlock would (a
 * library's destructor waiting on a lock that is never released).
 * Built for the test, never installed.
 */
#include <unistd.h>

static void __attribute__ ((destructor))
hang_at_exit (void)
{
  for (;;)
    pause ();
}

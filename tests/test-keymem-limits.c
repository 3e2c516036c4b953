/* Unit test of keymem's limits (common/keymem.c):
 *
 * - a request near SIZE_MAX / 2 (or any request too large to size) is
 *   refused with ENOMEM at once, and the allocator still works after it;
 * - under a memory lock limit smaller than keymem's 256 KiB pieces but
 *   large enough for a key, the key is locked (VmLck of the process),
 *   and keymem says so.
 *
 * Each case runs in a child: a hang (the old size-class loop) is caught
 * by an alarm, and the lock limit applies to the child only.  As root the
 * child drops to nobody first, since root may lock past any limit.
 */
#include <config.h>

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keymem.h"

static long
vmlck_kb (void)
{
  FILE *fp = fopen ("/proc/self/status", "r");
  char line[256];
  long kb = -1;

  if (fp == NULL)
    return -1;
  while (fgets (line, sizeof line, fp))
    if (sscanf (line, "VmLck: %ld kB", &kb) == 1)
      break;
  fclose (fp);
  return kb;
}

#define FAIL(...) do { \
    fprintf (stderr, "test-keymem-limits: FAIL: " __VA_ARGS__); \
    fputc ('\n', stderr); \
    _exit (1); \
  } while (0)

static void
huge_requests (void)
{
  const size_t sizes[] = {
    SIZE_MAX / 2 - 16, SIZE_MAX / 2 - 1, SIZE_MAX / 2, SIZE_MAX / 2 + 1,
    SIZE_MAX - 16, SIZE_MAX,
  };
  size_t i;
  void *p;

  for (i = 0; i < sizeof sizes / sizeof *sizes; ++i) {
    errno = 0;
    if ((p = keymem_alloc (sizes[i])) != NULL)
      FAIL ("keymem_alloc (%zu) succeeded", sizes[i]);
    if (errno != ENOMEM)
      FAIL ("keymem_alloc (%zu): errno %d, expected ENOMEM", sizes[i], errno);
  }
  if ((p = keymem_alloc (64)) == NULL)
    FAIL ("keymem_alloc (64) fails after the refused requests");
  keymem_free (p);
}

/* Lock limit: 64 KiB, a quarter of keymem's first piece. */
#define LIMIT (64 * 1024)

static void
small_lock_limit (void)
{
  struct rlimit rl = { .rlim_cur = LIMIT, .rlim_max = LIMIT };
  unsigned char *key;
  long locked;

  if (getuid () == 0 && (setgid (65534) == -1 || setuid (65534) == -1))
    FAIL ("cannot drop root to test a lock limit: %s", strerror (errno));
  if (setrlimit (RLIMIT_MEMLOCK, &rl) == -1)
    FAIL ("setrlimit: %s", strerror (errno));
  if ((key = keymem_alloc (64)) == NULL)
    FAIL ("keymem_alloc (64) under a %d KiB lock limit: %s",
          LIMIT / 1024, strerror (errno));
  locked = vmlck_kb ();
  if (locked <= 0)
    FAIL ("a 64-byte key under a %d KiB lock limit is not locked "
          "(VmLck %ld kB, keymem_is_locked %d)", LIMIT / 1024, locked,
          keymem_is_locked ());
  if (!keymem_is_locked () || keymem_locked_bytes () == 0 ||
      keymem_locked_bytes () > LIMIT)
    FAIL ("keymem says locked %d, %zu bytes locked, with VmLck %ld kB",
          keymem_is_locked (), keymem_locked_bytes (), locked);
  if (keymem_lock_limit () != LIMIT)
    FAIL ("keymem_lock_limit () = %zu, expected %d",
          keymem_lock_limit (), LIMIT);
  keymem_free (key);
}

static int
run (const char *name, void (*fn) (void))
{
  pid_t pid = fork ();
  int status;

  if (pid == -1) {
    perror ("fork");
    return 1;
  }
  if (pid == 0) {
    alarm (10);
    fn ();
    _exit (0);
  }
  if (waitpid (pid, &status, 0) == -1) {
    perror ("waitpid");
    return 1;
  }
  if (WIFSIGNALED (status)) {
    fprintf (stderr, "test-keymem-limits: FAIL: %s: killed by signal %d%s\n",
             name, WTERMSIG (status),
             WTERMSIG (status) == SIGALRM ? " (it hung)" : "");
    return 1;
  }
  if (WEXITSTATUS (status) != 0)
    return 1;
  printf ("test-keymem-limits: %s: ok\n", name);
  return 0;
}

int
main (void)
{
  int failures = 0;

  failures += run ("huge requests", huge_requests);
  failures += run ("small lock limit", small_lock_limit);
  return failures ? EXIT_FAILURE : EXIT_SUCCESS;
}

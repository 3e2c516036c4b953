/* Unit test of keymem (common/keymem.c), the memory that holds keys:
 * blocks are zeroed, recognised, reused after free, large ones get
 * their own mapping; everything is excluded from core dumps ("dd" in
 * /proc/self/smaps) and, where memory can be locked, locked before and
 * again after a fork (VmLck of the child).
 *
 * Whether memory can be locked here is decided by the test itself, never
 * by asking keymem: an mlock of as much as the test makes keymem lock,
 * before keymem maps anything, with RLIMIT_MEMLOCK reported.  Where it
 * can, keymem must say locked and VmLck must cover its mappings.  Where
 * it cannot, the locking is not checked and the test exits 77 (skipped,
 * never passed) once everything else has passed.
 */
#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keymem.h"

static int failures;

#define CHECK(cond, ...) do { \
    if (!(cond)) { \
      fprintf (stderr, "test-keymem: FAIL: " __VA_ARGS__); \
      fputc ('\n', stderr); \
      failures++; \
    } \
  } while (0)

static bool
all_zero (const unsigned char *p, size_t n)
{
  size_t i;

  for (i = 0; i < n; i++)
    if (p[i])
      return false;
  return true;
}

/* The "VmFlags" of the mapping holding p include "dd" (do not dump). */
static bool
not_dumped (const void *p)
{
  FILE *fp = fopen ("/proc/self/smaps", "r");
  char line[512];
  bool in = false, dd = false;

  if (fp == NULL)
    return false;
  while (fgets (line, sizeof line, fp)) {
    unsigned long a, b;
    if (sscanf (line, "%lx-%lx ", &a, &b) == 2 && strchr (line, '-') < strchr (line, ' '))
      in = (uintptr_t) p >= a && (uintptr_t) p < b;
    else if (in && strncmp (line, "VmFlags:", 8) == 0) {
      dd = strstr (line, " dd") != NULL;
      break;
    }
  }
  fclose (fp);
  return dd;
}

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

/* What this test makes keymem map at most: two 256 KiB chunks of small
 * blocks and a 300000-byte block of its own.
 */
#define LOCK_PROBE_BYTES (1024 * 1024)

/* mlock N bytes of a fresh mapping, and let them go: 0 or an errno. */
static int
try_mlock (size_t n)
{
  void *p = mmap (NULL, n, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  int err = 0;

  if (p == MAP_FAILED)
    return errno;
  if (mlock (p, n) == -1)
    err = errno;
  else
    munlock (p, n);
  munmap (p, n);
  return err;
}

/* Can this process lock what the test needs?  1 yes, 0 no (nothing can
 * be locked: keymem must then keep secrets unlocked), -1 only part of
 * it (keymem would lock some chunks and refuse others: the test cannot
 * tell right from wrong).  WHY says what was found.
 */
static int
lockable_here (char *why, size_t n)
{
  struct rlimit rl;
  char limit[64];
  int err;

  if (getrlimit (RLIMIT_MEMLOCK, &rl) == -1)
    snprintf (limit, sizeof limit, "unknown");
  else if (rl.rlim_cur == RLIM_INFINITY)
    snprintf (limit, sizeof limit, "unlimited");
  else
    snprintf (limit, sizeof limit, "%llu kB",
              (unsigned long long) rl.rlim_cur / 1024);
  if ((err = try_mlock (LOCK_PROBE_BYTES)) == 0) {
    snprintf (why, n, "an mlock of %d KiB works (RLIMIT_MEMLOCK %s, euid %d)",
              LOCK_PROBE_BYTES / 1024, limit, (int) geteuid ());
    return 1;
  }
  snprintf (why, n, "an mlock of %d KiB fails with %s (RLIMIT_MEMLOCK %s, "
            "euid %d)", LOCK_PROBE_BYTES / 1024, strerror (err), limit,
            (int) geteuid ());
  return try_mlock ((size_t) sysconf (_SC_PAGESIZE)) == 0 ? -1 : 0;
}

int
main (void)
{
  unsigned char *small[100], *big, *again;
  size_t i;
  pid_t pid;
  int status, lockable;
  char why[256];

  /* Before keymem maps anything. */
  lockable = lockable_here (why, sizeof why);
  printf ("memory locking: %s\n", why);
  if (lockable == -1) {
    printf ("test-keymem: SKIP: only part of what this test needs can be "
            "locked here; locking cannot be checked\n");
    return 77;
  }

  for (i = 0; i < 100; i++) {
    small[i] = keymem_alloc (1 + i * 37);
    CHECK (small[i] != NULL, "allocation of %zu bytes", 1 + i * 37);
    CHECK (all_zero (small[i], 1 + i * 37), "block %zu not zeroed", i);
    CHECK (keymem_contains (small[i]) &&
           keymem_contains (small[i] + i * 37), "block %zu not recognised", i);
    memset (small[i], 0xa5, 1 + i * 37);
  }
  {
    void *heap = malloc (64);
    CHECK (!keymem_contains (&i) && !keymem_contains (heap),
           "ordinary memory taken for key memory");
    free (heap);
  }
  CHECK (not_dumped (small[0]), "key memory is not excluded from core dumps");

  /* Freed blocks are wiped and reused. */
  keymem_free (small[50]);
  again = keymem_alloc (1 + 50 * 37);
  CHECK (again == small[50], "a freed block of the same size was not reused");
  CHECK (all_zero (again, 1 + 50 * 37), "a reused block was not wiped");
  small[50] = again;

  /* Larger than the biggest size class: a mapping of its own. */
  big = keymem_alloc (300000);
  CHECK (big != NULL && all_zero (big, 300000), "large allocation");
  CHECK (keymem_contains (big + 299999), "large block not recognised");
  CHECK (not_dumped (big), "large block is not excluded from core dumps");
  keymem_free (big);
  CHECK (!keymem_contains (big), "a freed large block is still key memory");
  CHECK (keymem_alloc (0) == NULL, "zero-byte allocation");

  printf ("keymem: %zu KiB mapped, %s; VmLck %ld kB\n",
          keymem_mapped_bytes () / 1024,
          keymem_is_locked () ? "locked" : "not locked", vmlck_kb ());
  CHECK (keymem_is_locked () == (lockable == 1),
         "keymem says its memory is %s, but %s",
         keymem_is_locked () ? "locked" : "not locked", why);
  if (lockable == 1)
    CHECK (vmlck_kb () * 1024 >= (long) keymem_mapped_bytes (),
           "key memory is not all locked: VmLck %ld kB, %zu KiB mapped",
           vmlck_kb (), keymem_mapped_bytes () / 1024);

  /* A fork: the child's locks are gone until keymem_after_fork. */
  fflush (stdout);
  pid = fork ();
  if (pid == 0) {
    long before = vmlck_kb ();
    if (keymem_after_fork () == -1)
      _exit (2);
    printf ("child: VmLck %ld kB after fork, %ld kB after keymem_after_fork\n",
            before, vmlck_kb ());
    fflush (stdout);
    if (lockable == 1 &&
        vmlck_kb () * 1024 < (long) keymem_mapped_bytes ())
      _exit (3);
    _exit (not_dumped (small[0]) ? 0 : 4);
  }
  CHECK (pid > 0 && waitpid (pid, &status, 0) == pid &&
         WIFEXITED (status) && WEXITSTATUS (status) == 0,
         "after a fork: key memory not locked or dumped in the child "
         "(status %d)", WEXITSTATUS (status));

  for (i = 0; i < 100; i++)
    keymem_free (small[i]);
  if (failures)
    return EXIT_FAILURE;
  if (lockable == 0) {
    printf ("test-keymem: SKIP: memory cannot be locked here (%s): all "
            "else passed, locking not checked\n", why);
    return 77;
  }
  return EXIT_SUCCESS;
}

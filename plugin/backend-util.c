/* What the zbd plugin's backends share (zbd-internal.h): the disk
 * identity helpers, the errno a client is sent, whole reads and writes,
 * and durable_sync with its per-drive latch.  The backends (emulate.c,
 * device.c) call these and zbd.c's drive logic calls the backends, so
 * nothing here calls back into either.
 */

#define _GNU_SOURCE 1          /* strerrorname_np */
#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>
#include <sys/types.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "zbd-internal.h"

/* -D zbd.fail_sync=N: the Nth data sync (fdatasync of the image or
 * the device, counted from start) fails with EIO, as when writeback
 * failed, and only that one, as Linux reports a writeback error once;
 * for tests.
 */
NBDKIT_DLL_PUBLIC int zbd_debug_fail_sync = 0;

uint64_t
zbd_random_id (void)
{
  uint64_t v = 0;

  while (v == 0)
    if (getrandom (&v, sizeof v, 0) != sizeof v) {
      /* Not a key: the clock and the PID tell servers apart well enough. */
      struct timespec ts;

      clock_gettime (CLOCK_REALTIME, &ts);
      v = ((uint64_t) ts.tv_sec << 32) ^ ts.tv_nsec ^
        ((uint64_t) getpid () << 16);
    }
  return v;
}

void
zbd_set_disk_id (char *dst, size_t len, const char *prefix, const char *s)
{
  size_t n = snprintf (dst, len, "%s", prefix);
  bool run = false;

  for (; *s && n + 1 < len; s++) {
    bool ok = (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
      (*s >= '0' && *s <= '9') || *s == '.' || *s == ':' || *s == '-';

    if (!ok && run)
      continue;
    dst[n++] = ok ? *s : '_';
    run = !ok;
  }
  /* A WWID padded with blanks would end in '_'. */
  while (n > strlen (prefix) && dst[n - 1] == '_')
    n--;
  dst[n] = '\0';
}

/* NBD carries only a few errors: nbdkit sends EPERM (and EROFS), EIO,
 * ENOMEM, ENOSPC (and EDQUOT, EFBIG), ENOTSUP and ESHUTDOWN as
 * themselves and every other errno as EINVAL, which tells the client
 * that its request was malformed.  A device's own errors (ENODATA for
 * an unreadable sector, ENOLINK or ETIMEDOUT for a lost transport,
 * EINVAL for a command the device refused) are not the client's doing:
 * they are sent as EIO, after the backend logged the real one.  EINVAL
 * from the device is EIO too; the plugin's own EINVAL (a misaligned
 * request) never reaches a backend.
 */
int
client_errno (int e)
{
  switch (e) {
  case EPERM: case EROFS: case EIO: case ENOMEM:
  case ENOSPC: case EDQUOT: case EFBIG:
    return e;
  default:
    return EIO;
  }
}

const char *
errno_name (int e)
{
  const char *name = strerrorname_np (e);

  return name ? name : "an unknown errno";
}

int
full_pread (int fd, void *buf, size_t n, off_t off)
{
  char *p = buf;

  while (n > 0) {
    ssize_t r = pread (fd, p, n, off);
    if (r == -1) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (r == 0) {
      errno = EIO;
      return -1;
    }
    p += r; n -= r; off += r;
  }
  return 0;
}

int
full_pwrite (int fd, const void *buf, size_t n, off_t off)
{
  const char *p = buf;

  while (n > 0) {
    ssize_t r = pwrite (fd, p, n, off);
    if (r == -1) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += r; n -= r; off += r;
  }
  return 0;
}

/* DR->sync_failed is set by the first failed sync of the drive and
 * never cleared (see durable_sync).
 */
bool
sync_latched (const struct drive *dr)
{
  return __atomic_load_n (&dr->sync_failed, __ATOMIC_ACQUIRE);
}

/* Every data sync of the plugin (flushes, and the image's zone table
 * and zone operations) goes through here.  After a failed fdatasync,
 * Linux marks the pages that did not reach the disk clean and reports
 * the failure once: the next fdatasync succeeds, and a zone table
 * written after it would durably claim data that is lost.  So the
 * first failure latches: from then on every sync, write, zone
 * operation and flush of that drive fails with EIO until nbdkit is
 * restarted (reads still work; the other drives of dir= go on).  It is
 * logged once; the refusals after it only at debug level.
 */
int
durable_sync (struct drive *dr, int fd, const char *key, const char *path)
{
  static int count;
  int e;

  if (sync_latched (dr)) {
    errno = EIO;
    return -1;
  }
  if (zbd_debug_fail_sync > 0 &&
      __atomic_add_fetch (&count, 1, __ATOMIC_SEQ_CST) == zbd_debug_fail_sync) {
    errno = EIO;
    e = -1;
  }
  else
    e = fdatasync (fd);
  if (e == 0)
    return 0;
  e = errno;
  if (!__atomic_exchange_n (&dr->sync_failed, true, __ATOMIC_ACQ_REL))
    nbdkit_error ("%s=%s: fdatasync failed (%s): data written since the last "
                  "flush may not be on the disk, and the kernel reports "
                  "that only once; so every write and flush now fails with "
                  "EIO until nbdkit is restarted (reads still work).  Check "
                  "the disk and the kernel log before restarting",
                  key, path, strerror (e));
  errno = EIO;
  return -1;
}

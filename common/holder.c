/* Who else holds a file or a block device: see holder.h.
 *
 * /proc/locks names a flock lock by the pid that took it and the
 * file's device and inode ("1: FLOCK ADVISORY WRITE 1234 08:02:5678 0
 * EOF", the device as hexadecimal major:minor).  That pid may have
 * exited since: a flock lock belongs to the open file, which a child
 * inherits across fork.  Then, and for block devices (held with
 * O_EXCL, which /proc/locks does not show), the holder is looked for
 * among the processes that have the same file open.
 */

#include <config.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>

#include "holder.h"

pid_t
holder_from_locks (dev_t dev, ino_t ino)
{
  FILE *fp = fopen ("/proc/locks", "r");
  char line[256];
  pid_t found = -1;

  if (!fp)
    return -1;
  while (found == -1 && fgets (line, sizeof line, fp)) {
    char kind[16];
    unsigned maj, min;
    unsigned long long i;
    long pid;

    /* "N: FLOCK ADVISORY WRITE PID MAJ:MIN:INO START END"; a waiter's
     * line starts "N: -> FLOCK", which the format skips.
     */
    if (sscanf (line, "%*d: %15s %*s %*s %ld %x:%x:%llu",
                kind, &pid, &maj, &min, &i) == 5 &&
        strcmp (kind, "FLOCK") == 0 && makedev (maj, min) == dev &&
        i == (unsigned long long) ino && pid != getpid ())
      found = pid;
  }
  fclose (fp);
  return found;
}

/* Does process PID have a descriptor open on the file ST describes
 * (the same device node for block devices)?
 */
static bool
has_open (const char *pid, const struct stat *st)
{
  char path[64];
  DIR *d;
  struct dirent *e;
  bool yes = false;

  if (snprintf (path, sizeof path, "/proc/%s/fd", pid) >= (int) sizeof path)
    return false;
  d = opendir (path);
  if (!d)
    return false;
  while (!yes && (e = readdir (d)) != NULL) {
    struct stat s;

    if (e->d_name[0] == '.')
      continue;
    if (fstatat (dirfd (d), e->d_name, &s, 0) == 0 &&
        (S_ISBLK (st->st_mode)
         ? S_ISBLK (s.st_mode) && s.st_rdev == st->st_rdev
         : s.st_dev == st->st_dev && s.st_ino == st->st_ino))
      yes = true;
  }
  closedir (d);
  return yes;
}

/* A process other than this one with the file open, or -1. */
static pid_t
holder_from_fds (const struct stat *st)
{
  DIR *d = opendir ("/proc");
  struct dirent *e;
  pid_t found = -1;

  if (!d)
    return -1;
  while (found == -1 && (e = readdir (d)) != NULL) {
    if (!isdigit ((unsigned char) e->d_name[0]) ||
        atol (e->d_name) == getpid ())
      continue;
    if (has_open (e->d_name, st))
      found = atol (e->d_name);
  }
  closedir (d);
  return found;
}

/* Is PID a live process?  Its name into COMM. */
static bool
alive (pid_t pid, char *comm, size_t len)
{
  char path[64];
  FILE *fp;

  snprintf (path, sizeof path, "/proc/%ld/comm", (long) pid);
  fp = fopen (path, "r");
  if (!fp)
    return false;
  if (!fgets (comm, len, fp))
    comm[0] = '\0';
  comm[strcspn (comm, "\n")] = '\0';
  fclose (fp);
  return true;
}

int
holder_describe (int fd, char *buf, size_t len)
{
  struct stat st;
  char comm[64];
  pid_t pid = -1;

  if (fstat (fd, &st) == 0) {
    if (!S_ISBLK (st.st_mode))
      pid = holder_from_locks (st.st_dev, st.st_ino);
    if (pid == -1 || !alive (pid, comm, sizeof comm))
      pid = holder_from_fds (&st);
  }
  if (pid == -1 || !alive (pid, comm, sizeof comm)) {
    snprintf (buf, len, "a process this one cannot see");
    return -1;
  }
  snprintf (buf, len, "process %ld, %s", (long) pid, comm);
  return 0;
}

/* An LD_PRELOAD shim that records what a process does to one file, for
 * the power-cut test (test-zbd-powercut.sh, zbd-powercut.py).
 *
 *   CRASHREC_FILE=IMAGE CRASHREC_TRACE=TRACE LD_PRELOAD=crash-recorder.so cmd
 *
 * Every descriptor opened on IMAGE (the same device and inode) is
 * followed.  Each write (pwrite, pwritev, write), fallocate, ftruncate
 * and sync (fsync, fdatasync, sync_file_range) on such a descriptor is
 * appended to TRACE as one record, with the data of writes, in the order
 * the calls took effect: the real call and its record happen under one
 * lock, so concurrent request threads are serialised in the trace as
 * the kernel saw them.  Other programs (the workload) append marker
 * records to the same TRACE with O_APPEND, so the trace also says when
 * a request was acknowledged.
 *
 * Record: "CREC", type (u32), offset (u64), extent (u64: the byte range
 * of a write, fallocate or sync_file_range), data length (u64), mode
 * (u32: fallocate's mode, sync_file_range's flags), result (i32: 0 or
 * -errno), then the data (of a write or a marker).  All in the byte
 * order of this machine, which is the one that reads the trace.
 */

#define _GNU_SOURCE 1
#include <config.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

enum rec_type {
  REC_WRITE = 1, REC_FALLOCATE = 2, REC_FSYNC = 3, REC_FDATASYNC = 4,
  REC_SYNC_FILE_RANGE = 5, REC_FTRUNCATE = 6, REC_MARK = 7,
};

struct rec_header {
  char magic[4];
  uint32_t type;
  uint64_t offset, extent, datalen;
  uint32_t mode;
  int32_t result;
} __attribute__((packed));

#define MAX_FDS 65536

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static bool followed[MAX_FDS];
static int trace_fd = -1;
static bool have_target;
static dev_t target_dev;
static ino_t target_ino;

#define REAL(name) \
  static __typeof__ (name) *real_##name; \
  if (!real_##name) real_##name = dlsym (RTLD_NEXT, #name)

/* Before main: nothing else runs yet, so the open below is not
 * followed (the target is not known until it returns).
 */
__attribute__((constructor)) static void
init_target (void)
{
  const char *file, *trace;
  struct stat st;

  file = getenv ("CRASHREC_FILE");
  trace = getenv ("CRASHREC_TRACE");
  if (!file || !trace || stat (file, &st) == -1)
    return;
  trace_fd = open (trace, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (trace_fd == -1) {
    perror (trace);
    abort ();
  }
  target_dev = st.st_dev;
  target_ino = st.st_ino;
  have_target = true;
}

/* One record, in one write(2) so that the workload's markers, appended
 * by another process, never land inside it.
 */
static void
emit (uint32_t type, uint64_t offset, uint64_t extent, uint32_t mode,
      int32_t result, const struct iovec *iov, int iovcnt)
{
  uint64_t datalen = iovcnt > 0 ? extent : 0;
  struct rec_header h = { .magic = "CREC", .type = type, .offset = offset,
                          .extent = extent, .datalen = datalen,
                          .mode = mode, .result = result };
  size_t total = sizeof h + datalen, pos = sizeof h;
  char *buf = malloc (total);
  int i;

  if (!buf)
    abort ();
  memcpy (buf, &h, sizeof h);
  for (i = 0; i < iovcnt && pos < total; i++) {
    size_t n = iov[i].iov_len < total - pos ? iov[i].iov_len : total - pos;
    memcpy (buf + pos, iov[i].iov_base, n);
    pos += n;
  }
  if (write (trace_fd, buf, total) != (ssize_t) total) {
    perror ("crash-recorder: trace write");
    abort ();
  }
  free (buf);
}

static void
follow_if_target (int fd)
{
  struct stat st;

  if (fd < 0 || fd >= MAX_FDS)
    return;
  pthread_mutex_lock (&lock);
  followed[fd] = have_target && fstat (fd, &st) == 0 &&
    st.st_dev == target_dev && st.st_ino == target_ino;
  pthread_mutex_unlock (&lock);
}

static bool
is_followed (int fd)
{
  return fd >= 0 && fd < MAX_FDS && followed[fd];
}

/* ---- opening and closing ---- */

static mode_t
mode_arg (int flags, va_list ap)
{
  return (flags & (O_CREAT | O_TMPFILE)) ? va_arg (ap, mode_t) : 0;
}

int
open (const char *path, int flags, ...)
{
  va_list ap;
  mode_t m;
  int fd;
  REAL (open);

  va_start (ap, flags);
  m = mode_arg (flags, ap);
  va_end (ap);
  fd = real_open (path, flags, m);
  follow_if_target (fd);
  return fd;
}

int
open64 (const char *path, int flags, ...)
{
  va_list ap;
  mode_t m;
  int fd;
  REAL (open64);

  va_start (ap, flags);
  m = mode_arg (flags, ap);
  va_end (ap);
  fd = real_open64 (path, flags, m);
  follow_if_target (fd);
  return fd;
}

int
openat (int dirfd, const char *path, int flags, ...)
{
  va_list ap;
  mode_t m;
  int fd;
  REAL (openat);

  va_start (ap, flags);
  m = mode_arg (flags, ap);
  va_end (ap);
  fd = real_openat (dirfd, path, flags, m);
  follow_if_target (fd);
  return fd;
}

int
openat64 (int dirfd, const char *path, int flags, ...)
{
  va_list ap;
  mode_t m;
  int fd;
  REAL (openat64);

  va_start (ap, flags);
  m = mode_arg (flags, ap);
  va_end (ap);
  fd = real_openat64 (dirfd, path, flags, m);
  follow_if_target (fd);
  return fd;
}

/* _FORTIFY_SOURCE turns some open calls into these. */
int __open_2 (const char *path, int flags);
int __open64_2 (const char *path, int flags);

int
__open_2 (const char *path, int flags)
{
  return open (path, flags);
}

int
__open64_2 (const char *path, int flags)
{
  return open64 (path, flags);
}

int
close (int fd)
{
  REAL (close);

  if (fd >= 0 && fd < MAX_FDS)
    followed[fd] = false;
  return real_close (fd);
}

/* ---- writes ---- */

static ssize_t
record_pwritev (int fd, const struct iovec *iov, int iovcnt, off_t off,
                ssize_t (*fn) (int, const struct iovec *, int, off_t))
{
  ssize_t r;

  pthread_mutex_lock (&lock);
  r = fn (fd, iov, iovcnt, off);
  if (r > 0)
    emit (REC_WRITE, off, r, 0, 0, iov, iovcnt);
  pthread_mutex_unlock (&lock);
  return r;
}

static ssize_t
real_pwritev_adapter (int fd, const struct iovec *iov, int iovcnt, off_t off)
{
  REAL (pwritev);
  return real_pwritev (fd, iov, iovcnt, off);
}

static ssize_t
real_pwrite_adapter (int fd, const struct iovec *iov, int iovcnt, off_t off)
{
  REAL (pwrite);
  return real_pwrite (fd, iov[0].iov_base, iov[0].iov_len, off);
}

ssize_t
pwrite (int fd, const void *buf, size_t n, off_t off)
{
  struct iovec iov = { (void *) buf, n };

  if (!is_followed (fd))
    return real_pwrite_adapter (fd, &iov, 1, off);
  return record_pwritev (fd, &iov, 1, off, real_pwrite_adapter);
}

ssize_t
pwrite64 (int fd, const void *buf, size_t n, off_t off)
{
  return pwrite (fd, buf, n, off);
}

ssize_t
pwritev (int fd, const struct iovec *iov, int iovcnt, off_t off)
{
  if (!is_followed (fd))
    return real_pwritev_adapter (fd, iov, iovcnt, off);
  return record_pwritev (fd, iov, iovcnt, off, real_pwritev_adapter);
}

ssize_t
pwritev64 (int fd, const struct iovec *iov, int iovcnt, off_t off)
{
  return pwritev (fd, iov, iovcnt, off);
}

ssize_t
write (int fd, const void *buf, size_t n)
{
  struct iovec iov = { (void *) buf, n };
  off_t off;
  ssize_t r;
  REAL (write);

  if (!is_followed (fd))
    return real_write (fd, buf, n);
  pthread_mutex_lock (&lock);
  off = lseek (fd, 0, SEEK_CUR);
  r = real_write (fd, buf, n);
  if (r > 0)
    emit (REC_WRITE, off, r, 0, 0, &iov, 1);
  pthread_mutex_unlock (&lock);
  return r;
}

/* ---- space and size ---- */

int
fallocate (int fd, int mode, off_t off, off_t len)
{
  int r;
  REAL (fallocate);

  if (!is_followed (fd))
    return real_fallocate (fd, mode, off, len);
  pthread_mutex_lock (&lock);
  r = real_fallocate (fd, mode, off, len);
  emit (REC_FALLOCATE, off, len, mode, r == 0 ? 0 : -errno, NULL, 0);
  pthread_mutex_unlock (&lock);
  return r;
}

int
fallocate64 (int fd, int mode, off_t off, off_t len)
{
  return fallocate (fd, mode, off, len);
}

int
ftruncate (int fd, off_t len)
{
  int r;
  REAL (ftruncate);

  if (!is_followed (fd))
    return real_ftruncate (fd, len);
  pthread_mutex_lock (&lock);
  r = real_ftruncate (fd, len);
  emit (REC_FTRUNCATE, len, 0, 0, r == 0 ? 0 : -errno, NULL, 0);
  pthread_mutex_unlock (&lock);
  return r;
}

int
ftruncate64 (int fd, off_t len)
{
  return ftruncate (fd, len);
}

/* ---- syncs ---- */

static int
record_sync (int fd, uint32_t type, int (*fn) (int))
{
  int r;

  pthread_mutex_lock (&lock);
  r = fn (fd);
  emit (type, 0, 0, 0, r == 0 ? 0 : -errno, NULL, 0);
  pthread_mutex_unlock (&lock);
  return r;
}

int
fsync (int fd)
{
  REAL (fsync);

  if (!is_followed (fd))
    return real_fsync (fd);
  return record_sync (fd, REC_FSYNC, real_fsync);
}

int
fdatasync (int fd)
{
  REAL (fdatasync);

  if (!is_followed (fd))
    return real_fdatasync (fd);
  return record_sync (fd, REC_FDATASYNC, real_fdatasync);
}

int
sync_file_range (int fd, off_t off, off_t n, unsigned int flags)
{
  int r;
  REAL (sync_file_range);

  if (!is_followed (fd))
    return real_sync_file_range (fd, off, n, flags);
  pthread_mutex_lock (&lock);
  r = real_sync_file_range (fd, off, n, flags);
  emit (REC_SYNC_FILE_RANGE, off, n, flags, r == 0 ? 0 : -errno, NULL, 0);
  pthread_mutex_unlock (&lock);
  return r;
}

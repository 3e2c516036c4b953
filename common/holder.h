/* Who else holds a file or a block device: for the one line a server
 * prints when it refuses to start on an image or drive that another
 * process is using.
 *
 * holder_describe looks in /proc/locks for the process holding a
 * flock(2) lock on the file, and, if that process is gone (a server
 * that locked the file, then forked into the background and exited in
 * the parent) or there is no lock, through /proc/PID/fd for another
 * process that has the file open.  Best effort: a process of another
 * user cannot be seen.
 */
#ifndef HOLDER_H
#define HOLDER_H

#include <stddef.h>
#include <sys/types.h>

/* Describe who holds the file FD is open on, as "process 1234,
 * nbdkit" into BUF (size LEN).  Returns 0, or -1 if no holder can be
 * found (BUF then holds "a process this one cannot see").
 */
extern int holder_describe (int fd, char *buf, size_t len);

/* The pid of the process other than this one that /proc/locks says
 * holds a flock lock on DEV:INO, or -1.
 */
extern pid_t holder_from_locks (dev_t dev, ino_t ino);

#endif /* HOLDER_H */

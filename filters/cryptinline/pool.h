/* A fixed pool of threads that share the cipher work of one request with
 * the request thread, which waits for all of it (dm-crypt's
 * crypto_wait_req, one level up).  See pool.c.
 */

#ifndef CRYPTINLINE_POOL_H
#define CRYPTINLINE_POOL_H

#include <stddef.h>

/* Process bytes [start, start + len) of a request; 0 on success, -1 on
 * failure (after nbdkit_error).  Runs on any pool thread or the caller.
 */
typedef int pool_work_fn (void *arg, size_t start, size_t len);

/* Start nthreads pool threads (0 is allowed: everything then runs on the
 * caller).  Call after nbdkit has forked.
 */
extern int pool_start (unsigned nthreads);

/* Stop and join the pool threads.  No pool_run may be in progress. */
extern void pool_stop (void);

/* Number of running pool threads. */
extern unsigned pool_threads (void);

/* Cut [0, len) into chunks of chunk bytes (the last may be shorter), let
 * the pool threads and the calling thread process them, and return when
 * every chunk is done: 0 if all succeeded, else -1.
 */
extern int pool_run (size_t len, size_t chunk, pool_work_fn *fn, void *arg);

#endif /* CRYPTINLINE_POOL_H */

/* Memory for secrets: keys, passphrases, and libgcrypt's "secure memory"
 * (cipher handles' key schedules, hash states of passphrases).
 *
 * Secrets live in anonymous mappings that are locked into RAM (mlock)
 * and left out of core dumps (MADV_DONTDUMP).  Memory locks do not
 * survive fork(2), so a process that forks after reading its key (nbdkit
 * going to the background) calls keymem_after_fork in the child.
 *
 * Mappings shrink (down to a page) to fit a small memory lock limit.  Once
 * one mapping is locked, every later one must be too: an allocation that
 * cannot be locked fails with ENOMEM (keymem_lock_refused then returns
 * true), it never lands silently in swappable memory.  If not even one
 * page can be locked (an unprivileged user with ulimit -l 0) secrets are
 * kept unlocked, still out of core dumps.
 */
#ifndef ZONED_KEYMEM_H
#define ZONED_KEYMEM_H

#include <stdbool.h>
#include <stddef.h>

/* Allocate len zeroed bytes for a secret; NULL with errno set on error. */
extern void *keymem_alloc (size_t len);

/* Wipe and release a block from keymem_alloc (NULL is allowed). */
extern void keymem_free (void *p);

/* True if p points into memory from keymem_alloc. */
extern bool keymem_contains (const void *p);

/* In the child of a fork: lock every mapping again (and keep it out of
 * core dumps).  0, or -1 with errno set if memory that was locked before
 * the fork cannot be locked again.
 */
extern int keymem_after_fork (void);

/* Bytes mapped for secrets, how many of them are locked, and whether
 * locking works here at all.
 */
extern size_t keymem_mapped_bytes (void);
extern size_t keymem_locked_bytes (void);
extern bool keymem_is_locked (void);

/* The memory lock limit (RLIMIT_MEMLOCK) in bytes, SIZE_MAX if none. */
extern size_t keymem_lock_limit (void);

/* True once an allocation failed because its memory could not be locked. */
extern bool keymem_lock_refused (void);

/* Make libgcrypt keep its secure memory here (gcry_set_allocation_handler).
 * Call before libgcrypt's initialisation is finished.
 */
extern void keymem_use_for_libgcrypt (void);

#endif /* ZONED_KEYMEM_H */

/* Memory for secrets, locked and left out of core dumps.  See keymem.h.
 *
 * How it works: a small allocator over anonymous mappings ("chunks").
 * Blocks are powers of two from 64 bytes to 64 KiB, each with a 16-byte
 * header; freed blocks are wiped and kept on a free list per size, as
 * secrets are few and small (a key, one cipher handle per thread).  A
 * larger request gets a chunk of its own, unmapped when freed.  The
 * chunks are the unit of locking: mlock and MADV_DONTDUMP apply to each
 * whole chunk when it is mapped, and again after a fork.
 *
 * Chunks for small blocks are 256 KiB where the memory lock limit allows
 * it, and smaller (halved down to one page) where it does not, so that a
 * small RLIMIT_MEMLOCK still holds the key: locking works if any page
 * can be locked.  Only when not even one page can be locked are secrets
 * kept unlocked.
 */

#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <gcrypt.h>

#include "keymem.h"

#define CHUNK_BYTES (256 * 1024)
#define HEADER_BYTES 16
#define MIN_CLASS 6                     /* 64-byte blocks */
#define MAX_CLASS 16                    /* 64 KiB blocks */
#define BLOCK_MAGIC 0x6b65796dU         /* "keym" */
#define OWN_CHUNK_CLASS 0xffU           /* block with a chunk of its own */

struct chunk {
  struct chunk *next;
  unsigned char *base;
  size_t size, used;
};

struct header {
  uint32_t magic;
  uint32_t class;
  size_t size;                          /* usable bytes after the header */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct chunk *chunks;            /* newest first */
static struct chunk *current;           /* where small blocks are cut */
static void *free_lists[MAX_CLASS + 1]; /* next pointer in each block */
static size_t mapped;
static size_t locked_bytes;             /* of mapped, how much is locked */
static enum { LOCK_UNTRIED, LOCK_WORKS, LOCK_IMPOSSIBLE } lock_state;
static bool refused;

/* Map size bytes, out of core dumps; NULL with errno set on failure. */
static void *
map_secret (size_t size)
{
  void *p = mmap (NULL, size, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

  if (p == MAP_FAILED)
    return NULL;
  (void) madvise (p, size, MADV_DONTDUMP);
  return p;
}

static long
page_size (void)
{
  long page = sysconf (_SC_PAGESIZE);
  return page > 0 ? page : 4096;
}

/* Map and lock a chunk of size bytes; where the lock limit refuses that
 * much and shrink is set, try halves down to min_size (at least a page).
 * Returns the mapping with *size set to what was mapped, or NULL.
 */
static void *
map_locked (size_t *size, bool shrink, size_t min_size)
{
  size_t page = page_size (), want = *size;
  void *p;

  if (min_size < page)
    min_size = page;
  for (;;) {
    if ((p = map_secret (want)) == NULL)
      return NULL;
    if (mlock (p, want) == 0) {
      *size = want;
      return p;
    }
    munmap (p, want);
    if (!shrink || want / 2 < min_size || want / 2 % page != 0)
      return NULL;
    want /= 2;
  }
}

/* A new chunk of size bytes (or less, down to min_size, if shrink and
 * the memory lock limit wants it), locked if locking works here.  Until
 * something could be locked, a chunk that cannot be is kept unlocked;
 * once something is locked, it is refused.
 */
static struct chunk *
new_chunk (size_t size, bool shrink, size_t min_size)
{
  struct chunk *c = malloc (sizeof *c);
  void *p = NULL;
  bool is_locked = false;

  if (c == NULL)
    return NULL;
  if (lock_state != LOCK_IMPOSSIBLE) {
    size_t got = size;
    if ((p = map_locked (&got, shrink, min_size)) != NULL) {
      lock_state = LOCK_WORKS;
      is_locked = true;
      size = got;
    }
    else if (lock_state == LOCK_WORKS) {
      refused = true;
      free (c);
      errno = ENOMEM;
      return NULL;
    }
    else
      lock_state = LOCK_IMPOSSIBLE;
  }
  if (p == NULL && (p = map_secret (size)) == NULL) {
    free (c);
    return NULL;
  }
  c->base = p;
  c->size = size;
  c->used = 0;
  c->next = chunks;
  chunks = c;
  mapped += size;
  if (is_locked)
    locked_bytes += size;
  return c;
}

static void
drop_chunk (struct chunk *c)
{
  struct chunk **pp;

  for (pp = &chunks; *pp != c; pp = &(*pp)->next)
    ;
  *pp = c->next;
  explicit_bzero (c->base, c->size);
  if (lock_state == LOCK_WORKS) {
    munlock (c->base, c->size);
    locked_bytes -= c->size;
  }
  munmap (c->base, c->size);
  mapped -= c->size;
  free (c);
}

/* The class of a block of total bytes (header included), for totals
 * up to the largest class only.
 */
static unsigned
size_class (size_t total)
{
  unsigned cls = MIN_CLASS;

  while (((size_t) 1 << cls) < total)
    cls++;
  return cls;
}

/* The largest request: its header and page rounding must not wrap, and
 * no secret comes near it.
 */
#define MAX_REQUEST (SIZE_MAX / 4)

static struct header *
alloc_block (size_t len)
{
  size_t total = len + HEADER_BYTES;
  unsigned cls;
  struct header *h;
  struct chunk *c;

  if (len > MAX_REQUEST) {
    errno = ENOMEM;
    return NULL;
  }
  if (total > (size_t) 1 << MAX_CLASS) {
    size_t page = page_size ();
    size_t size = (total + page - 1) / page * page;
    if ((c = new_chunk (size, false, size)) == NULL)
      return NULL;
    c->used = size;
    h = (struct header *) c->base;
    h->class = OWN_CHUNK_CLASS;
  }
  else if (free_lists[cls = size_class (total)]) {
    h = free_lists[cls];
    memcpy (&free_lists[cls], h + 1, sizeof (void *));
    h->class = cls;
  }
  else {
    size_t bytes = (size_t) 1 << cls;
    c = current;
    if (c == NULL || c->size - c->used < bytes) {
      if ((c = new_chunk (CHUNK_BYTES, true, bytes)) == NULL)
        return NULL;
      current = c;
    }
    h = (struct header *) (c->base + c->used);
    c->used += bytes;
    h->class = cls;
  }
  h->magic = BLOCK_MAGIC;
  h->size = len;
  memset (h + 1, 0, len);
  return h;
}

void *
keymem_alloc (size_t len)
{
  struct header *h;

  if (len == 0) {
    errno = EINVAL;
    return NULL;
  }
  pthread_mutex_lock (&lock);
  h = alloc_block (len);
  pthread_mutex_unlock (&lock);
  return h ? h + 1 : NULL;
}

static struct chunk *
chunk_of (const void *p)
{
  const unsigned char *q = p;
  struct chunk *c;

  for (c = chunks; c; c = c->next)
    if (q >= c->base && q < c->base + c->size)
      return c;
  return NULL;
}

bool
keymem_contains (const void *p)
{
  bool r;

  pthread_mutex_lock (&lock);
  r = chunk_of (p) != NULL;
  pthread_mutex_unlock (&lock);
  return r;
}

void
keymem_free (void *p)
{
  struct header *h;

  if (p == NULL)
    return;
  h = (struct header *) p - 1;
  if (h->magic != BLOCK_MAGIC)
    abort ();                   /* not ours, or freed twice */
  pthread_mutex_lock (&lock);
  if (h->class == OWN_CHUNK_CLASS)
    drop_chunk (chunk_of (h));
  else {
    unsigned cls = h->class;
    explicit_bzero (h, (size_t) 1 << cls);
    memcpy (h + 1, &free_lists[cls], sizeof (void *));
    free_lists[cls] = h;
  }
  pthread_mutex_unlock (&lock);
}

int
keymem_after_fork (void)
{
  struct chunk *c;
  int r = 0;

  pthread_mutex_lock (&lock);
  for (c = chunks; c; c = c->next) {
    (void) madvise (c->base, c->size, MADV_DONTDUMP);
    if (lock_state == LOCK_WORKS && mlock (c->base, c->size) == -1)
      r = -1;
  }
  pthread_mutex_unlock (&lock);
  return r;
}

size_t
keymem_mapped_bytes (void)
{
  size_t r;

  pthread_mutex_lock (&lock);
  r = mapped;
  pthread_mutex_unlock (&lock);
  return r;
}

size_t
keymem_locked_bytes (void)
{
  size_t r;

  pthread_mutex_lock (&lock);
  r = locked_bytes;
  pthread_mutex_unlock (&lock);
  return r;
}

size_t
keymem_lock_limit (void)
{
  struct rlimit rl;

  if (getrlimit (RLIMIT_MEMLOCK, &rl) == -1 || rl.rlim_cur == RLIM_INFINITY ||
      rl.rlim_cur > SIZE_MAX)
    return SIZE_MAX;
  return rl.rlim_cur;
}

bool
keymem_is_locked (void)
{
  bool r;

  pthread_mutex_lock (&lock);
  r = lock_state == LOCK_WORKS;
  pthread_mutex_unlock (&lock);
  return r;
}

bool
keymem_lock_refused (void)
{
  bool r;

  pthread_mutex_lock (&lock);
  r = refused;
  pthread_mutex_unlock (&lock);
  return r;
}

/* ---- libgcrypt's allocation hooks ----------------------------------- */

/* libgcrypt routes every free and realloc here, secure or not; ordinary
 * blocks come from malloc.
 */
static int
gcry_is_secure_hook (const void *p)
{
  return keymem_contains (p);
}

static void
gcry_free_hook (void *p)
{
  if (keymem_contains (p))
    keymem_free (p);
  else
    free (p);
}

static void *
gcry_realloc_hook (void *p, size_t n)
{
  struct header *h;
  void *q;

  if (p == NULL || !keymem_contains (p))
    return realloc (p, n);
  h = (struct header *) p - 1;
  if ((q = keymem_alloc (n)) == NULL)
    return NULL;
  memcpy (q, p, h->size < n ? h->size : n);
  keymem_free (p);
  return q;
}

void
keymem_use_for_libgcrypt (void)
{
  gcry_set_allocation_handler (malloc, keymem_alloc, gcry_is_secure_hook,
                               gcry_realloc_hook, gcry_free_hook);
}

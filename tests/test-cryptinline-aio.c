/* Concurrency test for the cryptinline filter: several connections at
 * once, each with many requests in flight (libnbd aio), each owning a
 * disjoint region of the disk.  Every connection fills its region with
 * writes of varied aligned sizes, then reads it back in other sizes, and
 * every byte is checked against a pattern computed from its offset.
 *
 *   test-cryptinline-aio URI [CONNECTIONS]
 */

#include <config.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>

#define IN_FLIGHT 32
#define MAX_REQUEST (256 * 1024)
#define DEADLINE_SECONDS 240

struct conn {
  pthread_t thread;
  const char *uri;
  unsigned index, nconns;
  bool ok;
};

struct slot {
  int64_t cookie;               /* 0: free */
  bool is_read;
  uint64_t offset;
  size_t len;
  unsigned char *buf;
};

static time_t deadline;

/* The byte expected at disk offset p: a mix of p, never all zeros. */
static unsigned char
pattern (uint64_t p)
{
  uint64_t x = (p / 8 + 1) * UINT64_C (0x9E3779B97F4A7C15);
  return (x >> (8 * (p % 8))) & 0xff;
}

static void
fill (unsigned char *buf, uint64_t offset, size_t len)
{
  size_t i;
  for (i = 0; i < len; ++i)
    buf[i] = pattern (offset + i);
}

static bool
verify (const unsigned char *buf, uint64_t offset, size_t len)
{
  size_t i;
  for (i = 0; i < len; ++i)
    if (buf[i] != pattern (offset + i)) {
      fprintf (stderr, "FAIL: byte at offset %" PRIu64 " is 0x%02x, "
               "expected 0x%02x\n", offset + i, buf[i],
               pattern (offset + i));
      return false;
    }
  return true;
}

/* Cover [start, end) with requests of pseudo-random aligned sizes, up to
 * IN_FLIGHT at once; reads are verified on completion.
 */
static bool
run_phase (struct nbd_handle *nbd, struct slot *slots, bool is_read,
           uint64_t start, uint64_t end, uint32_t sector, unsigned *seed)
{
  uint64_t next = start;
  unsigned busy = 0, i;
  int r;

  while (next < end || busy > 0) {
    if (time (NULL) > deadline) {
      fprintf (stderr, "FAIL: requests did not finish in %d s\n",
               DEADLINE_SECONDS);
      return false;
    }
    for (i = 0; i < IN_FLIGHT && next < end; ++i) {
      struct slot *s = &slots[i];
      size_t len;
      if (s->cookie)
        continue;
      len = (rand_r (seed) % (MAX_REQUEST / sector) + 1) * (size_t) sector;
      if (len > end - next)
        len = end - next;
      s->is_read = is_read;
      s->offset = next;
      s->len = len;
      if (is_read)
        s->cookie = nbd_aio_pread (nbd, s->buf, len, next,
                                   NBD_NULL_COMPLETION, 0);
      else {
        fill (s->buf, next, len);
        s->cookie = nbd_aio_pwrite (nbd, s->buf, len, next,
                                    NBD_NULL_COMPLETION, 0);
      }
      if (s->cookie == -1) {
        fprintf (stderr, "FAIL: %s\n", nbd_get_error ());
        return false;
      }
      next += len;
      busy++;
    }
    if (nbd_poll (nbd, 1000) == -1) {
      fprintf (stderr, "FAIL: poll: %s\n", nbd_get_error ());
      return false;
    }
    for (i = 0; i < IN_FLIGHT; ++i) {
      struct slot *s = &slots[i];
      if (!s->cookie)
        continue;
      r = nbd_aio_command_completed (nbd, s->cookie);
      if (r == 0)
        continue;
      if (r == -1) {
        fprintf (stderr, "FAIL: %s at offset %" PRIu64 " length %zu: %s\n",
                 s->is_read ? "read" : "write", s->offset, s->len,
                 nbd_get_error ());
        return false;
      }
      if (s->is_read && !verify (s->buf, s->offset, s->len))
        return false;
      s->cookie = 0;
      busy--;
    }
  }
  return true;
}

static void *
connection (void *arg)
{
  struct conn *c = arg;
  struct nbd_handle *nbd = nbd_create ();
  struct slot slots[IN_FLIGHT] = { { 0 } };
  unsigned seed = 1000 + c->index, i;
  uint64_t size, start, end;
  int64_t sector;

  c->ok = false;
  if (nbd == NULL || nbd_connect_uri (nbd, c->uri) == -1) {
    fprintf (stderr, "FAIL: connect: %s\n", nbd_get_error ());
    goto out;
  }
  size = nbd_get_size (nbd);
  sector = nbd_get_block_size (nbd, LIBNBD_SIZE_MINIMUM);
  if ((int64_t) size <= 0 || sector <= 0) {
    fprintf (stderr, "FAIL: no size or block size\n");
    goto out;
  }
  start = size / c->nconns * c->index / sector * sector;
  end = size / c->nconns * (c->index + 1) / sector * sector;
  for (i = 0; i < IN_FLIGHT; ++i)
    if ((slots[i].buf = malloc (MAX_REQUEST)) == NULL) {
      perror ("malloc");
      goto out;
    }
  if (run_phase (nbd, slots, false, start, end, sector, &seed) &&
      run_phase (nbd, slots, true, start, end, sector, &seed) &&
      nbd_shutdown (nbd, 0) == 0)
    c->ok = true;
 out:
  for (i = 0; i < IN_FLIGHT; ++i)
    free (slots[i].buf);
  nbd_close (nbd);
  return NULL;
}

int
main (int argc, char *argv[])
{
  unsigned nconns = argc > 2 ? atoi (argv[2]) : 4, i;
  struct conn *conns;
  bool ok = true;

  if (argc < 2 || nconns < 1 || nconns > 64) {
    fprintf (stderr, "usage: test-cryptinline-aio URI [CONNECTIONS]\n");
    return 1;
  }
  deadline = time (NULL) + DEADLINE_SECONDS;
  conns = calloc (nconns, sizeof *conns);
  if (conns == NULL) {
    perror ("calloc");
    return 1;
  }
  for (i = 0; i < nconns; ++i) {
    conns[i] = (struct conn) { .uri = argv[1], .index = i, .nconns = nconns };
    if (pthread_create (&conns[i].thread, NULL, connection, &conns[i]) != 0) {
      perror ("pthread_create");
      return 1;
    }
  }
  for (i = 0; i < nconns; ++i) {
    pthread_join (conns[i].thread, NULL);
    ok &= conns[i].ok;
  }
  free (conns);
  printf ("%u connections x %d requests in flight: %s\n", nconns, IN_FLIGHT,
          ok ? "all data verified" : "FAILED");
  return ok ? 0 : 1;
}

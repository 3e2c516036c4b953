/* zone-writer: the ordering stress test of the zbd plugin's write gate.
 *
 *   zone-writer URI FIRST-ZONE NR-ZONES [CONNECTIONS [WINDOW [SEED [BYTES]]]]
 *
 * Fills NR-ZONES sequential zones from FIRST-ZONE (geometry from the
 * export description) with writes of 4-16 KiB.  The writes of all
 * zones are interleaved into one global list in write-pointer order,
 * dealt round robin to CONNECTIONS libnbd handles (default 4); each
 * connection keeps up to WINDOW (default 8) writes in flight and sends
 * them shuffled within blocks of WINDOW.  BYTES (default: the zone
 * capacity) limits how much of each zone is written.  So writes reach the server
 * out of order, across connections, and the plugin must put them back
 * in order.  Then every byte is read back and compared, and every
 * zone must be full.  Exits 0 only if all writes succeeded and all
 * data is right.
 */
#include <config.h>

#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>

#include "zoned-geometry.h"

#define MAX_CONNS 16
#define DEADLINE_SECONDS 120

struct write { uint64_t offset; uint32_t len; };

struct conn {
  pthread_t thread;
  struct nbd_handle *nbd;
  struct write *w;              /* this connection's writes, send order */
  size_t nr;
  unsigned window;
  int failed;
};

static const char *uri;
static uint64_t fill_bytes;      /* per zone */
static time_t deadline;

static void
fill_pattern (char *buf, uint64_t offset, uint32_t len)
{
  uint32_t i;

  for (i = 0; i < len; i += 8) {
    uint64_t v = (offset + i) * 0x9e3779b97f4a7c15ULL;
    memcpy (buf + i, &v, 8);
  }
}

static struct nbd_handle *
open_conn (void)
{
  struct nbd_handle *nbd = nbd_create ();

  if (!nbd || nbd_set_full_info (nbd, true) == -1 ||
      nbd_add_meta_context (nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1 ||
      nbd_connect_uri (nbd, uri) == -1) {
    fprintf (stderr, "zone-writer: connect %s: %s\n", uri, nbd_get_error ());
    exit (EXIT_FAILURE);
  }
  return nbd;
}

/* Shuffle each block of WINDOW consecutive writes. */
static void
shuffle_blocks (struct write *w, size_t nr, unsigned window,
                unsigned *seed)
{
  size_t b, i;

  for (b = 0; b < nr; b += window) {
    size_t n = nr - b < window ? nr - b : window;
    for (i = n - 1; i > 0; i--) {
      size_t j = rand_r (seed) % (i + 1);
      struct write t = w[b + i];
      w[b + i] = w[b + j];
      w[b + j] = t;
    }
  }
}

static void *
run_conn (void *arg)
{
  struct conn *c = arg;
  int64_t cookies[64];
  char *bufs[64];
  unsigned inflight = 0, k;
  size_t next = 0;

  for (k = 0; k < c->window; k++) {
    bufs[k] = malloc (16384);
    cookies[k] = 0;
  }
  while ((next < c->nr || inflight > 0) && !c->failed) {
    /* Fill the window. */
    for (k = 0; k < c->window && next < c->nr; k++) {
      if (cookies[k] != 0)
        continue;
      fill_pattern (bufs[k], c->w[next].offset, c->w[next].len);
      cookies[k] = nbd_aio_pwrite (c->nbd, bufs[k], c->w[next].len,
                                   c->w[next].offset,
                                   NBD_NULL_COMPLETION, 0);
      if (cookies[k] == -1) {
        fprintf (stderr, "zone-writer: aio_pwrite: %s\n", nbd_get_error ());
        c->failed = 1;
        break;
      }
      next++;
      inflight++;
    }
    if (c->failed)
      break;
    if (time (NULL) > deadline) {
      fprintf (stderr, "zone-writer: deadline passed with %u in flight\n",
               inflight);
      c->failed = 1;
      break;
    }
    if (nbd_poll (c->nbd, 1000) == -1) {
      fprintf (stderr, "zone-writer: poll: %s\n", nbd_get_error ());
      c->failed = 1;
      break;
    }
    for (k = 0; k < c->window; k++) {
      int r;

      if (cookies[k] == 0)
        continue;
      r = nbd_aio_command_completed (c->nbd, cookies[k]);
      if (r == 0)
        continue;
      if (r == -1) {
        fprintf (stderr, "zone-writer: a write failed: %s\n",
                 nbd_get_error ());
        c->failed = 1;
      }
      cookies[k] = 0;
      inflight--;
    }
  }
  for (k = 0; k < c->window; k++)
    free (bufs[k]);
  return NULL;
}

static int
verify (struct nbd_handle *nbd, const struct zoned_geometry *g,
        uint64_t first, uint64_t nzones)
{
  char *got = malloc (fill_bytes), *want = malloc (fill_bytes);
  uint64_t z;
  int r = 0;

  for (z = first; z < first + nzones && r == 0; z++) {
    uint64_t start = z * g->zone_size;
    if (nbd_pread (nbd, got, fill_bytes, start, 0) == -1) {
      fprintf (stderr, "zone-writer: read zone %" PRIu64 ": %s\n", z,
               nbd_get_error ());
      r = -1;
      break;
    }
    fill_pattern (want, start, fill_bytes);
    if (memcmp (got, want, fill_bytes) != 0) {
      uint64_t i = 0;
      while (got[i] == want[i])
        i++;
      fprintf (stderr, "zone-writer: zone %" PRIu64 " differs at offset %"
               PRIu64 "\n", z, start + i);
      r = -1;
    }
  }
  free (got);
  free (want);
  return r;
}

int
main (int argc, char *argv[])
{
  struct conn conns[MAX_CONNS];
  struct zoned_geometry g;
  struct nbd_handle *nbd;
  struct write *all;
  size_t nr_all = 0, cap_writes, i;
  uint64_t first, nzones, z, pos[4096];
  unsigned nconns, window, seed;
  char err[256];
  int failed = 0;

  if (argc < 4) {
    fprintf (stderr, "usage: zone-writer URI FIRST-ZONE NR-ZONES "
             "[CONNECTIONS [WINDOW [SEED [BYTES]]]]\n");
    return EXIT_FAILURE;
  }
  uri = argv[1];
  first = strtoull (argv[2], NULL, 0);
  nzones = strtoull (argv[3], NULL, 0);
  nconns = argc > 4 ? atoi (argv[4]) : 4;
  window = argc > 5 ? atoi (argv[5]) : 8;
  seed = argc > 6 ? (unsigned) atoi (argv[6]) : (unsigned) time (NULL);
  if (nconns < 1 || nconns > MAX_CONNS || window < 1 || window > 64 ||
      nzones < 1 || nzones > 4096) {
    fprintf (stderr, "zone-writer: connections 1-%d, window 1-64, zones "
             "1-4096\n", MAX_CONNS);
    return EXIT_FAILURE;
  }
  printf ("zone-writer: seed %u\n", seed);
  deadline = time (NULL) + DEADLINE_SECONDS;

  nbd = open_conn ();
  if (zoned_geometry_parse (nbd_get_export_description (nbd), &g,
                            err, sizeof err) == -1) {
    fprintf (stderr, "zone-writer: %s\n", err);
    return EXIT_FAILURE;
  }
  for (z = first; z < first + nzones; z++)
    if (zoned_geometry_is_conventional (&g, z) || z >= g.nr_zones) {
      fprintf (stderr, "zone-writer: zone %" PRIu64 " is not a sequential "
               "zone\n", z);
      return EXIT_FAILURE;
    }

  /* Global write list: round robin over the zones, each zone's writes
   * in WP order, sizes 4-16 KiB.
   */
  fill_bytes = argc > 7 ? strtoull (argv[7], NULL, 0) : g.zone_capacity;
  if (fill_bytes == 0 || fill_bytes > g.zone_capacity || fill_bytes % 4096) {
    fprintf (stderr, "zone-writer: BYTES must be a multiple of 4096 up to "
             "the zone capacity %" PRIu64 "\n", g.zone_capacity);
    return EXIT_FAILURE;
  }
  cap_writes = fill_bytes / 4096 * nzones;
  all = malloc (cap_writes * sizeof *all);
  for (z = 0; z < nzones; z++)
    pos[z] = (first + z) * g.zone_size;
  for (;;) {
    bool any = false;
    for (z = 0; z < nzones; z++) {
      uint64_t end = (first + z) * g.zone_size + fill_bytes;
      uint32_t len = 4096 * (1 + rand_r (&seed) % 4);
      if (pos[z] >= end)
        continue;
      if (pos[z] + len > end)
        len = end - pos[z];
      all[nr_all++] = (struct write) { pos[z], len };
      pos[z] += len;
      any = true;
    }
    if (!any)
      break;
  }

  for (i = 0; i < nconns; i++) {
    size_t j;
    conns[i] = (struct conn) { .nbd = open_conn (), .window = window };
    conns[i].w = malloc (nr_all * sizeof *all);
    for (j = i; j < nr_all; j += nconns)
      conns[i].w[conns[i].nr++] = all[j];
    shuffle_blocks (conns[i].w, conns[i].nr, window, &seed);
  }
  for (i = 0; i < nconns; i++)
    pthread_create (&conns[i].thread, NULL, run_conn, &conns[i]);
  for (i = 0; i < nconns; i++) {
    pthread_join (conns[i].thread, NULL);
    failed |= conns[i].failed;
    nbd_shutdown (conns[i].nbd, 0);
    nbd_close (conns[i].nbd);
    free (conns[i].w);
  }
  if (failed) {
    fprintf (stderr, "zone-writer: FAIL: some of %zu writes failed\n",
             nr_all);
    return EXIT_FAILURE;
  }
  if (nbd_flush (nbd, 0) == -1) {
    fprintf (stderr, "zone-writer: flush: %s\n", nbd_get_error ());
    return EXIT_FAILURE;
  }
  if (verify (nbd, &g, first, nzones) == -1)
    return EXIT_FAILURE;
  printf ("zone-writer: %zu writes over %u connections (window %u) into %"
          PRIu64 " zones landed in order\n", nr_all, nconns, window, nzones);
  nbd_shutdown (nbd, 0);
  nbd_close (nbd);
  free (all);
  zoned_geometry_free (&g);
  return EXIT_SUCCESS;
}

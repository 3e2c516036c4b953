/* A zoned NBD export from the client (zone-export.h): connect with a
 * bounded handshake, check that the export is zoned and offers block
 * status, read its geometry from the export description and its write
 * pointers from block status (zone-report.c does the arithmetic).
 * Messages with strings from the server are printed with control
 * characters escaped.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>

#include "zone-export.h"

const char *progname = "nbdzone";

/* Print S to stderr with every byte outside printable ASCII shown as
 * \xNN: error messages carry strings from the server (its export
 * description, its error replies), which must not drive the terminal.
 */
void
put_sanitised (const char *s)
{
  const unsigned char *p;

  for (p = (const unsigned char *) s; *p; p++) {
    if (*p >= 0x20 && *p < 0x7f)
      fputc (*p, stderr);
    else
      fprintf (stderr, "\\x%02x", *p);
  }
}

void
die_nbd (const struct disk *d, const char *what)
{
  fprintf (stderr, "%s: %s ", progname, what);
  put_sanitised (d->uri);
  fputs (": ", stderr);
  put_sanitised (nbd_get_error () ? nbd_get_error () : "unknown error");
  fputc ('\n', stderr);
  exit (EXIT_FAILURE);
}

/* One line: what failed, on which export, why (from the server). */
void
die_msg (const struct disk *d, const char *what, const char *why)
{
  fprintf (stderr, "%s: %s ", progname, what);
  put_sanitised (d->uri);
  fputs (": ", stderr);
  put_sanitised (why);
  fputc ('\n', stderr);
  exit (EXIT_FAILURE);
}

static uint64_t
clock_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct nbd_handle *
nbdzone_connect (const char *uri, unsigned timeout_s,
                 volatile sig_atomic_t *stop, char *err, size_t errlen)
{
  struct nbd_handle *nbd = nbd_create ();
  uint64_t began = clock_ms ();

  if (!nbd) {
    snprintf (err, errlen, "%s", nbd_get_error ());
    return NULL;
  }
  /* The URI comes from the user's command line: let it name local
   * files, such as the TLS-PSK file of an nbds:// URI.
   */
  if (nbd_set_uri_allow_local_file (nbd, true) == -1 ||
      nbd_set_full_info (nbd, true) == -1 ||
      nbd_add_meta_context (nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1 ||
      nbd_aio_connect_uri (nbd, uri) == -1)
    goto fail;
  /* The handshake, bounded: a server that accepts the connection and
   * then says nothing must not hang the caller beyond its timeout.
   */
  while (nbd_aio_is_connecting (nbd) == 1) {
    if (stop && *stop) {
      snprintf (err, errlen, "interrupted by a signal during the NBD "
                "handshake");
      nbd_close (nbd);
      return NULL;
    }
    if (timeout_s && clock_ms () - began >= (uint64_t) timeout_s * 1000) {
      snprintf (err, errlen, "no reply from the server during the NBD "
                "handshake for %u s (--timeout)", timeout_s);
      nbd_close (nbd);
      return NULL;
    }
    if (nbd_poll (nbd, 100) == -1 && errno != EINTR)
      goto fail;
  }
  if (nbd_aio_is_ready (nbd) != 1)
    goto fail;
  return nbd;

 fail:
  snprintf (err, errlen, "%s",
            nbd_get_error () ? nbd_get_error () : "the handshake failed");
  nbd_close (nbd);
  return NULL;
}

/* Connect D to URI and read its geometry.  Returns 0; or -1 with the
 * failure in WHAT (the start of a message about URI: "cannot connect
 * to", ...) and the reason in WHY.
 */
static int
disk_connect (struct disk *d, const char *uri, unsigned timeout_s,
              volatile sig_atomic_t *stop, const char **what,
              char *why, size_t whylen)
{
  char *desc;
  int64_t size;
  int r;

  d->uri = uri;
  d->nbd = nbdzone_connect (uri, timeout_s, stop, why, whylen);
  if (!d->nbd) {
    *what = "cannot connect to";
    return -1;
  }
  size = nbd_get_size (d->nbd);
  if (size == -1) {
    *what = "cannot get the size of";
    snprintf (why, whylen, "%s", nbd_get_error ());
    return -1;
  }
  d->l.size = size;
  desc = nbd_get_export_description (d->nbd);    /* NULL if none */
  r = zoned_geometry_parse (desc, &d->l.g, why, whylen);
  free (desc);
  if (r == -1) {
    *what = "not a zoned export:";
    return -1;
  }
  if (nbd_can_meta_context (d->nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) != 1) {
    *what = "no block status:";
    snprintf (why, whylen, "it does not offer block status "
              "(base:allocation), so its write pointers cannot be read");
    return -1;
  }
  return 0;
}

void
connect_disk (struct disk *d, const char *uri, unsigned timeout_s,
              volatile sig_atomic_t *stop)
{
  const char *what = "";
  char err[512];

  if (disk_connect (d, uri, timeout_s, stop, &what, err, sizeof err) == -1) {
    if (strcmp (what, "not a zoned export:") == 0) {
      fprintf (stderr, "%s: ", progname);
      put_sanitised (uri);
      fputs (" is not a zoned export: ", stderr);
      put_sanitised (err);
      fputc ('\n', stderr);
      exit (EXIT_FAILURE);
    }
    if (strcmp (what, "no block status:") == 0) {
      fprintf (stderr, "%s: %s does not offer block status "
               "(base:allocation), so its write pointers cannot be read\n",
               progname, uri);
      exit (EXIT_FAILURE);
    }
    die_msg (d, what, err);
  }
  if (d->l.g.states_omitted)
    fprintf (stderr, "%s: warning: %s names only some of the zones its "
             "device turned read-only or offline: %" PRIu64 " more do not "
             "fit in the 4096-byte export description, and show here as "
             "their write pointers read.  Writes to them fail on the "
             "server; blkzone report on the server lists them all\n",
             progname, uri, d->l.g.states_omitted);
}

int
reconnect_disk (struct disk *d, const char *uri, unsigned timeout_s,
                volatile sig_atomic_t *stop, char *why, size_t whylen)
{
  const char *what = "";
  char err[400];

  memset (d, 0, sizeof *d);
  if (disk_connect (d, uri, timeout_s, stop, &what, err, sizeof err) == 0)
    return 0;
  if (strcmp (what, "cannot connect to") == 0)
    snprintf (why, whylen, "%s", err);   /* the caller names the URI */
  else
    snprintf (why, whylen, "%s %s", what, err);
  if (d->nbd)
    nbd_close (d->nbd);
  d->nbd = NULL;
  zoned_geometry_free (&d->l.g);
  return -1;
}

static bool
same_ranges (const struct zoned_range *a, size_t na,
             const struct zoned_range *b, size_t nb)
{
  return na == nb && (na == 0 || memcmp (a, b, na * sizeof *a) == 0);
}

/* Is NOW the disk A was, with the same key?  Else the first difference
 * in WHY.
 */
bool
same_disk (const struct disk *a, const struct disk *now, char *why,
           size_t whylen)
{
  const struct zoned_geometry *g = &a->l.g, *n = &now->l.g;

  if (a->l.size != now->l.size)
    snprintf (why, whylen, "its size is %" PRIu64 " bytes, was %" PRIu64,
              now->l.size, a->l.size);
  else if (strcmp (g->model, n->model) || g->zone_size != n->zone_size ||
           g->zone_capacity != n->zone_capacity ||
           g->nr_zones != n->nr_zones || g->block_size != n->block_size ||
           !same_ranges (g->conventional, g->nr_conventional_ranges,
                         n->conventional, n->nr_conventional_ranges))
    snprintf (why, whylen, "its zone geometry differs");
  else if (strcmp (g->disk_id, n->disk_id))
    snprintf (why, whylen, "it is another disk (disk-id %s, was %s)",
              n->disk_id[0] ? n->disk_id : "none",
              g->disk_id[0] ? g->disk_id : "none");
  else if (strcmp (g->key_check, n->key_check))
    snprintf (why, whylen, "it is served with another key or encryption "
              "format (key-check %s, was %s)",
              n->key_check[0] ? n->key_check : "none",
              g->key_check[0] ? g->key_check : "none");
  else
    return true;
  return false;
}

static int
feed_scan (void *opaque, const char *metacontext, uint64_t offset,
           uint32_t *entries, size_t nr_entries, int *error)
{
  if (strcmp (metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0)
    wp_scan_extents (opaque, offset, entries, nr_entries);
  return 0;
}

int
zone_wps_sync (struct nbd_handle *nbd, const struct zone_layout *l,
               uint64_t first, uint64_t count, uint64_t *wp,
               char *err, size_t errlen)
{
  struct wp_scan s;
  uint64_t offset, length;

  wp_scan_init (&s, l, first, count, wp);
  while (wp_scan_next (&s, &offset, &length)) {
    uint64_t before = s.pos;

    if (nbd_block_status (nbd, length, offset,
                          (nbd_extent_callback) { .callback = feed_scan,
                                                  .user_data = &s }, 0) == -1) {
      snprintf (err, errlen, "%s",
                nbd_get_error () ? nbd_get_error () : "unknown error");
      return -1;
    }
    if (s.bad) {
      wp_scan_error (&s, err, errlen);
      return -1;
    }
    if (s.pos == before) {
      snprintf (err, errlen, "block status made no progress at offset %"
                PRIu64, s.pos);
      return -1;
    }
  }
  return 0;
}

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

void
connect_disk (struct disk *d, const char *uri, unsigned timeout_s,
              volatile sig_atomic_t *stop)
{
  char err[512];
  char *desc;
  int64_t size;
  int r;

  d->uri = uri;
  d->nbd = nbdzone_connect (uri, timeout_s, stop, err, sizeof err);
  if (!d->nbd)
    die_msg (d, "cannot connect to", err);
  size = nbd_get_size (d->nbd);
  if (size == -1)
    die_nbd (d, "cannot get the size of");
  d->l.size = size;
  desc = nbd_get_export_description (d->nbd);    /* NULL if none */
  r = zoned_geometry_parse (desc, &d->l.g, err, sizeof err);
  free (desc);
  if (r == -1) {
    fprintf (stderr, "%s: ", progname);
    put_sanitised (uri);
    fputs (" is not a zoned export: ", stderr);
    put_sanitised (err);
    fputc ('\n', stderr);
    exit (EXIT_FAILURE);
  }
  if (d->l.g.states_omitted)
    fprintf (stderr, "%s: warning: %s names only some of the zones its "
             "device turned read-only or offline: %" PRIu64 " more do not "
             "fit in the 4096-byte export description, and show here as "
             "their write pointers read.  Writes to them fail on the "
             "server; blkzone report on the server lists them all\n",
             progname, uri, d->l.g.states_omitted);
  if (nbd_can_meta_context (d->nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) != 1) {
    fprintf (stderr, "%s: %s does not offer block status "
             "(base:allocation), so its write pointers cannot be read\n",
             progname, uri);
    exit (EXIT_FAILURE);
  }
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

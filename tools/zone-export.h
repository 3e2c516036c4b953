/* A zoned NBD export from the client, as every nbdzone command sees it:
 * the connection, the zone layout from the export description, and the
 * write pointers from block status.  No ublk here: "report", "reset"
 * and "finish" use it alone, "attach" on top of it.
 */
#ifndef NBDZONE_ZONE_EXPORT_H
#define NBDZONE_ZONE_EXPORT_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libnbd.h>

#include "zone-report.h"

/* The name messages start with. */
extern const char *progname;

struct disk {
  struct nbd_handle *nbd;
  const char *uri;
  struct zone_layout l;
};

/* Print S to stderr with bytes outside printable ASCII as \\xNN. */
extern void put_sanitised (const char *s);
/* "PROGNAME: WHAT URI: libnbd's error" (or WHY), then exit 1. */
extern void die_nbd (const struct disk *d, const char *what);
extern void die_msg (const struct disk *d, const char *what, const char *why);

/* A connection asking for base:allocation, or NULL with the reason in
 * ERR.  The handshake gives up after TIMEOUT_S seconds (0: never) or
 * when *STOP is set (a signal; STOP may be NULL).
 */
extern struct nbd_handle *nbdzone_connect (const char *uri,
                                           unsigned timeout_s,
                                           volatile sig_atomic_t *stop,
                                           char *err, size_t errlen);
/* Connect D to URI and read its zone geometry; exits with a one-line
 * message if it cannot.
 */
extern void connect_disk (struct disk *d, const char *uri,
                          unsigned timeout_s, volatile sig_atomic_t *stop);
/* The same after a broken connection: 0, or -1 with the reason in WHY
 * (D is then empty).
 */
extern int reconnect_disk (struct disk *d, const char *uri,
                           unsigned timeout_s, volatile sig_atomic_t *stop,
                           char *why, size_t whylen);
/* Is NOW the same disk as A (size, zone geometry, disk-id), served with
 * the same key (key-check)?  If not, the first difference in WHY.
 */
extern bool same_disk (const struct disk *a, const struct disk *now,
                       char *why, size_t whylen);
/* The WPs of zones [FIRST, FIRST + COUNT) into WP, by synchronous block
 * status on NBD.  Returns 0, or -1 with the reason in ERR (the server's
 * error, or a WP off the block size).
 */
extern int zone_wps_sync (struct nbd_handle *nbd, const struct zone_layout *l,
                          uint64_t first, uint64_t count, uint64_t *wp,
                          char *err, size_t errlen);

#endif /* NBDZONE_ZONE_EXPORT_H */

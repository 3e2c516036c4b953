/* What the parts of nbdzone share: the connection to a zoned export and
 * its zone layout.
 */
#ifndef NBDZONE_H
#define NBDZONE_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include <libnbd.h>

#include "zone-report.h"

extern const char *progname;

struct disk {
  struct nbd_handle *nbd;
  const char *uri;
  struct zone_layout l;
};

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
/* The WPs of zones [FIRST, FIRST + COUNT) into WP, by synchronous block
 * status on NBD.  Returns 0, or -1 with the reason in ERR (the server's
 * error, or a WP off the block size).
 */
extern int zone_wps_sync (struct nbd_handle *nbd, const struct zone_layout *l,
                          uint64_t first, uint64_t count, uint64_t *wp,
                          char *err, size_t errlen);

/* nbdzone attach / detach / list (ublk-server.c). */
extern int nbdzone_attach (int argc, char **argv);
extern int nbdzone_detach (int argc, char **argv);
extern int nbdzone_list (int argc, char **argv);

#endif /* NBDZONE_H */

/* What the parts of nbdzone share: the connection to a zoned export and
 * its zone layout.
 */
#ifndef NBDZONE_H
#define NBDZONE_H

#include <stdint.h>

#include <libnbd.h>

#include "zone-report.h"

extern const char *progname;

struct disk {
  struct nbd_handle *nbd;
  const char *uri;
  struct zone_layout l;
};

/* A connection asking for base:allocation, or NULL (see nbd_get_error). */
extern struct nbd_handle *nbdzone_connect (const char *uri);
/* Connect D to URI and read its zone geometry; exits with a one-line
 * message if it cannot.
 */
extern void connect_disk (struct disk *d, const char *uri);
/* The WPs of zones [FIRST, FIRST + COUNT) into WP, by synchronous block
 * status on NBD.  Returns 0, or -1 (see nbd_get_error).
 */
extern int zone_wps_sync (struct nbd_handle *nbd, const struct zone_layout *l,
                          uint64_t first, uint64_t count, uint64_t *wp);

/* nbdzone attach / detach / list (ublk-server.c). */
extern int nbdzone_attach (int argc, char **argv);
extern int nbdzone_detach (int argc, char **argv);
extern int nbdzone_list (int argc, char **argv);

#endif /* NBDZONE_H */

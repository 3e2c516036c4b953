/* The nbdzone commands that serve an export as a zoned block device
 * and manage such devices; "report", "reset" and "finish" are in
 * nbdzone.c on top of zone-export.h.
 */
#ifndef NBDZONE_H
#define NBDZONE_H

/* nbdzone attach (attach.c), detach and list (ublk-dev.c): ARGC and
 * ARGV after the command's name; each returns the exit status.
 */
extern int nbdzone_attach (int argc, char **argv);
extern int nbdzone_detach (int argc, char **argv);
extern int nbdzone_list (int argc, char **argv);

#endif /* NBDZONE_H */

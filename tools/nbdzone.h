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

/* Which disk device ID serves, recorded for attach --recover
 * (attach-recover.c): the folder (NBDZONE_RUN_DIR, or /run/nbdzone),
 * the record's path, and its removal when the device goes.
 */
extern const char *identity_dir (void);
extern void identity_path (int id, char *buf, size_t len);
extern void identity_forget (int id);

#endif /* NBDZONE_H */

/* The ublk device: control commands and the queues' ring commands
 * (ublk-dev.c).  Nothing here knows NBD.
 */
#ifndef NBDZONE_UBLK_DEV_H
#define NBDZONE_UBLK_DEV_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <stdint.h>

#include <liburing.h>

#include "ublk-uapi.h"

/* /dev/ublk-control (NBDZONE_UBLK_CONTROL replaces it, for tests) and
 * the ring its commands go through.
 */
struct control {
  int fd;
  struct io_uring ring;
  uint64_t seq;                 /* user_data of the last command */
};

/* 0, or a negative errno (the control device cannot be opened). */
extern int control_open (struct control *c);
extern void control_close (struct control *c);
/* One control command, waited for to its end; the kernel's result. */
extern int control_cmd (struct control *c, uint32_t op, int dev_id,
                        void *buf, uint16_t len, uint64_t data0);
/* Why no zoned ublk device can be made here (OPEN_ERROR: what
 * control_open returned), in BUF; or NULL.
 */
extern const char *ublk_unavailable (int open_error, char *buf, size_t len);
/* open(2) of a device node the kernel creates, waiting up to 10 s. */
extern int open_when_present (const char *path, int flags);

/* The id of "/dev/ublkbN" (or "N"), or -1 after saying why. */
extern int parse_device (const char *s);
/* Is process PID there to serve (not gone, not a zombie)? */
extern bool server_running (pid_t pid);

/* The queues. */
extern const struct ublksrv_io_desc *ublk_map_iods (int cdev, int q_id,
                                                   int depth, size_t *len);
extern void ublk_io_cmd (struct io_uring *ring, int cdev, uint32_t op,
                         int q_id, int tag, int result, uint64_t addr);
extern uint64_t ublk_user_copy_pos (int q_id, int tag);

#endif /* NBDZONE_UBLK_DEV_H */

/* The ublk device, the kernel side of nbdzone attach (ublk-dev.h).
 *
 * /dev/ublk-control takes control commands (ADD_DEV, SET_PARAMS,
 * START_DEV, STOP_DEV, DEL_DEV, GET_DEV_INFO, GET_PARAMS and the user
 * recovery pair) as io_uring commands, one
 * at a time, each waited for to its end.  Each queue's requests are
 * described in a shared mapping of /dev/ublkcN and fetched, answered
 * and fetched again with FETCH_REQ and COMMIT_AND_FETCH_REQ commands on
 * the queue's own ring; request data moves with pread and pwrite on
 * /dev/ublkcN (user copy).  "nbdzone detach" and "nbdzone list" need
 * only the control device, so they are here too.
 */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/utsname.h>

#include <liburing.h>

#include "nbdzone.h"
#include "ublk-dev.h"
#include "zone-export.h"

static void
prep_uring_cmd (struct io_uring_sqe *sqe, int fd, uint32_t op,
                const void *cmd, size_t cmd_len, uint64_t user_data)
{
  /* A 128-byte SQE (IORING_SETUP_SQE128): the command is in its second
   * half, from the cmd field on.
   */
  unsigned char *bytes = (unsigned char *) (uintptr_t) sqe;

  if (!sqe) {                   /* the rings are sized for every tag */
    fprintf (stderr, "%s: io_uring submission queue full\n", progname);
    abort ();
  }
  memset (bytes, 0, 2 * sizeof *sqe);
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = fd;
  sqe->cmd_op = op;
  memcpy (bytes + offsetof (struct io_uring_sqe, cmd), cmd, cmd_len);
  io_uring_sqe_set_data64 (sqe, user_data);
}

/* NBDZONE_UBLK_CONTROL replaces /dev/ublk-control (for tests). */
static const char *
control_path (void)
{
  const char *p = getenv ("NBDZONE_UBLK_CONTROL");

  return p && *p ? p : "/dev/ublk-control";
}

int
control_open (struct control *c)
{
  int r;

  c->seq = 0;
  c->fd = open (control_path (), O_RDWR | O_CLOEXEC);
  if (c->fd == -1)
    return -errno;
  r = io_uring_queue_init (4, &c->ring, IORING_SETUP_SQE128);
  if (r < 0) {
    close (c->fd);
    return r;
  }
  return 0;
}

void
control_close (struct control *c)
{
  io_uring_queue_exit (&c->ring);
  close (c->fd);
}

/* One control command; returns the kernel's result (negative errno).
 * Once submitted, it is waited for whatever signals come: the kernel
 * still works on it (STOP_DEV waits for the requests in flight), and
 * its completion must not be taken for the next command's.  Signals
 * are seen when it is done; a server that hangs meanwhile is ended by
 * the reply timeout, which fails what STOP_DEV waits for.
 */
int
control_cmd (struct control *c, uint32_t op, int dev_id, void *buf,
             uint16_t len, uint64_t data0)
{
  struct ublksrv_ctrl_cmd cmd = {
    .dev_id = dev_id, .queue_id = (uint16_t) -1,
    .addr = (uintptr_t) buf, .len = len,
  };
  struct io_uring_sqe *sqe;
  struct io_uring_cqe *cqe;
  int r;

  cmd.data[0] = data0;
  sqe = io_uring_get_sqe (&c->ring);
  if (!sqe)
    return -EBUSY;
  prep_uring_cmd (sqe, c->fd, op, &cmd, sizeof cmd, ++c->seq);
  do
    r = io_uring_submit (&c->ring);
  while (r == -EINTR);
  if (r < 0)
    return r;
  if (r == 0)
    return -EBUSY;
  for (;;) {
    uint64_t ud;

    r = io_uring_wait_cqe (&c->ring, &cqe);
    if (r == -EINTR)
      continue;
    if (r < 0)
      return r;
    ud = io_uring_cqe_get_data64 (cqe);
    r = cqe->res;
    io_uring_cqe_seen (&c->ring, cqe);
    if (ud == c->seq)
      return r;
    /* an older command's: cannot happen, as each is waited for */
  }
}

/* Linux release "X.Y...": is it at least 6.6? */
static bool
kernel_has_zoned_ublk (const char *release)
{
  unsigned major = 0, minor = 0;

  if (sscanf (release, "%u.%u", &major, &minor) != 2)
    return true;                /* unknown: let the driver decide */
  return major > 6 || (major == 6 && minor >= 6);
}

/* A clear reason why no zoned ublk device can be made here, or NULL. */
const char *
ublk_unavailable (int open_error, char *buf, size_t len)
{
  struct utsname u;

  if (uname (&u) == 0 && !kernel_has_zoned_ublk (u.release)) {
    snprintf (buf, len, "this kernel (Linux %s) is older than 6.6: zoned "
              "ublk devices need Linux 6.6 or later with ublk_drv; use the "
              "kernel NBD client (nbd-client) for a plain disk", u.release);
    return buf;
  }
  if (open_error == -ENOENT) {
    snprintf (buf, len, "%s does not exist: the ublk_drv module is not "
              "loaded (modprobe ublk_drv) or this kernel has no ublk "
              "(CONFIG_BLK_DEV_UBLK)", control_path ());
    return buf;
  }
  if (open_error < 0) {
    snprintf (buf, len, "cannot open %s: %s", control_path (),
              strerror (-open_error));
    return buf;
  }
  return NULL;
}

/* Wait for a device node the kernel creates (devtmpfs or udev). */
int
open_when_present (const char *path, int flags)
{
  int i, fd = -1;

  for (i = 0; i < 100; i++) {
    fd = open (path, flags);
    if (fd >= 0 || errno != ENOENT)
      break;
    usleep (100000);
  }
  return fd;
}

/* The request descriptors of queue Q_ID, mapped from the character
 * device CDEV, or NULL (said why).  *LEN is for munmap.
 */
const struct ublksrv_io_desc *
ublk_map_iods (int cdev, int q_id, int depth, size_t *len)
{
  long page = sysconf (_SC_PAGESIZE);
  size_t max_cmd_buf = ((UBLK_MAX_QUEUE_DEPTH * sizeof (struct ublksrv_io_desc))
                        + page - 1) / page * page;
  void *iods;

  *len = (depth * sizeof (struct ublksrv_io_desc) + page - 1) / page * page;
  iods = mmap (NULL, *len, PROT_READ, MAP_SHARED | MAP_POPULATE, cdev,
               UBLKSRV_CMD_BUF_OFFSET + (off_t) q_id * max_cmd_buf);
  if (iods == MAP_FAILED) {
    fprintf (stderr, "%s: cannot map the request descriptors of queue "
             "%d: %m\n", progname, q_id);
    return NULL;
  }
  return iods;
}

/* A FETCH_REQ or COMMIT_AND_FETCH_REQ for TAG of queue Q_ID in RING
 * (its user_data is the tag); the ring is sized for every tag, and a
 * full one is submitted first.
 */
void
ublk_io_cmd (struct io_uring *ring, int cdev, uint32_t op, int q_id,
             int tag, int result, uint64_t addr)
{
  struct ublksrv_io_cmd cmd = {
    .q_id = q_id, .tag = tag, .result = result, .addr = addr,
  };
  struct io_uring_sqe *sqe = io_uring_get_sqe (ring);

  if (!sqe) {
    io_uring_submit (ring);
    sqe = io_uring_get_sqe (ring);
  }
  prep_uring_cmd (sqe, cdev, op, &cmd, sizeof cmd, tag);
}

/* Where the data of TAG of queue Q_ID is read and written (user copy). */
uint64_t
ublk_user_copy_pos (int q_id, int tag)
{
  return UBLKSRV_IO_BUF_OFFSET + ((uint64_t) q_id << UBLK_QID_OFF) +
    ((uint64_t) tag << UBLK_TAG_OFF);
}

int
parse_device (const char *s)
{
  const char *p = s;
  char *end;
  long id;

  if (strncmp (p, "/dev/", 5) == 0)
    p += 5;
  if (strncmp (p, "ublkb", 5) == 0)
    p += 5;
  errno = 0;
  id = strtol (p, &end, 10);
  if (errno || *end || end == p || id < 0) {
    fprintf (stderr, "%s: \"%s\" is not a ublk device (use /dev/ublkbN)\n",
             progname, s);
    return -1;
  }
  return id;
}

int
nbdzone_detach (int argc, char **argv)
{
  struct control c;
  struct ublksrv_ctrl_dev_info info;
  char why[300];
  int id, r, i;

  if (argc != 1) {
    fprintf (stderr, "usage: %s detach /dev/ublkbN\n", progname);
    return EXIT_FAILURE;
  }
  id = parse_device (argv[0]);
  if (id < 0)
    return EXIT_FAILURE;
  r = control_open (&c);
  if (ublk_unavailable (r, why, sizeof why)) {
    fprintf (stderr, "%s: cannot detach %s: %s\n", progname, argv[0], why);
    return EXIT_FAILURE;
  }
  memset (&info, 0, sizeof info);
  r = control_cmd (&c, UBLK_U_CMD_GET_DEV_INFO, id, &info, sizeof info, 0);
  if (r < 0) {
    fprintf (stderr, "%s: %s: no such ublk device (%s)\n", progname, argv[0],
             strerror (-r));
    control_close (&c);
    return EXIT_FAILURE;
  }
  /* The serving process sees the device stop, finishes its queues and
   * deletes the device; DEL_DEV here waits for that (or does it, if
   * the server is gone).
   */
  r = control_cmd (&c, UBLK_U_CMD_STOP_DEV, id, NULL, 0, 0);
  if (r < 0 && r != -ENODEV)
    fprintf (stderr, "%s: stopping %s: %s\n", progname, argv[0],
             strerror (-r));
  for (i = 0; i < 300 && info.ublksrv_pid > 0 &&
         kill (info.ublksrv_pid, 0) == 0; i++)
    usleep (100000);
  r = control_cmd (&c, UBLK_U_CMD_DEL_DEV, id, NULL, 0, 0);
  control_close (&c);
  if (r == 0 || r == -ENODEV)
    identity_forget (id);
  if (r < 0 && r != -ENODEV) {
    fprintf (stderr, "%s: cannot delete %s: %s\n", progname, argv[0],
             strerror (-r));
    return EXIT_FAILURE;
  }
  return EXIT_SUCCESS;
}

/* Is the process PID still there to serve (not gone, not a zombie)? */
bool
server_running (pid_t pid)
{
  char path[64], buf[256], *p;
  FILE *fp;
  bool zombie = false;

  if (pid <= 0 || (kill (pid, 0) == -1 && errno != EPERM))
    return false;
  snprintf (path, sizeof path, "/proc/%d/stat", (int) pid);
  fp = fopen (path, "r");
  if (fp) {
    /* "PID (COMM) STATE ...": COMM may hold spaces and parentheses. */
    if (fgets (buf, sizeof buf, fp) && (p = strrchr (buf, ')')) && p[1])
      zombie = p[2] == 'Z';
    fclose (fp);
  }
  return !zombie;
}

static int
compare_ints (const void *a, const void *b)
{
  return *(const int *) a - *(const int *) b;
}

static const char *
state_name (uint16_t state)
{
  switch (state) {
  case UBLK_S_DEV_LIVE: return "live";
  case UBLK_S_DEV_DEAD: return "dead";
  case UBLK_S_DEV_QUIESCED: return "quiesced";
  default: return "unknown";
  }
}

/* Every ublk device, from its character device: the block device is
 * gone once its server has died, but the device stays until detach,
 * and that is when the user most needs to see it.
 */
int
nbdzone_list (int argc, char **argv)
{
  struct control c;
  char why[300];
  DIR *dir;
  struct dirent *e;
  int r, *ids = NULL, n = 0, i;

  r = control_open (&c);
  if (ublk_unavailable (r, why, sizeof why)) {
    fprintf (stderr, "%s: %s\n", progname, why);
    return EXIT_FAILURE;
  }
  dir = opendir ("/dev");
  while (dir && (e = readdir (dir))) {
    int id, end = 0, *more;

    if (sscanf (e->d_name, "ublkc%d%n", &id, &end) != 1 ||
        e->d_name[end] || id < 0)
      continue;
    more = realloc (ids, (n + 1) * sizeof *ids);
    if (!more)
      break;
    ids = more;
    ids[n++] = id;
  }
  if (dir)
    closedir (dir);
  qsort (ids, n, sizeof *ids, compare_ints);
  for (i = 0; i < n; i++) {
    struct ublksrv_ctrl_dev_info info;

    memset (&info, 0, sizeof info);
    if (control_cmd (&c, UBLK_U_CMD_GET_DEV_INFO, ids[i], &info,
                     sizeof info, 0) < 0)
      continue;
    printf ("/dev/ublkb%d pid %d queues %u depth %u%s %s", ids[i],
            info.ublksrv_pid, info.nr_hw_queues, info.queue_depth,
            info.flags & UBLK_F_ZONED ? " zoned" : "",
            state_name (info.state));
    if (info.state == UBLK_S_DEV_QUIESCED)
      printf (", server gone, its requests held (nbdzone attach --recover "
              "/dev/ublkb%d URI takes it over, nbdzone detach removes it)",
              ids[i]);
    else if (!server_running (info.ublksrv_pid))
      printf (", server gone (nbdzone detach /dev/ublkb%d removes it)",
              ids[i]);
    putchar ('\n');
  }
  free (ids);
  control_close (&c);
  return EXIT_SUCCESS;
}

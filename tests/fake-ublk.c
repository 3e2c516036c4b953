/* A fake ublk kernel (fake-ublk.h) in place of tools/ublk-dev.c.
 *
 * Control commands: ADD_DEV takes the queues and depth, START_DEV
 * waits until every tag is fetched, GET_DEV_INFO says live, STOP_DEV
 * waits for the requests handed over and then aborts every fetch, as
 * the driver does.  Queue commands: FETCH_REQ and COMMIT_AND_FETCH_REQ
 * are noted at once (the real ones act when the ring is submitted,
 * which the queue thread does before it waits); a commit's result is
 * kept for fake_ublk_wait.  The test thread posts requests and aborts
 * to a queue's ring with IORING_OP_MSG_RING from a ring of its own.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>

#include <liburing.h>

#include "fake-ublk.h"
#include "ublk-dev.h"

enum tag_state { TAG_NONE, TAG_FETCHED, TAG_BUSY };

static struct {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  FILE *cdev_file;              /* an unlinked file: the request data */
  int cdev;
  int nr_queues, depth;
  bool live;
  int ring_fd[FAKE_MAX_QUEUES];
  struct ublksrv_io_desc *iods[FAKE_MAX_QUEUES];
  enum tag_state state[FAKE_MAX_QUEUES][FAKE_MAX_DEPTH];
  bool done[FAKE_MAX_QUEUES][FAKE_MAX_DEPTH];
  struct fake_commit commit[FAKE_MAX_QUEUES][FAKE_MAX_DEPTH];
  struct io_uring ring;         /* the test's, for MSG_RING */
  bool ring_ready;
} k = {
  .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER,
  .cdev = -1,
};

static void
deadline (struct timespec *ts, unsigned ms)
{
  clock_gettime (CLOCK_REALTIME, ts);
  ts->tv_sec += ms / 1000;
  ts->tv_nsec += (long) (ms % 1000) * 1000000;
  if (ts->tv_nsec >= 1000000000) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000;
  }
}

/* A completion RES with user_data TAG on queue Q's ring.  Locked. */
static void
post (int q, int tag, int res)
{
  struct io_uring_sqe *sqe = io_uring_get_sqe (&k.ring);
  struct io_uring_cqe *cqe;

  io_uring_prep_msg_ring (sqe, k.ring_fd[q], (unsigned) res, tag, 0);
  if (io_uring_submit_and_wait (&k.ring, 1) < 0 ||
      io_uring_wait_cqe (&k.ring, &cqe) < 0) {
    fprintf (stderr, "fake ublk: cannot post to queue %d\n", q);
    abort ();
  }
  if (cqe->res < 0) {
    fprintf (stderr, "fake ublk: MSG_RING to queue %d: %s\n", q,
             strerror (-cqe->res));
    abort ();
  }
  io_uring_cqe_seen (&k.ring, cqe);
}

void
fake_ublk_reset (void)
{
  pthread_mutex_lock (&k.lock);
  if (!k.ring_ready) {
    int r = io_uring_queue_init (8, &k.ring, 0);

    if (r < 0) {
      fprintf (stderr, "fake ublk: cannot set up an io_uring (%s), which "
               "nbdzone attach needs as much as this test\n", strerror (-r));
      abort ();
    }
    k.ring_ready = true;
  }
  if (k.cdev_file)
    fclose (k.cdev_file);
  k.cdev_file = tmpfile ();
  if (!k.cdev_file) {
    perror ("fake ublk: tmpfile");
    abort ();
  }
  k.cdev = fileno (k.cdev_file);
  k.nr_queues = k.depth = 0;
  k.live = false;
  memset (k.ring_fd, -1, sizeof k.ring_fd);
  memset (k.iods, 0, sizeof k.iods);
  memset (k.state, 0, sizeof k.state);
  memset (k.done, 0, sizeof k.done);
  memset (k.commit, 0, sizeof k.commit);
  pthread_mutex_unlock (&k.lock);
}

static int
count_state (enum tag_state st)
{
  int q, t, n = 0;

  for (q = 0; q < k.nr_queues; q++)
    for (t = 0; t < k.depth; t++)
      n += k.state[q][t] == st;
  return n;
}

/* Wait (locked) until every tag of every queue is fetched. */
static bool
all_fetched (unsigned ms)
{
  struct timespec until;

  deadline (&until, ms);
  while (count_state (TAG_FETCHED) < k.nr_queues * k.depth &&
         pthread_cond_timedwait (&k.cond, &k.lock, &until) == 0)
    ;
  return count_state (TAG_FETCHED) == k.nr_queues * k.depth;
}

bool
fake_ublk_wait_live (unsigned ms)
{
  struct timespec until;
  bool live;

  deadline (&until, ms);
  pthread_mutex_lock (&k.lock);
  while (!k.live && pthread_cond_timedwait (&k.cond, &k.lock, &until) == 0)
    ;
  live = k.live;
  pthread_mutex_unlock (&k.lock);
  return live;
}

/* STOP_DEV: the requests handed over end first, then every fetch is
 * aborted.
 */
static int
stop_dev (void)
{
  struct timespec until;
  int q, t;

  deadline (&until, 10000);
  while (count_state (TAG_BUSY) &&
         pthread_cond_timedwait (&k.cond, &k.lock, &until) == 0)
    ;
  for (q = 0; q < k.nr_queues; q++)
    for (t = 0; t < k.depth; t++)
      if (k.state[q][t] == TAG_FETCHED) {
        k.state[q][t] = TAG_NONE;
        post (q, t, UBLK_IO_RES_ABORT);
      }
  k.live = false;
  return 0;
}

int
control_open (struct control *c)
{
  c->fd = -1;
  c->seq = 0;
  return 0;
}

void
control_close (struct control *c)
{
}

int
control_cmd (struct control *c, uint32_t op, int dev_id, void *buf,
             uint16_t len, uint64_t data0)
{
  struct ublksrv_ctrl_dev_info *info = buf;
  int r = 0;

  pthread_mutex_lock (&k.lock);
  if (op == UBLK_U_CMD_ADD_DEV) {
    if (info->nr_hw_queues > FAKE_MAX_QUEUES ||
        info->queue_depth > FAKE_MAX_DEPTH)
      r = -EINVAL;
    k.nr_queues = info->nr_hw_queues;
    k.depth = info->queue_depth;
    if (info->dev_id == (uint32_t) -1)
      info->dev_id = 0;
  }
  else if (op == UBLK_U_CMD_START_DEV) {
    r = all_fetched (5000) ? 0 : -ETIMEDOUT;
    k.live = r == 0;
    pthread_cond_broadcast (&k.cond);
  }
  else if (op == UBLK_U_CMD_GET_DEV_INFO) {
    memset (info, 0, len);
    info->dev_id = dev_id;
    info->nr_hw_queues = k.nr_queues;
    info->queue_depth = k.depth;
    info->state = k.live ? UBLK_S_DEV_LIVE : UBLK_S_DEV_DEAD;
    info->ublksrv_pid = getpid ();
  }
  else if (op == UBLK_U_CMD_STOP_DEV)
    r = stop_dev ();
  else if (op != UBLK_U_CMD_SET_PARAMS && op != UBLK_U_CMD_DEL_DEV)
    r = -EOPNOTSUPP;            /* recovery: not faked */
  pthread_mutex_unlock (&k.lock);
  return r;
}

const char *
ublk_unavailable (int open_error, char *buf, size_t len)
{
  if (open_error >= 0)
    return NULL;
  snprintf (buf, len, "the fake ublk control: %s", strerror (-open_error));
  return buf;
}

int
open_when_present (const char *path, int flags)
{
  return fcntl (k.cdev, F_DUPFD_CLOEXEC, 0);
}

const struct ublksrv_io_desc *
ublk_map_iods (int cdev, int q_id, int depth, size_t *len)
{
  long page = sysconf (_SC_PAGESIZE);
  void *p;

  *len = (depth * sizeof (struct ublksrv_io_desc) + page - 1) / page * page;
  p = mmap (NULL, *len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
            -1, 0);
  if (p == MAP_FAILED || q_id >= FAKE_MAX_QUEUES)
    return NULL;
  pthread_mutex_lock (&k.lock);
  k.iods[q_id] = p;
  pthread_mutex_unlock (&k.lock);
  return p;
}

void
ublk_io_cmd (struct io_uring *ring, int cdev, uint32_t op, int q_id,
             int tag, int result, uint64_t addr)
{
  pthread_mutex_lock (&k.lock);
  k.ring_fd[q_id] = ring->ring_fd;
  if (op == UBLK_U_IO_COMMIT_AND_FETCH_REQ) {
    k.commit[q_id][tag] = (struct fake_commit) {
      .result = result, .append_lba = addr,
    };
    k.done[q_id][tag] = true;
  }
  k.state[q_id][tag] = TAG_FETCHED;
  pthread_cond_broadcast (&k.cond);
  pthread_mutex_unlock (&k.lock);
}

uint64_t
ublk_user_copy_pos (int q_id, int tag)
{
  return ((uint64_t) q_id * FAKE_MAX_DEPTH + tag) << 20;
}

int
parse_device (const char *s)
{
  return -1;                    /* --recover: not faked */
}

bool
server_running (pid_t pid)
{
  return false;
}

void
fake_ublk_submit (int q, int tag, uint8_t op, uint32_t flags, uint64_t off,
                  uint32_t len, const void *data)
{
  struct ublksrv_io_desc *iod;

  pthread_mutex_lock (&k.lock);
  if (k.state[q][tag] != TAG_FETCHED || !k.iods[q]) {
    fprintf (stderr, "fake ublk: queue %d tag %d is not waiting for a "
             "request\n", q, tag);
    abort ();
  }
  iod = &k.iods[q][tag];
  iod->op_flags = op | flags;
  iod->nr_sectors = op == UBLK_IO_OP_REPORT_ZONES ? len : len >> 9;
  iod->start_sector = off >> 9;
  iod->addr = 0;
  if (data && pwrite (k.cdev, data, len, ublk_user_copy_pos (q, tag)) !=
      (ssize_t) len)
    abort ();
  k.state[q][tag] = TAG_BUSY;
  k.done[q][tag] = false;
  post (q, tag, 0);
  pthread_mutex_unlock (&k.lock);
}

bool
fake_ublk_wait (int q, int tag, unsigned ms, struct fake_commit *c)
{
  struct timespec until;
  bool done;

  deadline (&until, ms);
  pthread_mutex_lock (&k.lock);
  while (!k.done[q][tag] &&
         pthread_cond_timedwait (&k.cond, &k.lock, &until) == 0)
    ;
  done = k.done[q][tag];
  if (done && c)
    *c = k.commit[q][tag];
  pthread_mutex_unlock (&k.lock);
  return done;
}

bool
fake_ublk_committed (int q, int tag)
{
  bool done;

  pthread_mutex_lock (&k.lock);
  done = k.done[q][tag];
  pthread_mutex_unlock (&k.lock);
  return done;
}

void
fake_ublk_data (int q, int tag, void *buf, uint32_t len)
{
  if (pread (k.cdev, buf, len, ublk_user_copy_pos (q, tag)) != (ssize_t) len)
    abort ();
}

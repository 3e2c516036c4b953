/* Thread pool for cryptinline's crypt-mode=pool|auto.
 *
 * A request that uses the pool becomes a job on a queue: its chunks are
 * claimed one at a time by idle pool threads and by the request thread
 * itself, which then sleeps until the last chunk is finished.  The job
 * lives on the request thread's stack; nobody touches it after the
 * finishing count reaches the number of chunks (that is checked and
 * signalled under the one lock), so nothing is allocated per request.
 * The pool never issues I/O: ordering stays with the request thread.
 */

#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "pool.h"

struct job {
  struct job *prev, *next;      /* on the queue while chunks are unclaimed */
  pool_work_fn *fn;
  void *arg;
  size_t len, chunk, nchunks;
  size_t claimed, finished;     /* chunk counts, under lock */
  bool failed;
  pthread_cond_t done;          /* signalled when finished == nchunks */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_ready = PTHREAD_COND_INITIALIZER;
static struct job *queue_head, *queue_tail;
static bool stopping;
static pthread_t *threads;
static unsigned nr_threads;

static void
enqueue (struct job *job)
{
  job->next = NULL;
  job->prev = queue_tail;
  if (queue_tail)
    queue_tail->next = job;
  else
    queue_head = job;
  queue_tail = job;
}

static void
dequeue (struct job *job)
{
  if (job->prev)
    job->prev->next = job->next;
  else
    queue_head = job->next;
  if (job->next)
    job->next->prev = job->prev;
  else
    queue_tail = job->prev;
  job->prev = job->next = NULL;
}

/* Under lock: take the next unclaimed chunk of job, if any. */
static bool
claim_chunk (struct job *job, size_t *index)
{
  if (job->claimed == job->nchunks)
    return false;
  *index = job->claimed++;
  if (job->claimed == job->nchunks)
    dequeue (job);              /* nothing left for other threads */
  return true;
}

/* Called without lock; returns with lock held. */
static void
run_chunk (struct job *job, size_t index)
{
  size_t start = index * job->chunk;
  size_t n = job->len - start < job->chunk ? job->len - start : job->chunk;
  int r = job->fn (job->arg, start, n);

  pthread_mutex_lock (&lock);
  if (r == -1)
    job->failed = true;
  if (++job->finished == job->nchunks)
    pthread_cond_signal (&job->done);
}

static void *
pool_thread (void *unused)
{
  struct job *job;
  size_t index = 0;

  pthread_mutex_lock (&lock);
  for (;;) {
    while (!stopping && queue_head == NULL)
      pthread_cond_wait (&work_ready, &lock);
    if (stopping)
      break;
    job = queue_head;
    claim_chunk (job, &index);
    pthread_mutex_unlock (&lock);
    run_chunk (job, index);
  }
  pthread_mutex_unlock (&lock);
  return NULL;
}

int
pool_start (unsigned nthreads)
{
  sigset_t all, old;
  unsigned i;
  int r;

  if (nthreads == 0)
    return 0;
  threads = calloc (nthreads, sizeof *threads);
  if (threads == NULL) {
    nbdkit_error ("calloc: %m");
    return -1;
  }
  /* Signals are nbdkit's business: pool threads never take them. */
  sigfillset (&all);
  pthread_sigmask (SIG_SETMASK, &all, &old);
  for (i = 0; i < nthreads; ++i) {
    r = pthread_create (&threads[i], NULL, pool_thread, NULL);
    if (r != 0) {
      pthread_sigmask (SIG_SETMASK, &old, NULL);
      nbdkit_error ("could not start crypt pool thread %u of %u: %s",
                    i + 1, nthreads, strerror (r));
      nr_threads = i;
      pool_stop ();
      return -1;
    }
  }
  pthread_sigmask (SIG_SETMASK, &old, NULL);
  nr_threads = nthreads;
  return 0;
}

void
pool_stop (void)
{
  unsigned i;

  pthread_mutex_lock (&lock);
  stopping = true;
  pthread_cond_broadcast (&work_ready);
  pthread_mutex_unlock (&lock);
  for (i = 0; i < nr_threads; ++i)
    pthread_join (threads[i], NULL);
  free (threads);
  threads = NULL;
  nr_threads = 0;
  stopping = false;
}

unsigned
pool_threads (void)
{
  return nr_threads;
}

int
pool_run (size_t len, size_t chunk, pool_work_fn *fn, void *arg)
{
  struct job job = {
    .fn = fn, .arg = arg, .len = len, .chunk = chunk,
    .nchunks = chunk ? (len + chunk - 1) / chunk : 0,
  };
  size_t index, wake;

  if (job.nchunks <= 1 || nr_threads == 0)
    return len == 0 ? 0 : fn (arg, 0, len);

  pthread_cond_init (&job.done, NULL);
  pthread_mutex_lock (&lock);
  enqueue (&job);
  /* Wake only as many pool threads as there are chunks for them. */
  for (wake = 1; wake < job.nchunks && wake <= nr_threads; ++wake)
    pthread_cond_signal (&work_ready);
  /* The request thread works on its own job too, then waits. */
  while (claim_chunk (&job, &index)) {
    pthread_mutex_unlock (&lock);
    run_chunk (&job, index);
  }
  while (job.finished < job.nchunks)
    pthread_cond_wait (&job.done, &lock);
  pthread_mutex_unlock (&lock);
  pthread_cond_destroy (&job.done);
  return job.failed ? -1 : 0;
}

/* After a reconnect: the fate of each request in flight (resend.h). */
#include <config.h>

#include <inttypes.h>
#include <stdio.h>

#include "resend.h"

/* Is a request of KIND on zone Z among RQS? (reset-all counts for all) */
static bool
in_flight (const struct rq *rqs, size_t n, enum rq_kind kind, uint64_t z)
{
  size_t i;

  for (i = 0; i < n; i++)
    if ((rqs[i].kind == kind && rqs[i].zone == z) ||
        (kind == RQ_RESET && rqs[i].kind == RQ_RESET_ALL))
      return true;
  return false;
}

/* Zone Z's WP is one this client can explain, or WHY says not. */
static int
check_zone (const struct zone_view *zv, uint64_t z, const struct rq *rqs,
            size_t n, char *why, size_t whylen)
{
  uint64_t low = zv->acked_wp, high = zv->written_wp;

  if (zv->conventional || zv->unwritable)
    return 0;
  if (in_flight (rqs, n, RQ_RESET, z))
    low = zv->start;            /* the reset may have landed */
  if (in_flight (rqs, n, RQ_FINISH, z))
    high = zv->capend;          /* the finish may have landed */
  if (zv->wp_now < low) {
    snprintf (why, whylen, "zone %" PRIu64 ": the server's write pointer is "
              "at offset %" PRIu64 ", behind %" PRIu64 ", up to which it had "
              "acknowledged writes: it lost acknowledged data; not resuming",
              z, zv->wp_now, low);
    return -1;
  }
  if (zv->wp_now > high) {
    snprintf (why, whylen, "zone %" PRIu64 ": the server's write pointer is "
              "at offset %" PRIu64 ", beyond %" PRIu64 ", the furthest this "
              "client wrote there: another writer; not resuming",
              z, zv->wp_now, high);
    return -1;
  }
  return 0;
}

/* A write or append of [S, E) in a sequential zone whose WP is WP. */
static struct verdict
by_wp (uint64_t s, uint64_t e, uint64_t wp, bool fua)
{
  struct verdict v = { .kind = V_RESEND };

  if (wp >= e)
    v.kind = V_COMPLETE;
  else if (wp > s) {
    v.kind = V_RESEND_TAIL;
    v.from = wp;
    v.to = e;
  }
  /* What landed of a FUA write may not be durable: the server that had
   * it may have gone before honouring the FUA.
   */
  v.flush_first = fua && v.kind != V_RESEND;
  return v;
}

static bool
all_reset (const struct zone_view *zones, uint64_t nr_zones)
{
  uint64_t z;

  for (z = 0; z < nr_zones; z++)
    if (!zones[z].conventional && !zones[z].unwritable &&
        zones[z].wp_now != zones[z].start)
      return false;
  return true;
}

static struct verdict
decide_one (const struct zone_view *zones, uint64_t nr_zones,
            const struct rq *r)
{
  struct verdict resend = { .kind = V_RESEND };
  struct verdict done = { .kind = V_COMPLETE };
  const struct zone_view *zv =
    r->zone < nr_zones ? &zones[r->zone] : NULL;

  switch (r->kind) {
  case RQ_WRITE:
  case RQ_APPEND:
    if (!zv || zv->conventional)
      return resend;            /* an overwrite in place is the same */
    return by_wp (r->start, r->end, zv->wp_now, r->fua);
  case RQ_RESET:
    return zv && !zv->conventional && zv->wp_now == zv->start
      ? done : resend;
  case RQ_RESET_ALL:
    return all_reset (zones, nr_zones) ? done : resend;
  case RQ_FINISH:
    return zv && !zv->conventional && zv->wp_now >= zv->capend
      ? done : resend;
  case RQ_READ:
  case RQ_FLUSH:
  case RQ_REPORT:
  default:
    return resend;
  }
}

int
resend_decide (const struct zone_view *zones, uint64_t nr_zones,
               const struct rq *rqs, size_t n,
               struct verdict *out, char *why, size_t whylen)
{
  uint64_t z;
  size_t i;

  /* Every zone, not only those with requests in flight: a zone that
   * lost acknowledged data is lost whatever is in flight.
   */
  for (z = 0; z < nr_zones; z++)
    if (check_zone (&zones[z], z, rqs, n, why, whylen) == -1)
      return -1;
  for (i = 0; i < n; i++)
    out[i] = decide_one (zones, nr_zones, &rqs[i]);
  return 0;
}

/* The offset request I is sent again from. */
static uint64_t
resent_from (const struct rq *rqs, const struct verdict *v, size_t i)
{
  return v[i].kind == V_RESEND_TAIL ? v[i].from : rqs[i].start;
}

static bool
zoned_write (const struct rq *r)
{
  return r->kind == RQ_WRITE || r->kind == RQ_APPEND;
}

/* Does request A go before B?  Writes and appends first, by zone, then
 * by offset; everything else after them, in the order given.
 */
static bool
goes_before (const struct rq *rqs, const struct verdict *v, size_t a,
             size_t b)
{
  const struct rq *ra = &rqs[a], *rb = &rqs[b];

  if (zoned_write (ra) != zoned_write (rb))
    return zoned_write (ra);
  if (zoned_write (ra)) {
    if (ra->zone != rb->zone)
      return ra->zone < rb->zone;
    if (resent_from (rqs, v, a) != resent_from (rqs, v, b))
      return resent_from (rqs, v, a) < resent_from (rqs, v, b);
  }
  return a < b;
}

size_t
resend_order (const struct rq *rqs, const struct verdict *v, size_t n,
              size_t *order)
{
  size_t i, j, m = 0;

  /* Insertion sort: a queue's depth of requests at most, once. */
  for (i = 0; i < n; i++) {
    if (v[i].kind == V_COMPLETE)
      continue;
    for (j = m; j > 0 && goes_before (rqs, v, i, order[j - 1]); j--)
      order[j] = order[j - 1];
    order[j] = i;
    m++;
  }
  return m;
}

/* After a reconnect: what becomes of each request that was in flight
 * when the connection broke (resend.c).  No I/O here: the caller gives
 * the requests, what it knows of each zone, and the zones' write
 * pointers read again from the server; the unit says, per request,
 * complete it, resend it, resend only its tail, or that nothing may be
 * resumed at all.  tests/test-nbdzone-resend.c has a test per rule.
 *
 * The rules (one writer per export; a server that writes a sequential
 * zone only at its WP, so the WP says which prefix of the writes in
 * flight landed):
 *   - a write to a sequential zone covering [s, e): WP >= e: it landed,
 *     complete it; WP <= s: resend it; s < WP < e: resend [WP, e).
 *     A FUA write that landed, wholly or in part, completes only after
 *     a flush (its FUA may have been lost with the server);
 *   - a zone append: the same, at the place it was given;
 *   - reads, flush, zone reports, writes to conventional zones: resend;
 *   - reset: the zone is empty: done, else resend; reset of all zones:
 *     every resettable zone is empty: done, else resend;
 *     finish: the zone is full: done, else resend;
 *   - a zone whose WP is behind what the server had acknowledged (it
 *     lost acknowledged writes), or beyond anything this client wrote
 *     there (another writer): nothing is resumed, everything fails.
 *     A reset in flight allows the zone's start, a finish in flight
 *     its capacity end.
 *   Resends of one zone go out in WP order (resend_order).
 */
#ifndef NBDZONE_RESEND_H
#define NBDZONE_RESEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum rq_kind {
  RQ_READ, RQ_WRITE, RQ_APPEND, RQ_FLUSH, RQ_REPORT,
  RQ_RESET, RQ_RESET_ALL, RQ_FINISH,
};

/* A request in flight when the connection broke. */
struct rq {
  enum rq_kind kind;
  uint64_t zone;                /* not for flush and reset-all */
  uint64_t start, end;          /* bytes; an append's: where it was put */
  bool fua;
};

/* What the client knows of a zone, and its WP after reconnecting. */
struct zone_view {
  bool conventional;            /* no WP: nothing to check */
  bool unwritable;              /* read-only or offline: never reset */
  uint64_t start, capend;       /* the zone's start, start + capacity */
  /* The WP the server is known to have reached: the end of the last
   * acknowledged write or append since the last acknowledged reset
   * (start after it, capend after an acknowledged finish).
   */
  uint64_t acked_wp;
  /* The furthest this client ever sent there since the last
   * acknowledged reset (>= acked_wp).
   */
  uint64_t written_wp;
  uint64_t wp_now;              /* read again after reconnecting */
};

enum verdict_kind {
  V_COMPLETE,                   /* it landed: done, as if acknowledged */
  V_RESEND,                     /* send it again, whole */
  V_RESEND_TAIL,                /* send [from, to) of it again */
};

struct verdict {
  enum verdict_kind kind;
  uint64_t from, to;            /* V_RESEND_TAIL */
  bool flush_first;             /* complete only after a flush succeeded */
};

/* Decide for the N requests RQS with the NR_ZONES zones ZONES into OUT
 * (N entries).  Returns 0; or -1 when nothing may be resumed, with one
 * line in WHY naming the zone and both write pointers.
 */
extern int resend_decide (const struct zone_view *zones, uint64_t nr_zones,
                          const struct rq *rqs, size_t n,
                          struct verdict *out, char *why, size_t whylen);

/* The order to send again in: ORDER gets the indices of the requests
 * to resend (V_RESEND, V_RESEND_TAIL), those of each zone by the offset
 * they are resent from; returns how many.
 */
extern size_t resend_order (const struct rq *rqs, const struct verdict *v,
                            size_t n, size_t *order);

#endif /* NBDZONE_RESEND_H */

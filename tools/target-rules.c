/* The decisions of nbdzone attach that need no I/O (target-rules.h). */
#include <config.h>

#include <errno.h>

#include "target-rules.h"

uint64_t
elapsed_ms (uint64_t now, uint64_t then)
{
  return now > then ? now - then : 0;
}

bool
reply_overdue (uint64_t now, uint64_t last_reply, uint64_t since,
               uint64_t limit, uint64_t *waited)
{
  if (!since || elapsed_ms (now, last_reply) <= limit)
    return false;
  *waited = elapsed_ms (now, since);
  return *waited > limit;
}

int
kernel_write_error (const struct write_fault *f)
{
  /* Inside the capacity ENOSPC can only be a zone resource, and only
   * one the export has: with an active limit alone it is that one,
   * with no limit at all it is what it says (an emulated image on a
   * full filesystem).
   */
  if (f->err == ENOSPC && !f->conventional && f->inside_capacity) {
    if (f->max_active &&
        (f->active_others >= f->max_active || !f->max_open))
      return -EOVERFLOW;
    if (f->max_open)
      return -ETOOMANYREFS;
  }
  if (f->err == ENOSPC)
    return -ENOSPC;
  return -EIO;
}

void
kernel_zone_limits (uint64_t max_open, uint64_t max_active,
                    uint64_t nr_zones, uint32_t *open, uint32_t *active)
{
  if (max_open > nr_zones)
    max_open = nr_zones;
  if (max_active > nr_zones)
    max_active = nr_zones;
  /* Linux 6.11 and later refuse a device with more open zones than
   * active ones (an open zone is active); no more can be open anyway.
   */
  if (max_active && max_open > max_active)
    max_open = max_active;
  *open = max_open;
  *active = max_active;
}

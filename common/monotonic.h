/* Seconds on the monotonic clock, as a double: for the measuring programs
 * (bench/, filters/cryptinline/measure-pool), which time intervals only.
 */
#ifndef ZONED_MONOTONIC_H
#define ZONED_MONOTONIC_H

#include <time.h>

static inline double
monotonic_seconds (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

#endif /* ZONED_MONOTONIC_H */

/* Stand-ins for the nbdkit functions the cryptinline filter calls, for
 * the harnesses that include the filter's source.  Include once, after
 * the filter.
 */
#ifndef FUZZ_NBDKIT_STUBS_H
#define FUZZ_NBDKIT_STUBS_H

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char last_error[1024];
static int errors;

void
nbdkit_error (const char *fs, ...)
{
  va_list args;

  va_start (args, fs);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
  vsnprintf (last_error, sizeof last_error, fs, args);
#pragma GCC diagnostic pop
  va_end (args);
  errors++;
}

void
nbdkit_debug (const char *fs, ...)
{
}

/* nbdkit keeps interned strings until the connection ends; one
 * harness run is one connection here, so the previous string is freed
 * when the next is made (and the leak checker sees at most one).
 */
const char *
nbdkit_printf_intern (const char *fs, ...)
{
  static char *interned;
  va_list args, again;
  int len;

  free (interned);
  interned = NULL;
  va_start (args, fs);
  va_copy (again, args);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
  len = vsnprintf (NULL, 0, fs, args);
  if (len >= 0 && (interned = malloc (len + 1)) != NULL)
    vsnprintf (interned, len + 1, fs, again);
#pragma GCC diagnostic pop
  va_end (again);
  va_end (args);
  return interned;
}

int
nbdkit_read_password (const char *value, char **password)
{
  /* nbdkit itself handles -, -FD and +FILE; the filter sees the result. */
  *password = strdup (value);
  return *password ? 0 : -1;
}

/* Extents as nbdkit keeps them: added in ascending order and contiguous
 * from the start of the range, clipped to it, adjacent extents of the
 * same type merged.
 */
struct nbdkit_extents {
  uint64_t start, end, next;
  struct nbdkit_extent *e;
  size_t n;
};

struct nbdkit_extents *
nbdkit_extents_new (uint64_t start, uint64_t end)
{
  struct nbdkit_extents *x = calloc (1, sizeof *x);

  if (x == NULL)
    return NULL;
  x->start = x->next = start;
  x->end = end;
  return x;
}

void
nbdkit_extents_free (struct nbdkit_extents *x)
{
  if (x) {
    free (x->e);
    free (x);
  }
}

size_t
nbdkit_extents_count (const struct nbdkit_extents *x)
{
  return x->n;
}

struct nbdkit_extent
nbdkit_get_extent (const struct nbdkit_extents *x, size_t i)
{
  if (i >= x->n)
    abort ();
  return x->e[i];
}

/* A harness may make the add_extent_fail_after'th call (from 0) on
 * add_extent_fail_on fail, as nbdkit's does when out of memory.
 */
static struct nbdkit_extents *add_extent_fail_on;
static int add_extent_fail_after = -1;
static int add_extent_failed;

int
nbdkit_add_extent (struct nbdkit_extents *x, uint64_t offset,
                   uint64_t length, uint32_t type)
{
  struct nbdkit_extent *p;

  if (x == add_extent_fail_on && add_extent_fail_after >= 0 &&
      add_extent_fail_after-- == 0) {
    add_extent_failed++;
    errno = ENOMEM;
    return -1;
  }
  if (length == 0 || offset + length <= x->start || offset >= x->end)
    return 0;
  if (offset < x->start) {
    length -= x->start - offset;
    offset = x->start;
  }
  if (offset + length > x->end)
    length = x->end - offset;
  if (offset != x->next) {
    fprintf (stderr, "extent at %" PRIu64 " does not follow the one before "
             "(expected %" PRIu64 ")\n", offset, x->next);
    abort ();                   /* nbdkit would fail the request */
  }
  x->next = offset + length;
  if (x->n > 0 && x->e[x->n - 1].type == type) {
    x->e[x->n - 1].length += length;
    return 0;
  }
  p = realloc (x->e, (x->n + 1) * sizeof *p);
  if (p == NULL)
    return -1;
  x->e = p;
  x->e[x->n++] = (struct nbdkit_extent) { offset, length, type };
  return 0;
}

#endif /* FUZZ_NBDKIT_STUBS_H */

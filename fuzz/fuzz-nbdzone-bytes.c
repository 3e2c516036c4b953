/* libFuzzer harness: nbdzone's byte counts (OFFSET, LENGTH), which pick
 * the zone a reset or finish destroys.  Compared with the documented
 * form, written out again here: decimal digits (a leading zero is not
 * octal), then at most one of K, M, G, T (either case, powers of 1024),
 * the result within 64 bits; anything else refused.  nbdzone's source is
 * included (its main renamed) to reach its static parser.
 */
#define main nbdzone_main
#include "../tools/nbdzone.c"
#undef main

static int
reference (const char *s, uint64_t *v)
{
  unsigned __int128 n = 0;
  size_t i = 0;
  int shift = 0;

  if (!(s[0] >= '0' && s[0] <= '9'))
    return -1;
  while (s[i] >= '0' && s[i] <= '9') {
    n = n * 10 + (s[i++] - '0');
    if (n > UINT64_MAX)
      return -1;
  }
  if (s[i] && strchr ("kK", s[i])) shift = 10, i++;
  else if (s[i] && strchr ("mM", s[i])) shift = 20, i++;
  else if (s[i] && strchr ("gG", s[i])) shift = 30, i++;
  else if (s[i] && strchr ("tT", s[i])) shift = 40, i++;
  if (s[i] != '\0')
    return -1;
  n <<= shift;
  if (n > UINT64_MAX)
    return -1;
  *v = (uint64_t) n;
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char *s = strndup ((const char *) data, size);
  uint64_t got = 0, want = 0;
  int r, w;

  if (s == NULL)
    return 0;
  r = parse_bytes (s, &got);
  w = reference (s, &want);
  if (r != w || (r == 0 && got != want)) {
    fprintf (stderr, "nbdzone reads \"%s\" as %s%" PRIu64
             ", the documented form as %s%" PRIu64 "\n", s,
             r ? "refused " : "", got, w ? "refused " : "", want);
    abort ();
  }
  free (s);
  return 0;
}

/* Run a libFuzzer harness on files, without libFuzzer: the regression
 * tests in make check replay the seeds and every input that once
 * crashed, built with the ordinary compiler.
 */

#include <config.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
main (int argc, char *argv[])
{
  int i;

  for (i = 1; i < argc; i++) {
    FILE *f = fopen (argv[i], "rb");
    unsigned char *buf = NULL;
    size_t n = 0, cap = 0, k;

    if (!f) {
      perror (argv[i]);
      return 1;
    }
    do {
      if (n == cap) {
        cap = cap ? 2 * cap : 65536;
        buf = realloc (buf, cap);
        if (!buf) {
          perror ("realloc");
          return 1;
        }
      }
      k = fread (buf + n, 1, cap - n, f);
      n += k;
    } while (k > 0);
    fclose (f);
    LLVMFuzzerTestOneInput (buf, n);
    free (buf);
    printf ("%s: ok\n", argv[i]);
  }
  return 0;
}

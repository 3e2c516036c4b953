/* libFuzzer harness: the cryptinline filter's parameters, key file and
 * passphrase, through the filter's own .config and .config_complete.
 *
 * The input is lines of KEY=VALUE given to .config in order (as nbdkit
 * does, stopping at the first error), then .config_complete; after a
 * NUL byte, the rest of the input is the content of the key file that
 * "crypt-key-file=@" names.  The filter's source is included so that its
 * static configuration can be reset between runs; the nbdkit functions
 * it calls are small stand-ins below.
 *
 * Checked beyond memory errors: every refusal is one line naming a
 * parameter or the key, and never holds key bytes; every accepted
 * configuration is one dm-crypt accepts (key 32 or 64 bytes, a valid
 * sector size, an IV offset of whole crypt sectors, 1-1024 threads), a
 * key file's key is its exact content, a passphrase's key is cryptsetup's
 * plain sha256 hashing (computed here independently), and a pool
 * threshold is the number written times its suffix.
 */
#define _GNU_SOURCE 1           /* memfd_create, memmem */
#include "../filters/cryptinline/cryptinline.c"

#include <stdarg.h>
#include <stdio.h>
#include <sys/mman.h>

#include "nbdkit-stubs.h"

static int
next_config (nbdkit_backend *nxdata, const char *k, const char *v)
{
  return 0;                     /* the plugin's parameters */
}

static int
next_config_complete (nbdkit_backend *nxdata)
{
  return 0;
}

/* ---- The harness ------------------------------------------------------ */

static void
reset_config (void)
{
  fmt = (struct xts_format) { .sector_size = 4096 };
  the_key = (struct volume_key) { .name = NULL };
  key_dir = header_dir = NULL;
  slot_secret = NULL;
  slot_secret_len = 0;
  passphrase = NULL;
  passphrase_len = 0;
  key_size_bits = 0;
  key_file = NULL;
  header_file = NULL;
  file_prefix = "";
  mode = MODE_AUTO;
  crypt_threads = 0;
  pool_threshold = DEFAULT_POOL_THRESHOLD;
  seen_sector_size = seen_iv_large = seen_iv_offset = seen_cipher =
    seen_mode = seen_threads = seen_threshold = seen_header =
    seen_header_dir = seen_file_prefix = false;
}

static void
check (bool ok, const char *what)
{
  if (!ok) {
    fprintf (stderr, "broken: %s\n", what);
    abort ();
  }
}

/* cryptsetup --type plain --hash sha256, written out again here. */
static void
plain_sha256 (const char *pw, size_t pwlen, unsigned char *out, size_t len)
{
  unsigned char digest[32], *buf = malloc (pwlen + len);
  size_t round, done = 0;

  check (buf != NULL, "malloc");
  for (round = 0; done < len; round++) {
    memset (buf, 'A', round);
    memcpy (buf + round, pw, pwlen);
    gcry_md_hash_buffer (GCRY_MD_SHA256, digest, buf, round + pwlen);
    memcpy (out + done, digest, len - done < 32 ? len - done : 32);
    done += len - done < 32 ? len - done : 32;
  }
  free (buf);
}

static bool
printable (const uint8_t *p, size_t n)
{
  size_t i;

  for (i = 0; i < n; i++)
    if (p[i] < 0x20 || p[i] >= 0x7f)
      return false;
  return true;
}

/* The pool threshold a value should give, as documented: digits times
 * k/M/G (powers of 1024), at most 4G; or -1.
 */
static int64_t
expected_threshold (const char *v)
{
  uint64_t n = 0, mult = 1;
  const char *p = v;

  if (*p < '0' || *p > '9')
    return -1;
  for (; *p >= '0' && *p <= '9'; p++) {
    if (n > UINT32_MAX)
      return -1;
    n = n * 10 + (*p - '0');
  }
  if (*p == 'k' || *p == 'K') mult = 1024, p++;
  else if (*p == 'm' || *p == 'M') mult = 1024 * 1024, p++;
  else if (*p == 'g' || *p == 'G') mult = 1024 * 1024 * 1024, p++;
  if (*p || n * mult > (UINT64_C (4) << 30))
    return -1;
  return n * mult;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static bool loaded;
  const uint8_t *nul = memchr (data, '\0', size);
  size_t text_len = nul ? (size_t) (nul - data) : size;
  const uint8_t *keydata = nul ? nul + 1 : NULL;
  size_t keydata_len = nul ? size - text_len - 1 : 0;
  char *text = strndup ((const char *) data, text_len);
  char keypath[64], *line, *save = NULL;
  const char *pw_value = NULL, *threshold_value = NULL;
  bool key_file_named = false;
  int fd, r = 0;

  if (text == NULL)
    return 0;
  if (!loaded) {
    cryptinline_load ();
    loaded = true;
  }
  fd = memfd_create ("key", 0);
  check (fd >= 0, "memfd_create");
  if (keydata_len)
    check (write (fd, keydata, keydata_len) == (ssize_t) keydata_len, "write");
  snprintf (keypath, sizeof keypath, "/proc/self/fd/%d", fd);

  reset_config ();
  errors = 0;
  for (line = strtok_r (text, "\n", &save); line && r == 0;
       line = strtok_r (NULL, "\n", &save)) {
    char *eq = strchr (line, '=');
    const char *k = line, *v = eq ? eq + 1 : "";
    if (eq)
      *eq = '\0';
    if (strcmp (k, "crypt-key-file") == 0 && strcmp (v, "@") == 0) {
      v = keypath;
      key_file_named = true;
    }
    if (strcmp (k, "crypt-passphrase") == 0)
      pw_value = v;
    if (strcmp (k, "crypt-pool-threshold") == 0)
      threshold_value = v;
    r = cryptinline_config (next_config, NULL, k, v);
  }
  if (r == 0)
    r = cryptinline_config_complete (next_config_complete, NULL);

  if (r == -1) {
    check (errors >= 1, "refused without a message");
    check (strchr (last_error, '\n') == NULL, "message of several lines");
    /* Only bytes that cannot come from the messages' own words or from
     * the parameters (which messages quote) count as key bytes.
     */
    if (key_file_named && keydata_len >= 16 && !printable (keydata, 16) &&
        !memmem (data, text_len, keydata, 16))
      check (memmem (last_error, strlen (last_error), keydata, 16) == NULL,
             "key bytes in a message");
  }
  else if (key_dir || header_dir) {
    /* Keys per export are read at connection time, not now; the secret
     * that opens the headers is kept, in key memory.
     */
    check (errors == 0, "accepted with an error message");
    check (the_key.key == NULL, "a key read at start for keys per export");
    if (header_dir)
      check (slot_secret != NULL && keymem_contains (slot_secret),
             "the key slots' secret outside key memory");
  }
  else {
    uint32_t per = fmt.sector_size / 512;
    const unsigned char *key = the_key.key;
    size_t key_len = the_key.key_len;

    check (errors == 0, "accepted with an error message");
    check (key != NULL && (key_len == 32 || key_len == 64), "key size");
    check (keymem_contains (key), "key outside key memory");
    check (xts_valid_sector_size (fmt.sector_size), "sector size");
    check (fmt.iv_offset % per == 0, "IV offset not whole crypt sectors");
    check (crypt_threads >= 1 && crypt_threads <= MAX_THREADS, "threads");
    if (key_file) {
      check (keydata_len == key_len && memcmp (key, keydata, key_len) == 0,
             "key is not the key file's content");
    }
    else {
      unsigned char want[64];
      check (pw_value != NULL, "a key from nowhere");
      plain_sha256 (pw_value, strlen (pw_value), want, key_len);
      check (memcmp (key, want, key_len) == 0,
             "passphrase key differs from cryptsetup's plain sha256");
    }
    if (threshold_value)
      check (expected_threshold (threshold_value) == (int64_t) pool_threshold,
             "pool threshold");
  }
  /* What .unload does, without deleting the thread key. */
  wipe_secret (the_key.key, the_key.key_len);
  wipe_secret (passphrase, passphrase_len);
  wipe_secret (slot_secret, slot_secret_len);
  close (fd);
  free (text);
  return 0;
}

/* nbdkit-cryptinline-filter: AES-XTS encryption at rest, bit-compatible
 * with dm-crypt aes-xts-plain64 (cryptsetup --type plain).
 *
 * How it works: every request must cover whole crypt sectors (advertised
 * as the minimum block size), so no read-modify-write is ever needed.  A
 * write is encrypted into a bounce buffer and handed down as
 * exactly one write with the client's offset, length and flags, by the
 * request thread, after all encryption is done: the filter never reorders
 * writes, which zoned devices below depend on.  A read is read from below
 * in one call and decrypted in place; sectors the layer below reports as
 * zero (holes, the area above a write pointer) are returned as zeros.  As
 * such sectors always read as zeros from below, the layer below is asked
 * only when some sector's ciphertext is all zeros.
 * Write-zeroes writes encrypted zeros in bounded chunks, in ascending
 * order, each after the previous one completed, then one flush if the
 * request had FUA.
 *
 * The cipher work runs on the request thread (crypt-mode=inline) or is
 * shared with a thread pool that starts after nbdkit forks; the request
 * thread waits for the pool before issuing its I/O (crypt-mode=pool, and
 * crypt-mode=auto for requests of at least crypt-pool-threshold bytes).
 *
 * Each thread has its own libgcrypt handle (handles are not thread-safe),
 * keyed once.  Bounce buffers are shared by all threads: a stack of free
 * buffers, the most recently returned taken first, so that the few
 * buffers in the CPU's cache serve every request thread (with tens of
 * threads, a buffer of each thread's own was cache-cold at every
 * request, and writing it cost about as much as the cipher).  Key bytes
 * and key schedules live only in keymem (common/keymem.h): locked into RAM
 * and left out of core dumps, locked again in the serving process after
 * nbdkit forks, and wiped on unload.
 *
 * The key comes from a raw key file, from a passphrase hashed as
 * cryptsetup's plain mode does, or (crypt-header) from a key slot of a
 * LUKS1/LUKS2 header made by cryptsetup, unlocked with a passphrase or a
 * key file (luks.c); the header then also sets the sector size and the
 * IV offset.  Whichever way, the key enters the filter in take_key.
 */

#define _GNU_SOURCE 1          /* asprintf */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nbdkit-filter.h>

#include "keymem.h"
#include "xts.h"
#include "pool.h"
#include "luks.h"

/* Write-zeroes is done in chunks of at most this many bytes. */
#define ZERO_CHUNK (1024 * 1024)

/* crypt-mode=auto uses the pool for requests of at least this size; chosen
 * by measurement on a 2-core machine (see the man page).
 */
#define DEFAULT_POOL_THRESHOLD (1024 * 1024)

/* The pool never cuts a request into chunks smaller than this: below it
 * the hand-over costs more than the cipher work saved.
 */
#define POOL_MIN_CHUNK (32 * 1024)

#define MAX_THREADS 1024

/* key-check= is this many bytes of an HMAC-SHA256, in hex. */
#define KEY_CHECK_BYTES 16

enum crypt_mode { MODE_INLINE, MODE_POOL, MODE_AUTO };

/* A key in use: its bytes, the format it encrypts with and its check
 * value.  With crypt-key-file, crypt-passphrase or crypt-header there
 * is one for every export (the_key); with crypt-key-dir, one per
 * export, read when the first connection to the export opens and
 * wiped when the last one closes.
 */
struct volume_key {
  char *name;                   /* crypt-key-dir: the export's name */
  unsigned char *key;           /* keymem */
  size_t key_len;
  struct xts_format fmt;
  /* The key's check value for clients that reconnect (key-check= in
   * the export description): see make_key_check.
   */
  char key_check[2 * KEY_CHECK_BYTES + 1];
  /* Which key a thread's cipher handle holds: a number no other key
   * loaded in this process has, so that a key freed and another loaded
   * at the same address is never mistaken for it.
   */
  uint64_t serial;
  /* Keys per export: the connections using it, and the list of keys in
   * use (under keys_lock); LOCK is held while the key is read.
   */
  unsigned users;
  struct volume_key *next;
  pthread_mutex_t lock;
};

/* Configuration: written by .config/.config_complete, read-only after. */
static struct xts_format fmt = { .sector_size = 4096 };
static struct volume_key the_key;
static const char *key_dir;             /* crypt-key-dir */
static char *passphrase;                /* keymem until derived */
static size_t passphrase_len;
static unsigned key_size_bits;          /* crypt-key-size, 0 = not given */
static const char *key_file;
static const char *header_file;         /* crypt-header */
static const char *header_dir;          /* crypt-header-dir */
/* crypt-file-prefix: the file of export NAME in either directory is
 * PREFIX NAME, as systemd names the credentials of a directory given
 * to LoadCredential=ID:DIR (ID_NAME).
 */
static const char *file_prefix = "";
static bool seen_file_prefix;
/* crypt-header-dir: the passphrase or key file that opens the key slots
 * of every export's header, kept (keymem) until unload, since headers
 * are opened when their export's first connection opens.
 */
static char *slot_secret;
static size_t slot_secret_len;
static enum crypt_mode mode = MODE_AUTO;
static unsigned crypt_threads;          /* 0 = online CPUs */
static uint64_t pool_threshold = DEFAULT_POOL_THRESHOLD;
static bool seen_sector_size, seen_iv_large, seen_iv_offset, seen_cipher,
  seen_mode, seen_threads, seen_threshold, seen_header, seen_header_dir;

/* Per-thread cipher handle, keyed with the key of serial number
 * SERIAL (0: none).  Every thread's state is in all_states, so that
 * the key schedules of an export's key can be wiped with the key: a
 * pool thread lives until unload, and would keep them.  SERIAL is
 * read by its thread without the lock (atomically), and changed under
 * states_lock: by its thread, or by forget_key_schedules for a key no
 * request uses any more.
 */
struct thread_state {
  gcry_cipher_hd_t hd;
  uint64_t serial;
  struct thread_state *next;
};
static pthread_mutex_t states_lock = PTHREAD_MUTEX_INITIALIZER;
static struct thread_state *all_states;

/* A bounce buffer, on the free stack or in use by one request. */
struct bounce {
  struct bounce *next;
  size_t len;
  unsigned char *buf;
};
static pthread_mutex_t bounce_lock = PTHREAD_MUTEX_INITIALIZER;
static struct bounce *bounce_free;      /* most recently returned first */
static void bounce_free_all (void);
static pthread_key_t thread_key;
static bool thread_key_created;

/* Encrypted write-zeroes encrypts this. */
static unsigned char zeros[ZERO_CHUNK];

/* Close TS's handle, which wipes its key schedule.  Caller holds
 * states_lock.
 */
static void
close_thread_handle (struct thread_state *ts)
{
  if (ts->serial) {
    gcry_cipher_close (ts->hd);
    __atomic_store_n (&ts->serial, 0, __ATOMIC_RELEASE);
  }
}

static void
free_thread_state (void *p)
{
  struct thread_state *ts = p, **pp;

  pthread_mutex_lock (&states_lock);
  for (pp = &all_states; *pp; pp = &(*pp)->next)
    if (*pp == ts) {
      *pp = ts->next;
      break;
    }
  close_thread_handle (ts);
  pthread_mutex_unlock (&states_lock);
  free (ts);
}

/* Wipe every thread's key schedule made from the key of SERIAL, which
 * no request uses any more (its export's last connection closed).
 */
static void
forget_key_schedules (uint64_t serial)
{
  struct thread_state *ts;

  pthread_mutex_lock (&states_lock);
  for (ts = all_states; ts; ts = ts->next)
    if (ts->serial == serial)
      close_thread_handle (ts);
  pthread_mutex_unlock (&states_lock);
}

static void
wipe_secret (void *p, size_t len)
{
  if (p) {
    explicit_bzero (p, len);
    keymem_free (p);
  }
}

/* The one place where a key enters the filter: VK takes over K, which
 * must come from keymem_alloc, and wipes it when VK goes.
 */
static void
take_key (struct volume_key *vk, unsigned char *k, size_t len)
{
  static uint64_t serials;

  wipe_secret (vk->key, vk->key_len);
  vk->key = k;
  vk->key_len = len;
  vk->serial = __atomic_add_fetch (&serials, 1, __ATOMIC_RELAXED);
}

static void
cryptinline_load (void)
{
  const char *why = xts_library_init ();
  int r;

  if (why) {
    nbdkit_error ("%s", why);
    exit (EXIT_FAILURE);
  }
  r = pthread_key_create (&thread_key, free_thread_state);
  if (r != 0) {
    nbdkit_error ("pthread_key_create: %s", strerror (r));
    exit (EXIT_FAILURE);
  }
  thread_key_created = true;
}

static void
cryptinline_unload (void)
{
  pool_stop ();
  if (thread_key_created) {
    /* This thread's state, if it ever did I/O; threads that exited
     * already ran the destructor.
     */
    struct thread_state *ts = pthread_getspecific (thread_key);
    if (ts)
      free_thread_state (ts);
    pthread_key_delete (thread_key);
  }
  bounce_free_all ();
  wipe_secret (the_key.key, the_key.key_len);
  wipe_secret (passphrase, passphrase_len);
  wipe_secret (slot_secret, slot_secret_len);
  the_key.key = NULL;
  passphrase = slot_secret = NULL;
}

/* ---- Parsing parameters ------------------------------------------------ */

static int
once (bool *seen, const char *name)
{
  if (*seen) {
    nbdkit_error ("%s was given twice: give it once", name);
    return -1;
  }
  *seen = true;
  return 0;
}

/* Own parsers so that each bad value gets exactly one line that names
 * the parameter, the value and what is accepted.
 */
static int
parse_bool (const char *name, const char *value, bool *b)
{
  if (!strcasecmp (value, "true") || !strcasecmp (value, "on") ||
      !strcasecmp (value, "yes") || !strcmp (value, "1"))
    *b = true;
  else if (!strcasecmp (value, "false") || !strcasecmp (value, "off") ||
           !strcasecmp (value, "no") || !strcmp (value, "0"))
    *b = false;
  else {
    nbdkit_error ("%s=%s is not a boolean: use true or false", name, value);
    return -1;
  }
  return 0;
}

/* A whole decimal number without sign; false if anything else. */
static bool
parse_u64 (const char *value, uint64_t *n, char **end)
{
  char *e;

  if (value[0] < '0' || value[0] > '9')
    return false;
  errno = 0;
  *n = strtoull (value, &e, 10);
  if (errno != 0)
    return false;
  if (end)
    *end = e;
  else if (*e != '\0')
    return false;
  return true;
}

static int
parse_sector_size (const char *value)
{
  uint64_t n;

  if (!parse_u64 (value, &n, NULL) || n > UINT32_MAX ||
      !xts_valid_sector_size (n)) {
    nbdkit_error ("crypt-sector-size=%s is not accepted: "
                  "use 512, 1024, 2048 or 4096", value);
    return -1;
  }
  fmt.sector_size = n;
  return 0;
}

static int
parse_iv_offset (const char *value)
{
  if (!parse_u64 (value, &fmt.iv_offset, NULL)) {
    nbdkit_error ("crypt-iv-offset=%s is not accepted: use a whole number "
                  "from 0 to %" PRIu64, value, UINT64_MAX);
    return -1;
  }
  return 0;
}

static int
parse_key_size (const char *value)
{
  if (strcmp (value, "256") == 0)
    key_size_bits = 256;
  else if (strcmp (value, "512") == 0)
    key_size_bits = 512;
  else {
    nbdkit_error ("crypt-key-size=%s is not accepted: "
                  "use 256 (AES-128-XTS) or 512 (AES-256-XTS)", value);
    return -1;
  }
  return 0;
}

static int
parse_mode (const char *value)
{
  if (strcmp (value, "inline") == 0)
    mode = MODE_INLINE;
  else if (strcmp (value, "pool") == 0)
    mode = MODE_POOL;
  else if (strcmp (value, "auto") == 0)
    mode = MODE_AUTO;
  else {
    nbdkit_error ("crypt-mode=%s is not accepted: use inline, pool or auto",
                  value);
    return -1;
  }
  return 0;
}

static int
parse_threads (const char *value)
{
  uint64_t n;

  if (!parse_u64 (value, &n, NULL) || n < 1 || n > MAX_THREADS) {
    nbdkit_error ("crypt-threads=%s is not accepted: "
                  "use a whole number from 1 to %d", value, MAX_THREADS);
    return -1;
  }
  crypt_threads = n;
  return 0;
}

#define MAX_POOL_THRESHOLD (UINT64_C (4) * 1024 * 1024 * 1024)

/* A byte count with an optional k, M or G suffix (powers of 1024), at
 * most 4G.
 */
static int
parse_threshold (const char *value)
{
  uint64_t n, mult = 1;
  char *end;

  if (parse_u64 (value, &n, &end)) {
    if (strcasecmp (end, "k") == 0) mult = 1024;
    else if (strcasecmp (end, "m") == 0) mult = 1024 * 1024;
    else if (strcasecmp (end, "g") == 0) mult = 1024 * 1024 * 1024;
    else if (*end != '\0') mult = 0;
    if (mult && n <= MAX_POOL_THRESHOLD && n * mult <= MAX_POOL_THRESHOLD) {
      pool_threshold = n * mult;
      return 0;
    }
  }
  nbdkit_error ("crypt-pool-threshold=%s is not accepted: use a size in "
                "bytes, optionally with a k, M or G suffix, up to 4G", value);
  return -1;
}

static int
check_one_key_source (const char *name)
{
  if (key_file || passphrase || key_dir) {
    nbdkit_error ("%s given, but a key was already given by %s: "
                  "use exactly one of crypt-key-file, crypt-passphrase "
                  "and crypt-key-dir", name,
                  key_file ? "crypt-key-file" : passphrase
                  ? "crypt-passphrase" : "crypt-key-dir");
    return -1;
  }
  return 0;
}

/* Read a raw key file into VK, in locked memory.  Reads one byte more
 * than the largest key so that a too-long file is noticed without
 * reading it all.  WHAT names the file in messages ("crypt-key-file").
 */
static int
read_key_file (const char *what, const char *file, struct volume_key *vk)
{
  unsigned char *buf;
  struct stat st;
  ssize_t r;
  size_t n = 0;
  int fd;

  fd = open (file, O_RDONLY | O_CLOEXEC);
  if (fd == -1) {
    nbdkit_error ("%s %s cannot be read: %m", what, file);
    return -1;
  }
  buf = keymem_alloc (XTS_KEY_BYTES_256 + 1);
  if (buf == NULL) {
    nbdkit_error ("%s %s: no locked memory for the key: %m", what, file);
    close (fd);
    return -1;
  }
  while (n < XTS_KEY_BYTES_256 + 1 &&
         (r = read (fd, buf + n, XTS_KEY_BYTES_256 + 1 - n)) != 0) {
    if (r == -1) {
      if (errno == EINTR)
        continue;
      nbdkit_error ("%s %s cannot be read: %m", what, file);
      goto err;
    }
    n += r;
  }
  if (n != XTS_KEY_BYTES_128 && n != XTS_KEY_BYTES_256) {
    bool regular = fstat (fd, &st) == 0 && S_ISREG (st.st_mode);
    if (regular)
      nbdkit_error ("%s %s is %jd bytes: a raw key must be exactly "
                    "32 bytes (AES-128-XTS) or 64 bytes (AES-256-XTS)",
                    what, file, (intmax_t) st.st_size);
    else
      nbdkit_error ("%s %s gave %s%zu bytes: a raw key must be exactly "
                    "32 bytes (AES-128-XTS) or 64 bytes (AES-256-XTS)",
                    what, file, n > XTS_KEY_BYTES_256 ? "more than " : "",
                    n > XTS_KEY_BYTES_256 ? (size_t) XTS_KEY_BYTES_256 : n);
    goto err;
  }
  close (fd);
  take_key (vk, buf, n);
  return 0;

 err:
  wipe_secret (buf, XTS_KEY_BYTES_256 + 1);
  close (fd);
  return -1;
}

static int
read_passphrase (const char *value)
{
  char *pw;

  if (nbdkit_read_password (value, &pw) == -1)
    return -1;
  passphrase_len = strlen (pw);
  passphrase = keymem_alloc (passphrase_len + 1);
  if (passphrase == NULL) {
    nbdkit_error ("no locked memory for the passphrase: %m");
    explicit_bzero (pw, passphrase_len);
    free (pw);
    return -1;
  }
  memcpy (passphrase, pw, passphrase_len + 1);
  explicit_bzero (pw, passphrase_len);
  free (pw);
  return 0;
}

static int
cryptinline_config (nbdkit_next_config *next, nbdkit_backend *nxdata,
                    const char *k, const char *value)
{
  if (strcmp (k, "crypt-key-file") == 0) {
    /* Read in config_complete: what it holds depends on crypt-header. */
    if (check_one_key_source (k) == -1)
      return -1;
    key_file = value;
    return 0;
  }
  if (strcmp (k, "crypt-key-dir") == 0) {
    if (check_one_key_source (k) == -1)
      return -1;
    key_dir = value;
    return 0;
  }
  if (strcmp (k, "crypt-header") == 0) {
    if (once (&seen_header, k) == -1)
      return -1;
    header_file = value;
    return 0;
  }
  if (strcmp (k, "crypt-header-dir") == 0) {
    if (once (&seen_header_dir, k) == -1)
      return -1;
    header_dir = value;
    return 0;
  }
  if (strcmp (k, "crypt-file-prefix") == 0) {
    if (once (&seen_file_prefix, k) == -1)
      return -1;
    if (strchr (value, '/')) {
      nbdkit_error ("crypt-file-prefix=%s: a prefix of file names in "
                    "crypt-key-dir or crypt-header-dir cannot hold a "
                    "slash", value);
      return -1;
    }
    file_prefix = value;
    return 0;
  }
  if (strcmp (k, "crypt-passphrase") == 0)
    return check_one_key_source (k) == -1 ? -1 : read_passphrase (value);
  if (strcmp (k, "crypt-key-size") == 0) {
    if (key_size_bits) {
      nbdkit_error ("crypt-key-size was given twice: give it once");
      return -1;
    }
    return parse_key_size (value);
  }
  if (strcmp (k, "crypt-cipher") == 0) {
    if (once (&seen_cipher, k) == -1)
      return -1;
    if (strcmp (value, "aes-xts-plain64") != 0) {
      nbdkit_error ("crypt-cipher=%s is not supported: "
                    "the only accepted value is aes-xts-plain64", value);
      return -1;
    }
    return 0;
  }
  if (strcmp (k, "crypt-sector-size") == 0)
    return once (&seen_sector_size, k) == -1 ? -1 : parse_sector_size (value);
  if (strcmp (k, "crypt-iv-large-sectors") == 0)
    return once (&seen_iv_large, k) == -1 ? -1 :
      parse_bool (k, value, &fmt.iv_large_sectors);
  if (strcmp (k, "crypt-iv-offset") == 0)
    return once (&seen_iv_offset, k) == -1 ? -1 : parse_iv_offset (value);
  if (strcmp (k, "crypt-mode") == 0)
    return once (&seen_mode, k) == -1 ? -1 : parse_mode (value);
  if (strcmp (k, "crypt-threads") == 0)
    return once (&seen_threads, k) == -1 ? -1 : parse_threads (value);
  if (strcmp (k, "crypt-pool-threshold") == 0)
    return once (&seen_threshold, k) == -1 ? -1 : parse_threshold (value);
  if (strncmp (k, "crypt-", 6) == 0) {
    nbdkit_error ("unknown parameter %s: see nbdkit-cryptinline-filter(1) "
                  "for the crypt-* parameters", k);
    return -1;
  }
  return next (nxdata, k, value);
}

static int
derive_passphrase_key (void)
{
  size_t len = key_size_bits == 256 ? XTS_KEY_BYTES_128 : XTS_KEY_BYTES_256;
  gcry_error_t err;

  unsigned char *k = keymem_alloc (len);

  if (k == NULL) {
    nbdkit_error ("no locked memory for the key: %m");
    return -1;
  }
  err = xts_plain_sha256_key (passphrase, passphrase_len, k, len);
  wipe_secret (passphrase, passphrase_len);
  passphrase = NULL;
  if (err) {
    wipe_secret (k, len);
    nbdkit_error ("hashing the passphrase failed: %s", gcry_strerror (err));
    return -1;
  }
  take_key (&the_key, k, len);
  return 0;
}

/* Check that the key works, so a bad key fails at startup, not at the
 * first request.
 */
static int
check_key (const struct volume_key *vk)
{
  gcry_cipher_hd_t hd;
  gcry_error_t err = xts_open (&hd, vk->key, vk->key_len);

  if (err) {
    nbdkit_error ("the %zu-byte key cannot be used for AES-XTS: %s",
                  vk->key_len, gcry_strerror (err));
    return -1;
  }
  gcry_cipher_close (hd);
  return 0;
}

/* key-check: the first 16 bytes of HMAC-SHA256 keyed with the XTS key
 * over a fixed text that also names the format the key is used with
 * (sector size, IV offset and counting), in hex.  A client that
 * reconnects compares it, so that it never resumes writing to a disk
 * served with another key or format.  It is safe to publish: HMAC is a
 * one-way function of its key, so the value tells nothing about the
 * key but lets one test a guessed key, which for a random 256 or
 * 512-bit key is hopeless (a weak passphrase is as weak without it:
 * its ciphertext on disk tests guesses as well).
 */
static int
make_key_check (struct volume_key *vk)
{
  const struct xts_format *f = &vk->fmt;
  unsigned char mac[32];
  size_t mac_len = sizeof mac, i;
  char text[160];
  gcry_mac_hd_t h;
  gcry_error_t err;

  snprintf (text, sizeof text, "nbdkit-cryptinline key-check 1: "
            "aes-xts-plain64 key-bits=%zu sector-size=%" PRIu32
            " iv-offset=%" PRIu64 " iv-large-sectors=%d", vk->key_len * 8,
            f->sector_size, f->iv_offset, f->iv_large_sectors ? 1 : 0);
  err = gcry_mac_open (&h, GCRY_MAC_HMAC_SHA256, GCRY_MAC_FLAG_SECURE, NULL);
  if (!err)
    err = gcry_mac_setkey (h, vk->key, vk->key_len);
  if (!err)
    err = gcry_mac_write (h, text, strlen (text));
  if (!err)
    err = gcry_mac_read (h, mac, &mac_len);
  gcry_mac_close (h);
  if (err) {
    nbdkit_error ("cannot compute the key check value: %s",
                  gcry_strerror (err));
    return -1;
  }
  for (i = 0; i < KEY_CHECK_BYTES; i++)
    snprintf (vk->key_check + 2 * i, 3, "%02x", mac[i]);
  explicit_bzero (mac, sizeof mac);
  return 0;
}

/* dm-crypt refuses an iv_offset that is not a whole number of crypt
 * sectors; a disk written with one could not be opened by dm-crypt.
 * Checked here, when both parameters are known, in any order.
 */
static int
check_iv_offset (void)
{
  uint32_t per_sector = fmt.sector_size / 512;

  if (fmt.iv_offset % per_sector == 0)
    return 0;
  nbdkit_error ("crypt-iv-offset=%" PRIu64 " is not a multiple of %" PRIu32
                " (crypt-sector-size %" PRIu32 " / 512): dm-crypt requires "
                "the IV offset to be a whole number of crypt sectors",
                fmt.iv_offset, per_sector, fmt.sector_size);
  return -1;
}


/* A key file for a key slot, read as cryptsetup --key-file does: the
 * whole file, every byte (newlines too), up to cryptsetup's default
 * limit.  Returns the bytes in locked memory (keymem).
 */
static int
read_keyslot_file (const char *file, char **out, size_t *out_len)
{
  size_t cap = 4096, n = 0;
  char *buf = NULL, *bigger;
  struct stat st;
  ssize_t r;
  int fd = open (file, O_RDONLY | O_CLOEXEC);

  if (fd == -1) {
    nbdkit_error ("crypt-key-file %s cannot be read: %m", file);
    return -1;
  }
  if (fstat (fd, &st) == 0 && S_ISREG (st.st_mode) &&
      st.st_size > LUKS_KEYFILE_MAX)
    goto too_big;
  if ((buf = keymem_alloc (cap)) == NULL)
    goto nomem;
  for (;;) {
    if (n == cap) {
      if (cap > LUKS_KEYFILE_MAX)
        goto too_big;
      /* Grow by copying, so no copy is left unwiped; one byte past the
       * limit tells a too-long pipe.
       */
      size_t grown = cap * 2 > LUKS_KEYFILE_MAX ? LUKS_KEYFILE_MAX + 1
                                                : cap * 2;
      if ((bigger = keymem_alloc (grown)) == NULL)
        goto nomem;
      memcpy (bigger, buf, n);
      wipe_secret (buf, cap);
      buf = bigger;
      cap = grown;
    }
    r = read (fd, buf + n, cap - n);
    if (r == -1 && errno == EINTR)
      continue;
    if (r == -1) {
      nbdkit_error ("crypt-key-file %s cannot be read: %m", file);
      goto err;
    }
    if (r == 0)
      break;
    n += r;
  }
  if (n > LUKS_KEYFILE_MAX)
    goto too_big;
  if (n == 0) {
    nbdkit_error ("crypt-key-file %s is empty", file);
    goto err;
  }
  close (fd);
  *out = buf;
  *out_len = n;
  return 0;

 too_big:
  nbdkit_error ("crypt-key-file %s is larger than %d bytes, the most "
                "cryptsetup reads from a key file", file, LUKS_KEYFILE_MAX);
  goto err;
 nomem:
  nbdkit_error ("no locked memory for crypt-key-file %s: %m", file);
 err:
  wipe_secret (buf, cap);
  close (fd);
  return -1;
}

/* crypt-header, crypt-header-dir: the key, sector size and IV offset
 * come from the header, so the parameters that set them are refused
 * with it.
 */
static int
check_header_clash (const char *with)
{
  const char *clash =
    key_size_bits ? "crypt-key-size" :
    seen_cipher ? "crypt-cipher" :
    seen_sector_size ? "crypt-sector-size" :
    seen_iv_offset ? "crypt-iv-offset" :
    seen_iv_large ? "crypt-iv-large-sectors" : NULL;

  if (clash) {
    nbdkit_error ("%s cannot be used with %s: the LUKS header sets it",
                  clash, with);
    return -1;
  }
  return 0;
}

/* The secret that opens a key slot: the key file's bytes, or the
 * passphrase (taken over), in keymem.
 */
static int
take_slot_secret (char **secret, size_t *len)
{
  if (key_file)
    return read_keyslot_file (key_file, secret, len);
  *secret = passphrase;
  *len = passphrase_len;
  passphrase = NULL;
  return 0;
}

/* Open HEADER's key slot with SECRET into VK: the volume key, the
 * sector size and the IV offset.  WHAT prefixes the debug lines.
 */
static int
open_header_key (const char *what, const char *header, const char *secret,
                 size_t secret_len, struct volume_key *vk)
{
  struct luks_volume vol;
  char why[LUKS_WHY_LEN];
  unsigned char *k;

  if (luks_open (header, secret, secret_len, &vol, why) == -1) {
    nbdkit_error ("%s%s", what, why);
    return -1;
  }
  if (vol.note[0])
    nbdkit_debug ("%s%s", what, vol.note);
  nbdkit_debug ("%scrypt-header %s: LUKS%u%s%s, key slot %d opened: "
                "AES-%zu-XTS, sector size %" PRIu32 ", IV offset %" PRIu64,
                what, header, vol.version, vol.copy ? ", " : "",
                vol.copy ? vol.copy : "", vol.keyslot, vol.key_len * 4,
                vol.sector_size, vol.iv_offset);
  /* luks.c keeps the key in libgcrypt's secure memory (which is keymem
   * here too); the filter's own copy comes from keymem directly.
   */
  k = keymem_alloc (vol.key_len);
  if (k == NULL) {
    nbdkit_error ("%sno locked memory for the key: %m", what);
    luks_volume_wipe (&vol);
    return -1;
  }
  memcpy (k, vol.key, vol.key_len);
  vk->fmt.sector_size = vol.sector_size;
  vk->fmt.iv_offset = vol.iv_offset;
  vk->fmt.iv_large_sectors = false;
  take_key (vk, k, vol.key_len);
  luks_volume_wipe (&vol);
  return 0;
}

static int
open_header (void)
{
  char *secret;
  size_t secret_len;
  int r;

  if (check_header_clash ("crypt-header") == -1 ||
      take_slot_secret (&secret, &secret_len) == -1)
    return -1;
  r = open_header_key ("", header_file, secret, secret_len, &the_key);
  wipe_secret (secret, secret_len);
  if (r == 0)
    fmt = the_key.fmt;
  return r;
}

/* crypt-header-dir: the headers are opened at connection time; now the
 * directory must be there, and the secret is kept for them.
 */
static int
check_header_dir (void)
{
  struct stat st;

  if (check_header_clash ("crypt-header-dir") == -1)
    return -1;
  if (stat (header_dir, &st) == 0 && !S_ISDIR (st.st_mode)) {
    nbdkit_error ("crypt-header-dir=%s: not a directory; it holds a "
                  "detached LUKS header for each export, named after the "
                  "export", header_dir);
    return -1;
  }
  if (access (header_dir, R_OK | X_OK) == -1) {
    nbdkit_error ("crypt-header-dir=%s: %m", header_dir);
    return -1;
  }
  return take_slot_secret (&slot_secret, &slot_secret_len);
}

/* crypt-key-dir: raw keys, read at connection time; what can be
 * checked now is that the directory is there, and that the parameters
 * given fit raw keys.
 */
static int
check_key_dir (void)
{
  struct stat st;

  if (key_size_bits) {
    nbdkit_error ("crypt-key-size cannot be used with crypt-key-dir: each "
                  "raw key's size is its file's");
    return -1;
  }
  if (check_iv_offset () == -1)
    return -1;
  if (stat (key_dir, &st) == 0 && !S_ISDIR (st.st_mode)) {
    nbdkit_error ("crypt-key-dir=%s: not a directory; it holds a raw key "
                  "file for each export, named after the export", key_dir);
    return -1;
  }
  if (access (key_dir, R_OK | X_OK) == -1) {
    nbdkit_error ("crypt-key-dir=%s: %m", key_dir);
    return -1;
  }
  return 0;
}

static int
cryptinline_config_complete (nbdkit_next_config_complete *next,
                             nbdkit_backend *nxdata)
{
  const char *header_param = header_file ? "crypt-header" : "crypt-header-dir";

  if (header_file && header_dir) {
    nbdkit_error ("crypt-header and crypt-header-dir cannot be used "
                  "together: give one header, or a directory of them");
    return -1;
  }
  if (key_dir && (header_file || header_dir)) {
    nbdkit_error ("crypt-key-dir and %s cannot be used together: "
                  "crypt-key-dir holds raw keys, one per export",
                  header_param);
    return -1;
  }
  if (key_file == NULL && passphrase == NULL && (header_file || header_dir)) {
    nbdkit_error ("no key given to open %s %s: use "
                  "crypt-passphrase=PASSWORD|+FILE|-|-FD or "
                  "crypt-key-file=FILE (a key slot's key file)", header_param,
                  header_file ? header_file : header_dir);
    return -1;
  }
  if (key_file == NULL && passphrase == NULL && key_dir == NULL) {
    nbdkit_error ("no key given: use crypt-key-file=FILE (a raw 32 or "
                  "64-byte key), crypt-passphrase=PASSWORD|+FILE|-|-FD or "
                  "crypt-key-dir=DIR (a raw key per export)");
    return -1;
  }
  if (seen_file_prefix && !key_dir && !header_dir) {
    nbdkit_error ("crypt-file-prefix=%s names files in crypt-key-dir or "
                  "crypt-header-dir, and neither is given", file_prefix);
    return -1;
  }
  if (key_dir) {
    if (check_key_dir () == -1)
      return -1;
  }
  else if (header_dir) {
    if (check_header_dir () == -1)
      return -1;
  }
  else if (header_file) {
    if (open_header () == -1)
      return -1;
  }
  else {
    if (check_iv_offset () == -1)
      return -1;
    if (key_file && read_key_file ("crypt-key-file", key_file,
                                   &the_key) == -1)
      return -1;
    if (key_file && key_size_bits && key_size_bits / 8 != the_key.key_len) {
      nbdkit_error ("crypt-key-size=%u does not match crypt-key-file %s, "
                    "which holds a %zu-bit key", key_size_bits, key_file,
                    the_key.key_len * 8);
      return -1;
    }
    if (passphrase && derive_passphrase_key () == -1)
      return -1;
  }
  if (!key_dir && !header_dir) {
    the_key.fmt = fmt;
    if (check_key (&the_key) == -1 || make_key_check (&the_key) == -1)
      return -1;
  }
  if (crypt_threads == 0) {
    long n = sysconf (_SC_NPROCESSORS_ONLN);
    crypt_threads = n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : n;
  }
  return next (nxdata);
}

#define cryptinline_config_help \
  "crypt-key-file=FILE         Raw key: 32 bytes (AES-128-XTS) or 64 (AES-256-XTS);\n" \
  "                            with crypt-header: a key file of a key slot\n" \
  "                            (cryptsetup --key-file: the whole file, up to 8 MiB).\n" \
  "crypt-passphrase=PASSWORD|+FILE|-|-FD\n" \
  "                            Passphrase, hashed as cryptsetup --type plain --hash sha256;\n" \
  "                            with crypt-header: the passphrase of a key slot.\n" \
  "crypt-key-dir=DIR           A raw key per export: DIR/EXPORTNAME.\n" \
  "crypt-header-dir=DIR        A LUKS header per export: DIR/EXPORTNAME, opened\n" \
  "                            with crypt-passphrase or crypt-key-file.\n" \
  "crypt-file-prefix=PREFIX    The file of an export in either directory is\n" \
  "                            DIR/PREFIXEXPORTNAME (systemd: LoadCredential=ID:DIR\n" \
  "                            gives ID_NAME; use crypt-file-prefix=ID_).\n" \
  "crypt-header=FILE           LUKS2 or LUKS1 header made by cryptsetup luksFormat --header\n" \
  "                            (aes-xts-plain64, data from offset 0): key, sector size\n" \
  "                            and IV offset come from it.  Read only.\n" \
  "crypt-key-size=256|512      Key bits made from a passphrase (default 512).\n" \
  "crypt-cipher=aes-xts-plain64  The cipher (the only one accepted).\n" \
  "crypt-sector-size=512|1024|2048|4096  Encryption sector (default 4096).\n" \
  "crypt-iv-large-sectors=true|false  IV counts crypt sectors (default false).\n" \
  "crypt-iv-offset=N           dm-crypt iv_offset (cryptsetup --skip), 512-byte units,\n" \
  "                            a multiple of crypt-sector-size/512 (default 0).\n" \
  "crypt-mode=inline|pool|auto Where the cipher work runs (default auto).\n" \
  "crypt-threads=N             Threads sharing one request's cipher work\n" \
  "                            (default: online CPUs).\n" \
  "crypt-pool-threshold=SIZE   auto: use the pool from this request size (default 1M)."

/* Say how much key memory is locked; if none could be, what limit stops
 * it and what to raise it to (one page, and the key memory in use, is
 * the least that helps).
 */
static void
report_key_memory (void)
{
  size_t mapped = keymem_mapped_bytes (), limit = keymem_lock_limit ();

  if (keymem_is_locked ())
    nbdkit_debug ("keys: %zu KiB of locked memory, out of core dumps",
                  keymem_locked_bytes () / 1024);
  else if (limit == SIZE_MAX)
    nbdkit_debug ("keys: %zu KiB of key memory not locked into RAM (still "
                  "out of core dumps): mlock failed though no memory lock "
                  "limit is set", mapped / 1024);
  else
    nbdkit_debug ("keys: %zu KiB of key memory not locked into RAM (still "
                  "out of core dumps): the memory lock limit "
                  "(RLIMIT_MEMLOCK) is %zu KiB and lets no page be locked; "
                  "raise it to at least %zu KiB (ulimit -l %zu) to keep "
                  "keys out of swap", mapped / 1024, limit / 1024,
                  mapped / 1024 + 4, mapped / 1024 + 4);
}

static int
cryptinline_after_fork (nbdkit_backend *nxdata)
{
  /* Memory locks do not survive fork either: lock the key (and all key
   * schedules to come) again in the process that serves.
   */
  if (keymem_after_fork () == -1) {
    nbdkit_error ("cannot lock the key's memory again after nbdkit forked: "
                  "%m: raise the memory lock limit (ulimit -l)");
    return -1;
  }
  report_key_memory ();
  /* Threads do not survive fork, so the pool starts only now. */
  if (mode == MODE_INLINE)
    return 0;
  return pool_start (crypt_threads - 1);
}

/* ---- Per-thread state ----------------------------------------------- */

/* This thread's cipher handle, keyed with VK: a thread serving exports
 * with different keys (crypt-key-dir) keys its handle again when the
 * key changes.
 */
static struct thread_state *
thread_state (const struct volume_key *vk)
{
  struct thread_state *ts = pthread_getspecific (thread_key);
  gcry_error_t err;

  if (ts && __atomic_load_n (&ts->serial, __ATOMIC_ACQUIRE) == vk->serial)
    return ts;
  if (ts == NULL) {
    ts = calloc (1, sizeof *ts);
    if (ts == NULL) {
      nbdkit_error ("calloc: %m");
      return NULL;
    }
    if (pthread_setspecific (thread_key, ts) != 0) {
      nbdkit_error ("pthread_setspecific failed");
      free (ts);
      return NULL;
    }
    pthread_mutex_lock (&states_lock);
    ts->next = all_states;
    all_states = ts;
    pthread_mutex_unlock (&states_lock);
  }
  pthread_mutex_lock (&states_lock);
  close_thread_handle (ts);
  err = xts_open (&ts->hd, vk->key, vk->key_len);
  if (!err)
    __atomic_store_n (&ts->serial, vk->serial, __ATOMIC_RELEASE);
  pthread_mutex_unlock (&states_lock);
  if (err && keymem_lock_refused ())
    /* Key memory is locked and the lock limit is reached: a key schedule
     * in swappable memory is refused, loudly.
     */
    nbdkit_error ("no locked memory left for this thread's AES-XTS key "
                  "schedule (%zu KiB of keys locked, the memory lock limit "
                  "reached): request refused; raise the limit (ulimit -l) "
                  "or serve fewer connections or --threads",
                  keymem_mapped_bytes () / 1024);
  else if (err)
    nbdkit_error ("cannot open the AES-XTS cipher: %s", gcry_strerror (err));
  if (err) {
    errno = ENOMEM;
    return NULL;
  }
  return ts;
}

/* A bounce buffer of at least len bytes: the top of the free stack (the
 * one most likely in the cache), grown if it is too small, or a new one.
 * Buffers are 4 KiB aligned and kept until unload.
 */
static struct bounce *
bounce_get (size_t len)
{
  struct bounce *b;
  void *p;

  pthread_mutex_lock (&bounce_lock);
  if ((b = bounce_free) != NULL)
    bounce_free = b->next;
  pthread_mutex_unlock (&bounce_lock);
  if (b == NULL && (b = calloc (1, sizeof *b)) == NULL) {
    nbdkit_error ("calloc: %m");
    return NULL;
  }
  if (b->len >= len)
    return b;
  if (posix_memalign (&p, 4096, len) != 0) {
    nbdkit_error ("cannot allocate a %zu-byte bounce buffer: %m", len);
    free (b->buf);
    free (b);
    return NULL;
  }
  free (b->buf);
  b->buf = p;
  b->len = len;
  return b;
}

static void
bounce_put (struct bounce *b)
{
  pthread_mutex_lock (&bounce_lock);
  b->next = bounce_free;
  bounce_free = b;
  pthread_mutex_unlock (&bounce_lock);
}

static void
bounce_free_all (void)
{
  struct bounce *b;

  while ((b = bounce_free) != NULL) {
    bounce_free = b->next;
    free (b->buf);
    free (b);
  }
}

/* ---- Cipher work, on this thread or shared with the pool --------------- */

struct crypt_task {
  const struct volume_key *vk;
  bool encrypt;
  unsigned char *out;
  const unsigned char *in;
  uint64_t offset;              /* disk offset of out[0] / in[0] */
};

static int
crypt_chunk (void *arg, size_t start, size_t len)
{
  const struct crypt_task *t = arg;
  struct thread_state *ts = thread_state (t->vk);
  gcry_error_t err;

  if (ts == NULL)
    return -1;
  err = (t->encrypt ? xts_encrypt : xts_decrypt)
    (ts->hd, &t->vk->fmt, t->out + start, t->in + start, len,
     t->offset + start);
  if (err) {
    nbdkit_error ("AES-XTS %s failed at offset %" PRIu64 ": %s",
                  t->encrypt ? "encryption" : "decryption",
                  t->offset + start, gcry_strerror (err));
    return -1;
  }
  return 0;
}

/* Requests whose cipher work is running now (crypt_range). */
static unsigned crypt_busy;

/* Share a request's cipher work of LEN bytes with the pool, BUSY
 * requests' work (this one's included) running?  In auto mode only when
 * a CPU is left idle: with as many requests encrypting as there are
 * CPUs (crypt-threads), handing chunks to the pool gains nothing and
 * costs the hand-over and the cache misses of another CPU.
 */
static bool
use_pool (size_t len, unsigned busy)
{
  if (pool_threads () == 0 || len < 2 * POOL_MIN_CHUNK)
    return false;
  if (mode == MODE_POOL)
    return true;
  return mode == MODE_AUTO && len >= pool_threshold && busy < crypt_threads;
}

/* Sector-aligned chunks, one per thread that can take part. */
static size_t
pool_chunk_size (const struct xts_format *f, size_t len)
{
  size_t parts = pool_threads () + 1;
  size_t chunk = (len + parts - 1) / parts;

  chunk = (chunk + f->sector_size - 1) / f->sector_size * f->sector_size;
  return chunk < POOL_MIN_CHUNK ? POOL_MIN_CHUNK : chunk;
}

/* Encrypt or decrypt len bytes at disk offset from in to out (which may be
 * the same buffer); -1 with *err set on failure.
 */
static int
crypt_range (const struct volume_key *vk, bool encrypt, void *out,
             const void *in, size_t len, uint64_t offset, int *err)
{
  struct crypt_task t = { .vk = vk, .encrypt = encrypt, .out = out,
                          .in = in, .offset = offset };
  unsigned busy = __atomic_add_fetch (&crypt_busy, 1, __ATOMIC_RELAXED);
  int r;

  if (use_pool (len, busy))
    r = pool_run (len, pool_chunk_size (&vk->fmt, len), crypt_chunk, &t);
  else
    r = crypt_chunk (&t, 0, len);
  __atomic_sub_fetch (&crypt_busy, 1, __ATOMIC_RELAXED);
  if (r == -1)
    *err = EIO;
  return r;
}

/* ---- Keys per export (crypt-key-dir, crypt-header-dir) ---------------- */

/* Is each export's key its own (crypt-key-dir, crypt-header-dir)? */
static bool
keys_per_export (void)
{
  return key_dir || header_dir;
}

static pthread_mutex_t keys_lock = PTHREAD_MUTEX_INITIALIZER;
static struct volume_key *export_keys;  /* in use, under keys_lock */

static void
free_key (struct volume_key *vk)
{
  wipe_secret (vk->key, vk->key_len);
  pthread_mutex_destroy (&vk->lock);
  free (vk->name);
  free (vk);
}

/* Read VK's key: KEY_DIR/PREFIX NAME, or the key slot of
 * HEADER_DIR/PREFIX NAME.
 */
static int
load_export_key (struct volume_key *vk)
{
  char what[128], *file = NULL;
  const char *dir = key_dir ? key_dir : header_dir;
  int r;

  if (asprintf (&file, "%s/%s%s", dir, file_prefix, vk->name) == -1) {
    nbdkit_error ("asprintf: %m");
    return -1;
  }
  vk->fmt = fmt;
  if (key_dir) {
    snprintf (what, sizeof what, "export \"%.64s\": crypt-key-dir key",
              vk->name);
    r = read_key_file (what, file, vk);
  }
  else {
    snprintf (what, sizeof what, "export \"%.64s\": ", vk->name);
    r = open_header_key (what, file, slot_secret, slot_secret_len, vk);
  }
  if (r == 0 && (check_key (vk) == -1 || make_key_check (vk) == -1))
    r = -1;
  if (r == 0)
    nbdkit_debug ("export \"%.64s\": key from %s: AES-%zu-XTS, "
                  "key-check=%s", vk->name, file, vk->key_len * 4,
                  vk->key_check);
  else {
    /* A key read but not usable must not be there for the connections
     * waiting for it: each tries again, and is refused on its own.
     */
    wipe_secret (vk->key, vk->key_len);
    vk->key = NULL;
    vk->key_len = 0;
  }
  free (file);
  return r;
}

/* One user fewer; the last one wipes the key. */
static void
put_export_key (struct volume_key *vk)
{
  struct volume_key **p;
  bool last;

  if (vk == &the_key)
    return;
  pthread_mutex_lock (&keys_lock);
  last = --vk->users == 0;
  if (last) {
    for (p = &export_keys; *p != vk; p = &(*p)->next)
      ;
    *p = vk->next;
  }
  pthread_mutex_unlock (&keys_lock);
  if (last) {
    forget_key_schedules (vk->serial);
    free_key (vk);
  }
}

/* The key for a connection to export NAME, with one more user.  A name
 * that is not a file name in the directory (empty, with a slash, a dot
 * file) has no key.  The key is read by its first user, under its own
 * lock: opening a LUKS key slot takes its KDF's time (about a second
 * with cryptsetup's defaults), and delays only connections to that
 * export.
 */
static struct volume_key *
get_export_key (const char *name)
{
  struct volume_key *vk;

  if (name[0] == '\0' || name[0] == '.' || strchr (name, '/')) {
    nbdkit_error ("export \"%.64s\": no key for it in %s=%s (keys are "
                  "files named after their export)", name,
                  key_dir ? "crypt-key-dir" : "crypt-header-dir",
                  key_dir ? key_dir : header_dir);
    return NULL;
  }
  pthread_mutex_lock (&keys_lock);
  for (vk = export_keys; vk; vk = vk->next)
    if (strcmp (vk->name, name) == 0)
      break;
  if (vk == NULL && (vk = calloc (1, sizeof *vk)) != NULL) {
    if ((vk->name = strdup (name)) == NULL) {
      free (vk);
      vk = NULL;
    }
    else {
      pthread_mutex_init (&vk->lock, NULL);
      vk->next = export_keys;
      export_keys = vk;
    }
  }
  if (vk)
    vk->users++;
  pthread_mutex_unlock (&keys_lock);
  if (vk == NULL) {
    nbdkit_error ("export \"%.64s\": out of memory", name);
    return NULL;
  }
  pthread_mutex_lock (&vk->lock);
  if (vk->key == NULL && load_export_key (vk) == -1) {
    pthread_mutex_unlock (&vk->lock);
    put_export_key (vk);
    return NULL;
  }
  pthread_mutex_unlock (&vk->lock);
  return vk;
}

/* A connection's handle is the key it uses. */
static void *
cryptinline_open (nbdkit_next_open *next, nbdkit_context *nxdata,
                  int readonly, const char *exportname, int is_tls)
{
  struct volume_key *vk = keys_per_export () ? get_export_key (exportname)
    : &the_key;

  /* No key, no drive: the layer below is not opened. */
  if (vk == NULL)
    return NULL;
  if (next (nxdata, readonly, exportname) == -1) {
    put_export_key (vk);
    return NULL;
  }
  return vk;
}

static void
cryptinline_close (void *handle)
{
  put_export_key (handle);
}

/* ---- Size and alignment --------------------------------------------- */

static int64_t
cryptinline_get_size (nbdkit_next *next, void *handle)
{
  int64_t size = next->get_size (next);

  if (size == -1)
    return -1;
  /* Only whole crypt sectors are served. */
  return size - size % ((struct volume_key *) handle)->fmt.sector_size;
}

/* The description from below, with the key check value added (a
 * plain disk below gets one of its own).
 */
static const char *
cryptinline_export_description (nbdkit_next *next, void *handle)
{
  const char *below = next->export_description (next);
  const char *key_check = ((struct volume_key *) handle)->key_check;

  if (below == NULL || below[0] == '\0')
    return nbdkit_printf_intern ("key-check=%s", key_check);
  return nbdkit_printf_intern ("%s key-check=%s", below, key_check);
}

static int
cryptinline_block_size (nbdkit_next *next, void *handle,
                        uint32_t *minimum, uint32_t *preferred,
                        uint32_t *maximum)
{
  if (next->block_size (next, minimum, preferred, maximum) == -1)
    return -1;
  const uint32_t ss = ((struct volume_key *) handle)->fmt.sector_size;

  if (*minimum < ss)
    *minimum = ss;
  if (*preferred < *minimum)
    *preferred = *minimum;
  if (*maximum == 0)
    *maximum = 0xffffffff;
  else if (*maximum != 0xffffffff)
    *maximum -= *maximum % *minimum;
  if (*maximum < *preferred)
    *maximum = *preferred;
  return 0;
}

static bool
aligned (const struct volume_key *vk, const char *what, uint32_t count,
         uint64_t offset, int *err)
{
  const uint32_t ss = vk->fmt.sector_size;

  if (count % ss == 0 && offset % ss == 0)
    return true;
  nbdkit_error ("misaligned %s rejected: offset %" PRIu64 " length %" PRIu32
                " must both be multiples of the crypt sector size %" PRIu32,
                what, offset, count, ss);
  *err = EINVAL;
  return false;
}

/* ---- Data path -------------------------------------------------------- */

/* Decrypt the data sectors of a read buffer, and zero the sectors that lie
 * wholly inside extents the layer below flags as reading as zero.
 */
struct read_fixup {
  const struct volume_key *vk;
  unsigned char *buf;
  uint64_t offset, end;         /* disk range of buf */
  uint64_t done;                /* everything before this is final */
  int *err;
};

static int
fixup_zero_run (struct read_fixup *f, uint64_t from, uint64_t to)
{
  uint64_t ss = f->vk->fmt.sector_size;
  uint64_t a = (from + ss - 1) / ss * ss;
  uint64_t b = to / ss * ss;

  if (a < f->offset) a = f->offset;
  if (b > f->end) b = f->end;
  if (a >= b)
    return 0;
  if (a > f->done &&
      crypt_range (f->vk, false, f->buf + (f->done - f->offset),
                   f->buf + (f->done - f->offset), a - f->done, f->done,
                   f->err) == -1)
    return -1;
  memset (f->buf + (a - f->offset), 0, b - a);
  f->done = b;
  return 0;
}

static int
decrypt_read (const struct volume_key *vk, void *buf, uint32_t count,
              uint64_t offset, const struct nbdkit_extents *extents,
              int *err)
{
  struct read_fixup f = { .vk = vk, .buf = buf, .offset = offset,
                          .end = offset + count, .done = offset, .err = err };
  uint64_t run_start = 0, run_end = 0;
  bool in_run = false;
  size_t i, n = extents ? nbdkit_extents_count (extents) : 0;

  for (i = 0; i < n; ++i) {
    struct nbdkit_extent e = nbdkit_get_extent (extents, i);
    if (e.type & NBDKIT_EXTENT_ZERO) {
      if (in_run && e.offset == run_end)
        run_end += e.length;
      else {
        if (in_run && fixup_zero_run (&f, run_start, run_end) == -1)
          return -1;
        run_start = e.offset;
        run_end = e.offset + e.length;
        in_run = true;
      }
    }
    else if (in_run) {
      if (fixup_zero_run (&f, run_start, run_end) == -1)
        return -1;
      in_run = false;
    }
  }
  if (in_run && fixup_zero_run (&f, run_start, run_end) == -1)
    return -1;
  if (f.done < f.end)
    return crypt_range (vk, false, f.buf + (f.done - offset),
                        f.buf + (f.done - offset), f.end - f.done, f.done,
                        err);
  return 0;
}

/* True if the sector's ciphertext is all zeros.  Real ciphertext never
 * is (odds 2^-4096 and less); unwritten space below usually is.
 */
static bool
zero_ciphertext (const unsigned char *sector, uint32_t ss)
{
  return sector[0] == 0 && memcmp (sector, sector + 1, ss - 1) == 0;
}

static bool
any_zero_ciphertext (const unsigned char *buf, uint32_t count, uint32_t ss)
{
  uint32_t i;

  for (i = 0; i < count; i += ss)
    if (zero_ciphertext (buf + i, ss))
      return true;
  return false;
}

/* True if some all-zero sector of buf is not wholly inside a run of
 * extents flagged zero: the layer below says it holds data.
 */
static bool
zeros_not_explained (const unsigned char *buf, uint32_t count, uint32_t ss,
                     uint64_t offset, const struct nbdkit_extents *extents)
{
  size_t n = nbdkit_extents_count (extents), e = 0;
  uint64_t run_start = 0, run_end = 0;   /* current run of zero extents */
  uint32_t i;

  for (i = 0; i < count; i += ss) {
    uint64_t s = offset + i, t = s + ss;
    if (!zero_ciphertext (buf + i, ss))
      continue;
    /* Extend the zero run past s, walking extents in order. */
    while (run_end < t && e < n) {
      struct nbdkit_extent x = nbdkit_get_extent (extents, e++);
      if (!(x.type & NBDKIT_EXTENT_ZERO))
        run_start = run_end = x.offset + x.length;
      else if (x.offset == run_end && run_end > run_start)
        run_end += x.length;
      else {
        run_start = x.offset;
        run_end = x.offset + x.length;
      }
    }
    if (!(run_start <= s && t <= run_end))
      return true;
  }
  return false;
}

static struct nbdkit_extents *
get_extents (nbdkit_next *next, uint32_t count, uint64_t offset, int *err)
{
  struct nbdkit_extents *extents = nbdkit_extents_new (offset, offset + count);

  if (extents == NULL) {
    *err = errno;
    return NULL;
  }
  if (next->extents (next, count, offset, 0, extents, err) == -1) {
    nbdkit_extents_free (extents);
    return NULL;
  }
  return extents;
}

/* ---- Block status ----------------------------------------------------- */

/* Zero extents below are reported as zero only over whole crypt sectors:
 * a sector partly zero below decrypts to noise, so it is data here.  A run
 * of adjacent zero extents (hole+zero next to zero) counts as one, as in
 * decrypt_read.  The run [from, to) of extents first..last-1 of below.
 */
static int
add_zero_run (uint64_t ss, const struct nbdkit_extents *below, size_t first,
              size_t last, uint64_t from, uint64_t to,
              struct nbdkit_extents *extents)
{
  uint64_t a = (from + ss - 1) / ss * ss, b = to / ss * ss;
  size_t i;

  if (a >= b)
    return nbdkit_add_extent (extents, from, to - from, 0);
  if (from < a && nbdkit_add_extent (extents, from, a - from, 0) == -1)
    return -1;
  for (i = first; i < last; ++i) {
    struct nbdkit_extent e = nbdkit_get_extent (below, i);
    uint64_t s = e.offset < a ? a : e.offset;
    uint64_t t = e.offset + e.length > b ? b : e.offset + e.length;
    if (s < t && nbdkit_add_extent (extents, s, t - s, e.type) == -1)
      return -1;
  }
  if (b < to)
    return nbdkit_add_extent (extents, b, to - b, 0);
  return 0;
}

static int
cryptinline_extents (nbdkit_next *next, void *handle,
                     uint32_t count, uint64_t offset, uint32_t flags,
                     struct nbdkit_extents *extents, int *err)
{
  uint64_t ss = ((struct volume_key *) handle)->fmt.sector_size;
  uint64_t a = offset / ss * ss;
  uint64_t b = (offset + count + ss - 1) / ss * ss;
  struct nbdkit_extents *below;
  size_t i, n, run_first = 0;
  uint64_t run_start = 0, run_end = 0;
  bool in_run = false;
  int r = 0;

  /* Ask below for whole crypt sectors, and for all of them (not only the
   * first extent): the rounding needs each sector's every byte.
   */
  if (b - a > UINT32_MAX / ss * ss)
    b = a + UINT32_MAX / ss * ss;
  if ((below = get_extents (next, b - a, a, err)) == NULL)
    return -1;
  n = nbdkit_extents_count (below);
  for (i = 0; i < n && r == 0; ++i) {
    struct nbdkit_extent e = nbdkit_get_extent (below, i);
    if (e.type & NBDKIT_EXTENT_ZERO) {
      if (!in_run || e.offset != run_end) {
        if (in_run)
          r = add_zero_run (ss, below, run_first, i, run_start, run_end,
                            extents);
        run_first = i;
        run_start = e.offset;
        in_run = true;
      }
      run_end = e.offset + e.length;
      continue;
    }
    if (in_run) {
      r = add_zero_run (ss, below, run_first, i, run_start, run_end, extents);
      in_run = false;
    }
    if (r == 0)
      r = nbdkit_add_extent (extents, e.offset, e.length, e.type);
  }
  if (r == 0 && in_run)
    r = add_zero_run (ss, below, run_first, n, run_start, run_end, extents);
  nbdkit_extents_free (below);
  /* nbdkit_add_extent failed (out of memory): it logged why. */
  if (r == -1)
    *err = errno ? errno : ENOMEM;
  return r;
}

static int
cryptinline_pread (nbdkit_next *next, void *handle,
                   void *buf, uint32_t count, uint64_t offset,
                   uint32_t flags, int *err)
{
  const struct volume_key *vk = handle;
  const uint32_t ss = vk->fmt.sector_size;
  struct nbdkit_extents *extents;
  int r;

  if (!aligned (vk, "read", count, offset, err))
    return -1;
  /* This thread's cipher handle first: without one, fail with ENOMEM
   * before any I/O.
   */
  if (thread_state (vk) == NULL) {
    *err = ENOMEM;
    return -1;
  }
  if (next->pread (next, buf, count, offset, flags, err) == -1)
    return -1;
  /* Only a sector whose ciphertext is all zeros can be unwritten space;
   * only then is the layer below asked, so most reads cost one call.
   */
  if (!any_zero_ciphertext (buf, count, ss) || next->can_extents (next) != 1)
    return decrypt_read (vk, buf, count, offset, NULL, err);

  if ((extents = get_extents (next, count, offset, err)) == NULL)
    return -1;
  if (zeros_not_explained (buf, count, ss, offset, extents)) {
    /* Zeros where the layer below now reports data: a write raced with
     * this read (or the disk really holds zeros there).  Ask first and
     * read after, so that a sector reported unwritten reads as zeros and
     * any other as what is stored: old or new data, never decrypted
     * zeros of a hole.
     */
    nbdkit_extents_free (extents);
    if ((extents = get_extents (next, count, offset, err)) == NULL)
      return -1;
    if (next->pread (next, buf, count, offset, flags, err) == -1) {
      nbdkit_extents_free (extents);
      return -1;
    }
  }
  r = decrypt_read (vk, buf, count, offset, extents, err);
  nbdkit_extents_free (extents);
  return r;
}

static int
cryptinline_pwrite (nbdkit_next *next, void *handle,
                    const void *buf, uint32_t count, uint64_t offset,
                    uint32_t flags, int *err)
{
  const struct volume_key *vk = handle;
  struct bounce *b;
  int r;

  if (!aligned (vk, "write", count, offset, err))
    return -1;
  if (thread_state (vk) == NULL || (b = bounce_get (count)) == NULL) {
    *err = ENOMEM;
    return -1;
  }
  /* One write below, same offset, length and flags, after all the
   * encryption: the order the client (and the zone gate) sees is kept.
   */
  r = crypt_range (vk, true, b->buf, buf, count, offset, err);
  if (r == 0)
    r = next->pwrite (next, b->buf, count, offset, flags, err);
  bounce_put (b);
  return r;
}

static int
cryptinline_can_zero (nbdkit_next *next, void *handle)
{
  /* Zeroing is always done here, as writes of encrypted zeros. */
  return NBDKIT_ZERO_NATIVE;
}

static int
cryptinline_can_fast_zero (nbdkit_next *next, void *handle)
{
  /* Advertised so clients may ask; the answer is always "not fast". */
  return 1;
}

static int
cryptinline_zero (nbdkit_next *next, void *handle,
                  uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  const struct volume_key *vk = handle;
  struct bounce *b;
  uint32_t n;
  bool fua_each;
  int r = 0;

  if (flags & NBDKIT_FLAG_FAST_ZERO) {
    *err = ENOTSUP;
    return -1;
  }
  if (!aligned (vk, "zero", count, offset, err))
    return -1;
  n = count < ZERO_CHUNK ? count : ZERO_CHUNK;
  if (thread_state (vk) == NULL || (b = bounce_get (n)) == NULL) {
    *err = ENOMEM;
    return -1;
  }
  /* Unwritten space would not read back as zeros through the cipher, so
   * the zeros are encrypted and written, chunk after chunk in ascending
   * order, each after the previous one completed.  FUA asks for the whole
   * range to be durable when the client hears back: one flush after the
   * last chunk gives that, where FUA on each chunk would cost a flush
   * per chunk on a layer that emulates FUA (the zbd plugin).  Only a
   * layer that cannot flush gets FUA on every chunk.
   */
  fua_each = (flags & NBDKIT_FLAG_FUA) && next->can_flush (next) != 1;
  while (count > 0 && r == 0) {
    n = count < ZERO_CHUNK ? count : ZERO_CHUNK;
    r = crypt_range (vk, true, b->buf, zeros, n, offset, err);
    if (r == 0)
      r = next->pwrite (next, b->buf, n, offset,
                        fua_each ? NBDKIT_FLAG_FUA : 0, err);
    offset += n;
    count -= n;
  }
  bounce_put (b);
  if (r == 0 && (flags & NBDKIT_FLAG_FUA) && !fua_each)
    r = next->flush (next, 0, err);
  return r;
}

static int
cryptinline_trim (nbdkit_next *next, void *handle,
                  uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  if (!aligned (handle, "trim", count, offset, err))
    return -1;
  return next->trim (next, count, offset, flags, err);
}

static struct nbdkit_filter filter = {
  .name              = "cryptinline",
  .longname          = "nbdkit AES-XTS (dm-crypt aes-xts-plain64) filter",
  .load              = cryptinline_load,
  .unload            = cryptinline_unload,
  .config            = cryptinline_config,
  .config_complete   = cryptinline_config_complete,
  .config_help       = cryptinline_config_help,
  .after_fork        = cryptinline_after_fork,
  .open              = cryptinline_open,
  .close             = cryptinline_close,
  .get_size          = cryptinline_get_size,
  .block_size        = cryptinline_block_size,
  .export_description = cryptinline_export_description,
  .can_zero          = cryptinline_can_zero,
  .can_fast_zero     = cryptinline_can_fast_zero,
  .extents           = cryptinline_extents,
  .pread             = cryptinline_pread,
  .pwrite            = cryptinline_pwrite,
  .zero              = cryptinline_zero,
  .trim              = cryptinline_trim,
};

NBDKIT_REGISTER_FILTER (filter)

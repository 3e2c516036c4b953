/* Opening a LUKS1 or LUKS2 header made by cryptsetup, read-only.
 *
 * How it works.  The header file (cryptsetup --header) holds key slots;
 * each slot keeps the volume key split by the anti-forensic splitter
 * (AF: stripes x key bytes, merged back by XOR and hash diffusion) and
 * encrypted with a key derived from a passphrase.  For each usable slot,
 * once: derive the slot key with the slot's KDF (PBKDF2, or Argon2i/id
 * through libgcrypt's KDF API), read and decrypt the slot's key material
 * (aes-xts-plain64, 512-byte sectors, IV from 0 at the start of the slot
 * area), AF-merge it into a candidate volume key, and check the candidate
 * against the header's digest (PBKDF2 of the key).  The first slot that
 * matches gives the volume key; if none does, the passphrase is wrong.
 * Slots are tried as cryptsetup tries them: priority "prefer" first,
 * then in the header's order, "ignore" never; a wrong passphrase moves
 * on, a slot that cannot be used (an unsupported or invalid parameter)
 * ends the search, where cryptsetup stops with an error too or might
 * open that slot: no later slot is taken in its place.
 *
 * LUKS2 keeps two copies of a 4096-byte binary header, each followed by
 * a JSON area, both covered by the copy's checksum.  A copy counts if
 * its magic, version, own offset, size, checksum and JSON are right, the
 * JSON following the rules cryptsetup checks (luks2-meta.c);
 * of two good copies the one with the higher sequence id wins (the
 * primary on a tie), else the one good copy: cryptsetup's choice.
 * cryptsetup would also rewrite the damaged copy; this code never writes.
 *
 * Only what the filter can serve bit-compatibly with dm-crypt is opened:
 * one data segment of type crypt, aes-xts-plain64, starting at offset 0
 * of the data device (a detached header) and covering the whole device.
 * Everything else (another cipher, integrity, a reencryption in progress,
 * several segments, other offsets, slots reachable only through a token)
 * is refused with a one-line reason.  A few headers cryptsetup opens are
 * refused on purpose (enum luks_refusal's LUKS_STRICTER): a digest cut
 * short or over a short salt, which lets any passphrase in, and Argon2
 * costs libgcrypt cannot compute.  The segment's iv_tweak is not used:
 * cryptsetup activates a single segment with IV offset 0.
 *
 * Secrets (slot keys, decrypted key material, the volume key) live only
 * in libgcrypt secure memory and are wiped before they are freed.  The
 * key material (stripes x key bytes, 250 KiB for a 512-bit key) is read,
 * decrypted and merged 4 KiB at a time, so the secure memory needed
 * stays within libgcrypt's first pool.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <blkid.h>
#include <gcrypt.h>
#include <json.h>

#include "xts.h"
#include "luks.h"
#include "luks2-meta.h"

#define LUKS_MAGIC_LEN 6
static const unsigned char magic_primary[LUKS_MAGIC_LEN] =
  { 'L', 'U', 'K', 'S', 0xba, 0xbe };
static const unsigned char magic_secondary[LUKS_MAGIC_LEN] =
  { 'S', 'K', 'U', 'L', 0xba, 0xbe };

/* LUKS2 binary header layout (big-endian numbers). */
#define L2_BIN_LEN        4096
#define L2_OFF_VERSION    6
#define L2_OFF_HDR_SIZE   8
#define L2_OFF_SEQID      16
#define L2_OFF_CSUM_ALG   72
#define L2_CSUM_ALG_LEN   32
#define L2_OFF_HDR_OFFSET 256
#define L2_OFF_CSUM       448
#define L2_CSUM_LEN       64
#define L2_HDR_MIN        0x4000        /* 16 KiB */
#define L2_HDR_MAX        0x400000      /* 4 MiB */

/* LUKS1 header layout. */
#define L1_HDR_LEN        592
#define L1_OFF_CIPHER     8
#define L1_OFF_MODE       40
#define L1_OFF_HASH       72
#define L1_NAME_LEN       32
#define L1_OFF_PAYLOAD    104
#define L1_OFF_KEYBYTES   108
#define L1_OFF_MKDIGEST   112
#define L1_DIGEST_LEN     20
#define L1_OFF_MKSALT     132
#define L1_SALT_LEN       32
#define L1_OFF_MKITER     164
#define L1_OFF_SLOTS      208
#define L1_SLOT_LEN       48
#define L1_SLOTS          8
#define L1_SLOT_ACTIVE    0x00AC71F3
#define L1_STRIPES        4000          /* cryptsetup's LUKS_STRIPES */

#define SECTOR 512
#define LUKS_SALT_BYTES 32      /* every salt cryptsetup writes and reads */
#define MAX_SALT 256
#define MAX_DIGEST 64
#define MAX_SLOTS 32            /* LUKS2 keyslot ids are 0..31 */

struct ctx {
  const char *path;
  int fd;
  char *why;
  enum luks_refusal refusal;    /* of the reason in why */
  const void *pass;
  size_t pass_len;
};

static int fail (struct ctx *c, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));
static int unsupported (struct ctx *c, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));
static int stricter (struct ctx *c, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

/* Names quoted from a header (a checksum algorithm, a cipher...) may hold
 * any bytes; in a log line they become '?' unless printable ASCII, so
 * the reason stays one readable line.
 */
static void
printable (char *s)
{
  for (; *s; ++s)
    if ((unsigned char) *s < 0x20 || (unsigned char) *s >= 0x7f)
      *s = '?';
}

/* Record the one-line reason, prefixed with the parameter and file. */
static int
vrefuse (struct ctx *c, enum luks_refusal why, const char *fmt, va_list ap)
{
  int n = snprintf (c->why, LUKS_WHY_LEN, "crypt-header %s: ", c->path);

  if (n < 0 || n >= LUKS_WHY_LEN)
    n = 0;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
  vsnprintf (c->why + n, LUKS_WHY_LEN - n, fmt, ap);
#pragma GCC diagnostic pop
  printable (c->why + n);
  c->refusal = why;
  return -1;
}

/* A header cryptsetup refuses too (or a file that cannot be read). */
static int
fail (struct ctx *c, const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vrefuse (c, LUKS_DAMAGED, fmt, ap);
  va_end (ap);
  return -1;
}

/* A valid header the filter cannot serve as dm-crypt would. */
static int
unsupported (struct ctx *c, const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vrefuse (c, LUKS_UNSUPPORTED, fmt, ap);
  va_end (ap);
  return -1;
}

/* A header cryptsetup would open, refused on purpose (see the man
 * page's list).
 */
static int
stricter (struct ctx *c, const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vrefuse (c, LUKS_STRICTER, fmt, ap);
  va_end (ap);
  return -1;
}

/* ---- Small helpers ---------------------------------------------------- */

static uint16_t
be16 (const unsigned char *p)
{
  return (uint16_t) (p[0] << 8 | p[1]);
}

static uint32_t
be32 (const unsigned char *p)
{
  return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 |
    (uint32_t) p[2] << 8 | p[3];
}

static uint64_t
be64 (const unsigned char *p)
{
  return (uint64_t) be32 (p) << 32 | be32 (p + 4);
}

/* Read exactly len bytes at off; false on a short read or an error. */
static bool
read_at (struct ctx *c, void *buf, size_t len, uint64_t off)
{
  size_t done = 0;

  while (done < len) {
    ssize_t r = pread (c->fd, (char *) buf + done, len - done, off + done);
    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0) {
      if (r == 0)
        errno = 0;
      return false;
    }
    done += r;
  }
  return true;
}

static void *
secure_alloc (size_t len)
{
  return gcry_malloc_secure (len ? len : 1);
}

static void
secure_free (void *p, size_t len)
{
  if (p) {
    explicit_bzero (p, len);
    gcry_free (p);
  }
}

/* Constant-time comparison: the time does not tell how many bytes of a
 * candidate key's digest matched.
 */
static bool
same_bytes (const unsigned char *a, const unsigned char *b, size_t len)
{
  unsigned char d = 0;
  size_t i;

  for (i = 0; i < len; ++i)
    d |= a[i] ^ b[i];
  return d == 0;
}

/* The hashes LUKS headers use for PBKDF2 and the AF splitter. */
static int
hash_algo (const char *name)
{
  if (strcmp (name, "sha1") == 0) return GCRY_MD_SHA1;
  if (strcmp (name, "sha256") == 0) return GCRY_MD_SHA256;
  if (strcmp (name, "sha512") == 0) return GCRY_MD_SHA512;
  return 0;
}

static int
base64_value (unsigned char ch)
{
  if (ch >= 'A' && ch <= 'Z') return ch - 'A';
  if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
  if (ch >= '0' && ch <= '9') return ch - '0' + 52;
  if (ch == '+') return 62;
  if (ch == '/') return 63;
  return -1;
}

/* Standard base64 with '=' padding, as LUKS2 JSON stores salts and
 * digests.  Returns the decoded length, or -1 if malformed or longer
 * than out_max.
 */
static ssize_t
base64_decode (const char *in, unsigned char *out, size_t out_max)
{
  size_t len = strlen (in), i, n = 0;
  uint32_t acc = 0;
  int bits = 0, pad = 0;

  if (len % 4 != 0)
    return -1;
  for (i = 0; i < len; ++i) {
    int v;
    if (in[i] == '=') {
      if (i + 2 < len)            /* padding only in the last two places */
        return -1;
      pad++;
      continue;
    }
    if (pad || (v = base64_value (in[i])) < 0)
      return -1;
    acc = acc << 6 | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (n == out_max)
        return -1;
      out[n++] = acc >> bits;
    }
  }
  return n;
}

/* ---- Argon2 on threads -------------------------------------------------- */

/* libgcrypt computes Argon2 lanes in parallel if it is given a way to
 * run jobs; each batch of jobs (one per lane) runs on its own threads,
 * all joined before the next batch.  A job that cannot get a thread runs
 * on this one.
 */
#define KDF_MAX_JOBS 64

struct kdf_jobs {
  pthread_t threads[KDF_MAX_JOBS];
  size_t count;
};

struct kdf_job {
  gcry_kdf_job_fn_t fn;
  void *priv;
};

static void *
kdf_job_thread (void *arg)
{
  struct kdf_job job = *(struct kdf_job *) arg;

  free (arg);
  job.fn (job.priv);
  return NULL;
}

static int
kdf_dispatch (void *context, gcry_kdf_job_fn_t fn, void *priv)
{
  struct kdf_jobs *jobs = context;
  struct kdf_job *job;

  if (jobs->count < KDF_MAX_JOBS && (job = malloc (sizeof *job)) != NULL) {
    job->fn = fn;
    job->priv = priv;
    if (pthread_create (&jobs->threads[jobs->count], NULL,
                        kdf_job_thread, job) == 0) {
      jobs->count++;
      return 0;
    }
    free (job);
  }
  fn (priv);
  return 0;
}

static int
kdf_wait_all (void *context)
{
  struct kdf_jobs *jobs = context;

  while (jobs->count > 0)
    pthread_join (jobs->threads[--jobs->count], NULL);
  return 0;
}

/* ---- Key derivation --------------------------------------------------- */

enum kdf_type { KDF_PBKDF2, KDF_ARGON2I, KDF_ARGON2ID };

struct kdf {
  enum kdf_type type;
  int hash;                     /* PBKDF2 */
  unsigned long iterations;     /* PBKDF2 iterations, Argon2 time cost */
  unsigned long memory;         /* Argon2, KiB */
  unsigned long cpus;           /* Argon2 lanes */
  unsigned char salt[MAX_SALT];
  size_t salt_len;
};

static gcry_error_t
argon2_derive (const struct kdf *k, const void *pass, size_t pass_len,
               void *out, size_t out_len)
{
  unsigned long param[4] = { out_len, k->iterations, k->memory, k->cpus };
  struct kdf_jobs jobs = { .count = 0 };
  gcry_kdf_thread_ops_t ops = {
    .jobs_context = &jobs,
    .dispatch_job = kdf_dispatch,
    .wait_all_jobs = kdf_wait_all,
  };
  gcry_kdf_hd_t hd;
  gcry_error_t err;

  err = gcry_kdf_open (&hd, GCRY_KDF_ARGON2,
                       k->type == KDF_ARGON2I ? GCRY_KDF_ARGON2I
                                              : GCRY_KDF_ARGON2ID,
                       param, 4, pass, pass_len, k->salt, k->salt_len,
                       NULL, 0, NULL, 0);
  if (err)
    return err;
  err = gcry_kdf_compute (hd, k->cpus > 1 ? &ops : NULL);
  if (!err)
    err = gcry_kdf_final (hd, out_len, out);
  gcry_kdf_close (hd);
  return err;
}

static gcry_error_t
kdf_derive (const struct kdf *k, const void *pass, size_t pass_len,
            void *out, size_t out_len)
{
  /* libgcrypt wants a non-NULL passphrase even when it is empty. */
  if (pass_len == 0)
    pass = "";
  if (k->type == KDF_PBKDF2)
    return gcry_kdf_derive (pass, pass_len, GCRY_KDF_PBKDF2, k->hash,
                            k->salt, k->salt_len, k->iterations,
                            out_len, out);
  return argon2_derive (k, pass, pass_len, out, out_len);
}

/* ---- Anti-forensic merge ---------------------------------------------- */

/* Each hash-sized piece i of block becomes H(be32(i) || piece), cut to
 * the piece's length (LUKS's diffusion step).
 */
static gcry_error_t
af_diffuse (gcry_md_hd_t md, int algo, unsigned char *block, size_t len)
{
  size_t dlen = gcry_md_get_algo_dlen (algo), pos, n;
  uint32_t i;

  for (i = 0, pos = 0; pos < len; ++i, pos += n) {
    unsigned char index[4] = { i >> 24, i >> 16, i >> 8, i };
    n = len - pos < dlen ? len - pos : dlen;
    gcry_md_reset (md);
    gcry_md_write (md, index, sizeof index);
    gcry_md_write (md, block + pos, n);
    memcpy (block + pos, gcry_md_read (md, algo), n);
  }
  return 0;
}

/* ---- One key slot ---------------------------------------------------- */

/* What a key slot says, for LUKS1 and LUKS2 alike. */
struct slot {
  int id;
  int priority;                 /* LUKS2: 1 normal, 2 prefer */
  size_t order;                 /* position in the header */
  struct kdf kdf;
  size_t key_len;               /* volume key bytes */
  size_t area_key_len;          /* key of the slot's own encryption */
  uint64_t area_offset;         /* bytes from the start of the file */
  uint32_t stripes;
  int af_hash;
  enum luks_refusal unusable;   /* LUKS_OPENED if it can be tried */
  char why[192];                /* else why not */
};

/* The digest that recognises the right volume key. */
struct digest {
  int hash;
  unsigned long iterations;
  unsigned char salt[MAX_SALT];
  size_t salt_len;
  unsigned char value[MAX_DIGEST];
  size_t len;
};

static size_t
material_len (const struct slot *s)
{
  size_t n = s->key_len * s->stripes;
  return (n + SECTOR - 1) / SECTOR * SECTOR;
}

/* LUKS2 key slots are merged with cryptsetup's 4000 stripes whatever
 * the af object says (cryptsetup reads its stripes but does not use it).
 */
#define L2_STRIPES 4000

/* Key material is read, decrypted and merged a chunk at a time, so that
 * only a chunk of it is ever in (secure) memory.  A multiple of the
 * sector and of both key sizes, so stripes never straddle chunks.
 */
#define AREA_CHUNK 4096

/* key = the XOR of the decrypted stripes, with a diffusion after each
 * but the last (the AF merge).
 */
static int
merge_area (struct ctx *c, const struct slot *s, gcry_cipher_hd_t hd,
            unsigned char *chunk, unsigned char *key)
{
  static const struct xts_format area_fmt = { .sector_size = SECTOR };
  size_t mlen = material_len (s), pos, n, i, j;
  uint32_t stripe = 0;
  gcry_md_hd_t md;
  gcry_error_t err = gcry_md_open (&md, s->af_hash, GCRY_MD_FLAG_SECURE);
  int r = -1;

  if (err)
    return fail (c, "key slot %d: %s", s->id, gcry_strerror (err));
  memset (key, 0, s->key_len);
  for (pos = 0; pos < mlen; pos += n) {
    n = mlen - pos < AREA_CHUNK ? mlen - pos : AREA_CHUNK;
    if (!read_at (c, chunk, n, s->area_offset + pos)) {
      fail (c, "key slot %d: cannot read its key material (%zu bytes at "
            "offset %" PRIu64 "): %s", s->id, mlen, s->area_offset,
            errno ? strerror (errno) : "the file is too short");
      goto out;
    }
    /* The IV counts 512-byte sectors from the start of the area. */
    err = xts_decrypt (hd, &area_fmt, chunk, chunk, n, pos);
    if (err) {
      fail (c, "key slot %d: %s", s->id, gcry_strerror (err));
      goto out;
    }
    for (i = 0; i + s->key_len <= n && stripe < s->stripes;
         i += s->key_len, stripe++) {
      for (j = 0; j < s->key_len; ++j)
        key[j] ^= chunk[i + j];
      if (stripe + 1 < s->stripes)
        af_diffuse (md, s->af_hash, key, s->key_len);
    }
  }
  r = 0;
 out:
  gcry_md_close (md);
  return r;
}

/* Try one slot.  1: *key holds the volume key (secure memory); 0: the
 * passphrase does not open this slot; -1: an error, reason recorded.
 */
static int
try_slot (struct ctx *c, const struct slot *s, const struct digest *d,
          unsigned char **key_out)
{
  unsigned char *slot_key = secure_alloc (s->area_key_len);
  unsigned char *chunk = secure_alloc (AREA_CHUNK);
  unsigned char *key = secure_alloc (s->key_len);
  unsigned char check[MAX_DIGEST];
  gcry_cipher_hd_t hd = NULL;
  gcry_error_t err;
  int r = -1;

  if (!slot_key || !chunk || !key) {
    fail (c, "no secure memory to open key slot %d", s->id);
    goto out;
  }
  err = kdf_derive (&s->kdf, c->pass, c->pass_len, slot_key, s->area_key_len);
  if (err) {
    fail (c, "key slot %d: key derivation failed: %s", s->id,
          gcry_strerror (err));
    goto out;
  }
  err = xts_open (&hd, slot_key, s->area_key_len);
  if (err) {
    fail (c, "key slot %d: %s", s->id, gcry_strerror (err));
    goto out;
  }
  if (merge_area (c, s, hd, chunk, key) == -1)
    goto out;
  err = gcry_kdf_derive (key, s->key_len, GCRY_KDF_PBKDF2, d->hash,
                           d->salt, d->salt_len, d->iterations,
                           d->len, check);
  if (err) {
    fail (c, "key slot %d: %s", s->id, gcry_strerror (err));
    goto out;
  }
  if (same_bytes (check, d->value, d->len)) {
    *key_out = key;
    key = NULL;
    r = 1;
  }
  else
    r = 0;

 out:
  if (hd)
    gcry_cipher_close (hd);
  explicit_bzero (check, sizeof check);
  secure_free (slot_key, s->area_key_len);
  secure_free (chunk, AREA_CHUNK);
  secure_free (key, s->key_len);
  return r;
}

/* Try the slots in order, each once, as cryptsetup does: a wrong
 * passphrase moves on to the next slot, a slot that cannot be used ends
 * the search (cryptsetup stops there with an error too, or might open
 * it: either way no later slot may be taken in its place).
 */
static int
open_slots (struct ctx *c, struct slot *slots, size_t n,
            const struct digest *d, struct luks_volume *vol,
            const char *hint)
{
  size_t i;

  for (i = 0; i < n; ++i) {
    int r;
    if (slots[i].unusable != LUKS_OPENED) {
      fail (c, "key slot %d %s%s", slots[i].id, slots[i].why,
            n > 1 ? hint : "");
      c->refusal = slots[i].unusable;
      return -1;
    }
    r = try_slot (c, &slots[i], d, &vol->key);
    if (r == -1)
      return -1;
    if (r == 1) {
      vol->key_len = slots[i].key_len;
      vol->keyslot = slots[i].id;
      return 0;
    }
  }
  if (n == 0)
    return fail (c, "the header has no active key slot");
  fail (c, "no key slot opened with this passphrase");
  c->refusal = LUKS_WRONG_KEY;
  return -1;
}

/* Mark the slot unusable, with the reason; returns 0 so that parsers
 * can return it.
 */
static int
skip_slot (struct slot *s, enum luks_refusal why, const char *fmt, ...)
  __attribute__ ((format (printf, 3, 4)));

static int
skip_slot (struct slot *s, enum luks_refusal why, const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (s->why, sizeof s->why, fmt, ap);
  va_end (ap);
  s->unusable = why;
  return 0;
}

/* ---- LUKS1 -------------------------------------------------------------- */

static void
copy_name (char *dst, const unsigned char *src)
{
  memcpy (dst, src, L1_NAME_LEN);
  dst[L1_NAME_LEN] = '\0';
}

/* Bytes of key material of a key of key_bytes split into stripes,
 * whole sectors (cryptsetup's AF_split_sectors).
 */
static uint64_t
af_bytes (uint64_t key_bytes, uint64_t stripes)
{
  return (key_bytes * stripes + SECTOR - 1) / SECTOR * SECTOR;
}

/* cryptsetup's LUKS_check_keyslots, on all eight slots whether active or
 * not: 4000 stripes, key material after the header, no two slots'
 * material overlapping; and the file holds the last slot's material.
 * Its arithmetic is 32-bit, as cryptsetup's is.
 */
static int
check_luks1_slots (struct ctx *c, const unsigned char *h, uint32_t key_bytes)
{
  uint32_t secs = af_bytes (key_bytes, L1_STRIPES) / SECTOR;
  uint32_t off[L1_SLOTS];
  int order[L1_SLOTS], i, j;
  off_t size;

  for (i = 0; i < L1_SLOTS; ++i) {
    const unsigned char *k = h + L1_OFF_SLOTS + i * L1_SLOT_LEN;
    off[i] = be32 (k + 40);
    if (be32 (k + 44) != L1_STRIPES)
      return fail (c, "LUKS1 key slot %d has %" PRIu32 " stripes, not %d",
                   i, be32 (k + 44), L1_STRIPES);
    if ((uint32_t) (off[i] * SECTOR) < L1_HDR_LEN)
      return fail (c, "LUKS1 key slot %d's key material (sector %" PRIu32
                   ") is inside the header", i, off[i]);
    order[i] = i;
  }
  /* By offset, then by number (cryptsetup's LUKS_sort_keyslots). */
  for (i = 1; i < L1_SLOTS; ++i)
    for (j = i; j > 0 && off[order[j - 1]] > off[order[j]]; --j) {
      int t = order[j];
      order[j] = order[j - 1];
      order[j - 1] = t;
    }
  for (i = 1; i < L1_SLOTS; ++i)
    if (off[order[i]] < (uint32_t) (off[order[i - 1]] + secs))
      return fail (c, "LUKS1 key slots %d and %d overlap", order[i - 1],
                   order[i]);
  size = lseek (c->fd, 0, SEEK_END);
  if (size != -1 &&
      (uint64_t) size < ((uint64_t) off[order[L1_SLOTS - 1]] + secs) * SECTOR)
    return fail (c, "the LUKS1 header file is %" PRIu64 " bytes, too short "
                 "for its key slots (%" PRIu64 " bytes): truncated?",
                 (uint64_t) size,
                 ((uint64_t) off[order[L1_SLOTS - 1]] + secs) * SECTOR);
  return 0;
}

static int
open_luks1 (struct ctx *c, struct luks_volume *vol)
{
  unsigned char h[L1_HDR_LEN];
  char cipher[L1_NAME_LEN + 1], mode[L1_NAME_LEN + 1], hash[L1_NAME_LEN + 1];
  struct slot slots[L1_SLOTS];
  struct digest d = { .len = L1_DIGEST_LEN };
  uint32_t payload, key_bytes;
  size_t n = 0;
  int i;

  if (!read_at (c, h, sizeof h, 0))
    return fail (c, "the LUKS1 header is truncated");
  copy_name (cipher, h + L1_OFF_CIPHER);
  copy_name (mode, h + L1_OFF_MODE);
  copy_name (hash, h + L1_OFF_HASH);
  payload = be32 (h + L1_OFF_PAYLOAD);
  key_bytes = be32 (h + L1_OFF_KEYBYTES);

  /* What cryptsetup refuses first, then what this filter cannot serve. */
  if (gcry_md_map_name (hash) != 0 &&
      gcry_md_get_algo_dlen (gcry_md_map_name (hash)) < L1_DIGEST_LEN)
    return fail (c, "hash %s is too short for LUKS1", hash);
  if (key_bytes == 0)
    return fail (c, "the LUKS1 header has a key size of 0");
  if (check_luks1_slots (c, h, key_bytes) == -1)
    return -1;
  if (strcmp (cipher, "aes") != 0 || strcmp (mode, "xts-plain64") != 0)
    return unsupported (c, "cipher %s-%s is not supported: only "
                        "aes-xts-plain64", cipher, mode);
  if (key_bytes != XTS_KEY_BYTES_128 && key_bytes != XTS_KEY_BYTES_256)
    return unsupported (c, "a %" PRIu32 "-bit key is not supported: use 256 "
                        "or 512 (AES-128/256-XTS)", key_bytes * 8);
  if ((d.hash = hash_algo (hash)) == 0)
    return unsupported (c, "hash %s is not supported: use sha1, sha256 or "
                        "sha512", hash);
  if (payload != 0)
    return unsupported (c, "data offset of %" PRIu32 " sectors is not "
                        "supported: only 0, a detached header with the data "
                        "from the start of the device", payload);
  memcpy (d.value, h + L1_OFF_MKDIGEST, L1_DIGEST_LEN);
  memcpy (d.salt, h + L1_OFF_MKSALT, L1_SALT_LEN);
  d.salt_len = L1_SALT_LEN;
  d.iterations = be32 (h + L1_OFF_MKITER);
  if (d.iterations == 0)
    return fail (c, "the volume key digest has 0 iterations");

  for (i = 0; i < L1_SLOTS; ++i) {
    const unsigned char *k = h + L1_OFF_SLOTS + i * L1_SLOT_LEN;
    struct slot *s = &slots[n];
    if (be32 (k) != L1_SLOT_ACTIVE)
      continue;
    memset (s, 0, sizeof *s);
    s->id = i;
    s->priority = 1;
    s->kdf.type = KDF_PBKDF2;
    s->kdf.hash = d.hash;
    s->kdf.iterations = be32 (k + 4);
    memcpy (s->kdf.salt, k + 8, L1_SALT_LEN);
    s->kdf.salt_len = L1_SALT_LEN;
    s->area_offset = (uint64_t) be32 (k + 40) * SECTOR;
    s->stripes = L1_STRIPES;
    s->key_len = s->area_key_len = key_bytes;
    s->af_hash = d.hash;
    if (s->kdf.iterations == 0)
      skip_slot (s, LUKS_DAMAGED, "has 0 PBKDF2 iterations");
    n++;
  }
  vol->version = 1;
  vol->sector_size = SECTOR;
  vol->iv_offset = 0;
  return open_slots (c, slots, n, &d, vol, "");
}

/* ---- LUKS2: the binary headers ------------------------------------------ */

struct l2_copy {
  bool ok;                      /* checksum and JSON right */
  bool magic;                   /* a LUKS2 magic and version are there */
  bool sane;                    /* binary header right (size can be used) */
  const char *where;            /* "primary" or "secondary" */
  uint64_t offset, hdr_size, seqid;
  json_object *json;
  struct luks2_meta meta;       /* when ok */
  char why[160];                /* why not ok */
};

static void
copy_failed (struct l2_copy *cp, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

static void
copy_failed (struct l2_copy *cp, const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (cp->why, sizeof cp->why, fmt, ap);
  va_end (ap);
}

/* The checksum covers the binary header, its checksum field zeroed, and
 * the whole JSON area.
 */
static bool
checksum_ok (unsigned char *bin, const char *json_area, size_t json_len,
             char *alg_name, size_t alg_size)
{
  unsigned char stored[L2_CSUM_LEN];
  gcry_md_hd_t md;
  int algo;
  size_t dlen;
  bool ok;

  memcpy (alg_name, bin + L2_OFF_CSUM_ALG, alg_size - 1);
  alg_name[alg_size - 1] = '\0';
  algo = gcry_md_map_name (alg_name);
  dlen = algo ? gcry_md_get_algo_dlen (algo) : 0;
  if (dlen == 0 || dlen > L2_CSUM_LEN || gcry_md_open (&md, algo, 0) != 0)
    return false;
  memcpy (stored, bin + L2_OFF_CSUM, L2_CSUM_LEN);
  memset (bin + L2_OFF_CSUM, 0, L2_CSUM_LEN);
  gcry_md_write (md, bin, L2_BIN_LEN);
  gcry_md_write (md, json_area, json_len);
  ok = memcmp (gcry_md_read (md, algo), stored, dlen) == 0;
  gcry_md_close (md);
  memcpy (bin + L2_OFF_CSUM, stored, L2_CSUM_LEN);
  return ok;
}

/* The JSON text starts the area, and only NUL bytes follow it. */
static json_object *
parse_json_area (const char *area, size_t len, struct l2_copy *cp)
{
  struct json_tokener *tok;
  json_object *obj;
  size_t end, i;

  if (area[0] != '{') {
    copy_failed (cp, "the JSON area does not start with an object");
    return NULL;
  }
  tok = json_tokener_new ();
  if (tok == NULL) {
    copy_failed (cp, "out of memory");
    return NULL;
  }
  obj = json_tokener_parse_ex (tok, area, (int) len);
  if (obj == NULL) {
    copy_failed (cp, "the JSON area does not parse: %s",
                 json_tokener_error_desc (json_tokener_get_error (tok)));
    json_tokener_free (tok);
    return NULL;
  }
  end = json_tokener_get_parse_end (tok);
  json_tokener_free (tok);
  for (i = end; i < len && area[i] == '\0'; ++i)
    ;
  if (end >= len || i < len || !json_object_is_type (obj, json_type_object)) {
    copy_failed (cp, "the JSON area holds more than one NUL-terminated "
                 "object");
    json_object_put (obj);
    return NULL;
  }
  return obj;
}

/* The copy's JSON follows cryptsetup's rules; else it does not count,
 * as for cryptsetup.
 */
static bool
metadata_ok (struct l2_copy *cp, size_t area_len)
{
  char why[128];

  if (luks2_meta_check (cp->json, area_len, &cp->meta, why, sizeof why))
    return true;
  copy_failed (cp, "its metadata is invalid: %s", why);
  json_object_put (cp->json);
  cp->json = NULL;
  return false;
}

static void
read_l2_copy (struct ctx *c, uint64_t offset, bool secondary,
              struct l2_copy *cp)
{
  unsigned char bin[L2_BIN_LEN];
  char alg[L2_CSUM_ALG_LEN + 1];
  char *area;
  size_t area_len;

  memset (cp, 0, sizeof *cp);
  cp->where = secondary ? "secondary" : "primary";
  cp->offset = offset;
  if (!read_at (c, bin, sizeof bin, offset)) {
    copy_failed (cp, "cannot be read at offset %" PRIu64, offset);
    return;
  }
  if (memcmp (bin, secondary ? magic_secondary : magic_primary,
              LUKS_MAGIC_LEN) != 0) {
    copy_failed (cp, "no LUKS2 magic at offset %" PRIu64, offset);
    return;
  }
  if (be16 (bin + L2_OFF_VERSION) != 2) {
    copy_failed (cp, "version %u, not 2", be16 (bin + L2_OFF_VERSION));
    return;
  }
  cp->magic = true;
  cp->hdr_size = be64 (bin + L2_OFF_HDR_SIZE);
  cp->seqid = be64 (bin + L2_OFF_SEQID);
  if (be64 (bin + L2_OFF_HDR_OFFSET) != offset) {
    copy_failed (cp, "says it is at offset %" PRIu64 ", found at %" PRIu64,
                 be64 (bin + L2_OFF_HDR_OFFSET), offset);
    return;
  }
  if (cp->hdr_size < L2_HDR_MIN || cp->hdr_size > L2_HDR_MAX ||
      (secondary && cp->hdr_size != offset)) {
    copy_failed (cp, "bad header size %" PRIu64, cp->hdr_size);
    return;
  }
  area_len = cp->hdr_size - L2_BIN_LEN;
  area = malloc (area_len);
  if (area == NULL) {
    copy_failed (cp, "out of memory");
    return;
  }
  if (!read_at (c, area, area_len, offset + L2_BIN_LEN))
    copy_failed (cp, "its JSON area cannot be read");
  else if (!checksum_ok (bin, area, area_len, alg, sizeof alg))
    copy_failed (cp, "checksum (%s) mismatch", alg);
  else {
    cp->sane = true;
    cp->json = parse_json_area (area, area_len, cp);
    cp->ok = cp->json != NULL && metadata_ok (cp, area_len);
  }
  free (area);
}

/* Offsets where cryptsetup looks for the secondary copy when the
 * primary gives no size: each possible header size.
 */
static const uint64_t secondary_offsets[] = {
  0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000,
  0x400000,
};

/* When the copies are not both good and alike, cryptsetup would rewrite
 * one from the other, and first makes sure (blkid) that nothing but LUKS
 * is in the file: a foreign signature there may mean the file was
 * overwritten, and the surviving copy is not to be trusted.  cryptsetup
 * then refuses the header; so does this.  0 if nothing foreign is found.
 */
static int
check_foreign_signature (struct ctx *c, const char *bad_copy)
{
  static const char *const luks[] = { "crypto_LUKS", NULL };
  blkid_probe pr = blkid_new_probe_from_filename (c->path);
  const char *type = NULL;
  int r;

  if (pr == NULL)
    return fail (c, "the %s LUKS2 header copy is damaged and the file "
                 "cannot be probed for other signatures (blkid)", bad_copy);
  blkid_probe_enable_partitions (pr, 1);
  blkid_probe_set_partitions_flags (pr, 0);
  blkid_probe_enable_superblocks (pr, 1);
  blkid_probe_set_superblocks_flags (pr, BLKID_SUBLKS_TYPE);
  blkid_probe_filter_superblocks_type (pr, BLKID_FLTR_NOTIN, (char **) luks);
  r = blkid_do_safeprobe (pr);
  if (r == 0 && blkid_probe_lookup_value (pr, "TYPE", &type, NULL) != 0 &&
      blkid_probe_lookup_value (pr, "PTTYPE", &type, NULL) != 0)
    type = "unknown";
  if (r != 1)
    fail (c, "the %s LUKS2 header copy is damaged, and the file holds %s%s "
          "(blkid): cryptsetup will not use the other copy either; check "
          "the file, then run cryptsetup repair", bad_copy,
          r == 0 ? "another signature: " : "signatures blkid cannot tell "
          "apart", r == 0 ? type : "");
  blkid_free_probe (pr);
  return r == 1 ? 0 : -1;
}

/* Both copies read; the good one (or the newer of two good ones) kept
 * in *use; the other one's JSON freed.
 */
static int
pick_l2_copy (struct ctx *c, struct l2_copy *use, struct luks_volume *vol)
{
  struct l2_copy p, s = { .ok = false };
  bool any_magic;
  size_t i;

  read_l2_copy (c, 0, false, &p);
  any_magic = p.magic;
  if (p.sane)
    read_l2_copy (c, p.hdr_size, true, &s);
  else {
    /* The first good one; failing that, the reason of the first with a
     * magic, or of the last tried.
     */
    for (i = 0; i < sizeof secondary_offsets / sizeof *secondary_offsets; ++i) {
      struct l2_copy t;
      read_l2_copy (c, secondary_offsets[i], true, &t);
      if (t.sane || !s.magic)
        s = t;
      if (t.sane)
        break;
    }
  }
  any_magic |= s.magic;

  if (p.ok && s.ok && s.seqid > p.seqid) {
    json_object_put (p.json);
    *use = s;
  }
  else if (p.ok) {
    json_object_put (s.json);
    *use = p;
  }
  else if (s.ok)
    *use = s;
  else {
    json_object_put (p.json);
    json_object_put (s.json);
    if (!any_magic)
      return fail (c, "not a LUKS header (made by cryptsetup luksFormat "
                   "--header?)");
    return fail (c, "no valid LUKS2 header copy: primary: %s; secondary: %s",
                 p.why, s.why);
  }
  vol->copy = use->where;
  if ((!p.ok || !s.ok || p.seqid != s.seqid) &&
      check_foreign_signature (c, strcmp (use->where, "primary") == 0
                                  ? "secondary" : "primary") == -1) {
    json_object_put (use->json);
    return -1;
  }
  printable (p.why);
  printable (s.why);
  if (!p.ok)
    snprintf (vol->note, sizeof vol->note,
              "crypt-header %s: primary LUKS2 header copy is damaged (%s): "
              "using the secondary copy (cryptsetup repair restores it)",
              c->path, p.why);
  else if (!s.ok)
    snprintf (vol->note, sizeof vol->note,
              "crypt-header %s: secondary LUKS2 header copy is damaged (%s): "
              "using the primary copy (cryptsetup repair restores it)",
              c->path, s.why);
  return 0;
}

/* ---- LUKS2: the JSON metadata ------------------------------------------- */

static json_object *
member (json_object *obj, const char *name, json_type type)
{
  json_object *m;

  if (obj == NULL || !json_object_object_get_ex (obj, name, &m) ||
      !json_object_is_type (m, type))
    return NULL;
  return m;
}

/* LUKS2 keeps 64-bit numbers as decimal strings. */
static bool
string_u64 (json_object *obj, const char *name, uint64_t *v)
{
  json_object *m = member (obj, name, json_type_string);
  const char *s;
  char *end;

  if (m == NULL)
    return false;
  s = json_object_get_string (m);
  if (s[0] < '0' || s[0] > '9')
    return false;
  errno = 0;
  *v = strtoull (s, &end, 10);
  return errno == 0 && *end == '\0';
}

static bool
int_in (json_object *obj, const char *name, int64_t lo, int64_t hi,
        int64_t *v)
{
  json_object *m = member (obj, name, json_type_int);

  if (m == NULL)
    return false;
  *v = json_object_get_int64 (m);
  return *v >= lo && *v <= hi;
}

static const char *
string_of (json_object *obj, const char *name)
{
  json_object *m = member (obj, name, json_type_string);
  return m ? json_object_get_string (m) : NULL;
}

static bool
array_has (json_object *array, const char *id)
{
  size_t i, n = array ? json_object_array_length (array) : 0;

  for (i = 0; i < n; ++i) {
    json_object *e = json_object_array_get_idx (array, i);
    if (json_object_is_type (e, json_type_string) &&
        strcmp (json_object_get_string (e), id) == 0)
      return true;
  }
  return false;
}

static bool
salt_of (json_object *obj, const char *name, unsigned char *out,
         size_t *len)
{
  const char *s = string_of (obj, name);
  ssize_t n = s ? base64_decode (s, out, MAX_SALT) : -1;

  if (n < 0)
    return false;
  *len = n;
  return true;
}

/* Features that stop the whole header from being served. */
static int
check_requirements (struct ctx *c, json_object *root)
{
  json_object *config = member (root, "config", json_type_object);
  json_object *req = member (config, "requirements", json_type_object);
  json_object *mandatory = member (req, "mandatory", json_type_array);
  json_object *keyslots = member (root, "keyslots", json_type_object);
  size_t i, n = mandatory ? json_object_array_length (mandatory) : 0;

  for (i = 0; i < n; ++i) {
    const char *what =
      json_object_get_string (json_object_array_get_idx (mandatory, i));
    if (strncmp (what, "online-reencrypt", 16) == 0)
      return unsupported (c, "a reencryption is in progress (requirement "
                          "%s): finish it with cryptsetup reencrypt first",
                          what);
    return unsupported (c, "the header requires feature %s, which is not "
                        "supported", what);
  }
  json_object_object_foreach (keyslots, id, slot) {
    const char *type = string_of (slot, "type");
    if (type && strcmp (type, "reencrypt") == 0)
      return unsupported (c, "a reencryption is in progress (key slot %s is "
                          "a reencrypt slot): finish it with cryptsetup "
                          "reencrypt first", id);
  }
  return 0;
}

/* The one data segment: type crypt, aes-xts-plain64, from offset 0 over
 * the whole device.  (Its members' presence and form are checked with
 * the metadata.)
 */
static int
parse_segment (struct ctx *c, json_object *root, const char **seg_id,
               struct luks_volume *vol)
{
  json_object *segments = member (root, "segments", json_type_object);
  json_object *seg = NULL, *flags;
  const char *type, *enc, *size;
  uint64_t offset;
  int64_t sector;
  int n = 0;

  json_object_object_foreach (segments, id, obj) {
    *seg_id = id;
    seg = obj;
    n++;
  }
  if (n > 1)
    return unsupported (c, "the header has %d data segments (a reencryption "
                        "or a layered layout): only one is supported", n);
  type = string_of (seg, "type");
  if (strcmp (type, "crypt") != 0)
    return unsupported (c, "data segment %s is of type %s: only crypt is "
                        "supported", *seg_id, type);
  if (json_object_object_get_ex (seg, "integrity", NULL))
    return unsupported (c, "data segment %s has integrity protection "
                        "(dm-integrity): not supported", *seg_id);
  if ((flags = member (seg, "flags", json_type_array)) != NULL &&
      json_object_array_length (flags) > 0)
    return unsupported (c, "data segment %s has flag %s (a reencryption?): "
                        "not supported", *seg_id,
                        json_object_get_string
                        (json_object_array_get_idx (flags, 0)));
  enc = string_of (seg, "encryption");
  if (strcmp (enc, "aes-xts-plain64") != 0)
    return unsupported (c, "data cipher %s is not supported: only "
                        "aes-xts-plain64", enc);
  if (!int_in (seg, "sector_size", 512, 4096, &sector) ||
      !xts_valid_sector_size (sector))
    return unsupported (c, "data segment %s: sector_size is not 512, 1024, "
                        "2048 or 4096", *seg_id);
  string_u64 (seg, "offset", &offset);
  if (offset != 0)
    return unsupported (c, "data offset of %" PRIu64 " bytes is not "
                        "supported: only 0, a detached header with the data "
                        "from the start of the device", offset);
  size = string_of (seg, "size");
  if (strcmp (size, "dynamic") != 0)
    return unsupported (c, "data segment %s has a fixed size of %s bytes: "
                        "only \"dynamic\" (the whole device) is supported",
                        *seg_id, size);
  vol->sector_size = sector;
  /* cryptsetup activates a single-segment header with IV offset 0: the
   * segment's iv_tweak is read only by reencryption.  So does this.
   */
  vol->iv_offset = 0;
  return 0;
}

/* A digest cut short (or missing, or over a short salt) would let wrong
 * passphrases open the header: cryptsetup 2.6 accepts every candidate
 * key for such a digest.  Refused here on purpose.  20 bytes is LUKS1's
 * digest, kept when cryptsetup converts a LUKS1 header.
 */
static bool
digest_len_ok (size_t len, int hash)
{
  return len == L1_DIGEST_LEN || len == gcry_md_get_algo_dlen (hash);
}

/* The pbkdf2 digest bound to the data segment. */
static int
parse_digest (struct ctx *c, json_object *root, const char *seg_id,
              struct digest *d, json_object **bound_slots)
{
  json_object *digests = member (root, "digests", json_type_object), *m;

  json_object_object_foreach (digests, id, dig) {
    const char *type = string_of (dig, "type"), *hash, *value;
    ssize_t n;
    if (!array_has (member (dig, "segments", json_type_array), seg_id))
      continue;
    if (strcmp (type, "pbkdf2") != 0)
      return unsupported (c, "digest %s is of type %s: only pbkdf2 is "
                          "supported", id, type);
    if (!json_object_object_get_ex (dig, "hash", &m))
      return fail (c, "digest %s has no hash", id);
    /* cryptsetup 2.6 takes any value as the hash's name, and accepts
     * every candidate key when it does not know the hash.
     */
    hash = json_object_get_string (m);
    if (!json_object_is_type (m, json_type_string) ||
        gcry_md_map_name (hash) == 0)
      return stricter (c, "digest %s: hash %s is unknown: refused, as such "
                       "a digest lets any passphrase open the header", id,
                       hash);
    if ((d->hash = hash_algo (hash)) == 0)
      return unsupported (c, "digest %s: hash %s is not supported: use "
                          "sha1, sha256 or sha512", id, hash);
    /* As cryptsetup reads it: any JSON type, 64 bits, into 32. */
    if (!json_object_object_get_ex (dig, "iterations", &m) ||
        (d->iterations = (uint32_t) json_object_get_int64 (m)) == 0)
      return fail (c, "digest %s: no iterations, or 0", id);
    if (member (dig, "salt", json_type_string) == NULL ||
        !salt_of (dig, "salt", d->salt, &d->salt_len))
      return fail (c, "digest %s: its salt is missing or not base64", id);
    if (d->salt_len != LUKS_SALT_BYTES)
      return stricter (c, "digest %s has a %zu-byte salt, not %d: refused, "
                       "as such a digest lets wrong passphrases open the "
                       "header", id, d->salt_len, LUKS_SALT_BYTES);
    if ((value = string_of (dig, "digest")) == NULL)
      return stricter (c, "digest %s has no digest value: refused, as "
                       "that lets any passphrase open the header", id);
    n = base64_decode (value, d->value, MAX_DIGEST);
    if (n < 0 && strlen (value) / 4 * 3 > MAX_DIGEST)
      return stricter (c, "digest %s is longer than %d bytes: refused",
                       id, MAX_DIGEST);
    if (n < 0)
      return fail (c, "digest %s: its value is not base64", id);
    if (!digest_len_ok (n, d->hash))
      return stricter (c, "digest %s is %zd bytes, not the %u of %s (or "
                       "LUKS1's %d): refused, as a short digest lets wrong "
                       "passphrases open the header", id, n,
                       gcry_md_get_algo_dlen (d->hash), hash, L1_DIGEST_LEN);
    d->len = n;
    *bound_slots = member (dig, "keyslots", json_type_array);
    return 0;
  }
  return fail (c, "no digest is bound to data segment %s", seg_id);
}

/* An integer member as cryptsetup reads it (json_object_get_int: 32
 * bits, saturated), into the unsigned 32 bits its KDF takes.
 */
static uint32_t
kdf_number (json_object *obj, const char *name)
{
  json_object *m;

  if (!json_object_object_get_ex (obj, name, &m))
    return 0;
  return (uint32_t) json_object_get_int (m);
}

/* Argon2 lanes (cpus) beyond this are refused: each gets a thread, and
 * cryptsetup itself writes at most 4.
 */
#define ARGON2_MAX_CPUS 64

/* libgcrypt 1.10 sizes Argon2's memory as 1024 x blocks in 32 bits: from
 * 4 GiB on that wraps (to malloc (0), then a heap overflow).  The blocks
 * are the memory cost in KiB rounded down to a multiple of 4 x lanes.
 */
#define ARGON2_MAX_BLOCKS (4U * 1024 * 1024 - 1)

static int
check_argon2 (struct slot *s)
{
  const struct kdf *k = &s->kdf;
  uint64_t blocks;

  /* What Argon2 itself refuses (cryptsetup's libargon2 fails on it). */
  if (k->iterations == 0 || k->memory < 8 || k->cpus == 0 ||
      k->cpus > 0xffffff || k->memory < 8 * (uint64_t) k->cpus)
    return skip_slot (s, LUKS_DAMAGED, "has Argon2 parameters that Argon2 "
                      "refuses (time %lu, memory %lu KiB, cpus %lu: memory "
                      "must be at least 8 KiB per cpu)", k->iterations,
                      k->memory, k->cpus);
  if (k->cpus > ARGON2_MAX_CPUS)
    return skip_slot (s, LUKS_STRICTER, "has an Argon2 cpus value of %lu: "
                      "at most %d are supported (cryptsetup writes at "
                      "most 4)", k->cpus, ARGON2_MAX_CPUS);
  blocks = k->memory / (4 * k->cpus) * (4 * k->cpus);
  if (blocks > ARGON2_MAX_BLOCKS)
    return skip_slot (s, LUKS_STRICTER, "has an Argon2 memory cost of %lu "
                      "KiB: libgcrypt computes 4 GiB or more in 32 bits and "
                      "would overflow, so at most %u KiB is supported",
                      k->memory, ARGON2_MAX_BLOCKS);
  return 0;
}

/* The slot's kdf object (its members' presence and types checked with
 * the metadata); the numbers as cryptsetup takes them.
 */
static int
parse_kdf (json_object *obj, struct slot *s)
{
  const char *type = string_of (obj, "type"), *hash;

  if (type && strcmp (type, "pbkdf2") == 0) {
    s->kdf.type = KDF_PBKDF2;
    hash = string_of (obj, "hash");
    if (hash == NULL || (s->kdf.hash = hash_algo (hash)) == 0)
      return skip_slot (s, LUKS_UNSUPPORTED, "uses PBKDF2 with hash %s: use "
                        "sha1, sha256 or sha512", hash ? hash : "(none)");
    s->kdf.iterations = kdf_number (obj, "iterations");
    if (s->kdf.iterations == 0)
      return skip_slot (s, LUKS_DAMAGED, "has 0 PBKDF2 iterations");
  }
  else if (type && (strcmp (type, "argon2i") == 0 ||
                    strcmp (type, "argon2id") == 0)) {
    s->kdf.type = type[6] == 'i' && type[7] == 'd' ? KDF_ARGON2ID
                                                   : KDF_ARGON2I;
    s->kdf.iterations = kdf_number (obj, "time");
    s->kdf.memory = kdf_number (obj, "memory");
    s->kdf.cpus = kdf_number (obj, "cpus");
    check_argon2 (s);
    if (s->unusable != LUKS_OPENED)
      return 0;
  }
  else
    return skip_slot (s, LUKS_UNSUPPORTED, "uses KDF %s: only pbkdf2, "
                      "argon2i and argon2id are supported",
                      type ? type : "(none)");
  if (!salt_of (obj, "salt", s->kdf.salt, &s->kdf.salt_len))
    return skip_slot (s, LUKS_DAMAGED, "has a KDF salt that is not base64");
  if (s->kdf.salt_len != LUKS_SALT_BYTES)
    return skip_slot (s, LUKS_DAMAGED, "has a %zu-byte KDF salt: LUKS salts "
                      "are %d bytes", s->kdf.salt_len, LUKS_SALT_BYTES);
  return 0;
}

/* A key slot of type luks2, its members' presence and types checked
 * with the metadata.
 */
static void
parse_slot (json_object *obj, const char *id, struct slot *s)
{
  json_object *af = member (obj, "af", json_type_object);
  json_object *area = member (obj, "area", json_type_object);
  const char *str;
  int64_t v;

  s->id = luks2_id_number (id);
  v = json_object_get_int64 (member (obj, "key_size", json_type_int));
  if (v != XTS_KEY_BYTES_128 && v != XTS_KEY_BYTES_256) {
    skip_slot (s, LUKS_UNSUPPORTED, "holds a %" PRId64 "-bit key: only 256 "
               "and 512 (AES-128/256-XTS) are supported", v * 8);
    return;
  }
  s->key_len = v;
  s->stripes = L2_STRIPES;
  str = string_of (af, "hash");
  if (str == NULL || (s->af_hash = hash_algo (str)) == 0) {
    skip_slot (s, LUKS_UNSUPPORTED, "uses AF hash %s: use sha1, sha256 or "
               "sha512", str ? str : "(none)");
    return;
  }
  str = string_of (area, "encryption");
  if (str == NULL || strcmp (str, "aes-xts-plain64") != 0) {
    skip_slot (s, LUKS_UNSUPPORTED, "is encrypted with %s: only "
               "aes-xts-plain64 is supported", str ? str : "(none)");
    return;
  }
  v = json_object_get_int (member (area, "key_size", json_type_int));
  if (v != XTS_KEY_BYTES_128 && v != XTS_KEY_BYTES_256) {
    skip_slot (s, LUKS_UNSUPPORTED, "has a key area key size other than "
               "256 or 512 bits");
    return;
  }
  s->area_key_len = v;
  /* cryptsetup reads the material from the area's 512-byte sector. */
  string_u64 (area, "offset", &s->area_offset);
  s->area_offset = s->area_offset / SECTOR * SECTOR;
  parse_kdf (member (obj, "kdf", json_type_object), s);
}

/* Slots bound to a token that stands for something other than a
 * passphrase (a TPM, a FIDO2 key, a Tang server...).  A luks2-keyring
 * token only fetches an ordinary passphrase, so it does not count.
 */
static bool
bound_to_token (json_object *root, const char *slot_id, const char **type)
{
  json_object *tokens = member (root, "tokens", json_type_object);

  if (tokens == NULL)
    return false;
  json_object_object_foreach (tokens, id, tok) {
    const char *t = string_of (tok, "type");
    (void) id;
    if (array_has (member (tok, "keyslots", json_type_array), slot_id) &&
        !(t && strcmp (t, "luks2-keyring") == 0)) {
      *type = t ? t : "(unknown)";
      return true;
    }
  }
  return false;
}

/* Priority "prefer" first, then in the header's order (cryptsetup goes
 * through the key slots object in its order, once per priority).
 */
static int
by_priority (const void *a, const void *b)
{
  const struct slot *x = a, *y = b;

  if (x->priority != y->priority)
    return x->priority > y->priority ? -1 : 1;
  return x->order < y->order ? -1 : x->order > y->order;
}

/* An id cryptsetup can reach as itself: it looks slots up by the
 * number atoi makes of the id, printed again.
 */
static bool
canonical_id (const char *id)
{
  char again[16];

  snprintf (again, sizeof again, "%d", luks2_id_number (id));
  return strcmp (again, id) == 0;
}

/* The key slots cryptsetup would try for the data segment, in its
 * order, into slots (sized for every slot of the header).
 */
static size_t
collect_slots (json_object *root, json_object *bound, struct slot *slots,
               size_t *ignored, size_t *by_token, const char **token_type)
{
  json_object *keyslots = member (root, "keyslots", json_type_object);
  size_t n = 0, pos = 0;

  json_object_object_foreach (keyslots, id, obj) {
    const char *type = string_of (obj, "type");
    json_object *prio;
    int priority = 1;

    pos++;
    if (json_object_object_get_ex (obj, "priority", &prio))
      priority = json_object_get_int (prio);
    if (priority == 0)
      (*ignored)++;             /* "ignore": cryptsetup does not try it */
    /* cryptsetup tries priorities prefer and normal only, slots of a
     * type it knows, bound to the segment's digest.
     */
    if ((priority != 1 && priority != 2) || type == NULL ||
        strcmp (type, "luks2") != 0 || !canonical_id (id) ||
        !array_has (bound, id))
      continue;
    memset (&slots[n], 0, sizeof slots[n]);
    slots[n].priority = priority;
    slots[n].order = pos;
    parse_slot (obj, id, &slots[n]);
    if (slots[n].unusable == LUKS_OPENED &&
        bound_to_token (root, id, token_type))
      (*by_token)++;
    n++;
  }
  qsort (slots, n, sizeof *slots, by_priority);
  return n;
}

/* The header file holds both copies and the key slots area, as
 * cryptsetup requires of it.
 */
static int
check_file_size (struct ctx *c, const struct luks2_meta *m)
{
  off_t size = lseek (c->fd, 0, SEEK_END);
  uint64_t need = 2 * m->metadata_size + m->keyslots_size;

  if (size != -1 && (uint64_t) size < need)
    return fail (c, "the header file is %" PRIu64 " bytes, shorter than its "
                 "two header copies and key slots area (%" PRIu64 " bytes): "
                 "truncated?", (uint64_t) size, need);
  return 0;
}

static const char slot_order_hint[] =
  " (key slots are tried in cryptsetup's order, which stops at a slot it "
  "cannot use: to try another first, cryptsetup config --priority prefer "
  "--key-slot N)";

static int
open_luks2 (struct ctx *c, struct luks_volume *vol)
{
  struct l2_copy cp = { .ok = false };
  struct digest d;
  struct slot *slots = NULL;
  json_object *root, *bound = NULL;
  const char *seg_id = NULL, *token_type = NULL;
  size_t n, by_token = 0, ignored = 0;
  int r = -1;

  if (pick_l2_copy (c, &cp, vol) == -1)
    return -1;
  root = cp.json;
  vol->version = 2;
  if (check_file_size (c, &cp.meta) == -1 ||
      check_requirements (c, root) == -1 ||
      parse_segment (c, root, &seg_id, vol) == -1 ||
      parse_digest (c, root, seg_id, &d, &bound) == -1)
    goto out;
  slots = calloc (json_object_object_length (member (root, "keyslots",
                                                     json_type_object)) + 1,
                  sizeof *slots);
  if (slots == NULL) {
    fail (c, "out of memory");
    goto out;
  }
  n = collect_slots (root, bound, slots, &ignored, &by_token, &token_type);
  if (n == 0 && ignored > 0) {
    fail (c, "every key slot has priority ignore: make one normal with "
          "cryptsetup config --priority normal --key-slot N --header");
    goto out;
  }
  r = open_slots (c, slots, n, &d, vol, slot_order_hint);
  /* Like cryptsetup, a passphrase is tried on token-bound slots too (it
   * may be the token's secret); if none opened and tokens are the only
   * way in, say so.
   */
  if (r == -1 && c->refusal == LUKS_WRONG_KEY && n > 0 && by_token == n) {
    fail (c, "no key slot opened with this passphrase: every key slot is "
          "bound to a token (%s), the only way in, which this filter cannot "
          "use", token_type);
    c->refusal = LUKS_WRONG_KEY;
  }

 out:
  free (slots);
  json_object_put (root);
  return r;
}

/* ---- Entry points ------------------------------------------------------ */

int
luks_open (const char *path, const void *passphrase, size_t passphrase_len,
           struct luks_volume *vol, char why[LUKS_WHY_LEN])
{
  struct ctx c = { .path = path, .why = why, .pass = passphrase,
                   .pass_len = passphrase_len };
  unsigned char start[8];
  int r;

  memset (vol, 0, sizeof *vol);
  vol->keyslot = -1;
  why[0] = '\0';
  /* libgcrypt's Argon2 refuses an empty passphrase (cryptsetup's does
   * not), and the filter never takes one: refused for every header.
   */
  if (passphrase_len == 0) {
    unsupported (&c, "an empty passphrase or key file is not supported");
    vol->refusal = c.refusal;
    return -1;
  }
  c.fd = open (path, O_RDONLY | O_CLOEXEC);
  if (c.fd == -1) {
    fail (&c, "cannot be read: %s", strerror (errno));
    vol->refusal = c.refusal;
    return -1;
  }
  if (!read_at (&c, start, sizeof start, 0)) {
    r = fail (&c, "not a LUKS header (too short)");
    goto out;
  }
  if (memcmp (start, magic_primary, LUKS_MAGIC_LEN) == 0 &&
      be16 (start + L2_OFF_VERSION) == 1)
    r = open_luks1 (&c, vol);
  else
    r = open_luks2 (&c, vol);   /* also finds a lone secondary copy */
 out:
  close (c.fd);
  if (r == -1) {
    luks_volume_wipe (vol);
    vol->refusal = c.refusal;
  }
  return r;
}

void
luks_volume_wipe (struct luks_volume *vol)
{
  secure_free (vol->key, vol->key_len);
  vol->key = NULL;
  vol->key_len = 0;
}

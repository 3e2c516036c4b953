/* libFuzzer harness: the cryptinline filter's LUKS header code against
 * libcryptsetup, the oracle.  Each input is a LUKS header; both open it
 * with the same passphrase and must agree: both refuse, or both open
 * with the same volume key, cipher (aes-xts-plain64), sector size, data
 * offset and IV offset.  Where cryptsetup opens a header the filter may
 * refuse it only for a documented reason: a feature it does not serve
 * (LUKS_UNSUPPORTED) or one of the headers it refuses on purpose
 * (LUKS_STRICTER, the man page's list).  Anything else aborts: a
 * disagreement is a bug to fix in the filter.
 *
 * How it works.  Two base headers made by cryptsetup live in luks-bases/
 * (LUKS2: slot 0 PBKDF2 with "pass-zero", slot 1 Argon2id with
 * "pass-one"; LUKS1: the same passphrases in slots 0 and 1), with the
 * key material the mutations leave alone.  An input is:
 *
 *   byte 0   bits 0-1: base (0-1 LUKS2, 2-3 LUKS1); bits 2-3: the
 *            passphrase ("pass-zero", "pass-one", a wrong one, empty);
 *            LUKS2: bit 4 breaks the primary copy's checksum, bit 5
 *            keeps the base's JSON in the secondary copy, bit 6 gives
 *            the secondary the higher sequence id
 *   the rest LUKS2: the JSON metadata text, written into both copies
 *            (per bit 5) with the binary headers and checksums made
 *            right; LUKS1: the first bytes of the 592-byte header
 *
 * The custom mutator is structure-aware: for LUKS2 it parses the JSON
 * and changes numbers, numeric strings, ids, names, base64 values,
 * deletes, renames or copies members; for LUKS1 it sets header fields
 * (names, key size, offsets, stripes, iterations) to telling values;
 * now and then it flips the mode byte or mutates raw bytes.  KDF costs
 * are capped before either side runs (PBKDF2 iterations, Argon2 time,
 * memory and lanes): an input over the cap is not compared, so every
 * run stays fast (the cost limits are covered by the shell tests).
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gcrypt.h>
#include <json.h>
#include <libcryptsetup.h>

#include "xts.h"
#include "luks.h"

#ifndef LUKS_BASES
#error "build with -DLUKS_BASES=\"directory of the base headers\""
#endif

#define L2_HDR 0x4000           /* the LUKS2 base's header copy size */
#define L2_BIN 4096
#define L1_HDR 592

/* KDF cost cap. */
#define MAX_ITERATIONS 20000
#define MAX_ARGON2_TIME 8
#define MAX_ARGON2_KIB 65536
#define MAX_ARGON2_CPUS 16

static const char *const passphrases[] = {
  "pass-zero", "pass-one", "not-the-passphrase", "",
};

struct base {
  const char *name;
  unsigned char *bytes;
  size_t len;
  char path[256];               /* the header file both sides open */
};

static struct base bases[2] = { { .name = "luks2.hdr" }, { .name = "luks1.hdr" } };

static void
die (const char *what)
{
  fprintf (stderr, "fuzz-luks-differential: %s: %s\n", what, strerror (errno));
  abort ();
}

static void
load_base (struct base *b)
{
  char path[512];
  FILE *fp;
  long n = 0;
  int fd;

  snprintf (path, sizeof path, "%s/%s", LUKS_BASES, b->name);
  if ((fp = fopen (path, "rb")) == NULL || fseek (fp, 0, SEEK_END) != 0 ||
      (n = ftell (fp)) <= 0 || fseek (fp, 0, SEEK_SET) != 0 ||
      (b->bytes = malloc (n)) == NULL ||
      fread (b->bytes, 1, n, fp) != (size_t) n)
    die (path);
  fclose (fp);
  b->len = n;
  snprintf (b->path, sizeof b->path, "%s/luksdiff-%d-%s",
            getenv ("TMPDIR") ? getenv ("TMPDIR") : "/tmp", (int) getpid (),
            b->name);
  fd = open (b->path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd == -1 || write (fd, b->bytes, n) != n || close (fd) != 0)
    die (b->path);
}

static void
remove_files (void)
{
  unlink (bases[0].path);
  unlink (bases[1].path);
}

static void
quiet (int level, const char *msg, void *usrptr)
{
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  const char *why = xts_library_init ();

  if (why) {
    fprintf (stderr, "%s\n", why);
    abort ();
  }
  load_base (&bases[0]);
  load_base (&bases[1]);
  atexit (remove_files);
  crypt_set_log_callback (NULL, quiet, NULL);
  /* No lock files, and so no header repair either (cryptsetup repairs
   * only under its metadata lock): cryptsetup only reads, as the filter.
   */
  crypt_metadata_locking (NULL, 0);
  return 0;
}

/* ---- Writing the header file ------------------------------------------- */

static void
put_be64 (unsigned char *p, uint64_t v)
{
  int i;

  for (i = 7; i >= 0; --i, v >>= 8)
    p[i] = v;
}

/* One LUKS2 copy at off: the base's binary header with the sequence id
 * given and the JSON text, the checksum made right (or broken).
 */
static void
put_l2_copy (unsigned char *hdr, size_t off, const char *json, size_t len,
             uint64_t seqid, bool break_csum)
{
  unsigned char *c = hdr + off;
  unsigned char sum[32];

  if (len > L2_HDR - L2_BIN - 1)
    len = L2_HDR - L2_BIN - 1;
  memset (c + L2_BIN, 0, L2_HDR - L2_BIN);
  memcpy (c + L2_BIN, json, len);
  put_be64 (c + 16, seqid);
  memset (c + 448, 0, 64);
  gcry_md_hash_buffer (GCRY_MD_SHA256, sum, c, L2_HDR);
  memcpy (c + 448, sum, sizeof sum);
  if (break_csum)
    c[448] ^= 1;
}

static bool
write_header (const struct base *b, const unsigned char *hdr, size_t len)
{
  int fd = open (b->path, O_WRONLY);
  bool ok = fd != -1 && pwrite (fd, hdr, len, 0) == (ssize_t) len;

  if (fd != -1)
    close (fd);
  return ok;
}

/* ---- The KDF cost cap --------------------------------------------------- */

static uint32_t
as_int (json_object *obj, const char *name)
{
  json_object *m;

  if (!json_object_object_get_ex (obj, name, &m))
    return 0;
  return (uint32_t) json_object_get_int (m);
}

static bool
l2_cheap (const char *json, size_t len)
{
  json_object *root, *keyslots, *digests;
  bool ok = true;
  char *text = strndup (json, len);

  if (text == NULL)
    return false;
  root = json_tokener_parse (text);
  free (text);
  if (root == NULL)
    return true;                /* both refuse it at once */
  if (json_object_object_get_ex (root, "keyslots", &keyslots) &&
      json_object_is_type (keyslots, json_type_object)) {
    json_object_object_foreach (keyslots, id, ks) {
      json_object *kdf;
      (void) id;
      if (!json_object_is_type (ks, json_type_object) ||
          !json_object_object_get_ex (ks, "kdf", &kdf) ||
          !json_object_is_type (kdf, json_type_object))
        continue;
      if (as_int (kdf, "iterations") > MAX_ITERATIONS ||
          as_int (kdf, "time") > MAX_ARGON2_TIME ||
          as_int (kdf, "memory") > MAX_ARGON2_KIB ||
          as_int (kdf, "cpus") > MAX_ARGON2_CPUS)
        ok = false;
    }
  }
  if (json_object_object_get_ex (root, "digests", &digests) &&
      json_object_is_type (digests, json_type_object)) {
    json_object_object_foreach (digests, id, dig) {
      json_object *m;
      (void) id;
      if (json_object_is_type (dig, json_type_object) &&
          json_object_object_get_ex (dig, "iterations", &m) &&
          (uint32_t) json_object_get_int64 (m) > MAX_ITERATIONS)
        ok = false;
    }
  }
  json_object_put (root);
  return ok;
}

static uint32_t
be32 (const unsigned char *p)
{
  return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 |
    (uint32_t) p[2] << 8 | p[3];
}

static bool
l1_cheap (const unsigned char *h)
{
  int i;

  if (be32 (h + 164) > MAX_ITERATIONS)
    return false;
  for (i = 0; i < 8; ++i)
    if (be32 (h + 208 + 48 * i) == 0x00AC71F3 &&
        be32 (h + 208 + 48 * i + 4) > MAX_ITERATIONS)
      return false;
  return true;
}

/* ---- The two sides ------------------------------------------------------ */

struct outcome {
  bool open;
  char key[64];
  size_t key_len;
  char cipher[64];
  uint32_t sector_size;
  uint64_t data_offset;         /* 512-byte sectors */
  uint64_t iv_offset;
  enum luks_refusal refusal;    /* the filter's */
  char why[LUKS_WHY_LEN];
  int err;                      /* cryptsetup's */
};

static void
by_cryptsetup (const char *path, const char *pass, struct outcome *o)
{
  struct crypt_device *cd = NULL;
  size_t len = sizeof o->key;

  memset (o, 0, sizeof *o);
  if ((o->err = crypt_init (&cd, path)) == 0 &&
      (o->err = crypt_load (cd, CRYPT_LUKS, NULL)) == 0 &&
      (o->err = crypt_volume_key_get (cd, CRYPT_ANY_SLOT, o->key, &len,
                                      pass, strlen (pass))) >= 0) {
    o->open = true;
    o->key_len = len;
    snprintf (o->cipher, sizeof o->cipher, "%s-%s",
              crypt_get_cipher (cd) ? crypt_get_cipher (cd) : "?",
              crypt_get_cipher_mode (cd) ? crypt_get_cipher_mode (cd) : "?");
    o->sector_size = crypt_get_sector_size (cd);
    o->data_offset = crypt_get_data_offset (cd);
    o->iv_offset = crypt_get_iv_offset (cd);
  }
  crypt_free (cd);
}

static void
by_filter (const char *path, const char *pass, struct outcome *o)
{
  struct luks_volume vol;

  memset (o, 0, sizeof *o);
  if (luks_open (path, pass, strlen (pass), &vol, o->why) == 0) {
    o->open = true;
    o->key_len = vol.key_len;
    memcpy (o->key, vol.key, vol.key_len);
    /* The filter serves only this cipher, from offset 0. */
    snprintf (o->cipher, sizeof o->cipher, "aes-xts-plain64");
    o->sector_size = vol.sector_size;
    o->data_offset = 0;
    o->iv_offset = vol.iv_offset;
    luks_volume_wipe (&vol);
  }
  else
    o->refusal = vol.refusal;
}

static void
disagree (const char *what, const struct outcome *cs, const struct outcome *f)
{
  fprintf (stderr, "fuzz-luks-differential: DISAGREEMENT: %s\n"
           "  cryptsetup: %s (error %d)\n  filter: %s (refusal %d) %s\n",
           what, cs->open ? "opens" : "refuses", cs->err,
           f->open ? "opens" : "refuses", f->refusal, f->why);
  abort ();
}

static void
compare (const struct outcome *cs, const struct outcome *f)
{
  if (cs->open && f->open) {
    if (cs->key_len != f->key_len || memcmp (cs->key, f->key, f->key_len))
      disagree ("different volume keys", cs, f);
    if (strcmp (cs->cipher, f->cipher) != 0)
      disagree ("different ciphers", cs, f);
    if (cs->sector_size != f->sector_size)
      disagree ("different sector sizes", cs, f);
    if (cs->data_offset != f->data_offset)
      disagree ("different data offsets", cs, f);
    if (cs->iv_offset != f->iv_offset)
      disagree ("different IV offsets", cs, f);
  }
  else if (f->open)
    disagree ("the filter opens what cryptsetup refuses", cs, f);
  else if (cs->open && f->refusal != LUKS_UNSUPPORTED &&
           f->refusal != LUKS_STRICTER)
    disagree ("the filter refuses, for no documented reason, what "
              "cryptsetup opens", cs, f);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static unsigned char hdr[2 * L2_HDR];
  const struct base *b;
  const char *pass;
  struct outcome cs, f;
  size_t hlen;

  if (size < 1)
    return 0;
  pass = passphrases[(data[0] >> 2) & 3];
  if ((data[0] & 3) < 2) {
    const char *json = (const char *) data + 1;
    size_t len = strnlen (json, size - 1);
    const char *base_json = (const char *) bases[0].bytes + L2_BIN;
    bool keep = data[0] & 0x20;
    if (!l2_cheap (json, len))
      return 0;
    b = &bases[0];
    memcpy (hdr, b->bytes, sizeof hdr);
    put_l2_copy (hdr, 0, json, len, 1, data[0] & 0x10);
    put_l2_copy (hdr, L2_HDR, keep ? base_json : json,
                 keep ? strlen (base_json) : len, data[0] & 0x40 ? 2 : 1,
                 false);
    hlen = 2 * L2_HDR;
  }
  else {
    b = &bases[1];
    memcpy (hdr, b->bytes, L1_HDR);
    memcpy (hdr, data + 1, size - 1 < L1_HDR ? size - 1 : L1_HDR);
    if (!l1_cheap (hdr))
      return 0;
    hlen = L1_HDR;
  }
  if (!write_header (b, hdr, hlen))
    die (b->path);
  by_cryptsetup (b->path, pass, &cs);
  by_filter (b->path, pass, &f);
  if (getenv ("FUZZ_LUKS_VERBOSE"))
    fprintf (stderr, "cryptsetup %s (%d), filter %s (refusal %d) %s\n",
             cs.open ? "opens" : "refuses", cs.err,
             f.open ? "opens" : "refuses", f.refusal, f.why);
  compare (&cs, &f);
  return 0;
}

/* ---- The structure-aware mutator ---------------------------------------- */

size_t LLVMFuzzerMutate (uint8_t *data, size_t size, size_t max_size);

static unsigned
pick (unsigned *seed, unsigned n)
{
  *seed = *seed * 1103515245 + 12345;
  return (*seed >> 16) % n;
}

static const int64_t numbers[] = {
  0, 1, -1, 2, 3, 4, 7, 8, 16, 20, 31, 32, 48, 64, 100, 511, 512, 1000,
  1024, 3999, 4000, 4001, 4096, 8192, 65536, 2147483647, 2147483648LL,
  4294967295LL, 4294967296LL, -2147483648LL,
};

static const char *const strings[] = {
  "0", "1", "2", "7", "31", "32", "00", "01", "", "a", "-1", "2147483647",
  "2147483648", "4294967296", "18446744073709551615", "18446744073709551616",
  "dynamic", "512", "4096", "8192", "12288", "16384", "28672", "32768",
  "131072", "163840", "262144", "294912", "1048576", "4095",
  "aes-xts-plain64", "aes-xts-plain", "aes-cbc-essiv:sha256",
  "serpent-xts-plain64", "aes-xts-plain65", "aes", "sha1", "sha256",
  "sha512", "sha384", "md5", "ripemd160", "pbkdf2", "argon2i", "argon2id",
  "scrypt", "luks1", "luks2", "raw", "crypt", "linear", "reencrypt",
  "backup-previous", "in-reencryption", "online-reencrypt-v2", "clevis",
  "luks2-keyring", "AA==", "AAAAAAAAAAAAAAAAAAAAAA==",
  "AAAAAAAAAAAAAAAAAAAAAAAAAAA=", "@@@@", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
};

#define MAX_NODES 512

struct node {
  json_object *parent;          /* object or array */
  const char *key;              /* in an object, or NULL */
  size_t idx;                   /* in an array */
  json_object *value;
};

static void
collect (json_object *obj, struct node *nodes, size_t *n)
{
  if (json_object_is_type (obj, json_type_object)) {
    json_object_object_foreach (obj, k, v) {
      if (*n == MAX_NODES)
        return;
      nodes[(*n)++] = (struct node) { obj, k, 0, v };
      collect (v, nodes, n);
    }
  }
  else if (json_object_is_type (obj, json_type_array)) {
    size_t i, len = json_object_array_length (obj);
    for (i = 0; i < len && *n < MAX_NODES; ++i) {
      json_object *v = json_object_array_get_idx (obj, i);
      nodes[(*n)++] = (struct node) { obj, NULL, i, v };
      collect (v, nodes, n);
    }
  }
}

static void
replace (const struct node *nd, json_object *v)
{
  if (nd->key)
    json_object_object_add (nd->parent, nd->key, v);
  else
    json_object_array_put_idx (nd->parent, nd->idx, v);
}

/* A decimal string moved by a telling step. */
static json_object *
nudge_number_string (const char *s, unsigned *seed)
{
  static const int64_t steps[] = { 1, -1, 512, -512, 4096, -4096, 16384 };
  char buf[32];
  unsigned long long v = strtoull (s, NULL, 10);

  /* Unsigned: wrapping around is one more telling value. */
  if (pick (seed, 3) == 0)
    v *= 2;
  else
    v += (unsigned long long) steps[pick (seed, sizeof steps / sizeof *steps)];
  snprintf (buf, sizeof buf, "%llu", v);
  return json_object_new_string (buf);
}

static void
mutate_node (json_object *root, struct node *nd, unsigned *seed)
{
  switch (pick (seed, 8)) {
  case 0:                       /* a telling number */
    replace (nd, json_object_new_int64
             (numbers[pick (seed, sizeof numbers / sizeof *numbers)]));
    break;
  case 1:                       /* a telling string */
    replace (nd, json_object_new_string
             (strings[pick (seed, sizeof strings / sizeof *strings)]));
    break;
  case 2:                       /* a number, or a number in a string, moved */
    if (json_object_is_type (nd->value, json_type_int))
      replace (nd, json_object_new_int64
               ((int64_t) ((uint64_t) json_object_get_int64 (nd->value) +
                           (pick (seed, 2) ? 1 : -1) *
                           (uint64_t) (1 + pick (seed, 4096)))));
    else if (json_object_is_type (nd->value, json_type_string))
      replace (nd, nudge_number_string (json_object_get_string (nd->value),
                                        seed));
    break;
  case 3:                       /* deleted */
    if (nd->key)
      json_object_object_del (nd->parent, nd->key);
    else
      json_object_array_del_idx (nd->parent, nd->idx, 1);
    break;
  case 4:                       /* renamed (ids above all) */
    if (nd->key) {
      json_object *v = json_object_get (nd->value);
      const char *name = strings[pick (seed, 16)];
      json_object_object_del (nd->parent, nd->key);
      json_object_object_add (nd->parent, name, v);
    }
    break;
  case 5:                       /* copied under another name */
    if (nd->key) {
      json_object *copy = NULL;
      if (json_object_deep_copy (nd->value, &copy, NULL) == 0)
        json_object_object_add (nd->parent, strings[pick (seed, 16)], copy);
    }
    else {
      json_object *copy = NULL;
      if (json_object_deep_copy (nd->value, &copy, NULL) == 0)
        json_object_array_add (nd->parent, copy);
    }
    break;
  case 6:                       /* a base64 value cut short */
    if (json_object_is_type (nd->value, json_type_string)) {
      const char *s = json_object_get_string (nd->value);
      size_t len = strlen (s);
      if (len >= 8)
        replace (nd, json_object_new_string_len (s, (pick (seed, len / 4) + 1) * 4 - 4));
    }
    break;
  default:                      /* an empty array or object */
    replace (nd, pick (seed, 2) ? json_object_new_array ()
                                : json_object_new_object ());
    break;
  }
  (void) root;
}

static size_t
mutate_l2 (uint8_t *data, size_t size, size_t max_size, unsigned seed)
{
  struct node nodes[MAX_NODES];
  size_t n = 0, len, rounds, i;
  char *text = strndup ((const char *) data + 1, size - 1);
  json_object *root = text ? json_tokener_parse (text) : NULL;
  const char *out;

  free (text);
  if (root == NULL)
    return 0;
  rounds = 1 + pick (&seed, 3);
  for (i = 0; i < rounds; ++i) {
    n = 0;
    collect (root, nodes, &n);
    if (n == 0)
      break;
    mutate_node (root, &nodes[pick (&seed, n)], &seed);
  }
  out = json_object_to_json_string_ext (root, JSON_C_TO_STRING_PLAIN);
  len = out ? strlen (out) : 0;
  if (out == NULL || len + 1 > max_size) {
    json_object_put (root);
    return 0;
  }
  memcpy (data + 1, out, len);
  json_object_put (root);
  return len + 1;
}

/* LUKS1 header fields: offset, length. */
static const struct { unsigned off, len; } l1_fields[] = {
  { 6, 2 },                     /* version */
  { 8, 32 }, { 40, 32 }, { 72, 32 },   /* cipher, mode, hash names */
  { 104, 4 }, { 108, 4 },       /* payload offset, key bytes */
  { 112, 20 }, { 132, 32 }, { 164, 4 },        /* digest, salt, iterations */
};

static const char *const l1_names[] = {
  "aes", "AES", "serpent", "xts-plain64", "xts-plain", "cbc-essiv:sha256",
  "ecb", "sha1", "sha256", "sha512", "sha384", "md5", "ripemd160",
  "whirlpool", "",
};

static void
set_be32 (uint8_t *p, uint32_t v)
{
  p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

static size_t
mutate_l1 (uint8_t *data, size_t size, size_t max_size, unsigned seed)
{
  uint8_t *h = data + 1;
  unsigned f;

  if (size < 1 + L1_HDR || max_size < 1 + L1_HDR)
    return 0;
  if (pick (&seed, 2) == 0) {   /* a key slot field */
    unsigned slot = pick (&seed, 8), word = pick (&seed, 4);
    static const unsigned words[] = { 0, 4, 40, 44 };
    uint32_t v = pick (&seed, 2) ? (uint32_t) numbers[pick (&seed, sizeof numbers / sizeof *numbers)]
                                 : be32 (h + 208 + 48 * slot + words[word]) + pick (&seed, 9) - 4;
    if (word == 0 && pick (&seed, 2))
      v = pick (&seed, 2) ? 0x00AC71F3 : 0x0000DEAD;
    set_be32 (h + 208 + 48 * slot + words[word], v);
    return size;
  }
  f = pick (&seed, sizeof l1_fields / sizeof *l1_fields);
  if (l1_fields[f].len == 32 && l1_fields[f].off < 104) {
    const char *s = l1_names[pick (&seed, sizeof l1_names / sizeof *l1_names)];
    memset (h + l1_fields[f].off, 0, 32);
    memcpy (h + l1_fields[f].off, s, strlen (s) < 31 ? strlen (s) : 31);
  }
  else if (l1_fields[f].len == 4)
    set_be32 (h + l1_fields[f].off,
              (uint32_t) numbers[pick (&seed, sizeof numbers / sizeof *numbers)]);
  else
    h[l1_fields[f].off + pick (&seed, l1_fields[f].len)] ^= 1 << pick (&seed, 8);
  return size;
}

size_t
LLVMFuzzerCustomMutator (uint8_t *data, size_t size, size_t max_size,
                         unsigned int seed)
{
  size_t r = 0;

  if (size < 1 || max_size < 2)
    return LLVMFuzzerMutate (data, size, max_size);
  switch (pick (&seed, 10)) {
  case 0:                       /* the mode byte */
    data[0] ^= 1 << pick (&seed, 7);
    return size;
  case 1:                       /* raw bytes */
    return LLVMFuzzerMutate (data, size, max_size);
  default:
    r = (data[0] & 3) < 2 ? mutate_l2 (data, size, max_size, seed)
                          : mutate_l1 (data, size, max_size, seed);
    return r ? r : LLVMFuzzerMutate (data, size, max_size);
  }
}

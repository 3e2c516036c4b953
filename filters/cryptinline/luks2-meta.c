/* The rules a LUKS2 header copy's JSON metadata must follow before it
 * counts as a good copy: cryptsetup's LUKS2_hdr_validate (cryptsetup
 * 2.6, lib/luks2/luks2_json_metadata.c) and its luks2 key slot check,
 * rule for rule, so that the filter takes the copy cryptsetup takes and
 * refuses the header cryptsetup refuses.
 *
 * How it works: one function per section, in cryptsetup's order
 * (requirements, tokens, digests, segments, keyslots, config, key slot
 * areas, then the JSON size and the key slots' own fields).  Each
 * returns false with a short reason.  Numbers kept as strings (offsets,
 * sizes) must be decimal digits only and fit in 64 bits; ids of key
 * slots, tokens, digests and segments must be digits only.  Where
 * cryptsetup turns an id into a number it uses atoi; luks2_id_number
 * does what atoi does on this platform without its undefined overflow.
 * Only reading: nothing is repaired.  (cryptsetup drops unknown members
 * of a key slot's kdf object before it validates again; here they are
 * just not looked at, which comes to the same.)
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json.h>

#include "luks2-meta.h"

#define BIN_LEN 4096
#define MAX_KEYSLOTS_SIZE 0x8000000     /* 128 MiB */

struct why {
  char *buf;
  size_t len;
};

static bool bad (struct why *w, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

static bool
bad (struct why *w, const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (w->buf, w->len, fmt, ap);
  va_end (ap);
  return false;
}

/* ---- Helpers, as cryptsetup's ------------------------------------------ */

static bool
digits_only (const char *s)
{
  for (; *s; ++s)
    if (*s < '0' || *s > '9')
      return false;
  return true;
}

int
luks2_id_number (const char *id)
{
  /* glibc's atoi is (int) strtol: out-of-range values saturate to
   * LONG_MIN/LONG_MAX, then keep their low 32 bits.
   */
  long v = strtol (id, NULL, 10);
  return (int) (uint32_t) (unsigned long) v;
}

bool
luks2_u64 (const char *s, uint64_t *v)
{
  char *end;
  unsigned long long r;

  if (!digits_only (s))
    return false;
  errno = 0;
  r = strtoull (s, &end, 10);
  if (*end || errno)
    return false;
  *v = r;
  return true;
}

static json_object *
get (json_object *obj, const char *name, json_type type)
{
  json_object *m;

  if (obj == NULL || !json_object_object_get_ex (obj, name, &m) ||
      !json_object_is_type (m, type))
    return NULL;
  return m;
}

/* A non-empty string member. */
static const char *
str (json_object *obj, const char *name)
{
  json_object *m = get (obj, name, json_type_string);
  const char *s = m ? json_object_get_string (m) : NULL;

  return s && *s ? s : NULL;
}

static bool
is_uint32 (json_object *m)
{
  int64_t v;

  errno = 0;
  v = json_object_get_int64 (m);
  return errno == 0 && v >= 0 && v <= UINT32_MAX;
}

/* Each element of array is a string naming a member of keys. */
static bool
names_members (json_object *array, json_object *keys)
{
  size_t i, n = json_object_array_length (array);

  for (i = 0; i < n; ++i) {
    json_object *e = json_object_array_get_idx (array, i);
    if (!json_object_is_type (e, json_type_string) ||
        get (keys, json_object_get_string (e), json_type_object) == NULL)
      return false;
  }
  return true;
}

static bool
array_of_strings (json_object *array)
{
  size_t i, n = json_object_array_length (array);

  for (i = 0; i < n; ++i)
    if (!json_object_is_type (json_object_array_get_idx (array, i),
                              json_type_string))
      return false;
  return true;
}

static bool
array_has_string (json_object *array, const char *s)
{
  size_t i, n = array ? json_object_array_length (array) : 0;

  for (i = 0; i < n; ++i) {
    json_object *e = json_object_array_get_idx (array, i);
    if (json_object_is_type (e, json_type_string) &&
        strcmp (json_object_get_string (e), s) == 0)
      return true;
  }
  return false;
}

/* The member named by the decimal number i ("%d"), as cryptsetup looks
 * segments and key slots up by number.
 */
static json_object *
by_number (json_object *obj, int i)
{
  char name[16];

  snprintf (name, sizeof name, "%d", i);
  return get (obj, name, json_type_object);
}

/* ---- The sections ------------------------------------------------------ */

static bool
reencrypt_flag (const char *f)
{
  if (strcmp (f, "online-reencrypt") == 0)
    return true;
  if (strncmp (f, "online-reencrypt-v", 18) != 0 || f[18] == '\0')
    return false;
  return digits_only (f + 18);
}

static bool
check_requirements (json_object *root, struct why *w)
{
  json_object *config = get (root, "config", json_type_object), *req, *m;
  size_t i, n, reenc = 0;

  if (config == NULL)
    return bad (w, "no config object");
  if (!json_object_object_get_ex (config, "requirements", &req))
    return true;
  if (!json_object_is_type (req, json_type_object))
    return bad (w, "config requirements is not an object");
  if (!json_object_object_get_ex (req, "mandatory", &m))
    return true;
  if (!json_object_is_type (m, json_type_array) || !array_of_strings (m))
    return bad (w, "requirements mandatory is not an array of strings");
  n = json_object_array_length (m);
  for (i = 0; i < n; ++i)
    if (reencrypt_flag (json_object_get_string (json_object_array_get_idx (m, i))))
      reenc++;
  if (reenc > 1)
    return bad (w, "more than one online-reencrypt requirement");
  return true;
}

static bool
check_tokens (json_object *root, struct why *w)
{
  json_object *tokens = get (root, "tokens", json_type_object);
  json_object *keyslots = get (root, "keyslots", json_type_object);

  if (tokens == NULL)
    return bad (w, "no tokens object");
  json_object_object_foreach (tokens, id, tok) {
    json_object *ks = get (tok, "keyslots", json_type_array);
    if (!digits_only (id))
      return bad (w, "token id \"%s\" is not a number", id);
    if (keyslots == NULL || str (tok, "type") == NULL || ks == NULL ||
        !names_members (ks, keyslots))
      return bad (w, "token %s: bad type or keyslots", id);
  }
  return true;
}

static bool
check_digests (json_object *root, struct why *w)
{
  json_object *digests = get (root, "digests", json_type_object);
  json_object *keyslots = get (root, "keyslots", json_type_object);
  json_object *segments = get (root, "segments", json_type_object);

  if (digests == NULL || keyslots == NULL || segments == NULL)
    return bad (w, "no digests, keyslots or segments object");
  json_object_object_foreach (digests, id, dig) {
    json_object *ks = get (dig, "keyslots", json_type_array);
    json_object *ss = get (dig, "segments", json_type_array);
    if (!digits_only (id))
      return bad (w, "digest id \"%s\" is not a number", id);
    if (str (dig, "type") == NULL || ks == NULL || ss == NULL ||
        !names_members (ks, keyslots) || !names_members (ss, segments))
      return bad (w, "digest %s: bad type, keyslots or segments", id);
  }
  return true;
}

static bool
segment_has_digest (json_object *digests, const char *seg)
{
  json_object_object_foreach (digests, id, dig) {
    (void) id;
    if (array_has_string (get (dig, "segments", json_type_array), seg))
      return true;
  }
  return false;
}

static bool
check_crypt_segment (json_object *seg, const char *id, uint64_t size,
                     json_object *digests, struct why *w)
{
  const char *tweak = str (seg, "iv_tweak");
  json_object *ss = get (seg, "sector_size", json_type_int), *integ;
  uint64_t v;
  int64_t sector;

  if (tweak == NULL || str (seg, "encryption") == NULL || ss == NULL)
    return bad (w, "segment %s: no iv_tweak, encryption or sector_size", id);
  if (json_object_object_get_ex (seg, "integrity", &integ) &&
      (!json_object_is_type (integ, json_type_object) ||
       str (integ, "type") == NULL || str (integ, "journal_encryption") == NULL ||
       str (integ, "journal_integrity") == NULL))
    return bad (w, "segment %s: bad integrity object", id);
  if (!is_uint32 (ss) || (sector = json_object_get_int64 (ss)) == 0 ||
      sector % 512 != 0)
    return bad (w, "segment %s: bad sector_size", id);
  if (!luks2_u64 (tweak, &v))
    return bad (w, "segment %s: bad iv_tweak", id);
  if (size % sector != 0)
    return bad (w, "segment %s: size is not whole sectors", id);
  if (!segment_has_digest (digests, id))
    return bad (w, "segment %s has no digest", id);
  return true;
}

static bool
has_backup_flag (json_object *seg)
{
  json_object *flags = get (seg, "flags", json_type_array);
  size_t i, n = flags ? json_object_array_length (flags) : 0;

  for (i = 0; i < n; ++i) {
    json_object *f = json_object_array_get_idx (flags, i);
    if (json_object_is_type (f, json_type_string) &&
        strncmp (json_object_get_string (f), "backup-", 7) == 0)
      return true;
  }
  return false;
}

/* One segment's own fields; *offset and *size (0: dynamic) set. */
static bool
check_segment (json_object *seg, const char *id, json_object *digests,
               uint64_t *offset, uint64_t *size, struct why *w)
{
  const char *type = str (seg, "type"), *off = str (seg, "offset");
  const char *sz = str (seg, "size");
  json_object *flags;

  if (!digits_only (id))
    return bad (w, "segment id \"%s\" is not a number", id);
  if (type == NULL || off == NULL || sz == NULL)
    return bad (w, "segment %s: no type, offset or size", id);
  if (!luks2_u64 (off, offset))
    return bad (w, "segment %s: bad offset", id);
  *size = 0;
  if (strcmp (sz, "dynamic") != 0 && (!luks2_u64 (sz, size) || *size == 0))
    return bad (w, "segment %s: bad size", id);
  if (*offset % 512 != 0 || *size % 512 != 0)
    return bad (w, "segment %s: offset or size not in 512-byte units", id);
  if (json_object_object_get_ex (seg, "flags", &flags) &&
      (!json_object_is_type (flags, json_type_array) ||
       !array_of_strings (flags)))
    return bad (w, "segment %s: flags is not an array of strings", id);
  if (strcmp (type, "crypt") == 0 &&
      !check_crypt_segment (seg, id, *size, digests, w))
    return false;
  return true;
}

/* No two of n segments overlap; only the last is dynamic (UINT64_MAX). */
static bool
segments_apart (const uint64_t *off, const uint64_t *len, int n,
                struct why *w)
{
  int i, j;

  for (i = 0; i < n; ++i) {
    if (len[i] == UINT64_MAX && i != n - 1)
      return bad (w, "segment %d is dynamic but not the last", i);
    for (j = 0; j < n; ++j) {
      if (i == j)
        continue;
      if (len[j] != UINT64_MAX && off[j] > UINT64_MAX - len[j])
        return bad (w, "segment %d: offset + size overflows", j);
      if (off[i] >= off[j] &&
          (len[j] == UINT64_MAX || off[i] < off[j] + len[j]))
        return bad (w, "segments %d and %d overlap", i, j);
    }
  }
  return true;
}

/* Regular segments 0..n-1 without gaps and without overlap, only the
 * last one dynamic; backup segments (reencryption) numbered after them.
 */
static bool
check_segments (json_object *root, struct why *w)
{
  json_object *segments = get (root, "segments", json_type_object);
  json_object *digests = get (root, "digests", json_type_object);
  int count, first_backup = -1, i;
  uint64_t *off = NULL, *len = NULL;
  bool ok = false;

  if (segments == NULL || digests == NULL)
    return bad (w, "no segments or digests object");
  count = json_object_object_length (segments);
  if (count < 1)
    return bad (w, "no segment");
  json_object_object_foreach (segments, id, seg) {
    uint64_t o, s;
    if (!check_segment (seg, id, digests, &o, &s, w))
      return false;
    i = luks2_id_number (id);
    if (has_backup_flag (seg)) {
      if (first_backup < 0 || i < first_backup)
        first_backup = i;
    }
    else if (first_backup >= 0 && i >= first_backup)
      return bad (w, "segment %d follows a backup segment", i);
  }
  if (first_backup == 0)
    return bad (w, "no regular segment");
  if (first_backup >= count)
    return bad (w, "gap before backup segment %d", first_backup);
  if (first_backup < 0)
    first_backup = count;
  off = calloc (first_backup, sizeof *off);
  len = calloc (first_backup, sizeof *len);
  if (off == NULL || len == NULL) {
    bad (w, "out of memory");
    goto out;
  }
  for (i = 0; i < first_backup; ++i) {
    json_object *sg = by_number (segments, i);
    uint64_t s = 0;
    if (sg == NULL) {
      bad (w, "gap at segment %d", i);
      goto out;
    }
    luks2_u64 (str (sg, "offset"), &off[i]);
    if (strcmp (str (sg, "size"), "dynamic") != 0)
      luks2_u64 (str (sg, "size"), &s);
    len[i] = s ? s : UINT64_MAX;
  }
  if (!segments_apart (off, len, first_backup, w))
    goto out;
  for (i = first_backup; i < count; ++i)
    if (by_number (segments, i) == NULL) {
      bad (w, "gap at segment %d", i);
      goto out;
    }
  ok = true;
 out:
  free (off);
  free (len);
  return ok;
}

static bool
check_keyslots (json_object *root, struct why *w)
{
  json_object *keyslots = get (root, "keyslots", json_type_object);

  if (keyslots == NULL)
    return bad (w, "no keyslots object");
  json_object_object_foreach (keyslots, id, ks) {
    json_object *size = get (ks, "key_size", json_type_int);
    if (!digits_only (id))
      return bad (w, "key slot id \"%s\" is not a number", id);
    if (str (ks, "type") == NULL || size == NULL || !is_uint32 (size))
      return bad (w, "key slot %s: bad type or key_size", id);
  }
  return true;
}

static bool
valid_header_size (uint64_t size)
{
  uint64_t s;

  for (s = 0x4000; s <= 0x400000; s *= 2)
    if (size == s)
      return true;
  return false;
}

/* The smallest offset of a segment (0 if none has one). */
static uint64_t
first_segment_offset (json_object *root)
{
  json_object *segments = get (root, "segments", json_type_object);
  uint64_t min = 0, o;
  bool any = false;

  json_object_object_foreach (segments, id, seg) {
    (void) id;
    if (str (seg, "offset") && luks2_u64 (str (seg, "offset"), &o) &&
        (!any || o < min)) {
      min = o;
      any = true;
    }
  }
  return min;
}

static bool
check_config (json_object *root, struct luks2_meta *m, struct why *w)
{
  json_object *config = get (root, "config", json_type_object), *flags;
  const char *js = str (config, "json_size"), *ks = str (config, "keyslots_size");
  uint64_t seg;

  if (config == NULL || js == NULL || !luks2_u64 (js, &m->json_size))
    return bad (w, "config: bad json_size");
  if (ks == NULL || !luks2_u64 (ks, &m->keyslots_size))
    return bad (w, "config: bad keyslots_size");
  if (m->json_size > UINT64_MAX - BIN_LEN ||
      !valid_header_size (m->json_size + BIN_LEN))
    return bad (w, "config: header size %" PRIu64 " is not a LUKS2 size "
                "(16 KiB to 4 MiB, a power of 2)", m->json_size + BIN_LEN);
  m->metadata_size = m->json_size + BIN_LEN;
  if (m->keyslots_size % 4096 != 0 || m->keyslots_size > MAX_KEYSLOTS_SIZE)
    return bad (w, "config: keyslots_size %" PRIu64 " is not a multiple of "
                "4096 up to 128 MiB", m->keyslots_size);
  seg = first_segment_offset (root);
  if (seg && (seg < m->keyslots_size ||
              seg - m->keyslots_size < 2 * m->metadata_size))
    return bad (w, "config: keyslots_size reaches into the data");
  if (json_object_object_get_ex (config, "flags", &flags) &&
      (!json_object_is_type (flags, json_type_array) ||
       !array_of_strings (flags)))
    return bad (w, "config: flags is not an array of strings");
  return true;
}

/* Every key slot's area inside the key slots area [start, end), after
 * both header copies, none overlapping another.
 */
static bool
areas_apart (const uint64_t *off, const uint64_t *len, int n,
             uint64_t start, uint64_t end, struct why *w)
{
  int i, j;

  for (i = 0; i < n; ++i) {
    if (off[i] < start)
      return bad (w, "a key slot area at %" PRIu64 " is inside the header",
                  off[i]);
    if (len[i] == 0 || off[i] > UINT64_MAX - len[i])
      return bad (w, "a key slot area at %" PRIu64 " has a bad size", off[i]);
    if (off[i] + len[i] > end)
      return bad (w, "a key slot area at %" PRIu64 " ends beyond the key "
                  "slots area (%" PRIu64 ")", off[i], end);
    for (j = 0; j < n; ++j) {
      if (j == i)
        continue;
      if (off[j] > UINT64_MAX - len[j])
        return bad (w, "a key slot area at %" PRIu64 " has a bad size",
                    off[j]);
      if (off[i] >= off[j] && off[i] < off[j] + len[j])
        return bad (w, "key slot areas at %" PRIu64 " and %" PRIu64
                    " overlap", off[i], off[j]);
    }
  }
  return true;
}

static bool
check_areas (json_object *root, const struct luks2_meta *m, struct why *w)
{
  json_object *keyslots = get (root, "keyslots", json_type_object);
  int n = json_object_object_length (keyslots), k = 0;
  uint64_t *off = calloc (n ? n : 1, sizeof *off);
  uint64_t *len = calloc (n ? n : 1, sizeof *len);
  bool ok = false;

  if (off == NULL || len == NULL) {
    bad (w, "out of memory");
    goto out;
  }
  json_object_object_foreach (keyslots, id, ks) {
    json_object *area = get (ks, "area", json_type_object);
    const char *o = str (area, "offset"), *s = str (area, "size");
    if (area == NULL || str (area, "type") == NULL || o == NULL ||
        s == NULL || !luks2_u64 (o, &off[k]) || !luks2_u64 (s, &len[k])) {
      bad (w, "key slot %s: bad area", id);
      goto out;
    }
    k++;
  }
  ok = areas_apart (off, len, k, 2 * m->metadata_size,
                    2 * m->metadata_size + m->keyslots_size, w);
 out:
  free (off);
  free (len);
  return ok;
}

static bool
check_json_size (json_object *root, const struct luks2_meta *m,
                 uint64_t area_len, struct why *w)
{
  const char *text;

  if (m->json_size != area_len)
    return bad (w, "json_size %" PRIu64 " does not match the header's JSON "
                "area (%" PRIu64 ")", m->json_size, area_len);
  text = json_object_to_json_string_ext (root, JSON_C_TO_STRING_PLAIN |
                                         JSON_C_TO_STRING_NOSLASHESCAPE);
  if (text == NULL || strlen (text) > area_len)
    return bad (w, "the JSON does not fit its area");
  return true;
}

/* A luks2 key slot's own members (cryptsetup's luks2_keyslot_validate). */
static bool
check_luks2_slot (json_object *ks, const char *id, struct why *w)
{
  json_object *kdf = get (ks, "kdf", json_type_object);
  json_object *af = get (ks, "af", json_type_object);
  json_object *area = get (ks, "area", json_type_object);
  const char *type;

  if (kdf == NULL || af == NULL || area == NULL ||
      (type = str (kdf, "type")) == NULL)
    return bad (w, "key slot %s: no kdf, af or area", id);
  if (strcmp (type, "pbkdf2") == 0 &&
      (str (kdf, "hash") == NULL || str (kdf, "salt") == NULL ||
       get (kdf, "iterations", json_type_int) == NULL))
    return bad (w, "key slot %s: bad pbkdf2 parameters", id);
  if ((strcmp (type, "argon2i") == 0 || strcmp (type, "argon2id") == 0) &&
      (str (kdf, "salt") == NULL || get (kdf, "time", json_type_int) == NULL ||
       get (kdf, "memory", json_type_int) == NULL ||
       get (kdf, "cpus", json_type_int) == NULL))
    return bad (w, "key slot %s: bad argon2 parameters", id);
  if ((type = str (af, "type")) == NULL || strcmp (type, "luks1") != 0 ||
      str (af, "hash") == NULL || get (af, "stripes", json_type_int) == NULL)
    return bad (w, "key slot %s: bad af", id);
  if ((type = str (area, "type")) == NULL || strcmp (type, "raw") != 0 ||
      str (area, "encryption") == NULL ||
      get (area, "key_size", json_type_int) == NULL ||
      str (area, "offset") == NULL || str (area, "size") == NULL)
    return bad (w, "key slot %s: bad area", id);
  return true;
}

/* Digests whose keyslots name the slot numbered n. */
static int
digests_of_slot (json_object *root, int n)
{
  json_object *digests = get (root, "digests", json_type_object);
  char name[16];
  int count = 0;

  snprintf (name, sizeof name, "%d", n);
  json_object_object_foreach (digests, id, dig) {
    (void) id;
    if (array_has_string (get (dig, "keyslots", json_type_array), name))
      count++;
  }
  return count;
}

static bool
check_slot_types (json_object *root, struct why *w)
{
  json_object *keyslots = get (root, "keyslots", json_type_object);
  json_object *req = get (get (get (root, "config", json_type_object),
                               "requirements", json_type_object),
                          "mandatory", json_type_array);
  size_t i, n = req ? json_object_array_length (req) : 0, reenc_req = 0;
  int reenc = 0;

  for (i = 0; i < n; ++i)
    if (reencrypt_flag (json_object_get_string (json_object_array_get_idx (req, i))))
      reenc_req++;
  json_object_object_foreach (keyslots, id, ks) {
    const char *type = str (ks, "type");
    if (strcmp (type, "luks2") == 0) {
      if (!check_luks2_slot (ks, id, w))
        return false;
      if (digests_of_slot (root, luks2_id_number (id)) != 1)
        return bad (w, "key slot %s is not bound to exactly one digest", id);
    }
    else if (strcmp (type, "reencrypt") == 0)
      reenc++;
  }
  if (reenc_req && reenc == 0)
    return bad (w, "a reencryption without its key slot");
  if (reenc && !reenc_req)
    return bad (w, "a reencrypt key slot without the requirement");
  if (reenc > 1)
    return bad (w, "more than one reencrypt key slot");
  return true;
}

bool
luks2_meta_check (json_object *root, uint64_t area_len,
                  struct luks2_meta *m, char *why, size_t why_len)
{
  struct why w = { .buf = why, .len = why_len };

  memset (m, 0, sizeof *m);
  if (!json_object_is_type (root, json_type_object))
    return bad (&w, "the JSON is not an object");
  return check_requirements (root, &w) &&
    check_tokens (root, &w) &&
    check_digests (root, &w) &&
    check_segments (root, &w) &&
    check_keyslots (root, &w) &&
    check_config (root, m, &w) &&
    check_areas (root, m, &w) &&
    check_json_size (root, m, area_len, &w) &&
    check_slot_types (root, &w);
}

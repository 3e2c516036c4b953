/* The rules of LUKS2 JSON metadata, as cryptsetup checks them when it
 * reads a header copy.  See luks2-meta.c.
 */

#ifndef CRYPTINLINE_LUKS2_META_H
#define CRYPTINLINE_LUKS2_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json.h>

/* What the checked metadata says about the header's layout. */
struct luks2_meta {
  uint64_t json_size;           /* config json_size */
  uint64_t metadata_size;       /* one copy: 4096 + json_size */
  uint64_t keyslots_size;       /* config keyslots_size */
};

/* True if root, the JSON of a copy whose JSON area is area_len bytes,
 * follows every rule; else false with a short reason in why.
 */
extern bool luks2_meta_check (json_object *root, uint64_t area_len,
                              struct luks2_meta *m, char *why, size_t why_len);

/* A LUKS2 id ("0", "31") as the number cryptsetup makes of it (atoi). */
extern int luks2_id_number (const char *id);

/* A LUKS2 number kept as a string: decimal digits only, 64 bits. */
extern bool luks2_u64 (const char *s, uint64_t *v);

#endif /* CRYPTINLINE_LUKS2_META_H */

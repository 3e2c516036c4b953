/* Zone geometry carried in the export description of the zbd plugin.
 *
 * The plugin describes its zones as space-separated key=value words in
 * NBD_INFO_DESCRIPTION, for example:
 *
 *   zoned=host-managed zone-size=67108864 zone-capacity=67108864 zones=16
 *   conventional=0-1 max-open=0 max-active=0 block-size=512
 *
 * and, only while the device has such zones, readonly=RANGES and
 * offline=RANGES (a device can turn zones read-only or offline at any
 * time; a client reads them again from each new connection).  An NBD
 * string is at most 4096 bytes: when the two lists would not fit, they
 * hold the ranges that do and states-omitted=N counts the zones left
 * out.
 *
 * Sizes are bytes, zone numbers count from 0, ranges are inclusive and
 * comma-separated ("none" when there is none), 0 means "no limit".
 * Unknown keys are ignored so the format can grow.  This parser is
 * shared by nbdzone and the tests.
 */
#ifndef ZONED_GEOMETRY_H
#define ZONED_GEOMETRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct zoned_range { uint64_t first, last; };

struct zoned_geometry {
  char model[32];               /* host-managed, host-aware */
  uint64_t zone_size;
  uint64_t zone_capacity;
  uint64_t nr_zones;
  uint64_t max_open;
  uint64_t max_active;
  uint64_t block_size;
  struct zoned_range *conventional;  /* malloc'd */
  size_t nr_conventional_ranges;
  struct zoned_range *readonly;      /* malloc'd; zones gone read-only */
  size_t nr_readonly_ranges;
  struct zoned_range *offline;       /* malloc'd; zones gone offline */
  size_t nr_offline_ranges;
  /* Read-only or offline zones left out of the two lists above, which
   * must fit in the 4096-byte description (states-omitted=N).
   */
  uint64_t states_omitted;
  /* Who the disk is and which key serves it, for a client that
   * reconnects ("" when the server says nothing): disk-id= from the
   * zbd plugin, key-check= from the cryptinline filter.
   */
  char disk_id[128];
  char key_check[72];
};

/* Parse DESCRIPTION into *G.  Returns 0, or -1 with a one-line reason
 * in ERR (size ERRLEN).  A description without "zoned=" is not zoned.
 */
extern int zoned_geometry_parse (const char *description,
                                 struct zoned_geometry *g,
                                 char *err, size_t errlen);
extern void zoned_geometry_free (struct zoned_geometry *g);
extern bool zoned_geometry_is_conventional (const struct zoned_geometry *g,
                                            uint64_t zone);
extern bool zoned_geometry_is_readonly (const struct zoned_geometry *g,
                                        uint64_t zone);
extern bool zoned_geometry_is_offline (const struct zoned_geometry *g,
                                       uint64_t zone);

/* Format zone numbers of the array IS_CONV[N] as ranges ("0-1,7" or
 * "none") into BUF.  Returns 0, or -1 if BUF is too small.
 */
extern int zoned_format_ranges (const bool *is_conv, uint64_t n,
                                char *buf, size_t buflen);
/* The same, but a BUF too small (at least 5 bytes) keeps the ranges
 * that fit, whole, and returns the number of zones in the ranges left
 * out (0 when all fit).
 */
extern uint64_t zoned_format_ranges_capped (const bool *is, uint64_t n,
                                            char *buf, size_t buflen);

#endif /* ZONED_GEOMETRY_H */

/* Opening a LUKS1 or LUKS2 header made by cryptsetup (read-only): unlock
 * a key slot with a passphrase and take the volume key and the data
 * layout.  See luks.c for how it works.
 */

#ifndef CRYPTINLINE_LUKS_H
#define CRYPTINLINE_LUKS_H

#include <stddef.h>
#include <stdint.h>

/* Longest message luks_open writes into its why buffer. */
#define LUKS_WHY_LEN 512

/* cryptsetup's default --keyfile-size limit (8 MiB): a key file for a
 * key slot is read whole, up to this size.
 */
#define LUKS_KEYFILE_MAX (8 * 1024 * 1024)

/* Why a header was not opened.  The differential fuzz harness holds
 * the filter to cryptsetup with it: where cryptsetup opens a header the
 * filter may refuse it only as unsupported or stricter.
 */
enum luks_refusal {
  LUKS_OPENED = 0,
  LUKS_DAMAGED,         /* cryptsetup refuses it too (or cannot read it) */
  LUKS_UNSUPPORTED,     /* valid, but not servable as dm-crypt would */
  LUKS_STRICTER,        /* cryptsetup opens it; refused on purpose (the
                         * man page lists these) */
  LUKS_WRONG_KEY,       /* no key slot opened with this passphrase */
};

/* What an opened header gives the filter. */
struct luks_volume {
  unsigned char *key;           /* volume key, libgcrypt secure memory */
  size_t key_len;               /* 32 (AES-128-XTS) or 64 (AES-256-XTS) */
  uint32_t sector_size;         /* encryption sector, 512 .. 4096 */
  uint64_t iv_offset;           /* dm-crypt iv_offset, 512-byte units */
  unsigned version;             /* 1 or 2 */
  int keyslot;                  /* the key slot that opened */
  const char *copy;             /* LUKS2: "primary" or "secondary" */
  char note[LUKS_WHY_LEN];      /* a damaged copy that was passed over, or "" */
  enum luks_refusal refusal;    /* after luks_open: why it failed */
};

/* Read the header in the file (or block device) path, unlock the first
 * key slot that the passphrase opens, and fill *vol.  Each usable slot
 * is tried once.  The passphrase is only read; the caller wipes it.
 * Returns 0, or -1 with a one-line reason in why (which never holds
 * secret bytes).  On success vol->key is the caller's to wipe and free
 * (luks_volume_wipe).
 */
extern int luks_open (const char *path,
                      const void *passphrase, size_t passphrase_len,
                      struct luks_volume *vol, char why[LUKS_WHY_LEN]);

/* Wipe and free the volume key. */
extern void luks_volume_wipe (struct luks_volume *vol);

#endif /* CRYPTINLINE_LUKS_H */

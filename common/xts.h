/* AES-XTS in the on-disk format of dm-crypt "aes-xts-plain64".
 *
 * Shared by the cryptinline filter, its known-answer tests and the
 * benchmark's raw cipher speed program, so that all of them measure and
 * check the very same code.
 *
 * Format: the disk is cut into crypt sectors of sector_size bytes; each
 * sector is one XTS data unit whose tweak (IV) is the little-endian 64-bit
 * sector number padded with zeros to 16 bytes (plain64).  As in dm-crypt,
 * the sector number is the byte offset in 512-byte units plus iv_offset
 * (also in 512-byte units); with iv_large_sectors that sum is divided by
 * sector_size / 512, so it counts crypt sectors.  Ciphertext sits at the
 * same byte offset as plaintext.
 */

#ifndef ZONED_XTS_H
#define ZONED_XTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <gcrypt.h>

#define XTS_KEY_BYTES_128 32    /* AES-128-XTS: two 16-byte keys */
#define XTS_KEY_BYTES_256 64    /* AES-256-XTS: two 32-byte keys */
#define XTS_IV_BYTES 16

struct xts_format {
  uint32_t sector_size;         /* 512, 1024, 2048 or 4096 */
  bool iv_large_sectors;        /* IV counts crypt sectors, not 512 B units */
  uint64_t iv_offset;           /* dm-crypt iv_offset, in 512-byte units */
};

/* Initialise libgcrypt once per process, before any other use: checks the
 * version, makes libgcrypt's secure memory (key schedules) come from
 * keymem (locked, out of core dumps, see keymem.h), silences the "using
 * insecure memory" warning that libgcrypt prints when it may not lock
 * memory (unprivileged users), and finishes initialisation.  Returns NULL
 * or a one-line reason.
 */
extern const char *xts_library_init (void);

/* True for the sector sizes dm-crypt accepts. */
extern bool xts_valid_sector_size (uint32_t sector_size);

/* Open an AES-XTS handle (in secure memory) and set the key once.
 * key_len must be XTS_KEY_BYTES_128 or XTS_KEY_BYTES_256.
 */
extern gcry_error_t xts_open (gcry_cipher_hd_t *hd,
                              const void *key, size_t key_len);

/* The IV sector number of the crypt sector starting at byte offset. */
extern uint64_t xts_iv_sector (const struct xts_format *fmt, uint64_t offset);

/* Encrypt or decrypt len bytes (a whole number of crypt sectors) that sit
 * at byte offset of the disk (a crypt sector boundary), one libgcrypt call
 * per sector.  out and in may be the same buffer (in place) or must not
 * overlap.
 */
extern gcry_error_t xts_encrypt (gcry_cipher_hd_t hd,
                                 const struct xts_format *fmt,
                                 void *out, const void *in,
                                 size_t len, uint64_t offset);
extern gcry_error_t xts_decrypt (gcry_cipher_hd_t hd,
                                 const struct xts_format *fmt,
                                 void *out, const void *in,
                                 size_t len, uint64_t offset);

/* cryptsetup's "plain" passphrase hashing with --hash sha256: round i
 * hashes i letters 'A' followed by the passphrase; the digests are
 * concatenated and truncated to key_len bytes.
 */
extern gcry_error_t xts_plain_sha256_key (const void *passphrase,
                                          size_t passphrase_len,
                                          void *key, size_t key_len);

#endif /* ZONED_XTS_H */

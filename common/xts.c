/* AES-XTS, dm-crypt aes-xts-plain64 format, on libgcrypt.  See xts.h. */

#include <config.h>

#include <string.h>

#include "keymem.h"
#include "xts.h"

const char *
xts_library_init (void)
{
  if (gcry_control (GCRYCTL_INITIALIZATION_FINISHED_P))
    return NULL;                /* someone in this process did it already */
  if (!gcry_check_version (GCRYPT_VERSION))
    return "libgcrypt is older than the version this was built against";
  /* libgcrypt's own secure memory pool is locked once, when it is made,
   * and is part of core dumps: after nbdkit forks, key schedules in it
   * would be swappable and dumpable.  Keep them in keymem instead, which
   * the serving process locks again after the fork.
   */
  keymem_use_for_libgcrypt ();
  /* Unprivileged processes may not mlock; keymem then keeps secrets
   * unlocked (still out of core dumps), and libgcrypt must not print
   * its "using insecure memory" warning at every start.
   */
  gcry_control (GCRYCTL_DISABLE_SECMEM_WARN);
  gcry_control (GCRYCTL_INITIALIZATION_FINISHED, 0);
  return NULL;
}

bool
xts_valid_sector_size (uint32_t sector_size)
{
  return sector_size == 512 || sector_size == 1024 ||
    sector_size == 2048 || sector_size == 4096;
}

gcry_error_t
xts_open (gcry_cipher_hd_t *hd, const void *key, size_t key_len)
{
  int algo;
  gcry_error_t err;

  switch (key_len) {
  case XTS_KEY_BYTES_128: algo = GCRY_CIPHER_AES128; break;
  case XTS_KEY_BYTES_256: algo = GCRY_CIPHER_AES256; break;
  default: return gcry_error (GPG_ERR_INV_KEYLEN);
  }
  err = gcry_cipher_open (hd, algo, GCRY_CIPHER_MODE_XTS, GCRY_CIPHER_SECURE);
  if (err)
    return err;
  err = gcry_cipher_setkey (*hd, key, key_len);
  if (err) {
    gcry_cipher_close (*hd);
    *hd = NULL;
  }
  return err;
}

uint64_t
xts_iv_sector (const struct xts_format *fmt, uint64_t offset)
{
  /* dm-crypt: the 512-byte sector number plus iv_offset (always in
   * 512-byte units), modulo 2^64; with iv_large_sectors that sum is then
   * shifted down to crypt-sector units.
   */
  uint64_t sector = offset / 512 + fmt->iv_offset;

  if (fmt->iv_large_sectors && fmt->sector_size > 512)
    sector /= fmt->sector_size / 512;
  return sector;
}

static void
plain64_iv (unsigned char iv[XTS_IV_BYTES], uint64_t sector)
{
  size_t i;

  for (i = 0; i < 8; ++i)
    iv[i] = (sector >> (8 * i)) & 0xff;
  memset (iv + 8, 0, XTS_IV_BYTES - 8);
}

static gcry_error_t
xts_crypt (gcry_cipher_hd_t hd, const struct xts_format *fmt, bool encrypt,
           void *out, const void *in, size_t len, uint64_t offset)
{
  const uint32_t ss = fmt->sector_size;
  unsigned char *o = out;
  const unsigned char *i = in;
  bool in_place = out == in;
  unsigned char iv[XTS_IV_BYTES];
  gcry_error_t err;
  size_t done;

  if (len % ss != 0 || offset % ss != 0)
    return gcry_error (GPG_ERR_INV_LENGTH);

  for (done = 0; done < len; done += ss) {
    plain64_iv (iv, xts_iv_sector (fmt, offset + done));
    err = gcry_cipher_setiv (hd, iv, sizeof iv);
    if (err)
      return err;
    if (encrypt)
      err = gcry_cipher_encrypt (hd, o + done, ss,
                                 in_place ? NULL : i + done, in_place ? 0 : ss);
    else
      err = gcry_cipher_decrypt (hd, o + done, ss,
                                 in_place ? NULL : i + done, in_place ? 0 : ss);
    if (err)
      return err;
  }
  return 0;
}

gcry_error_t
xts_encrypt (gcry_cipher_hd_t hd, const struct xts_format *fmt,
             void *out, const void *in, size_t len, uint64_t offset)
{
  return xts_crypt (hd, fmt, true, out, in, len, offset);
}

gcry_error_t
xts_decrypt (gcry_cipher_hd_t hd, const struct xts_format *fmt,
             void *out, const void *in, size_t len, uint64_t offset)
{
  return xts_crypt (hd, fmt, false, out, in, len, offset);
}

gcry_error_t
xts_plain_sha256_key (const void *passphrase, size_t passphrase_len,
                      void *key, size_t key_len)
{
  const size_t digest_len = gcry_md_get_algo_dlen (GCRY_MD_SHA256);
  unsigned char *k = key;
  gcry_md_hd_t md;
  gcry_error_t err;
  size_t round, a, n;

  err = gcry_md_open (&md, GCRY_MD_SHA256, GCRY_MD_FLAG_SECURE);
  if (err)
    return err;
  for (round = 0; key_len > 0; ++round) {
    gcry_md_reset (md);
    for (a = 0; a < round; ++a)
      gcry_md_putc (md, 'A');
    gcry_md_write (md, passphrase, passphrase_len);
    n = key_len < digest_len ? key_len : digest_len;
    memcpy (k, gcry_md_read (md, GCRY_MD_SHA256), n);
    k += n;
    key_len -= n;
  }
  gcry_md_close (md);           /* wipes the digest state */
  return 0;
}

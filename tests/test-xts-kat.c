/* Known-answer tests of the AES-XTS layer (common/xts.c) that the filter
 * uses, with the IEEE 1619-2007 XTS-AES vectors, 128- and 256-bit keys.
 * The data unit sequence number of a vector is the plain64 IV sector, so
 * each vector is also run through the filter's offset -> IV arithmetic.
 */

#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xts.h"

struct vector {
  const char *name;
  const char *key;              /* key1 || key2, hex */
  uint64_t dusn;                /* data unit sequence number */
  const char *pt;               /* hex, or NULL: bytes 0..255 twice */
  const char *ct;
};

static const struct vector vectors[] = {
  { "IEEE 1619 vector 1 (AES-128)",
    "00000000000000000000000000000000" "00000000000000000000000000000000",
    0,
    "00000000000000000000000000000000" "00000000000000000000000000000000",
    "917cf69ebd68b2ec9b9fe9a3eadda692" "cd43d2f59598ed858c02c2652fbf922e" },
  { "IEEE 1619 vector 2 (AES-128)",
    "11111111111111111111111111111111" "22222222222222222222222222222222",
    0x3333333333,
    "44444444444444444444444444444444" "44444444444444444444444444444444",
    "c454185e6a16936e39334038acef838b" "fb186fff7480adc4289382ecd6d394f0" },
  { "IEEE 1619 vector 4 (AES-128, 512 bytes)",
    "27182818284590452353602874713526" "31415926535897932384626433832795",
    0, NULL,
    "27a7479befa1d476489f308cd4cfa6e2a96e4bbe3208ff25287dd3819616e89c"
    "c78cf7f5e543445f8333d8fa7f56000005279fa5d8b5e4ad40e736ddb4d35412"
    "328063fd2aab53e5ea1e0a9f332500a5df9487d07a5c92cc512c8866c7e860ce"
    "93fdf166a24912b422976146ae20ce846bb7dc9ba94a767aaef20c0d61ad0265"
    "5ea92dc4c4e41a8952c651d33174be51a10c421110e6d81588ede82103a252d8"
    "a750e8768defffed9122810aaeb99f9172af82b604dc4b8e51bcb08235a6f434"
    "1332e4ca60482a4ba1a03b3e65008fc5da76b70bf1690db4eae29c5f1badd03c"
    "5ccf2a55d705ddcd86d449511ceb7ec30bf12b1fa35b913f9f747a8afd1b130e"
    "94bff94effd01a91735ca1726acd0b197c4e5b03393697e126826fb6bbde8ecc"
    "1e08298516e2c9ed03ff3c1b7860f6de76d4cecd94c8119855ef5297ca67e9f3"
    "e7ff72b1e99785ca0a7e7720c5b36dc6d72cac9574c8cbbc2f801e23e56fd344"
    "b07f22154beba0f08ce8891e643ed995c94d9a69c9f1b5f499027a78572aeebd"
    "74d20cc39881c213ee770b1010e4bea718846977ae119f7a023ab58cca0ad752"
    "afe656bb3c17256a9f6e9bf19fdd5a38fc82bbe872c5539edb609ef4f79c203e"
    "bb140f2e583cb2ad15b4aa5b655016a8449277dbd477ef2c8d6c017db738b18d"
    "eb4a427d1923ce3ff262735779a418f20a282df920147beabe421ee5319d0568" },
  { "IEEE 1619 vector 10 (AES-256, 512 bytes)",
    "2718281828459045235360287471352662497757247093699959574966967627"
    "3141592653589793238462643383279502884197169399375105820974944592",
    0xff, NULL,
    "1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b"
    "5d31e276f8fe4a8d66b317f9ac683f44680a86ac35adfc3345befecb4bb188fd"
    "5776926c49a3095eb108fd1098baec70aaa66999a72a82f27d848b21d4a741b0"
    "c5cd4d5fff9dac89aeba122961d03a757123e9870f8acf1000020887891429ca"
    "2a3e7a7d7df7b10355165c8b9a6d0a7de8b062c4500dc4cd120c0f7418dae3d0"
    "b5781c34803fa75421c790dfe1de1834f280d7667b327f6c8cd7557e12ac3a0f"
    "93ec05c52e0493ef31a12d3d9260f79a289d6a379bc70c50841473d1a8cc81ec"
    "583e9645e07b8d9670655ba5bbcfecc6dc3966380ad8fecb17b6ba02469a020a"
    "84e18e8f84252070c13e9f1f289be54fbc481457778f616015e1327a02b140f1"
    "505eb309326d68378f8374595c849d84f4c333ec4423885143cb47bd71c5edae"
    "9be69a2ffeceb1bec9de244fbe15992b11b77c040f12bd8f6a975a44a0f90c29"
    "a9abc3d4d893927284c58754cce294529f8614dcd2aba991925fedc4ae74ffac"
    "6e333b93eb4aff0479da9a410e4450e0dd7ae4c6e2910900575da401fc07059f"
    "645e8b7e9bfdef33943054ff84011493c27b3429eaedb4ed5376441a77ed4385"
    "1ad77f16f541dfd269d50d6a5f14fb0aab1cbb4c1550be97f7ab4066193c4caa"
    "773dad38014bd2092fa755c824bb5e54c4f36ffda9fcea70b9c6e693e148c151" },
};

static int failures;

static size_t
unhex (const char *hex, unsigned char *out)
{
  size_t i, n = strlen (hex) / 2;

  for (i = 0; i < n; ++i)
    sscanf (hex + 2 * i, "%2hhx", &out[i]);
  return n;
}

static void
check (bool ok, const char *name, const char *what)
{
  printf ("%s: %s: %s\n", ok ? "PASS" : "FAIL", name, what);
  if (!ok)
    failures++;
}

/* Run one vector through xts_encrypt/xts_decrypt in the format given;
 * offset is where on the disk the data unit sits.
 */
static void
run (const struct vector *v, const struct xts_format *fmt, uint64_t offset,
     const char *how)
{
  unsigned char key[64], pt[512], ct[512], out[512];
  size_t key_len, len;
  gcry_cipher_hd_t hd;
  char what[200];

  key_len = unhex (v->key, key);
  if (v->pt)
    len = unhex (v->pt, pt);
  else
    for (len = 0; len < 512; ++len)
      pt[len] = len & 0xff;
  if (unhex (v->ct, ct) != len || len % fmt->sector_size != 0) {
    check (false, v->name, "vector lengths");
    return;
  }
  if (xts_open (&hd, key, key_len)) {
    check (false, v->name, "xts_open");
    return;
  }

  snprintf (what, sizeof what, "encrypt (%s)", how);
  check (xts_encrypt (hd, fmt, out, pt, len, offset) == 0 &&
         memcmp (out, ct, len) == 0, v->name, what);

  snprintf (what, sizeof what, "decrypt (%s)", how);
  check (xts_decrypt (hd, fmt, out, ct, len, offset) == 0 &&
         memcmp (out, pt, len) == 0, v->name, what);

  snprintf (what, sizeof what, "decrypt in place (%s)", how);
  memcpy (out, ct, len);
  check (xts_decrypt (hd, fmt, out, out, len, offset) == 0 &&
         memcmp (out, pt, len) == 0, v->name, what);

  /* A wrong sector number must not give the vector's ciphertext. */
  snprintf (what, sizeof what, "other sector differs (%s)", how);
  check (xts_encrypt (hd, fmt, out, pt, len, offset + 512) == 0 &&
         memcmp (out, ct, len) != 0, v->name, what);

  gcry_cipher_close (hd);
}

int
main (void)
{
  const char *why = xts_library_init ();
  size_t i;

  if (why) {
    fprintf (stderr, "test-xts-kat: %s\n", why);
    return 1;
  }
  for (i = 0; i < sizeof vectors / sizeof vectors[0]; ++i) {
    const struct vector *v = &vectors[i];
    size_t len = v->pt ? strlen (v->pt) / 2 : 512;
    /* The data unit is one crypt sector; the IV sector comes from
     * crypt-iv-offset, at offset 0...
     */
    struct xts_format by_offset = { len, false, v->dusn };
    run (v, &by_offset, 0, "IV from iv_offset");
    /* ...or from the position on the disk, in 512-byte units. */
    if (len == 512) {
      struct xts_format by_position = { 512, false, 0 };
      run (v, &by_position, v->dusn * 512, "IV from the sector position");
    }
  }

  /* plain64 IV arithmetic of dm-crypt for 4096-byte sectors. */
  {
    static unsigned char data[8192], a[8192], b[4096];
    struct xts_format dm = { 4096, false, 0 }, lone = { 4096, false, 8 };
    struct xts_format large = { 4096, true, 0 }, large_lone = { 4096, true, 8 };
    struct xts_format iv1 = { 4096, false, 1 };
    struct xts_format large_odd = { 4096, true, 7 };
    unsigned char key[64];
    gcry_cipher_hd_t hd;

    for (i = 0; i < sizeof data; ++i) data[i] = i * 7;
    for (i = 0; i < sizeof key; ++i) key[i] = i + 1;
    if (xts_open (&hd, key, sizeof key) != 0)
      check (false, "4096-byte sectors", "xts_open");
    else {
      check (xts_encrypt (hd, &dm, a, data, 8192, 0) == 0 &&
             xts_encrypt (hd, &lone, b, data + 4096, 4096, 0) == 0 &&
             memcmp (a + 4096, b, 4096) == 0,
             "4096-byte sectors", "IV steps by 8 per sector (plain64)");
      /* iv_large_sectors: sector 1 has IV 1, like a lone sector at
       * position 0 with iv_offset 8 (512-byte units, shifted) or, without
       * large sectors, iv_offset 1.
       */
      check (xts_encrypt (hd, &large, a, data, 8192, 0) == 0 &&
             xts_encrypt (hd, &large_lone, b, data + 4096, 4096, 0) == 0 &&
             memcmp (a + 4096, b, 4096) == 0 &&
             xts_encrypt (hd, &iv1, b, data + 4096, 4096, 0) == 0 &&
             memcmp (a + 4096, b, 4096) == 0,
             "4096-byte sectors", "iv_large_sectors: IV steps by 1");
      /* dm-crypt adds iv_offset before the shift: (8 + 7) >> 3 = 1. */
      check (xts_iv_sector (&large_odd, 4096) == 1 &&
             xts_iv_sector (&large_odd, 8192) == 2 &&
             xts_iv_sector (&large_odd, 0) == 0,
             "4096-byte sectors", "iv_offset is added before the shift");
      check (xts_encrypt (hd, &dm, a, data, 4096, 512) != 0,
             "4096-byte sectors", "misaligned offset refused");
      gcry_cipher_close (hd);
    }
  }

  printf ("%s\n", failures ? "FAILED" : "all known-answer tests passed");
  return failures ? 1 : 0;
}

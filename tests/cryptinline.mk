# Tests of the cryptinline filter.

# Known-answer tests of the cipher layer (IEEE 1619-2007 XTS-AES).
TESTS += test-xts-kat
check_PROGRAMS += test-xts-kat
test_xts_kat_SOURCES = test-xts-kat.c
test_xts_kat_CFLAGS = $(TEST_CFLAGS) $(GCRYPT_CFLAGS)
test_xts_kat_LDADD = $(top_builddir)/common/libxts.la $(GCRYPT_LIBS)

# Unit test of the key memory (locked, out of core dumps, across fork).
TESTS += test-keymem
check_PROGRAMS += test-keymem
test_keymem_SOURCES = test-keymem.c
test_keymem_CFLAGS = $(TEST_CFLAGS) $(GCRYPT_CFLAGS)
test_keymem_LDADD = $(top_builddir)/common/libxts.la $(GCRYPT_LIBS)

# keymem at its limits: requests too large to size, a small lock limit.
TESTS += test-keymem-limits
check_PROGRAMS += test-keymem-limits
test_keymem_limits_SOURCES = test-keymem-limits.c
test_keymem_limits_CFLAGS = $(TEST_CFLAGS) $(GCRYPT_CFLAGS)
test_keymem_limits_LDADD = $(top_builddir)/common/libxts.la $(GCRYPT_LIBS)

# Shell tests.
CRYPTINLINE_SH_TESTS = \
	test-cryptinline-roundtrip.sh \
	test-cryptinline-interop.sh \
	test-cryptinline-startup.sh \
	test-cryptinline-zero.sh \
	test-cryptinline-zero-fua.sh \
	test-cryptinline-order.sh \
	test-cryptinline-concurrency.sh \
	test-cryptinline-tls.sh \
	test-cryptinline-key-dir.sh \
	test-cryptinline-key-wipe.sh \
	test-cryptinline-keymem.sh \
	test-cryptinline-extents.sh \
	test-cryptinline-handles.sh \
	test-cryptinline-luks.sh \
	test-cryptinline-header-dir.sh \
	test-cryptinline-luks-refuse.sh \
	test-cryptinline-luks-validate.sh \
	$(NULL)
TESTS += $(CRYPTINLINE_SH_TESTS)
EXTRA_DIST += \
	$(CRYPTINLINE_SH_TESTS) \
	cryptinline-lib.sh \
	cryptinline_check.py \
	cryptinline-key-dir.py \
	cryptinline_order.py \
	luks-lib.sh \
	luks_header.py \
	$(NULL)

# Many connections and requests in flight (libnbd aio), data verified.
check_PROGRAMS += test-cryptinline-aio
test_cryptinline_aio_SOURCES = test-cryptinline-aio.c
test_cryptinline_aio_CFLAGS = $(TEST_CFLAGS) $(PTHREAD_CFLAGS)
test_cryptinline_aio_LDADD = $(TEST_LIBS)

# make check-tsan: the concurrency and ordering tests against a
# ThreadSanitizer build of the filter; any data race fails the run.
CRYPTINLINE_TSAN_TESTS = \
	test-cryptinline-concurrency.sh \
	test-cryptinline-order.sh \
	$(NULL)
check-tsan: test-cryptinline-aio
	$(MAKE) -C $(top_builddir)/filters/cryptinline tsan
	$(MAKE) check TESTS="$(CRYPTINLINE_TSAN_TESTS)" \
	  CRYPTINLINE_FILTER="$(abs_top_builddir)/filters/cryptinline/tsan/nbdkit-cryptinline-filter.so" \
	  CRYPTINLINE_PRELOAD="$$($(CC) -print-file-name=libtsan.so)" \
	  CRYPTINLINE_NBDKIT="$(NBDKIT)" \
	  TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1"
.PHONY: check-tsan

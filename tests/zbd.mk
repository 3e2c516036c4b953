# Tests of the zbd plugin and nbdzone.
#
# All run on the emulated backend (memory or image file); the libzbd
# backend on real zoned devices is tested in the VM (make check-vm).

EXTRA_DIST += \
	zbd_helpers.py \
	zbd-profile.py \
	zbd-profile.sh \
	$(NULL)

TESTS += \
	test-zbd-profile-memory.sh \
	test-zbd-profile-file.sh \
	test-zbd-profile-memory-filter.sh \
	test-zbd-profile-file-filter.sh \
	$(NULL)

check_PROGRAMS += zone-writer
zone_writer_SOURCES = zone-writer.c
zone_writer_CPPFLAGS = -I$(top_srcdir)/common
zone_writer_CFLAGS = $(TEST_CFLAGS) -pthread
zone_writer_LDADD = $(top_builddir)/common/libzonedgeometry.la $(TEST_LIBS)
zone_writer_LDFLAGS = -pthread

TESTS += test-zbd-ordering.sh test-zbd-ordering-filter.sh

EXTRA_DIST += zbd-gate.py zbd-limits.py
TESTS += test-zbd-gate.sh test-zbd-limits.sh

EXTRA_DIST += zbd-stream.py
TESTS += \
	test-zbd-file.sh \
	test-zbd-crash.sh \
	test-zbd-device-errors.sh \
	test-nbdzone.sh \
	$(NULL)

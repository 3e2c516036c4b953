# Tests of the zbd plugin and nbdzone.
#
# All run on the emulated backend (memory or image file); the libzbd
# backend on real zoned devices is tested in the VM (make check-vm).

ZBD_TESTS = \
	test-zbd-profile-memory.sh \
	test-zbd-profile-file.sh \
	test-zbd-profile-memory-filter.sh \
	test-zbd-profile-file-filter.sh \
	test-zbd-ordering.sh \
	test-zbd-ordering-filter.sh \
	test-zbd-demo.sh \
	test-zbd-gate.sh \
	test-zbd-limits.sh \
	test-zbd-file.sh \
	test-zbd-crash.sh \
	test-zbd-image-header.sh \
	test-zbd-device-errors.sh \
	test-nbdzone.sh \
	test-nbdzone-attach.sh \
	test-zbd-nbdcopy.sh \
	test-zbd-threads.sh \
	test-zbd-flush-order.sh \
	$(NULL)

TESTS += $(ZBD_TESTS)

EXTRA_DIST += \
	$(ZBD_TESTS) \
	zbd_helpers.py \
	zbd-profile.py \
	zbd-profile.sh \
	zbd-ordering-lib.sh \
	zbd-gate.py \
	zbd-limits.py \
	zbd-stream.py \
	zbd-threads.py \
	zbd-flush-order.py \
	$(NULL)

# Ordering stress on libnbd aio; also the demo test's writer.
check_PROGRAMS += zone-writer
zone_writer_SOURCES = zone-writer.c
zone_writer_CPPFLAGS = -I$(top_srcdir)/common
zone_writer_CFLAGS = $(TEST_CFLAGS) -pthread
zone_writer_LDADD = $(top_builddir)/common/libzonedgeometry.la $(TEST_LIBS)
zone_writer_LDFLAGS = -pthread

# Power cut at any point on the emulated image: an LD_PRELOAD recorder
# of the plugin's writes and syncs on the image (built for the test,
# never installed) and a replayer that checks every crash image.
TESTS += test-zbd-powercut.sh
EXTRA_DIST += test-zbd-powercut.sh zbd-powercut.py
check_LTLIBRARIES = crash-recorder.la
crash_recorder_la_SOURCES = crash-recorder.c
crash_recorder_la_CFLAGS = $(WARNINGS_CFLAGS) -pthread
crash_recorder_la_LIBADD = -ldl
# -rpath: libtool builds a shared object only for an installable library.
crash_recorder_la_LDFLAGS = -module -avoid-version -shared -pthread \
	-rpath $(abs_builddir)

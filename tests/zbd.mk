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
	test-zbd-slow.sh \
	test-zbd-reopen.sh \
	test-zbd-limits.sh \
	test-zbd-file.sh \
	test-zbd-crash.sh \
	test-zbd-image-header.sh \
	test-nbdzone.sh \
	test-nbdzone-attach.sh \
	test-nbdzone-faults.sh \
	test-zbd-nbdcopy.sh \
	test-zbd-threads.sh \
	test-zbd-flush-order.sh \
	test-zbd-clean-stop.sh \
	test-zbd-one-server.sh \
	test-zbd-sync-fail.sh \
	test-zbd-image-type.sh \
	test-zbd-identity.sh \
	test-zbd-dir.sh \
	$(NULL)

# The libzbd backend's refusals need libzbd; a build without it
# (configure --without-libzbd) checks instead that device= says so.
if HAVE_LIBZBD
ZBD_TESTS += test-zbd-device-errors.sh
else
ZBD_TESTS += test-zbd-no-libzbd.sh
endif

TESTS += $(ZBD_TESTS)

EXTRA_DIST += \
	$(ZBD_TESTS) \
	test-zbd-device-errors.sh \
	test-zbd-no-libzbd.sh \
	zbd_helpers.py \
	zbd-profile.py \
	zbd-profile.sh \
	zbd-ordering-lib.sh \
	zbd-gate.py \
	zbd-slow.py \
	zbd-limits.py \
	zbd-limits-busy.py \
	zbd-stream.py \
	zbd-threads.py \
	zbd-flush-order.py \
	zbd-dir.py \
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

# The zone table and write gate alone, against a fake device.
TESTS += test-zbd-gate-unit
check_PROGRAMS += test-zbd-gate-unit
test_zbd_gate_unit_SOURCES = test-zbd-gate-unit.c
test_zbd_gate_unit_CPPFLAGS = -I$(top_srcdir)/plugin
test_zbd_gate_unit_CFLAGS = $(WARNINGS_CFLAGS) $(NBDKIT_CFLAGS) -pthread
test_zbd_gate_unit_LDADD = $(top_builddir)/plugin/libzbdgate.la
test_zbd_gate_unit_LDFLAGS = -pthread

# make check-tsan: the gate's unit test and the plugin's ordering and
# concurrency tests against ThreadSanitizer builds; any data race fails.
ZBD_TSAN_TESTS = \
	test-zbd-ordering.sh \
	test-zbd-gate.sh \
	test-zbd-slow.sh \
	test-zbd-reopen.sh \
	test-zbd-threads.sh \
	test-zbd-flush-order.sh \
	$(NULL)
ZBD_TSAN_OPTIONS = halt_on_error=1 exitcode=66 second_deadlock_stack=1
check-tsan: check-tsan-zbd
check-tsan-zbd: zone-writer
	$(MAKE) -C $(top_builddir)/plugin tsan
	$(MKDIR_P) tsan
	$(CC) -fsanitize=thread -g -O1 -I$(top_srcdir)/plugin -I$(top_builddir) \
	  $(WARNINGS_CFLAGS) $(NBDKIT_CFLAGS) \
	  $(srcdir)/test-zbd-gate-unit.c $(top_srcdir)/plugin/gate.c \
	  -o tsan/test-zbd-gate-unit -lpthread
	TSAN_OPTIONS="$(ZBD_TSAN_OPTIONS)" tsan/test-zbd-gate-unit
	$(MAKE) check TESTS="$(ZBD_TSAN_TESTS)" \
	  ZBD_PLUGIN="$(abs_top_builddir)/plugin/tsan/nbdkit-zbd-plugin.so" \
	  NBDKIT_PRELOAD="$$($(CC) -print-file-name=libtsan.so)" \
	  TSAN_OPTIONS="$(ZBD_TSAN_OPTIONS)"
.PHONY: check-tsan-zbd

clean-local:
	rm -rf tsan

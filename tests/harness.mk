# Tests of the test harness itself: functions.sh and the ./nbdkit wrapper.

# A test stopped by a signal fails; a server that hangs after SIGTERM
# under NBDKIT_PRELOAD (make check-tsan) fails the run.
TESTS += test-harness.sh
EXTRA_DIST += test-harness.sh
# Preloaded into nbdkit to make it hang at exit (built for the test,
# never installed; -rpath: libtool builds a shared object only for an
# installable library).
check_LTLIBRARIES += hang-at-exit.la
hang_at_exit_la_SOURCES = hang-at-exit.c
hang_at_exit_la_CFLAGS = $(WARNINGS_CFLAGS)
hang_at_exit_la_LDFLAGS = -module -avoid-version -shared -rpath $(abs_builddir)

# make check-mutants (the top-level target): the runner and its mutants.
EXTRA_DIST += check-mutants.sh mutants.sh

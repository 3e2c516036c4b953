#!/usr/bin/env bash
# The zoned NBD profile on the emulated file backend, through the cryptinline filter.
source "$srcdir/zbd-profile.sh" file filter

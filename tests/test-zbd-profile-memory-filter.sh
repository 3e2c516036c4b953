#!/usr/bin/env bash
# The zoned NBD profile on the emulated memory backend, through the cryptinline filter.
source "$srcdir/zbd-profile.sh" memory filter

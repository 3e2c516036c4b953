#!/usr/bin/env bash
# The zoned NBD profile on the emulated memory backend.
source "$srcdir/zbd-profile.sh" memory 

#!/usr/bin/env bash
# The zoned NBD profile on the emulated file backend.
source "$srcdir/zbd-profile.sh" file 

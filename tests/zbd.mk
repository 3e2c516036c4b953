# Tests of the zbd plugin and nbdzone.

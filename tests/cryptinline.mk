# Tests of the cryptinline filter.

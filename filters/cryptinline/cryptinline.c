/* placeholder: replaced by the filter implementation */
#include <config.h>
#include <nbdkit-filter.h>
static struct nbdkit_filter filter = { .name = "cryptinline", .longname = "placeholder" };
NBDKIT_REGISTER_FILTER (filter)

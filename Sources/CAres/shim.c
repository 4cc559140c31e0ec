/* See include/CAres.h. */
#include "CAres.h"

const char *relayd_ares_header_version(void) { return ARES_VERSION_STR; }

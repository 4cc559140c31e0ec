/*
 * CAres — bridge from Swift to the system's c-ares (libc-ares-dev, 1.18+).
 * Swift imports c-ares' functions directly; this header adds only what is a
 * macro there. Owner: RelayCore/DNS is the only Swift code that imports it.
 */
#ifndef RELAYD_CARES_H
#define RELAYD_CARES_H

#include <ares.h>
#include <ares_version.h>
#include <arpa/nameser.h>

/* The version c-ares was compiled against (ARES_VERSION_STR is a macro). */
const char *relayd_ares_header_version(void);

#endif

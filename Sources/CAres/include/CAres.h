/*
 * CAres — bridge from Swift to the system's c-ares (libc-ares-dev, 1.18+).
 * Swift imports c-ares' functions directly; this header adds what is a
 * macro there, and socket functions that let relayd own the closing of
 * c-ares' sockets. Owner: RelayCore/DNS is the only Swift code that imports it.
 */
#ifndef RELAYD_CARES_H
#define RELAYD_CARES_H

#include <ares.h>
#include <ares_version.h>
#include <arpa/nameser.h>

/* The version c-ares was compiled against (ARES_VERSION_STR is a macro). */
const char *relayd_ares_header_version(void);

/* Called instead of close(2) when c-ares is done with a socket, so the
 * DispatchSources watching it can be cancelled first and the descriptor
 * closed in their cancel handler (never while a source may still be
 * registered for it — the number could be reused by a new connection). */
typedef void (*relayd_ares_close_fn)(int fd, void *user_data);

void relayd_ares_use_socket_functions(ares_channel channel, relayd_ares_close_fn close_fn, void *user_data);

#endif

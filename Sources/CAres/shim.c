/* See include/CAres.h. */
#include "CAres.h"

#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

const char *relayd_ares_header_version(void) { return ARES_VERSION_STR; }

static relayd_ares_close_fn relayd_close_fn;

static ares_socket_t relayd_socket(int domain, int type, int protocol, void *user) {
    (void)user;
    return socket(domain, type | SOCK_CLOEXEC, protocol);
}

static int relayd_close(ares_socket_t fd, void *user) {
    relayd_close_fn(fd, user);
    return 0;
}

static int relayd_connect(ares_socket_t fd, const struct sockaddr *addr, ares_socklen_t len, void *user) {
    (void)user;
    return connect(fd, addr, len);
}

static ares_ssize_t relayd_recvfrom(ares_socket_t fd, void *buf, size_t len, int flags,
                                    struct sockaddr *from, ares_socklen_t *fromlen, void *user) {
    (void)user;
    return recvfrom(fd, buf, len, flags, from, fromlen);
}

static ares_ssize_t relayd_sendv(ares_socket_t fd, const struct iovec *iov, int count, void *user) {
    (void)user;
    return writev(fd, iov, count);
}

/* c-ares keeps the pointer: the table must outlive every channel. */
static const struct ares_socket_functions relayd_socket_functions = {
    relayd_socket, relayd_close, relayd_connect, relayd_recvfrom, relayd_sendv,
};

void relayd_ares_use_socket_functions(ares_channel channel, relayd_ares_close_fn close_fn, void *user_data) {
    relayd_close_fn = close_fn;
    ares_set_socket_functions(channel, &relayd_socket_functions, user_data);
}

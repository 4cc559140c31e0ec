/*
 * sink.c - the compiled SMTP sink of relayd's benchmarks, a drop-in for
 * bench/sink.py: the same command line, dialogue and count files (so
 * sink.totals() in sink.py reads this one's counts too). The Python sink
 * costs a large share of what relayd itself costs per message, on a
 * two-core machine shared by generator, relay and sink.
 *
 * It accepts everything, offers STARTTLS when given a certificate (and a
 * second, ECDSA chain beside it with --ec-cert/--ec-key, both in one
 * SSL_CTX, so OpenSSL picks the leaf by the client's signature algorithms),
 * and keeps nothing but a count of messages and of DATA bytes (as on the
 * wire: dot-stuffed, up to and including "\r\n.\r\n"). A body of any size
 * is scanned for the end marker as it arrives and dropped, never held; a
 * marker split across reads is carried over as a small KMP state.
 *
 * Design: --processes N forked workers, each with its own listening socket
 * (SO_REUSEADDR + SO_REUSEPORT on one address: the kernel spreads the
 * connections), all bound by the parent before it forks, so the port takes
 * connections when "ready" is printed. Each worker is one level-triggered
 * epoll loop over non-blocking sockets; reads drain to EAGAIN /
 * SSL_ERROR_WANT_READ (nothing waits unseen in OpenSSL) into one
 * per-process scratch buffer. A connection keeps only a partial command
 * line (at most LINE_MAX_ octets: a longer line keeps its head, all the verb
 * needs) and its unsent replies, so thousands of connections are cheap.
 * Pipelined commands are answered in order, replies batched into one
 * write; past OUT_HIGH octets of unsent replies a connection stops reading
 * until they are written. Worker i writes "<messages> <bytes>" to
 * <count-file>.i every 100 ms (to .tmp, then rename) from its epoll_wait
 * timeout. The parent waits; on SIGTERM (or SIGINT) it stops the workers
 * and exits 0. Workers die with it (PR_SET_PDEATHSIG), and on SIGTERM write
 * their counts a last time and exit 0.
 *
 * One difference from sink.py, on input the benchmarks never send: an empty
 * body (".\r\n" right after the DATA line) ends the message, as RFC 5321
 * says; sink.py waits for a "\r\n.\r\n" after it.
 *
 * Build: make -C bench (gcc -O2, OpenSSL 3 from libssl-dev) into
 * ../.build-bench/sink.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_ 4096          /* a command line kept across reads */
#define SCRATCH (64 * 1024)     /* one read */
#define OUT_HIGH (64 * 1024)    /* unsent replies that stop reading */

static struct {
    const char *listen, *cert, *key, *ec_cert, *ec_key, *count_file;
    int processes;
} opt = {.processes = 1};

enum cstate { C_CMD, C_DATA, C_TLS_WAIT, C_HANDSHAKE, C_QUIT };

struct conn {
    int fd;
    enum cstate state;
    SSL *ssl;
    unsigned interest;
    int paused;               /* stopped reading: too many unsent replies */
    int write_wants_read;     /* SSL_write blocked on a read */
    int read_wants_write;     /* SSL_read blocked on a write */
    int mstate;               /* DATA: octets of "\r\n.\r\n" matched so far */
    unsigned long long body;  /* DATA: octets of this body so far */
    char *out;
    size_t out_len, out_off, out_cap;
    int part_len, overlong;   /* a partial command line */
    char part[LINE_MAX_];
};

static SSL_CTX *ctx;
static int epfd;
static unsigned long long n_msgs, n_bytes;
static char scratch[LINE_MAX_ + SCRATCH];
static volatile sig_atomic_t stop;

static void die(const char *fmt, const char *arg) {
    fprintf(stderr, "sink: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    exit(2);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_signal(int sig) { stop = 1; }

/* ---- output ----------------------------------------------------------- */

static void put(struct conn *c, const char *s, size_t len) {
    if (c->out_len + len > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 512;
        while (cap < c->out_len + len) cap *= 2;
        char *p = realloc(c->out, cap);
        if (!p) die("%s", "out of memory");
        c->out = p;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, s, len);
    c->out_len += len;
}
#define PUT(c, lit) put((c), lit, sizeof lit - 1)

/* Writes what is queued. 1: all written; 0: blocked; -1: failed. */
static int flush_out(struct conn *c) {
    c->write_wants_read = 0;
    while (c->out_off < c->out_len) {
        size_t left = c->out_len - c->out_off;
        if (c->ssl) {
            int r = SSL_write(c->ssl, c->out + c->out_off, left > (1u << 30) ? (1 << 30) : (int)left);
            if (r > 0) {
                c->out_off += (size_t)r;
                continue;
            }
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_WRITE) return 0;
            if (e == SSL_ERROR_WANT_READ) {
                c->write_wants_read = 1;
                return 0;
            }
            ERR_clear_error();
            return -1;
        }
        ssize_t r = send(c->fd, c->out + c->out_off, left, MSG_NOSIGNAL);
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR) return 0;
            return -1;
        }
        c->out_off += (size_t)r;
    }
    c->out_off = c->out_len = 0;
    return 1;
}

/* ---- connections -------------------------------------------------------- */

static void set_interest(struct conn *c, unsigned ev) {
    if (c->interest == ev) return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
    c->interest = ev;
}

static void conn_close(struct conn *c, int clean) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    if (c->ssl) {
        if (clean) SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
        ERR_clear_error();
    }
    close(c->fd);
    free(c->out);
    free(c);
}

static int on_readable(struct conn *c);

/* TLS handshake step. Returns -1 when the connection is gone. */
static int handshake(struct conn *c) {
    int r = SSL_accept(c->ssl);
    if (r == 1) {
        c->state = C_CMD;
        set_interest(c, EPOLLIN);
        return on_readable(c); /* the client's EHLO may already be in OpenSSL's hands */
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) set_interest(c, EPOLLIN);
    else if (e == SSL_ERROR_WANT_WRITE) set_interest(c, EPOLLIN | EPOLLOUT);
    else {
        conn_close(c, 0);
        return -1;
    }
    return 0;
}

/* Pushes replies out, closes after QUIT, starts TLS after STARTTLS's 220,
 * and sets what to wait for. Returns -1 when the connection is gone. */
static int settle(struct conn *c) {
    int r = flush_out(c);
    if (r < 0) {
        conn_close(c, 0);
        return -1;
    }
    if (r == 1 && c->state == C_QUIT) {
        conn_close(c, 1);
        return -1;
    }
    if (r == 1 && c->state == C_TLS_WAIT) {
        c->ssl = SSL_new(ctx);
        if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
            conn_close(c, 0);
            return -1;
        }
        c->state = C_HANDSHAKE;
        return handshake(c);
    }
    unsigned ev = 0;
    if (c->out_off < c->out_len && !c->write_wants_read) ev |= EPOLLOUT;
    if (c->write_wants_read) ev |= EPOLLIN;
    if (c->read_wants_write) ev |= EPOLLOUT;
    if ((c->state == C_CMD || c->state == C_DATA) && c->out_len - c->out_off <= OUT_HIGH) ev |= EPOLLIN;
    set_interest(c, ev);
    return 0;
}

/* ---- the dialogue --------------------------------------------------------- */

static int verb_is(const char *line, size_t len, const char *v) {
    if (len < 4) return 0;
    for (int i = 0; i < 4; i++)
        if (toupper((unsigned char)line[i]) != v[i]) return 0;
    return 1;
}

/* One command line (at least its first octets). 1: stop reading input. */
static int command(struct conn *c, const char *line, size_t len) {
    if (verb_is(line, len, "EHLO") || verb_is(line, len, "HELO")) {
        PUT(c, "250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n");
        if (ctx && !c->ssl) PUT(c, "250-STARTTLS\r\n");
        PUT(c, "250 SIZE 100000000\r\n");
    } else if (verb_is(line, len, "STAR") && ctx && !c->ssl) {
        PUT(c, "220 go ahead\r\n");
        c->state = C_TLS_WAIT; /* whatever came after it in plaintext is dropped */
        return 1;
    } else if (verb_is(line, len, "DATA")) {
        PUT(c, "354 go\r\n");
        c->state = C_DATA;
        c->mstate = 2; /* the DATA line's CRLF: ".\r\n" right away ends an empty body */
        c->body = 0;
    } else if (verb_is(line, len, "QUIT")) {
        PUT(c, "221 bye\r\n");
        c->state = C_QUIT;
        return 1;
    } else if (verb_is(line, len, "RSET") || verb_is(line, len, "NOOP") || verb_is(line, len, "MAIL") ||
               verb_is(line, len, "RCPT")) {
        PUT(c, "250 ok\r\n");
    } else {
        PUT(c, "502 no\r\n");
    }
    return 0;
}

static const char MARK[] = "\r\n.\r\n";

static int mark_step(int k, char ch) {
    if (ch == MARK[k]) return k + 1;
    return ch == '\r';
}

/* Scans body octets for the end marker: the octets up to and including
 * it, or 0 when it is not in p[0..n) (the partial match is kept). */
static size_t scan_body(struct conn *c, const char *p, size_t n) {
    size_t head = n < 4 ? n : 4;
    int k = c->mstate;
    for (size_t i = 0; i < head; i++) /* a marker begun in an earlier read ends in the first four */
        if ((k = mark_step(k, p[i])) == 5) return i + 1;
    const char *m = memmem(p, n, MARK, 5);
    if (m) return (size_t)(m - p) + 5;
    if (n >= 4) {
        k = 0;
        for (size_t i = n - 4; i < n; i++) k = mark_step(k, p[i]);
    }
    c->mstate = k;
    return 0;
}

/* Handles p[0..n): command lines and body octets. 1: stop reading. */
static int process(struct conn *c, const char *p, size_t n) {
    const char *end = p + n;
    while (p < end) {
        if (c->state == C_DATA) {
            size_t used = scan_body(c, p, (size_t)(end - p));
            if (!used) {
                c->body += (unsigned long long)(end - p);
                return 0;
            }
            c->body += used;
            p += used;
            n_msgs++;
            n_bytes += c->body;
            PUT(c, "250 2.0.0 ok\r\n");
            c->state = C_CMD;
            continue;
        }
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) { /* a partial line: keep it (or its head) for the next read */
            size_t len = (size_t)(end - p);
            if (!c->overlong) {
                if (len > LINE_MAX_) {
                    len = LINE_MAX_;
                    c->overlong = 1;
                }
                memcpy(c->part, p, len);
                c->part_len = (int)len;
            }
            return 0;
        }
        int r;
        if (c->overlong) { /* the end of a line whose head is in part */
            r = command(c, c->part, (size_t)c->part_len);
            c->overlong = 0;
        } else {
            r = command(c, p, (size_t)(nl + 1 - p));
        }
        c->part_len = 0;
        p = nl + 1;
        if (r) return 1;
    }
    return 0;
}

/* Reads until the socket (and OpenSSL) has nothing more, handling it all.
 * Returns -1 when the connection is gone. */
static int on_readable(struct conn *c) {
    c->read_wants_write = 0;
    while (c->state == C_CMD || c->state == C_DATA) {
        if (c->out_len - c->out_off > OUT_HIGH && flush_out(c) == 0) {
            c->paused = 1;
            break;
        }
        c->paused = 0;
        /* A partial line goes first, so the line is whole in scratch. */
        size_t keep = c->overlong ? 0 : (size_t)c->part_len;
        memcpy(scratch, c->part, keep);
        ssize_t r;
        if (c->ssl) {
            int k = SSL_read(c->ssl, scratch + keep, SCRATCH);
            if (k <= 0) {
                int e = SSL_get_error(c->ssl, k);
                if (e == SSL_ERROR_WANT_READ) break;
                if (e == SSL_ERROR_WANT_WRITE) {
                    c->read_wants_write = 1;
                    break;
                }
                conn_close(c, 0);
                return -1;
            }
            r = k;
        } else {
            r = read(c->fd, scratch + keep, SCRATCH);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) break;
            if (r <= 0) {
                conn_close(c, 0);
                return -1;
            }
        }
        if (process(c, scratch, keep + (size_t)r)) break;
    }
    return settle(c);
}

static void on_event(struct conn *c, unsigned ev) {
    if (c->state == C_HANDSHAKE) {
        handshake(c);
        return;
    }
    if ((ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) || c->paused || c->read_wants_write) on_readable(c);
    else settle(c);
}

static void on_accept(int lfd) {
    for (int i = 0; i < 64; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, offsetof(struct conn, part) + LINE_MAX_);
        if (!c) {
            close(fd);
            return;
        }
        c->fd = fd;
        c->interest = EPOLLIN;
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e);
        PUT(c, "220 sink ESMTP\r\n");
        settle(c);
    }
}

/* ---- the processes -------------------------------------------------------- */

static void write_counts(const char *path, const char *tmp) {
    char buf[64];
    int len = snprintf(buf, sizeof buf, "%llu %llu", n_msgs, n_bytes);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return;
    ssize_t w = write(fd, buf, (size_t)len);
    close(fd);
    if (w == len) rename(tmp, path);
}

static void worker(int lfd, int index, pid_t parent) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) exit(0);
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s.%d", opt.count_file, index);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event le = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &le);
    struct epoll_event events[256];
    double next = now_s();
    while (!stop) {
        double t = now_s();
        if (t >= next) {
            write_counts(path, tmp);
            next = t + 0.1;
        }
        int n = epoll_wait(epfd, events, 256, (int)((next - t) * 1000) + 1);
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr) on_event(events[i].data.ptr, events[i].events);
            else on_accept(lfd);
        }
    }
    write_counts(path, tmp);
    exit(0);
}

static int listen_socket(const struct addrinfo *a) {
    int fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    int one = 1;
    if (fd < 0) return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (bind(fd, a->ai_addr, a->ai_addrlen) < 0 || listen(fd, 4096) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void load_chain(const char *cert, const char *key) {
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) die("cannot load certificate %s", cert);
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) die("cannot load key %s", key);
    if (SSL_CTX_check_private_key(ctx) != 1) die("key does not match certificate %s", cert);
}

int main(int argc, char **argv) {
    static const struct option longs[] = {
        {"listen", required_argument, 0, 'l'},  {"cert", required_argument, 0, 'c'},
        {"key", required_argument, 0, 'k'},     {"ec-cert", required_argument, 0, 'C'},
        {"ec-key", required_argument, 0, 'K'},  {"count-file", required_argument, 0, 'f'},
        {"processes", required_argument, 0, 'p'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (ch) {
        case 'l': opt.listen = optarg; break;
        case 'c': opt.cert = optarg; break;
        case 'k': opt.key = optarg; break;
        case 'C': opt.ec_cert = optarg; break;
        case 'K': opt.ec_key = optarg; break;
        case 'f': opt.count_file = optarg; break;
        case 'p': opt.processes = atoi(optarg); break;
        case 'h':
            printf("usage: sink --listen IP:PORT --count-file PATH [--cert FILE --key FILE]\n"
                   "            [--ec-cert FILE --ec-key FILE] [--processes N]\n");
            return 0;
        default: return 2;
        }
    }
    if (!opt.listen || !opt.count_file) die("%s", "--listen IP:PORT and --count-file PATH are required");
    if (opt.processes < 1) opt.processes = 1;
    if (opt.cert) {
        ctx = SSL_CTX_new(TLS_server_method());
        if (!ctx) die("%s", "SSL_CTX_new failed");
        SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
        SSL_CTX_set_read_ahead(ctx, 1); /* a record in one read(), not header then body; drained to WANT_READ */
        SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                  SSL_MODE_RELEASE_BUFFERS);
        load_chain(opt.cert, opt.key ? opt.key : opt.cert);
        if (opt.ec_cert) load_chain(opt.ec_cert, opt.ec_key ? opt.ec_key : opt.ec_cert);
    }

    char *host = strdup(opt.listen), *colon = strrchr(host, ':');
    if (!colon) die("--listen %s: IP:PORT expected", opt.listen);
    *colon = '\0';
    char *h = host;
    if (h[0] == '[' && colon[-1] == ']') {
        h++;
        colon[-1] = '\0';
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *addr;
    if (getaddrinfo(h, colon + 1, &hints, &addr) != 0) die("cannot resolve %s", opt.listen);

    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: wakes epoll_wait / waitpid */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    /* Every worker's socket is listening before "ready". */
    int *lfds = calloc((size_t)opt.processes, sizeof *lfds);
    pid_t *pids = calloc((size_t)opt.processes, sizeof *pids);
    for (int i = 0; i < opt.processes; i++)
        if ((lfds[i] = listen_socket(addr)) < 0) die("cannot listen on %s", opt.listen);
    pid_t self = getpid();
    for (int i = 0; i < opt.processes; i++) {
        pids[i] = fork();
        if (pids[i] < 0) die("%s", "fork failed");
        if (pids[i] == 0) {
            for (int j = 0; j < opt.processes; j++)
                if (j != i) close(lfds[j]);
            worker(lfds[i], i, self);
        }
    }
    for (int i = 0; i < opt.processes; i++) close(lfds[i]);
    printf("ready\n");
    fflush(stdout);

    int alive = opt.processes;
    while (alive > 0 && !stop) {
        pid_t p = waitpid(-1, NULL, 0);
        if (p > 0) {
            alive--;
            for (int i = 0; i < opt.processes; i++)
                if (pids[i] == p) pids[i] = 0;
        } else if (errno == ECHILD) {
            break;
        }
    }
    /* Stop the workers and reap them: no zombies left to init. One that does
     * not stop in 2 s: SIGALRM ends the parent, and PDEATHSIG the worker. */
    for (int i = 0; i < opt.processes; i++)
        if (pids[i] > 0) kill(pids[i], SIGTERM);
    alarm(2);
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR) {}
    return 0;
}

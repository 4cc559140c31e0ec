/*
 * loadgen.c - the compiled SMTP load generator of relayd's benchmarks
 * (bench/run.py uses it; bench/loadgen.py is the Python one it replaces).
 *
 * N concurrent sessions to host:port, optionally STARTTLS, each sending up
 * to M messages of S bytes, bounded by count AND by time: no transaction
 * starts after --max-seconds, and whatever has not ended --grace seconds
 * later is closed and counted as an error, so the generator always stops
 * by itself. The dialogue is the Python generator's: greeting, EHLO,
 * [STARTTLS, handshake, EHLO], then per message MAIL, RCPT and DATA sent
 * together (pipelined), the body once 354 came (dot-stuffed, --dot-lines
 * mixes in lines that start with "."), and the next MAIL on the same
 * session after the 250; a refused MAIL/RCPT/DATA is followed by RSET and
 * 50 ms of rest. QUIT at the end.
 *
 * Why an epoll event loop and not a thread per session: the machine the
 * benchmark runs on has two cores, shared by the generator, the server
 * and the sink. Sessions are cheap state machines here, so one thread
 * multiplexes all of them with no context switch per reply and no thread
 * stacks (the idle-style runs hold thousands of sessions); --threads T
 * splits the sessions over T independent loops (one epoll each, no shared
 * state but the read-only message body and SSL_CTX) for a machine where
 * one loop is the limit. Level-triggered epoll; every read drains the
 * socket (or OpenSSL's buffer) to EAGAIN / WANT_READ, so no TLS record can
 * wait unseen in OpenSSL.
 *
 * Output: one JSON object on stdout. Fields kept from loadgen.py, same
 * meaning: sent (messages accepted: 250 after the body), refused
 * (transactions or greetings answered 4xx/5xx), errors (sessions ended by
 * a connection, TLS or protocol failure, or by the time bound), elapsed,
 * msgs_per_s (accepted per second), bytes (DATA bytes on the wire of the
 * accepted messages, dot-stuffed, with the end marker). Latency: p50_ms,
 * p90_ms, p99_ms, max_ms are from the end of the body (the last byte of
 * "\r\n.\r\n" handed to the kernel) to the 250; txn_p50_ms, txn_p99_ms
 * are from MAIL sent to that 250 (what loadgen.py called p50/p99). Added:
 * attempted (transactions begun), accepted (= sent), accept_rate
 * (= msgs_per_s), failures (reply code -> count, for every unexpected
 * reply at any stage), errors_by_kind, tls_versions and tls_peer_keys
 * (negotiated protocol and the server leaf's key type, per session: how a
 * dual RSA/ECDSA setup is seen from the client), and the generator's own
 * CPU from getrusage: gen_cpu_user_s, gen_cpu_sys_s, gen_cpu_s.
 *
 * Build: make -C bench (gcc -O2, OpenSSL from libssl-dev) into
 * ../.build-bench/loadgen. Run: loadgen --help.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* ---- options ------------------------------------------------------------ */

static struct {
    const char *host, *port;
    int sessions, messages, size, threads, starttls, dot_lines;
    double max_seconds, grace;
    const char *servername, *rcpt, *cafile, *sigalgs, *ciphers, *tls_version;
} opt = {
    .sessions = 10, .messages = 100, .size = 4096, .threads = 1,
    .max_seconds = 30, .grace = 30, .servername = "localhost", .rcpt = "sink@sink.test",
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *fmt, const char *arg) {
    fprintf(stderr, "loadgen: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    exit(2);
}

/* ---- the message (shared, read-only) ------------------------------------- */

static char *body;        /* after the header lines, dot-stuffed, no end marker */
static size_t body_len;
static const char END[] = ".\r\n";
static char mail_cmds[600];
static size_t mail_cmds_len;
static int tag_pid;

/* The header lines of session n; every tag has the same width, so every
 * session's message has the same length and shares one body. */
static size_t message_head(char *buf, size_t cap, int n) {
    int len = snprintf(buf, cap,
                       "From: <bench@sender.test>\r\nTo: <sink@sink.test>\r\nSubject: bench %07d-%06d\r\n"
                       "Message-ID: <%07d-%06d@bench>\r\n\r\n", tag_pid, n, tag_pid, n);
    return (size_t)len;
}

static const char *const DOT_BLOCK_SPEC[] = {"x76", ".", "y40", "..", ".leading dot z60", "x76", "w997",
                                             ".v996", "", "x76", "...three", "u12"};

/* One DOT_BLOCK line as content (expanding "<c><count>" runs). */
static size_t dot_line(int i, char *out) {
    const char *s = DOT_BLOCK_SPEC[i];
    switch (i) {
    case 0: case 2: case 5: case 6: case 9: case 11: {
        int count = atoi(s + 1);
        memset(out, s[0], (size_t)count);
        return (size_t)count;
    }
    case 4:
        memcpy(out, ".leading dot ", 13);
        memset(out + 13, 'z', 60);
        return 73;
    case 7:
        out[0] = '.';
        memset(out + 1, 'v', 996);
        return 997;
    default:
        memcpy(out, s, strlen(s));
        return strlen(s);
    }
}

/* The body as loadgen.py builds it: at most `room` octets of content. */
static void build_body(size_t room) {
    char line[1100];
    if (!opt.dot_lines) {
        size_t lines = room / 78;
        body_len = lines * 78;
        body = malloc(body_len + 1);
        for (size_t i = 0; i < lines; i++) {
            memset(body + i * 78, 'x', 76);
            memcpy(body + i * 78 + 76, "\r\n", 2);
        }
        return;
    }
    size_t content = 0, wire = 0;
    int nlines = (int)(sizeof DOT_BLOCK_SPEC / sizeof *DOT_BLOCK_SPEC);
    for (int i = 0; i < nlines; i++) {
        size_t l = dot_line(i, line);
        content += l + 2;
        wire += l + 2 + (l > 0 && line[0] == '.');
    }
    size_t blocks = room / content, fill = (room - blocks * content) / 78;
    body_len = blocks * wire + fill * 78;
    body = malloc(body_len + 1);
    char *p = body;
    for (size_t b = 0; b < blocks; b++) {
        for (int i = 0; i < nlines; i++) {
            size_t l = dot_line(i, line);
            if (l > 0 && line[0] == '.') *p++ = '.';
            memcpy(p, line, l);
            p += l;
            *p++ = '\r';
            *p++ = '\n';
        }
    }
    for (size_t i = 0; i < fill; i++, p += 78) {
        memset(p, 'x', 76);
        memcpy(p + 76, "\r\n", 2);
    }
}

/* ---- sessions -------------------------------------------------------------- */

enum state { S_CONNECT, S_GREETING, S_EHLO1, S_STARTTLS, S_HANDSHAKE, S_EHLO2, S_TXN, S_BODY, S_RSET,
             S_BACKOFF, S_QUIT, S_DONE };

enum error_kind { E_CONNECT, E_IO, E_CLOSED, E_TLS, E_PROTOCOL, E_TIMEOUT, E_COUNT };
static const char *const ERROR_NAMES[E_COUNT] = {"connect", "io", "closed", "tls", "protocol", "timeout"};

struct seg { const char *p; size_t len; };

struct session {
    int fd, n;
    enum state state;
    SSL *ssl;
    char head[200];
    size_t head_len;
    /* Output: up to four segments, written in order. */
    struct seg out[4];
    int out_n, out_i;
    size_t out_off;
    int want_write_on_read; /* TLS write blocked on a read */
    unsigned interest;
    /* Input. */
    char in[8192];
    size_t in_len;
    /* The transaction. */
    int replies, codes[3], done_msgs, body_sent;
    double t_mail, t_end, wake;
};

struct worker {
    pthread_t thread;
    struct session *sessions;
    int first, count, epfd;
    /* Results. */
    long attempted, accepted, refused, errors, bytes;
    long errors_by_kind[E_COUNT];
    long failures[600];
    long tls13, tls12, tls_other, key_ec, key_rsa, key_other;
    double *lat_end, *lat_txn;
    size_t lat_n, lat_cap;
};

static SSL_CTX *ssl_ctx;
static struct addrinfo *target;
static double t_start, deadline, hard_stop;

static void set_interest(struct worker *w, struct session *s, unsigned ev) {
    if (s->interest == ev) return;
    struct epoll_event e = {.events = ev, .data.ptr = s};
    epoll_ctl(w->epfd, EPOLL_CTL_MOD, s->fd, &e);
    s->interest = ev;
}

static void finish(struct worker *w, struct session *s, int error) {
    if (s->state == S_DONE) return;
    if (error >= 0) {
        w->errors++;
        w->errors_by_kind[error]++;
    }
    if (s->ssl) {
        if (error < 0) SSL_shutdown(s->ssl);
        SSL_free(s->ssl);
        s->ssl = NULL;
    }
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, s->fd, NULL);
    close(s->fd);
    s->state = S_DONE;
}

static void fail_code(struct worker *w, int code) {
    if (code >= 0 && code < 600) w->failures[code]++;
}

static void queue_out(struct session *s, const char *p, size_t len) {
    s->out[s->out_n++] = (struct seg){p, len};
}

/* Writes what is queued. 1: all written; 0: blocked; -1: failed. */
static int flush_out(struct session *s) {
    s->want_write_on_read = 0;
    while (s->out_i < s->out_n) {
        struct seg *g = &s->out[s->out_i];
        size_t left = g->len - s->out_off;
        if (left == 0) {
            s->out_i++;
            s->out_off = 0;
            continue;
        }
        if (s->ssl) {
            int chunk = left > (1u << 30) ? (1 << 30) : (int)left;
            int r = SSL_write(s->ssl, g->p + s->out_off, chunk);
            if (r > 0) {
                s->out_off += (size_t)r;
                continue;
            }
            int e = SSL_get_error(s->ssl, r);
            if (e == SSL_ERROR_WANT_WRITE) return 0;
            if (e == SSL_ERROR_WANT_READ) {
                s->want_write_on_read = 1;
                return 0;
            }
            return -1;
        }
        struct iovec iov[4];
        int n = 0;
        for (int i = s->out_i; i < s->out_n; i++, n++) {
            size_t off = i == s->out_i ? s->out_off : 0;
            iov[n] = (struct iovec){(void *)(s->out[i].p + off), s->out[i].len - off};
        }
        ssize_t r = writev(s->fd, iov, n);
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR) return 0;
            return -1;
        }
        size_t done = (size_t)r;
        while (done > 0 && s->out_i < s->out_n) {
            size_t l = s->out[s->out_i].len - s->out_off;
            if (done >= l) {
                done -= l;
                s->out_i++;
                s->out_off = 0;
            } else {
                s->out_off += done;
                done = 0;
            }
        }
    }
    s->out_n = s->out_i = 0;
    s->out_off = 0;
    return 1;
}

static void update_interest(struct worker *w, struct session *s) {
    if (s->state == S_DONE || s->state == S_HANDSHAKE || s->state == S_CONNECT) return;
    unsigned ev = EPOLLIN;
    if (s->out_i < s->out_n && !s->want_write_on_read) ev |= EPOLLOUT;
    set_interest(w, s, ev);
}

/* Pushes output; notes when the body has left. Returns -1 on failure. */
static int pump_out(struct worker *w, struct session *s) {
    int r = flush_out(s);
    if (r < 0) {
        finish(w, s, E_IO);
        return -1;
    }
    if (r == 1 && s->state == S_BODY && !s->body_sent) {
        s->body_sent = 1;
        s->t_end = now_s();
    }
    update_interest(w, s);
    return 0;
}

static void start_txn(struct worker *w, struct session *s) {
    double t = now_s();
    if (s->done_msgs >= opt.messages || t > deadline) {
        queue_out(s, "QUIT\r\n", 6);
        s->state = S_QUIT;
    } else {
        s->t_mail = t;
        s->replies = 0;
        s->body_sent = 0;
        w->attempted++;
        queue_out(s, mail_cmds, mail_cmds_len);
        s->state = S_TXN;
    }
    pump_out(w, s);
}

static void record_latency(struct worker *w, double end, double txn) {
    if (w->lat_n == w->lat_cap) {
        w->lat_cap = w->lat_cap ? w->lat_cap * 2 : 4096;
        w->lat_end = realloc(w->lat_end, w->lat_cap * sizeof(double));
        w->lat_txn = realloc(w->lat_txn, w->lat_cap * sizeof(double));
    }
    w->lat_end[w->lat_n] = end;
    w->lat_txn[w->lat_n++] = txn;
}

static void handshake(struct worker *w, struct session *s) {
    int r = SSL_connect(s->ssl);
    if (r == 1) {
        int v = SSL_version(s->ssl);
        if (v == TLS1_3_VERSION) w->tls13++; else if (v == TLS1_2_VERSION) w->tls12++; else w->tls_other++;
        X509 *leaf = SSL_get0_peer_certificate(s->ssl);
        EVP_PKEY *key = leaf ? X509_get0_pubkey(leaf) : NULL;
        int id = key ? EVP_PKEY_get_base_id(key) : 0;
        if (id == EVP_PKEY_EC) w->key_ec++; else if (id == EVP_PKEY_RSA) w->key_rsa++; else w->key_other++;
        s->state = S_EHLO2;
        queue_out(s, "EHLO bench.test\r\n", 17);
        pump_out(w, s);
        return;
    }
    int e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_WANT_READ) set_interest(w, s, EPOLLIN);
    else if (e == SSL_ERROR_WANT_WRITE) set_interest(w, s, EPOLLIN | EPOLLOUT);
    else {
        if (getenv("LOADGEN_DEBUG")) ERR_print_errors_fp(stderr);
        ERR_clear_error();
        finish(w, s, E_TLS);
    }
}

/* One complete reply. Returns 1 to stop parsing what follows in the buffer. */
static int on_reply(struct worker *w, struct session *s, int code) {
    switch (s->state) {
    case S_GREETING:
        if (code != 220) {
            fail_code(w, code);
            w->refused++;
            finish(w, s, -1);
            return 1;
        }
        queue_out(s, "EHLO bench.test\r\n", 17);
        s->state = S_EHLO1;
        pump_out(w, s);
        return 0;
    case S_EHLO1:
    case S_EHLO2:
        if (code != 250) {
            fail_code(w, code);
            finish(w, s, E_PROTOCOL);
            return 1;
        }
        if (s->state == S_EHLO1 && opt.starttls) {
            queue_out(s, "STARTTLS\r\n", 10);
            s->state = S_STARTTLS;
            pump_out(w, s);
            return 0;
        }
        start_txn(w, s);
        return 0;
    case S_STARTTLS:
        if (code != 220) {
            fail_code(w, code);
            finish(w, s, E_PROTOCOL);
            return 1;
        }
        /* Anything after the 220 came in plaintext: dropped. */
        s->in_len = 0;
        s->ssl = SSL_new(ssl_ctx);
        SSL_set_fd(s->ssl, s->fd);
        SSL_set_tlsext_host_name(s->ssl, opt.servername);
        if (opt.cafile) SSL_set1_host(s->ssl, opt.servername);
        s->state = S_HANDSHAKE;
        handshake(w, s);
        return 1;
    case S_TXN:
        s->codes[s->replies++] = code;
        if (s->replies < 3) return 0;
        s->done_msgs++;
        if (s->codes[2] != 354) {
            w->refused++;
            int first = s->codes[0] / 100 != 2 ? s->codes[0] : s->codes[1] / 100 != 2 ? s->codes[1] : s->codes[2];
            fail_code(w, first);
            queue_out(s, "RSET\r\n", 6);
            s->state = S_RSET;
            pump_out(w, s);
            return 0;
        }
        queue_out(s, s->head, s->head_len);
        queue_out(s, body, body_len);
        queue_out(s, END, 3);
        s->state = S_BODY;
        pump_out(w, s);
        return 0;
    case S_BODY: {
        double t = now_s();
        if (code == 250) {
            w->accepted++;
            w->bytes += (long)(s->head_len + body_len + 3);
            record_latency(w, t - (s->body_sent ? s->t_end : t), t - s->t_mail);
        } else {
            w->refused++;
            fail_code(w, code);
        }
        if (!s->body_sent) { /* a reply before the body left: out of step */
            finish(w, s, E_PROTOCOL);
            return 1;
        }
        start_txn(w, s);
        return 0;
    }
    case S_RSET:
        s->state = S_BACKOFF;
        s->wake = now_s() + 0.05;
        return 0;
    case S_QUIT:
        finish(w, s, -1);
        return 1;
    default:
        fail_code(w, code);
        finish(w, s, E_PROTOCOL);
        return 1;
    }
}

/* Reads what is there and handles every complete reply. */
static void on_readable(struct worker *w, struct session *s) {
    for (;;) {
        if (s->in_len == sizeof s->in) { /* a reply line longer than the buffer */
            finish(w, s, E_PROTOCOL);
            return;
        }
        ssize_t r;
        if (s->ssl) {
            int k = SSL_read(s->ssl, s->in + s->in_len, (int)(sizeof s->in - s->in_len));
            if (k <= 0) {
                int e = SSL_get_error(s->ssl, k);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
                if (e == SSL_ERROR_ZERO_RETURN) r = 0;
                else {
                    ERR_clear_error();
                    finish(w, s, s->state == S_QUIT ? -1 : E_TLS);
                    return;
                }
            } else r = k;
        } else {
            r = read(s->fd, s->in + s->in_len, sizeof s->in - s->in_len);
            if (r < 0) {
                if (errno == EAGAIN || errno == EINTR) break;
                finish(w, s, s->state == S_QUIT ? -1 : E_IO);
                return;
            }
        }
        if (r == 0) {
            finish(w, s, s->state == S_QUIT ? -1 : E_CLOSED);
            return;
        }
        s->in_len += (size_t)r;
        /* Complete lines: a reply ends at a line whose fourth octet is not '-'. */
        size_t at = 0;
        for (;;) {
            char *nl = memchr(s->in + at, '\n', s->in_len - at);
            if (!nl) break;
            size_t line_len = (size_t)(nl - (s->in + at)) + 1;
            char *line = s->in + at;
            at += line_len;
            if (line_len >= 4 && line[3] == '-') continue;
            int code = line_len >= 3 ? (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0') : -1;
            if (code < 100 || code > 599) {
                finish(w, s, E_PROTOCOL);
                return;
            }
            int stop = on_reply(w, s, code);
            /* Closed, or now speaking TLS: nothing in the buffer is for us. */
            if (s->state == S_DONE || s->state == S_HANDSHAKE) return;
            if (stop) {
                at = s->in_len;
                break;
            }
        }
        memmove(s->in, s->in + at, s->in_len - at);
        s->in_len -= at;
    }
    if (s->want_write_on_read) pump_out(w, s);
}

static void on_event(struct worker *w, struct session *s, unsigned ev) {
    switch (s->state) {
    case S_DONE:
        return;
    case S_CONNECT: {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
            finish(w, s, E_CONNECT);
            return;
        }
        s->state = S_GREETING;
        set_interest(w, s, EPOLLIN);
        return;
    }
    case S_HANDSHAKE:
        handshake(w, s);
        return;
    default:
        if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
            on_readable(w, s);
            if (s->state == S_DONE) return;
        }
        if ((ev & EPOLLOUT) && s->state != S_HANDSHAKE && pump_out(w, s) < 0) return;
    }
}

static void start_session(struct worker *w, struct session *s) {
    s->fd = socket(target->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    if (s->fd < 0) {
        w->errors++;
        w->errors_by_kind[E_CONNECT]++;
        s->state = S_DONE;
        return;
    }
    int one = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    s->head_len = message_head(s->head, sizeof s->head, s->n);
    int r = connect(s->fd, target->ai_addr, target->ai_addrlen);
    s->state = S_CONNECT;
    s->interest = EPOLLOUT;
    if (r == 0) {
        s->state = S_GREETING;
        s->interest = EPOLLIN;
    } else if (errno != EINPROGRESS) {
        close(s->fd);
        w->errors++;
        w->errors_by_kind[E_CONNECT]++;
        s->state = S_DONE;
        return;
    }
    struct epoll_event e = {.events = s->interest, .data.ptr = s};
    epoll_ctl(w->epfd, EPOLL_CTL_ADD, s->fd, &e);
}

static void *run_worker(void *arg) {
    struct worker *w = arg;
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < w->count; i++) {
        w->sessions[i].n = w->first + i;
        start_session(w, &w->sessions[i]);
    }
    struct epoll_event events[256];
    for (;;) {
        int active = 0, resting = 0;
        double t = now_s();
        for (int i = 0; i < w->count; i++) {
            struct session *s = &w->sessions[i];
            if (s->state == S_DONE) continue;
            if (s->state == S_BACKOFF) {
                if (t >= s->wake) start_txn(w, s);
                else resting++;
            }
            if (s->state != S_DONE) active++;
        }
        if (active == 0) break;
        if (t >= hard_stop) {
            for (int i = 0; i < w->count; i++) finish(w, &w->sessions[i], E_TIMEOUT);
            break;
        }
        int timeout = (int)((hard_stop - t) * 1000) + 1;
        if (resting && timeout > 10) timeout = 10;
        if (timeout > 1000) timeout = 1000;
        int n = epoll_wait(w->epfd, events, 256, timeout);
        for (int i = 0; i < n; i++) on_event(w, events[i].data.ptr, events[i].events);
    }
    close(w->epfd);
    return NULL;
}

/* ---- results --------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* loadgen.py's percentile: the sorted sample at int(q * n). */
static void print_pct(const char *name, double *v, size_t n, double q) {
    if (n == 0) {
        printf(", \"%s\": null", name);
        return;
    }
    size_t i = (size_t)(q * (double)n);
    if (i > n - 1) i = n - 1;
    printf(", \"%s\": %.2f", name, v[i] * 1000);
}

static void usage(void) {
    printf("usage: loadgen --target HOST:PORT [options]\n"
           "  --sessions N      concurrent sessions (10)\n"
           "  --messages M      messages per session (100)\n"
           "  --size S          message size in octets (4096)\n"
           "  --max-seconds T   no transaction starts after T s (30)\n"
           "  --grace G         then whatever is still open is closed after G s more, as errors (30)\n"
           "  --threads K       event loops, the sessions split among them (1); --processes is an alias\n"
           "  --starttls        STARTTLS after the first EHLO\n"
           "  --tls-version V   1.2 or 1.3: only that version (default: 1.2 or newer)\n"
           "  --cafile FILE     verify the server against FILE and --servername (default: no verification)\n"
           "  --servername NAME SNI (and the name verified with --cafile) (localhost)\n"
           "  --sigalgs LIST    signature algorithms offered (OpenSSL syntax, e.g. ECDSA+SHA256 or RSA-PSS+SHA256:RSA+SHA256)\n"
           "  --ciphers LIST    TLS 1.2 cipher list (OpenSSL syntax)\n"
           "  --rcpt ADDR       recipient (sink@sink.test)\n"
           "  --dot-lines       mix lines starting with '.' into the body (sent dot-stuffed)\n"
           "  --print-message   write session 0's message as sent after DATA (stuffed, with the end marker) and exit\n");
}

int main(int argc, char **argv) {
    static const struct option longs[] = {
        {"target", required_argument, 0, 't'},    {"sessions", required_argument, 0, 'n'},
        {"messages", required_argument, 0, 'm'},  {"size", required_argument, 0, 's'},
        {"max-seconds", required_argument, 0, 'T'}, {"grace", required_argument, 0, 'g'},
        {"threads", required_argument, 0, 'k'},   {"processes", required_argument, 0, 'k'},
        {"starttls", no_argument, 0, 'S'},        {"tls-version", required_argument, 0, 'V'},
        {"cafile", required_argument, 0, 'C'},    {"servername", required_argument, 0, 'N'},
        {"sigalgs", required_argument, 0, 'A'},   {"ciphers", required_argument, 0, 'c'},
        {"rcpt", required_argument, 0, 'r'},      {"dot-lines", no_argument, 0, 'D'},
        {"print-message", no_argument, 0, 'P'},   {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *targ = NULL;
    int c, print_message = 0;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 't': targ = optarg; break;
        case 'n': opt.sessions = atoi(optarg); break;
        case 'm': opt.messages = atoi(optarg); break;
        case 's': opt.size = atoi(optarg); break;
        case 'T': opt.max_seconds = atof(optarg); break;
        case 'g': opt.grace = atof(optarg); break;
        case 'k': opt.threads = atoi(optarg); break;
        case 'S': opt.starttls = 1; break;
        case 'V': opt.tls_version = optarg; break;
        case 'C': opt.cafile = optarg; break;
        case 'N': opt.servername = optarg; break;
        case 'A': opt.sigalgs = optarg; break;
        case 'c': opt.ciphers = optarg; break;
        case 'r': opt.rcpt = optarg; break;
        case 'D': opt.dot_lines = 1; break;
        case 'P': print_message = 1; break;
        case 'h': usage(); return 0;
        default: usage(); return 2;
        }
    }
    if (!targ && !print_message) die("%s", "--target HOST:PORT is required");
    if (opt.sessions < 1 || opt.messages < 0 || opt.size < 0 || opt.max_seconds < 0 || opt.grace < 0)
        die("%s", "--sessions must be >= 1; --messages, --size, --max-seconds, --grace >= 0");
    if (opt.threads < 1) opt.threads = 1;
    if (opt.threads > opt.sessions) opt.threads = opt.sessions;
    if (strlen(opt.rcpt) > 400) die("%s", "--rcpt is too long");

    tag_pid = (int)getpid() % 10000000;
    char probe[200];
    size_t head_len = message_head(probe, sizeof probe, 0);
    build_body((size_t)opt.size > head_len ? (size_t)opt.size - head_len : 0);
    if (print_message) {
        fwrite(probe, 1, head_len, stdout);
        fwrite(body, 1, body_len, stdout);
        fwrite(END, 1, 3, stdout);
        return 0;
    }
    char *hp = strdup(targ), *colon = strrchr(hp, ':');
    if (!colon) die("--target %s: HOST:PORT expected", targ);
    *colon = '\0';
    opt.host = hp[0] == '[' ? hp + 1 : hp;
    if (hp[0] == '[' && colon[-1] == ']') colon[-1] = '\0';
    opt.port = colon + 1;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    if (getaddrinfo(opt.host, opt.port, &hints, &target) != 0) die("cannot resolve %s", targ);

    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    if (opt.starttls) {
        ssl_ctx = SSL_CTX_new(TLS_client_method());
        if (!ssl_ctx) die("%s", "SSL_CTX_new failed");
        SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION);
        if (opt.tls_version) {
            int v = strcmp(opt.tls_version, "1.3") == 0 ? TLS1_3_VERSION
                  : strcmp(opt.tls_version, "1.2") == 0 ? TLS1_2_VERSION : 0;
            if (!v) die("--tls-version %s: 1.2 or 1.3", opt.tls_version);
            SSL_CTX_set_min_proto_version(ssl_ctx, v);
            SSL_CTX_set_max_proto_version(ssl_ctx, v);
        }
        if (opt.cafile) {
            if (SSL_CTX_load_verify_locations(ssl_ctx, opt.cafile, NULL) != 1) die("cannot load --cafile %s", opt.cafile);
            SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_PEER, NULL);
        } else {
            SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_NONE, NULL);
        }
        if (opt.sigalgs && SSL_CTX_set1_sigalgs_list(ssl_ctx, opt.sigalgs) != 1) die("--sigalgs %s: not understood", opt.sigalgs);
        if (opt.ciphers && SSL_CTX_set_cipher_list(ssl_ctx, opt.ciphers) != 1) die("--ciphers %s: not understood", opt.ciphers);
        /* Every session does a full handshake, as a new client would. */
        SSL_CTX_set_session_cache_mode(ssl_ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_mode(ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    }

    mail_cmds_len = (size_t)snprintf(mail_cmds, sizeof mail_cmds,
                                     "MAIL FROM:<bench@sender.test>\r\nRCPT TO:<%s>\r\nDATA\r\n", opt.rcpt);

    struct session *all = calloc((size_t)opt.sessions, sizeof *all);
    struct worker *workers = calloc((size_t)opt.threads, sizeof *workers);
    t_start = now_s();
    deadline = t_start + opt.max_seconds;
    hard_stop = deadline + opt.grace;
    int at = 0;
    for (int i = 0; i < opt.threads; i++) {
        struct worker *w = &workers[i];
        w->first = at;
        w->count = opt.sessions / opt.threads + (i < opt.sessions % opt.threads);
        w->sessions = all + at;
        at += w->count;
        if (pthread_create(&w->thread, NULL, run_worker, w) != 0) die("%s", "pthread_create failed");
    }
    struct worker total = {0};
    for (int i = 0; i < opt.threads; i++) {
        struct worker *w = &workers[i];
        pthread_join(w->thread, NULL);
        total.attempted += w->attempted;
        total.accepted += w->accepted;
        total.refused += w->refused;
        total.errors += w->errors;
        total.bytes += w->bytes;
        total.tls13 += w->tls13; total.tls12 += w->tls12; total.tls_other += w->tls_other;
        total.key_ec += w->key_ec; total.key_rsa += w->key_rsa; total.key_other += w->key_other;
        for (int k = 0; k < E_COUNT; k++) total.errors_by_kind[k] += w->errors_by_kind[k];
        for (int k = 0; k < 600; k++) total.failures[k] += w->failures[k];
        for (size_t k = 0; k < w->lat_n; k++) record_latency(&total, w->lat_end[k], w->lat_txn[k]);
    }
    double elapsed = now_s() - t_start;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    double sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    qsort(total.lat_end, total.lat_n, sizeof(double), cmp_double);
    qsort(total.lat_txn, total.lat_n, sizeof(double), cmp_double);
    double rate = elapsed > 0 ? (double)total.accepted / elapsed : 0;

    printf("{\"generator\": \"loadgen.c\", \"sessions\": %d, \"threads\": %d, \"starttls\": %s, \"size\": %zu",
           opt.sessions, opt.threads, opt.starttls ? "true" : "false", head_len + body_len + 3);
    printf(", \"attempted\": %ld, \"sent\": %ld, \"accepted\": %ld, \"refused\": %ld, \"errors\": %ld",
           total.attempted, total.accepted, total.accepted, total.refused, total.errors);
    printf(", \"failures\": {");
    const char *sep = "";
    for (int k = 0; k < 600; k++)
        if (total.failures[k]) {
            printf("%s\"%d\": %ld", sep, k, total.failures[k]);
            sep = ", ";
        }
    printf("}, \"errors_by_kind\": {");
    sep = "";
    for (int k = 0; k < E_COUNT; k++)
        if (total.errors_by_kind[k]) {
            printf("%s\"%s\": %ld", sep, ERROR_NAMES[k], total.errors_by_kind[k]);
            sep = ", ";
        }
    printf("}, \"elapsed\": %.3f, \"msgs_per_s\": %.1f, \"accept_rate\": %.1f, \"bytes\": %ld", elapsed, rate, rate,
           total.bytes);
    print_pct("p50_ms", total.lat_end, total.lat_n, 0.5);
    print_pct("p90_ms", total.lat_end, total.lat_n, 0.9);
    print_pct("p99_ms", total.lat_end, total.lat_n, 0.99);
    print_pct("max_ms", total.lat_end, total.lat_n, 1.0);
    print_pct("txn_p50_ms", total.lat_txn, total.lat_n, 0.5);
    print_pct("txn_p99_ms", total.lat_txn, total.lat_n, 0.99);
    if (opt.starttls)
        printf(", \"tls_versions\": {\"TLSv1.3\": %ld, \"TLSv1.2\": %ld, \"other\": %ld}"
               ", \"tls_peer_keys\": {\"EC\": %ld, \"RSA\": %ld, \"other\": %ld}",
               total.tls13, total.tls12, total.tls_other, total.key_ec, total.key_rsa, total.key_other);
    printf(", \"gen_cpu_user_s\": %.3f, \"gen_cpu_sys_s\": %.3f, \"gen_cpu_s\": %.3f}\n", user, sys, user + sys);
    return 0;
}

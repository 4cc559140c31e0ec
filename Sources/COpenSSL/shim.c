/* See include/COpenSSL.h: wrappers for OpenSSL macros only. */
#include "COpenSSL.h"

int relayd_tls1_version(void) { return TLS1_VERSION; }
int relayd_tls1_1_version(void) { return TLS1_1_VERSION; }
int relayd_tls1_2_version(void) { return TLS1_2_VERSION; }
int relayd_tls1_3_version(void) { return TLS1_3_VERSION; }

int relayd_ssl_ctx_set_min_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_min_proto_version(ctx, version);
}

int relayd_ssl_ctx_set_max_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_max_proto_version(ctx, version);
}

/* Options every relayd context carries, whatever its role:
 * no compression (CRIME), no renegotiation (a peer-driven state change in
 * the middle of an SMTP transaction buys nothing), server cipher preference.
 * Modes: a moving write buffer (the caller's buffer may move between retries)
 * and released buffers (idle sessions hold no record buffers). Partial
 * writes are NOT enabled: SSL_write into a memory BIO never blocks, so it
 * takes the whole buffer or fails, and the caller need not track a rest. */
void relayd_ssl_ctx_harden(SSL_CTX *ctx) {
    SSL_CTX_set_options(ctx, SSL_OP_NO_SSLv2 | SSL_OP_NO_SSLv3 |
                             SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                             SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                          SSL_MODE_RELEASE_BUFFERS);
}

long relayd_ssl_ctx_set_session_cache_server(SSL_CTX *ctx) {
    return SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
}

int relayd_ssl_set_tlsext_host_name(SSL *ssl, const char *name) {
    return (int)SSL_set_tlsext_host_name(ssl, name);
}

long relayd_ssl_get_verify_result(const SSL *ssl) {
    return SSL_get_verify_result(ssl);
}

int relayd_sk_x509_num(const STACK_OF(X509) *stack) {
    return stack == NULL ? 0 : sk_X509_num(stack);
}

X509 *relayd_sk_x509_value(const STACK_OF(X509) *stack, int index) {
    return sk_X509_value(stack, index);
}

int relayd_sk_ssl_cipher_num(const STACK_OF(SSL_CIPHER) *stack) {
    return stack == NULL ? 0 : sk_SSL_CIPHER_num(stack);
}

const SSL_CIPHER *relayd_sk_ssl_cipher_value(const STACK_OF(SSL_CIPHER) *stack, int index) {
    return sk_SSL_CIPHER_value(stack, index);
}

size_t relayd_bio_pending(BIO *bio) {
    return BIO_ctrl_pending(bio);
}

int relayd_x509_name_line(const X509_NAME *name, char *buf, int buflen) {
    if (buflen <= 0) return -1;
    BIO *mem = BIO_new(BIO_s_mem());
    if (mem == NULL) return -1;
    if (X509_NAME_print_ex(mem, name, 0, XN_FLAG_RFC2253) < 0) {
        BIO_free(mem);
        return -1;
    }
    int n = BIO_read(mem, buf, buflen - 1);
    BIO_free(mem);
    if (n < 0) n = 0;
    buf[n] = '\0';
    return n;
}

int relayd_x509_der(X509 *cert, unsigned char **out) {
    *out = NULL;
    return i2d_X509(cert, out);
}

void relayd_openssl_free(void *ptr) { OPENSSL_free(ptr); }

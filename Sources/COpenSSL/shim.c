/* See include/COpenSSL.h: wrappers for OpenSSL macros, and the few
 * multi-call sequences (CMS, S/MIME capabilities) that are shorter in C. */
#include "COpenSSL.h"
#include <limits.h>
#include <openssl/pem.h>
#include <string.h>
#include <time.h>

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

int relayd_pkey_kind(const EVP_PKEY *key) {
    switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_RSA: return 1;
    case EVP_PKEY_RSA_PSS: return 2;
    case EVP_PKEY_EC: return 3;
    case EVP_PKEY_ED25519: return 4;
    case EVP_PKEY_ED448: return 5;
    default: return 0;
    }
}

int relayd_ssl_ctx_current_cert_kind(SSL_CTX *ctx) {
    X509 *cert = SSL_CTX_get0_certificate(ctx);
    EVP_PKEY *key = cert == NULL ? NULL : X509_get0_pubkey(cert);
    return key == NULL ? -1 : relayd_pkey_kind(key);
}

EVP_PKEY *relayd_read_private_key_file(const char *path) {
    BIO *in = BIO_new_file(path, "r");
    if (in == NULL) return NULL;
    EVP_PKEY *key = PEM_read_bio_PrivateKey(in, NULL, NULL, NULL);
    BIO_free(in);
    return key;
}

int relayd_ssl_ctx_set1_sigalgs_list(SSL_CTX *ctx, const char *list) {
    return (int)SSL_CTX_set1_sigalgs_list(ctx, list);
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

char *relayd_x509_dns_names(X509 *cert) {
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    if (names == NULL) return NULL;
    size_t total = 0;
    int count = sk_GENERAL_NAME_num(names);
    for (int i = 0; i < count; i++) {
        const GENERAL_NAME *n = sk_GENERAL_NAME_value(names, i);
        if (n->type == GEN_DNS) total += (size_t)ASN1_STRING_length(n->d.dNSName) + 1;
    }
    /* Each name is followed by '\n'; the last one's becomes the NUL. A
     * dNSName holding a NUL or newline is a forgery: left out. */
    char *out = NULL;
    if (total > 0 && (out = OPENSSL_malloc(total)) != NULL) {
        size_t at = 0;
        for (int i = 0; i < count; i++) {
            const GENERAL_NAME *n = sk_GENERAL_NAME_value(names, i);
            if (n->type != GEN_DNS) continue;
            int len = ASN1_STRING_length(n->d.dNSName);
            const unsigned char *d = ASN1_STRING_get0_data(n->d.dNSName);
            if (len <= 0 || d == NULL) continue;
            if (memchr(d, 0, (size_t)len) != NULL || memchr(d, '\n', (size_t)len) != NULL) continue;
            memcpy(out + at, d, (size_t)len);
            at += (size_t)len;
            out[at++] = '\n';
        }
        if (at == 0) {
            OPENSSL_free(out);
            out = NULL;
        } else {
            out[at - 1] = '\0';
        }
    }
    GENERAL_NAMES_free(names);
    return out;
}

int relayd_x509_validity(const X509 *cert, int which, long long *out) {
    const ASN1_TIME *t = which == 0 ? X509_get0_notBefore(cert) : X509_get0_notAfter(cert);
    struct tm tm;
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1) return 0;
    *out = (long long)timegm(&tm);
    return 1;
}

int relayd_x509_spki_sha256(X509 *cert, unsigned char *out) {
    unsigned char *der = NULL;
    int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
    if (len <= 0) return 0;
    unsigned int mdlen = 0;
    int ok = EVP_Digest(der, (size_t)len, out, &mdlen, EVP_sha256(), NULL) == 1 && mdlen == 32;
    OPENSSL_free(der);
    return ok;
}

int relayd_ssl_peer_spki_sha256(const SSL *ssl, unsigned char *out) {
    X509 *leaf = SSL_get0_peer_certificate(ssl);
    return leaf == NULL ? 0 : relayd_x509_spki_sha256(leaf, out);
}

/* The data a TLSA record (RFC 6698 2.1) would hold for a DER certificate:
 * selector 0 the certificate, 1 its SubjectPublicKeyInfo; matching type 0
 * the bytes themselves, 1 SHA-256, 2 SHA-512. Writes at most `cap` bytes
 * to `out`; returns the length, 0 on any failure (or when `cap` is too
 * small). */
int relayd_tlsa_association(const unsigned char *der, long derlen, int selector, int mtype,
                            unsigned char *out, int cap) {
    const unsigned char *p = der;
    X509 *cert = d2i_X509(NULL, &p, derlen);
    if (cert == NULL) return 0;
    unsigned char *buf = NULL;
    int len = selector == 0 ? i2d_X509(cert, &buf) : selector == 1 ? i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &buf) : -1;
    X509_free(cert);
    if (len <= 0) return 0;
    int result = 0;
    if (mtype == 0) {
        if (len <= cap) { memcpy(out, buf, (size_t)len); result = len; }
    } else if (mtype == 1 || mtype == 2) {
        unsigned int mdlen = 0;
        const EVP_MD *md = mtype == 1 ? EVP_sha256() : EVP_sha512();
        if (cap >= EVP_MD_get_size(md) && EVP_Digest(buf, (size_t)len, out, &mdlen, md, NULL) == 1) result = (int)mdlen;
    }
    OPENSSL_free(buf);
    return result;
}


/* S/MIME encryption. Everything allocated here is freed here, except the
 * X509 of relayd_x509_from_pem and the DER of relayd_cms_encrypt_der, which
 * go to exactly one Swift owner. */

X509 *relayd_x509_from_pem(const unsigned char *pem, long len) {
    if (pem == NULL || len <= 0 || len > INT_MAX) return NULL;
    BIO *mem = BIO_new_mem_buf(pem, (int)len);
    if (mem == NULL) return NULL;
    X509 *cert = PEM_read_bio_X509(mem, NULL, NULL, NULL);
    BIO_free(mem);
    return cert;
}

long relayd_x509_key_usage(X509 *cert) {
    /* Reading the flags decodes and caches the extensions. One that cannot
     * be decoded marks the certificate invalid, and its keyUsage would then
     * read as absent, i.e. "every use allowed": refused instead. */
    uint32_t flags = X509_get_extension_flags(cert);
    if (flags & EXFLAG_INVALID) return -2;
    if ((flags & EXFLAG_KUSAGE) == 0) return -1;
    return (long)(X509_get_key_usage(cert) & 0xffff);
}

int relayd_x509_cms_key_kind(X509 *cert) {
    EVP_PKEY *key = X509_get0_pubkey(cert);
    if (key == NULL) return 0;
    switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_RSA: return 1;
    case EVP_PKEY_EC: case EVP_PKEY_X25519: case EVP_PKEY_X448: return 2;
    default: return 0;
    }
}

/* SMIMECapabilities (RFC 8551 2.5.2) is a SEQUENCE OF { capabilityID OID,
 * parameters ANY OPTIONAL }: the shape of X509_ALGORS, as OpenSSL's own
 * PKCS7_get_smimecap reads it. */
int relayd_x509_smime_caps(X509 *cert) {
    ASN1_OBJECT *oid = OBJ_txt2obj("1.2.840.113549.1.9.15", 1);
    if (oid == NULL) return -2;
    int at = X509_get_ext_by_OBJ(cert, oid, -1);
    ASN1_OBJECT_free(oid);
    if (at < 0) return -1;
    ASN1_OCTET_STRING *value = X509_EXTENSION_get_data(X509_get_ext(cert, at));
    if (value == NULL) return -2;
    const unsigned char *p = ASN1_STRING_get0_data(value);
    long len = ASN1_STRING_length(value);
    X509_ALGORS *caps = d2i_X509_ALGORS(NULL, &p, len);
    if (caps == NULL) return -2;
    int bits = 0;
    for (int i = 0; i < sk_X509_ALGOR_num(caps); i++) {
        const ASN1_OBJECT *alg = NULL;
        X509_ALGOR_get0(&alg, NULL, NULL, sk_X509_ALGOR_value(caps, i));
        int nid = OBJ_obj2nid(alg);
        if (nid == NID_aes_256_gcm) bits |= 1;
        if (nid == NID_aes_256_cbc) bits |= 2;
    }
    sk_X509_ALGOR_pop_free(caps, X509_ALGOR_free);
    return bits;
}

long relayd_cms_encrypt_der(X509 *const *certs, int ncerts, const unsigned char *data, long len, int cbc,
                            unsigned char **out) {
    *out = NULL;
    if (ncerts <= 0 || len < 0 || len > INT_MAX) return -1;
    long result = -1;
    STACK_OF(X509) *stack = sk_X509_new_null();
    BIO *in = BIO_new_mem_buf(len > 0 ? (const void *)data : (const void *)"", (int)len);
    CMS_ContentInfo *cms = NULL;
    if (stack == NULL || in == NULL) goto done;
    /* The stack borrows the certificates: sk_X509_free below frees the
     * stack alone. */
    for (int i = 0; i < ncerts; i++)
        if (sk_X509_push(stack, certs[i]) <= 0) goto done;
    cms = CMS_encrypt(stack, in, cbc ? EVP_aes_256_cbc() : EVP_aes_256_gcm(), CMS_BINARY);
    if (cms == NULL) goto done;
    int n = i2d_CMS_ContentInfo(cms, out);
    if (n > 0) result = n;
done:
    CMS_ContentInfo_free(cms);
    BIO_free(in);
    sk_X509_free(stack);
    return result;
}

/*
 * COpenSSL — the thinnest possible bridge from Swift to the system's
 * OpenSSL 3 (libssl-dev). Swift imports OpenSSL's real functions directly;
 * this header adds only wrappers for what the importer cannot see:
 * function-like macros (protocol bounds, SNI, modes, options), the typed
 * STACK_OF accessors, and a few constants that are macro expressions —
 * plus S/MIME's CMS encryption and certificate facts, where one C function
 * with its frees beside its allocations is shorter and safer than the same
 * sequence of stack, BIO and ASN.1 calls from Swift.
 *
 * Owner: RelayCore/TLS is the only Swift code that imports this module.
 */
#ifndef RELAYD_COPENSSL_H
#define RELAYD_COPENSSL_H

#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/opensslv.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/cms.h>

/* Protocol version numbers, exported as plain ints. */
int relayd_tls1_version(void);
int relayd_tls1_1_version(void);
int relayd_tls1_2_version(void);
int relayd_tls1_3_version(void);

/* SSL_CTX macros. */
int relayd_ssl_ctx_set_min_proto_version(SSL_CTX *ctx, int version);
int relayd_ssl_ctx_set_max_proto_version(SSL_CTX *ctx, int version);
void relayd_ssl_ctx_harden(SSL_CTX *ctx);
long relayd_ssl_ctx_set_session_cache_server(SSL_CTX *ctx);

/* Server certificates (dual RSA + ECDSA chains). The kind of a key, as
 * one of OpenSSL's certificate slots: 1 RSA, 2 RSA-PSS, 3 EC (ECDSA),
 * 4 Ed25519, 5 Ed448, 0 anything else. A context holds one chain per kind;
 * loading a second chain of a kind replaces the first. */
int relayd_pkey_kind(const EVP_PKEY *key);
/* The kind of the context's current certificate (the chain loaded last),
 * -1 when it has none. */
int relayd_ssl_ctx_current_cert_kind(SSL_CTX *ctx);
/* A PEM private key read from a file (caller frees with EVP_PKEY_free),
 * NULL if unreadable. */
EVP_PKEY *relayd_read_private_key_file(const char *path);
/* SSL_CTX_set1_sigalgs_list: the signature algorithms a side offers. */
int relayd_ssl_ctx_set1_sigalgs_list(SSL_CTX *ctx, const char *list);

/* SSL macros. */
int relayd_ssl_set_tlsext_host_name(SSL *ssl, const char *name);
long relayd_ssl_get_verify_result(const SSL *ssl);

/* STACK_OF(X509) access. */
int relayd_sk_x509_num(const STACK_OF(X509) *stack);
X509 *relayd_sk_x509_value(const STACK_OF(X509) *stack, int index);

/* STACK_OF(SSL_CIPHER) access: the suites a context may negotiate. */
int relayd_sk_ssl_cipher_num(const STACK_OF(SSL_CIPHER) *stack);
const SSL_CIPHER *relayd_sk_ssl_cipher_value(const STACK_OF(SSL_CIPHER) *stack, int index);

/* Memory BIO helper: bytes waiting to be read from a BIO. */
size_t relayd_bio_pending(BIO *bio);

/* Subject or issuer of a certificate as one RFC 2253 line into buf. */
int relayd_x509_name_line(const X509_NAME *name, char *buf, int buflen);

/* DER encoding of a certificate; caller frees *out with OPENSSL_free via
 * relayd_openssl_free. Returns the length or -1. */
int relayd_x509_der(X509 *cert, unsigned char **out);
void relayd_openssl_free(void *ptr);

/* The certificate's subjectAltName dNSName entries, joined by '\n', into a
 * buffer the caller frees with relayd_openssl_free. NULL when there are
 * none (or on allocation failure). */
char *relayd_x509_dns_names(X509 *cert);

/* A certificate validity bound as seconds since the epoch (UTC).
 * which: 0 = notBefore, 1 = notAfter. Returns 1, or 0 if unreadable. */
int relayd_x509_validity(const X509 *cert, int which, long long *out);

/* SHA-256 of the DER SubjectPublicKeyInfo (DANE's SPKI/SHA2-256 form)
 * into out[32]. Returns 1, or 0 on failure. */
int relayd_x509_spki_sha256(X509 *cert, unsigned char *out);

/* The client's view of the server leaf: SPKI SHA-256 without taking a
 * reference or encoding the chain. Returns 1, 0 with no peer certificate. */
int relayd_ssl_peer_spki_sha256(const SSL *ssl, unsigned char *out);
/* A TLSA association (selector, matching type) of a DER certificate. */
int relayd_tlsa_association(const unsigned char *der, long derlen, int selector, int mtype,
                            unsigned char *out, int cap);


/* S/MIME encryption (RelayTLS/SMIME*.swift). */

/* The first certificate in a PEM buffer; NULL when there is none. The
 * caller owns the result and frees it with X509_free. */
X509 *relayd_x509_from_pem(const unsigned char *pem, long len);

/* The keyUsage bits of a certificate, -1 when it has no keyUsage
 * extension (every use allowed), -2 when its extensions cannot be decoded. */
long relayd_x509_key_usage(X509 *cert);
/* What the certificate's public key can take in CMS: 1 key transport (RSA),
 * 2 key agreement (EC, X25519, X448), 0 anything else. */
int relayd_x509_cms_key_kind(X509 *cert);

/* The S/MIME Capabilities extension (1.2.840.113549.1.9.15): -1 when the
 * certificate has none, -2 when it cannot be read, otherwise a bit set:
 * 1 lists AES-256-GCM, 2 lists AES-256-CBC (0: a list naming neither). */
int relayd_x509_smime_caps(X509 *cert);

/* CMS_encrypt of `data` to `certs` (borrowed, not freed): cbc 0 is
 * AES-256-GCM (AuthEnvelopedData), 1 AES-256-CBC (EnvelopedData), binary
 * content. On success *out holds the DER ContentInfo, freed by the caller
 * with relayd_openssl_free, and the length is returned; -1 on failure,
 * with OpenSSL's error queue saying why. */
long relayd_cms_encrypt_der(X509 *const *certs, int ncerts, const unsigned char *data, long len, int cbc,
                            unsigned char **out);

#endif

#ifndef COSI_OPENSSL_SHIMS_H
#define COSI_OPENSSL_SHIMS_H
// Functions for the OpenSSL macros Swift cannot import. Each is a one-line wrapper.
#include <openssl/ssl.h>
#include <openssl/bio.h>
#include <openssl/x509.h>

int cosi_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version);
int cosi_SSL_CTX_set_max_proto_version(SSL_CTX *ctx, int version);
long cosi_BIO_set_mem_eof_return(BIO *bio, int value);
void cosi_OPENSSL_free(void *ptr);
long cosi_SSL_CTX_set_options(SSL_CTX *ctx, unsigned long options);
long cosi_SSL_CTX_set_mode(SSL_CTX *ctx, long mode);
int cosi_SSL_set_tlsext_host_name(SSL *ssl, const char *name);
/// Installs an ALPN selection callback on a server context that selects "cosi-rpc/1"
/// and refuses the handshake (fatal alert) when the client offers ALPN without it.
void cosi_SSL_CTX_require_cosi_alpn(SSL_CTX *ctx);
/// Sets the client's ALPN offer to exactly "cosi-rpc/1". Returns 0 on success.
int cosi_SSL_set_cosi_alpn(SSL *ssl);
/// Writes the protocol selected by ALPN (or nothing) into buf; returns its length.
int cosi_SSL_get_alpn(const SSL *ssl, char *buf, int cap);
/// Frees a stack of certificates and drops a reference to each (sk_X509_pop_free).
void cosi_sk_X509_free_all(STACK_OF(X509) *chain);

// Constants that are macros in the headers.
extern const int cosi_TLS1_3_VERSION;
extern const int cosi_TLS1_2_VERSION;
extern const unsigned long cosi_SSL_OP_NO_RENEGOTIATION;
extern const unsigned long cosi_SSL_OP_NO_COMPRESSION;
extern const unsigned long cosi_SSL_OP_NO_TICKET;
extern const long cosi_SSL_MODE_RELEASE_BUFFERS;
extern const unsigned long cosi_XN_FLAG_RFC2253;
#endif

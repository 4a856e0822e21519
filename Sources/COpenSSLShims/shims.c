#include "COpenSSLShims.h"
#include <string.h>
#include <openssl/crypto.h>

int cosi_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version) { return (int)SSL_CTX_set_min_proto_version(ctx, version); }
int cosi_SSL_CTX_set_max_proto_version(SSL_CTX *ctx, int version) { return (int)SSL_CTX_set_max_proto_version(ctx, version); }
long cosi_BIO_set_mem_eof_return(BIO *bio, int value) { return BIO_set_mem_eof_return(bio, value); }
void cosi_OPENSSL_free(void *ptr) { OPENSSL_free(ptr); }
long cosi_SSL_CTX_set_options(SSL_CTX *ctx, unsigned long options) { return (long)SSL_CTX_set_options(ctx, options); }
long cosi_SSL_CTX_set_mode(SSL_CTX *ctx, long mode) { return SSL_CTX_set_mode(ctx, mode); }
int cosi_SSL_set_tlsext_host_name(SSL *ssl, const char *name) { return (int)SSL_set_tlsext_host_name(ssl, name); }
void cosi_sk_X509_free_all(STACK_OF(X509) *chain) { sk_X509_pop_free(chain, X509_free); }

static const unsigned char cosi_alpn_wire[] = { 10, 'c','o','s','i','-','r','p','c','/','1' };

static int cosi_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                            const unsigned char *in, unsigned int inlen, void *arg) {
    (void)ssl; (void)arg;
    unsigned int i = 0;
    while (i < inlen) {
        unsigned int len = in[i];
        if (i + 1 + len > inlen) break;
        if (len == 10 && memcmp(in + i + 1, cosi_alpn_wire + 1, 10) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)len;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + len;
    }
    // The client offered ALPN protocols, none of them ours: refuse the handshake.
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

void cosi_SSL_CTX_require_cosi_alpn(SSL_CTX *ctx) { SSL_CTX_set_alpn_select_cb(ctx, cosi_alpn_select, NULL); }
int cosi_SSL_set_cosi_alpn(SSL *ssl) { return SSL_set_alpn_protos(ssl, cosi_alpn_wire, sizeof(cosi_alpn_wire)); }
int cosi_SSL_get_alpn(const SSL *ssl, char *buf, int cap) {
    const unsigned char *data = NULL; unsigned int len = 0;
    SSL_get0_alpn_selected(ssl, &data, &len);
    if (data == NULL || (int)len > cap) return 0;
    memcpy(buf, data, len);
    return (int)len;
}

const int cosi_TLS1_3_VERSION = TLS1_3_VERSION;
const int cosi_TLS1_2_VERSION = TLS1_2_VERSION;
const unsigned long cosi_SSL_OP_NO_RENEGOTIATION = SSL_OP_NO_RENEGOTIATION;
const unsigned long cosi_SSL_OP_NO_COMPRESSION = SSL_OP_NO_COMPRESSION;
const unsigned long cosi_SSL_OP_NO_TICKET = SSL_OP_NO_TICKET;
const long cosi_SSL_MODE_RELEASE_BUFFERS = SSL_MODE_RELEASE_BUFFERS;
const unsigned long cosi_XN_FLAG_RFC2253 = XN_FLAG_RFC2253;

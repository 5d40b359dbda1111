/*
 * tls_int.h — what the files of the TLS engine share (tls.h is the public
 * API; nothing outside src/stream/tls_*.c includes this header).
 *
 * The files, by noun, each on OpenSSL 3:
 *
 *   tls_store.c       the certificate store: loading (options, certfile
 *                     patterns, hosts), the name index and its lookup, the
 *                     SSL_CTX policy with the SNI callback, the trust
 *                     anchors, the reference count; and the host-name
 *                     syntax and message helpers every part uses
 *   tls_certfile.c    certfiles: PEM blocks read into a batch, keys paired
 *                     with certificates, chains built, committed to a store
 *   tls_selfsigned.c  self-signed certificates for hosts no certfile covers
 *   tls_conn.c        one connection: custom BIO, handshake, input, send,
 *                     pause and resume, shutdown, ALPN, channel binding
 *   tls_verify.c      the peer's certificate: chain verification against the
 *                     trust anchors and RFC 6125 identity matching
 *
 * Who calls whom: xd_tls_store_load (tls_store.c) drives tls_certfile.c and
 * tls_selfsigned.c, which build on the store's helpers; tls_conn.c takes
 * its certificates and name lookup from the store; tls_verify.c reads a
 * finished connection and the store's trust anchors.  The one call the
 * other way: every SSL_CTX carries tls_conn.c's ALPN callback.
 *
 * Invariants, all files: the OpenSSL error queue is cleared before every SSL
 * call and after every failure, so one connection's error never shows up on
 * another's call on the same thread; a store is immutable once
 * xd_tls_store_load has returned it (except its reference count); a
 * connection is touched by its owner loop only.
 */
#ifndef XMPPD_STREAM_TLS_INT_H
#define XMPPD_STREAM_TLS_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "stream/tls.h"

#define TLS_NAME_MAX 253 /* RFC 1035: longest domain name, A-label form */

/* ---- the store (tls_store.c) --------------------------------------------- */

/* One indexed name.  Immutable after load. */
typedef struct tls_name {
    char *name;       /* lower-case A-label form; for a wildcard without the "*." */
    bool wild;        /* from "*.<name>": covers exactly one more label */
    size_t cert;      /* index into xd_tls_store.certs */
    time_t not_after; /* of that certificate: the later one wins a tie */
} tls_name_t;

/* Immutable after xd_tls_store_load returns, except refs.  Written only by
 * the loader (tls_store.c, tls_certfile.c, tls_selfsigned.c) before then. */
struct xd_tls_store {
    _Atomic unsigned refs;      /* references; the last unref frees */
    SSL_CTX **certs;            /* one SSL_CTX per certificate (owned) */
    size_t ncerts;              /* entries in certs */
    tls_name_t *names;          /* sorted by (name, wild), unique */
    size_t nnames;              /* entries in names */
    xd_tls_selfsigned_t *self;  /* self-signed certificates in use */
    size_t nself;               /* entries in self */
    char **warnings;            /* lines for the log */
    size_t nwarnings;           /* entries in warnings */
    int min_version;            /* TLS1_2_VERSION or TLS1_3_VERSION */
    X509_STORE *trust;          /* trust anchors for peer verification (owned); OpenSSL
                                 * locks it internally, so any worker may verify */
};

/* Sets *err (if err and *err is still NULL) to a formatted message and
 * returns code. */
int tls_fail(char **err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Adds a formatted line to st's warnings.  Loader only. */
void tls_warn(xd_tls_store_t *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The reason of the oldest queued OpenSSL error (a static string), then
 * clears the queue.  dflt when the queue holds none. */
const char *tls_ossl_reason(const char *dflt);

/* True for an IP-address domainpart (RFC7622 3.2): "192.0.2.1" or
 * "[2001:db8::1]". */
bool tls_is_ip_literal(const char *s);

/* Writes the lower-case A-label form of name into out[TLS_NAME_MAX + 1].
 * Only letters, digits, '-', '_', '.' and, when allow_wild, a leading "*."
 * are accepted.  Returns false for anything else. */
bool tls_name_norm(const char *name, char *out, bool allow_wild);

/* An ASN1 string as a NUL-terminated copy (xd_free), or NULL when it does
 * not convert or holds a NUL. */
char *tls_asn1_str(const ASN1_STRING *s);

/* The last (most specific) subject CN of x as a NUL-terminated copy
 * (xd_free), or NULL when there is none. */
char *tls_cert_cn(X509 *x);

/* The index of the certificate covering host (exact, or a wildcard one label
 * up), or -1; NULL or a malformed host is covered by none. */
long tls_lookup(const xd_tls_store_t *st, const char *host);

/* Indexes every name certificate x covers under cert (not sorted yet: call
 * tls_index_finish).  Returns how many names it found. */
size_t tls_index_cert(xd_tls_store_t *st, X509 *x, size_t cert);

/* Sorts the index and keeps, per (name, wild), the entry expiring last. */
void tls_index_finish(xd_tls_store_t *st);

/* An SSL_CTX with the store's policy and no certificate yet, for server
 * and client connections (TLS_method).  Returns 0 and *out, or an error
 * with *err set. */
int tls_ctx_base(xd_tls_store_t *st, const xd_tls_store_opts_t *o, SSL_CTX **out, char **err);

/* ---- certfiles (tls_certfile.c) ------------------------------------------ */

/* A certificate read from a file.  Loader only. */
typedef struct tls_bcert {
    X509 *x;          /* owned */
    const char *file; /* tls_batch.files entry */
    EVP_PKEY *key;    /* matching key (tls_batch.keys entry's), or NULL */
} tls_bcert_t;

/* A private key read from a file.  Loader only. */
typedef struct tls_bkey {
    EVP_PKEY *k;      /* owned */
    const char *file; /* tls_batch.files entry */
} tls_bkey_t;

/* Certificates and keys read from some files, before pairing.  Loader
 * only. */
typedef struct tls_batch {
    tls_bcert_t *certs; /* in file order */
    size_t ncerts;      /* entries in certs */
    tls_bkey_t *keys;   /* in file order */
    size_t nkeys;       /* entries in keys */
    char **files;       /* paths read (owned) */
    size_t nfiles;      /* entries in files */
} tls_batch_t;

/* Frees what b holds and zeroes it. */
void tls_batch_free(tls_batch_t *b);

/* Reads every certificate and key of one PEM file into b. */
int tls_batch_read(tls_batch_t *b, const char *path, char **err);

/* Pairs keys with certificates and turns every certificate that has a key
 * into an SSL_CTX of st (certificates already in st by an equal leaf are
 * skipped).  Certificates without a key that are CAs are chain material. */
int tls_batch_commit(tls_batch_t *b, xd_tls_store_t *st, const xd_tls_store_opts_t *o,
                     char **err);

/* ---- self-signed certificates (tls_selfsigned.c) ------------------------- */

/* Makes sure host (A-label form ahost) is covered, with
 * <data_dir>/certs/<ahost>.pem: reused while valid, else generated. */
int tls_selfsigned(xd_tls_store_t *st, const xd_tls_store_opts_t *o, const char *host,
                   const char *ahost, char **err);

/* ---- connections (tls_conn.c) -------------------------------------------- */

typedef enum tls_state {
    TLS_HANDSHAKE = 0, /* waiting for / inside the handshake */
    TLS_OPEN,          /* handshake done */
    TLS_PEER_CLOSED,   /* the peer's close_notify arrived */
    TLS_FAILED,        /* fatal: err says why */
} tls_state;

/* One connection.  Owner loop only (the ALPN callback reads alpn from
 * inside tls_drive, on the owner loop too); tls_verify.c only reads it. */
struct xd_tls {
    SSL *ssl;                /* owns the BIO */
    xd_tls_store_t *store;   /* one reference */
    xd_tls_io_t io;          /* the caller's callbacks */
    const uint8_t *in;       /* ciphertext the BIO reads next; NULL outside tls_drive */
    size_t in_len;           /* bytes left at in */
    uint8_t *pend;           /* kept ciphertext (while paused), or NULL */
    size_t pend_off;         /* first unread byte of pend */
    size_t pend_len;         /* bytes in pend, read ones included */
    const char *err;         /* static reason after TLS_FAILED */
    int send_err;            /* io.send's error, 0 if none */
    uint8_t state;           /* tls_state */
    bool paused;             /* delivery stopped */
    bool in_drive;           /* inside tls_drive (callbacks may run) */
    bool shut_sent;          /* our close_notify went out */
    bool client;             /* made by xd_tls_client_new */
    bool begun;              /* the handshake has started (first drive ran) */
    char *alpn;              /* our ALPN protocol (owned), or NULL: the one we offer
                              * (client) or accept (server) */
};

/* The ALPN selection callback of every SSL_CTX (RFC7301 3.2): selects the
 * connection's protocol if the client offers it. */
int tls_alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                const unsigned char *in, unsigned int inlen, void *arg);

#endif

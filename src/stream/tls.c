/*
 * tls.c — the TLS engine and certificate store (tls.h), on OpenSSL 3.
 *
 * Store: loaded once (tls_batch_* read PEM files and pair keys with
 * certificates, tls_ctx_base builds one SSL_CTX per certificate, the name
 * index maps host names to certificates, tls_trust_load reads the trust
 * anchors), then immutable.  Every SSL_CTX is made with TLS_method(), so
 * one serves server connections (c2s, s2s-in) and client connections
 * (s2s-out) alike.  The SNI callback of every SSL_CTX looks the client's
 * name up in the index and switches the connection to that certificate's
 * SSL_CTX; the ALPN callback accepts the one protocol the connection was
 * given (xd_tls_t.alpn).
 *
 * Peer certificates: OpenSSL never fails a handshake on them (clients use
 * SSL_VERIFY_NONE; a server that asks for one uses SSL_VERIFY_PEER with a
 * callback that accepts everything).  xd_tls_peer_verify runs the chain
 * check against the store's X509_STORE afterwards and the RFC 6125 name
 * checks itself (tls_peer_* below), because OpenSSL's X509_check_host
 * knows neither SRV-IDs nor XmppAddrs.
 *
 * Connection: a custom BIO (tls_bio_*) whose read side returns bytes from
 * the slice being fed (xd_tls_t.in) and whose write side calls io.send
 * directly, so no ciphertext is buffered here between calls.  OpenSSL keeps
 * at most one partial record, and with SSL_MODE_RELEASE_BUFFERS frees its
 * record buffers when idle.  The only copy this file makes is of
 * ciphertext that arrives or remains while the caller has paused delivery
 * (xd_tls_t.pend, freed as soon as it is drained).
 *
 * Invariants: the OpenSSL error queue is cleared before every SSL call and
 * after every failure, so one connection's error never shows up on
 * another's call on the same thread; xd_tls_t.in is non-NULL only inside
 * tls_drive; io.plain and io.handshake run only from tls_drive.
 */
#include "stream/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <idn2.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"

/* TLS <= 1.2 default: forward secrecy and AEAD only (Mozilla "intermediate"). */
#define TLS_DEFAULT_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20"
#define TLS_SID_CTX "xmppd"        /* session id context, equal in every SSL_CTX */
#define TLS_NAME_MAX 253           /* RFC 1035: longest domain name, A-label form */
#define TLS_CHAIN_DEPTH 10         /* intermediates looked for above a leaf */
#define TLS_PLAIN_CHUNK 16384      /* plaintext read per SSL_read: one full record */
#define TLS_SELFSIGNED_DAYS 365    /* validity of generated certificates */
#define TLS_EXPORTER_LABEL "EXPORTER-Channel-Binding" /* RFC 9266 2 */
#define TLS_EXPORTER_LEN 32        /* RFC 9266 2 */

/* ---- store ------------------------------------------------------------- */

/* One indexed name.  Immutable after load. */
typedef struct tls_name {
    char *name;      /* lower-case A-label form; for a wildcard without the "*." */
    bool wild;       /* from "*.<name>": covers exactly one more label */
    size_t cert;     /* index into xd_tls_store.certs */
    time_t not_after; /* of that certificate: the later one wins a tie */
} tls_name_t;

/* Immutable after xd_tls_store_load returns, except refs. */
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

static char *
tls_vfmt(const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    XD_ASSERT(n >= 0);
    char *s = xd_malloc((size_t)n + 1);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

/* Sets *err (if err) to a formatted message and returns code. */
static int __attribute__((format(printf, 3, 4)))
tls_fail(char **err, int code, const char *fmt, ...)
{
    if (err != NULL && *err == NULL) {
        va_list ap;
        va_start(ap, fmt);
        *err = tls_vfmt(fmt, ap);
        va_end(ap);
    }
    return code;
}

static void __attribute__((format(printf, 2, 3)))
tls_warn(xd_tls_store_t *st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    st->warnings = xd_realloc(st->warnings, (st->nwarnings + 1) * sizeof *st->warnings);
    st->warnings[st->nwarnings++] = tls_vfmt(fmt, ap);
    va_end(ap);
}

/* The reason of the oldest queued OpenSSL error (a static string), then
 * clears the queue.  dflt when the queue holds none. */
static const char *
tls_ossl_reason(const char *dflt)
{
    unsigned long e = ERR_peek_error();
    const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return r != NULL ? r : dflt;
}

static bool
tls_is_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            return false;
    return true;
}

/* True for an IP-address domainpart (RFC7622 3.2): "192.0.2.1" or
 * "[2001:db8::1]". */
static bool
tls_is_ip_literal(const char *s)
{
    unsigned char addr[16];
    char v6[64];
    size_t n = strlen(s);
    if (inet_pton(AF_INET, s, addr) == 1)
        return true;
    if (n < 3 || n - 2 >= sizeof v6 || s[0] != '[' || s[n - 1] != ']')
        return false;
    memcpy(v6, s + 1, n - 2);
    v6[n - 2] = '\0';
    return inet_pton(AF_INET6, v6, addr) == 1;
}

/* Writes the lower-case A-label form of name into out[TLS_NAME_MAX + 1].
 * Only letters, digits, '-', '_', '.' and, when allow_wild, a leading "*."
 * are accepted.  Returns false for anything else. */
static bool
tls_name_norm(const char *name, char *out, bool allow_wild)
{
    char *alabel = NULL, *joined = NULL;
    const char *s = name;
    if (!tls_is_ascii(name)) {
        bool wild = allow_wild && strncmp(name, "*.", 2) == 0; /* "*." + U-labels */
        if (idn2_lookup_u8((const uint8_t *)name + (wild ? 2 : 0), (uint8_t **)&alabel,
                           IDN2_NFC_INPUT) != IDN2_OK)
            return false;
        s = alabel;
        if (wild) {
            size_t an = strlen(alabel);
            joined = xd_malloc(an + 3);
            memcpy(joined, "*.", 2);
            memcpy(joined + 2, alabel, an + 1);
            s = joined;
        }
    }
    size_t n = strlen(s);
    bool ok = n > 0 && n <= TLS_NAME_MAX;
    for (size_t i = 0; ok && i < n; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c == '*')
            ok = allow_wild && i == 0 && n > 2 && s[1] == '.';
        else
            ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
                 c == '.';
        out[i] = c;
    }
    out[ok ? n : 0] = '\0';
    if (ok && (out[0] == '.' || out[n - 1] == '.' || strstr(out, "..") != NULL))
        ok = false;
    idn2_free(alabel);
    xd_free(joined);
    return ok;
}

static int
tls_name_cmp(const void *a, const void *b)
{
    const tls_name_t *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c != 0)
        return c;
    if (x->wild != y->wild)
        return x->wild ? 1 : -1;
    /* later expiry first, so that dedup keeps it */
    return x->not_after > y->not_after ? -1 : x->not_after < y->not_after ? 1 : 0;
}

/* Sorts the index and keeps, per (name, wild), the entry expiring last. */
static void
tls_index_finish(xd_tls_store_t *st)
{
    if (st->nnames == 0)
        return;
    qsort(st->names, st->nnames, sizeof *st->names, tls_name_cmp);
    size_t w = 0;
    for (size_t r = 0; r < st->nnames; r++) {
        if (w > 0 && strcmp(st->names[w - 1].name, st->names[r].name) == 0 &&
            st->names[w - 1].wild == st->names[r].wild) {
            xd_free(st->names[r].name);
            continue;
        }
        st->names[w++] = st->names[r];
    }
    st->nnames = w;
}

static const tls_name_t *
tls_index_find(const xd_tls_store_t *st, const char *name, bool wild)
{
    tls_name_t key = { .name = (char *)name, .wild = wild };
    size_t lo = 0, hi = st->nnames;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const tls_name_t *e = &st->names[mid];
        int c = strcmp(key.name, e->name);
        if (c == 0)
            c = key.wild == e->wild ? 0 : key.wild ? 1 : -1;
        if (c == 0)
            return e;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* The certificate index covering host, or -1. */
static long
tls_lookup(const xd_tls_store_t *st, const char *host)
{
    char n[TLS_NAME_MAX + 1];
    if (host == NULL || !tls_name_norm(host, n, false))
        return -1;
    const tls_name_t *e = tls_index_find(st, n, false);
    if (e == NULL) {
        const char *dot = strchr(n, '.');
        if (dot != NULL && dot[1] != '\0')
            e = tls_index_find(st, dot + 1, true); /* RFC6125 6.4.3: one label */
    }
    return e != NULL ? (long)e->cert : -1;
}

static void
tls_index_add(xd_tls_store_t *st, const char *raw, size_t cert, time_t not_after)
{
    char n[TLS_NAME_MAX + 1];
    if (!tls_name_norm(raw, n, true))
        return;
    bool wild = n[0] == '*';
    st->names = xd_realloc(st->names, (st->nnames + 1) * sizeof *st->names);
    st->names[st->nnames++] = (tls_name_t){
        .name = xd_strdup(wild ? n + 2 : n), .wild = wild, .cert = cert, .not_after = not_after
    };
}

static time_t
tls_asn1_time(const ASN1_TIME *t)
{
    struct tm tm;
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return timegm(&tm);
}

/* An ASN1 string as a NUL-terminated copy (xd_free), or NULL. */
static char *
tls_asn1_str(const ASN1_STRING *s)
{
    unsigned char *u = NULL;
    int n = ASN1_STRING_to_UTF8(&u, s);
    if (n < 0)
        return NULL;
    char *r = NULL;
    if (memchr(u, '\0', (size_t)n) == NULL)
        r = xd_strndup((const char *)u, (size_t)n);
    OPENSSL_free(u);
    return r;
}

/* Indexes every name certificate x covers under cert.  Returns how many
 * names it found. */
static size_t
tls_index_cert(xd_tls_store_t *st, X509 *x, size_t cert)
{
    size_t before = st->nnames;
    time_t na = tls_asn1_time(X509_get0_notAfter(x));
    bool have_dns = false;
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        char *s = NULL;
        if (g->type == GEN_DNS) {
            have_dns = true;
            s = tls_asn1_str(g->d.dNSName);
        } else if (g->type == GEN_OTHERNAME) {
            int nid = OBJ_obj2nid(g->d.otherName->type_id);
            const ASN1_TYPE *v = g->d.otherName->value;
            if (nid == NID_XmppAddr && v->type == V_ASN1_UTF8STRING) {
                s = tls_asn1_str(v->value.utf8string); /* RFC6120 13.7.1.4 */
                if (s != NULL && strpbrk(s, "@/") != NULL) {
                    xd_free(s); /* a user JID, not a domain */
                    s = NULL;
                }
            } else if (nid == NID_SRVName && v->type == V_ASN1_IA5STRING) {
                char *srv = tls_asn1_str(v->value.ia5string); /* RFC 4985 */
                if (srv != NULL && (strncmp(srv, "_xmpp-client.", 13) == 0 ||
                                    strncmp(srv, "_xmpp-server.", 13) == 0))
                    s = xd_strdup(srv + 13);
                xd_free(srv);
            }
        }
        if (s != NULL)
            tls_index_add(st, s, cert, na);
        xd_free(s);
    }
    GENERAL_NAMES_free(gens);
    if (!have_dns) { /* RFC6125 6.4.4: CN only without a dNSName */
        const X509_NAME *subj = X509_get_subject_name(x);
        int last = -1;
        for (int i = -1; (i = X509_NAME_get_index_by_NID(subj, NID_commonName, i)) >= 0;)
            last = i;
        if (last >= 0) {
            char *s = tls_asn1_str(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, last)));
            if (s != NULL)
                tls_index_add(st, s, cert, na);
            xd_free(s);
        }
    }
    return st->nnames - before;
}

/* ---- store: SSL_CTX ----------------------------------------------------- */

static int tls_alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg);

static int
tls_sni_cb(SSL *ssl, int *alert, void *arg)
{
    (void)alert;
    const xd_tls_store_t *st = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (name == NULL)
        return SSL_TLSEXT_ERR_NOACK;
    long i = tls_lookup(st, name);
    /* An unknown name keeps the default certificate (RFC 6066 3 allows
     * going on without an alert). */
    if (i >= 0 && st->certs[i] != SSL_get_SSL_CTX(ssl) &&
        SSL_set_SSL_CTX(ssl, st->certs[i]) == NULL)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    return SSL_TLSEXT_ERR_OK;
}

/* An SSL_CTX with the store's policy and no certificate yet, for server
 * and client connections (TLS_method). */
static int
tls_ctx_base(xd_tls_store_t *st, const xd_tls_store_opts_t *o, SSL_CTX **out, char **err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (ctx == NULL)
        return tls_fail(err, XD_EINTERNAL, "SSL_CTX_new: %s", tls_ossl_reason("failed"));
    SSL_CTX_set_min_proto_version(ctx, st->min_version);
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_clear_options(ctx, SSL_OP_ALLOW_CLIENT_RENEGOTIATION | SSL_OP_NO_TICKET);
    /* Idle memory: record buffers freed when empty; no server-side session
     * cache (TLS 1.2 would keep every session for hours) — resumption by
     * stateless tickets, which are on by default. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)TLS_SID_CTX,
                                   sizeof TLS_SID_CTX - 1);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_dh_auto(ctx, 1); /* only for DHE suites an operator adds */
    int rc = 0;
    if (SSL_CTX_set_cipher_list(ctx, o->ciphers ? o->ciphers : TLS_DEFAULT_CIPHERS) != 1)
        rc = tls_fail(err, XD_EINVAL, "ciphers: \"%s\": %s",
                      o->ciphers ? o->ciphers : TLS_DEFAULT_CIPHERS,
                      tls_ossl_reason("no cipher matches"));
    else if (o->ciphersuites != NULL && SSL_CTX_set_ciphersuites(ctx, o->ciphersuites) != 1)
        rc = tls_fail(err, XD_EINVAL, "ciphersuites: \"%s\": %s", o->ciphersuites,
                      tls_ossl_reason("no suite matches"));
    if (rc != 0) {
        SSL_CTX_free(ctx);
        return rc;
    }
    SSL_CTX_set_tlsext_servername_callback(ctx, tls_sni_cb);
    SSL_CTX_set_tlsext_servername_arg(ctx, st);
    SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_cb, NULL);
    *out = ctx;
    return 0;
}

/* ---- store: reading PEM files ------------------------------------------ */

/* A certificate read from a file. */
typedef struct tls_bcert {
    X509 *x;          /* owned */
    const char *file; /* tls_batch.files entry */
    EVP_PKEY *key;    /* matching key (tls_batch.keys entry's), or NULL */
} tls_bcert_t;

/* A private key read from a file. */
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

static void
tls_batch_free(tls_batch_t *b)
{
    for (size_t i = 0; i < b->ncerts; i++)
        X509_free(b->certs[i].x);
    for (size_t i = 0; i < b->nkeys; i++)
        EVP_PKEY_free(b->keys[i].k);
    for (size_t i = 0; i < b->nfiles; i++)
        xd_free(b->files[i]);
    xd_free(b->certs);
    xd_free(b->keys);
    xd_free(b->files);
    memset(b, 0, sizeof *b);
}

static bool
tls_pem_is_cert(const char *name)
{
    return strcmp(name, PEM_STRING_X509) == 0 || strcmp(name, PEM_STRING_X509_OLD) == 0 ||
           strcmp(name, PEM_STRING_X509_TRUSTED) == 0;
}

static bool
tls_pem_is_key(const char *name)
{
    size_t n = strlen(name);
    return n >= 11 && strcmp(name + n - 11, "PRIVATE KEY") == 0;
}

/* Reads every certificate and key of one PEM file into b. */
static int
tls_batch_read(tls_batch_t *b, const char *path, char **err)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return tls_fail(err, XD_ETLS_CERT, "%s: %s", path, strerror(errno));
    BIO *bio = BIO_new_fp(f, BIO_CLOSE);
    if (bio == NULL) {
        fclose(f);
        return tls_fail(err, XD_ETLS_CERT, "%s: %s", path, tls_ossl_reason("BIO_new_fp failed"));
    }
    b->files = xd_realloc(b->files, (b->nfiles + 1) * sizeof *b->files);
    const char *file = b->files[b->nfiles++] = xd_strdup(path);

    int rc = 0;
    size_t found = 0;
    ERR_clear_error();
    while (rc == 0) {
        char *name = NULL, *header = NULL;
        unsigned char *data = NULL;
        long len = 0;
        if (PEM_read_bio(bio, &name, &header, &data, &len) != 1) {
            unsigned long e = ERR_peek_last_error();
            if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)
                ERR_clear_error(); /* end of file */
            else
                rc = tls_fail(err, XD_ETLS_CERT, "%s: bad PEM: %s", path,
                              tls_ossl_reason("read error"));
            break;
        }
        const unsigned char *p = data;
        if (tls_pem_is_cert(name)) {
            X509 *x = strcmp(name, PEM_STRING_X509_TRUSTED) == 0 ? d2i_X509_AUX(NULL, &p, len)
                                                                   : d2i_X509(NULL, &p, len);
            if (x == NULL) {
                rc = tls_fail(err, XD_ETLS_CERT, "%s: bad certificate: %s", path,
                              tls_ossl_reason("cannot decode"));
            } else {
                b->certs = xd_realloc(b->certs, (b->ncerts + 1) * sizeof *b->certs);
                b->certs[b->ncerts++] = (tls_bcert_t){ .x = x, .file = file };
                found++;
            }
        } else if (tls_pem_is_key(name)) {
            EVP_PKEY *k = NULL;
            if (strstr(name, "ENCRYPTED") != NULL || strstr(header, "ENCRYPTED") != NULL)
                rc = tls_fail(err, XD_ETLS_CERT,
                              "%s: the private key is encrypted; give it without a passphrase",
                              path);
            else if ((k = d2i_AutoPrivateKey(NULL, &p, len)) == NULL)
                rc = tls_fail(err, XD_ETLS_CERT, "%s: bad private key: %s", path,
                              tls_ossl_reason("cannot decode"));
            if (k != NULL) {
                b->keys = xd_realloc(b->keys, (b->nkeys + 1) * sizeof *b->keys);
                b->keys[b->nkeys++] = (tls_bkey_t){ .k = k, .file = file };
                found++;
            }
        } /* other blocks (parameters, CRLs) are not ours */
        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_free(data);
    }
    BIO_free(bio);
    if (rc == 0 && found == 0)
        rc = tls_fail(err, XD_ETLS_CERT, "%s: no certificate or private key in PEM form", path);
    return rc;
}

/* A short description of x for messages: its first SAN dNSName or CN. */
static void
tls_cert_label(X509 *x, char *out, size_t cap)
{
    snprintf(out, cap, "(no name)");
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type == GEN_DNS) {
            char *s = tls_asn1_str(g->d.dNSName);
            if (s != NULL)
                snprintf(out, cap, "%s", s);
            xd_free(s);
            GENERAL_NAMES_free(gens);
            return;
        }
    }
    GENERAL_NAMES_free(gens);
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, out, (int)cap);
}

static bool
tls_self_issued(X509 *x)
{
    return X509_check_issued(x, x) == X509_V_OK;
}

/* The intermediates above leaf found among b's certificates (roots are not
 * sent: the peer has them or does not trust them). */
static STACK_OF(X509) *
tls_chain(const tls_batch_t *b, X509 *leaf)
{
    STACK_OF(X509) *chain = sk_X509_new_null();
    XD_ASSERT(chain != NULL);
    X509 *cur = leaf;
    for (int depth = 0; depth < TLS_CHAIN_DEPTH && !tls_self_issued(cur); depth++) {
        X509 *issuer = NULL;
        for (size_t i = 0; i < b->ncerts && issuer == NULL; i++) {
            X509 *c = b->certs[i].x;
            if (X509_cmp(c, cur) != 0 && X509_check_issued(c, cur) == X509_V_OK)
                issuer = c;
        }
        if (issuer == NULL || tls_self_issued(issuer))
            break;
        XD_ASSERT(sk_X509_push(chain, issuer) > 0);
        cur = issuer;
    }
    return chain;
}

/* Pairs keys with certificates and turns every certificate that has a key
 * into an SSL_CTX of st (certificates already in st by an equal leaf are
 * skipped).  Certificates without a key that are CAs are chain material. */
static int
tls_batch_commit(tls_batch_t *b, xd_tls_store_t *st, const xd_tls_store_opts_t *o, char **err)
{
    char label[256];
    for (size_t k = 0; k < b->nkeys; k++) {
        bool matched = false;
        for (size_t c = 0; c < b->ncerts; c++) {
            if (EVP_PKEY_eq(X509_get0_pubkey(b->certs[c].x), b->keys[k].k) == 1) {
                matched = true;
                if (b->certs[c].key == NULL)
                    b->certs[c].key = b->keys[k].k;
            }
        }
        ERR_clear_error(); /* EVP_PKEY_eq of different key types queues errors */
        if (!matched)
            return tls_fail(err, XD_ETLS_CERT, "%s: private key matches no certificate",
                            b->keys[k].file);
    }
    for (size_t c = 0; c < b->ncerts; c++) {
        if (b->certs[c].key == NULL && X509_check_ca(b->certs[c].x) == 0) {
            tls_cert_label(b->certs[c].x, label, sizeof label);
            return tls_fail(err, XD_ETLS_CERT, "%s: no private key for the certificate of %s",
                            b->certs[c].file, label);
        }
    }
    for (size_t c = 0; c < b->ncerts; c++) {
        tls_bcert_t *bc = &b->certs[c];
        if (bc->key == NULL)
            continue;
        bool dup = false;
        for (size_t d = 0; d < c && !dup; d++)
            dup = b->certs[d].key != NULL && X509_cmp(b->certs[d].x, bc->x) == 0;
        for (size_t s = 0; s < st->ncerts && !dup; s++)
            dup = X509_cmp(SSL_CTX_get0_certificate(st->certs[s]), bc->x) == 0;
        if (dup)
            continue;

        SSL_CTX *ctx = NULL;
        int rc = tls_ctx_base(st, o, &ctx, err);
        if (rc != 0)
            return rc;
        STACK_OF(X509) *chain = tls_chain(b, bc->x);
        const char *what = NULL;
        ERR_clear_error();
        if (SSL_CTX_use_certificate(ctx, bc->x) != 1)
            what = "certificate refused";
        else if (SSL_CTX_use_PrivateKey(ctx, bc->key) != 1)
            what = "private key refused";
        else if (SSL_CTX_check_private_key(ctx) != 1)
            what = "private key does not match the certificate";
        else if (SSL_CTX_set1_chain(ctx, chain) != 1)
            what = "chain refused";
        sk_X509_free(chain);
        if (what != NULL) {
            SSL_CTX_free(ctx);
            return tls_fail(err, XD_ETLS_CERT, "%s: %s: %s", bc->file, what,
                            tls_ossl_reason("OpenSSL refused it"));
        }
        st->certs = xd_realloc(st->certs, (st->ncerts + 1) * sizeof *st->certs);
        st->certs[st->ncerts] = ctx;
        tls_cert_label(bc->x, label, sizeof label);
        if (tls_index_cert(st, bc->x, st->ncerts) == 0)
            tls_warn(st, "file=%s certificate names no host; used only as the fallback",
                     bc->file);
        if (X509_cmp_current_time(X509_get0_notAfter(bc->x)) < 0)
            tls_warn(st, "file=%s cert=%s certificate has expired", bc->file, label);
        st->ncerts++;
    }
    tls_index_finish(st);
    return 0;
}

/* ---- store: self-signed certificates ------------------------------------ */

/* mkdir -p with mode 0700 for the directories it creates. */
static int
tls_mkdir_p(const char *dir)
{
    char buf[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof buf)
        return -ENAMETOOLONG;
    memcpy(buf, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char save = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0700) != 0 && errno != EEXIST)
            return -errno;
        buf[i] = save;
    }
    return 0;
}

static int
tls_add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, v3, nid, value);
    int ok = ext != NULL && X509_add_ext(x, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

static int
tls_add_san(X509 *x, const char *ahost)
{
    char wild[TLS_NAME_MAX + 3];
    snprintf(wild, sizeof wild, "*.%s", ahost);
    const char *names[2] = { ahost, wild };
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    int ok = gens != NULL;
    for (int i = 0; ok && i < 2; i++) {
        GENERAL_NAME *g = GENERAL_NAME_new();
        ASN1_IA5STRING *s = ASN1_IA5STRING_new();
        ok = g != NULL && s != NULL && ASN1_STRING_set(s, names[i], (int)strlen(names[i])) == 1;
        if (ok) {
            GENERAL_NAME_set0_value(g, GEN_DNS, s);
            ok = sk_GENERAL_NAME_push(gens, g) > 0;
            if (!ok)
                GENERAL_NAME_free(g);
        } else {
            ASN1_IA5STRING_free(s);
            GENERAL_NAME_free(g);
        }
    }
    ok = ok && X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) == 1;
    GENERAL_NAMES_free(gens);
    return ok ? 0 : -1;
}

/* Generates key and self-signed certificate for ahost (A-label). */
static int
tls_selfsigned_build(const char *ahost, EVP_PKEY **pkey, X509 **cert)
{
    EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    BIGNUM *bn = NULL;
    unsigned char serial[16];
    int ok = pk != NULL && x != NULL && X509_set_version(x, X509_VERSION_3) == 1 &&
             RAND_bytes(serial, sizeof serial) == 1;
    if (ok) {
        serial[0] = (unsigned char)((serial[0] & 0x7f) | 0x40); /* positive, 16 bytes */
        bn = BN_bin2bn(serial, sizeof serial, NULL);
        ok = bn != NULL && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL &&
             X509_gmtime_adj(X509_getm_notBefore(x), -3600) != NULL && /* clock skew */
             X509_gmtime_adj(X509_getm_notAfter(x), (long)TLS_SELFSIGNED_DAYS * 86400) != NULL;
    }
    if (ok) {
        X509_NAME *name = X509_get_subject_name(x);
        ok = X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)ahost,
                                        -1, -1, 0) == 1 &&
             X509_set_issuer_name(x, name) == 1 && X509_set_pubkey(x, pk) == 1;
    }
    if (ok) {
        X509V3_CTX v3;
        X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
        ok = tls_add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE") == 0 &&
             tls_add_ext(x, &v3, NID_key_usage, "critical,digitalSignature") == 0 &&
             tls_add_ext(x, &v3, NID_ext_key_usage, "serverAuth,clientAuth") == 0 &&
             tls_add_ext(x, &v3, NID_subject_key_identifier, "hash") == 0 &&
             tls_add_san(x, ahost) == 0 && X509_sign(x, pk, EVP_sha256()) > 0;
    }
    BN_free(bn);
    if (!ok) {
        EVP_PKEY_free(pk);
        X509_free(x);
        return -1;
    }
    *pkey = pk;
    *cert = x;
    return 0;
}

/* Writes a new key and self-signed certificate for ahost to path
 * (directory dir), atomically, mode 0600. */
static int
tls_selfsigned_write(const char *dir, const char *path, const char *ahost, char **err)
{
    int rc = tls_mkdir_p(dir);
    if (rc != 0)
        return tls_fail(err, XD_ETLS_CERT, "%s: cannot create the directory: %s", dir,
                        strerror(-rc));
    EVP_PKEY *pk = NULL;
    X509 *x = NULL;
    if (tls_selfsigned_build(ahost, &pk, &x) != 0)
        return tls_fail(err, XD_ETLS_CERT, "%s: cannot generate a certificate: %s", path,
                        tls_ossl_reason("OpenSSL failed"));
    size_t tlen = strlen(path) + 16;
    char *tmp = xd_malloc(tlen);
    snprintf(tmp, tlen, "%s.tmpXXXXXX", path);
    int fd = mkstemp(tmp); /* 0600 */
    FILE *f = NULL;
    if (fd < 0 || fchmod(fd, 0600) != 0 || (f = fdopen(fd, "w")) == NULL) {
        rc = -errno;
    } else {
        fd = -1;
        bool ok = PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL) == 1 &&
                  PEM_write_X509(f, x) == 1 && fflush(f) == 0 && fsync(fileno(f)) == 0;
        rc = ok ? 0 : errno != 0 ? -errno : -EIO;
        if (fclose(f) != 0 && rc == 0)
            rc = -errno;
        if (rc == 0 && rename(tmp, path) != 0)
            rc = -errno;
    }
    if (fd >= 0)
        close(fd);
    if (rc != 0) {
        unlink(tmp);
        rc = tls_fail(err, XD_ETLS_CERT, "%s: cannot write the certificate: %s", path,
                      strerror(-rc));
    }
    ERR_clear_error();
    xd_free(tmp);
    EVP_PKEY_free(pk);
    X509_free(x);
    return rc;
}

/* True when b holds certificates and all of them are valid for at least
 * one more day. */
static bool
tls_batch_fresh(const tls_batch_t *b)
{
    time_t soon = time(NULL) + 86400;
    for (size_t c = 0; c < b->ncerts; c++)
        if (X509_cmp_time(X509_get0_notAfter(b->certs[c].x), &soon) <= 0)
            return false;
    return b->ncerts > 0;
}

/* Makes sure host is covered, with <data_dir>/certs/<ahost>.pem. */
static int
tls_selfsigned(xd_tls_store_t *st, const xd_tls_store_opts_t *o, const char *host,
               const char *ahost, char **err)
{
    if (o->data_dir == NULL)
        return tls_fail(err, XD_ETLS_CERT, "no certificate covers host %s and there is no "
                        "data directory for a self-signed one", host);
    size_t dlen = strlen(o->data_dir) + sizeof "/certs";
    char *dir = xd_malloc(dlen);
    snprintf(dir, dlen, "%s/certs", o->data_dir);
    size_t plen = dlen + strlen(ahost) + 8;
    char *path = xd_malloc(plen);
    snprintf(path, plen, "%s/%s.pem", dir, ahost);

    tls_batch_t b = { 0 };
    bool created = false;
    int rc = 0;
    if (access(path, F_OK) == 0) {
        rc = tls_batch_read(&b, path, err);
        if (rc == 0 && !tls_batch_fresh(&b)) {
            tls_warn(st, "file=%s host=%s self-signed certificate expired; making a new one",
                     path, host);
            tls_batch_free(&b);
            created = true;
        }
    } else {
        created = true;
    }
    if (rc == 0 && created) {
        rc = tls_selfsigned_write(dir, path, ahost, err);
        if (rc == 0)
            rc = tls_batch_read(&b, path, err);
    }
    if (rc == 0)
        rc = tls_batch_commit(&b, st, o, err);
    if (rc == 0 && tls_lookup(st, host) < 0)
        rc = tls_fail(err, XD_ETLS_CERT, "%s: the certificate does not cover host %s", path,
                      host);
    tls_batch_free(&b);
    xd_free(dir);
    if (rc != 0) {
        xd_free(path);
        return rc;
    }
    st->self = xd_realloc(st->self, (st->nself + 1) * sizeof *st->self);
    st->self[st->nself++] =
        (xd_tls_selfsigned_t){ .host = xd_strdup(host), .path = path, .created = created };
    return 0;
}

/* ---- store: trust anchors ------------------------------------------------ */

/* Builds st->trust from ca_file / ca_path, or the system default paths. */
static int
tls_trust_load(xd_tls_store_t *st, const xd_tls_store_opts_t *o, char **err)
{
    st->trust = X509_STORE_new();
    if (st->trust == NULL)
        return tls_fail(err, XD_EINTERNAL, "X509_STORE_new: %s", tls_ossl_reason("failed"));
    ERR_clear_error();
    if (o->ca_file == NULL && o->ca_path == NULL) {
        /* The system's bundle file ($SSL_CERT_FILE or OpenSSL's default),
         * read now, so that verifying a peer never scans a directory on a
         * worker (directory lookups read files on the loop).  Without a
         * bundle, the default directory is looked up when a peer is
         * verified.  Missing defaults are not an error: every peer is then
         * untrusted. */
        const char *env = getenv(X509_get_default_cert_file_env());
        const char *file = env && *env ? env : X509_get_default_cert_file();
        if (access(file, R_OK) != 0 || X509_STORE_load_file(st->trust, file) != 1)
            X509_STORE_set_default_paths(st->trust);
        ERR_clear_error();
        return 0;
    }
    if (o->ca_file != NULL) {
        if (access(o->ca_file, R_OK) != 0)
            return tls_fail(err, XD_ETLS_CERT, "ca_file: %s: %s", o->ca_file, strerror(errno));
        if (X509_STORE_load_file(st->trust, o->ca_file) != 1)
            return tls_fail(err, XD_ETLS_CERT, "ca_file: %s: %s", o->ca_file,
                            tls_ossl_reason("no certificate in it"));
    }
    if (o->ca_path != NULL) {
        struct stat sb;
        if (stat(o->ca_path, &sb) != 0)
            return tls_fail(err, XD_ETLS_CERT, "ca_path: %s: %s", o->ca_path, strerror(errno));
        if (!S_ISDIR(sb.st_mode))
            return tls_fail(err, XD_ETLS_CERT, "ca_path: %s: not a directory", o->ca_path);
        if (X509_STORE_load_path(st->trust, o->ca_path) != 1)
            return tls_fail(err, XD_ETLS_CERT, "ca_path: %s: %s", o->ca_path,
                            tls_ossl_reason("cannot use the directory"));
    }
    ERR_clear_error();
    return 0;
}

/* ---- store: public ------------------------------------------------------ */

static void
tls_store_free(xd_tls_store_t *st)
{
    X509_STORE_free(st->trust);
    for (size_t i = 0; i < st->ncerts; i++)
        SSL_CTX_free(st->certs[i]);
    for (size_t i = 0; i < st->nnames; i++)
        xd_free(st->names[i].name);
    for (size_t i = 0; i < st->nself; i++) {
        xd_free((char *)st->self[i].host);
        xd_free((char *)st->self[i].path);
    }
    for (size_t i = 0; i < st->nwarnings; i++)
        xd_free(st->warnings[i]);
    xd_free(st->certs);
    xd_free(st->names);
    xd_free(st->self);
    xd_free(st->warnings);
    xd_free(st);
}

static bool
tls_has_magic(const char *pattern)
{
    return strpbrk(pattern, "*?[") != NULL;
}

int
xd_tls_store_load(const xd_tls_store_opts_t *o, xd_tls_store_t **out, char **err)
{
    XD_ASSERT(o != NULL && out != NULL);
    *out = NULL;
    if (err != NULL)
        *err = NULL;
    xd_tls_store_t *st = xd_new(xd_tls_store_t);
    atomic_init(&st->refs, 1);
    int rc = 0;
    if (o->min_version == NULL || strcmp(o->min_version, "1.2") == 0)
        st->min_version = TLS1_2_VERSION;
    else if (strcmp(o->min_version, "1.3") == 0)
        st->min_version = TLS1_3_VERSION;
    else
        rc = tls_fail(err, XD_EINVAL, "min_version: \"%s\": must be \"1.2\" or \"1.3\"",
                      o->min_version);
    if (rc == 0) { /* option errors first, whatever the files say */
        SSL_CTX *probe = NULL;
        rc = tls_ctx_base(st, o, &probe, err);
        SSL_CTX_free(probe);
    }
    if (rc == 0)
        rc = tls_trust_load(st, o, err);

    tls_batch_t b = { 0 };
    for (size_t i = 0; rc == 0 && i < o->ncertfiles; i++) {
        glob_t g;
        int grc = glob(o->certfiles[i], GLOB_ERR, NULL, &g);
        if (grc == GLOB_NOMATCH && tls_has_magic(o->certfiles[i]))
            tls_warn(st, "pattern=%s certfiles pattern matches no file", o->certfiles[i]);
        else if (grc == GLOB_NOMATCH)
            rc = tls_fail(err, XD_ETLS_CERT, "%s: %s", o->certfiles[i], strerror(ENOENT));
        else if (grc != 0)
            rc = tls_fail(err, XD_ETLS_CERT, "%s: cannot expand the pattern: %s",
                          o->certfiles[i], strerror(errno ? errno : EIO));
        for (size_t j = 0; grc == 0 && rc == 0 && j < g.gl_pathc; j++)
            rc = tls_batch_read(&b, g.gl_pathv[j], err);
        if (grc == 0)
            globfree(&g);
    }
    if (rc == 0)
        rc = tls_batch_commit(&b, st, o, err);
    tls_batch_free(&b);

    for (size_t i = 0; rc == 0 && i < o->nhosts; i++) {
        char ahost[TLS_NAME_MAX + 1];
        if (!tls_name_norm(o->hosts[i], ahost, false))
            rc = tls_fail(err, XD_EINVAL, "hosts: \"%s\" is not a domain name", o->hosts[i]);
        else if (tls_lookup(st, ahost) < 0)
            rc = tls_selfsigned(st, o, o->hosts[i], ahost, err);
    }
    if (rc == 0 && st->ncerts == 0)
        rc = tls_fail(err, XD_EINVAL, "no certificate: give certfiles or hosts");
    ERR_clear_error();
    if (rc != 0) {
        tls_store_free(st);
        return rc;
    }
    *out = st;
    return 0;
}

xd_tls_store_t *
xd_tls_store_ref(xd_tls_store_t *st)
{
    atomic_fetch_add_explicit(&st->refs, 1, memory_order_relaxed);
    return st;
}

void
xd_tls_store_unref(xd_tls_store_t *st)
{
    if (st != NULL && atomic_fetch_sub_explicit(&st->refs, 1, memory_order_acq_rel) == 1)
        tls_store_free(st);
}

bool
xd_tls_store_has(const xd_tls_store_t *st, const char *host)
{
    return tls_lookup(st, host) >= 0;
}

size_t
xd_tls_store_count(const xd_tls_store_t *st)
{
    return st->ncerts;
}

const xd_tls_selfsigned_t *
xd_tls_store_selfsigned(const xd_tls_store_t *st, size_t *n)
{
    *n = st->nself;
    return st->self;
}

const char *const *
xd_tls_store_warnings(const xd_tls_store_t *st, size_t *n)
{
    *n = st->nwarnings;
    return (const char *const *)st->warnings;
}

/* ---- connection ---------------------------------------------------------- */

typedef enum tls_state {
    TLS_HANDSHAKE = 0, /* waiting for / inside the handshake */
    TLS_OPEN,          /* handshake done */
    TLS_PEER_CLOSED,   /* the peer's close_notify arrived */
    TLS_FAILED,        /* fatal: err says why */
} tls_state;

/* One connection.  Owner loop only (the ALPN callback reads alpn from
 * inside tls_drive, on the owner loop too). */
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

static BIO_METHOD *tls_bio_method;      /* created once, never freed */
static pthread_once_t tls_bio_once = PTHREAD_ONCE_INIT;

static int
tls_bio_write(BIO *bio, const char *data, int len)
{
    xd_tls_t *t = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    if (len <= 0)
        return 0;
    int rc = t->io.send(t->io.ud, (const uint8_t *)data, (size_t)len);
    if (rc < 0) {
        if (t->send_err == 0)
            t->send_err = rc;
        return -1;
    }
    return len;
}

static int
tls_bio_read(BIO *bio, char *out, int len)
{
    xd_tls_t *t = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    if (len <= 0)
        return 0;
    if (t->in_len == 0) {
        BIO_set_retry_read(bio);
        return -1;
    }
    size_t n = t->in_len < (size_t)len ? t->in_len : (size_t)len;
    memcpy(out, t->in, n);
    t->in += n;
    t->in_len -= n;
    return (int)n;
}

static long
tls_bio_ctrl(BIO *bio, int cmd, long num, void *ptr)
{
    (void)bio;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int
tls_bio_create(BIO *bio)
{
    BIO_set_init(bio, 1);
    return 1;
}

static void
tls_bio_method_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "xmppd-tls");
    XD_ASSERT(m != NULL);
    BIO_meth_set_write(m, tls_bio_write);
    BIO_meth_set_read(m, tls_bio_read);
    BIO_meth_set_ctrl(m, tls_bio_ctrl);
    BIO_meth_set_create(m, tls_bio_create);
    tls_bio_method = m;
}

/* A connection on ssl (consumed) with our BIO attached. */
static int
tls_conn_new(xd_tls_store_t *st, SSL *ssl, const xd_tls_io_t *io, xd_tls_t **out)
{
    BIO *bio = ssl != NULL ? BIO_new(tls_bio_method) : NULL;
    if (bio == NULL) {
        SSL_free(ssl);
        ERR_clear_error();
        return XD_ETLS;
    }
    xd_tls_t *t = xd_new(xd_tls_t);
    t->ssl = ssl;
    t->store = xd_tls_store_ref(st);
    t->io = *io;
    BIO_set_data(bio, t);
    SSL_set_bio(ssl, bio, bio);
    *out = t;
    return 0;
}

int
xd_tls_server_new(xd_tls_store_t *st, const char *default_host, const xd_tls_io_t *io,
                  xd_tls_t **out)
{
    XD_ASSERT(st != NULL && io != NULL && io->send != NULL && io->plain != NULL && out != NULL);
    XD_ASSERT(st->ncerts > 0);
    pthread_once(&tls_bio_once, tls_bio_method_init);
    long i = tls_lookup(st, default_host);
    ERR_clear_error();
    int rc = tls_conn_new(st, SSL_new(st->certs[i >= 0 ? i : 0]), io, out);
    if (rc == 0)
        SSL_set_accept_state((*out)->ssl);
    return rc;
}

/* Accepts every client certificate: the verdict is xd_tls_peer_verify's. */
static int
tls_verify_accept(int ok, X509_STORE_CTX *x)
{
    (void)ok;
    (void)x;
    return 1;
}

int
xd_tls_request_cert(xd_tls_t *t)
{
    if (t->client || t->begun)
        return XD_EINVAL;
    SSL_set_verify(t->ssl, SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE, tls_verify_accept);
    return 0;
}

static bool
tls_alpn_ok(const char *proto)
{
    size_t n = proto != NULL ? strlen(proto) : 0;
    return n > 0 && n <= 255;
}

int
xd_tls_set_alpn(xd_tls_t *t, const char *proto)
{
    if (t->client || t->begun || !tls_alpn_ok(proto))
        return XD_EINVAL;
    xd_free(t->alpn);
    t->alpn = xd_strdup(proto);
    return 0;
}

/* RFC7301 3.2: select our protocol if the client offers it; a client that
 * offers others only gets no_application_protocol.  A connection without
 * a protocol ignores ALPN. */
static int
tls_alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
            unsigned int inlen, void *arg)
{
    (void)arg;
    const xd_tls_t *t = BIO_get_data(SSL_get_rbio(ssl));
    if (t == NULL || t->alpn == NULL)
        return SSL_TLSEXT_ERR_NOACK;
    size_t want = strlen(t->alpn);
    for (unsigned int off = 0; off < inlen;) {
        unsigned int n = in[off];
        if (n == 0 || off + 1 + n > inlen)
            break; /* malformed list; OpenSSL checks it before, so never here */
        if (n == want && memcmp(in + off + 1, t->alpn, n) == 0) {
            *out = in + off + 1;
            *outlen = (unsigned char)n;
            return SSL_TLSEXT_ERR_OK;
        }
        off += 1 + n;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

int
xd_tls_client_new(xd_tls_store_t *st, const char *local_host, const char *remote_host,
                  const char *alpn, const xd_tls_io_t *io, xd_tls_t **out)
{
    XD_ASSERT(st != NULL && io != NULL && io->send != NULL && io->plain != NULL && out != NULL);
    XD_ASSERT(st->ncerts > 0);
    char sni[TLS_NAME_MAX + 1];
    bool ip = remote_host != NULL && tls_is_ip_literal(remote_host); /* RFC6066 3: no SNI */
    if (remote_host == NULL || (!ip && !tls_name_norm(remote_host, sni, false)) ||
        (alpn != NULL && !tls_alpn_ok(alpn)))
        return XD_EINVAL;
    pthread_once(&tls_bio_once, tls_bio_method_init);
    long i = tls_lookup(st, local_host);
    ERR_clear_error();
    SSL *ssl = SSL_new(st->certs[i >= 0 ? i : 0]);
    if (ssl != NULL && i < 0)
        SSL_certs_clear(ssl); /* no certificate of ours covers local_host: present none */
    bool ok = ssl != NULL && (ip || SSL_set_tlsext_host_name(ssl, sni) == 1);
    if (ok && alpn != NULL) {
        unsigned char wire[256];
        size_t n = strlen(alpn);
        wire[0] = (unsigned char)n;
        memcpy(wire + 1, alpn, n);
        ok = SSL_set_alpn_protos(ssl, wire, (unsigned int)n + 1) == 0; /* 0 = success */
    }
    if (!ok) {
        SSL_free(ssl);
        ERR_clear_error();
        return XD_ETLS;
    }
    int rc = tls_conn_new(st, ssl, io, out);
    if (rc != 0)
        return rc;
    xd_tls_t *t = *out;
    t->client = true;
    t->alpn = alpn != NULL ? xd_strdup(alpn) : NULL;
    SSL_set_connect_state(ssl);
    return 0;
}

void
xd_tls_free(xd_tls_t *t)
{
    if (t == NULL)
        return;
    XD_ASSERT(!t->in_drive);
    SSL_free(t->ssl);
    xd_tls_store_unref(t->store);
    xd_free(t->pend);
    xd_free(t->alpn);
    xd_free(t);
}

static int
tls_set_failed(xd_tls_t *t, const char *reason)
{
    t->state = TLS_FAILED;
    if (t->err == NULL)
        t->err = reason;
    xd_free(t->pend);
    t->pend = NULL;
    t->pend_off = t->pend_len = 0;
    return XD_ETLS;
}

/* Why SSL call result r failed; clears the error queue. */
static const char *
tls_ssl_reason(int e)
{
    switch (e) {
    case SSL_ERROR_SYSCALL:
        return tls_ossl_reason("unexpected end of the TLS stream");
    case SSL_ERROR_WANT_WRITE:
        return tls_ossl_reason("transport would block");
    default:
        return tls_ossl_reason("TLS protocol error");
    }
}

/* Runs the handshake, then SSL_read, over t->in until it is used up, the
 * caller pauses, the peer closes or something fails, delivering
 * plaintext.  The handshake is driven by SSL_do_handshake so that
 * io.handshake runs (and may pause) before any plaintext is read. */
static int
tls_drive(xd_tls_t *t)
{
    uint8_t buf[TLS_PLAIN_CHUNK];
    size_t dirty = 0; /* bytes of buf that held plaintext */
    int rc = 0;
    t->in_drive = true;
    t->begun = true;
    while (!t->paused && rc == 0) {
        size_t before = t->in_len, n = 0;
        bool hs = t->state == TLS_HANDSHAKE;
        ERR_clear_error();
        int r = hs ? SSL_do_handshake(t->ssl) : SSL_read_ex(t->ssl, buf, sizeof buf, &n);
        int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
        if (t->send_err != 0) {
            tls_set_failed(t, "transport send failed");
            rc = t->send_err;
        } else if (r == 1 && hs) {
            t->state = TLS_OPEN;
            if (t->io.handshake != NULL)
                t->io.handshake(t->io.ud);
        } else if (r == 1) {
            dirty = n > dirty ? n : dirty;
            if (t->io.plain(t->io.ud, buf, n) == XD_TLS_PAUSE)
                t->paused = true;
        } else if (e == SSL_ERROR_WANT_READ) {
            ERR_clear_error();
            if (t->in_len == 0 || t->in_len == before)
                break; /* all used, or no progress: the caller keeps the rest */
        } else if (e == SSL_ERROR_ZERO_RETURN) {
            ERR_clear_error();
            t->state = TLS_PEER_CLOSED;
            rc = XD_ECLOSED;
        } else {
            rc = tls_set_failed(t, tls_ssl_reason(e));
        }
    }
    t->in_drive = false;
    OPENSSL_cleanse(buf, dirty);
    return rc;
}

/* Appends data[0..len) to the kept ciphertext. */
static void
tls_pend_append(xd_tls_t *t, const uint8_t *data, size_t len)
{
    if (len == 0)
        return;
    size_t keep = t->pend_len - t->pend_off;
    if (t->pend_off > 0 && keep > 0)
        memmove(t->pend, t->pend + t->pend_off, keep);
    t->pend = xd_realloc(t->pend, keep + len);
    memcpy(t->pend + keep, data, len);
    t->pend_off = 0;
    t->pend_len = keep + len;
}

/* tls_drive over the kept ciphertext; frees it once used up. */
static int
tls_drive_pend(xd_tls_t *t)
{
    t->in = t->pend + t->pend_off;
    t->in_len = t->pend_len - t->pend_off;
    int rc = tls_drive(t);
    if (t->pend != NULL) { /* still there unless the drive failed */
        t->pend_off = t->pend_len - t->in_len;
        if (t->in_len == 0) {
            xd_free(t->pend);
            t->pend = NULL;
            t->pend_off = t->pend_len = 0;
        }
    }
    t->in = NULL;
    t->in_len = 0;
    return rc;
}

static int
tls_state_rc(const xd_tls_t *t)
{
    return t->state == TLS_FAILED ? XD_ETLS : t->state == TLS_PEER_CLOSED ? XD_ECLOSED : 0;
}

int
xd_tls_input(xd_tls_t *t, const uint8_t *data, size_t len)
{
    XD_ASSERT(!t->in_drive); /* not from inside a callback */
    int rc = tls_state_rc(t);
    if (rc != 0)
        return rc;
    if (t->paused || t->pend != NULL) {
        tls_pend_append(t, data, len);
        return t->paused ? 0 : tls_drive_pend(t);
    }
    t->in = data;
    t->in_len = len;
    rc = tls_drive(t);
    if (rc == 0 && t->in_len > 0)
        tls_pend_append(t, t->in, t->in_len); /* paused part-way */
    t->in = NULL;
    t->in_len = 0;
    return rc;
}

int
xd_tls_start(xd_tls_t *t)
{
    if (!t->client || t->begun)
        return XD_EINVAL;
    return xd_tls_input(t, NULL, 0);
}

void
xd_tls_pause(xd_tls_t *t)
{
    t->paused = true;
}

bool
xd_tls_paused(const xd_tls_t *t)
{
    return t->paused;
}

int
xd_tls_resume(xd_tls_t *t)
{
    if (!t->paused)
        return 0;
    t->paused = false;
    if (t->in_drive)
        return 0; /* the running tls_drive goes on */
    int rc = tls_state_rc(t);
    if (rc != 0)
        return rc;
    if (t->pend != NULL)
        return tls_drive_pend(t);
    return tls_drive(t); /* plaintext OpenSSL still holds; in_len is 0 */
}

int
xd_tls_send(xd_tls_t *t, const uint8_t *p, size_t n)
{
    if (t->state == TLS_FAILED)
        return XD_ETLS;
    if (t->shut_sent)
        return XD_ECLOSED;
    if (t->state == TLS_HANDSHAKE)
        return XD_EINVAL;
    while (n > 0) {
        size_t w = 0;
        ERR_clear_error();
        int r = SSL_write_ex(t->ssl, p, n, &w);
        if (t->send_err != 0) {
            tls_set_failed(t, "transport send failed");
            return t->send_err;
        }
        if (r != 1)
            return tls_set_failed(t, tls_ssl_reason(SSL_get_error(t->ssl, r)));
        p += w;
        n -= w;
    }
    return 0;
}

void
xd_tls_shutdown(xd_tls_t *t)
{
    if (t->shut_sent || t->state == TLS_FAILED || t->state == TLS_HANDSHAKE)
        return;
    t->shut_sent = true;
    ERR_clear_error();
    SSL_shutdown(t->ssl); /* 0: ours sent, theirs not seen yet; fine */
    ERR_clear_error();
    if (t->send_err != 0)
        tls_set_failed(t, "transport send failed");
}

bool
xd_tls_handshake_done(const xd_tls_t *t)
{
    return t->state != TLS_HANDSHAKE && SSL_is_init_finished(t->ssl);
}

const char *
xd_tls_version(const xd_tls_t *t)
{
    return SSL_get_version(t->ssl);
}

const char *
xd_tls_cipher(const xd_tls_t *t)
{
    return SSL_get_cipher_name(t->ssl);
}

const char *
xd_tls_sni(const xd_tls_t *t)
{
    return SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
}

const char *
xd_tls_alpn(const xd_tls_t *t)
{
    const unsigned char *p = NULL;
    unsigned int n = 0;
    SSL_get0_alpn_selected(t->ssl, &p, &n);
    /* Only ours can be selected: OpenSSL refuses a server's pick we did
     * not offer, and our callback picks nothing else. */
    return n > 0 && t->alpn != NULL && n == strlen(t->alpn) && memcmp(p, t->alpn, n) == 0 ? t->alpn
                                                                                          : NULL;
}

bool
xd_tls_is_client(const xd_tls_t *t)
{
    return t->client;
}

const char *
xd_tls_error(const xd_tls_t *t)
{
    return t->err;
}

/* ---- the peer's certificate ----------------------------------------------- */

#define TLS_SRV_S2S "_xmpp-server." /* RFC7590 3.2 / RFC6120 13.7.1.2: the s2s SRV-ID prefix */

static const char *const tls_peer_names[XD_TLS_PEER_STATUS_COUNT] = {
    [XD_TLS_PEER_OK] = "ok",
    [XD_TLS_PEER_NONE] = "none",
    [XD_TLS_PEER_EXPIRED] = "expired",
    [XD_TLS_PEER_NOT_YET_VALID] = "not-yet-valid",
    [XD_TLS_PEER_UNTRUSTED] = "untrusted",
    [XD_TLS_PEER_INVALID] = "invalid",
    [XD_TLS_PEER_NAME_MISMATCH] = "name-mismatch",
};

const char *
xd_tls_peer_status_name(xd_tls_peer_status status)
{
    return (unsigned)status < XD_TLS_PEER_STATUS_COUNT ? tls_peer_names[status] : "?";
}

/* Called for each identity of a certificate; value is lent for the call. */
typedef void (*tls_id_fn)(void *ud, xd_tls_id_type type, const char *value);

/* Calls fn for the identities of x in certificate order: SAN SRVName,
 * XmppAddr and dNSName entries; or, only when the SAN holds no DNS-ID,
 * SRV-ID, XmppAddr or URI (RFC6125 6.4.4), the last subject CN (the most
 * specific one).  A SAN extension that does not decode (or appears twice)
 * counts as holding identities, so it never lets the CN in. */
static void
tls_cert_ids(X509 *x, tls_id_fn fn, void *ud)
{
    int crit = -1; /* -1: no SAN; -2: several; else found (decoded or not) */
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);
    bool any = gens == NULL && crit != -1;
    for (int i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        xd_tls_id_type type = XD_TLS_ID_NONE;
        char *s = NULL;
        if (g->type == GEN_DNS) {
            any = true;
            type = XD_TLS_ID_DNS;
            s = tls_asn1_str(g->d.dNSName);
        } else if (g->type == GEN_URI) {
            any = true; /* a URI-ID: no XMPP meaning, but it rules out the CN */
        } else if (g->type == GEN_OTHERNAME) {
            int nid = OBJ_obj2nid(g->d.otherName->type_id);
            const ASN1_TYPE *v = g->d.otherName->value;
            if (nid == NID_XmppAddr) { /* RFC6120 13.7.1.4: UTF8String */
                any = true;
                type = XD_TLS_ID_XMPPADDR;
                s = v->type == V_ASN1_UTF8STRING ? tls_asn1_str(v->value.utf8string) : NULL;
            } else if (nid == NID_SRVName) { /* RFC 4985: IA5String */
                any = true;
                type = XD_TLS_ID_SRV;
                s = v->type == V_ASN1_IA5STRING ? tls_asn1_str(v->value.ia5string) : NULL;
            }
        }
        if (s != NULL)
            fn(ud, type, s);
        xd_free(s);
    }
    GENERAL_NAMES_free(gens);
    ERR_clear_error();
    if (any)
        return;
    const X509_NAME *subj = X509_get_subject_name(x);
    int last = -1;
    for (int i = -1; (i = X509_NAME_get_index_by_NID(subj, NID_commonName, i)) >= 0;)
        last = i;
    if (last >= 0) {
        char *s = tls_asn1_str(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, last)));
        if (s != NULL)
            fn(ud, XD_TLS_ID_CN, s);
        xd_free(s);
    }
}

/* RFC6125 6.4.1 and 6.4.3 on normalised names: exact, or a "*." wildcard
 * standing for exactly one whole left-most label above a parent of at
 * least two labels (no "*.org"; RFC 9525 6.3 forbids the rest). */
static bool
tls_dns_match(const char *pattern, const char *want)
{
    if (pattern[0] != '*')
        return strcmp(pattern, want) == 0;
    const char *parent = pattern + 2; /* tls_name_norm allows "*" only as "*.<name>" */
    if (strchr(parent, '.') == NULL)
        return false;
    const char *dot = strchr(want, '.');
    return dot != NULL && dot != want && strcmp(dot + 1, parent) == 0;
}

/* Name check state: the reference identifier and the best kind matched. */
typedef struct tls_match {
    const char *want;    /* the domain, normalised by tls_name_norm */
    xd_tls_id_type best; /* XD_TLS_ID_NONE until something matches */
} tls_match_t;

static int
tls_id_rank(xd_tls_id_type type)
{
    switch (type) {
    case XD_TLS_ID_SRV:
        return 4;
    case XD_TLS_ID_XMPPADDR:
        return 3;
    case XD_TLS_ID_DNS:
        return 2;
    case XD_TLS_ID_CN:
        return 1;
    default:
        return 0;
    }
}

static void
tls_match_id(void *ud, xd_tls_id_type type, const char *value)
{
    tls_match_t *m = ud;
    char n[TLS_NAME_MAX + 1];
    bool hit = false;
    switch (type) {
    case XD_TLS_ID_SRV: /* RFC6125 6.5.1: service type, then the domain as DNS-ID */
        hit = strncasecmp(value, TLS_SRV_S2S, sizeof TLS_SRV_S2S - 1) == 0 &&
              tls_name_norm(value + sizeof TLS_SRV_S2S - 1, n, false) && strcmp(n, m->want) == 0;
        break;
    case XD_TLS_ID_XMPPADDR: /* RFC6120 13.7.1.4: a bare domain JID, exact */
        hit = strpbrk(value, "@/") == NULL && tls_name_norm(value, n, false) &&
              strcmp(n, m->want) == 0;
        break;
    case XD_TLS_ID_DNS:
    case XD_TLS_ID_CN:
        hit = tls_name_norm(value, n, true) && tls_dns_match(n, m->want);
        break;
    default:
        break;
    }
    if (hit && tls_id_rank(type) > tls_id_rank(m->best))
        m->best = type;
}

static xd_tls_peer_status
tls_peer_x509_status(int e)
{
    switch (e) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
        return XD_TLS_PEER_EXPIRED;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return XD_TLS_PEER_NOT_YET_VALID;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_UNTRUSTED:
    case X509_V_ERR_CERT_REJECTED:
        return XD_TLS_PEER_UNTRUSTED;
    default:
        return XD_TLS_PEER_INVALID;
    }
}

/* Verifies the peer's chain against the store's anchors at the current
 * time; *x509_err gets X509_V_OK or the first error.  The leaf must allow
 * TLS server or client use (extended key usage, key usage, Netscape type).
 * Returns 0, or XD_ETLS when OpenSSL itself failed. */
static int
tls_peer_chain(const xd_tls_t *t, X509 *leaf, int *x509_err)
{
    ERR_clear_error();
    X509_STORE_CTX *vc = X509_STORE_CTX_new();
    int ok = -1;
    if (vc != NULL &&
        X509_STORE_CTX_init(vc, t->store->trust, leaf, SSL_get_peer_cert_chain(t->ssl)) == 1)
        ok = X509_verify_cert(vc); /* no callback: stops at the first error */
    int e = ok == 1 ? X509_V_OK : vc != NULL ? X509_STORE_CTX_get_error(vc) : X509_V_OK;
    X509_STORE_CTX_free(vc);
    if (ok < 0 && e == X509_V_OK) {
        ERR_clear_error();
        return XD_ETLS;
    }
    if (ok == 0 && e == X509_V_OK)
        e = X509_V_ERR_UNSPECIFIED;
    if (e == X509_V_OK && X509_check_purpose(leaf, X509_PURPOSE_SSL_SERVER, 0) != 1 &&
        X509_check_purpose(leaf, X509_PURPOSE_SSL_CLIENT, 0) != 1)
        e = X509_V_ERR_INVALID_PURPOSE;
    ERR_clear_error();
    *x509_err = e;
    return 0;
}

int
xd_tls_peer_verify(const xd_tls_t *t, const char *domain, xd_tls_peer_result_t *res)
{
    memset(res, 0, sizeof *res);
    char want[TLS_NAME_MAX + 1];
    if (t->state == TLS_FAILED || !xd_tls_handshake_done(t) ||
        (domain != NULL && (tls_is_ip_literal(domain) || !tls_name_norm(domain, want, false))))
        return XD_EINVAL;
    X509 *leaf = SSL_get0_peer_certificate(t->ssl);
    if (leaf == NULL) {
        res->status = XD_TLS_PEER_NONE;
        res->reason = "no certificate presented";
        return 0;
    }
    int rc = tls_peer_chain(t, leaf, &res->x509_err);
    if (rc != 0)
        return rc;
    res->chain_ok = res->x509_err == X509_V_OK;
    res->name_ok = domain == NULL;
    if (domain != NULL) {
        tls_match_t m = { .want = want, .best = XD_TLS_ID_NONE };
        tls_cert_ids(leaf, tls_match_id, &m);
        res->matched = m.best;
        res->name_ok = m.best != XD_TLS_ID_NONE;
    }
    if (!res->chain_ok) {
        res->status = tls_peer_x509_status(res->x509_err);
        res->reason = X509_verify_cert_error_string(res->x509_err);
    } else if (!res->name_ok) {
        res->status = XD_TLS_PEER_NAME_MISMATCH;
        res->reason = "no identity of the certificate matches the domain";
    } else {
        res->status = XD_TLS_PEER_OK;
        res->reason = "ok";
    }
    return 0;
}

/* An identity list being collected. */
typedef struct tls_idlist {
    xd_tls_id_t *ids; /* grown by one per identity */
    size_t n;         /* entries in ids */
} tls_idlist_t;

static void
tls_collect_id(void *ud, xd_tls_id_type type, const char *value)
{
    tls_idlist_t *l = ud;
    l->ids = xd_realloc(l->ids, (l->n + 1) * sizeof *l->ids);
    l->ids[l->n++] = (xd_tls_id_t){ .type = type, .value = xd_strdup(value) };
}

int
xd_tls_peer_identities(const xd_tls_t *t, xd_tls_id_t **ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    if (t->state == TLS_FAILED || !xd_tls_handshake_done(t))
        return XD_EINVAL;
    X509 *leaf = SSL_get0_peer_certificate(t->ssl);
    if (leaf == NULL)
        return 0;
    tls_idlist_t l = { 0 };
    tls_cert_ids(leaf, tls_collect_id, &l);
    *ids = l.ids;
    *n = l.n;
    return 0;
}

void
xd_tls_ids_free(xd_tls_id_t *ids, size_t n)
{
    for (size_t i = 0; ids != NULL && i < n; i++)
        xd_free(ids[i].value);
    xd_free(ids);
}

/* ---- channel binding ------------------------------------------------------ */

static const char *const tls_cb_names[XD_TLS_CB_COUNT] = {
    [XD_TLS_CB_EXPORTER] = "tls-exporter",
    [XD_TLS_CB_SERVER_END_POINT] = "tls-server-end-point",
    [XD_TLS_CB_UNIQUE] = "tls-unique",
};

const char *
xd_tls_cb_name(xd_tls_cb_type type)
{
    XD_ASSERT((unsigned)type < XD_TLS_CB_COUNT);
    return tls_cb_names[type];
}

int
xd_tls_cb_parse(xd_str_t name, xd_tls_cb_type *out)
{
    for (unsigned i = 0; i < XD_TLS_CB_COUNT; i++) {
        if (xd_str_eq_c(name, tls_cb_names[i])) {
            *out = (xd_tls_cb_type)i;
            return 0;
        }
    }
    return XD_EINVAL;
}

/* The server's certificate: ours, or the peer's on a client connection. */
static X509 *
tls_server_cert(const xd_tls_t *t)
{
    return t->client ? SSL_get0_peer_certificate(t->ssl) : SSL_get_certificate(t->ssl);
}

/* RFC5929 4.1: the certificate's signature hash, MD5 and SHA-1 become
 * SHA-256; NULL when the signature has none (Ed25519). */
static const EVP_MD *
tls_endpoint_md(X509 *cert)
{
    int mdnid = NID_undef;
    if (cert == NULL || X509_get_signature_info(cert, &mdnid, NULL, NULL, NULL) != 1)
        return NULL;
    if (mdnid == NID_md5 || mdnid == NID_sha1)
        mdnid = NID_sha256;
    return mdnid == NID_undef ? NULL : EVP_get_digestbynid(mdnid);
}

bool
xd_tls_cb_available(const xd_tls_t *t, xd_tls_cb_type type)
{
    if (t->state == TLS_FAILED || !xd_tls_handshake_done(t))
        return false;
    bool tls13 = SSL_version(t->ssl) >= TLS1_3_VERSION;
    bool ok = false;
    switch (type) {
    case XD_TLS_CB_EXPORTER: /* RFC9266 3: TLS 1.3, or 1.2 with RFC 7627 EMS */
        ok = tls13 || SSL_get_extms_support(t->ssl) == 1;
        break;
    case XD_TLS_CB_SERVER_END_POINT:
        ok = tls_endpoint_md(tls_server_cert(t)) != NULL;
        break;
    case XD_TLS_CB_UNIQUE: /* RFC9266 3: not defined for TLS 1.3 */
        ok = !tls13;
        break;
    default:
        break;
    }
    ERR_clear_error();
    return ok;
}

int
xd_tls_channel_binding(const xd_tls_t *t, xd_tls_cb_type type, uint8_t *out, size_t cap,
                       size_t *len)
{
    if ((unsigned)type >= XD_TLS_CB_COUNT || !xd_tls_cb_available(t, type))
        return XD_ENOTSUP;
    int rc = 0;
    ERR_clear_error();
    switch (type) {
    case XD_TLS_CB_EXPORTER:
        if (cap < TLS_EXPORTER_LEN)
            return XD_ELIMIT;
        if (SSL_export_keying_material(t->ssl, out, TLS_EXPORTER_LEN, TLS_EXPORTER_LABEL,
                                       sizeof TLS_EXPORTER_LABEL - 1, NULL, 0, 0) != 1)
            rc = XD_ETLS;
        else
            *len = TLS_EXPORTER_LEN;
        break;
    case XD_TLS_CB_SERVER_END_POINT: {
        X509 *cert = tls_server_cert(t);
        const EVP_MD *md = tls_endpoint_md(cert);
        unsigned n = 0;
        if (md == NULL)
            rc = XD_ENOTSUP;
        else if (cap < (size_t)EVP_MD_get_size(md))
            rc = XD_ELIMIT;
        else if (X509_digest(cert, md, out, &n) != 1)
            rc = XD_ETLS;
        else
            *len = n;
        break;
    }
    case XD_TLS_CB_UNIQUE: {
        /* RFC5929 3.1: the first Finished of the latest handshake: the
         * client's in a full handshake, the server's in a resumption. */
        uint8_t fin[EVP_MAX_MD_SIZE];
        bool ours = t->client != (SSL_session_reused(t->ssl) == 1);
        size_t n = ours ? SSL_get_finished(t->ssl, fin, sizeof fin)
                        : SSL_get_peer_finished(t->ssl, fin, sizeof fin);
        if (n == 0 || n > sizeof fin)
            rc = XD_ETLS;
        else if (cap < n)
            rc = XD_ELIMIT;
        else {
            memcpy(out, fin, n);
            *len = n;
        }
        break;
    }
    default:
        rc = XD_ENOTSUP;
        break;
    }
    ERR_clear_error();
    return rc;
}

/*
 * tls_store.c — the certificate store of the TLS engine (tls.h,
 * "certificate store"); the other parts are listed in tls_int.h.
 *
 * A store is loaded once, off the loops, by xd_tls_store_load: the options
 * are checked first (a probe SSL_CTX), then the trust anchors are read
 * (tls_trust_load), the certfile patterns are expanded and their files read
 * and committed (tls_certfile.c), and every host that no certificate covers
 * gets a self-signed one (tls_selfsigned.c).  Afterwards it is immutable and
 * shared by all workers through an atomic reference count; a config reload
 * loads a new store and connections keep the one they started with.
 *
 * Every SSL_CTX is made by tls_ctx_base with TLS_method(), so one serves
 * server connections (c2s, s2s-in) and client connections (s2s-out) alike.
 * The SNI callback of every SSL_CTX looks the client's name up in the name
 * index and switches the connection to that certificate's SSL_CTX; the ALPN
 * callback (tls_alpn_cb, tls_conn.c) accepts the one protocol the connection
 * was given.
 *
 * The name index: every name a certificate covers, in lower-case A-label
 * form, sorted by (name, wild) and unique (the certificate expiring last
 * wins), searched by binary search.  This file also holds the host-name
 * syntax (tls_name_norm, tls_is_ip_literal) and the message helpers
 * (tls_fail, tls_warn, tls_ossl_reason) the other parts use.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <glob.h>
#include <idn2.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "stream/tls_int.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"

/* TLS <= 1.2 default: forward secrecy and AEAD only (Mozilla "intermediate"). */
#define TLS_DEFAULT_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20"
#define TLS_SID_CTX "xmppd" /* session id context, equal in every SSL_CTX */

/* ---- messages ------------------------------------------------------------ */

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

int
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

void
tls_warn(xd_tls_store_t *st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    st->warnings = xd_realloc(st->warnings, (st->nwarnings + 1) * sizeof *st->warnings);
    st->warnings[st->nwarnings++] = tls_vfmt(fmt, ap);
    va_end(ap);
}

const char *
tls_ossl_reason(const char *dflt)
{
    unsigned long e = ERR_peek_error();
    const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return r != NULL ? r : dflt;
}

/* ---- host names ---------------------------------------------------------- */

static bool
tls_is_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            return false;
    return true;
}

bool
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

bool
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

/* ---- the name index ------------------------------------------------------ */

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

void
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

long
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

char *
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

char *
tls_cert_cn(X509 *x)
{
    const X509_NAME *subj = X509_get_subject_name(x);
    int last = -1;
    for (int i = -1; (i = X509_NAME_get_index_by_NID(subj, NID_commonName, i)) >= 0;)
        last = i;
    if (last < 0)
        return NULL;
    return tls_asn1_str(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, last)));
}

size_t
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
        char *s = tls_cert_cn(x);
        if (s != NULL)
            tls_index_add(st, s, cert, na);
        xd_free(s);
    }
    return st->nnames - before;
}

/* ---- SSL_CTX ------------------------------------------------------------- */

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

int
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

/* ---- trust anchors ------------------------------------------------------- */

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

/* ---- public API ---------------------------------------------------------- */

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

/*
 * tls_verify.c — the peer's certificate (tls.h, "the peer's certificate";
 * RFC 6125, RFC 6120 13.7, RFC 7590, XEP-0178): chain verification against
 * the store's trust anchors and the identity checks, after the handshake of
 * a connection (tls_conn.c; the parts are listed in tls_int.h).
 *
 * OpenSSL never fails a handshake on a peer certificate (clients use
 * SSL_VERIFY_NONE; a server that asks for one uses SSL_VERIFY_PEER with a
 * callback that accepts everything, tls_conn.c).  xd_tls_peer_verify runs
 * the chain check against the store's X509_STORE afterwards and the
 * RFC 6125 name checks itself (tls_cert_ids, tls_match_id), because
 * OpenSSL's X509_check_host knows neither SRV-IDs nor XmppAddrs.
 *
 * Invariants: nothing here changes a connection or the store (every
 * function takes them const); the identities of a certificate are walked in
 * one place, tls_cert_ids, for both matching and xd_tls_peer_identities, so
 * the two always agree on what a certificate presents.
 */
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "stream/tls_int.h"
#include "xmppd/alloc.h"
#include "xmppd/err.h"

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

/* ---- identities (RFC 6125 6) --------------------------------------------- */

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
    char *s = tls_cert_cn(x);
    if (s != NULL)
        fn(ud, XD_TLS_ID_CN, s);
    xd_free(s);
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

/* ---- the verdict --------------------------------------------------------- */

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

/* ---- the identities, for the caller -------------------------------------- */

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

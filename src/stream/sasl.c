/*
 * sasl.c — the SASL server engine (see sasl.h for the state diagram and the
 * contract with the c2s).
 *
 * Invariants:
 *   - No I/O, no blocking, no logging: every entry point runs in time
 *     bounded by XD_SASL_MSG_MAX and a handful of HMACs.
 *   - The exchange fields (user, authzid, password, SCRAM state) are reset by
 *     sasl_reset() at every start and every failure; secrets in them are
 *     wiped there and in xd_sasl_free().
 *   - A result points only into s (or at static strings) and is replaced by
 *     the next call: `out` and `res_jid` are released at every entry.
 *   - An unknown SCRAM user is not distinguishable by messages from a wrong
 *     password: same server-first shape (salt length, iteration count), same
 *     final failure (not-authorized, no text).
 */
#include "stream/sasl.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistr.h>

#include "core/secret.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/base64.h"
#include "xmppd/err.h"

#define SASL_SECRET_MAX 64 /* bytes of server secret kept */
_Static_assert(XD_NODE_KEY_LEN <= SASL_SECRET_MAX, "the node key fits");

typedef enum sasl_state {
    SASL_IDLE,          /* no exchange: start allowed (first, or after a failure) */
    SASL_WANT_FIRST,    /* empty challenge sent; the next step is the first message */
    SASL_WAIT_CHECK,    /* PLAIN: NEED_CHECK out, waiting for provide_check */
    SASL_WAIT_SCRAM,    /* SCRAM: NEED_SCRAM out, waiting for provide_scram */
    SASL_WAIT_FINAL,    /* SCRAM: server-first out, waiting for client-final */
    SASL_WAIT_EXTERNAL, /* EXTERNAL: NEED_EXTERNAL out, waiting for provide_external */
    SASL_WAIT_TOKEN,    /* HT-*: NEED_TOKEN out, waiting for provide_token */
    SASL_SUCCEEDED,     /* final */
} sasl_state;

/* One engine.  Owner worker only. */
struct xd_sasl {
    /* Configuration, fixed by xd_sasl_new. */
    char *host;                        /* served domain */
    unsigned mechs;                    /* effective XD_SASL_BIT set offered */
    unsigned need_tls;                 /* withheld for want of TLS */
    unsigned cb_types;                 /* XD_SASL_CB_BIT set available (advertised) */
    unsigned cb_quiet;                 /* also accepted, never advertised */
    xd_sasl_cb_data_fn cb_data;        /* binding data callback, or NULL */
    uint8_t cb_bytes[XD_SASL_CB_COUNT][XD_SASL_CB_DATA_MAX]; /* precomputed data */
    size_t cb_len[XD_SASL_CB_COUNT];   /* their lengths; 0 = none */
    xd_sasl_authz_fn authz;            /* authorization policy, or NULL */
    void *arg;                         /* for cb_data and authz */
    uint8_t secret[SASL_SECRET_MAX];   /* fake-salt key */
    size_t secret_len;                 /* bytes of secret */
    unsigned fake_iterations;          /* i= for unknown users */
    const char *mech_list[XD_SASL_MECH_COUNT + 1]; /* advertised, NULL-terminated */
    const char *fast_list[XD_SASL_MECH_COUNT + 1]; /* HT-* for <fast/>, NULL-terminated */
    char *test_snonce;                 /* tests: fixed server nonce, or NULL */

    /* The exchange in progress. */
    sasl_state state;                  /* see sasl.h */
    xd_sasl_mech mech;                 /* its mechanism */
    char *user;                        /* prepared localpart, or NULL */
    xd_jid_t *authzid;                 /* requested authzid (bare), or NULL */
    char *password;                    /* PLAIN: copy, wiped */
    size_t password_len;               /* its length */
    xd_scram_hash hash;                /* SCRAM: H */
    int cb;                            /* SCRAM: xd_sasl_cb in use, -1 = none */
    uint8_t cb_input[XD_SASL_MSG_MAX + XD_SASL_CB_DATA_MAX]; /* gs2 header + cb data */
    size_t cb_input_len;               /* its length */
    char *cfirst_bare;                 /* SCRAM: client-first-message-bare */
    size_t cfirst_bare_len;            /* its length */
    char *cnonce;                      /* SCRAM: client nonce (NUL-terminated) */
    char *sfirst;                      /* SCRAM: server-first-message */
    size_t sfirst_len;                 /* its length */
    char *nonce;                       /* SCRAM: combined nonce (NUL-terminated) */
    xd_scram_cred_t cred;              /* SCRAM: the credential (wiped) */
    bool fake;                         /* SCRAM: cred is a fake one: the proof fails */
    unsigned flags;                    /* XD_SASL_START_* of the exchange */
    uint8_t ht_proof[32];              /* HT: the client's initiator-hashed-token */

    /* The last result's storage. */
    uint8_t *out;                      /* challenge / additional data */
    xd_jid_t *res_jid;                 /* SUCCESS: the authorized JID */
};

static const char *const sasl_mech_names[XD_SASL_MECH_COUNT] = {
    [XD_SASL_SCRAM_SHA_512_PLUS] = "SCRAM-SHA-512-PLUS",
    [XD_SASL_SCRAM_SHA_256_PLUS] = "SCRAM-SHA-256-PLUS",
    [XD_SASL_SCRAM_SHA_1_PLUS] = "SCRAM-SHA-1-PLUS",
    [XD_SASL_SCRAM_SHA_512] = "SCRAM-SHA-512",
    [XD_SASL_SCRAM_SHA_256] = "SCRAM-SHA-256",
    [XD_SASL_SCRAM_SHA_1] = "SCRAM-SHA-1",
    [XD_SASL_PLAIN] = "PLAIN",
    [XD_SASL_ANONYMOUS] = "ANONYMOUS",
    [XD_SASL_EXTERNAL] = "EXTERNAL",
    [XD_SASL_HT_SHA_256_ENDP] = "HT-SHA-256-ENDP",
    [XD_SASL_HT_SHA_256_EXPR] = "HT-SHA-256-EXPR",
    [XD_SASL_HT_SHA_256_UNIQ] = "HT-SHA-256-UNIQ",
    [XD_SASL_HT_SHA_256_NONE] = "HT-SHA-256-NONE",
};

static const char *const sasl_cb_names[XD_SASL_CB_COUNT] = {
    [XD_SASL_CB_TLS_EXPORTER] = "tls-exporter",
    [XD_SASL_CB_TLS_SERVER_END_POINT] = "tls-server-end-point",
    [XD_SASL_CB_TLS_UNIQUE] = "tls-unique",
};

static const char *const sasl_cond_names[XD_SASL_COND_COUNT] = {
    [XD_SASL_COND_ABORTED] = "aborted",
    [XD_SASL_COND_ACCOUNT_DISABLED] = "account-disabled",
    [XD_SASL_COND_CREDENTIALS_EXPIRED] = "credentials-expired",
    [XD_SASL_COND_ENCRYPTION_REQUIRED] = "encryption-required",
    [XD_SASL_COND_INCORRECT_ENCODING] = "incorrect-encoding",
    [XD_SASL_COND_INVALID_AUTHZID] = "invalid-authzid",
    [XD_SASL_COND_INVALID_MECHANISM] = "invalid-mechanism",
    [XD_SASL_COND_MALFORMED_REQUEST] = "malformed-request",
    [XD_SASL_COND_MECHANISM_TOO_WEAK] = "mechanism-too-weak",
    [XD_SASL_COND_NOT_AUTHORIZED] = "not-authorized",
    [XD_SASL_COND_TEMPORARY_AUTH_FAILURE] = "temporary-auth-failure",
};

/* ---- names ----------------------------------------------------------------------------------- */

const char *
xd_sasl_mech_name(xd_sasl_mech mech)
{
    return (unsigned)mech < XD_SASL_MECH_COUNT ? sasl_mech_names[mech] : NULL;
}

int
xd_sasl_mech_parse(xd_str_t name)
{
    for (unsigned i = 0; i < XD_SASL_MECH_COUNT; i++)
        if (xd_str_eq_c(name, sasl_mech_names[i]))
            return (int)i;
    return -1;
}

const char *
xd_sasl_cb_name(xd_sasl_cb cb)
{
    return (unsigned)cb < XD_SASL_CB_COUNT ? sasl_cb_names[cb] : NULL;
}

const char *
xd_sasl_cond_name(xd_sasl_cond cond)
{
    return (unsigned)cond < XD_SASL_COND_COUNT ? sasl_cond_names[cond] : NULL;
}

static bool
sasl_mech_is_scram(xd_sasl_mech m)
{
    return m <= XD_SASL_SCRAM_SHA_1;
}

static bool
sasl_mech_is_plus(xd_sasl_mech m)
{
    return m <= XD_SASL_SCRAM_SHA_1_PLUS;
}

bool
xd_sasl_mech_is_ht(xd_sasl_mech m)
{
    return (unsigned)m < XD_SASL_MECH_COUNT && (XD_SASL_MECHS_HT & XD_SASL_BIT(m));
}

static xd_scram_hash
sasl_mech_hash(xd_sasl_mech m)
{
    switch (m) {
    case XD_SASL_SCRAM_SHA_512_PLUS:
    case XD_SASL_SCRAM_SHA_512:
        return XD_SCRAM_SHA512;
    case XD_SASL_SCRAM_SHA_256_PLUS:
    case XD_SASL_SCRAM_SHA_256:
        return XD_SCRAM_SHA256;
    default:
        return XD_SCRAM_SHA1;
    }
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

xd_sasl_t *
xd_sasl_new(const xd_sasl_opts_t *o)
{
    XD_ASSERT(o != NULL && o->host != NULL);
    xd_sasl_t *s = xd_new(xd_sasl_t);
    if (xd_jid_prep_domain(xd_str_c(o->host), &s->host) != 0)
        s->host = xd_strdup(o->host); /* compared as given; xd_jid_make will refuse it */
    s->cb_types = o->cb_types & ((1u << XD_SASL_CB_COUNT) - 1);
    s->cb_quiet = s->cb_types ? o->cb_quiet & ((1u << XD_SASL_CB_COUNT) - 1) : 0;
    s->mechs = o->mechs & XD_SASL_MECHS_ALL;
    if (s->cb_types == 0)
        s->mechs &= ~(unsigned)XD_SASL_MECHS_SCRAM_PLUS; /* RFC 5802 6: no binding, no -PLUS */
    /* HT-*: the binding each needs (UNIQ: tls-unique, else tls-exporter). */
    unsigned cbs = s->cb_types | s->cb_quiet;
    if (!(cbs & XD_SASL_CB_BIT(XD_SASL_CB_TLS_SERVER_END_POINT)))
        s->mechs &= ~XD_SASL_BIT(XD_SASL_HT_SHA_256_ENDP);
    if (!(cbs & XD_SASL_CB_BIT(XD_SASL_CB_TLS_EXPORTER)))
        s->mechs &= ~XD_SASL_BIT(XD_SASL_HT_SHA_256_EXPR);
    if (!(cbs & (XD_SASL_CB_BIT(XD_SASL_CB_TLS_UNIQUE) | XD_SASL_CB_BIT(XD_SASL_CB_TLS_EXPORTER))))
        s->mechs &= ~XD_SASL_BIT(XD_SASL_HT_SHA_256_UNIQ);
    s->need_tls = o->mechs_need_tls & XD_SASL_MECHS_ALL & ~s->mechs;
    s->cb_data = o->cb_data;
    for (unsigned i = 0; i < XD_SASL_CB_COUNT; i++) {
        xd_str_t b = o->cb_bytes[i];
        if (b.len > 0 && b.len <= XD_SASL_CB_DATA_MAX) {
            memcpy(s->cb_bytes[i], b.p, b.len);
            s->cb_len[i] = b.len;
        }
    }
    s->authz = o->authz;
    s->arg = o->arg;
    if (o->secret.len > 0) {
        s->secret_len = o->secret.len < SASL_SECRET_MAX ? o->secret.len : SASL_SECRET_MAX;
        memcpy(s->secret, o->secret.p, s->secret_len);
    } else {
        xd_node_key(XD_NODE_KEY_SCRAM_SALT, s->secret);
        s->secret_len = XD_NODE_KEY_LEN;
    }
    s->fake_iterations = o->fake_iterations ? o->fake_iterations : XD_SCRAM_ITERATIONS_DEFAULT;
    size_t k = 0, f = 0;
    for (unsigned i = 0; i < XD_SASL_MECH_COUNT; i++) {
        if (!(s->mechs & XD_SASL_BIT(i)))
            continue;
        if (XD_SASL_MECHS_HT & XD_SASL_BIT(i))
            s->fast_list[f++] = sasl_mech_names[i];
        else
            s->mech_list[k++] = sasl_mech_names[i];
    }
    s->mech_list[k] = NULL;
    s->fast_list[f] = NULL;
    s->state = SASL_IDLE;
    s->cb = -1;
    return s;
}

/* Forgets the exchange, wiping its secrets. */
static void
sasl_reset(xd_sasl_t *s)
{
    if (s->password != NULL) {
        OPENSSL_cleanse(s->password, s->password_len);
        xd_free(s->password);
        s->password = NULL;
        s->password_len = 0;
    }
    xd_free(s->user);
    s->user = NULL;
    if (s->authzid != NULL) {
        xd_jid_unref(s->authzid);
        s->authzid = NULL;
    }
    xd_free(s->cfirst_bare);
    xd_free(s->cnonce);
    xd_free(s->sfirst);
    xd_free(s->nonce);
    s->cfirst_bare = s->cnonce = s->sfirst = s->nonce = NULL;
    s->cfirst_bare_len = s->sfirst_len = 0;
    OPENSSL_cleanse(&s->cred, sizeof s->cred);
    OPENSSL_cleanse(s->cb_input, s->cb_input_len);
    s->cb_input_len = 0;
    s->fake = false;
    s->cb = -1;
    s->flags = 0;
    OPENSSL_cleanse(s->ht_proof, sizeof s->ht_proof);
}

/* Releases the previous result's storage. */
static void
sasl_result_clear(xd_sasl_t *s)
{
    xd_free(s->out);
    s->out = NULL;
    if (s->res_jid != NULL) {
        xd_jid_unref(s->res_jid);
        s->res_jid = NULL;
    }
}

void
xd_sasl_free(xd_sasl_t *s)
{
    if (s == NULL)
        return;
    sasl_reset(s);
    sasl_result_clear(s);
    OPENSSL_cleanse(s->secret, sizeof s->secret);
    xd_free(s->test_snonce);
    xd_free(s->host);
    xd_free(s);
}

const char *const *
xd_sasl_mechanisms(const xd_sasl_t *s)
{
    return s->mech_list;
}

unsigned
xd_sasl_cb_offered(const xd_sasl_t *s)
{
    return (s->mechs & XD_SASL_MECHS_SCRAM_PLUS) ? s->cb_types : 0;
}

const char *const *
xd_sasl_fast_mechanisms(const xd_sasl_t *s)
{
    return s->fast_list;
}

bool
xd_sasl_succeeded(const xd_sasl_t *s)
{
    return s->state == SASL_SUCCEEDED;
}

void
xd_sasl_test_set_nonce(xd_sasl_t *s, const char *snonce)
{
    xd_free(s->test_snonce);
    s->test_snonce = snonce ? xd_strdup(snonce) : NULL;
}

/* ---- results --------------------------------------------------------------------------------- */

static void
sasl_result_init(xd_sasl_t *s, xd_sasl_result_t *r)
{
    memset(r, 0, sizeof *r);
    r->kind = XD_SASL_NONE;
    r->mech = s->mech;
    r->cb = -1;
    r->token = -1;
}

/* FAILURE: the exchange is over; the engine is IDLE again. */
static int
sasl_fail(xd_sasl_t *s, xd_sasl_result_t *r, xd_sasl_cond cond, const char *text)
{
    sasl_reset(s);
    s->state = SASL_IDLE;
    r->kind = XD_SASL_FAILURE;
    r->cond = cond;
    r->text = text;
    return 0;
}

/* CHALLENGE with out (xd_malloc'd, taken over; NULL for an empty one). */
static int
sasl_challenge(xd_sasl_t *s, xd_sasl_result_t *r, uint8_t *out, size_t len, sasl_state next)
{
    s->out = out;
    s->state = next;
    r->kind = XD_SASL_CHALLENGE;
    r->out = out != NULL ? out : (const uint8_t *)"";
    r->out_len = len;
    return 0;
}

/*
 * RFC6120 6.3.8: decides who the stream is authorized as, once `s->user`
 * has authenticated: no authzid → user@host; the own bare JID → itself;
 * another bare JID → the authz policy; then SUCCESS with out (taken over,
 * may be NULL) as additional data.
 */
static int
sasl_authorize(xd_sasl_t *s, xd_sasl_result_t *r, uint8_t *out, size_t out_len)
{
    xd_jid_t *self = NULL;
    if (xd_jid_make(xd_str_c(s->user), xd_str_c(s->host), XD_STR_NULL, &self) != 0) {
        xd_free(out);
        return sasl_fail(s, r, XD_SASL_COND_NOT_AUTHORIZED, NULL);
    }
    xd_jid_t *as = self;
    if (s->authzid != NULL && !xd_jid_eq_bare(s->authzid, self)) {
        if (s->authz == NULL || !s->authz(s->arg, self, s->authzid)) {
            xd_jid_unref(self);
            xd_free(out);
            return sasl_fail(s, r, XD_SASL_COND_INVALID_AUTHZID,
                             "not allowed to act as that authzid");
        }
        as = xd_jid_ref(s->authzid);
        xd_jid_unref(self);
    }
    /* The password and SCRAM state are no longer needed: wipe them now. */
    if (s->password != NULL) {
        OPENSSL_cleanse(s->password, s->password_len);
        xd_free(s->password);
        s->password = NULL;
        s->password_len = 0;
    }
    OPENSSL_cleanse(&s->cred, sizeof s->cred);
    s->state = SASL_SUCCEEDED;
    s->out = out;
    s->res_jid = as;
    r->kind = XD_SASL_SUCCESS;
    r->out = out;
    r->out_len = out != NULL ? out_len : 0;
    r->user = s->user;
    r->authzid = s->authzid;
    r->jid = as;
    r->cb = s->cb;
    return 0;
}

/* Parses an authzid (raw, non-empty) into s->authzid.  RFC6120 6.3.8: it
 * must be a bare JID; false when it is not (invalid-authzid). */
static bool
sasl_set_authzid(xd_sasl_t *s, const char *p, size_t n)
{
    xd_jid_t *j = NULL;
    if (xd_jid_parse((xd_str_t){ p, n }, &j) != 0)
        return false;
    if (!xd_jid_is_bare(j)) {
        xd_jid_unref(j);
        return false;
    }
    s->authzid = j;
    return true;
}

static bool
sasl_utf8_ok(const char *p, size_t n)
{
    return u8_check((const uint8_t *)p, n) == NULL;
}

/* ---- PLAIN (RFC 4616) ------------------------------------------------------------------------ */

/* message = [authzid] UTF8NUL authcid UTF8NUL passwd */
static int
sasl_plain(xd_sasl_t *s, const char *m, size_t n, xd_sasl_result_t *r)
{
    const char *nul1 = memchr(m, '\0', n);
    const char *nul2 = nul1 ? memchr(nul1 + 1, '\0', (size_t)(m + n - nul1 - 1)) : NULL;
    if (nul2 == NULL)
        return sasl_fail(s, r, XD_SASL_COND_MALFORMED_REQUEST, "PLAIN needs two NUL separators");
    const char *az = m, *ac = nul1 + 1, *pw = nul2 + 1;
    size_t az_len = (size_t)(nul1 - m), ac_len = (size_t)(nul2 - ac),
           pw_len = (size_t)(m + n - pw);
    if (memchr(pw, '\0', pw_len) != NULL)
        return sasl_fail(s, r, XD_SASL_COND_MALFORMED_REQUEST, "NUL in the PLAIN password");
    if (ac_len == 0 || pw_len == 0)
        return sasl_fail(s, r, XD_SASL_COND_MALFORMED_REQUEST, "empty authcid or password");
    if (!sasl_utf8_ok(m, n))
        return sasl_fail(s, r, XD_SASL_COND_MALFORMED_REQUEST, "PLAIN message is not UTF-8");
    if (az_len > 0 && !sasl_set_authzid(s, az, az_len))
        return sasl_fail(s, r, XD_SASL_COND_INVALID_AUTHZID, "authzid is not a bare JID");
    /* RFC6120 6.3.8: the authcid is a simple user name; here a localpart. */
    if (xd_jid_prep_local((xd_str_t){ ac, ac_len }, &s->user) != 0)
        return sasl_fail(s, r, XD_SASL_COND_NOT_AUTHORIZED, NULL);
    s->password = xd_strndup(pw, pw_len);
    s->password_len = pw_len;
    s->state = SASL_WAIT_CHECK;
    r->kind = XD_SASL_NEED_CHECK;
    r->user = s->user;
    r->password = s->password;
    r->password_len = s->password_len;
    return 0;
}

int
xd_sasl_provide_check(xd_sasl_t *s, int status, bool ok, xd_sasl_result_t *r)
{
    if (s->state != SASL_WAIT_CHECK) {
        sasl_result_init(s, r);
        return XD_EINVAL;
    }
    sasl_result_clear(s);
    sasl_result_init(s, r);
    if (status == XD_ENOTFOUND || status == XD_EAUTH_REFUSED || (status == 0 && !ok))
        return sasl_fail(s, r, XD_SASL_COND_NOT_AUTHORIZED, NULL);
    if (status != 0)
        return sasl_fail(s, r, XD_SASL_COND_TEMPORARY_AUTH_FAILURE, NULL);
    return sasl_authorize(s, r, NULL, 0);
}

/* ---- ANONYMOUS (RFC 4505, XEP-0175) ---------------------------------------------------------- */

static int
sasl_anonymous(xd_sasl_t *s, const char *m, size_t n, xd_sasl_result_t *r)
{
    /* RFC4505 2: the trace is 1..255 UTF-8 characters; it is ignored. */
    if (!sasl_utf8_ok(m, n) || memchr(m, '\0', n) != NULL ||
        u8_mbsnlen((const uint8_t *)m, n) > XD_SASL_TRACE_MAX)
        return sasl_fail(s, r, XD_SASL_COND_MALFORMED_REQUEST, "bad ANONYMOUS trace");
    s->state = SASL_SUCCEEDED;
    r->kind = XD_SASL_SUCCESS;
    r->anonymous = true;
    return 0;
}

/* ---- EXTERNAL (XEP-0178) --------------------------------------------------------------------- */

static int
sasl_external(xd_sasl_t *s, const char *m, size_t n, xd_sasl_result_t *r)
{
    if (n > 0) {
        if (!sasl_utf8_ok(m, n) || memchr(m, '\0', n) != NULL)
            return sasl_fail(s, r, XD_SASL_COND_MALFORMED_REQUEST, "bad EXTERNAL authzid");
        if (!sasl_set_authzid(s, m, n))
            return sasl_fail(s, r, XD_SASL_COND_INVALID_AUTHZID, "authzid is not a bare JID");
    }
    s->state = SASL_WAIT_EXTERNAL;
    r->kind = XD_SASL_NEED_EXTERNAL;
    r->authzid = s->authzid;
    return 0;
}

int
xd_sasl_provide_external(xd_sasl_t *s, int status, const xd_str_t *ids, size_t n,
                         xd_sasl_result_t *r)
{
    if (s->state != SASL_WAIT_EXTERNAL) {
        sasl_result_init(s, r);
        return XD_EINVAL;
    }
    sasl_result_clear(s);
    sasl_result_init(s, r);
    if (status == XD_ENOTFOUND)
        return sasl_fail(s, r, XD_SASL_COND_NOT_AUTHORIZED, NULL);
    if (status != 0)
        return sasl_fail(s, r, XD_SASL_COND_TEMPORARY_AUTH_FAILURE, NULL);

    /* Usable identities: user@host, possibly with a resource (ignored). */
    xd_jid_t *one = NULL, *match = NULL;
    size_t usable = 0;
    for (size_t i = 0; i < n; i++) {
        xd_jid_t *j = NULL;
        if (xd_jid_parse(ids[i], &j) != 0)
            continue;
        if (xd_jid_local(j).len == 0 || !xd_str_eq_c(xd_jid_domain(j), s->host)) {
            xd_jid_unref(j);
            continue;
        }
        usable++;
        if (one == NULL)
            one = xd_jid_bare(j);
        if (match == NULL && s->authzid != NULL && xd_jid_eq_bare(j, s->authzid))
            match = xd_jid_bare(j);
        xd_jid_unref(j);
    }
    int rc;
    if (usable == 0) {
        rc = sasl_fail(s, r, XD_SASL_COND_NOT_AUTHORIZED, "no usable identity in the certificate");
    } else if (match != NULL) {
        s->user = xd_strdup(xd_jid_local(match).p); /* XEP-0178: the authzid is one of ours */
        rc = sasl_authorize(s, r, NULL, 0);
    } else if (s->authzid == NULL && usable > 1) {
        rc = sasl_fail(s, r, XD_SASL_COND_INVALID_AUTHZID,
                       "certificate has several identities: an authzid is required");
    } else if (s->authzid != NULL && usable > 1) {
        rc = sasl_fail(s, r, XD_SASL_COND_INVALID_AUTHZID, "authzid not in the certificate");
    } else {
        s->user = xd_strdup(xd_jid_local(one).p); /* the one identity; authz decides the rest */
        rc = sasl_authorize(s, r, NULL, 0);
    }
    if (one != NULL)
        xd_jid_unref(one);
    if (match != NULL)
        xd_jid_unref(match);
    return rc;
}

/* ---- SCRAM (RFC 5802, RFC 7677) -------------------------------------------------------------- */

/* The next ','-separated field of [*p, end) into *f; *more says whether a
 * comma ended it.  *p moves past the comma. */
static void
sc_field(const char **p, const char *end, xd_str_t *f, bool *more)
{
    const char *c = memchr(*p, ',', (size_t)(end - *p));
    f->p = *p;
    f->len = (size_t)((c ? c : end) - *p);
    *more = c != NULL;
    *p = c ? c + 1 : end;
}

static bool
sc_prefix(xd_str_t f, char key)
{
    return f.len >= 2 && f.p[0] == key && f.p[1] == '=';
}

/* RFC5802 7: printable = %x21-2B / %x2D-7E; a nonce is 1*printable. */
static bool
sc_nonce_ok(const char *p, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x21 || c > 0x7e || c == ',')
            return false;
    }
    return true;
}

/* RFC5802 7: attr-val = ALPHA "=" value; value = 1*value-char (any UTF-8
 * except NUL and ','; the caller checked UTF-8 and NUL). */
static bool
sc_attr_val_ok(xd_str_t f)
{
    unsigned char k = f.len ? (unsigned char)f.p[0] : 0;
    return f.len >= 3 && ((k >= 'a' && k <= 'z') || (k >= 'A' && k <= 'Z')) && f.p[1] == '=';
}

/* RFC5802 5.1: saslname = 1*(value-safe-char / "=2C" / "=3D"); a new
 * NUL-terminated unescaped copy, or NULL when malformed. */
static char *
sc_saslname(const char *p, size_t n, size_t *out_len)
{
    if (n == 0)
        return NULL;
    char *out = xd_malloc(n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '=') {
            out[k++] = p[i];
        } else if (n - i >= 3 && p[i + 1] == '2' && p[i + 2] == 'C') {
            out[k++] = ',';
            i += 2;
        } else if (n - i >= 3 && p[i + 1] == '3' && p[i + 2] == 'D') {
            out[k++] = '=';
            i += 2;
        } else {
            xd_free(out);
            return NULL;
        }
    }
    out[k] = '\0';
    *out_len = k;
    return out;
}

/* Fetches the binding data of cb into s->cb_input after the gs2 header. */
static bool
sc_cb_data(xd_sasl_t *s, xd_sasl_cb cb)
{
    uint8_t *dst = s->cb_input + s->cb_input_len;
    size_t len = 0;
    if (s->cb_data != NULL) {
        if (s->cb_data(s->arg, cb, dst, XD_SASL_CB_DATA_MAX, &len) != 0 || len == 0 ||
            len > XD_SASL_CB_DATA_MAX)
            return false;
    } else {
        if (s->cb_len[cb] == 0)
            return false;
        len = s->cb_len[cb];
        memcpy(dst, s->cb_bytes[cb], len);
    }
    s->cb_input_len += len;
    return true;
}

/*
 * client-first-message = gs2-header client-first-message-bare
 * gs2-header  = gs2-cbind-flag "," [ authzid ] ","
 * gs2-cbind-flag = ("p=" cb-name) / "n" / "y"
 * client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
 */
static int
sc_client_first(xd_sasl_t *s, const char *m, size_t n, xd_sasl_result_t *r)
{
    const char *p = m, *end = m + n;
    xd_str_t f;
    bool more;

    if (n == 0 || memchr(m, '\0', n) != NULL || !sasl_utf8_ok(m, n))
        return sasl_fail(s, r, XD_SASL_COND_MALFORMED_REQUEST, "bad SCRAM client-first message");

    /* gs2-cbind-flag */
    sc_field(&p, end, &f, &more);
    char flag = f.len ? f.p[0] : 0;
    int cb = -1;
    bool flag_ok = (f.len == 1 && (flag == 'n' || flag == 'y')) ||
                   (flag == 'p' && f.len > 2 && f.p[1] == '=');
    if (!more || !flag_ok)
        return sasl_fail(s, r, XD_SASL_COND_MALFORMED_REQUEST, "bad GS2 header");
    if (flag == 'p') {
        xd_str_t name = { f.p + 2, f.len - 2 };
        for (size_t i = 0; i < name.len; i++) {
            char c = name.p[i];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '-'))
                return sasl_fail(s, r, XD_SASL_COND_MALFORMED_REQUEST, "bad cb-name");
        }
        for (unsigned i = 0; i < XD_SASL_CB_COUNT; i++)
            if (xd_str_eq_c(name, sasl_cb_names[i]))
                cb = (int)i;
    }

    /* [ "a=" saslname ] */
    sc_field(&p, end, &f, &more);
    char *authzid = NULL;
    size_t authzid_len = 0;
    if (!more || (f.len > 0 && !sc_prefix(f, 'a')))
        return sasl_fail(s, r, XD_SASL_COND_MALFORMED_REQUEST, "bad GS2 header");
    if (f.len > 0 && (authzid = sc_saslname(f.p + 2, f.len - 2, &authzid_len)) == NULL)
        return sasl_fail(s, r, XD_SASL_COND_MALFORMED_REQUEST, "bad authzid escaping");
    size_t gs2_len = (size_t)(p - m);
    const char *bare = p;

    /* RFC5802 5.1: "m" is reserved for mandatory extensions; fail. */
    sc_field(&p, end, &f, &more);
    char *user = NULL;
    size_t user_len = 0;
    const char *why = NULL;
    if (sc_prefix(f, 'm'))
        why = "mandatory extension not supported";
    else if (!more || !sc_prefix(f, 'n') ||
             (user = sc_saslname(f.p + 2, f.len - 2, &user_len)) == NULL)
        why = "bad SCRAM username";
    xd_str_t nonce = XD_STR_NULL;
    if (why == NULL) {
        sc_field(&p, end, &f, &more);
        if (!sc_prefix(f, 'r') || !sc_nonce_ok(f.p + 2, f.len - 2))
            why = "bad SCRAM nonce";
        nonce = (xd_str_t){ f.p + 2, f.len >= 2 ? f.len - 2 : 0 };
    }
    while (why == NULL && more) { /* extensions: ignored when well-formed */
        sc_field(&p, end, &f, &more);
        if (!sc_attr_val_ok(f))
            why = "bad SCRAM extension";
    }
    if (why != NULL) {
        xd_free(authzid);
        xd_free(user);
        return sasl_fail(s, r, XD_SASL_COND_MALFORMED_REQUEST, why);
    }

    /* RFC5802 6: the channel-binding flag against what we offered. */
    xd_sasl_cond cond = XD_SASL_COND_COUNT;
    if (sasl_mech_is_plus(s->mech)) {
        if (flag != 'p') {
            cond = XD_SASL_COND_MALFORMED_REQUEST;
            why = "a -PLUS mechanism needs p=<cb-name>";
        } else if (cb < 0 || !((s->cb_types | s->cb_quiet) & XD_SASL_CB_BIT(cb))) {
            cond = XD_SASL_COND_NOT_AUTHORIZED;
            why = "unsupported channel binding type";
        }
    } else if (flag == 'p') {
        cond = XD_SASL_COND_MALFORMED_REQUEST;
        why = "channel binding needs a -PLUS mechanism";
    } else if (flag == 'y' && (s->mechs & XD_SASL_MECHS_SCRAM_PLUS)) {
        /* RFC5802 6: the client thinks we cannot bind, but we offered -PLUS:
         * a downgrade attack stripped them.  Refused whatever this stream
         * tried before: a man in the middle could have sent a -PLUS
         * attempt with a type we lack himself (docs/admin.md). */
        cond = XD_SASL_COND_NOT_AUTHORIZED;
        why = "server supports channel binding";
    }
    if (why != NULL) {
        xd_free(authzid);
        xd_free(user);
        return sasl_fail(s, r, cond, why);
    }

    /* Keep what the final message is checked against. */
    XD_ASSERT(gs2_len <= XD_SASL_MSG_MAX);
    memcpy(s->cb_input, m, gs2_len);
    s->cb_input_len = gs2_len;
    if (flag == 'p') {
        if (!sc_cb_data(s, (xd_sasl_cb)cb)) {
            xd_free(authzid);
            xd_free(user);
            return sasl_fail(s, r, XD_SASL_COND_TEMPORARY_AUTH_FAILURE,
                             "channel binding data unavailable");
        }
        s->cb = cb;
    }
    bool az_ok = authzid == NULL || (memchr(authzid, '\0', authzid_len) == NULL &&
                                     sasl_set_authzid(s, authzid, authzid_len));
    xd_free(authzid);
    if (!az_ok) {
        xd_free(user);
        return sasl_fail(s, r, XD_SASL_COND_INVALID_AUTHZID, "authzid is not a bare JID");
    }
    int prc = memchr(user, '\0', user_len) == NULL
                  ? xd_jid_prep_local((xd_str_t){ user, user_len }, &s->user)
                  : XD_EINVAL;
    xd_free(user);
    if (prc != 0)
        return sasl_fail(s, r, XD_SASL_COND_NOT_AUTHORIZED, NULL);
    s->cfirst_bare_len = (size_t)(end - bare);
    s->cfirst_bare = xd_strndup(bare, s->cfirst_bare_len);
    s->cnonce = xd_strndup(nonce.p, nonce.len);
    s->hash = sasl_mech_hash(s->mech);
    s->state = SASL_WAIT_SCRAM;
    r->kind = XD_SASL_NEED_SCRAM;
    r->user = s->user;
    r->hash = s->hash;
    return 0;
}

/* A fake credential for an unknown user: a salt that is stable per (host,
 * hash, user) and unguessable without the secret, the announced iteration
 * count, and keys nobody knows. */
static void
sc_fake_cred(xd_sasl_t *s)
{
    uint8_t buf[XD_SCRAM_KEY_MAX];
    size_t hl = strlen(s->host), ul = strlen(s->user);
    const char *hn = xd_scram_hash_name(s->hash);
    size_t nl = strlen(hn);
    size_t msg_len = 5 + hl + 1 + nl + 1 + ul;
    char *msg = xd_malloc(msg_len + 1);
    snprintf(msg, msg_len + 1, "salt:%s%c%s%c%s", s->host, 0, hn, 0, s->user);

    memset(&s->cred, 0, sizeof s->cred);
    s->cred.hash = s->hash;
    s->cred.iterations = s->fake_iterations;
    s->cred.salt_len = XD_SCRAM_SALT_LEN;
    int rc = xd_scram_hmac(XD_SCRAM_SHA256, s->secret, s->secret_len, msg, msg_len, buf);
    XD_ASSERT(rc == 0); /* HMAC over memory cannot fail but for a broken OpenSSL */
    memcpy(s->cred.salt, buf, XD_SCRAM_SALT_LEN);
    msg[0] = 'k'; /* "kalt:": a different message for the keys */
    rc = xd_scram_hmac(s->hash, s->secret, s->secret_len, msg, msg_len, s->cred.stored_key);
    XD_ASSERT(rc == 0);
    memcpy(s->cred.server_key, s->cred.stored_key, sizeof s->cred.server_key);
    OPENSSL_cleanse(buf, sizeof buf);
    xd_free(msg);
    s->fake = true;
}

static int
sasl_strcmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b); /* i;octet */
}

/* XEP-0474 4 (SSDP): ",h=" and the base64 hash, with the SCRAM hash, of
 * the advertised mechanisms sorted and joined by 0x1E, then, when XEP-0440
 * advertised channel bindings, 0x1F and their sorted names joined by 0x1E. */
static void
sasl_ssdp(const xd_sasl_t *s, char *out, size_t cap)
{
    const char *names[XD_SASL_MECH_COUNT + XD_SASL_CB_COUNT];
    size_t n = 0, len = 0;
    char buf[512];
    for (; s->mech_list[n]; n++)
        names[n] = s->mech_list[n];
    qsort(names, n, sizeof *names, sasl_strcmp);
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", i ? "\x1e" : "", names[i]);
    unsigned cb = xd_sasl_cb_offered(s);
    if (cb) {
        n = 0;
        for (unsigned t = 0; t < XD_SASL_CB_COUNT; t++)
            if (cb & XD_SASL_CB_BIT(t))
                names[n++] = sasl_cb_names[t];
        qsort(names, n, sizeof *names, sasl_strcmp);
        len += (size_t)snprintf(buf + len, sizeof buf - len, "\x1f");
        for (size_t i = 0; i < n; i++)
            len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", i ? "\x1e" : "",
                                    names[i]);
    }
    XD_ASSERT(len < sizeof buf);
    uint8_t dig[XD_SCRAM_KEY_MAX];
    int rc = xd_scram_digest(s->hash, buf, len, dig);
    XD_ASSERT(rc == 0);
    size_t k = (size_t)snprintf(out, cap, ",h=");
    XD_ASSERT(k + xd_base64_encoded_len(xd_scram_key_len(s->hash), 0) < cap);
    k += xd_base64_encode(dig, xd_scram_key_len(s->hash), out + k, 0);
    out[k] = '\0';
}

int
xd_sasl_provide_scram(xd_sasl_t *s, int status, const xd_scram_cred_t *cred,
                      xd_sasl_result_t *r)
{
    if (s->state != SASL_WAIT_SCRAM) {
        sasl_result_init(s, r);
        return XD_EINVAL;
    }
    sasl_result_clear(s);
    sasl_result_init(s, r);
    if (status == XD_ENOTFOUND) {
        sc_fake_cred(s); /* do not reveal that the user does not exist */
    } else if (status != 0 || cred == NULL || cred->hash != s->hash || cred->iterations == 0 ||
               cred->salt_len == 0 || cred->salt_len > XD_SCRAM_SALT_MAX) {
        return sasl_fail(s, r, XD_SASL_COND_TEMPORARY_AUTH_FAILURE, NULL);
    } else {
        s->cred = *cred; /* iterations below 4096 were configured: accepted */
        s->fake = false;
    }

    /* server-first-message = nonce "," salt "," iteration-count */
    char rnd_b64[4 * ((XD_SASL_NONCE_BYTES + 2) / 3) + 1];
    const char *snonce = s->test_snonce;
    if (snonce == NULL) {
        uint8_t rnd[XD_SASL_NONCE_BYTES];
        if (RAND_bytes(rnd, sizeof rnd) != 1)
            return sasl_fail(s, r, XD_SASL_COND_TEMPORARY_AUTH_FAILURE, NULL);
        xd_base64_encode(rnd, sizeof rnd, rnd_b64, 0);
        snonce = rnd_b64;
    }
    size_t nl = strlen(s->cnonce) + strlen(snonce);
    s->nonce = xd_malloc(nl + 1);
    snprintf(s->nonce, nl + 1, "%s%s", s->cnonce, snonce);
    char salt[4 * ((XD_SCRAM_SALT_MAX + 2) / 3) + 1];
    xd_base64_encode(s->cred.salt, s->cred.salt_len, salt, 0);
    char ssdp[4 * ((XD_SCRAM_KEY_MAX + 2) / 3) + 8] = "";
    if (s->flags & XD_SASL_START_SSDP)
        sasl_ssdp(s, ssdp, sizeof ssdp);
    size_t cap = nl + strlen(salt) + strlen(ssdp) + 32;
    s->sfirst = xd_malloc(cap);
    int k = snprintf(s->sfirst, cap, "r=%s,s=%s,i=%u%s", s->nonce, salt, s->cred.iterations,
                     ssdp);
    XD_ASSERT(k > 0 && (size_t)k < cap);
    s->sfirst_len = (size_t)k;
    uint8_t *out = xd_malloc(s->sfirst_len);
    memcpy(out, s->sfirst, s->sfirst_len);
    return sasl_challenge(s, r, out, s->sfirst_len, SASL_WAIT_FINAL);
}

/*
 * client-final-message = channel-binding "," nonce ["," extensions] "," proof
 * channel-binding = "c=" base64;  proof = "p=" base64
 */
static int
sc_client_final(xd_sasl_t *s, const char *m, size_t n, xd_sasl_result_t *r)
{
    if (n == 0 || memchr(m, '\0', n) != NULL || !sasl_utf8_ok(m, n))
        return sasl_fail(s, r, XD_SASL_COND_MALFORMED_REQUEST, "bad SCRAM client-final message");

    /* The proof is the last field. */
    const char *last = m + n;
    while (last > m && last[-1] != ',')
        last--;
    if (last == m)
        return sasl_fail(s, r, XD_SASL_COND_MALFORMED_REQUEST, "SCRAM proof missing");
    xd_str_t pf = { last, (size_t)(m + n - last) };
    size_t wo_len = (size_t)(last - 1 - m); /* client-final-message-without-proof */
    if (!sc_prefix(pf, 'p'))
        return sasl_fail(s, r, XD_SASL_COND_MALFORMED_REQUEST, "SCRAM proof missing");

    const char *p = m, *end = m + wo_len;
    xd_str_t c, rn, f;
    bool more;
    sc_field(&p, end, &c, &more);
    if (!sc_prefix(c, 'c') || !more)
        return sasl_fail(s, r, XD_SASL_COND_MALFORMED_REQUEST, "bad SCRAM channel binding");
    sc_field(&p, end, &rn, &more);
    if (!sc_prefix(rn, 'r') || !sc_nonce_ok(rn.p + 2, rn.len - 2))
        return sasl_fail(s, r, XD_SASL_COND_MALFORMED_REQUEST, "bad SCRAM nonce");
    while (more) {
        sc_field(&p, end, &f, &more);
        if (!sc_attr_val_ok(f))
            return sasl_fail(s, r, XD_SASL_COND_MALFORMED_REQUEST, "bad SCRAM extension");
    }

    uint8_t proof[XD_SASL_MSG_MAX];
    size_t proof_len = 0;
    if (xd_base64_decode(pf.p + 2, pf.len - 2, proof, sizeof proof, &proof_len, 0) != 0)
        return sasl_fail(s, r, XD_SASL_COND_MALFORMED_REQUEST, "SCRAM proof is not base64");
    uint8_t *cbind = xd_malloc(c.len); /* decoded is shorter than encoded */
    size_t cbind_len = 0;
    if (xd_base64_decode(c.p + 2, c.len - 2, cbind, c.len, &cbind_len, 0) != 0) {
        xd_free(cbind);
        return sasl_fail(s, r, XD_SASL_COND_MALFORMED_REQUEST, "c= is not base64");
    }
    /* RFC5802 5.1: c= is base64(gs2-header [cbind-data]). */
    bool cb_ok = cbind_len == s->cb_input_len &&
                 xd_scram_ct_eq(cbind, s->cb_input, s->cb_input_len);
    xd_free(cbind);
    if (!cb_ok)
        return sasl_fail(s, r, XD_SASL_COND_NOT_AUTHORIZED, "channel binding mismatch");
    if (!xd_str_eq((xd_str_t){ rn.p + 2, rn.len - 2 }, xd_str_c(s->nonce)))
        return sasl_fail(s, r, XD_SASL_COND_NOT_AUTHORIZED, "nonce mismatch");

    /* AuthMessage = client-first-message-bare "," server-first-message ","
     *               client-final-message-without-proof */
    size_t am_len = s->cfirst_bare_len + 1 + s->sfirst_len + 1 + wo_len;
    char *am = xd_malloc(am_len);
    memcpy(am, s->cfirst_bare, s->cfirst_bare_len);
    am[s->cfirst_bare_len] = ',';
    memcpy(am + s->cfirst_bare_len + 1, s->sfirst, s->sfirst_len);
    am[s->cfirst_bare_len + 1 + s->sfirst_len] = ',';
    memcpy(am + s->cfirst_bare_len + 2 + s->sfirst_len, m, wo_len);
    xd_str_t amsg = { am, am_len };

    /* The fake credential goes through the same computation. */
    bool ok = xd_scram_verify_proof(s->hash, s->cred.stored_key, amsg, proof, proof_len);
    ok = ok && !s->fake;
    uint8_t sig[XD_SCRAM_KEY_MAX];
    int rc = ok ? xd_scram_server_signature(s->hash, s->cred.server_key, amsg, sig) : 0;
    xd_free(am);
    if (!ok)
        return sasl_fail(s, r, XD_SASL_COND_NOT_AUTHORIZED, NULL);
    if (rc != 0)
        return sasl_fail(s, r, XD_SASL_COND_TEMPORARY_AUTH_FAILURE, NULL);

    /* server-final-message = "v=" base64(ServerSignature) */
    size_t klen = xd_scram_key_len(s->hash);
    uint8_t *out = xd_malloc(2 + xd_base64_encoded_len(klen, 0) + 1);
    out[0] = 'v';
    out[1] = '=';
    size_t b64_len = xd_base64_encode(sig, klen, (char *)out + 2, 0);
    return sasl_authorize(s, r, out, b64_len + 2);
}

/* ---- HT (draft-schmaus-kitten-sasl-ht, XEP-0484 FAST) ----------------------------------------- */

void
xd_sasl_ht_hmac(const uint8_t key[XD_SASL_HT_KEY_LEN], bool initiator, const uint8_t *cb,
                size_t cb_len, uint8_t out[32])
{
    static const char ini[] = "Initiator", resp[] = "Responder";
    uint8_t msg[sizeof ini - 1 + XD_SASL_CB_DATA_MAX];
    XD_ASSERT(cb_len <= XD_SASL_CB_DATA_MAX);
    memcpy(msg, initiator ? ini : resp, sizeof ini - 1);
    if (cb_len)
        memcpy(msg + sizeof ini - 1, cb, cb_len);
    int rc = xd_scram_hmac(XD_SCRAM_SHA256, key, XD_SASL_HT_KEY_LEN, msg, sizeof ini - 1 + cb_len,
                           out);
    XD_ASSERT(rc == 0);
}

/* The binding of an HT mechanism on this stream, or -1 for NONE. */
static int
ht_cb_type(const xd_sasl_t *s, xd_sasl_mech m)
{
    unsigned cbs = s->cb_types; /* advertised: tls-unique only on TLS 1.2 */
    switch (m) {
    case XD_SASL_HT_SHA_256_ENDP:
        return XD_SASL_CB_TLS_SERVER_END_POINT;
    case XD_SASL_HT_SHA_256_EXPR:
        return XD_SASL_CB_TLS_EXPORTER;
    case XD_SASL_HT_SHA_256_UNIQ:
        return (cbs & XD_SASL_CB_BIT(XD_SASL_CB_TLS_UNIQUE)) ? XD_SASL_CB_TLS_UNIQUE
                                                             : XD_SASL_CB_TLS_EXPORTER;
    default:
        return -1;
    }
}

/* initial-response = authcid NUL initiator-hashed-token (32 bytes) */
static int
sasl_ht_first(xd_sasl_t *s, const char *m, size_t n, xd_sasl_result_t *r)
{
    const char *nul = memchr(m, '\0', n);
    if (nul == NULL || nul == m || (size_t)(m + n - nul - 1) != sizeof s->ht_proof)
        return sasl_fail(s, r, XD_SASL_COND_MALFORMED_REQUEST,
                         "HT needs authcid, NUL and a 32-byte hashed token");
    if (!sasl_utf8_ok(m, (size_t)(nul - m)))
        return sasl_fail(s, r, XD_SASL_COND_MALFORMED_REQUEST, "HT authcid is not UTF-8");
    if (xd_jid_prep_local((xd_str_t){ m, (size_t)(nul - m) }, &s->user) != 0)
        return sasl_fail(s, r, XD_SASL_COND_NOT_AUTHORIZED, NULL);
    memcpy(s->ht_proof, nul + 1, sizeof s->ht_proof);
    s->state = SASL_WAIT_TOKEN;
    r->kind = XD_SASL_NEED_TOKEN;
    r->user = s->user;
    return 0;
}

int
xd_sasl_provide_token(xd_sasl_t *s, int status, const xd_sasl_token_t *toks, size_t n,
                      xd_sasl_result_t *r)
{
    if (s->state != SASL_WAIT_TOKEN) {
        sasl_result_init(s, r);
        return XD_EINVAL;
    }
    sasl_result_clear(s);
    sasl_result_init(s, r);
    if (status != 0 && status != XD_ENOTFOUND)
        return sasl_fail(s, r, XD_SASL_COND_TEMPORARY_AUTH_FAILURE, NULL);
    uint8_t cbd[XD_SASL_CB_DATA_MAX];
    size_t cbl = 0;
    int cb = ht_cb_type(s, s->mech);
    if (cb >= 0) {
        s->cb_input_len = 0;
        if (!sc_cb_data(s, (xd_sasl_cb)cb))
            return sasl_fail(s, r, XD_SASL_COND_TEMPORARY_AUTH_FAILURE,
                             "channel binding data unavailable");
        cbl = s->cb_input_len;
        memcpy(cbd, s->cb_input, cbl);
    }
    int match = -1;
    for (size_t i = 0; status == 0 && i < n; i++) {
        uint8_t want[32];
        xd_sasl_ht_hmac(toks[i].key, true, cbd, cbl, want);
        /* every token is computed and compared: the time does not tell which */
        bool eq = xd_scram_ct_eq(want, s->ht_proof, sizeof want);
        if (eq && toks[i].mech == s->mech && match < 0)
            match = (int)i;
        OPENSSL_cleanse(want, sizeof want);
    }
    if (match < 0) {
        OPENSSL_cleanse(cbd, sizeof cbd);
        return sasl_fail(s, r, XD_SASL_COND_NOT_AUTHORIZED, NULL);
    }
    uint8_t *out = xd_malloc(32);
    xd_sasl_ht_hmac(toks[match].key, false, cbd, cbl, out);
    OPENSSL_cleanse(cbd, sizeof cbd);
    s->cb = cb;
    int rc = sasl_authorize(s, r, out, 32);
    if (r->kind == XD_SASL_SUCCESS)
        r->token = match;
    return rc;
}

/* ---- driving --------------------------------------------------------------------------------- */

/* The first client message of the exchange in s->mech. */
static int
sasl_first(xd_sasl_t *s, const char *m, size_t n, xd_sasl_result_t *r)
{
    if (sasl_mech_is_scram(s->mech))
        return sc_client_first(s, m, n, r);
    if (xd_sasl_mech_is_ht(s->mech))
        return sasl_ht_first(s, m, n, r);
    switch (s->mech) {
    case XD_SASL_PLAIN:
        return sasl_plain(s, m, n, r);
    case XD_SASL_ANONYMOUS:
        return sasl_anonymous(s, m, n, r);
    case XD_SASL_EXTERNAL:
        return sasl_external(s, m, n, r);
    default:
        XD_ASSERT(!"unreachable mechanism");
        return 0;
    }
}

int
xd_sasl_start(xd_sasl_t *s, xd_str_t mech, const void *data, size_t len, xd_sasl_result_t *r)
{
    return xd_sasl_start_ex(s, mech, data, len, 0, r);
}

int
xd_sasl_start_ex(xd_sasl_t *s, xd_str_t mech, const void *data, size_t len, unsigned flags,
                 xd_sasl_result_t *r)
{
    sasl_result_clear(s);
    sasl_result_init(s, r);
    if (s->state == SASL_SUCCEEDED) {
        r->kind = XD_SASL_FAILURE; /* the success stands; the c2s should not get here */
        r->cond = XD_SASL_COND_MALFORMED_REQUEST;
        r->text = "already authenticated";
        return 0;
    }
    if (s->state != SASL_IDLE)
        return sasl_fail(s, r, XD_SASL_COND_MALFORMED_REQUEST, "an exchange is in progress");
    sasl_reset(s);
    int m = xd_sasl_mech_parse(mech);
    if (m >= 0 && xd_sasl_mech_is_ht((xd_sasl_mech)m) && !(flags & XD_SASL_START_FAST))
        m = -1; /* XEP-0484: tokens only through SASL2 with <fast/> */
    if (m < 0 || !(s->mechs & XD_SASL_BIT(m))) {
        /* RFC6120 6.4.5: encryption-required for a mechanism that TLS would allow. */
        if (m >= 0 && (s->need_tls & XD_SASL_BIT(m)))
            return sasl_fail(s, r, XD_SASL_COND_ENCRYPTION_REQUIRED, NULL);
        return sasl_fail(s, r, XD_SASL_COND_INVALID_MECHANISM, NULL);
    }
    s->mech = (xd_sasl_mech)m;
    s->flags = flags;
    r->mech = s->mech;
    if (data == NULL && xd_sasl_mech_is_ht(s->mech))
        return sasl_fail(s, r, XD_SASL_COND_MALFORMED_REQUEST, "HT needs an initial response");
    if (data == NULL) /* RFC4422 3.3: no initial response: an empty challenge */
        return sasl_challenge(s, r, NULL, 0, SASL_WANT_FIRST);
    if (len > XD_SASL_MSG_MAX)
        return sasl_fail(s, r, XD_SASL_COND_MALFORMED_REQUEST, "message too long");
    return sasl_first(s, data, len, r);
}

int
xd_sasl_step(xd_sasl_t *s, const void *data, size_t len, xd_sasl_result_t *r)
{
    sasl_result_clear(s);
    sasl_result_init(s, r);
    if (data == NULL)
        len = 0, data = "";
    switch (s->state) {
    case SASL_SUCCEEDED:
        r->kind = XD_SASL_FAILURE;
        r->cond = XD_SASL_COND_MALFORMED_REQUEST;
        r->text = "already authenticated";
        return 0;
    case SASL_WANT_FIRST:
    case SASL_WAIT_FINAL:
        break;
    default:
        return sasl_fail(s, r, XD_SASL_COND_MALFORMED_REQUEST, "unexpected response");
    }
    if (len > XD_SASL_MSG_MAX)
        return sasl_fail(s, r, XD_SASL_COND_MALFORMED_REQUEST, "message too long");
    if (s->state == SASL_WANT_FIRST)
        return sasl_first(s, data, len, r);
    return sc_client_final(s, data, len, r);
}

void
xd_sasl_abort(xd_sasl_t *s, xd_sasl_result_t *r)
{
    xd_sasl_result_t dummy;
    if (r == NULL)
        r = &dummy;
    sasl_result_clear(s);
    sasl_result_init(s, r);
    if (s->state == SASL_SUCCEEDED) {
        r->kind = XD_SASL_FAILURE;
        r->cond = XD_SASL_COND_MALFORMED_REQUEST;
        r->text = "already authenticated";
        return;
    }
    sasl_fail(s, r, XD_SASL_COND_ABORTED, NULL); /* RFC6120 6.4.5 */
}

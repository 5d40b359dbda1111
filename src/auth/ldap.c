/*
 * ldap.c — the ldap auth backend (auth_int.h): passwords are checked by
 * binding to an LDAP directory as the user's entry, found by a search with
 * the service bind (libldap, OpenLDAP's client library).
 *
 *   CHECK   an empty password is "no" at once (a simple bind with a DN and
 *           no password is an unauthenticated bind that servers accept,
 *           RFC 4513 5.1.2); else search ldap_base for
 *           (&(|(uid1=V1)(uid2=V2)…)ldap_filter) with the service bind
 *           (ldap_rootdn / ldap_password, or anonymous), where Vi is the
 *           ldap_uids format with %u = the user name, escaped as an RFC 4515
 *           filter value (so "*", "(", ")" and "\" in a name match
 *           themselves and cannot widen the filter); exactly one entry must
 *           match (several: "no", and a warning); then a simple bind as that
 *           entry's DN with the password: success is "yes",
 *           invalidCredentials "no", anything else an error.  DNs are only
 *           ever taken from the search result, never built from the name.
 *   EXISTS  the same search: one entry or more is "yes".
 *   others  XD_ENOTSUP: the directory is not written.
 *
 * Connections.  ldap_servers becomes one URI list ("ldap://a:389
 * ldap://b:389"), which libldap tries in order when it connects, so a server
 * that is down is skipped (failover).  Up to ldap_pool_size connections
 * per host are kept open; a request takes an idle one or opens one, and
 * waits up to ldap_timeout for one when all are busy (then XD_ETIMEDOUT).
 * A connection remembers whether it is bound as the service; after a user
 * bind it is bound again before its next search.  A connection that fails
 * (the server went away) is closed, and a request that failed on a reused
 * connection is tried once more on a new one, so a restarted server costs no
 * failed login.  ldap_timeout bounds connecting (LDAP_OPT_NETWORK_TIMEOUT)
 * and each operation (LDAP_OPT_TIMEOUT and the search time limit).
 *
 * TLS: ldap_encrypt tls uses ldaps:// URIs, starttls the StartTLS extended
 * operation after connecting (refused = error); ldap_tls_verify demands a
 * valid certificate for the server's name (else none is checked), and
 * ldap_tls_cacertfile names the CA bundle.  Options are set per connection
 * with a new TLS context (LDAP_OPT_X_TLS_NEWCTX).
 *
 * Errors: cannot connect, StartTLS refused, the service bind refused, a
 * server error → XD_EINTERNAL; a timeout → XD_ETIMEDOUT; both are answered
 * as temporary-auth-failure by the c2s.  Logs name host= and the LDAP
 * error, never a password.
 *
 * Threads: everything here blocks and runs on the blocking pool or a sync
 * caller's thread; the pool of connections is guarded by mu; a connection
 * is used by one thread at a time.
 */
#include <ldap.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth_int.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"
#include "xmppd/log.h"

typedef struct ld_conn {
    LDAP *ld;     /* the connection */
    bool service; /* bound as the service (else as a user, or not yet) */
} ld_conn_t;

struct auth_ldap {
    _Atomic unsigned refs;
    char *host;            /* served host, for logs */
    char *uri;             /* space-separated URI list */
    int encrypt;           /* xd_ldap_encrypt */
    bool verify;           /* ldap_tls_verify */
    char *cacert;          /* ldap_tls_cacertfile or NULL */
    char *rootdn;          /* "" = anonymous service bind */
    char *password;        /* of rootdn */
    char *base;            /* search base */
    char **attrs;          /* ldap_uids attributes */
    char **formats;        /* ldap_uids formats (one %u each) */
    size_t nuids;          /* number of uids */
    char *filter;          /* extra filter with parentheses, or "" */
    int deref;             /* LDAP_DEREF_* */
    uint64_t timeout_ms;   /* connect and per operation; 0 = none */
    unsigned pool_size;    /* connections at most */
    uv_mutex_t mu;         /* guards idle, nidle, nopen */
    uv_cond_t cv;          /* a connection was released */
    ld_conn_t *idle;       /* pool_size slots; nidle idle connections */
    unsigned nidle;        /* idle connections */
    unsigned nopen;        /* open connections, idle or in use */
};

/* ---- lifecycle ------------------------------------------------------------------------------- */

int
auth_ldap_new(const xd_host_conf_t *hc, auth_ldap_t **out, char **err)
{
    if (hc->ldap_servers.count == 0 || hc->ldap_uids.count == 0 || !hc->ldap_base ||
        !*hc->ldap_base) {
        if (err)
            *err = xd_asprintf("host %s: auth_method ldap needs ldap_servers, ldap_uids and "
                               "ldap_base", hc->host);
        return XD_EINVAL;
    }
    auth_ldap_t *l = xd_new(auth_ldap_t);
    atomic_init(&l->refs, 1);
    l->host = xd_strdup(hc->host);
    int port = hc->ldap_port ? hc->ldap_port
                             : hc->ldap_encrypt == XD_LDAP_ENCRYPT_TLS ? 636 : 389;
    const char *scheme = hc->ldap_encrypt == XD_LDAP_ENCRYPT_TLS ? "ldaps" : "ldap";
    size_t cap = 1;
    for (size_t i = 0; i < hc->ldap_servers.count; i++)
        cap += strlen(hc->ldap_servers.items[i]) + 32;
    l->uri = xd_malloc(cap);
    size_t off = 0;
    l->uri[0] = '\0';
    for (size_t i = 0; i < hc->ldap_servers.count; i++) {
        const char *sv = hc->ldap_servers.items[i];
        bool v6 = strchr(sv, ':') != NULL; /* an IPv6 address goes in brackets */
        char *one = xd_asprintf("%s://%s%s%s:%d", scheme, v6 ? "[" : "", sv, v6 ? "]" : "", port);
        LDAPURLDesc *lud = NULL;
        bool ok = !strpbrk(sv, " /?#") && ldap_url_parse(one, &lud) == LDAP_SUCCESS;
        if (lud)
            ldap_free_urldesc(lud);
        if (!ok) {
            if (err)
                *err = xd_asprintf("host %s: ldap_servers: \"%s\" does not make an LDAP URI",
                                   hc->host, sv);
            xd_free(one);
            xd_free(l->uri);
            xd_free(l->host);
            xd_free(l);
            return XD_EINVAL;
        }
        off += (size_t)snprintf(l->uri + off, cap - off, "%s%s", i ? " " : "", one);
        xd_free(one);
    }
    l->encrypt = hc->ldap_encrypt;
    l->verify = hc->ldap_tls_verify;
    l->cacert = hc->ldap_tls_cacertfile ? xd_strdup(hc->ldap_tls_cacertfile) : NULL;
    l->rootdn = xd_strdup(hc->ldap_rootdn ? hc->ldap_rootdn : "");
    l->password = xd_strdup(hc->ldap_password ? hc->ldap_password : "");
    l->base = xd_strdup(hc->ldap_base);
    l->nuids = hc->ldap_uids.count;
    l->attrs = xd_calloc(l->nuids, sizeof *l->attrs);
    l->formats = xd_calloc(l->nuids, sizeof *l->formats);
    for (size_t i = 0; i < l->nuids; i++) {
        l->attrs[i] = xd_strdup(hc->ldap_uids.attrs[i]);
        l->formats[i] = xd_strdup(hc->ldap_uids.formats[i]);
    }
    const char *f = hc->ldap_filter ? hc->ldap_filter : "";
    l->filter = !*f || *f == '(' ? xd_strdup(f) : xd_asprintf("(%s)", f);
    l->deref = hc->ldap_deref_aliases;
    l->timeout_ms = hc->ldap_timeout_ms;
    l->pool_size = hc->ldap_pool_size > 0 ? (unsigned)hc->ldap_pool_size : 1;
    l->idle = xd_calloc(l->pool_size, sizeof *l->idle);
    XD_ASSERT(uv_mutex_init(&l->mu) == 0);
    XD_ASSERT(uv_cond_init(&l->cv) == 0);
    *out = l;
    return 0;
}

auth_ldap_t *
auth_ldap_ref(auth_ldap_t *l)
{
    atomic_fetch_add(&l->refs, 1);
    return l;
}

void
auth_ldap_unref(auth_ldap_t *l)
{
    if (l == NULL || atomic_fetch_sub(&l->refs, 1) != 1)
        return;
    XD_ASSERT(l->nopen == l->nidle); /* no request runs: it would hold a reference */
    for (unsigned i = 0; i < l->nidle; i++)
        ldap_unbind_ext_s(l->idle[i].ld, NULL, NULL);
    uv_cond_destroy(&l->cv);
    uv_mutex_destroy(&l->mu);
    for (size_t i = 0; i < l->nuids; i++) {
        xd_free(l->attrs[i]);
        xd_free(l->formats[i]);
    }
    xd_free(l->attrs);
    xd_free(l->formats);
    if (*l->password)
        memset(l->password, 0, strlen(l->password));
    xd_free(l->password);
    xd_free(l->rootdn);
    xd_free(l->base);
    xd_free(l->filter);
    xd_free(l->cacert);
    xd_free(l->uri);
    xd_free(l->host);
    xd_free(l->idle);
    xd_free(l);
}

/* ---- connections ----------------------------------------------------------------------------- */

static int
ld_status(int lrc)
{
    return lrc == LDAP_TIMEOUT ? XD_ETIMEDOUT : XD_EINTERNAL;
}

/* Whether lrc means the connection is gone (the server went away). */
static bool
ld_conn_lost(int lrc)
{
    return lrc == LDAP_SERVER_DOWN || lrc == LDAP_CONNECT_ERROR || lrc == LDAP_TIMEOUT ||
           lrc == LDAP_UNAVAILABLE || lrc == LDAP_BUSY;
}

static void
ld_timeval(uint64_t ms, struct timeval *tv)
{
    tv->tv_sec = (time_t)(ms / 1000);
    tv->tv_usec = (suseconds_t)(ms % 1000) * 1000;
}

/* Binds c as the service. */
static int
ld_bind_service(auth_ldap_t *l, ld_conn_t *c)
{
    struct berval cred = { strlen(l->password), l->password };
    int lrc = ldap_sasl_bind_s(c->ld, *l->rootdn ? l->rootdn : NULL, LDAP_SASL_SIMPLE, &cred,
                               NULL, NULL, NULL);
    c->service = lrc == LDAP_SUCCESS;
    return lrc;
}

/* Opens a new connection, with TLS as configured, bound as the service.
 * LDAP_SUCCESS or the libldap error (c is then empty). */
static int
ld_connect(auth_ldap_t *l, ld_conn_t *c)
{
    LDAP *ld = NULL;
    int lrc = ldap_initialize(&ld, l->uri);
    if (lrc != LDAP_SUCCESS)
        return lrc;
    int v3 = LDAP_VERSION3;
    ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &v3);
    ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
    ldap_set_option(ld, LDAP_OPT_DEREF, &l->deref);
    if (l->timeout_ms) {
        struct timeval tv;
        ld_timeval(l->timeout_ms, &tv);
        ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
        ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv);
    }
    if (l->encrypt != XD_LDAP_ENCRYPT_NONE) {
        int req = l->verify ? LDAP_OPT_X_TLS_HARD : LDAP_OPT_X_TLS_NEVER;
        ldap_set_option(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &req);
        if (l->cacert)
            ldap_set_option(ld, LDAP_OPT_X_TLS_CACERTFILE, l->cacert);
        int zero = 0;
        ldap_set_option(ld, LDAP_OPT_X_TLS_NEWCTX, &zero);
    }
    if (l->encrypt == XD_LDAP_ENCRYPT_STARTTLS)
        lrc = ldap_start_tls_s(ld, NULL, NULL);
    c->ld = ld;
    c->service = false;
    if (lrc == LDAP_SUCCESS)
        lrc = ld_bind_service(l, c);
    if (lrc != LDAP_SUCCESS) {
        XD_LOG(NULL, XD_WARN, "ldap connect failed", "host=%s uri=\"%s\" err=\"%s\"", l->host,
               l->uri, ldap_err2string(lrc));
        ldap_unbind_ext_s(ld, NULL, NULL);
        c->ld = NULL;
    }
    return lrc;
}

/* Takes an idle connection (*reused = true) or opens one.  0, XD_ETIMEDOUT
 * (all busy for ldap_timeout) or the status of a failed connect. */
static int
ld_acquire(auth_ldap_t *l, ld_conn_t *c, bool *reused, int *lrc_out)
{
    uint64_t deadline = l->timeout_ms ? uv_hrtime() + l->timeout_ms * 1000000u : 0;
    uv_mutex_lock(&l->mu);
    while (l->nidle == 0 && l->nopen >= l->pool_size) {
        if (deadline == 0) {
            uv_cond_wait(&l->cv, &l->mu);
            continue;
        }
        uint64_t now = uv_hrtime();
        if (now >= deadline || uv_cond_timedwait(&l->cv, &l->mu, deadline - now) != 0) {
            if (l->nidle == 0 && l->nopen >= l->pool_size) {
                uv_mutex_unlock(&l->mu);
                XD_LOG(NULL, XD_WARN, "ldap pool busy", "host=%s connections=%u", l->host,
                       l->pool_size);
                *lrc_out = LDAP_TIMEOUT;
                return XD_ETIMEDOUT;
            }
        }
    }
    if (l->nidle > 0) {
        *c = l->idle[--l->nidle];
        uv_mutex_unlock(&l->mu);
        *reused = true;
        return 0;
    }
    l->nopen++;
    uv_mutex_unlock(&l->mu);
    *reused = false;
    int lrc = ld_connect(l, c);
    if (lrc != LDAP_SUCCESS) {
        uv_mutex_lock(&l->mu);
        l->nopen--;
        uv_cond_signal(&l->cv);
        uv_mutex_unlock(&l->mu);
        *lrc_out = lrc;
        return ld_status(lrc);
    }
    return 0;
}

/* Gives c back; a broken one (keep == false) is closed. */
static void
ld_release(auth_ldap_t *l, ld_conn_t *c, bool keep)
{
    if (!keep) {
        ldap_unbind_ext_s(c->ld, NULL, NULL);
        c->ld = NULL;
    }
    uv_mutex_lock(&l->mu);
    if (keep)
        l->idle[l->nidle++] = *c;
    else
        l->nopen--;
    uv_cond_signal(&l->cv);
    uv_mutex_unlock(&l->mu);
}

/* ---- the search ------------------------------------------------------------------------------ */

/* The filter for user: (&(|(a1=v1)…)filter) with every value escaped
 * (RFC 4515 3).  NULL when libldap cannot escape it. */
static char *
ld_user_filter(const auth_ldap_t *l, const char *user)
{
    size_t cap = 64 + strlen(l->filter), off = 0;
    char **vals = xd_calloc(l->nuids, sizeof *vals);
    char *out = NULL;
    for (size_t i = 0; i < l->nuids; i++) {
        const char *fmt = l->formats[i];
        const char *pct = strstr(fmt, "%u");
        char *raw = xd_asprintf("%.*s%s%s", (int)(pct - fmt), fmt, user, pct + 2);
        struct berval in = { strlen(raw), raw }, esc = { 0, NULL };
        int lrc = ldap_bv2escaped_filter_value(&in, &esc);
        xd_free(raw);
        if (lrc != 0)
            goto done;
        vals[i] = xd_strdup(esc.bv_val);
        ber_memfree(esc.bv_val);
        cap += strlen(l->attrs[i]) + strlen(vals[i]) + 4;
    }
    out = xd_malloc(cap);
    off += (size_t)snprintf(out + off, cap - off, "%s%s", *l->filter ? "(&" : "",
                            l->nuids > 1 ? "(|" : "");
    for (size_t i = 0; i < l->nuids; i++)
        off += (size_t)snprintf(out + off, cap - off, "(%s=%s)", l->attrs[i], vals[i]);
    snprintf(out + off, cap - off, "%s%s%s", l->nuids > 1 ? ")" : "", l->filter,
             *l->filter ? ")" : "");
done:
    for (size_t i = 0; i < l->nuids; i++)
        xd_free(vals[i]);
    xd_free(vals);
    return out;
}

/* Searches user's entries on c (bound as the service first if needed).
 * *n = how many (0, 1 or 2 for "more"), *dn = the first's DN (xd_free) when
 * dn != NULL.  LDAP_SUCCESS or the libldap error. */
static int
ld_search(auth_ldap_t *l, ld_conn_t *c, const char *filter, unsigned *n, char **dn)
{
    int lrc = LDAP_SUCCESS;
    *n = 0;
    if (!c->service && (lrc = ld_bind_service(l, c)) != LDAP_SUCCESS)
        return lrc;
    char *attrs[] = { LDAP_NO_ATTRS, NULL };
    struct timeval tv, *tvp = NULL;
    if (l->timeout_ms) {
        ld_timeval(l->timeout_ms, &tv);
        tvp = &tv;
    }
    LDAPMessage *res = NULL;
    lrc = ldap_search_ext_s(c->ld, l->base, LDAP_SCOPE_SUBTREE, filter, attrs, 1, NULL, NULL,
                            tvp, 2, &res);
    if (lrc == LDAP_SIZELIMIT_EXCEEDED)
        lrc = LDAP_SUCCESS; /* more than one: what came is enough */
    if (lrc == LDAP_SUCCESS || lrc == LDAP_NO_SUCH_OBJECT) {
        int k = res ? ldap_count_entries(c->ld, res) : 0;
        *n = k < 0 ? 0 : k > 2 ? 2 : (unsigned)k;
        if (lrc == LDAP_NO_SUCH_OBJECT)
            *n = 0, lrc = LDAP_SUCCESS; /* the base does not exist: nobody */
        if (*n > 0 && dn != NULL) {
            char *d = ldap_get_dn(c->ld, ldap_first_entry(c->ld, res));
            *dn = d ? xd_strdup(d) : NULL;
            if (d)
                ldap_memfree(d);
            else
                *n = 0;
        }
    }
    if (res)
        ldap_msgfree(res);
    return lrc;
}

/* One attempt of req on c.  LDAP_SUCCESS with req->flag set, or the error
 * of the operation that failed. */
static int
ld_attempt(auth_ldap_t *l, ld_conn_t *c, auth_req_t *req, const char *filter)
{
    unsigned n = 0;
    char *dn = NULL;
    int lrc = ld_search(l, c, filter, &n, req->op == AUTH_OP_CHECK ? &dn : NULL);
    if (lrc != LDAP_SUCCESS || req->op == AUTH_OP_EXISTS) {
        req->flag = lrc == LDAP_SUCCESS && n > 0;
        return lrc;
    }
    if (n != 1) {
        if (n > 1)
            XD_LOG(NULL, XD_WARN, "ldap user is ambiguous", "host=%s user=%s entries=2+",
                   l->host, req->user);
        xd_free(dn);
        return LDAP_SUCCESS; /* flag false */
    }
    struct berval cred = { strlen(req->password), req->password };
    c->service = false; /* whatever the outcome, the connection is no longer the service's */
    lrc = ldap_sasl_bind_s(c->ld, dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
    xd_free(dn);
    if (lrc == LDAP_SUCCESS) {
        req->flag = true;
    } else if (lrc == LDAP_INVALID_CREDENTIALS || lrc == LDAP_INAPPROPRIATE_AUTH ||
               lrc == LDAP_UNWILLING_TO_PERFORM || lrc == LDAP_INVALID_DN_SYNTAX) {
        lrc = LDAP_SUCCESS; /* a wrong password (or an entry that cannot log in): no */
    }
    return lrc;
}

void
auth_ldap_run(auth_ldap_t *l, auth_req_t *req)
{
    xd_assert_off_loop();
    req->flag = false;
    req->status = 0;
    if (req->op != AUTH_OP_CHECK && req->op != AUTH_OP_EXISTS) {
        req->status = XD_ENOTSUP;
        return;
    }
    if (req->op == AUTH_OP_CHECK && (!req->password || !*req->password))
        return; /* never an unauthenticated bind */
    char *filter = ld_user_filter(l, req->user);
    if (filter == NULL) {
        req->status = XD_EINTERNAL;
        return;
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        ld_conn_t c = { 0 };
        bool reused = false;
        int lrc = LDAP_SUCCESS;
        int rc = ld_acquire(l, &c, &reused, &lrc);
        if (rc != 0) {
            req->status = rc;
            break;
        }
        lrc = ld_attempt(l, &c, req, filter);
        bool lost = lrc != LDAP_SUCCESS && ld_conn_lost(lrc);
        ld_release(l, &c, lrc == LDAP_SUCCESS || !lost);
        if (lrc == LDAP_SUCCESS) {
            req->status = 0;
            break;
        }
        req->flag = false;
        req->status = ld_status(lrc);
        if (lost && reused)
            continue; /* an idle connection the server dropped: once more on a new one */
        XD_LOG(NULL, XD_WARN, "ldap request failed", "host=%s op=%s user=%s err=\"%s\"",
               l->host, auth_op_name(req->op), req->user, ldap_err2string(lrc));
        break;
    }
    xd_free(filter);
}

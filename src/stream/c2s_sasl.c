/*
 * c2s_sasl.c — SASL on client streams (RFC 6120 6): which mechanisms a
 * stream offers, the exchange with the SASL engine (stream/sasl.h), the
 * auth backend's asynchronous answers, failure delays and limits, and
 * SASL EXTERNAL with client certificates (XEP-0178).
 *
 * While the backend is asked (SCRAM credentials, a password check, whether
 * a certificate's account exists) or a failure is being delayed, the stream
 * is blocked (conn.h): later input waits.  Only attempts that tested
 * credentials count against max_auth_failures and are delayed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "stream/c2s_int.h"

#include "auth/authlimit.h"
#include "stream/sasl.h"
#include "stream/tls.h"
#include "xmppd/acl.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/auth.h"
#include "xmppd/base64.h"
#include "xmppd/config.h"
#include "xmppd/err.h"
#include "xmppd/jid.h"
#include "xmppd/log.h"
#include "xmppd/ns.h"

#define C2S_MAX_PROTO_FAILURES 10 /* SASL failures without a credential check per stream */

/* ---- mechanisms ------------------------------------------------------------------------------ */

static bool
c2s_mech_disabled(const xd_host_conf_t *hc, const char *name)
{
    for (size_t i = 0; i < hc->disable_sasl_mechanisms.count; i++)
        if (strcasecmp(hc->disable_sasl_mechanisms.items[i], name) == 0)
            return true;
    return false;
}

static bool
c2s_authz(void *arg, const xd_jid_t *user, const xd_jid_t *authzid)
{
    xd_conn_t *c = arg;
    (void)authzid;
    xd_config_t *cfg = xd_config_get();
    const xd_host_conf_t *hc = xd_config_host(cfg, c->host);
    bool ok = hc && xd_access_match(cfg, c->host, hc->sasl_authzid_access, user,
                                    (const struct sockaddr *)&c->peer) == XD_ACCESS_ALLOW;
    xd_config_unref(cfg);
    return ok;
}

static int
c2s_cb_data(void *arg, xd_sasl_cb type, uint8_t *out, size_t cap, size_t *out_len)
{
    xd_conn_t *c = arg;
    if (!c2s_secure(c) || !c->tls)
        return XD_ENOTSUP; /* a secure carrier (BOSH over HTTPS) has no binding to give */
    xd_tls_cb_type t = type == XD_SASL_CB_TLS_EXPORTER   ? XD_TLS_CB_EXPORTER
                       : type == XD_SASL_CB_TLS_UNIQUE ? XD_TLS_CB_UNIQUE
                                                       : XD_TLS_CB_SERVER_END_POINT;
    if (t == XD_TLS_CB_UNIQUE && !xd_tls_cb_available(c->tls, t))
        return xd_tls_unique_tls13(c->tls, out, cap, out_len); /* cb_quiet, see setup */
    return xd_tls_channel_binding(c->tls, t, out, cap, out_len);
}

/* The client's certificate chain verifies against the trust store (the
 * identities are matched when the client authenticates). */
static bool
c2s_client_cert_ok(xd_conn_t *c)
{
    xd_tls_peer_result_t r;
    return c->tls && xd_tls_peer_verify(c->tls, NULL, &r) == 0 && r.status == XD_TLS_PEER_OK;
}

/* A fresh SASL engine for this stage, with the mechanisms the host, the
 * auth backend and the TLS state allow. */
void
c2s_sasl_setup(xd_conn_t *c)
{
    xd_config_t *cfg = xd_config_get();
    const xd_host_conf_t *hc = xd_config_host(cfg, c->host);
    unsigned mechs = 0, need_tls = 0;
    bool secure = c2s_secure(c);
    if (hc) {
        /* Exactly what the host's methods can verify: ANONYMOUS when they
         * include anonymous; PLAIN when one checks passwords; SCRAM (and
         * FAST, whose tokens internal auth keeps) only for `internal`
         * alone, the one method with SCRAM credentials. */
        if (xd_auth_anonymous_allowed(c->host))
            mechs |= XD_SASL_BIT(XD_SASL_ANONYMOUS);
        if (xd_auth_supports_plain(c->host)) {
            if (xd_auth_supports_scram(c->host))
                mechs |= XD_SASL_MECHS_SCRAM | (secure ? XD_SASL_MECHS_SCRAM_PLUS : 0);
            if (secure || hc->allow_unencrypted_plain_auth)
                mechs |= XD_SASL_BIT(XD_SASL_PLAIN);
            else
                need_tls |= XD_SASL_BIT(XD_SASL_PLAIN);
            if (secure && c->listener->tls_verify && c2s_client_cert_ok(c))
                mechs |= XD_SASL_BIT(XD_SASL_EXTERNAL); /* XEP-0178 */
            if (secure && hc->fast && xd_auth_supports_scram(c->host))
                mechs |= XD_SASL_MECHS_HT; /* XEP-0484: tokens are kept by internal auth */
        }
        for (int m = 0; m < XD_SASL_MECH_COUNT; m++)
            if ((mechs & XD_SASL_BIT(m)) && c2s_mech_disabled(hc, xd_sasl_mech_name(m)))
                mechs &= ~XD_SASL_BIT(m);
    }
    unsigned cb = 0, quiet = 0;
    if (secure && c->tls) {
        if (xd_tls_cb_available(c->tls, XD_TLS_CB_EXPORTER))
            cb |= XD_SASL_CB_BIT(XD_SASL_CB_TLS_EXPORTER);
        if (xd_tls_cb_available(c->tls, XD_TLS_CB_SERVER_END_POINT))
            cb |= XD_SASL_CB_BIT(XD_SASL_CB_TLS_SERVER_END_POINT);
        if (xd_tls_cb_available(c->tls, XD_TLS_CB_UNIQUE))
            cb |= XD_SASL_CB_BIT(XD_SASL_CB_TLS_UNIQUE);
        else if (hc && hc->sasl_tls13_tls_unique)
            /* TLS 1.3: clients that know only tls-unique (slixmpp < 1.8.5)
             * bind with it as OpenSSL computes it; never advertised. */
            quiet |= XD_SASL_CB_BIT(XD_SASL_CB_TLS_UNIQUE);
    }
    xd_sasl_opts_t o = {
        .host = c->host,
        .mechs = mechs,
        .mechs_need_tls = need_tls,
        .cb_types = cb,
        .cb_quiet = quiet,
        .cb_data = c2s_cb_data,
        .authz = c2s_authz,
        .arg = c,
        .fake_iterations = hc ? (unsigned)hc->scram_iterations : 0,
        /* .secret empty: fake salts from the node secret (stable across restarts) */
    };
    xd_sasl_free(c2s_of(c)->sasl);
    c2s_of(c)->sasl = xd_sasl_new(&o);
    xd_config_unref(cfg);
}


/* ---- the exchange --------------------------------------------------------------------------- */

static void c2s_external(xd_conn_t *c, const xd_jid_t *authzid);

static void
c2s_on_scram(void *arg, int status, const xd_scram_cred_t *cred)
{
    xd_conn_t *c = c2s_op_done(arg);
    if (!c || c->state == C2S_CLOSING)
        return;
    xd_sasl_result_t r;
    xd_sasl_provide_scram(c2s_of(c)->sasl, status, cred, &r);
    c2s_sasl_result(c, &r);
}

static void
c2s_on_check(void *arg, int status, bool ok)
{
    xd_conn_t *c = c2s_op_done(arg);
    if (!c || c->state == C2S_CLOSING)
        return;
    xd_sasl_result_t r;
    xd_sasl_provide_check(c2s_of(c)->sasl, status, ok, &r);
    c2s_sasl_result(c, &r);
}

static void
c2s_send_sasl(xd_conn_t *c, const char *name, const uint8_t *data, size_t len, bool has_data)
{
    size_t b64len = has_data ? xd_base64_encoded_len(len, 0) : 0;
    char *buf = xd_malloc(b64len + 128);
    int n = snprintf(buf, 128, "<%s xmlns='%s'>", name,
                     c2s_of(c)->s2 ? XD_NS_SASL2 : XD_NS_SASL);
    size_t off = (size_t)n;
    if (has_data && len == 0 && !c2s_of(c)->s2) {
        buf[off++] = '='; /* RFC 6120 6.4.2: empty data is "=" (not in SASL2) */
    } else if (has_data) {
        off += xd_base64_encode(data, len, buf + off, 0);
    }
    off += (size_t)snprintf(buf + off, 64, "</%s>", name);
    c2s_write(c, buf, off);
    OPENSSL_cleanse(buf, off);
    xd_free(buf);
}

/* The stream ends after its last allowed failure: the stream's own
 * max_auth_failures, or a ban of its address (auth_limits). */
static void
c2s_sasl_close_limit(xd_conn_t *c)
{
    char why[XD_AUTHLIMIT_TEXT_MAX];
    if (!c2s_of(c)->banned ||
        !xd_authlimit_banned((const struct sockaddr *)&c->peer, why, sizeof why))
        snprintf(why, sizeof why, "too many authentication failures");
    c2s_close(c, XD_STREAM_POLICY_VIOLATION, why);
}

void
c2s_sasl_delay_done(xd_conn_t *c)
{
    if (c->state == C2S_CLOSING || !c2s_of(c)->pending_failure)
        return;
    c2s_write_str(c, c2s_of(c)->pending_failure);
    xd_free(c2s_of(c)->pending_failure);
    c2s_of(c)->pending_failure = NULL;
    if (c2s_of(c)->delayed_close) {
        /* RFC 6120 6.4.5: retries are limited; then the stream ends. */
        c2s_sasl_close_limit(c);
        return;
    }
    c2s_unblock(c);
}

void
c2s_sasl_failure(xd_conn_t *c, const xd_sasl_result_t *r)
{
    char buf[512];
    if (c2s_of(c)->s2) /* XEP-0388 2.6.2: the RFC 6120 condition inside */
        snprintf(buf, sizeof buf,
                 "<failure xmlns='" XD_NS_SASL2 "'><%s xmlns='" XD_NS_SASL "'/>%s%s%s</failure>",
                 xd_sasl_cond_name(r->cond), r->text ? "<text xml:lang='en'>" : "",
                 r->text ? r->text : "", r->text ? "</text>" : "");
    else if (r->text)
        snprintf(buf, sizeof buf,
                 "<failure xmlns='" XD_NS_SASL "'><%s/><text xml:lang='en'>%s</text></failure>",
                 xd_sasl_cond_name(r->cond), r->text);
    else
        snprintf(buf, sizeof buf, "<failure xmlns='" XD_NS_SASL "'><%s/></failure>",
                 xd_sasl_cond_name(r->cond));
    xd_config_t *cfg = xd_config_get();
    const xd_host_conf_t *hc = xd_config_host(cfg, c->host);
    uint64_t delay = hc ? hc->auth_failure_delay_ms : 0;
    unsigned max = hc ? (unsigned)hc->max_auth_failures : 3;
    xd_config_unref(cfg);
    /* Only attempts that tested credentials count against
     * max_auth_failures and are delayed: those are what password guessing
     * costs.  A client walking down the mechanism list (a channel-binding
     * type it cannot use, the 'y' flag, PLAIN as the last resort, as
     * slixmpp does) must not lose its connection on the way; such
     * failures have their own, looser cap. */
    c2s_t *s = c2s_of(c);
    bool counts = r->cond != XD_SASL_COND_ABORTED && s->sasl_checked;
    /* auth_limits: the failure also counts for the address and the
     * account across streams; past delay_after it is answered later. */
    xd_authlimit_result_t lim = { 0 };
    char account[XD_JID_MAX + 1] = "";
    if (counts) {
        s->auth_failures++;
        if (s->tried_user)
            snprintf(account, sizeof account, "%s@%s", s->tried_user, c->host);
        xd_authlimit_failed((const struct sockaddr *)&c->peer, account, &lim);
        if (lim.delay_ms > delay)
            delay = lim.delay_ms;
    } else if (r->cond != XD_SASL_COND_ABORTED) {
        s->proto_failures++;
    }
    s->sasl_checked = false;
    XD_LOG(&c->log, XD_NOTICE, "authentication failed",
           "mech=%s cond=%s user=%s failures=%u other_failures=%u addr_failures=%u "
           "account_failures=%u delay_ms=%llu%s",
           xd_sasl_mech_name(r->mech) ? xd_sasl_mech_name(r->mech) : "-",
           xd_sasl_cond_name(r->cond), s->tried_user ? s->tried_user : "-", s->auth_failures,
           s->proto_failures, lim.addr_failures, lim.account_failures,
           (unsigned long long)(counts ? delay : 0), lim.banned ? " banned=yes" : "");
    xd_free(s->tried_user);
    s->tried_user = NULL;
    s->banned = lim.banned;
    s->delayed_close = s->auth_failures >= max || s->proto_failures >= C2S_MAX_PROTO_FAILURES ||
                       lim.banned;
    if (!counts || delay == 0) {
        c2s_write_str(c, buf);
        if (s->delayed_close)
            c2s_sasl_close_limit(c);
        return;
    }
    /* Slow down guessing: answer after the delay, reading nothing meanwhile. */
    c2s_block(c);
    xd_free(c2s_of(c)->pending_failure);
    c2s_of(c)->pending_failure = xd_strdup(buf);
    xd_timer_start(c2s_of(c)->delay, delay, 0);
}

static void
c2s_sasl_success(xd_conn_t *c, const xd_sasl_result_t *r)
{
    xd_jid_t *jid = NULL;
    if (r->anonymous) {
        unsigned char rnd[12];
        char local[25];
        if (uv_random(NULL, NULL, rnd, sizeof rnd, 0, NULL) != 0)
            memset(rnd, 7, sizeof rnd);
        for (size_t i = 0; i < sizeof rnd; i++)
            snprintf(local + 2 * i, 3, "%02x", rnd[i]);
        xd_jid_make(xd_str_c(local), xd_str_c(c->host), xd_str_c(""), &jid);
    } else if (r->jid) {
        jid = xd_jid_ref((xd_jid_t *)r->jid);
    }
    if (!jid) {
        xd_sasl_result_t f = *r;
        f.kind = XD_SASL_FAILURE;
        f.cond = XD_SASL_COND_TEMPORARY_AUTH_FAILURE;
        f.text = NULL;
        c2s_sasl_failure(c, &f);
        return;
    }
    /* The listener's access rule: who may log in here at all. */
    xd_config_t *cfg = xd_config_get();
    xd_access_t acc = xd_access_match(cfg, c->host, c->listener->access, jid,
                                      (const struct sockaddr *)&c->peer);
    xd_config_unref(cfg);
    if (acc != XD_ACCESS_ALLOW) {
        xd_jid_unref(jid);
        xd_sasl_result_t f = *r;
        f.kind = XD_SASL_FAILURE;
        f.cond = XD_SASL_COND_NOT_AUTHORIZED;
        f.text = "access denied by service policy";
        c2s_sasl_failure(c, &f);
        return;
    }
    if (r->user) {
        char account[XD_JID_MAX + 1];
        snprintf(account, sizeof account, "%s@%s", r->user, c->host);
        xd_authlimit_succeeded(account); /* the account's failures; never the address's */
    }
    xd_free(c2s_of(c)->tried_user);
    c2s_of(c)->tried_user = NULL;
    c2s_of(c)->authenticated = true;
    c2s_of(c)->anonymous = r->anonymous;
    c2s_of(c)->jid = jid;
    xd_log_ctx(&c->log, NULL, "conn=%llu ip=%s jid=%s", (unsigned long long)c->id, c->ip,
               xd_jid_full_str(jid).p);
    /* Logged before the client can know: what it does next follows the line. */
    XD_LOG(&c->log, XD_NOTICE, "authenticated", "mech=%s cb=%s sasl=%d%s",
           xd_sasl_mech_name(r->mech),
           r->cb >= 0 ? xd_sasl_cb_name((xd_sasl_cb)r->cb) : "-", c2s_of(c)->s2 ? 2 : 1,
           xd_sasl_mech_is_ht(r->mech) ? " fast=yes" : "");
    if (c2s_of(c)->s2) {
        /* XEP-0388: no restart; inline features and <success/> follow. */
        c2s_sasl2_success(c, r);
        return;
    }
    c2s_send_sasl(c, "success", r->out, r->out_len, r->out != NULL);
    xd_sasl_free(c2s_of(c)->sasl);
    c2s_of(c)->sasl = NULL;
    /* RFC 6120 6.4.6: the client restarts the stream. */
    xd_xml_parser_reset(c->parser);
    c->restart = true;
    c->state = C2S_HEADER;
    c->header_sent = false;
}

void
c2s_sasl_result(xd_conn_t *c, const xd_sasl_result_t *r)
{
    bool was_blocked = c->blocked;
    switch (r->kind) {
    case XD_SASL_CHALLENGE:
        c2s_send_sasl(c, "challenge", r->out, r->out_len, true);
        break;
    case XD_SASL_SUCCESS:
        c2s_sasl_success(c, r);
        break;
    case XD_SASL_FAILURE:
        c2s_sasl_failure(c, r);
        break;
    case XD_SASL_NEED_SCRAM: {
        c2s_of(c)->sasl_checked = true;
        xd_free(c2s_of(c)->tried_user);
        c2s_of(c)->tried_user = r->user ? xd_strdup(r->user) : NULL;
        xd_conn_op_t *op = c2s_op_new(c, sizeof *op);
        int rc = xd_auth_get_scram(c->host, r->user, r->hash, c2s_on_scram, op);
        if (rc != 0) {
            c2s_op_done(op);
            xd_sasl_result_t nr;
            xd_sasl_provide_scram(c2s_of(c)->sasl, rc, NULL, &nr);
            c2s_sasl_result(c, &nr);
            return;
        }
        c2s_block(c);
        return;
    }
    case XD_SASL_NEED_CHECK: {
        c2s_of(c)->sasl_checked = true;
        xd_free(c2s_of(c)->tried_user);
        c2s_of(c)->tried_user = r->user ? xd_strdup(r->user) : NULL;
        xd_conn_op_t *op = c2s_op_new(c, sizeof *op);
        int rc = xd_auth_check_password(c->host, r->user, r->password, c2s_on_check, op);
        if (rc != 0) {
            c2s_op_done(op);
            xd_sasl_result_t nr;
            xd_sasl_provide_check(c2s_of(c)->sasl, rc, false, &nr);
            c2s_sasl_result(c, &nr);
            return;
        }
        c2s_block(c);
        return;
    }
    case XD_SASL_NEED_EXTERNAL:
        c2s_of(c)->sasl_checked = true;
        c2s_external(c, r->authzid); /* answers now, or blocks until the account check */
        return;
    case XD_SASL_NEED_TOKEN:
        c2s_of(c)->sasl_checked = true; /* a token is a credential: auth_limits count it */
        xd_free(c2s_of(c)->tried_user);
        c2s_of(c)->tried_user = r->user ? xd_strdup(r->user) : NULL;
        c2s_sasl2_need_token(c, r); /* answers now, or blocks until the tokens are read */
        return;
    case XD_SASL_NONE:
        break;
    }
    /* An answer from the backend ends the block it caused (unless a
     * failure delay or a close took over). */
    if (was_blocked && c->blocked && !c2s_of(c)->pending_failure && c->state != C2S_CLOSING &&
        !c->op) /* a SASL2 success may wait for its FAST tokens to be stored */
        c2s_unblock(c);
}

/* ---- SASL EXTERNAL with client certificates (XEP-0178) -------------------------------------- */

typedef struct c2s_ext_op {
    xd_conn_op_t op; /* first: the connection's token */
    char jid[XD_JID_MAX + 1]; /* the one candidate whose account is being looked up */
} c2s_ext_op_t;

static void
c2s_on_external_exists(void *arg, int status, bool exists)
{
    c2s_ext_op_t *eo = arg;
    char jid[sizeof eo->jid];
    memcpy(jid, eo->jid, sizeof jid);
    xd_conn_t *c = c2s_op_done(&eo->op); /* frees eo */
    if (!c || c->state == C2S_CLOSING)
        return;
    xd_str_t id = xd_str_c(jid);
    xd_sasl_result_t nr;
    if (status != 0)
        xd_sasl_provide_external(c2s_of(c)->sasl, status, NULL, 0, &nr);
    else if (!exists)
        xd_sasl_provide_external(c2s_of(c)->sasl, XD_ENOTFOUND, NULL, 0, &nr);
    else
        xd_sasl_provide_external(c2s_of(c)->sasl, 0, &id, 1, &nr);
    c2s_sasl_result(c, &nr);
}

/* NEED_EXTERNAL: the verified certificate's XmppAddr identities that are
 * accounts of this host (XEP-0178 3); with one candidate its account is
 * looked up (input is blocked meanwhile), several go to the engine as
 * they are (it asks for an authzid), none is not-authorized. */
static void
c2s_external(xd_conn_t *c, const xd_jid_t *authzid)
{
    xd_tls_id_t *ids = NULL;
    size_t n = 0;
    enum { MAXC = 8 };
    xd_str_t cand[MAXC];
    char store[MAXC][XD_JID_MAX + 1];
    size_t nc = 0;
    if (c2s_client_cert_ok(c) && xd_tls_peer_identities(c->tls, &ids, &n) == 0) {
        for (size_t i = 0; i < n && nc < MAXC; i++) {
            xd_jid_t *j = NULL;
            if (ids[i].type != XD_TLS_ID_XMPPADDR ||
                xd_jid_parse(xd_str_c(ids[i].value), &j) != 0)
                continue;
            bool ours = xd_jid_local(j).len && xd_jid_is_bare(j) &&
                        xd_str_eq_c(xd_jid_domain(j), c->host) &&
                        (!authzid || xd_jid_eq_bare(j, authzid));
            if (ours) {
                snprintf(store[nc], sizeof store[nc], "%s", xd_jid_bare_str(j).p);
                cand[nc] = xd_str_c(store[nc]);
                nc++;
            }
            xd_jid_unref(j);
        }
        xd_tls_ids_free(ids, n);
    }
    xd_sasl_result_t nr;
    if (nc != 1) {
        xd_sasl_provide_external(c2s_of(c)->sasl, nc ? 0 : XD_ENOTFOUND, nc ? cand : NULL, nc, &nr);
        c2s_sasl_result(c, &nr);
        return;
    }
    xd_jid_t *j = NULL;
    xd_jid_parse(cand[0], &j);
    xd_str_t l = xd_jid_local(j);
    char user[1100];
    snprintf(user, sizeof user, "%.*s", (int)l.len, l.p);
    xd_jid_unref(j);
    c2s_ext_op_t *eo = (c2s_ext_op_t *)c2s_op_new(c, sizeof *eo);
    snprintf(eo->jid, sizeof eo->jid, "%s", store[0]);
    if (xd_auth_user_exists(c->host, user, c2s_on_external_exists, eo) != 0) {
        c2s_op_done(&eo->op);
        xd_sasl_provide_external(c2s_of(c)->sasl, XD_EINTERNAL, NULL, 0, &nr);
        c2s_sasl_result(c, &nr);
        return;
    }
    c2s_block(c);
}

/* Decodes base64 element text into out (cap bytes).  RFC 6120 6.4.2: "="
 * is empty data, nothing at all is no data; the data is strict base64
 * without white space.  SASL2 (XEP-0388 2.2): the element says whether
 * there is data, "=" is not special, and white space around it is ignored.
 * Returns the length, or -1 for bad base64. */
static long
c2s_b64_decode(const char *in, size_t inlen, uint8_t *out, size_t cap, bool *present, bool sasl2)
{
    if (sasl2) {
        while (inlen && strchr(" \t\r\n", in[0]))
            in++, inlen--;
        while (inlen && strchr(" \t\r\n", in[inlen - 1]))
            inlen--;
    } else {
        *present = inlen > 0;
        if (inlen == 0 || (inlen == 1 && in[0] == '='))
            return 0;
    }
    size_t n = 0;
    if (inlen == 0)
        return 0;
    return xd_base64_decode(in, inlen, out, cap, &n, 0) == 0 ? (long)n : -1;
}

bool
c2s_sasl_allowed(xd_conn_t *c, bool starting)
{
    if (c2s_of(c)->authenticated) {
        /* RFC 6120 6.4.6, XEP-0388 2.9: no second authentication on a stream. */
        c2s_close(c, XD_STREAM_POLICY_VIOLATION, "the stream is already authenticated");
        return false;
    }
    if (!c2s_of(c)->sasl || (!c2s_secure(c) && c->listener->starttls_required)) {
        if (starting) {
            c2s_write_str(c, c2s_of(c)->s2
                                 ? "<failure xmlns='" XD_NS_SASL2 "'><encryption-required xmlns='"
                                   XD_NS_SASL "'/><text xml:lang='en'>use STARTTLS first</text>"
                                   "</failure>"
                                 : "<failure xmlns='" XD_NS_SASL "'><encryption-required/>"
                                   "<text xml:lang='en'>use STARTTLS first</text></failure>");
            c2s_close(c, XD_STREAM_POLICY_VIOLATION, "TLS is required before authentication");
        } else {
            c2s_close(c, XD_STREAM_POLICY_VIOLATION, "no SASL exchange is in progress");
        }
        return false;
    }
    return true;
}

void
c2s_sasl_input(xd_conn_t *c, c2s_sasl_op op, const char *mech, const char *text, size_t tlen,
               bool present, unsigned flags)
{
    xd_sasl_result_t r;
    if (op == C2S_SASL_ABORT) {
        xd_sasl_abort(c2s_of(c)->sasl, &r);
        c2s_sasl_result(c, &r);
        return;
    }
    bool sasl2 = c2s_of(c)->s2 != NULL;
    uint8_t *data = NULL;
    size_t cap = xd_base64_decoded_max(tlen);
    long dlen = 0;
    bool bad = tlen > xd_base64_encoded_len(XD_SASL_MSG_MAX, 0) + (sasl2 ? 256 : 0);
    if (!bad) {
        data = xd_malloc(cap + 1);
        dlen = c2s_b64_decode(text ? text : "", tlen, data, cap, &present, sasl2);
        bad = dlen < 0;
    }
    if (bad) {
        if (data != NULL)
            OPENSSL_cleanse(data, cap); /* what decoded before the error */
        xd_free(data);
        r = (xd_sasl_result_t){ .kind = XD_SASL_FAILURE, .cond = XD_SASL_COND_INCORRECT_ENCODING };
        xd_sasl_abort(c2s_of(c)->sasl, NULL); /* the exchange is over */
        c2s_sasl_result(c, &r);
        return;
    }
    if (op == C2S_SASL_START)
        xd_sasl_start_ex(c2s_of(c)->sasl, xd_str_c(mech ? mech : ""), present ? data : NULL,
                         (size_t)dlen, flags, &r);
    else
        xd_sasl_step(c2s_of(c)->sasl, data, (size_t)dlen, &r);
    OPENSSL_cleanse(data, (size_t)dlen);
    xd_free(data);
    c2s_sasl_result(c, &r);
}

void
c2s_sasl_element(xd_conn_t *c, const xd_el_t *el)
{
    const char *name = xd_el_name(el);
    c2s_sasl2_free(c); /* this exchange is RFC 6120 SASL */
    if (!c2s_sasl_allowed(c, !strcmp(name, "auth")))
        return;
    const char *text = xd_el_text(el);
    size_t tlen = text ? xd_el_text_len(el) : 0;
    if (!strcmp(name, "abort"))
        c2s_sasl_input(c, C2S_SASL_ABORT, NULL, NULL, 0, false, 0);
    else if (!strcmp(name, "auth"))
        c2s_sasl_input(c, C2S_SASL_START, xd_el_attr(el, "mechanism"), text, tlen, false, 0);
    else if (!strcmp(name, "response"))
        c2s_sasl_input(c, C2S_SASL_STEP, NULL, text, tlen, false, 0);
    else
        c2s_close(c, XD_STREAM_UNSUPPORTED_STANZA_TYPE, NULL);
}

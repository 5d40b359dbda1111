/*
 * c2s_sasl2.c — SASL2 (XEP-0388) on client streams, with Bind2 (XEP-0386)
 * and FAST tokens (XEP-0484) inline.
 *
 * SASL2 is another syntax for the same exchange: <authenticate/> carries
 * the mechanism, the initial response and what the client wants done once
 * it is authenticated; the SASL engine (stream/sasl.h), the backend
 * questions, failure counting, delays, max_auth_failures and auth_limits
 * are c2s_sasl.c's, shared with RFC 6120 SASL (c2s_of(c)->s2 selects the
 * wire format).  What is SASL2's own:
 *
 *   <authenticate/> parsed here into c2s_sasl2_t: user-agent id (checked),
 *     <bind/> (tag, inline carbons / CSI / SM enable), <request-token/>,
 *     <fast/>; SCRAM gets XEP-0474's h= (XD_SASL_START_SSDP), HT-* is
 *     allowed with <fast/> (XD_SASL_START_FAST).
 *   NEED_TOKEN: the client's stored tokens (auth/fast.h) to the engine.
 *   SUCCESS: FAST bookkeeping (promote, rotate, invalidate, issue: one
 *     transaction, input blocked meanwhile), then Bind2, then <success/>
 *     and the stream features, without a stream restart.
 *
 *   <resume xmlns='urn:xmpp:sm:3'/> inline (XEP-0198 8.2): tried first
 *     in c2s_sasl2_finish; when the session is on another worker the
 *     finish runs again with the answer (c2s_sasl2_resume_answer).
 *
 * Not done: <continue/> and tasks (XEP-0388 2.6.3; nothing here needs a
 * second factor or a password change), TLS 0-RTT for FAST (not offered,
 * so <fast count/> is not checked).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "stream/c2s_int.h"

#include "auth/fast.h"
#include "core/secret.h"
#include "xmppd/alloc.h"
#include "xmppd/auth.h"
#include "xmppd/base64.h"
#include "xmppd/config.h"
#include "xmppd/el.h"
#include "xmppd/err.h"
#include "xmppd/jid.h"
#include "xmppd/log.h"
#include "xmppd/ns.h"
#include "xmppd/scram.h"
#include "xmppd/session.h"

#define C2S_BIND2_TAG_MAX 64   /* bytes of a Bind2 <tag/> */
#define C2S_FAST_TOKEN_LEN 69  /* "fast-" + 64 hex digits: longer than SHA-256's block */

typedef enum {
    C2S_RESUME_NONE,    /* not asked, or not tried yet */
    C2S_RESUME_TRYING,  /* c2s_sm_resume runs (an answer now is synchronous) */
    C2S_RESUME_WAITING, /* the session's worker was asked; input blocked */
    C2S_RESUME_DONE,    /* answered */
} c2s_resume_state;

struct c2s_sasl2 {
    char ua[XD_FAST_CLIENT_MAX + 1]; /* <user-agent id/>, "" = none */
    bool bind;                       /* <bind xmlns='urn:xmpp:bind:0'/> asked */
    char tag[C2S_BIND2_TAG_MAX + 1]; /* its <tag/>, "" = none */
    bool carbons;                    /* ... inline <enable xmlns='urn:xmpp:carbons:2'/> */
    bool csi_inactive;               /* ... inline <inactive xmlns='urn:xmpp:csi:0'/> */
    xd_el_t *sm;                     /* ... inline <enable xmlns='urn:xmpp:sm:3'/> (a copy) */
    char *resume_previd;             /* inline <resume xmlns='urn:xmpp:sm:3'/>: previd, or NULL */
    char *resume_h;                  /* ... and its h (as sent, checked by c2s_sm_resume) */
    c2s_resume_state resume;         /* how far that resume is */
    char *resume_xml;                /* its answer for <success/> (<resumed/> or <failed/>) */
    bool resumed;                    /* ... the session is this stream's again */
    int want_token;                  /* <request-token mechanism/>: xd_sasl_mech, -1 none */
    bool fast;                       /* <fast/>: a token is presented */
    bool invalidate;                 /* ... with invalidate='true' */
    xd_fast_tok_t toks[2];           /* FAST: the tokens given to the engine */
    size_t ntoks;
    char *additional;                /* success: base64 additional data, or NULL */
    char token[C2S_FAST_TOKEN_LEN + 1]; /* success: a new token to send, "" = none */
    int64_t token_expiry_ms;         /* ... its expiry */
};

void
c2s_sasl2_free(xd_conn_t *c)
{
    c2s_sasl2_t *s2 = c2s_of(c) ? c2s_of(c)->s2 : NULL;
    if (!s2)
        return;
    xd_free(s2->additional);
    xd_el_free(s2->sm);
    xd_free(s2->resume_previd);
    xd_free(s2->resume_h);
    xd_free(s2->resume_xml);
    OPENSSL_cleanse(s2, sizeof *s2);
    xd_free(s2);
    c2s_of(c)->s2 = NULL;
}

/* ---- features ------------------------------------------------------------------------------- */

size_t
c2s_sasl2_feature(xd_conn_t *c, char *buf, size_t len, size_t cap)
{
#define ADD(...) len += (size_t)snprintf(buf + len, len < cap ? cap - len : 0, __VA_ARGS__)
    c2s_t *s = c2s_of(c);
    ADD("<authentication xmlns='" XD_NS_SASL2 "'>");
    for (const char *const *m = xd_sasl_mechanisms(s->sasl); *m; m++)
        ADD("<mechanism>%s</mechanism>", *m);
    ADD("<inline>%s<bind xmlns='" XD_NS_BIND2 "'><inline>",
        c2s_sm_offered(c) ? "<sm xmlns='" XD_NS_SM "'/>" : ""); /* XEP-0198 8.2 */
    ADD(
        "<feature var='" XD_NS_CARBONS "'/><feature var='" XD_NS_CSI "'/>%s</inline></bind>",
        c2s_sm_offered(c) ? "<feature var='" XD_NS_SM "'/>" : "");
    const char *const *fm = xd_sasl_fast_mechanisms(s->sasl);
    if (fm[0]) {
        ADD("<fast xmlns='" XD_NS_FAST "'>");
        for (; *fm; fm++)
            ADD("<mechanism>%s</mechanism>", *fm);
        ADD("</fast>");
    }
    ADD("</inline></authentication>");
#undef ADD
    return len < cap ? len : cap - 1;
}

/* ---- <authenticate/> ------------------------------------------------------------------------ */

/* XEP-0388 2.3: the id is a UUID; accepted: 1..XD_FAST_CLIENT_MAX bytes of
 * printable ASCII without spaces (it names the client's tokens and its
 * stable resource; it is never shown to anyone). */
static bool
c2s_ua_ok(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > XD_FAST_CLIENT_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)id[i] < 0x21 || (unsigned char)id[i] > 0x7e)
            return false;
    return true;
}

/* Reads the children of <authenticate/> into s2; NULL, or why it is a
 * malformed request. */
static const char *
c2s_sasl2_parse(xd_conn_t *c, c2s_sasl2_t *s2, const xd_el_t *el, const xd_el_t **ir)
{
    for (const xd_el_t *ch = xd_el_first_child(el); ch; ch = xd_el_next(ch)) {
        const char *name = xd_el_name(ch), *ns = xd_el_ns(ch) ? xd_el_ns(ch) : "";
        if (!strcmp(ns, XD_NS_SASL2) && !strcmp(name, "initial-response")) {
            *ir = ch;
        } else if (!strcmp(ns, XD_NS_SASL2) && !strcmp(name, "user-agent")) {
            const char *id = xd_el_attr(ch, "id");
            if (id && !c2s_ua_ok(id))
                return "bad user-agent id";
            snprintf(s2->ua, sizeof s2->ua, "%s", id ? id : "");
        } else if (!strcmp(ns, XD_NS_BIND2) && !strcmp(name, "bind")) {
            s2->bind = true;
            for (const xd_el_t *f = xd_el_first_child(ch); f; f = xd_el_next(f)) {
                const char *fn = xd_el_name(f), *fns = xd_el_ns(f) ? xd_el_ns(f) : "";
                if (!strcmp(fns, XD_NS_BIND2) && !strcmp(fn, "tag")) {
                    const char *t = xd_el_text(f);
                    if (t && strlen(t) > C2S_BIND2_TAG_MAX)
                        return "Bind2 tag too long";
                    snprintf(s2->tag, sizeof s2->tag, "%s", t ? t : "");
                } else if (!strcmp(fns, XD_NS_CARBONS) && !strcmp(fn, "enable")) {
                    s2->carbons = true;
                } else if (!strcmp(fns, XD_NS_CSI) && !strcmp(fn, "inactive")) {
                    s2->csi_inactive = true;
                } else if (!strcmp(fns, XD_NS_SM) && !strcmp(fn, "enable") && !s2->sm) {
                    s2->sm = xd_el_new("enable", XD_NS_SM);
                    for (const char *const *a = (const char *const[]){ "resume", "max", NULL };
                         *a; a++)
                        if (xd_el_attr(f, *a))
                            xd_el_set_attr(s2->sm, *a, xd_el_attr(f, *a));
                } /* other inline features are not offered: ignored */
            }
        } else if (!strcmp(ns, XD_NS_FAST) && !strcmp(name, "request-token")) {
            const char *m = xd_el_attr(ch, "mechanism");
            int mech = m ? xd_sasl_mech_parse(xd_str_c(m)) : -1;
            for (const char *const *fm = xd_sasl_fast_mechanisms(c2s_of(c)->sasl); *fm; fm++)
                if (mech >= 0 && !strcmp(*fm, m))
                    s2->want_token = mech; /* only one we offer */
        } else if (!strcmp(ns, XD_NS_FAST) && !strcmp(name, "fast")) {
            const char *inv = xd_el_attr(ch, "invalidate");
            s2->fast = true;
            s2->invalidate = inv && (!strcmp(inv, "true") || !strcmp(inv, "1"));
        } else if (!strcmp(ns, XD_NS_SM) && !strcmp(name, "resume") && !s2->resume_previd) {
            /* XEP-0198 8.2: tried in c2s_sasl2_finish before Bind2. */
            const char *previd = xd_el_attr(ch, "previd"), *h = xd_el_attr(ch, "h");
            s2->resume_previd = xd_strndup(previd ? previd : "", previd ? strnlen(previd, 64) : 0);
            s2->resume_h = xd_strndup(h ? h : "", h ? strnlen(h, 16) : 0);
        }
    }
    return NULL;
}

void
c2s_sasl2_element(xd_conn_t *c, const xd_el_t *el)
{
    c2s_t *s = c2s_of(c);
    const char *name = xd_el_name(el);
    if (!strcmp(name, "authenticate")) {
        c2s_sasl2_free(c);
        s->s2 = xd_new(c2s_sasl2_t);
        s->s2->want_token = -1;
        if (!c2s_sasl_allowed(c, true))
            return;
        const xd_el_t *ir = NULL;
        const char *bad = c2s_sasl2_parse(c, s->s2, el, &ir);
        const char *mech = xd_el_attr(el, "mechanism");
        int m = mech ? xd_sasl_mech_parse(xd_str_c(mech)) : -1;
        if (!bad && m >= 0 && xd_sasl_mech_is_ht((xd_sasl_mech)m) && !s->s2->ua[0])
            bad = "FAST needs a user-agent id"; /* XEP-0484 5.1 */
        if (bad) {
            xd_sasl_result_t r = { .kind = XD_SASL_FAILURE, .mech = XD_SASL_MECH_COUNT,
                                   .cond = XD_SASL_COND_MALFORMED_REQUEST, .text = bad,
                                   .cb = -1, .token = -1 };
            xd_sasl_abort(s->sasl, NULL); /* whatever was in progress is over */
            c2s_sasl_result(c, &r);
            return;
        }
        unsigned flags = XD_SASL_START_SSDP | (s->s2->fast ? XD_SASL_START_FAST : 0);
        c2s_sasl_input(c, C2S_SASL_START, mech, ir ? xd_el_text(ir) : NULL,
                       ir && xd_el_text(ir) ? xd_el_text_len(ir) : 0, ir != NULL, flags);
    } else if (!strcmp(name, "response") || !strcmp(name, "abort")) {
        if (!s->s2 && !s->authenticated) {
            c2s_close(c, XD_STREAM_POLICY_VIOLATION, "no SASL2 exchange is in progress");
            return;
        }
        if (!c2s_sasl_allowed(c, false))
            return;
        if (!strcmp(name, "abort"))
            c2s_sasl_input(c, C2S_SASL_ABORT, NULL, NULL, 0, false, 0);
        else
            c2s_sasl_input(c, C2S_SASL_STEP, NULL, xd_el_text(el),
                           xd_el_text(el) ? xd_el_text_len(el) : 0, true, 0);
    } else {
        c2s_close(c, XD_STREAM_UNSUPPORTED_STANZA_TYPE, NULL);
    }
}

/* ---- FAST tokens ---------------------------------------------------------------------------- */

static void
c2s_on_tokens(void *arg, int status, const xd_fast_tok_t *toks, size_t n)
{
    xd_conn_t *c = c2s_op_done(arg);
    if (!c || c->state == C2S_CLOSING || !c2s_of(c)->s2 || !c2s_of(c)->sasl)
        return;
    c2s_sasl2_t *s2 = c2s_of(c)->s2;
    xd_sasl_token_t st[2];
    size_t k = 0;
    for (size_t i = 0; i < n && k < 2; i++) {
        int m = xd_sasl_mech_parse(xd_str_c(toks[i].mech));
        if (m < 0)
            continue;
        s2->toks[k] = toks[i];
        memcpy(st[k].key, toks[i].key, sizeof st[k].key);
        st[k].mech = (xd_sasl_mech)m;
        k++;
    }
    s2->ntoks = k;
    xd_sasl_result_t r;
    xd_sasl_provide_token(c2s_of(c)->sasl, status, st, k, &r);
    OPENSSL_cleanse(st, sizeof st);
    c2s_sasl_result(c, &r);
}

void
c2s_sasl2_need_token(xd_conn_t *c, const xd_sasl_result_t *r)
{
    c2s_sasl2_t *s2 = c2s_of(c)->s2;
    xd_conn_op_t *op = c2s_op_new(c, sizeof *op);
    int rc = xd_fast_get(c->host, r->user, s2->ua, c2s_on_tokens, op);
    if (rc != 0) {
        c2s_op_done(op);
        xd_sasl_result_t nr;
        xd_sasl_provide_token(c2s_of(c)->sasl, rc == XD_ENOTSUP ? XD_ENOTFOUND : rc, NULL, 0,
                              &nr);
        c2s_sasl_result(c, &nr);
        return;
    }
    c2s_block(c);
}

/* A new token into s2->token and its hash into key. */
static bool
c2s_token_new(c2s_sasl2_t *s2, uint8_t key[XD_FAST_KEY_LEN])
{
    uint8_t rnd[32];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        return false;
    int k = snprintf(s2->token, sizeof s2->token, "fast-");
    for (size_t i = 0; i < sizeof rnd; i++)
        k += snprintf(s2->token + k, sizeof s2->token - (size_t)k, "%02x", rnd[i]);
    OPENSSL_cleanse(rnd, sizeof rnd);
    XD_ASSERT(k == C2S_FAST_TOKEN_LEN);
    return xd_scram_digest(XD_SCRAM_SHA256, s2->token, (size_t)k, key) == 0;
}

/* ---- success -------------------------------------------------------------------------------- */

/* XEP-0386 2.2.1: the tag, then a part stable for (account, user-agent id)
 * that does not show the id: HMAC(node key, bare JID NUL id); random
 * without an id. */
static void
c2s_bind2_resource(xd_conn_t *c, char *out, size_t cap)
{
    c2s_sasl2_t *s2 = c2s_of(c)->s2;
    uint8_t h[XD_SCRAM_KEY_MAX];
    if (s2->ua[0]) {
        unsigned char key[XD_NODE_KEY_LEN];
        char msg[XD_JID_MAX + XD_FAST_CLIENT_MAX + 2];
        int n = snprintf(msg, sizeof msg, "%s%c%s", xd_jid_bare_str(c2s_of(c)->jid).p, 0, s2->ua);
        xd_node_key(XD_NODE_KEY_BIND2, key);
        xd_scram_hmac(XD_SCRAM_SHA256, key, sizeof key, msg, (size_t)n, h);
        OPENSSL_cleanse(key, sizeof key);
    } else if (RAND_bytes(h, 8) != 1) {
        memset(h, 0, 8);
    }
    int k = snprintf(out, cap, "%s%s", s2->tag, s2->tag[0] ? "." : "");
    for (int i = 0; i < (s2->tag[0] ? 4 : 8); i++)
        k += snprintf(out + k, cap - (size_t)k, "%02x", h[i]);
}

/* An inline resume first (XEP-0198 8.2), then Bind2 unless it resumed,
 * then <success/> and the features, then what the resumed session had not
 * had acknowledged.  True when the resume waits for another worker: this
 * runs again with its answer (c2s_sasl2_resume_answer). */
static bool
c2s_sasl2_finish(xd_conn_t *c)
{
    c2s_t *s = c2s_of(c);
    c2s_sasl2_t *s2 = s->s2;
    if (s2->resume_previd && s2->resume == C2S_RESUME_NONE) {
        s2->resume = C2S_RESUME_TRYING;
        if (c2s_sm_resume(c, s2->resume_previd, s2->resume_h)) {
            s2->resume = C2S_RESUME_WAITING;
            return true;
        }
    }
    if (c->state != C2S_OPEN)
        return false; /* the resume closed the stream (a count too high) */
    xd_el_t *succ = xd_el_new("success", XD_NS_SASL2);
    if (s2->additional)
        xd_el_add_text(xd_el_add_child(succ, "additional-data", NULL), s2->additional);
    xd_el_t *authz = xd_el_add_child(succ, "authorization-identifier", NULL);
    xd_el_t *answer = NULL;
    if (s2->resume_xml && xd_el_parse(s2->resume_xml, strlen(s2->resume_xml), &answer) == 0)
        xd_el_append(succ, answer);
    bool resumed = s2->resumed;
    if (resumed) {
        xd_el_add_text(authz, xd_jid_full_str(s->session->jid).p);
    } else if (s2->bind) {
        char res[C2S_BIND2_TAG_MAX + 32];
        c2s_bind2_resource(c, res, sizeof res);
        xd_session_bind_req_t req = c2s_bind_req(c);
        if (xd_session_bind(&req, res, &s->session) != 0) /* a tag that is no resource */
            xd_session_bind(&req, NULL, &s->session);
    }
    if (s->session && !resumed) {
        c2s_bound(c, "bind2");
        xd_el_t *bound = xd_el_add_child(succ, "bound", XD_NS_BIND2);
        if (s2->carbons) /* XEP-0280 through XEP-0386: cannot fail, no answer */
            xd_session_set_flag(s->session->jid, XD_SESSION_CARBONS, true);
        if (s2->csi_inactive)
            xd_session_csi(s->session, false);
        if (s2->sm) {
            char ans[512];
            xd_el_t *a = NULL;
            c2s_sm_start(c, s2->sm, ans, sizeof ans);
            if (xd_el_parse(ans, strlen(ans), &a) == 0)
                xd_el_append(bound, a); /* <enabled id resume max/> or <failed/> */
        }
        xd_el_add_text(authz, xd_jid_full_str(s->session->jid).p);
    } else if (!resumed) {
        xd_el_add_text(authz, xd_jid_bare_str(s->jid).p);
    }
    if (s2->token[0]) {
        char exp[32];
        time_t t = (time_t)(s2->token_expiry_ms / 1000);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(exp, sizeof exp, "%Y-%m-%dT%H:%M:%SZ", &tm); /* XEP-0082 */
        xd_el_t *tok = xd_el_add_child(succ, "token", XD_NS_FAST);
        xd_el_set_attr(tok, "expiry", exp);
        xd_el_set_attr(tok, "token", s2->token);
    }
    size_t n;
    char *x = xd_el_serialize(succ, XD_NS_CLIENT, &n);
    c2s_write(c, x, n);
    OPENSSL_cleanse(x, n);
    xd_free(x);
    xd_el_free(succ);
    c2s_sasl2_free(c);
    /* XEP-0388 2.6.1: the features of the authenticated stream follow. */
    c2s_send_features(c);
    if (resumed)
        c2s_sm_resend(c);
    return false;
}

bool
c2s_sasl2_resume_answer(xd_conn_t *c, const char *xml, bool resumed)
{
    c2s_sasl2_t *s2 = c2s_of(c)->s2;
    if (!s2 || (s2->resume != C2S_RESUME_TRYING && s2->resume != C2S_RESUME_WAITING))
        return false;
    bool waiting = s2->resume == C2S_RESUME_WAITING;
    s2->resume = C2S_RESUME_DONE;
    xd_free(s2->resume_xml);
    s2->resume_xml = xd_strdup(xml);
    s2->resumed = resumed;
    if (waiting)
        c2s_sasl2_finish(c); /* the caller unblocks the stream after */
    return true;
}

static void
c2s_on_fast_update(void *arg, int status)
{
    xd_conn_t *c = c2s_op_done(arg);
    if (!c || c->state == C2S_CLOSING || !c2s_of(c)->s2)
        return;
    if (status != 0) {
        XD_LOG(&c->log, XD_WARN, "FAST token update failed", "status=%s", xd_strerror(status));
        c2s_of(c)->s2->token[0] = '\0'; /* not stored: not given */
    }
    if (!c2s_sasl2_finish(c))
        c2s_unblock(c); /* else the resume's answer unblocks it */
}

void
c2s_sasl2_success(xd_conn_t *c, const xd_sasl_result_t *r)
{
    c2s_t *s = c2s_of(c);
    c2s_sasl2_t *s2 = s->s2;
    if (r->out) {
        s2->additional = xd_malloc(xd_base64_encoded_len(r->out_len, 0) + 1);
        s2->additional[xd_base64_encode(r->out, r->out_len, s2->additional, 0)] = '\0';
    }
    /* FAST (XEP-0484 3.4, 3.5, 8.1): what this login changes. */
    xd_config_t *cfg = xd_config_get();
    const xd_host_conf_t *hc = xd_config_host(cfg, c->host);
    uint64_t ttl = hc ? hc->fast_token_ttl_ms : 0;
    bool fast_on = hc && hc->fast && s2->ua[0] && r->user;
    xd_config_unref(cfg);
    xd_fast_update_t u = { .host = c->host, .user = r->user, .client = s2->ua, .used_slot = -1,
                           .count = -1 };
    bool ht = xd_sasl_mech_is_ht(r->mech) && r->token >= 0 && (size_t)r->token < s2->ntoks;
    int64_t now = xd_fast_now_ms();
    if (fast_on && ht) {
        const xd_fast_tok_t *used = &s2->toks[r->token];
        u.used_slot = used->slot;
        u.invalidate = s2->invalidate;
        /* Rotation: a token in its second half gets a successor. */
        if (!s2->invalidate && s2->want_token < 0 && used->expires_ms - now < (int64_t)(ttl / 2))
            s2->want_token = (int)r->mech;
    }
    if (fast_on && s2->want_token >= 0 && c2s_token_new(s2, u.key)) {
        u.issue = true;
        u.mech = xd_sasl_mech_name((xd_sasl_mech)s2->want_token);
        u.expires_ms = now + (int64_t)ttl;
        s2->token_expiry_ms = u.expires_ms;
        XD_LOG(&c->log, XD_INFO, "FAST token issued", "mech=%s", u.mech);
    }
    bool waiting = false;
    if (fast_on && (u.issue || u.invalidate || u.used_slot == 1)) {
        xd_conn_op_t *op = c2s_op_new(c, sizeof *op);
        waiting = xd_fast_update(&u, c2s_on_fast_update, op) == 0; /* copies u */
        if (!waiting) {
            c2s_op_done(op);
            s2->token[0] = '\0';
        }
    }
    OPENSSL_cleanse(u.key, sizeof u.key);
    xd_sasl_free(s->sasl); /* r and u.user are not used after this */
    s->sasl = NULL;
    if (waiting)
        c2s_block(c);
    else
        c2s_sasl2_finish(c);
}

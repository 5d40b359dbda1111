/*
 * s2s_in.c — incoming server-to-server streams (RFC 6120 4–6, XEP-0178,
 * XEP-0220, XEP-0344, XEP-0368) on `s2s` listeners.
 *
 *   header (to: one of our domains) ─► features:
 *       STARTTLS [required when s2s_require_encryption]
 *       once secure: SASL EXTERNAL when the peer's certificate verifies for
 *       the header's 'from'; dialback when s2s_dialback and not
 *       s2s_verify_certificates
 *   <auth mechanism='EXTERNAL'> ─► the certificate again ─► success ─► restart
 *   <db:result from=O to=L>key ─► O's certificate verifies? valid at once
 *       (XEP-0344) : ask O's authoritative server through our outgoing route
 *       (L, O) with <db:verify/> (s2s.c) ─► <db:result type=…/>
 *   <db:verify from=R to=L id=…>key ─► we are L's authoritative server:
 *       the key is recomputed from our secret (XEP-0185) ─► type valid/invalid
 *   stanzas: allowed for the (from domain, to domain) pairs authenticated on
 *       this stream; others close it with invalid-from.  A 'from' that is
 *       not a JID closes it with improper-addressing (RFC 6120 4.9.3.7); a
 *       'to' that is not one gets jid-malformed back from our domain.  Both
 *       addresses go on in canonical form (RFC 7622, xd_stanza_canonical)
 *   auth_limits (auth/authlimit.h): a key the authoritative server calls
 *       invalid counts for the peer's address and the claimed domain; past
 *       delay_after the type='invalid' answer waits, and an address banned
 *       for it is refused at the header with policy-violation
 *
 * One stream may authenticate several pairs (dialback for each
 * <db:result/>): a remote server with several domains multiplexes them.
 */
#include <stdio.h>
#include <string.h>

#include "auth/authlimit.h"
#include "router/router.h"
#include "s2s/s2s_int.h"
#include "xmppd/alloc.h"
#include "xmppd/base64.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/jid.h"
#include "xmppd/log.h"
#include "xmppd/ns.h"
#include "xmppd/stanza.h"
#include "xml/parse.h"

#define IN_MAX_PAIRS 64 /* authenticated or pending (remote, local) pairs per stream */

#define IN_DOMAIN_MAX 256 /* a DNS name is at most 253 bytes */

typedef struct in_pair {
    char remote[IN_DOMAIN_MAX];
    char local[IN_DOMAIN_MAX];
} in_pair_t;

/* A type='invalid' answer held back by auth_limits. */
typedef struct in_delayed {
    char remote[IN_DOMAIN_MAX];
    char local[IN_DOMAIN_MAX];
    uint64_t due_ms; /* loop time it is sent at */
    bool close;      /* the address is banned: close the stream after it */
} in_delayed_t;

typedef struct s2s_in {
    char from[S2S_DOMAIN_MAX]; /* the header's 'from', normalised, or "" */
    bool v1;                   /* the header said version 1.x */
    bool sasl_ok;              /* SASL EXTERNAL succeeded on this stream */
    bool registered;           /* in the s2s_connections registry */
    in_pair_t *authed;         /* authenticated pairs (grown on demand, at most IN_MAX_PAIRS) */
    size_t nauthed, cauthed;
    in_pair_t *pending;        /* pairs whose dialback verification is out */
    size_t npending, cpending;
    in_delayed_t *delayed;     /* invalid answers waiting (at most IN_MAX_PAIRS) */
    size_t ndelayed;
    xd_timer_t *delay_timer;   /* fires at the first delayed answer, or NULL */
} s2s_in_t;

/* A new slot at the end of *v (n used, *cap allocated). */
static in_pair_t *
in_push(in_pair_t **v, size_t *n, size_t *cap)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 2;
        *v = xd_realloc(*v, *cap * sizeof **v);
    }
    return &(*v)[(*n)++];
}

static void
in_accepted(xd_conn_t *c)
{
    c->rs = xd_new(s2s_in_t);
}

static void
in_closed(xd_conn_t *c)
{
    s2s_in_t *s = c->rs;
    if (!s)
        return;
    if (s->registered)
        s2s_registry_drop(c->id);
    if (s->delay_timer)
        xd_timer_free(s->delay_timer);
    xd_free(s->delayed);
    xd_free(s->authed);
    xd_free(s->pending);
    xd_free(s);
    c->rs = NULL;
}

static bool
in_has(const in_pair_t *v, size_t n, const char *remote, const char *local)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v[i].remote, remote) && !strcmp(v[i].local, local))
            return true;
    return false;
}

static void
in_authorize(xd_conn_t *c, const char *remote, const char *local, const char *how)
{
    s2s_in_t *s = c->rs;
    if (!in_has(s->authed, s->nauthed, remote, local) && s->nauthed < IN_MAX_PAIRS) {
        in_pair_t *p = in_push(&s->authed, &s->nauthed, &s->cauthed);
        snprintf(p->remote, sizeof p->remote, "%.255s", remote);
        snprintf(p->local, sizeof p->local, "%.255s", local);
    }
    s2s_registry_add(false, local, remote, how, xd_worker_index(c->ws->worker), c->id);
    s->registered = true;
    c2s_established(c);
    XD_LOG(&c->log, XD_NOTICE, "s2s incoming authenticated", "pair=%s->%s auth=%s", remote,
           local, how);
}

/* The peer's certificate verifies for `domain`. */
static bool
in_cert_ok(xd_conn_t *c, const char *domain)
{
    if (!c->tls || !domain || !*domain)
        return false;
    xd_tls_peer_result_t r;
    return xd_tls_peer_verify(c->tls, domain, &r) == 0 && r.status == XD_TLS_PEER_OK;
}

static void
in_features(xd_conn_t *c)
{
    s2s_in_t *s = c->rs;
    s2s_conf_t conf;
    s2s_conf(&conf);
    char buf[1024];
    size_t len = 0;
#define ADD(...) \
    len += (size_t)snprintf(buf + len, len < sizeof buf ? sizeof buf - len : 0, __VA_ARGS__)
    ADD("<stream:features>");
    bool secure = c2s_secure(c);
    if (!secure && c->listener->starttls)
        ADD("<starttls xmlns='" XD_NS_TLS "'>%s</starttls>",
            conf.require_encryption ? "<required/>" : "");
    if (!s->sasl_ok && (secure || !conf.require_encryption)) {
        if (in_cert_ok(c, s->from))
            ADD("<mechanisms xmlns='" XD_NS_SASL "'><mechanism>EXTERNAL</mechanism></mechanisms>");
        if (conf.dialback && !conf.verify_certificates)
            ADD("<dialback xmlns='" XD_NS_DIALBACK_FEAT "'><errors/></dialback>");
    }
    ADD("</stream:features>");
#undef ADD
    c2s_write(c, buf, len < sizeof buf ? len : sizeof buf - 1);
}

static void
in_stream_open(xd_conn_t *c, const xd_el_t *hdr)
{
    s2s_in_t *s = c->rs;
    const char *dns = xd_xml_parser_stream_ns(c->parser);
    if (strcmp(xd_el_name(hdr), "stream") != 0 || !xd_el_ns(hdr) ||
        strcmp(xd_el_ns(hdr), XD_NS_STREAMS) != 0) {
        c2s_close(c, XD_STREAM_INVALID_NAMESPACE, "expected a stream in the streams namespace");
        return;
    }
    if (!dns || strcmp(dns, XD_NS_SERVER) != 0) {
        c2s_close(c, XD_STREAM_INVALID_NAMESPACE, "the default namespace must be jabber:server");
        return;
    }
    const char *to = xd_el_attr(hdr, "to");
    char *local = NULL;
    if (!to || xd_jid_prep_domain(xd_str_c(to), &local) != 0 || !s2s_is_local(local)) {
        xd_free(local);
        c2s_close(c, XD_STREAM_HOST_UNKNOWN, "this server does not serve that domain");
        return;
    }
    xd_free(c->host);
    c->host = local;
    char why[XD_AUTHLIMIT_TEXT_MAX];
    if (xd_authlimit_banned((const struct sockaddr *)&c->peer, why, sizeof why)) {
        XD_LOG(&c->log, XD_INFO, "s2s incoming refused", "reason=auth-ban");
        c2s_close(c, XD_STREAM_POLICY_VIOLATION, why);
        return;
    }
    const char *from = xd_el_attr(hdr, "from");
    char *remote = NULL;
    if (from && xd_jid_prep_domain(xd_str_c(from), &remote) == 0)
        snprintf(s->from, sizeof s->from, "%s", remote);
    xd_free(remote);
    if (s->from[0] && !s2s_allowed(s->from)) {
        c2s_close(c, XD_STREAM_POLICY_VIOLATION, "federation with your domain is not allowed");
        return;
    }
    const char *v = xd_el_attr(hdr, "version");
    s->v1 = v && v[0] == '1' && v[1] == '.';
    xd_log_ctx(&c->log, NULL, "conn=%llu s2s-in ip=%s local=%s remote=%s",
               (unsigned long long)c->id, c->ip, c->host, s->from[0] ? s->from : "?");
    c2s_send_header_as(c, c->host, s->from[0] ? s->from : NULL, !s->v1);
    c->state = C2S_OPEN;
    if (s->v1)
        in_features(c);
}

static void
in_sasl(xd_conn_t *c, const xd_el_t *el)
{
    s2s_in_t *s = c->rs;
    const char *mech = xd_el_attr(el, "mechanism");
    char domain[S2S_DOMAIN_MAX] = "";
    const char *text = xd_el_text(el);
    size_t tlen = text ? xd_el_text_len(el) : 0;
    if (tlen > 0 && !(tlen == 1 && text[0] == '=')) {
        /* XEP-0178: the authzid, base64 — the initiating server's domain.
         * RFC 6120 6.4.5: text that is not base64 is incorrect-encoding;
         * a name too long or with a NUL in it is no domain. */
        size_t n = 0;
        int rc = xd_base64_decode(text, tlen, domain, sizeof domain - 1, &n, 0);
        if (rc == XD_EINVAL) {
            XD_LOG(&c->log, XD_INFO, "s2s sasl refused", "mech=%s err=incorrect-encoding",
                   mech ? mech : "?");
            static const char bad[] =
                "<failure xmlns='" XD_NS_SASL "'><incorrect-encoding/></failure>";
            c2s_write(c, bad, sizeof bad - 1);
            return;
        }
        domain[rc == 0 && !memchr(domain, '\0', n) ? n : 0] = '\0';
    } else {
        snprintf(domain, sizeof domain, "%s", s->from);
    }
    bool ok = mech && !strcmp(mech, "EXTERNAL") && !s->sasl_ok && domain[0] &&
              (!s->from[0] || !strcmp(domain, s->from)) && in_cert_ok(c, domain) &&
              s2s_allowed(domain);
    if (!ok) {
        XD_LOG(&c->log, XD_INFO, "s2s sasl refused", "mech=%s domain=%s", mech ? mech : "?",
               domain[0] ? domain : "?");
        c2s_write(c, "<failure xmlns='" XD_NS_SASL "'><not-authorized/></failure>",
                  sizeof "<failure xmlns='" XD_NS_SASL "'><not-authorized/></failure>" - 1);
        return;
    }
    s->sasl_ok = true;
    static const char success[] = "<success xmlns='" XD_NS_SASL "'/>";
    c2s_write(c, success, sizeof success - 1);
    in_authorize(c, domain, c->host, "sasl");
    /* RFC 6120 6.4.6: the initiating server restarts the stream. */
    xd_xml_parser_reset(c->parser);
    c->restart = true;
    c->state = C2S_HEADER;
    c->header_sent = false;
}

static void
in_db_reply(xd_conn_t *c, const xd_dialback_t *req, xd_dialback_type type, xd_cond cond)
{
    s2s_send_el(c, xd_dialback_reply(req, type, cond));
}

static void
in_dialback(xd_conn_t *c, const xd_el_t *el)
{
    s2s_in_t *s = c->rs;
    s2s_conf_t conf;
    s2s_conf(&conf);
    xd_dialback_t d;
    if (xd_dialback_parse(el, &d) != 0) {
        c2s_close(c, XD_STREAM_INVALID_XML, "malformed dialback element");
        return;
    }
    if (d.type != XD_DIALBACK_REQUEST) {
        XD_LOG(&c->log, XD_INFO, "dialback answer on an incoming stream ignored", "");
        return;
    }
    if (conf.require_encryption && !c2s_secure(c)) {
        c2s_close(c, XD_STREAM_POLICY_VIOLATION, "TLS first");
        return;
    }
    if (strlen(d.from) >= IN_DOMAIN_MAX || strlen(d.to) >= IN_DOMAIN_MAX) {
        c2s_close(c, XD_STREAM_IMPROPER_ADDRESSING, "a domain is too long");
        return;
    }
    char local[IN_DOMAIN_MAX], remote[IN_DOMAIN_MAX];
    snprintf(remote, sizeof remote, "%s", d.from);
    snprintf(local, sizeof local, "%s", d.to);
    if (d.kind == XD_DIALBACK_VERIFY) {
        /* We are the authoritative server of `local` (XEP-0220 2.1.3). */
        bool valid = s2s_is_local(local) && s2s_key_ok(remote, local, d.id, d.key);
        XD_LOG(&c->log, XD_INFO, "db:verify answered", "for=%s by=%s valid=%s", local, remote,
               valid ? "yes" : "no");
        in_db_reply(c, &d, valid ? XD_DIALBACK_VALID : XD_DIALBACK_INVALID, 0);
        return;
    }
    /* <db:result/>: the originating server `remote` wants to send to `local`. */
    if (!s2s_is_local(local)) {
        in_db_reply(c, &d, XD_DIALBACK_ERROR, XD_COND_ITEM_NOT_FOUND);
        return;
    }
    if (!conf.dialback || !s2s_allowed(remote)) {
        in_db_reply(c, &d, XD_DIALBACK_ERROR, XD_COND_FORBIDDEN);
        return;
    }
    if (in_has(s->authed, s->nauthed, remote, local)) {
        in_db_reply(c, &d, XD_DIALBACK_VALID, 0);
        return;
    }
    if (in_cert_ok(c, remote)) {
        /* XEP-0344: the certificate already proves the domain. */
        in_db_reply(c, &d, XD_DIALBACK_VALID, 0);
        in_authorize(c, remote, local, "dialback-cert");
        return;
    }
    if (conf.verify_certificates) {
        in_db_reply(c, &d, XD_DIALBACK_ERROR, XD_COND_NOT_AUTHORIZED);
        return;
    }
    if (in_has(s->pending, s->npending, remote, local) || s->npending >= IN_MAX_PAIRS) {
        in_db_reply(c, &d, XD_DIALBACK_ERROR, XD_COND_POLICY_VIOLATION);
        return;
    }
    in_pair_t *p = in_push(&s->pending, &s->npending, &s->cpending);
    snprintf(p->remote, sizeof p->remote, "%.255s", remote);
    snprintf(p->local, sizeof p->local, "%.255s", local);
    char key[256];
    snprintf(key, sizeof key, "%.*s", (int)d.key.len, d.key.p);
    XD_LOG(&c->log, XD_INFO, "dialback verification asked", "pair=%s->%s", remote, local);
    s2s_verify_request(local, remote, c->sid, key, xd_worker_index(c->ws->worker), c->id);
}

/* Sends the type='invalid' answer for (remote, local); false when the
 * stream was closed because the address is banned. */
static bool
in_send_invalid(xd_conn_t *c, const char *remote, const char *local, bool close)
{
    xd_dialback_t req = { .kind = XD_DIALBACK_RESULT, .type = XD_DIALBACK_REQUEST,
                          .from = remote, .to = local, .key = xd_str_c("x") };
    in_db_reply(c, &req, XD_DIALBACK_INVALID, 0);
    if (!close)
        return true;
    char why[XD_AUTHLIMIT_TEXT_MAX];
    if (!xd_authlimit_banned((const struct sockaddr *)&c->peer, why, sizeof why))
        snprintf(why, sizeof why, "too many failed authentications");
    c2s_close(c, XD_STREAM_POLICY_VIOLATION, why);
    return false;
}

static void
in_delay_fired(xd_timer_t *t, void *arg)
{
    (void)t;
    xd_conn_t *c = arg;
    s2s_in_t *s = c->rs;
    uint64_t now = uv_now(c->tcp.loop), next = 0;
    size_t i = 0;
    while (i < s->ndelayed) {
        in_delayed_t d = s->delayed[i];
        if (d.due_ms > now) {
            next = !next || d.due_ms < next ? d.due_ms : next;
            i++;
            continue;
        }
        memmove(&s->delayed[i], &s->delayed[i + 1], (s->ndelayed - i - 1) * sizeof d);
        s->ndelayed--;
        if (c->state == C2S_CLOSING || !in_send_invalid(c, d.remote, d.local, d.close))
            return;
    }
    if (next)
        xd_timer_start(s->delay_timer, next - now, 0);
}

/* A key the authoritative server called invalid: counted by auth_limits,
 * answered now or after its delay. */
static void
in_invalid(xd_conn_t *c, const char *remote, const char *local)
{
    s2s_in_t *s = c->rs;
    xd_authlimit_result_t lim;
    xd_authlimit_failed((const struct sockaddr *)&c->peer, remote, &lim);
    XD_LOG(&c->log, XD_NOTICE, "dialback key refused",
           "remote=%s local=%s addr_failures=%u delay_ms=%llu%s", remote, local,
           lim.addr_failures, (unsigned long long)lim.delay_ms, lim.banned ? " banned=yes" : "");
    if (lim.delay_ms == 0) {
        in_send_invalid(c, remote, local, lim.banned);
        return;
    }
    if (s->ndelayed >= IN_MAX_PAIRS) {
        c2s_close(c, XD_STREAM_POLICY_VIOLATION, "too many failed dialback requests");
        return;
    }
    if (!s->delayed)
        s->delayed = xd_calloc(IN_MAX_PAIRS, sizeof *s->delayed);
    in_delayed_t *d = &s->delayed[s->ndelayed++];
    snprintf(d->remote, sizeof d->remote, "%s", remote);
    snprintf(d->local, sizeof d->local, "%s", local);
    d->due_ms = uv_now(c->tcp.loop) + lim.delay_ms;
    d->close = lim.banned;
    if (!s->delay_timer)
        s->delay_timer = xd_timer_new(c->ws->worker, in_delay_fired, c);
    if (s->ndelayed == 1)
        xd_timer_start(s->delay_timer, lim.delay_ms, 0);
}

void
s2s_in_verified(xd_conn_t *c, const char *local, const char *remote, xd_dialback_type type)
{
    s2s_in_t *s = c->rs;
    size_t i = 0;
    while (i < s->npending &&
           (strcmp(s->pending[i].remote, remote) || strcmp(s->pending[i].local, local)))
        i++;
    if (i == s->npending)
        return;
    s->pending[i] = s->pending[--s->npending];
    xd_dialback_t req = { .kind = XD_DIALBACK_RESULT, .type = XD_DIALBACK_REQUEST,
                          .from = remote, .to = local, .key = xd_str_c("x") };
    if (type == XD_DIALBACK_VALID) {
        xd_authlimit_succeeded(remote);
        in_db_reply(c, &req, XD_DIALBACK_VALID, 0);
        in_authorize(c, remote, local, "dialback");
    } else if (type == XD_DIALBACK_INVALID) {
        in_invalid(c, remote, local);
    } else {
        in_db_reply(c, &req, XD_DIALBACK_ERROR, XD_COND_REMOTE_SERVER_NOT_FOUND);
    }
}

/* A stanza (taken) whose 'to' is not a JID, from the remote domain `fd`:
 * answered with jid-malformed (RFC 6120 8.3.3.8) from a local domain this
 * stream authenticated fd for (the stream's own first), back over our
 * outgoing route; never from the malformed address.  A sender that holds
 * no pair here is refused as any other. */
static void
in_malformed_to(xd_conn_t *c, xd_stanza_t *st, const char *fd)
{
    s2s_in_t *s = c->rs;
    const char *local = NULL;
    if (in_has(s->authed, s->nauthed, fd, c->host))
        local = c->host;
    for (size_t i = 0; !local && i < s->nauthed; i++)
        if (!strcmp(s->authed[i].remote, fd))
            local = s->authed[i].local;
    if (!local) {
        xd_stanza_unref(st);
        c2s_close(c, XD_STREAM_INVALID_FROM, "that domain pair is not authenticated here");
        return;
    }
    XD_LOG(&c->log, XD_INFO, "stanza refused", "remote=%s err=jid-malformed", fd);
    xd_stanza_t *reply =
        xd_stanza_error_from(st, XD_COND_JID_MALFORMED, "'to' is not a JID", local);
    xd_stanza_unref(st);
    if (reply)
        xd_route_take(reply);
}

/* A stanza (taken): only for the pairs this stream authenticated. */
static void
in_stanza(xd_conn_t *c, xd_stanza_t *st)
{
    s2s_in_t *s = c->rs;
    const xd_el_t *el = xd_stanza_root(st);
    if (!xd_el_attr(el, "from") || !xd_el_attr(el, "to")) {
        xd_stanza_unref(st);
        c2s_close(c, XD_STREAM_IMPROPER_ADDRESSING, "a stanza needs 'from' and 'to'");
        return;
    }
    /* Parsed here once; the router and the filters reuse them. */
    if (!xd_stanza_from(st)) {
        /* RFC 6120 4.9.3.7: a value that violates the rules for addresses. */
        xd_stanza_unref(st);
        c2s_close(c, XD_STREAM_IMPROPER_ADDRESSING, "'from' is not a JID");
        return;
    }
    /* RFC 7622: relayed as the canonical addresses, so the recipient sees
     * what the router compared ("X@A.EXAMPLE." arrives as "x@a.example"). */
    st = xd_stanza_canonical(st);
    const xd_jid_t *fj = xd_stanza_from(st), *tj = xd_stanza_to(st);
    char fd[S2S_DOMAIN_MAX], td[S2S_DOMAIN_MAX];
    xd_str_t a = xd_jid_domain(fj);
    snprintf(fd, sizeof fd, "%.*s", (int)a.len, a.p);
    if (!tj) {
        in_malformed_to(c, st, fd);
        return;
    }
    xd_str_t b = xd_jid_domain(tj);
    snprintf(td, sizeof td, "%.*s", (int)b.len, b.p);
    if (!in_has(s->authed, s->nauthed, fd, td)) {
        xd_stanza_unref(st);
        c2s_close(c, XD_STREAM_INVALID_FROM, "that domain pair is not authenticated here");
        return;
    }
    if (xd_hook_active(XD_HOOK_S2S_RECEIVE_PACKET)) {
        xd_hook_s2s_packet_t ev = { .local = td, .remote = fd, .st = st };
        xd_hook_run(XD_HOOK_S2S_RECEIVE_PACKET, td, &ev);
        st = ev.st;
        if (!st)
            return; /* a handler took it */
    }
    xd_route_take(st);
}

static void
in_element(xd_conn_t *c, xd_stanza_t *st)
{
    const xd_el_t *el = xd_stanza_root(st);
    const char *name = xd_el_name(el), *ns = xd_el_ns(el);
    if (ns && !strcmp(ns, XD_NS_TLS) && !strcmp(name, "starttls")) {
        c2s_starttls(c, el, true);
    } else if (ns && !strcmp(ns, XD_NS_SASL) && !strcmp(name, "auth")) {
        s2s_conf_t conf;
        s2s_conf(&conf);
        if (conf.require_encryption && !c2s_secure(c))
            c2s_close(c, XD_STREAM_POLICY_VIOLATION, "TLS first");
        else
            in_sasl(c, el);
    } else if (ns && !strcmp(ns, XD_NS_DIALBACK)) {
        in_dialback(c, el);
    } else if (ns && !strcmp(ns, XD_NS_STREAMS) && !strcmp(name, "error")) {
        const xd_el_t *first = xd_el_first_child(el);
        XD_LOG(&c->log, XD_NOTICE, "s2s stream error received", "cond=%s",
               first ? xd_el_name(first) : "?");
    } else if (xd_stanza_kind_of(el) == XD_STANZA_OTHER) {
        c2s_close(c, XD_STREAM_UNSUPPORTED_STANZA_TYPE, NULL);
    } else {
        in_stanza(c, st);
        return; /* taken */
    }
    xd_stanza_unref(st);
}

const xd_conn_role_t xd_s2s_in_role = {
    .name = "s2s-in",
    .content_ns = XD_NS_SERVER,
    .dialback_ns = true,
    .request_cert = true,
    .accepted = in_accepted,
    .stream_open = in_stream_open,
    .element = in_element,
    .closed = in_closed,
};

/*
 * component.c — external components (XEP-0114, version 1.6); see
 * component.h.
 *
 *   component: <stream:stream xmlns='jabber:component:accept' to='comp.example'>
 *   server:    <stream:stream … from='comp.example' id='ID'>      (no version,
 *                                                                  no features)
 *   component: <handshake>hex(SHA-1(ID ‖ secret))</handshake>
 *   server:    <handshake/>                  then stanzas both ways
 *
 * Errors (stream errors, then the stream closes):
 *   header in another namespace                → invalid-namespace;
 *   no 'to', a domain that is a served host, or
 *   one the listener has no secret for         → host-unknown;
 *   anything but <handshake/> before it, or a
 *   wrong digest                               → not-authorized (after the
 *                                                auth_limits delay, if any);
 *   an address banned by auth_limits           → policy-violation;
 *   the domain already has a component         → conflict;
 *   a stanza without 'to' or 'from'            → improper-addressing;
 *   a 'from' that is not a JID                 → improper-addressing;
 *   a 'from' outside the component's domain    → invalid-from;
 *   other first-level elements                 → unsupported-stanza-type.
 * A 'to' that is not a JID gets a jid-malformed stanza error from the
 * server's first host.  'to' and 'from' go on in canonical form (RFC 7622:
 * "svc@GW.EXAMPLE." is delivered as "svc@gw.example").
 *
 * The service route's argument packs the owner worker and the connection
 * id into the pointer value, so nothing has to be freed when the route is
 * removed while the router still holds the old argument (a stanza for a
 * connection that is gone gets service-unavailable from c2s_deliver).
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "s2s/component.h"
#include "auth/authlimit.h"
#include "router/router.h"
#include "stream/conn.h"
#include "xmppd/alloc.h"
#include "xmppd/config.h"
#include "xmppd/err.h"
#include "xmppd/jid.h"
#include "xmppd/log.h"
#include "xmppd/ns.h"
#include "xmppd/service.h"
#include "xmppd/stanza.h"

typedef struct comp_state {
    char *domain;      /* the component's domain (normalised), once its header named it */
    bool routed;       /* the service route for domain is ours */
    xd_timer_t *delay; /* a wrong handshake's answer waits (auth_limits), or NULL */
} comp_state_t;

static uintptr_t
comp_pack(const xd_conn_t *c)
{
    return (uintptr_t)(c->id << 8 | xd_worker_index(c->ws->worker));
}

/* The service route: a stanza for the component's domain. */
static void
comp_service(xd_module_ctx_t *ctx, xd_stanza_t *st, void *arg)
{
    (void)ctx;
    uintptr_t v = (uintptr_t)arg;
    c2s_deliver((unsigned)(v & 0xff), (uint64_t)(v >> 8), st);
}

static void
comp_accepted(xd_conn_t *c)
{
    c->rs = xd_new(comp_state_t);
}

static void
comp_closed(xd_conn_t *c)
{
    comp_state_t *cs = c->rs;
    if (!cs)
        return;
    if (cs->routed) {
        xd_service_remove(cs->domain, comp_service);
        XD_LOG(&c->log, XD_NOTICE, "component disconnected", "domain=%s", cs->domain);
    }
    if (cs->delay)
        xd_timer_free(cs->delay);
    xd_free(cs->domain);
    xd_free(cs);
    c->rs = NULL;
}

static void
comp_stream_open(xd_conn_t *c, const xd_el_t *hdr)
{
    comp_state_t *cs = c->rs;
    if (strcmp(xd_el_name(hdr), "stream") != 0 || !xd_el_ns(hdr) ||
        strcmp(xd_el_ns(hdr), XD_NS_STREAMS) != 0) {
        c2s_close(c, XD_STREAM_INVALID_NAMESPACE, "expected a stream in the streams namespace");
        return;
    }
    const char *dns = xd_xml_parser_stream_ns(c->parser);
    if (!dns || strcmp(dns, XD_NS_COMPONENT) != 0) {
        c2s_close(c, XD_STREAM_INVALID_NAMESPACE,
                  "the default namespace must be jabber:component:accept");
        return;
    }
    const char *to = xd_el_attr(hdr, "to");
    char *dom = NULL;
    if (!to || xd_jid_prep_domain(xd_str_c(to), &dom) != 0) {
        xd_free(dom);
        c2s_close(c, XD_STREAM_HOST_UNKNOWN, "name the component's domain in 'to'");
        return;
    }
    xd_config_t *cfg = xd_config_get();
    bool served = xd_config_is_host(cfg, dom);
    xd_config_unref(cfg);
    /* Answer from the domain asked for, so the error goes where expected. */
    xd_free(c->host);
    c->host = xd_strdup(dom);
    char why[XD_AUTHLIMIT_TEXT_MAX];
    if (xd_authlimit_banned((const struct sockaddr *)&c->peer, why, sizeof why)) {
        XD_LOG(&c->log, XD_INFO, "component refused", "domain=%s reason=auth-ban", dom);
        xd_free(dom);
        c2s_close(c, XD_STREAM_POLICY_VIOLATION, why);
        return;
    }
    if (served || !xd_listener_component_secret(c->listener, dom)) {
        XD_LOG(&c->log, XD_WARN, "component refused", "domain=%s reason=%s", dom,
               served ? "served-host" : "no-secret");
        xd_free(dom);
        c2s_close(c, XD_STREAM_HOST_UNKNOWN, "this domain may not connect as a component");
        return;
    }
    cs->domain = dom;
    xd_log_ctx(&c->log, NULL, "conn=%llu ip=%s component=%s", (unsigned long long)c->id, c->ip,
               dom);
    c2s_send_header_as(c, dom, NULL, true);
    c->state = C2S_OPEN;
}

/* XEP-0114 3: lower-case hex of SHA-1(stream id ‖ secret). */
static bool
comp_digest_ok(const char *sid, const char *secret, const char *given)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char dig[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    bool ok = md && EVP_DigestInit_ex(md, EVP_sha1(), NULL) == 1 &&
              EVP_DigestUpdate(md, sid, strlen(sid)) == 1 &&
              EVP_DigestUpdate(md, secret, strlen(secret)) == 1 &&
              EVP_DigestFinal_ex(md, dig, &n) == 1;
    EVP_MD_CTX_free(md);
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    for (unsigned i = 0; ok && i < n; i++)
        snprintf(hex + 2 * i, 3, "%02x", dig[i]);
    if (!ok || !given || strlen(given) != 2 * (size_t)n)
        return false;
    char low[2 * EVP_MAX_MD_SIZE + 1];
    for (size_t i = 0; i <= 2 * (size_t)n; i++)
        low[i] = (char)((given[i] >= 'A' && given[i] <= 'F') ? given[i] + 32 : given[i]);
    return CRYPTO_memcmp(hex, low, 2 * (size_t)n) == 0;
}

/* The delayed answer to a wrong handshake. */
static void
comp_delay_fired(xd_timer_t *t, void *arg)
{
    (void)t;
    c2s_close(arg, XD_STREAM_NOT_AUTHORIZED, "handshake failed");
}

static void
comp_handshake(xd_conn_t *c, const xd_el_t *el)
{
    comp_state_t *cs = c->rs;
    const char *secret = xd_listener_component_secret(c->listener, cs->domain);
    const char *given = xd_el_text(el);
    if (!secret || !comp_digest_ok(c->sid, secret, given ? given : "")) {
        /* auth_limits: counted for the address and the domain; past
         * delay_after the answer waits, reading nothing meanwhile. */
        xd_authlimit_result_t lim;
        xd_authlimit_failed((const struct sockaddr *)&c->peer, cs->domain, &lim);
        XD_LOG(&c->log, XD_WARN, "component handshake failed",
               "domain=%s addr_failures=%u delay_ms=%llu%s", cs->domain, lim.addr_failures,
               (unsigned long long)lim.delay_ms, lim.banned ? " banned=yes" : "");
        if (lim.delay_ms == 0) {
            c2s_close(c, XD_STREAM_NOT_AUTHORIZED, "handshake failed");
            return;
        }
        c2s_block(c);
        cs->delay = xd_timer_new(c->ws->worker, comp_delay_fired, c);
        xd_timer_start(cs->delay, lim.delay_ms, 0);
        return;
    }
    xd_authlimit_succeeded(cs->domain);
    int rc = xd_service_add(cs->domain, comp_service, (void *)comp_pack(c));
    if (rc != 0) {
        XD_LOG(&c->log, XD_WARN, "component refused", "domain=%s reason=%s", cs->domain,
               rc == XD_EEXIST ? "taken" : xd_strerror(rc));
        c2s_close(c, XD_STREAM_CONFLICT, "this domain is already connected");
        return;
    }
    cs->routed = true;
    c2s_write(c, "<handshake/>", sizeof "<handshake/>" - 1);
    c2s_established(c);
    XD_LOG(&c->log, XD_NOTICE, "component connected", "domain=%s worker=%u", cs->domain,
           xd_worker_index(c->ws->worker));
}

/* A stanza from the component (taken): addressed both ways, from its
 * domain. */
static void
comp_stanza(xd_conn_t *c, xd_stanza_t *st)
{
    comp_state_t *cs = c->rs;
    const xd_el_t *el = xd_stanza_root(st);
    if (!xd_el_attr(el, "from") || !xd_el_attr(el, "to")) {
        xd_stanza_unref(st);
        c2s_close(c, XD_STREAM_IMPROPER_ADDRESSING, "a stanza needs 'from' and 'to'");
        return;
    }
    const xd_jid_t *fj = xd_stanza_from(st); /* kept with the stanza for the router */
    if (!fj) {
        /* RFC 6120 4.9.3.7, as for a missing one. */
        xd_stanza_unref(st);
        c2s_close(c, XD_STREAM_IMPROPER_ADDRESSING, "'from' is not a JID");
        return;
    }
    if (!xd_str_eq_c(xd_jid_domain(fj), cs->domain)) {
        xd_stanza_unref(st);
        c2s_close(c, XD_STREAM_INVALID_FROM, "'from' is not at the component's domain");
        return;
    }
    /* RFC 7622: the addresses go on in canonical form. */
    st = xd_stanza_canonical(st);
    if (!xd_stanza_to(st)) {
        /* RFC 6120 8.3.3.8, answered from the server's first host: never
         * from the malformed address. */
        xd_config_t *cfg = xd_config_get();
        xd_stanza_t *reply = xd_stanza_error_from(st, XD_COND_JID_MALFORMED,
                                                  "'to' is not a JID",
                                                  cfg ? xd_config_default_host(cfg) : NULL);
        if (cfg)
            xd_config_unref(cfg);
        if (reply) {
            c2s_send_stanza(c, reply);
            xd_stanza_unref(reply);
        }
        xd_stanza_unref(st);
        return;
    }
    xd_route_take(st);
}

static void
comp_element(xd_conn_t *c, xd_stanza_t *st)
{
    const xd_el_t *el = xd_stanza_root(st);
    if (!c->established) {
        /* First-level elements in the stream's namespace come with ns NULL. */
        if (!strcmp(xd_el_name(el), "handshake") &&
            (!xd_el_ns(el) || !strcmp(xd_el_ns(el), XD_NS_COMPONENT)))
            comp_handshake(c, el);
        else
            c2s_close(c, XD_STREAM_NOT_AUTHORIZED, "send the handshake first");
        xd_stanza_unref(st);
        return;
    }
    if (xd_stanza_kind_of(el) == XD_STANZA_OTHER) {
        c2s_close(c, XD_STREAM_UNSUPPORTED_STANZA_TYPE, NULL);
        xd_stanza_unref(st);
        return;
    }
    comp_stanza(c, st); /* takes st */
}

const xd_conn_role_t xd_component_role = {
    .name = "component",
    .content_ns = XD_NS_COMPONENT,
    .accepted = comp_accepted,
    .stream_open = comp_stream_open,
    .element = comp_element,
    .closed = comp_closed,
};

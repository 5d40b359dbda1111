/*
 * c2s_sm.c — stream management on client streams (XEP-0198, urn:xmpp:sm:3),
 * acknowledgements without resumption.
 *
 *   bound ─► <enable/> ─► <enabled/>          (resume='true' is answered
 *                                              without resume: not offered yet)
 *   client stanza handled ─► h_in++           <r/> ─► <a h='h_in'/>
 *   stanza delivered ─► queued (smq.h)        every sm_ack_request_every
 *                                             unacknowledged, or
 *                                             sm_ack_request_interval after
 *                                             the first not asked for: <r/>
 *   <a h/> ─► the acknowledged leave the queue; more than was sent:
 *             undefined-condition with <handled-count-too-high/> (XEP-0198 4)
 *   more than sm_max_unacked waiting: policy-violation
 *   the stream ends (closed, broken, kicked) ─► the session ends first, then
 *             each unacknowledged message is routed again to its 'to' (the
 *             account's other sessions, else offline storage: RFC 6121
 *             8.5.3.2.1), an unacknowledged IQ request gets
 *             service-unavailable, presence and errors are dropped.
 *
 * Order (RFC 6120 10.1, xmppd/input.h): <r/> is an element of the stream
 * like a stanza, handled after the work of the stanzas before it is done,
 * so <a h/> never counts a stanza whose effects (an offline store) are not
 * durable.  Owner worker only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stream/c2s_int.h"
#include "core/worker.h"
#include "stream/smq.h"
#include "xmppd/alloc.h"
#include "xmppd/config.h"
#include "xmppd/el.h"
#include "xmppd/log.h"
#include "xmppd/ns.h"
#include "xmppd/route.h"
#include "xmppd/stanza.h"

struct c2s_sm {
    xd_smq_t q;             /* sent, not yet acknowledged */
    uint32_t h_in;          /* client stanzas handled */
    unsigned unrequested;   /* stanzas sent since our last <r/> */
    unsigned request_every; /* sm_ack_request_every (0: never) */
    size_t max_unacked;     /* sm_max_unacked */
    uint64_t interval_ms;   /* sm_ack_request_interval (0: never) */
    xd_timer_t *timer;      /* runs while something unacknowledged was not asked for */
    bool timer_on;          /* ... and is armed */
    bool closing;           /* over sm_max_unacked: the close is posted */
};

bool
c2s_sm_offered(const xd_conn_t *c)
{
    xd_config_t *cfg = xd_config_get();
    const xd_host_conf_t *hc = cfg ? xd_config_host(cfg, c->host) : NULL;
    bool on = hc && hc->stream_management;
    xd_config_unref(cfg);
    return on;
}

static void
c2s_sm_failed(xd_conn_t *c, const char *cond)
{
    char buf[256];
    snprintf(buf, sizeof buf,
             "<failed xmlns='" XD_NS_SM "'><%s xmlns='" XD_NS_STANZAS "'/></failed>", cond);
    c2s_write_str(c, buf);
}

/* Asks the client for an acknowledgement. */
static void
c2s_sm_request(xd_conn_t *c, c2s_sm_t *sm)
{
    sm->unrequested = 0;
    if (sm->timer_on) {
        xd_timer_stop(sm->timer);
        sm->timer_on = false;
    }
    c2s_write_str(c, "<r xmlns='" XD_NS_SM "'/>");
}

/* sm_ack_request_interval passed with stanzas sent and not asked for. */
static void
c2s_sm_timer_fired(xd_timer_t *t, void *arg)
{
    (void)t;
    xd_conn_t *c = arg;
    c2s_sm_t *sm = c2s_of(c) ? c2s_of(c)->sm : NULL;
    if (!sm)
        return;
    sm->timer_on = false;
    if (sm->unrequested && c->state == C2S_OPEN)
        c2s_sm_request(c, sm);
}

const char *
c2s_sm_start(xd_conn_t *c)
{
    c2s_t *s = c2s_of(c);
    if (!s->session || s->sm || !c2s_sm_offered(c))
        /* XEP-0198 3: before binding, twice, or not offered. */
        return "<failed xmlns='" XD_NS_SM "'><unexpected-request xmlns='" XD_NS_STANZAS
               "'/></failed>";
    c2s_sm_t *sm = xd_new(c2s_sm_t);
    xd_smq_init(&sm->q, 0);
    xd_config_t *cfg = xd_config_get();
    const xd_host_conf_t *hc = xd_config_host(cfg, c->host);
    sm->request_every = hc ? (unsigned)hc->sm_ack_request_every : 5;
    sm->max_unacked = hc ? (size_t)hc->sm_max_unacked : 5000;
    sm->interval_ms = hc ? hc->sm_ack_request_interval_ms : 0;
    xd_config_unref(cfg);
    if (sm->interval_ms)
        sm->timer = xd_timer_new(c->ws->worker, c2s_sm_timer_fired, c);
    s->sm = sm;
    XD_LOG(&c->log, XD_INFO, "stream management enabled", "resume=no");
    /* Resumption is not offered: 'resume' is left out of the answer, as
     * XEP-0198 3 allows. */
    return "<enabled xmlns='" XD_NS_SM "'/>";
}

static void
c2s_sm_enable(xd_conn_t *c, const xd_el_t *el)
{
    (void)el;
    c2s_write_str(c, c2s_sm_start(c));
}

static void
c2s_sm_ack(xd_conn_t *c, const xd_el_t *el)
{
    c2s_sm_t *sm = c2s_of(c)->sm;
    const char *hs = xd_el_attr(el, "h");
    char *end = NULL;
    unsigned long long h = hs ? strtoull(hs, &end, 10) : 0;
    if (!hs || end == hs || *end || h > UINT32_MAX) {
        c2s_close(c, XD_STREAM_INVALID_XML, "<a/> needs 'h', a 32-bit count");
        return;
    }
    if (xd_smq_ack(&sm->q, (uint32_t)h) != 0) {
        /* XEP-0198 4: the peer acknowledged more than we sent. */
        char text[160];
        snprintf(text, sizeof text, "h=%llu acknowledges more than the %u stanzas sent", h,
                 (unsigned)xd_smq_sent(&sm->q));
        XD_LOG(&c->log, XD_INFO, "stream management: handled count too high", "h=%llu sent=%u",
               h, (unsigned)xd_smq_sent(&sm->q));
        c2s_close(c, XD_STREAM_UNDEFINED_CONDITION, text);
        return;
    }
}

bool
c2s_sm_element(xd_conn_t *c, const xd_el_t *el)
{
    const char *ns = xd_el_ns(el);
    if (!ns || strcmp(ns, XD_NS_SM) != 0)
        return false;
    c2s_t *s = c2s_of(c);
    const char *name = xd_el_name(el);
    if (!strcmp(name, "enable")) {
        c2s_sm_enable(c, el);
    } else if (!strcmp(name, "resume")) {
        /* No session is kept to resume (yet): XEP-0198 5. */
        c2s_sm_failed(c, s->session ? "unexpected-request" : "item-not-found");
    } else if (!s->sm) {
        /* <r/> and <a/> only once enabled (XEP-0198 4). */
        c2s_close(c, XD_STREAM_UNSUPPORTED_STANZA_TYPE, "stream management is not enabled");
    } else if (!strcmp(name, "r")) {
        char buf[96];
        snprintf(buf, sizeof buf, "<a xmlns='" XD_NS_SM "' h='%u'/>", (unsigned)s->sm->h_in);
        c2s_write_str(c, buf);
    } else if (!strcmp(name, "a")) {
        c2s_sm_ack(c, el);
    } else {
        c2s_close(c, XD_STREAM_UNSUPPORTED_STANZA_TYPE, NULL);
    }
    return true;
}

void
c2s_sm_handled(xd_conn_t *c)
{
    c2s_sm_t *sm = c2s_of(c)->sm;
    if (sm)
        sm->h_in++;
}

void
c2s_sm_sent(xd_conn_t *c, const xd_stanza_t *st)
{
    c2s_sm_t *sm = c2s_of(c)->sm;
    if (!sm)
        return;
    xd_smq_push(&sm->q, st);
    if (sm->q.len > sm->max_unacked) {
        if (!sm->closing) {
            /* Not here: the caller is delivering (a CSI flush may still be
             * walking this session); the close ends the session. */
            sm->closing = true;
            XD_LOG(&c->log, XD_INFO, "stream management: too many unacknowledged",
                   "count=%zu", sm->q.len);
            c2s_post_close(xd_worker_index(c->ws->worker), c->id, XD_STREAM_POLICY_VIOLATION,
                           "too many unacknowledged stanzas");
        }
        return;
    }
    sm->unrequested++;
    if (sm->request_every && sm->unrequested >= sm->request_every) {
        c2s_sm_request(c, sm);
    } else if (sm->timer && !sm->timer_on) {
        /* Asked for at the latest this long after the first one since. */
        xd_timer_start(sm->timer, sm->interval_ms, 0);
        sm->timer_on = true;
    }
}

/* What becomes of one unacknowledged stanza when the stream is gone. */
static void
c2s_sm_reroute(xd_stanza_t *st)
{
    const xd_el_t *el = xd_stanza_root(st);
    const char *type = xd_el_attr(el, "type");
    switch (xd_stanza_kind_of(el)) {
    case XD_STANZA_MESSAGE:
        if (type && (!strcmp(type, "error") || !strcmp(type, "groupchat") ||
                     !strcmp(type, "headline"))) {
            xd_stanza_unref(st);
            return;
        }
        /* To the full JID that is gone now: the account's other sessions or
         * offline storage take it (RFC 6121 8.5.3.2.1). */
        xd_route_take(st);
        return;
    case XD_STANZA_IQ:
        if (xd_iq_is_request(el))
            xd_route_error(st, XD_COND_SERVICE_UNAVAILABLE, NULL);
        xd_stanza_unref(st);
        return;
    default:
        xd_stanza_unref(st); /* presence: the contact's next one supersedes it */
        return;
    }
}

void
c2s_sm_end(xd_conn_t *c)
{
    c2s_t *s = c2s_of(c);
    c2s_sm_t *sm = s ? s->sm : NULL;
    if (!sm)
        return;
    s->sm = NULL;
    if (sm->q.len)
        XD_LOG(&c->log, XD_INFO, "stream management: unacknowledged stanzas routed again",
               "count=%zu", sm->q.len);
    xd_stanza_t *st;
    while ((st = xd_smq_take(&sm->q)) != NULL)
        c2s_sm_reroute(st);
    xd_smq_clear(&sm->q);
    if (sm->timer)
        xd_timer_free(sm->timer);
    xd_free(sm);
}

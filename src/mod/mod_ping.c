/*
 * mod_ping.c — XMPP Ping (XEP-0199): mod_ping.
 *
 * Runs on every host (XD_MODULE_ALWAYS): pings to the server and to an
 * account's bare JID are answered with an empty result (XEP-0199 3, 4.3).
 * With `send_pings`, the server pings clients that have been silent for
 * `ping_interval` (XEP-0199 4.2): once a second every worker looks at the
 * sessions it owns (TICK); any input answers the ping; no input within
 * `ping_ack_timeout` closes the stream when `timeout_action` is kill.
 *
 * Per session, a slot holds when the unanswered ping went out (0: none).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/module.h"
#include "xmppd/ns.h"
#include "xmppd/opt.h"
#include "xmppd/session.h"
#include "xmppd/stanza.h"

typedef struct ping_conf {
    bool send_pings;          /* ping silent clients */
    uint64_t interval_ms;     /* silence before a ping */
    uint64_t ack_timeout_ms;  /* time to answer */
    int kill;                 /* 1: close a client that does not answer */
} ping_conf_t;

static const xd_opt_enum_t ping_actions[] = {
    { "none", 0 },
    { "kill", 1 },
    { NULL, 0 },
};

#define P_ ping_conf_t
static const xd_opt_t ping_opts[] = {
    XD_OPT_BOOL("send_pings", P_, send_pings, "false",
                "Ping clients that have been silent for `ping_interval` (XEP-0199 4.2)."),
    XD_OPT_DURATION("ping_interval", P_, interval_ms, "60s",
                    "Silence after which a client is pinged."),
    XD_OPT_DURATION("ping_ack_timeout", P_, ack_timeout_ms, "32s",
                    "How long a pinged client has to show it is alive (any input counts)."),
    XD_OPT_ENUM("timeout_action", P_, kill, "none", ping_actions,
                "What happens to a client that does not answer: `none` or `kill` (close the "
                "stream with connection-timeout)."),
    XD_OPT_END,
};
#undef P_

static int ping_slot = -1; /* per session: loop time of the unanswered ping + 1, or 0 */

static xd_stanza_t *
ping_iq(const xd_iq_req_t *req)
{
    return xd_iq_result(req->iq);
}

typedef struct ping_sweep {
    const ping_conf_t *conf; /* the host's options */
    uint64_t now;            /* the loop's clock */
} ping_sweep_t;

static void
ping_one(void *arg, xd_session_t *s)
{
    const ping_sweep_t *w = arg;
    if (xd_session_detached(s)) {
        /* Its connection broke already; stream management keeps it for a
         * resume, and its own timeout ends it. */
        xd_session_slot_set(s, ping_slot, NULL);
        return;
    }
    uint64_t idle = xd_session_idle_ms(s);
    uintptr_t sent = (uintptr_t)xd_session_slot_get(s, ping_slot); /* time + 1 */
    if (sent) {
        uint64_t since = w->now - (uint64_t)(sent - 1);
        if (idle <= since) {
            /* It said something: alive.  Input in the millisecond of the
             * ping (the loop's clock is read once a turn, so a prompt
             * answer can carry the ping's own time) counts: a silent
             * client's last input is a whole interval older. */
            xd_session_slot_set(s, ping_slot, NULL);
        } else {
            if (w->conf->kill && since >= w->conf->ack_timeout_ms) {
                xd_session_ref_t ref = xd_session_ref(s);
                xd_session_close(&ref, XD_STREAM_CONNECTION_TIMEOUT, "no answer to ping");
            }
            return;
        }
    }
    if (idle < w->conf->interval_ms)
        return;
    /* Built, not printed: a resource may hold quotes. */
    char id[40];
    snprintf(id, sizeof id, "xd-ping-%llu", (unsigned long long)w->now);
    xd_el_t *iq = xd_el_new("iq", NULL);
    xd_el_set_attr(iq, "type", "get");
    xd_el_set_attr(iq, "id", id);
    xd_el_set_attr(iq, "from", xd_session_host(s));
    xd_el_set_attr(iq, "to", xd_jid_full_str(xd_session_jid(s)).p);
    xd_el_add_child(iq, "ping", XD_NS_PING);
    xd_session_ref_t ref = xd_session_ref(s);
    xd_session_send_take(&ref, xd_el_freeze(iq));
    xd_session_slot_set(s, ping_slot, (void *)(uintptr_t)(w->now + 1));
}

/* TICK: the worker's sessions of this host. */
static int
ping_tick(xd_module_ctx_t *ctx, xd_hook_tick_t *ev, void *arg)
{
    (void)arg;
    const ping_conf_t *conf = xd_module_opts(ctx);
    if (!conf->send_pings)
        return XD_HOOK_OK;
    ping_sweep_t w = { conf, ev->now_ms };
    xd_session_foreach_local(xd_module_host(ctx), ping_one, &w);
    return XD_HOOK_OK;
}

static int
ping_start(xd_module_ctx_t *ctx)
{
    if (ping_slot < 0)
        ping_slot = xd_session_slot_new(NULL); /* start runs on one thread at a time */
    if (ping_slot < 0)
        return xd_module_fail(ctx, ping_slot, "no session slot left");
    int rc = xd_module_iq(ctx, XD_IQ_HOST, XD_NS_PING, XD_IQ_INLINE, ping_iq, NULL);
    if (rc == 0)
        rc = xd_module_iq(ctx, XD_IQ_USER, XD_NS_PING, XD_IQ_INLINE, ping_iq, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_TICK, XD_HOOK_PRIO_DEFAULT, ping_tick, NULL);
    if (rc != 0)
        return xd_module_fail(ctx, rc, "cannot register: %s", xd_strerror(rc));
    return 0;
}

const xd_module_t xd_mod_ping = {
    .abi = XD_MODULE_ABI,
    .name = "mod_ping",
    .doc = "XMPP Ping (XEP-0199): answers pings; the options make the server ping silent clients",
    .opts = ping_opts,
    .opts_size = sizeof(ping_conf_t),
    .flags = XD_MODULE_ALWAYS,
    .start = ping_start,
};

/*
 * roster_sub.c — RFC 6121 Appendix A as tables; see roster_sub.h.
 *
 * The nine states of A.1 are numbered 0..8 in the order of the RFC's
 * tables; each event has a row "new state" (-1 = no state change) and, for
 * inbound events, "deliver?".  Pre-approval (3.4) is applied on top.
 */
#include <string.h>

#include "roster_sub.h"

enum { S_NONE, S_NONE_PO, S_NONE_PI, S_NONE_POPI, S_TO, S_TO_PI, S_FROM, S_FROM_PO, S_BOTH,
       S_COUNT };

#define NC (-1) /* no state change */

/* A.2 and A.3: the resulting state per existing state. */
static const signed char next_state[MOD_ROSTER_EVENT_COUNT][S_COUNT] = {
    /* A.2.1 outbound subscribe */
    [MOD_ROSTER_OUT_SUBSCRIBE] = { S_NONE_PO, NC, S_NONE_POPI, NC, NC, NC, S_FROM_PO, NC, NC },
    /* A.2.2 outbound unsubscribe */
    [MOD_ROSTER_OUT_UNSUBSCRIBE] = { NC, S_NONE, NC, S_NONE_PI, S_NONE, S_NONE_PI, NC, S_FROM,
                                     S_FROM },
    /* A.2.3 outbound subscribed */
    [MOD_ROSTER_OUT_SUBSCRIBED] = { NC, NC, S_FROM, S_FROM_PO, NC, S_BOTH, NC, NC, NC },
    /* A.2.4 outbound unsubscribed */
    [MOD_ROSTER_OUT_UNSUBSCRIBED] = { NC, NC, S_NONE, S_NONE_PO, NC, S_TO, S_NONE, S_NONE_PO,
                                      S_TO },
    /* A.3.1 inbound subscribe */
    [MOD_ROSTER_IN_SUBSCRIBE] = { S_NONE_PI, S_NONE_POPI, NC, NC, S_TO_PI, NC, NC, NC, NC },
    /* A.3.2 inbound unsubscribe */
    [MOD_ROSTER_IN_UNSUBSCRIBE] = { NC, NC, S_NONE, S_NONE_PO, NC, S_TO, S_NONE, S_NONE_PO,
                                    S_TO },
    /* A.3.3 inbound subscribed */
    [MOD_ROSTER_IN_SUBSCRIBED] = { NC, S_TO, NC, S_TO_PI, NC, NC, NC, S_BOTH, NC },
    /* A.3.4 inbound unsubscribed */
    [MOD_ROSTER_IN_UNSUBSCRIBED] = { NC, S_NONE, NC, S_NONE_PI, S_NONE, S_NONE_PI, NC, S_FROM,
                                     S_FROM },
};

/* A.3: "Deliver?" per existing state (inbound rows only). */
static const bool deliver[MOD_ROSTER_EVENT_COUNT][S_COUNT] = {
    [MOD_ROSTER_IN_SUBSCRIBE] = { 1, 1, 0, 0, 1, 0, 0, 0, 0 },
    [MOD_ROSTER_IN_UNSUBSCRIBE] = { 0, 0, 1, 1, 0, 1, 1, 1, 1 },
    [MOD_ROSTER_IN_SUBSCRIBED] = { 0, 1, 0, 1, 0, 0, 0, 1, 0 },
    [MOD_ROSTER_IN_UNSUBSCRIBED] = { 0, 1, 0, 1, 1, 1, 0, 1, 1 },
};

static int
state_index(mod_roster_state_t s)
{
    switch (s.sub) {
    case MOD_ROSTER_SUB_NONE:
        return s.ask ? (s.pending_in ? S_NONE_POPI : S_NONE_PO) : (s.pending_in ? S_NONE_PI : S_NONE);
    case MOD_ROSTER_SUB_TO:
        return s.pending_in ? S_TO_PI : S_TO;
    case MOD_ROSTER_SUB_FROM:
        return s.ask ? S_FROM_PO : S_FROM;
    default:
        return S_BOTH;
    }
}

static mod_roster_state_t
state_of(int idx, bool approved)
{
    static const mod_roster_state_t tab[S_COUNT] = {
        [S_NONE] = { MOD_ROSTER_SUB_NONE, false, false, false },
        [S_NONE_PO] = { MOD_ROSTER_SUB_NONE, true, false, false },
        [S_NONE_PI] = { MOD_ROSTER_SUB_NONE, false, true, false },
        [S_NONE_POPI] = { MOD_ROSTER_SUB_NONE, true, true, false },
        [S_TO] = { MOD_ROSTER_SUB_TO, false, false, false },
        [S_TO_PI] = { MOD_ROSTER_SUB_TO, false, true, false },
        [S_FROM] = { MOD_ROSTER_SUB_FROM, false, false, false },
        [S_FROM_PO] = { MOD_ROSTER_SUB_FROM, true, false, false },
        [S_BOTH] = { MOD_ROSTER_SUB_BOTH, false, false, false },
    };
    mod_roster_state_t s = tab[idx];
    /* Pre-approval only means something while the contact has no 'from'. */
    s.approved = approved && !(s.sub & MOD_ROSTER_SUB_FROM);
    return s;
}

static bool
state_eq(mod_roster_state_t a, mod_roster_state_t b)
{
    return a.sub == b.sub && a.ask == b.ask && a.pending_in == b.pending_in &&
           a.approved == b.approved;
}

mod_roster_sub_result_t
mod_roster_sub_apply(mod_roster_state_t old, mod_roster_event ev)
{
    int cur = state_index(old);
    mod_roster_state_t norm = state_of(cur, old.approved);
    mod_roster_sub_result_t r = { .state = norm };
    if ((unsigned)ev >= MOD_ROSTER_EVENT_COUNT) {
        r.state = old;
        return r;
    }
    int nx = next_state[ev][cur];
    bool approved = norm.approved;

    switch (ev) {
    case MOD_ROSTER_OUT_SUBSCRIBE:
    case MOD_ROSTER_OUT_UNSUBSCRIBE:
    case MOD_ROSTER_OUT_UNSUBSCRIBED:
        /* 3.1.2, 3.3.2, 3.2.2: the stanza is routed to the contact whatever
         * the state; unsubscribed also cancels a pre-approval (3.4). */
        r.forward = true;
        if (ev == MOD_ROSTER_OUT_UNSUBSCRIBED)
            approved = false;
        break;
    case MOD_ROSTER_OUT_SUBSCRIBED:
        if (nx != NC) {
            r.forward = true; /* 3.1.5: approving a pending request */
        } else if (cur == S_NONE || cur == S_NONE_PO || cur == S_TO) {
            approved = true; /* 3.4: noted as pre-approval, not routed */
        }
        break;
    case MOD_ROSTER_IN_SUBSCRIBE:
        if (approved && (cur == S_NONE || cur == S_NONE_PO || cur == S_TO)) {
            /* 3.4: pre-approved: the server approves, the user never sees it. */
            nx = cur == S_NONE ? S_FROM : cur == S_NONE_PO ? S_FROM_PO : S_BOTH;
            approved = false;
            r.reply = MOD_ROSTER_REPLY_SUBSCRIBED;
        } else {
            r.forward = deliver[ev][cur];
            /* A.3.1 (*) and 3.1.3: the contact already has a subscription. */
            if (cur == S_FROM || cur == S_FROM_PO || cur == S_BOTH)
                r.reply = MOD_ROSTER_REPLY_SUBSCRIBED;
        }
        break;
    default:
        r.forward = deliver[ev][cur];
        break;
    }
    r.state = state_of(nx == NC ? cur : nx, approved);
    r.changed = !state_eq(r.state, old);
    r.push = r.state.sub != norm.sub || r.state.ask != norm.ask ||
             r.state.approved != norm.approved;
    return r;
}

static const char *const ev_types[4] = { "subscribe", "unsubscribe", "subscribed", "unsubscribed" };

const char *
mod_roster_event_type(mod_roster_event ev)
{
    return (unsigned)ev < MOD_ROSTER_EVENT_COUNT ? ev_types[ev % 4] : NULL;
}

int
mod_roster_event_of(const char *type, bool inbound)
{
    for (int i = 0; type && i < 4; i++)
        if (strcmp(type, ev_types[i]) == 0)
            return i + (inbound ? 4 : 0);
    return -1;
}

/*
 * roster_sub.h — the presence-subscription state machine of RFC 6121
 * section 3 and Appendix A, as a pure function (no storage, no I/O).
 *
 * The state of one roster item, seen from the user:
 *
 *   sub          none / to / from / both (RFC 6121 2.1.2.5)
 *   ask          "Pending Out": the user sent subscribe, no answer yet
 *   pending_in   "Pending In": the contact sent subscribe, no answer yet
 *   approved     pre-approval of the contact's future subscribe (3.4)
 *
 * The nine states of Appendix A.1 are (sub, ask, pending_in) with ask only
 * for none/from and pending_in only for none/to; mod_roster_sub_apply keeps
 * that invariant.  An event is a subscription presence the user sends
 * (outbound, A.2) or that arrives for the user (inbound, A.3).
 *
 * The result says what the caller does: the new state, whether the stanza
 * goes on (outbound: routed to the contact; inbound: delivered to the user's
 * available resources), whether a roster push is due (a visible attribute —
 * subscription, ask, approved — changed), and whether the server answers the
 * contact itself (auto-reply 'subscribed', 3.1.3 and 3.4).
 */
#ifndef XMPPD_MOD_ROSTER_SUB_H
#define XMPPD_MOD_ROSTER_SUB_H

#include <stdbool.h>

#include "xmppd/roster.h"

/* RFC 6121 2.1.2.5, as two bits (include/xmppd/roster.h). */
typedef xd_roster_sub mod_roster_subscr;
#define MOD_ROSTER_SUB_NONE XD_ROSTER_SUB_NONE
#define MOD_ROSTER_SUB_TO XD_ROSTER_SUB_TO
#define MOD_ROSTER_SUB_FROM XD_ROSTER_SUB_FROM
#define MOD_ROSTER_SUB_BOTH XD_ROSTER_SUB_BOTH

/* One item's subscription state. */
typedef struct mod_roster_state {
    mod_roster_subscr sub; /* subscription attribute */
    bool ask;              /* Pending Out (ask='subscribe') */
    bool pending_in;       /* Pending In (not shown in the roster) */
    bool approved;         /* pre-approved (approved='true', RFC 6121 3.4) */
} mod_roster_state_t;

/* Subscription presence types, by direction. */
typedef enum mod_roster_event {
    MOD_ROSTER_OUT_SUBSCRIBE,    /* the user sends subscribe (A.2.1) */
    MOD_ROSTER_OUT_UNSUBSCRIBE,  /* the user sends unsubscribe (A.2.2) */
    MOD_ROSTER_OUT_SUBSCRIBED,   /* the user approves / pre-approves (A.2.3, 3.4) */
    MOD_ROSTER_OUT_UNSUBSCRIBED, /* the user denies / cancels (A.2.4) */
    MOD_ROSTER_IN_SUBSCRIBE,     /* the contact asks (A.3.1) */
    MOD_ROSTER_IN_UNSUBSCRIBE,   /* the contact unsubscribes (A.3.2) */
    MOD_ROSTER_IN_SUBSCRIBED,    /* the contact approves (A.3.3) */
    MOD_ROSTER_IN_UNSUBSCRIBED,  /* the contact denies / cancels (A.3.4) */
    MOD_ROSTER_EVENT_COUNT
} mod_roster_event;

/* What the server answers the contact on the user's behalf. */
typedef enum mod_roster_reply {
    MOD_ROSTER_REPLY_NONE = 0,   /* nothing */
    MOD_ROSTER_REPLY_SUBSCRIBED, /* <presence type='subscribed'/> to the contact */
} mod_roster_reply;

/* The outcome of one event. */
typedef struct mod_roster_sub_result {
    mod_roster_state_t state; /* the new state (== old when nothing changed) */
    bool changed;             /* any field of state changed (store it) */
    bool forward;             /* outbound: route to the contact; inbound: deliver to the user */
    bool push;                /* a visible attribute changed: roster push */
    mod_roster_reply reply;   /* auto-reply to the contact */
} mod_roster_sub_result_t;

/* Applies `ev` to `old` (RFC 6121 Appendix A, with 3.4 pre-approval).
 * Pure and total: an out-of-range event leaves the state and does nothing. */
mod_roster_sub_result_t mod_roster_sub_apply(mod_roster_state_t old, mod_roster_event ev);

/* "subscribe", … for outbound and inbound alike; -1/NULL when unknown.
 * mod_roster_event_of("subscribed", true) == MOD_ROSTER_IN_SUBSCRIBED. */
const char *mod_roster_event_type(mod_roster_event ev);
int mod_roster_event_of(const char *type, bool inbound);

#endif

/*
 * roster.h — the roster as other modules see it (public module API;
 * RFC 6121 2, 3).  mod_roster keeps rosters; anything else (privacy lists,
 * last activity, shared roster groups, MUC, pubsub access models) reads
 * them through the ROSTER_* hooks (hooks.h), whose payloads use these
 * types.  Everything here is plain data, lent for the call it is passed to.
 */
#ifndef XMPPD_ROSTER_H
#define XMPPD_ROSTER_H

#include <stdbool.h>
#include <stddef.h>

/* RFC 6121 2.1.2.5, as two bits: to = 1, from = 2. */
typedef enum xd_roster_sub {
    XD_ROSTER_SUB_NONE = 0, /* neither direction */
    XD_ROSTER_SUB_TO = 1,   /* the user receives the contact's presence */
    XD_ROSTER_SUB_FROM = 2, /* the contact receives the user's presence */
    XD_ROSTER_SUB_BOTH = 3, /* to | from */
} xd_roster_sub;

/* One roster item, lent. */
typedef struct xd_roster_view {
    const char *jid;            /* the contact's bare JID */
    const char *name;           /* its handle, or NULL */
    xd_roster_sub sub;          /* subscription */
    bool ask;                   /* Pending Out (ask='subscribe') */
    bool pending_in;            /* Pending In */
    bool in_roster;             /* false: only a pending-in request is remembered, or removed */
    const char *const *groups;  /* its groups, sorted bytewise */
    size_t ngroups;             /* how many */
} xd_roster_view_t;

/* "none", "to", "from", "both"; NULL out of range. */
const char *xd_roster_sub_name(xd_roster_sub s);

/* The value of "none", "to", "from" or "both"; -1 for anything else. */
int xd_roster_sub_parse(const char *s);

#endif

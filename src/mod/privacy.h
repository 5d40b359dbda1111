/*
 * privacy.h — the one engine behind privacy lists (XEP-0016, mod_privacy)
 * and the blocking command (XEP-0191, mod_blocking): the rules, their
 * in-memory store, their storage, and their enforcement on routing
 * (privacy_*.c; privacy_int.h lists the parts and what they share).
 *
 * ---- The data ---------------------------------------------------------------------------------
 *
 * Per account (bare JID):
 *
 *   lists     named privacy lists; each an ordered set of items
 *               type     jid | group | subscription | none (the fall-through item)
 *               value    a normalised JID, a roster group, none|to|from|both
 *               action   allow | deny
 *               order    unsignedInt, unique in the list; items are kept sorted by it
 *               kinds    <message/> <iq/> <presence-in/> <presence-out/>, or none
 *                        listed = every stanza (also those of no kind: outgoing
 *                        messages and IQs, subscription presence, probes)
 *   default   the name of the default list, or none
 *   sessions  per bound session (full JID + stream id): its active list, and
 *             whether it asked for privacy (gets list pushes) or for the
 *             blocklist (gets XEP-0191 pushes)
 *   roster    for accounts with a group or subscription item in any list: each
 *             contact's subscription and groups, a copy of what mod_roster
 *             stores (see "Roster" below)
 *
 * ---- Evaluation (XEP-0016 2.2 business rules) -------------------------------------------------
 *
 * The list that applies to a session is its active list if it has one,
 * else the account's default list; with neither, everything is allowed.
 * Items are tried in ascending 'order'; the first that matches the other
 * party AND the stanza's kind decides; no match allows.  A jid item
 * matches, as XEP-0016 2.1 lists them: user@domain/resource only that
 * resource, user@domain any of its resources, domain/resource only that,
 * domain the domain and every JID at it (not its subdomains: as XEP-0191
 * 5 and ejabberd).  A group item matches contacts in that roster group;
 * a subscription item contacts with that subscription, 'none' also
 * everyone not in the roster.  Never filtered: stanzas between two
 * resources of one account, and stanzas between an account and its own
 * server's domain JID (as ejabberd).
 *
 * The kind of a stanza (xd_privacy_kind_of): incoming to the user —
 * message, iq, presence-in (presence without type or 'unavailable'), other
 * presence is OTHER; outgoing from the user — presence-out (the same
 * presences), everything else OTHER.  OTHER is matched only by items
 * without kinds ("block all communication", XEP-0016 2.13).
 *
 * ---- XEP-0191 is a view of the default list (XEP-0191 6, as ejabberd) -----------------------
 *
 *   blocklist   the jid items of the default list with action deny and no
 *               kinds ("block items"), in list order, each value once;
 *               none without a default list;
 *   block J…    the J not already in the blocklist become block items in
 *               front of the default list (orders below its first item;
 *               the others' orders are shifted up when there is no room),
 *               in the order given; without a default list one named
 *               "Blocked contacts" is created (or extended, when a list of
 *               that name exists) and made the default;
 *   unblock J…  removes the block items with those values (an allow or a
 *               narrower item for the same JID stays); unblock with no
 *               items removes every block item.  An emptied list stays.
 * A deny decided by a block item of the default list is a "blocked" deny:
 * an outgoing stanza refused by it carries <blocked
 * xmlns='urn:xmpp:blocking:errors'/> in its not-acceptable error.
 *
 * ---- Enforcement (one XD_HOOK_FILTER_PACKET handler, priority 30) ---------------------------
 *
 * Added for every host while the engine runs on any (before mod_presence's
 * 40, so privacy is the first delivery rule, XEP-0016 2.2 rule 4).  For a
 * stanza from an account here, the sender's session list (outgoing rules);
 * then for a stanza to an account here, the recipient's (incoming rules):
 *   to a full JID:   that session's list;
 *   to the bare JID: IQs and, when no session of the account has an active
 *                    list, everything: the default list (the account as a
 *                    whole, XEP-0016 2.2 rule 2); otherwise each session
 *                    the router would deliver to decides for itself: if
 *                    they disagree the engine delivers to those that allow
 *                    (no carbons then) and the stanza goes no further.
 * Refused (XEP-0016 2.14):
 *   incoming  presence dropped silently; message → service-unavailable;
 *             IQ get/set → service-unavailable; errors and IQ results dropped;
 *   outgoing  presence notifications dropped silently (a broadcast cannot
 *             be told from directed presence here, and a storm of errors
 *             for every presence change helps nobody); every other stanza
 *             → not-acceptable to the sender (+ <blocked/> when a block
 *             item decided).
 * Stanzas the engine routes itself (bounces, presence after a change) are
 * not filtered again: a thread-local flag is set around their xd_route.
 *
 * Presence after a change (XEP-0016 2.11, XEP-0191 3.3/3.4): every write
 * below compares, for each available session of the account and each
 * roster contact with subscription from/both (plus full-JID jid items of
 * those contacts), whether presence-out was allowed before and after: a
 * newly denied contact gets unavailable from that session, a newly
 * allowed one the session's current presence.
 *
 * ---- Roster ---------------------------------------------------------------------------------
 *
 * mod_roster keeps rosters in storage only, and the filter must not block.
 * So the engine keeps a copy of an account's roster (subscription and
 * groups per contact) exactly while one of its lists has a group or
 * subscription item: read at start and when such a list is set (both off
 * the loops, through the ROSTER_GET hook), and kept current by the
 * ROSTER_CHANGED hook, which the roster runs after each committed change.
 *
 * ---- Threads, memory --------------------------------------------------------------------------
 *
 * The store is sharded by bare JID (privacy_int.h): each shard has an
 * rwlock and a mutex for writers.  The filter and the read functions take
 * the shard lock of the account they concern, shared (for a stanza: the
 * sender's, then the recipient's, one at a time), changes exclusive,
 * briefly; no pointer into the store escapes it.  An account without
 * privacy state costs the filter no lock: a lock-free count per hash slot
 * says it has none.  Writes (the xd_privacy_set_* / block / unblock
 * functions) block on storage: call them on the blocking pool
 * (XD_IQ_PARALLEL handlers); the writes to one account are serialised by
 * the writers' mutex of its shard, so that read-modify-write of its lists
 * is atomic.  Storage is committed before memory changes and before any
 * push.  Results are copies the caller frees (xd_privacy_list_clear,
 * xd_privacy_view_clear).
 *
 * ---- Storage (component "privacy"; main.c through either module) ---------------------------
 *
 *   privacy_list(host, username, name, created_at)
 *   privacy_item(host, username, name, ord, type, value, action, kinds)
 *                 type '' | 'jid' | 'group' | 'subscription'; value '' for none;
 *                 action 'allow' | 'deny'; kinds the XD_PRIVACY_* bits, 0 = all
 *   privacy_default(host, username, name)
 * Items and the default go with their list (ON DELETE CASCADE).  Component
 * "mod_blocking" version 2 moves the rows of its old `blocklist` table into
 * these, as a default list "Blocked contacts" per account with the blocked
 * JIDs as block items in the order they were blocked, and drops the table.
 * Account removal deletes the account's lists (and memory).
 */
#ifndef XMPPD_MOD_PRIVACY_H
#define XMPPD_MOD_PRIVACY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xmppd/el.h"
#include "xmppd/jid.h"
#include "xmppd/module.h"
#include "xmppd/roster.h"
#include "xmppd/storage.h"

#define XD_PRIVACY_BLOCKED_LIST "Blocked contacts" /* the default list a block creates */
#define XD_PRIVACY_NAME_MAX 1023                    /* bytes of a list name or item value */

/* ---- rules (pure data; the matcher) ------------------------------------------------------- */

/* An item's 'type'. */
typedef enum xd_privacy_type {
    XD_PRIVACY_ANY = 0,      /* no type: the fall-through item, matches everyone */
    XD_PRIVACY_JID,          /* value: a normalised JID */
    XD_PRIVACY_GROUP,        /* value: a roster group */
    XD_PRIVACY_SUBSCRIPTION, /* value: "none", "to", "from" or "both" */
} xd_privacy_type;

/* A stanza's kind for the rules, and the bits of an item's kinds. */
typedef enum xd_privacy_kind {
    XD_PRIVACY_OTHER = 0,        /* no kind: matched only by items without kinds */
    XD_PRIVACY_MESSAGE = 1,      /* <message/>: incoming messages */
    XD_PRIVACY_IQ = 2,           /* <iq/>: incoming IQs */
    XD_PRIVACY_PRESENCE_IN = 4,  /* <presence-in/>: incoming presence notifications */
    XD_PRIVACY_PRESENCE_OUT = 8, /* <presence-out/>: outgoing presence notifications */
} xd_privacy_kind;

/* One rule.  Owned by its list. */
typedef struct xd_privacy_item {
    xd_privacy_type type; /* what value is */
    char *value;          /* normalised JID / group / subscription name; NULL for ANY */
    bool deny;            /* action: deny (else allow) */
    uint32_t order;       /* position; unique in the list */
    unsigned kinds;       /* OR of XD_PRIVACY_MESSAGE … PRESENCE_OUT; 0 = every stanza */
} xd_privacy_item_t;

/* A named list; items sorted by order.  Owned by whoever filled it. */
typedef struct xd_privacy_list {
    char *name;               /* the list's name */
    xd_privacy_item_t *items; /* ascending order */
    size_t n;                 /* how many */
} xd_privacy_list_t;

/* Frees what l holds and zeroes it.  NULL is a no-op. */
void xd_privacy_list_clear(xd_privacy_list_t *l);
/* A deep copy of src into *dst (which is overwritten, not cleared). */
void xd_privacy_list_copy(xd_privacy_list_t *dst, const xd_privacy_list_t *src);
/* Appends a copy of it (value copied) to l, unsorted. */
void xd_privacy_list_add(xd_privacy_list_t *l, const xd_privacy_item_t *it);
/* Sorts l's items by order.  XD_EEXIST when two share an order (XEP-0016
 * 2.1: bad-request), l then sorted all the same. */
int xd_privacy_list_sort(xd_privacy_list_t *l);
/* True when some item needs the roster (group or subscription). */
bool xd_privacy_list_needs_roster(const xd_privacy_list_t *l);

/* The other party as the rules see it. */
typedef struct xd_privacy_peer {
    const xd_jid_t *jid;       /* its JID as in the stanza (full or bare) */
    int sub;                   /* xd_roster_sub of its roster item; NONE when not in it */
    const char *const *groups; /* its roster groups (lent) */
    size_t ngroups;            /* how many */
} xd_privacy_peer_t;

/* Does the jid item value `item` (a normalised JID) match j?  (XEP-0016 2.1.) */
bool xd_privacy_jid_matches(const char *item, const xd_jid_t *j);

/* Does item it match peer p for a stanza of kind k? */
bool xd_privacy_item_matches(const xd_privacy_item_t *it, const xd_privacy_peer_t *p,
                             xd_privacy_kind k);

/* The item of l that decides for p and k (the first match in order), or
 * NULL: no match, allowed.  l NULL = no list = NULL. */
const xd_privacy_item_t *xd_privacy_decide(const xd_privacy_list_t *l,
                                           const xd_privacy_peer_t *p, xd_privacy_kind k);

/* True for a block item: type jid, deny, no kinds (XEP-0191 6). */
bool xd_privacy_is_block_item(const xd_privacy_item_t *it);

/* The kind of stanza root el, seen incoming to the user (outgoing false)
 * or outgoing from the user. */
xd_privacy_kind xd_privacy_kind_of(const xd_el_t *el, bool outgoing);

/* ---- XML (mod_privacy.c) ----------------------------------------------------------------- */

/* Parses <list name='…'>items</list> (XEP-0016 2.1) into *out, items
 * sorted by order, jid values normalised.  XD_EINVAL (bad-request) with
 * *why (static English text) for: no name or a name over
 * XD_PRIVACY_NAME_MAX bytes, a child that is not <item/>, an action other
 * than allow/deny, an order that is not an unsignedInt, an unknown type, a
 * type without a value, a jid value that is not a JID, a subscription
 * other than none/to/from/both, an unknown child of an item, two items
 * with one order.  An item without a type ignores its value.  On error
 * *out is zeroed. */
int xd_privacy_list_parse(const xd_el_t *list, xd_privacy_list_t *out, const char **why);

/* Appends <list name='…'> with l's items (as XEP-0016 2.3 shows them) to
 * parent; with_items false: the name only (pushes, names). */
void xd_privacy_list_to_el(xd_el_t *parent, const xd_privacy_list_t *l, bool with_items);

/* ---- lifecycle (through mod_privacy.h / mod_blocking.h, which main.c calls) --------------- */

/* The storage components of the engine: "privacy" (the tables) and
 * "mod_blocking" (its old table, version 2 migrating it), in that order;
 * both modules declare them. */
extern const xd_module_schema_t xd_privacy_schemas[];

/* Which module runs the engine on a host. */
typedef enum xd_privacy_user {
    XD_PRIVACY_BY_BLOCKING = 1, /* mod_blocking */
    XD_PRIVACY_BY_PRIVACY = 2,  /* mod_privacy */
} xd_privacy_user;

/* Per-host limits of the module attaching (0 = keep what is there). */
typedef struct xd_privacy_limits {
    int max_lists;   /* mod_privacy: lists per account */
    int max_items;   /* mod_privacy: items per list */
    int max_blocked; /* mod_blocking: block items in the blocklist */
} xd_privacy_limits_t;

/* Module `by` runs on the host of ctx (from its start; main or reload
 * thread), on ctx's database.  The first module of a host loads the host's
 * lists (blocking storage reads); the first host adds the engine's hooks
 * (filter_packet, sm_remove_connection, remove_user, roster_changed,
 * privacy_check_packet).  Again for the same (host, by) only updates the
 * limits (reload).  0, or an XD_E* code with *err (malloc'd). */
int xd_privacy_store_attach(xd_module_ctx_t *ctx, xd_privacy_user by,
                            const xd_privacy_limits_t *lim, char **err);

/* Module `by` stops on host: the last one forgets the host's accounts
 * (storage keeps them); the last host removes the filter. */
void xd_privacy_store_detach(const char *host, xd_privacy_user by);

/* True when module `by` runs on host. */
bool xd_privacy_store_runs(const char *host, xd_privacy_user by);

/* ---- reads (memory only; any thread, never block) ------------------------------------------ */

/* True when the rules that apply to `user` (its session's active list
 * when user is a full JID with one, else the default list) refuse every
 * stanza with `other` (an item without kinds decides deny).  With only
 * XEP-0191 in use this is "user blocks other".  Never for user's own
 * account or server. */
bool xd_privacy_blocks(const xd_jid_t *user, const xd_jid_t *other);

/* What XEP-0016 get answers: names, or one list. */
typedef struct xd_privacy_view {
    char *active;          /* the requesting session's active list, or NULL */
    char *def;             /* the default list, or NULL */
    char **names;          /* every list's name, sorted bytewise */
    size_t nnames;         /* how many */
    xd_privacy_list_t list; /* xd_privacy_get with a name: that list */
} xd_privacy_view_t;

void xd_privacy_view_clear(xd_privacy_view_t *v);

/* The account of the session `req` (full JID): names (name NULL) or the
 * list `name` (XD_ENOTFOUND).  Marks req as a session that gets privacy
 * list pushes.  XD_ECLOSED when the engine does not run on req's host. */
int xd_privacy_get(const xd_jid_t *req, const char *name, xd_privacy_view_t *out);

/* The blocklist of req's account into *out (malloc'd strings, free each and
 * the array), and req becomes a session that gets blocklist pushes
 * (XEP-0191 3.2).  XD_ECLOSED as above. */
int xd_privacy_blocklist(const xd_jid_t *req, char ***out, size_t *n);

/* ---- writes (blocking: pool only) -----------------------------------------------------------
 *
 * Each stores, then changes memory, then pushes and sends presence.  Error
 * codes and the stanza errors mod_privacy / mod_blocking answer with:
 *   XD_ENOTFOUND  item-not-found (no such list; a group not in the roster)
 *   XD_EEXIST     conflict (the list is in use by another session, XEP-0016 2.2 rule 11)
 *   XD_ELIMIT     not-acceptable (max_lists, max_items, max_blocked)
 *   XD_EINVAL     bad-request
 *   XD_ECLOSED    service-unavailable (the engine does not run on the host)
 *   others        internal-server-error (storage) */

/* Creates or replaces list l (sorted, unique orders, JIDs normalised) of
 * req's account; pushes its name to the sessions that asked for privacy
 * (XEP-0016 2.6) and, when it is the default, the blocklist change to
 * those that asked for the blocklist.  l->n == 0 is XD_EINVAL (use
 * xd_privacy_remove_list). */
int xd_privacy_set_list(const xd_jid_t *req, const xd_privacy_list_t *l);

/* Removes list `name`: XD_EEXIST when it is the default or the active list
 * of another session; the requester's own active list is declined with it. */
int xd_privacy_remove_list(const xd_jid_t *req, const char *name);

/* Sets (name) or declines (NULL) the active list of the session req. */
int xd_privacy_set_active(const xd_jid_t *req, const char *name);

/* Sets (name) or declines (NULL) the default list: XD_EEXIST when the
 * current default applies to another session (one without an active list)
 * and would change. */
int xd_privacy_set_default(const xd_jid_t *req, const char *name);

/* XEP-0191 block / unblock (see above) of normalised JIDs; unblock with
 * n == 0 unblocks all.  Pushes <block/>/<unblock/> with the JIDs given to
 * the sessions that asked for the blocklist, and the default list's name
 * to those that asked for privacy. */
int xd_privacy_block(const xd_jid_t *req, const char *const *jids, size_t n);
int xd_privacy_unblock(const xd_jid_t *req, const char *const *jids, size_t n);

#endif

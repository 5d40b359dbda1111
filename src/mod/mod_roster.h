/*
 * mod_roster.h — rosters (RFC 6121 2), roster versioning (XEP-0237) and the
 * stored side of presence subscriptions (RFC 6121 3); see mod_roster.c.
 *
 * Storage (component "mod_roster"): one row per (host, username, contact
 * bare JID) with name, subscription state (roster_sub.h), the pending-in
 * status text and whether the item is in the roster at all (an inbound
 * subscribe from a stranger is remembered without adding a roster item,
 * RFC 6121 3.1.3); groups in a second table; a per-user version bumped by
 * every change that a client can see.
 *
 * Threads: every function here but mod_roster_sub_* (roster_sub.h) and
 * mod_roster_remove_actions blocks on the database: call it on the blocking
 * pool (an XD_IQ_PARALLEL handler, xd_module_submit work), never on a
 * worker loop.  Each change runs in one transaction; committed changes run
 * the ROSTER_CHANGED hook.  The storage functions take the store of the
 * roster's host (mod_roster_store_of its instance), so the same code serves
 * the roster of a contact on another local host.
 *
 * Memory: out-structures are filled with malloc'd copies the caller frees
 * with mod_roster_item_clear / mod_roster_list_clear; a failed call leaves
 * them zeroed.  Strings passed in are borrowed.  Host, user and contact are
 * taken as given: pass normalised JID parts (the IQ handler does).
 */
#ifndef XMPPD_MOD_MOD_ROSTER_H
#define XMPPD_MOD_MOD_ROSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "roster_sub.h"
#include "xmppd/module.h"
#include "xmppd/storage.h"

#define MOD_ROSTER_TEXT_MAX 1023 /* bytes of a name or a group (RFC 6121 2.3.3 limit we set) */

/* The largest roster stanza (a roster result or push, serialized) sent to
 * a client.  A c2s stream that has more than 4 MiB queued to its peer is
 * closed (C2S_MAX_WRITE_QUEUE, src/stream/conn.c): one stanza must stay
 * well below that, with room for what else is queued at the time.  A
 * bigger roster result is an IQ error, a bigger push is not sent. */
#define MOD_ROSTER_SEND_MAX ((size_t)3 << 20)

/* The most `max_roster_size` may be: a roster built up to it still fits in
 * MOD_ROSTER_SEND_MAX with the IQ around it and the bytes that changes the
 * limit does not refuse (inbound subscription states, unsubscribes) add. */
#define MOD_ROSTER_SIZE_CEILING ((size_t)2 << 20)

/* One roster item. */
typedef struct mod_roster_item {
    char *jid;                /* the contact's bare JID */
    char *name;               /* handle, or NULL for none */
    mod_roster_state_t state; /* subscription, ask, pending-in, approved */
    char *pending_status;     /* <status/> of the pending subscribe, or NULL */
    bool in_roster;           /* false: only a pending-in request is remembered */
    bool removed;             /* a push of subscription='remove' (never stored) */
    char **groups;            /* group names, sorted bytewise, no duplicates */
    size_t ngroups;           /* how many */
    size_t groups_cap;        /* entries allocated in groups (by the storage functions) */
} mod_roster_item_t;

/* A roster. */
typedef struct mod_roster_list {
    mod_roster_item_t *items; /* roster items (in_roster only), by jid */
    size_t n;                 /* how many */
    size_t cap;               /* entries allocated in items */
    int64_t version;          /* the user's roster version (0: never changed) */
} mod_roster_list_t;

void mod_roster_item_clear(mod_roster_item_t *it);
void mod_roster_list_clear(mod_roster_list_t *l);

/* Where a host's rosters live and how big they may grow. */
typedef struct mod_roster_store {
    xd_db_t *db;       /* the host's database */
    size_t max_items;  /* items one roster may hold (0: no limit) */
    size_t max_groups; /* groups one item may be in (0: no limit) */
    size_t max_bytes;  /* bytes of a roster's items as sent, serialized (0: no limit) */
} mod_roster_store_t;

/* The store of the instance ctx (of mod_roster). */
mod_roster_store_t mod_roster_store_of(xd_module_ctx_t *ctx);

/* ---- storage ------------------------------------------------------------------------------ */

/* The user's roster items and version. */
int mod_roster_get_all(const mod_roster_store_t *rs, const char *host, const char *user, mod_roster_list_t *out);
/* The user's roster version (0 when none). */
int mod_roster_version(const mod_roster_store_t *rs, const char *host, const char *user, int64_t *out);
/* One item, in the roster or only pending-in.  XD_ENOTFOUND. */
int mod_roster_get_item(const mod_roster_store_t *rs, const char *host, const char *user, const char *contact,
                        mod_roster_item_t *out);

/* A roster set (RFC 6121 2.3): adds or updates contact with name (NULL =
 * none) and groups (duplicates collapsed); the subscription state stays.
 * *pushed (optional) gets the item as stored, *ver (optional) the new
 * version.  XD_EINVAL for an empty or over-long name or group or more
 * groups than max_groups; XD_EFULL when it would add an item to a roster
 * of max_items; XD_ELIMIT when it would grow the roster past max_bytes (a
 * change that does not grow it is never refused). */
int mod_roster_set_item(const mod_roster_store_t *rs, const char *host, const char *user, const char *contact,
                        const char *name, const char *const *groups, size_t ngroups,
                        mod_roster_item_t *pushed, int64_t *ver);

/* A roster remove (RFC 6121 2.5): deletes the item; *before (optional) gets
 * it as it was (for mod_roster_remove_actions), *ver the new version.
 * XD_ENOTFOUND when contact is not in the roster. */
int mod_roster_remove_item(const mod_roster_store_t *rs, const char *host, const char *user, const char *contact,
                           mod_roster_item_t *before, int64_t *ver);

/* What the server sends the contact after a remove (RFC 6121 2.5.2). */
typedef struct mod_roster_remove_actions {
    bool unsubscribe;  /* the user had 'to'/'both' or Pending Out: send unsubscribe */
    bool unsubscribed; /* the contact had 'from'/'both' or Pending In: send unsubscribed */
} mod_roster_remove_actions_t;
mod_roster_remove_actions_t mod_roster_remove_actions(const mod_roster_state_t *before);

/* Result of a subscription event. */
typedef struct mod_roster_sub_outcome {
    mod_roster_sub_result_t r; /* the machine's answer: forward, push, reply, new state */
    mod_roster_item_t item;    /* the item after the event (for the push when r.push) */
    int64_t version;           /* the version after the event */
} mod_roster_sub_outcome_t;

/* Loads contact's item (absent = state none), applies ev (roster_sub.h),
 * stores the result, and bumps the version when a push is due, in one
 * transaction.  Items are created for an outbound event that changes the
 * state (RFC 6121 3.1.2, 3.4) and kept out of the roster for an inbound
 * subscribe from a stranger (3.1.3); an item left with nothing at all
 * outside the roster is deleted.  status: the <status/> of an inbound
 * subscribe (kept with the pending-in), or NULL.  Call mod_roster_push
 * afterwards when out->r.push, and clear out->item.  XD_EFULL when an
 * outbound event would add an item to a roster of max_items or past
 * max_bytes, or an outbound subscribe / subscribed would grow the roster
 * past max_bytes; inbound events and unsubscribes are never refused. */
int mod_roster_subscription(const mod_roster_store_t *rs, const char *host, const char *user, const char *contact,
                            mod_roster_event ev, const char *status,
                            mod_roster_sub_outcome_t *out);

/* Which contacts mod_roster_contacts lists. */
typedef enum mod_roster_filter {
    MOD_ROSTER_FROM, /* subscription from or both: they get the user's presence */
    MOD_ROSTER_TO,   /* subscription to or both: the user gets theirs (probes) */
} mod_roster_filter;

/* Calls fn with each contact's bare JID (lent) in JID order.  fn returns 0
 * to go on, > 0 to stop, < 0 to stop with that error. */
int mod_roster_contacts(const mod_roster_store_t *rs, const char *host, const char *user, mod_roster_filter filter,
                        int (*fn)(void *arg, const char *jid), void *arg);

/* Calls fn with each contact whose subscription request waits for the user
 * (Pending In, RFC 6121 3.1.3: redelivered when the user comes online). */
int mod_roster_pending_in(const mod_roster_store_t *rs, const char *host, const char *user,
                          int (*fn)(void *arg, const char *jid), void *arg);

/* Deletes all of a user's roster (account removal). */
int mod_roster_remove_user(const mod_roster_store_t *rs, const char *host, const char *user);

/* ---- pushes ------------------------------------------------------------------------------- */

/* The <item/> of `it` in jabber:iq:roster (subscription='remove' when
 * it->removed), appended to parent. */
void mod_roster_item_to_el(xd_el_t *parent, const mod_roster_item_t *it);

/* Sends a roster push of `it` with ver to every interested resource of
 * user@host (RFC 6121 2.1.6, XEP-0237).  Any thread.  Returns how many.
 * A push bigger than MOD_ROSTER_SEND_MAX (an item written by hand into
 * the database) is not sent but logged: it would end the stream. */
size_t mod_roster_push(const char *host, const char *user, const mod_roster_item_t *it,
                       int64_t ver);

/* ---- presence (mod_presence.c, part of the module) ---------------------------------------- */

/* Starts / stops the presence side on the instance ctx: subscription
 * processing, broadcast and probes (RFC 6121 3, 4). */
int mod_presence_start(xd_module_ctx_t *ctx);
void mod_presence_stop(xd_module_ctx_t *ctx);

/* A roster remove committed by the IQ handler (on the pool): the
 * unsubscribe / unsubscribed that RFC 6121 2.5.2 makes the server send. */
void mod_presence_roster_removed(xd_module_ctx_t *ctx, const char *host, const char *user,
                                 const char *contact, mod_roster_remove_actions_t actions);

#endif

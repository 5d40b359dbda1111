/*
 * sm.h — the session table: who is online, on which worker, with which
 * presence (DESIGN.md 1, 2).
 *
 * Maps a bare JID to its bound resources.  Each entry is an
 * xd_session_info_t (include/xmppd/session.h): the full JID, the handle
 * that reaches the session (transport, owner worker, id), the presence
 * state of RFC 6121 the router decides by, and flags.  The table is
 * sharded by a hash of the bare JID; each shard has its own rwlock, so
 * lookups from different workers do not contend.  Entries are plain data:
 * nothing here points into a transport.
 *
 * The public readers (xd_session_find, _list, _foreach, _count,
 * _set_flag) are implemented here; this header has what the session
 * manager itself changes: binding and presence.
 */
#ifndef XMPPD_ROUTER_SM_H
#define XMPPD_ROUTER_SM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xmppd/el.h"
#include "xmppd/jid.h"
#include "xmppd/session.h"

typedef struct xd_sm_account xd_sm_account_t; /* see xd_sm_account below */

int xd_sm_init(void);
void xd_sm_shutdown(void);

/* Adds `e` (its jid and presence are referenced, not consumed).  If the
 * full JID is bound already, returns XD_EEXIST and copies the holder into
 * *old (references the caller releases); the table is unchanged then. */
int xd_sm_bind(const xd_session_info_t *e, xd_session_info_t *old);

/* Replaces the holder of e->jid, whoever it is, with e; *old (optional) gets
 * the previous holder when there was one (returns 1) or 0 when none. */
int xd_sm_bind_replace(const xd_session_info_t *e, xd_session_info_t *old);

/* xd_sm_bind (replace false) or xd_sm_bind_replace, also handing out the
 * account's shared object (a reference, *acct) of the binding made: the
 * session manager's bind, with no window for another lookup to miss it. */
int xd_sm_bind_account(const xd_session_info_t *e, bool replace, xd_session_info_t *old,
                       xd_sm_account_t **acct);

/* Removes the binding of `jid` if session id `id` still holds it.  Returns
 * true when something was removed. */
bool xd_sm_unbind(const xd_jid_t *jid, uint64_t id);

/* Records the presence of the session bound to `jid` (if session `id`
 * still holds it): available or not, its priority, and the presence stanza
 * to answer probes with (a reference is taken; NULL when unavailable).
 * XD_ENOTFOUND. */
int xd_sm_set_presence(const xd_jid_t *jid, uint64_t id, bool available, int priority,
                       const xd_stanza_t *presence);

/* Publishes the CSI state and counters of the session bound to `jid` (if
 * session `id` still holds it), for status commands.  XD_ENOTFOUND. */
int xd_sm_set_csi(const xd_jid_t *jid, uint64_t id, const xd_session_csi_t *csi);

/* Stream management resumption (XEP-0198 5): the session bound to `jid`
 * (if session `old_id` still holds it) is reached through *ref from now
 * on, its client connected from `ip` (NULL: unchanged), and its
 * XD_SESSION_DETACHED flag says `detached`.  The presence state stays.
 * 0, or XD_ENOTFOUND when another session holds the resource now. */
int xd_sm_rebind(const xd_jid_t *jid, uint64_t old_id, const xd_session_ref_t *ref, const char *ip,
                 bool detached);

/* The handle of the session bound to the full JID `full` (plain data, no
 * references taken) and whether any resource of the account has carbons
 * enabled: the router's lookup for a stanza to a full JID.  XD_ENOTFOUND. */
int xd_sm_find_ref(const xd_jid_t *full, xd_session_ref_t *ref, bool *carbons);

/* What the sessions of one account share while any is bound: counters the
 * hot path reads without a table lookup.  A session takes its reference
 * after binding (xd_sm_account, NULL when the account has no binding) and
 * drops it when it ends; the object outlives the table entry while held. */
xd_sm_account_t *xd_sm_account(const xd_jid_t *jid);
void xd_sm_account_unref(xd_sm_account_t *a);

/* True while a resource of the account has carbons enabled (XEP-0280):
 * a message sent by a user without carbons costs no session lookup. */
bool xd_sm_account_carbons(const xd_sm_account_t *a);

#endif

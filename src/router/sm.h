/*
 * sm.h — the session table: who is online, on which worker (DESIGN.md 1, 2).
 *
 * Maps a bare JID to its bound resources.  Each resource records the worker
 * that owns the stream and the stream's id, so anyone can reach the session
 * by posting to that worker.  The table is sharded by a hash of the bare
 * JID; each shard has its own rwlock, so lookups from different workers do
 * not contend.  Entries are plain data: nothing here points into a stream.
 *
 * The routing issue extends each entry with priority and presence; this
 * first version serves resource binding, conflicts, xmppctl's
 * connected_users and kick_session.
 */
#ifndef XMPPD_ROUTER_SM_H
#define XMPPD_ROUTER_SM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xmppd/el.h"
#include "xmppd/jid.h"

/* What binding does when the full JID is already bound (RFC 6120 7.7.2.2). */
typedef enum xd_sm_conflict {
    XD_SM_REPLACE, /* the old session is closed with <conflict/> (default) */
    XD_SM_REFUSE,  /* the new bind fails with <conflict/> */
    XD_SM_RENAME,  /* the new session gets a server-generated resource */
} xd_sm_conflict;

/* A session as seen from outside its owner. */
typedef struct xd_sm_entry {
    xd_jid_t *jid;       /* full JID (a reference) */
    unsigned worker;     /* owner worker index */
    uint64_t conn_id;    /* the stream's id on that worker */
    uint64_t since_ms;   /* bind time, uv_hrtime based */
    char ip[48];         /* peer address, for connected_users */
    bool available;      /* the session sent available presence (RFC 6121 4.2) */
    bool interested;     /* it asked for the roster: gets roster pushes (RFC 6121 2.1.6) */
    bool carbons;        /* it enabled message carbons (XEP-0280) */
    xd_stanza_t *presence; /* its last available presence (a reference), or NULL */
    int priority;        /* its presence priority, -128..127 (RFC 6121 4.7.2.3) */
} xd_sm_entry_t;

int xd_sm_init(void);
void xd_sm_shutdown(void);

/* Adds `e` (its jid is referenced, not consumed).  If the full JID is
 * bound already, returns XD_EEXIST and copies the holder into *old (its jid
 * a new reference the caller releases); the table is unchanged then. */
int xd_sm_bind(const xd_sm_entry_t *e, xd_sm_entry_t *old);

/* Replaces the holder of e->jid, whoever it is, with e; *old (optional) gets
 * the previous holder when there was one (returns 1) or 0 when none. */
int xd_sm_bind_replace(const xd_sm_entry_t *e, xd_sm_entry_t *old);

/* Removes the binding of `jid` if conn_id still holds it.  Returns true
 * when something was removed. */
bool xd_sm_unbind(const xd_jid_t *jid, uint64_t conn_id);

/* The holder of a full JID; *out's jid is a new reference. */
int xd_sm_find(const xd_jid_t *jid, xd_sm_entry_t *out);

/* Records the presence of the session bound to `jid` (if conn_id still
 * holds it): available or not, its priority, and the presence stanza to
 * answer probes with (a reference is taken; NULL when unavailable).
 * XD_ENOTFOUND. */
int xd_sm_set_presence(const xd_jid_t *jid, uint64_t conn_id, bool available, int priority,
                       const xd_stanza_t *presence);

/* Marks the session bound to `jid` (if conn_id still holds it; 0 = any) as an
 * interested resource (RFC 6121 2.1.6).  XD_ENOTFOUND. */
int xd_sm_set_interested(const xd_jid_t *jid, uint64_t conn_id);

/* Enables or disables carbons for the session bound to `jid` (if conn_id
 * still holds it; 0 = any).  XD_ENOTFOUND. */
int xd_sm_set_carbons(const xd_jid_t *jid, uint64_t conn_id, bool on);

/* The sessions of the bare JID of `jid`: up to max entries into out (jids
 * are new references; clear each).  Returns how many the user has, which
 * may be more than max. */
size_t xd_sm_resources(const xd_jid_t *jid, xd_sm_entry_t *out, size_t max);

/* Sessions online, all hosts or one (host NULL = all). */
size_t xd_sm_count(const char *host);

/* Calls fn for a snapshot of all sessions (of one host, or all); entries are
 * lent for the call.  fn may not call back into sm.  Returns the count. */
size_t xd_sm_foreach(const char *host, void (*fn)(void *arg, const xd_sm_entry_t *e), void *arg);

/* Releases the jid and presence references inside an entry filled by this API. */
void xd_sm_entry_clear(xd_sm_entry_t *e);

#endif

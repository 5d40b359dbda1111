/*
 * session.h — sessions: the bound resources of the server's accounts,
 * whatever carries them (public module API; DESIGN.md 1, 2).
 *
 * A session is what RFC 6120 7 calls a bound resource: a full JID with a
 * presence, reachable by stanzas.  The session manager keeps one table of
 * them (sharded by bare JID, read-mostly), and each entry says how to reach
 * the session: a handle, xd_session_ref_t, naming the transport that
 * carries it (a client stream over TCP/TLS today; WebSocket, BOSH or a
 * session on another cluster node tomorrow), the worker that owns it and
 * the transport's id for it.  Nothing here depends on which transport it is.
 *
 *   xd_session_find / _list / _foreach   copies of table entries (infos)
 *   xd_session_send / _send_take         a stanza to one session
 *   xd_session_close / _kick             end a session with a stream error
 *
 * Delivery: a session is touched only by its owner worker.  A send from
 * that worker runs the transport's delivery at once; from any other thread
 * it travels through the owner's inbox.  Sends from one thread to one
 * session arrive in the order made (RFC 6120 10.1).  When the session is
 * gone by the time the stanza gets there, the sender gets
 * service-unavailable (RFC 6121 8.5.3.2), as if it had been routed to a
 * full JID that is not online; a sender that must not lose the stanza
 * (offline storage handing out stored messages) passes a `gone` function
 * to _send_take_or and gets the stanza back instead.
 *
 * Ownership (STYLE.md 3.7): _send borrows the stanza, _send_take takes the
 * caller's reference.  An info's jid and presence are references released
 * by xd_session_info_clear; an info is a copy, stale the moment it is made.
 * Every function here may be called from any thread and never blocks.
 */
#ifndef XMPPD_SESSION_H
#define XMPPD_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xmppd/conds.h"
#include "xmppd/el.h"
#include "xmppd/jid.h"

/* What a transport provides (src/router/session.h); opaque to modules. */
typedef struct xd_session_ops xd_session_ops_t;

/* A session as its owner worker has it (opaque): see "The calling
 * worker's own sessions" below. */
typedef struct xd_session xd_session_t;

/* How to reach one session.  Plain data: copy it freely. */
typedef struct xd_session_ref {
    const xd_session_ops_t *ops; /* the transport that carries the session */
    unsigned worker;             /* the worker that owns it */
    uint64_t id;                 /* the transport's id for it; unique in the process */
} xd_session_ref_t;

/* Flags a session carries in the table (xd_session_set_flag). */
enum {
    XD_SESSION_INTERESTED = 1u << 0, /* asked for the roster: gets pushes (RFC 6121 2.1.6) */
    XD_SESSION_CARBONS = 1u << 1,    /* enabled message carbons (XEP-0280) */
    XD_SESSION_SECURE = 1u << 2,     /* its transport is encrypted (TLS); set at bind */
    XD_SESSION_DETACHED = 1u << 3,   /* its connection broke; it waits to be resumed (XEP-0198) */
};

/* A session's Client State Indication (XEP-0352) as its owner last
 * published it: whether the client said it is inactive, and what the
 * session manager held back for it meanwhile.  Counters only grow. */
typedef struct xd_session_csi {
    bool inactive;      /* the client sent <inactive/> (and not <active/> since) */
    uint32_t queued;    /* stanzas held now */
    uint64_t held;      /* stanzas ever held */
    uint64_t flushed;   /* held stanzas written when the queue was flushed */
    uint64_t coalesced; /* held presences replaced by a newer one from the same full JID */
    uint64_t dropped;   /* held presences dropped (oldest first) at the queue's bound */
} xd_session_csi_t;

/* One session as the table has it (a copy). */
typedef struct xd_session_info {
    xd_jid_t *jid;          /* the full JID (a reference) */
    xd_session_ref_t ref;   /* how to reach it */
    uint64_t since_ms;      /* when it was bound (loop clock, ms) */
    char ip[48];            /* the client's address, printable */
    bool available;         /* it sent available presence (RFC 6121 4.2) */
    int priority;           /* its presence priority, -128..127 (RFC 6121 4.7.2.3) */
    xd_stanza_t *presence;  /* its last available presence (a reference), or NULL */
    unsigned flags;         /* XD_SESSION_* */
    xd_session_csi_t csi;   /* XEP-0352 state and counters */
} xd_session_info_t;

/* The session bound to the full JID `full` into *out.  0 or XD_ENOTFOUND. */
int xd_session_find(const xd_jid_t *full, xd_session_info_t *out);

/* The sessions of the account of `jid` (full or bare): up to max infos
 * into out, in no particular order.  Returns how many the account has,
 * which may be more than max; clear the ones filled. */
size_t xd_session_list(const xd_jid_t *jid, xd_session_info_t *out, size_t max);

/* Calls fn with every session of `host` (NULL: of every host) from a
 * snapshot taken shard by shard; the info is lent for the call, and fn may
 * call back into this API.  Returns how many there were. */
size_t xd_session_foreach(const char *host,
                          void (*fn)(void *arg, const xd_session_info_t *s), void *arg);

/* Sessions bound now, on `host` (NULL: on every host). */
size_t xd_session_count(const char *host);

/* Releases the references an info holds and zeroes them. */
void xd_session_info_clear(xd_session_info_t *s);

/* Sets or clears `flag` (XD_SESSION_*) of the session bound to `full`.
 * 0 or XD_ENOTFOUND. */
int xd_session_set_flag(const xd_jid_t *full, unsigned flag, bool on);

/* The sessions a stanza to the account's bare JID goes to (RFC 6121 8.5.2):
 * for presence every available one; for a headline message every available
 * one with a non-negative priority; for a groupchat message none (the
 * sender gets an error, 8.5.2.1.1) and for an error message none (it is
 * silently ignored, 8.5.2.1.1); for any other message the available
 * ones with the highest non-negative priority (all of them on a tie).
 * Sets take[i] for each of s[0..n) accordingly and returns how many. */
size_t xd_session_pick(const xd_session_info_t *s, size_t n, const xd_stanza_t *st, bool *take);

/* Hands st to session `to`: borrows st (a reference is taken). */
void xd_session_send(const xd_session_ref_t *to, const xd_stanza_t *st);

/* Hands st to session `to`: takes over the caller's reference. */
void xd_session_send_take(const xd_session_ref_t *to, xd_stanza_t *st);

/* What becomes of a stanza whose session went away before it was written:
 * called with the reference on the session's (former) owner worker, or on
 * the sender's thread when that worker has already stopped. */
typedef void (*xd_session_gone_fn)(xd_stanza_t *st);

/* As xd_session_send_take, but a stanza the session can no longer take is
 * given to gone(st) instead of becoming an error to its sender. */
void xd_session_send_take_or(const xd_session_ref_t *to, xd_stanza_t *st,
                             xd_session_gone_fn gone);

/* Ends session s with stream error `cond` and `text` (NULL: none), on its
 * owner worker.  Nothing when it is already gone. */
void xd_session_close(const xd_session_ref_t *s, xd_stream_cond cond, const char *text);

/* xd_session_close for the session bound to `full`.  0 or XD_ENOTFOUND. */
int xd_session_kick(const xd_jid_t *full, xd_stream_cond cond, const char *text);

/* ---- the calling worker's own sessions (owner worker only) ----------------------------------
 *
 * A worker reaches the sessions it owns directly: from a TICK handler
 * (xd_session_foreach_local) or a USER_SEND_PACKET / USER_RECEIVE_PACKET
 * handler (ev->session).  These calls are valid on that worker only, and an
 * xd_session_t only for the call it was given to. */

/* Calls fn with every session the calling worker owns on `host` (NULL:
 * every host).  fn must not end sessions synchronously (xd_session_close
 * is fine: it is posted).  Returns how many. */
size_t xd_session_foreach_local(const char *host, void (*fn)(void *arg, xd_session_t *s),
                                void *arg);

const xd_jid_t *xd_session_jid(const xd_session_t *s);     /* its full JID */
const char *xd_session_host(const xd_session_t *s);        /* its served host */
xd_session_ref_t xd_session_ref(const xd_session_t *s);    /* its handle */

/* Milliseconds since the client last sent anything on the transport. */
uint64_t xd_session_idle_ms(const xd_session_t *s);

/* True while the session is detached: its connection broke and stream
 * management (XEP-0198) keeps it for the client to resume.  Stanzas sent
 * to it wait in its queue, unread; nothing is written to the client (a
 * module that pings or notifies a device acts on that: mod_ping leaves it
 * alone, mod_push notifies the device). */
bool xd_session_detached(const xd_session_t *s);

/* Per-session values of a module: a slot is a process-wide index that a
 * module takes once (in its first start; slots are never given back) with
 * the function that frees a value when its session ends (NULL: nothing to
 * free).  Returns the slot, or XD_ELIMIT when all XD_SESSION_SLOTS are
 * taken.  Any thread. */
#define XD_SESSION_SLOTS 16
int xd_session_slot_new(void (*free_fn)(void *value));
void *xd_session_slot_get(const xd_session_t *s, int slot);
/* Replaces the value (the old one is not freed). */
void xd_session_slot_set(xd_session_t *s, int slot, void *value);

#endif

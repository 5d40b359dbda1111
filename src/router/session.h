/*
 * session.h (router) — the session manager's side of a session, for the
 * transports that carry sessions (src/stream/c2s.c today; WebSocket, BOSH
 * and cluster links later).  Modules use include/xmppd/session.h.
 *
 * A transport provides an xd_session_ops_t (deliver, close, info: all run
 * on the owner worker, keyed by the transport's id) and, once the client
 * asks to bind a resource, hands the request to xd_session_bind_iq.  From
 * then on the session manager owns what RFC 6120/6121 say a session is:
 *
 *   bind         the resource (requested or generated, conflicts by the
 *                host's resource_conflict policy) in the session table;
 *   input        every stanza the client sends: 'from' checked and stamped,
 *                a missing 'to' resolved (RFC 6120 10.3), the session
 *                establishment IQ answered (RFC 3921 3), its own presence
 *                (availability, priority, USER_AVAILABLE / _UNAVAILABLE),
 *                directed presence remembered (RFC 6121 4.6), sent carbons,
 *                then the router;
 *   end          unbound, unavailable broadcast, directed presence undone,
 *                SM_REMOVE_CONNECTION.
 *
 * The transport keeps the wire: framing, TLS, SASL, limits.  An
 * xd_session_t belongs to the transport's owner worker (not shared): only
 * that worker calls these functions with it.
 */
#ifndef XMPPD_ROUTER_SESSION_H
#define XMPPD_ROUTER_SESSION_H

#include <stdbool.h>
#include <stdint.h>

#include "xmppd/conds.h"
#include "xmppd/el.h"
#include "xmppd/jid.h"
#include "xmppd/log.h"
#include "xmppd/session.h"

/* What a transport tells about one of its sessions (ops->info). */
typedef struct xd_session_stats {
    uint64_t idle_ms;  /* since the client last sent anything */
    bool secure;       /* encrypted (TLS) */
} xd_session_stats_t;

/* A transport.  Every function runs on the session's owner worker and is
 * given the transport's id for the session. */
struct xd_session_ops {
    const char *name; /* "c2s", "websocket", "bosh", "cluster": logs and status */
    /* Writes st (lent) to the session: 0, or XD_ENOTFOUND when it is gone
     * or no longer takes stanzas (the sender then gets service-unavailable).
     * Must not end the session synchronously (a full write queue closes it
     * later): the caller may be in the middle of another session's input. */
    int (*deliver)(uint64_t id, const xd_stanza_t *st);
    /* Ends the session with a stream error (nothing when it is gone). */
    void (*close)(uint64_t id, xd_stream_cond cond, const char *text);
    /* Fills *out: 0 or XD_ENOTFOUND. */
    int (*info)(uint64_t id, xd_session_stats_t *out);
    /* The session manager's object of session id, or NULL when it is gone. */
    xd_session_t *(*session)(uint64_t id);
};

/* One bound session (owner worker only). */
struct xd_session {
    struct xd_session *prev, *next; /* the owner worker's sessions */
    xd_session_ref_t ref;  /* the transport, worker and id */
    xd_jid_t *jid;         /* the bound full JID */
    char *host;            /* the served host (owned) */
    struct xd_sm_account *acct; /* the account's shared counters (sm.h), a reference */
    const xd_log_t *log;   /* the transport's log context (lent for the session's life) */
    bool available;        /* its own presence is available */
    bool detached;         /* its transport keeps it for resumption (xd_session_detach) */
    bool nonneg_seen;      /* ... with a priority >= 0 since it became available */
    char **directed;       /* JIDs it sent directed available presence to (RFC 6121 4.6) */
    size_t ndirected;      /* how many (bounded) */
    void *slots[XD_SESSION_SLOTS]; /* modules' values (xd_session_slot_new) */
    /* XEP-0352 (xd_session_csi): while inactive, what is held back. */
    xd_stanza_t **csi_q;   /* held stanzas in arrival order (references) */
    size_t csi_n;          /* how many (<= XD_SESSION_CSI_MAX) */
    size_t csi_cap;        /* room in csi_q */
    size_t csi_bytes;      /* their serialized size (<= XD_SESSION_CSI_MAX_BYTES) */
    xd_session_csi_t csi;  /* state and counters (published to the table) */
};

/* The bound of a session's CSI queue: stanzas and bytes.  A presence that
 * would go beyond drops the oldest held presence; anything else flushes. */
#define XD_SESSION_CSI_MAX 1000
#define XD_SESSION_CSI_MAX_BYTES (256u * 1024u)

/* A bind request. */
typedef struct xd_session_bind_req {
    xd_session_ref_t ref;    /* how the new session is reached */
    const xd_jid_t *user;    /* the authenticated account (bare JID) */
    const char *host;        /* the served host of the stream */
    const char *ip;          /* the client's address */
    const xd_log_t *log;     /* the transport's log context */
    uint64_t now_ms;         /* the owner loop's clock */
    bool secure;             /* the transport is encrypted (XD_SESSION_SECURE) */
} xd_session_bind_req_t;

/* Answers the resource binding request iq (RFC 6120 7): on success binds
 * the session, sets *out (the caller owns it until xd_session_end) and
 * returns the result carrying the full JID; otherwise returns the error
 * (bad-request, conflict, internal-server-error) with *out NULL.  The reply
 * is a new reference for the transport to write.  A resource bound by
 * another session is taken over or refused by the host's
 * resource_conflict policy; the old session is closed with <conflict/>. */
xd_stanza_t *xd_session_bind_iq(const xd_session_bind_req_t *req, const xd_stanza_t *iq,
                                xd_session_t **out);

/* As xd_session_bind_iq for `resource` (NULL: server-generated), without
 * an IQ (XEP-0386 Bind2): 0 and *out; XD_EEXIST (resource_conflict
 * refuse), XD_EINVAL (a resource not allowed, an internal error). */
int xd_session_bind(const xd_session_bind_req_t *req, const char *resource, xd_session_t **out);

/* A stanza the client sent on session s; the reference is taken (a fresh
 * stanza from the parser is stamped in place, without a copy).  0, or
 * XD_EINVAL when its 'from' is not the session's (the transport then
 * closes the stream with invalid-from, RFC 6120 8.1.2.1).  Replies of the
 * session manager itself are written through s->ref.ops->deliver. */
int xd_session_input(xd_session_t *s, xd_stanza_t *st);

/* The session ends (reason: "closed", "disconnected", …, for the hook;
 * "replaced" whatever the caller says when another session took its
 * resource): unbound, unavailable presence to whoever had its presence,
 * SM_REMOVE_CONNECTION;
 * then s is freed. */
void xd_session_end(xd_session_t *s, const char *reason);

/* Stream management resumption (XEP-0198 5), for the transport that keeps
 * a session whose connection broke:
 *
 *   xd_session_detach   the connection is gone; the session stays bound and
 *                       available, reached through the same ref (the
 *                       transport queues what is delivered to it); its log
 *                       context is now `log` (the transport's, lent);
 *   xd_session_release  the session leaves the calling worker's list (it is
 *                       being handed to another worker or connection);
 *                       CSI must be active by then (xd_session_csi(s, true)
 *                       flushes what it held while the transport can still
 *                       queue it);
 *   xd_session_adopt    the calling worker takes it over, reached through
 *                       `ref` from now on (the table entry is switched), no
 *                       longer detached, client at `ip`, logging as `log`.
 *                       XD_ENOTFOUND when another session took the
 *                       resource meanwhile: s is this worker's anyway, and
 *                       the caller ends it.
 *
 * Between release and adopt nothing may touch s but the transport moving
 * it (an inbox message carries it). */
void xd_session_detach(xd_session_t *s, const xd_log_t *log);
void xd_session_release(xd_session_t *s);
int xd_session_adopt(xd_session_t *s, const xd_session_ref_t *ref, const char *ip,
                     const xd_log_t *log);

/* Client State Indication (XEP-0352): the client sent <inactive/>
 * (active false) or <active/> (flushes what was held).  While inactive,
 * stanzas to the session are classified on their way to the transport:
 * available/unavailable presence is held (the newest per full 'from'
 * replacing an older one in its place), a message that is only chat
 * states or a PEP event is held, anything else flushes the queue in order
 * and is then written. */
void xd_session_csi(xd_session_t *s, bool active);

/* Registers connected_users, connected_users_number, user_sessions_info and
 * kick_session. */
void xd_session_register_commands(void);

#endif

/*
 * hooks.h — named hooks: ordered handler chains that modules attach to
 * events of the core (DESIGN.md 5; STYLE.md 3.6; ejabberd_hooks, Prosody's
 * module:hook).
 *
 * A hook is a value of xd_hook_id, never a string, so a misspelled hook does
 * not compile.  Each hook passes one typed event struct (listed below next
 * to its id) as `ev`; the handler casts it to that type.
 *
 * Scope: a handler is added for one served host or, with host NULL, for
 * every host.  xd_hook_run(id, host, ev) calls the global handlers and those
 * of `host` together, ordered by priority (lower number first; 50 is the
 * default; equal priorities run in the order they were added).  A handler
 * returns XD_HOOK_OK to let the chain go on or XD_HOOK_STOP to end it (the
 * event was dealt with; for FILTER_PACKET after a drop).
 *
 * Threads: add, remove and run may be called from any thread at any time.
 * A run works on a snapshot of the chain taken under a short read lock and
 * calls the handlers without holding any lock, so a handler may add or
 * remove handlers (the change applies to later runs).  Consequence: after
 * xd_hook_remove returns, a run that took its snapshot earlier may still
 * call the removed handler once; xd_hook_sync() waits until no such run is
 * left (the module loader calls it before unloading a .so).  Handlers run on
 * the caller's thread, usually a worker loop: they must not block.
 */
#ifndef XMPPD_HOOKS_H
#define XMPPD_HOOKS_H

#include <stdbool.h>
#include <stddef.h>

#include "xmppd/el.h"
#include "xmppd/jid.h"

typedef enum xd_hook_id {
    XD_HOOK_USER_AVAILABLE,   /* xd_hook_presence_t: a resource sent available presence */
    XD_HOOK_USER_UNAVAILABLE, /* xd_hook_presence_t: a resource went unavailable */
    XD_HOOK_MESSAGE_OFFLINE,  /* xd_hook_stanza_t: a message to a user with no session */
    XD_HOOK_SESSION_BOUND,    /* xd_hook_session_t: a resource was bound */
    XD_HOOK_SESSION_CLOSED,   /* xd_hook_session_t: a bound session ended */
    XD_HOOK_USER_REMOVED,     /* xd_hook_user_t: an account was deleted */
    XD_HOOK_FILTER_PACKET,    /* xd_hook_filter_t: a stanza being routed; may drop/replace */
    XD_HOOK_PRESENCE_EDIT,    /* xd_hook_presence_edit_t: a user's available presence, editable */
    XD_HOOK_COUNT_            /* number of hooks (not a hook) */
} xd_hook_id;

typedef enum xd_hook_rc {
    XD_HOOK_OK = 0,   /* go on with the next handler */
    XD_HOOK_STOP = 1, /* end the chain */
} xd_hook_rc;

#define XD_HOOK_PRIO_DEFAULT 50

/* USER_AVAILABLE / USER_UNAVAILABLE.  Lent for the run. */
typedef struct xd_hook_presence {
    const char *host;             /* the user's served host */
    const xd_jid_t *jid;          /* the full JID of the resource */
    const xd_stanza_t *presence;  /* the presence stanza; NULL when the session just ended */
    bool initial;                 /* AVAILABLE: the first since the session was unavailable */
    bool first_nonneg;            /* AVAILABLE: the first with a priority >= 0 since then (the
                                     session can now take messages to the bare JID) */
} xd_hook_presence_t;

/* MESSAGE_OFFLINE.  Lent for the run; xd_stanza_ref() to keep the stanza. */
typedef struct xd_hook_stanza {
    const char *host;         /* the recipient's served host */
    const xd_jid_t *to;       /* the recipient */
    const xd_stanza_t *st;    /* the message */
} xd_hook_stanza_t;

/* SESSION_BOUND / SESSION_CLOSED.  Lent for the run. */
typedef struct xd_hook_session {
    const char *host;      /* the served host */
    const xd_jid_t *jid;   /* the bound full JID */
    const char *reason;    /* CLOSED: why ("disconnected", "replaced", …); NULL for BOUND */
} xd_hook_session_t;

/* USER_REMOVED.  Lent for the run. */
typedef struct xd_hook_user {
    const char *host;  /* the served host */
    const char *user;  /* the localpart, prepared */
} xd_hook_user_t;

/* FILTER_PACKET.  `st` is owned by the event: a handler that replaces the
 * stanza unrefs the old one and stores the new reference; one that drops it
 * unrefs it, sets st to NULL and returns XD_HOOK_STOP.  The runner sends
 * whatever st holds afterwards (nothing when NULL). */
typedef struct xd_hook_filter {
    const char *host;    /* the served host the stanza is routed for (or sent from) */
    xd_stanza_t *st;     /* in/out, one reference */
    const xd_jid_t *to;  /* st's 'to', parsed by the router (lent for the run); a
                          * handler that replaces st keeps the same 'to' */
} xd_hook_filter_t;

/* PRESENCE_EDIT: available presence a client sends (its own, broadcast to
 * contacts and kept for probes, and directed presence such as a MUC join),
 * before it is stored or routed; 'from' is already the full JID.  Handlers
 * may add or remove children of `presence` (XEP-0153 avatar hashes, …);
 * not its attributes.  Runs on the session's worker: must not block. */
typedef struct xd_hook_presence_edit {
    const char *host;        /* the user's served host */
    const xd_jid_t *jid;     /* the full JID of the session */
    xd_el_t *presence;       /* the presence element, mutable for the run */
} xd_hook_presence_edit_t;

/* ev points at the event struct of the hook the handler was added to. */
typedef int (*xd_hook_fn)(void *ev, void *arg);

/* Adds fn (with arg) to hook `id` for `host` (copied; NULL = every host) at
 * priority `prio` (lower runs first).  XD_EINVAL for a bad id or NULL fn;
 * XD_EEXIST when the same (id, host, fn, arg) is already there. */
int xd_hook_add(xd_hook_id id, const char *host, int prio, xd_hook_fn fn, void *arg);

/* Removes what xd_hook_add(id, host, *, fn, arg) added; true when found. */
bool xd_hook_remove(xd_hook_id id, const char *host, xd_hook_fn fn, void *arg);

/* Runs hook `id` for `host` with event `ev`: every handler of that host and
 * every global one, in priority order, until one returns XD_HOOK_STOP.
 * Returns XD_HOOK_STOP when one did, else XD_HOOK_OK (also for no
 * handlers).  Any thread; no lock is held while handlers run. */
int xd_hook_run(xd_hook_id id, const char *host, void *ev);

/* Number of handlers that a run for `host` would call (tests, status). */
size_t xd_hook_count(xd_hook_id id, const char *host);

/* Waits until every run that started before this call has finished: after
 * it, removed handlers are never called again.  Must not be called from a
 * hook handler (it would wait for itself). */
void xd_hook_sync(void);

/* "user_available", …: for logs and docs; NULL for a bad id. */
const char *xd_hook_name(xd_hook_id id);

/* Removes every handler of every hook (shutdown, tests). */
void xd_hook_clear(void);

#endif

/*
 * hooks.h — typed hooks: ordered handler chains that modules attach to
 * events of the server (DESIGN.md 5; STYLE.md 3.6; ejabberd_hooks,
 * Prosody's module:hook).
 *
 * Every hook is listed once, in hooks.def, with the struct its handlers
 * get.  From that list this header makes the enum (XD_HOOK_<ID>), one
 * handler type per hook and typed add/remove/run calls, so a misspelled
 * hook or a handler for the wrong payload does not compile:
 *
 *   static int
 *   on_removed(xd_module_ctx_t *ctx, xd_hook_user_t *ev, void *arg)
 *   {
 *       ... delete ev->user's data on ev->host ...
 *       return XD_HOOK_OK;                    // XD_HOOK_STOP ends the chain
 *   }
 *   xd_module_hook(ctx, XD_HOOK_REMOVE_USER, XD_HOOK_PRIO_DEFAULT, on_removed, NULL);
 *
 * A handler gets the context of the module instance that added it (NULL
 * for the core's own handlers), the event, and the argument it was added
 * with.
 *
 * Scope: a handler is added for one served host or, with host NULL, for
 * every host.  A run for `host` calls the global handlers and those of
 * `host` together, ordered by priority (lower number first; 50 is the
 * default; equal priorities run in the order they were added).  A handler
 * returns XD_HOOK_OK to let the chain go on or XD_HOOK_STOP to end it (the
 * event was dealt with; for a packet hook after a drop).
 *
 * Threads: add, remove and run may be called from any thread at any time.
 * A run works on a snapshot of the chain and calls the handlers without
 * holding any lock, so a handler may add or remove handlers (the change
 * applies to later runs).  After xd_hook_remove returns, a run that took
 * its snapshot earlier may still call the removed handler once;
 * xd_hook_sync() waits until no such run is left (the module manager calls
 * it before a module's stop).  hooks.def says on which thread each hook
 * runs; "loop" and "any" handlers must not block.
 */
#ifndef XMPPD_HOOKS_H
#define XMPPD_HOOKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "xmppd/el.h"
#include "xmppd/jid.h"
#include "xmppd/roster.h"

typedef struct xd_module_ctx xd_module_ctx_t; /* module.h */
typedef struct xd_session xd_session_t;       /* session.h */

typedef enum xd_hook_id {
#define XD_HOOK(ID, name, T, thread, doc) XD_HOOK_##ID,
#include "xmppd/hooks.def"
#undef XD_HOOK
    XD_HOOK_COUNT_ /* number of hooks (not a hook) */
} xd_hook_id;

typedef enum xd_hook_rc {
    XD_HOOK_OK = 0,   /* go on with the next handler */
    XD_HOOK_STOP = 1, /* end the chain */
} xd_hook_rc;

#define XD_HOOK_PRIO_DEFAULT 50

/* ---- payloads (lent for the run unless a field says otherwise) ------------------------------ */

/* SM_REGISTER_CONNECTION, SM_REMOVE_CONNECTION. */
typedef struct xd_hook_session {
    const char *host;      /* the served host */
    const xd_jid_t *jid;   /* the bound full JID */
    const char *reason;    /* REMOVE: why ("closed", "disconnected", …); NULL for REGISTER */
} xd_hook_session_t;

/* USER_AVAILABLE, USER_UNAVAILABLE. */
typedef struct xd_hook_presence {
    const char *host;             /* the user's served host */
    const xd_jid_t *jid;          /* the full JID of the session */
    const xd_stanza_t *presence;  /* the presence stanza; NULL when the session just ended */
    bool initial;                 /* AVAILABLE: the first since the session was unavailable */
    bool first_nonneg;            /* AVAILABLE: the first with a priority >= 0 since then (the
                                     session can now take messages to the bare JID) */
} xd_hook_presence_t;

/* PRESENCE_EDIT: handlers may add or remove children of `presence`, not
 * its attributes; 'from' is already the full JID. */
typedef struct xd_hook_presence_edit {
    const char *host;        /* the user's served host */
    const xd_jid_t *jid;     /* the full JID of the session */
    xd_el_t *presence;       /* the presence element, mutable for the run */
} xd_hook_presence_edit_t;

/* TICK. */
typedef struct xd_hook_tick {
    uint64_t now_ms;   /* the worker loop's clock */
    unsigned worker;   /* which worker */
} xd_hook_tick_t;

/* USER_SEND_PACKET, USER_RECEIVE_PACKET, FILTER_PACKET and
 * S2S_RECEIVE_PACKET own their stanza: a handler that replaces it unrefs
 * the old one and stores the new reference; one that drops it unrefs it,
 * sets st to NULL and returns XD_HOOK_STOP.  The runner carries on with
 * whatever st holds afterwards (nothing when NULL). */
typedef struct xd_hook_packet {
    const char *host;       /* the session's served host */
    const xd_jid_t *jid;    /* the session's full JID */
    xd_session_t *session;  /* the session, on its owner worker (session.h) */
    xd_stanza_t *st;        /* in/out, one reference */
} xd_hook_packet_t;

/* FILTER_PACKET. */
typedef struct xd_hook_filter {
    const char *host;    /* the served host the stanza is routed for (or sent from) */
    xd_stanza_t *st;     /* in/out, one reference */
    const xd_jid_t *to;  /* st's 'to', parsed by the router; a handler that replaces st
                          * keeps the same 'to' */
} xd_hook_filter_t;

/* S2S_RECEIVE_PACKET. */
typedef struct xd_hook_s2s_packet {
    const char *local;   /* our domain the stanza came to (the run's host) */
    const char *remote;  /* the authenticated sending domain */
    xd_stanza_t *st;     /* in/out, one reference */
} xd_hook_s2s_packet_t;

/* PRIVACY_CHECK_PACKET: may `user`'s rules let el pass, incoming from
 * `other` (outgoing false) or outgoing to it?  A handler that refuses sets
 * deny and returns XD_HOOK_STOP. */
typedef struct xd_hook_privacy_check {
    const xd_jid_t *user;  /* the account whose rules apply: a session's full JID, or the
                            * bare JID when no one session is meant (a subscription) */
    const xd_jid_t *other; /* the other party */
    const xd_el_t *el;     /* the stanza */
    bool outgoing;         /* from user to other (else to user from other) */
    bool deny;             /* out: refused */
} xd_hook_privacy_check_t;

/* OFFLINE_MESSAGE.  xd_stanza_ref() to keep the stanza. */
typedef struct xd_hook_stanza {
    const char *host;         /* the recipient's served host */
    const xd_jid_t *to;       /* the recipient */
    const xd_stanza_t *st;    /* the message */
} xd_hook_stanza_t;

/* C2S_STREAM_FEATURES: handlers append feature elements to `features`
 * (a container whose children are offered in order). */
typedef struct xd_hook_features {
    const char *host;     /* the served host of the stream */
    bool authenticated;   /* false: offered with the SASL mechanisms; true: with bind */
    bool secure;          /* TLS is up */
    bool tls_required;    /* TLS is required and not up: offer nothing that needs it */
    xd_el_t *features;    /* the container, mutable for the run */
} xd_hook_features_t;

/* C2S_UNAUTHENTICATED_IQ: a handler that takes the IQ returns XD_HOOK_STOP
 * and later (or at once) calls xd_preauth_answer(ev->req, …) exactly once;
 * until then the stream reads nothing more. */
typedef struct xd_preauth xd_preauth_t;
typedef struct xd_hook_preauth {
    const char *host;              /* the served host of the stream */
    const xd_stanza_t *iq;         /* the request */
    const char *ip;                /* the client's address, printable */
    const struct sockaddr *peer;   /* ... for `ip:` access rules */
    bool secure;                   /* TLS is up */
    bool tls_required;             /* the listener requires TLS, and it is not up */
    bool registered;               /* this stream registered an account already */
    xd_preauth_t *req;             /* the answer's token (see above) */
} xd_hook_preauth_t;

/* What an answered pre-authentication request did to the stream. */
enum {
    XD_PREAUTH_REGISTERED = 1u << 0, /* an account was registered on it */
};

/* Answers a C2S_UNAUTHENTICATED_IQ the handler took: writes reply
 * (borrowed; NULL: nothing) to the stream, applies flags (XD_PREAUTH_*) and
 * lets the stream go on.  Any thread; the token is freed. */
void xd_preauth_answer(xd_preauth_t *req, const xd_stanza_t *reply, unsigned flags);

/* REMOVE_USER. */
typedef struct xd_hook_user {
    const char *host;  /* the served host */
    const char *user;  /* the localpart, prepared */
} xd_hook_user_t;

/* ACCOUNT_EXPORT (blocking pool or the command's thread; may block): a
 * handler appends what it keeps of the account to `user`, the <user
 * xmlns='urn:xmpp:pie:0'/> element of XEP-0227 (its children in the
 * handler's own namespaces: <query xmlns='jabber:iq:roster'/>, <vCard/>,
 * …).  On a storage failure it sets rc (an XD_E* code) and `module` and
 * returns XD_HOOK_STOP: the account's export fails as a whole. */
typedef struct xd_hook_account_export {
    const char *host;    /* the served host */
    const char *user;    /* the localpart, prepared */
    xd_el_t *user_el;    /* the <user/> being built, mutable for the run */
    int rc;              /* out: 0 or the first error */
    const char *module;  /* out: who failed (for the message) */
} xd_hook_account_export_t;

/* ACCOUNT_IMPORT (the command's thread; may block): runs inside the
 * storage transaction (xd_db_tx) that creates the account, so a handler
 * writes with the synchronous storage API on xd_module_db() and everything
 * of the account is stored or nothing is.  A handler stores the children of
 * `user_el` in its namespaces and sets taken[i] for the i-th child it
 * stored (children counted from 0 in document order); children no handler
 * took are reported as unknown.  On bad data or a storage failure it sets
 * rc (XD_EINVAL for bad data), writes a message to err and returns
 * XD_HOOK_STOP: the account is not imported. */
typedef struct xd_hook_account_import {
    const char *host;        /* the served host */
    const char *user;        /* the localpart, prepared */
    const xd_el_t *user_el;  /* the <user/> from the file */
    bool *taken;             /* taken[0..nchildren): out, per child */
    size_t nchildren;        /* children of user_el */
    int rc;                  /* out: 0 or an XD_E* code */
    char *err;               /* out: what went wrong, for the operator (a buffer of
                              * XD_HOOK_IMPORT_ERR_MAX bytes, "" on entry) */
} xd_hook_account_import_t;

#define XD_HOOK_IMPORT_ERR_MAX 256 /* bytes of xd_hook_account_import_t.err */

/* ROSTER_GET (blocking pool): the handler that keeps the host's rosters
 * calls fn for every item of user's roster (in_roster or only pending
 * in; with contact set, for that contact's item if there is one), sets rc
 * (0 or an error) and served, and returns XD_HOOK_STOP.  fn returns 0 to
 * go on, non-zero to stop. */
typedef struct xd_hook_roster_get {
    const char *host;  /* the user's served host */
    const char *user;  /* the localpart */
    const char *contact; /* only this contact's item (a bare JID), or NULL for all */
    int (*fn)(void *arg, const xd_roster_view_t *item); /* gets each item, lent */
    void *arg;         /* fn's argument */
    int rc;            /* out: 0 or an XD_E* code */
    bool served;       /* out: a roster answered */
} xd_hook_roster_get_t;

/* ROSTER_CHANGED. */
typedef struct xd_hook_roster_changed {
    const char *host;              /* the user's served host */
    const char *user;              /* the localpart */
    const xd_roster_view_t *item;  /* the item after the change (in_roster false: gone) */
} xd_hook_roster_changed_t;

/* ROSTER_IN_SUBSCRIPTION, ROSTER_OUT_SUBSCRIPTION. */
typedef struct xd_hook_subscription {
    const char *host;        /* the local user's served host */
    const xd_jid_t *user;    /* the local user (bare JID) */
    const xd_jid_t *contact; /* the other party (bare JID) */
    const char *type;        /* subscribe, subscribed, unsubscribe, unsubscribed */
    const xd_stanza_t *st;   /* the presence */
} xd_hook_subscription_t;

/* DISCO_*: the <query/> of the reply being built, after what the server
 * itself lists (identities, features of registered IQ handlers).  With a
 * node (XEP-0030 3.2) the query starts empty and only the handlers that
 * serve that node add to it; a disco#info nobody added to is
 * item-not-found.  A handler describing the entity itself adds nothing
 * when node is set. */
typedef struct xd_hook_disco {
    const char *host;      /* the served host */
    const xd_jid_t *from;  /* the requester */
    const xd_jid_t *to;    /* the host's JID (LOCAL) or the account's bare JID (SM) */
    const char *node;      /* the node asked for, or NULL */
    xd_el_t *query;        /* the reply's <query/>, mutable for the run */
} xd_hook_disco_t;

/* MUC_ROOM_EVENT: something happened in a multi-user chat room (mod_muc),
 * on the room's owner worker, after the room's state changed and before
 * the occupants hear of it (so a round trip of an occupant that got the
 * room's stanza comes after the handlers ran).  Every string is lent for
 * the run; a handler that keeps anything copies it. */
typedef enum xd_muc_event_kind {
    XD_MUC_EV_JOIN,     /* nick entered the room */
    XD_MUC_EV_LEAVE,    /* nick left; text: the status it left with, or NULL */
    XD_MUC_EV_NICK,     /* nick is now known as new_nick */
    XD_MUC_EV_SUBJECT,  /* nick set the subject to text ("" : cleared it) */
    XD_MUC_EV_MESSAGE,  /* nick said text (the body of a groupchat message; st: the message
                         * as broadcast, from room/nick, without 'to') */
    XD_MUC_EV_KICK,     /* nick was kicked by actor (NULL: the service); text: the reason */
    XD_MUC_EV_BAN,      /* nick was banned by actor; text: the reason */
    XD_MUC_EV_CONFIG,   /* the configuration changed (title and logging are the new ones) */
    XD_MUC_EV_DESTROY,  /* the room was destroyed; text: the reason, or NULL */
} xd_muc_event_kind;

typedef struct xd_hook_muc_event {
    const char *host;      /* the served host the MUC service belongs to */
    const char *service;   /* the service's domain ("conference.example.org") */
    const char *room;      /* the room's local part */
    const char *title;     /* its muc#roomconfig_roomname, or NULL */
    bool logging;          /* its configuration enables logging (muc#roomconfig_enablelogging) */
    int kind;              /* xd_muc_event_kind: XD_MUC_EV_JOIN, _LEAVE, _NICK, _SUBJECT, _MESSAGE,
                            * _KICK, _BAN, _CONFIG, _DESTROY (hooks.h) */
    const char *nick;      /* the occupant concerned, or NULL (CONFIG, DESTROY) */
    const char *new_nick;  /* NICK: the new nick */
    const char *actor;     /* KICK, BAN: the moderator's nick, or NULL */
    const char *text;      /* see the kinds */
    const xd_stanza_t *st; /* MESSAGE: the message; else the stanza that caused it, or NULL */
} xd_hook_muc_event_t;

/* ---- handlers and the typed calls ---------------------------------------------------------- */

/* A handler as stored (any hook's handler type, converted). */
typedef void (*xd_hook_fn_any)(void);

/* Calls a stored handler with its real type (made per hook below). */
typedef int (*xd_hook_caller)(xd_hook_fn_any fn, xd_module_ctx_t *ctx, void *ev, void *arg);

/* The untyped machinery behind the typed calls; use those. */
int xd_hook_add_any(xd_hook_id id, const char *host, xd_module_ctx_t *ctx, int prio,
                    xd_hook_fn_any fn, void *arg);
/* A registration is (handler, argument, host, module instance): two modules may add the same
 * handler with the same argument, and each removes its own. */
bool xd_hook_remove_any(xd_hook_id id, const char *host, xd_module_ctx_t *ctx, xd_hook_fn_any fn,
                        void *arg);
int xd_hook_run_any(xd_hook_id id, const char *host, void *ev, xd_hook_caller call);
int xd_hook_run_all_any(xd_hook_id id, void *ev, xd_hook_caller call);
int xd_module_hook_any(xd_module_ctx_t *ctx, xd_hook_id id, int prio, xd_hook_fn_any fn,
                       void *arg);

#define XD_HOOK(ID, name, T, thread, doc)                                                       \
    typedef int (*xd_hook_fn_XD_HOOK_##ID)(xd_module_ctx_t * ctx, T * ev, void *arg);          \
    static inline int xd_hook_call_XD_HOOK_##ID(xd_hook_fn_any fn, xd_module_ctx_t *ctx,       \
                                                void *ev, void *arg)                           \
    {                                                                                          \
        return ((xd_hook_fn_XD_HOOK_##ID)fn)(ctx, (T *)ev, arg);                               \
    }                                                                                          \
    static inline int xd_hook_run_XD_HOOK_##ID(const char *host, T *ev)                        \
    {                                                                                          \
        return xd_hook_run_any(XD_HOOK_##ID, host, ev, xd_hook_call_XD_HOOK_##ID);             \
    }                                                                                          \
    static inline int xd_hook_run_all_XD_HOOK_##ID(T *ev)                                      \
    {                                                                                          \
        return xd_hook_run_all_any(XD_HOOK_##ID, ev, xd_hook_call_XD_HOOK_##ID);               \
    }                                                                                          \
    static inline int xd_hook_add_XD_HOOK_##ID(const char *host, int prio,                     \
                                               xd_hook_fn_XD_HOOK_##ID fn, void *arg)          \
    {                                                                                          \
        return xd_hook_add_any(XD_HOOK_##ID, host, NULL, prio, (xd_hook_fn_any)fn, arg);       \
    }                                                                                          \
    static inline bool xd_hook_remove_XD_HOOK_##ID(const char *host,                           \
                                                   xd_hook_fn_XD_HOOK_##ID fn, void *arg)      \
    {                                                                                          \
        return xd_hook_remove_any(XD_HOOK_##ID, host, NULL, (xd_hook_fn_any)fn, arg);          \
    }                                                                                          \
    static inline int xd_module_hook_XD_HOOK_##ID(xd_module_ctx_t *ctx, int prio,              \
                                                  xd_hook_fn_XD_HOOK_##ID fn, void *arg)       \
    {                                                                                          \
        return xd_module_hook_any(ctx, XD_HOOK_##ID, prio, (xd_hook_fn_any)fn, arg);           \
    }
#include "xmppd/hooks.def"
#undef XD_HOOK

/* Adds fn (with arg) to hook ID for `host` (copied; NULL = every host) at
 * priority `prio` (lower runs first); its ctx is NULL.  XD_EINVAL for a
 * NULL fn; XD_EEXIST when the same (ID, host, fn, arg) is already there.
 * Modules use xd_module_hook (module.h), which records the handler. */
#define xd_hook_add(ID, host, prio, fn, arg) xd_hook_add_##ID((host), (prio), (fn), (arg))

/* Removes what xd_hook_add(ID, host, *, fn, arg) added; true when found. */
#define xd_hook_remove(ID, host, fn, arg) xd_hook_remove_##ID((host), (fn), (arg))

/* Runs hook ID for `host` with event `ev` (a pointer to ID's payload):
 * every handler of that host and every global one, in priority order,
 * until one returns XD_HOOK_STOP.  Returns XD_HOOK_STOP when one did,
 * else XD_HOOK_OK (also for no handlers).  No lock is held while handlers
 * run. */
#define xd_hook_run(ID, host, ev) xd_hook_run_##ID((host), (ev))

/* Runs hook ID with every handler, whatever host it was added for (TICK). */
#define xd_hook_run_all(ID, ev) xd_hook_run_all_##ID((ev))

/* Adds a handler for the module instance ctx, on its host, recorded in ctx
 * and removed before the instance stops (module.h). */
#define xd_module_hook(ctx, ID, prio, fn, arg) xd_module_hook_##ID((ctx), (prio), (fn), (arg))

/* Number of handlers that a run for `host` would call (tests, status). */
size_t xd_hook_count(xd_hook_id id, const char *host);

/* True when hook id has any handler at all: a run that would find none can
 * be skipped without building its event.  One atomic load. */
bool xd_hook_active(xd_hook_id id);

/* Waits until every run that started before this call has finished: after
 * it, removed handlers are never called again.  Must not be called from a
 * hook handler (it would wait for itself). */
void xd_hook_sync(void);

/* "user_available", …: for logs and docs; NULL for a bad id. */
const char *xd_hook_name(xd_hook_id id);

/* Where handlers of id run: "loop", "pool" or "any"; and its one-line
 * description.  NULL for a bad id. */
const char *xd_hook_thread(xd_hook_id id);
const char *xd_hook_doc(xd_hook_id id);

/* Removes every handler of every hook (shutdown, tests). */
void xd_hook_clear(void);

#endif

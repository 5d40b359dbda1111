/*
 * route.h — handing a stanza to the router (public module API; DESIGN.md 1;
 * RFC 6120 10, RFC 6121 8).
 *
 * The router sends a stanza where its 'to' says: a served host's local
 * router (IQ handlers by namespace), a local account's sessions (by
 * resource, or by presence and priority for the bare JID, RFC 6121 8.5),
 * a service of this process (service.h), or another server.  Filters
 * (XD_HOOK_FILTER_PACKET) run first for stanzas to or from a served host.
 * Errors go back to the sender as stanza errors; never an error for an
 * error (RFC 6120 8.3.1).
 *
 * The stanza's 'from' must be set (a stream stamps it; the router trusts
 * it) and its 'to' present.  Any thread; nothing here blocks.
 *
 * Ownership is in the name (STYLE.md 3.7): xd_route borrows the stanza
 * (taking its own reference), xd_route_take takes the caller's.
 */
#ifndef XMPPD_ROUTE_H
#define XMPPD_ROUTE_H

#include <stddef.h>

#include "xmppd/conds.h"
#include "xmppd/el.h"
#include "xmppd/jid.h"

/* Routes st; the caller keeps its reference. */
void xd_route(const xd_stanza_t *st);

/* Routes st; the caller's reference is taken over. */
void xd_route_take(xd_stanza_t *st);

/* Routes the error reply to req (xd_stanza_error: nothing for an error or
 * an IQ result).  req is borrowed. */
void xd_route_error(const xd_stanza_t *req, xd_cond cond, const char *text);

/* ---- fan-out: one stanza to many recipients -------------------------------------------------
 *
 * A group chat sends one stanza to many full JIDs, and only 'to' differs.
 * A fan-out carries it to each destination worker in ONE inbox message,
 * with the recipients that worker owns; there every recipient's copy is
 * xd_stanza_readdress(st, to) (el.h: the body is serialized once, shared)
 * and is routed as xd_route_take routes any stanza: the filters
 * (XD_HOOK_FILTER_PACKET: privacy lists, blocking), the session lookup,
 * USER_RECEIVE_PACKET, Client State Indication, the stream management
 * queue, carbons' rules, the error back to the sender when a session is
 * gone.  Recipients off this server, or with no worker given, are routed
 * from the calling thread.
 *
 *     xd_fanout_t *f = xd_fanout_new(st);        // st has no 'to'
 *     for (...) xd_fanout_add(f, occupant_full_jid, hint);
 *     size_t posts = xd_fanout_send(f);          // inbox messages posted
 *
 * The worker is a hint: the worker that owned the recipient's session when
 * it was looked up (xd_session_find: info.ref.worker), or -1.  A session
 * that moved meanwhile (stream management resumed it elsewhere) is still
 * reached (the router forwards its copy), one hop later.  Copies to one
 * recipient keep the order of the fan-outs and routes made by one thread
 * to it while its session stays on its worker (RFC 6120 10.1).  Any
 * thread; nothing blocks. */
typedef struct xd_fanout xd_fanout_t;

/* A fan-out of st (borrowed: a reference is taken). */
xd_fanout_t *xd_fanout_new(const xd_stanza_t *st);

/* Adds recipient `to` (a full or bare JID, copied), whose session is on
 * worker `worker` (-1: not known, or not a local session). */
void xd_fanout_add(xd_fanout_t *f, const char *to, int worker);

/* The same for a parsed JID (a reference is taken): its copy carries it
 * as its parsed 'to' (stanza.h), so the router does not parse the string
 * of every copy again. */
void xd_fanout_add_jid(xd_fanout_t *f, xd_jid_t *to, int worker);

/* Sends every copy and frees f.  Returns how many inbox messages were
 * posted (one per destination worker other than the calling one). */
size_t xd_fanout_send(xd_fanout_t *f);

#endif

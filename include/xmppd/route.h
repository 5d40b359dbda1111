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

#include "xmppd/conds.h"
#include "xmppd/el.h"

/* Routes st; the caller keeps its reference. */
void xd_route(const xd_stanza_t *st);

/* Routes st; the caller's reference is taken over. */
void xd_route_take(xd_stanza_t *st);

/* Routes the error reply to req (xd_stanza_error: nothing for an error or
 * an IQ result).  req is borrowed. */
void xd_route_error(const xd_stanza_t *req, xd_cond cond, const char *text);

#endif

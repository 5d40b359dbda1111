/*
 * router.h — where a stanza goes (DESIGN.md 1; RFC 6120 10, RFC 6121 8);
 * the routing entry points are public (include/xmppd/route.h).
 *
 *   xd_route_take(st) ── to a served host? ── no ──► a service of this
 *        │                                            process (service.h),
 *        │ yes                                        else the remote route
 *        ├── to the host itself ──► local router: IQ handlers by namespace
 *        │                          (include/xmppd/iq.h)
 *        └── to a user ──► session manager: full JID → that session;
 *                          bare JID → by type and presence priority
 *                          (RFC 6121 8.5)
 *
 * Hooks run here: FILTER_PACKET for every stanza to a served host (a
 * handler may replace or drop it) and for every stanza from a served host
 * to another server (ev.host is then the sender's host), OFFLINE_MESSAGE
 * for a chat or normal message that no session takes (a handler that keeps
 * it returns XD_HOOK_STOP; otherwise the sender gets service-unavailable).
 *
 * A stanza reaches a session through its handle (xd_session_send_take);
 * nothing here knows what carries a session.  Stanzas for other servers go
 * to the remote route that the s2s manager installs; without one they
 * bounce with remote-server-not-found.
 */
#ifndef XMPPD_ROUTER_ROUTER_H
#define XMPPD_ROUTER_ROUTER_H

#include "xmppd/el.h"
#include "xmppd/route.h"

/* Takes st (one reference) for `domain`, a domain this process does not
 * serve. */
typedef void (*xd_router_remote_fn)(xd_stanza_t *st, const char *domain);

/* Installs the route to other servers (the s2s manager, at start), or
 * removes it (NULL).  Before the workers start / after they stopped. */
void xd_router_set_remote(xd_router_remote_fn fn);

#endif

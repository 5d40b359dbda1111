/*
 * router.h — where a stanza goes (DESIGN.md 1; RFC 6120 10, RFC 6121 8).
 *
 *   xd_route(st) ── to a served host? ── no ──► a service of this process
 *        │                                      (service.h), else the s2s
 *        │ yes                                  manager (src/s2s/s2s.h)
 *        ├── to the host itself ──► local router: IQ handlers by namespace
 *        │                          (include/xmppd/iq.h)
 *        └── to a user ──► session manager: full JID → that session;
 *                          bare JID → by type and presence priority
 *                          (RFC 6121 8.5)
 *
 * Hooks run here: FILTER_PACKET for every stanza to a served host (a
 * handler may replace or drop it) and for every stanza from a served host
 * to another server (ev.host is then the sender's host), MESSAGE_OFFLINE for a chat or normal
 * message that no session takes (a handler that keeps it returns
 * XD_HOOK_STOP; otherwise the sender gets service-unavailable).
 *
 * A stanza reaches a session by a message to the session's owner worker
 * (xd_c2s_deliver); nothing here touches a stream.  Any thread; the caller
 * gives its reference to the stanza away.
 */
#ifndef XMPPD_ROUTER_ROUTER_H
#define XMPPD_ROUTER_ROUTER_H

#include <stdbool.h>

#include "xmppd/el.h"
#include "xmppd/jid.h"

/* Routes st.  Its 'from' must be set (a stream stamps it; the router
 * trusts it) and its 'to' present (a stream resolves a missing 'to' first,
 * RFC 6120 10.3).  Errors go back to the sender as stanza errors (never an
 * error for an error, RFC 6120 8.3.1).  Takes over the reference. */
void xd_route(xd_stanza_t *st);


#endif

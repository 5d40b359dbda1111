/*
 * service.h — service routes: a domain served by code in this process
 * (DESIGN.md 1: "component / service"): a module's echo service, MUC,
 * pubsub, upload, an IRC gateway.  External components (XEP-0114) register
 * here too while they are connected.
 *
 * The router looks a stanza's destination domain up here after the served
 * hosts and before the s2s manager.  The handler runs on the routing thread
 * (a worker loop): it must not block, and it owns the stanza it is given.
 */
#ifndef XMPPD_SERVICE_H
#define XMPPD_SERVICE_H

#include <stdbool.h>

#include "xmppd/el.h"

typedef struct xd_module_ctx xd_module_ctx_t; /* module.h */

/* A service's handler: ctx is the module instance that added the route
 * (NULL for the core's routes, such as external components). */
typedef void (*xd_service_fn)(xd_module_ctx_t *ctx, xd_stanza_t *st, void *arg);

/* Routes stanzas to `domain` (normalised here as a JID's domain part:
 * "Echo.Example.ORG" serves echo.example.org) to fn.  XD_EEXIST when
 * taken, XD_EINVAL for a bad argument or a domain that is not one.  Any thread.  Modules use
 * xd_module_service (module.h). */
int xd_service_add(const char *domain, xd_service_fn fn, void *arg);

/* xd_service_add for a module instance (ctx held while fn runs). */
int xd_service_add_ctx(xd_module_ctx_t *ctx, const char *domain, xd_service_fn fn, void *arg);

/* Removes the route (only when fn still holds it); true when removed. */
bool xd_service_remove(const char *domain, xd_service_fn fn);

/* Router side: hands st to the service of `domain` and returns true, or
 * returns false (st untouched) when there is none. */
bool xd_service_deliver(const char *domain, xd_stanza_t *st);

/* True when `domain` has a service route now.  Any thread. */
bool xd_service_exists(const char *domain);

/* For a service's handler: the answers every service domain gives alike,
 * so that the handler deals only with its own protocol.  Answers (or
 * drops) st and returns true when it is not a request to the service
 * itself: a stanza without from or to, one to a JID with a localpart, a
 * message or presence (messages other than errors get
 * service-unavailable, the rest is dropped), a disco#items get without a
 * node (an empty list) or a ping (a result).  Returns false, untouched,
 * for an IQ to the bare domain the handler answers: its disco#info, its
 * own namespaces, and service-unavailable for what it does not know
 * (xd_route_error).  st stays the caller's. */
bool xd_service_answer_common(const xd_stanza_t *st);

/* Drops every route (shutdown, tests). */
void xd_service_clear(void);

#endif

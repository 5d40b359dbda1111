/*
 * module_int.h — what the registries of the router layer (iq.c, service.c)
 * need from the module manager (module.c): keeping an instance from
 * stopping while one of its handlers is queued or running.
 */
#ifndef XMPPD_ROUTER_MODULE_INT_H
#define XMPPD_ROUTER_MODULE_INT_H

#include "xmppd/module.h"

/* One more call of ctx's code is in flight / is done.  NULL is a no-op.
 * Any thread.  Stopping an instance waits until its count is back to 0. */
void xd_module_hold(xd_module_ctx_t *ctx);
void xd_module_release(xd_module_ctx_t *ctx);

#endif

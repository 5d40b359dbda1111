/*
 * iq.h — IQ handlers by namespace (DESIGN.md 1, 2, 5; the gen_iq_handler
 * of the ejabberd Developers Guide).
 *
 * A handler serves one namespace (the namespace of the IQ's payload
 * element) for one of two targets:
 *
 *   XD_IQ_HOST   IQs to a served host's own JID (the local router):
 *                version, time, disco, ping to the server, …
 *   XD_IQ_USER   IQs to a local user's bare JID, which the server answers on
 *                the user's behalf (RFC 6121 8.5.1): roster, vCard, private
 *                storage, ping to the account, …
 *
 * for every served host (host NULL) or one.  The module author picks the
 * discipline in code (DESIGN.md 2):
 *
 *   XD_IQ_INLINE    runs on the thread that routes the IQ (a worker loop):
 *                   must not block;
 *   XD_IQ_PARALLEL  runs on the blocking pool; may use the synchronous
 *                   storage API.  A full pool answers resource-constraint
 *                   at once.
 *   XD_IQ_SERIAL    runs on the blocking pool, one request at a time per
 *                   registration and in arrival order (ejabberd's
 *                   one_queue): for handlers whose requests must not
 *                   overtake each other.  At most 1024 wait; more, or a
 *                   full pool, is answered resource-constraint.  Requests
 *                   still waiting when the server stops are dropped.
 *
 * A handler returns the reply: a result (xd_iq_result_builder) or an error
 * (xd_stanza_error), with one reference, which the router sends back to the
 * requester; or NULL when it answers later itself (xd_route).  Unknown
 * namespaces get service-unavailable (RFC 6120 8.4).  Registration may
 * happen from any thread at any time; the registry is read under a rwlock.
 */
#ifndef XMPPD_IQ_H
#define XMPPD_IQ_H

#include <stdbool.h>

#include "xmppd/el.h"
#include "xmppd/jid.h"

typedef struct xd_module_ctx xd_module_ctx_t; /* module.h */

typedef enum xd_iq_target { XD_IQ_HOST, XD_IQ_USER } xd_iq_target;
typedef enum xd_iq_discipline { XD_IQ_INLINE, XD_IQ_SERIAL, XD_IQ_PARALLEL } xd_iq_discipline;

/* What a handler gets; lent for the call. */
typedef struct xd_iq_req {
    const xd_stanza_t *iq;    /* the request (type get or set) */
    const xd_el_t *payload;   /* its first child element */
    const xd_jid_t *from;     /* requester (a full JID, stamped by its stream) */
    const xd_jid_t *to;       /* the host's JID or the user's bare JID */
    const char *host;         /* the served host it is for */
    xd_module_ctx_t *ctx;     /* the module instance that registered it (NULL: the core) */
    void *arg;                /* the registration's argument */
} xd_iq_req_t;

typedef xd_stanza_t *(*xd_iq_fn)(const xd_iq_req_t *req);

/* Registers fn for (host or every host, target, ns).  XD_EEXIST when that
 * triple is taken, XD_EINVAL for bad arguments.  `ns` and `host` are copied.
 * Modules use xd_module_iq (module.h), which passes their context. */
int xd_iq_register(const char *host, int target, const char *ns, int discipline, xd_iq_fn fn,
                   void *arg);

/* xd_iq_register for a module instance: req->ctx is ctx, and ctx is held
 * (xd_module_hold) while a request is queued or its handler runs. */
int xd_iq_register_ctx(xd_module_ctx_t *ctx, const char *host, int target, const char *ns,
                       int discipline, xd_iq_fn fn, void *arg);

/* Adds a disco#info feature `var` for (host or every host, target) that
 * no IQ handler stands for (urn:xmpp:sid:0, msgoffline, …): it is listed
 * with the handlers' namespaces by xd_iq_foreach_ns and removed by
 * xd_iq_unregister(host, target, var).  XD_EEXIST when the triple is taken
 * (also by a handler), XD_EINVAL for bad arguments. */
int xd_iq_feature_add(const char *host, int target, const char *var);

/* Adds a disco#info identity (XEP-0030 3.1) of the server (XD_IQ_HOST) or
 * of its accounts (XD_IQ_USER), for host or every host: `pubsub/pep` on the
 * accounts, `store/file` on the server, …  One per (category, type); name
 * may be NULL.  Listed by xd_iq_foreach_identity; removed by
 * xd_iq_unregister(host, target, xd_iq_identity_key(…)).  XD_EEXIST,
 * XD_EINVAL. */
int xd_iq_identity_add(const char *host, int target, const char *category, const char *type,
                       const char *name);

/* The registry key of an identity, into buf (at least 512 bytes); buf. */
const char *xd_iq_identity_key(char *buf, size_t cap, const char *category, const char *type);

/* Calls fn for each identity registered for (host, target).  fn must not
 * register or unregister. */
void xd_iq_foreach_identity(const char *host, int target,
                            void (*fn)(void *arg, const char *category, const char *type,
                                       const char *name),
                            void *arg);

/* Removes the registration (what was registered with these three). */
void xd_iq_unregister(const char *host, int target, const char *ns);

/* Calls fn for every namespace registered for (host, target), handlers'
 * and xd_iq_feature_add's: disco#info features.  fn must not register or unregister. */
void xd_iq_foreach_ns(const char *host, int target, void (*fn)(void *arg, const char *ns),
                      void *arg);

/* Router side: answers the request iq (reference taken over) addressed to
 * `to` (a served host's JID or a local bare JID).  Unknown namespace,
 * missing payload → service-unavailable / bad-request. */
void xd_iq_dispatch(xd_stanza_t *iq, const xd_jid_t *to, const char *host, int target);

/* Drops every registration (shutdown, tests). */
void xd_iq_clear(void);

#endif

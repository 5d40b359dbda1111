/*
 * service.c — service routes (see include/xmppd/service.h).  A small array
 * under a rwlock: services are few and change rarely.
 */
#include <pthread.h>
#include <string.h>

#include "xmppd/module.h"
#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/jid.h"
#include "xmppd/ns.h"
#include "xmppd/route.h"
#include "xmppd/stanza.h"
#include "xmppd/service.h"

typedef struct {
    char *domain;          /* normalised */
    xd_service_fn fn;      /* handler */
    xd_module_ctx_t *ctx;  /* the module instance that added it, or NULL */
    void *arg;             /* its argument */
} svc_t;

static pthread_rwlock_t svc_lock = PTHREAD_RWLOCK_INITIALIZER;
static svc_t *svc_tab;
static size_t svc_n, svc_cap;

int
xd_service_add(const char *domain, xd_service_fn fn, void *arg)
{
    return xd_service_add_ctx(NULL, domain, fn, arg);
}

int
xd_service_add_ctx(xd_module_ctx_t *ctx, const char *domain, xd_service_fn fn, void *arg)
{
    char *norm = NULL;
    /* Stored as the router compares it: the domain part of a parsed JID
     * (lower case, IDNA), whatever case the configuration wrote. */
    if (!domain || !fn || xd_jid_prep_domain(xd_str_c(domain), &norm) != 0)
        return XD_EINVAL;
    pthread_rwlock_wrlock(&svc_lock);
    for (size_t i = 0; i < svc_n; i++)
        if (!strcmp(svc_tab[i].domain, norm)) {
            pthread_rwlock_unlock(&svc_lock);
            xd_free(norm);
            return XD_EEXIST;
        }
    if (svc_n == svc_cap) {
        svc_cap = svc_cap ? svc_cap * 2 : 8;
        svc_tab = xd_realloc(svc_tab, svc_cap * sizeof *svc_tab);
    }
    svc_tab[svc_n++] = (svc_t){ norm, fn, ctx, arg };
    pthread_rwlock_unlock(&svc_lock);
    return 0;
}

bool
xd_service_remove(const char *domain, xd_service_fn fn)
{
    bool removed = false;
    char *norm = NULL;
    if (!domain || xd_jid_prep_domain(xd_str_c(domain), &norm) != 0)
        return false;
    pthread_rwlock_wrlock(&svc_lock);
    for (size_t i = 0; i < svc_n; i++)
        if (!strcmp(svc_tab[i].domain, norm) && svc_tab[i].fn == fn) {
            xd_free(svc_tab[i].domain);
            svc_tab[i] = svc_tab[--svc_n];
            removed = true;
            break;
        }
    pthread_rwlock_unlock(&svc_lock);
    xd_free(norm);
    return removed;
}

bool
xd_service_exists(const char *domain)
{
    bool found = false;
    pthread_rwlock_rdlock(&svc_lock);
    for (size_t i = 0; i < svc_n && !found; i++)
        found = !strcmp(svc_tab[i].domain, domain);
    pthread_rwlock_unlock(&svc_lock);
    return found;
}

bool
xd_service_deliver(const char *domain, xd_stanza_t *st)
{
    xd_service_fn fn = NULL;
    xd_module_ctx_t *ctx = NULL;
    void *arg = NULL;
    pthread_rwlock_rdlock(&svc_lock);
    for (size_t i = 0; i < svc_n; i++)
        if (!strcmp(svc_tab[i].domain, domain)) {
            fn = svc_tab[i].fn;
            ctx = svc_tab[i].ctx;
            arg = svc_tab[i].arg;
            xd_module_hold(ctx); /* under the lock: the instance cannot stop before the call */
            break;
        }
    pthread_rwlock_unlock(&svc_lock);
    if (!fn)
        return false;
    fn(ctx, st, arg);
    xd_module_release(ctx);
    return true;
}

void
xd_service_clear(void)
{
    pthread_rwlock_wrlock(&svc_lock);
    for (size_t i = 0; i < svc_n; i++)
        xd_free(svc_tab[i].domain);
    xd_free(svc_tab);
    svc_tab = NULL;
    svc_n = svc_cap = 0;
    pthread_rwlock_unlock(&svc_lock);
}

bool
xd_service_answer_common(const xd_stanza_t *st)
{
    const xd_el_t *root = xd_stanza_root(st);
    const char *type = xd_el_attr(root, "type");
    const xd_jid_t *to = xd_stanza_to(st);
    xd_stanza_kind kind = xd_stanza_kind_of(root);
    if (!xd_stanza_from(st) || !to || xd_jid_local(to).len > 0 || kind != XD_STANZA_IQ) {
        if (xd_iq_is_request(root)
            || (kind == XD_STANZA_MESSAGE && (!type || strcmp(type, "error") != 0)))
            xd_route_error(st, XD_COND_SERVICE_UNAVAILABLE, NULL);
        return true;
    }
    const xd_el_t *q = xd_el_first_child(root);
    if (!type || strcmp(type, "get") != 0 || !q)
        return false;
    if (xd_el_is(q, "query", XD_NS_DISCO_ITEMS) && !xd_el_attr(q, "node")) {
        xd_el_t *b = xd_iq_result_builder(st);
        xd_el_add_child(b, "query", XD_NS_DISCO_ITEMS);
        xd_route_take(xd_el_freeze(b));
        return true;
    }
    if (xd_el_is(q, "ping", XD_NS_PING)) {
        xd_route_take(xd_iq_result(st));
        return true;
    }
    return false;
}

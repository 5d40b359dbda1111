/*
 * owner.c — module code on a chosen worker (include/xmppd/owner.h): the
 * owner of a key, and xd_module_post over the worker inboxes
 * (src/core/worker.h) with the module instance held like submitted work.
 */
#include <stdint.h>
#include <string.h>

#include "xmppd/owner.h"

#include "core/worker.h"
#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/module.h"

unsigned
xd_owner_workers(void)
{
    return xd_workers_count();
}

unsigned
xd_owner_of_n(const char *key, size_t len)
{
    unsigned n = xd_workers_count();
    if (n == 0)
        return 0;
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a: stable across runs and builds */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 0x100000001b3ull;
    }
    return (unsigned)(h % n);
}

unsigned
xd_owner_of(const char *key)
{
    return xd_owner_of_n(key, key ? strlen(key) : 0);
}

int
xd_owner_self(void)
{
    xd_worker_t *w = xd_worker_self();
    return w ? (int)xd_worker_index(w) : -1;
}

typedef struct owner_post {
    xd_worker_msg_t node;     /* embedded inbox node: one allocation per post */
    xd_module_ctx_t *ctx;     /* held until fn returned */
    xd_module_post_fn fn;     /* theirs */
    void *arg;                /* theirs */
} owner_post_t;

static void
owner_post_run(xd_worker_t *w, void *arg)
{
    (void)w;
    owner_post_t *p = arg;
    xd_module_ctx_t *ctx = p->ctx;
    xd_module_post_fn fn = p->fn;
    void *a = p->arg;
    xd_free(p); /* the node is the inbox's only until we start */
    fn(ctx, a);
    xd_module_release(ctx);
}

int
xd_module_post(xd_module_ctx_t *ctx, unsigned worker, xd_module_post_fn fn, void *arg)
{
    if (!fn)
        return XD_EINVAL;
    unsigned n = xd_workers_count();
    if (n == 0)
        return XD_ECLOSED;
    if (worker >= n)
        return XD_EINVAL;
    xd_worker_t *w = xd_worker_get(worker);
    if (!w)
        return XD_ECLOSED;
    owner_post_t *p = xd_new(owner_post_t);
    *p = (owner_post_t){ .ctx = ctx, .fn = fn, .arg = arg };
    xd_module_hold(ctx);
    int rc = xd_worker_post_msg(w, &p->node, owner_post_run, p);
    if (rc != 0) {
        xd_module_release(ctx);
        xd_free(p);
    }
    return rc;
}

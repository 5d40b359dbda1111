/*
 * mod_blocking.c — the blocking command (XEP-0191, version 1.3), the
 * protocol side of the privacy engine (privacy.h: the block list is the
 * block items of the default privacy list, XEP-0191 6).
 *
 * On for a host when `mod_blocking` is listed under `modules`.
 *
 * Protocol (IQs to one's own bare JID, PARALLEL: they write storage):
 *   get <blocklist/>      → the list; the requesting session is remembered
 *                           as one that "requested the blocklist" (3.2) and
 *                           gets the pushes from then on;
 *   set <block>items      → stored, then pushed as <block/> to the sessions
 *                           that requested the list; an empty <block/> is
 *                           bad-request (3.3); an item whose 'jid' is not a
 *                           JID is jid-malformed; more than `max_items`
 *                           JIDs in the list is not-acceptable;
 *   set <unblock>items    → removed and pushed as <unblock/>; an empty
 *                           <unblock/> removes every item (3.5);
 *   to another account's bare JID → forbidden; anything else → bad-request.
 * The feature urn:xmpp:blocking is in the disco#info of the server (2) and
 * of the accounts.  A block or unblock that changes the default list also pushes its name
 * to the sessions that asked for privacy lists (XEP-0016 2.6), and a
 * XEP-0016 change of the default list pushes the difference of the block
 * list here.
 *
 * Enforcement, presence on block (unavailable to the newly blocked
 * contacts with a subscription from/both) and on unblock (current
 * presence): the engine's, for every stanza routed to a served host.
 */
#include <stdio.h>
#include <string.h>

#include "mod_util.h"
#include "privacy.h"
#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/log.h"
#include "xmppd/module.h"
#include "xmppd/ns.h"
#include "xmppd/stanza.h"

/* ---- options --------------------------------------------------------------------------------- */

typedef struct blk_conf {
    int max_items; /* JIDs one account may block */
} blk_conf_t;

#define C_ blk_conf_t
static const xd_opt_t blk_opts[] = {
    XD_OPT_INT("max_items", C_, max_items, "1000", 1, 100000,
               "JIDs one account may block; a block that would exceed it is refused "
               "with not-acceptable. Every list is held in memory."),
    XD_OPT_END,
};
#undef C_

/* ---- the IQ handler -------------------------------------------------------------------------- */

static void
blk_items_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        xd_free(v[i]);
    xd_free(v);
}

/* The normalised, de-duplicated 'jid's of the payload's <item/> children
 * into *out.  NULL, or the error reply to send. */
static xd_stanza_t *
blk_parse_items(const xd_iq_req_t *req, char ***out, size_t *nout)
{
    size_t cap = xd_el_child_count(req->payload), n = 0;
    char **v = xd_calloc(cap ? cap : 1, sizeof *v);
    for (const xd_el_t *c = xd_el_first_child(req->payload); c; c = xd_el_next(c)) {
        if (!xd_el_is(c, "item", XD_NS_BLOCKING))
            continue;
        const char *j = xd_el_attr(c, "jid");
        xd_jid_t *jid = NULL;
        if (!j || xd_jid_parse(xd_str_c(j), &jid) != 0) {
            blk_items_free(v, n);
            return xd_stanza_error(req->iq, XD_COND_JID_MALFORMED,
                                   j ? "an item's jid is not a JID" : "an item has no jid");
        }
        const char *s = xd_jid_full_str(jid).p;
        bool dup = false;
        for (size_t i = 0; i < n && !dup; i++)
            dup = strcmp(v[i], s) == 0;
        if (!dup)
            v[n++] = xd_strdup(s);
        xd_jid_unref(jid);
    }
    *out = v;
    *nout = n;
    return NULL;
}

static xd_stanza_t *
blk_error(const xd_iq_req_t *req, int rc)
{
    switch (rc) {
    case XD_ELIMIT:
        return xd_stanza_error(req->iq, XD_COND_NOT_ACCEPTABLE, "the block list is full");
    case XD_EEXIST:
        return xd_stanza_error(req->iq, XD_COND_CONFLICT, NULL);
    case XD_EINVAL:
        return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, NULL);
    case XD_ECLOSED:
        return xd_stanza_error(req->iq, XD_COND_SERVICE_UNAVAILABLE, NULL);
    default:
        XD_LOG(NULL, XD_ERROR, "block list change failed", "host=%s err=%s", req->host,
               xd_strerror(rc));
        return xd_stanza_error(req->iq, XD_COND_INTERNAL_SERVER_ERROR, NULL);
    }
}

static xd_stanza_t *
blk_iq(const xd_iq_req_t *req)
{
    const char *type = xd_el_attr(xd_stanza_root(req->iq), "type");
    bool get = type && strcmp(type, "get") == 0;
    const char *name = xd_el_name(req->payload);
    if (!xd_el_is(req->payload, name, XD_NS_BLOCKING))
        return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, NULL);
    if (!xd_jid_eq_bare(req->from, req->to))
        return xd_stanza_error(req->iq, XD_COND_FORBIDDEN, "only your own block list");
    /* The engine runs on the host when either module does: answer only
     * where this one runs. */
    if (!xd_privacy_store_runs(req->host, XD_PRIVACY_BY_BLOCKING))
        return xd_stanza_error(req->iq, XD_COND_SERVICE_UNAVAILABLE, NULL);

    if (get) {
        if (strcmp(name, "blocklist") != 0)
            return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, "expected <blocklist/>");
        char **items = NULL;
        size_t n = 0;
        int rc = xd_privacy_blocklist(req->from, &items, &n);
        if (rc != 0)
            return blk_error(req, rc);
        xd_el_t *r = xd_iq_result_builder(req->iq);
        xd_el_t *q = xd_el_add_child(r, "blocklist", XD_NS_BLOCKING);
        for (size_t i = 0; i < n; i++)
            xd_el_set_attr(xd_el_add_child(q, "item", XD_NS_BLOCKING), "jid", items[i]);
        blk_items_free(items, n);
        return xd_el_freeze(r);
    }

    bool block = strcmp(name, "block") == 0;
    if (!block && strcmp(name, "unblock") != 0)
        return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, "expected <block/> or <unblock/>");
    char **items = NULL;
    size_t n = 0;
    xd_stanza_t *bad = blk_parse_items(req, &items, &n);
    if (bad)
        return bad;
    if (block && n == 0) { /* 3.3 */
        blk_items_free(items, n);
        return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, "<block/> needs at least one item");
    }
    int rc = block ? xd_privacy_block(req->from, (const char *const *)items, n)
                   : xd_privacy_unblock(req->from, (const char *const *)items, n);
    blk_items_free(items, n);
    return rc != 0 ? blk_error(req, rc) : xd_iq_result(req->iq);
}

/* ---- XEP-0227 export and import (ACCOUNT_EXPORT, ACCOUNT_IMPORT) ---------------------------- */

static xd_jid_t *
blk_pie_jid(const char *host, const char *user)
{
    xd_jid_t *j = NULL;
    return xd_jid_make(xd_str_c(user), xd_str_c(host), XD_STR_NULL, &j) == 0 ? j : NULL;
}

/* <blocklist xmlns='urn:xmpp:blocking'/> with the blocked JIDs (as a
 * blocklist get answers). */
static int
blk_pie_export(xd_module_ctx_t *ctx, xd_hook_account_export_t *ev, void *arg)
{
    (void)ctx;
    (void)arg;
    xd_jid_t *j = blk_pie_jid(ev->host, ev->user);
    char **items = NULL;
    size_t n = 0;
    int rc = j ? xd_privacy_blocklist(j, &items, &n) : XD_EINVAL;
    if (rc == 0 && n) {
        xd_el_t *bl = xd_el_add_child(ev->user_el, "blocklist", XD_NS_BLOCKING);
        for (size_t i = 0; i < n; i++)
            xd_el_set_attr(xd_el_add_child(bl, "item", XD_NS_BLOCKING), "jid", items[i]);
    }
    blk_items_free(items, n);
    if (j)
        xd_jid_unref(j);
    if (rc != 0) {
        ev->rc = rc;
        ev->module = "mod_blocking";
        return XD_HOOK_STOP;
    }
    return XD_HOOK_OK;
}

/* Blocks the JIDs the account does not block yet (mod_privacy may have
 * imported them already with the default list).  Runs late, as
 * mod_privacy's import does (the store keeps memory too). */
static int
blk_pie_import(xd_module_ctx_t *ctx, xd_hook_account_import_t *ev, void *arg)
{
    (void)ctx;
    (void)arg;
    xd_jid_t *j = NULL;
    int rc = 0;
    size_t i = 0;
    for (const xd_el_t *bl = xd_el_first_child(ev->user_el); bl && rc == 0;
         bl = xd_el_next(bl), i++) {
        if (!xd_el_is(bl, "blocklist", XD_NS_BLOCKING))
            continue;
        ev->taken[i] = true;
        if (!j && !(j = blk_pie_jid(ev->host, ev->user))) {
            rc = XD_EINVAL;
            break;
        }
        char **have = NULL;
        size_t nhave = 0;
        rc = xd_privacy_blocklist(j, &have, &nhave);
        for (const xd_el_t *it = xd_el_first_child(bl); it && rc == 0; it = xd_el_next(it)) {
            xd_jid_t *b = NULL;
            const char *raw = xd_el_attr(it, "jid");
            if (!xd_el_is(it, "item", XD_NS_BLOCKING))
                continue;
            if (!raw || xd_jid_parse(xd_str_c(raw), &b) != 0) {
                snprintf(ev->err, XD_HOOK_IMPORT_ERR_MAX, "blocklist: not a JID: %s", raw ? raw : "");
                rc = XD_EINVAL;
                break;
            }
            xd_str_t f = xd_jid_full_str(b);
            char *norm = xd_strndup(f.p, f.len);
            bool dup = false;
            for (size_t k = 0; k < nhave && !dup; k++)
                dup = strcmp(have[k], norm) == 0;
            const char *one[] = { norm };
            if (!dup && (rc = xd_privacy_block(j, one, 1)) != 0)
                snprintf(ev->err, XD_HOOK_IMPORT_ERR_MAX, "blocklist %s: %s", norm, xd_strerror(rc));
            xd_free(norm);
            xd_jid_unref(b);
        }
        blk_items_free(have, nhave);
    }
    if (j)
        xd_jid_unref(j);
    if (rc != 0) {
        ev->rc = rc;
        return XD_HOOK_STOP;
    }
    return XD_HOOK_OK;
}

/* ---- module ---------------------------------------------------------------------------------- */

static int
blk_attach(xd_module_ctx_t *ctx)
{
    const blk_conf_t *conf = xd_module_opts(ctx);
    xd_privacy_limits_t lim = { .max_blocked = conf->max_items };
    char *err = NULL;
    int rc = xd_privacy_store_attach(ctx, XD_PRIVACY_BY_BLOCKING, &lim, &err);
    if (rc != 0) {
        rc = xd_module_fail(ctx, rc, "%s", err ? err : xd_strerror(rc));
        xd_free(err);
    }
    return rc;
}

static void
blk_stop(xd_module_ctx_t *ctx)
{
    if (xd_module_state(ctx))
        xd_privacy_store_detach(xd_module_host(ctx), XD_PRIVACY_BY_BLOCKING);
    xd_module_set_state(ctx, NULL);
}

static int
blk_start(xd_module_ctx_t *ctx)
{
    int rc = blk_attach(ctx);
    if (rc != 0)
        return rc;
    xd_module_set_state(ctx, ctx); /* attached */
    rc = xd_module_iq(ctx, XD_IQ_USER, XD_NS_BLOCKING, XD_IQ_PARALLEL, blk_iq, NULL);
    if (rc == 0) /* 2: clients ask their server */
        rc = xd_module_feature(ctx, XD_IQ_HOST, XD_NS_BLOCKING);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_ACCOUNT_EXPORT, XD_HOOK_PRIO_DEFAULT, blk_pie_export, NULL);
    if (rc == 0) /* after mod_privacy's (XD_HOOK_PRIO_DEFAULT + 20) */
        rc = xd_module_hook(ctx, XD_HOOK_ACCOUNT_IMPORT, XD_HOOK_PRIO_DEFAULT + 30, blk_pie_import,
                            NULL);
    if (rc == 0) /* the account's lists go with it (the items cascade) */
        rc = mod_user_rows(ctx, "DELETE FROM privacy_list WHERE host = ? AND username = ?");
    if (rc != 0) {
        /* Detached in blk_stop, once the handlers are gone. */
        return xd_module_fail(ctx, rc, "cannot register the blocking handler: %s",
                              xd_strerror(rc));
    }
    return 0;
}

/* New limits only: the store and the sessions that asked for pushes stay. */
static int
blk_reload(xd_module_ctx_t *ctx, const void *old)
{
    (void)old;
    return blk_attach(ctx);
}

const xd_module_t xd_mod_blocking = {
    .abi = XD_MODULE_ABI,
    .name = "mod_blocking",
    .doc = "Blocking command (XEP-0191): block lists in storage, enforced on routing",
    .opts = blk_opts,
    .schemas = xd_privacy_schemas,
    .opts_size = sizeof(blk_conf_t),
    .start = blk_start,
    .stop = blk_stop,
    .reload = blk_reload,
};


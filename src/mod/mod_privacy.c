/*
 * mod_privacy.c — privacy lists (XEP-0016, version 1.7), the protocol side
 * of the privacy engine (privacy.h has the rules and their enforcement).
 *
 * On for a host when `mod_privacy` is listed under `modules`.
 *
 * Protocol (IQs to one's own bare JID in jabber:iq:privacy; PARALLEL:
 * writes commit to storage before the answer):
 *   get <query/>                 → <active/> <default/> (when set) and every
 *                                  <list name/>; the session is remembered
 *                                  as one that gets list pushes;
 *   get <query><list name/>      → that list (item-not-found); more than one
 *                                  <list/> is bad-request (2.3);
 *   set <query><list name>items  → the list created or replaced (2.6, 2.7),
 *                                  pushed by name to the sessions that asked;
 *   set <query><list name/>      → the list removed (2.8): conflict when it
 *                                  is the default or another session's
 *                                  active list, item-not-found when missing;
 *   set <query><active [name]/>  → this session's active list, or none (2.4);
 *   set <query><default [name]/> → the account's default list, or none:
 *                                  conflict when the current default is in
 *                                  use by another session (2.5);
 * a set with other than exactly one child is bad-request (2.1); bad items
 * are bad-request, a group not in the roster item-not-found (2.1); more
 * than `max_lists` lists or `max_items` items is not-acceptable; another
 * account's lists are forbidden.
 *
 * The feature jabber:iq:privacy is in the disco#info of the server and of
 * the accounts (as mod_blocking's urn:xmpp:blocking).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
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

typedef struct pl_conf {
    int max_lists; /* lists per account */
    int max_items; /* items per list */
} pl_conf_t;

#define C_ pl_conf_t
static const xd_opt_t pl_opts[] = {
    XD_OPT_INT("max_lists", C_, max_lists, "32", 1, 10000,
               "Privacy lists one account may have; creating one more is refused with "
               "not-acceptable. Every list is held in memory."),
    XD_OPT_INT("max_items", C_, max_items, "1000", 1, 100000,
               "Items one privacy list may hold (also the default list that XEP-0191 blocks "
               "extend); a longer list is refused with not-acceptable."),
    XD_OPT_END,
};
#undef C_

/* ---- the XML of a list ----------------------------------------------------------------------- */

static const struct {
    const char *el;       /* child element of <item/> */
    xd_privacy_kind kind; /* its bit */
} pl_kinds[] = {
    { "message", XD_PRIVACY_MESSAGE },
    { "iq", XD_PRIVACY_IQ },
    { "presence-in", XD_PRIVACY_PRESENCE_IN },
    { "presence-out", XD_PRIVACY_PRESENCE_OUT },
};

/* An unsignedInt (XML Schema: digits, optional leading '+' not allowed here). */
static bool
pl_parse_order(const char *s, uint32_t *out)
{
    if (!s || !*s || strlen(s) > 10)
        return false;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (v > UINT32_MAX)
        return false;
    *out = (uint32_t)v;
    return true;
}

/* One <item/> into *it (value malloc'd).  NULL, or why it is bad. */
static const char *
pl_parse_item(const xd_el_t *c, xd_privacy_item_t *it)
{
    memset(it, 0, sizeof *it);
    const char *action = xd_el_attr(c, "action"), *type = xd_el_attr(c, "type");
    const char *value = xd_el_attr(c, "value");
    if (!action || (strcmp(action, "allow") != 0 && strcmp(action, "deny") != 0))
        return "an item's action is allow or deny";
    it->deny = action[0] == 'd';
    if (!pl_parse_order(xd_el_attr(c, "order"), &it->order))
        return "an item's order is a non-negative integer";
    for (const xd_el_t *k = xd_el_first_child(c); k; k = xd_el_next(k)) {
        size_t i;
        for (i = 0; i < sizeof pl_kinds / sizeof pl_kinds[0]; i++)
            if (xd_el_is(k, pl_kinds[i].el, XD_NS_PRIVACY))
                break;
        if (i == sizeof pl_kinds / sizeof pl_kinds[0])
            return "an item's children are message, iq, presence-in and presence-out";
        it->kinds |= (unsigned)pl_kinds[i].kind;
    }
    if (!type)
        return NULL; /* the fall-through item; a value means nothing */
    if (strcmp(type, "jid") == 0)
        it->type = XD_PRIVACY_JID;
    else if (strcmp(type, "group") == 0)
        it->type = XD_PRIVACY_GROUP;
    else if (strcmp(type, "subscription") == 0)
        it->type = XD_PRIVACY_SUBSCRIPTION;
    else
        return "an item's type is jid, group or subscription";
    if (!value || !*value)
        return "an item with a type needs a value";
    if (strlen(value) > XD_PRIVACY_NAME_MAX)
        return "an item's value is too long";
    if (it->type == XD_PRIVACY_JID) {
        xd_jid_t *j = NULL;
        if (xd_jid_parse(xd_str_c(value), &j) != 0)
            return "a jid item's value is not a JID";
        it->value = xd_strdup(xd_jid_full_str(j).p);
        xd_jid_unref(j);
        return NULL;
    }
    if (it->type == XD_PRIVACY_SUBSCRIPTION && xd_roster_sub_parse(value) < 0)
        return "a subscription item's value is none, to, from or both";
    it->value = xd_strdup(value);
    return NULL;
}

int
xd_privacy_list_parse(const xd_el_t *list, xd_privacy_list_t *out, const char **why)
{
    memset(out, 0, sizeof *out);
    *why = NULL;
    const char *name = xd_el_attr(list, "name");
    if (!name || !*name)
        *why = "a list needs a name";
    else if (strlen(name) > XD_PRIVACY_NAME_MAX)
        *why = "the list's name is too long";
    if (*why)
        return XD_EINVAL;
    out->name = xd_strdup(name);
    size_t cap = xd_el_child_count(list); /* one allocation (the stanza bounds it) */
    if (cap)
        out->items = xd_calloc(cap, sizeof *out->items);
    for (const xd_el_t *c = xd_el_first_child(list); c && !*why; c = xd_el_next(c)) {
        if (!xd_el_is(c, "item", XD_NS_PRIVACY)) {
            *why = "a list holds only items";
            break;
        }
        xd_privacy_item_t it;
        *why = pl_parse_item(c, &it);
        if (!*why) {
            out->items[out->n++] = it; /* value moved; n < cap: one item per child */
        } else {
            xd_free(it.value);
        }
    }
    if (!*why && xd_privacy_list_sort(out) != 0)
        *why = "two items have the same order"; /* XEP-0016 2.1 */
    if (*why) {
        xd_privacy_list_clear(out);
        return XD_EINVAL;
    }
    return 0;
}

void
xd_privacy_list_to_el(xd_el_t *parent, const xd_privacy_list_t *l, bool with_items)
{
    xd_el_t *le = xd_el_add_child(parent, "list", XD_NS_PRIVACY);
    xd_el_set_attr(le, "name", l->name);
    for (size_t i = 0; with_items && i < l->n; i++) {
        const xd_privacy_item_t *it = &l->items[i];
        xd_el_t *e = xd_el_add_child(le, "item", XD_NS_PRIVACY);
        static const char *const types[] = { NULL, "jid", "group", "subscription" };
        if (it->type != XD_PRIVACY_ANY) {
            xd_el_set_attr(e, "type", types[it->type]);
            xd_el_set_attr(e, "value", it->value);
        }
        xd_el_set_attr(e, "action", it->deny ? "deny" : "allow");
        char ord[16];
        snprintf(ord, sizeof ord, "%u", (unsigned)it->order);
        xd_el_set_attr(e, "order", ord);
        for (size_t k = 0; k < sizeof pl_kinds / sizeof pl_kinds[0]; k++)
            if (it->kinds & (unsigned)pl_kinds[k].kind)
                xd_el_add_child(e, pl_kinds[k].el, XD_NS_PRIVACY);
    }
}

/* ---- the IQ handler -------------------------------------------------------------------------- */

/* The stanza error for an engine code (privacy.h). */
static xd_stanza_t *
pl_error(const xd_iq_req_t *req, int rc, const char *what)
{
    switch (rc) {
    case XD_ENOTFOUND:
        return xd_stanza_error(req->iq, XD_COND_ITEM_NOT_FOUND, what);
    case XD_EEXIST:
        return xd_stanza_error(req->iq, XD_COND_CONFLICT,
                               "the list is in use by another session");
    case XD_ELIMIT:
        return xd_stanza_error(req->iq, XD_COND_NOT_ACCEPTABLE,
                               "too many privacy lists or items");
    case XD_EINVAL:
        return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, what);
    case XD_ECLOSED:
        return xd_stanza_error(req->iq, XD_COND_SERVICE_UNAVAILABLE, NULL);
    default:
        return xd_stanza_error(req->iq, XD_COND_INTERNAL_SERVER_ERROR, NULL);
    }
}

static xd_stanza_t *
pl_get(const xd_iq_req_t *req)
{
    size_t n = xd_el_child_count(req->payload);
    const xd_el_t *le = xd_el_first_child(req->payload);
    if (n > 1 || (n == 1 && !xd_el_is(le, "list", XD_NS_PRIVACY)))
        return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, "one list at a time"); /* 2.3 */
    const char *name = n ? xd_el_attr(le, "name") : NULL;
    if (n && (!name || !*name))
        return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, "a list needs a name");
    xd_privacy_view_t v;
    int rc = xd_privacy_get(req->from, name, &v);
    if (rc != 0)
        return pl_error(req, rc, "no such list");
    xd_el_t *r = xd_iq_result_builder(req->iq);
    xd_el_t *q = xd_el_add_child(r, "query", XD_NS_PRIVACY);
    if (name) {
        xd_privacy_list_to_el(q, &v.list, true);
    } else {
        if (v.active)
            xd_el_set_attr(xd_el_add_child(q, "active", XD_NS_PRIVACY), "name", v.active);
        if (v.def)
            xd_el_set_attr(xd_el_add_child(q, "default", XD_NS_PRIVACY), "name", v.def);
        for (size_t i = 0; i < v.nnames; i++) {
            xd_privacy_list_t l = { .name = v.names[i] };
            xd_privacy_list_to_el(q, &l, false);
        }
    }
    xd_privacy_view_clear(&v);
    return xd_el_freeze(r);
}

static xd_stanza_t *
pl_set(const xd_iq_req_t *req)
{
    const xd_el_t *c = xd_el_first_child(req->payload);
    if (xd_el_child_count(req->payload) != 1)
        return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST,
                               "a set holds one active, default or list element"); /* 2.1 */
    const char *name = xd_el_attr(c, "name");
    if (name && !*name)
        name = NULL; /* name='' declines as no name does */
    int rc;
    if (xd_el_is(c, "active", XD_NS_PRIVACY)) {
        rc = xd_privacy_set_active(req->from, name);
    } else if (xd_el_is(c, "default", XD_NS_PRIVACY)) {
        rc = xd_privacy_set_default(req->from, name);
    } else if (xd_el_is(c, "list", XD_NS_PRIVACY)) {
        if (!name)
            return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, "a list needs a name");
        if (xd_el_child_count(c) == 0) {
            rc = xd_privacy_remove_list(req->from, name);
        } else {
            xd_privacy_list_t l;
            const char *why = NULL;
            if (xd_privacy_list_parse(c, &l, &why) != 0)
                return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, why);
            rc = xd_privacy_set_list(req->from, &l);
            xd_privacy_list_clear(&l);
            if (rc == XD_ENOTFOUND)
                return pl_error(req, rc, "a group of the list is not in the roster");
        }
    } else {
        return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST,
                               "a set holds one active, default or list element");
    }
    if (rc != 0)
        return pl_error(req, rc, "no such list");
    return xd_iq_result(req->iq);
}

static xd_stanza_t *
pl_iq(const xd_iq_req_t *req)
{
    if (!xd_jid_eq_bare(req->from, req->to))
        return xd_stanza_error(req->iq, XD_COND_FORBIDDEN, "only your own privacy lists");
    if (!xd_el_is(req->payload, "query", XD_NS_PRIVACY))
        return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, NULL);
    const char *type = xd_el_attr(xd_stanza_root(req->iq), "type");
    return type && strcmp(type, "get") == 0 ? pl_get(req) : pl_set(req);
}

/* ---- XEP-0227 export and import (ACCOUNT_EXPORT, ACCOUNT_IMPORT) ---------------------------- */

/* The account's bare JID, for the store's calls (no session: nothing is
 * pushed). */
static xd_jid_t *
pl_pie_jid(const char *host, const char *user)
{
    xd_jid_t *j = NULL;
    return xd_jid_make(xd_str_c(user), xd_str_c(host), XD_STR_NULL, &j) == 0 ? j : NULL;
}

/* Every list with its items, and <default name=…/> (XEP-0227 4.6). */
static int
pl_pie_export(xd_module_ctx_t *ctx, xd_hook_account_export_t *ev, void *arg)
{
    (void)ctx;
    (void)arg;
    xd_jid_t *j = pl_pie_jid(ev->host, ev->user);
    xd_privacy_view_t names;
    int rc = j ? xd_privacy_get(j, NULL, &names) : XD_EINVAL;
    if (rc == 0 && names.nnames) {
        xd_el_t *q = xd_el_add_child(ev->user_el, "query", XD_NS_PRIVACY);
        if (names.def)
            xd_el_set_attr(xd_el_add_child(q, "default", XD_NS_PRIVACY), "name", names.def);
        for (size_t i = 0; i < names.nnames && rc == 0; i++) {
            xd_privacy_view_t one;
            rc = xd_privacy_get(j, names.names[i], &one);
            if (rc == 0) {
                xd_privacy_list_to_el(q, &one.list, true);
                xd_privacy_view_clear(&one);
            }
        }
    }
    if (rc == 0)
        xd_privacy_view_clear(&names);
    if (j)
        xd_jid_unref(j);
    if (rc != 0) {
        ev->rc = rc;
        ev->module = "mod_privacy";
        return XD_HOOK_STOP;
    }
    return XD_HOOK_OK;
}

/* The lists, then the default.  The store keeps accounts in memory as
 * well: this handler runs after the others (PL_PIE_PRIO), so a later
 * failure that rolls the account back is unlikely to leave lists in
 * memory that storage does not have. */
static int
pl_pie_import(xd_module_ctx_t *ctx, xd_hook_account_import_t *ev, void *arg)
{
    (void)ctx;
    (void)arg;
    xd_jid_t *j = NULL;
    int rc = 0;
    size_t i = 0;
    for (const xd_el_t *q = xd_el_first_child(ev->user_el); q && rc == 0; q = xd_el_next(q), i++) {
        if (!xd_el_is(q, "query", XD_NS_PRIVACY))
            continue;
        ev->taken[i] = true;
        if (!j && !(j = pl_pie_jid(ev->host, ev->user))) {
            rc = XD_EINVAL;
            break;
        }
        const char *def = NULL;
        for (const xd_el_t *l = xd_el_first_child(q); l && rc == 0; l = xd_el_next(l)) {
            if (xd_el_is(l, "default", XD_NS_PRIVACY)) {
                def = xd_el_attr(l, "name");
                continue;
            }
            if (!xd_el_is(l, "list", XD_NS_PRIVACY))
                continue;
            xd_privacy_list_t pl;
            const char *why = NULL;
            rc = xd_privacy_list_parse(l, &pl, &why);
            if (rc == 0 && pl.n)
                rc = xd_privacy_set_list(j, &pl);
            if (rc != 0)
                snprintf(ev->err, XD_HOOK_IMPORT_ERR_MAX, "privacy list '%s': %s",
                         xd_el_attr(l, "name") ? xd_el_attr(l, "name") : "",
                         why ? why : xd_strerror(rc));
            xd_privacy_list_clear(&pl);
        }
        if (rc == 0 && def && *def && (rc = xd_privacy_set_default(j, def)) != 0)
            snprintf(ev->err, XD_HOOK_IMPORT_ERR_MAX, "privacy default '%s': %s", def, xd_strerror(rc));
    }
    if (j)
        xd_jid_unref(j);
    if (rc != 0) {
        ev->rc = rc;
        return XD_HOOK_STOP;
    }
    return XD_HOOK_OK;
}

#define PL_PIE_PRIO (XD_HOOK_PRIO_DEFAULT + 20) /* after the roster (groups) and the rest */

/* ---- module ---------------------------------------------------------------------------------- */

static int
pl_attach(xd_module_ctx_t *ctx)
{
    const pl_conf_t *conf = xd_module_opts(ctx);
    xd_privacy_limits_t lim = { .max_lists = conf->max_lists, .max_items = conf->max_items };
    char *err = NULL;
    int rc = xd_privacy_store_attach(ctx, XD_PRIVACY_BY_PRIVACY, &lim, &err);
    if (rc != 0) {
        rc = xd_module_fail(ctx, rc, "%s", err ? err : xd_strerror(rc));
        xd_free(err);
    }
    return rc;
}

static void
pl_stop(xd_module_ctx_t *ctx)
{
    if (xd_module_state(ctx))
        xd_privacy_store_detach(xd_module_host(ctx), XD_PRIVACY_BY_PRIVACY);
    xd_module_set_state(ctx, NULL);
}

static int
pl_start(xd_module_ctx_t *ctx)
{
    int rc = pl_attach(ctx);
    if (rc != 0)
        return rc;
    xd_module_set_state(ctx, ctx); /* attached */
    rc = xd_module_iq(ctx, XD_IQ_USER, XD_NS_PRIVACY, XD_IQ_PARALLEL, pl_iq, NULL);
    if (rc == 0)
        rc = xd_module_feature(ctx, XD_IQ_HOST, XD_NS_PRIVACY);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_ACCOUNT_EXPORT, XD_HOOK_PRIO_DEFAULT, pl_pie_export, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_ACCOUNT_IMPORT, PL_PIE_PRIO, pl_pie_import, NULL);
    if (rc == 0) /* the account's lists go with it (the items cascade) */
        rc = mod_user_rows(ctx, "DELETE FROM privacy_list WHERE host = ? AND username = ?");
    if (rc != 0) {
        /* Detached in pl_stop, once the handlers are gone. */
        return xd_module_fail(ctx, rc, "cannot register the jabber:iq:privacy handler: %s",
                              xd_strerror(rc));
    }
    return 0;
}

/* New limits only: the store, sessions' active lists included, stays. */
static int
pl_reload(xd_module_ctx_t *ctx, const void *old)
{
    (void)old;
    return pl_attach(ctx);
}

const xd_module_t xd_mod_privacy = {
    .abi = XD_MODULE_ABI,
    .name = "mod_privacy",
    .doc = "Privacy lists (XEP-0016), enforced on routing; shares its store with mod_blocking",
    .opts = pl_opts,
    .schemas = xd_privacy_schemas,
    .opts_size = sizeof(pl_conf_t),
    .start = pl_start,
    .stop = pl_stop,
    .reload = pl_reload,
};


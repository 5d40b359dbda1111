/*
 * mod_stanza_id.c — unique and stable stanza IDs (XEP-0359, version 0.7).
 *
 * On for a host when `mod_stanza_id` is listed under `modules`.
 *
 * Every message routed to an account of the host (bare or full JID; any
 * type but error, groupchat and headline, which the account's archive does
 * not keep)
 * gets
 *
 *   <stanza-id xmlns='urn:xmpp:sid:0' id='…' by='user@host'/>
 *
 * before it is delivered, stored offline or copied by carbons, so every
 * resource of the recipient, now or after an offline delivery, sees the same
 * id for the same message (stable) and no other message of the account has
 * it (unique: the millisecond, then 72 random bits, mod_sortable_id: ids sort by
 * time, so the archive's index on them grows at its end, and stay
 * unpredictable, XEP-0359 §6).  Any stanza-id element that claims the same
 * 'by' is removed first (§3.3: the sender must not be able to forge the
 * archive's ids); stanza-ids by other entities (a MUC room, the sender's
 * server) and <origin-id/> pass untouched.
 *
 * Advertised as the feature urn:xmpp:sid:0 of the accounts (disco#info to
 * the bare JID, §4) and of the server.
 *
 * Cost: none beyond the element itself: the message is changed in place
 * when the router holds its only reference (xd_stanza_thaw_keep), as it
 * does for a message fresh from a session; otherwise it is copied.
 */
#include <stdio.h>
#include <string.h>

#include "mod_util.h"
#include "xmppd/el.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/input.h"
#include "xmppd/iq.h"
#include "xmppd/jid.h"
#include "xmppd/module.h"
#include "xmppd/ns.h"
#include "xmppd/stanza.h"

/* Whether c is a stanza-id by the account local@dom. */
static bool
sid_by_account(const xd_el_t *c, xd_str_t local, xd_str_t dom)
{
    const char *cby = xd_el_is(c, "stanza-id", XD_NS_SID) ? xd_el_attr(c, "by") : NULL;
    return cby && strlen(cby) == local.len + 1 + dom.len && !memcmp(cby, local.p, local.len) &&
           cby[local.len] == '@' && !memcmp(cby + local.len + 1, dom.p, dom.len);
}

/* Whether root has a stanza-id by the account local@dom. */
static bool
sid_has_by(const xd_el_t *root, xd_str_t local, xd_str_t dom)
{
    for (const xd_el_t *c = xd_el_first_child(root); c; c = xd_el_next(c))
        if (sid_by_account(c, local, dom))
            return true;
    return false;
}

/* FILTER_PACKET: stamps messages to an account of the host. */
static int
sid_filter(xd_module_ctx_t *hctx, xd_hook_filter_t *ev_, void *arg)
{
    (void)hctx;
    (void)arg;
    xd_hook_filter_t *ev = ev_;
    const xd_el_t *root = xd_stanza_root(ev->st);
    if (xd_stanza_kind_of(root) != XD_STANZA_MESSAGE)
        return XD_HOOK_OK;
    const char *type = xd_el_attr(root, "type");
    if (type && !strcmp(type, "error"))
        return XD_HOOK_OK;
    const xd_jid_t *to = ev->to;
    if (!to)
        return XD_HOOK_OK;
    xd_str_t local = xd_jid_local(to);
    xd_str_t dom = xd_jid_domain(to);
    /* Only for our accounts: the filter also sees what our users send to
     * other servers. */
    bool account = local.len > 0 && xd_str_eq_c(dom, ev->host);
    if (!account)
        return XD_HOOK_OK; /* to the server itself */
    /* A groupchat or headline message is not the account's archive's
     * (mod_mam keeps none, XEP-0313): an id by the account would name
     * nothing, and stamping each copy of a room's or a PEP node's fan-out
     * would copy and serialize it per recipient.  Only a forged id by the
     * account is removed (the copy then). */
    bool unarchived = type && (!strcmp(type, "groupchat") || !strcmp(type, "headline"));
    /* Routed again by the server (from no stream: stream management's
     * unacknowledged messages of a session that ended, an offline message
     * whose session went): the id it was stamped with the first time stays
     * (stable, the archive's; a client could not have forged it, its
     * forgeries were removed when it was first routed). */
    bool has = sid_has_by(root, local, dom);
    if (!unarchived && has && xd_input_current().id == 0)
        return XD_HOOK_OK;
    if (unarchived && !has)
        return XD_HOOK_OK; /* the common case of a fan-out's copy: nothing to do */
    char id[21];
    /* Time-ordered (and unpredictable: 72 random bits): the archive's
     * unique index on the id is appended to at its end. */
    if (!unarchived && mod_sortable_id(id) != 0)
        return XD_HOOK_OK; /* no randomness: unstamped */

    /* In place when the router's reference is the only one (a message
     * fresh from a session or a peer), with its parsed addresses kept. */
    xd_stanza_keep_t keep;
    xd_el_t *m = xd_stanza_thaw_keep(ev->st, &keep);
    ev->st = NULL;
    for (xd_el_t *c = xd_el_first_child_mut(m), *next; c; c = next) {
        next = xd_el_next_mut(c);
        if (sid_by_account(c, local, dom))
            xd_el_remove_child(m, c);
    }
    if (!unarchived) {
        char by[XD_JID_PART_MAX * 2 + 2];
        snprintf(by, sizeof by, "%.*s@%.*s", (int)local.len, local.p, (int)dom.len, dom.p);
        xd_el_t *sid = xd_el_add_child(m, "stanza-id", XD_NS_SID);
        xd_el_set_attr(sid, "id", id);
        xd_el_set_attr(sid, "by", by);
    }
    ev->st = xd_stanza_freeze_keep(m, &keep);
    return XD_HOOK_OK;
}

static int
sid_start(xd_module_ctx_t *ctx)
{
    /* Priority 60: after the filters that may drop the message (blocking
     * 30, presence 40), so dropped messages cost no copy. */
    int rc = xd_module_hook(ctx, XD_HOOK_FILTER_PACKET, 60, sid_filter, NULL);
    if (rc == 0)
        rc = xd_module_feature(ctx, XD_IQ_USER, XD_NS_SID);
    if (rc == 0)
        rc = xd_module_feature(ctx, XD_IQ_HOST, XD_NS_SID);
    if (rc != 0)
        return xd_module_fail(ctx, rc, "cannot register: %s", xd_strerror(rc));
    return 0;
}

const xd_module_t xd_mod_stanza_id = {
    .abi = XD_MODULE_ABI,
    .name = "mod_stanza_id",
    .doc = "Unique and stable stanza IDs (XEP-0359) on messages to the host's accounts",
    .start = sid_start,
};

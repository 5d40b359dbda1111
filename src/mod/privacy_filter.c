/*
 * privacy_filter.c — enforcement of the privacy rules (privacy.h,
 * "Enforcement"): the FILTER_PACKET handler every routed stanza meets, the
 * PRIVACY_CHECK_PACKET handler for code that delivers without the router,
 * xd_privacy_blocks, and the handlers that forget a session when its
 * stream ends and an account when it is removed.
 *
 * The filter takes the shard lock of the sender's account, then of the
 * recipient's, shared, one at a time, and neither when the account has no
 * privacy state (prv_read); it never blocks while holding one.  prv_inner
 * is per thread: set while the engine routes a stanza it made itself,
 * which the filter then lets pass.
 */
#include <string.h>

#include "privacy_int.h"
#include "xmppd/alloc.h"
#include "xmppd/log.h"
#include "xmppd/route.h"
#include "xmppd/stanza.h"

#define PRV_NS_BLOCK_ERRORS "urn:xmpp:blocking:errors"

static _Thread_local bool prv_inner; /* this thread routes a stanza the engine made */

/* Routes st (reference taken over) without filtering it again. */
void
prv_route(xd_stanza_t *st)
{
    if (!st)
        return;
    bool was = prv_inner;
    prv_inner = true;
    xd_route_take(st);
    prv_inner = was;
}

/* Do user's rules refuse a stanza of kind k with other?  (The read side of
 * xd_privacy_blocks and PRIVACY_CHECK_PACKET: user's shard only.) */
static bool
prv_denies(const xd_jid_t *user, const xd_jid_t *other, xd_privacy_kind k)
{
    if (!user || !other || atomic_load(&prv_naccts) == 0 || !xd_jid_local(user).len ||
        xd_jid_eq_bare(user, other))
        return false;
    prv_shard_t *sh;
    const prv_acct_t *a = prv_read(xd_jid_bare_str(user), &sh);
    bool deny = a && prv_judge(a, xd_jid_full_str(user), other, k).deny;
    prv_unlock(sh);
    return deny;
}

bool
xd_privacy_blocks(const xd_jid_t *user, const xd_jid_t *other)
{
    return prv_denies(user, other, XD_PRIVACY_OTHER);
}

/* PRIVACY_CHECK_PACKET: for code that delivers without the router. */
int
prv_check(xd_module_ctx_t *ctx, xd_hook_privacy_check_t *ev, void *arg)
{
    (void)ctx;
    (void)arg;
    if (!ev->el || !prv_denies(ev->user, ev->other, xd_privacy_kind_of(ev->el, ev->outgoing)))
        return XD_HOOK_OK;
    ev->deny = true;
    return XD_HOOK_STOP;
}

/* A stanza to the bare JID of an account where some session has an
 * active list: each session the router would pick decides.  Returns the
 * verdict when they agree (or nobody is there: the default list); when
 * they disagree, delivers st to those that allow and sets *taken. */
static prv_verdict_t
prv_split(xd_stanza_t *st, const xd_jid_t *to, const xd_jid_t *from, xd_privacy_kind k,
          bool *taken)
{
    xd_session_info_t res[PRV_MAX_RES];
    size_t n = prv_sessions(to, res);
    bool pick[PRV_MAX_RES] = { 0 }, allow[PRV_MAX_RES] = { 0 };
    xd_session_pick(res, n, st, pick); /* the sessions the router would pick */
    size_t npick = 0, nallow = 0;
    prv_verdict_t v = { false, false };
    prv_shard_t *sh;
    const prv_acct_t *a = prv_read(xd_jid_bare_str(to), &sh);
    for (size_t i = 0; a && i < n; i++) {
        const xd_session_info_t *e = &res[i];
        if (!pick[i])
            continue;
        npick++;
        allow[i] = !prv_judge(a, xd_jid_full_str(e->jid), from, k).deny;
        nallow += allow[i];
    }
    if (a && npick == 0)
        v = prv_judge(a, XD_STR_NULL, from, k);
    prv_unlock(sh);
    if (npick && nallow == 0)
        v.deny = true;
    if (npick && nallow && nallow < npick) {
        for (size_t i = 0; i < n; i++)
            if (pick[i] && allow[i])
                xd_session_send_take(&res[i].ref, xd_stanza_ref(st));
        *taken = true;
    }
    prv_sessions_clear(res, n);
    return v;
}

int
prv_filter(xd_module_ctx_t *hctx, xd_hook_filter_t *evp, void *arg)
{
    (void)hctx;
    (void)arg;
    xd_hook_filter_t *ev = evp;
    if (prv_inner || atomic_load(&prv_naccts) == 0 || !ev->st)
        return XD_HOOK_OK;
    const xd_el_t *root = xd_stanza_root(ev->st);
    xd_stanza_kind sk = xd_stanza_kind_of(root);
    const char *from_s = xd_el_attr(root, "from"), *to_s = xd_el_attr(root, "to");
    if (sk == XD_STANZA_OTHER || !from_s || !to_s)
        return XD_HOOK_OK;
    /* Parsed once for the stanza (the session stamped its own JID; the
     * router parsed 'to'); our references, since the stanza may be replaced. */
    const xd_jid_t *from_lent = xd_stanza_from(ev->st);
    if (!from_lent)
        return XD_HOOK_OK;
    xd_jid_t *from = xd_jid_ref((xd_jid_t *)from_lent), *to = NULL;
    const xd_jid_t *to_lent = ev->to ? ev->to : xd_stanza_to(ev->st);
    if (to_lent)
        to = xd_jid_ref((xd_jid_t *)to_lent);
    if (!to || xd_jid_eq_bare(from, to)) {
        /* XEP-0016 2.1: never between the resources of one account. */
        if (to)
            xd_jid_unref(to);
        xd_jid_unref(from);
        return XD_HOOK_OK;
    }
    xd_privacy_kind kout = xd_privacy_kind_of(root, true), kin = xd_privacy_kind_of(root, false);
    prv_verdict_t out = { false, false }, in = { false, false };
    bool split = false, taken = false;
    /* The sender's shard, then the recipient's, one at a time; neither
     * when its account has no privacy state. */
    prv_shard_t *sh = NULL;
    const prv_acct_t *a = xd_jid_local(from).len ? prv_read(xd_jid_bare_str(from), &sh) : NULL;
    if (a)
        out = prv_judge(a, xd_jid_full_str(from), to, kout);
    prv_unlock(sh);
    sh = NULL;
    a = !out.deny && xd_jid_local(to).len ? prv_read(xd_jid_bare_str(to), &sh) : NULL;
    if (a) {
        if (!xd_jid_is_bare(to))
            in = prv_judge(a, xd_jid_full_str(to), from, kin);
        else if (sk == XD_STANZA_IQ || a->nactive == 0)
            in = prv_judge(a, XD_STR_NULL, from, kin); /* the account as a whole */
        else
            split = true;
    }
    prv_unlock(sh);
    if (split)
        in = prv_split(ev->st, to, from, kin, &taken);
    xd_jid_unref(from);
    xd_jid_unref(to);
    if (taken) {
        xd_stanza_unref(ev->st);
        ev->st = NULL;
        return XD_HOOK_STOP;
    }
    if (!out.deny && !in.deny)
        return XD_HOOK_OK;

    xd_stanza_t *err = NULL;
    if (out.deny) {
        /* XEP-0016 2.14: not-acceptable; XEP-0191 3.3: with <blocked/>.
         * Presence notifications go nowhere, silently (privacy.h). */
        if (kout != XD_PRIVACY_PRESENCE_OUT)
            err = xd_stanza_error(ev->st, XD_COND_NOT_ACCEPTABLE, NULL);
        if (err && out.blocked) {
            xd_el_t *e = xd_stanza_edit(err);
            xd_stanza_unref(err);
            xd_el_t *eel = xd_el_child_mut(e, "error", NULL);
            if (eel)
                xd_el_add_child(eel, "blocked", PRV_NS_BLOCK_ERRORS);
            err = xd_el_freeze(e);
        }
    } else if (sk == XD_STANZA_MESSAGE || (sk == XD_STANZA_IQ && xd_iq_is_request(root))) {
        /* XEP-0016 2.14: presence never answered; messages and IQ
         * requests service-unavailable (NULL for errors and results). */
        err = xd_stanza_error(ev->st, XD_COND_SERVICE_UNAVAILABLE, NULL);
    }
    XD_LOG(NULL, XD_DEBUG, "privacy refused stanza", "from=%s to=%s dir=%s answer=%s", from_s,
           to_s, out.deny ? "out" : "in", err ? "error" : "none");
    prv_route(err);
    xd_stanza_unref(ev->st);
    ev->st = NULL;
    return XD_HOOK_STOP;
}

/* SESSION_CLOSED: forget the session unless its JID is bound again by the
 * stream the entry belongs to. */
int
prv_closed(xd_module_ctx_t *hctx, xd_hook_session_t *evp, void *arg)
{
    (void)hctx;
    (void)arg;
    const xd_hook_session_t *ev = evp;
    if (atomic_load(&prv_naccts) == 0 || !prv_known(xd_jid_bare_str(ev->jid)))
        return XD_HOOK_OK;
    prv_sess_forget(ev->jid, 0, prv_live_id(ev->jid));
    return XD_HOOK_OK;
}

/* USER_REMOVED: memory (storage is mod_user_rows' job). */
int
prv_removed(xd_module_ctx_t *hctx, xd_hook_user_t *evp, void *arg)
{
    (void)hctx;
    (void)arg;
    const xd_hook_user_t *ev = evp;
    char *bare = xd_asprintf("%s@%s", ev->user, ev->host);
    prv_shard_t *sh;
    prv_acct_t *a = prv_edit(xd_str_c(bare), &sh);
    if (a)
        prv_drop_if_empty(a, true);
    prv_unlock(sh);
    xd_free(bare);
    return XD_HOOK_OK;
}

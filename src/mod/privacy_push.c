/*
 * privacy_push.c — what a change of the privacy rules sends (privacy.h,
 * "Presence after a change"): the XEP-0016 list pushes and the XEP-0191
 * blocklist pushes to the sessions that asked for them, and the presence
 * that becomes due or must be withdrawn when presence-out changes.
 *
 * Everything here runs on the writer's thread, with the writer's change
 * mutex held, and reads the writer's account under its shard's lock,
 * shared, only to copy what it needs: sessions are listed, rosters read
 * and stanzas sent or routed with no shard locked.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "privacy_int.h"
#include "xmppd/alloc.h"
#include "xmppd/ns.h"
#include "xmppd/stanza.h"

/* Which sessions of `bare` get a push: want_privacy or want_blocklist. */
static size_t
prv_push_targets(const xd_jid_t *bare, bool blocklist, xd_session_info_t *res, bool *want)
{
    size_t n = prv_sessions(bare, res);
    prv_shard_t *sh;
    const prv_acct_t *a = prv_read(xd_jid_bare_str(bare), &sh);
    for (size_t i = 0; i < n; i++) {
        const prv_sess_t *s = a ? prv_sess_find(a, xd_jid_full_str(res[i].jid)) : NULL;
        want[i] = s && s->conn_id == res[i].ref.id &&
                  (blocklist ? s->want_blocklist : s->want_privacy);
    }
    prv_unlock(sh);
    return n;
}

static _Atomic unsigned long prv_push_seq; /* numbers the ids of pushes, process-wide */

static xd_el_t *
prv_push_iq(const xd_jid_t *to, const char *idp)
{
    char id[48];
    snprintf(id, sizeof id, "%s%lu", idp, atomic_fetch_add(&prv_push_seq, 1) + 1);
    xd_el_t *iq = xd_el_new("iq", NULL);
    xd_el_set_attr(iq, "type", "set");
    xd_el_set_attr(iq, "id", id);
    xd_el_set_attr(iq, "to", xd_jid_full_str(to).p);
    return iq;
}

/* XEP-0016 2.6: <query><list name='…'/></query> to the sessions that asked for privacy. */
void
prv_push_list(const xd_jid_t *bare, const char *name)
{
    xd_session_info_t res[PRV_MAX_RES];
    bool want[PRV_MAX_RES] = { 0 };
    size_t n = prv_push_targets(bare, false, res, want);
    for (size_t i = 0; i < n; i++) {
        if (want[i]) {
            xd_el_t *iq = prv_push_iq(res[i].jid, "privacypush");
            xd_el_t *q = xd_el_add_child(iq, "query", XD_NS_PRIVACY);
            xd_el_set_attr(xd_el_add_child(q, "list", XD_NS_PRIVACY), "name", name);
            xd_session_send_take(&res[i].ref, xd_el_freeze(iq));
        }
        xd_session_info_clear(&res[i]);
    }
}

/* XEP-0191 3.3/3.4: <block>/<unblock> with items to the sessions that asked for the blocklist. */
void
prv_push_block(const xd_jid_t *bare, const char *name, char *const *items, size_t nitems)
{
    xd_session_info_t res[PRV_MAX_RES];
    bool want[PRV_MAX_RES] = { 0 };
    size_t n = prv_push_targets(bare, true, res, want);
    for (size_t i = 0; i < n; i++) {
        if (want[i]) {
            xd_el_t *iq = prv_push_iq(res[i].jid, "blockpush");
            xd_el_t *q = xd_el_add_child(iq, name, XD_NS_BLOCKING);
            for (size_t k = 0; k < nitems; k++)
                xd_el_set_attr(xd_el_add_child(q, "item", XD_NS_BLOCKING), "jid", items[k]);
            xd_session_send_take(&res[i].ref, xd_el_freeze(iq));
        }
        xd_session_info_clear(&res[i]);
    }
}

/* ---- presence after a change ----------------------------------------------------------------- */

static void
prv_pres_add(prv_pres_t *p, const char *jid)
{
    if (prv_strv_has(p->tgt, p->ntgt, jid))
        return;
    xd_jid_t *j = NULL;
    if (xd_jid_parse(xd_str_c(jid), &j) != 0)
        return;
    if (p->ntgt == p->captgt) {
        p->captgt = p->captgt ? p->captgt * 2 : 16;
        p->tgt = xd_realloc(p->tgt, p->captgt * sizeof *p->tgt);
        p->tj = xd_realloc(p->tj, p->captgt * sizeof *p->tj);
    }
    p->tgt[p->ntgt] = xd_strdup(jid);
    p->tj[p->ntgt++] = j;
}

static int
prv_pres_contact(void *arg, const xd_roster_view_t *it)
{
    prv_pres_t *p = arg;
    if (p->ntgt >= 10000) /* as the roster's broadcast: enough for any real roster */
        return 1;
    if (it->in_roster && (it->sub & XD_ROSTER_SUB_FROM))
        prv_pres_add(p, it->jid);
    return 0;
}

/* Adds `item` when it is a full JID (a resource) of one of the contacts. */
static void
prv_pres_add_full(prv_pres_t *p, size_t ncontacts, const char *item)
{
    const char *slash = item ? strchr(item, '/') : NULL;
    if (!slash || !memchr(item, '@', (size_t)(slash - item)))
        return;
    for (size_t i = 0; i < ncontacts; i++)
        if (strlen(p->tgt[i]) == (size_t)(slash - item) &&
            memcmp(p->tgt[i], item, (size_t)(slash - item)) == 0) {
            prv_pres_add(p, item);
            return;
        }
}

static void
prv_pres_add_list(prv_pres_t *p, size_t ncontacts, const xd_privacy_list_t *l)
{
    for (size_t i = 0; l && i < l->n; i++)
        if (l->items[i].type == XD_PRIVACY_JID)
            prv_pres_add_full(p, ncontacts, l->items[i].value);
}

/* decisions[r * ntgt + t] = presence-out from session r to target t allowed. */
static void
prv_pres_decide(const prv_pres_t *p, const char *bare, bool *out)
{
    prv_shard_t *sh;
    const prv_acct_t *a = prv_read(xd_str_c(bare), &sh);
    for (size_t r = 0; r < p->nres; r++)
        for (size_t t = 0; t < p->ntgt; t++)
            out[r * p->ntgt + t] =
                !a || !prv_judge(a, xd_jid_full_str(p->res[r].jid), p->tj[t],
                                 XD_PRIVACY_PRESENCE_OUT)
                           .deny;
    prv_unlock(sh);
}

/* Before a change: who is available, whom they may send presence to.
 * `extra` (optional) is a list about to be stored; `jids` JIDs about to
 * be blocked.  Blocking (roster storage). */
void
prv_pres_before(prv_pres_t *p, const prv_who_t *w, const xd_privacy_list_t *extra,
                const char *const *jids, size_t njids)
{
    memset(p, 0, sizeof *p);
    p->nres = prv_sessions(w->bare, p->res);
    bool any = false;
    for (size_t i = 0; i < p->nres; i++)
        any |= p->res[i].available;
    if (!any)
        return;
    /* Best effort: the contacts with a subscription from the user. */
    xd_hook_roster_get_t rev = { .host = w->host, .user = w->user, .fn = prv_pres_contact,
                                 .arg = p };
    xd_hook_run(XD_HOOK_ROSTER_GET, w->host, &rev);
    size_t ncontacts = p->ntgt;
    if (!ncontacts)
        return;
    prv_shard_t *sh;
    const prv_acct_t *a = prv_read(xd_jid_bare_str(w->bare), &sh);
    for (size_t i = 0; a && i < a->nlists; i++)
        prv_pres_add_list(p, ncontacts, &a->lists[i]);
    prv_unlock(sh);
    prv_pres_add_list(p, ncontacts, extra);
    for (size_t i = 0; i < njids; i++)
        prv_pres_add_full(p, ncontacts, jids[i]);
    p->before = xd_calloc(p->nres * p->ntgt, sizeof *p->before);
    prv_pres_decide(p, xd_jid_bare_str(w->bare).p, p->before);
}

/* After the change: unavailable where presence-out became denied, the
 * session's current presence where it became allowed.  Frees p. */
void
prv_pres_after(prv_pres_t *p, const prv_who_t *w)
{
    if (p->before) {
        bool *after = xd_calloc(p->nres * p->ntgt, sizeof *after);
        prv_pres_decide(p, xd_jid_bare_str(w->bare).p, after);
        for (size_t r = 0; r < p->nres; r++) {
            const xd_session_info_t *e = &p->res[r];
            if (!e->available)
                continue;
            for (size_t t = 0; t < p->ntgt; t++) {
                bool was = p->before[r * p->ntgt + t], now = after[r * p->ntgt + t];
                if (was == now || (now && !e->presence))
                    continue;
                xd_el_t *el;
                if (now) {
                    el = xd_stanza_edit(e->presence);
                } else {
                    el = xd_el_new("presence", NULL);
                    xd_el_set_attr(el, "type", "unavailable");
                }
                xd_el_set_attr(el, "from", xd_jid_full_str(e->jid).p);
                xd_el_set_attr(el, "to", p->tgt[t]);
                prv_route(xd_el_freeze(el));
            }
        }
        xd_free(after);
    }
    prv_sessions_clear(p->res, p->nres);
    for (size_t i = 0; i < p->ntgt; i++) {
        xd_free(p->tgt[i]);
        xd_jid_unref(p->tj[i]);
    }
    xd_free(p->tgt);
    xd_free(p->tj);
    xd_free(p->before);
    memset(p, 0, sizeof *p);
}


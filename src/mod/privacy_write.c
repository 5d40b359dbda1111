/*
 * privacy_write.c — the requests of a session to the privacy engine: get
 * (XEP-0016) and blocklist (XEP-0191), which also remember the session as
 * one that gets pushes, and every write (privacy.h, "writes").
 *
 * A write runs on the blocking pool: it holds the writers' mutex of its
 * account's shard (prv_writer_begin) from its first read to its last push,
 * stores (privacy_sql.c), then changes the account under its shard's
 * write lock, then pushes and sends presence (privacy_push.c) with no
 * shard locked.  get and blocklist take the shard's write lock only.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "privacy_int.h"
#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/log.h"

void
xd_privacy_view_clear(xd_privacy_view_t *v)
{
    if (!v)
        return;
    xd_free(v->active);
    xd_free(v->def);
    prv_strv_free(v->names, v->nnames);
    xd_privacy_list_clear(&v->list);
    memset(v, 0, sizeof *v);
}

static int
prv_strcmp_p(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
prv_who_clear(prv_who_t *w)
{
    xd_free(w->host);
    xd_free(w->user);
    if (w->bare)
        xd_jid_unref(w->bare);
    memset(w, 0, sizeof *w);
}

/* Fills w for req.  XD_EINVAL without a localpart, XD_ECLOSED when the
 * engine does not run on its host. */
static int
prv_who(const xd_jid_t *req, prv_who_t *w)
{
    memset(w, 0, sizeof *w);
    if (!req || !xd_jid_local(req).len)
        return XD_EINVAL;
    xd_str_t l = xd_jid_local(req), d = xd_jid_domain(req);
    w->host = xd_strndup(d.p, d.len);
    if (!prv_host_on(w->host)) {
        prv_who_clear(w);
        return XD_ECLOSED;
    }
    w->user = xd_strndup(l.p, l.len);
    w->bare = xd_jid_bare((xd_jid_t *)req);
    w->req = req;
    w->conn_id = xd_jid_is_bare(req) ? 0 : prv_live_id(req);
    return 0;
}

/* An entry made for w's session after its stream ended (its close hook
 * ran first) or was replaced must not outlive it: checked after making one. */
static void
prv_sess_recheck(const prv_who_t *w)
{
    if (!w->conn_id)
        return;
    uint64_t live = prv_live_id(w->req);
    if (live != w->conn_id)
        prv_sess_forget(w->req, w->conn_id, live);
}

int
xd_privacy_get(const xd_jid_t *req, const char *name, xd_privacy_view_t *out)
{
    memset(out, 0, sizeof *out);
    prv_who_t w;
    int rc = prv_who(req, &w);
    if (rc != 0)
        return rc;
    prv_shard_t *sh;
    prv_acct_t *a = prv_get(xd_jid_bare_str(w.bare), &sh);
    if (w.conn_id)
        prv_sess_get(a, xd_jid_full_str(req), w.conn_id)->want_privacy = true;
    const prv_sess_t *s = prv_sess_find(a, xd_jid_full_str(req));
    if (s && s->active)
        out->active = xd_strdup(s->active);
    if (a->def >= 0)
        out->def = xd_strdup(a->lists[a->def].name);
    if (name) {
        int i = prv_list_index(a, name);
        if (i < 0)
            rc = XD_ENOTFOUND;
        else
            xd_privacy_list_copy(&out->list, &a->lists[i]);
    } else {
        out->names = xd_calloc(a->nlists ? a->nlists : 1, sizeof *out->names);
        for (size_t i = 0; i < a->nlists; i++)
            out->names[out->nnames++] = xd_strdup(a->lists[i].name);
        qsort(out->names, out->nnames, sizeof *out->names, prv_strcmp_p);
    }
    prv_drop_if_empty(a, false);
    prv_unlock(sh);
    prv_sess_recheck(&w);
    prv_who_clear(&w);
    if (rc != 0)
        xd_privacy_view_clear(out);
    return rc;
}

int
xd_privacy_blocklist(const xd_jid_t *req, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    prv_who_t w;
    int rc = prv_who(req, &w);
    if (rc != 0)
        return rc;
    prv_shard_t *sh;
    prv_acct_t *a = prv_get(xd_jid_bare_str(w.bare), &sh);
    if (w.conn_id)
        prv_sess_get(a, xd_jid_full_str(req), w.conn_id)->want_blocklist = true;
    *n = prv_blockview(a, out);
    prv_drop_if_empty(a, false);
    prv_unlock(sh);
    prv_sess_recheck(&w);
    prv_who_clear(&w);
    return 0;
}

/* ---- writes ---------------------------------------------------------------------------------- */

/* One write: what to store, what to change in memory, what to push (the
 * writer's stack; its shard's writers' mutex held while it is used). */
typedef struct prv_op {
    prv_who_t w;                  /* the requester */
    const xd_privacy_list_t *put; /* list to store, or NULL */
    const char *drop;             /* list to remove, or NULL */
    int def_op;                   /* 0 keep, 1 set def_name, 2 none */
    const char *def_name;         /* def_op 1 */
    int act_op;                   /* 0 keep, 1 the requester's active list is act_name, 2 none */
    const char *act_name;         /* act_op 1 */
    prv_roster_t *roster;         /* a roster to install when the account keeps none yet */
    const char *push_name;        /* list name to push (XEP-0016 2.6), or NULL */
    const char *block_verb;       /* "block"/"unblock": XEP-0191 push of block_items; NULL: the
                                     difference of the blocklist, if any */
    char *const *block_items;     /* those items */
    size_t nblock;                /* how many */
    const char *const *new_jids;  /* JIDs about to be blocked (presence targets) */
    size_t nnew;                  /* how many */
} prv_op_t;

/* Stores op, applies it to memory, pushes, sends presence.  The writers'
 * mutex of the account's shard held. */
static int
prv_commit(prv_op_t *op)
{
    prv_pres_t pres;
    prv_pres_before(&pres, &op->w, op->put, op->new_jids, op->nnew);
    char **before = NULL, **after = NULL;
    size_t nbefore, nafter;
    xd_str_t key = xd_jid_bare_str(op->w.bare);
    prv_shard_t *sh;
    nbefore = prv_blockview(prv_read(key, &sh), &before);
    prv_unlock(sh);

    int rc = 0;
    if (op->put || op->drop || op->def_op) {
        prv_tx_t t = { .host = op->w.host, .user = op->w.user, .put = op->put, .drop = op->drop,
                       .def_op = op->def_op, .def_name = op->def_name,
                       .now = (int64_t)time(NULL) };
        xd_db_t *db = prv_host_db();
        rc = db ? xd_db_tx(db, prv_sql_tx, &t) : XD_ECLOSED;
        if (rc < 0) {
            XD_LOG(NULL, XD_ERROR, "privacy list store failed", "host=%s user=%s err=%s",
                   op->w.host, op->w.user, xd_strerror(rc));
            prv_strv_free(before, nbefore);
            prv_pres_after(&pres, &op->w); /* nothing changed: sends nothing */
            return rc;
        }
    }

    prv_acct_t *a = prv_get(key, &sh);
    char *def = a->def >= 0 ? xd_strdup(a->lists[a->def].name) : NULL;
    if (op->put) {
        int i = prv_list_index(a, op->put->name);
        if (i < 0) {
            a->lists = xd_realloc(a->lists, (a->nlists + 1) * sizeof *a->lists);
            i = (int)a->nlists++;
        } else {
            xd_privacy_list_clear(&a->lists[i]);
        }
        xd_privacy_list_copy(&a->lists[i], op->put);
    }
    if (op->drop) {
        int i = prv_list_index(a, op->drop);
        if (i >= 0) {
            xd_privacy_list_clear(&a->lists[i]);
            a->lists[i] = a->lists[--a->nlists];
            for (size_t s = 0; s < a->nsess; s++)
                if (a->sess[s].active && strcmp(a->sess[s].active, op->drop) == 0) {
                    xd_free(a->sess[s].active);
                    a->sess[s].active = NULL;
                }
            if (def && strcmp(def, op->drop) == 0) {
                xd_free(def);
                def = NULL;
            }
        }
    }
    if (op->def_op == 1) {
        xd_free(def);
        def = xd_strdup(op->def_name);
    } else if (op->def_op == 2) {
        xd_free(def);
        def = NULL;
    }
    a->def = prv_list_index(a, def); /* indexes moved with a remove */
    xd_free(def);
    if (op->act_op && op->w.conn_id) {
        prv_sess_t *s = prv_sess_get(a, xd_jid_full_str(op->w.req), op->w.conn_id);
        xd_free(s->active);
        s->active = op->act_op == 1 ? xd_strdup(op->act_name) : NULL;
    }
    prv_count_active(a);
    if (!prv_acct_needs_roster(a))
        prv_roster_drop(a);
    else if (!a->has_roster && op->roster)
        prv_roster_install(a, op->roster);
    nafter = prv_blockview(a, &after);
    prv_drop_if_empty(a, false);
    prv_unlock(sh);

    /* Pushes: the list's name, then the blocklist. */
    if (op->push_name)
        prv_push_list(op->w.bare, op->push_name);
    if (op->block_verb) {
        prv_push_block(op->w.bare, op->block_verb, op->block_items, op->nblock);
    } else {
        char **d = xd_calloc(nbefore + nafter + 1, sizeof *d);
        size_t nd = 0;
        for (size_t i = 0; i < nafter; i++)
            if (!prv_strv_has(before, nbefore, after[i]))
                d[nd++] = after[i];
        if (nd)
            prv_push_block(op->w.bare, "block", d, nd);
        nd = 0;
        for (size_t i = 0; i < nbefore; i++)
            if (!prv_strv_has(after, nafter, before[i]))
                d[nd++] = before[i];
        if (nd)
            prv_push_block(op->w.bare, "unblock", d, nd);
        xd_free(d);
    }
    prv_strv_free(before, nbefore);
    prv_strv_free(after, nafter);
    prv_pres_after(&pres, &op->w);
    return 0;
}

/* Is group g a group of some item of roster rl? */
static bool
prv_roster_has_group(const prv_roster_t *rl, const char *g)
{
    for (size_t i = 0; i < rl->n; i++)
        for (size_t k = 0; k < rl->items[i].ngroups; k++)
            if (strcmp(rl->items[i].groups[k], g) == 0)
                return true;
    return false;
}

int
xd_privacy_set_list(const xd_jid_t *req, const xd_privacy_list_t *l)
{
    if (!l || !l->name || !*l->name || l->n == 0)
        return XD_EINVAL;
    xd_privacy_list_t copy;
    xd_privacy_list_copy(&copy, l);
    if (xd_privacy_list_sort(&copy) != 0) {
        xd_privacy_list_clear(&copy);
        return XD_EINVAL;
    }
    prv_who_t w;
    int rc = prv_who(req, &w);
    if (rc != 0) {
        xd_privacy_list_clear(&copy);
        return rc;
    }
    prv_roster_t rl = { 0 };
    bool have_rl = false;
    xd_privacy_limits_t lim = prv_host_limits(w.host);
    if (lim.max_items && copy.n > (size_t)lim.max_items)
        rc = XD_ELIMIT;
    if (rc == 0 && xd_privacy_list_needs_roster(&copy)) {
        /* XEP-0016 2.1: a group not in the roster is item-not-found. */
        rc = prv_roster_fetch(w.host, w.user, &rl); /* no rosters: every group is unknown */
        have_rl = rc == 0;
        for (size_t i = 0; rc == 0 && i < copy.n; i++)
            if (copy.items[i].type == XD_PRIVACY_GROUP &&
                !prv_roster_has_group(&rl, copy.items[i].value))
                rc = XD_ENOTFOUND;
    }
    prv_shard_t *wsh = prv_writer_begin(xd_jid_bare_str(w.bare));
    if (rc == 0 && lim.max_lists) {
        prv_shard_t *sh;
        const prv_acct_t *a = prv_read(xd_jid_bare_str(w.bare), &sh);
        if (a && prv_list_index(a, copy.name) < 0 && a->nlists >= (size_t)lim.max_lists)
            rc = XD_ELIMIT;
        prv_unlock(sh);
    }
    if (rc == 0) {
        prv_op_t op = { .w = w, .put = &copy, .roster = have_rl ? &rl : NULL,
                        .push_name = copy.name };
        rc = prv_commit(&op);
    }
    prv_writer_end(wsh);
    if (have_rl)
        prv_roster_clear(&rl);
    xd_privacy_list_clear(&copy);
    prv_who_clear(&w);
    return rc;
}

/* True when the session `full` (stream conn) is bound now. */
static bool
prv_live(const xd_session_info_t *res, size_t n, const char *full, uint64_t conn)
{
    for (size_t i = 0; i < n; i++)
        if (res[i].ref.id == conn && xd_str_eq_c(xd_jid_full_str(res[i].jid), full))
            return true;
    return false;
}

int
xd_privacy_remove_list(const xd_jid_t *req, const char *name)
{
    if (!name || !*name)
        return XD_EINVAL;
    prv_who_t w;
    int rc = prv_who(req, &w);
    if (rc != 0)
        return rc;
    xd_session_info_t res[PRV_MAX_RES];
    size_t n = prv_sessions(w.bare, res);
    prv_shard_t *wsh = prv_writer_begin(xd_jid_bare_str(w.bare));
    prv_shard_t *sh;
    const prv_acct_t *a = prv_read(xd_jid_bare_str(w.bare), &sh);
    int i = a ? prv_list_index(a, name) : -1;
    if (i < 0)
        rc = XD_ENOTFOUND;
    else if (a->def == i)
        rc = XD_EEXIST; /* the default applies to the account: change it first */
    for (size_t s = 0; rc == 0 && s < a->nsess; s++) {
        const prv_sess_t *ss = &a->sess[s];
        bool mine = xd_str_eq_c(xd_jid_full_str(req), ss->full) && ss->conn_id == w.conn_id;
        if (ss->active && strcmp(ss->active, name) == 0 && !mine &&
            prv_live(res, n, ss->full, ss->conn_id))
            rc = XD_EEXIST; /* XEP-0016 2.8: active in another session */
    }
    prv_unlock(sh);
    prv_sessions_clear(res, n);
    if (rc == 0) {
        prv_op_t op = { .w = w, .drop = name, .push_name = name };
        rc = prv_commit(&op);
    }
    prv_writer_end(wsh);
    prv_who_clear(&w);
    return rc;
}

int
xd_privacy_set_active(const xd_jid_t *req, const char *name)
{
    prv_who_t w;
    int rc = prv_who(req, &w);
    if (rc != 0)
        return rc;
    if (!w.conn_id) {
        prv_who_clear(&w);
        return XD_EINVAL; /* only a bound session has an active list */
    }
    prv_shard_t *wsh = prv_writer_begin(xd_jid_bare_str(w.bare));
    if (name) {
        prv_shard_t *sh;
        const prv_acct_t *a = prv_read(xd_jid_bare_str(w.bare), &sh);
        if (!a || prv_list_index(a, name) < 0)
            rc = XD_ENOTFOUND;
        prv_unlock(sh);
    }
    if (rc == 0) {
        prv_op_t op = { .w = w, .act_op = name ? 1 : 2, .act_name = name };
        rc = prv_commit(&op);
    }
    prv_writer_end(wsh);
    prv_sess_recheck(&w);
    prv_who_clear(&w);
    return rc;
}

int
xd_privacy_set_default(const xd_jid_t *req, const char *name)
{
    prv_who_t w;
    int rc = prv_who(req, &w);
    if (rc != 0)
        return rc;
    xd_session_info_t res[PRV_MAX_RES];
    size_t n = prv_sessions(w.bare, res);
    prv_shard_t *wsh = prv_writer_begin(xd_jid_bare_str(w.bare));
    prv_shard_t *sh;
    const prv_acct_t *a = prv_read(xd_jid_bare_str(w.bare), &sh);
    const char *cur = a && a->def >= 0 ? a->lists[a->def].name : NULL;
    if (name && (!a || prv_list_index(a, name) < 0))
        rc = XD_ENOTFOUND;
    bool change = cur && (!name || strcmp(cur, name) != 0);
    for (size_t i = 0; rc == 0 && change && i < n; i++) {
        /* XEP-0016 2.5: the current default is in use by a session other
         * than the requester, one without an active list. */
        if (xd_jid_eq(res[i].jid, req))
            continue;
        const prv_sess_t *s = prv_sess_find(a, xd_jid_full_str(res[i].jid));
        if (!s || s->conn_id != res[i].ref.id || !s->active)
            rc = XD_EEXIST;
    }
    prv_unlock(sh);
    prv_sessions_clear(res, n);
    if (rc == 0 && (change || (name && !cur))) {
        prv_op_t op = { .w = w, .def_op = name ? 1 : 2, .def_name = name };
        rc = prv_commit(&op);
    }
    prv_writer_end(wsh);
    prv_who_clear(&w);
    return rc;
}

/* The default list as it is (copy), or a new "Blocked contacts" (the
 * existing list of that name, when there is one).  *had_def: a default
 * existed.  The account's shard locked. */
static void
prv_default_copy(const prv_acct_t *a, xd_privacy_list_t *out, bool *had_def)
{
    const xd_privacy_list_t *d = a ? prv_default(a) : NULL;
    *had_def = d != NULL;
    if (!d && a) {
        int i = prv_list_index(a, XD_PRIVACY_BLOCKED_LIST);
        d = i >= 0 ? &a->lists[i] : NULL;
    }
    if (d) {
        xd_privacy_list_copy(out, d);
    } else {
        memset(out, 0, sizeof *out);
        out->name = xd_strdup(XD_PRIVACY_BLOCKED_LIST);
    }
}

int
xd_privacy_block(const xd_jid_t *req, const char *const *jids, size_t n)
{
    if (!n)
        return XD_EINVAL;
    prv_who_t w;
    int rc = prv_who(req, &w);
    if (rc != 0)
        return rc;
    xd_privacy_limits_t lim = prv_host_limits(w.host);
    prv_shard_t *wsh = prv_writer_begin(xd_jid_bare_str(w.bare));
    xd_privacy_list_t l;
    bool had_def;
    char **view = NULL;
    prv_shard_t *sh;
    const prv_acct_t *a = prv_read(xd_jid_bare_str(w.bare), &sh);
    prv_default_copy(a, &l, &had_def);
    size_t nview = prv_blockview(a, &view);
    prv_unlock(sh);

    /* The JIDs not blocked yet, in the order given, each once. */
    char **fresh = xd_calloc(n, sizeof *fresh);
    size_t nfresh = 0;
    for (size_t i = 0; i < n; i++) {
        bool have = false;
        for (size_t k = 0; k < l.n && !have; k++)
            have = xd_privacy_is_block_item(&l.items[k]) && strcmp(l.items[k].value, jids[i]) == 0;
        if (!have && !prv_strv_has(fresh, nfresh, jids[i]))
            fresh[nfresh++] = (char *)jids[i];
    }
    if (lim.max_blocked && nview + nfresh > (size_t)lim.max_blocked)
        rc = XD_ELIMIT;
    if (lim.max_items && l.n + nfresh > (size_t)lim.max_items)
        rc = XD_ELIMIT;
    if (rc == 0 && nfresh) {
        /* In front: orders below the first item, or everything shifted up. */
        uint32_t first = l.n ? l.items[0].order : (uint32_t)nfresh + 1;
        if (first < nfresh) {
            uint64_t shift = nfresh - first, top = l.items[l.n - 1].order;
            bool dense = top + shift > UINT32_MAX; /* no room above: renumber 0, 1, … */
            for (size_t k = 0; k < l.n; k++)
                l.items[k].order = dense ? (uint32_t)(nfresh + k)
                                         : l.items[k].order + (uint32_t)shift;
            first = (uint32_t)nfresh;
        }
        for (size_t i = 0; i < nfresh; i++) {
            xd_privacy_item_t it = { .type = XD_PRIVACY_JID, .value = fresh[i], .deny = true,
                                     .order = first - (uint32_t)nfresh + (uint32_t)i };
            xd_privacy_list_add(&l, &it);
        }
        xd_privacy_list_sort(&l);
    }
    if (rc == 0) {
        prv_op_t op = { .w = w,
                        .put = nfresh || !had_def ? &l : NULL,
                        .def_op = had_def ? 0 : 1,
                        .def_name = l.name,
                        .push_name = nfresh ? l.name : NULL,
                        .block_verb = "block",
                        .block_items = (char *const *)jids,
                        .nblock = n,
                        .new_jids = (const char *const *)fresh,
                        .nnew = nfresh };
        rc = prv_commit(&op);
    }
    prv_writer_end(wsh);
    xd_free(fresh);
    prv_strv_free(view, nview);
    xd_privacy_list_clear(&l);
    prv_who_clear(&w);
    return rc;
}

int
xd_privacy_unblock(const xd_jid_t *req, const char *const *jids, size_t n)
{
    prv_who_t w;
    int rc = prv_who(req, &w);
    if (rc != 0)
        return rc;
    prv_shard_t *wsh = prv_writer_begin(xd_jid_bare_str(w.bare));
    xd_privacy_list_t l = { 0 };
    prv_shard_t *sh;
    const prv_acct_t *a = prv_read(xd_jid_bare_str(w.bare), &sh);
    const xd_privacy_list_t *d = a ? prv_default(a) : NULL;
    if (d)
        xd_privacy_list_copy(&l, d);
    prv_unlock(sh);
    size_t kept = 0, gone = 0;
    for (size_t i = 0; i < l.n; i++) {
        xd_privacy_item_t *it = &l.items[i];
        bool drop = xd_privacy_is_block_item(it);
        if (drop && n) {
            drop = false;
            for (size_t k = 0; k < n && !drop; k++)
                drop = strcmp(it->value, jids[k]) == 0;
        }
        if (drop) {
            xd_free(it->value);
            gone++;
        } else {
            l.items[kept++] = *it;
        }
    }
    l.n = kept;
    prv_op_t op = { .w = w,
                    .put = gone ? &l : NULL,
                    .push_name = gone ? l.name : NULL,
                    .block_verb = "unblock",
                    .block_items = (char *const *)jids,
                    .nblock = n };
    rc = prv_commit(&op);
    prv_writer_end(wsh);
    xd_privacy_list_clear(&l);
    prv_who_clear(&w);
    return rc;
}

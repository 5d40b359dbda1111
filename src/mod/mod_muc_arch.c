/*
 * mod_muc_arch.c — a room's archive (XEP-0313), moderation (XEP-0425) and
 * retraction (XEP-0424), and the dispatch of its IQs (muc_room.h for the
 * room's structures).
 */
#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mam.h"
#include "mod_muc.h"
#include "mod_util.h"
#include "muc_log.h"
#include "muc_room.h"

#include "xmppd/alloc.h"
#include "xmppd/acl.h"
#include "xmppd/base64.h"
#include "xmppd/config.h"
#include "xmppd/err.h"
#include "xmppd/jid.h"
#include "xmppd/log.h"
#include "xmppd/map.h"
#include "xmppd/ns.h"
#include "xmppd/route.h"
#include "xmppd/session.h"
#include "xmppd/stanza.h"

/* ---- the room's archive (XEP-0313) and moderation (XEP-0425) ---------------------------------- */

#define MUC_NS_FASTEN "urn:xmpp:fasten:0"
#define MUC_NS_RETRACT "urn:xmpp:message-retract:1"
#define MUC_NS_RETRACT0 "urn:xmpp:message-retract:0"

static void
mam_query_work(xd_module_ctx_t *ctx, void *arg)
{
    (void)ctx;
    room_job_t *j = arg;
    j->answer = mam_room_iq(j->mam, j->iq, j->room);
}

static void
mam_query_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    (void)ctx;
    room_job_t *j = arg;
    if (status != 0)
        xd_route_error(j->iq, XD_COND_INTERNAL_SERVER_ERROR, NULL);
    else if (j->answer) {
        xd_route_take(j->answer);
        j->answer = NULL;
    }
    muc_room_job_free(j);
}

/* Who may read the room's archive: its occupants, its members (and
 * admins, owners, service administrators), and anyone when the room is
 * public and open (listed, neither members-only nor password-protected:
 * what is said there is public); never an outcast. */
static bool
archive_readable(const muc_room_t *r, const xd_stanza_t *st, const muc_occ_t *me, int myaff)
{
    bool occupant = me || muc_occ_by_real(r, xd_stanza_from(st)) != NULL;
    bool open = r->cfg.pub && !r->cfg.members_only && !r->cfg.password_protected;
    return myaff != AFF_OUTCAST && (occupant || myaff >= AFF_MEMBER || open);
}

/* XEP-0441 on the room's archive.  What a room archives is its
 * configuration's (muc#roomconfig_mam): every message while it is on, so
 * its preferences are default='always' without JID lists.  A get shows
 * them to whoever may read the archive; a set is the owners' and may only
 * say the same (the owner turns the archive off in the room's
 * configuration form); per-JID lists mean nothing in a room. */
static void
room_mam_prefs(const muc_room_t *r, const xd_stanza_t *st, const xd_el_t *q,
               const muc_occ_t *me, int myaff, bool set)
{
    if (set ? myaff < AFF_OWNER : !archive_readable(r, st, me, myaff)) {
        xd_route_error(st, XD_COND_FORBIDDEN,
                       set ? "the owners set what a room archives"
                           : "only occupants and members read this archive");
        return;
    }
    if (set) {
        const char *def = xd_el_attr(q, "default");
        bool jids = false;
        for (const xd_el_t *l = xd_el_first_child(q); l; l = xd_el_next(l))
            jids |= xd_el_first_child(l) != NULL;
        if (!def || strcmp(def, "always") != 0 || jids) {
            xd_route_error(st, XD_COND_NOT_ACCEPTABLE,
                           "a room archives every message while muc#roomconfig_mam is on; "
                           "its owner turns that off in the room configuration");
            return;
        }
    }
    xd_el_t *b = xd_iq_result_builder(st);
    xd_el_t *pe = xd_el_add_child(b, "prefs", XD_NS_MAM);
    xd_el_set_attr(pe, "default", "always");
    xd_el_add_child(pe, "always", NULL);
    xd_el_add_child(pe, "never", NULL);
    xd_route_take(xd_el_freeze(b));
}

/* A urn:xmpp:mam:2 request on the room's archive (held: mam).  Who may
 * read it: its occupants, its members (and admins, owners, service
 * administrators), and anyone when the room is public and open (listed,
 * neither members-only nor password-protected: what is said there is
 * public). */
static void
room_mam_iq(muc_call_t *c, muc_room_t *r, const xd_stanza_t *st, const muc_occ_t *me,
            int myaff, xd_module_ctx_t *mam)
{
    if (!mam) { /* mod_mam stopped meanwhile */
        xd_route_error(st, XD_COND_SERVICE_UNAVAILABLE, NULL);
        return;
    }
    if (!archive_readable(r, st, me, myaff)) {
        xd_module_release(mam);
        xd_route_error(st, XD_COND_FORBIDDEN, "only occupants and members read this archive");
        return;
    }
    room_job_t *j = xd_new(room_job_t);
    j->mam = mam;
    j->iq = xd_stanza_ref(st);
    j->room = muc_room_jid(r);
    if (!j->room || xd_module_submit(c->ctx, mam_query_work, mam_query_done, j) != 0) {
        xd_route_error(st, XD_COND_RESOURCE_CONSTRAINT, "the archive is busy");
        muc_room_job_free(j);
    }
}

static void
moderate_work(xd_module_ctx_t *ctx, void *arg)
{
    (void)ctx;
    room_job_t *j = arg;
    j->rc = mam_room_moderate(j->mam, j->room, j->id, j->detail, &j->occ_id);
}

/* The history without the message the room stamped with archive id `sid`
 * (retracted or moderated). */
static void
hist_drop_sid(muc_room_t *r, const char *sid)
{
    for (size_t i = 0; i < r->hn; i++) {
        muc_hist_t *e = &r->hist[(r->hstart + i) % r->hcap];
        const xd_el_t *hr = xd_stanza_root(e->st);
        bool hit = false;
        for (const xd_el_t *ch = xd_el_first_child(hr); ch && !hit; ch = xd_el_next(ch)) {
            const char *by = xd_el_attr(ch, "by"), *id = xd_el_attr(ch, "id");
            hit = xd_el_is(ch, "stanza-id", XD_NS_SID) && by && id &&
                  strcmp(by, r->jid) == 0 && strcmp(id, sid) == 0;
        }
        if (!hit)
            continue;
        muc_hist_bytes(r, 0, e->len);
        xd_stanza_unref(e->st);
        for (size_t k = i; k + 1 < r->hn; k++)
            r->hist[(r->hstart + k) % r->hcap] = r->hist[(r->hstart + k + 1) % r->hcap];
        r->hn--;
        r->hist_dirty = r->cfg.persistent;
        break;
    }
}

static void
retract_work(xd_module_ctx_t *ctx, void *arg)
{
    (void)ctx;
    room_job_t *j = arg;
    j->rc = mam_room_retract(j->mam, j->room, j->id, j->oid, j->detail);
}

/* The archive has the tombstone of an occupant's own message: its
 * retraction goes to every occupant and the message out of the history;
 * else the sender learns why not (nothing is forwarded). */
static void
retract_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    room_job_t *j = arg;
    int rc = status ? status : j->rc;
    muc_call_t c = { .ctx = ctx, .s = xd_module_state(ctx), .conf = xd_module_opts(ctx) };
    muc_room_t *r = rc == 0 ? muc_room_find(&c, j->name) : NULL;
    if (rc == XD_ENOTFOUND)
        xd_route_error(j->iq, XD_COND_ITEM_NOT_FOUND, "no message with that id in the archive");
    else if (rc == XD_EINVAL)
        xd_route_error(j->iq, XD_COND_FORBIDDEN, "only its sender retracts a message");
    else if (rc != 0) {
        XD_LOG(NULL, XD_ERROR, "muc retraction failed", "room=%s id=%s err=%s", j->name, j->id,
               xd_strerror(rc));
        xd_route_error(j->iq, XD_COND_INTERNAL_SERVER_ERROR, NULL);
    }
    if (r) {
        muc_fan_out(&c, r, j->answer, FAN_ALL, NULL, true);
        hist_drop_sid(r, j->id);
        if (r->nocc == 0 && r->cfg.persistent && !r->empty_since)
            r->empty_since = muc_now_ms();
    }
    muc_room_job_free(j);
}

/* XEP-0424 in a room with an archive: occupant o retracts one of its own
 * messages by the id the room stamped on it (<retract id/>, a groupchat
 * message).  The archive checks that the message carries o's occupant-id
 * (its account) and keeps a tombstone; then the retraction goes out. */
void
muc_room_retract(muc_call_t *c, muc_room_t *r, const muc_occ_t *o, const xd_stanza_t *st,
                 const xd_el_t *rt)
{
    const char *id = xd_el_attr(rt, "id");
    if (!id || !*id) {
        xd_route_error(st, XD_COND_BAD_REQUEST, "<retract/> names the message by its id");
        return;
    }
    room_job_t *j = xd_new(room_job_t);
    j->mam = muc_room_mam(c, r);
    j->iq = xd_stanza_ref(st);
    j->room = muc_room_jid(r);
    j->name = xd_strdup(r->name);
    j->id = xd_strdup(id);
    snprintf(j->oid, sizeof j->oid, "%s", o->oid);
    j->detail = xd_strdup("<retracted xmlns='" MUC_NS_RETRACT "'/>");
    j->answer = muc_msg_from_occ(r, o, st, NULL);
    if (!j->mam || !j->room ||
        xd_module_submit(c->ctx, retract_work, retract_done, j) != 0) {
        xd_route_error(st, XD_COND_RESOURCE_CONSTRAINT, "the archive is busy");
        muc_room_job_free(j);
    }
}

/* The archive has the tombstone: the room tells its occupants (XEP-0425
 * :1, and :0 for older clients, in one message) and drops the message
 * from its history. */
static void
moderate_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    room_job_t *j = arg;
    int rc = status ? status : j->rc;
    if (rc == XD_ENOTFOUND) {
        xd_route_error(j->iq, XD_COND_ITEM_NOT_FOUND, "no message with that id in the archive");
        muc_room_job_free(j);
        return;
    }
    if (rc != 0) {
        XD_LOG(NULL, XD_ERROR, "muc moderation failed", "room=%s id=%s err=%s", j->name, j->id,
               xd_strerror(rc));
        xd_route_error(j->iq, XD_COND_INTERNAL_SERVER_ERROR, NULL);
        muc_room_job_free(j);
        return;
    }
    xd_route_take(xd_iq_result(j->iq));
    muc_call_t c = { .ctx = ctx, .s = xd_module_state(ctx), .conf = xd_module_opts(ctx) };
    muc_room_t *r = muc_room_find(&c, j->name);
    if (r) {
        xd_el_t *b = xd_el_new("message", NULL);
        xd_el_set_attr(b, "type", "groupchat");
        xd_el_set_attr(b, "from", r->jid);
        char mid[21];
        if (mod_random_id(mid) == 0)
            xd_el_set_attr(b, "id", mid);
        xd_el_t *rt = xd_el_add_child(b, "retract", MUC_NS_RETRACT);
        xd_el_set_attr(rt, "id", j->id);
        xd_el_t *md = xd_el_add_child(rt, "moderated", MAM_NS_MODERATE);
        xd_el_set_attr(md, "by", j->by);
        xd_el_set_attr(xd_el_add_child(md, "occupant-id", MUC_NS_OCCUPANT_ID), "id", j->oid);
        if (j->reason)
            xd_el_add_text(xd_el_add_child(rt, "reason", MUC_NS_RETRACT), j->reason);
        xd_el_t *ap = xd_el_add_child(b, "apply-to", MUC_NS_FASTEN);
        xd_el_set_attr(ap, "id", j->id);
        xd_el_t *md0 = xd_el_add_child(ap, "moderated", MAM_NS_MODERATE0);
        xd_el_set_attr(md0, "by", j->by);
        xd_el_add_child(md0, "retract", MUC_NS_RETRACT0);
        if (j->reason)
            xd_el_add_text(xd_el_add_child(md0, "reason", MAM_NS_MODERATE0), j->reason);
        xd_stanza_t *m = xd_el_freeze(b);
        muc_fan_out(&c, r, m, FAN_ALL, NULL, false);
        xd_stanza_unref(m);
        hist_drop_sid(r, j->id);
        if (r->nocc == 0 && r->cfg.persistent && !r->empty_since)
            r->empty_since = muc_now_ms();
    }
    muc_room_job_free(j);
}

/* XEP-0425: moderator `me` retracts a message of the archive (held: mam):
 * <moderate id/> with <retract/> (urn:xmpp:message-moderate:1), or the
 * older <apply-to id><moderate><retract/></moderate></apply-to> (:0). */
static void
room_moderate(muc_call_t *c, muc_room_t *r, const xd_stanza_t *st, const xd_el_t *q,
              const muc_occ_t *me, xd_module_ctx_t *mam)
{
    if (!mam) { /* mod_mam stopped meanwhile */
        xd_route_error(st, XD_COND_SERVICE_UNAVAILABLE, NULL);
        return;
    }
    bool v1 = xd_el_is(q, "moderate", MAM_NS_MODERATE);
    const xd_el_t *mod = v1 ? q : xd_el_child(q, "moderate", MAM_NS_MODERATE0);
    const char *id = xd_el_attr(q, "id");
    const xd_el_t *retract = mod ? xd_el_child(mod, v1 ? "retract" : "retract",
                                               v1 ? MUC_NS_RETRACT : MUC_NS_RETRACT0)
                                 : NULL;
    const char *reason = mod ? xd_el_child_text(mod, "reason", v1 ? MAM_NS_MODERATE
                                                                 : MAM_NS_MODERATE0)
                             : NULL;
    if (!mod || !retract || !id || !*id) {
        xd_module_release(mam);
        xd_route_error(st, XD_COND_BAD_REQUEST, "<moderate id/> with <retract/>");
        return;
    }
    if (!me || me->role != ROLE_MODERATOR) {
        xd_module_release(mam);
        xd_route_error(st, XD_COND_FORBIDDEN, "only moderators retract messages");
        return;
    }
    room_job_t *j = xd_new(room_job_t);
    j->mam = mam;
    j->iq = xd_stanza_ref(st);
    j->room = muc_room_jid(r);
    j->name = xd_strdup(r->name);
    j->id = xd_strdup(id);
    j->reason = reason && *reason ? xd_strdup(reason) : NULL;
    j->by = muc_occ_jid(r, me->nick);
    snprintf(j->oid, sizeof j->oid, "%s", me->oid);
    xd_el_t *d = xd_el_new("retracted", MUC_NS_RETRACT);
    xd_el_t *md = xd_el_add_child(d, "moderated", MAM_NS_MODERATE);
    xd_el_set_attr(md, "by", j->by);
    xd_el_set_attr(xd_el_add_child(md, "occupant-id", MUC_NS_OCCUPANT_ID), "id", j->oid);
    if (j->reason)
        xd_el_add_text(xd_el_add_child(d, "reason", MUC_NS_RETRACT), j->reason);
    j->detail = xd_el_serialize(d, NULL, NULL);
    xd_el_free(d);
    if (!j->room || xd_module_submit(c->ctx, moderate_work, moderate_done, j) != 0) {
        xd_route_error(st, XD_COND_RESOURCE_CONSTRAINT, "the archive is busy");
        muc_room_job_free(j);
    }
}

void
muc_room_iq(muc_call_t *c, muc_room_t *r, const xd_stanza_t *st, const char *nick)
{
    const xd_el_t *root = xd_stanza_root(st);
    if (!xd_iq_is_request(root) && !nick && muc_join_answer(c, r, st))
        return;
    if (!xd_iq_is_request(root)) {
        /* An answer to a forwarded request: to the requester's occupant JID. */
        muc_occ_t *requester = nick ? xd_map_get(&r->by_nick, xd_str_c(nick)) : NULL;
        muc_occ_t *answerer = requester ? muc_occ_by_real(r, xd_stanza_from(st)) : NULL;
        if (answerer)
            muc_iq_forward(c, r, st, answerer, requester, false);
        return;
    }
    const char *type = xd_el_attr(root, "type");
    bool set = strcmp(type, "set") == 0;
    const xd_el_t *q = xd_el_first_child(root);
    xd_str_t fs = xd_jid_full_str(xd_stanza_from(st)), bs = xd_jid_bare_str(xd_stanza_from(st));
    char *full = xd_strndup(fs.p, fs.len), *bare = xd_strndup(bs.p, bs.len);
    muc_occ_t *me = xd_map_get(&r->by_full, xd_str_c(full));
    int myaff = muc_eff_aff(c, r, bare, xd_stanza_from(st));
    if (r->locked && myaff != AFF_OWNER) {
        /* XEP-0045 10.1.1: until its owner configures it the room is
         * nobody else's to see or register with (entering is refused so). */
        xd_route_error(st, XD_COND_ITEM_NOT_FOUND, "no such room");
        xd_free(full);
        xd_free(bare);
        return;
    }
    if (nick) {
        /* XEP-0410: a ping to one's own occupant JID says whether one is
         * still in. */
        muc_occ_t *o = xd_map_get(&r->by_nick, xd_str_c(nick));
        if (q && xd_el_is(q, "ping", XD_NS_PING) && !set && me && o == me)
            xd_route_take(xd_iq_result(st));
        else if (!me)
            xd_route_error(st, XD_COND_NOT_ACCEPTABLE, "not an occupant");
        else if (!o)
            xd_route_error(st, XD_COND_ITEM_NOT_FOUND, NULL);
        else
            muc_iq_forward(c, r, st, me, o, true);
    } else if (q && xd_el_is(q, "query", XD_NS_DISCO_INFO) && !set &&
               xd_el_attr(q, "node") && strcmp(xd_el_attr(q, "node"), "x-roomuser-item") == 0) {
        /* 7.12: one's reserved nick, or an empty answer */
        xd_el_t *b = xd_iq_result_builder(st);
        xd_el_t *rq = xd_el_add_child(b, "query", XD_NS_DISCO_INFO);
        xd_el_set_attr(rq, "node", "x-roomuser-item");
        const char *mine = muc_reg_nick_of(r, bare);
        if (mine) {
            xd_el_t *id = xd_el_add_child(rq, "identity", NULL);
            xd_el_set_attr(id, "category", "conference");
            xd_el_set_attr(id, "type", "text");
            xd_el_set_attr(id, "name", mine);
        }
        xd_route_take(xd_el_freeze(b));
    } else if (q && xd_el_is(q, "query", XD_NS_DISCO_INFO) && !set) {
        muc_room_disco_info(c, r, st);
    } else if (q && xd_el_is(q, "query", XD_NS_REGISTER)) {
        muc_room_register_iq(c, r, st, q, bare, myaff, set);
    } else if (q && xd_el_is(q, "query", XD_NS_DISCO_ITEMS) && !set) {
        xd_el_t *b = xd_iq_result_builder(st);
        xd_el_add_child(b, "query", XD_NS_DISCO_ITEMS);
        xd_route_take(xd_el_freeze(b));
    } else if (q && xd_el_is(q, "prefs", XD_NS_MAM) && muc_room_archived(c, r)) {
        room_mam_prefs(r, st, q, me, myaff, set);
    } else if (q && xd_el_ns(q) && strcmp(xd_el_ns(q), XD_NS_MAM) == 0 && muc_room_archived(c, r)) {
        room_mam_iq(c, r, st, me, myaff, muc_room_mam(c, r));
    } else if (q && set && (xd_el_is(q, "moderate", MAM_NS_MODERATE) ||
                            xd_el_is(q, "apply-to", MUC_NS_FASTEN)) &&
               muc_room_archived(c, r)) {
        room_moderate(c, r, st, q, me, muc_room_mam(c, r));
    } else if (q && xd_el_is(q, "query", XD_NS_MUC_OWNER)) {
        muc_room_owner_iq(c, r, st, q, myaff, set);
    } else if (q && xd_el_is(q, "query", XD_NS_MUC_ADMIN)) {
        muc_room_admin_iq(c, r, st, q, me, myaff, set);
    } else if (q && xd_el_is(q, "ping", XD_NS_PING) && !set) {
        xd_route_take(xd_iq_result(st));
    } else {
        xd_route_error(st, XD_COND_SERVICE_UNAVAILABLE, NULL);
    }
    xd_free(full);
    xd_free(bare);
}

/* ---- the join history from the archive --------------------------------------------------------- */

/* One message of the archive for the history (oldest first once read). */
typedef struct fill_msg {
    char *id;
    time_t ts;
    xd_stanza_t *st;
} fill_msg_t;

typedef struct hist_fill {
    xd_module_ctx_t *mam;  /* held */
    xd_jid_t *room;
    char *name;            /* the room's local part */
    uint64_t token;        /* r->fill_token when asked */
    int max;               /* its history length */
    fill_msg_t *msgs;      /* newest first, as read */
    size_t n;
    int rc;
} hist_fill_t;

static _Atomic uint64_t fill_tokens;

static void
fill_row(void *arg, const char *id, int64_t ts_us, const char *xml, size_t len)
{
    hist_fill_t *f = arg;
    xd_stanza_t *st = NULL;
    if ((int)f->n >= f->max || xd_stanza_parse(xml, len, XD_NS_CLIENT, &st) != 0)
        return;
    f->msgs[f->n++] = (fill_msg_t){ xd_strdup(id), (time_t)(ts_us / 1000000), st };
}

static void
fill_work(xd_module_ctx_t *ctx, void *arg)
{
    (void)ctx;
    hist_fill_t *f = arg;
    f->msgs = xd_calloc((size_t)f->max, sizeof *f->msgs);
    f->rc = mam_room_recent(f->mam, f->room, f->max, fill_row, f);
}

static void
fill_free(hist_fill_t *f)
{
    for (size_t i = 0; i < f->n; i++) {
        xd_free(f->msgs[i].id);
        xd_stanza_unref(f->msgs[i].st);
    }
    xd_free(f->msgs);
    xd_module_release(f->mam);
    xd_jid_unref(f->room);
    xd_free(f->name);
    xd_free(f);
}

/* The id the room stamped on a message of its history (its archive id),
 * or NULL. */
static const char *
hist_sid(const muc_room_t *r, const xd_stanza_t *st)
{
    for (const xd_el_t *ch = xd_el_first_child(xd_stanza_root(st)); ch; ch = xd_el_next(ch)) {
        const char *by = xd_el_attr(ch, "by");
        if (xd_el_is(ch, "stanza-id", XD_NS_SID) && by && strcmp(by, r->jid) == 0)
            return xd_el_attr(ch, "id");
    }
    return NULL;
}

/* The history becomes its messages and the archive's it lacks, in time
 * order (of one second, the history's first: what it has came first),
 * the newest history length of them.  Returns how many came from the
 * archive. */
static size_t
hist_merge(muc_room_t *r, hist_fill_t *f)
{
    size_t hn = r->hn;
    muc_hist_t *old = xd_calloc(hn ? hn : 1, sizeof *old);
    for (size_t i = 0; i < hn; i++)
        old[i] = r->hist[(r->hstart + i) % r->hcap];
    /* The archive's, oldest first, without those the history has. */
    xd_map_t have = XD_MAP_INIT;
    for (size_t i = 0; i < hn; i++) {
        const char *sid = hist_sid(r, old[i].st);
        if (sid)
            xd_map_put(&have, xd_str_c(sid), (void *)1);
    }
    fill_msg_t *add = xd_calloc(f->n ? f->n : 1, sizeof *add);
    size_t na = 0;
    for (size_t k = f->n; k-- > 0;)
        if (!xd_map_get(&have, xd_str_c(f->msgs[k].id)))
            add[na++] = f->msgs[k];
    xd_map_free(&have, NULL);
    /* Empty the ring (its stanzas move), then fill it in order. */
    r->hn = r->hstart = 0;
    muc_hist_bytes(r, 0, r->hbytes);
    size_t i = 0, k = 0, from_archive = 0;
    size_t skip = hn + na > r->hcap ? hn + na - r->hcap : 0;
    while (i < hn || k < na) {
        bool take_old = k == na || (i < hn && old[i].ts <= add[k].ts);
        xd_stanza_t *st;
        time_t ts;
        if (take_old) {
            st = old[i].st;
            ts = old[i++].ts;
        } else {
            st = xd_stanza_ref(add[k].st);
            ts = add[k++].ts;
            from_archive += skip == 0;
        }
        if (skip) { /* older than the history length */
            skip--;
            xd_stanza_unref(st);
            continue;
        }
        muc_hist_add_at(r, st, ts);
    }
    xd_free(old);
    xd_free(add);
    return from_archive;
}

static void
fill_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    hist_fill_t *f = arg;
    muc_call_t c = { .ctx = ctx, .s = xd_module_state(ctx), .conf = xd_module_opts(ctx) };
    int self = xd_owner_self();
    muc_room_t *r = c.s && self >= 0 ? xd_map_get(&c.s->rooms[self], xd_str_c(f->name)) : NULL;
    if (!r || !r->hist_loading || r->fill_token != f->token) { /* gone meanwhile */
        fill_free(f);
        return;
    }
    int rc = status ? status : f->rc;
    if (rc != 0) {
        XD_LOG(NULL, XD_WARN, "muc history not completed from the archive", "room=%s err=%s",
               r->jid, xd_strerror(rc));
    } else if (hist_merge(r, f) > 0) {
        r->hist_dirty = r->cfg.persistent; /* stored with the next write-behind */
        atomic_fetch_add_explicit(&c.s->history_fills, 1, memory_order_relaxed);
    }
    r->hist_loading = false;
    muc_join_history_ready(&c, r);
    fill_free(f);
}

void
muc_room_hist_fill(muc_call_t *c, muc_room_t *r, bool whole)
{
    if (!r->cfg.mam || r->hcap == 0 || (whole && r->hn >= r->hcap))
        return;
    xd_module_ctx_t *mam = muc_room_mam(c, r);
    if (!mam)
        return;
    hist_fill_t *f = xd_new(hist_fill_t);
    f->mam = mam;
    f->room = muc_room_jid(r);
    f->name = xd_strdup(r->name);
    f->max = (int)r->hcap;
    f->token = atomic_fetch_add_explicit(&fill_tokens, 1, memory_order_relaxed) + 1;
    if (!f->room || xd_module_submit(c->ctx, fill_work, fill_done, f) != 0) {
        fill_free(f);
        return;
    }
    r->hist_loading = true;
    r->fill_token = f->token;
}

/*
 * mod_muc_util.c — the small helpers of a multi-user chat room (XEP-0045)
 * that the room's files share (muc_room.h): sending and fan-out,
 * affiliations and reserved nicks, the service's administrators, the
 * room's archive instance, flood control, roles, data forms and lists of
 * roles, an occupant's presence as the room sends it.  They run on the
 * room's owner worker (mod_muc.h); the lists of roles serve the service
 * part (mod_muc.c) too.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "mod_muc.h"
#include "muc_room.h"

#include "xmppd/alloc.h"
#include "xmppd/acl.h"
#include "xmppd/config.h"
#include "xmppd/jid.h"
#include "xmppd/ns.h"
#include "xmppd/route.h"
#include "xmppd/stanza.h"

int
muc_name_index(const char *const *names, size_t n, const char *v)
{
    for (size_t i = 0; v && i < n; i++)
        if (strcmp(names[i], v) == 0)
            return (int)i;
    return -1;
}

/* Tells the MUC_ROOM_EVENT handlers (mod_muc_log) what happened in r. */
void
muc_room_event(muc_call_t *c, const muc_room_t *r, int kind, const char *nick, const char *new_nick,
               const char *actor, const char *text, const xd_stanza_t *st)
{
    if (!xd_hook_active(XD_HOOK_MUC_ROOM_EVENT))
        return;
    xd_hook_muc_event_t ev = { .host = xd_module_host(c->ctx), .service = c->s->domain,
                               .room = r->name, .title = r->cfg.title,
                               .logging = r->cfg.logging, .kind = kind, .nick = nick,
                               .new_nick = new_nick, .actor = actor, .text = text, .st = st };
    xd_hook_run(XD_HOOK_MUC_ROOM_EVENT, ev.host, &ev);
}

/* ---- small helpers ----------------------------------------------------------------------------- */

void
muc_send_to(muc_call_t *c, xd_el_t *b, const char *to)
{
    xd_el_set_attr(b, "to", to);
    xd_stanza_t *st = xd_el_freeze(b);
    size_t len = 0;
    xd_stanza_bytes(st, &len);
    c->bytes += len;
    xd_route_take(st);
}

/* Sends a copy of st (no 'to') to every session of o. */
void
muc_send_occ(muc_call_t *c, const xd_stanza_t *st, const muc_occ_t *o)
{
    for (size_t i = 0; i < o->nfull; i++)
        muc_send_to(c, xd_stanza_edit(st), o->full[i]);
}

/* st (no 'to') to every session of the occupants `sel` picks but `skip`,
 * in one fan-out (route.h: one inbox message per worker, the bytes
 * serialized once); live: not to sessions still getting their occupant
 * list (messages); about: the occupant whose presence st is, which a
 * session still getting its list gets only once it was listed
 * (muc_join_withholds). */
static void
fan_out(muc_call_t *c, const muc_room_t *r, const xd_stanza_t *st, int sel,
        const muc_occ_t *skip, bool live, const muc_occ_t *about)
{
    size_t at = SIZE_MAX; /* about's place in the occupants */
    for (size_t i = 0; about && r->njoining && i < r->nocc; i++)
        if (r->occ[i] == about)
            at = i;
    xd_fanout_t *f = xd_fanout_new(st);
    size_t n = 0, tolen = 0;
    for (size_t i = 0; i < r->nocc; i++) {
        const muc_occ_t *v = r->occ[i];
        if (v == skip || (sel == FAN_SEES_JID && !muc_sees_jid(r, v)) ||
            (sel == FAN_NO_JID && muc_sees_jid(r, v)) ||
            (sel == FAN_MODERATORS && v->role != ROLE_MODERATOR))
            continue;
        for (size_t k = 0; k < v->nfull; k++) {
            if (r->njoining && (live || about) && muc_join_withholds(r, v->full[k], live, at))
                continue;
            if (v->jid[k])
                xd_fanout_add_jid(f, v->jid[k], v->worker[k]);
            else
                xd_fanout_add(f, v->full[k], v->worker[k]);
            tolen += strlen(v->full[k]);
            n++;
        }
    }
    size_t len = 0;
    xd_stanza_bytes(st, &len);
    c->bytes += n * (len + 6) + tolen; /* what the copies weigh: " to=''" each */
    size_t posts = xd_fanout_send(f);
    atomic_fetch_add_explicit(&c->s->fanouts, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->s->fanout_posts, posts, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->s->fanout_copies, n, memory_order_relaxed);
}

void
muc_fan_out(muc_call_t *c, const muc_room_t *r, const xd_stanza_t *st, int sel,
            const muc_occ_t *skip, bool live)
{
    fan_out(c, r, st, sel, skip, live, NULL);
}

void
muc_fan_out_pres(muc_call_t *c, const muc_room_t *r, const xd_stanza_t *st, int sel,
                 const muc_occ_t *about)
{
    fan_out(c, r, st, sel, about, false, about);
}

char *
muc_occ_jid(const muc_room_t *r, const char *nick)
{
    return xd_asprintf("%s/%s", r->jid, nick);
}

int
muc_aff_of(const muc_room_t *r, const char *bare)
{
    return (int)(intptr_t)xd_map_get(&r->affs, xd_str_c(bare));
}

/* The nick reserved for bare (NULL: none), and the JID a nick is
 * reserved for. */
const char *
muc_reg_nick_of(const muc_room_t *r, const char *bare)
{
    return xd_map_get(&r->reg_nick, xd_str_c(bare));
}

const char *
muc_reg_owner_of(const muc_room_t *r, const char *nick)
{
    return xd_map_get(&r->reg_owner, xd_str_c(nick));
}

/* Reserves nick for bare (XEP-0045 7.10), replacing what it had; NULL
 * drops its reservation. */
void
muc_reg_set(muc_room_t *r, const char *bare, const char *nick)
{
    char *old = xd_map_del(&r->reg_nick, xd_str_c(bare));
    if (old) {
        xd_free(xd_map_del(&r->reg_owner, xd_str_c(old)));
        xd_free(old);
    }
    if (nick) {
        xd_map_put(&r->reg_nick, xd_str_c(bare), xd_strdup(nick));
        xd_map_put(&r->reg_owner, xd_str_c(nick), xd_strdup(bare));
    }
}

void
muc_aff_set(muc_room_t *r, const char *bare, int aff)
{
    if (aff == AFF_NONE)
        xd_map_del(&r->affs, xd_str_c(bare));
    else
        xd_map_put(&r->affs, xd_str_c(bare), (void *)(intptr_t)aff);
    if (aff < AFF_MEMBER) /* a reserved nick goes with the membership */
        muc_reg_set(r, bare, NULL);
}

/* An administrator of the service (access_admin): an owner of every room. */
bool
muc_service_admin(const muc_call_t *c, const xd_jid_t *jid)
{
    const char *rule = c->conf->access_admin;
    if (!rule || strcmp(rule, "none") == 0 || !jid)
        return false;
    xd_config_t *cfg = xd_config_get();
    bool ok = xd_access_match(cfg, xd_module_host(c->ctx), rule, jid, NULL) == XD_ACCESS_ALLOW;
    xd_config_unref(cfg);
    return ok;
}

/* The mod_mam instance that keeps room r's archive (held: release it with
 * xd_module_release), or NULL when the room keeps none (its configuration
 * says no, or the host has no mod_mam or no database). */
xd_module_ctx_t *
muc_room_mam(const muc_call_t *c, const muc_room_t *r)
{
    if (!r->cfg.mam)
        return NULL;
    xd_module_ctx_t *m = xd_module_instance("mod_mam", xd_module_host(c->ctx));
    if (m && !xd_module_db(m)) {
        xd_module_release(m);
        m = NULL;
    }
    return m;
}

bool
muc_room_archived(const muc_call_t *c, const muc_room_t *r)
{
    xd_module_ctx_t *m = muc_room_mam(c, r);
    xd_module_release(m);
    return m != NULL;
}

xd_jid_t *
muc_room_jid(const muc_room_t *r)
{
    xd_jid_t *j = NULL;
    return xd_jid_parse(xd_str_c(r->jid), &j) == 0 ? j : NULL;
}

/* max_messages_per_second: whether o may send one more message now (a
 * bucket of a second's worth, refilled continuously). */
bool
muc_flood_ok(muc_call_t *c, muc_occ_t *o)
{
    int rate = c->conf->max_messages_per_second;
    if (rate <= 0)
        return true;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    if (!o->flood_ms) {
        o->flood_tokens = rate;
    } else {
        o->flood_tokens += (double)(now - o->flood_ms) * rate / 1000.0;
        if (o->flood_tokens > rate)
            o->flood_tokens = rate;
    }
    o->flood_ms = now;
    if (o->flood_tokens < 1.0) {
        atomic_fetch_add_explicit(&c->s->flood_refusals, 1, memory_order_relaxed);
        return false;
    }
    o->flood_tokens -= 1.0;
    return true;
}

/* The affiliation `jid` (bare form `bare`) acts with: its own, or owner
 * for a service administrator. */
int
muc_eff_aff(const muc_call_t *c, const muc_room_t *r, const char *bare, const xd_jid_t *jid)
{
    int aff = muc_aff_of(r, bare);
    return aff < AFF_OWNER && muc_service_admin(c, jid) ? AFF_OWNER : aff;
}

int
muc_role_for(const muc_room_t *r, int aff)
{
    if (aff >= AFF_ADMIN)
        return ROLE_MODERATOR;
    if (r->cfg.moderated && aff < AFF_MEMBER && !r->cfg.members_by_default)
        return ROLE_VISITOR;
    return ROLE_PARTICIPANT;
}

/* ---- data forms -------------------------------------------------------------------------------- */

const xd_el_t *
muc_form_field(const xd_el_t *x, const char *var)
{
    for (const xd_el_t *f = xd_el_first_child(x); f; f = xd_el_next(f)) {
        const char *v = xd_el_attr(f, "var");
        if (xd_el_is(f, "field", XD_NS_DATA) && v && strcmp(v, var) == 0)
            return f;
    }
    return NULL;
}

const char *
muc_form_value(const xd_el_t *x, const char *var)
{
    const xd_el_t *f = muc_form_field(x, var);
    if (!f)
        return NULL;
    const char *t = xd_el_child_text(f, "value", XD_NS_DATA);
    return t ? t : "";
}

bool
muc_form_bool(const char *v, bool def)
{
    if (!v)
        return def;
    return strcmp(v, "1") == 0 || strcmp(v, "true") == 0;
}

/* ---- lists of roles (mod_muc.h: the one mapping) ----------------------------------------------- */

int
muc_role_bit(xd_str_t name)
{
    for (int role = ROLE_VISITOR; role <= ROLE_MODERATOR; role++)
        if (xd_str_eq_c(name, role_names[role]))
            return 1 << role;
    return 0;
}

int
muc_role_mask(const xd_strlist_t *l)
{
    int mask = 0;
    for (size_t i = 0; i < l->count; i++) {
        int bit = muc_role_bit(xd_str_c(l->items[i]));
        if (!bit)
            return -1;
        mask |= bit;
    }
    return mask;
}

void
muc_roles_to_text(int mask, char *out, size_t size)
{
    out[0] = '\0';
    for (int role = ROLE_VISITOR; role <= ROLE_MODERATOR; role++)
        if (mask & 1 << role)
            snprintf(out + strlen(out), size - strlen(out), "%s%s", *out ? " " : "",
                     role_names[role]);
}

int
muc_roles_from_text(const char *v)
{
    int mask = 0;
    while (*v) {
        size_t n = strcspn(v, " ");
        mask |= muc_role_bit((xd_str_t){ v, n });
        v += n + (v[n] == ' ');
    }
    return mask;
}

bool
muc_roles_from_form(const xd_el_t *x, const char *var, int *mask)
{
    const xd_el_t *f = muc_form_field(x, var);
    if (!f)
        return true;
    int m = 0;
    for (const xd_el_t *val = xd_el_first_child(f); val; val = xd_el_next(val)) {
        if (!xd_el_is(val, "value", XD_NS_DATA))
            continue;
        const char *t = xd_el_text(val);
        if (!t || !*t)
            continue;
        int bit = muc_role_bit(xd_str_c(t));
        if (!bit)
            return false;
        m |= bit;
    }
    *mask = m;
    return true;
}

void
muc_add_roles_field(xd_el_t *x, const char *var, const char *label, int mask)
{
    xd_el_t *f = xd_el_add_child(x, "field", NULL);
    xd_el_set_attr(f, "var", var);
    xd_el_set_attr(f, "type", "list-multi");
    xd_el_set_attr(f, "label", label);
    const char *roles[3];
    size_t n = 0;
    for (int role = ROLE_MODERATOR; role >= ROLE_VISITOR; role--) {
        roles[n++] = role_names[role];
        if (mask & 1 << role)
            xd_el_add_text(xd_el_add_child(f, "value", NULL), role_names[role]);
    }
    muc_add_options(f, roles, n);
}

/* ---- an occupant's presence -------------------------------------------------------------------- */

void
muc_add_status(xd_el_t *x, int code)
{
    char num[8];
    snprintf(num, sizeof num, "%d", code);
    xd_el_set_attr(xd_el_add_child(x, "status", NULL), "code", num);
}

/* Presence of occupant o for an occupant who may see real JIDs (show_jid),
 * with status codes; unavailable: a leave.  Returns the builder, no 'to'. */
xd_el_t *
muc_occ_presence(const muc_room_t *r, const muc_occ_t *o, bool unavailable, bool show_jid,
                 const char *full_for_jid, const pres_extra_t *ex, bool self)
{
    xd_el_t *b;
    if (!unavailable && o->pres) {
        b = xd_stanza_edit(o->pres);
        xd_el_remove_attr(b, "to");
        xd_el_remove_attr(b, "id");
        xd_el_remove_attr(b, "type");
        for (xd_el_t *ch = xd_el_first_child_mut(b); ch;) {
            xd_el_t *next = xd_el_next_mut(ch);
            const char *ns = xd_el_ns(ch);
            if (ns && (strcmp(ns, XD_NS_MUC) == 0 || strcmp(ns, XD_NS_MUC_USER) == 0 ||
                       strcmp(ns, MUC_NS_OCCUPANT_ID) == 0))
                xd_el_remove_child(b, ch);
            ch = next;
        }
    } else {
        b = xd_el_new("presence", NULL);
        if (unavailable)
            xd_el_set_attr(b, "type", "unavailable");
        /* A leave keeps the status the occupant gave (XEP-0045 7.14). */
        const xd_el_t *last = o->pres ? xd_stanza_root(o->pres) : NULL;
        const char *lt = last ? xd_el_attr(last, "type") : NULL;
        const char *status = lt && strcmp(lt, "unavailable") == 0
                                 ? xd_el_child_text(last, "status", NULL)
                                 : NULL;
        if (unavailable && status)
            xd_el_add_text(xd_el_add_child(b, "status", NULL), status);
    }
    char *from = muc_occ_jid(r, o->nick);
    xd_el_set_attr(b, "from", from);
    xd_free(from);
    xd_el_t *x = xd_el_add_child(b, "x", XD_NS_MUC_USER);
    xd_el_t *item = xd_el_add_child(x, "item", NULL);
    int aff = ex && ex->aff >= 0 ? ex->aff : muc_aff_of(r, o->bare);
    int role = ex && ex->role >= 0 ? ex->role : (unavailable ? ROLE_NONE : o->role);
    xd_el_set_attr(item, "affiliation", aff_names[aff]);
    xd_el_set_attr(item, "role", role_names[role]);
    if (show_jid)
        xd_el_set_attr(item, "jid", full_for_jid ? full_for_jid : o->full[0]);
    if (ex && ex->newnick)
        xd_el_set_attr(item, "nick", ex->newnick);
    if (ex && ex->actor)
        xd_el_set_attr(xd_el_add_child(item, "actor", NULL), "nick", ex->actor);
    if (ex && ex->reason)
        xd_el_add_text(xd_el_add_child(item, "reason", NULL), ex->reason);
    if (ex && ex->destroy) {
        xd_el_t *d = xd_el_add_child(x, "destroy", NULL);
        const char *alt = xd_el_attr(ex->destroy, "jid");
        if (alt)
            xd_el_set_attr(d, "jid", alt);
        const char *why = xd_el_child_text(ex->destroy, "reason", NULL);
        if (!why)
            why = xd_el_child_text(ex->destroy, "reason", XD_NS_MUC_OWNER);
        if (why)
            xd_el_add_text(xd_el_add_child(d, "reason", NULL), why);
    }
    for (size_t i = 0; ex && i < ex->ncodes; i++)
        muc_add_status(x, ex->codes[i]);
    if (self) {
        if (r->cfg.whois == WHOIS_ANYONE)
            muc_add_status(x, 100);
        muc_add_status(x, 110); /* last (XEP-0045 7.2.2) */
    }
    xd_el_set_attr(xd_el_add_child(b, "occupant-id", MUC_NS_OCCUPANT_ID), "id", o->oid);
    return b;
}

bool
muc_sees_jid(const muc_room_t *r, const muc_occ_t *viewer)
{
    return r->cfg.whois == WHOIS_ANYONE || viewer->role == ROLE_MODERATOR;
}

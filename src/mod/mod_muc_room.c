/*
 * mod_muc_room.c — a multi-user chat room (XEP-0045) on its owner worker:
 * occupants, roles and affiliations, history, subject, configuration,
 * destruction, invitations (mod_muc.h for the threads).
 *
 * Everything here runs on the room's owner worker and touches the room
 * without a lock.  Every stanza the room sends is routed (xd_route_take)
 * to an occupant's real full JID, one copy per session; the bytes of the
 * copies a stanza caused are charged to its sender's stream
 * (xd_input_charge), as the presence broadcast does.
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

#include "xmppd/alloc.h"
#include "xmppd/acl.h"
#include "xmppd/base64.h"
#include "xmppd/config.h"
#include "xmppd/err.h"
#include "xmppd/jid.h"
#include "xmppd/log.h"
#include "xmppd/ns.h"
#include "xmppd/route.h"
#include "xmppd/session.h"
#include "xmppd/stanza.h"

enum { ROLE_NONE, ROLE_VISITOR, ROLE_PARTICIPANT, ROLE_MODERATOR };
#define PBCAST_ALL ((1 << ROLE_VISITOR) | (1 << ROLE_PARTICIPANT) | (1 << ROLE_MODERATOR))
enum { AFF_NONE, AFF_OUTCAST, AFF_MEMBER, AFF_ADMIN, AFF_OWNER };
enum { WHOIS_MODERATORS, WHOIS_ANYONE };
enum { PM_ANYONE, PM_PARTICIPANTS, PM_MODERATORS, PM_NONE };

static const char *const role_names[] = { "none", "visitor", "participant", "moderator" };
static const char *const aff_names[] = { "none", "outcast", "member", "admin", "owner" };
static const char *const pm_names[] = { "anyone", "participants", "moderators", "none" };
#define MUC_VOICE_INTERVAL_MAX (365 * 86400) /* s: voice_request_min_interval */

static int
name_index(const char *const *names, size_t n, const char *v)
{
    for (size_t i = 0; v && i < n; i++)
        if (strcmp(names[i], v) == 0)
            return (int)i;
    return -1;
}

int
muc_role_mask(const xd_strlist_t *l)
{
    int mask = 0;
    for (size_t i = 0; i < l->count; i++) {
        int role = name_index(role_names, 4, l->items[i]);
        if (role <= ROLE_NONE)
            return -1;
        mask |= 1 << role;
    }
    return mask;
}

typedef struct muc_cfg {
    char *title, *desc, *password; /* owned or NULL */
    bool persistent, pub, members_only, moderated, password_protected;
    bool changesubject, allowinvites;
    bool logging;  /* muc#roomconfig_enablelogging: MUC_ROOM_EVENT handlers log it */
    int whois;     /* WHOIS_* */
    int allowpm;   /* PM_* */
    char *lang;    /* muc#roomconfig_lang: a language tag, or NULL */
    char *pubsub;  /* muc#roomconfig_pubsub: the XMPP URI of a node, or NULL */
    int getmemberlist;        /* 1 << ROLE_* that may get the member list */
    bool voice_requests;      /* allow_voice_requests: visitors may ask for voice */
    int voice_interval;       /* voice_request_min_interval: s between one's requests */
    bool visitor_status;      /* allow_visitor_status: a visitor's <status/> is broadcast */
    bool visitor_nickchange;  /* allow_visitor_nickchange */
    bool members_by_default;  /* moderated: unaffiliated occupants enter as participants */
    int maxusers;
    int history;   /* messages kept */
    bool mam;      /* the room keeps an archive (XEP-0313, mam.h) */
    int pbcast;    /* muc#roomconfig_presencebroadcast: 1 << ROLE_* whose presence goes to all */
} muc_cfg_t;

typedef struct muc_occ {
    char *nick;          /* the occupant's nick */
    char *bare;          /* its real bare JID */
    char **full;         /* its sessions' real full JIDs */
    int *worker;         /* per session: the worker that owned it at entering (-1: none) */
    xd_jid_t **jid;      /* per session: full parsed (a reference, or NULL): the fan-outs' 'to' */
    size_t nfull;
    uint64_t voice_ms;   /* when it last asked for voice (muc_now_ms); 0: never */
    int role;            /* ROLE_* */
    xd_stanza_t *pres;   /* the last presence it sent (a reference) */
    char oid[48];        /* XEP-0421 occupant id */
    bool announced;      /* the others were told it is in (presencebroadcast: its role's
                          * presence is broadcast); it is in the lists newcomers get */
    double flood_tokens; /* max_messages_per_second: messages it may send now */
    uint64_t flood_ms;   /* when they were counted (muc_now_ms) */
} muc_occ_t;

typedef struct muc_hist {
    xd_stanza_t *st;     /* as broadcast, without 'to' */
    time_t ts;           /* when */
    size_t len;          /* its bytes (maxchars) */
} muc_hist_t;

typedef struct muc_room {
    char *name;          /* local part */
    char *jid;           /* bare room JID */
    char *creator;       /* bare JID of its creator */
    muc_cfg_t cfg;
    xd_map_t affs;       /* bare JID → (void *)(intptr_t)AFF_* (never AFF_NONE) */
    xd_map_t reg_nick;   /* bare JID → its reserved nick (char *; members and up, 7.10) */
    xd_map_t reg_owner;  /* reserved nick → the bare JID it is reserved for (char *) */
    muc_occ_t **occ;     /* occupants, in no order */
    size_t nocc, cap;
    xd_map_t by_nick;    /* nick → occupant */
    xd_map_t by_full;    /* real full JID → occupant */
    muc_hist_t *hist;    /* ring of cfg.history */
    size_t hcap, hstart, hn;
    char *subject;       /* NULL: none set */
    char *subject_nick;  /* who set it (nick), or NULL */
    bool locked;         /* created, not configured yet (XEP-0045 10.1) */
    char salt[24];       /* occupant ids */
    xd_map_t joining;    /* real full JID → muc_join_t: still getting its occupant list */
    size_t njoining;     /* entries of joining */
    uint64_t join_seq;   /* ids of the pings that pace the lists */
    muc_state_t *s;      /* the service (counters) */
    size_t hbytes;       /* bytes of the history (muc_state_t.history_bytes) */
    uint64_t empty_since; /* muc_now_ms when the last occupant left; 0: occupied */
    bool hist_dirty;     /* persistent: the history changed since it was last stored */
    uint64_t flushed_ms; /* muc_now_ms when it was last stored (history_flush_interval) */
} muc_room_t;

/* A session entering a big room: the occupant list goes in chunks of
 * join_chunk presences, each after the session answered a ping sent
 * behind the one before (so no more than a chunk waits in its stream's
 * queues), then its own presence, the history and the subject.  Until then
 * it gets the room's presence traffic but not its messages (they are in
 * the history it gets at the end). */
typedef struct muc_join {
    char *full;          /* the session */
    size_t next;         /* index in the room's occupants of the next to list (the
                          * occupants keep their order; occ_index_remove moves it) */
    xd_stanza_t *pres;   /* the entering presence (its <x/>: history limits) */
    int codes[1];        /* its self-presence status codes (201) */
    size_t ncodes;
    char ping[40];       /* id of the ping waited for */
} muc_join_t;

/* What handling one stanza sent: bytes charged to its sender. */
typedef struct muc_call {
    xd_module_ctx_t *ctx;
    muc_state_t *s;
    const muc_conf_t *conf;
    xd_input_ref_t in;
    size_t bytes;
    bool store;          /* the room's stored state changed */
    bool held;           /* in is held by the caller (posted from another worker) */
    bool in_taken;       /* the archive took that hold over (mam_room_store) */
} muc_call_t;

static void add_field(xd_el_t *x, const char *var, const char *type, const char *label,
                      const char *value);
static void occ_changed(muc_call_t *c, muc_room_t *r, muc_occ_t *o, const char *actor,
                        const char *reason);
static void aff_follow(muc_call_t *c, muc_room_t *r, const char *bare, int aff,
                       const char *actor, const char *reason);

/* Tells the MUC_ROOM_EVENT handlers (mod_muc_log) what happened in r. */
static void
room_event(muc_call_t *c, const muc_room_t *r, int kind, const char *nick, const char *new_nick,
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

static void
send_to(muc_call_t *c, xd_el_t *b, const char *to)
{
    xd_el_set_attr(b, "to", to);
    xd_stanza_t *st = xd_el_freeze(b);
    size_t len = 0;
    xd_stanza_bytes(st, &len);
    c->bytes += len;
    xd_route_take(st);
}

/* Sends a copy of st (no 'to') to every session of o. */
static void
send_occ(muc_call_t *c, const xd_stanza_t *st, const muc_occ_t *o)
{
    for (size_t i = 0; i < o->nfull; i++)
        send_to(c, xd_stanza_edit(st), o->full[i]);
}

/* Who a fan-out goes to. */
enum { FAN_ALL, FAN_SEES_JID, FAN_NO_JID, FAN_MODERATORS };

static bool sees_jid(const muc_room_t *r, const muc_occ_t *viewer);

/* st (no 'to') to every session of the occupants `sel` picks but `skip`,
 * in one fan-out (route.h: one inbox message per worker, the bytes
 * serialized once); live: not to sessions still getting their occupant
 * list (messages). */
static void
fan_out(muc_call_t *c, const muc_room_t *r, const xd_stanza_t *st, int sel,
        const muc_occ_t *skip, bool live)
{
    xd_fanout_t *f = xd_fanout_new(st);
    size_t n = 0, tolen = 0;
    for (size_t i = 0; i < r->nocc; i++) {
        const muc_occ_t *v = r->occ[i];
        if (v == skip || (sel == FAN_SEES_JID && !sees_jid(r, v)) ||
            (sel == FAN_NO_JID && sees_jid(r, v)) ||
            (sel == FAN_MODERATORS && v->role != ROLE_MODERATOR))
            continue;
        for (size_t k = 0; k < v->nfull; k++) {
            if (live && r->njoining && xd_map_get(&r->joining, xd_str_c(v->full[k])))
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

static char *
occ_jid(const muc_room_t *r, const char *nick)
{
    return xd_asprintf("%s/%s", r->jid, nick);
}

static int
aff_of(const muc_room_t *r, const char *bare)
{
    return (int)(intptr_t)xd_map_get(&r->affs, xd_str_c(bare));
}

/* The nick reserved for bare (NULL: none), and the JID a nick is
 * reserved for. */
static const char *
reg_nick_of(const muc_room_t *r, const char *bare)
{
    return xd_map_get(&r->reg_nick, xd_str_c(bare));
}

static const char *
reg_owner_of(const muc_room_t *r, const char *nick)
{
    return xd_map_get(&r->reg_owner, xd_str_c(nick));
}

/* Reserves nick for bare (XEP-0045 7.10), replacing what it had; NULL
 * drops its reservation. */
static void
reg_set(muc_room_t *r, const char *bare, const char *nick)
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

static void
aff_set(muc_room_t *r, const char *bare, int aff)
{
    if (aff == AFF_NONE)
        xd_map_del(&r->affs, xd_str_c(bare));
    else
        xd_map_put(&r->affs, xd_str_c(bare), (void *)(intptr_t)aff);
    if (aff < AFF_MEMBER) /* a reserved nick goes with the membership */
        reg_set(r, bare, NULL);
}

/* An administrator of the service (access_admin): an owner of every room. */
static bool
service_admin(const muc_call_t *c, const xd_jid_t *jid)
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
static xd_module_ctx_t *
room_mam(const muc_call_t *c, const muc_room_t *r)
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

static bool
room_archived(const muc_call_t *c, const muc_room_t *r)
{
    xd_module_ctx_t *m = room_mam(c, r);
    xd_module_release(m);
    return m != NULL;
}

static xd_jid_t *
room_jid(const muc_room_t *r)
{
    xd_jid_t *j = NULL;
    return xd_jid_parse(xd_str_c(r->jid), &j) == 0 ? j : NULL;
}

/* max_messages_per_second: whether o may send one more message now (a
 * bucket of a second's worth, refilled continuously). */
static bool
flood_ok(muc_call_t *c, muc_occ_t *o)
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
static int
eff_aff(const muc_call_t *c, const muc_room_t *r, const char *bare, const xd_jid_t *jid)
{
    int aff = aff_of(r, bare);
    return aff < AFF_OWNER && service_admin(c, jid) ? AFF_OWNER : aff;
}

static int
role_for(const muc_room_t *r, int aff)
{
    if (aff >= AFF_ADMIN)
        return ROLE_MODERATOR;
    if (r->cfg.moderated && aff < AFF_MEMBER && !r->cfg.members_by_default)
        return ROLE_VISITOR;
    return ROLE_PARTICIPANT;
}

static void
occupant_id(const muc_room_t *r, const char *bare, char out[48])
{
    unsigned char md[32];
    unsigned mdlen = 0;
    char *in = xd_asprintf("%s\n%s\n%s", r->salt, r->jid, bare);
    EVP_Digest(in, strlen(in), md, &mdlen, EVP_sha256(), NULL);
    xd_free(in);
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i + 2 < 24 && o + 4 < 48; i += 3) { /* 24 bytes → 32 chars */
        unsigned v = (unsigned)md[i] << 16 | (unsigned)md[i + 1] << 8 | md[i + 2];
        out[o++] = b64[v >> 18 & 63];
        out[o++] = b64[v >> 12 & 63];
        out[o++] = b64[v >> 6 & 63];
        out[o++] = b64[v & 63];
    }
    out[o] = '\0';
}

static const char *
form_value(const xd_el_t *x, const char *var)
{
    for (const xd_el_t *f = xd_el_first_child(x); f; f = xd_el_next(f)) {
        const char *v = xd_el_attr(f, "var");
        if (xd_el_is(f, "field", XD_NS_DATA) && v && strcmp(v, var) == 0) {
            const char *t = xd_el_child_text(f, "value", XD_NS_DATA);
            return t ? t : "";
        }
    }
    return NULL;
}

static bool
form_bool(const char *v, bool def)
{
    if (!v)
        return def;
    return strcmp(v, "1") == 0 || strcmp(v, "true") == 0;
}

/* A mask of 1 << ROLE_* as the role names, space-separated, and back
 * (unknown names are skipped). */
static void
roles_text(int mask, char *out, size_t size)
{
    out[0] = '\0';
    for (int role = ROLE_VISITOR; role <= ROLE_MODERATOR; role++)
        if (mask & 1 << role)
            snprintf(out + strlen(out), size - strlen(out), "%s%s", *out ? " " : "",
                     role_names[role]);
}

static int
roles_parse(const char *v)
{
    int mask = 0;
    for (int role = ROLE_VISITOR; role <= ROLE_MODERATOR; role++) {
        size_t n = strlen(role_names[role]);
        for (const char *p = v; (p = strstr(p, role_names[role])); p += n)
            if ((p == v || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
                mask |= 1 << role;
    }
    return mask;
}

static void add_options(xd_el_t *f, const char *const *opts, size_t n);

/* A list-multi form field of roles: the mask's as values, the three
 * roles an occupant can have as options. */
static void
add_roles_field(xd_el_t *x, const char *var, const char *label, int mask)
{
    xd_el_t *f = xd_el_add_child(x, "field", NULL);
    xd_el_set_attr(f, "var", var);
    xd_el_set_attr(f, "type", "list-multi");
    xd_el_set_attr(f, "label", label);
    for (int role = ROLE_MODERATOR; role >= ROLE_VISITOR; role--)
        if (mask & 1 << role)
            xd_el_add_text(xd_el_add_child(f, "value", NULL), role_names[role]);
    static const char *const roles[] = { "moderator", "participant", "visitor" };
    add_options(f, roles, 3);
}

static void
stamp_of(time_t t, char out[32])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* XEP-0082 date-time; -1 when it is not one. */
static time_t
parse_stamp(const char *s)
{
    struct tm tm = { 0 };
    int y, mo, d, h, mi, sec;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d", &y, &mo, &d, &h, &mi, &sec) != 6)
        return -1;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    time_t t = timegm(&tm);
    const char *z = s + 19;
    if (*z == '.')
        while (*++z >= '0' && *z <= '9') {
        }
    if ((*z == '+' || *z == '-') && strlen(z) >= 6) {
        int oh = atoi(z + 1), om = atoi(z + 4);
        long off = (oh * 60L + om) * 60L;
        t += *z == '+' ? -off : off;
    }
    return t;
}

/* ---- room life --------------------------------------------------------------------------------- */

static void
join_free(void *v)
{
    muc_join_t *j = v;
    if (!j)
        return;
    xd_free(j->full);
    xd_stanza_unref(j->pres);
    xd_free(j);
}

/* Session `full` no longer enters (it left, or its list is done). */
static void
join_drop(muc_room_t *r, const char *full)
{
    if (!r->njoining)
        return;
    muc_join_t *j = xd_map_del(&r->joining, xd_str_c(full));
    if (j) {
        join_free(j);
        r->njoining--;
    }
}

static void
occ_free(muc_occ_t *o)
{
    for (size_t i = 0; i < o->nfull; i++) {
        xd_free(o->full[i]);
        if (o->jid[i])
            xd_jid_unref(o->jid[i]);
    }
    xd_free(o->full);
    xd_free(o->jid);
    xd_free(o->worker);
    xd_free(o->nick);
    xd_free(o->bare);
    if (o->pres)
        xd_stanza_unref(o->pres);
    xd_free(o);
}

static void
hist_bytes(muc_room_t *r, size_t add, size_t sub)
{
    r->hbytes += add - sub;
    if (add)
        atomic_fetch_add_explicit(&r->s->history_bytes, add, memory_order_relaxed);
    if (sub)
        atomic_fetch_sub_explicit(&r->s->history_bytes, sub, memory_order_relaxed);
}

static void
hist_clear(muc_room_t *r)
{
    for (size_t i = 0; i < r->hn; i++)
        xd_stanza_unref(r->hist[(r->hstart + i) % r->hcap].st);
    r->hn = r->hstart = 0;
    hist_bytes(r, 0, r->hbytes);
}

static void
room_free(void *v)
{
    muc_room_t *r = v;
    if (!r)
        return;
    atomic_fetch_sub_explicit(&r->s->rooms_live, 1, memory_order_relaxed);
    for (size_t i = 0; i < r->nocc; i++)
        occ_free(r->occ[i]);
    xd_free(r->occ);
    xd_map_free(&r->joining, join_free);
    xd_map_free(&r->by_nick, NULL);
    xd_map_free(&r->by_full, NULL);
    xd_map_free(&r->affs, NULL);
    xd_map_free(&r->reg_nick, xd_free);
    xd_map_free(&r->reg_owner, xd_free);
    hist_clear(r);
    xd_free(r->hist);
    xd_free(r->subject);
    xd_free(r->subject_nick);
    xd_free(r->cfg.title);
    xd_free(r->cfg.desc);
    xd_free(r->cfg.password);
    xd_free(r->cfg.lang);
    xd_free(r->cfg.pubsub);
    xd_free(r->creator);
    xd_free(r->name);
    xd_free(r->jid);
    xd_free(r);
}

void
muc_rooms_free(muc_state_t *s)
{
    for (size_t i = 0; i < XD_OWNER_MAX_WORKERS; i++)
        xd_map_free(&s->rooms[i], room_free);
}

static void
hist_resize(muc_room_t *r, size_t cap)
{
    /* Keeps the newest min(hn, cap) messages. */
    muc_hist_t *n = cap ? xd_calloc(cap, sizeof *n) : NULL;
    size_t keep = r->hn < cap ? r->hn : cap, drop = r->hn - keep;
    for (size_t i = 0; i < r->hn; i++) {
        muc_hist_t *h = &r->hist[(r->hstart + i) % r->hcap];
        if (i < drop) {
            hist_bytes(r, 0, h->len);
            xd_stanza_unref(h->st);
        } else
            n[i - drop] = *h;
    }
    xd_free(r->hist);
    r->hist = n;
    r->hcap = cap;
    r->hstart = 0;
    r->hn = keep;
}

/* Appends st (taken) to the history as of ts, dropping the oldest when
 * full. */
static void
hist_add_at(muc_room_t *r, xd_stanza_t *st, time_t ts)
{
    if (r->hcap == 0) {
        xd_stanza_unref(st);
        return;
    }
    size_t len = 0;
    xd_stanza_bytes(st, &len);
    muc_hist_t e = { st, ts, len };
    hist_bytes(r, len, 0);
    if (r->hn == r->hcap) {
        hist_bytes(r, 0, r->hist[r->hstart].len);
        xd_stanza_unref(r->hist[r->hstart].st);
        r->hist[r->hstart] = e;
        r->hstart = (r->hstart + 1) % r->hcap;
    } else {
        r->hist[(r->hstart + r->hn++) % r->hcap] = e;
    }
}

static muc_room_t *
room_new(muc_call_t *c, const char *name)
{
    muc_room_t *r = xd_new(muc_room_t);
    r->s = c->s;
    atomic_fetch_add_explicit(&c->s->rooms_live, 1, memory_order_relaxed);
    r->cfg.mam = c->conf->default_mam;
    r->name = xd_strdup(name);
    r->jid = xd_asprintf("%s@%s", name, c->s->domain);
    r->cfg.maxusers = c->conf->max_users;
    const muc_conf_t *d = c->conf;
    r->cfg.lang = d->default_lang && *d->default_lang ? xd_strdup(d->default_lang) : NULL;
    int gml = muc_role_mask(&d->default_getmemberlist);
    r->cfg.getmemberlist = gml < 0 ? 0 : gml;
    r->cfg.voice_requests = d->default_allow_voice_requests;
    uint64_t vi = d->default_voice_request_min_interval / 1000;
    r->cfg.voice_interval = vi > MUC_VOICE_INTERVAL_MAX ? MUC_VOICE_INTERVAL_MAX : (int)vi;
    r->cfg.visitor_status = d->default_allow_visitor_status;
    r->cfg.visitor_nickchange = d->default_allow_visitor_nickchange;
    r->cfg.members_by_default = d->default_members_by_default;
    r->cfg.history = c->conf->history_size < c->conf->max_history_size
                         ? c->conf->history_size
                         : c->conf->max_history_size;
    r->cfg.changesubject = true;
    r->cfg.allowinvites = false;
    r->cfg.pub = true;
    r->cfg.whois = WHOIS_MODERATORS;
    r->cfg.allowpm = PM_ANYONE;
    int pb = muc_role_mask(&c->conf->default_presence_broadcast);
    r->cfg.pbcast = pb < 0 ? PBCAST_ALL : pb;
    hist_resize(r, (size_t)r->cfg.history);
    return r;
}

static int
aff_one(void *arg, const char *key, void *val)
{
    xd_el_t *root = *(xd_el_t **)arg;
    xd_el_t *a = xd_el_add_child(root, "aff", NULL);
    xd_el_set_attr(a, "jid", key);
    xd_el_set_attr(a, "a", aff_names[(int)(intptr_t)val]);
    return 0;
}

static int
reg_one(void *arg, const char *key, void *val)
{
    xd_el_t *root = *(xd_el_t **)arg;
    xd_el_t *a = xd_el_add_child(root, "reg", NULL);
    xd_el_set_attr(a, "jid", key);
    xd_el_set_attr(a, "nick", val);
    return 0;
}

/* The stored form of the room: configuration, affiliations, subject;
 * with_hist: the history too (a room leaving memory). */
static char *
room_serialize(const muc_room_t *r, bool with_hist)
{
    xd_el_t *root = xd_el_new("room", "urn:xmppd:muc:room");
    xd_el_set_attr(root, "salt", r->salt);
    if (r->creator)
        xd_el_set_attr(root, "creator", r->creator);
    xd_el_t *cf = xd_el_add_child(root, "config", NULL);
    const muc_cfg_t *g = &r->cfg;
    if (g->title)
        xd_el_set_attr(cf, "title", g->title);
    if (g->desc)
        xd_el_set_attr(cf, "desc", g->desc);
    if (g->password)
        xd_el_set_attr(cf, "password", g->password);
    char num[32];
    struct { const char *k; bool v; } flags[] = {
        { "public", g->pub }, { "members", g->members_only }, { "moderated", g->moderated },
        { "protected", g->password_protected }, { "subject", g->changesubject },
        { "invites", g->allowinvites },
        { "logging", g->logging },
    };
    for (size_t i = 0; i < sizeof flags / sizeof *flags; i++)
        xd_el_set_attr(cf, flags[i].k, flags[i].v ? "1" : "0");
    xd_el_set_attr(cf, "whois", g->whois == WHOIS_ANYONE ? "anyone" : "moderators");
    xd_el_set_attr(cf, "pm", pm_names[g->allowpm]);
    if (g->lang)
        xd_el_set_attr(cf, "lang", g->lang);
    if (g->pubsub)
        xd_el_set_attr(cf, "pubsub", g->pubsub);
    char roles[40];
    roles_text(g->getmemberlist, roles, sizeof roles);
    xd_el_set_attr(cf, "getmemberlist", roles);
    struct { const char *k; bool v; } more[] = {
        { "voicereq", g->voice_requests }, { "vstatus", g->visitor_status },
        { "vnick", g->visitor_nickchange }, { "mbd", g->members_by_default },
    };
    for (size_t i = 0; i < sizeof more / sizeof *more; i++)
        xd_el_set_attr(cf, more[i].k, more[i].v ? "1" : "0");
    snprintf(num, sizeof num, "%d", g->voice_interval);
    xd_el_set_attr(cf, "voiceint", num);
    snprintf(num, sizeof num, "%d", g->maxusers);
    xd_el_set_attr(cf, "maxusers", num);
    snprintf(num, sizeof num, "%d", g->history);
    xd_el_set_attr(cf, "history", num);
    xd_el_set_attr(cf, "mam", g->mam ? "1" : "0");
    char pb[40];
    roles_text(g->pbcast, pb, sizeof pb);
    xd_el_set_attr(cf, "pbcast", pb);
    for (size_t i = 0; with_hist && i < r->hn; i++) {
        const muc_hist_t *e = &r->hist[(r->hstart + i) % r->hcap];
        xd_el_t *h = xd_el_add_child(root, "hist", NULL);
        snprintf(num, sizeof num, "%lld", (long long)e->ts);
        xd_el_set_attr(h, "ts", num);
        xd_el_append(h, xd_stanza_edit(e->st));
    }
    if (r->subject) {
        xd_el_t *sj = xd_el_add_child(root, "subject", NULL);
        if (r->subject_nick)
            xd_el_set_attr(sj, "nick", r->subject_nick);
        xd_el_add_text(sj, r->subject);
    }
    xd_map_foreach(&r->affs, aff_one, &root);
    xd_map_foreach(&r->reg_nick, reg_one, &root); /* after the affiliations it needs */
    char *out = xd_el_serialize(root, NULL, NULL);
    xd_el_free(root);
    return out;
}

static muc_room_t *
room_restore(muc_call_t *c, const char *name, const char *stored)
{
    xd_el_t *root = NULL;
    if (xd_el_parse(stored, strlen(stored), &root) != 0)
        return NULL;
    muc_room_t *r = room_new(c, name);
    const char *salt = xd_el_attr(root, "salt");
    snprintf(r->salt, sizeof r->salt, "%s", salt ? salt : "");
    const char *creator = xd_el_attr(root, "creator");
    r->creator = creator ? xd_strdup(creator) : NULL;
    const xd_el_t *cf = xd_el_child(root, "config", NULL);
    if (cf) {
        muc_cfg_t *g = &r->cfg;
        const char *v;
        if ((v = xd_el_attr(cf, "title")))
            g->title = xd_strdup(v);
        if ((v = xd_el_attr(cf, "desc")))
            g->desc = xd_strdup(v);
        if ((v = xd_el_attr(cf, "password")))
            g->password = xd_strdup(v);
        g->persistent = true;
        g->pub = form_bool(xd_el_attr(cf, "public"), true);
        g->members_only = form_bool(xd_el_attr(cf, "members"), false);
        g->moderated = form_bool(xd_el_attr(cf, "moderated"), false);
        g->password_protected = form_bool(xd_el_attr(cf, "protected"), false);
        g->changesubject = form_bool(xd_el_attr(cf, "subject"), true);
        g->allowinvites = form_bool(xd_el_attr(cf, "invites"), false);
        g->logging = form_bool(xd_el_attr(cf, "logging"), false);
        g->mam = form_bool(xd_el_attr(cf, "mam"), c->conf->default_mam);
        if ((v = xd_el_attr(cf, "pbcast")))
            g->pbcast = roles_parse(v);
        v = xd_el_attr(cf, "whois");
        g->whois = v && strcmp(v, "anyone") == 0 ? WHOIS_ANYONE : WHOIS_MODERATORS;
        int pm = name_index(pm_names, 4, xd_el_attr(cf, "pm"));
        g->allowpm = pm < 0 ? PM_ANYONE : pm;
        /* Fields a room stored before they existed keep the defaults. */
        if ((v = xd_el_attr(cf, "lang"))) {
            xd_free(g->lang);
            g->lang = *v ? xd_strdup(v) : NULL;
        }
        if ((v = xd_el_attr(cf, "pubsub")) && *v)
            g->pubsub = xd_strdup(v);
        if ((v = xd_el_attr(cf, "getmemberlist")))
            g->getmemberlist = roles_parse(v);
        g->voice_requests = form_bool(xd_el_attr(cf, "voicereq"), g->voice_requests);
        g->visitor_status = form_bool(xd_el_attr(cf, "vstatus"), g->visitor_status);
        g->visitor_nickchange = form_bool(xd_el_attr(cf, "vnick"), g->visitor_nickchange);
        g->members_by_default = form_bool(xd_el_attr(cf, "mbd"), g->members_by_default);
        if ((v = xd_el_attr(cf, "voiceint")) && atoi(v) >= 0)
            g->voice_interval = atoi(v);
        if ((v = xd_el_attr(cf, "maxusers")))
            g->maxusers = atoi(v);
        if ((v = xd_el_attr(cf, "history")))
            g->history = atoi(v);
        if (g->maxusers < 1 || g->maxusers > c->conf->max_users)
            g->maxusers = c->conf->max_users;
        if (g->history < 0 || g->history > c->conf->max_history_size)
            g->history = c->conf->max_history_size;
        hist_resize(r, (size_t)g->history);
    }
    const xd_el_t *sj = xd_el_child(root, "subject", NULL);
    if (sj) {
        r->subject = xd_strdup(xd_el_text(sj) ? xd_el_text(sj) : "");
        const char *n = xd_el_attr(sj, "nick");
        r->subject_nick = n ? xd_strdup(n) : NULL;
    }
    for (const xd_el_t *a = xd_el_first_child(root); a; a = xd_el_next(a)) {
        const xd_el_t *hm = xd_el_is(a, "hist", NULL) ? xd_el_first_child(a) : NULL;
        if (hm) {
            /* History kept while the room was out of memory. */
            size_t len = 0;
            char *raw = xd_el_serialize(hm, XD_NS_CLIENT, &len);
            xd_stanza_t *hs = NULL;
            const char *ts = xd_el_attr(a, "ts");
            if (xd_stanza_parse(raw, len, XD_NS_CLIENT, &hs) == 0)
                hist_add_at(r, hs, ts ? (time_t)strtoll(ts, NULL, 10) : time(NULL));
            xd_free(raw);
            continue;
        }
        if (xd_el_is(a, "reg", NULL) && xd_el_attr(a, "jid") && xd_el_attr(a, "nick")) {
            if (aff_of(r, xd_el_attr(a, "jid")) >= AFF_MEMBER)
                reg_set(r, xd_el_attr(a, "jid"), xd_el_attr(a, "nick"));
            continue;
        }
        if (!xd_el_is(a, "aff", NULL) || !xd_el_attr(a, "jid"))
            continue;
        int aff = name_index(aff_names, 5, xd_el_attr(a, "a"));
        if (aff > AFF_NONE)
            aff_set(r, xd_el_attr(a, "jid"), aff);
    }
    xd_el_free(root);
    return r;
}

/* Publishes the room's directory entry and marks the stored state for a
 * write when it is persistent (or was). */
static void
room_publish(muc_call_t *c, muc_room_t *r, bool store)
{
    /* With the history when it is written behind (history_flush_interval). */
    char *stored = r->cfg.persistent
                       ? room_serialize(r, c->conf->history_flush_interval > 0)
                       : NULL;
    muc_dir_update(c->s, r->name, r->cfg.title, r->cfg.pub && !r->locked, r->cfg.persistent,
                   true, r->creator, stored);
    if (store)
        c->store = true;
}

/* Takes the room out of memory (and of the directory unless persistent). */
static void
room_drop(muc_call_t *c, muc_room_t *r, bool destroyed)
{
    int self = xd_owner_self();
    xd_map_del(&c->s->rooms[self], xd_str_c(r->name));
    if (destroyed || !r->cfg.persistent)
        muc_dir_remove(c->s, r->name);
    else
        muc_dir_update(c->s, r->name, r->cfg.title, r->cfg.pub, true, false, r->creator,
                       room_serialize(r, true));
    room_free(r);
}

static uint64_t
muc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct stash_walk {
    muc_state_t *s;
    char **names;
    size_t n, cap;
};

static int
stash_one(void *arg, const char *key, void *val)
{
    struct stash_walk *w = arg;
    const muc_room_t *r = val;
    if (!r->cfg.persistent || r->locked)
        return 0;
    muc_dir_update(w->s, r->name, r->cfg.title, r->cfg.pub, true, false, r->creator,
                   room_serialize(r, true));
    if (w->n + 1 >= w->cap) {
        w->cap = w->cap ? w->cap * 2 : 16;
        w->names = xd_realloc(w->names, w->cap * sizeof *w->names);
    }
    w->names[w->n++] = xd_strdup(key);
    w->names[w->n] = NULL;
    return 0;
}

char **
muc_rooms_stash(muc_state_t *s)
{
    struct stash_walk w = { s, NULL, 0, 0 };
    for (size_t i = 0; i < XD_OWNER_MAX_WORKERS; i++)
        xd_map_foreach(&s->rooms[i], stash_one, &w);
    return w.names;
}

struct idle_walk {
    uint64_t now, timeout;
    char **names;
    size_t n, cap;
};

static int
idle_one(void *arg, const char *key, void *val)
{
    struct idle_walk *w = arg;
    const muc_room_t *r = val;
    if (r->nocc || !r->cfg.persistent || r->locked || !r->empty_since ||
        w->now - r->empty_since < w->timeout)
        return 0;
    if (w->n == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 16;
        w->names = xd_realloc(w->names, w->cap * sizeof *w->names);
    }
    w->names[w->n++] = xd_strdup(key);
    return 0;
}

struct flush_walk {
    uint64_t now, interval;
    char **names;
    size_t n, cap;
};

static int
flush_one(void *arg, const char *key, void *val)
{
    struct flush_walk *w = arg;
    const muc_room_t *r = val;
    if (!r->hist_dirty || !r->cfg.persistent || r->locked || w->now - r->flushed_ms < w->interval)
        return 0;
    if (w->n == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 16;
        w->names = xd_realloc(w->names, w->cap * sizeof *w->names);
    }
    w->names[w->n++] = xd_strdup(key);
    return 0;
}

/* Write-behind of the history (history_flush_interval): the persistent
 * rooms of this worker whose history changed, and was last stored at least
 * the interval ago, are stored with it (one write each), so that a crash
 * loses at most an interval of it. */
static void
rooms_flush(muc_call_t *c, int self)
{
    struct flush_walk w = { muc_now_ms(), c->conf->history_flush_interval, NULL, 0, 0 };
    xd_map_foreach(&c->s->rooms[self], flush_one, &w);
    for (size_t i = 0; i < w.n; i++) {
        muc_room_t *r = xd_map_get(&c->s->rooms[self], xd_str_c(w.names[i]));
        if (r) {
            r->hist_dirty = false;
            r->flushed_ms = w.now;
            room_publish(c, r, false);
            atomic_fetch_add_explicit(&c->s->history_flushes, 1, memory_order_relaxed);
            muc_store(c->ctx, w.names[i], (xd_input_ref_t){ 0 });
        }
        xd_free(w.names[i]);
    }
    xd_free(w.names);
}

/* Hibernation: persistent rooms of this worker nobody has been in for
 * hibernation_timeout leave memory; their stored state (with the history)
 * stays in the directory and goes to the database; room_find brings them
 * back. */
void
muc_rooms_tick(xd_module_ctx_t *ctx, uint64_t now_ms)
{
    (void)now_ms;
    muc_call_t c = { .ctx = ctx, .s = xd_module_state(ctx), .conf = xd_module_opts(ctx) };
    int self = xd_owner_self();
    if (!c.s || self < 0)
        return;
    if (c.conf->history_flush_interval)
        rooms_flush(&c, self);
    if (!c.conf->hibernation_timeout)
        return;
    struct idle_walk w = { muc_now_ms(), c.conf->hibernation_timeout, NULL, 0, 0 };
    xd_map_foreach(&c.s->rooms[self], idle_one, &w);
    char **names = w.names;
    size_t n = w.n;
    for (size_t i = 0; i < n; i++) {
        muc_room_t *r = xd_map_get(&c.s->rooms[self], xd_str_c(names[i]));
        if (r) {
            room_drop(&c, r, false);
            atomic_fetch_add_explicit(&c.s->hibernations, 1, memory_order_relaxed);
            muc_store(ctx, names[i], (xd_input_ref_t){ 0 });
        }
        xd_free(names[i]);
    }
    xd_free(names);
}

/* ---- presence ---------------------------------------------------------------------------------- */

/* Presence of occupant o for an occupant who may see real JIDs (show_jid),
 * with status codes; unavailable: a leave.  Returns the builder, no 'to'. */
typedef struct pres_extra {
    const int *codes;
    size_t ncodes;
    const char *newnick;    /* 303 */
    const char *actor;      /* kick/ban: the moderator's nick */
    const char *reason;
    const xd_el_t *destroy; /* room destroyed: the <destroy/> to copy */
    int role, aff;          /* -1: the occupant's */
} pres_extra_t;

static void
add_status(xd_el_t *x, int code)
{
    char num[8];
    snprintf(num, sizeof num, "%d", code);
    xd_el_set_attr(xd_el_add_child(x, "status", NULL), "code", num);
}

static xd_el_t *
occ_presence(const muc_room_t *r, const muc_occ_t *o, bool unavailable, bool show_jid,
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
    char *from = occ_jid(r, o->nick);
    xd_el_set_attr(b, "from", from);
    xd_free(from);
    xd_el_t *x = xd_el_add_child(b, "x", XD_NS_MUC_USER);
    xd_el_t *item = xd_el_add_child(x, "item", NULL);
    int aff = ex && ex->aff >= 0 ? ex->aff : aff_of(r, o->bare);
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
        add_status(x, ex->codes[i]);
    if (self) {
        if (r->cfg.whois == WHOIS_ANYONE)
            add_status(x, 100);
        add_status(x, 110); /* last (XEP-0045 7.2.2) */
    }
    xd_el_set_attr(xd_el_add_child(b, "occupant-id", MUC_NS_OCCUPANT_ID), "id", o->oid);
    return b;
}

static bool
sees_jid(const muc_room_t *r, const muc_occ_t *viewer)
{
    return r->cfg.whois == WHOIS_ANYONE || viewer->role == ROLE_MODERATOR;
}

/* o's presence to every occupant but o, in at most two fan-outs: one
 * with the real JID for those who may see it, one without.
 * muc#roomconfig_presencebroadcast: an occupant whose role is not
 * broadcast is not announced; one that was and whose role no longer is
 * leaves the others' view (unavailable, role none, as ejabberd does). */
static void
broadcast_others(muc_call_t *c, const muc_room_t *r, muc_occ_t *o, bool unavailable,
                 const pres_extra_t *ex)
{
    bool show = !unavailable && (r->cfg.pbcast & (1 << o->role));
    if (!show && !o->announced)
        return;
    pres_extra_t hide;
    if (!show && !unavailable) {
        hide = ex ? *ex : (pres_extra_t){ .role = -1, .aff = -1 };
        hide.role = ROLE_NONE;
        ex = &hide;
        unavailable = true;
    }
    o->announced = show;
    size_t with = 0, without = 0;
    for (size_t i = 0; i < r->nocc; i++)
        if (r->occ[i] != o)
            *(sees_jid(r, r->occ[i]) ? &with : &without) += 1;
    for (int v = 0; v < 2; v++) {
        if (!(v ? with : without))
            continue;
        xd_stanza_t *st = xd_el_freeze(occ_presence(r, o, unavailable, v, NULL, ex, false));
        fan_out(c, r, st, v ? FAN_SEES_JID : FAN_NO_JID, o, false);
        xd_stanza_unref(st);
    }
}

/* o's presence to every occupant (self codes to o's own sessions). */
static void
broadcast_presence(muc_call_t *c, const muc_room_t *r, muc_occ_t *o, bool unavailable,
                   const pres_extra_t *ex, const pres_extra_t *self_ex)
{
    broadcast_others(c, r, o, unavailable, ex);
    xd_stanza_t *st = xd_el_freeze(occ_presence(r, o, unavailable, true, NULL, self_ex, true));
    send_occ(c, st, o);
    xd_stanza_unref(st);
}

static int
join_shift(void *arg, const char *key, void *val)
{
    (void)key;
    muc_join_t *j = val;
    if (j->next > *(size_t *)arg)
        j->next--;
    return 0;
}

/* Takes o out of the occupants, keeping their order (the cursors of the
 * occupant lists being paced stay right). */
static void
occ_index_remove(muc_room_t *r, muc_occ_t *o)
{
    for (size_t i = 0; i < r->nocc; i++)
        if (r->occ[i] == o) {
            memmove(&r->occ[i], &r->occ[i + 1], (r->nocc - i - 1) * sizeof *r->occ);
            r->nocc--;
            if (r->njoining)
                xd_map_foreach(&r->joining, join_shift, &i);
            break;
        }
    xd_map_del(&r->by_nick, xd_str_c(o->nick));
    for (size_t i = 0; i < o->nfull; i++) {
        xd_map_del(&r->by_full, xd_str_c(o->full[i]));
        join_drop(r, o->full[i]);
    }
}

/* Removes occupant o from the room with the presence of a leave to all
 * (codes for everyone, e.g. 307 kicked), the occupant included. */
static void
occ_remove(muc_call_t *c, muc_room_t *r, muc_occ_t *o, const pres_extra_t *ex)
{
    pres_extra_t self_ex = ex ? *ex : (pres_extra_t){ .role = -1, .aff = -1 };
    int kind = XD_MUC_EV_LEAVE;
    for (size_t i = 0; ex && i < ex->ncodes; i++)
        kind = ex->codes[i] == 307 ? XD_MUC_EV_KICK : ex->codes[i] == 301 ? XD_MUC_EV_BAN : kind;
    const xd_el_t *last = o->pres ? xd_stanza_root(o->pres) : NULL;
    const char *lt = last ? xd_el_attr(last, "type") : NULL;
    const char *status = lt && strcmp(lt, "unavailable") == 0
                             ? xd_el_child_text(last, "status", NULL) : NULL;
    room_event(c, r, kind, o->nick, NULL, ex ? ex->actor : NULL,
               kind == XD_MUC_EV_LEAVE ? status : ex->reason, o->pres);
    /* Everyone sees it, the leaver (with 110) among them. */
    broadcast_presence(c, r, o, true, ex, &self_ex);
    occ_index_remove(r, o);
    occ_free(o);
}

/* ---- entering ---------------------------------------------------------------------------------- */

static void
send_history(muc_call_t *c, const muc_room_t *r, const xd_el_t *muc_x, const char *to)
{
    const xd_el_t *h = muc_x ? xd_el_child(muc_x, "history", NULL) : NULL;
    long maxstanzas = -1, maxchars = -1, seconds = -1;
    time_t since = -1;
    if (h) {
        const char *v;
        if ((v = xd_el_attr(h, "maxstanzas")))
            maxstanzas = strtol(v, NULL, 10);
        if ((v = xd_el_attr(h, "maxchars")))
            maxchars = strtol(v, NULL, 10);
        if ((v = xd_el_attr(h, "seconds")))
            seconds = strtol(v, NULL, 10);
        since = parse_stamp(xd_el_attr(h, "since"));
    }
    time_t now = time(NULL);
    /* From the newest back: how many fit every limit. */
    size_t n = 0, chars = 0;
    while (n < r->hn) {
        const muc_hist_t *e = &r->hist[(r->hstart + r->hn - 1 - n) % r->hcap];
        if (maxstanzas >= 0 && (long)n >= maxstanzas)
            break;
        if (maxchars >= 0 && (long)(chars + e->len) > maxchars)
            break;
        if (seconds >= 0 && now - e->ts > seconds)
            break;
        if (since >= 0 && e->ts < since)
            break;
        chars += e->len;
        n++;
    }
    for (size_t i = r->hn - n; i < r->hn; i++) {
        const muc_hist_t *e = &r->hist[(r->hstart + i) % r->hcap];
        xd_el_t *b = xd_stanza_edit(e->st);
        char stamp[32];
        stamp_of(e->ts, stamp);
        xd_el_t *d = xd_el_add_child(b, "delay", XD_NS_DELAY);
        xd_el_set_attr(d, "from", r->jid);
        xd_el_set_attr(d, "stamp", stamp);
        send_to(c, b, to);
    }
}

static void
send_subject(muc_call_t *c, const muc_room_t *r, const char *to)
{
    xd_el_t *b = xd_el_new("message", NULL);
    xd_el_set_attr(b, "type", "groupchat");
    char *from = r->subject_nick ? occ_jid(r, r->subject_nick) : xd_strdup(r->jid);
    xd_el_set_attr(b, "from", from);
    xd_free(from);
    xd_el_t *sj = xd_el_add_child(b, "subject", NULL);
    if (r->subject && *r->subject)
        xd_el_add_text(sj, r->subject);
    send_to(c, b, to);
}

/* The end of the join sequence: its own presence (110 last), the
 * history, the subject. */
static void
send_join_end(muc_call_t *c, const muc_room_t *r, const muc_occ_t *o, const char *full,
              const xd_el_t *muc_x, const int *codes, size_t ncodes)
{
    pres_extra_t ex = { .codes = codes, .ncodes = ncodes, .role = -1, .aff = -1 };
    send_to(c, occ_presence(r, o, false, true, full, &ex, true), full);
    send_history(c, r, muc_x, full);
    send_subject(c, r, full);
}

/* The next chunk of j's occupant list; then a ping to wait for, or the
 * end of its join sequence (j is then dropped). */
static void
join_continue(muc_call_t *c, muc_room_t *r, muc_join_t *j)
{
    muc_occ_t *o = xd_map_get(&r->by_full, xd_str_c(j->full));
    if (!o) {
        join_drop(r, j->full);
        return;
    }
    size_t sent = 0;
    size_t chunk = (size_t)c->conf->join_chunk;
    while (j->next < r->nocc && sent < chunk) {
        /* As they are now: one that left meanwhile is not listed (the
         * joiner got its leave), one that came is (it got its entering
         * too: the same presence twice). */
        const muc_occ_t *other = r->occ[j->next++];
        if (other == o || !other->announced) /* presencebroadcast: not listed */
            continue;
        send_to(c, occ_presence(r, other, false, sees_jid(r, o), NULL, NULL, false), j->full);
        sent++;
    }
    while (j->next < r->nocc && (r->occ[j->next] == o || !r->occ[j->next]->announced))
        j->next++; /* no ping for a chunk with nobody in it */
    if (j->next < r->nocc) {
        snprintf(j->ping, sizeof j->ping, "muc-list-%llu", (unsigned long long)++r->join_seq);
        xd_el_t *b = xd_el_new("iq", NULL);
        xd_el_set_attr(b, "type", "get");
        xd_el_set_attr(b, "id", j->ping);
        xd_el_set_attr(b, "from", r->jid);
        xd_el_add_child(b, "ping", XD_NS_PING);
        send_to(c, b, j->full);
        atomic_fetch_add_explicit(&c->s->join_chunks, 1, memory_order_relaxed);
        return;
    }
    const xd_el_t *mx = xd_el_child(xd_stanza_root(j->pres), "x", XD_NS_MUC);
    send_join_end(c, r, o, j->full, mx, j->codes, j->ncodes);
    join_drop(r, j->full);
}

/* An answer (result or error: either says the session read what came
 * before) to a ping of an occupant list from `from`. */
static bool
join_answer(muc_call_t *c, muc_room_t *r, const xd_stanza_t *st)
{
    const char *id = xd_el_attr(xd_stanza_root(st), "id");
    if (!r->njoining || !id || strncmp(id, "muc-list-", 9) != 0)
        return false;
    xd_str_t fs = xd_jid_full_str(xd_stanza_from(st));
    char *full = xd_strndup(fs.p, fs.len);
    muc_join_t *j = xd_map_get(&r->joining, xd_str_c(full));
    xd_free(full);
    if (j && strcmp(j->ping, id) == 0)
        join_continue(c, r, j);
    return true;
}

/* The sequence a new session of occupant o gets (XEP-0045 7.2): the other
 * occupants' presence, its own (110 last), the history, the subject.  A
 * list longer than join_chunk is paced (muc_join_t). */
static void
send_join_sequence(muc_call_t *c, muc_room_t *r, const muc_occ_t *o, const char *full,
                   const xd_stanza_t *st, const int *codes, size_t ncodes)
{
    const xd_el_t *muc_x = xd_el_child(xd_stanza_root(st), "x", XD_NS_MUC);
    if (r->nocc - 1 <= (size_t)c->conf->join_chunk) {
        for (size_t i = 0; i < r->nocc; i++) {
            const muc_occ_t *other = r->occ[i];
            if (other == o || !other->announced) /* presencebroadcast: not listed */
                continue;
            send_to(c, occ_presence(r, other, false, sees_jid(r, o), NULL, NULL, false), full);
        }
        send_join_end(c, r, o, full, muc_x, codes, ncodes);
        return;
    }
    join_drop(r, full);
    muc_join_t *j = xd_new(muc_join_t);
    j->full = xd_strdup(full);
    j->pres = xd_stanza_ref(st);
    j->ncodes = ncodes > 1 ? 1 : ncodes;
    if (j->ncodes)
        j->codes[0] = codes[0];
    xd_map_put(&r->joining, xd_str_c(full), j);
    r->njoining++;
    join_continue(c, r, j);
}

static void
presence_error(const xd_stanza_t *st, xd_cond cond, const char *text)
{
    xd_route_error(st, cond, text);
}

/* Adds session `full` (jid) to o, with the worker that has it now (the
 * fan-outs' hint: a session of another server has none). */
static void
occ_add_full(muc_room_t *r, muc_occ_t *o, const char *full, const xd_jid_t *jid)
{
    xd_session_info_t info = { 0 };
    int worker = -1;
    if (jid && xd_session_find(jid, &info) == 0) {
        worker = (int)info.ref.worker;
        xd_session_info_clear(&info);
    }
    o->full = xd_realloc(o->full, (o->nfull + 1) * sizeof *o->full);
    o->worker = xd_realloc(o->worker, (o->nfull + 1) * sizeof *o->worker);
    o->jid = xd_realloc(o->jid, (o->nfull + 1) * sizeof *o->jid);
    o->worker[o->nfull] = worker;
    o->jid[o->nfull] = jid ? xd_jid_ref((xd_jid_t *)jid) : NULL;
    o->full[o->nfull++] = xd_strdup(full);
    xd_map_put(&r->by_full, xd_str_c(full), o);
}

/* st as the room keeps it for an occupant of role `role` (a new
 * reference): a visitor's without its <status/> when the room does not
 * broadcast visitors' status text (allow_visitor_status). */
static xd_stanza_t *
pres_kept(const muc_room_t *r, const xd_stanza_t *st, int role)
{
    if (role != ROLE_VISITOR || r->cfg.visitor_status ||
        !xd_el_child(xd_stanza_root(st), "status", NULL))
        return xd_stanza_ref(st);
    xd_el_t *b = xd_stanza_edit(st);
    xd_el_t *status;
    while ((status = xd_el_child_mut(b, "status", NULL)))
        xd_el_remove_child(b, status);
    return xd_el_freeze(b);
}

static void
room_enter(muc_call_t *c, muc_room_t *r, bool created, const xd_stanza_t *st, const char *full,
           const char *bare, const char *nick)
{
    const xd_el_t *root = xd_stanza_root(st);
    const xd_el_t *mx = xd_el_child(root, "x", XD_NS_MUC);
    int aff = eff_aff(c, r, bare, xd_stanza_from(st));
    muc_occ_t *same = xd_map_get(&r->by_nick, xd_str_c(nick));
    if (r->locked && aff != AFF_OWNER) {
        presence_error(st, XD_COND_ITEM_NOT_FOUND, "the room is locked until configured");
        return;
    }
    if (aff == AFF_OUTCAST) {
        presence_error(st, XD_COND_FORBIDDEN, "you are banned from this room");
        return;
    }
    if (r->cfg.members_only && aff < AFF_MEMBER) {
        presence_error(st, XD_COND_REGISTRATION_REQUIRED, "the room is members-only");
        return;
    }
    if (same && strcmp(same->bare, bare) != 0) {
        presence_error(st, XD_COND_CONFLICT, "that nick is in use");
        return;
    }
    const char *holder = reg_owner_of(r, nick);
    if (holder && strcmp(holder, bare) != 0) {
        presence_error(st, XD_COND_CONFLICT, "that nick is reserved in this room");
        return;
    }
    if (!same && (int)r->nocc >= r->cfg.maxusers && aff < AFF_ADMIN) {
        presence_error(st, XD_COND_SERVICE_UNAVAILABLE, "the room is full");
        return;
    }
    if (r->cfg.password_protected && aff < AFF_OWNER) {
        const char *pw = mx ? xd_el_child_text(mx, "password", NULL) : NULL;
        if (!pw || !r->cfg.password || strcmp(pw, r->cfg.password) != 0) {
            presence_error(st, XD_COND_NOT_AUTHORIZED, "a password is required");
            return;
        }
    }
    if (same) {
        /* Another session of the same account under its nick: it gets the
         * room as it is; the others see nothing new. */
        occ_add_full(r, same, full, xd_stanza_from(st));
        send_join_sequence(c, r, same, full, st, NULL, 0);
        return;
    }
    muc_occ_t *o = xd_new(muc_occ_t);
    o->nick = xd_strdup(nick);
    o->bare = xd_strdup(bare);
    o->role = role_for(r, aff);
    o->pres = pres_kept(r, st, o->role);
    occupant_id(r, bare, o->oid);
    occ_add_full(r, o, full, xd_stanza_from(st));
    if (r->nocc == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 8;
        r->occ = xd_realloc(r->occ, r->cap * sizeof *r->occ);
    }
    r->occ[r->nocc++] = o;
    xd_map_put(&r->by_nick, xd_str_c(o->nick), o);
    room_event(c, r, XD_MUC_EV_JOIN, o->nick, NULL, NULL, NULL, o->pres);
    /* The others learn of it first; its own presence ends its list. */
    broadcast_others(c, r, o, false, NULL);
    int codes[1] = { 201 };
    send_join_sequence(c, r, o, full, st, codes, created ? 1 : 0);
}

static void
nick_change(muc_call_t *c, muc_room_t *r, muc_occ_t *o, const xd_stanza_t *st, const char *nick)
{
    muc_occ_t *other = xd_map_get(&r->by_nick, xd_str_c(nick));
    if (o->role == ROLE_VISITOR && !r->cfg.visitor_nickchange) {
        presence_error(st, XD_COND_NOT_ALLOWED, "visitors may not change their nick here");
        return;
    }
    if (other && other != o) {
        presence_error(st, XD_COND_CONFLICT, "that nick is in use");
        return;
    }
    const char *holder = reg_owner_of(r, nick);
    if (holder && strcmp(holder, o->bare) != 0) {
        presence_error(st, XD_COND_CONFLICT, "that nick is reserved in this room");
        return;
    }
    int codes[1] = { 303 };
    pres_extra_t ex = { .codes = codes, .ncodes = 1, .newnick = nick, .role = o->role, .aff = -1 };
    room_event(c, r, XD_MUC_EV_NICK, o->nick, nick, NULL, NULL, st);
    broadcast_presence(c, r, o, true, &ex, &ex);
    xd_map_del(&r->by_nick, xd_str_c(o->nick));
    xd_free(o->nick);
    o->nick = xd_strdup(nick);
    xd_map_put(&r->by_nick, xd_str_c(o->nick), o);
    xd_stanza_unref(o->pres);
    o->pres = pres_kept(r, st, o->role);
    broadcast_presence(c, r, o, false, NULL, NULL);
}

static void
room_leave(muc_call_t *c, muc_room_t *r, muc_occ_t *o, const char *full, const xd_stanza_t *st,
           bool failed)
{
    int code = 333; /* removed because its session failed (an error came back) */
    pres_extra_t ex = { .codes = &code, .ncodes = failed ? 1 : 0, .role = -1, .aff = -1 };
    if (o->nfull > 1) {
        /* One session of several leaves: only it hears of it. */
        size_t i = 0;
        while (i < o->nfull && strcmp(o->full[i], full) != 0)
            i++;
        if (i == o->nfull)
            return;
        xd_map_del(&r->by_full, xd_str_c(full));
        join_drop(r, full);
        xd_el_t *b = occ_presence(r, o, true, true, full, &ex, true);
        xd_free(o->full[i]);
        if (o->jid[i])
            xd_jid_unref(o->jid[i]);
        o->jid[i] = o->jid[o->nfull - 1];
        o->worker[i] = o->worker[o->nfull - 1];
        o->full[i] = o->full[--o->nfull];
        send_to(c, b, full);
        return;
    }
    if (!failed) {
        xd_stanza_unref(o->pres);
        o->pres = pres_kept(r, st, o->role); /* its status goes with the leave */
    }
    occ_remove(c, r, o, &ex);
}

static void
room_presence(muc_call_t *c, muc_room_t *r, bool created, const xd_stanza_t *st,
              const char *nick)
{
    const xd_el_t *root = xd_stanza_root(st);
    const char *type = xd_el_attr(root, "type");
    const xd_jid_t *from = xd_stanza_from(st);
    xd_str_t fs = xd_jid_full_str(from), bs = xd_jid_bare_str(from);
    char *full = xd_strndup(fs.p, fs.len), *bare = xd_strndup(bs.p, bs.len);
    muc_occ_t *o = xd_map_get(&r->by_full, xd_str_c(full));
    if (type && strcmp(type, "unavailable") == 0) {
        if (o)
            room_leave(c, r, o, full, st, false);
    } else if (type && strcmp(type, "error") == 0) {
        /* The room's presence bounced: that session is gone. */
        if (o)
            room_leave(c, r, o, full, st, true);
    } else if (type) {
        /* subscription presence, probes: nothing for a room */
    } else if (!nick || !*nick) {
        presence_error(st, XD_COND_JID_MALFORMED, "a nick is required");
    } else if ((int)strlen(nick) > c->conf->max_nick) {
        presence_error(st, XD_COND_NOT_ACCEPTABLE, "the nick is too long");
    } else if (!o) {
        room_enter(c, r, created, st, full, bare, nick);
    } else if (strcmp(o->nick, nick) != 0) {
        nick_change(c, r, o, st, nick);
    } else {
        /* A presence update: everyone sees the new show/status. */
        xd_stanza_unref(o->pres);
        o->pres = pres_kept(r, st, o->role);
        broadcast_presence(c, r, o, false, NULL, NULL);
    }
    xd_free(full);
    xd_free(bare);
}

/* ---- messages ---------------------------------------------------------------------------------- */

static void
hist_add(muc_room_t *r, xd_stanza_t *st)
{
    hist_add_at(r, st, time(NULL));
    r->hist_dirty = r->cfg.persistent;
}

/* A copy of the message from room/nick, without 'to', as everyone gets
 * it: 'id' kept, occupant-id set; sid: the room's archive id, stamped as
 * <stanza-id by='room'/> (a claim of the room's the sender put there is
 * taken off in any case). */
static xd_stanza_t *
msg_from_occ(const muc_room_t *r, const muc_occ_t *o, const xd_stanza_t *st, const char *sid)
{
    xd_el_t *b = xd_stanza_edit(st);
    char *from = occ_jid(r, o->nick);
    xd_el_set_attr(b, "from", from);
    xd_free(from);
    xd_el_remove_attr(b, "to");
    xd_el_t *old;
    while ((old = xd_el_child_mut(b, "occupant-id", MUC_NS_OCCUPANT_ID)))
        xd_el_remove_child(b, old); /* never the sender's own claim */
    xd_el_set_attr(xd_el_add_child(b, "occupant-id", MUC_NS_OCCUPANT_ID), "id", o->oid);
    for (xd_el_t *ch = xd_el_first_child_mut(b), *next; ch; ch = next) {
        next = xd_el_next_mut(ch);
        const char *by = xd_el_attr(ch, "by");
        if (xd_el_is(ch, "stanza-id", XD_NS_SID) && by && strcmp(by, r->jid) == 0)
            xd_el_remove_child(b, ch);
    }
    if (sid) {
        xd_el_t *e = xd_el_add_child(b, "stanza-id", XD_NS_SID);
        xd_el_set_attr(e, "id", sid);
        xd_el_set_attr(e, "by", r->jid);
    }
    return xd_el_freeze(b);
}

static void
room_invite(muc_call_t *c, muc_room_t *r, const muc_occ_t *o, const xd_stanza_t *st,
            const xd_el_t *ux)
{
    const char *from = NULL;
    xd_str_t fs = xd_jid_full_str(xd_stanza_from(st));
    char *sender = xd_strndup(fs.p, fs.len);
    from = sender;
    for (const xd_el_t *e = xd_el_first_child(ux); e; e = xd_el_next(e)) {
        bool invite = xd_el_is(e, "invite", XD_NS_MUC_USER);
        bool decline = xd_el_is(e, "decline", XD_NS_MUC_USER);
        if (!invite && !decline)
            continue;
        const char *to = xd_el_attr(e, "to");
        xd_jid_t *tj = NULL;
        if (!to || xd_jid_parse(xd_str_c(to), &tj) != 0) {
            xd_route_error(st, XD_COND_JID_MALFORMED, NULL);
            break;
        }
        xd_jid_unref(tj);
        if (invite) {
            int aff = o ? eff_aff(c, r, o->bare, xd_stanza_from(st)) : AFF_NONE;
            if (!o) {
                xd_route_error(st, XD_COND_NOT_ACCEPTABLE, "only occupants invite");
                break;
            }
            if (!r->cfg.allowinvites && o->role != ROLE_MODERATOR && aff < AFF_ADMIN) {
                xd_route_error(st, XD_COND_FORBIDDEN, "invitations are not allowed");
                break;
            }
            if (r->cfg.members_only && aff >= AFF_ADMIN) {
                /* An admin's invitation to a members-only room makes a member. */
                xd_jid_t *ij = NULL;
                if (xd_jid_parse(xd_str_c(to), &ij) == 0) {
                    xd_str_t ib = xd_jid_bare_str(ij);
                    char *ibare = xd_strndup(ib.p, ib.len);
                    if (aff_of(r, ibare) == AFF_NONE &&
                        xd_map_count(&r->affs) < (size_t)c->conf->max_affiliations) {
                        aff_set(r, ibare, AFF_MEMBER);
                        room_publish(c, r, r->cfg.persistent);
                    }
                    xd_free(ibare);
                    xd_jid_unref(ij);
                }
            }
        }
        xd_el_t *b = xd_el_new("message", NULL);
        xd_el_set_attr(b, "from", r->jid);
        const char *mid = xd_el_attr(xd_stanza_root(st), "id");
        if (mid)
            xd_el_set_attr(b, "id", mid);
        xd_el_t *x = xd_el_add_child(b, "x", XD_NS_MUC_USER);
        xd_el_t *i = xd_el_add_child(x, invite ? "invite" : "decline", NULL);
        xd_el_set_attr(i, "from", from);
        const char *why = xd_el_child_text(e, "reason", XD_NS_MUC_USER);
        if (why)
            xd_el_add_text(xd_el_add_child(i, "reason", NULL), why);
        if (invite && r->cfg.password_protected && r->cfg.password)
            xd_el_add_text(xd_el_add_child(x, "password", NULL), r->cfg.password);
        if (invite) {
            /* XEP-0249 for clients that only know direct invitations. */
            xd_el_t *d = xd_el_add_child(b, "x", XD_NS_X_CONFERENCE);
            xd_el_set_attr(d, "jid", r->jid);
            if (why)
                xd_el_set_attr(d, "reason", why);
        }
        send_to(c, b, to);
    }
    xd_free(sender);
}

#define MUC_NS_REQUEST "http://jabber.org/protocol/muc#request"
#define MUC_NS_RETRACT "urn:xmpp:message-retract:1"
static void room_retract(muc_call_t *c, muc_room_t *r, const muc_occ_t *o,
                         const xd_stanza_t *st, const xd_el_t *rt);

/* XEP-0045 8.6/7.13: a visitor asks for voice (the request form goes to
 * every moderator), or a moderator answers one (muc#request_allow grants
 * voice to muc#roomnick). */
static void
room_voice_request(muc_call_t *c, muc_room_t *r, muc_occ_t *o, const xd_stanza_t *st,
                   const xd_el_t *form)
{
    if (!o) {
        xd_route_error(st, XD_COND_NOT_ACCEPTABLE, "only occupants ask for voice");
        return;
    }
    const char *allow = form_value(form, "muc#request_allow");
    if (allow) {
        /* A moderator's answer. */
        if (o->role != ROLE_MODERATOR) {
            xd_route_error(st, XD_COND_FORBIDDEN, "moderators answer voice requests");
            return;
        }
        const char *who = form_value(form, "muc#roomnick");
        muc_occ_t *v = who ? xd_map_get(&r->by_nick, xd_str_c(who)) : NULL;
        if (form_bool(allow, false) && v && v->role == ROLE_VISITOR) {
            v->role = ROLE_PARTICIPANT;
            occ_changed(c, r, v, o->nick, NULL);
        }
        return;
    }
    if (o->role != ROLE_VISITOR) {
        xd_route_error(st, XD_COND_NOT_ACCEPTABLE, "you have voice already");
        return;
    }
    if (!r->cfg.voice_requests) {
        xd_route_error(st, XD_COND_FORBIDDEN, "voice requests are disabled in this room");
        return;
    }
    uint64_t now = muc_now_ms();
    if (o->voice_ms && r->cfg.voice_interval > 0 &&
        now - o->voice_ms < (uint64_t)r->cfg.voice_interval * 1000) {
        xd_route_error(st, XD_COND_RESOURCE_CONSTRAINT,
                       "wait a while before asking for voice again");
        return;
    }
    o->voice_ms = now;
    xd_el_t *b = xd_el_new("message", NULL);
    xd_el_set_attr(b, "from", r->jid);
    xd_el_t *x = xd_el_add_child(b, "x", XD_NS_DATA);
    xd_el_set_attr(x, "type", "form");
    xd_el_add_text(xd_el_add_child(x, "title", NULL), "Voice request");
    xd_el_add_text(xd_el_add_child(x, "instructions", NULL),
                   "To approve this request for voice, select the \"Grant voice to this "
                   "person?\" checkbox and click OK. To skip this request, click the cancel "
                   "button.");
    add_field(x, "FORM_TYPE", "hidden", NULL, MUC_NS_REQUEST);
    add_field(x, "muc#role", "list-single", "Requested role", "participant");
    add_field(x, "muc#jid", "jid-single", "User ID", o->full[0]);
    add_field(x, "muc#roomnick", "text-single", "Room Nickname", o->nick);
    add_field(x, "muc#request_allow", "boolean", "Grant voice to this person?", "false");
    xd_stanza_t *m = xd_el_freeze(b);
    fan_out(c, r, m, FAN_MODERATORS, NULL, false);
    xd_stanza_unref(m);
}

static void
room_message(muc_call_t *c, muc_room_t *r, const xd_stanza_t *st, const char *nick)
{
    const xd_el_t *root = xd_stanza_root(st);
    const char *type = xd_el_attr(root, "type");
    xd_str_t fs = xd_jid_full_str(xd_stanza_from(st));
    char *full = xd_strndup(fs.p, fs.len);
    muc_occ_t *o = xd_map_get(&r->by_full, xd_str_c(full));
    if (type && strcmp(type, "error") == 0) {
        /* A message of the room bounced from an occupant's session (its
         * server lost it, or it is gone without an unavailable): out, so
         * that no ghost stays (status 333). */
        if (o)
            room_leave(c, r, o, full, st, true);
        xd_free(full);
        return;
    }
    xd_free(full);
    const xd_el_t *ux = xd_el_child(root, "x", XD_NS_MUC_USER);
    bool groupchat = type && strcmp(type, "groupchat") == 0;
    if (!nick && !groupchat && ux &&
        (xd_el_child(ux, "invite", NULL) || xd_el_child(ux, "decline", NULL))) {
        room_invite(c, r, o, st, ux);
        return;
    }
    const xd_el_t *form = xd_el_child(root, "x", XD_NS_DATA);
    const char *ft = form ? form_value(form, "FORM_TYPE") : NULL;
    if (!nick && !groupchat && ft && strcmp(ft, MUC_NS_REQUEST) == 0) {
        room_voice_request(c, r, o, st, form);
        return;
    }
    if (!o) {
        xd_route_error(st, XD_COND_NOT_ACCEPTABLE, "only occupants may send messages");
        return;
    }
    if (!flood_ok(c, o)) {
        xd_route_error(st, XD_COND_RESOURCE_CONSTRAINT,
                       "too many messages: the room takes fewer per second");
        return;
    }
    if (nick) {
        /* A private message to room/nick. */
        if (groupchat) {
            xd_route_error(st, XD_COND_BAD_REQUEST, "groupchat messages go to the room");
            return;
        }
        muc_occ_t *to = xd_map_get(&r->by_nick, xd_str_c(nick));
        if (!to) {
            xd_route_error(st, XD_COND_ITEM_NOT_FOUND, "no such occupant");
            return;
        }
        bool ok = r->cfg.allowpm == PM_ANYONE ||
                  (r->cfg.allowpm == PM_PARTICIPANTS && o->role >= ROLE_PARTICIPANT) ||
                  (r->cfg.allowpm == PM_MODERATORS && o->role == ROLE_MODERATOR);
        if (!ok) {
            xd_route_error(st, XD_COND_FORBIDDEN, "private messages are not allowed");
            return;
        }
        xd_stanza_t *m = msg_from_occ(r, o, st, NULL);
        xd_el_t *b = xd_stanza_edit(m);
        xd_stanza_unref(m);
        if (!xd_el_child(root, "x", XD_NS_MUC_USER))
            xd_el_add_child(b, "x", XD_NS_MUC_USER);
        m = xd_el_freeze(b);
        send_occ(c, m, to);
        xd_stanza_unref(m);
        return;
    }
    if (!groupchat) {
        xd_route_error(st, XD_COND_BAD_REQUEST, "messages to the room are of type groupchat");
        return;
    }
    if (o->role < ROLE_PARTICIPANT) {
        xd_route_error(st, XD_COND_FORBIDDEN, "visitors have no voice here");
        return;
    }
    const xd_el_t *retract = xd_el_child(root, "retract", MUC_NS_RETRACT);
    if (retract && room_archived(c, r)) {
        room_retract(c, r, o, st, retract);
        return;
    }
    const xd_el_t *subject = xd_el_child(root, "subject", NULL);
    bool has_body = xd_el_child(root, "body", NULL) != NULL;
    if (subject && !has_body) {
        if (o->role != ROLE_MODERATOR && !r->cfg.changesubject) {
            xd_route_error(st, XD_COND_FORBIDDEN, "only moderators change the subject");
            return;
        }
        xd_free(r->subject);
        xd_free(r->subject_nick);
        r->subject = xd_strdup(xd_el_text(subject) ? xd_el_text(subject) : "");
        r->subject_nick = xd_strdup(o->nick);
        room_event(c, r, XD_MUC_EV_SUBJECT, o->nick, NULL, NULL, r->subject, st);
        if (r->cfg.persistent)
            room_publish(c, r, true);
    }
    /* Archived (a message worth keeping, XEP-0334 hints honoured) under
     * the id stamped on every copy; refused when the archive cannot take
     * it. */
    xd_module_ctx_t *mam = has_body && !xd_el_child(root, "no-store", XD_NS_HINTS) &&
                                   !xd_el_child(root, "no-permanent-store", XD_NS_HINTS)
                               ? room_mam(c, r)
                               : NULL;
    char sid[21];
    bool archive = mam && mod_sortable_id(sid) == 0;
    xd_stanza_t *m = msg_from_occ(r, o, st, archive ? sid : NULL);
    if (archive) {
        xd_jid_t *rj = room_jid(r);
        bool taken = false;
        int rc = rj ? mam_room_store(mam, m, rj, sid,
                                     c->held && !c->in_taken && !c->store
                                         ? c->in
                                         : (xd_input_ref_t){ 0 },
                                     &taken)
                    : XD_EINVAL;
        c->in_taken |= taken;
        xd_jid_unref(rj);
        if (rc == XD_EFULL) {
            xd_module_release(mam);
            xd_stanza_unref(m);
            xd_route_error(st, XD_COND_RESOURCE_CONSTRAINT,
                           "the room cannot archive more messages now");
            return;
        }
    }
    xd_module_release(mam);
    if (has_body)
        room_event(c, r, XD_MUC_EV_MESSAGE, o->nick, NULL, NULL,
                   xd_el_child_text(root, "body", NULL), m);
    fan_out(c, r, m, FAN_ALL, NULL, true);
    if (has_body) /* with a body, a <subject/> is no subject change (XEP-0045 8.1) */
        hist_add(r, m);
    else
        xd_stanza_unref(m);
}

/* ---- IQs --------------------------------------------------------------------------------------- */

static void
add_field(xd_el_t *x, const char *var, const char *type, const char *label, const char *value)
{
    xd_el_t *f = xd_el_add_child(x, "field", NULL);
    xd_el_set_attr(f, "var", var);
    if (type)
        xd_el_set_attr(f, "type", type);
    if (label)
        xd_el_set_attr(f, "label", label);
    xd_el_add_text(xd_el_add_child(f, "value", NULL), value ? value : "");
}

static void
add_options(xd_el_t *f, const char *const *vals, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        xd_el_t *o = xd_el_add_child(f, "option", NULL);
        xd_el_set_attr(o, "label", vals[i]);
        xd_el_add_text(xd_el_add_child(o, "value", NULL), vals[i]);
    }
}

static void
room_disco_info(muc_call_t *c, muc_room_t *r, const xd_stanza_t *st)
{
    xd_el_t *b = xd_iq_result_builder(st);
    xd_el_t *q = xd_el_add_child(b, "query", XD_NS_DISCO_INFO);
    xd_el_t *id = xd_el_add_child(q, "identity", NULL);
    xd_el_set_attr(id, "category", "conference");
    xd_el_set_attr(id, "type", "text");
    xd_el_set_attr(id, "name", r->cfg.title ? r->cfg.title : r->name);
    const muc_cfg_t *g = &r->cfg;
    const char *feats[] = {
        XD_NS_MUC, XD_NS_DISCO_INFO, XD_NS_DISCO_ITEMS, MUC_NS_OCCUPANT_ID, XD_NS_REGISTER,
        "http://jabber.org/protocol/muc#self-ping-optimization",
        g->pub ? "muc_public" : "muc_hidden",
        g->persistent ? "muc_persistent" : "muc_temporary",
        g->members_only ? "muc_membersonly" : "muc_open",
        g->moderated ? "muc_moderated" : "muc_unmoderated",
        g->password_protected ? "muc_passwordprotected" : "muc_unsecured",
        g->whois == WHOIS_ANYONE ? "muc_nonanonymous" : "muc_semianonymous",
    };
    for (size_t i = 0; i < sizeof feats / sizeof *feats; i++)
        xd_el_set_attr(xd_el_add_child(q, "feature", NULL), "var", feats[i]);
    if (room_archived(c, r)) {
        /* Its archive (XEP-0313), the stanza-ids it stamps (XEP-0359),
         * moderation (XEP-0425). */
        static const char *const mam_feats[] = { XD_NS_MAM, XD_NS_MAM "#extended", XD_NS_SID,
                                                 MAM_NS_MODERATE, MAM_NS_MODERATE0 };
        for (size_t i = 0; i < sizeof mam_feats / sizeof *mam_feats; i++)
            xd_el_set_attr(xd_el_add_child(q, "feature", NULL), "var", mam_feats[i]);
    }
    xd_el_t *x = xd_el_add_child(q, "x", XD_NS_DATA);
    xd_el_set_attr(x, "type", "result");
    add_field(x, "FORM_TYPE", "hidden", NULL, MUC_NS_ROOMINFO);
    add_field(x, "muc#roominfo_description", NULL, "Description", g->desc);
    add_field(x, "muc#roominfo_lang", NULL, "Language of discussion", g->lang);
    if (g->pubsub)
        add_field(x, "muc#roomconfig_pubsub", NULL, "Associated pubsub node", g->pubsub);
    char num[24];
    snprintf(num, sizeof num, "%zu", r->nocc);
    add_field(x, "muc#roominfo_occupants", NULL, "Number of occupants", num);
    add_field(x, "muc#roominfo_subject", NULL, "Subject", r->subject);
    add_field(x, "muc#roominfo_subjectmod", "boolean", NULL, g->changesubject ? "1" : "0");
    add_field(x, "muc#roomconfig_roomname", NULL, "Name", g->title);
    snprintf(num, sizeof num, "%d", g->maxusers);
    add_field(x, "muc#maxhistoryfetch", NULL, NULL, "");
    add_field(x, "muc#roomconfig_maxusers", NULL, NULL, num);
    xd_route_take(xd_el_freeze(b));
}

struct jids_walk {
    xd_el_t *f;
    int want;
};

static int
jids_one(void *arg, const char *key, void *val)
{
    struct jids_walk *w = arg;
    if ((int)(intptr_t)val == w->want)
        xd_el_add_text(xd_el_add_child(w->f, "value", NULL), key);
    return 0;
}

/* The form's fields beyond XEP-0045's first set: the member list's roles,
 * ejabberd's voice request and visitor options, the full owner and admin
 * lists (10.1.3). */
static void
config_form_more(const muc_room_t *r, xd_el_t *x)
{
    const muc_cfg_t *g = &r->cfg;
    add_roles_field(x, "muc#roomconfig_getmemberlist", "Roles that may get the member list",
                    g->getmemberlist);
    add_field(x, "allow_voice_requests", "boolean", "Visitors may ask for voice",
              g->voice_requests ? "1" : "0");
    char num[24];
    snprintf(num, sizeof num, "%d", g->voice_interval);
    add_field(x, "voice_request_min_interval", "text-single",
              "Seconds between one visitor's voice requests", num);
    add_field(x, "allow_visitor_status", "boolean", "Visitors' status text is shown",
              g->visitor_status ? "1" : "0");
    add_field(x, "allow_visitor_nickchange", "boolean", "Visitors may change their nick",
              g->visitor_nickchange ? "1" : "0");
    add_field(x, "members_by_default", "boolean",
              "Moderated: occupants without affiliation enter with voice",
              g->members_by_default ? "1" : "0");
    static const char *const lists[2][2] = { { "muc#roomconfig_roomadmins", "Room admins" },
                                             { "muc#roomconfig_roomowners", "Room owners" } };
    for (int i = 0; i < 2; i++) {
        struct jids_walk w = { xd_el_add_child(x, "field", NULL), i ? AFF_OWNER : AFF_ADMIN };
        xd_el_set_attr(w.f, "var", lists[i][0]);
        xd_el_set_attr(w.f, "type", "jid-multi");
        xd_el_set_attr(w.f, "label", lists[i][1]);
        xd_map_foreach(&r->affs, jids_one, &w);
    }
}

static void
room_config_form(muc_call_t *c, muc_room_t *r, const xd_stanza_t *st)
{
    const muc_cfg_t *g = &r->cfg;
    xd_el_t *b = xd_iq_result_builder(st);
    xd_el_t *q = xd_el_add_child(b, "query", XD_NS_MUC_OWNER);
    xd_el_t *x = xd_el_add_child(q, "x", XD_NS_DATA);
    xd_el_set_attr(x, "type", "form");
    xd_el_add_text(xd_el_add_child(x, "title", NULL), "Room configuration");
    add_field(x, "FORM_TYPE", "hidden", NULL, MUC_NS_ROOMCONFIG);
    add_field(x, "muc#roomconfig_roomname", "text-single", "Room name", g->title);
    add_field(x, "muc#roomconfig_roomdesc", "text-single", "Description", g->desc);
    add_field(x, "muc#roomconfig_lang", "text-single", "Language of discussion (a tag: en)",
              g->lang);
    add_field(x, "muc#roomconfig_pubsub", "text-single", "Associated pubsub node (XMPP URI)",
              g->pubsub);
    add_field(x, "muc#roomconfig_persistentroom", "boolean", "Persistent",
              g->persistent ? "1" : "0");
    add_field(x, "muc#roomconfig_publicroom", "boolean", "Listed in the directory",
              g->pub ? "1" : "0");
    add_field(x, "muc#roomconfig_membersonly", "boolean", "Members only",
              g->members_only ? "1" : "0");
    add_field(x, "muc#roomconfig_moderatedroom", "boolean", "Moderated",
              g->moderated ? "1" : "0");
    add_field(x, "muc#roomconfig_passwordprotectedroom", "boolean", "Password protected",
              g->password_protected ? "1" : "0");
    add_field(x, "muc#roomconfig_roomsecret", "text-private", "Password", g->password);
    add_field(x, "muc#roomconfig_whois", "list-single", "Who may see real JIDs",
              g->whois == WHOIS_ANYONE ? "anyone" : "moderators");
    static const char *const whois[] = { "moderators", "anyone" };
    /* The options of the list fields. */
    for (xd_el_t *f = xd_el_first_child_mut(x); f; f = xd_el_next_mut(f)) {
        const char *v = xd_el_attr(f, "var");
        if (v && strcmp(v, "muc#roomconfig_whois") == 0)
            add_options(f, whois, 2);
    }
    char num[24];
    snprintf(num, sizeof num, "%d", g->maxusers);
    add_field(x, "muc#roomconfig_maxusers", "text-single", "Maximum occupants", num);
    add_field(x, "muc#roomconfig_allowpm", "list-single", "Who may send private messages",
              pm_names[g->allowpm]);
    for (xd_el_t *f = xd_el_first_child_mut(x); f; f = xd_el_next_mut(f)) {
        const char *v = xd_el_attr(f, "var");
        if (v && strcmp(v, "muc#roomconfig_allowpm") == 0)
            add_options(f, pm_names, 4);
    }
    add_field(x, "muc#roomconfig_changesubject", "boolean", "Occupants may change the subject",
              g->changesubject ? "1" : "0");
    snprintf(num, sizeof num, "%d", g->history);
    add_field(x, "muc#roomconfig_historylength", "text-single", "Messages of history", num);
    add_field(x, "muc#roomconfig_allowinvites", "boolean", "Occupants may invite",
              g->allowinvites ? "1" : "0");
    config_form_more(r, x);
    /* Offered where something logs rooms (mod_muc_log on this host). */
    xd_module_ctx_t *logger = xd_module_instance("mod_muc_log", xd_module_host(c->ctx));
    if (logger && !muc_log_may_switch(xd_module_host(c->ctx), xd_stanza_from(st))) {
        xd_module_release(logger); /* mod_muc_log's access_log: not for them */
        logger = NULL;
    }
    if (logger) {
        add_field(x, "muc#roomconfig_enablelogging", "boolean", "Public logs of the room",
                  g->logging ? "1" : "0");
        xd_module_release(logger);
    }
    add_field(x, "muc#roomconfig_mam", "boolean", "Archive messages (XEP-0313)",
              g->mam ? "1" : "0");
    add_roles_field(x, "muc#roomconfig_presencebroadcast",
                    "Roles for which presence is broadcast", g->pbcast);
    xd_route_take(xd_el_freeze(b));
}

/* A list-multi of roles (muc#roomconfig_presencebroadcast) as a mask of
 * 1 << ROLE_*: false for a value that is not a role; *mask unchanged when
 * the form has no such field (an empty field: no role). */
static bool
form_roles(const xd_el_t *x, const char *var, int *mask)
{
    for (const xd_el_t *f = xd_el_first_child(x); f; f = xd_el_next(f)) {
        const char *v = xd_el_attr(f, "var");
        if (!xd_el_is(f, "field", XD_NS_DATA) || !v || strcmp(v, var) != 0)
            continue;
        int m = 0;
        for (const xd_el_t *val = xd_el_first_child(f); val; val = xd_el_next(val)) {
            if (!xd_el_is(val, "value", XD_NS_DATA))
                continue;
            const char *t = xd_el_text(val);
            if (!t || !*t)
                continue;
            int role = name_index(role_names, 4, t);
            if (role <= ROLE_NONE)
                return false;
            m |= 1 << role;
        }
        *mask = m;
        return true;
    }
    return true;
}

static bool
parse_int_field(const char *v, int lo, int hi, int *out)
{
    if (!v)
        return true;
    char *end = NULL;
    long n = strtol(v, &end, 10);
    if (!*v || *end || n < lo || n > hi)
        return false;
    *out = (int)n;
    return true;
}

/* The field `var` of form x, or NULL. */
static const xd_el_t *
form_field(const xd_el_t *x, const char *var)
{
    for (const xd_el_t *f = xd_el_first_child(x); f; f = xd_el_next(f)) {
        const char *v = xd_el_attr(f, "var");
        if (xd_el_is(f, "field", XD_NS_DATA) && v && strcmp(v, var) == 0)
            return f;
    }
    return NULL;
}

/* The value of the first of the field's names that the form has (ejabberd
 * renamed some: both are taken), or NULL. */
static const char *
form_value2(const xd_el_t *x, const char *var, const char *old)
{
    const char *v = form_value(x, var);
    return v ? v : form_value(x, old);
}

bool
muc_lang_ok(const char *v)
{
    size_t n = strlen(v);
    if (n > 35 || v[0] == '-' || v[n - 1] == '-')
        return false;
    for (const char *p = v; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '-'))
            return false;
    return true;
}

#define MUC_PUBSUB_MAX 1024 /* bytes of muc#roomconfig_pubsub */

/* The full owner and admin lists of a form (10.1.3): [0] admins, [1]
 * owners, as bare JIDs; given: the field was sent. */
typedef struct aff_lists {
    char **jid[2];
    size_t n[2];
    bool given[2];
} aff_lists_t;

static void
aff_lists_free(aff_lists_t *l)
{
    for (int i = 0; i < 2; i++) {
        for (size_t k = 0; k < l->n[i]; k++)
            xd_free(l->jid[i][k]);
        xd_free(l->jid[i]);
    }
}

static bool
aff_lists_has(const aff_lists_t *l, int i, const char *bare)
{
    for (size_t k = 0; k < l->n[i]; k++)
        if (strcmp(l->jid[i][k], bare) == 0)
            return true;
    return false;
}

/* What the lists make of bare's affiliation `cur`. */
static int
aff_lists_target(const aff_lists_t *l, const char *bare, int cur)
{
    if (l->given[1] && aff_lists_has(l, 1, bare))
        return AFF_OWNER;
    if (l->given[0] && aff_lists_has(l, 0, bare))
        return AFF_ADMIN;
    if ((cur == AFF_OWNER && l->given[1]) || (cur == AFF_ADMIN && l->given[0]))
        return AFF_NONE;
    return cur;
}

struct keys_walk {
    char **keys;
    size_t n;
};

static int
keys_one(void *arg, const char *key, void *val)
{
    (void)val;
    struct keys_walk *w = arg;
    w->keys[w->n++] = xd_strdup(key);
    return 0;
}

/* Reads muc#roomconfig_roomowners/_roomadmins into l and checks them
 * against the room: NULL, or why they are refused. */
static const char *
aff_lists_parse(muc_call_t *c, const muc_room_t *r, const xd_el_t *x, aff_lists_t *l)
{
    static const char *const vars[2] = { "muc#roomconfig_roomadmins",
                                         "muc#roomconfig_roomowners" };
    size_t max = (size_t)c->conf->max_affiliations;
    for (int i = 0; i < 2; i++) {
        const xd_el_t *f = form_field(x, vars[i]);
        if (!f)
            continue;
        l->given[i] = true;
        for (const xd_el_t *v = xd_el_first_child(f); v; v = xd_el_next(v)) {
            if (!xd_el_is(v, "value", XD_NS_DATA))
                continue;
            const char *t = xd_el_text(v);
            xd_jid_t *j = NULL;
            if (!t || !*t)
                continue;
            if (l->n[i] >= max)
                return "the room has too many affiliations";
            if (xd_jid_parse(xd_str_c(t), &j) != 0)
                return "roomowners and roomadmins take JIDs";
            xd_str_t bs = xd_jid_bare_str(j);
            char *bare = xd_strndup(bs.p, bs.len);
            xd_jid_unref(j);
            if (aff_lists_has(l, i, bare)) {
                xd_free(bare);
                continue;
            }
            l->jid[i] = xd_realloc(l->jid[i], (l->n[i] + 1) * sizeof *l->jid[i]);
            l->jid[i][l->n[i]++] = bare;
        }
    }
    if (l->given[1] && l->n[1] == 0)
        return "the room needs an owner";
    for (size_t k = 0; k < l->n[0]; k++)
        if (aff_lists_has(l, 1, l->jid[0][k]))
            return "a JID is in both roomowners and roomadmins";
    /* The affiliations there would be. */
    size_t count = 0;
    struct keys_walk w = { xd_calloc(xd_map_count(&r->affs) + 1, sizeof(char *)), 0 };
    xd_map_foreach(&r->affs, keys_one, &w);
    for (size_t k = 0; k < w.n; k++) {
        count += aff_lists_target(l, w.keys[k], aff_of(r, w.keys[k])) != AFF_NONE;
        xd_free(w.keys[k]);
    }
    xd_free(w.keys);
    for (int i = 0; i < 2; i++)
        for (size_t k = 0; k < l->n[i]; k++)
            count += aff_of(r, l->jid[i][k]) == AFF_NONE;
    return count > max ? "the room has too many affiliations" : NULL;
}

/* Gives every JID the affiliation the lists make of it; its occupants
 * follow (aff_follow). */
static void
aff_lists_apply(muc_call_t *c, muc_room_t *r, const aff_lists_t *l)
{
    if (!l->given[0] && !l->given[1])
        return;
    struct keys_walk w = { xd_calloc(xd_map_count(&r->affs) + l->n[0] + l->n[1] + 1,
                                     sizeof(char *)), 0 };
    xd_map_foreach(&r->affs, keys_one, &w);
    for (int i = 0; i < 2; i++)
        for (size_t k = 0; k < l->n[i]; k++)
            w.keys[w.n++] = xd_strdup(l->jid[i][k]);
    for (size_t k = 0; k < w.n; k++) {
        int cur = aff_of(r, w.keys[k]), want = aff_lists_target(l, w.keys[k], cur);
        if (want != cur) {
            aff_set(r, w.keys[k], want);
            aff_follow(c, r, w.keys[k], want, NULL, NULL);
        }
        xd_free(w.keys[k]);
    }
    xd_free(w.keys);
}

/* The fields config_form_more offers, and lang and pubsub, into n (its
 * lang and pubsub still the room's: the caller copies them); NULL or why
 * they are refused. */
static const char *
config_parse_more(const xd_el_t *x, muc_cfg_t *n)
{
    const char *v;
    if (!form_roles(x, "muc#roomconfig_getmemberlist", &n->getmemberlist))
        return "getmemberlist takes moderator, participant and visitor";
    if ((v = form_value(x, "muc#roomconfig_lang")) && *v && !muc_lang_ok(v))
        return "lang is a language tag (en, pt-BR)";
    if ((v = form_value(x, "muc#roomconfig_pubsub")) && *v &&
        (strncmp(v, "xmpp:", 5) != 0 || strlen(v) > MUC_PUBSUB_MAX))
        return "pubsub is the XMPP URI of a node (xmpp:service?;node=name)";
    if (!parse_int_field(form_value2(x, "voice_request_min_interval",
                                     "muc#roomconfig_voicerequestmininterval"),
                         0, MUC_VOICE_INTERVAL_MAX, &n->voice_interval))
        return "voice_request_min_interval is seconds (0 to a year)";
    n->voice_requests = form_bool(form_value2(x, "allow_voice_requests",
                                              "muc#roomconfig_allowvoicerequests"),
                                  n->voice_requests);
    n->visitor_status = form_bool(form_value2(x, "allow_visitor_status",
                                              "muc#roomconfig_allowvisitorstatus"),
                                  n->visitor_status);
    n->visitor_nickchange = form_bool(form_value2(x, "allow_visitor_nickchange",
                                                  "muc#roomconfig_allowvisitornickchange"),
                                      n->visitor_nickchange);
    n->members_by_default = form_bool(form_value(x, "members_by_default"),
                                      n->members_by_default);
    return NULL;
}

/* Applies a submitted configuration; NULL, or the reason it is refused
 * (nothing changed then). */
static const char *
room_config_apply(muc_call_t *c, muc_room_t *r, const xd_el_t *x)
{
    muc_cfg_t n = r->cfg;
    const char *v;
    if ((v = form_value(x, "FORM_TYPE")) && strcmp(v, MUC_NS_ROOMCONFIG) != 0)
        return "not a muc#roomconfig form";
    if (!parse_int_field(form_value(x, "muc#roomconfig_maxusers"), 1, c->conf->max_users,
                         &n.maxusers))
        return "maxusers out of range";
    if (!parse_int_field(form_value(x, "muc#roomconfig_historylength"), 0,
                         c->conf->max_history_size, &n.history))
        return "historylength out of range";
    if ((v = form_value(x, "muc#roomconfig_whois"))) {
        if (strcmp(v, "anyone") == 0)
            n.whois = WHOIS_ANYONE;
        else if (strcmp(v, "moderators") == 0)
            n.whois = WHOIS_MODERATORS;
        else
            return "whois is anyone or moderators";
    }
    if ((v = form_value(x, "muc#roomconfig_allowpm"))) {
        int pm = name_index(pm_names, 4, v);
        if (pm < 0)
            return "allowpm is anyone, participants, moderators or none";
        n.allowpm = pm;
    }
    if (!form_roles(x, "muc#roomconfig_presencebroadcast", &n.pbcast))
        return "presencebroadcast lists moderator, participant, visitor";
    n.persistent = form_bool(form_value(x, "muc#roomconfig_persistentroom"), n.persistent);
    n.pub = form_bool(form_value(x, "muc#roomconfig_publicroom"), n.pub);
    n.members_only = form_bool(form_value(x, "muc#roomconfig_membersonly"), n.members_only);
    n.moderated = form_bool(form_value(x, "muc#roomconfig_moderatedroom"), n.moderated);
    n.password_protected =
        form_bool(form_value(x, "muc#roomconfig_passwordprotectedroom"), n.password_protected);
    n.changesubject = form_bool(form_value(x, "muc#roomconfig_changesubject"), n.changesubject);
    n.allowinvites = form_bool(form_value(x, "muc#roomconfig_allowinvites"), n.allowinvites);
    n.logging = form_bool(form_value(x, "muc#roomconfig_enablelogging"), n.logging);
    /* The archive: ours, ejabberd's and Prosody's names of the field. */
    n.mam = form_bool(form_value(x, "mam"), n.mam);
    n.mam = form_bool(form_value(x, "muc#roomconfig_enablearchiving"), n.mam);
    n.mam = form_bool(form_value(x, "muc#roomconfig_mam"), n.mam);
    const char *more = config_parse_more(x, &n);
    if (more)
        return more;
    const char *title = form_value(x, "muc#roomconfig_roomname");
    const char *desc = form_value(x, "muc#roomconfig_roomdesc");
    const char *secret = form_value(x, "muc#roomconfig_roomsecret");
    if (n.password_protected && !(secret && *secret) && !(r->cfg.password && !secret))
        return "a password protected room needs roomsecret";
    aff_lists_t lists = { 0 };
    const char *bad_list = aff_lists_parse(c, r, x, &lists);
    if (bad_list) {
        aff_lists_free(&lists);
        return bad_list;
    }
    const char *lang = form_value(x, "muc#roomconfig_lang");
    const char *pubsub = form_value(x, "muc#roomconfig_pubsub");
    n.lang = lang ? (*lang ? xd_strdup(lang) : NULL)
                  : (r->cfg.lang ? xd_strdup(r->cfg.lang) : NULL);
    n.pubsub = pubsub ? (*pubsub ? xd_strdup(pubsub) : NULL)
                      : (r->cfg.pubsub ? xd_strdup(r->cfg.pubsub) : NULL);
    xd_free(r->cfg.lang);
    xd_free(r->cfg.pubsub);
    int was_whois = r->cfg.whois;
    bool was_members = r->cfg.members_only;
    n.title = title ? (*title ? xd_strdup(title) : NULL)
                    : (r->cfg.title ? xd_strdup(r->cfg.title) : NULL);
    n.desc = desc ? (*desc ? xd_strdup(desc) : NULL)
                  : (r->cfg.desc ? xd_strdup(r->cfg.desc) : NULL);
    n.password = secret ? (*secret ? xd_strdup(secret) : NULL)
                        : (r->cfg.password ? xd_strdup(r->cfg.password) : NULL);
    bool was_persistent = r->cfg.persistent;
    xd_free(r->cfg.title);
    xd_free(r->cfg.desc);
    xd_free(r->cfg.password);
    r->cfg = n;
    if ((size_t)n.history != r->hcap)
        hist_resize(r, (size_t)n.history);
    r->locked = false;
    room_event(c, r, XD_MUC_EV_CONFIG, NULL, NULL, NULL, NULL, NULL);
    /* Status codes of a configuration change (XEP-0045 10.2.1). */
    int codes[4];
    size_t nc = 0;
    codes[nc++] = 104;
    if (was_whois != n.whois)
        codes[nc++] = n.whois == WHOIS_ANYONE ? 172 : 173;
    xd_el_t *b = xd_el_new("message", NULL);
    xd_el_set_attr(b, "type", "groupchat");
    xd_el_set_attr(b, "from", r->jid);
    xd_el_t *ux = xd_el_add_child(b, "x", XD_NS_MUC_USER);
    for (size_t i = 0; i < nc; i++)
        add_status(ux, codes[i]);
    xd_stanza_t *m = xd_el_freeze(b);
    fan_out(c, r, m, FAN_ALL, NULL, true);
    xd_stanza_unref(m);
    /* Members-only now: who is not a member leaves (321). */
    if (n.members_only && !was_members) {
        for (size_t i = r->nocc; i-- > 0;) {
            muc_occ_t *o = r->occ[i];
            if (aff_of(r, o->bare) < AFF_MEMBER) {
                int code = 322;
                pres_extra_t ex = { .codes = &code, .ncodes = 1, .role = ROLE_NONE,
                                    .aff = -1 };
                occ_remove(c, r, o, &ex);
            }
        }
    }
    aff_lists_apply(c, r, &lists);
    aff_lists_free(&lists);
    room_publish(c, r, n.persistent || was_persistent);
    return NULL;
}

typedef struct room_job {
    xd_module_ctx_t *mam;   /* held */
    xd_stanza_t *iq;        /* the request */
    xd_jid_t *room;
    char *name;             /* the room's local part */
    xd_stanza_t *answer;    /* query: an error to route, or NULL */
    /* moderation */
    char *id;               /* the archive id moderated */
    char *detail;           /* the tombstone's <retracted/> */
    char *reason;           /* or NULL */
    char *by;               /* room/nick of the moderator */
    char oid[48];           /* its occupant-id */
    char *occ_id;           /* the sender's occupant-id (from the archive) */
    xd_input_ref_t in;      /* retraction: the sender's stream, held until done, or {0} */
    int rc;
} room_job_t;

static void
room_job_free(room_job_t *j)
{
    xd_module_release(j->mam);
    xd_stanza_unref(j->iq);
    xd_jid_unref(j->room);
    if (j->answer)
        xd_stanza_unref(j->answer);
    xd_free(j->name);
    xd_free(j->id);
    xd_free(j->detail);
    xd_free(j->reason);
    xd_free(j->by);
    xd_free(j->occ_id);
    xd_free(j);
}

static void
archive_delete_work(xd_module_ctx_t *ctx, void *arg)
{
    (void)ctx;
    room_job_t *j = arg;
    j->rc = mam_room_delete(j->mam, j->room);
}

static void
archive_delete_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    (void)ctx;
    room_job_t *j = arg;
    if (status || j->rc)
        XD_LOG(NULL, XD_ERROR, "muc room archive not deleted", "room=%s err=%s", j->name,
               xd_strerror(status ? status : j->rc));
    /* The room is gone either way: the owner learns it. */
    xd_route_take(xd_iq_result(j->iq));
    room_job_free(j);
}

/* A destroyed room's archive goes with it (a room created again under its
 * name starts empty): the owner's destroy request `iq` is answered when it
 * is deleted; false when the room has no archive (answer it yourself). */
static bool
room_archive_delete(muc_call_t *c, const muc_room_t *r, const xd_stanza_t *iq)
{
    xd_module_ctx_t *mam = room_mam(c, r);
    if (!mam)
        return false;
    room_job_t *j = xd_new(room_job_t);
    j->mam = mam;
    j->iq = xd_stanza_ref(iq);
    j->room = room_jid(r);
    j->name = xd_strdup(r->name);
    if (!j->room || xd_module_submit(c->ctx, archive_delete_work, archive_delete_done, j) != 0) {
        XD_LOG(NULL, XD_ERROR, "muc room archive not deleted", "room=%s", r->name);
        xd_route_error(iq, XD_COND_INTERNAL_SERVER_ERROR, "the archive was not deleted");
        room_job_free(j);
        return true;
    }
    return true;
}

static void
room_destroy(muc_call_t *c, muc_room_t *r, const xd_el_t *destroy)
{
    int self_codes[1];
    (void)self_codes;
    pres_extra_t ex = { .destroy = destroy, .role = ROLE_NONE, .aff = AFF_NONE };
    const char *why = destroy ? xd_el_child_text(destroy, "reason", NULL) : NULL;
    if (destroy && !why)
        why = xd_el_child_text(destroy, "reason", XD_NS_MUC_OWNER);
    room_event(c, r, XD_MUC_EV_DESTROY, NULL, NULL, NULL, why, NULL);
    for (size_t i = 0; i < r->nocc; i++) {
        const muc_occ_t *o = r->occ[i];
        xd_el_t *b = occ_presence(r, o, true, true, NULL, &ex, false);
        xd_stanza_t *st = xd_el_freeze(b);
        send_occ(c, st, o);
        xd_stanza_unref(st);
    }
    bool was = r->cfg.persistent;
    room_drop(c, r, true);
    if (was)
        c->store = true;
}

static void
room_owner_iq(muc_call_t *c, muc_room_t *r, const xd_stanza_t *st, const xd_el_t *q, int aff,
              bool set)
{
    if (aff != AFF_OWNER) {
        xd_route_error(st, XD_COND_FORBIDDEN, "owners only");
        return;
    }
    if (!set) {
        room_config_form(c, r, st);
        return;
    }
    const xd_el_t *destroy = xd_el_child(q, "destroy", NULL);
    if (destroy) {
        if (!room_archive_delete(c, r, st))
            xd_route_take(xd_iq_result(st));
        room_destroy(c, r, destroy);
        return;
    }
    const xd_el_t *x = xd_el_child(q, "x", XD_NS_DATA);
    if (!x) {
        xd_route_error(st, XD_COND_BAD_REQUEST, NULL);
        return;
    }
    const char *type = xd_el_attr(x, "type");
    if (type && strcmp(type, "cancel") == 0) {
        xd_route_take(xd_iq_result(st));
        if (r->locked) /* a new room whose owner gave up (XEP-0045 10.1.3) */
            room_destroy(c, r, NULL);
        return;
    }
    if (!type || strcmp(type, "submit") != 0) {
        xd_route_error(st, XD_COND_BAD_REQUEST, "a submit or cancel form");
        return;
    }
    const char *lg = form_value(x, "muc#roomconfig_enablelogging");
    if (lg && form_bool(lg, r->cfg.logging) != r->cfg.logging &&
        !muc_log_may_switch(xd_module_host(c->ctx), xd_stanza_from(st))) {
        xd_route_error(st, XD_COND_FORBIDDEN, "access_log of mod_muc_log: not yours to switch");
        return;
    }
    const char *why = room_config_apply(c, r, x);
    if (why)
        xd_route_error(st, XD_COND_NOT_ACCEPTABLE, why);
    else
        xd_route_take(xd_iq_result(st));
}

/* Re-broadcasts o's presence after its role or affiliation changed. */
static void
occ_changed(muc_call_t *c, muc_room_t *r, muc_occ_t *o, const char *actor, const char *reason)
{
    (void)actor;
    pres_extra_t ex = { .reason = reason, .role = -1, .aff = -1 };
    broadcast_presence(c, r, o, false, &ex, &ex);
}

/* The occupants of account bare after its affiliation became aff: out
 * when banned or no longer a member of a members-only room, else their
 * role follows. */
static void
aff_follow(muc_call_t *c, muc_room_t *r, const char *bare, int aff, const char *actor,
           const char *reason)
{
    for (size_t i = r->nocc; i-- > 0;) {
        muc_occ_t *o = r->occ[i];
        if (strcmp(o->bare, bare) != 0)
            continue;
        if (aff == AFF_OUTCAST || (r->cfg.members_only && aff < AFF_MEMBER)) {
            int code = aff == AFF_OUTCAST ? 301 : 321;
            pres_extra_t ex = { .codes = &code, .ncodes = 1, .actor = actor,
                                .reason = reason, .role = ROLE_NONE, .aff = -1 };
            occ_remove(c, r, o, &ex);
        } else {
            o->role = role_for(r, aff);
            occ_changed(c, r, o, actor, reason);
        }
    }
}

struct list_walk {
    xd_el_t *q;
    int want;
    const muc_room_t *r;
};

static int
list_one(void *arg, const char *key, void *val)
{
    struct list_walk *w = arg;
    if ((int)(intptr_t)val != w->want)
        return 0;
    xd_el_t *it = xd_el_add_child(w->q, "item", NULL);
    xd_el_set_attr(it, "jid", key);
    xd_el_set_attr(it, "affiliation", aff_names[w->want]);
    const char *nick = reg_nick_of(w->r, key);
    if (nick) /* its reserved nick (9.5, 10.5) */
        xd_el_set_attr(it, "nick", nick);
    return 0;
}

/* muc#roomconfig_getmemberlist: whether occupant me (NULL: not in the
 * room, affiliation myaff) may get the member list.  It holds real JIDs:
 * in a semi-anonymous room only for those who see them (XEP-0045 5.2);
 * a member not in the room asks as a participant would. */
static bool
memberlist_ok(const muc_room_t *r, const muc_occ_t *me, int myaff)
{
    if (me)
        return (r->cfg.getmemberlist & 1 << me->role) && sees_jid(r, me);
    return myaff == AFF_MEMBER && r->cfg.whois == WHOIS_ANYONE &&
           (r->cfg.getmemberlist & 1 << ROLE_PARTICIPANT);
}

static void
room_admin_get(muc_call_t *c, muc_room_t *r, const xd_stanza_t *st, const xd_el_t *q,
               const muc_occ_t *me, int myaff)
{
    (void)c;
    const xd_el_t *item = xd_el_child(q, "item", NULL);
    if (!item) {
        xd_route_error(st, XD_COND_BAD_REQUEST, NULL);
        return;
    }
    const char *affs = xd_el_attr(item, "affiliation");
    const char *roles = xd_el_attr(item, "role");
    xd_el_t *b = xd_iq_result_builder(st);
    xd_el_t *rq = xd_el_add_child(b, "query", XD_NS_MUC_ADMIN);
    if (affs) {
        int want = name_index(aff_names, 5, affs);
        if (want <= AFF_NONE ||
            (myaff < AFF_ADMIN && !(want == AFF_MEMBER && memberlist_ok(r, me, myaff)))) {
            xd_el_free(b);
            xd_route_error(st, want <= AFF_NONE ? XD_COND_BAD_REQUEST : XD_COND_FORBIDDEN,
                           NULL);
            return;
        }
        struct list_walk w = { rq, want, r };
        xd_map_foreach(&r->affs, list_one, &w);
    } else if (roles) {
        int want = name_index(role_names, 4, roles);
        if (want <= ROLE_NONE || !me || me->role != ROLE_MODERATOR) {
            xd_el_free(b);
            xd_route_error(st, want <= ROLE_NONE ? XD_COND_BAD_REQUEST : XD_COND_FORBIDDEN,
                           NULL);
            return;
        }
        for (size_t i = 0; i < r->nocc; i++) {
            const muc_occ_t *o = r->occ[i];
            if (o->role != want)
                continue;
            xd_el_t *it = xd_el_add_child(rq, "item", NULL);
            xd_el_set_attr(it, "nick", o->nick);
            xd_el_set_attr(it, "role", role_names[o->role]);
            xd_el_set_attr(it, "affiliation", aff_names[aff_of(r, o->bare)]);
            xd_el_set_attr(it, "jid", o->full[0]);
        }
    } else {
        xd_el_free(b);
        xd_route_error(st, XD_COND_BAD_REQUEST, NULL);
        return;
    }
    xd_route_take(xd_el_freeze(b));
}

struct owner_count { size_t n; };

static int
count_owner(void *arg, const char *key, void *val)
{
    (void)key;
    if ((int)(intptr_t)val == AFF_OWNER)
        ((struct owner_count *)arg)->n++;
    return 0;
}

#define NO_ERROR XD_COND_COUNT

/* One <item/> of an admin set: checked and applied; NO_ERROR or the error. */
static xd_cond
admin_item(muc_call_t *c, muc_room_t *r, muc_occ_t *me, int myaff, const xd_el_t *item,
           const char **text)
{
    const char *nick = xd_el_attr(item, "nick");
    const char *jid = xd_el_attr(item, "jid");
    const char *roles = xd_el_attr(item, "role");
    const char *affs = xd_el_attr(item, "affiliation");
    const char *reason = xd_el_child_text(item, "reason", NULL);
    const char *actor = me ? me->nick : NULL;
    if (roles && nick) {
        int role = name_index(role_names, 4, roles);
        muc_occ_t *o = xd_map_get(&r->by_nick, xd_str_c(nick));
        if (role < 0)
            return XD_COND_BAD_REQUEST;
        if (!o)
            return XD_COND_ITEM_NOT_FOUND;
        if (!me || me->role != ROLE_MODERATOR)
            return XD_COND_FORBIDDEN;
        int their = aff_of(r, o->bare);
        if (role == ROLE_MODERATOR && myaff < AFF_ADMIN)
            return XD_COND_FORBIDDEN;
        if (their >= AFF_ADMIN && their >= myaff && o != me) {
            *text = "an admin or owner keeps its role";
            return XD_COND_NOT_ALLOWED;
        }
        if (o->role == ROLE_MODERATOR && role < ROLE_MODERATOR && myaff < AFF_ADMIN)
            return XD_COND_NOT_ALLOWED;
        if (role == ROLE_NONE) {
            int code = 307;
            pres_extra_t ex = { .codes = &code, .ncodes = 1, .actor = actor, .reason = reason,
                                .role = ROLE_NONE, .aff = -1 };
            occ_remove(c, r, o, &ex);
            return NO_ERROR;
        }
        o->role = role;
        occ_changed(c, r, o, actor, reason);
        return NO_ERROR;
    }
    if (affs && !jid && nick) {
        /* An affiliation by nick: the occupant's account. */
        muc_occ_t *o = xd_map_get(&r->by_nick, xd_str_c(nick));
        if (!o)
            return XD_COND_ITEM_NOT_FOUND;
        jid = o->bare;
    }
    if (affs && jid) {
        int aff = name_index(aff_names, 5, affs);
        xd_jid_t *j = NULL;
        if (aff < 0)
            return XD_COND_BAD_REQUEST;
        if (xd_jid_parse(xd_str_c(jid), &j) != 0)
            return XD_COND_JID_MALFORMED;
        xd_str_t bs = xd_jid_bare_str(j);
        char *bare = xd_strndup(bs.p, bs.len);
        xd_jid_unref(j);
        int their = aff_of(r, bare);
        xd_cond err = NO_ERROR;
        if (myaff < AFF_ADMIN)
            err = XD_COND_FORBIDDEN;
        else if (myaff == AFF_ADMIN && (aff >= AFF_ADMIN || their >= AFF_ADMIN))
            err = XD_COND_FORBIDDEN;
        else if (their == AFF_OWNER && aff != AFF_OWNER) {
            struct owner_count oc = { 0 };
            xd_map_foreach(&r->affs, count_owner, &oc);
            if (oc.n <= 1) {
                *text = "the room needs an owner";
                err = XD_COND_CONFLICT;
            }
        }
        if (err == NO_ERROR && aff != AFF_NONE && their == AFF_NONE &&
            xd_map_count(&r->affs) >= (size_t)c->conf->max_affiliations) {
            *text = "the room has too many affiliations";
            err = XD_COND_RESOURCE_CONSTRAINT;
        }
        if (err != NO_ERROR) {
            xd_free(bare);
            return err;
        }
        aff_set(r, bare, aff);
        aff_follow(c, r, bare, aff, actor, reason);
        xd_free(bare);
        room_publish(c, r, r->cfg.persistent);
        return NO_ERROR;
    }
    return XD_COND_BAD_REQUEST;
}

#define MUC_NS_REGISTER "http://jabber.org/protocol/muc#register"

/* jabber:iq:register on the room (XEP-0045 7.10): a user registers by
 * submitting the form with the nick they want; they become a member with
 * that nick reserved (nobody else may enter or change to it).  Anyone not
 * banned may in an open room; in a members-only room only its members
 * (reserving their nick: membership there is the admins' to give).
 * <remove/> drops the reservation and a plain membership. */
static void
room_register_iq(muc_call_t *c, muc_room_t *r, const xd_stanza_t *st, const xd_el_t *q,
                 const char *bare, int myaff, bool set)
{
    const char *mine = reg_nick_of(r, bare);
    if (!mine && (myaff == AFF_OUTCAST || (r->cfg.members_only && myaff < AFF_MEMBER))) {
        xd_route_error(st, XD_COND_NOT_ALLOWED,
                       myaff == AFF_OUTCAST ? "you are banned from this room"
                                            : "the admins of this room give its membership");
        return;
    }
    if (!set) {
        xd_el_t *b = xd_iq_result_builder(st);
        xd_el_t *rq = xd_el_add_child(b, "query", XD_NS_REGISTER);
        if (mine) {
            xd_el_add_child(rq, "registered", NULL);
            xd_el_add_text(xd_el_add_child(rq, "username", NULL), mine);
        } else {
            xd_el_add_text(xd_el_add_child(rq, "instructions", NULL),
                           "Choose the nick reserved for you in this room; you become a "
                           "member of it.");
            xd_el_t *x = xd_el_add_child(rq, "x", XD_NS_DATA);
            xd_el_set_attr(x, "type", "form");
            xd_el_add_text(xd_el_add_child(x, "title", NULL), "Room registration");
            add_field(x, "FORM_TYPE", "hidden", NULL, MUC_NS_REGISTER);
            xd_el_t *f = xd_el_add_child(x, "field", NULL);
            xd_el_set_attr(f, "var", "muc#register_roomnick");
            xd_el_set_attr(f, "type", "text-single");
            xd_el_set_attr(f, "label", "Desired nickname");
            xd_el_add_child(f, "required", NULL);
        }
        xd_route_take(xd_el_freeze(b));
        return;
    }
    if (xd_el_child(q, "remove", NULL)) {
        if (!mine) {
            xd_route_error(st, XD_COND_ITEM_NOT_FOUND, "you are not registered with this room");
            return;
        }
        reg_set(r, bare, NULL);
        if (myaff == AFF_MEMBER) {
            aff_set(r, bare, AFF_NONE);
            aff_follow(c, r, bare, AFF_NONE, NULL, NULL);
        }
        room_publish(c, r, r->cfg.persistent);
        xd_route_take(xd_iq_result(st));
        return;
    }
    const xd_el_t *x = xd_el_child(q, "x", XD_NS_DATA);
    const char *xtype = x ? xd_el_attr(x, "type") : NULL;
    if (xtype && strcmp(xtype, "cancel") == 0) {
        xd_route_take(xd_iq_result(st));
        return;
    }
    const char *ft = x ? form_value(x, "FORM_TYPE") : NULL;
    const char *nick = x ? form_value(x, "muc#register_roomnick") : NULL;
    if (!x || !xtype || strcmp(xtype, "submit") != 0 || (ft && strcmp(ft, MUC_NS_REGISTER) != 0)) {
        xd_route_error(st, XD_COND_BAD_REQUEST, "submit the muc#register form");
        return;
    }
    if (!nick || !*nick || (int)strlen(nick) > c->conf->max_nick) {
        xd_route_error(st, XD_COND_NOT_ACCEPTABLE, "muc#register_roomnick is not a usable nick");
        return;
    }
    const char *holder = reg_owner_of(r, nick);
    const muc_occ_t *in = xd_map_get(&r->by_nick, xd_str_c(nick));
    if ((holder && strcmp(holder, bare) != 0) || (in && strcmp(in->bare, bare) != 0)) {
        xd_route_error(st, XD_COND_CONFLICT, "that nick is taken in this room");
        return;
    }
    if (myaff == AFF_NONE &&
        xd_map_count(&r->affs) >= (size_t)c->conf->max_affiliations) {
        xd_route_error(st, XD_COND_RESOURCE_CONSTRAINT, "the room has too many affiliations");
        return;
    }
    if (myaff < AFF_MEMBER) {
        aff_set(r, bare, AFF_MEMBER);
        aff_follow(c, r, bare, AFF_MEMBER, NULL, NULL);
    }
    reg_set(r, bare, nick);
    room_publish(c, r, r->cfg.persistent);
    xd_route_take(xd_iq_result(st));
}

static void
room_admin_iq(muc_call_t *c, muc_room_t *r, const xd_stanza_t *st, const xd_el_t *q,
              muc_occ_t *me, int myaff, bool set)
{
    if (!set) {
        room_admin_get(c, r, st, q, me, myaff);
        return;
    }
    const char *text = NULL;
    xd_cond err = NO_ERROR;
    for (const xd_el_t *it = xd_el_first_child(q); it && err == NO_ERROR; it = xd_el_next(it))
        if (xd_el_is(it, "item", XD_NS_MUC_ADMIN))
            err = admin_item(c, r, me, myaff, it, &text);
    if (err != NO_ERROR)
        xd_route_error(st, err, text);
    else
        xd_route_take(xd_iq_result(st));
}

/* The occupant whose real JID is `full` (that session, or for an answer
 * from the account's bare JID, its first occupant), or NULL. */
static muc_occ_t *
occ_by_real(const muc_room_t *r, const xd_jid_t *jid)
{
    xd_str_t fs = xd_jid_full_str(jid);
    char *full = xd_strndup(fs.p, fs.len);
    muc_occ_t *o = xd_map_get(&r->by_full, xd_str_c(full));
    xd_free(full);
    if (o || !xd_jid_is_bare(jid))
        return o;
    xd_str_t bs = xd_jid_bare_str(jid);
    for (size_t i = 0; i < r->nocc; i++)
        if (strlen(r->occ[i]->bare) == bs.len && memcmp(r->occ[i]->bare, bs.p, bs.len) == 0)
            return r->occ[i];
    return NULL;
}

/* An IQ through an occupant JID (XEP-0045, Business Rules: IQ (bizrules-iq):
 * forwarded to the real JID, neither side learning the other's): a
 * request from occupant `me` to occupant `o` goes to o's first session
 * (a vCard request to its account) from me's occupant JID; an answer to
 * me's occupant JID from an occupant's real JID goes back to me's first
 * session from the answerer's occupant JID. */
static void
iq_forward(muc_call_t *c, const muc_room_t *r, const xd_stanza_t *st, const muc_occ_t *from,
           const muc_occ_t *to, bool request)
{
    xd_el_t *b = xd_stanza_edit(st);
    char *oj = occ_jid(r, from->nick);
    xd_el_set_attr(b, "from", oj);
    xd_free(oj);
    const xd_el_t *q = xd_el_first_child(xd_stanza_root(st));
    bool vcard = request && q && xd_el_is(q, "vCard", XD_NS_VCARD);
    send_to(c, b, vcard ? to->bare : to->full[0]);
}

/* ---- the room's archive (XEP-0313) and moderation (XEP-0425) ---------------------------------- */

static muc_room_t *room_find(muc_call_t *c, const char *name);

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
    room_job_free(j);
}

/* Who may read the room's archive: its occupants, its members (and
 * admins, owners, service administrators), and anyone when the room is
 * public and open (listed, neither members-only nor password-protected:
 * what is said there is public); never an outcast. */
static bool
archive_readable(const muc_room_t *r, const xd_stanza_t *st, const muc_occ_t *me, int myaff)
{
    bool occupant = me || occ_by_real(r, xd_stanza_from(st)) != NULL;
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
    j->room = room_jid(r);
    if (!j->room || xd_module_submit(c->ctx, mam_query_work, mam_query_done, j) != 0) {
        xd_route_error(st, XD_COND_RESOURCE_CONSTRAINT, "the archive is busy");
        room_job_free(j);
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
        hist_bytes(r, 0, e->len);
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
    muc_room_t *r = rc == 0 ? room_find(&c, j->name) : NULL;
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
        fan_out(&c, r, j->answer, FAN_ALL, NULL, true);
        hist_drop_sid(r, j->id);
        if (r->nocc == 0 && r->cfg.persistent && !r->empty_since)
            r->empty_since = muc_now_ms();
    }
    xd_input_release(j->in);
    room_job_free(j);
}

/* XEP-0424 in a room with an archive: occupant o retracts one of its own
 * messages by the id the room stamped on it (<retract id/>, a groupchat
 * message).  The archive checks that the message carries o's occupant-id
 * (its account) and keeps a tombstone; then the retraction goes out. */
static void
room_retract(muc_call_t *c, muc_room_t *r, const muc_occ_t *o, const xd_stanza_t *st,
             const xd_el_t *rt)
{
    const char *id = xd_el_attr(rt, "id");
    if (!id || !*id) {
        xd_route_error(st, XD_COND_BAD_REQUEST, "<retract/> names the message by its id");
        return;
    }
    room_job_t *j = xd_new(room_job_t);
    j->mam = room_mam(c, r);
    j->iq = xd_stanza_ref(st);
    j->room = room_jid(r);
    j->name = xd_strdup(r->name);
    j->id = xd_strdup(id);
    snprintf(j->oid, sizeof j->oid, "%s", o->oid);
    j->detail = xd_strdup("<retracted xmlns='" MUC_NS_RETRACT "'/>");
    j->answer = msg_from_occ(r, o, st, NULL);
    if (c->held && !c->in_taken && !c->store) { /* released when done */
        j->in = c->in;
        c->in_taken = true;
    }
    if (!j->mam || !j->room ||
        xd_module_submit(c->ctx, retract_work, retract_done, j) != 0) {
        xd_route_error(st, XD_COND_RESOURCE_CONSTRAINT, "the archive is busy");
        xd_input_release(j->in);
        room_job_free(j);
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
        room_job_free(j);
        return;
    }
    if (rc != 0) {
        XD_LOG(NULL, XD_ERROR, "muc moderation failed", "room=%s id=%s err=%s", j->name, j->id,
               xd_strerror(rc));
        xd_route_error(j->iq, XD_COND_INTERNAL_SERVER_ERROR, NULL);
        room_job_free(j);
        return;
    }
    xd_route_take(xd_iq_result(j->iq));
    muc_call_t c = { .ctx = ctx, .s = xd_module_state(ctx), .conf = xd_module_opts(ctx) };
    muc_room_t *r = room_find(&c, j->name);
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
        fan_out(&c, r, m, FAN_ALL, NULL, false);
        xd_stanza_unref(m);
        hist_drop_sid(r, j->id);
        if (r->nocc == 0 && r->cfg.persistent && !r->empty_since)
            r->empty_since = muc_now_ms();
    }
    room_job_free(j);
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
    j->room = room_jid(r);
    j->name = xd_strdup(r->name);
    j->id = xd_strdup(id);
    j->reason = reason && *reason ? xd_strdup(reason) : NULL;
    j->by = occ_jid(r, me->nick);
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
        room_job_free(j);
    }
}

static void
room_iq(muc_call_t *c, muc_room_t *r, const xd_stanza_t *st, const char *nick)
{
    const xd_el_t *root = xd_stanza_root(st);
    if (!xd_iq_is_request(root) && !nick && join_answer(c, r, st))
        return;
    if (!xd_iq_is_request(root)) {
        /* An answer to a forwarded request: to the requester's occupant JID. */
        muc_occ_t *requester = nick ? xd_map_get(&r->by_nick, xd_str_c(nick)) : NULL;
        muc_occ_t *answerer = requester ? occ_by_real(r, xd_stanza_from(st)) : NULL;
        if (answerer)
            iq_forward(c, r, st, answerer, requester, false);
        return;
    }
    const char *type = xd_el_attr(root, "type");
    bool set = strcmp(type, "set") == 0;
    const xd_el_t *q = xd_el_first_child(root);
    xd_str_t fs = xd_jid_full_str(xd_stanza_from(st)), bs = xd_jid_bare_str(xd_stanza_from(st));
    char *full = xd_strndup(fs.p, fs.len), *bare = xd_strndup(bs.p, bs.len);
    muc_occ_t *me = xd_map_get(&r->by_full, xd_str_c(full));
    int myaff = eff_aff(c, r, bare, xd_stanza_from(st));
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
            iq_forward(c, r, st, me, o, true);
    } else if (q && xd_el_is(q, "query", XD_NS_DISCO_INFO) && !set &&
               xd_el_attr(q, "node") && strcmp(xd_el_attr(q, "node"), "x-roomuser-item") == 0) {
        /* 7.12: one's reserved nick, or an empty answer */
        xd_el_t *b = xd_iq_result_builder(st);
        xd_el_t *rq = xd_el_add_child(b, "query", XD_NS_DISCO_INFO);
        xd_el_set_attr(rq, "node", "x-roomuser-item");
        const char *mine = reg_nick_of(r, bare);
        if (mine) {
            xd_el_t *id = xd_el_add_child(rq, "identity", NULL);
            xd_el_set_attr(id, "category", "conference");
            xd_el_set_attr(id, "type", "text");
            xd_el_set_attr(id, "name", mine);
        }
        xd_route_take(xd_el_freeze(b));
    } else if (q && xd_el_is(q, "query", XD_NS_DISCO_INFO) && !set) {
        room_disco_info(c, r, st);
    } else if (q && xd_el_is(q, "query", XD_NS_REGISTER)) {
        room_register_iq(c, r, st, q, bare, myaff, set);
    } else if (q && xd_el_is(q, "query", XD_NS_DISCO_ITEMS) && !set) {
        xd_el_t *b = xd_iq_result_builder(st);
        xd_el_add_child(b, "query", XD_NS_DISCO_ITEMS);
        xd_route_take(xd_el_freeze(b));
    } else if (q && xd_el_is(q, "prefs", XD_NS_MAM) && room_archived(c, r)) {
        room_mam_prefs(r, st, q, me, myaff, set);
    } else if (q && xd_el_ns(q) && strcmp(xd_el_ns(q), XD_NS_MAM) == 0 && room_archived(c, r)) {
        room_mam_iq(c, r, st, me, myaff, room_mam(c, r));
    } else if (q && set && (xd_el_is(q, "moderate", MAM_NS_MODERATE) ||
                            xd_el_is(q, "apply-to", MUC_NS_FASTEN)) &&
               room_archived(c, r)) {
        room_moderate(c, r, st, q, me, room_mam(c, r));
    } else if (q && xd_el_is(q, "query", XD_NS_MUC_OWNER)) {
        room_owner_iq(c, r, st, q, myaff, set);
    } else if (q && xd_el_is(q, "query", XD_NS_MUC_ADMIN)) {
        room_admin_iq(c, r, st, q, me, myaff, set);
    } else if (q && xd_el_is(q, "ping", XD_NS_PING) && !set) {
        xd_route_take(xd_iq_result(st));
    } else {
        xd_route_error(st, XD_COND_SERVICE_UNAVAILABLE, NULL);
    }
    xd_free(full);
    xd_free(bare);
}

/* ---- entry ------------------------------------------------------------------------------------- */

/* The room `name` on this worker: in memory, or restored from the
 * directory's stored state; NULL when there is none. */
static muc_room_t *
room_find(muc_call_t *c, const char *name)
{
    int self = xd_owner_self();
    muc_room_t *r = xd_map_get(&c->s->rooms[self], xd_str_c(name));
    if (r)
        return r;
    char *stored = muc_dir_stored(c->s, name);
    if (!stored)
        return NULL;
    r = room_restore(c, name, stored);
    xd_free(stored);
    if (r) {
        atomic_fetch_add_explicit(&c->s->wakeups, 1, memory_order_relaxed);
        xd_map_put(&c->s->rooms[self], xd_str_c(name), r);
        room_publish(c, r, false);
    }
    return r;
}

/* Creates room `name` for the sender of st (an entering presence), or
 * answers why not. */
static muc_room_t *
room_create(muc_call_t *c, const char *name, const xd_stanza_t *st)
{
    const xd_jid_t *from = xd_stanza_from(st);
    xd_str_t bs = xd_jid_bare_str(from);
    char *bare = xd_strndup(bs.p, bs.len);
    xd_config_t *cfg = xd_config_get();
    bool admin = service_admin(c, from);
    bool allowed = admin || xd_access_match(cfg, xd_module_host(c->ctx), c->conf->access_create,
                                            from, NULL) == XD_ACCESS_ALLOW;
    xd_config_unref(cfg);
    muc_room_t *r = NULL;
    if (!allowed) {
        xd_route_error(st, XD_COND_NOT_ALLOWED, "you may not create rooms here");
    } else if (!admin && c->conf->max_rooms_per_user > 0 &&
               muc_dir_count_creator(c->s, bare) >= (size_t)c->conf->max_rooms_per_user) {
        xd_route_error(st, XD_COND_RESOURCE_CONSTRAINT, "you have created too many rooms");
    } else {
        r = room_new(c, name);
        r->creator = xd_strdup(bare);
        r->locked = true;
        if (mod_random_id(r->salt) != 0)
            snprintf(r->salt, sizeof r->salt, "%p", (void *)r);
        aff_set(r, bare, AFF_OWNER);
        xd_map_put(&c->s->rooms[xd_owner_self()], xd_str_c(name), r);
        room_publish(c, r, false);
    }
    xd_free(bare);
    return r;
}

void
muc_room_stanza(xd_module_ctx_t *ctx, xd_stanza_t *st, xd_input_ref_t in, bool held)
{
    muc_call_t c = { .ctx = ctx, .s = xd_module_state(ctx), .conf = xd_module_opts(ctx),
                     .in = in, .held = held };
    const xd_jid_t *to = xd_stanza_to(st);
    xd_str_t local = xd_jid_local(to), res = xd_jid_resource(to);
    char *name = xd_strndup(local.p, local.len);
    char *nick = res.len ? xd_strndup(res.p, res.len) : NULL;
    const xd_el_t *root = xd_stanza_root(st);
    xd_stanza_kind kind = xd_stanza_kind_of(root);
    const char *type = xd_el_attr(root, "type");
    muc_room_t *r = room_find(&c, name);
    bool created = false;
    if ((int)local.len > c.conf->max_room_name) {
        if (!type || strcmp(type, "error") != 0)
            xd_route_error(st, XD_COND_NOT_ACCEPTABLE, "the room name is too long");
    } else if (kind == XD_STANZA_PRESENCE && !type && nick &&
               (int)strlen(nick) > c.conf->max_nick) {
        xd_route_error(st, XD_COND_NOT_ACCEPTABLE, "the nick is too long");
    } else if (!r && kind == XD_STANZA_PRESENCE && !type && nick) {
        r = room_create(&c, name, st);
        created = r != NULL;
        if (r)
            room_presence(&c, r, created, st, nick);
    } else if (!r) {
        if (kind == XD_STANZA_IQ || (kind == XD_STANZA_MESSAGE && (!type ||
                                                                    strcmp(type, "error"))))
            xd_route_error(st, XD_COND_ITEM_NOT_FOUND, "no such room");
        else if (kind == XD_STANZA_PRESENCE && !type && !nick)
            xd_route_error(st, XD_COND_JID_MALFORMED, "a nick is required");
    } else if (kind == XD_STANZA_PRESENCE) {
        room_presence(&c, r, false, st, nick);
    } else if (kind == XD_STANZA_MESSAGE) {
        room_message(&c, r, st, nick);
    } else if (kind == XD_STANZA_IQ) {
        room_iq(&c, r, st, nick);
    }
    /* A room nobody is in that is not kept goes (a locked new room whose
     * owner left too). */
    r = xd_map_get(&c.s->rooms[xd_owner_self()], xd_str_c(name));
    if (r && r->nocc == 0 && !r->cfg.persistent)
        room_drop(&c, r, true);
    else if (r) /* hibernation_timeout counts from here */
        r->empty_since = r->nocc ? 0 : r->empty_since ? r->empty_since : muc_now_ms();
    xd_input_charge(in, c.bytes);
    if (c.store)
        muc_store(ctx, name, held && !c.in_taken ? in : (xd_input_ref_t){ 0 }); /* releases in */
    else if (held && !c.in_taken) /* else the archive releases it when committed */
        xd_input_release(in);
    xd_free(name);
    xd_free(nick);
    xd_stanza_unref(st);
}

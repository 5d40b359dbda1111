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
 *
 * This file: room life, presence, entering, entry; the small helpers the
 * room's files share are mod_muc_util.c, the messages mod_muc_msg.c, the
 * IQs mod_muc_iq.c, the archive and moderation mod_muc_arch.c, what they
 * share muc_room.h.
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
#include "xmppd/ns.h"
#include "xmppd/route.h"
#include "xmppd/session.h"
#include "xmppd/stanza.h"

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
    bool hist_wait;      /* listed: waits for the history (muc_room_hist_fill) */
} muc_join_t;

/* ---- small helpers (the shared ones: mod_muc_util.c) ------------------------------------------- */

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

static void
stamp_of(time_t t, char out[32])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* XEP-0082 date-time (CCYY-MM-DDThh:mm:ss[.sss]TZD, TZD Z, +hh:mm or
 * -hh:mm); -1 when it is not one.  Checked character by character: no
 * read past the string's end. */
static time_t
parse_stamp(const char *s)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd";
    for (size_t i = 0; s && shape[i]; i++)
        if (shape[i] == 'd' ? !(s[i] >= '0' && s[i] <= '9') : s[i] != shape[i])
            return -1;
    int y, mo, d, h, mi, sec;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d", &y, &mo, &d, &h, &mi, &sec) != 6 || mo < 1 ||
        mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return -1;
    struct tm tm = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h,
                     .tm_min = mi, .tm_sec = sec };
    time_t t = timegm(&tm);
    const char *z = s + 19;
    if (*z == '.') {
        if (!(z[1] >= '0' && z[1] <= '9'))
            return -1;
        while (*++z >= '0' && *z <= '9') {
        }
    }
    if (z[0] == 'Z' && !z[1])
        return t;
    if ((*z != '+' && *z != '-') || !(z[1] >= '0' && z[1] <= '9') ||
        !(z[2] >= '0' && z[2] <= '9') || z[3] != ':' || !(z[4] >= '0' && z[4] <= '9') ||
        !(z[5] >= '0' && z[5] <= '9') || z[6])
        return -1;
    long off = (((z[1] - '0') * 10 + (z[2] - '0')) * 60L + (z[4] - '0') * 10 + (z[5] - '0')) * 60L;
    return *z == '+' ? t - off : t + off;
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

void
muc_hist_bytes(muc_room_t *r, size_t add, size_t sub)
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
    muc_hist_bytes(r, 0, r->hbytes);
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
    xd_map_free(&r->invited, xd_free);
    xd_map_free(&r->voice_last, xd_free);
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

void
muc_hist_resize(muc_room_t *r, size_t cap)
{
    /* Keeps the newest min(hn, cap) messages. */
    muc_hist_t *n = cap ? xd_calloc(cap, sizeof *n) : NULL;
    size_t keep = r->hn < cap ? r->hn : cap, drop = r->hn - keep;
    for (size_t i = 0; i < r->hn; i++) {
        muc_hist_t *h = &r->hist[(r->hstart + i) % r->hcap];
        if (i < drop) {
            muc_hist_bytes(r, 0, h->len);
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
void
muc_hist_add_at(muc_room_t *r, xd_stanza_t *st, time_t ts)
{
    if (r->hcap == 0) {
        xd_stanza_unref(st);
        return;
    }
    size_t len = 0;
    xd_stanza_bytes(st, &len);
    muc_hist_t e = { st, ts, len };
    muc_hist_bytes(r, len, 0);
    if (r->hn == r->hcap) {
        muc_hist_bytes(r, 0, r->hist[r->hstart].len);
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
    muc_hist_resize(r, (size_t)r->cfg.history);
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
 * with_hist: the history too; whole: all of it (a room leaving memory, its
 * history not being completed from the archive: muc_room_hist_fill need
 * not look there when it comes back). */
static char *
room_serialize(const muc_room_t *r, bool with_hist, bool whole)
{
    xd_el_t *root = xd_el_new("room", "urn:xmppd:muc:room");
    xd_el_set_attr(root, "salt", r->salt);
    if (with_hist && whole && !r->hist_loading)
        xd_el_set_attr(root, "whole", "1");
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
    muc_roles_to_text(g->getmemberlist, roles, sizeof roles);
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
    muc_roles_to_text(g->pbcast, pb, sizeof pb);
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
room_restore(muc_call_t *c, const char *name, const char *stored, bool *whole)
{
    xd_el_t *root = NULL;
    if (xd_el_parse(stored, strlen(stored), &root) != 0)
        return NULL;
    muc_room_t *r = room_new(c, name);
    *whole = xd_el_attr(root, "whole") && strcmp(xd_el_attr(root, "whole"), "1") == 0;
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
        g->pub = muc_form_bool(xd_el_attr(cf, "public"), true);
        g->members_only = muc_form_bool(xd_el_attr(cf, "members"), false);
        g->moderated = muc_form_bool(xd_el_attr(cf, "moderated"), false);
        g->password_protected = muc_form_bool(xd_el_attr(cf, "protected"), false);
        g->changesubject = muc_form_bool(xd_el_attr(cf, "subject"), true);
        g->allowinvites = muc_form_bool(xd_el_attr(cf, "invites"), false);
        g->logging = muc_form_bool(xd_el_attr(cf, "logging"), false);
        g->mam = muc_form_bool(xd_el_attr(cf, "mam"), c->conf->default_mam);
        if ((v = xd_el_attr(cf, "pbcast")))
            g->pbcast = muc_roles_from_text(v);
        v = xd_el_attr(cf, "whois");
        g->whois = v && strcmp(v, "anyone") == 0 ? WHOIS_ANYONE : WHOIS_MODERATORS;
        int pm = muc_name_index(pm_names, 4, xd_el_attr(cf, "pm"));
        g->allowpm = pm < 0 ? PM_ANYONE : pm;
        /* Fields a room stored before they existed keep the defaults. */
        if ((v = xd_el_attr(cf, "lang"))) {
            xd_free(g->lang);
            g->lang = *v ? xd_strdup(v) : NULL;
        }
        if ((v = xd_el_attr(cf, "pubsub")) && *v)
            g->pubsub = xd_strdup(v);
        if ((v = xd_el_attr(cf, "getmemberlist")))
            g->getmemberlist = muc_roles_from_text(v);
        g->voice_requests = muc_form_bool(xd_el_attr(cf, "voicereq"), g->voice_requests);
        g->visitor_status = muc_form_bool(xd_el_attr(cf, "vstatus"), g->visitor_status);
        g->visitor_nickchange = muc_form_bool(xd_el_attr(cf, "vnick"), g->visitor_nickchange);
        g->members_by_default = muc_form_bool(xd_el_attr(cf, "mbd"), g->members_by_default);
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
        muc_hist_resize(r, (size_t)g->history);
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
                muc_hist_add_at(r, hs, ts ? (time_t)strtoll(ts, NULL, 10) : time(NULL));
            xd_free(raw);
            continue;
        }
        if (xd_el_is(a, "reg", NULL) && xd_el_attr(a, "jid") && xd_el_attr(a, "nick")) {
            if (muc_aff_of(r, xd_el_attr(a, "jid")) >= AFF_MEMBER)
                muc_reg_set(r, xd_el_attr(a, "jid"), xd_el_attr(a, "nick"));
            continue;
        }
        if (!xd_el_is(a, "aff", NULL) || !xd_el_attr(a, "jid"))
            continue;
        int aff = muc_name_index(aff_names, 5, xd_el_attr(a, "a"));
        if (aff > AFF_NONE)
            muc_aff_set(r, xd_el_attr(a, "jid"), aff);
    }
    xd_el_free(root);
    return r;
}

/* Publishes the room's directory entry and marks the stored state for a
 * write when it is persistent (or was). */
void
muc_room_publish(muc_call_t *c, muc_room_t *r, bool store)
{
    /* With the history when it is written behind (history_flush_interval). */
    char *stored = r->cfg.persistent
                       ? room_serialize(r, c->conf->history_flush_interval > 0, false)
                       : NULL;
    muc_dir_update(c->s, r->name, r->cfg.title, r->cfg.pub && !r->locked, r->cfg.persistent,
                   true, r->creator, stored);
    if (store)
        c->store = true;
    if (store && stored && c->conf->history_flush_interval > 0) {
        /* That write carries the history: the write-behind has nothing to add. */
        r->hist_dirty = false;
        r->flushed_ms = muc_now_ms();
    }
}

/* Takes the room out of memory (and of the directory unless persistent). */
void
muc_room_drop(muc_call_t *c, muc_room_t *r, bool destroyed)
{
    int self = xd_owner_self();
    xd_map_del(&c->s->rooms[self], xd_str_c(r->name));
    if (destroyed || !r->cfg.persistent)
        muc_dir_remove(c->s, r->name);
    else
        muc_dir_update(c->s, r->name, r->cfg.title, r->cfg.pub, true, false, r->creator,
                       room_serialize(r, true, true));
    room_free(r);
}

uint64_t
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
                   room_serialize(r, true, true));
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

/* The names of one worker's rooms that `pick` chooses (rooms are not
 * changed while the map is walked: the caller acts on the names after). */
struct room_walk {
    uint64_t now, interval;
    bool (*pick)(const struct room_walk *w, const muc_room_t *r);
    char **names;
    size_t n, cap;
};

static int
walk_one(void *arg, const char *key, void *val)
{
    struct room_walk *w = arg;
    if (!w->pick(w, val))
        return 0;
    if (w->n == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 16;
        w->names = xd_realloc(w->names, w->cap * sizeof *w->names);
    }
    w->names[w->n++] = xd_strdup(key);
    return 0;
}

/* Empty persistent rooms idle for the interval (hibernation_timeout). */
static bool
idle_pick(const struct room_walk *w, const muc_room_t *r)
{
    return !r->nocc && r->cfg.persistent && !r->locked && r->empty_since && !r->hist_loading &&
           w->now - r->empty_since >= w->interval;
}

/* Persistent rooms whose history changed and was stored the interval ago. */
static bool
flush_pick(const struct room_walk *w, const muc_room_t *r)
{
    return r->hist_dirty && r->cfg.persistent && !r->locked &&
           w->now - r->flushed_ms >= w->interval;
}

/* Write-behind of the history (history_flush_interval): the persistent
 * rooms of this worker whose history changed, and was last stored at least
 * the interval ago, are stored with it (one write each), so that a crash
 * loses at most an interval of it. */
static void
rooms_flush(muc_call_t *c, int self)
{
    struct room_walk w = { muc_now_ms(), c->conf->history_flush_interval, flush_pick, NULL, 0,
                           0 };
    xd_map_foreach(&c->s->rooms[self], walk_one, &w);
    for (size_t i = 0; i < w.n; i++) {
        muc_room_t *r = xd_map_get(&c->s->rooms[self], xd_str_c(w.names[i]));
        if (r) {
            r->hist_dirty = false;
            r->flushed_ms = w.now;
            muc_room_publish(c, r, false);
            muc_store_ex(c->ctx, w.names[i], (xd_input_ref_t){ 0 }, true);
        }
        xd_free(w.names[i]);
    }
    xd_free(w.names);
}

/* Hibernation: persistent rooms of this worker nobody has been in for
 * hibernation_timeout leave memory; their stored state (with the history)
 * stays in the directory and goes to the database; muc_room_find brings them
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
    struct room_walk w = { muc_now_ms(), c.conf->hibernation_timeout, idle_pick, NULL, 0, 0 };
    xd_map_foreach(&c.s->rooms[self], walk_one, &w);
    char **names = w.names;
    size_t n = w.n;
    for (size_t i = 0; i < n; i++) {
        muc_room_t *r = xd_map_get(&c.s->rooms[self], xd_str_c(names[i]));
        if (r) {
            muc_room_drop(&c, r, false);
            atomic_fetch_add_explicit(&c.s->hibernations, 1, memory_order_relaxed);
            muc_store(ctx, names[i], (xd_input_ref_t){ 0 });
        }
        xd_free(names[i]);
    }
    xd_free(names);
}

/* ---- presence ---------------------------------------------------------------------------------- */

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
            *(muc_sees_jid(r, r->occ[i]) ? &with : &without) += 1;
    for (int v = 0; v < 2; v++) {
        if (!(v ? with : without))
            continue;
        xd_stanza_t *st = xd_el_freeze(muc_occ_presence(r, o, unavailable, v, NULL, ex, false));
        muc_fan_out_pres(c, r, st, v ? FAN_SEES_JID : FAN_NO_JID, o);
        xd_stanza_unref(st);
    }
}

/* o's presence to every occupant (self codes to o's own sessions). */
void
muc_broadcast_presence(muc_call_t *c, const muc_room_t *r, muc_occ_t *o, bool unavailable,
                       const pres_extra_t *ex, const pres_extra_t *self_ex)
{
    broadcast_others(c, r, o, unavailable, ex);
    xd_stanza_t *st = xd_el_freeze(muc_occ_presence(r, o, unavailable, true, NULL, self_ex, true));
    /* A session of o still getting its occupant list gets its own presence
     * last, as it is then (XEP-0045 7.2.3), so no change of o before;
     * only its leave. */
    bool leave = unavailable && !(self_ex && self_ex->newnick);
    for (size_t i = 0; i < o->nfull; i++)
        if (leave || !r->njoining || !xd_map_get(&r->joining, xd_str_c(o->full[i])))
            muc_send_to(c, xd_stanza_edit(st), o->full[i]);
    xd_stanza_unref(st);
}

/* muc#roomconfig_presencebroadcast changed (r->cfg.pbcast is the new
 * list): the occupants of a role now broadcast that were not announced
 * are, to every other occupant, with their presence as a newcomer's list
 * has it; those of a role no longer broadcast leave the others' view (an
 * unavailable presence, role none, as a leave), staying in the room. */
void
muc_pbcast_follow(muc_call_t *c, muc_room_t *r)
{
    for (size_t i = 0; i < r->nocc; i++) {
        muc_occ_t *o = r->occ[i];
        if (o->announced != ((r->cfg.pbcast & 1 << o->role) != 0))
            broadcast_others(c, r, o, false, NULL);
    }
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
void
muc_occ_remove(muc_call_t *c, muc_room_t *r, muc_occ_t *o, const pres_extra_t *ex)
{
    pres_extra_t self_ex = ex ? *ex : (pres_extra_t){ .role = -1, .aff = -1 };
    int kind = XD_MUC_EV_LEAVE;
    for (size_t i = 0; ex && i < ex->ncodes; i++)
        kind = ex->codes[i] == 307 ? XD_MUC_EV_KICK : ex->codes[i] == 301 ? XD_MUC_EV_BAN : kind;
    const xd_el_t *last = o->pres ? xd_stanza_root(o->pres) : NULL;
    const char *lt = last ? xd_el_attr(last, "type") : NULL;
    const char *status = lt && strcmp(lt, "unavailable") == 0
                             ? xd_el_child_text(last, "status", NULL) : NULL;
    muc_room_event(c, r, kind, o->nick, NULL, ex ? ex->actor : NULL,
                   kind == XD_MUC_EV_LEAVE ? status : ex->reason, o->pres);
    /* Everyone sees it, the leaver (with 110) among them. */
    muc_broadcast_presence(c, r, o, true, ex, &self_ex);
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
        muc_send_to(c, b, to);
    }
}

static void
send_subject(muc_call_t *c, const muc_room_t *r, const char *to)
{
    xd_el_t *b = xd_el_new("message", NULL);
    xd_el_set_attr(b, "type", "groupchat");
    char *from = r->subject_nick ? muc_occ_jid(r, r->subject_nick) : xd_strdup(r->jid);
    xd_el_set_attr(b, "from", from);
    xd_free(from);
    xd_el_t *sj = xd_el_add_child(b, "subject", NULL);
    if (r->subject && *r->subject)
        xd_el_add_text(sj, r->subject);
    muc_send_to(c, b, to);
}

/* The end of the join sequence: its own presence (110 last), the
 * history, the subject. */
static void
send_join_end(muc_call_t *c, const muc_room_t *r, const muc_occ_t *o, const char *full,
              const xd_el_t *muc_x, const int *codes, size_t ncodes)
{
    pres_extra_t ex = { .codes = codes, .ncodes = ncodes, .role = -1, .aff = -1 };
    muc_send_to(c, muc_occ_presence(r, o, false, true, full, &ex, true), full);
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
        /* As they are now: one that left meanwhile is not listed, one
         * that came is; the room's presence traffic about an occupant
         * reaches the joiner only once it was listed (muc_join_withholds),
         * so it gets each once, and no leave of one it never saw. */
        const muc_occ_t *other = r->occ[j->next++];
        if (other == o || !other->announced) /* presencebroadcast: not listed */
            continue;
        muc_send_to(c, muc_occ_presence(r, other, false, muc_sees_jid(r, o), NULL, NULL, false),
                    j->full);
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
        muc_send_to(c, b, j->full);
        atomic_fetch_add_explicit(&c->s->join_chunks, 1, memory_order_relaxed);
        return;
    }
    if (r->hist_loading) { /* listed: the rest when the history is there */
        j->hist_wait = true;
        j->ping[0] = '\0';
        return;
    }
    const xd_el_t *mx = xd_el_child(xd_stanza_root(j->pres), "x", XD_NS_MUC);
    send_join_end(c, r, o, j->full, mx, j->codes, j->ncodes);
    join_drop(r, j->full);
}

struct wait_walk {
    char **fulls;
    size_t n, cap;
};

static int
wait_one(void *arg, const char *key, void *val)
{
    struct wait_walk *w = arg;
    const muc_join_t *j = val;
    if (!j->hist_wait)
        return 0;
    if (w->n == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 8;
        w->fulls = xd_realloc(w->fulls, w->cap * sizeof *w->fulls);
    }
    w->fulls[w->n++] = xd_strdup(key);
    return 0;
}

void
muc_join_history_ready(muc_call_t *c, muc_room_t *r)
{
    struct wait_walk w = { NULL, 0, 0 };
    if (r->njoining)
        xd_map_foreach(&r->joining, wait_one, &w);
    for (size_t i = 0; i < w.n; i++) {
        muc_join_t *j = xd_map_get(&r->joining, xd_str_c(w.fulls[i]));
        if (j && j->hist_wait) {
            j->hist_wait = false;
            join_continue(c, r, j); /* who came meanwhile, then the end */
        }
        xd_free(w.fulls[i]);
    }
    xd_free(w.fulls);
}

bool
muc_join_withholds(const muc_room_t *r, const char *full, bool live, size_t at)
{
    const muc_join_t *j = xd_map_get(&r->joining, xd_str_c(full));
    return j && (live || at >= j->next);
}

/* An answer (result or error: either says the session read what came
 * before) to a ping of an occupant list from `from`. */
bool
muc_join_answer(muc_call_t *c, muc_room_t *r, const xd_stanza_t *st)
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
    if (r->nocc - 1 <= (size_t)c->conf->join_chunk && !r->hist_loading) {
        for (size_t i = 0; i < r->nocc; i++) {
            const muc_occ_t *other = r->occ[i];
            if (other == o || !other->announced) /* presencebroadcast: not listed */
                continue;
            muc_send_to(c, muc_occ_presence(r, other, false, muc_sees_jid(r, o), NULL, NULL, false),
                        full);
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
    int aff = muc_eff_aff(c, r, bare, xd_stanza_from(st));
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
    const char *holder = muc_reg_owner_of(r, nick);
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
    o->role = muc_role_for(r, aff);
    o->pres = pres_kept(r, st, o->role);
    occupant_id(r, bare, o->oid);
    occ_add_full(r, o, full, xd_stanza_from(st));
    if (r->nocc == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 8;
        r->occ = xd_realloc(r->occ, r->cap * sizeof *r->occ);
    }
    r->occ[r->nocc++] = o;
    xd_map_put(&r->by_nick, xd_str_c(o->nick), o);
    muc_room_event(c, r, XD_MUC_EV_JOIN, o->nick, NULL, NULL, NULL, o->pres);
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
    const char *holder = muc_reg_owner_of(r, nick);
    if (holder && strcmp(holder, o->bare) != 0) {
        presence_error(st, XD_COND_CONFLICT, "that nick is reserved in this room");
        return;
    }
    int codes[1] = { 303 };
    pres_extra_t ex = { .codes = codes, .ncodes = 1, .newnick = nick, .role = o->role, .aff = -1 };
    muc_room_event(c, r, XD_MUC_EV_NICK, o->nick, nick, NULL, NULL, st);
    muc_broadcast_presence(c, r, o, true, &ex, &ex);
    xd_map_del(&r->by_nick, xd_str_c(o->nick));
    xd_free(o->nick);
    o->nick = xd_strdup(nick);
    xd_map_put(&r->by_nick, xd_str_c(o->nick), o);
    xd_stanza_unref(o->pres);
    o->pres = pres_kept(r, st, o->role);
    muc_broadcast_presence(c, r, o, false, NULL, NULL);
}

void
muc_room_leave(muc_call_t *c, muc_room_t *r, muc_occ_t *o, const char *full, const xd_stanza_t *st,
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
        xd_el_t *b = muc_occ_presence(r, o, true, true, full, &ex, true);
        xd_free(o->full[i]);
        if (o->jid[i])
            xd_jid_unref(o->jid[i]);
        o->jid[i] = o->jid[o->nfull - 1];
        o->worker[i] = o->worker[o->nfull - 1];
        o->full[i] = o->full[--o->nfull];
        muc_send_to(c, b, full);
        return;
    }
    if (!failed) {
        xd_stanza_unref(o->pres);
        o->pres = pres_kept(r, st, o->role); /* its status goes with the leave */
    }
    muc_occ_remove(c, r, o, &ex);
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
            muc_room_leave(c, r, o, full, st, false);
    } else if (type && strcmp(type, "error") == 0) {
        /* The room's presence bounced: that session is gone. */
        if (o)
            muc_room_leave(c, r, o, full, st, true);
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
        muc_broadcast_presence(c, r, o, false, NULL, NULL);
    }
    xd_free(full);
    xd_free(bare);
}

/* ---- entry ------------------------------------------------------------------------------------- */

/* The room `name` on this worker: in memory, or restored from the
 * directory's stored state; NULL when there is none. */
muc_room_t *
muc_room_find(muc_call_t *c, const char *name)
{
    int self = xd_owner_self();
    muc_room_t *r = xd_map_get(&c->s->rooms[self], xd_str_c(name));
    if (r)
        return r;
    char *stored = muc_dir_stored(c->s, name);
    if (!stored)
        return NULL;
    bool whole = false;
    r = room_restore(c, name, stored, &whole);
    xd_free(stored);
    if (r) {
        atomic_fetch_add_explicit(&c->s->wakeups, 1, memory_order_relaxed);
        xd_map_put(&c->s->rooms[self], xd_str_c(name), r);
        muc_room_publish(c, r, false);
        muc_room_hist_fill(c, r, whole);
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
    bool admin = muc_service_admin(c, from);
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
        muc_aff_set(r, bare, AFF_OWNER);
        xd_map_put(&c->s->rooms[xd_owner_self()], xd_str_c(name), r);
        muc_room_publish(c, r, false);
    }
    xd_free(bare);
    return r;
}

void
muc_room_stanza(xd_module_ctx_t *ctx, xd_stanza_t *st, xd_input_ref_t in, bool held)
{
    muc_call_t c = { .ctx = ctx, .s = xd_module_state(ctx), .conf = xd_module_opts(ctx),
                     .in = in };
    const xd_jid_t *to = xd_stanza_to(st);
    xd_str_t local = xd_jid_local(to), res = xd_jid_resource(to);
    char *name = xd_strndup(local.p, local.len);
    char *nick = res.len ? xd_strndup(res.p, res.len) : NULL;
    const xd_el_t *root = xd_stanza_root(st);
    xd_stanza_kind kind = xd_stanza_kind_of(root);
    const char *type = xd_el_attr(root, "type");
    muc_room_t *r = muc_room_find(&c, name);
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
        muc_room_message(&c, r, st, nick);
    } else if (kind == XD_STANZA_IQ) {
        muc_room_iq(&c, r, st, nick);
    }
    /* A room nobody is in that is not kept goes (a locked new room whose
     * owner left too). */
    r = xd_map_get(&c.s->rooms[xd_owner_self()], xd_str_c(name));
    if (r && r->nocc == 0 && !r->cfg.persistent)
        muc_room_drop(&c, r, true);
    else if (r) /* hibernation_timeout counts from here */
        r->empty_since = r->nocc ? 0 : r->empty_since ? r->empty_since : muc_now_ms();
    xd_input_charge(in, c.bytes);
    if (c.store)
        muc_store(ctx, name, held ? in : (xd_input_ref_t){ 0 }); /* releases in */
    else if (held)
        xd_input_release(in);
    xd_free(name);
    xd_free(nick);
    xd_stanza_unref(st);
}

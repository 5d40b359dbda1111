/*
 * mod_muc_iq.c — a room's IQs (XEP-0045 10, 9, 7.10): the configuration form,
 * affiliation and role lists, registration, disco, IQs through an
 * occupant JID (muc_room.h for the room's structures).
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

/* ---- IQs --------------------------------------------------------------------------------------- */

void
muc_add_field(xd_el_t *x, const char *var, const char *type, const char *label, const char *value)
{
    xd_el_t *f = xd_el_add_child(x, "field", NULL);
    xd_el_set_attr(f, "var", var);
    if (type)
        xd_el_set_attr(f, "type", type);
    if (label)
        xd_el_set_attr(f, "label", label);
    xd_el_add_text(xd_el_add_child(f, "value", NULL), value ? value : "");
}

void
muc_add_options(xd_el_t *f, const char *const *vals, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        xd_el_t *o = xd_el_add_child(f, "option", NULL);
        xd_el_set_attr(o, "label", vals[i]);
        xd_el_add_text(xd_el_add_child(o, "value", NULL), vals[i]);
    }
}

void
muc_room_disco_info(muc_call_t *c, muc_room_t *r, const xd_stanza_t *st)
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
    if (muc_room_archived(c, r)) {
        /* Its archive (XEP-0313), the stanza-ids it stamps (XEP-0359),
         * moderation (XEP-0425). */
        static const char *const mam_feats[] = { XD_NS_MAM, XD_NS_MAM "#extended", XD_NS_SID,
                                                 MAM_NS_MODERATE, MAM_NS_MODERATE0 };
        for (size_t i = 0; i < sizeof mam_feats / sizeof *mam_feats; i++)
            xd_el_set_attr(xd_el_add_child(q, "feature", NULL), "var", mam_feats[i]);
    }
    xd_el_t *x = xd_el_add_child(q, "x", XD_NS_DATA);
    xd_el_set_attr(x, "type", "result");
    muc_add_field(x, "FORM_TYPE", "hidden", NULL, MUC_NS_ROOMINFO);
    muc_add_field(x, "muc#roominfo_description", NULL, "Description", g->desc);
    muc_add_field(x, "muc#roominfo_lang", NULL, "Language of discussion", g->lang);
    if (g->pubsub)
        muc_add_field(x, "muc#roomconfig_pubsub", NULL, "Associated pubsub node", g->pubsub);
    char num[24];
    snprintf(num, sizeof num, "%zu", r->nocc);
    muc_add_field(x, "muc#roominfo_occupants", NULL, "Number of occupants", num);
    muc_add_field(x, "muc#roominfo_subject", NULL, "Subject", r->subject);
    muc_add_field(x, "muc#roominfo_subjectmod", "boolean", NULL, g->changesubject ? "1" : "0");
    muc_add_field(x, "muc#roomconfig_roomname", NULL, "Name", g->title);
    snprintf(num, sizeof num, "%d", g->maxusers);
    muc_add_field(x, "muc#maxhistoryfetch", NULL, NULL, "");
    muc_add_field(x, "muc#roomconfig_maxusers", NULL, NULL, num);
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
    muc_add_roles_field(x, "muc#roomconfig_getmemberlist", "Roles that may get the member list",
                        g->getmemberlist);
    muc_add_field(x, "allow_voice_requests", "boolean", "Visitors may ask for voice",
                  g->voice_requests ? "1" : "0");
    char num[24];
    snprintf(num, sizeof num, "%d", g->voice_interval);
    muc_add_field(x, "voice_request_min_interval", "text-single",
                  "Seconds between one visitor's voice requests", num);
    muc_add_field(x, "allow_visitor_status", "boolean", "Visitors' status text is shown",
                  g->visitor_status ? "1" : "0");
    muc_add_field(x, "allow_visitor_nickchange", "boolean", "Visitors may change their nick",
                  g->visitor_nickchange ? "1" : "0");
    muc_add_field(x, "members_by_default", "boolean",
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
    muc_add_field(x, "FORM_TYPE", "hidden", NULL, MUC_NS_ROOMCONFIG);
    muc_add_field(x, "muc#roomconfig_roomname", "text-single", "Room name", g->title);
    muc_add_field(x, "muc#roomconfig_roomdesc", "text-single", "Description", g->desc);
    muc_add_field(x, "muc#roomconfig_lang", "text-single", "Language of discussion (a tag: en)",
                  g->lang);
    muc_add_field(x, "muc#roomconfig_pubsub", "text-single", "Associated pubsub node (XMPP URI)",
                  g->pubsub);
    muc_add_field(x, "muc#roomconfig_persistentroom", "boolean", "Persistent",
                  g->persistent ? "1" : "0");
    muc_add_field(x, "muc#roomconfig_publicroom", "boolean", "Listed in the directory",
                  g->pub ? "1" : "0");
    muc_add_field(x, "muc#roomconfig_membersonly", "boolean", "Members only",
                  g->members_only ? "1" : "0");
    muc_add_field(x, "muc#roomconfig_moderatedroom", "boolean", "Moderated",
                  g->moderated ? "1" : "0");
    muc_add_field(x, "muc#roomconfig_passwordprotectedroom", "boolean", "Password protected",
                  g->password_protected ? "1" : "0");
    muc_add_field(x, "muc#roomconfig_roomsecret", "text-private", "Password", g->password);
    muc_add_field(x, "muc#roomconfig_whois", "list-single", "Who may see real JIDs",
                  g->whois == WHOIS_ANYONE ? "anyone" : "moderators");
    static const char *const whois[] = { "moderators", "anyone" };
    /* The options of the list fields. */
    for (xd_el_t *f = xd_el_first_child_mut(x); f; f = xd_el_next_mut(f)) {
        const char *v = xd_el_attr(f, "var");
        if (v && strcmp(v, "muc#roomconfig_whois") == 0)
            muc_add_options(f, whois, 2);
    }
    char num[24];
    snprintf(num, sizeof num, "%d", g->maxusers);
    muc_add_field(x, "muc#roomconfig_maxusers", "text-single", "Maximum occupants", num);
    muc_add_field(x, "muc#roomconfig_allowpm", "list-single", "Who may send private messages",
                  pm_names[g->allowpm]);
    for (xd_el_t *f = xd_el_first_child_mut(x); f; f = xd_el_next_mut(f)) {
        const char *v = xd_el_attr(f, "var");
        if (v && strcmp(v, "muc#roomconfig_allowpm") == 0)
            muc_add_options(f, pm_names, 4);
    }
    muc_add_field(x, "muc#roomconfig_changesubject", "boolean", "Occupants may change the subject",
                  g->changesubject ? "1" : "0");
    snprintf(num, sizeof num, "%d", g->history);
    muc_add_field(x, "muc#roomconfig_historylength", "text-single", "Messages of history", num);
    muc_add_field(x, "muc#roomconfig_allowinvites", "boolean", "Occupants may invite",
                  g->allowinvites ? "1" : "0");
    config_form_more(r, x);
    /* Offered where something logs rooms (mod_muc_log on this host). */
    xd_module_ctx_t *logger = xd_module_instance("mod_muc_log", xd_module_host(c->ctx));
    if (logger && !muc_log_may_switch(xd_module_host(c->ctx), xd_stanza_from(st))) {
        xd_module_release(logger); /* mod_muc_log's access_log: not for them */
        logger = NULL;
    }
    if (logger) {
        muc_add_field(x, "muc#roomconfig_enablelogging", "boolean", "Public logs of the room",
                      g->logging ? "1" : "0");
        xd_module_release(logger);
    }
    muc_add_field(x, "muc#roomconfig_mam", "boolean", "Archive messages (XEP-0313)",
                  g->mam ? "1" : "0");
    muc_add_roles_field(x, "muc#roomconfig_presencebroadcast",
                        "Roles for which presence is broadcast", g->pbcast);
    xd_route_take(xd_el_freeze(b));
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

/* The value of the first of the field's names that the form has (ejabberd
 * renamed some: both are taken), or NULL. */
static const char *
form_value2(const xd_el_t *x, const char *var, const char *old)
{
    const char *v = muc_form_value(x, var);
    return v ? v : muc_form_value(x, old);
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
        const xd_el_t *f = muc_form_field(x, vars[i]);
        if (!f)
            continue;
        l->given[i] = true;
        for (const xd_el_t *v = xd_el_first_child(f); v; v = xd_el_next(v)) {
            if (!xd_el_is(v, "value", XD_NS_DATA))
                continue;
            const char *t = xd_el_text(v);
            if (!t || !*t)
                continue;
            if (l->n[i] >= max)
                return "the room has too many affiliations";
            char *bare = xd_jid_bare_text(t);
            if (!bare)
                return "roomowners and roomadmins take JIDs";
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
        count += aff_lists_target(l, w.keys[k], muc_aff_of(r, w.keys[k])) != AFF_NONE;
        xd_free(w.keys[k]);
    }
    xd_free(w.keys);
    for (int i = 0; i < 2; i++)
        for (size_t k = 0; k < l->n[i]; k++)
            count += muc_aff_of(r, l->jid[i][k]) == AFF_NONE;
    return count > max ? "the room has too many affiliations" : NULL;
}

/* Gives every JID the affiliation the lists make of it; its occupants
 * follow (muc_aff_follow). */
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
        int cur = muc_aff_of(r, w.keys[k]), want = aff_lists_target(l, w.keys[k], cur);
        if (want != cur) {
            muc_aff_set(r, w.keys[k], want);
            muc_aff_follow(c, r, w.keys[k], want, NULL, NULL);
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
    if (!muc_roles_from_form(x, "muc#roomconfig_getmemberlist", &n->getmemberlist))
        return "getmemberlist takes moderator, participant and visitor";
    if ((v = muc_form_value(x, "muc#roomconfig_lang")) && *v && !muc_lang_ok(v))
        return "lang is a language tag (en, pt-BR)";
    if ((v = muc_form_value(x, "muc#roomconfig_pubsub")) && *v &&
        (strncmp(v, "xmpp:", 5) != 0 || strlen(v) > MUC_PUBSUB_MAX))
        return "pubsub is the XMPP URI of a node (xmpp:service?;node=name)";
    if (!parse_int_field(form_value2(x, "voice_request_min_interval",
                                     "muc#roomconfig_voicerequestmininterval"),
                         0, MUC_VOICE_INTERVAL_MAX, &n->voice_interval))
        return "voice_request_min_interval is seconds (0 to a year)";
    n->voice_requests = muc_form_bool(form_value2(x, "allow_voice_requests",
                                                  "muc#roomconfig_allowvoicerequests"),
                                      n->voice_requests);
    n->visitor_status = muc_form_bool(form_value2(x, "allow_visitor_status",
                                                  "muc#roomconfig_allowvisitorstatus"),
                                      n->visitor_status);
    n->visitor_nickchange = muc_form_bool(form_value2(x, "allow_visitor_nickchange",
                                                      "muc#roomconfig_allowvisitornickchange"),
                                          n->visitor_nickchange);
    n->members_by_default = muc_form_bool(muc_form_value(x, "members_by_default"),
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
    if ((v = muc_form_value(x, "FORM_TYPE")) && strcmp(v, MUC_NS_ROOMCONFIG) != 0)
        return "not a muc#roomconfig form";
    if (!parse_int_field(muc_form_value(x, "muc#roomconfig_maxusers"), 1, c->conf->max_users,
                         &n.maxusers))
        return "maxusers out of range";
    if (!parse_int_field(muc_form_value(x, "muc#roomconfig_historylength"), 0,
                         c->conf->max_history_size, &n.history))
        return "historylength out of range";
    if ((v = muc_form_value(x, "muc#roomconfig_whois"))) {
        if (strcmp(v, "anyone") == 0)
            n.whois = WHOIS_ANYONE;
        else if (strcmp(v, "moderators") == 0)
            n.whois = WHOIS_MODERATORS;
        else
            return "whois is anyone or moderators";
    }
    if ((v = muc_form_value(x, "muc#roomconfig_allowpm"))) {
        int pm = muc_name_index(pm_names, 4, v);
        if (pm < 0)
            return "allowpm is anyone, participants, moderators or none";
        n.allowpm = pm;
    }
    if (!muc_roles_from_form(x, "muc#roomconfig_presencebroadcast", &n.pbcast))
        return "presencebroadcast lists moderator, participant, visitor";
    n.persistent = muc_form_bool(muc_form_value(x, "muc#roomconfig_persistentroom"), n.persistent);
    n.pub = muc_form_bool(muc_form_value(x, "muc#roomconfig_publicroom"), n.pub);
    n.members_only = muc_form_bool(muc_form_value(x, "muc#roomconfig_membersonly"), n.members_only);
    n.moderated = muc_form_bool(muc_form_value(x, "muc#roomconfig_moderatedroom"), n.moderated);
    n.password_protected =
        muc_form_bool(muc_form_value(x, "muc#roomconfig_passwordprotectedroom"),
                      n.password_protected);
    n.changesubject =
        muc_form_bool(muc_form_value(x, "muc#roomconfig_changesubject"), n.changesubject);
    n.allowinvites =
        muc_form_bool(muc_form_value(x, "muc#roomconfig_allowinvites"), n.allowinvites);
    n.logging = muc_form_bool(muc_form_value(x, "muc#roomconfig_enablelogging"), n.logging);
    /* The archive: ours, ejabberd's and Prosody's names of the field. */
    n.mam = muc_form_bool(muc_form_value(x, "mam"), n.mam);
    n.mam = muc_form_bool(muc_form_value(x, "muc#roomconfig_enablearchiving"), n.mam);
    n.mam = muc_form_bool(muc_form_value(x, "muc#roomconfig_mam"), n.mam);
    const char *more = config_parse_more(x, &n);
    if (more)
        return more;
    const char *title = muc_form_value(x, "muc#roomconfig_roomname");
    const char *desc = muc_form_value(x, "muc#roomconfig_roomdesc");
    const char *secret = muc_form_value(x, "muc#roomconfig_roomsecret");
    if (n.password_protected && !(secret && *secret) && !(r->cfg.password && !secret))
        return "a password protected room needs roomsecret";
    aff_lists_t lists = { 0 };
    const char *bad_list = aff_lists_parse(c, r, x, &lists);
    if (bad_list) {
        aff_lists_free(&lists);
        return bad_list;
    }
    const char *lang = muc_form_value(x, "muc#roomconfig_lang");
    const char *pubsub = muc_form_value(x, "muc#roomconfig_pubsub");
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
        muc_hist_resize(r, (size_t)n.history);
    r->locked = false;
    muc_room_event(c, r, XD_MUC_EV_CONFIG, NULL, NULL, NULL, NULL, NULL);
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
        muc_add_status(ux, codes[i]);
    xd_stanza_t *m = xd_el_freeze(b);
    muc_fan_out(c, r, m, FAN_ALL, NULL, true);
    xd_stanza_unref(m);
    /* Members-only now: who is not a member leaves (321). */
    if (n.members_only && !was_members) {
        for (size_t i = r->nocc; i-- > 0;) {
            muc_occ_t *o = r->occ[i];
            if (muc_aff_of(r, o->bare) < AFF_MEMBER) {
                int code = 322;
                pres_extra_t ex = { .codes = &code, .ncodes = 1, .role = ROLE_NONE,
                                    .aff = -1 };
                muc_occ_remove(c, r, o, &ex);
            }
        }
    }
    aff_lists_apply(c, r, &lists);
    aff_lists_free(&lists);
    /* presencebroadcast: who the others see follows the list (changed or not). */
    muc_pbcast_follow(c, r);
    muc_room_publish(c, r, n.persistent || was_persistent);
    return NULL;
}

void
muc_room_job_free(room_job_t *j)
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
    muc_room_job_free(j);
}

/* A destroyed room's archive goes with it (a room created again under its
 * name starts empty): the owner's destroy request `iq` is answered when it
 * is deleted; false when the room has no archive (answer it yourself). */
static bool
room_archive_delete(muc_call_t *c, const muc_room_t *r, const xd_stanza_t *iq)
{
    xd_module_ctx_t *mam = muc_room_mam(c, r);
    if (!mam)
        return false;
    room_job_t *j = xd_new(room_job_t);
    j->mam = mam;
    j->iq = xd_stanza_ref(iq);
    j->room = muc_room_jid(r);
    j->name = xd_strdup(r->name);
    if (!j->room || xd_module_submit(c->ctx, archive_delete_work, archive_delete_done, j) != 0) {
        XD_LOG(NULL, XD_ERROR, "muc room archive not deleted", "room=%s", r->name);
        xd_route_error(iq, XD_COND_INTERNAL_SERVER_ERROR, "the archive was not deleted");
        muc_room_job_free(j);
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
    muc_room_event(c, r, XD_MUC_EV_DESTROY, NULL, NULL, NULL, why, NULL);
    for (size_t i = 0; i < r->nocc; i++) {
        const muc_occ_t *o = r->occ[i];
        xd_el_t *b = muc_occ_presence(r, o, true, true, NULL, &ex, false);
        xd_stanza_t *st = xd_el_freeze(b);
        muc_send_occ(c, st, o);
        xd_stanza_unref(st);
    }
    bool was = r->cfg.persistent;
    muc_room_drop(c, r, true);
    if (was)
        c->store = true;
}

void
muc_room_owner_iq(muc_call_t *c, muc_room_t *r, const xd_stanza_t *st, const xd_el_t *q, int aff,
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
    const char *lg = muc_form_value(x, "muc#roomconfig_enablelogging");
    if (lg && muc_form_bool(lg, r->cfg.logging) != r->cfg.logging &&
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
void
muc_occ_changed(muc_call_t *c, muc_room_t *r, muc_occ_t *o, const char *actor, const char *reason)
{
    (void)actor;
    pres_extra_t ex = { .reason = reason, .role = -1, .aff = -1 };
    muc_broadcast_presence(c, r, o, false, &ex, &ex);
}

/* The occupants of account bare after its affiliation became aff: out
 * when banned or no longer a member of a members-only room, else their
 * role follows. */
void
muc_aff_follow(muc_call_t *c, muc_room_t *r, const char *bare, int aff, const char *actor,
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
            muc_occ_remove(c, r, o, &ex);
        } else {
            o->role = muc_role_for(r, aff);
            muc_occ_changed(c, r, o, actor, reason);
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
    const char *nick = muc_reg_nick_of(w->r, key);
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
        return (r->cfg.getmemberlist & 1 << me->role) && muc_sees_jid(r, me);
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
        int want = muc_name_index(aff_names, 5, affs);
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
        int want = muc_name_index(role_names, 4, roles);
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
            xd_el_set_attr(it, "affiliation", aff_names[muc_aff_of(r, o->bare)]);
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

/* One <item/> of an admin set: checked and applied; NO_ERROR or the error.
 * actor: a copy of me's nick (an item may remove me, whose nick the
 * presences of the occupants removed after it still name). */
static xd_cond
admin_item(muc_call_t *c, muc_room_t *r, muc_occ_t *me, int myaff, const char *actor,
           const xd_el_t *item, const char **text)
{
    const char *nick = xd_el_attr(item, "nick");
    const char *jid = xd_el_attr(item, "jid");
    const char *roles = xd_el_attr(item, "role");
    const char *affs = xd_el_attr(item, "affiliation");
    const char *reason = xd_el_child_text(item, "reason", NULL);
    if (roles && nick) {
        int role = muc_name_index(role_names, 4, roles);
        muc_occ_t *o = xd_map_get(&r->by_nick, xd_str_c(nick));
        if (role < 0)
            return XD_COND_BAD_REQUEST;
        if (!o)
            return XD_COND_ITEM_NOT_FOUND;
        if (!me || me->role != ROLE_MODERATOR)
            return XD_COND_FORBIDDEN;
        int their = muc_aff_of(r, o->bare);
        if (role == ROLE_MODERATOR && myaff < AFF_ADMIN)
            return XD_COND_FORBIDDEN;
        if (their >= AFF_ADMIN && their >= myaff && o != me) {
            *text = "an admin or owner keeps its role";
            return XD_COND_NOT_ALLOWED;
        }
        if (o->role == ROLE_MODERATOR && role < ROLE_MODERATOR && myaff < AFF_ADMIN)
            return XD_COND_NOT_ALLOWED;
        if (role == ROLE_NONE && o == me) {
            /* XEP-0045 8.2: a moderator who kicks himself may be refused
             * (ejabberd and Prosody refuse it); one leaves with an
             * unavailable presence. */
            *text = "you cannot kick yourself: leave the room instead";
            return XD_COND_CONFLICT;
        }
        if (role == ROLE_NONE) {
            int code = 307;
            pres_extra_t ex = { .codes = &code, .ncodes = 1, .actor = actor, .reason = reason,
                                .role = ROLE_NONE, .aff = -1 };
            muc_occ_remove(c, r, o, &ex);
            return NO_ERROR;
        }
        o->role = role;
        muc_occ_changed(c, r, o, actor, reason);
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
        int aff = muc_name_index(aff_names, 5, affs);
        if (aff < 0)
            return XD_COND_BAD_REQUEST;
        char *bare = xd_jid_bare_text(jid);
        if (!bare)
            return XD_COND_JID_MALFORMED;
        int their = muc_aff_of(r, bare);
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
        muc_aff_set(r, bare, aff);
        muc_aff_follow(c, r, bare, aff, actor, reason);
        xd_free(bare);
        muc_room_publish(c, r, r->cfg.persistent);
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
void
muc_room_register_iq(muc_call_t *c, muc_room_t *r, const xd_stanza_t *st, const xd_el_t *q,
                     const char *bare, int myaff, bool set)
{
    const char *mine = muc_reg_nick_of(r, bare);
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
            muc_add_field(x, "FORM_TYPE", "hidden", NULL, MUC_NS_REGISTER);
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
        muc_reg_set(r, bare, NULL);
        if (myaff == AFF_MEMBER) {
            muc_aff_set(r, bare, AFF_NONE);
            muc_aff_follow(c, r, bare, AFF_NONE, NULL, NULL);
        }
        muc_room_publish(c, r, r->cfg.persistent);
        xd_route_take(xd_iq_result(st));
        return;
    }
    const xd_el_t *x = xd_el_child(q, "x", XD_NS_DATA);
    const char *xtype = x ? xd_el_attr(x, "type") : NULL;
    if (xtype && strcmp(xtype, "cancel") == 0) {
        xd_route_take(xd_iq_result(st));
        return;
    }
    const char *ft = x ? muc_form_value(x, "FORM_TYPE") : NULL;
    const char *nick = x ? muc_form_value(x, "muc#register_roomnick") : NULL;
    if (!x || !xtype || strcmp(xtype, "submit") != 0 || (ft && strcmp(ft, MUC_NS_REGISTER) != 0)) {
        xd_route_error(st, XD_COND_BAD_REQUEST, "submit the muc#register form");
        return;
    }
    if (!nick || !*nick || (int)strlen(nick) > c->conf->max_nick) {
        xd_route_error(st, XD_COND_NOT_ACCEPTABLE, "muc#register_roomnick is not a usable nick");
        return;
    }
    const char *holder = muc_reg_owner_of(r, nick);
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
        muc_aff_set(r, bare, AFF_MEMBER);
        muc_aff_follow(c, r, bare, AFF_MEMBER, NULL, NULL);
    }
    muc_reg_set(r, bare, nick);
    muc_room_publish(c, r, r->cfg.persistent);
    xd_route_take(xd_iq_result(st));
}

void
muc_room_admin_iq(muc_call_t *c, muc_room_t *r, const xd_stanza_t *st, const xd_el_t *q,
                  muc_occ_t *me, int myaff, bool set)
{
    if (!set) {
        room_admin_get(c, r, st, q, me, myaff);
        return;
    }
    const char *text = NULL;
    xd_cond err = NO_ERROR;
    const xd_jid_t *from = xd_stanza_from(st);
    xd_str_t fs = xd_jid_full_str(from), bs = xd_jid_bare_str(from);
    char *full = xd_strndup(fs.p, fs.len), *bare = xd_strndup(bs.p, bs.len);
    for (const xd_el_t *it = xd_el_first_child(q); it && err == NO_ERROR; it = xd_el_next(it)) {
        if (!xd_el_is(it, "item", XD_NS_MUC_ADMIN))
            continue;
        char *actor = me ? xd_strdup(me->nick) : NULL;
        err = admin_item(c, r, me, myaff, actor, it, &text);
        xd_free(actor);
        /* The item may have taken the sender out of the room (a ban of
         * its own account, a members-only room it is no member of now:
         * `me` is freed) or changed its affiliation: the next item acts
         * as what the sender is now. */
        me = xd_map_get(&r->by_full, xd_str_c(full));
        myaff = muc_eff_aff(c, r, bare, from);
    }
    xd_free(full);
    xd_free(bare);
    if (err != NO_ERROR)
        xd_route_error(st, err, text);
    else
        xd_route_take(xd_iq_result(st));
}

/* The occupant whose real JID is `full` (that session, or for an answer
 * from the account's bare JID, its first occupant), or NULL. */
muc_occ_t *
muc_occ_by_real(const muc_room_t *r, const xd_jid_t *jid)
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
void
muc_iq_forward(muc_call_t *c, const muc_room_t *r, const xd_stanza_t *st, const muc_occ_t *from,
               const muc_occ_t *to, bool request)
{
    xd_el_t *b = xd_stanza_edit(st);
    char *oj = muc_occ_jid(r, from->nick);
    xd_el_set_attr(b, "from", oj);
    xd_free(oj);
    const xd_el_t *q = xd_el_first_child(xd_stanza_root(st));
    bool vcard = request && q && xd_el_is(q, "vCard", XD_NS_VCARD);
    muc_send_to(c, b, vcard ? to->bare : to->full[0]);
}

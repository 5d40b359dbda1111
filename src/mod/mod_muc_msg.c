/*
 * mod_muc_msg.c — a room's messages (XEP-0045 7.4, 7.5, 7.8, 8.6): groupchat,
 * private messages, invitations, voice requests (muc_room.h for the
 * room's structures, mod_muc_room.c for the rest of the room).
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

/* ---- messages ---------------------------------------------------------------------------------- */

static void
hist_add(muc_room_t *r, xd_stanza_t *st)
{
    muc_hist_add_at(r, st, time(NULL));
    r->hist_dirty = r->cfg.persistent;
}

/* A copy of the message from room/nick, without 'to', as everyone gets
 * it: 'id' kept, occupant-id set; sid: the room's archive id, stamped as
 * <stanza-id by='room'/> (a claim of the room's the sender put there is
 * taken off in any case). */
xd_stanza_t *
muc_msg_from_occ(const muc_room_t *r, const muc_occ_t *o, const xd_stanza_t *st, const char *sid)
{
    xd_el_t *b = xd_stanza_edit(st);
    char *from = muc_occ_jid(r, o->nick);
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

#define MUC_INVITE_TTL_MS (24ULL * 3600 * 1000) /* an invitation may be declined so long */

struct stamps_walk {
    uint64_t now, ttl;
    char **old;          /* keys older than ttl */
    size_t nold;
    const char *oldest;  /* the oldest key */
    uint64_t oldest_at;
};

static int
stamps_one(void *arg, const char *key, void *val)
{
    struct stamps_walk *w = arg;
    uint64_t at = *(const uint64_t *)val;
    if (w->now - at >= w->ttl)
        w->old[w->nold++] = xd_strdup(key);
    if (!w->oldest || at < w->oldest_at) {
        w->oldest = key;
        w->oldest_at = at;
    }
    return 0;
}

/* m (key → uint64_t * of muc_now_ms) gets key at now, bounded: when it
 * holds max keys, those older than ttl_ms go, and if none did the oldest. */
static void
stamps_put(xd_map_t *m, const char *key, uint64_t now, uint64_t ttl_ms, size_t max)
{
    uint64_t *at = xd_map_get(m, xd_str_c(key));
    if (!at && xd_map_count(m) >= max) {
        struct stamps_walk w = { now, ttl_ms, xd_calloc(xd_map_count(m) + 1, sizeof(char *)),
                                 0, NULL, 0 };
        xd_map_foreach(m, stamps_one, &w);
        char *oldest = !w.nold && w.oldest ? xd_strdup(w.oldest) : NULL;
        for (size_t i = 0; i < w.nold; i++) {
            xd_free(xd_map_del(m, xd_str_c(w.old[i])));
            xd_free(w.old[i]);
        }
        xd_free(w.old);
        if (oldest)
            xd_free(xd_map_del(m, xd_str_c(oldest)));
        xd_free(oldest);
    }
    if (!at) {
        at = xd_new(uint64_t);
        xd_map_put(m, xd_str_c(key), at);
    }
    *at = now;
}


/* Mediated invitations and declines (XEP-0045 7.8.2).  Bounded so that
 * one stanza is not many from the room: at most max_invitations
 * <invite/>s, each a message against the occupant's
 * max_messages_per_second; one <decline/>, relayed only to someone who
 * invited its sender (r->invited), once per invitation. */
static void
room_invite(muc_call_t *c, muc_room_t *r, muc_occ_t *o, const xd_stanza_t *st,
            const xd_el_t *ux)
{
    size_t ninv = 0, ndec = 0;
    for (const xd_el_t *e = xd_el_first_child(ux); e; e = xd_el_next(e)) {
        ninv += xd_el_is(e, "invite", XD_NS_MUC_USER);
        ndec += xd_el_is(e, "decline", XD_NS_MUC_USER);
    }
    if (ninv > (size_t)c->conf->max_invitations || ndec > 1 || (ninv && ndec)) {
        xd_route_error(st, XD_COND_NOT_ACCEPTABLE,
                       ndec > 1 || (ninv && ndec) ? "one decline per message, alone"
                                                  : "too many invitations in one message");
        return;
    }
    const char *from = NULL;
    xd_str_t fs = xd_jid_full_str(xd_stanza_from(st)), sbs = xd_jid_bare_str(xd_stanza_from(st));
    char *sender = xd_strndup(fs.p, fs.len), *sbare = xd_strndup(sbs.p, sbs.len);
    from = sender;
    for (const xd_el_t *e = xd_el_first_child(ux); e; e = xd_el_next(e)) {
        bool invite = xd_el_is(e, "invite", XD_NS_MUC_USER);
        bool decline = xd_el_is(e, "decline", XD_NS_MUC_USER);
        if (!invite && !decline)
            continue;
        const char *to = xd_el_attr(e, "to");
        char *tbare = xd_jid_bare_text(to);
        if (!tbare) {
            xd_route_error(st, XD_COND_JID_MALFORMED, NULL);
            break;
        }
        char *key = invite ? xd_asprintf("%s\n%s", tbare, sbare)
                           : xd_asprintf("%s\n%s", sbare, tbare);
        xd_free(tbare);
        if (decline) {
            uint64_t *at = xd_map_del(&r->invited, xd_str_c(key));
            bool pending = at && muc_now_ms() - *at < MUC_INVITE_TTL_MS;
            xd_free(at);
            if (!pending) {
                xd_free(key);
                xd_route_error(st, XD_COND_NOT_ACCEPTABLE,
                               "no invitation of yours from them to decline");
                break;
            }
        }
        if (invite) {
            int aff = o ? muc_eff_aff(c, r, o->bare, xd_stanza_from(st)) : AFF_NONE;
            const char *why = NULL;
            xd_cond cond = XD_COND_COUNT;
            if (!o) {
                cond = XD_COND_NOT_ACCEPTABLE;
                why = "only occupants invite";
            } else if (!r->cfg.allowinvites && o->role != ROLE_MODERATOR && aff < AFF_ADMIN) {
                cond = XD_COND_FORBIDDEN;
                why = "invitations are not allowed";
            } else if (!muc_flood_ok(c, o)) {
                cond = XD_COND_RESOURCE_CONSTRAINT;
                why = "too many messages: the room takes fewer per second";
            }
            if (cond != XD_COND_COUNT) {
                xd_free(key);
                xd_route_error(st, cond, why);
                break;
            }
            if (r->cfg.members_only && aff >= AFF_ADMIN) {
                /* An admin's invitation to a members-only room makes a member. */
                xd_jid_t *ij = NULL;
                if (xd_jid_parse(xd_str_c(to), &ij) == 0) {
                    xd_str_t ib = xd_jid_bare_str(ij);
                    char *ibare = xd_strndup(ib.p, ib.len);
                    if (muc_aff_of(r, ibare) == AFF_NONE &&
                        xd_map_count(&r->affs) < (size_t)c->conf->max_affiliations) {
                        muc_aff_set(r, ibare, AFF_MEMBER);
                        muc_room_publish(c, r, r->cfg.persistent);
                    }
                    xd_free(ibare);
                    xd_jid_unref(ij);
                }
            }
            stamps_put(&r->invited, key, muc_now_ms(), MUC_INVITE_TTL_MS,
                       (size_t)c->conf->max_pending_invitations);
        }
        xd_free(key);
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
        muc_send_to(c, b, to);
    }
    xd_free(sender);
    xd_free(sbare);
}

#define MUC_NS_REQUEST "http://jabber.org/protocol/muc#request"
#define MUC_NS_RETRACT "urn:xmpp:message-retract:1"

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
    const char *allow = muc_form_value(form, "muc#request_allow");
    if (allow) {
        /* A moderator's answer. */
        if (o->role != ROLE_MODERATOR) {
            xd_route_error(st, XD_COND_FORBIDDEN, "moderators answer voice requests");
            return;
        }
        const char *who = muc_form_value(form, "muc#roomnick");
        muc_occ_t *v = who ? xd_map_get(&r->by_nick, xd_str_c(who)) : NULL;
        if (muc_form_bool(allow, false) && v && v->role == ROLE_VISITOR) {
            v->role = ROLE_PARTICIPANT;
            muc_occ_changed(c, r, v, o->nick, NULL);
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
    /* The interval holds for the account (r->voice_last), not only for
     * this visit of it. */
    uint64_t now = muc_now_ms(), ivl = (uint64_t)r->cfg.voice_interval * 1000;
    const uint64_t *last = xd_map_get(&r->voice_last, xd_str_c(o->bare));
    uint64_t prev = last && *last > o->voice_ms ? *last : o->voice_ms;
    if (prev && ivl > 0 && now - prev < ivl) {
        xd_route_error(st, XD_COND_RESOURCE_CONSTRAINT,
                       "wait a while before asking for voice again");
        return;
    }
    o->voice_ms = now;
    if (ivl > 0)
        stamps_put(&r->voice_last, o->bare, now, ivl, (size_t)c->conf->max_voice_requesters);
    xd_el_t *b = xd_el_new("message", NULL);
    xd_el_set_attr(b, "from", r->jid);
    xd_el_t *x = xd_el_add_child(b, "x", XD_NS_DATA);
    xd_el_set_attr(x, "type", "form");
    xd_el_add_text(xd_el_add_child(x, "title", NULL), "Voice request");
    xd_el_add_text(xd_el_add_child(x, "instructions", NULL),
                   "To approve this request for voice, select the \"Grant voice to this "
                   "person?\" checkbox and click OK. To skip this request, click the cancel "
                   "button.");
    muc_add_field(x, "FORM_TYPE", "hidden", NULL, MUC_NS_REQUEST);
    muc_add_field(x, "muc#role", "list-single", "Requested role", "participant");
    muc_add_field(x, "muc#jid", "jid-single", "User ID", o->full[0]);
    muc_add_field(x, "muc#roomnick", "text-single", "Room Nickname", o->nick);
    muc_add_field(x, "muc#request_allow", "boolean", "Grant voice to this person?", "false");
    xd_stanza_t *m = xd_el_freeze(b);
    muc_fan_out(c, r, m, FAN_MODERATORS, NULL, false);
    xd_stanza_unref(m);
}

void
muc_room_message(muc_call_t *c, muc_room_t *r, const xd_stanza_t *st, const char *nick)
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
            muc_room_leave(c, r, o, full, st, true);
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
    const char *ft = form ? muc_form_value(form, "FORM_TYPE") : NULL;
    if (!nick && !groupchat && ft && strcmp(ft, MUC_NS_REQUEST) == 0) {
        room_voice_request(c, r, o, st, form);
        return;
    }
    if (!o) {
        xd_route_error(st, XD_COND_NOT_ACCEPTABLE, "only occupants may send messages");
        return;
    }
    if (!muc_flood_ok(c, o)) {
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
        xd_stanza_t *m = muc_msg_from_occ(r, o, st, NULL);
        xd_el_t *b = xd_stanza_edit(m);
        xd_stanza_unref(m);
        if (!xd_el_child(root, "x", XD_NS_MUC_USER))
            xd_el_add_child(b, "x", XD_NS_MUC_USER);
        m = xd_el_freeze(b);
        muc_send_occ(c, m, to);
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
    if (retract && muc_room_archived(c, r)) {
        muc_room_retract(c, r, o, st, retract);
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
        muc_room_event(c, r, XD_MUC_EV_SUBJECT, o->nick, NULL, NULL, r->subject, st);
        if (r->cfg.persistent)
            muc_room_publish(c, r, true);
    }
    /* Archived (a message worth keeping, XEP-0334 hints honoured) under
     * the id stamped on every copy; refused when the archive cannot take
     * it. */
    xd_module_ctx_t *mam = has_body && !xd_el_child(root, "no-store", XD_NS_HINTS) &&
                                   !xd_el_child(root, "no-permanent-store", XD_NS_HINTS)
                               ? muc_room_mam(c, r)
                               : NULL;
    char sid[21];
    bool archive = mam && mod_sortable_id(sid) == 0;
    xd_stanza_t *m = muc_msg_from_occ(r, o, st, archive ? sid : NULL);
    if (archive) {
        xd_jid_t *rj = muc_room_jid(r);
        int rc = rj ? mam_room_store(mam, m, rj, sid) : XD_EINVAL;
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
        muc_room_event(c, r, XD_MUC_EV_MESSAGE, o->nick, NULL, NULL,
                       xd_el_child_text(root, "body", NULL), m);
    muc_fan_out(c, r, m, FAN_ALL, NULL, true);
    if (has_body) /* with a body, a <subject/> is no subject change (XEP-0045 8.1) */
        hist_add(r, m);
    else
        xd_stanza_unref(m);
}

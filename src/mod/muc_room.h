/*
 * muc_room.h — what the files of a multi-user chat room (XEP-0045) share:
 * the room's structures and the helpers they call across files.  Private
 * to the room part of mod_muc (mod_muc.h for the threads):
 *
 *   mod_muc_util.c  small helpers: sending and fan-out, affiliations, data forms,
 *                   lists of roles, an occupant's presence
 *   mod_muc_room.c  room life, presence, entering, entry
 *   mod_muc_msg.c   messages (groupchat, private, invitations, voice requests)
 *   mod_muc_iq.c    IQs: configuration form, affiliations and roles, registration, disco
 *   mod_muc_arch.c  the room's archive (XEP-0313), moderation (XEP-0425), retraction
 *                   and the dispatch of a room's IQs
 */
#ifndef XMPPD_MOD_MUC_ROOM_H
#define XMPPD_MOD_MUC_ROOM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "mod_muc.h"

#include "xmppd/jid.h"
#include "xmppd/module.h"
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
    xd_map_t invited;    /* "invitee\ninviter" (bare JIDs) → uint64_t *: when, muc_now_ms
                          * (the invitations a decline may answer: mod_muc_msg.c) */
    xd_map_t voice_last; /* bare JID → uint64_t *: its last voice request, muc_now_ms (the
                          * interval holds per account, across leaving and entering) */
    bool hist_loading;   /* restored: its history is being completed from its archive
                          * (muc_room_hist_fill); entering sessions wait for it */
    uint64_t fill_token; /* which completion (the room may go and come back meanwhile) */
} muc_room_t;

/* What handling one stanza sent: bytes charged to its sender. */
typedef struct muc_call {
    xd_module_ctx_t *ctx;
    muc_state_t *s;
    const muc_conf_t *conf;
    xd_input_ref_t in;
    size_t bytes;
    bool store;          /* the room's stored state changed */
} muc_call_t;

/* Who a fan-out goes to. */
enum { FAN_ALL, FAN_SEES_JID, FAN_NO_JID, FAN_MODERATORS };

typedef struct pres_extra {
    const int *codes;
    size_t ncodes;
    const char *newnick;    /* 303 */
    const char *actor;      /* kick/ban: the moderator's nick */
    const char *reason;
    const xd_el_t *destroy; /* room destroyed: the <destroy/> to copy */
    int role, aff;          /* -1: the occupant's */
} pres_extra_t;

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
    int rc;
} room_job_t;

/* mod_muc_util.c */
int muc_name_index(const char *const *names, size_t n, const char *v);
void muc_room_event(muc_call_t *c, const muc_room_t *r, int kind, const char *nick,
                    const char *new_nick, const char *actor, const char *text,
                    const xd_stanza_t *st);
void muc_send_to(muc_call_t *c, xd_el_t *b, const char *to);
void muc_send_occ(muc_call_t *c, const xd_stanza_t *st, const muc_occ_t *o);
void muc_fan_out(muc_call_t *c, const muc_room_t *r, const xd_stanza_t *st, int sel,
                 const muc_occ_t *skip, bool live);
/* The presence st of occupant `about` to the others (as muc_fan_out,
 * `about` skipped): a session still getting its occupant list gets it only
 * when `about` was listed to it already (else the list brings about's
 * state when it gets there; one gone meanwhile it never hears of). */
void muc_fan_out_pres(muc_call_t *c, const muc_room_t *r, const xd_stanza_t *st, int sel,
                      const muc_occ_t *about);
char *muc_occ_jid(const muc_room_t *r, const char *nick);
int muc_aff_of(const muc_room_t *r, const char *bare);
const char *muc_reg_nick_of(const muc_room_t *r, const char *bare);
const char *muc_reg_owner_of(const muc_room_t *r, const char *nick);
void muc_reg_set(muc_room_t *r, const char *bare, const char *nick);
void muc_aff_set(muc_room_t *r, const char *bare, int aff);
xd_module_ctx_t *muc_room_mam(const muc_call_t *c, const muc_room_t *r);
bool muc_room_archived(const muc_call_t *c, const muc_room_t *r);
xd_jid_t *muc_room_jid(const muc_room_t *r);
bool muc_flood_ok(muc_call_t *c, muc_occ_t *o);
bool muc_service_admin(const muc_call_t *c, const xd_jid_t *jid);
int muc_eff_aff(const muc_call_t *c, const muc_room_t *r, const char *bare, const xd_jid_t *jid);
int muc_role_for(const muc_room_t *r, int aff);
/* The field `var` of data form x, or NULL; its first value ("" when it
 * has none), or NULL without the field. */
const xd_el_t *muc_form_field(const xd_el_t *x, const char *var);
const char *muc_form_value(const xd_el_t *x, const char *var);
bool muc_form_bool(const char *v, bool def);
/* A list of roles (mod_muc.h) as a mask in the other shapes: the
 * names, space-separated (the stored configuration), and back (what is not
 * a role is skipped); a list-multi field of data form x (false for a value
 * that is not a role; *mask unchanged when the form has no such field; an
 * empty field: no role); a list-multi field to add to form x, the mask's
 * roles as values, the three as options. */
void muc_roles_to_text(int mask, char *out, size_t size);
int muc_roles_from_text(const char *v);
bool muc_roles_from_form(const xd_el_t *x, const char *var, int *mask);
void muc_add_roles_field(xd_el_t *x, const char *var, const char *label, int mask);
void muc_add_status(xd_el_t *x, int code);
xd_el_t *muc_occ_presence(const muc_room_t *r, const muc_occ_t *o, bool unavailable, bool show_jid,
                          const char *full_for_jid, const pres_extra_t *ex, bool self);
bool muc_sees_jid(const muc_room_t *r, const muc_occ_t *viewer);

/* mod_muc_room.c */
void muc_hist_bytes(muc_room_t *r, size_t add, size_t sub);
void muc_hist_resize(muc_room_t *r, size_t cap);
void muc_hist_add_at(muc_room_t *r, xd_stanza_t *st, time_t ts);
void muc_room_publish(muc_call_t *c, muc_room_t *r, bool store);
void muc_room_drop(muc_call_t *c, muc_room_t *r, bool destroyed);
uint64_t muc_now_ms(void);
void muc_broadcast_presence(muc_call_t *c, const muc_room_t *r, muc_occ_t *o, bool unavailable,
                            const pres_extra_t *ex, const pres_extra_t *self_ex);
void muc_occ_remove(muc_call_t *c, muc_room_t *r, muc_occ_t *o, const pres_extra_t *ex);
/* After a change of r->cfg.pbcast: who is announced follows it. */
void muc_pbcast_follow(muc_call_t *c, muc_room_t *r);
bool muc_join_answer(muc_call_t *c, muc_room_t *r, const xd_stanza_t *st);
/* The history is complete (muc_room_hist_fill): the sessions that waited
 * for it at the end of their occupant list get the rest of the list, their
 * own presence, the history and the subject. */
void muc_join_history_ready(muc_call_t *c, muc_room_t *r);
/* Whether session `full`, when still getting its occupant list, waits for
 * what goes to the room now: live (a message: it comes in the history),
 * or the presence of the occupant at index `at` of r->occ that its list
 * has not reached yet (SIZE_MAX: none there). */
bool muc_join_withholds(const muc_room_t *r, const char *full, bool live, size_t at);
void muc_room_leave(muc_call_t *c, muc_room_t *r, muc_occ_t *o, const char *full,
                    const xd_stanza_t *st, bool failed);
muc_room_t *muc_room_find(muc_call_t *c, const char *name);

/* mod_muc_msg.c */
xd_stanza_t *muc_msg_from_occ(const muc_room_t *r, const muc_occ_t *o, const xd_stanza_t *st,
                              const char *sid);
void muc_room_message(muc_call_t *c, muc_room_t *r, const xd_stanza_t *st, const char *nick);

/* mod_muc_iq.c */
void muc_add_field(xd_el_t *x, const char *var, const char *type, const char *label,
                   const char *value);
void muc_add_options(xd_el_t *f, const char *const *vals, size_t n);
void muc_room_disco_info(muc_call_t *c, muc_room_t *r, const xd_stanza_t *st);
void muc_room_job_free(room_job_t *j);
void muc_room_owner_iq(muc_call_t *c, muc_room_t *r, const xd_stanza_t *st, const xd_el_t *q,
                       int aff, bool set);
void muc_occ_changed(muc_call_t *c, muc_room_t *r, muc_occ_t *o, const char *actor,
                     const char *reason);
void muc_aff_follow(muc_call_t *c, muc_room_t *r, const char *bare, int aff, const char *actor,
                    const char *reason);
void muc_room_register_iq(muc_call_t *c, muc_room_t *r, const xd_stanza_t *st, const xd_el_t *q,
                          const char *bare, int myaff, bool set);
void muc_room_admin_iq(muc_call_t *c, muc_room_t *r, const xd_stanza_t *st, const xd_el_t *q,
                       muc_occ_t *me, int myaff, bool set);
muc_occ_t *muc_occ_by_real(const muc_room_t *r, const xd_jid_t *jid);
void muc_iq_forward(muc_call_t *c, const muc_room_t *r, const xd_stanza_t *st,
                    const muc_occ_t *from, const muc_occ_t *to, bool request);

/* mod_muc_arch.c */
void muc_room_retract(muc_call_t *c, muc_room_t *r, const muc_occ_t *o, const xd_stanza_t *st,
                      const xd_el_t *rt);
void muc_room_iq(muc_call_t *c, muc_room_t *r, const xd_stanza_t *st, const char *nick);
/* A room just restored (start, or waking from hibernation) whose archive
 * is on: when its stored history may be short of the archive (not stored
 * whole when it left memory — a crash within history_flush_interval —, or
 * fewer than its history length), the archive's newest messages complete
 * it on the blocking pool (r->hist_loading until then). */
void muc_room_hist_fill(muc_call_t *c, muc_room_t *r, bool whole);

#endif

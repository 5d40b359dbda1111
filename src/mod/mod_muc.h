/*
 * mod_muc.h — multi-user chat (XEP-0045): what the service part
 * (mod_muc.c: the route, the service's disco, the room directory, storage)
 * and the room part (mod_muc_room.c and the files muc_room.h lists: a
 * room's state and protocol, on its owner worker) share.
 *
 * Threads (DESIGN.md 2): a room is owned by worker xd_owner_of(room bare
 * JID).  The service handler runs on the routing worker and posts each
 * stanza for a room to its owner (one inbox message); a room's state
 * (occupants, history, affiliations) is touched there only, without a
 * lock.  What other workers read — the public rooms for disco#items, the
 * stored state of persistent rooms not in memory — is the directory, a
 * map under one mutex, written by the owners when a room's configuration
 * changes.
 */
#ifndef XMPPD_MOD_MOD_MUC_H
#define XMPPD_MOD_MOD_MUC_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "xmppd/input.h"
#include "xmppd/map.h"
#include "xmppd/module.h"
#include "xmppd/owner.h"
#include "xmppd/str.h"

#define MUC_NS_UNIQUE "http://jabber.org/protocol/muc#unique"
#define MUC_NS_ROOMCONFIG "http://jabber.org/protocol/muc#roomconfig"
#define MUC_NS_ROOMINFO "http://jabber.org/protocol/muc#roominfo"
#define MUC_NS_OCCUPANT_ID "urn:xmpp:occupant-id:0"

typedef struct muc_conf {
    char *host;            /* service domain pattern ("conference.@HOST@") */
    char *name;            /* disco identity name */
    char *access_create;   /* access rule: who may create rooms */
    char *access_admin;    /* access rule: administrators of the service */
    int max_users;         /* cap of a room's maxusers (and its default) */
    int history_size;      /* default room history length */
    int max_history_size;  /* cap of a room's history length */
    int max_rooms_per_user; /* rooms one account may own (created, 100); 0: no limit */
    int max_room_name;     /* bytes of a room's local part */
    int max_nick;          /* bytes of a nick */
    int max_affiliations;  /* owners, admins, members and outcasts of a room */
    int join_chunk;        /* occupant presences sent to an entering session per ping */
    bool default_mam;      /* a new room's muc#roomconfig_mam (its archive) */
    /* A new room's other defaults (ejabberd's default_room_options). */
    char *default_lang;                 /* muc#roomconfig_lang ("": none) */
    xd_strlist_t default_getmemberlist; /* muc#roomconfig_getmemberlist: roles */
    bool default_allow_voice_requests;  /* allow_voice_requests */
    uint64_t default_voice_request_min_interval; /* voice_request_min_interval, ms */
    bool default_allow_visitor_status;  /* allow_visitor_status */
    bool default_allow_visitor_nickchange; /* allow_visitor_nickchange */
    bool default_members_by_default;    /* members_by_default */
    uint64_t history_flush_interval;    /* ms between writes of a persistent room's
                                         * history (write-behind); 0: at stop only */
    int max_messages_per_second; /* per occupant; 0: no limit */
    int max_invitations;   /* <invite/>s of one message to a room */
    int max_pending_invitations; /* invitations a room remembers for their declines */
    int max_voice_requesters; /* accounts whose last voice request a room remembers */
    int max_disco_items;   /* rooms one disco#items answer of the service lists (RSM) */
    uint64_t hibernation_timeout; /* ms an empty persistent room stays in memory; 0: ever */
    xd_strlist_t default_presence_broadcast; /* a new room's muc#roomconfig_presencebroadcast */
} muc_conf_t;

/* A room as the directory has it (under muc_state_t.mu). */
typedef struct muc_dirent {
    char *title;      /* roomname, or NULL */
    bool pub;         /* publicroom: listed in disco#items */
    bool persistent;  /* persistentroom */
    bool live;        /* in memory on its owner worker */
    char *creator;    /* bare JID of the creator (max_rooms_per_user) */
    char *stored;     /* the stored state (persistent rooms), or NULL */
} muc_dirent_t;

typedef struct muc_state {
    char *domain;             /* the service's domain */
    pthread_mutex_t mu;       /* guards dir */
    xd_map_t dir;             /* room local part → muc_dirent_t */
    xd_map_t rooms[XD_OWNER_MAX_WORKERS]; /* per owner worker: local part → room (owner only) */
    /* Counters (muc_stats), from every owner worker. */
    _Atomic uint64_t fanouts;       /* stanzas fanned out to occupants */
    _Atomic uint64_t fanout_posts;  /* inbox messages they took (one per other worker) */
    _Atomic uint64_t fanout_copies; /* copies they made (one per session) */
    _Atomic uint64_t join_chunks;   /* pings that paced an occupant list */
    _Atomic uint64_t rooms_live;    /* rooms in memory */
    _Atomic uint64_t history_bytes; /* bytes of their history */
    _Atomic uint64_t hibernations;  /* empty persistent rooms taken out of memory */
    _Atomic uint64_t wakeups;       /* hibernated rooms brought back */
    _Atomic uint64_t flood_refusals; /* messages refused by max_messages_per_second */
    _Atomic uint64_t history_flushes; /* writes of a live room's history (write-behind) */
    _Atomic uint64_t history_fills; /* restored rooms' histories completed from the archive */
} muc_state_t;

/* A stanza on its way to its room's owner. */
typedef struct muc_msg {
    xd_stanza_t *st;       /* the stanza (a reference) */
    xd_input_ref_t in;     /* the sender's stream, held until the room handled it */
} muc_msg_t;

/* mod_muc_room.c: handles a stanza to a room (to has a local part) on the
 * room's owner worker; takes st.  `in` is the sender's stream, charged
 * for the copies sent; held: the caller holds it (posted from another
 * worker), released when done (after a store).  Not held: the stanza is
 * handled inline, on the sender's own worker, and a store holds the
 * stream by itself (xd_module_submit). */
void muc_room_stanza(xd_module_ctx_t *ctx, xd_stanza_t *st, xd_input_ref_t in, bool held);
/* Whether v is a language tag for muc#roomconfig_lang (RFC 5646's
 * letters, digits and hyphens, at most 35; mod_muc_iq.c). */
bool muc_lang_ok(const char *v);
/* Frees every room of the instance (stop: no handler runs any more). */
void muc_rooms_free(muc_state_t *s);
/* Stop: every persistent room in memory puts its stored state, history
 * included, in the directory; their names (NULL-terminated, or NULL when
 * none: xd_free each and the array) for muc_stop to write. */
char **muc_rooms_stash(muc_state_t *s);
/* TICK on an owner worker: hibernates that worker's persistent rooms that
 * have been empty for hibernation_timeout, and writes the history of those
 * whose history changed history_flush_interval ago or more (mod_muc_room.c). */
void muc_rooms_tick(xd_module_ctx_t *ctx, uint64_t now_ms);

/* Lists of room roles, in every shape they come in (the service's
 * default_presence_broadcast and default_getmemberlist, a room form's
 * presencebroadcast and getmemberlist, a stored room's; muc_room.h for the
 * room's), have one mapping (mod_muc_util.c): a list holds moderator,
 * participant and visitor; as a mask, 1 << ROLE_* (muc_room.h). */
/* 1 << ROLE_* of name when a list of roles may hold it, else 0. */
int muc_role_bit(xd_str_t name);
/* The roles of list l as a mask; -1 when one is not a role. */
int muc_role_mask(const xd_strlist_t *l);

/* mod_muc.c: directory and storage. */
/* Publishes room `name`'s directory entry (creates it); stored: the new
 * stored state (NULL: none, the room is not persistent), taken. */
void muc_dir_update(muc_state_t *s, const char *name, const char *title, bool pub,
                    bool persistent, bool live, const char *creator, char *stored);
/* Drops room `name` from the directory. */
void muc_dir_remove(muc_state_t *s, const char *name);
/* A copy of the stored state of room `name` (NULL: none). */
char *muc_dir_stored(muc_state_t *s, const char *name);
/* Rooms in the directory created by `bare`. */
size_t muc_dir_count_creator(muc_state_t *s, const char *bare);
/* Writes room `name`'s directory state to the database (a row, or none
 * when it is not persistent), on the blocking pool; releases `in` when
 * the write is done. */
void muc_store(xd_module_ctx_t *ctx, const char *name, xd_input_ref_t in);
/* As muc_store; flush: the history's write-behind (history_flushes counts
 * it once it is written). */
void muc_store_ex(xd_module_ctx_t *ctx, const char *name, xd_input_ref_t in, bool flush);

#endif

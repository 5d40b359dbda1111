/*
 * mod_muc.c — multi-user chat (XEP-0045), the service: its domain
 * (`host`, default conference.@HOST@), its disco#info/items, the room
 * directory read by every worker, the stored persistent rooms, and the
 * route that hands each stanza for a room to the room's owner worker
 * (mod_muc.h).  The rooms themselves are mod_muc_room.c and the files
 * muc_room.h lists.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mod_muc.h"
#include "mod_util.h"

#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/jid.h"
#include "xmppd/log.h"
#include "xmppd/ns.h"
#include "xmppd/route.h"
#include "xmppd/stanza.h"
#include "xmppd/storage.h"

/* ---- options ----------------------------------------------------------------------------------- */

/* A list of room roles (default_presence_broadcast). */
static int
muc_role_prep(xd_str_t in, char **out)
{
    if (!muc_role_bit(in))
        return XD_EINVAL;
    *out = xd_strndup(in.p, in.len);
    return 0;
}

static int
muc_roles_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field)
{
    return xd_opt_get_names(ctx, node, "role (moderator, participant or visitor)", muc_role_prep,
                            true, field);
}

static void
muc_roles_free(void *field)
{
    xd_strlist_free(field);
}

static const xd_opt_custom_t muc_roles_type = { "list of roles", muc_roles_parse,
                                                muc_roles_free };

#define C_ muc_conf_t
static const xd_opt_t muc_opts[] = {
    XD_OPT_STRING("host", C_, host, "conference.@HOST@",
                  "Domain of the multi-user chat service; `@HOST@` is replaced by the served "
                  "host."),
    XD_OPT_STRING("name", C_, name, "Chatrooms",
                  "Name of the service in its disco#info identity."),
    XD_OPT_STRING("access_create", C_, access_create, "all",
                  "Access rule: who may create rooms (others may only enter existing ones; "
                  "a refused creation is not-allowed)."),
    XD_OPT_STRING("access_admin", C_, access_admin, "none",
                  "Access rule: administrators of the service, who act as an owner of every "
                  "room (enter locked, members-only and password rooms, configure, destroy, "
                  "change affiliations) and may always create rooms."),
    XD_OPT_INT("max_users", C_, max_users, "200", 1, 1000000,
               "Occupants a room holds at most: the default and the largest value of a room's "
               "`muc#roomconfig_maxusers`.  One more is refused with service-unavailable "
               "(owners and admins of the room still enter)."),
    XD_OPT_INT("history_size", C_, history_size, "20", 0, 1000,
               "Messages a new room keeps for the history sent on entering (the room's "
               "`muc#roomconfig_historylength` default)."),
    XD_OPT_INT("max_history_size", C_, max_history_size, "100", 0, 10000,
               "The largest history length a room's owner may configure."),
    XD_OPT_INT("max_rooms_per_user", C_, max_rooms_per_user, "100", 0, 1000000,
               "Rooms one account may have created (live or stored); one more is refused "
               "with resource-constraint (service administrators are not bound).  0: no "
               "limit.  The default bounds what one account keeps in memory and storage "
               "(persistent rooms, each with its history) and matches ejabberd's default "
               "bound of what one account may be in (`max_user_conferences`, 100; ejabberd "
               "and Prosody have no creation cap of their own, Prosody's "
               "`restrict_room_creation` limits who creates)."),
    XD_OPT_INT("max_room_name", C_, max_room_name, "256", 1, 1023,
               "Bytes of a room's name (the local part of its JID); a longer one is "
               "refused with not-acceptable."),
    XD_OPT_INT("max_nick", C_, max_nick, "64", 1, 1023,
               "Bytes of an occupant's nick; a longer one is refused with not-acceptable."),
    XD_OPT_INT("max_affiliations", C_, max_affiliations, "10000", 1, 10000000,
               "Owners, admins, members and outcasts of one room together; one more is "
               "refused with resource-constraint (a persistent room stores them all on "
               "every change)."),
    XD_OPT_INT("join_chunk", C_, join_chunk, "200", 1, 100000,
               "Occupant presences an entering session gets at once.  A longer occupant list "
               "goes in chunks of this many, each after the session answered an XMPP ping "
               "(XEP-0199) the room sent behind the chunk before, so that a room of 10,000 "
               "does not put 10,000 presences in the client's queues at once (beyond the "
               "listener's `max_queue` or `sm_max_unacked` the stream would be closed).  "
               "Meanwhile the session gets the presence changes of the occupants listed to it "
               "(the others come as they are when the list gets to them: each occupant once, "
               "none that left before) but no messages; its own presence, the history and the "
               "subject end the list as usual."),
    XD_OPT_BOOL("default_mam", C_, default_mam, "false",
                "Whether a new room keeps an archive (XEP-0313 on the room's JID, the room "
                "configuration's `muc#roomconfig_mam`, ejabberd's `mam` room option).  The "
                "archive is mod_mam's (its table and writer): it needs mod_mam and a database "
                "on the host; without them no room is archived."),
    XD_OPT_STRING("default_lang", C_, default_lang, NULL,
                  "A new room's language of discussion (its `muc#roomconfig_lang`, shown as "
                  "`muc#roominfo_lang` in its disco#info; ejabberd's `lang` room option): a "
                  "language tag such as `en` or `pt-BR`.  Unset or empty: none."),
    XD_OPT_CUSTOM("default_getmemberlist", C_, default_getmemberlist,
                  "[moderator, participant, visitor]", &muc_roles_type,
                       "Roles that may get a new room's member list (its "
                       "`muc#roomconfig_getmemberlist`): an occupant of one of them may ask "
                       "for the members (`affiliation='member'`); in a semi-anonymous room "
                       "only those who see real JIDs (moderators) may, and admins and owners "
                       "always may."),
    XD_OPT_BOOL("default_allow_voice_requests", C_, default_allow_voice_requests, "true",
                "Whether visitors of a new room may ask for voice (XEP-0045 7.13; the room's "
                "`allow_voice_requests`, ejabberd's option of that name).  When not, a "
                "request is refused with forbidden."),
    XD_OPT_DURATION("default_voice_request_min_interval", C_,
                    default_voice_request_min_interval, "30m",
                    "The least time between two voice requests of one account in a new "
                    "room (its `voice_request_min_interval`, in seconds in the form); one "
                    "sooner is refused with resource-constraint.  0: no limit; at most a "
                    "year."),
    XD_OPT_BOOL("default_allow_visitor_status", C_, default_allow_visitor_status, "true",
                "Whether the status text (`<status/>`) of a visitor goes to the other "
                "occupants of a new room (its `allow_visitor_status`); when not, the room "
                "takes it off the visitor's presence."),
    XD_OPT_BOOL("default_allow_visitor_nickchange", C_, default_allow_visitor_nickchange,
                "true",
                "Whether visitors of a new room may change their nick (its "
                "`allow_visitor_nickchange`); when not, a change is refused with "
                "not-allowed."),
    XD_OPT_BOOL("default_members_by_default", C_, default_members_by_default, "false",
                "Whether an unaffiliated occupant entering a new room that is moderated "
                "gets voice (enters as a participant; the room's `members_by_default`).  "
                "false follows XEP-0045 (a visitor, who asks for voice); ejabberd's "
                "default is true."),
    XD_OPT_DURATION("history_flush_interval", C_, history_flush_interval, "1s",
                    "How soon new messages of a persistent room's history (the last "
                    "`historylength` sent to newcomers) reach its stored state: a room whose "
                    "history changed is written (one row, with its configuration and "
                    "affiliations) at most this often, on its worker's one-second tick, so "
                    "a crash or `kill -9` loses at most that much of it.  0: the history is "
                    "written only when the server stops or the room hibernates (a crash "
                    "loses what came since).  A room with an archive (`muc#roomconfig_mam`) "
                    "loses none: restored after a crash, its history is completed from the "
                    "archive."),
    XD_OPT_INT("max_messages_per_second", C_, max_messages_per_second, "0", 0, 1000000,
               "Messages (groupchat and private) one occupant may send per second, with a "
               "burst of as many; one more is refused with resource-constraint and not "
               "delivered.  0: no limit."),
    XD_OPT_INT("max_invitations", C_, max_invitations, "10", 1, 1000,
               "Mediated invitations (`<invite/>`, XEP-0045 7.8.2) one message to a room "
               "may hold; a message with more is refused with not-acceptable and none is "
               "sent.  Each invitation also counts as a message against "
               "`max_messages_per_second`: past it the rest of the message is refused with "
               "resource-constraint."),
    XD_OPT_INT("max_pending_invitations", C_, max_pending_invitations, "1000", 1, 1000000,
               "Invitations a room remembers (for a day) so that their invitee may decline "
               "them: a decline (`<decline/>`) is relayed only to someone who invited its "
               "sender, once per invitation, and refused with not-acceptable otherwise, so "
               "that nobody makes the room send declines to third parties.  Past this many "
               "the oldest is forgotten (its decline is refused)."),
    XD_OPT_INT("max_voice_requesters", C_, max_voice_requesters, "1000", 1, 1000000,
               "Accounts whose last voice request a room remembers, so that a room's "
               "`voice_request_min_interval` holds for an account (all its sessions and "
               "nicks, across leaving and entering again) and not for one visit.  Past this "
               "many, the entries older than the interval go, and if none is, the oldest "
               "(that account may ask again at once)."),
    XD_OPT_INT("max_disco_items", C_, max_disco_items, "100", 1, 100000,
               "Rooms one disco#items answer of the service lists at most (XEP-0045 6.3), "
               "in the order of their JIDs.  A client pages with result set management "
               "(XEP-0059: `<set xmlns='http://jabber.org/protocol/rsm'>` with `<max/>`, "
               "`<after/>` or `<before/>` a room JID, and `<max>0</max>` for the count "
               "alone); the answer's `<set/>` has `<first/>`, `<last/>` and `<count/>`.  A "
               "request without `<set/>` gets the first this many, with a `<set/>` when "
               "there are more."),
    XD_OPT_DURATION("hibernation_timeout", C_, hibernation_timeout, "0",
                    "A persistent room nobody has been in for this long leaves memory "
                    "(configuration, affiliations, subject and history go to its stored "
                    "state and the database) and comes back on first use: an entering, a "
                    "disco or configuration request, a message.  0: rooms stay in memory."),
    XD_OPT_CUSTOM("default_presence_broadcast", C_, default_presence_broadcast,
                  "[moderator, participant, visitor]", &muc_roles_type,
                       "Roles whose presence a new room broadcasts (its "
                       "`muc#roomconfig_presencebroadcast`, ejabberd's `presence_broadcast` "
                       "room option): an occupant of another role is not announced to the "
                       "others (its entering, changes and leaving reach its own sessions "
                       "only) and is not in the occupant list a newcomer gets.  A big room "
                       "of listeners, e.g. `[moderator, participant]` with visitors entering "
                       "a moderated room, then costs each entering a presence to the "
                       "broadcast roles only instead of one to every occupant."),
    XD_OPT_END,
};
#undef C_

/* ---- storage ----------------------------------------------------------------------------------- */

static const char *const muc_mig1[] = {
    "CREATE TABLE muc_room ("
    " host {key} NOT NULL,"
    " name {key} NOT NULL,"
    " state {text} NOT NULL,"
    " updated_at {int} NOT NULL,"
    " PRIMARY KEY (host, name))",
    NULL,
};

static const xd_db_migration_t muc_migrations[] = {
    { 1, NULL, muc_mig1 },
    { 0, NULL, NULL },
};

static const xd_module_schema_t muc_schemas[] = {
    { "mod_muc", muc_migrations },
    { NULL, NULL },
};

/* ---- directory --------------------------------------------------------------------------------- */

static void
dirent_free(void *v)
{
    muc_dirent_t *e = v;
    if (!e)
        return;
    xd_free(e->title);
    xd_free(e->creator);
    xd_free(e->stored);
    xd_free(e);
}

void
muc_dir_update(muc_state_t *s, const char *name, const char *title, bool pub, bool persistent,
               bool live, const char *creator, char *stored)
{
    pthread_mutex_lock(&s->mu);
    muc_dirent_t *e = xd_map_get(&s->dir, xd_str_c(name));
    if (!e) {
        e = xd_new(muc_dirent_t);
        xd_map_put(&s->dir, xd_str_c(name), e);
    }
    xd_free(e->title);
    e->title = title && *title ? xd_strdup(title) : NULL;
    e->pub = pub;
    e->persistent = persistent;
    e->live = live;
    if (creator && (!e->creator || strcmp(e->creator, creator) != 0)) {
        xd_free(e->creator);
        e->creator = xd_strdup(creator);
    }
    xd_free(e->stored);
    e->stored = stored;
    pthread_mutex_unlock(&s->mu);
}

void
muc_dir_remove(muc_state_t *s, const char *name)
{
    pthread_mutex_lock(&s->mu);
    dirent_free(xd_map_del(&s->dir, xd_str_c(name)));
    pthread_mutex_unlock(&s->mu);
}

char *
muc_dir_stored(muc_state_t *s, const char *name)
{
    pthread_mutex_lock(&s->mu);
    muc_dirent_t *e = xd_map_get(&s->dir, xd_str_c(name));
    char *out = e && e->stored ? xd_strdup(e->stored) : NULL;
    pthread_mutex_unlock(&s->mu);
    return out;
}

struct count_arg {
    const char *bare;
    size_t n;
};

static int
count_one(void *arg, const char *key, void *val)
{
    (void)key;
    struct count_arg *c = arg;
    muc_dirent_t *e = val;
    if (e->creator && strcmp(e->creator, c->bare) == 0)
        c->n++;
    return 0;
}

size_t
muc_dir_count_creator(muc_state_t *s, const char *bare)
{
    struct count_arg c = { bare, 0 };
    pthread_mutex_lock(&s->mu);
    xd_map_foreach(&s->dir, count_one, &c);
    pthread_mutex_unlock(&s->mu);
    return c.n;
}

/* ---- storing a room ---------------------------------------------------------------------------- */

typedef struct muc_save {
    muc_state_t *s;
    char *name;          /* the room's local part */
    xd_input_ref_t in;   /* released when written */
    bool flush;          /* the history's write-behind: counted once written */
    int rc;              /* the transaction's result */
} muc_save_t;

/* In the write transaction: the directory is read after the database's
 * write lock is taken, so of two saves of one room the one that commits
 * last writes the newest state. */
static int
muc_save_tx(xd_db_conn_t *c, void *arg)
{
    muc_save_t *j = arg;
    char *state = muc_dir_stored(j->s, j->name);
    xd_db_val_t key[2] = { XD_DB_V_CSTR(j->s->domain), XD_DB_V_CSTR(j->name) };
    int rc = xd_db_query(c, "DELETE FROM muc_room WHERE host = ? AND name = ?", key, 2, NULL,
                         NULL);
    if (rc == 0 && state) {
        xd_db_val_t row[4] = { XD_DB_V_CSTR(j->s->domain), XD_DB_V_CSTR(j->name),
                               XD_DB_V_CSTR(state), XD_DB_V_INT((int64_t)time(NULL)) };
        rc = xd_db_query(c,
                         "INSERT INTO muc_room (host, name, state, updated_at) "
                         "VALUES (?, ?, ?, ?)",
                         row, 4, NULL, NULL);
    }
    xd_free(state);
    return rc;
}

static void
muc_save_work(xd_module_ctx_t *ctx, void *arg)
{
    muc_save_t *j = arg;
    xd_db_t *db = xd_module_db(ctx);
    j->rc = db ? xd_db_tx(db, muc_save_tx, j) : 0;
}

static void
muc_save_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    (void)ctx;
    muc_save_t *j = arg;
    if (status != 0 || j->rc != 0)
        XD_LOG(NULL, XD_ERROR, "muc room not stored", "room=%s@%s err=%s", j->name,
               j->s->domain, xd_strerror(status ? status : j->rc));
    else if (j->flush)
        atomic_fetch_add_explicit(&j->s->history_flushes, 1, memory_order_relaxed);
    xd_input_release(j->in);
    xd_free(j->name);
    xd_free(j);
}

void
muc_store_ex(xd_module_ctx_t *ctx, const char *name, xd_input_ref_t in, bool flush)
{
    muc_save_t *j = xd_new(muc_save_t);
    *j = (muc_save_t){ .s = xd_module_state(ctx), .name = xd_strdup(name), .in = in,
                       .flush = flush };
    int rc = xd_module_submit(ctx, muc_save_work, muc_save_done, j);
    if (rc != 0) {
        XD_LOG(NULL, XD_ERROR, "muc room not stored", "room=%s@%s err=%s", name,
               j->s->domain, xd_strerror(rc));
        xd_input_release(in);
        xd_free(j->name);
        xd_free(j);
    }
}

void
muc_store(xd_module_ctx_t *ctx, const char *name, xd_input_ref_t in)
{
    muc_store_ex(ctx, name, in, false);
}

/* Reads the stored rooms into the directory (start: off the loops). */
static int
load_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    muc_state_t *s = arg;
    if (ncols < 2 || cols[0].type != XD_DB_TEXT || cols[1].type != XD_DB_TEXT)
        return 0;
    char *name = xd_strndup(cols[0].s.p, cols[0].s.len);
    char *state = xd_strndup(cols[1].s.p, cols[1].s.len);
    xd_el_t *root = NULL;
    if (xd_el_parse(state, strlen(state), &root) == 0) {
        const xd_el_t *cfg = xd_el_child(root, "config", NULL);
        const char *pub = cfg ? xd_el_attr(cfg, "public") : NULL;
        muc_dir_update(s, name, cfg ? xd_el_attr(cfg, "title") : NULL,
                       pub && strcmp(pub, "1") == 0, true, false, xd_el_attr(root, "creator"),
                       state);
        state = NULL;
        xd_el_free(root);
    } else {
        XD_LOG(NULL, XD_ERROR, "muc stored room unreadable", "room=%s@%s", name, s->domain);
    }
    xd_free(state);
    xd_free(name);
    return 0;
}

static int
muc_load(xd_module_ctx_t *ctx, muc_state_t *s)
{
    xd_db_t *db = xd_module_db(ctx);
    if (!db)
        return 0;
    xd_db_conn_t *c = NULL;
    int rc = xd_db_acquire(db, &c);
    if (rc != 0)
        return rc;
    xd_db_val_t key[1] = { XD_DB_V_CSTR(s->domain) };
    rc = xd_db_query(c, "SELECT name, state FROM muc_room WHERE host = ?", key, 1, load_row, s);
    xd_db_release(c);
    return rc;
}

/* ---- the service's own stanzas ----------------------------------------------------------------- */

struct items_arg {
    const char *domain;
    char **jids;         /* the public rooms' JIDs */
    size_t n, cap;
};

static int
item_jid(void *arg, const char *key, void *val)
{
    struct items_arg *a = arg;
    muc_dirent_t *e = val;
    if (!e->pub)
        return 0;
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->jids = xd_realloc(a->jids, a->cap * sizeof *a->jids);
    }
    a->jids[a->n++] = xd_asprintf("%s@%s", key, a->domain);
    return 0;
}

static int
jid_cmp(const void *x, const void *y)
{
    return strcmp(*(char *const *)x, *(char *const *)y);
}

/* The index of the first of the n sorted jids that is greater than id
 * (or not less than it: !after). */
static size_t
jids_bound(char *const *jids, size_t n, const char *id, bool after)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int d = strcmp(jids[mid], id);
        if (d < 0 || (after && d == 0))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The service's disco#items: its public rooms, a page of at most
 * max_disco_items in the order of their JIDs (XEP-0059: the JIDs are the
 * ids; after/before are key bounds, so a page still follows when the room
 * it names is gone). */
static void
service_items(xd_module_ctx_t *ctx, xd_stanza_t *st, const xd_el_t *q)
{
    muc_state_t *s = xd_module_state(ctx);
    const muc_conf_t *c = xd_module_opts(ctx);
    const xd_el_t *set = xd_el_child(q, "set", XD_NS_RSM);
    size_t max = (size_t)c->max_disco_items;
    const char *after = NULL, *before = NULL;
    bool back = false;
    if (set) {
        const char *ms = xd_el_child_text(set, "max", XD_NS_RSM);
        if (ms) {
            char *end = NULL;
            long long v = strtoll(ms, &end, 10);
            if (!*ms || *end || v < 0) {
                xd_route_error(st, XD_COND_BAD_REQUEST, "<max/> is a number");
                return;
            }
            if ((unsigned long long)v < max)
                max = (size_t)v;
        }
        after = xd_el_child_text(set, "after", XD_NS_RSM);
        const xd_el_t *b = xd_el_child(set, "before", XD_NS_RSM);
        back = b != NULL;
        before = b ? xd_el_text(b) : NULL;
        after = after && *after ? after : NULL;
        before = before && *before ? before : NULL;
    }
    struct items_arg a = { .domain = s->domain };
    pthread_mutex_lock(&s->mu);
    xd_map_foreach(&s->dir, item_jid, &a);
    pthread_mutex_unlock(&s->mu);
    if (a.n)
        qsort(a.jids, a.n, sizeof *a.jids, jid_cmp);
    size_t from, to;
    if (back) {
        to = before ? jids_bound(a.jids, a.n, before, false) : a.n;
        from = to > max ? to - max : 0;
    } else {
        from = after ? jids_bound(a.jids, a.n, after, true) : 0;
        to = a.n - from > max ? from + max : a.n;
    }
    xd_el_t *b = xd_iq_result_builder(st);
    xd_el_t *rq = xd_el_add_child(b, "query", XD_NS_DISCO_ITEMS);
    for (size_t i = from; i < to; i++) {
        xd_el_t *it = xd_el_add_child(rq, "item", NULL);
        xd_el_set_attr(it, "jid", a.jids[i]);
        /* Its name as the directory has it now (NULL: gone meanwhile). */
        size_t at = strlen(a.jids[i]) - strlen(s->domain) - 1;
        char *name = xd_strndup(a.jids[i], at);
        pthread_mutex_lock(&s->mu);
        muc_dirent_t *e = xd_map_get(&s->dir, xd_str_c(name));
        char *title = e && e->title ? xd_strdup(e->title) : NULL;
        pthread_mutex_unlock(&s->mu);
        xd_el_set_attr(it, "name", title ? title : name);
        xd_free(title);
        xd_free(name);
    }
    if (set || to - from < a.n) {
        xd_el_t *rs = xd_el_add_child(rq, "set", XD_NS_RSM);
        if (to > from) {
            char ix[32];
            snprintf(ix, sizeof ix, "%zu", from);
            xd_el_t *first = xd_el_add_child(rs, "first", XD_NS_RSM);
            xd_el_set_attr(first, "index", ix);
            xd_el_add_text(first, a.jids[from]);
            xd_el_add_text(xd_el_add_child(rs, "last", XD_NS_RSM), a.jids[to - 1]);
        }
        char cnt[32];
        snprintf(cnt, sizeof cnt, "%zu", a.n);
        xd_el_add_text(xd_el_add_child(rs, "count", XD_NS_RSM), cnt);
    }
    for (size_t i = 0; i < a.n; i++)
        xd_free(a.jids[i]);
    xd_free(a.jids);
    xd_route_take(xd_el_freeze(b));
}

static void
service_iq(xd_module_ctx_t *ctx, xd_stanza_t *st)
{
    const muc_conf_t *c = xd_module_opts(ctx);
    const xd_el_t *root = xd_stanza_root(st);
    const char *type = xd_el_attr(root, "type");
    const xd_el_t *q = xd_el_first_child(root);
    if (type && strcmp(type, "get") == 0 && q && xd_el_is(q, "query", XD_NS_DISCO_INFO) &&
        !xd_el_attr(q, "node")) {
        xd_el_t *b = xd_iq_result_builder(st);
        xd_el_t *r = xd_el_add_child(b, "query", XD_NS_DISCO_INFO);
        xd_el_t *id = xd_el_add_child(r, "identity", NULL);
        xd_el_set_attr(id, "category", "conference");
        xd_el_set_attr(id, "type", "text");
        xd_el_set_attr(id, "name", c->name);
        static const char *const feats[] = { XD_NS_DISCO_INFO, XD_NS_DISCO_ITEMS, XD_NS_MUC,
                                             MUC_NS_UNIQUE, MUC_NS_OCCUPANT_ID, XD_NS_PING,
                                             XD_NS_RSM, NULL };
        for (size_t i = 0; feats[i]; i++)
            xd_el_set_attr(xd_el_add_child(r, "feature", NULL), "var", feats[i]);
        xd_route_take(xd_el_freeze(b));
    } else if (type && strcmp(type, "get") == 0 && q && xd_el_is(q, "query", XD_NS_DISCO_ITEMS) &&
               !xd_el_attr(q, "node")) {
        service_items(ctx, st, q);
    } else if (type && strcmp(type, "get") == 0 && q && xd_el_is(q, "unique", MUC_NS_UNIQUE)) {
        /* A name nobody has: 120 random bits. */
        char id[21];
        if (mod_random_id(id) != 0) {
            xd_route_error(st, XD_COND_INTERNAL_SERVER_ERROR, NULL);
        } else {
            for (char *p = id; *p; p++) /* the local part is case-folded: lower case only */
                if (*p >= 'A' && *p <= 'Z')
                    *p = (char)(*p - 'A' + 'a');
            xd_el_t *b = xd_iq_result_builder(st);
            xd_el_add_text(xd_el_add_child(b, "unique", MUC_NS_UNIQUE), id);
            xd_route_take(xd_el_freeze(b));
        }
    } else if (type && strcmp(type, "get") == 0 && q && xd_el_is(q, "ping", XD_NS_PING)) {
        xd_route_take(xd_iq_result(st));
    } else if (xd_iq_is_request(root)) {
        xd_route_error(st, XD_COND_SERVICE_UNAVAILABLE, NULL);
    }
    xd_stanza_unref(st);
}

/* ---- the route --------------------------------------------------------------------------------- */

static void
muc_post_run(xd_module_ctx_t *ctx, void *arg)
{
    muc_msg_t *m = arg;
    xd_stanza_t *st = m->st;
    xd_input_ref_t in = m->in;
    xd_free(m);
    /* What the room starts for the stanza (an archive write for a private
     * message's recipient, say) holds the sender as on its own worker. */
    xd_input_ref_t prev = xd_input_lend(in);
    muc_room_stanza(ctx, st, in, true);
    xd_input_unlend(prev);
}

/* Runs on the routing worker; owns st. */
static void
muc_route(xd_module_ctx_t *ctx, xd_stanza_t *st, void *arg)
{
    (void)arg;
    const xd_jid_t *to = xd_stanza_to(st);
    const xd_jid_t *from = xd_stanza_from(st);
    const xd_el_t *root = xd_stanza_root(st);
    if (!to || !from) {
        xd_stanza_unref(st);
        return;
    }
    xd_str_t local = xd_jid_local(to);
    if (local.len == 0) {
        if (xd_stanza_kind_of(root) == XD_STANZA_IQ)
            service_iq(ctx, st);
        else {
            const char *type = xd_el_attr(root, "type");
            if (xd_stanza_kind_of(root) == XD_STANZA_MESSAGE && (!type || strcmp(type, "error")))
                xd_route_error(st, XD_COND_SERVICE_UNAVAILABLE, NULL);
            xd_stanza_unref(st);
        }
        return;
    }
    xd_str_t bare = xd_jid_bare_str(to);
    unsigned w = xd_owner_of_n(bare.p, bare.len);
    if (xd_owner_self() == (int)w) {
        muc_room_stanza(ctx, st, xd_input_current(), false);
        return;
    }
    /* The sender's stream waits until the room has handled the stanza, so
     * that what the room routes for it comes before the answer to the
     * sender's next stanza (RFC 6120 10.1; a round trip is a barrier). */
    muc_msg_t *m = xd_new(muc_msg_t);
    m->st = st;
    m->in = xd_input_hold();
    int rc = xd_module_post(ctx, w, muc_post_run, m);
    if (rc != 0) {
        xd_input_release(m->in);
        xd_free(m);
        xd_route_error(st, XD_COND_SERVICE_UNAVAILABLE, "the service is stopping");
        xd_stanza_unref(st);
    }
}

/* ---- statistics -------------------------------------------------------------------------------- */

static int
muc_stats_cmd(xd_cmd_call_t *call)
{
    xd_module_ctx_t *ctx = xd_module_cmd_instance(call, "mod_muc", call->args[0].text);
    if (!ctx)
        return XD_ENOTFOUND;
    muc_state_t *s = xd_module_state(ctx);
    static const char *const names[] = { "fanouts",       "fanout_posts", "fanout_copies",
                                         "join_chunks",   "rooms_live",   "history_bytes",
                                         "hibernations",  "wakeups",      "flood_refusals",
                                         "history_flushes", "history_fills" };
    enum { N = sizeof names / sizeof *names };
    uint64_t v[N] = { atomic_load(&s->fanouts),       atomic_load(&s->fanout_posts),
                      atomic_load(&s->fanout_copies), atomic_load(&s->join_chunks),
                      atomic_load(&s->rooms_live),    atomic_load(&s->history_bytes),
                      atomic_load(&s->hibernations),  atomic_load(&s->wakeups),
                      atomic_load(&s->flood_refusals), atomic_load(&s->history_flushes),
                      atomic_load(&s->history_fills) };
    for (size_t i = 0; i < N; i++)
        xd_cmd_add(call, "%s %llu", names[i], (unsigned long long)v[i]);
    xd_module_release(ctx);
    return 0;
}

static const xd_cmd_arg_t muc_stats_args[] = {
    { "host", XD_CMD_HOST, "the served host whose service to show" },
};

static const xd_cmd_t muc_stats = {
    .name = "muc_stats",
    .doc = "counters of a host's multi-user chat service",
    .longdoc = "fanouts: stanzas a room sent to its occupants; fanout_posts: the inbox messages "
               "they took (one per destination worker other than the room's, whatever the "
               "number of occupants there); fanout_copies: the copies delivered (one per "
               "occupant session); join_chunks: pings that paced an entering session's "
               "occupant list (join_chunk); rooms_live: rooms in memory; history_bytes: the "
               "bytes of their history; hibernations and wakeups: persistent rooms that left "
               "memory (hibernation_timeout) and came back; flood_refusals: messages refused "
               "by max_messages_per_second; history_flushes: writes of a persistent room's "
               "history (history_flush_interval); history_fills: restored rooms whose join "
               "history was completed from the room's archive (after a crash within "
               "history_flush_interval, or a stored history shorter than the archive).",
    .args = muc_stats_args,
    .nargs = 1,
    .result = XD_CMD_RES_LIST,
    .fn = muc_stats_cmd,
};

/* ---- module ------------------------------------------------------------------------------------ */

/* TICK: every owner worker hibernates its idle rooms. */
static int
muc_tick(xd_module_ctx_t *ctx, xd_hook_tick_t *ev, void *arg)
{
    (void)arg;
    const muc_conf_t *c = xd_module_opts(ctx);
    if ((c->hibernation_timeout || c->history_flush_interval) && xd_owner_self() >= 0)
        muc_rooms_tick(ctx, ev->now_ms);
    return XD_HOOK_OK;
}

static void
muc_stop(xd_module_ctx_t *ctx)
{
    muc_state_t *s = xd_module_state(ctx);
    if (!s)
        return;
    /* The history of the persistent rooms in memory goes to the database
     * with the rest of their state (the loops are done: blocking is fine). */
    char **names = muc_rooms_stash(s);
    xd_db_t *db = xd_module_db(ctx);
    for (size_t i = 0; names && names[i]; i++) {
        muc_save_t j = { .s = s, .name = names[i] };
        int rc = db ? xd_db_tx(db, muc_save_tx, &j) : 0;
        if (rc != 0)
            XD_LOG(NULL, XD_ERROR, "muc room not stored", "room=%s@%s err=%s", names[i],
                   s->domain, xd_strerror(rc));
        xd_free(names[i]);
    }
    xd_free(names);
    muc_rooms_free(s);
    xd_map_free(&s->dir, dirent_free);
    pthread_mutex_destroy(&s->mu);
    xd_free(s->domain);
    xd_free(s);
}

/* The service defaults the option table cannot check by itself. */
static int
muc_conf_check(xd_module_ctx_t *ctx, const muc_conf_t *c)
{
    if (c->default_lang && *c->default_lang && !muc_lang_ok(c->default_lang))
        return xd_module_fail(ctx, XD_EINVAL, "default_lang: \"%s\" is no language tag",
                              c->default_lang);
    return 0;
}

static int
muc_start(xd_module_ctx_t *ctx)
{
    const muc_conf_t *c = xd_module_opts(ctx);
    int rc = muc_conf_check(ctx, c);
    if (rc != 0)
        return rc;
    char *domain = xd_module_service_domain(ctx, c->host);
    if (!domain)
        return XD_EINVAL;
    muc_state_t *s = xd_new(muc_state_t);
    s->domain = domain;
    pthread_mutex_init(&s->mu, NULL);
    xd_module_set_state(ctx, s);
    rc = muc_load(ctx, s);
    if (rc != 0)
        return xd_module_fail(ctx, rc, "cannot read the stored rooms: %s", xd_strerror(rc));
    rc = xd_module_service(ctx, domain, muc_route, NULL);
    if (rc != 0)
        return xd_module_fail(ctx, rc, "cannot serve %s: %s", domain, xd_strerror(rc));
    rc = xd_module_command(ctx, &muc_stats);
    if (rc != 0)
        return xd_module_fail(ctx, rc, "cannot register muc_stats: %s", xd_strerror(rc));
    rc = xd_module_hook(ctx, XD_HOOK_TICK, XD_HOOK_PRIO_DEFAULT, muc_tick, NULL);
    if (rc != 0)
        return xd_module_fail(ctx, rc, "cannot hook TICK: %s", xd_strerror(rc));
    XD_LOG(NULL, XD_INFO, "muc service", "domain=%s stored_rooms=%zu", domain,
           xd_map_count(&s->dir));
    return 0;
}

/* Options apply from the next stanza on (the rooms read them per stanza),
 * so a reload keeps every room and its occupants; only the domain cannot
 * move while rooms live on it. */
static int
muc_reload(xd_module_ctx_t *ctx, const void *old_opts)
{
    const muc_conf_t *o = old_opts, *n = xd_module_opts(ctx);
    int rc = muc_conf_check(ctx, n);
    if (rc != 0)
        return rc;
    if (strcmp(o->host, n->host) != 0)
        return xd_module_fail(ctx, XD_EINVAL,
                              "host cannot change on a reload (%s to %s): restart the server",
                              o->host, n->host);
    return 0;
}

const xd_module_t xd_mod_muc = {
    .abi = XD_MODULE_ABI,
    .name = "mod_muc",
    .doc = "Multi-user chat (XEP-0045): rooms on the service domain, each owned by one worker",
    .opts = muc_opts,
    .opts_size = sizeof(muc_conf_t),
    .schemas = muc_schemas,
    .start = muc_start,
    .stop = muc_stop,
    .reload = muc_reload,
};

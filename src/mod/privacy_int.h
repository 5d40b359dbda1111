/*
 * privacy_int.h — what the parts of the privacy engine share.  Private to
 * src/mod/privacy_*.c: mod_privacy.c, mod_blocking.c and the tests use
 * privacy.h, which states the rules this code follows.
 *
 * The parts, by noun:
 *
 *   privacy_match.c   the rules as data: lists, items, the matcher (pure)
 *   privacy_store.c   the in-memory store: accounts, their sessions and
 *                     roster copies, and what their rules decide
 *   privacy_sql.c     storage: the tables and migrations, the transaction
 *                     of one write, loading a host's lists
 *   privacy_host.c    hosts: which module runs where, their limits, attach
 *                     and detach, the engine's hooks
 *   privacy_filter.c  enforcement: FILTER_PACKET, PRIVACY_CHECK_PACKET, the
 *                     end of a session, the removal of an account
 *   privacy_push.c    what a change sends: list and blocklist pushes,
 *                     presence after a change
 *   privacy_write.c   a session's requests: get, blocklist and the writes
 *
 * The store (privacy_store.c), sharded by a hash of the bare JID:
 *
 *   h = prv_hash(bare JID)
 *   prv_slots[h >> 52]  how many entries have a hash in this slot (atomic)
 *   prv_shards[h >> 58] rwlock, change_mu,
 *     accts (xd_map, bare JID) ─► prv_acct ─► lists[]  (xd_privacy_list_t, items sorted)
 *                                              def      (index into lists, or -1)
 *                                              sess[]   (full JID, stream, active list, flags)
 *                                              roster[] (sorted by contact JID; only while a
 *                                                        list has a group/subscription item)
 *
 * An account entry exists while it has lists or sessions.  A zero slot
 * means that no account whose hash falls there has one, so the filter
 * passes a stanza between accounts without privacy state without taking a
 * lock, and prv_naccts (the number of entries) lets it return before it
 * even parses the JIDs when nobody has any.
 *
 * Who may touch what:
 *   a shard's accts and every entry in it    that shard's rwlock: shared to read,
 *                                            exclusive to change, briefly; no pointer
 *                                            into an entry escapes it
 *   prv_slots, prv_naccts                    changed with an entry, under its shard's
 *                                            write lock; read by anyone without a lock
 *   a shard's change_mu                      held by a write to an account of the shard
 *                                            from its first read to its last push, so a
 *                                            read-modify-write (block, unblock, the
 *                                            conflicts) sees no other writer of that
 *                                            account; readers never take it
 *   the hosts (privacy_host.c)               prv_hosts_lock, a leaf: nothing else is
 *                                            taken while it is held
 * Lock order: a change_mu, then shard rwlocks one at a time.  No code holds
 * two rwlocks or two change_mu at once, nor takes a change_mu while it
 * holds an rwlock.
 */
#ifndef XMPPD_MOD_PRIVACY_INT_H
#define XMPPD_MOD_PRIVACY_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "privacy.h"
#include "xmppd/hooks.h"
#include "xmppd/map.h"
#include "xmppd/session.h"
#include "xmppd/storage.h"
#include "xmppd/str.h"

#define PRV_MAX_RES 64 /* sessions of one account looked at (as the router does) */

/* True when a is the blen bytes at b. */
static inline bool
prv_str_is(xd_str_t a, const char *b, size_t blen)
{
    return a.len == blen && (blen == 0 || memcmp(a.p, b, blen) == 0);
}

/* ---- the store (privacy_store.c) ----------------------------------------------------------- */

/* One bound session that did something the engine remembers (its account's shard). */
typedef struct prv_sess {
    char *full;          /* its full JID (owned) */
    uint64_t conn_id;    /* its stream: a later session of the same JID is another one */
    char *active;        /* its active list's name (owned), or NULL */
    bool want_privacy;   /* asked for privacy: gets list pushes (XEP-0016 2.6) */
    bool want_blocklist; /* asked for the blocklist: gets XEP-0191 pushes (3.2) */
} prv_sess_t;

/* One roster contact, as the rules need it (its account's shard). */
typedef struct prv_contact {
    char *jid;      /* its bare JID (owned), the sort key */
    int sub;        /* xd_roster_sub */
    char **groups;  /* its groups (owned) */
    size_t ngroups; /* how many */
} prv_contact_t;

/* One account (its shard's rwlock). */
typedef struct prv_acct {
    char *bare;               /* "user@host", the key (owned) */
    uint64_t hash;            /* prv_hash(bare): its shard and slot */
    xd_privacy_list_t *lists; /* its lists (owned), in no particular order */
    size_t nlists;            /* how many */
    int def;                  /* index of the default list, or -1 */
    prv_sess_t *sess;         /* remembered sessions (owned) */
    size_t nsess;             /* how many */
    size_t nactive;           /* sessions with an active list (0: the default decides alone) */
    bool has_roster;          /* roster below is kept (some list needs it) */
    prv_contact_t *roster;    /* sorted by jid (owned) */
    size_t nroster;           /* how many */
} prv_acct_t;

/* A roster as the engine reads it: its items in the roster (the reader's). */
typedef struct prv_roster {
    prv_contact_t *items; /* owned */
    size_t n, cap;        /* used, allocated */
} prv_roster_t;

/* A decision. */
typedef struct prv_verdict {
    bool deny;    /* refused */
    bool blocked; /* by a block item of the default list (XEP-0191) */
} prv_verdict_t;

/* One shard of the store (privacy_store.c only). */
typedef struct prv_shard prv_shard_t;

extern _Atomic size_t prv_naccts; /* account entries in the store, read without a lock */

/* False when the account of bare JID key has no entry (no lock taken: a
 * change made at the same time may or may not be seen). */
bool prv_known(xd_str_t key);

/* The entry of bare JID key, with its shard read-locked (*sh) or, when the
 * account certainly has none, NULL and no lock (*sh NULL).  Release with
 * prv_unlock(*sh) in either case. */
const prv_acct_t *prv_read(xd_str_t key, prv_shard_t **sh);
/* The same, write-locked. */
prv_acct_t *prv_edit(xd_str_t key, prv_shard_t **sh);
/* Releases the shard lock of prv_read, prv_edit or prv_get; NULL is a no-op. */
void prv_unlock(prv_shard_t *sh);

/* The entry of key, created when missing, with its shard write-locked
 * (*sh; release with prv_unlock). */
prv_acct_t *prv_get(xd_str_t key, prv_shard_t **sh);
/* Unlinks and frees a when it holds nothing (force: in any case).  Its
 * shard write-locked. */
void prv_drop_if_empty(prv_acct_t *a, bool force);

/* A new entry for key, in no shard (for loading: see prv_install). */
prv_acct_t *prv_acct_new(xd_str_t key);
/* Frees the entries of map m (bare JID → prv_acct_t, not the store's) and m's storage. */
void prv_accts_free(xd_map_t *m);
/* Moves the entries of m (bare JID → prv_acct_t from prv_acct_new) into
 * the store, each replacing the account's entry if it has one; m is left
 * empty.  No lock held. */
void prv_install(xd_map_t *m);
/* Forgets every account of host.  No lock held. */
void prv_forget_host(const char *host);

/* Locks the writers' mutex of key's shard: the caller is then the one
 * writer of the account (and of the others of its shard). */
prv_shard_t *prv_writer_begin(xd_str_t key);
void prv_writer_end(prv_shard_t *sh);

/* The index of list `name` of a, or -1. */
int prv_list_index(const prv_acct_t *a, const char *name);
/* a's default list, or NULL. */
const xd_privacy_list_t *prv_default(const prv_acct_t *a);
/* True when some list of a needs the roster. */
bool prv_acct_needs_roster(const prv_acct_t *a);

/* The entry of session `full` of a, or NULL. */
prv_sess_t *prv_sess_find(const prv_acct_t *a, xd_str_t full);
/* The entry of session (full, conn_id), created when missing; an entry of
 * an older stream of the same full JID starts over.  Its shard write-locked. */
prv_sess_t *prv_sess_get(prv_acct_t *a, xd_str_t full, uint64_t conn_id);
/* Forgets session s of a.  Its shard write-locked. */
void prv_sess_del(prv_acct_t *a, prv_sess_t *s);
/* The bound sessions of the account of jid, at most PRV_MAX_RES of them
 * (as the router looks at them), into res; how many.  No lock held. */
size_t prv_sessions(const xd_jid_t *jid, xd_session_info_t *res);
/* Clears what prv_sessions filled. */
void prv_sessions_clear(xd_session_info_t *res, size_t n);
/* The stream bound to full JID `full` now, or 0. */
uint64_t prv_live_id(const xd_jid_t *full);
/* Forgets the entry of session `full` unless it belongs to stream `live`
 * (0: none is bound), and only when it belongs to stream conn_id (0:
 * whichever).  Takes the shard's write lock. */
void prv_sess_forget(const xd_jid_t *full, uint64_t conn_id, uint64_t live);
/* Recounts a->nactive. */
void prv_count_active(prv_acct_t *a);

/* Reads user@host's roster from whoever keeps rosters (ROSTER_GET; this
 * runs on the pool).  Without a roster module the roster is empty (0). */
int prv_roster_fetch(const char *host, const char *user, prv_roster_t *out);
void prv_roster_clear(prv_roster_t *r);
/* Installs roster r as a's copy (r is emptied).  Its shard write-locked. */
void prv_roster_install(prv_acct_t *a, prv_roster_t *r);
/* Forgets a's roster copy.  Its shard write-locked. */
void prv_roster_drop(prv_acct_t *a);
/* Reads the rosters the host's lists need, one account at a time (the
 * shard is not locked while reading).  Blocking. */
void prv_load_rosters(const char *host);
/* ROSTER_CHANGED: the engine's copy follows the roster. */
int prv_roster_changed(xd_module_ctx_t *ctx, xd_hook_roster_changed_t *ev, void *arg);

/* What a's rules for session `full` (len 0: the account) say about a
 * stanza of kind k with `other`.  Its shard locked. */
prv_verdict_t prv_judge(const prv_acct_t *a, xd_str_t full, const xd_jid_t *other,
                        xd_privacy_kind k);

/* The blocklist of a (NULL: none): block items of the default list, each
 * value once.  Its shard locked; *out malloc'd (strings owned). */
size_t prv_blockview(const prv_acct_t *a, char ***out);
void prv_strv_free(char **v, size_t n);
bool prv_strv_has(char *const *v, size_t n, const char *s);

/* ---- storage (privacy_sql.c) --------------------------------------------------------------- */

/* What one write stores, in one transaction (the writer's stack). */
typedef struct prv_tx {
    const char *host, *user;       /* the account */
    const xd_privacy_list_t *put;  /* list to create or replace, or NULL */
    const char *drop;              /* list to delete, or NULL */
    int def_op;                    /* 0 keep the default, 1 set def_name, 2 none */
    const char *def_name;          /* def_op 1 */
    int64_t now;                   /* seconds since the epoch */
} prv_tx_t;

/* Stores the prv_tx_t arg: the xd_db_tx callback of a write. */
int prv_sql_tx(xd_db_conn_t *c, void *arg);

/* A host being loaded (the attaching thread's). */
typedef struct prv_load {
    const char *host; /* the host being loaded */
    xd_map_t accts;   /* its accounts as read: bare JID → prv_acct_t (for prv_install) */
    size_t lists;     /* list rows read */
    size_t items;     /* item rows read */
} prv_load_t;

/* Reads l->host's lists, items and defaults into l->accts. */
int prv_sql_load(xd_db_conn_t *c, prv_load_t *l);

/* ---- hosts (privacy_host.c) ---------------------------------------------------------------- */

/* True when the engine runs on host (either module). */
bool prv_host_on(const char *host);
/* The limits of host (zeros when the engine does not run there). */
xd_privacy_limits_t prv_host_limits(const char *host);
/* The database, from the first module that attached (NULL before). */
xd_db_t *prv_host_db(void);

/* ---- enforcement (privacy_filter.c) -------------------------------------------------------- */

int prv_filter(xd_module_ctx_t *hctx, xd_hook_filter_t *ev, void *arg);
int prv_check(xd_module_ctx_t *ctx, xd_hook_privacy_check_t *ev, void *arg);
int prv_closed(xd_module_ctx_t *hctx, xd_hook_session_t *ev, void *arg);
int prv_removed(xd_module_ctx_t *hctx, xd_hook_user_t *ev, void *arg);

/* Routes st (reference taken over) without filtering it again. */
void prv_route(xd_stanza_t *st);

/* ---- a session's requests (privacy_write.c) ------------------------------------------------- */

/* The requesting session: its account's parts and its stream (the
 * request's thread only). */
typedef struct prv_who {
    char *host;          /* its domain (owned) */
    char *user;          /* its localpart (owned) */
    xd_jid_t *bare;      /* its bare JID (a reference) */
    const xd_jid_t *req; /* the session (lent) */
    uint64_t conn_id;    /* its stream, 0 when not bound */
} prv_who_t;

/* ---- what a change sends (privacy_push.c) --------------------------------------------------- */

/* XEP-0016 2.6: <query><list name='…'/></query> to the sessions that asked for privacy. */
void prv_push_list(const xd_jid_t *bare, const char *name);
/* XEP-0191 3.3/3.4: <block>/<unblock> with items to the sessions that asked for the blocklist. */
void prv_push_block(const xd_jid_t *bare, const char *name, char *const *items, size_t nitems);

/* The presence-out decisions of every available session of an account
 * towards its from/both contacts (and the full-JID jid items naming one
 * of them), before and after a change.  The writer's, on its thread. */
typedef struct prv_pres {
    xd_session_info_t res[PRV_MAX_RES]; /* the account's sessions */
    size_t nres;                        /* how many */
    char **tgt;                         /* target JIDs (owned) */
    xd_jid_t **tj;                      /* the same, parsed (references) */
    size_t ntgt, captgt;                /* used / allocated */
    bool *before;                       /* nres × ntgt: presence-out allowed before */
} prv_pres_t;

/* Before a change: who is available, whom they may send presence to.
 * `extra` (optional) is a list about to be stored; `jids` JIDs about to
 * be blocked.  Blocking (roster storage). */
void prv_pres_before(prv_pres_t *p, const prv_who_t *w, const xd_privacy_list_t *extra,
                     const char *const *jids, size_t njids);
/* After the change: unavailable where presence-out became denied, the
 * session's current presence where it became allowed.  Frees p. */
void prv_pres_after(prv_pres_t *p, const prv_who_t *w);

#endif

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
 * The store (privacy_store.c):
 *
 *   prv_accts (xd_map, bare JID) ─► prv_acct ─► lists[]  (xd_privacy_list_t, items sorted)
 *                                                def      (index into lists, or -1)
 *                                                sess[]   (full JID, stream, active list, flags)
 *                                                roster[] (sorted by contact JID; only while a
 *                                                          list has a group/subscription item)
 *
 * An account entry exists while it has lists or sessions; prv_naccts (an
 * atomic copy of the count) lets the filter return at once when nobody
 * has any.
 *
 * Who may touch what: prv_lock guards the store and the hosts (privacy_host.c);
 * the filter and the reads take it shared, changes exclusive, briefly, and
 * no pointer into the store escapes it.  Writers hold prv_change_mu from
 * their first read to their last push, so a read-modify-write (block,
 * unblock, conflicts) sees no other writer; readers never take it.
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

/* One bound session that did something the engine remembers (prv_lock). */
typedef struct prv_sess {
    char *full;          /* its full JID (owned) */
    uint64_t conn_id;    /* its stream: a later session of the same JID is another one */
    char *active;        /* its active list's name (owned), or NULL */
    bool want_privacy;   /* asked for privacy: gets list pushes (XEP-0016 2.6) */
    bool want_blocklist; /* asked for the blocklist: gets XEP-0191 pushes (3.2) */
} prv_sess_t;

/* One roster contact, as the rules need it (prv_lock). */
typedef struct prv_contact {
    char *jid;      /* its bare JID (owned), the sort key */
    int sub;        /* xd_roster_sub */
    char **groups;  /* its groups (owned) */
    size_t ngroups; /* how many */
} prv_contact_t;

/* One account (prv_lock). */
typedef struct prv_acct {
    char *bare;               /* "user@host", the key (owned) */
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

extern pthread_rwlock_t prv_lock;      /* the store and the hosts */
extern pthread_mutex_t prv_change_mu;  /* writers, one at a time */
extern _Atomic size_t prv_naccts;      /* accounts in the store, read without the lock */

/* The entry of bare JID key, or NULL.  Lock held. */
prv_acct_t *prv_find(xd_str_t key);
/* The entry of key, created when missing.  Write lock held. */
prv_acct_t *prv_get(xd_str_t key);
/* Unlinks and frees a when it holds nothing (force: in any case).  Write lock held. */
void prv_drop_if_empty(prv_acct_t *a, bool force);
/* Forgets every account of host.  Write lock held. */
void prv_forget_host(const char *host);

/* The index of list `name` of a, or -1. */
int prv_list_index(const prv_acct_t *a, const char *name);
/* a's default list, or NULL. */
const xd_privacy_list_t *prv_default(const prv_acct_t *a);
/* True when some list of a needs the roster. */
bool prv_acct_needs_roster(const prv_acct_t *a);

/* The entry of session `full` of a, or NULL. */
prv_sess_t *prv_sess_find(const prv_acct_t *a, xd_str_t full);
/* The entry of session (full, conn_id), created when missing; an entry of
 * an older stream of the same full JID starts over.  Write lock held. */
prv_sess_t *prv_sess_get(prv_acct_t *a, xd_str_t full, uint64_t conn_id);
/* Forgets session s of a.  Write lock held. */
void prv_sess_del(prv_acct_t *a, prv_sess_t *s);
/* Recounts a->nactive. */
void prv_count_active(prv_acct_t *a);

/* Reads user@host's roster from whoever keeps rosters (ROSTER_GET; this
 * runs on the pool).  Without a roster module the roster is empty (0). */
int prv_roster_fetch(const char *host, const char *user, prv_roster_t *out);
void prv_roster_clear(prv_roster_t *r);
/* Installs roster r as a's copy (r is emptied).  Write lock held. */
void prv_roster_install(prv_acct_t *a, prv_roster_t *r);
/* Forgets a's roster copy.  Write lock held. */
void prv_roster_drop(prv_acct_t *a);
/* Reads the rosters the host's lists need, one account at a time (the
 * store lock is not held while reading).  Blocking. */
void prv_load_rosters(const char *host);
/* ROSTER_CHANGED: the engine's copy follows the roster. */
int prv_roster_changed(xd_module_ctx_t *ctx, xd_hook_roster_changed_t *ev, void *arg);

/* What a's rules for session `full` (len 0: the account) say about a
 * stanza of kind k with `other`.  Lock held. */
prv_verdict_t prv_judge(const prv_acct_t *a, xd_str_t full, const xd_jid_t *other,
                        xd_privacy_kind k);

/* The blocklist of a (NULL: none): block items of the default list, each
 * value once.  Lock held; *out malloc'd (strings owned). */
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

/* A host being loaded (the attaching thread; rows go in under the write lock). */
typedef struct prv_load {
    const char *host; /* the host being loaded */
    size_t lists;     /* list rows read */
    size_t items;     /* item rows read */
} prv_load_t;

/* Reads l->host's lists, items and defaults into the store.  Write lock held. */
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

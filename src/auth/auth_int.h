/*
 * auth_int.h — internals shared by the files of src/auth: the request that
 * every backend serves, and the entry points of the internal (internal.c)
 * and external (external.c) backends.  Nothing outside src/auth includes
 * this; callers use xmppd/auth.h.
 *
 * A request (auth_req_t) is made by auth.c, handed to exactly one backend,
 * and finished exactly once with auth_req_finish() (any thread) or, when the
 * backend already runs on the requesting worker's loop, auth_req_deliver().
 *
 *   async request: w != NULL.  auth.c has held w (xd_worker_hold) unless the
 *                  backend is the blocking pool, which holds it itself
 *                  (held == false).  Finishing posts the callback to w;
 *                  the pool path calls auth_req_deliver from its done
 *                  callback instead.
 *   sync request:  w == NULL.  The waiting thread sleeps on `sem`;
 *                  finishing posts it, and the waiter owns the request.
 *
 * Who may touch a request: the backend that has it, until it finishes it;
 * after that only the completion path (w's loop, or the waiter).
 */
#ifndef XMPPD_AUTH_AUTH_INT_H
#define XMPPD_AUTH_AUTH_INT_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "core/worker.h"
#include "xmppd/auth.h"
#include "xmppd/input.h"
#include "xmppd/scram.h"
#include "xmppd/storage.h"

/* Longest external request: the length prefix is 16 bits. */
#define AUTH_EXT_MSG_MAX 65535u

typedef enum auth_op {
    AUTH_OP_GET_SCRAM,    /* internal only */
    AUTH_OP_CHECK,        /* "auth" */
    AUTH_OP_EXISTS,       /* "isuser" */
    AUTH_OP_SET_PASSWORD, /* "setpass" */
    AUTH_OP_REGISTER,     /* "tryregister" */
    AUTH_OP_REMOVE,       /* "removeuser" */
    AUTH_OP_REMOVE_CHECKED, /* "removeuser3" */
} auth_op;

typedef struct auth_req {
    auth_op op;                  /* what to do */
    char *host;                  /* owned copy; served domain */
    char *user;                  /* owned copy; prepared localpart */
    char *password;              /* owned copy, wiped on free; NULL when op has none */
    xd_scram_hash hash;          /* AUTH_OP_GET_SCRAM */
    unsigned iterations;         /* internal: scram_iterations of the host */
    xd_db_t *db;                 /* internal: the database */

    int status;                  /* result: 0 or XD_E* */
    bool flag;                   /* result of CHECK (ok) and EXISTS (exists) */
    xd_scram_cred_t cred;        /* result of GET_SCRAM when status == 0 */

    xd_worker_t *w;              /* async: the requesting worker; NULL = sync */
    bool held;                   /* async: auth.c holds w (unhold after the callback) */
    xd_input_ref_t in;           /* held: the stream held until the callback has run */
    union {
        xd_auth_cb plain;        /* SET_PASSWORD REGISTER REMOVE REMOVE_CHECKED */
        xd_auth_bool_cb flag;    /* CHECK EXISTS */
        xd_auth_scram_cb scram;  /* GET_SCRAM */
    } cb;                        /* async: the caller's callback */
    void *arg;                   /* async: its argument */
    uv_sem_t sem;                /* sync: posted when finished */

    uint64_t deadline_ms;        /* external: uv_hrtime ms after which a queued (unsent)
                                    request fails with XD_ETIMEDOUT; UINT64_MAX = never */
    struct auth_req *next;       /* external: queue link */
} auth_req_t;

/* Finishes req from any thread: posts the callback to req->w (async) or
 * wakes the waiter (sync).  The caller must not touch req afterwards. */
void auth_req_finish(auth_req_t *req);

/* Runs req's callback now (on req->w's loop) and frees req; unholds w when
 * req->held.  Async only. */
void auth_req_deliver(auth_req_t *req);

/* Frees req (NULL is fine), wiping the password and the credential. */
void auth_req_free(auth_req_t *req);

/* The protocol name of op ("auth", "isuser", …; "get_scram"), for logs. */
const char *auth_op_name(auth_op op);

/* The database of host when its auth_method is internal and auth runs,
 * else NULL (FAST tokens, fast.c).  It outlives xd_auth_stop. */
xd_db_t *auth_internal_db(const char *host);

/* ---- internal.c ------------------------------------------------------------------------------ */

/* Runs req against the database on the calling (non-loop) thread and sets
 * req->status and results.  Does not finish req. */
void auth_int_run(auth_req_t *req);

/* Queues an async req on the blocking pool; it is delivered on req->w's
 * loop.  XD_EFULL / XD_ECLOSED at once (req stays the caller's). */
int auth_int_submit(auth_req_t *req);

/* ---- external.c ------------------------------------------------------------------------------ */

typedef struct auth_ext auth_ext_t;

/* Splits program, spawns nproc processes (the first spawn is done here, so
 * a missing program is an error now) and starts their threads.  *err (may
 * be NULL) gets a malloc'd message on failure, naming host and program.
 * timeout_ms == 0 means no answer timeout. */
int auth_ext_start(const char *host, const char *program, unsigned nproc, uint64_t timeout_ms,
                   auth_ext_t **out, char **err);

/* True when x runs program with nproc processes (reload keeps it). */
bool auth_ext_same(const auth_ext_t *x, const char *program, unsigned nproc);

/* Changes the answer timeout for requests sent from now on. */
void auth_ext_set_timeout(auth_ext_t *x, uint64_t timeout_ms);

/* Queues req (any thread, never blocks).  XD_EINVAL (':' in user or host,
 * message too long, op not supported), XD_EFULL, XD_ECLOSED; on error req
 * stays the caller's. */
int auth_ext_submit(auth_ext_t *x, auth_req_t *req);

/* Fails queued and in-flight requests with XD_ECANCELED, stops the
 * processes (EOF, then SIGKILL after a grace period), joins the threads and
 * frees x.  Off-loop. */
void auth_ext_stop(auth_ext_t *x);

/* ---- ldap.c, pam.c --------------------------------------------------------------------------- */

/* Password backends that can only answer CHECK and EXISTS (every other op
 * gives XD_ENOTSUP).  Both block, so they run on the blocking pool or a
 * sync caller's thread, never on a loop.  A backend is reference-counted:
 * the auth table holds one reference and a request that runs it another,
 * so a reload never frees one under a running request. */
typedef struct auth_ldap auth_ldap_t;
typedef struct auth_pam auth_pam_t;

/* A backend for host with hc's ldap_* options; nothing is connected yet.
 * XD_EINVAL with *err (malloc'd) for options libldap refuses. */
int auth_ldap_new(const xd_host_conf_t *hc, auth_ldap_t **out, char **err);
auth_ldap_t *auth_ldap_ref(auth_ldap_t *l);
void auth_ldap_unref(auth_ldap_t *l); /* the last one closes the connections */
/* Runs req (CHECK, EXISTS) and sets req->status and req->flag. */
void auth_ldap_run(auth_ldap_t *l, auth_req_t *req);

int auth_pam_new(const xd_host_conf_t *hc, auth_pam_t **out, char **err);
auth_pam_t *auth_pam_ref(auth_pam_t *p);
void auth_pam_unref(auth_pam_t *p);
void auth_pam_run(auth_pam_t *p, auth_req_t *req);

#endif

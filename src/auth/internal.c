/*
 * internal.c — the internal auth backend: accounts and salted SCRAM
 * credentials in the database through the users API of storage.h
 * (src/storage/users.c).  Storage only keeps credentials; deriving them from
 * a password and checking a password against them happen here
 * (xd_scram_creds_make, xd_scram_cred_check of scram.c).
 *
 * Everything here blocks (PBKDF2 and SQL), so it runs on the blocking pool
 * for async requests and on the calling thread for sync ones; never on a
 * loop (auth_int_run asserts it).  Each operation maps onto the users API:
 *
 *   GET_SCRAM       xd_user_get_scram
 *   CHECK           int_check_password: the first stored credential in
 *                   int_check_order, derived with its salt and iterations,
 *                   compared in constant time; an unknown user is "false",
 *                   after a dummy derivation with the host's iteration count
 *                   so that the time taken does not tell unknown users from
 *                   wrong passwords
 *   EXISTS          xd_user_exists
 *   SET_PASSWORD    new SHA-1/256/512 credentials, then xd_user_set_scram
 *   REGISTER        the same credentials, then xd_user_create
 *   REMOVE          xd_user_remove (credentials go by ON DELETE CASCADE)
 *   REMOVE_CHECKED  check, then remove; a password change racing between
 *                   the two is not seen (the same as a change just after)
 */
#include <string.h>

#include <openssl/crypto.h>

#include "auth/auth_int.h"
#include "core/pool.h"
#include "core/worker.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"
#include "xmppd/scram.h"
#include "xmppd/storage.h"

/* The order int_check_password tries the stored credentials in.  Any of
 * them proves the password equally well; PBKDF2-SHA-256 costs half of
 * SHA-512 on 64-bit hardware (1.3 ms against 2.7 ms at 4096 iterations
 * here), and a PLAIN login is one such derivation, so SHA-256 comes first. */
static const xd_scram_hash int_check_order[XD_SCRAM_HASH_COUNT] = {
    XD_SCRAM_SHA256,
    XD_SCRAM_SHA512,
    XD_SCRAM_SHA1,
};

/* Burns about the time a real check takes (SHA-256 is what
 * int_check_password tries first), for a user that does not exist. */
static void
int_dummy_check(xd_str_t password, unsigned iterations)
{
    static const uint8_t salt[XD_SCRAM_SALT_LEN] = { 0 };
    uint8_t stored[XD_SCRAM_KEY_MAX], server[XD_SCRAM_KEY_MAX];

    (void)xd_scram_derive(XD_SCRAM_SHA256, password,
                          (xd_str_t){ (const char *)salt, sizeof salt },
                          iterations ? iterations : XD_SCRAM_ITERATIONS_DEFAULT, stored, server);
}

/* Sets *ok when password matches user's stored credentials.  XD_ENOTFOUND
 * when there is no such user; a user without credentials never matches. */
static int
int_check_password(xd_db_t *db, xd_str_t host, xd_str_t user, xd_str_t password, bool *ok)
{
    *ok = false;
    xd_db_conn_t *c;
    int rc = xd_db_acquire(db, &c);
    if (rc < 0)
        return rc;
    /* The reads below run on one connection (nested acquires reuse it). */
    rc = xd_user_exists(db, host, user);
    if (rc == 0)
        rc = XD_ENOTFOUND;
    xd_scram_cred_t cred;
    if (rc > 0) {
        rc = XD_ENOTFOUND;
        for (unsigned i = 0; i < XD_SCRAM_HASH_COUNT && rc == XD_ENOTFOUND; i++)
            rc = xd_user_get_scram(db, host, user, int_check_order[i], &cred);
        if (rc == XD_ENOTFOUND)
            rc = 0; /* no credentials: never matches */
        else if (rc == 0)
            rc = xd_scram_cred_check(&cred, password, ok);
        OPENSSL_cleanse(&cred, sizeof cred);
    }
    xd_db_release(c);
    return rc;
}

/* Derives the credentials of password and stores them with `store`
 * (xd_user_create or xd_user_set_scram). */
static int
int_store_password(xd_db_t *db, xd_str_t host, xd_str_t user, xd_str_t password,
                   unsigned iterations,
                   int (*store)(xd_db_t *, xd_str_t, xd_str_t, const xd_scram_cred_t *, size_t))
{
    xd_scram_cred_t creds[XD_SCRAM_HASH_COUNT];
    int rc = xd_scram_creds_make(password, iterations, creds);
    if (rc == 0)
        rc = store(db, host, user, creds, XD_SCRAM_HASH_COUNT);
    OPENSSL_cleanse(creds, sizeof creds);
    return rc;
}

void
auth_int_run(auth_req_t *req)
{
    xd_assert_off_loop();
    xd_str_t host = xd_str_c(req->host);
    xd_str_t user = xd_str_c(req->user);
    xd_str_t pw = xd_str_c(req->password);
    xd_db_t *db = req->db;
    bool ok = false;
    int rc;

    XD_ASSERT(db != NULL);
    req->flag = false;
    switch (req->op) {
    case AUTH_OP_GET_SCRAM:
        rc = xd_user_get_scram(db, host, user, req->hash, &req->cred);
        break;
    case AUTH_OP_CHECK:
        rc = int_check_password(db, host, user, pw, &ok);
        if (rc == XD_ENOTFOUND) {
            int_dummy_check(pw, req->iterations);
            rc = 0;
            ok = false;
        }
        req->flag = rc == 0 && ok;
        break;
    case AUTH_OP_EXISTS:
        rc = xd_user_exists(db, host, user);
        if (rc >= 0) {
            req->flag = rc == 1;
            rc = 0;
        }
        break;
    case AUTH_OP_SET_PASSWORD:
        rc = int_store_password(db, host, user, pw, req->iterations, xd_user_set_scram);
        break;
    case AUTH_OP_REGISTER:
        if (pw.p == NULL)
            rc = xd_user_create(db, host, user, NULL, 0);
        else
            rc = int_store_password(db, host, user, pw, req->iterations, xd_user_create);
        break;
    case AUTH_OP_REMOVE:
        rc = xd_user_remove(db, host, user);
        break;
    case AUTH_OP_REMOVE_CHECKED:
        rc = int_check_password(db, host, user, pw, &ok);
        if (rc == 0 && !ok)
            rc = XD_EAUTH_REFUSED;
        if (rc == 0)
            rc = xd_user_remove(db, host, user);
        break;
    default:
        rc = XD_EINVAL;
        break;
    }
    req->status = rc;
}

/* Pool thread. */
static void
int_work(void *arg)
{
    auth_int_run(arg);
}

/* The requesting worker's loop; status is XD_ECANCELED when the pool shut
 * down before int_work ran. */
static void
int_done(void *arg, int status)
{
    auth_req_t *req = arg;

    if (status != 0)
        req->status = status;
    auth_req_deliver(req);
}

int
auth_int_submit(auth_req_t *req)
{
    XD_ASSERT(req->w != NULL && !req->held);
    XD_DEBUG_ASSERT(req->w == xd_worker_self());
    return xd_pool_submit(int_work, int_done, req);
}

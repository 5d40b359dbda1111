/*
 * internal.c — the internal auth backend: accounts and salted SCRAM
 * credentials in the database through the users API of storage.h
 * (src/storage/users.c).
 *
 * Everything here blocks (PBKDF2 and SQL), so it runs on the blocking pool
 * for async requests and on the calling thread for sync ones; never on a
 * loop (auth_int_run asserts it).  The work is a thin mapping of each
 * operation onto the users API:
 *
 *   GET_SCRAM       xd_user_get_scram
 *   CHECK           xd_user_check_password (stored salt and iterations, the
 *                   strongest stored hash, constant-time compare); an
 *                   unknown user is "false", after a dummy derivation with
 *                   the host's iteration count so that the time taken does
 *                   not tell unknown users from wrong passwords
 *   EXISTS          xd_user_exists
 *   SET_PASSWORD    xd_user_set_password: new SHA-1/256/512 credentials
 *   REGISTER        xd_user_create with the password (all three credentials)
 *   REMOVE          xd_user_remove (credentials go by ON DELETE CASCADE)
 *   REMOVE_CHECKED  check, then remove; a password change racing between
 *                   the two is not seen (the same as a change just after)
 */
#include <string.h>

#include "auth/auth_int.h"
#include "core/pool.h"
#include "core/worker.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"
#include "xmppd/scram.h"
#include "xmppd/storage.h"

/* Burns about the time a real check takes (SHA-256 is what check_password
 * tries first), for a user that does not exist. */
static void
int_dummy_check(xd_str_t password, unsigned iterations)
{
    static const uint8_t salt[XD_SCRAM_SALT_LEN] = { 0 };
    uint8_t stored[XD_SCRAM_KEY_MAX], server[XD_SCRAM_KEY_MAX];

    (void)xd_scram_derive(XD_SCRAM_SHA256, password,
                          (xd_str_t){ (const char *)salt, sizeof salt },
                          iterations ? iterations : XD_SCRAM_ITERATIONS_DEFAULT, stored, server);
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
        rc = xd_user_check_password(db, host, user, pw, &ok);
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
        rc = xd_user_set_password(db, host, user, pw, req->iterations);
        break;
    case AUTH_OP_REGISTER:
        rc = xd_user_create(db, host, user, pw, req->iterations);
        break;
    case AUTH_OP_REMOVE:
        rc = xd_user_remove(db, host, user);
        break;
    case AUTH_OP_REMOVE_CHECKED:
        rc = xd_user_check_password(db, host, user, pw, &ok);
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

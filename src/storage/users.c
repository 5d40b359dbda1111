/*
 * users.c — the user store: accounts per virtual host and their salted
 * SCRAM credentials (DESIGN.md 4; tables from migration core/1 in
 * migrate.c).  Used by the internal auth backend (src/auth/internal.c),
 * which derives the credentials from passwords and checks passwords against
 * them; storage only persists and returns them (it links nothing of
 * src/auth: the credential record is the plain data of scram_cred.h).
 *
 * Invariants: a password never reaches this file; a user's credentials are
 * written in the transaction that writes the user (create) or replaces all
 * the old ones (set_scram), at most one per hash.  Key derivation (PBKDF2,
 * the slow part) happens in the caller before, so the write lock is held
 * only for the inserts.  Every function blocks and asserts it is off the
 * loops.
 */
#include <string.h>
#include <time.h>

#include "core/worker.h"
#include "storage/db_int.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"
#include "xmppd/log.h"
#include "xmppd/scram_cred.h"

/* Arguments of the write transactions. */
typedef struct users_op {
    xd_str_t host;                /* prepared domain */
    xd_str_t user;                /* prepared localpart */
    const xd_scram_cred_t *creds; /* ncreds credentials, or NULL */
    size_t ncreds;                /* number of creds */
} users_op_t;

/* 0 when creds[0..n) can be stored: known hashes, each at most once, sizes
 * in range; else XD_EINVAL. */
static int
users_creds_check(const xd_scram_cred_t *creds, size_t n)
{
    bool seen[XD_SCRAM_HASH_COUNT] = { false };
    if (n > 0 && creds == NULL)
        return XD_EINVAL;
    for (size_t i = 0; i < n; i++) {
        const xd_scram_cred_t *cr = &creds[i];
        if ((unsigned)cr->hash >= XD_SCRAM_HASH_COUNT || seen[cr->hash] || cr->salt_len == 0 ||
            cr->salt_len > XD_SCRAM_SALT_MAX || cr->iterations == 0)
            return XD_EINVAL;
        seen[cr->hash] = true;
    }
    return 0;
}

/* Replaces the user's credentials with op->creds (fresh: the user was
 * created in this transaction and has none, so nothing is deleted — on
 * PostgreSQL those empty-range reads made concurrent registrations fail
 * each other's SERIALIZABLE transactions). */
static int
users_put_creds(xd_db_conn_t *c, const users_op_t *op, bool fresh)
{
    xd_db_val_t key[] = { XD_DB_V_TEXT(op->host), XD_DB_V_TEXT(op->user) };
    int rc = 0;
    if (!fresh)
        rc = xd_db_query(c, "DELETE FROM user_scram WHERE host = ? AND username = ?", key, 2,
                         NULL, NULL);
    /* A new password ends every FAST token (XEP-0484): they were issued
     * against the old one. */
    if (rc == 0 && !fresh)
        rc = xd_db_query(c, "DELETE FROM fast_tokens WHERE host = ? AND username = ?", key, 2,
                         NULL, NULL);
    for (size_t i = 0; rc == 0 && i < op->ncreds; i++) {
        const xd_scram_cred_t *cr = &op->creds[i];
        size_t klen = xd_scram_key_len(cr->hash);
        xd_db_val_t p[] = {
            XD_DB_V_TEXT(op->host),
            XD_DB_V_TEXT(op->user),
            XD_DB_V_CSTR(xd_scram_hash_name(cr->hash)),
            XD_DB_V_BLOB(cr->salt, cr->salt_len),
            XD_DB_V_INT(cr->iterations),
            XD_DB_V_BLOB(cr->stored_key, klen),
            XD_DB_V_BLOB(cr->server_key, klen),
        };
        rc = xd_db_query(c,
                         "INSERT INTO user_scram (host, username, hash, salt, iterations,"
                         " stored_key, server_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         p, 7, NULL, NULL);
    }
    return rc;
}

static int
users_exists_conn(xd_db_conn_t *c, xd_str_t host, xd_str_t user)
{
    int64_t one;
    xd_db_val_t p[] = { XD_DB_V_TEXT(host), XD_DB_V_TEXT(user) };
    int rc = xd_db_query_int64(c, "SELECT 1 FROM users WHERE host = ? AND username = ?", p, 2,
                               &one);
    if (rc == XD_ENOTFOUND)
        return 0;
    return rc < 0 ? rc : 1;
}

static int
users_create_tx(xd_db_conn_t *c, void *arg)
{
    const users_op_t *op = arg;
    xd_db_val_t p[] = { XD_DB_V_TEXT(op->host), XD_DB_V_TEXT(op->user),
                        XD_DB_V_INT(time(NULL)) };
    int rc = xd_db_query(c, "INSERT INTO users (host, username, created_at) VALUES (?, ?, ?)",
                         p, 3, NULL, NULL);
    if (rc == XD_EDB_CONSTRAINT)
        return XD_EEXIST; /* the primary key (host, username) */
    if (rc == 0 && op->ncreds > 0)
        rc = users_put_creds(c, op, true);
    return rc;
}

int
xd_user_create(xd_db_t *db, xd_str_t host, xd_str_t user, const xd_scram_cred_t *creds,
               size_t ncreds)
{
    xd_assert_off_loop();
    if (host.len == 0 || user.len == 0 || users_creds_check(creds, ncreds) != 0)
        return XD_EINVAL;
    users_op_t op = { host, user, creds, ncreds };
    return xd_db_tx(db, users_create_tx, &op);
}

int
xd_user_exists(xd_db_t *db, xd_str_t host, xd_str_t user)
{
    xd_assert_off_loop();
    xd_db_conn_t *c;
    int rc = xd_db_acquire(db, &c);
    if (rc < 0)
        return rc;
    rc = users_exists_conn(c, host, user);
    xd_db_release(c);
    return rc;
}

static int
users_set_tx(xd_db_conn_t *c, void *arg)
{
    const users_op_t *op = arg;
    int rc = users_exists_conn(c, op->host, op->user);
    if (rc == 0)
        return XD_ENOTFOUND;
    return rc < 0 ? rc : users_put_creds(c, op, false);
}

int
xd_user_set_scram(xd_db_t *db, xd_str_t host, xd_str_t user, const xd_scram_cred_t *creds,
                  size_t ncreds)
{
    xd_assert_off_loop();
    if (users_creds_check(creds, ncreds) != 0)
        return XD_EINVAL;
    users_op_t op = { host, user, creds, ncreds };
    return xd_db_tx(db, users_set_tx, &op);
}

typedef struct users_get {
    xd_scram_cred_t *out; /* where the row goes */
    bool found;           /* a row came */
    bool bad;             /* the row has impossible sizes */
} users_get_t;

static int
users_get_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    users_get_t *g = arg;
    xd_scram_cred_t *o = g->out;
    size_t klen = xd_scram_key_len(o->hash);
    g->found = true;
    if (ncols != 4 || cols[0].type != XD_DB_BLOB || cols[0].s.len == 0 ||
        cols[0].s.len > XD_SCRAM_SALT_MAX || cols[1].type != XD_DB_INT64 || cols[1].i < 1 ||
        cols[1].i > (int64_t)UINT32_MAX || cols[2].type != XD_DB_BLOB ||
        cols[2].s.len != klen || cols[3].type != XD_DB_BLOB || cols[3].s.len != klen) {
        g->bad = true;
        return 1;
    }
    memcpy(o->salt, cols[0].s.p, cols[0].s.len);
    o->salt_len = cols[0].s.len;
    o->iterations = (unsigned)cols[1].i;
    memcpy(o->stored_key, cols[2].s.p, klen);
    memcpy(o->server_key, cols[3].s.p, klen);
    return 1;
}

int
xd_user_get_scram(xd_db_t *db, xd_str_t host, xd_str_t user, xd_scram_hash hash,
                  xd_scram_cred_t *out)
{
    xd_assert_off_loop();
    if ((unsigned)hash >= XD_SCRAM_HASH_COUNT)
        return XD_EINVAL;
    xd_db_conn_t *c;
    int rc = xd_db_acquire(db, &c);
    if (rc < 0)
        return rc;
    memset(out, 0, sizeof *out);
    out->hash = hash;
    users_get_t g = { out, false, false };
    xd_db_val_t p[] = { XD_DB_V_TEXT(host), XD_DB_V_TEXT(user),
                        XD_DB_V_CSTR(xd_scram_hash_name(hash)) };
    rc = xd_db_query(c,
                     "SELECT salt, iterations, stored_key, server_key FROM user_scram"
                     " WHERE host = ? AND username = ? AND hash = ?",
                     p, 3, users_get_row, &g);
    xd_db_release(c);
    if (rc < 0)
        return rc;
    if (!g.found)
        return XD_ENOTFOUND;
    if (g.bad) {
        XD_LOG(NULL, XD_ERROR, "db bad scram row", "host=%.*s user=%.*s hash=%s",
               (int)host.len, host.p, (int)user.len, user.p, xd_scram_hash_name(hash));
        return XD_EDB;
    }
    return 0;
}

int
xd_user_remove(xd_db_t *db, xd_str_t host, xd_str_t user)
{
    xd_assert_off_loop();
    xd_db_conn_t *c;
    int rc = xd_db_acquire(db, &c);
    if (rc < 0)
        return rc;
    /* One statement is atomic; ON DELETE CASCADE removes user_scram rows
     * (foreign_keys=ON on every connection). */
    xd_db_val_t p[] = { XD_DB_V_TEXT(host), XD_DB_V_TEXT(user) };
    rc = xd_db_query(c, "DELETE FROM users WHERE host = ? AND username = ?", p, 2, NULL, NULL);
    if (rc == 0 && xd_db_changes(c) == 0)
        rc = XD_ENOTFOUND;
    xd_db_release(c);
    return rc;
}

typedef struct users_list {
    xd_user_handler fn; /* caller's */
    void *arg;          /* caller's */
} users_list_t;

static int
users_list_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    users_list_t *l = arg;
    if (ncols != 1 || cols[0].type != XD_DB_TEXT)
        return XD_EDB;
    return l->fn(l->arg, cols[0].s);
}

int
xd_user_list(xd_db_t *db, xd_str_t host, xd_user_handler fn, void *arg)
{
    xd_assert_off_loop();
    xd_db_conn_t *c;
    int rc = xd_db_acquire(db, &c);
    if (rc < 0)
        return rc;
    users_list_t l = { fn, arg };
    xd_db_val_t p[] = { XD_DB_V_TEXT(host) };
    rc = xd_db_query(c, "SELECT username FROM users WHERE host = ? ORDER BY username", p, 1,
                     users_list_row, &l);
    xd_db_release(c);
    return rc;
}

int
xd_user_count(xd_db_t *db, xd_str_t host, int64_t *out)
{
    xd_assert_off_loop();
    xd_db_conn_t *c;
    int rc = xd_db_acquire(db, &c);
    if (rc < 0)
        return rc;
    xd_db_val_t p[] = { XD_DB_V_TEXT(host) };
    rc = xd_db_query_int64(c, "SELECT COUNT(*) FROM users WHERE host = ?", p, 1, out);
    xd_db_release(c);
    return rc;
}

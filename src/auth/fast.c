/*
 * fast.c — FAST tokens in the database (see fast.h).  The work runs on the
 * blocking pool (xd_db_async); nothing here runs PBKDF2.
 */
#include "auth/fast.h"

#include <openssl/crypto.h>
#include <string.h>
#include <time.h>

#include "auth/auth_int.h"
#include "xmppd/alloc.h"
#include "xmppd/err.h"

int64_t
xd_fast_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- get ---- */

typedef struct fast_get {
    char *host, *user, *client;
    xd_fast_tok_t toks[2];
    size_t n;
    xd_fast_get_cb cb;
    void *arg;
} fast_get_t;

static int
fast_get_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    fast_get_t *g = arg;
    if (ncols != 5 || g->n >= 2 || cols[0].type != XD_DB_BLOB ||
        cols[0].s.len != XD_FAST_KEY_LEN || cols[1].type != XD_DB_TEXT ||
        cols[1].s.len >= XD_FAST_MECH_MAX)
        return 0; /* not a row we wrote: ignored */
    xd_fast_tok_t *t = &g->toks[g->n++];
    memcpy(t->key, cols[0].s.p, XD_FAST_KEY_LEN);
    memcpy(t->mech, cols[1].s.p, cols[1].s.len);
    t->mech[cols[1].s.len] = '\0';
    t->slot = (int)cols[2].i;
    t->expires_ms = cols[3].i;
    t->count = cols[4].i;
    return 0;
}

static int
fast_get_work(xd_db_conn_t *c, void *arg)
{
    fast_get_t *g = arg;
    xd_db_val_t p[] = { XD_DB_V_CSTR(g->host), XD_DB_V_CSTR(g->user), XD_DB_V_CSTR(g->client),
                        XD_DB_V_INT(xd_fast_now_ms()) };
    return xd_db_query(c,
                       "SELECT token_hash, mechanism, slot, expires_at, replay_count"
                       " FROM fast_tokens WHERE host = ? AND username = ? AND client = ?"
                       " AND expires_at > ? ORDER BY slot DESC",
                       p, 4, fast_get_row, g);
}

static void
fast_get_done(void *arg, int status)
{
    fast_get_t *g = arg;
    g->cb(g->arg, status, status == 0 ? g->toks : NULL, status == 0 ? g->n : 0);
    OPENSSL_cleanse(g->toks, sizeof g->toks);
    xd_free(g->host);
    xd_free(g->user);
    xd_free(g->client);
    xd_free(g);
}

int
xd_fast_get(const char *host, const char *user, const char *client, xd_fast_get_cb cb, void *arg)
{
    if (!host || !user || !client || !cb)
        return XD_EINVAL;
    xd_db_t *db = auth_internal_db(host);
    if (db == NULL)
        return XD_ENOTSUP;
    fast_get_t *g = xd_new(fast_get_t);
    g->host = xd_strdup(host);
    g->user = xd_strdup(user);
    g->client = xd_strdup(client);
    g->cb = cb;
    g->arg = arg;
    int rc = xd_db_async(db, fast_get_work, fast_get_done, g);
    if (rc != 0) {
        xd_free(g->host);
        xd_free(g->user);
        xd_free(g->client);
        xd_free(g);
    }
    return rc;
}

/* ---- update ---- */

typedef struct fast_upd {
    xd_db_t *db;
    xd_fast_update_t u; /* strings owned */
    xd_auth_cb cb;
    void *arg;
} fast_upd_t;

static int
fast_upd_tx(xd_db_conn_t *c, void *arg)
{
    const xd_fast_update_t *u = &((fast_upd_t *)arg)->u;
    xd_db_val_t k[] = { XD_DB_V_CSTR(u->host), XD_DB_V_CSTR(u->user), XD_DB_V_CSTR(u->client) };
    int rc = 0;
    if (u->invalidate) {
        rc = xd_db_query(c, "DELETE FROM fast_tokens WHERE host = ? AND username = ? AND client = ?",
                         k, 3, NULL, NULL);
    } else if (u->used_slot >= 0) {
        if (u->count >= 0) {
            xd_db_val_t p[] = { XD_DB_V_INT(u->count), k[0], k[1], k[2], XD_DB_V_INT(u->used_slot) };
            rc = xd_db_query(c, "UPDATE fast_tokens SET replay_count = ? WHERE host = ? AND"
                                " username = ? AND client = ? AND slot = ?", p, 5, NULL, NULL);
        }
        if (rc == 0 && u->used_slot == 1) {
            /* XEP-0484 8.1: the new token is in use; the older one ends. */
            rc = xd_db_query(c, "DELETE FROM fast_tokens WHERE host = ? AND username = ? AND"
                                " client = ? AND slot = 0", k, 3, NULL, NULL);
            if (rc == 0)
                rc = xd_db_query(c, "UPDATE fast_tokens SET slot = 0 WHERE host = ? AND"
                                    " username = ? AND client = ? AND slot = 1", k, 3, NULL, NULL);
        }
    }
    if (rc == 0 && u->issue) {
        /* A new token replaces one issued before and never used. */
        rc = xd_db_query(c, "DELETE FROM fast_tokens WHERE host = ? AND username = ? AND"
                            " client = ? AND slot = 1", k, 3, NULL, NULL);
        xd_db_val_t p[] = { k[0], k[1], k[2], XD_DB_V_BLOB(u->key, XD_FAST_KEY_LEN),
                            XD_DB_V_CSTR(u->mech), XD_DB_V_INT(u->expires_ms) };
        if (rc == 0)
            rc = xd_db_query(c, "INSERT INTO fast_tokens (host, username, client, slot,"
                                " token_hash, mechanism, expires_at, replay_count)"
                                " VALUES (?, ?, ?, 1, ?, ?, ?, 0)", p, 6, NULL, NULL);
    }
    return rc;
}

static int
fast_upd_work(xd_db_conn_t *c, void *arg)
{
    (void)c;
    return xd_db_tx(((fast_upd_t *)arg)->db, fast_upd_tx, arg);
}

static void
fast_upd_done(void *arg, int status)
{
    fast_upd_t *f = arg;
    f->cb(f->arg, status < 0 ? status : 0);
    OPENSSL_cleanse(f->u.key, sizeof f->u.key);
    xd_free((char *)f->u.host);
    xd_free((char *)f->u.user);
    xd_free((char *)f->u.client);
    xd_free((char *)f->u.mech);
    xd_free(f);
}

int
xd_fast_update(const xd_fast_update_t *u, xd_auth_cb cb, void *arg)
{
    if (!u || !u->host || !u->user || !u->client || !cb || (u->issue && !u->mech))
        return XD_EINVAL;
    xd_db_t *db = auth_internal_db(u->host);
    if (db == NULL)
        return XD_ENOTSUP;
    fast_upd_t *f = xd_new(fast_upd_t);
    f->db = db;
    f->u = *u;
    f->u.host = xd_strdup(u->host);
    f->u.user = xd_strdup(u->user);
    f->u.client = xd_strdup(u->client);
    f->u.mech = u->mech ? xd_strdup(u->mech) : NULL;
    f->cb = cb;
    f->arg = arg;
    int rc = xd_db_async(db, fast_upd_work, fast_upd_done, f);
    if (rc != 0) {
        f->cb = NULL;
        xd_free((char *)f->u.host);
        xd_free((char *)f->u.user);
        xd_free((char *)f->u.client);
        xd_free((char *)f->u.mech);
        xd_free(f);
    }
    return rc;
}

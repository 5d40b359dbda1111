/*
 * migrate.c — versioned schema migrations per component (DESIGN.md 4).
 *
 * Every component that owns tables ("core" here; modules later, under their
 * own name) registers a list of numbered migrations.  xd_db_migrate() brings
 * each component from the version recorded in
 *
 *   schema_version(component TEXT PRIMARY KEY, version INTEGER, updated_at INTEGER)
 *
 * up to the highest version in its list, one component per transaction, so
 * a failed step leaves that component exactly at its old version.  A
 * recorded version above the code's is XD_EDB_SCHEMA: an older server must
 * not write to a database a newer one has changed.  A table, not PRAGMA
 * user_version, because the network backends have no such pragma.
 *
 * Invariants: the registry (components in registration order, "core" always
 * first) changes only under mig_mu; a registered list is validated (versions
 * 1, 2, … without gaps, at most one entry per (version, driver)) and lives
 * as long as the process.
 */
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "core/worker.h"
#include "storage/db_int.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"
#include "xmppd/log.h"

/* core/1: users and their SCRAM credentials (src/storage/users.c).  No
 * plaintext column: passwords are stored only as SCRAM credentials. */
static const char *const mig_core_v1[] = {
    "CREATE TABLE users ("
    " host {key} NOT NULL,"
    " username {key} NOT NULL,"
    " created_at {int} NOT NULL,"
    " PRIMARY KEY (host, username))",

    "CREATE TABLE user_scram ("
    " host {key} NOT NULL,"
    " username {key} NOT NULL,"
    " hash {key} NOT NULL CHECK (hash IN ('SHA-1', 'SHA-256', 'SHA-512')),"
    " salt {blob} NOT NULL,"
    " iterations {int} NOT NULL CHECK (iterations > 0),"
    " stored_key {blob} NOT NULL,"
    " server_key {blob} NOT NULL,"
    " PRIMARY KEY (host, username, hash),"
    " FOREIGN KEY (host, username) REFERENCES users (host, username) ON DELETE CASCADE)",
    NULL,
};

/* core/2: FAST tokens (XEP-0484, src/auth/fast.c), two slots per account
 * and client: 0 the token in use, 1 a newer one issued and not used yet.
 * Only SHA-256(token) is kept. */
static const char *const mig_core_v2[] = {
    "CREATE TABLE fast_tokens ("
    " host {key} NOT NULL,"
    " username {key} NOT NULL,"
    " client {key} NOT NULL,"
    " slot {int} NOT NULL CHECK (slot IN (0, 1)),"
    " token_hash {blob} NOT NULL,"
    " mechanism {text} NOT NULL,"
    " expires_at {int} NOT NULL,"
    " replay_count {int} NOT NULL,"
    " PRIMARY KEY (host, username, client, slot),"
    " FOREIGN KEY (host, username) REFERENCES users (host, username) ON DELETE CASCADE)",
    NULL,
};

static const xd_db_migration_t mig_core[] = {
    { 1, NULL, mig_core_v1 },
    { 2, NULL, mig_core_v2 },
    { 0, NULL, NULL },
};

typedef struct mig_comp {
    char *name;                    /* owned: "core", "mod_muc" */
    const xd_db_migration_t *list; /* caller's, {0}-terminated */
    unsigned max;                  /* highest version in list */
} mig_comp_t;

static pthread_mutex_t mig_mu = PTHREAD_MUTEX_INITIALIZER;
static mig_comp_t *mig_comps; /* registered components except core */
static size_t mig_ncomps;

/* Checks the shape of list and returns its highest version, or 0 when the
 * list is malformed. */
static unsigned
mig_validate(const xd_db_migration_t *list)
{
    unsigned max = 0;
    for (const xd_db_migration_t *m = list; m->version != 0; m++) {
        if (m->sql == NULL || (m->version != max && m->version != max + 1))
            return 0;
        for (const xd_db_migration_t *p = list; p < m; p++) {
            if (p->version == m->version &&
                (p->driver == m->driver ||
                 (p->driver != NULL && m->driver != NULL && strcmp(p->driver, m->driver) == 0)))
                return 0; /* two entries for one (version, driver) */
        }
        max = m->version;
    }
    return max;
}

int
xd_db_register_migrations(const char *component, const xd_db_migration_t *list)
{
    unsigned max = mig_validate(list);
    if (max == 0 || component == NULL || component[0] == '\0')
        return XD_EINVAL;
    int rc = 0;
    pthread_mutex_lock(&mig_mu);
    if (strcmp(component, "core") == 0)
        rc = XD_EEXIST;
    for (size_t i = 0; rc == 0 && i < mig_ncomps; i++)
        if (strcmp(mig_comps[i].name, component) == 0)
            rc = XD_EEXIST;
    if (rc == 0) {
        mig_comps = xd_realloc(mig_comps, (mig_ncomps + 1) * sizeof *mig_comps);
        mig_comps[mig_ncomps++] = (mig_comp_t){ xd_strdup(component), list, max };
    }
    pthread_mutex_unlock(&mig_mu);
    return rc;
}

int
xd_db_unregister_migrations(const char *component)
{
    int rc = XD_ENOTFOUND;
    pthread_mutex_lock(&mig_mu);
    for (size_t i = 0; i < mig_ncomps; i++) {
        if (strcmp(mig_comps[i].name, component) == 0) {
            xd_free(mig_comps[i].name);
            memmove(&mig_comps[i], &mig_comps[i + 1],
                    (mig_ncomps - i - 1) * sizeof *mig_comps);
            mig_ncomps--;
            rc = 0;
            break;
        }
    }
    pthread_mutex_unlock(&mig_mu);
    return rc;
}

/* The entry for (version, driver): the one for the driver, else the one
 * for its dialect (odbc over PostgreSQL takes "pgsql"'s), else the
 * portable one. */
static const xd_db_migration_t *
mig_pick(const xd_db_migration_t *list, unsigned version, const char *driver,
         const char *dialect)
{
    const xd_db_migration_t *any = NULL, *dl = NULL;
    for (const xd_db_migration_t *m = list; m->version != 0; m++) {
        if (m->version != version)
            continue;
        if (m->driver == NULL)
            any = m;
        else if (strcmp(m->driver, driver) == 0)
            return m;
        else if (strcmp(m->driver, dialect) == 0)
            dl = m;
    }
    return dl != NULL ? dl : any;
}

static int
mig_get_version(xd_db_conn_t *c, const char *component, unsigned *out)
{
    int64_t v = 0;
    xd_db_val_t p[] = { XD_DB_V_CSTR(component) };
    int rc = xd_db_query_int64(c, "SELECT version FROM schema_version WHERE component = ?", p, 1,
                               &v);
    if (rc == XD_ENOTFOUND) {
        v = 0;
        rc = 0;
    }
    if (rc == 0 && (v < 0 || v > (int64_t)UINT32_MAX))
        rc = XD_EDB_SCHEMA;
    if (rc == 0)
        *out = (unsigned)v;
    return rc;
}

static const char mig_create_table[] =
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " component {key} NOT NULL PRIMARY KEY,"
    " version {int} NOT NULL,"
    " updated_at {int} NOT NULL)";

/* One component's migration; the body of a transaction. */
static int
mig_apply(xd_db_conn_t *c, void *arg)
{
    const mig_comp_t *comp = arg;
    const char *driver = xd_db_driver_name(c->db);
    unsigned cur = 0;
    int rc = xd_db_exec(c, mig_create_table);
    if (rc == 0)
        rc = mig_get_version(c, comp->name, &cur);
    if (rc < 0)
        return rc;
    if (cur > comp->max) {
        XD_LOG(NULL, XD_ERROR, "db schema newer than server",
               "component=%s db_version=%u code_version=%u hint=\"upgrade xmppd or restore a "
               "backup\"",
               comp->name, cur, comp->max);
        return XD_EDB_SCHEMA;
    }
    if (cur == comp->max)
        return 0;

    for (unsigned v = cur + 1; v <= comp->max; v++) {
        const xd_db_migration_t *m = mig_pick(comp->list, v, driver, xd_db_dialect(c->db));
        if (m == NULL) {
            XD_LOG(NULL, XD_ERROR, "db migration missing", "component=%s version=%u driver=%s",
                   comp->name, v, driver);
            return XD_ENOTSUP;
        }
        for (const char *const *sql = m->sql; *sql != NULL; sql++) {
            rc = xd_db_exec(c, *sql);
            if (rc < 0) {
                XD_LOG(NULL, XD_ERROR, "db migration failed",
                       "component=%s version=%u err=\"%s\"", comp->name, v, xd_db_errmsg(c));
                return rc;
            }
        }
    }

    /* Portable upsert: UPDATE, then INSERT when there was no row. */
    xd_db_val_t p[] = { XD_DB_V_INT(comp->max), XD_DB_V_INT(time(NULL)),
                        XD_DB_V_CSTR(comp->name) };
    rc = xd_db_query(c, "UPDATE schema_version SET version = ?, updated_at = ? WHERE component = ?",
                     p, 3, NULL, NULL);
    if (rc == 0 && xd_db_changes(c) == 0)
        rc = xd_db_query(c,
                         "INSERT INTO schema_version (version, updated_at, component)"
                         " VALUES (?, ?, ?)",
                         p, 3, NULL, NULL);
    if (rc == 0)
        XD_LOG(NULL, XD_NOTICE, "db schema migrated", "component=%s from=%u to=%u", comp->name,
               cur, comp->max);
    return rc;
}

int
xd_db_migrate(xd_db_t *db)
{
    xd_assert_off_loop();

    /* Snapshot the registry so that migrating runs without mig_mu. */
    pthread_mutex_lock(&mig_mu);
    size_t n = mig_ncomps + 1;
    mig_comp_t *comps = xd_calloc(n, sizeof *comps);
    comps[0] = (mig_comp_t){ xd_strdup("core"), mig_core, mig_validate(mig_core) };
    for (size_t i = 1; i < n; i++) {
        comps[i] = mig_comps[i - 1];
        comps[i].name = xd_strdup(mig_comps[i - 1].name);
    }
    pthread_mutex_unlock(&mig_mu);

    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (rc == 0)
            rc = xd_db_tx(db, mig_apply, &comps[i]);
        xd_free(comps[i].name);
    }
    xd_free(comps);
    return rc;
}

int
xd_db_schema_version(xd_db_t *db, const char *component, unsigned *out)
{
    xd_assert_off_loop();
    xd_db_conn_t *c;
    int rc = xd_db_acquire(db, &c);
    if (rc < 0)
        return rc;
    rc = mig_get_version(c, component, out); /* xd_db_open made the table */
    xd_db_release(c);
    return rc;
}

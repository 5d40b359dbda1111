/*
 * dbhosts.c — the databases of the served hosts (storage/dbhosts.h): one pool
 * per distinct database, and the host → pool table.
 *
 * The pools are kept in opening order (dbh.pools); each keeps the settings
 * that identify its database (a copy of the first scope that named it) and
 * the hosts that use it.  dbh.hosts maps a served host to its pool's index
 * + 1.  Pools are only added by xd_db_hosts_open and removed by
 * xd_db_hosts_close; a reload only remaps hosts.
 *
 * Invariants: every entry of dbh.hosts points at an open pool; a pool's db
 * and key never change while it is open; the lists change only under the
 * write lock.
 */
#include <pthread.h>
#include <string.h>

#include "storage/dbhosts.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"
#include "xmppd/log.h"
#include "xmppd/map.h"

/* One open database. */
typedef struct dbh_pool {
    xd_db_t *db;        /* owned */
    xd_sql_conf_t key;  /* type, server, port, database (owned copies); the rest unused */
    char *label;        /* owned: "sqlite PATH", "pgsql DB@SERVER:PORT", "odbc DB" */
    char **hosts;       /* owned: the hosts that use it, in config order */
    size_t nhosts;      /* number of hosts */
} dbh_pool_t;

static struct {
    pthread_rwlock_t lock; /* guards the fields below */
    dbh_pool_t *pools;     /* npools, owned */
    size_t npools;         /* number of pools */
    xd_map_t hosts;        /* host → pool index + 1 */
} dbh = { .lock = PTHREAD_RWLOCK_INITIALIZER };

/* ---- one pool ------------------------------------------------------------------------------- */

static char *
dbh_label(const xd_sql_conf_t *q)
{
    const char *type = xd_sql_type_name(q->type);
    if (q->type == XD_SQL_SQLITE || q->type == XD_SQL_ODBC)
        return xd_asprintf("%s %s", type, q->database); /* odbc's server may hold a password */
    return xd_asprintf("%s %s@%s:%d", type, q->database, q->server ? q->server : "", q->port);
}

/* Opens and migrates the database of q. */
static int
dbh_open_db(const xd_sql_conf_t *q, xd_db_t **out)
{
    /* SQLite's own page cache per connection is kept small: the operating
     * system caches the file anyway, and every pooled connection would hold
     * its own copy of the same pages. */
    xd_db_params_t params = { .driver = xd_sql_type_name(q->type),
                              .path = q->database,
                              .max_conns = (unsigned)q->pool_size,
                              .cache_kib = 2048 };
    if (q->type != XD_SQL_SQLITE) {
        params.path = NULL;
        params.server = q->server;
        params.port = (unsigned)q->port;
        params.database = q->database;
        params.username = q->username;
        params.password = q->password;
        params.ssl = q->ssl;
        params.ssl_cafile = q->ssl_cafile;
        params.fault_wait_ms = (unsigned)q->fault_wait_ms;
    }
    return xd_db_open(&params, out);
}

static void
dbh_pool_free(dbh_pool_t *p)
{
    xd_db_close(p->db);
    xd_free(p->key.server);
    xd_free(p->key.database);
    xd_free(p->label);
    for (size_t i = 0; i < p->nhosts; i++)
        xd_free(p->hosts[i]);
    xd_free(p->hosts);
    memset(p, 0, sizeof *p);
}

static void
dbh_pool_add_host(dbh_pool_t *p, const char *host)
{
    p->hosts = xd_realloc(p->hosts, (p->nhosts + 1) * sizeof *p->hosts);
    p->hosts[p->nhosts++] = xd_strdup(host);
}

/* The index of the pool of q's database in pools[0..n), or n. */
static size_t
dbh_find(const dbh_pool_t *pools, size_t n, const xd_sql_conf_t *q)
{
    size_t i = 0;
    while (i < n && !xd_sql_conf_same_db(&pools[i].key, q))
        i++;
    return i;
}

/* A human list of the hosts of pool p, for error messages (malloc'd). */
static char *
dbh_host_list(const dbh_pool_t *p)
{
    size_t len = 1;
    for (size_t i = 0; i < p->nhosts; i++)
        len += strlen(p->hosts[i]) + 2;
    char *s = xd_malloc(len);
    s[0] = '\0';
    for (size_t i = 0; i < p->nhosts; i++) {
        if (i)
            strcat(s, ", ");
        strcat(s, p->hosts[i]);
    }
    return s;
}

/* ---- the table ------------------------------------------------------------------------------ */

int
xd_db_hosts_open(const xd_config_t *cfg, char **err)
{
    *err = NULL;
    XD_ASSERT(dbh.npools == 0); /* opened once, closed before another open */
    size_t nhosts = xd_config_host_count(cfg);
    dbh_pool_t *pools = xd_calloc(nhosts ? nhosts : 1, sizeof *pools);
    size_t n = 0;
    size_t *which = xd_calloc(nhosts ? nhosts : 1, sizeof *which);
    /* Group first (config order: the top level's database comes first when
     * the first host uses it), then open, so an error names every host. */
    for (size_t i = 0; i < nhosts; i++) {
        const char *host = xd_config_host_name(cfg, i);
        const xd_sql_conf_t *q = xd_config_sql(cfg, host);
        size_t k = dbh_find(pools, n, q);
        if (k == n) {
            dbh_pool_t *p = &pools[n++];
            p->key = (xd_sql_conf_t){ .type = q->type,
                                      .server = q->server ? xd_strdup(q->server) : NULL,
                                      .port = q->port,
                                      .database = xd_strdup(q->database) };
            p->label = dbh_label(q);
        }
        dbh_pool_add_host(&pools[k], host);
        which[i] = k;
    }
    int rc = 0;
    for (size_t k = 0; k < n && rc == 0; k++) {
        /* The settings of the first host that names it (the load checked
         * that the others agree). */
        size_t first = 0;
        while (which[first] != k)
            first++;
        const xd_sql_conf_t *q = xd_config_sql(cfg, xd_config_host_name(cfg, first));
        rc = dbh_open_db(q, &pools[k].db);
        if (rc != 0) {
            char *hl = dbh_host_list(&pools[k]);
            *err = xd_asprintf("cannot open the database %s (hosts %s): %s", pools[k].label, hl,
                               xd_strerror(rc));
            xd_free(hl);
            XD_LOG(NULL, XD_CRIT, "cannot open storage", "database=\"%s\" err=%s",
                   pools[k].label, xd_strerror(rc));
        } else {
            char *hl = dbh_host_list(&pools[k]);
            XD_LOG(NULL, XD_NOTICE, "storage ready", "driver=%s database=\"%s\" hosts=\"%s\"",
                   xd_sql_type_name(q->type), pools[k].label, hl);
            xd_free(hl);
        }
    }
    xd_free(which);
    if (rc != 0) {
        for (size_t k = 0; k < n; k++)
            dbh_pool_free(&pools[k]);
        xd_free(pools);
        return rc;
    }
    pthread_rwlock_wrlock(&dbh.lock);
    dbh.pools = pools;
    dbh.npools = n;
    for (size_t k = 0; k < n; k++)
        for (size_t i = 0; i < pools[k].nhosts; i++)
            xd_map_put(&dbh.hosts, xd_str_c(pools[k].hosts[i]), (void *)(uintptr_t)(k + 1));
    pthread_rwlock_unlock(&dbh.lock);
    return 0;
}

int
xd_db_hosts_update(const xd_config_t *cfg, char **err)
{
    *err = NULL;
    size_t nhosts = xd_config_host_count(cfg);
    pthread_rwlock_wrlock(&dbh.lock);
    /* Check first: a refused update changes nothing. */
    for (size_t i = 0; i < nhosts; i++) {
        const char *host = xd_config_host_name(cfg, i);
        size_t k = dbh_find(dbh.pools, dbh.npools, xd_config_sql(cfg, host));
        uintptr_t was = (uintptr_t)xd_map_get(&dbh.hosts, xd_str_c(host));
        if (k == dbh.npools || (was && was != k + 1)) {
            *err = xd_asprintf("host %s: its database %s: takes effect only at a restart",
                               host, k == dbh.npools ? "is not open" : "changed");
            pthread_rwlock_unlock(&dbh.lock);
            return XD_ENOTFOUND;
        }
    }
    /* Only additions: a host no longer served keeps its entry (a reload
     * that fails after this step leaves the running hosts as they were). */
    for (size_t i = 0; i < nhosts; i++) {
        const char *host = xd_config_host_name(cfg, i);
        if (xd_map_get(&dbh.hosts, xd_str_c(host)))
            continue;
        size_t k = dbh_find(dbh.pools, dbh.npools, xd_config_sql(cfg, host));
        dbh_pool_add_host(&dbh.pools[k], host);
        xd_map_put(&dbh.hosts, xd_str_c(host), (void *)(uintptr_t)(k + 1));
    }
    pthread_rwlock_unlock(&dbh.lock);
    return 0;
}

xd_db_t *
xd_db_host(const char *host)
{
    xd_db_t *db = NULL;
    if (!host)
        return NULL;
    pthread_rwlock_rdlock(&dbh.lock);
    uintptr_t k = (uintptr_t)xd_map_get(&dbh.hosts, xd_str_c(host));
    if (k)
        db = dbh.pools[k - 1].db;
    pthread_rwlock_unlock(&dbh.lock);
    return db;
}

xd_db_t *
xd_db_hosts_default(void)
{
    pthread_rwlock_rdlock(&dbh.lock);
    xd_db_t *db = dbh.npools ? dbh.pools[0].db : NULL;
    pthread_rwlock_unlock(&dbh.lock);
    return db;
}

size_t
xd_db_hosts_count(void)
{
    pthread_rwlock_rdlock(&dbh.lock);
    size_t n = dbh.npools;
    pthread_rwlock_unlock(&dbh.lock);
    return n;
}

void
xd_db_hosts_each(xd_db_pool_fn fn, void *arg)
{
    pthread_rwlock_rdlock(&dbh.lock);
    for (size_t k = 0; k < dbh.npools; k++) {
        const dbh_pool_t *p = &dbh.pools[k];
        fn(arg, p->db, p->label, (const char *const *)p->hosts, p->nhosts);
    }
    pthread_rwlock_unlock(&dbh.lock);
}

int
xd_db_hosts_migrate(char **err)
{
    *err = NULL;
    int rc = 0;
    pthread_rwlock_rdlock(&dbh.lock);
    for (size_t k = 0; k < dbh.npools && rc == 0; k++)
        if ((rc = xd_db_migrate(dbh.pools[k].db)) != 0)
            *err = xd_asprintf("database %s: %s", dbh.pools[k].label, xd_strerror(rc));
    pthread_rwlock_unlock(&dbh.lock);
    return rc;
}

void
xd_db_hosts_close(void)
{
    pthread_rwlock_wrlock(&dbh.lock);
    dbh_pool_t *pools = dbh.pools;
    size_t n = dbh.npools;
    dbh.pools = NULL;
    dbh.npools = 0;
    xd_map_free(&dbh.hosts, NULL);
    pthread_rwlock_unlock(&dbh.lock);
    for (size_t k = 0; k < n; k++)
        dbh_pool_free(&pools[k]);
    xd_free(pools);
}

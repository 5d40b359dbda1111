/*
 * test_storage_net.c — the network storage drivers ("mysql", "odbc")
 * through the storage interface, against a real server.
 *
 * The server comes from the integration tests: test_storage_mysql.py starts
 * a MariaDB (tests/integration/mariadb.py) and a PostgreSQL reached through
 * psqlODBC, creates the core tables in that server's dialect (the dialect
 * layer's job, not this test's), and runs this program with
 *
 *   XD_TEST_DB_DRIVER    mysql | odbc
 *   XD_TEST_DB_CONNINFO  the driver's connection string
 *   XD_TEST_DB_DIALECT   mysql | pgsql (the SQL of the server behind it)
 *
 * Without them (`meson test`) every test is skipped.
 *
 * Covered: open and the migration runner (core already at its version, a
 * test component migrated once, per-driver DDL), the users API end to end
 * with the cascade, typed values (int64 extremes, UTF-8 text, empty text,
 * blobs with NUL bytes, 200 KB blob, NULL), statement errors (parameter
 * count, constraint mapped to XD_EDB_CONSTRAINT, unknown table), commit /
 * rollback / savepoint nesting, nested queries from a row handler, lock wait
 * timeout mapped to XD_EDB_BUSY (mysql), a connection killed by the server
 * (reads and writes after it work, a transaction whose connection dies is
 * rerun whole), and an unreachable server (open fails cleanly).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "xmppd/err.h"
#include "xmppd/log.h"
#include "xmppd/scram.h"
#include "xmppd/storage.h"

#define HOST XD_STR("example.org")

static const char *env_driver, *env_conninfo, *env_dialect;

static bool
is_mysql(void)
{
    return strcmp(env_dialect, "mysql") == 0;
}

/* The test component's table in each dialect. */
static const char *const mig_t1_mysql[] = {
    "CREATE TABLE nt_vals (k BIGINT NOT NULL PRIMARY KEY, i BIGINT, t TEXT, b LONGBLOB,"
    " u VARCHAR(64) UNIQUE)",
    NULL,
};
static const char *const mig_t1_pgsql[] = {
    "CREATE TABLE nt_vals (k BIGINT NOT NULL PRIMARY KEY, i BIGINT, t TEXT, b BYTEA,"
    " u TEXT UNIQUE)",
    NULL,
};
static const xd_db_migration_t mig_test[] = {
    { 1, "mysql", mig_t1_mysql },
    { 1, "odbc", mig_t1_pgsql },
    { 0, NULL, NULL },
};

static xd_db_t *
net_open(void)
{
    xd_db_params_t p = { .driver = env_driver, .conninfo = env_conninfo, .max_conns = 4,
                         .busy_timeout_ms = 1000 };
    xd_db_t *db = NULL;
    int rc = xd_db_open(&p, &db);
    if (rc != 0)
        fail_msg("xd_db_open: %s", xd_strerror(rc));
    return db;
}

static int
setup(void **state)
{
    (void)state;
    if (env_driver == NULL)
        return 0;
    xd_db_t *db = net_open();
    xd_db_conn_t *c;
    assert_int_equal(xd_db_acquire(db, &c), 0);
    assert_int_equal(xd_db_exec(c, "DELETE FROM nt_vals"), 0);
    assert_int_equal(xd_db_exec(c, "DELETE FROM users"), 0);
    xd_db_release(c);
    xd_db_close(db);
    return 0;
}

#define NEED_SERVER()                                                        \
    do {                                                                     \
        if (env_driver == NULL)                                              \
            skip();                                                          \
    } while (0)

static int64_t
q1(xd_db_t *db, const char *sql)
{
    xd_db_conn_t *c;
    int64_t v = -1;
    assert_int_equal(xd_db_acquire(db, &c), 0);
    int rc = xd_db_query_int64(c, sql, NULL, 0, &v);
    if (rc != 0)
        fail_msg("%s: %s (%s)", sql, xd_strerror(rc), xd_db_errmsg(c));
    xd_db_release(c);
    return v;
}

/* ---- migrations and users ------------------------------------------------ */

static void
test_net__open_and_migrations(void **state)
{
    (void)state;
    NEED_SERVER();
    xd_db_t *db = net_open();
    unsigned v = 0;
    assert_int_equal(xd_db_schema_version(db, "core", &v), 0);
    assert_int_equal(v, 2);
    assert_int_equal(xd_db_schema_version(db, "nettest", &v), 0);
    assert_int_equal(v, 1);
    assert_string_equal(xd_db_driver_name(db), env_driver);
    xd_db_close(db);
    /* Reopening migrates nothing and fails nothing. */
    db = net_open();
    assert_int_equal(xd_db_schema_version(db, "nettest", &v), 0);
    assert_int_equal(v, 1);
    xd_db_close(db);
}

typedef struct names {
    char buf[256];
    size_t len;
} names_t;

static int
names_add(void *arg, xd_str_t user)
{
    names_t *n = arg;
    n->len += (size_t)snprintf(n->buf + n->len, sizeof n->buf - n->len, "%.*s,", (int)user.len,
                               user.p);
    return 0;
}

static void
test_net__users(void **state)
{
    (void)state;
    NEED_SERVER();
    xd_db_t *db = net_open();
    xd_scram_cred_t creds[XD_SCRAM_HASH_COUNT];
    assert_int_equal(xd_scram_creds_make(XD_STR("secret"), 16, creds), 0);

    assert_int_equal(xd_user_exists(db, HOST, XD_STR("alice")), 0);
    assert_int_equal(xd_user_create(db, HOST, XD_STR("alice"), creds, XD_SCRAM_HASH_COUNT), 0);
    /* The duplicate primary key maps to XD_EDB_CONSTRAINT, which users.c
     * turns into XD_EEXIST. */
    assert_int_equal(xd_user_create(db, HOST, XD_STR("alice"), creds, XD_SCRAM_HASH_COUNT),
                     XD_EEXIST);
    assert_int_equal(xd_user_create(db, HOST, XD_STR("bob"), NULL, 0), 0);
    assert_int_equal(xd_user_create(db, HOST, XD_STR("\xc3\xa9lodie"), NULL, 0), 0);
    assert_int_equal(xd_user_create(db, XD_STR("other.org"), XD_STR("carol"), NULL, 0), 0);
    assert_int_equal(xd_user_exists(db, HOST, XD_STR("alice")), 1);
    assert_int_equal(xd_user_exists(db, HOST, XD_STR("Alice")), 0); /* bytewise */

    for (unsigned h = 0; h < XD_SCRAM_HASH_COUNT; h++) {
        xd_scram_cred_t got;
        assert_int_equal(xd_user_get_scram(db, HOST, XD_STR("alice"), creds[h].hash, &got), 0);
        assert_int_equal(got.salt_len, creds[h].salt_len);
        assert_memory_equal(got.salt, creds[h].salt, got.salt_len);
        assert_memory_equal(got.stored_key, creds[h].stored_key,
                            xd_scram_key_len(creds[h].hash));
        bool ok = false;
        assert_int_equal(xd_scram_cred_check(&got, XD_STR("secret"), &ok), 0);
        assert_true(ok);
    }
    xd_scram_cred_t got;
    assert_int_equal(xd_user_get_scram(db, HOST, XD_STR("bob"), XD_SCRAM_SHA256, &got),
                     XD_ENOTFOUND);
    assert_int_equal(xd_user_set_scram(db, HOST, XD_STR("bob"), creds, 1), 0);
    assert_int_equal(xd_user_get_scram(db, HOST, XD_STR("bob"), creds[0].hash, &got), 0);
    assert_int_equal(xd_user_set_scram(db, HOST, XD_STR("nobody"), creds, 1), XD_ENOTFOUND);

    int64_t n = 0;
    assert_int_equal(xd_user_count(db, HOST, &n), 0);
    assert_int_equal(n, 3);
    names_t names = { "", 0 };
    assert_int_equal(xd_user_list(db, HOST, names_add, &names), 0);
    assert_string_equal(names.buf, "alice,bob,\xc3\xa9lodie,");

    assert_int_equal(xd_user_remove(db, HOST, XD_STR("alice")), 0);
    assert_int_equal(xd_user_remove(db, HOST, XD_STR("alice")), XD_ENOTFOUND);
    /* ON DELETE CASCADE took the credentials. */
    assert_int_equal(q1(db, "SELECT COUNT(*) FROM user_scram WHERE username = 'alice'"), 0);
    assert_int_equal(xd_user_count(db, HOST, &n), 0);
    assert_int_equal(n, 2);
    xd_db_close(db);
}

/* ---- values ---------------------------------------------------------------- */

typedef struct row_got {
    int n;
    xd_db_val_t v[4];
    char bytes[4][256];
    size_t big_len;
    bool big_ok;
} row_got_t;

static int
row_keep(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    row_got_t *g = arg;
    assert_int_equal(ncols, 4);
    for (size_t i = 0; i < 4; i++) {
        g->v[i] = cols[i];
        if (cols[i].type == XD_DB_TEXT || cols[i].type == XD_DB_BLOB) {
            size_t len = cols[i].s.len < 256 ? cols[i].s.len : 256;
            memcpy(g->bytes[i], cols[i].s.p, len);
            g->v[i].s.p = g->bytes[i];
        }
    }
    g->n++;
    return 0;
}

static int
put(xd_db_conn_t *c, int64_t k, xd_db_val_t i, xd_db_val_t t, xd_db_val_t b)
{
    xd_db_val_t p[] = { XD_DB_V_INT(k), i, t, b };
    return xd_db_query(c, "INSERT INTO nt_vals (k, i, t, b) VALUES (?, ?, ?, ?)", p, 4, NULL,
                       NULL);
}

static row_got_t
get(xd_db_conn_t *c, int64_t k)
{
    row_got_t g;
    memset(&g, 0, sizeof g);
    xd_db_val_t p[] = { XD_DB_V_INT(k) };
    int rc = xd_db_query(c, "SELECT k, i, t, b FROM nt_vals WHERE k = ?", p, 1, row_keep, &g);
    if (rc != 0)
        fail_msg("select: %s (%s)", xd_strerror(rc), xd_db_errmsg(c));
    assert_int_equal(g.n, 1);
    return g;
}

static int
big_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    row_got_t *g = arg;
    assert_int_equal(ncols, 1);
    assert_int_equal(cols[0].type, XD_DB_BLOB);
    g->big_len = cols[0].s.len;
    g->big_ok = true;
    for (size_t i = 0; i < cols[0].s.len; i++)
        if ((unsigned char)cols[0].s.p[i] != (unsigned char)(i * 7))
            g->big_ok = false;
    return 0;
}

static void
test_net__typed_values(void **state)
{
    (void)state;
    NEED_SERVER();
    xd_db_t *db = net_open();
    xd_db_conn_t *c;
    assert_int_equal(xd_db_acquire(db, &c), 0);
    static const char utf8[] = "h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9d\x84\x9e 'q' \"d\" \\ %_";
    static const char blob[] = { 0, 1, 0, (char)0xff, 'x', 0, (char)0x80 };

    assert_int_equal(put(c, 1, XD_DB_V_INT(INT64_MAX), XD_DB_V_CSTR(utf8),
                         XD_DB_V_BLOB(blob, sizeof blob)),
                     0);
    assert_int_equal(put(c, 2, XD_DB_V_INT(INT64_MIN), XD_DB_V_CSTR(""), XD_DB_V_BLOB(NULL, 0)),
                     0);
    assert_int_equal(put(c, 3, XD_DB_V_NULL, XD_DB_V_NULL, XD_DB_V_NULL), 0);
    assert_int_equal(put(c, -1, XD_DB_V_INT(-1), XD_DB_V_TEXT(XD_STR("a\nb")), XD_DB_V_NULL), 0);

    row_got_t g = get(c, 1);
    assert_int_equal(g.v[0].type, XD_DB_INT64);
    assert_int_equal(g.v[0].i, 1);
    assert_int_equal(g.v[1].type, XD_DB_INT64);
    assert_true(g.v[1].i == INT64_MAX);
    assert_int_equal(g.v[2].type, XD_DB_TEXT);
    assert_int_equal(g.v[2].s.len, strlen(utf8));
    assert_memory_equal(g.v[2].s.p, utf8, strlen(utf8));
    assert_int_equal(g.v[3].type, XD_DB_BLOB);
    assert_int_equal(g.v[3].s.len, sizeof blob);
    assert_memory_equal(g.v[3].s.p, blob, sizeof blob);

    g = get(c, 2);
    assert_true(g.v[1].i == INT64_MIN);
    assert_int_equal(g.v[2].type, XD_DB_TEXT);
    assert_int_equal(g.v[2].s.len, 0);
    assert_int_equal(g.v[3].type, XD_DB_BLOB);
    assert_int_equal(g.v[3].s.len, 0);

    g = get(c, 3);
    for (int i = 1; i < 4; i++)
        assert_int_equal(g.v[i].type, XD_DB_NULL);

    g = get(c, -1);
    assert_int_equal(g.v[0].i, -1);
    assert_int_equal(g.v[2].s.len, 3);

    /* Text compares bytewise with a parameter. */
    xd_db_val_t pt[] = { XD_DB_V_CSTR(utf8) };
    int64_t k = 0;
    assert_int_equal(xd_db_query_int64(c, "SELECT k FROM nt_vals WHERE t = ?", pt, 1, &k), 0);
    assert_int_equal(k, 1);

    /* A 200 KB blob. */
    size_t bl = 200 * 1024;
    char *big = malloc(bl);
    for (size_t i = 0; i < bl; i++)
        big[i] = (char)(i * 7);
    assert_int_equal(put(c, 10, XD_DB_V_NULL, XD_DB_V_NULL, XD_DB_V_BLOB(big, bl)), 0);
    free(big);
    memset(&g, 0, sizeof g);
    assert_int_equal(xd_db_query(c, "SELECT b FROM nt_vals WHERE k = 10", NULL, 0, big_row, &g),
                     0);
    assert_int_equal(g.big_len, bl);
    assert_true(g.big_ok);

    /* Aggregates come back as integers. */
    assert_int_equal(q1(db, "SELECT COUNT(*) FROM nt_vals"), 5);
    assert_int_equal(q1(db, "SELECT SUM(k) FROM nt_vals WHERE k < 5"), 5);
    assert_int_equal(q1(db, "SELECT MAX(k) FROM nt_vals"), 10);

    /* changes() counts matched rows, also when the value does not change. */
    xd_db_val_t pu[] = { XD_DB_V_INT(-1) };
    assert_int_equal(xd_db_query(c, "UPDATE nt_vals SET i = ? WHERE k = -1", pu, 1, NULL, NULL),
                     0);
    assert_int_equal(xd_db_changes(c), 1);
    assert_int_equal(xd_db_query(c, "DELETE FROM nt_vals WHERE k > 1000", NULL, 0, NULL, NULL),
                     0);
    assert_int_equal(xd_db_changes(c), 0);
    xd_db_release(c);
    xd_db_close(db);
}

static void
test_net__errors(void **state)
{
    (void)state;
    NEED_SERVER();
    xd_db_t *db = net_open();
    xd_db_conn_t *c;
    assert_int_equal(xd_db_acquire(db, &c), 0);
    assert_int_equal(put(c, 1, XD_DB_V_INT(1), XD_DB_V_NULL, XD_DB_V_NULL), 0);
    assert_int_equal(put(c, 1, XD_DB_V_INT(2), XD_DB_V_NULL, XD_DB_V_NULL), XD_EDB_CONSTRAINT);
    assert_true(strlen(xd_db_errmsg(c)) > 0);
    xd_db_val_t pu[] = { XD_DB_V_CSTR("same") };
    assert_int_equal(
        xd_db_query(c, "INSERT INTO nt_vals (k, u) VALUES (7, ?)", pu, 1, NULL, NULL), 0);
    assert_int_equal(
        xd_db_query(c, "INSERT INTO nt_vals (k, u) VALUES (8, ?)", pu, 1, NULL, NULL),
        XD_EDB_CONSTRAINT);
    assert_int_equal(xd_db_query(c, "INSERT INTO nt_vals (k) VALUES (NULL)", NULL, 0, NULL, NULL),
                     XD_EDB_CONSTRAINT);
    /* A foreign key: credentials of a user that does not exist. */
    xd_db_val_t pf[] = { XD_DB_V_CSTR("x"), XD_DB_V_BLOB("s", 1) };
    assert_int_equal(xd_db_query(c,
                                 "INSERT INTO user_scram (host, username, hash, salt, iterations,"
                                 " stored_key, server_key) VALUES ('h', ?, 'SHA-1', ?, 1, '', '')",
                                 pf, 2, NULL, NULL),
                     XD_EDB_CONSTRAINT);
    /* Parameter count. */
    assert_int_equal(xd_db_query(c, "SELECT k FROM nt_vals WHERE k = ?", NULL, 0, NULL, NULL),
                     XD_EINVAL);
    assert_int_equal(xd_db_query(c, "SELECT k FROM nt_vals", pu, 1, NULL, NULL), XD_EINVAL);
    /* Unknown table: a plain driver failure with the server's message. */
    assert_int_equal(xd_db_query(c, "SELECT * FROM no_such_table", NULL, 0, NULL, NULL), XD_EDB);
    assert_non_null(strstr(xd_db_errmsg(c), "no_such_table"));
    /* The connection still works. */
    assert_int_equal(q1(db, "SELECT COUNT(*) FROM nt_vals"), 2);
    xd_db_release(c);
    xd_db_close(db);
}

/* ---- transactions ---------------------------------------------------------- */

typedef struct tx_arg {
    xd_db_t *db;
    int64_t k;
    int ret;
    int runs;
} tx_arg_t;

static int
tx_insert(xd_db_conn_t *c, void *arg)
{
    tx_arg_t *a = arg;
    a->runs++;
    int rc = put(c, a->k, XD_DB_V_INT(a->k), XD_DB_V_NULL, XD_DB_V_NULL);
    return rc < 0 ? rc : a->ret;
}

static int
tx_outer(xd_db_conn_t *c, void *arg)
{
    tx_arg_t *a = arg;
    int rc = put(c, a->k, XD_DB_V_INT(1), XD_DB_V_NULL, XD_DB_V_NULL);
    if (rc < 0)
        return rc;
    tx_arg_t in_fail = { a->db, a->k + 1, XD_EINVAL, 0 };
    assert_int_equal(xd_db_tx(a->db, tx_insert, &in_fail), XD_EINVAL); /* savepoint rolled back */
    tx_arg_t in_ok = { a->db, a->k + 2, 0, 0 };
    assert_int_equal(xd_db_tx(a->db, tx_insert, &in_ok), 0);
    return a->ret;
}

static void
test_net__transactions(void **state)
{
    (void)state;
    NEED_SERVER();
    xd_db_t *db = net_open();
    tx_arg_t a = { db, 1, 0, 0 };
    assert_int_equal(xd_db_tx(db, tx_insert, &a), 0);
    a = (tx_arg_t){ db, 2, XD_EINVAL, 0 };
    assert_int_equal(xd_db_tx(db, tx_insert, &a), XD_EINVAL);
    assert_int_equal(q1(db, "SELECT COUNT(*) FROM nt_vals WHERE k IN (1, 2)"), 1);

    a = (tx_arg_t){ db, 100, 5, 0 };
    assert_int_equal(xd_db_tx(db, tx_outer, &a), 5);
    assert_int_equal(q1(db, "SELECT COUNT(*) FROM nt_vals WHERE k >= 100"), 2);
    assert_int_equal(q1(db, "SELECT COUNT(*) FROM nt_vals WHERE k = 101"), 0);

    /* The outer body fails: what the released savepoint did goes too. */
    a = (tx_arg_t){ db, 200, XD_ENOTFOUND, 0 };
    assert_int_equal(xd_db_tx(db, tx_outer, &a), XD_ENOTFOUND);
    assert_int_equal(q1(db, "SELECT COUNT(*) FROM nt_vals WHERE k >= 200"), 0);
    xd_db_close(db);
}

/* A row handler that runs queries on the same connection, the same SQL
 * included. */
typedef struct nest {
    xd_db_conn_t *c;
    int rows, inner;
} nest_t;

static int
inner_row(void *arg, const xd_db_val_t *cols, size_t n)
{
    (void)cols;
    (void)n;
    ((nest_t *)arg)->inner++;
    return 0;
}

static int
outer_row(void *arg, const xd_db_val_t *cols, size_t n)
{
    nest_t *s = arg;
    assert_int_equal(n, 1);
    s->rows++;
    xd_db_val_t p[] = { cols[0] };
    assert_int_equal(xd_db_query(s->c, "SELECT k FROM nt_vals WHERE k >= ? ORDER BY k", p, 1,
                                 inner_row, s),
                     0);
    xd_db_val_t pu[] = { XD_DB_V_INT(cols[0].i * 10), cols[0] };
    assert_int_equal(xd_db_query(s->c, "UPDATE nt_vals SET i = ? WHERE k = ?", pu, 2, NULL, NULL),
                     0);
    return 0;
}

static void
test_net__nested_queries(void **state)
{
    (void)state;
    NEED_SERVER();
    xd_db_t *db = net_open();
    xd_db_conn_t *c;
    assert_int_equal(xd_db_acquire(db, &c), 0);
    for (int k = 1; k <= 3; k++)
        assert_int_equal(put(c, k, XD_DB_V_NULL, XD_DB_V_NULL, XD_DB_V_NULL), 0);
    nest_t s = { c, 0, 0 };
    xd_db_val_t p[] = { XD_DB_V_INT(1) };
    assert_int_equal(
        xd_db_query(c, "SELECT k FROM nt_vals WHERE k >= ? ORDER BY k", p, 1, outer_row, &s), 0);
    assert_int_equal(s.rows, 3);
    assert_int_equal(s.inner, 3 + 2 + 1);
    assert_int_equal(q1(db, "SELECT SUM(i) FROM nt_vals"), 60);
    xd_db_release(c);
    xd_db_close(db);
}

/* ---- busy ------------------------------------------------------------------ */

typedef struct lock_holder {
    xd_db_t *db;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stage; /* 1: lock held; 2: may release */
} lock_holder_t;

static int
hold_lock(xd_db_conn_t *c, void *arg)
{
    lock_holder_t *h = arg;
    assert_int_equal(xd_db_query(c, "UPDATE nt_vals SET i = 1 WHERE k = 1", NULL, 0, NULL, NULL),
                     0);
    pthread_mutex_lock(&h->mu);
    h->stage = 1;
    pthread_cond_broadcast(&h->cv);
    while (h->stage != 2)
        pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
    return 0;
}

static void *
holder_main(void *arg)
{
    lock_holder_t *h = arg;
    assert_int_equal(xd_db_tx(h->db, hold_lock, h), 0);
    return NULL;
}

static void
test_net__lock_wait_is_busy(void **state)
{
    (void)state;
    NEED_SERVER();
    if (!is_mysql())
        skip(); /* PostgreSQL waits for locks without a timeout unless lock_timeout is set */
    xd_db_t *db = net_open();
    xd_db_conn_t *c;
    assert_int_equal(xd_db_acquire(db, &c), 0);
    assert_int_equal(put(c, 1, XD_DB_V_NULL, XD_DB_V_NULL, XD_DB_V_NULL), 0);
    xd_db_release(c);

    lock_holder_t h = { .db = db, .stage = 0 };
    pthread_mutex_init(&h.mu, NULL);
    pthread_cond_init(&h.cv, NULL);
    pthread_t t;
    pthread_create(&t, NULL, holder_main, &h);
    pthread_mutex_lock(&h.mu);
    while (h.stage != 1)
        pthread_cond_wait(&h.cv, &h.mu);
    pthread_mutex_unlock(&h.mu);

    /* innodb_lock_wait_timeout = 1 s (busy_timeout_ms). */
    assert_int_equal(xd_db_acquire(db, &c), 0);
    assert_int_equal(xd_db_query(c, "UPDATE nt_vals SET i = 2 WHERE k = 1", NULL, 0, NULL, NULL),
                     XD_EDB_BUSY);
    xd_db_release(c);

    pthread_mutex_lock(&h.mu);
    h.stage = 2;
    pthread_cond_broadcast(&h.cv);
    pthread_mutex_unlock(&h.mu);
    pthread_join(t, NULL);
    assert_int_equal(q1(db, "SELECT i FROM nt_vals WHERE k = 1"), 1);
    xd_db_close(db);
}

/* ---- lost connections ------------------------------------------------------ */

/* The server-side id of the calling thread's connection to db. */
static int64_t
conn_id(xd_db_t *db)
{
    return q1(db, is_mysql() ? "SELECT CONNECTION_ID()" : "SELECT pg_backend_pid()");
}

/* Kills server connection `id` from another database handle. */
static void
kill_conn(int64_t id)
{
    xd_db_t *other = net_open();
    xd_db_conn_t *c;
    char sql[96];
    assert_int_equal(xd_db_acquire(other, &c), 0);
    if (is_mysql())
        snprintf(sql, sizeof sql, "KILL %lld", (long long)id);
    else
        snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%lld)", (long long)id);
    int rc = xd_db_exec(c, sql);
    if (rc != 0)
        fail_msg("%s: %s", sql, xd_db_errmsg(c));
    if (!is_mysql()) {
        /* pg_terminate_backend signals; wait until the backend is gone. */
        for (int i = 0; i < 200; i++) {
            int64_t n = -1;
            xd_db_val_t p[] = { XD_DB_V_INT(id) };
            assert_int_equal(xd_db_query_int64(c,
                                               "SELECT COUNT(*) FROM pg_stat_activity"
                                               " WHERE pid = ?",
                                               p, 1, &n),
                             0);
            if (n == 0)
                break;
            usleep(10000);
        }
    }
    xd_db_release(c);
    xd_db_close(other);
}

typedef struct kill_tx {
    xd_db_t *db;
    int runs;
} kill_tx_t;

static int
tx_killed_once(xd_db_conn_t *c, void *arg)
{
    kill_tx_t *k = arg;
    k->runs++;
    int rc = put(c, 50 + k->runs, XD_DB_V_NULL, XD_DB_V_NULL, XD_DB_V_NULL);
    if (rc < 0)
        return rc;
    if (k->runs == 1)
        kill_conn(conn_id(k->db)); /* the server rolls this attempt back */
    return put(c, 60 + k->runs, XD_DB_V_NULL, XD_DB_V_NULL, XD_DB_V_NULL);
}

static void
test_net__killed_connection(void **state)
{
    (void)state;
    NEED_SERVER();
    xd_db_t *db = net_open();
    xd_db_conn_t *c;
    assert_int_equal(xd_db_acquire(db, &c), 0);

    /* Killed while idle: the next read and the next write both work. */
    int64_t id = conn_id(db);
    kill_conn(id);
    assert_int_equal(q1(db, "SELECT COUNT(*) FROM nt_vals"), 0);
    assert_true(conn_id(db) != id);
    kill_conn(conn_id(db));
    if (is_mysql()) {
        /* mysql.c polls the idle socket: the write goes to a new connection. */
        assert_int_equal(put(c, 1, XD_DB_V_NULL, XD_DB_V_NULL, XD_DB_V_NULL), 0);
    } else {
        /* odbc.c cannot see the socket, and pings only handles idle for
         * ODBC_PING_IDLE_MS: a write on a connection that just died is not
         * retried (it may have been applied) and says so. */
        assert_int_equal(put(c, 1, XD_DB_V_NULL, XD_DB_V_NULL, XD_DB_V_NULL), XD_EDB);
        assert_non_null(strstr(xd_db_errmsg(c), "outcome unknown"));
        assert_int_equal(put(c, 1, XD_DB_V_NULL, XD_DB_V_NULL, XD_DB_V_NULL), 0);
        /* After the idle time the ping finds the dead handle first. */
        kill_conn(conn_id(db));
        usleep(2100 * 1000);
        assert_int_equal(put(c, 2, XD_DB_V_NULL, XD_DB_V_NULL, XD_DB_V_NULL), 0);
        assert_int_equal(xd_db_query(c, "DELETE FROM nt_vals WHERE k = 2", NULL, 0, NULL, NULL),
                         0);
    }
    assert_int_equal(q1(db, "SELECT COUNT(*) FROM nt_vals"), 1);

    /* Killed inside a transaction: the whole body runs again on a new
     * connection; only the second attempt's rows exist. */
    kill_tx_t k = { db, 0 };
    int rc = xd_db_tx(db, tx_killed_once, &k);
    if (rc != 0)
        fail_msg("tx: %s (%s)", xd_strerror(rc), xd_db_errmsg(c));
    assert_int_equal(k.runs, 2);
    assert_int_equal(q1(db, "SELECT COUNT(*) FROM nt_vals WHERE k IN (51, 61)"), 0);
    assert_int_equal(q1(db, "SELECT COUNT(*) FROM nt_vals WHERE k IN (52, 62)"), 2);
    xd_db_release(c);
    xd_db_close(db);
}

static void
test_net__unreachable(void **state)
{
    (void)state;
    NEED_SERVER();
    /* A port nothing listens on (XD_TEST_DB_DEAD_CONNINFO): open fails
     * with a driver error and a log line, and nothing leaks. */
    const char *dead = getenv("XD_TEST_DB_DEAD_CONNINFO");
    if (dead == NULL)
        skip();
    xd_db_params_t p = { .driver = env_driver, .conninfo = dead };
    xd_db_t *db = NULL;
    assert_int_equal(xd_db_open(&p, &db), XD_EDB);
    assert_null(db);
    p.conninfo = "bogus";
    assert_true(xd_db_open(&p, &db) < 0);
}

int
main(void)
{
    env_driver = getenv("XD_TEST_DB_DRIVER");
    env_conninfo = getenv("XD_TEST_DB_CONNINFO");
    env_dialect = getenv("XD_TEST_DB_DIALECT");
    if (env_driver == NULL || env_conninfo == NULL || env_dialect == NULL)
        env_driver = NULL;
    else
        assert_int_equal(xd_db_register_migrations("nettest", mig_test), 0);
    xd_log_set_level(XD_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_net__open_and_migrations, setup),
        cmocka_unit_test_setup(test_net__users, setup),
        cmocka_unit_test_setup(test_net__typed_values, setup),
        cmocka_unit_test_setup(test_net__errors, setup),
        cmocka_unit_test_setup(test_net__transactions, setup),
        cmocka_unit_test_setup(test_net__nested_queries, setup),
        cmocka_unit_test_setup(test_net__lock_wait_is_busy, setup),
        cmocka_unit_test_setup(test_net__killed_connection, setup),
        cmocka_unit_test_setup(test_net__unreachable, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

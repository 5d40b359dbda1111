/*
 * test_storage.c — unit tests for src/storage (storage.c, sqlite.c,
 * migrate.c, users.c) and src/auth/scram.c, against real SQLite files in a
 * fresh mkdtemp directory per test (removed afterwards).
 *
 * Covered: open (directory created 0700, WAL, foreign keys, synchronous),
 * migrations (applied once, idempotent on reopen, newer version refused,
 * second component with per-driver SQL, failed step rolled back), typed
 * parameters round-trip, statement cache, transactions (rollback, savepoint
 * nesting), BUSY with two connections (give-up and retry), the users API end
 * to end with the cascade (credentials derived and checked with scram.c, as
 * the internal auth backend does), SCRAM test vectors of RFC 5802 and RFC 7677,
 * OpaqueString preparation, four threads in parallel, the async path
 * through the blocking pool, and the off-loop assertion.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "core/pool.h"
#include "core/worker.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"
#include "xmppd/log.h"
#include "xmppd/scram.h"
#include "xmppd/storage.h"

#define HOST XD_STR("example.org")
#define FAST_ITER 16 /* iterations for tests that are not about SCRAM */

typedef struct {
    char dir[256];       /* mkdtemp directory */
    char path[320];      /* <dir>/data/xmppd.db: data/ does not exist yet */
    xd_db_params_t prm;  /* sqlite params for path */
} fx_t;

static int
fx_setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/xd_test_storage.XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->path, sizeof f->path, "%s/data/xmppd.db", f->dir);
    f->prm = (xd_db_params_t){ .driver = "sqlite", .path = f->path, .busy_timeout_ms = 2000 };
    *state = f;
    return 0;
}

static int
fx_teardown(void **state)
{
    fx_t *f = *state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    int rc = system(cmd);
    free(f);
    return rc == 0 ? 0 : -1;
}

static xd_db_t *
fx_open(fx_t *f)
{
    xd_db_t *db = NULL;
    int rc = xd_db_open(&f->prm, &db);
    assert_int_equal(rc, 0);
    assert_non_null(db);
    return db;
}

/* Row handler: copies the first column as text or integer into a buffer. */
static int
first_col_cb(void *arg, const xd_db_val_t *cols, size_t n)
{
    char *buf = arg;
    assert_true(n >= 1);
    if (cols[0].type == XD_DB_INT64)
        snprintf(buf, 64, "%lld", (long long)cols[0].i);
    else if (cols[0].type == XD_DB_NULL)
        snprintf(buf, 64, "NULL");
    else
        snprintf(buf, 64, "%.*s", (int)cols[0].s.len, cols[0].s.p);
    return 1;
}

/* Runs a one-value query on db and returns its text in buf. */
static const char *
q1(xd_db_t *db, const char *sql, char buf[64])
{
    xd_db_conn_t *c;
    buf[0] = '\0';
    assert_int_equal(xd_db_acquire(db, &c), 0);
    assert_int_equal(xd_db_query(c, sql, NULL, 0, first_col_cb, buf), 0);
    xd_db_release(c);
    return buf;
}

static int64_t
q1_int(xd_db_t *db, const char *sql)
{
    xd_db_conn_t *c;
    int64_t v = -12345;
    assert_int_equal(xd_db_acquire(db, &c), 0);
    assert_int_equal(xd_db_query_int64(c, sql, NULL, 0, &v), 0);
    xd_db_release(c);
    return v;
}

/* Creates user with the credentials of password (none for password.p NULL),
 * as the internal auth backend registers an account. */
static int
user_create(xd_db_t *db, xd_str_t host, xd_str_t user, xd_str_t password, unsigned iterations)
{
    if (password.p == NULL)
        return xd_user_create(db, host, user, NULL, 0);
    xd_scram_cred_t creds[XD_SCRAM_HASH_COUNT];
    int rc = xd_scram_creds_make(password, iterations, creds);
    return rc < 0 ? rc : xd_user_create(db, host, user, creds, XD_SCRAM_HASH_COUNT);
}

/* Replaces user's credentials with those of password. */
static int
user_set_password(xd_db_t *db, xd_str_t host, xd_str_t user, xd_str_t password,
                  unsigned iterations)
{
    xd_scram_cred_t creds[XD_SCRAM_HASH_COUNT];
    int rc = xd_scram_creds_make(password, iterations, creds);
    return rc < 0 ? rc : xd_user_set_scram(db, host, user, creds, XD_SCRAM_HASH_COUNT);
}

/* Checks password against user's SHA-256 credential (any would do):
 * XD_ENOTFOUND for no such user; no credential never matches. */
static int
user_check_password(xd_db_t *db, xd_str_t host, xd_str_t user, xd_str_t password, bool *ok)
{
    *ok = false;
    int rc = xd_user_exists(db, host, user);
    if (rc <= 0)
        return rc == 0 ? XD_ENOTFOUND : rc;
    xd_scram_cred_t cred;
    rc = xd_user_get_scram(db, host, user, XD_SCRAM_SHA256, &cred);
    if (rc == XD_ENOTFOUND)
        return 0;
    return rc < 0 ? rc : xd_scram_cred_check(&cred, password, ok);
}

static void
exec_ok(xd_db_t *db, const char *sql)
{
    xd_db_conn_t *c;
    assert_int_equal(xd_db_acquire(db, &c), 0);
    int rc = xd_db_exec(c, sql);
    if (rc != 0)
        fail_msg("%s: %s", sql, xd_db_errmsg(c));
    xd_db_release(c);
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- open ---------------------------------------------------------------- */

static void
test_storage__open_creates_dir_wal_fk(void **state)
{
    fx_t *f = *state;
    char buf[64], dir[300];
    xd_db_t *db = fx_open(f);

    struct stat st;
    snprintf(dir, sizeof dir, "%s/data", f->dir);
    assert_int_equal(stat(dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_int_equal(stat(f->path, &st), 0);

    assert_string_equal(q1(db, "PRAGMA journal_mode", buf), "wal");
    assert_string_equal(q1(db, "PRAGMA foreign_keys", buf), "1");
    assert_string_equal(q1(db, "PRAGMA synchronous", buf), "1"); /* NORMAL */
    assert_string_equal(xd_db_driver_name(db), "sqlite");
    xd_db_close(db);

    f->prm.sync_full = true;
    db = fx_open(f);
    assert_string_equal(q1(db, "PRAGMA synchronous", buf), "2"); /* FULL */
    xd_db_close(db);
}

static void
test_storage__open_errors(void **state)
{
    fx_t *f = *state;
    xd_db_t *db = NULL;
    xd_db_params_t p = f->prm;

    p.driver = "nosuchdb";
    assert_int_equal(xd_db_open(&p, &db), XD_ENOTFOUND);
    assert_null(xd_db_driver_find("nosuchdb"));
    assert_non_null(xd_db_driver_find("sqlite"));
    assert_int_equal(xd_db_driver_register(xd_db_driver_find("sqlite")), XD_EEXIST);

    /* A path whose parent is a regular file cannot be created. */
    char blocker[300], bad[340];
    snprintf(blocker, sizeof blocker, "%s/file", f->dir);
    FILE *fp = fopen(blocker, "w");
    assert_non_null(fp);
    fclose(fp);
    snprintf(bad, sizeof bad, "%s/sub/xmppd.db", blocker);
    p = f->prm;
    p.path = bad;
    assert_true(xd_db_open(&p, &db) < 0);
    assert_null(db);
}

/* ---- migrations ---------------------------------------------------------- */

static void
test_storage__migrations_once_and_idempotent(void **state)
{
    fx_t *f = *state;
    char buf[64];
    unsigned v = 99;
    xd_db_t *db = fx_open(f);

    assert_int_equal(xd_db_schema_version(db, "core", &v), 0);
    assert_int_equal(v, 2);
    assert_int_equal(xd_db_schema_version(db, "nothing", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(q1_int(db, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'"
                                " AND name IN ('users', 'user_scram', 'fast_tokens', 'schema_version')"),
                     4);
    assert_int_equal(xd_user_create(db, HOST, XD_STR("keep"), NULL, 0), 0);
    xd_db_close(db);

    /* Reopen: nothing re-applied (CREATE TABLE would fail), data kept. */
    db = fx_open(f);
    assert_int_equal(xd_db_schema_version(db, "core", &v), 0);
    assert_int_equal(v, 2);
    assert_int_equal(q1_int(db, "SELECT COUNT(*) FROM schema_version"), 1);
    assert_string_equal(q1(db, "SELECT username FROM users", buf), "keep");
    /* Migrating again by hand is a no-op too. */
    assert_int_equal(xd_db_migrate(db), 0);
    xd_db_close(db);
}

static void
test_storage__newer_schema_refused(void **state)
{
    fx_t *f = *state;
    xd_db_t *db = fx_open(f);
    exec_ok(db, "UPDATE schema_version SET version = 3 WHERE component = 'core'");
    xd_db_close(db);

    db = NULL;
    assert_int_equal(xd_db_open(&f->prm, &db), XD_EDB_SCHEMA);
    assert_null(db);
}

static const char *const comp_v1[] = {
    "CREATE TABLE comp_a (id INTEGER PRIMARY KEY, v TEXT)",
    "INSERT INTO comp_a (v) VALUES ('seed')",
    NULL,
};
static const char *const comp_v2_sqlite[] = {
    "CREATE TABLE comp_b_sqlite (id INTEGER PRIMARY KEY) WITHOUT ROWID",
    NULL,
};
static const char *const comp_v2_pgsql[] = {
    "CREATE TABLE comp_b_pgsql (id BIGSERIAL PRIMARY KEY)",
    NULL,
};
static const char *const comp_v2_any[] = {
    "CREATE TABLE comp_b_any (id INTEGER)",
    NULL,
};
static const xd_db_migration_t comp_list[] = {
    { 1, NULL, comp_v1 },
    { 2, "pgsql", comp_v2_pgsql },
    { 2, NULL, comp_v2_any },
    { 2, "sqlite", comp_v2_sqlite },
    { 0, NULL, NULL },
};
static const xd_db_migration_t comp_list_v1[] = {
    { 1, NULL, comp_v1 },
    { 0, NULL, NULL },
};

static void
test_storage__second_component(void **state)
{
    fx_t *f = *state;
    char buf[64];
    unsigned v = 0;

    xd_db_t *db = fx_open(f); /* core only */
    xd_db_close(db);

    assert_int_equal(xd_db_register_migrations("test_comp", comp_list), 0);
    db = fx_open(f);
    assert_int_equal(xd_db_schema_version(db, "test_comp", &v), 0);
    assert_int_equal(v, 2);
    assert_int_equal(xd_db_schema_version(db, "core", &v), 0);
    assert_int_equal(v, 2);
    assert_string_equal(q1(db, "SELECT v FROM comp_a", buf), "seed");
    /* The sqlite entry of version 2 won over the portable and pgsql ones. */
    assert_int_equal(q1_int(db, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'comp_b_sqlite'"),
                     1);
    assert_int_equal(q1_int(db, "SELECT COUNT(*) FROM sqlite_master WHERE name IN"
                                " ('comp_b_pgsql', 'comp_b_any')"),
                     0);
    xd_db_close(db);

    /* Reopen: version 1's INSERT is not run again. */
    db = fx_open(f);
    assert_int_equal(q1_int(db, "SELECT COUNT(*) FROM comp_a"), 1);
    xd_db_close(db);
    assert_int_equal(xd_db_unregister_migrations("test_comp"), 0);

    /* Code that knows only version 1 of the component refuses the database. */
    assert_int_equal(xd_db_register_migrations("test_comp", comp_list_v1), 0);
    db = NULL;
    assert_int_equal(xd_db_open(&f->prm, &db), XD_EDB_SCHEMA);
    assert_null(db);
    assert_int_equal(xd_db_unregister_migrations("test_comp"), 0);
}

static const char *const one_stmt[] = { "SELECT 1", NULL };

static void
test_storage__register_validation(void **state)
{
    (void)state;
    const xd_db_migration_t gap[] = { { 1, NULL, one_stmt }, { 3, NULL, one_stmt }, { 0 } };
    const xd_db_migration_t from2[] = { { 2, NULL, one_stmt }, { 0 } };
    const xd_db_migration_t dup[] = { { 1, "sqlite", one_stmt }, { 1, "sqlite", one_stmt },
                                      { 0 } };
    const xd_db_migration_t empty[] = { { 0 } };
    static const xd_db_migration_t ok[] = { { 1, NULL, one_stmt }, { 0 } };

    assert_int_equal(xd_db_register_migrations("x", gap), XD_EINVAL);
    assert_int_equal(xd_db_register_migrations("x", from2), XD_EINVAL);
    assert_int_equal(xd_db_register_migrations("x", dup), XD_EINVAL);
    assert_int_equal(xd_db_register_migrations("x", empty), XD_EINVAL);
    assert_int_equal(xd_db_register_migrations("core", ok), XD_EEXIST);
    assert_int_equal(xd_db_register_migrations("x", ok), 0);
    assert_int_equal(xd_db_register_migrations("x", ok), XD_EEXIST);
    assert_int_equal(xd_db_unregister_migrations("x"), 0);
    assert_int_equal(xd_db_unregister_migrations("x"), XD_ENOTFOUND);
}

static const char *const broken_v1[] = {
    "CREATE TABLE half_done (x INTEGER)",
    "THIS IS NOT SQL",
    NULL,
};
static const xd_db_migration_t broken_list[] = { { 1, NULL, broken_v1 }, { 0 } };

static void
test_storage__failed_migration_rolls_back(void **state)
{
    fx_t *f = *state;
    unsigned v = 7;
    assert_int_equal(xd_db_register_migrations("broken", broken_list), 0);
    xd_db_t *db = NULL;
    assert_int_equal(xd_db_open(&f->prm, &db), XD_EDB);
    assert_null(db);
    assert_int_equal(xd_db_unregister_migrations("broken"), 0);

    db = fx_open(f);
    assert_int_equal(
        q1_int(db, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'half_done'"), 0);
    assert_int_equal(xd_db_schema_version(db, "broken", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(xd_db_schema_version(db, "core", &v), 0); /* core went first */
    assert_int_equal(v, 2);
    xd_db_close(db);
}

/* ---- values and statements ----------------------------------------------- */

#define RT_ROWS 9
static const char rt_blob[] = { 'a', '\0', 'b', '\0', (char)0xff };
static const char rt_text[] = "h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93 \xf0\x9f\x98\x80";

typedef struct {
    xd_db_val_t vals[RT_ROWS]; /* column b of each row, in id order */
    char store[RT_ROWS][64];   /* copies of text/blob bytes (results are lent) */
    size_t n;                  /* rows seen */
} rt_t;

static int
rt_row(void *arg, const xd_db_val_t *cols, size_t n)
{
    rt_t *r = arg;
    assert_int_equal(n, 2);
    assert_int_equal(cols[0].type, XD_DB_INT64);
    assert_int_equal(cols[0].i, (int64_t)r->n + 1);
    assert_true(r->n < RT_ROWS);
    xd_db_val_t v = cols[1];
    if (v.type == XD_DB_TEXT || v.type == XD_DB_BLOB) {
        assert_true(v.s.len <= sizeof r->store[0]);
        assert_non_null(v.s.p);
        memcpy(r->store[r->n], v.s.p, v.s.len);
        v.s.p = r->store[r->n];
    }
    r->vals[r->n++] = v;
    return 0;
}

static void
test_storage__typed_params_roundtrip(void **state)
{
    fx_t *f = *state;
    xd_db_t *db = fx_open(f);
    xd_db_conn_t *c;
    assert_int_equal(xd_db_acquire(db, &c), 0);
    assert_int_equal(xd_db_exec(c, "CREATE TABLE rt (id INTEGER PRIMARY KEY, b)"), 0);

    const xd_db_val_t in[RT_ROWS] = {
        XD_DB_V_NULL,
        XD_DB_V_INT(INT64_MIN),
        XD_DB_V_INT(INT64_MAX),
        XD_DB_V_INT(0),
        XD_DB_V_INT(-1),
        XD_DB_V_CSTR(rt_text),
        XD_DB_V_BLOB(rt_blob, sizeof rt_blob),
        XD_DB_V_TEXT(XD_STR_NULL),             /* empty text, NULL pointer */
        XD_DB_V_BLOB(NULL, 0),                 /* empty blob, NULL pointer */
    };
    for (size_t i = 0; i < RT_ROWS; i++) {
        xd_db_val_t p[] = { XD_DB_V_INT((int64_t)i + 1), in[i] };
        assert_int_equal(xd_db_query(c, "INSERT INTO rt (id, b) VALUES (?, ?)", p, 2, NULL, NULL),
                         0);
        assert_int_equal(xd_db_changes(c), 1);
        assert_int_equal(xd_db_last_insert_id(c), (int64_t)i + 1);
    }

    rt_t r = { .n = 0 };
    assert_int_equal(xd_db_query(c, "SELECT id, b FROM rt ORDER BY id", NULL, 0, rt_row, &r), 0);
    assert_int_equal(r.n, RT_ROWS);
    for (size_t i = 0; i < RT_ROWS; i++) {
        assert_int_equal(r.vals[i].type, in[i].type);
        if (in[i].type == XD_DB_INT64)
            assert_true(r.vals[i].i == in[i].i);
        if (in[i].type == XD_DB_TEXT || in[i].type == XD_DB_BLOB) {
            assert_int_equal(r.vals[i].s.len, in[i].s.len);
            if (in[i].s.len > 0)
                assert_memory_equal(r.vals[i].s.p, in[i].s.p, in[i].s.len);
        }
    }

    /* A TEXT parameter with explicit length: bytes beyond len are not sent. */
    char buf[64];
    xd_db_val_t part[] = { XD_DB_V_TEXT(((xd_str_t){ "abcdef", 3 })) };
    assert_int_equal(xd_db_query(c, "SELECT ?", part, 1, first_col_cb, buf), 0);
    assert_string_equal(buf, "abc");

    /* Typed comparison: a BLOB parameter does not equal TEXT with the same bytes. */
    int64_t n = -1;
    xd_db_val_t tb[] = { XD_DB_V_BLOB(rt_text, strlen(rt_text)) };
    assert_int_equal(xd_db_query_int64(c, "SELECT COUNT(*) FROM rt WHERE b = ?", tb, 1, &n), 0);
    assert_int_equal(n, 0);
    xd_db_val_t tt[] = { XD_DB_V_CSTR(rt_text) };
    assert_int_equal(xd_db_query_int64(c, "SELECT COUNT(*) FROM rt WHERE b = ?", tt, 1, &n), 0);
    assert_int_equal(n, 1);

    /* Parameter count must match; no-row and non-integer results. */
    assert_int_equal(xd_db_query(c, "SELECT ?", NULL, 0, NULL, NULL), XD_EINVAL);
    assert_non_null(strstr(xd_db_errmsg(c), "1 parameters, 0 given"));
    assert_int_equal(xd_db_query(c, "SELECT 1; SELECT 2", NULL, 0, NULL, NULL), XD_EINVAL);
    assert_int_equal(xd_db_query(c, "  ", NULL, 0, NULL, NULL), XD_EINVAL);
    assert_non_null(strstr(xd_db_errmsg(c), "empty statement"));
    assert_int_equal(xd_db_query(c, "SELECT 1 ;\n", NULL, 0, NULL, NULL), 0);
    assert_string_equal(xd_db_errmsg(c), "");
    assert_int_equal(xd_db_query_int64(c, "SELECT id FROM rt WHERE id > 100", NULL, 0, &n),
                     XD_ENOTFOUND);
    assert_int_equal(xd_db_query_int64(c, "SELECT 'x'", NULL, 0, &n), XD_EINVAL);
    assert_int_equal(xd_db_query(c, "SELEKT nonsense", NULL, 0, NULL, NULL), XD_EDB);
    assert_non_null(strstr(xd_db_errmsg(c), "syntax error"));
    xd_db_release(c);
    xd_db_close(db);
}

typedef struct {
    xd_db_conn_t *c; /* to run the nested query on */
    int rows;        /* rows seen by the outer handler */
    int inner_sum;   /* sum of the nested query's results */
    int stop_at;     /* return stop_rc at this row (1-based), 0 = never */
    int stop_rc;     /* what to return there */
} nest_t;

static int
nest_row(void *arg, const xd_db_val_t *cols, size_t n)
{
    nest_t *t = arg;
    (void)n;
    t->rows++;
    if (t->c != NULL) {
        /* The same SQL text while its cached statement is running. */
        int64_t v = 0;
        xd_db_val_t p[] = { XD_DB_V_INT(cols[0].i) };
        assert_int_equal(xd_db_query_int64(t->c, "SELECT x FROM seq WHERE x >= ? ORDER BY x",
                                           p, 1, &v),
                         0);
        t->inner_sum += (int)v;
    }
    return t->rows == t->stop_at ? t->stop_rc : 0;
}

static void
test_storage__statement_cache_and_handlers(void **state)
{
    fx_t *f = *state;
    xd_db_t *db = fx_open(f);
    xd_db_conn_t *c;
    assert_int_equal(xd_db_acquire(db, &c), 0);
    assert_int_equal(xd_db_exec(c, "CREATE TABLE seq (x INTEGER); "
                                   "INSERT INTO seq VALUES (1), (2), (3), (4), (5)"),
                     0);

    /* Nested use of the same SQL text. */
    nest_t t = { .c = c };
    xd_db_val_t p0[] = { XD_DB_V_INT(0) };
    assert_int_equal(
        xd_db_query(c, "SELECT x FROM seq WHERE x >= ? ORDER BY x", p0, 1, nest_row, &t), 0);
    assert_int_equal(t.rows, 5);
    assert_int_equal(t.inner_sum, 1 + 2 + 3 + 4 + 5);

    /* > 0 stops early with success; < 0 stops with that code. */
    t = (nest_t){ .stop_at = 2, .stop_rc = 1 };
    assert_int_equal(xd_db_query(c, "SELECT x FROM seq ORDER BY x", NULL, 0, nest_row, &t), 0);
    assert_int_equal(t.rows, 2);
    t = (nest_t){ .stop_at = 3, .stop_rc = XD_ELIMIT };
    assert_int_equal(xd_db_query(c, "SELECT x FROM seq ORDER BY x", NULL, 0, nest_row, &t),
                     XD_ELIMIT);
    assert_int_equal(t.rows, 3);
    /* The statement was reset: running it again sees all rows. */
    t = (nest_t){ .rows = 0 };
    assert_int_equal(xd_db_query(c, "SELECT x FROM seq ORDER BY x", NULL, 0, nest_row, &t), 0);
    assert_int_equal(t.rows, 5);

    /* More distinct statements than cache slots: evictions stay correct. */
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 150; i++) {
            char sql[64];
            int64_t v = 0;
            snprintf(sql, sizeof sql, "SELECT %d + COUNT(*) FROM seq", i);
            assert_int_equal(xd_db_query_int64(c, sql, NULL, 0, &v), 0);
            assert_int_equal(v, i + 5);
        }
    }
    xd_db_release(c);
    xd_db_close(db);
}

/* ---- transactions -------------------------------------------------------- */

typedef struct {
    int64_t value; /* inserted into tx_t */
    int ret;       /* what the body returns */
    xd_db_t *db;   /* for a nested xd_db_tx, or NULL */
    int inner_ret; /* what the nested body returns */
} txa_t;

static int
tx_body(xd_db_conn_t *c, void *arg)
{
    txa_t *a = arg;
    xd_db_val_t p[] = { XD_DB_V_INT(a->value) };
    int rc = xd_db_query(c, "INSERT INTO tx_t (v) VALUES (?)", p, 1, NULL, NULL);
    if (rc < 0)
        return rc;
    if (a->db != NULL) {
        txa_t inner = { a->value + 100, a->inner_ret, NULL, 0 };
        int irc = xd_db_tx(a->db, tx_body, &inner);
        assert_int_equal(irc, a->inner_ret);
    }
    return a->ret;
}

static void
test_storage__tx_commit_rollback_nested(void **state)
{
    fx_t *f = *state;
    xd_db_t *db = fx_open(f);
    exec_ok(db, "CREATE TABLE tx_t (v INTEGER)");

    txa_t a = { 1, 7, NULL, 0 };
    assert_int_equal(xd_db_tx(db, tx_body, &a), 7); /* fn's result comes back */
    a = (txa_t){ 2, XD_EINVAL, NULL, 0 };
    assert_int_equal(xd_db_tx(db, tx_body, &a), XD_EINVAL);
    assert_int_equal(q1_int(db, "SELECT COUNT(*) FROM tx_t"), 1);
    assert_int_equal(q1_int(db, "SELECT v FROM tx_t"), 1);

    /* Nested: the inner failure rolls back only the inner part. */
    a = (txa_t){ 3, 0, db, XD_ELIMIT };
    assert_int_equal(xd_db_tx(db, tx_body, &a), 0);
    assert_int_equal(q1_int(db, "SELECT COUNT(*) FROM tx_t WHERE v IN (3, 103)"), 1);
    assert_int_equal(q1_int(db, "SELECT COUNT(*) FROM tx_t WHERE v = 3"), 1);
    /* Inner success, outer failure: both gone. */
    a = (txa_t){ 4, XD_EINVAL, db, 0 };
    assert_int_equal(xd_db_tx(db, tx_body, &a), XD_EINVAL);
    assert_int_equal(q1_int(db, "SELECT COUNT(*) FROM tx_t WHERE v IN (4, 104)"), 0);
    /* Both succeed. */
    a = (txa_t){ 5, 0, db, 0 };
    assert_int_equal(xd_db_tx(db, tx_body, &a), 0);
    assert_int_equal(q1_int(db, "SELECT COUNT(*) FROM tx_t WHERE v IN (5, 105)"), 2);

    /* A constraint failure inside a body rolls back the whole body. */
    exec_ok(db, "CREATE TABLE uq (v INTEGER PRIMARY KEY)");
    xd_db_conn_t *c;
    assert_int_equal(xd_db_acquire(db, &c), 0);
    assert_int_equal(xd_db_exec(c, "INSERT INTO uq VALUES (1)"), 0);
    assert_int_equal(xd_db_exec(c, "INSERT INTO uq VALUES (1)"), XD_EDB_CONSTRAINT);
    assert_non_null(strstr(xd_db_errmsg(c), "UNIQUE"));
    xd_db_release(c);
    xd_db_close(db);
}

static int
tx_insert_one(xd_db_conn_t *c, void *arg)
{
    int *calls = arg;
    (*calls)++;
    return xd_db_exec(c, "INSERT INTO busy_t VALUES (1)");
}

typedef struct {
    const xd_db_params_t *prm; /* database to open */
    unsigned hold_ms;          /* how long to keep the write lock */
    atomic_int locked;         /* set once the lock is held */
    int rc;                    /* holder's result */
} holder_t;

static void *
holder_main(void *arg)
{
    holder_t *h = arg;
    xd_db_t *db = NULL;
    xd_db_conn_t *c;
    h->rc = xd_db_open(h->prm, &db);
    if (h->rc != 0) {
        atomic_store(&h->locked, -1);
        return NULL;
    }
    xd_db_acquire(db, &c);
    h->rc = xd_db_exec(c, "BEGIN IMMEDIATE; INSERT INTO busy_t VALUES (0)");
    atomic_store(&h->locked, 1);
    struct timespec ts = { (time_t)(h->hold_ms / 1000), (long)(h->hold_ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
    if (h->rc == 0)
        h->rc = xd_db_exec(c, "COMMIT");
    xd_db_release(c);
    xd_db_close(db);
    return NULL;
}

static void
test_storage__busy_two_connections(void **state)
{
    fx_t *f = *state;
    xd_db_t *db1 = fx_open(f);
    exec_ok(db1, "CREATE TABLE busy_t (v INTEGER)");

    xd_db_params_t p2 = f->prm;
    p2.busy_timeout_ms = 10;
    xd_db_t *db2 = NULL;
    assert_int_equal(xd_db_open(&p2, &db2), 0);

    /* db1's connection holds a write transaction: db2 gives up, bounded. */
    xd_db_conn_t *c1;
    assert_int_equal(xd_db_acquire(db1, &c1), 0);
    assert_int_equal(xd_db_exec(c1, "BEGIN IMMEDIATE; INSERT INTO busy_t VALUES (1)"), 0);
    int calls = 0;
    double t0 = now_s();
    assert_int_equal(xd_db_tx(db2, tx_insert_one, &calls), XD_EDB_BUSY);
    double took = now_s() - t0;
    assert_int_equal(calls, 0); /* BEGIN IMMEDIATE never got the lock */
    assert_true(took > 0.05);   /* it did retry with backoff … */
    assert_true(took < 5.0);    /* … a bounded number of times */
    /* Readers are not blocked by the writer in WAL mode. */
    assert_int_equal(q1_int(db2, "SELECT COUNT(*) FROM busy_t"), 0);
    assert_int_equal(xd_db_exec(c1, "COMMIT"), 0);
    xd_db_release(c1);
    assert_int_equal(xd_db_tx(db2, tx_insert_one, &calls), 0);
    assert_int_equal(calls, 1);
    assert_int_equal(q1_int(db2, "SELECT COUNT(*) FROM busy_t"), 2);

    /* A lock held for 150 ms (longer than busy_timeout) is outlasted by the
     * retries with backoff. */
    holder_t h = { .prm = &f->prm, .hold_ms = 150 };
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, holder_main, &h), 0);
    while (atomic_load(&h.locked) == 0)
        usleep(1000);
    assert_int_equal(atomic_load(&h.locked), 1);
    calls = 0;
    t0 = now_s();
    assert_int_equal(xd_db_tx(db2, tx_insert_one, &calls), 0);
    assert_true(now_s() - t0 > 0.1);
    assert_int_equal(calls, 1);
    pthread_join(th, NULL);
    assert_int_equal(h.rc, 0);
    assert_int_equal(q1_int(db1, "SELECT COUNT(*) FROM busy_t"), 4);

    xd_db_close(db2);
    xd_db_close(db1);
}

/* ---- users --------------------------------------------------------------- */

typedef struct {
    char names[8][32]; /* copies */
    int n;             /* names seen */
} names_t;

static int
names_cb(void *arg, xd_str_t user)
{
    names_t *l = arg;
    assert_true(l->n < 8 && user.len < 32);
    memcpy(l->names[l->n], user.p, user.len);
    l->names[l->n][user.len] = '\0';
    l->n++;
    return 0;
}

static int
stop_after_one(void *arg, xd_str_t user)
{
    (void)user;
    (*(int *)arg)++;
    return 1;
}

static void
test_storage__users_end_to_end(void **state)
{
    fx_t *f = *state;
    xd_db_t *db = fx_open(f);
    bool ok = false;
    int64_t n = -1;
    const xd_str_t alice = XD_STR("alice");

    assert_int_equal(xd_user_exists(db, HOST, alice), 0);
    assert_int_equal(user_create(db, HOST, alice, XD_STR("secret"), 4096), 0);
    assert_int_equal(user_create(db, HOST, alice, XD_STR("other"), 4096), XD_EEXIST);
    assert_int_equal(xd_user_exists(db, HOST, alice), 1);
    assert_int_equal(xd_user_exists(db, XD_STR("other.org"), alice), 0);

    /* Three credentials with distinct 16-byte salts; keys as derived. */
    xd_scram_cred_t cred[XD_SCRAM_HASH_COUNT];
    for (unsigned h = 0; h < XD_SCRAM_HASH_COUNT; h++) {
        assert_int_equal(xd_user_get_scram(db, HOST, alice, (xd_scram_hash)h, &cred[h]), 0);
        assert_int_equal(cred[h].hash, h);
        assert_int_equal(cred[h].salt_len, XD_SCRAM_SALT_LEN);
        assert_int_equal(cred[h].iterations, 4096);
        uint8_t sk[XD_SCRAM_KEY_MAX], vk[XD_SCRAM_KEY_MAX];
        assert_int_equal(xd_scram_derive((xd_scram_hash)h, XD_STR("secret"),
                                         (xd_str_t){ (const char *)cred[h].salt, 16 }, 4096, sk,
                                         vk),
                         0);
        assert_memory_equal(sk, cred[h].stored_key, xd_scram_key_len((xd_scram_hash)h));
        assert_memory_equal(vk, cred[h].server_key, xd_scram_key_len((xd_scram_hash)h));
    }
    assert_memory_not_equal(cred[0].salt, cred[1].salt, 16);
    assert_memory_not_equal(cred[1].salt, cred[2].salt, 16);
    assert_int_equal(q1_int(db, "SELECT COUNT(*) FROM user_scram"), 3);

    assert_int_equal(user_check_password(db, HOST, alice, XD_STR("secret"), &ok), 0);
    assert_true(ok);
    assert_int_equal(user_check_password(db, HOST, alice, XD_STR("Secret"), &ok), 0);
    assert_false(ok);
    assert_int_equal(user_check_password(db, HOST, alice, XD_STR("\x01"), &ok), 0);
    assert_false(ok);
    assert_int_equal(user_check_password(db, HOST, XD_STR("nobody"), XD_STR("x"), &ok),
                     XD_ENOTFOUND);

    /* set_password replaces all three in one go, with new salts. */
    assert_int_equal(user_set_password(db, HOST, alice, XD_STR("n\xc3\xa9w pass"), 64), 0);
    assert_int_equal(user_check_password(db, HOST, alice, XD_STR("secret"), &ok), 0);
    assert_false(ok);
    /* OpaqueString: NFD input and a no-break space match the NFC original. */
    assert_int_equal(
        user_check_password(db, HOST, alice, XD_STR("ne\xcc\x81w\xc2\xa0pass"), &ok), 0);
    assert_true(ok);
    for (unsigned h = 0; h < XD_SCRAM_HASH_COUNT; h++) {
        xd_scram_cred_t nc;
        assert_int_equal(xd_user_get_scram(db, HOST, alice, (xd_scram_hash)h, &nc), 0);
        assert_int_equal(nc.iterations, 64);
        assert_memory_not_equal(nc.salt, cred[h].salt, 16);
    }
    assert_int_equal(q1_int(db, "SELECT COUNT(*) FROM user_scram"), 3);
    assert_int_equal(user_set_password(db, HOST, XD_STR("nobody"), XD_STR("x"), 64),
                     XD_ENOTFOUND);
    assert_int_equal(user_set_password(db, HOST, alice, XD_STR(""), 64), XD_EINVAL);
    assert_int_equal(user_set_password(db, HOST, alice, XD_STR("x"), 0), XD_EINVAL);

    /* A user without credentials exists but never matches. */
    assert_int_equal(user_create(db, HOST, XD_STR("carol"), XD_STR_NULL, 0), 0);
    xd_scram_cred_t none;
    assert_int_equal(xd_user_get_scram(db, HOST, XD_STR("carol"), XD_SCRAM_SHA256, &none),
                     XD_ENOTFOUND);
    assert_int_equal(user_check_password(db, HOST, XD_STR("carol"), XD_STR(""), &ok), 0);
    assert_false(ok);
    assert_int_equal(user_create(db, HOST, XD_STR("bob"), XD_STR("b"), FAST_ITER), 0);
    assert_int_equal(user_create(db, XD_STR("other.org"), XD_STR("zed"), XD_STR("z"),
                                    FAST_ITER),
                     0);
    /* A refused password creates nothing. */
    assert_int_equal(user_create(db, HOST, XD_STR("dave"), XD_STR("a\x7f"), FAST_ITER),
                     XD_EINVAL);
    assert_int_equal(xd_user_exists(db, HOST, XD_STR("dave")), 0);
    /* Storage refuses a credential it could not keep: a hash twice, no salt. */
    xd_scram_cred_t two[2];
    assert_int_equal(xd_scram_cred_make(XD_SCRAM_SHA1, XD_STR("d"), FAST_ITER, &two[0]), 0);
    two[1] = two[0];
    assert_int_equal(xd_user_create(db, HOST, XD_STR("dave"), two, 2), XD_EINVAL);
    two[0].salt_len = 0;
    assert_int_equal(xd_user_set_scram(db, HOST, XD_STR("bob"), two, 1), XD_EINVAL);
    assert_int_equal(xd_user_exists(db, HOST, XD_STR("dave")), 0);

    names_t l = { .n = 0 };
    assert_int_equal(xd_user_list(db, HOST, names_cb, &l), 0);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.names[0], "alice");
    assert_string_equal(l.names[1], "bob");
    assert_string_equal(l.names[2], "carol");
    int seen = 0;
    assert_int_equal(xd_user_list(db, HOST, stop_after_one, &seen), 0);
    assert_int_equal(seen, 1);
    assert_int_equal(xd_user_count(db, HOST, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(xd_user_count(db, XD_STR("other.org"), &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(xd_user_count(db, XD_STR("empty.org"), &n), 0);
    assert_int_equal(n, 0);

    /* Remove cascades to the credentials. */
    assert_int_equal(q1_int(db, "SELECT COUNT(*) FROM user_scram WHERE username = 'alice'"), 3);
    assert_int_equal(xd_user_remove(db, HOST, alice), 0);
    assert_int_equal(q1_int(db, "SELECT COUNT(*) FROM user_scram WHERE username = 'alice'"), 0);
    assert_int_equal(xd_user_remove(db, HOST, alice), XD_ENOTFOUND);
    assert_int_equal(xd_user_exists(db, HOST, alice), 0);
    assert_int_equal(user_check_password(db, HOST, alice, XD_STR("secret"), &ok),
                     XD_ENOTFOUND);
    assert_int_equal(xd_user_count(db, HOST, &n), 0);
    assert_int_equal(n, 2);

    /* The schema enforces the foreign key and the hash names. */
    xd_db_conn_t *c;
    assert_int_equal(xd_db_acquire(db, &c), 0);
    assert_int_equal(xd_db_exec(c, "INSERT INTO user_scram VALUES ('example.org', 'ghost',"
                                   " 'SHA-256', x'00', 1, x'00', x'00')"),
                     XD_EDB_CONSTRAINT);
    assert_int_equal(xd_db_exec(c, "INSERT INTO user_scram VALUES ('example.org', 'bob',"
                                   " 'MD5', x'00', 1, x'00', x'00')"),
                     XD_EDB_CONSTRAINT);
    xd_db_release(c);
    xd_db_close(db);
}

/* ---- SCRAM --------------------------------------------------------------- */

/* Decodes standard base64 into out; returns the byte count. */
static size_t
b64(const char *in, uint8_t *out)
{
    size_t len = strlen(in);
    int n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);
    assert_true(n >= 0);
    while (len > 0 && in[len - 1] == '=') { /* DecodeBlock counts padding */
        len--;
        n--;
    }
    return (size_t)n;
}

static void
scram_vector(xd_scram_hash h, const char *salt_b64, const char *auth_message,
             const char *proof_b64, const char *sig_b64)
{
    uint8_t salt[64], proof[64], sig[64];
    uint8_t stored[XD_SCRAM_KEY_MAX], server[XD_SCRAM_KEY_MAX];
    uint8_t mine[XD_SCRAM_KEY_MAX], msig[XD_SCRAM_KEY_MAX];
    size_t klen = xd_scram_key_len(h);
    size_t salt_len = b64(salt_b64, salt);
    assert_int_equal(b64(proof_b64, proof), klen);
    assert_int_equal(b64(sig_b64, sig), klen);
    xd_str_t am = xd_str_c(auth_message);
    xd_str_t s = { (const char *)salt, salt_len };

    assert_int_equal(xd_scram_derive(h, XD_STR("pencil"), s, 4096, stored, server), 0);
    /* The server accepts the RFC's ClientProof with our StoredKey … */
    assert_true(xd_scram_verify_proof(h, stored, am, proof, klen));
    /* … and produces the RFC's ServerSignature from our ServerKey. */
    assert_int_equal(xd_scram_server_signature(h, server, am, msig), 0);
    assert_memory_equal(msig, sig, klen);
    /* The client side gives the same proof. */
    assert_int_equal(xd_scram_client_proof(h, XD_STR("pencil"), s, 4096, am, mine), 0);
    assert_memory_equal(mine, proof, klen);

    /* Any change is refused. */
    proof[0] ^= 1;
    assert_false(xd_scram_verify_proof(h, stored, am, proof, klen));
    proof[0] ^= 1;
    assert_false(xd_scram_verify_proof(h, stored, am, proof, klen - 1));
    assert_false(xd_scram_verify_proof(h, stored, XD_STR("n=user,r=x"), proof, klen));
    assert_int_equal(xd_scram_derive(h, XD_STR("pencil"), s, 4095, mine, msig), 0);
    assert_memory_not_equal(mine, stored, klen);
}

static void
test_storage__scram_rfc5802_sha1(void **state)
{
    (void)state;
    /* RFC 5802 5: SCRAM-SHA-1, user "user", password "pencil". */
    scram_vector(XD_SCRAM_SHA1, "QSXCR+Q6sek8bf92",
                 "n=user,r=fyko+d2lbbFgONRv9qkxdawL,"
                 "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096,"
                 "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j",
                 "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=", "rmF9pqV8S7suAoZWja4dJRkFsKQ=");
}

static void
test_storage__scram_rfc7677_sha256(void **state)
{
    (void)state;
    /* RFC 7677 3: SCRAM-SHA-256, same user and password. */
    scram_vector(XD_SCRAM_SHA256, "W22ZaJ0SNY7soEsUEjb6gQ==",
                 "n=user,r=rOprNGfwEbeRWgbNEkqO,"
                 "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                 "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
                 "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
                 "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
                 "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
}

static void
expect_norm(const char *in, const char *want)
{
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(xd_scram_normalize(xd_str_c(in), &out, &len), 0);
    assert_string_equal(out, want);
    assert_int_equal(len, strlen(want));
    xd_free(out);
}

static void
test_storage__scram_normalize_and_helpers(void **state)
{
    (void)state;
    char *out = NULL;
    size_t len;
    xd_scram_hash h;

    /* RFC 8265 4.2: non-ASCII spaces → U+0020, NFC, case kept. */
    expect_norm("pencil", "pencil");
    expect_norm("PeNcIl", "PeNcIl");
    expect_norm("a\xc2\xa0" "b\xe2\x80\x83" "c", "a b c");          /* NBSP, EM SPACE */
    expect_norm("e\xcc\x81", "\xc3\xa9");                          /* NFD → NFC */
    expect_norm("\xe2\x84\xab", "\xc3\x85");                       /* ANGSTROM SIGN → Å */
    expect_norm("I\xe2\x80\xa2" "x", "I\xe2\x80\xa2" "x");           /* symbols allowed */
    assert_int_equal(xd_scram_normalize(XD_STR(""), &out, &len), XD_EINVAL);
    assert_int_equal(xd_scram_normalize(XD_STR("a\tb"), &out, &len), XD_EINVAL);   /* Cc */
    assert_int_equal(xd_scram_normalize(XD_STR("a\xff"), &out, &len), XD_EINVAL);  /* UTF-8 */
    assert_int_equal(xd_scram_normalize(XD_STR("a\xed\xa0\x80"), &out, &len), XD_EINVAL);
    assert_int_equal(xd_scram_normalize(XD_STR("a\xe2\x80\x8b" "b"), &out, &len),
                     XD_EINVAL); /* ZERO WIDTH SPACE: default ignorable */
    assert_int_equal(xd_scram_normalize(XD_STR("\xf3\xa0\x80\x80"), &out, &len),
                     XD_EINVAL); /* unassigned / ignorable plane 14 */
    assert_null(out);

    assert_int_equal(xd_scram_hash_parse(XD_STR("SHA-256"), &h), 0);
    assert_int_equal(h, XD_SCRAM_SHA256);
    assert_int_equal(xd_scram_hash_parse(XD_STR("SHA-512"), &h), 0);
    assert_int_equal(h, XD_SCRAM_SHA512);
    assert_int_equal(xd_scram_hash_parse(XD_STR("sha-1"), &h), XD_EINVAL);
    assert_string_equal(xd_scram_hash_name(XD_SCRAM_SHA1), "SHA-1");
    assert_int_equal(xd_scram_key_len(XD_SCRAM_SHA1), 20);
    assert_int_equal(xd_scram_key_len(XD_SCRAM_SHA512), 64);

    assert_true(xd_scram_ct_eq("abcd", "abcd", 4));
    assert_false(xd_scram_ct_eq("abcd", "abce", 4));
    assert_true(xd_scram_ct_eq("abcd", "abce", 3));

    /* Salts are random: two are (overwhelmingly likely) different. */
    uint8_t s1[16], s2[16];
    assert_int_equal(xd_scram_salt(s1, 16), 0);
    assert_int_equal(xd_scram_salt(s2, 16), 0);
    assert_memory_not_equal(s1, s2, 16);

    /* SHA-512 derivation is deterministic for a given salt and differs by hash. */
    uint8_t a[64], b[64], c2[64], d[64];
    assert_int_equal(xd_scram_derive(XD_SCRAM_SHA512, XD_STR("pw"), XD_STR("salt"), 2, a, b), 0);
    assert_int_equal(xd_scram_derive(XD_SCRAM_SHA512, XD_STR("pw"), XD_STR("salt"), 2, c2, d), 0);
    assert_memory_equal(a, c2, 64);
    assert_memory_equal(b, d, 64);
    assert_memory_not_equal(a, b, 64);
    assert_int_equal(xd_scram_derive(XD_SCRAM_SHA512, XD_STR("pw"), XD_STR("salt"), 0, a, b),
                     XD_EINVAL);
}

/* ---- threads ------------------------------------------------------------- */

#define THREADS 4
#define PER_THREAD 25

typedef struct {
    xd_db_t *db;  /* shared database */
    int id;       /* thread number */
    int errors;   /* failed calls */
} worker_arg_t;

static void *
parallel_main(void *arg)
{
    worker_arg_t *a = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        char name[32];
        snprintf(name, sizeof name, "t%d_u%02d", a->id, i);
        if (user_create(a->db, HOST, xd_str_c(name), XD_STR("pw"), FAST_ITER) != 0)
            a->errors++;
        bool ok = false;
        if (user_check_password(a->db, HOST, xd_str_c(name), XD_STR("pw"), &ok) != 0 || !ok)
            a->errors++;
    }
    return NULL;
}

static int
count_cb(void *arg, xd_str_t user)
{
    (void)user;
    (*(int *)arg)++;
    return 0;
}

static void
test_storage__four_threads(void **state)
{
    fx_t *f = *state;
    xd_db_t *db = fx_open(f);
    pthread_t th[THREADS];
    worker_arg_t args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (worker_arg_t){ db, i, 0 };
        assert_int_equal(pthread_create(&th[i], NULL, parallel_main, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].errors, 0);
    }
    int64_t n = 0;
    assert_int_equal(xd_user_count(db, HOST, &n), 0);
    assert_int_equal(n, THREADS * PER_THREAD);
    int listed = 0;
    assert_int_equal(xd_user_list(db, HOST, count_cb, &listed), 0);
    assert_int_equal(listed, THREADS * PER_THREAD);
    for (int t = 0; t < THREADS; t++) {
        for (int i = 0; i < PER_THREAD; i++) {
            char name[32];
            snprintf(name, sizeof name, "t%d_u%02d", t, i);
            assert_int_equal(xd_user_exists(db, HOST, xd_str_c(name)), 1);
        }
    }
    assert_int_equal(q1_int(db, "SELECT COUNT(*) FROM user_scram"), 3 * THREADS * PER_THREAD);
    xd_db_close(db);
}

/* ---- async through the blocking pool ------------------------------------- */

typedef struct {
    xd_db_t *db;        /* database */
    atomic_int done;    /* callbacks run */
    atomic_int failed;  /* a submit failed */
    int status[2];      /* their statuses */
    int on_loop[2];     /* whether done ran on a loop thread */
    int off_loop_work;  /* whether work ran off the loops */
} async_t;

static async_t as;

static int
async_count(xd_db_conn_t *c, void *arg)
{
    (void)arg;
    as.off_loop_work = !xd_on_loop();
    int64_t n = -1;
    int rc = xd_db_query_int64(c, "SELECT COUNT(*) FROM users", NULL, 0, &n);
    return rc < 0 ? rc : (int)n;
}

static int
async_fail(xd_db_conn_t *c, void *arg)
{
    (void)arg;
    return xd_db_exec(c, "SELECT * FROM no_such_table");
}

static void
async_done(void *arg, int status)
{
    int i = (int)(intptr_t)arg;
    as.status[i] = status;
    as.on_loop[i] = xd_on_loop();
    atomic_fetch_add(&as.done, 1);
}

static void
async_init(xd_worker_t *w, void *arg)
{
    (void)arg;
    if (xd_worker_index(w) != 0)
        return;
    if (xd_db_async(as.db, async_count, async_done, (void *)(intptr_t)0) != 0 ||
        xd_db_async(as.db, async_fail, async_done, (void *)(intptr_t)1) != 0)
        atomic_store(&as.failed, 1);
}

static void
async_stop(xd_worker_t *w, void *arg)
{
    (void)w;
    (void)arg;
}

static void
test_storage__async_pool(void **state)
{
    fx_t *f = *state;
    as = (async_t){ .db = fx_open(f) };
    for (int i = 0; i < 3; i++) {
        char name[8];
        snprintf(name, sizeof name, "a%d", i);
        assert_int_equal(user_create(as.db, HOST, xd_str_c(name), XD_STR_NULL, 0), 0);
    }
    assert_int_equal(xd_pool_start(2, 8), 0);
    assert_int_equal(xd_workers_start(1, async_init, async_stop, NULL), 0);
    for (int i = 0; i < 10000 && atomic_load(&as.done) < 2 && !atomic_load(&as.failed); i++)
        usleep(1000);
    /* Shutdown order of pool.h: workers stop, pool stops, workers join. */
    xd_workers_stop();
    xd_pool_stop();
    xd_workers_join();
    assert_int_equal(atomic_load(&as.failed), 0);
    assert_int_equal(atomic_load(&as.done), 2);
    assert_int_equal(as.status[0], 3);
    assert_int_equal(as.status[1], XD_EDB);
    assert_true(as.on_loop[0]);
    assert_true(as.off_loop_work);
    xd_db_close(as.db);
}

/* ---- the off-loop assertion ---------------------------------------------- */

/* Runs fn in a child that marks itself a loop thread; returns the signal
 * that ended it, or 0 when it exited. */
static int
on_loop_child(xd_db_t *db, int which)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (freopen("/dev/null", "w", stderr) == NULL) /* the assertion's log line */
            _exit(2);
        xd_log_open("/dev/null");
        xd_mark_loop_thread(true);
        xd_db_conn_t *c;
        uint8_t k1[64], k2[64];
        switch (which) {
        case 0:
            xd_db_acquire(db, &c);
            break;
        case 1:
            xd_user_exists(db, HOST, XD_STR("x"));
            break;
        default:
            xd_scram_derive(XD_SCRAM_SHA1, XD_STR("p"), XD_STR("s"), 1, k1, k2);
            break;
        }
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

static void
test_storage__sync_api_asserts_off_loop(void **state)
{
#ifdef XD_DEBUG_ASSERTS
    fx_t *f = *state;
    xd_db_t *db = fx_open(f);
    assert_false(xd_on_loop());
    assert_int_equal(on_loop_child(db, 0), SIGABRT);
    assert_int_equal(on_loop_child(db, 1), SIGABRT);
    assert_int_equal(on_loop_child(db, 2), SIGABRT);
    xd_db_close(db);
#else
    (void)state;
    skip(); /* XD_DEBUG_ASSERT is compiled out (-Ddebug_asserts=false) */
#endif
}

int
main(void)
{
    xd_log_set_level(XD_LOG_CRIT); /* expected failures log at warn/error */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_storage__open_creates_dir_wal_fk, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_storage__open_errors, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_storage__migrations_once_and_idempotent, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_storage__newer_schema_refused, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_storage__second_component, fx_setup, fx_teardown),
        cmocka_unit_test(test_storage__register_validation),
        cmocka_unit_test_setup_teardown(test_storage__failed_migration_rolls_back, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_storage__typed_params_roundtrip, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_storage__statement_cache_and_handlers, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_storage__tx_commit_rollback_nested, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_storage__busy_two_connections, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_storage__users_end_to_end, fx_setup, fx_teardown),
        cmocka_unit_test(test_storage__scram_rfc5802_sha1),
        cmocka_unit_test(test_storage__scram_rfc7677_sha256),
        cmocka_unit_test(test_storage__scram_normalize_and_helpers),
        cmocka_unit_test_setup_teardown(test_storage__sync_api_asserts_off_loop, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_storage__four_threads, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_storage__async_pool, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

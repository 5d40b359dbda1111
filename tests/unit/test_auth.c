/*
 * test_auth.c — unit tests for src/auth (auth.c, internal.c, external.c)
 * behind xmppd/auth.h.
 *
 * Every test runs with a fresh mkdtemp directory holding a SQLite database,
 * the blocking pool (2 threads) and 2 workers, and tears down in the order
 * of auth.h: workers stop → auth stop → pool stop → workers join → db close.
 * Async calls are made on a worker loop (the test thread posts a message to
 * a worker, which makes the call) and the test thread waits for the
 * callback; sync calls are made from the test thread (not a loop).
 *
 * External hosts run real scripts with /usr/bin/python3: examples/extauth.py
 * (a users file) and tests/unit/extauth-crash.py (misbehaves on demand and
 * records the pid of every process it starts), found through
 * XD_TEST_SRCDIR, which the command lines expand themselves (wordexp).
 *
 * Set XD_TEST_VERBOSE=1 to see the server's log lines.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "core/pool.h"
#include "core/worker.h"
#include "xmppd/acl.h"
#include "xmppd/alloc.h"
#include "xmppd/auth.h"
#include "xmppd/config.h"
#include "xmppd/err.h"
#include "xmppd/log.h"
#include "xmppd/scram.h"
#include "xmppd/storage.h"

#define ITER 1500 /* scram_iterations of the internal host (not the 4096 default) */
#define WAIT_MS 10000
#define FD_SEEN_MAX 1024

/* ---- fixture ------------------------------------------------------------------------------- */

typedef struct {
    char dir[256];     /* mkdtemp directory */
    char users[320];   /* <dir>/users.txt for extauth.py */
    char pids[320];    /* <dir>/pids/: one file per process extauth-crash.py started */
    xd_db_t *db;       /* <dir>/xmppd.db */
    bool inheritable[FD_SEEN_MAX]; /* fds open without FD_CLOEXEC at setup */
} fx_t;

/* Whether fd is open in this process without FD_CLOEXEC (a child inherits it). */
static bool
fd_inheritable(int fd)
{
    int fl = fcntl(fd, F_GETFD);
    return fl >= 0 && !(fl & FD_CLOEXEC);
}

static int
fx_setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    for (int fd = 0; fd < FD_SEEN_MAX; fd++)
        f->inheritable[fd] = fd_inheritable(fd);
    snprintf(f->dir, sizeof f->dir, "/tmp/xd_test_auth.XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->users, sizeof f->users, "%s/users.txt", f->dir);
    snprintf(f->pids, sizeof f->pids, "%s/pids", f->dir);
    if (mkdir(f->pids, 0700) != 0)
        return -1;
    char path[320];
    snprintf(path, sizeof path, "%s/xmppd.db", f->dir);
    xd_db_params_t prm = { .driver = "sqlite", .path = path, .busy_timeout_ms = 5000 };
    if (xd_db_open(&prm, &f->db) != 0)
        return -1;
    if (xd_pool_start(2, 256) != 0)
        return -1;
    if (xd_workers_start(2, NULL, NULL, NULL) != 0)
        return -1;
    *state = f;
    return 0;
}

static int
fx_teardown(void **state)
{
    fx_t *f = *state;
    xd_workers_stop();
    xd_auth_stop();
    xd_pool_stop();
    xd_workers_join();
    xd_db_close(f->db);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    int rc = system(cmd);
    free(f);
    return rc == 0 ? 0 : -1;
}

static xd_config_t *
cfg_make(const char *fmt, ...)
{
    char yaml[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(yaml, sizeof yaml, fmt, ap);
    va_end(ap);
    xd_config_t *cfg = NULL;
    char *err = NULL;
    int rc = xd_config_load_string("xmppd.yml", yaml, strlen(yaml), &cfg, &err);
    if (rc != 0)
        fail_msg("config: %s\n%s", err ? err : xd_strerror(rc), yaml);
    return cfg;
}

/* Starts auth on cfg (and drops cfg); fails the test on error.  The
 * teardown stops it. */
static void
auth_start(fx_t *f, xd_config_t *cfg)
{
    char *err = NULL;
    int rc = xd_auth_start(cfg, f->db, &err);
    if (rc != 0)
        fail_msg("xd_auth_start: %s (%s)", err ? err : "", xd_err_name(rc));
    xd_config_unref(cfg);
}

static uint64_t
now_ms(void)
{
    return uv_hrtime() / 1000000u;
}

static void
write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

/* The whole of a small file, in a static buffer. */
static const char *
read_file(const char *path)
{
    static char buf[1 << 16];
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    buf[n] = '\0';
    fclose(fp);
    return buf;
}

/* The pids extauth-crash.py recorded (or, with hangs, the processes that
 * hang on a request); returns how many. */
static size_t
pid_files(const fx_t *f, bool hangs, pid_t *out, size_t max)
{
    DIR *d = opendir(f->pids);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (hangs ? strncmp(e->d_name, ".hang-", 6) != 0 : e->d_name[0] == '.')
            continue;
        if (hangs)
            memmove(e->d_name, e->d_name + 6, strlen(e->d_name + 6) + 1);
        if (n < max && out != NULL)
            out[n] = (pid_t)atoi(e->d_name);
        n++;
    }
    closedir(d);
    return n;
}

static size_t
spawned(const fx_t *f, pid_t *out, size_t max)
{
    return pid_files(f, false, out, max);
}

/* Waits (up to WAIT_MS) until extauth-crash.py has recorded n processes
 * (hangs: n processes hanging on a request). */
static void
wait_pid_files(const fx_t *f, bool hangs, size_t n)
{
    uint64_t end = now_ms() + WAIT_MS;
    while (pid_files(f, hangs, NULL, 0) < n && now_ms() < end)
        usleep(2000);
    assert_int_equal(pid_files(f, hangs, NULL, 0), n);
}

static void
wait_spawned(const fx_t *f, size_t n)
{
    wait_pid_files(f, false, n);
}

/* Checks descriptor hygiene: every process extauth-crash.py recorded has
 * exactly 0, 1 and 2 open, and every descriptor this process opened since
 * setup is FD_CLOEXEC (so that no other child can hold a script's pipe and
 * keep it from seeing EOF). */
static void
check_fds(const fx_t *f)
{
    pid_t pids[16];
    size_t n = spawned(f, pids, 16);
    assert_true(n > 0);
    for (size_t i = 0; i < n && i < 16; i++) {
        char path[400];
        snprintf(path, sizeof path, "%s/%d", f->pids, (int)pids[i]);
        const char *list = read_file(path);
        if (strcmp(list, "0 1 2") != 0)
            fail_msg("script pid %d has descriptors %s", (int)pids[i], list);
    }
    for (int fd = 3; fd < FD_SEEN_MAX; fd++)
        if (fd_inheritable(fd) && !f->inheritable[fd])
            fail_msg("descriptor %d is inheritable (no FD_CLOEXEC)", fd);
}

/* True when no process of ours with that pid exists (reaped, not a zombie). */
static bool
pid_gone(pid_t pid)
{
    return kill(pid, 0) == -1 && errno == ESRCH;
}

/* ---- async calls from a worker loop -------------------------------------------------------- */

typedef enum {
    AC_GET_SCRAM,
    AC_CHECK,
    AC_EXISTS,
    AC_SET_PASSWORD,
    AC_REGISTER,
    AC_REMOVE,
    AC_REMOVE_CHECKED,
} ac_kind;

typedef struct acall {
    ac_kind kind;          /* which call */
    const char *host;      /* its arguments */
    const char *user;
    const char *password;
    xd_scram_hash hash;
    xd_worker_t *w;        /* the worker that made the call */
    int call_rc;           /* what the call returned */
    int status;            /* what the callback got */
    bool flag;             /* CHECK / EXISTS result */
    xd_scram_cred_t cred;  /* GET_SCRAM result */
    bool got_cred;         /* the callback got a non-NULL cred */
    bool same_worker;      /* the callback ran on w */
    atomic_int cbs;        /* callbacks run (must end at 0 or 1) */
    atomic_int done;       /* the call failed, or the callback ran */
} acall_t;

static void
ac_note(acall_t *a, int status)
{
    a->status = status;
    a->same_worker = xd_worker_self() == a->w;
    atomic_fetch_add(&a->cbs, 1);
    atomic_store(&a->done, 1);
}

static void
ac_plain_cb(void *arg, int status)
{
    ac_note(arg, status);
}

static void
ac_flag_cb(void *arg, int status, bool result)
{
    acall_t *a = arg;
    a->flag = result;
    ac_note(a, status);
}

static void
ac_scram_cb(void *arg, int status, const xd_scram_cred_t *cred)
{
    acall_t *a = arg;
    a->got_cred = cred != NULL;
    if (cred != NULL)
        a->cred = *cred;
    ac_note(a, status);
}

/* Runs on the worker: makes the call. */
static void
ac_start(xd_worker_t *w, void *arg)
{
    acall_t *a = arg;
    int rc = XD_EINVAL;
    a->w = w;
    switch (a->kind) {
    case AC_GET_SCRAM:
        rc = xd_auth_get_scram(a->host, a->user, a->hash, ac_scram_cb, a);
        break;
    case AC_CHECK:
        rc = xd_auth_check_password(a->host, a->user, a->password, ac_flag_cb, a);
        break;
    case AC_EXISTS:
        rc = xd_auth_user_exists(a->host, a->user, ac_flag_cb, a);
        break;
    case AC_SET_PASSWORD:
        rc = xd_auth_set_password(a->host, a->user, a->password, ac_plain_cb, a);
        break;
    case AC_REGISTER:
        rc = xd_auth_register(a->host, a->user, a->password, ac_plain_cb, a);
        break;
    case AC_REMOVE:
        rc = xd_auth_remove(a->host, a->user, ac_plain_cb, a);
        break;
    case AC_REMOVE_CHECKED:
        rc = xd_auth_remove_checked(a->host, a->user, a->password, ac_plain_cb, a);
        break;
    }
    a->call_rc = rc;
    if (rc != 0)
        atomic_store(&a->done, 1);
}

static void
ac_post(unsigned worker, acall_t *a)
{
    atomic_store(&a->done, 0);
    atomic_store(&a->cbs, 0);
    assert_int_equal(xd_worker_post(xd_worker_get(worker), ac_start, a), 0);
}

static void
ac_wait(acall_t *a)
{
    uint64_t end = now_ms() + WAIT_MS;
    while (!atomic_load(&a->done) && now_ms() < end)
        usleep(500);
    assert_true(atomic_load(&a->done));
}

static void
ac_mark(xd_worker_t *w, void *arg)
{
    (void)w;
    atomic_store((atomic_int *)arg, 1);
}

/* Until a message posted to w now has run: what was posted to w before,
 * the calls ac_post() asked for among it, has run too (the inbox is FIFO). */
static void
worker_roundtrip(xd_worker_t *w)
{
    uint64_t end = now_ms() + WAIT_MS;
    atomic_int ran = 0;
    assert_int_equal(xd_worker_post(w, ac_mark, &ran), 0);
    while (!atomic_load(&ran) && now_ms() < end)
        usleep(500);
    assert_true(atomic_load(&ran));
}

/* After a call on worker w that failed: lets everything that could still
 * run its callback run, without waiting for a while.  A callback reaches
 * the caller only through w's inbox: the pool's done message for an
 * internal host, auth_req_finish's post for an external or anonymous one
 * (anonymous answers are posted during the call).  So: wait until the pool
 * has nothing queued or running (every done message is posted by then),
 * then until a message posted to w behind them has run.  An external
 * host's script queue is not seen here: auth_ext_submit refuses before it
 * queues, and a request queued on a failed call would trip the assertion
 * in auth_req_finish (au_dispatch releases the worker hold on an error). */
static void
ac_settle(xd_worker_t *w)
{
    uint64_t end = now_ms() + WAIT_MS;
    while (xd_pool_pending() != 0 && now_ms() < end)
        usleep(500);
    assert_int_equal(xd_pool_pending(), 0);
    worker_roundtrip(w);
}

/* Makes one call on a worker and returns the status the caller sees: the
 * call's error, or the callback's status.  Checks "exactly one callback on
 * the calling worker, none after an error". */
static int
ac(unsigned worker, acall_t *a)
{
    ac_post(worker, a);
    ac_wait(a);
    if (a->call_rc != 0) {
        ac_settle(a->w); /* a wrong callback would have run by now */
        assert_int_equal(atomic_load(&a->cbs), 0);
        return a->call_rc;
    }
    assert_int_equal(atomic_load(&a->cbs), 1);
    assert_true(a->same_worker);
    return a->status;
}

static int
a_check(unsigned worker, const char *host, const char *user, const char *pw, bool *ok)
{
    acall_t a = { .kind = AC_CHECK, .host = host, .user = user, .password = pw };
    int rc = ac(worker, &a);
    *ok = a.flag;
    return rc;
}

static int
a_exists(unsigned worker, const char *host, const char *user, bool *exists)
{
    acall_t a = { .kind = AC_EXISTS, .host = host, .user = user };
    int rc = ac(worker, &a);
    *exists = a.flag;
    return rc;
}

static int
a_plain(unsigned worker, ac_kind kind, const char *host, const char *user, const char *pw)
{
    acall_t a = { .kind = kind, .host = host, .user = user, .password = pw };
    return ac(worker, &a);
}

/* ---- internal ------------------------------------------------------------------------------ */

static const char *internal_yaml = "hosts: [int.example, anon.example]\n"
                                   "scram_iterations: %d\n"
                                   "host_config:\n"
                                   "  anon.example:\n"
                                   "    auth_method: anonymous\n";

static void
test_auth__internal_async(void **state)
{
    fx_t *f = *state;
    const char *H = "int.example";
    bool ok = true;

    auth_start(f, cfg_make(internal_yaml, ITER));
    assert_int_equal(a_plain(0, AC_REGISTER, H, "alice", "wonder land"), 0);
    assert_int_equal(a_plain(1, AC_REGISTER, H, "alice", "x"), XD_EEXIST);
    assert_int_equal(a_plain(1, AC_REGISTER, H, "bob", "\x01"), XD_EINVAL); /* OpaqueString */

    assert_int_equal(a_check(0, H, "alice", "wonder land", &ok), 0);
    assert_true(ok);
    assert_int_equal(a_check(1, H, "alice", "wonder lane", &ok), 0);
    assert_false(ok);
    ok = true;
    assert_int_equal(a_check(1, H, "nobody", "wonder land", &ok), 0); /* unknown: just false */
    assert_false(ok);

    assert_int_equal(a_exists(0, H, "alice", &ok), 0);
    assert_true(ok);
    assert_int_equal(a_exists(1, H, "nobody", &ok), 0);
    assert_false(ok);

    assert_int_equal(a_plain(0, AC_SET_PASSWORD, H, "alice", "new pass"), 0);
    assert_int_equal(a_check(1, H, "alice", "wonder land", &ok), 0);
    assert_false(ok);
    assert_int_equal(a_check(0, H, "alice", "new pass", &ok), 0);
    assert_true(ok);
    assert_int_equal(a_plain(0, AC_SET_PASSWORD, H, "nobody", "p"), XD_ENOTFOUND);

    assert_int_equal(a_plain(1, AC_REMOVE_CHECKED, H, "alice", "wonder land"), XD_EAUTH_REFUSED);
    assert_int_equal(a_exists(0, H, "alice", &ok), 0);
    assert_true(ok);
    assert_int_equal(a_plain(1, AC_REMOVE_CHECKED, H, "nobody", "p"), XD_ENOTFOUND);
    assert_int_equal(a_plain(1, AC_REMOVE_CHECKED, H, "alice", "new pass"), 0);
    assert_int_equal(a_exists(0, H, "alice", &ok), 0);
    assert_false(ok);

    assert_int_equal(a_plain(0, AC_REGISTER, H, "carol", "c"), 0);
    assert_int_equal(a_plain(0, AC_REMOVE, H, "carol", NULL), 0);
    assert_int_equal(a_plain(0, AC_REMOVE, H, "carol", NULL), XD_ENOTFOUND);

    /* Errors returned by the call itself: never a callback (ac checks). */
    assert_int_equal(a_plain(0, AC_REGISTER, "nohost.example", "u", "p"), XD_ENOTFOUND);
    assert_int_equal(a_plain(0, AC_REGISTER, H, "", "p"), XD_EINVAL);
    assert_int_equal(a_plain(0, AC_REGISTER, H, "u", NULL), XD_EINVAL);
}

/* Collects listed users into a buffer "a,b,c,". */
static int
list_cb(void *arg, xd_str_t user)
{
    char *buf = arg;
    size_t n = strlen(buf);
    snprintf(buf + n, 256 - n, "%.*s,", (int)user.len, user.p);
    return 0;
}

static void
test_auth__internal_sync(void **state)
{
    fx_t *f = *state;
    const char *H = "int.example", *A = "anon.example";
    bool ok = true;
    char list[256] = "";

    /* Before start: closed. */
    assert_int_equal(xd_auth_register_sync(H, "x", "y"), XD_ECLOSED);
    auth_start(f, cfg_make(internal_yaml, ITER));
    xd_config_t *again = cfg_make(internal_yaml, ITER);
    assert_int_equal(xd_auth_start(again, f->db, NULL), XD_EEXIST);
    xd_config_unref(again);

    assert_int_equal(xd_auth_register_sync(H, "zed", "pz"), 0);
    assert_int_equal(xd_auth_register_sync(H, "amy", "pa"), 0);
    assert_int_equal(xd_auth_register_sync(H, "mia", "pm"), 0);
    assert_int_equal(xd_auth_register_sync(H, "mia", "pm"), XD_EEXIST);
    assert_int_equal(xd_auth_check_password_sync(H, "amy", "pa", &ok), 0);
    assert_true(ok);
    assert_int_equal(xd_auth_check_password_sync(H, "amy", "pm", &ok), 0);
    assert_false(ok);
    ok = true;
    assert_int_equal(xd_auth_check_password_sync(H, "ghost", "pa", &ok), 0);
    assert_false(ok);
    assert_int_equal(xd_auth_user_exists_sync(H, "zed", &ok), 0);
    assert_true(ok);
    assert_int_equal(xd_auth_set_password_sync(H, "zed", "pz2"), 0);
    assert_int_equal(xd_auth_check_password_sync(H, "zed", "pz", &ok), 0);
    assert_false(ok);
    assert_int_equal(xd_auth_check_password_sync(H, "zed", "pz2", &ok), 0);
    assert_true(ok);
    assert_int_equal(xd_auth_remove_checked_sync(H, "mia", "nope"), XD_EAUTH_REFUSED);
    assert_int_equal(xd_auth_remove_checked_sync(H, "mia", "pm"), 0);
    assert_int_equal(xd_auth_remove_sync(H, "mia"), XD_ENOTFOUND);
    assert_int_equal(xd_auth_user_exists_sync(H, "mia", &ok), 0);
    assert_false(ok);

    assert_int_equal(xd_auth_list_users_sync(H, list_cb, list), 0);
    assert_string_equal(list, "amy,zed,");

    /* Capabilities and the anonymous host. */
    int m = -1;
    assert_true(xd_auth_supports_scram(H));
    assert_false(xd_auth_anonymous_allowed(H));
    assert_false(xd_auth_supports_scram(A));
    assert_true(xd_auth_anonymous_allowed(A));
    assert_int_equal(xd_auth_method_of(A, &m), 0);
    assert_int_equal(m, XD_AUTH_ANONYMOUS);
    assert_int_equal(xd_auth_method_of("nohost.example", &m), XD_ENOTFOUND);
    ok = true;
    assert_int_equal(xd_auth_check_password_sync(A, "amy", "pa", &ok), 0);
    assert_false(ok);
    assert_int_equal(xd_auth_register_sync(A, "amy", "pa"), XD_ENOTSUP);
    assert_int_equal(xd_auth_list_users_sync(A, list_cb, list), XD_ENOTSUP);
    xd_scram_cred_t cred;
    assert_int_equal(xd_auth_get_scram_sync(A, "amy", XD_SCRAM_SHA256, &cred), XD_ENOTSUP);
    assert_int_equal(a_check(1, A, "amy", "pa", &ok), 0); /* async answer on the worker */
    assert_false(ok);
    assert_int_equal(a_plain(1, AC_SET_PASSWORD, A, "amy", "pa"), XD_ENOTSUP);

    /* After stop: closed, and nothing is served. */
    xd_auth_stop();
    assert_int_equal(xd_auth_check_password_sync(H, "amy", "pa", &ok), XD_ECLOSED);
    assert_int_equal(a_check(0, H, "amy", "pa", &ok), XD_ECLOSED);
    assert_false(xd_auth_supports_scram(H));
}

static void
test_auth__get_scram_verifies(void **state)
{
    fx_t *f = *state;
    const char *H = "int.example";
    const char *am = "n=dora,r=fyko+d2lbbFgONRv9qkxdawL,"
                     "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096,"
                     "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j";

    auth_start(f, cfg_make(internal_yaml, ITER));
    assert_int_equal(xd_auth_register_sync(H, "dora", "explorer"), 0);
    for (int h = 0; h < XD_SCRAM_HASH_COUNT; h++) {
        acall_t a = { .kind = AC_GET_SCRAM, .host = H, .user = "dora", .hash = (xd_scram_hash)h };
        assert_int_equal(ac((unsigned)h % 2, &a), 0);
        assert_true(a.got_cred);
        const xd_scram_cred_t *c = &a.cred;
        size_t klen = xd_scram_key_len(c->hash);
        assert_int_equal(c->hash, h);
        assert_int_equal(c->iterations, ITER);
        assert_int_equal(c->salt_len, XD_SCRAM_SALT_LEN);
        xd_str_t salt = { (const char *)c->salt, c->salt_len };

        uint8_t proof[XD_SCRAM_KEY_MAX];
        assert_int_equal(xd_scram_client_proof(c->hash, XD_STR("explorer"), salt, c->iterations,
                                               xd_str_c(am), proof),
                         0);
        assert_true(xd_scram_verify_proof(c->hash, c->stored_key, xd_str_c(am), proof, klen));
        assert_int_equal(xd_scram_client_proof(c->hash, XD_STR("explorer!"), salt,
                                               c->iterations, xd_str_c(am), proof),
                         0);
        assert_false(xd_scram_verify_proof(c->hash, c->stored_key, xd_str_c(am), proof, klen));

        uint8_t stored[XD_SCRAM_KEY_MAX], server[XD_SCRAM_KEY_MAX];
        assert_int_equal(xd_scram_derive(c->hash, XD_STR("explorer"), salt, c->iterations, stored,
                                         server),
                         0);
        assert_memory_equal(stored, c->stored_key, klen);
        assert_memory_equal(server, c->server_key, klen);

        /* The sync variant returns the same credential. */
        xd_scram_cred_t s;
        assert_int_equal(xd_auth_get_scram_sync(H, "dora", (xd_scram_hash)h, &s), 0);
        assert_memory_equal(s.stored_key, c->stored_key, klen);
    }
    acall_t a = { .kind = AC_GET_SCRAM, .host = H, .user = "nobody", .hash = XD_SCRAM_SHA1 };
    assert_int_equal(ac(0, &a), XD_ENOTFOUND);
    assert_false(a.got_cred);
}

/* ---- external ------------------------------------------------------------------------------ */

/* A config with ext.example (program, pool, timeout) and int.example. */
static xd_config_t *
ext_cfg(const char *program, int pool, const char *timeout)
{
    return cfg_make("hosts: [ext.example, int.example]\n"
                    "scram_iterations: %d\n"
                    "host_config:\n"
                    "  ext.example:\n"
                    "    auth_method: external\n"
                    "    extauth_program: '%s'\n"
                    "    extauth_pool_size: %d\n"
                    "    extauth_timeout: %s\n",
                    ITER, program, pool, timeout);
}

static const char *
extauth_py(const fx_t *f)
{
    static char cmd[512];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 \"$XD_TEST_SRCDIR/examples/extauth.py\" %s",
             f->users);
    return cmd;
}

static const char *
crash_py(const fx_t *f)
{
    static char cmd[512];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 \"$XD_TEST_SRCDIR/tests/unit/extauth-crash.py\" %s",
             f->pids);
    return cmd;
}

static void
test_auth__external_six_ops(void **state)
{
    fx_t *f = *state;
    const char *E = "ext.example";
    bool ok = false;

    write_file(f->users, "alice:wonderland\nbob:b:o:b\n");
    auth_start(f, ext_cfg(extauth_py(f), 2, "5s"));
    assert_false(xd_auth_supports_scram(E));
    assert_true(xd_auth_supports_scram("int.example"));

    /* auth */
    assert_int_equal(xd_auth_check_password_sync(E, "alice", "wonderland", &ok), 0);
    assert_true(ok);
    assert_int_equal(xd_auth_check_password_sync(E, "alice", "wonderlan", &ok), 0);
    assert_false(ok);
    assert_int_equal(a_check(1, E, "bob", "b:o:b", &ok), 0); /* ':' in a password is fine */
    assert_true(ok);
    assert_int_equal(a_check(0, E, "nobody", "x", &ok), 0);
    assert_false(ok);
    /* isuser */
    assert_int_equal(xd_auth_user_exists_sync(E, "alice", &ok), 0);
    assert_true(ok);
    assert_int_equal(a_exists(1, E, "carol", &ok), 0);
    assert_false(ok);
    /* tryregister */
    assert_int_equal(a_plain(0, AC_REGISTER, E, "carol", "pa:ss"), 0);
    assert_int_equal(xd_auth_register_sync(E, "carol", "other"), XD_EEXIST);
    assert_non_null(strstr(read_file(f->users), "carol:pa:ss\n"));
    assert_int_equal(xd_auth_check_password_sync(E, "carol", "pa:ss", &ok), 0);
    assert_true(ok);
    /* setpass */
    assert_int_equal(xd_auth_set_password_sync(E, "carol", "new"), 0);
    assert_int_equal(a_check(1, E, "carol", "pa:ss", &ok), 0);
    assert_false(ok);
    assert_int_equal(a_check(1, E, "carol", "new", &ok), 0);
    assert_true(ok);
    assert_int_equal(a_plain(0, AC_SET_PASSWORD, E, "nobody", "p"), XD_EAUTH_REFUSED);
    /* removeuser3 */
    assert_int_equal(a_plain(1, AC_REMOVE_CHECKED, E, "carol", "old"), XD_EAUTH_REFUSED);
    assert_int_equal(xd_auth_remove_checked_sync(E, "carol", "new"), 0);
    assert_int_equal(xd_auth_user_exists_sync(E, "carol", &ok), 0);
    assert_false(ok);
    /* removeuser */
    assert_int_equal(a_plain(0, AC_REMOVE, E, "alice", NULL), 0);
    assert_int_equal(xd_auth_remove_sync(E, "alice"), XD_EAUTH_REFUSED);
    assert_string_equal(read_file(f->users), "bob:b:o:b\n");

    /* What the protocol cannot do. */
    assert_int_equal(xd_auth_check_password_sync(E, "a:b", "x", &ok), XD_EINVAL);
    assert_int_equal(a_check(0, E, "a:b", "x", &ok), XD_EINVAL); /* no callback: ac checks */
    assert_int_equal(a_plain(1, AC_REGISTER, E, "x:", "x"), XD_EINVAL);
    xd_scram_cred_t cred;
    assert_int_equal(xd_auth_get_scram_sync(E, "bob", XD_SCRAM_SHA1, &cred), XD_ENOTSUP);
    acall_t g = { .kind = AC_GET_SCRAM, .host = E, .user = "bob", .hash = XD_SCRAM_SHA1 };
    assert_int_equal(ac(0, &g), XD_ENOTSUP);
    assert_int_equal(xd_auth_list_users_sync(E, list_cb, (char[256]){ 0 }), XD_ENOTSUP);
    char *big = calloc(1, 70000);
    memset(big, 'p', 69999);
    assert_int_equal(xd_auth_check_password_sync(E, "bob", big, &ok), XD_EINVAL); /* > 65535 */
    free(big);

    /* A stop with idle, well-behaved scripts takes the EOF path, not the kill. */
    uint64_t t0 = now_ms();
    xd_auth_stop();
    uint64_t stop_ms = now_ms() - t0;
    print_message("stop with 2 idle extauth.py processes: %llu ms\n",
                  (unsigned long long)stop_ms);
    assert_true(stop_ms < 450);
}

#define NCONC 200

static void
test_auth__external_concurrency(void **state)
{
    fx_t *f = *state;
    static acall_t calls[NCONC];
    const char *E = "ext.example";

    write_file(f->users, "u0:p0\nu1:p1\nu2:p2\nu3:p3\n");
    auth_start(f, ext_cfg(extauth_py(f), 3, "5s"));
    char users[NCONC][8], pws[NCONC][8];
    uint64_t t0 = now_ms();
    for (int i = 0; i < NCONC; i++) {
        snprintf(users[i], sizeof users[i], "u%d", i % 5); /* u4 does not exist */
        snprintf(pws[i], sizeof pws[i], "p%d", (i % 3 == 0) ? i % 5 : (i + 1) % 5);
        calls[i] = (acall_t){ .kind = i % 7 == 6 ? AC_EXISTS : AC_CHECK,
                              .host = E,
                              .user = users[i],
                              .password = i % 7 == 6 ? NULL : pws[i] };
        ac_post((unsigned)i % 2, &calls[i]);
    }
    for (int i = 0; i < NCONC; i++)
        ac_wait(&calls[i]);
    uint64_t el = now_ms() - t0;
    print_message("%d concurrent external requests over 3 processes: %llu ms (%.0f req/s)\n",
                  NCONC, (unsigned long long)el, el ? NCONC * 1000.0 / (double)el : 0.0);
    int trues = 0;
    for (int i = 0; i < NCONC; i++) {
        acall_t *a = &calls[i];
        assert_int_equal(a->call_rc, 0);
        assert_int_equal(atomic_load(&a->cbs), 1);
        assert_true(a->same_worker);
        assert_int_equal(a->status, 0);
        int u = i % 5;
        bool want = a->kind == AC_EXISTS ? u != 4 : (u != 4 && (i % 3 == 0));
        if (a->flag != want)
            fail_msg("request %d (%s %s/%s): got %d", i, a->kind == AC_EXISTS ? "isuser" : "auth",
                     a->user, a->password ? a->password : "-", a->flag);
        trues += a->flag;
    }
    assert_true(trues > 20); /* both answers occur */
}

static void
test_auth__external_crash_restarts(void **state)
{
    fx_t *f = *state;
    const char *E = "ext.example";
    char log_path[320];
    bool ok = false;

    /* Capture the log: it must tell host= and pid=, and never a password. */
    snprintf(log_path, sizeof log_path, "%s/xmppd.log", f->dir);
    assert_int_equal(xd_log_open(log_path), 0);
    xd_log_set_level(XD_LOG_DEBUG);

    auth_start(f, ext_cfg(crash_py(f), 1, "5s"));
    wait_spawned(f, 1);
    assert_int_equal(xd_auth_check_password_sync(E, "alice", "zz-secret-zz", &ok), 0);
    assert_false(ok);

    /* Dies mid-request: that request fails, the next one works on a new process. */
    assert_int_equal(a_check(0, E, "alice", "crash", &ok), XD_EINTERNAL);
    assert_int_equal(a_check(1, E, "alice", "good", &ok), 0);
    assert_true(ok);
    assert_int_equal(spawned(f, NULL, 0), 2);

    /* Garbage, half an answer, a closed stdin (EPIPE on the next write; the
     * test process does not ignore SIGPIPE, so it would die of it). */
    assert_int_equal(xd_auth_check_password_sync(E, "alice", "garbage", &ok), XD_EINTERNAL);
    assert_int_equal(xd_auth_check_password_sync(E, "alice", "good", &ok), 0);
    assert_true(ok);
    assert_int_equal(xd_auth_check_password_sync(E, "alice", "short", &ok), XD_EINTERNAL);
    assert_int_equal(xd_auth_check_password_sync(E, "alice", "good", &ok), 0);
    assert_true(ok);
    assert_int_equal(xd_auth_check_password_sync(E, "alice", "closein", &ok), 0);
    assert_false(ok);
    assert_int_equal(xd_auth_check_password_sync(E, "alice", "good", &ok), XD_EINTERNAL);
    assert_int_equal(xd_auth_check_password_sync(E, "alice", "good", &ok), 0);
    assert_true(ok);
    assert_int_equal(spawned(f, NULL, 0), 5);

    /* Back-off: two failures in a row wait 100 ms, then 200 ms. */
    uint64_t t0 = now_ms();
    assert_int_equal(xd_auth_check_password_sync(E, "alice", "crash", &ok), XD_EINTERNAL);
    assert_int_equal(xd_auth_check_password_sync(E, "alice", "crash", &ok), XD_EINTERNAL);
    uint64_t t1 = now_ms();
    assert_int_equal(xd_auth_check_password_sync(E, "alice", "good", &ok), 0);
    uint64_t t2 = now_ms();
    assert_true(ok);
    print_message("restart back-off: first %llu ms, second %llu ms\n",
                  (unsigned long long)(t1 - t0), (unsigned long long)(t2 - t1));
    assert_true(t1 - t0 >= 95);
    assert_true(t2 - t1 >= 195);
    assert_int_equal(spawned(f, NULL, 0), 7);

    xd_auth_stop();
    xd_log_open(NULL);
    xd_log_set_level(getenv("XD_TEST_VERBOSE") ? XD_LOG_DEBUG : XD_LOG_CRIT);
    const char *log = read_file(log_path);
    assert_non_null(strstr(log, "extauth process failed"));
    assert_non_null(strstr(log, "host=ext.example pid="));
    assert_null(strstr(log, "zz-secret-zz"));
    assert_null(strstr(log, "auth:alice"));
    pid_t pids[16];
    size_t n = spawned(f, pids, 16);
    for (size_t i = 0; i < n; i++)
        assert_true(pid_gone(pids[i]));
}

static void
test_auth__external_timeout(void **state)
{
    fx_t *f = *state;
    const char *E = "ext.example";
    bool ok = false;
    pid_t first;

    auth_start(f, ext_cfg(crash_py(f), 1, "300ms"));
    wait_spawned(f, 1);
    spawned(f, &first, 1);
    uint64_t t0 = now_ms();
    assert_int_equal(a_check(0, E, "alice", "hang", &ok), XD_ETIMEDOUT);
    uint64_t el = now_ms() - t0;
    print_message("hung script answered XD_ETIMEDOUT after %llu ms (timeout 300 ms)\n",
                  (unsigned long long)el);
    assert_true(el >= 295 && el < 1500);
    assert_true(pid_gone(first)); /* killed and reaped */
    assert_int_equal(a_check(1, E, "alice", "good", &ok), 0);
    assert_true(ok);
    assert_int_equal(xd_auth_check_password_sync(E, "alice", "bad", &ok), 0);
    assert_false(ok);
    assert_int_equal(spawned(f, NULL, 0), 2);

    /* A request queued behind a hung one is never sent: it expires with
     * XD_ETIMEDOUT too, and the pool recovers. */
    static acall_t hung, queued;
    hung = (acall_t){ .kind = AC_CHECK, .host = E, .user = "u", .password = "hang" };
    queued = (acall_t){ .kind = AC_CHECK, .host = E, .user = "u", .password = "good" };
    ac_post(0, &hung);
    ac_post(0, &queued); /* one worker runs them in post order */
    ac_wait(&hung);
    ac_wait(&queued);
    assert_int_equal(hung.status, XD_ETIMEDOUT);
    assert_int_equal(queued.status, XD_ETIMEDOUT);
    assert_int_equal(xd_auth_check_password_sync(E, "alice", "good", &ok), 0);
    assert_true(ok);
    assert_int_equal(spawned(f, NULL, 0), 3); /* the queued one reached no process */
}

/* Counts what many async calls made in one worker message got. */
typedef struct {
    int n;                /* calls to make */
    atomic_int accepted;  /* calls that returned 0 */
    atomic_int full;      /* calls that returned XD_EFULL */
    atomic_int other;     /* calls that returned something else */
    atomic_int canceled;  /* callbacks with XD_ECANCELED */
    atomic_int cbs;       /* callbacks */
    atomic_int submitted; /* the message has run */
} burst_t;

static void
burst_cb(void *arg, int status, bool ok)
{
    burst_t *b = arg;
    (void)ok;
    if (status == XD_ECANCELED)
        atomic_fetch_add(&b->canceled, 1);
    atomic_fetch_add(&b->cbs, 1);
}

static void
burst_start(xd_worker_t *w, void *arg)
{
    burst_t *b = arg;
    (void)w;
    for (int i = 0; i < b->n; i++) {
        int rc = xd_auth_check_password("ext.example", "u", "hang", burst_cb, b);
        if (rc == 0)
            atomic_fetch_add(&b->accepted, 1);
        else if (rc == XD_EFULL)
            atomic_fetch_add(&b->full, 1);
        else
            atomic_fetch_add(&b->other, 1);
    }
    atomic_store(&b->submitted, 1);
}

static void
test_auth__external_queue_full(void **state)
{
    fx_t *f = *state;
    static burst_t first, b;

    auth_start(f, ext_cfg(crash_py(f), 1, "10s"));
    wait_spawned(f, 1);
    first = (burst_t){ .n = 1 };
    assert_int_equal(xd_worker_post(xd_worker_get(0), burst_start, &first), 0);
    wait_pid_files(f, true, 1); /* the one process now hangs on it */
    b = (burst_t){ .n = 1100 };
    assert_int_equal(xd_worker_post(xd_worker_get(1), burst_start, &b), 0);
    for (int i = 0; i < 2000 && !atomic_load(&b.submitted); i++)
        usleep(1000);
    assert_true(atomic_load(&b.submitted));
    assert_int_equal(atomic_load(&first.accepted), 1);
    assert_int_equal(atomic_load(&b.accepted), 1024); /* the per-host queue bound */
    assert_int_equal(atomic_load(&b.full), 1100 - 1024);
    assert_int_equal(atomic_load(&b.other), 0);
    assert_int_equal(atomic_load(&b.cbs), 0);

    xd_auth_stop();
    for (int i = 0; i < 5000 && atomic_load(&b.cbs) < 1024; i++)
        usleep(1000);
    assert_int_equal(atomic_load(&first.cbs), 1);
    assert_int_equal(atomic_load(&first.canceled), 1);
    assert_int_equal(atomic_load(&b.cbs), 1024);
    assert_int_equal(atomic_load(&b.canceled), 1024);
}

static void
test_auth__external_start_errors(void **state)
{
    fx_t *f = *state;
    char *err = NULL;
    xd_config_t *cfg;

    cfg = ext_cfg("/nonexistent/xd-no-such-program --flag", 2, "1s");
    int rc = xd_auth_start(cfg, f->db, &err);
    assert_int_equal(rc, -ENOENT);
    assert_non_null(err);
    print_message("missing program: %s\n", err);
    assert_non_null(strstr(err, "/nonexistent/xd-no-such-program"));
    assert_non_null(strstr(err, "ext.example"));
    free(err);
    err = NULL;
    xd_config_unref(cfg);
    assert_int_equal(xd_auth_check_password_sync("int.example", "a", "b", &(bool){ 0 }),
                     XD_ECLOSED); /* nothing left running */

    cfg = ext_cfg("/bin/echo $(id)", 1, "1s");
    assert_int_equal(xd_auth_start(cfg, f->db, &err), XD_EINVAL);
    assert_non_null(strstr(err, "command substitution"));
    free(err);
    err = NULL;
    xd_config_unref(cfg);

    cfg = ext_cfg("/bin/cat $XD_TEST_NO_SUCH_VARIABLE", 1, "1s");
    assert_int_equal(xd_auth_start(cfg, f->db, &err), XD_EINVAL);
    assert_non_null(strstr(err, "undefined"));
    free(err);
    err = NULL;
    xd_config_unref(cfg);

    cfg = ext_cfg(extauth_py(f), 1, "1s");
    assert_int_equal(xd_auth_start(cfg, NULL, &err), XD_EINVAL); /* int.example needs a db */
    assert_non_null(strstr(err, "int.example"));
    free(err);
    xd_config_unref(cfg);
    assert_int_equal(waitpid(-1, NULL, WNOHANG), -1); /* the extauth.py started was reaped */
    assert_int_equal(errno, ECHILD);

    /* And a good start still works. */
    write_file(f->users, "a:b\n");
    auth_start(f, ext_cfg(extauth_py(f), 1, "1s"));
    bool ok = false;
    assert_int_equal(xd_auth_check_password_sync("ext.example", "a", "b", &ok), 0);
    assert_true(ok);
}

static void
test_auth__external_stop_in_flight(void **state)
{
    fx_t *f = *state;
    static acall_t calls[6];
    const char *E = "ext.example";

    auth_start(f, ext_cfg(crash_py(f), 2, "10s"));
    wait_spawned(f, 2);
    /* Two hang in the two processes; four wait in the queue behind them. */
    for (int i = 0; i < 6; i++) {
        calls[i] = (acall_t){ .kind = AC_CHECK, .host = E, .user = "u",
                              .password = i < 2 ? "hang" : "good" };
        ac_post((unsigned)i % 2, &calls[i]);
        if (i == 1)
            wait_pid_files(f, true, 2); /* both hangs reached a process */
    }
    /* Every call has been made; none is answered (the two processes hang,
     * the rest wait behind them).  That none is answered before the stop
     * is checked below: each ends with exactly one callback, XD_ECANCELED. */
    worker_roundtrip(xd_worker_get(0));
    worker_roundtrip(xd_worker_get(1));
    for (int i = 0; i < 6; i++)
        assert_false(atomic_load(&calls[i].done));
    check_fds(f); /* two processes: neither has the other's pipes */

    uint64_t t0 = now_ms();
    xd_auth_stop();
    uint64_t el = now_ms() - t0;
    print_message("stop with 2 hung scripts and 4 queued requests: %llu ms\n",
                  (unsigned long long)el);
    assert_true(el >= 450 && el < 2000); /* EOF ignored: SIGKILL after the 500 ms grace */
    for (int i = 0; i < 6; i++) {
        ac_wait(&calls[i]);
        assert_int_equal(calls[i].call_rc, 0);
        assert_int_equal(calls[i].status, XD_ECANCELED);
        assert_int_equal(atomic_load(&calls[i].cbs), 1);
        assert_true(calls[i].same_worker);
    }
    /* No zombie, no survivor. */
    assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
    assert_int_equal(errno, ECHILD);
    pid_t pids[4];
    assert_int_equal(spawned(f, pids, 4), 2);
    assert_true(pid_gone(pids[0]));
    assert_true(pid_gone(pids[1]));
    /* Later calls: closed. */
    assert_int_equal(a_check(0, E, "u", "good", &(bool){ 0 }), XD_ECLOSED);
}

static void
test_auth__reload(void **state)
{
    fx_t *f = *state;
    const char *E = "ext.example";
    bool ok = false;
    char *err = NULL;
    pid_t pids[8];

    auth_start(f, ext_cfg(crash_py(f), 2, "10s"));
    wait_spawned(f, 2);
    assert_int_equal(xd_auth_register_sync("int.example", "ivy", "pi"), 0);

    /* Same program and pool size: the processes stay, the new timeout
     * applies.  A pool the new table does not keep is stopped, its
     * processes reaped, before xd_auth_reload returns: both still running
     * means the pool was kept.  (The processes of a stray second pool,
     * once started, would outlive the reload below, after which every
     * earlier process must be gone.) */
    assert_int_equal(spawned(f, pids, 8), 2);
    xd_config_t *cfg = ext_cfg(crash_py(f), 2, "300ms");
    assert_int_equal(xd_auth_reload(cfg, &err), 0);
    xd_config_unref(cfg);
    assert_false(pid_gone(pids[0]));
    assert_false(pid_gone(pids[1]));
    assert_int_equal(spawned(f, NULL, 0), 2);
    uint64_t t0 = now_ms();
    assert_int_equal(xd_auth_check_password_sync(E, "u", "hang", &ok), XD_ETIMEDOUT);
    assert_true(now_ms() - t0 < 2000);
    assert_int_equal(xd_auth_check_password_sync(E, "u", "good", &ok), 0);
    assert_true(ok);

    /* A bad program: the old setup stays in force. */
    cfg = ext_cfg("/nonexistent/xd-other", 1, "1s");
    assert_int_not_equal(xd_auth_reload(cfg, &err), 0);
    assert_non_null(strstr(err, "/nonexistent/xd-other"));
    free(err);
    err = NULL;
    xd_config_unref(cfg);
    assert_int_equal(xd_auth_check_password_sync(E, "u", "good", &ok), 0);
    assert_true(ok);

    /* A new pool size: new processes, the old ones stopped and reaped. */
    size_t before = spawned(f, pids, 8);
    cfg = ext_cfg(crash_py(f), 1, "1s");
    assert_int_equal(xd_auth_reload(cfg, &err), 0);
    xd_config_unref(cfg);
    wait_spawned(f, before + 1);
    for (size_t i = 0; i < before; i++)
        assert_true(pid_gone(pids[i]));
    assert_int_equal(xd_auth_check_password_sync(E, "u", "good", &ok), 0);
    assert_true(ok);

    /* Methods change, hosts go: ext.example becomes anonymous, int.example
     * keeps its users (same db). */
    cfg = cfg_make("hosts: [ext.example, int.example]\n"
                   "host_config:\n"
                   "  ext.example:\n"
                   "    auth_method: anonymous\n");
    assert_int_equal(xd_auth_reload(cfg, &err), 0);
    xd_config_unref(cfg);
    assert_true(xd_auth_anonymous_allowed(E));
    assert_int_equal(xd_auth_check_password_sync("int.example", "ivy", "pi", &ok), 0);
    assert_true(ok);
    cfg = cfg_make("hosts: [int.example]\n");
    assert_int_equal(xd_auth_reload(cfg, &err), 0);
    xd_config_unref(cfg);
    assert_int_equal(xd_auth_check_password_sync(E, "u", "good", &ok), XD_ENOTFOUND);
    size_t n = spawned(f, pids, 8);
    for (size_t i = 0; i < n; i++)
        assert_true(pid_gone(pids[i]));
    assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
    assert_int_equal(errno, ECHILD);
}

int
main(void)
{
    if (getenv("XD_TEST_SRCDIR") == NULL) {
        fprintf(stderr, "test_auth: set XD_TEST_SRCDIR to the source tree (meson test does)\n");
        return 1;
    }
    xd_log_set_level(getenv("XD_TEST_VERBOSE") ? XD_LOG_DEBUG : XD_LOG_CRIT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_auth__internal_async, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_auth__internal_sync, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_auth__get_scram_verifies, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_auth__external_six_ops, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_auth__external_concurrency, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_auth__external_crash_restarts, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_auth__external_timeout, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_auth__external_queue_full, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_auth__external_start_errors, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_auth__external_stop_in_flight, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_auth__reload, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

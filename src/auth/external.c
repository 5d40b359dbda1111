/*
 * external.c — the external auth backend: a pool of script processes per
 * host speaking ejabberd's external authentication protocol (the ejabberd
 * Developers Guide, 4.0.1 "External"):
 *
 *   request  2-byte big-endian length, then one of
 *            auth:User:Server:Password        isuser:User:Server
 *            setpass:User:Server:Password     tryregister:User:Server:Password
 *            removeuser:User:Server           removeuser3:User:Server:Password
 *   answer   0x0002 (the length of what follows), then 0x0001 (success,
 *            valid) or 0x0000 (failure, invalid).
 *
 * ':' separates the fields and cannot be escaped, so a user or host with a
 * ':' is refused before anything is sent; a password may hold one (it is
 * the last field).  A request is at most AUTH_EXT_MSG_MAX bytes.
 *
 * Structure.  One auth_ext_t per external host owns `nproc` slots; a slot is
 * one thread that owns one child process and serves one request at a time
 * with plain blocking-style I/O (poll on non-blocking pipes).  No event loop
 * is involved, so nothing here can stall a worker.  Requests wait in one
 * bounded FIFO per host (EXT_QUEUE_MAX); a slot with a live process takes
 * the oldest.
 *
 *   slot:  spawn ─► wait for a request ─► check the child (no EOF, no stray
 *          bytes; else requeue the request and restart) ─► write request,
 *          read 4 bytes, within extauth_timeout ─► answer ─► wait …
 *
 * Failures of one request:
 *   - no answer within the timeout (counted from when the request is sent):
 *     XD_ETIMEDOUT, and the process is killed and restarted, since a late
 *     answer would be taken for the next request's;
 *   - the process exits, closes a pipe, or answers garbage (length != 2,
 *     code not 0/1, fewer than 4 bytes): XD_EINTERNAL, and it is restarted;
 *   - a request still queued (never sent) extauth_timeout after it was
 *     submitted: XD_ETIMEDOUT.  This is checked whenever a slot or a
 *     submitter looks at the queue, so with every process busy or waiting
 *     to restart it may fire late (by at most one timeout or one back-off);
 *   - stop: queued and in-flight requests end with XD_ECANCELED.
 * A restart waits a back-off (EXT_BACKOFF_MIN_MS doubling to
 * EXT_BACKOFF_MAX_MS over consecutive failures, reset by a good answer), so
 * a script that always crashes does not spin; every restart is logged.
 *
 * Processes: posix_spawnp with stdin/stdout on pipes (O_CLOEXEC on our side
 * and theirs, so no other child inherits them: a script holding another
 * script's stdin would keep it from ever seeing EOF), stderr shared with the
 * server, every other descriptor closed in the child (closefrom 3, against
 * descriptors leaked by other code), the signal mask cleared and
 * SIGPIPE/SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGCHLD reset to default (the server
 * may ignore some).  Slot threads block
 * SIGPIPE, so a write to a dead script fails with EPIPE instead of killing
 * the server.  Stop: EOF on stdin, up to EXT_STOP_GRACE_MS for the process
 * to exit (all slots in parallel), then SIGKILL; every child is reaped with
 * waitpid on its own pid.
 *
 * Logs carry host= and pid=, never a password (nor the request text).
 *
 * Who touches what: a slot's fields (pid, fds, failures, respawn_at_ms)
 * belong to its thread once it runs (start and stop touch them only while no
 * thread runs); the queue and `stopping` are guarded by mu; timeout_ms is
 * atomic; everything else is immutable after start.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>
#include <wordexp.h>

#include "auth/auth_int.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"
#include "xmppd/log.h"

#define EXT_QUEUE_MAX 1024       /* requests waiting per host, over all its processes */
#define EXT_BACKOFF_MIN_MS 100   /* first restart delay after a failure */
#define EXT_BACKOFF_MAX_MS 10000 /* restart delay cap */
#define EXT_STOP_GRACE_MS 500    /* stop: time between EOF and SIGKILL */

typedef struct ext_slot {
    auth_ext_t *x;          /* the owning pool; immutable */
    unsigned index;         /* position in x->slots; immutable */
    uv_thread_t thread;     /* runs ext_slot_main */
    bool thread_started;    /* start/stop only */
    pid_t pid;              /* the child, 0 when none */
    int in_fd;              /* our end of the child's stdin (O_NONBLOCK), or -1 */
    int out_fd;             /* our end of the child's stdout (O_NONBLOCK), or -1 */
    unsigned failures;      /* abnormal ends since the last good answer */
    uint64_t respawn_at_ms; /* pid == 0: when to spawn again (ext_now_ms clock) */
} ext_slot_t;

struct auth_ext {
    char *host;                  /* owned; the served host, for logs and requests */
    char *program;               /* owned; the configured command line */
    wordexp_t words;             /* program split; we_wordv is the child's argv */
    unsigned nproc;              /* number of slots */
    _Atomic uint64_t timeout_ms; /* answer timeout of requests sent from now; 0 = none */
    int stop_fd;                 /* eventfd; readable once stopping (wakes slots in poll) */
    uv_mutex_t mu;               /* guards head, tail, queued, stopping */
    uv_cond_t cv_work;           /* a request was queued; slots with a live child wait */
    uv_cond_t cv_ctl;            /* stopping; slots waiting to respawn wait here */
    auth_req_t *head, *tail;     /* requests not sent yet, oldest first */
    unsigned queued;             /* length of that FIFO, <= EXT_QUEUE_MAX */
    bool stopping;               /* auth_ext_stop has begun */
    ext_slot_t *slots;           /* nproc slots, owned */
};

/* The result of one exchange with a child. */
typedef enum ext_io {
    EXT_IO_OK,      /* *result holds 0 or 1 */
    EXT_IO_TIMEOUT, /* no full answer within the timeout */
    EXT_IO_BROKEN,  /* the child died, closed a pipe or answered garbage */
    EXT_IO_STOP,    /* the pool is stopping */
} ext_io;

static uint64_t
ext_now_ms(void)
{
    return uv_hrtime() / 1000000u;
}

/* ---- the queue (under mu) -------------------------------------------------------------------- */

static void
ext_push_locked(auth_ext_t *x, auth_req_t *req, bool front)
{
    if (front) {
        req->next = x->head;
        x->head = req;
        if (x->tail == NULL)
            x->tail = req;
    } else {
        req->next = NULL;
        if (x->tail != NULL)
            x->tail->next = req;
        else
            x->head = req;
        x->tail = req;
    }
    x->queued++;
}

static auth_req_t *
ext_pop_locked(auth_ext_t *x)
{
    auth_req_t *req = x->head;
    if (req != NULL) {
        x->head = req->next;
        if (x->head == NULL)
            x->tail = NULL;
        req->next = NULL;
        x->queued--;
    }
    return req;
}

/* Takes the requests at the head whose queue deadline has passed. */
static auth_req_t *
ext_take_expired_locked(auth_ext_t *x, uint64_t now)
{
    auth_req_t *list = NULL, **end = &list;
    while (x->head != NULL && x->head->deadline_ms <= now) {
        *end = ext_pop_locked(x);
        end = &(*end)->next;
    }
    return list;
}

/* Finishes every request of list with status (outside mu). */
static unsigned
ext_fail_list(auth_req_t *list, int status)
{
    unsigned n = 0;
    while (list != NULL) {
        auth_req_t *req = list;
        list = req->next;
        req->next = NULL;
        req->status = status;
        auth_req_finish(req);
        n++;
    }
    return n;
}

/* ---- processes ------------------------------------------------------------------------------- */

/* Moves fd to a number >= 3 (keeping O_CLOEXEC), so that the child's
 * dup2 onto 0 and 1 can never clobber the other pipe end. */
static int
ext_fd_high(int fd)
{
    if (fd < 0 || fd >= 3)
        return fd;
    int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int e = errno;
    close(fd);
    errno = e;
    return nfd;
}

static int
ext_pipe(int fds[2])
{
    if (pipe2(fds, O_CLOEXEC) != 0)
        return -errno;
    fds[0] = ext_fd_high(fds[0]);
    fds[1] = ext_fd_high(fds[1]);
    if (fds[0] < 0 || fds[1] < 0) {
        int rc = -errno;
        if (fds[0] >= 0)
            close(fds[0]);
        if (fds[1] >= 0)
            close(fds[1]);
        return rc;
    }
    return 0;
}

/* Starts s's child.  0 or -errno (then s has no child). */
static int
ext_spawn(ext_slot_t *s)
{
    auth_ext_t *x = s->x;
    int in[2], out[2];
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, dflt;
    pid_t pid = 0;
    int rc;

    XD_ASSERT(s->pid == 0);
    if ((rc = ext_pipe(in)) != 0)
        return rc;
    if ((rc = ext_pipe(out)) != 0) {
        close(in[0]);
        close(in[1]);
        return rc;
    }
    sigemptyset(&none);
    sigemptyset(&dflt);
    sigaddset(&dflt, SIGPIPE);
    sigaddset(&dflt, SIGINT);
    sigaddset(&dflt, SIGTERM);
    sigaddset(&dflt, SIGHUP);
    sigaddset(&dflt, SIGQUIT);
    sigaddset(&dflt, SIGCHLD);
    rc = posix_spawn_file_actions_init(&fa);
    if (rc == 0) {
        rc = posix_spawnattr_init(&at);
        if (rc == 0) {
            if ((rc = posix_spawn_file_actions_adddup2(&fa, in[0], STDIN_FILENO)) == 0 &&
                (rc = posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO)) == 0 &&
                (rc = posix_spawn_file_actions_addclosefrom_np(&fa, 3)) == 0 &&
                (rc = posix_spawnattr_setsigmask(&at, &none)) == 0 &&
                (rc = posix_spawnattr_setsigdefault(&at, &dflt)) == 0 &&
                (rc = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK |
                                                        POSIX_SPAWN_SETSIGDEF)) == 0)
                rc = posix_spawnp(&pid, x->words.we_wordv[0], &fa, &at, x->words.we_wordv,
                                  environ);
            posix_spawnattr_destroy(&at);
        }
        posix_spawn_file_actions_destroy(&fa);
    }
    close(in[0]);
    close(out[1]);
    if (rc != 0) {
        close(in[1]);
        close(out[0]);
        return -rc;
    }
    (void)fcntl(in[1], F_SETFL, fcntl(in[1], F_GETFL) | O_NONBLOCK);
    (void)fcntl(out[0], F_SETFL, fcntl(out[0], F_GETFL) | O_NONBLOCK);
    s->pid = pid;
    s->in_fd = in[1];
    s->out_fd = out[0];
    XD_LOG(NULL, XD_INFO, "extauth process started", "host=%s pid=%d slot=%u", x->host,
           (int)pid, s->index);
    return 0;
}

static void
ext_close_fds(ext_slot_t *s)
{
    if (s->in_fd >= 0)
        close(s->in_fd);
    if (s->out_fd >= 0)
        close(s->out_fd);
    s->in_fd = s->out_fd = -1;
}

/* Reaps pid (blocking); returns its wait status. */
static int
ext_reap(pid_t pid)
{
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return st;
}

/* "exit=N" or "signal=N" for a wait status. */
static const char *
ext_status_str(int st, char buf[32])
{
    if (WIFEXITED(st))
        snprintf(buf, 32, "exit=%d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, 32, "signal=%d", WTERMSIG(st));
    else
        snprintf(buf, 32, "status=%d", st);
    return buf;
}

/* Counts one more failure of s and schedules its next spawn after the
 * back-off; returns the delay. */
static uint64_t
ext_backoff(ext_slot_t *s)
{
    s->failures++;
    unsigned shift = s->failures - 1 < 10 ? s->failures - 1 : 10;
    uint64_t delay = (uint64_t)EXT_BACKOFF_MIN_MS << shift;
    if (delay > EXT_BACKOFF_MAX_MS)
        delay = EXT_BACKOFF_MAX_MS;
    s->respawn_at_ms = ext_now_ms() + delay;
    return delay;
}

/* Kills and reaps s's child after a failure, logs why, and schedules the
 * restart with the back-off. */
static void
ext_fail_child(ext_slot_t *s, const char *why)
{
    char sbuf[32];
    pid_t pid = s->pid;

    ext_close_fds(s);
    kill(pid, SIGKILL); /* harmless when it has exited: it stays ours until reaped */
    int st = ext_reap(pid);
    s->pid = 0;
    uint64_t delay = ext_backoff(s);
    XD_LOG(NULL, XD_WARN, "extauth process failed, restarting",
           "host=%s pid=%d reason=\"%s\" %s restart_in_ms=%llu failures=%u", s->x->host,
           (int)pid, why, ext_status_str(st, sbuf), (unsigned long long)delay, s->failures);
}

/* Tries to start s's child again (its back-off is over). */
static void
ext_respawn(ext_slot_t *s)
{
    int rc = ext_spawn(s);
    if (rc == 0)
        return;
    uint64_t delay = ext_backoff(s);
    XD_LOG(NULL, XD_ERROR, "extauth spawn failed", "host=%s slot=%u err=%s restart_in_ms=%llu",
           s->x->host, s->index, xd_err_name(rc), (unsigned long long)delay);
}

/* Stops s's child for good: EOF, up to grace_ms for it to exit, SIGKILL. */
static void
ext_shutdown_child(ext_slot_t *s, uint64_t grace_ms)
{
    char sbuf[32];
    pid_t pid = s->pid;
    int st = 0;
    bool killed = false;

    if (pid == 0)
        return;
    if (s->in_fd >= 0) {
        close(s->in_fd); /* EOF: a well-behaved script exits now */
        s->in_fd = -1;
    }
    uint64_t deadline = ext_now_ms() + grace_ms;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR))
            break;
        uint64_t now = ext_now_ms();
        if (now >= deadline) {
            kill(pid, SIGKILL);
            st = ext_reap(pid);
            killed = true;
            break;
        }
        int wait_ms = (int)(deadline - now < 20 ? deadline - now : 20);
        if (s->out_fd >= 0) {
            /* Drain what it still writes; EOF usually means it has exited. */
            struct pollfd p = { s->out_fd, POLLIN, 0 };
            if (poll(&p, 1, wait_ms) > 0) {
                char junk[256];
                ssize_t k = read(s->out_fd, junk, sizeof junk);
                if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR)) {
                    close(s->out_fd);
                    s->out_fd = -1;
                }
            }
        } else {
            usleep((useconds_t)(wait_ms > 5 ? 5 : wait_ms) * 1000u);
        }
    }
    ext_close_fds(s);
    s->pid = 0;
    XD_LOG(NULL, XD_INFO, "extauth process stopped", "host=%s pid=%d %s killed=%s", s->x->host,
           (int)pid, ext_status_str(st, sbuf), killed ? "true" : "false");
}

/* True when s's child looks usable before a request is sent: no EOF and no
 * bytes it wrote without being asked.  Otherwise *why says what is wrong. */
static bool
ext_child_ok(ext_slot_t *s, const char **why)
{
    struct pollfd p = { s->out_fd, POLLIN, 0 };
    int n;

    while ((n = poll(&p, 1, 0)) < 0 && errno == EINTR)
        ;
    if (n == 0)
        return true;
    if (n < 0) {
        *why = "poll failed";
        return false;
    }
    if (p.revents & POLLIN) {
        char c;
        ssize_t k = read(s->out_fd, &c, 1);
        if (k > 0) {
            *why = "wrote without a request (out of sync)";
            return false;
        }
        if (k < 0 && (errno == EAGAIN || errno == EINTR))
            return true;
    }
    *why = "exited while idle";
    return false;
}

/* ---- one request ----------------------------------------------------------------------------- */

/* Bytes of req's request text (without the 2-byte length). */
static size_t
ext_msg_len(const auth_req_t *req)
{
    size_t n = strlen(auth_op_name(req->op)) + 1 + strlen(req->user) + 1 + strlen(req->host);
    if (req->password != NULL)
        n += 1 + strlen(req->password);
    return n;
}

/* Writes the framed request (2 + len bytes) into buf. */
static void
ext_msg_build(const auth_req_t *req, size_t len, uint8_t *buf)
{
    buf[0] = (uint8_t)(len >> 8);
    buf[1] = (uint8_t)(len & 0xff);
    int n = snprintf((char *)buf + 2, len + 1, "%s:%s:%s%s%s", auth_op_name(req->op), req->user,
                     req->host, req->password != NULL ? ":" : "",
                     req->password != NULL ? req->password : "");
    XD_ASSERT(n == (int)len);
}

/* Writes msg to s's child and reads its 4-byte answer, within timeout_ms
 * (0 = no limit) of now. */
static ext_io
ext_exchange(ext_slot_t *s, const uint8_t *msg, size_t len, uint64_t timeout_ms,
             unsigned *result, const char **why)
{
    auth_ext_t *x = s->x;
    uint64_t deadline = timeout_ms ? ext_now_ms() + timeout_ms : UINT64_MAX;
    uint8_t ans[4];
    size_t off = 0, got = 0;

    while (got < sizeof ans) {
        struct pollfd p[3] = {
            { x->stop_fd, POLLIN, 0 },
            { s->out_fd, POLLIN, 0 },
            { off < len ? s->in_fd : -1, POLLOUT, 0 }, /* poll skips a negative fd */
        };
        int wait_ms = -1;
        if (deadline != UINT64_MAX) {
            uint64_t now = ext_now_ms();
            if (now >= deadline)
                return EXT_IO_TIMEOUT;
            wait_ms = deadline - now > INT_MAX ? INT_MAX : (int)(deadline - now);
        }
        int n = poll(p, 3, wait_ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            *why = "poll failed";
            return EXT_IO_BROKEN;
        }
        if (n == 0)
            continue; /* the deadline test above decides */
        if (p[0].revents != 0)
            return EXT_IO_STOP;
        if (p[2].revents != 0) {
            ssize_t k = write(s->in_fd, msg + off, len - off);
            if (k > 0) {
                off += (size_t)k;
            } else if (k < 0 && errno != EAGAIN && errno != EINTR) {
                *why = errno == EPIPE ? "closed its stdin" : "write failed";
                return EXT_IO_BROKEN;
            }
        }
        if (p[1].revents != 0) {
            ssize_t k = read(s->out_fd, ans + got, sizeof ans - got);
            if (k > 0) {
                got += (size_t)k;
            } else if (k == 0) {
                *why = got > 0 ? "short answer" : "exited";
                return EXT_IO_BROKEN;
            } else if (errno != EAGAIN && errno != EINTR) {
                *why = "read failed";
                return EXT_IO_BROKEN;
            }
        }
    }
    if (off < len) {
        *why = "answered before reading the whole request";
        return EXT_IO_BROKEN;
    }
    if (ans[0] != 0 || ans[1] != 2) {
        *why = "bad answer length";
        return EXT_IO_BROKEN;
    }
    unsigned code = (unsigned)ans[2] << 8 | ans[3];
    if (code > 1) {
        *why = "bad answer code";
        return EXT_IO_BROKEN;
    }
    *result = code;
    return EXT_IO_OK;
}

/* Sets req's result from the script's answer. */
static void
ext_answer(auth_req_t *req, unsigned code)
{
    req->flag = false;
    switch (req->op) {
    case AUTH_OP_CHECK:
    case AUTH_OP_EXISTS:
        req->status = 0;
        req->flag = code == 1;
        break;
    case AUTH_OP_REGISTER:
        req->status = code == 1 ? 0 : XD_EEXIST; /* as ejabberd reads a refusal */
        break;
    default:
        req->status = code == 1 ? 0 : XD_EAUTH_REFUSED;
        break;
    }
}

/* Serves req on s's child and finishes it.  Returns false when the pool is
 * stopping. */
static bool
ext_serve(ext_slot_t *s, auth_req_t *req)
{
    auth_ext_t *x = s->x;
    size_t len = ext_msg_len(req);
    uint8_t *msg = xd_malloc(len + 3); /* + length prefix + snprintf's NUL */
    uint64_t timeout_ms = atomic_load(&x->timeout_ms);
    unsigned code = 0;
    const char *why = "";
    pid_t pid = s->pid;

    ext_msg_build(req, len, msg);
    ext_io io = ext_exchange(s, msg, len + 2, timeout_ms, &code, &why);
    OPENSSL_cleanse(msg, len + 3);
    xd_free(msg);

    switch (io) {
    case EXT_IO_OK:
        s->failures = 0;
        ext_answer(req, code);
        auth_req_finish(req);
        return true;
    case EXT_IO_TIMEOUT:
        XD_LOG(NULL, XD_WARN, "extauth timeout", "host=%s pid=%d op=%s timeout_ms=%llu", x->host,
               (int)pid, auth_op_name(req->op), (unsigned long long)timeout_ms);
        /* Kill first (SIGKILL and reap take microseconds): whoever sees the
         * failure may rely on that process being gone. */
        ext_fail_child(s, "timeout");
        req->status = XD_ETIMEDOUT;
        auth_req_finish(req);
        return true;
    case EXT_IO_BROKEN:
        ext_fail_child(s, why);
        req->status = XD_EINTERNAL;
        auth_req_finish(req);
        return true;
    case EXT_IO_STOP:
        req->status = XD_ECANCELED;
        auth_req_finish(req);
        return false;
    }
    return true;
}

/* ---- the slot thread ------------------------------------------------------------------------- */

/* Waits until s has a live child and a request, restarting the child when
 * its back-off is over and failing expired queued requests on the way.
 * NULL when the pool is stopping. */
static auth_req_t *
ext_next(ext_slot_t *s)
{
    auth_ext_t *x = s->x;
    auth_req_t *req = NULL;

    uv_mutex_lock(&x->mu);
    while (!x->stopping) {
        uint64_t now = ext_now_ms();
        auth_req_t *expired = ext_take_expired_locked(x, now);
        if (expired != NULL) {
            uv_mutex_unlock(&x->mu);
            ext_fail_list(expired, XD_ETIMEDOUT);
            uv_mutex_lock(&x->mu);
            continue;
        }
        if (s->pid == 0) {
            if (now >= s->respawn_at_ms) {
                uv_mutex_unlock(&x->mu);
                ext_respawn(s);
                uv_mutex_lock(&x->mu);
                continue;
            }
            uint64_t until = s->respawn_at_ms;
            if (x->head != NULL && x->head->deadline_ms < until)
                until = x->head->deadline_ms;
            (void)uv_cond_timedwait(&x->cv_ctl, &x->mu, (until - now) * 1000000u);
            continue;
        }
        req = ext_pop_locked(x);
        if (req != NULL)
            break;
        uv_cond_wait(&x->cv_work, &x->mu);
    }
    uv_mutex_unlock(&x->mu);
    return req;
}

static void
ext_slot_main(void *arg)
{
    ext_slot_t *s = arg;
    auth_ext_t *x = s->x;
    sigset_t pipe_set;

    /* A write to a script that has gone must fail with EPIPE, not raise a
     * SIGPIPE that kills the server.  The signal is thread-directed, so
     * blocking it here is enough (it stays pending on this thread). */
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, NULL);

    for (;;) {
        auth_req_t *req = ext_next(s);
        if (req == NULL)
            break;
        const char *why = NULL;
        if (!ext_child_ok(s, &why)) {
            /* Never sent: give it back for the next live process. */
            uv_mutex_lock(&x->mu);
            bool stopping = x->stopping;
            if (!stopping) {
                ext_push_locked(x, req, true);
                uv_cond_signal(&x->cv_work);
            }
            uv_mutex_unlock(&x->mu);
            if (stopping) {
                req->status = XD_ECANCELED;
                auth_req_finish(req);
                break;
            }
            ext_fail_child(s, why);
            continue;
        }
        if (!ext_serve(s, req))
            break;
    }
    ext_shutdown_child(s, EXT_STOP_GRACE_MS);
}

/* ---- the pool -------------------------------------------------------------------------------- */

static const char *
ext_wordexp_error(int rc)
{
    switch (rc) {
    case WRDE_BADCHAR: return "unquoted special character (one of | & ; < > ( ) { } or newline)";
    case WRDE_BADVAL: return "undefined shell variable";
    case WRDE_CMDSUB: return "command substitution is not allowed";
    case WRDE_NOSPACE: return "out of memory";
    case WRDE_SYNTAX: return "shell syntax error (unbalanced quotes?)";
    default: return "cannot be split into words";
    }
}

/* Stops every slot and frees x; the body of auth_ext_stop and of a failed
 * start.  Returns how many queued requests were canceled. */
static unsigned
ext_destroy(auth_ext_t *x)
{
    uv_mutex_lock(&x->mu);
    x->stopping = true;
    auth_req_t *queued = x->head;
    x->head = x->tail = NULL;
    x->queued = 0;
    uv_cond_broadcast(&x->cv_work);
    uv_cond_broadcast(&x->cv_ctl);
    uv_mutex_unlock(&x->mu);
    uint64_t one = 1;
    if (write(x->stop_fd, &one, sizeof one) != (ssize_t)sizeof one)
        XD_LOG(NULL, XD_ERROR, "extauth stop wake-up failed", "host=%s errno=%d", x->host, errno);
    unsigned canceled = ext_fail_list(queued, XD_ECANCELED);

    /* Each slot thread shuts its own child down, all in parallel. */
    for (unsigned i = 0; i < x->nproc; i++)
        if (x->slots[i].thread_started)
            uv_thread_join(&x->slots[i].thread);
    for (unsigned i = 0; i < x->nproc; i++)
        if (!x->slots[i].thread_started)
            ext_shutdown_child(&x->slots[i], 0);
    /* Nothing can be queued after `stopping` (submit and requeue test it). */
    XD_ASSERT(x->head == NULL);

    close(x->stop_fd);
    uv_cond_destroy(&x->cv_ctl);
    uv_cond_destroy(&x->cv_work);
    uv_mutex_destroy(&x->mu);
    wordfree(&x->words);
    xd_free(x->slots);
    xd_free(x->host);
    xd_free(x->program);
    xd_free(x);
    return canceled;
}

int
auth_ext_start(const char *host, const char *program, unsigned nproc, uint64_t timeout_ms,
               auth_ext_t **out, char **err)
{
    int rc;

    xd_assert_off_loop();
    if (host == NULL || program == NULL || nproc == 0)
        return XD_EINVAL;
    auth_ext_t *x = xd_new(auth_ext_t);
    rc = wordexp(program, &x->words, WRDE_NOCMD | WRDE_UNDEF);
    if (rc != 0 || x->words.we_wordc == 0) {
        if (err)
            *err = xd_asprintf("host %s: extauth_program \"%s\": %s", host, program,
                            rc != 0 ? ext_wordexp_error(rc) : "empty command line");
        if (rc == 0 || rc == WRDE_NOSPACE)
            wordfree(&x->words);
        xd_free(x);
        return XD_EINVAL;
    }
    x->host = xd_strdup(host);
    x->program = xd_strdup(program);
    x->nproc = nproc;
    atomic_init(&x->timeout_ms, timeout_ms);
    x->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    XD_ASSERT(x->stop_fd >= 0);
    XD_ASSERT(uv_mutex_init(&x->mu) == 0);
    XD_ASSERT(uv_cond_init(&x->cv_work) == 0);
    XD_ASSERT(uv_cond_init(&x->cv_ctl) == 0);
    x->slots = xd_calloc(nproc, sizeof *x->slots);
    for (unsigned i = 0; i < nproc; i++)
        x->slots[i] = (ext_slot_t){ .x = x, .index = i, .in_fd = -1, .out_fd = -1 };

    for (unsigned i = 0; i < nproc; i++) {
        rc = ext_spawn(&x->slots[i]);
        if (rc != 0) {
            if (err)
                *err = xd_asprintf("host %s: cannot start extauth_program \"%s\": %s", host,
                                x->words.we_wordv[0], strerror(-rc));
            XD_LOG(NULL, XD_ERROR, "extauth spawn failed", "host=%s err=%s", host,
                   xd_err_name(rc));
            ext_destroy(x);
            return rc;
        }
    }
    for (unsigned i = 0; i < nproc; i++) {
        rc = uv_thread_create(&x->slots[i].thread, ext_slot_main, &x->slots[i]);
        if (rc != 0) {
            if (err)
                *err = xd_asprintf("host %s: cannot start an extauth thread: %s", host,
                                uv_strerror(rc));
            ext_destroy(x);
            return rc;
        }
        x->slots[i].thread_started = true;
    }
    XD_LOG(NULL, XD_NOTICE, "extauth started", "host=%s processes=%u timeout_ms=%llu", host, nproc,
           (unsigned long long)timeout_ms);
    *out = x;
    return 0;
}

bool
auth_ext_same(const auth_ext_t *x, const char *program, unsigned nproc)
{
    return x->nproc == nproc && program != NULL && strcmp(x->program, program) == 0;
}

void
auth_ext_set_timeout(auth_ext_t *x, uint64_t timeout_ms)
{
    atomic_store(&x->timeout_ms, timeout_ms);
}

int
auth_ext_submit(auth_ext_t *x, auth_req_t *req)
{
    int rc;

    if (req->op == AUTH_OP_GET_SCRAM)
        return XD_EINVAL;
    if (strchr(req->user, ':') != NULL || strchr(req->host, ':') != NULL)
        return XD_EINVAL; /* the protocol cannot carry it */
    if (ext_msg_len(req) > AUTH_EXT_MSG_MAX)
        return XD_EINVAL;
    uint64_t now = ext_now_ms();
    uint64_t t = atomic_load(&x->timeout_ms);
    req->deadline_ms = t != 0 ? now + t : UINT64_MAX;
    req->next = NULL;

    uv_mutex_lock(&x->mu);
    auth_req_t *expired = ext_take_expired_locked(x, now);
    if (x->stopping) {
        rc = XD_ECLOSED;
    } else if (x->queued >= EXT_QUEUE_MAX) {
        rc = XD_EFULL;
    } else {
        ext_push_locked(x, req, false);
        uv_cond_signal(&x->cv_work);
        rc = 0;
    }
    uv_mutex_unlock(&x->mu);
    ext_fail_list(expired, XD_ETIMEDOUT);
    return rc;
}

void
auth_ext_stop(auth_ext_t *x)
{
    if (x == NULL)
        return;
    xd_assert_off_loop();
    char *host = xd_strdup(x->host);
    unsigned canceled = ext_destroy(x);
    XD_LOG(NULL, XD_NOTICE, "extauth stopped", "host=%s canceled=%u", host, canceled);
    xd_free(host);
}

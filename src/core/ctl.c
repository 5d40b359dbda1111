/*
 * ctl.c — the control socket (see ctl.h).  Main loop only.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/ctl.h"

#include <inttypes.h>

#include "xmppd/assert.h"
#include "xmppd/cmd.h"
#include "xmppd/config.h"

#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/log.h"

#define CTL_MAX_REQUEST 4096
#define CTL_MAX_ARGS XD_CMD_MAX_ARGS

static uv_pipe_t ctl_server;
static bool ctl_open;
static char *ctl_path;

typedef struct {
    uv_pipe_t pipe;             /* first: the handle is the client */
    char req[CTL_MAX_REQUEST];  /* the request line so far */
    size_t len;                 /* its length */
    bool answered;              /* a reply is queued; ignore further input */
    uv_work_t work;             /* an off-loop command in progress */
    xd_cmd_call_t call;         /* its call */
    xd_cmd_hold_t *hold;        /* the command, held until the reply is queued */
    int status;                 /* its result */
} ctl_client_t;

/* A growable output buffer for the reply. */
typedef struct {
    char *p;
    size_t len, cap;
} ctl_out_t;

static void ctl_printf(ctl_out_t *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
ctl_printf(ctl_out_t *out, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        size_t room = out->cap - out->len;
        va_start(ap, fmt);
        int n = vsnprintf(out->p ? out->p + out->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if ((size_t)n < room) {
            out->len += (size_t)n;
            return;
        }
        out->cap = out->cap * 2 + (size_t)n + 64;
        out->p = xd_realloc(out->p, out->cap);
    }
}

/* ---- help ------------------------------------------------------------------------------------ */

static int
ctl_help_line(void *arg, const xd_cmd_t *cmd)
{
    xd_cmd_call_t *call = arg;
    char syn[256];
    xd_cmd_synopsis(cmd, syn, sizeof syn);
    xd_cmd_printf(call, "  %-24s %s\n", cmd->name, cmd->doc);
    (void)syn;
    return 0;
}

static int
ctl_help(xd_cmd_call_t *call)
{
    if (!call->args[0].text) {
        xd_cmd_printf(call, "Usage: xmppctl [--socket PATH] COMMAND [ARGUMENT...]\n\nCommands:\n");
        xd_cmd_foreach(ctl_help_line, call);
        xd_cmd_printf(call, "\n`xmppctl help COMMAND` describes one command.");
        return 0;
    }
    xd_cmd_hold_t *hold;
    const xd_cmd_t *cmd = xd_cmd_acquire(call->args[0].text, &hold);
    if (!cmd)
        return xd_cmd_errorf(call, XD_EINVAL, "unknown command: %s (try `xmppctl help`)",
                             call->args[0].text);
    char syn[256];
    xd_cmd_synopsis(cmd, syn, sizeof syn);
    xd_cmd_printf(call, "xmppctl %s%s%s\n    %s\n", cmd->name, *syn ? " " : "", syn, cmd->doc);
    if (cmd->longdoc)
        xd_cmd_printf(call, "\n    %s\n", cmd->longdoc);
    if (cmd->nargs)
        xd_cmd_printf(call, "\nArguments:\n");
    for (size_t i = 0; i < cmd->nargs; i++)
        xd_cmd_printf(call, "    %-12s %-9s %s%s\n", cmd->args[i].name,
                      xd_cmd_type_name(cmd->args[i].type), cmd->args[i].doc,
                      i >= cmd->nargs - cmd->nopt ? " (optional)" : "");
    if (cmd->result_doc)
        xd_cmd_printf(call, "\nResult: %s\n", cmd->result_doc);
    xd_cmd_release(hold);
    return 0;
}

static const xd_cmd_arg_t ctl_help_args[] = {
    { "command", XD_CMD_STRING, "the command to describe" },
};

static const xd_cmd_t ctl_help_cmd = {
    .name = "help",
    .doc = "list the commands, or describe one",
    .args = ctl_help_args,
    .nargs = 1,
    .nopt = 1,
    .result = XD_CMD_RES_STRING,
    .flags = XD_CMD_ON_LOOP,
    .fn = ctl_help,
};

/* ---- replies --------------------------------------------------------------------------------- */

static void
ctl_on_close(uv_handle_t *h)
{
    ctl_client_t *cl = (ctl_client_t *)h;
    xd_cmd_release(cl->hold);
    xd_cmd_call_clear(&cl->call);
    xd_free(cl);
}

typedef struct {
    uv_write_t req;
    char *data;
} ctl_wreq_t;

static void
ctl_on_write(uv_write_t *req, int status)
{
    (void)status;
    ctl_wreq_t *w = (ctl_wreq_t *)req;
    xd_free(w->data);
    uv_close((uv_handle_t *)req->handle, ctl_on_close);
    xd_free(w);
}

/* Exit codes of xmppctl: 0 ok, 1 failed (or a "no" answer), 2 usage. */
static int
ctl_exit_code(int status)
{
    if (status == 0)
        return 0;
    return status == XD_EINVAL ? 2 : 1;
}

static void
ctl_send(ctl_client_t *cl, int code, const char *body, size_t len)
{
    ctl_out_t msg = { 0 };
    if (code == 0)
        ctl_printf(&msg, "ok\n");
    else
        ctl_printf(&msg, "error %d\n", code);
    ctl_printf(&msg, "%.*s", (int)len, body ? body : "");
    if (len && body[len - 1] != '\n')
        ctl_printf(&msg, "\n");
    /* The call is over (the body may be the command's own text, copied
     * above): its module may go now. */
    xd_cmd_release(cl->hold);
    cl->hold = NULL;
    ctl_wreq_t *w = xd_new(ctl_wreq_t);
    w->data = msg.p;
    uv_buf_t buf = uv_buf_init(msg.p, (unsigned)msg.len);
    cl->answered = true;
    uv_read_stop((uv_stream_t *)&cl->pipe);
    if (uv_write(&w->req, (uv_stream_t *)&cl->pipe, &buf, 1, ctl_on_write) != 0) {
        xd_free(msg.p);
        xd_free(w);
        uv_close((uv_handle_t *)&cl->pipe, ctl_on_close);
    }
}

static void
ctl_reply_msg(ctl_client_t *cl, int code, const char *msg)
{
    ctl_send(cl, code, msg, strlen(msg));
}

/* Formats the finished call by its result kind. */
static void
ctl_reply_call(ctl_client_t *cl, int status)
{
    xd_cmd_result_t *r = &cl->call.res;
    if (status != 0) {
        const char *msg = r->text ? r->text : xd_strerror(status);
        ctl_send(cl, ctl_exit_code(status), msg, strlen(msg));
        return;
    }
    ctl_out_t out = { 0 };
    int code = 0;
    switch ((xd_cmd_res)r->kind) {
    case XD_CMD_RES_NONE:
    case XD_CMD_RES_STRING:
        if (r->text)
            ctl_printf(&out, "%s", r->text);
        break;
    case XD_CMD_RES_INT:
        ctl_printf(&out, "%" PRId64 "\n", r->i);
        break;
    case XD_CMD_RES_BOOL:
        if (r->text)
            ctl_printf(&out, "%s", r->text);
        code = r->yes ? 0 : 1;
        break;
    case XD_CMD_RES_LIST:
        for (size_t i = 0; i < r->n; i++)
            ctl_printf(&out, "%s\n", r->items[i]);
        break;
    }
    ctl_send(cl, code, out.p, out.len);
    xd_free(out.p);
}

static void
ctl_work(uv_work_t *req)
{
    ctl_client_t *cl = req->data;
    cl->status = xd_cmd_run(&cl->call);
}

static void
ctl_after_work(uv_work_t *req, int status)
{
    ctl_client_t *cl = req->data;
    if (status == UV_ECANCELED)
        cl->status = xd_cmd_errorf(&cl->call, XD_ECANCELED, "canceled: the server is stopping");
    ctl_reply_call(cl, cl->status);
}

static void
ctl_dispatch(ctl_client_t *cl)
{
    char *argv[CTL_MAX_ARGS + 2];
    int argc = 0;
    /* One request per connection: from here on input is ignored, and the
     * client is closed only after its reply is written. */
    cl->answered = true;
    uv_read_stop((uv_stream_t *)&cl->pipe);
    /* Fields are separated by tabs; empty fields are kept (an empty
     * password is the server's to refuse, not the splitter's). */
    for (char *p = cl->req;;) {
        if (argc == CTL_MAX_ARGS + 1) {
            ctl_reply_msg(cl, 2, "too many arguments");
            return;
        }
        argv[argc++] = p;
        char *tab = strchr(p, '\t');
        if (!tab)
            break;
        *tab = '\0';
        p = tab + 1;
    }
    if (argc == 0 || argv[0][0] == '\0') {
        ctl_reply_msg(cl, 2, "empty request");
        return;
    }
    const xd_cmd_t *cmd = xd_cmd_acquire(argv[0], &cl->hold);
    if (!cmd) {
        char msg[300];
        snprintf(msg, sizeof msg, "unknown command: %.200s (try `xmppctl help`)", argv[0]);
        ctl_reply_msg(cl, 2, msg);
        return;
    }
    xd_config_t *cfg = xd_config_get();
    int rc = xd_cmd_prepare(&cl->call, cmd, cfg, argc - 1, argv + 1, "xmppctl");
    xd_config_unref(cfg);
    if (rc != 0) {
        ctl_reply_call(cl, rc);
        return;
    }
    if (cmd->flags & XD_CMD_ON_LOOP) {
        ctl_reply_call(cl, xd_cmd_run(&cl->call));
        return;
    }
    cl->work.data = cl;
    rc = uv_queue_work(cl->pipe.loop, &cl->work, ctl_work, ctl_after_work);
    if (rc != 0)
        ctl_reply_call(cl, xd_cmd_errorf(&cl->call, XD_EINTERNAL, "cannot run: %s", uv_strerror(rc)));
}

/* ---- commands of other front ends that must run on this loop ------------------------------ */

#define CTL_JOBS_MAX 64 /* calls waiting or running at once (front ends' bound) */

typedef struct ctl_job {
    struct ctl_job *next;
    struct ctl_job *prev_run, *next_run; /* on the loop's pool (ctl_running) */
    xd_cmd_call_t *call;
    xd_cmd_done_fn done;
    void *arg;
    uv_work_t work; /* a command without XD_CMD_ON_LOOP: on the loop's pool */
    int status;
} ctl_job_t;

static pthread_mutex_t ctl_jobs_mu = PTHREAD_MUTEX_INITIALIZER;
static ctl_job_t *ctl_jobs, **ctl_jobs_tail = &ctl_jobs; /* waiting for the loop */
static size_t ctl_njobs;     /* waiting or running: CTL_JOBS_MAX at most */
static bool ctl_jobs_open;
static uv_async_t ctl_jobs_async;
static ctl_job_t *ctl_running; /* on the loop's pool (the loop's thread only) */

static ctl_job_t *
ctl_jobs_take(void)
{
    pthread_mutex_lock(&ctl_jobs_mu);
    ctl_job_t *list = ctl_jobs;
    ctl_jobs = NULL;
    ctl_jobs_tail = &ctl_jobs;
    pthread_mutex_unlock(&ctl_jobs_mu);
    return list;
}

static bool
ctl_jobs_taking(void)
{
    pthread_mutex_lock(&ctl_jobs_mu);
    bool open = ctl_jobs_open;
    pthread_mutex_unlock(&ctl_jobs_mu);
    return open;
}

/* j's done with status, and its place in the bound freed. */
static void
ctl_job_end(ctl_job_t *j, int status)
{
    j->done(j->call, status, j->arg);
    xd_free(j);
    pthread_mutex_lock(&ctl_jobs_mu);
    ctl_njobs--;
    pthread_mutex_unlock(&ctl_jobs_mu);
}

static void
ctl_job_work(uv_work_t *w)
{
    ctl_job_t *j = w->data;
    j->status = xd_cmd_run(j->call);
}

static void
ctl_job_after(uv_work_t *w, int status)
{
    ctl_job_t *j = w->data;
    if (j->prev_run)
        j->prev_run->next_run = j->next_run;
    else
        ctl_running = j->next_run;
    if (j->next_run)
        j->next_run->prev_run = j->prev_run;
    if (status != 0) /* cancelled before it ran: the server is stopping */
        j->status = xd_cmd_errorf(j->call, XD_ECLOSED, "the server is stopping");
    ctl_job_end(j, j->status);
}

static void
ctl_jobs_run(uv_async_t *a)
{
    for (ctl_job_t *j = ctl_jobs_take(), *next; j; j = next) {
        next = j->next;
        if (!ctl_jobs_taking()) { /* an earlier one stopped the server */
            ctl_job_end(j, xd_cmd_errorf(j->call, XD_ECLOSED, "the server is stopping"));
            continue;
        }
        if (j->call->cmd->flags & XD_CMD_ON_LOOP) {
            ctl_job_end(j, xd_cmd_run(j->call));
            continue;
        }
        j->work.data = j;
        int rc = uv_queue_work(a->loop, &j->work, ctl_job_work, ctl_job_after);
        if (rc != 0) {
            ctl_job_end(j, xd_cmd_errorf(j->call, XD_EINTERNAL, "cannot run: %s",
                                         uv_strerror(rc)));
            continue;
        }
        j->prev_run = NULL;
        j->next_run = ctl_running;
        if (ctl_running)
            ctl_running->prev_run = j;
        ctl_running = j;
    }
}

static void
ctl_jobs_start(uv_loop_t *loop)
{
    uv_async_init(loop, &ctl_jobs_async, ctl_jobs_run);
    pthread_mutex_lock(&ctl_jobs_mu);
    ctl_jobs_open = true;
    pthread_mutex_unlock(&ctl_jobs_mu);
}

/* The stop (on the main loop): calls still waiting end with XD_ECLOSED
 * without running; those on the pool that have not started are cancelled
 * (their after-callback reports XD_ECLOSED); running ones finish. */
static void
ctl_jobs_stop(void)
{
    pthread_mutex_lock(&ctl_jobs_mu);
    bool was = ctl_jobs_open;
    ctl_jobs_open = false;
    pthread_mutex_unlock(&ctl_jobs_mu);
    if (!was)
        return;
    for (ctl_job_t *j = ctl_jobs_take(), *next; j; j = next) {
        next = j->next;
        ctl_job_end(j, xd_cmd_errorf(j->call, XD_ECLOSED, "the server is stopping"));
    }
    for (ctl_job_t *j = ctl_running; j; j = j->next_run)
        uv_cancel((uv_req_t *)&j->work);
    uv_close((uv_handle_t *)&ctl_jobs_async, NULL);
}

int
xd_cmd_run_async(xd_cmd_call_t *call, xd_cmd_done_fn done, void *arg)
{
    ctl_job_t *j = xd_new(ctl_job_t);
    *j = (ctl_job_t){ .call = call, .done = done, .arg = arg };
    pthread_mutex_lock(&ctl_jobs_mu);
    int rc = !ctl_jobs_open ? XD_ECLOSED : ctl_njobs >= CTL_JOBS_MAX ? XD_EFULL : 0;
    if (rc == 0) {
        *ctl_jobs_tail = j;
        ctl_jobs_tail = &j->next;
        ctl_njobs++;
        uv_async_send(&ctl_jobs_async); /* under the lock: the handle outlives it */
    }
    pthread_mutex_unlock(&ctl_jobs_mu);
    if (rc != 0)
        xd_free(j);
    return rc;
}

static void
ctl_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    ctl_client_t *cl = (ctl_client_t *)h;
    *buf = uv_buf_init(cl->req + cl->len, (unsigned)(sizeof cl->req - 1 - cl->len));
}

static void
ctl_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    ctl_client_t *cl = (ctl_client_t *)s;
    if (cl->answered)
        return;
    if (nread < 0) {
        uv_close((uv_handle_t *)s, ctl_on_close);
        return;
    }
    cl->len += (size_t)nread;
    cl->req[cl->len] = '\0';
    char *nl = memchr(cl->req, '\n', cl->len);
    if (nl) {
        *nl = '\0';
        ctl_dispatch(cl);
    } else if (cl->len >= sizeof cl->req - 1) {
        ctl_reply_msg(cl, 2, "request too long");
    }
}

static void
ctl_on_connection(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    ctl_client_t *cl = xd_new(ctl_client_t);
    uv_pipe_init(server->loop, &cl->pipe, 0);
    if (uv_accept(server, (uv_stream_t *)&cl->pipe) != 0) {
        uv_close((uv_handle_t *)&cl->pipe, ctl_on_close);
        return;
    }
    uv_read_start((uv_stream_t *)&cl->pipe, ctl_alloc, ctl_on_read);
}

/* True when something accepts connections at `path`. */
static bool
ctl_socket_alive(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    bool alive = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return alive;
}

int
xd_ctl_start(uv_loop_t *loop, const char *path, char **err)
{
    ctl_jobs_start(loop);
    int reg = xd_cmd_register(&ctl_help_cmd);
    XD_ASSERT(reg == 0 || reg == XD_EEXIST);
    (void)reg;
    if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        if (asprintf(err, "ctl_socket: path too long: %s", path) < 0)
            *err = NULL;
        return XD_EINVAL;
    }
    if (ctl_socket_alive(path)) {
        if (asprintf(err, "ctl_socket %s: another xmppd is running there", path) < 0)
            *err = NULL;
        return XD_EEXIST;
    }
    unlink(path); /* stale file from a crash */
    uv_pipe_init(loop, &ctl_server, 0);
    /* Created under the process's umask 077 (main.c), so nobody else can
     * even connect; no umask juggling here: it is process-wide, and the
     * workers are running. */
    int rc = uv_pipe_bind(&ctl_server, path);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&ctl_server, 16, ctl_on_connection);
    if (rc != 0) {
        if (asprintf(err, "ctl_socket %s: %s", path, xd_strerror(rc)) < 0)
            *err = NULL;
        uv_close((uv_handle_t *)&ctl_server, NULL);
        return rc;
    }
    chmod(path, 0600);
    ctl_path = xd_strdup(path);
    ctl_open = true;
    return 0;
}

void
xd_ctl_stop(void)
{
    ctl_jobs_stop();
    if (!ctl_open)
        return;
    ctl_open = false;
    uv_close((uv_handle_t *)&ctl_server, NULL);
    unlink(ctl_path);
    xd_free(ctl_path);
    ctl_path = NULL;
}

/*
 * ctl.c — the control socket (see ctl.h).  Main loop only.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/ctl.h"

#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/log.h"

#define CTL_MAX_REQUEST 4096
#define CTL_MAX_ARGS 16
#define CTL_MAX_CMDS 64

typedef struct {
    const char *name, *args, *doc; /* static strings */
    int min_args, max_args;        /* argument count bounds */
    xd_ctl_handler fn;             /* the handler */
} ctl_cmd_t;

static ctl_cmd_t ctl_cmds[CTL_MAX_CMDS];
static size_t ctl_ncmds;
static uv_pipe_t ctl_server;
static bool ctl_open;
static char *ctl_path;

typedef struct {
    uv_pipe_t pipe;             /* first: the handle is the client */
    char req[CTL_MAX_REQUEST];  /* the request line so far */
    size_t len;                 /* its length */
    bool answered;              /* a reply is queued; ignore further input */
} ctl_client_t;

void
xd_ctl_printf(xd_ctl_out_t *out, const char *fmt, ...)
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

void
xd_ctl_register(const char *name, const char *args, const char *doc, int min_args,
                int max_args, xd_ctl_handler fn)
{
    for (size_t i = 0; i < ctl_ncmds; i++)
        if (strcmp(ctl_cmds[i].name, name) == 0) {
            ctl_cmds[i] = (ctl_cmd_t){ name, args, doc, min_args, max_args, fn };
            return;
        }
    if (ctl_ncmds < CTL_MAX_CMDS)
        ctl_cmds[ctl_ncmds++] = (ctl_cmd_t){ name, args, doc, min_args, max_args, fn };
}

static int
ctl_help(int argc, char **argv, xd_ctl_out_t *out)
{
    for (size_t i = 0; i < ctl_ncmds; i++) {
        const ctl_cmd_t *c = &ctl_cmds[i];
        if (argc == 1 && strcmp(argv[0], c->name) != 0)
            continue;
        xd_ctl_printf(out, "  %s%s%s\n      %s\n", c->name, c->args && *c->args ? " " : "",
                      c->args ? c->args : "", c->doc);
        if (argc == 1)
            return 0;
    }
    if (argc == 1) {
        xd_ctl_printf(out, "unknown command: %s\n", argv[0]);
        return 2;
    }
    return 0;
}

static void
ctl_on_close(uv_handle_t *h)
{
    xd_free(h);
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

static void
ctl_reply(ctl_client_t *cl, int code, xd_ctl_out_t *out)
{
    xd_ctl_out_t msg = { 0 };
    if (code == 0)
        xd_ctl_printf(&msg, "ok\n%s", out->p ? out->p : "");
    else
        xd_ctl_printf(&msg, "error %d\n%s", code, out->p ? out->p : "");
    xd_free(out->p);
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
ctl_dispatch(ctl_client_t *cl)
{
    char *argv[CTL_MAX_ARGS + 1];
    int argc = 0;
    xd_ctl_out_t out = { 0 };
    for (char *tok = cl->req, *save = NULL; (tok = strtok_r(tok, "\t", &save)); tok = NULL) {
        if (argc == CTL_MAX_ARGS + 1) {
            xd_ctl_printf(&out, "too many arguments\n");
            ctl_reply(cl, 2, &out);
            return;
        }
        argv[argc++] = tok;
    }
    if (argc == 0) {
        xd_ctl_printf(&out, "empty request\n");
        ctl_reply(cl, 2, &out);
        return;
    }
    for (size_t i = 0; i < ctl_ncmds; i++) {
        const ctl_cmd_t *c = &ctl_cmds[i];
        if (strcmp(c->name, argv[0]) != 0)
            continue;
        int nargs = argc - 1;
        if (nargs < c->min_args || nargs > c->max_args) {
            xd_ctl_printf(&out, "usage: xmppctl %s %s\n", c->name, c->args ? c->args : "");
            ctl_reply(cl, 2, &out);
            return;
        }
        XD_LOG(NULL, XD_NOTICE, "ctl command", "cmd=%s", c->name);
        int rc = c->fn(nargs, argv + 1, &out);
        ctl_reply(cl, rc, &out);
        return;
    }
    xd_ctl_printf(&out, "unknown command: %s (try `xmppctl help`)\n", argv[0]);
    ctl_reply(cl, 2, &out);
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
        xd_ctl_out_t out = { 0 };
        xd_ctl_printf(&out, "request too long\n");
        ctl_reply(cl, 2, &out);
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
    xd_ctl_register("help", "[COMMAND]", "list the commands, or describe one", 0, 1, ctl_help);
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
    /* The socket is created 0600 (umask), so nobody else can even connect. */
    mode_t old = umask(0177);
    int rc = uv_pipe_bind(&ctl_server, path);
    umask(old);
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
    if (!ctl_open)
        return;
    ctl_open = false;
    uv_close((uv_handle_t *)&ctl_server, NULL);
    unlink(ctl_path);
    xd_free(ctl_path);
    ctl_path = NULL;
}

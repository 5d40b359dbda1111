/*
 * upload_http.c — HTTP File Upload (XEP-0363), the HTTP side: the
 * handler "upload" (default path /upload) of the http listeners.
 *
 *   PUT  /upload/<host>/<id>/<name>?token=…   fills a slot: the token must
 *        be the slot's and unexpired (403), Content-Length its size and
 *        Content-Type its type (400), the slot not filled yet (409).  The
 *        body streams to <docroot>/<id>/.part on the blocking pool, at
 *        most two buffers of UP_CHUNK per upload in memory: the input
 *        pauses while a write is in flight and the next buffer is full.
 *        At its end the file is synced and renamed to its name (never
 *        over another), the slot marked complete, and the answer is 201.
 *   GET, HEAD /upload/<host>/<id>/<name>   a complete file, with a single
 *        byte range (206; 416 when unsatisfiable), its type, nosniff,
 *        attachment for what is not image/audio/video, read piecewise on
 *        the pool as the connection drains (`writable`).
 *
 * Every callback runs on the worker that owns the connection; the pool
 * jobs come back to it (xd_module_submit), find the request again by its
 * handle and do nothing more to it when it went (the client left).  A
 * transfer (up_xfer_t) lives until its request is answered or gone and
 * no job of it is in flight; then a last job closes its file (and drops
 * an unfinished upload's partial file).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "upload.h"

#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/http.h"
#include "xmppd/log.h"
#include "xmppd/storage.h"

#define UP_CHUNK (256u << 10) /* bytes per file write or read */

typedef enum { UP_JOB_NONE, UP_JOB_OPEN, UP_JOB_WRITE, UP_JOB_FINISH, UP_JOB_READ } up_job;

typedef struct up_xfer {
    bool put;                      /* PUT (else GET or HEAD) */
    bool head;                     /* HEAD */
    char host[256];                /* the served host of the URL */
    char id[UP_ID_LEN + 1];
    char name[UP_NAME_MAX + 1];    /* decoded */
    char token[100];               /* PUT: ?token= */
    char ctype[UP_TYPE_MAX + 1];   /* PUT: the request's Content-Type ("" without) */
    char *range;                   /* GET: the Range header, or NULL */
    xd_http_handle_t h;            /* the request */
    int fd;                        /* the file, or -1 */
    up_job job;                    /* the job in flight */
    bool gone;                     /* the request went unanswered (aborted) */
    bool answered;                 /* the request was answered (or is gone) */
    bool eof;                      /* PUT: the whole body is in */
    bool paused;                   /* PUT: the input is paused */
    bool keep_part;                /* PUT: the partial file is not ours (409) */
    bool opened;                   /* PUT: the partial file was created by us */
    bool closing;                  /* the last job is queued: x is no one else's */
    int status;                    /* a job's HTTP answer (0: go on) */
    char text[320];                /* ... and its reason */
    int64_t size;                  /* PUT: the slot's size; GET: the file's */
    int64_t got;                   /* PUT: body bytes received */
    char *buf;                     /* PUT: bytes received, not written yet; GET: read ones */
    size_t len, cap;
    char *wbuf;                    /* PUT: the bytes being written */
    size_t wlen, wcap;
    char type[UP_TYPE_MAX + 1];    /* GET: the slot's type */
    int64_t off, left;             /* GET: next offset to read, bytes left to read */
    size_t ready;                  /* GET: bytes read and not yet written */
    ssize_t nread;                 /* GET: the read job's result */
} up_xfer_t;

/* ---- registration ---------------------------------------------------------------------------- */

static pthread_mutex_t up_http_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned up_http_refs;
static const xd_http_handler_t up_handler;

int
up_http_ref(void)
{
    int rc = 0;
    pthread_mutex_lock(&up_http_mu);
    if (up_http_refs == 0) {
        rc = xd_http_register("upload", "/upload", &up_handler, NULL);
        if (rc == XD_EEXIST)
            rc = 0;
    }
    if (rc == 0)
        up_http_refs++;
    pthread_mutex_unlock(&up_http_mu);
    return rc;
}

void
up_http_unref(void)
{
    pthread_mutex_lock(&up_http_mu);
    if (up_http_refs && --up_http_refs == 0)
        xd_http_unregister("upload");
    pthread_mutex_unlock(&up_http_mu);
}

/* ---- transfers ----------------------------------------------------------------------------- */

static bool up_submit(up_xfer_t *x, up_job job);

static void
up_xfer_free(up_xfer_t *x)
{
    xd_free(x->buf);
    xd_free(x->wbuf);
    xd_free(x->range);
    xd_free(x);
}

/* The last job: closes the file; an upload that did not complete takes
 * its partial file (and the empty directory) with it. */
static void
up_close_work(xd_module_ctx_t *ctx, void *arg)
{
    up_xfer_t *x = arg;
    if (x->fd >= 0)
        close(x->fd);
    x->fd = -1;
    if (x->put && x->opened && !x->keep_part) {
        up_state_t *s = xd_module_state(ctx);
        char *p = up_path(s, x->id, ".part");
        unlink(p);
        xd_free(p);
        p = up_path(s, x->id, NULL);
        rmdir(p); /* only when empty */
        xd_free(p);
    }
}

static void
up_close_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    (void)status;
    xd_module_release(ctx);
    up_xfer_free(arg);
}

/* Frees x once nobody waits for it and no job of it runs. */
static void
up_maybe_free(up_xfer_t *x)
{
    if (x->closing || x->job != UP_JOB_NONE || !(x->gone || x->answered))
        return;
    x->closing = true;
    if (x->fd < 0 && !(x->put && x->opened && !x->keep_part && x->status != 201)) {
        up_xfer_free(x);
        return;
    }
    xd_module_ctx_t *ctx = xd_module_instance("mod_upload", x->host);
    if (!ctx || xd_module_submit(ctx, up_close_work, up_close_done, x) != 0) {
        /* The module is stopping: close here (a close does not wait). */
        if (x->fd >= 0)
            close(x->fd);
        if (ctx)
            xd_module_release(ctx);
        up_xfer_free(x);
    }
}

/* The request of x if it still waits for its answer, else NULL (and x is
 * marked gone). */
static xd_http_req_t *
up_req(up_xfer_t *x)
{
    xd_http_req_t *r = x->gone || x->answered ? NULL : xd_http_req_find(x->h);
    if (!r)
        x->gone = true;
    return r;
}

static void
up_fail(up_xfer_t *x, xd_http_req_t *r, int status, const char *text)
{
    x->answered = true;
    xd_http_req_set_data(r, NULL);
    xd_http_error(r, status, text);
}

/* ---- parsing the request ------------------------------------------------------------------ */

static int
hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* "/<host>/<id>/<name>" into x; false when it is no slot's path. */
static bool
up_parse_path(const char *sub, up_xfer_t *x)
{
    if (*sub++ != '/')
        return false;
    const char *e = strchr(sub, '/');
    if (!e || e == sub || (size_t)(e - sub) >= sizeof x->host)
        return false;
    for (const char *p = sub; p < e; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '.' || *p == '-' ||
              *p == '_' || (unsigned char)*p >= 0x80 || *p == '[' || *p == ']' || *p == ':'))
            return false;
    memcpy(x->host, sub, (size_t)(e - sub));
    x->host[e - sub] = '\0';
    sub = e + 1;
    e = strchr(sub, '/');
    if (!e || e - sub != UP_ID_LEN)
        return false;
    for (const char *p = sub; p < e; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_'))
            return false;
    memcpy(x->id, sub, UP_ID_LEN);
    x->id[UP_ID_LEN] = '\0';
    sub = e + 1;
    /* The name, percent-decoded: it must be what sanitizing makes of it
     * (so no '/', no "..", nothing the slot could not have). */
    char dec[UP_NAME_MAX + 1];
    size_t n = 0;
    for (const char *p = sub; *p; p++) {
        int c = (unsigned char)*p;
        if (c == '%') {
            int hi = hexval(p[1]), lo = hi >= 0 ? hexval(p[2]) : -1;
            if (lo < 0)
                return false;
            c = hi * 16 + lo;
            p += 2;
        }
        if (c == 0 || n >= UP_NAME_MAX)
            return false;
        dec[n++] = (char)c;
    }
    dec[n] = '\0';
    if (n == 0)
        return false;
    up_name_sanitize(dec, n, x->name);
    return strcmp(dec, x->name) == 0;
}

static void
up_query_token(const char *q, up_xfer_t *x)
{
    for (const char *p = q; p && *p;) {
        if (!strncmp(p, "token=", 6)) {
            size_t n = strcspn(p + 6, "&");
            if (n < sizeof x->token) {
                memcpy(x->token, p + 6, n);
                x->token[n] = '\0';
            }
            return;
        }
        p = strchr(p, '&');
        if (p)
            p++;
    }
}

/* ---- PUT ---------------------------------------------------------------------------------- */

typedef struct up_row {
    bool found;
    int64_t size, created, complete;
    char type[UP_TYPE_MAX + 1];
} up_row_t;

static int
up_row_fn(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    up_row_t *r = arg;
    if (ncols < 4 || cols[0].type != XD_DB_INT64 || cols[1].type != XD_DB_TEXT)
        return 1;
    r->found = true;
    r->size = cols[0].i;
    snprintf(r->type, sizeof r->type, "%.*s", (int)cols[1].s.len, cols[1].s.p);
    r->created = cols[2].i;
    r->complete = cols[3].i;
    return 1;
}

static int
up_lookup(xd_module_ctx_t *ctx, const up_xfer_t *x, up_row_t *row)
{
    xd_db_t *db = xd_module_db(ctx);
    xd_db_conn_t *c = NULL;
    if (!db)
        return XD_ENOTSUP;
    int rc = xd_db_acquire(db, &c);
    if (rc != 0)
        return rc;
    xd_db_val_t k[] = { XD_DB_V_CSTR(x->id), XD_DB_V_CSTR(x->host), XD_DB_V_CSTR(x->name) };
    rc = xd_db_query(c,
                     "SELECT size, content_type, created_at, complete FROM upload_slot "
                     "WHERE id = ? AND host = ? AND name = ?",
                     k, 3, up_row_fn, row);
    xd_db_release(c);
    return rc;
}

static void
up_set(up_xfer_t *x, int status, const char *fmt, const char *arg)
{
    x->status = status;
    snprintf(x->text, sizeof x->text, fmt, arg);
}

static void
up_put_open(xd_module_ctx_t *ctx, up_xfer_t *x)
{
    up_state_t *s = xd_module_state(ctx);
    up_row_t row = { 0 };
    int rc = up_lookup(ctx, x, &row);
    if (rc != 0) {
        up_set(x, 500, "%s", xd_strerror(rc));
        return;
    }
    if (!row.found ||
        !up_token_ok(s, x->host, x->id, x->name, row.size, row.type, x->token,
                     (int64_t)time(NULL))) {
        up_set(x, 403, "%s", "no such slot, or its token is wrong or expired");
        return;
    }
    if (row.complete) {
        up_set(x, 409, "%s", "this slot is filled already");
        return;
    }
    if (x->size != row.size) {
        char n[32];
        snprintf(n, sizeof n, "%lld", (long long)row.size);
        up_set(x, 400, "Content-Length must be the slot's size, %s bytes", n);
        return;
    }
    if (x->ctype[0] && strcasecmp(x->ctype, row.type) != 0) {
        up_set(x, 400, "Content-Type must be the slot's, %s", row.type);
        return;
    }
    char *dir = up_path(s, x->id, NULL);
    if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
        up_set(x, 500, "cannot create the directory: %s", strerror(errno));
        xd_free(dir);
        return;
    }
    xd_free(dir);
    char *part = up_path(s, x->id, ".part");
    x->fd = open(part, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (x->fd < 0 && errno == EEXIST) {
        x->keep_part = true; /* another PUT of the slot is running */
        up_set(x, 409, "%s", "this slot is being filled");
    } else if (x->fd < 0) {
        up_set(x, 500, "cannot create the file: %s", strerror(errno));
    } else {
        x->opened = true;
    }
    xd_free(part);
}

static int
up_write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void
up_put_finish(xd_module_ctx_t *ctx, up_xfer_t *x)
{
    up_state_t *s = xd_module_state(ctx);
    int rc = up_write_all(x->fd, x->wbuf, x->wlen);
    if (rc == 0 && fsync(x->fd) != 0)
        rc = -errno;
    if (rc == 0 && close(x->fd) != 0)
        rc = -errno;
    else if (rc != 0)
        close(x->fd);
    x->fd = -1;
    if (rc != 0) {
        up_set(x, 500, "cannot write the file: %s", xd_strerror(rc));
        return;
    }
    char *part = up_path(s, x->id, ".part");
    char *final = up_path(s, x->id, x->name);
    /* link + unlink: never over a file of the same name. */
    if (link(part, final) != 0) {
        up_set(x, errno == EEXIST ? 409 : 500, "cannot store the file: %s", strerror(errno));
    } else {
        unlink(part);
        x->opened = false; /* nothing partial is left */
        xd_db_t *db = xd_module_db(ctx);
        xd_db_conn_t *c = NULL;
        rc = db ? xd_db_acquire(db, &c) : XD_ENOTSUP;
        if (rc == 0) {
            xd_db_val_t k[] = { XD_DB_V_INT((int64_t)time(NULL)), XD_DB_V_CSTR(x->id) };
            rc = xd_db_query(c,
                             "UPDATE upload_slot SET complete = 1, created_at = ? "
                             "WHERE id = ? AND complete = 0",
                             k, 2, NULL, NULL);
            if (rc == 0 && xd_db_changes(c) != 1)
                rc = XD_ENOTFOUND; /* the slot went meanwhile (expired, account removed) */
            xd_db_release(c);
        }
        if (rc != 0) {
            unlink(final);
            char *dir = up_path(s, x->id, NULL);
            rmdir(dir);
            xd_free(dir);
            up_set(x, rc == XD_ENOTFOUND ? 404 : 500, "the slot is gone: %s", xd_strerror(rc));
        } else {
            x->status = 201;
        }
    }
    xd_free(part);
    xd_free(final);
}

/* ---- GET ---------------------------------------------------------------------------------- */

static void
up_get_open(xd_module_ctx_t *ctx, up_xfer_t *x)
{
    up_state_t *s = xd_module_state(ctx);
    up_row_t row = { 0 };
    int rc = up_lookup(ctx, x, &row);
    if (rc != 0) {
        up_set(x, 500, "%s", xd_strerror(rc));
        return;
    }
    if (!row.found || !row.complete) {
        up_set(x, 404, "%s", "no such file");
        return;
    }
    snprintf(x->type, sizeof x->type, "%s", row.type);
    char *path = up_path(s, x->id, x->name);
    x->fd = open(path, O_RDONLY | O_CLOEXEC);
    xd_free(path);
    struct stat st;
    if (x->fd < 0 || fstat(x->fd, &st) != 0) {
        up_set(x, 404, "%s", "no such file");
        return;
    }
    x->size = st.st_size;
}

/* Parses a single "bytes=a-b" range of a file of `size` bytes: 1 with
 * [*from, *to] set, 0 when the header is to be ignored (serve it all), -1
 * when unsatisfiable (416). */
static int
up_range(const char *h, int64_t size, int64_t *from, int64_t *to)
{
    if (!h || strncasecmp(h, "bytes=", 6) != 0 || strchr(h, ','))
        return 0;
    const char *p = h + 6;
    while (*p == ' ')
        p++;
    char *end;
    if (*p == '-') {
        long long n = strtoll(p + 1, &end, 10);
        if (end == p + 1 || *end || n < 0)
            return 0;
        if (n == 0 || size == 0)
            return -1;
        *from = n >= size ? 0 : size - n;
        *to = size - 1;
        return 1;
    }
    long long a = strtoll(p, &end, 10);
    if (end == p || *end != '-' || a < 0)
        return 0;
    p = end + 1;
    long long b = size - 1;
    if (*p) {
        b = strtoll(p, &end, 10);
        if (end == p || *end || b < a)
            return 0;
    }
    if (a >= size)
        return -1;
    *from = a;
    *to = b >= size ? size - 1 : b;
    return 1;
}

/* image/audio/video (but SVG, which carries scripts) show inline; the
 * rest is a download. */
static bool
up_inline(const char *type)
{
    if (!strncasecmp(type, "image/svg", 9))
        return false;
    return !strncasecmp(type, "image/", 6) || !strncasecmp(type, "audio/", 6) ||
           !strncasecmp(type, "video/", 6);
}

static void
up_get_push(up_xfer_t *x, xd_http_req_t *r)
{
    if (x->ready && xd_http_queued(r) < UP_CHUNK) {
        xd_http_response_write(r, x->buf, x->ready);
        x->ready = 0;
        if (x->left == 0) {
            x->answered = true;
            xd_http_req_set_data(r, NULL);
            xd_http_response_end(r);
            up_maybe_free(x);
            return;
        }
    }
    if (!x->ready && x->left > 0 && x->job == UP_JOB_NONE)
        up_submit(x, UP_JOB_READ);
}

static void
up_get_start(up_xfer_t *x, xd_http_req_t *r)
{
    int64_t from = 0, to = x->size - 1;
    int rg = up_range(x->range, x->size, &from, &to);
    xd_http_add_header(r, "Accept-Ranges", "bytes");
    xd_http_add_header(r, "X-Content-Type-Options", "nosniff");
    xd_http_add_header(r, "Content-Security-Policy", "default-src 'none'; sandbox");
    xd_http_add_header(r, "Cache-Control", "public, max-age=31536000, immutable");
    char cr[96];
    if (rg < 0) {
        snprintf(cr, sizeof cr, "bytes */%lld", (long long)x->size);
        xd_http_add_header(r, "Content-Range", cr);
        up_fail(x, r, 416, "the range is outside the file");
        up_maybe_free(x);
        return;
    }
    if (!up_inline(x->type)) {
        /* The name is ASCII-safe or UTF-8 (sanitized): RFC 6266 filename*. */
        char disp[64 + 3 * UP_NAME_MAX];
        size_t o = (size_t)snprintf(disp, sizeof disp, "attachment; filename*=UTF-8''");
        for (const unsigned char *p = (const unsigned char *)x->name; *p && o + 4 < sizeof disp;
             p++) {
            if (*p >= 0x80 || *p == '+')
                o += (size_t)snprintf(disp + o, sizeof disp - o, "%%%02X", *p);
            else
                disp[o++] = (char)*p;
        }
        disp[o] = '\0';
        xd_http_add_header(r, "Content-Disposition", disp);
    }
    if (rg > 0) {
        snprintf(cr, sizeof cr, "bytes %lld-%lld/%lld", (long long)from, (long long)to,
                 (long long)x->size);
        xd_http_add_header(r, "Content-Range", cr);
    }
    int64_t len = x->size ? to - from + 1 : 0;
    xd_http_response_start(r, rg > 0 ? 206 : 200, x->type, len);
    x->off = from;
    x->left = len;
    if (x->head || len == 0) {
        x->answered = true;
        xd_http_req_set_data(r, NULL);
        xd_http_response_end(r);
        up_maybe_free(x);
        return;
    }
    up_get_push(x, r);
}

/* ---- jobs ----------------------------------------------------------------------------------- */

static void
up_job_work(xd_module_ctx_t *ctx, void *arg)
{
    up_xfer_t *x = arg;
    switch (x->job) {
    case UP_JOB_OPEN:
        if (x->put)
            up_put_open(ctx, x);
        else
            up_get_open(ctx, x);
        break;
    case UP_JOB_WRITE: {
        int rc = up_write_all(x->fd, x->wbuf, x->wlen);
        if (rc != 0)
            up_set(x, 500, "cannot write the file: %s", xd_strerror(rc));
        break;
    }
    case UP_JOB_FINISH:
        up_put_finish(ctx, x);
        break;
    case UP_JOB_READ: {
        size_t n = x->left < (int64_t)UP_CHUNK ? (size_t)x->left : UP_CHUNK;
        ssize_t got;
        do
            got = pread(x->fd, x->buf, n, x->off);
        while (got < 0 && errno == EINTR);
        x->nread = got;
        break;
    }
    case UP_JOB_NONE:
        break;
    }
}

static void up_job_done(xd_module_ctx_t *ctx, void *arg, int status);

/* Queues x's next job; false when it could not be (x is then answered
 * and may be freed: the caller must not touch it again). */
static bool
up_submit(up_xfer_t *x, up_job job)
{
    if (job == UP_JOB_WRITE || job == UP_JOB_FINISH) {
        /* The received bytes become the ones being written. */
        char *t = x->wbuf;
        size_t tc = x->wcap;
        x->wbuf = x->buf;
        x->wlen = x->len;
        x->wcap = x->cap;
        x->buf = t;
        x->cap = tc;
        x->len = 0;
    } else if (job == UP_JOB_READ && !x->buf) {
        x->buf = xd_malloc(UP_CHUNK);
        x->cap = UP_CHUNK;
    }
    x->job = job;
    xd_module_ctx_t *ctx = xd_module_instance("mod_upload", x->host);
    int rc = ctx ? xd_module_submit(ctx, up_job_work, up_job_done, x) : XD_ECLOSED;
    if (rc != 0) {
        if (ctx)
            xd_module_release(ctx);
        x->job = UP_JOB_NONE;
        xd_http_req_t *r = up_req(x);
        if (r && !ctx)
            up_fail(x, r, 404, "no such file"); /* no upload service on that host */
        else if (r)
            up_fail(x, r, 503, rc == XD_EFULL ? "server busy" : "the upload service is stopping");
        up_maybe_free(x);
        return false;
    }
    return true;
}

static void
up_job_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    up_xfer_t *x = arg;
    up_job job = x->job;
    x->job = UP_JOB_NONE;
    xd_module_release(ctx); /* taken by up_submit */
    xd_http_req_t *r = up_req(x);
    if (!r) {
        up_maybe_free(x);
        return;
    }
    if (status != 0)
        up_set(x, 503, "%s", "the upload service is stopping");
    if (job == UP_JOB_READ) {
        if (status != 0 || x->nread <= 0) {
            /* The file shrank or failed: the short response closes the connection. */
            x->answered = true;
            xd_http_req_set_data(r, NULL);
            xd_http_response_end(r);
            up_maybe_free(x);
        } else {
            x->ready = (size_t)x->nread;
            x->off += x->nread;
            x->left -= x->nread;
            up_get_push(x, r); /* x may be gone afterwards */
        }
        return;
    }
    if (x->status && x->status != 201) {
        XD_LOG(NULL, XD_INFO, "upload refused", "host=%s id=%s status=%d reason=\"%s\"", x->host,
               x->id, x->status, x->text);
        up_fail(x, r, x->status, x->text);
        up_maybe_free(x);
        return;
    }
    switch (job) {
    case UP_JOB_OPEN:
        if (!x->put) {
            up_get_start(x, r);
            return;
        }
        __attribute__((fallthrough)); /* the body may go on */
    case UP_JOB_WRITE:
        if (x->eof) {
            up_submit(x, UP_JOB_FINISH);
            break; /* the whole body is in: nothing to resume */
        }
        if (x->len >= UP_CHUNK && !up_submit(x, UP_JOB_WRITE))
            break;
        if (x->paused && !(x->job != UP_JOB_NONE && x->len >= UP_CHUNK)) {
            x->paused = false;
            xd_http_req_resume(r);
        }
        break;
    case UP_JOB_FINISH:
        XD_LOG(NULL, XD_INFO, "upload stored", "host=%s id=%s bytes=%lld", x->host, x->id,
               (long long)x->got);
        x->answered = true;
        xd_http_req_set_data(r, NULL);
        xd_http_respond(r, 201, NULL, NULL, 0);
        up_maybe_free(x);
        break;
    default:
        break;
    }
}

/* ---- the handler -------------------------------------------------------------------------- */

static void
up_request(xd_http_req_t *r, void *ud)
{
    (void)ud;
    const char *m = xd_http_req_method(r);
    up_xfer_t *x = xd_new(up_xfer_t);
    x->fd = -1;
    x->put = !strcmp(m, "PUT");
    x->head = !strcmp(m, "HEAD");
    x->h = xd_http_req_handle(r);
    if (!up_parse_path(xd_http_req_subpath(r), x)) {
        xd_free(x);
        xd_http_error(r, 404, "no such file");
        return;
    }
    if (x->put) {
        up_query_token(xd_http_req_query(r), x);
        x->size = xd_http_req_length(r);
        if (x->size < 0) {
            xd_free(x);
            xd_http_error(r, 411, "a PUT needs a Content-Length");
            return;
        }
        const char *ct = xd_http_req_header(r, "Content-Type");
        if (ct && strlen(ct) > UP_TYPE_MAX) {
            xd_free(x);
            xd_http_error(r, 400, "Content-Type must be the slot's");
            return;
        }
        snprintf(x->ctype, sizeof x->ctype, "%s", ct ? ct : "");
        /* Nothing of the body until the slot is checked and the file open. */
        xd_http_req_pause(r);
        x->paused = true;
    } else {
        const char *rg = xd_http_req_header(r, "Range");
        x->range = rg ? xd_strdup(rg) : NULL;
    }
    xd_http_req_set_data(r, x);
    up_submit(x, UP_JOB_OPEN);
}

static void
up_body(xd_http_req_t *r, const char *data, size_t len, void *ud)
{
    (void)ud;
    up_xfer_t *x = xd_http_req_data(r);
    if (!x || !x->put || x->answered)
        return;
    if (!data) {
        x->eof = true;
        if (x->job == UP_JOB_NONE)
            up_submit(x, UP_JOB_FINISH);
        return;
    }
    if ((int64_t)len > x->size - x->got) {
        up_fail(x, r, 400, "more bytes than the slot's size"); /* never: Content-Length */
        up_maybe_free(x);
        return;
    }
    if (x->len + len > x->cap) {
        size_t cap = x->cap ? x->cap : UP_CHUNK;
        while (cap < x->len + len)
            cap *= 2;
        x->buf = xd_realloc(x->buf, cap);
        x->cap = cap;
    }
    memcpy(x->buf + x->len, data, len);
    x->len += len;
    x->got += (int64_t)len;
    if (x->job == UP_JOB_NONE && x->len >= UP_CHUNK)
        up_submit(x, UP_JOB_WRITE);
    else if (x->job != UP_JOB_NONE && x->len >= UP_CHUNK && !x->paused) {
        x->paused = true; /* a write is in flight and the next buffer is full */
        xd_http_req_pause(r);
    }
}

static void
up_writable(xd_http_req_t *r, void *ud)
{
    (void)ud;
    up_xfer_t *x = xd_http_req_data(r);
    if (x && !x->put && !x->answered && x->job == UP_JOB_NONE)
        up_get_push(x, r);
}

static void
up_aborted(xd_http_req_t *r, void *ud)
{
    (void)ud;
    up_xfer_t *x = xd_http_req_data(r);
    if (!x)
        return;
    xd_http_req_set_data(r, NULL);
    x->gone = true;
    up_maybe_free(x);
}

static const xd_http_handler_t up_handler = {
    .request = up_request,
    .body = up_body,
    .writable = up_writable,
    .aborted = up_aborted,
    .methods = "GET, HEAD, PUT",
};

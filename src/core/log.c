/*
 * log.c — the logger (include/xmppd/log.h; DESIGN.md 6, STYLE.md 3.9).
 *
 * Sits at the bottom of src/core: libc only, no allocation, so alloc.c and
 * the assert path may log.  A line is
 *
 *   <UTC time, ms>Z level=<name> event="<event>" <ctx outermost first> <fmt>\n
 *
 * built in a stack buffer of LOG_LINE_MAX bytes (longer lines are cut at a
 * UTF-8 boundary and end in "…") and written with one write(2), so lines from
 * different threads never interleave.
 *
 * Invariants:
 *  - log_fd is either STDERR_FILENO or a file descriptor that stays open and
 *    keeps its number for the life of the process: xd_log_open/xd_log_reopen
 *    open the new file and dup3() it over log_fd, which atomically swaps the
 *    open file description, so a concurrent writer never sees a closed fd.
 *  - log_path and log_fd change only under log_mu; writers read log_fd with
 *    one atomic load and take no lock.
 *  - Control bytes in a formatted line are replaced by '?', so one event is
 *    always one line.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "xmppd/log.h"

#define LOG_LINE_MAX 4096   /* bytes per line, '\n' included */
#define LOG_CTX_DEPTH 16    /* deepest context chain printed */
#define LOG_PATH_MAX 4096   /* longest log file path */
#define LOG_ELLIPSIS "\xe2\x80\xa6" /* "…", marks a truncated line */

_Atomic int xd_log_level_cur = XD_LOG_INFO;

static _Atomic int log_fd = STDERR_FILENO;               /* where lines go */
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER; /* guards log_path, fd changes */
static char log_path[LOG_PATH_MAX];                      /* "" = stderr */

static const char *const log_level_names[] = {
    [XD_LOG_NONE] = "none",     [XD_LOG_CRIT] = "crit", [XD_LOG_ERROR] = "error",
    [XD_LOG_WARN] = "warn",     [XD_LOG_NOTICE] = "notice", [XD_LOG_INFO] = "info",
    [XD_LOG_DEBUG] = "debug",
};

void
xd_log_set_level(xd_log_level lvl)
{
    if ((int)lvl < XD_LOG_NONE)
        lvl = XD_LOG_NONE;
    if (lvl > XD_LOG_DEBUG)
        lvl = XD_LOG_DEBUG;
    atomic_store_explicit(&xd_log_level_cur, (int)lvl, memory_order_relaxed);
}

int
xd_log_level_parse(const char *name)
{
    if (name == NULL)
        return -1;
    for (int i = XD_LOG_NONE; i <= XD_LOG_DEBUG; i++)
        if (strcasecmp(name, log_level_names[i]) == 0)
            return i;
    if (strcasecmp(name, "warning") == 0)
        return XD_LOG_WARN;
    if (strcasecmp(name, "critical") == 0)
        return XD_LOG_CRIT;
    return -1;
}

const char *
xd_log_level_name(xd_log_level lvl)
{
    if ((int)lvl < XD_LOG_NONE || lvl > XD_LOG_DEBUG)
        return "unknown";
    return log_level_names[lvl];
}

/* Appends at most avail bytes of escaped `s` (quotes, backslashes, control
 * bytes) to dst; returns the number of bytes written.  Never splits an escape. */
static size_t
log_escape(char *dst, size_t avail, const char *s)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[5];
        size_t elen;
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            elen = 2;
        } else if (*p == '\n') {
            memcpy(esc, "\\n", 2);
            elen = 2;
        } else if (*p == '\r') {
            memcpy(esc, "\\r", 2);
            elen = 2;
        } else if (*p == '\t') {
            memcpy(esc, "\\t", 2);
            elen = 2;
        } else if (*p < 0x20 || *p == 0x7f) {
            static const char hex[] = "0123456789abcdef";
            esc[0] = '\\';
            esc[1] = 'x';
            esc[2] = hex[*p >> 4];
            esc[3] = hex[*p & 15];
            elen = 4;
        } else {
            esc[0] = (char)*p;
            elen = 1;
        }
        if (n + elen > avail)
            break;
        memcpy(dst + n, esc, elen);
        n += elen;
    }
    return n;
}

const char *
xd_log_quote(const char *s, char *buf, unsigned size)
{
    bool quote;
    size_t n;

    if (buf == NULL || size == 0)
        return "";
    if (s == NULL)
        s = "(null)";
    quote = (*s == '\0');
    for (const unsigned char *p = (const unsigned char *)s; *p && !quote; p++)
        quote = (*p == ' ' || *p == '"' || *p == '=' || *p == '\\' || *p < 0x20 || *p == 0x7f);
    if (!quote) {
        n = strlen(s);
        if (n >= size) {
            /* Too long: cut at a UTF-8 boundary. */
            n = size - 1;
            while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
                n--;
        }
        memcpy(buf, s, n);
        buf[n] = '\0';
        return buf;
    }
    if (size < 3) {
        buf[0] = '\0';
        return buf;
    }
    buf[0] = '"';
    n = 1 + log_escape(buf + 1, size - 3, s);
    buf[n++] = '"';
    buf[n] = '\0';
    return buf;
}

void
xd_log_ctx(xd_log_t *log, const xd_log_t *parent, const char *fmt, ...)
{
    va_list ap;

    log->parent = parent;
    va_start(ap, fmt);
    int n = vsnprintf(log->ctx, sizeof log->ctx, fmt, ap);
    va_end(ap);
    if (n < 0)
        log->ctx[0] = '\0';
}

/* Writes all of buf to fd with as few write(2) calls as the kernel allows. */
static void
log_write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* a logger has nowhere to report its own failure */
        }
        buf += w;
        len -= (size_t)w;
    }
}

/* Appends " <text>" to the line at *pos when text is not empty. */
static void
log_append_part(char *line, size_t *pos, size_t cap, const char *text)
{
    if (text[0] == '\0' || *pos >= cap)
        return;
    int n = snprintf(line + *pos, cap - *pos, " %s", text);
    if (n > 0)
        *pos += (size_t)n;
}

void
xd_log_write(const xd_log_t *log, xd_log_level lvl, const char *event, const char *fmt, ...)
{
    char line[LOG_LINE_MAX];
    const size_t cap = sizeof line - 1; /* room for '\n' */
    const xd_log_t *chain[LOG_CTX_DEPTH];
    struct timespec ts;
    struct tm tm;
    size_t pos = 0, depth = 0;
    va_list ap;

    if (!XD_LOG_ENABLED(lvl) || lvl == XD_LOG_NONE)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    pos = (size_t)snprintf(line, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s event=\"",
                           tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                           tm.tm_sec, ts.tv_nsec / 1000000L, xd_log_level_name(lvl));
    pos += log_escape(line + pos, cap - pos - 1, event ? event : "");
    line[pos++] = '"';

    /* The chain runs inner → outer; print outermost first. */
    for (const xd_log_t *l = log; l != NULL && depth < LOG_CTX_DEPTH; l = l->parent)
        chain[depth++] = l;
    while (depth > 0 && pos < cap)
        log_append_part(line, &pos, cap, chain[--depth]->ctx);

    if (fmt != NULL && fmt[0] != '\0' && pos + 1 < cap) {
        line[pos++] = ' ';
        va_start(ap, fmt);
        int n = vsnprintf(line + pos, cap - pos, fmt, ap);
        va_end(ap);
        if (n < 0)
            pos--; /* drop the space; the format failed */
        else
            pos += (size_t)n;
    }

    if (pos >= cap) {
        /* Truncated: cut at a UTF-8 boundary and mark it. */
        pos = cap - (sizeof LOG_ELLIPSIS - 1);
        while (pos > 0 && ((unsigned char)line[pos] & 0xC0) == 0x80)
            pos--;
        memcpy(line + pos, LOG_ELLIPSIS, sizeof LOG_ELLIPSIS - 1);
        pos += sizeof LOG_ELLIPSIS - 1;
    }
    for (size_t i = 0; i < pos; i++)
        if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
            line[i] = '?';
    line[pos++] = '\n';
    log_write_all(atomic_load_explicit(&log_fd, memory_order_acquire), line, pos);
}

/* Opens path for appending; returns the fd or -errno. */
static int
log_open_file(const char *path)
{
    int fd;
    do
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0640);
    while (fd < 0 && errno == EINTR);
    return fd < 0 ? -errno : fd;
}

/* Points log_fd at newfd's file: the first time log_fd simply takes newfd;
 * after that newfd is dup3()ed over log_fd so the number never changes.
 * Called with log_mu held.  Consumes newfd. */
static int
log_install(int newfd)
{
    int cur = atomic_load_explicit(&log_fd, memory_order_relaxed);
    if (cur == STDERR_FILENO) {
        atomic_store_explicit(&log_fd, newfd, memory_order_release);
        return 0;
    }
    if (newfd == cur)
        return 0;
    int rc;
    do
        rc = dup3(newfd, cur, O_CLOEXEC);
    while (rc < 0 && errno == EINTR);
    rc = rc < 0 ? -errno : 0;
    close(newfd);
    return rc;
}

int
xd_log_open(const char *path)
{
    int rc = 0;

    if (path != NULL && strlen(path) >= sizeof log_path)
        return -ENAMETOOLONG;
    pthread_mutex_lock(&log_mu);
    if (path == NULL || strcmp(path, "-") == 0) {
        int cur = atomic_load_explicit(&log_fd, memory_order_relaxed);
        if (cur != STDERR_FILENO) {
            /* Keep the fd number alive but point it at stderr's file. */
            int fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
            rc = fd < 0 ? -errno : log_install(fd);
        }
        if (rc == 0)
            log_path[0] = '\0';
    } else {
        int fd = log_open_file(path);
        rc = fd < 0 ? fd : log_install(fd);
        if (rc == 0)
            memcpy(log_path, path, strlen(path) + 1);
    }
    pthread_mutex_unlock(&log_mu);
    return rc;
}

int
xd_log_reopen(void)
{
    int rc = 0;

    pthread_mutex_lock(&log_mu);
    if (log_path[0] != '\0') {
        int fd = log_open_file(log_path);
        rc = fd < 0 ? fd : log_install(fd);
    }
    pthread_mutex_unlock(&log_mu);
    return rc;
}

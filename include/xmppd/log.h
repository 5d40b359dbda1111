/*
 * log.h — one line per event, key=value context (DESIGN.md 6, STYLE.md 3.9).
 *
 * A line reads
 *
 *   2026-11-24T17:51:00.123Z level=warn event="s2s dialback failed" host=a.example remote=b.example
 *
 * XD_LOG tests the level before it evaluates any argument, so a debug line
 * costs one load and one compare when debug is off.  An xd_log_t carries
 * inherited context (host=, mod=, conn=, jid=); pass NULL for none.
 * Logging is thread-safe: each line is written with one write(2).
 */
#ifndef XMPPD_LOG_H
/* The build may pass -DXD_DEBUG to turn on debug asserts; keep that meaning
 * as XD_DEBUG_ASSERTS (see assert.h) before XD_DEBUG becomes a level below. */
#if defined(XD_DEBUG) && !defined(XD_DEBUG_ASSERTS)
#define XD_DEBUG_ASSERTS 1
#endif
#define XMPPD_LOG_H

#include <stdatomic.h>
#include <stdbool.h>

typedef enum xd_log_level {
    XD_LOG_NONE = 0,
    XD_LOG_CRIT,    /* the server cannot go on */
    XD_LOG_ERROR,   /* an operation failed and someone will notice */
    XD_LOG_WARN,    /* something is wrong but handled */
    XD_LOG_NOTICE,  /* significant normal events: start, stop, reload */
    XD_LOG_INFO,    /* per-connection events */
    XD_LOG_DEBUG,   /* everything else; may include protocol bytes */
} xd_log_level;

#define XD_CRIT   XD_LOG_CRIT
#define XD_ERROR  XD_LOG_ERROR
#define XD_WARN   XD_LOG_WARN
#define XD_NOTICE XD_LOG_NOTICE
#define XD_INFO   XD_LOG_INFO
#undef XD_DEBUG
#define XD_DEBUG  XD_LOG_DEBUG

/* Inherited context: a parent chain of key=value strings. */
typedef struct xd_log {
    const struct xd_log *parent; /* outer context, or NULL */
    char ctx[120];               /* "conn=17 ip=::1"; NUL-terminated */
} xd_log_t;

extern _Atomic int xd_log_level_cur; /* current threshold; read with relaxed order */

#define XD_LOG_ENABLED(lvl) \
    ((int)(lvl) <= atomic_load_explicit(&xd_log_level_cur, memory_order_relaxed))

/* XD_LOG(log, XD_WARN, "event name", "key=%s n=%d", a, n): fmt gives the
 * key=value pairs and may be "". */
#define XD_LOG(log, lvl, event, ...)                          \
    do {                                                      \
        if (XD_LOG_ENABLED(lvl))                              \
            xd_log_write((log), (lvl), (event), __VA_ARGS__); \
    } while (0)

void xd_log_write(const xd_log_t *log, xd_log_level lvl, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Sets ctx of `log` from a format; parent is kept. */
void xd_log_ctx(xd_log_t *log, const xd_log_t *parent, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Opens `path` for appending (NULL or "-" = stderr).  Returns 0 or -errno. */
int xd_log_open(const char *path);

/* Reopens the current file (SIGHUP, logrotate).  Returns 0 or -errno. */
int xd_log_reopen(void);

void xd_log_set_level(xd_log_level lvl);

/* "info" → XD_LOG_INFO; returns -1 for an unknown name. */
int xd_log_level_parse(const char *name);
const char *xd_log_level_name(xd_log_level lvl);

/* Escapes a value for key=value output: quotes it when it is empty or
 * contains a space, '"', '=', '\\' or a control byte; inside quotes '"' and
 * '\\' are backslash-escaped and control bytes become \n \r \t or \xNN.
 * Output that does not fit in `size` is cut (never mid-escape or, unquoted,
 * mid-UTF-8 sequence) and stays NUL-terminated and balanced.  NULL prints as
 * (null).  Returns `buf`. */
const char *xd_log_quote(const char *s, char *buf, unsigned size);

#endif

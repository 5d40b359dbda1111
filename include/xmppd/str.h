/*
 * str.h — a pointer with its length (STYLE.md 3.2).
 *
 * xd_str_t never owns its bytes; whoever made it keeps them alive.  The bytes
 * need not be NUL-terminated.
 */
#ifndef XMPPD_STR_H
#define XMPPD_STR_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

typedef struct xd_str {
    const char *p; /* first byte; may be NULL when len == 0 */
    size_t len;    /* number of bytes */
} xd_str_t;

#define XD_STR(lit) ((xd_str_t){ (lit), sizeof(lit) - 1 })
#define XD_STR_NULL ((xd_str_t){ NULL, 0 })

static inline xd_str_t
xd_str_c(const char *s)
{
    return (xd_str_t){ s, s ? strlen(s) : 0 };
}

static inline bool
xd_str_eq(xd_str_t a, xd_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static inline bool
xd_str_eq_c(xd_str_t a, const char *b)
{
    return xd_str_eq(a, xd_str_c(b));
}

#endif

/*
 * str.c — the growable byte buffer of include/xmppd/str.h.
 *
 * Growth doubles the allocation from XD_BUF_MIN_CAP until the bytes and
 * their NUL fit, so n appends of one byte cost O(n) copies in all.  Sizes
 * are checked before they are added: len + n + 1 that would wrap around
 * size_t is refused (XD_ELIMIT), and a doubling that would wrap stops at
 * the size needed.  Nothing is changed by a refused append.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/str.h"

#define XD_BUF_MIN_CAP 64

/* Room for `need` more bytes and a NUL; XD_ELIMIT when the size wraps. */
static int
buf_room(xd_buf_t *b, size_t need)
{
    if (need > SIZE_MAX - 1 - b->len)
        return XD_ELIMIT;
    size_t want = b->len + need + 1;
    if (want <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : XD_BUF_MIN_CAP;
    while (cap < want)
        cap = cap > SIZE_MAX / 2 ? want : cap * 2;
    b->p = xd_realloc(b->p, cap);
    b->cap = cap;
    return 0;
}

int
xd_buf_add(xd_buf_t *b, const void *s, size_t n)
{
    int rc = buf_room(b, n);
    if (rc != 0)
        return rc;
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

int
xd_buf_puts(xd_buf_t *b, const char *s)
{
    return xd_buf_add(b, s, strlen(s));
}

int
xd_buf_vprintf(xd_buf_t *b, const char *fmt, va_list ap)
{
    va_list aq;
    va_copy(aq, ap);
    char probe[1];
    int n = vsnprintf(probe, sizeof probe, fmt, aq);
    va_end(aq);
    if (n < 0)
        return XD_EINVAL;
    int rc = buf_room(b, (size_t)n);
    if (rc != 0)
        return rc;
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int
xd_buf_printf(xd_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = xd_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void
xd_buf_reset(xd_buf_t *b)
{
    b->len = 0;
    if (b->p)
        b->p[0] = '\0';
}

void
xd_buf_free(xd_buf_t *b)
{
    xd_free(b->p);
    *b = (xd_buf_t){ 0 };
}

char *
xd_buf_take(xd_buf_t *b)
{
    char *p = b->p ? b->p : xd_strdup("");
    *b = (xd_buf_t){ 0 };
    return p;
}

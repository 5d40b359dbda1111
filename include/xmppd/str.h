/*
 * str.h — a pointer with its length (STYLE.md 3.2), and a growable byte
 * buffer.
 *
 * xd_str_t never owns its bytes; whoever made it keeps them alive.  The bytes
 * need not be NUL-terminated.
 *
 * xd_buf_t owns its bytes (src/core/str.c).  A zeroed one is empty and
 * ready (`xd_buf_t b = { 0 };`); appends grow it, keep a NUL after the bytes
 * (so b.p is a C string when nothing added holds a NUL) and never fail for
 * lack of memory (alloc.h); an append whose size would overflow size_t adds
 * nothing and returns XD_ELIMIT.  A bound on what a buffer may hold is its
 * user's (the HTTP body's 413 comes before the append, with the status the
 * protocol wants).  xd_buf_free (or xd_buf_take) releases it.
 */
#ifndef XMPPD_STR_H
#define XMPPD_STR_H

#include <stdarg.h>
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

/* A growable byte buffer (see the top of this file). */
typedef struct xd_buf {
    char *p;      /* the bytes and a NUL after them; NULL until something was added */
    size_t len;   /* bytes held, the NUL not counted */
    size_t cap;   /* bytes allocated at p */
} xd_buf_t;

/* Appends n bytes of s (s may be NULL when n is 0).  0, or XD_ELIMIT with
 * nothing added when len + n would overflow size_t. */
int xd_buf_add(xd_buf_t *b, const void *s, size_t n);

/* Appends the C string s. */
int xd_buf_puts(xd_buf_t *b, const char *s);

/* Appends what printf would print; XD_ELIMIT as xd_buf_add (nothing added). */
int xd_buf_printf(xd_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int xd_buf_vprintf(xd_buf_t *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* Empties b and keeps its memory for the next use. */
void xd_buf_reset(xd_buf_t *b);

/* Releases b's memory; b is empty (zeroed) afterwards. */
void xd_buf_free(xd_buf_t *b);

/* The bytes as a C string the caller owns (xd_free it; "" when empty, never
 * NULL); b is empty (zeroed) afterwards. */
char *xd_buf_take(xd_buf_t *b);

/* The bytes as a C string owned by b ("" when empty), valid until the next
 * call that changes b. */
static inline const char *
xd_buf_cstr(const xd_buf_t *b)
{
    return b->p ? b->p : "";
}

/* The bytes as an xd_str_t owned by b, valid until the next change of b. */
static inline xd_str_t
xd_buf_str(const xd_buf_t *b)
{
    return (xd_str_t){ b->p, b->len };
}

#endif

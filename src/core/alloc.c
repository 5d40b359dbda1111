/*
 * alloc.c — allocation that never fails, and the assertion failure path
 * (include/xmppd/alloc.h, include/xmppd/assert.h; STYLE.md 3.8).
 *
 * Sits at the bottom of src/core: it depends on libc and log.c only.
 * Invariants: every xd_* allocator returns a valid pointer or does not return
 * (out-of-memory writes one line to stderr with write(2), which allocates
 * nothing, then aborts); a zero size is rounded up to one byte so callers never
 * see the implementation-defined NULL of malloc(0).  xd_free(NULL) is a no-op.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/log.h"

/* Writes "xmppd: out of memory in <what> (<size> bytes)" to stderr and aborts. */
_Noreturn static void
alloc_oom(const char *what, size_t size)
{
    char line[160];
    int n = snprintf(line, sizeof line,
                     "level=crit event=\"out of memory\" call=%s size_bytes=%zu\n", what, size);
    if (n > 0) {
        size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
        ssize_t w = write(STDERR_FILENO, line, len);
        (void)w; /* nothing more we can do */
    }
    abort();
}

void *
xd_malloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (p == NULL)
        alloc_oom("xd_malloc", size);
    return p;
}

void *
xd_calloc(size_t n, size_t size)
{
    if (n == 0 || size == 0)
        n = size = 1;
    void *p = calloc(n, size); /* calloc checks n * size for overflow */
    if (p == NULL)
        alloc_oom("xd_calloc", size > 0 && n > SIZE_MAX / size ? SIZE_MAX : n * size);
    return p;
}

void *
xd_realloc(void *p, size_t size)
{
    void *q = realloc(p, size ? size : 1);
    if (q == NULL)
        alloc_oom("xd_realloc", size);
    return q;
}

char *
xd_strdup(const char *s)
{
    XD_ASSERT(s != NULL);
    size_t len = strlen(s);
    char *d = xd_malloc(len + 1);
    memcpy(d, s, len + 1);
    return d;
}

char *
xd_strndup(const char *s, size_t len)
{
    XD_ASSERT(s != NULL || len == 0);
    size_t n = len ? strnlen(s, len) : 0;
    char *d = xd_malloc(n + 1);
    if (n)
        memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

void
xd_free(void *p)
{
    free(p);
}

char *
xd_vasprintf(const char *fmt, va_list ap)
{
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    if (n < 0)
        alloc_oom("xd_vasprintf", 0);
    return s;
}

char *
xd_asprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = xd_vasprintf(fmt, ap);
    va_end(ap);
    return s;
}

#ifdef XD_DEBUG_KNOBS
void
xd_debug_delay(const char *name)
{
    const char *v = getenv(name);
    long ms = v ? strtol(v, NULL, 10) : 0;
    if (ms > 0 && ms <= 60000)
        usleep((useconds_t)ms * 1000);
}
#endif

_Noreturn void
xd_assert_fail(const char *expr, const char *file, int line, const char *func)
{
    char qexpr[512];
    xd_log_write(NULL, XD_LOG_CRIT, "assertion failed", "expr=%s file=%s line=%d func=%s",
                 xd_log_quote(expr, qexpr, sizeof qexpr), file, line, func);
    abort();
}

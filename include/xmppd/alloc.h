/*
 * alloc.h — allocation that never fails (STYLE.md 3.8).
 *
 * Every function aborts the process with a log line on out-of-memory, as
 * Redis's zmalloc does.  Per-connection limits keep us far from that point.
 */
#ifndef XMPPD_ALLOC_H
#define XMPPD_ALLOC_H

#include <stdarg.h>
#include <stddef.h>

void *xd_malloc(size_t size);
void *xd_calloc(size_t n, size_t size);
void *xd_realloc(void *p, size_t size);
char *xd_strdup(const char *s);
char *xd_strndup(const char *s, size_t len);
void xd_free(void *p);

/* A new string formatted as by printf (xd_free it). */
char *xd_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *xd_vasprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

/* Allocates and zeroes one object of the pointee's type. */
#define xd_new(T) ((T *)xd_calloc(1, sizeof(T)))

#endif

/*
 * assert.h — assertions that stay on in release builds (STYLE.md 3.8).
 *
 * XD_ASSERT is always on; XD_DEBUG_ASSERT, XD_NEVER and XD_ALWAYS check only
 * when debug asserts are on (meson option debug_asserts).  The build turns
 * them on with -DXD_DEBUG_ASSERTS, or with the older -DXD_DEBUG: log.h reuses
 * the name XD_DEBUG as the debug level, so both headers capture a
 * command-line XD_DEBUG as XD_DEBUG_ASSERTS before log.h redefines it.
 * xd_assert_fail (src/core/alloc.c) logs at CRIT and aborts.
 */
#ifndef XMPPD_ASSERT_H
#define XMPPD_ASSERT_H

#include <stdbool.h>

#if defined(XD_DEBUG) && !defined(XMPPD_LOG_H) && !defined(XD_DEBUG_ASSERTS)
#define XD_DEBUG_ASSERTS 1
#endif

_Noreturn void xd_assert_fail(const char *expr, const char *file, int line, const char *func);

#define XD_ASSERT(e) \
    ((e) ? (void)0 : xd_assert_fail(#e, __FILE__, __LINE__, __func__))

#ifdef XD_DEBUG_ASSERTS
#define XD_DEBUG_ASSERT(e) XD_ASSERT(e)
#else
#define XD_DEBUG_ASSERT(e) ((void)0)
#endif

/* Defensive branches (SQLite): the condition should never hold; in debug
 * builds it aborts, in release builds the branch handles it. */
#ifdef XD_DEBUG_ASSERTS
#define XD_NEVER(e) ((e) ? (xd_assert_fail("NEVER(" #e ")", __FILE__, __LINE__, __func__), 1) : 0)
#define XD_ALWAYS(e) ((e) ? 1 : (xd_assert_fail("ALWAYS(" #e ")", __FILE__, __LINE__, __func__), 0))
#else
#define XD_NEVER(e) (!!(e))
#define XD_ALWAYS(e) (!!(e))
#endif

/* Test knobs: XD_DEBUG_DELAY("NAME") sleeps the calling thread for the
 * milliseconds in environment variable NAME (unset, empty or 0: no delay),
 * so that a test can widen a race window its regression guard needs to see
 * (tests/integration sets NAME for the server it starts).  Compiled in only
 * in builds with debug information (meson's `debug`: the debug and
 * debugoptimized build types define XD_DEBUG_KNOBS); nothing in a release
 * build.  Only where blocking is allowed (the blocking pool), never on a
 * worker loop. */
#ifdef XD_DEBUG_KNOBS
void xd_debug_delay(const char *name);
#define XD_DEBUG_DELAY(name) xd_debug_delay(name)
#else
#define XD_DEBUG_DELAY(name) ((void)0)
#endif

#endif

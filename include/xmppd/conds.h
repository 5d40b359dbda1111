/*
 * conds.h — stream and stanza error conditions as values (STYLE.md 3.8).
 *
 * The lists live in conds.def; these enums and the name/type lookups are
 * generated from it, so a condition is spelled in exactly one place.
 */
#ifndef XMPPD_CONDS_H
#define XMPPD_CONDS_H

typedef enum xd_stream_cond {
#define XD_STREAM_COND(name, el) XD_STREAM_##name,
#include "xmppd/conds.def"
#undef XD_STREAM_COND
    XD_STREAM_COND_COUNT
} xd_stream_cond;

typedef enum xd_cond {
#define XD_STANZA_COND(name, el, type) XD_COND_##name,
#include "xmppd/conds.def"
#undef XD_STANZA_COND
    XD_COND_COUNT
} xd_cond;

/* "not-well-formed" etc.; NULL when out of range. */
const char *xd_stream_cond_name(xd_stream_cond cond);
const char *xd_cond_name(xd_cond cond);
/* The default error type of a stanza condition: "cancel", "modify", … */
const char *xd_cond_type(xd_cond cond);

/* Reverse lookups; -1 when unknown. */
int xd_stream_cond_parse(const char *name);
int xd_cond_parse(const char *name);

/* Writes a complete <stream:error> element (with optional <text>) and the
 * closing </stream:stream> into buf.  Returns the length (snprintf rules). */
int xd_stream_error_format(char *buf, unsigned size, xd_stream_cond cond, const char *text);

#endif

/*
 * err.h — error codes (STYLE.md 3.8).
 *
 * A function that can fail returns 0 or a negative code: either an XD_E*
 * value from errors.def or a negated errno (system errors, as in libuv).
 * Results travel through out-parameters.  If a function that takes a
 * callback returns an error, the callback is never called.
 */
#ifndef XMPPD_ERR_H
#define XMPPD_ERR_H

enum xd_err {
#define XD_ERR(name, val, msg) XD_E##name = (val),
#include "xmppd/errors.def"
#undef XD_ERR
};

/* A static, human-readable message for `code` (XD_E* or -errno). */
const char *xd_strerror(int code);

/* The symbolic name ("XD_EJID_LOCAL_EMPTY", "ENOENT") of `code`. */
const char *xd_err_name(int code);

#endif

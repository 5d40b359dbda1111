/*
 * err.c — names and messages for error codes (include/xmppd/err.h).
 *
 * Sits in src/core; depends on libuv's public error list only.  A code is 0,
 * an XD_E* value from errors.def (<= -10000), or a negated errno.  Negated
 * errno values are looked up in libuv's UV_ERRNO_MAP (on Unix UV_E* == -errno)
 * and then in glibc's strerrordesc_np/strerrorname_np; both return static
 * strings, so every answer here is a static string and the functions are
 * thread-safe (no strerror(), no buffers).  Unknown codes get a fixed text.
 */
#include <string.h>
#include <uv.h>

#include "xmppd/err.h"

/* The message for a libuv/errno code, or NULL when the code is not one. */
static const char *
err_sys_msg(int code)
{
    switch (code) {
#define ERR_UV_MSG(name, msg) \
    case UV_##name:           \
        return msg;
        UV_ERRNO_MAP(ERR_UV_MSG)
#undef ERR_UV_MSG
    default:
        break;
    }
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
    if (code < 0 && code > -4096)
        return strerrordesc_np(-code);
#endif
    return NULL;
}

/* The symbolic name for a libuv/errno code ("ENOENT"), or NULL. */
static const char *
err_sys_name(int code)
{
    switch (code) {
#define ERR_UV_NAME(name, msg) \
    case UV_##name:            \
        return #name;
        UV_ERRNO_MAP(ERR_UV_NAME)
#undef ERR_UV_NAME
    default:
        break;
    }
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
    if (code < 0 && code > -4096)
        return strerrorname_np(-code);
#endif
    return NULL;
}

const char *
xd_strerror(int code)
{
    const char *msg;

    switch (code) {
    case 0:
        return "success";
#define XD_ERR(name, val, text) \
    case (val):                 \
        return text;
#include "xmppd/errors.def"
#undef XD_ERR
    default:
        break;
    }
    msg = err_sys_msg(code);
    return msg ? msg : "unknown error";
}

const char *
xd_err_name(int code)
{
    const char *name;

    switch (code) {
    case 0:
        return "OK";
#define XD_ERR(name, val, text) \
    case (val):                 \
        return "XD_E" #name;
#include "xmppd/errors.def"
#undef XD_ERR
    default:
        break;
    }
    name = err_sys_name(code);
    return name ? name : "UNKNOWN";
}

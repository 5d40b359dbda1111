/*
 * ctl.h — the control socket that xmppctl talks to (DESIGN.md 6).
 *
 * A Unix stream socket, mode 0600, served on the main loop.  One request per
 * connection: a line "command\targ\targ\n"; the answer is "ok\n" or
 * "error <exit-code>\n" followed by the output, then the server closes.
 * Commands are registered by name; the full command registry (DESIGN.md 5)
 * replaces this table when it lands, keeping the wire format.
 */
#ifndef XMPPD_CORE_CTL_H
#define XMPPD_CORE_CTL_H

#include <stddef.h>
#include <uv.h>

/* Output of a command: a growable string. */
typedef struct xd_ctl_out {
    char *p;    /* NUL-terminated */
    size_t len; /* bytes used */
    size_t cap; /* bytes allocated */
} xd_ctl_out_t;

void xd_ctl_printf(xd_ctl_out_t *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Returns 0 (ok) or an exit code for xmppctl (1 = failed, 2 = usage). */
typedef int (*xd_ctl_handler)(int argc, char **argv, xd_ctl_out_t *out);

/* Registers a command; `args` documents the arguments ("USER HOST"). */
void xd_ctl_register(const char *name, const char *args, const char *doc, int min_args,
                     int max_args, xd_ctl_handler fn);

/* Listens on `path` on `loop`.  A stale socket file (nobody listening) is
 * replaced; a live one is an error.  Returns 0 or an error, *err set. */
int xd_ctl_start(uv_loop_t *loop, const char *path, char **err);

/* Closes the socket and removes the file. */
void xd_ctl_stop(void);

#endif

/*
 * ctl.h — the control socket that xmppctl talks to (DESIGN.md 6).
 *
 * A Unix stream socket, mode 0600, served on the main loop.  One request per
 * connection: a line "command\targ\targ\n"; the answer is "ok\n" or
 * "error <exit-code>\n" followed by the output, then the server closes.
 * The commands are those of the command registry (include/xmppd/cmd.h);
 * those without XD_CMD_ON_LOOP run on the libuv thread pool of the main
 * loop, so they may block.  Fields are tab-separated; the exit code is
 * 0 (ok), 1 (failed, or a "no" answer) or 2 (usage, bad argument).
 */
#ifndef XMPPD_CORE_CTL_H
#define XMPPD_CORE_CTL_H

#include <stddef.h>
#include <uv.h>

/* Listens on `path` on `loop`.  A stale socket file (nobody listening) is
 * replaced; a live one is an error.  Returns 0 or an error, *err set. */
int xd_ctl_start(uv_loop_t *loop, const char *path, char **err);

/* Closes the socket and removes the file. */
void xd_ctl_stop(void);

#endif

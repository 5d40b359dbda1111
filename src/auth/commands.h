/*
 * commands.h — the account commands (register, unregister, change_password,
 * check_account, check_password, registered_users) for the command registry.
 */
#ifndef XMPPD_AUTH_COMMANDS_H
#define XMPPD_AUTH_COMMANDS_H

/* Called after `unregister` removed an account, on the thread that ran the
 * command (off-loop), so that the layers above drop its data. */
typedef void (*xd_auth_removed_fn)(const char *host, const char *user);

/* Registers them (start-up, once).  `removed` may be NULL.  The hooks are
 * the router's, above this layer, so main.c passes the function that runs
 * REMOVE_USER (docs/design.md, Layers). */
void xd_auth_register_commands(xd_auth_removed_fn removed);

#endif

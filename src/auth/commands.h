/*
 * commands.h — the account commands (register, unregister, change_password,
 * check_account, check_password, registered_users) for the command registry.
 */
#ifndef XMPPD_AUTH_COMMANDS_H
#define XMPPD_AUTH_COMMANDS_H

/* Registers them (start-up, once). */
void xd_auth_register_commands(void);

#endif

/*
 * mod_basic.h — ping, version, time, disco and carbons handlers (see
 * mod_basic.c).
 */
#ifndef XMPPD_MOD_MOD_BASIC_H
#define XMPPD_MOD_MOD_BASIC_H

#include "xmppd/config.h"

/* Registers the handlers for every host.  0 or an error (already started). */
int xd_mod_basic_start(void);

/* Parses mod_disco's options (XEP-0157 server_info) of every host; errors
 * name file:line. */
int xd_mod_basic_check_config(const xd_config_t *cfg, char **err);

#endif

/*
 * register.h — mod_register (XEP-0077 in-band registration): its option
 * table, checked when the configuration is loaded.  The protocol itself runs
 * inside the client streams (c2s_int.h).
 */
#ifndef XMPPD_STREAM_REGISTER_H
#define XMPPD_STREAM_REGISTER_H

#include "xmppd/config.h"
#include "xmppd/opt.h"

/* The option table of mod_register (docs, tests). */
const xd_opt_t *xd_register_opts(void);

/* Parses mod_register's options for every host of cfg; 0 or an error with
 * *err naming file:line ("modules.mod_register.access: ..."). */
int xd_register_check_config(const xd_config_t *cfg, char **err);

#endif

/*
 * mod_offline.h — offline messages (XEP-0160); see mod_offline.c.
 */
#ifndef XMPPD_MOD_MOD_OFFLINE_H
#define XMPPD_MOD_MOD_OFFLINE_H

#include "xmppd/config.h"
#include "xmppd/opt.h"
#include "xmppd/storage.h"

/* Its option table (docs, tests). */
const xd_opt_t *xd_offline_opts(void);

/* Registers the offline_msg table's migrations: before xd_db_open. */
int xd_offline_register_migrations(void);

/* Parses mod_offline's options of every host (file:line errors). */
int xd_offline_check_config(const xd_config_t *cfg, char **err);

/* Connects the router and the c2s to the store (db must stay open until
 * after xd_pool_stop) / disconnects them. */
void xd_offline_start(xd_db_t *db);
void xd_offline_stop(void);

#endif

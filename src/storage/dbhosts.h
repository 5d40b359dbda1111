/*
 * dbhosts.h — the databases of the served hosts: one pool (xd_db_t) per
 * distinct database the configuration names, and which host uses which.
 *
 * A host without sql_* options of its own in host_config uses the top
 * level's database; hosts that name the same database (xd_sql_conf_same_db)
 * share its pool.  main.c opens the pools at start (migrations run on each)
 * and closes them at the end; everything that stores per host asks here:
 * the module API (xd_module_db), internal auth, the storage commands,
 * `xmppctl status`.
 *
 * Thread-safety: the lookups may run on any thread at any time between open
 * and close (a read lock); open, update and close run on the main thread.
 * A pool stays open until xd_db_hosts_close, so a pointer got from a lookup
 * stays valid until then (the server stops its users first).
 */
#ifndef XMPPD_STORAGE_DBHOSTS_H
#define XMPPD_STORAGE_DBHOSTS_H

#include <stddef.h>

#include "xmppd/config.h"
#include "xmppd/storage.h"

/* Opens one pool per distinct database of cfg's hosts (the top level's
 * included only when some host uses it), each with every registered
 * migration applied, and maps every host to its pool.  On error nothing
 * stays open and *err (malloc'd) names the database and its hosts. */
int xd_db_hosts_open(const xd_config_t *cfg, char **err);

/* Reload: maps the hosts new in cfg to the open pools of their databases.
 * Hosts already mapped keep their pool, also when cfg no longer serves
 * them (a reload that fails later leaves nothing unmapped; xd_db_hosts_each
 * callers filter by the served hosts).  XD_ENOTFOUND with *err, and
 * nothing changed, when a host's database is not open or is not the one
 * it had (xd_config_check_reload refuses such a file first). */
int xd_db_hosts_update(const xd_config_t *cfg, char **err);

/* The pool of a served host, or NULL (unknown host, nothing open). */
xd_db_t *xd_db_host(const char *host);

/* The pool for what belongs to no host: the first one opened (the first
 * host's database).  NULL when nothing is open. */
xd_db_t *xd_db_hosts_default(void);

/* Number of open pools. */
size_t xd_db_hosts_count(void);

/* Calls fn for every open pool, in opening order, with a label naming the
 * database ("sqlite /var/lib/xmppd/a.db", "pgsql xmppd@127.0.0.1:5432")
 * and the hosts that use it (lent for the call; may be none after a
 * reload).  Under the read lock: fn must not call back into this file. */
typedef void (*xd_db_pool_fn)(void *arg, xd_db_t *db, const char *label,
                              const char *const *hosts, size_t nhosts);
void xd_db_hosts_each(xd_db_pool_fn fn, void *arg);

/* Applies the registered migrations to every open pool (a module loaded
 * by a reload).  The first error, with *err naming the database. */
int xd_db_hosts_migrate(char **err);

/* Closes every pool (no connection may be held) and forgets the hosts. */
void xd_db_hosts_close(void);

#endif

/*
 * secret.h — the node secret: 32 random bytes in <data_dir>/secret (mode
 * 0600), created on first start and kept across restarts, for every value
 * that must be unguessable yet stable: fake SCRAM salts for unknown users
 * (c2s) and dialback keys (XEP-0185, s2s).
 */
#ifndef XMPPD_CORE_SECRET_H
#define XMPPD_CORE_SECRET_H

#include "xmppd/str.h"

#define XD_NODE_SECRET_LEN 32

/* Reads <data_dir>/secret, creating it when missing or short (written to a
 * temporary file, fsync'd, renamed).  Blocking; call once at start-up,
 * before the workers run.  0, -errno or XD_EINTERNAL. */
int xd_node_secret_load(const char *data_dir);

/* The secret (XD_NODE_SECRET_LEN bytes; empty before the load).  Any
 * thread after the load. */
xd_str_t xd_node_secret(void);

/* Wipes it (shutdown). */
void xd_node_secret_clear(void);

#endif

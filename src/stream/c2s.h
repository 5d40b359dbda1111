/*
 * c2s.h — client-to-server streams (RFC 6120 4-7): the client role of the
 * stream connection (conn.h) and the transport of the sessions it binds.
 */
#ifndef XMPPD_STREAM_C2S_H
#define XMPPD_STREAM_C2S_H

#include "stream/conn.h"

/* The role of connections accepted on c2s listeners. */
extern const xd_conn_role_t xd_c2s_role;

/* The worker stops (after xd_conn_shutdown_worker): the sessions it keeps
 * for stream management resumption end, as if their timeout had passed. */
void xd_c2s_stop_worker(xd_worker_t *w);

#endif

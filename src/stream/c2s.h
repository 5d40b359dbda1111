/*
 * c2s.h — client-to-server streams (RFC 6120 4-7): the client role of the
 * stream connection (conn.h) and the transport of the sessions it binds.
 */
#ifndef XMPPD_STREAM_C2S_H
#define XMPPD_STREAM_C2S_H

#include "stream/conn.h"

/* The role of connections accepted on c2s listeners. */
extern const xd_conn_role_t xd_c2s_role;

#endif

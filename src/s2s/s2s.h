/*
 * s2s.h — the s2s manager: federation with other XMPP servers (RFC 6120,
 * XEP-0220 dialback, XEP-0178 SASL EXTERNAL, XEP-0368 direct TLS).
 *
 *   router ── xd_s2s_route(st) ──► outgoing route (local, remote)
 *                                    none: created, resolved (resolve.h),
 *                                          connected, authenticated
 *                                          (s2s_out.c); stanzas queue
 *                                    up:   written on its stream
 *                                    failed: queued stanzas bounce with
 *                                          remote-server-not-found or
 *                                          remote-server-timeout
 *   s2s listener ── s2s_in.c ── authenticated (remote, local) pairs ──► router
 *
 * One outgoing stream per (local domain, remote domain) pair, on one
 * worker.  Incoming streams authenticate any number of pairs (SASL
 * EXTERNAL for the stream's 'from', dialback for each <db:result/>).
 * Dialback keys (XEP-0185) come from the node secret's dialback key
 * (core/secret.h), so this server, and every node sharing the secret, can
 * answer <db:verify/> for the domains it originates from.
 *
 * Policy (configuration): s2s_access on the remote domain both ways,
 * s2s_require_encryption, s2s_verify_certificates (no dialback fallback),
 * s2s_dialback, s2s_hosts (static routes), s2s_dns_servers, timeouts and
 * the queue bound.
 */
#ifndef XMPPD_S2S_S2S_H
#define XMPPD_S2S_S2S_H

#include <stddef.h>

#include "core/worker.h"
#include "xmppd/config.h"
#include "xmppd/el.h"

struct xd_conn_role;

/* The role of connections accepted on s2s listeners (stream/conn.h). */
extern const struct xd_conn_role xd_s2s_in_role;

/* Routes st (a reference, taken over) to `remote`, a domain this process
 * neither serves nor has a service for.  Its 'from' must be at a local
 * domain (a served host or a service domain).  Any thread. */
void xd_s2s_route(xd_stanza_t *st, const char *remote);

/* Checks the s2s options of cfg (s2s_hosts entries); errors name
 * file:line.  0 or an XD_E* code with *err (malloc'd). */
int xd_s2s_check_config(const xd_config_t *cfg, char **err);

/* Applies cfg (policy, queue bound, connect timeout for attempts) to what
 * starts from now.  Call before the workers start and after each reload.
 * The handshake and idle timeouts and the stream limit of outgoing streams
 * are taken from the first call only (a restart changes them). */
void xd_s2s_configure(const xd_config_t *cfg);

/* Worker hooks: the worker's resolver, and its end (every stream is closed
 * by the c2s shutdown; attempts still resolving or connecting end here). */
void xd_s2s_start_worker(xd_worker_t *w);
void xd_s2s_stop_worker(xd_worker_t *w);

/* Registers s2s_connections and disconnect_s2s. */
void xd_s2s_register_commands(void);

/* Drops every route (queued stanzas are freed without bounce): shutdown. */
void xd_s2s_shutdown(void);

#endif

/*
 * mod_basic.h — ping, version, time, disco and carbons handlers (see
 * mod_basic.c).
 */
#ifndef XMPPD_MOD_MOD_BASIC_H
#define XMPPD_MOD_MOD_BASIC_H

#include <stdbool.h>
#include <stdint.h>

#include "xmppd/config.h"
#include "xmppd/opt.h"

/* Registers the handlers for every host.  0 or an error (already started). */
int xd_mod_basic_start(void);

/* Parses mod_disco's options (XEP-0157 server_info) of every host; errors
 * name file:line. */
int xd_mod_basic_check_config(const xd_config_t *cfg, char **err);

/* The option tables of mod_disco and mod_ping (docs). */
const xd_opt_t *xd_disco_opts(void);
const xd_opt_t *xd_ping_opts(void);

/* The XEP-0115 'ver' of the host's disco#info (node XD_CAPS_NODE, hash
 * sha-1), for the stream features.  0 or XD_EINVAL (see xd_caps_ver).
 * Any thread. */
int xd_disco_host_caps(const char *host, char ver[29]);

/* mod_ping's options for a host (XEP-0199 server-to-client pings): true
 * when pings are on. */
typedef struct xd_ping_conf {
    bool send_pings;          /* ping silent clients */
    uint64_t interval_ms;     /* silence before a ping */
    uint64_t ack_timeout_ms;  /* time to answer */
    int kill;                 /* 1: close a client that does not answer */
} xd_ping_conf_t;
bool xd_mod_ping_conf(const xd_config_t *cfg, const char *host, xd_ping_conf_t *out);

#endif

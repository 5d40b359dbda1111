/*
 * acl.h — access control over JIDs: ACLs, access rules and shaper rules
 * evaluated for a user and an address (src/xmpp/acl.c).
 *
 * The rules are configuration data (xd_acl_t, xd_rule_t in config.h, parsed
 * by src/core); matching them needs JIDs, so it lives in the xmpp layer,
 * together with xd_xmpp_names, the RFC 7622 preparation the configuration's
 * names get when a config is loaded, and the loaders that pass it
 * (xd_config_load and friends; core's loader, config.h, takes the
 * preparation as an argument and knows no JIDs).
 *
 * Every function reads an immutable config and may run on any thread.
 */
#ifndef XMPPD_ACL_H
#define XMPPD_ACL_H

#include <stdbool.h>
#include <sys/socket.h>

#include "xmppd/config.h"
#include "xmppd/jid.h"

/* Names prepared as in JIDs (RFC 7622): domains with IDNA2008, localparts
 * with UsernameCaseMapped, resources with OpaqueString; an ACL user is a bare
 * JID with a localpart or a lone localpart. */
extern const xd_conf_names_t xd_xmpp_names;

/* xd_config_load_with and friends (config.h) with xd_xmpp_names: what the
 * server, its tools and tests call to load a configuration. */
int xd_config_load(const char *path, xd_config_t **out, char **err);
int xd_config_load_string(const char *name, const char *text, size_t len, xd_config_t **out,
                          char **err);
int xd_config_default(xd_config_t **out);

typedef enum xd_access { XD_ACCESS_DENY = 0, XD_ACCESS_ALLOW = 1 } xd_access_t;

/* Whether `jid` (may be NULL) connecting from `addr` (may be NULL) matches ACL
 * `acl` when asked about `host` ("user: admin" means admin@host).  "all" and
 * "none" are built in. */
bool xd_acl_match(const xd_host_conf_t *scope, const xd_acl_t *acl, const char *host,
                  const xd_jid_t *jid, const struct sockaddr *addr);

/* Evaluates access rule `rule` for `host` (a served host: its host_config
 * definitions win; otherwise the global ones).  The first clause whose ACL
 * matches decides; no match, or an unknown rule, denies.  The rules "all"
 * (allow) and "none" (deny) are built in. */
xd_access_t xd_access_match(const xd_config_t *cfg, const char *host, const char *rule,
                            const xd_jid_t *jid, const struct sockaddr *addr);

/* xd_access_match by the running configuration (xd_config_get), for
 * `jid` without an address; rule NULL: the accounts of `host` only (the
 * default of the services a host offers its own users: upload slots,
 * STUN/TURN credentials).  Any thread. */
bool xd_access_allowed(const char *host, const char *rule, const xd_jid_t *jid);

/* Whether `who` may run command cmd (cmd.h) through a front end other
 * than the control socket (ad-hoc commands, the HTTP API), asking on
 * `host` (the host addressed, or the requester's own).  The command's
 * access rule (NULL: "admin") must hold on every served host the call's
 * arguments name (a host argument, a JID's domain) and on `host`; a call
 * that names no host (a server-wide command, or a host argument left out
 * meaning all hosts) needs the rule at the top level instead, where an
 * ACL of lone localparts matches nobody.  call NULL: before the arguments
 * are known (listing the commands): a command with a host or JID argument
 * is asked about on `host`, others at the top level.  Any thread. */
struct xd_cmd;
struct xd_cmd_call;
bool xd_cmd_allowed(const xd_config_t *cfg, const char *host, const struct xd_cmd *cmd,
                    const struct xd_cmd_call *call, const xd_jid_t *who);

/* Evaluates shaper rule `rule` as above: the value of the first matching
 * clause ("normal", "none", "10"), or NULL when none matches or no such rule. */
const char *xd_shaper_rule_match(const xd_config_t *cfg, const char *host, const char *rule,
                                 const xd_jid_t *jid, const struct sockaddr *addr);

#endif

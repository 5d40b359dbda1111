/*
 * config_int.h — what the parts of the configuration loader share (src/core/config*.c).
 *
 * The loader of include/xmppd/config.h is split by noun, all in src/core:
 *
 *   config.c         the top-level table and docs sections, the three load
 *                    stages (cfg_build), reference counts, publication, the
 *                    plain accessors
 *   config_listen.c  `listen` entries and a component listener's `hosts`;
 *                    stage 3 for listeners (references, duplicate addresses)
 *   config_acl.c     the ACL data: acl, access_rules, shaper_rules, shaper,
 *                    IP ranges and regular expressions; stage 3 for rules;
 *                    lookups by name.  Evaluation against JIDs is
 *                    src/xmpp/acl.c
 *   config_hosts.c   the HOST scope: its table, modules, host_config, the
 *                    effective scope of each host (stage 2), per-host lookups
 *
 * Each part exports here the tables the others refer to and its stage
 * functions; only those files include this header.  Every parse of these
 * tables runs in a context whose udata is the xd_config_t being built
 * (cfg_names gives its name preparation).
 */
#ifndef XMPPD_CORE_CONFIG_INT_H
#define XMPPD_CORE_CONFIG_INT_H

#include <stdbool.h>

#include "xmppd/config.h"

/* ---- config.c -------------------------------------------------------------------------------- */

extern const xd_opt_t cfg_global_opts[];

/* The name preparation of the load running in ctx. */
const xd_conf_names_t *cfg_names(const xd_opt_ctx_t *ctx);

/* The values of sql_type (the top-level table's, shared with host_config's sql_*). */
extern const xd_opt_enum_t cfg_sql_types[];

/* ---- config_listen.c ------------------------------------------------------------------------- */

extern const xd_opt_t cfg_listen_opts[];
extern const xd_opt_sub_t cfg_listen_sub;

/* Stage 3 for listeners: access rule and shaper references, duplicate addresses. */
void cfg_check_listen(xd_opt_ctx_t *ctx, const xd_config_t *cfg, const xd_conf_node_t *root);

/* ---- config_acl.c ---------------------------------------------------------------------------- */

/* The mapping form of a shaper: {rate: N, burst_size: M}. */
typedef struct cfg_shaper_form {
    int rate;       /* bytes per second */
    int burst_size; /* bytes; 0 = one second of rate */
} cfg_shaper_form_t;

extern const xd_opt_t cfg_acl_opts[];
extern const xd_opt_t cfg_shaper_opts[];
extern const xd_opt_custom_t cfg_domains_type;     /* a list of prepared, unique domains */
extern const xd_opt_custom_t cfg_hosts_type;       /* the same, but never a bare scalar */
extern const xd_opt_map_t cfg_acl_map;             /* acl */
extern const xd_opt_map_t cfg_access_map;          /* access_rules */
extern const xd_opt_map_t cfg_shaper_rules_map;    /* shaper_rules */
extern const xd_opt_map_t cfg_shapers_map;         /* shaper */

/* "all" and "none": the ACLs and access rules that are built in. */
bool cfg_builtin_acl(const char *name);

/* Whether `set` defines a rule called `name`. */
bool cfg_rule_defined(const xd_rule_set_t *set, const char *name);

/* The names stage 3 looks up, indexed once per load: the top-level ACLs and the shapers. */
typedef struct cfg_rules_index {
    xd_map_t global_acls; /* name → xd_acl_t */
    xd_map_t shapers;     /* name → xd_shaper_t */
} cfg_rules_index_t;

void cfg_rules_index_init(cfg_rules_index_t *ix, const xd_config_t *cfg);
void cfg_rules_index_free(cfg_rules_index_t *ix);

/* Stage 3 for one scope: ACL names in rules, shaper names in shaper rules. */
void cfg_check_rules(xd_opt_ctx_t *ctx, const cfg_rules_index_t *ix, const xd_host_conf_t *scope);

/* ---- config_hosts.c -------------------------------------------------------------------------- */

extern const xd_opt_t cfg_host_opts[];
extern const xd_opt_sub_t cfg_host_sub;
extern const xd_opt_map_t cfg_host_config_map;     /* host_config */

/* Stage 2: the effective HOST scope of every served host (cfg->hosts_conf). */
void cfg_hosts_parse(xd_opt_ctx_t *ctx, xd_config_t *cfg, const xd_conf_node_t *root);

/* Stage 3 for one scope: what its options require of each other. */
void cfg_check_host(xd_opt_ctx_t *ctx, const xd_config_t *cfg, const xd_host_conf_t *scope);

/* Frees cfg->hosts_conf. */
void cfg_hosts_free(xd_config_t *cfg);

/* Reload: a host's database (its sql_*) changed, or a new host names a
 * database no running host uses: "takes effect only at a restart". */
void cfg_check_reload_sql(xd_opt_ctx_t *ctx, const xd_config_t *running, const xd_config_t *cfg);

#endif

/*
 * config_hosts.c — the HOST scope of the configuration (include/xmppd/config.h): its
 * option table, `modules`, `host_config`, and the effective scope of each served host.
 *
 * Sits in src/core beside config.c (config_int.h).  The HOST-scope options
 * are parsed twice: once at the top level (xd_config_t.global, INLINE in the
 * global table) and, in stage 2, once per served host with its host_config
 * mapping first and the top level as fallback (xd_opt_parse_layered).
 * acl, access_rules, shaper_rules and modules are XD_OPT_MERGE: a host keeps
 * only its own entries and lookups fall back to the global scope through
 * `parent`.  host_config is a MAP whose keys are prepared with the load's
 * names and must be served hosts; its values stay raw until stage 2, but
 * their keys are checked at once (only HOST-scope options may appear).
 *
 * Invariants: after a load, hosts_conf has one scope per entry of hosts, in
 * the same order, each with `host` set and `parent` the global scope;
 * module options stay raw nodes (each module parses its own table).
 */
#include <string.h>

#include "core/config_int.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"

static int cfg_module_opts_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field);
static int cfg_host_opts_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field);
static void cfg_raw_map_free(void *field);
static int cfg_host_key(xd_opt_ctx_t *ctx, const xd_conf_node_t *key, char **out);
static void cfg_sql_parse(xd_opt_ctx_t *ctx, xd_config_t *cfg, const xd_conf_node_t *root);
static void cfg_sql_free(xd_sql_conf_t *q);
static const xd_conf_node_t *cfg_host_map(const xd_config_t *cfg, const char *host);

static int cfg_auth_methods_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field);
static void cfg_auth_methods_free(void *field);
static int cfg_ldap_uids_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field);
static void cfg_ldap_uids_free(void *field);

static const xd_opt_custom_t cfg_auth_methods_type = { "method or list of methods",
                                                       cfg_auth_methods_parse,
                                                       cfg_auth_methods_free };
static const xd_opt_custom_t cfg_ldap_uids_type = { "attribute, {attribute: format} or list",
                                                    cfg_ldap_uids_parse, cfg_ldap_uids_free };
static const xd_opt_custom_t cfg_module_opts_type = { "module options", cfg_module_opts_parse,
                                                      cfg_raw_map_free };
static const xd_opt_custom_t cfg_host_opts_type = { "host options", cfg_host_opts_parse,
                                                    cfg_raw_map_free };

/* ---- Tables ---------------------------------------------------------------------------------- */

static const xd_opt_enum_t cfg_auth_methods[] = {
    { "internal", XD_AUTH_INTERNAL },
    { "external", XD_AUTH_EXTERNAL },
    { "anonymous", XD_AUTH_ANONYMOUS },
    { "ldap", XD_AUTH_LDAP },
    { "pam", XD_AUTH_PAM },
    { NULL, 0 },
};

static const xd_opt_enum_t cfg_ldap_encrypts[] = {
    { "none", XD_LDAP_ENCRYPT_NONE },
    { "tls", XD_LDAP_ENCRYPT_TLS },
    { "starttls", XD_LDAP_ENCRYPT_STARTTLS },
    { NULL, 0 },
};

/* The values of LDAP_DEREF_NEVER, _SEARCHING, _FINDING, _ALWAYS (RFC 4511 4.5.1.3). */
static const xd_opt_enum_t cfg_ldap_derefs[] = {
    { "never", 0 },
    { "searching", 1 },
    { "finding", 2 },
    { "always", 3 },
    { NULL, 0 },
};

static const xd_opt_enum_t cfg_pam_userinfos[] = {
    { "username", XD_PAM_USERNAME },
    { "jid", XD_PAM_JID },
    { NULL, 0 },
};

static const xd_opt_enum_t cfg_resource_conflicts[] = {
    { "replace", XD_RESOURCE_REPLACE },
    { "refuse", XD_RESOURCE_REFUSE },
    { "rename", XD_RESOURCE_RENAME },
    { NULL, 0 },
};

static const xd_opt_map_t cfg_modules_map = {
    .type_name = "module options",
    .expected = "a mapping of module names to options",
    .noun = "module",
    .size = sizeof(xd_module_conf_t),
    .value = XD_OPT_MAP_VALUE(XD_OPT_TYPE_CUSTOM, offsetof(xd_module_conf_t, opts),
                              &cfg_module_opts_type),
};

const xd_opt_map_t cfg_host_config_map = {
    .type_name = "map of hosts to options",
    .expected = "a mapping of hosts to options",
    .noun = "host",
    .size = sizeof(xd_host_entry_t),
    .value = XD_OPT_MAP_VALUE(XD_OPT_TYPE_CUSTOM, offsetof(xd_host_entry_t, opts),
                              &cfg_host_opts_type),
    .key = cfg_host_key,
};

#define H_ xd_host_conf_t
#define HOST_ XD_OPT_HOST
const xd_opt_t cfg_host_opts[] = {
    XD_OPT_FULL("auth_method", XD_OPT_TYPE_CUSTOM, H_, auth_methods, "internal",
                &cfg_auth_methods_type,
                "How users authenticate: `internal` (SCRAM credentials in the database), "
                "`external` (`extauth_program`), `anonymous` (SASL ANONYMOUS), `ldap` "
                "(`ldap_*`) or `pam` (`pam_*`); or a list of them, tried in order (as "
                "ejabberd's): a password is accepted when one method accepts it, an account "
                "exists when one method knows it, and registration and password changes go "
                "to the first method that stores passwords (`internal`, `external`). "
                "SCRAM is offered only with `internal` alone; other lists get PLAIN.",
                HOST_, NULL),
    XD_OPT_FULL("extauth_program", XD_OPT_TYPE_PATH, H_, extauth_program, NULL, NULL,
                "Command line of the external authentication script (ejabberd's protocol: "
                "2-byte length-prefixed requests on stdin). Required with "
                "`auth_method: external`.",
                HOST_, NULL),
    XD_OPT_FULL("extauth_pool_size", XD_OPT_TYPE_INT, H_, extauth_pool_size, "1",
                (&(const xd_opt_range_t){ 1, 64 }), "Script processes per host.", HOST_, NULL),
    XD_OPT_FULL("extauth_timeout", XD_OPT_TYPE_DURATION, H_, extauth_timeout_ms, "10s", NULL,
                "How long the external script may take to answer one request; after that "
                "the request fails and the script is restarted.", HOST_, NULL),
    XD_OPT_FULL("ldap_servers", XD_OPT_TYPE_STRING_LIST, H_, ldap_servers, "[localhost]",
                NULL,
                "LDAP servers (names or addresses), tried in order: when one cannot be "
                "reached the next is used.", HOST_, NULL),
    XD_OPT_FULL("ldap_port", XD_OPT_TYPE_INT, H_, ldap_port, "0",
                (&(const xd_opt_range_t){ 0, 65535 }),
                "Port of the LDAP servers; 0: 389, or 636 with `ldap_encrypt: tls`.", HOST_,
                NULL),
    XD_OPT_FULL("ldap_encrypt", XD_OPT_TYPE_ENUM, H_, ldap_encrypt, "none", cfg_ldap_encrypts,
                "`none`, `tls` (LDAPS: TLS from the first byte) or `starttls` (the StartTLS "
                "operation on the plain port; a server that refuses it is an error).",
                HOST_, NULL),
    XD_OPT_FULL("ldap_tls_verify", XD_OPT_TYPE_BOOL, H_, ldap_tls_verify, "true", NULL,
                "Verify the LDAP server's certificate and name with `tls` and `starttls`.",
                HOST_, NULL),
    XD_OPT_FULL("ldap_tls_cacertfile", XD_OPT_TYPE_PATH, H_, ldap_tls_cacertfile, NULL, NULL,
                "CA certificates (PEM) the LDAP server's certificate is verified against; "
                "unset: the system's.", HOST_, NULL),
    XD_OPT_FULL("ldap_rootdn", XD_OPT_TYPE_STRING, H_, ldap_rootdn, NULL, NULL,
                "DN of the service bind that searches for users; unset: an anonymous bind.",
                HOST_, NULL),
    XD_OPT_FULL("ldap_password", XD_OPT_TYPE_STRING, H_, ldap_password, NULL, NULL,
                "Password of `ldap_rootdn`.", HOST_, NULL),
    XD_OPT_FULL("ldap_base", XD_OPT_TYPE_STRING, H_, ldap_base, NULL, NULL,
                "Search base of the users, e.g. `ou=people,dc=example,dc=org`. Required with "
                "`auth_method: ldap`.", HOST_, NULL),
    XD_OPT_FULL("ldap_uids", XD_OPT_TYPE_CUSTOM, H_, ldap_uids, "uid", &cfg_ldap_uids_type,
                "Attributes that hold the user name: `uid`, `{mail: \"%u@example.org\"}` "
                "(a format where `%u` is the user name) or a list of them; a user matches "
                "when any of them does.", HOST_, NULL),
    XD_OPT_FULL("ldap_filter", XD_OPT_TYPE_STRING, H_, ldap_filter, NULL, NULL,
                "An RFC 4515 filter every user must also match, e.g. "
                "`(memberOf=cn=xmpp,ou=groups,dc=example,dc=org)`; unset: none.", HOST_, NULL),
    XD_OPT_FULL("ldap_deref_aliases", XD_OPT_TYPE_ENUM, H_, ldap_deref_aliases, "never",
                cfg_ldap_derefs,
                "Alias dereferencing of the user search: `never`, `searching`, `finding` or "
                "`always`.", HOST_, NULL),
    XD_OPT_FULL("ldap_timeout", XD_OPT_TYPE_DURATION, H_, ldap_timeout_ms, "5s", NULL,
                "How long connecting to an LDAP server, and each LDAP operation, may take; "
                "then the next server is tried, or the login fails with "
                "`temporary-auth-failure`.", HOST_, NULL),
    XD_OPT_FULL("ldap_pool_size", XD_OPT_TYPE_INT, H_, ldap_pool_size, "4",
                (&(const xd_opt_range_t){ 1, 64 }),
                "LDAP connections kept open per host; more requests at once wait for one "
                "(up to `ldap_timeout`).", HOST_, NULL),
    XD_OPT_FULL("pam_service", XD_OPT_TYPE_STRING, H_, pam_service, "xmppd", NULL,
                "PAM service name for `auth_method: pam` (its rules are in /etc/pam.d/NAME).",
                HOST_, NULL),
    XD_OPT_FULL("pam_userinfotype", XD_OPT_TYPE_ENUM, H_, pam_userinfotype, "username",
                cfg_pam_userinfos,
                "What PAM gets as the user name: `username` (the JID's localpart) or `jid` "
                "(user@host).", HOST_, NULL),
    XD_OPT_FULL("pam_confdir", XD_OPT_TYPE_PATH, H_, pam_confdir, NULL, NULL,
                "Directory PAM reads the service file from instead of /etc/pam.d "
                "(pam_start_confdir; for tests and private setups).", HOST_, NULL),
    XD_OPT_FULL("resource_conflict", XD_OPT_TYPE_ENUM, H_, resource_conflict, "replace",
                cfg_resource_conflicts,
                "When a client binds a resource that is already online: `replace` closes the "
                "old session with a `conflict` stream error, `refuse` fails the new bind, "
                "`rename` gives the new session a server-generated resource.",
                HOST_, NULL),
    XD_OPT_FULL("allow_unencrypted_plain_auth", XD_OPT_TYPE_BOOL, H_,
                allow_unencrypted_plain_auth, "false", NULL,
                "Offer SASL PLAIN on streams without TLS. Leave off unless the network is "
                "trusted: the password crosses it in the clear.", HOST_, NULL),
    XD_OPT_FULL("max_auth_failures", XD_OPT_TYPE_INT, H_, max_auth_failures, "3",
                (&(const xd_opt_range_t){ 1, 10 }),
                "Failed SASL attempts on one stream before it is closed (RFC 6120 6.4.5).",
                HOST_, NULL),
    XD_OPT_FULL("auth_failure_delay", XD_OPT_TYPE_DURATION, H_, auth_failure_delay_ms, "1s",
                NULL, "Delay before a failed SASL attempt is answered, to slow password "
                "guessing.", HOST_, NULL),
    XD_OPT_FULL("disable_sasl_mechanisms", XD_OPT_TYPE_STRING_LIST, H_, disable_sasl_mechanisms,
                "[]", NULL,
                "SASL mechanisms never offered on this host, e.g. `[PLAIN]` or "
                "`[SCRAM-SHA-1, SCRAM-SHA-1-PLUS]` (case-insensitive).", HOST_, NULL),
    XD_OPT_FULL("sasl_tls13_tls_unique", XD_OPT_TYPE_BOOL, H_, sasl_tls13_tls_unique, "true",
                NULL,
                "Accept SCRAM-*-PLUS with the channel binding `tls-unique` on TLS 1.3 "
                "connections, where RFC 9266 leaves it undefined, computed as OpenSSL-based "
                "clients compute it (the Finished message). It is never advertised there "
                "(XEP-0440 lists `tls-exporter` and `tls-server-end-point`); it keeps clients "
                "that know no other binding (slixmpp before 1.8.5) on SCRAM with a binding "
                "instead of PLAIN. The `y` flag stays a downgrade either way; see "
                "docs/admin.md, \"Channel binding\".", HOST_, NULL),
    XD_OPT_FULL("sasl_authzid_access", XD_OPT_TYPE_STRING, H_, sasl_authzid_access, "none",
                NULL,
                "Access rule naming the users who may authenticate as themselves but act as "
                "another JID (a SASL authorization identity, RFC 6120 6.3.8). Everyone else "
                "gets `invalid-authzid` for an authzid that is not their own bare JID.",
                HOST_, NULL),
    XD_OPT_FULL("fast", XD_OPT_TYPE_BOOL, H_, fast, "true", NULL,
                "Offer FAST tokens (XEP-0484) inside SASL2 on TLS streams of hosts with "
                "`auth_method: internal`: a client that logged in once gets a token and logs in "
                "with it later in one round trip and without PBKDF2 (HT-SHA-256-* mechanisms). "
                "See docs/admin.md, \"SASL2, Bind2 and FAST\".", HOST_, NULL),
    XD_OPT_FULL("fast_token_ttl", XD_OPT_TYPE_DURATION, H_, fast_token_ttl_ms, "14d", NULL,
                "How long a FAST token stays valid. A token used in its second half is rotated: "
                "the login that uses it gets a new one.", HOST_, NULL),
    XD_OPT_FULL("max_user_sessions", XD_OPT_TYPE_INT, H_, max_user_sessions, "10",
                (&(const xd_opt_range_t){ 0, 100000 }),
                "Sessions one account may have at once, connected or parked for stream "
                "management resumption. A bind beyond it ends the account's other sessions "
                "with `conflict`, parked ones first, then the oldest (as ejabberd does). "
                "0: no limit.",
                HOST_, NULL),
    XD_OPT_FULL("stream_management", XD_OPT_TYPE_BOOL, H_, stream_management, "true", NULL,
                "Offer stream management (XEP-0198) on client streams: acknowledgements both "
                "ways, and resumption of a session whose connection broke (see `sm_resume_timeout`); "
                "what a client did not acknowledge when its session ends goes to its other "
                "sessions or to offline storage.",
                HOST_, NULL),
    XD_OPT_FULL("sm_max_unacked", XD_OPT_TYPE_INT, H_, sm_max_unacked, "5000",
                (&(const xd_opt_range_t){ 10, 1000000 }),
                "Stanzas sent to a client with stream management that it has not acknowledged; "
                "one more closes its stream with `policy-violation` (and they are routed again).",
                HOST_, NULL),
    XD_OPT_FULL("sm_ack_request_every", XD_OPT_TYPE_INT, H_, sm_ack_request_every, "5",
                (&(const xd_opt_range_t){ 0, 100000 }),
                "The server asks a client with stream management for an acknowledgement "
                "(`<r/>`) after this many stanzas sent since it last asked; 0 never asks.",
                HOST_, NULL),
    XD_OPT_FULL("sm_ack_request_interval", XD_OPT_TYPE_DURATION, H_,
                sm_ack_request_interval_ms, "30s", NULL,
                "The server asks a client with stream management for an acknowledgement at the "
                "latest this long after a stanza it has not asked about yet (0 never).",
                HOST_, NULL),
    XD_OPT_FULL("sm_resume_timeout", XD_OPT_TYPE_DURATION, H_, sm_resume_timeout_ms, "300s",
                NULL,
                "How long the session of a client with stream management resumption enabled "
                "(`<enable resume='true'/>`) is kept after its connection broke (closed without "
                "`</stream>`, or timed out), for the client to resume (XEP-0198 5). It stays "
                "available meanwhile and what is sent to it waits; at the end it goes to offline "
                "storage and unavailable presence is broadcast. 0 offers no resumption.",
                HOST_, NULL),
    XD_OPT_FULL("sm_max_resume_timeout", XD_OPT_TYPE_DURATION, H_, sm_max_resume_timeout_ms,
                "0", NULL,
                "The longest resume timeout a client may ask for with `max` on `<enable/>` "
                "(it may always ask for less); 0: the same as `sm_resume_timeout`.",
                HOST_, NULL),
    XD_OPT_FULL("sm_resume_location", XD_OPT_TYPE_STRING, H_, sm_resume_location, NULL, NULL,
                "`host:port` a client should reconnect to for resumption, sent as `location` "
                "in `<enabled/>` (XEP-0198 3); empty: none.",
                HOST_, NULL),
    XD_OPT_FULL("language", XD_OPT_TYPE_STRING, H_, language, "en", NULL,
                "Default language (`xml:lang`) of the server's own messages.", HOST_, NULL),
    XD_OPT_FULL("scram_iterations", XD_OPT_TYPE_INT, H_, scram_iterations, "4096",
                (&(const xd_opt_range_t){ 1024, 1000000 }),
                "PBKDF2 iterations for SCRAM credentials stored from now on.", HOST_, NULL),
    XD_OPT_FULL("acl", XD_OPT_TYPE_MAP, H_, acl, NULL, &cfg_acl_map,
                "Access control lists: `name: {user: [...], server: [...], ip: [...], ...}`; "
                "see [acl](#acl). `all` and `none` are built in.",
                HOST_ | XD_OPT_MERGE, NULL),
    XD_OPT_FULL("access_rules", XD_OPT_TYPE_MAP, H_, access_rules, NULL, &cfg_access_map,
                "Access rules: `name: [{deny: blocked}, {allow: all}]`; see "
                "[access_rules](#access_rules).",
                HOST_ | XD_OPT_MERGE, NULL),
    XD_OPT_FULL("shaper_rules", XD_OPT_TYPE_MAP, H_, shaper_rules, NULL, &cfg_shaper_rules_map,
                "Rules that pick a shaper (or a number) per user; see "
                "[shaper_rules](#shaper_rules).",
                HOST_ | XD_OPT_MERGE, NULL),
    XD_OPT_FULL("modules", XD_OPT_TYPE_MAP, H_, modules, NULL, &cfg_modules_map,
                "Modules to run and their options: `mod_name: {option: value}`; see "
                "[modules](#modules).",
                HOST_ | XD_OPT_MERGE, NULL),
    XD_OPT_END,
};
#undef H_
#undef HOST_

const xd_opt_sub_t cfg_host_sub = { cfg_host_opts, sizeof(xd_host_conf_t), NULL,
                                           "host_config" };

/* The sql_* options of a host_config entry, parsed into xd_host_conf_t.sql
 * with the top level as fallback.  The same names, types and defaults as
 * the top-level entries of config.c (which docs/configuration.md shows, marked
 * host); sql_database and sql_port get their computed defaults afterwards. */
#define S_ xd_sql_conf_t
static const xd_opt_t cfg_host_sql_opts[] = {
    XD_OPT_FULL("sql_type", XD_OPT_TYPE_ENUM, S_, type, "sqlite", cfg_sql_types,
                "See the top-level sql_type.", XD_OPT_RESTART, NULL),
    XD_OPT_FULL("sql_server", XD_OPT_TYPE_STRING, S_, server, "localhost", NULL,
                "See the top-level sql_server.", XD_OPT_RESTART, NULL),
    XD_OPT_FULL("sql_port", XD_OPT_TYPE_INT, S_, port, NULL,
                (&(const xd_opt_range_t){ 1, 65535 }), "See the top-level sql_port.",
                XD_OPT_RESTART, NULL),
    XD_OPT_FULL("sql_database", XD_OPT_TYPE_STRING, S_, database, NULL, NULL,
                "See the top-level sql_database.", XD_OPT_RESTART, NULL),
    XD_OPT_FULL("sql_username", XD_OPT_TYPE_STRING, S_, username, "xmppd", NULL,
                "See the top-level sql_username.", XD_OPT_RESTART, NULL),
    XD_OPT_FULL("sql_password", XD_OPT_TYPE_STRING, S_, password, "\"\"", NULL,
                "See the top-level sql_password.", XD_OPT_SECRET | XD_OPT_RESTART, NULL),
    XD_OPT_FULL("sql_pool_size", XD_OPT_TYPE_INT, S_, pool_size, "10",
                (&(const xd_opt_range_t){ 1, 1000 }), "See the top-level sql_pool_size.",
                XD_OPT_RESTART, NULL),
    XD_OPT_FULL("sql_ssl", XD_OPT_TYPE_STRING, S_, ssl, NULL, NULL,
                "See the top-level sql_ssl.", XD_OPT_RESTART, NULL),
    XD_OPT_FULL("sql_ssl_cafile", XD_OPT_TYPE_PATH, S_, ssl_cafile, NULL, NULL,
                "See the top-level sql_ssl_cafile.", XD_OPT_RESTART, NULL),
    XD_OPT_FULL("sql_fault_wait", XD_OPT_TYPE_DURATION, S_, fault_wait_ms, "5s", NULL,
                "See the top-level sql_fault_wait.", XD_OPT_RESTART, NULL),
    XD_OPT_END,
};
#undef S_

/* ---- modules and host_config: mappings kept raw ---------------------------------------------- */

/* A mapping of options kept as a node for a later parse (null: none). */
static int
cfg_raw_map(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, const char *expected, void *field)
{
    if (xd_conf_is_null(node))
        return 0;
    if (node->kind != XD_CONF_MAP) {
        xd_opt_error(ctx, node, "expected %s, got %s", expected, xd_conf_kind_name(node));
        return -1;
    }
    xd_conf_doc_ref(node->doc);
    *(const xd_conf_node_t **)field = node;
    return 0;
}

static void
cfg_raw_map_free(void *field)
{
    const xd_conf_node_t **n = field;
    if (*n)
        xd_conf_doc_unref((*n)->doc);
    *n = NULL;
}

static int
cfg_module_opts_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field)
{
    return cfg_raw_map(ctx, node, "a mapping of module options", field);
}

static const xd_opt_t *
cfg_find_opt(const xd_opt_t *table, const char *name)
{
    for (const xd_opt_t *o = table; o->name; o++)
        if (o->type != XD_OPT_TYPE_INLINE && strcmp(o->name, name) == 0)
            return o;
    return NULL;
}

/* A host's options: only those of the HOST scope may appear (stage 2 parses them). */
static int
cfg_host_opts_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field)
{
    if (cfg_raw_map(ctx, node, "a mapping of options", field) != 0)
        return -1;
    int rc = 0;
    for (size_t j = 0; node->kind == XD_CONF_MAP && j < node->count; j++) {
        const char *key = node->keys[j]->value;
        if (cfg_find_opt(cfg_host_opts, key) || cfg_find_opt(cfg_host_sql_opts, key))
            continue;
        xd_opt_push_key(ctx, key);
        if (cfg_find_opt(cfg_global_opts, key))
            xd_opt_error(ctx, node->keys[j], "option cannot be set per host (it is not marked "
                         "host in docs/configuration.md)");
        else
            xd_opt_error(ctx, node->keys[j], "unknown option");
        xd_opt_pop(ctx);
        rc = -1;
    }
    return rc;
}

/* A host_config key: a served host, prepared. */
static int
cfg_host_key(xd_opt_ctx_t *ctx, const xd_conf_node_t *key, char **out)
{
    const xd_config_t *cfg = xd_opt_ctx_udata(ctx);
    char *dom = NULL;
    if (cfg_names(ctx)->domain(xd_str_c(key->value), &dom) != 0 ||
        !xd_strlist_contains(&cfg->hosts, dom)) {
        xd_opt_error(ctx, key, "host \"%s\" is not listed in hosts", key->value);
        xd_free(dom);
        return -1;
    }
    *out = dom;
    return 0;
}

/* ---- sql_* per host -------------------------------------------------------------------------- */

static const char *const cfg_sql_type_names[] = { [XD_SQL_SQLITE] = "sqlite",
                                                  [XD_SQL_PGSQL] = "pgsql",
                                                  [XD_SQL_MYSQL] = "mysql",
                                                  [XD_SQL_ODBC] = "odbc" };

const char *
xd_sql_type_name(int type)
{
    return type >= 0 && type <= XD_SQL_ODBC ? cfg_sql_type_names[type] : "?";
}

static bool
cfg_str_eq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

bool
xd_sql_conf_same_db(const xd_sql_conf_t *a, const xd_sql_conf_t *b)
{
    if (a->type != b->type || !cfg_str_eq(a->database, b->database))
        return false;
    return a->type == XD_SQL_SQLITE || (cfg_str_eq(a->server, b->server) && a->port == b->port);
}

/* The first option of the pool's settings in which a and b (the same
 * database) differ, or NULL. */
static const char *
cfg_sql_conflict(const xd_sql_conf_t *a, const xd_sql_conf_t *b)
{
    if (a->pool_size != b->pool_size)
        return "sql_pool_size";
    if (a->fault_wait_ms != b->fault_wait_ms)
        return "sql_fault_wait";
    if (a->type == XD_SQL_SQLITE)
        return NULL;
    if (!cfg_str_eq(a->username, b->username))
        return "sql_username";
    if (!cfg_str_eq(a->password, b->password))
        return "sql_password";
    if (!cfg_str_eq(a->ssl, b->ssl))
        return "sql_ssl";
    if (!cfg_str_eq(a->ssl_cafile, b->ssl_cafile))
        return "sql_ssl_cafile";
    return NULL;
}

/* The computed defaults of sql_database and sql_port (as config.c's for the top level). */
static void
cfg_sql_defaults(xd_sql_conf_t *q, const char *data_dir)
{
    if (!q->database)
        q->database = q->type == XD_SQL_SQLITE
                          ? xd_asprintf("%s%sxmppd.db", data_dir,
                                        data_dir[0] && data_dir[strlen(data_dir) - 1] == '/'
                                            ? ""
                                            : "/")
                          : xd_strdup("xmppd");
    if (q->port == 0)
        q->port = q->type == XD_SQL_PGSQL ? 5432 : q->type == XD_SQL_MYSQL ? 3306 : 0;
}

static void
cfg_sql_copy_global(xd_sql_conf_t *q, const xd_config_t *cfg)
{
    *q = (xd_sql_conf_t){
        .type = cfg->sql_type,
        .server = cfg->sql_server ? xd_strdup(cfg->sql_server) : NULL,
        .port = cfg->sql_port,
        .database = cfg->sql_database ? xd_strdup(cfg->sql_database) : NULL,
        .username = cfg->sql_username ? xd_strdup(cfg->sql_username) : NULL,
        .password = cfg->sql_password ? xd_strdup(cfg->sql_password) : NULL,
        .pool_size = cfg->sql_pool_size,
        .ssl = cfg->sql_ssl ? xd_strdup(cfg->sql_ssl) : NULL,
        .ssl_cafile = cfg->sql_ssl_cafile ? xd_strdup(cfg->sql_ssl_cafile) : NULL,
        .fault_wait_ms = cfg->sql_fault_wait_ms,
    };
}

/* Whether host_config map `hm` sets any sql_* option; the first such key in *at. */
static bool
cfg_sql_own(const xd_conf_node_t *hm, const xd_conf_node_t **at)
{
    for (size_t j = 0; hm && hm->kind == XD_CONF_MAP && j < hm->count; j++)
        if (cfg_find_opt(cfg_host_sql_opts, hm->keys[j]->value)) {
            if (at)
                *at = hm->keys[j];
            return true;
        }
    return false;
}

/* Stage 2 for sql_*: the top level's settings, then each host's (its
 * host_config first, the top level as fallback); hosts that name the same
 * database must agree on its pool. */
static void
cfg_sql_parse(xd_opt_ctx_t *ctx, xd_config_t *cfg, const xd_conf_node_t *root)
{
    cfg_sql_copy_global(&cfg->global.sql, cfg);
    xd_opt_push_key(ctx, "host_config");
    for (size_t i = 0; i < cfg->hosts.count; i++) {
        xd_host_conf_t *h = &cfg->hosts_conf[i];
        const xd_conf_node_t *hm = cfg_host_map(cfg, cfg->hosts.items[i]);
        if (!cfg_sql_own(hm, NULL)) {
            cfg_sql_copy_global(&h->sql, cfg);
            continue;
        }
        xd_opt_push_key(ctx, cfg->hosts.items[i]);
        if (xd_opt_parse_layered(ctx, cfg_host_sql_opts, hm, root, &h->sql) == 0) {
            cfg_sql_defaults(&h->sql, cfg->data_dir);
            h->sql.own = true;
        }
        xd_opt_pop(ctx);
    }
    /* One pool per database: the hosts that share one agree on its settings. */
    for (size_t i = 0; i < cfg->hosts.count; i++) {
        const xd_sql_conf_t *a = &cfg->hosts_conf[i].sql;
        if (!a->own || !a->database)
            continue;
        const xd_sql_conf_t *b = &cfg->global.sql;
        const char *other = NULL, *what = NULL;
        if (xd_sql_conf_same_db(a, b) && (what = cfg_sql_conflict(a, b)))
            other = "the top level";
        for (size_t k = 0; k < i && !what; k++) {
            b = &cfg->hosts_conf[k].sql;
            if (b->database && xd_sql_conf_same_db(a, b) && (what = cfg_sql_conflict(a, b)))
                other = cfg->hosts.items[k];
        }
        if (!what)
            continue;
        const xd_conf_node_t *hm = cfg_host_map(cfg, cfg->hosts.items[i]);
        const xd_conf_node_t *at = xd_conf_map_get(hm, what);
        if (!at)
            cfg_sql_own(hm, &at);
        xd_opt_push_key(ctx, cfg->hosts.items[i]);
        xd_opt_push_key(ctx, at == xd_conf_map_get(hm, what) ? what : at->value);
        xd_opt_error(ctx, at,
                     "names the same database as %s (%s %s) with another %s: hosts that "
                     "share a database share its one pool; give them the same settings",
                     other, xd_sql_type_name(a->type), a->database, what);
        xd_opt_pop(ctx);
        xd_opt_pop(ctx);
    }
    xd_opt_pop(ctx);
}

static void
cfg_sql_free(xd_sql_conf_t *q)
{
    xd_opt_free(cfg_host_sql_opts, q);
    memset(q, 0, sizeof *q);
}

const xd_sql_conf_t *
xd_config_sql(const xd_config_t *cfg, const char *host)
{
    if (!host)
        return &cfg->global.sql;
    const xd_host_conf_t *h = xd_config_host(cfg, host);
    return h ? &h->sql : NULL;
}

void
cfg_check_reload_sql(xd_opt_ctx_t *ctx, const xd_config_t *running, const xd_config_t *cfg)
{
    xd_opt_push_key(ctx, "host_config");
    for (size_t i = 0; i < cfg->hosts.count; i++) {
        const char *host = cfg->hosts.items[i];
        const xd_sql_conf_t *now = &cfg->hosts_conf[i].sql;
        const xd_sql_conf_t *was = xd_config_sql(running, host);
        const xd_conf_node_t *hm = cfg_host_map(cfg, host);
        xd_opt_push_key(ctx, host);
        if (was) {
            /* A host without sql_* of its own in either follows the top
             * level, whose changes xd_config_check_reload reports. */
            if (was->own || now->own)
                xd_opt_diff(ctx, cfg_host_sql_opts, was, now, hm, XD_OPT_RESTART,
                            "takes effect only at a restart");
        } else {
            bool open = false;
            for (size_t k = 0; k < running->hosts.count && !open; k++)
                open = xd_sql_conf_same_db(&running->hosts_conf[k].sql, now) &&
                       !cfg_sql_conflict(&running->hosts_conf[k].sql, now);
            if (!open) {
                const xd_conf_node_t *at = NULL;
                cfg_sql_own(hm, &at);
                xd_opt_error(ctx, at ? at : cfg->doc ? xd_conf_doc_root(cfg->doc) : NULL,
                             "new host %s names a database no running host uses (%s %s): "
                             "takes effect only at a restart",
                             host, xd_sql_type_name(now->type), now->database);
            }
        }
        xd_opt_pop(ctx);
    }
    xd_opt_pop(ctx);
}

/* ---- Host scopes ----------------------------------------------------------------------------- */

/* The host_config mapping of `host` (a normalised served host), or NULL. */
static const xd_conf_node_t *
cfg_host_map(const xd_config_t *cfg, const char *host)
{
    uintptr_t i = host ? (uintptr_t)xd_map_get(&cfg->host_config_index, xd_str_c(host)) : 0;
    return i ? cfg->host_config.items[i - 1].opts : NULL;
}

/* Stage 2: one effective host scope per served host, its host_config
 * options first and the top level as fallback. */
void
cfg_hosts_parse(xd_opt_ctx_t *ctx, xd_config_t *cfg, const xd_conf_node_t *root)
{
    cfg->hosts_conf = xd_calloc(cfg->hosts.count, sizeof *cfg->hosts_conf);
    for (size_t i = 0; i < cfg->host_config.count; i++)
        xd_map_put(&cfg->host_config_index, xd_str_c(cfg->host_config.items[i].host),
                   (void *)(uintptr_t)(i + 1));
    xd_opt_push_key(ctx, "host_config");
    for (size_t i = 0; i < cfg->hosts.count; i++) {
        xd_host_conf_t *h = &cfg->hosts_conf[i];
        xd_opt_push_key(ctx, cfg->hosts.items[i]);
        xd_opt_parse_layered(ctx, cfg_host_opts, cfg_host_map(cfg, cfg->hosts.items[i]), root, h);
        h->host = xd_strdup(cfg->hosts.items[i]);
        h->parent = &cfg->global;
        xd_opt_pop(ctx);
    }
    xd_opt_pop(ctx);
    cfg_sql_parse(ctx, cfg, root);
}

static void
cfg_host_free(xd_host_conf_t *h)
{
    cfg_sql_free(&h->sql);
    xd_opt_free(cfg_host_opts, h);
    xd_free(h->host);
    h->host = NULL;
}

void
cfg_hosts_free(xd_config_t *cfg)
{
    cfg_sql_free(&cfg->global.sql);
    if (!cfg->hosts_conf)
        return;
    for (size_t i = 0; i < cfg->hosts.count; i++)
        cfg_host_free(&cfg->hosts_conf[i]);
    xd_free(cfg->hosts_conf);
    cfg->hosts_conf = NULL;
}

/* External authentication needs a program.  A host that sets neither
 * auth_method nor extauth_program inherits the top level's problem, which is
 * reported once, at the top. */
void
cfg_check_host(xd_opt_ctx_t *ctx, const xd_config_t *cfg, const xd_host_conf_t *scope)
{
    const xd_conf_node_t *hm = cfg_host_map(cfg, scope->host);
    bool own = !scope->host || xd_conf_map_get(hm, "auth_method") ||
               xd_conf_map_get(hm, "extauth_program");
    bool ext = false, ldap = false;
    for (size_t i = 0; i < scope->auth_methods.count; i++) {
        ext |= scope->auth_methods.items[i] == XD_AUTH_EXTERNAL;
        ldap |= scope->auth_methods.items[i] == XD_AUTH_LDAP;
    }
    own = own || xd_conf_map_get(hm, "ldap_base");
    if (own && ldap && (!scope->ldap_base || !*scope->ldap_base)) {
        const xd_conf_node_t *at = xd_conf_map_get(hm, "auth_method");
        if (!at && cfg->doc)
            at = xd_conf_map_get(xd_conf_doc_root(cfg->doc), "auth_method");
        xd_opt_push_key(ctx, "auth_method");
        xd_opt_error(ctx, at, "LDAP authentication needs ldap_base%s%s",
                     scope->host ? " for host " : "", scope->host ? scope->host : "");
        xd_opt_pop(ctx);
    }
    if (own && ext && !scope->extauth_program) {
        const xd_conf_node_t *at = xd_conf_map_get(hm, "auth_method");
        if (!at && cfg->doc)
            at = xd_conf_map_get(xd_conf_doc_root(cfg->doc), "auth_method");
        xd_opt_push_key(ctx, "auth_method");
        xd_opt_error(ctx, at, "external authentication needs extauth_program%s%s",
                     scope->host ? " for host " : "", scope->host ? scope->host : "");
        xd_opt_pop(ctx);
    }
}

/* ---- auth_method and ldap_uids ------------------------------------------------------------ */

static int
cfg_auth_method_one(xd_opt_ctx_t *ctx, const xd_conf_node_t *it, const char *s, void *arg)
{
    xd_auth_methods_t *m = arg;
    int v = -1;
    for (const xd_opt_enum_t *e = cfg_auth_methods; e->name; e++)
        if (strcmp(e->name, s) == 0)
            v = e->value;
    if (v < 0) {
        xd_opt_error(ctx, it,
                     "unknown authentication method \"%s\" (expected internal, external, "
                     "anonymous, ldap or pam)", s);
        return -1;
    }
    for (size_t i = 0; i < m->count; i++)
        if (m->items[i] == v) {
            xd_opt_error(ctx, it, "authentication method \"%s\" is listed twice", s);
            return -1;
        }
    XD_ASSERT(m->count < XD_AUTH_METHODS_MAX); /* five methods, none twice */
    m->items[m->count++] = v;
    return 0;
}

static int
cfg_auth_methods_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field)
{
    xd_auth_methods_t m = { .count = 0 };
    if (xd_opt_each_string(ctx, node, "a method or a list of methods", cfg_auth_method_one,
                           &m) != 0)
        return -1;
    if (m.count == 0) {
        xd_opt_error(ctx, node, "at least one authentication method is needed");
        return -1;
    }
    *(xd_auth_methods_t *)field = m;
    return 0;
}

static void
cfg_auth_methods_free(void *field)
{
    memset(field, 0, sizeof(xd_auth_methods_t));
}

static void
cfg_ldap_uids_free(void *field)
{
    xd_ldap_uids_t *u = field;
    for (size_t i = 0; i < u->count; i++) {
        xd_free(u->attrs[i]);
        xd_free(u->formats[i]);
    }
    xd_free(u->attrs);
    xd_free(u->formats);
    memset(u, 0, sizeof *u);
}

/* An LDAP attribute description: a letter, then letters, digits and '-'
 * (RFC 4512 1.4 descr), or a numeric OID. */
static bool
cfg_ldap_attr_ok(const char *a)
{
    if (!*a)
        return false;
    for (const char *p = a; *p; p++) {
        bool alnum = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                     (*p >= '0' && *p <= '9');
        if (!alnum && *p != '-' && *p != '.' && *p != ';')
            return false;
    }
    return true;
}

static int
cfg_ldap_uid_add(xd_opt_ctx_t *ctx, const xd_conf_node_t *at, xd_ldap_uids_t *u,
                 const char *attr, const char *fmt)
{
    if (!cfg_ldap_attr_ok(attr)) {
        xd_opt_error(ctx, at, "\"%s\" is not an LDAP attribute name", attr);
        return -1;
    }
    const char *pct = strstr(fmt, "%u");
    if (!pct || strstr(pct + 2, "%u")) {
        xd_opt_error(ctx, at, "the format of \"%s\" must hold %%u exactly once", attr);
        return -1;
    }
    u->attrs = xd_realloc(u->attrs, (u->count + 1) * sizeof *u->attrs);
    u->formats = xd_realloc(u->formats, (u->count + 1) * sizeof *u->formats);
    u->attrs[u->count] = xd_strdup(attr);
    u->formats[u->count] = xd_strdup(fmt);
    u->count++;
    return 0;
}

/* One item: "attr" or {attr: format, …}. */
static int
cfg_ldap_uid_item(xd_opt_ctx_t *ctx, const xd_conf_node_t *it, xd_ldap_uids_t *u)
{
    if (it->kind == XD_CONF_SCALAR)
        return cfg_ldap_uid_add(ctx, it, u, it->value, "%u");
    if (it->kind != XD_CONF_MAP) {
        xd_opt_error(ctx, it, "expected an attribute or {attribute: format}, got %s",
                     xd_conf_kind_name(it));
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < it->count; i++) {
        const xd_conf_node_t *v = it->items[i];
        if (v->kind != XD_CONF_SCALAR) {
            xd_opt_error(ctx, v, "expected a format string, got %s", xd_conf_kind_name(v));
            rc = -1;
            continue;
        }
        if (cfg_ldap_uid_add(ctx, it->keys[i], u, it->keys[i]->value, v->value) != 0)
            rc = -1;
    }
    return rc;
}

static int
cfg_ldap_uids_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field)
{
    xd_ldap_uids_t u = { 0 };
    int rc = 0;
    if (node->kind == XD_CONF_SEQ) {
        for (size_t i = 0; i < node->count; i++) {
            xd_opt_push_index(ctx, i);
            if (cfg_ldap_uid_item(ctx, node->items[i], &u) != 0)
                rc = -1;
            xd_opt_pop(ctx);
        }
    } else {
        rc = cfg_ldap_uid_item(ctx, node, &u);
    }
    if (rc == 0 && u.count == 0) {
        xd_opt_error(ctx, node, "at least one attribute is needed");
        rc = -1;
    }
    if (rc != 0) {
        cfg_ldap_uids_free(&u);
        return -1;
    }
    *(xd_ldap_uids_t *)field = u;
    return 0;
}

/* ---- Lookups --------------------------------------------------------------------------------- */

const xd_host_conf_t *
xd_config_host(const xd_config_t *cfg, const char *host)
{
    if (!host || !cfg->hosts_conf)
        return NULL;
    uintptr_t i = (uintptr_t)xd_map_get(&cfg->host_index, xd_str_c(host));
    return i ? &cfg->hosts_conf[i - 1] : NULL;
}

const xd_module_conf_t *
xd_config_module(const xd_config_t *cfg, const char *host, const char *name)
{
    const xd_host_conf_t *scope = host ? xd_config_host(cfg, host) : &cfg->global;
    if (!scope)
        return NULL; /* not a served host: no module runs for it */
    for (; scope; scope = scope->parent)
        for (size_t i = 0; i < scope->modules.count; i++)
            if (strcmp(scope->modules.items[i].name, name) == 0)
                return &scope->modules.items[i];
    return NULL;
}

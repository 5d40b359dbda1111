/*
 * config.c — the server's option tables and the xd_config_t object (include/xmppd/config.h).
 *
 * Sits in src/core above opt.c and yaml.c.  Loading is three stages over one
 * error context, so one run reports every problem it can see:
 *
 *   1. xd_opt_parse_in(global table, root): every top-level option, its
 *      defaults, the listen entries (with their own table and check hook),
 *      and the mappings of names acl / access_rules / shaper / shaper_rules /
 *      modules / host_config / listen.hosts (MAP options: one generic parser,
 *      each with a value type and, for domains, a key preparation);
 *   2. computed defaults (ctl_socket, module_dir, sql_database, sql_port) and host_config:
 *      for each served host the HOST-scope table is parsed again with the
 *      host's mapping first and the top level as fallback;
 *   3. cross references: ACL names in rules, shaper names in shaper rules and
 *      listeners, access rule names in listeners, duplicate listen addresses.
 *
 * Names (hosts, ACL users and servers, host_config and component domains)
 * are prepared by the xd_conf_names_t the loader is given: the parse
 * context's udata is the config being built, and the custom types below
 * find its names there (cfg_names): core knows no JIDs.
 * Evaluating ACLs and rules is src/xmpp/acl.c.
 *
 * Invariants: a loaded config is immutable; it holds a reference on its YAML
 * document, so the nodes kept in it (module options, rule locations) stay
 * valid as long as the config; the published pointer is only swapped by
 * xd_config_publish and read by xd_config_get (see cfg_readers).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/config.h"
#include "xmppd/err.h"
#include "xmppd/log.h"
#include "xd_version.h"

/* Default module_dir: the build may set XD_MODULE_DIR (<prefix>/lib/xmppd/modules). */
#ifdef XD_MODULE_DIR
#define CFG_MODULE_DIR XD_MODULE_DIR
#else
#define CFG_MODULE_DIR "/usr/local/lib/xmppd/modules"
#endif

/* ---- Custom types: declarations -------------------------------------------------------------- */

static int cfg_users_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field);
static int cfg_domains_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field);
static void cfg_strlist_free(void *field);
static int cfg_cidrs_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field);
static void cfg_cidrs_free(void *field);
static int cfg_regexps_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field);
static void cfg_regexps_free(void *field);
static int cfg_access_clauses_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field);
static int cfg_shaper_clauses_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field);
static void cfg_clauses_free(void *field);
static int cfg_shaper_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field);
static void cfg_shaper_free(void *field);
static int cfg_module_opts_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field);
static int cfg_host_opts_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field);
static void cfg_raw_map_free(void *field);
static int cfg_domain_key(xd_opt_ctx_t *ctx, const xd_conf_node_t *key, char **out);
static int cfg_host_key(xd_opt_ctx_t *ctx, const xd_conf_node_t *key, char **out);
static int cfg_component_host_check(xd_opt_ctx_t *ctx, const xd_conf_node_t *map, void *conf);
static int cfg_listen_check(xd_opt_ctx_t *ctx, const xd_conf_node_t *map, void *conf);

static const xd_opt_custom_t cfg_users_type = { "list of users", cfg_users_parse,
                                                cfg_strlist_free };
static const xd_opt_custom_t cfg_domains_type = { "list of domains", cfg_domains_parse,
                                                  cfg_strlist_free };
static const xd_opt_custom_t cfg_cidrs_type = { "list of IP ranges", cfg_cidrs_parse,
                                                cfg_cidrs_free };
static const xd_opt_custom_t cfg_regexps_type = { "list of regular expressions",
                                                  cfg_regexps_parse, cfg_regexps_free };
static const xd_opt_custom_t cfg_access_clauses_type = { "access clauses",
                                                         cfg_access_clauses_parse,
                                                         cfg_clauses_free };
static const xd_opt_custom_t cfg_shaper_clauses_type = { "shaper clauses",
                                                         cfg_shaper_clauses_parse,
                                                         cfg_clauses_free };
static const xd_opt_custom_t cfg_shaper_type = { "shaper", cfg_shaper_parse, cfg_shaper_free };
static const xd_opt_custom_t cfg_module_opts_type = { "module options", cfg_module_opts_parse,
                                                      cfg_raw_map_free };
static const xd_opt_custom_t cfg_host_opts_type = { "host options", cfg_host_opts_parse,
                                                    cfg_raw_map_free };

/* The ACL and access rule names that are built in. */
static const char *const cfg_builtin_names[] = { "all", "none", NULL };

/* ---- Tables ---------------------------------------------------------------------------------- */

static const xd_opt_enum_t cfg_listen_modules[] = {
    { "c2s", XD_LISTEN_MOD_C2S },
    { "s2s", XD_LISTEN_MOD_S2S },
    { "component", XD_LISTEN_MOD_COMPONENT },
    { "http", XD_LISTEN_MOD_HTTP },
    { "ejabberd_c2s", XD_LISTEN_MOD_C2S },
    { "ejabberd_s2s_in", XD_LISTEN_MOD_S2S },
    { "ejabberd_service", XD_LISTEN_MOD_COMPONENT },
    { "ejabberd_http", XD_LISTEN_MOD_HTTP },
    { NULL, 0 },
};

static const xd_opt_enum_t cfg_auth_methods[] = {
    { "internal", XD_AUTH_INTERNAL },
    { "external", XD_AUTH_EXTERNAL },
    { "anonymous", XD_AUTH_ANONYMOUS },
    { NULL, 0 },
};

static const xd_opt_enum_t cfg_resource_conflicts[] = {
    { "replace", XD_RESOURCE_REPLACE },
    { "refuse", XD_RESOURCE_REFUSE },
    { "rename", XD_RESOURCE_RENAME },
    { NULL, 0 },
};

static const xd_opt_enum_t cfg_tls_versions[] = {
    { "1.2", 12 },
    { "1.3", 13 },
    { NULL, 0 },
};

static const xd_opt_enum_t cfg_sql_types[] = {
    { "sqlite", XD_SQL_SQLITE },
    { "pgsql", XD_SQL_PGSQL },
    { "mysql", XD_SQL_MYSQL },
    { "odbc", XD_SQL_ODBC },
    { NULL, 0 },
};

static const xd_opt_enum_t cfg_db_types[] = {
    { "sql", XD_DEFAULT_DB_SQL },
    { NULL, 0 },
};

static const xd_opt_t cfg_component_host_opts[] = {
    XD_OPT_FULL("password", XD_OPT_TYPE_STRING, xd_component_host_t, password, NULL, NULL,
                "The component's shared secret (XEP-0114).", XD_OPT_REQUIRED | XD_OPT_SECRET,
                NULL),
    XD_OPT_END,
};

static const xd_opt_sub_t cfg_component_host_sub = {
    cfg_component_host_opts, sizeof(xd_component_host_t), cfg_component_host_check,
    "component hosts"
};

static const xd_opt_map_t cfg_component_hosts_map = {
    .type_name = "map of domains to {password}",
    .expected = "a mapping {domain: {password: secret}}",
    .noun = "domain",
    .size = sizeof(xd_component_host_t),
    .value = XD_OPT_MAP_VALUE(XD_OPT_TYPE_SUB, 0, &cfg_component_host_sub),
    .key = cfg_domain_key,
};

#define L_ xd_listen_conf_t
static const xd_opt_t cfg_listen_opts[] = {
    XD_OPT_FULL("port", XD_OPT_TYPE_INT, L_, port, NULL,
                (&(const xd_opt_range_t){ 1, 65535 }), "TCP port to listen on.",
                XD_OPT_REQUIRED, NULL),
    XD_OPT_STRING("ip", L_, ip, "\"::\"",
                  "Address to bind. `::` means every IPv4 and IPv6 address (dual-stack); "
                  "`0.0.0.0` every IPv4 address."),
    XD_OPT_ENUM("module", L_, module, "c2s", cfg_listen_modules,
                "What runs on accepted connections: client streams (`c2s`), server streams "
                "(`s2s`), external components (`component`, XEP-0114) or HTTP. The ejabberd "
                "names `ejabberd_c2s`, `ejabberd_s2s_in`, `ejabberd_service` and "
                "`ejabberd_http` are accepted as aliases."),
    XD_OPT_BOOL("starttls", L_, starttls, "true", "Offer STARTTLS (RFC 6120 5)."),
    XD_OPT_BOOL("starttls_required", L_, starttls_required, "true",
                "Refuse authentication and stanzas before TLS is negotiated."),
    XD_OPT_BOOL("tls", L_, tls, "false",
                "Direct TLS: the TLS handshake starts as soon as the client connects "
                "(XEP-0368, usually port 5223)."),
    XD_OPT_BOOL("tls_verify", L_, tls_verify, "false",
                "c2s: ask clients for a certificate during the TLS handshake (never required) "
                "and offer SASL EXTERNAL (XEP-0178) to those whose certificate verifies against "
                "the trust store (`ca_file`/`ca_path`) and names an account in an XmppAddr."),
    XD_OPT_FULL("max_stanza_size", XD_OPT_TYPE_SIZE, L_, max_stanza_size, NULL, NULL,
                "Largest stanza accepted, enforced while parsing; a bigger one closes the "
                "stream with `policy-violation`.",
                0, "64KB (c2s, http), 128KB (s2s, component)"),
    XD_OPT_STRING("shaper", L_, shaper, "none",
                  "Traffic shaper for each connection: a name under `shaper`, a rule under "
                  "`shaper_rules`, or `none`."),
    XD_OPT_STRING("access", L_, access, "all",
                  "Access rule that decides who may use this listener (c2s: which users may "
                  "log in). `all` allows everyone."),
    XD_OPT_INT("backlog", L_, backlog, "1024", 1, 65535, "Length of the listen(2) queue."),
    XD_OPT_INT("max_connections", L_, max_connections, "100000", 1, 10000000,
               "Open connections on this listener, all workers together; more are closed "
               "at once."),
    XD_OPT_FULL("password", XD_OPT_TYPE_STRING, L_, password, NULL, NULL,
                "Component listeners: the shared secret of XEP-0114 for every component "
                "that connects here.",
                XD_OPT_SECRET, NULL),
    XD_OPT_MAP("hosts", L_, hosts, NULL, &cfg_component_hosts_map,
               "Component listeners: `{domain: {password: secret}}` per component domain, "
               "as in ejabberd."),
    XD_OPT_DURATION("handshake_timeout", L_, handshake_timeout_ms, "30s",
                    "Time allowed from connect until the stream is authenticated."),
    XD_OPT_DURATION("idle_timeout", L_, idle_timeout_ms, "0",
                    "Close a connection that sent nothing for this long; 0 never does."),
    XD_OPT_END,
};
#undef L_

static const xd_opt_sub_t cfg_listen_sub = { cfg_listen_opts, sizeof(xd_listen_conf_t),
                                             cfg_listen_check, "listen entries" };

#define A_ xd_acl_t
static const xd_opt_t cfg_acl_opts[] = {
    XD_OPT_CUSTOM("user", A_, user, NULL, &cfg_users_type,
                  "Users: `name@domain`, or a bare `name` meaning that user on whichever host "
                  "the rule is evaluated for."),
    XD_OPT_CUSTOM("server", A_, server, NULL, &cfg_domains_type, "Every user of these domains."),
    XD_OPT_STRING_LIST("resource", A_, resource, NULL, "Full JIDs with this resource."),
    XD_OPT_CUSTOM("ip", A_, ip, NULL, &cfg_cidrs_type,
                  "Source addresses: `127.0.0.0/8`, `::1/128`, or a bare address."),
    XD_OPT_CUSTOM("user_regexp", A_, user_regexp, NULL, &cfg_regexps_type,
                  "POSIX extended regular expressions matched against the localpart of users "
                  "of the host the rule is evaluated for (`\"\"` matches every local user)."),
    XD_OPT_CUSTOM("server_regexp", A_, server_regexp, NULL, &cfg_regexps_type,
                  "Regular expressions matched against the domain."),
    XD_OPT_CUSTOM("resource_regexp", A_, resource_regexp, NULL, &cfg_regexps_type,
                  "Regular expressions matched against the resource."),
    XD_OPT_END,
};
#undef A_

static const xd_opt_sub_t cfg_acl_sub = { cfg_acl_opts, sizeof(xd_acl_t), NULL, "acl" };

static const xd_opt_map_t cfg_acl_map = {
    .type_name = "ACL definitions",
    .expected = "a mapping of ACL names to definitions",
    .noun = "ACL",
    .size = sizeof(xd_acl_t),
    .value = XD_OPT_MAP_VALUE(XD_OPT_TYPE_SUB, 0, &cfg_acl_sub),
    .reserved = cfg_builtin_names,
};

static const xd_opt_map_t cfg_access_map = {
    .type_name = "access rules",
    .expected = "a mapping of access rule names to clauses",
    .noun = "access rule",
    .size = sizeof(xd_rule_t),
    .value = XD_OPT_MAP_VALUE(XD_OPT_TYPE_CUSTOM, 0, &cfg_access_clauses_type),
    .reserved = cfg_builtin_names,
};

static const xd_opt_map_t cfg_shaper_rules_map = {
    .type_name = "shaper rules",
    .expected = "a mapping of shaper rule names to clauses",
    .noun = "shaper rule",
    .size = sizeof(xd_rule_t),
    .value = XD_OPT_MAP_VALUE(XD_OPT_TYPE_CUSTOM, 0, &cfg_shaper_clauses_type),
};

static const xd_opt_map_t cfg_modules_map = {
    .type_name = "module options",
    .expected = "a mapping of module names to options",
    .noun = "module",
    .size = sizeof(xd_module_conf_t),
    .value = XD_OPT_MAP_VALUE(XD_OPT_TYPE_CUSTOM, offsetof(xd_module_conf_t, opts),
                              &cfg_module_opts_type),
};

static const xd_opt_map_t cfg_shapers_map = {
    .type_name = "shaper definitions",
    .expected = "a mapping of shaper names to rates",
    .noun = "shaper",
    .size = sizeof(xd_shaper_t),
    .value = XD_OPT_MAP_VALUE(XD_OPT_TYPE_CUSTOM, 0, &cfg_shaper_type),
};

static const xd_opt_map_t cfg_host_config_map = {
    .type_name = "map of hosts to options",
    .expected = "a mapping of hosts to options",
    .noun = "host",
    .size = sizeof(xd_host_entry_t),
    .value = XD_OPT_MAP_VALUE(XD_OPT_TYPE_CUSTOM, offsetof(xd_host_entry_t, opts),
                              &cfg_host_opts_type),
    .key = cfg_host_key,
};

/* MAP fields are read through xd_optmap_t: the typed sets must share its layout. */
#define CFG_MAP_LAYOUT(T)                                                                  \
    _Static_assert(sizeof(T) == sizeof(xd_optmap_t) &&                                     \
                       offsetof(T, items) == offsetof(xd_optmap_t, items) &&               \
                       offsetof(T, count) == offsetof(xd_optmap_t, count),                 \
                   #T " is not shaped as xd_optmap_t")
CFG_MAP_LAYOUT(xd_acl_set_t);
CFG_MAP_LAYOUT(xd_rule_set_t);
CFG_MAP_LAYOUT(xd_shaper_set_t);
CFG_MAP_LAYOUT(xd_module_set_t);
CFG_MAP_LAYOUT(xd_host_entry_set_t);
CFG_MAP_LAYOUT(xd_component_host_set_t);

/* The mapping form of a shaper: {rate: N, burst_size: M}. */
typedef struct cfg_shaper_form {
    int rate;       /* bytes per second */
    int burst_size; /* bytes; 0 = one second of rate */
} cfg_shaper_form_t;

static const xd_opt_t cfg_shaper_opts[] = {
    XD_OPT_FULL("rate", XD_OPT_TYPE_INT, cfg_shaper_form_t, rate, NULL,
                (&(const xd_opt_range_t){ 1, 1000000000 }),
                "Sustained rate in bytes per second. `name: N` is short for `name: {rate: N}`.",
                XD_OPT_REQUIRED, NULL),
    XD_OPT_INT("burst_size", cfg_shaper_form_t, burst_size, "0", 0, 1000000000,
               "Bytes that may arrive at once after a quiet period; 0 means one second of "
               "`rate`."),
    XD_OPT_END,
};

#define H_ xd_host_conf_t
#define HOST_ XD_OPT_HOST
static const xd_opt_t cfg_host_opts[] = {
    XD_OPT_FULL("auth_method", XD_OPT_TYPE_ENUM, H_, auth_method, "internal", cfg_auth_methods,
                "How users authenticate: `internal` (SCRAM credentials in the database), "
                "`external` (`extauth_program`) or `anonymous` (SASL ANONYMOUS).",
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
    XD_OPT_FULL("sasl_authzid_access", XD_OPT_TYPE_STRING, H_, sasl_authzid_access, "none",
                NULL,
                "Access rule naming the users who may authenticate as themselves but act as "
                "another JID (a SASL authorization identity, RFC 6120 6.3.8). Everyone else "
                "gets `invalid-authzid` for an authzid that is not their own bare JID.",
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

static const xd_opt_sub_t cfg_host_sub = { cfg_host_opts, sizeof(xd_host_conf_t), NULL,
                                           "host_config" };

#define C_ xd_config_t
static const xd_opt_t cfg_global_opts[] = {
    XD_OPT_CUSTOM("hosts", C_, hosts, "[localhost]", &cfg_domains_type,
                  "The domains this server serves (virtual hosts), normalised (IDNA); "
                  "at least one."),
    XD_OPT_LOGLEVEL("loglevel", C_, loglevel, "info",
                    "Least severe level logged: `none`, `critical`, `error`, `warning`, "
                    "`notice`, `info` or `debug`."),
    XD_OPT_PATH("log_file", C_, log_file, "\"-\"",
                "File the log is appended to, reopened on SIGHUP; `-` is standard error."),
    XD_OPT_WORKERS("workers", C_, workers, "auto",
                   "Worker threads, each with its own event loop; `auto` is one per CPU core "
                   "(at most 256)."),
    XD_OPT_PATH("data_dir", C_, data_dir, "./var",
                "Directory for the SQLite database, the self-signed certificate and the "
                "control socket."),
    XD_OPT_INT("pool_threads", C_, pool_threads, "8", 1, 1024,
               "Threads of the blocking pool (storage, external auth, password hashing)."),
    XD_OPT_INT("pool_queue", C_, pool_queue, "4096", 1, 1000000,
               "Jobs the blocking pool queues before new work is refused with a `wait` error."),
    XD_OPT_STRING_LIST("certfiles", C_, certfiles, "[]",
                       "Glob patterns of PEM files holding certificates and keys; each "
                       "certificate is used for the domains it names."),
    XD_OPT_ENUM("tls_min_version", C_, tls_min_version, "1.2", cfg_tls_versions,
                "Oldest TLS version accepted on client and server streams: `1.2` or `1.3`."),
    XD_OPT_STRING("tls_ciphers", C_, tls_ciphers, NULL,
                  "OpenSSL cipher list for TLS 1.2. Unset: forward-secret AEAD ciphers only "
                  "(ECDHE with AES-GCM or ChaCha20-Poly1305)."),
    XD_OPT_STRING("tls_ciphersuites", C_, tls_ciphersuites, NULL,
                  "OpenSSL TLS 1.3 cipher suites. Unset: OpenSSL's default."),
    XD_OPT_PATH("ca_file", C_, ca_file, NULL,
                "PEM file of the certificate authorities trusted when a server's (or client's) "
                "certificate is verified. Unset with `ca_path` unset: the system's trust store."),
    XD_OPT_PATH("ca_path", C_, ca_path, NULL,
                "Directory of trusted certificate authorities in OpenSSL's hashed layout "
                "(`openssl rehash`)."),
    XD_OPT_STRING("s2s_access", C_, s2s_access, "all",
                  "Access rule deciding which remote domains this server federates with, "
                  "evaluated for the remote domain (ACLs of kind `server` or "
                  "`server_regexp`). Denied domains are refused both ways."),
    XD_OPT_BOOL("s2s_require_encryption", C_, s2s_require_encryption, "true",
                "Server-to-server streams must use TLS before authenticating or exchanging "
                "stanzas, both ways."),
    XD_OPT_BOOL("s2s_verify_certificates", C_, s2s_verify_certificates, "false",
                "Require a certificate that verifies for the remote domain (SASL EXTERNAL); "
                "when false, a server without one may authenticate with dialback."),
    XD_OPT_BOOL("s2s_dialback", C_, s2s_dialback, "true",
                "Offer and use server dialback (XEP-0220) when certificates do not settle it."),
    XD_OPT_BOOL("s2s_multiplex", C_, s2s_multiplex, "true",
                "Send the stanzas of several of our domains to one remote server over one "
                "stream: a second domain authenticates with its own dialback request on the "
                "established stream (XEP-0220); a server that refuses gets a stream per "
                "domain."),
    XD_OPT_NODE("s2s_hosts", C_, s2s_hosts,
                "Static routes `{domain: \"host:port\"}` that replace DNS for those domains "
                "(`\"192.0.2.1\"`, `\"[2001:db8::1]:5270\"`, `\"xmpp.example.net:5269\"`)."),
    XD_OPT_STRING("s2s_dns_servers", C_, s2s_dns_servers, NULL,
                  "DNS servers for federation, `\"127.0.0.1:5353,[::1]:53\"`. Unset: "
                  "those of /etc/resolv.conf."),
    XD_OPT_DURATION("s2s_connect_timeout", C_, s2s_connect_timeout_ms, "20s",
                    "Time to resolve, connect and authenticate to a remote server; stanzas "
                    "waiting longer bounce with remote-server-timeout."),
    XD_OPT_DURATION("s2s_timeout", C_, s2s_timeout_ms, "10min",
                    "Server-to-server streams idle this long are closed (and reopened when "
                    "needed)."),
    XD_OPT_INT("s2s_queue_max", C_, s2s_queue_max, "1000", 1, 1000000,
               "Stanzas held for one remote domain while its stream is being set up; more "
               "bounce with resource-constraint."),
    XD_OPT_INT("s2s_max_streams", C_, s2s_max_streams, "10000", 1, 10000000,
               "Outgoing server-to-server connections, all workers together (incoming ones "
               "are bounded by their listener's `max_connections`); a route beyond it fails "
               "as remote-server-not-found."),
    XD_OPT_FULL("ctl_socket", XD_OPT_TYPE_PATH, C_, ctl_socket, NULL, NULL,
                "Unix socket xmppctl talks to.", 0, "`<data_dir>/xmppd.sock`"),
    XD_OPT_FULL("module_dir", XD_OPT_TYPE_PATH, C_, module_dir, NULL, NULL,
                "Directory of loadable modules: a name under `modules` that is not built in "
                "is loaded from `<module_dir>/<name>.so`.", 0, "`<prefix>/lib/xmppd/modules`"),
    XD_OPT_PATH("pid_file", C_, pid_file, NULL, "Write the process id here when set."),
    XD_OPT_SUB_LIST("listen", C_, listen,
                    "[{port: 5222, ip: 127.0.0.1}, {port: 5222, ip: \"::1\"}]",
                    &cfg_listen_sub,
                    "Listening sockets; see [listen entries](#listen-entries)."),
    XD_OPT_ENUM("default_db", C_, default_db, "sql", cfg_db_types,
                "Storage backend for modules that store data."),
    XD_OPT_ENUM("sql_type", C_, sql_type, "sqlite", cfg_sql_types,
                "SQL database: `sqlite` (embedded, nothing to install), `pgsql`, `mysql` or "
                "`odbc`."),
    XD_OPT_STRING("sql_server", C_, sql_server, "localhost",
                  "Database server host name (or ODBC connection string)."),
    XD_OPT_FULL("sql_port", XD_OPT_TYPE_INT, C_, sql_port, NULL,
                (&(const xd_opt_range_t){ 1, 65535 }), "Database server port.", 0,
                "5432 (pgsql), 3306 (mysql)"),
    XD_OPT_FULL("sql_database", XD_OPT_TYPE_STRING, C_, sql_database, NULL, NULL,
                "Database name; for sqlite the path of the database file.", 0,
                "`<data_dir>/xmppd.db` (sqlite), `xmppd` (others)"),
    XD_OPT_STRING("sql_username", C_, sql_username, "xmppd", "Database user."),
    XD_OPT_FULL("sql_password", XD_OPT_TYPE_STRING, C_, sql_password, "\"\"", NULL,
                "Database password.", XD_OPT_SECRET, NULL),
    XD_OPT_INT("sql_pool_size", C_, sql_pool_size, "10", 1, 1000,
               "Database connections this node opens."),
    XD_OPT_MAP("shaper", C_, shaper, NULL, &cfg_shapers_map,
               "Traffic shapers: `name: rate` in bytes per second, or "
               "`name: {rate: N, burst_size: M}`; see [shaper](#shaper)."),
    XD_OPT_MAP("host_config", C_, host_config, NULL, &cfg_host_config_map,
               "Per-host values of the options marked *host*: `{domain: {option: value}}`; "
               "the domain must be listed in `hosts`. See [host_config](#host_config)."),
    XD_OPT_INLINE(C_, global, &cfg_host_sub),
    XD_OPT_END,
};
#undef C_

static const xd_config_doc_section_t cfg_sections[] = {
    { "Top-level options",
      "Every option of `xmppd.yml`. Options marked *host* may also be given per host under "
      "`host_config`. Durations are written `500ms`, `60s`, `5 min`, `1h` or `2d` (a plain "
      "number is seconds); sizes `65536`, `64KB`, `1MB` (KB = 1024 bytes).",
      cfg_global_opts, sizeof(xd_config_t) },
    { "listen entries",
      "`listen` is a list of mappings, one per socket. Without `listen`, xmppd listens for "
      "clients on 127.0.0.1:5222 and [::1]:5222. Errors name the entry by its index from 0: "
      "`listen[1].port`.",
      cfg_listen_opts, sizeof(xd_listen_conf_t) },
    { "acl",
      "`acl` maps a name to a mapping of the kinds below (each a value or a list); an ACL "
      "matches when any entry of any kind matches. `all` (everyone) and `none` (no one) are "
      "built in.\n\n```yaml\nacl:\n  admin:\n    user: [\"admin@example.org\"]\n  local:\n"
      "    user_regexp: \"\"\n  loopback:\n    ip: [\"127.0.0.0/8\", \"::1/128\"]\n```",
      cfg_acl_opts, sizeof(xd_acl_t) },
    { "access_rules",
      "`access_rules` maps a rule name to clauses `allow: ACL` or `deny: ACL`, written as a "
      "list (`c2s: [{deny: blocked}, {allow: all}]`) or a mapping "
      "(`register: {allow: all}`). The first clause whose ACL matches decides; when none "
      "matches, or the rule does not exist, access is denied. An ACL may also be written "
      "inline: `{allow: {ip: \"10.0.0.0/8\"}}`. The rules `all` (allow) and `none` (deny) "
      "are built in. A rule under `host_config` replaces the top-level rule of the same "
      "name for that host.",
      NULL, 0 },
    { "shaper",
      "`shaper` maps a name to a rate in bytes per second, or to a mapping:",
      cfg_shaper_opts, sizeof(cfg_shaper_form_t) },
    { "shaper_rules",
      "`shaper_rules` has the shape of `access_rules`, but each clause names a shaper (or "
      "`none`, or a number for limits such as `max_user_sessions`) instead of allow/deny: "
      "`c2s_shaper: [{none: admin}, {normal: all}]`. A plain value applies to everyone: "
      "`max_user_sessions: 10`.",
      NULL, 0 },
    { "modules",
      "`modules` maps a module name to its options (a mapping, or nothing for the "
      "defaults). Each module documents its own options; they are checked when the module "
      "starts, with errors such as `xmppd.yml:41:7: modules.mod_ping.ping_interval: invalid "
      "duration \"6x\" (expected a duration such as 60s)`. Modules under `host_config` are "
      "added to the top-level ones; an entry of the same name replaces the top-level entry.",
      NULL, 0 },
    { "host_config",
      "`host_config` maps a served domain to options that apply to that host only. These "
      "options may appear there; `acl`, `access_rules`, `shaper_rules` and `modules` are "
      "merged with the top-level definitions by name, the others replace the top-level "
      "value.",
      cfg_host_opts, sizeof(xd_host_conf_t) },
    { NULL, NULL, NULL, 0 },
};

const xd_config_doc_section_t *
xd_config_doc_sections(void)
{
    return cfg_sections;
}

const char *
xd_listen_module_name(int module)
{
    const char *n = xd_opt_enum_name(cfg_listen_modules, module);
    return n ? n : "?";
}

/* ---- Lists of scalars: users, CIDRs, regexps ------------------------------------------------- */

/* The name preparation of the load running in ctx (cfg_build). */
static const xd_conf_names_t *
cfg_names(const xd_opt_ctx_t *ctx)
{
    const xd_config_t *cfg = xd_opt_ctx_udata(ctx);
    XD_ASSERT(cfg != NULL && cfg->names != NULL);
    return cfg->names;
}

static int
cfg_user_one(xd_opt_ctx_t *ctx, const xd_conf_node_t *it, const char *s, void *arg)
{
    char *norm = NULL;
    int rc = cfg_names(ctx)->user(xd_str_c(s), &norm);
    if (rc != 0) {
        xd_opt_error(ctx, it, "invalid user \"%s\" (expected user@domain or a localpart: %s)", s,
                     xd_strerror(rc));
        return -1;
    }
    xd_strlist_t *l = arg;
    l->items = xd_realloc(l->items, (l->count + 1) * sizeof *l->items);
    l->items[l->count++] = norm;
    return 0;
}

static int
cfg_users_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field)
{
    return xd_opt_each_string(ctx, node, "a user or a list of users", cfg_user_one, field);
}

static int
cfg_domains_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field)
{
    return xd_opt_get_names(ctx, node, "domain", cfg_names(ctx)->domain, true, field);
}

static void
cfg_strlist_free(void *field)
{
    xd_strlist_free(field);
}

int
xd_cidr_parse(const char *s, xd_cidr_t *out)
{
    char buf[INET6_ADDRSTRLEN + 8];
    size_t n = strlen(s);
    if (n == 0 || n >= sizeof buf)
        return XD_EINVAL;
    memcpy(buf, s, n + 1);
    char *slash = strchr(buf, '/');
    long prefix = -1;
    if (slash) {
        *slash = '\0';
        char *end;
        if (slash[1] < '0' || slash[1] > '9')
            return XD_EINVAL;
        prefix = strtol(slash + 1, &end, 10);
        if (*end)
            return XD_EINVAL;
    }
    memset(out, 0, sizeof *out);
    unsigned bits;
    if (inet_pton(AF_INET, buf, out->addr) == 1) {
        out->family = AF_INET;
        bits = 32;
    } else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
        out->family = AF_INET6;
        bits = 128;
    } else {
        return XD_EINVAL;
    }
    if (prefix > (long)bits)
        return XD_EINVAL;
    out->prefix = prefix < 0 ? bits : (unsigned)prefix;
    /* Zero the host bits so matching compares whole bytes. */
    for (unsigned b = out->prefix; b < bits; b++)
        out->addr[b / 8] &= (uint8_t) ~(0x80u >> (b % 8));
    return 0;
}

bool
xd_cidr_match(const xd_cidr_t *cidr, const struct sockaddr *addr)
{
    uint8_t a[16];
    int family;
    if (!addr)
        return false;
    if (addr->sa_family == AF_INET) {
        memcpy(a, &((const struct sockaddr_in *)addr)->sin_addr, 4);
        family = AF_INET;
    } else if (addr->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)addr)->sin6_addr;
        if (cidr->family == AF_INET && IN6_IS_ADDR_V4MAPPED(a6)) {
            memcpy(a, a6->s6_addr + 12, 4); /* ::ffff:a.b.c.d on a dual-stack socket */
            family = AF_INET;
        } else {
            memcpy(a, a6->s6_addr, 16);
            family = AF_INET6;
        }
    } else {
        return false;
    }
    if (family != cidr->family)
        return false;
    unsigned full = cidr->prefix / 8, rest = cidr->prefix % 8;
    if (memcmp(a, cidr->addr, full) != 0)
        return false;
    if (rest) {
        uint8_t mask = (uint8_t)(0xffu << (8 - rest));
        if ((a[full] & mask) != cidr->addr[full])
            return false;
    }
    return true;
}

static int
cfg_cidr_one(xd_opt_ctx_t *ctx, const xd_conf_node_t *it, const char *s, void *arg)
{
    xd_cidr_list_t *l = arg;
    xd_cidr_t c;
    if (xd_cidr_parse(s, &c) != 0) {
        xd_opt_error(ctx, it, "invalid IP range \"%s\" (expected an address or a CIDR such as "
                     "127.0.0.0/8 or ::1/128)", s);
        return -1;
    }
    l->items = xd_realloc(l->items, (l->count + 1) * sizeof *l->items);
    l->items[l->count++] = c;
    return 0;
}

static int
cfg_cidrs_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field)
{
    return xd_opt_each_string(ctx, node, "an IP range or a list of them", cfg_cidr_one, field);
}

static void
cfg_cidrs_free(void *field)
{
    xd_cidr_list_t *l = field;
    xd_free(l->items);
    l->items = NULL;
    l->count = 0;
}

static int
cfg_regexp_one(xd_opt_ctx_t *ctx, const xd_conf_node_t *it, const char *s, void *arg)
{
    xd_regex_list_t *l = arg;
    regex_t re;
    int rc = regcomp(&re, s, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        char why[256];
        regerror(rc, &re, why, sizeof why);
        xd_opt_error(ctx, it, "invalid regular expression \"%s\" (%s)", s, why);
        return -1;
    }
    l->items = xd_realloc(l->items, (l->count + 1) * sizeof *l->items);
    l->sources = xd_realloc(l->sources, (l->count + 1) * sizeof *l->sources);
    l->items[l->count] = re;
    l->sources[l->count++] = xd_strdup(s);
    return 0;
}

static int
cfg_regexps_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field)
{
    return xd_opt_each_string(ctx, node, "a regular expression or a list of them",
                              cfg_regexp_one, field);
}

static void
cfg_regexps_free(void *field)
{
    xd_regex_list_t *l = field;
    for (size_t i = 0; i < l->count; i++) {
        regfree(&l->items[i]);
        xd_free(l->sources[i]);
    }
    xd_free(l->items);
    xd_free(l->sources);
    memset(l, 0, sizeof *l);
}

/* ---- acl ------------------------------------------------------------------------------------- */

static bool
cfg_builtin_acl(const char *name)
{
    for (const char *const *b = cfg_builtin_names; *b; b++)
        if (strcmp(name, *b) == 0)
            return true;
    return false;
}

/* Frees an inline ACL's contents (the ACLs under `acl` are the map's). */
static void
cfg_acl_free(xd_acl_t *acl)
{
    xd_free(acl->name);
    acl->name = NULL;
    xd_opt_free(cfg_acl_opts, acl);
}

/* ---- access_rules and shaper_rules ----------------------------------------------------------- */

static int
cfg_clause_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *key, const xd_conf_node_t *val,
                 bool access, xd_rule_clause_t *c)
{
    memset(c, 0, sizeof *c);
    if (access && strcmp(key->value, "allow") != 0 && strcmp(key->value, "deny") != 0) {
        xd_opt_error(ctx, key, "invalid action \"%s\" (expected allow or deny)", key->value);
        return -1;
    }
    c->value_node = key;
    c->node = val;
    if (val->kind == XD_CONF_MAP) {
        xd_acl_t *acl = xd_new(xd_acl_t);
        if (xd_opt_parse_in(ctx, cfg_acl_opts, val, acl) != 0) {
            xd_free(acl);
            return -1;
        }
        acl->name = xd_strdup("(inline)");
        c->inline_acl = acl;
    } else {
        const char *name;
        if (val->kind != XD_CONF_SCALAR || xd_conf_is_null(val)) {
            xd_opt_error(ctx, val, "expected an ACL name or an inline ACL mapping, got %s",
                         xd_conf_kind_name(val));
            return -1;
        }
        if (xd_opt_get_string(ctx, val, &name) != 0)
            return -1;
        c->acl = xd_strdup(name);
    }
    c->value = xd_strdup(key->value);
    return 0;
}

static void
cfg_clause_free(xd_rule_clause_t *c)
{
    xd_free(c->value);
    xd_free(c->acl);
    if (c->inline_acl) {
        cfg_acl_free(c->inline_acl);
        xd_free(c->inline_acl);
    }
    memset(c, 0, sizeof *c);
}

static int
cfg_rule_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *body, bool access, xd_rule_t *r)
{
    int rc = 0;
    if (body->kind == XD_CONF_SCALAR && !access && !xd_conf_is_null(body)) {
        /* shaper_rules: `max_user_sessions: 10` applies to everyone. */
        r->clauses = xd_new(xd_rule_clause_t);
        r->clauses[0] = (xd_rule_clause_t){ .value = xd_strdup(body->value),
                                            .acl = xd_strdup("all"), .value_node = body };
        r->count = 1;
        return 0;
    }
    if (body->kind == XD_CONF_MAP) {
        r->clauses = xd_calloc(body->count ? body->count : 1, sizeof *r->clauses);
        for (size_t i = 0; i < body->count; i++) {
            xd_opt_push_key(ctx, body->keys[i]->value);
            if (cfg_clause_parse(ctx, body->keys[i], body->items[i], access,
                                 &r->clauses[r->count]) == 0)
                r->count++;
            else
                rc = -1;
            xd_opt_pop(ctx);
        }
        return rc;
    }
    if (body->kind == XD_CONF_SEQ) {
        r->listed = true;
        r->clauses = xd_calloc(body->count ? body->count : 1, sizeof *r->clauses);
        for (size_t i = 0; i < body->count; i++) {
            const xd_conf_node_t *it = body->items[i];
            xd_opt_push_index(ctx, i);
            if (it->kind != XD_CONF_MAP || it->count != 1) {
                xd_opt_error(ctx, it, "expected a mapping with one clause such as {%s: all}, "
                             "got %s", access ? "allow" : "normal",
                             it->kind == XD_CONF_MAP ? "several keys" : xd_conf_kind_name(it));
                rc = -1;
            } else {
                xd_opt_push_key(ctx, it->keys[0]->value);
                if (cfg_clause_parse(ctx, it->keys[0], it->items[0], access,
                                     &r->clauses[r->count]) == 0)
                    r->count++;
                else
                    rc = -1;
                xd_opt_pop(ctx);
            }
            xd_opt_pop(ctx);
        }
        return rc;
    }
    xd_opt_error(ctx, body, "expected a list of clauses such as [{%s: all}], got %s",
                 access ? "allow" : "normal", xd_conf_kind_name(body));
    return -1;
}

static void
cfg_clauses_free(void *field)
{
    xd_rule_t *r = field; /* the item of a rule map: its name is the map's */
    for (size_t i = 0; i < r->count; i++)
        cfg_clause_free(&r->clauses[i]);
    xd_free(r->clauses);
    r->clauses = NULL;
    r->count = 0;
    r->listed = false;
}

static int
cfg_access_clauses_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field)
{
    return cfg_rule_parse(ctx, node, true, field);
}

static int
cfg_shaper_clauses_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field)
{
    return cfg_rule_parse(ctx, node, false, field);
}

/* ---- shaper ---------------------------------------------------------------------------------- */

/* One shaper: `name: N` or `name: {rate: N, burst_size: M}`. */
static int
cfg_shaper_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field)
{
    xd_shaper_t *s = field; /* the item of the shaper map: its name is the map's */
    cfg_shaper_form_t form = { 0 };
    int rc = node->kind == XD_CONF_MAP
                 ? xd_opt_parse_in(ctx, cfg_shaper_opts, node, &form)
                 : xd_opt_get_int(ctx, node, cfg_shaper_opts[0].range, &form.rate);
    if (rc != 0)
        return -1;
    s->rate_bytes = (uint64_t)form.rate;
    s->burst_bytes = form.burst_size ? (uint64_t)form.burst_size : (uint64_t)form.rate;
    return 0;
}

static void
cfg_shaper_free(void *field)
{
    xd_shaper_t *s = field;
    s->rate_bytes = 0;
    s->burst_bytes = 0;
}

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
        if (cfg_find_opt(cfg_host_opts, key))
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

/* ---- listen ---------------------------------------------------------------------------------- */

/* A component domain under a listener's `hosts`, prepared. */
static int
cfg_domain_key(xd_opt_ctx_t *ctx, const xd_conf_node_t *key, char **out)
{
    return xd_opt_get_name(ctx, key, "domain", cfg_names(ctx)->domain, out);
}

static int
cfg_component_host_check(xd_opt_ctx_t *ctx, const xd_conf_node_t *map, void *conf)
{
    const xd_component_host_t *h = conf;
    if (h->password && *h->password)
        return 0;
    xd_opt_push_key(ctx, "password");
    xd_opt_error(ctx, xd_conf_map_get(map, "password"), "the secret must not be empty");
    xd_opt_pop(ctx);
    return -1;
}

static int
cfg_listen_check(xd_opt_ctx_t *ctx, const xd_conf_node_t *map, void *conf)
{
    xd_listen_conf_t *l = conf;
    int rc = 0;
    unsigned char buf[16];
    if (!l->ip || (inet_pton(AF_INET, l->ip, buf) != 1 && inet_pton(AF_INET6, l->ip, buf) != 1)) {
        const xd_conf_node_t *at = xd_conf_map_get(map, "ip");
        xd_opt_push_key(ctx, "ip");
        xd_opt_error(ctx, at ? at : map, "invalid address \"%s\" (expected an IPv4 or IPv6 "
                     "address such as 127.0.0.1 or ::)", l->ip ? l->ip : "");
        xd_opt_pop(ctx);
        rc = -1;
    }
    if (l->max_stanza_size == 0)
        l->max_stanza_size = l->module == XD_LISTEN_MOD_S2S ||
                                     l->module == XD_LISTEN_MOD_COMPONENT
                                 ? 131072
                                 : 65536;
    if (l->module == XD_LISTEN_MOD_COMPONENT && !l->password && l->hosts.count == 0) {
        xd_opt_error(ctx, map, "a component listener needs `password` or `hosts`");
        rc = -1;
    }
    if (l->hosts.count > 0 && l->module != XD_LISTEN_MOD_COMPONENT) {
        xd_opt_error(ctx, map, "`hosts` is for component listeners");
        rc = -1;
    }
    return rc;
}

/* ---- Loading --------------------------------------------------------------------------------- */

static char *
cfg_join(const char *dir, const char *file)
{
    size_t n = strlen(dir) + strlen(file) + 2;
    char *p = xd_malloc(n);
    snprintf(p, n, "%s%s%s", dir, dir[0] && dir[strlen(dir) - 1] == '/' ? "" : "/", file);
    return p;
}

static void
cfg_host_free(xd_host_conf_t *h)
{
    xd_opt_free(cfg_host_opts, h);
    xd_free(h->host);
    h->host = NULL;
}

static void
cfg_free(xd_config_t *cfg)
{
    if (cfg->hosts_conf) {
        for (size_t i = 0; i < cfg->hosts.count; i++)
            cfg_host_free(&cfg->hosts_conf[i]);
        xd_free(cfg->hosts_conf);
    }
    xd_opt_free(cfg_global_opts, cfg);
    xd_conf_doc_unref(cfg->doc);
    xd_free(cfg->path);
    xd_free(cfg);
}

/* The host_config mapping of `host` (a normalised served host), or NULL. */
static const xd_conf_node_t *
cfg_host_map(const xd_config_t *cfg, const char *host)
{
    for (size_t i = 0; host && i < cfg->host_config.count; i++)
        if (strcmp(cfg->host_config.items[i].host, host) == 0)
            return cfg->host_config.items[i].opts;
    return NULL;
}

/* Stage 2: one effective host scope per served host, its host_config
 * options first and the top level as fallback. */
static void
cfg_hosts_parse(xd_opt_ctx_t *ctx, xd_config_t *cfg, const xd_conf_node_t *root)
{
    cfg->hosts_conf = xd_calloc(cfg->hosts.count, sizeof *cfg->hosts_conf);
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
}

static bool
cfg_is_number(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

static bool
cfg_rule_defined(const xd_rule_set_t *set, const char *name)
{
    for (size_t i = 0; i < set->count; i++)
        if (strcmp(set->items[i].name, name) == 0)
            return true;
    return false;
}

/* Stage 3 for one scope: ACL names in rules, shaper names in shaper rules. */
static void
cfg_check_scope(xd_opt_ctx_t *ctx, const xd_config_t *cfg, const xd_host_conf_t *scope)
{
    for (int pass = 0; pass < 2; pass++) {
        const xd_rule_set_t *set = pass == 0 ? &scope->access_rules : &scope->shaper_rules;
        xd_opt_push_key(ctx, pass == 0 ? "access_rules" : "shaper_rules");
        for (size_t i = 0; i < set->count; i++) {
            const xd_rule_t *r = &set->items[i];
            xd_opt_push_key(ctx, r->name);
            for (size_t j = 0; j < r->count; j++) {
                const xd_rule_clause_t *c = &r->clauses[j];
                if (r->listed)
                    xd_opt_push_index(ctx, j);
                if (c->node)
                    xd_opt_push_key(ctx, c->value);
                if (c->acl && !cfg_builtin_acl(c->acl) && !xd_config_acl(scope, c->acl))
                    xd_opt_error(ctx, c->node, "unknown ACL \"%s\"", c->acl);
                if (pass == 1 && strcmp(c->value, "none") != 0 && !cfg_is_number(c->value) &&
                    !xd_config_shaper(cfg, c->value))
                    xd_opt_error(ctx, c->value_node, "unknown shaper \"%s\"", c->value);
                if (c->node)
                    xd_opt_pop(ctx);
                if (r->listed)
                    xd_opt_pop(ctx);
            }
            xd_opt_pop(ctx);
        }
        xd_opt_pop(ctx);
    }
    /* A host that sets neither option inherits the problem: reported once, at the top. */
    const xd_conf_node_t *hm = cfg_host_map(cfg, scope->host);
    bool own = !scope->host || xd_conf_map_get(hm, "auth_method") ||
               xd_conf_map_get(hm, "extauth_program");
    if (own && scope->auth_method == XD_AUTH_EXTERNAL && !scope->extauth_program) {
        const xd_conf_node_t *at = xd_conf_map_get(hm, "auth_method");
        if (!at && cfg->doc)
            at = xd_conf_map_get(xd_conf_doc_root(cfg->doc), "auth_method");
        xd_opt_push_key(ctx, "auth_method");
        xd_opt_error(ctx, at, "external authentication needs extauth_program%s%s",
                     scope->host ? " for host " : "", scope->host ? scope->host : "");
        xd_opt_pop(ctx);
    }
}

/* Stage 3 for listeners: references and duplicate addresses. */
static void
cfg_check_listen(xd_opt_ctx_t *ctx, const xd_config_t *cfg, const xd_conf_node_t *root)
{
    const xd_conf_node_t *seq = xd_conf_map_get(root, "listen");
    const xd_listen_conf_t *ls = cfg->listen.items;
    for (size_t i = 0; i < cfg->listen.count; i++) {
        const xd_listen_conf_t *l = &ls[i];
        const xd_conf_node_t *entry =
            seq && seq->kind == XD_CONF_SEQ && i < seq->count ? seq->items[i] : NULL;
        xd_opt_push_key(ctx, "listen");
        xd_opt_push_index(ctx, i);

        bool access_ok = cfg_builtin_acl(l->access) ||
                         cfg_rule_defined(&cfg->global.access_rules, l->access);
        bool shaper_ok = strcmp(l->shaper, "none") == 0 || xd_config_shaper(cfg, l->shaper) ||
                         cfg_rule_defined(&cfg->global.shaper_rules, l->shaper);
        for (size_t h = 0; h < cfg->hosts.count; h++) {
            access_ok = access_ok || cfg_rule_defined(&cfg->hosts_conf[h].access_rules, l->access);
            shaper_ok = shaper_ok || cfg_rule_defined(&cfg->hosts_conf[h].shaper_rules, l->shaper);
        }
        if (!access_ok) {
            xd_opt_push_key(ctx, "access");
            xd_opt_error(ctx, xd_conf_map_get(entry, "access"), "unknown access rule \"%s\"",
                         l->access);
            xd_opt_pop(ctx);
        }
        if (!shaper_ok) {
            xd_opt_push_key(ctx, "shaper");
            xd_opt_error(ctx, xd_conf_map_get(entry, "shaper"),
                         "unknown shaper or shaper rule \"%s\"", l->shaper);
            xd_opt_pop(ctx);
        }
        unsigned char a[16] = { 0 };
        int fam = inet_pton(AF_INET, l->ip, a) == 1 ? AF_INET : AF_INET6;
        if (fam == AF_INET6)
            inet_pton(AF_INET6, l->ip, a);
        for (size_t j = 0; j < i; j++) {
            unsigned char b[16] = { 0 };
            int fb = inet_pton(AF_INET, ls[j].ip, b) == 1 ? AF_INET : AF_INET6;
            if (fb == AF_INET6)
                inet_pton(AF_INET6, ls[j].ip, b);
            if (ls[j].port == l->port && fb == fam && memcmp(a, b, 16) == 0) {
                xd_opt_push_key(ctx, "port");
                xd_opt_error(ctx, entry ? xd_conf_map_get(entry, "port") : NULL,
                             "address %s port %d is already used by listen[%zu]", l->ip, l->port,
                             j);
                xd_opt_pop(ctx);
                break;
            }
        }
        xd_opt_pop(ctx);
        xd_opt_pop(ctx);
    }
}

static int
cfg_build(const xd_conf_names_t *names, xd_conf_doc_t *doc, const char *path, xd_config_t **out,
          char **err)
{
    XD_ASSERT(names != NULL);
    xd_config_t *cfg = xd_new(xd_config_t);
    atomic_init(&cfg->refs, 1);
    cfg->doc = doc; /* takes the caller's reference */
    cfg->path = path ? xd_strdup(path) : NULL;
    cfg->names = names;
    const xd_conf_node_t *root = doc ? xd_conf_doc_root(doc) : NULL;

    xd_opt_ctx_t *ctx = xd_opt_ctx_new(NULL, cfg);
    if (xd_opt_parse_in(ctx, cfg_global_opts, root, cfg) == 0) {
        /* Stage 2: computed defaults, host scopes. */
        if (cfg->hosts.count == 0) {
            xd_opt_push_key(ctx, "hosts");
            xd_opt_error(ctx, xd_conf_map_get(root, "hosts"), "at least one host is required");
            xd_opt_pop(ctx);
        }
        if (!cfg->ctl_socket)
            cfg->ctl_socket = cfg_join(cfg->data_dir, "xmppd.sock");
        if (!cfg->module_dir)
            cfg->module_dir = xd_strdup(CFG_MODULE_DIR);
        if (!cfg->sql_database)
            cfg->sql_database = cfg->sql_type == XD_SQL_SQLITE
                                    ? cfg_join(cfg->data_dir, "xmppd.db")
                                    : xd_strdup("xmppd");
        if (cfg->sql_port == 0)
            cfg->sql_port = cfg->sql_type == XD_SQL_PGSQL   ? 5432
                            : cfg->sql_type == XD_SQL_MYSQL ? 3306
                                                            : 0;
        if (xd_opt_error_count(ctx) == 0)
            cfg_hosts_parse(ctx, cfg, root);
        /* Stage 3: cross references. */
        if (xd_opt_error_count(ctx) == 0) {
            cfg_check_scope(ctx, cfg, &cfg->global);
            for (size_t i = 0; i < cfg->hosts.count; i++) {
                xd_opt_push_key(ctx, "host_config");
                xd_opt_push_key(ctx, cfg->hosts.items[i]);
                cfg_check_scope(ctx, cfg, &cfg->hosts_conf[i]);
                xd_opt_pop(ctx);
                xd_opt_pop(ctx);
            }
            cfg_check_listen(ctx, cfg, root);
        }
    }
    int rc = xd_opt_ctx_finish(ctx, err);
    if (rc != 0) {
        cfg_free(cfg);
        return rc;
    }
    *out = cfg;
    return 0;
}

int
xd_config_load_with(const xd_conf_names_t *names, const char *path, xd_config_t **out,
                    char **err)
{
    *out = NULL;
    xd_conf_doc_t *doc = NULL;
    int rc = xd_conf_parse_file(path, &doc, err);
    if (rc != 0)
        return rc;
    return cfg_build(names, doc, path, out, err);
}

int
xd_config_load_string_with(const xd_conf_names_t *names, const char *name, const char *text,
                           size_t len, xd_config_t **out, char **err)
{
    *out = NULL;
    xd_conf_doc_t *doc = NULL;
    int rc = xd_conf_parse_string(name, text, len, &doc, err);
    if (rc != 0)
        return rc;
    return cfg_build(names, doc, name, out, err);
}

int
xd_config_default_with(const xd_conf_names_t *names, xd_config_t **out)
{
    *out = NULL;
    char *err = NULL;
    int rc = cfg_build(names, NULL, NULL, out, &err);
    if (rc != 0) {
        /* The defaults are tested; this would be a bug in the tables. */
        XD_LOG(NULL, XD_CRIT, "built-in configuration invalid", "err=\"%s\"", err ? err : "?");
        xd_free(err);
    }
    return rc;
}

xd_config_t *
xd_config_ref(xd_config_t *cfg)
{
    if (cfg)
        atomic_fetch_add_explicit(&cfg->refs, 1, memory_order_relaxed);
    return cfg;
}

void
xd_config_unref(xd_config_t *cfg)
{
    if (cfg && atomic_fetch_sub_explicit(&cfg->refs, 1, memory_order_acq_rel) == 1)
        cfg_free(cfg);
}

/* ---- Publication ----------------------------------------------------------------------------- */

/* Readers bracket "load pointer, take reference" with cfg_readers; the
 * publisher swaps the pointer, then waits until no reader is inside the
 * bracket before it drops the old reference.  A reader that got in before the
 * swap has taken its reference by then; one that got in after sees the new
 * pointer.  Readers never wait; only the (rare) publisher spins. */
static _Atomic(xd_config_t *) cfg_current;
static _Atomic unsigned cfg_readers;

xd_config_t *
xd_config_get(void)
{
    atomic_fetch_add(&cfg_readers, 1);
    xd_config_t *cfg = xd_config_ref(atomic_load(&cfg_current));
    atomic_fetch_sub(&cfg_readers, 1);
    return cfg;
}

void
xd_config_publish(xd_config_t *cfg)
{
    xd_config_t *old = atomic_exchange(&cfg_current, cfg);
    while (atomic_load(&cfg_readers) != 0)
        sched_yield();
    xd_config_unref(old);
}

/* ---- Accessors ------------------------------------------------------------------------------- */

const xd_host_conf_t *
xd_config_host(const xd_config_t *cfg, const char *host)
{
    if (!host)
        return NULL;
    for (size_t i = 0; i < cfg->hosts.count; i++)
        if (strcmp(cfg->hosts.items[i], host) == 0)
            return &cfg->hosts_conf[i];
    return NULL;
}

size_t
xd_config_host_count(const xd_config_t *cfg)
{
    return cfg->hosts.count;
}

const char *
xd_config_host_name(const xd_config_t *cfg, size_t i)
{
    return i < cfg->hosts.count ? cfg->hosts.items[i] : NULL;
}

const char *
xd_config_default_host(const xd_config_t *cfg)
{
    return cfg->hosts.items[0];
}

bool
xd_config_is_host(const xd_config_t *cfg, const char *host)
{
    return host && xd_strlist_contains(&cfg->hosts, host);
}

int
xd_config_loglevel(const xd_config_t *cfg)
{
    return cfg->loglevel;
}

const char *
xd_config_log_file(const xd_config_t *cfg)
{
    return cfg->log_file;
}

unsigned
xd_config_workers(const xd_config_t *cfg)
{
    return cfg->workers;
}

const char *
xd_config_data_dir(const xd_config_t *cfg)
{
    return cfg->data_dir;
}

unsigned
xd_config_pool_threads(const xd_config_t *cfg)
{
    return (unsigned)cfg->pool_threads;
}

unsigned
xd_config_pool_queue(const xd_config_t *cfg)
{
    return (unsigned)cfg->pool_queue;
}

size_t
xd_config_listen_count(const xd_config_t *cfg)
{
    return cfg->listen.count;
}

const xd_listen_conf_t *
xd_config_listen(const xd_config_t *cfg, size_t i)
{
    return i < cfg->listen.count ? &((const xd_listen_conf_t *)cfg->listen.items)[i] : NULL;
}

const char *
xd_config_ctl_socket(const xd_config_t *cfg)
{
    return cfg->ctl_socket;
}

const xd_acl_t *
xd_config_acl(const xd_host_conf_t *scope, const char *name)
{
    for (; scope; scope = scope->parent)
        for (size_t i = 0; i < scope->acl.count; i++)
            if (strcmp(scope->acl.items[i].name, name) == 0)
                return &scope->acl.items[i];
    return NULL;
}

static const xd_rule_t *
cfg_rule_find(const xd_host_conf_t *scope, const char *name, bool access)
{
    for (; scope; scope = scope->parent) {
        const xd_rule_set_t *set = access ? &scope->access_rules : &scope->shaper_rules;
        for (size_t i = 0; i < set->count; i++)
            if (strcmp(set->items[i].name, name) == 0)
                return &set->items[i];
    }
    return NULL;
}

const xd_rule_t *
xd_config_access_rule(const xd_host_conf_t *scope, const char *name)
{
    return cfg_rule_find(scope, name, true);
}

const xd_rule_t *
xd_config_shaper_rule(const xd_host_conf_t *scope, const char *name)
{
    return cfg_rule_find(scope, name, false);
}

const xd_shaper_t *
xd_config_shaper(const xd_config_t *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->shaper.count; i++)
        if (strcmp(cfg->shaper.items[i].name, name) == 0)
            return &cfg->shaper.items[i];
    return NULL;
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

/*
 * config.c — the server configuration object: the top-level option table, loading,
 * reference counts, publication and the plain accessors (include/xmppd/config.h).
 *
 * Sits in src/core above opt.c and yaml.c; the other tables and stages are in
 * config_listen.c, config_acl.c and config_hosts.c (see config_int.h).
 * Loading is three stages over one error context, so one run reports every
 * problem it can see:
 *
 *   1. xd_opt_parse_in(global table, root): every top-level option, its
 *      defaults, the listen entries (with their own table and check hook),
 *      and the mappings of names acl / access_rules / shaper / shaper_rules /
 *      modules / host_config / listen.hosts (MAP options: one generic parser,
 *      each with a value type and, for domains, a key preparation);
 *   2. computed defaults (ctl_socket, module_dir, sql_database, sql_port) and
 *      host scopes: for each served host the HOST-scope table is parsed again
 *      with the host's mapping first and the top level as fallback;
 *   3. cross references: ACL names in rules, shaper names in shaper rules and
 *      listeners, access rule names in listeners, duplicate listen addresses,
 *      external authentication without a program.
 *
 * Names (hosts, ACL users and servers, host_config and component domains)
 * are prepared by the xd_conf_names_t the loader is given: the parse
 * context's udata is the config being built, and the custom types find its
 * names there (cfg_names): core knows no JIDs.  src/xmpp/acl.c supplies the
 * RFC 7622 names and evaluates ACLs and rules.
 *
 * Invariants: a loaded config is immutable; it holds a reference on its YAML
 * document, so the nodes kept in it (module options, rule locations) stay
 * valid as long as the config; the published pointer is only swapped by
 * xd_config_publish and read by xd_config_get (see cfg_readers).
 */
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "core/config_int.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"
#include "xmppd/log.h"
#include "xd_version.h"

/* Default module_dir: the build may set XD_MODULE_DIR (<prefix>/lib/xmppd/modules). */
#ifdef XD_MODULE_DIR
#define CFG_MODULE_DIR XD_MODULE_DIR
#else
#define CFG_MODULE_DIR "/usr/local/lib/xmppd/modules"
#endif

/* ---- Tables ---------------------------------------------------------------------------------- */

static const xd_opt_enum_t cfg_tls_versions[] = {
    { "1.2", 12 },
    { "1.3", 13 },
    { NULL, 0 },
};

const xd_opt_enum_t cfg_sql_types[] = {
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

#define A_ xd_auth_limits_t
static const xd_opt_t cfg_auth_limits_opts[] = {
    XD_OPT_INT("max_failures", A_, max_failures, "20", 0, 1000000,
               "Failed authentications from one address (an IPv4 address, an IPv6 /64) within "
               "`window` that ban it: its new streams are refused with `policy-violation` for "
               "`ban_lifetime`. 0 never bans."),
    XD_OPT_DURATION("ban_lifetime", A_, ban_lifetime_ms, "1h",
                    "How long a banned address stays refused."),
    XD_OPT_DURATION("window", A_, window_ms, "1h",
                    "Failures are forgotten this long after the last one of their address "
                    "or account."),
    XD_OPT_INT("delay_after", A_, delay_after, "5", 0, 1000000,
               "Failures of one address, or against one account from anywhere, after which "
               "each further failure is answered later: `delay`, then twice as long each "
               "time, up to `max_delay` (the stream reads nothing meanwhile). 0 never "
               "delays."),
    XD_OPT_DURATION("delay", A_, delay_ms, "1s", "The first extra delay."),
    XD_OPT_DURATION("max_delay", A_, max_delay_ms, "30s", "The longest extra delay."),
    XD_OPT_STRING("exempt", A_, exempt, "none",
                  "Access rule evaluated for the peer's address (ACLs of kind `ip`): "
                  "addresses it allows are neither delayed nor banned. Loopback is not "
                  "exempt by default."),
    XD_OPT_INT("size", A_, size, "8192", 16, 10000000,
               "Addresses and accounts remembered, about 160 bytes each; when full, the "
               "one touched longest ago is forgotten."),
    XD_OPT_END,
};
#undef A_

static const xd_opt_sub_t cfg_auth_limits_sub = { cfg_auth_limits_opts, sizeof(xd_auth_limits_t),
                                                  NULL, "auth_limits" };

#define C_ xd_config_t
const xd_opt_t cfg_global_opts[] = {
    XD_OPT_CUSTOM("hosts", C_, hosts, "[localhost]", &cfg_hosts_type,
                  "The domains this server serves (virtual hosts), normalised (IDNA); "
                  "at least one."),
    XD_OPT_LOGLEVEL("loglevel", C_, loglevel, "info",
                    "Least severe level logged: `none`, `critical`, `error`, `warning`, "
                    "`notice`, `info` or `debug`."),
    XD_OPT_FULL("log_file", XD_OPT_TYPE_PATH, C_, log_file, "\"-\"", NULL,
                "File the log is appended to, reopened on SIGHUP; `-` is standard error.",
                XD_OPT_RESTART, NULL),
    XD_OPT_FULL("workers", XD_OPT_TYPE_WORKERS, C_, workers, "auto", NULL,
                "Worker threads, each with its own event loop; `auto` is one per CPU core "
                "(at most 256).",
                XD_OPT_RESTART, NULL),
    XD_OPT_FULL("io_uring", XD_OPT_TYPE_BOOL, C_, io_uring, "true", NULL,
                "Linux: each worker hands the writes of one loop turn to the kernel together "
                "(one io_uring submission instead of a write() per connection), which costs "
                "less CPU per copy when a message goes to many connections. `false`, or a "
                "kernel or sandbox without io_uring, writes each piece at once.",
                XD_OPT_RESTART, NULL),
    XD_OPT_FULL("data_dir", XD_OPT_TYPE_PATH, C_, data_dir, "./var", NULL,
                "Directory for the SQLite database, the self-signed certificate and the "
                "control socket.",
                XD_OPT_RESTART, NULL),
    XD_OPT_FULL("pool_threads", XD_OPT_TYPE_INT, C_, pool_threads, "8",
                (&(const xd_opt_range_t){ 1, 1024 }),
                "Threads of the blocking pool (storage, external auth, password hashing).",
                XD_OPT_RESTART, NULL),
    XD_OPT_FULL("pool_queue", XD_OPT_TYPE_INT, C_, pool_queue, "4096",
                (&(const xd_opt_range_t){ 1, 1000000 }),
                "Jobs the blocking pool queues before new work is refused with a `wait` error.",
                XD_OPT_RESTART, NULL),
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
    XD_OPT_FULL("s2s_dns_servers", XD_OPT_TYPE_STRING, C_, s2s_dns_servers, NULL, NULL,
                "DNS servers for federation, `\"127.0.0.1:5353,[::1]:53\"`. Unset: "
                "those of /etc/resolv.conf.",
                XD_OPT_RESTART, NULL),
    XD_OPT_FULL("s2s_connect_timeout", XD_OPT_TYPE_DURATION, C_, s2s_connect_timeout_ms, "20s",
                NULL,
                "Time to resolve, connect and authenticate to a remote server; stanzas "
                "waiting longer bounce with remote-server-timeout.",
                XD_OPT_RESTART, NULL),
    XD_OPT_FULL("s2s_timeout", XD_OPT_TYPE_DURATION, C_, s2s_timeout_ms, "10min", NULL,
                "Server-to-server streams idle this long are closed (and reopened when "
                "needed).",
                XD_OPT_RESTART, NULL),
    XD_OPT_INT("s2s_queue_max", C_, s2s_queue_max, "1000", 1, 1000000,
               "Stanzas held for one remote domain while its stream is being set up (and "
               "1 MiB of them at most); more bounce with resource-constraint."),
    XD_OPT_FULL("s2s_max_streams", XD_OPT_TYPE_INT, C_, s2s_max_streams, "10000",
                (&(const xd_opt_range_t){ 1, 10000000 }),
                "Outgoing server-to-server connections, all workers together (incoming ones "
                "are bounded by their listener's `max_connections`); a route beyond it fails "
                "as remote-server-not-found.",
                XD_OPT_RESTART, NULL),
    XD_OPT_FULL("ctl_socket", XD_OPT_TYPE_PATH, C_, ctl_socket, NULL, NULL,
                "Unix socket xmppctl talks to.", XD_OPT_RESTART, "`<data_dir>/xmppd.sock`"),
    XD_OPT_FULL("module_dir", XD_OPT_TYPE_PATH, C_, module_dir, NULL, NULL,
                "Directory of loadable modules: a name under `modules` that is not built in "
                "is loaded from `<module_dir>/<name>.so`.", 0, "`<prefix>/lib/xmppd/modules`"),
    XD_OPT_PATH("pid_file", C_, pid_file, NULL, "Write the process id here when set."),
    XD_OPT_FULL("listen", XD_OPT_TYPE_SUB_LIST, C_, listen,
                "[{port: 5222, ip: 127.0.0.1}, {port: 5222, ip: \"::1\"}]", &cfg_listen_sub,
                "Listening sockets; see [listen entries](#listen-entries).", XD_OPT_RESTART,
                NULL),
    XD_OPT_FULL("default_db", XD_OPT_TYPE_ENUM, C_, default_db, "sql", cfg_db_types,
                "Storage backend for modules that store data.", XD_OPT_RESTART, NULL),
    XD_OPT_FULL("sql_type", XD_OPT_TYPE_ENUM, C_, sql_type, "sqlite", cfg_sql_types,
                "SQL database: `sqlite` (embedded, nothing to install), `pgsql`, `mysql` or "
                "`odbc`.",
                XD_OPT_HOST | XD_OPT_RESTART, NULL),
    XD_OPT_FULL("sql_server", XD_OPT_TYPE_STRING, C_, sql_server, "localhost", NULL,
                "Database server host name (or ODBC connection string).",
                XD_OPT_HOST | XD_OPT_RESTART, NULL),
    XD_OPT_FULL("sql_port", XD_OPT_TYPE_INT, C_, sql_port, NULL,
                (&(const xd_opt_range_t){ 1, 65535 }), "Database server port.",
                XD_OPT_HOST | XD_OPT_RESTART, "5432 (pgsql), 3306 (mysql)"),
    XD_OPT_FULL("sql_database", XD_OPT_TYPE_STRING, C_, sql_database, NULL, NULL,
                "Database name; for sqlite the path of the database file.",
                XD_OPT_HOST | XD_OPT_RESTART, "`<data_dir>/xmppd.db` (sqlite), `xmppd` (others)"),
    XD_OPT_FULL("sql_username", XD_OPT_TYPE_STRING, C_, sql_username, "xmppd", NULL,
                "Database user.", XD_OPT_HOST | XD_OPT_RESTART, NULL),
    XD_OPT_FULL("sql_password", XD_OPT_TYPE_STRING, C_, sql_password, "\"\"", NULL,
                "Database password.", XD_OPT_HOST | XD_OPT_SECRET | XD_OPT_RESTART, NULL),
    XD_OPT_FULL("sql_pool_size", XD_OPT_TYPE_INT, C_, sql_pool_size, "10",
                (&(const xd_opt_range_t){ 1, 1000 }),
                "Connections of a database's pool on this node (each distinct database has "
                "its own pool; hosts that name the same database share it).",
                XD_OPT_HOST | XD_OPT_RESTART, NULL),
    XD_OPT_FULL("sql_ssl", XD_OPT_TYPE_STRING, C_, sql_ssl, NULL, NULL,
                "TLS to the database server (pgsql: libpq's sslmode: `disable`, `prefer`, "
                "`require`, `verify-ca` or `verify-full`; mysql the same names but no "
                "`prefer`).  Unset: the driver's default (pgsql: `prefer`, mysql: "
                "`disable`).  odbc: set TLS in the connection string (`sql_server`).",
                XD_OPT_HOST | XD_OPT_RESTART, NULL),
    XD_OPT_FULL("sql_ssl_cafile", XD_OPT_TYPE_PATH, C_, sql_ssl_cafile, NULL, NULL,
                "CA certificates that verify the database server's certificate (`verify-ca`, "
                "`verify-full`).",
                XD_OPT_HOST | XD_OPT_RESTART, NULL),
    XD_OPT_FULL("sql_fault_wait", XD_OPT_TYPE_DURATION, C_, sql_fault_wait_ms, "5s", NULL,
                "How long a request waits for an unreachable database (reconnecting with "
                "backoff) before it fails with internal-server-error.",
                XD_OPT_HOST | XD_OPT_RESTART, NULL),
    XD_OPT_SUB("auth_limits", C_, auth_limits, "{}", &cfg_auth_limits_sub,
               "Failed-authentication limits for client SASL, component handshakes and "
               "dialback, shared by all streams; see [auth_limits](#auth_limits)."),
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
      "`host_config`. Options marked *restart* are read once, at start: a reload (SIGHUP, "
      "`xmppctl reload_config`) that changes one is refused as a whole and names it, and "
      "the running configuration stays in force. Durations are written `500ms`, `60s`, `5 min`, `1h` or `2d` (a plain "
      "number is seconds); sizes `65536`, `64KB`, `1MB` (KB = 1024 bytes).",
      cfg_global_opts, sizeof(xd_config_t) },
    { "listen entries",
      "`listen` is a list of mappings, one per socket. Without `listen`, xmppd listens for "
      "clients on 127.0.0.1:5222 and [::1]:5222. Listeners are set up at start: a reload "
      "that adds, removes or changes an entry is refused (restart xmppd). Errors name the entry by its index from 0: "
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
    { "auth_limits",
      "`auth_limits` counts failed authentications (client SASL attempts that tested "
      "credentials, wrong component secrets, dialback keys the authoritative server called "
      "invalid) per address and per account across all streams and workers, as ejabberd's "
      "mod_fail2ban does: past `delay_after` failures each further failure is answered "
      "later, and past `max_failures` the address is banned. Accounts are slowed down, "
      "never banned, so that nobody can lock a user out. `xmppctl auth_bans` lists the "
      "table and `xmppctl auth_unban` clears it.\n\n```yaml\nauth_limits:\n"
      "  max_failures: 20\n  ban_lifetime: 1h\n  exempt: trusted_nets   # an access rule\n"
      "```",
      cfg_auth_limits_opts, sizeof(xd_auth_limits_t) },
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
      "value. The `sql_*` options of the top level may appear there too: a host with a "
      "database of its own, the options it does not set taken from the top level (one pool "
      "per distinct database; docs/admin.md, \"A database per virtual host\").",
      cfg_host_opts, sizeof(xd_host_conf_t) },
    { NULL, NULL, NULL, 0 },
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

const xd_config_doc_section_t *
xd_config_doc_sections(void)
{
    return cfg_sections;
}

const xd_conf_names_t *
cfg_names(const xd_opt_ctx_t *ctx)
{
    const xd_config_t *cfg = xd_opt_ctx_udata(ctx);
    XD_ASSERT(cfg != NULL && cfg->names != NULL);
    return cfg->names;
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
cfg_free(xd_config_t *cfg)
{
    xd_map_free(&cfg->host_index, NULL);
    xd_map_free(&cfg->host_config_index, NULL);
    cfg_hosts_free(cfg);
    xd_opt_free(cfg_global_opts, cfg);
    xd_conf_doc_unref(cfg->doc);
    xd_free(cfg->path);
    xd_free(cfg);
}

/* The control socket is a Unix socket: its path must fit in sun_path,
 * or xmppd would fail only once it starts.  A computed path is blamed on
 * data_dir, which the writer can shorten. */
static void
cfg_check_ctl_socket(xd_opt_ctx_t *ctx, const xd_config_t *cfg, const xd_conf_node_t *root)
{
    size_t max = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;
    size_t len = strlen(cfg->ctl_socket);
    if (len <= max)
        return;
    const xd_conf_node_t *at = xd_conf_map_get(root, "ctl_socket");
    if (at) {
        xd_opt_push_key(ctx, "ctl_socket");
        xd_opt_error(ctx, at, "path too long for a Unix socket (%zu bytes, at most %zu): %s",
                     len, max, cfg->ctl_socket);
    } else {
        xd_opt_push_key(ctx, "data_dir");
        xd_opt_error(ctx, xd_conf_map_get(root, "data_dir"),
                     "the control socket %s would be %zu bytes, more than a Unix socket path "
                     "may hold (%zu): shorten data_dir or set ctl_socket",
                     cfg->ctl_socket, len, max);
    }
    xd_opt_pop(ctx);
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
        cfg_check_ctl_socket(ctx, cfg, root);
        for (size_t i = 0; i < cfg->hosts.count; i++)
            xd_map_put(&cfg->host_index, xd_str_c(cfg->hosts.items[i]), (void *)(uintptr_t)(i + 1));
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
            cfg_rules_index_t ix;
            cfg_rules_index_init(&ix, cfg);
            cfg_check_rules(ctx, &ix, &cfg->global);
            cfg_check_host(ctx, cfg, &cfg->global);
            for (size_t i = 0; i < cfg->hosts.count; i++) {
                xd_opt_push_key(ctx, "host_config");
                xd_opt_push_key(ctx, cfg->hosts.items[i]);
                cfg_check_rules(ctx, &ix, &cfg->hosts_conf[i]);
                cfg_check_host(ctx, cfg, &cfg->hosts_conf[i]);
                xd_opt_pop(ctx);
                xd_opt_pop(ctx);
            }
            cfg_rules_index_free(&ix);
            cfg_check_listen(ctx, cfg, root);
            const char *ex = cfg->auth_limits.exempt;
            if (!cfg_builtin_acl(ex) && !cfg_rule_defined(&cfg->global.access_rules, ex)) {
                const xd_conf_node_t *al = xd_conf_map_get(root, "auth_limits");
                xd_opt_push_key(ctx, "auth_limits");
                xd_opt_push_key(ctx, "exempt");
                xd_opt_error(ctx, xd_conf_map_get(al, "exempt"),
                             "unknown access rule \"%s\" (define it at the top level)", ex);
                xd_opt_pop(ctx);
                xd_opt_pop(ctx);
            }
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

/* ---- Reload ---------------------------------------------------------------------------------- */

int
xd_config_check_reload(const xd_config_t *running, const xd_config_t *cfg, char **err)
{
    xd_opt_ctx_t *ctx = xd_opt_ctx_new(NULL, cfg);
    const xd_conf_node_t *root = cfg->doc ? xd_conf_doc_root(cfg->doc) : NULL;
    if (cfg->path && root && root->kind == XD_CONF_MAP && root->count == 0) {
        /* An empty file would run the built-in defaults: another domain,
         * ./var, other listeners.  Never by accident. */
        xd_opt_error(ctx, root, "the file is empty: a reload never falls back to the built-in "
                     "defaults");
    } else {
        bool kept = false;
        for (size_t i = 0; i < running->hosts.count && !kept; i++)
            kept = xd_config_is_host(cfg, running->hosts.items[i]);
        if (!kept) {
            char list[256] = "";
            size_t n = 0;
            for (size_t i = 0; i < running->hosts.count && n < sizeof list - 8; i++)
                n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "",
                                      running->hosts.items[i]);
            xd_opt_push_key(ctx, "hosts");
            xd_opt_error(ctx, xd_conf_map_get(root, "hosts") ? xd_conf_map_get(root, "hosts")
                                                              : root,
                         "serves none of the running hosts (%s): a reload never removes every "
                         "host (restart xmppd to replace them all)", list);
            xd_opt_pop(ctx);
        }
        xd_opt_diff(ctx, cfg_global_opts, running, cfg, root, XD_OPT_RESTART,
                    "takes effect only at a restart");
        cfg_check_reload_sql(ctx, running, cfg);
    }
    int rc = xd_opt_ctx_finish(ctx, err);
    return rc ? XD_ECONF_RESTART : 0;
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
    return host && xd_map_get(&cfg->host_index, xd_str_c(host)) != NULL;
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

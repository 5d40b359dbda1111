/*
 * config.h — the server configuration: xmppd.yml → xd_config_t (DESIGN.md 6, STYLE.md 3.4).
 *
 * One YAML file with the shape ejabberd administrators know: hosts, listen,
 * certfiles, auth_method, sql_*, acl, access_rules, shaper, shaper_rules,
 * modules and host_config.  Every option is declared in one of the tables
 * of src/core/config*.c (config.c: top level; config_listen.c, config_acl.c,
 * config_hosts.c: listen entries, ACL data, the HOST scope);
 * docs/configuration.md is generated from those tables (tools/gen-docs) and
 * examples/xmppd.yml shows every option.
 *
 * Lifetime and threads: an xd_config_t is immutable once loaded and
 * reference-counted (atomic).  The running server publishes the current one
 * with xd_config_publish(); xd_config_get() returns a new reference to it and
 * never blocks (a reload only makes the publisher wait for readers that are
 * between loading the pointer and taking their reference).  Whoever holds a
 * reference may read every field below from any thread.
 *
 * Scopes: options flagged XD_OPT_HOST (auth_method, acl, access_rules, …)
 * may be set again per host under host_config.  xd_config_host() returns the
 * effective values for one served host: a scalar option from host_config
 * wins over the top level; acl, access_rules, shaper_rules and modules are
 * merged by name, the host's definition winning.
 *
 * Layers: the loader is src/core and knows no JIDs.  Names written in the
 * file (hosts, ACL users and servers, host_config and component domains) are
 * prepared by the xd_conf_names_t it is given (xd_config_load_with); the
 * xmpp layer supplies the RFC 7622 one and the usual entry points
 * xd_config_load, xd_config_load_string and xd_config_default that pass it,
 * declared with it in xmppd/acl.h (src/xmpp/acl.c, which also evaluates ACLs
 * and rules).  The loaded config keeps the preparation (xd_config_t.names)
 * so that core code such as cmd.c prepares names the same way.
 */
#ifndef XMPPD_CONFIG_H
#define XMPPD_CONFIG_H

#include <regex.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "xmppd/map.h"
#include "xmppd/opt.h"
#include "xmppd/str.h"

/* ---- listen ------------------------------------------------------------------------------- */

typedef enum xd_listen_mod {
    XD_LISTEN_MOD_C2S,       /* c2s, ejabberd_c2s */
    XD_LISTEN_MOD_S2S,       /* s2s, ejabberd_s2s_in */
    XD_LISTEN_MOD_COMPONENT, /* component, ejabberd_service (XEP-0114) */
    XD_LISTEN_MOD_HTTP,      /* http, ejabberd_http */
} xd_listen_mod;

/* One domain of a component listener's `hosts`, with its secret.  Immutable after load. */
typedef struct xd_component_host {
    char *domain;   /* the key, prepared as a domain */
    char *password; /* its shared secret (XEP-0114) */
} xd_component_host_t;

typedef struct xd_component_host_set {
    xd_component_host_t *items; /* owned, in document order */
    size_t count;               /* number of items */
} xd_component_host_set_t;

/* One entry of an http listener's `request_handlers`: a path prefix and the
 * handler registered under that name (xmppd/http.h). */
typedef struct xd_http_route_conf {
    char *name;    /* the path prefix, "/ws" */
    char *handler; /* "websocket" */
} xd_http_route_conf_t;

typedef struct xd_http_route_set {
    xd_http_route_conf_t *items; /* owned, in document order */
    size_t count;                /* number of items */
} xd_http_route_set_t;

/* One entry of `listen`.  Immutable after load. */
typedef struct xd_listen_conf {
    int port;                      /* 1..65535, required */
    char *ip;                      /* address to bind; "::" = all, dual-stack */
    int module;                    /* xd_listen_mod */
    bool starttls;                 /* offer STARTTLS (RFC 6120 5) */
    bool starttls_required;        /* refuse to go on without TLS */
    bool tls;                      /* direct TLS on connect (XEP-0368) */
    bool tls_verify;               /* c2s: ask clients for a certificate (SASL EXTERNAL) */
    size_t max_stanza_size;        /* bytes; 64KB c2s/http, 128KB s2s/component */
    char *shaper;                  /* shaper or shaper rule name, "none"; NULL: the module's
                                      default (XD_SHAPER_*) */
    size_t max_queue;              /* bytes queued for a peer that does not read; 1MB c2s,
                                      4MB s2s/component */
    char *access;                  /* access rule deciding who may connect */
    int backlog;                   /* listen(2) backlog */
    int max_connections;           /* open connections on this listener, all workers */
    char *password;                /* component: shared secret (XEP-0114) */
    xd_component_host_set_t hosts; /* component: {domain: {password: …}} */
    uint64_t handshake_timeout_ms; /* until the stream is authenticated */
    uint64_t idle_timeout_ms;      /* close after this long without traffic; 0 = never */
    int worker;                    /* the one worker that accepts here; -1 = every worker */
    /* http listeners (docs/admin.md "HTTP and WebSocket") */
    xd_http_route_set_t request_handlers; /* path prefix -> handler; none: the defaults */
    size_t max_header_size;        /* request line and headers, bytes (431 beyond) */
    size_t max_body_size;          /* collected bodies, bytes (413 beyond) */
    uint64_t header_timeout_ms;    /* until a request's headers are in (slowloris) */
    int request_rate;              /* requests per second per connection (429 beyond) */
    xd_strlist_t cors_origins;     /* origins CORS answers allow; "*" any; none: no CORS */
    xd_strlist_t websocket_origins;/* allowed Origin values of WebSocket upgrades; none: any */
    uint64_t websocket_ping_ms;    /* ping an idle WebSocket this often; 0 never */
    char *websocket_see_other;     /* RFC 7395 3.6.1: redirect every session there */
    /* BOSH on http listeners (docs/admin.md "BOSH") */
    uint64_t bosh_max_inactivity_ms; /* a session without a request ends after this */
    uint64_t bosh_max_wait_ms;     /* longest a request is held */
    int bosh_max_hold;             /* requests held at once */
    int bosh_max_requests;         /* requests in flight (the rid window) */
    uint64_t bosh_max_pause_ms;    /* longest pause a client may ask for */
    size_t bosh_max_queue;         /* bytes queued for a session with no request held */
} xd_listen_conf_t;

/* The shaper of a listen entry without `shaper` (bytes/s, bucket bytes):
 * c2s and s2s; components have none. */
#define XD_SHAPER_C2S_RATE (64u << 10)
#define XD_SHAPER_C2S_BURST (512u << 10)
#define XD_SHAPER_S2S_RATE (1u << 20)
#define XD_SHAPER_S2S_BURST (4u << 20)

/* "c2s", "s2s", "component", "http". */
const char *xd_listen_module_name(int module);

/* ---- acl, access_rules, shaper, shaper_rules, modules --------------------------------------- */

typedef struct xd_cidr {
    int family;          /* AF_INET or AF_INET6 */
    uint8_t addr[16];    /* network address, 4 or 16 bytes used, host bits zero */
    unsigned prefix;     /* prefix length, 0..32 or 0..128 */
} xd_cidr_t;

typedef struct xd_cidr_list {
    xd_cidr_t *items; /* owned */
    size_t count;     /* number of items */
} xd_cidr_list_t;

typedef struct xd_regex_list {
    regex_t *items;   /* compiled (POSIX extended, no sub-matches) */
    char **sources;   /* the patterns as written, for messages */
    size_t count;     /* number of items */
} xd_regex_list_t;

/* One ACL: matches when ANY of its entries matches (ejabberd semantics). */
typedef struct xd_acl {
    char *name;                    /* the key under `acl` */
    xd_strlist_t user;             /* "local@domain" or "local" (= at the host asked about) */
    xd_strlist_t server;           /* domains */
    xd_strlist_t resource;         /* resources, exact */
    xd_cidr_list_t ip;             /* source address ranges */
    xd_regex_list_t user_regexp;   /* localparts of users of the host asked about */
    xd_regex_list_t server_regexp; /* domains */
    xd_regex_list_t resource_regexp; /* resources */
} xd_acl_t;

typedef struct xd_acl_set {
    xd_acl_t *items; /* owned, in document order */
    size_t count;    /* number of items */
} xd_acl_set_t;

/* One clause of a rule: `allow: admin` → value "allow", acl "admin". */
typedef struct xd_rule_clause {
    char *value;                 /* "allow"/"deny", or a shaper_rules value */
    char *acl;                   /* ACL name, or NULL when inline_acl is used */
    xd_acl_t *inline_acl;        /* `allow: {ip: 10.0.0.0/8}`, owned, or NULL */
    const xd_conf_node_t *node;  /* where the ACL reference is written (NULL: built in) */
    const xd_conf_node_t *value_node; /* where the value is written (NULL: built in) */
} xd_rule_clause_t;

typedef struct xd_rule {
    char *name;                  /* the key under access_rules / shaper_rules */
    xd_rule_clause_t *clauses;   /* first match wins */
    size_t count;                /* number of clauses */
    bool listed;                 /* written as a sequence (paths say [i]) */
} xd_rule_t;

typedef struct xd_rule_set {
    xd_rule_t *items; /* owned, in document order */
    size_t count;     /* number of items */
} xd_rule_set_t;

typedef struct xd_shaper {
    char *name;            /* the key under `shaper` */
    uint64_t rate_bytes;   /* sustained bytes per second */
    uint64_t burst_bytes;  /* bucket size in bytes (defaults to one second of rate) */
} xd_shaper_t;

typedef struct xd_shaper_set {
    xd_shaper_t *items; /* owned */
    size_t count;       /* number of items */
} xd_shaper_set_t;

/* One entry of `modules`: the options stay a raw tree until the module's own
 * table parses them (xd_opt_parse_at(table, opts, conf, "modules.mod_x", &err)). */
typedef struct xd_module_conf {
    char *name;                  /* "mod_ping" */
    const xd_conf_node_t *opts;  /* mapping, or NULL for `mod_x: {}` / null; holds its doc */
} xd_module_conf_t;

typedef struct xd_module_set {
    xd_module_conf_t *items; /* owned, in document order */
    size_t count;            /* number of items */
} xd_module_set_t;

/* One entry of `host_config`: a served host and its own options, kept raw
 * until the host's scope is parsed over the top level (xd_config_t.hosts_conf). */
typedef struct xd_host_entry {
    char *host;                 /* the key, prepared as a domain; one of hosts */
    const xd_conf_node_t *opts; /* mapping, or NULL for `host: ~`; holds its document */
} xd_host_entry_t;

typedef struct xd_host_entry_set {
    xd_host_entry_t *items; /* owned, in document order */
    size_t count;           /* number of items */
} xd_host_entry_set_t;

/* ---- sql: the database of a scope ---------------------------------------------------------- */

/* The sql_* options of one scope: the top level (xd_host_conf_t.sql of
 * xd_config_t.global, the same values as xd_config_t.sql_*), or a host, whose
 * host_config may set any of them and inherits the others from the top
 * level (as ejabberd's host_config).  sql_database and sql_port have their
 * computed defaults filled in (sqlite: <data_dir>/xmppd.db; pgsql 5432, mysql
 * 3306).  Two scopes name the same database (one pool) when
 * xd_sql_conf_same_db; a load refuses two that do with different pool
 * settings.  Immutable after load. */
typedef struct xd_sql_conf {
    int type;                    /* xd_sql_type */
    char *server;                /* host name or socket directory (odbc: connection string) */
    int port;                    /* 0 for sqlite/odbc */
    char *database;              /* database name; sqlite: file path */
    char *username;
    char *password;              /* never logged */
    int pool_size;               /* connections of the pool */
    char *ssl;                   /* NULL: the driver's default */
    char *ssl_cafile;
    uint64_t fault_wait_ms;
    bool own;                    /* a host that sets sql_* in its host_config */
} xd_sql_conf_t;

/* ---- scopes ---------------------------------------------------------------------------------- */

typedef enum xd_auth_method {
    XD_AUTH_INTERNAL,  /* SCRAM credentials in the database */
    XD_AUTH_EXTERNAL,  /* extauth_program (ejabberd's external auth protocol) */
    XD_AUTH_ANONYMOUS, /* SASL ANONYMOUS */
    XD_AUTH_LDAP,      /* bind as the user to an LDAP directory (ldap_*) */
    XD_AUTH_PAM,       /* a PAM service (pam_*) */
} xd_auth_method;

/* auth_method: one method or a list tried in order (as ejabberd's), each at
 * most once.  items[0] is also xd_host_conf_t.auth_method. */
#define XD_AUTH_METHODS_MAX 5
typedef struct xd_auth_methods {
    int items[XD_AUTH_METHODS_MAX]; /* xd_auth_method values, in the order written */
    size_t count;                   /* 1..XD_AUTH_METHODS_MAX */
} xd_auth_methods_t;

/* ldap_encrypt. */
typedef enum xd_ldap_encrypt {
    XD_LDAP_ENCRYPT_NONE,     /* plain ldap:// */
    XD_LDAP_ENCRYPT_TLS,      /* ldaps:// (TLS from the first byte) */
    XD_LDAP_ENCRYPT_STARTTLS, /* ldap:// then the StartTLS extended operation */
} xd_ldap_encrypt;

/* ldap_uids: the attributes that hold a user name, each with the format of
 * its value ("%u" = the user name). */
typedef struct xd_ldap_uids {
    char **attrs;   /* owned attribute names */
    char **formats; /* owned formats, one per attribute */
    size_t count;   /* at least one */
} xd_ldap_uids_t;

/* pam_userinfotype: what is passed to PAM as the user name. */
typedef enum xd_pam_userinfo { XD_PAM_USERNAME, XD_PAM_JID } xd_pam_userinfo;

/* What resource binding does when the full JID is taken (RFC 6120 7.7.2.2). */
typedef enum xd_resource_conflict {
    XD_RESOURCE_REPLACE, /* close the old session with <conflict/> (default) */
    XD_RESOURCE_REFUSE,  /* refuse the new bind with <conflict/> */
    XD_RESOURCE_RENAME,  /* give the new session a server-generated resource */
} xd_resource_conflict;

/* The HOST-scope options: the top-level values (xd_config_t.global), or the
 * effective ones of one host.  Immutable after load. */
typedef struct xd_host_conf {
    char *host;                        /* the served host; NULL for the global scope */
    union {
        int auth_method;               /* xd_auth_method: the first of auth_methods */
        xd_auth_methods_t auth_methods; /* the methods tried in order */
    };
    char *extauth_program;             /* external: command line of the script */
    int extauth_pool_size;             /* external: processes per host */
    char *language;                    /* default xml:lang of server messages */
    int scram_iterations;              /* PBKDF2 rounds for new SCRAM credentials */
    uint64_t extauth_timeout_ms;       /* external: answer time per request */
    xd_strlist_t ldap_servers;         /* ldap: host names or addresses, tried in order */
    int ldap_port;                     /* ldap: 0 = 389, or 636 with ldap_encrypt tls */
    int ldap_encrypt;                  /* ldap: xd_ldap_encrypt */
    bool ldap_tls_verify;              /* ldap: verify the server's certificate */
    char *ldap_tls_cacertfile;         /* ldap: CA bundle (PEM) or NULL = system */
    char *ldap_rootdn;                 /* ldap: DN of the service bind; "" = anonymous */
    char *ldap_password;               /* ldap: password of the service bind */
    char *ldap_base;                   /* ldap: search base of users */
    xd_ldap_uids_t ldap_uids;          /* ldap: user name attributes */
    char *ldap_filter;                 /* ldap: extra filter users must match, or "" */
    int ldap_deref_aliases;            /* ldap: LDAP_DEREF_* */
    uint64_t ldap_timeout_ms;          /* ldap: connect and per-operation limit */
    int ldap_pool_size;                /* ldap: connections per host */
    char *pam_service;                 /* pam: the service name (/etc/pam.d/NAME) */
    int pam_userinfotype;              /* pam: xd_pam_userinfo */
    char *pam_confdir;                 /* pam: directory of service files, NULL = /etc/pam.d */
    int resource_conflict;             /* xd_resource_conflict */
    bool allow_unencrypted_plain_auth; /* SASL PLAIN without TLS */
    int max_auth_failures;             /* SASL failures before the stream is closed */
    uint64_t auth_failure_delay_ms;    /* pause before each SASL failure is answered */
    xd_strlist_t disable_sasl_mechanisms; /* mechanism names never offered */
    bool sasl_tls13_tls_unique;        /* accept (not advertise) tls-unique on TLS 1.3 */
    char *sasl_authzid_access;         /* access rule: who may use another authzid */
    bool fast;                         /* XEP-0484 FAST tokens offered in SASL2 */
    uint64_t fast_token_ttl_ms;        /* lifetime of a FAST token */
    int max_user_sessions;             /* sessions per account; 0 = no limit */
    bool stream_management;            /* XEP-0198 offered on client streams */
    int sm_max_unacked;                /* unacknowledged stanzas before the stream is closed */
    int sm_ack_request_every;          /* <r/> after this many unacknowledged; 0 = never */
    uint64_t sm_ack_request_interval_ms; /* <r/> at the latest this long after one; 0 = never */
    uint64_t sm_resume_timeout_ms;     /* a broken stream's session is kept this long; 0 = no resumption */
    uint64_t sm_max_resume_timeout_ms; /* the most a client may ask for; 0 = sm_resume_timeout */
    char *sm_resume_location;          /* 'location' of <enabled/>, or "" */
    xd_acl_set_t acl;                  /* this scope's own ACLs */
    xd_rule_set_t access_rules;        /* this scope's own access rules */
    xd_rule_set_t shaper_rules;        /* this scope's own shaper rules */
    xd_module_set_t modules;           /* this scope's own module entries */
    xd_sql_conf_t sql;                 /* the scope's database (sql_*); see xd_sql_conf_t */
    const struct xd_host_conf *parent; /* the global scope, or NULL for it */
} xd_host_conf_t;

/* ---- auth_limits ----------------------------------------------------------------------------- */

/* Failed-authentication limits shared by all streams (src/auth/authlimit.h,
 * docs/design.md 4.1): per address (IPv4 address, IPv6 /64) and per account.
 * Immutable after load. */
typedef struct xd_auth_limits {
    int max_failures;          /* failures of an address within window that ban it; 0 = never */
    uint64_t ban_lifetime_ms;  /* how long a banned address is refused */
    uint64_t window_ms;        /* failures older than this (since the last one) are forgotten */
    int delay_after;           /* failures of an address or account before answers slow down;
                                  0 = never */
    uint64_t delay_ms;         /* the first extra delay; doubled by each further failure */
    uint64_t max_delay_ms;     /* ... up to this */
    char *exempt;              /* access rule: addresses it allows are never limited */
    int size;                  /* addresses and accounts remembered (oldest evicted) */
} xd_auth_limits_t;

/* ---- names ----------------------------------------------------------------------------------- */

/* How the loader prepares the names written in the file: each function
 * returns 0 with *out a new normalised string (xd_free), or an XD_E* code
 * naming what is wrong.  Immutable; outlives every config loaded with it. */
typedef struct xd_conf_names {
    xd_opt_prep_fn domain;   /* a domain: hosts, ACL server, host_config, component hosts */
    xd_opt_prep_fn user;     /* an ACL user: "local@domain" (bare JID), or a localpart */
    xd_opt_prep_fn local;    /* a localpart (xmppctl USER arguments) */
    xd_opt_prep_fn resource; /* a resourcepart (xmppctl RESOURCE arguments) */
    xd_opt_prep_fn jid;      /* a whole JID, as its normalised full text (JID arguments) */
} xd_conf_names_t;

/* ---- the configuration ----------------------------------------------------------------------- */

typedef enum xd_sql_type { XD_SQL_SQLITE, XD_SQL_PGSQL, XD_SQL_MYSQL, XD_SQL_ODBC } xd_sql_type;
typedef enum xd_default_db { XD_DEFAULT_DB_SQL } xd_default_db;

typedef struct xd_config {
    _Atomic unsigned refs;       /* private: xd_config_ref/unref */
    xd_conf_doc_t *doc;          /* the parsed file (kept for module options); NULL built-in */
    char *path;                  /* the file loaded, or NULL for the built-in defaults */
    const xd_conf_names_t *names; /* how its names were prepared (borrowed, static) */

    xd_strlist_t hosts;          /* served domains, normalised, unique, at least one */
    int loglevel;                /* xd_log_level */
    char *log_file;              /* "-" = stderr */
    unsigned workers;            /* worker threads, 1..256 ("auto" resolved) */
    bool io_uring;               /* batch a loop turn's writes through io_uring (Linux) */
    char *data_dir;              /* database, certificates, sockets */
    int pool_threads;            /* blocking pool threads */
    int pool_queue;              /* blocking pool queue bound */
    xd_strlist_t certfiles;      /* glob patterns of PEM files */
    int tls_min_version;         /* 12 (TLS 1.2) or 13 */
    char *tls_ciphers;           /* TLS <= 1.2 cipher list, NULL = built-in modern list */
    char *tls_ciphersuites;      /* TLS 1.3 suites, NULL = OpenSSL default */
    char *ctl_socket;            /* xmppctl socket path (default <data_dir>/xmppd.sock) */
    char *module_dir;            /* where <name>.so modules are loaded from */
    char *pid_file;              /* or NULL */
    xd_optlist_t listen;         /* xd_listen_conf_t items */
    int default_db;              /* xd_default_db */
    int sql_type;                /* xd_sql_type */
    char *sql_server;            /* host name or socket directory */
    int sql_port;                /* 0 for sqlite/odbc; resolved per type */
    char *sql_database;          /* database name; sqlite: file path */
    char *sql_username;          /* user name */
    char *sql_password;          /* password (never logged) */
    int sql_pool_size;           /* connections per node */
    char *sql_ssl;               /* pgsql sslmode; NULL: the driver's default */
    char *sql_ssl_cafile;        /* CA file for verify-ca / verify-full */
    uint64_t sql_fault_wait_ms;  /* wait for an unreachable database */
    char *ca_file;               /* trusted CA certificates (PEM) for peer verification */
    char *ca_path;               /* directory of trusted CAs (hashed); both NULL = system's */
    char *s2s_access;            /* access rule deciding which remote domains may federate */
    bool s2s_require_encryption; /* no dialback, SASL or stanzas before TLS on s2s streams */
    bool s2s_verify_certificates;/* a peer must present a valid certificate (no dialback) */
    bool s2s_dialback;           /* offer and use server dialback (XEP-0220) */
    bool s2s_multiplex;          /* add local domains to established outgoing streams */
    const xd_conf_node_t *s2s_hosts; /* {domain: "host:port"} static routes, raw */
    char *s2s_dns_servers;       /* c-ares server list, NULL = /etc/resolv.conf */
    uint64_t s2s_connect_timeout_ms; /* resolve + connect + authenticate, then bounce */
    uint64_t s2s_timeout_ms;     /* close s2s streams idle this long */
    int s2s_queue_max;           /* stanzas held for a remote domain while connecting */
    int s2s_max_streams;         /* outgoing s2s connections, all workers */
    xd_auth_limits_t auth_limits; /* failed-authentication limits (all streams) */
    xd_shaper_set_t shaper;      /* traffic shapers */
    xd_host_entry_set_t host_config; /* per-host options, raw; effective ones in hosts_conf */

    xd_host_conf_t global;       /* HOST-scope options at the top level */
    xd_host_conf_t *hosts_conf;  /* hosts.count entries, effective per host */
    xd_map_t host_index;         /* private: host → its position in hosts + 1 (lookups by
                                    name stay O(1) with thousands of hosts) */
    xd_map_t host_config_index;  /* private: host → its host_config entry + 1 */
} xd_config_t;

/* Loads and validates `path`, preparing names with `names`.  On success *out
 * is a new reference.  On error *err is a malloc'd message, one line per error
 * found ("xmppd.yml:12:5: listen[1].port: 70000 is out of range (expected
 * 1..65535)"), and the result is an XD_ECONF_* code or -errno. */
int xd_config_load_with(const xd_conf_names_t *names, const char *path, xd_config_t **out,
                        char **err);

/* Parses a configuration from memory; `name` appears in locations. */
int xd_config_load_string_with(const xd_conf_names_t *names, const char *name, const char *text,
                               size_t len, xd_config_t **out, char **err);

/* The built-in configuration used when there is no file: host localhost,
 * data under ./var, c2s on 127.0.0.1:5222 and [::1]:5222. */
int xd_config_default_with(const xd_conf_names_t *names, xd_config_t **out);

/* The same with the RFC 7622 preparation, xd_config_load and friends, are
 * the xmpp layer's: xmppd/acl.h. */

/* Whether the running configuration may be replaced by `cfg`, loaded from a file
 * for a reload: 0, or XD_ECONF_RESTART with *err one line per reason (as load
 * errors: "xmppd.yml:5:11: listen[0].port: changed (was 5222, now 5223): takes
 * effect only at a restart").  Refused: an empty file (it would run on the
 * built-in defaults), a file that serves none of the running hosts, and a
 * change to any XD_OPT_RESTART option (listeners, data_dir, storage, workers,
 * …: docs/configuration.md marks them). */
int xd_config_check_reload(const xd_config_t *running, const xd_config_t *cfg, char **err);

xd_config_t *xd_config_ref(xd_config_t *cfg);
void xd_config_unref(xd_config_t *cfg);

/* The published configuration: a new reference (NULL before the first publish). */
xd_config_t *xd_config_get(void);

/* Publishes `cfg` (takes over the caller's reference; NULL clears) and drops
 * the reference to the previous one once no reader is still picking it up. */
void xd_config_publish(xd_config_t *cfg);

/* Effective HOST-scope values of `host` (normalised), or NULL when not served. */
const xd_host_conf_t *xd_config_host(const xd_config_t *cfg, const char *host);

/* Plain accessors (the fields may also be read directly). */
size_t xd_config_host_count(const xd_config_t *cfg);
const char *xd_config_host_name(const xd_config_t *cfg, size_t i); /* NULL past the end */
const char *xd_config_default_host(const xd_config_t *cfg);       /* the first of hosts */
bool xd_config_is_host(const xd_config_t *cfg, const char *host);  /* normalised host */
int xd_config_loglevel(const xd_config_t *cfg);                    /* an xd_log_level */
const char *xd_config_log_file(const xd_config_t *cfg);            /* "-" = stderr */
unsigned xd_config_workers(const xd_config_t *cfg);
const char *xd_config_data_dir(const xd_config_t *cfg);
unsigned xd_config_pool_threads(const xd_config_t *cfg);
unsigned xd_config_pool_queue(const xd_config_t *cfg);
size_t xd_config_listen_count(const xd_config_t *cfg);
const xd_listen_conf_t *xd_config_listen(const xd_config_t *cfg, size_t i);
const char *xd_config_ctl_socket(const xd_config_t *cfg);

/* Lookups by name in a scope, falling back to the global scope. */
const xd_acl_t *xd_config_acl(const xd_host_conf_t *scope, const char *name);
const xd_rule_t *xd_config_access_rule(const xd_host_conf_t *scope, const char *name);
const xd_rule_t *xd_config_shaper_rule(const xd_host_conf_t *scope, const char *name);
const xd_shaper_t *xd_config_shaper(const xd_config_t *cfg, const char *name);
/* The options of module `name` for `host` (NULL host: global), and whether it is enabled;
 * NULL for a host that is not served. */
const xd_module_conf_t *xd_config_module(const xd_config_t *cfg, const char *host,
                                         const char *name);

/* The database settings of `host` (normalised; NULL: the top level), or NULL
 * when host is not served. */
const xd_sql_conf_t *xd_config_sql(const xd_config_t *cfg, const char *host);

/* Whether a and b name the same database: the same sql_type and, for sqlite,
 * the same sql_database path as written; else the same sql_server,
 * sql_port and sql_database. */
bool xd_sql_conf_same_db(const xd_sql_conf_t *a, const xd_sql_conf_t *b);

/* The sql_type's name ("sqlite", "pgsql", "mysql", "odbc"). */
const char *xd_sql_type_name(int type);

/* ---- addresses ------------------------------------------------------------------------------- */

/* Whether `addr` lies in `cidr`. */
bool xd_cidr_match(const xd_cidr_t *cidr, const struct sockaddr *addr);

/* Parses "10.0.0.0/8", "::1/128" or a bare address (full prefix).  0 or XD_EINVAL. */
int xd_cidr_parse(const char *s, xd_cidr_t *out);

/* ---- tables, for tools/gen-docs and tests ---------------------------------------------------- */

typedef struct xd_config_doc_section {
    const char *title;      /* "listen entries" */
    const char *intro;      /* Markdown paragraph(s) */
    const xd_opt_t *table;  /* the options, or NULL for prose only */
    size_t size;            /* sizeof the struct the table fills */
} xd_config_doc_section_t;

/* {NULL}-terminated list of every documented table, in docs order.  The tables
 * parse in a context whose udata is the xd_config_t being loaded (its names
 * prepare hosts and domains; xd_opt_check_defaults takes one likewise). */
const xd_config_doc_section_t *xd_config_doc_sections(void);

#endif

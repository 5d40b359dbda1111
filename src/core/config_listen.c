/*
 * config_listen.c — `listen` entries of the configuration (include/xmppd/config.h):
 * their table, a component listener's `hosts`, and the stage 3 checks of listeners.
 *
 * Sits in src/core beside config.c (config_int.h).  A listen entry is one
 * SUB_LIST item: cfg_listen_check fills what depends on other fields
 * (max_stanza_size and max_queue per module) and checks what no single option can (the
 * address, a component's secrets).  `hosts` is a MAP of component domains,
 * prepared with the load's names, to {password}.  cfg_check_listen runs
 * after the host scopes exist: access rules and shapers named by a listener
 * must be defined somewhere, a listener pinned to one `worker` must name one
 * that exists, and no two listeners may bind the same address and port.
 *
 * Invariants: a parsed entry always has an address that inet_pton accepts,
 * a max_stanza_size, a max_queue and a worker (-1 when every worker accepts); only
 * component listeners have `hosts`.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "core/config_int.h"

/* RFC 6120 13.12: a server does not limit stanzas to fewer than 10000 bytes. */
#define CFG_MIN_STANZA_SIZE 10000u
/* max_queue: a few stanzas at least; the defaults per module (docs/admin.md).
 * A client's is above the largest login burst the modules' defaults allow
 * (a roster up to mod_roster's max_roster_size, 1 MiB; stored messages up
 * to mod_offline's max_user_size, 2 MiB). */
#define CFG_MIN_QUEUE (64u << 10)
#define CFG_C2S_QUEUE ((size_t)4 << 20)
#define CFG_S2S_QUEUE ((size_t)4 << 20)

static int cfg_domain_key(xd_opt_ctx_t *ctx, const xd_conf_node_t *key, char **out);
static int cfg_component_host_check(xd_opt_ctx_t *ctx, const xd_conf_node_t *map, void *conf);
static int cfg_listen_check(xd_opt_ctx_t *ctx, const xd_conf_node_t *map, void *conf);

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

static const xd_opt_map_t cfg_http_routes_map = {
    .type_name = "map of paths to handler names",
    .expected = "a mapping {path: handler}",
    .noun = "path",
    .size = sizeof(xd_http_route_conf_t),
    .value = XD_OPT_MAP_VALUE(XD_OPT_TYPE_STRING, offsetof(xd_http_route_conf_t, handler), NULL),
};

#define L_ xd_listen_conf_t
const xd_opt_t cfg_listen_opts[] = {
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
                "stream with `policy-violation`. At least 10000 bytes (RFC 6120 13.12).",
                0, "64KB (c2s, http), 128KB (s2s, component)"),
    XD_OPT_FULL("shaper", XD_OPT_TYPE_STRING, L_, shaper, NULL, NULL,
                "Traffic shaper for each connection (a token bucket): a name under `shaper`, "
                "a rule under `shaper_rules`, or `none`. It counts the bytes a connection sends "
                "and the copies the server sends for it (the presence broadcast to every "
                "contact); in debt, the connection's input pauses until the bucket refills. "
                "Without it, c2s listeners get 64 KiB/s with a 512 KiB burst, s2s listeners "
                "1 MiB/s with a 4 MiB burst, components none.",
                0, "64 KiB/s, burst 512 KiB (c2s); 1 MiB/s, burst 4 MiB (s2s); none (component)"),
    XD_OPT_FULL("max_queue", XD_OPT_TYPE_SIZE, L_, max_queue, NULL, NULL,
                "Bytes queued for a connection that does not read what it is sent (beyond what "
                "the kernel's socket buffer holds); more closes the stream with "
                "`policy-violation`. At least 64KB; keep it above the largest login burst "
                "(mod_roster's max_roster_size plus mod_offline's max_user_size).",
                0, "4MB"),
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
    XD_OPT_FULL("worker", XD_OPT_TYPE_INT, L_, worker, NULL,
                (&(const xd_opt_range_t){ 0, 255 }),
                "Only this worker (counted from 0, below `workers`) accepts connections on "
                "this address, so every stream of the listener lives on that worker; without "
                "it each worker listens (SO_REUSEPORT) and the kernel spreads connections over "
                "them. Keeps a noisy or bulk listener (a gateway, a load generator) off the "
                "other workers' loops, and lets tests place sessions on a chosen worker.",
                0, "every worker"),
    XD_OPT_MAP("request_handlers", L_, request_handlers, NULL, &cfg_http_routes_map,
               "HTTP listeners: `{path: handler}`, the handler that serves each path prefix "
               "(`websocket`, `host_meta`, and those of modules). Without it every handler "
               "is served at its default path (`/ws`, `/.well-known/host-meta`, "
               "`/.well-known/host-meta.json`)."),
    XD_OPT_SIZE("max_header_size", L_, max_header_size, "8KB",
                "HTTP listeners: request line and headers of a request; more is answered "
                "431 and the connection closed."),
    XD_OPT_SIZE("max_body_size", L_, max_body_size, "1MB",
                "HTTP listeners: a request body the server collects for its handler; more is "
                "answered 413. Handlers that stream bodies (uploads) set their own limit."),
    XD_OPT_DURATION("header_timeout", L_, header_timeout_ms, "10s",
                    "HTTP listeners: time a client has for a request's line and headers, "
                    "counted from the connection or the previous response (slow clients, "
                    "slowloris); also how long an idle keep-alive connection stays open."),
    XD_OPT_INT("request_rate", L_, request_rate, "50", 1, 1000000,
               "HTTP listeners: requests per second one connection may make (a burst of as "
               "many); beyond, the request is answered 429 and the connection closed."),
    XD_OPT_STRING_LIST("cors_origins", L_, cors_origins, "[\"*\"]",
                       "HTTP listeners: origins that browser pages may call from (CORS, "
                       "answered on every handler's path and to preflight OPTIONS); `*` any; "
                       "`[]` sends no CORS headers."),
    XD_OPT_STRING_LIST("websocket_origins", L_, websocket_origins, "[]",
                       "HTTP listeners: Origin values a WebSocket upgrade may carry "
                       "(`https://chat.example.org`); others are answered 403. `[]`: any."),
    XD_OPT_DURATION("websocket_ping_interval", L_, websocket_ping_ms, "60s",
                    "HTTP listeners: a WebSocket silent this long gets a ping frame; one "
                    "that stays silent as long again is closed. 0: never."),
    XD_OPT_STRING("websocket_see_other_uri", L_, websocket_see_other, NULL,
                  "HTTP listeners: answer every WebSocket `<open/>` with "
                  "`<close see-other-uri='…'/>` naming this URI (RFC 7395 3.6.1), to move "
                  "clients elsewhere."),
    XD_OPT_DURATION("bosh_max_inactivity", L_, bosh_max_inactivity_ms, "60s",
                    "HTTP listeners: a BOSH session with no request held ends after this long "
                    "(XEP-0124 `inactivity`), as a client stream whose peer went silent: "
                    "unavailable presence, or a stream management session to resume."),
    XD_OPT_DURATION("bosh_max_wait", L_, bosh_max_wait_ms, "60s",
                    "HTTP listeners: the longest a BOSH request is held before an empty answer "
                    "(the client's `wait` is cut to it)."),
    XD_OPT_INT("bosh_max_hold", L_, bosh_max_hold, "1", 0, 16,
               "HTTP listeners: BOSH requests held at once per session (the client's `hold` "
               "is cut to it)."),
    XD_OPT_INT("bosh_max_requests", L_, bosh_max_requests, "2", 1, 17,
               "HTTP listeners: BOSH requests a session may have in flight, the window of "
               "request ids (`requests`; at least hold + 1 is used); more is overactivity "
               "(policy-violation)."),
    XD_OPT_DURATION("bosh_max_pause", L_, bosh_max_pause_ms, "120s",
                    "HTTP listeners: the longest pause a BOSH client may ask for (`maxpause`); "
                    "a longer one ends the session with policy-violation."),
    XD_OPT_SIZE("bosh_max_queue", L_, bosh_max_queue, "256KB",
                "HTTP listeners: stanzas kept for a BOSH session while no request is held; "
                "beyond, the session ends with a policy-violation stream error as a TCP "
                "client that does not read would."),
    XD_OPT_END,
};
#undef L_

const xd_opt_sub_t cfg_listen_sub = { cfg_listen_opts, sizeof(xd_listen_conf_t),
                                             cfg_listen_check, "listen entries" };

const char *
xd_listen_module_name(int module)
{
    const char *n = xd_opt_enum_name(cfg_listen_modules, module);
    return n ? n : "?";
}

/* ---- Checks ---------------------------------------------------------------------------------- */

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
    if (!xd_conf_map_get(map, "worker"))
        l->worker = -1; /* every worker */
    const xd_conf_node_t *mss = xd_conf_map_get(map, "max_stanza_size");
    if (mss && !xd_conf_is_null(mss) && l->max_stanza_size < CFG_MIN_STANZA_SIZE) {
        /* 0 used to mean "the default" silently: a written value is taken as written. */
        xd_opt_push_key(ctx, "max_stanza_size");
        xd_opt_error(ctx, mss, "%zu is too small (at least %u bytes: RFC 6120 13.12)",
                     l->max_stanza_size, CFG_MIN_STANZA_SIZE);
        xd_opt_pop(ctx);
        rc = -1;
    } else if (l->max_stanza_size == 0) {
        l->max_stanza_size = l->module == XD_LISTEN_MOD_S2S ||
                                     l->module == XD_LISTEN_MOD_COMPONENT
                                 ? 131072
                                 : 65536;
    }
    const xd_conf_node_t *mq = xd_conf_map_get(map, "max_queue");
    if (mq && !xd_conf_is_null(mq) && l->max_queue < CFG_MIN_QUEUE) {
        xd_opt_push_key(ctx, "max_queue");
        xd_opt_error(ctx, mq, "%zu is too small (at least %u bytes)", l->max_queue,
                     CFG_MIN_QUEUE);
        xd_opt_pop(ctx);
        rc = -1;
    } else if (l->max_queue == 0) {
        l->max_queue = l->module == XD_LISTEN_MOD_C2S || l->module == XD_LISTEN_MOD_HTTP
                           ? CFG_C2S_QUEUE
                           : CFG_S2S_QUEUE;
    }
    if (l->module == XD_LISTEN_MOD_COMPONENT && !l->password && l->hosts.count == 0) {
        xd_opt_error(ctx, map, "a component listener needs `password` or `hosts`");
        rc = -1;
    }
    if (l->hosts.count > 0 && l->module != XD_LISTEN_MOD_COMPONENT) {
        xd_opt_error(ctx, map, "`hosts` is for component listeners");
        rc = -1;
    }
    if (l->request_handlers.count > 0 && l->module != XD_LISTEN_MOD_HTTP) {
        xd_opt_error(ctx, map, "`request_handlers` is for http listeners");
        rc = -1;
    }
    const xd_conf_node_t *rh = xd_conf_map_get(map, "request_handlers");
    for (size_t i = 0; i < l->request_handlers.count; i++) {
        const char *path = l->request_handlers.items[i].name;
        if (path[0] != '/') {
            const xd_conf_node_t *at = rh ? xd_conf_map_key(rh, path) : NULL;
            xd_opt_push_key(ctx, "request_handlers");
            xd_opt_error(ctx, at ? at : map, "the path \"%s\" must start with /", path);
            xd_opt_pop(ctx);
            rc = -1;
        }
    }
    return rc;
}

void
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
        bool shaper_ok = !l->shaper || strcmp(l->shaper, "none") == 0 ||
                         xd_config_shaper(cfg, l->shaper) ||
                         cfg_rule_defined(&cfg->global.shaper_rules, l->shaper);
        for (size_t h = 0; h < cfg->hosts.count; h++) {
            access_ok = access_ok || cfg_rule_defined(&cfg->hosts_conf[h].access_rules, l->access);
            shaper_ok = shaper_ok ||
                        cfg_rule_defined(&cfg->hosts_conf[h].shaper_rules, l->shaper);
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
        if (l->worker >= 0 && (unsigned)l->worker >= cfg->workers) {
            xd_opt_push_key(ctx, "worker");
            xd_opt_error(ctx, xd_conf_map_get(entry, "worker"),
                         "worker %d does not exist: there %s %u (`workers`, counted from 0)",
                         l->worker, cfg->workers == 1 ? "is" : "are", cfg->workers);
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

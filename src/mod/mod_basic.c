/*
 * mod_basic.c — the IQs every server answers, as IQ handlers (iq.h):
 * XEP-0199 ping (to the server and to an account), XEP-0092 software
 * version, XEP-0202 entity time, XEP-0030 service discovery (info and
 * items; features from the handler registry), XEP-0280 carbons (enable,
 * disable; the copies are made by src/router/carbons.c).  All INLINE: nothing here
 * blocks.  They move under the module API (per host, options) when it lands.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "mod/mod_basic.h"
#include "xd_version.h"
#include "xmppd/caps.h"
#include "xmppd/config.h"
#include "xmppd/err.h"
#include "xmppd/iq.h"
#include "xmppd/opt.h"
#include "xmppd/ns.h"
#include "xmppd/session.h"
#include "xmppd/stanza.h"

static xd_stanza_t *
basic_ping(const xd_iq_req_t *req)
{
    return xd_iq_result(req->iq);
}

static xd_stanza_t *
basic_version(const xd_iq_req_t *req)
{
    if (strcmp(xd_el_attr(xd_stanza_root(req->iq), "type"), "get") != 0)
        return xd_stanza_error(req->iq, XD_COND_NOT_ALLOWED, NULL);
    xd_el_t *r = xd_iq_result_builder(req->iq);
    xd_el_t *q = xd_el_add_child(r, "query", XD_NS_VERSION);
    xd_el_add_text(xd_el_add_child(q, "name", NULL), "xmppd");
    xd_el_add_text(xd_el_add_child(q, "version", NULL), XD_VERSION);
    return xd_el_freeze(r);
}

static xd_stanza_t *
basic_time(const xd_iq_req_t *req)
{
    if (strcmp(xd_el_attr(xd_stanza_root(req->iq), "type"), "get") != 0)
        return xd_stanza_error(req->iq, XD_COND_NOT_ALLOWED, NULL);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char utc[96];
    snprintf(utc, sizeof utc, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    xd_el_t *r = xd_iq_result_builder(req->iq);
    xd_el_t *t = xd_el_add_child(r, "time", XD_NS_TIME);
    xd_el_add_text(xd_el_add_child(t, "tzo", NULL), "+00:00"); /* the server keeps UTC */
    xd_el_add_text(xd_el_add_child(t, "utc", NULL), utc);
    return xd_el_freeze(r);
}

/* mod_disco's options: XEP-0157 contact addresses, published as XEP-0128
 * extended information in the server's disco#info. */
typedef struct disco_info_entry {
    char *name;          /* the field: abuse-addresses, admin-addresses, … */
    xd_strlist_t urls;   /* its values: mailto:, xmpp:, https: … */
} disco_info_entry_t;

typedef struct disco_conf {
    xd_optlist_t server_info; /* disco_info_entry_t items */
} disco_conf_t;

static const xd_opt_enum_t disco_fields[] = {
    { "abuse-addresses", 0 },  { "admin-addresses", 1 },    { "feedback-addresses", 2 },
    { "sales-addresses", 3 },  { "security-addresses", 4 }, { "status-addresses", 5 },
    { "support-addresses", 6 }, { NULL, 0 },
};

static int
disco_entry_check(xd_opt_ctx_t *ctx, const xd_conf_node_t *map, void *conf)
{
    disco_info_entry_t *e = conf;
    for (size_t i = 0; disco_fields[i].name; i++)
        if (!strcmp(disco_fields[i].name, e->name))
            return 0;
    xd_opt_error(ctx, map, "name: \"%s\" is not a field of XEP-0157 (abuse-addresses, "
                 "admin-addresses, feedback-addresses, sales-addresses, security-addresses, "
                 "status-addresses, support-addresses)", e->name);
    return -1;
}

#define E_ disco_info_entry_t
static const xd_opt_t disco_entry_opts[] = {
    XD_OPT_FULL("name", XD_OPT_TYPE_STRING, E_, name, NULL, NULL,
                "XEP-0157 field, e.g. `abuse-addresses`.", XD_OPT_REQUIRED, NULL),
    XD_OPT_STRING_LIST("urls", E_, urls, "[]", "Addresses: `mailto:`, `xmpp:`, `https:` URIs."),
    XD_OPT_END,
};
#undef E_

static const xd_opt_sub_t disco_entry_sub = { disco_entry_opts, sizeof(disco_info_entry_t),
                                              disco_entry_check, "server_info entries" };

#define D_ disco_conf_t
static const xd_opt_t disco_opts[] = {
    XD_OPT_SUB_LIST("server_info", D_, server_info, "[]", &disco_entry_sub,
                    "Contact addresses of the service (XEP-0157) in the server's disco#info."),
    XD_OPT_END,
};
#undef D_

const xd_opt_t *
xd_disco_opts(void)
{
    return disco_opts;
}

static const xd_opt_enum_t ping_actions[] = {
    { "none", 0 },
    { "kill", 1 },
    { NULL, 0 },
};

#define P_ xd_ping_conf_t
static const xd_opt_t ping_opts[] = {
    XD_OPT_BOOL("send_pings", P_, send_pings, "false",
                "Ping clients that have been silent for `ping_interval` (XEP-0199 4.2)."),
    XD_OPT_DURATION("ping_interval", P_, interval_ms, "60s",
                    "Silence after which a client is pinged."),
    XD_OPT_DURATION("ping_ack_timeout", P_, ack_timeout_ms, "32s",
                    "How long a pinged client has to show it is alive (any input counts)."),
    XD_OPT_ENUM("timeout_action", P_, kill, "none", ping_actions,
                "What happens to a client that does not answer: `none` or `kill` (close the "
                "stream with connection-timeout)."),
    XD_OPT_END,
};
#undef P_

const xd_opt_t *
xd_ping_opts(void)
{
    return ping_opts;
}

bool
xd_mod_ping_conf(const xd_config_t *cfg, const char *host, xd_ping_conf_t *out)
{
    *out = (xd_ping_conf_t){ 0 };
    const xd_module_conf_t *m = xd_config_module(cfg, host, "mod_ping");
    if (!m)
        return false;
    xd_ping_conf_t pc = { 0 };
    if (xd_opt_parse_at(ping_opts, m->opts, &pc, "modules.mod_ping", NULL) != 0)
        return false;
    *out = pc; /* plain values only; xd_opt_free zeroes the struct */
    xd_opt_free(ping_opts, &pc);
    return out->send_pings;
}

int
xd_mod_basic_check_config(const xd_config_t *cfg, char **err)
{
    for (size_t i = 0; i < cfg->hosts.count; i++) {
        const xd_module_conf_t *m = xd_config_module(cfg, cfg->hosts.items[i], "mod_ping");
        if (!m)
            continue;
        xd_ping_conf_t pc = { 0 };
        int rc = xd_opt_parse_at(ping_opts, m->opts, &pc, "modules.mod_ping", err);
        if (rc != 0)
            return rc;
        xd_opt_free(ping_opts, &pc);
    }
    for (size_t i = 0; i < cfg->hosts.count; i++) {
        const xd_module_conf_t *m = xd_config_module(cfg, cfg->hosts.items[i], "mod_disco");
        if (!m)
            continue;
        disco_conf_t dc = { 0 };
        int rc = xd_opt_parse_at(disco_opts, m->opts, &dc, "modules.mod_disco", err);
        if (rc != 0)
            return rc;
        xd_opt_free(disco_opts, &dc);
    }
    return 0;
}

/* Appends the XEP-0128 form with the host's XEP-0157 addresses, if any. */
static void
basic_server_info(xd_el_t *q, const char *host)
{
    xd_config_t *cfg = xd_config_get();
    const xd_module_conf_t *m = cfg ? xd_config_module(cfg, host, "mod_disco") : NULL;
    disco_conf_t dc = { 0 };
    if (m && xd_opt_parse_at(disco_opts, m->opts, &dc, "modules.mod_disco", NULL) == 0) {
        if (dc.server_info.count) {
            xd_el_t *x = xd_el_add_child(q, "x", XD_NS_DATA);
            xd_el_set_attr(x, "type", "result");
            xd_el_t *f = xd_el_add_child(x, "field", NULL);
            xd_el_set_attr(f, "var", "FORM_TYPE");
            xd_el_set_attr(f, "type", "hidden");
            xd_el_add_text(xd_el_add_child(f, "value", NULL), "http://jabber.org/network/serverinfo");
            const disco_info_entry_t *e = dc.server_info.items;
            for (size_t i = 0; i < dc.server_info.count; i++) {
                f = xd_el_add_child(x, "field", NULL);
                xd_el_set_attr(f, "var", e[i].name);
                for (size_t k = 0; k < e[i].urls.count; k++)
                    xd_el_add_text(xd_el_add_child(f, "value", NULL), e[i].urls.items[k]);
            }
        }
        xd_opt_free(disco_opts, &dc);
    }
    if (cfg)
        xd_config_unref(cfg);
}

static void
basic_feature(void *arg, const char *ns)
{
    xd_el_t *q = arg;
    xd_el_set_attr(xd_el_add_child(q, "feature", NULL), "var", ns);
}

static void
basic_identity(void *arg, const char *category, const char *type, const char *name)
{
    xd_el_t *id = xd_el_add_child(arg, "identity", NULL);
    xd_el_set_attr(id, "category", category);
    xd_el_set_attr(id, "type", type);
    if (name && *name)
        xd_el_set_attr(id, "name", name);
}

/* The disco#info <query/> of the host itself (host true) or of an account
 * of it; the caller frees it. */
static xd_el_t *
basic_info_query(const char *served, bool host)
{
    xd_el_t *q = xd_el_new("query", XD_NS_DISCO_INFO);
    xd_el_t *id = xd_el_add_child(q, "identity", NULL);
    if (host) {
        xd_el_set_attr(id, "category", "server");
        xd_el_set_attr(id, "type", "im");
        xd_el_set_attr(id, "name", "xmppd");
    } else {
        /* XEP-0030 8: an account on this server. */
        xd_el_set_attr(id, "category", "account");
        xd_el_set_attr(id, "type", "registered");
    }
    xd_iq_foreach_identity(served, host ? XD_IQ_HOST : XD_IQ_USER, basic_identity, q);
    xd_iq_foreach_ns(served, host ? XD_IQ_HOST : XD_IQ_USER, basic_feature, q);
    if (host) {
        xd_config_t *cfg = xd_config_get();
        if (xd_config_module(cfg, served, "mod_register"))
            basic_feature(q, XD_NS_REGISTER);
        xd_config_unref(cfg);
        basic_server_info(q, served);
    }
    return q;
}

int
xd_disco_host_caps(const char *host, char ver[29])
{
    xd_el_t *q = basic_info_query(host, true);
    int rc = xd_caps_ver(q, ver);
    xd_el_free(q);
    return rc;
}

static xd_stanza_t *
basic_disco_info(const xd_iq_req_t *req)
{
    const xd_el_t *payload = req->payload;
    if (strcmp(xd_el_attr(xd_stanza_root(req->iq), "type"), "get") != 0)
        return xd_stanza_error(req->iq, XD_COND_NOT_ALLOWED, NULL);
    bool host = xd_jid_local(req->to).len == 0;
    xd_el_t *q = basic_info_query(req->host, host);
    const char *node = xd_el_attr(payload, "node");
    if (node) {
        /* XEP-0115 6.2: node#ver of the server's own caps is the same
         * information; any other node is unknown. */
        char ver[29];
        size_t nl = strlen(XD_CAPS_NODE);
        if (!host || xd_caps_ver(q, ver) != 0 || strncmp(node, XD_CAPS_NODE, nl) != 0 ||
            node[nl] != '#' || strcmp(node + nl + 1, ver) != 0) {
            xd_el_free(q);
            return xd_stanza_error(req->iq, XD_COND_ITEM_NOT_FOUND, NULL);
        }
        xd_el_set_attr(q, "node", node);
    }
    xd_el_t *r = xd_iq_result_builder(req->iq);
    xd_el_append(r, q);
    return xd_el_freeze(r);
}

static xd_stanza_t *
basic_disco_items(const xd_iq_req_t *req)
{
    if (strcmp(xd_el_attr(xd_stanza_root(req->iq), "type"), "get") != 0)
        return xd_stanza_error(req->iq, XD_COND_NOT_ALLOWED, NULL);
    /* No services yet (MUC, pubsub, upload come with their issues). */
    xd_el_t *r = xd_iq_result_builder(req->iq);
    xd_el_add_child(r, "query", XD_NS_DISCO_ITEMS);
    return xd_el_freeze(r);
}

/* XEP-0280: <enable/> and <disable/> set the requesting session's flag. */
static xd_stanza_t *
basic_carbons(const xd_iq_req_t *req)
{
    const char *type = xd_el_attr(xd_stanza_root(req->iq), "type");
    const char *name = xd_el_name(req->payload);
    if (strcmp(type, "set") != 0 || (strcmp(name, "enable") != 0 && strcmp(name, "disable") != 0))
        return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, NULL);
    if (!xd_jid_eq_bare(req->from, req->to) && xd_jid_local(req->to).len)
        return xd_stanza_error(req->iq, XD_COND_FORBIDDEN, NULL);
    if (xd_session_set_flag(req->from, XD_SESSION_CARBONS, !strcmp(name, "enable")) != 0)
        return xd_stanza_error(req->iq, XD_COND_ITEM_NOT_FOUND, NULL);
    return xd_iq_result(req->iq);
}

int
xd_mod_basic_start(void)
{
    int rc = 0;
    rc |= xd_iq_register(NULL, XD_IQ_HOST, XD_NS_PING, XD_IQ_INLINE, basic_ping, NULL);
    rc |= xd_iq_register(NULL, XD_IQ_USER, XD_NS_PING, XD_IQ_INLINE, basic_ping, NULL);
    rc |= xd_iq_register(NULL, XD_IQ_HOST, XD_NS_VERSION, XD_IQ_INLINE, basic_version, NULL);
    rc |= xd_iq_register(NULL, XD_IQ_HOST, XD_NS_TIME, XD_IQ_INLINE, basic_time, NULL);
    rc |= xd_iq_register(NULL, XD_IQ_HOST, XD_NS_DISCO_INFO, XD_IQ_INLINE, basic_disco_info, NULL);
    rc |= xd_iq_register(NULL, XD_IQ_USER, XD_NS_DISCO_INFO, XD_IQ_INLINE, basic_disco_info, NULL);
    rc |= xd_iq_register(NULL, XD_IQ_HOST, XD_NS_DISCO_ITEMS, XD_IQ_INLINE, basic_disco_items,
                         NULL);
    rc |= xd_iq_feature_add(NULL, XD_IQ_HOST, XD_NS_CAPS); /* XEP-0115 for the server */
    /* Clients send <enable/> without 'to' (the account) or to the server. */
    rc |= xd_iq_register(NULL, XD_IQ_USER, XD_NS_CARBONS, XD_IQ_INLINE, basic_carbons, NULL);
    rc |= xd_iq_register(NULL, XD_IQ_HOST, XD_NS_CARBONS, XD_IQ_INLINE, basic_carbons, NULL);
    return rc ? XD_EEXIST : 0;
}

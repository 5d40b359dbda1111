/*
 * mod_disco.c — service discovery (XEP-0030) of the server and of its
 * accounts, the server's entity capabilities (XEP-0115) and its contact
 * addresses (XEP-0157): mod_disco, on every host (XD_MODULE_ALWAYS).
 *
 * disco#info lists the server's (or the account's) identity, the
 * identities and features modules registered (iq.h: every IQ handler's
 * namespace, xd_module_feature, xd_module_identity), then what the
 * DISCO_LOCAL_FEATURES / DISCO_SM_FEATURES hooks add; the host's
 * XEP-0157 addresses (option server_info) come as a XEP-0128 form.
 * disco#items of the server lists what DISCO_LOCAL_ITEMS adds (MUC,
 * pubsub, upload services).  The 'ver' of the server's info is offered as
 * a stream feature after authentication (XEP-0115 6.3) and answered as its
 * node#ver.  All INLINE: nothing here blocks.
 */
#include <stdio.h>
#include <string.h>

#include "xmppd/caps.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/iq.h"
#include "xmppd/module.h"
#include "xmppd/ns.h"
#include "xmppd/opt.h"
#include "xmppd/stanza.h"

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

/* Appends the XEP-0128 form with the host's XEP-0157 addresses, if any. */
static void
disco_server_info(xd_el_t *q, const disco_conf_t *dc)
{
    if (!dc || !dc->server_info.count)
        return;
    xd_el_t *x = xd_el_add_child(q, "x", XD_NS_DATA);
    xd_el_set_attr(x, "type", "result");
    xd_el_t *f = xd_el_add_child(x, "field", NULL);
    xd_el_set_attr(f, "var", "FORM_TYPE");
    xd_el_set_attr(f, "type", "hidden");
    xd_el_add_text(xd_el_add_child(f, "value", NULL), "http://jabber.org/network/serverinfo");
    const disco_info_entry_t *e = dc->server_info.items;
    for (size_t i = 0; i < dc->server_info.count; i++) {
        f = xd_el_add_child(x, "field", NULL);
        xd_el_set_attr(f, "var", e[i].name);
        for (size_t k = 0; k < e[i].urls.count; k++)
            xd_el_add_text(xd_el_add_child(f, "value", NULL), e[i].urls.items[k]);
    }
}

static void
disco_feature(void *arg, const char *ns)
{
    xd_el_t *q = arg;
    xd_el_set_attr(xd_el_add_child(q, "feature", NULL), "var", ns);
}

static void
disco_identity(void *arg, const char *category, const char *type, const char *name)
{
    xd_el_t *id = xd_el_add_child(arg, "identity", NULL);
    xd_el_set_attr(id, "category", category);
    xd_el_set_attr(id, "type", type);
    if (name && *name)
        xd_el_set_attr(id, "name", name);
}

/* The disco#info <query/> of the host itself (to a bare domain JID) or of
 * an account of it; from may be NULL (caps of the server).  The caller
 * frees it. */
static xd_el_t *
disco_info_query(xd_module_ctx_t *ctx, const xd_jid_t *from, const xd_jid_t *to, bool host,
                 const char *node)
{
    const char *served = xd_module_host(ctx);
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
    xd_iq_foreach_identity(served, host ? XD_IQ_HOST : XD_IQ_USER, disco_identity, q);
    xd_iq_foreach_ns(served, host ? XD_IQ_HOST : XD_IQ_USER, disco_feature, q);
    xd_hook_disco_t ev = { .host = served, .from = from, .to = to, .node = node, .query = q };
    if (host) {
        xd_hook_run(XD_HOOK_DISCO_LOCAL_FEATURES, served, &ev);
        disco_server_info(q, xd_module_opts(ctx));
    } else {
        xd_hook_run(XD_HOOK_DISCO_SM_FEATURES, served, &ev);
    }
    return q;
}

/* The XEP-0115 'ver' of the host's disco#info; 0 or XD_EINVAL. */
static int
disco_host_ver(xd_module_ctx_t *ctx, char ver[29])
{
    xd_el_t *q = disco_info_query(ctx, NULL, NULL, true, NULL);
    int rc = xd_caps_ver(q, ver);
    xd_el_free(q);
    return rc;
}

static xd_stanza_t *
disco_info(const xd_iq_req_t *req)
{
    const xd_el_t *payload = req->payload;
    if (strcmp(xd_el_attr(xd_stanza_root(req->iq), "type"), "get") != 0)
        return xd_stanza_error(req->iq, XD_COND_NOT_ALLOWED, NULL);
    bool host = xd_jid_local(req->to).len == 0;
    const char *node = xd_el_attr(payload, "node");
    xd_el_t *q;
    if (!node) {
        q = disco_info_query(req->ctx, req->from, req->to, host, NULL);
    } else {
        /* XEP-0115 6.2: node#ver of the server's own caps is the same
         * information.  Any other node is the modules' (XEP-0030 3.2): the
         * hook runs with it, and a node nobody answers for is unknown. */
        char ver[29];
        size_t nl = strlen(XD_CAPS_NODE);
        bool caps = host && strncmp(node, XD_CAPS_NODE, nl) == 0 && node[nl] == '#' &&
                    disco_host_ver(req->ctx, ver) == 0 && strcmp(node + nl + 1, ver) == 0;
        if (caps) {
            q = disco_info_query(req->ctx, req->from, req->to, host, NULL);
        } else {
            q = xd_el_new("query", XD_NS_DISCO_INFO);
            xd_hook_disco_t ev = { .host = req->host, .from = req->from, .to = req->to,
                                   .node = node, .query = q };
            if (host)
                xd_hook_run(XD_HOOK_DISCO_LOCAL_FEATURES, req->host, &ev);
            else
                xd_hook_run(XD_HOOK_DISCO_SM_FEATURES, req->host, &ev);
            if (!xd_el_first_child(q)) {
                xd_el_free(q);
                return xd_stanza_error(req->iq, XD_COND_ITEM_NOT_FOUND, NULL);
            }
        }
        xd_el_set_attr(q, "node", node);
    }
    xd_el_t *r = xd_iq_result_builder(req->iq);
    xd_el_append(r, q);
    return xd_el_freeze(r);
}

static xd_stanza_t *
disco_items(const xd_iq_req_t *req)
{
    if (strcmp(xd_el_attr(xd_stanza_root(req->iq), "type"), "get") != 0)
        return xd_stanza_error(req->iq, XD_COND_NOT_ALLOWED, NULL);
    bool host = xd_jid_local(req->to).len == 0;
    xd_el_t *r = xd_iq_result_builder(req->iq);
    xd_el_t *q = xd_el_add_child(r, "query", XD_NS_DISCO_ITEMS);
    const char *node = xd_el_attr(req->payload, "node");
    if (node)
        xd_el_set_attr(q, "node", node);
    xd_hook_disco_t ev = { .host = req->host, .from = req->from, .to = req->to, .node = node,
                           .query = q };
    if (host)
        xd_hook_run(XD_HOOK_DISCO_LOCAL_ITEMS, req->host, &ev);
    else
        xd_hook_run(XD_HOOK_DISCO_SM_ITEMS, req->host, &ev);
    return xd_el_freeze(r);
}

/* C2S_STREAM_FEATURES: XEP-0115 6.3, the server's capabilities with the
 * bind feature, so a client need not ask each time. */
static int
disco_features(xd_module_ctx_t *ctx, xd_hook_features_t *ev, void *arg)
{
    (void)arg;
    char ver[29];
    if (!ev->authenticated || disco_host_ver(ctx, ver) != 0)
        return XD_HOOK_OK;
    xd_el_t *c = xd_el_add_child(ev->features, "c", XD_NS_CAPS);
    xd_el_set_attr(c, "hash", "sha-1");
    xd_el_set_attr(c, "node", XD_CAPS_NODE);
    xd_el_set_attr(c, "ver", ver);
    return XD_HOOK_OK;
}

static int
disco_start(xd_module_ctx_t *ctx)
{
    int rc = xd_module_iq(ctx, XD_IQ_HOST, XD_NS_DISCO_INFO, XD_IQ_INLINE, disco_info, NULL);
    if (rc == 0)
        rc = xd_module_iq(ctx, XD_IQ_USER, XD_NS_DISCO_INFO, XD_IQ_INLINE, disco_info, NULL);
    if (rc == 0)
        rc = xd_module_iq(ctx, XD_IQ_HOST, XD_NS_DISCO_ITEMS, XD_IQ_INLINE, disco_items, NULL);
    if (rc == 0) /* an account's items (DISCO_SM_ITEMS: PEP nodes, read from storage) */
        rc = xd_module_iq(ctx, XD_IQ_USER, XD_NS_DISCO_ITEMS, XD_IQ_PARALLEL, disco_items, NULL);
    if (rc == 0)
        rc = xd_module_feature(ctx, XD_IQ_HOST, XD_NS_CAPS); /* XEP-0115 for the server */
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_C2S_STREAM_FEATURES, XD_HOOK_PRIO_DEFAULT,
                            disco_features, NULL);
    return rc ? xd_module_fail(ctx, rc, "cannot register: %s", xd_strerror(rc)) : 0;
}

const xd_module_t xd_mod_disco = {
    .abi = XD_MODULE_ABI,
    .name = "mod_disco",
    .doc = "Service discovery (XEP-0030), the server's capabilities (XEP-0115) and contact "
           "addresses (XEP-0157)",
    .opts = disco_opts,
    .opts_size = sizeof(disco_conf_t),
    .flags = XD_MODULE_ALWAYS,
    .start = disco_start,
};

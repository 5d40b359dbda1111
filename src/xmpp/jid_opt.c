/*
 * jid_opt.c — the option types JID, domain and list of domains (include/xmppd/jid_opt.h).
 *
 * Sits in src/xmpp above src/core/opt.c: each type is an xd_opt_custom_t
 * whose parser prepares the value with jid.c and reports through the opt
 * helpers, so messages and locations are those of every other option.
 *
 * Invariants (those of every CUSTOM type): a null value leaves the field
 * zero; a failed parse leaves it zero or holding only what the type's free
 * releases; free leaves it zero.
 */
#include "xmppd/jid_opt.h"

#include "xmppd/alloc.h"
#include "xmppd/err.h"

static int
jopt_jid_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field)
{
    if (xd_conf_is_null(node))
        return 0;
    const char *s;
    if (xd_opt_get_string(ctx, node, &s) != 0)
        return -1;
    int rc = xd_jid_parse(xd_str_c(s), field);
    if (rc != 0) {
        xd_opt_error(ctx, node, "invalid JID \"%s\" (%s)", s, xd_strerror(rc));
        return -1;
    }
    return 0;
}

static void
jopt_jid_free(void *field)
{
    xd_jid_t **jid = field;
    if (*jid)
        xd_jid_unref(*jid);
    *jid = NULL;
}

static int
jopt_domain_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field)
{
    if (xd_conf_is_null(node))
        return 0;
    return xd_opt_get_name(ctx, node, "domain", xd_jid_prep_domain, field);
}

static void
jopt_domain_free(void *field)
{
    char **s = field;
    xd_free(*s);
    *s = NULL;
}

static int
jopt_domains_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field)
{
    return xd_opt_get_names(ctx, node, "domain", xd_jid_prep_domain, true, field);
}

static void
jopt_domains_free(void *field)
{
    xd_strlist_free(field);
}

const xd_opt_custom_t xd_opt_jid_type = { "JID", jopt_jid_parse, jopt_jid_free };
const xd_opt_custom_t xd_opt_domain_type = { "domain", jopt_domain_parse, jopt_domain_free };
const xd_opt_custom_t xd_opt_domain_list_type = { "list of domains", jopt_domains_parse,
                                                  jopt_domains_free };

/*
 * acl.c — access control over JIDs (include/xmppd/acl.h) and the RFC 7622
 * preparation of the configuration's names.
 *
 * Sits in src/xmpp above src/core/config*.c.  The configuration loader of
 * core parses ACLs and rules into data without knowing JIDs; two things of it
 * need them and live here:
 *
 *   - preparing names written in the file (hosts, ACL users and servers,
 *     host_config keys, component domains).  Core's loader takes them as an
 *     argument, an xd_conf_names_t (xd_config_load_with), rather than from a
 *     hook registered at start-up: no global state, no order of
 *     initialisation to get right, and nothing can load a configuration with
 *     names left unprepared.  xd_config_load, xd_config_load_string and
 *     xd_config_default, which every program calls, are defined here and
 *     pass xd_xmpp_names;
 *   - evaluating ACLs, access rules and shaper rules for a JID and an
 *     address (xd_acl_match, xd_access_match, xd_shaper_rule_match).
 *
 * Invariants: the names are prepared exactly as in JIDs (jid.c), so an ACL
 * entry compares bytewise with the parts of a parsed JID; evaluation only
 * reads the immutable config and keeps no state, so any thread may call it.
 */
#include "xmppd/acl.h"

#include <regex.h>
#include <string.h>

#include "xmppd/alloc.h"
#include "xmppd/cmd.h"
#include "xmppd/err.h"

/* ---- Names ----------------------------------------------------------------------------------- */

/* An ACL user: "local@domain" (a bare JID with a localpart), or a localpart
 * meaning that user at whichever host the rule is evaluated for. */
static int
acl_prep_user(xd_str_t in, char **out)
{
    if (in.len && (memchr(in.p, '@', in.len) || memchr(in.p, '/', in.len))) {
        xd_jid_t *jid = NULL;
        int rc = xd_jid_parse(in, &jid);
        if (rc == 0 && (!xd_jid_is_bare(jid) || xd_jid_local(jid).len == 0))
            rc = XD_EINVAL;
        if (rc == 0)
            *out = xd_strdup(xd_jid_bare_str(jid).p);
        if (jid)
            xd_jid_unref(jid);
        return rc;
    }
    return xd_jid_prep_local(in, out);
}

/* A JID as its normalised full text. */
static int
acl_prep_jid(xd_str_t in, char **out)
{
    xd_jid_t *jid = NULL;
    int rc = xd_jid_parse(in, &jid);
    if (rc == 0) {
        xd_str_t full = xd_jid_full_str(jid);
        *out = xd_strndup(full.p, full.len);
        xd_jid_unref(jid);
    }
    return rc;
}

const xd_conf_names_t xd_xmpp_names = {
    .domain = xd_jid_prep_domain,
    .user = acl_prep_user,
    .local = xd_jid_prep_local,
    .resource = xd_jid_prep_resource,
    .jid = acl_prep_jid,
};

int
xd_config_load(const char *path, xd_config_t **out, char **err)
{
    return xd_config_load_with(&xd_xmpp_names, path, out, err);
}

int
xd_config_load_string(const char *name, const char *text, size_t len, xd_config_t **out,
                      char **err)
{
    return xd_config_load_string_with(&xd_xmpp_names, name, text, len, out, err);
}

int
xd_config_default(xd_config_t **out)
{
    return xd_config_default_with(&xd_xmpp_names, out);
}

/* ---- Evaluation ------------------------------------------------------------------------------ */

static bool
acl_regex_any(const xd_regex_list_t *l, const char *s)
{
    for (size_t i = 0; i < l->count; i++)
        if (regexec(&l->items[i], s, 0, NULL, 0) == 0)
            return true;
    return false;
}

bool
xd_acl_match(const xd_host_conf_t *scope, const xd_acl_t *acl, const char *host,
             const xd_jid_t *jid, const struct sockaddr *addr)
{
    (void)scope;
    for (size_t i = 0; i < acl->ip.count; i++)
        if (xd_cidr_match(&acl->ip.items[i], addr))
            return true;
    if (!jid)
        return false;
    xd_str_t local = xd_jid_local(jid), domain = xd_jid_domain(jid), res = xd_jid_resource(jid);
    bool at_host = host && xd_str_eq_c(domain, host);
    if (local.len) {
        xd_str_t bare = xd_jid_bare_str(jid);
        for (size_t i = 0; i < acl->user.count; i++) {
            const char *u = acl->user.items[i];
            if (strchr(u, '@') ? xd_str_eq_c(bare, u) : (at_host && xd_str_eq_c(local, u)))
                return true;
        }
        if (at_host && acl_regex_any(&acl->user_regexp, local.p))
            return true;
    }
    for (size_t i = 0; i < acl->server.count; i++)
        if (xd_str_eq_c(domain, acl->server.items[i]))
            return true;
    if (acl_regex_any(&acl->server_regexp, domain.p))
        return true;
    if (res.len) {
        for (size_t i = 0; i < acl->resource.count; i++)
            if (xd_str_eq_c(res, acl->resource.items[i]))
                return true;
        if (acl_regex_any(&acl->resource_regexp, res.p))
            return true;
    }
    return false;
}

static bool
acl_clause_match(const xd_host_conf_t *scope, const xd_rule_clause_t *c, const char *host,
                 const xd_jid_t *jid, const struct sockaddr *addr)
{
    if (c->inline_acl)
        return xd_acl_match(scope, c->inline_acl, host, jid, addr);
    if (strcmp(c->acl, "all") == 0)
        return true;
    if (strcmp(c->acl, "none") == 0)
        return false;
    const xd_acl_t *acl = xd_config_acl(scope, c->acl);
    return acl && xd_acl_match(scope, acl, host, jid, addr);
}

/* The value of the first clause of access (or shaper) rule `rule` that
 * matches in the scope of `host`, or NULL. */
static const char *
acl_rule_eval(const xd_config_t *cfg, const char *host, const char *rule, const xd_jid_t *jid,
              const struct sockaddr *addr, bool access)
{
    const xd_host_conf_t *scope = xd_config_host(cfg, host);
    if (!scope)
        scope = &cfg->global;
    const xd_rule_t *r = access ? xd_config_access_rule(scope, rule)
                                : xd_config_shaper_rule(scope, rule);
    if (!r)
        return NULL;
    for (size_t i = 0; i < r->count; i++)
        if (acl_clause_match(scope, &r->clauses[i], host, jid, addr))
            return r->clauses[i].value;
    return NULL;
}

xd_access_t
xd_access_match(const xd_config_t *cfg, const char *host, const char *rule, const xd_jid_t *jid,
                const struct sockaddr *addr)
{
    if (strcmp(rule, "all") == 0)
        return XD_ACCESS_ALLOW;
    if (strcmp(rule, "none") == 0)
        return XD_ACCESS_DENY;
    const char *v = acl_rule_eval(cfg, host, rule, jid, addr, true);
    return v && strcmp(v, "allow") == 0 ? XD_ACCESS_ALLOW : XD_ACCESS_DENY;
}

bool
xd_access_allowed(const char *host, const char *rule, const xd_jid_t *jid)
{
    if (!rule) {
        xd_str_t d = xd_jid_domain(jid);
        return xd_jid_local(jid).len > 0 && d.len == strlen(host) && !memcmp(d.p, host, d.len);
    }
    xd_config_t *cfg = xd_config_get();
    bool ok = cfg && xd_access_match(cfg, host, rule, jid, NULL) == XD_ACCESS_ALLOW;
    xd_config_unref(cfg);
    return ok;
}

const char *
xd_shaper_rule_match(const xd_config_t *cfg, const char *host, const char *rule,
                     const xd_jid_t *jid, const struct sockaddr *addr)
{
    return acl_rule_eval(cfg, host, rule, jid, addr, false);
}

static bool
acl_cmd_rule(const xd_config_t *cfg, const char *host, const xd_cmd_t *cmd, const xd_jid_t *who)
{
    return xd_access_match(cfg, host, cmd->access ? cmd->access : "admin", who, NULL) ==
           XD_ACCESS_ALLOW;
}

bool
xd_cmd_allowed(const xd_config_t *cfg, const char *host, const xd_cmd_t *cmd,
               const xd_cmd_call_t *call, const xd_jid_t *who)
{
    bool scoped = false;
    for (size_t i = 0; i < cmd->nargs; i++)
        if (cmd->args[i].type == XD_CMD_HOST || cmd->args[i].type == XD_CMD_JID)
            scoped = true;
    if (!acl_cmd_rule(cfg, scoped ? host : NULL, cmd, who))
        return false;
    if (!call)
        return true;
    bool named_any = false;
    for (size_t i = 0; i < cmd->nargs; i++) {
        const char *v = call->args[i].text;
        int type = cmd->args[i].type;
        if (!v || (type != XD_CMD_HOST && type != XD_CMD_JID))
            continue;
        named_any = true;
        const char *named = v;
        char dom[XD_JID_PART_MAX + 1];
        if (type == XD_CMD_JID) {
            /* the domain: after an '@' that comes before the resource */
            size_t slash = strcspn(v, "/");
            const char *at = memchr(v, '@', slash), *d = at ? at + 1 : v;
            size_t n = strcspn(d, "/");
            named = NULL;
            if (n < sizeof dom) {
                memcpy(dom, d, n);
                dom[n] = '\0';
                named = xd_config_is_host(cfg, dom) ? dom : NULL;
            }
        }
        if (named && !acl_cmd_rule(cfg, named, cmd, who))
            return false;
    }
    return acl_cmd_rule(cfg, named_any ? host : NULL, cmd, who);
}

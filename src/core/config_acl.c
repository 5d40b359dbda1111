/*
 * config_acl.c — the ACL data of the configuration (include/xmppd/config.h): acl,
 * access_rules, shaper_rules and shaper, parsed and looked up by name.
 *
 * Sits in src/core beside config.c (config_int.h).  Each of the four is a
 * MAP option; what is particular to each is its value: an ACL is a table of
 * lists (users, domains, IP ranges, regular expressions), a rule is a list or
 * mapping of clauses {value: ACL name or inline ACL}, a shaper a rate or
 * {rate, burst_size}.  Users and domains are prepared with the load's names
 * (cfg_names); matching any of this against a JID is src/xmpp/acl.c.
 *
 * Invariants: ACLs and access rules never redefine the built-in "all" and
 * "none"; after stage 3 every ACL a clause names exists in its scope (or the
 * global one) and every shaper a shaper rule names exists; an IP range has
 * its host bits zeroed, so matching compares whole bytes.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "core/config_int.h"
#include "xmppd/alloc.h"
#include "xmppd/err.h"

static int cfg_users_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field);
static int cfg_domains_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field);
static int cfg_hosts_parse_list(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field);
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

static const xd_opt_custom_t cfg_users_type = { "list of users", cfg_users_parse,
                                                cfg_strlist_free };
const xd_opt_custom_t cfg_domains_type = { "list of domains", cfg_domains_parse,
                                           cfg_strlist_free };
const xd_opt_custom_t cfg_hosts_type = { "list of domains", cfg_hosts_parse_list,
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

/* The ACL and access rule names that are built in. */
static const char *const cfg_builtin_names[] = { "all", "none", NULL };

/* ---- Tables ---------------------------------------------------------------------------------- */

#define A_ xd_acl_t
const xd_opt_t cfg_acl_opts[] = {
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

const xd_opt_map_t cfg_acl_map = {
    .type_name = "ACL definitions",
    .expected = "a mapping of ACL names to definitions",
    .noun = "ACL",
    .size = sizeof(xd_acl_t),
    .value = XD_OPT_MAP_VALUE(XD_OPT_TYPE_SUB, 0, &cfg_acl_sub),
    .reserved = cfg_builtin_names,
};

const xd_opt_map_t cfg_access_map = {
    .type_name = "access rules",
    .expected = "a mapping of access rule names to clauses",
    .noun = "access rule",
    .size = sizeof(xd_rule_t),
    .value = XD_OPT_MAP_VALUE(XD_OPT_TYPE_CUSTOM, 0, &cfg_access_clauses_type),
    .reserved = cfg_builtin_names,
};

const xd_opt_map_t cfg_shaper_rules_map = {
    .type_name = "shaper rules",
    .expected = "a mapping of shaper rule names to clauses",
    .noun = "shaper rule",
    .size = sizeof(xd_rule_t),
    .value = XD_OPT_MAP_VALUE(XD_OPT_TYPE_CUSTOM, 0, &cfg_shaper_clauses_type),
};

const xd_opt_map_t cfg_shapers_map = {
    .type_name = "shaper definitions",
    .expected = "a mapping of shaper names to rates",
    .noun = "shaper",
    .size = sizeof(xd_shaper_t),
    .value = XD_OPT_MAP_VALUE(XD_OPT_TYPE_CUSTOM, 0, &cfg_shaper_type),
};

const xd_opt_t cfg_shaper_opts[] = {
    XD_OPT_FULL("rate", XD_OPT_TYPE_INT, cfg_shaper_form_t, rate, NULL,
                (&(const xd_opt_range_t){ 1, 1000000000 }),
                "Sustained rate in bytes per second. `name: N` is short for `name: {rate: N}`.",
                XD_OPT_REQUIRED, NULL),
    XD_OPT_INT("burst_size", cfg_shaper_form_t, burst_size, "0", 0, 1000000000,
               "Bytes that may arrive at once after a quiet period; 0 means one second of "
               "`rate`."),
    XD_OPT_END,
};

/* ---- Lists of scalars: users, domains, IP ranges, regexps ------------------------------------ */

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

/* `hosts` is a list even for one domain, as in ejabberd: a scalar is
 * usually a list written wrong (`hosts: a.example, b.example`). */
static int
cfg_hosts_parse_list(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field)
{
    if (node->kind == XD_CONF_SCALAR && !xd_conf_is_null(node)) {
        xd_opt_error(ctx, node, "expected a list of domains, got a scalar (write `hosts: [%s]`)",
                     node->value);
        return -1;
    }
    return cfg_domains_parse(ctx, node, field);
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

bool
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

/* ---- Stage 3 and lookups --------------------------------------------------------------------- */

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

bool
cfg_rule_defined(const xd_rule_set_t *set, const char *name)
{
    for (size_t i = 0; i < set->count; i++)
        if (strcmp(set->items[i].name, name) == 0)
            return true;
    return false;
}

/* Names → the defining item, for the cross-reference checks of stage 3. */
static void
cfg_index_names(xd_map_t *m, const void *items, size_t count, size_t size)
{
    for (size_t i = 0; i < count; i++) {
        char *const *name = (char *const *)((const char *)items + i * size);
        xd_map_put(m, xd_str_c(*name), (void *)name);
    }
}

void
cfg_rules_index_init(cfg_rules_index_t *ix, const xd_config_t *cfg)
{
    *ix = (cfg_rules_index_t){ XD_MAP_INIT, XD_MAP_INIT };
    cfg_index_names(&ix->global_acls, cfg->global.acl.items, cfg->global.acl.count,
                    sizeof(xd_acl_t));
    cfg_index_names(&ix->shapers, cfg->shaper.items, cfg->shaper.count, sizeof(xd_shaper_t));
}

void
cfg_rules_index_free(cfg_rules_index_t *ix)
{
    xd_map_free(&ix->global_acls, NULL);
    xd_map_free(&ix->shapers, NULL);
}

void
cfg_check_rules(xd_opt_ctx_t *ctx, const cfg_rules_index_t *ix, const xd_host_conf_t *scope)
{
    /* A host scope sees its own ACLs, then the top level's (xd_config_acl). */
    xd_map_t own = XD_MAP_INIT;
    if (scope->parent)
        cfg_index_names(&own, scope->acl.items, scope->acl.count, sizeof(xd_acl_t));
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
                if (c->acl && !cfg_builtin_acl(c->acl) && !xd_map_get(&own, xd_str_c(c->acl)) &&
                    !xd_map_get(&ix->global_acls, xd_str_c(c->acl)))
                    xd_opt_error(ctx, c->node, "unknown ACL \"%s\"", c->acl);
                if (pass == 1 && strcmp(c->value, "none") != 0 && !cfg_is_number(c->value) &&
                    !xd_map_get(&ix->shapers, xd_str_c(c->value)))
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
    xd_map_free(&own, NULL);
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

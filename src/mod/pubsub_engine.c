/*
 * pubsub_engine.c — the node configuration, forms, access by roster, errors
 * and events that mod_pep and mod_pubsub share (pubsub_engine.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mod_util.h"
#include "pubsub_engine.h"
#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/ns.h"
#include "xmppd/roster.h"
#include "xmppd/route.h"

void
pse_cfg_default(pse_cfg_t *c, bool open_access)
{
    memset(c, 0, sizeof *c);
    snprintf(c->access, sizeof c->access, "%s", open_access ? "open" : "presence");
    c->persist = true;
    c->max_items = 1;
    snprintf(c->send_last, sizeof c->send_last, "on_sub_and_presence");
    snprintf(c->publish_model, sizeof c->publish_model, "publishers");
    c->deliver_payloads = true;
    c->notify_retract = true;
    c->notify_delete = true;
    c->notify_config = true;
    snprintf(c->notif_type, sizeof c->notif_type, "headline");
}

int64_t
pse_cfg_keep(const pse_cfg_t *c, const pse_limits_t *lim)
{
    int64_t m = c->max_items == PSE_MAX ? lim->max_items_limit : c->max_items;
    return c->persist ? m : 1;
}

int
pse_bool(const char *v)
{
    if (!strcmp(v, "1") || !strcmp(v, "true"))
        return 1;
    if (!strcmp(v, "0") || !strcmp(v, "false"))
        return 0;
    return -1;
}

static const char *
field_value(const xd_el_t *field)
{
    const char *v = xd_el_child_text(field, "value", NULL);
    return v ? v : "";
}

static const char *const am_names[] = { "open", "presence", "roster", "authorize", "whitelist" };

static bool
one_of(const char *v, const char *a, const char *b, const char *c)
{
    return !strcmp(v, a) || !strcmp(v, b) || (c && !strcmp(v, c));
}

/* A boolean field into *dst. */
static const char *
read_bool(const char *v, bool *dst, const char *why)
{
    int b = pse_bool(v);
    if (b < 0)
        return why;
    *dst = b;
    return NULL;
}

const char *
pse_form_read(const xd_el_t *x, const char *form_type, const pse_limits_t *lim, pse_cfg_t *c,
              unsigned *set)
{
    *set = 0;
    if (!x || !xd_el_is(x, "x", XD_NS_DATA))
        return "expected a jabber:x:data form";
    const char *type = xd_el_attr(x, "type");
    if (type && strcmp(type, "submit") != 0)
        return "the form must be of type submit";
    for (const xd_el_t *f = xd_el_first_child(x); f; f = xd_el_next(f)) {
        if (!xd_el_is(f, "field", XD_NS_DATA))
            continue;
        const char *var = xd_el_attr(f, "var");
        const char *v = field_value(f);
        const char *why = NULL;
        unsigned bit = 0;
        if (!var)
            continue;
        if (!strcmp(var, "FORM_TYPE")) {
            if (strcmp(v, form_type) != 0)
                return "unexpected FORM_TYPE";
            continue;
        } else if (!strcmp(var, "pubsub#access_model")) {
            bit = PSE_F_ACCESS;
            bool ok = false;
            for (size_t i = 0; i < sizeof am_names / sizeof *am_names; i++)
                ok |= (lim->access & (1u << i)) && !strcmp(v, am_names[i]);
            if (!ok)
                why = PSE_WHY_ACCESS;
            else
                snprintf(c->access, sizeof c->access, "%s", v);
        } else if (!strcmp(var, "pubsub#persist_items")) {
            bit = PSE_F_PERSIST;
            why = read_bool(v, &c->persist, "pubsub#persist_items: a boolean");
        } else if (!strcmp(var, "pubsub#max_items")) {
            bit = PSE_F_MAX;
            if (!strcmp(v, "max")) {
                c->max_items = PSE_MAX;
            } else {
                char *end = NULL;
                long long n = *v ? strtoll(v, &end, 10) : -1;
                if (!end || *end || n < 1 || n > lim->max_items_limit)
                    why = "pubsub#max_items: \"max\" or a number within the server's limit";
                else
                    c->max_items = n;
            }
        } else if (!strcmp(var, "pubsub#send_last_published_item")) {
            bit = PSE_F_SENDLAST;
            if (!one_of(v, "never", "on_sub", "on_sub_and_presence"))
                why = "pubsub#send_last_published_item: never, on_sub or on_sub_and_presence";
            else
                snprintf(c->send_last, sizeof c->send_last, "%s", v);
        } else if (!strcmp(var, "pubsub#publish_model")) {
            bit = PSE_F_PUBMODEL;
            if (!one_of(v, "publishers", "subscribers", "open"))
                why = "pubsub#publish_model: publishers, subscribers or open";
            else
                snprintf(c->publish_model, sizeof c->publish_model, "%s", v);
        } else if (!strcmp(var, "pubsub#deliver_payloads")) {
            bit = PSE_F_PAYLOADS;
            why = read_bool(v, &c->deliver_payloads, "pubsub#deliver_payloads: a boolean");
        } else if (!strcmp(var, "pubsub#notify_retract")) {
            bit = PSE_F_RETRACT;
            why = read_bool(v, &c->notify_retract, "pubsub#notify_retract: a boolean");
        } else if (!strcmp(var, "pubsub#notify_delete")) {
            bit = PSE_F_DELETE;
            why = read_bool(v, &c->notify_delete, "pubsub#notify_delete: a boolean");
        } else if (!strcmp(var, "pubsub#notify_config")) {
            bit = PSE_F_CONFIG;
            why = read_bool(v, &c->notify_config, "pubsub#notify_config: a boolean");
        } else if (!strcmp(var, "pubsub#notification_type")) {
            bit = PSE_F_NOTIFTYPE;
            if (!one_of(v, "headline", "normal", NULL))
                why = "pubsub#notification_type: headline or normal";
            else
                snprintf(c->notif_type, sizeof c->notif_type, "%s", v);
        } else if (!strcmp(var, "pubsub#item_expire")) {
            bit = PSE_F_EXPIRE;
            char *end = NULL;
            long long n = *v ? strtoll(v, &end, 10) : 0;
            if (*v && (!end || *end || n < 0))
                why = "pubsub#item_expire: seconds";
            else
                c->item_expire = n;
        } else if (!strcmp(var, "pubsub#roster_groups_allowed")) {
            bit = PSE_F_GROUPS;
            size_t used = 0;
            c->groups[0] = '\0';
            for (const xd_el_t *ve = xd_el_first_child(f); ve && !why; ve = xd_el_next(ve)) {
                if (!xd_el_is(ve, "value", XD_NS_DATA))
                    continue;
                const char *g = xd_el_text(ve);
                size_t gl = g ? strlen(g) : 0;
                if (!gl)
                    continue;
                const char *gv[1] = { g };
                if (strchr(g, '\n') || used + gl + 2 > sizeof c->groups)
                    why = "pubsub#roster_groups_allowed: too many or too long groups";
                else if (!pse_groups_match(c, gv, 1)) /* each group once */
                    used += (size_t)snprintf(c->groups + used, sizeof c->groups - used, "%s\n", g);
            }
        } else if (!strcmp(var, "pubsub#title")) {
            bit = PSE_F_TITLE;
            if (strlen(v) >= sizeof c->title)
                why = "pubsub#title: too long";
            else
                snprintf(c->title, sizeof c->title, "%s", v);
        }
        /* Fields the service does not offer: a precondition on one fails
         * (XEP-0060 7.1.5: the service MUST reject the publication upon
         * unknown fields); a configuration form's are ignored. */
        if (!(bit & lim->fields)) {
            if (!strcmp(form_type, PSE_NS_PUBOPT))
                return "a publish option this service does not know";
            continue;
        }
        if (why)
            return why;
        *set |= bit;
    }
    return NULL;
}

bool
pse_precond_ok(const pse_cfg_t *have, const pse_cfg_t *want, unsigned set,
               const pse_limits_t *lim)
{
    if ((set & PSE_F_ACCESS) && strcmp(have->access, want->access) != 0)
        return false;
    if ((set & PSE_F_PERSIST) && have->persist != want->persist)
        return false;
    if (set & PSE_F_MAX) {
        int64_t a = have->max_items == PSE_MAX ? lim->max_items_limit : have->max_items;
        int64_t b = want->max_items == PSE_MAX ? lim->max_items_limit : want->max_items;
        if (a != b)
            return false;
    }
    if ((set & PSE_F_SENDLAST) && strcmp(have->send_last, want->send_last) != 0)
        return false;
    if ((set & PSE_F_PUBMODEL) && strcmp(have->publish_model, want->publish_model) != 0)
        return false;
    if ((set & PSE_F_PAYLOADS) && have->deliver_payloads != want->deliver_payloads)
        return false;
    if ((set & PSE_F_RETRACT) && have->notify_retract != want->notify_retract)
        return false;
    if ((set & PSE_F_DELETE) && have->notify_delete != want->notify_delete)
        return false;
    if ((set & PSE_F_CONFIG) && have->notify_config != want->notify_config)
        return false;
    if ((set & PSE_F_NOTIFTYPE) && strcmp(have->notif_type, want->notif_type) != 0)
        return false;
    if ((set & PSE_F_EXPIRE) && have->item_expire != want->item_expire)
        return false;
    if ((set & PSE_F_GROUPS) && strcmp(have->groups, want->groups) != 0)
        return false;
    if ((set & PSE_F_TITLE) && strcmp(have->title, want->title) != 0)
        return false;
    return true;
}

static void
add_field(xd_el_t *x, const char *var, const char *type, const char *value,
          const char *const *opts)
{
    xd_el_t *f = xd_el_add_child(x, "field", NULL);
    xd_el_set_attr(f, "var", var);
    if (type)
        xd_el_set_attr(f, "type", type);
    if (value)
        xd_el_add_text(xd_el_add_child(f, "value", NULL), value);
    for (size_t k = 0; opts && opts[k]; k++)
        xd_el_add_text(xd_el_add_child(xd_el_add_child(f, "option", NULL), "value", NULL),
                       opts[k]);
}

xd_el_t *
pse_cfg_form(xd_el_t *parent, const char *type_attr, const char *ns, const pse_cfg_t *c,
             const pse_limits_t *lim)
{
    xd_el_t *x = xd_el_add_child(parent, "x", XD_NS_DATA);
    xd_el_set_attr(x, "type", type_attr);
    add_field(x, "FORM_TYPE", "hidden", ns, NULL);
    const char *ams[6] = { NULL };
    size_t na = 0;
    for (size_t i = 0; i < sizeof am_names / sizeof *am_names; i++)
        if (lim->access & (1u << i))
            ams[na++] = am_names[i];
    unsigned fl = lim->fields;
    char num[24];
    if (fl & PSE_F_TITLE)
        add_field(x, "pubsub#title", "text-single", c->title, NULL);
    if (fl & PSE_F_ACCESS)
        add_field(x, "pubsub#access_model", "list-single", c->access, ams);
    if (fl & PSE_F_GROUPS) {
        xd_el_t *f = xd_el_add_child(x, "field", NULL);
        xd_el_set_attr(f, "var", "pubsub#roster_groups_allowed");
        xd_el_set_attr(f, "type", "list-multi");
        for (const char *g = c->groups; *g;) {
            const char *nl = strchr(g, '\n');
            size_t gl = nl ? (size_t)(nl - g) : strlen(g);
            char *gs = xd_strndup(g, gl);
            xd_el_add_text(xd_el_add_child(f, "value", NULL), gs);
            xd_free(gs);
            g += gl + (nl ? 1 : 0);
        }
    }
    if (fl & PSE_F_PUBMODEL) {
        static const char *const pm[] = { "publishers", "subscribers", "open", NULL };
        add_field(x, "pubsub#publish_model", "list-single", c->publish_model, pm);
    }
    if (fl & PSE_F_PERSIST)
        add_field(x, "pubsub#persist_items", "boolean", c->persist ? "1" : "0", NULL);
    if (fl & PSE_F_MAX) {
        if (c->max_items == PSE_MAX)
            snprintf(num, sizeof num, "max");
        else
            snprintf(num, sizeof num, "%lld", (long long)c->max_items);
        add_field(x, "pubsub#max_items", "text-single", num, NULL);
    }
    if (fl & PSE_F_EXPIRE) {
        snprintf(num, sizeof num, "%lld", (long long)c->item_expire);
        add_field(x, "pubsub#item_expire", "text-single", num, NULL);
    }
    if (fl & PSE_F_SENDLAST) {
        static const char *const sl[] = { "never", "on_sub", "on_sub_and_presence", NULL };
        add_field(x, "pubsub#send_last_published_item", "list-single", c->send_last, sl);
    }
    if (fl & PSE_F_PAYLOADS)
        add_field(x, "pubsub#deliver_payloads", "boolean", c->deliver_payloads ? "1" : "0",
                  NULL);
    if (fl & PSE_F_RETRACT)
        add_field(x, "pubsub#notify_retract", "boolean", c->notify_retract ? "1" : "0", NULL);
    if (fl & PSE_F_DELETE)
        add_field(x, "pubsub#notify_delete", "boolean", c->notify_delete ? "1" : "0", NULL);
    if (fl & PSE_F_CONFIG)
        add_field(x, "pubsub#notify_config", "boolean", c->notify_config ? "1" : "0", NULL);
    if (fl & PSE_F_NOTIFTYPE) {
        static const char *const nt[] = { "headline", "normal", NULL };
        add_field(x, "pubsub#notification_type", "list-single", c->notif_type, nt);
    }
    if (fl & PSE_F_ACCESS)
        add_field(x, "pubsub#node_type", "hidden", "leaf", NULL);
    return x;
}

/* ---- storage text ------------------------------------------------------------------------------- */

/* key=value pairs separated by \x1f; groups keep their newlines. */
char *
pse_cfg_encode(const pse_cfg_t *c)
{
    return xd_asprintf("access=%s\x1fpersist=%d\x1fmax=%lld\x1fsendlast=%s\x1fpubmodel=%s"
                       "\x1fpayloads=%d\x1fretract=%d\x1f"
                       "delete=%d\x1f"
                       "config=%d\x1fntype=%s\x1f"
                       "expire=%lld\x1fgroups=%s\x1ftitle=%s",
                       c->access, c->persist, (long long)c->max_items, c->send_last,
                       c->publish_model, c->deliver_payloads, c->notify_retract, c->notify_delete,
                       c->notify_config, c->notif_type, (long long)c->item_expire, c->groups,
                       c->title);
}

void
pse_cfg_decode(const char *s, size_t len, pse_cfg_t *c)
{
    const char *end = s + len;
    while (s < end) {
        const char *sep = memchr(s, '\x1f', (size_t)(end - s));
        const char *e = sep ? sep : end;
        const char *eq = memchr(s, '=', (size_t)(e - s));
        if (eq) {
            char key[16];
            snprintf(key, sizeof key, "%.*s", (int)(eq - s), s);
            int vl = (int)(e - eq - 1);
            const char *v = eq + 1;
            /* The value is not NUL-terminated (a row value is lent as
             * bytes and a length): the number goes through a copy. */
            char num[24];
            snprintf(num, sizeof num, "%.*s", vl < (int)sizeof num - 1 ? vl : (int)sizeof num - 1,
                     v);
            long long n = strtoll(num, NULL, 10);
#define STR_(f) snprintf(c->f, sizeof c->f, "%.*s", vl, v)
            if (!strcmp(key, "access"))
                STR_(access);
            else if (!strcmp(key, "persist"))
                c->persist = n != 0;
            else if (!strcmp(key, "max"))
                c->max_items = n;
            else if (!strcmp(key, "sendlast"))
                STR_(send_last);
            else if (!strcmp(key, "pubmodel"))
                STR_(publish_model);
            else if (!strcmp(key, "payloads"))
                c->deliver_payloads = n != 0;
            else if (!strcmp(key, "retract"))
                c->notify_retract = n != 0;
            else if (!strcmp(key, "delete"))
                c->notify_delete = n != 0;
            else if (!strcmp(key, "config"))
                c->notify_config = n != 0;
            else if (!strcmp(key, "ntype"))
                STR_(notif_type);
            else if (!strcmp(key, "expire"))
                c->item_expire = n;
            else if (!strcmp(key, "groups"))
                STR_(groups);
            else if (!strcmp(key, "title"))
                STR_(title);
#undef STR_
        }
        s = sep ? sep + 1 : end;
    }
}

bool
pse_groups_match(const pse_cfg_t *c, const char *const *groups, size_t ngroups)
{
    for (size_t i = 0; i < ngroups; i++) {
        size_t gl = strlen(groups[i]);
        for (const char *g = c->groups; *g;) {
            const char *nl = strchr(g, '\n');
            size_t l = nl ? (size_t)(nl - g) : strlen(g);
            if (l == gl && !memcmp(g, groups[i], l))
                return true;
            g += l + (nl ? 1 : 0);
        }
    }
    return false;
}

bool
pse_groups_match_nl(const pse_cfg_t *c, const char *groups_nl)
{
    const char *gv[64];
    size_t ng = 0;
    char *dup = xd_strdup(groups_nl);
    for (char *p = dup, *nl; *p && ng < 64; p = nl + 1) {
        nl = strchr(p, '\n');
        if (!nl)
            break;
        *nl = '\0';
        gv[ng++] = p;
    }
    bool ok = pse_groups_match(c, gv, ng);
    xd_free(dup);
    return ok;
}

/* ---- errors and events --------------------------------------------------------------------------- */

int
pse_item_ids(const xd_el_t *items, const char *ids[PSE_ITEM_IDS_MAX])
{
    int n = 0;
    for (const xd_el_t *ch = xd_el_first_child(items); ch; ch = xd_el_next(ch)) {
        const char *id = xd_el_is(ch, "item", XD_NS_PUBSUB) ? xd_el_attr(ch, "id") : NULL;
        if (!id)
            continue;
        int k = 0;
        while (k < n && strcmp(ids[k], id) != 0)
            k++;
        if (k < n)
            continue;
        if (n == PSE_ITEM_IDS_MAX)
            return -1;
        ids[n++] = id;
    }
    return n;
}

xd_stanza_t *
pse_err(const xd_stanza_t *iq, xd_cond cond, const char *app, const char *feature,
        const char *text)
{
    xd_stanza_t *e = xd_stanza_error(iq, cond, text);
    if (!e || !app)
        return e;
    xd_el_t *el = xd_stanza_thaw(e);
    xd_el_t *er = xd_el_child_mut(el, "error", NULL);
    if (er) {
        xd_el_t *a = xd_el_add_child(er, app, PSE_NS_ERRORS);
        if (feature)
            xd_el_set_attr(a, "feature", feature);
    }
    return xd_el_freeze(el);
}

xd_el_t *
pse_event(const char *node, xd_el_t **items_out)
{
    xd_el_t *ev = xd_el_new("event", XD_NS_PUBSUB_EVENT);
    xd_el_t *items = xd_el_add_child(ev, "items", NULL);
    xd_el_set_attr(items, "node", node);
    if (items_out)
        *items_out = items;
    return ev;
}

xd_el_t *
pse_event_message(const char *from, const char *to, const char *type, const char *xml,
                  size_t len)
{
    xd_el_t *ev = NULL;
    if (xd_el_parse(xml, len, &ev) != 0)
        return NULL;
    xd_el_t *m = xd_el_new("message", NULL);
    xd_el_set_attr(m, "from", from);
    xd_el_set_attr(m, "to", to);
    xd_el_set_attr(m, "type", type ? type : "headline");
    char id[21];
    if (mod_random_id(id) == 0)
        xd_el_set_attr(m, "id", id);
    xd_el_append(m, ev);
    return m;
}

size_t
pse_send_event(const char *from, const char *to, const char *type, const char *xml, size_t len)
{
    xd_el_t *m = pse_event_message(from, to, type, xml, len);
    if (!m)
        return 0;
    xd_stanza_t *st = xd_el_freeze(m);
    size_t n = 0;
    xd_stanza_bytes(st, &n);
    xd_route_take(st);
    return n;
}

/* ---- roster ------------------------------------------------------------------------------------- */

char *
pse_groups_nl(const xd_roster_view_t *item)
{
    size_t gl = 1;
    for (size_t i = 0; i < item->ngroups; i++)
        gl += strlen(item->groups[i]) + 1;
    char *g = xd_malloc(gl);
    size_t used = 0;
    g[0] = '\0';
    for (size_t i = 0; i < item->ngroups; i++)
        used += (size_t)snprintf(g + used, gl - used, "%s\n", item->groups[i]);
    return g;
}

static int
contact_cb(void *arg, const xd_roster_view_t *item)
{
    pse_contacts_t *c = arg;
    if (!item->in_roster || (c->mask != ~0u && !(item->sub & c->mask)))
        return 0;
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->jids = xd_realloc(c->jids, c->cap * sizeof *c->jids);
        c->groups = xd_realloc(c->groups, c->cap * sizeof *c->groups);
        c->sub = xd_realloc(c->sub, c->cap * sizeof *c->sub);
    }
    c->groups[c->n] = pse_groups_nl(item);
    c->sub[c->n] = (unsigned char)item->sub;
    c->jids[c->n++] = xd_strdup(item->jid);
    return 0;
}

void
pse_contacts_free(pse_contacts_t *c)
{
    for (size_t i = 0; i < c->n; i++) {
        xd_free(c->jids[i]);
        xd_free(c->groups[i]);
    }
    xd_free(c->jids);
    xd_free(c->groups);
    xd_free(c->sub);
    memset(c, 0, sizeof *c);
}

int
pse_roster(const char *host, const char *user, const char *contact, unsigned mask,
           pse_contacts_t *out)
{
    out->mask = mask;
    xd_hook_roster_get_t ev = { .host = host, .user = user, .contact = contact,
                                .fn = contact_cb, .arg = out };
    xd_hook_run(XD_HOOK_ROSTER_GET, host, &ev);
    return ev.served ? ev.rc : XD_ENOTFOUND;
}

bool
pse_contact_sees(const pse_contacts_t *cs, size_t i, const pse_cfg_t *c)
{
    if (!strcmp(c->access, "roster"))
        return pse_groups_match_nl(c, cs->groups[i]);
    return (cs->sub[i] & XD_ROSTER_SUB_FROM) != 0;
}

bool
pse_contacts_allow(const pse_contacts_t *cs, const char *who, const pse_cfg_t *c)
{
    if (strcmp(c->access, "presence") != 0 && strcmp(c->access, "roster") != 0)
        return false;
    for (size_t i = 0; i < cs->n; i++)
        if (!strcmp(cs->jids[i], who))
            return pse_contact_sees(cs, i, c);
    return false;
}

bool
pse_reader_allows(pse_reader_t *r, const pse_cfg_t *c)
{
    if (strcmp(c->access, "presence") != 0 && strcmp(c->access, "roster") != 0)
        return false;
    if (!r->read) {
        pse_roster(r->host, r->user, r->who, ~0u, &r->cs);
        r->read = true;
    }
    return pse_contacts_allow(&r->cs, r->who, c);
}

void
pse_reader_free(pse_reader_t *r)
{
    pse_contacts_free(&r->cs);
    r->read = false;
}

bool
pse_roster_allows(const char *host, const char *user, const char *who, const pse_cfg_t *c)
{
    pse_reader_t r = { .host = host, .user = user, .who = who };
    bool ok = pse_reader_allows(&r, c);
    pse_reader_free(&r);
    return ok;
}

bool
pse_create_configure(const xd_el_t *pubsub, const xd_el_t *create, const xd_el_t **ce)
{
    *ce = xd_el_child(pubsub, "configure", XD_NS_PUBSUB);
    if (!*ce)
        return true;
    bool after = false;
    for (const xd_el_t *c = xd_el_first_child(pubsub); c && c != *ce; c = xd_el_next(c))
        after |= c == create;
    return after && !xd_el_attr(*ce, "node");
}

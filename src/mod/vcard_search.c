/*
 * vcard_search.c — the user directory (XEP-0055) of mod_vcard, as
 * ejabberd's vjud: a service domain (vjud.@HOST@) answers jabber:iq:search
 * over the fields of the accounts' stored vCards.
 *
 *   get  → instructions, the legacy fields (first, last, nick, email) and a
 *          data form (XEP-0004) with every searchable field;
 *   set  → the matching accounts: with legacy fields, legacy <item/>s; with
 *          the form, a result form (<reported/> and one <item/> each).
 *
 * A field matches when it equals the vCard's value, case-folded (Unicode);
 * a value ending in '*' matches as a prefix.  The fields of one search
 * must all match.  At most `matches` results, by username.  A search with
 * no field is refused (not-acceptable) unless allow_return_all.  Only the
 * host's accounts may search, or those the `search_access` rule allows.
 * Only accounts that stored a vCard are in the directory.
 *
 * The directory is the table vcard_search, one row per account with the
 * fields' values as given and case-folded; mod_vcard writes it in the same
 * transaction as the vCard (vcs_index_tx) and fills it at start for vCards
 * stored before it existed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unicase.h>

#include "vcard_search.h"
#include "xmppd/acl.h"
#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/log.h"
#include "xmppd/ns.h"
#include "xmppd/route.h"
#include "xmppd/service.h"
#include "xmppd/stanza.h"

#define VCS_NS "jabber:iq:search"
#define VCS_FIELD_MAX 180 /* bytes of one folded value: within a {key} column (191 characters) */

/* The directory's fields: form var, label, the vCard path, the column. */
typedef struct vcs_field {
    const char *var;
    const char *label;
    const char *path[2]; /* element, and child or NULL */
    const char *col;
    const char *legacy;  /* the XEP-0055 legacy element, or NULL */
} vcs_field_t;

static const vcs_field_t vcs_fields[] = {
    { "fn", "Full Name", { "FN", NULL }, "fn", NULL },
    { "first", "Name", { "N", "GIVEN" }, "given", "first" },
    { "middle", "Middle Name", { "N", "MIDDLE" }, "middle", NULL },
    { "last", "Family Name", { "N", "FAMILY" }, "family", "last" },
    { "nick", "Nickname", { "NICKNAME", NULL }, "nickname", "nick" },
    { "bday", "Birthday", { "BDAY", NULL }, "bday", NULL },
    { "ctry", "Country", { "ADR", "CTRY" }, "ctry", NULL },
    { "locality", "City", { "ADR", "LOCALITY" }, "locality", NULL },
    { "email", "Email", { "EMAIL", "USERID" }, "email", "email" },
    { "orgname", "Organization Name", { "ORG", "ORGNAME" }, "orgname", NULL },
    { "orgunit", "Organization Unit", { "ORG", "ORGUNIT" }, "orgunit", NULL },
};
#define VCS_NFIELDS (sizeof vcs_fields / sizeof vcs_fields[0])

const char *const vcs_migration[] = {
    "CREATE TABLE vcard_search ("
    " host {key} NOT NULL, username {key} NOT NULL,"
    " fn {text} NOT NULL, lfn {key} NOT NULL,"
    " given {text} NOT NULL, lgiven {key} NOT NULL,"
    " middle {text} NOT NULL, lmiddle {key} NOT NULL,"
    " family {text} NOT NULL, lfamily {key} NOT NULL,"
    " nickname {text} NOT NULL, lnickname {key} NOT NULL,"
    " bday {text} NOT NULL, lbday {key} NOT NULL,"
    " ctry {text} NOT NULL, lctry {key} NOT NULL,"
    " locality {text} NOT NULL, llocality {key} NOT NULL,"
    " email {text} NOT NULL, lemail {key} NOT NULL,"
    " orgname {text} NOT NULL, lorgname {key} NOT NULL,"
    " orgunit {text} NOT NULL, lorgunit {key} NOT NULL,"
    " PRIMARY KEY (host, username))",
    NULL,
};

/* The length of s cut to at most max bytes, on a character boundary. */
static size_t
vcs_cut(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n <= max)
        return n;
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--; /* s[n] continues a character: cut before it */
    return n;
}

/* s case-folded (Unicode lower case) into a new string, from its first
 * VCS_FIELD_MAX bytes. */
static char *
vcs_fold(const char *s)
{
    size_t n = vcs_cut(s, VCS_FIELD_MAX);
    size_t outlen = 0;
    uint8_t *r = u8_tolower((const uint8_t *)s, n, NULL, NULL, NULL, &outlen);
    if (!r)
        return xd_strndup(s, n);
    char *out = xd_strndup((const char *)r, outlen);
    free(r);
    return out;
}

/* The text at path in a vCard ("" when none). */
static const char *
vcs_value(const xd_el_t *card, const vcs_field_t *f)
{
    const xd_el_t *e = xd_el_child(card, f->path[0], NULL);
    if (e && f->path[1]) {
        const xd_el_t *k = xd_el_child(e, f->path[1], NULL);
        /* EMAIL: USERID, or (old clients) the element's own text */
        if (!k && !strcmp(f->path[0], "EMAIL"))
            return xd_el_text(e) ? xd_el_text(e) : "";
        e = k;
    }
    const char *t = e ? xd_el_text(e) : NULL;
    return t ? t : "";
}

int
vcs_index_tx(xd_db_conn_t *c, const char *host, const char *user, const char *xml, size_t len)
{
    xd_db_val_t key[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user) };
    int rc = xd_db_query(c, "DELETE FROM vcard_search WHERE host = ? AND username = ?", key, 2,
                         NULL, NULL);
    if (rc != 0 || !xml)
        return rc;
    xd_el_t *card = NULL;
    if (xd_el_parse(xml, len, &card) != 0)
        return 0; /* not searchable; the vCard itself is stored */
    char sql[1024] = "INSERT INTO vcard_search (host, username";
    size_t sl = strlen(sql);
    for (size_t i = 0; i < VCS_NFIELDS; i++)
        sl += (size_t)snprintf(sql + sl, sizeof sql - sl, ", %s, l%s", vcs_fields[i].col,
                               vcs_fields[i].col);
    sl += (size_t)snprintf(sql + sl, sizeof sql - sl, ") VALUES (?, ?");
    for (size_t i = 0; i < VCS_NFIELDS; i++)
        sl += (size_t)snprintf(sql + sl, sizeof sql - sl, ", ?, ?");
    snprintf(sql + sl, sizeof sql - sl, ")");
    xd_db_val_t row[2 + 2 * VCS_NFIELDS];
    char *keep[2 * VCS_NFIELDS];
    row[0] = XD_DB_V_CSTR(host);
    row[1] = XD_DB_V_CSTR(user);
    for (size_t i = 0; i < VCS_NFIELDS; i++) {
        const char *v = vcs_value(card, &vcs_fields[i]);
        keep[2 * i] = xd_strndup(v, vcs_cut(v, VCS_FIELD_MAX * 4));
        keep[2 * i + 1] = vcs_fold(v);
        row[2 + 2 * i] = XD_DB_V_CSTR(keep[2 * i]);
        row[3 + 2 * i] = XD_DB_V_CSTR(keep[2 * i + 1]);
    }
    rc = xd_db_query(c, sql, row, 2 + 2 * VCS_NFIELDS, NULL, NULL);
    for (size_t i = 0; i < 2 * VCS_NFIELDS; i++)
        xd_free(keep[i]);
    xd_el_free(card);
    return rc;
}

typedef struct vcs_pending {
    char **users, **xml;
    size_t *len, n, cap;
} vcs_pending_t;

static int
vcs_pending_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    vcs_pending_t *p = arg;
    if (ncols < 2 || cols[0].type != XD_DB_TEXT || cols[1].type != XD_DB_TEXT)
        return 0;
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 16;
        p->users = xd_realloc(p->users, p->cap * sizeof *p->users);
        p->xml = xd_realloc(p->xml, p->cap * sizeof *p->xml);
        p->len = xd_realloc(p->len, p->cap * sizeof *p->len);
    }
    p->users[p->n] = xd_strndup(cols[0].s.p, cols[0].s.len);
    p->xml[p->n] = xd_strndup(cols[1].s.p, cols[1].s.len);
    p->len[p->n++] = cols[1].s.len;
    return 0;
}

typedef struct vcs_fill {
    const char *host;
    size_t added;
} vcs_fill_t;

static int
vcs_backfill_tx(xd_db_conn_t *c, void *arg)
{
    vcs_fill_t *f = arg;
    xd_db_val_t key[] = { XD_DB_V_CSTR(f->host), XD_DB_V_CSTR(f->host) };
    vcs_pending_t p = { 0 };
    int rc = xd_db_query(c,
                         "SELECT username, xml FROM vcard WHERE host = ? AND username NOT IN"
                         " (SELECT username FROM vcard_search WHERE host = ?)",
                         key, 2, vcs_pending_row, &p);
    for (size_t i = 0; i < p.n; i++) {
        if (rc == 0 && (rc = vcs_index_tx(c, f->host, p.users[i], p.xml[i], p.len[i])) == 0)
            f->added++;
        xd_free(p.users[i]);
        xd_free(p.xml[i]);
    }
    xd_free(p.users);
    xd_free(p.xml);
    xd_free(p.len);
    return rc;
}

int
vcs_backfill(xd_db_t *db, const char *host, size_t *added)
{
    vcs_fill_t f = { .host = host };
    int rc = db ? xd_db_tx(db, vcs_backfill_tx, &f) : XD_ECLOSED;
    *added = f.added;
    return rc;
}

/* ---- the service ------------------------------------------------------------------------------ */

typedef struct vcs_svc {
    vcs_conf_t conf; /* strings owned */
    char *domain;
} vcs_svc_t;

static void
vcs_form_field(xd_el_t *x, const char *var, const char *type, const char *label)
{
    xd_el_t *f = xd_el_add_child(x, "field", NULL);
    xd_el_set_attr(f, "var", var);
    xd_el_set_attr(f, "type", type);
    if (label)
        xd_el_set_attr(f, "label", label);
}

static xd_stanza_t *
vcs_get(const xd_stanza_t *st)
{
    xd_el_t *r = xd_iq_result_builder(st);
    xd_el_t *q = xd_el_add_child(r, "query", VCS_NS);
    xd_el_add_text(xd_el_add_child(q, "instructions", NULL),
                   "Fill in one or more fields to search for users (a value ending in * matches "
                   "the values that begin with it).");
    for (size_t i = 0; i < VCS_NFIELDS; i++)
        if (vcs_fields[i].legacy)
            xd_el_add_child(q, vcs_fields[i].legacy, NULL);
    xd_el_t *x = xd_el_add_child(q, "x", XD_NS_DATA);
    xd_el_set_attr(x, "type", "form");
    xd_el_add_text(xd_el_add_child(x, "title", NULL), "Search users");
    xd_el_add_text(xd_el_add_child(x, "instructions", NULL),
                   "Fill in one or more fields (a value ending in * is a prefix).");
    xd_el_t *ft = xd_el_add_child(x, "field", NULL);
    xd_el_set_attr(ft, "var", "FORM_TYPE");
    xd_el_set_attr(ft, "type", "hidden");
    xd_el_add_text(xd_el_add_child(ft, "value", NULL), VCS_NS);
    vcs_form_field(x, "user", "text-single", "User");
    for (size_t i = 0; i < VCS_NFIELDS; i++)
        vcs_form_field(x, vcs_fields[i].var, "text-single", vcs_fields[i].label);
    return xd_el_freeze(r);
}

typedef struct vcs_job {
    vcs_svc_t *svc;
    const char *host;   /* the served host (the module's) */
    xd_stanza_t *iq;
    bool form;          /* answered as a form */
    char *user;         /* the "user" condition or NULL */
    char *want[VCS_NFIELDS]; /* each field's condition (folded) or NULL */
    xd_el_t *items;     /* the answer being built: <query/> */
    xd_el_t *x;         /* its result form, or NULL (legacy) */
    size_t n;
    int status;
} vcs_job_t;

static int
vcs_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    vcs_job_t *j = arg;
    if (ncols != 1 + VCS_NFIELDS)
        return 0;
    char jid[3 * 1024 + 2];
    snprintf(jid, sizeof jid, "%.*s@%s", (int)cols[0].s.len, cols[0].s.p, j->host);
    if (j->x) {
        xd_el_t *it = xd_el_add_child(j->x, "item", NULL);
        xd_el_t *f = xd_el_add_child(it, "field", NULL);
        xd_el_set_attr(f, "var", "jid");
        xd_el_add_text(xd_el_add_child(f, "value", NULL), jid);
        for (size_t i = 0; i < VCS_NFIELDS; i++) {
            f = xd_el_add_child(it, "field", NULL);
            xd_el_set_attr(f, "var", vcs_fields[i].var);
            xd_el_add_textn(xd_el_add_child(f, "value", NULL), cols[1 + i].s.p, cols[1 + i].s.len);
        }
    } else {
        xd_el_t *it = xd_el_add_child(j->items, "item", NULL);
        xd_el_set_attr(it, "jid", jid);
        for (size_t i = 0; i < VCS_NFIELDS; i++)
            if (vcs_fields[i].legacy)
                xd_el_add_textn(xd_el_add_child(it, vcs_fields[i].legacy, NULL), cols[1 + i].s.p,
                                cols[1 + i].s.len);
    }
    j->n++;
    return 0;
}

/* "col = ?" or "col LIKE ? ESCAPE '!'" for value v (folded), into sql;
 * the parameter into *param (owned by keep). */
static void
vcs_cond(char *sql, size_t cap, size_t *sl, const char *col, const char *v, char **keep)
{
    size_t n = strlen(v);
    if (n > 0 && v[n - 1] == '*') {
        char *p = xd_malloc(2 * n + 2);
        size_t k = 0;
        for (size_t i = 0; i + 1 < n; i++) {
            if (v[i] == '%' || v[i] == '_' || v[i] == '!')
                p[k++] = '!';
            p[k++] = v[i];
        }
        p[k++] = '%';
        p[k] = '\0';
        *keep = p;
        *sl += (size_t)snprintf(sql + *sl, cap - *sl, " AND %s LIKE ? ESCAPE '!'", col);
    } else {
        *keep = xd_strdup(v);
        *sl += (size_t)snprintf(sql + *sl, cap - *sl, " AND %s = ?", col);
    }
}

static int
vcs_search_conn(xd_db_conn_t *c, vcs_job_t *j)
{
    char sql[2048] = "SELECT username";
    size_t sl = strlen(sql);
    for (size_t i = 0; i < VCS_NFIELDS; i++)
        sl += (size_t)snprintf(sql + sl, sizeof sql - sl, ", %s", vcs_fields[i].col);
    sl += (size_t)snprintf(sql + sl, sizeof sql - sl, " FROM vcard_search WHERE host = ?");
    xd_db_val_t params[2 + VCS_NFIELDS + 1];
    char *keep[1 + VCS_NFIELDS] = { 0 };
    size_t np = 0, nk = 0;
    params[np++] = XD_DB_V_CSTR(j->host);
    if (j->user) {
        vcs_cond(sql, sizeof sql, &sl, "username", j->user, &keep[nk]);
        params[np++] = XD_DB_V_CSTR(keep[nk++]);
    }
    for (size_t i = 0; i < VCS_NFIELDS; i++) {
        if (!j->want[i])
            continue;
        char col[32];
        snprintf(col, sizeof col, "l%s", vcs_fields[i].col);
        vcs_cond(sql, sizeof sql, &sl, col, j->want[i], &keep[nk]);
        params[np++] = XD_DB_V_CSTR(keep[nk++]);
    }
    snprintf(sql + sl, sizeof sql - sl, " ORDER BY username LIMIT %d", j->svc->conf.matches);
    int rc = xd_db_query(c, sql, params, np, vcs_row, j);
    for (size_t i = 0; i < nk; i++)
        xd_free(keep[i]);
    return rc;
}

static void
vcs_work(xd_module_ctx_t *ctx, void *arg)
{
    vcs_job_t *j = arg;
    xd_db_t *db = xd_module_db(ctx);
    xd_db_conn_t *c = NULL;
    j->status = db ? xd_db_acquire(db, &c) : XD_ECLOSED;
    if (j->status == 0) {
        j->status = vcs_search_conn(c, j);
        xd_db_release(c);
    }
}

static void
vcs_job_free(vcs_job_t *j)
{
    xd_stanza_unref(j->iq);
    xd_free(j->user);
    for (size_t i = 0; i < VCS_NFIELDS; i++)
        xd_free(j->want[i]);
    xd_el_free(j->items);
    xd_free(j);
}

static void
vcs_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    (void)ctx;
    vcs_job_t *j = arg;
    if (status || j->status) {
        xd_route_error(j->iq, XD_COND_INTERNAL_SERVER_ERROR, NULL);
    } else {
        xd_el_t *r = xd_iq_result_builder(j->iq);
        xd_el_append(r, j->items);
        j->items = NULL;
        xd_route_take(xd_el_freeze(r));
    }
    vcs_job_free(j);
}

/* The conditions of a search set: the form's fields, or the legacy
 * elements.  false when there is none. */
static bool
vcs_read(vcs_job_t *j, const xd_el_t *q)
{
    bool any = false;
    const xd_el_t *x = xd_el_child(q, "x", XD_NS_DATA);
    j->form = x != NULL;
    for (const xd_el_t *f = x ? xd_el_first_child(x) : NULL; f; f = xd_el_next(f)) {
        const char *var = xd_el_attr(f, "var");
        const char *v = xd_el_child_text(f, "value", XD_NS_DATA);
        if (!var || !v || !*v || !strcmp(v, "*"))
            continue; /* a lone '*' matches anything: no condition */
        if (!strcmp(var, "user")) {
            xd_free(j->user);
            j->user = vcs_fold(v);
            any = true;
        }
        for (size_t i = 0; i < VCS_NFIELDS; i++)
            if (!strcmp(var, vcs_fields[i].var)) {
                xd_free(j->want[i]);
                j->want[i] = vcs_fold(v);
                any = true;
            }
    }
    if (x)
        return any;
    for (size_t i = 0; i < VCS_NFIELDS; i++) {
        const char *v = vcs_fields[i].legacy ? xd_el_child_text(q, vcs_fields[i].legacy, NULL)
                                             : NULL;
        if (v && *v && strcmp(v, "*")) {
            j->want[i] = vcs_fold(v);
            any = true;
        }
    }
    return any;
}

static void
vcs_route(xd_module_ctx_t *ctx, xd_stanza_t *st, void *arg)
{
    vcs_svc_t *svc = arg;
    const xd_el_t *root = xd_stanza_root(st);
    const char *type = xd_el_attr(root, "type");
    const xd_el_t *q = xd_el_first_child(root);
    bool get = type && !strcmp(type, "get"), set = type && !strcmp(type, "set");
    const xd_jid_t *from = xd_stanza_from(st);
    if (xd_service_answer_common(st)) {
        ; /* not for the service itself */
    } else if (get && q && xd_el_is(q, "query", XD_NS_DISCO_INFO) && !xd_el_attr(q, "node")) {
        xd_el_t *b = xd_iq_result_builder(st);
        xd_el_t *dq = xd_el_add_child(b, "query", XD_NS_DISCO_INFO);
        xd_el_t *id = xd_el_add_child(dq, "identity", NULL);
        xd_el_set_attr(id, "category", "directory");
        xd_el_set_attr(id, "type", "user");
        xd_el_set_attr(id, "name", svc->conf.name);
        static const char *const feats[] = { XD_NS_DISCO_INFO, XD_NS_DISCO_ITEMS, VCS_NS,
                                             XD_NS_DATA, XD_NS_PING, NULL };
        for (size_t i = 0; feats[i]; i++)
            xd_el_set_attr(xd_el_add_child(dq, "feature", NULL), "var", feats[i]);
        xd_route_take(xd_el_freeze(b));
    } else if ((get || set) && q && xd_el_is(q, "query", VCS_NS)) {
        if (!xd_access_allowed(xd_module_host(ctx), svc->conf.access, from)) {
            xd_route_error(st, XD_COND_FORBIDDEN, "you may not search this directory");
        } else if (get) {
            xd_route_take(vcs_get(st));
        } else {
            vcs_job_t *j = xd_new(vcs_job_t);
            j->svc = svc;
            j->host = xd_module_host(ctx);
            j->iq = xd_stanza_ref(st);
            bool any = vcs_read(j, q);
            if (!any && !svc->conf.allow_return_all) {
                xd_route_error(st, XD_COND_NOT_ACCEPTABLE, "fill in at least one field");
                vcs_job_free(j);
            } else {
                j->items = xd_el_new("query", VCS_NS);
                if (j->form) {
                    j->x = xd_el_add_child(j->items, "x", XD_NS_DATA);
                    xd_el_set_attr(j->x, "type", "result");
                    xd_el_t *ft = xd_el_add_child(j->x, "field", NULL);
                    xd_el_set_attr(ft, "var", "FORM_TYPE");
                    xd_el_set_attr(ft, "type", "hidden");
                    xd_el_add_text(xd_el_add_child(ft, "value", NULL), VCS_NS);
                    xd_el_t *rep = xd_el_add_child(j->x, "reported", NULL);
                    vcs_form_field(rep, "jid", "jid-single", "Jabber ID");
                    for (size_t i = 0; i < VCS_NFIELDS; i++)
                        vcs_form_field(rep, vcs_fields[i].var, "text-single",
                                       vcs_fields[i].label);
                }
                if (xd_module_submit(ctx, vcs_work, vcs_done, j) != 0) {
                    xd_route_error(st, XD_COND_RESOURCE_CONSTRAINT, NULL);
                    vcs_job_free(j);
                }
            }
        }
    } else if (xd_iq_is_request(root)) {
        xd_route_error(st, XD_COND_SERVICE_UNAVAILABLE, NULL);
    }
    xd_stanza_unref(st);
}

/* disco#items of the host lists the directory. */
static int
vcs_disco_items(xd_module_ctx_t *ctx, xd_hook_disco_t *ev, void *arg)
{
    (void)ctx;
    vcs_svc_t *svc = arg;
    if (ev->node)
        return XD_HOOK_OK;
    xd_el_t *it = xd_el_add_child(ev->query, "item", NULL);
    xd_el_set_attr(it, "jid", svc->domain);
    xd_el_set_attr(it, "name", svc->conf.name);
    return XD_HOOK_OK;
}

void
vcs_free(void *p)
{
    vcs_svc_t *svc = p;
    if (!svc)
        return;
    xd_free(svc->conf.host);
    xd_free(svc->conf.name);
    xd_free(svc->conf.access);
    xd_free(svc->domain);
    xd_free(svc);
}

int
vcs_start(xd_module_ctx_t *ctx, const vcs_conf_t *conf, void **out)
{
    *out = NULL;
    char *domain = xd_module_service_domain(ctx, conf->host);
    if (!domain)
        return XD_EINVAL;
    vcs_svc_t *svc = xd_new(vcs_svc_t);
    svc->conf = *conf;
    svc->conf.host = xd_strdup(conf->host);
    svc->conf.name = xd_strdup(conf->name);
    svc->conf.access = conf->access ? xd_strdup(conf->access) : NULL;
    svc->domain = domain;
    *out = svc;
    int rc = xd_module_service(ctx, domain, vcs_route, svc);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_DISCO_LOCAL_ITEMS, XD_HOOK_PRIO_DEFAULT, vcs_disco_items,
                            svc);
    if (rc != 0)
        return xd_module_fail(ctx, rc, "cannot serve the directory on %s: %s", domain,
                              xd_strerror(rc));
    return 0;
}

/*
 * pie.c — XEP-0227 export and import of accounts (pie.h): the commands
 * export_account, export_host and import_file.
 *
 * Export: for each account a <user/> element is built (name, SCRAM
 * credentials from the users store, then whatever the modules of the host
 * append through ACCOUNT_EXPORT), serialised and written; export_host
 * writes one account after the other, so memory holds one account at a
 * time (plus the list of names).  Files are created O_EXCL, mode 0600, and
 * removed again when the export fails.
 *
 * Import: the file is read with libxml2's xmlTextReader, which keeps one
 * <user/> subtree in memory at a time (libxml2's own limits apply: no
 * XML_PARSE_HUGE, so a text node is at most 10 MB and nesting at most 256
 * deep).  No DTD, entity or network access: a DOCTYPE or an entity
 * reference ends the import with an error.  Each account is created in one
 * storage transaction together with everything the modules store for it
 * (ACCOUNT_IMPORT runs inside it), so an account is imported whole or not
 * at all.  An account that exists already is not touched: it is reported
 * as an error and the others are imported.  A <host/> the server does not
 * serve, or whose auth_method is not internal, is an error for that host.
 * Children of <user/> that no module took are listed as a warning.
 */
#include "router/pie.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libxml/xmlreader.h>

#include "storage/dbhosts.h"
#include "xmppd/alloc.h"
#include "xmppd/auth.h"
#include "xmppd/base64.h"
#include "xmppd/cmd.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/jid.h"
#include "xmppd/module.h"
#include "xmppd/ns.h"
#include "xmppd/scram.h"
#include "xmppd/storage.h"

/* ---- SCRAM credentials ------------------------------------------------------------------------ */

static void
pie_b64_child(xd_el_t *parent, const char *name, const uint8_t *p, size_t n)
{
    char buf[2 * XD_SCRAM_SALT_MAX + 8];
    xd_base64_encode(p, n, buf, 0);
    xd_el_add_text(xd_el_add_child(parent, name, XD_NS_PIE_SCRAM), buf);
}

void
xd_pie_scram_el(xd_el_t *user, const xd_scram_cred_t *cred)
{
    char mech[32], iter[16];
    snprintf(mech, sizeof mech, "SCRAM-%s", xd_scram_hash_name(cred->hash));
    snprintf(iter, sizeof iter, "%u", cred->iterations);
    xd_el_t *s = xd_el_add_child(user, "scram-credentials", XD_NS_PIE_SCRAM);
    xd_el_set_attr(s, "mechanism", mech);
    xd_el_add_text(xd_el_add_child(s, "iter-count", XD_NS_PIE_SCRAM), iter);
    pie_b64_child(s, "salt", cred->salt, cred->salt_len);
    size_t kl = xd_scram_key_len(cred->hash);
    pie_b64_child(s, "server-key", cred->server_key, kl);
    pie_b64_child(s, "stored-key", cred->stored_key, kl);
}

static int
pie_b64_get(const xd_el_t *el, const char *name, uint8_t *out, size_t cap, size_t *len,
            char *err, size_t errcap)
{
    const char *t = xd_el_child_text(el, name, XD_NS_PIE_SCRAM);
    if (!t || !*t || xd_base64_decode(t, strlen(t), out, cap, len, XD_BASE64_WS) != 0) {
        snprintf(err, errcap, "scram-credentials: <%s/> is missing or not base64 of the right size",
                 name);
        return XD_EINVAL;
    }
    return 0;
}

int
xd_pie_scram_parse(const xd_el_t *el, xd_scram_cred_t *out, char *err, size_t errcap)
{
    memset(out, 0, sizeof *out);
    const char *mech = xd_el_attr(el, "mechanism");
    int hash = -1;
    for (int h = 0; mech && h < XD_SCRAM_HASH_COUNT; h++) {
        char name[32];
        snprintf(name, sizeof name, "SCRAM-%s", xd_scram_hash_name((xd_scram_hash)h));
        if (strcmp(name, mech) == 0)
            hash = h;
    }
    if (hash < 0) {
        snprintf(err, errcap, "scram-credentials: unknown mechanism '%s'", mech ? mech : "");
        return XD_EINVAL;
    }
    out->hash = (xd_scram_hash)hash;
    const char *it = xd_el_child_text(el, "iter-count", XD_NS_PIE_SCRAM);
    char *end = NULL;
    unsigned long n = it && it[0] >= '1' && it[0] <= '9' ? strtoul(it, &end, 10) : 0;
    if (n == 0 || n > 100000000ul || !end || *end) {
        snprintf(err, errcap, "scram-credentials: bad <iter-count/>");
        return XD_EINVAL;
    }
    out->iterations = (unsigned)n;
    size_t kl = xd_scram_key_len(out->hash), got = 0;
    int rc = pie_b64_get(el, "salt", out->salt, sizeof out->salt, &out->salt_len, err, errcap);
    if (rc == 0 && out->salt_len == 0) {
        snprintf(err, errcap, "scram-credentials: empty <salt/>");
        rc = XD_EINVAL;
    }
    if (rc == 0)
        rc = pie_b64_get(el, "server-key", out->server_key, sizeof out->server_key, &got, err,
                         errcap);
    if (rc == 0 && got != kl) {
        snprintf(err, errcap, "scram-credentials: key of the wrong size for %s", mech);
        rc = XD_EINVAL;
    }
    if (rc == 0)
        rc = pie_b64_get(el, "stored-key", out->stored_key, sizeof out->stored_key, &got, err,
                         errcap);
    if (rc == 0 && got != kl) {
        snprintf(err, errcap, "scram-credentials: key of the wrong size for %s", mech);
        rc = XD_EINVAL;
    }
    return rc;
}

/* ---- output ----------------------------------------------------------------------------------- */

/* A text the command collects for its result (one line per event). */
typedef struct pie_out {
    char *p;
    size_t len, cap;
} pie_out_t;

static void __attribute__((format(printf, 2, 3)))
pie_say(pie_out_t *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *line = xd_vasprintf(fmt, ap);
    va_end(ap);
    size_t n = strlen(line);
    if (o->len + n + 2 > o->cap) {
        o->cap = (o->len + n + 2) * 2;
        o->p = xd_realloc(o->p, o->cap);
    }
    memcpy(o->p + o->len, line, n);
    o->len += n;
    o->p[o->len++] = '\n';
    o->p[o->len] = '\0';
    xd_free(line);
}

static int
pie_create(xd_cmd_call_t *call, const char *path, FILE **out)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        int err = errno;
        return xd_cmd_errorf(call, err == EEXIST ? XD_EEXIST : XD_EINVAL, "%s: %s", path,
                             strerror(err));
    }
    *out = fdopen(fd, "w");
    if (!*out) {
        close(fd);
        unlink(path);
        return xd_cmd_errorf(call, XD_EINTERNAL, "%s: cannot open", path);
    }
    fputs("<?xml version='1.0' encoding='UTF-8'?>\n<server-data xmlns='" XD_NS_PIE "'>\n", *out);
    return 0;
}

static int
pie_finish(xd_cmd_call_t *call, FILE *f, const char *path, int rc)
{
    if (rc == 0)
        fputs("</server-data>\n", f);
    bool bad = ferror(f) != 0;
    if ((fflush(f) != 0 || fsync(fileno(f)) != 0 || bad) && rc == 0)
        rc = xd_cmd_errorf(call, XD_EINTERNAL, "%s: write failed", path);
    fclose(f);
    if (rc != 0)
        unlink(path);
    return rc;
}

/* The database of host: its own pool (host_config sql_*), else the default. */
static xd_db_t *
pie_host_db(const char *host)
{
    xd_db_t *db = xd_db_host(host);
    return db ? db : xd_module_db(NULL);
}

static xd_db_t *
pie_db(xd_cmd_call_t *call, const char *host)
{
    int method = -1;
    if (xd_auth_method_of(host, &method) != 0 || method != XD_AUTH_INTERNAL) {
        xd_cmd_errorf(call, XD_ENOTSUP, "host %s: auth_method is not internal (no accounts "
                      "stored to move)", host);
        return NULL;
    }
    xd_db_t *db = pie_host_db(host);
    if (!db)
        xd_cmd_errorf(call, XD_ENOTSUP, "no database");
    return db;
}

/* Writes one account (its <user/> element) to f. */
static int
pie_export_user(xd_cmd_call_t *call, xd_db_t *db, FILE *f, const char *host, const char *user)
{
    int rc = xd_user_exists(db, xd_str_c(host), xd_str_c(user));
    if (rc == 0)
        return xd_cmd_errorf(call, XD_ENOTFOUND, "account %s@%s does not exist", user, host);
    if (rc < 0)
        return xd_cmd_errorf(call, rc, "%s@%s: %s", user, host, xd_strerror(rc));
    xd_el_t *u = xd_el_new("user", NULL);
    xd_el_set_attr(u, "name", user);
    for (int h = 0; h < XD_SCRAM_HASH_COUNT; h++) {
        xd_scram_cred_t cred;
        rc = xd_user_get_scram(db, xd_str_c(host), xd_str_c(user), (xd_scram_hash)h, &cred);
        if (rc == 0)
            xd_pie_scram_el(u, &cred);
        else if (rc != XD_ENOTFOUND)
            break;
        rc = 0;
    }
    xd_hook_account_export_t ev = { .host = host, .user = user, .user_el = u };
    if (rc == 0) {
        xd_hook_run(XD_HOOK_ACCOUNT_EXPORT, host, &ev);
        rc = ev.rc;
    }
    if (rc != 0) {
        xd_el_free(u);
        return xd_cmd_errorf(call, rc, "export of %s@%s failed%s%s: %s", user, host,
                             ev.module ? " in " : "", ev.module ? ev.module : "",
                             xd_strerror(rc));
    }
    size_t len;
    /* Stanzas the modules add (<message/> in <offline-messages/>) are
     * in the content namespace: jabber:client. */
    char *xml = xd_el_serialize(u, XD_NS_CLIENT, &len);
    xd_el_free(u);
    fputs("    ", f);
    fwrite(xml, 1, len, f);
    fputc('\n', f);
    xd_free(xml);
    return 0;
}

/* ---- export_account, export_host --------------------------------------------------------------- */

static int
cmd_export_account(xd_cmd_call_t *call)
{
    const char *user = call->args[0].text, *host = call->args[1].text, *path = call->args[2].text;
    xd_db_t *db = pie_db(call, host);
    if (!db)
        return XD_ENOTSUP;
    FILE *f;
    int rc = pie_create(call, path, &f);
    if (rc != 0)
        return rc;
    fprintf(f, "  <host jid='%s'>\n", host);
    rc = pie_export_user(call, db, f, host, user);
    if (rc == 0)
        fputs("  </host>\n", f);
    rc = pie_finish(call, f, path, rc);
    if (rc == 0)
        xd_cmd_printf(call, "%s@%s written to %s\n", user, host, path);
    return rc;
}

typedef struct pie_names {
    char **v;
    size_t n, cap;
} pie_names_t;

static int
pie_name_add(void *arg, xd_str_t user)
{
    pie_names_t *ns = arg;
    if (ns->n == ns->cap) {
        ns->cap = ns->cap ? ns->cap * 2 : 64;
        ns->v = xd_realloc(ns->v, ns->cap * sizeof *ns->v);
    }
    ns->v[ns->n++] = xd_strndup(user.p, user.len);
    return 0;
}

static int
cmd_export_host(xd_cmd_call_t *call)
{
    const char *host = call->args[0].text, *path = call->args[1].text;
    xd_db_t *db = pie_db(call, host);
    if (!db)
        return XD_ENOTSUP;
    /* The names first (the list query is done before any module reads), then
     * one account at a time. */
    pie_names_t ns = { 0 };
    int rc = xd_user_list(db, xd_str_c(host), pie_name_add, &ns);
    FILE *f = NULL;
    if (rc != 0)
        rc = xd_cmd_errorf(call, rc, "listing the accounts of %s: %s", host, xd_strerror(rc));
    else
        rc = pie_create(call, path, &f);
    if (rc == 0) {
        fprintf(f, "  <host jid='%s'>\n", host);
        for (size_t i = 0; i < ns.n && rc == 0; i++)
            rc = pie_export_user(call, db, f, host, ns.v[i]);
        if (rc == 0)
            fputs("  </host>\n", f);
        rc = pie_finish(call, f, path, rc);
    }
    if (rc == 0)
        call->res.i = (int64_t)ns.n;
    for (size_t i = 0; i < ns.n; i++)
        xd_free(ns.v[i]);
    xd_free(ns.v);
    return rc;
}

/* ---- import ----------------------------------------------------------------------------------- */

/* libxml2 node (an expanded <user/>) to an xd_el_t tree: urn:xmpp:pie:0
 * elements get the NULL namespace, the others keep theirs. */
static int
pie_conv(xmlNodePtr n, xd_el_t *parent, xd_el_t **out, char *err, size_t errcap)
{
    const char *ns = n->ns ? (const char *)n->ns->href : NULL;
    if (ns && strcmp(ns, XD_NS_PIE) == 0)
        ns = NULL;
    xd_el_t *e = parent ? xd_el_add_child(parent, (const char *)n->name, ns)
                        : xd_el_new((const char *)n->name, ns);
    if (!parent)
        *out = e;
    for (xmlAttrPtr a = n->properties; a; a = a->next) {
        xmlChar *v = xmlNodeListGetString(n->doc, a->children, 1);
        if (a->ns && a->ns->prefix) {
            char *q = xd_asprintf("%s:%s", (const char *)a->ns->prefix, (const char *)a->name);
            xd_el_set_attr_ns(e, q, (const char *)a->ns->href, v ? (const char *)v : "");
            xd_free(q);
        } else {
            xd_el_set_attr(e, (const char *)a->name, v ? (const char *)v : "");
        }
        xmlFree(v);
    }
    for (xmlNodePtr c = n->children; c; c = c->next) {
        switch (c->type) {
        case XML_ELEMENT_NODE: {
            int rc = pie_conv(c, e, out, err, errcap);
            if (rc != 0)
                return rc;
            break;
        }
        case XML_TEXT_NODE:
        case XML_CDATA_SECTION_NODE:
            if (c->content)
                xd_el_add_text(e, (const char *)c->content);
            break;
        case XML_COMMENT_NODE:
        case XML_PI_NODE:
            break;
        default:
            snprintf(err, errcap, "line %d: entity references are not allowed",
                     xmlGetLineNo(c) > 0 ? (int)xmlGetLineNo(c) : 0);
            return XD_EINVAL;
        }
    }
    return 0;
}

typedef struct pie_imp {
    xd_db_t *db;
    const char *host, *user;
    const xd_el_t *u;
    xd_scram_cred_t creds[XD_SCRAM_HASH_COUNT];
    size_t ncreds;
    bool *taken;
    size_t n;
    char err[256];
} pie_imp_t;

static int
pie_import_tx(xd_db_conn_t *c, void *arg)
{
    (void)c;
    pie_imp_t *im = arg;
    memset(im->taken, 0, im->n * sizeof *im->taken);
    im->err[0] = '\0';
    int rc = xd_user_create(im->db, xd_str_c(im->host), xd_str_c(im->user), im->creds,
                            im->ncreds);
    if (rc != 0) {
        snprintf(im->err, sizeof im->err, "%s",
                 rc == XD_EEXIST ? "the account exists already (not changed)" : xd_strerror(rc));
        return rc;
    }
    size_t i = 0;
    for (const xd_el_t *ch = xd_el_first_child(im->u); ch; ch = xd_el_next(ch), i++)
        if (xd_el_is(ch, "scram-credentials", XD_NS_PIE_SCRAM))
            im->taken[i] = true;
    char err[XD_HOOK_IMPORT_ERR_MAX] = "";
    xd_hook_account_import_t ev = { .host = im->host, .user = im->user, .user_el = im->u,
                                    .taken = im->taken, .nchildren = im->n, .err = err };
    xd_hook_run(XD_HOOK_ACCOUNT_IMPORT, im->host, &ev);
    if (ev.rc != 0) {
        snprintf(im->err, sizeof im->err, "%s", err[0] ? err : xd_strerror(ev.rc));
        return ev.rc < 0 ? ev.rc : XD_EINVAL;
    }
    return 0;
}

typedef struct pie_run {
    pie_out_t out;
    unsigned imported, failed, warned;
} pie_run_t;

/* Imports one parsed <user/> of host (served, internal). */
static void
pie_import_user(pie_run_t *run, xd_db_t *db, const char *host, const xd_el_t *u)
{
    const char *raw = xd_el_attr(u, "name");
    char *user = NULL;
    if (!raw || xd_jid_prep_local(xd_str_c(raw), &user) != 0 || !user || !*user) {
        pie_say(&run->out, "error: %s: <user name='%s'/> is not a valid localpart", host,
                raw ? raw : "");
        xd_free(user);
        run->failed++;
        return;
    }
    pie_imp_t im = { .db = db, .host = host, .user = user, .u = u };
    im.n = xd_el_child_count(u);
    im.taken = xd_calloc(im.n ? im.n : 1, sizeof *im.taken);
    int rc = 0;
    for (const xd_el_t *ch = xd_el_first_child(u); ch && rc == 0; ch = xd_el_next(ch)) {
        if (!xd_el_is(ch, "scram-credentials", XD_NS_PIE_SCRAM))
            continue;
        if (im.ncreds == XD_SCRAM_HASH_COUNT) {
            snprintf(im.err, sizeof im.err, "too many scram-credentials");
            rc = XD_EINVAL;
            break;
        }
        rc = xd_pie_scram_parse(ch, &im.creds[im.ncreds], im.err, sizeof im.err);
        for (size_t j = 0; rc == 0 && j < im.ncreds; j++)
            if (im.creds[j].hash == im.creds[im.ncreds].hash) {
                snprintf(im.err, sizeof im.err, "scram-credentials: mechanism repeated");
                rc = XD_EINVAL;
            }
        if (rc == 0)
            im.ncreds++;
    }
    const char *pw = xd_el_attr(u, "password");
    if (rc == 0 && im.ncreds == 0 && pw && *pw) {
        /* A plain password (XEP-0227 allows it; discouraged): credentials
         * for every hash with the default iteration count. */
        rc = xd_scram_creds_make(xd_str_c(pw), XD_SCRAM_ITERATIONS_DEFAULT, im.creds);
        if (rc == 0)
            im.ncreds = XD_SCRAM_HASH_COUNT;
        else
            snprintf(im.err, sizeof im.err, "the password is not allowed");
    }
    if (rc == 0)
        rc = xd_db_tx(db, pie_import_tx, &im);
    explicit_bzero(im.creds, sizeof im.creds);
    if (rc != 0) {
        pie_say(&run->out, "error: %s@%s: %s", user, host, im.err[0] ? im.err : xd_strerror(rc));
        run->failed++;
    } else {
        run->imported++;
        pie_say(&run->out, "imported %s@%s", user, host);
        /* What nobody took, in one warning line. */
        char *list = NULL;
        size_t i = 0;
        for (const xd_el_t *ch = xd_el_first_child(u); ch; ch = xd_el_next(ch), i++) {
            if (im.taken[i])
                continue;
            const char *ns = xd_el_ns(ch);
            char *nl = xd_asprintf("%s%s{%s}%s", list ? list : "", list ? ", " : "",
                                   ns ? ns : XD_NS_PIE, xd_el_name(ch));
            xd_free(list);
            list = nl;
        }
        if (list) {
            pie_say(&run->out, "warning: %s@%s: not imported (no module takes them): %s", user,
                    host, list);
            run->warned++;
            xd_free(list);
        }
    }
    xd_free(im.taken);
    xd_free(user);
}

static void
pie_xml_error(void *arg, const xmlError *e)
{
    char *msg = arg;
    if (msg[0] == '\0' && e && e->message && e->level >= XML_ERR_ERROR) {
        snprintf(msg, 256, "line %d: %s", e->line, e->message);
        size_t n = strlen(msg);
        while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
            msg[--n] = '\0';
    }
}

static int
cmd_import_file(xd_cmd_call_t *call)
{
    const char *path = call->args[0].text;
    /* libxml2 gets the server's allocator hooks before it is used here. */
    xd_el_t *probe = NULL;
    if (xd_el_parse("<a/>", 4, &probe) == 0)
        xd_el_free(probe);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return xd_cmd_errorf(call, XD_EINVAL, "%s: %s", path, strerror(errno));
    char xmlerr[256] = "";
    xmlTextReaderPtr r = xmlReaderForFd(fd, path, NULL, XML_PARSE_NONET | XML_PARSE_NOCDATA);
    if (!r) {
        close(fd);
        return xd_cmd_errorf(call, XD_EINTERNAL, "%s: cannot read", path);
    }
    xmlTextReaderSetStructuredErrorHandler(r, (xmlStructuredErrorFunc)pie_xml_error, xmlerr);
    pie_run_t run = { 0 };
    char *host = NULL;
    bool host_ok = false;
    xd_db_t *db = NULL;
    int rc = 0, ret = xmlTextReaderRead(r);
    bool root_seen = false;
    while (ret == 1 && rc == 0) {
        int type = xmlTextReaderNodeType(r), depth = xmlTextReaderDepth(r);
        const char *name = (const char *)xmlTextReaderConstLocalName(r);
        const char *ns = (const char *)xmlTextReaderConstNamespaceUri(r);
        bool pie = ns && strcmp(ns, XD_NS_PIE) == 0;
        if (type == XML_READER_TYPE_DOCUMENT_TYPE || type == XML_READER_TYPE_ENTITY_REFERENCE) {
            rc = xd_cmd_errorf(call, XD_EINVAL, "%s: DTDs and entity references are not allowed",
                               path);
            break;
        }
        if (type != XML_READER_TYPE_ELEMENT) {
            ret = xmlTextReaderRead(r);
            continue;
        }
        if (depth == 0) {
            if (!pie || strcmp(name, "server-data") != 0) {
                rc = xd_cmd_errorf(call, XD_EINVAL,
                                   "%s: not a XEP-0227 file (root <server-data xmlns='%s'/>)",
                                   path, XD_NS_PIE);
                break;
            }
            root_seen = true;
        } else if (depth == 1 && pie && strcmp(name, "host") == 0) {
            xd_free(host);
            host = NULL;
            xmlChar *jid = xmlTextReaderGetAttribute(r, (const xmlChar *)"jid");
            char *prepped = NULL;
            if (!jid || xd_jid_prep_domain(xd_str_c((const char *)jid), &prepped) != 0) {
                pie_say(&run.out, "error: <host jid='%s'/>: not a domain", jid ? (char *)jid : "");
                run.failed++;
                host_ok = false;
            } else {
                host = prepped;
                prepped = NULL;
                host_ok = xd_config_is_host(call->cfg, host);
                int method = -1;
                if (!host_ok) {
                    pie_say(&run.out, "error: host %s is not served here: its accounts were not "
                            "imported", host);
                    run.failed++;
                } else if (xd_auth_method_of(host, &method) != 0 || method != XD_AUTH_INTERNAL ||
                           !(db = pie_host_db(host))) {
                    pie_say(&run.out, "error: host %s: auth_method is not internal: its accounts "
                            "were not imported", host);
                    run.failed++;
                    host_ok = false;
                }
            }
            xd_free(prepped);
            xmlFree(jid);
            if (!host_ok) {
                ret = xmlTextReaderNext(r);
                continue;
            }
        } else if (depth == 2 && pie && strcmp(name, "user") == 0 && host_ok) {
            xmlNodePtr n = xmlTextReaderExpand(r);
            if (!n)
                break; /* malformed: reported below */
            xd_el_t *u = NULL;
            char err[256] = "";
            if (pie_conv(n, NULL, &u, err, sizeof err) != 0) {
                pie_say(&run.out, "error: %s: %s", host, err);
                run.failed++;
            } else {
                pie_import_user(&run, db, host, u);
            }
            xd_el_free(u);
            ret = xmlTextReaderNext(r);
            continue;
        } else {
            /* Anything else is skipped whole. */
            pie_say(&run.out, "warning: <%s xmlns='%s'/> at depth %d ignored", name,
                    ns ? ns : "", depth);
            run.warned++;
            ret = xmlTextReaderNext(r);
            continue;
        }
        ret = xmlTextReaderRead(r);
    }
    if (rc == 0 && (ret < 0 || xmlerr[0])) {
        pie_say(&run.out, "error: %s: malformed XML (%s): the account being read and the rest "
                "of the file were not imported", path, xmlerr[0] ? xmlerr : "parse error");
        run.failed++;
    } else if (rc == 0 && !root_seen) {
        rc = xd_cmd_errorf(call, XD_EINVAL, "%s: empty file", path);
    }
    xmlFreeTextReader(r);
    close(fd);
    xd_free(host);
    if (rc == 0) {
        pie_say(&run.out, "%u imported, %u failed, %u warnings", run.imported, run.failed,
                run.warned);
        if (run.failed)
            rc = xd_cmd_errorf(call, XD_EINTERNAL, "%s", run.out.p);
        else
            xd_cmd_printf(call, "%s", run.out.p);
    }
    xd_free(run.out.p);
    return rc;
}

/* ---- registration ------------------------------------------------------------------------------ */

static const xd_cmd_arg_t args_export_account[] = {
    { "user", XD_CMD_USER, "the account's localpart" },
    { "host", XD_CMD_HOST, "its host" },
    { "file", XD_CMD_STRING, "a new file (it must not exist) the server writes, mode 0600" },
};

static const xd_cmd_arg_t args_export_host[] = {
    { "host", XD_CMD_HOST, "a served host whose auth_method is internal" },
    { "file", XD_CMD_STRING, "a new file (it must not exist) the server writes, mode 0600" },
};

static const xd_cmd_arg_t args_import[] = {
    { "file", XD_CMD_STRING, "a XEP-0227 file the server reads" },
};

static const xd_cmd_t pie_cmds[] = {
    { .name = "export_account",
      .doc = "write an account with all its data to FILE (XEP-0227)",
      .longdoc = "Writes USER@HOST to FILE in the XEP-0227 format: SCRAM credentials (no "
                 "password), roster, vCard, offline messages, private storage, privacy and "
                 "blocking lists, message archive, PEP nodes.  FILE is created (it must not "
                 "exist) with mode 0600: it holds the account's secrets.",
      .args = args_export_account, .nargs = 3, .result = XD_CMD_RES_STRING,
      .fn = cmd_export_account },
    { .name = "export_host",
      .doc = "write every account of HOST with all its data to FILE (XEP-0227)",
      .longdoc = "As export_account for every account of HOST, one after the other.",
      .args = args_export_host, .nargs = 2, .result = XD_CMD_RES_INT,
      .result_doc = "how many accounts were written", .fn = cmd_export_host },
    { .name = "import_file",
      .doc = "create the accounts of a XEP-0227 FILE with all their data",
      .longdoc = "Creates every account of FILE on the hosts the server serves, each with its "
                 "data in one transaction.  An account that exists is left as it is and "
                 "reported; a host not served is reported; elements no module knows are "
                 "listed in a warning.  Exit status 1 when anything was not imported.",
      .args = args_import, .nargs = 1, .result = XD_CMD_RES_STRING, .fn = cmd_import_file },
};

void
xd_pie_register_commands(void)
{
    for (size_t i = 0; i < sizeof pie_cmds / sizeof pie_cmds[0]; i++)
        xd_cmd_register(&pie_cmds[i]);
}

/*
 * mod_upload.c — HTTP File Upload (XEP-0363), the XMPP side: the service
 * on `host` (upload.@HOST@) with its disco#info (identity store/file, the
 * XEP-0128 form with max-file-size), slot requests checked against the
 * size limit, the allowed content types, the access rule and the owner's
 * quota, the slot rows (upload_slot), the expiry of old files (a TICK
 * every sweep_interval, or `xmppctl upload_expire HOST`), the removal
 * of an account's files with the account, and of a file whose sharing
 * message its owner retracts (XEP-0424).  The HTTP side (PUT, GET) is
 * upload_http.c; the layout of slots and URLs is upload.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "mod_util.h"
#include "upload.h"

#include "xmppd/acl.h"
#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/jid.h"
#include "xmppd/log.h"
#include "xmppd/ns.h"
#include "xmppd/route.h"
#include "xmppd/service.h"
#include "xmppd/stanza.h"
#include "xmppd/storage.h"

/* ---- options ----------------------------------------------------------------------------------- */

#define C_ up_conf_t
static const xd_opt_t up_opts[] = {
    XD_OPT_STRING("host", C_, host, "upload.@HOST@",
                  "Domain of the upload service; `@HOST@` is replaced by the served host."),
    XD_OPT_STRING("name", C_, name, "HTTP File Upload",
                  "Name of the service in its disco#info identity."),
    XD_OPT_STRING("access", C_, access, NULL,
                  "Access rule: who may ask for upload slots (others get forbidden).  Unset: "
                  "the accounts of the served host."),
    XD_OPT_SIZE("max_size", C_, max_size, "100MiB",
                "Bytes of one file: a larger slot request is refused with not-acceptable and "
                "`<file-too-large/>`; announced as max-file-size in disco#info."),
    XD_OPT_SIZE("user_quota", C_, user_quota, "0",
                "Bytes one account may have stored (its uploaded files, and the slots it may "
                "still fill): a slot beyond it is refused with resource-constraint.  0: no "
                "quota."),
    XD_OPT_STRING_LIST("content_types", C_, content_types, NULL,
                       "Media types that may be uploaded (\"image/jpeg\"; \"image/*\" for a "
                       "whole kind); a slot for another is refused with not-acceptable.  "
                       "None: any."),
    XD_OPT_STRING("put_url", C_, put_url, NULL,
                  "Base of the PUT URLs handed out (`@HOST@`: the served host), such as "
                  "`https://@HOST@:5443/upload`, for a proxy in front.  Unset: the first "
                  "`module: http` listener that serves the `upload` handler, with the served "
                  "host as host name."),
    XD_OPT_STRING("get_url", C_, get_url, NULL,
                  "Base of the GET URLs handed out (`@HOST@` as in put_url).  Unset: put_url."),
    XD_OPT_DURATION("put_timeout", C_, put_timeout_ms, "5m",
                    "How long a slot's PUT URL stays valid (later: 403)."),
    XD_OPT_INT("expire_days", C_, expire_days, "0", 0, 100000,
               "Files older than this many days are deleted (with their slot), checked every "
               "sweep_interval and by `xmppctl upload_expire`.  0: files are kept."),
    XD_OPT_DURATION("sweep_interval", C_, sweep_interval_ms, "1h",
                    "How often expired files and unused slots are deleted."),
    XD_OPT_PATH("docroot", C_, docroot, NULL,
                "Directory of the uploaded files (one directory per slot, named by its random "
                "id).  Unset: `<data_dir>/upload`."),
    XD_OPT_FULL("secret", XD_OPT_TYPE_STRING, C_, secret, NULL, NULL,
                "Key of the HMAC that signs PUT URLs.  Unset: 32 random bytes, generated once "
                "into `<docroot>/.secret` (mode 0600).",
                XD_OPT_SECRET, NULL),
    XD_OPT_END,
};
#undef C_

/* ---- storage ----------------------------------------------------------------------------------- */

static const char *const up_mig1[] = {
    "CREATE TABLE upload_slot ("
    " id {key} NOT NULL PRIMARY KEY,"
    " host {key} NOT NULL,"
    " owner_host {key} NOT NULL,"
    " owner_user {key} NOT NULL,"
    " name {text} NOT NULL,"
    " size {int} NOT NULL,"
    " content_type {text} NOT NULL,"
    " created_at {int} NOT NULL,"
    " complete {int} NOT NULL)",
    "CREATE INDEX upload_slot_owner ON upload_slot (owner_host, owner_user)",
    "CREATE INDEX upload_slot_created ON upload_slot (host, created_at)",
    /* Messages in which the owner shared a file's URL (XEP-0424 retraction). */
    "CREATE TABLE upload_share ("
    " slot_id {key} NOT NULL,"
    " owner_host {key} NOT NULL,"
    " owner_user {key} NOT NULL,"
    " msg_id {key} NOT NULL,"
    " PRIMARY KEY (slot_id, msg_id))",
    "CREATE INDEX upload_share_msg ON upload_share (owner_host, owner_user, msg_id)",
    NULL,
};

static const xd_db_migration_t up_migrations[] = {
    { 1, NULL, up_mig1 },
    { 0, NULL, NULL },
};

static const xd_module_schema_t up_schemas[] = {
    { "mod_upload", up_migrations },
    { NULL, NULL },
};

/* ---- names, tokens, paths ---------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at p (of n bytes) that may stay in a
 * name, or 0. */
static size_t
utf8_ok(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;
        if (c == 0xED)
            hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    /* U+0080..U+009F (C1 controls), U+2028/2029, bidi controls U+202A-202E, U+2066-2069. */
    if (c == 0xC2 && p[1] < 0xA0)
        return 0;
    if (c == 0xE2 && p[1] == 0x80 && p[2] >= 0xA8 && p[2] <= 0xAE)
        return 0;
    if (c == 0xE2 && p[1] == 0x81 && p[2] >= 0xA6 && p[2] <= 0xA9)
        return 0;
    return len;
}

void
up_name_sanitize(const char *in, size_t len, char *out)
{
    /* The last component: nothing before a '/' or '\' is a name. */
    for (size_t i = len; i > 0; i--) {
        if (in[i - 1] == '/' || in[i - 1] == '\\') {
            in += i;
            len -= i;
            break;
        }
    }
    char buf[4 * UP_NAME_MAX + 8];
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)in;
    for (size_t i = 0; i < len && o + 4 < sizeof buf;) {
        unsigned char c = p[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '.' || c == '-' || c == '_' || c == '+') {
            buf[o++] = (char)c;
            i++;
        } else if (c >= 0x80) {
            size_t n = utf8_ok(p + i, len - i);
            if (n) {
                memcpy(buf + o, p + i, n);
                o += n;
                i += n;
            } else {
                buf[o++] = '_';
                i++;
            }
        } else {
            buf[o++] = '_';
            i++;
        }
    }
    buf[o] = '\0';
    if (o == 0) {
        snprintf(out, UP_NAME_MAX + 1, "file");
        return;
    }
    if (buf[0] == '.')
        buf[0] = '_'; /* no hidden files, never "." or ".." */
    if (o <= UP_NAME_MAX) {
        memcpy(out, buf, o + 1);
        return;
    }
    /* Too long: the head, cut on a character boundary, and the extension. */
    const char *dot = strrchr(buf, '.');
    size_t ext = dot && (size_t)(buf + o - dot) <= 16 ? (size_t)(buf + o - dot) : 0;
    size_t head = UP_NAME_MAX - ext;
    while (head > 0 && ((unsigned char)buf[head] & 0xC0) == 0x80)
        head--;
    memcpy(out, buf, head);
    memcpy(out + head, buf + o - ext, ext);
    out[head + ext] = '\0';
}

static void
up_mac(const up_state_t *s, const char *host, const char *id, const char *name, int64_t size,
       const char *type, int64_t expires, char hex[65])
{
    char *msg = xd_asprintf("%s/%s/%s\n%lld\n%s\n%lld", host, id, name, (long long)size, type,
                            (long long)expires);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    HMAC(EVP_sha256(), s->secret, (int)s->secret_len, (const unsigned char *)msg, strlen(msg), md,
         &mdlen);
    xd_free(msg);
    for (unsigned i = 0; i < 32 && i < mdlen; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    hex[64] = '\0';
}

void
up_token(const up_state_t *s, const char *host, const char *id, const char *name, int64_t size,
         const char *type, int64_t expires, char *out, size_t cap)
{
    char hex[65];
    up_mac(s, host, id, name, size, type, expires, hex);
    snprintf(out, cap, "%lld-%s", (long long)expires, hex);
}

bool
up_token_ok(const up_state_t *s, const char *host, const char *id, const char *name,
            int64_t size, const char *type, const char *token, int64_t now)
{
    char *end = NULL;
    errno = 0;
    long long expires = strtoll(token, &end, 10);
    if (errno || end == token || *end != '-' || strlen(end + 1) != 64)
        return false;
    char hex[65];
    up_mac(s, host, id, name, size, type, expires, hex);
    if (CRYPTO_memcmp(hex, end + 1, 64) != 0)
        return false;
    return expires >= now;
}

char *
up_path(const up_state_t *s, const char *id, const char *name)
{
    if (!name)
        return xd_asprintf("%s/%s", s->docroot, id);
    return xd_asprintf("%s/%s/%s", s->docroot, id, name);
}

void
up_unlink_slot(const up_state_t *s, const char *id, const char *name)
{
    char *p = up_path(s, id, name);
    unlink(p);
    xd_free(p);
    p = up_path(s, id, ".part");
    unlink(p);
    xd_free(p);
    p = up_path(s, id, NULL);
    rmdir(p);
    xd_free(p);
}

/* ---- the service's IQs ------------------------------------------------------------------------- */

/* An error reply with an application condition (file-too-large) inside. */
static void
up_error(const xd_stanza_t *st, xd_cond cond, const char *text, xd_el_t *app)
{
    xd_stanza_t *e = xd_stanza_error(st, cond, text);
    if (!e) {
        xd_el_free(app);
        return;
    }
    if (app) {
        xd_el_t *root = xd_stanza_thaw(e);
        for (xd_el_t *c = xd_el_first_child_mut(root); c; c = xd_el_next_mut(c)) {
            if (!strcmp(xd_el_name(c), "error")) {
                xd_el_append(c, app);
                app = NULL;
                break;
            }
        }
        xd_el_free(app);
        e = xd_el_freeze(root);
    }
    xd_route_take(e);
}

static void
up_disco_info(xd_module_ctx_t *ctx, const xd_stanza_t *st)
{
    const up_conf_t *c = xd_module_opts(ctx);
    xd_el_t *b = xd_iq_result_builder(st);
    xd_el_t *q = xd_el_add_child(b, "query", XD_NS_DISCO_INFO);
    xd_el_t *id = xd_el_add_child(q, "identity", NULL);
    xd_el_set_attr(id, "category", "store");
    xd_el_set_attr(id, "type", "file");
    xd_el_set_attr(id, "name", c->name);
    static const char *const feats[] = { XD_NS_DISCO_INFO, XD_NS_DISCO_ITEMS, UP_NS, XD_NS_PING,
                                         NULL };
    for (size_t i = 0; feats[i]; i++)
        xd_el_set_attr(xd_el_add_child(q, "feature", NULL), "var", feats[i]);
    /* XEP-0363 4 (XEP-0128): the largest file. */
    xd_el_t *x = xd_el_add_child(q, "x", XD_NS_DATA);
    xd_el_set_attr(x, "type", "result");
    xd_el_t *f = xd_el_add_child(x, "field", NULL);
    xd_el_set_attr(f, "var", "FORM_TYPE");
    xd_el_set_attr(f, "type", "hidden");
    xd_el_add_text(xd_el_add_child(f, "value", NULL), UP_NS);
    f = xd_el_add_child(x, "field", NULL);
    xd_el_set_attr(f, "var", "max-file-size");
    char n[32];
    snprintf(n, sizeof n, "%zu", c->max_size);
    xd_el_add_text(xd_el_add_child(f, "value", NULL), n);
    xd_route_take(xd_el_freeze(b));
}

/* A media type as a slot may carry one: "type/subtype" with optional
 * parameters, printable ASCII without quotes or backslashes. */
static bool
up_type_ok(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > UP_TYPE_MAX)
        return false;
    const char *slash = strchr(t, '/');
    if (!slash || slash == t || slash[1] == '\0' || slash[1] == ';')
        return false;
    for (const char *p = t; *p; p++)
        if (*p < 0x20 || *p > 0x7e || *p == '"' || *p == '\\')
            return false;
    for (const char *p = t; *p && *p != ';'; p++)
        if (*p == ' ' || *p == ',')
            return false;
    return true;
}

/* Whether t's media type (without parameters) is allowed by content_types. */
static bool
up_type_allowed(const up_conf_t *c, const char *t)
{
    if (c->content_types.count == 0)
        return true;
    size_t n = strcspn(t, ";");
    while (n > 0 && t[n - 1] == ' ')
        n--;
    for (size_t i = 0; i < c->content_types.count; i++) {
        const char *a = c->content_types.items[i];
        size_t an = strlen(a);
        if (an >= 2 && !strcmp(a + an - 2, "/*")) {
            if (n > an - 1 && !strncasecmp(t, a, an - 1))
                return true;
        } else if (an == n && !strncasecmp(t, a, n)) {
            return true;
        }
    }
    return false;
}

typedef struct up_slot_job {
    xd_stanza_t *st;                    /* the request (a reference) */
    char id[UP_ID_LEN + 1];
    char name[UP_NAME_MAX + 1];
    char type[UP_TYPE_MAX + 1];
    char *owner_host, *owner_user;
    int64_t size;
    int64_t now;
    int rc;                             /* 0, XD_ELIMIT (quota), or an error */
    int64_t used;                       /* the owner's bytes before this slot */
} up_slot_job_t;

typedef struct up_quota_tx {
    up_slot_job_t *j;
    const char *host;
    int64_t quota;        /* 0: none */
    int64_t pending_after; /* slots created after this may still be filled */
} up_quota_tx_t;

static int
up_quota_tx(xd_db_conn_t *c, void *arg)
{
    up_quota_tx_t *q = arg;
    up_slot_job_t *j = q->j;
    if (q->quota > 0) {
        xd_db_val_t k[] = { XD_DB_V_CSTR(j->owner_host), XD_DB_V_CSTR(j->owner_user),
                            XD_DB_V_INT(q->pending_after) };
        int rc = xd_db_query_int64(c,
                                   "SELECT COALESCE(SUM(size), 0) FROM upload_slot "
                                   "WHERE owner_host = ? AND owner_user = ? "
                                   "AND (complete = 1 OR created_at > ?)",
                                   k, 3, &j->used);
        if (rc != 0)
            return rc;
        if (j->used + j->size > q->quota)
            return XD_ELIMIT; /* rolled back: nothing was written */
    }
    xd_db_val_t row[] = { XD_DB_V_CSTR(j->id),         XD_DB_V_CSTR(q->host),
                          XD_DB_V_CSTR(j->owner_host), XD_DB_V_CSTR(j->owner_user),
                          XD_DB_V_CSTR(j->name),       XD_DB_V_INT(j->size),
                          XD_DB_V_CSTR(j->type),       XD_DB_V_INT(j->now) };
    return xd_db_query(c,
                       "INSERT INTO upload_slot (id, host, owner_host, owner_user, name, size, "
                       "content_type, created_at, complete) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)",
                       row, 8, NULL, NULL);
}

static void
up_slot_work(xd_module_ctx_t *ctx, void *arg)
{
    up_slot_job_t *j = arg;
    const up_conf_t *c = xd_module_opts(ctx);
    xd_db_t *db = xd_module_db(ctx);
    if (!db) {
        j->rc = XD_ENOTSUP;
        return;
    }
    up_quota_tx_t q = { j, xd_module_host(ctx), (int64_t)c->user_quota,
                        j->now - (int64_t)(c->put_timeout_ms / 1000) };
    j->rc = xd_db_tx(db, up_quota_tx, &q);
}

/* "%xx" for every byte of a name that is not ASCII (the rest is safe). */
static char *
up_pct(const char *name)
{
    size_t n = strlen(name);
    char *out = xd_malloc(3 * n + 1), *o = out;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if (*p >= 0x80)
            o += sprintf(o, "%%%02X", *p);
        else
            *o++ = (char)*p;
    }
    *o = '\0';
    return out;
}

static void
up_slot_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    up_slot_job_t *j = arg;
    up_state_t *s = xd_module_state(ctx);
    const up_conf_t *c = xd_module_opts(ctx);
    int rc = status ? status : j->rc;
    if (rc == XD_ELIMIT) {
        char text[160];
        snprintf(text, sizeof text, "upload quota exceeded: %lld of %zu bytes in use",
                 (long long)j->used, c->user_quota);
        up_error(j->st, XD_COND_RESOURCE_CONSTRAINT, text, NULL);
    } else if (rc == XD_EFULL) {
        up_error(j->st, XD_COND_RESOURCE_CONSTRAINT, "server busy", NULL);
    } else if (rc != 0) {
        XD_LOG(NULL, XD_ERROR, "upload slot not stored", "host=%s err=%s", xd_module_host(ctx),
               xd_strerror(rc));
        up_error(j->st, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL);
    } else {
        const char *host = xd_module_host(ctx);
        char *pname = up_pct(j->name);
        char token[100];
        up_token(s, host, j->id, j->name, j->size, j->type,
                 j->now + (int64_t)(c->put_timeout_ms / 1000), token, sizeof token);
        char *put = xd_asprintf("%s/%s/%s/%s?token=%s", s->put_base, host, j->id, pname, token);
        char *get = xd_asprintf("%s/%s/%s/%s", s->get_base, host, j->id, pname);
        xd_el_t *b = xd_iq_result_builder(j->st);
        xd_el_t *slot = xd_el_add_child(b, "slot", UP_NS);
        xd_el_set_attr(xd_el_add_child(slot, "put", NULL), "url", put);
        xd_el_set_attr(xd_el_add_child(slot, "get", NULL), "url", get);
        xd_route_take(xd_el_freeze(b));
        XD_LOG(NULL, XD_INFO, "upload slot", "host=%s owner=%s@%s id=%s size=%lld type=%s", host,
               j->owner_user, j->owner_host, j->id, (long long)j->size, j->type);
        xd_free(put);
        xd_free(get);
        xd_free(pname);
    }
    xd_stanza_unref(j->st);
    xd_free(j->owner_host);
    xd_free(j->owner_user);
    xd_free(j);
}

static bool
up_may_upload(xd_module_ctx_t *ctx, const xd_jid_t *from)
{
    const up_conf_t *c = xd_module_opts(ctx);
    return xd_access_allowed(xd_module_host(ctx), c->access, from);
}

static void
up_slot_request(xd_module_ctx_t *ctx, const xd_stanza_t *st, const xd_el_t *req)
{
    const up_conf_t *c = xd_module_opts(ctx);
    const xd_jid_t *from = xd_stanza_from(st);
    if (!up_may_upload(ctx, from)) {
        up_error(st, XD_COND_FORBIDDEN, "you may not upload files here", NULL);
        return;
    }
    const char *fname = xd_el_attr(req, "filename");
    const char *size_s = xd_el_attr(req, "size");
    const char *type = xd_el_attr(req, "content-type");
    if (!fname || !*fname || !size_s) {
        up_error(st, XD_COND_BAD_REQUEST, "filename and size are required", NULL);
        return;
    }
    char *end = NULL;
    errno = 0;
    long long size = strtoll(size_s, &end, 10);
    if (errno || end == size_s || *end || size <= 0 || size_s[0] == '+') {
        up_error(st, XD_COND_BAD_REQUEST, "size is not a positive number of bytes", NULL);
        return;
    }
    if ((unsigned long long)size > c->max_size) {
        xd_el_t *big = xd_el_new("file-too-large", UP_NS);
        char n[32];
        snprintf(n, sizeof n, "%zu", c->max_size);
        xd_el_add_text(xd_el_add_child(big, "max-file-size", NULL), n);
        char text[96];
        snprintf(text, sizeof text, "file too large: at most %zu bytes", c->max_size);
        up_error(st, XD_COND_NOT_ACCEPTABLE, text, big);
        return;
    }
    if (!type || !*type)
        type = "application/octet-stream";
    if (!up_type_ok(type)) {
        up_error(st, XD_COND_BAD_REQUEST, "content-type is not a media type", NULL);
        return;
    }
    if (!up_type_allowed(c, type)) {
        up_error(st, XD_COND_NOT_ACCEPTABLE, "this content type may not be uploaded here", NULL);
        return;
    }
    up_slot_job_t *j = xd_new(up_slot_job_t);
    if (mod_random_id(j->id) != 0) {
        xd_free(j);
        up_error(st, XD_COND_INTERNAL_SERVER_ERROR, NULL, NULL);
        return;
    }
    up_name_sanitize(fname, strlen(fname), j->name);
    snprintf(j->type, sizeof j->type, "%s", type);
    xd_str_t oh = xd_jid_domain(from), ou = xd_jid_local(from);
    j->owner_host = xd_strndup(oh.p, oh.len);
    j->owner_user = xd_strndup(ou.p, ou.len);
    j->size = size;
    j->now = (int64_t)time(NULL);
    j->st = xd_stanza_ref(st);
    int rc = xd_module_submit(ctx, up_slot_work, up_slot_done, j);
    if (rc != 0)
        up_slot_done(ctx, j, rc);
}

/* Runs on the routing worker; owns st. */
static void
up_route(xd_module_ctx_t *ctx, xd_stanza_t *st, void *arg)
{
    (void)arg;
    const xd_el_t *root = xd_stanza_root(st);
    const char *type = xd_el_attr(root, "type");
    const xd_el_t *q = xd_el_first_child(root);
    bool get = type && !strcmp(type, "get");
    if (xd_service_answer_common(st)) {
        ; /* not for the service itself */
    } else if (get && q && xd_el_is(q, "query", XD_NS_DISCO_INFO) && !xd_el_attr(q, "node")) {
        up_disco_info(ctx, st);
    } else if (get && q && xd_el_is(q, "request", UP_NS) && xd_el_child_count(root) == 1) {
        up_slot_request(ctx, st, q);
    } else if (xd_iq_is_request(root)) {
        xd_route_error(st, XD_COND_SERVICE_UNAVAILABLE, NULL);
    }
    xd_stanza_unref(st);
}

/* disco#items of the served host lists the service. */
static int
up_disco_items(xd_module_ctx_t *ctx, xd_hook_disco_t *ev, void *arg)
{
    (void)arg;
    if (ev->node)
        return XD_HOOK_OK;
    up_state_t *s = xd_module_state(ctx);
    const up_conf_t *c = xd_module_opts(ctx);
    xd_el_t *it = xd_el_add_child(ev->query, "item", NULL);
    xd_el_set_attr(it, "jid", s->domain);
    xd_el_set_attr(it, "name", c->name);
    return XD_HOOK_OK;
}

/* ---- deleting slots: expiry and account removal ------------------------------------------------- */

typedef struct up_victims {
    char (*ids)[UP_ID_LEN + 1];
    char (*names)[UP_NAME_MAX + 1];
    size_t n, cap;
} up_victims_t;

static int
up_victim_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    up_victims_t *v = arg;
    if (ncols < 2 || cols[0].type != XD_DB_TEXT || cols[1].type != XD_DB_TEXT ||
        cols[0].s.len > UP_ID_LEN || cols[1].s.len > UP_NAME_MAX)
        return 0;
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 64;
        v->ids = xd_realloc(v->ids, v->cap * sizeof *v->ids);
        v->names = xd_realloc(v->names, v->cap * sizeof *v->names);
    }
    snprintf(v->ids[v->n], sizeof v->ids[v->n], "%.*s", (int)cols[0].s.len, cols[0].s.p);
    snprintf(v->names[v->n], sizeof v->names[v->n], "%.*s", (int)cols[1].s.len, cols[1].s.p);
    v->n++;
    return 0;
}

/* Deletes the files, then the rows, of the slots v names.  Blocks. */
static int
up_delete_victims(const up_state_t *s, xd_db_conn_t *c, const up_victims_t *v)
{
    int rc = 0;
    for (size_t i = 0; i < v->n && rc == 0; i++) {
        up_unlink_slot(s, v->ids[i], v->names[i]);
        xd_db_val_t k[] = { XD_DB_V_CSTR(v->ids[i]) };
        rc = xd_db_query(c, "DELETE FROM upload_share WHERE slot_id = ?", k, 1, NULL, NULL);
        if (rc == 0)
            rc = xd_db_query(c, "DELETE FROM upload_slot WHERE id = ?", k, 1, NULL, NULL);
    }
    return rc;
}

/* Deletes expired files and unused slots of the instance's host; *count
 * gets how many slots went.  Blocks (the pool, xmppctl's thread). */
static int
up_expire_now(xd_module_ctx_t *ctx, int64_t now, int64_t *count)
{
    const up_conf_t *c = xd_module_opts(ctx);
    up_state_t *s = xd_module_state(ctx);
    xd_db_t *db = xd_module_db(ctx);
    *count = 0;
    if (!db)
        return 0;
    xd_db_conn_t *conn = NULL;
    int rc = xd_db_acquire(db, &conn);
    if (rc != 0)
        return rc;
    /* Files older than expire_days; slots never filled a day after their
     * PUT URL expired (an upload may still be running at the deadline). */
    int64_t files_before = c->expire_days > 0 ? now - (int64_t)c->expire_days * 86400 : INT64_MIN;
    int64_t slots_before = now - (int64_t)(c->put_timeout_ms / 1000) - 86400;
    for (;;) {
        up_victims_t v = { 0 };
        xd_db_val_t k[] = { XD_DB_V_CSTR(xd_module_host(ctx)), XD_DB_V_INT(files_before),
                            XD_DB_V_INT(slots_before) };
        rc = xd_db_query(conn,
                         "SELECT id, name FROM upload_slot WHERE host = ? AND "
                         "((complete = 1 AND created_at < ?) OR (complete = 0 AND created_at < ?)) "
                         "ORDER BY created_at LIMIT 500",
                         k, 3, up_victim_row, &v);
        if (rc == 0)
            rc = up_delete_victims(s, conn, &v);
        if (rc == 0)
            *count += (int64_t)v.n;
        size_t n = v.n;
        xd_free(v.ids);
        xd_free(v.names);
        if (rc != 0 || n < 500)
            break;
    }
    xd_db_release(conn);
    return rc;
}

static void
up_sweep_work(xd_module_ctx_t *ctx, void *arg)
{
    int64_t *count = arg;
    int rc = up_expire_now(ctx, (int64_t)time(NULL), count);
    if (rc != 0)
        XD_LOG(NULL, XD_ERROR, "upload expiry failed", "host=%s err=%s", xd_module_host(ctx),
               xd_strerror(rc));
}

static void
up_sweep_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    (void)status;
    int64_t *count = arg;
    up_state_t *s = xd_module_state(ctx);
    if (*count)
        XD_LOG(NULL, XD_INFO, "upload expired", "host=%s slots=%lld", xd_module_host(ctx),
               (long long)*count);
    s->sweeping = false;
    xd_free(count);
}

static int
up_tick(xd_module_ctx_t *ctx, xd_hook_tick_t *ev, void *arg)
{
    (void)arg;
    if (ev->worker != 0)
        return XD_HOOK_OK;
    up_state_t *s = xd_module_state(ctx);
    const up_conf_t *c = xd_module_opts(ctx);
    if (s->last_sweep_ms && ev->now_ms - s->last_sweep_ms < c->sweep_interval_ms)
        return XD_HOOK_OK;
    s->last_sweep_ms = ev->now_ms;
    if (s->sweeping)
        return XD_HOOK_OK;
    s->sweeping = true;
    int64_t *count = xd_new(int64_t);
    if (xd_module_submit(ctx, up_sweep_work, up_sweep_done, count) != 0) {
        s->sweeping = false;
        xd_free(count);
    }
    return XD_HOOK_OK;
}

typedef struct up_rm_job {
    char *host, *user;
} up_rm_job_t;

static void
up_rm_work(xd_module_ctx_t *ctx, void *arg)
{
    up_rm_job_t *j = arg;
    xd_db_t *db = xd_module_db(ctx);
    xd_db_conn_t *conn = NULL;
    if (!db || xd_db_acquire(db, &conn) != 0)
        return;
    up_victims_t v = { 0 };
    xd_db_val_t k[] = { XD_DB_V_CSTR(j->host), XD_DB_V_CSTR(j->user) };
    int rc = xd_db_query(conn,
                         "SELECT id, name FROM upload_slot WHERE owner_host = ? AND owner_user = ?",
                         k, 2, up_victim_row, &v);
    if (rc == 0)
        rc = up_delete_victims(xd_module_state(ctx), conn, &v);
    if (rc != 0)
        XD_LOG(NULL, XD_ERROR, "uploads of a removed account not deleted", "user=%s@%s err=%s",
               j->user, j->host, xd_strerror(rc));
    else if (v.n)
        XD_LOG(NULL, XD_INFO, "uploads of a removed account deleted", "user=%s@%s files=%zu",
               j->user, j->host, v.n);
    xd_free(v.ids);
    xd_free(v.names);
    xd_db_release(conn);
}

static void
up_rm_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    (void)ctx;
    (void)status;
    up_rm_job_t *j = arg;
    xd_free(j->host);
    xd_free(j->user);
    xd_free(j);
}

static int
up_remove_user(xd_module_ctx_t *ctx, xd_hook_user_t *ev, void *arg)
{
    (void)arg;
    up_rm_job_t *j = xd_new(up_rm_job_t);
    j->host = xd_strdup(ev->host);
    j->user = xd_strdup(ev->user);
    /* On a worker: the pool; on xmppctl's thread: at once. */
    int rc = xd_module_submit(ctx, up_rm_work, up_rm_done, j);
    if (rc != 0) {
        XD_LOG(NULL, XD_ERROR, "uploads of a removed account not deleted", "user=%s@%s err=%s",
               ev->user, ev->host, xd_strerror(rc));
        up_rm_done(ctx, j, rc);
    }
    return XD_HOOK_OK;
}

/* ---- retraction (XEP-0424) -------------------------------------------------------------------- */

#define UP_NS_RETRACT1 "urn:xmpp:message-retract:1"
#define UP_NS_RETRACT0 "urn:xmpp:message-retract:0"
#define UP_NS_FASTEN "urn:xmpp:fasten:0"
#define UP_SHARES_MAX 8 /* slot URLs remembered per message */

typedef struct up_share_job {
    char *owner_host, *owner_user;
    char *msg_id;
    bool retract;                          /* else: remember the shares */
    char ids[UP_SHARES_MAX][UP_ID_LEN + 1];
    size_t nids;
} up_share_job_t;

static int
up_share_tx(xd_db_conn_t *c, void *arg)
{
    up_share_job_t *j = arg;
    for (size_t i = 0; i < j->nids; i++) {
        /* Only the owner's own files: another's URL in a message is no share. */
        int64_t n = 0;
        xd_db_val_t k[] = { XD_DB_V_CSTR(j->ids[i]), XD_DB_V_CSTR(j->owner_host),
                            XD_DB_V_CSTR(j->owner_user), XD_DB_V_CSTR(j->msg_id) };
        int rc = xd_db_query_int64(c,
                                   "SELECT COUNT(*) FROM upload_slot s WHERE s.id = ? AND "
                                   "s.owner_host = ? AND s.owner_user = ? AND NOT EXISTS "
                                   "(SELECT 1 FROM upload_share m WHERE m.slot_id = s.id "
                                   "AND m.msg_id = ?)",
                                   k, 4, &n);
        if (rc != 0)
            return rc;
        if (n == 0)
            continue;
        xd_db_val_t row[] = { XD_DB_V_CSTR(j->ids[i]), XD_DB_V_CSTR(j->owner_host),
                              XD_DB_V_CSTR(j->owner_user), XD_DB_V_CSTR(j->msg_id) };
        rc = xd_db_query(c,
                         "INSERT INTO upload_share (slot_id, owner_host, owner_user, msg_id) "
                         "VALUES (?, ?, ?, ?)",
                         row, 4, NULL, NULL);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static void
up_share_work(xd_module_ctx_t *ctx, void *arg)
{
    up_share_job_t *j = arg;
    xd_db_t *db = xd_module_db(ctx);
    if (!db)
        return;
    int rc;
    size_t gone = 0;
    if (!j->retract) {
        rc = xd_db_tx(db, up_share_tx, j);
    } else {
        xd_db_conn_t *c = NULL;
        rc = xd_db_acquire(db, &c);
        if (rc == 0) {
            up_victims_t v = { 0 };
            xd_db_val_t k[] = { XD_DB_V_CSTR(j->owner_host), XD_DB_V_CSTR(j->owner_user),
                                XD_DB_V_CSTR(j->msg_id) };
            rc = xd_db_query(c,
                             "SELECT s.id, s.name FROM upload_slot s, upload_share m "
                             "WHERE m.slot_id = s.id AND m.owner_host = ? AND m.owner_user = ? "
                             "AND m.msg_id = ?",
                             k, 3, up_victim_row, &v);
            if (rc == 0)
                rc = up_delete_victims(xd_module_state(ctx), c, &v);
            gone = v.n;
            xd_free(v.ids);
            xd_free(v.names);
            xd_db_release(c);
        }
    }
    if (rc != 0)
        XD_LOG(NULL, XD_ERROR, "upload share not handled", "user=%s@%s retract=%d err=%s",
               j->owner_user, j->owner_host, j->retract, xd_strerror(rc));
    else if (gone)
        XD_LOG(NULL, XD_INFO, "upload retracted", "user=%s@%s files=%zu", j->owner_user,
               j->owner_host, gone);
}

static void
up_share_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    (void)ctx;
    (void)status;
    up_share_job_t *j = arg;
    xd_free(j->owner_host);
    xd_free(j->owner_user);
    xd_free(j->msg_id);
    xd_free(j);
}

/* Adds the slot ids of the GET URLs of this service found in text. */
static void
up_find_urls(const up_state_t *s, const char *host, const char *text, up_share_job_t *j)
{
    if (!text)
        return;
    char *prefix = xd_asprintf("%s/%s/", s->get_base, host);
    size_t pn = strlen(prefix);
    for (const char *p = text; (p = strstr(p, prefix)) && j->nids < UP_SHARES_MAX; p += pn) {
        const char *id = p + pn;
        size_t n = strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_");
        if (n != UP_ID_LEN || id[n] != '/')
            continue;
        memcpy(j->ids[j->nids], id, UP_ID_LEN);
        j->ids[j->nids][UP_ID_LEN] = '\0';
        j->nids++;
    }
    xd_free(prefix);
}

/* USER_SEND_PACKET: a message of a local user that shares one of its files
 * (the GET URL in its body or an XEP-0066 <x><url/>) is remembered by its
 * id (its XEP-0359 origin-id, else its 'id'); a retraction of that id
 * (XEP-0424, message-retract:1 or the fastening of :0) deletes the file. */
static int
up_sent(xd_module_ctx_t *ctx, xd_hook_packet_t *ev, void *arg)
{
    (void)arg;
    const xd_el_t *m = ev->st ? xd_stanza_root(ev->st) : NULL;
    if (!m || xd_stanza_kind_of(m) != XD_STANZA_MESSAGE || !ev->jid)
        return XD_HOOK_OK;
    const char *type = xd_el_attr(m, "type");
    if (type && !strcmp(type, "error"))
        return XD_HOOK_OK;
    up_state_t *s = xd_module_state(ctx);
    up_share_job_t *j = xd_new(up_share_job_t);
    const xd_el_t *r = xd_el_child(m, "retract", UP_NS_RETRACT1);
    const char *rid = r ? xd_el_attr(r, "id") : NULL;
    if (!rid) {
        const xd_el_t *f = xd_el_child(m, "apply-to", UP_NS_FASTEN);
        if (f && xd_el_child(f, "retract", UP_NS_RETRACT0))
            rid = xd_el_attr(f, "id");
    }
    if (rid) {
        j->retract = true;
        j->msg_id = xd_strdup(rid);
    } else {
        up_find_urls(s, xd_module_host(ctx), xd_el_child_text(m, "body", NULL), j);
        const xd_el_t *oob = xd_el_child(m, "x", XD_NS_OOB);
        up_find_urls(s, xd_module_host(ctx), oob ? xd_el_child_text(oob, "url", NULL) : NULL, j);
        const xd_el_t *oid = xd_el_child(m, "origin-id", XD_NS_SID);
        const char *id = oid && xd_el_attr(oid, "id") ? xd_el_attr(oid, "id") : xd_el_attr(m, "id");
        if (j->nids && id)
            j->msg_id = xd_strdup(id);
    }
    if (!j->msg_id || strlen(j->msg_id) > 256) {
        xd_free(j->msg_id);
        xd_free(j);
        return XD_HOOK_OK;
    }
    xd_str_t d = xd_jid_domain(ev->jid), u = xd_jid_local(ev->jid);
    j->owner_host = xd_strndup(d.p, d.len);
    j->owner_user = xd_strndup(u.p, u.len);
    if (xd_module_submit(ctx, up_share_work, up_share_done, j) != 0)
        up_share_done(ctx, j, 0);
    return XD_HOOK_OK;
}

/* ---- xmppctl upload_expire --------------------------------------------------------------------- */

static const xd_cmd_arg_t up_expire_args[] = {
    { "host", XD_CMD_HOST, "a served host running mod_upload" },
};

static int
up_expire_cmd(xd_cmd_call_t *call)
{
    const char *host = call->args[0].text;
    xd_module_ctx_t *ctx = xd_module_instance("mod_upload", host);
    if (!ctx)
        return xd_cmd_errorf(call, XD_ENOTFOUND, "mod_upload does not run on %s", host);
    int64_t n = 0;
    int rc = up_expire_now(ctx, (int64_t)time(NULL), &n);
    xd_module_release(ctx);
    if (rc != 0)
        return xd_cmd_errorf(call, rc, "%s: %s", host, xd_strerror(rc));
    call->res.i = n;
    return 0;
}

static const xd_cmd_t up_cmd_expire = {
    .name = "upload_expire",
    .doc = "delete expired uploaded files and unused upload slots of a host now",
    .longdoc = "Runs the expiry of mod_upload (expire_days, and slots whose PUT URL expired a "
               "day ago) at once instead of at the next sweep_interval.",
    .args = up_expire_args,
    .nargs = 1,
    .result = XD_CMD_RES_INT,
    .result_doc = "the number of slots deleted",
    .fn = up_expire_cmd,
};

/* ---- module ------------------------------------------------------------------------------------ */

static char *
up_expand(const char *pattern, const char *host)
{
    const char *at = strstr(pattern, "@HOST@");
    char *s = at ? xd_asprintf("%.*s%s%s", (int)(at - pattern), pattern, host, at + 6)
                 : xd_strdup(pattern);
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/')
        s[--n] = '\0';
    return s;
}

/* The URL base of the first http listener that serves "upload". */
static char *
up_listener_base(const char *host)
{
    xd_config_t *cfg = xd_config_get();
    char *out = NULL;
    for (size_t i = 0; cfg && !out && i < xd_config_listen_count(cfg); i++) {
        const xd_listen_conf_t *l = xd_config_listen(cfg, i);
        if (l->module != XD_LISTEN_MOD_HTTP)
            continue;
        const char *path = l->request_handlers.count ? NULL : "/upload";
        for (size_t k = 0; k < l->request_handlers.count; k++)
            if (!strcmp(l->request_handlers.items[k].handler, "upload") ||
                !strcmp(l->request_handlers.items[k].handler, "mod_upload") ||
                !strcmp(l->request_handlers.items[k].handler, "mod_http_upload"))
                path = l->request_handlers.items[k].name;
        if (!path)
            continue;
        char *pattern = xd_asprintf("%s://@HOST@:%d%s", l->tls ? "https" : "http", l->port,
                                    !strcmp(path, "/") ? "" : path);
        out = up_expand(pattern, host);
        xd_free(pattern);
    }
    xd_config_unref(cfg);
    return out;
}

/* The HMAC key: the option, else <docroot>/.secret, made once. */
static int
up_load_secret(xd_module_ctx_t *ctx, up_state_t *s, const up_conf_t *c)
{
    if (c->secret) {
        unsigned int n = 0;
        /* Any length of text: its SHA-256 is the key. */
        EVP_Digest(c->secret, strlen(c->secret), s->secret, &n, EVP_sha256(), NULL);
        s->secret_len = n;
        return 0;
    }
    char *path = xd_asprintf("%s/.secret", s->docroot);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, s->secret, sizeof s->secret);
        close(fd);
        if (n == (ssize_t)sizeof s->secret) {
            s->secret_len = sizeof s->secret;
            xd_free(path);
            return 0;
        }
    }
    int rc = 0;
    if (RAND_bytes(s->secret, sizeof s->secret) != 1) {
        rc = xd_module_fail(ctx, XD_EINTERNAL, "no random bytes for the upload secret");
    } else {
        char *tmp = xd_asprintf("%s.tmp", path);
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || write(fd, s->secret, sizeof s->secret) != (ssize_t)sizeof s->secret ||
            fsync(fd) != 0 || rename(tmp, path) != 0)
            rc = xd_module_fail(ctx, -errno, "cannot write %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        xd_free(tmp);
        s->secret_len = sizeof s->secret;
    }
    xd_free(path);
    return rc;
}

/* mkdir -p with mode 0750 for what it creates. */
static int
up_mkdirs(const char *path)
{
    char *p = xd_strdup(path);
    int rc = 0;
    for (char *q = p + 1; rc == 0; q++) {
        if (*q == '/' || *q == '\0') {
            char save = *q;
            *q = '\0';
            if (mkdir(p, 0750) != 0 && errno != EEXIST)
                rc = -errno;
            *q = save;
            if (save == '\0')
                break;
        }
    }
    xd_free(p);
    return rc;
}

static void
up_stop(xd_module_ctx_t *ctx)
{
    up_state_t *s = xd_module_state(ctx);
    if (!s)
        return;
    if (s->put_base)
        up_http_unref();
    OPENSSL_cleanse(s->secret, sizeof s->secret);
    xd_free(s->domain);
    xd_free(s->docroot);
    xd_free(s->put_base);
    xd_free(s->get_base);
    xd_free(s);
}

static int
up_start(xd_module_ctx_t *ctx)
{
    const up_conf_t *c = xd_module_opts(ctx);
    const char *host = xd_module_host(ctx);
    up_state_t *s = xd_new(up_state_t);
    xd_module_set_state(ctx, s);
    s->domain = xd_module_service_domain(ctx, c->host);
    if (!s->domain)
        return XD_EINVAL;
    if (c->docroot) {
        s->docroot = up_expand(c->docroot, host);
    } else {
        xd_config_t *cfg = xd_config_get();
        s->docroot = xd_asprintf("%s/upload", cfg ? xd_config_data_dir(cfg) : ".");
        xd_config_unref(cfg);
    }
    int rc = up_mkdirs(s->docroot);
    if (rc != 0)
        return xd_module_fail(ctx, rc, "cannot create %s: %s", s->docroot, xd_strerror(rc));
    rc = up_load_secret(ctx, s, c);
    if (rc != 0)
        return rc;
    char *put = c->put_url ? up_expand(c->put_url, host) : up_listener_base(host);
    if (!put)
        return xd_module_fail(ctx, XD_EINVAL,
                              "no http listener serves the upload handler: add one "
                              "(module: http) or set put_url");
    s->get_base = c->get_url ? up_expand(c->get_url, host) : xd_strdup(put);
    rc = up_http_ref();
    if (rc != 0) {
        xd_free(put);
        return xd_module_fail(ctx, rc, "cannot register the upload HTTP handler: %s",
                              xd_strerror(rc));
    }
    s->put_base = put;
    rc = xd_module_service(ctx, s->domain, up_route, NULL);
    if (rc != 0)
        return xd_module_fail(ctx, rc, "cannot serve %s: %s", s->domain, xd_strerror(rc));
    rc = xd_module_hook(ctx, XD_HOOK_DISCO_LOCAL_ITEMS, XD_HOOK_PRIO_DEFAULT, up_disco_items, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_REMOVE_USER, XD_HOOK_PRIO_DEFAULT, up_remove_user, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_TICK, XD_HOOK_PRIO_DEFAULT, up_tick, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_USER_SEND_PACKET, XD_HOOK_PRIO_DEFAULT, up_sent, NULL);
    if (rc == 0)
        rc = xd_module_command(ctx, &up_cmd_expire);
    if (rc != 0)
        return xd_module_fail(ctx, rc, "cannot register: %s", xd_strerror(rc));
    XD_LOG(NULL, XD_INFO, "upload service", "domain=%s docroot=%s put=%s get=%s", s->domain,
           s->docroot, s->put_base, s->get_base);
    return 0;
}

const xd_module_t xd_mod_upload = {
    .abi = XD_MODULE_ABI,
    .name = "mod_upload",
    .doc = "HTTP File Upload (XEP-0363): slots on the service domain, files PUT and GET "
           "through the http listener",
    .opts = up_opts,
    .opts_size = sizeof(up_conf_t),
    .schemas = up_schemas,
    .start = up_start,
    .stop = up_stop,
};

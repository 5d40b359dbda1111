/*
 * mod_vcard.c — vcard-temp (XEP-0054) for accounts and for the server.
 *
 * On for a host when `mod_vcard` is listed under `modules`.  Answers:
 *
 *   get to one's own bare JID (a get without 'to' arrives so)
 *       → the stored <vCard xmlns='vcard-temp'/>, or an empty one when none
 *         is stored (XEP-0054 3.1 allows either that or item-not-found);
 *   get to another local account's bare JID
 *       → the stored vCard, or service-unavailable both when the account
 *         has none and when it does not exist (XEP-0054 3.3, version 1.3:
 *         the same error in both cases against directory harvesting);
 *   set to one's own bare JID
 *       → the whole vCard replaces the stored one in one transaction (there
 *         are no partial updates, XEP-0054 3.2); an empty <vCard/> deletes it;
 *         one larger than `max_size` bytes (serialized) is refused with
 *         not-acceptable (XEP-0054 names no condition; RFC 6120 8.3.3.12
 *         fits: the request does not meet the server's criteria);
 *   set to anyone else → forbidden (XEP-0054 3.2);
 *   get to the server's JID → the `vcard` option as a vCard, or an empty
 *       one; set there → forbidden.
 *
 * Storage: one row per (host, username) in the table `vcard`, the vCard
 * serialized as XML text (xd_el_serialize) and parsed back on a get
 * (xd_el_parse).  Account handlers run PARALLEL (blocking pool, synchronous
 * storage API); the server-vCard handler runs INLINE (no storage).
 *
 * Per-host state (max_size, the server vCard) lives in a small list guarded
 * by a mutex and is copied out (or referenced) by each request, so a request
 * still on the pool while its host's instance stops never reads freed state.
 *
 * Avatar hashes (XEP-0153): each stored vCard keeps the SHA-1 (hex) of its
 * PHOTO/BINVAL image in the column photo_hash ('' without a photo), and a
 * start loads the non-empty ones of its host into memory.  Every available
 * presence a client of the host sends (own or directed; the presence_edit
 * hook) then carries <x xmlns='vcard-temp:x:update'><photo>hash</photo></x>
 * (an empty <photo/> when the account has no photo), replacing the client's
 * own x element, as ejabberd's mod_vcard_xupdate does; a client's x without
 * a <photo/> child ("not ready", XEP-0153 4.2) is left alone.  A vCard set
 * updates the hash after its commit; contacts see it with the client's next
 * presence, which XEP-0153 clients send after publishing a new photo.
 * Rows stored before the column existed get their hash at the next start.
 *
 * With mod_pep on the host, the PHOTO and the XEP-0084 avatar follow each
 * other (XEP-0398; see the section below).
 *
 * The user directory (XEP-0055, option `search`): vcard_search.c.
 *
 * Not here: size limits per field.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "mod_util.h"
#include "pep_api.h"
#include "vcard_search.h"
#include "xmppd/alloc.h"
#include "xmppd/base64.h"
#include "xmppd/err.h"
#include <openssl/evp.h>

#include "xmppd/hooks.h"
#include "xmppd/log.h"
#include "xmppd/map.h"
#include "xmppd/module.h"
#include "xmppd/ns.h"
#include "xmppd/stanza.h"
#include "xmppd/storage.h"

/* ---- options ----------------------------------------------------------------------------------- */

typedef struct vc_conf {
    size_t max_size; /* largest serialized vCard accepted from an account, bytes */
    char *server;    /* the `vcard` option serialized as <vCard xmlns='vcard-temp'>, or NULL */
    vcs_conf_t s;    /* the user directory (vcard_search.c) */
} vc_conf_t;

/* An element name we accept from the configuration: an XML NCName in ASCII
 * (vCard element names are upper-case ASCII: FN, URL, ORG, ORGNAME, …). */
static bool
vc_name_ok(const char *s)
{
    if (!s || !((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_'))
        return false;
    for (const char *p = s + 1; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-' || *p == '.'))
            return false;
    return true;
}

static int vc_conf_fill(xd_opt_ctx_t *ctx, const xd_conf_node_t *map, xd_el_t *parent);

/* One value under `name`: a scalar is a text element, a mapping an element
 * with children, a sequence repeats the element once per item. */
static int
vc_conf_value(xd_opt_ctx_t *ctx, const char *name, const xd_conf_node_t *v, xd_el_t *parent)
{
    int rc = 0;
    switch (v->kind) {
    case XD_CONF_SCALAR: {
        xd_el_t *e = xd_el_add_child(parent, name, NULL);
        if (!xd_conf_is_null(v))
            xd_el_add_textn(e, v->value, v->len);
        break;
    }
    case XD_CONF_MAP:
        rc = vc_conf_fill(ctx, v, xd_el_add_child(parent, name, NULL));
        break;
    case XD_CONF_SEQ:
        for (size_t i = 0; i < v->count; i++) {
            xd_opt_push_index(ctx, i);
            if (v->items[i]->kind == XD_CONF_SEQ) {
                xd_opt_error(ctx, v->items[i], "a vCard field is a string or a mapping");
                rc = -1;
            } else if (vc_conf_value(ctx, name, v->items[i], parent) != 0) {
                rc = -1;
            }
            xd_opt_pop(ctx);
        }
        break;
    }
    return rc;
}

static int
vc_conf_fill(xd_opt_ctx_t *ctx, const xd_conf_node_t *map, xd_el_t *parent)
{
    int rc = 0;
    for (size_t i = 0; i < map->count; i++) {
        const char *name = map->keys[i]->value;
        xd_opt_push_key(ctx, name);
        if (!vc_name_ok(name)) {
            xd_opt_error(ctx, map->keys[i], "\"%s\" is not a vCard element name", name);
            rc = -1;
        } else if (vc_conf_value(ctx, name, map->items[i], parent) != 0) {
            rc = -1;
        }
        xd_opt_pop(ctx);
    }
    return rc;
}

/* CUSTOM parser of `vcard`: a mapping such as {FN: Example, URL: https://…,
 * ADR: {LOCALITY: Paris}} into its serialization (field: char *). */
static int
vc_conf_parse(xd_opt_ctx_t *ctx, const xd_conf_node_t *node, void *field)
{
    char **out = field;
    if (node->kind != XD_CONF_MAP) {
        xd_opt_error(ctx, node, "expected a mapping of vCard fields, got %s",
                     xd_conf_kind_name(node));
        return -1;
    }
    xd_el_t *v = xd_el_new("vCard", XD_NS_VCARD);
    if (vc_conf_fill(ctx, node, v) != 0) {
        xd_el_free(v);
        return -1;
    }
    *out = xd_el_serialize(v, NULL, NULL);
    xd_el_free(v);
    return 0;
}

static void
vc_conf_free(void *field)
{
    char **p = field;
    xd_free(*p);
    *p = NULL;
}

static const xd_opt_custom_t vc_conf_vcard = {
    .type_name = "vCard fields",
    .parse = vc_conf_parse,
    .free = vc_conf_free,
};

#define C_ vc_conf_t
static const xd_opt_t vc_opts[] = {
    XD_OPT_SIZE("max_size", C_, max_size, "64KiB",
                "Largest vCard an account may store, counted as its serialized XML in bytes; "
                "a larger one is refused with not-acceptable. The c2s listener's "
                "max_stanza_size (64 KiB by default) also bounds what can arrive."),
    XD_OPT_CUSTOM("vcard", C_, server, NULL, &vc_conf_vcard,
                  "The server's own vCard, answered to a vcard-temp get to the host's JID: "
                  "a mapping of vCard elements, for example `{FN: Example, URL: "
                  "\"https://example.org\"}`; a nested mapping is an element with children, "
                  "a list repeats the element. Unset: an empty vCard."),
    XD_OPT_BOOL("search", C_, s.search, "false",
                "The user directory (XEP-0055): a search service over the stored vCards."),
    XD_OPT_STRING("host", C_, s.host, "vjud.@HOST@",
                  "Domain of the user directory; `@HOST@` is replaced by the served host."),
    XD_OPT_STRING("name", C_, s.name, "vJUD User Search",
                  "Name of the user directory in its disco#info identity."),
    XD_OPT_STRING("search_access", C_, s.access, NULL,
                  "Access rule: who may search the directory (others get forbidden).  Unset: "
                  "the accounts of the served host."),
    XD_OPT_INT("matches", C_, s.matches, "30", 1, 10000, "Most results of one search."),
    XD_OPT_BOOL("allow_return_all", C_, s.allow_return_all, "false",
                "Whether a search with no field filled in lists every account with a vCard "
                "(up to `matches`); otherwise it is refused with not-acceptable."),
    XD_OPT_END,
};
#undef C_


/* ---- storage ----------------------------------------------------------------------------------- */

static const char *const vc_mig1[] = {
    "CREATE TABLE vcard ("
    " host {key} NOT NULL,"
    " username {key} NOT NULL,"
    " xml {text} NOT NULL,"
    " updated_at {int} NOT NULL,"
    " PRIMARY KEY (host, username))",
    NULL,
};

/* XEP-0153: the photo's hash, NULL until computed (rows from version 1). */
static const char *const vc_mig2[] = {
    "ALTER TABLE vcard ADD COLUMN photo_hash {text}",
    NULL,
};

static const xd_db_migration_t vc_migrations[] = {
    { 1, NULL, vc_mig1 },
    { 2, NULL, vc_mig2 },
    { 3, NULL, vcs_migration },
    { 0, NULL, NULL },
};

static const xd_module_schema_t vc_schemas[] = {
    { "mod_vcard", vc_migrations },
    { NULL, NULL },
};

/* One instance's state (xd_module_state). */
typedef struct vc_state {
    pthread_rwlock_t lock; /* guards hashes: read on every available presence */
    xd_map_t hashes;       /* username → hex hash (owned), only accounts with a photo */
    xd_stanza_t *server;   /* the server vCard (a frozen <vCard/>) or NULL */
    void *search;          /* the user directory's service (vcard_search.c) or NULL */
} vc_state_t;

/* A stored vCard read back: xml is owned (xd_free), NULL when none. */
typedef struct vc_row {
    char *xml;  /* the serialized vCard */
    size_t len; /* its length */
} vc_row_t;

static int
vc_load_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    vc_row_t *r = arg;
    if (ncols < 1 || cols[0].type != XD_DB_TEXT)
        return 0;
    xd_free(r->xml);
    r->xml = xd_strndup(cols[0].s.p, cols[0].s.len);
    r->len = cols[0].s.len;
    return 1;
}

/* The stored vCard of (host, user) into *out (out->xml NULL when none). */
static int
vc_load(xd_db_t *db, const char *host, const char *user, vc_row_t *out)
{
    xd_db_conn_t *c;
    if (!db)
        return XD_ECLOSED;
    int rc = xd_db_acquire(db, &c);
    if (rc != 0)
        return rc;
    xd_db_val_t key[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user) };
    rc = xd_db_query(c, "SELECT xml FROM vcard WHERE host = ? AND username = ?", key, 2,
                     vc_load_row, out);
    xd_db_release(c);
    return rc;
}

/* ---- avatar hashes (XEP-0153) ------------------------------------------------------------------ */

#define VC_HASH_LEN 40 /* SHA-1 in hex */

/* The hex SHA-1 of the image in the vCard's PHOTO/BINVAL (base64, line
 * breaks allowed) into out; "" when there is no such photo or it does not
 * decode. */
static void
vc_photo_info(const xd_el_t *card, char out[VC_HASH_LEN + 1], size_t *bytes)
{
    out[0] = '\0';
    if (bytes)
        *bytes = 0;
    const xd_el_t *photo = card ? xd_el_child(card, "PHOTO", XD_NS_VCARD) : NULL;
    const xd_el_t *bin = photo ? xd_el_child(photo, "BINVAL", XD_NS_VCARD) : NULL;
    size_t len = bin ? xd_el_text_len(bin) : 0;
    if (!len)
        return;
    size_t cap = xd_base64_decoded_max(len), n = 0;
    unsigned char *img = xd_malloc(cap + 1);
    bool ok = xd_base64_decode(xd_el_text(bin), len, img, cap, &n, XD_BASE64_WS) == 0 && n > 0;
    unsigned char dig[EVP_MAX_MD_SIZE];
    unsigned dlen = 0;
    if (ok && EVP_Digest(img, n, dig, &dlen, EVP_sha1(), NULL) == 1) {
        for (unsigned i = 0; i < dlen && 2 * i + 2 <= VC_HASH_LEN; i++)
            snprintf(out + 2 * i, 3, "%02x", dig[i]);
        if (bytes)
            *bytes = n;
    }
    xd_free(img);
}

static void
vc_photo_hash(const xd_el_t *card, char out[VC_HASH_LEN + 1])
{
    vc_photo_info(card, out, NULL);
}

/* The same for a serialized vCard. */
static void
vc_photo_hash_xml(const char *xml, size_t len, char out[VC_HASH_LEN + 1])
{
    xd_el_t *card = NULL;
    out[0] = '\0';
    if (xd_el_parse(xml, len, &card) == 0) {
        vc_photo_hash(card, out);
        xd_el_free(card);
    }
}

/* Records the account's hash ("" = no photo). */
static void
vc_hash_set(vc_state_t *st, const char *user, const char *hash)
{
    pthread_rwlock_wrlock(&st->lock);
    void *old = *hash ? xd_map_put(&st->hashes, xd_str_c(user), xd_strdup(hash))
                      : xd_map_del(&st->hashes, xd_str_c(user));
    pthread_rwlock_unlock(&st->lock);
    xd_free(old);
}

typedef struct vc_hash_fill {
    vc_state_t *st;    /* the instance being loaded */
    size_t n;          /* hashes loaded */
} vc_hash_fill_t;

static int
vc_hash_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    vc_hash_fill_t *f = arg;
    if (ncols < 2 || cols[0].type != XD_DB_TEXT || cols[1].type != XD_DB_TEXT ||
        cols[1].s.len != VC_HASH_LEN)
        return 0;
    char user[1024], hash[VC_HASH_LEN + 1];
    snprintf(user, sizeof user, "%.*s", (int)cols[0].s.len, cols[0].s.p);
    snprintf(hash, sizeof hash, "%.*s", (int)cols[1].s.len, cols[1].s.p);
    vc_hash_set(f->st, user, hash);
    f->n++;
    return 0;
}

/* Rows without a hash yet (stored before migration 2). */
typedef struct vc_unhashed {
    char **users, **xml; /* owned */
    size_t *len;
    size_t n, cap;
} vc_unhashed_t;

static int
vc_unhashed_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    vc_unhashed_t *u = arg;
    if (ncols < 2 || cols[0].type != XD_DB_TEXT || cols[1].type != XD_DB_TEXT)
        return 0;
    if (u->n == u->cap) {
        u->cap = u->cap ? u->cap * 2 : 16;
        u->users = xd_realloc(u->users, u->cap * sizeof *u->users);
        u->xml = xd_realloc(u->xml, u->cap * sizeof *u->xml);
        u->len = xd_realloc(u->len, u->cap * sizeof *u->len);
    }
    u->users[u->n] = xd_strndup(cols[0].s.p, cols[0].s.len);
    u->xml[u->n] = xd_strndup(cols[1].s.p, cols[1].s.len);
    u->len[u->n] = cols[1].s.len;
    u->n++;
    return 0;
}

/* Start: hashes the rows that have none, then loads the host's hashes. */
static int
vc_hash_load(xd_db_t *db, vc_state_t *st, const char *host, size_t *loaded)
{
    xd_db_conn_t *c;
    int rc = db ? xd_db_acquire(db, &c) : XD_ECLOSED;
    if (rc != 0)
        return rc;
    xd_db_val_t key[] = { XD_DB_V_CSTR(host) };
    vc_unhashed_t u = { 0 };
    rc = xd_db_query(c, "SELECT username, xml FROM vcard WHERE host = ? AND photo_hash IS NULL",
                     key, 1, vc_unhashed_row, &u);
    for (size_t i = 0; i < u.n; i++) {
        char hash[VC_HASH_LEN + 1];
        vc_photo_hash_xml(u.xml[i], u.len[i], hash);
        xd_db_val_t upd[] = { XD_DB_V_CSTR(hash), XD_DB_V_CSTR(host), XD_DB_V_CSTR(u.users[i]) };
        if (rc == 0)
            rc = xd_db_query(c, "UPDATE vcard SET photo_hash = ? WHERE host = ? AND username = ?",
                             upd, 3, NULL, NULL);
        xd_free(u.users[i]);
        xd_free(u.xml[i]);
    }
    xd_free(u.users);
    xd_free(u.xml);
    xd_free(u.len);
    vc_hash_fill_t f = { .st = st };
    if (rc == 0)
        rc = xd_db_query(c, "SELECT username, photo_hash FROM vcard"
                            " WHERE host = ? AND photo_hash <> ''",
                         key, 1, vc_hash_row, &f);
    xd_db_release(c);
    *loaded = f.n;
    return rc;
}

/* presence_edit: the account's photo hash into the presence. */
static int
vc_presence_edit(xd_module_ctx_t *ctx, xd_hook_presence_edit_t *ev, void *arg)
{
    (void)arg;
    vc_state_t *st = xd_module_state(ctx);
    xd_el_t *p = ev->presence;
    xd_el_t *x = xd_el_child_mut(p, "x", XD_NS_VCARD_UPDATE);
    if (x && !xd_el_child(x, "photo", XD_NS_VCARD_UPDATE))
        return XD_HOOK_OK; /* XEP-0153 4.2: the client is not ready to advertise */
    char hash[VC_HASH_LEN + 1] = "";
    pthread_rwlock_rdlock(&st->lock);
    const char *h = xd_map_get(&st->hashes, xd_jid_local(ev->jid));
    if (h)
        memcpy(hash, h, sizeof hash);
    pthread_rwlock_unlock(&st->lock);
    if (x)
        xd_el_remove_child(p, x);
    x = xd_el_add_child(p, "x", XD_NS_VCARD_UPDATE);
    xd_el_t *photo = xd_el_add_child(x, "photo", NULL);
    if (hash[0])
        xd_el_add_text(photo, hash);
    return XD_HOOK_OK;
}

/* user_removed: the account's hash goes with its vCard row. */
static int
vc_user_removed(xd_module_ctx_t *ctx, xd_hook_user_t *ev, void *arg)
{
    (void)arg;
    vc_hash_set(xd_module_state(ctx), ev->user, "");
    return XD_HOOK_OK;
}

typedef struct vc_store {
    const char *host; /* the account */
    const char *user;
    const char *xml;  /* the new vCard, or NULL to delete */
    size_t len;       /* its length */
    int64_t now;      /* seconds since the epoch */
    const char *hash; /* its photo's hash, "" without one */
} vc_store_t;

/* Delete and insert in one transaction: a reader sees the old vCard or the
 * new one, never none. */
static int
vc_store_tx(xd_db_conn_t *c, void *arg)
{
    const vc_store_t *s = arg;
    xd_db_val_t key[] = { XD_DB_V_CSTR(s->host), XD_DB_V_CSTR(s->user) };
    int rc = xd_db_query(c, "DELETE FROM vcard WHERE host = ? AND username = ?", key, 2, NULL,
                         NULL);
    if (rc == 0) /* the directory follows the vCard */
        rc = vcs_index_tx(c, s->host, s->user, s->xml, s->len);
    if (rc != 0 || !s->xml)
        return rc;
    xd_db_val_t row[] = {
        XD_DB_V_CSTR(s->host),
        XD_DB_V_CSTR(s->user),
        XD_DB_V_TEXT(((xd_str_t){ s->xml, s->len })),
        XD_DB_V_INT(s->now),
        XD_DB_V_CSTR(s->hash),
    };
    return xd_db_query(c,
                       "INSERT INTO vcard (host, username, xml, updated_at, photo_hash)"
                       " VALUES (?, ?, ?, ?, ?)",
                       row, 5, NULL, NULL);
}

/* ---- XEP-0398: the vCard's PHOTO and the XEP-0084 avatar in PEP ------------------------------ *
 *
 * With mod_pep on the host: a vCard set whose photo changed publishes it
 * as urn:xmpp:avatar:data (item id: the SHA-1) and urn:xmpp:avatar:metadata
 * (<info id bytes type/>), or an empty <metadata/> (avatar disabled, XEP-0084
 * 4.3) when the photo went; a metadata publish by a client puts the image
 * of its <info/> (from the data node) into the stored vCard's PHOTO (or
 * takes the PHOTO out for an empty one), and the XEP-0153 hash follows.
 * Both directions compare the SHA-1 first, so neither echoes the other. */

#define VC_NS_AV_DATA "urn:xmpp:avatar:data"
#define VC_NS_AV_META "urn:xmpp:avatar:metadata"

/* The account's XEP-0153 hash now ("" without a photo). */
static void
vc_hash_get(vc_state_t *st, const char *user, char out[VC_HASH_LEN + 1])
{
    out[0] = '\0';
    pthread_rwlock_rdlock(&st->lock);
    const char *h = xd_map_get(&st->hashes, xd_str_c(user));
    if (h)
        snprintf(out, VC_HASH_LEN + 1, "%s", h);
    pthread_rwlock_unlock(&st->lock);
}

/* The vCard's photo → the two avatar nodes (on the pool). */
static void
vc_avatar_to_pep(const char *host, const char *user, const xd_el_t *card, const char *hash,
                 size_t bytes)
{
    xd_module_ctx_t *pep = xd_module_instance("mod_pep", host);
    if (!pep)
        return;
    xd_input_ref_t in = xd_input_job(); /* the set's stream: it waits for the fan-out */
    pse_cfg_t want;
    pse_cfg_default(&want, false);
    int rc = 0;
    xd_el_t *meta = xd_el_new("metadata", VC_NS_AV_META);
    char id[21];
    if (*hash) {
        const xd_el_t *photo = xd_el_child(card, "PHOTO", XD_NS_VCARD);
        const char *type = xd_el_child_text(photo, "TYPE", XD_NS_VCARD);
        const xd_el_t *bin = xd_el_child(photo, "BINVAL", XD_NS_VCARD);
        const char *b64 = xd_el_text(bin);
        size_t blen = xd_el_text_len(bin), k = 0;
        char *clean = xd_malloc(blen + 1); /* base64 without the line breaks */
        for (size_t i = 0; i < blen; i++)
            if (!strchr(" \t\r\n", b64[i]))
                clean[k++] = b64[i];
        clean[k] = '\0';
        xd_el_t *data = xd_el_new("data", VC_NS_AV_DATA);
        xd_el_add_text(data, clean);
        xd_free(clean);
        rc = pep_publish_as(pep, in, host, user, VC_NS_AV_DATA, hash, data, &want);
        xd_el_free(data);
        xd_el_t *info = xd_el_add_child(meta, "info", NULL);
        char nb[32];
        snprintf(nb, sizeof nb, "%zu", bytes);
        xd_el_set_attr(info, "bytes", nb);
        xd_el_set_attr(info, "id", hash);
        xd_el_set_attr(info, "type", type && *type ? type : "image/png");
    } else if (mod_random_id(id) != 0) {
        rc = XD_EINTERNAL;
    }
    if (rc == 0)
        rc = pep_publish_as(pep, in, host, user, VC_NS_AV_META, *hash ? hash : id, meta, &want);
    if (rc != 0)
        XD_LOG(NULL, XD_WARN, "vCard avatar not published", "host=%s user=%s err=%s", host, user,
               xd_strerror(rc));
    xd_el_free(meta);
    xd_module_release(pep);
}

/* pep_watch_fn: a client's XEP-0084 metadata publish → the vCard (pool). */
static void
vc_pep_watch(xd_module_ctx_t *pep, const char *host, const char *user, const char *node,
             const char *id, const xd_el_t *payload)
{
    (void)id;
    if (strcmp(node, VC_NS_AV_META) != 0 || !xd_el_is(payload, "metadata", VC_NS_AV_META))
        return;
    xd_module_ctx_t *vc = xd_module_instance("mod_vcard", host);
    if (!vc)
        return;
    vc_state_t *st = xd_module_state(vc);
    const vc_conf_t *conf = xd_module_opts(vc);
    if (!st) {
        xd_module_release(vc);
        return;
    }
    xd_db_t *db = xd_module_db(vc);
    /* The <info/> of an image in the data node (one without url). */
    const xd_el_t *info = NULL;
    for (const xd_el_t *c = xd_el_first_child(payload); c && !info; c = xd_el_next(c))
        if (xd_el_is(c, "info", VC_NS_AV_META) && xd_el_attr(c, "id") &&
            !*(xd_el_attr(c, "url") ? xd_el_attr(c, "url") : ""))
            info = c;
    const char *want = info ? xd_el_attr(info, "id") : "";
    char old[VC_HASH_LEN + 1];
    vc_hash_get(st, user, old);
    xd_el_t *items = NULL, *card = NULL;
    const char *b64 = NULL;
    if (!strcmp(old, want) || (info && strlen(want) > VC_HASH_LEN))
        goto out;
    if (info) {
        int rc = pep_items_read(pep, host, user, VC_NS_AV_DATA, &items);
        for (const xd_el_t *it = rc == 0 ? xd_el_first_child(items) : NULL; it && !b64;
             it = xd_el_next(it)) {
            const char *iid = xd_el_attr(it, "id");
            const xd_el_t *d = xd_el_first_child(it);
            if (iid && !strcmp(iid, want) && xd_el_is(d, "data", VC_NS_AV_DATA))
                b64 = xd_el_text(d);
        }
        if (!b64) {
            XD_LOG(NULL, XD_DEBUG, "avatar data not found for the vCard", "host=%s user=%s id=%s",
                   host, user, want);
            goto out;
        }
    }
    vc_row_t row = { 0 };
    int rc = vc_load(db, host, user, &row);
    if (rc == 0 && row.xml && xd_el_parse(row.xml, row.len, &card) != 0)
        rc = XD_EINTERNAL;
    xd_free(row.xml);
    if (rc != 0) {
        XD_LOG(NULL, XD_WARN, "vCard not updated from the avatar", "host=%s user=%s err=%s", host,
               user, xd_strerror(rc));
        goto out;
    }
    if (!card)
        card = xd_el_new("vCard", XD_NS_VCARD);
    xd_el_t *ph = xd_el_child_mut(card, "PHOTO", XD_NS_VCARD);
    if (ph)
        xd_el_remove_child(card, ph);
    if (info) {
        ph = xd_el_add_child(card, "PHOTO", XD_NS_VCARD);
        const char *type = xd_el_attr(info, "type");
        xd_el_add_text(xd_el_add_child(ph, "TYPE", XD_NS_VCARD),
                       type && *type ? type : "image/png");
        xd_el_add_text(xd_el_add_child(ph, "BINVAL", XD_NS_VCARD), b64);
    }
    char hash[VC_HASH_LEN + 1];
    vc_photo_hash(card, hash);
    size_t len = 0;
    char *xml = xd_el_first_child(card) ? xd_el_serialize(card, NULL, &len) : NULL;
    if (len > conf->max_size) {
        XD_LOG(NULL, XD_INFO, "avatar too large for the vCard", "host=%s user=%s bytes=%zu", host,
               user, len);
    } else {
        vc_store_t s = { .host = host, .user = user, .xml = xml, .len = len,
                         .now = (int64_t)time(NULL), .hash = hash };
        rc = xd_db_tx(db, vc_store_tx, &s);
        if (rc < 0)
            XD_LOG(NULL, XD_WARN, "vCard not stored from the avatar", "host=%s user=%s err=%s",
                   host, user, xd_strerror(rc));
        else
            vc_hash_set(st, user, hash);
    }
    xd_free(xml);
out:
    xd_el_free(card);
    xd_el_free(items);
    xd_module_release(vc);
}

/* DISCO_SM_FEATURES: the conversion is there when mod_pep runs too. */
static int
vc_disco(xd_module_ctx_t *ctx, xd_hook_disco_t *ev, void *arg)
{
    (void)ctx;
    (void)arg;
    pep_disco_conversion(ev, "urn:xmpp:pep-vcard-conversion:0");
    return XD_HOOK_OK;
}

/* ---- handlers ---------------------------------------------------------------------------------- */

static bool
vc_is_get(const xd_iq_req_t *req)
{
    const char *type = xd_el_attr(xd_stanza_root(req->iq), "type");
    return type && strcmp(type, "get") == 0;
}

/* IQs to an account's bare JID (PARALLEL). */
static xd_stanza_t *
vc_user_iq(const xd_iq_req_t *req)
{
    if (!xd_el_is(req->payload, "vCard", XD_NS_VCARD))
        return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, "expected <vCard xmlns='vcard-temp'/>");
    const vc_conf_t *conf = xd_module_opts(req->ctx);
    size_t max_size = conf->max_size;
    xd_db_t *db = xd_module_db(req->ctx);
    bool own = xd_jid_eq_bare(req->from, req->to);
    xd_str_t l = xd_jid_local(req->to);
    char user[1024];
    snprintf(user, sizeof user, "%.*s", (int)l.len, l.p);

    if (vc_is_get(req)) {
        vc_row_t row = { 0 };
        int rc = vc_load(db, req->host, user, &row);
        xd_el_t *card = NULL;
        if (rc == 0 && row.xml && xd_el_parse(row.xml, row.len, &card) != 0) {
            XD_LOG(NULL, XD_ERROR, "stored vCard unreadable", "host=%s user=%s", req->host, user);
            rc = XD_EINTERNAL;
        }
        xd_free(row.xml);
        if (rc != 0) {
            XD_LOG(NULL, XD_ERROR, "vCard load failed", "host=%s user=%s err=%s", req->host,
                   user, xd_strerror(rc));
            return xd_stanza_error(req->iq, XD_COND_INTERNAL_SERVER_ERROR, NULL);
        }
        if (!card && !own) /* XEP-0054 3.3: same answer for no vCard and no account */
            return xd_stanza_error(req->iq, XD_COND_SERVICE_UNAVAILABLE, NULL);
        xd_el_t *r = xd_iq_result_builder(req->iq);
        if (card)
            xd_el_append(r, card);
        else
            xd_el_add_child(r, "vCard", XD_NS_VCARD); /* XEP-0054 3.1: empty vCard */
        return xd_el_freeze(r);
    }

    /* set */
    if (!own) /* XEP-0054 3.2 */
        return xd_stanza_error(req->iq, XD_COND_FORBIDDEN, "only your own vCard can be set");
    size_t len = 0;
    char *xml = NULL;
    if (xd_el_first_child(req->payload) || xd_el_text_len(req->payload) > 0) {
        xml = xd_el_serialize(req->payload, NULL, &len);
        if (len > max_size) {
            xd_free(xml);
            char text[96];
            snprintf(text, sizeof text, "the vCard is larger than %zu bytes", max_size);
            return xd_stanza_error(req->iq, XD_COND_NOT_ACCEPTABLE, text);
        }
    }
    char hash[VC_HASH_LEN + 1], old[VC_HASH_LEN + 1];
    size_t bytes = 0;
    vc_photo_info(xml ? req->payload : NULL, hash, &bytes);
    vc_hash_get(xd_module_state(req->ctx), user, old);
    vc_store_t s = { .host = req->host, .user = user, .xml = xml, .len = len,
                     .now = (int64_t)time(NULL), .hash = hash };
    int rc = db ? xd_db_tx(db, vc_store_tx, &s) : XD_ECLOSED;
    xd_free(xml);
    if (rc < 0) {
        XD_LOG(NULL, XD_ERROR, "vCard store failed", "host=%s user=%s err=%s", req->host, user,
               xd_strerror(rc));
        return xd_stanza_error(req->iq, XD_COND_INTERNAL_SERVER_ERROR, NULL);
    }
    vc_hash_set(xd_module_state(req->ctx), user, hash);
    if (strcmp(old, hash) != 0) /* XEP-0398 */
        vc_avatar_to_pep(req->host, user, req->payload, hash, bytes);
    return xd_iq_result(req->iq);
}

/* ---- XEP-0227 export and import (ACCOUNT_EXPORT, ACCOUNT_IMPORT) ---------------------------- */

static int
vc_pie_export(xd_module_ctx_t *ctx, xd_hook_account_export_t *ev, void *arg)
{
    (void)arg;
    vc_row_t row = { 0 };
    int rc = vc_load(xd_module_db(ctx), ev->host, ev->user, &row);
    xd_el_t *card = NULL;
    if (rc == 0 && row.xml && xd_el_parse(row.xml, row.len, &card) != 0)
        rc = XD_EINTERNAL;
    xd_free(row.xml);
    if (rc != 0) {
        ev->rc = rc;
        ev->module = "mod_vcard";
        return XD_HOOK_STOP;
    }
    if (card)
        xd_el_append(ev->user_el, card);
    return XD_HOOK_OK;
}

static int
vc_pie_import(xd_module_ctx_t *ctx, xd_hook_account_import_t *ev, void *arg)
{
    (void)arg;
    const vc_conf_t *conf = xd_module_opts(ctx);
    size_t i = 0;
    for (const xd_el_t *ch = xd_el_first_child(ev->user_el); ch; ch = xd_el_next(ch), i++) {
        if (!xd_el_is(ch, "vCard", XD_NS_VCARD))
            continue;
        ev->taken[i] = true;
        if (!xd_el_first_child(ch) && xd_el_text_len(ch) == 0)
            continue;
        size_t len = 0;
        char *xml = xd_el_serialize(ch, NULL, &len);
        int rc = 0;
        if (len > conf->max_size) {
            rc = XD_EINVAL;
            snprintf(ev->err, XD_HOOK_IMPORT_ERR_MAX, "vCard: larger than max_size (%zu bytes)",
                     conf->max_size);
        }
        char hash[VC_HASH_LEN + 1];
        vc_photo_hash(ch, hash);
        vc_store_t s = { .host = ev->host, .user = ev->user, .xml = xml, .len = len,
                         .now = (int64_t)time(NULL), .hash = hash };
        if (rc == 0 && (rc = xd_db_tx(xd_module_db(ctx), vc_store_tx, &s)) < 0)
            snprintf(ev->err, XD_HOOK_IMPORT_ERR_MAX, "vCard: %s", xd_strerror(rc));
        xd_free(xml);
        if (rc < 0 || rc == XD_EINVAL) {
            ev->rc = rc;
            return XD_HOOK_STOP;
        }
        vc_hash_set(xd_module_state(ctx), ev->user, hash);
    }
    return XD_HOOK_OK;
}

/* IQs to the host's JID (INLINE: no storage). */
static xd_stanza_t *
vc_host_iq(const xd_iq_req_t *req)
{
    if (!xd_el_is(req->payload, "vCard", XD_NS_VCARD))
        return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, "expected <vCard xmlns='vcard-temp'/>");
    if (!vc_is_get(req))
        return xd_stanza_error(req->iq, XD_COND_FORBIDDEN, "the server's vCard is configured");
    const vc_state_t *st = xd_module_state(req->ctx);
    xd_el_t *r = xd_iq_result_builder(req->iq);
    if (st->server) {
        xd_el_append(r, xd_stanza_edit(st->server));
    } else {
        xd_el_add_child(r, "vCard", XD_NS_VCARD);
    }
    return xd_el_freeze(r);
}

/* ---- module ------------------------------------------------------------------------------------ */

static void
vc_state_free(vc_state_t *st)
{
    xd_stanza_unref(st->server);
    vcs_free(st->search);
    xd_map_free(&st->hashes, xd_free);
    pthread_rwlock_destroy(&st->lock);
    xd_free(st);
}

static int
vc_start(xd_module_ctx_t *ctx)
{
    const vc_conf_t *conf = xd_module_opts(ctx);
    const char *host = xd_module_host(ctx);
    xd_db_t *db = xd_module_db(ctx);
    if (!db)
        return xd_module_fail(ctx, XD_ECLOSED, "no database");
    vc_state_t *st = xd_new(vc_state_t);
    pthread_rwlock_init(&st->lock, NULL);
    if (conf->server) {
        xd_el_t *el = NULL;
        int rc = xd_el_parse(conf->server, strlen(conf->server), &el);
        if (rc != 0) {
            vc_state_free(st);
            return xd_module_fail(ctx, rc, "vcard: %s", xd_strerror(rc));
        }
        st->server = xd_el_freeze(el);
    }
    size_t loaded = 0;
    int rc = vc_hash_load(db, st, host, &loaded);
    if (rc != 0) {
        vc_state_free(st);
        return xd_module_fail(ctx, rc, "cannot load the avatar hashes: %s", xd_strerror(rc));
    }
    xd_module_set_state(ctx, st); /* before any handler can run */
    rc = xd_module_iq(ctx, XD_IQ_USER, XD_NS_VCARD, XD_IQ_PARALLEL, vc_user_iq, NULL);
    if (rc == 0)
        rc = xd_module_iq(ctx, XD_IQ_HOST, XD_NS_VCARD, XD_IQ_INLINE, vc_host_iq, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_PRESENCE_EDIT, XD_HOOK_PRIO_DEFAULT, vc_presence_edit,
                            NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_REMOVE_USER, XD_HOOK_PRIO_DEFAULT, vc_user_removed,
                            NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_ACCOUNT_EXPORT, XD_HOOK_PRIO_DEFAULT, vc_pie_export, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_ACCOUNT_IMPORT, XD_HOOK_PRIO_DEFAULT, vc_pie_import, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_DISCO_SM_FEATURES, XD_HOOK_PRIO_DEFAULT, vc_disco, NULL);
    if (rc == 0)
        pep_watch_set(vc_pep_watch);
    if (rc == 0) /* the account's vCard goes with it */
        rc = mod_user_rows(ctx, "DELETE FROM vcard WHERE host = ? AND username = ?");
    if (rc == 0)
        rc = mod_user_rows(ctx, "DELETE FROM vcard_search WHERE host = ? AND username = ?");
    if (rc == 0 && conf->s.search) {
        size_t added = 0;
        rc = vcs_backfill(db, host, &added);
        if (rc != 0)
            return xd_module_fail(ctx, rc, "cannot fill the user directory: %s", xd_strerror(rc));
        if (added)
            XD_LOG(NULL, XD_INFO, "user directory filled", "host=%s added=%zu", host, added);
        rc = vcs_start(ctx, &conf->s, &st->search);
        if (rc != 0)
            return rc;
    }
    if (rc != 0) /* the state goes in vc_stop, once the handlers are gone */
        return xd_module_fail(ctx, rc, "cannot register the vcard-temp handlers: %s",
                              xd_strerror(rc));
    XD_LOG(NULL, XD_INFO, "avatar hashes loaded", "host=%s count=%zu", host, loaded);
    return 0;
}

static void
vc_stop(xd_module_ctx_t *ctx)
{
    vc_state_t *st = xd_module_state(ctx);
    if (st)
        vc_state_free(st);
    xd_module_set_state(ctx, NULL);
}

const xd_module_t xd_mod_vcard = {
    .abi = XD_MODULE_ABI,
    .name = "mod_vcard",
    .doc = "vcard-temp (XEP-0054): account vCards in storage, the server's vCard from options",
    .opts = vc_opts,
    .opts_size = sizeof(vc_conf_t),
    .schemas = vc_schemas,
    .start = vc_start,
    .stop = vc_stop,
};

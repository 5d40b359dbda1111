/*
 * mod_announce.c — announcements and the message of the day, as
 * ejabberd's module of that name: an administrator sends a message to a
 * special resource of the server's JID.
 *
 *   HOST/announce/online       → to every session of HOST now;
 *   HOST/announce/all          → to every account of HOST (to the bare
 *                                JID: online ones get it, offline ones
 *                                find it in offline storage), paced at
 *                                `all_per_second` accounts a second;
 *   HOST/announce/motd         → becomes the message of the day and goes
 *                                to every session now;
 *   HOST/announce/motd/update  → becomes the message of the day silently;
 *   HOST/announce/motd/delete  → no message of the day any more.
 *
 * The message of the day reaches each account once, at its first
 * available presence after it was set (accounts that got it are kept in
 * the database; setting a new one forgets them).  What is sent: the
 * <subject/> and <body/> of the administrator's message (its type, or
 * normal), from the server's JID.  Who may: the `access` rule (default
 * "admin"); others get forbidden.  Any other message to the server's
 * resources is left to the router (service-unavailable).
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "mod_util.h"
#include "xmppd/acl.h"
#include "xmppd/alloc.h"
#include "xmppd/auth.h"
#include "xmppd/cmd.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/log.h"
#include "xmppd/module.h"
#include "xmppd/opt.h"
#include "xmppd/owner.h"
#include "xmppd/route.h"
#include "xmppd/session.h"
#include "xmppd/stanza.h"
#include "xmppd/storage.h"

#define AN_FILTER_PRIO 10 /* before the other filters: these never reach a session */
#define AN_BODY_MAX (64u << 10)

typedef struct an_conf {
    char *access;
    int per_second;
} an_conf_t;

#define C_ an_conf_t
static const xd_opt_t an_opts[] = {
    XD_OPT_STRING("access", C_, access, "admin",
                  "Access rule: who may send announcements and set the message of the day."),
    XD_OPT_INT("all_per_second", C_, per_second, "1000", 1, 1000000,
               "Accounts an announcement to all gets sent to each second (offline storage "
               "takes them at its pace)."),
    XD_OPT_END,
};
#undef C_

static const char *const an_mig1[] = {
    "CREATE TABLE announce_motd (host {key} NOT NULL PRIMARY KEY, xml {text} NOT NULL,"
    " id {int} NOT NULL)",
    /* motd: the id of the message of the day the account has (a seen row
     * written late for an older one does not count for a newer one) */
    "CREATE TABLE announce_motd_seen (host {key} NOT NULL, username {key} NOT NULL,"
    " motd {int} NOT NULL, PRIMARY KEY (host, username))",
    NULL,
};
static const xd_db_migration_t an_migrations[] = { { 1, NULL, an_mig1 }, { 0, NULL, NULL } };
static const xd_module_schema_t an_schemas[] = { { "mod_announce", an_migrations },
                                                 { NULL, NULL } };

/* An announcement to all accounts being sent. */
typedef struct an_all {
    struct an_all *next;
    xd_stanza_t *st; /* the message (without to), readdressed to each */
    char **users;   /* localparts */
    size_t n, next_i;
} an_all_t;

typedef struct an_state {
    pthread_mutex_t mu;
    char *motd;      /* the message of the day (serialized, without to), or NULL */
    int64_t motd_id; /* its id: microseconds of when it was set */
    an_all_t *all;   /* announcements to all, oldest first (worker 0 sends) */
} an_state_t;

/* ---- the message ------------------------------------------------------------------------------ */

/* The announcement made from the administrator's message: its subject and
 * body, its type (or normal), from the host; serialized.  NULL when it has
 * neither. */
static char *
an_payload(const xd_stanza_t *st, const char *host)
{
    const xd_el_t *root = xd_stanza_root(st);
    const char *type = xd_el_attr(root, "type");
    if (!type || (strcmp(type, "chat") && strcmp(type, "headline")))
        type = "normal";
    xd_el_t *m = xd_el_new("message", NULL); /* the content namespace, as routed stanzas */
    xd_el_set_attr(m, "from", host);
    xd_el_set_attr(m, "type", type);
    bool any = false;
    for (const xd_el_t *c = xd_el_first_child(root); c; c = xd_el_next(c)) {
        const char *ns = xd_el_ns(c);
        if ((ns && strcmp(ns, "jabber:client"))
            || (strcmp(xd_el_name(c), "subject") && strcmp(xd_el_name(c), "body")))
            continue; /* the stanza's own subject and body only */
        xd_el_t *k = xd_el_add_child(m, xd_el_name(c), NULL);
        const char *lang = xd_el_attr_ns(c, "lang", "http://www.w3.org/XML/1998/namespace");
        if (lang)
            xd_el_set_attr_ns(k, "xml:lang", "http://www.w3.org/XML/1998/namespace", lang);
        xd_el_add_text(k, xd_el_text(c));
        any = true;
    }
    size_t len = 0;
    char *xml = any ? xd_el_serialize(m, "jabber:client", &len) : NULL;
    xd_el_free(m);
    if (xml && len > AN_BODY_MAX) {
        xd_free(xml);
        xml = NULL;
    }
    return xml;
}

/* A serialized announcement as a stanza to readdress, or NULL. */
static xd_stanza_t *
an_base(const char *xml)
{
    xd_el_t *m = NULL;
    return xd_el_parse(xml, strlen(xml), &m) == 0 ? xd_el_freeze(m) : NULL;
}

/* The announcement `base` (no 'to') to `to`: a copy that shares its
 * bytes (el.h), so one parse serves every recipient. */
static void
an_send_to(const xd_stanza_t *base, const char *to)
{
    if (base)
        xd_route_take(xd_stanza_readdress(base, to));
}

/* Sends the announcement `xml` to `to` (one recipient). */
static void
an_send(const char *xml, const char *to)
{
    xd_stanza_t *base = an_base(xml);
    an_send_to(base, to);
    xd_stanza_unref(base);
}

static void
an_send_session(void *arg, const xd_session_info_t *s)
{
    an_send_to(arg, xd_jid_full_str(s->jid).p);
}

/* ---- storage (pool) ---------------------------------------------------------------------------- */

typedef struct an_job {
    xd_module_ctx_t *ctx;
    char *host;
    char **seen;    /* motd: accounts that got it now (n_seen) */
    size_t n_seen;
    char *user;     /* motd_seen: the account */
    char *xml;      /* the motd to store, or NULL to delete */
    char *to;       /* motd_seen: the session to send it to */
    bool send;      /* motd_seen: it was new for the account */
    int64_t motd_id; /* the message of the day's id (both jobs) */
    an_all_t *all;  /* an announcement to all: its accounts */
    int status;
} an_job_t;

static void
an_job_free(an_job_t *j)
{
    for (size_t i = 0; i < j->n_seen; i++)
        xd_free(j->seen[i]);
    xd_free(j->seen);
    xd_free(j->host);
    xd_free(j->user);
    xd_free(j->xml);
    xd_free(j->to);
    xd_free(j);
}

static const char *const an_seen_cols[] = { "host", "username", "motd" };
static const xd_db_upsert_t an_seen_ins = { "announce_motd_seen", an_seen_cols, 3, 2,
                                            XD_DB_UPSERT_IGNORE };

/* (host, user) has the message of the day `id` (or a newer one): its row
 * is replaced unless it names a newer one.  *added: a row was written. */
static int
an_seen_put(xd_db_conn_t *c, const char *host, const char *user, int64_t id, bool *added)
{
    xd_db_val_t p[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user), XD_DB_V_INT(id) };
    int rc = xd_db_query(c, "DELETE FROM announce_motd_seen WHERE host = ? AND username = ?"
                            " AND motd < ?", p, 3, NULL, NULL);
    if (rc == 0)
        rc = xd_db_upsert(c, &an_seen_ins, p);
    if (added)
        *added = rc == 0 && xd_db_changes(c) > 0;
    return rc;
}

/* Stores the message of the day j->xml (NULL: none) with id j->motd_id.
 * Ids only grow: what an older set or a newer one left stays right when
 * two sets commit in the other order (the older changes nothing the newer
 * wrote), and seen rows of older messages go. */
static int
an_motd_tx(xd_db_conn_t *c, void *arg)
{
    an_job_t *j = arg;
    xd_db_val_t hi[] = { XD_DB_V_CSTR(j->host), XD_DB_V_INT(j->motd_id) };
    int rc = xd_db_query(c, "DELETE FROM announce_motd_seen WHERE host = ? AND motd < ?", hi, 2,
                         NULL, NULL);
    if (rc == 0)
        rc = xd_db_query(c, "DELETE FROM announce_motd WHERE host = ? AND id < ?", hi, 2, NULL,
                         NULL);
    int64_t newer = 0;
    if (rc == 0 && j->xml)
        rc = xd_db_query_int64(c, "SELECT COUNT(*) FROM announce_motd WHERE host = ?", hi, 1,
                               &newer);
    if (rc == 0 && j->xml && newer == 0) {
        xd_db_val_t p[] = { XD_DB_V_CSTR(j->host), XD_DB_V_CSTR(j->xml), XD_DB_V_INT(j->motd_id) };
        rc = xd_db_query(c, "INSERT INTO announce_motd (host, xml, id) VALUES (?, ?, ?)", p, 3,
                         NULL, NULL);
    }
    /* Those it was sent to now have it (not again at their next login). */
    for (size_t i = 0; rc == 0 && i < j->n_seen; i++)
        rc = an_seen_put(c, j->host, j->seen[i], j->motd_id, NULL);
    return rc;
}

static void
an_motd_store(xd_module_ctx_t *ctx, void *arg)
{
    an_job_t *j = arg;
    xd_db_t *db = xd_module_db(ctx);
    j->status = db ? xd_db_tx(db, an_motd_tx, j) : XD_ECLOSED;
}

static void
an_motd_stored(xd_module_ctx_t *ctx, void *arg, int status)
{
    (void)ctx;
    an_job_t *j = arg;
    if (status || j->status)
        XD_LOG(NULL, XD_ERROR, "motd not stored", "host=%s err=%s", j->host,
               xd_strerror(status ? status : j->status));
    an_job_free(j);
}

/* A login: the account gets message of the day j->motd_id unless it has
 * it or a newer one. */
static int
an_seen_tx(xd_db_conn_t *c, void *arg)
{
    an_job_t *j = arg;
    xd_db_val_t p[] = { XD_DB_V_CSTR(j->host), XD_DB_V_CSTR(j->user), XD_DB_V_INT(j->motd_id) };
    int64_t n = 0;
    int rc = xd_db_query_int64(c,
                               "SELECT COUNT(*) FROM announce_motd_seen"
                               " WHERE host = ? AND username = ? AND motd >= ?",
                               p, 3, &n);
    if (rc == 0 && n == 0)
        rc = an_seen_put(c, j->host, j->user, j->motd_id, &j->send);
    return rc;
}

static void
an_seen_work(xd_module_ctx_t *ctx, void *arg)
{
    an_job_t *j = arg;
    xd_db_t *db = xd_module_db(ctx);
    j->status = db ? xd_db_tx(db, an_seen_tx, j) : XD_ECLOSED;
}

static void
an_seen_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    an_job_t *j = arg;
    an_state_t *s = xd_module_state(ctx);
    pthread_mutex_lock(&s->mu);
    bool current = s->motd_id == j->motd_id; /* not replaced meanwhile */
    pthread_mutex_unlock(&s->mu);
    if (!status && !j->status && j->send && current)
        an_send(j->xml, j->to);
    an_job_free(j);
}

static int
an_user_row(void *arg, xd_str_t user)
{
    an_all_t *a = arg;
    if (a->n % 256 == 0)
        a->users = xd_realloc(a->users, (a->n + 256) * sizeof *a->users);
    a->users[a->n++] = xd_strndup(user.p, user.len);
    return 0;
}

static void
an_all_free(an_all_t *a)
{
    for (size_t i = 0; i < a->n; i++)
        xd_free(a->users[i]);
    xd_free(a->users);
    xd_stanza_unref(a->st);
    xd_free(a);
}

static void
an_all_list(xd_module_ctx_t *ctx, void *arg)
{
    (void)ctx;
    an_job_t *j = arg;
    j->status = xd_auth_list_users_sync(j->host, an_user_row, j->all);
}

static void
an_all_listed(xd_module_ctx_t *ctx, void *arg, int status)
{
    an_job_t *j = arg;
    an_state_t *s = xd_module_state(ctx);
    if (status || j->status) {
        XD_LOG(NULL, XD_ERROR, "announcement to all not sent", "host=%s err=%s", j->host,
               xd_strerror(status ? status : j->status));
        an_all_free(j->all);
    } else {
        XD_LOG(NULL, XD_INFO, "announcement to all", "host=%s accounts=%zu", j->host, j->all->n);
        pthread_mutex_lock(&s->mu);
        an_all_t **p = &s->all;
        while (*p)
            p = &(*p)->next;
        *p = j->all;
        pthread_mutex_unlock(&s->mu);
    }
    an_job_free(j);
}

/* TICK on worker 0: the next accounts of the announcements to all. */
static int
an_tick(xd_module_ctx_t *ctx, xd_hook_tick_t *ev, void *arg)
{
    (void)arg;
    if (ev->worker != 0)
        return XD_HOOK_OK;
    an_state_t *s = xd_module_state(ctx);
    const an_conf_t *c = xd_module_opts(ctx);
    const char *host = xd_module_host(ctx);
    size_t budget = (size_t)c->per_second;
    while (budget) {
        pthread_mutex_lock(&s->mu);
        an_all_t *a = s->all;
        pthread_mutex_unlock(&s->mu);
        if (!a)
            break;
        for (; budget && a->next_i < a->n; budget--, a->next_i++) {
            char to[3 * 1024 + 2];
            snprintf(to, sizeof to, "%s@%s", a->users[a->next_i], host);
            an_send_to(a->st, to);
        }
        if (a->next_i < a->n)
            break;
        pthread_mutex_lock(&s->mu);
        s->all = a->next;
        pthread_mutex_unlock(&s->mu);
        an_all_free(a);
    }
    return XD_HOOK_OK;
}

/* ---- the requests ------------------------------------------------------------------------------- */

/* xd_session_foreach: the message of the day to a session, its account
 * noted as having it. */
typedef struct an_motd_send {
    const xd_stanza_t *base;
    an_job_t *j;
} an_motd_send_t;

static void
an_motd_session(void *arg, const xd_session_info_t *s)
{
    an_motd_send_t *m = arg;
    an_send_to(m->base, xd_jid_full_str(s->jid).p);
    xd_str_t u = xd_jid_local(s->jid);
    for (size_t i = 0; i < m->j->n_seen; i++)
        if (xd_str_eq_c(u, m->j->seen[i]))
            return;
    if (m->j->n_seen % 64 == 0)
        m->j->seen = xd_realloc(m->j->seen, (m->j->n_seen + 64) * sizeof *m->j->seen);
    m->j->seen[m->j->n_seen++] = xd_strndup(u.p, u.len);
}

/* Sets the message of the day (xml NULL: none); send: to every session now. */
static void
an_motd_set(xd_module_ctx_t *ctx, const char *host, const char *xml, bool send)
{
    an_state_t *s = xd_module_state(ctx);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t id = (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
    pthread_mutex_lock(&s->mu);
    xd_free(s->motd);
    s->motd = xml ? xd_strdup(xml) : NULL;
    if (id <= s->motd_id)
        id = s->motd_id + 1; /* strictly newer than the one it replaces */
    s->motd_id = id;
    pthread_mutex_unlock(&s->mu);
    an_job_t *j = xd_new(an_job_t);
    j->motd_id = id;
    j->host = xd_strdup(host);
    j->xml = xml ? xd_strdup(xml) : NULL;
    if (send && xml) {
        an_motd_send_t m = { .base = an_base(xml), .j = j };
        xd_session_foreach(host, an_motd_session, &m);
        xd_stanza_unref((xd_stanza_t *)m.base);
    }
    if (xd_module_submit(ctx, an_motd_store, an_motd_stored, j) != 0) {
        XD_LOG(NULL, XD_ERROR, "motd not stored", "host=%s err=%s", host, "pool full");
        an_job_free(j);
    }
}

/* What an announcement does: the resource after "announce/", or the
 * command's name. */
enum { AN_ONLINE, AN_ALL, AN_MOTD, AN_UPDATE, AN_DELETE, AN_NONE };
static const char *const an_kinds[] = { "online", "all", "motd", "motd/update", "motd/delete" };

static int
an_kind(const char *what, size_t len)
{
    for (int k = 0; k < AN_NONE; k++)
        if (strlen(an_kinds[k]) == len && !memcmp(an_kinds[k], what, len))
            return k;
    return AN_NONE;
}

/* Carries out announcement `kind` of `xml` (taken; NULL for AN_DELETE) on
 * ctx's host.  0, or XD_EFULL when the pool cannot list the accounts. */
static int
an_perform(xd_module_ctx_t *ctx, int kind, char *xml)
{
    const char *host = xd_module_host(ctx);
    if (kind == AN_MOTD || kind == AN_UPDATE || kind == AN_DELETE)
        an_motd_set(ctx, host, xml, kind == AN_MOTD);
    if (kind == AN_ONLINE) {
        xd_stanza_t *base = an_base(xml);
        xd_session_foreach(host, an_send_session, base);
        xd_stanza_unref(base);
    }
    if (kind == AN_ALL) {
        an_job_t *j = xd_new(an_job_t);
        j->host = xd_strdup(host);
        j->all = xd_new(an_all_t);
        j->all->st = an_base(xml);
        xd_free(xml);
        if (xd_module_submit(ctx, an_all_list, an_all_listed, j) != 0) {
            an_all_free(j->all);
            an_job_free(j);
            return XD_EFULL;
        }
        return 0;
    }
    xd_free(xml);
    return 0;
}

/* FILTER_PACKET: a message to HOST/announce/… is taken here. */
static int
an_filter(xd_module_ctx_t *ctx, xd_hook_filter_t *ev, void *arg)
{
    (void)arg;
    const xd_jid_t *to = ev->to;
    xd_str_t res = xd_jid_resource(to);
    if (xd_jid_local(to).len || res.len < 9 || memcmp(res.p, "announce/", 9) != 0
        || !xd_str_eq_c(xd_jid_domain(to), xd_module_host(ctx)))
        return XD_HOOK_OK; /* also run for stanzas from this host to others */
    const xd_el_t *root = xd_stanza_root(ev->st);
    const char *type = xd_el_attr(root, "type");
    if (xd_stanza_kind_of(root) != XD_STANZA_MESSAGE || (type && !strcmp(type, "error")))
        return XD_HOOK_OK;
    int kind = an_kind(res.p + 9, res.len - 9);
    if (kind == AN_NONE)
        return XD_HOOK_OK; /* service-unavailable from the router */
    const char *host = xd_module_host(ctx);
    xd_stanza_t *st = ev->st;
    ev->st = NULL; /* taken */
    const an_conf_t *c = xd_module_opts(ctx);
    const xd_jid_t *from = xd_stanza_from(st);
    if (!from || !xd_access_allowed(host, c->access, from)) {
        xd_route_error(st, XD_COND_FORBIDDEN, "you may not send announcements");
        xd_stanza_unref(st);
        return XD_HOOK_STOP;
    }
    char *xml = kind == AN_DELETE ? NULL : an_payload(st, host);
    if (kind != AN_DELETE && !xml) {
        xd_route_error(st, XD_COND_BAD_REQUEST, "an announcement has a subject or a body");
        xd_stanza_unref(st);
        return XD_HOOK_STOP;
    }
    xd_str_t by = xd_jid_bare_str(from);
    XD_LOG(NULL, XD_INFO, "announce", "host=%s what=%s by=%.*s", host, an_kinds[kind],
           (int)by.len, by.p);
    if (an_perform(ctx, kind, xml) != 0)
        xd_route_error(st, XD_COND_RESOURCE_CONSTRAINT, NULL);
    xd_stanza_unref(st);
    return XD_HOOK_STOP;
}

/* ---- commands (xmppctl, ad-hoc) ------------------------------------------------------------ */

static const xd_cmd_arg_t an_text_args[] = {
    { "host", XD_CMD_HOST, "the virtual host" },
    { "body", XD_CMD_STRING, "the text of the announcement" },
    { "subject", XD_CMD_STRING, "its subject line" },
};

static int an_cmd(xd_cmd_call_t *call);

static const xd_cmd_t an_cmds[] = {
    { .name = "announce_online", .doc = "send an announcement to every session of a host",
      .args = an_text_args, .nargs = 3, .nopt = 1, .result = XD_CMD_RES_NONE, .fn = an_cmd },
    { .name = "announce_all",
      .doc = "send an announcement to every account of a host (offline ones at their next login)",
      .args = an_text_args, .nargs = 3, .nopt = 1, .result = XD_CMD_RES_NONE, .fn = an_cmd },
    { .name = "set_motd",
      .doc = "set a host's message of the day and send it to every session now",
      .args = an_text_args, .nargs = 3, .nopt = 1, .result = XD_CMD_RES_NONE, .fn = an_cmd },
    { .name = "update_motd",
      .doc = "set a host's message of the day without sending it now",
      .args = an_text_args, .nargs = 3, .nopt = 1, .result = XD_CMD_RES_NONE, .fn = an_cmd },
    { .name = "delete_motd", .doc = "remove a host's message of the day",
      .args = an_text_args, .nargs = 1, .result = XD_CMD_RES_NONE, .fn = an_cmd },
};
#define AN_NCMDS (sizeof an_cmds / sizeof an_cmds[0])

static int
an_cmd(xd_cmd_call_t *call)
{
    int kind = (int)(call->cmd - an_cmds); /* the table is in AN_* order */
    const char *host = call->args[0].text;
    xd_module_ctx_t *ctx = xd_module_cmd_instance(call, "mod_announce", host);
    if (!ctx)
        return XD_ENOTFOUND;
    char *xml = NULL;
    if (kind != AN_DELETE) {
        const char *body = call->args[1].text, *subject = call->args[2].text;
        xd_el_t *m = xd_el_new("message", NULL);
        xd_el_set_attr(m, "from", host);
        xd_el_set_attr(m, "type", "normal");
        if (subject && *subject)
            xd_el_add_text(xd_el_add_child(m, "subject", NULL), subject);
        xd_el_add_text(xd_el_add_child(m, "body", NULL), body);
        size_t len = 0;
        xml = xd_el_serialize(m, "jabber:client", &len);
        xd_el_free(m);
        if (len > AN_BODY_MAX) {
            xd_free(xml);
            xd_module_release(ctx);
            return xd_cmd_errorf(call, XD_EINVAL, "the announcement is longer than %u bytes",
                                 AN_BODY_MAX);
        }
    }
    XD_LOG(NULL, XD_INFO, "announce", "host=%s what=%s by=%s", host, an_kinds[kind],
           call->origin ? call->origin : "command");
    int rc = an_perform(ctx, kind, xml);
    xd_module_release(ctx);
    if (rc != 0)
        return xd_cmd_errorf(call, rc, "the server is busy; try again");
    xd_cmd_printf(call, "%s: done\n", call->cmd->name);
    return 0;
}

/* USER_AVAILABLE: the message of the day, once per account. */
static int
an_available(xd_module_ctx_t *ctx, xd_hook_presence_t *ev, void *arg)
{
    (void)arg;
    if (!ev->initial)
        return XD_HOOK_OK;
    an_state_t *s = xd_module_state(ctx);
    pthread_mutex_lock(&s->mu);
    char *xml = s->motd ? xd_strdup(s->motd) : NULL;
    int64_t id = s->motd_id;
    pthread_mutex_unlock(&s->mu);
    if (!xml)
        return XD_HOOK_OK;
    an_job_t *j = xd_new(an_job_t);
    j->motd_id = id;
    j->host = xd_strdup(ev->host);
    xd_str_t u = xd_jid_local(ev->jid), full = xd_jid_full_str(ev->jid);
    j->user = xd_strndup(u.p, u.len);
    j->to = xd_strndup(full.p, full.len);
    j->xml = xml;
    if (xd_module_submit(ctx, an_seen_work, an_seen_done, j) != 0)
        an_job_free(j); /* next time */
    return XD_HOOK_OK;
}

/* ---- module ----------------------------------------------------------------------------------- */

static int
an_motd_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    an_state_t *s = arg;
    if (ncols == 2 && cols[0].type == XD_DB_TEXT && cols[1].type == XD_DB_INT64 && !s->motd) {
        s->motd = xd_strndup(cols[0].s.p, cols[0].s.len);
        s->motd_id = cols[1].i;
    }
    return 0;
}

static void
an_stop(xd_module_ctx_t *ctx)
{
    an_state_t *s = xd_module_state(ctx);
    if (!s)
        return;
    while (s->all) {
        an_all_t *a = s->all;
        s->all = a->next;
        if (a->next_i < a->n)
            XD_LOG(NULL, XD_WARN, "announcement to all cut short by the stop", "host=%s sent=%zu of=%zu",
                   xd_module_host(ctx), a->next_i, a->n);
        an_all_free(a);
    }
    xd_free(s->motd);
    pthread_mutex_destroy(&s->mu);
    xd_free(s);
    xd_module_set_state(ctx, NULL);
}

static int
an_start(xd_module_ctx_t *ctx)
{
    an_state_t *s = xd_new(an_state_t);
    pthread_mutex_init(&s->mu, NULL);
    xd_module_set_state(ctx, s);
    xd_db_t *db = xd_module_db(ctx);
    xd_db_conn_t *c = NULL;
    if (db && xd_db_acquire(db, &c) == 0) {
        xd_db_val_t h[] = { XD_DB_V_CSTR(xd_module_host(ctx)) };
        int rc = xd_db_query(c, "SELECT xml, id FROM announce_motd WHERE host = ?", h, 1,
                             an_motd_row, s);
        xd_db_release(c);
        if (rc != 0)
            return xd_module_fail(ctx, rc, "cannot read the message of the day: %s",
                                  xd_strerror(rc));
    }
    int rc = xd_module_hook(ctx, XD_HOOK_FILTER_PACKET, AN_FILTER_PRIO, an_filter, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_USER_AVAILABLE, XD_HOOK_PRIO_DEFAULT, an_available, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_TICK, XD_HOOK_PRIO_DEFAULT, an_tick, NULL);
    if (rc == 0) /* the account's "seen" row goes with it (on the pool) */
        rc = mod_user_rows(ctx, "DELETE FROM announce_motd_seen WHERE host = ? AND username = ?");
    for (size_t i = 0; rc == 0 && i < AN_NCMDS; i++)
        rc = xd_module_command(ctx, &an_cmds[i]);
    return rc ? xd_module_fail(ctx, rc, "cannot register: %s", xd_strerror(rc)) : 0;
}

const xd_module_t xd_mod_announce = {
    .abi = XD_MODULE_ABI,
    .name = "mod_announce",
    .doc = "Announcements to online or all accounts and the message of the day, sent to the "
           "server's announce/ resources",
    .opts = an_opts,
    .opts_size = sizeof(an_conf_t),
    .schemas = an_schemas,
    .start = an_start,
    .stop = an_stop,
};

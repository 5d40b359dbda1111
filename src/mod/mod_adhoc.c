/*
 * mod_adhoc.c — ad-hoc commands (XEP-0050) on the server's JID: every
 * command of the command registry (cmd.h, what xmppctl runs) offered to
 * the accounts its access rule allows, with a data form (XEP-0004) for
 * its arguments.  Administrators run them from their client (Gajim, Psi,
 * Converse.js: "Execute command" on the server).
 *
 *   disco#items node='http://jabber.org/protocol/commands'
 *                           → one item per command the requester may run,
 *                             node "api-commands/NAME" (ejabberd's names);
 *   disco#info of a node    → identity automation/command-node;
 *   <command node action='execute'/>
 *                           → the form of its arguments (status executing,
 *                             a session id), or the result at once for a
 *                             command without arguments;
 *   <command node sessionid action='complete'><x type='submit'/></command>
 *                           → the command runs; status completed with the
 *                             result as a note (text, number, yes/no) or a
 *                             result form (a list);  a form sent with the
 *                             first execute runs at once too;
 *   action='cancel'         → status canceled.
 *
 * Who may run a command: its `access` rule (cmd.h; none given: "admin"),
 * evaluated for the requester on every host the command's arguments name
 * (a host, a JID's served domain) and on the addressed host; a command
 * naming no host is a server-wide one and its rule is taken at the top
 * level (so a host_config administrator cannot stop the server).  Errors:
 * item-not-found (no such command, or one the requester may not run, so
 * that nothing is revealed), bad-request with <bad-sessionid/>,
 * <bad-action/> or <bad-payload/> (XEP-0050 6), bad-request with the
 * command's usage message, resource-constraint when the main loop's queue
 * is full; a command that fails completes with a note of type error.
 *
 * Sessions: at most `max_sessions` per host (the oldest goes), each valid
 * for `session_timeout`, bound to the requester's full JID.
 *
 * Threads: the IQ is INLINE (parsing, access); the command runs as
 * xmppctl runs it (xd_cmd_run_async: the main loop or its thread pool),
 * outside this module's instance, with the stream held until it answered.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "mod_util.h"
#include "xmppd/acl.h"
#include "xmppd/alloc.h"
#include "xmppd/cmd.h"
#include "xmppd/config.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/input.h"
#include "xmppd/module.h"
#include "xmppd/ns.h"
#include "xmppd/opt.h"
#include "xmppd/route.h"
#include "xmppd/stanza.h"

#define AH_NS "http://jabber.org/protocol/commands"
#define AH_PREFIX "api-commands/"
#define AH_ID_LEN 20

typedef struct ah_conf {
    int max_sessions;
    uint64_t session_ms;
} ah_conf_t;

#define C_ ah_conf_t
static const xd_opt_t ah_opts[] = {
    XD_OPT_INT("max_sessions", C_, max_sessions, "256", 1, 100000,
               "Commands waiting for their form per host; past it the oldest is dropped."),
    XD_OPT_DURATION("session_timeout", C_, session_ms, "10m",
                    "How long a command's form may take to come back."),
    XD_OPT_END,
};
#undef C_

typedef struct ah_session {
    char id[AH_ID_LEN + 1];
    char *node;
    char *who;        /* the requester's full JID */
    uint64_t expires; /* ms, CLOCK_MONOTONIC */
} ah_session_t;

typedef struct ah_state {
    pthread_mutex_t mu;
    ah_session_t *s; /* max_sessions slots; id[0] == 0: free */
    size_t cap;
    uint64_t seq;
} ah_state_t;

static uint64_t
ah_now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

static void
ah_slot_clear(ah_session_t *x)
{
    xd_free(x->node);
    xd_free(x->who);
    *x = (ah_session_t){ 0 };
}

/* A new session for (node, who); its id into id. */
static void
ah_session_new(xd_module_ctx_t *ctx, const char *node, const char *who, char id[AH_ID_LEN + 1])
{
    ah_state_t *st = xd_module_state(ctx);
    const ah_conf_t *c = xd_module_opts(ctx);
    uint64_t now = ah_now_ms();
    pthread_mutex_lock(&st->mu);
    ah_session_t *slot = NULL;
    for (size_t i = 0; i < st->cap; i++) {
        ah_session_t *x = &st->s[i];
        if (x->id[0] && x->expires <= now)
            ah_slot_clear(x);
        if (!x->id[0]) {
            if (!slot || slot->id[0])
                slot = x; /* a free one wins */
        } else if (!slot || (slot->id[0] && x->expires < slot->expires)) {
            slot = x; /* none free so far: the oldest */
        }
    }
    ah_slot_clear(slot);
    if (mod_random_id(slot->id) != 0) /* never in practice; still unique enough */
        snprintf(slot->id, sizeof slot->id, "s%llx", (unsigned long long)++st->seq);
    slot->node = xd_strdup(node);
    slot->who = xd_strdup(who);
    slot->expires = now + c->session_ms;
    memcpy(id, slot->id, sizeof slot->id);
    pthread_mutex_unlock(&st->mu);
}

enum { AH_NO_SESSION, AH_SESSION, AH_EXPIRED };

/* Takes session id of (node, who) out: AH_SESSION, AH_EXPIRED (it was
 * there, too old) or AH_NO_SESSION. */
static int
ah_session_take(xd_module_ctx_t *ctx, const char *id, const char *node, const char *who)
{
    ah_state_t *st = xd_module_state(ctx);
    uint64_t now = ah_now_ms();
    int found = AH_NO_SESSION;
    pthread_mutex_lock(&st->mu);
    for (size_t i = 0; i < st->cap && found == AH_NO_SESSION; i++) {
        ah_session_t *x = &st->s[i];
        if (!x->id[0] || strcmp(x->id, id) || strcmp(x->node, node) || strcmp(x->who, who))
            continue;
        found = x->expires > now ? AH_SESSION : AH_EXPIRED;
        ah_slot_clear(x);
    }
    pthread_mutex_unlock(&st->mu);
    return found;
}

/* ---- XEP-0133 service administration --------------------------------------------------------
 *
 * The standard nodes of the commands that have a registry command behind
 * them: their own form fields (XEP-0133's vars), translated into the
 * registry command's arguments (accountjid → user and host, the
 * announcement's lines → body, the addressed host for a host argument),
 * run and answered as the registry command is; a count is answered as the
 * XEP's result field. */

#define AH_ADMIN "http://jabber.org/protocol/admin#"
#define AH_ADMIN_FORM "http://jabber.org/protocol/admin"

typedef struct ah_field {
    const char *var, *type, *label;
    bool required;
} ah_field_t;

typedef struct ah_std {
    const char *op;      /* node after AH_ADMIN */
    const char *name;    /* the item's name */
    const char *cmd;     /* the registry command */
    ah_field_t f[3];     /* the form (var NULL: no more) */
    const char *count;   /* answer: the number of the result's items in this field */
} ah_std_t;

#define AH_SUBJECT { "subject", "text-single", "Subject", false }
#define AH_TEXT { "announcement", "text-multi", "Announcement", true }

static const ah_std_t ah_stds[] = {
    { "add-user", "Add a User", "register",
      { { "accountjid", "jid-single", "The Jabber ID for the account to be added", true },
        { "password", "text-private", "The password for this account", true },
        { "password-verify", "text-private", "Retype password", true } }, NULL },
    { "change-user-password", "Change User Password", "change_password",
      { { "accountjid", "jid-single", "The Jabber ID for this account", true },
        { "password", "text-private", "The new password for this account", true } }, NULL },
    { "get-registered-users-num", "Get Number of Registered Users", "registered_users", { { 0 } },
      "registeredusersnum" },
    { "get-online-users-num", "Get Number of Online Users", "connected_users", { { 0 } },
      "onlineusersnum" },
    { "announce", "Send Announcement to Online Users", "announce_online", { AH_SUBJECT, AH_TEXT },
      NULL },
    { "set-motd", "Set Message of the Day", "set_motd", { AH_SUBJECT, AH_TEXT }, NULL },
    { "edit-motd", "Edit Message of the Day", "update_motd", { AH_SUBJECT, AH_TEXT }, NULL },
    { "delete-motd", "Delete Message of the Day", "delete_motd", { { 0 } }, NULL },
};
#define AH_NSTD (sizeof ah_stds / sizeof ah_stds[0])

/* The standard command of node, or NULL. */
static const ah_std_t *
ah_std_of(const char *node)
{
    if (!node || strncmp(node, AH_ADMIN, strlen(AH_ADMIN)) != 0)
        return NULL;
    for (size_t i = 0; i < AH_NSTD; i++)
        if (!strcmp(node + strlen(AH_ADMIN), ah_stds[i].op))
            return &ah_stds[i];
    return NULL;
}

/* ---- discovery ------------------------------------------------------------------------------- */

typedef struct ah_list {
    xd_hook_disco_t *ev;
    xd_config_t *cfg;
} ah_list_t;

static int
ah_item(void *arg, const xd_cmd_t *cmd)
{
    ah_list_t *l = arg;
    if (!xd_cmd_allowed(l->cfg, l->ev->host, cmd, NULL, l->ev->from))
        return 0;
    char node[256];
    snprintf(node, sizeof node, AH_PREFIX "%s", cmd->name);
    xd_el_t *it = xd_el_add_child(l->ev->query, "item", NULL);
    xd_el_set_attr(it, "jid", l->ev->host);
    xd_el_set_attr(it, "node", node);
    xd_el_set_attr(it, "name", cmd->doc ? cmd->doc : cmd->name);
    return 0;
}

/* DISCO_LOCAL_ITEMS of the commands node. */
static int
ah_disco_items(xd_module_ctx_t *ctx, xd_hook_disco_t *ev, void *arg)
{
    (void)ctx;
    (void)arg;
    if (!ev->node || strcmp(ev->node, AH_NS) || !ev->from)
        return XD_HOOK_OK;
    ah_list_t l = { .ev = ev, .cfg = xd_config_get() };
    if (l.cfg)
        xd_cmd_foreach(ah_item, &l);
    for (size_t i = 0; l.cfg && i < AH_NSTD; i++) {
        const xd_cmd_t *cmd = xd_cmd_find(ah_stds[i].cmd);
        if (!cmd || !xd_cmd_allowed(l.cfg, ev->host, cmd, NULL, ev->from))
            continue;
        char node[128];
        snprintf(node, sizeof node, AH_ADMIN "%s", ah_stds[i].op);
        xd_el_t *it = xd_el_add_child(ev->query, "item", NULL);
        xd_el_set_attr(it, "jid", ev->host);
        xd_el_set_attr(it, "node", node);
        xd_el_set_attr(it, "name", ah_stds[i].name);
    }
    xd_config_unref(l.cfg);
    return XD_HOOK_OK;
}

static void
ah_identity(xd_el_t *q, const char *type, const char *name)
{
    xd_el_t *id = xd_el_add_child(q, "identity", NULL);
    xd_el_set_attr(id, "category", "automation");
    xd_el_set_attr(id, "type", type);
    if (name)
        xd_el_set_attr(id, "name", name);
}

/* DISCO_LOCAL_FEATURES of the commands node and of a command's node. */
static int
ah_disco_info(xd_module_ctx_t *ctx, xd_hook_disco_t *ev, void *arg)
{
    (void)ctx;
    (void)arg;
    if (!ev->node || !ev->from)
        return XD_HOOK_OK;
    if (!strcmp(ev->node, AH_NS)) {
        ah_identity(ev->query, "command-list", "Commands");
        return XD_HOOK_OK;
    }
    const ah_std_t *std = ah_std_of(ev->node);
    if (!std && strncmp(ev->node, AH_PREFIX, strlen(AH_PREFIX)) != 0)
        return XD_HOOK_OK;
    xd_cmd_hold_t *hold = NULL;
    const xd_cmd_t *cmd = xd_cmd_acquire(std ? std->cmd : ev->node + strlen(AH_PREFIX), &hold);
    xd_config_t *cfg = xd_config_get();
    if (cmd && cfg && xd_cmd_allowed(cfg, ev->host, cmd, NULL, ev->from)) {
        ah_identity(ev->query, "command-node",
                    std ? std->name : cmd->doc ? cmd->doc : cmd->name);
        xd_el_set_attr(xd_el_add_child(ev->query, "feature", NULL), "var", AH_NS);
        xd_el_set_attr(xd_el_add_child(ev->query, "feature", NULL), "var", XD_NS_DATA);
    }
    xd_config_unref(cfg);
    xd_cmd_release(hold);
    return XD_HOOK_OK;
}

/* ---- the command's form --------------------------------------------------------------------- */

static const char *
ah_field_type(int type)
{
    switch (type) {
    case XD_CMD_PASSWORD: return "text-private";
    case XD_CMD_JID: return "jid-single";
    case XD_CMD_HOST: return "list-single";
    default: return "text-single";
    }
}

/* <command/> of a reply to st (status, session id) under a result IQ. */
static xd_el_t *
ah_reply(const xd_stanza_t *st, const char *node, const char *sid, const char *status,
         xd_el_t **iq)
{
    *iq = xd_iq_result_builder(st);
    xd_el_t *c = xd_el_add_child(*iq, "command", AH_NS);
    xd_el_set_attr(c, "node", node);
    if (sid)
        xd_el_set_attr(c, "sessionid", sid);
    xd_el_set_attr(c, "status", status);
    return c;
}

/* The hidden FORM_TYPE field of a form (XEP-0068). */
static void
ah_form_type(xd_el_t *x, const char *type)
{
    xd_el_t *ft = xd_el_add_child(x, "field", NULL);
    xd_el_set_attr(ft, "var", "FORM_TYPE");
    xd_el_set_attr(ft, "type", "hidden");
    xd_el_add_text(xd_el_add_child(ft, "value", NULL), type);
}

/* A new session for the requester and the answer that opens it: status
 * executing, the complete action, an empty form titled `title` (*x). */
static xd_el_t *
ah_form_start(xd_module_ctx_t *ctx, const xd_iq_req_t *req, const char *node, const char *title,
              xd_el_t **x)
{
    char sid[AH_ID_LEN + 1];
    xd_str_t who = xd_jid_full_str(req->from);
    char *w = xd_strndup(who.p, who.len);
    ah_session_new(ctx, node, w, sid);
    xd_free(w);
    xd_el_t *iq;
    xd_el_t *c = ah_reply(req->iq, node, sid, "executing", &iq);
    xd_el_t *acts = xd_el_add_child(c, "actions", NULL);
    xd_el_set_attr(acts, "execute", "complete");
    xd_el_add_child(acts, "complete", NULL);
    *x = xd_el_add_child(c, "x", XD_NS_DATA);
    xd_el_set_attr(*x, "type", "form");
    xd_el_add_text(xd_el_add_child(*x, "title", NULL), title);
    return iq;
}

static xd_stanza_t *
ah_form(xd_module_ctx_t *ctx, const xd_iq_req_t *req, const xd_cmd_t *cmd, const char *node)
{
    xd_el_t *x;
    xd_el_t *iq = ah_form_start(ctx, req, node, cmd->name, &x);
    xd_el_add_text(xd_el_add_child(x, "instructions", NULL), cmd->longdoc ? cmd->longdoc
                                                                         : cmd->doc ? cmd->doc : "");
    xd_config_t *cfg = xd_config_get();
    for (size_t i = 0; i < cmd->nargs; i++) {
        const xd_cmd_arg_t *a = &cmd->args[i];
        xd_el_t *f = xd_el_add_child(x, "field", NULL);
        xd_el_set_attr(f, "var", a->name);
        xd_el_set_attr(f, "type", ah_field_type(a->type));
        xd_el_set_attr(f, "label", a->name);
        if (a->doc)
            xd_el_add_text(xd_el_add_child(f, "desc", NULL), a->doc);
        if (i < cmd->nargs - cmd->nopt)
            xd_el_add_child(f, "required", NULL);
        if (a->type == XD_CMD_HOST) {
            xd_el_add_text(xd_el_add_child(f, "value", NULL), req->host);
            for (size_t h = 0; cfg && h < xd_config_host_count(cfg); h++) {
                xd_el_t *o = xd_el_add_child(f, "option", NULL);
                xd_el_add_text(xd_el_add_child(o, "value", NULL), xd_config_host_name(cfg, h));
            }
        }
    }
    xd_config_unref(cfg);
    return xd_el_freeze(iq);
}

/* ---- running --------------------------------------------------------------------------------- */

typedef struct ah_job {
    xd_stanza_t *iq;        /* the request (a reference) */
    char *node;
    char *sid;              /* the session it completes, or NULL */
    const char *count;      /* XEP-0133: answer the result's count in this field, or NULL */
    const xd_cmd_t *cmd;
    xd_cmd_hold_t *hold;
    xd_cmd_call_t call;
    int status;
    xd_input_ref_t in;      /* held while on the main loop */
} ah_job_t;

static void
ah_job_free(ah_job_t *j)
{
    xd_cmd_call_clear(&j->call);
    xd_cmd_release(j->hold);
    xd_stanza_unref(j->iq);
    xd_free(j->node);
    xd_free(j->sid);
    xd_free(j);
}

/* The answer to a call that ran (or did not). */
static void
ah_answer(ah_job_t *j)
{
    const xd_cmd_result_t *r = &j->call.res;
    if (j->status == XD_EINVAL) {
        xd_route_error(j->iq, XD_COND_BAD_REQUEST, r->text ? r->text : "bad arguments");
        return;
    }
    xd_el_t *iq;
    xd_el_t *c = ah_reply(j->iq, j->node, j->sid, "completed", &iq);
    if (j->status != 0) {
        xd_el_t *n = xd_el_add_child(c, "note", NULL);
        xd_el_set_attr(n, "type", "error");
        xd_el_add_text(n, r->text ? r->text : xd_strerror(j->status));
        xd_route_take(xd_el_freeze(iq));
        return;
    }
    char num[32];
    if (j->count && r->kind == XD_CMD_RES_LIST) {
        /* XEP-0133: the number as a result form; users online: distinct
         * accounts among the sessions */
        size_t n = r->n;
        if (!strcmp(j->count, "onlineusersnum")) {
            n = 0;
            for (size_t i = 0; i < r->n; i++) {
                size_t bl = strcspn(r->items[i], "/");
                bool seen = false;
                for (size_t k = 0; k < i && !seen; k++)
                    seen = strcspn(r->items[k], "/") == bl && !strncmp(r->items[k], r->items[i], bl);
                n += !seen;
            }
        }
        xd_el_t *x = xd_el_add_child(c, "x", XD_NS_DATA);
        xd_el_set_attr(x, "type", "result");
        ah_form_type(x, AH_ADMIN_FORM);
        xd_el_t *f = xd_el_add_child(x, "field", NULL);
        xd_el_set_attr(f, "var", j->count);
        snprintf(num, sizeof num, "%zu", n);
        xd_el_add_text(xd_el_add_child(f, "value", NULL), num);
        xd_route_take(xd_el_freeze(iq));
        return;
    }
    const char *text = NULL;
    switch (r->kind) {
    case XD_CMD_RES_STRING: text = r->text ? r->text : ""; break;
    case XD_CMD_RES_INT:
        snprintf(num, sizeof num, "%lld", (long long)r->i);
        text = num;
        break;
    case XD_CMD_RES_BOOL: text = r->yes ? "yes" : "no"; break;
    case XD_CMD_RES_LIST: break;
    default: text = r->text && *r->text ? r->text : "done";
    }
    if (r->kind == XD_CMD_RES_LIST) {
        xd_el_t *x = xd_el_add_child(c, "x", XD_NS_DATA);
        xd_el_set_attr(x, "type", "result");
        xd_el_add_text(xd_el_add_child(x, "title", NULL), j->cmd->name);
        xd_el_t *f = xd_el_add_child(x, "field", NULL);
        xd_el_set_attr(f, "var", "result");
        xd_el_set_attr(f, "type", "text-multi");
        xd_el_set_attr(f, "label", j->cmd->result_doc ? j->cmd->result_doc : j->cmd->name);
        for (size_t i = 0; i < r->n; i++)
            xd_el_add_text(xd_el_add_child(f, "value", NULL), r->items[i]);
    } else {
        xd_el_t *n = xd_el_add_child(c, "note", NULL);
        xd_el_set_attr(n, "type", "info");
        xd_el_add_text(n, text);
    }
    xd_route_take(xd_el_freeze(iq));
}

static void
ah_loop_done(xd_cmd_call_t *call, int status, void *arg)
{
    (void)call;
    ah_job_t *j = arg;
    j->status = status;
    ah_answer(j);
    xd_input_release(j->in);
    ah_job_free(j);
}

/* Prepares the call from the submitted form (or none) and starts it;
 * NULL (answered later) or an error reply. */
static xd_stanza_t *
ah_run(const xd_iq_req_t *req, const xd_cmd_t *cmd, xd_cmd_hold_t *hold,
       const char *node, const char *sid, const xd_el_t *x, const char *count)
{
    char *argv[XD_CMD_MAX_ARGS] = { 0 };
    int argc = 0;
    bool missing = false;
    for (size_t i = 0; i < cmd->nargs; i++) {
        const char *v = NULL;
        for (const xd_el_t *f = x ? xd_el_first_child(x) : NULL; f; f = xd_el_next(f))
            if (xd_el_is(f, "field", XD_NS_DATA) && xd_el_attr(f, "var")
                && !strcmp(xd_el_attr(f, "var"), cmd->args[i].name))
                v = xd_el_child_text(f, "value", XD_NS_DATA);
        if (v && !*v)
            v = NULL;
        if (!v) {
            if (i < cmd->nargs - cmd->nopt)
                missing = true;
            break; /* the optional ones after a missing one are left out too */
        }
        argv[argc++] = (char *)v;
    }
    if (missing) {
        xd_cmd_release(hold);
        return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, "a required field is empty");
    }
    ah_job_t *j = xd_new(ah_job_t);
    j->iq = xd_stanza_ref(req->iq);
    j->node = xd_strdup(node);
    j->sid = sid ? xd_strdup(sid) : NULL;
    j->count = count;
    j->cmd = cmd;
    j->hold = hold;
    xd_config_t *cfg = xd_config_get();
    int rc = xd_cmd_prepare(&j->call, cmd, cfg, argc, argv, "adhoc");
    bool may = rc == 0 && cfg && xd_cmd_allowed(cfg, req->host, cmd, &j->call, req->from);
    xd_config_unref(cfg);
    if (rc != 0) {
        j->status = rc;
        ah_answer(j);
        ah_job_free(j);
        return NULL;
    }
    if (!may) {
        ah_job_free(j);
        return xd_stanza_error(req->iq, XD_COND_FORBIDDEN, "not for you on that host");
    }
    /* As xmppctl runs it, outside this module's instance: a command may
     * stop or reload modules, this one included (reload_config), and the
     * stop must not wait for the command that asked for it.  The answer
     * needs nothing of the instance (xd_route, xd_input_release: any
     * thread). */
    j->in = xd_input_hold();
    rc = xd_cmd_run_async(&j->call, ah_loop_done, j);
    if (rc != 0) {
        xd_input_release(j->in);
        ah_job_free(j);
        return xd_stanza_error(req->iq, rc == XD_EFULL ? XD_COND_RESOURCE_CONSTRAINT
                                                       : XD_COND_SERVICE_UNAVAILABLE,
                               NULL);
    }
    return NULL;
}

/* The form of a standard command (XEP-0133's fields). */
static xd_stanza_t *
ah_std_form(xd_module_ctx_t *ctx, const xd_iq_req_t *req, const ah_std_t *std, const char *node)
{
    xd_el_t *x;
    xd_el_t *iq = ah_form_start(ctx, req, node, std->name, &x);
    ah_form_type(x, AH_ADMIN_FORM);
    for (size_t i = 0; i < 3 && std->f[i].var; i++) {
        xd_el_t *f = xd_el_add_child(x, "field", NULL);
        xd_el_set_attr(f, "var", std->f[i].var);
        xd_el_set_attr(f, "type", std->f[i].type);
        xd_el_set_attr(f, "label", std->f[i].label);
        if (std->f[i].required)
            xd_el_add_child(f, "required", NULL);
    }
    return xd_el_freeze(iq);
}

static void
ah_arg(xd_el_t *x, const char *var, const char *value, size_t len)
{
    xd_el_t *f = xd_el_add_child(x, "field", XD_NS_DATA);
    xd_el_set_attr(f, "var", var);
    xd_el_add_textn(xd_el_add_child(f, "value", XD_NS_DATA), value, len);
}

/* A standard command's submitted form as the registry command's fields
 * (a new element), or NULL with *err. */
static xd_el_t *
ah_std_args(const ah_std_t *std, const xd_el_t *x, const char *host, const char **err)
{
    const char *jid = NULL, *pw = NULL, *pwv = NULL, *subject = NULL;
    xd_el_t *out = xd_el_new("x", XD_NS_DATA);
    size_t tlen = 0, tcap = 0;
    char *text = NULL;
    for (const xd_el_t *f = x ? xd_el_first_child(x) : NULL; f; f = xd_el_next(f)) {
        const char *var = xd_el_attr(f, "var");
        if (!var || !xd_el_is(f, "field", XD_NS_DATA))
            continue;
        const char *v = xd_el_child_text(f, "value", XD_NS_DATA);
        if (!strcmp(var, "accountjid"))
            jid = v;
        else if (!strcmp(var, "password"))
            pw = v;
        else if (!strcmp(var, "password-verify"))
            pwv = v;
        else if (!strcmp(var, "subject"))
            subject = v;
        else if (!strcmp(var, "announcement")) /* text-multi: one value a line */
            for (const xd_el_t *l = xd_el_first_child(f); l; l = xd_el_next(l)) {
                if (!xd_el_is(l, "value", XD_NS_DATA))
                    continue;
                const char *t = xd_el_text(l) ? xd_el_text(l) : "";
                size_t n = strlen(t);
                if (tlen + n + 2 > tcap) {
                    tcap = (tlen + n + 2) * 2;
                    text = xd_realloc(text, tcap);
                }
                if (tlen)
                    text[tlen++] = '\n';
                memcpy(text + tlen, t, n);
                tlen += n;
                text[tlen] = '\0';
            }
    }
    *err = NULL;
    if (std->f[0].var && !strcmp(std->f[0].var, "accountjid")) {
        xd_jid_t *j = NULL;
        if (!jid || xd_jid_parse(xd_str_c(jid), &j) != 0 || !xd_jid_local(j).len) {
            *err = "accountjid: the Jabber ID of an account";
        } else {
            xd_str_t u = xd_jid_local(j), d = xd_jid_domain(j);
            ah_arg(out, "user", u.p, u.len);
            ah_arg(out, "host", d.p, d.len);
        }
        xd_jid_unref(j);
    } else {
        ah_arg(out, "host", host, strlen(host));
    }
    if (!*err && std->f[1].var && !strcmp(std->f[1].var, "password")) {
        if (!pw || !*pw)
            *err = "password: required";
        else if (std->f[2].var && (!pwv || strcmp(pw, pwv)))
            *err = "The passwords do not match";
        else
            ah_arg(out, "password", pw, strlen(pw));
    }
    if (!*err && std->f[1].var && !strcmp(std->f[1].var, "announcement")) {
        if (!text || !tlen)
            *err = "announcement: required";
        else {
            ah_arg(out, "body", text, tlen);
            if (subject && *subject)
                ah_arg(out, "subject", subject, strlen(subject));
        }
    }
    xd_free(text);
    if (*err) {
        xd_el_free(out);
        return NULL;
    }
    return out;
}

/* XEP-0050 6: bad-request with one of its conditions. */
static xd_stanza_t *
ah_error(const xd_iq_req_t *req, const char *cond)
{
    xd_stanza_t *e = xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, NULL);
    xd_el_t *root = xd_stanza_thaw(e);
    for (xd_el_t *c = xd_el_first_child_mut(root); c; c = xd_el_next_mut(c))
        if (!strcmp(xd_el_name(c), "error"))
            xd_el_add_child(c, cond, AH_NS);
    return xd_el_freeze(root);
}

static xd_stanza_t *
ah_iq(const xd_iq_req_t *req)
{
    xd_module_ctx_t *ctx = req->ctx;
    if (strcmp(xd_el_attr(xd_stanza_root(req->iq), "type"), "set") != 0
        || !xd_el_is(req->payload, "command", AH_NS))
        return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, NULL);
    const char *node = xd_el_attr(req->payload, "node");
    const char *action = xd_el_attr(req->payload, "action");
    const char *sid = xd_el_attr(req->payload, "sessionid");
    if (!action)
        action = "execute";
    const ah_std_t *std = ah_std_of(node);
    if (!node || (!std && strncmp(node, AH_PREFIX, strlen(AH_PREFIX)) != 0))
        return xd_stanza_error(req->iq, XD_COND_ITEM_NOT_FOUND, NULL);
    xd_cmd_hold_t *hold = NULL;
    const xd_cmd_t *cmd = xd_cmd_acquire(std ? std->cmd : node + strlen(AH_PREFIX), &hold);
    xd_config_t *cfg = xd_config_get();
    bool may = cmd && cfg && xd_cmd_allowed(cfg, req->host, cmd, NULL, req->from);
    xd_config_unref(cfg);
    if (!may) {
        xd_cmd_release(hold);
        return xd_stanza_error(req->iq, XD_COND_ITEM_NOT_FOUND, NULL);
    }
    xd_str_t whos = xd_jid_full_str(req->from);
    char *who = xd_strndup(whos.p, whos.len);
    int known = sid ? ah_session_take(ctx, sid, node, who) : AH_NO_SESSION;
    xd_free(who);
    if (sid && known != AH_SESSION) {
        xd_cmd_release(hold);
        return ah_error(req, known == AH_EXPIRED ? "session-expired" : "bad-sessionid");
    }
    if (!strcmp(action, "cancel")) {
        xd_cmd_release(hold);
        xd_el_t *iq;
        ah_reply(req->iq, node, sid, "canceled", &iq);
        return xd_el_freeze(iq);
    }
    if (strcmp(action, "execute") && strcmp(action, "complete") && strcmp(action, "next")) {
        xd_cmd_release(hold);
        return ah_error(req, strcmp(action, "prev") ? "malformed-action" : "bad-action");
    }
    const xd_el_t *x = xd_el_child(req->payload, "x", XD_NS_DATA);
    const char *xt = x ? xd_el_attr(x, "type") : NULL;
    if (x && (!xt || strcmp(xt, "submit"))) {
        xd_cmd_release(hold);
        return ah_error(req, "bad-payload");
    }
    if (std) {
        if (!x && !sid && std->f[0].var) {
            xd_stanza_t *r = ah_std_form(ctx, req, std, node);
            xd_cmd_release(hold);
            return r;
        }
        const char *why = NULL;
        xd_el_t *args = ah_std_args(std, x, req->host, &why);
        if (!args) {
            xd_cmd_release(hold);
            return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, why);
        }
        xd_stanza_t *r = ah_run(req, cmd, hold, node, sid, args, std->count);
        xd_el_free(args);
        return r;
    }
    if (!x && !sid && cmd->nargs > 0) {
        xd_stanza_t *r = ah_form(ctx, req, cmd, node);
        xd_cmd_release(hold);
        return r;
    }
    return ah_run(req, cmd, hold, node, sid, x, NULL);
}

/* ---- module ----------------------------------------------------------------------------------- */

static void
ah_stop(xd_module_ctx_t *ctx)
{
    ah_state_t *st = xd_module_state(ctx);
    if (!st)
        return;
    for (size_t i = 0; i < st->cap; i++)
        ah_slot_clear(&st->s[i]);
    xd_free(st->s);
    pthread_mutex_destroy(&st->mu);
    xd_free(st);
    xd_module_set_state(ctx, NULL);
}

static int
ah_start(xd_module_ctx_t *ctx)
{
    const ah_conf_t *c = xd_module_opts(ctx);
    ah_state_t *st = xd_new(ah_state_t);
    pthread_mutex_init(&st->mu, NULL);
    st->cap = (size_t)c->max_sessions;
    st->s = xd_calloc(st->cap, sizeof *st->s);
    xd_module_set_state(ctx, st);
    int rc = xd_module_iq(ctx, XD_IQ_HOST, AH_NS, XD_IQ_INLINE, ah_iq, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_DISCO_LOCAL_ITEMS, XD_HOOK_PRIO_DEFAULT, ah_disco_items,
                            NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_DISCO_LOCAL_FEATURES, XD_HOOK_PRIO_DEFAULT,
                            ah_disco_info, NULL);
    return rc ? xd_module_fail(ctx, rc, "cannot register: %s", xd_strerror(rc)) : 0;
}

const xd_module_t xd_mod_adhoc = {
    .abi = XD_MODULE_ABI,
    .name = "mod_adhoc",
    .doc = "Ad-hoc commands (XEP-0050): the server's commands (as xmppctl has them) run from a "
           "client by the accounts their access rule allows",
    .opts = ah_opts,
    .opts_size = sizeof(ah_conf_t),
    .start = ah_start,
    .stop = ah_stop,
};

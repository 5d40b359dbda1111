/*
 * register.c — in-band registration (XEP-0077) on client streams:
 * mod_register.
 *
 * Enabled per host by listing mod_register under `modules`; not listed
 * means off (the default configuration does not list it).  Before
 * authentication a client may ask for the form and create one account per
 * stream; after binding it may change its password or cancel its account.
 * Fields come as the classic <username/>/<password/> elements or as a
 * jabber:x:data form (XEP-0004) with FORM_TYPE jabber:iq:register; the
 * server offers both.
 *
 * Limits: the `access` rule (evaluated for the JID being registered),
 * `ip_access` (evaluated for the client address), one registration per
 * client address per `registration_timeout`, and a minimum password
 * entropy (`password_strength`, bits, as ejabberd estimates it).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <uv.h>

#include "stream/c2s_int.h"
#include "router/sm.h"
#include "stream/c2s.h"
#include "stream/register.h"
#include "xmppd/acl.h"
#include "xmppd/alloc.h"
#include "xmppd/auth.h"
#include "xmppd/config.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/ns.h"
#include "xmppd/opt.h"
#include "xmppd/stanza.h"

/* mod_register options. */
typedef struct reg_conf {
    char *access;                   /* rule for the JID being registered */
    char *ip_access;                /* rule for the client address */
    char *access_remove;            /* rule for cancelling an account */
    uint64_t registration_timeout_ms; /* per client address; 0 = no limit */
    int password_strength;          /* minimum entropy in bits; 0 = any */
} reg_conf_t;

#define R_ reg_conf_t
static const xd_opt_t reg_opts[] = {
    XD_OPT_STRING("access", R_, access, "all",
                  "Access rule deciding who may register (evaluated for the new JID)."),
    XD_OPT_STRING("ip_access", R_, ip_access, "all",
                  "Access rule deciding which client addresses may register (use `ip:` "
                  "ACLs)."),
    XD_OPT_STRING("access_remove", R_, access_remove, "all",
                  "Access rule deciding who may cancel their own account in-band."),
    XD_OPT_DURATION("registration_timeout", R_, registration_timeout_ms, "600s",
                    "One registration per client address in this period; `0` for no limit."),
    XD_OPT_INT("password_strength", R_, password_strength, "0", 0, 512,
               "Minimum password entropy in bits (ejabberd's estimate: length × "
               "log2(size of the character classes used)); 0 accepts any password."),
    XD_OPT_END,
};
#undef R_

const xd_opt_t *
xd_register_opts(void)
{
    return reg_opts;
}

/* The options of host, or false when mod_register is not enabled there. */
static bool
reg_conf_get(const xd_config_t *cfg, const char *host, reg_conf_t *out)
{
    const xd_module_conf_t *m = xd_config_module(cfg, host, "mod_register");
    if (!m)
        return false;
    *out = (reg_conf_t){ 0 };
    char *err = NULL;
    if (xd_opt_parse_at(reg_opts, m->opts, out, "modules.mod_register", &err) != 0) {
        /* Checked when the configuration was loaded; cannot happen. */
        XD_LOG(NULL, XD_ERROR, "mod_register options", "error=\"%s\"", err ? err : "?");
        xd_free(err);
        return false;
    }
    return true;
}

int
xd_register_check_config(const xd_config_t *cfg, char **err)
{
    for (size_t i = 0; i < cfg->hosts.count; i++) {
        const xd_module_conf_t *m = xd_config_module(cfg, cfg->hosts.items[i], "mod_register");
        if (!m)
            continue;
        reg_conf_t rc = { 0 };
        int r = xd_opt_parse_at(reg_opts, m->opts, &rc, "modules.mod_register", err);
        if (r != 0)
            return r;
        xd_opt_free(reg_opts, &rc);
    }
    return 0;
}

/* ---- per-address rate limit ------------------------------------------------------------------ */

#define REG_IP_SLOTS 4096

typedef struct {
    char ip[48];     /* "" = free */
    uint64_t last;   /* uv_hrtime ms of the last registration */
} reg_ip_t;

static uv_mutex_t reg_ip_lock;
static uv_once_t reg_ip_once = UV_ONCE_INIT;
static reg_ip_t reg_ips[REG_IP_SLOTS];

static void
reg_ip_init(void)
{
    uv_mutex_init(&reg_ip_lock);
}

/* True (and the address recorded) when ip may register now.  A full table
 * forgets the oldest entries of the probe window. */
static bool
reg_ip_allow(const char *ip, uint64_t timeout_ms)
{
    if (timeout_ms == 0)
        return true;
    uv_once(&reg_ip_once, reg_ip_init);
    uint64_t now = uv_hrtime() / 1000000u;
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = ip; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    uv_mutex_lock(&reg_ip_lock);
    reg_ip_t *slot = NULL, *oldest = NULL;
    for (unsigned k = 0; k < 16; k++) {
        reg_ip_t *e = &reg_ips[(h + k) % REG_IP_SLOTS];
        if (e->ip[0] && strcmp(e->ip, ip) == 0) {
            slot = e;
            break;
        }
        if (!e->ip[0] || now - e->last >= timeout_ms) {
            if (!slot)
                slot = e;
            continue;
        }
        if (!oldest || e->last < oldest->last)
            oldest = e;
    }
    if (!slot)
        slot = oldest;
    bool ok = !(slot->ip[0] && strcmp(slot->ip, ip) == 0 && now - slot->last < timeout_ms);
    if (ok) {
        snprintf(slot->ip, sizeof slot->ip, "%s", ip);
        slot->last = now;
    }
    uv_mutex_unlock(&reg_ip_lock);
    return ok;
}

/* ---- password entropy (as ejabberd's ejabberd_auth:entropy/1) -------------------------------- */

static double
reg_entropy(const char *pw)
{
    bool lower = false, upper = false, digit = false, other = false, space = false;
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)pw; *p; p++) {
        if ((*p & 0xC0) == 0x80)
            continue; /* count code points, not bytes */
        n++;
        if (*p >= 'a' && *p <= 'z')
            lower = true;
        else if (*p >= 'A' && *p <= 'Z')
            upper = true;
        else if (*p >= '0' && *p <= '9')
            digit = true;
        else if (*p == ' ')
            space = true;
        else
            other = true;
    }
    double set = (lower ? 26 : 0) + (upper ? 26 : 0) + (digit ? 10 : 0) + (space ? 1 : 0) +
                 (other ? 32 : 0);
    return set > 0 ? (double)n * log2(set) : 0.0;
}

/* ---- the protocol ------------------------------------------------------------------------------ */

/* The value of field `var` of a submitted jabber:x:data form, or NULL. */
static const char *
reg_form_value(const xd_el_t *query, const char *var)
{
    const xd_el_t *x = xd_el_child(query, "x", XD_NS_DATA);
    if (!x)
        return NULL;
    for (const xd_el_t *f = xd_el_first_child(x); f; f = xd_el_next(f)) {
        if (!xd_el_is(f, "field", XD_NS_DATA))
            continue;
        const char *v = xd_el_attr(f, "var");
        if (v && !strcmp(v, var))
            return xd_el_child_text(f, "value", XD_NS_DATA);
    }
    return NULL;
}

static const char *
reg_field(const xd_el_t *query, const char *name)
{
    const char *v = xd_el_child_text(query, name, XD_NS_REGISTER);
    return v ? v : reg_form_value(query, name);
}

static void
reg_send_form(xd_conn_t *c, const xd_stanza_t *st)
{
    xd_el_t *r = xd_iq_result_builder(st);
    xd_el_t *q = xd_el_add_child(r, "query", XD_NS_REGISTER);
    if (c->bound) {
        xd_el_add_child(q, "registered", NULL);
        xd_str_t l = xd_jid_local(c->jid);
        xd_el_add_textn(xd_el_add_child(q, "username", NULL), l.p, l.len);
    } else {
        xd_el_add_text(xd_el_add_child(q, "instructions", NULL),
                       "Choose a username and password to register with this server.");
        xd_el_add_child(q, "username", NULL);
        xd_el_add_child(q, "password", NULL);
    }
    /* XEP-0077 4 / XEP-0004: the same fields as a data form. */
    xd_el_t *x = xd_el_add_child(q, "x", XD_NS_DATA);
    xd_el_set_attr(x, "type", "form");
    xd_el_add_text(xd_el_add_child(x, "title", NULL), "Account registration");
    xd_el_add_text(xd_el_add_child(x, "instructions", NULL),
                   "Choose a username and password to register with this server.");
    xd_el_t *f = xd_el_add_child(x, "field", NULL);
    xd_el_set_attr(f, "type", "hidden");
    xd_el_set_attr(f, "var", "FORM_TYPE");
    xd_el_add_text(xd_el_add_child(f, "value", NULL), XD_NS_REGISTER);
    f = xd_el_add_child(x, "field", NULL);
    xd_el_set_attr(f, "type", "text-single");
    xd_el_set_attr(f, "var", "username");
    xd_el_set_attr(f, "label", "Username");
    xd_el_add_child(f, "required", NULL);
    f = xd_el_add_child(x, "field", NULL);
    xd_el_set_attr(f, "type", "text-private");
    xd_el_set_attr(f, "var", "password");
    xd_el_set_attr(f, "label", "Password");
    xd_el_add_child(f, "required", NULL);
    xd_stanza_t *rs = xd_el_freeze(r);
    c2s_send_stanza(c, rs);
    xd_stanza_unref(rs);
}

/* A request waiting for the auth backend. */
typedef struct reg_req {
    c2s_op_t *op;            /* the connection's token */
    xd_stanza_t *st;         /* the request, to answer */
    char user[1024];         /* prepared localpart */
    int kind;                /* REG_CREATE, REG_PASSWORD, REG_REMOVE */
} reg_req_t;

enum { REG_CREATE, REG_PASSWORD, REG_REMOVE };

static void
reg_kick_other(void *arg, const xd_sm_entry_t *e);

static void
reg_done(void *arg, int status)
{
    reg_req_t *rq = arg;
    xd_conn_t *c = c2s_op_done(rq->op);
    if (c && c->state != C2S_CLOSING) {
        if (status == 0) {
            xd_stanza_t *r = xd_iq_result(rq->st);
            c2s_send_stanza(c, r);
            xd_stanza_unref(r);
            XD_LOG(&c->log, XD_NOTICE,
                   rq->kind == REG_CREATE     ? "account registered"
                   : rq->kind == REG_PASSWORD ? "password changed"
                                              : "account removed",
                   "user=%s", rq->user);
            if (rq->kind == REG_CREATE)
                c->registered = true;
        } else {
            xd_cond cond = XD_COND_INTERNAL_SERVER_ERROR;
            const char *text = NULL;
            switch (status) {
            case XD_EEXIST: cond = XD_COND_CONFLICT; text = "the username is taken"; break;
            case XD_EINVAL: cond = XD_COND_NOT_ACCEPTABLE; text = "the password is not acceptable"; break;
            case XD_ENOTSUP: cond = XD_COND_NOT_ALLOWED; break;
            case XD_ENOTFOUND: cond = XD_COND_ITEM_NOT_FOUND; break;
            case XD_EAUTH_REFUSED: cond = XD_COND_NOT_ALLOWED; break;
            case XD_EFULL: cond = XD_COND_RESOURCE_CONSTRAINT; break;
            default: break;
            }
            c2s_send_iq_error(c, rq->st, cond, text);
        }
        if (status == 0 && rq->kind == REG_REMOVE) {
            xd_hook_user_t uev = { .host = c->host, .user = rq->user };
            xd_hook_run(XD_HOOK_USER_REMOVED, c->host, &uev);
            /* XEP-0077 3.2: the account is gone; so are its sessions. */
            xd_sm_foreach(c->host, reg_kick_other, c);
            c2s_close(c, XD_STREAM_NOT_AUTHORIZED, "the account was removed");
        } else {
            c2s_unblock(c);
        }
    }
    xd_stanza_unref(rq->st);
    xd_free(rq);
}

static void
reg_kick_other(void *arg, const xd_sm_entry_t *e)
{
    xd_conn_t *c = arg;
    if (e->conn_id != c->id && xd_jid_eq_bare(e->jid, c->jid))
        xd_c2s_kick(e->jid, XD_STREAM_NOT_AUTHORIZED, "the account was removed");
}

/* Starts an asynchronous backend call; answers the error itself when the
 * call cannot start. */
static void
reg_submit(xd_conn_t *c, const xd_stanza_t *st, int kind, const char *user, const char *password)
{
    reg_req_t *rq = xd_new(reg_req_t);
    rq->st = xd_stanza_ref(st);
    rq->kind = kind;
    snprintf(rq->user, sizeof rq->user, "%s", user);
    rq->op = c2s_op_new(c);
    int rc;
    switch (kind) {
    case REG_CREATE: rc = xd_auth_register(c->host, user, password, reg_done, rq); break;
    case REG_PASSWORD: rc = xd_auth_set_password(c->host, user, password, reg_done, rq); break;
    default: rc = xd_auth_remove(c->host, user, reg_done, rq); break;
    }
    if (rc != 0) {
        /* The callback will not run: answer now. */
        c2s_block(c);
        reg_done(rq, rc);
        return;
    }
    c2s_block(c);
}

bool
c2s_register_offered(const xd_conn_t *c)
{
    if (c->authenticated || (!c2s_secure(c) && c->listener->starttls_required))
        return false;
    xd_config_t *cfg = xd_config_get();
    bool on = xd_config_module(cfg, c->host, "mod_register") != NULL;
    xd_config_unref(cfg);
    return on;
}

void
c2s_register_iq(xd_conn_t *c, const xd_stanza_t *st, const xd_el_t *query)
{
    const xd_el_t *iq = xd_stanza_root(st);
    const char *type = xd_el_attr(iq, "type");
    xd_config_t *cfg = xd_config_get();
    reg_conf_t rc;
    bool on = reg_conf_get(cfg, c->host, &rc);
    if (!on || (!c->authenticated && !c2s_secure(c) && c->listener->starttls_required)) {
        xd_config_unref(cfg);
        if (on)
            xd_opt_free(reg_opts, &rc);
        /* XEP-0077 3.1: registration not offered here. */
        c2s_send_iq_error(c, st, XD_COND_SERVICE_UNAVAILABLE, NULL);
        return;
    }
    if (!type || !strcmp(type, "get")) {
        reg_send_form(c, st);
        goto out;
    }
    if (strcmp(type, "set") != 0)
        goto out;

    if (xd_el_child(query, "remove", XD_NS_REGISTER)) {
        if (!c->bound) {
            c2s_send_iq_error(c, st, XD_COND_NOT_AUTHORIZED, "log in to cancel an account");
            goto out;
        }
        if (xd_access_match(cfg, c->host, rc.access_remove, c->jid,
                            (const struct sockaddr *)&c->peer) != XD_ACCESS_ALLOW) {
            c2s_send_iq_error(c, st, XD_COND_FORBIDDEN, NULL);
            goto out;
        }
        xd_str_t l = xd_jid_local(c->jid);
        char user[1024];
        snprintf(user, sizeof user, "%.*s", (int)l.len, l.p);
        reg_submit(c, st, REG_REMOVE, user, NULL);
        goto out;
    }

    const char *uname = reg_field(query, "username");
    const char *password = reg_field(query, "password");
    if (!uname || !*uname || !password || !*password) {
        /* XEP-0077 3.1: both fields are required. */
        c2s_send_iq_error(c, st, XD_COND_NOT_ACCEPTABLE, "username and password are required");
        goto out;
    }
    char *user = NULL;
    if (xd_jid_prep_local(xd_str_c(uname), &user) != 0) {
        c2s_send_iq_error(c, st, XD_COND_JID_MALFORMED, "the username is not allowed");
        goto out;
    }
    if (rc.password_strength > 0 && reg_entropy(password) < (double)rc.password_strength) {
        c2s_send_iq_error(c, st, XD_COND_NOT_ACCEPTABLE, "the password is too weak");
        xd_free(user);
        goto out;
    }
    if (c->bound) {
        /* XEP-0077 3.3: a password change for the logged-in account. */
        if (!xd_str_eq_c(xd_jid_local(c->jid), user)) {
            c2s_send_iq_error(c, st, XD_COND_NOT_ALLOWED, "that is not your account");
        } else {
            reg_submit(c, st, REG_PASSWORD, user, password);
        }
        xd_free(user);
        goto out;
    }
    if (c->authenticated || c->registered) {
        /* XEP-0077 3.1: one registration per stream before logging in. */
        c2s_send_iq_error(c, st, XD_COND_NOT_ACCEPTABLE, "one registration per connection");
        xd_free(user);
        goto out;
    }
    xd_jid_t *jid = NULL;
    if (xd_jid_make(xd_str_c(user), xd_str_c(c->host), xd_str_c(""), &jid) != 0) {
        c2s_send_iq_error(c, st, XD_COND_JID_MALFORMED, NULL);
        xd_free(user);
        goto out;
    }
    bool allowed = xd_access_match(cfg, c->host, rc.access, jid,
                                   (const struct sockaddr *)&c->peer) == XD_ACCESS_ALLOW &&
                   xd_access_match(cfg, c->host, rc.ip_access, NULL,
                                   (const struct sockaddr *)&c->peer) == XD_ACCESS_ALLOW;
    xd_jid_unref(jid);
    if (!allowed) {
        XD_LOG(&c->log, XD_NOTICE, "registration denied", "user=%s reason=access", user);
        c2s_send_iq_error(c, st, XD_COND_FORBIDDEN, "registration is not allowed");
    } else if (!reg_ip_allow(c->ip, rc.registration_timeout_ms)) {
        XD_LOG(&c->log, XD_NOTICE, "registration denied", "user=%s reason=rate", user);
        /* XEP-0077 3.1 (and ejabberd): too many registrations from here. */
        c2s_send_iq_error(c, st, XD_COND_RESOURCE_CONSTRAINT,
                          "too many registrations from your address; try again later");
    } else {
        reg_submit(c, st, REG_CREATE, user, password);
    }
    xd_free(user);
out:
    xd_opt_free(reg_opts, &rc);
    xd_config_unref(cfg);
}

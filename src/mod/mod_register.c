/*
 * mod_register.c — in-band registration (XEP-0077): mod_register.
 *
 * Enabled per host by listing mod_register under `modules`.  Before
 * authentication a client may ask for the form and create one account per
 * stream (the C2S_UNAUTHENTICATED_IQ hook; the stream waits for the
 * answer); after binding it may change its password or cancel its account
 * (IQ handlers on the server's JID and on the account's).  Fields come as
 * the classic <username/>/<password/> elements or as a jabber:x:data form
 * (XEP-0004) with FORM_TYPE jabber:iq:register; the server offers both.
 * The stream feature (C2S_STREAM_FEATURES) is offered where a password
 * could be sent: not before TLS, unless the host allows passwords in clear
 * (allow_unencrypted_plain_auth, as for PLAIN); registering or changing a
 * password without TLS is refused with policy-violation then.
 *
 * Limits: the `access` rule (evaluated for the JID being registered),
 * `ip_access` (evaluated for the client address), one registration per
 * client address per `registration_timeout`, and a minimum password
 * entropy (`password_strength`, bits, as ejabberd estimates it).
 *
 * The auth backend answers asynchronously on the calling worker; the
 * instance is held (xd_module_hold) until it did.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <pthread.h>
#include <time.h>

#include "xmppd/acl.h"
#include "xmppd/alloc.h"
#include "xmppd/auth.h"
#include "xmppd/config.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/log.h"
#include "xmppd/module.h"
#include "xmppd/ns.h"
#include "xmppd/opt.h"
#include "xmppd/route.h"
#include "xmppd/session.h"
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

/* ---- per-address rate limit ------------------------------------------------------------------ */

#define REG_IP_SLOTS 4096

typedef struct {
    char ip[48];     /* "" = free */
    uint64_t last;   /* CLOCK_MONOTONIC ms of the last registration */
} reg_ip_t;

static pthread_mutex_t reg_ip_lock = PTHREAD_MUTEX_INITIALIZER;
static reg_ip_t reg_ips[REG_IP_SLOTS];


/* True (and the address recorded) when ip may register now.  A full table
 * forgets the oldest entries of the probe window. */
static bool
reg_ip_allow(const char *ip, uint64_t timeout_ms)
{
    if (timeout_ms == 0)
        return true;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = ip; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    pthread_mutex_lock(&reg_ip_lock);
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
    pthread_mutex_unlock(&reg_ip_lock);
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

/* The registration form (XEP-0077 3.1, 3.2): for a logged-in account
 * (user != NULL) with <registered/> and its username. */
static xd_stanza_t *
reg_form(const xd_stanza_t *st, const xd_str_t *user)
{
    xd_el_t *r = xd_iq_result_builder(st);
    xd_el_t *q = xd_el_add_child(r, "query", XD_NS_REGISTER);
    if (user) {
        xd_el_add_child(q, "registered", NULL);
        xd_el_add_textn(xd_el_add_child(q, "username", NULL), user->p, user->len);
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
    return xd_el_freeze(r);
}

enum { REG_CREATE, REG_PASSWORD, REG_REMOVE };

/* A request waiting for the auth backend. */
typedef struct reg_req {
    xd_module_ctx_t *ctx;    /* held until the answer */
    xd_stanza_t *st;         /* the request, to answer */
    xd_preauth_t *preauth;   /* before authentication: the stream's token, else NULL */
    char host[XD_JID_PART_MAX + 1];
    char user[XD_JID_PART_MAX + 1]; /* prepared localpart */
    int kind;                /* REG_CREATE, REG_PASSWORD, REG_REMOVE */
} reg_req_t;

/* Sends reply (taken) to the requester: through the stream before
 * authentication (with flags), else routed. */
static void
reg_answer(xd_preauth_t *preauth, xd_stanza_t *reply, unsigned flags)
{
    if (preauth) {
        xd_preauth_answer(preauth, reply, flags);
        xd_stanza_unref(reply);
    } else if (reply) {
        xd_route_take(reply);
    }
}

static xd_cond
reg_cond(int status, const char **text)
{
    *text = NULL;
    switch (status) {
    case XD_EEXIST: *text = "the username is taken"; return XD_COND_CONFLICT;
    case XD_EINVAL: *text = "the password is not acceptable"; return XD_COND_NOT_ACCEPTABLE;
    case XD_ENOTSUP: return XD_COND_NOT_ALLOWED;
    case XD_ENOTFOUND: return XD_COND_ITEM_NOT_FOUND;
    case XD_EAUTH_REFUSED: return XD_COND_NOT_ALLOWED;
    case XD_EFULL: return XD_COND_RESOURCE_CONSTRAINT;
    default: return XD_COND_INTERNAL_SERVER_ERROR;
    }
}

typedef struct reg_kick {
    const char *host, *user; /* the removed account */
} reg_kick_t;

static void
reg_kick_one(void *arg, const xd_session_info_t *e)
{
    const reg_kick_t *k = arg;
    if (xd_str_eq_c(xd_jid_local(e->jid), k->user))
        xd_session_close(&e->ref, XD_STREAM_NOT_AUTHORIZED, "the account was removed");
}

static void
reg_done(void *arg, int status)
{
    reg_req_t *rq = arg;
    xd_stanza_t *reply;
    if (status == 0) {
        reply = xd_iq_result(rq->st);
        XD_LOG(NULL, XD_NOTICE,
               rq->kind == REG_CREATE     ? "account registered"
               : rq->kind == REG_PASSWORD ? "password changed"
                                          : "account removed",
               "host=%s user=%s", rq->host, rq->user);
    } else {
        const char *text;
        xd_cond cond = reg_cond(status, &text);
        reply = xd_stanza_error(rq->st, cond, text);
    }
    reg_answer(rq->preauth, reply, status == 0 && rq->kind == REG_CREATE ? XD_PREAUTH_REGISTERED : 0);
    if (status == 0 && rq->kind == REG_REMOVE) {
        xd_hook_user_t uev = { .host = rq->host, .user = rq->user };
        xd_hook_run(XD_HOOK_REMOVE_USER, rq->host, &uev);
        /* XEP-0077 3.2: the account is gone; so are its sessions (the
         * requester's after its answer, which is routed first). */
        reg_kick_t k = { rq->host, rq->user };
        xd_session_foreach(rq->host, reg_kick_one, &k);
    }
    xd_module_release(rq->ctx);
    xd_stanza_unref(rq->st);
    xd_free(rq);
}

/* Starts an asynchronous backend call; answers the error itself when the
 * call cannot start. */
static void
reg_submit(xd_module_ctx_t *ctx, xd_preauth_t *preauth, const xd_stanza_t *st, int kind,
           const char *user, const char *password)
{
    reg_req_t *rq = xd_new(reg_req_t);
    rq->ctx = ctx;
    rq->st = xd_stanza_ref(st);
    rq->preauth = preauth;
    rq->kind = kind;
    snprintf(rq->host, sizeof rq->host, "%s", xd_module_host(ctx));
    snprintf(rq->user, sizeof rq->user, "%s", user);
    xd_module_hold(ctx);
    int rc;
    switch (kind) {
    case REG_CREATE: rc = xd_auth_register(rq->host, user, password, reg_done, rq); break;
    case REG_PASSWORD: rc = xd_auth_set_password(rq->host, user, password, reg_done, rq); break;
    default: rc = xd_auth_remove(rq->host, user, reg_done, rq); break;
    }
    if (rc != 0)
        reg_done(rq, rc); /* the callback will not run: answer now */
}

/* The fields of a set, checked: *user (malloc'd, prepared) and *password,
 * or the error reply. */
static xd_stanza_t *
reg_fields(const reg_conf_t *rc, const xd_stanza_t *st, const xd_el_t *query, char **user,
           const char **password)
{
    const char *uname = reg_field(query, "username");
    *password = reg_field(query, "password");
    *user = NULL;
    if (!uname || !*uname || !*password || !**password)
        /* XEP-0077 3.1: both fields are required. */
        return xd_stanza_error(st, XD_COND_NOT_ACCEPTABLE, "username and password are required");
    if (xd_jid_prep_local(xd_str_c(uname), user) != 0)
        return xd_stanza_error(st, XD_COND_JID_MALFORMED, "the username is not allowed");
    if (rc->password_strength > 0 && reg_entropy(*password) < (double)rc->password_strength) {
        xd_free(*user);
        *user = NULL;
        return xd_stanza_error(st, XD_COND_NOT_ACCEPTABLE, "the password is too weak");
    }
    return NULL;
}

/* A password may travel on this stream: it is encrypted, or the host
 * allows passwords in clear (as for PLAIN, issue 12 #5). */
static bool
reg_password_ok(const char *host, bool secure)
{
    if (secure)
        return true;
    xd_config_t *cfg = xd_config_get();
    const xd_host_conf_t *hc = cfg ? xd_config_host(cfg, host) : NULL;
    bool ok = hc && hc->allow_unencrypted_plain_auth;
    if (cfg)
        xd_config_unref(cfg);
    return ok;
}

/* C2S_UNAUTHENTICATED_IQ: XEP-0077 3.1 before authentication. */
static int
reg_preauth(xd_module_ctx_t *ctx, xd_hook_preauth_t *ev, void *arg)
{
    (void)arg;
    const xd_el_t *iq = xd_stanza_root(ev->iq);
    const xd_el_t *query = xd_el_first_child(iq);
    if (!query || !xd_el_is(query, "query", XD_NS_REGISTER))
        return XD_HOOK_OK; /* not ours */
    const reg_conf_t *rc = xd_module_opts(ctx);
    const char *type = xd_el_attr(iq, "type");
    if (ev->tls_required) {
        /* Not offered before TLS where TLS is required: a password would
         * travel in clear. */
        reg_answer(ev->req, xd_stanza_error(ev->iq, XD_COND_SERVICE_UNAVAILABLE, NULL), 0);
        return XD_HOOK_STOP;
    }
    if (!reg_password_ok(ev->host, ev->secure)) {
        /* Not offered in clear either: refused like PLAIN (encryption first). */
        reg_answer(ev->req, xd_stanza_error(ev->iq, XD_COND_POLICY_VIOLATION,
                                            "encryption is required: use STARTTLS first"), 0);
        return XD_HOOK_STOP;
    }
    if (!type || !strcmp(type, "get")) {
        reg_answer(ev->req, reg_form(ev->iq, NULL), 0);
        return XD_HOOK_STOP;
    }
    if (strcmp(type, "set") != 0) {
        reg_answer(ev->req, NULL, 0);
        return XD_HOOK_STOP;
    }
    if (xd_el_child(query, "remove", XD_NS_REGISTER)) {
        reg_answer(ev->req, xd_stanza_error(ev->iq, XD_COND_NOT_AUTHORIZED,
                                            "log in to cancel an account"), 0);
        return XD_HOOK_STOP;
    }
    char *user = NULL;
    const char *password = NULL;
    xd_stanza_t *err = reg_fields(rc, ev->iq, query, &user, &password);
    if (!err && ev->registered)
        /* XEP-0077 3.1: one registration per stream before logging in. */
        err = xd_stanza_error(ev->iq, XD_COND_NOT_ACCEPTABLE, "one registration per connection");
    xd_jid_t *jid = NULL;
    if (!err && xd_jid_make(xd_str_c(user), xd_str_c(ev->host), xd_str_c(""), &jid) != 0)
        err = xd_stanza_error(ev->iq, XD_COND_JID_MALFORMED, NULL);
    if (!err) {
        xd_config_t *cfg = xd_config_get();
        bool allowed =
            xd_access_match(cfg, ev->host, rc->access, jid, ev->peer) == XD_ACCESS_ALLOW &&
            xd_access_match(cfg, ev->host, rc->ip_access, NULL, ev->peer) == XD_ACCESS_ALLOW;
        xd_config_unref(cfg);
        if (!allowed) {
            XD_LOG(NULL, XD_NOTICE, "registration denied", "host=%s user=%s ip=%s reason=access",
                   ev->host, user, ev->ip);
            err = xd_stanza_error(ev->iq, XD_COND_FORBIDDEN, "registration is not allowed");
        } else if (!reg_ip_allow(ev->ip, rc->registration_timeout_ms)) {
            XD_LOG(NULL, XD_NOTICE, "registration denied", "host=%s user=%s ip=%s reason=rate",
                   ev->host, user, ev->ip);
            /* XEP-0077 3.1 (and ejabberd): too many registrations from here. */
            err = xd_stanza_error(ev->iq, XD_COND_RESOURCE_CONSTRAINT,
                                  "too many registrations from your address; try again later");
        }
    }
    if (jid)
        xd_jid_unref(jid);
    if (err)
        reg_answer(ev->req, err, 0);
    else
        reg_submit(ctx, ev->req, ev->iq, REG_CREATE, user, password);
    xd_free(user);
    return XD_HOOK_STOP;
}

/* XEP-0077 3.2, 3.3: a logged-in account changes its password or cancels
 * itself (IQs to the server or to the account's bare JID). */
static xd_stanza_t *
reg_iq(const xd_iq_req_t *req)
{
    const reg_conf_t *rc = xd_module_opts(req->ctx);
    const xd_el_t *iq = xd_stanza_root(req->iq);
    const char *type = xd_el_attr(iq, "type");
    if (xd_jid_local(req->to).len && !xd_jid_eq_bare(req->to, req->from))
        return xd_stanza_error(req->iq, XD_COND_FORBIDDEN, "that is not your account");
    if (!xd_str_eq_c(xd_jid_domain(req->from), req->host) || !xd_jid_local(req->from).len)
        return xd_stanza_error(req->iq, XD_COND_NOT_ALLOWED, NULL);
    xd_str_t me = xd_jid_local(req->from);
    if (!strcmp(type, "get"))
        return reg_form(req->iq, &me);
    if (xd_el_child(req->payload, "remove", XD_NS_REGISTER)) {
        xd_config_t *cfg = xd_config_get();
        bool allowed = xd_access_match(cfg, req->host, rc->access_remove, req->from, NULL) ==
                       XD_ACCESS_ALLOW;
        xd_config_unref(cfg);
        if (!allowed)
            return xd_stanza_error(req->iq, XD_COND_FORBIDDEN, NULL);
        char user[XD_JID_PART_MAX + 1];
        snprintf(user, sizeof user, "%.*s", (int)me.len, me.p);
        reg_submit(req->ctx, NULL, req->iq, REG_REMOVE, user, NULL);
        return NULL;
    }
    xd_session_info_t si;
    bool secure = false;
    if (xd_session_find(req->from, &si) == 0) {
        secure = si.flags & XD_SESSION_SECURE;
        xd_session_info_clear(&si);
    }
    if (!reg_password_ok(req->host, secure))
        return xd_stanza_error(req->iq, XD_COND_POLICY_VIOLATION,
                               "encryption is required to change a password");
    char *user = NULL;
    const char *password = NULL;
    xd_stanza_t *err = reg_fields(rc, req->iq, req->payload, &user, &password);
    if (!err && !xd_str_eq_c(me, user))
        err = xd_stanza_error(req->iq, XD_COND_NOT_ALLOWED, "that is not your account");
    if (!err)
        reg_submit(req->ctx, NULL, req->iq, REG_PASSWORD, user, password);
    xd_free(user);
    return err;
}

/* C2S_STREAM_FEATURES: <register/> where a registration could be sent. */
static int
reg_features(xd_module_ctx_t *ctx, xd_hook_features_t *ev, void *arg)
{
    (void)ctx;
    (void)arg;
    if (!ev->authenticated && !ev->tls_required && reg_password_ok(ev->host, ev->secure))
        xd_el_add_child(ev->features, "register", XD_NS_REGISTER_FEAT);
    return XD_HOOK_OK;
}

/* ---- module ------------------------------------------------------------------------------------ */

static int
reg_start(xd_module_ctx_t *ctx)
{
    int rc = xd_module_hook(ctx, XD_HOOK_C2S_UNAUTHENTICATED_IQ, XD_HOOK_PRIO_DEFAULT,
                            reg_preauth, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_C2S_STREAM_FEATURES, XD_HOOK_PRIO_DEFAULT, reg_features,
                            NULL);
    if (rc == 0)
        rc = xd_module_iq(ctx, XD_IQ_HOST, XD_NS_REGISTER, XD_IQ_INLINE, reg_iq, NULL);
    if (rc == 0)
        rc = xd_module_iq(ctx, XD_IQ_USER, XD_NS_REGISTER, XD_IQ_INLINE, reg_iq, NULL);
    if (rc != 0)
        return xd_module_fail(ctx, rc, "cannot register: %s", xd_strerror(rc));
    return 0;
}

const xd_module_t xd_mod_register = {
    .abi = XD_MODULE_ABI,
    .name = "mod_register",
    .doc = "In-band registration (XEP-0077)",
    .opts = reg_opts,
    .opts_size = sizeof(reg_conf_t),
    .start = reg_start,
};

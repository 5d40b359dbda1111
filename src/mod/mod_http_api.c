/*
 * mod_http_api.c — the command registry over HTTP (ejabberd's mod_http_api):
 * every command xmppctl has, as a JSON call, for scripts and control
 * panels that cannot reach the control socket.
 *
 *   POST /api/COMMAND       (the http listener's "api" handler)
 *   Authorization: Basic base64(user@host:password)
 *   {"user": "bob", "host": "example.org", "password": "..."}
 *
 * The body is a JSON object of the command's arguments by name (strings;
 * integers for integer arguments; an optional one may be left out; {} or
 * no body for none).  Answers: 200 with the result as JSON — a string, an
 * integer, true/false, an array of strings, or 0 for a command without a
 * result; 400 {"status": "error", "message": …} for bad arguments or a
 * body that is not such an object; 401 (with WWW-Authenticate) without
 * valid credentials; 403 when the command's access rule does not allow the
 * account (the same rule and host scoping as ad-hoc commands: acl.h
 * xd_cmd_allowed, asked on the account's own host); 404 for an unknown
 * command; 409 for a command that ran and failed, with its message.
 *
 * The account's host must run mod_http_api.  Credentials are checked on
 * the blocking pool (the host's auth backend), then the command runs as
 * xmppctl runs it (xd_cmd_run_async), outside this module's instance; the
 * answer goes back on the request's worker.  Put the handler on a TLS listener (or on
 * loopback): Basic credentials travel with every request.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xmppd/acl.h"
#include "xmppd/alloc.h"
#include "xmppd/auth.h"
#include "xmppd/base64.h"
#include "xmppd/cmd.h"
#include "xmppd/config.h"
#include "xmppd/err.h"
#include "xmppd/http.h"
#include "xmppd/jid.h"
#include "xmppd/log.h"
#include "xmppd/module.h"
#include "xmppd/owner.h"

#define API_CRED_MAX 3200 /* bytes of user@host:password */

typedef struct api_job {
    xd_module_ctx_t *ctx;   /* the account's host's instance (held) */
    xd_http_handle_t h;     /* the request */
    char *cmdname;
    char *user, *host, *password;
    char *body;             /* the JSON text */
    size_t body_len;
    xd_cmd_hold_t *hold;
    const xd_cmd_t *cmd;
    xd_cmd_call_t call;
    bool prepared;
    int status;             /* HTTP status of the answer */
    char *answer;           /* its JSON */
} api_job_t;

static pthread_mutex_t api_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned api_refs;

static void
api_job_free(api_job_t *j)
{
    if (j->prepared)
        xd_cmd_call_clear(&j->call);
    xd_cmd_release(j->hold);
    if (j->password) {
        memset(j->password, 0, strlen(j->password));
        xd_free(j->password);
    }
    xd_free(j->cmdname);
    xd_free(j->user);
    xd_free(j->host);
    xd_free(j->body);
    xd_free(j->answer);
    if (j->ctx)
        xd_module_release(j->ctx);
    xd_free(j);
}

static char *
api_error_json(const char *message)
{
    json_t *o = json_pack("{s:s, s:s}", "status", "error", "message", message ? message : "");
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    char *out = xd_strdup(s ? s : "{\"status\":\"error\"}");
    free(s);
    return out;
}

static void
api_fail(api_job_t *j, int status, const char *message)
{
    j->status = status;
    xd_free(j->answer);
    j->answer = api_error_json(message);
}

/* The command's result as JSON. */
static void
api_result(api_job_t *j, int rc)
{
    const xd_cmd_result_t *r = &j->call.res;
    if (rc == XD_EINVAL) {
        api_fail(j, 400, r->text ? r->text : "bad arguments");
        return;
    }
    if (rc != 0) {
        api_fail(j, 409, r->text ? r->text : xd_strerror(rc));
        return;
    }
    json_t *v;
    switch (r->kind) {
    case XD_CMD_RES_STRING: v = json_stringn(r->text ? r->text : "", r->text ? r->text_len : 0); break;
    case XD_CMD_RES_INT: v = json_integer((json_int_t)r->i); break;
    case XD_CMD_RES_BOOL: v = json_boolean(r->yes); break;
    case XD_CMD_RES_LIST:
        v = json_array();
        for (size_t i = 0; i < r->n; i++)
            json_array_append_new(v, json_string(r->items[i]));
        break;
    default: v = json_integer(0);
    }
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(v);
    j->status = 200;
    xd_free(j->answer);
    j->answer = xd_strdup(s ? s : "0");
    free(s);
}

/* On the pool: the credentials, the arguments, the rule; the command if
 * it may run here. */
static void
api_work(xd_module_ctx_t *ctx, void *arg)
{
    (void)ctx;
    api_job_t *j = arg;
    bool ok = false;
    int rc = xd_auth_check_password_sync(j->host, j->user, j->password, &ok);
    if (rc != 0 || !ok) {
        j->status = 401;
        return;
    }
    j->cmd = xd_cmd_acquire(j->cmdname, &j->hold);
    if (!j->cmd) {
        api_fail(j, 404, "no such command");
        return;
    }
    json_error_t err;
    json_t *o = j->body_len ? json_loadb(j->body, j->body_len, 0, &err) : json_object();
    if (!o || !json_is_object(o)) {
        api_fail(j, 400, o ? "the body is not a JSON object" : err.text);
        json_decref(o);
        return;
    }
    char *argv[XD_CMD_MAX_ARGS] = { 0 };
    char nums[XD_CMD_MAX_ARGS][32];
    int argc = 0;
    bool bad = false, gap = false;
    for (size_t i = 0; i < j->cmd->nargs && !bad; i++) {
        json_t *v = json_object_get(o, j->cmd->args[i].name);
        if (!v || json_is_null(v)) {
            gap = true; /* the rest is left out (only optional ones may be) */
            continue;
        }
        if (gap)
            bad = true;
        else if (json_is_string(v))
            argv[argc++] = (char *)json_string_value(v);
        else if (json_is_integer(v)) {
            snprintf(nums[i], sizeof nums[i], "%lld", (long long)json_integer_value(v));
            argv[argc++] = nums[i];
        } else
            bad = true;
    }
    if (bad) {
        api_fail(j, 400, "arguments are strings or integers, the optional ones last");
        json_decref(o);
        return;
    }
    xd_config_t *cfg = xd_config_get();
    rc = xd_cmd_prepare(&j->call, j->cmd, cfg, argc, argv, "http");
    j->prepared = true;
    json_decref(o);
    xd_jid_t *who = NULL;
    bool may = false;
    if (rc == 0 && xd_jid_make(xd_str_c(j->user), xd_str_c(j->host), xd_str_c(""), &who) == 0)
        may = cfg && xd_cmd_allowed(cfg, j->host, j->cmd, &j->call, who);
    xd_jid_unref(who);
    xd_config_unref(cfg);
    if (rc != 0) {
        api_result(j, rc);
        return;
    }
    if (!may)
        api_fail(j, 403, "this account may not run that command");
    /* else: api_done has it run (status still 0) */
}

static void
api_answer(api_job_t *j)
{
    xd_http_req_t *r = xd_http_req_find(j->h);
    if (r) {
        if (j->status == 401) {
            xd_http_add_header(r, "WWW-Authenticate", "Basic realm=\"xmppd\", charset=\"UTF-8\"");
            xd_free(j->answer);
            j->answer = api_error_json("valid credentials of an account are needed");
        }
        const char *a = j->answer ? j->answer : "0";
        xd_http_respond(r, j->status, "application/json", a, strlen(a));
    }
    api_job_free(j);
}

static void
api_posted(xd_module_ctx_t *ctx, void *arg)
{
    (void)ctx;
    api_answer(arg);
}

/* On the main loop: the command ran.  This module's instance may have
 * been stopped by it (reload_config): the answer goes back through the
 * instance running now, found by name. */
static void
api_cmd_done(xd_cmd_call_t *call, int status, void *arg)
{
    (void)call;
    api_job_t *j = arg;
    if (status == XD_ECLOSED || status == XD_EFULL)
        api_fail(j, 503, "not run: the server is stopping or busy"); /* it did not run */
    else
        api_result(j, status);
    xd_module_ctx_t *now = xd_module_instance("mod_http_api", j->host);
    if (!now || xd_module_post(now, j->h.worker, api_posted, j) != 0)
        api_job_free(j); /* no instance or worker to answer on: the client times out */
    if (now)
        xd_module_release(now);
}

static void
api_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    (void)ctx;
    api_job_t *j = arg;
    if (status != 0) {
        api_fail(j, 503, "the server is stopping");
    } else if (j->status == 0) {
        /* As xmppctl runs it, outside this instance (which the command may
         * stop: a stop waits for the instance's own work). */
        xd_module_release(j->ctx);
        j->ctx = NULL;
        int rc = xd_cmd_run_async(&j->call, api_cmd_done, j);
        if (rc == 0)
            return;
        api_fail(j, 503, rc == XD_EFULL ? "busy; try again" : "the server is stopping");
    }
    api_answer(j);
}

/* "Basic base64(user@host:password)" into the job; false when it is not. */
static bool
api_credentials(api_job_t *j, const char *auth)
{
    if (!auth || strncasecmp(auth, "Basic ", 6) != 0)
        return false;
    const char *b = auth + 6;
    while (*b == ' ')
        b++;
    size_t len = strlen(b), n = 0;
    if (len == 0 || xd_base64_decoded_max(len) > API_CRED_MAX)
        return false;
    char cred[API_CRED_MAX + 1];
    if (xd_base64_decode(b, len, cred, API_CRED_MAX, &n, 0) != 0)
        return false;
    cred[n] = '\0';
    char *colon = strchr(cred, ':');
    if (!colon || memchr(cred, '\0', n))
        goto no;
    *colon = '\0';
    xd_jid_t *jid = NULL;
    if (xd_jid_parse(xd_str_c(cred), &jid) != 0)
        goto no;
    xd_str_t u = xd_jid_local(jid), d = xd_jid_domain(jid);
    bool ok = u.len > 0 && xd_jid_resource(jid).len == 0;
    if (ok) {
        j->user = xd_strndup(u.p, u.len);
        j->host = xd_strndup(d.p, d.len);
        j->password = xd_strdup(colon + 1);
    }
    xd_jid_unref(jid);
    memset(cred, 0, sizeof cred);
    return ok;
no:
    memset(cred, 0, sizeof cred);
    return false;
}

static void
api_request(xd_http_req_t *r, void *ud)
{
    (void)ud;
    const char *name = xd_http_req_subpath(r);
    while (*name == '/')
        name++;
    if (!*name || strchr(name, '/')) {
        xd_http_error(r, 404, "POST /api/COMMAND");
        return;
    }
    api_job_t *j = xd_new(api_job_t);
    if (!api_credentials(j, xd_http_req_header(r, "Authorization"))) {
        api_fail(j, 401, NULL);
        j->h = xd_http_req_handle(r);
        api_answer(j);
        return;
    }
    j->ctx = xd_module_instance("mod_http_api", j->host);
    if (!j->ctx) {
        api_fail(j, 403, "the account's host does not serve the HTTP API");
        j->h = xd_http_req_handle(r);
        api_answer(j);
        return;
    }
    j->cmdname = xd_strdup(name);
    size_t len = 0;
    const char *body = xd_http_req_body(r, &len);
    j->body = xd_strndup(body ? body : "", len);
    j->body_len = len;
    j->h = xd_http_req_handle(r);
    if (xd_module_submit(j->ctx, api_work, api_done, j) != 0) {
        api_fail(j, 503, "busy; try again");
        api_answer(j);
    }
}

static const xd_http_handler_t api_handler = {
    .request = api_request,
    .methods = "POST",
};

static int
api_start(xd_module_ctx_t *ctx)
{
    static int holds_ref; /* the state of an instance that counts in api_refs */
    int rc = 0;
    pthread_mutex_lock(&api_mu);
    if (api_refs == 0)
        rc = xd_http_register("api", "/api", &api_handler, NULL);
    if (rc == 0)
        api_refs++;
    pthread_mutex_unlock(&api_mu);
    if (rc != 0)
        return xd_module_fail(ctx, rc, "cannot register the api HTTP handler: %s",
                              xd_strerror(rc));
    xd_module_set_state(ctx, &holds_ref);
    return 0;
}

static void
api_stop(xd_module_ctx_t *ctx)
{
    if (!xd_module_state(ctx))
        return;
    xd_module_set_state(ctx, NULL);
    pthread_mutex_lock(&api_mu);
    if (api_refs > 0 && --api_refs == 0)
        xd_http_unregister("api");
    pthread_mutex_unlock(&api_mu);
}

const xd_module_t xd_mod_http_api = {
    .abi = XD_MODULE_ABI,
    .name = "mod_http_api",
    .doc = "The server's commands over HTTP as JSON calls (POST /api/COMMAND), for the "
           "accounts their access rule allows",
    .start = api_start,
    .stop = api_stop,
};

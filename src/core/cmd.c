/*
 * cmd.c — the command registry (see include/xmppd/cmd.h).
 *
 * The registry is a sorted array of pointers under a rwlock: registration
 * is rare (start-up, module load), lookups happen per request.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "xmppd/alloc.h"
#include "xmppd/cmd.h"
#include "xmppd/err.h"
#include "xmppd/log.h"

static pthread_rwlock_t cmd_lock = PTHREAD_RWLOCK_INITIALIZER;

/* A registered command and the calls of it in progress: unregistering waits
 * for them, so a module's command never runs after its module stopped (nor
 * in an unloaded .so). */
struct xd_cmd_hold {
    const xd_cmd_t *cmd;
    _Atomic unsigned busy; /* holds (xd_cmd_acquire) not yet released */
};
static struct xd_cmd_hold **cmd_tab; /* sorted by name */
static size_t cmd_n, cmd_cap;

/* ---- registry ------------------------------------------------------------------------------ */

/* Index of name, or the insertion point with *found = false. */
static size_t
cmd_search(const char *name, bool *found)
{
    size_t lo = 0, hi = cmd_n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(cmd_tab[mid]->cmd->name, name);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

int
xd_cmd_register(const xd_cmd_t *cmd)
{
    if (!cmd || !cmd->name || !*cmd->name || !cmd->fn || !cmd->doc ||
        cmd->nargs > XD_CMD_MAX_ARGS || cmd->nopt > cmd->nargs || (cmd->nargs && !cmd->args))
        return XD_EINVAL;
    pthread_rwlock_wrlock(&cmd_lock);
    bool found;
    size_t at = cmd_search(cmd->name, &found);
    if (found) {
        pthread_rwlock_unlock(&cmd_lock);
        return XD_EEXIST;
    }
    if (cmd_n == cmd_cap) {
        cmd_cap = cmd_cap ? cmd_cap * 2 : 32;
        cmd_tab = xd_realloc(cmd_tab, cmd_cap * sizeof *cmd_tab);
    }
    memmove(cmd_tab + at + 1, cmd_tab + at, (cmd_n - at) * sizeof *cmd_tab);
    struct xd_cmd_hold *e = xd_new(struct xd_cmd_hold);
    e->cmd = cmd;
    atomic_init(&e->busy, 0u);
    cmd_tab[at] = e;
    cmd_n++;
    pthread_rwlock_unlock(&cmd_lock);
    return 0;
}

void
xd_cmd_unregister(const xd_cmd_t *cmd)
{
    struct xd_cmd_hold *e = NULL;
    pthread_rwlock_wrlock(&cmd_lock);
    bool found;
    size_t at = cmd_search(cmd->name, &found);
    if (found && cmd_tab[at]->cmd == cmd) {
        e = cmd_tab[at];
        memmove(cmd_tab + at, cmd_tab + at + 1, (cmd_n - at - 1) * sizeof *cmd_tab);
        cmd_n--;
    }
    pthread_rwlock_unlock(&cmd_lock);
    if (!e)
        return;
    /* Nobody can take a new hold now; wait for the calls in progress. */
    while (atomic_load_explicit(&e->busy, memory_order_acquire) != 0) {
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
    xd_free(e);
}

const xd_cmd_t *
xd_cmd_find(const char *name)
{
    pthread_rwlock_rdlock(&cmd_lock);
    bool found;
    size_t at = cmd_search(name, &found);
    const xd_cmd_t *cmd = found ? cmd_tab[at]->cmd : NULL;
    pthread_rwlock_unlock(&cmd_lock);
    return cmd;
}

const xd_cmd_t *
xd_cmd_acquire(const char *name, xd_cmd_hold_t **hold)
{
    pthread_rwlock_rdlock(&cmd_lock);
    bool found;
    size_t at = cmd_search(name, &found);
    struct xd_cmd_hold *e = found ? cmd_tab[at] : NULL;
    if (e)
        atomic_fetch_add_explicit(&e->busy, 1, memory_order_relaxed);
    pthread_rwlock_unlock(&cmd_lock);
    *hold = e;
    return e ? e->cmd : NULL;
}

void
xd_cmd_release(xd_cmd_hold_t *hold)
{
    if (hold)
        atomic_fetch_sub_explicit(&hold->busy, 1, memory_order_release);
}

void
xd_cmd_foreach(int (*fn)(void *arg, const xd_cmd_t *cmd), void *arg)
{
    /* A snapshot of held entries, so fn may register or look up commands
     * and none of them goes away meanwhile. */
    pthread_rwlock_rdlock(&cmd_lock);
    size_t n = cmd_n;
    struct xd_cmd_hold **snap = xd_malloc((n ? n : 1) * sizeof *snap);
    memcpy(snap, cmd_tab, n * sizeof *snap);
    for (size_t i = 0; i < n; i++)
        atomic_fetch_add_explicit(&snap[i]->busy, 1, memory_order_relaxed);
    pthread_rwlock_unlock(&cmd_lock);
    size_t i = 0;
    for (; i < n; i++) {
        int stop = fn(arg, snap[i]->cmd);
        xd_cmd_release(snap[i]);
        if (stop != 0) {
            i++;
            break;
        }
    }
    for (; i < n; i++)
        xd_cmd_release(snap[i]);
    xd_free(snap);
}

/* ---- results ------------------------------------------------------------------------------- */

static char *
cmd_vfmt(const char *fmt, va_list ap, size_t *len)
{
    char *s = xd_vasprintf(fmt, ap);
    *len = strlen(s);
    return s;
}

void
xd_cmd_printf(xd_cmd_call_t *call, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t n;
    char *s = cmd_vfmt(fmt, ap, &n);
    va_end(ap);
    xd_cmd_result_t *r = &call->res;
    r->text = xd_realloc(r->text, r->text_len + n + 1);
    memcpy(r->text + r->text_len, s, n + 1);
    r->text_len += n;
    xd_free(s);
}

void
xd_cmd_add(xd_cmd_call_t *call, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t n;
    char *s = cmd_vfmt(fmt, ap, &n);
    va_end(ap);
    xd_cmd_result_t *r = &call->res;
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 16;
        r->items = xd_realloc(r->items, r->cap * sizeof *r->items);
    }
    r->items[r->n++] = s;
}

int
xd_cmd_errorf(xd_cmd_call_t *call, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t n;
    char *s = cmd_vfmt(fmt, ap, &n);
    va_end(ap);
    xd_free(call->res.text);
    call->res.text = s;
    call->res.text_len = n;
    return status;
}

void
xd_cmd_result_clear(xd_cmd_result_t *res)
{
    xd_free(res->text);
    for (size_t i = 0; i < res->n; i++)
        xd_free(res->items[i]);
    xd_free(res->items);
    *res = (xd_cmd_result_t){ 0 };
}

/* ---- calls --------------------------------------------------------------------------------- */

const char *
xd_cmd_type_name(int type)
{
    switch ((xd_cmd_type)type) {
    case XD_CMD_STRING: return "string";
    case XD_CMD_INT: return "integer";
    case XD_CMD_USER: return "user";
    case XD_CMD_HOST: return "host";
    case XD_CMD_JID: return "jid";
    case XD_CMD_RESOURCE: return "resource";
    case XD_CMD_PASSWORD: return "password";
    }
    return "?";
}

void
xd_cmd_synopsis(const xd_cmd_t *cmd, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < cmd->nargs && len < cap; i++) {
        bool opt = i >= cmd->nargs - cmd->nopt;
        char name[64];
        size_t k = 0;
        for (const char *p = cmd->args[i].name; *p && k < sizeof name - 1; p++)
            name[k++] = (char)((*p >= 'a' && *p <= 'z') ? *p - 'a' + 'A' : *p);
        name[k] = '\0';
        int n = snprintf(buf + len, cap - len, "%s%s%s%s", i ? " " : "", opt ? "[" : "", name,
                         opt ? "]" : "");
        if (n < 0)
            break;
        len += (size_t)n;
    }
}

/* Prepares one argument into v; on error a message into call->res.  Names
 * are prepared as the configuration's (call->cfg->names: RFC 7622). */
static int
cmd_prepare_arg(xd_cmd_call_t *call, const xd_cmd_arg_t *a, const char *raw, xd_cmd_value_t *v)
{
    const xd_conf_names_t *names = call->cfg->names;
    xd_str_t in = xd_str_c(raw);
    int rc = 0;
    switch ((xd_cmd_type)a->type) {
    case XD_CMD_STRING:
    case XD_CMD_PASSWORD:
        v->text = xd_strdup(raw);
        return 0;
    case XD_CMD_INT: {
        char *end;
        errno = 0;
        long long n = strtoll(raw, &end, 10);
        if (errno != 0 || end == raw || *end != '\0')
            return xd_cmd_errorf(call, XD_EINVAL, "%s '%s': not an integer", a->name, raw);
        v->i = n;
        v->text = xd_strdup(raw);
        return 0;
    }
    case XD_CMD_USER:
        rc = names->local(in, &v->text);
        break;
    case XD_CMD_RESOURCE:
        rc = names->resource(in, &v->text);
        break;
    case XD_CMD_HOST:
        rc = names->domain(in, &v->text);
        if (rc == 0 && !xd_config_is_host(call->cfg, v->text))
            return xd_cmd_errorf(call, XD_EINVAL, "%s '%s': not a host this server serves", a->name,
                                 raw);
        break;
    case XD_CMD_JID:
        rc = names->jid(in, &v->text);
        break;
    default:
        return xd_cmd_errorf(call, XD_EINVAL, "%s: unknown argument type", a->name);
    }
    if (rc != 0)
        return xd_cmd_errorf(call, XD_EINVAL, "%s '%s': %s", a->name, raw, xd_strerror(rc));
    return 0;
}

int
xd_cmd_prepare(xd_cmd_call_t *call, const xd_cmd_t *cmd, xd_config_t *cfg, int argc,
               char *const *argv, const char *origin)
{
    *call = (xd_cmd_call_t){ .cmd = cmd, .cfg = xd_config_ref(cfg), .origin = origin };
    size_t min = cmd->nargs - cmd->nopt;
    if (argc < 0 || (size_t)argc < min || (size_t)argc > cmd->nargs) {
        char syn[256];
        xd_cmd_synopsis(cmd, syn, sizeof syn);
        return xd_cmd_errorf(call, XD_EINVAL, "usage: %s%s%s", cmd->name, *syn ? " " : "", syn);
    }
    for (int i = 0; i < argc; i++) {
        int rc = cmd_prepare_arg(call, &cmd->args[i], argv[i], &call->args[i]);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int
xd_cmd_run(xd_cmd_call_t *call)
{
    const xd_cmd_t *cmd = call->cmd;
    /* Log the call with its arguments, passwords masked. */
    char line[512];
    size_t len = 0;
    line[0] = '\0';
    for (size_t i = 0; i < cmd->nargs && call->args[i].text && len < sizeof line; i++) {
        const char *t = cmd->args[i].type == XD_CMD_PASSWORD ? "***" : call->args[i].text;
        int n = snprintf(line + len, sizeof line - len, "%s%s", i ? " " : "", t);
        if (n < 0)
            break;
        len += (size_t)n;
    }
    call->res.kind = cmd->result;
    int rc = cmd->fn(call);
    XD_LOG(NULL, rc == 0 ? XD_NOTICE : XD_WARN, "command", "origin=%s cmd=%s args=\"%s\" status=%s",
           call->origin ? call->origin : "?", cmd->name, line, rc == 0 ? "ok" : xd_strerror(rc));
    return rc;
}

void
xd_cmd_call_clear(xd_cmd_call_t *call)
{
    for (size_t i = 0; i < XD_CMD_MAX_ARGS; i++) {
        char *t = call->args[i].text;
        if (!t)
            continue;
        OPENSSL_cleanse(t, strlen(t));
        xd_free(t);
    }
    xd_cmd_result_clear(&call->res);
    if (call->cfg)
        xd_config_unref(call->cfg);
    *call = (xd_cmd_call_t){ 0 };
}

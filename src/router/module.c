/*
 * module.c — module registry, .so loading and the per-host lifecycle
 * (include/xmppd/module.h).
 *
 * State (all of it touched only by the lifecycle thread: main thread at
 * start/stop, the reload thread on reload; md_lock makes that a rule
 * rather than an assumption):
 *   md_builtin   registered built-in modules;
 *   md_libs      loaded .so files, kept open until xd_modules_stop;
 *   md_run       running instances (one ctx per module and host), in start
 *                order; stop walks it backwards;
 *   md_cmds      reference counts of commands registered through
 *                xd_module_command (global, shared by a module's hosts);
 *   md_cfg       the configuration the instances run with (a reference);
 *   md_db        the database instances get, with the schemas applied.
 *
 * Stopping an instance: its registrations are undone (newest first), runs
 * of hooks that may still call its handlers are waited for
 * (xd_hook_sync), then calls in flight (ctx->busy: IQ requests queued or
 * running, service calls, submitted work) are waited for, and only then is
 * stop called and the context freed.  Options replaced by a reload are
 * kept until the instance stops, so a handler that read them keeps valid
 * memory.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "xmppd/module.h"

#include "xd_version.h"
#include "core/pool.h"
#include "core/worker.h"
#include "storage/dbhosts.h"
#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/jid.h"
#include "xmppd/log.h"

#define MD_IDLE_WAIT_MS 10000 /* longest wait for a stopping instance's calls in flight */

typedef enum md_reg_kind { MD_REG_IQ, MD_REG_SERVICE, MD_REG_HOOK, MD_REG_CMD } md_reg_kind;

/* One registration made through a ctx helper, undone after stop. */
typedef struct md_reg {
    md_reg_kind kind;        /* which registry */
    int target;              /* IQ: xd_iq_target */
    char *key;               /* IQ: ns; SERVICE: domain (owned) */
    xd_hook_id hook;         /* HOOK: the hook */
    xd_service_fn sfn;       /* SERVICE: the handler */
    xd_hook_fn_any hfn;      /* HOOK: the handler */
    void *arg;               /* HOOK: its argument */
    const xd_cmd_t *cmd;     /* CMD: the command */
} md_reg_t;

struct xd_module_ctx {
    const xd_module_t *mod;  /* the module */
    char *host;              /* the served host (owned) */
    _Atomic(void *) opts;    /* parsed options (owned), NULL without a table */
    void **retired;          /* options replaced by reloads, freed at stop (owned) */
    size_t nretired;         /* how many */
    void *state;             /* the module's own per-host pointer */
    md_reg_t *regs;          /* registrations, in order made */
    size_t nregs, cap;       /* used, allocated */
    char *fail;              /* xd_module_fail message (owned) or NULL */
    _Atomic unsigned busy;   /* calls of the instance's code in flight (xd_module_hold) */
};

typedef struct md_lib {
    char *path;              /* the file (owned) */
    void *handle;            /* dlopen handle */
    const xd_module_t *mod;  /* its exported module */
} md_lib_t;

typedef struct md_cmdref {
    const xd_cmd_t *cmd;     /* registered command */
    unsigned count;          /* instances that asked for it */
} md_cmdref_t;

static pthread_mutex_t md_lock = PTHREAD_MUTEX_INITIALIZER; /* the lifecycle thread's lock */
static const xd_module_t **md_builtin;   /* built-ins */
static size_t md_nbuiltin;               /* count */
static md_lib_t *md_libs;                /* loaded .so files */
static size_t md_nlibs;                  /* count */
static xd_module_ctx_t **md_run;         /* running instances, start order */
static size_t md_nrun, md_caprun;        /* used, allocated */
static md_cmdref_t *md_cmds;             /* command refcounts */
static size_t md_ncmds;                  /* used */
static xd_config_t *md_cfg;              /* running configuration (a reference) */
static _Atomic(xd_db_t *) md_db;         /* the database, or NULL */

/* The running instances for xd_module_instance: its own lock, so that a
 * lookup from a worker never waits for a start or stop (md_lock). */
static pthread_rwlock_t md_idx_lock = PTHREAD_RWLOCK_INITIALIZER;
static xd_module_ctx_t **md_idx;         /* started instances (md_idx_lock) */
static size_t md_nidx, md_capidx;        /* used, allocated */

static void
md_idx_add(xd_module_ctx_t *ctx)
{
    pthread_rwlock_wrlock(&md_idx_lock);
    if (md_nidx == md_capidx) {
        md_capidx = md_capidx ? md_capidx * 2 : 16;
        md_idx = xd_realloc(md_idx, md_capidx * sizeof *md_idx);
    }
    md_idx[md_nidx++] = ctx;
    pthread_rwlock_unlock(&md_idx_lock);
}

static void
md_idx_del(xd_module_ctx_t *ctx)
{
    pthread_rwlock_wrlock(&md_idx_lock);
    for (size_t i = 0; i < md_nidx; i++)
        if (md_idx[i] == ctx) {
            md_idx[i] = md_idx[--md_nidx];
            break;
        }
    if (!md_nidx) {
        xd_free(md_idx);
        md_idx = NULL;
        md_capidx = 0;
    }
    pthread_rwlock_unlock(&md_idx_lock);
}

/* ---- context ---------------------------------------------------------------------------------- */

const char *
xd_module_host(const xd_module_ctx_t *ctx)
{
    return ctx->host;
}

const void *
xd_module_opts(const xd_module_ctx_t *ctx)
{
    return atomic_load(&((xd_module_ctx_t *)ctx)->opts);
}

xd_module_ctx_t *
xd_module_instance(const char *name, const char *host)
{
    xd_module_ctx_t *found = NULL;
    pthread_rwlock_rdlock(&md_idx_lock);
    for (size_t i = 0; i < md_nidx && !found; i++)
        if (!strcmp(md_idx[i]->mod->name, name) && !strcmp(md_idx[i]->host, host))
            found = md_idx[i];
    xd_module_hold(found); /* under the lock: the stop waits for the release */
    pthread_rwlock_unlock(&md_idx_lock);
    return found;
}

xd_module_ctx_t *
xd_module_cmd_instance(xd_cmd_call_t *call, const char *name, const char *host)
{
    xd_module_ctx_t *ctx = xd_module_instance(name, host);
    if (ctx && !xd_module_state(ctx)) { /* its start has not got that far */
        xd_module_release(ctx);
        ctx = NULL;
    }
    if (!ctx)
        xd_cmd_errorf(call, XD_ENOTFOUND, "%s does not run on %s", name, host);
    return ctx;
}

xd_db_t *
xd_module_db(const xd_module_ctx_t *ctx)
{
    /* The pool of the instance's host (its sql_*, storage/dbhosts.h); the
     * database given to xd_modules_set_db for NULL and when no pools are
     * open (unit tests). */
    xd_db_t *db = ctx ? xd_db_host(ctx->host) : NULL;
    return db ? db : atomic_load(&md_db);
}

void
xd_module_hold(xd_module_ctx_t *ctx)
{
    if (ctx)
        atomic_fetch_add(&ctx->busy, 1);
}

void
xd_module_release(xd_module_ctx_t *ctx)
{
    if (ctx)
        atomic_fetch_sub(&ctx->busy, 1);
}

/* ---- submitted work ---------------------------------------------------------------------------- */

typedef struct md_job {
    xd_module_ctx_t *ctx;     /* held until done ran */
    xd_module_work_fn work;   /* on the pool */
    xd_module_done_cb done;   /* back on the loop, or NULL */
    void *arg;                /* theirs */
} md_job_t;

static void
md_job_work(void *arg)
{
    md_job_t *j = arg;
    j->work(j->ctx, j->arg);
}

static void
md_job_done(void *arg, int status)
{
    md_job_t *j = arg;
    if (j->done)
        j->done(j->ctx, j->arg, status);
    xd_module_release(j->ctx);
    xd_free(j);
}

int
xd_module_submit(xd_module_ctx_t *ctx, xd_module_work_fn work, xd_module_done_cb done, void *arg)
{
    if (!work)
        return XD_EINVAL;
    if (!xd_worker_self()) {
        /* Off the loops already (a pool thread, the control thread). */
        work(ctx, arg);
        if (done)
            done(ctx, arg, 0);
        return 0;
    }
    md_job_t *j = xd_new(md_job_t);
    *j = (md_job_t){ ctx, work, done, arg };
    xd_module_hold(ctx);
    int rc = xd_pool_submit(md_job_work, md_job_done, j);
    if (rc != 0) {
        xd_module_release(ctx);
        xd_free(j);
    }
    return rc;
}

void *
xd_module_state(const xd_module_ctx_t *ctx)
{
    return ctx->state;
}

void
xd_module_set_state(xd_module_ctx_t *ctx, void *state)
{
    ctx->state = state;
}

const xd_module_t *
xd_module_of(const xd_module_ctx_t *ctx)
{
    return ctx->mod;
}

int
xd_module_fail(xd_module_ctx_t *ctx, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    xd_free(ctx->fail);
    ctx->fail = xd_vasprintf(fmt, ap);
    va_end(ap);
    return code;
}

char *
xd_module_expand(const xd_module_ctx_t *ctx, const char *pattern)
{
    const char *at = strstr(pattern, "@HOST@");
    if (!at)
        return xd_strdup(pattern);
    return xd_asprintf("%.*s%s%s", (int)(at - pattern), pattern, ctx->host, at + 6);
}

char *
xd_module_service_domain(xd_module_ctx_t *ctx, const char *pattern)
{
    char *raw = xd_module_expand(ctx, pattern);
    char *domain = NULL;
    if (xd_jid_prep_domain(xd_str_c(raw), &domain) != 0) {
        xd_module_fail(ctx, XD_EINVAL, "host %s is not a domain", raw);
        domain = NULL;
    }
    xd_free(raw);
    return domain;
}

static md_reg_t *
md_reg_push(xd_module_ctx_t *ctx, md_reg_kind kind)
{
    if (ctx->nregs == ctx->cap) {
        ctx->cap = ctx->cap ? ctx->cap * 2 : 8;
        ctx->regs = xd_realloc(ctx->regs, ctx->cap * sizeof *ctx->regs);
    }
    md_reg_t *r = &ctx->regs[ctx->nregs++];
    *r = (md_reg_t){ .kind = kind };
    return r;
}

int
xd_module_iq(xd_module_ctx_t *ctx, xd_iq_target target, const char *ns,
             xd_iq_discipline discipline, xd_iq_fn fn, void *arg)
{
    int rc = xd_iq_register_ctx(ctx, ctx->host, target, ns, discipline, fn, arg);
    if (rc != 0)
        return rc;
    md_reg_t *r = md_reg_push(ctx, MD_REG_IQ);
    r->target = target;
    r->key = xd_strdup(ns);
    return 0;
}

int
xd_module_feature(xd_module_ctx_t *ctx, xd_iq_target target, const char *var)
{
    int rc = xd_iq_feature_add(ctx->host, target, var);
    if (rc != 0)
        return rc;
    md_reg_t *r = md_reg_push(ctx, MD_REG_IQ); /* undone by xd_iq_unregister too */
    r->target = target;
    r->key = xd_strdup(var);
    return 0;
}

int
xd_module_identity(xd_module_ctx_t *ctx, xd_iq_target target, const char *category,
                   const char *type, const char *name)
{
    int rc = xd_iq_identity_add(ctx->host, target, category, type, name);
    if (rc != 0)
        return rc;
    char key[512];
    md_reg_t *r = md_reg_push(ctx, MD_REG_IQ); /* undone by xd_iq_unregister */
    r->target = target;
    r->key = xd_strdup(xd_iq_identity_key(key, sizeof key, category, type));
    return 0;
}

int
xd_module_service(xd_module_ctx_t *ctx, const char *domain, xd_service_fn fn, void *arg)
{
    int rc = xd_service_add_ctx(ctx, domain, fn, arg);
    if (rc != 0)
        return rc;
    md_reg_t *r = md_reg_push(ctx, MD_REG_SERVICE);
    r->key = xd_strdup(domain);
    r->sfn = fn;
    return 0;
}

int
xd_module_hook_any(xd_module_ctx_t *ctx, xd_hook_id hook, int prio, xd_hook_fn_any fn, void *arg)
{
    int rc = xd_hook_add_any(hook, ctx->host, ctx, prio, fn, arg);
    if (rc != 0)
        return rc;
    md_reg_t *r = md_reg_push(ctx, MD_REG_HOOK);
    r->hook = hook;
    r->hfn = fn;
    r->arg = arg;
    return 0;
}

int
xd_module_command(xd_module_ctx_t *ctx, const xd_cmd_t *cmd)
{
    if (!cmd)
        return XD_EINVAL;
    md_cmdref_t *ref = NULL;
    for (size_t i = 0; i < md_ncmds; i++)
        if (md_cmds[i].cmd == cmd)
            ref = &md_cmds[i];
    if (!ref) {
        int rc = xd_cmd_register(cmd);
        if (rc != 0)
            return rc;
        md_cmds = xd_realloc(md_cmds, (md_ncmds + 1) * sizeof *md_cmds);
        ref = &md_cmds[md_ncmds++];
        *ref = (md_cmdref_t){ cmd, 0 };
    }
    ref->count++;
    md_reg_push(ctx, MD_REG_CMD)->cmd = cmd;
    return 0;
}

static void
md_cmd_release(const xd_cmd_t *cmd)
{
    for (size_t i = 0; i < md_ncmds; i++) {
        if (md_cmds[i].cmd != cmd)
            continue;
        if (--md_cmds[i].count == 0) {
            xd_cmd_unregister(cmd);
            md_cmds[i] = md_cmds[--md_ncmds];
        }
        return;
    }
}

/* Undoes every registration of ctx, newest first. */
static void
md_undo(xd_module_ctx_t *ctx)
{
    while (ctx->nregs > 0) {
        md_reg_t *r = &ctx->regs[--ctx->nregs];
        switch (r->kind) {
        case MD_REG_IQ: xd_iq_unregister(ctx->host, r->target, r->key); break;
        case MD_REG_SERVICE: xd_service_remove(r->key, r->sfn); break;
        case MD_REG_HOOK: xd_hook_remove_any(r->hook, ctx->host, ctx, r->hfn, r->arg); break;
        case MD_REG_CMD: md_cmd_release(r->cmd); break;
        }
        xd_free(r->key);
    }
}

static void
md_opts_free(const xd_module_t *mod, void *opts)
{
    if (!opts)
        return;
    xd_opt_free(mod->opts, opts);
    xd_free(opts);
}

/* After md_undo: waits until nothing of ctx runs or is queued any more. */
static void
md_wait_idle(xd_module_ctx_t *ctx)
{
    xd_hook_sync(); /* runs that took their snapshot before the undo */
    for (unsigned ms = 0; atomic_load(&ctx->busy) != 0; ms++) {
        if (ms == MD_IDLE_WAIT_MS) {
            /* Only at shutdown after the pool stopped can work never finish. */
            XD_LOG(NULL, XD_WARN, "module still busy at stop", "mod=%s host=%s calls=%u",
                   ctx->mod->name, ctx->host, atomic_load(&ctx->busy));
            break;
        }
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
}

static void
md_ctx_free(xd_module_ctx_t *ctx)
{
    md_undo(ctx); /* normally done already (md_stop_at) */
    md_opts_free(ctx->mod, atomic_load(&ctx->opts));
    for (size_t i = 0; i < ctx->nretired; i++)
        md_opts_free(ctx->mod, ctx->retired[i]);
    xd_free(ctx->retired);
    xd_free(ctx->regs);
    xd_free(ctx->host);
    xd_free(ctx->fail);
    xd_free(ctx);
}

/* ---- registry and loading ----------------------------------------------------------------- */

static bool
md_name_ok(const char *name)
{
    if (!name || !*name || strlen(name) > 64)
        return false;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return false;
    return true;
}

int
xd_module_register_builtin(const xd_module_t *mod)
{
    if (!mod || mod->abi != XD_MODULE_ABI || !md_name_ok(mod->name) || !mod->start ||
        (mod->opts && mod->opts_size == 0))
        return XD_EINVAL;
    /* Its tables are known before the database opens (xd_db_open migrates). */
    for (const xd_module_schema_t *sc = mod->schemas; sc && sc->component; sc++) {
        int rc = xd_db_register_migrations(sc->component, sc->migrations);
        if (rc != 0 && rc != XD_EEXIST)
            return rc;
    }
    pthread_mutex_lock(&md_lock);
    for (size_t i = 0; i < md_nbuiltin; i++)
        if (strcmp(md_builtin[i]->name, mod->name) == 0) {
            pthread_mutex_unlock(&md_lock);
            return XD_EEXIST;
        }
    md_builtin = xd_realloc(md_builtin, (md_nbuiltin + 1) * sizeof *md_builtin);
    md_builtin[md_nbuiltin++] = mod;
    pthread_mutex_unlock(&md_lock);
    return 0;
}

/* Built-ins are registered at start-up, before any thread reads them. */
size_t
xd_module_builtins(const xd_module_t **out, size_t max)
{
    for (size_t i = 0; i < md_nbuiltin && i < max; i++)
        out[i] = md_builtin[i];
    return md_nbuiltin;
}

static int
md_find(const char *dir, const char *name, const xd_module_t **out, char **err)
{
    for (size_t i = 0; i < md_nbuiltin; i++)
        if (strcmp(md_builtin[i]->name, name) == 0) {
            *out = md_builtin[i];
            return 0;
        }
    for (size_t i = 0; i < md_nlibs; i++)
        if (strcmp(md_libs[i].mod->name, name) == 0) {
            *out = md_libs[i].mod;
            return 0;
        }
    if (!md_name_ok(name)) {
        *err = xd_asprintf("unknown module '%s' (module names use a-z, 0-9 and _)", name);
        return XD_ENOTFOUND;
    }
    char *path = xd_asprintf("%s/%s.so", dir ? dir : ".", name);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *why = dlerror();
        bool missing = why && strstr(why, "No such file");
        *err = missing ? xd_asprintf("unknown module '%s' (not built in, no %s)", name, path)
                       : xd_asprintf("%s: cannot load: %s", path, why ? why : "?");
        xd_free(path);
        return missing ? XD_ENOTFOUND : XD_EINVAL;
    }
    const xd_module_t *mod = dlsym(h, "xd_module");
    if (!mod)
        mod = dlsym(h, "xmppd_module");
    const char *bad = NULL;
    char buf[160];
    if (!mod)
        bad = "exports neither xd_module nor xmppd_module";
    else if (mod->abi != XD_MODULE_ABI) {
        snprintf(buf, sizeof buf, "module ABI %u, this server needs %u (rebuild the module)",
                 mod->abi, XD_MODULE_ABI);
        bad = buf;
    } else if (!mod->name || strcmp(mod->name, name) != 0) {
        snprintf(buf, sizeof buf, "declares the name '%.64s', expected '%s'",
                 mod->name ? mod->name : "(null)", name);
        bad = buf;
    } else if (!mod->start || (mod->opts && mod->opts_size == 0))
        bad = "malformed declaration (no start, or opts without opts_size)";
    if (bad) {
        *err = xd_asprintf("%s: %s", path, bad);
        dlclose(h);
        xd_free(path);
        return XD_EINVAL;
    }
    md_libs = xd_realloc(md_libs, (md_nlibs + 1) * sizeof *md_libs);
    md_libs[md_nlibs++] = (md_lib_t){ path, h, mod };
    XD_LOG(NULL, XD_INFO, "module loaded", "mod=%s path=%s", name, path);
    *out = mod;
    return 0;
}

int
xd_module_find(const char *module_dir, const char *name, const xd_module_t **out, char **err)
{
    pthread_mutex_lock(&md_lock);
    int rc = md_find(module_dir, name, out, err);
    pthread_mutex_unlock(&md_lock);
    return rc;
}

/* ---- configuration walk --------------------------------------------------------------------- */

/* Calls fn for every module name enabled on host (global entries, then the
 * host's own that are not global).  Stops at the first non-zero return. */
static int
md_foreach_enabled(const xd_config_t *cfg, const char *host,
                   int (*fn)(void *arg, const xd_config_t *cfg, const char *host,
                             const xd_module_conf_t *mc),
                   void *arg)
{
    const xd_module_set_t *g = &cfg->global.modules;
    const xd_host_conf_t *hc = xd_config_host(cfg, host);
    for (size_t i = 0; i < g->count; i++) {
        const xd_module_conf_t *mc = xd_config_module(cfg, host, g->items[i].name);
        int rc = fn(arg, cfg, host, mc ? mc : &g->items[i]);
        if (rc != 0)
            return rc;
    }
    if (hc && &hc->modules != g) {
        for (size_t i = 0; i < hc->modules.count; i++) {
            bool global = false;
            for (size_t j = 0; j < g->count && !global; j++)
                global = strcmp(g->items[j].name, hc->modules.items[i].name) == 0;
            if (global)
                continue;
            int rc = fn(arg, cfg, host, &hc->modules.items[i]);
            if (rc != 0)
                return rc;
        }
    }
    /* Modules that run everywhere, listed or not: the unlisted ones with no
     * options. */
    for (size_t i = 0; i < md_nbuiltin; i++) {
        const xd_module_t *m = md_builtin[i];
        if (!(m->flags & XD_MODULE_ALWAYS) || xd_config_module(cfg, host, m->name))
            continue;
        xd_module_conf_t unlisted = { .name = (char *)m->name, .opts = NULL };
        int rc = fn(arg, cfg, host, &unlisted);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static const xd_module_t *
md_builtin_named(const char *name)
{
    for (size_t i = 0; i < md_nbuiltin; i++)
        if (strcmp(md_builtin[i]->name, name) == 0)
            return md_builtin[i];
    return NULL;
}

static bool
md_always(const char *name)
{
    const xd_module_t *m = md_builtin_named(name);
    return m && (m->flags & XD_MODULE_ALWAYS);
}

static bool
md_enabled(const xd_config_t *cfg, const char *host, const char *name)
{
    return xd_config_module(cfg, host, name) != NULL || md_always(name);
}

/* The options tree of name on host (NULL: listed without options, or an
 * unlisted XD_MODULE_ALWAYS module). */
static const xd_conf_node_t *
md_conf_opts(const xd_config_t *cfg, const char *host, const char *name)
{
    const xd_module_conf_t *mc = cfg ? xd_config_module(cfg, host, name) : NULL;
    return mc ? mc->opts : NULL;
}

static char *
md_prefix(const char *name)
{
    return xd_asprintf("modules.%s", name);
}

/* Parses the options of mc for mod into a new struct (*out, NULL without a table). */
static int
md_parse_opts(const xd_module_t *mod, const xd_module_conf_t *mc, void **out, char **err)
{
    *out = NULL;
    if (!mod->opts) {
        if (mc->opts && !xd_conf_is_null(mc->opts) && mc->opts->count > 0) {
            *err = xd_asprintf("%s:%u:%u: modules.%s: this module takes no options",
                               mc->opts->file, mc->opts->line, mc->opts->col, mod->name);
            return XD_ECONF_UNKNOWN;
        }
        return 0;
    }
    void *conf = xd_calloc(1, mod->opts_size);
    char *prefix = md_prefix(mod->name);
    int rc = xd_opt_parse_at(mod->opts, mc->opts, conf, prefix, err);
    xd_free(prefix);
    if (rc != 0) {
        xd_free(conf);
        return rc;
    }
    *out = conf;
    return 0;
}

typedef struct md_check {
    char *err;  /* first error (owned) */
    int rc;     /* its code */
} md_check_t;

static int
md_check_one(void *arg, const xd_config_t *cfg, const char *host, const xd_module_conf_t *mc)
{
    md_check_t *ck = arg;
    const xd_module_t *mod = NULL;
    int rc = md_find(cfg->module_dir, mc->name, &mod, &ck->err);
    if (rc == 0) {
        void *opts = NULL;
        rc = md_parse_opts(mod, mc, &opts, &ck->err);
        md_opts_free(mod, opts);
    }
    for (size_t i = 0; rc == 0 && mod->depends && mod->depends[i]; i++)
        if (!md_enabled(cfg, host, mod->depends[i])) {
            ck->err = xd_asprintf("modules.%s: needs %s, which is not enabled on host %s",
                                  mc->name, mod->depends[i], host);
            rc = XD_ECONF_MISSING;
        }
    ck->rc = rc;
    return rc;
}

static int
md_check(const xd_config_t *cfg, char **err)
{
    md_check_t ck = { 0 };
    for (size_t h = 0; h < cfg->hosts.count && ck.rc == 0; h++)
        md_foreach_enabled(cfg, cfg->hosts.items[h], md_check_one, &ck);
    if (ck.rc != 0) {
        if (err)
            *err = ck.err;
        else
            xd_free(ck.err);
    }
    return ck.rc;
}

int
xd_modules_check(const xd_config_t *cfg, char **err)
{
    pthread_mutex_lock(&md_lock);
    int rc = md_check(cfg, err);
    pthread_mutex_unlock(&md_lock);
    return rc;
}

/* ---- instances ----------------------------------------------------------------------------- */

static xd_module_ctx_t *
md_running(const char *name, const char *host)
{
    for (size_t i = 0; i < md_nrun; i++)
        if (strcmp(md_run[i]->mod->name, name) == 0 && strcmp(md_run[i]->host, host) == 0)
            return md_run[i];
    return NULL;
}

static char *
md_errmsg(xd_module_ctx_t *ctx, int rc)
{
    return xd_asprintf("%s on host %s: %s", ctx->mod->name, ctx->host,
                       ctx->fail ? ctx->fail : xd_strerror(rc));
}

/* Registers mod's storage components and brings the database up to date
 * (a .so loaded by a reload brings tables the database has not seen). */
static int
md_schemas(const xd_module_t *mod, char **err)
{
    if (!mod->schemas)
        return 0;
    bool fresh = false;
    for (const xd_module_schema_t *sc = mod->schemas; sc->component; sc++) {
        int rc = xd_db_register_migrations(sc->component, sc->migrations);
        if (rc == 0)
            fresh = true;
        else if (rc != XD_EEXIST) {
            *err = xd_asprintf("%s: storage component %s: %s", mod->name, sc->component,
                               xd_strerror(rc));
            return rc;
        }
    }
    xd_db_t *db = atomic_load(&md_db);
    if (!fresh || !db)
        return 0;
    /* Every database of the hosts (its own pool per host_config sql_*). */
    char *why = NULL;
    int rc = xd_db_hosts_count() ? xd_db_hosts_migrate(&why) : xd_db_migrate(db);
    if (rc != 0)
        *err = xd_asprintf("%s: cannot migrate its tables: %s", mod->name,
                           why ? why : xd_strerror(rc));
    xd_free(why);
    return rc;
}

/* Starts mod on host with mc's options and appends it to md_run. */
static int
md_start_instance(const xd_module_t *mod, const char *host, const xd_module_conf_t *mc,
                  char **err)
{
    xd_module_ctx_t *ctx = xd_new(xd_module_ctx_t);
    ctx->mod = mod;
    ctx->host = xd_strdup(host);
    void *opts = NULL;
    int rc = md_parse_opts(mod, mc, &opts, err);
    atomic_store(&ctx->opts, opts);
    if (rc == 0)
        rc = md_schemas(mod, err);
    if (rc != 0) {
        md_ctx_free(ctx);
        return rc;
    }
    rc = mod->start(ctx);
    if (rc != 0) {
        /* A start that fails has its registrations undone, no stop call. */
        *err = md_errmsg(ctx, rc);
        XD_LOG(NULL, XD_ERROR, "module start failed", "mod=%s host=%s error=\"%s\"", mod->name,
               host, *err);
        md_undo(ctx);
        md_wait_idle(ctx);
        if (ctx->state && mod->stop)
            mod->stop(ctx); /* what it set up before failing, now that nothing runs */
        md_ctx_free(ctx);
        return rc;
    }
    xd_free(ctx->fail);
    ctx->fail = NULL;
    if (md_nrun == md_caprun) {
        md_caprun = md_caprun ? md_caprun * 2 : 16;
        md_run = xd_realloc(md_run, md_caprun * sizeof *md_run);
    }
    md_run[md_nrun++] = ctx;
    md_idx_add(ctx);
    XD_LOG(NULL, XD_INFO, "module started", "mod=%s host=%s", mod->name, host);
    return 0;
}

static void
md_stop_at(size_t i)
{
    xd_module_ctx_t *ctx = md_run[i];
    md_idx_del(ctx);
    md_undo(ctx);
    md_wait_idle(ctx);
    if (ctx->mod->stop)
        ctx->mod->stop(ctx);
    XD_LOG(NULL, XD_INFO, "module stopped", "mod=%s host=%s", ctx->mod->name, ctx->host);
    md_ctx_free(ctx);
    memmove(&md_run[i], &md_run[i + 1], (md_nrun - i - 1) * sizeof *md_run);
    md_nrun--;
}

typedef struct md_start {
    char *err;       /* first error (owned) */
    int rc;          /* its code */
    unsigned depth;  /* dependency recursion depth (cycles) */
} md_start_t;

static int md_start_one(void *arg, const xd_config_t *cfg, const char *host,
                        const xd_module_conf_t *mc);

static int
md_start_named(md_start_t *st, const xd_config_t *cfg, const char *host, const char *name)
{
    const xd_module_conf_t *mc = xd_config_module(cfg, host, name);
    if (!mc) {
        st->err = xd_asprintf("%s is needed but not enabled on host %s", name, host);
        return st->rc = XD_ECONF_MISSING;
    }
    return md_start_one(st, cfg, host, mc);
}

static int
md_start_one(void *arg, const xd_config_t *cfg, const char *host, const xd_module_conf_t *mc)
{
    md_start_t *st = arg;
    if (md_running(mc->name, host))
        return 0;
    const xd_module_t *mod = NULL;
    int rc = md_find(cfg->module_dir, mc->name, &mod, &st->err);
    if (rc != 0)
        return st->rc = rc;
    if (++st->depth > 32) {
        st->err = xd_asprintf("modules.%s: dependency cycle", mc->name);
        return st->rc = XD_EINVAL;
    }
    for (size_t i = 0; mod->depends && mod->depends[i]; i++)
        if (md_start_named(st, cfg, host, mod->depends[i]) != 0) {
            st->depth--;
            return st->rc;
        }
    st->depth--;
    rc = md_start_instance(mod, host, mc, &st->err);
    return st->rc = rc;
}

/* Starts every enabled, not yet running instance of cfg.  On error, stops
 * the ones this call started. */
static int
md_start_all(const xd_config_t *cfg, char **err)
{
    size_t before = md_nrun;
    md_start_t st = { 0 };
    for (size_t h = 0; h < cfg->hosts.count && st.rc == 0; h++)
        md_foreach_enabled(cfg, cfg->hosts.items[h], md_start_one, &st);
    if (st.rc != 0) {
        while (md_nrun > before)
            md_stop_at(md_nrun - 1);
        if (err)
            *err = st.err;
        else
            xd_free(st.err);
    }
    return st.rc;
}

int
xd_modules_start(const xd_config_t *cfg, char **err)
{
    pthread_mutex_lock(&md_lock);
    int rc = md_start_all(cfg, err);
    if (rc == 0) {
        if (md_cfg)
            xd_config_unref(md_cfg);
        md_cfg = xd_config_ref((xd_config_t *)cfg);
    }
    pthread_mutex_unlock(&md_lock);
    return rc;
}

/* Structural equality of two option trees (NULL and null are equal). */
static bool
md_node_equal(const xd_conf_node_t *a, const xd_conf_node_t *b)
{
    bool an = !a || xd_conf_is_null(a), bn = !b || xd_conf_is_null(b);
    if (an || bn)
        return an && bn;
    if (a->kind != b->kind || a->count != b->count)
        return false;
    if (a->kind == XD_CONF_SCALAR)
        return a->len == b->len && memcmp(a->value, b->value, a->len) == 0 &&
               a->quoted == b->quoted;
    for (size_t i = 0; i < a->count; i++) {
        if (a->kind == XD_CONF_MAP && !md_node_equal(a->keys[i], b->keys[i]))
            return false;
        if (!md_node_equal(a->items[i], b->items[i]))
            return false;
    }
    return true;
}

int
xd_modules_reload(const xd_config_t *cfg, char **err)
{
    pthread_mutex_lock(&md_lock);
    int rc = md_check(cfg, err);
    if (rc != 0) {
        pthread_mutex_unlock(&md_lock);
        return rc;
    }
    /* 1. Instances no longer enabled stop (newest first: dependants before
     *    their dependencies). */
    for (size_t i = md_nrun; i-- > 0;) {
        xd_module_ctx_t *ctx = md_run[i];
        if (!xd_config_is_host(cfg, ctx->host) || !md_enabled(cfg, ctx->host, ctx->mod->name))
            md_stop_at(i);
    }
    /* 2. Changed options: reload, or stop now and start again in step 3. */
    for (size_t i = md_nrun; i-- > 0;) {
        xd_module_ctx_t *ctx = md_run[i];
        const xd_conf_node_t *oldo = md_conf_opts(md_cfg, ctx->host, ctx->mod->name);
        const xd_conf_node_t *newo = md_conf_opts(cfg, ctx->host, ctx->mod->name);
        if (md_cfg && md_node_equal(oldo, newo))
            continue;
        xd_module_conf_t newc_ = { .name = (char *)ctx->mod->name, .opts = newo };
        const xd_module_conf_t *newc = &newc_;
        if (!ctx->mod->reload) {
            md_stop_at(i);
            continue;
        }
        void *nopts = NULL;
        rc = md_parse_opts(ctx->mod, newc, &nopts, err); /* checked above: cannot fail */
        if (rc != 0)
            break;
        void *old = atomic_exchange(&ctx->opts, nopts);
        rc = ctx->mod->reload(ctx, old);
        /* Handlers on other threads may have read either set: both stay
         * until the instance stops. */
        ctx->retired = xd_realloc(ctx->retired, (ctx->nretired + 1) * sizeof *ctx->retired);
        if (rc != 0) {
            /* The instance keeps running with its old options. */
            atomic_store(&ctx->opts, old);
            ctx->retired[ctx->nretired++] = nopts;
            if (err)
                *err = md_errmsg(ctx, rc);
            xd_free(ctx->fail);
            ctx->fail = NULL;
            break;
        }
        ctx->retired[ctx->nretired++] = old;
        XD_LOG(NULL, XD_INFO, "module reloaded", "mod=%s host=%s", ctx->mod->name, ctx->host);
    }
    /* 3. Start what is enabled and not running (new, or stopped in 2). */
    if (rc == 0) {
        md_start_t st = { 0 };
        for (size_t h = 0; h < cfg->hosts.count && st.rc == 0; h++)
            md_foreach_enabled(cfg, cfg->hosts.items[h], md_start_one, &st);
        rc = st.rc;
        if (rc != 0 && err)
            *err = st.err;
        else
            xd_free(st.err);
    }
    if (md_cfg)
        xd_config_unref(md_cfg);
    md_cfg = xd_config_ref((xd_config_t *)cfg);
    pthread_mutex_unlock(&md_lock);
    return rc;
}

void
xd_modules_stop(void)
{
    pthread_mutex_lock(&md_lock);
    while (md_nrun > 0)
        md_stop_at(md_nrun - 1);
    xd_free(md_run);
    md_run = NULL;
    md_caprun = 0;
    xd_free(md_cmds);
    md_cmds = NULL;
    md_ncmds = 0;
    /* No hook run may still be inside a module's code when it is unmapped. */
    xd_hook_sync();
    for (size_t i = 0; i < md_nlibs; i++) {
        dlclose(md_libs[i].handle);
        xd_free(md_libs[i].path);
    }
    xd_free(md_libs);
    md_libs = NULL;
    md_nlibs = 0;
    if (md_cfg)
        xd_config_unref(md_cfg);
    md_cfg = NULL;
    pthread_mutex_unlock(&md_lock);
}

const char *
xd_server_version(void)
{
    return XD_VERSION;
}

void
xd_modules_set_db(xd_db_t *db)
{
    atomic_store(&md_db, db);
}

size_t
xd_modules_running(const char *name)
{
    pthread_mutex_lock(&md_lock);
    size_t n = 0;
    for (size_t i = 0; i < md_nrun; i++)
        if (!name || strcmp(md_run[i]->mod->name, name) == 0)
            n++;
    pthread_mutex_unlock(&md_lock);
    return n;
}

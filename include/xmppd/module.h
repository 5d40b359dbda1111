/*
 * module.h — the module API (DESIGN.md 5; STYLE.md 3.3; ejabberd gen_mod,
 * Prosody moduleapi).
 *
 * A module is one static xd_module_t: name, one-line doc, dependencies, an
 * option table (opt.h) and start/stop/reload.  Built-in modules are
 * registered with xd_module_register_builtin(); any other name listed under
 * `modules:` is loaded from `<module_dir>/<name>.so`, which must export the
 * symbol `xd_module` (or `xmppd_module`) of type xd_module_t with
 * abi == XD_MODULE_ABI.
 *
 *   static int echo_start(xd_module_ctx_t *ctx) {
 *       const struct echo_conf *c = xd_module_opts(ctx);
 *       return xd_module_service(ctx, c->host, echo_route, NULL);
 *   }
 *   XD_MODULE_EXPORT = { .abi = XD_MODULE_ABI, .name = "mod_echo", .doc = "…",
 *                        .opts = echo_opts, .opts_size = sizeof(struct echo_conf),
 *                        .start = echo_start };
 *
 * Per host: start runs once for every served host whose `modules:` (after
 * host_config merging) lists the module (or every host for a module with
 * XD_MODULE_ALWAYS), with a context of its own.  The context records every
 * registration made through the xd_module_* helpers below and undoes
 * them, in reverse order, before stop (or after a failed start); then the
 * manager waits until no handler of the instance runs and no work it
 * submitted is in flight, and only then calls stop: stop frees what the
 * module allocated itself, and nothing of the module runs any more.
 *
 * Handlers get the context: IQ handlers in req->ctx, hook handlers and
 * service handlers as their first argument, work submitted with
 * xd_module_submit likewise.  So a module keeps its per-host state in the
 * context (xd_module_set_state in start) and reads its options from it
 * (xd_module_opts), from any thread, without a map of its own.
 *
 * A start that fails (returns an error) has its registrations undone and
 * waited for like a stop; then stop is called only if the start had set a
 * state (xd_module_set_state), so that state set before the first
 * registration is freed in one place, stop.
 *
 * Lifecycle (main.c): xd_modules_check for --check-config and before a
 * reload; xd_modules_start once at start-up; xd_modules_reload on a config
 * reload; xd_modules_stop at shutdown.  These run on one thread at a time
 * (the main thread or the reload thread), never on a worker loop; the
 * handlers a module registers run on workers (IQ INLINE, services, hooks) or
 * the blocking pool (IQ PARALLEL).
 */
#ifndef XMPPD_MODULE_H
#define XMPPD_MODULE_H

#include <stddef.h>

#include "xmppd/cmd.h"
#include "xmppd/config.h"
#include "xmppd/hooks.h"
#include "xmppd/iq.h"
#include "xmppd/jid_opt.h"
#include "xmppd/opt.h"
#include "xmppd/service.h"
#include "xmppd/storage.h"

/* Bumped whenever xd_module_t or the API a module sees changes incompatibly. */
#define XD_MODULE_ABI 2u

typedef struct xd_module_ctx xd_module_ctx_t; /* one per (module, host); opaque */

/* Tables a module keeps: the migrations of one storage component
 * (storage.h), applied before the module first starts. */
typedef struct xd_module_schema {
    const char *component;                /* "mod_roster"; NULL ends the list */
    const xd_db_migration_t *migrations;  /* {0}-terminated; outlives the process */
} xd_module_schema_t;

/* xd_module_t.flags */
enum {
    XD_MODULE_ALWAYS = 1u << 0, /* a built-in that runs on every served host; listing it only
                                 * sets options (a .so runs where it is listed) */
};

typedef struct xd_module {
    unsigned abi;                /* XD_MODULE_ABI, checked when loading a .so */
    const char *name;            /* "mod_echo": the key under `modules:` */
    const char *doc;             /* one line */
    const char *const *depends;  /* NULL-terminated names, started first, or NULL */
    const xd_opt_t *opts;        /* option table (opt.h), XD_OPT_END-terminated, or NULL */
    size_t opts_size;            /* sizeof the struct the table fills (0 without opts) */
    const xd_module_schema_t *schemas; /* {NULL}-terminated storage components, or NULL */
    unsigned flags;              /* XD_MODULE_* */
    int (*start)(xd_module_ctx_t *ctx); /* per host: 0, or an XD_E* code (+ xd_module_fail) */
    void (*stop)(xd_module_ctx_t *ctx); /* per host, may be NULL */
    int (*reload)(xd_module_ctx_t *ctx, const void *old_opts); /* optional; NULL = stop+start */
} xd_module_t;

/* The one symbol a .so module exports. */
#define XD_MODULE_EXPORT __attribute__((visibility("default"))) const xd_module_t xd_module

/* ---- what a module calls on its context (from start/stop/reload) --------------------------- */

/* The host this instance serves (normalised). */
const char *xd_module_host(const xd_module_ctx_t *ctx);
/* The parsed options (a struct of opts_size bytes filled by the table), or
 * NULL without a table.  Immutable; replaced before reload is called.  Any
 * thread: options a handler read before a reload stay valid until the
 * instance stops. */
const void *xd_module_opts(const xd_module_ctx_t *ctx);
/* The module's per-host state pointer (NULL until set). */
void *xd_module_state(const xd_module_ctx_t *ctx);
void xd_module_set_state(xd_module_ctx_t *ctx, void *state);
/* The module's declaration. */
const xd_module_t *xd_module_of(const xd_module_ctx_t *ctx);

/* Keeps the instance from stopping while a call of its own is outstanding
 * (an auth backend's callback, a timer): one xd_module_release for each
 * xd_module_hold.  Any thread; NULL is a no-op.  IQ, hook and service
 * handlers and xd_module_submit work need none: the server holds for them. */
void xd_module_hold(xd_module_ctx_t *ctx);
void xd_module_release(xd_module_ctx_t *ctx);

/* The running instance of module `name` on `host`, held (release it with
 * xd_module_release), or NULL when it does not run there.  For a module
 * that serves several hosts and must act for another one (the contact's
 * roster on another local host).  Any thread; never blocks on a start or
 * stop in progress. */
xd_module_ctx_t *xd_module_instance(const char *name, const char *host);

/* The database of the instance's host: its own when its host_config sets
 * sql_* options, else the top level's (hosts naming the same database share
 * one pool).  With ctx NULL, the first host's.  NULL when the server runs
 * without one (tests).  Code that acts for another host uses that host's
 * instance (xd_module_instance) and its database. */
xd_db_t *xd_module_db(const xd_module_ctx_t *ctx);

/* Blocking work for the instance: work(ctx, arg) runs on the blocking pool
 * and may block; done(ctx, arg, status) runs afterwards on the worker loop
 * that submitted it (status 0, or XD_ECANCELED when the server stopped
 * before work ran; work is then not called).  The instance does not stop
 * while work is in flight.  Called off the worker loops (a pool thread, the
 * control thread), both run at once on the calling thread.  0, or XD_EFULL
 * (the pool's queue is full: answer resource-constraint) / XD_ECLOSED; on
 * error neither callback is called. */
typedef void (*xd_module_work_fn)(xd_module_ctx_t *ctx, void *arg);
typedef void (*xd_module_done_cb)(xd_module_ctx_t *ctx, void *arg, int status);
int xd_module_submit(xd_module_ctx_t *ctx, xd_module_work_fn work, xd_module_done_cb done,
                     void *arg);

/* A start/reload failure message, returned to the operator through the
 * lifecycle call's err ("mod_x on host h: <message>").  Returns `code`. */
int xd_module_fail(xd_module_ctx_t *ctx, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Registrations, recorded in ctx and undone after stop.  Each returns what
 * the underlying call returns (0 or an XD_E* code: then nothing was
 * recorded). */

/* xd_iq_register(host of ctx, target, ns, discipline, fn, arg) (iq.h); the
 * handler gets ctx in req->ctx. */
int xd_module_iq(xd_module_ctx_t *ctx, xd_iq_target target, const char *ns,
                 xd_iq_discipline discipline, xd_iq_fn fn, void *arg);
/* xd_iq_feature_add(host of ctx, target, var) (iq.h): a disco#info
 * feature of the server (XD_IQ_HOST) or of its accounts (XD_IQ_USER) that
 * no IQ handler of the module stands for. */
int xd_module_feature(xd_module_ctx_t *ctx, xd_iq_target target, const char *var);
/* xd_iq_identity_add(host of ctx, target, category, type, name) (iq.h): a
 * disco#info identity the module gives the server or its accounts. */
int xd_module_identity(xd_module_ctx_t *ctx, xd_iq_target target, const char *category,
                       const char *type, const char *name);
/* xd_service_add(domain, fn, arg) (service.h): a domain served by the
 * module; fn gets ctx. */
int xd_module_service(xd_module_ctx_t *ctx, const char *domain, xd_service_fn fn, void *arg);
/* A hook handler on the host of ctx, getting ctx: the typed macro
 * xd_module_hook(ctx, XD_HOOK_<ID>, prio, fn, arg) of hooks.h. */
/* xd_cmd_register(cmd) (cmd.h).  Commands are global: a module started on
 * several hosts registers cmd once and removes it when the last instance
 * stops.  cmd must outlive the module (static data of the module). */
int xd_module_command(xd_module_ctx_t *ctx, const xd_cmd_t *cmd);

/* For a command's handler that acts on a host's instance (pep_stats HOST):
 * the running instance of module `name` on `host` once its start has set
 * its state (xd_module_state), held (release it with xd_module_release);
 * or NULL with the call's error set ("NAME does not run on HOST"), for the
 * handler to return XD_ENOTFOUND.  A module that sets no state uses
 * xd_module_instance. */
xd_module_ctx_t *xd_module_cmd_instance(xd_cmd_call_t *call, const char *name, const char *host);

/* The server's version ("0.1.0"). */
const char *xd_server_version(void);

/* `pattern` with its "@HOST@" replaced by the instance's host (xd_free
 * it): a service's domain option ("conference.@HOST@"), a path or URL that
 * names the host. */
char *xd_module_expand(const xd_module_ctx_t *ctx, const char *pattern);

/* The domain a service of the instance answers on: xd_module_expand of
 * `pattern`, prepared as a JID's domain part (xd_free it).  NULL when it
 * is not a domain, with xd_module_fail already said ("host X is not a
 * domain"): the start returns XD_EINVAL. */
char *xd_module_service_domain(xd_module_ctx_t *ctx, const char *pattern);

/* ---- registry ------------------------------------------------------------------------------- */

/* Makes `mod` (static, outlives the process) available by name.  XD_EEXIST
 * when the name is taken, XD_EINVAL for a bad declaration. */
int xd_module_register_builtin(const xd_module_t *mod);

/* Copies up to max registered built-in modules into out (registration
 * order); returns how many there are. */
size_t xd_module_builtins(const xd_module_t **out, size_t max);

/* Finds module `name`: a built-in, else loads <module_dir>/<name>.so
 * (kept loaded until xd_modules_stop).  On error *err names the file
 * ("…/mod_x.so: ABI 7, this server needs 1"). */
int xd_module_find(const char *module_dir, const char *name, const xd_module_t **out, char **err);

/* ---- lifecycle (main.c) ---------------------------------------------------------------------- */

/* Checks cfg: every listed name is a known module (built-in or a .so in
 * module_dir), its options parse, and its dependencies are enabled on the
 * same host.  0, or an XD_E* code with *err (malloc'd). */
int xd_modules_check(const xd_config_t *cfg, char **err);

/* Starts, per served host, every module cfg enables there, dependencies
 * first.  On failure, stops what it started and returns the error with
 * *err.  cfg must stay referenced until xd_modules_stop/the next reload
 * (the option trees live in it); the module manager takes its own ref. */
int xd_modules_start(const xd_config_t *cfg, char **err);

/* Moves the running modules to cfg: instances no longer listed stop,
 * new ones start, changed options reload (or stop+start without reload).
 * On a start error the error is returned (already running instances stay;
 * the ones that failed are not running). */
int xd_modules_reload(const xd_config_t *cfg, char **err);

/* Stops every instance (reverse start order) and unloads the .so files. */
void xd_modules_stop(void);

/* The database xd_module_db gives for a NULL ctx, and for every host when
 * the storage layer has no pools open (tests); set before xd_modules_start,
 * NULL after xd_modules_stop.  The schemas of every module are applied to
 * every open database before the module first starts. */
void xd_modules_set_db(xd_db_t *db);

/* Running instances of module `name` (tests, status). */
size_t xd_modules_running(const char *name);

#endif

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
 * host_config merging) lists the module, with a context of its own.  The
 * context records every registration made through the xd_module_* helpers
 * below and undoes them, in reverse order, after stop (or after a failed
 * start): stop only frees what the module allocated itself.
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

/* Bumped whenever xd_module_t or the API a module sees changes incompatibly. */
#define XD_MODULE_ABI 2u

typedef struct xd_module_ctx xd_module_ctx_t; /* one per (module, host); opaque */

typedef struct xd_module {
    unsigned abi;                /* XD_MODULE_ABI, checked when loading a .so */
    const char *name;            /* "mod_echo": the key under `modules:` */
    const char *doc;             /* one line */
    const char *const *depends;  /* NULL-terminated names, started first, or NULL */
    const xd_opt_t *opts;        /* option table (opt.h), XD_OPT_END-terminated, or NULL */
    size_t opts_size;            /* sizeof the struct the table fills (0 without opts) */
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
 * NULL without a table.  Immutable; replaced before reload is called. */
const void *xd_module_opts(const xd_module_ctx_t *ctx);
/* The module's per-host state pointer (NULL until set). */
void *xd_module_state(const xd_module_ctx_t *ctx);
void xd_module_set_state(xd_module_ctx_t *ctx, void *state);
/* The module's declaration. */
const xd_module_t *xd_module_of(const xd_module_ctx_t *ctx);

/* A start/reload failure message, returned to the operator through the
 * lifecycle call's err ("mod_x on host h: <message>").  Returns `code`. */
int xd_module_fail(xd_module_ctx_t *ctx, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Registrations, recorded in ctx and undone after stop.  Each returns what
 * the underlying call returns (0 or an XD_E* code: then nothing was
 * recorded). */

/* xd_iq_register(host of ctx, target, ns, discipline, fn, arg) (iq.h). */
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
/* xd_service_add(domain, fn, arg) (service.h): a domain served by the module. */
int xd_module_service(xd_module_ctx_t *ctx, const char *domain, xd_service_fn fn, void *arg);
/* xd_hook_add(hook, host of ctx, prio, fn, arg) (hooks.h). */
int xd_module_hook(xd_module_ctx_t *ctx, xd_hook_id hook, int prio, xd_hook_fn fn, void *arg);
/* xd_cmd_register(cmd) (cmd.h).  Commands are global: a module started on
 * several hosts registers cmd once and removes it when the last instance
 * stops.  cmd must outlive the module (static data of the module). */
int xd_module_command(xd_module_ctx_t *ctx, const xd_cmd_t *cmd);

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

/* Checks cfg: every listed name is a known module (built-in, a .so in
 * module_dir, or one the core serves itself: mod_register, mod_offline,
 * mod_disco, mod_ping, mod_version, mod_time), its options parse, and its dependencies
 * are enabled on the same host.  0, or an XD_E* code with *err (malloc'd). */
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

/* Running instances of module `name` (tests, status). */
size_t xd_modules_running(const char *name);

#endif

/*
 * main.c — the xmppd process: command line, start-up, signals, shutdown.
 *
 * Threads:  the main thread runs a small libuv loop for signals and the
 * control socket; `workers` threads run the streams (src/core/worker.h);
 * the blocking pool runs storage and other blocking work (src/core/pool.h).
 *
 * Start:    config → log → data dir → storage + migrations → pool →
 *           listeners probed → workers (each opens its listeners) →
 *           control socket → "xmppd ready".
 * Stop:     SIGTERM/SIGINT or `xmppctl stop` → control socket closed →
 *           workers close listeners and stop reading streams → the work
 *           in flight finishes (offline stores, roster writes: at most
 *           STOP_DRAIN_MS) → workers close streams (system-shutdown) →
 *           workers joined → pool stopped → storage closed → "xmppd
 *           stopped", exit 0.  Nothing a sender was answered for is lost.
 * SIGHUP:   reopen the log file, reload the configuration: everything read
 *           per use follows; a file that changes what is set up once at
 *           start (XD_OPT_RESTART options: listeners, data_dir, storage,
 *           workers, …), an empty file and one that drops every host are
 *           refused as a whole (xd_config_check_reload), with a log line
 *           per reason.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <pthread.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <openssl/crypto.h>

#include "core/ctl.h"
#include "xmppd/cmd.h"
#include "core/pool.h"
#include "core/secret.h"
#include "core/worker.h"
#include "auth/commands.h"
#include "mod/builtin.h"
#include "router/pie.h"
#include "router/router.h"
#include "router/session.h"
#include "s2s/component.h"
#include "s2s/s2s.h"
#include "http/http_int.h"
#include "router/sm.h"
#include "stream/c2s.h"
#include "stream/conn.h"
#include "stream/listener.h"
#include "stream/tls.h"
#include "storage/dbhosts.h"
#include "xmppd/auth.h"
#include "xmppd/iq.h"
#include "xmppd/service.h"
#include "xd_version.h"
#include "xmppd/acl.h"
#include "xmppd/alloc.h"
#include "xmppd/config.h"
#include "xmppd/hooks.h"
#include "xmppd/err.h"
#include "xmppd/log.h"
#include "xmppd/module.h"
#include "xmppd/storage.h"

static uv_loop_t *main_loop;
static uv_signal_t sig_term, sig_int, sig_hup;
static const char *config_path;   /* NULL: built-in defaults */
static bool stopping;

/* Stop: how long the work in flight may take before streams close. */
#define STOP_DRAIN_MS 10000
/* ... and the work their closing starts (the workers' grace period). */
#define STOP_SETTLE_MS 5000
static uint64_t started_ms;

static void
usage(FILE *out)
{
    fprintf(out,
            "Usage: xmppd [OPTION]...\n"
            "\n"
            "An XMPP server.\n"
            "\n"
            "  -c, --config FILE   configuration file (YAML); without one, xmppd runs on\n"
            "                      built-in defaults: domain localhost, data under ./var,\n"
            "                      client connections on 127.0.0.1:5222 and [::1]:5222\n"
            "      --check-config  check the configuration and exit (0 = valid)\n"
            "      --version       print the version and exit\n"
            "  -h, --help          this text\n"
            "\n"
            "Signals: TERM/INT stop gracefully; HUP reopens the log and reloads the\n"
            "configuration.  Administration: xmppctl(1).\n");
}

static int
load_config(xd_config_t **out)
{
    char *err = NULL;
    /* Without a file: the built-in defaults (DESIGN.md 6) plus the modules
     * an IM server is expected to run. */
    static const char builtin[] = "modules:\n"
                                  "  mod_roster: {}\n"
                                  "  mod_offline: {}\n"
                                  "  mod_vcard: {}\n"
                                  "  mod_private: {}\n"
                                  "  mod_blocking: {}\n"
                                  "  mod_privacy: {}\n"
                                  "  mod_stanza_id: {}\n"
                                  "  mod_last: {}\n";
    int rc = config_path ? xd_config_load(config_path, out, &err)
                         : xd_config_load_string("(built-in defaults)", builtin,
                                                 sizeof builtin - 1, out, &err);
    if (rc != 0) {
        fprintf(stderr, "%s\n", err ? err : xd_strerror(rc));
        free(err);
    }
    return rc;
}

/* ---- shutdown and reload ----------------------------------------------- */

static void
begin_stop(const char *why)
{
    if (stopping)
        return;
    stopping = true;
    XD_LOG(NULL, XD_NOTICE, "xmppd stopping", "reason=%s", why);
    xd_ctl_stop();
    uv_close((uv_handle_t *)&sig_hup, NULL);
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
    /* Closing the watchers restored the default action; a second TERM or
     * INT while streams close must not kill the process half-way. */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    xd_workers_stop();
}

/* Loads the certificate store for cfg and installs it for the c2s.
 * Off-loop (reads files, may generate a key). */
static int
load_tls(const xd_config_t *cfg, char **err)
{
    const char **hosts = xd_calloc(cfg->hosts.count + 1, sizeof *hosts);
    for (size_t i = 0; i < cfg->hosts.count; i++)
        hosts[i] = cfg->hosts.items[i];
    xd_tls_store_opts_t o = {
        .certfiles = (const char *const *)cfg->certfiles.items,
        .ncertfiles = cfg->certfiles.count,
        .hosts = hosts,
        .nhosts = cfg->hosts.count,
        .data_dir = cfg->data_dir,
        .min_version = cfg->tls_min_version == 13 ? "1.3" : "1.2",
        .ciphers = cfg->tls_ciphers,
        .ciphersuites = cfg->tls_ciphersuites,
        .ca_file = cfg->ca_file,
        .ca_path = cfg->ca_path,
    };
    xd_tls_store_t *st = NULL;
    int rc = xd_tls_store_load(&o, &st, err);
    xd_free(hosts);
    if (rc != 0)
        return rc;
    size_t n = 0;
    const char *const *warn = xd_tls_store_warnings(st, &n);
    for (size_t i = 0; i < n; i++)
        XD_LOG(NULL, XD_WARN, "certificate warning", "detail=\"%s\"", warn[i]);
    const xd_tls_selfsigned_t *ss = xd_tls_store_selfsigned(st, &n);
    for (size_t i = 0; i < n; i++)
        XD_LOG(NULL, XD_WARN,
               ss[i].created ? "self-signed certificate created" : "using self-signed certificate",
               "host=%s path=%s hint=\"clients will not trust it; set certfiles to a "
               "certificate from a CA\"",
               ss[i].host, ss[i].path);
    XD_LOG(NULL, XD_NOTICE, "certificates loaded", "count=%zu", xd_tls_store_count(st));
    xd_conn_set_tls_store(st);
    return 0;
}

/* One log line per reason a reload was refused ("file:line:col: option: why"). */
static void
reload_log_refused(const char *err)
{
    const char *p = err ? err : "?";
    for (;;) {
        const char *nl = strchr(p, '\n');
        int n = nl ? (int)(nl - p) : (int)strlen(p);
        XD_LOG(NULL, XD_ERROR, "config reload refused", "file=%s reason=\"%.*s\"", config_path,
               n, p);
        if (!nl)
            break;
        p = nl + 1;
    }
}

/* Re-reads the configuration and reopens the log.  Off-loop (it may load
 * certificates and restart auth scripts); one reload at a time.  call may
 * be NULL (SIGHUP). */
static int
reload(xd_cmd_call_t *call)
{
    static pthread_mutex_t reload_lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&reload_lock);
    int rc = xd_log_reopen();
    if (rc != 0)
        XD_LOG(NULL, XD_ERROR, "log reopen failed", "err=%s", xd_strerror(rc));
    if (!config_path) {
        XD_LOG(NULL, XD_NOTICE, "config reloaded", "source=defaults");
        pthread_mutex_unlock(&reload_lock);
        return 0;
    }
    xd_config_t *cfg = NULL;
    char *err = NULL;
    rc = xd_config_load(config_path, &cfg, &err);
    if (rc != 0) {
        /* A bad file never replaces a good configuration. */
        XD_LOG(NULL, XD_ERROR, "config reload failed", "file=%s error=\"%s\"", config_path,
               err ? err : xd_strerror(rc));
        if (call)
            xd_cmd_errorf(call, rc, "%s", err ? err : xd_strerror(rc));
        free(err);
        pthread_mutex_unlock(&reload_lock);
        return rc == XD_EINVAL ? XD_ECONF_SYNTAX : rc;
    }
    /* What cannot change while running (listeners, data_dir, storage, …),
     * an empty file and one that drops every host refuse the whole reload:
     * nothing is half-applied. */
    xd_config_t *running = xd_config_get();
    rc = running ? xd_config_check_reload(running, cfg, &err) : 0;
    xd_config_unref(running);
    if (rc != 0) {
        reload_log_refused(err);
        if (call)
            xd_cmd_errorf(call, rc, "%s\nreload refused: the running configuration stays in "
                                    "force", err ? err : xd_strerror(rc));
        free(err);
        xd_config_unref(cfg);
        pthread_mutex_unlock(&reload_lock);
        return rc;
    }
    /* Modules, auth backends and certificates first: if they fail, nothing
     * changes. */
    if ((rc = xd_s2s_check_config(cfg, &err)) != 0 ||
        (rc = xd_db_hosts_update(cfg, &err)) != 0 || (rc = xd_auth_reload(cfg, &err)) != 0 ||
        (rc = load_tls(cfg, &err)) != 0 || (rc = xd_modules_reload(cfg, &err)) != 0) {
        XD_LOG(NULL, XD_ERROR, "config reload failed", "file=%s error=\"%s\"", config_path,
               err ? err : xd_strerror(rc));
        if (call)
            xd_cmd_errorf(call, rc, "%s", err ? err : xd_strerror(rc));
        free(err);
        xd_config_unref(cfg);
        pthread_mutex_unlock(&reload_lock);
        return rc;
    }
    xd_log_set_level(xd_config_loglevel(cfg));
    xd_s2s_configure(cfg);
    xd_config_publish(cfg);
    XD_LOG(NULL, XD_NOTICE, "config reloaded", "file=%s", config_path);
    pthread_mutex_unlock(&reload_lock);
    return 0;
}

static void
sighup_work(uv_work_t *req)
{
    (void)req;
    reload(NULL);
}

static void
sighup_done(uv_work_t *req, int status)
{
    (void)status;
    xd_free(req);
}

static void
on_signal(uv_signal_t *h, int signum)
{
    if (signum == SIGHUP) {
        uv_work_t *req = xd_new(uv_work_t);
        if (uv_queue_work(h->loop, req, sighup_work, sighup_done) != 0)
            xd_free(req);
    } else {
        begin_stop(signum == SIGTERM ? "SIGTERM" : "SIGINT");
    }
}

/* ---- control commands --------------------------------------------------- */

/* One line per database pool (its hosts named), for cmd_status. */
static void
status_pool(void *arg, xd_db_t *db, const char *label, const char *const *hosts, size_t nhosts)
{
    xd_cmd_call_t *call = arg;
    /* The pool's health (its lock is held only for bookkeeping). */
    xd_db_status_t st;
    xd_db_status(db, &st);
    xd_cmd_printf(call,
                  "database %s %s open=%u idle=%u busy=%u max=%u failures=%llu "
                  "reconnects=%llu name=\"%s\" hosts=",
                  st.driver, st.up ? "up" : "down", st.open, st.idle, st.busy, st.max,
                  (unsigned long long)st.failures, (unsigned long long)st.reconnects, label);
    /* The served ones: a host a reload removed stays in the pool's list. */
    bool first = true;
    for (size_t i = 0; i < nhosts; i++)
        if (xd_config_is_host(call->cfg, hosts[i])) {
            xd_cmd_printf(call, "%s%s", first ? "" : ",", hosts[i]);
            first = false;
        }
    xd_cmd_printf(call, "%s%s%s\n", st.last_error[0] ? " last_error=\"" : "", st.last_error,
                  st.last_error[0] ? "\"" : "");
}

static int
cmd_status(xd_cmd_call_t *call)
{
    uint64_t up = (uv_now(main_loop) - started_ms) / 1000;
    xd_cmd_printf(call, "xmppd %s is running (pid %d, up %llus, %u workers)\n", XD_VERSION,
                  (int)getpid(), (unsigned long long)up, xd_workers_count());
    for (size_t i = 0; i < xd_config_host_count(call->cfg); i++)
        xd_cmd_printf(call, "host %s\n", xd_config_host_name(call->cfg, i));
    for (size_t i = 0; i < xd_listeners_count(); i++) {
        const xd_listener_t *l = xd_listeners_get(i);
        xd_cmd_printf(call, "listener %s %s connections=%u\n", xd_listener_module_name(l),
                      l->name, atomic_load(&((xd_listener_t *)l)->connections));
    }
    xd_db_hosts_each(status_pool, call);
    return 0;
}

static int
cmd_stop(xd_cmd_call_t *call)
{
    xd_cmd_printf(call, "stopping\n");
    begin_stop("xmppctl");
    return 0;
}

static int
cmd_reload(xd_cmd_call_t *call)
{
    return reload(call);
}

static int
cmd_loglevel(xd_cmd_call_t *call)
{
    const char *arg = call->args[0].text;
    if (!arg) {
        xd_cmd_printf(call, "%s\n", xd_log_level_name((xd_log_level)atomic_load(&xd_log_level_cur)));
        return 0;
    }
    int lvl = xd_log_level_parse(arg);
    if (lvl < 0)
        return xd_cmd_errorf(call, XD_EINVAL,
                             "unknown level %s (none, critical, error, warning, notice, info, debug)",
                             arg);
    xd_log_set_level((xd_log_level)lvl);
    return 0;
}

static const xd_cmd_arg_t loglevel_args[] = {
    { "level", XD_CMD_STRING, "none, critical, error, warning, notice, info or debug" },
};

static const xd_cmd_t server_cmds[] = {
    { .name = "status", .doc = "show whether the server runs, its hosts and listeners",
      .result = XD_CMD_RES_STRING, .flags = XD_CMD_ON_LOOP, .fn = cmd_status },
    { .name = "stop", .doc = "stop the server gracefully", .result = XD_CMD_RES_STRING,
      .flags = XD_CMD_ON_LOOP, .fn = cmd_stop },
    { .name = "reload_config",
      .doc = "reload the configuration file (a bad file leaves the running one in force)",
      .result = XD_CMD_RES_NONE, .fn = cmd_reload },
    { .name = "loglevel", .doc = "show or set the log level", .args = loglevel_args,
      .nargs = 1, .nopt = 1, .result = XD_CMD_RES_STRING, .flags = XD_CMD_ON_LOOP,
      .fn = cmd_loglevel },
};

/* ---- workers ------------------------------------------------------------ */

#define TICK_MS 1000 /* the TICK hook's period */

/* `xmppctl unregister` removed an account: modules drop its data (roster,
 * vCard, offline messages).  Given to auth, which sits below the hooks. */
static void
account_removed(const char *host, const char *user)
{
    xd_hook_user_t ev = { .host = host, .user = user };
    xd_hook_run(XD_HOOK_REMOVE_USER, host, &ev);
}

static xd_timer_t *worker_tick[XD_MAX_WORKERS]; /* each worker's own (owner only) */

/* Once a second on every worker: the TICK hook (mod_ping's sweep, ...). */
static void
on_tick(xd_timer_t *t, void *arg)
{
    (void)t;
    xd_worker_t *w = arg;
    xd_hook_tick_t ev = { .now_ms = uv_now(xd_worker_loop(w)), .worker = xd_worker_index(w) };
    xd_hook_run_all(XD_HOOK_TICK, &ev);
}

static void
worker_init(xd_worker_t *w, void *arg)
{
    (void)arg;
    xd_listeners_start_worker(w);
    xd_s2s_start_worker(w);
    worker_tick[xd_worker_index(w)] = xd_timer_new(w, on_tick, w);
    xd_timer_start(worker_tick[xd_worker_index(w)], TICK_MS, TICK_MS);
}

/* Stop, first step: no new connections, no more input; what the streams'
 * stanzas started (pool work, offline stores) finishes before worker_stop. */
static void
worker_drain(xd_worker_t *w, void *arg)
{
    (void)arg;
    xd_listeners_stop_worker(w);
    xd_conn_quiesce_worker(w);
}

static void
worker_stop(xd_worker_t *w, void *arg)
{
    (void)arg;
    xd_timer_free(worker_tick[xd_worker_index(w)]);
    worker_tick[xd_worker_index(w)] = NULL;
    xd_listeners_stop_worker(w); /* no new connections (done already when drained) */
    xd_s2s_stop_worker(w);
    xd_conn_shutdown_worker(w); /* RFC 6120 4.9.3.20: system-shutdown to every stream */
    xd_c2s_stop_worker(w);      /* sessions kept for resumption end too */
}

static int
make_dir(const char *path)
{
    /* mkdir -p with mode 0700: the data directory holds credentials. */
    char *p = xd_strdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST) {
            xd_free(p);
            return -errno;
        }
        *s = '/';
    }
    int rc = (mkdir(p, 0700) != 0 && errno != EEXIST) ? -errno : 0;
    xd_free(p);
    return rc;
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "config", required_argument, NULL, 'c' },
        { "check-config", no_argument, NULL, 'C' },
        { "version", no_argument, NULL, 'V' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    bool check_only = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': config_path = optarg; break;
        case 'C': check_only = true; break;
        case 'V': printf("xmppd %s\n", XD_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "xmppd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    /* Everything xmppd writes (database and its journal, certificates, the
     * node secret, logs, the control socket) holds secrets or users' data:
     * for this user only, whatever the data directory's mode (issue 12 #6). */
    umask(077);

    /* Built-in modules (known before the configuration is checked); each
     * also registers its tables' migrations, applied by xd_db_open. */
    if (xd_builtin_register() != 0) {
        fprintf(stderr, "xmppd: cannot register the built-in modules\n");
        return 1;
    }
    xd_config_t *cfg = NULL;
    if (load_config(&cfg) != 0)
        return 1;
    {
        /* Module options are checked now too, so errors name file:line. */
        char *merr = NULL;
        if (xd_s2s_check_config(cfg, &merr) != 0 || xd_modules_check(cfg, &merr) != 0) {
            fprintf(stderr, "%s\n", merr ? merr : "invalid module options");
            free(merr);
            xd_config_unref(cfg);
            return 1;
        }
    }
    if (check_only) {
        printf("%s: configuration is valid\n", config_path ? config_path : "(built-in defaults)");
        xd_config_unref(cfg);
        return 0;
    }

    int rc = xd_log_open(xd_config_log_file(cfg));
    if (rc != 0) {
        fprintf(stderr, "xmppd: cannot open log file %s: %s\n", xd_config_log_file(cfg),
                xd_strerror(rc));
        xd_config_unref(cfg);
        return 1;
    }
    xd_log_set_level(xd_config_loglevel(cfg));
    signal(SIGPIPE, SIG_IGN);
    xd_config_publish(xd_config_ref(cfg));
    XD_LOG(NULL, XD_NOTICE, "xmppd starting", "version=%s pid=%d config=%s", XD_VERSION,
           (int)getpid(), config_path ? config_path : "(defaults)");

    /* Start-up in order; on failure, undo what was done (label ladder). */
    int exit_code = 1;
    char *err = NULL;
    xd_db_t *db = NULL;
    const char *data_dir = xd_config_data_dir(cfg);
    if ((rc = make_dir(data_dir)) != 0) {
        XD_LOG(NULL, XD_CRIT, "cannot create data directory", "path=%s err=%s", data_dir,
               xd_strerror(rc));
        fprintf(stderr, "xmppd: cannot create data directory %s: %s\n", data_dir,
                xd_strerror(rc));
        goto out_config;
    }

    /* One pool per distinct database of the hosts (migrated), and the
     * host → pool table everything that stores asks (storage/dbhosts.h). */
    if ((rc = xd_db_hosts_open(cfg, &err)) != 0) {
        fprintf(stderr, "xmppd: %s\n", err ? err : xd_strerror(rc));
        goto out_config;
    }
    db = xd_db_hosts_default();

    if ((rc = xd_pool_start(xd_config_pool_threads(cfg), xd_config_pool_queue(cfg))) != 0) {
        XD_LOG(NULL, XD_CRIT, "cannot start the blocking pool", "err=%s", xd_strerror(rc));
        goto out_db;
    }

    if ((rc = xd_node_secret_load(data_dir)) != 0) {
        XD_LOG(NULL, XD_CRIT, "cannot read or create the node secret", "dir=%s err=%s", data_dir,
               xd_strerror(rc));
        goto out_pool;
    }
    xd_s2s_configure(cfg);
    if ((rc = xd_sm_init()) != 0) {
        XD_LOG(NULL, XD_CRIT, "cannot create the session table", "err=%s", xd_strerror(rc));
        goto out_pool;
    }
    if ((rc = load_tls(cfg, &err)) != 0) {
        XD_LOG(NULL, XD_CRIT, "cannot load certificates", "error=\"%s\"",
               err ? err : xd_strerror(rc));
        fprintf(stderr, "xmppd: %s\n", err ? err : xd_strerror(rc));
        goto out_sm;
    }
    if ((rc = xd_auth_start(cfg, db, &err)) != 0) {
        XD_LOG(NULL, XD_CRIT, "cannot start authentication", "error=\"%s\"",
               err ? err : xd_strerror(rc));
        fprintf(stderr, "xmppd: %s\n", err ? err : xd_strerror(rc));
        goto out_tls;
    }

    xd_modules_set_db(db);
    if ((rc = xd_modules_start(cfg, &err)) != 0) {
        XD_LOG(NULL, XD_CRIT, "cannot start modules", "error=\"%s\"", err ? err : xd_strerror(rc));
        fprintf(stderr, "xmppd: %s\n", err ? err : xd_strerror(rc));
        goto out_auth;
    }

    /* The s2s manager serves s2s and component listeners and the route to
     * other servers. */
    xd_listeners_set_role(XD_LISTEN_S2S, &xd_s2s_in_role);
    xd_listeners_set_role(XD_LISTEN_COMPONENT, &xd_component_role);
    /* http listeners: the HTTP server and its built-in handlers (src/http). */
    xd_http_setup();
    xd_listeners_set_role(XD_LISTEN_HTTP, &xd_http_role);
    xd_router_set_remote(xd_s2s_route);
    if ((rc = xd_listeners_prepare(cfg, &err)) != 0) {
        XD_LOG(NULL, XD_CRIT, "cannot listen", "error=\"%s\"", err ? err : xd_strerror(rc));
        fprintf(stderr, "xmppd: %s\n", err ? err : xd_strerror(rc));
        goto out_auth;
    }

    main_loop = uv_default_loop();
    started_ms = uv_now(main_loop);
    xd_mark_loop_thread(true);
    uv_signal_init(main_loop, &sig_term);
    uv_signal_init(main_loop, &sig_int);
    uv_signal_init(main_loop, &sig_hup);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_signal_start(&sig_hup, on_signal, SIGHUP);

    unsigned nworkers = xd_config_workers(cfg);
    xd_conn_setup();
    xd_workers_set_drain(worker_drain, STOP_DRAIN_MS);
    xd_workers_set_grace_ms(STOP_SETTLE_MS);
    if ((rc = xd_workers_start(nworkers, worker_init, worker_stop, NULL)) != 0) {
        XD_LOG(NULL, XD_CRIT, "cannot start workers", "err=%s", xd_strerror(rc));
        begin_stop("startup failed");
        uv_run(main_loop, UV_RUN_DEFAULT);
        goto out_loop;
    }

    for (size_t i = 0; i < sizeof server_cmds / sizeof server_cmds[0]; i++)
        xd_cmd_register(&server_cmds[i]);
    xd_auth_register_commands(account_removed);
    xd_session_register_commands();
    xd_conn_register_commands();
    xd_pie_register_commands();
    xd_s2s_register_commands();
    if ((rc = xd_ctl_start(main_loop, xd_config_ctl_socket(cfg), &err)) != 0) {
        XD_LOG(NULL, XD_CRIT, "cannot open the control socket", "error=\"%s\"",
               err ? err : xd_strerror(rc));
        fprintf(stderr, "xmppd: %s\n", err ? err : xd_strerror(rc));
        begin_stop("startup failed");
    } else {
        for (size_t i = 0; i < xd_listeners_count(); i++) {
            const xd_listener_t *l = xd_listeners_get(i);
            char wk[16] = "all";
            if (l->worker >= 0)
                snprintf(wk, sizeof wk, "%d", l->worker);
            XD_LOG(NULL, XD_NOTICE, "listening", "module=%s address=%s worker=%s",
                   xd_listener_module_name(l), l->name, wk);
        }
        XD_LOG(NULL, XD_NOTICE, "xmppd ready", "workers=%u hosts=%zu ctl_socket=%s", nworkers,
               xd_config_host_count(cfg), xd_config_ctl_socket(cfg));
        exit_code = 0;
    }

    uv_run(main_loop, UV_RUN_DEFAULT);
    /* Workers are stopping (begin_stop); queued pool jobs are cancelled and
     * running ones finish, their results delivered on their loops; then
     * the loops end.  The main loop is done: blocking calls are fine now. */
    xd_mark_loop_thread(false);
    /* The pool and the auth backends serve the drain. */
    if (!xd_workers_wait_drained(STOP_DRAIN_MS + STOP_SETTLE_MS + 2000))
        XD_LOG(NULL, XD_WARN, "stop: workers did not drain in time", "");
    xd_auth_stop();
    xd_pool_stop();
    xd_workers_join();
    xd_s2s_shutdown();
out_loop:
    xd_mark_loop_thread(false); /* the main loop is done; blocking calls are fine now */
    uv_loop_close(main_loop);
out_auth:
    xd_auth_stop();
out_tls:
    xd_conn_set_tls_store(NULL);
out_sm:
    xd_pool_stop();
    xd_listeners_free();
    xd_sm_shutdown();
    xd_modules_stop();
    xd_modules_set_db(NULL);

    xd_iq_clear();
    xd_service_clear();
out_pool:
    xd_pool_stop();
out_db:
    xd_db_hosts_close();
out_config:
    free(err);
    xd_node_secret_clear();
    XD_LOG(NULL, XD_NOTICE, "xmppd stopped", "exit=%d", exit_code);
    xd_config_publish(NULL);
    xd_config_unref(cfg);
    return exit_code;
}

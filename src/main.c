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
 *           workers close listeners and streams (system-shutdown) → workers
 *           joined → pool stopped → storage closed → "xmppd stopped", exit 0.
 * SIGHUP:   reopen the log file, reload the configuration (listeners keep
 *           their sockets until restart; everything read per use follows).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "core/ctl.h"
#include "core/pool.h"
#include "core/worker.h"
#include "stream/listener.h"
#include "xd_version.h"
#include "xmppd/alloc.h"
#include "xmppd/config.h"
#include "xmppd/err.h"
#include "xmppd/log.h"
#include "xmppd/storage.h"

static uv_loop_t *main_loop;
static uv_signal_t sig_term, sig_int, sig_hup;
static const char *config_path;   /* NULL: built-in defaults */
static bool stopping;
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
    int rc = config_path ? xd_config_load(config_path, out, &err) : xd_config_default(out);
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

static int
reload(xd_ctl_out_t *out)
{
    int rc = xd_log_reopen();
    if (rc != 0)
        XD_LOG(NULL, XD_ERROR, "log reopen failed", "err=%s", xd_strerror(rc));
    if (!config_path) {
        XD_LOG(NULL, XD_NOTICE, "config reloaded", "source=defaults");
        return 0;
    }
    xd_config_t *cfg = NULL;
    char *err = NULL;
    rc = xd_config_load(config_path, &cfg, &err);
    if (rc != 0) {
        /* A bad file never replaces a good configuration. */
        XD_LOG(NULL, XD_ERROR, "config reload failed", "file=%s error=\"%s\"", config_path,
               err ? err : xd_strerror(rc));
        if (out)
            xd_ctl_printf(out, "%s\n", err ? err : xd_strerror(rc));
        free(err);
        return rc;
    }
    xd_log_set_level(xd_config_loglevel(cfg));
    xd_config_publish(cfg);
    XD_LOG(NULL, XD_NOTICE, "config reloaded", "file=%s", config_path);
    return 0;
}

static void
on_signal(uv_signal_t *h, int signum)
{
    (void)h;
    if (signum == SIGHUP)
        reload(NULL);
    else
        begin_stop(signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* ---- control commands --------------------------------------------------- */

static int
cmd_status(int argc, char **argv, xd_ctl_out_t *out)
{
    (void)argc;
    (void)argv;
    xd_config_t *cfg = xd_config_get();
    uint64_t up = (uv_now(main_loop) - started_ms) / 1000;
    xd_ctl_printf(out, "xmppd %s is running (pid %d, up %llus, %u workers)\n", XD_VERSION,
                  (int)getpid(), (unsigned long long)up, xd_workers_count());
    for (size_t i = 0; i < xd_config_host_count(cfg); i++)
        xd_ctl_printf(out, "host %s\n", xd_config_host_name(cfg, i));
    for (size_t i = 0; i < xd_listeners_count(); i++) {
        const xd_listener_t *l = xd_listeners_get(i);
        xd_ctl_printf(out, "listener c2s %s connections=%u\n", l->name,
                      atomic_load(&((xd_listener_t *)l)->connections));
    }
    xd_config_unref(cfg);
    return 0;
}

static int
cmd_stop(int argc, char **argv, xd_ctl_out_t *out)
{
    (void)argc;
    (void)argv;
    xd_ctl_printf(out, "stopping\n");
    begin_stop("xmppctl");
    return 0;
}

static int
cmd_reload(int argc, char **argv, xd_ctl_out_t *out)
{
    (void)argc;
    (void)argv;
    return reload(out) == 0 ? 0 : 1;
}

static int
cmd_loglevel(int argc, char **argv, xd_ctl_out_t *out)
{
    if (argc == 0) {
        xd_ctl_printf(out, "%s\n", xd_log_level_name((xd_log_level)atomic_load(&xd_log_level_cur)));
        return 0;
    }
    int lvl = xd_log_level_parse(argv[0]);
    if (lvl < 0) {
        xd_ctl_printf(out, "unknown level %s (none, critical, error, warning, notice, info, debug)\n",
                      argv[0]);
        return 2;
    }
    xd_log_set_level((xd_log_level)lvl);
    return 0;
}

/* ---- workers ------------------------------------------------------------ */

static void
worker_init(xd_worker_t *w, void *arg)
{
    (void)arg;
    xd_listeners_start_worker(w);
}

static void
worker_stop(xd_worker_t *w, void *arg)
{
    (void)arg;
    xd_listeners_stop_worker(w);
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

    xd_config_t *cfg = NULL;
    if (load_config(&cfg) != 0)
        return 1;
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

    if (cfg->sql_type != XD_SQL_SQLITE) {
        /* PostgreSQL, MySQL and ODBC drivers arrive with their issue. */
        XD_LOG(NULL, XD_CRIT, "sql_type not supported yet", "sql_type=%d", cfg->sql_type);
        fprintf(stderr, "xmppd: only sql_type: sqlite is supported so far\n");
        goto out_config;
    }
    xd_db_params_t params = { .driver = "sqlite", .path = cfg->sql_database };
    if ((rc = xd_db_open(&params, &db)) != 0) {
        XD_LOG(NULL, XD_CRIT, "cannot open storage", "path=%s err=%s", cfg->sql_database,
               xd_strerror(rc));
        fprintf(stderr, "xmppd: cannot open the database %s: %s\n", cfg->sql_database,
                xd_strerror(rc));
        goto out_config;
    }
    XD_LOG(NULL, XD_NOTICE, "storage ready", "driver=sqlite path=%s", cfg->sql_database);

    if ((rc = xd_pool_start(xd_config_pool_threads(cfg), xd_config_pool_queue(cfg))) != 0) {
        XD_LOG(NULL, XD_CRIT, "cannot start the blocking pool", "err=%s", xd_strerror(rc));
        goto out_db;
    }

    if ((rc = xd_listeners_prepare(cfg, &err)) != 0) {
        XD_LOG(NULL, XD_CRIT, "cannot listen", "error=\"%s\"", err ? err : xd_strerror(rc));
        fprintf(stderr, "xmppd: %s\n", err ? err : xd_strerror(rc));
        goto out_pool;
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
    if ((rc = xd_workers_start(nworkers, worker_init, worker_stop, NULL)) != 0) {
        XD_LOG(NULL, XD_CRIT, "cannot start workers", "err=%s", xd_strerror(rc));
        begin_stop("startup failed");
        uv_run(main_loop, UV_RUN_DEFAULT);
        goto out_loop;
    }

    xd_ctl_register("status", "", "show whether the server runs, its hosts and listeners", 0, 0,
                    cmd_status);
    xd_ctl_register("stop", "", "stop the server gracefully", 0, 0, cmd_stop);
    xd_ctl_register("reload_config", "", "reload the configuration file", 0, 0, cmd_reload);
    xd_ctl_register("loglevel", "[LEVEL]", "show or set the log level", 0, 1, cmd_loglevel);
    if ((rc = xd_ctl_start(main_loop, xd_config_ctl_socket(cfg), &err)) != 0) {
        XD_LOG(NULL, XD_CRIT, "cannot open the control socket", "error=\"%s\"",
               err ? err : xd_strerror(rc));
        fprintf(stderr, "xmppd: %s\n", err ? err : xd_strerror(rc));
        begin_stop("startup failed");
    } else {
        for (size_t i = 0; i < xd_listeners_count(); i++)
            XD_LOG(NULL, XD_NOTICE, "listening", "module=c2s address=%s",
                   xd_listeners_get(i)->name);
        XD_LOG(NULL, XD_NOTICE, "xmppd ready", "workers=%u hosts=%zu ctl_socket=%s", nworkers,
               xd_config_host_count(cfg), xd_config_ctl_socket(cfg));
        exit_code = 0;
    }

    uv_run(main_loop, UV_RUN_DEFAULT);
    /* Workers are stopping (begin_stop); queued pool jobs are cancelled and
     * running ones finish, their results delivered on their loops; then
     * the loops end. */
    xd_pool_stop();
    xd_workers_join();
out_loop:
    xd_mark_loop_thread(false); /* the main loop is done; blocking calls are fine now */
    uv_loop_close(main_loop);
out_pool:
    xd_pool_stop();
    xd_listeners_free();
out_db:
    xd_db_close(db);
out_config:
    free(err);
    XD_LOG(NULL, XD_NOTICE, "xmppd stopped", "exit=%d", exit_code);
    xd_config_publish(NULL);
    xd_config_unref(cfg);
    return exit_code;
}

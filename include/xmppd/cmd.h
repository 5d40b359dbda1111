/*
 * cmd.h — the command registry (DESIGN.md 5).
 *
 * A command is written once, as data plus one handler, and served by every
 * front end: xmppctl over the control socket, ad-hoc commands (XEP-0050,
 * mod_adhoc); the HTTP API and the web admin later.  Each front end
 * turns its input into the same typed argument vector, checks it with
 * xd_cmd_prepare() and calls xd_cmd_run(); the typed result is formatted by
 * the front end (xmppctl prints lines, the HTTP API will emit JSON).
 *
 *   static const xd_cmd_arg_t register_args[] = {
 *       { "user", XD_CMD_USER, "localpart of the new account" },
 *       { "host", XD_CMD_HOST, "a served virtual host" },
 *       { "password", XD_CMD_PASSWORD, "the password" },
 *   };
 *   static const xd_cmd_t cmd_register = {
 *       .name = "register", .doc = "create an account",
 *       .args = register_args, .nargs = 3, .result = XD_CMD_RES_NONE,
 *       .fn = do_register,
 *   };
 *   xd_cmd_register(&cmd_register);
 *
 * Threads: a handler runs off-loop (a thread that may block: the libuv
 * thread pool of the main loop for xmppctl) unless the command has
 * XD_CMD_ON_LOOP, in which case it runs on the main loop and must not block.
 * So handlers may use the synchronous storage and auth APIs.
 *
 * Access: the control socket is trusted (mode 0600, the server's own user).
 * Other front ends check `access`, an access rule name evaluated against the
 * caller's JID for the host in question; NULL means the rule "admin" is
 * required.
 *
 * The registry holds pointers to the caller's static xd_cmd_t; they must
 * outlive their registration (xd_cmd_unregister before a module unloads).
 */
#ifndef XMPPD_CMD_H
#define XMPPD_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xmppd/config.h"

/* Argument types.  Preparation turns the raw text into the canonical form
 * the handler sees (normalised localpart, served host, …). */
typedef enum xd_cmd_type {
    XD_CMD_STRING,   /* any UTF-8 text */
    XD_CMD_INT,      /* decimal integer, int64 */
    XD_CMD_USER,     /* a JID localpart, prepared (UsernameCaseMapped) */
    XD_CMD_HOST,     /* a domain the server serves, normalised */
    XD_CMD_JID,      /* a JID, normalised (bare or full) */
    XD_CMD_RESOURCE, /* a JID resourcepart, prepared */
    XD_CMD_PASSWORD, /* UTF-8 text, never logged */
} xd_cmd_type;

typedef struct xd_cmd_arg {
    const char *name; /* "user" — also the HTTP API's JSON key */
    int type;         /* xd_cmd_type */
    const char *doc;  /* one line for help */
} xd_cmd_arg_t;

/* Result kinds. */
typedef enum xd_cmd_res {
    XD_CMD_RES_NONE,   /* success or an error, nothing else */
    XD_CMD_RES_STRING, /* one text (may hold several lines) */
    XD_CMD_RES_INT,    /* one integer */
    XD_CMD_RES_BOOL,   /* yes/no; xmppctl exits 0 for yes and 1 for no */
    XD_CMD_RES_LIST,   /* a list of strings (one per line for xmppctl) */
} xd_cmd_res;

enum {
    XD_CMD_ON_LOOP = 1 << 0, /* runs on the main loop: must not block */
};

#define XD_CMD_MAX_ARGS 8

/* One prepared argument: text is the canonical form; i is set for INT. */
typedef struct xd_cmd_value {
    char *text;  /* owned by the call, NUL-terminated */
    int64_t i;   /* XD_CMD_INT */
} xd_cmd_value_t;

/* What a handler fills in.  Use the helpers below; the front end frees it
 * with xd_cmd_result_clear(). */
typedef struct xd_cmd_result {
    int kind;        /* xd_cmd_res: set by xd_cmd_run from the command */
    char *text;      /* STRING result, or the error message when status != 0 */
    size_t text_len; /* its length */
    int64_t i;       /* INT result */
    bool yes;        /* BOOL result */
    char **items;    /* LIST result: items[0..n) */
    size_t n, cap;   /* used, allocated */
} xd_cmd_result_t;

struct xd_cmd;

/* A call in progress: what the handler reads. */
typedef struct xd_cmd_call {
    const struct xd_cmd *cmd;               /* the command */
    xd_cmd_value_t args[XD_CMD_MAX_ARGS];   /* args[0..cmd->nargs) */
    xd_config_t *cfg;                       /* a reference to the current config */
    const char *origin;                     /* "xmppctl", "http", "adhoc" (for logs) */
    xd_cmd_result_t res;                    /* the handler's output */
} xd_cmd_call_t;

/* Returns 0, or an XD_E* code with a message in res.text (xd_cmd_errorf).
 * The front ends map XD_EINVAL to a usage error and the rest to failure. */
typedef int (*xd_cmd_fn)(xd_cmd_call_t *call);

typedef struct xd_cmd {
    const char *name;          /* "register" */
    const char *doc;           /* one line: "create an account" */
    const char *longdoc;       /* optional paragraph for `help COMMAND` */
    const xd_cmd_arg_t *args;  /* positional arguments, all required */
    size_t nargs;              /* 0..XD_CMD_MAX_ARGS */
    size_t nopt;               /* how many of the last args may be left out */
    int result;                /* xd_cmd_res */
    const char *result_doc;    /* what the result means, for help */
    const char *access;        /* access rule for non-ctl front ends; NULL = "admin" */
    unsigned flags;            /* XD_CMD_ON_LOOP */
    xd_cmd_fn fn;              /* the handler */
} xd_cmd_t;

/* Registers cmd (any thread).  XD_EEXIST when the name is taken, XD_EINVAL
 * for a malformed declaration. */
int xd_cmd_register(const xd_cmd_t *cmd);

/* Removes cmd, then waits until every call of it that was acquired has
 * been released: after it returns no handler of cmd runs (a module's
 * commands go before its stop; a .so's before it is unloaded).  Not from
 * within a call of cmd itself. */
void xd_cmd_unregister(const xd_cmd_t *cmd);

/* A front end's way to run a command: the command called name, held
 * against xd_cmd_unregister until xd_cmd_release(*hold); NULL (and *hold
 * NULL) when there is none. */
typedef struct xd_cmd_hold xd_cmd_hold_t;
const xd_cmd_t *xd_cmd_acquire(const char *name, xd_cmd_hold_t **hold);
void xd_cmd_release(xd_cmd_hold_t *hold); /* NULL: nothing */

/* The command called name, or NULL: for a check only (the pointer is not
 * held; a front end that runs or describes it uses xd_cmd_acquire). */
const xd_cmd_t *xd_cmd_find(const char *name);

/* Calls fn for each command in name order; stops when fn returns non-zero. */
void xd_cmd_foreach(int (*fn)(void *arg, const xd_cmd_t *cmd), void *arg);

/* Fills call from raw texts (argc of them): checks the count and prepares
 * every argument by its type against cfg.  On error returns XD_EINVAL and
 * sets call->res.text to a message naming the argument ("user 'a b': …").
 * The call takes a reference to cfg.  Free with xd_cmd_call_clear even on
 * error. */
int xd_cmd_prepare(xd_cmd_call_t *call, const xd_cmd_t *cmd, xd_config_t *cfg, int argc,
                   char *const *argv, const char *origin);

/* Runs the handler on the calling thread (the front end picks the thread by
 * XD_CMD_ON_LOOP), sets res.kind, logs the call (never a password) and
 * returns the handler's status. */
int xd_cmd_run(xd_cmd_call_t *call);

/* For front ends off the main loop (ad-hoc commands, the HTTP API): runs
 * call as xmppctl runs it — with XD_CMD_ON_LOOP on the main loop, else on
 * the main loop's thread pool, where it may block — and then
 * done(call, status, arg) on the main loop.  The call belongs to no module
 * instance while it runs, so a command that stops or reloads modules
 * (reload_config) may stop the front end's own module: done must not
 * use that module's context (find the instance again by name).  At most
 * 64 calls wait; more: XD_EFULL, neither runs.  0, XD_EFULL, or
 * XD_ECLOSED when the main loop no longer takes commands (the server is
 * stopping); done is not called then.  A call still waiting when the main
 * loop stops gets done with XD_ECLOSED and an error text, without having
 * run. */
typedef void (*xd_cmd_done_fn)(xd_cmd_call_t *call, int status, void *arg);
int xd_cmd_run_async(xd_cmd_call_t *call, xd_cmd_done_fn done, void *arg);

/* Frees the arguments (wiping passwords), the result and the config ref. */
void xd_cmd_call_clear(xd_cmd_call_t *call);

/* Result helpers for handlers. */
void xd_cmd_printf(xd_cmd_call_t *call, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void xd_cmd_add(xd_cmd_call_t *call, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int xd_cmd_errorf(xd_cmd_call_t *call, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void xd_cmd_result_clear(xd_cmd_result_t *res);

/* "USER HOST PASSWORD" style synopsis of cmd into buf. */
void xd_cmd_synopsis(const xd_cmd_t *cmd, char *buf, size_t cap);

/* The name of a type ("user", "host", …) for help and API schemas. */
const char *xd_cmd_type_name(int type);

#endif

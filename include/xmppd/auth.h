/*
 * auth.h — authentication backends per served host (DESIGN.md 4).
 *
 * One API for every virtual host, dispatched by the host's auth_method
 * (xd_config_host()->auth_method):
 *
 *   internal   salted SCRAM-SHA-1/256/512 credentials in the database
 *              (storage.h users API) run on the blocking pool; PBKDF2 never
 *              runs on a loop.  SCRAM mechanisms are possible.
 *   external   a pool of extauth_program processes per host speaking the
 *              ejabberd external authentication protocol (2-byte big-endian
 *              length + "auth:User:Server:Password" etc., answer 0x0002 +
 *              0x0000/0x0001).  Plain passwords only: no SCRAM credentials.
 *   anonymous  SASL ANONYMOUS: no accounts; password checks always fail
 *              and users never exist (0 + false through the callback);
 *              every other call returns XD_ENOTSUP at once.
 *   ldap       a search for the user's entry with a service bind, then a
 *              bind as that entry with the password (src/auth/ldap.c), on
 *              the blocking pool.  Checks and existence only.
 *   pam        pam_authenticate + pam_acct_mgmt of pam_service (pam.c), on
 *              the blocking pool.  Checks and existence only.
 *
 * auth_method may list several methods, tried in order (as ejabberd's): a
 * check or existence query succeeds when one method says yes, and fails with
 * the first method's error (XD_ETIMEDOUT, XD_EINTERNAL, …) when none says
 * yes and one could not answer; set_password, register and the removals go
 * to the first method that stores passwords (internal, external), and give
 * XD_ENOTSUP when there is none.  get_scram works with `internal` alone.
 *
 * Users are prepared localparts and hosts served domains (the caller
 * prepares them, e.g. from a normalised JID).  An unknown host gives
 * XD_ENOTFOUND.
 *
 * Asynchronous calls (the c2s, IQ handlers): call them on a worker loop (off
 * a worker they return XD_EINVAL; debug builds abort).  On success the
 * callback runs later on the same worker loop, exactly once, never inside
 * the call; on error the call returns a negative code and never calls back.  Results
 * (cred) are lent for the duration of the callback (STYLE.md 3.7 R6).
 * Errors a callback may see: XD_ENOTFOUND, XD_EEXIST, XD_ENOTSUP,
 * XD_EAUTH_REFUSED (the external script said no), XD_ETIMEDOUT (script did
 * not answer in extauth_timeout), XD_EINTERNAL (script died or answered
 * garbage), XD_ECANCELED (xd_auth_stop or pool shutdown), XD_EDB*.  A c2s
 * answers all but the first ones with <temporary-auth-failure/>.
 * Errors a call may return at once: XD_EINVAL (bad argument, ':' in a user
 * or host for an external host, a request over 65535 bytes), XD_ENOTFOUND
 * (host not served), XD_EFULL (pool or script queue full: answer
 * wait/temporary-auth-failure), XD_ECLOSED (not started, or stopped),
 * XD_ENOTSUP (the host's method cannot do it: get_scram on external and
 * anonymous hosts, writes on anonymous hosts).
 *
 * External timing: extauth_timeout counts from when a request is written to
 * a script; no full answer by then gives XD_ETIMEDOUT and the script is
 * killed and restarted.  A request still queued (all scripts busy or
 * restarting) extauth_timeout after it was submitted fails with XD_ETIMEDOUT
 * unsent.  Each host queues at most 1024 requests (then XD_EFULL).  A
 * script that dies or answers garbage is restarted after 100 ms, doubling
 * per consecutive failure up to 10 s.  extauth_timeout 0 = no limit.
 *
 * Synchronous calls (`_sync`): for threads that are not loops only (xmppctl
 * commands, the blocking pool, tests); they assert that (xd_assert_off_loop)
 * and block until the answer is there.
 *
 * Secrets: passwords are copied into requests, wiped when the request ends,
 * and never logged.
 *
 * Lifecycle and shutdown order (with worker.h / pool.h):
 *   xd_auth_start (after the db is open; spawns the external scripts)
 *   … xd_auth_reload on config change …
 *   xd_workers_stop → xd_auth_stop (external requests in flight end with
 *   XD_ECANCELED; scripts get EOF, then SIGKILL) → xd_pool_stop →
 *   xd_workers_join → xd_db_close.
 * The db passed to xd_auth_start must stay open until xd_pool_stop has
 * returned: internal requests in flight still use it.
 */
#ifndef XMPPD_AUTH_H
#define XMPPD_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#include "xmppd/config.h"
#include "xmppd/scram.h"
#include "xmppd/storage.h"
#include "xmppd/str.h"

/* Completion callbacks: exactly once, on the calling worker's loop. */
typedef void (*xd_auth_cb)(void *arg, int status);
typedef void (*xd_auth_bool_cb)(void *arg, int status, bool result);
typedef void (*xd_auth_scram_cb)(void *arg, int status, const xd_scram_cred_t *cred);

/* Called per user, name lent; return 0 to go on, > 0 to stop, < 0 to stop
 * with that error (as xd_user_handler). */
typedef int (*xd_auth_user_handler)(void *arg, xd_str_t user);

/* ---- lifecycle (off-loop) --------------------------------------------------------------------- */

/* Sets up a backend for every host of cfg: external hosts get their
 * extauth_pool_size script processes spawned now (the command line is split
 * with wordexp(3), WRDE_NOCMD | WRDE_UNDEF: quotes, $VARS and ~ work, $(…)
 * and `…` are refused; the program is looked up in PATH).  db (borrowed) is
 * used by internal hosts; it may be NULL when no host is internal.  On error
 * *err (may be NULL) gets a malloc'd message (free(3)) naming the host and
 * the program, and nothing is left running: -errno when a script cannot be
 * spawned (-ENOENT: no such program), XD_EINVAL for a command line wordexp
 * refuses or an internal host without db.  XD_EEXIST when already started. */
int xd_auth_start(const xd_config_t *cfg, xd_db_t *db, char **err);

/* Applies a new configuration: hosts added or removed, methods and options
 * changed.  An external host whose extauth_program and extauth_pool_size did
 * not change keeps its processes (a new extauth_timeout applies to the next
 * requests); others are started anew and the old processes stopped after the
 * switch (their requests in flight end with XD_ECANCELED).  On error the old
 * setup stays in force. */
int xd_auth_reload(const xd_config_t *cfg, char **err);

/* Stops everything started (idempotent): queued and in-flight external
 * requests end with XD_ECANCELED, scripts get EOF, then SIGKILL after
 * 500 ms (the processes of one host in parallel, hosts one after the
 * other); every child is reaped and the script threads joined.  Later calls
 * return XD_ECLOSED.  Must run before xd_workers_join: the callbacks of the
 * canceled requests are posted to their workers. */
void xd_auth_stop(void);

/* ---- capabilities (any thread) ---------------------------------------------------------------- */

/* True when host's backend has SCRAM credentials (auth_method internal
 * alone): the c2s may offer SCRAM-SHA-*; otherwise only PLAIN. */
bool xd_auth_supports_scram(const char *host);

/* True when one of host's methods checks passwords (all but anonymous):
 * the c2s may offer PLAIN. */
bool xd_auth_supports_plain(const char *host);

/* True when host's methods include anonymous (SASL ANONYMOUS). */
bool xd_auth_anonymous_allowed(const char *host);

/* *out = host's xd_auth_method.  XD_ENOTFOUND when host is not served. */
int xd_auth_method_of(const char *host, int *out);

/* ---- asynchronous (worker loop) --------------------------------------------------------------- */

/* The stored SCRAM credential of user for hash: 0 + cred, XD_ENOTFOUND (no
 * user, or no credential for that hash).  The call returns XD_ENOTSUP at
 * once for external and anonymous hosts. */
int xd_auth_get_scram(const char *host, const char *user, xd_scram_hash hash,
                      xd_auth_scram_cb cb, void *arg);

/* 0 + ok: whether password is user's (internal: derived with the stored
 * salt; external: "auth"; anonymous: never).  An unknown user gives 0 + false
 * (internal, external) so that callers cannot tell the two apart (internal:
 * after a dummy derivation, so the time taken does not tell either). */
int xd_auth_check_password(const char *host, const char *user, const char *password,
                           xd_auth_bool_cb cb, void *arg);

/* 0 + exists (external: "isuser"; anonymous: always false). */
int xd_auth_user_exists(const char *host, const char *user, xd_auth_bool_cb cb, void *arg);

/* Replaces user's password (internal: new SCRAM credentials with the host's
 * scram_iterations; external: "setpass").  XD_ENOTFOUND (internal: no such
 * user), XD_EAUTH_REFUSED (external answered 0), XD_ENOTSUP (anonymous). */
int xd_auth_set_password(const char *host, const char *user, const char *password,
                         xd_auth_cb cb, void *arg);

/* Creates an account (external: "tryregister").  XD_EEXIST when it exists
 * (external: whenever the script answers 0, as ejabberd reads it), XD_EINVAL
 * for a password that OpaqueString refuses, XD_ENOTSUP (anonymous). */
int xd_auth_register(const char *host, const char *user, const char *password, xd_auth_cb cb,
                     void *arg);

/* Removes an account (external: "removeuser").  XD_ENOTFOUND (internal),
 * XD_EAUTH_REFUSED (external answered 0), XD_ENOTSUP (anonymous). */
int xd_auth_remove(const char *host, const char *user, xd_auth_cb cb, void *arg);

/* Removes an account only if password is right (external: "removeuser3",
 * XEP-0077 cancellation with a password).  XD_ENOTFOUND (internal: no such
 * user), XD_EAUTH_REFUSED (wrong password, or external answered 0). */
int xd_auth_remove_checked(const char *host, const char *user, const char *password,
                           xd_auth_cb cb, void *arg);

/* ---- synchronous (off-loop only) -------------------------------------------------------------- */

/* As the asynchronous calls; the result comes back through the out-parameter
 * and the return value is the status the callback would have seen (or the
 * error the asynchronous call would have returned). */
int xd_auth_get_scram_sync(const char *host, const char *user, xd_scram_hash hash,
                           xd_scram_cred_t *out);
int xd_auth_check_password_sync(const char *host, const char *user, const char *password,
                                bool *ok);
int xd_auth_user_exists_sync(const char *host, const char *user, bool *exists);
int xd_auth_set_password_sync(const char *host, const char *user, const char *password);
int xd_auth_register_sync(const char *host, const char *user, const char *password);
int xd_auth_remove_sync(const char *host, const char *user);
int xd_auth_remove_checked_sync(const char *host, const char *user, const char *password);

/* Lists host's accounts in username order (internal: storage list;
 * external, anonymous: XD_ENOTSUP — the protocol cannot list). */
int xd_auth_list_users_sync(const char *host, xd_auth_user_handler fn, void *arg);

#endif

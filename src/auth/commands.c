/*
 * commands.c — account commands of the command registry (include/xmppd/cmd.h):
 * register, unregister, change_password, check_account, check_password,
 * registered_users.  They run off-loop and use the synchronous auth API, so
 * they work for every auth_method the host uses (internal, external).
 *
 * Layers: auth sits below the router, so `unregister` does not run the
 * REMOVE_USER hook itself; it calls the function start-up gave
 * xd_auth_register_commands (main.c: it runs the hook).
 */
#include "auth/commands.h"
#include "auth/authlimit.h"
#include "xmppd/auth.h"
#include "xmppd/cmd.h"
#include "xmppd/err.h"

static xd_auth_removed_fn acct_removed; /* set once at start-up, before any command runs */

/* Maps a backend status to a message the administrator can act on. */
static int
acct_fail(xd_cmd_call_t *call, int rc, const char *user, const char *host)
{
    switch (rc) {
    case XD_ENOTFOUND:
        return xd_cmd_errorf(call, rc, "account %s@%s does not exist", user, host);
    case XD_EEXIST:
        return xd_cmd_errorf(call, rc, "account %s@%s already exists", user, host);
    case XD_ENOTSUP:
        return xd_cmd_errorf(call, rc, "the auth method of %s does not support this", host);
    case XD_EAUTH_REFUSED:
        return xd_cmd_errorf(call, rc, "the authentication backend refused it");
    case XD_EINVAL:
        /* Not a usage error of the command line: the backend refused a
         * value (a password PRECIS refuses, a ':' an external script
         * cannot carry).  Report it as a failure. */
        return xd_cmd_errorf(call, XD_EAUTH_REFUSED,
                             "refused: the password is empty or has characters that are not "
                             "allowed, or the name cannot be passed to the auth backend");
    default:
        return xd_cmd_errorf(call, rc, "%s", xd_strerror(rc));
    }
}

static int
cmd_register(xd_cmd_call_t *call)
{
    const char *user = call->args[0].text, *host = call->args[1].text;
    int rc = xd_auth_register_sync(host, user, call->args[2].text);
    if (rc != 0)
        return acct_fail(call, rc, user, host);
    xd_cmd_printf(call, "user %s@%s registered\n", user, host);
    return 0;
}

static int
cmd_unregister(xd_cmd_call_t *call)
{
    const char *user = call->args[0].text, *host = call->args[1].text;
    int rc = xd_auth_remove_sync(host, user);
    if (rc != 0)
        return acct_fail(call, rc, user, host);
    /* Modules drop the account's data (roster, vCard, offline messages). */
    if (acct_removed)
        acct_removed(host, user);
    xd_cmd_printf(call, "user %s@%s removed\n", user, host);
    return 0;
}

static int
cmd_change_password(xd_cmd_call_t *call)
{
    const char *user = call->args[0].text, *host = call->args[1].text;
    int rc = xd_auth_set_password_sync(host, user, call->args[2].text);
    if (rc != 0)
        return acct_fail(call, rc, user, host);
    xd_cmd_printf(call, "password of %s@%s changed\n", user, host);
    return 0;
}

static int
cmd_check_account(xd_cmd_call_t *call)
{
    const char *user = call->args[0].text, *host = call->args[1].text;
    bool exists = false;
    int rc = xd_auth_user_exists_sync(host, user, &exists);
    if (rc != 0)
        return acct_fail(call, rc, user, host);
    call->res.yes = exists;
    if (!exists)
        xd_cmd_printf(call, "account %s@%s does not exist\n", user, host);
    return 0;
}

static int
cmd_check_password(xd_cmd_call_t *call)
{
    const char *user = call->args[0].text, *host = call->args[1].text;
    bool ok = false;
    int rc = xd_auth_check_password_sync(host, user, call->args[2].text, &ok);
    if (rc != 0)
        return acct_fail(call, rc, user, host);
    call->res.yes = ok;
    if (!ok)
        xd_cmd_printf(call, "wrong password or no such account\n");
    return 0;
}

static int
list_one(void *arg, xd_str_t user)
{
    xd_cmd_add(arg, "%.*s", (int)user.len, user.p);
    return 0;
}

static int
cmd_registered_users(xd_cmd_call_t *call)
{
    const char *host = call->args[0].text;
    int rc = xd_auth_list_users_sync(host, list_one, call);
    if (rc != 0)
        return acct_fail(call, rc, "", host);
    return 0;
}

static const xd_cmd_arg_t args_uhp[] = {
    { "user", XD_CMD_USER, "the localpart of the account (alice in alice@example.org)" },
    { "host", XD_CMD_HOST, "a virtual host the server serves" },
    { "password", XD_CMD_PASSWORD, "the password" },
};

static const xd_cmd_arg_t args_host[] = {
    { "host", XD_CMD_HOST, "a virtual host the server serves" },
};

static const xd_cmd_t acct_cmds[] = {
    { .name = "register", .doc = "create an account", .args = args_uhp, .nargs = 3,
      .result = XD_CMD_RES_NONE, .fn = cmd_register,
      .longdoc = "Creates USER@HOST with PASSWORD through the host's auth_method (internal: "
                 "salted SCRAM credentials; external: the script's tryregister)." },
    { .name = "unregister", .doc = "remove an account", .args = args_uhp, .nargs = 2,
      .result = XD_CMD_RES_NONE, .fn = cmd_unregister },
    { .name = "change_password", .doc = "set a new password for an account", .args = args_uhp,
      .nargs = 3, .result = XD_CMD_RES_NONE, .fn = cmd_change_password,
      .longdoc = "Internal accounts get new SCRAM credentials for every hash; the old ones are "
                 "gone." },
    { .name = "check_account", .doc = "whether an account exists (exit status 0 = yes, 1 = no)",
      .args = args_uhp, .nargs = 2, .result = XD_CMD_RES_BOOL, .fn = cmd_check_account,
      .result_doc = "exit status 0 when the account exists, 1 when it does not" },
    { .name = "check_password",
      .doc = "whether a password is right (exit status 0 = yes, 1 = no)", .args = args_uhp,
      .nargs = 3, .result = XD_CMD_RES_BOOL, .fn = cmd_check_password,
      .result_doc = "exit status 0 when the password is right, 1 otherwise" },
    { .name = "registered_users", .doc = "list the accounts of a host, one per line",
      .args = args_host, .nargs = 1, .result = XD_CMD_RES_LIST, .fn = cmd_registered_users,
      .result_doc = "localparts in order (internal hosts; external scripts cannot list)" },
};

void
xd_auth_register_commands(xd_auth_removed_fn removed)
{
    acct_removed = removed;
    for (size_t i = 0; i < sizeof acct_cmds / sizeof acct_cmds[0]; i++)
        xd_cmd_register(&acct_cmds[i]);
    xd_authlimit_register_commands(); /* auth_bans, auth_unban */
}

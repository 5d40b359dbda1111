/*
 * pam.c — the pam auth backend (auth_int.h): passwords are checked by a
 * PAM service (Linux-PAM, pam_start with pam_service).
 *
 *   CHECK   pam_authenticate (PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK), the
 *           conversation answering every echo-off prompt with the password
 *           (and echo-on prompts with the user name), then pam_acct_mgmt
 *           (an expired or locked account is refused).  PAM_SUCCESS from
 *           both is "yes"; PAM_AUTH_ERR, PAM_USER_UNKNOWN, PAM_ACCT_EXPIRED,
 *           PAM_PERM_DENIED, PAM_NEW_AUTHTOK_REQD, PAM_MAXTRIES and
 *           PAM_CRED_INSUFFICIENT are "no"; anything else (PAM_SYSTEM_ERR, a
 *           service file that cannot be read, PAM_AUTHINFO_UNAVAIL) is
 *           XD_EINTERNAL, answered as temporary-auth-failure.
 *   EXISTS  pam_acct_mgmt alone (as ejabberd does): what "exists" means is
 *           the service's account stack.
 *   others  XD_ENOTSUP.
 *
 * The user PAM sees is the localpart, or user@host with pam_userinfotype
 * jid.  pam_confdir (pam_start_confdir) reads the service file from another
 * directory than /etc/pam.d.  Every call blocks (PAM modules may sleep on
 * failures: pam_unix's delay is turned off with PAM_FAIL_DELAY), so this
 * runs on the blocking pool or a sync caller's thread.
 */
#include <security/pam_appl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth_int.h"
#include "xmppd/alloc.h"
#include "xmppd/assert.h"
#include "xmppd/err.h"
#include "xmppd/log.h"

struct auth_pam {
    _Atomic unsigned refs;
    char *host;     /* served host: logs, and user@host */
    char *service;  /* pam_service */
    char *confdir;  /* pam_confdir or NULL */
    int userinfo;   /* xd_pam_userinfo */
};

int
auth_pam_new(const xd_host_conf_t *hc, auth_pam_t **out, char **err)
{
    if (!hc->pam_service || !*hc->pam_service || strchr(hc->pam_service, '/')) {
        if (err)
            *err = xd_asprintf("host %s: pam_service must be a service name", hc->host);
        return XD_EINVAL;
    }
    auth_pam_t *p = xd_new(auth_pam_t);
    atomic_init(&p->refs, 1);
    p->host = xd_strdup(hc->host);
    p->service = xd_strdup(hc->pam_service);
    p->confdir = hc->pam_confdir ? xd_strdup(hc->pam_confdir) : NULL;
    p->userinfo = hc->pam_userinfotype;
    *out = p;
    return 0;
}

auth_pam_t *
auth_pam_ref(auth_pam_t *p)
{
    atomic_fetch_add(&p->refs, 1);
    return p;
}

void
auth_pam_unref(auth_pam_t *p)
{
    if (p == NULL || atomic_fetch_sub(&p->refs, 1) != 1)
        return;
    xd_free(p->host);
    xd_free(p->service);
    xd_free(p->confdir);
    xd_free(p);
}

typedef struct pam_data {
    const char *user;     /* what PAM was started with */
    const char *password; /* NULL for EXISTS */
} pam_data_t;

/* The conversation: the password for hidden prompts, the user for visible
 * ones, nothing for messages.  Answers are malloc'd: PAM frees them. */
static int
pam_conv_fn(int n, const struct pam_message **msg, struct pam_response **resp, void *arg)
{
    const pam_data_t *d = arg;
    if (n <= 0 || n > PAM_MAX_NUM_MSG)
        return PAM_CONV_ERR;
    struct pam_response *r = calloc((size_t)n, sizeof *r);
    if (r == NULL)
        return PAM_BUF_ERR;
    for (int i = 0; i < n; i++) {
        const char *ans = NULL;
        switch (msg[i]->msg_style) {
        case PAM_PROMPT_ECHO_OFF:
            ans = d->password;
            break;
        case PAM_PROMPT_ECHO_ON:
            ans = d->user;
            break;
        default: /* PAM_ERROR_MSG, PAM_TEXT_INFO: nobody to show them to */
            continue;
        }
        if (ans == NULL || (r[i].resp = strdup(ans)) == NULL) {
            for (int k = 0; k < i; k++)
                if (r[k].resp) {
                    memset(r[k].resp, 0, strlen(r[k].resp));
                    free(r[k].resp);
                }
            free(r);
            return ans == NULL ? PAM_CONV_ERR : PAM_BUF_ERR;
        }
    }
    *resp = r;
    return PAM_SUCCESS;
}

/* Tells PAM not to sleep after a failure (pam_fail_delay users). */
static void
pam_no_delay(int status, unsigned delay, void *arg)
{
    (void)status, (void)delay, (void)arg;
}

/* pam_confdir holds the service's file, or "other". */
static bool
pam_service_file(const auth_pam_t *p)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", p->confdir, p->service);
    if (access(path, R_OK) == 0)
        return true;
    snprintf(path, sizeof path, "%s/other", p->confdir);
    return access(path, R_OK) == 0;
}

static bool
pam_is_no(int prc)
{
    return prc == PAM_AUTH_ERR || prc == PAM_USER_UNKNOWN || prc == PAM_ACCT_EXPIRED ||
           prc == PAM_PERM_DENIED || prc == PAM_NEW_AUTHTOK_REQD || prc == PAM_MAXTRIES ||
           prc == PAM_CRED_INSUFFICIENT || prc == PAM_AUTHTOK_EXPIRED;
}

void
auth_pam_run(auth_pam_t *p, auth_req_t *req)
{
    xd_assert_off_loop();
    req->flag = false;
    req->status = 0;
    if (req->op != AUTH_OP_CHECK && req->op != AUTH_OP_EXISTS) {
        req->status = XD_ENOTSUP;
        return;
    }
    if (req->op == AUTH_OP_CHECK && (!req->password || !*req->password))
        return;
    char *who = p->userinfo == XD_PAM_JID ? xd_asprintf("%s@%s", req->user, req->host)
                                          : xd_strdup(req->user);
    pam_data_t d = { who, req->op == AUTH_OP_CHECK ? req->password : NULL };
    struct pam_conv conv = { pam_conv_fn, &d };
    pam_handle_t *ph = NULL;
    if (p->confdir && !pam_service_file(p)) {
        /* Checked here: Linux-PAM would fall back to "other" there and, on
         * finding neither, fail pam_start and leak its handle's parts. */
        req->status = XD_EINTERNAL;
        XD_LOG(NULL, XD_WARN, "pam request failed",
               "host=%s service=%s err=\"no service file %s/%s (nor %s/other)\"", p->host,
               p->service, p->confdir, p->service, p->confdir);
        xd_free(who);
        return;
    }
    int prc = pam_start_confdir(p->service, who, &conv, p->confdir, &ph);
    const char *step = "start";
    if (prc == PAM_SUCCESS) {
        pam_set_item(ph, PAM_FAIL_DELAY, (const void *)pam_no_delay);
        if (req->op == AUTH_OP_CHECK) {
            step = "authenticate";
            prc = pam_authenticate(ph, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
        }
        if (prc == PAM_SUCCESS) {
            step = "acct_mgmt";
            prc = pam_acct_mgmt(ph, PAM_SILENT);
        }
    }
    if (prc == PAM_SUCCESS) {
        req->flag = true;
    } else if (!pam_is_no(prc)) {
        req->status = XD_EINTERNAL;
        XD_LOG(NULL, XD_WARN, "pam request failed", "host=%s service=%s op=%s step=%s err=\"%s\"",
               p->host, p->service, auth_op_name(req->op), step,
               ph ? pam_strerror(ph, prc) : "pam_start failed");
    }
    if (ph != NULL)
        pam_end(ph, prc);
    xd_free(who);
}

/*
 * upload.h — inside mod_upload (XEP-0363 HTTP File Upload): the options,
 * the per-host state and what the slot service (mod_upload.c) and the
 * HTTP side (upload_http.c) share.
 *
 * A slot is a row of upload_slot (id, host, owner, name, size, type,
 * created_at, complete) and, once its PUT has completed, the file
 * <docroot>/<id>/<name>.  The id is 120 random bits; the name is the
 * client's file name made safe (up_name_sanitize), so nothing of a path
 * the client sends ever reaches the file system.  URLs are
 * <put_url|get_url>/<host>/<id>/<name, percent-encoded>; the PUT URL
 * carries ?token=<expires>-<HMAC-SHA256(secret, host/id/name size type
 * expires)>, so only the slot's owner can fill it, only until
 * put_timeout has passed, and only with the size and type it asked for.
 */
#ifndef XMPPD_MOD_UPLOAD_H
#define XMPPD_MOD_UPLOAD_H

#include <stdbool.h>
#include <stdint.h>

#include "xmppd/module.h"

#define UP_NS "urn:xmpp:http:upload:0"
#define UP_ID_LEN 20           /* slot ids: mod_random_id */
#define UP_NAME_MAX 128        /* bytes of a stored file name */
#define UP_TYPE_MAX 128        /* bytes of a content type */
#define UP_SECRET_LEN 32       /* bytes of the HMAC key */

typedef struct up_conf {
    char *host;                /* the service's domain, "upload.@HOST@" */
    char *name;                /* its disco#info identity name */
    char *access;              /* access rule of who may ask for slots; NULL: local accounts */
    size_t max_size;           /* bytes of one file */
    size_t user_quota;         /* bytes one account may have stored; 0: no quota */
    xd_strlist_t content_types; /* allowed media types; none: any */
    char *put_url;             /* base of PUT URLs; NULL: the http listener's */
    char *get_url;             /* base of GET URLs; NULL: put_url */
    uint64_t put_timeout_ms;   /* how long a slot's PUT URL is valid */
    int expire_days;           /* files older than this are deleted; 0: never */
    uint64_t sweep_interval_ms; /* how often the expiry runs */
    char *docroot;             /* where files live; NULL: <data_dir>/upload */
    char *secret;              /* HMAC key text; NULL: generated in <docroot>/.secret */
} up_conf_t;

typedef struct up_state {
    char *domain;                         /* the service's domain, normalised */
    char *docroot;                        /* absolute or as configured, no trailing '/' */
    char *put_base, *get_base;            /* URL bases, no trailing '/' */
    unsigned char secret[UP_SECRET_LEN];  /* the HMAC key */
    size_t secret_len;
    _Atomic uint64_t last_sweep_ms;       /* TICK clock of the last expiry run */
    _Atomic bool sweeping;                /* an expiry run is queued or running */
} up_state_t;

/* The client's file name made safe for a path segment of a URL and of the
 * file system: its last component only, bytes other than ASCII letters,
 * digits, '.', '-', '_', '+' and valid UTF-8 (minus bidi controls)
 * replaced by '_', no leading '.', at most UP_NAME_MAX bytes (keeping a
 * short extension), never empty.  out holds UP_NAME_MAX + 1. */
void up_name_sanitize(const char *in, size_t len, char *out);

/* The token of a PUT URL: "<expires>-<64 hex digits>" into out (>= 90). */
void up_token(const up_state_t *s, const char *host, const char *id, const char *name,
              int64_t size, const char *type, int64_t expires, char *out, size_t cap);

/* Whether token is the one of the slot and not expired at `now`. */
bool up_token_ok(const up_state_t *s, const char *host, const char *id, const char *name,
                 int64_t size, const char *type, const char *token, int64_t now);

/* The path of the slot's directory, file and partial file (xd_free). */
char *up_path(const up_state_t *s, const char *id, const char *name);

/* Deletes the files of a slot (file, partial file, directory).  Blocks. */
void up_unlink_slot(const up_state_t *s, const char *id, const char *name);

/* The HTTP handler "upload" (upload_http.c), registered while any
 * instance runs. */
int up_http_ref(void);
void up_http_unref(void);

#endif

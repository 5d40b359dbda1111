/*
 * mod_muc_log.c — public logs of multi-user chat rooms (ejabberd's
 * mod_muc_log): one file per room and day, HTML (or plain text) with the
 * joins, leaves, nick changes, subject changes, kicks, bans and messages
 * of the rooms whose configuration enables logging
 * (muc#roomconfig_enablelogging), an index page per room listing its
 * days and an index of the rooms.
 *
 * Layout under outdir (dirtype subdirs; plain puts the days flat as
 * YYYY-MM-DD.html in the room's directory):
 *
 *   index.html                          the rooms
 *   room@conference.example.org/
 *       index.html                      the room's days, newest first
 *       2026/12/07.html                 one day (.txt for plaintext)
 *
 * Threads: the rooms tell of their events through the MUC_ROOM_EVENT hook
 * on their owner workers.  The handler copies the event into the host's
 * queue (bounded by queue_size: an event beyond it is dropped, counted and
 * logged once per burst) and, when no writer runs, submits one to the
 * blocking pool (xd_module_submit).  There is at most one writer per host:
 * it takes the whole queue as a batch, appends each room's lines to its day
 * file with one write per file and batch, rewrites the indexes the batch
 * made stale and goes on until the queue is empty, so the lines of a room
 * stay in the order its worker saw them.  Everything in ml_state_t below
 * `mu` is guarded by it; the rest is immutable after start.
 *
 * Everything user-supplied (nicks, bodies, subjects, room names and JIDs,
 * reasons) is HTML-escaped; URLs in bodies (http, https, ftp, xmpp,
 * mailto) become links, escaped in the attribute as in the text, with
 * rel="nofollow" under spam_prevention.
 *
 * xmppctl: muc_log_flush HOST waits until what was queued is written (the
 * tests' barrier, and a way to make the files current before a backup);
 * muc_log_pause / muc_log_resume HOST hold the writes (while the log
 * directory is moved or backed up; events queue up to queue_size);
 * muc_log_stats HOST shows the counters.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "xmppd/acl.h"
#include "xmppd/alloc.h"
#include "xmppd/config.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/log.h"
#include "xmppd/module.h"
#include "xmppd/str.h"

#include "muc_log.h"

enum { FMT_HTML, FMT_PLAIN };
enum { TZ_LOCAL, TZ_UTC };
enum { DIR_SUBDIRS, DIR_PLAIN };

typedef struct ml_conf {
    char *outdir;         /* NULL: <data_dir>/muc_log */
    int format;           /* FMT_* */
    int tz;               /* TZ_* */
    char *cssfile;        /* URL of a style sheet, or NULL: embedded */
    int dirtype;          /* DIR_* */
    bool spam_prevention; /* rel="nofollow" on links */
    int queue_size;       /* events waiting for the writer */
    char *access_log;     /* access rule: who may switch a room's logging */
} ml_conf_t;

static const xd_opt_enum_t ml_formats[] = { { "html", FMT_HTML }, { "plaintext", FMT_PLAIN },
                                            { NULL, 0 } };
static const xd_opt_enum_t ml_zones[] = { { "local", TZ_LOCAL }, { "universal", TZ_UTC },
                                          { NULL, 0 } };
static const xd_opt_enum_t ml_dirtypes[] = { { "subdirs", DIR_SUBDIRS }, { "plain", DIR_PLAIN },
                                             { NULL, 0 } };

#define C_ ml_conf_t
static const xd_opt_t ml_opts[] = {
    XD_OPT_PATH("outdir", C_, outdir, NULL,
                "Directory the logs are written to (`@HOST@`: the served host), one "
                "subdirectory per room, named by the room's JID.  Unset: "
                "`<data_dir>/muc_log`."),
    XD_OPT_ENUM("file_format", C_, format, "html", ml_formats,
                "`html` (escaped, links made of URLs) or `plaintext` (`.txt` day files; the "
                "indexes stay HTML)."),
    XD_OPT_ENUM("timezone", C_, tz, "local", ml_zones,
                "Clock of the timestamps and of the day files: `local` (the server's time "
                "zone, TZ) or `universal` (UTC)."),
    XD_OPT_STRING("cssfile", C_, cssfile, NULL,
                  "URL of a style sheet the HTML pages link to instead of their embedded "
                  "one (relative URLs are relative to each page)."),
    XD_OPT_ENUM("dirtype", C_, dirtype, "subdirs", ml_dirtypes,
                "`subdirs`: a day is `ROOM/YYYY/MM/DD.html`; `plain`: `ROOM/YYYY-MM-DD.html`."),
    XD_OPT_BOOL("spam_prevention", C_, spam_prevention, "true",
                "Links made of URLs in messages get rel=\"nofollow\", so search engines give "
                "spammers nothing for posting them."),
    XD_OPT_INT("queue_size", C_, queue_size, "10000", 1, 10000000,
               "Events waiting to be written (per host).  An event beyond it is dropped, "
               "counted (`xmppctl muc_log_stats`) and logged once per burst."),
    XD_OPT_STRING("access_log", C_, access_log, "all",
                  "Access rule: who may turn a room's logging on or off.  Others (owners "
                  "too) do not see `muc#roomconfig_enablelogging` in the room's form, and a "
                  "form of theirs that changes it is refused with forbidden.  ejabberd's "
                  "default is `muc_admin` (a rule its example configuration defines as its "
                  "admins); `all` keeps the switch with every room owner."),
    XD_OPT_END,
};
#undef C_

/* One event as queued (all strings owned; NULL when absent). */
typedef struct ml_ev {
    struct ml_ev *next;
    int kind;        /* xd_muc_event_kind */
    int64_t sec;     /* wall clock when the room saw it */
    int ms;
    int seq;         /* events of the host queued before it in the same ms */
    char *room;      /* room@service */
    char *title;     /* room title, or NULL */
    char *nick, *new_nick, *actor, *text;
} ml_ev_t;

typedef struct ml_state {
    char *outdir;            /* expanded; immutable */
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* signalled when a batch is written or the writer stops */
    ml_ev_t *head, **tail;   /* the queue */
    size_t queued;           /* in the queue and in the batch being written */
    bool busy;               /* a writer is submitted or runs */
    bool paused;             /* muc_log_pause */
    bool dropping;           /* a drop was logged; reset when the writer takes a batch */
    uint64_t burst;          /* drops since then */
    int64_t last_sec;        /* the clock of the latest event queued (anchors) */
    int last_ms, last_seq;
    uint64_t written, dropped, write_errors;
} ml_state_t;

/* ---- text buffers and escaping ----------------------------------------------------------------- */

/* s (n bytes) escaped for HTML text and attribute values alike. */
static void
buf_html_n(xd_buf_t *b, const char *s, size_t n)
{
    size_t from = 0;
    for (size_t i = 0; i < n; i++) {
        const char *e = NULL;
        switch (s[i]) {
        case '&': e = "&amp;"; break;
        case '<': e = "&lt;"; break;
        case '>': e = "&gt;"; break;
        case '"': e = "&quot;"; break;
        case '\'': e = "&#39;"; break;
        default: continue;
        }
        xd_buf_add(b, s + from, i - from);
        xd_buf_puts(b, e);
        from = i + 1;
    }
    xd_buf_add(b, s + from, n - from);
}

static void
buf_html(xd_buf_t *b, const char *s)
{
    if (s)
        buf_html_n(b, s, strlen(s));
}

/* The schemes that become links: never javascript:, data: or the like. */
static const char *const ml_schemes[] = { "http://", "https://", "ftp://", "xmpp:", "mailto:" };

static bool
url_char(unsigned char ch)
{
    return ch > 0x20 && ch != 0x7f && ch != '<' && ch != '>' && ch != '"' && ch != '\'';
}

/* Length of the URL at s[i..n) (0: none starts there). */
static size_t
url_at(const char *s, size_t i, size_t n)
{
    if (i > 0 && (((unsigned char)s[i - 1] >= 'a' && (unsigned char)s[i - 1] <= 'z') ||
                  ((unsigned char)s[i - 1] >= 'A' && (unsigned char)s[i - 1] <= 'Z') ||
                  ((unsigned char)s[i - 1] >= '0' && (unsigned char)s[i - 1] <= '9')))
        return 0;
    for (size_t k = 0; k < sizeof ml_schemes / sizeof *ml_schemes; k++) {
        size_t sl = strlen(ml_schemes[k]);
        if (n - i <= sl || strncasecmp(s + i, ml_schemes[k], sl) != 0)
            continue;
        size_t e = i + sl;
        while (e < n && url_char((unsigned char)s[e]))
            e++;
        /* Punctuation that ends a sentence is not part of the URL. */
        while (e > i + sl && strchr(".,;:!?)]}", s[e - 1]))
            e--;
        return e > i + sl ? e - i : 0;
    }
    return 0;
}

/* A message body or subject: escaped, line breaks kept, URLs as links. */
static void
buf_body(xd_buf_t *b, const char *s, bool nofollow)
{
    if (!s)
        return;
    size_t n = strlen(s), from = 0;
    for (size_t i = 0; i < n;) {
        size_t ul = url_at(s, i, n);
        if (ul) {
            buf_html_n(b, s + from, i - from);
            xd_buf_puts(b, "<a href=\"");
            buf_html_n(b, s + i, ul);
            xd_buf_puts(b, nofollow ? "\" rel=\"nofollow\">" : "\">");
            buf_html_n(b, s + i, ul);
            xd_buf_puts(b, "</a>");
            i += ul;
            from = i;
        } else if (s[i] == '\n') {
            buf_html_n(b, s + from, i - from);
            xd_buf_puts(b, "<br>\n");
            from = ++i;
        } else if (s[i] == '\r') {
            buf_html_n(b, s + from, i - from);
            from = ++i;
        } else {
            i++;
        }
    }
    buf_html_n(b, s + from, n - from);
}

/* Plain text: continuation lines indented under the first, so that no
 * body can make a line that looks like one of the log's own. */
static void
buf_plain(xd_buf_t *b, const char *s)
{
    if (!s)
        return;
    for (; *s; s++) {
        if (*s == '\r')
            continue;
        if (*s == '\n')
            xd_buf_puts(b, "\n           ");
        else
            xd_buf_add(b, s, 1);
    }
}

/* A room JID as a directory name: bytes other than [A-Za-z0-9@._+-] (and a
 * leading dot) as %XX, so that no name reaches outside outdir. */
static char *
dir_name(const char *jid)
{
    xd_buf_t b = { 0 };
    for (const unsigned char *p = (const unsigned char *)jid; *p; p++) {
        bool ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || strchr("@._+-", *p);
        if (ok && !(*p == '.' && p == (const unsigned char *)jid))
            xd_buf_add(&b, (const char *)p, 1);
        else
            xd_buf_printf(&b, "%%%02X", *p);
    }
    if (!b.len)
        xd_buf_puts(&b, "%00");
    return xd_buf_take(&b);
}

/* A directory name back as the JID it stands for. */
static char *
dir_name_decode(const char *name)
{
    xd_buf_t b = { 0 };
    for (const char *p = name; *p; p++) {
        unsigned v;
        if (*p == '%' && p[1] && p[2] && sscanf(p + 1, "%2x", &v) == 1) {
            char ch = (char)v;
            xd_buf_add(&b, &ch, 1);
            p += 2;
        } else {
            xd_buf_add(&b, p, 1);
        }
    }
    return xd_buf_take(&b);
}

/* A path segment of ours (dir_name) in an href: '%' itself escaped. */
static void
buf_href_seg(xd_buf_t *b, const char *seg)
{
    for (const char *p = seg; *p; p++) {
        if (*p == '%')
            xd_buf_puts(b, "%25");
        else
            buf_html_n(b, p, 1);
    }
}

/* ---- pages ------------------------------------------------------------------------------------- */

static const char ml_css[] =
    ":root{color-scheme:light dark;--fg:#1d1f21;--bg:#fdfdfc;--dim:#6a6f75;--rule:#e3e3e0;"
    "--link:#0b5cad;--subject:#fff4d6}\n"
    "@media (prefers-color-scheme:dark){:root{--fg:#e4e4e2;--bg:#17191b;--dim:#9aa0a6;"
    "--rule:#2c2f33;--link:#8ab8f0;--subject:#3a3320}}\n"
    "body{margin:0 auto;max-width:60rem;padding:1rem 1.25rem 3rem;background:var(--bg);"
    "color:var(--fg);font:16px/1.5 system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif}\n"
    "header{border-bottom:1px solid var(--rule);margin-bottom:1rem}\n"
    "h1{font-size:1.5rem;margin:.5rem 0 0}h2{font-size:1.1rem;color:var(--dim)}\n"
    ".jid{color:var(--dim);margin:.25rem 0}a{color:var(--link)}\n"
    ".ev{margin:.15rem 0;padding-left:6.5rem;text-indent:-6.5rem;overflow-wrap:anywhere}\n"
    ".ts{display:inline-block;width:6rem;text-indent:0;color:var(--dim);text-decoration:none;"
    "font:.85em/1.5 ui-monospace,\"DejaVu Sans Mono\",monospace}\n"
    ".nick{font-weight:600}.info{color:var(--dim);font-style:italic}\n"
    ".subject{background:var(--subject);border-radius:.25rem}\n"
    ".info .body{font-style:normal}.me{font-style:italic}\n"
    "ul.days{columns:12rem;padding-left:1.25rem}\n";

static void
page_head(xd_buf_t *b, const ml_conf_t *c, const char *title)
{
    xd_buf_puts(b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                "<meta name=\"generator\" content=\"xmppd mod_muc_log\">\n<title>");
    buf_html(b, title);
    xd_buf_puts(b, "</title>\n");
    if (c->cssfile) {
        xd_buf_puts(b, "<link rel=\"stylesheet\" href=\"");
        buf_html(b, c->cssfile);
        xd_buf_puts(b, "\">\n");
    } else {
        xd_buf_puts(b, "<style>\n");
        xd_buf_puts(b, ml_css);
        xd_buf_puts(b, "</style>\n");
    }
    xd_buf_puts(b, "</head>\n<body>\n");
}

/* The nick's colour: a hue from its bytes, the same on every page. */
static unsigned
nick_hue(const char *nick)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)nick; p && *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % 360;
}

static void
html_nick(xd_buf_t *b, const char *nick, bool brackets)
{
    xd_buf_printf(b, "<span class=\"nick\" style=\"color:hsl(%u 60%% 38%%)\">", nick_hue(nick));
    if (brackets)
        xd_buf_puts(b, "&lt;");
    buf_html(b, nick ? nick : "");
    if (brackets)
        xd_buf_puts(b, "&gt;");
    xd_buf_puts(b, "</span>");
}

/* The reason of a kick, ban, leave or destruction, if any. */
static void
html_reason(xd_buf_t *b, const char *label, const char *text)
{
    if (!text || !*text)
        return;
    xd_buf_printf(b, " (%s: ", label);
    buf_body(b, text, true);
    xd_buf_puts(b, ")");
}

/* A line's anchor: its time to the millisecond, and "-N" for the Nth more
 * event of that millisecond (ml_on_event counts them), so that no two
 * lines of a day share one. */
static void
line_html(xd_buf_t *b, const ml_conf_t *c, const ml_ev_t *e, const struct tm *tm)
{
    char id[64];
    int n = snprintf(id, sizeof id, "t%02d%02d%02d%03d", tm->tm_hour, tm->tm_min, tm->tm_sec,
                     e->ms);
    if (e->seq > 0 && n > 0 && (size_t)n < sizeof id)
        snprintf(id + n, sizeof id - (size_t)n, "-%d", e->seq);
    const char *cls = e->kind == XD_MUC_EV_MESSAGE ? "msg"
                      : e->kind == XD_MUC_EV_SUBJECT ? "info subject"
                                                     : "info";
    xd_buf_printf(b,
                  "<div class=\"ev %s\" id=\"%s\">"
                  "<a class=\"ts\" href=\"#%s\">[%02d:%02d:%02d]</a> ",
                  cls, id, id, tm->tm_hour, tm->tm_min, tm->tm_sec);
    switch (e->kind) {
    case XD_MUC_EV_MESSAGE:
        if (e->text && strncmp(e->text, "/me ", 4) == 0) {
            xd_buf_puts(b, "<span class=\"me\">* ");
            html_nick(b, e->nick, false);
            xd_buf_puts(b, " ");
            buf_body(b, e->text + 4, c->spam_prevention);
            xd_buf_puts(b, "</span>");
        } else {
            html_nick(b, e->nick, true);
            xd_buf_puts(b, " <span class=\"body\">");
            buf_body(b, e->text, c->spam_prevention);
            xd_buf_puts(b, "</span>");
        }
        break;
    case XD_MUC_EV_JOIN:
        html_nick(b, e->nick, false);
        xd_buf_puts(b, " joins the room");
        break;
    case XD_MUC_EV_LEAVE:
        html_nick(b, e->nick, false);
        xd_buf_puts(b, " leaves the room");
        html_reason(b, "status", e->text);
        break;
    case XD_MUC_EV_NICK:
        html_nick(b, e->nick, false);
        xd_buf_puts(b, " is now known as ");
        html_nick(b, e->new_nick, false);
        break;
    case XD_MUC_EV_SUBJECT:
        html_nick(b, e->nick, false);
        if (e->text && *e->text) {
            xd_buf_puts(b, " has set the subject to: <span class=\"body\">");
            buf_body(b, e->text, c->spam_prevention);
            xd_buf_puts(b, "</span>");
        } else {
            xd_buf_puts(b, " has cleared the subject");
        }
        break;
    case XD_MUC_EV_KICK:
    case XD_MUC_EV_BAN:
        html_nick(b, e->nick, false);
        xd_buf_puts(b, e->kind == XD_MUC_EV_KICK ? " has been kicked" : " has been banned");
        if (e->actor) {
            xd_buf_puts(b, " by ");
            html_nick(b, e->actor, false);
        }
        html_reason(b, "reason", e->text);
        break;
    case XD_MUC_EV_CONFIG:
        xd_buf_puts(b, "The room's configuration was changed");
        break;
    case XD_MUC_EV_DESTROY:
        xd_buf_puts(b, "The room was destroyed");
        html_reason(b, "reason", e->text);
        break;
    default:
        break;
    }
    xd_buf_puts(b, "</div>\n");
}

static void
line_plain(xd_buf_t *b, const ml_ev_t *e, const struct tm *tm)
{
    xd_buf_printf(b, "[%02d:%02d:%02d] ", tm->tm_hour, tm->tm_min, tm->tm_sec);
    const char *nick = e->nick ? e->nick : "";
    switch (e->kind) {
    case XD_MUC_EV_MESSAGE:
        if (e->text && strncmp(e->text, "/me ", 4) == 0) {
            xd_buf_printf(b, "* %s ", nick);
            buf_plain(b, e->text + 4);
        } else {
            xd_buf_printf(b, "<%s> ", nick);
            buf_plain(b, e->text);
        }
        break;
    case XD_MUC_EV_JOIN:
        xd_buf_printf(b, "*** %s joins the room", nick);
        break;
    case XD_MUC_EV_LEAVE:
        xd_buf_printf(b, "*** %s leaves the room", nick);
        break;
    case XD_MUC_EV_NICK:
        xd_buf_printf(b, "*** %s is now known as %s", nick, e->new_nick ? e->new_nick : "");
        break;
    case XD_MUC_EV_SUBJECT:
        xd_buf_printf(b, "*** %s has set the subject to: ", nick);
        buf_plain(b, e->text);
        break;
    case XD_MUC_EV_KICK:
    case XD_MUC_EV_BAN:
        xd_buf_printf(b, "*** %s has been %s", nick,
                   e->kind == XD_MUC_EV_KICK ? "kicked" : "banned");
        if (e->actor)
            xd_buf_printf(b, " by %s", e->actor);
        break;
    case XD_MUC_EV_CONFIG:
        xd_buf_puts(b, "*** The room's configuration was changed");
        break;
    case XD_MUC_EV_DESTROY:
        xd_buf_puts(b, "*** The room was destroyed");
        break;
    default:
        break;
    }
    if ((e->kind == XD_MUC_EV_LEAVE || e->kind == XD_MUC_EV_KICK || e->kind == XD_MUC_EV_BAN ||
         e->kind == XD_MUC_EV_DESTROY) && e->text && *e->text) {
        xd_buf_puts(b, e->kind == XD_MUC_EV_LEAVE ? " (status: " : " (reason: ");
        buf_plain(b, e->text);
        xd_buf_puts(b, ")");
    }
    xd_buf_puts(b, "\n");
}

/* ---- files ------------------------------------------------------------------------------------- */

static int
mkdirs(const char *path)
{
    char *p = xd_strdup(path);
    int rc = 0;
    for (char *q = p + 1; rc == 0; q++) {
        if (*q == '/' || *q == '\0') {
            char save = *q;
            *q = '\0';
            if (mkdir(p, 0755) != 0 && errno != EEXIST)
                rc = -errno;
            *q = save;
            if (save == '\0')
                break;
        }
    }
    xd_free(p);
    return rc;
}

static int
write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Replaces path with content at once (a reader never sees half a page). */
static int
write_file(const char *path, const xd_buf_t *content)
{
    char *tmp = xd_asprintf("%s.XXXXXX", path);
    int fd = mkstemp(tmp);
    int rc = fd < 0 ? -errno : 0;
    if (rc == 0) {
        if (fchmod(fd, 0644) != 0)
            rc = -errno;
        if (rc == 0)
            rc = write_all(fd, xd_buf_cstr(content), content->len);
        if (close(fd) != 0 && rc == 0)
            rc = -errno;
        if (rc == 0 && rename(tmp, path) != 0)
            rc = -errno;
        if (rc != 0)
            unlink(tmp);
    }
    xd_free(tmp);
    return rc;
}

static int
str_desc(const void *a, const void *b)
{
    return strcmp(*(char *const *)b, *(char *const *)a);
}

static int
str_asc(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

typedef struct ml_list {
    char **v;
    size_t n, cap;
} ml_list_t;

static void
list_add(ml_list_t *l, char *s)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->v = xd_realloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = s;
}

static void
list_free(ml_list_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        xd_free(l->v[i]);
    xd_free(l->v);
}

static bool
all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return s[n] == '\0' || s[n] == '.' || s[n] == '-';
}

/* The names of the entries of dir, without the dot files. */
static void
dir_entries(const char *dir, ml_list_t *out)
{
    /* open + fdopendir, not opendir: ThreadSanitizer does not see
     * opendir's descriptor created, so closing one that reuses the number
     * of a worker loop's closed epoll descriptor was reported as a race. */
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.')
            list_add(out, xd_strdup(de->d_name));
    closedir(d);
}

/* The days logged in room directory `rdir` as "YYYY-MM-DD", newest first. */
static void
room_days(const char *rdir, const char *ext, int dirtype, ml_list_t *days)
{
    ml_list_t ys = { 0 };
    dir_entries(rdir, &ys);
    size_t el = strlen(ext);
    for (size_t i = 0; i < ys.n; i++) {
        const char *y = ys.v[i];
        if (dirtype == DIR_PLAIN) {
            /* YYYY-MM-DD.ext */
            size_t n = strlen(y);
            if (n == 10 + el && all_digits(y, 4) && y[4] == '-' && all_digits(y + 5, 2) &&
                y[7] == '-' && all_digits(y + 8, 2) && strcmp(y + 10, ext) == 0)
                list_add(days, xd_strndup(y, 10));
            continue;
        }
        if (strlen(y) != 4 || !all_digits(y, 4))
            continue;
        char *ydir = xd_asprintf("%s/%s", rdir, y);
        ml_list_t ms = { 0 };
        dir_entries(ydir, &ms);
        for (size_t j = 0; j < ms.n; j++) {
            if (strlen(ms.v[j]) != 2 || !all_digits(ms.v[j], 2))
                continue;
            char *mdir = xd_asprintf("%s/%s", ydir, ms.v[j]);
            ml_list_t ds = { 0 };
            dir_entries(mdir, &ds);
            for (size_t k = 0; k < ds.n; k++)
                if (strlen(ds.v[k]) == 2 + el && all_digits(ds.v[k], 2) &&
                    strcmp(ds.v[k] + 2, ext) == 0)
                    list_add(days, xd_asprintf("%s-%s-%.2s", y, ms.v[j], ds.v[k]));
            list_free(&ds);
            xd_free(mdir);
        }
        list_free(&ms);
        xd_free(ydir);
    }
    list_free(&ys);
    if (days->n)
        qsort(days->v, days->n, sizeof *days->v, str_desc);
}

static const char *
ext_of(const ml_conf_t *c)
{
    return c->format == FMT_PLAIN ? ".txt" : ".html";
}

/* Path of day "YYYY-MM-DD" relative to the room's directory. */
static char *
day_rel(const ml_conf_t *c, const char *day)
{
    if (c->dirtype == DIR_PLAIN)
        return xd_asprintf("%s%s", day, ext_of(c));
    return xd_asprintf("%.4s/%.2s/%.2s%s", day, day + 5, day + 8, ext_of(c));
}

/* Rewrites the room's index.html: its days, newest first. */
static int
write_room_index(const ml_state_t *s, const ml_conf_t *c, const char *room, const char *title)
{
    char *dname = dir_name(room);
    char *rdir = xd_asprintf("%s/%s", s->outdir, dname);
    ml_list_t days = { 0 };
    room_days(rdir, ext_of(c), c->dirtype, &days);
    xd_buf_t b = { 0 };
    char *t = xd_asprintf("%s — logs", title && *title ? title : room);
    page_head(&b, c, t);
    xd_free(t);
    xd_buf_puts(&b, "<header><nav><a href=\"../index.html\">All rooms</a></nav><h1>");
    buf_html(&b, title && *title ? title : room);
    xd_buf_puts(&b, "</h1><p class=\"jid\"><a href=\"xmpp:");
    buf_html(&b, room);
    xd_buf_puts(&b, "?join\">");
    buf_html(&b, room);
    xd_buf_puts(&b, "</a></p></header>\n<main>\n");
    char month[8] = "";
    for (size_t i = 0; i < days.n; i++) {
        if (strncmp(month, days.v[i], 7) != 0) {
            xd_buf_printf(&b, "%s<h2>%.7s</h2>\n<ul class=\"days\">\n", month[0] ? "</ul>\n" : "",
                       days.v[i]);
            snprintf(month, sizeof month, "%.7s", days.v[i]);
        }
        char *rel = day_rel(c, days.v[i]);
        xd_buf_printf(&b, "<li><a href=\"%s\">%s</a></li>\n", rel, days.v[i]);
        xd_free(rel);
    }
    if (month[0])
        xd_buf_puts(&b, "</ul>\n");
    if (!days.n)
        xd_buf_puts(&b, "<p class=\"info\">Nothing logged yet.</p>\n");
    xd_buf_puts(&b, "</main>\n</body></html>\n");
    char *path = xd_asprintf("%s/index.html", rdir);
    int rc = write_file(path, &b);
    xd_free(path);
    xd_buf_free(&b);
    list_free(&days);
    xd_free(rdir);
    xd_free(dname);
    return rc;
}

/* Rewrites outdir/index.html: every room directory with an index. */
static int
write_top_index(const ml_state_t *s, const ml_conf_t *c)
{
    ml_list_t all = { 0 }, rooms = { 0 };
    dir_entries(s->outdir, &all);
    for (size_t i = 0; i < all.n; i++) {
        char *idx = xd_asprintf("%s/%s/index.html", s->outdir, all.v[i]);
        struct stat st;
        if (stat(idx, &st) == 0 && S_ISREG(st.st_mode))
            list_add(&rooms, xd_strdup(all.v[i]));
        xd_free(idx);
    }
    list_free(&all);
    if (rooms.n)
        qsort(rooms.v, rooms.n, sizeof *rooms.v, str_asc);
    xd_buf_t b = { 0 };
    page_head(&b, c, "Room logs");
    xd_buf_puts(&b, "<header><h1>Room logs</h1></header>\n<main>\n<ul class=\"rooms\">\n");
    for (size_t i = 0; i < rooms.n; i++) {
        char *jid = dir_name_decode(rooms.v[i]);
        xd_buf_puts(&b, "<li><a href=\"");
        buf_href_seg(&b, rooms.v[i]);
        xd_buf_puts(&b, "/index.html\">");
        buf_html(&b, jid);
        xd_buf_puts(&b, "</a></li>\n");
        xd_free(jid);
    }
    xd_buf_puts(&b, "</ul>\n</main>\n</body></html>\n");
    char *path = xd_asprintf("%s/index.html", s->outdir);
    int rc = write_file(path, &b);
    xd_free(path);
    xd_buf_free(&b);
    list_free(&rooms);
    return rc;
}

/* The first lines of a new day file. */
static void
day_header(xd_buf_t *b, const ml_conf_t *c, const ml_ev_t *e, const char *day, const char *zone)
{
    const char *name = e->title && *e->title ? e->title : e->room;
    if (c->format == FMT_PLAIN) {
        xd_buf_printf(b, "Room: %s\n", e->room);
        if (e->title && *e->title) {
            xd_buf_puts(b, "Title: ");
            buf_plain(b, e->title);
            xd_buf_puts(b, "\n");
        }
        xd_buf_printf(b, "Date: %s (%s)\n\n", day, zone);
        return;
    }
    char *t = xd_asprintf("%s — %s", name, day);
    page_head(b, c, t);
    xd_free(t);
    xd_buf_printf(b, "<header><nav><a href=\"%sindex.html\">All days</a></nav><h1>",
               c->dirtype == DIR_PLAIN ? "" : "../../");
    buf_html(b, name);
    xd_buf_puts(b, "</h1><p class=\"jid\"><a href=\"xmpp:");
    buf_html(b, e->room);
    xd_buf_puts(b, "?join\">");
    buf_html(b, e->room);
    xd_buf_puts(b, "</a></p>\n<h2>");
    buf_html(b, day);
    xd_buf_puts(b, " <span class=\"tz\">(");
    buf_html(b, zone);
    xd_buf_puts(b, ")</span></h2></header>\n<main class=\"log\">\n");
}

/* A room whose index a batch made stale. */
typedef struct ml_dirty {
    char *room;
    char *title;  /* the latest title the batch saw */
    bool index;   /* rewrite the room's index */
} ml_dirty_t;

typedef struct ml_batch {
    const ml_state_t *s;
    const ml_conf_t *c;
    ml_dirty_t *d;
    size_t nd;
    bool top;         /* a room directory was created: rewrite the top index */
    char *path;       /* the day file being appended to */
    xd_buf_t out;     /* what goes to it */
    int err;          /* the first write error */
    char *err_path;
} ml_batch_t;

static ml_dirty_t *
batch_room(ml_batch_t *bt, const ml_ev_t *e)
{
    for (size_t i = 0; i < bt->nd; i++)
        if (strcmp(bt->d[i].room, e->room) == 0) {
            xd_free(bt->d[i].title);
            bt->d[i].title = e->title ? xd_strdup(e->title) : NULL;
            return &bt->d[i];
        }
    bt->d = xd_realloc(bt->d, (bt->nd + 1) * sizeof *bt->d);
    bt->d[bt->nd] = (ml_dirty_t){ xd_strdup(e->room), e->title ? xd_strdup(e->title) : NULL,
                                  false };
    return &bt->d[bt->nd++];
}

static void
batch_fail(ml_batch_t *bt, int rc, const char *path)
{
    if (bt->err == 0) {
        bt->err = rc;
        bt->err_path = xd_strdup(path);
    }
}

/* Appends what was gathered for the current day file. */
static void
batch_flush_file(ml_batch_t *bt)
{
    if (!bt->path)
        return;
    int fd = open(bt->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    int rc = fd < 0 ? -errno : write_all(fd, bt->out.p, bt->out.len);
    if (fd >= 0 && close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc != 0)
        batch_fail(bt, rc, bt->path);
    xd_free(bt->path);
    bt->path = NULL;
    xd_buf_reset(&bt->out);
}

static void
batch_event(ml_batch_t *bt, const ml_ev_t *e)
{
    const ml_conf_t *c = bt->c;
    time_t t = (time_t)e->sec;
    struct tm tm;
    if (c->tz == TZ_UTC)
        gmtime_r(&t, &tm);
    else
        localtime_r(&t, &tm);
    char day[48], zone[16];
    snprintf(day, sizeof day, "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
    if (c->tz == TZ_UTC || strftime(zone, sizeof zone, "%Z", &tm) == 0)
        snprintf(zone, sizeof zone, "UTC");
    ml_dirty_t *d = batch_room(bt, e);
    if (e->kind == XD_MUC_EV_CONFIG)
        d->index = true; /* the title may have changed */
    char *dname = dir_name(e->room);
    char *rdir = xd_asprintf("%s/%s", bt->s->outdir, dname);
    char *rel = day_rel(c, day);
    char *path = xd_asprintf("%s/%s", rdir, rel);
    if (!bt->path || strcmp(bt->path, path) != 0) {
        batch_flush_file(bt);
        struct stat st;
        bool room_new = stat(rdir, &st) != 0;
        bool day_new = room_new || stat(path, &st) != 0;
        if (day_new) {
            char *slash = strrchr(path, '/');
            *slash = '\0';
            int rc = mkdirs(path);
            *slash = '/';
            if (rc != 0)
                batch_fail(bt, rc, path);
            day_header(&bt->out, c, e, day, zone);
            d->index = true;
            bt->top |= room_new;
        }
        bt->path = path;
        path = NULL;
    }
    if (c->format == FMT_PLAIN)
        line_plain(&bt->out, e, &tm);
    else
        line_html(&bt->out, c, e, &tm);
    xd_free(path);
    xd_free(rel);
    xd_free(rdir);
    xd_free(dname);
}

static void
ev_free(ml_ev_t *e)
{
    xd_free(e->room);
    xd_free(e->title);
    xd_free(e->nick);
    xd_free(e->new_nick);
    xd_free(e->actor);
    xd_free(e->text);
    xd_free(e);
}

/* Writes a batch (a list, in queue order) and frees it; returns how many
 * events it held. */
static size_t
write_batch(xd_module_ctx_t *ctx, ml_state_t *s, ml_ev_t *list)
{
    const ml_conf_t *c = xd_module_opts(ctx);
    ml_batch_t bt = { .s = s, .c = c };
    size_t n = 0;
    for (ml_ev_t *e = list; e; e = e->next, n++)
        batch_event(&bt, e);
    batch_flush_file(&bt);
    for (size_t i = 0; i < bt.nd; i++) {
        if (bt.d[i].index) {
            int rc = write_room_index(s, c, bt.d[i].room, bt.d[i].title);
            if (rc != 0)
                batch_fail(&bt, rc, bt.d[i].room);
        }
        xd_free(bt.d[i].room);
        xd_free(bt.d[i].title);
    }
    xd_free(bt.d);
    if (bt.top) {
        int rc = write_top_index(s, c);
        if (rc != 0)
            batch_fail(&bt, rc, s->outdir);
    }
    xd_buf_free(&bt.out);
    if (bt.err) {
        XD_LOG(NULL, XD_ERROR, "muc log write failed", "host=%s path=%s error=\"%s\"",
               xd_module_host(ctx), bt.err_path, xd_strerror(bt.err));
        xd_free(bt.err_path);
        pthread_mutex_lock(&s->mu);
        s->write_errors++;
        pthread_mutex_unlock(&s->mu);
    }
    while (list) {
        ml_ev_t *next = list->next;
        ev_free(list);
        list = next;
    }
    return n;
}

/* ---- the queue --------------------------------------------------------------------------------- */

/* The writer, on the blocking pool: batches until the queue is empty (or
 * paused). */
static void
ml_work(xd_module_ctx_t *ctx, void *arg)
{
    (void)arg;
    ml_state_t *s = xd_module_state(ctx);
    for (;;) {
        pthread_mutex_lock(&s->mu);
        if (!s->head || s->paused) {
            s->busy = false;
            pthread_cond_broadcast(&s->cv);
            pthread_mutex_unlock(&s->mu);
            return;
        }
        ml_ev_t *batch = s->head;
        s->head = NULL;
        s->tail = &s->head;
        /* A burst of drops ends when the writer makes room again. */
        uint64_t burst = s->burst;
        s->burst = 0;
        s->dropping = false;
        pthread_mutex_unlock(&s->mu);
        if (burst)
            XD_LOG(NULL, XD_WARN, "muc log events dropped", "host=%s dropped=%llu",
                   xd_module_host(ctx), (unsigned long long)burst);
        size_t n = write_batch(ctx, s, batch);
        pthread_mutex_lock(&s->mu);
        s->queued -= n;
        s->written += n;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
}

static void
ml_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    (void)arg;
    if (status == 0)
        return;
    /* Canceled before it ran: no writer any more; stop writes what is left. */
    ml_state_t *s = xd_module_state(ctx);
    pthread_mutex_lock(&s->mu);
    s->busy = false;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Submits the writer the caller has marked busy. */
static void
ml_kick(xd_module_ctx_t *ctx, ml_state_t *s)
{
    int rc = xd_module_submit(ctx, ml_work, ml_done, NULL);
    if (rc == 0)
        return;
    /* The pool is full or closing: the events wait for the next one. */
    pthread_mutex_lock(&s->mu);
    s->busy = false;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    XD_LOG(NULL, XD_WARN, "muc log writer not started", "host=%s error=\"%s\"",
           xd_module_host(ctx), xd_strerror(rc));
}

static char *
dup_or_null(const char *s)
{
    return s ? xd_strdup(s) : NULL;
}

static int
ml_on_event(xd_module_ctx_t *ctx, xd_hook_muc_event_t *ev, void *arg)
{
    (void)arg;
    if (!ev->logging || !ev->room || !ev->service)
        return XD_HOOK_OK;
    ml_state_t *s = xd_module_state(ctx);
    const ml_conf_t *c = xd_module_opts(ctx);
    ml_ev_t *e = xd_new(ml_ev_t);
    e->kind = ev->kind;
    e->room = xd_asprintf("%s@%s", ev->room, ev->service);
    e->title = dup_or_null(ev->title);
    e->nick = dup_or_null(ev->nick);
    e->new_nick = dup_or_null(ev->new_nick);
    e->actor = dup_or_null(ev->actor);
    e->text = dup_or_null(ev->text);
    pthread_mutex_lock(&s->mu);
    /* The clock is read under the lock, so the queue's times never go back
     * (but for the clock itself) and events of one millisecond get their
     * numbers in queue order. */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    e->sec = (int64_t)now.tv_sec;
    e->ms = (int)(now.tv_nsec / 1000000);
    if (e->sec == s->last_sec && e->ms == s->last_ms) {
        e->seq = ++s->last_seq;
    } else {
        s->last_sec = e->sec;
        s->last_ms = e->ms;
        s->last_seq = 0;
    }
    if (s->queued >= (size_t)c->queue_size) {
        s->dropped++;
        s->burst++;
        bool first = !s->dropping;
        s->dropping = true;
        pthread_mutex_unlock(&s->mu);
        if (first)
            XD_LOG(NULL, XD_WARN, "muc log queue full", "host=%s room=%s queue_size=%d",
                   xd_module_host(ctx), e->room, c->queue_size);
        ev_free(e);
        return XD_HOOK_OK;
    }
    *s->tail = e;
    s->tail = &e->next;
    s->queued++;
    bool start = !s->busy && !s->paused;
    if (start)
        s->busy = true;
    pthread_mutex_unlock(&s->mu);
    if (start)
        ml_kick(ctx, s);
    return XD_HOOK_OK;
}

/* ---- xmppctl ----------------------------------------------------------------------------------- */

static const xd_cmd_arg_t ml_host_args[] = {
    { "host", XD_CMD_HOST, "a served host running mod_muc_log" },
};

static xd_module_ctx_t *
ml_instance(xd_cmd_call_t *call)
{
    return xd_module_cmd_instance(call, "mod_muc_log", call->args[0].text);
}

static void
ml_stats_add(xd_cmd_call_t *call, ml_state_t *s)
{
    xd_cmd_add(call, "queued %zu", s->queued);
    xd_cmd_add(call, "written %llu", (unsigned long long)s->written);
    xd_cmd_add(call, "dropped %llu", (unsigned long long)s->dropped);
    xd_cmd_add(call, "write_errors %llu", (unsigned long long)s->write_errors);
    xd_cmd_add(call, "paused %s", s->paused ? "yes" : "no");
}

static int
ml_stats_cmd(xd_cmd_call_t *call)
{
    xd_module_ctx_t *ctx = ml_instance(call);
    if (!ctx)
        return XD_ENOTFOUND;
    ml_state_t *s = xd_module_state(ctx);
    pthread_mutex_lock(&s->mu);
    ml_stats_add(call, s);
    pthread_mutex_unlock(&s->mu);
    xd_module_release(ctx);
    return 0;
}

#define ML_FLUSH_WAIT_S 30

static int
ml_flush_cmd(xd_cmd_call_t *call)
{
    xd_module_ctx_t *ctx = ml_instance(call);
    if (!ctx)
        return XD_ENOTFOUND;
    ml_state_t *s = xd_module_state(ctx);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ML_FLUSH_WAIT_S;
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    /* Everything queued now is written once `written` reaches this (the
     * queue is FIFO); later events do not keep the command waiting. */
    uint64_t target = s->written + s->queued;
    if (s->paused)
        rc = XD_EINVAL;
    while (rc == 0 && s->written < target) {
        if (s->paused) {
            rc = XD_EINVAL;
            break;
        }
        if (!s->busy) {
            /* A writer could not be submitted earlier: start one now (from
             * this thread xd_module_submit runs it here, at once). */
            s->busy = true;
            pthread_mutex_unlock(&s->mu);
            ml_kick(ctx, s);
            pthread_mutex_lock(&s->mu);
            continue;
        }
        if (pthread_cond_timedwait(&s->cv, &s->mu, &until) == ETIMEDOUT)
            rc = XD_ETIMEDOUT;
    }
    if (rc == 0)
        ml_stats_add(call, s);
    pthread_mutex_unlock(&s->mu);
    xd_module_release(ctx);
    if (rc == XD_EINVAL)
        return xd_cmd_errorf(call, rc, "writes are paused: muc_log_resume %s first",
                             call->args[0].text);
    if (rc != 0)
        return xd_cmd_errorf(call, rc, "the queue did not drain in %d s", ML_FLUSH_WAIT_S);
    return 0;
}

static int
ml_pause_cmd(xd_cmd_call_t *call)
{
    xd_module_ctx_t *ctx = ml_instance(call);
    if (!ctx)
        return XD_ENOTFOUND;
    ml_state_t *s = xd_module_state(ctx);
    bool pause = strcmp(call->cmd->name, "muc_log_pause") == 0;
    pthread_mutex_lock(&s->mu);
    s->paused = pause;
    if (pause) {
        /* Returns once the running batch is written: nothing is written after. */
        while (s->busy)
            pthread_cond_wait(&s->cv, &s->mu);
    }
    bool start = !pause && s->head && !s->busy;
    if (start)
        s->busy = true;
    pthread_mutex_unlock(&s->mu);
    if (start)
        ml_kick(ctx, s);
    XD_LOG(NULL, XD_NOTICE, pause ? "muc log paused" : "muc log resumed", "host=%s",
           call->args[0].text);
    xd_module_release(ctx);
    return 0;
}

static const xd_cmd_t ml_cmd_flush = {
    .name = "muc_log_flush",
    .doc = "wait until the queued room events of a host are written to the logs",
    .longdoc = "Returns when every event mod_muc_log had queued when the command started is in "
               "its file (or after 30 s with an error), with the counters of muc_log_stats; "
               "a round trip of an occupant that got a room's stanza comes after the room "
               "queued its event, so flush after it sees the event written.  An error while "
               "writes are paused.",
    .args = ml_host_args,
    .nargs = 1,
    .result = XD_CMD_RES_LIST,
    .fn = ml_flush_cmd,
};

static const xd_cmd_t ml_cmd_stats = {
    .name = "muc_log_stats",
    .doc = "counters of a host's MUC room logs",
    .longdoc = "queued: events waiting to be written; written: events written; dropped: events "
               "lost because the queue held queue_size; write_errors: batches that failed to "
               "write (logged); paused: muc_log_pause is in effect.",
    .args = ml_host_args,
    .nargs = 1,
    .result = XD_CMD_RES_LIST,
    .fn = ml_stats_cmd,
};

static const xd_cmd_t ml_cmd_pause = {
    .name = "muc_log_pause",
    .doc = "hold the writes of a host's MUC room logs (events queue up to queue_size)",
    .longdoc = "For moving or backing up the log directory: returns once nothing is being "
               "written.  Events go on being queued, and dropped beyond queue_size, until "
               "muc_log_resume.",
    .args = ml_host_args,
    .nargs = 1,
    .result = XD_CMD_RES_NONE,
    .fn = ml_pause_cmd,
};

static const xd_cmd_t ml_cmd_resume = {
    .name = "muc_log_resume",
    .doc = "write a host's MUC room logs again after muc_log_pause",
    .args = ml_host_args,
    .nargs = 1,
    .result = XD_CMD_RES_NONE,
    .fn = ml_pause_cmd,
};

/* ---- access_log ------------------------------------------------------------------------------ */

bool
muc_log_may_switch(const char *host, const xd_jid_t *who)
{
    xd_module_ctx_t *ctx = xd_module_instance("mod_muc_log", host);
    if (!ctx)
        return true;
    const ml_conf_t *c = xd_module_opts(ctx);
    bool ok = true;
    if (c->access_log && strcmp(c->access_log, "all") != 0) {
        xd_config_t *cfg = xd_config_get();
        ok = who && xd_access_match(cfg, host, c->access_log, who, NULL) == XD_ACCESS_ALLOW;
        xd_config_unref(cfg);
    }
    xd_module_release(ctx);
    return ok;
}

/* ---- module ------------------------------------------------------------------------------------ */

static char *
expand_host(const char *pattern, const char *host)
{
    const char *at = strstr(pattern, "@HOST@");
    if (!at)
        return xd_strdup(pattern);
    return xd_asprintf("%.*s%s%s", (int)(at - pattern), pattern, host, at + 6);
}

static void
ml_stop(xd_module_ctx_t *ctx)
{
    ml_state_t *s = xd_module_state(ctx);
    if (!s)
        return;
    /* No handler runs and no writer is in flight: what is still queued
     * (paused, or a writer that was canceled) is written here. */
    if (s->head)
        write_batch(ctx, s, s->head);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    xd_free(s->outdir);
    xd_free(s);
}

static int
ml_start(xd_module_ctx_t *ctx)
{
    const ml_conf_t *c = xd_module_opts(ctx);
    ml_state_t *s = xd_new(ml_state_t);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->tail = &s->head;
    xd_module_set_state(ctx, s);
    if (c->outdir) {
        s->outdir = expand_host(c->outdir, xd_module_host(ctx));
    } else {
        xd_config_t *cfg = xd_config_get();
        s->outdir = xd_asprintf("%s/muc_log", cfg ? xd_config_data_dir(cfg) : ".");
        xd_config_unref(cfg);
    }
    size_t n = strlen(s->outdir);
    while (n > 1 && s->outdir[n - 1] == '/')
        s->outdir[--n] = '\0';
    int rc = mkdirs(s->outdir);
    if (rc != 0)
        return xd_module_fail(ctx, rc, "cannot create %s: %s", s->outdir, xd_strerror(rc));
    rc = xd_module_hook(ctx, XD_HOOK_MUC_ROOM_EVENT, XD_HOOK_PRIO_DEFAULT, ml_on_event, NULL);
    const xd_cmd_t *cmds[] = { &ml_cmd_flush, &ml_cmd_stats, &ml_cmd_pause, &ml_cmd_resume };
    for (size_t i = 0; rc == 0 && i < sizeof cmds / sizeof *cmds; i++)
        rc = xd_module_command(ctx, cmds[i]);
    if (rc != 0)
        return xd_module_fail(ctx, rc, "cannot register: %s", xd_strerror(rc));
    XD_LOG(NULL, XD_INFO, "muc log", "host=%s outdir=%s format=%s", xd_module_host(ctx),
           s->outdir, c->format == FMT_PLAIN ? "plaintext" : "html");
    return 0;
}

static const char *const ml_depends[] = { "mod_muc", NULL };

const xd_module_t xd_mod_muc_log = {
    .abi = XD_MODULE_ABI,
    .name = "mod_muc_log",
    .doc = "Public logs of MUC rooms that enable logging: a file per room and day (HTML or "
           "plain text), an index per room and one of the rooms",
    .depends = ml_depends,
    .opts = ml_opts,
    .opts_size = sizeof(ml_conf_t),
    .start = ml_start,
    .stop = ml_stop,
};

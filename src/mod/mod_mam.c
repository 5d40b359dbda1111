/*
 * mod_mam.c — the message archive (XEP-0313, urn:xmpp:mam:2), for the
 * account's own archive.
 *
 * On for a host when `mod_mam` is listed under `modules`; needs
 * mod_stanza_id (the archive id of a received message is the XEP-0359
 * stanza-id it stamps).
 *
 * What is archived: chat and normal messages (no type is normal) that are
 * worth keeping (a body or a subject, or an OMEMO/OpenPGP payload without a
 * body: mod_msg_worth_keeping, as offline storage), or carry the XEP-0334
 * <store/> hint; not errors, groupchat or headline messages, carbon copies
 * (<sent/>, <received/>), archive results (<result/>), nor messages with
 * <no-permanent-store/> or <no-store/> (they win over <store/>).  Both
 * directions:
 *
 *   sent by a local user (USER_SEND_PACKET): into the sender's archive, with
 *     an id of ours, stamped as <stanza-id by='sender@host'/> on the message
 *     so that its carbon copies (<sent/>) show it; the stamp is taken off
 *     again before the message leaves (FILTER_PACKET of the sender's host:
 *     the recipient has no use for the sender's archive id).  Not for a
 *     message to one's own bare JID: that one is archived as received.
 *   received by a local user (FILTER_PACKET, after mod_stanza_id): into
 *     the recipient's archive with the stanza-id mod_stanza_id stamped, so
 *     the delivered message, its carbons and the archive show one id.
 *
 * A message the server routes again on its own (stream management's
 * unacknowledged messages of a session that ended, an offline message
 * whose session went) was archived when it was first routed and is not
 * archived again: it comes from no stream and already carries the
 * account's stanza-id (mam_pre_filter).  Other messages from no stream
 * (a room's private messages, the server's or a component's own) are
 * archived for the recipient.
 *
 * The writer, in two steps.  (1) The durability point is an append-only
 * journal, one file per worker and host (mam_journal.h): the per-worker
 * batched FIFO of mod_batch.h applies the preferences (XEP-0441, on the
 * pool, as before the journal: the always/never lists, then the default;
 * roster: the peer is in the account's roster with a subscription, asked
 * through ROSTER_GET; the lists and the default come from a bounded cache
 * per host, "the preferences cache") and appends the kept messages' records with one
 * write (fdatasync too with `journal_sync`); the sender's stream is held
 * until that write returned, so an answered IQ or SM ack after a message
 * proves it in the file.  When the FIFO is full the message is refused:
 * resource-constraint to the sender, nothing delivered.  A message's time
 * is taken when it is queued (microseconds, strictly increasing in the
 * process: one sender's messages keep their order).  (2) The indexer moves
 * journal records into the archive table in large transactions (up to 4
 * MiB of each file; sorted by account, then time, so that an account's
 * rows share index pages), one indexer at a time per host, and records in
 * the same transaction how far each file is consumed (mam_journal: node,
 * host, worker, generation, offset): a crash replays exactly what was not
 * committed (SQLite: 32 rows per INSERT, the transaction's pages in a
 * larger cache, mam_ix_commit).  It runs when the backlog passes
 * `journal_index_records` (200 000 records: a burst is not indexed while
 * it lasts), when the
 * journal has been idle for `journal_idle` (a run in the background gives
 * way between its transactions when appends resume and the backlog is
 * under that watermark: mam_ix_yield), at a stop, at start
 * before anything is served (the replay), when a batch would pass the
 * journal's bound (`journal_max_records`, `journal_max_bytes`: indexing
 * transactions until the batch fits; the batch's senders stay held
 * meanwhile, which is the back-pressure), and first
 * thing in every reader or modifier of the archive (queries, metadata,
 * room queries and moderation, expiry, delete_old_mam_messages, exports,
 * account removal: mam_drain; for one account's archive only when the
 * journal holds records of it, and then only that account's records, read
 * from where they were appended (kept per account in memory, mam_pend_t),
 * mam_drain_for; a removal drains all, mam_drain_before_delete), so that
 * each sees every answered message.  SQLite's full-text index follows the
 * rows in a pass of its own (mam_fts_pass: after a drain, every
 * MAM_FTS_BATCH rows at the bound, and first in a full-text query).
 * Retractions (XEP-0424) are applied when indexed, in time order with the
 * account's other rows.
 *
 * Queries (IQ to one's own bare JID, PARALLEL): <query/> get → the form;
 * set → results as messages to the querying full JID, in order, then the
 * IQ result with <fin/>; <prefs/> get/set.  Another account's archive:
 * forbidden.  Order: by time (microseconds, taken in the writing
 * transaction and strictly increasing in the process), then by row.
 *
 * Retention: `archive_expiry` (a TICK on worker 0 deletes older rows of the
 * host) and `xmppctl delete_old_mam_messages DAYS`; an account's removal
 * deletes its archive and preferences.
 *
 * Full-text search (XEP-0431): the SQL of the driver's index in mam_dialects.
 *
 * Metadata (#extended): <metadata/> get → the first and last messages.
 *
 * Retraction (XEP-0424): a message with <retract id/> (archived itself)
 * turns the sender's messages with that origin-id (or id) into tombstones
 * in this archive: mam_retract.
 *
 * Export: `xmppctl export_mam USER HOST FILE` (XEP-0227 <archive/>).
 *
 * Room archives (mam.h): mod_muc keeps each archived room's messages in
 * the same table (host = the MUC service's domain, username = the room,
 * peer = the room, resource = the sender's nick), written by the same
 * batcher (no preferences, no XEP-0424 retraction: a room's messages are
 * retracted by its moderators, XEP-0425, mam_room_moderate) and read by the
 * same queries (mam_room_iq).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mam.h"
#include "mam_journal.h"
#include "mod_batch.h"
#include "mod_util.h"
#include "xmppd/alloc.h"
#include "xmppd/auth.h"
#include "xmppd/cmd.h"
#include "xmppd/config.h"
#include "xmppd/err.h"
#include "xmppd/hooks.h"
#include "xmppd/input.h"
#include "xmppd/jid.h"
#include "xmppd/log.h"
#include "xmppd/map.h"
#include "xmppd/module.h"
#include "xmppd/ns.h"
#include "xmppd/owner.h"
#include "xmppd/roster.h"
#include "xmppd/route.h"
#include "xmppd/session.h"
#include "xmppd/stanza.h"
#include "xmppd/storage.h"

#define MAM_NS "urn:xmpp:mam:2"
#define MAM_NS_EXT "urn:xmpp:mam:2#extended"
#define MAM_FILTER_PRIO 70 /* FILTER_PACKET: after mod_stanza_id (60) */
#define MAM_Q_MAX 10000
#define MAM_Q_MAX_BYTES (64u << 20)
#define MAM_BATCH_MAX 1024
#define MAM_BATCH_MAX_BYTES (4u << 20)
#define MAM_ID_MAX 128     /* bytes of an archive id we look up */
#define MAM_QUERYID_MAX 256 /* bytes of a queryid echoed back */
#define MAM_NS_FTS "urn:xmpp:fulltext:0"
#define MAM_NS_RETRACT "urn:xmpp:message-retract:1"
#define MAM_FTS_FIELD "{urn:xmpp:fulltext:0}fulltext"
#define MAM_FTS_MAX 1024    /* bytes of a full-text search (XEP-0431) */

enum { MAM_NEVER = 0, MAM_ALWAYS = 1, MAM_ROSTER = 2 };

/* ---- options ----------------------------------------------------------------------------------- */

typedef struct mam_conf {
    int default_mode;        /* MAM_* for accounts without preferences */
    int max_page;            /* results per query page */
    int max_prefs_jids;      /* always + never entries per account */
    int prefs_cache;         /* accounts whose preferences are kept in memory */
    int max_count;           /* messages counted for RSM <count/> and index */
    uint64_t archive_expiry; /* ms; 0: kept for ever */
    bool journal_sync;       /* fdatasync after each append */
    int journal_index_records; /* backlog that starts indexing */
    uint64_t journal_idle;   /* ms without appends that starts indexing */
    int journal_max_records; /* backlog bound: records */
    size_t journal_max_bytes; /* backlog bound: bytes */
} mam_conf_t;

static const xd_opt_enum_t mam_modes[] = {
    { "always", MAM_ALWAYS },
    { "roster", MAM_ROSTER },
    { "never", MAM_NEVER },
    { NULL, 0 },
};

#define C_ mam_conf_t
static const xd_opt_t mam_opts[] = {
    XD_OPT_ENUM("default", C_, default_mode, "always", mam_modes,
                "What is archived for an account that set no preferences (XEP-0441): "
                "`always`, `roster` (only messages with contacts in the roster with a "
                "subscription) or `never`."),
    XD_OPT_INT("max_page", C_, max_page, "250", 1, 10000,
               "Messages in one page of query results: a larger RSM <max/> is cut to it, and a "
               "query without one gets this many."),
    XD_OPT_INT("max_prefs_jids", C_, max_prefs_jids, "1000", 0, 100000,
               "JIDs in an account's always and never lists together; a <prefs/> with more is "
               "refused with not-acceptable."),
    XD_OPT_INT("prefs_cache", C_, prefs_cache, "10000", 0, 10000000,
               "Accounts whose archiving preferences (XEP-0441) are kept in memory, so that "
               "archiving a message reads no table; beyond it the least recently used are "
               "dropped (read again at their next message).  0: read for every message.  A "
               "default of `roster` still asks the roster for each message."),
    XD_OPT_INT("max_count", C_, max_count, "1000", 0, 1000000,
               "Messages counted for a page's RSM <count/> and <first index/>: when more than "
               "this many match the query (or precede the page), they are left out (XEP-0059 "
               "lets a server omit them when counting is expensive) and a page costs the same "
               "in any archive size.  A query with <max>0</max> asks for the count only and "
               "always gets it exact."),
    XD_OPT_DURATION("archive_expiry", C_, archive_expiry, "0",
                    "Archived messages older than this are deleted (checked every minute, or "
                    "every expiry when that is shorter).  0: kept until the account is removed "
                    "or `xmppctl delete_old_mam_messages` deletes them."),
    XD_OPT_BOOL("journal_sync", C_, journal_sync, "false",
                "fdatasync the archive journal after each batch appended to it, before the "
                "senders are answered: an answered message then survives a power loss too "
                "(without it, as SQLite's synchronous=NORMAL, a power loss may lose the last "
                "batches; a crash of the server loses none).  Costs one disk flush per batch."),
    XD_OPT_INT("journal_index_records", C_, journal_index_records, "200000", 1, 100000000,
               "Archived messages waiting in the journal (records: one per archive a message "
               "goes to) beyond which they are moved into the indexed archive at once, in the "
               "background; below it they are moved when the journal has been idle for "
               "`journal_idle` (an indexing in progress gives way between its transactions "
               "when messages are appended again), or when a query or another reader of the "
               "archive needs them.  Keep it under `journal_max_records`, so that a long "
               "burst is indexed before it reaches the bound."),
    XD_OPT_DURATION("journal_idle", C_, journal_idle, "1s",
                    "How long the journal must go without appends before what it holds is "
                    "indexed (checked once a second)."),
    XD_OPT_INT("journal_max_records", C_, journal_max_records, "500000", 1, 1000000000,
               "The journal's bound in records: a batch that would pass it waits (its senders "
               "held) until the journal has been indexed; the per-worker write queue then fills "
               "and further messages are refused with resource-constraint."),
    XD_OPT_SIZE("journal_max_bytes", C_, journal_max_bytes, "256MiB",
                "The journal's bound in bytes, as `journal_max_records`."),
    XD_OPT_END,
};
#undef C_

/* ---- storage ----------------------------------------------------------------------------------- */

static const char *const mam_mig1[] = {
    "CREATE TABLE archive ("
    " seq {autoid},"
    " host {key} NOT NULL,"
    " username {key} NOT NULL,"
    " id {key} NOT NULL,"
    " ts {int} NOT NULL,"
    " peer {key} NOT NULL,"
    " resource {text} NOT NULL,"
    " dir {int} NOT NULL,"
    " body {text},"
    " xml {text} NOT NULL)",
    "CREATE UNIQUE INDEX archive_id ON archive (host, username, id)",
    "CREATE INDEX archive_ts ON archive (host, username, ts)",
    "CREATE INDEX archive_peer ON archive (host, username, peer, ts)",
    "CREATE INDEX archive_expiry ON archive (host, ts)",
    "CREATE TABLE archive_prefs ("
    " host {key} NOT NULL,"
    " username {key} NOT NULL,"
    " mode {int} NOT NULL,"
    " PRIMARY KEY (host, username))",
    "CREATE TABLE archive_prefs_jid ("
    " host {key} NOT NULL,"
    " username {key} NOT NULL,"
    " jid {key} NOT NULL,"
    " always {int} NOT NULL,"
    " PRIMARY KEY (host, username, jid))",
    NULL,
};

/* Full-text search (XEP-0431) over archive.body: the index is the
 * driver's own (mam_dialects below holds the matching query SQL).  SQLite:
 * an FTS5 table with the archive as external content, kept in step by
 * triggers, filled from the rows already there.  PostgreSQL: a GIN index
 * on the body's tsvector.  Other dialects: nothing (no full-text search
 * is offered). */
static const char *const mam_mig2[] = { NULL };
static const char *const mam_mig2_pgsql[] = {
    "CREATE INDEX archive_fts ON archive"
    " USING GIN (to_tsvector('simple', COALESCE(body, '')))",
    NULL,
};
/* MySQL/MariaDB: an InnoDB FULLTEXT index on body.  The body column gets
 * a case- and accent-insensitive collation (as FTS5's unicode61 folds them;
 * the database's utf8mb4_bin would make the search case-sensitive); body
 * is never a key nor compared otherwise.  Implicit commit: DDL. */
static const char *const mam_mig2_mysql[] = {
    "ALTER TABLE archive MODIFY body LONGTEXT CHARACTER SET utf8mb4"
    " COLLATE utf8mb4_unicode_ci NULL",
    "CREATE FULLTEXT INDEX archive_fts ON archive (body)",
    NULL,
};
static const char *const mam_mig2_sqlite[] = {
    "CREATE VIRTUAL TABLE archive_fts USING fts5(body, content='archive', content_rowid='seq')",
    "CREATE TRIGGER archive_fts_insert AFTER INSERT ON archive WHEN new.body IS NOT NULL BEGIN"
    " INSERT INTO archive_fts (rowid, body) VALUES (new.seq, new.body); END",
    "CREATE TRIGGER archive_fts_delete AFTER DELETE ON archive WHEN old.body IS NOT NULL BEGIN"
    " INSERT INTO archive_fts (archive_fts, rowid, body) VALUES ('delete', old.seq, old.body);"
    " END",
    "CREATE TRIGGER archive_fts_update AFTER UPDATE OF body ON archive BEGIN"
    " INSERT INTO archive_fts (archive_fts, rowid, body)"
    "  SELECT 'delete', old.seq, old.body WHERE old.body IS NOT NULL;"
    " INSERT INTO archive_fts (rowid, body) SELECT new.seq, new.body WHERE new.body IS NOT NULL;"
    " END",
    "INSERT INTO archive_fts (archive_fts) VALUES ('rebuild')",
    NULL,
};

/* XEP-0424: the id a sender's client gave the message (its XEP-0359
 * origin-id, else its id attribute), which a retraction names.  msgid
 * leads the index so that only a lookup by msgid can use it: an index
 * starting (host, username) competes with archive_ts for every query, and
 * in a database analyzed before this migration (statistics for the old
 * indexes, none for this one) SQLite took it for the last page, sorting
 * the whole archive. */
static const char *const mam_mig3[] = {
    "ALTER TABLE archive ADD COLUMN msgid {key}",
    "CREATE INDEX archive_msgid ON archive (msgid, host, username, peer)",
    NULL,
};

/* The journal (mam_journal.h): how far each journal file of a node (a data
 * directory, by its id) has been moved into the archive, written in the same
 * transaction as the rows. */
static const char *const mam_mig4[] = {
    "CREATE TABLE mam_journal ("
    " node {key} NOT NULL,"
    " host {key} NOT NULL,"
    " worker {int} NOT NULL,"
    " gen {int} NOT NULL,"
    " pos {int} NOT NULL,"
    " PRIMARY KEY (node, host, worker))",
    NULL,
};

/* archive_msgid keyed by the account first: migration 3's index led with
 * the client's random id, so each new row went to a random page of one
 * global B-tree (in a large archive, a page read and a page written per
 * row); (host, username, msgid) puts an account's ids together, and the
 * indexer writes an account's rows together.  Partial (msgid IS NOT NULL):
 * only a condition on msgid (the retraction's `msgid = ?`) implies it, so
 * no other query can choose this index, whatever the statistics (the reason
 * migration 3 led with msgid; see there).  MySQL has no partial index: a
 * plain one, its statistics taken when it is created. */
static const char *const mam_mig5[] = {
    "DROP INDEX archive_msgid",
    "CREATE INDEX archive_msgid_acct ON archive (host, username, msgid) WHERE msgid IS NOT NULL",
    NULL,
};
static const char *const mam_mig5_mysql[] = {
    "DROP INDEX archive_msgid ON archive",
    "CREATE INDEX archive_msgid_acct ON archive (host, username, msgid)",
    NULL,
};
static const char *const mam_mig5_mssql[] = {
    "DROP INDEX archive_msgid ON archive",
    "CREATE INDEX archive_msgid_acct ON archive (host, username, msgid) WHERE msgid IS NOT NULL",
    NULL,
};

/* SQLite's full-text index is filled in its own pass, not by a trigger per
 * row: an FTS5 write inside a statement opens a savepoint in the virtual
 * table, which flushes FTS5's pending terms as a new segment, so the
 * trigger wrote (and later merged) one segment per archived row, most of
 * an indexing transaction's cost.  mam_fts.pos: the rows up to that seq
 * are in archive_fts; mam_fts_pass adds the ones after it with one
 * INSERT … SELECT (one segment per pass) and moves pos, in one transaction.
 * Deletes and body updates reach the index only for rows it has (a
 * 'delete' of a row FTS5 never saw would corrupt it); a full-text query
 * runs the pass first, so it finds every row.  (seq is AUTOINCREMENT: never
 * reused below pos.) */
static const char *const mam_mig6[] = { NULL };
static const char *const mam_mig6_sqlite[] = {
    "CREATE TABLE mam_fts (pos {int} NOT NULL)",
    "INSERT INTO mam_fts (pos) SELECT COALESCE(MAX(seq), 0) FROM archive",
    "DROP TRIGGER archive_fts_insert",
    "DROP TRIGGER archive_fts_delete",
    "DROP TRIGGER archive_fts_update",
    "CREATE TRIGGER archive_fts_delete AFTER DELETE ON archive"
    " WHEN old.body IS NOT NULL AND old.seq <= (SELECT pos FROM mam_fts) BEGIN"
    " INSERT INTO archive_fts (archive_fts, rowid, body) VALUES ('delete', old.seq, old.body);"
    " END",
    "CREATE TRIGGER archive_fts_update AFTER UPDATE OF body ON archive"
    " WHEN old.seq <= (SELECT pos FROM mam_fts) BEGIN"
    " INSERT INTO archive_fts (archive_fts, rowid, body)"
    "  SELECT 'delete', old.seq, old.body WHERE old.body IS NOT NULL;"
    " INSERT INTO archive_fts (rowid, body) SELECT new.seq, new.body WHERE new.body IS NOT NULL;"
    " END",
    NULL,
};

static const xd_db_migration_t mam_migrations[] = {
    { 1, NULL, mam_mig1 },
    { 2, NULL, mam_mig2 },
    { 2, "sqlite", mam_mig2_sqlite },
    { 2, "pgsql", mam_mig2_pgsql },
    { 2, "mysql", mam_mig2_mysql },
    { 3, NULL, mam_mig3 },
    { 4, NULL, mam_mig4 },
    { 5, NULL, mam_mig5 },
    { 5, "mysql", mam_mig5_mysql },
    { 5, "mssql", mam_mig5_mssql },
    { 6, NULL, mam_mig6 },
    { 6, "sqlite", mam_mig6_sqlite },
    { 0, NULL, NULL },
};

static const xd_module_schema_t mam_schemas[] = {
    { "mod_mam", mam_migrations },
    { NULL, NULL },
};

/* Microseconds since the epoch, strictly increasing in the process (two
 * rows never share a time, and rows written later never sort earlier). */
static int64_t
mam_now_us(void)
{
    static _Atomic int64_t last;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    int64_t prev = atomic_load(&last);
    int64_t t;
    do {
        t = now > prev ? now : prev + 1;
    } while (!atomic_compare_exchange_weak(&last, &prev, t));
    return t;
}

/* XEP-0082 "2010-07-10T23:08:25.123456Z" for us. */
static void
mam_stamp(int64_t us, char *buf, size_t cap)
{
    time_t s = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(us % 1000000));
}

/* Days since 1970-01-01 of a civil date (proleptic Gregorian). */
static int64_t
mam_days(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static bool
mam_digits(const char **p, int n, int64_t *out)
{
    int64_t v = 0;
    for (int i = 0; i < n; i++) {
        if ((*p)[i] < '0' || (*p)[i] > '9')
            return false;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return true;
}

/* A XEP-0082 DateTime (CCYY-MM-DDThh:mm:ss[.sss](Z|±hh:mm)) into
 * microseconds since the epoch; false when it is not one. */
static bool
mam_parse_time(const char *s, int64_t *out)
{
    int64_t y, mo, d, h, mi, se, us = 0;
    const char *p = s;
    if (!mam_digits(&p, 4, &y) || *p++ != '-' || !mam_digits(&p, 2, &mo) || *p++ != '-' ||
        !mam_digits(&p, 2, &d) || *p++ != 'T' || !mam_digits(&p, 2, &h) || *p++ != ':' ||
        !mam_digits(&p, 2, &mi) || *p++ != ':' || !mam_digits(&p, 2, &se))
        return false;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60)
        return false;
    if (*p == '.') {
        p++;
        int n = 0;
        int64_t scale = 100000;
        while (*p >= '0' && *p <= '9') {
            if (n < 6)
                us += (*p - '0') * scale;
            scale /= 10;
            n++;
            p++;
        }
        if (n == 0)
            return false;
    }
    int64_t off = 0;
    if (*p == 'Z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1;
        int64_t oh, om;
        if (!mam_digits(&p, 2, &oh) || *p++ != ':' || !mam_digits(&p, 2, &om) || oh > 23 ||
            om > 59)
            return false;
        off = sign * (oh * 3600 + om * 60);
    } else {
        return false;
    }
    if (*p)
        return false;
    int64_t secs = mam_days(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - off;
    *out = secs * 1000000 + us;
    return true;
}

/* ---- the SQL dialect of full-text search ------------------------------------------------------- */

/* What differs between drivers in searching (XEP-0431): the tables a
 * search reads, its condition (one `?`: the search), the column that
 * orders the matches (the archive's seq, through the index: rows are
 * written with ts increasing with seq per account, see mam_ix_tx, so this order is
 * the archive's), and how a user's text becomes the parameter.  A driver
 * without an entry has no full-text search: the field is neither
 * advertised nor accepted. */
typedef struct mam_dialect {
    const char *driver;
    const char *fts_from;
    const char *fts_where;
    const char *fts_seq;
    /* The parameter for text into out (cap bytes); false when it has no
     * word to search for. */
    bool (*fts_param)(const char *text, char *out, size_t cap);
} mam_dialect_t;

/* FTS5: every word must occur (in any order), "a phrase" in quotes as
 * one; each term is an FTS5 string, so the search has no operators and no
 * syntax errors (AND, OR, NEAR, * are words like any other). */
static bool
mam_fts5_param(const char *text, char *out, size_t cap)
{
    size_t n = 0;
    bool any = false;
    const char *p = text;
    out[0] = 0;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
            p++;
        if (!*p)
            break;
        const char *start = p, *end;
        if (*p == '"') { /* a phrase, to the closing quote or the end */
            start = ++p;
            while (*p && *p != '"')
                p++;
            end = p;
            if (*p)
                p++;
        } else {
            while (*p && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != '"')
                p++;
            end = p;
        }
        if (end == start)
            continue;
        /* Each byte at most twice (a quote is doubled), the two quotes and
         * a space: the caller's cap is 2 * strlen(text) + 4 or more. */
        if (n + 2 * (size_t)(end - start) + 4 > cap)
            return false;
        if (any)
            out[n++] = ' ';
        out[n++] = '"';
        for (const char *c = start; c < end; c++) {
            if (*c == '"')
                out[n++] = '"';
            out[n++] = *c;
        }
        out[n++] = '"';
        out[n] = 0;
        any = true;
    }
    return any;
}

/* MySQL's boolean mode: every term required (+), each a quoted phrase so
 * that operators (+ - < > ( ) ~ * @) inside it are plain characters; the
 * term's own double quotes are dropped (a phrase cannot hold one). */
static bool
mam_mysql_param(const char *text, char *out, size_t cap)
{
    size_t n = 0;
    bool any = false;
    const char *p = text;
    out[0] = 0;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
            p++;
        if (!*p)
            break;
        const char *start = p, *end;
        if (*p == '"') {
            start = ++p;
            while (*p && *p != '"')
                p++;
            end = p;
            if (*p)
                p++;
        } else {
            while (*p && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != '"')
                p++;
            end = p;
        }
        if (end == start)
            continue;
        /* Each byte once, "+\"", the closing quote and a space. */
        if (n + (size_t)(end - start) + 5 > cap)
            return false;
        if (any)
            out[n++] = ' ';
        out[n++] = '+';
        out[n++] = '"';
        for (const char *c = start; c < end; c++)
            out[n++] = *c;
        out[n++] = '"';
        out[n] = 0;
        any = true;
    }
    return any;
}

static const mam_dialect_t mam_dialects[] = {
    /* FTS5 walks its matches in rowid order, newest first when asked, and
     * seeks to a rowid bound: a page reads about its own rows.  CROSS JOIN
     * keeps FTS5 the outer loop: without it a count (no ORDER BY) may be
     * planned over the account's rows with one FTS5 lookup each. */
    { "sqlite", "archive_fts CROSS JOIN archive ON archive.seq = archive_fts.rowid",
      " AND archive_fts MATCH ?", "archive_fts.rowid", mam_fts5_param },
    /* PostgreSQL: an expression GIN index over the body's words ('simple':
     * lower case, no stemming, as FTS5's unicode61).  The terms are passed
     * quoted, as for FTS5, to websearch_to_tsquery: every word must occur,
     * a quoted phrase as one, and OR or - are words like any other. */
    { "pgsql", "archive",
      " AND to_tsvector('simple', COALESCE(body, ''))"
      " @@ websearch_to_tsquery('simple', ?)",
      "seq", mam_fts5_param },
    /* MySQL/MariaDB: InnoDB FULLTEXT in boolean mode.  Unlike FTS5, words
     * shorter than innodb_ft_min_token_size (default 3) and the server's
     * stopwords are not indexed, so they find nothing (docs/admin.md). */
    { "mysql", "archive", " AND MATCH (body) AGAINST (? IN BOOLEAN MODE)", "seq",
      mam_mysql_param },
};

static const mam_dialect_t *
mam_dialect(xd_db_t *db)
{
    const char *name = db ? xd_db_dialect(db) : NULL;
    for (size_t i = 0; name && i < sizeof mam_dialects / sizeof mam_dialects[0]; i++)
        if (!strcmp(mam_dialects[i].driver, name))
            return &mam_dialects[i];
    return NULL;
}

/* ---- what is archived -------------------------------------------------------------------------- */

/* A message that goes into the archives: see the top of the file. */
static bool
mam_archivable(const xd_el_t *el)
{
    if (xd_stanza_kind_of(el) != XD_STANZA_MESSAGE)
        return false;
    const char *type = xd_el_attr(el, "type");
    if (type && strcmp(type, "chat") != 0 && strcmp(type, "normal") != 0)
        return false; /* error, groupchat, headline */
    if (xd_el_child(el, "sent", XD_NS_CARBONS) || xd_el_child(el, "received", XD_NS_CARBONS) ||
        xd_el_child(el, "result", MAM_NS))
        return false;
    if (xd_el_child(el, "no-permanent-store", XD_NS_HINTS) ||
        xd_el_child(el, "no-store", XD_NS_HINTS))
        return false;
    return xd_el_child(el, "store", XD_NS_HINTS) || xd_el_child(el, "retract", MAM_NS_RETRACT) ||
           mod_msg_worth_keeping(el);
}

/* The stanza-id in msg claiming `by`, or NULL. */
static const xd_el_t *
mam_sid(const xd_el_t *msg, const char *by)
{
    for (const xd_el_t *c = xd_el_first_child(msg); c; c = xd_el_next(c))
        if (xd_el_is(c, "stanza-id", XD_NS_SID)) {
            const char *cby = xd_el_attr(c, "by");
            if (cby && !strcmp(cby, by))
                return c;
        }
    return NULL;
}

/* ---- the writer -------------------------------------------------------------------------------- */

typedef struct mam_item {
    mod_batch_item_t b;   /* first (mod_batch.h); b.bytes is the XML's length */
    char *host, *user;    /* the archive's account */
    char id[MAM_ID_MAX + 1];
    char *peer;           /* the other party's bare JID */
    char *resource;       /* its resource, "" */
    int dir;              /* 0: received, 1: sent */
    char *body;           /* or NULL */
    char *xml;            /* the message */
    char *msgid;          /* its origin-id or id, or NULL */
    char *retract;        /* XEP-0424: the msgid it retracts, or NULL */
    bool check_account;   /* received without a session: does the account exist? */
    bool room;            /* a room's archive (mam.h): no preferences */
    int default_mode;     /* the host's default */
    unsigned worker;      /* the worker that queued it: its journal */
    int64_t ts;           /* taken when queued */
    uint32_t rec_len;     /* its journal record's bytes (mam_batch_write) */
} mam_item_t;

/* m's journal record (pointing at m's strings). */
static mam_rec_t
mam_item_rec(const mam_item_t *m)
{
    return (mam_rec_t){ .host = m->host, .user = m->user, .id = m->id, .peer = m->peer,
                        .resource = m->resource, .msgid = m->msgid, .retract = m->retract,
                        .body = m->body, .xml = m->xml, .ts = m->ts, .dir = m->dir };
}

/* The item and its strings are one allocation (mam_queue_item). */
static void
mam_item_free(mam_item_t *m)
{
    xd_free(m);
}

typedef struct mam_roster_ask {
    bool found;
} mam_roster_ask_t;

static int
mam_roster_item(void *arg, const xd_roster_view_t *item)
{
    mam_roster_ask_t *a = arg;
    if (item->in_roster && item->sub != XD_ROSTER_SUB_NONE)
        a->found = true;
    return 0;
}

static int
mam_int_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    if (ncols >= 1 && cols[0].type == XD_DB_INT64)
        *(int64_t *)arg = cols[0].i;
    return 1;
}

/* Status of an item that is not written, without being an error. */
#define MAM_SKIP 1

/* The tombstone of an archived message (XEP-0424): its addressing (from,
 * to, type, id), <retracted stamp/> and the origin-id it had; nothing of
 * its content.  NULL when the stored XML does not parse. */
static char *
mam_tombstone(const char *xml, const char *msgid, int64_t now)
{
    xd_stanza_t *orig = NULL;
    if (xd_stanza_parse(xml, strlen(xml), XD_NS_CLIENT, &orig) != 0)
        return NULL;
    const xd_el_t *o = xd_stanza_root(orig);
    xd_el_t *m = xd_el_new("message", NULL);
    static const char *const keep[] = { "from", "to", "type", "id" };
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
        if (xd_el_attr(o, keep[i]))
            xd_el_set_attr(m, keep[i], xd_el_attr(o, keep[i]));
    xd_stanza_unref(orig);
    char stamp[64];
    mam_stamp(now, stamp, sizeof stamp);
    xd_el_set_attr(xd_el_add_child(m, "retracted", MAM_NS_RETRACT), "stamp", stamp);
    xd_el_set_attr(xd_el_add_child(m, "origin-id", XD_NS_SID), "id", msgid);
    xd_stanza_t *st = xd_el_freeze(m);
    size_t len;
    const char *b = xd_stanza_bytes(st, &len);
    char *out = xd_strndup(b, len);
    xd_stanza_unref(st);
    return out;
}

typedef struct mam_seqs {
    int64_t seq[16];
    char *xml[16];
    size_t n;
} mam_seqs_t;

static int
mam_seq_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    mam_seqs_t *r = arg;
    if (ncols < 2 || cols[0].type != XD_DB_INT64 || cols[1].type != XD_DB_TEXT)
        return 0;
    r->seq[r->n] = cols[0].i;
    r->xml[r->n] = xd_strndup(cols[1].s.p, cols[1].s.len);
    return ++r->n == sizeof r->seq / sizeof r->seq[0];
}

/* ---- the journal and the indexer ----------------------------------------------------------------- */

/* Per host (the instance's state): the journal files and the indexer. */
typedef struct mam_state {
    _Atomic uint64_t next_purge_ms;  /* worker 0's loop clock */
    _Atomic int64_t last_append_ms;  /* CLOCK_MONOTONIC of the last append */
    atomic_bool ix_queued;           /* a background indexing is submitted */
    pthread_mutex_t ix_mu;           /* one indexer at a time */
    pthread_mutex_t pend_mu;         /* guards pend */
    xd_map_t pend;                   /* "user@host" -> mam_pend_t: its records in the journal */
    pthread_mutex_t pc_mu;           /* guards the preferences cache below */
    xd_map_t pc;                     /* "user@host" -> mam_pc_t */
    struct mam_pc *pc_head, *pc_tail; /* most and least recently used */
    uint64_t pc_gen;                 /* +1 at each invalidation */
    xd_map_t done;                   /* "w:gen:offset" of records a reader's drain
                                      * indexed ahead of the indexer (under ix_mu) */
    _Atomic uint64_t fts_behind;     /* rows indexed since the last full-text pass */
    bool journal_init;               /* mam_journal_open was called (close it) */
    bool journal_ok;                 /* the journal is open and replayed */
    mam_journal_t j;
} mam_state_t;

static int64_t
mam_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "user@host", the key of an account's entries (pending records, cached
 * preferences); .p NULL when it is longer than any JID of ours. */
typedef char mam_key_buf_t[2 * XD_JID_PART_MAX + 2];

static xd_str_t
mam_acct_key(mam_key_buf_t buf, const char *host, const char *user)
{
    int kl = snprintf(buf, sizeof(mam_key_buf_t), "%s@%s", user, host);
    if (kl <= 0 || (size_t)kl >= sizeof(mam_key_buf_t))
        return (xd_str_t){ NULL, 0 };
    return (xd_str_t){ buf, (size_t)kl };
}

/* Where a journal record is: worker w's file, generation gen, at byte off. */
typedef struct mam_loc {
    uint64_t gen, off;
    uint32_t len;
    unsigned w;
} mam_loc_t;

/* The journal's records of one archive ("user@host" in st->pend): a reader
 * of one account's archive drains the journal only when the account has
 * some there, and then reads just those (their places), not the journal.
 * n: +1 before a record is appended (so that nobody answered about it finds
 * none), -1 once it is committed in the archive (or its append failed).
 * loc: the appended ones' places, in the order they were appended (added
 * under the file's mutex, before the indexer can read them; taken off when
 * indexed).  Under pend_mu. */
typedef struct mam_pend {
    size_t n;
    mam_loc_t *loc;
    size_t nloc, cap;
} mam_pend_t;

static void
mam_pend_free(void *v)
{
    mam_pend_t *e = v;
    if (e)
        xd_free(e->loc);
    xd_free(e);
}

/* +1 for each of n records of user@host about to be appended; -1 for each
 * whose append failed or that was indexed.  Caller holds pend_mu. */
static void
mam_pend_count_locked(mam_state_t *st, xd_str_t k, long delta)
{
    mam_pend_t *e = xd_map_get(&st->pend, k);
    if (delta > 0) {
        if (!e) {
            e = xd_new(mam_pend_t);
            xd_map_put(&st->pend, k, e);
        }
        e->n += (size_t)delta;
    } else if (e) {
        size_t d = (size_t)-delta;
        e->n = d < e->n ? e->n - d : 0;
        if (e->n == 0)
            mam_pend_free(xd_map_del(&st->pend, k));
    }
}

static void
mam_pend_add(mam_state_t *st, const char *host, const char *user, long delta)
{
    mam_key_buf_t key;
    xd_str_t k = mam_acct_key(key, host, user);
    if (!k.p)
        return; /* not a JID of ours: never asked for */
    pthread_mutex_lock(&st->pend_mu);
    mam_pend_count_locked(st, k, delta);
    pthread_mutex_unlock(&st->pend_mu);
}

static bool
mam_pend_has(mam_state_t *st, const char *host, const char *user)
{
    mam_key_buf_t key;
    xd_str_t k = mam_acct_key(key, host, user);
    if (!k.p)
        return true;
    pthread_mutex_lock(&st->pend_mu);
    bool has = xd_map_get(&st->pend, k) != NULL;
    pthread_mutex_unlock(&st->pend_mu);
    return has;
}

/* ---- the preferences cache --------------------------------------------------------------------- */

/* An account's preferences (XEP-0441) as stored: its default (-1: none set,
 * the host's applies) and its always/never lists.  Filled on the first
 * message of the account that a batch evaluates; dropped when the account
 * sets <prefs/> or is removed; at most `prefs_cache` accounts, the least
 * recently used one dropped first.  A fill that started before a drop of
 * the same account (pc_gen moved meanwhile) is not kept: it may have read
 * the rows from before the change.  The roster is not cached: a default of
 * `roster` still asks ROSTER_GET per message (mod_roster's own cache). */
typedef struct mam_pc {
    char *key;                 /* "user@host" */
    int mode;                  /* MAM_*, or -1 */
    xd_map_t jids;             /* bare JID -> (void *)(1 + always) */
    struct mam_pc *prev, *next;
} mam_pc_t;

static void
mam_pc_free(void *v)
{
    mam_pc_t *p = v;
    if (!p)
        return;
    xd_map_free(&p->jids, NULL);
    xd_free(p->key);
    xd_free(p);
}

static void
mam_pc_unlink(mam_state_t *st, mam_pc_t *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        st->pc_head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        st->pc_tail = p->prev;
    p->prev = p->next = NULL;
}

static void
mam_pc_push(mam_state_t *st, mam_pc_t *p)
{
    p->next = st->pc_head;
    if (st->pc_head)
        st->pc_head->prev = p;
    st->pc_head = p;
    if (!st->pc_tail)
        st->pc_tail = p;
}

/* Drops the cached preferences of user@host (set or removed).  Any thread. */
static void
mam_pc_drop(mam_state_t *st, const char *host, const char *user)
{
    mam_key_buf_t key;
    xd_str_t k = mam_acct_key(key, host, user);
    pthread_mutex_lock(&st->pc_mu);
    st->pc_gen++;
    if (k.p) {
        mam_pc_t *p = xd_map_del(&st->pc, k);
        if (p) {
            mam_pc_unlink(st, p);
            mam_pc_free(p);
        }
    }
    pthread_mutex_unlock(&st->pc_mu);
}

static int
mam_pc_jid_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    mam_pc_t *p = arg;
    if (ncols < 2 || cols[0].type != XD_DB_TEXT || cols[1].type != XD_DB_INT64)
        return 0;
    xd_map_put(&p->jids, cols[0].s, (void *)(uintptr_t)(1 + (cols[1].i != 0)));
    return 0;
}

/* The stored preferences of user@host, read from the database.  Pool
 * thread. */
static int
mam_pc_load(xd_db_conn_t *c, const char *host, const char *user, mam_pc_t *p)
{
    xd_db_val_t k[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user) };
    int64_t mode = -1;
    int rc = xd_db_query(c, "SELECT mode FROM archive_prefs WHERE host = ? AND username = ?", k,
                         2, mam_int_row, &mode);
    if (rc == 0)
        rc = xd_db_query(c,
                         "SELECT jid, always FROM archive_prefs_jid WHERE host = ? AND username = ?",
                         k, 2, mam_pc_jid_row, p);
    p->mode = mode >= 0 && mode <= MAM_ROSTER ? (int)mode : -1;
    return rc;
}

/* The account's mode for peer from p: the always/never lists first
 * (MAM_ALWAYS/MAM_NEVER), then its default (the host's when none). */
static int
mam_pc_mode(const mam_pc_t *p, const char *peer, int host_default)
{
    uintptr_t v = (uintptr_t)xd_map_get(&p->jids, xd_str_c(peer));
    if (v)
        return v == 2 ? MAM_ALWAYS : MAM_NEVER;
    return p->mode >= 0 ? p->mode : host_default;
}

/* The account's mode (MAM_*) for peer: the always/never lists first, then
 * its default (the host's when it set none); roster: the peer is in the
 * account's roster with a subscription.  Pool thread; *c is acquired on
 * first need (the caller releases it when set). */
static int
mam_mode_for(xd_module_ctx_t *ctx, xd_db_conn_t **c, const char *host, const char *user,
             const char *peer, int host_default, bool *keep)
{
    const mam_conf_t *mc = xd_module_opts(ctx);
    mam_state_t *st = xd_module_state(ctx);
    mam_key_buf_t key;
    xd_str_t k = mam_acct_key(key, host, user);
    bool cacheable = mc->prefs_cache > 0 && k.p;
    int mode = -1;
    uint64_t gen = 0;
    if (cacheable) {
        pthread_mutex_lock(&st->pc_mu);
        mam_pc_t *p = xd_map_get(&st->pc, k);
        if (p) {
            mam_pc_unlink(st, p);
            mam_pc_push(st, p);
            mode = mam_pc_mode(p, peer, host_default);
        }
        gen = st->pc_gen;
        pthread_mutex_unlock(&st->pc_mu);
    }
    if (mode < 0) {
        int rc = *c ? 0 : xd_db_acquire(xd_module_db(ctx), c);
        if (rc != 0)
            return rc;
        mam_pc_t *p = xd_new(mam_pc_t);
        rc = mam_pc_load(*c, host, user, p);
        if (rc != 0) {
            mam_pc_free(p);
            return rc;
        }
        mode = mam_pc_mode(p, peer, host_default);
        if (cacheable) {
            pthread_mutex_lock(&st->pc_mu);
            if (gen == st->pc_gen && !xd_map_get(&st->pc, k)) {
                p->key = xd_strndup(k.p, k.len);
                xd_map_put(&st->pc, k, p);
                mam_pc_push(st, p);
                p = NULL;
                while (xd_map_count(&st->pc) > (size_t)mc->prefs_cache) {
                    mam_pc_t *old = st->pc_tail;
                    mam_pc_unlink(st, old);
                    xd_map_del(&st->pc, xd_str_c(old->key));
                    mam_pc_free(old);
                }
            }
            pthread_mutex_unlock(&st->pc_mu);
        }
        mam_pc_free(p);
    }
    if (mode == MAM_ROSTER) {
        mam_roster_ask_t a = { false };
        xd_hook_roster_get_t ev = {
            .host = host, .user = user, .contact = peer, .fn = mam_roster_item, .arg = &a,
        };
        xd_hook_run(XD_HOOK_ROSTER_GET, host, &ev);
        if (ev.served && ev.rc != 0)
            return ev.rc;
        *keep = a.found;
        return 0;
    }
    *keep = mode == MAM_ALWAYS;
    return 0;
}

#define MAM_IX_FILE_BYTES (4u << 20) /* read from one file per indexing transaction */
#define MAM_IX_TX_BYTES (16u << 20)  /* from all files: with many workers, less of each */

/* One record being indexed. */
typedef struct mam_ix_rec {
    mam_rec_t r;
    unsigned file; /* index in mam_ix_t.files */
    size_t pos;    /* order within the file */
} mam_ix_rec_t;

typedef struct mam_ix_file {
    mam_jfile_t *f;
    uint64_t gen, start, end, n;
    unsigned char *buf;
} mam_ix_file_t;

typedef struct mam_ix {
    mam_state_t *st;
    const char *host;   /* the instance's host (the mam_journal key) */
    mam_ix_file_t *files;
    size_t nfiles;
    mam_ix_rec_t *v;
    size_t n, cap;
    bool account_only;  /* one account's records (mam_drain_for): no offsets moved */
    char **skipped;     /* done-set keys of the records passed over (indexed before) */
    size_t nskipped;
    struct mam_ix_rows *rows; /* SQLite: rows waiting for their INSERT; else NULL */
} mam_ix_t;

/* The key of the record at byte `off` of worker w's file, generation gen,
 * in mam_state_t.done. */
static xd_str_t
mam_done_key(char *buf, size_t cap, unsigned w, uint64_t gen, uint64_t off)
{
    int n = snprintf(buf, cap, "%u:%llu:%llu", w, (unsigned long long)gen,
                     (unsigned long long)off);
    return (xd_str_t){ buf, n > 0 ? (size_t)n : 0 };
}

static int
mam_ix_cmp(const void *a, const void *b)
{
    const mam_ix_rec_t *x = a, *y = b;
    int c = strcmp(x->r.host, y->r.host);
    if (c == 0)
        c = strcmp(x->r.user, y->r.user);
    if (c != 0)
        return c;
    if (x->r.ts != y->r.ts)
        return x->r.ts < y->r.ts ? -1 : 1;
    if (x->file != y->file)
        return x->file < y->file ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static void
mam_ix_clear(mam_ix_t *x)
{
    for (size_t i = 0; i < x->nfiles; i++)
        xd_free(x->files[i].buf);
    xd_free(x->files);
    xd_free(x->v);
    for (size_t i = 0; i < x->nskipped; i++)
        xd_free(x->skipped[i]);
    xd_free(x->skipped);
    xd_free(x->rows);
    x->rows = NULL;
    x->files = NULL;
    x->v = NULL;
    x->skipped = NULL;
    x->nfiles = x->n = x->cap = x->nskipped = 0;
}

/* XEP-0424: the messages a retraction names become tombstones in this
 * archive.  Only the sender's own messages: the same direction and the
 * same peer as the retraction (in the sender's archive its sent messages
 * to that peer, in the recipient's the messages received from it), so
 * nobody retracts another's message.  Retracted ones are left alone. */
static int
mam_retract(xd_db_conn_t *c, const mam_rec_t *m, int64_t now)
{
    xd_db_val_t k[] = { XD_DB_V_CSTR(m->host), XD_DB_V_CSTR(m->user), XD_DB_V_CSTR(m->peer),
                        XD_DB_V_CSTR(m->retract), XD_DB_V_INT(m->dir) };
    mam_seqs_t r = { .n = 0 };
    int rc = xd_db_query(c,
                         "SELECT seq, xml FROM archive WHERE host = ? AND username = ?"
                         " AND peer = ? AND msgid = ? AND dir = ? AND body IS NOT NULL",
                         k, 5, mam_seq_row, &r);
    for (size_t i = 0; i < r.n; i++) {
        char *t = rc == 0 ? mam_tombstone(r.xml[i], m->retract, now) : NULL;
        if (t) {
            xd_db_val_t u[] = { XD_DB_V_CSTR(t), XD_DB_V_INT(r.seq[i]) };
            rc = xd_db_query(c, "UPDATE archive SET body = NULL, xml = ? WHERE seq = ?", u, 2,
                             NULL, NULL);
            xd_free(t);
        }
        xd_free(r.xml[i]);
    }
    return rc;
}

static bool mam_fts_deferred(xd_module_ctx_t *ctx);

/* SQLite: the rows of an indexing transaction go in MAM_IX_ROWS at a time,
 * one INSERT of that many rows (one statement run, its program started once
 * for them all), the rest one INSERT each.  Two statements, cached. */
#define MAM_IX_ROWS 32
#define MAM_IX_COLS 10
#define MAM_IX_V1 "(?,?,?,?,?,?,?,?,?,?)"
#define MAM_IX_V2 MAM_IX_V1 "," MAM_IX_V1
#define MAM_IX_V4 MAM_IX_V2 "," MAM_IX_V2
#define MAM_IX_V8 MAM_IX_V4 "," MAM_IX_V4
#define MAM_IX_V16 MAM_IX_V8 "," MAM_IX_V8
#define MAM_IX_V32 MAM_IX_V16 "," MAM_IX_V16
#define MAM_IX_INSERT(v)                                                                       \
    "INSERT INTO archive (host, username, id, ts, peer, resource, dir, body, xml, msgid)"     \
    " VALUES " v " ON CONFLICT (host, username, id) DO NOTHING"

typedef struct mam_ix_rows {
    size_t n;
    xd_db_val_t v[MAM_IX_ROWS * MAM_IX_COLS];
} mam_ix_rows_t;

/* The rows waiting in r into the archive: a full set with one statement, a
 * part one row at a time (a statement per count would fill the cache). */
static int
mam_ix_flush(xd_db_conn_t *c, mam_ix_rows_t *r)
{
    _Static_assert(MAM_IX_ROWS == 32, "MAM_IX_V32 has MAM_IX_ROWS rows");
    int rc = 0;
    if (r->n == MAM_IX_ROWS)
        rc = xd_db_query(c, MAM_IX_INSERT(MAM_IX_V32), r->v, MAM_IX_ROWS * MAM_IX_COLS, NULL,
                         NULL);
    else
        for (size_t i = 0; i < r->n && rc == 0; i++)
            rc = xd_db_query(c, MAM_IX_INSERT(MAM_IX_V1), &r->v[i * MAM_IX_COLS], MAM_IX_COLS,
                             NULL, NULL);
    r->n = 0;
    return rc;
}

/* The buffer of mam_ix_flush for ctx's database, or NULL (one upsert a row). */
static mam_ix_rows_t *
mam_ix_rows_new(xd_module_ctx_t *ctx)
{
    return mam_fts_deferred(ctx) ? xd_malloc(sizeof(mam_ix_rows_t)) : NULL;
}

/* The indexing transaction: the records, sorted by account then time, into
 * the archive, and how far each journal is consumed, together. */
static int
mam_ix_tx(xd_db_conn_t *c, void *arg)
{
    mam_ix_t *x = arg;
    const char *host = NULL, *user = NULL;
    int64_t floor = 0;
    /* SQLite: several rows per INSERT (the ON CONFLICT form is PostgreSQL's
     * too, but only SQLite's is tested here). */
    mam_ix_rows_t *rows = x->rows;
    if (rows)
        rows->n = 0; /* a transaction run again (xd_db_tx) starts over */
    for (size_t i = 0; i < x->n; i++) {
        const mam_rec_t *m = &x->v[i].r;
        if (!host || strcmp(host, m->host) != 0 || strcmp(user, m->user) != 0) {
            /* An account's rows are written with ts increasing with seq,
             * whatever the clock did (a step back, a restart) or the order
             * in which the journals were read: the archive's order (ts,
             * seq) is then seq's, which full-text search reads from its
             * index. */
            host = m->host;
            user = m->user;
            floor = 0;
            xd_db_val_t k[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user) };
            int rc = xd_db_query(c, "SELECT MAX(ts) FROM archive WHERE host = ? AND username = ?",
                                 k, 2, mam_int_row, &floor);
            if (rc != 0)
                return rc;
        }
        if (m->retract) {
            /* Indexed already (a reader's drain before a restart, the
             * replay now): not applied twice, which could tombstone a
             * later message reusing the id. */
            xd_db_val_t k[] = { XD_DB_V_CSTR(m->host), XD_DB_V_CSTR(m->user),
                                XD_DB_V_CSTR(m->id) };
            int64_t seen = 0;
            int rc = xd_db_query(c,
                                 "SELECT 1 FROM archive WHERE host = ? AND username = ? AND id = ?",
                                 k, 3, mam_int_row, &seen);
            if (rc != 0)
                return rc;
            if (seen)
                continue;
        }
        int64_t ts = m->ts > floor ? m->ts : floor + 1;
        floor = ts;
        int rc = 0;
        if (m->retract && rows) /* the rows it may name are in the table first */
            rc = mam_ix_flush(c, rows);
        if (rc == 0 && m->retract)
            rc = mam_retract(c, m, ts);
        if (rc != 0)
            return rc;
        xd_db_val_t row[] = {
            XD_DB_V_CSTR(m->host),     XD_DB_V_CSTR(m->user),     XD_DB_V_CSTR(m->id),
            XD_DB_V_INT(ts),           XD_DB_V_CSTR(m->peer),     XD_DB_V_CSTR(m->resource),
            XD_DB_V_INT(m->dir),       m->body ? XD_DB_V_CSTR(m->body) : XD_DB_V_NULL,
            XD_DB_V_CSTR(m->xml),      m->msgid ? XD_DB_V_CSTR(m->msgid) : XD_DB_V_NULL,
        };
        /* IGNORE, not a constraint error: on PostgreSQL a failed statement
         * ends the transaction.  The same id again (a record replayed that
         * was indexed already) is left as it is. */
        static const char *const cols[] = { "host", "username", "id",  "ts",  "peer",
                                            "resource", "dir",  "body", "xml", "msgid" };
        static const xd_db_upsert_t ups = { "archive", cols, MAM_IX_COLS, 3,
                                            XD_DB_UPSERT_IGNORE };
        if (rows) {
            memcpy(&rows->v[rows->n * MAM_IX_COLS], row, sizeof row);
            if (++rows->n == MAM_IX_ROWS)
                rc = mam_ix_flush(c, rows);
        } else {
            rc = xd_db_upsert(c, &ups, row);
        }
        if (rc != 0)
            return rc;
    }
    if (rows) {
        int rc = mam_ix_flush(c, rows);
        if (rc != 0)
            return rc;
    }
    for (size_t i = 0; i < x->nfiles && !x->account_only; i++) {
        const mam_ix_file_t *f = &x->files[i];
        xd_db_val_t row[] = { XD_DB_V_CSTR(x->st->j.node), XD_DB_V_CSTR(x->host),
                              XD_DB_V_INT(f->f->worker), XD_DB_V_INT((int64_t)f->gen),
                              XD_DB_V_INT((int64_t)f->end) };
        static const char *const cols[] = { "node", "host", "worker", "gen", "pos" };
        static const xd_db_upsert_t ups = { "mam_journal", cols, 5, 3, XD_DB_UPSERT_REPLACE };
        int rc = xd_db_upsert(c, &ups, row);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Reads f's records from its consumed offset (at most `chunk` bytes, whole
 * records; one record larger than that whole) into x.  0 or -errno. */
static int
mam_ix_read(mam_ix_t *x, mam_jfile_t *f, size_t chunk)
{
    pthread_mutex_lock(&f->mu);
    uint64_t start = f->consumed, size = f->size, gen = f->gen;
    int fd = f->fd;
    pthread_mutex_unlock(&f->mu);
    if (fd < 0 || start >= size)
        return 0;
    /* The file stays open: only the indexer (one at a time, this one)
     * rotates it; appends only add beyond size. */
    size_t want = size - start < chunk ? (size_t)(size - start) : chunk;
    uint32_t plen = 0;
    if (pread(fd, &plen, 4, (off_t)start) == 4 && (size_t)plen + 8 > want &&
        (uint64_t)plen + 8 <= size - start)
        want = (size_t)plen + 8; /* one record larger than a chunk */
    unsigned char *buf = xd_malloc(want ? want : 1);
    size_t have = 0;
    while (have < want) {
        ssize_t r = pread(fd, buf + have, want - have, (off_t)(start + have));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int err = r < 0 ? -errno : XD_EINTERNAL;
            xd_free(buf);
            return err;
        }
        have += (size_t)r;
    }
    size_t off = 0, used, pos = 0;
    mam_rec_t rec;
    unsigned fi = (unsigned)x->nfiles;
    while (off < have && mam_rec_decode(buf + off, have - off, &rec, &used) == 0) {
        if (xd_map_count(&x->st->done)) {
            char kb[80];
            xd_str_t k = mam_done_key(kb, sizeof kb, f->worker, gen, start + off);
            if (xd_map_get(&x->st->done, k)) {
                x->skipped = xd_realloc(x->skipped, (x->nskipped + 1) * sizeof *x->skipped);
                x->skipped[x->nskipped++] = xd_strndup(k.p, k.len);
                pos++;
                off += used;
                continue;
            }
        }
        if (x->n == x->cap) {
            x->cap = x->cap ? x->cap * 2 : 1024;
            x->v = xd_realloc(x->v, x->cap * sizeof *x->v);
        }
        x->v[x->n++] = (mam_ix_rec_t){ rec, fi, pos++ };
        off += used;
    }
    if (off == 0) {
        xd_free(buf);
        return 0; /* nothing whole (mam_journal_open cut damaged tails) */
    }
    x->files = xd_realloc(x->files, (x->nfiles + 1) * sizeof *x->files);
    x->files[x->nfiles++] = (mam_ix_file_t){ f, gen, start, start + off, pos, buf };
    return 0;
}

/* After the indexer's commit of x: each account's count of records in the
 * journal goes down by its records in x, and the places of every record
 * the files' offsets passed are dropped (x.v is sorted by account: one
 * lookup per account).  Caller holds ix_mu. */
static void
mam_pend_indexed(mam_state_t *st, const mam_ix_t *x)
{
    pthread_mutex_lock(&st->pend_mu);
    for (size_t i = 0, j; i < x->n; i = j) {
        const mam_rec_t *r = &x->v[i].r;
        for (j = i + 1; j < x->n && !strcmp(x->v[j].r.user, r->user) &&
                        !strcmp(x->v[j].r.host, r->host);
             j++)
            ;
        mam_key_buf_t key;
        xd_str_t k = mam_acct_key(key, r->host, r->user);
        mam_pend_t *e = k.p ? xd_map_get(&st->pend, k) : NULL;
        if (!e)
            continue;
        size_t keep = 0;
        for (size_t l = 0; l < e->nloc; l++) {
            const mam_loc_t *L = &e->loc[l];
            bool passed = false;
            for (size_t f = 0; f < x->nfiles && !passed; f++) {
                const mam_ix_file_t *F = &x->files[f];
                passed = F->f->worker == L->w &&
                         (L->gen < F->gen || (L->gen == F->gen && L->off < F->end));
            }
            if (!passed)
                e->loc[keep++] = *L;
        }
        e->nloc = keep;
        mam_pend_count_locked(st, k, -(long)(j - i));
    }
    pthread_mutex_unlock(&st->pend_mu);
}

/* SQLite's page cache for the indexing transaction, KiB: a transaction's
 * dirty pages (tens of MiB for MAM_IX_TX_BYTES of journal) stay in memory
 * until its commit writes them once, instead of being spilled into the WAL
 * mid-transaction (and read back) by the pool's smaller per-connection
 * cache (dbhosts.c).  Set on the indexer's connection for its transaction
 * only and set back after it: the pool's other connections, and this one
 * afterwards, keep their size. */
#define MAM_IX_CACHE_KIB (64 * 1024)

static int
mam_cache_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    int64_t *v = arg;
    if (ncols >= 1 && cols[0].type == XD_DB_INT64)
        *v = cols[0].i;
    return 1;
}

/* x's indexing transaction (mam_ix_tx), with SQLite's larger cache. */
static int
mam_ix_commit(xd_module_ctx_t *ctx, mam_ix_t *x)
{
    xd_db_t *db = xd_module_db(ctx);
    if (!x->rows) /* not SQLite */
        return xd_db_tx(db, mam_ix_tx, x);
    xd_db_conn_t *c;
    int rc = xd_db_acquire(db, &c); /* xd_db_tx below runs on it (same thread) */
    if (rc != 0)
        return rc;
    int64_t was = 0;
    char sql[64];
    if (xd_db_query(c, "PRAGMA cache_size", NULL, 0, mam_cache_row, &was) == 0 && was != 0) {
        snprintf(sql, sizeof sql, "PRAGMA cache_size=-%d", MAM_IX_CACHE_KIB);
        (void)xd_db_exec(c, sql); /* a failure costs speed, not rows */
    }
    rc = xd_db_tx(db, mam_ix_tx, x);
    if (was != 0) {
        snprintf(sql, sizeof sql, "PRAGMA cache_size=%lld", (long long)was);
        (void)xd_db_exec(c, sql);
    }
    xd_db_release(c);
    return rc;
}

/* One indexing transaction over what the journals hold now (a chunk of
 * each).  Caller holds ix_mu.  *n: records indexed. */
static int
mam_ix_once(xd_module_ctx_t *ctx, mam_state_t *st, size_t *n)
{
    mam_ix_t x = { .st = st, .host = xd_module_host(ctx) };
    int rc = 0;
    *n = 0;
    /* A worker's first append opens its file meanwhile (under its mutex). */
    bool is_open[XD_OWNER_MAX_WORKERS];
    size_t open = 0;
    unsigned nf = atomic_load(&st->j.nf);
    for (unsigned w = 0; w < nf; w++) {
        pthread_mutex_lock(&st->j.f[w].mu);
        is_open[w] = st->j.f[w].fd >= 0;
        pthread_mutex_unlock(&st->j.f[w].mu);
        open += is_open[w];
    }
    size_t chunk = open ? MAM_IX_TX_BYTES / open : MAM_IX_FILE_BYTES;
    if (chunk > MAM_IX_FILE_BYTES)
        chunk = MAM_IX_FILE_BYTES;
    if (chunk < (64u << 10))
        chunk = 64u << 10;
    for (unsigned w = 0; w < nf && rc == 0; w++)
        if (is_open[w])
            rc = mam_ix_read(&x, &st->j.f[w], chunk);
    if (rc == 0 && x.nfiles) {
        if (x.n)
            qsort(x.v, x.n, sizeof *x.v, mam_ix_cmp);
        x.rows = mam_ix_rows_new(ctx);
        rc = mam_ix_commit(ctx, &x);
    }
    if (rc == 0) {
        atomic_fetch_add(&st->fts_behind, x.n);
        mam_pend_indexed(st, &x);
        for (size_t i = 0; i < x.nskipped; i++)
            xd_map_del(&st->done, xd_str_c(x.skipped[i]));
        for (size_t i = 0; i < x.nfiles; i++) {
            int r = mam_journal_consumed(&st->j, x.files[i].f, x.files[i].end, x.files[i].n);
            if (r != 0)
                XD_LOG(NULL, XD_WARN, "archive journal not rotated", "dir=%s worker=%u err=%s",
                       st->j.dir, x.files[i].f->worker, xd_strerror(r));
        }
        *n = x.n + x.nskipped; /* records passed, counted as the loop's progress */
    } else {
        XD_LOG(NULL, XD_ERROR, "archive indexing failed", "host=%s records=%zu err=%s",
               xd_module_host(ctx), x.n, xd_strerror(rc));
    }
    mam_ix_clear(&x);
    return rc;
}

/* ---- the full-text pass (SQLite: mam_mig6_sqlite) ---------------------------------------------- */

#define MAM_FTS_BATCH 100000 /* rows behind the full-text index that start its pass at the bound */

static bool
mam_fts_deferred(xd_module_ctx_t *ctx)
{
    xd_db_t *db = xd_module_db(ctx);
    const char *d = db ? xd_db_dialect(db) : NULL;
    return d && !strcmp(d, "sqlite");
}

/* The archive's rows after mam_fts.pos into archive_fts, and pos moved past
 * them: one statement (one FTS5 segment), in the caller's transaction. */
static int
mam_fts_tx(xd_db_conn_t *c, void *arg)
{
    int64_t *added = arg, pos = -1, top = 0;
    *added = 0;
    int rc = xd_db_query(c, "SELECT pos FROM mam_fts", NULL, 0, mam_int_row, &pos);
    if (rc == 0)
        rc = xd_db_query(c, "SELECT MAX(seq) FROM archive", NULL, 0, mam_int_row, &top);
    if (rc != 0 || pos < 0 || top <= pos)
        return rc;
    xd_db_val_t k[] = { XD_DB_V_INT(pos), XD_DB_V_INT(top) };
    rc = xd_db_query(c,
                     "INSERT INTO archive_fts (rowid, body) SELECT seq, body FROM archive"
                     " WHERE seq > ? AND seq <= ? AND body IS NOT NULL",
                     k, 2, NULL, NULL);
    xd_db_val_t u[] = { XD_DB_V_INT(top) };
    if (rc == 0)
        rc = xd_db_query(c, "UPDATE mam_fts SET pos = ?", u, 1, NULL, NULL);
    *added = top - pos;
    return rc;
}

/* The full-text pass when rows were indexed since the last one (`always`:
 * when the database says the index is behind, whoever wrote the rows: a
 * full-text query, the start).  Blocks: pool, control or main thread. */
static int
mam_fts_pass(xd_module_ctx_t *ctx, mam_state_t *st, bool always)
{
    if (!st || !mam_fts_deferred(ctx))
        return 0;
    uint64_t behind = atomic_exchange(&st->fts_behind, 0);
    if (!behind && !always)
        return 0;
    if (!behind) {
        /* Asked without a transaction first: a query does not queue
         * behind the indexer's write lock when there is nothing to do. */
        xd_db_conn_t *c;
        int64_t pos = -1, top = 0;
        int rc = xd_db_acquire(xd_module_db(ctx), &c);
        if (rc != 0)
            return rc;
        rc = xd_db_query(c, "SELECT pos FROM mam_fts", NULL, 0, mam_int_row, &pos);
        if (rc == 0)
            rc = xd_db_query(c, "SELECT MAX(seq) FROM archive", NULL, 0, mam_int_row, &top);
        xd_db_release(c);
        if (rc != 0 || pos < 0 || top <= pos)
            return rc;
    }
    int64_t added = 0;
    int rc = xd_db_tx(xd_module_db(ctx), mam_fts_tx, &added);
    if (rc != 0) {
        atomic_fetch_add(&st->fts_behind, behind ? behind : 1);
        XD_LOG(NULL, XD_ERROR, "archive full-text indexing failed", "host=%s err=%s",
               xd_module_host(ctx), xd_strerror(rc));
    }
    return rc;
}

/* The background indexer gives way between its transactions while
 * messages are being appended and the backlog is under the watermark: a
 * burst is taken at the journal's rate, and indexed once it pauses. */
static bool
mam_ix_yield(xd_module_ctx_t *ctx, mam_state_t *st)
{
    const mam_conf_t *mc = xd_module_opts(ctx);
    return atomic_load(&st->j.pend_records) < (uint64_t)mc->journal_index_records &&
           mam_mono_ms() - atomic_load(&st->last_append_ms) < (int64_t)mc->journal_idle;
}

/* Indexes every record appended before the call (and what the last
 * transaction finds appended meanwhile).  Blocks: pool, control or main
 * thread.  Every reader or modifier of the archive calls
 * it first, so that it sees every message whose sender was answered. */
static int
mam_drain_ex(xd_module_ctx_t *ctx, bool background)
{
    mam_state_t *st = ctx ? xd_module_state(ctx) : NULL;
    if (!st || !st->journal_ok || !xd_module_db(ctx) || atomic_load(&st->j.pend_records) == 0)
        return 0;
    /* Up to each file's size now (in its generation now): what is
     * appended meanwhile is left to the next drain, so that a reader is
     * not kept indexing a journal that keeps growing (nor a file opened
     * after it). */
    unsigned nf = atomic_load(&st->j.nf);
    uint64_t *target = xd_malloc(2 * (nf ? nf : 1) * sizeof *target);
    uint64_t *tgen = target + nf;
    for (unsigned w = 0; w < nf; w++) {
        mam_jfile_t *f = &st->j.f[w];
        pthread_mutex_lock(&f->mu);
        target[w] = f->fd >= 0 ? f->size : 0;
        tgen[w] = f->gen;
        pthread_mutex_unlock(&f->mu);
    }
    /* The indexer's lock is taken per transaction: a reader's drain of one
     * account (mam_drain_for) or a batch at the bound waits for one
     * transaction of a long background run, not for all of it. */
    int rc = 0;
    bool yielded = false;
    for (;;) {
        bool left = false;
        for (unsigned w = 0; w < nf && !left; w++) {
            mam_jfile_t *f = &st->j.f[w];
            pthread_mutex_lock(&f->mu);
            /* A rotated file (another generation) was consumed past the
             * target before it was replaced. */
            left = f->fd >= 0 && f->gen == tgen[w] && f->consumed < target[w];
            pthread_mutex_unlock(&f->mu);
        }
        if (!left)
            break;
        if (background && mam_ix_yield(ctx, st)) {
            yielded = true;
            break;
        }
        size_t n;
        pthread_mutex_lock(&st->ix_mu);
        rc = mam_ix_once(ctx, st, &n);
        pthread_mutex_unlock(&st->ix_mu);
        if (rc != 0 || n == 0)
            break;
    }
    xd_free(target);
    /* The full-text index follows in its own transaction (not while a
     * burst is being taken).  Its failure (logged, retried at the next
     * pass) is no reader's: a full-text query runs the pass itself. */
    if (rc == 0 && !yielded)
        (void)mam_fts_pass(ctx, st, false);
    return rc;
}

static int
mam_drain(xd_module_ctx_t *ctx)
{
    return mam_drain_ex(ctx, false);
}

/* Before one archive's rows are deleted (an account's or a room's
 * removal): the whole journal when it holds records of that archive, so
 * that the journal's offsets pass them and no replay after a crash brings
 * them back (mam_drain_for leaves the offsets where they are). */
static int
mam_drain_before_delete(xd_module_ctx_t *ctx, const char *host, const char *user)
{
    mam_state_t *st = ctx ? xd_module_state(ctx) : NULL;
    if (!st || !st->journal_ok || !mam_pend_has(st, host, user))
        return 0;
    return mam_drain(ctx);
}

#define MAM_DRAIN_GAP (16u << 10) /* other records read over rather than another read */

static int
mam_loc_cmp(const void *a, const void *b)
{
    const mam_loc_t *x = a, *y = b;
    if (x->w != y->w)
        return x->w < y->w ? -1 : 1;
    if (x->gen != y->gen)
        return x->gen < y->gen ? -1 : 1;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* mam_drain for a reader of one archive: nothing to do when the journal
 * holds none of its records (other accounts' wait for their own readers or
 * the background). */
static int
mam_drain_for(xd_module_ctx_t *ctx, const char *host, const char *user)
{
    mam_state_t *st = ctx ? xd_module_state(ctx) : NULL;
    if (!st || !st->journal_ok || !xd_module_db(ctx) || !mam_pend_has(st, host, user))
        return 0;
    /* Only this account's records, in one transaction: a reader does not
     * wait for the whole backlog to be indexed, and reads only the account's
     * records (their places, mam_pend_t), not the journal.  The journal's
     * offsets do not move; the records are noted in st->done, so that the
     * indexer passes over them (and forgets them once its offset is past
     * them).  After a crash the replay indexes them again: the archive's
     * unique id ignores a row that is there, and a retraction already
     * indexed is not applied twice (mam_ix_tx). */
    mam_ix_t x = { .st = st, .host = xd_module_host(ctx), .account_only = true };
    int rc = 0;
    mam_key_buf_t key;
    xd_str_t k = mam_acct_key(key, host, user);
    if (!k.p)
        return mam_drain(ctx); /* no JID of ours: never has places */
    pthread_mutex_lock(&st->ix_mu);
    /* Under ix_mu the account's places only grow at their end (appends):
     * the first nloc are the ones read here. */
    mam_loc_t *loc = NULL;
    size_t nloc = 0;
    pthread_mutex_lock(&st->pend_mu);
    mam_pend_t *e = k.p ? xd_map_get(&st->pend, k) : NULL;
    if (e && e->nloc) {
        nloc = e->nloc;
        loc = xd_malloc(nloc * sizeof *loc);
        memcpy(loc, e->loc, nloc * sizeof *loc);
    }
    pthread_mutex_unlock(&st->pend_mu);
    if (nloc > 1)
        qsort(loc, nloc, sizeof *loc, mam_loc_cmp);
    size_t fcap = 0;
    for (size_t i = 0, j; i < nloc && rc == 0; i = j) {
        /* Records near each other in one file (other accounts' records
         * between them, up to MAM_DRAIN_GAP bytes): one read. */
        uint64_t end = loc[i].off + loc[i].len;
        for (j = i + 1; j < nloc && loc[j].w == loc[i].w && loc[j].gen == loc[i].gen &&
                        loc[j].off >= end && loc[j].off - end <= MAM_DRAIN_GAP &&
                        loc[j].off + loc[j].len - loc[i].off <= MAM_IX_FILE_BYTES;
             j++)
            end = loc[j].off + loc[j].len;
        mam_jfile_t *f = &st->j.f[loc[i].w];
        pthread_mutex_lock(&f->mu);
        uint64_t consumed = f->consumed, gen = f->gen;
        int fd = f->fd;
        pthread_mutex_unlock(&f->mu);
        /* Another generation: consumed and rotated (the file stays open:
         * only the indexer, waiting for ix_mu, rotates it). */
        if (fd < 0 || gen != loc[i].gen)
            continue;
        size_t want = (size_t)(end - loc[i].off), have = 0;
        unsigned char *buf = xd_malloc(want);
        while (have < want) {
            ssize_t r = pread(fd, buf + have, want - have, (off_t)(loc[i].off + have));
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                rc = r < 0 ? -errno : XD_EINTERNAL;
                break;
            }
            have += (size_t)r;
        }
        size_t mine = 0;
        unsigned fi = (unsigned)x.nfiles; /* the x.files entry of buf */
        for (size_t l = i; l < j && rc == 0; l++) {
            mam_rec_t rec;
            size_t used, at = (size_t)(loc[l].off - loc[i].off);
            char kb[80];
            if (loc[l].off < consumed ||
                xd_map_get(&st->done, mam_done_key(kb, sizeof kb, loc[l].w, gen, loc[l].off)))
                continue; /* indexed already */
            if (mam_rec_decode(buf + at, want - at, &rec, &used) != 0 || used != loc[l].len ||
                strcmp(rec.host, host) != 0 || strcmp(rec.user, user) != 0) {
                rc = XD_EINTERNAL; /* not what was appended there */
                XD_LOG(NULL, XD_ERROR, "archive journal: a record is not where it was written",
                       "dir=%s worker=%u at=%llu", st->j.dir, loc[l].w,
                       (unsigned long long)loc[l].off);
                break;
            }
            if (x.n == x.cap) {
                x.cap = x.cap ? x.cap * 2 : 64;
                x.v = xd_realloc(x.v, x.cap * sizeof *x.v);
            }
            /* pos: the byte offset (the file's order and the done key) */
            x.v[x.n++] = (mam_ix_rec_t){ rec, fi, (size_t)loc[l].off };
            mine++;
        }
        /* Kept for the records pointing into it (mam_ix_clear frees it). */
        if (x.nfiles == fcap) {
            fcap = fcap ? 2 * fcap : 16;
            x.files = xd_realloc(x.files, fcap * sizeof *x.files);
        }
        x.files[x.nfiles++] = (mam_ix_file_t){ f, gen, loc[i].off, end, mine, buf };
    }
    if (rc == 0 && x.n) {
        qsort(x.v, x.n, sizeof *x.v, mam_ix_cmp);
        x.rows = mam_ix_rows_new(ctx);
        rc = mam_ix_commit(ctx, &x);
    }
    if (rc == 0) {
        atomic_fetch_add(&st->fts_behind, x.n);
        for (size_t i = 0; i < x.n; i++) {
            char kb[80];
            const mam_ix_file_t *F = &x.files[x.v[i].file];
            xd_map_put(&st->done,
                       mam_done_key(kb, sizeof kb, F->f->worker, F->gen, (uint64_t)x.v[i].pos),
                       (void *)1);
        }
        pthread_mutex_lock(&st->pend_mu);
        e = k.p ? xd_map_get(&st->pend, k) : NULL;
        if (e) {
            /* The places read: indexed now, or before (the indexer's
             * offset or another reader passed them). */
            size_t drop = nloc <= e->nloc ? nloc : e->nloc;
            memmove(e->loc, e->loc + drop, (e->nloc - drop) * sizeof *e->loc);
            e->nloc -= drop;
            mam_pend_count_locked(st, k, -(long)x.n);
        }
        pthread_mutex_unlock(&st->pend_mu);
    } else {
        XD_LOG(NULL, XD_ERROR, "archive indexing failed", "host=%s user=%s records=%zu err=%s",
               xd_module_host(ctx), user, x.n, xd_strerror(rc));
    }
    pthread_mutex_unlock(&st->ix_mu);
    mam_ix_clear(&x);
    xd_free(loc);
    return rc;
}

/* Background indexing (pool): what the journals hold when it starts. */
static void
mam_ix_work(xd_module_ctx_t *ctx, void *arg)
{
    (void)arg;
    mam_drain_ex(ctx, true);
}

static void
mam_ix_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    (void)arg;
    (void)status;
    mam_state_t *st = xd_module_state(ctx);
    if (st)
        atomic_store(&st->ix_queued, false);
}

/* Starts a background indexing unless one is queued.  Worker loop. */
static void
mam_ix_kick(xd_module_ctx_t *ctx, mam_state_t *st)
{
    bool no = false;
    if (!atomic_compare_exchange_strong(&st->ix_queued, &no, true))
        return;
    if (xd_module_submit(ctx, mam_ix_work, mam_ix_done, NULL) != 0)
        atomic_store(&st->ix_queued, false);
}

/* At start, before anything is served: the journals' consumed offsets
 * from the database, then everything left in them indexed. */
typedef struct mam_jrows {
    mam_state_t *st;
    bool had[XD_OWNER_MAX_WORKERS];
} mam_jrows_t;

static int
mam_jrow(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    mam_jrows_t *r = arg;
    if (ncols < 3 || cols[0].type != XD_DB_INT64 || cols[1].type != XD_DB_INT64 ||
        cols[2].type != XD_DB_INT64 || cols[0].i < 0 || cols[0].i >= XD_OWNER_MAX_WORKERS)
        return 0;
    mam_jfile_t *f = &r->st->j.f[cols[0].i];
    if (f->fd >= 0 && !r->had[cols[0].i])
        mam_journal_set_consumed(&r->st->j, f, (uint64_t)cols[1].i, (uint64_t)cols[2].i);
    r->had[cols[0].i] = true;
    return 0;
}

static int
mam_journal_start(xd_module_ctx_t *ctx, mam_state_t *st)
{
    const mam_conf_t *mc = xd_module_opts(ctx);
    xd_config_t *cfg = xd_config_get();
    const char *dd = cfg ? xd_config_data_dir(cfg) : NULL;
    st->journal_init = dd != NULL;
    int rc = dd ? mam_journal_open(&st->j, dd, xd_module_host(ctx), mc->journal_sync)
                : XD_ENOTFOUND;
    if (cfg)
        xd_config_unref(cfg);
    if (rc != 0)
        return xd_module_fail(ctx, rc, "archive journal: %s", xd_strerror(rc));
    mam_jrows_t *jr = xd_new(mam_jrows_t);
    jr->st = st;
    xd_db_conn_t *c;
    rc = xd_db_acquire(xd_module_db(ctx), &c);
    if (rc == 0) {
        xd_db_val_t k[] = { XD_DB_V_CSTR(st->j.node), XD_DB_V_CSTR(xd_module_host(ctx)) };
        rc = xd_db_query(c, "SELECT worker, gen, pos FROM mam_journal WHERE node = ? AND host = ?",
                         k, 2, mam_jrow, jr);
        xd_db_release(c);
    }
    /* Files without a row: everything in them is left to index. */
    for (unsigned w = 0; rc == 0 && w < XD_OWNER_MAX_WORKERS; w++)
        if (st->j.f[w].fd >= 0 && !jr->had[w])
            mam_journal_set_consumed(&st->j, &st->j.f[w], 0, 0);
    xd_free(jr);
    if (rc != 0)
        return xd_module_fail(ctx, rc, "archive journal offsets: %s", xd_strerror(rc));
    st->journal_ok = true;
    uint64_t left = atomic_load(&st->j.pend_records);
    if (left) {
        XD_LOG(NULL, XD_INFO, "archive journal: replaying", "host=%s records=%llu",
               xd_module_host(ctx), (unsigned long long)left);
        rc = mam_drain(ctx);
        if (rc != 0)
            return xd_module_fail(ctx, rc, "archive journal replay: %s", xd_strerror(rc));
    }
    /* Rows a crash left behind the full-text index (indexed, not yet
     * passed), or an import's. */
    rc = mam_fts_pass(ctx, st, true);
    if (rc != 0)
        return xd_module_fail(ctx, rc, "archive full-text index: %s", xd_strerror(rc));
    return 0;
}

/* ---- the writer ---------------------------------------------------------------------------------- */

/* A batch's records were appended at `at` of its worker's file (generation
 * gen): each account's places (mam_pend_t), in the batch's order.  Under
 * the file's mutex (mam_journal_append). */
typedef struct mam_placed {
    mam_state_t *st;
    mod_batch_item_t *head;
    unsigned w;
} mam_placed_t;

static void
mam_placed(void *arg, uint64_t gen, uint64_t at)
{
    mam_placed_t *pl = arg;
    mam_state_t *st = pl->st;
    pthread_mutex_lock(&st->pend_mu);
    for (mod_batch_item_t *it = pl->head; it; it = it->next) {
        mam_item_t *m = (mam_item_t *)it;
        if (it->status == MAM_SKIP)
            continue;
        mam_key_buf_t key;
        xd_str_t k = mam_acct_key(key, m->host, m->user);
        mam_pend_t *e = k.p ? xd_map_get(&st->pend, k) : NULL;
        if (e) {
            if (e->nloc == e->cap) {
                e->cap = e->cap ? 2 * e->cap : 8;
                e->loc = xd_realloc(e->loc, e->cap * sizeof *e->loc);
            }
            e->loc[e->nloc++] = (mam_loc_t){ gen, at, m->rec_len, pl->w };
        }
        at += m->rec_len;
    }
    pthread_mutex_unlock(&st->pend_mu);
}

/* mod_batch write: which items the preferences (and, for received
 * messages to accounts without a session, existence) let in, evaluated as
 * before the journal existed; then the records of those, appended to the
 * worker's journal with one write.  Beyond the journal's bound the backlog
 * is indexed first, here (the senders stay held meanwhile). */
static int
mam_batch_write(xd_db_t *db, mod_batch_item_t *head)
{
    xd_module_ctx_t *ctx = head->ctx;
    const mam_conf_t *mc = xd_module_opts(ctx);
    mam_state_t *st = xd_module_state(ctx);
    if (!st || !st->journal_ok)
        return XD_ECLOSED;
    (void)db;
    xd_db_conn_t *c = NULL; /* acquired when the preferences cache misses */
    int rc = 0;
    size_t bytes = 0, n = 0;
    for (mod_batch_item_t *it = head; it && rc == 0; it = it->next) {
        mam_item_t *m = (mam_item_t *)it;
        m->b.status = 0;
        if (m->check_account) {
            bool exists = false;
            int r = xd_auth_user_exists_sync(m->host, m->user, &exists);
            if (r == XD_ENOTSUP)
                exists = true;
            else if (r != 0) {
                rc = r;
                break;
            }
            if (!exists) {
                m->b.status = MAM_SKIP;
                continue;
            }
        }
        bool keep = true;
        if (!m->room)
            rc = mam_mode_for(ctx, &c, m->host, m->user, m->peer, m->default_mode, &keep);
        if (rc == 0 && !keep)
            m->b.status = MAM_SKIP;
        if (rc == 0 && keep) {
            mam_rec_t r = mam_item_rec(m);
            m->rec_len = (uint32_t)mam_rec_size(&r);
            bytes += m->rec_len;
            n++;
        }
    }
    if (c)
        xd_db_release(c);
    if (rc != 0 || n == 0)
        return rc;
    /* At the bound: indexing transactions until the batch fits (not the
     * whole journal: the senders are held for about one transaction, and
     * a flood is taken at the indexer's rate). */
    while (rc == 0 && (atomic_load(&st->j.pend_records) + n > (uint64_t)mc->journal_max_records ||
                       atomic_load(&st->j.pend_bytes) + bytes > mc->journal_max_bytes)) {
        size_t done = 0;
        pthread_mutex_lock(&st->ix_mu);
        if (atomic_load(&st->j.pend_records) + n > (uint64_t)mc->journal_max_records ||
            atomic_load(&st->j.pend_bytes) + bytes > mc->journal_max_bytes)
            rc = mam_ix_once(ctx, st, &done);
        else
            done = 1; /* another indexer made room meanwhile */
        pthread_mutex_unlock(&st->ix_mu);
        if (rc == 0 && done == 0)
            break; /* nothing left to index: a batch larger than the bound goes in */
    }
    /* A flood indexed at the bound never ends a drain: the full-text index
     * follows every MAM_FTS_BATCH rows. */
    if (rc == 0 && atomic_load(&st->fts_behind) >= MAM_FTS_BATCH)
        (void)mam_fts_pass(ctx, st, false); /* not the senders' failure */
    if (rc != 0)
        return rc;
    unsigned char *buf = xd_malloc(bytes);
    size_t off = 0;
    for (mod_batch_item_t *it = head; it; it = it->next) {
        mam_item_t *m = (mam_item_t *)it;
        if (m->b.status == MAM_SKIP)
            continue;
        mam_rec_t r = mam_item_rec(m);
        off += mam_rec_encode(&r, buf + off);
    }
    for (mod_batch_item_t *it = head; it; it = it->next)
        if (it->status != MAM_SKIP)
            mam_pend_add(st, ((mam_item_t *)it)->host, ((mam_item_t *)it)->user, 1);
    mam_placed_t pl = { st, head, ((mam_item_t *)head)->worker };
    rc = mam_journal_append(&st->j, pl.w, buf, bytes, n, mam_placed, &pl);
    for (mod_batch_item_t *it = head; rc != 0 && it; it = it->next)
        if (it->status != MAM_SKIP)
            mam_pend_add(st, ((mam_item_t *)it)->host, ((mam_item_t *)it)->user, -1);
    xd_free(buf);
    if (rc == 0)
        atomic_store(&st->last_append_ms, mam_mono_ms());
    return rc;
}

static void
mam_item_finish(mod_batch_item_t *it, int status)
{
    mam_item_t *m = (mam_item_t *)it;
    if (status != 0 && status != MAM_SKIP)
        XD_LOG(NULL, XD_ERROR, "archive write failed", "host=%s user=%s id=%s err=%s", m->host,
               m->user, m->id, xd_strerror(status));
    /* Past the watermark: index in the background now. */
    mam_state_t *st = xd_module_state(it->ctx);
    const mam_conf_t *mc = xd_module_opts(it->ctx);
    if (st && st->journal_ok &&
        atomic_load(&st->j.pend_records) >= (uint64_t)mc->journal_index_records)
        mam_ix_kick(it->ctx, st);
    mam_item_free(m);
}

static const mod_batch_ops_t mam_batch_ops = {
    .what = "archive",
    .write = mam_batch_write,
    .finish = mam_item_finish,
    .q_max = MAM_Q_MAX,
    .q_max_bytes = MAM_Q_MAX_BYTES,
    .batch_max = MAM_BATCH_MAX,
    .batch_max_bytes = MAM_BATCH_MAX_BYTES,
};

static _Thread_local mod_batch_q_t mam_q;

static char *
mam_strs(xd_str_t s)
{
    return xd_strndup(s.p ? s.p : "", s.len);
}

/* Copies s (NUL-terminated) at *p and moves *p past it. */
static char *
mam_put(char **p, const char *s, size_t len)
{
    char *d = *p;
    if (len)
        memcpy(d, s, len);
    d[len] = 0;
    *p += len + 1;
    return d;
}

/* Queues msg for the archive of `account` (a JID of ours, bare part used);
 * peer is the other party.  0, or XD_EFULL (the caller refuses the
 * message).  The item and its strings are one allocation. */
static int
mam_queue_item(xd_module_ctx_t *ctx, const xd_stanza_t *msg, const xd_jid_t *account,
               const xd_jid_t *peer, int dir, const char *id, bool check_account, bool room)
{
    const mam_conf_t *mc = xd_module_opts(ctx);
    size_t len;
    const char *bytes = xd_stanza_bytes(msg, &len);
    const xd_el_t *root = xd_stanza_root(msg);
    xd_str_t host = xd_jid_domain(account), user = xd_jid_local(account);
    xd_str_t pbare = xd_jid_bare_str(peer), pres = xd_jid_resource(peer);
    const char *body = xd_el_child_text(root, "body", NULL);
    const xd_el_t *oid = xd_el_child(root, "origin-id", XD_NS_SID);
    const char *msgid = oid ? xd_el_attr(oid, "id") : xd_el_attr(root, "id");
    if (msgid && (!*msgid || strlen(msgid) > MAM_ID_MAX))
        msgid = NULL;
    const xd_el_t *rt = room ? NULL : xd_el_child(root, "retract", MAM_NS_RETRACT);
    const char *rid = rt ? xd_el_attr(rt, "id") : NULL;
    if (rid && (!*rid || strlen(rid) > MAM_ID_MAX))
        rid = NULL;
    size_t lbody = body ? strlen(body) : 0, lmsgid = msgid ? strlen(msgid) : 0;
    size_t lrid = rid ? strlen(rid) : 0;
    size_t extra = host.len + user.len + pbare.len + pres.len + len + 5 +
                   (body ? lbody + 1 : 0) + (msgid ? lmsgid + 1 : 0) + (rid ? lrid + 1 : 0);
    mam_item_t *m = xd_malloc(sizeof *m + extra);
    *m = (mam_item_t){ 0 };
    char *p = (char *)(m + 1);
    m->host = mam_put(&p, host.p, host.len);
    m->user = mam_put(&p, user.p, user.len);
    snprintf(m->id, sizeof m->id, "%s", id);
    m->peer = mam_put(&p, pbare.p, pbare.len);
    m->resource = mam_put(&p, pres.p, pres.len);
    m->dir = dir;
    m->body = body ? mam_put(&p, body, lbody) : NULL;
    m->msgid = msgid ? mam_put(&p, msgid, lmsgid) : NULL;
    m->retract = rid ? mam_put(&p, rid, lrid) : NULL;
    m->xml = mam_put(&p, bytes, len);
    m->b.bytes = len;
    m->check_account = check_account;
    m->room = room;
    m->default_mode = mc->default_mode;
    int self = xd_owner_self();
    m->worker = self >= 0 ? (unsigned)self : 0;
    /* The message's time, in the order the worker handles them (strictly
     * increasing in the process: one sender's messages keep their order). */
    m->ts = mam_now_us();
    int rc = mod_batch_push(&mam_q, &mam_batch_ops, ctx, &m->b);
    if (rc != 0)
        mam_item_free(m);
    return rc;
}

static int
mam_queue(xd_module_ctx_t *ctx, const xd_stanza_t *msg, const xd_jid_t *account,
          const xd_jid_t *peer, int dir, const char *id, bool check_account)
{
    return mam_queue_item(ctx, msg, account, peer, dir, id, check_account, false);
}

int
mam_room_store(xd_module_ctx_t *mam, const xd_stanza_t *msg, const xd_jid_t *room,
               const char *id)
{
    const xd_jid_t *from = xd_stanza_from(msg);
    if (!xd_module_db(mam) || !from || strlen(id) > MAM_ID_MAX)
        return XD_EINVAL;
    return mam_queue_item(mam, msg, room, from, 0, id, false, true);
}

/* USER_SEND_PACKET: a message a local user sends goes into the sender's
 * archive under an id of ours, stamped on it for its carbon copies. */
static int
mam_sent(xd_module_ctx_t *ctx, xd_hook_packet_t *ev, void *arg)
{
    (void)arg;
    const xd_el_t *root = xd_stanza_root(ev->st);
    if (!mam_archivable(root))
        return XD_HOOK_OK;
    const xd_jid_t *to = xd_stanza_to(ev->st);
    if (!to || xd_jid_eq_bare(to, ev->jid) || xd_input_current().id == 0)
        return XD_HOOK_OK; /* to oneself: archived as received */
    char by[XD_JID_MAX + 1];
    xd_str_t bare = xd_jid_bare_str(ev->jid);
    snprintf(by, sizeof by, "%.*s", (int)bare.len, bare.p);
    char id[21];
    if (mod_sortable_id(id) != 0) /* time-ordered: archive_id is appended to */
        return XD_HOOK_OK;
    /* The sender's own archive id: one the client put there is forged. */
    xd_stanza_keep_t keep;
    xd_el_t *m = xd_stanza_thaw_keep(ev->st, &keep);
    ev->st = NULL;
    for (xd_el_t *c = xd_el_first_child_mut(m), *next; c; c = next) {
        next = xd_el_next_mut(c);
        const char *cby = xd_el_attr(c, "by");
        if (xd_el_is(c, "stanza-id", XD_NS_SID) && cby && !strcmp(cby, by))
            xd_el_remove_child(m, c);
    }
    xd_el_t *sid = xd_el_add_child(m, "stanza-id", XD_NS_SID);
    xd_el_set_attr(sid, "id", id);
    xd_el_set_attr(sid, "by", by);
    ev->st = xd_stanza_freeze_keep(m, &keep);
    if (mam_queue(ctx, ev->st, ev->jid, to, 1, id, false) != 0) {
        xd_route_error(ev->st, XD_COND_RESOURCE_CONSTRAINT,
                       "the server cannot archive more messages now");
        xd_stanza_unref(ev->st);
        ev->st = NULL;
        return XD_HOOK_STOP;
    }
    return XD_HOOK_OK;
}

/* A message routed from no stream is either the server's own for one of
 * our accounts (a room's private message or invitation, a component's or
 * the server's message: archived) or one routed again (stream management's
 * unacknowledged messages of a session that ended, an offline message
 * whose session went: archived when first routed).  A routed-again message
 * already carries the stanza-id by the account that mod_stanza_id stamped
 * when it was first routed (and keeps now: a message routed from no stream
 * comes from the server, not from a client that could forge one).  This
 * FILTER_PACKET handler runs before mod_stanza_id and notes it for
 * mam_filter, in the same hook run (the event's address checks that). */
#define MAM_PRE_FILTER_PRIO 50
static _Thread_local const void *mam_mark_ev;
static _Thread_local bool mam_mark_again;

static int
mam_pre_filter(xd_module_ctx_t *ctx, xd_hook_filter_t *ev, void *arg)
{
    (void)ctx;
    (void)arg;
    mam_mark_ev = ev;
    mam_mark_again = false;
    const xd_jid_t *to = ev->to;
    if (xd_input_current().id != 0 || !to || !xd_jid_local(to).len ||
        xd_stanza_kind_of(xd_stanza_root(ev->st)) != XD_STANZA_MESSAGE)
        return XD_HOOK_OK;
    char tb[XD_JID_MAX + 1];
    xd_str_t b = xd_jid_bare_str(to);
    snprintf(tb, sizeof tb, "%.*s", (int)b.len, b.p);
    mam_mark_again = mam_sid(xd_stanza_root(ev->st), tb) != NULL;
    return XD_HOOK_OK;
}

/* FILTER_PACKET: takes the sender's archive id off a message of ours on
 * its way out, and archives a message to one of our accounts. */
static int
mam_filter(xd_module_ctx_t *ctx, xd_hook_filter_t *ev, void *arg)
{
    (void)arg;
    const xd_el_t *root = xd_stanza_root(ev->st);
    if (xd_stanza_kind_of(root) != XD_STANZA_MESSAGE)
        return XD_HOOK_OK;
    const xd_jid_t *from = xd_stanza_from(ev->st);
    const xd_jid_t *to = ev->to;
    if (from && to && xd_jid_local(from).len && xd_str_eq_c(xd_jid_domain(from), ev->host) &&
        !xd_jid_eq_bare(from, to)) {
        char by[XD_JID_MAX + 1];
        xd_str_t fb = xd_jid_bare_str(from);
        snprintf(by, sizeof by, "%.*s", (int)fb.len, fb.p);
        if (mam_sid(root, by)) {
            xd_stanza_keep_t keep;
            xd_el_t *m = xd_stanza_thaw_keep(ev->st, &keep);
            ev->st = NULL;
            for (xd_el_t *c = xd_el_first_child_mut(m), *next; c; c = next) {
                next = xd_el_next_mut(c);
                const char *cby = xd_el_attr(c, "by");
                if (xd_el_is(c, "stanza-id", XD_NS_SID) && cby && !strcmp(cby, by))
                    xd_el_remove_child(m, c);
            }
            ev->st = xd_stanza_freeze_keep(m, &keep);
            root = xd_stanza_root(ev->st);
        }
    }
    if (!to || !xd_jid_local(to).len || !xd_str_eq_c(xd_jid_domain(to), ev->host) ||
        !mam_archivable(root))
        return XD_HOOK_OK;
    if (xd_input_current().id == 0 && (mam_mark_ev != ev || mam_mark_again))
        return XD_HOOK_OK; /* routed again: archived the first time */
    char tb[XD_JID_MAX + 1];
    xd_str_t b = xd_jid_bare_str(to);
    snprintf(tb, sizeof tb, "%.*s", (int)b.len, b.p);
    const xd_el_t *sid = mam_sid(root, tb);
    const char *id = sid ? xd_el_attr(sid, "id") : NULL;
    if (!id || strlen(id) > MAM_ID_MAX)
        return XD_HOOK_OK; /* no stanza-id (mod_stanza_id had no randomness) */
    const xd_jid_t *peer = from ? from : to;
    bool has_session = xd_session_list(to, NULL, 0) != 0;
    if (mam_queue(ctx, ev->st, to, peer, 0, id, !has_session) != 0) {
        xd_route_error(ev->st, XD_COND_RESOURCE_CONSTRAINT,
                       "the server cannot archive more messages now");
        xd_stanza_unref(ev->st);
        ev->st = NULL;
        return XD_HOOK_STOP;
    }
    return XD_HOOK_OK;
}

/* ---- queries ----------------------------------------------------------------------------------- */

typedef struct mam_pos {
    bool set;
    int64_t ts, seq;
} mam_pos_t;

/* What a query selects: the account, the form's filters and bounds. */
typedef struct mam_sel {
    const char *host, *user;
    const char *peer, *resource; /* with: bare JID; resource for a full JID, or NULL */
    bool has_start, has_end;
    int64_t start, end;          /* µs, inclusive */
    mam_pos_t lower, upper;      /* exclusive bounds */
    const char *id;              /* one id of `ids`, or NULL */
    const mam_dialect_t *dl;     /* full-text search: the dialect */
    const char *fts;             /* its parameter, or NULL */
} mam_sel_t;

typedef struct mam_row {
    int64_t seq, ts;
    char *id, *xml;
} mam_row_t;

typedef struct mam_rows {
    mam_row_t *v;
    size_t n, cap;
} mam_rows_t;

static void
mam_rows_clear(mam_rows_t *r)
{
    for (size_t i = 0; i < r->n; i++) {
        xd_free(r->v[i].id);
        xd_free(r->v[i].xml);
    }
    xd_free(r->v);
    *r = (mam_rows_t){ 0 };
}

static int
mam_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    mam_rows_t *r = arg;
    if (ncols < 4 || cols[0].type != XD_DB_INT64 || cols[1].type != XD_DB_INT64 ||
        cols[2].type != XD_DB_TEXT || cols[3].type != XD_DB_TEXT)
        return 0;
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 16;
        r->v = xd_realloc(r->v, r->cap * sizeof *r->v);
    }
    r->v[r->n++] = (mam_row_t){ cols[0].i, cols[1].i, xd_strndup(cols[2].s.p, cols[2].s.len),
                                xd_strndup(cols[3].s.p, cols[3].s.len) };
    return 0;
}

#define MAM_SQL_MAX 1024
#define MAM_PARAMS_MAX 16

/* `head` FROM the tables of sel WHERE its conditions into sql, their
 * parameters into p. */
static size_t
mam_where(const mam_sel_t *sel, char *sql, const char *head, xd_db_val_t *p)
{
    size_t n = 0;
    snprintf(sql, MAM_SQL_MAX, "%s FROM %s WHERE host = ? AND username = ?", head,
             sel->fts ? sel->dl->fts_from : "archive");
    p[n++] = XD_DB_V_CSTR(sel->host);
    p[n++] = XD_DB_V_CSTR(sel->user);
#define ADD(text) strncat(sql, text, MAM_SQL_MAX - strlen(sql) - 1)
    if (sel->peer) {
        ADD(" AND peer = ?");
        p[n++] = XD_DB_V_CSTR(sel->peer);
    }
    if (sel->resource) {
        ADD(" AND resource = ?");
        p[n++] = XD_DB_V_CSTR(sel->resource);
    }
    if (sel->has_start) {
        ADD(" AND ts >= ?");
        p[n++] = XD_DB_V_INT(sel->start);
    }
    if (sel->has_end) {
        ADD(" AND ts <= ?");
        p[n++] = XD_DB_V_INT(sel->end);
    }
    /* (ts, seq) past a position: the plain range on ts first, so that the
     * index seeks to it instead of filtering from the account's first row. */
    if (sel->lower.set) {
        ADD(" AND ts >= ? AND (ts > ? OR seq > ?)");
        p[n++] = XD_DB_V_INT(sel->lower.ts);
        p[n++] = XD_DB_V_INT(sel->lower.ts);
        p[n++] = XD_DB_V_INT(sel->lower.seq);
    }
    if (sel->upper.set) {
        ADD(" AND ts <= ? AND (ts < ? OR seq < ?)");
        p[n++] = XD_DB_V_INT(sel->upper.ts);
        p[n++] = XD_DB_V_INT(sel->upper.ts);
        p[n++] = XD_DB_V_INT(sel->upper.seq);
    }
    if (sel->id) {
        ADD(" AND id = ?");
        p[n++] = XD_DB_V_CSTR(sel->id);
    }
    if (sel->fts) {
        ADD(sel->dl->fts_where);
        p[n++] = XD_DB_V_CSTR(sel->fts);
        /* The bounds again on the index's order, for it to seek. */
        if (sel->lower.set) {
            ADD(" AND ");
            ADD(sel->dl->fts_seq);
            ADD(" > ?");
            p[n++] = XD_DB_V_INT(sel->lower.seq);
        }
        if (sel->upper.set) {
            ADD(" AND ");
            ADD(sel->dl->fts_seq);
            ADD(" < ?");
            p[n++] = XD_DB_V_INT(sel->upper.seq);
        }
    }
    return n;
}

static int
mam_select(xd_db_conn_t *c, const mam_sel_t *sel, bool desc, int64_t limit, mam_rows_t *out)
{
    char sql[MAM_SQL_MAX];
    xd_db_val_t p[MAM_PARAMS_MAX];
    size_t n = mam_where(sel, sql, "SELECT seq, ts, id, xml", p);
    if (sel->fts) {
        ADD(" ORDER BY ");
        ADD(sel->dl->fts_seq);
        ADD(desc ? " DESC LIMIT ?" : " LIMIT ?");
    } else {
        ADD(desc ? " ORDER BY ts DESC, seq DESC LIMIT ?" : " ORDER BY ts, seq LIMIT ?");
    }
    p[n++] = XD_DB_V_INT(limit);
    return xd_db_query(c, sql, p, n, mam_row, out);
}

static int
mam_count(xd_db_conn_t *c, const mam_sel_t *sel, int64_t *out)
{
    char sql[MAM_SQL_MAX];
    xd_db_val_t p[MAM_PARAMS_MAX];
    size_t n = mam_where(sel, sql, "SELECT COUNT(*)", p);
    return xd_db_query_int64(c, sql, p, n, out);
}

/* The messages of sel, counted up to `limit`: *exact is false (and *out
 * limit + 1) when there are more.  Reads at most limit + 1 index entries. */
static int
mam_count_upto(xd_db_conn_t *c, const mam_sel_t *sel, int64_t limit, int64_t *out, bool *exact)
{
    char sql[MAM_SQL_MAX];
    xd_db_val_t p[MAM_PARAMS_MAX];
    size_t n = mam_where(sel, sql, "SELECT COUNT(*) FROM (SELECT 1 AS one", p);
    ADD(" LIMIT ?) AS counted"); /* the alias for PostgreSQL and MySQL, the name for T-SQL */
    p[n++] = XD_DB_V_INT(limit + 1);
    int rc = xd_db_query_int64(c, sql, p, n, out);
    *exact = rc == 0 && *out <= limit;
    return rc;
}
#undef ADD

static int
mam_pos_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    mam_pos_t *pos = arg;
    if (ncols >= 2 && cols[0].type == XD_DB_INT64 && cols[1].type == XD_DB_INT64)
        *pos = (mam_pos_t){ true, cols[0].i, cols[1].i };
    return 1;
}

/* Where archive id `id` of the account is; XD_ENOTFOUND when it is not. */
static int
mam_find(xd_db_conn_t *c, const mam_sel_t *sel, const char *id, mam_pos_t *pos)
{
    xd_db_val_t k[] = { XD_DB_V_CSTR(sel->host), XD_DB_V_CSTR(sel->user), XD_DB_V_CSTR(id) };
    *pos = (mam_pos_t){ 0 };
    int rc = xd_db_query(c, "SELECT ts, seq FROM archive WHERE host = ? AND username = ? AND id = ?",
                         k, 3, mam_pos_row, pos);
    if (rc == 0 && !pos->set)
        rc = XD_ENOTFOUND;
    return rc;
}

static bool
mam_pos_less(mam_pos_t a, mam_pos_t b)
{
    return a.ts < b.ts || (a.ts == b.ts && a.seq < b.seq);
}

static void
mam_tighten(mam_pos_t *bound, mam_pos_t p, bool lower)
{
    if (!bound->set || (lower ? mam_pos_less(*bound, p) : mam_pos_less(p, *bound)))
        *bound = p;
}

static int
mam_row_cmp(const void *a, const void *b)
{
    const mam_row_t *x = a, *y = b;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static const char *
mam_value(const xd_el_t *field)
{
    const char *v = field ? xd_el_child_text(field, "value", XD_NS_DATA) : NULL;
    return v && *v ? v : NULL;
}

static xd_stanza_t *
mam_form(const xd_iq_req_t *req)
{
    xd_el_t *r = xd_iq_result_builder(req->iq);
    xd_el_t *q = xd_el_add_child(r, "query", MAM_NS);
    xd_el_t *x = xd_el_add_child(q, "x", XD_NS_DATA);
    xd_el_set_attr(x, "type", "form");
    xd_el_t *f = xd_el_add_child(x, "field", XD_NS_DATA);
    xd_el_set_attr(f, "type", "hidden");
    xd_el_set_attr(f, "var", "FORM_TYPE");
    xd_el_add_text(xd_el_add_child(f, "value", XD_NS_DATA), MAM_NS);
    static const char *const fields[][2] = {
        { "jid-single", "with" },       { "text-single", "start" },
        { "text-single", "end" },       { "text-single", "before-id" },
        { "text-single", "after-id" },
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        f = xd_el_add_child(x, "field", XD_NS_DATA);
        xd_el_set_attr(f, "type", fields[i][0]);
        xd_el_set_attr(f, "var", fields[i][1]);
    }
    f = xd_el_add_child(x, "field", XD_NS_DATA);
    xd_el_set_attr(f, "type", "list-multi");
    xd_el_set_attr(f, "var", "ids");
    xd_el_t *v = xd_el_add_child(f, "validate", "http://jabber.org/protocol/xdata-validate");
    xd_el_set_attr(v, "datatype", "xs:string");
    xd_el_add_child(v, "open", "http://jabber.org/protocol/xdata-validate");
    if (mam_dialect(xd_module_db(req->ctx))) {
        f = xd_el_add_child(x, "field", XD_NS_DATA);
        xd_el_set_attr(f, "type", "text-single");
        xd_el_set_attr(f, "var", MAM_FTS_FIELD);
    }
    return xd_el_freeze(r);
}

/* One result message to the querying session. */
static void
mam_send_result(const xd_session_ref_t *to, const xd_iq_req_t *req, const char *queryid,
                const mam_row_t *row)
{
    xd_stanza_t *orig = NULL;
    if (xd_stanza_parse(row->xml, strlen(row->xml), XD_NS_CLIENT, &orig) != 0)
        return;
    xd_el_t *m = xd_el_new("message", NULL);
    xd_str_t full = xd_jid_full_str(req->from), bare = xd_jid_bare_str(req->to);
    char buf[XD_JID_MAX + 1];
    snprintf(buf, sizeof buf, "%.*s", (int)full.len, full.p);
    xd_el_set_attr(m, "to", buf);
    snprintf(buf, sizeof buf, "%.*s", (int)bare.len, bare.p);
    xd_el_set_attr(m, "from", buf);
    xd_el_t *r = xd_el_add_child(m, "result", MAM_NS);
    if (queryid)
        xd_el_set_attr(r, "queryid", queryid);
    xd_el_set_attr(r, "id", row->id);
    xd_el_t *fw = xd_el_add_child(r, "forwarded", XD_NS_FORWARD);
    char stamp[64];
    mam_stamp(row->ts, stamp, sizeof stamp);
    xd_el_set_attr(xd_el_add_child(fw, "delay", XD_NS_DELAY), "stamp", stamp);
    xd_el_append(fw, xd_stanza_edit(orig));
    xd_stanza_unref(orig);
    if (to)
        xd_session_send_take(to, xd_el_freeze(m));
    else
        xd_route_take(xd_el_freeze(m));
}

/* req->arg of a room archive's request (mam_room_iq): its requester may
 * be on another server, so what goes to another domain than the host's is
 * routed (a session of ours that is gone gets nothing). */
static char mam_room_mark;

/* A query's answer, or an error: everything that can fail before the
 * first result is sent. */
static xd_stanza_t *
mam_query(const xd_iq_req_t *req, const xd_el_t *query)
{
    const mam_conf_t *mc = xd_module_opts(req->ctx);
    char host[XD_JID_PART_MAX + 1], user[XD_JID_PART_MAX + 1];
    xd_str_t l = xd_jid_local(req->to), d = xd_jid_domain(req->to);
    snprintf(host, sizeof host, "%.*s", (int)d.len, d.p);
    snprintf(user, sizeof user, "%.*s", (int)l.len, l.p);
    mam_sel_t sel = { .host = host, .user = user };
    const char *queryid = xd_el_attr(query, "queryid");
    if (queryid && strlen(queryid) > MAM_QUERYID_MAX)
        return xd_stanza_error(req->iq, XD_COND_NOT_ACCEPTABLE, "the queryid is too long");

    /* The form. */
    const xd_el_t *x = xd_el_child(query, "x", XD_NS_DATA);
    const char *after_id = NULL, *before_id = NULL;
    const xd_el_t *ids = NULL;
    const char *fulltext = NULL;
    xd_jid_t *with = NULL;
    char wbare[XD_JID_MAX + 1], wres[XD_JID_PART_MAX + 1];
    if (x) {
        const char *xt = xd_el_attr(x, "type");
        if (xt && strcmp(xt, "submit") != 0)
            return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, "the form is not submitted");
        for (const xd_el_t *f = xd_el_first_child(x); f; f = xd_el_next(f)) {
            if (!xd_el_is(f, "field", XD_NS_DATA))
                continue;
            const char *var = xd_el_attr(f, "var");
            const char *v = mam_value(f);
            if (!var)
                return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, "a field without var");
            if (!strcmp(var, "FORM_TYPE")) {
                if (!v || strcmp(v, MAM_NS) != 0)
                    return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, "FORM_TYPE is not "
                                           MAM_NS);
            } else if (!strcmp(var, "with")) {
                if (v && xd_jid_parse(xd_str_c(v), &with) != 0)
                    return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, "'with' is not a JID");
            } else if (!strcmp(var, "start") || !strcmp(var, "end")) {
                bool s = var[0] == 's';
                if (v && !mam_parse_time(v, s ? &sel.start : &sel.end)) {
                    xd_jid_unref(with);
                    return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST,
                                           "start and end are XEP-0082 DateTimes");
                }
                if (v)
                    *(s ? &sel.has_start : &sel.has_end) = true;
            } else if (!strcmp(var, "after-id")) {
                after_id = v;
            } else if (!strcmp(var, "before-id")) {
                before_id = v;
            } else if (!strcmp(var, "ids")) {
                ids = f;
            } else if (!strcmp(var, MAM_FTS_FIELD) && mam_dialect(xd_module_db(req->ctx))) {
                fulltext = v;
            } else {
                xd_jid_unref(with);
                return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, "unknown field");
            }
        }
    }
    if (with) {
        xd_str_t wb = xd_jid_bare_str(with), wr = xd_jid_resource(with);
        snprintf(wbare, sizeof wbare, "%.*s", (int)wb.len, wb.p);
        sel.peer = wbare;
        if (wr.len) {
            snprintf(wres, sizeof wres, "%.*s", (int)wr.len, wr.p);
            sel.resource = wres;
        }
        xd_jid_unref(with);
    }

    /* XEP-0431: the search as the dialect's parameter. */
    char fts[2 * MAM_FTS_MAX + 4];
    if (fulltext) {
        const mam_dialect_t *dl = mam_dialect(xd_module_db(req->ctx));
        if (strlen(fulltext) > MAM_FTS_MAX)
            return xd_stanza_error(req->iq, XD_COND_NOT_ACCEPTABLE,
                                   "the full-text search is too long");
        if (!dl->fts_param(fulltext, fts, sizeof fts))
            return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST,
                                   "the full-text search has no word");
        sel.dl = dl;
        sel.fts = fts;
    }

    /* RSM (XEP-0059). */
    const xd_el_t *set = xd_el_child(query, "set", XD_NS_RSM);
    int64_t max = mc->max_page;
    const char *rsm_after = NULL, *rsm_before = NULL;
    bool backwards = false;
    if (set) {
        const char *ms = xd_el_child_text(set, "max", XD_NS_RSM);
        if (ms) {
            char *end;
            long long v = strtoll(ms, &end, 10);
            if (!*ms || *end || v < 0)
                return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, "<max/> is a number");
            if (v < max)
                max = v;
        }
        rsm_after = xd_el_child_text(set, "after", XD_NS_RSM);
        const xd_el_t *b = xd_el_child(set, "before", XD_NS_RSM);
        if (b) {
            backwards = true;
            rsm_before = xd_el_text(b);
            if (rsm_before && !*rsm_before)
                rsm_before = NULL;
        }
        if (rsm_after && !*rsm_after)
            rsm_after = NULL;
    }
    bool flip = xd_el_child(query, "flip-page", MAM_NS) != NULL;

    xd_db_conn_t *c;
    int rc = mam_drain_for(req->ctx, host, user); /* every answered message is in the archive */
    if (rc == 0 && sel.fts) /* and in the full-text index */
        rc = mam_fts_pass(req->ctx, xd_module_state(req->ctx), true);
    if (rc == 0)
        rc = xd_db_acquire(xd_module_db(req->ctx), &c);
    if (rc != 0)
        return xd_stanza_error(req->iq, XD_COND_INTERNAL_SERVER_ERROR, NULL);
    mam_rows_t rows = { 0 };
    int64_t count = 0, index = 0;
    bool has_count = false, has_index = false;
    bool complete = true;
    const char *bad = NULL;
    mam_pos_t pos;
    /* The set's bounds (before-id, after-id), then the page's (RSM). */
    const char *cursors[4] = { after_id, before_id, rsm_after, rsm_before };
    mam_pos_t page_lower = { 0 }, page_upper = { 0 };
    for (int i = 0; i < 4 && rc == 0; i++) {
        if (!cursors[i])
            continue;
        if (strlen(cursors[i]) > MAM_ID_MAX) {
            rc = XD_ENOTFOUND;
        } else {
            rc = mam_find(c, &sel, cursors[i], &pos);
        }
        if (rc == XD_ENOTFOUND) {
            bad = cursors[i];
            break;
        }
        if (i == 0)
            mam_tighten(&sel.lower, pos, true);
        else if (i == 1)
            mam_tighten(&sel.upper, pos, false);
        else if (i == 2)
            page_lower = pos;
        else
            page_upper = pos;
    }
    if (rc == 0 && ids) {
        /* Those messages, in archive order. */
        size_t nids = 0;
        for (const xd_el_t *v = xd_el_first_child(ids); v; v = xd_el_next(v))
            nids += xd_el_is(v, "value", XD_NS_DATA);
        if (nids > (size_t)mc->max_page)
            rc = XD_ELIMIT;
        for (const xd_el_t *v = xd_el_first_child(ids); v && rc == 0; v = xd_el_next(v)) {
            if (!xd_el_is(v, "value", XD_NS_DATA))
                continue;
            const char *id = xd_el_text(v);
            if (!id || strlen(id) > MAM_ID_MAX) {
                rc = XD_ENOTFOUND;
                bad = id ? id : "";
                break;
            }
            rc = mam_find(c, &sel, id, &pos);
            if (rc == XD_ENOTFOUND) {
                bad = id;
                break;
            }
            sel.id = id;
            if (rc == 0)
                rc = mam_select(c, &sel, false, 1, &rows);
            sel.id = NULL;
        }
        if (rc == 0) {
            qsort(rows.v, rows.n, sizeof *rows.v, mam_row_cmp);
            count = (int64_t)rows.n;
            has_count = has_index = true;
        }
    } else if (rc == 0) {
        /* <count/>: exact when asked for alone (<max>0</max>), else only
         * when at most max_count messages match (XEP-0059 2.1: it may be
         * left out when it is expensive). */
        if (max == 0) {
            rc = mam_count(c, &sel, &count);
            has_count = true;
        } else {
            rc = mam_count_upto(c, &sel, mc->max_count, &count, &has_count);
        }
        mam_sel_t page = sel;
        if (page_lower.set)
            mam_tighten(&page.lower, page_lower, true);
        if (page_upper.set)
            mam_tighten(&page.upper, page_upper, false);
        if (rc == 0)
            rc = mam_select(c, &page, backwards, max + 1, &rows);
        if (rc == 0 && rows.n > (size_t)max) {
            complete = false;
            xd_free(rows.v[rows.n - 1].id);
            xd_free(rows.v[rows.n - 1].xml);
            rows.n--;
        }
        if (rc == 0 && backwards) /* chronological within the page */
            for (size_t i = 0; i < rows.n / 2; i++) {
                mam_row_t t = rows.v[i];
                rows.v[i] = rows.v[rows.n - 1 - i];
                rows.v[rows.n - 1 - i] = t;
            }
        if (rc == 0 && rows.n && !backwards && !page_lower.set) {
            has_index = true; /* the set's first message */
        } else if (rc == 0 && rows.n && backwards && !page_upper.set) {
            /* The last page: what the count leaves; no second scan. */
            has_index = has_count;
            index = count - (int64_t)rows.n;
        } else if (rc == 0 && rows.n) {
            mam_sel_t before_first = sel;
            mam_tighten(&before_first.upper, (mam_pos_t){ true, rows.v[0].ts, rows.v[0].seq },
                        false);
            rc = mam_count_upto(c, &before_first, mc->max_count, &index, &has_index);
        }
    }
    xd_db_release(c);
    if (rc == XD_ENOTFOUND || rc == XD_ELIMIT) {
        mam_rows_clear(&rows);
        char text[MAM_ID_MAX + 64];
        if (rc == XD_ELIMIT)
            return xd_stanza_error(req->iq, XD_COND_POLICY_VIOLATION, "too many ids");
        snprintf(text, sizeof text, "no message with id %s in the archive", bad);
        return xd_stanza_error(req->iq, XD_COND_ITEM_NOT_FOUND, text);
    }
    if (rc != 0) {
        mam_rows_clear(&rows);
        XD_LOG(NULL, XD_ERROR, "archive query failed", "host=%s user=%s err=%s", host, user,
               xd_strerror(rc));
        return xd_stanza_error(req->iq, XD_COND_INTERNAL_SERVER_ERROR, NULL);
    }

    /* The results, then <fin/>, to the querying session, from this
     * thread: they arrive in that order. */
    xd_session_info_t si;
    bool local = xd_session_find(req->from, &si) == 0;
    if (!local && (req->arg != &mam_room_mark ||
                   xd_str_eq_c(xd_jid_domain(req->from), req->host))) {
        mam_rows_clear(&rows);
        return NULL; /* the session is gone */
    }
    for (size_t k = 0; k < rows.n; k++) {
        size_t i = flip ? rows.n - 1 - k : k;
        mam_send_result(local ? &si.ref : NULL, req, queryid, &rows.v[i]);
    }
    xd_el_t *r = xd_iq_result_builder(req->iq);
    xd_el_t *fin = xd_el_add_child(r, "fin", MAM_NS);
    xd_el_set_attr(fin, "complete", complete ? "true" : "false");
    xd_el_t *s = xd_el_add_child(fin, "set", XD_NS_RSM);
    if (rows.n) {
        xd_el_t *first = xd_el_add_child(s, "first", XD_NS_RSM);
        char ix[32];
        snprintf(ix, sizeof ix, "%lld", (long long)index);
        if (has_index)
            xd_el_set_attr(first, "index", ix);
        xd_el_add_text(first, rows.v[0].id);
        xd_el_add_text(xd_el_add_child(s, "last", XD_NS_RSM), rows.v[rows.n - 1].id);
    }
    char cnt[32];
    snprintf(cnt, sizeof cnt, "%lld", (long long)count);
    if (has_count)
        xd_el_add_text(xd_el_add_child(s, "count", XD_NS_RSM), cnt);
    if (local) {
        xd_session_send_take(&si.ref, xd_el_freeze(r));
        xd_session_info_clear(&si);
    } else {
        xd_route_take(xd_el_freeze(r));
    }
    mam_rows_clear(&rows);
    return NULL;
}

/* ---- preferences ------------------------------------------------------------------------------- */

typedef struct mam_prefs {
    int64_t mode;
    xd_el_t *always, *never;
} mam_prefs_t;

static int
mam_prefs_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    mam_prefs_t *p = arg;
    if (ncols < 2 || cols[0].type != XD_DB_TEXT || cols[1].type != XD_DB_INT64)
        return 0;
    xd_el_t *j = xd_el_add_child(cols[1].i ? p->always : p->never, "jid", MAM_NS);
    xd_el_add_textn(j, cols[0].s.p, cols[0].s.len);
    return 0;
}

static xd_stanza_t *
mam_prefs_get(const xd_iq_req_t *req, const char *host, const char *user)
{
    const mam_conf_t *mc = xd_module_opts(req->ctx);
    xd_db_conn_t *c;
    if (xd_db_acquire(xd_module_db(req->ctx), &c) != 0)
        return xd_stanza_error(req->iq, XD_COND_INTERNAL_SERVER_ERROR, NULL);
    xd_el_t *r = xd_iq_result_builder(req->iq);
    xd_el_t *pe = xd_el_add_child(r, "prefs", MAM_NS);
    mam_prefs_t p = { -1, xd_el_add_child(pe, "always", MAM_NS),
                      xd_el_add_child(pe, "never", MAM_NS) };
    xd_db_val_t k[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user) };
    int rc = xd_db_query(c, "SELECT mode FROM archive_prefs WHERE host = ? AND username = ?", k,
                         2, mam_int_row, &p.mode);
    if (rc == 0)
        rc = xd_db_query(c,
                         "SELECT jid, always FROM archive_prefs_jid WHERE host = ? AND username = ?"
                         " ORDER BY jid",
                         k, 2, mam_prefs_row, &p);
    xd_db_release(c);
    if (rc != 0) {
        xd_el_free(r);
        return xd_stanza_error(req->iq, XD_COND_INTERNAL_SERVER_ERROR, NULL);
    }
    xd_el_set_attr(pe, "default",
                   xd_opt_enum_name(mam_modes, p.mode < 0 ? mc->default_mode : (int)p.mode));
    return xd_el_freeze(r);
}

typedef struct mam_prefs_set {
    const char *host, *user;
    int mode;
    const xd_el_t *prefs;
} mam_prefs_set_t;

static int
mam_prefs_list(xd_db_conn_t *c, const mam_prefs_set_t *s, const char *name, int always)
{
    const xd_el_t *list = xd_el_child(s->prefs, name, MAM_NS);
    for (const xd_el_t *j = list ? xd_el_first_child(list) : NULL; j; j = xd_el_next(j)) {
        if (!xd_el_is(j, "jid", MAM_NS))
            continue;
        xd_jid_t *jid;
        if (xd_jid_parse(xd_str_c(xd_el_text(j) ? xd_el_text(j) : ""), &jid) != 0)
            return XD_EINVAL;
        xd_str_t b = xd_jid_bare_str(jid);
        xd_db_val_t row[] = { XD_DB_V_CSTR(s->host), XD_DB_V_CSTR(s->user), XD_DB_V_TEXT(b),
                              XD_DB_V_INT(always) };
        /* Listed twice, or in both lists: the last one counts. */
        static const char *const cols[] = { "host", "username", "jid", "always" };
        static const xd_db_upsert_t ups = { "archive_prefs_jid", cols, 4, 3,
                                            XD_DB_UPSERT_REPLACE };
        int rc = xd_db_upsert(c, &ups, row);
        xd_jid_unref(jid);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int
mam_prefs_tx(xd_db_conn_t *c, void *arg)
{
    const mam_prefs_set_t *s = arg;
    xd_db_val_t k[] = { XD_DB_V_CSTR(s->host), XD_DB_V_CSTR(s->user), XD_DB_V_INT(s->mode) };
    int rc = xd_db_query(c, "DELETE FROM archive_prefs_jid WHERE host = ? AND username = ?", k, 2,
                         NULL, NULL);
    if (rc == 0)
        rc = xd_db_query(c, "DELETE FROM archive_prefs WHERE host = ? AND username = ?", k, 2,
                         NULL, NULL);
    if (rc == 0)
        rc = xd_db_query(c, "INSERT INTO archive_prefs (host, username, mode) VALUES (?, ?, ?)",
                         k, 3, NULL, NULL);
    if (rc == 0)
        rc = mam_prefs_list(c, s, "never", 0);
    if (rc == 0) /* a JID in both lists: always wins (written last) */
        rc = mam_prefs_list(c, s, "always", 1);
    return rc;
}

static xd_stanza_t *
mam_prefs(const xd_iq_req_t *req, const xd_el_t *prefs)
{
    const mam_conf_t *mc = xd_module_opts(req->ctx);
    char host[XD_JID_PART_MAX + 1], user[XD_JID_PART_MAX + 1];
    xd_str_t l = xd_jid_local(req->to), d = xd_jid_domain(req->to);
    snprintf(host, sizeof host, "%.*s", (int)d.len, d.p);
    snprintf(user, sizeof user, "%.*s", (int)l.len, l.p);
    const char *type = xd_el_attr(xd_stanza_root(req->iq), "type");
    if (type && !strcmp(type, "get"))
        return mam_prefs_get(req, host, user);
    const char *def = xd_el_attr(prefs, "default");
    int mode = -1;
    for (size_t i = 0; def && mam_modes[i].name; i++)
        if (!strcmp(def, mam_modes[i].name))
            mode = mam_modes[i].value;
    if (mode < 0)
        return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST,
                               "default is always, roster or never");
    size_t njids = 0;
    for (const xd_el_t *list = xd_el_first_child(prefs); list; list = xd_el_next(list))
        for (const xd_el_t *j = xd_el_first_child(list); j; j = xd_el_next(j))
            njids++;
    if (njids > (size_t)mc->max_prefs_jids)
        return xd_stanza_error(req->iq, XD_COND_NOT_ACCEPTABLE,
                               "too many JIDs in the always and never lists");
    mam_prefs_set_t s = { host, user, mode, prefs };
    int rc = xd_db_tx(xd_module_db(req->ctx), mam_prefs_tx, &s);
    /* Before the answer: the next message of the account reads the new
     * preferences (also after a failure: what was stored is unknown). */
    mam_pc_drop(xd_module_state(req->ctx), host, user);
    if (rc == XD_EINVAL)
        return xd_stanza_error(req->iq, XD_COND_JID_MALFORMED, "a jid in the lists is not a JID");
    if (rc < 0)
        return xd_stanza_error(req->iq, XD_COND_INTERNAL_SERVER_ERROR, NULL);
    return mam_prefs_get(req, host, user); /* XEP-0313 7.2: the prefs as stored */
}

/* ---- archive metadata (urn:xmpp:mam:2#extended) ------------------------------------------------ */

typedef struct mam_end {
    bool set;
    int64_t ts;
    char id[MAM_ID_MAX + 1];
} mam_end_t;

static int
mam_end_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    mam_end_t *e = arg;
    if (ncols >= 2 && cols[0].type == XD_DB_TEXT && cols[1].type == XD_DB_INT64) {
        e->set = true;
        snprintf(e->id, sizeof e->id, "%.*s", (int)cols[0].s.len, cols[0].s.p);
        e->ts = cols[1].i;
    }
    return 1;
}

/* <metadata/>: the archive's first and last messages as <start id
 * timestamp/> and <end id timestamp/>; an empty <metadata/> for an empty
 * archive (XEP-0313 "Archive metadata").  Two index seeks. */
static xd_stanza_t *
mam_metadata(const xd_iq_req_t *req)
{
    char host[XD_JID_PART_MAX + 1], user[XD_JID_PART_MAX + 1];
    xd_str_t l = xd_jid_local(req->to), d = xd_jid_domain(req->to);
    snprintf(host, sizeof host, "%.*s", (int)d.len, d.p);
    snprintf(user, sizeof user, "%.*s", (int)l.len, l.p);
    xd_db_conn_t *c;
    if (mam_drain_for(req->ctx, host, user) != 0 ||
        xd_db_acquire(xd_module_db(req->ctx), &c) != 0)
        return xd_stanza_error(req->iq, XD_COND_INTERNAL_SERVER_ERROR, NULL);
    xd_db_val_t k[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user) };
    mam_end_t ends[2] = { 0 };
    int rc = xd_db_query(c,
                         "SELECT id, ts FROM archive WHERE host = ? AND username = ?"
                         " ORDER BY ts, seq LIMIT 1",
                         k, 2, mam_end_row, &ends[0]);
    if (rc == 0)
        rc = xd_db_query(c,
                         "SELECT id, ts FROM archive WHERE host = ? AND username = ?"
                         " ORDER BY ts DESC, seq DESC LIMIT 1",
                         k, 2, mam_end_row, &ends[1]);
    xd_db_release(c);
    if (rc != 0)
        return xd_stanza_error(req->iq, XD_COND_INTERNAL_SERVER_ERROR, NULL);
    xd_el_t *r = xd_iq_result_builder(req->iq);
    xd_el_t *md = xd_el_add_child(r, "metadata", MAM_NS);
    for (int i = 0; i < 2 && ends[0].set && ends[1].set; i++) {
        xd_el_t *e = xd_el_add_child(md, i ? "end" : "start", MAM_NS);
        char stamp[64];
        mam_stamp(ends[i].ts, stamp, sizeof stamp);
        xd_el_set_attr(e, "id", ends[i].id);
        xd_el_set_attr(e, "timestamp", stamp);
    }
    return xd_el_freeze(r);
}

/* IQ urn:xmpp:mam:2 to an account's bare JID (pool thread). */
static xd_stanza_t *
mam_iq(const xd_iq_req_t *req)
{
    if (!xd_jid_eq_bare(req->from, req->to))
        return xd_stanza_error(req->iq, XD_COND_FORBIDDEN, "only your own archive");
    if (!xd_module_db(req->ctx))
        return xd_stanza_error(req->iq, XD_COND_SERVICE_UNAVAILABLE, NULL);
    const char *type = xd_el_attr(xd_stanza_root(req->iq), "type");
    bool get = type && !strcmp(type, "get");
    if (xd_el_is(req->payload, "prefs", MAM_NS))
        return mam_prefs(req, req->payload);
    if (xd_el_is(req->payload, "metadata", MAM_NS))
        return get ? mam_metadata(req)
                   : xd_stanza_error(req->iq, XD_COND_BAD_REQUEST, "<metadata/> is an IQ-get");
    if (!xd_el_is(req->payload, "query", MAM_NS))
        return xd_stanza_error(req->iq, XD_COND_BAD_REQUEST,
                               "expected <query/>, <prefs/> or <metadata/>");
    return get ? mam_form(req) : mam_query(req, req->payload);
}

/* ---- room archives (mam.h) --------------------------------------------------------------------- */

xd_stanza_t *
mam_room_iq(xd_module_ctx_t *mam, const xd_stanza_t *iq, const xd_jid_t *room)
{
    const xd_el_t *root = xd_stanza_root(iq);
    xd_iq_req_t req = { .iq = iq, .payload = xd_el_first_child(root), .from = xd_stanza_from(iq),
                        .to = room, .host = xd_module_host(mam), .ctx = mam,
                        .arg = &mam_room_mark };
    if (!xd_module_db(mam))
        return xd_stanza_error(iq, XD_COND_SERVICE_UNAVAILABLE, NULL);
    const char *type = xd_el_attr(root, "type");
    bool get = type && !strcmp(type, "get");
    if (xd_el_is(req.payload, "metadata", MAM_NS))
        return get ? mam_metadata(&req)
                   : xd_stanza_error(iq, XD_COND_BAD_REQUEST, "<metadata/> is an IQ-get");
    if (xd_el_is(req.payload, "prefs", MAM_NS))
        return xd_stanza_error(iq, XD_COND_FEATURE_NOT_IMPLEMENTED,
                               "a room's archive has no preferences");
    if (!xd_el_is(req.payload, "query", MAM_NS))
        return xd_stanza_error(iq, XD_COND_BAD_REQUEST, "expected <query/> or <metadata/>");
    return get ? mam_form(&req) : mam_query(&req, req.payload);
}

typedef struct mam_one {
    bool found;
    char *xml;
} mam_one_t;

static int
mam_one_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    mam_one_t *o = arg;
    if (ncols >= 1 && cols[0].type == XD_DB_TEXT) {
        o->found = true;
        o->xml = xd_strndup(cols[0].s.p, cols[0].s.len);
    }
    return 1;
}

/* The tombstone of a moderated room message (XEP-0425): its addressing,
 * stanza-id and occupant-id, and <retracted stamp/> with the moderation
 * `detail` (a serialized <retracted/>); nothing of its content. */
static char *
mam_moderated_tombstone(const char *xml, const char *detail, char **occ_id)
{
    xd_stanza_t *orig = NULL;
    xd_el_t *ret = NULL;
    if (xd_stanza_parse(xml, strlen(xml), XD_NS_CLIENT, &orig) != 0)
        return NULL;
    if (xd_el_parse(detail, strlen(detail), &ret) != 0) {
        xd_stanza_unref(orig);
        return NULL;
    }
    const xd_el_t *o = xd_stanza_root(orig);
    xd_el_t *m = xd_el_new("message", NULL);
    static const char *const keep[] = { "from", "to", "type", "id" };
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
        if (xd_el_attr(o, keep[i]))
            xd_el_set_attr(m, keep[i], xd_el_attr(o, keep[i]));
    const xd_el_t *oid = xd_el_child(o, "occupant-id", "urn:xmpp:occupant-id:0");
    const char *ov = oid ? xd_el_attr(oid, "id") : NULL;
    *occ_id = ov ? xd_strdup(ov) : NULL;
    for (const xd_el_t *c = xd_el_first_child(o); c; c = xd_el_next(c)) {
        if (xd_el_is(c, "stanza-id", XD_NS_SID) || c == oid) {
            xd_el_t *cp = xd_el_add_child(m, xd_el_name(c), xd_el_ns(c));
            const char *v;
            if ((v = xd_el_attr(c, "id")))
                xd_el_set_attr(cp, "id", v);
            if ((v = xd_el_attr(c, "by")))
                xd_el_set_attr(cp, "by", v);
        }
    }
    xd_stanza_unref(orig);
    char stamp[64];
    mam_stamp(mam_now_us(), stamp, sizeof stamp);
    xd_el_set_attr(ret, "stamp", stamp);
    xd_el_append(m, ret);
    xd_stanza_t *st = xd_el_freeze(m);
    size_t len;
    const char *b = xd_stanza_bytes(st, &len);
    char *out = xd_strndup(b, len);
    xd_stanza_unref(st);
    return out;
}

/* The tombstone of room message `id` (XEP-0425 moderation, XEP-0424
 * retraction by its sender): when `sender` is given, only a message whose
 * occupant-id is that one (else XD_EINVAL); the message's occupant-id is
 * handed back in *occ_id when asked for. */
static int
mam_room_tombstone(xd_module_ctx_t *mam, const xd_jid_t *room, const char *id,
                   const char *detail, const char *sender, char **occ_id)
{
    xd_db_t *db = xd_module_db(mam);
    if (!db || strlen(id) > MAM_ID_MAX)
        return XD_ENOTFOUND;
    char *host = mam_strs(xd_jid_domain(room)), *user = mam_strs(xd_jid_local(room));
    xd_db_conn_t *c;
    int rc = mam_drain_for(mam, host, user);
    if (rc == 0)
        rc = xd_db_acquire(db, &c);
    mam_one_t one = { 0 };
    char *was = NULL, *t = NULL;
    if (rc == 0) {
        xd_db_val_t k[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user), XD_DB_V_CSTR(id) };
        rc = xd_db_query(c, "SELECT xml FROM archive WHERE host = ? AND username = ? AND id = ?",
                         k, 3, mam_one_row, &one);
        if (rc == 0 && !one.found)
            rc = XD_ENOTFOUND;
        if (rc == 0 && !(t = mam_moderated_tombstone(one.xml, detail, &was)))
            rc = XD_EINTERNAL;
        if (rc == 0 && sender && (!was || strcmp(was, sender) != 0))
            rc = XD_EINVAL;
        if (rc == 0) {
            xd_db_val_t u[] = { XD_DB_V_CSTR(t), XD_DB_V_CSTR(host), XD_DB_V_CSTR(user),
                                XD_DB_V_CSTR(id) };
            rc = xd_db_query(c,
                             "UPDATE archive SET body = NULL, xml = ?"
                             " WHERE host = ? AND username = ? AND id = ?",
                             u, 4, NULL, NULL);
        }
        xd_db_release(c);
    }
    if (occ_id && rc == 0) {
        *occ_id = was;
        was = NULL;
    }
    xd_free(t);
    xd_free(was);
    xd_free(one.xml);
    xd_free(host);
    xd_free(user);
    return rc;
}

int
mam_room_moderate(xd_module_ctx_t *mam, const xd_jid_t *room, const char *id,
                  const char *detail, char **occ_id)
{
    *occ_id = NULL;
    return mam_room_tombstone(mam, room, id, detail, NULL, occ_id);
}

int
mam_room_retract(xd_module_ctx_t *mam, const xd_jid_t *room, const char *id,
                 const char *occ_id, const char *detail)
{
    return mam_room_tombstone(mam, room, id, detail, occ_id, NULL);
}

typedef struct mam_recent {
    mam_room_msg_fn fn;
    void *arg;
} mam_recent_t;

static int
mam_recent_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    mam_recent_t *r = arg;
    if (ncols < 3 || cols[0].type != XD_DB_TEXT || cols[1].type != XD_DB_INT64 ||
        cols[2].type != XD_DB_TEXT || cols[0].s.len > MAM_ID_MAX)
        return 0;
    char id[MAM_ID_MAX + 1];
    snprintf(id, sizeof id, "%.*s", (int)cols[0].s.len, cols[0].s.p);
    r->fn(r->arg, id, cols[1].i, cols[2].s.p, cols[2].s.len);
    return 0;
}

int
mam_room_recent(xd_module_ctx_t *mam, const xd_jid_t *room, int max, mam_room_msg_fn fn,
                void *arg)
{
    xd_db_t *db = xd_module_db(mam);
    if (!db || max <= 0)
        return 0;
    char *host = mam_strs(xd_jid_domain(room)), *user = mam_strs(xd_jid_local(room));
    xd_db_conn_t *c;
    int rc = mam_drain_for(mam, host, user);
    if (rc == 0)
        rc = xd_db_acquire(db, &c);
    if (rc == 0) {
        /* A room archives messages with a body only: none is a tombstone. */
        xd_db_val_t k[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user), XD_DB_V_INT(max) };
        mam_recent_t r = { fn, arg };
        rc = xd_db_query(c,
                         "SELECT id, ts, xml FROM archive WHERE host = ? AND username = ?"
                         " AND body IS NOT NULL ORDER BY ts DESC, seq DESC LIMIT ?",
                         k, 3, mam_recent_row, &r);
        xd_db_release(c);
    }
    xd_free(host);
    xd_free(user);
    return rc;
}

int
mam_room_delete(xd_module_ctx_t *mam, const xd_jid_t *room)
{
    xd_db_t *db = xd_module_db(mam);
    if (!db)
        return 0;
    char *host = mam_strs(xd_jid_domain(room)), *user = mam_strs(xd_jid_local(room));
    xd_db_conn_t *c;
    int rc = mam_drain_before_delete(mam, host, user);
    if (rc == 0)
        rc = xd_db_acquire(db, &c);
    if (rc == 0) {
        xd_db_val_t k[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user) };
        rc = xd_db_query(c, "DELETE FROM archive WHERE host = ? AND username = ?", k, 2, NULL,
                         NULL);
        xd_db_release(c);
    }
    xd_free(host);
    xd_free(user);
    return rc;
}

/* ---- retention --------------------------------------------------------------------------------- */

typedef struct mam_purge {
    char host[XD_JID_PART_MAX + 1];
    int64_t before; /* µs */
    int64_t deleted;
    int rc;
} mam_purge_t;

static int
mam_purge_run(xd_module_ctx_t *ctx, mam_purge_t *p)
{
    xd_db_conn_t *c;
    p->rc = mam_drain(ctx);
    if (p->rc != 0)
        return p->rc;
    p->rc = xd_db_acquire(xd_module_db(ctx), &c);
    if (p->rc != 0)
        return p->rc;
    xd_db_val_t k[] = { XD_DB_V_CSTR(p->host), XD_DB_V_INT(p->before) };
    p->rc = xd_db_query(c, "DELETE FROM archive WHERE host = ? AND ts < ?", k, 2, NULL, NULL);
    if (p->rc == 0)
        p->deleted = xd_db_changes(c);
    xd_db_release(c);
    return p->rc;
}

static void
mam_purge_work(xd_module_ctx_t *ctx, void *arg)
{
    mam_purge_run(ctx, arg);
}

static void
mam_purge_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    (void)ctx;
    mam_purge_t *p = arg;
    int rc = status ? status : p->rc;
    if (rc != 0)
        XD_LOG(NULL, XD_ERROR, "archive expiry failed", "host=%s err=%s", p->host,
               xd_strerror(rc));
    else if (p->deleted)
        XD_LOG(NULL, XD_INFO, "expired archived messages deleted", "host=%s count=%lld",
               p->host, (long long)p->deleted);
    xd_free(p);
}


/* TICK: on worker 0, deletes the messages older than archive_expiry every
 * minute (or every expiry, when that is shorter). */
static int
mam_tick(xd_module_ctx_t *ctx, xd_hook_tick_t *ev, void *arg)
{
    (void)arg;
    const mam_conf_t *mc = xd_module_opts(ctx);
    mam_state_t *st = xd_module_state(ctx);
    /* The journal, once appends have paused. */
    if (ev->worker == 0 && st && st->journal_ok && atomic_load(&st->j.pend_records) &&
        mam_mono_ms() - atomic_load(&st->last_append_ms) >= (int64_t)mc->journal_idle)
        mam_ix_kick(ctx, st);
    if (ev->worker != 0 || !mc->archive_expiry || !st || !xd_module_db(ctx) ||
        ev->now_ms < atomic_load(&st->next_purge_ms))
        return XD_HOOK_OK;
    uint64_t every = mc->archive_expiry < 60000 ? mc->archive_expiry : 60000;
    atomic_store(&st->next_purge_ms, ev->now_ms + every);
    mam_purge_t *p = xd_new(mam_purge_t);
    snprintf(p->host, sizeof p->host, "%s", xd_module_host(ctx));
    p->before = mam_now_us() - (int64_t)mc->archive_expiry * 1000;
    if (xd_module_submit(ctx, mam_purge_work, mam_purge_done, p) != 0)
        xd_free(p);
    return XD_HOOK_OK;
}

static const xd_cmd_arg_t mam_delete_args[] = {
    { "days", XD_CMD_INT, "messages older than this many days are deleted" },
};

static int
mam_delete_old(xd_cmd_call_t *call)
{
    int64_t days = call->args[0].i;
    if (days < 0 || days > 1000000)
        return xd_cmd_errorf(call, XD_EINVAL, "days is 0 or more");
    int64_t total = 0;
    for (size_t i = 0; i < call->cfg->hosts.count; i++) {
        xd_module_ctx_t *ctx = xd_module_instance("mod_mam", call->cfg->hosts.items[i]);
        if (!ctx)
            continue;
        mam_purge_t p = { .before = mam_now_us() - days * 86400 * 1000000 };
        snprintf(p.host, sizeof p.host, "%s", call->cfg->hosts.items[i]);
        int rc = xd_module_db(ctx) ? mam_purge_run(ctx, &p) : 0;
        xd_module_release(ctx);
        if (rc != 0)
            return xd_cmd_errorf(call, rc, "%s: %s", p.host, xd_strerror(rc));
        total += p.deleted;
    }
    call->res.i = total;
    return 0;
}

static const xd_cmd_t mam_cmd_delete_old = {
    .name = "delete_old_mam_messages",
    .doc = "delete archived messages (XEP-0313) older than DAYS days, on every host",
    .args = mam_delete_args,
    .nargs = 1,
    .result = XD_CMD_RES_INT,
    .result_doc = "how many messages were deleted",
    .fn = mam_delete_old,
};

/* ---- export (XEP-0227 form) -------------------------------------------------------------------- */

typedef struct mam_export {
    FILE *f;
    xd_el_t *into; /* or: append the results here */
    int64_t n;
    mam_pos_t last;
} mam_export_t;

/* One archived row (seq, ts, id, xml) as a XEP-0313 <result/>, like a
 * query result; NULL for a row that cannot be read. */
static xd_el_t *
mam_export_el(mam_export_t *e, const xd_db_val_t *cols, size_t ncols)
{
    if (ncols < 4 || cols[0].type != XD_DB_INT64 || cols[1].type != XD_DB_INT64 ||
        cols[2].type != XD_DB_TEXT || cols[3].type != XD_DB_TEXT)
        return NULL;
    e->last = (mam_pos_t){ true, cols[1].i, cols[0].i };
    xd_stanza_t *orig = NULL;
    if (xd_stanza_parse(cols[3].s.p, cols[3].s.len, XD_NS_CLIENT, &orig) != 0)
        return NULL;
    char id[MAM_ID_MAX + 1], stamp[64];
    snprintf(id, sizeof id, "%.*s", (int)cols[2].s.len, cols[2].s.p);
    xd_el_t *r = xd_el_new("result", MAM_NS);
    xd_el_set_attr(r, "id", id);
    xd_el_t *fw = xd_el_add_child(r, "forwarded", XD_NS_FORWARD);
    mam_stamp(cols[1].i, stamp, sizeof stamp);
    xd_el_set_attr(xd_el_add_child(fw, "delay", XD_NS_DELAY), "stamp", stamp);
    xd_el_t *m = xd_stanza_edit(orig);
    xd_stanza_unref(orig);
    xd_el_set_attr(m, "xmlns", XD_NS_CLIENT); /* standalone: the message says its own */
    xd_el_append(fw, m);
    e->n++;
    return r;
}

static int
mam_export_row(void *arg, const xd_db_val_t *cols, size_t ncols)
{
    mam_export_t *e = arg;
    xd_el_t *r = mam_export_el(e, cols, ncols);
    if (!r)
        return 0;
    if (e->into) { /* XEP-0227 export of a whole account (ACCOUNT_EXPORT) */
        xd_el_append(e->into, r);
        return 0;
    }
    xd_stanza_t *st = xd_el_freeze(r);
    size_t len;
    const char *b = xd_stanza_bytes(st, &len);
    int rc = fprintf(e->f, "        ") < 0 || fwrite(b, 1, len, e->f) != len ||
                     fputc('\n', e->f) == EOF
                 ? XD_EINTERNAL
                 : 0;
    xd_stanza_unref(st);
    return rc;
}

/* The account's archive, oldest first, 1000 rows a query, through
 * mam_export_row. */
static int
mam_export_rows(xd_module_ctx_t *ctx, const char *host, const char *user, mam_export_t *e)
{
    xd_db_conn_t *c;
    int rc = mam_drain_for(ctx, host, user);
    if (rc == 0)
        rc = xd_db_acquire(xd_module_db(ctx), &c);
    if (rc != 0)
        return rc;
    while (rc == 0) {
        int64_t before = e->n;
        xd_db_val_t k[] = { XD_DB_V_CSTR(host), XD_DB_V_CSTR(user), XD_DB_V_INT(e->last.ts),
                            XD_DB_V_INT(e->last.ts), XD_DB_V_INT(e->last.seq) };
        rc = xd_db_query(c,
                         "SELECT seq, ts, id, xml FROM archive WHERE host = ? AND username = ?"
                         " AND ts >= ? AND (ts > ? OR seq > ?) ORDER BY ts, seq LIMIT 1000",
                         k, 5, mam_export_row, e);
        if (rc != 0 || e->n - before < 1000)
            break;
    }
    xd_db_release(c);
    return rc;
}

static const xd_cmd_arg_t mam_export_args[] = {
    { "user", XD_CMD_USER, "the account's localpart" },
    { "host", XD_CMD_HOST, "its host" },
    { "file", XD_CMD_STRING, "a new file (it must not exist) the server writes, mode 0600" },
};

/* xmppctl export_mam USER HOST FILE: the account's archive, oldest first,
 * as XEP-0227 <server-data><host><user><archive xmlns='urn:xmpp:pie:0#mam'>
 * with one XEP-0313 <result/> per message; read 1000 rows at a time. */
static int
mam_export_cmd(xd_cmd_call_t *call)
{
    const char *user = call->args[0].text, *host = call->args[1].text;
    const char *path = call->args[2].text;
    xd_module_ctx_t *ctx = xd_module_instance("mod_mam", host);
    if (!ctx)
        return xd_cmd_errorf(call, XD_ENOTFOUND, "mod_mam does not run on %s", host);
    xd_db_t *db = xd_module_db(ctx);
    int fd = db ? open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600) : -1;
    if (fd < 0) {
        int err = errno;
        xd_module_release(ctx);
        if (!db)
            return xd_cmd_errorf(call, XD_ENOTSUP, "no database");
        return xd_cmd_errorf(call, err == EEXIST ? XD_EEXIST : XD_EINVAL, "%s: %s", path,
                             strerror(err));
    }
    mam_export_t e = { .f = fdopen(fd, "w") };
    if (!e.f) {
        close(fd);
        xd_module_release(ctx);
        return xd_cmd_errorf(call, XD_EINTERNAL, "%s: cannot open", path);
    }
    fprintf(e.f,
            "<?xml version='1.0' encoding='UTF-8'?>\n<server-data xmlns='urn:xmpp:pie:0'>\n"
            "  <host jid='%s'>\n    <user name='%s'>\n"
            "      <archive xmlns='urn:xmpp:pie:0#mam'>\n",
            host, user);
    int rc = mam_export_rows(ctx, host, user, &e);
    fprintf(e.f, "      </archive>\n    </user>\n  </host>\n</server-data>\n");
    bool bad = ferror(e.f) != 0;
    if ((fclose(e.f) != 0 || bad) && rc == 0)
        rc = XD_EINTERNAL;
    xd_module_release(ctx);
    if (rc != 0) {
        unlink(path);
        return xd_cmd_errorf(call, rc, "export of %s@%s: %s", user, host, xd_strerror(rc));
    }
    call->res.i = e.n;
    return 0;
}

static const xd_cmd_t mam_cmd_export = {
    .name = "export_mam",
    .doc = "write an account's message archive to FILE (XEP-0227 form, oldest first)",
    .args = mam_export_args,
    .nargs = 3,
    .result = XD_CMD_RES_INT,
    .result_doc = "how many messages were written",
    .fn = mam_export_cmd,
};

/* ---- XEP-0227 whole-account export and import (ACCOUNT_EXPORT, ACCOUNT_IMPORT) ----------------- */

#define MAM_NS_PIE "urn:xmpp:pie:0#mam"

/* The archive as export_mam writes it: <archive xmlns='urn:xmpp:pie:0#mam'>
 * with one <result/> per message, oldest first (held in memory for the
 * account being exported). */
static int
mam_pie_export(xd_module_ctx_t *ctx, xd_hook_account_export_t *ev, void *arg)
{
    (void)arg;
    mam_export_t e = { .into = xd_el_new("archive", MAM_NS_PIE) };
    int rc = mam_export_rows(ctx, ev->host, ev->user, &e);
    if (rc != 0) {
        xd_el_free(e.into);
        ev->rc = rc;
        ev->module = "mod_mam";
        return XD_HOOK_STOP;
    }
    if (e.n)
        xd_el_append(ev->user_el, e.into);
    else
        xd_el_free(e.into);
    return XD_HOOK_OK;
}

/* One <result/>: stored with its id and time; direction and peer from the
 * message's from/to. */
static int
mam_pie_result(xd_db_conn_t *c, xd_hook_account_import_t *ev, const xd_jid_t *account,
               const xd_el_t *r)
{
    const char *id = xd_el_attr(r, "id");
    const xd_el_t *fw = xd_el_child(r, "forwarded", XD_NS_FORWARD);
    const xd_el_t *delay = fw ? xd_el_child(fw, "delay", XD_NS_DELAY) : NULL;
    const xd_el_t *msg = fw ? xd_el_child(fw, "message", XD_NS_CLIENT) : NULL;
    const char *stamp = delay ? xd_el_attr(delay, "stamp") : NULL;
    int64_t ts = 0;
    if (!id || !*id || strlen(id) > MAM_ID_MAX || !msg || !stamp || !mam_parse_time(stamp, &ts)) {
        snprintf(ev->err, XD_HOOK_IMPORT_ERR_MAX, "archive: a <result/> without id, time or message%s%s",
                 id ? ": " : "", id ? id : "");
        return XD_EINVAL;
    }
    size_t len;
    char *raw = xd_el_serialize(msg, XD_NS_CLIENT, &len);
    xd_stanza_t *st = NULL;
    int rc = xd_stanza_parse(raw, len, XD_NS_CLIENT, &st);
    xd_free(raw);
    const xd_jid_t *from = rc == 0 ? xd_stanza_from(st) : NULL;
    const xd_jid_t *to = rc == 0 ? xd_stanza_to(st) : NULL;
    int dir = from && xd_jid_eq_bare(from, account) ? 1 : 0;
    const xd_jid_t *peer = dir ? to : from;
    if (rc != 0 || !peer) {
        if (st)
            xd_stanza_unref(st);
        snprintf(ev->err, XD_HOOK_IMPORT_ERR_MAX, "archive %s: the message needs from and to", id);
        return XD_EINVAL;
    }
    const xd_el_t *root = xd_stanza_root(st);
    const char *body = xd_el_child_text(root, "body", NULL);
    const xd_el_t *oid = xd_el_child(root, "origin-id", XD_NS_SID);
    const char *msgid = oid ? xd_el_attr(oid, "id") : xd_el_attr(root, "id");
    if (msgid && (!*msgid || strlen(msgid) > MAM_ID_MAX))
        msgid = NULL;
    char *pbare = mam_strs(xd_jid_bare_str(peer)), *pres = mam_strs(xd_jid_resource(peer));
    const char *xml = xd_stanza_bytes(st, &len);
    xd_db_val_t row[] = {
        XD_DB_V_CSTR(ev->host), XD_DB_V_CSTR(ev->user), XD_DB_V_CSTR(id),
        XD_DB_V_INT(ts),        XD_DB_V_CSTR(pbare),    XD_DB_V_CSTR(pres),
        XD_DB_V_INT(dir),       body ? XD_DB_V_CSTR(body) : XD_DB_V_NULL,
        XD_DB_V_TEXT(((xd_str_t){ xml, len })), msgid ? XD_DB_V_CSTR(msgid) : XD_DB_V_NULL,
    };
    rc = xd_db_query(c,
                     "INSERT INTO archive"
                     " (host, username, id, ts, peer, resource, dir, body, xml, msgid)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     row, 10, NULL, NULL);
    if (rc != 0)
        snprintf(ev->err, XD_HOOK_IMPORT_ERR_MAX, "archive %s: %s", id,
                 rc == XD_EDB_CONSTRAINT ? "the id is repeated" : xd_strerror(rc));
    xd_free(pbare);
    xd_free(pres);
    xd_stanza_unref(st);
    return rc;
}

static int
mam_pie_import(xd_module_ctx_t *ctx, xd_hook_account_import_t *ev, void *arg)
{
    (void)arg;
    xd_jid_t *account = NULL;
    int rc = xd_jid_make(xd_str_c(ev->user), xd_str_c(ev->host), XD_STR_NULL, &account);
    xd_db_conn_t *c = NULL;
    if (rc == 0)
        rc = xd_db_acquire(xd_module_db(ctx), &c);
    size_t i = 0;
    for (const xd_el_t *a = xd_el_first_child(ev->user_el); a && rc == 0; a = xd_el_next(a), i++) {
        if (!xd_el_is(a, "archive", MAM_NS_PIE))
            continue;
        ev->taken[i] = true;
        for (const xd_el_t *r = xd_el_first_child(a); r && rc == 0; r = xd_el_next(r))
            if (xd_el_is(r, "result", MAM_NS))
                rc = mam_pie_result(c, ev, account, r);
    }
    if (c)
        xd_db_release(c);
    if (account)
        xd_jid_unref(account);
    if (rc != 0) {
        ev->rc = rc;
        if (!ev->err[0])
            snprintf(ev->err, XD_HOOK_IMPORT_ERR_MAX, "archive: %s", xd_strerror(rc));
        return XD_HOOK_STOP;
    }
    return XD_HOOK_OK;
}

/* ---- account removal --------------------------------------------------------------------------- */

typedef struct mam_rm {
    char host[XD_JID_PART_MAX + 1], user[XD_JID_PART_MAX + 1];
    int rc;
} mam_rm_t;

static void
mam_rm_work(xd_module_ctx_t *ctx, void *arg)
{
    mam_rm_t *r = arg;
    xd_db_conn_t *c;
    r->rc = mam_drain_before_delete(ctx, r->host, r->user); /* its journaled ones go too */
    if (r->rc == 0)
        r->rc = xd_db_acquire(xd_module_db(ctx), &c);
    if (r->rc != 0)
        return;
    xd_db_val_t key[] = { XD_DB_V_CSTR(r->host), XD_DB_V_CSTR(r->user) };
    r->rc = xd_db_query(c, "DELETE FROM archive WHERE host = ? AND username = ?", key, 2, NULL,
                        NULL);
    /* Its preferences here, not through mod_user_rows: the cache is
     * dropped after they are gone. */
    if (r->rc == 0)
        r->rc = xd_db_query(c, "DELETE FROM archive_prefs_jid WHERE host = ? AND username = ?",
                            key, 2, NULL, NULL);
    if (r->rc == 0)
        r->rc = xd_db_query(c, "DELETE FROM archive_prefs WHERE host = ? AND username = ?", key,
                            2, NULL, NULL);
    xd_db_release(c);
    mam_pc_drop(xd_module_state(ctx), r->host, r->user);
}

static void
mam_rm_done(xd_module_ctx_t *ctx, void *arg, int status)
{
    (void)ctx;
    mam_rm_t *r = arg;
    int rc = status ? status : r->rc;
    if (rc != 0)
        XD_LOG(NULL, XD_ERROR, "archive not removed", "host=%s user=%s err=%s", r->host, r->user,
               xd_strerror(rc));
    xd_free(r);
}

/* REMOVE_USER: the account's archive, after the journal is drained. */
static int
mam_removed(xd_module_ctx_t *ctx, xd_hook_user_t *ev, void *arg)
{
    (void)arg;
    if (!xd_module_db(ctx))
        return XD_HOOK_OK;
    mam_rm_t *r = xd_new(mam_rm_t);
    snprintf(r->host, sizeof r->host, "%s", ev->host);
    snprintf(r->user, sizeof r->user, "%s", ev->user);
    int rc = xd_module_submit(ctx, mam_rm_work, mam_rm_done, r);
    if (rc != 0)
        mam_rm_done(ctx, r, rc);
    return XD_HOOK_OK;
}

/* ---- module ------------------------------------------------------------------------------------ */

static void
mam_stop(xd_module_ctx_t *ctx)
{
    mam_state_t *st = xd_module_state(ctx);
    if (st->journal_ok) {
        /* What the journal holds is indexed now; what cannot be is
         * replayed at the next start. */
        int rc = mam_drain(ctx);
        if (rc != 0)
            XD_LOG(NULL, XD_WARN, "archive journal left for the next start", "host=%s err=%s",
                   xd_module_host(ctx), xd_strerror(rc));
    }
    if (st->journal_init) /* also after a failed start: its files */
        mam_journal_close(&st->j);
    pthread_mutex_destroy(&st->ix_mu);
    pthread_mutex_destroy(&st->pend_mu);
    xd_map_free(&st->pend, mam_pend_free);
    pthread_mutex_destroy(&st->pc_mu);
    xd_map_free(&st->pc, mam_pc_free);
    xd_map_free(&st->done, NULL);
    xd_free(st);
}

static int
mam_start(xd_module_ctx_t *ctx)
{
    mam_state_t *st = xd_new(mam_state_t);
    pthread_mutex_init(&st->ix_mu, NULL);
    pthread_mutex_init(&st->pend_mu, NULL);
    pthread_mutex_init(&st->pc_mu, NULL);
    for (unsigned w = 0; w < XD_OWNER_MAX_WORKERS; w++)
        st->j.f[w].fd = -1;
    xd_module_set_state(ctx, st);
    int rc = xd_module_db(ctx) ? mam_journal_start(ctx, st) : 0;
    if (rc != 0)
        return rc;
    rc = xd_module_iq(ctx, XD_IQ_USER, MAM_NS, XD_IQ_PARALLEL, mam_iq, NULL);
    if (rc == 0)
        rc = xd_module_feature(ctx, XD_IQ_USER, MAM_NS_EXT);
    if (rc == 0 && mam_dialect(xd_module_db(ctx)))
        rc = xd_module_feature(ctx, XD_IQ_USER, MAM_NS_FTS);
    if (rc == 0)
        rc = xd_module_feature(ctx, XD_IQ_USER, MAM_NS_RETRACT);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_USER_SEND_PACKET, XD_HOOK_PRIO_DEFAULT, mam_sent, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_FILTER_PACKET, MAM_FILTER_PRIO, mam_filter, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_FILTER_PACKET, MAM_PRE_FILTER_PRIO, mam_pre_filter,
                            NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_TICK, XD_HOOK_PRIO_DEFAULT, mam_tick, NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_REMOVE_USER, XD_HOOK_PRIO_DEFAULT, mam_removed, NULL);
    if (rc == 0)
        rc = xd_module_command(ctx, &mam_cmd_delete_old);
    if (rc == 0)
        rc = xd_module_command(ctx, &mam_cmd_export);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_ACCOUNT_EXPORT, XD_HOOK_PRIO_DEFAULT, mam_pie_export,
                            NULL);
    if (rc == 0)
        rc = xd_module_hook(ctx, XD_HOOK_ACCOUNT_IMPORT, XD_HOOK_PRIO_DEFAULT, mam_pie_import,
                            NULL);
    return rc ? xd_module_fail(ctx, rc, "cannot register: %s", xd_strerror(rc)) : 0;
}

static const char *const mam_depends[] = { "mod_stanza_id", NULL };

const xd_module_t xd_mod_mam = {
    .abi = XD_MODULE_ABI,
    .name = "mod_mam",
    .doc = "Message archive (XEP-0313): both directions, queries with RSM, full-text search, "
           "preferences, retraction tombstones, expiry, export",
    .depends = mam_depends,
    .opts = mam_opts,
    .opts_size = sizeof(mam_conf_t),
    .schemas = mam_schemas,
    .start = mam_start,
    .stop = mam_stop,
};
